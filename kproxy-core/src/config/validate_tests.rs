//! One failing and one passing case per validation rule (`validate.rs`), each checking
//! which fields the errors name.

use super::*;
use crate::Error;

/// The fields named by `validate`, in order; empty when the config is valid.
fn failing_fields(cfg: &KubeProxyConfiguration) -> Vec<String> {
    match cfg.validate() {
        Ok(()) => Vec::new(),
        Err(Error::InvalidConfig { errors }) => {
            for e in &errors.0 {
                let first = e.reason.chars().next().unwrap();
                assert!(!first.is_uppercase() && !e.reason.ends_with('.'), "{e}");
            }
            errors.0.into_iter().map(|e| e.field).collect()
        }
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

/// Applies `edit` to the default config and checks the named fields.
fn check(edit: impl FnOnce(&mut KubeProxyConfiguration), want: &[&str]) {
    let mut cfg = KubeProxyConfiguration::default();
    edit(&mut cfg);
    assert_eq!(failing_fields(&cfg), want, "{cfg:#?}");
}

fn set(field: &mut String, value: &str) {
    value.clone_into(field);
}

#[test]
fn the_default_config_is_valid() {
    check(|_| {}, &[]);
}

#[test]
fn feature_gate_names_must_be_well_formed() {
    check(
        |c| _ = c.feature_gates.insert("Bad Gate".into(), true),
        &["featureGates"],
    );
    check(
        |c| _ = c.feature_gates.insert("SomeFutureGate".into(), true),
        &[],
    );
}

#[test]
fn iptables_masquerade_bit_must_be_0_to_31() {
    check(
        |c| c.iptables.masquerade_bit = Some(32),
        &["iptables.masqueradeBit"],
    );
    check(
        |c| c.iptables.masquerade_bit = Some(-1),
        &["iptables.masqueradeBit"],
    );
    check(|c| c.iptables.masquerade_bit = Some(31), &[]);
    check(|c| c.iptables.masquerade_bit = Some(0), &[]);
}

#[test]
fn nftables_masquerade_bit_is_checked_only_in_nftables_mode() {
    let bad = |c: &mut KubeProxyConfiguration| c.nftables.masquerade_bit = Some(32);
    check(
        |c| {
            bad(c);
            c.mode = ProxyMode::Nftables;
        },
        &["nftables.masqueradeBit"],
    );
    check(bad, &[]);
}

#[test]
fn ipvs_timeouts_must_not_be_negative_in_ipvs_mode() {
    let bad = |c: &mut KubeProxyConfiguration| {
        c.ipvs.tcp_timeout = Duration::from_secs(-1);
        c.ipvs.tcp_fin_timeout = Duration::from_secs(-1);
        c.ipvs.udp_timeout = Duration::from_secs(-1);
    };
    check(
        |c| {
            bad(c);
            c.mode = ProxyMode::Ipvs;
        },
        &["ipvs.tcpTimeout", "ipvs.tcpFinTimeout", "ipvs.udpTimeout"],
    );
    check(bad, &[]);
    check(
        |c| {
            c.mode = ProxyMode::Ipvs;
            c.ipvs.tcp_timeout = Duration::from_secs(900);
        },
        &[],
    );
}

#[test]
fn ipvs_exclude_cidrs_must_be_cidrs_in_ipvs_mode() {
    check(
        |c| {
            c.mode = ProxyMode::Ipvs;
            c.ipvs.exclude_cidrs = vec!["10.0.0.0/8".into(), "10.1.1.1".into()];
        },
        &["ipvs.excludeCIDRs[1]"],
    );
    check(
        |c| {
            c.mode = ProxyMode::Ipvs;
            c.ipvs.exclude_cidrs = vec!["10.0.0.0/8".into(), "fd00::/8".into()];
        },
        &[],
    );
}

#[test]
fn conntrack_values_must_not_be_negative() {
    check(
        |c| {
            c.conntrack.max_per_core = Some(-1);
            c.conntrack.min = Some(-1);
            c.conntrack.tcp_established_timeout = Some(Duration::from_secs(-1));
            c.conntrack.tcp_close_wait_timeout = Some(Duration::from_secs(-1));
            c.conntrack.udp_timeout = Duration::from_secs(-1);
            c.conntrack.udp_stream_timeout = Duration::from_secs(-1);
        },
        &[
            "conntrack.maxPerCore",
            "conntrack.min",
            "conntrack.tcpEstablishedTimeout",
            "conntrack.tcpCloseWaitTimeout",
            "conntrack.udpTimeout",
            "conntrack.udpStreamTimeout",
        ],
    );
    check(
        |c| {
            c.conntrack.max_per_core = Some(0);
            c.conntrack.min = Some(0);
            c.conntrack.tcp_established_timeout = Some(Duration::ZERO);
            c.conntrack.udp_timeout = Duration::from_secs(30);
        },
        &[],
    );
}

#[test]
fn oom_score_adj_must_be_within_plus_minus_1000() {
    check(|c| c.oom_score_adj = Some(1001), &["oomScoreAdj"]);
    check(|c| c.oom_score_adj = Some(-1001), &["oomScoreAdj"]);
    check(|c| c.oom_score_adj = Some(-1000), &[]);
}

#[test]
fn client_burst_must_not_be_negative() {
    check(
        |c| c.client_connection.burst = -1,
        &["clientConnection.burst"],
    );
    check(|c| c.client_connection.burst = 0, &[]);
}

#[test]
fn config_sync_period_must_be_positive() {
    check(
        |c| c.config_sync_period = Duration::ZERO,
        &["configSyncPeriod"],
    );
    check(
        |c| c.config_sync_period = Duration::from_secs(-5),
        &["configSyncPeriod"],
    );
    check(|c| c.config_sync_period = Duration::from_secs(1), &[]);
}

#[test]
fn sync_periods_of_the_active_mode_are_checked() {
    check(
        |c| c.iptables.sync_period = Duration::ZERO,
        &["iptables.syncPeriod", "iptables.syncPeriod"],
    );
    check(
        |c| c.iptables.min_sync_period = Duration::from_secs(-1),
        &["iptables.minSyncPeriod"],
    );
    check(
        |c| c.iptables.min_sync_period = Duration::from_secs(31),
        &["iptables.syncPeriod"],
    );
    check(
        |c| {
            c.mode = ProxyMode::Ipvs;
            c.ipvs.min_sync_period = Duration::from_secs(60);
        },
        &["ipvs.syncPeriod"],
    );
    check(
        |c| {
            c.mode = ProxyMode::Nftables;
            c.nftables.sync_period = Duration::from_secs(-1);
        },
        &["nftables.syncPeriod", "nftables.syncPeriod"],
    );
    // The inactive sections are not looked at.
    check(|c| c.ipvs.min_sync_period = Duration::from_secs(60), &[]);
    check(
        |c| c.iptables.min_sync_period = Duration::from_secs(30),
        &[],
    );
}

#[test]
fn udp_idle_timeout_must_be_positive_when_set() {
    check(
        |c| c.udp_idle_timeout = Some(Duration::ZERO),
        &["udpIdleTimeout"],
    );
    check(
        |c| c.udp_idle_timeout = Some(Duration::from_millis(250)),
        &[],
    );
}

#[test]
fn bind_address_must_be_an_ip() {
    check(|c| set(&mut c.bind_address, "node-a"), &["bindAddress"]);
    check(
        |c| set(&mut c.bind_address, "10.0.0.1:80"),
        &["bindAddress"],
    );
    check(|c| set(&mut c.bind_address, "fd00::1"), &[]);
}

#[test]
fn healthz_bind_address_must_be_ip_and_port_unless_empty() {
    check(
        |c| set(&mut c.healthz_bind_address, "0.0.0.0"),
        &["healthzBindAddress"],
    );
    check(
        |c| set(&mut c.healthz_bind_address, "host:10256"),
        &["healthzBindAddress"],
    );
    check(
        |c| set(&mut c.healthz_bind_address, "0.0.0.0:0"),
        &["healthzBindAddress"],
    );
    check(
        |c| set(&mut c.healthz_bind_address, "0.0.0.0:65536"),
        &["healthzBindAddress"],
    );
    check(
        |c| set(&mut c.healthz_bind_address, "x:y"),
        &["healthzBindAddress", "healthzBindAddress"],
    );
    check(|c| set(&mut c.healthz_bind_address, ""), &[]);
    check(|c| set(&mut c.healthz_bind_address, "[::1]:65535"), &[]);
}

#[test]
fn metrics_bind_address_must_be_ip_and_port_even_when_empty() {
    check(
        |c| set(&mut c.metrics_bind_address, ""),
        &["metricsBindAddress"],
    );
    check(
        |c| set(&mut c.metrics_bind_address, "127.0.0.1:"),
        &["metricsBindAddress"],
    );
    check(|c| set(&mut c.metrics_bind_address, "0.0.0.0:9999"), &[]);
}

#[test]
fn port_range_must_parse_when_set() {
    check(|c| set(&mut c.port_range, "2000-300"), &["portRange"]);
    check(|c| set(&mut c.port_range, "a-b"), &["portRange"]);
    check(|c| set(&mut c.port_range, "300-2000"), &[]);
    check(|c| set(&mut c.port_range, "30000+100"), &[]);
}

#[test]
fn node_port_addresses_are_cidrs_or_primary_alone() {
    check(
        |c| c.node_port_addresses = vec!["10.0.0.1".into()],
        &["nodePortAddresses[0]"],
    );
    check(
        |c| c.node_port_addresses = vec!["primary".into(), "10.0.0.0/8".into()],
        &["nodePortAddresses[0]"],
    );
    check(
        |c| c.node_port_addresses = vec!["127.0.0.1/32".into(), "primary".into()],
        &["nodePortAddresses[1]"],
    );
    check(|c| c.node_port_addresses = vec!["primary".into()], &[]);
    check(
        |c| c.node_port_addresses = vec!["10.0.0.0/8".into(), "fd00::/64".into()],
        &[],
    );
}

#[test]
fn show_hidden_metrics_accepts_only_the_previous_minor() {
    check(
        |c| set(&mut c.show_hidden_metrics_for_version, "1.20"),
        &["showHiddenMetricsForVersion"],
    );
    let (major, minor) = KUBERNETES_VERSION;
    let previous = format!("{major}.{}", minor - 1);
    check(
        |c| set(&mut c.show_hidden_metrics_for_version, &previous),
        &[],
    );
}

#[test]
fn bridge_interface_mode_needs_a_bridge_interface() {
    check(
        |c| c.detect_local_mode = LocalMode::BridgeInterface,
        &["detectLocal.bridgeInterface"],
    );
    check(
        |c| {
            c.detect_local_mode = LocalMode::BridgeInterface;
            set(&mut c.detect_local.bridge_interface, "cbr0");
        },
        &[],
    );
}

#[test]
fn interface_prefix_mode_needs_a_prefix() {
    check(
        |c| c.detect_local_mode = LocalMode::InterfaceNamePrefix,
        &["detectLocal.interfaceNamePrefix"],
    );
    check(
        |c| {
            c.detect_local_mode = LocalMode::InterfaceNamePrefix;
            set(&mut c.detect_local.interface_name_prefix, "veth");
        },
        &[],
    );
}

#[test]
fn cluster_cidr_must_be_one_cidr_or_a_dual_stack_pair_in_cluster_cidr_mode() {
    check(|c| set(&mut c.cluster_cidr, "10.0.0.0"), &["clusterCIDR"]);
    check(
        |c| set(&mut c.cluster_cidr, "10.0.0.0/8,10.1.0.0/16"),
        &["clusterCIDR"],
    );
    check(
        |c| set(&mut c.cluster_cidr, "10.0.0.0/8,fd00::/64,fd01::/64"),
        &["clusterCIDR"],
    );
    check(
        |c| set(&mut c.cluster_cidr, "10.0.0.0/8,bogus"),
        &["clusterCIDR"],
    );
    check(|c| set(&mut c.cluster_cidr, "10.0.0.0/8,fd00::/64"), &[]);
    check(|c| set(&mut c.cluster_cidr, "fd00::/64"), &[]);
    // Explicit ClusterCIDR mode too; other modes ignore clusterCIDR, as upstream.
    check(
        |c| {
            c.detect_local_mode = LocalMode::ClusterCIDR;
            set(&mut c.cluster_cidr, "nonsense");
        },
        &["clusterCIDR"],
    );
    check(
        |c| {
            c.detect_local_mode = LocalMode::NodeCIDR;
            set(&mut c.cluster_cidr, "nonsense");
        },
        &[],
    );
}

#[test]
fn logging_format_must_be_text_or_json() {
    check(|c| set(&mut c.logging.format, "xml"), &["logging.format"]);
    check(
        |c| {
            set(&mut c.logging.format, "json");
            c.feature_gates.insert("LoggingBetaOptions".into(), false);
        },
        &["logging.format"],
    );
    check(|c| set(&mut c.logging.format, "json"), &[]);
}

#[test]
fn logging_vmodule_entries_must_be_well_formed_and_text_only() {
    let item = |p: &str| VModuleItem {
        file_pattern: p.into(),
        verbosity: 2,
    };
    check(
        |c| c.logging.vmodule = vec![item(""), item("a=b")],
        &["logging.vmodule[0]", "logging.vmodule[1]"],
    );
    check(
        |c| {
            set(&mut c.logging.format, "json");
            c.logging.vmodule = vec![item("proxier")];
        },
        &["logging.vmodule"],
    );
    check(
        |c| {
            c.logging.vmodule = vec![VModuleItem {
                file_pattern: "x".into(),
                verbosity: u32::MAX,
            }]
        },
        &["logging.vmodule[0]"],
    );
    check(|c| c.logging.verbosity = u32::MAX, &["logging.verbosity"]);
    check(
        |c| {
            c.logging.vmodule = vec![item("proxier*")];
            c.logging.verbosity = 5;
        },
        &[],
    );
}

#[test]
fn logging_alpha_options_need_the_alpha_gate() {
    let alpha = |c: &mut KubeProxyConfiguration| {
        c.logging.options.text.split_stream = true;
        set(&mut c.logging.options.json.info_buffer_size, "64Ki");
    };
    check(
        alpha,
        &[
            "logging.options.text.splitStream",
            "logging.options.json.infoBufferSize",
        ],
    );
    check(
        |c| {
            alpha(c);
            c.feature_gates.insert("LoggingAlphaOptions".into(), true);
        },
        &[],
    );
    check(
        |c| set(&mut c.logging.options.text.info_buffer_size, "0Mi"),
        &[],
    );
}

#[test]
fn every_failure_is_reported_at_once_in_field_order() {
    let mut cfg = KubeProxyConfiguration::default();
    cfg.iptables.masquerade_bit = Some(99);
    cfg.oom_score_adj = Some(5000);
    set(&mut cfg.bind_address, "x");
    set(&mut cfg.port_range, "x");
    let Err(Error::InvalidConfig { errors }) = cfg.validate() else {
        panic!("expected errors")
    };
    let text = errors.to_string();
    assert_eq!(
        text,
        "iptables.masqueradeBit: 99: must be within the range [0, 31]; \
         oomScoreAdj: 5000: must be within the range [-1000, 1000]; \
         bindAddress: \"x\": not a valid textual representation of an IP address; \
         portRange: \"x\": must be a valid port range (e.g. 300-2000)"
    );
}
