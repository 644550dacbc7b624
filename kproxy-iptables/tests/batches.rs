//! Batched restores (`PlanConfig::restore_batch_lines`, used with iptables-nft): for
//! generated clusters and changes, and any batch size,
//!
//! - every batch and the final restore apply cleanly in order (each jump target exists
//!   when it is referenced, each deleted chain is unreferenced), full and partial;
//! - the rules in the end are exactly those of one unbatched restore;
//! - between two batches every packet to a service is handled as before the sync or as
//!   after it, never otherwise: a batched sync never cuts or misroutes traffic.

mod common;

use std::net::IpAddr;

use common::summary;
use kproxy_core::model::{IpFamily, Protocol};
use kproxy_core::testing::{apply_events, arb_events, arb_snapshot};
use kproxy_core::{ChangeSet, NodeFacts, ServiceMap, Snapshot};
use kproxy_iptables::Ruleset;
use kproxy_iptables::plan::{JUMP_RULES, KUBELET_JUMP_RULES, LocalDetector, PlanConfig, plan};
use kproxy_iptables::trace::{Packet, model_of, trace_packet};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn node() -> NodeFacts {
    common::generated_node()
}

fn build(s: &Snapshot) -> ServiceMap {
    common::generated_map(s)
}

fn config(family: IpFamily, batch: Option<usize>) -> PlanConfig {
    let mut c = PlanConfig::defaults(family);
    c.local_detector = LocalDetector::Cidr(match family {
        IpFamily::V4 => "10.0.0.0/8".parse().unwrap(),
        IpFamily::V6 => "fd00::/16".parse().unwrap(),
    });
    c.restore_batch_lines = batch;
    c
}

/// A fresh host after the proxier's `ensure_base`: the jump rules and their chains, and
/// an empty KUBE-MARK-MASQ.
fn fresh_host() -> Ruleset {
    let mut rs = Ruleset::new();
    for j in JUMP_RULES.iter().chain(&KUBELET_JUMP_RULES) {
        rs.ensure_jump(j).unwrap();
    }
    rs.ensure_chain("nat", "KUBE-MARK-MASQ");
    rs
}

/// Packets that exercise every port of `maps`: from a pod and from outside to each
/// virtual IP, and from outside to each node port on the node IP.
fn packets(maps: &[&ServiceMap], family: IpFamily) -> Vec<Packet> {
    let (pod, outside): (IpAddr, IpAddr) = match family {
        IpFamily::V4 => ("10.9.0.50".parse().unwrap(), "203.0.113.9".parse().unwrap()),
        IpFamily::V6 => (
            "fd00:9::50".parse().unwrap(),
            "2001:db8::9".parse().unwrap(),
        ),
    };
    let node_ip = node().node_ip(family).unwrap();
    let pkt = |protocol: Protocol, src, dst, dport| Packet {
        protocol,
        src,
        dst,
        dport,
        in_iface: Some("eth0".into()),
        src_local: false,
    };
    let mut out = Vec::new();
    for map in maps {
        for p in map.family(family).values() {
            let proto = p.name.protocol;
            for ip in p.virtual_ips() {
                out.push(pkt(proto, pod, ip, p.port));
                out.push(pkt(proto, outside, ip, p.port));
            }
            if let Some(np) = p.node_port {
                out.push(pkt(proto, outside, node_ip, np));
            }
        }
    }
    out
}

fn outcome(rs: &Ruleset, pkt: &Packet) -> (String, bool) {
    let t = trace_packet(rs, pkt, &node().local_addresses).unwrap();
    summary(&t)
}

