//! The command line: upstream kube-proxy's Linux flags (same names, same defaults), plus
//! kproxy's subcommands.
//!
//! Flags that map to a config field are `Option`s: `None` means "not given", which is what
//! the precedence rules of [`crate::config`] need (upstream's `Options.Complete` ignores
//! them when `--config` is set). Each field's doc comment is its `--help` text; upstream's
//! default is named there.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kproxy_core::config::{Duration, LocalMode, ProxyMode};

/// kproxy: a drop-in kube-proxy written in Rust.
///
/// With no subcommand, or with `run`, kproxy runs the proxy, as kube-proxy does.
#[derive(Debug, Parser)]
#[command(
    name = "kproxy",
    version,
    args_conflicts_with_subcommands = true,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// What to do; running the proxy if left out.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The proxy's flags, when no subcommand is given.
    #[command(flatten)]
    pub proxy: ProxyFlags,
}

/// kproxy's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (the default).
    Run(ProxyFlags),
    /// Print the service map a node would program, from Kubernetes objects in files.
    Plan(PlanArgs),
    /// Remove every rule any proxy mode may have installed, then exit (as --cleanup).
    Cleanup(ProxyFlags),
    /// Follow one packet through the iptables rules a node would program, from
    /// Kubernetes objects in files.
    Trace(TraceArgs),
}

/// A transport protocol, as `kproxy trace --proto` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProtoArg {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl From<ProtoArg> for kproxy_core::model::Protocol {
    fn from(p: ProtoArg) -> Self {
        match p {
            ProtoArg::Tcp => kproxy_core::model::Protocol::Tcp,
            ProtoArg::Udp => kproxy_core::model::Protocol::Udp,
            ProtoArg::Sctp => kproxy_core::model::Protocol::Sctp,
        }
    }
}

/// Flags of `kproxy trace`.
#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// Where to read objects from, the node and the config: as for `kproxy plan`.
    #[command(flatten)]
    pub input: InputArgs,
    /// The packet's transport protocol.
    #[arg(long, value_enum, default_value = "tcp")]
    pub proto: ProtoArg,
    /// The packet's source address.
    #[arg(long, value_name = "IP")]
    pub src: std::net::IpAddr,
    /// The packet's destination address (its family picks the rules traced).
    #[arg(long, value_name = "IP")]
    pub dst: std::net::IpAddr,
    /// The packet's destination port.
    #[arg(long, value_name = "PORT")]
    pub dport: u16,
    /// The interface the packet arrives on (e.g. a pod's veth or eth0); none for a
    /// packet from another host without one.
    #[arg(long, value_name = "NAME")]
    pub in_iface: Option<String>,
    /// The packet is sent by the node itself (nat OUTPUT path).
    #[arg(long)]
    pub src_local: bool,
}

/// Where `plan` and `trace` read their objects, node and config from.
#[derive(Debug, Clone, Args)]
pub struct InputArgs {
    /// Kubernetes objects to read: a YAML (multi-document, or a `kind: List`) or JSON
    /// file, or a directory of *.yaml, *.yml and *.json files. Repeatable.
    #[arg(long, value_name = "FILE|DIR", required = true)]
    pub from: Vec<PathBuf>,
    /// A KubeProxyConfiguration file (for hostnameOverride and feature gates).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The node to compute the map for; default: the config's hostnameOverride, else the
    /// host name.
    #[arg(long, value_name = "NODE")]
    pub hostname_override: Option<String>,
}

/// A proxy mode, as `--proxy-mode` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// iptables (the Linux default).
    Iptables,
    /// IPVS (deprecated upstream).
    Ipvs,
    /// nftables.
    Nftables,
    /// The userspace proxy (removed upstream in v1.26; kproxy keeps it).
    Userspace,
}

impl From<ModeArg> for ProxyMode {
    fn from(m: ModeArg) -> ProxyMode {
        match m {
            ModeArg::Iptables => ProxyMode::Iptables,
            ModeArg::Ipvs => ProxyMode::Ipvs,
            ModeArg::Nftables => ProxyMode::Nftables,
            ModeArg::Userspace => ProxyMode::Userspace,
        }
    }
}

/// What `kproxy plan` prints for a proxy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanMode {
    /// The service map only.
    None,
    /// The map as the iptables backend would program it.
    Iptables,
    /// The map as the IPVS backend would program it.
    Ipvs,
    /// The map as the nftables backend would program it.
    Nftables,
    /// The map as the userspace backend would program it.
    Userspace,
}

