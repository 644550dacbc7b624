//! Owned views of a virtual service and a destination, converted to and from their
//! attribute lists: what the handle, the planner and the reconciler speak.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use kproxy_core::model::{IpFamily, Protocol};

use super::dest::DestAttr;
use super::service::{SvcAttr, SvcFlags};
use super::stats::IpvsStats;
use super::{AF_INET, AF_INET6, RawAddr, SVC_F_HASHED};
use crate::error::{Error, Result};

/// The protocol of a virtual service (`IPVS_SVC_ATTR_PROTOCOL`, an IP protocol number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum IpvsProtocol {
    /// `IPPROTO_TCP` (6).
    Tcp,
    /// `IPPROTO_UDP` (17).
    Udp,
    /// `IPPROTO_SCTP` (132).
    Sctp,
    /// Another protocol number (0 for fwmark services).
    Other(u16),
}

impl From<u16> for IpvsProtocol {
    fn from(n: u16) -> Self {
        match n {
            6 => IpvsProtocol::Tcp,
            17 => IpvsProtocol::Udp,
            132 => IpvsProtocol::Sctp,
            n => IpvsProtocol::Other(n),
        }
    }
}

impl From<IpvsProtocol> for u16 {
    fn from(p: IpvsProtocol) -> u16 {
        match p {
            IpvsProtocol::Tcp => 6,
            IpvsProtocol::Udp => 17,
            IpvsProtocol::Sctp => 132,
            IpvsProtocol::Other(n) => n,
        }
    }
}

impl From<Protocol> for IpvsProtocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Tcp => IpvsProtocol::Tcp,
            Protocol::Udp => IpvsProtocol::Udp,
            Protocol::Sctp => IpvsProtocol::Sctp,
        }
    }
}

impl fmt::Display for IpvsProtocol {
    /// As `ipvsadm -Ln` prints it: `TCP`, `UDP`, `SCTP`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpvsProtocol::Tcp => f.write_str("TCP"),
            IpvsProtocol::Udp => f.write_str("UDP"),
            IpvsProtocol::Sctp => f.write_str("SCTP"),
            IpvsProtocol::Other(n) => write!(f, "proto-{n}"),
        }
    }
}

/// What identifies a virtual service in the kernel: protocol, address and port, or a
/// firewall mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// Address family (from `address`, or `IPVS_SVC_ATTR_AF` for fwmark services).
    pub family: IpFamily,
    /// Protocol.
    pub protocol: IpvsProtocol,
    /// Virtual address (unspecified for fwmark services).
    pub address: IpAddr,
    /// Virtual port.
    pub port: u16,
    /// Firewall mark (0 for address services; kproxy creates none).
    pub fwmark: u32,
}

impl fmt::Display for ServiceKey {
    /// `10.96.0.10:80/TCP`, `[fd00::1]:53/UDP`, `fwmark 7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.fwmark != 0 {
            return write!(f, "fwmark {}", self.fwmark);
        }
        write!(
            f,
            "{}/{}",
            std::net::SocketAddr::new(self.address, self.port),
            self.protocol
        )
    }
}

/// A virtual service (`ipvsadm -A`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Address family.
    pub family: IpFamily,
    /// Protocol.
    pub protocol: IpvsProtocol,
    /// Virtual address.
    pub address: IpAddr,
    /// Virtual port.
    pub port: u16,
    /// Firewall mark (0: an address service).
    pub fwmark: u32,
    /// Scheduler (`rr`, …).
    pub scheduler: String,
    /// `IP_VS_SVC_F_*` flags (the kernel adds `SVC_F_HASHED` in its replies).
    pub flags: u32,
    /// Persistence timeout, seconds.
    pub timeout: u32,
    /// Persistence netmask (see [`SvcAttr::Netmask`]): `0xffffffff` for IPv4, 128 for IPv6.
    pub netmask: u32,
    /// Persistence engine, if any.
    pub pe_name: Option<String>,
    /// Counters, from dumps only (ignored when comparing desired and actual state).
    pub stats: Option<IpvsStats>,
}

