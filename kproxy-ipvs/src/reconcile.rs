//! The pure reconciler: what the kernel has → ordered operations → what the plan wants.
//!
//! Rules (upstream `syncService`, `syncEndpoint`, `cleanLegacyService` in
//! `pkg/proxy/ipvs/proxier.go` and `graceful_termination.go`):
//! - services and destinations that are already right are left alone (so a restarted
//!   proxier adopts the kernel's state without touching it);
//! - a wanted destination with another weight or forwarding method is updated (this
//!   also brings a draining destination back to weight 1);
//! - an unwanted destination is deleted at once if its service is UDP or SCTP or it has
//!   no active or inactive connections, or its drain has timed out; otherwise it is set
//!   to weight 0 and reported as draining;
//! - an unwanted service is deleted, unless it is of the other family, a fwmark
//!   service, or its address is inside `ipvs.excludeCIDRs`;
//! - every add and update comes before every delete or weight-0 update
//!   ([`Op::is_destructive`]), so a sync that stops midway never took away the old
//!   before the new was in.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use ipnet::IpNet;
use kproxy_core::model::IpFamily;

use crate::netlink::{Destination, IpvsProtocol, Service, ServiceKey};
use crate::plan::VirtualServer;

/// A destination of a service, as graceful termination tracks it.
pub type DestKey = (ServiceKey, SocketAddr);

/// The kernel's IPVS state: services with their destinations.
pub type Actual = BTreeMap<ServiceKey, (Service, Vec<Destination>)>;

/// One IPVS operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Add a service.
    AddService(Service),
    /// Change a service's scheduler, flags, timeout or netmask.
    UpdateService(Service),
    /// Delete a service (with its destinations).
    DeleteService(Service),
    /// Add a destination to a service.
    AddDest(Service, Destination),
    /// Change a destination's weight or forwarding method.
    UpdateDest(Service, Destination),
    /// Delete a destination.
    DeleteDest(Service, Destination),
}

impl Op {
    /// The service the op is about.
    pub fn service(&self) -> &Service {
        match self {
            Op::AddService(s)
            | Op::UpdateService(s)
            | Op::DeleteService(s)
            | Op::AddDest(s, _)
            | Op::UpdateDest(s, _)
            | Op::DeleteDest(s, _) => s,
        }
    }

    /// Whether the op can take traffic away from something that works: a delete, or
    /// a destination set to weight 0. [`diff`] puts these after every other op, and the
    /// proxier runs them only for services whose other ops all succeeded.
    pub fn is_destructive(&self) -> bool {
        match self {
            Op::DeleteService(_) | Op::DeleteDest(..) => true,
            Op::UpdateDest(_, d) => d.weight == 0,
            Op::AddService(_) | Op::UpdateService(_) | Op::AddDest(..) => false,
        }
    }

    /// For logs and errors: `add service 10.96.0.10:80/TCP`,
    /// `delete destination 10.244.1.5:8080 of 10.96.0.10:80/TCP`, …
    pub fn describe(&self) -> String {
        match self {
            Op::AddService(s) => format!("add service {}", s.key()),
            Op::UpdateService(s) => format!("update service {}", s.key()),
            Op::DeleteService(s) => format!("delete service {}", s.key()),
            Op::AddDest(s, d) => format!("add destination {} to {}", d.socket_addr(), s.key()),
            Op::UpdateDest(s, d) => {
                format!("update destination {} of {}", d.socket_addr(), s.key())
            }
            Op::DeleteDest(s, d) => {
                format!("delete destination {} of {}", d.socket_addr(), s.key())
            }
        }
    }
}

/// What [`diff`] needs besides the two states.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// The proxier's family: services of the other family are never touched.
    pub family: Option<IpFamily>,
    /// `ipvs.excludeCIDRs`: services with an address inside are never deleted.
    pub exclude_cidrs: Vec<IpNet>,
    /// Draining destinations whose grace period is over: deleted even with connections.
    pub expired: BTreeSet<DestKey>,
}

/// The operations, in order, and the destinations left draining.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Operations to run in order.
    pub ops: Vec<Op>,
    /// Unwanted destinations kept at weight 0 until their connections end.
    pub draining: BTreeSet<DestKey>,
}

/// Whether the reconciler may delete this kernel service.
pub fn owned(svc: &Service, opts: &DiffOptions) -> bool {
    svc.fwmark == 0
        && opts.family.is_none_or(|f| f == svc.family)
        && !opts.exclude_cidrs.iter().any(|c| c.contains(&svc.address))
}

