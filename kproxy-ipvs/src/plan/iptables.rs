//! The companion iptables rules of IPVS mode: upstream `writeIptablesRules`,
//! `acceptIPVSTraffic` and the `iptablesChains` / `iptablesJumpChain` /
//! `ipsetWithIptablesChain` tables in `pkg/proxy/ipvs/proxier.go`.

use std::fmt::Write as _;
use std::net::IpAddr;

use kproxy_core::model::IpFamily;

use super::ipset::{IpSet, SetId, set_comment};

/// A filter or nat chain kube-proxy owns in IPVS mode, with its table, in upstream's
/// `iptablesChains` order.
pub const CHAINS: [(&str, &str); 11] = [
    ("nat", "KUBE-SERVICES"),
    ("nat", "KUBE-POSTROUTING"),
    ("nat", "KUBE-NODE-PORT"),
    ("nat", "KUBE-LOAD-BALANCER"),
    ("nat", "KUBE-MARK-MASQ"),
    ("filter", "KUBE-FORWARD"),
    ("filter", "KUBE-NODE-PORT"),
    ("filter", "KUBE-PROXY-FIREWALL"),
    ("filter", "KUBE-SOURCE-RANGES-FIREWALL"),
    ("filter", "KUBE-IPVS-FILTER"),
    ("filter", "KUBE-IPVS-OUT-FILTER"),
];

/// A rule in a built-in chain that jumps to one of [`CHAINS`]; ensured at position 1
/// (`iptables -C` then `-I`), as upstream's `EnsureRule(Prepend, …)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpRule {
    /// `nat` or `filter`.
    pub table: &'static str,
    /// The built-in chain (`PREROUTING`, …).
    pub from: &'static str,
    /// The rule's arguments after the chain.
    pub args: Vec<String>,
}

/// Upstream's `iptablesJumpChain`: (table, from, to, comment).
const JUMPS: [(&str, &str, &str, &str); 9] = [
    (
        "nat",
        "OUTPUT",
        "KUBE-SERVICES",
        "kubernetes service portals",
    ),
    (
        "nat",
        "PREROUTING",
        "KUBE-SERVICES",
        "kubernetes service portals",
    ),
    (
        "nat",
        "POSTROUTING",
        "KUBE-POSTROUTING",
        "kubernetes postrouting rules",
    ),
    (
        "filter",
        "FORWARD",
        "KUBE-FORWARD",
        "kubernetes forwarding rules",
    ),
    (
        "filter",
        "INPUT",
        "KUBE-NODE-PORT",
        "kubernetes health check rules",
    ),
    (
        "filter",
        "INPUT",
        "KUBE-PROXY-FIREWALL",
        "kube-proxy firewall rules",
    ),
    (
        "filter",
        "FORWARD",
        "KUBE-PROXY-FIREWALL",
        "kube-proxy firewall rules",
    ),
    (
        "filter",
        "INPUT",
        "KUBE-IPVS-FILTER",
        "kubernetes ipvs access filter",
    ),
    (
        "filter",
        "OUTPUT",
        "KUBE-IPVS-OUT-FILTER",
        "kubernetes ipvs access filter",
    ),
];

/// The jump rules, in upstream order.
pub fn jump_rules() -> Vec<JumpRule> {
    JUMPS
        .iter()
        .map(|(table, from, to, comment)| JumpRule {
            table,
            from,
            args: ["-m", "comment", "--comment", comment, "-j", to]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        })
        .collect()
}

