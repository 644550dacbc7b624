//! Helpers shared by the integration tests: upstream's test conventions, building maps
//! from YAML and summarising traces the way upstream's `runPacketFlowTests` does.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::net::IpAddr;

use kproxy_core::model::{IpFamily, Protocol};
use kproxy_core::{BuildOptions, ChangeSet, NodeFacts, ServiceMap, Snapshot};
use kproxy_iptables::plan::{LocalDetector, PlanConfig, plan};
use kproxy_iptables::ruleset::Ruleset;
use kproxy_iptables::trace::{Packet, TraceResult, Verdict, model_of, trace_packet};

/// Upstream proxier_test.go's node name.
pub const TEST_NODE: &str = "test-node";

/// Upstream's fake node: 192.168.0.2 (plus the alternates and an external IP) and
/// 2001:db8::1, loopback, pod CIDRs 10.0.0.0/8 and fd00:10::/64.
pub fn upstream_node() -> NodeFacts {
    let ips = [
        "192.168.0.2",
        "192.168.1.2",
        "192.168.99.11",
        "2001:db8::1",
        "2001:db8:1::2",
        "127.0.0.1",
        "::1",
    ];
    NodeFacts {
        name: TEST_NODE.into(),
        node_ips: vec![
            "192.168.0.2".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        ],
        local_addresses: ips.iter().map(|s| s.parse().unwrap()).collect(),
        pod_cidrs: vec![],
    }
}

/// Upstream's `NewFakeProxier` settings: ClusterCIDR detector, localhost node ports,
/// nfacct counters present.
pub fn upstream_config(family: IpFamily) -> PlanConfig {
    let mut c = PlanConfig::defaults(family);
    c.local_detector = LocalDetector::Cidr(match family {
        IpFamily::V4 => "10.0.0.0/8".parse().unwrap(),
        IpFamily::V6 => "fd00:10::/64".parse().unwrap(),
    });
    c.nfacct = true;
    c
}

/// The map for `yaml` as seen from `node`.
pub fn map_of(yaml: &str, node: &str) -> ServiceMap {
    let (snap, problems) = Snapshot::from_documents(yaml).expect("test YAML parses");
    assert!(problems.is_empty(), "{problems:?}");
    ServiceMap::build(&snap, &BuildOptions::for_node(node))
}

/// The full-sync model of `map`.
pub fn full_model(
    map: &ServiceMap,
    node: &NodeFacts,
    cfg: &PlanConfig,
    family: IpFamily,
) -> Ruleset {
    let p = plan(map, &ChangeSet::full(), node, cfg, family, None);
    model_of(&p.text).unwrap_or_else(|e| panic!("{e}\n{}", p.text))
}

/// A packet as upstream's flow tests describe it: sources that are node addresses are
/// sent by the node itself.
pub fn packet(node: &NodeFacts, proto: Protocol, src: &str, dst: &str, dport: u16) -> Packet {
    let src: IpAddr = src.parse().unwrap();
    Packet {
        protocol: proto,
        src,
        dst: dst.parse().unwrap(),
        dport,
        in_iface: if node.local_addresses.contains(&src) {
            None
        } else {
            Some("eth0".into())
        },
        src_local: node.local_addresses.contains(&src),
    }
}

