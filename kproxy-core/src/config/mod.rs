//! kube-proxy's config file: `KubeProxyConfiguration`, API version
//! `kubeproxy.config.k8s.io/v1alpha1`, as pure data (no file access: callers pass the text).
//!
//! The life of a config, as in upstream's `cmd/kube-proxy/app/server.go`:
//! 1. [`KubeProxyConfiguration::parse`] (or [`from_yaml`](KubeProxyConfiguration::from_yaml)
//!    / [`from_json`](KubeProxyConfiguration::from_json)) decodes strictly: unknown and
//!    duplicate fields, a wrong `apiVersion` or `kind`, and unknown `mode` values are
//!    [`Error::ConfigSyntax`](crate::Error::ConfigSyntax) naming the field path
//!    ([`parse_lenient`](KubeProxyConfiguration::parse_lenient) is upstream's fallback,
//!    which drops unknown fields and reports them);
//! 2. [`with_defaults`](KubeProxyConfiguration::with_defaults) fills in upstream's
//!    defaults (`defaults.go`); [`Default`] is that applied to an empty document;
//! 3. the binary applies its flags to the plain `pub` fields;
//! 4. [`validate`](KubeProxyConfiguration::validate) checks upstream's rules and reports
//!    every failure in [`Error::InvalidConfig`](crate::Error::InvalidConfig);
//! 5. backends read the runtime view: [`resolved_mode`](KubeProxyConfiguration::resolved_mode),
//!    [`effective_sync_period`](KubeProxyConfiguration::effective_sync_period),
//!    [`cluster_cidrs`](KubeProxyConfiguration::cluster_cidrs), ...
//!
//! [`to_yaml`](KubeProxyConfiguration::to_yaml) writes the config back out, sorted like
//! upstream's `--write-config-to`.
//!
//! ```
//! use kproxy_core::config::{Duration, KubeProxyConfiguration, ProxyMode};
//!
//! let yaml = "
//! apiVersion: kubeproxy.config.k8s.io/v1alpha1
//! kind: KubeProxyConfiguration
//! mode: ipvs
//! clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
//! ipvs:
//!   minSyncPeriod: 5s
//! ";
//! let cfg = KubeProxyConfiguration::from_yaml(yaml)?.with_defaults();
//! cfg.validate()?;
//! assert_eq!(cfg.resolved_mode(), ProxyMode::Ipvs);
//! assert_eq!(cfg.ipvs.sync_period, Duration::from_secs(30)); // defaulted
//! assert_eq!(cfg.effective_min_sync_period(), std::time::Duration::from_secs(5));
//! assert_eq!(cfg.healthz_bind_address, "0.0.0.0:10256");
//! assert_eq!(cfg.cluster_cidrs().len(), 2);
//! # Ok::<(), kproxy_core::Error>(())
//! ```

mod decode;
mod defaults;
mod duration;
mod net;
mod types;
mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod validate_tests;

pub use defaults::{
    DEFAULT_HEALTHZ_PORT, DEFAULT_MASQUERADE_BIT, DEFAULT_METRICS_PORT, DEFAULT_OOM_SCORE_ADJ,
    DEFAULT_UDP_IDLE_TIMEOUT,
};
pub use duration::{Duration, ParseDurationError};
pub use types::{
    API_VERSION, ClientConnectionConfiguration, DetectLocalConfiguration, FormatOptions, KIND,
    KubeProxyConfiguration, KubeProxyConntrackConfiguration, KubeProxyIPTablesConfiguration,
    KubeProxyIPVSConfiguration, KubeProxyNFTablesConfiguration, KubeProxyWinkernelConfiguration,
    LocalMode, LoggingConfiguration, OutputRoutingOptions, ProxyMode, VModuleItem,
};
pub use validate::{KUBERNETES_VERSION, NODE_PORT_ADDRESSES_PRIMARY};

use crate::error::Result;

impl KubeProxyConfiguration {
    /// Decodes a YAML document strictly. Fields it leaves out keep their Go zero value
    /// until [`with_defaults`](Self::with_defaults).
    ///
    /// # Errors
    /// [`Error::ConfigSyntax`](crate::Error::ConfigSyntax) for YAML errors, unknown or
    /// duplicate fields (`unknown field "iptables.masqueradeBitt"`), values of the wrong
    /// type, and a wrong or missing `apiVersion`/`kind`.
    pub fn from_yaml(text: &str) -> Result<Self> {
        decode::from_yaml(text)
    }

    /// Decodes a JSON document strictly; see [`from_yaml`](Self::from_yaml).
    ///
    /// # Errors
    /// As [`from_yaml`](Self::from_yaml).
    pub fn from_json(text: &str) -> Result<Self> {
        decode::from_json(text)
    }

    /// Decodes JSON if the text starts with `{` (after whitespace), YAML otherwise.
    ///
    /// # Errors
    /// As [`from_yaml`](Self::from_yaml).
    pub fn parse(text: &str) -> Result<Self> {
        if text.trim_start().starts_with('{') {
            Self::from_json(text)
        } else {
            Self::from_yaml(text)
        }
    }

