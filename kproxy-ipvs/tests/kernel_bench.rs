//! Benchmark, in the IPVS VM only (`IPVS_VM=1` and `IPVS_BENCH=1`; run
//! `kproxy-ipvs/run-benchmark.sh`): programming 10,000 services × 10 endpoints with
//! kproxy versus `ipvsadm -R` of the same rules, and a one-service change.
//! Prints the timings and ratios; asserts that the kernel holds what was asked.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kproxy_core::model::{
    Endpoint, EndpointConditions, EndpointSlice, IpFamily, ObjectRef, Protocol, Service,
    ServicePortSpec, ServiceType, SlicePort, TrafficPolicy,
};
use kproxy_core::snapshot::Object;
use kproxy_core::{
    BuildOptions, ChangeSet, KubeProxyConfiguration, NodeFacts, Proxier, ServiceMap, Snapshot,
};
use kproxy_ipvs::IpvsProxier;
use kproxy_ipvs::handle::{IpvsHandle, IpvsOps};
use kproxy_ipvs::reconcile::{Actual, DiffOptions, Op, diff};

const SERVICES: usize = 10_000;
const ENDPOINTS: usize = 10;

fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, (i / 250) as u8, (i % 250 + 1) as u8)
}

fn ep(i: usize, j: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, j as u8, (i % 250 + 1) as u8)
}

