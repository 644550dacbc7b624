//! The answers of `IPVS_CMD_GET_CONFIG` and `IPVS_CMD_GET_INFO`.

use super::message::{IpvsAttr, IpvsMessage};

/// IPVS timeouts and version, as `ipvsadm -L --timeout` and `ipvsadm --version` show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IpvsInfo {
    /// TCP established timeout, seconds (0 = unchanged when setting).
    pub tcp_timeout: u32,
    /// TCP FIN_WAIT timeout, seconds.
    pub tcp_fin_timeout: u32,
    /// UDP timeout, seconds.
    pub udp_timeout: u32,
    /// IPVS version, `0x010201` for 1.2.1 (from `GET_INFO`).
    pub version: u32,
    /// Connection table size (from `GET_INFO`).
    pub conn_tab_size: u32,
}

impl IpvsInfo {
    /// Folds the attributes of a `SET_CONFIG` or `SET_INFO` reply into `self`.
    pub fn absorb(&mut self, msg: &IpvsMessage) {
        for a in &msg.attrs {
            match a {
                IpvsAttr::TimeoutTcp(v) => self.tcp_timeout = *v,
                IpvsAttr::TimeoutTcpFin(v) => self.tcp_fin_timeout = *v,
                IpvsAttr::TimeoutUdp(v) => self.udp_timeout = *v,
                IpvsAttr::InfoVersion(v) => self.version = *v,
                IpvsAttr::InfoConnTabSize(v) => self.conn_tab_size = *v,
                _ => {}
            }
        }
    }

    /// The attributes of a `SET_CONFIG` request: only the non-zero timeouts, since the
    /// kernel treats a present 0 as "leave unchanged" anyway and upstream sends only the
    /// ones configured.
    pub fn timeout_attrs(&self) -> Vec<IpvsAttr> {
        let mut v = Vec::new();
        if self.tcp_timeout > 0 {
            v.push(IpvsAttr::TimeoutTcp(self.tcp_timeout));
        }
        if self.tcp_fin_timeout > 0 {
            v.push(IpvsAttr::TimeoutTcpFin(self.tcp_fin_timeout));
        }
        if self.udp_timeout > 0 {
            v.push(IpvsAttr::TimeoutUdp(self.udp_timeout));
        }
        v
    }
}
