//! Planner tests: a worked example printed in full, upstream's special cases, and
//! properties over generated clusters.

use std::net::{IpAddr, SocketAddr};

use kproxy_core::model::IpFamily;
use kproxy_core::testing::arb_snapshot;
use kproxy_core::{BuildOptions, KubeProxyConfiguration, NodeFacts, ServiceMap, Snapshot};
use proptest::prelude::*;

use super::*;

pub(crate) const EXAMPLE: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: default }
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  externalTrafficPolicy: Local
  healthCheckNodePort: 32000
  sessionAffinity: ClientIP
  sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } }
  loadBalancerSourceRanges: [192.168.0.0/16]
  ports: [{ name: http, port: 80, protocol: TCP, nodePort: 30080 }]
status:
  loadBalancer: { ingress: [{ ip: 203.0.113.7 }] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-a
  namespace: default
  labels: { kubernetes.io/service-name: web }
addressType: IPv4
ports: [{ name: http, port: 8080, protocol: TCP }]
endpoints:
- { addresses: [10.244.1.5], conditions: { ready: true }, nodeName: node-a }
- { addresses: [10.244.2.6], conditions: { ready: true }, nodeName: node-b }
---
apiVersion: v1
kind: Service
metadata: { name: dns, namespace: kube-system }
spec:
  clusterIP: 10.96.0.53
  internalTrafficPolicy: Local
  ports: [{ name: dns, port: 53, protocol: UDP }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: dns-a
  namespace: kube-system
  labels: { kubernetes.io/service-name: dns }
addressType: IPv4
ports: [{ name: dns, port: 5353, protocol: UDP }]
endpoints:
- { addresses: [10.244.2.9], conditions: { ready: true }, nodeName: node-b }
"#;

pub(crate) fn map_of(yaml: &str) -> ServiceMap {
    let (snap, problems) = Snapshot::from_documents(yaml).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    ServiceMap::build(&snap, &BuildOptions::for_node("node-a"))
}

pub(crate) fn node() -> NodeFacts {
    NodeFacts {
        name: "node-a".into(),
        node_ips: vec!["192.168.1.10".parse().unwrap()],
        local_addresses: vec![
            "127.0.0.1".parse().unwrap(),
            "192.168.1.10".parse().unwrap(),
        ],
        pod_cidrs: vec![],
    }
}

pub(crate) fn cfg() -> KubeProxyConfiguration {
    KubeProxyConfiguration {
        cluster_cidr: "10.244.0.0/16".into(),
        ..Default::default()
    }
}

#[test]
fn example_renders_exactly() {
    let text = render_plan(&map_of(EXAMPLE), &node(), &cfg(), IpFamily::V4);
    let expected = r#"# IPVS (IPv4)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight
TCP  10.96.0.10:80 rr persistent 60  # default/web:http ClusterIp
  -> 10.244.1.5:8080              Masq    1
  -> 10.244.2.6:8080              Masq    1
TCP  192.168.1.10:30080 rr persistent 60  # default/web:http NodePort
  -> 10.244.1.5:8080              Masq    1
TCP  203.0.113.7:80 rr persistent 60  # default/web:http LoadBalancer
  -> 10.244.1.5:8080              Masq    1
UDP  10.96.0.53:53 rr  # kube-system/dns:dns ClusterIp

# kube-ipvs0 addresses
10.96.0.10
10.96.0.53
203.0.113.7
"#;
    assert!(text.starts_with(expected), "{text}");
    for line in [
        "add KPROXY-TMP-0 10.244.1.5,tcp:8080,10.244.1.5\n",
        "swap KPROXY-TMP-0 KUBE-LOOP-BACK\n",
        "add KPROXY-TMP-1 10.96.0.10,tcp:80\n",
        "add KPROXY-TMP-1 10.96.0.53,udp:53\n",
        "add KPROXY-TMP-4 203.0.113.7,tcp:80\n",
        "add KPROXY-TMP-5 203.0.113.7,tcp:80\n",
        "add KPROXY-TMP-6 203.0.113.7,tcp:80\n",
        "add KPROXY-TMP-7 203.0.113.7,tcp:80,203.0.113.7\n",
        "add KPROXY-TMP-8 203.0.113.7,tcp:80,192.168.0.0/16\n",
        "add KPROXY-TMP-10 30080\n",
        "add KPROXY-TMP-15 32000\n",
        "create KUBE-NODE-PORT-TCP bitmap:port range 0-65535\n",
        "-A KUBE-SERVICES -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n",
        "-A KUBE-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port with externalTrafficPolicy=local\" -m set --match-set KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN\n",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN\n",
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // The node IP is inside the source range: no KUBE-IPVS-OUT-FILTER drop.
    assert!(!text.contains("-A KUBE-IPVS-OUT-FILTER"), "{text}");
    // An empty set gets no rule of its own.
    assert!(
        !text.contains("--match-set KUBE-EXTERNAL-IP dst,dst -j KUBE-MARK-MASQ"),
        "{text}"
    );
}

#[test]
fn local_policy_without_local_endpoints_falls_back_to_cluster_endpoints() {
    // eTP Local, externally accessible, every endpoint on node-b: iptables would DROP
    // external traffic, IPVS sends it to the cluster endpoints (PR #97081).
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: { name: np, namespace: default }
spec:
  type: NodePort
  clusterIP: 10.96.0.30
  externalTrafficPolicy: Local
  ports: [{ port: 80, protocol: TCP, nodePort: 30090 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: np-a
  namespace: default
  labels: { kubernetes.io/service-name: np }
addressType: IPv4
ports: [{ name: "", port: 8080, protocol: TCP }]
endpoints:
- { addresses: [10.244.2.7], conditions: { ready: true }, nodeName: node-b }
"#;
    let map = map_of(yaml);
    let sp = map.family(IpFamily::V4).values().next().unwrap();
    assert!(sp.selection.local.is_empty() && sp.external_policy_local);
    let p = plan(&map, &node(), &cfg(), IpFamily::V4);
    let np = p
        .services
        .values()
        .find(|v| v.kind == VsKind::NodePort)
        .unwrap();
    assert_eq!(addrs(np), sp.selection.cluster, "{sp:#?}");
    assert_eq!(
        addrs(np),
        ["10.244.2.7:8080".parse::<SocketAddr>().unwrap()]
    );
    // iTP Local on a port that is not externally accessible uses no cluster endpoints
    // at all (upstream UsesClusterEndpoints): no fallback, no destinations.
    let p = plan(&map_of(EXAMPLE), &node(), &cfg(), IpFamily::V4);
    let dns = p
        .services
        .values()
        .find(|v| v.owner.to_string() == "kube-system/dns:dns")
        .unwrap();
    assert!(dns.destinations.is_empty());
    // web has eTP Local and a local endpoint: external VSes get only it.
    let np = p
        .services
        .values()
        .find(|v| v.kind == VsKind::NodePort)
        .unwrap();
    assert_eq!(np.destinations.len(), 1);
}

#[test]
fn mh_scheduler_sets_the_source_hash_flag_and_node_outside_range_gets_out_filter() {
    let mut c = cfg();
    c.ipvs.scheduler = "mh".into();
    let mut n = node();
    n.node_ips = vec!["172.16.0.1".parse().unwrap()];
    let p = plan(&map_of(EXAMPLE), &n, &c, IpFamily::V4);
    assert!(
        p.services
            .values()
            .all(|v| v.service.flags & SVC_F_SCHED2 != 0 && v.service.scheduler == "mh")
    );
    assert!(p.iptables.contains(
        "-A KUBE-IPVS-OUT-FILTER -s 203.0.113.7 -m ipvs --vaddr 203.0.113.7 --vproto tcp --vport 80 -j DROP\n"
    ));
    assert!(p.ipset(SetId::LoadBalancerSourceIp).entries.is_empty());
}

#[test]
fn masquerade_all_and_no_detector_change_the_cluster_ip_rule() {
    let mut c = cfg();
    c.iptables.masquerade_all = true;
    c.iptables.masquerade_bit = Some(5);
    let p = plan(&map_of(EXAMPLE), &node(), &c, IpFamily::V4);
    assert!(
        p.iptables
            .contains("--match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ\n"),
        "{}",
        p.iptables
    );
    assert!(p.iptables.contains("--or-mark 0x00000020\n"));
    let p = plan(
        &map_of(EXAMPLE),
        &node(),
        &KubeProxyConfiguration::default(),
        IpFamily::V4,
    );
    assert!(
        p.iptables
            .contains("--match-set KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ\n"),
        "{}",
        p.iptables
    );
}

#[test]
fn external_ip_already_on_the_node_is_not_bound() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: { name: ext, namespace: default }
spec:
  clusterIP: 10.96.0.20
  externalIPs: [192.168.1.10, 198.51.100.4]
  ports: [{ port: 80, protocol: TCP }]
"#;
    let p = plan(&map_of(yaml), &node(), &cfg(), IpFamily::V4);
    let bound: Vec<String> = p.addresses.iter().map(|a| a.to_string()).collect();
    assert_eq!(bound, ["10.96.0.20", "198.51.100.4"]);
    assert_eq!(p.services.len(), 3);
    assert_eq!(p.ipset(SetId::ExternalIp).entries.len(), 2);
    assert!(
        p.iptables
            .contains("-m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT")
    );
}

/// Node ports are served on the node's addresses, never on loopback nor on IPv6
/// link-local ones (which the daemon reads from the interfaces too), as upstream.
#[test]
fn node_ports_skip_loopback_and_ipv6_link_local_addresses() {
    let mut n = node();
    n.local_addresses.extend(
        ["::1", "fe80::1c2:3ff:fe04:506", "fd00::10"].map(|s| s.parse::<IpAddr>().unwrap()),
    );
    let v4: Vec<IpAddr> = vec!["192.168.1.10".parse().unwrap()];
    let v6: Vec<IpAddr> = vec!["fd00::10".parse().unwrap()];
    assert_eq!(node_port_ips(&n, &cfg(), IpFamily::V4), v4);
    assert_eq!(node_port_ips(&n, &cfg(), IpFamily::V6), v6);
}

fn addrs(v: &VirtualServer) -> Vec<SocketAddr> {
    v.destinations.iter().map(|d| d.socket_addr()).collect()
}

proptest! {
    /// Every virtual server's destinations are exactly the endpoints core selected for
    /// that kind of traffic (with IPVS's Local fallback), every service port has its
    /// ClusterIP VS, and every address of the plan is of its family.
    #[test]
    fn planner_covers_exactly_cores_selection(snap in arb_snapshot(), v6 in any::<bool>()) {
        let family = if v6 { IpFamily::V6 } else { IpFamily::V4 };
        let map = ServiceMap::build(&snap, &BuildOptions::for_node("node-a"));
        let mut n = NodeFacts::from_node("node-a", snap.node("node-a"));
        n.local_addresses.push(if v6 { "fd99::1".parse().unwrap() } else { "172.18.0.9".parse().unwrap() });
        let p = plan(&map, &n, &cfg(), family);
        prop_assert_eq!(&p, &plan(&map, &n, &cfg(), family));
        // Generated services may repeat a port number under two names, and then two
        // service ports want the same virtual server; check only the unambiguous ones.
        let mut owners: std::collections::BTreeMap<crate::netlink::ServiceKey, usize> = Default::default();
        for sp in map.family(family).values() {
            for ip in sp.virtual_ips() {
                *owners.entry(Service::new(sp.name.protocol.into(), ip, sp.port, "rr").key()).or_default() += 1;
            }
            for ip in node_port_ips(&n, &cfg(), family) {
                if let Some(np) = sp.node_port {
                    *owners.entry(Service::new(sp.name.protocol.into(), ip, np, "rr").key()).or_default() += 1;
                }
            }
        }
        for sp in map.family(family).values() {
            let ambiguous = sp.virtual_ips().any(|ip| owners[&Service::new(sp.name.protocol.into(), ip, sp.port, "rr").key()] > 1)
                || sp.node_port.is_some_and(|np| node_port_ips(&n, &cfg(), family).iter().any(|ip| owners[&Service::new(sp.name.protocol.into(), *ip, np, "rr").key()] > 1));
            if ambiguous {
                continue;
            }
            let want = |local: bool| if local && !sp.selection.local.is_empty() { sp.selection.local.clone() } else { sp.selection.cluster.clone() };
            let of_port: Vec<&VirtualServer> = p.services.values().filter(|v| v.owner == sp.name).collect();
            let cip = of_port.iter().find(|v| v.kind == VsKind::ClusterIp);
            prop_assert!(cip.is_some());
            prop_assert_eq!(addrs(cip.unwrap()), want(sp.internal_policy_local));
            for v in &of_port {
                prop_assert!(addrs(v).iter().all(|a| sp.reachable_endpoints().contains(a)));
                if v.kind != VsKind::ClusterIp {
                    prop_assert_eq!(addrs(v), want(sp.external_policy_local));
                }
            }
            let np = of_port.iter().filter(|v| v.kind == VsKind::NodePort).count();
            prop_assert_eq!(np, if sp.node_port.is_some() { node_port_ips(&n, &cfg(), family).len() } else { 0 });
            prop_assert_eq!(of_port.len(), 1 + sp.external_ips.len() + sp.load_balancer_ips.len() + np);
        }
        for v in p.services.values() {
            prop_assert_eq!(IpFamily::of(&v.service.address), family);
        }
        prop_assert!(p.addresses.iter().all(|a: &IpAddr| IpFamily::of(a) == family));
        prop_assert!(p.ipsets.iter().all(|s| s.name.len() <= MAX_SET_NAME && (family == IpFamily::V4 || s.name.starts_with("KUBE-6-"))));
    }
}

/// What changed between two plans, as an [`IncrementalPlan::update`] should report it.
fn delta_between(old: &Plan, new: &Plan) -> PlanDelta {
    let keys: BTreeSet<_> = old.services.keys().chain(new.services.keys()).collect();
    let mut d = PlanDelta {
        services: keys
            .into_iter()
            .filter(|k| old.services.get(k) != new.services.get(k))
            .copied()
            .collect(),
        addresses_added: new.addresses.difference(&old.addresses).copied().collect(),
        addresses_removed: old.addresses.difference(&new.addresses).copied().collect(),
        iptables_changed: old.iptables != new.iptables,
        ..Default::default()
    };
    for (o, n) in old.ipsets.iter().zip(&new.ipsets) {
        d.entries_added
            .extend(n.entries.difference(&o.entries).map(|e| (n.id, e.clone())));
        d.entries_removed
            .extend(o.entries.difference(&n.entries).map(|e| (n.id, e.clone())));
    }
    d
}

fn sorted(mut d: PlanDelta) -> PlanDelta {
    d.entries_added.sort();
    d.entries_removed.sort();
    d.addresses_added.sort();
    d.addresses_removed.sort();
    d
}

proptest! {
    /// Re-planning only the ports a change set names gives the full plan of the new
    /// map, and reports exactly what changed.
    #[test]
    fn an_incremental_plan_equals_the_full_plan_and_reports_the_difference(
        before in arb_snapshot(),
        after in arb_snapshot(),
    ) {
        let (n, c) = (node(), cfg());
        let mb = ServiceMap::build(&before, &BuildOptions::for_node("node-a"));
        let ma = ServiceMap::build(&after, &BuildOptions::for_node("node-a"));
        let changes = kproxy_core::ChangeSet::between(&mb, &ma);
        for family in IpFamily::ALL {
            let mut inc = IncrementalPlan::new(&mb, PlanContext::new(&n, &c, family));
            let old = plan(&mb, &n, &c, family);
            prop_assert_eq!(inc.plan(), &old);
            let names: Vec<ServicePortName> = changes
                .added
                .iter()
                .chain(&changes.updated)
                .chain(&changes.removed)
                .filter(|(f, _)| *f == family)
                .map(|(_, name)| name.clone())
                .collect();
            let delta = inc.update(&ma, &names);
            let new = plan(&ma, &n, &c, family);
            prop_assert_eq!(inc.plan(), &new);
            prop_assert_eq!(sorted(delta), sorted(delta_between(&old, &new)));
        }
    }
}
