//! [`ChangeSet`]: what changed between two [`ServiceMap`]s, for partial syncs and
//! conntrack cleanup.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{IpFamily, Protocol, ServicePortName};
use crate::service_map::{ServiceMap, ServicePort};

/// A (family, service port) key.
pub type PortKey = (IpFamily, ServicePortName);

/// Where stale conntrack flows were headed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FlowTarget {
    /// A virtual IP (cluster, external or load-balancer IP) and service port.
    Vip {
        /// The virtual IP.
        ip: IpAddr,
        /// The service port.
        port: u16,
    },
    /// A node port, on any node address.
    NodePort(u16),
}

/// Conntrack entries that must go so that new packets are routed afresh (UDP and SCTP
/// only: their flows outlive the rules). Upstream kube-proxy deletes the same entries
/// (`conntrack -D --orig-dst <vip> [--dst-nat <endpoint>] -p udp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StaleFlow {
    /// Address family of the flows.
    pub family: IpFamily,
    /// UDP or SCTP.
    pub protocol: Protocol,
    /// Their original destination.
    pub target: FlowTarget,
    /// Only flows NATed to this endpoint IP; `None` for every flow to the target (the
    /// service went away, or got its first endpoints after traffic was rejected).
    pub endpoint: Option<IpAddr>,
}

/// What changed between two maps. Backends program only the ports named here (unless
/// `full`), then delete `stale_flows`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeSet {
    /// Resync everything: the first sync, after a failure, or on the periodic full sync.
    pub full: bool,
    /// Ports that are new.
    pub added: BTreeSet<PortKey>,
    /// Ports that are gone.
    pub removed: BTreeSet<PortKey>,
    /// Ports whose definition or endpoints changed.
    pub updated: BTreeSet<PortKey>,
    /// Conntrack entries to delete after the new rules are in place (sorted, unique).
    pub stale_flows: Vec<StaleFlow>,
}

impl ChangeSet {
    /// A change set that asks for a full resync.
    pub fn full() -> ChangeSet {
        ChangeSet {
            full: true,
            ..Default::default()
        }
    }

    /// The changes from `before` to `after`, comparing every port.
    pub fn between(before: &ServiceMap, after: &ServiceMap) -> ChangeSet {
        let mut cs = ChangeSet::default();
        for fam in IpFamily::ALL {
            let (b, a) = (before.family(fam), after.family(fam));
            for (name, bp) in b {
                cs.record(Some(bp), a.get(name));
            }
            for (name, ap) in a {
                if !b.contains_key(name) {
                    cs.record(None, Some(ap));
                }
            }
        }
        cs.finish();
        cs
    }

    /// Whether nothing changed (and no full sync is asked for).
    pub fn is_empty(&self) -> bool {
        !self.full
            && self.added.is_empty()
            && self.removed.is_empty()
            && self.updated.is_empty()
            && self.stale_flows.is_empty()
    }

    /// Whether the port must be (re)programmed: a full sync, or it was added or updated.
    pub fn touches(&self, family: IpFamily, name: &ServicePortName) -> bool {
        let key = (family, name.clone());
        self.full || self.added.contains(&key) || self.updated.contains(&key)
    }

    /// Number of ports added, removed or updated.
    pub fn len(&self) -> usize {
        self.added.len() + self.removed.len() + self.updated.len()
    }

    /// Folds a later change set into this one, so that a backend that skipped a sync can
    /// apply both at once: added-then-removed cancels out, removed-then-added becomes
    /// updated, and stale flows accumulate.
    pub fn merge(&mut self, later: ChangeSet) {
        self.full |= later.full;
        for k in later.added {
            if self.removed.remove(&k) {
                self.updated.insert(k);
            } else {
                self.added.insert(k);
            }
        }
        for k in later.removed {
            if self.added.remove(&k) {
                continue;
            }
            self.updated.remove(&k);
            self.removed.insert(k);
        }
        for k in later.updated {
            if !self.added.contains(&k) {
                self.updated.insert(k);
            }
        }
        self.stale_flows.extend(later.stale_flows);
        self.finish();
    }

    /// Records the change of one port (`None`: absent on that side).
    pub(crate) fn record(&mut self, before: Option<&ServicePort>, after: Option<&ServicePort>) {
        match (before, after) {
            (None, None) => {}
            (None, Some(a)) => {
                self.added.insert((a.family, a.name.clone()));
                if a.name.protocol.needs_conntrack_cleanup() && a.selection.has_any_endpoints {
                    self.flush_all(a);
                }
            }
            (Some(b), None) => {
                self.removed.insert((b.family, b.name.clone()));
                if b.name.protocol.needs_conntrack_cleanup() {
                    self.flush_all(b);
                }
            }
            (Some(b), Some(a)) => {
                if a == b {
                    return;
                }
                self.updated.insert((a.family, a.name.clone()));
                if !a.name.protocol.needs_conntrack_cleanup() {
                    return;
                }
                let before_eps = b.reachable_endpoints();
                let after_eps = a.reachable_endpoints();
                if before_eps.is_empty() && !after_eps.is_empty() {
                    // Traffic was rejected; its conntrack entries would keep it rejected.
                    self.flush_all(a);
                }
                let gone: BTreeSet<IpAddr> = before_eps
                    .iter()
                    .filter(|e| after_eps.binary_search(e).is_err())
                    .map(|e| e.ip())
                    .collect();
                let targets = targets_of(b);
                for ep in gone {
                    for t in &targets {
                        self.stale_flows.push(StaleFlow {
                            family: b.family,
                            protocol: b.name.protocol,
                            target: *t,
                            endpoint: Some(ep),
                        });
                    }
                }
                // Virtual IPs or node ports the port no longer has.
                let after_targets = targets_of(a);
                for t in targets.into_iter().filter(|t| !after_targets.contains(t)) {
                    self.stale_flows.push(StaleFlow {
                        family: b.family,
                        protocol: b.name.protocol,
                        target: t,
                        endpoint: None,
                    });
                }
            }
        }
    }

    fn flush_all(&mut self, p: &ServicePort) {
        for t in targets_of(p) {
            self.stale_flows.push(StaleFlow {
                family: p.family,
                protocol: p.name.protocol,
                target: t,
                endpoint: None,
            });
        }
    }

    /// Sorts and de-duplicates the stale flows.
    pub(crate) fn finish(&mut self) {
        self.stale_flows.sort_unstable();
        self.stale_flows.dedup();
    }
}

fn targets_of(p: &ServicePort) -> Vec<FlowTarget> {
    let mut t: Vec<FlowTarget> = p
        .virtual_ips()
        .map(|ip| FlowTarget::Vip { ip, port: p.port })
        .collect();
    if let Some(np) = p.node_port {
        t.push(FlowTarget::NodePort(np));
    }
    t
}

/// Compares two port lists of the same service (any order) and records the differences.
pub(crate) fn record_service(cs: &mut ChangeSet, before: Vec<ServicePort>, after: &[ServicePort]) {
    let mut old: BTreeMap<PortKey, ServicePort> = before
        .into_iter()
        .map(|p| ((p.family, p.name.clone()), p))
        .collect();
    for a in after {
        let b = old.remove(&(a.family, a.name.clone()));
        cs.record(b.as_ref(), Some(a));
    }
    for b in old.values() {
        cs.record(Some(b), None);
    }
}
