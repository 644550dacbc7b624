//! Upstream's defaults: `pkg/proxy/apis/config/v1alpha1/defaults.go`
//! (`SetDefaults_KubeProxyConfiguration`, `getDefaultAddresses`) and component-base
//! `logs/api/v1` `SetRecommendedLoggingConfiguration`.
//!
//! Like upstream, a default only replaces a Go zero value (empty string, 0, nil), so a
//! field written as `0s` in the document is defaulted just like a missing one.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::duration::Duration;
use super::net::{append_port_if_needed, parse_ip_sloppy};
use super::types::{
    API_VERSION, ClientConnectionConfiguration, DetectLocalConfiguration, KIND,
    KubeProxyConfiguration, KubeProxyConntrackConfiguration, KubeProxyIPTablesConfiguration,
    KubeProxyIPVSConfiguration, KubeProxyNFTablesConfiguration, KubeProxyWinkernelConfiguration,
    LocalMode, LoggingConfiguration, OutputRoutingOptions, ProxyMode,
};

/// `ports.ProxyHealthzPort` (`pkg/cluster/ports/ports.go`).
pub const DEFAULT_HEALTHZ_PORT: u16 = 10256;
/// `ports.ProxyStatusPort` (`pkg/cluster/ports/ports.go`).
pub const DEFAULT_METRICS_PORT: u16 = 10249;
/// `qos.KubeProxyOOMScoreAdj` (`pkg/kubelet/qos/policy.go`).
pub const DEFAULT_OOM_SCORE_ADJ: i32 = -999;
/// The masquerade fwmark bit used when none is configured.
pub const DEFAULT_MASQUERADE_BIT: i32 = 14;
/// Default of the kproxy-only `udpIdleTimeout` (upstream's old userspace default).
pub const DEFAULT_UDP_IDLE_TIMEOUT: Duration = Duration::from_millis(250);

impl KubeProxyConfiguration {
    /// The config with every field at its Go zero value: what an empty document decodes
    /// to, before defaulting. `apiVersion` and `kind` are set.
    #[must_use]
    pub fn zero() -> Self {
        KubeProxyConfiguration {
            api_version: String::new(),
            kind: String::new(),
            feature_gates: BTreeMap::new(),
            client_connection: ClientConnectionConfiguration::default(),
            logging: LoggingConfiguration::default(),
            hostname_override: String::new(),
            bind_address: String::new(),
            healthz_bind_address: String::new(),
            metrics_bind_address: String::new(),
            bind_address_hard_fail: false,
            enable_profiling: false,
            show_hidden_metrics_for_version: String::new(),
            mode: ProxyMode::Unset,
            iptables: KubeProxyIPTablesConfiguration::default(),
            ipvs: KubeProxyIPVSConfiguration::default(),
            nftables: KubeProxyNFTablesConfiguration::default(),
            winkernel: KubeProxyWinkernelConfiguration::default(),
            detect_local_mode: LocalMode::Unset,
            detect_local: DetectLocalConfiguration::default(),
            cluster_cidr: String::new(),
            node_port_addresses: Vec::new(),
            oom_score_adj: None,
            conntrack: KubeProxyConntrackConfiguration::default(),
            config_sync_period: Duration::ZERO,
            port_range: String::new(),
            udp_idle_timeout: None,
            windows_run_as_service: false,
        }
        .with_type_meta()
    }

    fn with_type_meta(mut self) -> Self {
        API_VERSION.clone_into(&mut self.api_version);
        KIND.clone_into(&mut self.kind);
        self
    }

