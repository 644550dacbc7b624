use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use kproxy_core::testing::{NODES, arb_snapshot};
use kproxy_core::{BuildOptions, ServiceMap, Snapshot};
use proptest::prelude::*;

use super::*;

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: default }
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  externalIPs: [203.0.113.7]
  ports: [{ name: http, port: 80, nodePort: 30080, protocol: TCP }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: default
  labels: { kubernetes.io/service-name: web }
addressType: IPv4
ports: [{ name: http, port: 8080, protocol: TCP }]
endpoints:
- addresses: [10.0.1.5]
  conditions: { ready: true }
  nodeName: node-a
---
apiVersion: v1
kind: Service
metadata: { name: sig, namespace: default }
spec:
  clusterIP: 10.96.0.11
  ports: [{ port: 9000, protocol: SCTP }]
"#;

fn web_map() -> ServiceMap {
    let (snap, problems) = Snapshot::from_documents(WEB).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    ServiceMap::build(&snap, &BuildOptions::for_node("node-a"))
}

fn node() -> NodeFacts {
    NodeFacts {
        name: "node-a".into(),
        node_ips: vec![IpAddr::V4(Ipv4Addr::new(172, 18, 0, 2))],
        local_addresses: vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::new(172, 18, 0, 2)),
        ],
        pod_cidrs: vec![],
    }
}

fn any_v4() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}

#[test]
fn a_nodeport_service_with_an_external_ip_gets_upstreams_rules() {
    let map = web_map();
    let ports: BTreeMap<_, _> = map
        .family(IpFamily::V4)
        .keys()
        .map(|k| (k.clone(), 40000u16))
        .collect();
    let listen = ListenConfig::new(any_v4(), IpFamily::V4, &node());
    let p = plan(&map, IpFamily::V4, &ports, &listen, &node(), &Jumps::none());
    let expected = r#"*nat
:KUBE-PORTALS-CONTAINER - [0:0]
:KUBE-PORTALS-HOST - [0:0]
:KUBE-NODEPORT-CONTAINER - [0:0]
:KUBE-NODEPORT-HOST - [0:0]
-I PREROUTING 1 -m comment --comment "handle ClusterIPs; NOTE: this must be before the NodePort rules" -j KUBE-PORTALS-CONTAINER
-I OUTPUT 1 -m comment --comment "handle ClusterIPs; NOTE: this must be before the NodePort rules" -j KUBE-PORTALS-HOST
-A PREROUTING -m addrtype --dst-type LOCAL -m comment --comment "handle service NodePorts; NOTE: this must be the last rule in the chain" -j KUBE-NODEPORT-CONTAINER
-A OUTPUT -m addrtype --dst-type LOCAL -m comment --comment "handle service NodePorts; NOTE: this must be the last rule in the chain" -j KUBE-NODEPORT-HOST
-A KUBE-PORTALS-CONTAINER -m comment --comment "default/web:http" -p tcp -m tcp --dport 80 -d 10.96.0.10/32 -j REDIRECT --to-ports 40000
-A KUBE-PORTALS-CONTAINER -m comment --comment "default/web:http" -p tcp -m tcp --dport 80 -d 203.0.113.7/32 -m physdev ! --physdev-is-in -j REDIRECT --to-ports 40000
-A KUBE-PORTALS-CONTAINER -m comment --comment "default/web:http" -p tcp -m tcp --dport 80 -d 203.0.113.7/32 -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 40000
-A KUBE-PORTALS-HOST -m comment --comment "default/web:http" -p tcp -m tcp --dport 80 -d 10.96.0.10/32 -j DNAT --to-destination 172.18.0.2:40000
-A KUBE-PORTALS-HOST -m comment --comment "default/web:http" -p tcp -m tcp --dport 80 -d 203.0.113.7/32 -m addrtype --dst-type LOCAL -j DNAT --to-destination 172.18.0.2:40000
-A KUBE-NODEPORT-CONTAINER -m comment --comment "default/web:http" -p tcp -m tcp --dport 30080 -j REDIRECT --to-ports 40000
-A KUBE-NODEPORT-HOST -m comment --comment "default/web:http" -p tcp -m tcp --dport 30080 -j DNAT --to-destination 172.18.0.2:40000
COMMIT
*filter
:KUBE-NODEPORT-NON-LOCAL - [0:0]
-I INPUT 1 -m comment --comment "Ensure that non-local NodePort traffic can flow" -j KUBE-NODEPORT-NON-LOCAL
-A KUBE-NODEPORT-NON-LOCAL -m comment --comment "default/web:http" -p tcp -m tcp --dport 40000 -m state --state NEW -j ACCEPT
COMMIT
"#;
    assert_eq!(p.rules, expected);
    assert_eq!(p.rule_count, 8);
    assert_eq!(p.listeners.len(), 1);
    assert_eq!(p.listeners[0].bind, "0.0.0.0:40000".parse().unwrap());
    assert_eq!(
        p.listeners[0].claims,
        vec!["0.0.0.0:30080".parse().unwrap()]
    );
    assert_eq!(p.sctp.len(), 1);
}

