//! Proptest strategies for generated clusters and event sequences, shared by every
//! backend's property tests (feature `testing`).
//!
//! Names, IPs and ports come from small pools so that generated objects collide often:
//! the same endpoint in two slices, a slice for a missing service, a node hinted by name.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use crate::model::{
    Endpoint, EndpointConditions, EndpointSlice, IpFamily, LoadBalancerIngress, Node, ObjectRef,
    Protocol, Service, ServicePortSpec, ServiceType, SessionAffinity, SlicePort, TrafficPolicy,
};
use crate::snapshot::{Object, ObjectKey, Snapshot};
use crate::tracker::Event;

/// Node names the strategies use; `NODES[0]` is the node the tests build maps for.
pub const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// Zones the strategies use.
pub const ZONES: [&str; 3] = ["zone-1", "zone-2", "zone-3"];
const NAMESPACES: [&str; 2] = ["default", "kube-system"];
const PORT_NAMES: [&str; 3] = ["", "http", "dns"];

/// A service id from a small pool.
pub fn arb_service_id() -> impl Strategy<Value = ObjectRef> {
    (0..NAMESPACES.len(), 0u8..6)
        .prop_map(|(ns, n)| ObjectRef::new(NAMESPACES[ns], format!("svc-{n}")))
}

/// A protocol.
pub fn arb_protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![4 => Just(Protocol::Tcp), 3 => Just(Protocol::Udp), 1 => Just(Protocol::Sctp)]
}

fn ip_in(family: IpFamily, net: u8, host: u8) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::new(10, net, 0, host)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            u16::from(net),
            0,
            0,
            0,
            0,
            0,
            u16::from(host),
        )),
    }
}

/// A family, IPv4 three times as often.
pub fn arb_family() -> impl Strategy<Value = IpFamily> {
    prop_oneof![3 => Just(IpFamily::V4), 1 => Just(IpFamily::V6)]
}

fn arb_policy() -> impl Strategy<Value = TrafficPolicy> {
    prop_oneof![3 => Just(TrafficPolicy::Cluster), 1 => Just(TrafficPolicy::Local)]
}

/// A Service for `id`: cluster IPs derived from the id (so distinct services never share
/// one), random type, ports, policies, affinity, external and LB IPs.
pub fn arb_service_for(id: ObjectRef) -> impl Strategy<Value = Service> {
    let seed = id.name.bytes().fold(0u8, |a, b| a.wrapping_add(b))
        ^ if id.namespace == "default" { 0 } else { 100 };
    (
        prop_oneof![Just(ServiceType::ClusterIP), Just(ServiceType::NodePort), Just(ServiceType::LoadBalancer)],
        prop_oneof![2 => Just(vec![IpFamily::V4]), 1 => Just(vec![IpFamily::V6]), 1 => Just(vec![IpFamily::V4, IpFamily::V6])],
        vec((0..PORT_NAMES.len(), arb_protocol(), 1u16..4, option::of(30000u16..30004)), 1..3),
        vec((arb_family(), 0u8..3), 0..2),
        vec((arb_family(), 0u8..3, any::<bool>()), 0..2),
        vec((arb_family(), 0u8..2), 0..2),
        (arb_policy(), arb_policy()),
        option::of(prop_oneof![Just(10u32), Just(10800u32)]),
        option::of(32000u16..32003),
    )
        .prop_map(move |(service_type, fams, ports, ext, lb, ranges, (etp, itp), aff, hc)| {
            let mut specs: Vec<ServicePortSpec> = Vec::new();
            for (n, protocol, port, node_port) in ports {
                let name = PORT_NAMES[n].to_owned();
                if specs.iter().any(|s| s.name == name && s.protocol == protocol) {
                    continue;
                }
                specs.push(ServicePortSpec { name, protocol, port: port * 80, node_port });
            }
            Service {
                id: id.clone(),
                service_type,
                cluster_ips: fams.iter().map(|f| ip_in(*f, 96, seed)).collect(),
                ports: specs,
                external_ips: ext.into_iter().map(|(f, h)| ip_in(f, 200, h)).collect(),
                load_balancer_ingress: lb
                    .into_iter()
                    .map(|(f, h, proxy_mode)| LoadBalancerIngress { ip: ip_in(f, 201, h), proxy_mode })
                    .collect(),
                load_balancer_source_ranges: ranges
                    .into_iter()
                    .map(|(f, n)| match f {
                        IpFamily::V4 => IpNet::new(IpAddr::V4(Ipv4Addr::new(192, 168, n, 0)), 24),
                        IpFamily::V6 => IpNet::new(IpAddr::V6(Ipv6Addr::new(0xfd99, u16::from(n), 0, 0, 0, 0, 0, 0)), 64),
                    }
                    .expect("prefix lengths here are valid"))
                    .collect(),
                external_traffic_policy: etp,
                internal_traffic_policy: itp,
                session_affinity: aff.map(|timeout_seconds| SessionAffinity { timeout_seconds }),
                health_check_node_port: hc,
            }
        })
}

