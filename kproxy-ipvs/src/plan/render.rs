//! `kproxy plan --proxy-mode ipvs`: the plan as text.

use std::fmt::Write as _;

use kproxy_core::model::IpFamily;
use kproxy_core::{KubeProxyConfiguration, NodeFacts, ServiceMap};

use super::{DUMMY_INTERFACE, plan};
use crate::netlink::{SVC_F_PERSISTENT, SVC_F_SCHED1, SVC_F_SCHED2, SVC_F_SCHED3};

/// Prints the plan of `family` in three sections: an `ipvsadm -Ln`-like listing (one
/// line per virtual server, one per destination, with the owning service port), the
/// `kube-ipvs0` addresses, the `ipset restore` input and the `iptables-restore` input.
/// Deterministic, like [`plan`](super::plan).
///
/// ```
/// use kproxy_core::{KubeProxyConfiguration, NodeFacts, ServiceMap};
/// use kproxy_core::model::IpFamily;
/// let text = kproxy_ipvs::plan::render_plan(
///     &ServiceMap::default(), &NodeFacts::default(), &KubeProxyConfiguration::default(), IpFamily::V4);
/// assert!(text.starts_with("# IPVS (IPv4)\n"));
/// ```
pub fn render_plan(
    map: &ServiceMap,
    node: &NodeFacts,
    cfg: &KubeProxyConfiguration,
    family: IpFamily,
) -> String {
    let p = plan(map, node, cfg, family);
    let mut out = String::new();
    let _ = writeln!(out, "# IPVS ({family})");
    let _ = writeln!(out, "Prot LocalAddress:Port Scheduler Flags");
    let _ = writeln!(out, "  -> RemoteAddress:Port           Forward Weight");
    for vs in p.services.values() {
        let s = &vs.service;
        let mut flags = String::new();
        if s.flags & SVC_F_PERSISTENT != 0 {
            let _ = write!(flags, " persistent {}", s.timeout);
        }
        // ipvsadm names the scheduler flags per scheduler (sh-port, mh-port, …).
        for (bit, n) in [(SVC_F_SCHED1, 1), (SVC_F_SCHED2, 2), (SVC_F_SCHED3, 3)] {
            if s.flags & bit != 0 {
                let _ = write!(flags, " flag-{n}");
            }
        }
        let _ = writeln!(
            out,
            "{:<4} {} {}{flags}  # {} {:?}",
            s.protocol.to_string(),
            std::net::SocketAddr::new(s.address, s.port),
            s.scheduler,
            vs.owner,
            vs.kind
        );
        for d in &vs.destinations {
            let _ = writeln!(
                out,
                "  -> {:<28} {:<7} {}",
                d.socket_addr().to_string(),
                d.fwd_method.to_string(),
                d.weight
            );
        }
    }
    let _ = writeln!(out, "\n# {DUMMY_INTERFACE} addresses");
    for a in &p.addresses {
        let _ = writeln!(out, "{a}");
    }
    let _ = writeln!(out, "\n# ipset restore -exist");
    out.push_str(&p.ipset_restore(None));
    let _ = writeln!(
        out,
        "\n# iptables-restore --noflush (jump rules ensured separately)"
    );
    for j in &p.jumps {
        let args: Vec<String> = j
            .args
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("{a:?}")
                } else {
                    a.clone()
                }
            })
            .collect();
        let _ = writeln!(out, "# -t {} -I {} 1 {}", j.table, j.from, args.join(" "));
    }
    out.push_str(&p.iptables);
    out
}
