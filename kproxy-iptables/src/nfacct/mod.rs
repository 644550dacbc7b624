//! Codec for the kernel's extended accounting objects (`nfacct`), the nfnetlink
//! subsystem `NFNL_SUBSYS_ACCT` (`include/uapi/linux/netfilter/nfnetlink_acct.h`,
//! `net/netfilter/nfnetlink_acct.c`). Upstream kube-proxy ensures two of them on full
//! syncs and references them from `-m nfacct --nfacct-name` rules
//! (`pkg/proxy/util/nfacct`); kproxy speaks the protocol itself, so no `nfacct` binary
//! is needed.
//!
//! ```text
//! nlmsghdr {type = NFNL_SUBSYS_ACCT << 8 | NFNL_MSG_ACCT_*} | nfgenmsg {family, version 0, res_id (be16)}
//!   | NFACCT_NAME "ct_state_invalid_dropped_pkts\0" | NFACCT_PKTS (be64) | NFACCT_BYTES (be64) | NFACCT_USE (be32)
//! ```
//!
//! Byte order: every number in these attributes is big-endian (the kernel uses
//! `nla_put_be64` / `nla_put_be32` and reads with `be64_to_cpu`), unlike most netlink
//! families; `res_id` in the `nfgenmsg` header is big-endian too.

#[cfg(test)]
mod tests;

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NetlinkDeserializable, NetlinkHeader, NetlinkSerializable,
    Nla, NlaBuffer, NlasIterator, Parseable,
};

/// The counter of packets dropped by the `--ctstate INVALID` rule (upstream
/// `metrics.IPTablesCTStateInvalidDroppedNFAcctCounter`).
pub const CT_STATE_INVALID_DROPPED: &str = "ct_state_invalid_dropped_pkts";
/// The counter of packets accepted on node ports of 127.0.0.0/8 (upstream
/// `metrics.LocalhostNodePortAcceptedNFAcctCounter`).
pub const LOCALHOST_NODEPORTS_ACCEPTED: &str = "localhost_nps_accepted_pkts";
/// Both counters, in the order upstream ensures them.
pub const COUNTERS: [&str; 2] = [CT_STATE_INVALID_DROPPED, LOCALHOST_NODEPORTS_ACCEPTED];

/// `NFACCT_NAME_MAX`: the longest name, NUL included.
pub const NFACCT_NAME_MAX: usize = 32;

/// `NFNL_SUBSYS_ACCT` (`include/uapi/linux/netfilter/nfnetlink.h`).
const NFNL_SUBSYS_ACCT: u16 = 7;
/// `NFNETLINK_V0`.
const NFNETLINK_V0: u8 = 0;
/// Length of `struct nfgenmsg`.
const NFGENMSG_LEN: usize = 4;

// enum nfnl_acct_msg_types
const NFNL_MSG_ACCT_NEW: u8 = 0;
const NFNL_MSG_ACCT_GET: u8 = 1;
const NFNL_MSG_ACCT_GET_CTRZERO: u8 = 2;
const NFNL_MSG_ACCT_DEL: u8 = 3;
const NFNL_MSG_ACCT_OVERQUOTA: u8 = 4;

// enum nfnl_acct_type
const NFACCT_NAME: u16 = 1;
const NFACCT_PKTS: u16 = 2;
const NFACCT_BYTES: u16 = 3;
const NFACCT_USE: u16 = 4;
const NFACCT_FLAGS: u16 = 5;
const NFACCT_QUOTA: u16 = 6;
// const NFACCT_FILTER: u16 = 7; // nested dump filter, kept as Other
// const NFACCT_PAD: u16 = 8; // alignment padding before 64-bit values, kept as Other

/// The operation of an nfacct message (`enum nfnl_acct_msg_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NfacctCmd {
    /// Create an object (`NFNL_MSG_ACCT_NEW`); also the type of the kernel's replies.
    New,
    /// Read one object, or dump all (`NFNL_MSG_ACCT_GET`).
    Get,
    /// Read and zero (`NFNL_MSG_ACCT_GET_CTRZERO`).
    GetCtrZero,
    /// Delete an unreferenced object (`NFNL_MSG_ACCT_DEL`).
    Del,
    /// Quota notification (`NFNL_MSG_ACCT_OVERQUOTA`).
    OverQuota,
    /// A newer message type.
    Other(u8),
}

