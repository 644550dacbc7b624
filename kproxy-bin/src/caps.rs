//! The Linux capabilities kproxy needs, checked at start so that a container without
//! them fails at once with a clear error instead of retrying failed syncs forever.
//! `docs/least-privilege.md` explains each one.

use kproxy_core::config::ProxyMode;

/// `CAP_NET_ADMIN` (`include/uapi/linux/capability.h`): netfilter, IPVS, ipset, links,
/// conntrack over netlink.
pub const NET_ADMIN: u32 = 12;
/// `CAP_NET_RAW`: the raw socket iptables-legacy talks to the kernel through.
pub const NET_RAW: u32 = 13;

/// The effective capability set of this process (`CapEff` of `/proc/self/status`),
/// `None` when it cannot be read (then nothing is checked).
pub fn effective() -> Option<u64> {
    parse_cap_eff(&std::fs::read_to_string("/proc/self/status").ok()?)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The capabilities every mode that changes the kernel needs and `caps` lacks, by name.
/// iptables-legacy also needs `CAP_NET_RAW`; which flavour runs is only known later, so
/// its absence is a warning ([`warn_if_no_net_raw`]), not an error.
pub fn missing(mode: ProxyMode, caps: u64) -> Option<&'static str> {
    let needs_net_admin = matches!(
        mode,
        ProxyMode::Unset
            | ProxyMode::Iptables
            | ProxyMode::Ipvs
            | ProxyMode::Userspace
            | ProxyMode::Nftables
    );
    (needs_net_admin && caps & (1 << NET_ADMIN) == 0).then_some("CAP_NET_ADMIN")
}

/// Logs a warning when `caps` lacks `CAP_NET_RAW` (iptables-legacy cannot work).
pub fn warn_if_no_net_raw(caps: u64) {
    if caps & (1 << NET_RAW) == 0 {
        tracing::warn!(
            "no CAP_NET_RAW: iptables-legacy cannot reach the kernel (iptables-nft does not need it)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_is_read_from_proc_status_and_net_admin_is_required() {
        let status = "Name:\tkproxy\nCapInh:\t0000000000000000\nCapEff:\t0000000000003000\n";
        let caps = parse_cap_eff(status).unwrap();
        assert_eq!(caps, (1 << NET_ADMIN) | (1 << NET_RAW));
        assert_eq!(missing(ProxyMode::Iptables, caps), None);
        assert_eq!(
            missing(ProxyMode::Ipvs, 1 << NET_RAW),
            Some("CAP_NET_ADMIN")
        );
        assert_eq!(missing(ProxyMode::Userspace, 0), Some("CAP_NET_ADMIN"));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }
}
