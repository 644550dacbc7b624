//! The one place that knows the backends: wiring a new proxy mode in is one arm in
//! [`build_proxier`] (which `run` and `cleanup` use) and one in [`plan_printer`].
//!
//! ```text
//! ProxyMode::Iptables => Ok(Box::new(kproxy_iptables::IptablesProxier::new(exec, cfg, &families)?)),
//! PlanMode::Iptables => Ok(Some(|map, node, cfg, family| Ok(kproxy_iptables::trace::render_plan(map, node, cfg, family)?))),
//! ```

use kproxy_core::config::ProxyMode;
use kproxy_core::model::IpFamily;
use kproxy_core::{KubeProxyConfiguration, NodeFacts, Proxier, ServiceMap};

use crate::cli::PlanMode;
use crate::error::{Error, Result};

/// The `--proxy-mode` spelling of a mode (`""` resolves to iptables, as on Linux).
pub fn mode_name(mode: ProxyMode) -> &'static str {
    match mode {
        ProxyMode::Unset | ProxyMode::Iptables => "iptables",
        other => other.as_str(),
    }
}

/// The backend for `mode`, set up from `cfg` for this node.
///
/// # Errors
/// [`Error::BackendUnavailable`] for a mode this binary was built without, or the
/// backend's own error when it cannot start (missing kernel support, tools).
pub fn build_proxier(
    mode: ProxyMode,
    cfg: &KubeProxyConfiguration,
    node: &NodeFacts,
) -> Result<Box<dyn Proxier>> {
    let _ = (cfg, node);
    match mode {
        ProxyMode::Unset | ProxyMode::Iptables => Err(Error::BackendUnavailable("iptables")),
        ProxyMode::Ipvs => Err(Error::BackendUnavailable("ipvs")),
        ProxyMode::Nftables => Err(Error::BackendUnavailable("nftables")),
        ProxyMode::Userspace => Err(Error::BackendUnavailable("userspace")),
    }
}

/// Renders what one backend would program for a map in one IP family, for
/// `kproxy plan` (e.g. the iptables-restore input of a full sync).
pub type PlanPrinter = fn(
    &ServiceMap,
    &NodeFacts,
    &KubeProxyConfiguration,
    IpFamily,
) -> std::result::Result<String, BoxError>;

/// Any backend error, for [`PlanPrinter`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The printer of `mode`'s plan; `None` for `--proxy-mode none` (the map alone).
///
/// # Errors
/// [`Error::BackendUnavailable`] for a mode this binary was built without.
pub fn plan_printer(mode: PlanMode) -> Result<Option<PlanPrinter>> {
    match mode {
        PlanMode::None => Ok(None),
        PlanMode::Iptables => Err(Error::BackendUnavailable("iptables")),
        PlanMode::Ipvs => Err(Error::BackendUnavailable("ipvs")),
        PlanMode::Nftables => Err(Error::BackendUnavailable("nftables")),
        PlanMode::Userspace => Err(Error::BackendUnavailable("userspace")),
    }
}

/// Every mode kproxy knows; `cleanup` tries each.
const ALL_MODES: [ProxyMode; 4] = [
    ProxyMode::Iptables,
    ProxyMode::Ipvs,
    ProxyMode::Nftables,
    ProxyMode::Userspace,
];

/// Runs `cleanup` of every backend built in, as `--cleanup` does upstream for iptables,
/// ipvs and nftables. A mode that is not built in, or cannot start on this host (no IPVS
/// module, no nft), is skipped: it cannot have left anything. Every backend is tried;
/// the first cleanup failure is returned.
///
/// # Errors
/// The first backend whose cleanup failed, as [`Error::Backend`].
pub async fn cleanup_all(
    cfg: &KubeProxyConfiguration,
    node: &NodeFacts,
) -> Result<Vec<&'static str>> {
    let mut first_err = None;
    let mut cleaned = Vec::new();
    for mode in ALL_MODES {
        let name = mode_name(mode);
        let mut proxier = match build_proxier(mode, cfg, node) {
            Ok(p) => p,
            Err(Error::BackendUnavailable(_)) => continue,
            Err(e) => {
                tracing::info!(mode = name, reason = %e.report(), "skipping cleanup of a mode that cannot run here");
                continue;
            }
        };
        match proxier.cleanup().await {
            Ok(()) => cleaned.push(name),
            Err(e) => {
                let e = Error::backend(name, e);
                tracing::error!(mode = name, error = %e.report(), "cleanup failed");
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(cleaned), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_builds_or_says_why_not() {
        let cfg = KubeProxyConfiguration::default();
        for mode in ALL_MODES {
            match build_proxier(mode, &cfg, &NodeFacts::default()) {
                Ok(p) => assert_eq!(p.mode(), mode_name(mode)),
                Err(e @ Error::BackendUnavailable(_)) => {
                    assert_eq!(
                        e.report(),
                        format!("backend {} not available in this build", mode_name(mode))
                    );
                }
                // Built in, but this host lacks what it needs (e.g. the IPVS module).
                Err(e) => assert_ne!(e.exit_code(), 0),
            }
        }
        assert!(plan_printer(PlanMode::None).unwrap().is_none());
    }
}
