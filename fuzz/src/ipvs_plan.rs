//! `ipvs_plan`: the IPVS planner over small generated clusters with hostile names.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use kproxy_core::model::IpFamily;
use kproxy_core::{NodeFacts, ServicePort};
use kproxy_ipvs::netlink::FwdMethod;
use kproxy_ipvs::plan::{Plan, VsKind, node_port_ips, plan, render_plan};

use crate::cluster::cluster;

/// Reads a cluster (see [`cluster`](crate::cluster)) and plans it for IPv4 and IPv6 with
/// one of 16 config variants. For each family:
/// - every virtual server is keyed by its service, of the family, and serves an address
///   of its owning port (cluster IP, an external or LB IP, a node-port address);
/// - its destinations are exactly the endpoints upstream's `syncEndpoint` picks from
///   core's selection (internal policy for the cluster IP, external otherwise; with a
///   Local policy the local endpoints, or the cluster ones when there are none), masq,
///   weight 1;
/// - every port's cluster IP has a virtual server and is bound to kube-ipvs0;
/// - the ipsets and the iptables rules equal those of the plain-named map (names never
///   reach them), and `render_plan` does not panic.
pub fn ipvs_plan(data: &[u8]) {
    let Some(c) = cluster(data) else {
        return;
    };
    for family in IpFamily::ALL {
        let p = plan(&c.hostile, &c.node, &c.config, family);
        check(&p, &c.hostile, &c.node, &c.config, family);
        let plain = plan(&c.plain, &c.node, &c.config, family);
        assert_eq!(
            p.ipset_restore(None),
            plain.ipset_restore(None),
            "names changed the {family} ipsets"
        );
        assert_eq!(
            p.iptables, plain.iptables,
            "names changed the {family} rules"
        );
        let text = render_plan(&c.hostile, &c.node, &c.config, family);
        assert!(text.starts_with("# IPVS ("));
    }
}

/// The endpoints of `sp` for a policy, computed from core's selection.
fn expected(sp: &ServicePort, local_policy: bool) -> BTreeSet<SocketAddr> {
    let eps = if local_policy && !sp.selection.local.is_empty() {
        &sp.selection.local
    } else {
        &sp.selection.cluster
    };
    eps.iter().copied().collect()
}

fn check(
    p: &Plan,
    map: &kproxy_core::ServiceMap,
    node: &NodeFacts,
    cfg: &kproxy_core::KubeProxyConfiguration,
    family: IpFamily,
) {
    let ports = map.family(family);
    let np_ips = node_port_ips(node, cfg, family);
    for (key, vs) in &p.services {
        let s = &vs.service;
        assert_eq!(*key, s.key(), "{} keyed by another service", vs.owner);
        assert_eq!(s.family, family);
        let sp = ports
            .get(&vs.owner)
            .unwrap_or_else(|| panic!("{} owns a virtual server but is no port", vs.owner));
        let (ok, local) = match vs.kind {
            VsKind::ClusterIp => (
                s.address == sp.cluster_ip && s.port == sp.port,
                sp.internal_policy_local,
            ),
            VsKind::ExternalIp => (
                sp.external_ips.contains(&s.address) && s.port == sp.port,
                sp.external_policy_local,
            ),
            VsKind::LoadBalancer => (
                sp.load_balancer_ips.contains(&s.address) && s.port == sp.port,
                sp.external_policy_local,
            ),
            VsKind::NodePort => (
                np_ips.contains(&s.address) && Some(s.port) == sp.node_port,
                sp.external_policy_local,
            ),
        };
        assert!(
            ok,
            "{} {:?} serves {}:{}",
            vs.owner, vs.kind, s.address, s.port
        );
        let got: BTreeSet<SocketAddr> = vs.destinations.iter().map(|d| d.socket_addr()).collect();
        assert_eq!(
            got.len(),
            vs.destinations.len(),
            "{} {:?}: a destination twice",
            vs.owner,
            vs.kind
        );
        assert_eq!(
            got,
            expected(sp, local),
            "{} {:?} at {}:{}: wrong destinations",
            vs.owner,
            vs.kind,
            s.address,
            s.port
        );
        for d in &vs.destinations {
            assert_eq!((d.fwd_method, d.weight), (FwdMethod::Masq, 1));
        }
    }
    for sp in ports.values() {
        let mut svc = kproxy_ipvs::netlink::Service::new(
            sp.name.protocol.into(),
            sp.cluster_ip,
            sp.port,
            "rr",
        );
        svc.family = family;
        assert!(
            p.services.contains_key(&svc.key()),
            "{} has no cluster IP virtual server",
            sp.name
        );
        assert!(p.addresses.contains(&sp.cluster_ip));
    }
}