/// A Service with an id from the pool.
pub fn arb_service() -> impl Strategy<Value = Service> {
    arb_service_id().prop_flat_map(arb_service_for)
}

fn arb_conditions() -> impl Strategy<Value = EndpointConditions> {
    prop_oneof![
        4 => Just(EndpointConditions { ready: true, serving: true, terminating: false }),
        1 => Just(EndpointConditions { ready: false, serving: false, terminating: false }),
        1 => Just(EndpointConditions { ready: false, serving: true, terminating: true }),
        1 => Just(EndpointConditions { ready: false, serving: false, terminating: true }),
    ]
}

fn arb_endpoint(family: IpFamily) -> impl Strategy<Value = Endpoint> {
    (
        0u8..8,
        arb_conditions(),
        option::weighted(0.9, 0..NODES.len()),
        option::of(0..ZONES.len()),
        vec(0..ZONES.len(), 0..2),
        vec(0..NODES.len(), 0..2),
    )
        .prop_map(move |(host, conditions, node, zone, zh, nh)| Endpoint {
            address: ip_in(family, 1, host + 1),
            conditions,
            node_name: node.map(|n| NODES[n].to_owned()),
            zone: zone.map(|z| ZONES[z].to_owned()),
            zone_hints: zh.into_iter().map(|z| ZONES[z].to_owned()).collect(),
            node_hints: nh.into_iter().map(|n| NODES[n].to_owned()).collect(),
        })
}

/// An EndpointSlice for a service from the pool.
pub fn arb_slice() -> impl Strategy<Value = EndpointSlice> {
    (arb_service_id(), 0u8..3, arb_family()).prop_flat_map(|(service, n, family)| {
        (
            vec((0..PORT_NAMES.len(), arb_protocol(), 1u16..4), 0..3),
            vec(arb_endpoint(family), 0..5),
            Just((service, n, family)),
        )
            .prop_map(|(ports, endpoints, (service, n, family))| EndpointSlice {
                id: ObjectRef::new(service.namespace.clone(), format!("{}-{n}", service.name)),
                service,
                family,
                ports: ports
                    .into_iter()
                    .map(|(p, protocol, port)| SlicePort {
                        name: PORT_NAMES[p].to_owned(),
                        protocol,
                        port: 8000 + port,
                    })
                    .collect(),
                endpoints,
                last_change_trigger_time: None,
            })
    })
}

/// A Node from the pool, with a random zone.
pub fn arb_node() -> impl Strategy<Value = Node> {
    (0..NODES.len(), option::weighted(0.8, 0..ZONES.len())).prop_map(|(n, z)| Node {
        name: NODES[n].to_owned(),
        labels: z
            .map(|z| (Node::ZONE_LABEL.to_owned(), ZONES[z].to_owned()))
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        addresses: vec![IpAddr::V4(Ipv4Addr::new(172, 18, 0, n as u8 + 2))],
        pod_cidrs: Vec::new(),
        being_deleted: false,
    })
}

/// Any object.
pub fn arb_object() -> impl Strategy<Value = Object> {
    prop_oneof![
        3 => arb_service().prop_map(Object::Service),
        4 => arb_slice().prop_map(Object::EndpointSlice),
        1 => arb_node().prop_map(Object::Node),
    ]
}

/// A list of objects (later ones replace earlier ones with the same key).
pub fn arb_objects() -> impl Strategy<Value = Vec<Object>> {
    vec(arb_object(), 0..24)
}

/// A snapshot of a generated cluster.
pub fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    arb_objects().prop_map(|objs| {
        let mut s = Snapshot::new();
        for o in objs {
            s.apply(o);
        }
        s
    })
}

/// One event: mostly applies, some deletes (of keys from the pools), rare resets.
pub fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        8 => arb_object().prop_map(Event::Apply),
        2 => arb_service_id().prop_map(|id| Event::Delete(ObjectKey::Service(id))),
        2 => (arb_service_id(), 0u8..3).prop_map(|(s, n)| Event::Delete(ObjectKey::EndpointSlice(ObjectRef::new(s.namespace, format!("{}-{n}", s.name))))),
        1 => (0..NODES.len()).prop_map(|n| Event::Delete(ObjectKey::Node(NODES[n].to_owned()))),
        1 => vec(arb_object(), 0..10).prop_map(Event::Reset),
    ]
}

/// A sequence of events.
pub fn arb_events() -> impl Strategy<Value = Vec<Event>> {
    vec(arb_event(), 0..30)
}

/// Applies events to a snapshot the simple way (the model the tracker is checked against).
pub fn apply_events(snapshot: &mut Snapshot, events: &[Event]) {
    for e in events {
        match e.clone() {
            Event::Apply(o) => {
                snapshot.apply(o);
            }
            Event::Delete(k) => {
                snapshot.delete(&k);
            }
            Event::Reset(objs) => {
                *snapshot = Snapshot::new();
                for o in objs {
                    snapshot.apply(o);
                }
            }
        }
    }
}