    /// Decodes leniently, as upstream does after strict decoding failed (logging "Using
    /// lenient decoding as strict decoding failed"): unknown fields are dropped and a
    /// repeated key keeps its last value. Returns the config and the paths of the dropped
    /// fields, for a warning. JSON or YAML, picked as [`parse`](Self::parse) does.
    ///
    /// ```
    /// use kproxy_core::KubeProxyConfiguration;
    ///
    /// let yaml = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
    ///             resourceContainer: /kube-proxy\nconntrack:\n  max: 0\n  min: 10\n";
    /// assert!(KubeProxyConfiguration::parse(yaml).is_err());
    /// let (cfg, ignored) = KubeProxyConfiguration::parse_lenient(yaml).unwrap();
    /// assert_eq!(ignored, ["resourceContainer", "conntrack.max"]);
    /// assert_eq!(cfg.conntrack.min, Some(10));
    /// ```
    ///
    /// # Errors
    /// [`Error::ConfigSyntax`](crate::Error::ConfigSyntax) for text that is not YAML or
    /// JSON, values of the wrong type, and a wrong or missing `apiVersion`/`kind`.
    pub fn parse_lenient(text: &str) -> Result<(Self, Vec<String>)> {
        decode::parse_lenient(text)
    }

    /// The config as YAML with keys sorted, as upstream's `--write-config-to` writes it.
    /// Parsing the output gives back an equal config.
    #[must_use]
    pub fn to_yaml(&self) -> String {
        decode::to_yaml(self)
    }

    /// The proxy mode to run: `mode`, or iptables when it is `""` (upstream's
    /// `platformApplyDefaults` on Linux).
    #[must_use]
    pub fn resolved_mode(&self) -> ProxyMode {
        match self.mode {
            ProxyMode::Unset => ProxyMode::Iptables,
            mode => mode,
        }
    }

    /// The local-traffic detection mode: `detectLocalMode`, or ClusterCIDR when it is `""`.
    #[must_use]
    pub fn resolved_local_mode(&self) -> LocalMode {
        match self.detect_local_mode {
            LocalMode::Unset => LocalMode::ClusterCIDR,
            mode => mode,
        }
    }

    /// `syncPeriod` of the running mode's section: `ipvs` in ipvs mode, `nftables` in
    /// nftables mode, `iptables` otherwise (upstream's `conversion.go`). Negative is 0.
    #[must_use]
    pub fn effective_sync_period(&self) -> std::time::Duration {
        match self.resolved_mode() {
            ProxyMode::Ipvs => self.ipvs.sync_period,
            ProxyMode::Nftables => self.nftables.sync_period,
            _ => self.iptables.sync_period,
        }
        .to_std()
    }

    /// `minSyncPeriod` of the running mode's section, as
    /// [`effective_sync_period`](Self::effective_sync_period) picks it.
    #[must_use]
    pub fn effective_min_sync_period(&self) -> std::time::Duration {
        match self.resolved_mode() {
            ProxyMode::Ipvs => self.ipvs.min_sync_period,
            ProxyMode::Nftables => self.nftables.min_sync_period,
            _ => self.iptables.min_sync_period,
        }
        .to_std()
    }

    /// `masqueradeAll` as the running mode sees it: `nftables.masqueradeAll` in nftables
    /// mode, `iptables.masqueradeAll` in every other mode (ipvs included).
    #[must_use]
    pub fn effective_masquerade_all(&self) -> bool {
        match self.resolved_mode() {
            ProxyMode::Nftables => self.nftables.masquerade_all,
            _ => self.iptables.masquerade_all,
        }
    }

    /// The masquerade fwmark bit of the running mode: `nftables.masqueradeBit` in nftables
    /// mode, `iptables.masqueradeBit` otherwise (ipvs has none of its own); 14 if unset.
    #[must_use]
    pub fn effective_masquerade_bit(&self) -> i32 {
        match self.resolved_mode() {
            ProxyMode::Nftables => self.nftables.masquerade_bit,
            _ => self.iptables.masquerade_bit,
        }
        .unwrap_or(DEFAULT_MASQUERADE_BIT)
    }

    /// The userspace proxy's UDP idle timeout: the kproxy-only `udpIdleTimeout`, or
    /// 250ms when unset.
    #[must_use]
    pub fn effective_udp_idle_timeout(&self) -> std::time::Duration {
        self.udp_idle_timeout
            .unwrap_or(DEFAULT_UDP_IDLE_TIMEOUT)
            .to_std()
    }

    /// `nodePortAddresses` as the running mode uses it: in nftables mode an empty list
    /// means `["primary"]` (upstream's `platformApplyDefaults`); in the other modes an
    /// empty list means every local IP. `primary` itself is left for the caller to expand
    /// into the Node's IPs.
    #[must_use]
    pub fn resolved_node_port_addresses(&self) -> Vec<String> {
        if self.node_port_addresses.is_empty() && self.resolved_mode() == ProxyMode::Nftables {
            vec![NODE_PORT_ADDRESSES_PRIMARY.to_owned()]
        } else {
            self.node_port_addresses.clone()
        }
    }

    /// `clusterCIDR` split on `,`, each as its network (host bits cleared). Entries that
    /// do not parse are left out; [`validate`](Self::validate) reports them.
    #[must_use]
    pub fn cluster_cidrs(&self) -> Vec<ipnet::IpNet> {
        if self.cluster_cidr.is_empty() {
            return Vec::new();
        }
        self.cluster_cidr
            .split(',')
            .filter_map(net::parse_cidr_sloppy)
            .map(|n| n.trunc())
            .collect()
    }
}
