//! Kernel tests: run only inside the IPVS VM (`IPVS_VM=1`, set by
//! `../shared/tools/ipvs-vm/run-in-vm.sh`); on the host each test returns at once.
//! Run them with `kproxy-ipvs/run-kernel-tests.sh`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

#[path = "kernel/lab.rs"]
mod lab;

use kproxy_core::model::IpFamily;
use kproxy_core::{
    BuildOptions, ChangeSet, KubeProxyConfiguration, NodeFacts, Proxier, ServiceMap, Snapshot,
};
use kproxy_ipvs::IpvsProxier;
use kproxy_ipvs::exec::RealExecutor;
use kproxy_ipvs::handle::{IpvsHandle, IpvsOps};
use kproxy_ipvs::netlink::{Destination, IpvsInfo, IpvsProtocol, SVC_F_PERSISTENT, Service};
use kproxy_ipvs::plan::Plan;
use kproxy_ipvs::reconcile::Op;
use lab::{Lab, from_ns, sh, tcp_hello, udp_hello};

fn in_vm() -> bool {
    if std::env::var("IPVS_VM").is_err() {
        eprintln!("skipped: needs the IPVS VM (run kproxy-ipvs/run-kernel-tests.sh)");
        return false;
    }
    true
}

fn ipvsadm_ln() -> String {
    sh("ipvsadm -Ln")
}

/// The tests share one kernel: one at a time, each on a fresh IPVS table.
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    let g = LOCK.lock().await;
    sh("ipvsadm -C");
    g
}

#[tokio::test]
async fn codec_services_and_destinations_round_trip_through_the_kernel() {
    if !in_vm() {
        return;
    }
    let _g = serial().await;
    let h = IpvsHandle::new().unwrap();
    assert!(h.probe().await.unwrap() > 0);
    let vip = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10));
    let mut svc = Service::new(IpvsProtocol::Tcp, vip, 80, "rr");
    h.add_service(&svc).await.unwrap();
    let d = Destination::new(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        8080,
    ));
    h.add_destination(&svc, &d).await.unwrap();
    let v6 = Service::new(IpvsProtocol::Udp, "fd00::10".parse().unwrap(), 53, "sh");
    h.add_service(&v6).await.unwrap();
    let text = ipvsadm_ln();
    assert!(text.contains("TCP  10.96.0.10:80 rr"), "{text}");
    assert!(
        text.contains("-> 10.0.0.2:8080                Masq    1"),
        "{text}"
    );
    assert!(text.contains("UDP  [fd00::10]:53 sh"), "{text}");

    let listed = h.list_services().await.unwrap();
    assert_eq!(listed.len(), 2);
    let got = listed.iter().find(|s| s.key() == svc.key()).unwrap();
    assert!(got.same_config(&svc), "{got:?}");
    let dests = h.list_destinations(&svc).await.unwrap();
    assert_eq!(dests.len(), 1);
    assert_eq!(
        (dests[0].socket_addr(), dests[0].weight),
        (d.socket_addr(), 1)
    );

    svc.scheduler = "sh".into();
    svc.flags = SVC_F_PERSISTENT;
    svc.timeout = 10800;
    h.update_service(&svc).await.unwrap();
    let mut d0 = d.clone();
    d0.weight = 0;
    h.update_destination(&svc, &d0).await.unwrap();
    let text = ipvsadm_ln();
    assert!(
        text.contains("TCP  10.96.0.10:80 sh persistent 10800"),
        "{text}"
    );
    assert!(text.contains("Masq    0"), "{text}");

    h.delete_destination(&svc, &d).await.unwrap();
    assert!(h.list_destinations(&svc).await.unwrap().is_empty());
    h.delete_service(&svc).await.unwrap();
    let err = h.delete_service(&svc).await.unwrap_err();
    assert!(
        err.to_string().contains("delete service 10.96.0.10:80/TCP"),
        "{err}"
    );
    h.set_timeouts(&IpvsInfo {
        tcp_timeout: 900,
        tcp_fin_timeout: 120,
        udp_timeout: 300,
        ..Default::default()
    })
    .await
    .unwrap();
    let info = h.info().await.unwrap();
    assert_eq!(
        (
            info.tcp_timeout,
            info.tcp_fin_timeout,
            info.udp_timeout,
            info.version
        ),
        (900, 120, 300, 0x010201)
    );
    assert!(sh("ipvsadm -L --timeout").contains("900 120 300"));
    h.flush().await.unwrap();
    assert!(h.list_services().await.unwrap().is_empty());
}

