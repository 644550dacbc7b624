//! `map_build`: incremental change tracking against full map builds, over small
//! clusters derived from the input bytes with [`arbitrary`].
//!
//! Names, zones, nodes and addresses come from small pools (as in
//! `kproxy_core::testing`), so that generated objects collide: the same endpoint in two
//! slices, a slice for a missing service, a node hinted by name. Ports and session
//! timeouts are any value the converted model allows.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::{Arbitrary, Unstructured};
use ipnet::IpNet;
use kproxy_core::model::{
    Endpoint, EndpointConditions, EndpointSlice, IpFamily, LoadBalancerIngress, Node, ObjectRef,
    Protocol, Service, ServicePortSpec, ServiceType, SessionAffinity, SlicePort, TrafficPolicy,
};
use kproxy_core::snapshot::{Object, ObjectKey};
use kproxy_core::{BuildOptions, ChangeSet, ChangeTracker, Event, ServiceMap, Snapshot};

use crate::check;

const NAMESPACES: [&str; 2] = ["default", "kube-system"];
const SERVICES: [&str; 4] = ["svc-0", "svc-1", "svc-2", "svc-3"];
pub(crate) const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const ZONES: [&str; 3] = ["zone-1", "zone-2", "zone-3"];
const PORT_NAMES: [&str; 3] = ["", "http", "dns"];
/// Upper bounds that keep one input fast.
const MAX_EVENTS: usize = 40;
const MAX_ITEMS: usize = 6;

/// The whole input: which node the maps are built for, and a sequence of events.
#[derive(Debug, Arbitrary)]
struct ClusterInput {
    node: u8,
    prefer_same_node: bool,
    /// Bit `i % 64` set: commit (and compare) after event `i`.
    commit_mask: u64,
    events: Vec<EventInput>,
}

#[derive(Debug, Arbitrary)]
enum EventInput {
    Apply(ObjectInput),
    DeleteService(u8, u8),
    DeleteSlice(u8, u8, u8),
    DeleteNode(u8),
    Reset(Vec<ObjectInput>),
}

#[derive(Debug, Arbitrary)]
pub(crate) enum ObjectInput {
    Service(ServiceInput),
    Slice(SliceInput),
    Node(NodeInput),
}

#[derive(Debug, Arbitrary)]
pub(crate) struct ServiceInput {
    namespace: u8,
    name: u8,
    service_type: u8,
    /// Bit 0: IPv4 cluster IP, bit 1: IPv6 (neither: IPv4).
    families: u8,
    cluster_host: u8,
    ports: Vec<(u8, u8, u16, Option<u16>)>,
    external_ips: Vec<AddrInput>,
    load_balancer: Vec<(AddrInput, bool)>,
    source_ranges: Vec<(AddrInput, u8)>,
    external_local: bool,
    internal_local: bool,
    affinity: Option<u32>,
    health_check_node_port: Option<u16>,
}

#[derive(Debug, Arbitrary)]
pub(crate) struct SliceInput {
    namespace: u8,
    service: u8,
    index: u8,
    v6: bool,
    ports: Vec<(u8, u8, u16)>,
    endpoints: Vec<EndpointInput>,
}

#[derive(Debug, Arbitrary)]
pub(crate) struct EndpointInput {
    host: u8,
    ready: bool,
    serving: bool,
    terminating: bool,
    node: Option<u8>,
    zone: Option<u8>,
    zone_hints: Vec<u8>,
    node_hints: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
pub(crate) struct NodeInput {
    name: u8,
    zone: Option<u8>,
    being_deleted: bool,
}

/// An address: mostly from a small pool, sometimes any address of the family.
#[derive(Debug, Arbitrary)]
pub(crate) enum AddrInput {
    PoolV4(u8),
    PoolV6(u8),
    AnyV4(u32),
    AnyV6(u128),
}

pub(crate) fn pick<'a>(pool: &[&'a str], i: u8) -> &'a str {
    pool[usize::from(i) % pool.len()]
}

fn capped<T>(mut v: Vec<T>) -> Vec<T> {
    v.truncate(MAX_ITEMS);
    v
}

fn pool_ip(family: IpFamily, net: u8, host: u8) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::new(10, net, 0, host % 8 + 1)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            u16::from(net),
            0,
            0,
            0,
            0,
            0,
            u16::from(host % 8 + 1),
        )),
    }
}

impl AddrInput {
    fn ip(&self, net: u8) -> IpAddr {
        match *self {
            AddrInput::PoolV4(h) => pool_ip(IpFamily::V4, net, h),
            AddrInput::PoolV6(h) => pool_ip(IpFamily::V6, net, h),
            AddrInput::AnyV4(a) => IpAddr::V4(Ipv4Addr::from(a)),
            AddrInput::AnyV6(a) => IpAddr::V6(Ipv6Addr::from(a)),
        }
    }
}

