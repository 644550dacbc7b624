//! Benchmark, in the IPVS VM only (`IPVS_VM=1` and `IPVS_BENCH=1`; run
//! `kproxy-ipvs/run-benchmark.sh`): programming 10,000 services × 10 endpoints with
//! kproxy versus `ipvsadm -R` of the same rules, and a one-service change.
//! Prints the timings and ratios; asserts that the kernel holds what was asked.
//!
//! Each contender runs in a network namespace of its own (the test binary runs itself
//! again under `ip netns exec`), so each starts from an empty IPVS table: a flushed
//! table is not empty for a while, because deleted destinations wait a minute in the
//! kernel's `dest_trash` list, which every destination add then walks
//! (`ip_vs_trash_get_dest`, net/netfilter/ipvs/ip_vs_ctl.c).

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

const TEST: &str = "ten_thousand_services_kproxy_versus_ipvsadm_restore";

/// Runs phase `phase` of this test in a fresh network namespace; returns its
/// `RESULT name seconds` lines.
fn run_phase(phase: &str) -> Vec<(String, f64)> {
    let ns = format!("bench-{phase}");
    sh(&format!(
        "ip netns del {ns} 2>/dev/null; ip netns add {ns}; ip -n {ns} link set lo up"
    ));
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(exe)
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env("IPVS_BENCH_PHASE", phase)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "phase {phase} failed:\n{text}");
    sh(&format!("ip netns del {ns}"));
    // The harness prints `test NAME ... ` before the test's own output, on its line.
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l[l.find("RESULT ")?..].split_whitespace().collect();
            match w.as_slice() {
                ["RESULT", name, secs] => Some(((*name).to_owned(), secs.parse().ok()?)),
                _ => None,
            }
        })
        .collect()
}

fn result(name: &str, d: Duration) {
    println!("RESULT {name} {:.6}", d.as_secs_f64());
}

fn maps() -> (ServiceMap, ServiceMap, Duration) {
    let t = Instant::now();
    let before = ServiceMap::build(&snapshot(0), &BuildOptions::for_node("node-a"));
    let after = ServiceMap::build(&snapshot(1), &BuildOptions::for_node("node-a"));
    (before, after, t.elapsed())
}

fn node() -> NodeFacts {
    NodeFacts {
        name: "node-a".into(),
        ..Default::default()
    }
}

/// `ipvsadm -R` of the same 10,000 services and 100,000 destinations, then its
/// one-service change: delete the service and restore it (shifted).
fn phase_ipvsadm() {
    let rules = ipvsadm_rules(0);
    result("ipvsadm_full", ipvsadm_restore(&rules));
    assert_eq!(dest_lines(), SERVICES * ENDPOINTS);
    // Its one-service change, ROUNDS times (moving service 0's endpoints and back):
    // delete the service and restore it.
    let mut times = Vec::new();
    for round in 0..ROUNDS {
        let one: String = ipvsadm_rules(1 - round % 2)
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
        times.push(t.elapsed() + ipvsadm_restore(&one));
    }
    result("ipvsadm_one", median(&mut times));
}

/// Rounds of the one-service change; the median is reported.
const ROUNDS: usize = 5;

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// kproxy's IPVS layer alone: the diff from an empty table, applied through the
/// pipelined socket (what the proxier does), then a dump of everything.
async fn phase_ops() {
    let (before, _, build) = maps();
    result("map_build", build);
    let cfg = KubeProxyConfiguration::default();
    let h = IpvsHandle::new().unwrap();
    let t = Instant::now();
    let plan = kproxy_ipvs::plan::plan(&before, &node(), &cfg, IpFamily::V4);
    result("plan", t.elapsed());
    let t = Instant::now();
    let d = diff(
        &Actual::new(),
        &plan.services,
        &DiffOptions {
            family: Some(IpFamily::V4),
            ..Default::default()
        },
    );
    assert!(
        d.ops
            .iter()
            .all(|op| matches!(op, Op::AddService(_) | Op::AddDest(..)))
    );
    for r in h.apply_ops(&d.ops).await {
        r.unwrap();
    }
    result("ops_full", t.elapsed());
    assert_eq!(dest_lines(), SERVICES * ENDPOINTS);
    let t = Instant::now();
    let listed = h.list_services().await.unwrap();
    let n: usize = h
        .list_destinations_of(&listed)
        .await
        .unwrap()
        .iter()
        .map(Vec::len)
        .sum();
    result("dump", t.elapsed());
    assert_eq!((listed.len(), n), (SERVICES, SERVICES * ENDPOINTS));
}

/// The same ops one request at a time, each waiting for its ack (the path every
/// write took before the pipelined socket; upstream's moby/ipvs does the same).
async fn phase_ops_one_by_one() {
    let (before, _, _) = maps();
    let cfg = KubeProxyConfiguration::default();
    let h = IpvsHandle::new().unwrap();
    let plan = kproxy_ipvs::plan::plan(&before, &node(), &cfg, IpFamily::V4);
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
    result("ops_one_by_one", t.elapsed());
    assert_eq!(dest_lines(), SERVICES * ENDPOINTS);
}

