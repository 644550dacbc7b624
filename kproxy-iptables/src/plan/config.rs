//! [`PlanConfig`]: the parts of a `KubeProxyConfiguration` the iptables planner uses,
//! resolved for one IP family.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use kproxy_core::KubeProxyConfiguration;
use kproxy_core::config::LocalMode;
use kproxy_core::model::IpFamily;
use kproxy_core::service_map::NodeFacts;

use crate::error::{Error, Result};

/// How local (pod) traffic is told apart, upstream `pkg/proxy/util/localdetector.go`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalDetector {
    /// No detector for this family ("not implemented"): rules needing it are skipped.
    None,
    /// Sources inside this CIDR are local (`ClusterCIDR`, or a resolved `NodeCIDR`).
    Cidr(IpNet),
    /// `NodeCIDR`: the node's first pod CIDR of the family, resolved at plan time.
    NodeCidr,
    /// Packets arriving on this bridge are local (`BridgeInterface`).
    Bridge(String),
    /// Packets arriving on interfaces with this prefix are local (`InterfaceNamePrefix`).
    InterfacePrefix(String),
}

impl LocalDetector {
    /// Resolves `NodeCidr` against the node's pod CIDRs.
    pub fn resolve(&self, node: &NodeFacts, family: IpFamily) -> LocalDetector {
        match self {
            LocalDetector::NodeCidr => node
                .pod_cidrs
                .iter()
                .find(|c| IpFamily::of(&c.addr()) == family)
                .map_or(LocalDetector::None, |c| LocalDetector::Cidr(c.trunc())),
            other => other.clone(),
        }
    }

    /// The match for "local" traffic (upstream `IfLocal`), `None` when not implemented.
    pub fn if_local(&self) -> Option<String> {
        match self {
            LocalDetector::Cidr(c) => Some(format!("-s {c}")),
            LocalDetector::Bridge(b) => Some(format!("-i {b}")),
            LocalDetector::InterfacePrefix(p) => Some(format!("-i {p}+")),
            LocalDetector::None | LocalDetector::NodeCidr => None,
        }
    }

    /// The match for "not local" traffic (upstream `IfNotLocal`).
    pub fn if_not_local(&self) -> Option<String> {
        self.if_local().map(|m| format!("! {m}"))
    }
}

/// `nodePortAddresses` for one family (upstream `proxyutil.NodePortAddresses`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// No CIDR of this family was given: node ports answer on every local address.
    All,
    /// Node ports answer on local addresses inside these CIDRs.
    Cidrs(Vec<IpNet>),
    /// `["primary"]`: the node's primary IPs, resolved at plan time.
    Primary,
}

impl NodePortAddresses {
    /// The local addresses node ports answer on, for a non-`All` setting.
    pub fn node_ips(&self, node: &NodeFacts, family: IpFamily) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = match self {
            NodePortAddresses::All => Vec::new(),
            NodePortAddresses::Primary => node.node_ip(family).into_iter().collect(),
            NodePortAddresses::Cidrs(cidrs) => node
                .local_addresses
                .iter()
                .copied()
                .filter(|ip| IpFamily::of(ip) == family && cidrs.iter().any(|c| c.contains(ip)))
                .collect(),
        };
        ips.sort_unstable();
        ips.dedup();
        ips
    }
}

/// Everything the planner needs besides the map and the node, for one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanConfig {
    /// `1 << masqueradeBit`.
    pub masquerade_mark: u32,
    /// `masqueradeAll`.
    pub masquerade_all: bool,
    /// Node ports answer on 127.0.0.0/8 (IPv4 only, and only when `nodePortAddresses`
    /// covers IPv4 loopback).
    pub localhost_node_ports: bool,
    /// The local-traffic detector.
    pub local_detector: LocalDetector,
    /// `nodePortAddresses`.
    pub node_port_addresses: NodePortAddresses,
    /// `nf_conntrack_tcp_be_liberal` is set: no INVALID-drop rule.
    pub tcp_be_liberal: bool,
    /// `MASQUERADE --random-fully` is supported.
    pub random_fully: bool,
    /// The nfacct counters exist: add `-m nfacct` to the INVALID drop and the localhost
    /// node port rules, as upstream does when they do.
    pub nfacct: bool,
    /// Split a restore whose per-service chains exceed this many lines into batches
    /// (see [`Plan::batches`](super::Plan::batches)). The proxier sets it for
    /// iptables-nft, whose restore time grows faster than linearly with its input;
    /// `None` (the default) writes one restore, as upstream does.
    pub restore_batch_lines: Option<usize>,
}

impl PlanConfig {
    /// The upstream-default config for `family` (what `KubeProxyConfiguration::default()`
    /// gives), with no local detector.
    pub fn defaults(family: IpFamily) -> Self {
        PlanConfig {
            masquerade_mark: 1 << 14,
            masquerade_all: false,
            localhost_node_ports: family == IpFamily::V4,
            local_detector: LocalDetector::None,
            node_port_addresses: NodePortAddresses::All,
            tcp_be_liberal: false,
            random_fully: false,
            nfacct: false,
            restore_batch_lines: None,
        }
    }

