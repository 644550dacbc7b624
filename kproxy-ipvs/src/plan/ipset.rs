//! kube-proxy's ipsets for IPVS mode (upstream `pkg/proxy/ipvs/ipset.go` and the set
//! list in `pkg/proxy/ipvs/proxier.go`), and the `ipset restore` input that loads them.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use kproxy_core::model::IpFamily;

/// An ipset type, as `ipset create` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetType {
    /// `hash:ip`.
    HashIp,
    /// `hash:ip,port`.
    HashIpPort,
    /// `hash:ip,port,ip`.
    HashIpPortIp,
    /// `hash:ip,port,net`.
    HashIpPortNet,
    /// `bitmap:port`.
    BitmapPort,
}

impl SetType {
    /// The `ipset create` type name.
    pub fn as_str(self) -> &'static str {
        match self {
            SetType::HashIp => "hash:ip",
            SetType::HashIpPort => "hash:ip,port",
            SetType::HashIpPortIp => "hash:ip,port,ip",
            SetType::HashIpPortNet => "hash:ip,port,net",
            SetType::BitmapPort => "bitmap:port",
        }
    }
}

/// Which of upstream's sets (the IPv4 name; IPv6 names are derived by [`set_name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetId {
    /// `KUBE-LOOP-BACK`: local endpoints, for hairpin masquerade.
    LoopBack,
    /// `KUBE-CLUSTER-IP`: cluster IP + port.
    ClusterIp,
    /// `KUBE-EXTERNAL-IP`: external IP + port, externalTrafficPolicy Cluster.
    ExternalIp,
    /// `KUBE-EXTERNAL-IP-LOCAL`: external IP + port, externalTrafficPolicy Local.
    ExternalIpLocal,
    /// `KUBE-LOAD-BALANCER`: every LB IP + port.
    LoadBalancer,
    /// `KUBE-LOAD-BALANCER-LOCAL`: LB IP + port, externalTrafficPolicy Local.
    LoadBalancerLocal,
    /// `KUBE-LOAD-BALANCER-FW`: LB IP + port with source ranges.
    LoadBalancerFw,
    /// `KUBE-LOAD-BALANCER-SOURCE-IP`: LB IP + port + LB IP, when the node is in a range.
    LoadBalancerSourceIp,
    /// `KUBE-LOAD-BALANCER-SOURCE-CIDR`: LB IP + port + allowed range.
    LoadBalancerSourceCidr,
    /// `KUBE-NODE-PORT-TCP`: TCP node ports.
    NodePortTcp,
    /// `KUBE-NODE-PORT-LOCAL-TCP`: TCP node ports, externalTrafficPolicy Local.
    NodePortLocalTcp,
    /// `KUBE-NODE-PORT-UDP`: UDP node ports.
    NodePortUdp,
    /// `KUBE-NODE-PORT-LOCAL-UDP`: UDP node ports, externalTrafficPolicy Local.
    NodePortLocalUdp,
    /// `KUBE-NODE-PORT-SCTP-HASH`: node IP + SCTP node port.
    NodePortSctpHash,
    /// `KUBE-NODE-PORT-LOCAL-SCTP-HASH`: the same, externalTrafficPolicy Local.
    NodePortLocalSctpHash,
    /// `KUBE-HEALTH-CHECK-NODE-PORT`: health check node ports.
    HealthCheckNodePort,
    /// `KUBE-IPVS-IPS`: every address on kube-ipvs0.
    IpvsIps,
}

