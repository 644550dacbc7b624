//! Flags and config file merged into one validated [`KubeProxyConfiguration`], following
//! upstream's `Options.Complete` (`cmd/kube-proxy/app/options.go`):
//!
//! - without `--config`: upstream's defaults, then every flag that was given;
//! - with `--config`: the file (defaulted) replaces everything the flags say, except
//!   `--hostname-override` and the logging flags (`-v`, `--vmodule` appended,
//!   `--logging-format`), which still apply; the deprecated `--healthz-port` and
//!   `--metrics-port` only count without a file;
//! - then the config is validated.
//!
//! [`merge`] has no side effects: the caller reads the file ([`read_config_file`]), so
//! the precedence rules are unit-tested here.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use kproxy_core::KubeProxyConfiguration;
use kproxy_core::config::{DEFAULT_HEALTHZ_PORT, DEFAULT_METRICS_PORT, Duration, VModuleItem};

use crate::cli::ProxyFlags;
use crate::error::{Error, Result};

/// Reads and strictly decodes a config file, without defaults.
///
/// # Errors
/// [`Error::Read`] if the file cannot be read, [`Error::Config`] if it does not decode.
pub fn read_config_file(path: &Path) -> Result<KubeProxyConfiguration> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    KubeProxyConfiguration::parse(&text)
        .map_err(|source| Error::config(Some(path.to_owned()), source))
}

/// The effective, validated config: `file` (as read by [`read_config_file`]) if given,
/// else the flags; the overriding flags on top; validated.
///
/// # Errors
/// [`Error::Flag`] for a flag value clap could not check, [`Error::Config`] when the
/// result breaks upstream's validation rules (naming the file, if any).
pub fn merge(
    flags: &ProxyFlags,
    file: Option<(&Path, KubeProxyConfiguration)>,
) -> Result<KubeProxyConfiguration> {
    let path: Option<PathBuf> = file.as_ref().map(|(p, _)| p.to_path_buf());
    let mut cfg = match file {
        Some((_, cfg)) => cfg.with_defaults(),
        None => from_flags(flags)?,
    };
    if let Some(name) = &flags.hostname_override {
        // Upstream: the flag wins over the file, trimmed (and lower-cased when the node
        // name is derived from it).
        cfg.hostname_override = name.trim().to_owned();
    }
    apply_logging_flags(flags, &mut cfg)?;
    cfg.validate()
        .map_err(|source| Error::config(path, source))?;
    Ok(cfg)
}

