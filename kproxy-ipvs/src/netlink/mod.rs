//! Codec for the kernel's `IPVS` generic netlink family (`include/uapi/linux/ip_vs.h`).
//!
//! Layout follows rust-netlink: one private module per wire concept (`cmd`, `service`,
//! `dest`, `stats`, `info`, `message`, re-exported here), an attribute enum per nesting
//! level with an `Other(DefaultNla)` fallback, and golden bytes in `tests/`.
//!
//! ```text
//! nlmsghdr | genlmsghdr {cmd, version=1} | IPVS_CMD_ATTR_SERVICE (nested)
//!                                          |   IPVS_SVC_ATTR_AF, _PROTOCOL, _ADDR, _PORT, …
//!                                          | IPVS_CMD_ATTR_DEST (nested)
//!                                          |   IPVS_DEST_ATTR_ADDR, _PORT, _WEIGHT, …
//! ```
//!
//! Byte order: every integer is host order (`nla_put_u32`) except the ports
//! (`IPVS_SVC_ATTR_PORT`, `IPVS_DEST_ATTR_PORT`, `IPVS_DEST_ATTR_TUN_PORT`, big-endian)
//! and `IPVS_SVC_ATTR_NETMASK`, a `__be32` the kernel copies raw (see
//! [`service::SvcAttr::Netmask`]).

mod cmd;
mod dest;
mod info;
mod message;
mod model;
mod service;
mod stats;
#[cfg(test)]
mod tests;

pub use cmd::IpvsCmd;
pub use dest::DestAttr;
pub use info::IpvsInfo;
pub use message::{IPVS_GENL_NAME, IPVS_GENL_VERSION, IpvsAttr, IpvsMessage};
pub use model::{Destination, FwdMethod, IpvsProtocol, Service, ServiceKey};
pub use service::{SvcAttr, SvcFlags};
pub use stats::{IpvsStats, StatsAttr, StatsCounter, StatsValue};

use netlink_packet_core::DecodeError;

/// Persistent port (`IP_VS_SVC_F_PERSISTENT`, ip_vs.h): ClientIP affinity.
pub const SVC_F_PERSISTENT: u32 = 0x0001;
/// Hashed entry (`IP_VS_SVC_F_HASHED`): set by the kernel, stripped when compared.
pub const SVC_F_HASHED: u32 = 0x0002;
/// One-packet scheduling (`IP_VS_SVC_F_ONEPACKET`).
pub const SVC_F_ONEPACKET: u32 = 0x0004;
/// Scheduler flag 1 (`IP_VS_SVC_F_SCHED1`, `sh-fallback` / `mh-fallback`).
pub const SVC_F_SCHED1: u32 = 0x0008;
/// Scheduler flag 2 (`IP_VS_SVC_F_SCHED2`, `sh-port` / `mh-port`).
pub const SVC_F_SCHED2: u32 = 0x0010;
/// Scheduler flag 3 (`IP_VS_SVC_F_SCHED3`).
pub const SVC_F_SCHED3: u32 = 0x0020;

/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;

fn bad(attr: &'static str, reason: impl std::fmt::Display) -> DecodeError {
    DecodeError::from(format!("{attr}: {reason}"))
}

fn fixed<const N: usize>(v: &[u8], attr: &'static str) -> Result<[u8; N], DecodeError> {
    v.try_into()
        .map_err(|_| bad(attr, format_args!("expected {N} bytes, got {}", v.len())))
}

pub(crate) fn get_u8(v: &[u8], attr: &'static str) -> Result<u8, DecodeError> {
    Ok(fixed::<1>(v, attr)?[0])
}

pub(crate) fn get_u16(v: &[u8], attr: &'static str) -> Result<u16, DecodeError> {
    Ok(u16::from_ne_bytes(fixed(v, attr)?))
}

pub(crate) fn get_be16(v: &[u8], attr: &'static str) -> Result<u16, DecodeError> {
    Ok(u16::from_be_bytes(fixed(v, attr)?))
}

pub(crate) fn get_u32(v: &[u8], attr: &'static str) -> Result<u32, DecodeError> {
    Ok(u32::from_ne_bytes(fixed(v, attr)?))
}

pub(crate) fn get_u64(v: &[u8], attr: &'static str) -> Result<u64, DecodeError> {
    Ok(u64::from_ne_bytes(fixed(v, attr)?))
}

/// A NUL-terminated string (`NLA_NUL_STRING`); a missing NUL is tolerated.
pub(crate) fn get_cstr(v: &[u8], attr: &'static str) -> Result<String, DecodeError> {
    let s = v.strip_suffix(&[0]).unwrap_or(v);
    let s = match s.iter().position(|b| *b == 0) {
        Some(n) => &s[..n],
        None => s,
    };
    String::from_utf8(s.to_vec()).map_err(|e| bad(attr, e))
}

/// Writes `s` and a terminating NUL.
pub(crate) fn put_cstr(buf: &mut [u8], s: &str) {
    buf[..s.len()].copy_from_slice(s.as_bytes());
    buf[s.len()] = 0;
}

/// An address as the kernel carries it in `IPVS_SVC_ATTR_ADDR` / `IPVS_DEST_ATTR_ADDR`:
/// 4 bytes (IPv4, as userspace may send) or 16 bytes (`union nf_inet_addr`, which the
/// kernel always sends, IPv4 in the first 4 bytes). The family comes from another
/// attribute, so the raw bytes are kept as they came.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAddr(pub Vec<u8>);

impl RawAddr {
    /// The 16-byte `nf_inet_addr` form of `ip`, as ipvsadm sends it.
    pub fn from_ip(ip: std::net::IpAddr) -> Self {
        let mut b = vec![0u8; 16];
        match ip {
            std::net::IpAddr::V4(v4) => b[..4].copy_from_slice(&v4.octets()),
            std::net::IpAddr::V6(v6) => b.copy_from_slice(&v6.octets()),
        }
        RawAddr(b)
    }

    /// The address for family `af` (`AF_INET` or `AF_INET6`), or `None` if the bytes do
    /// not fit it.
    pub fn to_ip(&self, af: u16) -> Option<std::net::IpAddr> {
        match (af, self.0.len()) {
            (AF_INET, 4 | 16) => {
                Some(std::net::Ipv4Addr::new(self.0[0], self.0[1], self.0[2], self.0[3]).into())
            }
            (AF_INET6, 16) => {
                let b: [u8; 16] = self.0[..].try_into().ok()?;
                Some(std::net::Ipv6Addr::from(b).into())
            }
            _ => None,
        }
    }
}

pub(crate) fn get_addr(v: &[u8], attr: &'static str) -> Result<RawAddr, DecodeError> {
    match v.len() {
        4 | 16 => Ok(RawAddr(v.to_vec())),
        n => Err(bad(attr, format_args!("expected 4 or 16 bytes, got {n}"))),
    }
}
