//! Arbitrary messages survive emit → parse, and arbitrary bytes never panic the parser.

use netlink_packet_core::{DefaultNla, ParseableParametrized};
use netlink_packet_generic::GenlHeader;
use proptest::collection::vec;
use proptest::prelude::*;

use super::emit;
use crate::netlink::stats::{StatsCounter, StatsValue};
use crate::netlink::{
    DestAttr, IpvsAttr, IpvsCmd, IpvsMessage, RawAddr, StatsAttr, SvcAttr, SvcFlags,
};

fn arb_string() -> impl Strategy<Value = String> {
    "[a-z]{0,15}"
}

fn arb_addr() -> impl Strategy<Value = RawAddr> {
    prop_oneof![vec(any::<u8>(), 4..=4), vec(any::<u8>(), 16..=16)].prop_map(RawAddr)
}

fn arb_other(kinds: std::ops::Range<u16>) -> impl Strategy<Value = DefaultNla> {
    (kinds, vec(any::<u8>(), 0..12)).prop_map(|(k, v)| DefaultNla::new(k, v))
}

fn arb_stats() -> impl Strategy<Value = Vec<StatsAttr>> {
    let counters = [
        StatsCounter::Conns,
        StatsCounter::InPkts,
        StatsCounter::OutPkts,
        StatsCounter::InBytes,
        StatsCounter::OutBytes,
        StatsCounter::Cps,
        StatsCounter::InPps,
        StatsCounter::OutPps,
        StatsCounter::InBps,
        StatsCounter::OutBps,
    ];
    vec(
        prop_oneof![
            (0..10usize, any::<u32>())
                .prop_map(move |(i, v)| StatsAttr::Counter(counters[i], StatsValue::U32(v))),
            (0..10usize, any::<u64>())
                .prop_map(move |(i, v)| StatsAttr::Counter(counters[i], StatsValue::U64(v))),
            arb_other(11..40).prop_map(StatsAttr::Other),
        ],
        0..4,
    )
}

fn arb_svc_attr() -> impl Strategy<Value = SvcAttr> {
    prop_oneof![
        any::<u16>().prop_map(SvcAttr::Af),
        any::<u16>().prop_map(SvcAttr::Protocol),
        arb_addr().prop_map(SvcAttr::Addr),
        any::<u16>().prop_map(SvcAttr::Port),
        any::<u32>().prop_map(SvcAttr::Fwmark),
        arb_string().prop_map(SvcAttr::SchedName),
        (any::<u32>(), any::<u32>())
            .prop_map(|(flags, mask)| SvcAttr::Flags(SvcFlags { flags, mask })),
        any::<u32>().prop_map(SvcAttr::Timeout),
        any::<u32>().prop_map(SvcAttr::Netmask),
        arb_stats().prop_map(SvcAttr::Stats),
        arb_string().prop_map(SvcAttr::PeName),
        arb_stats().prop_map(SvcAttr::Stats64),
        arb_other(13..100).prop_map(SvcAttr::Other),
    ]
}

fn arb_dest_attr() -> impl Strategy<Value = DestAttr> {
    prop_oneof![
        arb_addr().prop_map(DestAttr::Addr),
        any::<u16>().prop_map(DestAttr::Port),
        any::<u32>().prop_map(DestAttr::FwdMethod),
        any::<u32>().prop_map(DestAttr::Weight),
        any::<u32>().prop_map(DestAttr::UThresh),
        any::<u32>().prop_map(DestAttr::LThresh),
        any::<u32>().prop_map(DestAttr::ActiveConns),
        any::<u32>().prop_map(DestAttr::InactConns),
        any::<u32>().prop_map(DestAttr::PersistConns),
        arb_stats().prop_map(DestAttr::Stats),
        any::<u16>().prop_map(DestAttr::AddrFamily),
        arb_stats().prop_map(DestAttr::Stats64),
        any::<u8>().prop_map(DestAttr::TunType),
        any::<u16>().prop_map(DestAttr::TunPort),
        any::<u16>().prop_map(DestAttr::TunFlags),
        arb_other(16..100).prop_map(DestAttr::Other),
    ]
}

fn arb_message() -> impl Strategy<Value = IpvsMessage> {
    prop_oneof![
        // Service and destination commands.
        (
            prop_oneof![
                Just(IpvsCmd::NewService),
                Just(IpvsCmd::SetService),
                Just(IpvsCmd::DelService),
                Just(IpvsCmd::GetService),
                Just(IpvsCmd::NewDest),
                Just(IpvsCmd::SetDest),
                Just(IpvsCmd::DelDest),
                Just(IpvsCmd::GetDest),
                Just(IpvsCmd::SetConfig),
                Just(IpvsCmd::Flush),
            ],
            vec(
                prop_oneof![
                    vec(arb_svc_attr(), 0..6).prop_map(IpvsAttr::Service),
                    vec(arb_dest_attr(), 0..6).prop_map(IpvsAttr::Dest),
                    any::<u32>().prop_map(IpvsAttr::TimeoutTcp),
                    any::<u32>().prop_map(IpvsAttr::TimeoutTcpFin),
                    any::<u32>().prop_map(IpvsAttr::TimeoutUdp),
                    arb_other(7..100).prop_map(IpvsAttr::Other),
                ],
                0..4,
            ),
        )
            .prop_map(|(cmd, attrs)| IpvsMessage { cmd, attrs }),
        // Info replies.
        vec(
            prop_oneof![
                any::<u32>().prop_map(IpvsAttr::InfoVersion),
                any::<u32>().prop_map(IpvsAttr::InfoConnTabSize),
            ],
            0..3,
        )
        .prop_map(|attrs| IpvsMessage {
            cmd: IpvsCmd::SetInfo,
            attrs
        }),
    ]
}

proptest! {
    /// Whatever we can build, we can read back unchanged.
    #[test]
    fn emit_then_parse_round_trips(msg in arb_message()) {
        let bytes = emit(&msg);
        let header = GenlHeader { cmd: msg.cmd.into(), version: 1 };
        let parsed = IpvsMessage::parse_with_param(&bytes[..], header).unwrap();
        prop_assert_eq!(parsed, msg);
    }

    /// Decoding never panics, whatever the bytes (the fuzz target's property).
    #[test]
    fn parse_never_panics(cmd in any::<u8>(), bytes in vec(any::<u8>(), 0..256)) {
        let _ = IpvsMessage::parse_with_param(&bytes[..], GenlHeader { cmd, version: 1 });
    }
}
