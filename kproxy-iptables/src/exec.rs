//! The side effects: running `iptables-restore`, `iptables-save`, single `iptables`
//! commands and `conntrack`, and the nfacct netlink requests, behind the small
//! [`Executor`] trait, with a real implementation ([`RealExecutor`]) and a recording
//! fake for tests.

#[cfg(any(test, feature = "testing"))]
pub mod fake;
mod netlink;
mod real;

use kproxy_core::StaleFlow;
use kproxy_core::model::IpFamily;

pub use real::{Backend, RealExecutor, detect_backend, supports_random_fully};

use crate::error::Result;
use crate::nfacct::Counter;
use crate::plan::Table;

/// How `iptables-restore` is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreFlags {
    /// `--noflush`: keep chains the input does not declare (always, for kproxy's syncs).
    pub noflush: bool,
    /// `--counters`: keep the packet counters given in the input.
    pub counters: bool,
}

impl Default for RestoreFlags {
    /// `--noflush --counters`, as upstream restores.
    fn default() -> Self {
        RestoreFlags {
            noflush: true,
            counters: true,
        }
    }
}

/// What kproxy asks of the host's iptables and conntrack tools.
#[async_trait::async_trait]
pub trait Executor: Send + Sync {
    /// Loads `text` with `iptables-restore` (`ip6tables-restore` for IPv6). Each table in
    /// the input commits atomically: on error the table is as it was.
    async fn restore(&self, family: IpFamily, text: &str, flags: RestoreFlags) -> Result<()>;

    /// `iptables-save -t TABLE`.
    async fn save(&self, family: IpFamily, table: Table) -> Result<String>;

    /// Creates chain `chain` unless it exists (`iptables -N`); true if it existed.
    async fn ensure_chain(&self, family: IpFamily, table: Table, chain: &str) -> Result<bool>;

    /// Whether `chain` exists.
    async fn chain_exists(&self, family: IpFamily, table: Table, chain: &str) -> Result<bool>;

    /// Prepends a rule to `chain` unless an equal one exists (`iptables -C`, then
    /// `iptables -I CHAIN`); true if it existed.
    async fn ensure_rule(
        &self,
        family: IpFamily,
        table: Table,
        chain: &str,
        args: &[String],
    ) -> Result<bool>;

    /// Deletes a rule if present (`iptables -D`); true if one was deleted.
    async fn delete_rule(
        &self,
        family: IpFamily,
        table: Table,
        chain: &str,
        args: &[String],
    ) -> Result<bool>;

    /// Deletes the conntrack entries of a stale flow; returns how many went. "0 flow
    /// entries" is success.
    async fn delete_flows(&self, flow: &StaleFlow) -> Result<usize>;

    /// `iptables --version` output, trimmed (for example `iptables v1.8.9 (nf_tables)`).
    async fn version(&self, family: IpFamily) -> Result<String>;

    /// Creates the nfacct accounting object `name` unless it exists (upstream
    /// `nfacct.Ensure`). Accounting objects belong to the network namespace, not to an
    /// IP family.
    async fn ensure_nfacct(&self, name: &str) -> Result<()>;

    /// The packets and bytes counted so far by the nfacct object `name`.
    async fn read_nfacct(&self, name: &str) -> Result<Counter>;
}
