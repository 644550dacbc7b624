//! The wire shape of `kubeproxy.config.k8s.io/v1alpha1` `KubeProxyConfiguration`.
//!
//! Follows `staging/src/k8s.io/kube-proxy/config/v1alpha1/types.go` (plus the component-base
//! `ClientConnectionConfiguration` and `logs/api/v1` `LoggingConfiguration` it embeds):
//! one Rust field per JSON field, JSON names checked against the Go tags. The `Default` of
//! every sub-struct is Go's zero value; upstream's defaults live in `defaults.rs`.
//!
//! Serialization mirrors Go's `encoding/json`: nil pointers print as `null`, empty lists
//! as `null` (Go's nil slice), `omitempty` fields are left out when empty.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::duration::{Duration, string_or_nanos};

/// The config's `apiVersion`.
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The config's `kind`.
pub const KIND: &str = "KubeProxyConfiguration";

/// Go prints a nil slice as `null`; an empty `Vec` is how kproxy holds a nil slice.
#[allow(clippy::ptr_arg)] // serde's serialize_with passes `&Vec<T>`
fn nil_if_empty<S: serde::Serializer>(v: &Vec<String>, s: S) -> Result<S::Ok, S::Error> {
    if v.is_empty() {
        s.serialize_none()
    } else {
        v.serialize(s)
    }
}

/// `float32` printed like Go's `encoding/json`: `5`, not `5.0`.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde's serialize_with passes `&f32`
fn go_float32<S: serde::Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    #[allow(clippy::cast_possible_truncation)]
    if v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f32(*v)
    }
}

/// The whole kube-proxy config document (`kubeproxy.config.k8s.io/v1alpha1`,
/// `kind: KubeProxyConfiguration`).
///
/// [`Default`] is upstream's defaulted config; [`from_yaml`](Self::from_yaml) and friends
/// return exactly what the document says (Go zero values for what it leaves out), to be
/// completed with [`with_defaults`](Self::with_defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    deny_unknown_fields,
    default = "KubeProxyConfiguration::zero"
)]
pub struct KubeProxyConfiguration {
    /// `apiVersion`: must be `kubeproxy.config.k8s.io/v1alpha1`.
    pub api_version: String,
    /// `kind`: must be `KubeProxyConfiguration`.
    pub kind: String,
    /// `featureGates`: feature name to enabled.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub feature_gates: BTreeMap<String, bool>,
    /// `clientConnection`: how to reach the API server.
    pub client_connection: ClientConnectionConfiguration,
    /// `logging`: component-base logging options.
    pub logging: LoggingConfiguration,
    /// `hostnameOverride`: the Node name to use instead of the hostname.
    pub hostname_override: String,
    /// `bindAddress`: overrides the node's primary IP (kube-proxy binds nothing to it).
    pub bind_address: String,
    /// `healthzBindAddress`: `IP:port` of the health server; empty disables it.
    pub healthz_bind_address: String,
    /// `metricsBindAddress`: `IP:port` of the metrics server.
    pub metrics_bind_address: String,
    /// `bindAddressHardFail`: exit if the healthz or metrics server cannot listen.
    pub bind_address_hard_fail: bool,
    /// `enableProfiling`: serve `/debug/pprof` on the metrics server.
    pub enable_profiling: bool,
    /// `showHiddenMetricsForVersion`: the previous minor version, or empty.
    pub show_hidden_metrics_for_version: String,
    /// `mode`: the proxy mode; see [`resolved_mode`](Self::resolved_mode) for `""`.
    pub mode: ProxyMode,
    /// `iptables`: iptables-mode options (the masquerade bit and `masqueradeAll` also
    /// apply to ipvs mode).
    pub iptables: KubeProxyIPTablesConfiguration,
    /// `ipvs`: ipvs-mode options.
    pub ipvs: KubeProxyIPVSConfiguration,
    /// `nftables`: nftables-mode options.
    pub nftables: KubeProxyNFTablesConfiguration,
    /// `winkernel`: Windows options, accepted and kept but unused by kproxy.
    pub winkernel: KubeProxyWinkernelConfiguration,
    /// `detectLocalMode`: how local traffic is told apart; see
    /// [`resolved_local_mode`](Self::resolved_local_mode) for `""`.
    pub detect_local_mode: LocalMode,
    /// `detectLocal`: the settings of the interface-based local modes.
    pub detect_local: DetectLocalConfiguration,
    /// `clusterCIDR`: the pod CIDR, or a comma-separated dual-stack pair.
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: String,
    /// `nodePortAddresses`: CIDRs NodePorts are served on, or exactly `["primary"]`.
    #[serde(serialize_with = "nil_if_empty")]
    pub node_port_addresses: Vec<String>,
    /// `oomScoreAdj`: the process's OOM score adjustment, in [-1000, 1000].
    pub oom_score_adj: Option<i32>,
    /// `conntrack`: conntrack sysctls to set.
    pub conntrack: KubeProxyConntrackConfiguration,
    /// `configSyncPeriod`: informer resync period.
    pub config_sync_period: Duration,
    /// `portRange`: the userspace proxy's port range (`base-max` or `base+offset`).
    pub port_range: String,
    /// `udpIdleTimeout`: **kproxy extension.** Upstream removed this userspace-mode field
    /// in v1.26; kproxy still runs a userspace mode and so still accepts it. Not defaulted
    /// in the document (so `--write-config-to` output stays loadable by upstream); read it
    /// through [`effective_udp_idle_timeout`](Self::effective_udp_idle_timeout) (250ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_idle_timeout: Option<Duration>,
    /// `windowsRunAsService`: Windows only; accepted and kept.
    #[serde(skip_serializing_if = "is_false")]
    pub windows_run_as_service: bool,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes `&bool`
fn is_false(b: &bool) -> bool {
    !*b
}

/// `clientConnection` (component-base `config/v1alpha1.ClientConnectionConfiguration`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ClientConnectionConfiguration {
    /// `kubeconfig`: path of a kubeconfig file; empty means in-cluster config.
    pub kubeconfig: String,
    /// `acceptContentTypes`: the client's `Accept` header.
    pub accept_content_types: String,
    /// `contentType`: the content type of requests sent to the API server.
    pub content_type: String,
    /// `qps`: client-side rate limit, queries per second.
    #[serde(serialize_with = "go_float32", deserialize_with = "float32")]
    pub qps: f32,
    /// `burst`: client-side rate limit burst.
    pub burst: i32,
}

