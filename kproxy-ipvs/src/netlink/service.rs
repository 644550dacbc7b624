//! Attributes nested in `IPVS_CMD_ATTR_SERVICE` (`enum IPVS_SVC_ATTR_*`,
//! include/uapi/linux/ip_vs.h; types from `ip_vs_svc_policy` in net/netfilter/ipvs/ip_vs_ctl.c).

use netlink_packet_core::{DecodeError, DefaultNla, Emitable, Nla, NlaBuffer, Parseable};

use super::stats::{StatsAttr, parse_stats};
use super::{RawAddr, get_addr, get_be16, get_cstr, get_u16, get_u32, put_cstr};

const IPVS_SVC_ATTR_AF: u16 = 1;
const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
const IPVS_SVC_ATTR_ADDR: u16 = 3;
const IPVS_SVC_ATTR_PORT: u16 = 4;
const IPVS_SVC_ATTR_FWMARK: u16 = 5;
const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
const IPVS_SVC_ATTR_FLAGS: u16 = 7;
const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
const IPVS_SVC_ATTR_NETMASK: u16 = 9;
const IPVS_SVC_ATTR_STATS: u16 = 10;
const IPVS_SVC_ATTR_PE_NAME: u16 = 11;
const IPVS_SVC_ATTR_STATS64: u16 = 12;

/// `struct ip_vs_flags { __u32 flags; __u32 mask; }`, host order: the kernel changes only
/// the bits set in `mask`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SvcFlags {
    /// `IP_VS_SVC_F_*` bits.
    pub flags: u32,
    /// Which bits to change (ipvsadm and kube-proxy send `0xffffffff`).
    pub mask: u32,
}

/// One attribute of a virtual service.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SvcAttr {
    /// Address family, `AF_INET` or `AF_INET6`; u16, host order.
    Af(u16),
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP); u16, host order.
    Protocol(u16),
    /// Virtual address; see [`RawAddr`].
    Addr(RawAddr),
    /// Virtual port; big-endian (`nla_put_be16`).
    Port(u16),
    /// Firewall mark of a fwmark service; u32, host order.
    Fwmark(u32),
    /// Scheduler name (`rr`, `sh`, …), NUL-terminated, at most 15 characters.
    SchedName(String),
    /// Service flags and mask; two host-order u32.
    Flags(SvcFlags),
    /// Persistence timeout in seconds; u32, host order.
    Timeout(u32),
    /// Persistence netmask: a `__be32` the kernel copies without swapping. For IPv4 it
    /// is a network-order mask (`0xffffffff` for /32); for IPv6 it is the prefix length
    /// (128) as a host-order integer. Kept as `u32::from_ne_bytes` of the wire bytes.
    Netmask(u32),
    /// 32-bit statistics (nested).
    Stats(Vec<StatsAttr>),
    /// Persistence engine name (`sip`), NUL-terminated.
    PeName(String),
    /// 64-bit statistics (nested).
    Stats64(Vec<StatsAttr>),
    /// Any attribute this codec does not know.
    Other(DefaultNla),
}

