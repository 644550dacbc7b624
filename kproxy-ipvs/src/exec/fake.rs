//! In-memory fakes: [`FakeIpvs`] models the kernel's IPVS table, [`RecordingExecutor`]
//! records every host operation and keeps just enough state (addresses, set names) to
//! answer the proxier's reads.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use kproxy_core::StaleFlow;
use kproxy_core::model::IpFamily;

use super::Executor;
use crate::error::{Error, Result};
use crate::handle::IpvsOps;
use crate::netlink::{Destination, IpvsInfo, Service};
use crate::reconcile::{Actual, Op, apply};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How an injected IPVS write failure behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The kernel refuses the request: nothing changes, an error comes back.
    Refuse,
    /// The kernel carries the request out but its answer is lost (an `ENOBUFS`
    /// overrun, a dead socket): the table changes, yet the caller sees an error.
    LostAck,
}

#[derive(Debug, Default)]
struct Faults {
    /// Writes so far (the index of the next write).
    writes: usize,
    /// One-shot faults by write index.
    at: BTreeMap<usize, (Fault, String)>,
    /// Every write from this index on is refused (a socket that died).
    from: Option<usize>,
    /// Every list or dump fails while set.
    reads: bool,
    /// Virtual servers whose every write is refused (like a scheduler the kernel
    /// cannot load: `ENOENT` for each add or update).
    refused: BTreeSet<crate::netlink::ServiceKey>,
}

/// A fake IPVS table. Every write goes through [`apply`], the same model the
/// reconciler's property tests check against, and is recorded. Faults can be injected
/// at any write ([`fail_nth`](Self::fail_nth), [`fail_from`](Self::fail_from)) or read
/// ([`fail_reads`](Self::fail_reads)).
#[derive(Debug, Default)]
pub struct FakeIpvs {
    state: Mutex<Actual>,
    ops: Mutex<Vec<Op>>,
    timeouts: Mutex<IpvsInfo>,
    faults: Mutex<Faults>,
}

impl FakeIpvs {
    /// The table now.
    pub fn state(&self) -> Actual {
        lock(&self.state).clone()
    }

    /// Every write so far, oldest first (flushes are not recorded).
    pub fn ops(&self) -> Vec<Op> {
        lock(&self.ops).clone()
    }

    /// Forgets the recorded writes (the table stays).
    pub fn clear_ops(&self) {
        lock(&self.ops).clear();
    }

    /// Sets the active connections of a destination, as traffic would.
    pub fn set_connections(
        &self,
        svc: &crate::netlink::ServiceKey,
        dest: std::net::SocketAddr,
        active: u32,
    ) {
        if let Some((_, ds)) = lock(&self.state).get_mut(svc)
            && let Some(d) = ds.iter_mut().find(|d| d.socket_addr() == dest)
        {
            d.active_conns = active;
        }
    }

    /// Makes the next write fail with `reason` (refused).
    pub fn fail_next(&self, reason: &str) {
        self.fail_nth(0, Fault::Refuse, reason);
    }

    /// Makes the write `n` writes from now (0: the next) fail once, as `fault` says.
    pub fn fail_nth(&self, n: usize, fault: Fault, reason: &str) {
        let mut f = lock(&self.faults);
        let at = f.writes + n;
        f.at.insert(at, (fault, reason.to_owned()));
    }

    /// Refuses every write from `n` writes from now on, until [`heal`](Self::heal).
    pub fn fail_from(&self, n: usize) {
        let mut f = lock(&self.faults);
        f.from = Some(f.writes + n);
    }

    /// Refuses every write about virtual server `key`, until [`heal`](Self::heal).
    pub fn refuse_service(&self, key: crate::netlink::ServiceKey) {
        lock(&self.faults).refused.insert(key);
    }

    /// Makes every list and dump fail (or work again).
    pub fn fail_reads(&self, on: bool) {
        lock(&self.faults).reads = on;
    }

    /// Drops every pending fault.
    pub fn heal(&self) {
        let mut f = lock(&self.faults);
        f.at.clear();
        f.from = None;
        f.reads = false;
        f.refused.clear();
    }

    /// Writes attempted so far, failed ones included.
    pub fn writes(&self) -> usize {
        lock(&self.faults).writes
    }

    fn read(&self) -> Result<()> {
        if lock(&self.faults).reads {
            return Err(Error::Injected("dump".into()));
        }
        Ok(())
    }

