//! The rules of one service port, following upstream `syncProxyRules` (the loop over
//! `svcPortMap`) and `writeServiceToEndpointRules` in `pkg/proxy/iptables/proxier.go`.

use std::net::{IpAddr, SocketAddr};

use kproxy_core::service_map::ServicePort;

use super::Table;
use super::config::{LocalDetector, PlanConfig};
use crate::chains::{
    KUBE_EXTERNAL_SERVICES, KUBE_MARK_MASQ, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL, KUBE_SERVICES,
    PortChains, endpoint_chain,
};
use crate::nfacct::LOCALHOST_NODEPORTS_ACCEPTED;

/// A rule in a chain shared by all services (KUBE-SERVICES, KUBE-NODEPORTS, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopRule {
    /// Its table.
    pub table: Table,
    /// Its chain.
    pub chain: &'static str,
    /// Everything after `-A CHAIN `.
    pub spec: String,
}

/// A per-service (or per-endpoint) nat chain and its rules (specs after `-A NAME `).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRules {
    /// The chain.
    pub name: String,
    /// Its rules, in order.
    pub rules: Vec<String>,
}

/// Everything one service port contributes to the ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRules {
    /// Rules in shared chains, in upstream's order.
    pub top: Vec<TopRule>,
    /// Its own nat chains, in upstream's declaration order (EXT, FW, SVC, SVL, SEPs).
    pub chains: Vec<ChainRules>,
    /// `internalTrafficPolicy: Local` with endpoints elsewhere only (for the metric).
    pub no_local_internal: bool,
    /// `externalTrafficPolicy: Local` with endpoints elsewhere only (for the metric).
    pub no_local_external: bool,
}

/// Per-sync facts shared by every port.
pub(crate) struct Ctx<'a> {
    pub cfg: &'a PlanConfig,
    pub detector: LocalDetector,
    pub node_ip: Option<IpAddr>,
    pub large_cluster: bool,
}

/// An endpoint with its `ip:port` string and its KUBE-SEP chain.
#[derive(Clone)]
struct Ep {
    addr: SocketAddr,
    text: String,
    chain: String,
}

/// Endpoints in upstream's order: sorted by their `ip:port` string.
fn by_string(eps: &[SocketAddr], name: &str, proto: &str) -> Vec<Ep> {
    let mut v: Vec<Ep> = eps
        .iter()
        .map(|e| Ep {
            addr: *e,
            text: e.to_string(),
            chain: endpoint_chain(name, proto, e),
        })
        .collect();
    v.sort_by(|a, b| a.text.cmp(&b.text));
    v
}

/// `text` with every character a Kubernetes namespace, name or port name cannot contain
/// (and that `ns/name:port` does not add) replaced by `_`: valid names pass unchanged.
pub(crate) fn comment_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/' | ':') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn probability(n: usize) -> String {
    #[allow(clippy::cast_precision_loss)] // endpoint counts are far below 2^52
    let p = 1.0 / n as f64;
    format!("{p:.10}")
}