/// Upstream's defaults with every given flag applied, as when there is no `--config`.
fn from_flags(f: &ProxyFlags) -> Result<KubeProxyConfiguration> {
    let mut cfg = KubeProxyConfiguration::default();
    // The flag default of --ipvs-min-sync-period is the internal default (taken from the
    // iptables section), 1s; only a config file gets ipvs's own 0s.
    cfg.ipvs.min_sync_period = Duration::from_secs(1);

    fn set<T: Clone>(field: &mut T, flag: &Option<T>) {
        if let Some(v) = flag {
            *field = v.clone();
        }
    }
    if let Some(gates) = &f.feature_gates {
        cfg.feature_gates = parse_feature_gates(gates)?;
    }
    let cc = &mut cfg.client_connection;
    set(&mut cc.kubeconfig, &f.kubeconfig);
    set(&mut cc.content_type, &f.kube_api_content_type);
    set(&mut cc.qps, &f.kube_api_qps);
    set(&mut cc.burst, &f.kube_api_burst);
    set(&mut cfg.bind_address, &f.bind_address);
    set(&mut cfg.healthz_bind_address, &f.healthz_bind_address);
    set(&mut cfg.metrics_bind_address, &f.metrics_bind_address);
    set(&mut cfg.bind_address_hard_fail, &f.bind_address_hard_fail);
    set(&mut cfg.enable_profiling, &f.profiling);
    set(
        &mut cfg.show_hidden_metrics_for_version,
        &f.show_hidden_metrics_for_version,
    );
    if let Some(mode) = f.proxy_mode {
        cfg.mode = mode.into();
    }
    let ipt = &mut cfg.iptables;
    if f.iptables_masquerade_bit.is_some() {
        ipt.masquerade_bit = f.iptables_masquerade_bit;
    }
    if f.iptables_localhost_nodeports.is_some() {
        ipt.localhost_node_ports = f.iptables_localhost_nodeports;
    }
    set(&mut ipt.sync_period, &f.iptables_sync_period);
    set(&mut ipt.min_sync_period, &f.iptables_min_sync_period);
    // --masquerade-all feeds the internal Linux.MasqueradeAll, which reads back into
    // whichever section the mode uses.
    if let Some(all) = f.masquerade_all {
        cfg.iptables.masquerade_all = all;
        cfg.nftables.masquerade_all = all;
    }
    let ipvs = &mut cfg.ipvs;
    set(&mut ipvs.sync_period, &f.ipvs_sync_period);
    set(&mut ipvs.min_sync_period, &f.ipvs_min_sync_period);
    set(&mut ipvs.scheduler, &f.ipvs_scheduler);
    set(&mut ipvs.exclude_cidrs, &f.ipvs_exclude_cidrs);
    set(&mut ipvs.strict_arp, &f.ipvs_strict_arp);
    set(&mut ipvs.tcp_timeout, &f.ipvs_tcp_timeout);
    set(&mut ipvs.tcp_fin_timeout, &f.ipvs_tcpfin_timeout);
    set(&mut ipvs.udp_timeout, &f.ipvs_udp_timeout);
    set(&mut cfg.detect_local_mode, &f.detect_local_mode);
    set(
        &mut cfg.detect_local.bridge_interface,
        &f.pod_bridge_interface,
    );
    set(
        &mut cfg.detect_local.interface_name_prefix,
        &f.pod_interface_name_prefix,
    );
    set(&mut cfg.cluster_cidr, &f.cluster_cidr);
    set(&mut cfg.node_port_addresses, &f.nodeport_addresses);
    if f.oom_score_adj.is_some() {
        cfg.oom_score_adj = f.oom_score_adj;
    }
    let ct = &mut cfg.conntrack;
    if f.conntrack_max_per_core.is_some() {
        ct.max_per_core = f.conntrack_max_per_core;
    }
    if f.conntrack_min.is_some() {
        ct.min = f.conntrack_min;
    }
    if f.conntrack_tcp_timeout_established.is_some() {
        ct.tcp_established_timeout = f.conntrack_tcp_timeout_established;
    }
    if f.conntrack_tcp_timeout_close_wait.is_some() {
        ct.tcp_close_wait_timeout = f.conntrack_tcp_timeout_close_wait;
    }
    set(&mut ct.tcp_be_liberal, &f.conntrack_tcp_be_liberal);
    set(&mut ct.udp_timeout, &f.conntrack_udp_timeout);
    set(&mut ct.udp_stream_timeout, &f.conntrack_udp_timeout_stream);
    set(&mut cfg.config_sync_period, &f.config_sync_period);
    // The userspace flags upstream dropped with its userspace mode in v1.26.
    set(&mut cfg.port_range, &f.proxy_port_range);
    if f.udp_timeout.is_some() {
        cfg.udp_idle_timeout = f.udp_timeout;
    }

    // The deprecated port flags (default 10256 / 10249): 0 disables the server, any other
    // port is appended to an address that has none (AppendPortIfNeeded).
    let healthz_port = f.healthz_port.unwrap_or(DEFAULT_HEALTHZ_PORT);
    cfg.healthz_bind_address = if healthz_port == 0 {
        String::new()
    } else {
        append_port_if_needed(&cfg.healthz_bind_address, healthz_port)
    };
    let metrics_port = f.metrics_port.unwrap_or(DEFAULT_METRICS_PORT);
    cfg.metrics_bind_address = if metrics_port == 0 {
        String::new()
    } else {
        append_port_if_needed(&cfg.metrics_bind_address, metrics_port)
    };
    Ok(cfg)
}

