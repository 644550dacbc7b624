//! The one place that knows the backends: wiring a new proxy mode in is one arm in
//! [`build_proxier`] (which `run` and `cleanup` use) and one in [`plan_printer`].
//!
//! - iptables: [`kproxy_iptables::IptablesProxier`] over the host's `iptables-restore`
//!   (nft or legacy, chosen as upstream does), IPv4 always and IPv6 when the matching
//!   `ip6tables-restore` is installed; wrapped in [`iptables::Exported`] so that its
//!   counters reach `/metrics`.
//! - userspace: [`kproxy_userspace::UserspaceProxier`] with the same executor.
//! - ipvs: one [`kproxy_ipvs::IpvsProxier`] per family (IPv4, and IPv6 when
//!   `ip6tables-restore` is installed), each wrapped in [`ipvs::Exported`] for its
//!   failure counters, behind [`crate::meta::MetaProxier`]; the kernel is probed for
//!   IPVS first, as upstream's `CanUseIPVSProxier`.
//! - nftables: not built in ([`Error::BackendUnavailable`]).

pub mod iptables;
pub mod ipvs;

use std::path::Path;
use std::sync::Arc;

use kproxy_core::config::ProxyMode;
use kproxy_core::model::IpFamily;
use kproxy_core::{KubeProxyConfiguration, NodeFacts, Proxier, ServiceMap};
use kproxy_iptables::{Backend, IptablesProxier, RealExecutor};

use crate::cli::PlanMode;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// The `--proxy-mode` spelling of a mode (`""` resolves to iptables, as on Linux).
pub fn mode_name(mode: ProxyMode) -> &'static str {
    match mode {
        ProxyMode::Unset | ProxyMode::Iptables => "iptables",
        other => other.as_str(),
    }
}

/// The backend for `mode`, set up from `cfg` (node facts come with each sync); backend
/// counters go to `metrics`.
///
/// # Errors
/// [`Error::BackendUnavailable`] for a mode this binary was built without, or
/// [`Error::BackendStart`] when the backend refuses the config.
pub async fn build_proxier(
    mode: ProxyMode,
    cfg: &KubeProxyConfiguration,
    metrics: &Arc<Metrics>,
) -> Result<Box<dyn Proxier>> {
    match mode {
        ProxyMode::Unset | ProxyMode::Iptables => {
            let flavour = kproxy_iptables::exec::detect_backend(&[]).await;
            let families = iptables_families(flavour, std::env::var_os("PATH").as_deref());
            tracing::info!(?flavour, ?families, "iptables backend");
            let proxier = IptablesProxier::new(RealExecutor::new(flavour), cfg, &families)
                .map_err(|e| start_err("iptables", e))?;
            Ok(Box::new(iptables::Exported::new(
                proxier,
                families,
                metrics.clone(),
            )))
        }
        ProxyMode::Userspace => {
            let flavour = kproxy_iptables::exec::detect_backend(&[]).await;
            tracing::info!(?flavour, "userspace backend");
            let exec: Arc<dyn kproxy_iptables::Executor> = Arc::new(RealExecutor::new(flavour));
            let proxier = kproxy_userspace::UserspaceProxier::new(cfg, exec)
                .map_err(|e| start_err("userspace", e))?;
            Ok(Box::new(proxier))
        }
        ProxyMode::Ipvs => {
            let families = iptables_families(Backend::Default, std::env::var_os("PATH").as_deref());
            tracing::info!(?families, "ipvs backend");
            let mut inner: Vec<Box<dyn Proxier>> = Vec::new();
            for family in families {
                let proxier = kproxy_ipvs::IpvsProxier::new_real(cfg, family)
                    .await
                    .map_err(|e| start_err("ipvs", e))?;
                inner.push(Box::new(ipvs::Exported::new(
                    proxier,
                    family,
                    metrics.clone(),
                )));
            }
            Ok(Box::new(crate::meta::MetaProxier::new("ipvs", inner)))
        }
        ProxyMode::Nftables => Err(Error::BackendUnavailable("nftables")),
    }
}