impl Service {
    /// A service with kube-proxy's defaults: the full-length netmask, no flags, no stats.
    pub fn new(protocol: IpvsProtocol, address: IpAddr, port: u16, scheduler: &str) -> Service {
        let family = IpFamily::of(&address);
        Service {
            family,
            protocol,
            address,
            port,
            fwmark: 0,
            scheduler: scheduler.to_owned(),
            flags: 0,
            timeout: 0,
            netmask: full_netmask(family),
            pe_name: None,
            stats: None,
        }
    }

    /// The key the kernel looks the service up by.
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            family: self.family,
            protocol: self.protocol,
            address: self.address,
            port: self.port,
            fwmark: self.fwmark,
        }
    }

    /// The attributes that identify the service (for `DEL_SERVICE`, `GET_DEST`, and the
    /// service part of destination commands): AF plus protocol/address/port or fwmark.
    pub fn id_attrs(&self) -> Vec<SvcAttr> {
        let mut v = vec![SvcAttr::Af(af_of(self.family))];
        if self.fwmark != 0 {
            v.push(SvcAttr::Fwmark(self.fwmark));
        } else {
            v.push(SvcAttr::Protocol(self.protocol.into()));
            v.push(SvcAttr::Addr(RawAddr::from_ip(self.address)));
            v.push(SvcAttr::Port(self.port));
        }
        v
    }

    /// Every attribute of `NEW_SERVICE`/`SET_SERVICE`, in the order ipvsadm sends them.
    pub fn to_attrs(&self) -> Vec<SvcAttr> {
        let mut v = self.id_attrs();
        v.push(SvcAttr::SchedName(self.scheduler.clone()));
        if let Some(pe) = &self.pe_name {
            v.push(SvcAttr::PeName(pe.clone()));
        }
        v.push(SvcAttr::Flags(SvcFlags {
            flags: self.flags,
            mask: u32::MAX,
        }));
        v.push(SvcAttr::Timeout(self.timeout));
        v.push(SvcAttr::Netmask(self.netmask));
        v
    }

    /// Reads a service from the attributes of a `GET_SERVICE` reply.
    pub fn from_attrs(attrs: &[SvcAttr]) -> Result<Service> {
        let mut af = None;
        let mut addr = None;
        let mut svc = Service::new(
            IpvsProtocol::Other(0),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            0,
            "",
        );
        let mut stats64 = None;
        for a in attrs {
            match a {
                SvcAttr::Af(v) => af = Some(*v),
                SvcAttr::Protocol(p) => svc.protocol = (*p).into(),
                SvcAttr::Addr(a) => addr = Some(a.clone()),
                SvcAttr::Port(p) => svc.port = *p,
                SvcAttr::Fwmark(m) => svc.fwmark = *m,
                SvcAttr::SchedName(s) => svc.scheduler = s.clone(),
                SvcAttr::Flags(f) => svc.flags = f.flags,
                SvcAttr::Timeout(t) => svc.timeout = *t,
                SvcAttr::Netmask(m) => svc.netmask = *m,
                SvcAttr::PeName(p) => svc.pe_name = Some(p.clone()).filter(|p| !p.is_empty()),
                SvcAttr::Stats(s) => svc.stats = svc.stats.or(Some(IpvsStats::from_attrs(s))),
                SvcAttr::Stats64(s) => stats64 = Some(IpvsStats::from_attrs(s)),
                _ => {}
            }
        }
        svc.stats = stats64.or(svc.stats);
        let af = af.ok_or(Error::MissingAttribute {
            what: "service",
            attr: "IPVS_SVC_ATTR_AF",
        })?;
        svc.family = family_of_af(af, "IPVS_SVC_ATTR_AF")?;
        svc.address = match addr {
            Some(a) => a.to_ip(af).ok_or_else(|| Error::BadAttribute {
                attr: "IPVS_SVC_ATTR_ADDR",
                reason: format!("{} bytes do not hold an address of family {af}", a.0.len()),
            })?,
            None if svc.fwmark != 0 => unspecified(svc.family),
            None => {
                return Err(Error::MissingAttribute {
                    what: "service",
                    attr: "IPVS_SVC_ATTR_ADDR",
                });
            }
        };
        Ok(svc)
    }

    /// The flags as compared with a desired service: without `SVC_F_HASHED`, which the
    /// kernel sets on every listed service (upstream strips it the same way).
    pub fn user_flags(&self) -> u32 {
        self.flags & !SVC_F_HASHED
    }

    /// Whether `self` and `other` are configured the same (scheduler, flags, timeout,
    /// netmask, persistence engine), ignoring stats and the hashed flag.
    pub fn same_config(&self, other: &Service) -> bool {
        self.key() == other.key()
            && self.scheduler == other.scheduler
            && self.user_flags() == other.user_flags()
            && self.timeout == other.timeout
            && self.netmask == other.netmask
            && self.pe_name == other.pe_name
    }
}

