//! Golden bytes. Source: `strace -f -s 4096 -xx -e trace=sendmsg,recvmsg` around
//! ipvsadm v1.31 (this host's binary) in the IPVS VM (`tools/ipvs-vm/run-in-vm.sh`,
//! Debian kernel 6.1.0-48-amd64), running
//!
//! ```sh
//! ipvsadm -A -t 10.96.0.10:80 -s rr
//! ipvsadm -a -t 10.96.0.10:80 -r 10.0.0.2:8080 -m -w 1
//! ipvsadm -A -u [fd00::10]:53 -s sh -b sh-port -p 60
//! ipvsadm --set 900 120 300
//! ipvsadm -Ln
//! ```
//!
//! Each constant is the netlink payload after the 16-byte `nlmsghdr` (family id 0x20 in
//! that boot): the 4-byte `genlmsghdr` {cmd, version 1, reserved}, then attributes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use kproxy_core::model::IpFamily;
use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage};
use netlink_packet_generic::GenlMessage;

use super::{emit, hex, parse_genl};
use crate::netlink::stats::{StatsCounter, StatsValue};
use crate::netlink::{
    DestAttr, Destination, FwdMethod, IpvsAttr, IpvsCmd, IpvsInfo, IpvsMessage, IpvsProtocol,
    RawAddr, SVC_F_HASHED, SVC_F_PERSISTENT, SVC_F_SCHED2, Service, StatsAttr, SvcAttr, SvcFlags,
};

/// `ipvsadm -A -t 10.96.0.10:80 -s rr` → IPVS_CMD_NEW_SERVICE.
const NEW_SERVICE_V4: &str = "01010000 54000180 06000100 02000000 06000200 06000000
    14000300 0a60000a 00000000 00000000 00000000 06000400 00500000 07000600 72720000
    0c000700 00000000 ffffffff 08000800 00000000 08000900 ffffffff";

/// `ipvsadm -a -t 10.96.0.10:80 -r 10.0.0.2:8080 -m -w 1` → IPVS_CMD_NEW_DEST.
const NEW_DEST_V4: &str = "05010000 54000180 06000100 02000000 06000200 06000000
    14000300 0a60000a 00000000 00000000 00000000 06000400 00500000 05000600 00000000
    0c000700 00000000 ffffffff 08000800 00000000 08000900 ffffffff
    60000280 06000b00 02000000 14000100 0a000002 00000000 00000000 00000000
    06000200 1f900000 08000300 00000000 08000400 01000000 05000d00 00000000
    06000e00 00000000 06000f00 00000000 08000500 00000000 08000600 00000000";

/// `ipvsadm -A -u [fd00::10]:53 -s sh -b sh-port -p 60` → IPVS_CMD_NEW_SERVICE, with
/// flags PERSISTENT|SCHED2 and the IPv6 netmask 128 in host order.
const NEW_SERVICE_V6: &str = "01010000 54000180 06000100 0a000000 06000200 11000000
    14000300 fd000000 00000000 00000000 00000010 06000400 00350000 07000600 73680000
    0c000700 11000000 ffffffff 08000800 3c000000 08000900 80000000";

/// `ipvsadm --set 900 120 300` → IPVS_CMD_SET_CONFIG.
const SET_CONFIG: &str = "0c010000 08000400 84030000 08000500 78000000 08000600 2c010000";

/// The kernel's answer to IPVS_CMD_GET_INFO: IPVS_CMD_SET_INFO, version 1.2.1, 4096.
const INFO_REPLY: &str = "0e010000 08000100 01020100 08000200 00100000";

/// `ipvsadm -Ln` dumps destinations with IPVS_CMD_GET_DEST naming the service.
const GET_DEST: &str = "08010000 30000180 06000100 02000000 06000200 06000000
    14000300 0a60000a 00000000 00000000 00000000 06000400 00500000";

/// The kernel's dump of the first service (no NLA_F_NESTED on its nests; HASHED set).
const SERVICE_DUMP_REPLY: &str = "01010000 2c010100 06000100 02000000 06000200 06000000
    14000300 0a60000a 00000000 00000000 00000000 06000400 00500000 07000600 72720000
    0c000700 02000000 ffffffff 08000800 00000000 08000900 ffffffff
    5c000a00 08000100 00000000 08000200 00000000 08000300 00000000 0c000400 00000000
    00000000 0c000500 00000000 00000000 08000600 00000000 08000700 00000000
    08000800 00000000 08000900 00000000 08000a00 00000000
    7c000c00 0c000100 00000000 00000000 0c000200 00000000 00000000 0c000300 00000000
    00000000 0c000400 00000000 00000000 0c000500 00000000 00000000 0c000600 00000000
    00000000 0c000700 00000000 00000000 0c000800 00000000 00000000 0c000900 00000000
    00000000 0c000a00 00000000 00000000";

