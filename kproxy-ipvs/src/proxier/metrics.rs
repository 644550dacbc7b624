//! [`Metrics`]: what the IPVS proxier counts, as plain numbers (core and this crate stay
//! free of Prometheus; the binary copies them into its registry after each sync).

use std::time::Duration;

/// Counters of one family's IPVS proxier. All are cumulative except `last_*`.
///
/// Suggested exposition (prefix `kubeproxy_`, label `ip_family`): upstream's
/// `sync_proxy_rules_iptables_restore_failures_total` (`pkg/proxy/metrics/metrics.go`,
/// registered in ipvs mode too) for [`iptables_restore_failures`](Self::iptables_restore_failures);
/// kproxy's own `sync_proxy_rules_ipvs_failures_total`,
/// `sync_proxy_rules_ipset_restore_failures_total` and
/// `sync_proxy_rules_ipvs_sync_failures_total` for the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Successful full syncs (everything read back from the kernel).
    pub full_syncs: u64,
    /// Successful partial syncs.
    pub partial_syncs: u64,
    /// Syncs that returned an error, whatever the step.
    pub sync_failures: u64,
    /// IPVS requests the kernel refused (or whose answer was lost).
    pub ipvs_failures: u64,
    /// Deletes and weight-0 updates held back because an add or update of the same
    /// virtual server failed in that sync: its old destinations keep serving.
    pub ipvs_deferred: u64,
    /// Failed `ipset restore` runs.
    pub ipset_restore_failures: u64,
    /// Failed `iptables-restore` runs of the companion rules (upstream's
    /// `sync_proxy_rules_iptables_restore_failures_total`).
    pub iptables_restore_failures: u64,
    /// Failed kube-ipvs0 address binds or unbinds (and link set-up).
    pub address_failures: u64,
    /// The error of the last failed sync, cleared by the next successful one.
    pub last_error: Option<String>,
    /// How long the last successful sync took.
    pub last_sync: Duration,
}
