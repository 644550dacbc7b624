//! Statistics nested in `IPVS_SVC_ATTR_STATS[64]` and `IPVS_DEST_ATTR_STATS[64]`
//! (`enum IPVS_STATS_ATTR_*`, include/uapi/linux/ip_vs.h).
//!
//! In the 32-bit `STATS` nest the byte counters are u64 and the others u32; in `STATS64`
//! every counter is u64 (plus `IPVS_STATS_ATTR_PAD`). All host byte order.

use netlink_packet_core::{DecodeError, DefaultNla, Nla, NlaBuffer, Parseable};

use super::{bad, get_u32, get_u64};

const IPVS_STATS_ATTR_CONNS: u16 = 1;
const IPVS_STATS_ATTR_INPKTS: u16 = 2;
const IPVS_STATS_ATTR_OUTPKTS: u16 = 3;
const IPVS_STATS_ATTR_INBYTES: u16 = 4;
const IPVS_STATS_ATTR_OUTBYTES: u16 = 5;
const IPVS_STATS_ATTR_CPS: u16 = 6;
const IPVS_STATS_ATTR_INPPS: u16 = 7;
const IPVS_STATS_ATTR_OUTPPS: u16 = 8;
const IPVS_STATS_ATTR_INBPS: u16 = 9;
const IPVS_STATS_ATTR_OUTBPS: u16 = 10;
// const IPVS_STATS_ATTR_PAD: u16 = 11; // alignment padding for the u64s; kept as Other

/// One attribute of a statistics nest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatsAttr {
    /// A counter, 4 bytes on the wire (`U32`) or 8 (`U64`), host order.
    Counter(StatsCounter, StatsValue),
    /// Anything else (`IPVS_STATS_ATTR_PAD`, newer attributes).
    Other(DefaultNla),
}

/// Which counter a [`StatsAttr::Counter`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatsCounter {
    /// Connections scheduled (`IPVS_STATS_ATTR_CONNS`).
    Conns,
    /// Incoming packets (`IPVS_STATS_ATTR_INPKTS`).
    InPkts,
    /// Outgoing packets (`IPVS_STATS_ATTR_OUTPKTS`).
    OutPkts,
    /// Incoming bytes (`IPVS_STATS_ATTR_INBYTES`).
    InBytes,
    /// Outgoing bytes (`IPVS_STATS_ATTR_OUTBYTES`).
    OutBytes,
    /// Connection rate (`IPVS_STATS_ATTR_CPS`).
    Cps,
    /// Incoming packet rate (`IPVS_STATS_ATTR_INPPS`).
    InPps,
    /// Outgoing packet rate (`IPVS_STATS_ATTR_OUTPPS`).
    OutPps,
    /// Incoming byte rate (`IPVS_STATS_ATTR_INBPS`).
    InBps,
    /// Outgoing byte rate (`IPVS_STATS_ATTR_OUTBPS`).
    OutBps,
}

const COUNTERS: [(StatsCounter, u16); 10] = [
    (StatsCounter::Conns, IPVS_STATS_ATTR_CONNS),
    (StatsCounter::InPkts, IPVS_STATS_ATTR_INPKTS),
    (StatsCounter::OutPkts, IPVS_STATS_ATTR_OUTPKTS),
    (StatsCounter::InBytes, IPVS_STATS_ATTR_INBYTES),
    (StatsCounter::OutBytes, IPVS_STATS_ATTR_OUTBYTES),
    (StatsCounter::Cps, IPVS_STATS_ATTR_CPS),
    (StatsCounter::InPps, IPVS_STATS_ATTR_INPPS),
    (StatsCounter::OutPps, IPVS_STATS_ATTR_OUTPPS),
    (StatsCounter::InBps, IPVS_STATS_ATTR_INBPS),
    (StatsCounter::OutBps, IPVS_STATS_ATTR_OUTBPS),
];

/// A counter's value with its wire width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsValue {
    /// 4 bytes.
    U32(u32),
    /// 8 bytes.
    U64(u64),
}

impl StatsValue {
    /// The value, widened.
    pub fn get(self) -> u64 {
        match self {
            StatsValue::U32(v) => u64::from(v),
            StatsValue::U64(v) => v,
        }
    }
}

