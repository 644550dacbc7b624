//! Property tests of the planner against core's endpoint selection, through the packet
//! tracer: for generated clusters, every packet reaches exactly the endpoints core
//! selected, with equal probabilities and the right masquerade decision, or is dropped
//! or rejected where upstream would; partial syncs equal full rebuilds; plans are
//! deterministic and independent of object order.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use common::summary;
use kproxy_core::model::{IpFamily, Protocol};
use kproxy_core::testing::{apply_events, arb_events, arb_objects, arb_snapshot};
use kproxy_core::{ChangeSet, NodeFacts, ServiceMap, ServicePort, Snapshot};
use kproxy_iptables::chains::{KUBE_NODEPORTS, KUBE_SERVICES};
use kproxy_iptables::plan::{LocalDetector, PlanConfig, plan};
use kproxy_iptables::ruleset::Target;
use kproxy_iptables::trace::{Packet, model_of, trace_packet};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn node() -> NodeFacts {
    common::generated_node()
}

fn build(s: &Snapshot) -> ServiceMap {
    common::generated_map(s)
}

fn arb_config() -> impl Strategy<Value = (u8, bool, bool, bool)> {
    (0u8..5, any::<bool>(), any::<bool>(), any::<bool>())
}

fn config(
    (variant, liberal, nfacct, random_fully): (u8, bool, bool, bool),
    family: IpFamily,
) -> PlanConfig {
    let mut c = PlanConfig::defaults(family);
    let cidr = match family {
        IpFamily::V4 => "10.0.0.0/8",
        IpFamily::V6 => "fd00::/16",
    };
    c.local_detector = match variant {
        0 | 1 => LocalDetector::Cidr(cidr.parse().unwrap()),
        2 => LocalDetector::None,
        3 => LocalDetector::Bridge("cbr0".into()),
        _ => LocalDetector::InterfacePrefix("veth".into()),
    };
    c.masquerade_all = variant == 1;
    c.tcp_be_liberal = liberal;
    c.nfacct = nfacct;
    c.random_fully = random_fully;
    c
}

#[derive(Debug, PartialEq)]
enum Expect {
    To(Vec<SocketAddr>, bool),
    Drop,
    Reject,
    NoNat,
}

fn addr(family: IpFamily, v4: &str, v6: &str) -> IpAddr {
    match family {
        IpFamily::V4 => v4.parse().unwrap(),
        IpFamily::V6 => v6.parse().unwrap(),
    }
}

/// What the trace shows, as an [`Expect`].
fn observed(rs: &kproxy_iptables::Ruleset, pkt: &Packet) -> Expect {
    let t = trace_packet(rs, pkt, &node().local_addresses).unwrap();
    let (out, masq) = summary(&t);
    match out.as_str() {
        "DROP" => Expect::Drop,
        "REJECT" => Expect::Reject,
        "ACCEPT" => Expect::NoNat,
        eps => Expect::To(eps.split(", ").map(|e| e.parse().unwrap()).collect(), masq),
    }
}

fn sorted(eps: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut v = eps.to_vec();
    v.sort_by_key(|e| e.to_string());
    v
}

/// Expected outcome of external traffic that reached the port (no source-range drop).
fn external_expect(p: &ServicePort) -> Expect {
    if !p.selection.has_any_endpoints {
        Expect::Reject
    } else if p.external_endpoints().is_empty() {
        Expect::Drop
    } else {
        Expect::To(sorted(p.external_endpoints()), !p.external_policy_local)
    }
}