#[test]
fn a_specific_bind_address_uses_dnat_everywhere() {
    let map = web_map();
    let ports: BTreeMap<_, _> = map
        .family(IpFamily::V4)
        .keys()
        .map(|k| (k.clone(), 40000u16))
        .collect();
    let bind = IpAddr::V4(Ipv4Addr::new(172, 18, 0, 9));
    let listen = ListenConfig::new(bind, IpFamily::V4, &node());
    let p = plan(&map, IpFamily::V4, &ports, &listen, &node(), &Jumps::none());
    assert!(!p.rules.contains("REDIRECT"));
    assert_eq!(
        p.rules.matches("--to-destination 172.18.0.9:40000").count(),
        7
    );
}

#[test]
fn installed_jumps_are_not_added_again_and_cleanup_removes_them() {
    let saved_nat = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-PORTALS-CONTAINER - [0:0]\n:KUBE-NODEPORT-HOST - [0:0]\n\
        -A PREROUTING -m comment --comment \"handle ClusterIPs; NOTE: this must be before the NodePort rules\" -j KUBE-PORTALS-CONTAINER\n\
        -A OUTPUT -m addrtype --dst-type LOCAL -m comment --comment \"handle service NodePorts; NOTE: this must be the last rule in the chain\" -j KUBE-NODEPORT-HOST\nCOMMIT\n";
    let jumps = Jumps::from_saved(saved_nat, "");
    assert_eq!(jumps.present, [true, false, false, true, false]);
    let p = plan(
        &ServiceMap::default(),
        IpFamily::V4,
        &BTreeMap::new(),
        &ListenConfig::new(any_v4(), IpFamily::V4, &node()),
        &node(),
        &jumps,
    );
    assert!(!p.rules.contains("-I PREROUTING"));
    assert!(p.rules.contains("-I OUTPUT 1 "));
    assert_eq!(
        p.rules.matches("-I ").count()
            + p.rules.matches("-A PREROUTING").count()
            + p.rules.matches("-A OUTPUT").count(),
        3
    );
    let cleanup = cleanup_rules(saved_nat, "");
    assert_eq!(
        cleanup,
        "*nat\n-D PREROUTING -m comment --comment \"handle ClusterIPs; NOTE: this must be before the NodePort rules\" -j KUBE-PORTALS-CONTAINER\n\
         -D OUTPUT -m addrtype --dst-type LOCAL -m comment --comment \"handle service NodePorts; NOTE: this must be the last rule in the chain\" -j KUBE-NODEPORT-HOST\n\
         :KUBE-PORTALS-CONTAINER - [0:0]\n:KUBE-NODEPORT-HOST - [0:0]\n-X KUBE-PORTALS-CONTAINER\n-X KUBE-NODEPORT-HOST\nCOMMIT\n"
    );
    assert_eq!(cleanup_rules("", ""), "");
}

#[test]
fn render_plan_uses_the_port_range_in_order() {
    let map = web_map();
    let mut cfg = KubeProxyConfiguration::default();
    "30500-30510".clone_into(&mut cfg.port_range);
    let text = render_plan(&map, &node(), &cfg, IpFamily::V4);
    assert!(
        text.contains("# listener TCP 0.0.0.0:30500 -> default/web:http endpoints [10.0.1.5:8080]"),
        "{text}"
    );
    assert!(text.contains("--to-ports 30500"));
    assert!(text.contains("# skipped default/sig: SCTP is not supported in userspace mode"));
    assert_eq!(text, render_plan(&map, &node(), &cfg, IpFamily::V4));
    let default = render_plan(
        &map,
        &node(),
        &KubeProxyConfiguration::default(),
        IpFamily::V4,
    );
    assert!(default.contains("placeholders") && default.contains("--to-ports 32768"));
}