/// The backend `cleanup` uses for `mode`: as [`build_proxier`], except that ipvs skips
/// the kernel probe, since its leftovers (ipsets, chains, kube-ipvs0) can outlive the
/// IPVS module. One ipvs proxier cleans both families.
async fn cleanup_proxier(
    mode: ProxyMode,
    cfg: &KubeProxyConfiguration,
    metrics: &Arc<Metrics>,
) -> Result<Box<dyn Proxier>> {
    match mode {
        ProxyMode::Ipvs => {
            let err = |e| start_err("ipvs", e);
            let handle = kproxy_ipvs::handle::IpvsHandle::new().map_err(err)?;
            let exec = kproxy_ipvs::exec::RealExecutor::new().map_err(err)?;
            let proxier =
                kproxy_ipvs::IpvsProxier::new(cfg, IpFamily::V4, Arc::new(handle), Arc::new(exec))
                    .map_err(err)?;
            Ok(Box::new(proxier))
        }
        _ => build_proxier(mode, cfg, metrics).await,
    }
}

fn start_err(mode: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::BackendStart {
        mode,
        source: Box::new(e),
    }
}

/// The families iptables mode programs: IPv4 always, IPv6 too when `ip6tables-restore`
/// of the chosen flavour is on `path` (upstream runs dual-stack when both iptables
/// families work).
pub fn iptables_families(flavour: Backend, path: Option<&std::ffi::OsStr>) -> Vec<IpFamily> {
    let tool = match flavour {
        Backend::Nft => "ip6tables-nft-restore",
        Backend::Legacy => "ip6tables-legacy-restore",
        Backend::Default => "ip6tables-restore",
    };
    let found =
        path.is_some_and(|p| std::env::split_paths(p).any(|d| is_executable(&d.join(tool))));
    if found {
        vec![IpFamily::V4, IpFamily::V6]
    } else {
        vec![IpFamily::V4]
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
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
        PlanMode::Iptables => Ok(Some(|map, node, cfg, family| {
            Ok(kproxy_iptables::render_plan(map, node, cfg, family)?)
        })),
        PlanMode::Userspace => Ok(Some(|map, node, cfg, family| {
            Ok(kproxy_userspace::render_plan(map, node, cfg, family))
        })),
        PlanMode::Ipvs => Ok(Some(|map, node, cfg, family| {
            Ok(kproxy_ipvs::render_plan(map, node, cfg, family))
        })),
        PlanMode::Nftables => Err(Error::BackendUnavailable("nftables")),
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
pub async fn cleanup_all(cfg: &KubeProxyConfiguration) -> Result<Vec<&'static str>> {
    let mut first_err = None;
    let mut cleaned = Vec::new();
    let metrics = Arc::new(Metrics::new());
    for mode in ALL_MODES {
        let name = mode_name(mode);
        let mut proxier = match cleanup_proxier(mode, cfg, &metrics).await {
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

    #[tokio::test]
    async fn every_mode_builds_or_says_why_not() {
        let cfg = KubeProxyConfiguration::default();
        let metrics = Arc::new(Metrics::new());
        for mode in ALL_MODES {
            match build_proxier(mode, &cfg, &metrics).await {
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
        assert!(plan_printer(PlanMode::Iptables).unwrap().is_some());
        assert!(plan_printer(PlanMode::Userspace).unwrap().is_some());
    }

    #[test]
    fn ipv6_is_programmed_only_when_the_flavours_ip6tables_restore_exists() {
        let dir = std::env::temp_dir().join(format!("kproxy-path-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let tool = dir.join("ip6tables-legacy-restore");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        let path = std::env::join_paths([Path::new("/nonexistent"), &dir]).unwrap();
        // Not executable yet: not found.
        assert_eq!(
            iptables_families(Backend::Legacy, Some(&path)),
            [IpFamily::V4]
        );
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            iptables_families(Backend::Legacy, Some(&path)),
            [IpFamily::V4, IpFamily::V6]
        );
        assert_eq!(iptables_families(Backend::Nft, Some(&path)), [IpFamily::V4]);
        assert_eq!(iptables_families(Backend::Default, None), [IpFamily::V4]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
