//! Rules in the built-in chains that lead into ours, and the rules of the fixed chains
//! (upstream `iptablesJumpChains`, `iptablesKubeletJumpChains` and the start and end of
//! `syncProxyRules`).

use kproxy_core::model::IpFamily;
use kproxy_core::service_map::NodeFacts;

use super::Table;
use super::config::{NodePortAddresses, PlanConfig};
use crate::chains::{
    KUBE_EXTERNAL_SERVICES, KUBE_FIREWALL, KUBE_FORWARD, KUBE_MARK_MASQ, KUBE_NODEPORTS,
    KUBE_POSTROUTING, KUBE_PROXY_FIREWALL, KUBE_SERVICES,
};
use crate::nfacct::CT_STATE_INVALID_DROPPED;

/// A rule in a built-in chain that jumps to one of ours. Upstream ensures each with
/// `iptables -C` / `iptables -I <chain>` (prepend) on full syncs, in this order, so the
/// last one ends up first in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JumpRule {
    /// Table.
    pub table: Table,
    /// The built-in chain (`INPUT`, `PREROUTING`, ...).
    pub from: &'static str,
    /// Our chain.
    pub to: &'static str,
    /// Its comment; empty for the kubelet-owned KUBE-FIREWALL jumps.
    pub comment: &'static str,
    /// Whether the rule matches `-m conntrack --ctstate NEW` only.
    pub new_only: bool,
}

impl JumpRule {
    /// The rule as iptables arguments (after `-I <from>`), unquoted.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        if self.new_only {
            a.extend(["-m", "conntrack", "--ctstate", "NEW"].map(String::from));
        }
        if !self.comment.is_empty() {
            a.extend([
                "-m".into(),
                "comment".into(),
                "--comment".into(),
                self.comment.to_owned(),
            ]);
        }
        a.extend(["-j".into(), self.to.to_owned()]);
        a
    }

    /// The rule spec as iptables-restore text (comment quoted).
    pub fn spec(&self) -> String {
        let mut s = String::new();
        if self.new_only {
            s.push_str("-m conntrack --ctstate NEW ");
        }
        if !self.comment.is_empty() {
            s.push_str(&format!("-m comment --comment \"{}\" ", self.comment));
        }
        s.push_str(&format!("-j {}", self.to));
        s
    }
}

const fn jump(
    table: Table,
    to: &'static str,
    from: &'static str,
    comment: &'static str,
    new_only: bool,
) -> JumpRule {
    JumpRule {
        table,
        from,
        to,
        comment,
        new_only,
    }
}

/// The jump rules kube-proxy owns, in upstream's order.
pub const JUMP_RULES: [JumpRule; 12] = [
    jump(
        Table::Filter,
        KUBE_EXTERNAL_SERVICES,
        "INPUT",
        "kubernetes externally-visible service portals",
        true,
    ),
    jump(
        Table::Filter,
        KUBE_EXTERNAL_SERVICES,
        "FORWARD",
        "kubernetes externally-visible service portals",
        true,
    ),
    jump(
        Table::Filter,
        KUBE_NODEPORTS,
        "INPUT",
        "kubernetes health check service ports",
        false,
    ),
    jump(
        Table::Filter,
        KUBE_SERVICES,
        "FORWARD",
        "kubernetes service portals",
        true,
    ),
    jump(
        Table::Filter,
        KUBE_SERVICES,
        "OUTPUT",
        "kubernetes service portals",
        true,
    ),
    jump(
        Table::Filter,
        KUBE_FORWARD,
        "FORWARD",
        "kubernetes forwarding rules",
        false,
    ),
    jump(
        Table::Filter,
        KUBE_PROXY_FIREWALL,
        "INPUT",
        "kubernetes load balancer firewall",
        true,
    ),
    jump(
        Table::Filter,
        KUBE_PROXY_FIREWALL,
        "OUTPUT",
        "kubernetes load balancer firewall",
        true,
    ),
    jump(
        Table::Filter,
        KUBE_PROXY_FIREWALL,
        "FORWARD",
        "kubernetes load balancer firewall",
        true,
    ),
    jump(
        Table::Nat,
        KUBE_SERVICES,
        "OUTPUT",
        "kubernetes service portals",
        false,
    ),
    jump(
        Table::Nat,
        KUBE_SERVICES,
        "PREROUTING",
        "kubernetes service portals",
        false,
    ),
    jump(
        Table::Nat,
        KUBE_POSTROUTING,
        "POSTROUTING",
        "kubernetes postrouting rules",
        false,
    ),
];

