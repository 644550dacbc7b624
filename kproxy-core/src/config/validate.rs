//! Upstream's validation: `pkg/proxy/apis/config/validation/validation.go` (`Validate`
//! and its helpers) and component-base `logs/api/v1` `Validate` for `logging`.
//!
//! Upstream validates its internal config, after `platformApplyDefaults`
//! (`cmd/kube-proxy/app/server_linux.go`) has resolved `mode: ""` to iptables and
//! `detectLocalMode: ""` to ClusterCIDR, and after conversion has picked the sync periods
//! of the active mode. kproxy validates the v1alpha1 document with the same resolution,
//! and names each failure by its path in the document (`ipvs.syncPeriod`, not upstream's
//! `KubeProxyConfiguration.SyncPeriod`). Every failure is collected.
//!
//! Differences, each deliberate:
//! - `mode` and `detectLocalMode` are enums: an unknown value already fails to parse.
//! - `mode: userspace` is accepted (kproxy implements it), and so is the kproxy-only
//!   `udpIdleTimeout`, which must then be > 0 (upstream's rule from before v1.26).
//! - `featureGates`: kproxy cannot know every Kubernetes gate, so it accepts any
//!   well-formed gate name; only malformed names are "unrecognized".

use super::KubeProxyConfiguration;
use super::duration::Duration;
use super::net::{parse_cidr_sloppy, parse_ip_sloppy, parse_port_range, split_host_port};
use super::types::{LocalMode, ProxyMode};
use crate::error::{Error, FieldError, FieldErrors, Result};

/// The Kubernetes minor release whose kube-proxy kproxy follows. Only the previous minor
/// is accepted in `showHiddenMetricsForVersion`.
pub const KUBERNETES_VERSION: (u32, u32) = (1, 33);

/// `nodePortAddresses` keyword for the node's primary IPs.
pub const NODE_PORT_ADDRESSES_PRIMARY: &str = "primary";

/// Collects failures in document order.
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            reason: reason.into(),
        });
    }

    fn non_negative(&mut self, field: &str, d: Duration) {
        if d.is_negative() {
            self.push(field, format!("{d}: must be greater than or equal to 0"));
        }
    }

    fn masquerade_bit(&mut self, field: &str, bit: Option<i32>) {
        if let Some(bit) = bit.filter(|b| !(0..=31).contains(b)) {
            self.push(field, format!("{bit}: must be within the range [0, 31]"));
        }
    }

    /// `validateHostPort`: `IP:port`, port 1-65535.
    fn host_port(&mut self, field: &str, input: &str) {
        let Ok((host, port)) = split_host_port(input) else {
            self.push(field, format!("{input:?}: must be IP:port"));
            return;
        };
        if parse_ip_sloppy(host).is_none() {
            self.push(field, format!("{host:?}: must be a valid IP"));
        }
        if !port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p)) {
            self.push(field, format!("{port:?}: must be a valid port"));
        }
    }
}

