//! The planner: from a [`ServiceMap`], the proxy ports already allocated and the node's
//! facts to the listeners wanted and the `iptables-restore --noflush` text, as upstream's
//! userspace mode lays them out (`pkg/proxy/userspace/proxier.go`: `iptablesInit`,
//! `openOnePortal`, `openNodePort` and the `iptables*Args` builders).
//!
//! Chains and jumps:
//!
//! | table | chain | jumped from | position |
//! |---|---|---|---|
//! | nat | `KUBE-PORTALS-CONTAINER` | PREROUTING | first |
//! | nat | `KUBE-PORTALS-HOST` | OUTPUT | first |
//! | nat | `KUBE-NODEPORT-CONTAINER` | PREROUTING, `--dst-type LOCAL` | last |
//! | nat | `KUBE-NODEPORT-HOST` | OUTPUT, `--dst-type LOCAL` | last |
//! | filter | `KUBE-NODEPORT-NON-LOCAL` | INPUT | first |
//!
//! Every restore declares the five chains (which flushes them under `--noflush`) and
//! refills them, so removed ports lose their rules in the same transaction. The jumps
//! are added only when [`Jumps`] says they are missing, since `--noflush` would
//! otherwise duplicate them.
//!
//! Pure: the same inputs give the same bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use kproxy_core::model::{IpFamily, Protocol, ServicePortName};
use kproxy_core::{KubeProxyConfiguration, NodeFacts, ServiceMap, ServicePort};

use crate::ports::PortRange;

/// nat chain for traffic from containers (PREROUTING) to virtual IPs.
pub const CONTAINER_PORTAL_CHAIN: &str = "KUBE-PORTALS-CONTAINER";
/// nat chain for traffic from the host (OUTPUT) to virtual IPs.
pub const HOST_PORTAL_CHAIN: &str = "KUBE-PORTALS-HOST";
/// nat chain for traffic from containers to node ports.
pub const CONTAINER_NODEPORT_CHAIN: &str = "KUBE-NODEPORT-CONTAINER";
/// nat chain for traffic from the host to node ports.
pub const HOST_NODEPORT_CHAIN: &str = "KUBE-NODEPORT-HOST";
/// filter chain accepting new connections to proxy ports of node ports.
pub const NON_LOCAL_NODEPORT_CHAIN: &str = "KUBE-NODEPORT-NON-LOCAL";

const PORTALS_COMMENT: &str = "handle ClusterIPs; NOTE: this must be before the NodePort rules";
const NODEPORTS_COMMENT: &str =
    "handle service NodePorts; NOTE: this must be the last rule in the chain";
const NON_LOCAL_COMMENT: &str = "Ensure that non-local NodePort traffic can flow";

/// One jump from a built-in chain into ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jump {
    /// `nat` or `filter`.
    pub table: &'static str,
    /// The built-in chain.
    pub from: &'static str,
    /// Our chain.
    pub to: &'static str,
    /// Inserted first (`-I … 1`) rather than appended.
    pub first: bool,
    /// Matches before the comment (`-m addrtype --dst-type LOCAL` for node ports).
    pub matches: &'static str,
    /// The rule's comment.
    pub comment: &'static str,
}

impl Jump {
    /// The rule spec, without `-A`/`-I`/`-D` and chain.
    pub fn spec(&self) -> String {
        format!(
            "{}-m comment --comment \"{}\" -j {}",
            self.matches, self.comment, self.to
        )
    }
}

/// The five jumps, in upstream's `iptablesInit` order.
pub const JUMPS: [Jump; 5] = [
    Jump {
        table: "nat",
        from: "PREROUTING",
        to: CONTAINER_PORTAL_CHAIN,
        first: true,
        matches: "",
        comment: PORTALS_COMMENT,
    },
    Jump {
        table: "nat",
        from: "OUTPUT",
        to: HOST_PORTAL_CHAIN,
        first: true,
        matches: "",
        comment: PORTALS_COMMENT,
    },
    Jump {
        table: "nat",
        from: "PREROUTING",
        to: CONTAINER_NODEPORT_CHAIN,
        first: false,
        matches: "-m addrtype --dst-type LOCAL ",
        comment: NODEPORTS_COMMENT,
    },
    Jump {
        table: "nat",
        from: "OUTPUT",
        to: HOST_NODEPORT_CHAIN,
        first: false,
        matches: "-m addrtype --dst-type LOCAL ",
        comment: NODEPORTS_COMMENT,
    },
    Jump {
        table: "filter",
        from: "INPUT",
        to: NON_LOCAL_NODEPORT_CHAIN,
        first: true,
        matches: "",
        comment: NON_LOCAL_COMMENT,
    },
];

