//! Go's address parsing, as upstream's defaulting and validation use it.
//!
//! - `parse_ip_sloppy` / `parse_cidr_sloppy`: `k8s.io/utils/net` `ParseIPSloppy` and
//!   `ParseCIDRSloppy` (Go's `net.ParseIP`/`ParseCIDR`, plus IPv4 octets with leading
//!   zeros read as decimal).
//! - `split_host_port`: Go's `net.SplitHostPort`.
//! - `append_port_if_needed`: `pkg/proxy/util.AppendPortIfNeeded`.
//! - `parse_port_range`: `k8s.io/apimachinery/pkg/util/net.ParsePortRange`.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;

/// Parses a dotted-quad IPv4 address whose octets may carry leading zeros ("010.0.0.1").
fn parse_ipv4_sloppy(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// An IP address as `netutils.ParseIPSloppy` reads it; IPv4-mapped IPv6 addresses
/// become IPv4, as Go's `To4()` sees them.
pub(crate) fn parse_ip_sloppy(s: &str) -> Option<IpAddr> {
    if let Some(v4) = parse_ipv4_sloppy(s) {
        return Some(IpAddr::V4(v4));
    }
    // Go's parser rejects zones ("fe80::1%eth0") as std does.
    match s.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)),
        v4 => Some(v4),
    }
}

/// A CIDR as `netutils.ParseCIDRSloppy` reads it: `IP/prefix`, host bits allowed.
pub(crate) fn parse_cidr_sloppy(s: &str) -> Option<IpNet> {
    let (ip, prefix) = s.split_once('/')?;
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    // Keep the family as written: "::ffff:1.2.3.4/120" is an IPv6 CIDR.
    let ip = match parse_ipv4_sloppy(ip) {
        Some(v4) => IpAddr::V4(v4),
        None => ip.parse::<IpAddr>().ok()?,
    };
    IpNet::new(ip, prefix).ok()
}

/// Go's `net.SplitHostPort`: `host:port`, `[host]:port`; the port may be empty.
pub(crate) fn split_host_port(s: &str) -> Result<(&str, &str), &'static str> {
    let Some(colon) = s.rfind(':') else {
        return Err("missing port in address");
    };
    let (host, port) = (&s[..colon], &s[colon + 1..]);
    if let Some(rest) = host.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return Err("missing ']' in address");
        };
        if end + 1 != rest.len() {
            // Something between ']' and the last ':' ("[::1]x:80" or "[::1]:1:2").
            return Err(if rest[end + 1..].starts_with(':') {
                "too many colons in address"
            } else {
                "missing port in address"
            });
        }
        let inner = &rest[..end];
        if inner.contains('[') || port.contains('[') {
            return Err("unexpected '[' in address");
        }
        if port.contains(']') {
            return Err("unexpected ']' in address");
        }
        return Ok((inner, port));
    }
    if host.contains(':') {
        return Err("too many colons in address");
    }
    if host.contains('[') || host.contains(']') || port.contains('[') || port.contains(']') {
        return Err("unexpected bracket in address");
    }
    Ok((host, port))
}

/// Appends `:port` (bracketing IPv6) when `addr` is a bare IP; leaves anything else
/// alone, for validation to judge (`AppendPortIfNeeded`).
pub(crate) fn append_port_if_needed(addr: &str, port: u16) -> String {
    if split_host_port(addr).is_ok() {
        return addr.to_owned();
    }
    match parse_ip_sloppy(addr) {
        None => addr.to_owned(),
        Some(IpAddr::V4(_)) => format!("{addr}:{port}"),
        Some(IpAddr::V6(_)) => format!("[{addr}]:{port}"),
    }
}