const MAP: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: default }
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  ports: [{ name: http, port: 80, protocol: TCP, nodePort: 30080 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-a, namespace: default, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
ports: [{ name: http, port: 8080, protocol: TCP }]
endpoints:
- { addresses: [10.244.1.5], nodeName: node-a }
- { addresses: [10.244.2.6], nodeName: node-b }
---
apiVersion: v1
kind: Service
metadata: { name: dns, namespace: default }
spec:
  clusterIP: 10.96.0.53
  ports: [{ name: dns, port: 53, protocol: UDP }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: dns-a, namespace: default, labels: { kubernetes.io/service-name: dns } }
addressType: IPv4
ports: [{ name: dns, port: 8080, protocol: UDP }]
endpoints:
- { addresses: [10.244.1.5], nodeName: node-a }
- { addresses: [10.244.2.6], nodeName: node-b }
"#;

fn map(yaml: &str) -> ServiceMap {
    let (snap, problems) = Snapshot::from_documents(yaml).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    ServiceMap::build(&snap, &BuildOptions::for_node("node-a"))
}

fn without_be2() -> ServiceMap {
    map(&MAP.replace("- { addresses: [10.244.2.6], nodeName: node-b }\n", ""))
}

fn node() -> NodeFacts {
    NodeFacts {
        name: "node-a".into(),
        node_ips: vec!["192.168.50.1".parse().unwrap()],
        local_addresses: ["127.0.0.1", "192.168.50.1", "10.244.1.1", "10.244.2.1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect(),
        pod_cidrs: vec![],
    }
}

fn cfg(scheduler: &str) -> KubeProxyConfiguration {
    let mut c = KubeProxyConfiguration {
        cluster_cidr: "10.244.0.0/16".into(),
        node_port_addresses: vec!["192.168.50.0/24".into()],
        ..Default::default()
    };
    c.ipvs.scheduler = scheduler.into();
    c
}

/// IPVS writes through a real handle, counted (for the restart test).
#[derive(Debug)]
struct Counting {
    inner: IpvsHandle,
    writes: AtomicUsize,
}

impl Counting {
    fn write(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl IpvsOps for Counting {
    async fn list_services(&self) -> kproxy_ipvs::Result<Vec<Service>> {
        self.inner.list_services().await
    }
    async fn add_service(&self, s: &Service) -> kproxy_ipvs::Result<()> {
        self.write();
        self.inner.add_service(s).await
    }
    async fn update_service(&self, s: &Service) -> kproxy_ipvs::Result<()> {
        self.write();
        self.inner.update_service(s).await
    }
    async fn delete_service(&self, s: &Service) -> kproxy_ipvs::Result<()> {
        self.write();
        self.inner.delete_service(s).await
    }
    async fn list_destinations(&self, s: &Service) -> kproxy_ipvs::Result<Vec<Destination>> {
        self.inner.list_destinations(s).await
    }
    async fn add_destination(&self, s: &Service, d: &Destination) -> kproxy_ipvs::Result<()> {
        self.write();
        self.inner.add_destination(s, d).await
    }
    async fn update_destination(&self, s: &Service, d: &Destination) -> kproxy_ipvs::Result<()> {
        self.write();
        self.inner.update_destination(s, d).await
    }
    async fn delete_destination(&self, s: &Service, d: &Destination) -> kproxy_ipvs::Result<()> {
        self.write();
        self.inner.delete_destination(s, d).await
    }
    async fn flush(&self) -> kproxy_ipvs::Result<()> {
        self.write();
        self.inner.flush().await
    }
    async fn set_timeouts(&self, t: &IpvsInfo) -> kproxy_ipvs::Result<()> {
        self.inner.set_timeouts(t).await
    }
    async fn info(&self) -> kproxy_ipvs::Result<IpvsInfo> {
        self.inner.info().await
    }
}

/// `ipvsadm -Ln` as a set of (service line, destination lines), counters dropped.
fn parse_ln(text: &str) -> BTreeSet<(String, Vec<String>)> {
    let mut out = BTreeSet::new();
    let mut cur: Option<(String, Vec<String>)> = None;
    for line in text.lines().skip(3) {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.first() == Some(&"->") {
            cur.as_mut()
                .unwrap()
                .1
                .push(format!("{} {} {}", w[1], w[2], w[3]));
        } else if !w.is_empty() {
            if let Some(mut c) = cur.take() {
                c.1.sort();
                out.insert(c);
            }
            cur = Some((w.join(" "), Vec::new()));
        }
    }
    if let Some(mut c) = cur.take() {
        c.1.sort();
        out.insert(c);
    }
    out
}

/// The same shape from a plan.
fn expected_ln(p: &Plan) -> BTreeSet<(String, Vec<String>)> {
    p.services
        .values()
        .map(|vs| {
            let s = &vs.service;
            let mut head = format!(
                "{} {} {}",
                s.protocol,
                SocketAddr::new(s.address, s.port),
                s.scheduler
            );
            if s.flags & SVC_F_PERSISTENT != 0 {
                head.push_str(&format!(" persistent {}", s.timeout));
            }
            let mut d: Vec<String> = vs
                .destinations
                .iter()
                .map(|d| format!("{} {} {}", d.socket_addr(), d.fwd_method, d.weight))
                .collect();
            d.sort();
            (head, d)
        })
        .collect()
}

fn real(c: &KubeProxyConfiguration, ipvs: Arc<dyn IpvsOps>) -> IpvsProxier {
    IpvsProxier::new(
        c,
        IpFamily::V4,
        ipvs,
        Arc::new(RealExecutor::new().unwrap()),
    )
    .unwrap()
}

fn cip() -> SocketAddr {
    "10.96.0.10:80".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxier_programs_the_plan_and_carries_tcp_and_udp_then_restarts_and_cleans_up() {
    if !in_vm() {
        return;
    }
    let _g = serial().await;
    let _lab = Lab::up();
    let m = map(MAP);
    let mut p = IpvsProxier::new_real(&cfg("rr"), IpFamily::V4)
        .await
        .unwrap();
    p.sync(&m, &ChangeSet::full(), &node()).await.unwrap();
    let plan = p.last_plan().unwrap().clone();
    let listing = ipvsadm_ln();
    assert_eq!(parse_ln(&listing), expected_ln(&plan), "{listing}");
    assert_eq!(plan.services.len(), 3, "{listing}");
    let addrs = sh("ip -4 -o addr show dev kube-ipvs0");
    assert!(
        addrs.contains("10.96.0.10/32") && addrs.contains("10.96.0.53/32"),
        "{addrs}"
    );
    assert!(sh("ipset list KUBE-CLUSTER-IP").contains("10.96.0.10,tcp:80"));
    assert!(sh("ipset list KUBE-NODE-PORT-TCP").contains("30080"));
    assert!(sh("iptables -t nat -S KUBE-SERVICES").contains("--match-set KUBE-CLUSTER-IP dst,dst"));
    assert!(sh("iptables -t nat -S PREROUTING").contains("-j KUBE-SERVICES"));

    // TCP from the client namespace to the cluster IP: rr alternates.
    let names = from_ns(Some("cl"), || {
        (0..4).map(|_| tcp_hello(cip()).0).collect::<Vec<_>>()
    });
    assert!(names.windows(2).all(|w| w[0] != w[1]), "{names:?}");
    assert!(names.iter().all(|n| n == "be1" || n == "be2"), "{names:?}");
    // TCP to the node port, and from the node itself to the cluster IP.
    let np = from_ns(Some("cl"), || {
        (0..2)
            .map(|_| tcp_hello("192.168.50.1:30080".parse().unwrap()).0)
            .collect::<Vec<_>>()
    });
    assert_ne!(np[0], np[1], "{np:?}");
    let own = from_ns(None, || tcp_hello(cip()).0);
    assert!(own == "be1" || own == "be2");
    // UDP to the cluster IP: each new flow is scheduled, rr alternates.
    let udp = from_ns(Some("cl"), || {
        (0..4)
            .map(|_| {
                udp_hello(
                    "192.168.50.2".parse().unwrap(),
                    "10.96.0.53:53".parse().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    });
    assert!(udp.windows(2).all(|w| w[0] != w[1]), "{udp:?}");

    // A second proxier (a restart) adopts the kernel state: no IPVS write at all.
    let counting = Arc::new(Counting {
        inner: IpvsHandle::new().unwrap(),
        writes: AtomicUsize::new(0),
    });
    let mut again = real(&cfg("rr"), counting.clone());
    again.sync(&m, &ChangeSet::full(), &node()).await.unwrap();
    assert_eq!(counting.writes.load(Ordering::SeqCst), 0);
    assert_eq!(parse_ln(&ipvsadm_ln()), expected_ln(&plan));
    assert_eq!(sh("ip -4 -o addr show dev kube-ipvs0"), addrs);
    assert_eq!(
        sh("iptables -t nat -S PREROUTING")
            .matches("-j KUBE-SERVICES")
            .count(),
        1
    );

    again.cleanup().await.unwrap();
    assert_eq!(ipvsadm_ln().lines().count(), 3);
    assert!(!sh("ip -o link").contains("kube-ipvs0"));
    assert!(!sh("ipset list -n").contains("KUBE-"));
    assert!(!sh("iptables -t nat -S").contains("KUBE-"));
    assert!(!sh("iptables -t filter -S").contains("KUBE-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sh_scheduler_keeps_each_source_on_one_backend() {
    if !in_vm() {
        return;
    }
    let _g = serial().await;
    let _lab = Lab::up();
    let mut p = IpvsProxier::new_real(&cfg("sh"), IpFamily::V4)
        .await
        .unwrap();
    p.sync(&map(MAP), &ChangeSet::full(), &node())
        .await
        .unwrap();
    assert!(ipvsadm_ln().contains("UDP  10.96.0.53:53 sh"));
    let seen = from_ns(Some("cl"), || {
        (2..=6)
            .map(|i| {
                let src: IpAddr = format!("192.168.50.{i}").parse().unwrap();
                (0..3)
                    .map(|_| udp_hello(src, "10.96.0.53:53".parse().unwrap()))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    });
    for per_source in &seen {
        assert!(per_source.iter().all(|n| n == &per_source[0]), "{seen:?}");
    }
    p.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_endpoint_drains_at_weight_zero_then_disappears() {
    if !in_vm() {
        return;
    }
    let _g = serial().await;
    let _lab = Lab::up();
    let before = map(MAP);
    let mut p = IpvsProxier::new_real(&cfg("rr"), IpFamily::V4)
        .await
        .unwrap()
        .with_graceful_timeout(Duration::from_secs(2));
    p.sync(&before, &ChangeSet::full(), &node()).await.unwrap();
    // Hold a connection to be2.
    let held = from_ns(Some("cl"), || {
        loop {
            let (name, s) = tcp_hello(cip());
            if name == "be2" {
                break s;
            }
        }
    });
    let after = without_be2();
    p.sync(&after, &ChangeSet::between(&before, &after), &node())
        .await
        .unwrap();
    let listing = ipvsadm_ln();
    let be2 = listing
        .lines()
        .find(|l| l.contains("10.244.2.6:8080") && !l.contains("UDP"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        be2.split_whitespace().collect::<Vec<_>>()[2..4] == ["Masq", "0"],
        "{listing}"
    );
    assert!(
        !listing.contains("10.244.2.6:8080              Masq    1"),
        "{listing}"
    );
    assert_eq!(p.draining().len(), 1);
    // New connections avoid it; the held one still works.
    let names = from_ns(Some("cl"), || {
        (0..3).map(|_| tcp_hello(cip()).0).collect::<Vec<_>>()
    });
    assert_eq!(names, ["be1", "be1", "be1"]);
    drop(held);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    p.sync(&after, &ChangeSet::default(), &node())
        .await
        .unwrap();
    let listing = ipvsadm_ln();
    assert!(!listing.contains("10.244.2.6"), "{listing}");
    assert!(p.draining().is_empty());
    p.cleanup().await.unwrap();
}

const MAP_V6: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: web6, namespace: default }
spec:
  clusterIP: fd00:96::10
  clusterIPs: [fd00:96::10]
  ipFamilies: [IPv6]
  ports: [{ name: http, port: 80, protocol: TCP }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web6-a, namespace: default, labels: { kubernetes.io/service-name: web6 } }
addressType: IPv6
ports: [{ name: http, port: 8080, protocol: TCP }]
endpoints:
- { addresses: ["fd00:244:1::5"], nodeName: node-a }
- { addresses: ["fd00:244:2::6"], nodeName: node-b }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_proxier_uses_kube_6_sets_and_ip6tables_and_carries_tcp() {
    if !in_vm() {
        return;
    }
    let _g = serial().await;
    let _lab = Lab::up();
    let mut c = cfg("rr");
    c.cluster_cidr = "10.244.0.0/16,fd00:244::/48".into();
    let mut n = node();
    n.node_ips.push("fd00:50::1".parse().unwrap());
    n.local_addresses.push("fd00:50::1".parse().unwrap());
    let mut p = IpvsProxier::new_real(&c, IpFamily::V6).await.unwrap();
    p.sync(&map(MAP_V6), &ChangeSet::full(), &n).await.unwrap();
    let listing = ipvsadm_ln();
    assert_eq!(
        parse_ln(&listing),
        expected_ln(p.last_plan().unwrap()),
        "{listing}"
    );
    assert!(listing.contains("TCP  [fd00:96::10]:80 rr"), "{listing}");
    assert!(sh("ip -6 -o addr show dev kube-ipvs0").contains("fd00:96::10/128"));
    assert!(sh("ipset list KUBE-6-CLUSTER-IP").contains("fd00:96::10,tcp:80"));
    let rules = sh("ip6tables -t nat -S KUBE-SERVICES");
    let cip_rule = rules
        .lines()
        .find(|l| l.contains("--match-set KUBE-6-CLUSTER-IP dst,dst"))
        .unwrap_or_default();
    assert!(
        cip_rule.contains("! -s fd00:244::/48") && cip_rule.contains("-j KUBE-MARK-MASQ"),
        "{rules}"
    );
    let to: SocketAddr = "[fd00:96::10]:80".parse().unwrap();
    let names = from_ns(Some("cl"), move || {
        (0..4).map(|_| tcp_hello(to).0).collect::<Vec<_>>()
    });
    assert!(names.windows(2).all(|w| w[0] != w[1]), "{names:?}");
    p.cleanup().await.unwrap();
    assert!(!sh("ip6tables -t nat -S").contains("KUBE-"));
}

/// The real handle, except that while `armed` every add or update of the virtual server
/// at `target` asks for a scheduler no kernel has: the kernel itself then refuses it
/// (`ENOENT` from `ip_vs_scheduler_get`), in the middle of a pipelined batch.
#[derive(Debug)]
struct BadScheduler {
    inner: IpvsHandle,
    target: SocketAddr,
    armed: std::sync::atomic::AtomicBool,
}

impl BadScheduler {
    fn sabotage(&self, op: &Op) -> Op {
        let hit = |s: &Service| {
            self.armed.load(Ordering::SeqCst) && SocketAddr::new(s.address, s.port) == self.target
        };
        match op {
            Op::AddService(s) if hit(s) => {
                let mut s = s.clone();
                s.scheduler = "nosuch".into();
                Op::AddService(s)
            }
            Op::UpdateService(s) if hit(s) => {
                let mut s = s.clone();
                s.scheduler = "nosuch".into();
                Op::UpdateService(s)
            }
            other => other.clone(),
        }
    }
}

#[async_trait::async_trait]
impl IpvsOps for BadScheduler {
    async fn list_services(&self) -> kproxy_ipvs::Result<Vec<Service>> {
        self.inner.list_services().await
    }
    async fn add_service(&self, s: &Service) -> kproxy_ipvs::Result<()> {
        self.inner.add_service(s).await
    }
    async fn update_service(&self, s: &Service) -> kproxy_ipvs::Result<()> {
        self.inner.update_service(s).await
    }
    async fn delete_service(&self, s: &Service) -> kproxy_ipvs::Result<()> {
        self.inner.delete_service(s).await
    }
    async fn list_destinations(&self, s: &Service) -> kproxy_ipvs::Result<Vec<Destination>> {
        self.inner.list_destinations(s).await
    }
    async fn add_destination(&self, s: &Service, d: &Destination) -> kproxy_ipvs::Result<()> {
        self.inner.add_destination(s, d).await
    }
    async fn update_destination(&self, s: &Service, d: &Destination) -> kproxy_ipvs::Result<()> {
        self.inner.update_destination(s, d).await
    }
    async fn delete_destination(&self, s: &Service, d: &Destination) -> kproxy_ipvs::Result<()> {
        self.inner.delete_destination(s, d).await
    }
    async fn flush(&self) -> kproxy_ipvs::Result<()> {
        self.inner.flush().await
    }
    async fn set_timeouts(&self, t: &IpvsInfo) -> kproxy_ipvs::Result<()> {
        self.inner.set_timeouts(t).await
    }
    async fn info(&self) -> kproxy_ipvs::Result<IpvsInfo> {
        self.inner.info().await
    }
    async fn apply_ops(&self, ops: &[Op]) -> Vec<kproxy_ipvs::Result<()>> {
        let ops: Vec<Op> = ops.iter().map(|op| self.sabotage(op)).collect();
        self.inner.apply_ops(&ops).await
    }
    async fn list_destinations_of(
        &self,
        svcs: &[Service],
    ) -> kproxy_ipvs::Result<Vec<Vec<Destination>>> {
        self.inner.list_destinations_of(svcs).await
    }
}

/// MAP without be2, plus two new services: `bad` (10.96.0.77, refused by the kernel
/// while the fault is armed) and `good` (10.96.0.78, after it in the same batch).
fn grown() -> ServiceMap {
    let extra = |name: &str, ip: &str| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{ name: {name}, namespace: default }}\nspec:\n  clusterIP: {ip}\n  ports: [{{ name: http, port: 80, protocol: TCP }}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{ name: {name}-a, namespace: default, labels: {{ kubernetes.io/service-name: {name} }} }}\naddressType: IPv4\nports: [{{ name: http, port: 8080, protocol: TCP }}]\nendpoints:\n- {{ addresses: [10.244.1.5], nodeName: node-a }}\n"
        )
    };
    map(&format!(
        "{}{}{}",
        MAP.replace("- { addresses: [10.244.2.6], nodeName: node-b }\n", ""),
        extra("bad", "10.96.0.77"),
        extra("good", "10.96.0.78")
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kernel_error_mid_sync_keeps_traffic_flowing_and_the_next_sync_recovers() {
    if !in_vm() {
        return;
    }
    let _g = serial().await;
    let _lab = Lab::up();
    let bad: SocketAddr = "10.96.0.77:80".parse().unwrap();
    let good: SocketAddr = "10.96.0.78:80".parse().unwrap();
    let ipvs = Arc::new(BadScheduler {
        inner: IpvsHandle::new().unwrap(),
        target: bad,
        armed: true.into(),
    });
    let mut p = real(&cfg("rr"), ipvs.clone());
    let before = map(MAP);
    p.sync(&before, &ChangeSet::full(), &node()).await.unwrap();
    let good_plan = p.last_plan().unwrap().clone();

    // One sync: web loses be2, `bad` is refused by the kernel, `good` comes after it.
    let after = grown();
    let err = p
        .sync(&after, &ChangeSet::between(&before, &after), &node())
        .await
        .unwrap_err();
    let m = p.metrics().clone();
    assert_eq!(m.sync_failures, 1);
    assert_eq!(m.ipvs_failures, 2, "the add of bad and of its destination");
    let why = m.last_error.unwrap_or_default();
    assert!(
        why.contains("add service 10.96.0.77:80/TCP") && why.contains("No such file"),
        "{err}: {why}"
    );
    let listing = ipvsadm_ln();
    assert!(!listing.contains("10.96.0.77"), "{listing}");
    assert!(
        listing.contains("TCP  10.96.0.78:80 rr"),
        "the batch went on after the failure: {listing}"
    );
    // Traffic to the untouched services still flows: web (now be1 only) and dns.
    let names = from_ns(Some("cl"), || {
        (0..3).map(|_| tcp_hello(cip()).0).collect::<Vec<_>>()
    });
    assert_eq!(names, ["be1", "be1", "be1"]);
    let dns = from_ns(Some("cl"), || {
        udp_hello(
            "192.168.50.2".parse().unwrap(),
            "10.96.0.53:53".parse().unwrap(),
        )
    });
    assert!(dns == "be1" || dns == "be2", "{dns}");
    assert_eq!(from_ns(Some("cl"), move || tcp_hello(good).0), "be1");
    // Every destination both plans share is still there.
    assert!(p.last_plan().is_none(), "a failed sync forgets its plan");
    let now = parse_ln(&listing);
    let new_plan = kproxy_ipvs::plan::plan(&after, &node(), &cfg("rr"), IpFamily::V4);
    let (old_ln, new_ln) = (expected_ln(&good_plan), expected_ln(&new_plan));
    for (head, dests) in &old_ln {
        let Some((_, new_dests)) = new_ln.iter().find(|(h, _)| h == head) else {
            continue;
        };
        let (_, have) = now
            .iter()
            .find(|(h, _)| h == head)
            .unwrap_or_else(|| panic!("{head} is gone: {listing}"));
        for d in dests.iter().filter(|d| new_dests.contains(d)) {
            assert!(have.contains(d), "{head} lost {d}: {listing}");
        }
    }

    // The fault goes away: the next sync (nothing changed since) reads the kernel
    // again and puts the rest in.
    ipvs.armed.store(false, Ordering::SeqCst);
    let stats = p
        .sync(&after, &ChangeSet::default(), &node())
        .await
        .unwrap();
    assert!(stats.full);
    let listing = ipvsadm_ln();
    assert_eq!(
        parse_ln(&listing),
        expected_ln(p.last_plan().unwrap()),
        "{listing}"
    );
    assert_eq!(from_ns(Some("cl"), move || tcp_hello(bad).0), "be1");
    assert_eq!(p.metrics().last_error, None);
    p.cleanup().await.unwrap();
}