/// Which of [`JUMPS`] exist already, read from `iptables-save`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Jumps {
    /// `present[i]`: `JUMPS[i]` is installed (at least once).
    pub present: [bool; 5],
}

impl Jumps {
    /// None installed: a clean host (what `kproxy plan` shows).
    pub fn none() -> Self {
        Jumps::default()
    }

    /// Reads `iptables-save` output of the nat and filter tables.
    pub fn from_saved(nat: &str, filter: &str) -> Self {
        let mut j = Jumps::default();
        for (i, jump) in JUMPS.iter().enumerate() {
            let text = if jump.table == "nat" { nat } else { filter };
            let head = format!("-A {} ", jump.from);
            let tail = format!("-j {}", jump.to);
            j.present[i] = text
                .lines()
                .any(|l| l.starts_with(&head) && l.trim_end().ends_with(&tail));
        }
        j
    }
}

/// Where the proxy listens, per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenConfig {
    /// The proxy sockets' address: `bindAddress` if it is of this family, else the
    /// unspecified address of the family.
    pub listen_ip: IpAddr,
    /// The address host-originated traffic is DNATed to when `listen_ip` is unspecified:
    /// the node IP of the family (upstream `ChooseHostInterface`), else loopback.
    pub host_ip: IpAddr,
}

impl ListenConfig {
    /// The listen config of `family` for `bind_address`.
    pub fn new(bind_address: IpAddr, family: IpFamily, node: &NodeFacts) -> Self {
        let listen_ip = if IpFamily::of(&bind_address) == family {
            bind_address
        } else {
            unspecified(family)
        };
        let host_ip = if listen_ip.is_unspecified() {
            node.node_ip(family)
                .filter(|ip| !ip.is_unspecified())
                .unwrap_or(match family {
                    IpFamily::V4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpFamily::V6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
                })
        } else {
            listen_ip
        };
        ListenConfig { listen_ip, host_ip }
    }
}

/// The unspecified address of a family (`0.0.0.0` or `::`).
pub fn unspecified(family: IpFamily) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// A proxy socket the plan wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedListener {
    /// The service port.
    pub name: ServicePortName,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Listen address and proxy port.
    pub bind: SocketAddr,
    /// Addresses held open to reserve them (upstream `claimNodePort`): the node port on
    /// every address, and virtual IPs that are local to the node.
    pub claims: Vec<SocketAddr>,
}

/// One sync's desired state for one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The family.
    pub family: IpFamily,
    /// Proxy sockets, in service-port order.
    pub listeners: Vec<PlannedListener>,
    /// `iptables-restore --noflush` input (nat then filter).
    pub rules: String,
    /// Number of per-service rules (jumps excluded).
    pub rule_count: usize,
    /// SCTP ports, which the userspace mode cannot proxy.
    pub sctp: Vec<ServicePortName>,
}

/// Plans one family: a listener and rules for every TCP/UDP port of `map` that has a proxy
/// port in `proxy_ports` (port 0 means "not yet bound" and gets a listener but no rules).
pub fn plan(
    map: &ServiceMap,
    family: IpFamily,
    proxy_ports: &BTreeMap<ServicePortName, u16>,
    listen: &ListenConfig,
    node: &NodeFacts,
    jumps: &Jumps,
) -> Plan {
    let mut rules = Rules::default();
    let mut listeners = Vec::new();
    let mut sctp = Vec::new();
    for port in map.family(family).values() {
        if port.name.protocol == Protocol::Sctp {
            sctp.push(port.name.clone());
            continue;
        }
        let proxy_port = proxy_ports.get(&port.name).copied().unwrap_or(0);
        listeners.push(PlannedListener {
            name: port.name.clone(),
            protocol: port.name.protocol,
            bind: SocketAddr::new(listen.listen_ip, proxy_port),
            claims: claims(port, node),
        });
        if proxy_port != 0 {
            rules.port(port, proxy_port, listen);
        }
    }
    let rule_count = rules.count;
    Plan {
        family,
        listeners,
        rules: rules.render(jumps),
        rule_count,
        sctp,
    }
}

fn claims(port: &ServicePort, node: &NodeFacts) -> Vec<SocketAddr> {
    let mut c: Vec<SocketAddr> = port
        .virtual_ips()
        .filter(|ip| node.local_addresses.contains(ip))
        .map(|ip| SocketAddr::new(ip, port.port))
        .collect();
    if let Some(np) = port.node_port {
        c.push(SocketAddr::new(unspecified(port.family), np));
    }
    c.sort_unstable();
    c.dedup();
    c
}