/// Applies `restores` to `live` one by one; after each but the last, every packet is
/// handled as in `before` or as in `after`.
fn apply_checked(
    live: &mut Ruleset,
    restores: &[&str],
    before: &Ruleset,
    after: &Ruleset,
    pkts: &[Packet],
) -> Result<(), TestCaseError> {
    for (i, text) in restores.iter().enumerate() {
        live.restore(text, true)
            .map_err(|e| TestCaseError::fail(format!("restore {i}: {e}\n{text}")))?;
        if i + 1 == restores.len() {
            break;
        }
        for pkt in pkts {
            let now = outcome(live, pkt);
            let old = outcome(before, pkt);
            let new = outcome(after, pkt);
            prop_assert!(
                now == old || now == new,
                "after batch {i}, {pkt:?} gives {now:?}; before the sync {old:?}, after {new:?}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("tests/proptest-regressions/batches.txt"))),
        ..ProptestConfig::default()
    })]

    /// A first full sync, a partial sync and a full resync over existing rules, each
    /// written in batches of `lines`: same end state as one restore, and no packet
    /// handled otherwise than before or after the sync while the batches go in.
    #[test]
    fn batched_syncs_equal_one_restore_and_never_cut_traffic(
        base in arb_snapshot(),
        e1 in arb_events(),
        e2 in arb_events(),
        lines in 1usize..30,
    ) {
        let n = node();
        let mut s1 = base.clone();
        apply_events(&mut s1, &e1);
        let mut s2 = s1.clone();
        apply_events(&mut s2, &e2);
        let (m0, m1, m2) = (build(&base), build(&s1), build(&s2));
        for family in IpFamily::ALL {
            let (one, batched) = (config(family, None), config(family, Some(lines)));
            let pkts = packets(&[&m0, &m1, &m2], family);
            let rebuilt = |m: &ServiceMap| {
                model_of(&plan(m, &ChangeSet::full(), &n, &one, family, None).text).unwrap()
            };

            // First full sync on a fresh host.
            let mut live = fresh_host();
            let p0 = plan(&m0, &ChangeSet::full(), &n, &batched, family, None);
            let restores: Vec<&str> = p0.restores().collect();
            let before = live.clone();
            apply_checked(&mut live, &restores, &before, &rebuilt(&m0), &pkts)?;
            prop_assert_eq!(live.canonical(), rebuilt(&m0).canonical());
            let mut state = p0.into_state(None);

            // Partial sync m0 -> m1.
            let p1 = plan(&m1, &ChangeSet::between(&m0, &m1), &n, &batched, family, Some(&state));
            let restores: Vec<&str> = p1.restores().collect();
            let before = live.clone();
            apply_checked(&mut live, &restores, &before, &rebuilt(&m1), &pkts)?;
            prop_assert_eq!(live.canonical(), rebuilt(&m1).canonical());
            state = p1.into_state(Some(state));

            // Full resync to m2 over the m1 rules (stale chains deleted at the end).
            let p2 = plan(&m2, &ChangeSet::full(), &n, &batched, family, Some(&state));
            let restores: Vec<&str> = p2.restores().collect();
            let before = live.clone();
            apply_checked(&mut live, &restores, &before, &rebuilt(&m2), &pkts)?;
            prop_assert_eq!(live.canonical(), rebuilt(&m2).canonical());
        }
    }
}

/// Without `restore_batch_lines`, or when the per-service chains fit in one batch,
/// a plan is one restore, byte for byte what upstream writes.
#[test]
fn small_or_unbatched_plans_are_one_restore() {
    let snap = kproxy_iptables::synth::snapshot(20, 3);
    let map = build(&snap);
    let n = node();
    let one = plan(
        &map,
        &ChangeSet::full(),
        &n,
        &config(IpFamily::V4, None),
        IpFamily::V4,
        None,
    );
    assert!(one.batches.is_empty());
    let roomy = plan(
        &map,
        &ChangeSet::full(),
        &n,
        &config(IpFamily::V4, Some(100_000)),
        IpFamily::V4,
        None,
    );
    assert_eq!(roomy, one);
    let split = plan(
        &map,
        &ChangeSet::full(),
        &n,
        &config(IpFamily::V4, Some(50)),
        IpFamily::V4,
        None,
    );
    // 20 services with 3 endpoints: 4 chains and 1 + 2*3 ... rules each; about 50 lines
    // a batch, never splitting a service.
    assert!(split.batches.len() >= 4, "{}", split.batches.len());
    for b in &split.batches {
        assert!(b.starts_with("*nat\n:KUBE-"), "{b}");
        assert!(
            !b.contains(":KUBE-MARK-MASQ"),
            "batches never flush KUBE-MARK-MASQ"
        );
        assert!(b.ends_with("COMMIT\n"));
        assert!(
            !b.contains("KUBE-SERVICES"),
            "shared chains stay in the final restore"
        );
    }
    assert!(!split.text.contains(":KUBE-SVC-") && !split.text.contains(":KUBE-SEP-"));
    assert_eq!(split.stats, one.stats);
}

/// The proxier writes in batches when `iptables --version` says nf_tables (the
/// recording executor does), and the host ends up with the chains one restore writes.
#[test]
fn the_proxier_batches_large_restores_on_iptables_nft() {
    use kproxy_core::Proxier;
    use kproxy_iptables::exec::fake::RecordingExecutor;
    use kproxy_iptables::proxier::{IptablesProxier, NFT_RESTORE_BATCH_LINES};

    let map = build(&kproxy_iptables::synth::snapshot(250, 10));
    let n = kproxy_iptables::synth::node();
    let mut proxier = IptablesProxier::new(
        RecordingExecutor::new(),
        &kproxy_core::KubeProxyConfiguration::default(),
        &[IpFamily::V4],
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(proxier.sync(&map, &ChangeSet::full(), &n))
        .unwrap();

    let restores = proxier.executor().restores();
    // 250 services x (SVC + 10 SEP chains, 41 rules) = 10 750 lines of service chains.
    assert!(restores.len() >= 3, "{} restores", restores.len());
    for (_, text) in &restores[..restores.len() - 1] {
        assert!(text.lines().count() < 2 * NFT_RESTORE_BATCH_LINES);
    }
    let mut cfg = proxier.plan_config_mut(IpFamily::V4).unwrap().clone();
    assert_eq!(cfg.restore_batch_lines, Some(NFT_RESTORE_BATCH_LINES));
    cfg.restore_batch_lines = None;
    let one = plan(&map, &ChangeSet::full(), &n, &cfg, IpFamily::V4, None).text;
    let want = model_of(&one).unwrap();
    let got = proxier.executor().model(IpFamily::V4);
    let mut chains = 0;
    let mut table = "";
    for l in one.lines() {
        if let Some(t) = l.strip_prefix('*') {
            table = t;
        } else if let Some(decl) = l.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap();
            assert_eq!(
                got.chain(table, name).map(|c| &c.rules),
                want.chain(table, name).map(|c| &c.rules),
                "{table} {name}"
            );
            chains += 1;
        }
    }
    assert!(chains > 2750, "{chains}");
}