/// Upstream's `ipsetWithIptablesChain`: (set, table, from, to, match type, protocol).
const SET_RULES: [(SetId, &str, &str, &str, &str, &str); 12] = [
    (
        SetId::LoopBack,
        "nat",
        "KUBE-POSTROUTING",
        "MASQUERADE",
        "dst,dst,src",
        "",
    ),
    (
        SetId::LoadBalancer,
        "nat",
        "KUBE-SERVICES",
        "KUBE-LOAD-BALANCER",
        "dst,dst",
        "",
    ),
    (
        SetId::LoadBalancerLocal,
        "nat",
        "KUBE-LOAD-BALANCER",
        "RETURN",
        "dst,dst",
        "",
    ),
    (
        SetId::NodePortLocalTcp,
        "nat",
        "KUBE-NODE-PORT",
        "RETURN",
        "dst",
        "tcp",
    ),
    (
        SetId::NodePortTcp,
        "nat",
        "KUBE-NODE-PORT",
        "KUBE-MARK-MASQ",
        "dst",
        "tcp",
    ),
    (
        SetId::NodePortLocalUdp,
        "nat",
        "KUBE-NODE-PORT",
        "RETURN",
        "dst",
        "udp",
    ),
    (
        SetId::NodePortUdp,
        "nat",
        "KUBE-NODE-PORT",
        "KUBE-MARK-MASQ",
        "dst",
        "udp",
    ),
    (
        SetId::NodePortLocalSctpHash,
        "nat",
        "KUBE-NODE-PORT",
        "RETURN",
        "dst,dst",
        "sctp",
    ),
    (
        SetId::NodePortSctpHash,
        "nat",
        "KUBE-NODE-PORT",
        "KUBE-MARK-MASQ",
        "dst,dst",
        "sctp",
    ),
    (
        SetId::LoadBalancerFw,
        "filter",
        "KUBE-PROXY-FIREWALL",
        "KUBE-SOURCE-RANGES-FIREWALL",
        "dst,dst",
        "",
    ),
    (
        SetId::LoadBalancerSourceCidr,
        "filter",
        "KUBE-SOURCE-RANGES-FIREWALL",
        "RETURN",
        "dst,dst,src",
        "",
    ),
    (
        SetId::LoadBalancerSourceIp,
        "filter",
        "KUBE-SOURCE-RANGES-FIREWALL",
        "RETURN",
        "dst,dst,src",
        "",
    ),
];

/// What the rules depend on besides the sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInputs {
    /// The family (loopback range and `ip6tables`).
    pub family: IpFamily,
    /// `masqueradeAll`.
    pub masquerade_all: bool,
    /// The masquerade mark, `0x00004000` for bit 14 (upstream formats it with Go's `%#08x`).
    pub mark: String,
    /// The local detector's "not local" match (`! -s 10.244.0.0/16`, `! -i cbr0`), if
    /// one is configured for this family.
    pub if_not_local: Option<Vec<String>>,
    /// LB (ip, protocol, port) whose source ranges do not include the node IP: the node
    /// itself must not reach them through IPVS (issue #119656).
    pub lb_no_node_access: Vec<(IpAddr, &'static str, u16)>,
}

fn set(sets: &[IpSet], id: SetId) -> &IpSet {
    sets.iter()
        .find(|s| s.id == id)
        .expect("plan builds every set")
}

