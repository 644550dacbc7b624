//! The pure planner: from a [`ServiceMap`], node facts and the config to the IPVS state
//! one proxier (one IP family) wants: virtual servers with destinations, the addresses
//! on `kube-ipvs0`, the ipsets and the companion iptables rules.
//!
//! No clock, no host reads: the same inputs give the same plan, so tests compare
//! values and `kproxy plan --proxy-mode ipvs` prints exactly what `run` applies.
//! Upstream: `syncProxyRules`, `syncService`, `syncEndpoint` in `pkg/proxy/ipvs/proxier.go`.

mod incremental;
mod ipset;
mod iptables;
mod render;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use kproxy_core::config::LocalMode;
use kproxy_core::model::{IpFamily, Protocol, ServicePortName};
use kproxy_core::{KubeProxyConfiguration, NodeFacts, ServiceMap, ServicePort};

pub use incremental::{IncrementalPlan, PlanDelta};
pub use ipset::{
    IpSet, MAX_SET_NAME, SETS, SetId, SetType, restore_text as ipset_restore_text, set_name,
    update_text as ipset_update_text,
};
pub use iptables::{CHAINS, JumpRule, RuleInputs, jump_rules};
pub use render::render_plan;

use crate::netlink::{
    Destination, IpvsProtocol, SVC_F_PERSISTENT, SVC_F_SCHED2, Service, ServiceKey,
};

/// The dummy interface every service VIP is bound to.
pub const DUMMY_INTERFACE: &str = "kube-ipvs0";

/// Upstream's default scheduler.
pub const DEFAULT_SCHEDULER: &str = "rr";

/// Which address of a service port a virtual server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VsKind {
    /// The cluster IP.
    ClusterIp,
    /// An external IP.
    ExternalIp,
    /// A load-balancer ingress IP.
    LoadBalancer,
    /// A node IP with the node port.
    NodePort,
}

/// One desired virtual server and its destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualServer {
    /// The service port it implements.
    pub owner: ServicePortName,
    /// Which of the port's addresses it serves.
    pub kind: VsKind,
    /// The IPVS service.
    pub service: Service,
    /// Its destinations (weight 1, masquerade), sorted by address.
    pub destinations: Vec<Destination>,
}

/// Everything one family's proxier wants in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The family.
    pub family: IpFamily,
    /// Virtual servers by key.
    pub services: BTreeMap<ServiceKey, VirtualServer>,
    /// Addresses to bind to `kube-ipvs0` (/32 or /128).
    pub addresses: BTreeSet<IpAddr>,
    /// Every ipset, in upstream order, with its entries (empty sets included: the
    /// iptables rules reference them).
    pub ipsets: Vec<IpSet>,
    /// The `iptables-restore --noflush` input for the companion chains.
    pub iptables: String,
    /// Jump rules from the built-in chains.
    pub jumps: Vec<JumpRule>,
}

impl Plan {
    /// The `ipset restore -exist` input; see [`ipset_restore_text`].
    pub fn ipset_restore(&self, existing: Option<&BTreeSet<String>>) -> String {
        ipset::restore_text(&self.ipsets, self.family, existing)
    }

    /// The set with id `id`.
    pub fn ipset(&self, id: SetId) -> &IpSet {
        self.ipsets
            .iter()
            .find(|s| s.id == id)
            .expect("plan builds every set")
    }
}

/// The endpoints a virtual server gets: upstream `syncEndpoint`. With a Local policy the
/// local endpoints, but the cluster ones when there are no local ones (PR #97081: IPVS
/// falls back instead of dropping, unlike iptables); otherwise the cluster endpoints.
pub fn ipvs_endpoints(sp: &ServicePort, local_policy: bool) -> &[SocketAddr] {
    if local_policy && !sp.selection.local.is_empty() {
        &sp.selection.local
    } else {
        &sp.selection.cluster
    }
}

