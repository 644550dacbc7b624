//! Unit tests of the planner's sync-mode decisions.
use kproxy_core::Object;

use super::*;
use crate::synth;

#[test]
fn large_cluster_mode_drops_only_endpoint_comments() {
    let cfg = PlanConfig::defaults(IpFamily::V4);
    let node = synth::node();
    let small = synth::map(&synth::snapshot(100, 10));
    let text = plan(&small, &ChangeSet::full(), &node, &cfg, IpFamily::V4, None).text;
    assert!(text.contains("-> 10.") && text.contains("-A KUBE-SEP-"));
    assert!(
        text.lines()
            .filter(|l| l.starts_with("-A KUBE-SEP-"))
            .all(|l| l.contains("--comment bench/svc-"))
    );
    let large = synth::map(&synth::snapshot(101, 10));
    let p = plan(&large, &ChangeSet::full(), &node, &cfg, IpFamily::V4, None);
    assert!(p.stats.large_cluster);
    assert!(!p.text.contains(" -> "), "no SVC->SEP comments");
    assert!(
        p.text
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SEP-"))
            .all(|l| !l.contains("--comment"))
    );
    assert!(p.text.contains("cluster IP\""), "other comments stay");
}

#[test]
fn partial_plan_falls_back_to_full_when_fixed_rules_or_mode_change() {
    let node = synth::node();
    let cfg = PlanConfig::defaults(IpFamily::V4);
    let snap = synth::snapshot(100, 10);
    let before = synth::map(&snap);
    let state = plan(&before, &ChangeSet::full(), &node, &cfg, IpFamily::V4, None).into_state(None);
    let mut next = snap.clone();
    next.apply(Object::EndpointSlice(synth::slice(3, 10, 1)));
    let after = synth::map(&next);
    let changes = ChangeSet::between(&before, &after);
    let p = plan(&after, &changes, &node, &cfg, IpFamily::V4, Some(&state));
    assert!(!p.full && p.stats.ports_programmed == 1);
    let marked = PlanConfig {
        masquerade_mark: 1 << 15,
        ..cfg.clone()
    };
    assert!(plan(&after, &changes, &node, &marked, IpFamily::V4, Some(&state)).full);
    // One more endpoint crosses the large-cluster threshold: comments change everywhere.
    next.apply(Object::EndpointSlice(synth::slice(3, 11, 0)));
    let bigger = synth::map(&next);
    assert!(
        plan(
            &bigger,
            &ChangeSet::between(&before, &bigger),
            &node,
            &cfg,
            IpFamily::V4,
            Some(&state)
        )
        .full
    );
    let seeded = PlanState::from_saved_chains(
        IpFamily::V4,
        ["KUBE-SVC-OLD".to_owned(), "OTHER".to_owned()],
    );
    let p = plan(&after, &changes, &node, &cfg, IpFamily::V4, Some(&seeded));
    assert!(
        p.full && p.stats.chains_deleted == 1,
        "leftovers are deleted, foreign chains kept"
    );
    assert!(p.text.contains("-X KUBE-SVC-OLD\n") && !p.text.contains("OTHER"));
}

#[test]
fn unchanged_partial_plan_is_a_noop() {
    let node = synth::node();
    let cfg = PlanConfig::defaults(IpFamily::V4);
    let map = synth::map(&synth::snapshot(10, 2));
    let state = plan(&map, &ChangeSet::full(), &node, &cfg, IpFamily::V4, None).into_state(None);
    let p = plan(
        &map,
        &ChangeSet::default(),
        &node,
        &cfg,
        IpFamily::V4,
        Some(&state),
    );
    assert!(p.is_noop());
    assert_eq!(p.into_state(Some(state.clone())), state);
}

#[test]
fn primary_node_port_addresses_and_node_cidr_detector_resolve_from_the_node() {
    let mut node = synth::node();
    node.pod_cidrs = vec![
        "10.244.1.0/24".parse().unwrap(),
        "fd00:244:1::/64".parse().unwrap(),
    ];
    let kcfg = kproxy_core::KubeProxyConfiguration {
        node_port_addresses: vec!["primary".into()],
        detect_local_mode: kproxy_core::config::LocalMode::NodeCIDR,
        ..Default::default()
    };
    let cfg = PlanConfig::from_config(&kcfg, IpFamily::V4).unwrap();
    assert!(!cfg.localhost_node_ports, "primary does not cover loopback");
    let map = synth::map(&synth::snapshot(1, 1));
    let text = plan(&map, &ChangeSet::full(), &node, &cfg, IpFamily::V4, None).text;
    assert!(
        text.contains(
            "NOTE: this must be the last rule in this chain\" -d 10.240.0.1 -j KUBE-NODEPORTS\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("! -s 10.244.1.0/24 -j KUBE-MARK-MASQ"),
        "{text}"
    );
    assert!(
        !text.contains(":KUBE-FIREWALL"),
        "no localhost node ports, no KUBE-FIREWALL"
    );
}

#[test]
fn interface_detectors_and_masquerade_all_shape_the_cluster_ip_rule() {
    let node = synth::node();
    let map = synth::map(&synth::snapshot(1, 1));
    let mut cfg = PlanConfig::defaults(IpFamily::V4);
    cfg.local_detector = LocalDetector::Bridge("cbr0".into());
    let text = plan(&map, &ChangeSet::full(), &node, &cfg, IpFamily::V4, None).text;
    assert!(
        text.contains("--dport 80 ! -i cbr0 -j KUBE-MARK-MASQ"),
        "{text}"
    );
    cfg.masquerade_all = true;
    let text = plan(&map, &ChangeSet::full(), &node, &cfg, IpFamily::V4, None).text;
    assert!(text.contains("--dport 80 -j KUBE-MARK-MASQ"), "{text}");
    cfg.tcp_be_liberal = true;
    cfg.random_fully = true;
    let text = plan(&map, &ChangeSet::full(), &node, &cfg, IpFamily::V4, None).text;
    assert!(!text.contains("INVALID"));
    assert!(text.contains("-j MASQUERADE --random-fully\n"));
}
