//! Decoding, encoding and the runtime view of the config.

use super::*;
use crate::Error;

const HEAD: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

/// Upstream's defaulted round-trip fixture, written out again here: the content of
/// `pkg/proxy/apis/config/scheme/testdata/KubeProxyConfiguration/after/v1alpha1.yaml`
/// (v1.33-era; the conversion back from the internal type leaves the ipvs and nftables
/// periods at 0s, which defaulting fills in again).
const UPSTREAM_AFTER: &str = r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 10
  contentType: application/vnd.kubernetes.protobuf
  kubeconfig: ""
  qps: 5
clusterCIDR: ""
configSyncPeriod: 15m0s
conntrack:
  maxPerCore: 32768
  min: 131072
  tcpBeLiberal: false
  tcpCloseWaitTimeout: 1h0m0s
  tcpEstablishedTimeout: 24h0m0s
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: 0.0.0.0:10256
hostnameOverride: ""
iptables:
  localhostNodePorts: true
  masqueradeAll: false
  masqueradeBit: 14
  minSyncPeriod: 1s
  syncPeriod: 30s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
logging:
  flushFrequency: 5s
  format: text
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: 127.0.0.1:10249
mode: ""
nftables:
  masqueradeAll: false
  masqueradeBit: 14
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses: null
oomScoreAdj: -999
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
"#;

/// The IPVS example of the kube-proxy docs (`virtual-ips.md`).
const DOCS_IPVS: &str = r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: "ipvs"
ipvs:
  scheduler: "lc"
  strictARP: true
"#;

/// A hand-written config setting most fields away from their defaults.
const CUSTOM: &str = r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
featureGates:
  LoggingAlphaOptions: true
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 2.5
  burst: 20
logging:
  format: json
  flushFrequency: 1000000000
  verbosity: 4
  options:
    json:
      splitStream: true
      infoBufferSize: 65536
hostnameOverride: node-a
bindAddress: "::"
healthzBindAddress: "::"
bindAddressHardFail: true
enableProfiling: true
mode: nftables
iptables:
  masqueradeBit: 13
  localhostNodePorts: false
  snatNodeInternalIP: true
nftables:
  masqueradeAll: true
  syncPeriod: 1m
  minSyncPeriod: 250ms
detectLocalMode: InterfaceNamePrefix
detectLocal:
  interfaceNamePrefix: veth
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
nodePortAddresses: [primary]
oomScoreAdj: -500
conntrack:
  maxPerCore: 0
  tcpBeLiberal: true
  udpTimeout: 30s
  udpStreamTimeout: 2m
configSyncPeriod: 1h
windowsRunAsService: false
udpIdleTimeout: 1s
"#;