/// Upstream's sets: id, IPv4 name, type, comment (`pkg/proxy/ipvs/ipset.go` consts),
/// in the order upstream lists them.
pub const SETS: [(SetId, &str, SetType, &str); 17] = [
    (
        SetId::LoopBack,
        "KUBE-LOOP-BACK",
        SetType::HashIpPortIp,
        "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose",
    ),
    (
        SetId::ClusterIp,
        "KUBE-CLUSTER-IP",
        SetType::HashIpPort,
        "Kubernetes service cluster ip + port for masquerade purpose",
    ),
    (
        SetId::ExternalIp,
        "KUBE-EXTERNAL-IP",
        SetType::HashIpPort,
        "Kubernetes service external ip + port for masquerade and filter purpose",
    ),
    (
        SetId::ExternalIpLocal,
        "KUBE-EXTERNAL-IP-LOCAL",
        SetType::HashIpPort,
        "Kubernetes service external ip + port with externalTrafficPolicy=local",
    ),
    (
        SetId::LoadBalancer,
        "KUBE-LOAD-BALANCER",
        SetType::HashIpPort,
        "Kubernetes service lb portal",
    ),
    (
        SetId::LoadBalancerLocal,
        "KUBE-LOAD-BALANCER-LOCAL",
        SetType::HashIpPort,
        "Kubernetes service load balancer ip + port with externalTrafficPolicy=local",
    ),
    (
        SetId::LoadBalancerFw,
        "KUBE-LOAD-BALANCER-FW",
        SetType::HashIpPort,
        "Kubernetes service load balancer ip + port for load balancer with sourceRange",
    ),
    (
        SetId::LoadBalancerSourceIp,
        "KUBE-LOAD-BALANCER-SOURCE-IP",
        SetType::HashIpPortIp,
        "Kubernetes service load balancer ip + port + source IP for packet filter purpose",
    ),
    (
        SetId::LoadBalancerSourceCidr,
        "KUBE-LOAD-BALANCER-SOURCE-CIDR",
        SetType::HashIpPortNet,
        "Kubernetes service load balancer ip + port + source cidr for packet filter purpose",
    ),
    (
        SetId::NodePortTcp,
        "KUBE-NODE-PORT-TCP",
        SetType::BitmapPort,
        "Kubernetes nodeport TCP port for masquerade purpose",
    ),
    (
        SetId::NodePortLocalTcp,
        "KUBE-NODE-PORT-LOCAL-TCP",
        SetType::BitmapPort,
        "Kubernetes nodeport TCP port with externalTrafficPolicy=local",
    ),
    (
        SetId::NodePortUdp,
        "KUBE-NODE-PORT-UDP",
        SetType::BitmapPort,
        "Kubernetes nodeport UDP port for masquerade purpose",
    ),
    (
        SetId::NodePortLocalUdp,
        "KUBE-NODE-PORT-LOCAL-UDP",
        SetType::BitmapPort,
        "Kubernetes nodeport UDP port with externalTrafficPolicy=local",
    ),
    (
        SetId::NodePortSctpHash,
        "KUBE-NODE-PORT-SCTP-HASH",
        SetType::HashIpPort,
        "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'",
    ),
    (
        SetId::NodePortLocalSctpHash,
        "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
        SetType::HashIpPort,
        "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'",
    ),
    (
        SetId::HealthCheckNodePort,
        "KUBE-HEALTH-CHECK-NODE-PORT",
        SetType::BitmapPort,
        "Kubernetes health check node port",
    ),
    (
        SetId::IpvsIps,
        "KUBE-IPVS-IPS",
        SetType::HashIp,
        "Addresses on the ipvs interface",
    ),
];

/// The kernel's limit on set names (`IPSET_MAXNAMELEN` − 1).
pub const MAX_SET_NAME: usize = 31;

/// The set's name in `family`: the IPv4 name, or for IPv6 `KUBE-` → `KUBE-6-`, cut at
/// 31 characters (upstream `NewIPSet`).
pub fn set_name(id: SetId, family: IpFamily) -> String {
    let base = SETS
        .iter()
        .find(|s| s.0 == id)
        .map(|s| s.1)
        .unwrap_or_default();
    match family {
        IpFamily::V4 => base.to_owned(),
        IpFamily::V6 => {
            let mut n = base.replacen("KUBE-", "KUBE-6-", 1);
            n.truncate(MAX_SET_NAME);
            n
        }
    }
}

/// The comment of a set, quoted for iptables-restore.
pub fn set_comment(id: SetId) -> String {
    format!(
        "\"{}\"",
        SETS.iter()
            .find(|s| s.0 == id)
            .map(|s| s.3)
            .unwrap_or_default()
    )
}

/// One ipset with its desired entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    /// Which set.
    pub id: SetId,
    /// Its name in the plan's family.
    pub name: String,
    /// Its type.
    pub set_type: SetType,
    /// Entries in `ipset add` syntax (`10.96.0.10,tcp:80`, `30080`, …), sorted.
    pub entries: BTreeSet<String>,
}

impl IpSet {
    /// `create` arguments after the name: upstream's `hashsize 1024 maxelem 65536` with
    /// the family for hash sets, `range 0-65535` for bitmap:port.
    pub fn create_args(&self, family: IpFamily) -> String {
        match self.set_type {
            SetType::BitmapPort => format!("{} range 0-65535", self.set_type.as_str()),
            t => format!(
                "{} family {} hashsize 1024 maxelem 65536",
                t.as_str(),
                if family == IpFamily::V4 {
                    "inet"
                } else {
                    "inet6"
                }
            ),
        }
    }
}

/// The scratch set a set is rebuilt in before `swap` (one per set, so its type never
/// changes): `KPROXY-TMP-<n>` or `KPROXY-6-TMP-<n>`.
pub fn scratch_name(index: usize, family: IpFamily) -> String {
    match family {
        IpFamily::V4 => format!("KPROXY-TMP-{index}"),
        IpFamily::V6 => format!("KPROXY-6-TMP-{index}"),
    }
}

