//! [`RecordingExecutor`]: records every call and applies restores to an in-memory
//! [`Ruleset`] per family, so tests can trace packets through what "the kernel" holds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use kproxy_core::StaleFlow;
use kproxy_core::model::IpFamily;

use super::{Executor, RestoreFlags};
use crate::error::{Error, Result};
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
}

/// Records calls, keeps a model of each family's tables. `fail_next` makes the next
/// restore fail without changing the model, as a failed `iptables-restore` leaves the
/// kernel unchanged.
#[derive(Debug, Default)]
pub struct RecordingExecutor {
    /// Every call, oldest first.
    pub calls: Mutex<Vec<Call>>,
    /// Fail the next restore.
    pub fail_next: AtomicBool,
    models: Mutex<BTreeMap<IpFamily, Ruleset>>,
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
}
