//! [`IncrementalPlan`]: a [`Plan`] kept up to date port by port, so a sync that changes
//! one service port of 10,000 re-plans that port only. It keeps what each port
//! contributed ([`PortPlan`]) with reference counts for what ports share (addresses,
//! set entries, virtual servers two ports claim), and always equals [`plan`] of the
//! same map (a property test checks this).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use kproxy_core::ServiceMap;
use kproxy_core::model::ServicePortName;

use super::{
    IpSet, Plan, PlanContext, PortPlan, SETS, SetId, VirtualServer, iptables, jump_rules,
    port_plan, set_name,
};
use crate::netlink::ServiceKey;

/// What an [`IncrementalPlan::update`] changed in the plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanDelta {
    /// Virtual servers added, removed or changed.
    pub services: BTreeSet<ServiceKey>,
    /// Set entries that appeared.
    pub entries_added: Vec<(SetId, String)>,
    /// Set entries that disappeared.
    pub entries_removed: Vec<(SetId, String)>,
    /// Addresses to bind.
    pub addresses_added: Vec<IpAddr>,
    /// Addresses to unbind.
    pub addresses_removed: Vec<IpAddr>,
    /// Whether the companion iptables rules changed.
    pub iptables_changed: bool,
}

impl PlanDelta {
    /// The `ipset restore -exist` input applying the entry changes to sets that hold
    /// the previous plan's entries, with the set names of `plan`.
    pub fn ipset_text(&self, plan: &Plan) -> String {
        use std::fmt::Write as _;
        let name = |id: SetId| {
            plan.ipsets
                .iter()
                .find(|s| s.id == id)
                .map_or("", |s| s.name.as_str())
        };
        let mut out = String::new();
        for (id, e) in &self.entries_removed {
            let _ = writeln!(out, "del {} {e}", name(*id));
        }
        for (id, e) in &self.entries_added {
            let _ = writeln!(out, "add {} {e}", name(*id));
        }
        out
    }
}

/// A plan and the per-port pieces it was made of.
#[derive(Debug, Clone)]
pub struct IncrementalPlan {
    cx: PlanContext,
    ports: BTreeMap<ServicePortName, PortPlan>,
    /// Every claimant of a virtual server key; the plan holds the last (as [`plan`],
    /// where the last port planned wins).
    owners: BTreeMap<ServiceKey, BTreeMap<ServicePortName, VirtualServer>>,
    entries: BTreeMap<(SetId, String), usize>,
    addresses: BTreeMap<IpAddr, usize>,
    lb_no_node_access: BTreeMap<(IpAddr, &'static str, u16), usize>,
    plan: Plan,
}

impl IncrementalPlan {
    /// Plans every port of `map` in `cx`'s family.
    pub fn new(map: &ServiceMap, cx: PlanContext) -> IncrementalPlan {
        let family = cx.family();
        let mut me = IncrementalPlan {
            plan: Plan {
                family,
                services: BTreeMap::new(),
                addresses: Default::default(),
                ipsets: SETS
                    .iter()
                    .map(|(id, _, set_type, _)| IpSet {
                        id: *id,
                        name: set_name(*id, family),
                        set_type: *set_type,
                        entries: BTreeSet::new(),
                    })
                    .collect(),
                iptables: String::new(),
                jumps: jump_rules(),
            },
            cx,
            ports: BTreeMap::new(),
            owners: BTreeMap::new(),
            entries: BTreeMap::new(),
            addresses: BTreeMap::new(),
            lb_no_node_access: BTreeMap::new(),
        };
        let names: Vec<ServicePortName> = map.family(family).keys().cloned().collect();
        me.update(map, &names);
        me
    }

    /// The context it plans in (a different one needs a new [`IncrementalPlan`]).
    pub fn context(&self) -> &PlanContext {
        &self.cx
    }