impl From<NfacctCmd> for u8 {
    fn from(c: NfacctCmd) -> u8 {
        match c {
            NfacctCmd::New => NFNL_MSG_ACCT_NEW,
            NfacctCmd::Get => NFNL_MSG_ACCT_GET,
            NfacctCmd::GetCtrZero => NFNL_MSG_ACCT_GET_CTRZERO,
            NfacctCmd::Del => NFNL_MSG_ACCT_DEL,
            NfacctCmd::OverQuota => NFNL_MSG_ACCT_OVERQUOTA,
            NfacctCmd::Other(n) => n,
        }
    }
}

impl From<u8> for NfacctCmd {
    fn from(n: u8) -> NfacctCmd {
        match n {
            NFNL_MSG_ACCT_NEW => NfacctCmd::New,
            NFNL_MSG_ACCT_GET => NfacctCmd::Get,
            NFNL_MSG_ACCT_GET_CTRZERO => NfacctCmd::GetCtrZero,
            NFNL_MSG_ACCT_DEL => NfacctCmd::Del,
            NFNL_MSG_ACCT_OVERQUOTA => NfacctCmd::OverQuota,
            n => NfacctCmd::Other(n),
        }
    }
}

/// An attribute of an nfacct message (`enum nfnl_acct_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NfacctAttr {
    /// `NFACCT_NAME`: NUL-terminated, at most [`NFACCT_NAME_MAX`] bytes with the NUL.
    Name(String),
    /// `NFACCT_PKTS`: packets counted; be64.
    Packets(u64),
    /// `NFACCT_BYTES`: bytes counted; be64.
    Bytes(u64),
    /// `NFACCT_USE`: references (1 + rules using it); be32.
    Use(u32),
    /// `NFACCT_FLAGS`: quota flags; be32.
    Flags(u32),
    /// `NFACCT_QUOTA`: the quota; be64.
    Quota(u64),
    /// Anything else (`NFACCT_FILTER`, `NFACCT_PAD`, newer attributes).
    Other(DefaultNla),
}

impl Nla for NfacctAttr {
    fn value_len(&self) -> usize {
        match self {
            NfacctAttr::Name(s) => s.len() + 1,
            NfacctAttr::Packets(_) | NfacctAttr::Bytes(_) | NfacctAttr::Quota(_) => 8,
            NfacctAttr::Use(_) | NfacctAttr::Flags(_) => 4,
            NfacctAttr::Other(a) => a.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            NfacctAttr::Name(_) => NFACCT_NAME,
            NfacctAttr::Packets(_) => NFACCT_PKTS,
            NfacctAttr::Bytes(_) => NFACCT_BYTES,
            NfacctAttr::Use(_) => NFACCT_USE,
            NfacctAttr::Flags(_) => NFACCT_FLAGS,
            NfacctAttr::Quota(_) => NFACCT_QUOTA,
            NfacctAttr::Other(a) => a.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            NfacctAttr::Name(s) => {
                buf[..s.len()].copy_from_slice(s.as_bytes());
                buf[s.len()] = 0;
            }
            NfacctAttr::Packets(v) | NfacctAttr::Bytes(v) | NfacctAttr::Quota(v) => {
                buf[..8].copy_from_slice(&v.to_be_bytes());
            }
            NfacctAttr::Use(v) | NfacctAttr::Flags(v) => buf[..4].copy_from_slice(&v.to_be_bytes()),
            NfacctAttr::Other(a) => a.emit_value(buf),
        }
    }
}

fn bad(attr: &'static str, reason: impl std::fmt::Display) -> DecodeError {
    DecodeError::from(format!("{attr}: {reason}"))
}

fn be64(v: &[u8], attr: &'static str) -> Result<u64, DecodeError> {
    let b: [u8; 8] = v
        .try_into()
        .map_err(|_| bad(attr, format_args!("expected 8 bytes, got {}", v.len())))?;
    Ok(u64::from_be_bytes(b))
}