/// The output formats of `kproxy plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned text for people.
    Table,
    /// JSON, one document.
    Json,
    /// YAML, one document.
    Yaml,
}

/// Flags of `kproxy plan`.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// Where to read objects from, the node and the config.
    #[command(flatten)]
    pub input: InputArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value = "table")]
    pub output: OutputFormat,
    /// Which backend's view to print; `none` prints the service map alone.
    #[arg(long, value_enum, default_value = "none")]
    pub proxy_mode: PlanMode,
}

/// Upstream kube-proxy's flags (Linux), plus kproxy's `--from`.
#[derive(Debug, Clone, Default, Args)]
pub struct ProxyFlags {
    /// The path to the configuration file (KubeProxyConfiguration, YAML or JSON). When
    /// set, it replaces every flag that maps to a config field, except
    /// --hostname-override and the logging flags.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// If set, write the effective configuration to this file and exit.
    #[arg(long, value_name = "FILE")]
    pub write_config_to: Option<PathBuf>,
    /// If true cleanup iptables, ipvs and nftables rules and exit.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub cleanup: Option<bool>,
    /// If true, perform any initialization steps that must run with full root privileges,
    /// and then exit.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub init_only: Option<bool>,
    /// Read Kubernetes objects from these files or directories (reloaded when they change)
    /// instead of watching the API server. kproxy only.
    #[arg(long, value_name = "FILE|DIR")]
    pub from: Vec<PathBuf>,