/// The rules of one port.
pub(crate) fn port_rules(p: &ServicePort, cx: &Ctx<'_>) -> PortRules {
    let name = p.name.to_string();
    let proto = p.name.protocol.as_lower();
    let ch = PortChains::new(&name, proto);
    let cluster_eps = by_string(&p.selection.cluster, &name, proto);
    let local_eps = if p.selection.local == p.selection.cluster {
        cluster_eps.clone()
    } else {
        by_string(&p.selection.local, &name, proto)
    };
    // From here on the name only appears inside comments. Keep just what a valid
    // Kubernetes name can hold (upstream relies on the API server's validation), so a
    // name read from a file can never end a quoted comment, add an argument or a line.
    let name = comment_safe(&name);
    let has_endpoints = p.selection.has_any_endpoints;

    let uses_cluster_chain = !cluster_eps.is_empty() && p.uses_cluster_endpoints();
    let uses_local_chain = !local_eps.is_empty() && p.uses_local_endpoints();
    let (internal_chain, has_internal) = if p.internal_policy_local {
        (&ch.svl, has_endpoints && !local_eps.is_empty())
    } else {
        (&ch.svc, has_endpoints)
    };
    let (external_policy_chain, has_external) = if p.external_policy_local {
        (&ch.svl, has_endpoints && !local_eps.is_empty())
    } else {
        (&ch.svc, has_endpoints)
    };
    let uses_ext_chain = has_endpoints && p.externally_accessible();
    let uses_fw_chain = has_endpoints
        && !p.load_balancer_ips.is_empty()
        && !p.load_balancer_source_ranges.is_empty();
    let lb_chain = if uses_fw_chain { &ch.fw } else { &ch.ext };

    let no_eps = format!("\"{name} has no endpoints\"");
    let no_local = format!("\"{name} has no local endpoints\"");
    let (internal_filter, external_filter) = if has_endpoints {
        (
            (!has_internal).then(|| ("DROP", no_local.clone())),
            (!has_external).then(|| ("DROP", no_local.clone())),
        )
    } else {
        (Some(("REJECT", no_eps.clone())), Some(("REJECT", no_eps)))
    };

    let mut top = Vec::new();
    let mut push =
        |table: Table, chain: &'static str, spec: String| top.push(TopRule { table, chain, spec });
    let m = format!("-m {proto} -p {proto}");
    let port = p.port;

    // Cluster IP.
    if has_internal {
        push(
            Table::Nat,
            KUBE_SERVICES,
            format!(
                "-m comment --comment \"{name} cluster IP\" {m} -d {} --dport {port} -j {internal_chain}",
                p.cluster_ip
            ),
        );
    } else if let Some((target, comment)) = &internal_filter {
        push(
            Table::Filter,
            KUBE_SERVICES,
            format!(
                "-m comment --comment {comment} {m} -d {} --dport {port} -j {target}",
                p.cluster_ip
            ),
        );
    }
    // External IPs.
    for eip in &p.external_ips {
        if has_endpoints {
            push(
                Table::Nat,
                KUBE_SERVICES,
                format!(
                    "-m comment --comment \"{name} external IP\" {m} -d {eip} --dport {port} -j {}",
                    ch.ext
                ),
            );
        }
        if let Some((target, comment)) = &external_filter {
            push(
                Table::Filter,
                KUBE_EXTERNAL_SERVICES,
                format!("-m comment --comment {comment} {m} -d {eip} --dport {port} -j {target}"),
            );
        }
    }
    // Load-balancer IPs.
    for lb in &p.load_balancer_ips {
        if has_endpoints {
            push(
                Table::Nat,
                KUBE_SERVICES,
                format!(
                    "-m comment --comment \"{name} loadbalancer IP\" {m} -d {lb} --dport {port} -j {lb_chain}"
                ),
            );
        }
        if uses_fw_chain {
            push(
                Table::Filter,
                KUBE_PROXY_FIREWALL,
                format!(
                    "-m comment --comment \"{name} traffic not accepted by {}\" {m} -d {lb} --dport {port} -j DROP",
                    ch.fw
                ),
            );
        }
    }
    if let Some((target, comment)) = &external_filter {
        for lb in &p.load_balancer_ips {
            push(
                Table::Filter,
                KUBE_EXTERNAL_SERVICES,
                format!("-m comment --comment {comment} {m} -d {lb} --dport {port} -j {target}"),
            );
        }
    }
    // Node port.
    if let Some(np) = p.node_port {
        if has_endpoints {
            if cx.cfg.localhost_node_ports && cx.cfg.nfacct {
                push(
                    Table::Nat,
                    KUBE_NODEPORTS,
                    format!(
                        "-m comment --comment {name} {m} -d 127.0.0.0/8 --dport {np} -m nfacct --nfacct-name {LOCALHOST_NODEPORTS_ACCEPTED} -j {}",
                        ch.ext
                    ),
                );
            }
            push(
                Table::Nat,
                KUBE_NODEPORTS,
                format!("-m comment --comment {name} {m} --dport {np} -j {}", ch.ext),
            );
        }
        if let Some((target, comment)) = &external_filter {
            push(
                Table::Filter,
                KUBE_EXTERNAL_SERVICES,
                format!(
                    "-m comment --comment {comment} -m addrtype --dst-type LOCAL {m} --dport {np} -j {target}"
                ),
            );
        }
    }
    // Health check node port.
    if let Some(hc) = p.health_check_node_port {
        push(
            Table::Filter,
            KUBE_NODEPORTS,
            format!(
                "-m comment --comment \"{name} health check node port\" -m tcp -p tcp --dport {hc} -j ACCEPT"
            ),
        );
    }

    // The port's own chains.
    let mut chains: Vec<ChainRules> = Vec::new();
    let mut internal_masq: Option<String> = None;
    if has_internal {
        let args = format!(
            "-m comment --comment \"{name} cluster IP\" {m} -d {} --dport {port}",
            p.cluster_ip
        );
        if cx.cfg.masquerade_all {
            internal_masq = Some(format!("{args} -j {KUBE_MARK_MASQ}"));
        } else if let Some(not_local) = cx.detector.if_not_local() {
            internal_masq = Some(format!("{args} {not_local} -j {KUBE_MARK_MASQ}"));
        }
    }
    if uses_ext_chain {
        let mut rules = Vec::new();
        if p.external_policy_local {
            if let Some(local) = cx.detector.if_local() {
                rules.push(format!(
                    "-m comment --comment \"pod traffic for {name} external destinations\" {local} -j {}",
                    ch.svc
                ));
            }
            rules.push(format!(
                "-m comment --comment \"masquerade LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}"
            ));
            rules.push(format!(
                "-m comment --comment \"route LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j {}",
                ch.svc
            ));
        } else {
            rules.push(format!(
                "-m comment --comment \"masquerade traffic for {name} external destinations\" -j {KUBE_MARK_MASQ}"
            ));
        }
        if has_external {
            rules.push(format!("-j {external_policy_chain}"));
        }
        chains.push(ChainRules {
            name: ch.ext.clone(),
            rules,
        });
    }
    if uses_fw_chain {
        let args = format!("-m comment --comment \"{name} loadbalancer IP\"");
        let mut rules = Vec::new();
        let mut allow_from_node = false;
        for cidr in &p.load_balancer_source_ranges {
            rules.push(format!("{args} -s {cidr} -j {}", ch.ext));
            if cx.node_ip.is_some_and(|ip| cidr.contains(&ip)) {
                allow_from_node = true;
            }
        }
        if allow_from_node {
            for lb in &p.load_balancer_ips {
                rules.push(format!("{args} -s {lb} -j {}", ch.ext));
            }
        }
        rules.push(format!("-m comment --comment \"other traffic to {name} will be dropped by KUBE-PROXY-FIREWALL\""));
        chains.push(ChainRules {
            name: ch.fw.clone(),
            rules,
        });
    }
    if uses_cluster_chain {
        let mut rules = Vec::new();
        if *internal_chain == ch.svc {
            rules.extend(internal_masq.clone());
        }
        endpoint_rules(&mut rules, p, &name, &cluster_eps, cx.large_cluster);
        chains.push(ChainRules {
            name: ch.svc.clone(),
            rules,
        });
    }
    if uses_local_chain {
        let mut rules = Vec::new();
        if *internal_chain == ch.svl {
            rules.extend(internal_masq);
        }
        endpoint_rules(&mut rules, p, &name, &local_eps, cx.large_cluster);
        chains.push(ChainRules {
            name: ch.svl.clone(),
            rules,
        });
    }
    // Endpoint chains: cluster ∪ local, in upstream's string order.
    let mut all: Vec<&Ep> = cluster_eps.iter().chain(&local_eps).collect();
    all.sort_by(|a, b| a.text.cmp(&b.text));
    all.dedup_by(|a, b| a.addr == b.addr);
    let comment = if cx.large_cluster {
        String::new()
    } else {
        format!("-m comment --comment {name} ")
    };
    for ep in all {
        let mut dnat = comment.clone();
        if p.session_affinity.is_some() {
            dnat.push_str(&format!("-m recent --name {} --set ", ep.chain));
        }
        dnat.push_str(&format!("{m} -j DNAT --to-destination {}", ep.text));
        let rules = vec![
            format!("{comment}-s {} -j {KUBE_MARK_MASQ}", ep.addr.ip()),
            dnat,
        ];
        chains.push(ChainRules {
            name: ep.chain.clone(),
            rules,
        });
    }

    PortRules {
        top,
        chains,
        no_local_internal: has_endpoints && !has_internal,
        no_local_external: has_endpoints && !has_external,
    }
}