/// The per-chain rule bodies being built.
#[derive(Debug, Default)]
struct Rules {
    container_portals: Vec<String>,
    host_portals: Vec<String>,
    container_nodeports: Vec<String>,
    host_nodeports: Vec<String>,
    non_local: Vec<String>,
    count: usize,
}

/// `iptablesCommonPortalArgs`: comment, protocol, port, then the optional matches.
fn common(
    port: &ServicePort,
    dest: Option<IpAddr>,
    physdev: bool,
    dst_local: bool,
    dport: u16,
) -> String {
    let proto = port.name.protocol.as_lower();
    let mut s = format!(
        "-m comment --comment \"{}\" -p {proto} -m {proto} --dport {dport}",
        port.name
    );
    if let Some(ip) = dest {
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        let _ = write!(s, " -d {ip}/{bits}");
    }
    if physdev {
        s.push_str(" -m physdev ! --physdev-is-in");
    }
    if dst_local {
        s.push_str(" -m addrtype --dst-type LOCAL");
    }
    s
}

/// `iptablesContainerPortalArgs` target: REDIRECT when listening on any address, DNAT to
/// the listen address otherwise.
fn container_target(listen: &ListenConfig, proxy_port: u16) -> String {
    if listen.listen_ip.is_unspecified() {
        format!("-j REDIRECT --to-ports {proxy_port}")
    } else {
        format!(
            "-j DNAT --to-destination {}",
            SocketAddr::new(listen.listen_ip, proxy_port)
        )
    }
}

/// `iptablesHostPortalArgs` target: always DNAT, to the host IP when listening on any.
fn host_target(listen: &ListenConfig, proxy_port: u16) -> String {
    format!(
        "-j DNAT --to-destination {}",
        SocketAddr::new(listen.host_ip, proxy_port)
    )
}

impl Rules {
    fn push(list: &mut Vec<String>, count: &mut usize, rule: String) {
        list.push(rule);
        *count += 1;
    }

    /// `openPortal`: the cluster IP, external IPs, load-balancer IPs, then the node port.
    fn port(&mut self, port: &ServicePort, proxy_port: u16, listen: &ListenConfig) {
        let ct = container_target(listen, proxy_port);
        let ht = host_target(listen, proxy_port);
        self.portal(port, port.cluster_ip, false, &ct, &ht);
        for ip in &port.external_ips {
            self.portal(port, *ip, true, &ct, &ht);
        }
        for ip in &port.load_balancer_ips {
            self.portal(port, *ip, false, &ct, &ht);
        }
        if let Some(np) = port.node_port {
            // `openNodePort`: container and host rules without `-d`, and the filter rule
            // on the proxy port.
            let rule = format!("{} {ct}", common(port, None, false, false, np));
            Self::push(&mut self.container_nodeports, &mut self.count, rule);
            let rule = format!("{} {ht}", common(port, None, false, false, np));
            Self::push(&mut self.host_nodeports, &mut self.count, rule);
            let rule = format!(
                "{} -m state --state NEW -j ACCEPT",
                common(port, None, false, false, proxy_port)
            );
            Self::push(&mut self.non_local, &mut self.count, rule);
        }
    }

    /// `openOnePortal`: a container rule (with the physdev match for an external IP);
    /// for an external IP also a dst-LOCAL container rule and a dst-LOCAL host rule,
    /// otherwise a plain host rule.
    fn portal(&mut self, port: &ServicePort, ip: IpAddr, external: bool, ct: &str, ht: &str) {
        let p = port.port;
        let rule = format!("{} {ct}", common(port, Some(ip), external, false, p));
        Self::push(&mut self.container_portals, &mut self.count, rule);
        if external {
            let rule = format!("{} {ct}", common(port, Some(ip), false, true, p));
            Self::push(&mut self.container_portals, &mut self.count, rule);
        }
        let rule = format!("{} {ht}", common(port, Some(ip), false, external, p));
        Self::push(&mut self.host_portals, &mut self.count, rule);
    }

