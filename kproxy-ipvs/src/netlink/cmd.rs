//! Commands of the IPVS family (`enum IPVS_CMD_*`, include/uapi/linux/ip_vs.h).

use std::fmt;

const IPVS_CMD_NEW_SERVICE: u8 = 1;
const IPVS_CMD_SET_SERVICE: u8 = 2;
const IPVS_CMD_DEL_SERVICE: u8 = 3;
const IPVS_CMD_GET_SERVICE: u8 = 4;
const IPVS_CMD_NEW_DEST: u8 = 5;
const IPVS_CMD_SET_DEST: u8 = 6;
const IPVS_CMD_DEL_DEST: u8 = 7;
const IPVS_CMD_GET_DEST: u8 = 8;
// const IPVS_CMD_NEW_DAEMON: u8 = 9;  // sync daemon: kube-proxy never uses it
// const IPVS_CMD_DEL_DAEMON: u8 = 10;
// const IPVS_CMD_GET_DAEMON: u8 = 11;
const IPVS_CMD_SET_CONFIG: u8 = 12;
const IPVS_CMD_GET_CONFIG: u8 = 13;
const IPVS_CMD_SET_INFO: u8 = 14;
const IPVS_CMD_GET_INFO: u8 = 15;
const IPVS_CMD_ZERO: u8 = 16;
const IPVS_CMD_FLUSH: u8 = 17;

/// An IPVS generic netlink command. Replies to dumps come back as `NewService` /
/// `NewDest`, and `GetConfig` / `GetInfo` are answered with `SetConfig` / `SetInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IpvsCmd {
    /// Add a virtual service (`IPVS_CMD_NEW_SERVICE`).
    NewService,
    /// Modify a virtual service (`IPVS_CMD_SET_SERVICE`).
    SetService,
    /// Delete a virtual service (`IPVS_CMD_DEL_SERVICE`).
    DelService,
    /// Get one service, or dump all with `NLM_F_DUMP` (`IPVS_CMD_GET_SERVICE`).
    GetService,
    /// Add a destination (`IPVS_CMD_NEW_DEST`).
    NewDest,
    /// Modify a destination (`IPVS_CMD_SET_DEST`).
    SetDest,
    /// Delete a destination (`IPVS_CMD_DEL_DEST`).
    DelDest,
    /// Dump the destinations of a service (`IPVS_CMD_GET_DEST`).
    GetDest,
    /// Set the tcp / tcpfin / udp timeouts (`IPVS_CMD_SET_CONFIG`).
    SetConfig,
    /// Get the timeouts (`IPVS_CMD_GET_CONFIG`).
    GetConfig,
    /// Reply to `GetInfo` (`IPVS_CMD_SET_INFO`).
    SetInfo,
    /// Get the IPVS version and connection table size (`IPVS_CMD_GET_INFO`).
    GetInfo,
    /// Zero all counters (`IPVS_CMD_ZERO`).
    Zero,
    /// Delete every service and destination (`IPVS_CMD_FLUSH`).
    Flush,
    /// A command this codec does not know.
    Other(u8),
}

impl From<IpvsCmd> for u8 {
    fn from(c: IpvsCmd) -> u8 {
        match c {
            IpvsCmd::NewService => IPVS_CMD_NEW_SERVICE,
            IpvsCmd::SetService => IPVS_CMD_SET_SERVICE,
            IpvsCmd::DelService => IPVS_CMD_DEL_SERVICE,
            IpvsCmd::GetService => IPVS_CMD_GET_SERVICE,
            IpvsCmd::NewDest => IPVS_CMD_NEW_DEST,
            IpvsCmd::SetDest => IPVS_CMD_SET_DEST,
            IpvsCmd::DelDest => IPVS_CMD_DEL_DEST,
            IpvsCmd::GetDest => IPVS_CMD_GET_DEST,
            IpvsCmd::SetConfig => IPVS_CMD_SET_CONFIG,
            IpvsCmd::GetConfig => IPVS_CMD_GET_CONFIG,
            IpvsCmd::SetInfo => IPVS_CMD_SET_INFO,
            IpvsCmd::GetInfo => IPVS_CMD_GET_INFO,
            IpvsCmd::Zero => IPVS_CMD_ZERO,
            IpvsCmd::Flush => IPVS_CMD_FLUSH,
            IpvsCmd::Other(n) => n,
        }
    }
}

impl From<u8> for IpvsCmd {
    fn from(n: u8) -> IpvsCmd {
        match n {
            IPVS_CMD_NEW_SERVICE => IpvsCmd::NewService,
            IPVS_CMD_SET_SERVICE => IpvsCmd::SetService,
            IPVS_CMD_DEL_SERVICE => IpvsCmd::DelService,
            IPVS_CMD_GET_SERVICE => IpvsCmd::GetService,
            IPVS_CMD_NEW_DEST => IpvsCmd::NewDest,
            IPVS_CMD_SET_DEST => IpvsCmd::SetDest,
            IPVS_CMD_DEL_DEST => IpvsCmd::DelDest,
            IPVS_CMD_GET_DEST => IpvsCmd::GetDest,
            IPVS_CMD_SET_CONFIG => IpvsCmd::SetConfig,
            IPVS_CMD_GET_CONFIG => IpvsCmd::GetConfig,
            IPVS_CMD_SET_INFO => IpvsCmd::SetInfo,
            IPVS_CMD_GET_INFO => IpvsCmd::GetInfo,
            IPVS_CMD_ZERO => IpvsCmd::Zero,
            IPVS_CMD_FLUSH => IpvsCmd::Flush,
            n => IpvsCmd::Other(n),
        }
    }
}

impl fmt::Display for IpvsCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpvsCmd::Other(n) => write!(f, "IPVS_CMD_{n}"),
            c => write!(f, "{c:?}"),
        }
    }
}