/// Upstream `writeServiceToEndpointRules`: affinity rules, then one rule per endpoint
/// with probability 1/(n-i), the last one unconditional.
fn endpoint_rules(
    rules: &mut Vec<String>,
    p: &ServicePort,
    name: &str,
    eps: &[Ep],
    large_cluster: bool,
) {
    let comment = |ep: &str| {
        if large_cluster {
            String::new()
        } else {
            format!("-m comment --comment \"{name} -> {ep}\" ")
        }
    };
    if let Some(aff) = p.session_affinity {
        for ep in eps {
            let sep = &ep.chain;
            rules.push(format!(
                "{}-m recent --name {sep} --rcheck --seconds {} --reap -j {sep}",
                comment(&ep.text),
                aff.timeout_seconds
            ));
        }
    }
    let n = eps.len();
    for (i, ep) in eps.iter().enumerate() {
        let sep = &ep.chain;
        if i + 1 < n {
            rules.push(format!(
                "{}-m statistic --mode random --probability {} -j {sep}",
                comment(&ep.text),
                probability(n - i)
            ));
        } else {
            rules.push(format!("{}-j {sep}", comment(&ep.text)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_are_printed_with_ten_decimals() {
        assert_eq!(probability(3), "0.3333333333");
        assert_eq!(probability(2), "0.5000000000");
    }

    #[test]
    fn endpoints_sort_as_strings() {
        let eps: Vec<SocketAddr> = vec![
            "10.0.0.2:80".parse().unwrap(),
            "10.0.0.10:80".parse().unwrap(),
        ];
        let sorted: Vec<String> = by_string(&eps, "ns/svc", "tcp")
            .into_iter()
            .map(|e| e.text)
            .collect();
        assert_eq!(sorted, ["10.0.0.10:80", "10.0.0.2:80"]);
    }
}

#[cfg(test)]
mod comment_safe_tests {
    use super::comment_safe;

    #[test]
    fn valid_names_pass_and_anything_that_could_break_a_rule_is_replaced() {
        assert_eq!(
            comment_safe("kube-system/kube-dns:dns-tcp"),
            "kube-system/kube-dns:dns-tcp"
        );
        assert_eq!(comment_safe("default/my.svc:http"), "default/my.svc:http");
        assert_eq!(
            comment_safe("ns/a b\"c\nCOMMIT\n-j ACCEPT #é"),
            "ns/a_b_c_COMMIT_-j_ACCEPT___"
        );
    }
}