/// The node addresses that get node-port virtual servers: with `nodePortAddresses`
/// empty every local address of the family, else those inside one of its CIDRs
/// (`primary`: the node IP); loopback and IPv6 link-local never (upstream's
/// `isValidForSet`; IPVS cannot serve loopback without `route_localnet`, and a
/// link-local address is ambiguous without its interface). `node.local_addresses` must not include kube-ipvs0's addresses.
pub fn node_port_ips(
    node: &NodeFacts,
    cfg: &KubeProxyConfiguration,
    family: IpFamily,
) -> Vec<IpAddr> {
    let npa = &cfg.node_port_addresses;
    let mut ips: Vec<IpAddr> = if npa.len() == 1 && npa[0] == "primary" {
        node.node_ip(family).into_iter().collect()
    } else {
        let cidrs: Vec<IpNet> = npa.iter().filter_map(|c| c.trim().parse().ok()).collect();
        node.local_addresses
            .iter()
            .copied()
            .filter(|ip| npa.is_empty() || cidrs.iter().any(|c| c.contains(ip)))
            .collect()
    };
    ips.retain(|ip| {
        IpFamily::of(ip) == family
            && !ip.is_loopback()
            && !ip.is_unspecified()
            && !is_ipv6_link_local(ip)
    });
    ips.sort_unstable();
    ips.dedup();
    ips
}

/// The local detector's "not local" match for `family` (`pkg/proxy/util/localdetector.go`),
/// `None` when the mode has nothing for this family.
pub fn if_not_local(
    node: &NodeFacts,
    cfg: &KubeProxyConfiguration,
    family: IpFamily,
) -> Option<Vec<String>> {
    let of_family = |n: &&IpNet| IpFamily::of(&n.addr()) == family;
    let strs = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    match cfg.resolved_local_mode() {
        LocalMode::NodeCIDR => node
            .pod_cidrs
            .iter()
            .find(of_family)
            .map(|c| strs(&["!", "-s", &c.to_string()])),
        LocalMode::BridgeInterface if !cfg.detect_local.bridge_interface.is_empty() => {
            Some(strs(&["!", "-i", &cfg.detect_local.bridge_interface]))
        }
        LocalMode::InterfaceNamePrefix if !cfg.detect_local.interface_name_prefix.is_empty() => {
            Some(strs(&[
                "!",
                "-i",
                &format!("{}+", cfg.detect_local.interface_name_prefix),
            ]))
        }
        LocalMode::ClusterCIDR | LocalMode::Unset => cfg
            .cluster_cidrs()
            .iter()
            .find(of_family)
            .map(|c| strs(&["!", "-s", &c.to_string()])),
        _ => None,
    }
}

/// The masquerade mark as upstream prints it (`%#08x` of `1 << masqueradeBit`):
/// `0x00004000` for the default bit 14. IPVS mode uses `iptables.masqueradeBit`.
pub fn masquerade_mark(cfg: &KubeProxyConfiguration) -> String {
    let bit = cfg.iptables.masquerade_bit.unwrap_or(14).clamp(0, 31);
    format!("0x{:08x}", 1u32 << bit)
}

fn entry_ip_port(ip: IpAddr, proto: Protocol, port: u16) -> String {
    format!("{ip},{}:{port}", proto.as_lower())
}

/// What one service port contributes to a [`Plan`]: its virtual servers, the
/// addresses it binds, its ipset entries and its load balancers the node may not reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortPlan {
    /// Virtual servers, in planning order.
    pub services: Vec<VirtualServer>,
    /// Addresses to bind to kube-ipvs0.
    pub addresses: Vec<IpAddr>,
    /// Set entries (the `KUBE-IPVS-IPS` entries come from the addresses, not from here).
    pub entries: Vec<(SetId, String)>,
    /// (LB IP, protocol, port) with source ranges that leave the node out.
    pub lb_no_node_access: Vec<(IpAddr, &'static str, u16)>,
}

/// The per-sync inputs of [`port_plan`] that do not depend on the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanContext {
    family: IpFamily,
    scheduler: String,
    np_ips: Vec<IpAddr>,
    node_ip: Option<IpAddr>,
    local_addresses: Vec<IpAddr>,
    inputs: RuleInputs,
}