impl KubeProxyConfiguration {
    /// Checks the config against upstream's validation rules, after defaulting (call
    /// [`with_defaults`](Self::with_defaults) first, as upstream does). Returns every
    /// failure at once, each naming its field:
    ///
    /// ```
    /// use kproxy_core::{Error, KubeProxyConfiguration};
    ///
    /// let mut cfg = KubeProxyConfiguration::default();
    /// cfg.iptables.masquerade_bit = Some(32);
    /// cfg.oom_score_adj = Some(-1001);
    /// let Err(Error::InvalidConfig { errors }) = cfg.validate() else { panic!() };
    /// let fields: Vec<_> = errors.0.iter().map(|e| e.field.as_str()).collect();
    /// assert_eq!(fields, ["iptables.masqueradeBit", "oomScoreAdj"]);
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] listing each broken rule.
    pub fn validate(&self) -> Result<()> {
        let mut errs = Errors(Vec::new());
        let mode = self.resolved_mode();

        for gate in self.feature_gates.keys() {
            if gate.is_empty() || !gate.bytes().all(|b| b.is_ascii_alphanumeric()) {
                errs.push("featureGates", format!("unrecognized feature gate: {gate}"));
            }
        }

        errs.masquerade_bit("iptables.masqueradeBit", self.iptables.masquerade_bit);
        match mode {
            ProxyMode::Ipvs => {
                errs.non_negative("ipvs.tcpTimeout", self.ipvs.tcp_timeout);
                errs.non_negative("ipvs.tcpFinTimeout", self.ipvs.tcp_fin_timeout);
                errs.non_negative("ipvs.udpTimeout", self.ipvs.udp_timeout);
                for (i, cidr) in self.ipvs.exclude_cidrs.iter().enumerate() {
                    if parse_cidr_sloppy(cidr).is_none() {
                        errs.push(
                            format!("ipvs.excludeCIDRs[{i}]"),
                            format!("{cidr:?}: must be a valid CIDR"),
                        );
                    }
                }
            }
            ProxyMode::Nftables => {
                errs.masquerade_bit("nftables.masqueradeBit", self.nftables.masquerade_bit);
            }
            _ => {}
        }

        self.validate_linux(&mut errs);

        if self.client_connection.burst < 0 {
            errs.push(
                "clientConnection.burst",
                format!(
                    "{}: must be greater than or equal to 0",
                    self.client_connection.burst
                ),
            );
        }
        if self.config_sync_period.as_nanos() <= 0 {
            errs.push(
                "configSyncPeriod",
                format!("{}: must be greater than 0", self.config_sync_period),
            );
        }
        self.validate_sync_periods(&mut errs);
        if let Some(t) = self.udp_idle_timeout.filter(|t| t.as_nanos() <= 0) {
            errs.push("udpIdleTimeout", format!("{t}: must be greater than 0"));
        }

        if parse_ip_sloppy(&self.bind_address).is_none() {
            errs.push(
                "bindAddress",
                format!(
                    "{:?}: not a valid textual representation of an IP address",
                    self.bind_address
                ),
            );
        }
        if !self.healthz_bind_address.is_empty() {
            errs.host_port("healthzBindAddress", &self.healthz_bind_address);
        }
        errs.host_port("metricsBindAddress", &self.metrics_bind_address);
        if parse_port_range(&self.port_range).is_err() {
            errs.push(
                "portRange",
                format!(
                    "{:?}: must be a valid port range (e.g. 300-2000)",
                    self.port_range
                ),
            );
        }
        self.validate_node_port_addresses(&mut errs);
        self.validate_show_hidden_metrics(&mut errs);
        self.validate_detect_local(&mut errs);
        self.validate_logging(&mut errs);

        if errs.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidConfig {
                errors: FieldErrors(errs.0),
            })
        }
    }

    /// `validateKubeProxyLinuxConfiguration`: conntrack and `oomScoreAdj`.
    fn validate_linux(&self, errs: &mut Errors) {
        let ct = &self.conntrack;
        for (field, value) in [
            ("conntrack.maxPerCore", ct.max_per_core),
            ("conntrack.min", ct.min),
        ] {
            if let Some(v) = value.filter(|v| *v < 0) {
                errs.push(field, format!("{v}: must be greater than or equal to 0"));
            }
        }
        let established = ct.tcp_established_timeout.unwrap_or_default();
        errs.non_negative("conntrack.tcpEstablishedTimeout", established);
        let close_wait = ct.tcp_close_wait_timeout.unwrap_or_default();
        errs.non_negative("conntrack.tcpCloseWaitTimeout", close_wait);
        errs.non_negative("conntrack.udpTimeout", ct.udp_timeout);
        errs.non_negative("conntrack.udpStreamTimeout", ct.udp_stream_timeout);
        if let Some(adj) = self.oom_score_adj.filter(|a| !(-1000..=1000).contains(a)) {
            errs.push(
                "oomScoreAdj",
                format!("{adj}: must be within the range [-1000, 1000]"),
            );
        }
    }

    /// The section whose sync periods the active mode uses (conversion.go).
    fn sync_section(&self) -> (&'static str, Duration, Duration) {
        match self.resolved_mode() {
            ProxyMode::Ipvs => ("ipvs", self.ipvs.sync_period, self.ipvs.min_sync_period),
            ProxyMode::Nftables => (
                "nftables",
                self.nftables.sync_period,
                self.nftables.min_sync_period,
            ),
            _ => (
                "iptables",
                self.iptables.sync_period,
                self.iptables.min_sync_period,
            ),
        }
    }

    fn validate_sync_periods(&self, errs: &mut Errors) {
        let (section, sync, min_sync) = self.sync_section();
        if sync.as_nanos() <= 0 {
            errs.push(
                format!("{section}.syncPeriod"),
                format!("{sync}: must be greater than 0"),
            );
        }
        if min_sync.is_negative() {
            errs.push(
                format!("{section}.minSyncPeriod"),
                format!("{min_sync}: must be greater than or equal to 0"),
            );
        }
        if min_sync > sync {
            errs.push(
                format!("{section}.syncPeriod"),
                format!(
                    "{sync}: must be greater than or equal to {section}.minSyncPeriod ({min_sync})"
                ),
            );
        }
    }

    /// `validateKubeProxyNodePortAddress`: CIDRs, or `primary` alone.
    fn validate_node_port_addresses(&self, errs: &mut Errors) {
        let list = &self.node_port_addresses;
        for (i, entry) in list.iter().enumerate() {
            let field = format!("nodePortAddresses[{i}]");
            if entry == NODE_PORT_ADDRESSES_PRIMARY {
                if i != 0 || list.len() != 1 {
                    errs.push(
                        field,
                        format!("{entry:?}: can't use both 'primary' and CIDRs"),
                    );
                }
                break;
            }
            if parse_cidr_sloppy(entry).is_none() {
                errs.push(field, format!("{entry:?}: must be a valid CIDR"));
            }
        }
    }

    /// component-base `metrics.ValidateShowHiddenMetricsVersion`.
    fn validate_show_hidden_metrics(&self, errs: &mut Errors) {
        let v = &self.show_hidden_metrics_for_version;
        let (major, minor) = KUBERNETES_VERSION;
        let allowed = format!("{major}.{}", minor.saturating_sub(1));
        if !v.is_empty() && *v != allowed {
            errs.push(
                "showHiddenMetricsForVersion",
                format!(
                    "{v:?}: must be omitted or have the value '{allowed}'; only the previous minor version is allowed"
                ),
            );
        }
    }

    /// `validateDetectLocalConfiguration`, with the resolved local mode.
    fn validate_detect_local(&self, errs: &mut Errors) {
        match self.resolved_local_mode() {
            LocalMode::BridgeInterface if self.detect_local.bridge_interface.is_empty() => {
                errs.push("detectLocal.bridgeInterface", "\"\": must not be empty");
            }
            LocalMode::InterfaceNamePrefix
                if self.detect_local.interface_name_prefix.is_empty() =>
            {
                errs.push("detectLocal.interfaceNamePrefix", "\"\": must not be empty");
            }
            LocalMode::ClusterCIDR if !self.cluster_cidr.is_empty() => {
                self.validate_cluster_cidrs(errs);
            }
            _ => {}
        }
    }

    /// `validateDualStackCIDRStrings` over `clusterCIDR` split on `,`.
    fn validate_cluster_cidrs(&self, errs: &mut Errors) {
        const PAIR: &str = "must be either a single CIDR or a dual-stack pair of CIDRs (e.g. 10.100.0.0/16,fde4:8dba:82e1::/48)";
        let parts: Vec<&str> = self.cluster_cidr.split(',').collect();
        if parts.len() > 2 {
            errs.push("clusterCIDR", format!("{:?}: {PAIR}", self.cluster_cidr));
            return;
        }
        let nets: Vec<_> = parts.iter().map(|p| parse_cidr_sloppy(p)).collect();
        for (part, net) in parts.iter().zip(&nets) {
            if net.is_none() {
                errs.push(
                    "clusterCIDR",
                    format!("{part:?}: must be a valid CIDR block (e.g. 10.100.0.0/16 or fde4:8dba:82e1::/48)"),
                );
            }
        }
        if let [Some(a), Some(b)] = nets.as_slice() {
            let is_v4 = |n: &ipnet::IpNet| matches!(n, ipnet::IpNet::V4(_));
            if is_v4(a) == is_v4(b) {
                errs.push("clusterCIDR", format!("{:?}: {PAIR}", self.cluster_cidr));
            }
        }
    }

    /// component-base `logs/api/v1` `Validate` (kube-proxy registers `text` and `json`).
    fn validate_logging(&self, errs: &mut Errors) {
        let log = &self.logging;
        let gate = |name: &str| self.feature_gates.get(name).copied();
        match log.format.as_str() {
            "text" => {}
            // LoggingBetaOptions is on by default.
            "json" if gate("LoggingBetaOptions") != Some(false) => {}
            "json" => errs.push(
                "logging.format",
                "log format json is disabled, see LoggingBetaOptions feature",
            ),
            other => errs.push(
                "logging.format",
                format!("{other:?}: unsupported log format"),
            ),
        }
        let max = u32::try_from(i32::MAX).unwrap_or(u32::MAX);
        if log.verbosity > max {
            errs.push(
                "logging.verbosity",
                format!("{}: must be <= {max}", log.verbosity),
            );
        }
        if !log.vmodule.is_empty() && !log.format.is_empty() && log.format != "text" {
            errs.push("logging.vmodule", "only supported for text log format");
        }
        for (i, item) in log.vmodule.iter().enumerate() {
            let field = format!("logging.vmodule[{i}]");
            if item.file_pattern.is_empty() {
                errs.push(field.clone(), "file pattern must not be empty");
            }
            if item.file_pattern.contains(['=', ',']) {
                errs.push(
                    field.clone(),
                    format!(
                        "{:?}: file pattern must not contain equal sign or comma",
                        item.file_pattern
                    ),
                );
            }
            if item.verbosity > max {
                errs.push(field, format!("{}: must be <= {max}", item.verbosity));
            }
        }
        let alpha = gate("LoggingAlphaOptions") == Some(true);
        for (name, opts) in [("text", &log.options.text), ("json", &log.options.json)] {
            if opts.split_stream && !alpha {
                errs.push(
                    format!("logging.options.{name}.splitStream"),
                    "feature LoggingAlphaOptions is disabled",
                );
            }
            let size = opts.info_buffer_size.trim();
            if !size.is_empty() && !is_zero_quantity(size) && !alpha {
                errs.push(
                    format!("logging.options.{name}.infoBufferSize"),
                    "feature LoggingAlphaOptions is disabled",
                );
            }
        }
    }
}

/// True for a quantity whose value is zero (`0`, `0Ki`, `0.0`, `+0`): the digits before
/// any suffix are all zeros.
fn is_zero_quantity(q: &str) -> bool {
    let number = q.trim_start_matches(['+', '-']);
    let end = number
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(number.len());
    let digits = &number[..end];
    !digits.is_empty() && digits.chars().all(|c| c == '0' || c == '.')
}