impl Nla for StatsAttr {
    fn value_len(&self) -> usize {
        match self {
            StatsAttr::Counter(_, StatsValue::U32(_)) => 4,
            StatsAttr::Counter(_, StatsValue::U64(_)) => 8,
            StatsAttr::Other(a) => a.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            StatsAttr::Counter(c, _) => {
                COUNTERS.iter().find(|(k, _)| k == c).map_or(0, |(_, n)| *n)
            }
            StatsAttr::Other(a) => a.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            StatsAttr::Counter(_, StatsValue::U32(v)) => buf[..4].copy_from_slice(&v.to_ne_bytes()),
            StatsAttr::Counter(_, StatsValue::U64(v)) => buf[..8].copy_from_slice(&v.to_ne_bytes()),
            StatsAttr::Other(a) => a.emit_value(buf),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for StatsAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        let Some((counter, _)) = COUNTERS.iter().find(|(_, n)| *n == buf.kind()) else {
            return Ok(StatsAttr::Other(DefaultNla::parse(buf)?));
        };
        let value = match v.len() {
            4 => StatsValue::U32(get_u32(v, "IPVS_STATS_ATTR_*")?),
            8 => StatsValue::U64(get_u64(v, "IPVS_STATS_ATTR_*")?),
            n => {
                return Err(bad(
                    "IPVS_STATS_ATTR_*",
                    format_args!("expected 4 or 8 bytes, got {n}"),
                ));
            }
        };
        Ok(StatsAttr::Counter(*counter, value))
    }
}

/// The counters of a service or destination, widened to u64.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpvsStats {
    /// Connections scheduled.
    pub conns: u64,
    /// Incoming packets.
    pub inpkts: u64,
    /// Outgoing packets.
    pub outpkts: u64,
    /// Incoming bytes.
    pub inbytes: u64,
    /// Outgoing bytes.
    pub outbytes: u64,
    /// Connection rate.
    pub cps: u64,
    /// Incoming packet rate.
    pub inpps: u64,
    /// Outgoing packet rate.
    pub outpps: u64,
    /// Incoming byte rate.
    pub inbps: u64,
    /// Outgoing byte rate.
    pub outbps: u64,
}

impl IpvsStats {
    /// Reads the counters of a nest; missing ones stay 0.
    pub fn from_attrs(attrs: &[StatsAttr]) -> IpvsStats {
        let mut s = IpvsStats::default();
        for a in attrs {
            if let StatsAttr::Counter(c, v) = a {
                *s.field(*c) = v.get();
            }
        }
        s
    }

    /// The nest the kernel sends: `wide` for `STATS64` (all u64), else `STATS`.
    pub fn to_attrs(&self, wide: bool) -> Vec<StatsAttr> {
        let mut me = *self;
        COUNTERS
            .iter()
            .map(|(c, _)| {
                let v = *me.field(*c);
                let value = if wide || matches!(c, StatsCounter::InBytes | StatsCounter::OutBytes) {
                    StatsValue::U64(v)
                } else {
                    StatsValue::U32(v as u32)
                };
                StatsAttr::Counter(*c, value)
            })
            .collect()
    }

    fn field(&mut self, c: StatsCounter) -> &mut u64 {
        match c {
            StatsCounter::Conns => &mut self.conns,
            StatsCounter::InPkts => &mut self.inpkts,
            StatsCounter::OutPkts => &mut self.outpkts,
            StatsCounter::InBytes => &mut self.inbytes,
            StatsCounter::OutBytes => &mut self.outbytes,
            StatsCounter::Cps => &mut self.cps,
            StatsCounter::InPps => &mut self.inpps,
            StatsCounter::OutPps => &mut self.outpps,
            StatsCounter::InBps => &mut self.inbps,
            StatsCounter::OutBps => &mut self.outbps,
        }
    }
}

/// Parses a nest of statistics attributes.
pub(crate) fn parse_stats(v: &[u8], attr: &'static str) -> Result<Vec<StatsAttr>, DecodeError> {
    netlink_packet_core::NlasIterator::new(v)
        .map(|n| n.and_then(|n| StatsAttr::parse(&n)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(attr, e))
}