/// How a destination is reached (`IP_VS_CONN_F_FWD_MASK` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FwdMethod {
    /// NAT (`IP_VS_CONN_F_MASQ`, 0): what kube-proxy uses.
    Masq,
    /// Local node (`IP_VS_CONN_F_LOCALNODE`, 1).
    Local,
    /// IP-in-IP tunnel (`IP_VS_CONN_F_TUNNEL`, 2).
    Tunnel,
    /// Direct routing (`IP_VS_CONN_F_DROUTE`, 3).
    Route,
    /// Another value.
    Other(u32),
}

impl From<u32> for FwdMethod {
    fn from(n: u32) -> Self {
        match n {
            0 => FwdMethod::Masq,
            1 => FwdMethod::Local,
            2 => FwdMethod::Tunnel,
            3 => FwdMethod::Route,
            n => FwdMethod::Other(n),
        }
    }
}

impl From<FwdMethod> for u32 {
    fn from(m: FwdMethod) -> u32 {
        match m {
            FwdMethod::Masq => 0,
            FwdMethod::Local => 1,
            FwdMethod::Tunnel => 2,
            FwdMethod::Route => 3,
            FwdMethod::Other(n) => n,
        }
    }
}

impl fmt::Display for FwdMethod {
    /// As `ipvsadm -Ln` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FwdMethod::Masq => f.write_str("Masq"),
            FwdMethod::Local => f.write_str("Local"),
            FwdMethod::Tunnel => f.write_str("Tunnel"),
            FwdMethod::Route => f.write_str("Route"),
            FwdMethod::Other(n) => write!(f, "fwd-{n}"),
        }
    }
}

/// A destination (real server) of a virtual service (`ipvsadm -a`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Real server address.
    pub address: IpAddr,
    /// Real server port.
    pub port: u16,
    /// Forwarding method.
    pub fwd_method: FwdMethod,
    /// Weight (0: no new connections).
    pub weight: u32,
    /// Upper connection threshold (0: none).
    pub u_thresh: u32,
    /// Lower connection threshold.
    pub l_thresh: u32,
    /// Active connections (from dumps).
    pub active_conns: u32,
    /// Inactive connections (from dumps).
    pub inact_conns: u32,
    /// Persistent connection templates (from dumps).
    pub persist_conns: u32,
    /// Counters (from dumps).
    pub stats: Option<IpvsStats>,
}

impl Destination {
    /// A masquerading destination with weight 1, as kube-proxy adds them.
    pub fn new(addr: std::net::SocketAddr) -> Destination {
        Destination {
            address: addr.ip(),
            port: addr.port(),
            fwd_method: FwdMethod::Masq,
            weight: 1,
            u_thresh: 0,
            l_thresh: 0,
            active_conns: 0,
            inact_conns: 0,
            persist_conns: 0,
            stats: None,
        }
    }

