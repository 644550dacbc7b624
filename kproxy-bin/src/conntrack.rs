//! Conntrack sysctls from the `conntrack` config section, as upstream's
//! `pkg/proxy/conntrack/sysctls.go` (`SetSysctls`): run at start (and alone with
//! `--init-only`).
//!
//! - `nf_conntrack_max` = `maxPerCore × CPUs`, capped at 1 048 576, at least `min`; left
//!   alone when `maxPerCore` is 0. After it, the conntrack hash table is grown to
//!   `max / 4` buckets if smaller.
//! - the TCP established / close-wait and UDP timeouts when > 0, `tcp_be_liberal` when set.
//!
//! Each value is written only when it differs. Paths are relative to a root so tests use
//! a scratch directory.

use std::path::{Path, PathBuf};

use kproxy_core::config::KubeProxyConntrackConfiguration;

/// Upstream's cap on the scaled `nf_conntrack_max`.
const MAX_LIMIT: i64 = 1_048_576;
/// Where the conntrack sysctls live, under the root.
const SYSCTL_DIR: &str = "proc/sys/net/netfilter";
/// The conntrack hash table size, under the root.
const HASHSIZE: &str = "sys/module/nf_conntrack/parameters/hashsize";

/// `nf_conntrack_max` to set, or `None` to leave it (upstream `getConntrackMax`).
pub fn conntrack_max(ct: &KubeProxyConntrackConfiguration, num_cpu: usize) -> Option<i64> {
    let per_core = i64::from(ct.max_per_core.filter(|m| *m > 0)?);
    let floor = i64::from(ct.min.unwrap_or(0));
    let scaled = per_core.saturating_mul(i64::try_from(num_cpu).unwrap_or(i64::MAX));
    Some(if scaled > MAX_LIMIT {
        MAX_LIMIT
    } else {
        scaled.max(floor)
    })
}

/// The sysctls (names under `net/netfilter`) and values the config asks for, in
/// upstream's order.
pub fn desired(ct: &KubeProxyConntrackConfiguration, num_cpu: usize) -> Vec<(&'static str, i64)> {
    let secs =
        |d: kproxy_core::config::Duration| i64::try_from(d.to_std().as_secs()).unwrap_or(i64::MAX);
    let mut out = Vec::new();
    if let Some(max) = conntrack_max(ct, num_cpu) {
        out.push(("nf_conntrack_max", max));
    }
    if let Some(t) = ct
        .tcp_established_timeout
        .filter(|t| !t.is_negative() && !t.is_zero())
    {
        out.push(("nf_conntrack_tcp_timeout_established", secs(t)));
    }
    if let Some(t) = ct
        .tcp_close_wait_timeout
        .filter(|t| !t.is_negative() && !t.is_zero())
    {
        out.push(("nf_conntrack_tcp_timeout_close_wait", secs(t)));
    }
    if ct.tcp_be_liberal {
        out.push(("nf_conntrack_tcp_be_liberal", 1));
    }
    if !ct.udp_timeout.is_negative() && !ct.udp_timeout.is_zero() {
        out.push(("nf_conntrack_udp_timeout", secs(ct.udp_timeout)));
    }
    if !ct.udp_stream_timeout.is_negative() && !ct.udp_stream_timeout.is_zero() {
        out.push((
            "nf_conntrack_udp_timeout_stream",
            secs(ct.udp_stream_timeout),
        ));
    }
    out
}