/// The `iptables-restore --noflush` input: filter then nat, each declaring (and so
/// flushing) kube-proxy's chains and writing their rules.
pub fn restore_text(sets: &[IpSet], inp: &RuleInputs) -> String {
    let mut nat: Vec<String> = Vec::new();
    let mut filter: Vec<String> = Vec::new();
    let lo = if inp.family == IpFamily::V4 {
        "127.0.0.0/8"
    } else {
        "::1/128"
    };
    nat.push(format!("-A KUBE-SERVICES -s {lo} -j RETURN"));

    for (id, table, from, to, match_type, proto) in SET_RULES {
        let s = set(sets, id);
        if s.entries.is_empty() {
            continue;
        }
        let p = if proto.is_empty() {
            String::new()
        } else {
            format!(" -p {proto}")
        };
        let rule = format!(
            "-A {from}{p} -m comment --comment {} -m set --match-set {} {match_type} -j {to}",
            set_comment(id),
            s.name
        );
        if table == "filter" {
            filter.push(rule)
        } else {
            nat.push(rule)
        }
    }

    let cip = set(sets, SetId::ClusterIp);
    if !cip.entries.is_empty() {
        let head = format!(
            "-A KUBE-SERVICES -m comment --comment {} -m set --match-set {}",
            set_comment(SetId::ClusterIp),
            cip.name
        );
        if inp.masquerade_all {
            nat.push(format!("{head} dst,dst -j KUBE-MARK-MASQ"));
        } else if let Some(not_local) = &inp.if_not_local {
            nat.push(format!(
                "{head} dst,dst {} -j KUBE-MARK-MASQ",
                not_local.join(" ")
            ));
        } else {
            // Node-originated traffic gets a VIP as source (the VIPs sit on kube-ipvs0).
            nat.push(format!("{head} src,dst -j KUBE-MARK-MASQ"));
        }
    }

    for (id, masq) in [(SetId::ExternalIp, true), (SetId::ExternalIpLocal, false)] {
        let s = set(sets, id);
        if s.entries.is_empty() {
            continue;
        }
        let head = format!(
            "-A KUBE-SERVICES -m comment --comment {} -m set --match-set {} dst,dst",
            set_comment(id),
            s.name
        );
        if masq {
            nat.push(format!("{head} -j KUBE-MARK-MASQ"));
        }
        nat.push(format!(
            "{head} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT"
        ));
        nat.push(format!("{head} -m addrtype --dst-type LOCAL -j ACCEPT"));
    }

    nat.push("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT".into());
    nat.push("-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ".into());
    filter.push("-A KUBE-SOURCE-RANGES-FIREWALL -j DROP".into());
    for (ip, proto, port) in &inp.lb_no_node_access {
        filter.push(format!("-A KUBE-IPVS-OUT-FILTER -s {ip} -m ipvs --vaddr {ip} --vproto {proto} --vport {port} -j DROP"));
    }
    // acceptIPVSTraffic: must stay at the end of KUBE-SERVICES.
    for id in [SetId::ClusterIp, SetId::LoadBalancer] {
        let s = set(sets, id);
        if !s.entries.is_empty() {
            nat.push(format!(
                "-A KUBE-SERVICES -m set --match-set {} dst,dst -j ACCEPT",
                s.name
            ));
        }
    }

    let m = &inp.mark;
    filter.push(format!("-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {m}/{m} -j ACCEPT"));
    filter.push(
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
            .into(),
    );
    let hc = set(sets, SetId::HealthCheckNodePort);
    filter.push(format!(
        "-A KUBE-NODE-PORT -m comment --comment {} -m set --match-set {} dst -j ACCEPT",
        set_comment(SetId::HealthCheckNodePort),
        hc.name
    ));
    for id in [
        SetId::LoadBalancer,
        SetId::ClusterIp,
        SetId::ExternalIp,
        SetId::ExternalIpLocal,
    ] {
        filter.push(format!(
            "-A KUBE-IPVS-FILTER -m set --match-set {} dst,dst -j RETURN",
            set(sets, id).name
        ));
    }
    filter.push(format!(
        "-A KUBE-IPVS-FILTER -m set --match-set {} dst -j RETURN",
        hc.name
    ));
    filter.push(format!(
        "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set {} dst -j REJECT",
        set(sets, SetId::IpvsIps).name
    ));

    nat.push(format!(
        "-A KUBE-POSTROUTING -m mark ! --mark {m}/{m} -j RETURN"
    ));
    nat.push(format!("-A KUBE-POSTROUTING -j MARK --xor-mark {m}"));
    nat.push(
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
            .into(),
    );
    nat.push(format!("-A KUBE-MARK-MASQ -j MARK --or-mark {m}"));

    let mut out = String::new();
    for (table, rules) in [("filter", &filter), ("nat", &nat)] {
        let _ = writeln!(out, "*{table}");
        for (t, chain) in CHAINS {
            if t == table {
                let _ = writeln!(out, ":{chain} - [0:0]");
            }
        }
        for r in rules.iter() {
            out.push_str(r);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    out
}
