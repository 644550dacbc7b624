//! Synthetic clusters for benchmarks (feature `testing`): `n` ClusterIP services with
//! `k` ready endpoints each, IPv4.

use std::net::{IpAddr, Ipv4Addr};

use kproxy_core::model::{
    Endpoint, EndpointConditions, EndpointSlice, IpFamily, ObjectRef, Protocol, Service,
    ServicePortSpec, ServiceType, SlicePort, TrafficPolicy,
};
use kproxy_core::{BuildOptions, NodeFacts, Object, ServiceMap, Snapshot};

/// The node the synthetic cluster is built for.
pub const NODE: &str = "bench-node";

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

/// Service `i`: cluster IP 10.96.0.0/12 + i, port 80, NodePort for every tenth.
pub fn service(i: usize) -> Service {
    let i32_ = u32::try_from(i).unwrap_or(u32::MAX);
    Service {
        id: ObjectRef::new("bench", format!("svc-{i}")),
        service_type: if i.is_multiple_of(10) {
            ServiceType::NodePort
        } else {
            ServiceType::ClusterIP
        },
        cluster_ips: vec![ip(0x0a60_0000 + i32_)],
        ports: vec![ServicePortSpec {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: (i.is_multiple_of(10))
                .then(|| 30000 + u16::try_from(i / 10 % 2700).unwrap_or(0)),
        }],
        external_ips: vec![],
        load_balancer_ingress: vec![],
        load_balancer_source_ranges: vec![],
        external_traffic_policy: TrafficPolicy::Cluster,
        internal_traffic_policy: TrafficPolicy::Cluster,
        session_affinity: None,
        health_check_node_port: None,
    }
}

/// The slice of service `i` with `k` endpoints in 10.128.0.0/9, generation `g` (a
/// different `g` moves the last endpoint).
pub fn slice(i: usize, k: usize, g: u32) -> EndpointSlice {
    let base = 0x0a80_0000 + u32::try_from(i * k).unwrap_or(0) * 2;
    EndpointSlice {
        id: ObjectRef::new("bench", format!("svc-{i}-1")),
        service: ObjectRef::new("bench", format!("svc-{i}")),
        family: IpFamily::V4,
        ports: vec![SlicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 8080,
        }],
        endpoints: (0..k)
            .map(|j| Endpoint {
                address: ip(base + u32::try_from(j).unwrap_or(0) + if j + 1 == k { g } else { 0 }),
                conditions: EndpointConditions::default(),
                node_name: Some(if j.is_multiple_of(2) {
                    NODE.into()
                } else {
                    "other".into()
                }),
                zone: None,
                zone_hints: vec![],
                node_hints: vec![],
            })
            .collect(),
        last_change_trigger_time: None,
    }
}

/// A snapshot of `n` services with `k` endpoints each.
pub fn snapshot(n: usize, k: usize) -> Snapshot {
    let mut s = Snapshot::new();
    for i in 0..n {
        s.apply(Object::Service(service(i)));
        s.apply(Object::EndpointSlice(slice(i, k, 0)));
    }
    s
}

/// The map of a snapshot for [`NODE`].
pub fn map(s: &Snapshot) -> ServiceMap {
    ServiceMap::build(s, &BuildOptions::for_node(NODE))
}

/// The node's facts: 10.240.0.1 plus loopback.
pub fn node() -> NodeFacts {
    NodeFacts {
        name: NODE.into(),
        node_ips: vec![ip(0x0af0_0001)],
        local_addresses: vec![ip(0x0af0_0001), IpAddr::V4(Ipv4Addr::LOCALHOST)],
        pod_cidrs: vec![],
    }
}
