//! The IPVS generic netlink payload: a command and its top-level attributes
//! (`enum IPVS_CMD_ATTR_*`, or `enum IPVS_INFO_ATTR_*` in a `SET_INFO` reply).

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NLA_F_NESTED, Nla, NlaBuffer, NlasIterator,
    ParseableParametrized,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};

use super::cmd::IpvsCmd;
use super::dest::DestAttr;
use super::service::SvcAttr;
use super::{bad, get_u32};
use netlink_packet_core::Parseable;

const IPVS_CMD_ATTR_SERVICE: u16 = 1;
const IPVS_CMD_ATTR_DEST: u16 = 2;
// const IPVS_CMD_ATTR_DAEMON: u16 = 3; // sync daemon, kept as Other
const IPVS_CMD_ATTR_TIMEOUT_TCP: u16 = 4;
const IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
const IPVS_CMD_ATTR_TIMEOUT_UDP: u16 = 6;
// In a SET_INFO reply the top level carries IPVS_INFO_ATTR_* instead.
const IPVS_INFO_ATTR_VERSION: u16 = 1;
const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

/// `IPVS_GENL_NAME`.
pub const IPVS_GENL_NAME: &str = "IPVS";
/// `IPVS_GENL_VERSION`.
pub const IPVS_GENL_VERSION: u8 = 1;

/// A top-level attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IpvsAttr {
    /// The service a command is about (`IPVS_CMD_ATTR_SERVICE`, nested; sent with
    /// `NLA_F_NESTED`, as libnl does; the kernel's replies leave the flag off).
    Service(Vec<SvcAttr>),
    /// The destination (`IPVS_CMD_ATTR_DEST`, nested, flagged as `Service`).
    Dest(Vec<DestAttr>),
    /// TCP established timeout, seconds (`IPVS_CMD_ATTR_TIMEOUT_TCP`); u32, host order.
    TimeoutTcp(u32),
    /// TCP FIN_WAIT timeout, seconds (`IPVS_CMD_ATTR_TIMEOUT_TCP_FIN`); u32, host order.
    TimeoutTcpFin(u32),
    /// UDP timeout, seconds (`IPVS_CMD_ATTR_TIMEOUT_UDP`); u32, host order.
    TimeoutUdp(u32),
    /// IPVS version (`IPVS_INFO_ATTR_VERSION`, `SET_INFO` replies only), `0x010201` for
    /// 1.2.1; u32, host order.
    InfoVersion(u32),
    /// Connection hash table size (`IPVS_INFO_ATTR_CONN_TAB_SIZE`, `SET_INFO` replies
    /// only); u32, host order.
    InfoConnTabSize(u32),
    /// Anything else (`IPVS_CMD_ATTR_DAEMON`, newer attributes).
    Other(DefaultNla),
}

impl Nla for IpvsAttr {
    fn value_len(&self) -> usize {
        match self {
            IpvsAttr::Service(a) => a.as_slice().buffer_len(),
            IpvsAttr::Dest(a) => a.as_slice().buffer_len(),
            IpvsAttr::TimeoutTcp(_)
            | IpvsAttr::TimeoutTcpFin(_)
            | IpvsAttr::TimeoutUdp(_)
            | IpvsAttr::InfoVersion(_)
            | IpvsAttr::InfoConnTabSize(_) => 4,
            IpvsAttr::Other(a) => a.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            IpvsAttr::Service(_) => IPVS_CMD_ATTR_SERVICE | NLA_F_NESTED,
            IpvsAttr::Dest(_) => IPVS_CMD_ATTR_DEST | NLA_F_NESTED,
            IpvsAttr::TimeoutTcp(_) => IPVS_CMD_ATTR_TIMEOUT_TCP,
            IpvsAttr::TimeoutTcpFin(_) => IPVS_CMD_ATTR_TIMEOUT_TCP_FIN,
            IpvsAttr::TimeoutUdp(_) => IPVS_CMD_ATTR_TIMEOUT_UDP,
            IpvsAttr::InfoVersion(_) => IPVS_INFO_ATTR_VERSION,
            IpvsAttr::InfoConnTabSize(_) => IPVS_INFO_ATTR_CONN_TAB_SIZE,
            IpvsAttr::Other(a) => a.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            IpvsAttr::Service(a) => a.as_slice().emit(buf),
            IpvsAttr::Dest(a) => a.as_slice().emit(buf),
            IpvsAttr::TimeoutTcp(v)
            | IpvsAttr::TimeoutTcpFin(v)
            | IpvsAttr::TimeoutUdp(v)
            | IpvsAttr::InfoVersion(v)
            | IpvsAttr::InfoConnTabSize(v) => buf[..4].copy_from_slice(&v.to_ne_bytes()),
            IpvsAttr::Other(a) => a.emit_value(buf),
        }
    }
}