fn syntax_reason(result: crate::Result<KubeProxyConfiguration>) -> String {
    match result {
        Err(Error::ConfigSyntax { reason }) => reason,
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn upstream_defaulted_fixture_parses_and_defaults_to_our_default() {
    let cfg = KubeProxyConfiguration::from_yaml(UPSTREAM_AFTER).unwrap();
    assert_eq!(cfg.ipvs.sync_period, Duration::ZERO);
    let cfg = cfg.with_defaults();
    cfg.validate().unwrap();
    assert_eq!(cfg, KubeProxyConfiguration::default());
}

#[test]
fn default_config_serializes_with_upstream_key_order_and_values() {
    let yaml = KubeProxyConfiguration::default().to_yaml();
    let keys: Vec<&str> = yaml
        .lines()
        .filter(|l| !l.starts_with(' '))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted);
    for line in [
        "configSyncPeriod: 15m0s",
        "  tcpEstablishedTimeout: 24h0m0s",
        "  qps: 5",
        "  excludeCIDRs: null",
        "nodePortAddresses: null",
        "mode: \"\"",
        "      infoBufferSize: \"0\"",
        "  strictARP: false",
        "clusterCIDR: \"\"",
    ] {
        assert!(
            yaml.lines().any(|l| l == line),
            "missing {line:?} in\n{yaml}"
        );
    }
    for absent in [
        "featureGates",
        "udpIdleTimeout",
        "windowsRunAsService",
        "snatNodeInternalIP",
    ] {
        assert!(!yaml.contains(absent), "{absent} should be omitted");
    }
}

#[test]
fn every_example_round_trips_through_defaults_and_yaml() {
    for doc in [UPSTREAM_AFTER, DOCS_IPVS, CUSTOM, HEAD] {
        let cfg = KubeProxyConfiguration::parse(doc).unwrap().with_defaults();
        let again = KubeProxyConfiguration::from_yaml(&cfg.to_yaml()).unwrap();
        assert_eq!(again, cfg, "{doc}");
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(KubeProxyConfiguration::from_json(&json).unwrap(), cfg);
    }
}

#[test]
fn docs_ipvs_example_selects_ipvs_with_its_scheduler() {
    let cfg = KubeProxyConfiguration::from_yaml(DOCS_IPVS)
        .unwrap()
        .with_defaults();
    cfg.validate().unwrap();
    assert_eq!(cfg.resolved_mode(), ProxyMode::Ipvs);
    assert_eq!(cfg.ipvs.scheduler, "lc");
    assert!(cfg.ipvs.strict_arp);
    assert_eq!(
        cfg.effective_sync_period(),
        std::time::Duration::from_secs(30)
    );
    assert_eq!(cfg.effective_min_sync_period(), std::time::Duration::ZERO);
}

#[test]
fn custom_config_keeps_every_value_it_sets() {
    let cfg = KubeProxyConfiguration::from_yaml(CUSTOM)
        .unwrap()
        .with_defaults();
    cfg.validate().unwrap();
    assert_eq!(cfg.feature_gates.get("LoggingAlphaOptions"), Some(&true));
    assert!((cfg.client_connection.qps - 2.5).abs() < f32::EPSILON);
    assert_eq!(cfg.client_connection.burst, 20);
    assert_eq!(cfg.logging.flush_frequency, Duration::from_secs(1));
    assert_eq!(cfg.logging.options.json.info_buffer_size, "65536");
    assert!(cfg.logging.options.json.split_stream);
    assert_eq!(cfg.healthz_bind_address, "[::]:10256");
    assert_eq!(cfg.metrics_bind_address, "[::1]:10249");
    assert_eq!(cfg.iptables.snat_node_internal_ip, Some(true));
    assert_eq!(cfg.resolved_mode(), ProxyMode::Nftables);
    assert_eq!(
        cfg.effective_sync_period(),
        std::time::Duration::from_secs(60)
    );
    assert_eq!(
        cfg.effective_min_sync_period(),
        std::time::Duration::from_millis(250)
    );
    assert!(cfg.effective_masquerade_all());
    assert_eq!(cfg.effective_masquerade_bit(), 14);
    assert_eq!(cfg.resolved_local_mode(), LocalMode::InterfaceNamePrefix);
    assert_eq!(cfg.node_port_addresses, ["primary"]);
    assert_eq!(cfg.oom_score_adj, Some(-500));
    assert_eq!(cfg.conntrack.max_per_core, Some(0));
    assert_eq!(cfg.conntrack.min, Some(131_072));
    assert_eq!(cfg.conntrack.udp_stream_timeout, Duration::from_mins(2));
    assert_eq!(cfg.config_sync_period, Duration::from_hours(1));
    assert_eq!(
        cfg.effective_udp_idle_timeout(),
        std::time::Duration::from_secs(1)
    );
    assert!(cfg.to_yaml().contains("udpIdleTimeout: 1s"));
}

#[test]
fn json_documents_decode_like_yaml() {
    let json = r#"{"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "mode": "ipvs", "clusterCIDR": "10.0.0.0/8", "ipvs": {"excludeCIDRs": ["10.1.0.0/16"], "strictARP": true}}"#;
    let yaml = format!(
        "{HEAD}mode: ipvs\nclusterCIDR: 10.0.0.0/8\nipvs:\n  excludeCIDRs: [10.1.0.0/16]\n  strictARP: true\n"
    );
    let from_json = KubeProxyConfiguration::parse(json).unwrap();
    assert_eq!(from_json, KubeProxyConfiguration::from_json(json).unwrap());
    assert_eq!(from_json, KubeProxyConfiguration::parse(&yaml).unwrap());
    assert_eq!(from_json.ipvs.exclude_cidrs, ["10.1.0.0/16"]);
}

#[test]
fn unknown_top_level_field_is_rejected_by_name() {
    let reason = syntax_reason(KubeProxyConfiguration::from_yaml(&format!(
        "{HEAD}resourceContainer: /kube-proxy\n"
    )));
    assert_eq!(reason, "unknown field \"resourceContainer\"");
}

#[test]
fn unknown_nested_field_is_rejected_with_its_full_path() {
    let reason = syntax_reason(KubeProxyConfiguration::from_yaml(&format!(
        "{HEAD}iptables:\n  masqueradeBitt: 14\n"
    )));
    assert_eq!(reason, "unknown field \"iptables.masqueradeBitt\"");
    let reason = syntax_reason(KubeProxyConfiguration::from_yaml(&format!(
        "{HEAD}logging:\n  vmodule:\n  - filePattern: x\n    level: 2\n"
    )));
    assert_eq!(reason, "unknown field \"logging.vmodule[0].level\"");
    let json = r#"{"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration", "conntrack": {"max": 5}}"#;
    assert_eq!(
        syntax_reason(KubeProxyConfiguration::from_json(json)),
        "unknown field \"conntrack.max\""
    );
}

#[test]
fn duplicate_keys_are_rejected_in_yaml_and_json() {
    let reason = syntax_reason(KubeProxyConfiguration::from_yaml(&format!(
        "{HEAD}mode: ipvs\nmode: iptables\n"
    )));
    assert!(reason.starts_with("duplicate field \"mode\""), "{reason}");
    let reason = syntax_reason(KubeProxyConfiguration::from_yaml(&format!(
        "{HEAD}featureGates:\n  A: true\n  A: false\n"
    )));
    assert!(
        reason.starts_with("duplicate field \"featureGates.A\""),
        "{reason}"
    );
    let json = r#"{"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "iptables": {"syncPeriod": "1s", "syncPeriod": "2s"}}"#;
    assert_eq!(
        syntax_reason(KubeProxyConfiguration::from_json(json)),
        "duplicate field \"iptables.syncPeriod\""
    );
}

#[test]
fn wrong_or_missing_api_version_and_kind_name_the_field() {
    let reason = syntax_reason(KubeProxyConfiguration::from_yaml(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n",
    ));
    assert!(reason.starts_with("apiVersion: "), "{reason}");
    let reason = syntax_reason(KubeProxyConfiguration::from_yaml(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n",
    ));
    assert!(reason.starts_with("kind: "), "{reason}");
    let reason = syntax_reason(KubeProxyConfiguration::from_yaml(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n",
    ));
    assert!(reason.starts_with("kind: missing"), "{reason}");
}

#[test]
fn values_of_the_wrong_type_name_their_path() {
    let reason = syntax_reason(KubeProxyConfiguration::from_yaml(&format!(
        "{HEAD}iptables:\n  syncPeriod: 30\n"
    )));
    assert!(
        reason.starts_with("iptables.syncPeriod: invalid type"),
        "{reason}"
    );
    let reason = syntax_reason(KubeProxyConfiguration::from_yaml(&format!(
        "{HEAD}conntrack:\n  udpTimeout: 3d\n"
    )));
    assert_eq!(
        reason,
        "conntrack.udpTimeout: unknown unit \"d\" in duration \"3d\""
    );
    let reason = syntax_reason(KubeProxyConfiguration::from_yaml(&format!(
        "{HEAD}oomScoreAdj: lots\n"
    )));
    assert!(reason.starts_with("oomScoreAdj: "), "{reason}");
}

#[test]
fn unknown_modes_fail_to_parse_naming_the_field() {
    let reason = syntax_reason(KubeProxyConfiguration::from_yaml(&format!(
        "{HEAD}mode: kernelspace\n"
    )));
    assert!(
        reason.starts_with("mode: unsupported proxy mode \"kernelspace\""),
        "{reason}"
    );
    let reason = syntax_reason(KubeProxyConfiguration::from_yaml(&format!(
        "{HEAD}detectLocalMode: PodCIDR\n"
    )));
    assert!(reason.starts_with("detectLocalMode: "), "{reason}");
    assert_eq!("nftables".parse::<ProxyMode>(), Ok(ProxyMode::Nftables));
    assert_eq!(ProxyMode::Unset.to_string(), "");
    assert_eq!(LocalMode::ALL.len(), 5);
}

#[test]
fn empty_and_non_mapping_documents_are_syntax_errors() {
    for doc in ["", "# nothing\n", "- a\n", "42", "{"] {
        assert!(
            matches!(
                KubeProxyConfiguration::parse(doc),
                Err(Error::ConfigSyntax { .. })
            ),
            "{doc:?}"
        );
    }
}

#[test]
fn explicit_nulls_leave_go_zero_values() {
    let doc = format!(
        "{HEAD}hostnameOverride:\nnodePortAddresses: null\nfeatureGates: ~\niptables:\n  masqueradeBit: null\n"
    );
    let cfg = KubeProxyConfiguration::from_yaml(&doc).unwrap();
    assert_eq!(cfg.hostname_override, "");
    assert!(cfg.node_port_addresses.is_empty());
    assert_eq!(cfg.iptables.masquerade_bit, None);
    assert_eq!(cfg.with_defaults().iptables.masquerade_bit, Some(14));
}

#[test]
fn userspace_mode_and_udp_idle_timeout_are_accepted_as_kproxy_extensions() {
    let cfg = KubeProxyConfiguration::from_yaml(&format!(
        "{HEAD}mode: userspace\nudpIdleTimeout: 500ms\nportRange: 30000-32767\n"
    ))
    .unwrap()
    .with_defaults();
    cfg.validate().unwrap();
    assert_eq!(cfg.resolved_mode(), ProxyMode::Userspace);
    assert_eq!(
        cfg.effective_udp_idle_timeout(),
        std::time::Duration::from_millis(500)
    );
    assert_eq!(
        cfg.effective_sync_period(),
        std::time::Duration::from_secs(30)
    );
    let default = KubeProxyConfiguration::default();
    assert_eq!(
        default.effective_udp_idle_timeout(),
        std::time::Duration::from_millis(250)
    );
}

#[test]
fn windows_fields_are_accepted_and_kept() {
    let cfg = KubeProxyConfiguration::from_yaml(&format!(
        "{HEAD}windowsRunAsService: true\nwinkernel:\n  networkName: l2bridge\n  enableDSR: true\n"
    ))
    .unwrap();
    assert!(cfg.windows_run_as_service);
    assert!(cfg.winkernel.enable_dsr);
    assert!(cfg.to_yaml().contains("windowsRunAsService: true"));
}

#[test]
fn runtime_view_resolves_blank_modes_and_picks_the_mode_section() {
    let mut cfg = KubeProxyConfiguration::default();
    assert_eq!(cfg.resolved_mode(), ProxyMode::Iptables);
    assert_eq!(cfg.resolved_local_mode(), LocalMode::ClusterCIDR);
    cfg.iptables.masquerade_all = true;
    cfg.iptables.sync_period = Duration::from_secs(10);
    assert!(cfg.effective_masquerade_all());
    assert_eq!(
        cfg.effective_sync_period(),
        std::time::Duration::from_secs(10)
    );
    cfg.mode = ProxyMode::Ipvs;
    assert!(
        cfg.effective_masquerade_all(),
        "ipvs uses iptables.masqueradeAll"
    );
    assert_eq!(
        cfg.effective_sync_period(),
        std::time::Duration::from_secs(30)
    );
    cfg.mode = ProxyMode::Nftables;
    assert!(!cfg.effective_masquerade_all());
    assert_eq!(
        cfg.effective_min_sync_period(),
        std::time::Duration::from_secs(1)
    );
}

#[test]
fn lenient_decoding_drops_unknown_fields_and_keeps_the_last_duplicate() {
    let yaml = format!(
        "{HEAD}mode: ipvs\nmode: iptables\nudpTimeout: 1s\nipvs:\n  masqueradeAll: true\n  scheduler: sh\n\
         logging:\n  vmodule:\n  - filePattern: x\n    level: 1\nfeatureGates:\n  Anything: true\n"
    );
    assert!(KubeProxyConfiguration::parse(&yaml).is_err());
    let (cfg, ignored) = KubeProxyConfiguration::parse_lenient(&yaml).unwrap();
    assert_eq!(
        ignored,
        [
            "udpTimeout",
            "ipvs.masqueradeAll",
            "logging.vmodule[0].level"
        ]
    );
    assert_eq!(cfg.mode, ProxyMode::Iptables);
    assert_eq!(cfg.ipvs.scheduler, "sh");
    assert_eq!(cfg.feature_gates.get("Anything"), Some(&true));

    let json = r#"{"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "bindAddress": "1.1.1.1", "bindAddress": "2.2.2.2", "extra": {"deep": 1}}"#;
    let (cfg, ignored) = KubeProxyConfiguration::parse_lenient(json).unwrap();
    assert_eq!(cfg.bind_address, "2.2.2.2");
    assert_eq!(ignored, ["extra"]);
}

#[test]
fn lenient_decoding_still_rejects_type_errors_and_wrong_kinds() {
    let bad_type = format!("{HEAD}oomScoreAdj: lots\n");
    assert!(KubeProxyConfiguration::parse_lenient(&bad_type).is_err());
    let wrong_kind = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: Other\n";
    assert!(KubeProxyConfiguration::parse_lenient(wrong_kind).is_err());
    let (cfg, ignored) = KubeProxyConfiguration::parse_lenient(CUSTOM).unwrap();
    assert!(ignored.is_empty());
    assert_eq!(cfg, KubeProxyConfiguration::parse(CUSTOM).unwrap());
}

#[test]
fn nftables_mode_defaults_node_port_addresses_to_primary_at_run_time() {
    let mut cfg = KubeProxyConfiguration::default();
    assert!(cfg.resolved_node_port_addresses().is_empty());
    cfg.mode = ProxyMode::Nftables;
    assert_eq!(cfg.resolved_node_port_addresses(), ["primary"]);
    assert!(
        cfg.node_port_addresses.is_empty(),
        "the document is not changed"
    );
    cfg.node_port_addresses = vec!["10.0.0.0/8".into()];
    assert_eq!(cfg.resolved_node_port_addresses(), ["10.0.0.0/8"]);
}

#[test]
fn cluster_cidrs_split_on_commas_and_clear_host_bits() {
    let mut cfg = KubeProxyConfiguration::default();
    assert!(cfg.cluster_cidrs().is_empty());
    "10.244.1.2/16,fd00::/64".clone_into(&mut cfg.cluster_cidr);
    let nets: Vec<String> = cfg
        .cluster_cidrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["10.244.0.0/16", "fd00::/64"]);
    "10.0.0.0/8,bogus".clone_into(&mut cfg.cluster_cidr);
    assert_eq!(cfg.cluster_cidrs().len(), 1);
}