/// The number of CPUs of the host: from sysfs first (a container's cpuset would
/// undercount, kubernetes#99225), else what the process may use.
pub fn num_cpu(root: &Path) -> usize {
    let from_sysfs = std::fs::read_dir(root.join("sys/devices/system/cpu"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    name.strip_prefix("cpu")
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                        && e.path().join("topology").is_dir()
                })
                .count()
        })
        .unwrap_or(0);
    if from_sysfs > 0 {
        from_sysfs
    } else {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

/// One failed write.
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot set to {value}", path.display())]
pub struct SysctlError {
    /// The file.
    pub path: PathBuf,
    /// The value.
    pub value: i64,
    /// Why (read-only `/proc/sys` in an unprivileged container, most often).
    #[source]
    pub source: std::io::Error,
}

fn read_int(path: &Path) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn write_int(path: &Path, value: i64) -> Result<(), SysctlError> {
    std::fs::write(path, value.to_string()).map_err(|source| SysctlError {
        path: path.to_owned(),
        value,
        source,
    })
}

/// Writes what [`desired`] asks for under `root` (`/` on a host), each only when it
/// differs; returns the files written. Stops at the first failure, as upstream.
///
/// # Errors
/// The first write that failed.
pub fn apply(
    root: &Path,
    ct: &KubeProxyConntrackConfiguration,
    num_cpu: usize,
) -> Result<Vec<PathBuf>, SysctlError> {
    let mut written = Vec::new();
    for (name, value) in desired(ct, num_cpu) {
        let path = root.join(SYSCTL_DIR).join(name);
        if read_int(&path) != Some(value) {
            tracing::info!(entry = name, value, "setting sysctl");
            write_int(&path, value)?;
            written.push(path);
        }
        if name == "nf_conntrack_max" {
            let hashsize = root.join(HASHSIZE);
            let buckets = value / 4;
            if read_int(&hashsize).is_some_and(|h| h < buckets) {
                tracing::info!(buckets, "setting conntrack hashsize");
                write_int(&hashsize, buckets)?;
                written.push(hashsize);
            }
        }
    }
    Ok(written)
}

/// `net.ipv4.conf.all.route_localnet`, under the root.
const ROUTE_LOCALNET: &str = "proc/sys/net/ipv4/conf/all/route_localnet";

/// Whether `nodePortAddresses` lets NodePorts answer on IPv4 loopback (upstream
/// `NodePortAddresses.ContainsIPv4Loopback`): true when no IPv4 CIDR is given (all
/// addresses match) and `primary` is not used, or when an IPv4 CIDR holds 127.0.0.1.
pub fn covers_ipv4_loopback(node_port_addresses: &[String]) -> bool {
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let mut v4 = node_port_addresses
        .iter()
        .filter_map(|a| a.trim().parse::<ipnet::IpNet>().ok())
        .filter(|n| matches!(n, ipnet::IpNet::V4(_)))
        .peekable();
    if v4.peek().is_none() {
        return !node_port_addresses.iter().any(|a| a.trim() == "primary");
    }
    v4.any(|n| n.contains(&loopback))
}

/// Sets `route_localnet` to 1 under `root` (upstream iptables `NewProxier`, for NodePorts
/// on 127.0.0.1). A read-only `/proc/sys` (unprivileged container) is only warned about,
/// as conntrack sysctls are; returns whether the value was written.
///
/// # Errors
/// Any other write failure.
pub fn ensure_route_localnet(root: &Path) -> Result<bool, SysctlError> {
    let path = root.join(ROUTE_LOCALNET);
    if read_int(&path) == Some(1) {
        return Ok(false);
    }
    tracing::info!(
        entry = "net/ipv4/conf/all/route_localnet",
        value = 1,
        "setting sysctl"
    );
    match write_int(&path, 1) {
        Ok(()) => Ok(true),
        Err(e) if is_read_only(&e.source) => {
            tracing::warn!(error = %e, "cannot enable route_localnet: NodePorts on 127.0.0.1 will not work");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

fn is_read_only(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
    )
}

#[cfg(test)]
mod tests {
    use kproxy_core::KubeProxyConfiguration;
    use kproxy_core::config::Duration;

    use super::*;

    fn defaults() -> KubeProxyConntrackConfiguration {
        KubeProxyConfiguration::default().conntrack
    }

    #[test]
    fn loopback_node_ports_follow_node_port_addresses() {
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(covers_ipv4_loopback(&[]));
        assert!(covers_ipv4_loopback(&v(&["127.0.0.0/8"])));
        assert!(covers_ipv4_loopback(&v(&["0.0.0.0/0"])));
        assert!(
            covers_ipv4_loopback(&v(&["fd00::/8"])),
            "no IPv4 CIDR: all match"
        );
        assert!(!covers_ipv4_loopback(&v(&["10.0.0.0/8", "fd00::/8"])));
        assert!(!covers_ipv4_loopback(&v(&["primary"])));
    }

    #[test]
    fn route_localnet_is_written_once_and_a_missing_proc_is_an_error() {
        let root = std::env::temp_dir().join(format!("kproxy-localnet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let file = root.join(ROUTE_LOCALNET);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "0\n").unwrap();
        assert!(ensure_route_localnet(&root).unwrap());
        assert_eq!(read_int(&file), Some(1));
        assert!(!ensure_route_localnet(&root).unwrap());
        // No such file (not a read-only one): reported.
        assert!(ensure_route_localnet(&root.join("nowhere")).is_err());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn max_scales_with_cpus_between_min_and_the_cap() {
        let ct = defaults(); // 32768 per core, min 131072
        assert_eq!(conntrack_max(&ct, 2), Some(131_072));
        assert_eq!(conntrack_max(&ct, 8), Some(262_144));
        assert_eq!(conntrack_max(&ct, 64), Some(1_048_576));
        let off = KubeProxyConntrackConfiguration {
            max_per_core: Some(0),
            ..defaults()
        };
        assert_eq!(conntrack_max(&off, 8), None);
    }

    #[test]
    fn defaults_ask_for_max_and_the_two_tcp_timeouts_only() {
        let names: Vec<_> = desired(&defaults(), 4).into_iter().collect();
        assert_eq!(
            names,
            [
                ("nf_conntrack_max", 131_072),
                ("nf_conntrack_tcp_timeout_established", 86_400),
                ("nf_conntrack_tcp_timeout_close_wait", 3_600)
            ]
        );
        let ct = KubeProxyConntrackConfiguration {
            tcp_be_liberal: true,
            udp_timeout: Duration::from_secs(30),
            udp_stream_timeout: Duration::from_secs(120),
            ..defaults()
        };
        let names: Vec<&str> = desired(&ct, 4).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            &names[3..],
            [
                "nf_conntrack_tcp_be_liberal",
                "nf_conntrack_udp_timeout",
                "nf_conntrack_udp_timeout_stream"
            ]
        );
    }

    #[test]
    fn apply_writes_only_what_differs_and_grows_the_hash_table() {
        let root = std::env::temp_dir().join(format!("kproxy-sysctl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join(SYSCTL_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(root.join(HASHSIZE).parent().unwrap()).unwrap();
        std::fs::write(dir.join("nf_conntrack_max"), "65536\n").unwrap();
        std::fs::write(dir.join("nf_conntrack_tcp_timeout_established"), "86400\n").unwrap();
        std::fs::write(root.join(HASHSIZE), "16384\n").unwrap();
        for cpu in ["cpu0", "cpu1", "cpu2", "cpu3", "cpufreq"] {
            std::fs::create_dir_all(
                root.join("sys/devices/system/cpu")
                    .join(cpu)
                    .join("topology"),
            )
            .unwrap();
        }
        let cpus = num_cpu(&root);
        assert_eq!(cpus, 4);
        let written = apply(&root, &defaults(), cpus).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "nf_conntrack_max",
                "hashsize",
                "nf_conntrack_tcp_timeout_close_wait"
            ]
        );
        assert_eq!(read_int(&dir.join("nf_conntrack_max")), Some(131_072));
        assert_eq!(read_int(&root.join(HASHSIZE)), Some(32_768));
        // A second run finds everything in place.
        assert!(apply(&root, &defaults(), cpus).unwrap().is_empty());
        // A read-only file is reported with its path.
        let ro = root.join("ro");
        let err = apply(&ro, &defaults(), cpus).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("nf_conntrack_max: cannot set to 131072"),
            "{err}"
        );
    }
}