impl IpvsAttr {
    /// Parses one top-level attribute of a message with command `cmd` (which decides
    /// whether numbers 1 and 2 are service/destination or info attributes).
    pub fn parse_for(buf: &NlaBuffer<&[u8]>, cmd: IpvsCmd) -> Result<Self, DecodeError> {
        let v = buf.value();
        let info = matches!(cmd, IpvsCmd::SetInfo | IpvsCmd::GetInfo);
        Ok(match buf.kind() {
            IPVS_INFO_ATTR_VERSION if info => {
                IpvsAttr::InfoVersion(get_u32(v, "IPVS_INFO_ATTR_VERSION")?)
            }
            IPVS_INFO_ATTR_CONN_TAB_SIZE if info => {
                IpvsAttr::InfoConnTabSize(get_u32(v, "IPVS_INFO_ATTR_CONN_TAB_SIZE")?)
            }
            IPVS_CMD_ATTR_SERVICE => IpvsAttr::Service(
                NlasIterator::new(v)
                    .map(|n| n.and_then(|n| SvcAttr::parse(&n)))
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad("IPVS_CMD_ATTR_SERVICE", e))?,
            ),
            IPVS_CMD_ATTR_DEST => IpvsAttr::Dest(
                NlasIterator::new(v)
                    .map(|n| n.and_then(|n| DestAttr::parse(&n)))
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad("IPVS_CMD_ATTR_DEST", e))?,
            ),
            IPVS_CMD_ATTR_TIMEOUT_TCP => {
                IpvsAttr::TimeoutTcp(get_u32(v, "IPVS_CMD_ATTR_TIMEOUT_TCP")?)
            }
            IPVS_CMD_ATTR_TIMEOUT_TCP_FIN => {
                IpvsAttr::TimeoutTcpFin(get_u32(v, "IPVS_CMD_ATTR_TIMEOUT_TCP_FIN")?)
            }
            IPVS_CMD_ATTR_TIMEOUT_UDP => {
                IpvsAttr::TimeoutUdp(get_u32(v, "IPVS_CMD_ATTR_TIMEOUT_UDP")?)
            }
            _ => IpvsAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// The payload of one IPVS generic netlink message.
///
/// ```
/// use kproxy_ipvs::netlink::{IpvsCmd, IpvsMessage};
/// use netlink_packet_core::Emitable;
/// let msg = IpvsMessage { cmd: IpvsCmd::Flush, attrs: vec![] };
/// assert_eq!(msg.buffer_len(), 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsMessage {
    /// The command (from the generic netlink header).
    pub cmd: IpvsCmd,
    /// Its attributes.
    pub attrs: Vec<IpvsAttr>,
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.cmd.into()
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let cmd = IpvsCmd::from(header.cmd);
        let attrs = NlasIterator::new(buf)
            .map(|n| n.and_then(|n| IpvsAttr::parse_for(&n, cmd)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(IpvsMessage { cmd, attrs })
    }
}