impl PlanContext {
    /// The context for `family` on `node` (see [`plan`] for `node.local_addresses`).
    pub fn new(node: &NodeFacts, cfg: &KubeProxyConfiguration, family: IpFamily) -> Self {
        let scheduler = if cfg.ipvs.scheduler.is_empty() {
            DEFAULT_SCHEDULER
        } else {
            cfg.ipvs.scheduler.as_str()
        };
        PlanContext {
            family,
            scheduler: scheduler.to_owned(),
            np_ips: node_port_ips(node, cfg, family),
            node_ip: node.node_ip(family),
            local_addresses: node.local_addresses.clone(),
            inputs: RuleInputs {
                family,
                masquerade_all: cfg.iptables.masquerade_all,
                mark: masquerade_mark(cfg),
                if_not_local: if_not_local(node, cfg, family),
                lb_no_node_access: Vec::new(),
            },
        }
    }

    /// The family planned for.
    pub fn family(&self) -> IpFamily {
        self.family
    }
}

/// What service port `sp` contributes (upstream's per-service body of `syncProxyRules`).
pub fn port_plan(sp: &ServicePort, cx: &PlanContext) -> PortPlan {
    let mut out = PortPlan::default();
    let proto = sp.name.protocol;
    let mut base = Service::new(
        IpvsProtocol::from(proto),
        sp.cluster_ip,
        sp.port,
        &cx.scheduler,
    );
    if let Some(aff) = sp.session_affinity {
        base.flags |= SVC_F_PERSISTENT;
        base.timeout = aff.timeout_seconds;
    }
    if cx.scheduler == "mh" {
        base.flags |= SVC_F_SCHED2; // upstream FlagSourceHash (mh-port)
    }
    let mut vs = |kind: VsKind, ip: IpAddr, port: u16, eps: &[SocketAddr]| {
        let mut service = base.clone();
        service.address = ip;
        service.port = port;
        let destinations = eps.iter().map(|e| Destination::new(*e)).collect();
        out.services.push(VirtualServer {
            owner: sp.name.clone(),
            kind,
            service,
            destinations,
        });
    };
    let mut entries = Vec::new();
    let mut addresses = Vec::new();
    let mut lb_no_node_access = Vec::new();
    let mut add = |id: SetId, e: String| entries.push((id, e));

    // ClusterIP: always bound to kube-ipvs0.
    vs(
        VsKind::ClusterIp,
        sp.cluster_ip,
        sp.port,
        ipvs_endpoints(sp, sp.internal_policy_local),
    );
    addresses.push(sp.cluster_ip);
    add(
        SetId::ClusterIp,
        entry_ip_port(sp.cluster_ip, proto, sp.port),
    );
    for ep in sp.endpoints.iter().filter(|e| e.is_local) {
        let e = ep.addr;
        add(
            SetId::LoopBack,
            format!("{},{}:{},{}", e.ip(), proto.as_lower(), e.port(), e.ip()),
        );
    }

    let ext_eps = ipvs_endpoints(sp, sp.external_policy_local);
    for ip in &sp.external_ips {
        let id = if sp.external_policy_local {
            SetId::ExternalIpLocal
        } else {
            SetId::ExternalIp
        };
        add(id, entry_ip_port(*ip, proto, sp.port));
        vs(VsKind::ExternalIp, *ip, sp.port, ext_eps);
        if !cx.local_addresses.contains(ip) {
            addresses.push(*ip);
        }
    }
    for ip in &sp.load_balancer_ips {
        let entry = entry_ip_port(*ip, proto, sp.port);
        add(SetId::LoadBalancer, entry.clone());
        if sp.external_policy_local {
            add(SetId::LoadBalancerLocal, entry.clone());
        }
        if !sp.load_balancer_source_ranges.is_empty() {
            add(SetId::LoadBalancerFw, entry);
            let mut allow_from_node = false;
            for cidr in &sp.load_balancer_source_ranges {
                add(
                    SetId::LoadBalancerSourceCidr,
                    format!("{ip},{}:{},{cidr}", proto.as_lower(), sp.port),
                );
                allow_from_node |= cx.node_ip.is_some_and(|n| cidr.contains(&n));
            }
            if allow_from_node {
                add(
                    SetId::LoadBalancerSourceIp,
                    format!("{ip},{}:{},{ip}", proto.as_lower(), sp.port),
                );
            } else {
                lb_no_node_access.push((*ip, proto.as_lower(), sp.port));
            }
        }
        vs(VsKind::LoadBalancer, *ip, sp.port, ext_eps);
        if !cx.local_addresses.contains(ip) {
            addresses.push(*ip);
        }
    }
    if let Some(np) = sp.node_port {
        let local = sp.external_policy_local;
        match proto {
            Protocol::Tcp => add(
                if local {
                    SetId::NodePortLocalTcp
                } else {
                    SetId::NodePortTcp
                },
                np.to_string(),
            ),
            Protocol::Udp => add(
                if local {
                    SetId::NodePortLocalUdp
                } else {
                    SetId::NodePortUdp
                },
                np.to_string(),
            ),
            Protocol::Sctp => {
                for ip in &cx.np_ips {
                    let id = if local {
                        SetId::NodePortLocalSctpHash
                    } else {
                        SetId::NodePortSctpHash
                    };
                    add(id, entry_ip_port(*ip, proto, np));
                }
            }
        }
        for ip in &cx.np_ips {
            vs(VsKind::NodePort, *ip, np, ext_eps);
        }
    }
    if let Some(hc) = sp.health_check_node_port {
        add(SetId::HealthCheckNodePort, hc.to_string());
    }
    out.entries = entries;
    out.addresses = addresses;
    out.lb_no_node_access = lb_no_node_access;
    out
}