/// Upstream's summary of a trace: the DNAT destinations joined with ", " (sorted), or
/// the verdict when nothing was DNATed; and whether it was masqueraded. Panics if the
/// outcomes disagree on anything but the endpoint, or do not sum to 1.
pub fn summary(t: &TraceResult) -> (String, bool) {
    let total: f64 = t.outcomes.iter().map(|o| o.probability).sum();
    assert!(
        (total - 1.0).abs() < 1e-6,
        "probabilities sum to {total}: {t}"
    );
    let mut eps: BTreeMap<String, f64> = BTreeMap::new();
    let mut verdicts = Vec::new();
    let masq: Vec<bool> = t.outcomes.iter().map(|o| o.masquerade).collect();
    for o in &t.outcomes {
        match (o.dnat, o.verdict) {
            (Some(d), Verdict::Accept) => *eps.entry(d.to_string()).or_default() += o.probability,
            (_, v) => verdicts.push(v.to_string()),
        }
    }
    assert!(
        masq.windows(2).all(|w| w[0] == w[1]),
        "mixed masquerade: {t}"
    );
    if !eps.is_empty() {
        assert!(verdicts.is_empty(), "mixed outcomes: {t}");
        let n = eps.len() as f64;
        for p in eps.values() {
            assert!(
                (p - 1.0 / n).abs() < 1e-6,
                "unequal endpoint probabilities: {t}"
            );
        }
        return (eps.into_keys().collect::<Vec<_>>().join(", "), masq[0]);
    }
    verdicts.dedup();
    assert_eq!(verdicts.len(), 1, "mixed verdicts: {t}");
    (verdicts.remove(0), masq.first().copied().unwrap_or(false))
}

/// Traces and summarises one packet.
pub fn flow(
    rs: &Ruleset,
    node: &NodeFacts,
    proto: Protocol,
    src: &str,
    dst: &str,
    dport: u16,
) -> (String, bool) {
    let t = trace_packet(
        rs,
        &packet(node, proto, src, dst, dport),
        &node.local_addresses,
    )
    .unwrap();
    summary(&t)
}

/// One upstream packet-flow case.
pub struct Case {
    /// Its name.
    pub name: &'static str,
    /// Protocol.
    pub proto: Protocol,
    /// Source.
    pub src: &'static str,
    /// Destination.
    pub dst: &'static str,
    /// Destination port.
    pub port: u16,
    /// Expected endpoints, or DROP/REJECT/ACCEPT.
    pub output: &'static str,
    /// Expected masquerade.
    pub masq: bool,
}

/// A TCP case.
pub const fn tcp(
    name: &'static str,
    src: &'static str,
    dst: &'static str,
    port: u16,
    output: &'static str,
    masq: bool,
) -> Case {
    Case {
        name,
        proto: Protocol::Tcp,
        src,
        dst,
        port,
        output,
        masq,
    }
}

/// Runs cases against a model of upstream's fake node.
pub fn run(rs: &Ruleset, cases: &[Case]) {
    let node = upstream_node();
    for c in cases {
        let (out, masq) = flow(rs, &node, c.proto, c.src, c.dst, c.port);
        assert_eq!(out, c.output, "{}: output", c.name);
        if c.output != "DROP" && c.output != "REJECT" {
            assert_eq!(masq, c.masq, "{}: masquerade", c.name);
        }
    }
}

/// The IPv4 full-sync model of `yaml` with upstream's fake proxier settings.
pub fn v4_model(yaml: &str) -> Ruleset {
    full_model(
        &map_of(yaml, TEST_NODE),
        &upstream_node(),
        &upstream_config(IpFamily::V4),
        IpFamily::V4,
    )
}

/// The node of the generated clusters (`kproxy_core::testing`). Its addresses lie
/// outside the pod CIDRs the property tests' detectors use (10.0.0.0/8, fd00::/16), as a
/// real node's do.
pub fn generated_node() -> NodeFacts {
    let ips: [IpAddr; 4] = [
        "172.18.0.2".parse().unwrap(),
        "fd01:18::2".parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
        "::1".parse().unwrap(),
    ];
    NodeFacts {
        name: kproxy_core::testing::NODES[0].into(),
        node_ips: ips[..2].to_vec(),
        local_addresses: ips.to_vec(),
        pod_cidrs: vec![],
    }
}

/// The map of a generated snapshot, as seen from [`generated_node`].
pub fn generated_map(s: &Snapshot) -> ServiceMap {
    ServiceMap::build(s, &BuildOptions::for_node(kproxy_core::testing::NODES[0]))
}