#[test]
fn strings_that_look_like_other_yaml_types_survive_a_round_trip() {
    let tricky = [
        "true",
        "yes",
        "on",
        "No",
        "null",
        "~",
        "123",
        "0x1F",
        "0o17",
        "1e3",
        "1.32",
        ".inf",
        "",
        " lead",
        "trail ",
        "a: b",
        "- a",
        "#c",
        "multi\nline",
        "quote\"d",
        "'single'",
        "@at",
        "*star",
        "&amp",
        "!tag",
        "%pct",
        "{x}",
        "[y]",
        "10.0.0.1:80",
        "2024-01-01",
        "\u{b5}s",
    ];
    for text in tricky {
        let mut cfg = KubeProxyConfiguration::default();
        text.clone_into(&mut cfg.hostname_override);
        text.clone_into(&mut cfg.ipvs.scheduler);
        cfg.node_port_addresses = vec![text.to_owned()];
        cfg.feature_gates.insert(text.to_owned(), true);
        let yaml = cfg.to_yaml();
        let again = KubeProxyConfiguration::from_yaml(&yaml)
            .unwrap_or_else(|e| panic!("{text:?}: {e}\n{yaml}"));
        assert_eq!(again, cfg, "{text:?}\n{yaml}");
    }
}

proptest::proptest! {
    /// Decoding never panics, whatever the text (the config is read from user files).
    #[test]
    fn parsing_arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = KubeProxyConfiguration::parse(&text);
        let _ = KubeProxyConfiguration::from_json(&text);
    }

    /// Decoding never panics on near-valid documents either: a valid header followed by
    /// random lines built from real field names and values.
    #[test]
    fn parsing_mutated_documents_never_panics(
        lines in proptest::collection::vec(
            (
                proptest::sample::select(vec![
                    "mode", "iptables", "  syncPeriod", "  masqueradeBit", "conntrack", "  min",
                    "clusterCIDR", "nodePortAddresses", "logging", "  vmodule", "featureGates", "x",
                ]),
                proptest::sample::select(vec![
                    "", "ipvs", "30s", "-1s", "14", "[a, b]", "{a: 1}", "null", "~", "10.0.0.0/8",
                    "\"\"", "- x", "1e99", "&a x", "*a", "!!binary aGk=",
                ]),
            ),
            0..8,
        )
    ) {
        let mut doc = HEAD.to_owned();
        for (key, value) in lines {
            doc.push_str(&format!("{key}: {value}\n"));
        }
        if let Ok(cfg) = KubeProxyConfiguration::from_yaml(&doc) {
            let cfg = cfg.with_defaults();
            let _ = cfg.validate();
            let again = KubeProxyConfiguration::from_yaml(&cfg.to_yaml());
            proptest::prop_assert_eq!(again.ok(), Some(cfg));
        }
    }
}

#[test]
fn a_qps_beyond_the_float32_range_is_rejected_naming_the_field() {
    // Found while fuzzing: 1e300 used to become infinity, which to_yaml wrote as null.
    let doc = format!("{HEAD}clientConnection:\n  qps: 1e300\n");
    let err = KubeProxyConfiguration::from_yaml(&doc)
        .unwrap_err()
        .to_string();
    assert!(err.contains("clientConnection.qps"), "{err}");
    assert!(err.contains("out of range for float32"), "{err}");
    let ok = format!("{HEAD}clientConnection:\n  qps: 3.4e38\n");
    assert!(KubeProxyConfiguration::from_yaml(&ok).is_ok());
}