/// Plans one family. `node.local_addresses` are the addresses on interfaces other than
/// kube-ipvs0: external and LB IPs already there are not bound again (upstream's
/// `alreadyBoundAddrs`), and node ports use them (see [`node_port_ips`]).
pub fn plan(
    map: &ServiceMap,
    node: &NodeFacts,
    cfg: &KubeProxyConfiguration,
    family: IpFamily,
) -> Plan {
    let cx = PlanContext::new(node, cfg, family);
    let mut sets: BTreeMap<SetId, BTreeSet<String>> =
        SETS.iter().map(|s| (s.0, BTreeSet::new())).collect();
    let mut services = BTreeMap::new();
    let mut addresses = BTreeSet::new();
    let mut lb_no_node_access = Vec::new();
    for sp in map.family(family).values() {
        let pp = port_plan(sp, &cx);
        for vs in pp.services {
            services.insert(vs.service.key(), vs);
        }
        addresses.extend(pp.addresses);
        for (id, e) in pp.entries {
            sets.entry(id).or_default().insert(e);
        }
        lb_no_node_access.extend(pp.lb_no_node_access);
    }
    for ip in &addresses {
        sets.entry(SetId::IpvsIps)
            .or_default()
            .insert(ip.to_string());
    }
    let ipsets: Vec<IpSet> = SETS
        .iter()
        .map(|(id, _, set_type, _)| IpSet {
            id: *id,
            name: set_name(*id, family),
            set_type: *set_type,
            entries: sets.remove(id).unwrap_or_default(),
        })
        .collect();
    lb_no_node_access.sort_unstable();
    lb_no_node_access.dedup();
    let mut inputs = cx.inputs.clone();
    inputs.lb_no_node_access = lb_no_node_access;
    let iptables = iptables::restore_text(&ipsets, &inputs);
    Plan {
        family,
        services,
        addresses,
        ipsets,
        iptables,
        jumps: jump_rules(),
    }
}

/// `fe80::/10`: the interfaces' own IPv6 addresses, which the daemon now reads too.
fn is_ipv6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}