fn be32(v: &[u8], attr: &'static str) -> Result<u32, DecodeError> {
    let b: [u8; 4] = v
        .try_into()
        .map_err(|_| bad(attr, format_args!("expected 4 bytes, got {}", v.len())))?;
    Ok(u32::from_be_bytes(b))
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for NfacctAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            NFACCT_NAME => {
                // NLA_NUL_STRING: up to the first NUL (a missing one is tolerated).
                let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
                NfacctAttr::Name(
                    String::from_utf8(v[..end].to_vec()).map_err(|e| bad("NFACCT_NAME", e))?,
                )
            }
            NFACCT_PKTS => NfacctAttr::Packets(be64(v, "NFACCT_PKTS")?),
            NFACCT_BYTES => NfacctAttr::Bytes(be64(v, "NFACCT_BYTES")?),
            NFACCT_USE => NfacctAttr::Use(be32(v, "NFACCT_USE")?),
            NFACCT_FLAGS => NfacctAttr::Flags(be32(v, "NFACCT_FLAGS")?),
            NFACCT_QUOTA => NfacctAttr::Quota(be64(v, "NFACCT_QUOTA")?),
            _ => NfacctAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// One nfacct message: the `nfgenmsg` header and the attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfacctMessage {
    /// The operation (low byte of the netlink message type).
    pub cmd: NfacctCmd,
    /// `nfgen_family`: `AF_UNSPEC` (0) for accounting objects.
    pub family: u8,
    /// `res_id`, big-endian on the wire; 0.
    pub res_id: u16,
    /// The attributes.
    pub attrs: Vec<NfacctAttr>,
}

impl NfacctMessage {
    /// `NFNL_MSG_ACCT_NEW` for `name`: with `NLM_F_CREATE | NLM_F_EXCL` the kernel
    /// answers `EEXIST` when it exists (counters untouched).
    pub fn new_counter(name: &str) -> Self {
        NfacctMessage::named(NfacctCmd::New, name)
    }

    /// `NFNL_MSG_ACCT_GET` for `name`: the kernel answers with an `NFNL_MSG_ACCT_NEW`
    /// message carrying its counters, or `ENOENT`.
    pub fn get_counter(name: &str) -> Self {
        NfacctMessage::named(NfacctCmd::Get, name)
    }

    /// `NFNL_MSG_ACCT_DEL` for `name`: `EBUSY` while rules reference it.
    pub fn del_counter(name: &str) -> Self {
        NfacctMessage::named(NfacctCmd::Del, name)
    }

    fn named(cmd: NfacctCmd, name: &str) -> Self {
        NfacctMessage {
            cmd,
            family: 0,
            res_id: 0,
            attrs: vec![NfacctAttr::Name(name.to_owned())],
        }
    }

    /// The counter this message describes, if it names one.
    pub fn counter(&self) -> Option<Counter> {
        let mut c = Counter {
            name: String::new(),
            packets: 0,
            bytes: 0,
        };
        let mut named = false;
        for a in &self.attrs {
            match a {
                NfacctAttr::Name(n) => {
                    c.name.clone_from(n);
                    named = true;
                }
                NfacctAttr::Packets(p) => c.packets = *p,
                NfacctAttr::Bytes(b) => c.bytes = *b,
                _ => {}
            }
        }
        named.then_some(c)
    }
}

/// An accounting object's name and counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Counter {
    /// Its name.
    pub name: String,
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

/// Whether `name` is a valid nfacct name (1 to 31 bytes, no NUL), as the kernel checks.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() < NFACCT_NAME_MAX && !name.contains('\0')
}

impl NetlinkSerializable for NfacctMessage {
    fn message_type(&self) -> u16 {
        (NFNL_SUBSYS_ACCT << 8) | u16::from(u8::from(self.cmd))
    }

    fn buffer_len(&self) -> usize {
        NFGENMSG_LEN + self.attrs.as_slice().buffer_len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer[0] = self.family;
        buffer[1] = NFNETLINK_V0;
        buffer[2..4].copy_from_slice(&self.res_id.to_be_bytes());
        self.attrs.as_slice().emit(&mut buffer[NFGENMSG_LEN..]);
    }
}

impl NetlinkDeserializable for NfacctMessage {
    type Error = DecodeError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, DecodeError> {
        let subsys = header.message_type >> 8;
        if subsys != NFNL_SUBSYS_ACCT {
            return Err(bad(
                "nlmsg_type",
                format_args!("subsystem {subsys} is not NFNL_SUBSYS_ACCT"),
            ));
        }
        if payload.len() < NFGENMSG_LEN {
            return Err(bad(
                "nfgenmsg",
                format_args!("{} bytes, need {NFGENMSG_LEN}", payload.len()),
            ));
        }
        let attrs = NlasIterator::new(&payload[NFGENMSG_LEN..])
            .map(|nla| nla.and_then(|b| NfacctAttr::parse(&b)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NfacctMessage {
            // The low byte of the type; the high byte was checked above.
            cmd: NfacctCmd::from(header.message_type.to_be_bytes()[1]),
            family: payload[0],
            res_id: u16::from_be_bytes([payload[2], payload[3]]),
            attrs,
        })
    }
}