/// The whole proxier: first (full) sync, a restart, then a one-service change.
async fn phase_proxier() {
    let (before, after, _) = maps();
    let cfg = KubeProxyConfiguration::default();
    let node = node();
    let h = IpvsHandle::new().unwrap();
    let plan = kproxy_ipvs::plan::plan(&before, &node, &cfg, IpFamily::V4);
    let mut p = IpvsProxier::new(
        &cfg,
        IpFamily::V4,
        Arc::new(h.clone()),
        Arc::new(kproxy_ipvs::exec::RealExecutor::new().unwrap()),
    )
    .unwrap();
    let t = Instant::now();
    p.sync(&before, &ChangeSet::full(), &node).await.unwrap();
    result("proxier_full", t.elapsed());
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
    result("proxier_restart", t.elapsed());
    assert_eq!(
        stats.objects_written,
        plan.ipsets.len() + 1,
        "a restart writes no IPVS object and no address"
    );
    // The daemon's ChangeTracker hands the proxier this change set ready-made (core's
    // benchmark: about 8 µs per update), so diffing two 10,000-service maps is not
    // part of the sync: it is timed apart.
    let t = Instant::now();
    let forth = ChangeSet::between(&before, &after);
    result("between", t.elapsed());
    let back = ChangeSet::between(&after, &before);
    let mut times = Vec::new();
    for round in 0..ROUNDS {
        let (map, change) = if round % 2 == 0 {
            (&after, &forth)
        } else {
            (&before, &back)
        };
        let t = Instant::now();
        let stats = restarted.sync(map, change, &node).await.unwrap();
        times.push(t.elapsed());
        assert!(!stats.full);
    }
    result("proxier_one", median(&mut times));
    assert!(sh("ipvsadm -Ln -t 10.96.0.1:80").contains("10.244.10.1:8080"));
    assert_eq!(dest_lines(), SERVICES * ENDPOINTS);
    restarted.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_services_kproxy_versus_ipvsadm_restore() {
    if std::env::var("IPVS_VM").is_err() || std::env::var("IPVS_BENCH").is_err() {
        eprintln!("skipped: run kproxy-ipvs/run-benchmark.sh");
        return;
    }
    match std::env::var("IPVS_BENCH_PHASE").ok().as_deref() {
        Some("ipvsadm") => return phase_ipvsadm(),
        Some("ops") => return phase_ops().await,
        Some("ops1") => return phase_ops_one_by_one().await,
        Some("proxier") => return phase_proxier().await,
        Some(other) => panic!("unknown phase {other}"),
        None => {}
    }
    let mut r = std::collections::BTreeMap::new();
    for phase in ["ipvsadm", "ops", "ops1", "proxier"] {
        r.extend(run_phase(phase));
    }
    let get = |k: &str| *r.get(k).unwrap_or_else(|| panic!("no result {k}"));
    println!(
        "BENCH {SERVICES} services x {ENDPOINTS} endpoints (IPVS VM, TCG, 1 vCPU; each contender in a fresh netns)"
    );
    println!(
        "BENCH map build (2 maps)           {:>9.3} s",
        get("map_build")
    );
    println!("BENCH plan (10,000 services)       {:>9.3} s", get("plan"));
    println!(
        "BENCH ChangeSet::between (2 maps)  {:>9.3} s",
        get("between")
    );
    println!(
        "BENCH ipvsadm -R (full)            {:>9.3} s",
        get("ipvsadm_full")
    );
    println!(
        "BENCH kproxy IPVS ops (full)       {:>9.3} s   ratio vs ipvsadm -R: {:.2}",
        get("ops_full"),
        get("ops_full") / get("ipvsadm_full")
    );
    println!(
        "BENCH   the same, one by one (old)  {:>9.3} s   ratio vs ipvsadm -R: {:.2}",
        get("ops_one_by_one"),
        get("ops_one_by_one") / get("ipvsadm_full")
    );
    println!("BENCH kproxy dump (all svc+dests)  {:>9.3} s", get("dump"));
    println!(
        "BENCH kproxy proxier first sync    {:>9.3} s   ratio vs ipvsadm -R: {:.2}",
        get("proxier_full"),
        get("proxier_full") / get("ipvsadm_full")
    );
    println!(
        "BENCH kproxy proxier restart sync  {:>9.3} s",
        get("proxier_restart")
    );
    println!(
        "BENCH ipvsadm one-service change   {:>9.3} s",
        get("ipvsadm_one")
    );
    println!(
        "BENCH kproxy one-service change    {:>9.3} s   ratio vs ipvsadm: {:.2} (median of {ROUNDS})",
        get("proxier_one"),
        get("proxier_one") / get("ipvsadm_one")
    );
}
