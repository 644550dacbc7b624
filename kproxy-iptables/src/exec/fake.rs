//! [`RecordingExecutor`]: records every call and applies restores to an in-memory
//! [`Ruleset`] per family, so tests can trace packets through what "the kernel" holds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use kproxy_core::StaleFlow;
use kproxy_core::model::IpFamily;

use super::{Executor, RestoreFlags};
use crate::error::{Error, Result};
use crate::nfacct::Counter;
use crate::plan::Table;
use crate::ruleset::Ruleset;

/// One call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `iptables-restore`.
    Restore {
        /// Family.
        family: IpFamily,
        /// The input.
        text: String,
        /// Flags.
        flags: RestoreFlags,
    },
    /// `iptables-save -t`.
    Save(IpFamily, Table),
    /// `iptables -N`.
    EnsureChain(IpFamily, Table, String),
    /// `iptables -S CHAIN`.
    ChainExists(IpFamily, Table, String),
    /// `iptables -C/-I`.
    EnsureRule(IpFamily, Table, String, Vec<String>),
    /// `iptables -D`.
    DeleteRule(IpFamily, Table, String, Vec<String>),
    /// `conntrack -D`.
    DeleteFlows(StaleFlow),
    /// `iptables --version`.
    Version(IpFamily),
    /// nfacct NEW.
    EnsureNfacct(String),
    /// nfacct GET.
    ReadNfacct(String),
}

/// Records calls, keeps a model of each family's tables. `fail_next` makes the next
/// restore fail without changing the model, as a failed `iptables-restore` leaves the
/// kernel unchanged. Like the kernel, a restore whose rules name an nfacct object that
/// does not exist fails; `no_nfacct` makes creating them fail (no `nfnetlink_acct`,
/// no permission).
#[derive(Debug, Default)]
pub struct RecordingExecutor {
    /// Every call, oldest first.
    pub calls: Mutex<Vec<Call>>,
    /// Fail the next restore.
    pub fail_next: AtomicBool,
    /// nfacct objects cannot be created.
    pub no_nfacct: AtomicBool,
    models: Mutex<BTreeMap<IpFamily, Ruleset>>,
    nfacct: Mutex<BTreeMap<String, Counter>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RecordingExecutor {
    /// A fake with empty tables.
    pub fn new() -> Self {
        RecordingExecutor::default()
    }

    /// The model of one family's tables.
    pub fn model(&self, family: IpFamily) -> Ruleset {
        lock(&self.models).get(&family).cloned().unwrap_or_default()
    }

    /// Replaces one family's tables (e.g. to simulate someone flushing them).
    pub fn set_model(&self, family: IpFamily, rs: Ruleset) {
        lock(&self.models).insert(family, rs);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    /// The restores so far.
    pub fn restores(&self) -> Vec<(IpFamily, String)> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Restore { family, text, .. } => Some((family, text)),
                _ => None,
            })
            .collect()
    }

    /// Sets the counters of nfacct object `name` (creating it), as packets would.
    pub fn set_nfacct(&self, name: &str, packets: u64, bytes: u64) {
        lock(&self.nfacct).insert(
            name.to_owned(),
            Counter {
                name: name.to_owned(),
                packets,
                bytes,
            },
        );
    }

    /// The nfacct objects that exist.
    pub fn nfacct_names(&self) -> BTreeSet<String> {
        lock(&self.nfacct).keys().cloned().collect()
    }

    fn record(&self, c: Call) {
        lock(&self.calls).push(c);
    }

    fn with_model<T>(&self, family: IpFamily, f: impl FnOnce(&mut Ruleset) -> T) -> T {
        let mut models = lock(&self.models);
        f(models.entry(family).or_default())
    }
}

#[async_trait::async_trait]
impl Executor for RecordingExecutor {
    async fn restore(&self, family: IpFamily, text: &str, flags: RestoreFlags) -> Result<()> {
        self.record(Call::Restore {
            family,
            text: text.to_owned(),
            flags,
        });
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(Error::Injected("iptables-restore".into()));
        }
        let mut words = text.split_whitespace();
        while let Some(w) = words.next() {
            if w == "--nfacct-name"
                && let Some(name) = words.next()
                && !lock(&self.nfacct).contains_key(name)
            {
                return Err(Error::Injected(format!(
                    "iptables-restore: nfacct object {name} does not exist"
                )));
            }
        }
        self.with_model(family, |m| {
            let mut next = m.clone();
            next.restore(text, flags.noflush)?;
            *m = next;
            Ok(())
        })
    }

    async fn save(&self, family: IpFamily, table: Table) -> Result<String> {
        self.record(Call::Save(family, table));
        Ok(self.with_model(family, |m| m.save_table(table.as_str())))
    }

    async fn ensure_chain(&self, family: IpFamily, table: Table, chain: &str) -> Result<bool> {
        self.record(Call::EnsureChain(family, table, chain.to_owned()));
        Ok(self.with_model(family, |m| m.ensure_chain(table.as_str(), chain)))
    }

    async fn chain_exists(&self, family: IpFamily, table: Table, chain: &str) -> Result<bool> {
        self.record(Call::ChainExists(family, table, chain.to_owned()));
        Ok(self.with_model(family, |m| m.chain(table.as_str(), chain).is_some()))
    }

    async fn ensure_rule(
        &self,
        family: IpFamily,
        table: Table,
        chain: &str,
        args: &[String],
    ) -> Result<bool> {
        self.record(Call::EnsureRule(
            family,
            table,
            chain.to_owned(),
            args.to_vec(),
        ));
        self.with_model(family, |m| {
            m.ensure_chain(table.as_str(), chain);
            m.ensure_rule(table.as_str(), chain, args)
        })
    }

    async fn delete_rule(
        &self,
        family: IpFamily,
        table: Table,
        chain: &str,
        args: &[String],
    ) -> Result<bool> {
        self.record(Call::DeleteRule(
            family,
            table,
            chain.to_owned(),
            args.to_vec(),
        ));
        self.with_model(family, |m| m.delete_rule(table.as_str(), chain, args))
    }

    async fn delete_flows(&self, flow: &StaleFlow) -> Result<usize> {
        self.record(Call::DeleteFlows(*flow));
        Ok(0)
    }

    async fn version(&self, family: IpFamily) -> Result<String> {
        self.record(Call::Version(family));
        Ok("iptables v1.8.9 (nf_tables)".into())
    }

    async fn ensure_nfacct(&self, name: &str) -> Result<()> {
        self.record(Call::EnsureNfacct(name.to_owned()));
        if self.no_nfacct.load(Ordering::SeqCst) {
            return Err(Error::Nfacct {
                op: "create",
                name: name.to_owned(),
                source: std::io::Error::from_raw_os_error(93), // EPROTONOSUPPORT
            });
        }
        lock(&self.nfacct)
            .entry(name.to_owned())
            .or_insert_with(|| Counter {
                name: name.to_owned(),
                packets: 0,
                bytes: 0,
            });
        Ok(())
    }

    async fn read_nfacct(&self, name: &str) -> Result<Counter> {
        self.record(Call::ReadNfacct(name.to_owned()));
        lock(&self.nfacct)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Nfacct {
                op: "read",
                name: name.to_owned(),
                source: std::io::Error::from_raw_os_error(2), // ENOENT
            })
    }
}