/// The kernel's dump of the destination.
const DEST_DUMP_REPLY: &str = "05010000 50010200 14000100 0a000002 00000000 00000000
    00000000 06000200 1f900000 08000300 00000000 08000400 01000000 05000d00 00000000
    06000e00 00000000 06000f00 00000000 08000500 00000000 08000600 00000000
    08000700 00000000 08000800 00000000 08000900 00000000 06000b00 02000000
    5c000a00 08000100 00000000 08000200 00000000 08000300 00000000 0c000400 00000000
    00000000 0c000500 00000000 00000000 08000600 00000000 08000700 00000000
    08000800 00000000 08000900 00000000 08000a00 00000000
    7c000c00 0c000100 00000000 00000000 0c000200 00000000 00000000 0c000300 00000000
    00000000 0c000400 00000000 00000000 0c000500 00000000 00000000 0c000600 00000000
    00000000 0c000700 00000000 00000000 0c000800 00000000 00000000 0c000900 00000000
    00000000 0c000a00 00000000 00000000";

fn vip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10))
}

fn rr_service() -> Service {
    Service::new(IpvsProtocol::Tcp, vip(), 80, "rr")
}

#[test]
fn new_service_v4_matches_ipvsadm_both_ways() {
    let raw = hex(NEW_SERVICE_V4);
    let expected = IpvsMessage {
        cmd: IpvsCmd::NewService,
        attrs: vec![IpvsAttr::Service(rr_service().to_attrs())],
    };
    assert_eq!(parse_genl(&raw), expected);
    assert_eq!(emit(&expected), raw[4..]);
}

#[test]
fn new_service_v4_in_a_full_netlink_message_has_genl_version_1() {
    let payload = IpvsMessage {
        cmd: IpvsCmd::NewService,
        attrs: vec![IpvsAttr::Service(rr_service().to_attrs())],
    };
    let mut genl = GenlMessage::from_payload(payload);
    genl.set_resolved_family_id(0x20);
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    let mut msg = NetlinkMessage::new(header, genl.into());
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    // nlmsghdr: len 104, type 0x20, flags REQUEST|ACK, seq 0, pid 0; then the capture.
    assert_eq!(&buf[..8], &[104, 0, 0, 0, 0x20, 0, 5, 0]);
    assert_eq!(buf[16..], hex(NEW_SERVICE_V4));
}

#[test]
fn new_dest_matches_ipvsadm_both_ways() {
    let raw = hex(NEW_DEST_V4);
    let mut svc = rr_service();
    svc.scheduler.clear(); // ipvsadm sends an empty scheduler name with -a
    let dest = vec![
        DestAttr::AddrFamily(2),
        DestAttr::Addr(RawAddr::from_ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)))),
        DestAttr::Port(8080),
        DestAttr::FwdMethod(0),
        DestAttr::Weight(1),
        DestAttr::TunType(0),
        DestAttr::TunPort(0),
        DestAttr::TunFlags(0),
        DestAttr::UThresh(0),
        DestAttr::LThresh(0),
    ];
    let expected = IpvsMessage {
        cmd: IpvsCmd::NewDest,
        attrs: vec![IpvsAttr::Service(svc.to_attrs()), IpvsAttr::Dest(dest)],
    };
    assert_eq!(parse_genl(&raw), expected);
    assert_eq!(emit(&expected), raw[4..]);
}

#[test]
fn new_service_v6_persistent_sh_port_matches_ipvsadm() {
    let raw = hex(NEW_SERVICE_V6);
    let addr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x10));
    let mut svc = Service::new(IpvsProtocol::Udp, addr, 53, "sh");
    svc.flags = SVC_F_PERSISTENT | SVC_F_SCHED2;
    svc.timeout = 60;
    assert_eq!(svc.netmask, 128);
    let expected = IpvsMessage {
        cmd: IpvsCmd::NewService,
        attrs: vec![IpvsAttr::Service(svc.to_attrs())],
    };
    assert_eq!(parse_genl(&raw), expected);
    assert_eq!(emit(&expected), raw[4..]);
}

