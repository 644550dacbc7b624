//! Kernel tests: the real executor loads kproxy's rules into a node namespace with
//! `ip netns exec NODE iptables-restore`, and real TCP/UDP traffic from a client
//! namespace must reach the backend namespace as upstream's rules would send it.
//!
//! Run as root; without root or `ip netns` each test prints why and returns. Everything
//! happens inside namespaces the test creates and deletes (also on failure).

#[path = "kernel/netns.rs"]
mod netns;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use kproxy_core::model::IpFamily;
use kproxy_core::{
    BuildOptions, ChangeSet, KubeProxyConfiguration, NodeFacts, Proxier, ServiceMap, Snapshot,
};
use kproxy_iptables::exec::{Backend, RealExecutor};
use kproxy_iptables::proxier::IptablesProxier;
use netns::{BACKENDS_V4, Topology, ask_on, skip_reason, tcp_ask, udp_ask};

const NODE: &str = "kp-node";
const T: Duration = Duration::from_secs(2);

fn services(web_v4: &[&str]) -> String {
    let eps = |ips: &[&str], node: &str| {
        ips.iter()
            .map(|ip| format!("{{addresses: [\"{ip}\"], nodeName: {node}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: t}}
spec:
  type: NodePort
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00:96::10"]
  externalIPs: [10.240.50.1]
  ports:
  - {{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30080}}
  - {{name: dns, port: 53, protocol: UDP, targetPort: 8080, nodePort: 30053}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-4, namespace: t, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
endpoints: [{web4}]
ports: [{{name: http, port: 8080, protocol: TCP}}, {{name: dns, port: 8080, protocol: UDP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-6, namespace: t, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv6
endpoints: [{web6}]
ports: [{{name: http, port: 8080, protocol: TCP}}, {{name: dns, port: 8080, protocol: UDP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: lb-open, namespace: t}}
spec: {{type: LoadBalancer, clusterIP: 10.96.0.20, loadBalancerSourceRanges: [10.240.1.0/24], ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30081}}]}}
status: {{loadBalancer: {{ingress: [{{ip: 10.240.60.1}}]}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: lb-closed, namespace: t}}
spec: {{type: LoadBalancer, clusterIP: 10.96.0.21, loadBalancerSourceRanges: [10.240.77.0/24], ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30082}}]}}
status: {{loadBalancer: {{ingress: [{{ip: 10.240.60.2}}]}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: local, namespace: t}}
spec: {{type: NodePort, externalTrafficPolicy: Local, clusterIP: 10.96.0.30, ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30083}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: empty, namespace: t}}
spec: {{clusterIP: 10.96.0.40, ports: [{{name: http, port: 80, protocol: TCP}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: sticky, namespace: t}}
spec: {{clusterIP: 10.96.0.50, sessionAffinity: ClientIP, ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: lb-open-1, namespace: t, labels: {{kubernetes.io/service-name: lb-open}}}}
addressType: IPv4
endpoints: [{all}]
ports: [{{name: http, port: 8080, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: lb-closed-1, namespace: t, labels: {{kubernetes.io/service-name: lb-closed}}}}
addressType: IPv4
endpoints: [{all}]
ports: [{{name: http, port: 8080, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: local-1, namespace: t, labels: {{kubernetes.io/service-name: local}}}}
addressType: IPv4
endpoints: [{local}]
ports: [{{name: http, port: 8080, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: sticky-1, namespace: t, labels: {{kubernetes.io/service-name: sticky}}}}
addressType: IPv4
endpoints: [{all}]
ports: [{{name: http, port: 8080, protocol: TCP}}]
"#,
        web4 = eps(web_v4, "other"),
        web6 = eps(&netns::BACKENDS_V6, "other"),
        all = eps(&BACKENDS_V4, "other"),
        local = eps(&BACKENDS_V4[1..], NODE),
    )
}

fn map(web_v4: &[&str]) -> ServiceMap {
    let (snap, problems) = Snapshot::from_documents(&services(web_v4)).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    ServiceMap::build(&snap, &BuildOptions::for_node(NODE))
}

fn node_facts() -> NodeFacts {
    NodeFacts {
        name: NODE.into(),
        node_ips: vec![
            "10.240.1.1".parse().unwrap(),
            "fd00:240:1::1".parse().unwrap(),
        ],
        local_addresses: Topology::node_addresses(),
        pod_cidrs: vec![],
    }
}

struct Env {
    topo: Topology,
    proxier: IptablesProxier<RealExecutor>,
    rt: tokio::runtime::Runtime,
}

impl Env {
    fn new() -> Option<Env> {
        if let Some(reason) = skip_reason() {
            eprintln!("skipping kernel test: {reason}");
            return None;
        }
        let topo = Topology::new().expect("namespace setup");
        // KPROXY_IPTABLES_BACKEND=legacy|nft runs the suite against one flavour.
        let backend = match std::env::var("KPROXY_IPTABLES_BACKEND").as_deref() {
            Ok("legacy") => Backend::Legacy,
            Ok("nft") => Backend::Nft,
            _ => Backend::Default,
        };
        let exec = RealExecutor::new(backend)
            .with_prefix(vec![
                "ip".into(),
                "netns".into(),
                "exec".into(),
                topo.node.clone(),
            ])
            .with_timeout(Duration::from_secs(20));
        let proxier = IptablesProxier::new(
            exec,
            &KubeProxyConfiguration::default(),
            &[IpFamily::V4, IpFamily::V6],
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Some(Env { topo, proxier, rt })
    }

    fn sync(&mut self, map: &ServiceMap, changes: &ChangeSet) -> kproxy_core::SyncStats {
        self.rt
            .block_on(self.proxier.sync(map, changes, &node_facts()))
            .expect("sync")
    }

    fn client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        Topology::in_ns(&self.topo.client, f).expect("client namespace")
    }
}

fn save_tool() -> String {
    match std::env::var("KPROXY_IPTABLES_BACKEND").as_deref() {
        Ok(b @ ("legacy" | "nft")) => format!("iptables-{b}-save"),
        _ => "iptables-save".into(),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The backends (and the source IPs they saw) over `n` new TCP connections.
fn tcp_spread(env: &Env, dst: &str, n: usize) -> (BTreeSet<String>, BTreeSet<String>) {
    let dst = addr(dst);
    let replies: Vec<String> = env.client(move || {
        (0..n)
            .map(|_| tcp_ask(dst, T).unwrap_or_else(|e| format!("error {e}")))
            .collect()
    });
    let mut backends = BTreeSet::new();
    let mut peers = BTreeSet::new();
    for r in replies {
        let mut w = r.split_whitespace();
        backends.insert(w.next().unwrap_or_default().to_owned());
        peers.insert(w.next().unwrap_or_default().to_owned());
    }
    (backends, peers)
}

fn all_v4() -> BTreeSet<String> {
    BACKENDS_V4.iter().map(|s| (*s).to_owned()).collect()
}

fn one(s: &str) -> BTreeSet<String> {
    std::iter::once(s.to_owned()).collect()
}

#[test]
fn tcp_and_udp_reach_every_endpoint_through_every_frontend() {
    let Some(mut env) = Env::new() else { return };
    let stats = env.sync(&map(&BACKENDS_V4), &ChangeSet::full());
    assert!(stats.full);
    // Cluster IP: no masquerade (no local detector configured, so none for off-cluster).
    assert_eq!(
        tcp_spread(&env, "10.96.0.10:80", 24),
        (all_v4(), one("10.240.1.2"))
    );
    // Node port, external IP, LB IP (source range allows the client): masqueraded.
    for dst in ["10.240.1.1:30080", "10.240.50.1:80", "10.240.60.1:80"] {
        assert_eq!(
            tcp_spread(&env, dst, 24),
            (all_v4(), one("10.240.2.1")),
            "{dst}"
        );
    }
    // UDP through the cluster IP and the node port, a new socket (flow) each time.
    for dst in ["10.96.0.10:53", "10.240.1.1:30053"] {
        let d = addr(dst);
        let seen: BTreeSet<String> = env.client(move || {
            (0..24)
                .map(|_| {
                    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                    udp_ask(&s, d, T).unwrap_or_else(|e| format!("error {e}"))
                })
                .map(|r| r.split_whitespace().next().unwrap_or_default().to_owned())
                .collect()
        });
        assert_eq!(seen, all_v4(), "{dst}");
    }
    // IPv6 cluster IP.
    let (b6, _) = tcp_spread(&env, "[fd00:96::10]:80", 24);
    assert_eq!(
        b6,
        netns::BACKENDS_V6.iter().map(|s| (*s).to_owned()).collect()
    );
}

#[test]
fn reject_drop_local_policy_and_affinity() {
    let Some(mut env) = Env::new() else { return };
    env.sync(&map(&BACKENDS_V4), &ChangeSet::full());
    // No endpoints: REJECT answers at once.
    let (err, took) = env.client(|| {
        let start = Instant::now();
        (
            tcp_ask(addr("10.96.0.40:80"), T).err().map(|e| e.kind()),
            start.elapsed(),
        )
    });
    assert_eq!(err, Some(std::io::ErrorKind::ConnectionRefused));
    assert!(took < Duration::from_millis(500), "{took:?}");
    // Source ranges: the client is outside lb-closed's ranges, so the SYN is dropped.
    let (res, took) = env.client(|| {
        let start = Instant::now();
        (
            tcp_ask(addr("10.240.60.2:80"), Duration::from_millis(700)),
            start.elapsed(),
        )
    });
    assert!(
        res.is_err() && took >= Duration::from_millis(600),
        "{res:?} after {took:?}"
    );
    // externalTrafficPolicy Local keeps the client's source IP.
    assert_eq!(
        tcp_spread(&env, "10.240.1.1:30083", 4),
        (one(BACKENDS_V4[1]), one("10.240.1.2"))
    );
    // ClientIP affinity sticks to one endpoint.
    let (backends, _) = tcp_spread(&env, "10.96.0.50:80", 12);
    assert_eq!(backends.len(), 1, "{backends:?}");
}

#[test]
fn established_connection_survives_full_and_partial_syncs() {
    let Some(mut env) = Env::new() else { return };
    let m1 = map(&BACKENDS_V4);
    env.sync(&m1, &ChangeSet::full());
    let (conn, first): (TcpStream, String) = env.client(|| {
        let c = TcpStream::connect_timeout(&addr("10.96.0.10:80"), T).unwrap();
        let r = ask_on(&c, T).unwrap();
        (c, r)
    });
    let backend = first.split_whitespace().next().unwrap().to_owned();
    env.proxier.request_full_sync();
    assert!(env.sync(&m1, &ChangeSet::default()).full);
    assert_eq!(ask_on(&conn, T).unwrap(), first, "after a full resync");
    // A partial sync that removes the *other* endpoint.
    let m2 = map(&[backend.as_str()]);
    let stats = env.sync(&m2, &ChangeSet::between(&m1, &m2));
    assert!(!stats.full);
    assert_eq!(ask_on(&conn, T).unwrap(), first, "after a partial sync");
    let (seen, _) = tcp_spread(&env, "10.96.0.10:80", 8);
    assert_eq!(
        seen,
        one(&backend),
        "new connections only reach the remaining endpoint"
    );
}

#[test]
fn stale_udp_conntrack_entries_are_deleted_when_an_endpoint_goes() {
    let Some(mut env) = Env::new() else { return };
    let m1 = map(&BACKENDS_V4);
    env.sync(&m1, &ChangeSet::full());
    let sock: UdpSocket = env.client(|| UdpSocket::bind("10.240.1.2:40053").unwrap());
    let first = udp_ask(&sock, addr("10.96.0.10:53"), T).unwrap();
    let gone = first.split_whitespace().next().unwrap().to_owned();
    // The backend that answered stays up, so only a deleted conntrack entry moves the flow.
    let keep: Vec<&str> = BACKENDS_V4.iter().copied().filter(|b| *b != gone).collect();
    let m2 = map(&keep);
    let changes = ChangeSet::between(&m1, &m2);
    assert!(!changes.stale_flows.is_empty());
    env.sync(&m2, &changes);
    let again = udp_ask(&sock, addr("10.96.0.10:53"), T).unwrap();
    assert_eq!(
        again.split_whitespace().next(),
        Some(keep[0]),
        "same socket, new endpoint"
    );
    assert!(env.proxier.metrics(IpFamily::V4).unwrap().conntrack_deleted >= 1);
}

#[test]
fn canary_and_cleanup() {
    let Some(mut env) = Env::new() else { return };
    env.sync(&map(&BACKENDS_V4), &ChangeSet::full());
    assert!(
        env.rt
            .block_on(env.proxier.canary_present(IpFamily::V4))
            .unwrap()
    );
    env.rt.block_on(env.proxier.cleanup()).unwrap();
    assert!(
        !env.rt
            .block_on(env.proxier.canary_present(IpFamily::V4))
            .unwrap()
    );
    let saved = std::process::Command::new("ip")
        .args(["netns", "exec", &env.topo.node, &save_tool()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&saved.stdout);
    let left: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("KUBE-") && !l.contains("KUBE-FIREWALL"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // Traffic to the service is no longer translated.
    assert!(
        env.client(|| tcp_ask(addr("10.96.0.10:80"), Duration::from_millis(500)))
            .is_err()
    );
}

#[test]
fn partial_syncs_edit_shared_chains_in_place() {
    let Some(mut env) = Env::new() else { return };
    let m1 = map(&BACKENDS_V4);
    env.sync(&m1, &ChangeSet::full());
    // All IPv4 endpoints of web go: its KUBE-SERVICES/KUBE-NODEPORTS rules are deleted with
    // `-D` and REJECT rules added, without rewriting the shared chains.
    let m2 = map(&[]);
    assert!(!env.sync(&m2, &ChangeSet::between(&m1, &m2)).full);
    let refused = env.client(|| tcp_ask(addr("10.96.0.10:80"), T).err().map(|e| e.kind()));
    assert_eq!(refused, Some(std::io::ErrorKind::ConnectionRefused));
    let m3 = map(&BACKENDS_V4);
    assert!(!env.sync(&m3, &ChangeSet::between(&m2, &m3)).full);
    assert_eq!(tcp_spread(&env, "10.96.0.10:80", 24).0, all_v4());
    assert_eq!(tcp_spread(&env, "10.240.1.1:30080", 8).0.len(), 2);
    // The jump to KUBE-NODEPORTS is still the last rule of nat KUBE-SERVICES.
    let saved = std::process::Command::new("ip")
        .args(["netns", "exec", &env.topo.node, &save_tool(), "-t", "nat"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&saved.stdout);
    let last = text
        .lines()
        .rfind(|l| l.starts_with("-A KUBE-SERVICES "))
        .unwrap_or_default();
    assert!(last.ends_with("-j KUBE-NODEPORTS"), "{last}");
    assert_eq!(env.proxier.metrics(IpFamily::V4).unwrap().partial_syncs, 2);
}

#[test]
fn backend_detection_prefers_the_flavour_holding_kubelet_chains() {
    let Some(env) = Env::new() else { return };
    let prefix = vec![
        "ip".to_owned(),
        "netns".into(),
        "exec".into(),
        env.topo.node.clone(),
    ];
    let tools = |t: &str| {
        std::process::Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !tools("iptables-nft") || !tools("iptables-legacy") {
        eprintln!("skipping: needs both iptables-nft and iptables-legacy");
        return;
    }
    assert_eq!(
        env.rt
            .block_on(kproxy_iptables::exec::detect_backend(&prefix)),
        Backend::Nft,
        "nothing there: nft"
    );
    let ok = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &env.topo.node,
            "iptables-legacy",
            "-t",
            "mangle",
            "-N",
            "KUBE-KUBELET-CANARY",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    assert_eq!(
        env.rt
            .block_on(kproxy_iptables::exec::detect_backend(&prefix)),
        Backend::Legacy
    );
}