/// The rules one port should have: (chain, destination, dport) triples, with a count.
fn expected_rules(
    p: &kproxy_core::ServicePort,
    proxy_port: u16,
) -> Vec<(String, Option<String>, u16)> {
    let bits = if p.cluster_ip.is_ipv4() { 32 } else { 128 };
    let mut v = Vec::new();
    let d = |ip: &IpAddr| Some(format!("{ip}/{bits}"));
    v.push((CONTAINER_PORTAL_CHAIN.to_owned(), d(&p.cluster_ip), p.port));
    v.push((HOST_PORTAL_CHAIN.to_owned(), d(&p.cluster_ip), p.port));
    for ip in &p.external_ips {
        v.push((CONTAINER_PORTAL_CHAIN.to_owned(), d(ip), p.port));
        v.push((CONTAINER_PORTAL_CHAIN.to_owned(), d(ip), p.port));
        v.push((HOST_PORTAL_CHAIN.to_owned(), d(ip), p.port));
    }
    for ip in &p.load_balancer_ips {
        v.push((CONTAINER_PORTAL_CHAIN.to_owned(), d(ip), p.port));
        v.push((HOST_PORTAL_CHAIN.to_owned(), d(ip), p.port));
    }
    if let Some(np) = p.node_port {
        v.push((CONTAINER_NODEPORT_CHAIN.to_owned(), None, np));
        v.push((HOST_NODEPORT_CHAIN.to_owned(), None, np));
        v.push((NON_LOCAL_NODEPORT_CHAIN.to_owned(), None, proxy_port));
    }
    v.sort();
    v
}

/// Parses the per-service rules of a plan into (comment, chain, destination, dport).
fn parsed_rules(text: &str) -> BTreeMap<String, Vec<(String, Option<String>, u16)>> {
    let mut m: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for l in text.lines().filter(|l| l.starts_with("-A KUBE-")) {
        let w: Vec<&str> = l.split_whitespace().collect();
        let chain = w[1].to_owned();
        let proto = w[w.iter().position(|x| *x == "-p").unwrap() + 1];
        let comment = format!("{} {proto}", w[5].trim_matches('"'));
        let dport = w[w.iter().position(|x| *x == "--dport").unwrap() + 1]
            .parse()
            .unwrap();
        let dest = w
            .iter()
            .position(|x| *x == "-d")
            .map(|i| w[i + 1].to_owned());
        m.entry(comment).or_default().push((chain, dest, dport));
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

proptest! {
    /// Every TCP/UDP port of every family has exactly its rules, SCTP ports have none, and
    /// ports removed from the map lose all theirs.
    #[test]
    fn every_port_has_exactly_its_rules(snap in arb_snapshot(), drop_mask in any::<u64>()) {
        let map = ServiceMap::build(&snap, &BuildOptions::for_node(NODES[0]));
        for family in IpFamily::ALL {
            let ports: BTreeMap<_, _> = map.family(family).keys().enumerate()
                .map(|(i, k)| (k.clone(), 20000 + i as u16)).collect();
            let listen = ListenConfig::new(unspecified(family), family, &node());
            let p = plan(&map, family, &ports, &listen, &node(), &Jumps::none());
            let got = parsed_rules(&p.rules);
            let mut want: BTreeMap<String, Vec<_>> = BTreeMap::new();
            for sp in map.family(family).values().filter(|sp| sp.name.protocol != Protocol::Sctp) {
                let key = format!("{} {}", sp.name, sp.name.protocol.as_lower());
                want.insert(key, expected_rules(sp, ports[&sp.name]));
            }
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(p.rule_count, want.values().map(Vec::len).sum::<usize>());
            // Same inputs, same bytes.
            prop_assert_eq!(&p, &plan(&map, family, &ports, &listen, &node(), &Jumps::none()));

            // Remove some ports: their comments vanish, the others keep their rules.
            let kept: BTreeMap<_, _> = ports.iter().enumerate()
                .filter(|(i, _)| drop_mask & (1 << (i % 64)) == 0)
                .map(|(_, (k, v))| (k.clone(), *v)).collect();
            let p2 = plan(&map, family, &kept, &listen, &node(), &Jumps::none());
            let got2 = parsed_rules(&p2.rules);
            for (name, _) in ports.iter().filter(|(k, _)| !kept.contains_key(*k)) {
                let key = format!("{} {}", name, name.protocol.as_lower());
                prop_assert!(!got2.contains_key(&key));
            }
            for (name, rules) in &got2 {
                prop_assert_eq!(Some(rules), want.get(name));
            }
        }
    }
}