    /// `ip:port`.
    pub fn socket_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.address, self.port)
    }

    /// The attributes that identify the destination within its service (`DEL_DEST`).
    pub fn id_attrs(&self) -> Vec<DestAttr> {
        vec![
            DestAttr::AddrFamily(af_of(IpFamily::of(&self.address))),
            DestAttr::Addr(RawAddr::from_ip(self.address)),
            DestAttr::Port(self.port),
        ]
    }

    /// Every attribute of `NEW_DEST`/`SET_DEST`.
    pub fn to_attrs(&self) -> Vec<DestAttr> {
        let mut v = self.id_attrs();
        v.push(DestAttr::FwdMethod(self.fwd_method.into()));
        v.push(DestAttr::Weight(self.weight));
        v.push(DestAttr::UThresh(self.u_thresh));
        v.push(DestAttr::LThresh(self.l_thresh));
        v
    }

    /// Reads a destination from a `GET_DEST` reply; `service_family` is used when the
    /// kernel sends no `IPVS_DEST_ATTR_ADDR_FAMILY` (before Linux 4.4).
    pub fn from_attrs(attrs: &[DestAttr], service_family: IpFamily) -> Result<Destination> {
        let mut af = af_of(service_family);
        let mut addr = None;
        let mut d = Destination::new(std::net::SocketAddr::new(unspecified(service_family), 0));
        let mut stats64 = None;
        for a in attrs {
            match a {
                DestAttr::Addr(a) => addr = Some(a.clone()),
                DestAttr::Port(p) => d.port = *p,
                DestAttr::FwdMethod(m) => d.fwd_method = (*m & 0x7).into(),
                DestAttr::Weight(w) => d.weight = *w,
                DestAttr::UThresh(v) => d.u_thresh = *v,
                DestAttr::LThresh(v) => d.l_thresh = *v,
                DestAttr::ActiveConns(v) => d.active_conns = *v,
                DestAttr::InactConns(v) => d.inact_conns = *v,
                DestAttr::PersistConns(v) => d.persist_conns = *v,
                DestAttr::AddrFamily(v) => af = *v,
                DestAttr::Stats(s) => d.stats = d.stats.or(Some(IpvsStats::from_attrs(s))),
                DestAttr::Stats64(s) => stats64 = Some(IpvsStats::from_attrs(s)),
                _ => {}
            }
        }
        d.stats = stats64.or(d.stats);
        let addr = addr.ok_or(Error::MissingAttribute {
            what: "destination",
            attr: "IPVS_DEST_ATTR_ADDR",
        })?;
        d.address = addr.to_ip(af).ok_or_else(|| Error::BadAttribute {
            attr: "IPVS_DEST_ATTR_ADDR",
            reason: format!(
                "{} bytes do not hold an address of family {af}",
                addr.0.len()
            ),
        })?;
        Ok(d)
    }

    /// Active plus inactive connections: what graceful termination waits for.
    pub fn connections(&self) -> u64 {
        u64::from(self.active_conns) + u64::from(self.inact_conns)
    }
}

/// `AF_INET` or `AF_INET6`.
pub(crate) fn af_of(f: IpFamily) -> u16 {
    match f {
        IpFamily::V4 => AF_INET,
        IpFamily::V6 => AF_INET6,
    }
}

fn family_of_af(af: u16, attr: &'static str) -> Result<IpFamily> {
    match af {
        AF_INET => Ok(IpFamily::V4),
        AF_INET6 => Ok(IpFamily::V6),
        n => Err(Error::BadAttribute {
            attr,
            reason: format!("unknown address family {n}"),
        }),
    }
}

fn unspecified(f: IpFamily) -> IpAddr {
    match f {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpFamily::V6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

/// The persistence netmask kube-proxy uses: `0xffffffff` (IPv4 /32) or 128 (IPv6).
pub fn full_netmask(f: IpFamily) -> u32 {
    match f {
        IpFamily::V4 => u32::MAX,
        IpFamily::V6 => 128,
    }
}