    /// The plan now.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Re-plans the ports `names` (added, changed or removed in `map`) and returns what
    /// changed in the plan.
    pub fn update(&mut self, map: &ServiceMap, names: &[ServicePortName]) -> PlanDelta {
        let family = self.cx.family();
        let mut keys = BTreeSet::new();
        let mut rules_changed = false;
        let mut delta = PlanDelta::default();
        for name in names {
            let new = map
                .family(family)
                .get(name)
                .map(|sp| port_plan(sp, &self.cx));
            let old = self.ports.remove(name);
            if old == new {
                if let Some(o) = old {
                    self.ports.insert(name.clone(), o);
                }
                continue;
            }
            if let Some(old) = &old {
                rules_changed |= self.count(name, old, false, &mut keys, &mut delta);
            }
            if let Some(new) = new {
                rules_changed |= self.count(name, &new, true, &mut keys, &mut delta);
                self.ports.insert(name.clone(), new);
            }
        }
        for k in keys {
            let now = self
                .owners
                .get(&k)
                .and_then(|o| o.last_key_value())
                .map(|(_, v)| v.clone());
            let before = match now {
                Some(v) => self.plan.services.insert(k, v.clone()).filter(|b| *b == v),
                None => {
                    self.plan.services.remove(&k);
                    None
                }
            };
            if before.is_none() {
                delta.services.insert(k);
            }
        }
        if rules_changed || self.plan.iptables.is_empty() {
            let mut inputs = self.cx.inputs.clone();
            inputs.lb_no_node_access = self.lb_no_node_access.keys().copied().collect();
            let text = iptables::restore_text(&self.plan.ipsets, &inputs);
            delta.iptables_changed = text != self.plan.iptables;
            self.plan.iptables = text;
        }
        // An entry or address removed by one port and added back by another (or the
        // other way round) in the same update is no change.
        cancel(&mut delta.entries_added, &mut delta.entries_removed);
        cancel(&mut delta.addresses_added, &mut delta.addresses_removed);
        delta
    }

    /// Adds (`add`) or removes the contributions of port `name`; returns whether the
    /// companion rules may have changed (a set became empty or non-empty, or the LBs
    /// the node may not reach changed).
    fn count(
        &mut self,
        name: &ServicePortName,
        pp: &PortPlan,
        add: bool,
        keys: &mut BTreeSet<ServiceKey>,
        delta: &mut PlanDelta,
    ) -> bool {
        let mut rules = false;
        for vs in &pp.services {
            let k = vs.service.key();
            keys.insert(k);
            let o = self.owners.entry(k).or_default();
            if add {
                o.insert(name.clone(), vs.clone());
            } else {
                o.remove(name);
                if o.is_empty() {
                    self.owners.remove(&k);
                }
            }
        }
        for (id, e) in &pp.entries {
            if bump(&mut self.entries, (*id, e.clone()), add) {
                rules |= self.set_entry(*id, e, add);
                let d = if add {
                    &mut delta.entries_added
                } else {
                    &mut delta.entries_removed
                };
                d.push((*id, e.clone()));
            }
        }
        for ip in &pp.addresses {
            if bump(&mut self.addresses, *ip, add) {
                if add {
                    self.plan.addresses.insert(*ip);
                    delta.addresses_added.push(*ip);
                } else {
                    self.plan.addresses.remove(ip);
                    delta.addresses_removed.push(*ip);
                }
                let e = ip.to_string();
                rules |= self.set_entry(SetId::IpvsIps, &e, add);
                let d = if add {
                    &mut delta.entries_added
                } else {
                    &mut delta.entries_removed
                };
                d.push((SetId::IpvsIps, e));
            }
        }
        for lb in &pp.lb_no_node_access {
            rules |= bump(&mut self.lb_no_node_access, *lb, add);
        }
        rules
    }

    /// Adds or removes one entry of set `id`; returns whether the set's emptiness
    /// changed (the rules skip empty sets).
    fn set_entry(&mut self, id: SetId, e: &str, add: bool) -> bool {
        let Some(set) = self.plan.ipsets.iter_mut().find(|s| s.id == id) else {
            return false;
        };
        let was_empty = set.entries.is_empty();
        if add {
            set.entries.insert(e.to_owned());
        } else {
            set.entries.remove(e);
        }
        was_empty != set.entries.is_empty()
    }
}

/// Drops what is in both lists.
fn cancel<T: Ord + Clone>(added: &mut Vec<T>, removed: &mut Vec<T>) {
    let a: BTreeSet<T> = added.iter().cloned().collect();
    let r: BTreeSet<T> = removed.iter().cloned().collect();
    added.retain(|x| !r.contains(x));
    removed.retain(|x| !a.contains(x));
}

/// Counts `k` up or down; returns whether it appeared (0 → 1) or disappeared (1 → 0).
fn bump<K: Ord>(counts: &mut BTreeMap<K, usize>, k: K, add: bool) -> bool {
    if add {
        let c = counts.entry(k).or_insert(0);
        *c += 1;
        *c == 1
    } else {
        match counts.get_mut(&k) {
            Some(c) if *c > 1 => {
                *c -= 1;
                false
            }
            Some(_) => {
                counts.remove(&k);
                true
            }
            None => false,
        }
    }
}