    /// Fills every unset field with upstream's default, exactly as
    /// `SetDefaults_KubeProxyConfiguration` does: `bindAddress` `0.0.0.0`; healthz and
    /// metrics addresses from the family of `bindAddress` (`0.0.0.0:10256` and
    /// `127.0.0.1:10249`, or `[::]:10256` and `[::1]:10249`), or the default port appended
    /// to a bare IP; `oomScoreAdj` -999; iptables/nftables sync periods 30s and 1s, ipvs
    /// 30s (its `minSyncPeriod` stays 0s); masquerade bits 14; `localhostNodePorts` true;
    /// conntrack 32768 per core, min 131072, established 24h, close-wait 1h;
    /// `configSyncPeriod` 15m; client content type protobuf, qps 5, burst 10; logging
    /// format `text`, flush 5s, info buffer sizes `"0"`.
    ///
    /// Runtime defaults (`mode` and `detectLocalMode`) are not written: see
    /// [`resolved_mode`](Self::resolved_mode).
    #[must_use]
    pub fn with_defaults(mut self) -> Self {
        if self.api_version.is_empty() {
            API_VERSION.clone_into(&mut self.api_version);
        }
        if self.kind.is_empty() {
            KIND.clone_into(&mut self.kind);
        }
        if self.bind_address.is_empty() {
            "0.0.0.0".clone_into(&mut self.bind_address);
        }
        // getDefaultAddresses: IPv4 defaults only if bindAddress parses as IPv4 (an
        // unparsable bindAddress gets the IPv6 ones, as upstream).
        let (healthz_host, metrics_host) = match parse_ip_sloppy(&self.bind_address) {
            Some(IpAddr::V4(_)) => ("0.0.0.0", "127.0.0.1"),
            _ => ("[::]", "[::1]"),
        };
        self.healthz_bind_address = if self.healthz_bind_address.is_empty() {
            format!("{healthz_host}:{DEFAULT_HEALTHZ_PORT}")
        } else {
            append_port_if_needed(&self.healthz_bind_address, DEFAULT_HEALTHZ_PORT)
        };
        self.metrics_bind_address = if self.metrics_bind_address.is_empty() {
            format!("{metrics_host}:{DEFAULT_METRICS_PORT}")
        } else {
            append_port_if_needed(&self.metrics_bind_address, DEFAULT_METRICS_PORT)
        };
        self.oom_score_adj.get_or_insert(DEFAULT_OOM_SCORE_ADJ);

        let ipt = &mut self.iptables;
        default_duration(&mut ipt.sync_period, Duration::from_secs(30));
        default_duration(&mut ipt.min_sync_period, Duration::from_secs(1));
        ipt.localhost_node_ports.get_or_insert(true);
        ipt.masquerade_bit.get_or_insert(DEFAULT_MASQUERADE_BIT);
        default_duration(&mut self.ipvs.sync_period, Duration::from_secs(30));
        let nft = &mut self.nftables;
        default_duration(&mut nft.sync_period, Duration::from_secs(30));
        default_duration(&mut nft.min_sync_period, Duration::from_secs(1));
        nft.masquerade_bit.get_or_insert(DEFAULT_MASQUERADE_BIT);

        let ct = &mut self.conntrack;
        ct.max_per_core.get_or_insert(32 * 1024);
        ct.min.get_or_insert(128 * 1024);
        ct.tcp_established_timeout
            .get_or_insert(Duration::from_hours(24));
        // One hour, to outlast typical server FIN_WAIT timeouts (kubernetes#32551).
        ct.tcp_close_wait_timeout
            .get_or_insert(Duration::from_hours(1));
        default_duration(&mut self.config_sync_period, Duration::from_mins(15));

        let cc = &mut self.client_connection;
        if cc.content_type.is_empty() {
            "application/vnd.kubernetes.protobuf".clone_into(&mut cc.content_type);
        }
        if cc.qps == 0.0 {
            cc.qps = 5.0;
        }
        if cc.burst == 0 {
            cc.burst = 10;
        }

        // SetRecommendedLoggingConfiguration.
        let log = &mut self.logging;
        if log.format.is_empty() {
            "text".clone_into(&mut log.format);
        }
        default_duration(&mut log.flush_frequency, Duration::from_secs(5));
        default_info_buffer(&mut log.options.text);
        default_info_buffer(&mut log.options.json);
        self
    }
}

fn default_duration(field: &mut Duration, default: Duration) {
    if field.is_zero() {
        *field = default;
    }
}

fn default_info_buffer(options: &mut OutputRoutingOptions) {
    if options.info_buffer_size.is_empty() {
        "0".clone_into(&mut options.info_buffer_size);
    }
}