/// Logging flags that were given override the config, file or not.
fn apply_logging_flags(f: &ProxyFlags, cfg: &mut KubeProxyConfiguration) -> Result<()> {
    if let Some(v) = f.verbosity {
        cfg.logging.verbosity = v;
    }
    if let Some(format) = &f.logging_format {
        cfg.logging.format.clone_from(format);
    }
    if let Some(every) = f.log_flush_frequency {
        cfg.logging.flush_frequency = every;
    }
    if let Some(vmodule) = &f.vmodule {
        cfg.logging.vmodule.extend(parse_vmodule(vmodule)?);
    }
    Ok(())
}

/// `--feature-gates A=true,B=false`.
fn parse_feature_gates(s: &str) -> Result<BTreeMap<String, bool>> {
    let mut gates = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = || Error::Flag {
            flag: "--feature-gates",
            reason: format!("{item:?}: want KEY=true|false"),
        };
        let (k, v) = item.split_once('=').ok_or_else(bad)?;
        let v: bool = v.trim().parse().map_err(|_| bad())?;
        gates.insert(k.trim().to_owned(), v);
    }
    Ok(gates)
}

/// `--vmodule pattern=N,...`.
fn parse_vmodule(s: &str) -> Result<Vec<VModuleItem>> {
    s.split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(|item| {
            let bad = || Error::Flag {
                flag: "--vmodule",
                reason: format!("{item:?}: want PATTERN=N"),
            };
            let (pattern, level) = item.split_once('=').ok_or_else(bad)?;
            Ok(VModuleItem {
                file_pattern: pattern.to_owned(),
                verbosity: level.parse().map_err(|_| bad())?,
            })
        })
        .collect()
}

