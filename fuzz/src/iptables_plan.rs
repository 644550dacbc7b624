//! `iptables_plan`: the iptables planner over small generated clusters with hostile
//! names, checked by parsing its output and tracing packets through it.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use kproxy_core::model::{IpFamily, Protocol};
use kproxy_core::{NodeFacts, ServiceMap};
use kproxy_iptables::chains::{EXT_PREFIX, FW_PREFIX, SEP_PREFIX, SVC_PREFIX, SVL_PREFIX};
use kproxy_iptables::ruleset::{Match, Target};
use kproxy_iptables::trace::model_of;
use kproxy_iptables::{Packet, Ruleset, Verdict, render_plan, trace_packet};

use crate::cluster::{Cluster, cluster};

/// Reads a cluster (see [`cluster`](crate::cluster)) and plans it in full for IPv4 and
/// IPv6 with one of 16 config variants (`masqueradeAll`, `clusterCIDR`,
/// `nodePortAddresses`). For each family:
/// - the restore text of the hostile-named map parses as a [`Ruleset`];
/// - it holds the same rules as the plain-named map's, up to comments and hashed chain
///   names (a name never adds, drops or changes a match, a target or a chain);
/// - a pod's packet to each service port's cluster IP (unless another port shares that
///   destination) has outcomes whose probabilities sum to 1, DNATed to exactly the port's
///   `internal_endpoints()` with equal probability, else dropped (endpoints, none
///   eligible) or rejected (no endpoints).
pub fn iptables_plan(data: &[u8]) {
    let Some(c) = cluster(data) else {
        return;
    };
    for family in IpFamily::ALL {
        let hostile = model(&c, &c.hostile, family);
        let plain = model(&c, &c.plain, family);
        assert_eq!(
            shapes(&hostile),
            shapes(&plain),
            "hostile names changed the {family} rules (config variant {})",
            c.variant
        );
        trace_cluster_ips(&c.hostile, &c.node, &hostile, family);
    }
}

fn model(c: &Cluster, map: &ServiceMap, family: IpFamily) -> Ruleset {
    let text = render_plan(map, &c.node, &c.config, family).expect("the config variants are valid");
    model_of(&text).unwrap_or_else(|e| panic!("the {family} plan does not parse: {e}\n{text}"))
}

/// Removes what names may change: comments, and the hash in per-service chain names
/// (also the `recent` list names, which are chain names).
fn chain_kind(name: &str) -> &str {
    [SVC_PREFIX, SVL_PREFIX, EXT_PREFIX, FW_PREFIX, SEP_PREFIX]
        .into_iter()
        .find(|p| name.starts_with(p))
        .unwrap_or(name)
}

/// Every chain and rule of `rs`, with names removed, counted.
fn shapes(rs: &Ruleset) -> BTreeMap<String, usize> {
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    for (table, t) in &rs.tables {
        for (chain, c) in &t.chains {
            let chain = chain_kind(chain);
            *out.entry(format!("{table} {chain} {:?}", c.policy))
                .or_default() += 1;
            for r in &c.rules {
                let matches: Vec<String> = r
                    .matches
                    .iter()
                    .map(|m| match m {
                        Match::Comment(_) => "comment".to_owned(),
                        Match::Recent { name, op } => format!("recent {} {op:?}", chain_kind(name)),
                        other => format!("{other:?}"),
                    })
                    .collect();
                let target = match &r.target {
                    Target::Jump(to) => format!("jump {}", chain_kind(to)),
                    other => format!("{other:?}"),
                };
                *out.entry(format!("{table} {chain}: {matches:?} {target}"))
                    .or_default() += 1;
            }
        }
    }
    out
}

fn trace_cluster_ips(map: &ServiceMap, node: &NodeFacts, rs: &Ruleset, family: IpFamily) {
    // Destinations two ports share are ambiguous (the API forbids most of them).
    let mut vips: HashMap<(IpAddr, u16, Protocol), usize> = HashMap::new();
    for p in map.family(family).values() {
        for ip in p.virtual_ips() {
            *vips.entry((ip, p.port, p.name.protocol)).or_default() += 1;
        }
    }
    let pod: IpAddr = match family {
        IpFamily::V4 => "10.9.0.50".parse().expect("literal"),
        IpFamily::V6 => "fd00:9::50".parse().expect("literal"),
    };
    for p in map.family(family).values() {
        if vips.get(&(p.cluster_ip, p.port, p.name.protocol)) != Some(&1) {
            continue;
        }
        let pkt = Packet {
            protocol: p.name.protocol,
            src: pod,
            dst: p.cluster_ip,
            dport: p.port,
            in_iface: Some("eth0".into()),
            src_local: false,
        };
        let t = trace_packet(rs, &pkt, &node.local_addresses)
            .unwrap_or_else(|e| panic!("tracing {pkt} ({}): {e}", p.name));
        let total: f64 = t.outcomes.iter().map(|o| o.probability).sum();
        assert!(
            (total - 1.0).abs() < 1e-6,
            "{} to its cluster IP: probabilities sum to {total}\n{t}",
            p.name
        );
        let want = p.internal_endpoints();
        if !p.selection.has_any_endpoints || want.is_empty() {
            let verdict = if p.selection.has_any_endpoints {
                Verdict::Drop
            } else {
                Verdict::Reject
            };
            assert!(
                t.outcomes
                    .iter()
                    .all(|o| o.verdict == verdict && o.dnat.is_none()),
                "{} to its cluster IP: expected {verdict} for all\n{t}",
                p.name
            );
            continue;
        }
        let mut got: BTreeMap<SocketAddr, f64> = BTreeMap::new();
        for o in &t.outcomes {
            let dnat = o
                .dnat
                .filter(|_| o.verdict == Verdict::Accept)
                .unwrap_or_else(|| panic!("{} to its cluster IP: not DNATed\n{t}", p.name));
            assert!(
                want.contains(&dnat),
                "{} to its cluster IP: DNAT to {dnat}, not an endpoint of the port ({want:?})\n{t}",
                p.name
            );
            *got.entry(dnat).or_default() += o.probability;
        }
        assert_eq!(
            got.len(),
            want.len(),
            "{} to its cluster IP: reaches {:?}, core selected {want:?}\n{t}",
            p.name,
            got.keys()
        );
        let share = 1.0 / want.len() as f64;
        for (e, prob) in &got {
            assert!(
                (prob - share).abs() < 1e-6,
                "{} to its cluster IP: {e} gets {prob}, not {share}\n{t}",
                p.name
            );
        }
    }
}
