//! Side effects other than IPVS itself: the `kube-ipvs0` dummy link and its addresses,
//! ipsets, iptables, conntrack and sysctls. [`RealExecutor`] does them on the host;
//! `RecordingExecutor` (feature `testing`) records them for tests. IPVS goes through
//! [`IpvsOps`](crate::handle::IpvsOps) ([`IpvsHandle`](crate::handle::IpvsHandle) or
//! `FakeIpvs`).

#[cfg(any(test, feature = "testing"))]
mod fake;
mod real;

use std::collections::BTreeSet;
use std::net::IpAddr;

use kproxy_core::StaleFlow;
use kproxy_core::model::IpFamily;

use crate::error::Result;

#[cfg(any(test, feature = "testing"))]
pub use fake::{Call, FailPoint, FakeIpvs, Fault, RecordingExecutor};
pub use real::RealExecutor;

/// The host operations the IPVS proxier needs besides IPVS.
#[async_trait::async_trait]
pub trait Executor: Send + Sync {
    /// Creates the dummy link `name` if missing and sets it up.
    async fn ensure_dummy(&self, name: &str) -> Result<()>;
    /// Deletes the link `name`; a missing link is fine.
    async fn delete_dummy(&self, name: &str) -> Result<()>;
    /// The addresses of `family` on link `name` (empty if the link is missing).
    async fn list_addresses(&self, name: &str, family: IpFamily) -> Result<BTreeSet<IpAddr>>;
    /// Adds `ip` (/32 or /128) to link `name`; already present is fine.
    async fn add_address(&self, name: &str, ip: IpAddr) -> Result<()>;
    /// Removes `ip` from link `name`; already gone is fine.
    async fn del_address(&self, name: &str, ip: IpAddr) -> Result<()>;
    /// Adds every address of `ips` to link `name` (as [`add_address`](Self::add_address)
    /// does one); the default adds them one at a time, [`RealExecutor`] in batches.
    /// On failure some may have been added.
    async fn add_addresses(&self, name: &str, ips: &[IpAddr]) -> Result<()> {
        for ip in ips {
            self.add_address(name, *ip).await?;
        }
        Ok(())
    }
    /// Removes every address of `ips` from link `name`, like
    /// [`add_addresses`](Self::add_addresses).
    async fn del_addresses(&self, name: &str, ips: &[IpAddr]) -> Result<()> {
        for ip in ips {
            self.del_address(name, *ip).await?;
        }
        Ok(())
    }
    /// The names of the host's ipsets (`ipset list -n`).
    async fn ipset_names(&self) -> Result<BTreeSet<String>>;
    /// Runs `ipset restore -exist` with `text` on stdin.
    async fn ipset_restore(&self, text: &str) -> Result<()>;
    /// Runs `iptables-restore --noflush --counters -w 5` (or ip6tables-) with `text`.
    async fn restore_iptables(&self, family: IpFamily, text: &str) -> Result<()>;
    /// Runs `iptables -w 5 <args>` (or ip6tables); `Ok(false)` when it exits non-zero
    /// (a `-C` that found nothing, a `-D` of a missing rule).
    async fn iptables(&self, family: IpFamily, args: &[String]) -> Result<bool>;
    /// Deletes the conntrack entries of `flow` (`conntrack -D …`); none is fine.
    async fn conntrack_delete(&self, flow: &StaleFlow) -> Result<()>;
    /// Writes `value` to `/proc/sys/<key>` (`key` like `net/ipv4/vs/conntrack`), if it
    /// differs.
    async fn set_sysctl(&self, key: &str, value: &str) -> Result<()>;
}

/// `conntrack -D` arguments for a stale flow (upstream, ≤ 1.30,
/// `pkg/util/conntrack/conntrack.go`: `ClearEntriesForIP`, `ClearEntriesForPort`,
/// `ClearEntriesForNAT`, `ClearEntriesForPortNAT`).
pub fn conntrack_args(flow: &StaleFlow) -> Vec<String> {
    let mut a: Vec<String> = vec!["-D".into(), "-p".into(), flow.protocol.as_lower().into()];
    if flow.family == IpFamily::V6 {
        a.extend(["-f".into(), "ipv6".into()]);
    }
    match flow.target {
        kproxy_core::FlowTarget::Vip { ip, port } => {
            a.extend([
                "--orig-dst".into(),
                ip.to_string(),
                "--dport".into(),
                port.to_string(),
            ]);
        }
        kproxy_core::FlowTarget::NodePort(p) => a.extend(["--dport".into(), p.to_string()]),
    }
    if let Some(ep) = flow.endpoint {
        a.extend(["--dst-nat".into(), ep.to_string()]);
    }
    a
}