impl Default for KubeProxyConfiguration {
    /// Upstream's defaulted config: the same as decoding a document with only
    /// `apiVersion` and `kind`, then calling [`with_defaults`](Self::with_defaults).
    fn default() -> Self {
        KubeProxyConfiguration::zero().with_defaults()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

    #[test]
    fn default_equals_a_minimal_document_with_defaults_applied() {
        let parsed = KubeProxyConfiguration::from_yaml(MINIMAL)
            .unwrap()
            .with_defaults();
        assert_eq!(parsed, KubeProxyConfiguration::default());
    }

    #[test]
    fn defaults_match_upstream_values() {
        let c = KubeProxyConfiguration::default();
        assert_eq!(c.bind_address, "0.0.0.0");
        assert_eq!(c.healthz_bind_address, "0.0.0.0:10256");
        assert_eq!(c.metrics_bind_address, "127.0.0.1:10249");
        assert_eq!(c.oom_score_adj, Some(-999));
        assert_eq!(c.iptables.masquerade_bit, Some(14));
        assert_eq!(c.iptables.localhost_node_ports, Some(true));
        assert_eq!(c.iptables.sync_period, Duration::from_secs(30));
        assert_eq!(c.iptables.min_sync_period, Duration::from_secs(1));
        assert_eq!(c.ipvs.sync_period, Duration::from_secs(30));
        assert_eq!(c.ipvs.min_sync_period, Duration::ZERO);
        assert_eq!(c.ipvs.scheduler, "");
        assert_eq!(c.nftables.masquerade_bit, Some(14));
        assert_eq!(c.nftables.sync_period, Duration::from_secs(30));
        assert_eq!(c.nftables.min_sync_period, Duration::from_secs(1));
        assert_eq!(c.conntrack.max_per_core, Some(32768));
        assert_eq!(c.conntrack.min, Some(131_072));
        assert_eq!(
            c.conntrack.tcp_established_timeout,
            Some(Duration::from_hours(24))
        );
        assert_eq!(
            c.conntrack.tcp_close_wait_timeout,
            Some(Duration::from_hours(1))
        );
        assert_eq!(c.conntrack.udp_timeout, Duration::ZERO);
        assert_eq!(c.config_sync_period, Duration::from_mins(15));
        assert_eq!(
            c.client_connection.content_type,
            "application/vnd.kubernetes.protobuf"
        );
        assert!((c.client_connection.qps - 5.0).abs() < f32::EPSILON);
        assert_eq!(c.client_connection.burst, 10);
        assert_eq!(c.logging.format, "text");
        assert_eq!(c.logging.flush_frequency, Duration::from_secs(5));
        assert_eq!(c.logging.options.json.info_buffer_size, "0");
        assert_eq!(c.mode, ProxyMode::Unset);
        assert_eq!(c.detect_local_mode, LocalMode::Unset);
        assert!(c.node_port_addresses.is_empty());
        assert_eq!(c.udp_idle_timeout, None);
        assert!(c.feature_gates.is_empty());
    }

    #[test]
    fn an_ipv6_bind_address_gives_ipv6_healthz_and_metrics_defaults() {
        let mut c = KubeProxyConfiguration::zero();
        "fd00::1".clone_into(&mut c.bind_address);
        let c = c.with_defaults();
        assert_eq!(c.healthz_bind_address, "[::]:10256");
        assert_eq!(c.metrics_bind_address, "[::1]:10249");
    }

    #[test]
    fn bare_ips_get_the_default_port_appended_and_full_addresses_are_kept() {
        let mut c = KubeProxyConfiguration::zero();
        "10.1.2.3".clone_into(&mut c.healthz_bind_address);
        "::".clone_into(&mut c.metrics_bind_address);
        let c = c.with_defaults();
        assert_eq!(c.healthz_bind_address, "10.1.2.3:10256");
        assert_eq!(c.metrics_bind_address, "[::]:10249");
        let mut d = KubeProxyConfiguration::zero();
        "0.0.0.0:9999".clone_into(&mut d.metrics_bind_address);
        assert_eq!(d.with_defaults().metrics_bind_address, "0.0.0.0:9999");
    }

    #[test]
    fn explicit_zero_durations_are_defaulted_like_missing_ones() {
        let yaml = format!("{MINIMAL}iptables:\n  syncPeriod: 0s\n  minSyncPeriod: 0s\n");
        let c = KubeProxyConfiguration::from_yaml(&yaml)
            .unwrap()
            .with_defaults();
        assert_eq!(c.iptables.sync_period, Duration::from_secs(30));
        assert_eq!(c.iptables.min_sync_period, Duration::from_secs(1));
    }

    #[test]
    fn values_the_document_sets_survive_defaulting() {
        let yaml = format!(
            "{MINIMAL}oomScoreAdj: 0\niptables:\n  masqueradeBit: 0\n  localhostNodePorts: false\n\
             conntrack:\n  maxPerCore: 0\n  tcpEstablishedTimeout: 0s\n"
        );
        let c = KubeProxyConfiguration::from_yaml(&yaml)
            .unwrap()
            .with_defaults();
        assert_eq!(c.oom_score_adj, Some(0));
        assert_eq!(c.iptables.masquerade_bit, Some(0));
        assert_eq!(c.iptables.localhost_node_ports, Some(false));
        assert_eq!(c.conntrack.max_per_core, Some(0));
        assert_eq!(c.conntrack.tcp_established_timeout, Some(Duration::ZERO));
    }

    #[test]
    fn defaulting_twice_changes_nothing() {
        let once = KubeProxyConfiguration::default();
        assert_eq!(once.clone().with_defaults(), once);
    }
}