/// `logging` (component-base `logs/api/v1.LoggingConfiguration`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LoggingConfiguration {
    /// `format`: `text` or `json`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub format: String,
    /// `flushFrequency`: the longest time between log flushes. Upstream also accepts an
    /// integer of nanoseconds here; kproxy always writes a duration string back.
    #[serde(deserialize_with = "string_or_nanos::deserialize")]
    pub flush_frequency: Duration,
    /// `verbosity`: klog's `-v` level.
    pub verbosity: u32,
    /// `vmodule`: per-file verbosity overrides (text format only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub vmodule: Vec<VModuleItem>,
    /// `options`: format-specific options.
    pub options: FormatOptions,
}

/// One `logging.vmodule` entry: files matching `filePattern` log at `verbosity`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct VModuleItem {
    /// `filePattern`: a file base name pattern, without `=` or `,`.
    pub file_pattern: String,
    /// `verbosity`: the level for matching files.
    pub verbosity: u32,
}

/// `logging.options`: options of each log format.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FormatOptions {
    /// `text`: options of the text format.
    pub text: OutputRoutingOptions,
    /// `json`: options of the JSON format.
    pub json: OutputRoutingOptions,
}

/// `logging.options.text` / `logging.options.json` (`OutputRoutingOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OutputRoutingOptions {
    /// `splitStream`: errors to stderr, info to stdout (alpha, gated by
    /// `LoggingAlphaOptions`).
    #[serde(skip_serializing_if = "is_false")]
    pub split_stream: bool,
    /// `infoBufferSize`: a Kubernetes quantity (`"0"`, `"64Ki"`); a bare integer is
    /// accepted too, as upstream's `resource.Quantity` does.
    #[serde(deserialize_with = "quantity_string")]
    pub info_buffer_size: String,
}

fn quantity_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a quantity such as \"0\" or \"64Ki\"")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(Visitor)
}

