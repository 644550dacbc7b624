//! Reconciler tests: graceful termination case by case, what is never deleted, and the
//! property that applying the diff reaches the plan.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use kproxy_core::model::{IpFamily, ObjectRef, Protocol, ServicePortName};
use kproxy_core::testing::arb_snapshot;
use kproxy_core::{BuildOptions, NodeFacts, ServiceMap};
use proptest::prelude::*;

use super::*;
use crate::netlink::{SVC_F_HASHED, SVC_F_PERSISTENT};
use crate::plan::{VsKind, plan};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn svc(proto: IpvsProtocol, vip: &str) -> Service {
    let a: SocketAddr = sa(vip);
    Service::new(proto, a.ip(), a.port(), "rr")
}

fn want(s: &Service, dests: &[&str]) -> BTreeMap<ServiceKey, VirtualServer> {
    let vs = VirtualServer {
        owner: ServicePortName::new(ObjectRef::new("default", "web"), "", Protocol::Tcp),
        kind: VsKind::ClusterIp,
        service: s.clone(),
        destinations: dests.iter().map(|d| Destination::new(sa(d))).collect(),
    };
    [(s.key(), vs)].into()
}

fn have(s: &Service, dests: &[(&str, u32, u32)]) -> Actual {
    let mut k = s.clone();
    k.flags |= SVC_F_HASHED;
    let ds = dests
        .iter()
        .map(|(a, weight, conns)| {
            let mut d = Destination::new(sa(a));
            d.weight = *weight;
            d.active_conns = *conns;
            d.inact_conns = if *conns > 0 { 1 } else { 0 };
            d
        })
        .collect();
    [(s.key(), (k, ds))].into()
}

fn v4() -> DiffOptions {
    DiffOptions {
        family: Some(IpFamily::V4),
        ..Default::default()
    }
}

#[test]
fn removed_tcp_destination_with_connections_drains_at_weight_zero() {
    let s = svc(IpvsProtocol::Tcp, "10.96.0.10:80");
    let d = diff(
        &have(&s, &[("10.0.0.1:80", 1, 0), ("10.0.0.2:80", 1, 3)]),
        &want(&s, &["10.0.0.1:80"]),
        &v4(),
    );
    let mut quiesced = Destination::new(sa("10.0.0.2:80"));
    quiesced.weight = 0;
    quiesced.active_conns = 3;
    quiesced.inact_conns = 1;
    assert_eq!(d.ops, vec![Op::UpdateDest(s.clone(), quiesced)]);
    assert_eq!(d.draining, [(s.key(), sa("10.0.0.2:80"))].into());
    // Next sync: already at weight 0, still connected: nothing to do, still draining.
    let d = diff(
        &have(&s, &[("10.0.0.1:80", 1, 0), ("10.0.0.2:80", 0, 3)]),
        &want(&s, &["10.0.0.1:80"]),
        &v4(),
    );
    assert!(d.ops.is_empty());
    assert_eq!(d.draining.len(), 1);
    // Connections gone: deleted.
    let d = diff(
        &have(&s, &[("10.0.0.1:80", 1, 0), ("10.0.0.2:80", 0, 0)]),
        &want(&s, &["10.0.0.1:80"]),
        &v4(),
    );
    assert!(matches!(&d.ops[..], [Op::DeleteDest(_, x)] if x.socket_addr() == sa("10.0.0.2:80")));
    assert!(d.draining.is_empty());
}

#[test]
fn expired_drain_is_deleted_and_a_returning_endpoint_gets_weight_one_again() {
    let s = svc(IpvsProtocol::Tcp, "10.96.0.10:80");
    let mut o = v4();
    o.expired.insert((s.key(), sa("10.0.0.2:80")));
    let d = diff(&have(&s, &[("10.0.0.2:80", 0, 3)]), &want(&s, &[]), &o);
    assert!(matches!(&d.ops[..], [Op::DeleteDest(..)]));
    let d = diff(
        &have(&s, &[("10.0.0.2:80", 0, 3)]),
        &want(&s, &["10.0.0.2:80"]),
        &v4(),
    );
    assert_eq!(
        d.ops,
        vec![Op::UpdateDest(
            s.clone(),
            Destination::new(sa("10.0.0.2:80"))
        )]
    );
}

#[test]
fn removed_udp_and_sctp_destinations_go_at_once() {
    for proto in [IpvsProtocol::Udp, IpvsProtocol::Sctp] {
        let s = svc(proto, "10.96.0.53:53");
        let d = diff(&have(&s, &[("10.0.0.9:53", 1, 5)]), &want(&s, &[]), &v4());
        assert!(
            matches!(&d.ops[..], [Op::DeleteDest(..)]),
            "{proto}: {:?}",
            d.ops
        );
        assert!(d.draining.is_empty());
    }
}