/// Go's `strconv.Atoi` for the cases that matter here: optional sign, then digits.
fn atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `ParsePortRange`: empty, `port`, `base-max` or `base+offset`, all within 0..=65535.
/// Returns `(base, size)`; the empty range is `(0, 0)`.
pub(crate) fn parse_port_range(value: &str) -> Result<(u16, u32), String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok((0, 0));
    }
    let bad = || format!("unable to parse port range: {value}");
    let (low, high) = match (value.find('-'), value.find('+')) {
        (None, None) => {
            let port = atoi(value).ok_or_else(bad)?;
            (port, port)
        }
        (Some(h), None) => (
            atoi(&value[..h]).ok_or_else(bad)?,
            atoi(&value[h + 1..]).ok_or_else(bad)?,
        ),
        (None, Some(p)) => {
            let low = atoi(&value[..p]).ok_or_else(bad)?;
            (
                low,
                low.saturating_add(atoi(&value[p + 1..]).ok_or_else(bad)?),
            )
        }
        (Some(_), Some(_)) => return Err(bad()),
    };
    if low > 65535 || high > 65535 {
        return Err(format!(
            "the port range cannot be greater than 65535: {value}"
        ));
    }
    if high < low {
        return Err(format!("end port cannot be less than start port: {value}"));
    }
    let base = u16::try_from(low).map_err(|_| bad())?;
    let size = u32::try_from(1 + high - low).map_err(|_| bad())?;
    Ok((base, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sloppy_ip_parsing_accepts_leading_zeros_and_maps_v4_in_v6() {
        assert_eq!(
            parse_ip_sloppy("010.000.0.1"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_ip_sloppy("::ffff:1.2.3.4"),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(parse_ip_sloppy("::1"), Some("::1".parse().unwrap()));
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4.5",
            "256.0.0.1",
            "fe80::1%eth0",
            "foo",
            " 1.2.3.4",
        ] {
            assert_eq!(parse_ip_sloppy(bad), None, "{bad}");
        }
    }

    #[test]
    fn sloppy_cidr_parsing_allows_host_bits_and_checks_the_prefix() {
        assert_eq!(
            parse_cidr_sloppy("10.0.0.1/8").unwrap().to_string(),
            "10.0.0.1/8"
        );
        assert!(parse_cidr_sloppy("fd00::/64").is_some());
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "primary",
        ] {
            assert!(parse_cidr_sloppy(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn split_host_port_follows_go() {
        assert_eq!(split_host_port("0.0.0.0:10256"), Ok(("0.0.0.0", "10256")));
        assert_eq!(split_host_port("[::1]:80"), Ok(("::1", "80")));
        assert_eq!(split_host_port("1.2.3.4:"), Ok(("1.2.3.4", "")));
        assert_eq!(split_host_port(":80"), Ok(("", "80")));
        assert!(split_host_port("1.2.3.4").is_err());
        assert!(split_host_port("::1").is_err());
        assert!(split_host_port("::1:80").is_err());
        assert!(split_host_port("[::1]").is_err());
        assert!(split_host_port("[::1]:1:2").is_err());
    }

    #[test]
    fn append_port_if_needed_adds_the_port_to_bare_ips_only() {
        assert_eq!(append_port_if_needed("1.2.3.4", 10256), "1.2.3.4:10256");
        assert_eq!(append_port_if_needed("::", 10256), "[::]:10256");
        assert_eq!(append_port_if_needed("1.2.3.4:99", 10256), "1.2.3.4:99");
        assert_eq!(append_port_if_needed("[::]:99", 10256), "[::]:99");
        assert_eq!(append_port_if_needed("not-an-ip", 10256), "not-an-ip");
    }

    #[test]
    fn port_ranges_parse_in_all_three_notations() {
        assert_eq!(parse_port_range(""), Ok((0, 0)));
        assert_eq!(parse_port_range("8080"), Ok((8080, 1)));
        assert_eq!(parse_port_range("300-2000"), Ok((300, 1701)));
        assert_eq!(parse_port_range("300+10"), Ok((300, 11)));
        assert_eq!(parse_port_range(" 1-65535 "), Ok((1, 65535)));
        for bad in ["2000-300", "1-65536", "x", "1-2+3", "-5", "300-", "70000"] {
            assert!(parse_port_range(bad).is_err(), "{bad}");
        }
    }
}