    /// A set of key=value pairs that describe feature gates for alpha/experimental features.
    #[arg(long, value_name = "KEY=BOOL,...")]
    pub feature_gates: Option<String>,
    /// Path to kubeconfig file with authorization information (the master location can be
    /// overridden by the master flag).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<String>,
    /// The address of the Kubernetes API server (overrides any value in kubeconfig).
    #[arg(long, value_name = "URL")]
    pub master: Option<String>,
    /// Content type of requests sent to apiserver (default application/vnd.kubernetes.protobuf).
    #[arg(long, value_name = "TYPE")]
    pub kube_api_content_type: Option<String>,
    /// QPS to use while talking with kubernetes apiserver (default 5).
    #[arg(long, value_name = "QPS")]
    pub kube_api_qps: Option<f32>,
    /// Burst to use while talking with kubernetes apiserver (default 10).
    #[arg(long, value_name = "N")]
    pub kube_api_burst: Option<i32>,
    /// If non-empty, will be used as the name of the Node that kube-proxy is running on.
    #[arg(long, value_name = "NAME")]
    pub hostname_override: Option<String>,
    /// Overrides kube-proxy's idea of what its node's primary IP is (default 0.0.0.0).
    #[arg(long, value_name = "IP")]
    pub bind_address: Option<String>,
    /// The IP address and port for the health check server to serve on; empty to disable
    /// (default 0.0.0.0:10256).
    #[arg(long, value_name = "IP:PORT")]
    pub healthz_bind_address: Option<String>,
    /// The IP address and port for the metrics server to serve on (default 127.0.0.1:10249).
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_bind_address: Option<String>,
    /// If true kube-proxy will treat failure to bind to a port as fatal and exit.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub bind_address_hard_fail: Option<bool>,
    /// If true enables profiling via web interface on /debug/pprof handler.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub profiling: Option<bool>,
    /// The previous version for which you want to show hidden metrics.
    #[arg(long, value_name = "VERSION")]
    pub show_hidden_metrics_for_version: Option<String>,
    /// Which proxy mode to use (default iptables).
    #[arg(long, value_enum)]
    pub proxy_mode: Option<ModeArg>,
    /// The bit of the fwmark space to mark packets requiring SNAT with, 0..=31 (default 14).
    #[arg(long, value_name = "BIT")]
    pub iptables_masquerade_bit: Option<i32>,
    /// SNAT all traffic sent via Service cluster IPs.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub masquerade_all: Option<bool>,
    /// If false, do not allow access to NodePorts via localhost (default true).
    #[arg(long = "iptables-localhost-nodeports", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub iptables_localhost_nodeports: Option<bool>,
    /// An interval (e.g. '5s', '1m', '2h22m') for how often rules are resynced (default 30s).
    #[arg(long, value_name = "DURATION")]
    pub iptables_sync_period: Option<Duration>,
    /// The minimum period between iptables rule resyncs (default 1s).
    #[arg(long, value_name = "DURATION")]
    pub iptables_min_sync_period: Option<Duration>,
    /// How often IPVS rules are resynced (default 30s).
    #[arg(long, value_name = "DURATION")]
    pub ipvs_sync_period: Option<Duration>,
    /// The minimum period between IPVS rule resyncs (default 1s without --config).
    #[arg(long, value_name = "DURATION")]
    pub ipvs_min_sync_period: Option<Duration>,
    /// The ipvs scheduler type when proxy mode is ipvs (default rr).
    #[arg(long, value_name = "NAME")]
    pub ipvs_scheduler: Option<String>,
    /// A comma-separated list of CIDRs which the ipvs proxier should not touch.
    #[arg(long, value_name = "CIDR,...", value_delimiter = ',')]
    pub ipvs_exclude_cidrs: Option<Vec<String>>,
    /// Enable strict ARP by setting arp_ignore to 1 and arp_announce to 2.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub ipvs_strict_arp: Option<bool>,
    /// The timeout for idle IPVS TCP connections, 0 to leave as is.
    #[arg(long, value_name = "DURATION")]
    pub ipvs_tcp_timeout: Option<Duration>,
    /// The timeout for IPVS TCP connections after receiving a FIN packet, 0 to leave as is.
    #[arg(long = "ipvs-tcpfin-timeout", value_name = "DURATION")]
    pub ipvs_tcpfin_timeout: Option<Duration>,
    /// The timeout for IPVS UDP packets, 0 to leave as is.
    #[arg(long, value_name = "DURATION")]
    pub ipvs_udp_timeout: Option<Duration>,
    /// Mode to use to detect local traffic (default ClusterCIDR).
    #[arg(long, value_name = "MODE", value_parser = parse_local_mode)]
    pub detect_local_mode: Option<LocalMode>,
    /// A bridge interface name; with --detect-local-mode=BridgeInterface.
    #[arg(long, value_name = "NAME")]
    pub pod_bridge_interface: Option<String>,
    /// An interface name prefix; with --detect-local-mode=InterfaceNamePrefix.
    #[arg(long, value_name = "PREFIX")]
    pub pod_interface_name_prefix: Option<String>,
    /// The CIDR range of the pods in the cluster (for dual-stack, a comma-separated pair).
    #[arg(long, value_name = "CIDR")]
    pub cluster_cidr: Option<String>,
    /// A list of CIDR ranges that contain valid node IPs, or 'primary'.
    #[arg(long, value_name = "CIDR,...", value_delimiter = ',')]
    pub nodeport_addresses: Option<Vec<String>>,
    /// The oom-score-adj value for kube-proxy process, -1000..=1000 (default -999).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub oom_score_adj: Option<i32>,
    /// Maximum number of NAT connections to track per CPU core, 0 to leave as is (default 32768).
    #[arg(long, value_name = "N")]
    pub conntrack_max_per_core: Option<i32>,
    /// Minimum number of conntrack entries to allocate (default 131072).
    #[arg(long, value_name = "N")]
    pub conntrack_min: Option<i32>,
    /// Idle timeout for established TCP connections, 0 to leave as is (default 24h0m0s).
    #[arg(long, value_name = "DURATION")]
    pub conntrack_tcp_timeout_established: Option<Duration>,
    /// NAT timeout for TCP connections in the CLOSE_WAIT state (default 1h0m0s).
    #[arg(long, value_name = "DURATION")]
    pub conntrack_tcp_timeout_close_wait: Option<Duration>,
    /// Enable liberal mode for tracking TCP packets by setting nf_conntrack_tcp_be_liberal to 1.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub conntrack_tcp_be_liberal: Option<bool>,
    /// Idle timeout for UNREPLIED UDP connections, 0 to leave as is.
    #[arg(long, value_name = "DURATION")]
    pub conntrack_udp_timeout: Option<Duration>,
    /// Idle timeout for ASSURED UDP connections, 0 to leave as is.
    #[arg(long, value_name = "DURATION")]
    pub conntrack_udp_timeout_stream: Option<Duration>,
    /// How often configuration from the apiserver is refreshed (default 15m0s).
    #[arg(long, value_name = "DURATION")]
    pub config_sync_period: Option<Duration>,
    /// Range of host ports (beginPort-endPort, single port or beginPort+offset) the
    /// userspace proxy may use; empty: any.
    #[arg(long, value_name = "RANGE")]
    pub proxy_port_range: Option<String>,
    /// How long an idle UDP connection is kept open in userspace mode (default 250ms).
    #[arg(long, value_name = "DURATION")]
    pub udp_timeout: Option<Duration>,
    /// The port for the health check server; 0 disables it. Deprecated: ignored with --config.
    #[arg(long, value_name = "PORT")]
    pub healthz_port: Option<u16>,
    /// The port for the metrics server. Deprecated: ignored with --config.
    #[arg(long, value_name = "PORT")]
    pub metrics_port: Option<u16>,