/// Duplicates of kubelet's jumps to KUBE-FIREWALL: ensured, never removed by cleanup.
pub const KUBELET_JUMP_RULES: [JumpRule; 2] = [
    jump(Table::Filter, KUBE_FIREWALL, "INPUT", "", false),
    jump(Table::Filter, KUBE_FIREWALL, "OUTPUT", "", false),
];

/// The rules of the fixed chains, which depend only on the config and the node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GlobalRules {
    /// filter rules written before the services' (KUBE-FIREWALL).
    pub filter_head: Vec<(&'static str, String)>,
    /// filter rules written after the services' (KUBE-FORWARD).
    pub filter_tail: Vec<(&'static str, String)>,
    /// nat rules written before the services' (KUBE-POSTROUTING, KUBE-MARK-MASQ).
    pub nat_head: Vec<(&'static str, String)>,
    /// nat rules written last (the jumps to KUBE-NODEPORTS).
    pub nat_tail: Vec<(&'static str, String)>,
    /// Whether KUBE-FIREWALL is written (IPv4 with localhost node ports).
    pub kube_firewall: bool,
}

impl GlobalRules {
    /// Number of rules per table: (filter, nat).
    pub fn counts(&self) -> (usize, usize) {
        (
            self.filter_head.len() + self.filter_tail.len(),
            self.nat_head.len() + self.nat_tail.len(),
        )
    }
}

/// The fixed chains' rules for `family`.
pub fn global_rules(cfg: &PlanConfig, node: &NodeFacts, family: IpFamily) -> GlobalRules {
    let mark = cfg.mark();
    let mut g = GlobalRules::default();
    g.nat_head.push((
        KUBE_POSTROUTING,
        format!("-m mark ! --mark {mark}/{mark} -j RETURN"),
    ));
    g.nat_head
        .push((KUBE_POSTROUTING, format!("-j MARK --xor-mark {mark}")));
    let random_fully = if cfg.random_fully {
        " --random-fully"
    } else {
        ""
    };
    g.nat_head.push((
        KUBE_POSTROUTING,
        format!("-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE{random_fully}"),
    ));
    g.nat_head
        .push((KUBE_MARK_MASQ, format!("-j MARK --or-mark {mark}")));
    if family == IpFamily::V4 && cfg.localhost_node_ports {
        g.kube_firewall = true;
        g.filter_head.push((
            KUBE_FIREWALL,
            "-m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP".into(),
        ));
    }
    let comment = "-m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\"";
    match &cfg.node_port_addresses {
        NodePortAddresses::All => {
            let not_loopback = match family {
                IpFamily::V6 => " ! -d ::1/128",
                IpFamily::V4 if !cfg.localhost_node_ports => " ! -d 127.0.0.0/8",
                IpFamily::V4 => "",
            };
            g.nat_tail.push((
                KUBE_SERVICES,
                format!("{comment} -m addrtype --dst-type LOCAL{not_loopback} -j {KUBE_NODEPORTS}"),
            ));
        }
        other => {
            for ip in other.node_ips(node, family) {
                if ip.is_loopback() && (family == IpFamily::V6 || !cfg.localhost_node_ports) {
                    continue;
                }
                g.nat_tail.push((
                    KUBE_SERVICES,
                    format!("{comment} -d {ip} -j {KUBE_NODEPORTS}"),
                ));
            }
        }
    }
    if !cfg.tcp_be_liberal {
        let nfacct = if cfg.nfacct {
            format!(" -m nfacct --nfacct-name {CT_STATE_INVALID_DROPPED}")
        } else {
            String::new()
        };
        g.filter_tail.push((
            KUBE_FORWARD,
            format!("-m conntrack --ctstate INVALID{nfacct} -j DROP"),
        ));
    }
    g.filter_tail.push((
        KUBE_FORWARD,
        format!("-m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT"),
    ));
    g.filter_tail.push((
        KUBE_FORWARD,
        "-m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into(),
    ));
    g
}