impl Nla for SvcAttr {
    fn value_len(&self) -> usize {
        match self {
            SvcAttr::Af(_) | SvcAttr::Protocol(_) | SvcAttr::Port(_) => 2,
            SvcAttr::Addr(a) => a.0.len(),
            SvcAttr::Fwmark(_) | SvcAttr::Timeout(_) | SvcAttr::Netmask(_) => 4,
            SvcAttr::SchedName(s) | SvcAttr::PeName(s) => s.len() + 1,
            SvcAttr::Flags(_) => 8,
            SvcAttr::Stats(s) | SvcAttr::Stats64(s) => s.as_slice().buffer_len(),
            SvcAttr::Other(a) => a.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            SvcAttr::Af(_) => IPVS_SVC_ATTR_AF,
            SvcAttr::Protocol(_) => IPVS_SVC_ATTR_PROTOCOL,
            SvcAttr::Addr(_) => IPVS_SVC_ATTR_ADDR,
            SvcAttr::Port(_) => IPVS_SVC_ATTR_PORT,
            SvcAttr::Fwmark(_) => IPVS_SVC_ATTR_FWMARK,
            SvcAttr::SchedName(_) => IPVS_SVC_ATTR_SCHED_NAME,
            SvcAttr::Flags(_) => IPVS_SVC_ATTR_FLAGS,
            SvcAttr::Timeout(_) => IPVS_SVC_ATTR_TIMEOUT,
            SvcAttr::Netmask(_) => IPVS_SVC_ATTR_NETMASK,
            SvcAttr::Stats(_) => IPVS_SVC_ATTR_STATS,
            SvcAttr::PeName(_) => IPVS_SVC_ATTR_PE_NAME,
            SvcAttr::Stats64(_) => IPVS_SVC_ATTR_STATS64,
            SvcAttr::Other(a) => a.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            SvcAttr::Af(v) | SvcAttr::Protocol(v) => buf[..2].copy_from_slice(&v.to_ne_bytes()),
            SvcAttr::Port(p) => buf[..2].copy_from_slice(&p.to_be_bytes()),
            SvcAttr::Addr(a) => buf[..a.0.len()].copy_from_slice(&a.0),
            SvcAttr::Fwmark(v) | SvcAttr::Timeout(v) | SvcAttr::Netmask(v) => {
                buf[..4].copy_from_slice(&v.to_ne_bytes())
            }
            SvcAttr::SchedName(s) | SvcAttr::PeName(s) => put_cstr(buf, s),
            SvcAttr::Flags(f) => {
                buf[..4].copy_from_slice(&f.flags.to_ne_bytes());
                buf[4..8].copy_from_slice(&f.mask.to_ne_bytes());
            }
            SvcAttr::Stats(s) | SvcAttr::Stats64(s) => s.as_slice().emit(buf),
            SvcAttr::Other(a) => a.emit_value(buf),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for SvcAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            IPVS_SVC_ATTR_AF => SvcAttr::Af(get_u16(v, "IPVS_SVC_ATTR_AF")?),
            IPVS_SVC_ATTR_PROTOCOL => SvcAttr::Protocol(get_u16(v, "IPVS_SVC_ATTR_PROTOCOL")?),
            IPVS_SVC_ATTR_ADDR => SvcAttr::Addr(get_addr(v, "IPVS_SVC_ATTR_ADDR")?),
            IPVS_SVC_ATTR_PORT => SvcAttr::Port(get_be16(v, "IPVS_SVC_ATTR_PORT")?),
            IPVS_SVC_ATTR_FWMARK => SvcAttr::Fwmark(get_u32(v, "IPVS_SVC_ATTR_FWMARK")?),
            IPVS_SVC_ATTR_SCHED_NAME => {
                SvcAttr::SchedName(get_cstr(v, "IPVS_SVC_ATTR_SCHED_NAME")?)
            }
            IPVS_SVC_ATTR_FLAGS => {
                if v.len() != 8 {
                    return Err(super::bad(
                        "IPVS_SVC_ATTR_FLAGS",
                        format_args!("expected 8 bytes, got {}", v.len()),
                    ));
                }
                SvcAttr::Flags(SvcFlags {
                    flags: get_u32(&v[..4], "IPVS_SVC_ATTR_FLAGS")?,
                    mask: get_u32(&v[4..], "IPVS_SVC_ATTR_FLAGS")?,
                })
            }
            IPVS_SVC_ATTR_TIMEOUT => SvcAttr::Timeout(get_u32(v, "IPVS_SVC_ATTR_TIMEOUT")?),
            IPVS_SVC_ATTR_NETMASK => SvcAttr::Netmask(get_u32(v, "IPVS_SVC_ATTR_NETMASK")?),
            IPVS_SVC_ATTR_STATS => SvcAttr::Stats(parse_stats(v, "IPVS_SVC_ATTR_STATS")?),
            IPVS_SVC_ATTR_PE_NAME => SvcAttr::PeName(get_cstr(v, "IPVS_SVC_ATTR_PE_NAME")?),
            IPVS_SVC_ATTR_STATS64 => SvcAttr::Stats64(parse_stats(v, "IPVS_SVC_ATTR_STATS64")?),
            _ => SvcAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}