/// `net.JoinHostPort(addr, port)` when `addr` is a bare IP; anything else unchanged
/// (validation reports what is wrong with it).
fn append_port_if_needed(addr: &str, port: u16) -> String {
    if addr.parse::<SocketAddr>().is_ok() {
        return addr.to_owned();
    }
    match addr.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => addr.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use kproxy_core::config::ProxyMode;

    use super::*;
    use crate::cli::Cli;

    fn flags(args: &[&str]) -> ProxyFlags {
        Cli::try_parse_from(std::iter::once("kproxy").chain(args.iter().copied()))
            .unwrap()
            .proxy
    }

    fn file(yaml: &str) -> KubeProxyConfiguration {
        KubeProxyConfiguration::parse(yaml).unwrap()
    }

    const FILE: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
                        mode: ipvs\nhostnameOverride: from-file\nclusterCIDR: 10.244.0.0/16\n";

    #[test]
    fn without_a_file_defaults_are_upstreams_and_flags_apply() {
        let cfg = merge(&flags(&[]), None).unwrap();
        assert_eq!(cfg.healthz_bind_address, "0.0.0.0:10256");
        assert_eq!(cfg.metrics_bind_address, "127.0.0.1:10249");
        assert_eq!(cfg.resolved_mode(), ProxyMode::Iptables);
        let cfg = merge(
            &flags(&[
                "--proxy-mode=ipvs",
                "--cluster-cidr=10.0.0.0/8",
                "--iptables-min-sync-period=0s",
                "--proxy-port-range=30000-30100",
                "--udp-timeout=1s",
            ]),
            None,
        )
        .unwrap();
        assert_eq!(cfg.port_range, "30000-30100");
        assert_eq!(
            cfg.effective_udp_idle_timeout(),
            std::time::Duration::from_secs(1)
        );
        assert_eq!(cfg.mode, ProxyMode::Ipvs);
        assert_eq!(cfg.cluster_cidr, "10.0.0.0/8");
        // An explicit zero is kept, not defaulted again.
        assert_eq!(cfg.iptables.min_sync_period, Duration::ZERO);
    }

    #[test]
    fn flag_only_ipvs_gets_a_one_second_min_sync_period_but_a_file_gets_zero() {
        let cfg = merge(&flags(&["--proxy-mode=ipvs"]), None).unwrap();
        assert_eq!(
            cfg.effective_min_sync_period(),
            std::time::Duration::from_secs(1)
        );
        let p = Path::new("c.yaml");
        let cfg = merge(&flags(&[]), Some((p, file(FILE)))).unwrap();
        assert_eq!(cfg.effective_min_sync_period(), std::time::Duration::ZERO);
    }

    #[test]
    fn a_config_file_replaces_every_config_flag() {
        let p = Path::new("c.yaml");
        let f = flags(&[
            "--proxy-mode=iptables",
            "--cluster-cidr=192.168.0.0/16",
            "--masquerade-all",
        ]);
        let cfg = merge(&f, Some((p, file(FILE)))).unwrap();
        assert_eq!(cfg.mode, ProxyMode::Ipvs);
        assert_eq!(cfg.cluster_cidr, "10.244.0.0/16");
        assert!(!cfg.iptables.masquerade_all);
    }

    #[test]
    fn hostname_override_and_logging_flags_win_over_the_file() {
        let p = Path::new("c.yaml");
        let with_vmodule =
            format!("{FILE}logging:\n  vmodule: [{{filePattern: a, verbosity: 1}}]\n");
        let f = flags(&[
            "--hostname-override",
            " Node-B ",
            "-v",
            "5",
            "--vmodule=b=2",
        ]);
        let cfg = merge(&f, Some((p, file(&with_vmodule)))).unwrap();
        assert_eq!(cfg.hostname_override, "Node-B");
        assert_eq!(cfg.logging.verbosity, 5);
        let json = merge(
            &flags(&["--logging-format=json", "--log-flush-frequency=2s"]),
            Some((p, file(FILE))),
        )
        .unwrap();
        assert_eq!(json.logging.format, "json");
        assert_eq!(json.logging.flush_frequency, Duration::from_secs(2));
        let patterns: Vec<&str> = cfg
            .logging
            .vmodule
            .iter()
            .map(|v| v.file_pattern.as_str())
            .collect();
        assert_eq!(patterns, ["a", "b"]);
        assert_eq!(
            merge(&flags(&[]), Some((p, file(FILE))))
                .unwrap()
                .hostname_override,
            "from-file"
        );
    }

    #[test]
    fn deprecated_port_flags_apply_only_without_a_file() {
        let cfg = merge(
            &flags(&["--healthz-bind-address=10.1.2.3", "--healthz-port=1234"]),
            None,
        )
        .unwrap();
        assert_eq!(cfg.healthz_bind_address, "10.1.2.3:1234");
        let cfg = merge(
            &flags(&["--healthz-bind-address=10.1.2.3:99", "--healthz-port=1234"]),
            None,
        )
        .unwrap();
        assert_eq!(cfg.healthz_bind_address, "10.1.2.3:99");
        let cfg = merge(&flags(&["--healthz-port=0"]), None).unwrap();
        assert_eq!(cfg.healthz_bind_address, "");
        let p = Path::new("c.yaml");
        let cfg = merge(&flags(&["--healthz-port=0"]), Some((p, file(FILE)))).unwrap();
        assert_eq!(cfg.healthz_bind_address, "0.0.0.0:10256");
    }

    #[test]
    fn invalid_results_name_the_file_or_the_flags() {
        let e = merge(&flags(&["--iptables-masquerade-bit=32"]), None).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.report().starts_with("flags: config: "), "{}", e.report());
        assert!(
            e.report().contains("iptables.masqueradeBit"),
            "{}",
            e.report()
        );
        let p = Path::new("c.yaml");
        let bad = file(&format!("{FILE}oomScoreAdj: 5000\n"));
        let e = merge(&flags(&[]), Some((p, bad))).unwrap_err();
        assert!(
            e.report().starts_with("c.yaml: config: oomScoreAdj"),
            "{}",
            e.report()
        );
    }

    #[test]
    fn feature_gates_and_vmodule_flags_are_checked() {
        let cfg = merge(
            &flags(&["--feature-gates=PreferSameTrafficDistribution=false, Foo=true"]),
            None,
        )
        .unwrap();
        assert_eq!(
            cfg.feature_gates.get("PreferSameTrafficDistribution"),
            Some(&false)
        );
        assert_eq!(cfg.feature_gates.get("Foo"), Some(&true));
        let e = merge(&flags(&["--feature-gates=Foo"]), None).unwrap_err();
        assert_eq!(e.report(), r#"--feature-gates: "Foo": want KEY=true|false"#);
        assert!(merge(&flags(&["--vmodule=x"]), None).is_err());
    }
}