/// `ipset restore -exist` input that makes every set in `sets` hold exactly its entries,
/// atomically per set: fill a scratch set, `swap` it with the live one, destroy it. So
/// iptables rules that match a set never see it half-filled.
///
/// `existing` lists the sets the host already has (`ipset list -n`): those are not
/// created again (a hash set that grew would not match `create … -exist`), and a
/// leftover scratch set is destroyed first. With `None` every set is created, with
/// `-exist` making that harmless, which is what `kproxy plan` prints.
pub fn restore_text(
    sets: &[IpSet],
    family: IpFamily,
    existing: Option<&BTreeSet<String>>,
) -> String {
    let mut out = String::new();
    for (i, set) in sets.iter().enumerate() {
        let scratch = scratch_name(i, family);
        let args = set.create_args(family);
        if existing.is_none_or(|e| !e.contains(&set.name)) {
            let _ = writeln!(out, "create {} {args}", set.name);
        }
        if existing.is_some_and(|e| e.contains(&scratch)) {
            let _ = writeln!(out, "destroy {scratch}");
        }
        let _ = writeln!(out, "create {scratch} {args}");
        for e in &set.entries {
            let _ = writeln!(out, "add {scratch} {e}");
        }
        let _ = writeln!(out, "swap {scratch} {}", set.name);
        let _ = writeln!(out, "destroy {scratch}");
    }
    out
}

/// The `ipset restore -exist` input that turns sets holding `old` into `new` in place:
/// `del` and `add` lines for the entries that differ, nothing for sets that are equal,
/// a `create` for a set `old` does not have. Only valid when the host's sets are known
/// to hold `old` (the plan of the last successful sync); `-exist` makes a line that is
/// already true harmless. Upstream reconciles its sets the same way (`syncIPSetEntries`).
pub fn update_text(old: &[IpSet], new: &[IpSet], family: IpFamily) -> String {
    let mut out = String::new();
    for set in new {
        match old.iter().find(|o| o.name == set.name) {
            Some(o) if o == set => {}
            Some(o) => {
                for e in o.entries.difference(&set.entries) {
                    let _ = writeln!(out, "del {} {e}", set.name);
                }
                for e in set.entries.difference(&o.entries) {
                    let _ = writeln!(out, "add {} {e}", set.name);
                }
            }
            None => {
                let _ = writeln!(out, "create {} {}", set.name, set.create_args(family));
                for e in &set.entries {
                    let _ = writeln!(out, "add {} {e}", set.name);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_adds_and_deletes_only_the_difference() {
        let set = |entries: &[&str]| IpSet {
            id: SetId::ClusterIp,
            name: "KUBE-CLUSTER-IP".into(),
            set_type: SetType::HashIpPort,
            entries: entries.iter().map(|e| (*e).to_owned()).collect(),
        };
        let old = [set(&["10.96.0.10,tcp:80", "10.96.0.11,tcp:80"])];
        let new = [set(&["10.96.0.11,tcp:80", "10.96.0.12,tcp:80"])];
        assert_eq!(
            update_text(&old, &new, IpFamily::V4),
            "del KUBE-CLUSTER-IP 10.96.0.10,tcp:80\nadd KUBE-CLUSTER-IP 10.96.0.12,tcp:80\n"
        );
        assert_eq!(update_text(&new, &new, IpFamily::V4), "");
        assert!(
            update_text(&[], &new, IpFamily::V4).starts_with("create KUBE-CLUSTER-IP hash:ip,port")
        );
    }

    #[test]
    fn ipv6_names_get_the_kube_6_prefix_and_are_cut_at_31() {
        assert_eq!(set_name(SetId::ClusterIp, IpFamily::V4), "KUBE-CLUSTER-IP");
        assert_eq!(
            set_name(SetId::ClusterIp, IpFamily::V6),
            "KUBE-6-CLUSTER-IP"
        );
        assert_eq!(
            set_name(SetId::LoadBalancerSourceCidr, IpFamily::V6),
            "KUBE-6-LOAD-BALANCER-SOURCE-CID"
        );
        assert_eq!(
            set_name(SetId::NodePortLocalSctpHash, IpFamily::V6),
            "KUBE-6-NODE-PORT-LOCAL-SCTP-HAS"
        );
        for (id, ..) in SETS {
            assert!(set_name(id, IpFamily::V6).len() <= MAX_SET_NAME);
        }
    }

    #[test]
    fn restore_skips_creating_sets_that_exist_and_clears_leftover_scratch_sets() {
        let set = IpSet {
            id: SetId::ClusterIp,
            name: "KUBE-CLUSTER-IP".into(),
            set_type: SetType::HashIpPort,
            entries: ["10.96.0.10,tcp:80".to_owned()].into(),
        };
        let existing: BTreeSet<String> =
            ["KUBE-CLUSTER-IP".to_owned(), "KPROXY-TMP-0".to_owned()].into();
        assert_eq!(
            restore_text(std::slice::from_ref(&set), IpFamily::V4, Some(&existing)),
            "destroy KPROXY-TMP-0\n\
             create KPROXY-TMP-0 hash:ip,port family inet hashsize 1024 maxelem 65536\n\
             add KPROXY-TMP-0 10.96.0.10,tcp:80\n\
             swap KPROXY-TMP-0 KUBE-CLUSTER-IP\n\
             destroy KPROXY-TMP-0\n"
        );
        let fresh = restore_text(&[set], IpFamily::V4, None);
        assert!(
            fresh.starts_with(
                "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536\n"
            ),
            "{fresh}"
        );
    }
}