fn protocol(i: u8) -> Protocol {
    [Protocol::Tcp, Protocol::Udp, Protocol::Sctp][usize::from(i) % 3]
}

fn service_id(namespace: u8, name: u8) -> ObjectRef {
    ObjectRef::new(pick(&NAMESPACES, namespace), pick(&SERVICES, name))
}

fn slice_id(namespace: u8, service: u8, index: u8) -> ObjectRef {
    let svc = service_id(namespace, service);
    ObjectRef::new(svc.namespace, format!("{}-{}", svc.name, index % 3))
}

impl ServiceInput {
    /// A Service as conversion would produce it: one cluster IP per family, unique
    /// (name, protocol) ports, ports 1..=65535, affinity 1..=86400 seconds.
    fn build(self) -> Service {
        let id = service_id(self.namespace, self.name);
        // Cluster IPs come from the id, so distinct services rarely share one; the
        // host byte lets two versions of one service differ.
        let net = 96 + (self.namespace % 2) * 4 + (self.name % 4);
        let mut cluster_ips = Vec::new();
        if self.families & 1 != 0 || self.families & 3 == 0 {
            cluster_ips.push(pool_ip(IpFamily::V4, net, self.cluster_host));
        }
        if self.families & 2 != 0 {
            cluster_ips.push(pool_ip(IpFamily::V6, net, self.cluster_host));
        }
        let mut ports: Vec<ServicePortSpec> = Vec::new();
        for (name, proto, port, node_port) in capped(self.ports) {
            let (name, protocol) = (pick(&PORT_NAMES, name).to_owned(), protocol(proto));
            if ports
                .iter()
                .any(|p| p.name == name && p.protocol == protocol)
            {
                continue;
            }
            ports.push(ServicePortSpec {
                name,
                protocol,
                port: port.max(1),
                node_port: node_port.filter(|&p| p != 0),
            });
        }
        if ports.is_empty() {
            ports.push(ServicePortSpec {
                name: String::new(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: None,
            });
        }
        let policy = |local| {
            if local {
                TrafficPolicy::Local
            } else {
                TrafficPolicy::Cluster
            }
        };
        Service {
            id,
            service_type: [
                ServiceType::ClusterIP,
                ServiceType::NodePort,
                ServiceType::LoadBalancer,
            ][usize::from(self.service_type) % 3],
            cluster_ips,
            ports,
            external_ips: capped(self.external_ips)
                .iter()
                .map(|a| a.ip(200))
                .collect(),
            load_balancer_ingress: capped(self.load_balancer)
                .iter()
                .map(|(a, proxy_mode)| LoadBalancerIngress {
                    ip: a.ip(201),
                    proxy_mode: *proxy_mode,
                })
                .collect(),
            load_balancer_source_ranges: capped(self.source_ranges)
                .iter()
                .map(|(a, len)| {
                    let ip = a.ip(168);
                    let max = if ip.is_ipv4() { 33 } else { 129 };
                    IpNet::new(ip, len % max)
                        .expect("prefix length is in range")
                        .trunc()
                })
                .collect(),
            external_traffic_policy: policy(self.external_local),
            internal_traffic_policy: policy(self.internal_local),
            session_affinity: self.affinity.map(|t| SessionAffinity {
                timeout_seconds: t % SessionAffinity::MAX_TIMEOUT_SECONDS + 1,
            }),
            health_check_node_port: self.health_check_node_port.filter(|&p| p != 0),
        }
    }
}

impl SliceInput {
    /// An EndpointSlice as conversion would produce it: endpoints of the slice's family.
    fn build(self) -> EndpointSlice {
        let family = if self.v6 { IpFamily::V6 } else { IpFamily::V4 };
        EndpointSlice {
            id: slice_id(self.namespace, self.service, self.index),
            service: service_id(self.namespace, self.service),
            family,
            ports: capped(self.ports)
                .into_iter()
                .map(|(name, proto, port)| SlicePort {
                    name: pick(&PORT_NAMES, name).to_owned(),
                    protocol: protocol(proto),
                    port: port.max(1),
                })
                .collect(),
            endpoints: capped(self.endpoints)
                .into_iter()
                .map(|e| Endpoint {
                    address: pool_ip(family, 1, e.host),
                    conditions: EndpointConditions {
                        ready: e.ready,
                        serving: e.serving,
                        terminating: e.terminating,
                    },
                    node_name: e.node.map(|n| pick(&NODES, n).to_owned()),
                    zone: e.zone.map(|z| pick(&ZONES, z).to_owned()),
                    zone_hints: capped(e.zone_hints)
                        .into_iter()
                        .map(|z| pick(&ZONES, z).to_owned())
                        .collect(),
                    node_hints: capped(e.node_hints)
                        .into_iter()
                        .map(|n| pick(&NODES, n).to_owned())
                        .collect(),
                })
                .collect(),
            last_change_trigger_time: None,
        }
    }
}

impl NodeInput {
    fn build(self) -> Node {
        let mut labels = BTreeMap::new();
        if let Some(z) = self.zone {
            labels.insert(Node::ZONE_LABEL.to_owned(), pick(&ZONES, z).to_owned());
        }
        Node {
            name: pick(&NODES, self.name).to_owned(),
            labels,
            addresses: vec![IpAddr::V4(Ipv4Addr::new(172, 18, 0, self.name % 3 + 2))],
            pod_cidrs: Vec::new(),
            being_deleted: self.being_deleted,
        }
    }
}

impl ObjectInput {
    pub(crate) fn build(self) -> Object {
        match self {
            ObjectInput::Service(s) => Object::Service(s.build()),
            ObjectInput::Slice(s) => Object::EndpointSlice(s.build()),
            ObjectInput::Node(n) => Object::Node(n.build()),
        }
    }
}

impl EventInput {
    fn build(self) -> Event {
        match self {
            EventInput::Apply(o) => Event::Apply(o.build()),
            EventInput::DeleteService(ns, n) => {
                Event::Delete(ObjectKey::Service(service_id(ns, n)))
            }
            EventInput::DeleteSlice(ns, s, i) => {
                Event::Delete(ObjectKey::EndpointSlice(slice_id(ns, s, i)))
            }
            EventInput::DeleteNode(n) => Event::Delete(ObjectKey::Node(pick(&NODES, n).to_owned())),
            EventInput::Reset(objects) => Event::Reset(
                capped(objects)
                    .into_iter()
                    .map(ObjectInput::build)
                    .collect(),
            ),
        }
    }
}

/// Applies one event to the model snapshot the simple way.
fn apply(model: &mut Snapshot, event: &Event) {
    match event.clone() {
        Event::Apply(o) => {
            model.apply(o);
        }
        Event::Delete(k) => {
            model.delete(&k);
        }
        Event::Reset(objects) => {
            *model = Snapshot::new();
            for o in objects {
                model.apply(o);
            }
        }
    }
}

/// Reads a small cluster history from `data` and feeds it, event by event, to a
/// [`ChangeTracker`] and to a plain [`Snapshot`]. At every commit the tracker's map must
/// equal [`ServiceMap::build`] of the snapshot, its change set must equal
/// [`ChangeSet::between`] the maps before and after, and every selection must be
/// eligible (ready, or serving-terminating as a fallback; local ones on this node).
pub fn map_build(data: &[u8]) {
    run(data);
}

/// The work of [`map_build`]; returns the final map, for the tests.
fn run(data: &[u8]) -> Option<ServiceMap> {
    let input = ClusterInput::arbitrary_take_rest(Unstructured::new(data)).ok()?;
    let opts = BuildOptions {
        node_name: pick(&NODES, input.node).to_owned(),
        prefer_same_node: input.prefer_same_node,
    };
    let mut tracker = ChangeTracker::new(opts.clone());
    let mut model = Snapshot::new();
    let mut events = input.events;
    events.truncate(MAX_EVENTS);
    for (i, e) in events.into_iter().enumerate() {
        let event = e.build();
        if let Event::Apply(o) = &event {
            check::object(o);
        }
        apply(&mut model, &event);
        tracker.apply(event);
        if input.commit_mask & (1 << (i % 64)) != 0 {
            commit_and_compare(&mut tracker, &model, &opts);
        }
    }
    commit_and_compare(&mut tracker, &model, &opts);
    assert_eq!(
        tracker.snapshot(),
        &model,
        "the tracker lost or kept an object"
    );
    assert!(!tracker.has_pending(), "a commit leaves nothing pending");
    Some(tracker.map().clone())
}

fn commit_and_compare(tracker: &mut ChangeTracker, model: &Snapshot, opts: &BuildOptions) {
    let before = tracker.map().clone();
    let changes = tracker.commit();
    let full = ServiceMap::build(model, opts);
    assert_eq!(
        tracker.map(),
        &full,
        "incremental map differs from a full build"
    );
    assert_eq!(
        changes,
        ChangeSet::between(&before, &full),
        "the change set is not the difference of the maps"
    );
    check::map(&full);
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::run;

    /// The seeds are random bytes; this checks they still decode into clusters worth
    /// fuzzing from (ports with selected endpoints), so the target is not vacuous.
    #[test]
    fn seeds_decode_into_maps_with_selected_endpoints() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus/map_build");
        let mut ports = 0;
        let mut selected = 0;
        for entry in fs::read_dir(dir).expect("corpus/map_build") {
            let data = fs::read(entry.expect("entry").path()).expect("seed");
            if let Some(map) = run(&data) {
                ports += map.len();
                selected += map
                    .iter()
                    .filter(|p| !p.selection.cluster.is_empty())
                    .count();
            }
        }
        eprintln!("map_build seeds: {ports} ports, {selected} with cluster endpoints");
        assert!(ports >= 3, "the seeds build only {ports} ports");
        assert!(selected >= 1, "no seed selects an endpoint");
    }
}