/// The operations that turn `actual` into `desired` (see the module docs).
pub fn diff(
    actual: &Actual,
    desired: &BTreeMap<ServiceKey, VirtualServer>,
    opts: &DiffOptions,
) -> Diff {
    let mut out = Diff::default();
    // Destructive ops (deletes, weight 0) go last, after every add and update: a sync
    // that fails midway has added what is new before taking away what is old (upstream
    // `syncEndpoint` adds before it deletes, and `cleanLegacyService` runs last).
    let mut removals = Vec::new();
    for (key, vs) in desired {
        let want = &vs.service;
        let have_dests: &[Destination] = match actual.get(key) {
            None => {
                out.ops.push(Op::AddService(want.clone()));
                &[]
            }
            Some((have, dests)) => {
                if !have.same_config(want) {
                    out.ops.push(Op::UpdateService(want.clone()));
                }
                dests
            }
        };
        let have: BTreeMap<SocketAddr, &Destination> =
            have_dests.iter().map(|d| (d.socket_addr(), d)).collect();
        let wanted: BTreeSet<SocketAddr> = vs
            .destinations
            .iter()
            .map(Destination::socket_addr)
            .collect();
        for d in &vs.destinations {
            match have.get(&d.socket_addr()) {
                None => out.ops.push(Op::AddDest(want.clone(), d.clone())),
                Some(h) if h.weight != d.weight || h.fwd_method != d.fwd_method => {
                    out.ops.push(Op::UpdateDest(want.clone(), d.clone()))
                }
                Some(_) => {}
            }
        }
        for (addr, h) in have.iter().filter(|(a, _)| !wanted.contains(a)) {
            let dk = (*key, *addr);
            let datagram = matches!(want.protocol, IpvsProtocol::Udp | IpvsProtocol::Sctp);
            if datagram || h.connections() == 0 || opts.expired.contains(&dk) {
                removals.push(Op::DeleteDest(want.clone(), (*h).clone()));
            } else {
                if h.weight != 0 {
                    let mut quiesced = (*h).clone();
                    quiesced.weight = 0;
                    removals.push(Op::UpdateDest(want.clone(), quiesced));
                }
                out.draining.insert(dk);
            }
        }
    }
    out.ops.append(&mut removals);
    for (key, (svc, _)) in actual {
        if !desired.contains_key(key) && owned(svc, opts) {
            out.ops.push(Op::DeleteService(svc.clone()));
        }
    }
    out
}

/// Applies one operation to a model of the kernel (what the kernel does with it; the
/// fake IPVS uses this too). Errors mirror the kernel's: adding what exists, changing
/// or deleting what does not.
pub fn apply(actual: &mut Actual, op: &Op) -> Result<(), &'static str> {
    match op {
        Op::AddService(s) => {
            if actual.contains_key(&s.key()) {
                return Err("service exists");
            }
            actual.insert(s.key(), (s.clone(), Vec::new()));
        }
        Op::UpdateService(s) => {
            let (have, _) = actual.get_mut(&s.key()).ok_or("no such service")?;
            let stats = have.stats;
            *have = s.clone();
            have.stats = stats;
        }
        Op::DeleteService(s) => {
            actual.remove(&s.key()).ok_or("no such service")?;
        }
        Op::AddDest(s, d) => {
            let (_, dests) = actual.get_mut(&s.key()).ok_or("no such service")?;
            if dests.iter().any(|x| x.socket_addr() == d.socket_addr()) {
                return Err("destination exists");
            }
            dests.push(d.clone());
            dests.sort_by_key(Destination::socket_addr);
        }
        Op::UpdateDest(s, d) => {
            let (_, dests) = actual.get_mut(&s.key()).ok_or("no such service")?;
            let have = dests
                .iter_mut()
                .find(|x| x.socket_addr() == d.socket_addr())
                .ok_or("no such destination")?;
            have.weight = d.weight;
            have.fwd_method = d.fwd_method;
            have.u_thresh = d.u_thresh;
            have.l_thresh = d.l_thresh;
        }
        Op::DeleteDest(s, d) => {
            let (_, dests) = actual.get_mut(&s.key()).ok_or("no such service")?;
            let n = dests.len();
            dests.retain(|x| x.socket_addr() != d.socket_addr());
            if dests.len() == n {
                return Err("no such destination");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