    /// Number for the log level verbosity (applies over --config).
    #[arg(short = 'v', long = "v", value_name = "LEVEL")]
    pub verbosity: Option<u32>,
    /// Comma-separated list of pattern=N settings for file-filtered logging (applies over
    /// --config, appended to its list).
    #[arg(long, value_name = "PATTERN=N,...")]
    pub vmodule: Option<String>,
    /// Sets the log format: text or json (applies over --config).
    #[arg(long, value_name = "FORMAT")]
    pub logging_format: Option<String>,
    /// Maximum number of seconds between log flushes (applies over --config; default 5s).
    #[arg(long, value_name = "DURATION")]
    pub log_flush_frequency: Option<Duration>,
}

impl ProxyFlags {
    /// Whether `--cleanup` was given (and not `--cleanup=false`).
    pub fn cleanup(&self) -> bool {
        self.cleanup.unwrap_or(false)
    }
}

fn parse_local_mode(s: &str) -> Result<LocalMode, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn go_style_boolean_and_duration_flags_parse() {
        let cli = Cli::try_parse_from([
            "kproxy",
            "--masquerade-all",
            "--iptables-localhost-nodeports=false",
            "--iptables-sync-period=1m30s",
            "--proxy-mode",
            "ipvs",
            "--oom-score-adj",
            "-500",
            "--nodeport-addresses=10.0.0.0/8,primary",
            "-v",
            "4",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        let f = &cli.proxy;
        assert_eq!(f.masquerade_all, Some(true));
        assert_eq!(f.iptables_localhost_nodeports, Some(false));
        assert_eq!(f.iptables_sync_period, Some(Duration::from_secs(90)));
        assert_eq!(f.proxy_mode, Some(ModeArg::Ipvs));
        assert_eq!(f.oom_score_adj, Some(-500));
        assert_eq!(
            f.nodeport_addresses.as_deref(),
            Some(&["10.0.0.0/8".to_owned(), "primary".to_owned()][..])
        );
        assert_eq!(f.verbosity, Some(4));
    }

    #[test]
    fn subcommands_take_their_own_flags_and_plan_needs_from() {
        let cli = Cli::try_parse_from(["kproxy", "run", "--config", "c.yaml"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Run(ref f)) if f.config.as_deref() == Some("c.yaml".as_ref()))
        );
        let cli =
            Cli::try_parse_from(["kproxy", "plan", "--from", "a", "--from", "b", "-o", "json"])
                .unwrap();
        let Some(Command::Plan(p)) = cli.command else {
            panic!("not plan")
        };
        assert_eq!(p.input.from.len(), 2);
        assert_eq!(p.output, OutputFormat::Json);
        assert_eq!(p.proxy_mode, PlanMode::None);
        let err = Cli::try_parse_from(["kproxy", "plan"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = Cli::try_parse_from(["kproxy", "--detect-local-mode", "Bogus"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn trace_takes_a_packet_and_rejects_a_bad_address() {
        let cli = Cli::try_parse_from([
            "kproxy",
            "trace",
            "--from",
            "a",
            "--proto",
            "udp",
            "--src",
            "10.0.0.5",
            "--dst",
            "10.96.0.10",
            "--dport",
            "53",
            "--in-iface",
            "cni0",
        ])
        .unwrap();
        let Some(Command::Trace(t)) = cli.command else {
            panic!("not trace")
        };
        assert_eq!(t.proto, ProtoArg::Udp);
        assert_eq!(t.dport, 53);
        assert_eq!(t.in_iface.as_deref(), Some("cni0"));
        assert!(!t.src_local);
        let err = Cli::try_parse_from([
            "kproxy",
            "trace",
            "--from",
            "a",
            "--src",
            "10.0.0",
            "--dst",
            "10.96.0.10",
            "--dport",
            "53",
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