/// `iptables` (`KubeProxyIPTablesConfiguration`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubeProxyIPTablesConfiguration {
    /// `masqueradeBit`: the fwmark bit used to mark packets for SNAT, in [0, 31]; also
    /// used by ipvs mode.
    pub masquerade_bit: Option<i32>,
    /// `masqueradeAll`: SNAT all traffic to cluster IPs (iptables and ipvs modes).
    pub masquerade_all: bool,
    /// `localhostNodePorts`: allow NodePorts on 127.0.0.0/8 (iptables mode, IPv4).
    pub localhost_node_ports: Option<bool>,
    /// `snatNodeInternalIP`: SNAT with the node's InternalIP. Present in upstream's newest
    /// type only; accepted and kept, left out of the output when unset.
    #[serde(rename = "snatNodeInternalIP", skip_serializing_if = "Option::is_none")]
    pub snat_node_internal_ip: Option<bool>,
    /// `syncPeriod`: the longest time between full resyncs.
    pub sync_period: Duration,
    /// `minSyncPeriod`: the shortest time between resyncs; 0 syncs on every change.
    pub min_sync_period: Duration,
}

/// `ipvs` (`KubeProxyIPVSConfiguration`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubeProxyIPVSConfiguration {
    /// `syncPeriod`: the longest time between full resyncs.
    pub sync_period: Duration,
    /// `minSyncPeriod`: the shortest time between resyncs; 0 syncs on every change.
    pub min_sync_period: Duration,
    /// `scheduler`: the IPVS scheduler (`rr`, `wrr`, `lc`, ...); empty means `rr`.
    pub scheduler: String,
    /// `excludeCIDRs`: virtual servers in these CIDRs are never cleaned up.
    #[serde(rename = "excludeCIDRs", serialize_with = "nil_if_empty")]
    pub exclude_cidrs: Vec<String>,
    /// `strictARP`: set `arp_ignore`/`arp_announce` so kube-ipvs0 does not answer ARP.
    #[serde(rename = "strictARP")]
    pub strict_arp: bool,
    /// `tcpTimeout`: IPVS idle TCP session timeout; 0 keeps the kernel's value.
    pub tcp_timeout: Duration,
    /// `tcpFinTimeout`: IPVS TCP timeout after a FIN; 0 keeps the kernel's value.
    pub tcp_fin_timeout: Duration,
    /// `udpTimeout`: IPVS UDP timeout; 0 keeps the kernel's value.
    pub udp_timeout: Duration,
}

/// `nftables` (`KubeProxyNFTablesConfiguration`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubeProxyNFTablesConfiguration {
    /// `masqueradeBit`: the fwmark bit used to mark packets for SNAT, in [0, 31].
    pub masquerade_bit: Option<i32>,
    /// `masqueradeAll`: SNAT all traffic to cluster IPs.
    pub masquerade_all: bool,
    /// `syncPeriod`: the longest time between full resyncs.
    pub sync_period: Duration,
    /// `minSyncPeriod`: the shortest time between resyncs; 0 syncs on every change.
    pub min_sync_period: Duration,
}

/// `winkernel` (`KubeProxyWinkernelConfiguration`): Windows/HNS settings, parsed so that
/// upstream documents load, never used by kproxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubeProxyWinkernelConfiguration {
    /// `networkName`: the HNS network to use.
    pub network_name: String,
    /// `sourceVip`: the source VIP used for NAT.
    pub source_vip: String,
    /// `enableDSR`: create HNS policies with DSR.
    #[serde(rename = "enableDSR")]
    pub enable_dsr: bool,
    /// `rootHnsEndpointName`: the host's HNS endpoint on the l2bridge.
    pub root_hns_endpoint_name: String,
    /// `forwardHealthCheckVip`: forward the service VIP for the health check port.
    pub forward_health_check_vip: bool,
}

/// `detectLocal` (`DetectLocalConfiguration`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DetectLocalConfiguration {
    /// `bridgeInterface`: with `BridgeInterface` mode, traffic from this bridge is local.
    pub bridge_interface: String,
    /// `interfaceNamePrefix`: with `InterfaceNamePrefix` mode, traffic from interfaces
    /// with this prefix is local.
    pub interface_name_prefix: String,
}

