//! Codec tests: golden bytes captured from ipvsadm against a real kernel, and a property
//! that every message survives emit → parse.

mod golden;
mod props;

use netlink_packet_core::{Emitable, ParseableParametrized};
use netlink_packet_generic::GenlHeader;

use super::IpvsMessage;

/// Decodes a hex string (whitespace ignored).
pub(super) fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Splits a captured generic netlink payload (genlmsghdr + attributes) and parses it.
pub(super) fn parse_genl(raw: &[u8]) -> IpvsMessage {
    let header = GenlHeader {
        cmd: raw[0],
        version: raw[1],
    };
    assert_eq!(raw[1], 1, "IPVS_GENL_VERSION");
    IpvsMessage::parse_with_param(&raw[4..], header).expect("golden bytes parse")
}

/// Emits a message's attributes (without the genl header).
pub(super) fn emit(msg: &IpvsMessage) -> Vec<u8> {
    let mut buf = vec![0; msg.buffer_len()];
    msg.emit(&mut buf);
    buf
}