    fn write(&self, op: Op) -> Result<()> {
        let fault = {
            let mut f = lock(&self.faults);
            let i = f.writes;
            f.writes += 1;
            match f.at.remove(&i) {
                Some(x) => Some(x),
                None if f.from.is_some_and(|from| i >= from) => {
                    Some((Fault::Refuse, "socket closed".to_owned()))
                }
                None if f.refused.contains(&op.service().key()) => {
                    Some((Fault::Refuse, "refused".to_owned()))
                }
                None => None,
            }
        };
        if let Some((Fault::Refuse, r)) = &fault {
            return Err(Error::Injected(format!("{}: {r}", op.describe())));
        }
        apply(&mut lock(&self.state), &op).map_err(|e| Error::Kernel {
            op: op.describe(),
            source: std::io::Error::other(e),
        })?;
        lock(&self.ops).push(op.clone());
        if let Some((Fault::LostAck, r)) = fault {
            return Err(Error::Injected(format!("{}: {r}", op.describe())));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl IpvsOps for FakeIpvs {
    async fn list_services(&self) -> Result<Vec<Service>> {
        self.read()?;
        Ok(lock(&self.state).values().map(|(s, _)| s.clone()).collect())
    }
    async fn add_service(&self, svc: &Service) -> Result<()> {
        self.write(Op::AddService(svc.clone()))
    }
    async fn update_service(&self, svc: &Service) -> Result<()> {
        self.write(Op::UpdateService(svc.clone()))
    }
    async fn delete_service(&self, svc: &Service) -> Result<()> {
        self.write(Op::DeleteService(svc.clone()))
    }
    async fn list_destinations(&self, svc: &Service) -> Result<Vec<Destination>> {
        self.read()?;
        Ok(lock(&self.state)
            .get(&svc.key())
            .map(|(_, d)| d.clone())
            .unwrap_or_default())
    }
    async fn add_destination(&self, svc: &Service, dest: &Destination) -> Result<()> {
        self.write(Op::AddDest(svc.clone(), dest.clone()))
    }
    async fn update_destination(&self, svc: &Service, dest: &Destination) -> Result<()> {
        self.write(Op::UpdateDest(svc.clone(), dest.clone()))
    }
    async fn delete_destination(&self, svc: &Service, dest: &Destination) -> Result<()> {
        self.write(Op::DeleteDest(svc.clone(), dest.clone()))
    }
    async fn flush(&self) -> Result<()> {
        lock(&self.state).clear();
        Ok(())
    }
    async fn set_timeouts(&self, t: &IpvsInfo) -> Result<()> {
        let cur = &mut *lock(&self.timeouts);
        let keep = |new: u32, old: u32| if new > 0 { new } else { old };
        cur.tcp_timeout = keep(t.tcp_timeout, cur.tcp_timeout);
        cur.tcp_fin_timeout = keep(t.tcp_fin_timeout, cur.tcp_fin_timeout);
        cur.udp_timeout = keep(t.udp_timeout, cur.udp_timeout);
        Ok(())
    }
    async fn info(&self) -> Result<IpvsInfo> {
        Ok(IpvsInfo {
            version: 0x010201,
            conn_tab_size: 4096,
            ..*lock(&self.timeouts)
        })
    }
}

/// One call a [`RecordingExecutor`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `ensure_dummy(name)`.
    EnsureDummy(String),
    /// `delete_dummy(name)`.
    DeleteDummy(String),
    /// `add_address(name, ip)`.
    AddAddress(String, IpAddr),
    /// `del_address(name, ip)`.
    DelAddress(String, IpAddr),
    /// `ipset_restore(text)`.
    IpsetRestore(String),
    /// `restore_iptables(family, text)`.
    RestoreIptables(IpFamily, String),
    /// `iptables(family, args)`.
    Iptables(IpFamily, Vec<String>),
    /// `conntrack_delete(flow)`.
    ConntrackDelete(StaleFlow),
    /// `set_sysctl(key, value)`.
    SetSysctl(String, String),
}

/// A host operation a [`RecordingExecutor`] can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailPoint {
    /// `ipset_restore`: nothing of the text is applied (`ipset restore` stops at the
    /// first bad line, but the proxier's lines are all valid or all refused).
    IpsetRestore,
    /// `restore_iptables`.
    RestoreIptables,
    /// `add_address`.
    AddAddress,
    /// `del_address`.
    DelAddress,
}

/// Records every call; reads answer from what was written, and it keeps the ipsets'
/// entries so tests can check them. [`fail_next`](Self::fail_next) makes the next call
/// of a kind fail, to check that a failed sync keeps the last good state and is retried.
#[derive(Debug, Default)]
pub struct RecordingExecutor {
    calls: Mutex<Vec<Call>>,
    addresses: Mutex<BTreeMap<String, BTreeSet<IpAddr>>>,
    sets: Mutex<BTreeMap<String, BTreeSet<String>>>,
    rules: Mutex<BTreeSet<(IpFamily, Vec<String>)>>,
    fail: Mutex<BTreeSet<FailPoint>>,
}

impl RecordingExecutor {
    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    /// Forgets the recorded calls (state stays).
    pub fn clear(&self) {
        lock(&self.calls).clear();
    }

    /// The addresses on link `name`.
    pub fn addresses(&self, name: &str) -> BTreeSet<IpAddr> {
        lock(&self.addresses).get(name).cloned().unwrap_or_default()
    }