#[test]
fn excluded_other_family_and_fwmark_services_are_never_deleted() {
    let mut actual = Actual::new();
    for s in [
        svc(IpvsProtocol::Tcp, "10.1.2.3:80"),
        svc(IpvsProtocol::Tcp, "[fd00::1]:80"),
        svc(IpvsProtocol::Tcp, "10.96.0.99:80"),
    ] {
        actual.insert(s.key(), (s, vec![]));
    }
    let mut fw = svc(IpvsProtocol::Other(0), "0.0.0.0:0");
    fw.fwmark = 7;
    actual.insert(fw.key(), (fw, vec![]));
    let mut o = v4();
    o.exclude_cidrs = vec!["10.1.0.0/16".parse().unwrap()];
    let d = diff(&actual, &BTreeMap::new(), &o);
    assert_eq!(
        d.ops,
        vec![Op::DeleteService(svc(IpvsProtocol::Tcp, "10.96.0.99:80"))]
    );
}

#[test]
fn kernel_state_that_is_already_right_needs_no_operation() {
    // The kernel reports HASHED and stats; neither counts as a difference.
    let mut s = svc(IpvsProtocol::Tcp, "10.96.0.10:80");
    s.flags = SVC_F_PERSISTENT;
    s.timeout = 60;
    let mut actual = have(&s, &[("10.0.0.1:80", 1, 2)]);
    actual.values_mut().next().unwrap().0.stats = Some(Default::default());
    assert_eq!(
        diff(&actual, &want(&s, &["10.0.0.1:80"]), &v4()),
        Diff::default()
    );
    // A changed timeout is one update, nothing else.
    let mut s2 = s.clone();
    s2.timeout = 120;
    assert_eq!(
        diff(&actual, &want(&s2, &["10.0.0.1:80"]), &v4()).ops,
        vec![Op::UpdateService(s2)]
    );
}

fn desired_of(
    snap: &kproxy_core::Snapshot,
    family: IpFamily,
) -> BTreeMap<ServiceKey, VirtualServer> {
    let map = ServiceMap::build(snap, &BuildOptions::for_node("node-a"));
    let mut n = NodeFacts::from_node("node-a", snap.node("node-a"));
    n.local_addresses.push(if family == IpFamily::V4 {
        "172.18.0.9".parse().unwrap()
    } else {
        "fd99::1".parse().unwrap()
    });
    plan(&map, &n, &crate::plan::tests::cfg(), family).services
}

/// The kernel after running `before`'s plan, with connection counts from `conns`.
fn actual_of(before: &BTreeMap<ServiceKey, VirtualServer>, conns: &[u32], other: bool) -> Actual {
    let mut a = Actual::new();
    let mut i = 0;
    for vs in before.values() {
        let dests = vs
            .destinations
            .iter()
            .map(|d| {
                let mut d = d.clone();
                d.active_conns = conns.get(i % conns.len().max(1)).copied().unwrap_or(0);
                i += 1;
                d
            })
            .collect();
        a.insert(vs.service.key(), (vs.service.clone(), dests));
    }
    if other {
        let s = svc(IpvsProtocol::Tcp, "[fd77::1]:80");
        a.insert(s.key(), (s, vec![]));
        let s = svc(IpvsProtocol::Tcp, "10.99.0.1:80");
        a.insert(s.key(), (s, vec![Destination::new(sa("10.0.0.1:1"))]));
    }
    a
}

proptest! {
    /// Applying diff(actual, desired) to actual gives desired, except that draining
    /// destinations stay (at weight 0) and services outside our remit stay; diffing
    /// again finds nothing to do; deletes and weight-0 updates come last.
    #[test]
    fn applying_the_diff_reaches_the_plan(
        before in arb_snapshot(),
        after in arb_snapshot(),
        conns in proptest::collection::vec(0u32..3, 0..8),
        other in any::<bool>(),
    ) {
        let family = IpFamily::V4;
        let mut actual = actual_of(&desired_of(&before, family), &conns, other);
        let desired = desired_of(&after, family);
        let mut o = v4();
        o.exclude_cidrs = vec!["10.99.0.0/16".parse().unwrap()];
        let d = diff(&actual, &desired, &o);
        // Nothing is taken away before everything new is in.
        let first = d.ops.iter().position(Op::is_destructive).unwrap_or(d.ops.len());
        prop_assert!(d.ops[first..].iter().all(Op::is_destructive), "{:?}", d.ops);
        for op in &d.ops {
            prop_assert!(apply(&mut actual, op).is_ok(), "{:?}", op);
        }
        for (key, vs) in &desired {
            let (s, dests) = &actual[key];
            prop_assert!(s.same_config(&vs.service));
            let wanted: Vec<SocketAddr> = vs.destinations.iter().map(Destination::socket_addr).collect();
            for dst in dests {
                if wanted.contains(&dst.socket_addr()) {
                    prop_assert_eq!(dst.weight, 1);
                } else {
                    prop_assert!(d.draining.contains(&(*key, dst.socket_addr())));
                    prop_assert_eq!(dst.weight, 0);
                    prop_assert!(dst.connections() > 0 && s.protocol == IpvsProtocol::Tcp);
                }
            }
            prop_assert!(wanted.iter().all(|w| dests.iter().any(|x| x.socket_addr() == *w)));
        }
        for (key, (s, _)) in &actual {
            prop_assert!(desired.contains_key(key) || !owned(s, &o));
        }
        let again = diff(&actual, &desired, &o);
        prop_assert!(again.ops.is_empty(), "{:?}", again.ops);
        prop_assert_eq!(again.draining, d.draining);
    }
}