fn snapshot(shift: usize) -> Snapshot {
    let mut s = Snapshot::new();
    for i in 0..SERVICES {
        let id = ObjectRef::new("bench", format!("svc-{i}"));
        s.apply(Object::Service(Service {
            id: id.clone(),
            service_type: ServiceType::ClusterIP,
            cluster_ips: vec![IpAddr::V4(vip(i))],
            ports: vec![ServicePortSpec {
                name: String::new(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: None,
            }],
            external_ips: vec![],
            load_balancer_ingress: vec![],
            load_balancer_source_ranges: vec![],
            external_traffic_policy: TrafficPolicy::Cluster,
            internal_traffic_policy: TrafficPolicy::Cluster,
            session_affinity: None,
            health_check_node_port: None,
        }));
        // `shift` moves service 0's endpoints: the one-service change.
        let first = if i == 0 { shift } else { 0 };
        s.apply(Object::EndpointSlice(EndpointSlice {
            id: ObjectRef::new("bench", format!("svc-{i}-a")),
            service: id,
            family: IpFamily::V4,
            ports: vec![SlicePort {
                name: String::new(),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
            endpoints: (first..first + ENDPOINTS)
                .map(|j| Endpoint {
                    address: IpAddr::V4(ep(i, j)),
                    conditions: EndpointConditions::default(),
                    node_name: Some("node-b".into()),
                    zone: None,
                    zone_hints: vec![],
                    node_hints: vec![],
                })
                .collect(),
            last_change_trigger_time: None,
        }));
    }
    s
}

fn ipvsadm_rules(shift0: usize) -> String {
    let mut out = String::new();
    for i in 0..SERVICES {
        let v = vip(i);
        let _ = writeln!(out, "-A -t {v}:80 -s rr");
        let first = if i == 0 { shift0 } else { 0 };
        for j in first..first + ENDPOINTS {
            let _ = writeln!(out, "-a -t {v}:80 -r {}:8080 -m -w 1", ep(i, j));
        }
    }
    out
}

fn ipvsadm_restore(rules: &str) -> Duration {
    let t = Instant::now();
    let mut c = Command::new("ipvsadm")
        .arg("-R")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success());
    t.elapsed()
}

fn sh(cmd: &str) -> String {
    String::from_utf8(
        Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
}

fn dest_lines() -> usize {
    sh("ipvsadm -Ln")
        .lines()
        .filter(|l| l.contains("->") && l.contains("Masq"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_services_kproxy_versus_ipvsadm_restore() {
    if std::env::var("IPVS_VM").is_err() || std::env::var("IPVS_BENCH").is_err() {
        eprintln!("skipped: run kproxy-ipvs/run-benchmark.sh");
        return;
    }
    let cfg = KubeProxyConfiguration::default();
    let node = NodeFacts {
        name: "node-a".into(),
        ..Default::default()
    };
    let t = Instant::now();
    let before = ServiceMap::build(&snapshot(0), &BuildOptions::for_node("node-a"));
    let after = ServiceMap::build(&snapshot(1), &BuildOptions::for_node("node-a"));
    let build = t.elapsed();

    // ipvsadm -R of the same 10,000 services and 100,000 destinations.
    sh("ipvsadm -C");
    let rules = ipvsadm_rules(0);
    let ipvsadm_full = ipvsadm_restore(&rules);
    assert_eq!(dest_lines(), SERVICES * ENDPOINTS);
    // Its one-service change: delete the service and restore it (shifted).
    let one: String = ipvsadm_rules(1)
        .lines()
        .take(1 + ENDPOINTS)
        .map(|l| format!("{l}\n"))
        .collect();
    let t = Instant::now();
    assert!(
        Command::new("ipvsadm")
            .args(["-D", "-t", "10.96.0.1:80"])
            .status()
            .unwrap()
            .success()
    );
    let ipvsadm_one = t.elapsed() + ipvsadm_restore(&one);
    sh("ipvsadm -C");

    // kproxy's IPVS layer alone: the diff from an empty table, applied op by op.
    let h = IpvsHandle::new().unwrap();
    let plan = kproxy_ipvs::plan::plan(&before, &node, &cfg, IpFamily::V4);
    let t = Instant::now();
    let d = diff(
        &Actual::new(),
        &plan.services,
        &DiffOptions {
            family: Some(IpFamily::V4),
            ..Default::default()
        },
    );
    for op in &d.ops {
        match op {
            Op::AddService(s) => h.add_service(s).await.unwrap(),
            Op::AddDest(s, x) => h.add_destination(s, x).await.unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }
    let ipvs_only = t.elapsed();
    assert_eq!(dest_lines(), SERVICES * ENDPOINTS);
    let t = Instant::now();
    let listed = h.list_services().await.unwrap();
    let mut n = 0;
    for s in &listed {
        n += h.list_destinations(s).await.unwrap().len();
    }
    let read_back = t.elapsed();
    assert_eq!((listed.len(), n), (SERVICES, SERVICES * ENDPOINTS));
    h.flush().await.unwrap();

    // The whole proxier: first (full) sync, a restart, then a one-service change.
    let mut p = IpvsProxier::new(
        &cfg,
        IpFamily::V4,
        Arc::new(h.clone()),
        Arc::new(kproxy_ipvs::exec::RealExecutor::new().unwrap()),
    )
    .unwrap();
    let t = Instant::now();
    p.sync(&before, &ChangeSet::full(), &node).await.unwrap();
    let proxier_full = t.elapsed();
    assert_eq!(dest_lines(), SERVICES * ENDPOINTS);
    let mut restarted = IpvsProxier::new(
        &cfg,
        IpFamily::V4,
        Arc::new(h.clone()),
        Arc::new(kproxy_ipvs::exec::RealExecutor::new().unwrap()),
    )
    .unwrap();
    let t = Instant::now();
    let stats = restarted
        .sync(&before, &ChangeSet::full(), &node)
        .await
        .unwrap();
    let proxier_restart = t.elapsed();
    assert_eq!(
        stats.objects_written,
        plan.ipsets.len() + 1,
        "a restart writes no IPVS object and no address"
    );
    let t = Instant::now();
    let stats = restarted
        .sync(&after, &ChangeSet::between(&before, &after), &node)
        .await
        .unwrap();
    let proxier_one = t.elapsed();
    assert!(!stats.full);
    assert!(sh("ipvsadm -Ln -t 10.96.0.1:80").contains("10.244.10.1:8080"));
    assert_eq!(dest_lines(), SERVICES * ENDPOINTS);
    restarted.cleanup().await.unwrap();

    let s = |d: Duration| d.as_secs_f64();
    println!("BENCH {SERVICES} services x {ENDPOINTS} endpoints (IPVS VM, TCG, 1 vCPU)");
    println!("BENCH map build (2 maps)           {:>9.3} s", s(build));
    println!(
        "BENCH ipvsadm -R (full)            {:>9.3} s",
        s(ipvsadm_full)
    );
    println!(
        "BENCH kproxy IPVS ops (full)       {:>9.3} s   ratio vs ipvsadm -R: {:.2}",
        s(ipvs_only),
        s(ipvs_only) / s(ipvsadm_full)
    );
    println!("BENCH kproxy dump (all svc+dests)  {:>9.3} s", s(read_back));
    println!(
        "BENCH kproxy proxier first sync    {:>9.3} s   ratio vs ipvsadm -R: {:.2}",
        s(proxier_full),
        s(proxier_full) / s(ipvsadm_full)
    );
    println!(
        "BENCH kproxy proxier restart sync  {:>9.3} s",
        s(proxier_restart)
    );
    println!(
        "BENCH ipvsadm one-service change   {:>9.3} s",
        s(ipvsadm_one)
    );
    println!(
        "BENCH kproxy one-service change    {:>9.3} s   ratio vs ipvsadm: {:.2}",
        s(proxier_one),
        s(proxier_one) / s(ipvsadm_one)
    );
}