/// `conntrack` (`KubeProxyConntrackConfiguration`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KubeProxyConntrackConfiguration {
    /// `maxPerCore`: conntrack entries per CPU; 0 leaves `nf_conntrack_max` alone.
    pub max_per_core: Option<i32>,
    /// `min`: the least `nf_conntrack_max` to set, whatever `maxPerCore` gives.
    pub min: Option<i32>,
    /// `tcpEstablishedTimeout`: `nf_conntrack_tcp_timeout_established`, if > 0.
    pub tcp_established_timeout: Option<Duration>,
    /// `tcpCloseWaitTimeout`: `nf_conntrack_tcp_timeout_close_wait`, if > 0.
    pub tcp_close_wait_timeout: Option<Duration>,
    /// `tcpBeLiberal`: set `nf_conntrack_tcp_be_liberal=1`.
    pub tcp_be_liberal: bool,
    /// `udpTimeout`: `nf_conntrack_udp_timeout`, if > 0.
    pub udp_timeout: Duration,
    /// `udpStreamTimeout`: `nf_conntrack_udp_timeout_stream`, if > 0.
    pub udp_stream_timeout: Duration,
}

/// Declares a string enum whose serde form is its upstream spelling.
macro_rules! string_enum {
    (
        $(#[$meta:meta])* $name:ident, $what:literal, $expected:literal,
        { $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The upstream spelling (`""` for `Unset`).
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $text, )+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            /// Exact, case-sensitive match of the upstream spelling.
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    other => Err(format!(concat!("unsupported ", $what, " {:?}: ", $expected), other)),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_enum! {
    /// `mode`: which proxy backend runs.
    ///
    /// Upstream's validation accepts `""`, `iptables`, `ipvs` and `nftables`; kproxy also
    /// accepts `userspace` (removed upstream in v1.26), since it still implements it.
    /// Any other value is rejected when the document is parsed.
    ProxyMode, "proxy mode",
    "must be iptables, ipvs, nftables, userspace or blank (blank means the best-available proxy [currently iptables])",
    {
        /// `""`: the platform default, iptables on Linux (see `resolved_mode`).
        #[default]
        Unset = "",
        /// `iptables`.
        Iptables = "iptables",
        /// `ipvs` (deprecated upstream in v1.35).
        Ipvs = "ipvs",
        /// `nftables`.
        Nftables = "nftables",
        /// `userspace` (kproxy only; removed upstream in v1.26).
        Userspace = "userspace",
    }
}

string_enum! {
    /// `detectLocalMode`: how kube-proxy decides that traffic comes from a local pod.
    LocalMode, "detect-local mode",
    "supported values: \"ClusterCIDR\", \"NodeCIDR\", \"BridgeInterface\", \"InterfaceNamePrefix\", \"\"",
    {
        /// `""`: the default, `ClusterCIDR` (see `resolved_local_mode`).
        #[default]
        Unset = "",
        /// `ClusterCIDR`: sources inside `clusterCIDR` are local.
        ClusterCIDR = "ClusterCIDR",
        /// `NodeCIDR`: sources inside the Node's `podCIDRs` are local.
        NodeCIDR = "NodeCIDR",
        /// `BridgeInterface`: traffic arriving on `detectLocal.bridgeInterface` is local.
        BridgeInterface = "BridgeInterface",
        /// `InterfaceNamePrefix`: traffic from interfaces named
        /// `detectLocal.interfaceNamePrefix*` is local.
        InterfaceNamePrefix = "InterfaceNamePrefix",
    }
}

/// Reads a number into an `f32` as Go's `float32` decoding does: a value beyond the
/// float32 range is an error, not infinity (which would not survive `to_yaml`).
fn float32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    let v = <f64 as serde::Deserialize>::deserialize(d)?;
    if v.is_finite() && v.abs() <= f64::from(f32::MAX) {
        // In range: the narrowing rounds to the nearest float32, as Go does.
        #[allow(clippy::cast_possible_truncation)]
        Ok(v as f32)
    } else {
        Err(serde::de::Error::custom(format!(
            "{v} is out of range for float32"
        )))
    }
}