/// A port whose shared rules change (here its port, which its SVC chain's masquerade
/// rule repeats) is written with the shared chains, never ahead of them; one whose shared
/// rules stay is batched.
#[test]
fn ports_whose_shared_rules_change_are_not_batched() {
    let svc = |port: u16| {
        format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: moving, namespace: ns}}
spec: {{clusterIP: 10.96.0.170, ports: [{{name: dns, port: {port}, protocol: TCP}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: moving-1, namespace: ns, labels: {{kubernetes.io/service-name: moving}}}}
addressType: IPv4
ports: [{{name: dns, port: 8001, protocol: TCP}}]
endpoints: [{{addresses: [10.1.0.1]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: steady, namespace: ns}}
spec: {{clusterIP: 10.96.0.171, ports: [{{name: dns, port: 53, protocol: TCP}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: steady-1, namespace: ns, labels: {{kubernetes.io/service-name: steady}}}}
addressType: IPv4
ports: [{{name: dns, port: 8053, protocol: TCP}}]
endpoints: [{{addresses: [10.1.0.{}]}}]
"#,
            if port == 160 { 2 } else { 3 }
        )
    };
    let n = node();
    let cfg = config(IpFamily::V4, Some(1));
    let (m1, m2) = (
        common::map_of(&svc(160), NODES_0),
        common::map_of(&svc(80), NODES_0),
    );
    let p1 = plan(&m1, &ChangeSet::full(), &n, &cfg, IpFamily::V4, None);
    assert_eq!(p1.batches.len(), 2, "a fresh host: both ports ahead");
    let state = p1.into_state(None);
    for changes in [ChangeSet::between(&m1, &m2), ChangeSet::full()] {
        let p2 = plan(&m2, &changes, &n, &cfg, IpFamily::V4, Some(&state));
        let moving = "-A KUBE-SVC-";
        assert_eq!(p2.batches.len(), 1, "only the steady port ahead");
        assert!(p2.batches[0].contains("10.1.0.3:8053"), "{}", p2.batches[0]);
        assert!(!p2.batches[0].contains("10.96.0.170"), "{}", p2.batches[0]);
        assert!(
            p2.text.lines().any(|l| l.starts_with(moving)
                && l.contains("10.96.0.170")
                && l.contains("--dport 80")),
            "the moving port's SVC chain is in the final restore:\n{}",
            p2.text
        );
    }
}

const NODES_0: &str = kproxy_core::testing::NODES[0];

/// After a restart the previous state comes from `iptables-save` (chain names, no
/// rules): services whose chains are on the host are written with the shared chains
/// (their shared rules are unknown), new ones still go ahead in batches.
#[test]
fn after_a_restart_existing_services_are_not_batched() {
    use kproxy_iptables::PlanState;
    let n = node();
    let cfg = config(IpFamily::V4, Some(50));
    let before = build(&kproxy_iptables::synth::snapshot(20, 3));
    let on_host: Vec<String> = plan(&before, &ChangeSet::full(), &n, &cfg, IpFamily::V4, None)
        .into_state(None)
        .service_chains()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let saved = PlanState::from_saved_chains(IpFamily::V4, on_host);
    let same = plan(
        &before,
        &ChangeSet::full(),
        &n,
        &cfg,
        IpFamily::V4,
        Some(&saved),
    );
    assert!(same.batches.is_empty(), "{:?}", same.batches);
    let grown = build(&kproxy_iptables::synth::snapshot(40, 3));
    let p = plan(
        &grown,
        &ChangeSet::full(),
        &n,
        &cfg,
        IpFamily::V4,
        Some(&saved),
    );
    assert!(p.batches.iter().any(|b| b.contains("bench/svc-39:")));
    for b in &p.batches {
        assert!(
            !b.contains("bench/svc-1:") && !b.contains("bench/svc-19:"),
            "an existing service went ahead:\n{b}"
        );
    }
}