fn check_map(map: &ServiceMap, cfg_seed: (u8, bool, bool, bool)) -> Result<(), TestCaseError> {
    let n = node();
    for family in IpFamily::ALL {
        let cfg = config(cfg_seed, family);
        let text = plan(map, &ChangeSet::full(), &n, &cfg, family, None).text;
        let rs = model_of(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        // Destinations shared by two ports are ambiguous (the API forbids most of them).
        let mut vips: HashMap<(IpAddr, u16, Protocol), usize> = HashMap::new();
        let mut nps: HashMap<(u16, Protocol), usize> = HashMap::new();
        for p in map.family(family).values() {
            for ip in p.virtual_ips() {
                *vips.entry((ip, p.port, p.name.protocol)).or_default() += 1;
            }
            if let Some(np) = p.node_port {
                *nps.entry((np, p.name.protocol)).or_default() += 1;
            }
        }
        let pod_iface = match &cfg.local_detector {
            LocalDetector::Bridge(b) => b.clone(),
            LocalDetector::InterfacePrefix(p) => format!("{p}12"),
            _ => "eth0".into(),
        };
        let detector = cfg.local_detector.if_local().is_some();
        let pod = addr(family, "10.9.0.50", "fd00:9::50");
        let external = addr(family, "203.0.113.9", "2001:db8::9");
        let in_range = addr(family, "192.168.0.77", "fd99::77");
        let node_ip = n.node_ip(family).unwrap();
        let pkt = |proto, src, dst, dport, iface: &str, local: bool| Packet {
            protocol: proto,
            src,
            dst,
            dport,
            in_iface: (!local).then(|| iface.to_owned()),
            src_local: local,
        };
        for p in map.family(family).values() {
            let proto = p.name.protocol;
            let unique = |ip: IpAddr| vips.get(&(ip, p.port, proto)) == Some(&1);
            let sel = &p.selection;
            let name = p.name.to_string();
            // Pod and external client to the cluster IP.
            if unique(p.cluster_ip) {
                let internal = if !sel.has_any_endpoints {
                    Expect::Reject
                } else if p.internal_endpoints().is_empty() {
                    Expect::Drop
                } else {
                    Expect::To(sorted(p.internal_endpoints()), cfg.masquerade_all)
                };
                let got = observed(
                    &rs,
                    &pkt(proto, pod, p.cluster_ip, p.port, &pod_iface, false),
                );
                prop_assert_eq!(&got, &internal, "{} pod to cluster IP", name);
                let want = match internal {
                    Expect::To(eps, _) => Expect::To(eps, cfg.masquerade_all || detector),
                    other => other,
                };
                let got = observed(
                    &rs,
                    &pkt(proto, external, p.cluster_ip, p.port, "eth1", false),
                );
                prop_assert_eq!(&got, &want, "{} external to cluster IP", name);
            }
            // External client to external IPs, LB IPs (in and out of source ranges).
            for eip in p.external_ips.iter().copied().filter(|ip| unique(*ip)) {
                let got = observed(&rs, &pkt(proto, external, eip, p.port, "eth1", false));
                prop_assert_eq!(&got, &external_expect(p), "{} external IP {}", name, eip);
            }
            for lb in p.load_balancer_ips.iter().copied().filter(|ip| unique(*ip)) {
                let ranged = !p.load_balancer_source_ranges.is_empty();
                let allowed_src = if ranged { in_range } else { external };
                let allowed = p
                    .load_balancer_source_ranges
                    .iter()
                    .any(|r| r.contains(&allowed_src))
                    || !ranged;
                if allowed {
                    let got = observed(&rs, &pkt(proto, allowed_src, lb, p.port, "eth1", false));
                    prop_assert_eq!(&got, &external_expect(p), "{} LB IP {}", name, lb);
                }
                if ranged {
                    let want = if sel.has_any_endpoints {
                        Expect::Drop
                    } else {
                        Expect::Reject
                    };
                    let got = observed(&rs, &pkt(proto, external, lb, p.port, "eth1", false));
                    prop_assert_eq!(&got, &want, "{} LB IP {} outside source ranges", name, lb);
                }
            }
            // Node port: from outside, from a pod, from the node itself.
            if let Some(np) = p.node_port.filter(|np| nps.get(&(*np, proto)) == Some(&1)) {
                let got = observed(&rs, &pkt(proto, external, node_ip, np, "eth1", false));
                prop_assert_eq!(&got, &external_expect(p), "{} external to node port", name);
                let from_pod = if p.external_policy_local && detector && sel.has_any_endpoints {
                    // Upstream §7.4: pod traffic short-circuits to the cluster endpoints.
                    Expect::To(sorted(&sel.cluster), false)
                } else {
                    external_expect(p)
                };
                let got = observed(&rs, &pkt(proto, pod, node_ip, np, &pod_iface, false));
                prop_assert_eq!(&got, &from_pod, "{} pod to node port", name);
                let from_node = if !sel.has_any_endpoints {
                    // KUBE-EXTERNAL-SERVICES is not on the OUTPUT path: the host stack answers.
                    Expect::NoNat
                } else if p.external_policy_local {
                    Expect::To(sorted(&sel.cluster), true)
                } else {
                    external_expect(p)
                };
                let got = observed(&rs, &pkt(proto, node_ip, node_ip, np, "", true));
                prop_assert_eq!(&got, &from_node, "{} node to node port", name);
            }
        }
        // An address no service uses is left alone.
        let random = addr(family, "10.250.0.1", "fd00:250::1");
        prop_assert_eq!(
            observed(&rs, &pkt(Protocol::Tcp, pod, random, 80, &pod_iface, false)),
            Expect::NoNat
        );
    }
    Ok(())
}

fn nodeport_jumps_last(rs: &kproxy_iptables::Ruleset) -> bool {
    let rules = &rs
        .chain("nat", KUBE_SERVICES)
        .map(|c| c.rules.clone())
        .unwrap_or_default();
    let first = rules
        .iter()
        .position(|r| r.target == Target::Jump(KUBE_NODEPORTS.into()));
    first.is_none_or(|i| {
        rules[i..]
            .iter()
            .all(|r| r.target == Target::Jump(KUBE_NODEPORTS.into()))
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        // Integration tests have no lib.rs next to them: name the regressions file.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("tests/proptest-regressions/plan_props.txt"))),
        ..ProptestConfig::default()
    })]

    /// Traced behaviour equals core's endpoint selection (upstream §7.4).
    #[test]
    fn traces_reach_the_selected_endpoints(snap in arb_snapshot(), cfg in arb_config()) {
        check_map(&build(&snap), cfg)?;
    }

    /// A partial sync applied to the previous full ruleset equals a full rebuild, also
    /// after two partial syncs in a row.
    #[test]
    fn partial_sync_equals_full_rebuild(base in arb_snapshot(), e1 in arb_events(), e2 in arb_events(), cfg in arb_config()) {
        let n = node();
        let mut s1 = base.clone();
        apply_events(&mut s1, &e1);
        let mut s2 = s1.clone();
        apply_events(&mut s2, &e2);
        let (m0, m1, m2) = (build(&base), build(&s1), build(&s2));
        for family in IpFamily::ALL {
            let pc = config(cfg, family);
            let full0 = plan(&m0, &ChangeSet::full(), &n, &pc, family, None);
            let mut live = model_of(&full0.text).unwrap();
            let mut state = full0.into_state(None);
            for (before, after) in [(&m0, &m1), (&m1, &m2)] {
                let p = plan(after, &ChangeSet::between(before, after), &n, &pc, family, Some(&state));
                live.restore(&p.text, true).map_err(|e| TestCaseError::fail(format!("{e}\n{}", p.text)))?;
                state = p.into_state(Some(state));
                let rebuilt = model_of(&plan(after, &ChangeSet::full(), &n, &pc, family, None).text).unwrap();
                prop_assert_eq!(live.canonical(), rebuilt.canonical());
                prop_assert!(nodeport_jumps_last(&live));
                let counts = state.rule_counts();
                prop_assert_eq!(counts.nat, own_rules(&rebuilt, "nat"));
                prop_assert_eq!(counts.filter, own_rules(&rebuilt, "filter"));
            }
        }
    }

    /// The same objects give the same bytes, whatever order they arrive in.
    #[test]
    fn plans_are_deterministic_and_order_independent(objs in arb_objects(), cfg in arb_config()) {
        let mut dedup = std::collections::BTreeMap::new();
        for o in objs {
            dedup.insert(o.key(), o);
        }
        let objs: Vec<_> = dedup.into_values().collect();
        let mut a = Snapshot::new();
        for o in objs.iter().cloned() {
            a.apply(o);
        }
        let mut b = Snapshot::new();
        for o in objs.into_iter().rev() {
            b.apply(o);
        }
        let n = node();
        for family in IpFamily::ALL {
            let pc = config(cfg, family);
            let pa = plan(&build(&a), &ChangeSet::full(), &n, &pc, family, None).text;
            let pa2 = plan(&build(&a), &ChangeSet::full(), &n, &pc, family, None).text;
            let pb = plan(&build(&b), &ChangeSet::full(), &n, &pc, family, None).text;
            prop_assert_eq!(&pa, &pa2);
            prop_assert_eq!(&pa, &pb);
        }
    }
}

/// Rules outside the built-in chains (the ones kproxy owns through the restore).
fn own_rules(rs: &kproxy_iptables::Ruleset, table: &str) -> usize {
    let builtin: usize = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]
        .iter()
        .filter_map(|c| rs.chain(table, c))
        .map(|c| c.rules.len())
        .sum();
    rs.rule_count(table) - builtin
}