    /// Resolves a `KubeProxyConfiguration` for `family`. `random_fully` and `nfacct` start
    /// false; the proxier sets them from what the host supports.
    pub fn from_config(cfg: &KubeProxyConfiguration, family: IpFamily) -> Result<Self> {
        let bit = cfg.iptables.masquerade_bit.unwrap_or(14);
        if !(0..=31).contains(&bit) {
            return Err(Error::Config {
                field: "iptables.masqueradeBit",
                reason: format!("{bit} is not in [0, 31]"),
            });
        }
        let local_detector = match cfg.resolved_local_mode() {
            LocalMode::ClusterCIDR | LocalMode::Unset => cfg
                .cluster_cidrs()
                .into_iter()
                .find(|c| IpFamily::of(&c.addr()) == family)
                .map_or(LocalDetector::None, LocalDetector::Cidr),
            LocalMode::NodeCIDR => LocalDetector::NodeCidr,
            LocalMode::BridgeInterface => {
                LocalDetector::Bridge(cfg.detect_local.bridge_interface.clone())
            }
            LocalMode::InterfaceNamePrefix => {
                LocalDetector::InterfacePrefix(cfg.detect_local.interface_name_prefix.clone())
            }
        };
        let (node_port_addresses, covers_v4_loopback) =
            parse_node_port_addresses(&cfg.node_port_addresses, family)?;
        Ok(PlanConfig {
            masquerade_mark: 1u32 << bit,
            masquerade_all: cfg.effective_masquerade_all(),
            localhost_node_ports: family == IpFamily::V4
                && cfg.iptables.localhost_node_ports.unwrap_or(true)
                && covers_v4_loopback,
            local_detector,
            node_port_addresses,
            tcp_be_liberal: cfg.conntrack.tcp_be_liberal,
            random_fully: false,
            nfacct: false,
            restore_batch_lines: None,
        })
    }

    /// The mark as upstream prints it (`%#08x`: `0x00004000` for bit 14).
    pub fn mark(&self) -> String {
        format!("{:#010x}", self.masquerade_mark)
    }
}

/// Upstream `NewNodePortAddresses`: the CIDRs of `family`, or all addresses when there
/// are none; and whether IPv4 loopback is covered.
fn parse_node_port_addresses(
    list: &[String],
    family: IpFamily,
) -> Result<(NodePortAddresses, bool)> {
    if list.len() == 1 && list[0] == "primary" {
        return Ok((NodePortAddresses::Primary, false));
    }
    let mut cidrs = Vec::new();
    let mut covers_loopback = false;
    for s in list {
        let net: IpNet = s.trim().parse().map_err(|e| Error::Config {
            field: "nodePortAddresses",
            reason: format!("{s:?} is not a CIDR: {e}"),
        })?;
        if net.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)) {
            covers_loopback = true;
        }
        if IpFamily::of(&net.addr()) == family {
            cidrs.push(net.trunc());
        }
    }
    if cidrs.is_empty() {
        return Ok((NodePortAddresses::All, true));
    }
    Ok((NodePortAddresses::Cidrs(cidrs), covers_loopback))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_gives_upstream_defaults() {
        let cfg = KubeProxyConfiguration::default();
        let pc = PlanConfig::from_config(&cfg, IpFamily::V4).unwrap();
        assert_eq!(pc.mark(), "0x00004000");
        assert!(pc.localhost_node_ports);
        assert_eq!(pc.node_port_addresses, NodePortAddresses::All);
        let v6 = PlanConfig::from_config(&cfg, IpFamily::V6).unwrap();
        assert!(!v6.localhost_node_ports);
    }

    #[test]
    fn node_port_cidrs_without_loopback_disable_localhost_node_ports() {
        let mut cfg = KubeProxyConfiguration {
            node_port_addresses: vec!["192.168.0.0/24".into(), "2001:db8::/64".into()],
            ..Default::default()
        };
        let pc = PlanConfig::from_config(&cfg, IpFamily::V4).unwrap();
        assert!(!pc.localhost_node_ports);
        assert_eq!(
            pc.node_port_addresses,
            NodePortAddresses::Cidrs(vec!["192.168.0.0/24".parse().unwrap()])
        );
        cfg.node_port_addresses = vec!["bogus".into()];
        assert!(PlanConfig::from_config(&cfg, IpFamily::V4).is_err());
    }

    #[test]
    fn detectors_render_upstream_matches() {
        assert_eq!(
            LocalDetector::Bridge("cbr0".into())
                .if_not_local()
                .as_deref(),
            Some("! -i cbr0")
        );
        assert_eq!(
            LocalDetector::InterfacePrefix("veth".into())
                .if_local()
                .as_deref(),
            Some("-i veth+")
        );
        assert_eq!(LocalDetector::None.if_local(), None);
    }
}