#[test]
fn set_config_matches_ipvsadm_set() {
    let raw = hex(SET_CONFIG);
    let info = IpvsInfo {
        tcp_timeout: 900,
        tcp_fin_timeout: 120,
        udp_timeout: 300,
        ..Default::default()
    };
    let expected = IpvsMessage {
        cmd: IpvsCmd::SetConfig,
        attrs: info.timeout_attrs(),
    };
    assert_eq!(parse_genl(&raw), expected);
    assert_eq!(emit(&expected), raw[4..]);
}

#[test]
fn info_reply_reads_version_and_table_size() {
    let msg = parse_genl(&hex(INFO_REPLY));
    assert_eq!(
        msg.attrs,
        vec![
            IpvsAttr::InfoVersion(0x010201),
            IpvsAttr::InfoConnTabSize(4096)
        ]
    );
    let mut info = IpvsInfo::default();
    info.absorb(&msg);
    assert_eq!((info.version, info.conn_tab_size), (0x010201, 4096));
}

#[test]
fn get_dest_request_is_the_service_id() {
    let raw = hex(GET_DEST);
    let expected = IpvsMessage {
        cmd: IpvsCmd::GetDest,
        attrs: vec![IpvsAttr::Service(rr_service().id_attrs())],
    };
    assert_eq!(parse_genl(&raw), expected);
    assert_eq!(emit(&expected), raw[4..]);
}

#[test]
fn service_dump_reply_parses_with_hashed_flag_and_stats() {
    let msg = parse_genl(&hex(SERVICE_DUMP_REPLY));
    let [IpvsAttr::Service(attrs)] = &msg.attrs[..] else {
        panic!("one service nest: {msg:?}")
    };
    assert!(attrs.contains(&SvcAttr::Flags(SvcFlags {
        flags: SVC_F_HASHED,
        mask: u32::MAX
    })));
    assert!(attrs.iter().any(|a| matches!(a, SvcAttr::Stats(s) if s.contains(&StatsAttr::Counter(StatsCounter::InBytes, StatsValue::U64(0))))));
    let svc = Service::from_attrs(attrs).unwrap();
    assert_eq!(svc.key(), rr_service().key());
    assert_eq!(svc.user_flags(), 0);
    assert!(svc.same_config(&rr_service()));
    assert_eq!(svc.stats.unwrap().conns, 0);
    // Emitting it again and parsing gives the same attributes (the nest flag differs).
    assert_eq!(
        parse_genl(&[&hex("01010000")[..], &emit(&msg)].concat()),
        msg
    );
}

#[test]
fn dest_dump_reply_parses_to_a_masq_destination() {
    let msg = parse_genl(&hex(DEST_DUMP_REPLY));
    let [IpvsAttr::Dest(attrs)] = &msg.attrs[..] else {
        panic!("one dest nest: {msg:?}")
    };
    let d = Destination::from_attrs(attrs, IpFamily::V4).unwrap();
    assert_eq!(
        d.socket_addr(),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 8080)
    );
    assert_eq!(
        (d.fwd_method, d.weight, d.connections()),
        (FwdMethod::Masq, 1, 0)
    );
    assert_eq!(d.stats, Some(Default::default()));
}

#[test]
fn short_port_is_an_error_naming_the_attribute() {
    // SERVICE nest whose PORT (type 4) carries 1 byte instead of 2:
    //   0c 00 01 80 | 05 00 04 00 50 00 00 00
    //   nest hdr    | len 5, PORT, 0x50, pad
    let raw = hex("01010000 0c000180 05000400 50000000");
    let header = netlink_packet_generic::GenlHeader { cmd: 1, version: 1 };
    let err =
        <IpvsMessage as netlink_packet_core::ParseableParametrized<[u8], _>>::parse_with_param(
            &raw[4..],
            header,
        )
        .unwrap_err();
    assert!(err.to_string().contains("IPVS_SVC_ATTR_PORT"), "{err}");
}

#[test]
fn service_without_af_is_an_error_naming_the_attribute() {
    let err = Service::from_attrs(&[SvcAttr::Port(80)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service: missing attribute IPVS_SVC_ATTR_AF"
    );
}