    /// The ipsets that exist.
    pub fn set_names(&self) -> BTreeSet<String> {
        lock(&self.sets).keys().cloned().collect()
    }

    /// The entries of ipset `name` (empty if it does not exist).
    pub fn set_entries(&self, name: &str) -> BTreeSet<String> {
        lock(&self.sets).get(name).cloned().unwrap_or_default()
    }

    /// Makes the next `restore_iptables` fail.
    pub fn fail_next_restore(&self) {
        self.fail_next(FailPoint::RestoreIptables);
    }

    /// Makes the next call of kind `p` fail (it is still recorded).
    pub fn fail_next(&self, p: FailPoint) {
        lock(&self.fail).insert(p);
    }

    fn record(&self, c: Call) {
        lock(&self.calls).push(c);
    }

    fn fails(&self, p: FailPoint) -> Result<()> {
        if lock(&self.fail).remove(&p) {
            return Err(Error::Injected(format!("{p:?}")));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Executor for RecordingExecutor {
    async fn ensure_dummy(&self, name: &str) -> Result<()> {
        self.record(Call::EnsureDummy(name.into()));
        lock(&self.addresses).entry(name.into()).or_default();
        Ok(())
    }
    async fn delete_dummy(&self, name: &str) -> Result<()> {
        self.record(Call::DeleteDummy(name.into()));
        lock(&self.addresses).remove(name);
        Ok(())
    }
    async fn list_addresses(&self, name: &str, family: IpFamily) -> Result<BTreeSet<IpAddr>> {
        Ok(self
            .addresses(name)
            .into_iter()
            .filter(|a| IpFamily::of(a) == family)
            .collect())
    }
    async fn add_address(&self, name: &str, ip: IpAddr) -> Result<()> {
        self.record(Call::AddAddress(name.into(), ip));
        self.fails(FailPoint::AddAddress)?;
        lock(&self.addresses)
            .entry(name.into())
            .or_default()
            .insert(ip);
        Ok(())
    }
    async fn del_address(&self, name: &str, ip: IpAddr) -> Result<()> {
        self.record(Call::DelAddress(name.into(), ip));
        self.fails(FailPoint::DelAddress)?;
        lock(&self.addresses)
            .entry(name.into())
            .or_default()
            .remove(&ip);
        Ok(())
    }
    async fn ipset_names(&self) -> Result<BTreeSet<String>> {
        Ok(self.set_names())
    }
    async fn ipset_restore(&self, text: &str) -> Result<()> {
        self.record(Call::IpsetRestore(text.into()));
        self.fails(FailPoint::IpsetRestore)?;
        // `ipset restore -exist` semantics, for the commands the proxier writes.
        let mut sets = lock(&self.sets);
        for line in text.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["create", name, ..] => {
                    sets.entry((*name).to_owned()).or_default();
                }
                ["destroy", name] => {
                    sets.remove(*name);
                }
                ["add", name, e] => {
                    sets.entry((*name).to_owned())
                        .or_default()
                        .insert((*e).to_owned());
                }
                ["del", name, e] => {
                    if let Some(s) = sets.get_mut(*name) {
                        s.remove(*e);
                    }
                }
                ["swap", a, b] => {
                    let x = sets.remove(*a).unwrap_or_default();
                    let y = sets.remove(*b).unwrap_or_default();
                    sets.insert((*a).to_owned(), y);
                    sets.insert((*b).to_owned(), x);
                }
                _ => {}
            }
        }
        Ok(())
    }
    async fn restore_iptables(&self, family: IpFamily, text: &str) -> Result<()> {
        self.record(Call::RestoreIptables(family, text.into()));
        self.fails(FailPoint::RestoreIptables)
    }
    async fn iptables(&self, family: IpFamily, args: &[String]) -> Result<bool> {
        self.record(Call::Iptables(family, args.to_vec()));
        // Model jump rules only: `-t T -C/-I/-D CHAIN [1] rule…`.
        let (op, key) = match args {
            [t, table, op, chain, rest @ ..] if t == "-t" => {
                let rest: Vec<String> = if op == "-I" && rest.first().is_some_and(|p| p == "1") {
                    rest[1..].to_vec()
                } else {
                    rest.to_vec()
                };
                (
                    op.as_str(),
                    (family, [vec![table.clone(), chain.clone()], rest].concat()),
                )
            }
            _ => return Ok(true),
        };
        let mut rules = lock(&self.rules);
        Ok(match op {
            "-C" => rules.contains(&key),
            "-I" | "-A" => {
                rules.insert(key);
                true
            }
            "-D" => rules.remove(&key),
            _ => true,
        })
    }
    async fn conntrack_delete(&self, flow: &StaleFlow) -> Result<()> {
        self.record(Call::ConntrackDelete(*flow));
        Ok(())
    }
    async fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.record(Call::SetSysctl(key.into(), value.into()));
        Ok(())
    }
}