    fn render(&self, jumps: &Jumps) -> String {
        let mut out = String::new();
        for table in ["nat", "filter"] {
            let _ = writeln!(out, "*{table}");
            for j in JUMPS.iter().filter(|j| j.table == table) {
                let _ = writeln!(out, ":{} - [0:0]", j.to);
            }
            for (i, j) in JUMPS.iter().enumerate().filter(|(_, j)| j.table == table) {
                if !jumps.present[i] {
                    if j.first {
                        let _ = writeln!(out, "-I {} 1 {}", j.from, j.spec());
                    } else {
                        let _ = writeln!(out, "-A {} {}", j.from, j.spec());
                    }
                }
            }
            let bodies: &[(&str, &Vec<String>)] = if table == "nat" {
                &[
                    (CONTAINER_PORTAL_CHAIN, &self.container_portals),
                    (HOST_PORTAL_CHAIN, &self.host_portals),
                    (CONTAINER_NODEPORT_CHAIN, &self.container_nodeports),
                    (HOST_NODEPORT_CHAIN, &self.host_nodeports),
                ]
            } else {
                &[(NON_LOCAL_NODEPORT_CHAIN, &self.non_local)]
            };
            for (chain, rules) in bodies {
                for r in rules.iter() {
                    let _ = writeln!(out, "-A {chain} {r}");
                }
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}

/// The restore input that removes everything the userspace mode installs: every jump
/// found (as often as found), then our chains, flushed and deleted. Only what
/// `saved_nat`/`saved_filter` (iptables-save output) show is touched, so the restore
/// cannot fail on something already gone. Empty when there is nothing to remove.
pub fn cleanup_rules(saved_nat: &str, saved_filter: &str) -> String {
    let mut out = String::new();
    for (table, saved) in [("nat", saved_nat), ("filter", saved_filter)] {
        let mut body = String::new();
        for j in JUMPS.iter().filter(|j| j.table == table) {
            let head = format!("-A {} ", j.from);
            let tail = format!("-j {}", j.to);
            for l in saved
                .lines()
                .filter(|l| l.starts_with(&head) && l.trim_end().ends_with(&tail))
            {
                let _ = writeln!(body, "-D {}", &l[3..]);
            }
        }
        let ours: Vec<&str> = JUMPS
            .iter()
            .filter(|j| j.table == table)
            .map(|j| j.to)
            .filter(|c| {
                saved
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(&format!(":{c}")))
            })
            .collect();
        for c in &ours {
            let _ = writeln!(body, ":{c} - [0:0]");
        }
        for c in &ours {
            let _ = writeln!(body, "-X {c}");
        }
        if !body.is_empty() {
            let _ = write!(out, "*{table}\n{body}COMMIT\n");
        }
    }
    out
}

/// What `kproxy plan --proxy-mode userspace` prints for one family: the listeners and the
/// rules a sync on a clean host would load. Proxy ports come from `portRange` in
/// service-port order when it is set; otherwise the kernel picks them at run time, and the
/// plan numbers them from 32768 as placeholders (said in the header).
pub fn render_plan(
    map: &ServiceMap,
    node: &NodeFacts,
    cfg: &KubeProxyConfiguration,
    family: IpFamily,
) -> String {
    let bind: IpAddr =
        crate::proxier::parse_bind_address(&cfg.bind_address).unwrap_or(unspecified(family));
    let listen = ListenConfig::new(bind, family, node);
    let range = PortRange::parse(&cfg.port_range).ok().flatten();
    let mut ports = BTreeMap::new();
    let mut next: u32 = range.map_or(32768, |r| u32::from(r.base));
    let limit: u32 = range.map_or(65536, |r| u32::from(r.base) + r.size);
    for p in map.family(family).values() {
        if p.name.protocol == Protocol::Sctp || next >= limit {
            continue;
        }
        ports.insert(p.name.clone(), u16::try_from(next).unwrap_or(u16::MAX));
        next += 1;
    }
    let plan = plan(map, family, &ports, &listen, node, &Jumps::none());
    let mut out = String::new();
    let _ = writeln!(out, "# kproxy userspace plan, {family}");
    let _ = writeln!(
        out,
        "# listen {}, host DNAT target {}",
        listen.listen_ip, listen.host_ip
    );
    match range {
        Some(r) => {
            let _ = writeln!(
                out,
                "# proxy ports from portRange {}+{}",
                r.base,
                r.size - 1
            );
        }
        None => {
            let _ = writeln!(
                out,
                "# proxy ports are allocated at run time by the kernel; 32768.. below are placeholders"
            );
        }
    }
    for l in &plan.listeners {
        let Some(p) = map.get(family, &l.name) else {
            continue;
        };
        let eps: Vec<String> = p
            .internal_endpoints()
            .iter()
            .map(ToString::to_string)
            .collect();
        let _ = write!(
            out,
            "# listener {} {} -> {} endpoints [{}]",
            l.protocol,
            l.bind,
            l.name,
            eps.join(", ")
        );
        if p.external_endpoints() != p.internal_endpoints() {
            let ext: Vec<String> = p
                .external_endpoints()
                .iter()
                .map(ToString::to_string)
                .collect();
            let _ = write!(out, " external [{}]", ext.join(", "));
        }
        out.push('\n');
    }
    for s in &plan.sctp {
        let _ = writeln!(
            out,
            "# skipped {s}: SCTP is not supported in userspace mode"
        );
    }
    out.push_str(&plan.rules);
    out
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
