//! Hostile objects: arbitrary strings and numbers in the fields kproxy reads (names with
//! quotes, newlines, spaces, `-j`, `#`, unicode; IPs with whitespace, zones, prefixes;
//! ports out of range, negative, beyond `i32`), fed as JSON through
//! [`objects_from_value`], the path every snapshot file and watch event takes.
//!
//! Each object either converts into values that keep what backends rely on (IPs parsed,
//! ports in 1..=65535, known protocols, one cluster IP per family, endpoints of the
//! slice's family, names carried through unchanged), or is rejected with an error that
//! names the object and one of the fields that were actually wrong. Also: a Service with
//! 100,000 endpoints builds, with the right selection.

use std::net::{IpAddr, SocketAddr};

use kproxy_core::model::{IpFamily, ObjectKind, ObjectRef, Protocol, ServicePortName};
use kproxy_core::snapshot::{Object, objects_from_value};
use kproxy_core::{BuildOptions, ChangeTracker, Error, Event, ServiceMap, Snapshot};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Strings that have broken proxies and rule generators, plus valid values.
const HOSTILE: &[&str] = &[
    "",
    " ",
    "a b",
    "a\"b",
    "a'b",
    "x\ny",
    "x\r\ny",
    "tab\there",
    "-j ACCEPT",
    "--comment",
    "# not a comment",
    "$(reboot)",
    "a/b",
    "a:b",
    "\u{0}",
    "\u{202e}evil",
    "ünïcödé",
    "\u{1f600}",
    "None",
    "TCP",
    "tcp",
    "TCP ",
    "10.0.0.1",
    " 10.0.0.1 ",
    "10.0.0.1\n",
    "010.0.0.1",
    "10.0.0",
    "256.0.0.1",
    "10.0.0.1/32",
    "::1",
    "::ffff:10.0.0.1",
    "fe80::1%eth0",
    "[::1]",
    "fd00::1/64",
];

const VALID_V4: &[&str] = &["10.96.0.1", "10.0.0.5", "192.168.1.1", " 10.0.0.7 "];
const VALID_V6: &[&str] = &["fd00::1", "2001:db8::5", "::ffff:10.0.0.1"];

fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(HOSTILE).prop_map(str::to_owned),
        2 => any::<String>(),
        2 => "[a-z0-9.-]{1,12}",
    ]
}

/// A namespace or name: hostile, or a plain DNS label.
fn object_name() -> impl Strategy<Value = String> {
    prop_oneof![2 => hostile(), 3 => "[a-z][a-z0-9-]{0,10}"]
}

fn ip_text(family: Option<IpFamily>) -> BoxedStrategy<String> {
    let v4 = prop::sample::select(VALID_V4).prop_map(str::to_owned);
    let v6 = prop::sample::select(VALID_V6).prop_map(str::to_owned);
    match family {
        Some(IpFamily::V4) => prop_oneof![3 => v4, 1 => hostile()].boxed(),
        Some(IpFamily::V6) => prop_oneof![3 => v6, 1 => hostile()].boxed(),
        None => prop_oneof![2 => v4, 2 => v6, 1 => hostile()].boxed(),
    }
}

/// A port number: valid, edge, negative, or beyond `i32` (which no API type can hold).
fn port_number() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => 1i64..=65535,
        1 => Just(0i64),
        1 => Just(65536i64),
        1 => -70000i64..0,
        1 => Just(i64::from(i32::MAX)),
        1 => Just(i64::from(i32::MAX) + 1),
        1 => Just(i64::MIN),
    ]
}

fn protocol_text() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        2 => Just(None),
        4 => prop::sample::select(&["TCP", "UDP", "SCTP"][..]).prop_map(|s| Some(s.to_owned())),
        1 => hostile().prop_map(Some),
    ]
}

fn ip_ok(s: &str) -> Option<IpAddr> {
    s.trim().parse().ok()
}

fn port_ok(p: i64) -> bool {
    (1..=65535).contains(&p)
}

fn protocol_ok(p: &Option<String>) -> Option<Protocol> {
    match p {
        None => Some(Protocol::Tcp),
        Some(p) => Protocol::from_api(p),
    }
}

/// Converts one document, which must yield at most one object or one error.
fn convert(doc: Value) -> Result<Option<Object>, Error> {
    let (mut objects, mut errors) = objects_from_value(1, doc).expect("the document has a kind");
    assert!(objects.len() + errors.len() <= 1, "{objects:?} {errors:?}");
    match (objects.pop(), errors.pop()) {
        (_, Some(e)) => Err(e),
        (o, None) => Ok(o),
    }
}

/// The error is about `kind` `ns/name`, names one of `fields` (the ones that were
/// wrong), and stays on one line: the object's name is printed escaped, so not even a
/// name with a newline can split a log line.
fn assert_names(e: &Error, kind: ObjectKind, ns: &str, name: &str, fields: &[String]) {
    let message = e.to_string();
    let Error::InvalidObject {
        kind: k,
        obj,
        field,
        reason,
    } = e
    else {
        panic!("not an object error: {e:?}");
    };
    assert_eq!(*k, kind, "{message}");
    assert_eq!(obj, &ObjectRef::new(ns, name), "{message}");
    assert!(!reason.is_empty(), "{message}");
    assert!(
        fields.contains(field),
        "error names {field:?}, but the wrong fields were {fields:?}: {message}"
    );
    assert!(message.contains(field.as_str()), "{message}");
    assert!(
        !message.chars().any(char::is_control),
        "an error message carries a control character: {message:?}"
    );
    assert!(message.contains(&obj.escaped().to_string()), "{message:?}");
}

// === Services ===

#[derive(Debug, Clone)]
struct SvcInput {
    ns: String,
    name: String,
    cluster_ip: String,
    ports: Vec<(String, i64, Option<String>, Option<i64>)>,
    external_ips: Vec<String>,
}

fn svc_input() -> impl Strategy<Value = SvcInput> {
    (
        object_name(),
        object_name(),
        ip_text(None),
        prop::collection::vec(
            (
                hostile(),
                port_number(),
                protocol_text(),
                prop::option::of(port_number()),
            ),
            1..4,
        ),
        prop::collection::vec(ip_text(None), 0..3),
    )
        .prop_map(|(ns, name, cluster_ip, ports, external_ips)| SvcInput {
            ns,
            name,
            cluster_ip,
            // Port names are made unique, so that only the values under test can fail.
            ports: ports
                .into_iter()
                .enumerate()
                .map(|(i, (n, p, proto, np))| (format!("{n}{i}"), p, proto, np))
                .collect(),
            external_ips,
        })
}

impl SvcInput {
    fn json(&self) -> Value {
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|(name, port, proto, node_port)| {
                let mut p = json!({ "name": name, "port": port });
                if let Some(proto) = proto {
                    p["protocol"] = json!(proto);
                }
                if let Some(np) = node_port {
                    p["nodePort"] = json!(np);
                }
                p
            })
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "namespace": self.ns, "name": self.name },
            "spec": {
                "type": "NodePort",
                "clusterIP": self.cluster_ip,
                "ports": ports,
                "externalIPs": self.external_ips,
            },
        })
    }

    /// The fields that are wrong, as the converter names them.
    fn wrong_fields(&self) -> Vec<String> {
        let mut wrong = Vec::new();
        if self.name.is_empty() {
            wrong.push("metadata.name".to_owned());
        }
        if self.ns.is_empty() {
            wrong.push("metadata.namespace".to_owned());
        }
        if ip_ok(&self.cluster_ip).is_none() {
            wrong.push("spec.clusterIP".to_owned());
        }
        for (i, (_, port, proto, node_port)) in self.ports.iter().enumerate() {
            let beyond_i32 = |p: i64| i32::try_from(p).is_err();
            if beyond_i32(*port) || node_port.is_some_and(beyond_i32) {
                wrong.push("(object)".to_owned());
            }
            if !port_ok(*port) {
                wrong.push(format!("spec.ports[{i}].port"));
            }
            if node_port.is_some_and(|n| n != 0 && !port_ok(n)) {
                wrong.push(format!("spec.ports[{i}].nodePort"));
            }
            if protocol_ok(proto).is_none() {
                wrong.push(format!("spec.ports[{i}].protocol"));
            }
        }
        for (i, ip) in self.external_ips.iter().enumerate() {
            if ip_ok(ip).is_none() {
                wrong.push(format!("spec.externalIPs[{i}]"));
            }
        }
        wrong
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A Service is rejected naming one of its wrong fields, skipped as headless, or
    /// converted with every value parsed and every name carried through unchanged.
    #[test]
    fn hostile_services_are_rejected_by_field_or_convert_cleanly(input in svc_input()) {
        let wrong = input.wrong_fields();
        let headless = input.cluster_ip.is_empty() || input.cluster_ip == "None";
        match convert(input.json()) {
            Err(e) => {
                prop_assert!(!wrong.is_empty(), "a valid service was rejected: {e}");
                assert_names(&e, ObjectKind::Service, &input.ns, &input.name, &wrong);
            }
            Ok(None) => {
                prop_assert!(headless, "a non-headless service was skipped: {input:?}");
            }
            Ok(Some(Object::Service(svc))) => {
                prop_assert!(wrong.is_empty(), "accepted with wrong fields {wrong:?}: {svc:?}");
                prop_assert_eq!(&svc.id, &ObjectRef::new(&input.ns, &input.name));
                prop_assert_eq!(svc.cluster_ips.clone(), vec![ip_ok(&input.cluster_ip).unwrap()]);
                prop_assert_eq!(svc.ports.len(), input.ports.len());
                for (spec, (name, port, proto, node_port)) in svc.ports.iter().zip(&input.ports) {
                    prop_assert_eq!(&spec.name, name, "port names are carried through unchanged");
                    prop_assert_eq!(i64::from(spec.port), *port);
                    prop_assert!(spec.port >= 1);
                    prop_assert_eq!(Some(spec.protocol), protocol_ok(proto));
                    prop_assert_eq!(spec.node_port.map(i64::from), node_port.filter(|&n| n != 0));
                }
                let ext: Vec<IpAddr> = input.external_ips.iter().map(|s| ip_ok(s).unwrap()).collect();
                prop_assert_eq!(&svc.external_ips, &ext);
                // The map built from it names ports exactly, whatever their characters.
                let mut snap = Snapshot::new();
                snap.apply(Object::Service(svc.clone()));
                let map = ServiceMap::build(&snap, &BuildOptions::for_node("n"));
                for spec in &svc.ports {
                    let key = ServicePortName::new(svc.id.clone(), spec.name.clone(), spec.protocol);
                    let fam = IpFamily::of(&svc.cluster_ips[0]);
                    prop_assert!(map.get(fam, &key).is_some(), "no port {key}");
                }
            }
            Ok(Some(other)) => prop_assert!(false, "a Service became {other:?}"),
        }
    }
}

// === EndpointSlices ===

/// One endpoint: its addresses, `ready`, `terminating` and `nodeName`.
type EndpointInput = (Vec<String>, Option<bool>, Option<bool>, Option<String>);

#[derive(Debug, Clone)]
struct SliceInput {
    ns: String,
    name: String,
    service: String,
    address_type: String,
    ports: Vec<(Option<String>, Option<i64>, Option<String>)>,
    endpoints: Vec<EndpointInput>,
}

fn slice_input() -> impl Strategy<Value = SliceInput> {
    let address_type = prop_oneof![
        4 => prop::sample::select(&["IPv4", "IPv6"][..]).prop_map(str::to_owned),
        1 => Just("FQDN".to_owned()),
        1 => hostile(),
    ];
    (object_name(), object_name(), object_name(), address_type).prop_flat_map(
        |(ns, name, service, address_type)| {
            let family = IpFamily::from_api(&address_type);
            (
                prop::collection::vec(
                    (
                        prop::option::weighted(0.9, hostile()),
                        prop::option::weighted(0.9, port_number()),
                        protocol_text(),
                    ),
                    0..3,
                ),
                prop::collection::vec(
                    (
                        prop::collection::vec(ip_text(family), 0..3),
                        any::<Option<bool>>(),
                        any::<Option<bool>>(),
                        prop::option::of(hostile()),
                    ),
                    0..5,
                ),
            )
                .prop_map(move |(ports, endpoints)| SliceInput {
                    ns: ns.clone(),
                    name: name.clone(),
                    service: service.clone(),
                    address_type: address_type.clone(),
                    ports,
                    endpoints,
                })
        },
    )
}

impl SliceInput {
    fn json(&self) -> Value {
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|(name, port, proto)| json!({ "name": name, "port": port, "protocol": proto }))
            .collect();
        let endpoints: Vec<Value> = self
            .endpoints
            .iter()
            .map(|(addresses, ready, terminating, node)| {
                json!({
                    "addresses": addresses,
                    "conditions": { "ready": ready, "terminating": terminating },
                    "nodeName": node,
                })
            })
            .collect();
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "namespace": self.ns,
                "name": self.name,
                "labels": { "kubernetes.io/service-name": self.service },
            },
            "addressType": self.address_type,
            "ports": ports,
            "endpoints": endpoints,
        })
    }

    fn family(&self) -> Option<IpFamily> {
        IpFamily::from_api(&self.address_type)
    }

    fn wrong_fields(&self) -> Vec<String> {
        let mut wrong = Vec::new();
        if self.name.is_empty() {
            wrong.push("metadata.name".to_owned());
        }
        if self.ns.is_empty() {
            wrong.push("metadata.namespace".to_owned());
        }
        if self.family().is_none() && self.address_type != "FQDN" {
            wrong.push("addressType".to_owned());
        }
        if self.service.is_empty() {
            wrong.push("metadata.labels[kubernetes.io/service-name]".to_owned());
        }
        for (i, (name, port, proto)) in self.ports.iter().enumerate() {
            if port.is_some_and(|p| i32::try_from(p).is_err()) {
                wrong.push("(object)".to_owned());
            }
            if name.is_none() || port.is_none() {
                continue; // skipped, as upstream does
            }
            if protocol_ok(proto).is_none() {
                wrong.push(format!("ports[{i}].protocol"));
            }
            if !port.is_some_and(port_ok) {
                wrong.push(format!("ports[{i}].port"));
            }
        }
        for (i, (addresses, ..)) in self.endpoints.iter().enumerate() {
            match addresses.first() {
                None => wrong.push(format!("endpoints[{i}].addresses")),
                Some(a) => match ip_ok(a) {
                    Some(ip) if Some(IpFamily::of(&ip)) == self.family() => {}
                    _ => wrong.push(format!("endpoints[{i}].addresses[0]")),
                },
            }
        }
        wrong
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// An EndpointSlice is rejected naming one of its wrong fields, skipped (FQDN), or
    /// converted with every endpoint address parsed, of the slice's family, and the
    /// API's nil-condition defaults applied.
    #[test]
    fn hostile_slices_are_rejected_by_field_or_convert_cleanly(input in slice_input()) {
        let wrong = input.wrong_fields();
        match convert(input.json()) {
            Err(e) => {
                prop_assert!(!wrong.is_empty(), "a valid slice was rejected: {e}");
                assert_names(&e, ObjectKind::EndpointSlice, &input.ns, &input.name, &wrong);
            }
            Ok(None) => prop_assert_eq!(&input.address_type, "FQDN"),
            Ok(Some(Object::EndpointSlice(slice))) => {
                prop_assert!(wrong.is_empty(), "accepted with wrong fields {wrong:?}: {slice:?}");
                prop_assert_eq!(Some(slice.family), input.family());
                prop_assert_eq!(&slice.service, &ObjectRef::new(&input.ns, &input.service));
                let kept: Vec<_> = input.ports.iter().filter(|(n, p, _)| n.is_some() && p.is_some()).collect();
                prop_assert_eq!(slice.ports.len(), kept.len());
                for (sp, (name, port, _)) in slice.ports.iter().zip(kept) {
                    prop_assert_eq!(Some(&sp.name), name.as_ref());
                    prop_assert_eq!(Some(i64::from(sp.port)), *port);
                }
                prop_assert_eq!(slice.endpoints.len(), input.endpoints.len());
                for (ep, (addresses, ready, terminating, node)) in slice.endpoints.iter().zip(&input.endpoints) {
                    prop_assert_eq!(Some(ep.address), ip_ok(&addresses[0]));
                    prop_assert_eq!(IpFamily::of(&ep.address), slice.family);
                    prop_assert_eq!(ep.conditions.ready, ready.unwrap_or(true));
                    prop_assert_eq!(ep.conditions.terminating, terminating.unwrap_or(false));
                    prop_assert_eq!(ep.node_name.as_ref(), node.as_ref().filter(|n| !n.is_empty()));
                }
            }
            Ok(Some(other)) => prop_assert!(false, "a slice became {other:?}"),
        }
    }
}

// === Nodes ===

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A Node is rejected naming a wrong address or CIDR, or keeps exactly its parsed
    /// InternalIP then ExternalIP addresses, without duplicates.
    #[test]
    fn hostile_nodes_are_rejected_by_field_or_convert_cleanly(
        name in object_name(),
        addresses in prop::collection::vec(
            (prop_oneof![
                Just("InternalIP".to_owned()), Just("ExternalIP".to_owned()),
                Just("Hostname".to_owned()), hostile()
            ], ip_text(None)),
            0..4,
        ),
        pod_cidr in prop_oneof![Just("10.244.1.0/24".to_owned()), Just("fd00:1::/64".to_owned()), hostile()],
    ) {
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": { "name": name },
            "spec": { "podCIDR": pod_cidr },
            "status": { "addresses": addresses.iter().map(|(t, a)| json!({"type": t, "address": a})).collect::<Vec<_>>() },
        });
        let mut wrong = Vec::new();
        if name.is_empty() {
            wrong.push("metadata.name".to_owned());
        }
        for (i, (t, a)) in addresses.iter().enumerate() {
            if (t == "InternalIP" || t == "ExternalIP") && ip_ok(a).is_none() {
                wrong.push(format!("status.addresses[{i}].address"));
            }
        }
        if pod_cidr.trim().parse::<ipnet::IpNet>().is_err() {
            wrong.push("spec.podCIDR".to_owned());
        }
        match convert(doc) {
            Err(e) => {
                prop_assert!(!wrong.is_empty(), "a valid node was rejected: {e}");
                assert_names(&e, ObjectKind::Node, "", &name, &wrong);
            }
            Ok(Some(Object::Node(node))) => {
                prop_assert!(wrong.is_empty(), "accepted with wrong fields {wrong:?}: {node:?}");
                let mut want: Vec<IpAddr> = Vec::new();
                for kind in ["InternalIP", "ExternalIP"] {
                    for (t, a) in &addresses {
                        let ip = ip_ok(a).unwrap_or_else(|| IpAddr::from([0, 0, 0, 0]));
                        if t == kind && !want.contains(&ip) {
                            want.push(ip);
                        }
                    }
                }
                prop_assert_eq!(&node.addresses, &want);
                prop_assert_eq!(node.pod_cidrs.len(), 1);
            }
            other => prop_assert!(false, "a Node became {other:?}"),
        }
    }
}

// === Scale ===

/// One Service with 100,000 endpoints (100 slices of 1,000, as the EndpointSlice
/// controller splits them) converts and builds; every tenth endpoint is not ready and
/// one in a hundred runs on this node. No time is asserted: this catches quadratic work
/// and runaway memory as a test that never finishes.
#[test]
fn a_service_with_100_000_endpoints_builds_with_the_right_selection() {
    const SLICES: usize = 100;
    const PER_SLICE: usize = 1000;
    let node = "node-a";
    let service = json!({
        "kind": "Service",
        "metadata": { "name": "big", "namespace": "default" },
        "spec": {
            "clusterIP": "10.96.0.100",
            "internalTrafficPolicy": "Local",
            "type": "NodePort",
            "ports": [{ "name": "http", "port": 80, "nodePort": 30080 }],
        },
    });
    let mut snap = Snapshot::new();
    let mut objects = Vec::new();
    let (o, errors) = objects_from_value(1, service).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    objects.extend(o);
    for s in 0..SLICES {
        let endpoints: Vec<Value> = (0..PER_SLICE)
            .map(|i| {
                let n = s * PER_SLICE + i;
                json!({
                    "addresses": [format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255)],
                    "conditions": { "ready": !n.is_multiple_of(10) },
                    "nodeName": if n % 100 == 1 { node.to_owned() } else { format!("node-{}", n % 97) },
                })
            })
            .collect();
        let slice = json!({
            "kind": "EndpointSlice",
            "metadata": {
                "name": format!("big-{s}"),
                "namespace": "default",
                "labels": { "kubernetes.io/service-name": "big" },
            },
            "addressType": "IPv4",
            "ports": [{ "name": "http", "port": 8080 }],
            "endpoints": endpoints,
        });
        let (o, errors) = objects_from_value(s + 2, slice).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        objects.extend(o);
    }
    for o in objects.iter().cloned() {
        snap.apply(o);
    }
    let opts = BuildOptions::for_node(node);
    let map = ServiceMap::build(&snap, &opts);
    let name = ServicePortName::new(ObjectRef::new("default", "big"), "http", Protocol::Tcp);
    let port = map
        .get(IpFamily::V4, &name)
        .expect("the port is in the map");

    let total = SLICES * PER_SLICE;
    assert_eq!(port.endpoints.len(), total);
    // Cluster traffic (the node port): every ready endpoint, sorted.
    assert_eq!(port.selection.cluster.len(), total - total / 10);
    assert!(port.selection.cluster.windows(2).all(|w| w[0] < w[1]));
    // Local traffic (internalTrafficPolicy Local): the ready endpoints on this node.
    let local: Vec<SocketAddr> = (0..total)
        .filter(|n| n % 100 == 1 && !n.is_multiple_of(10))
        .map(|n| SocketAddr::from(([10, (n >> 16) as u8, (n >> 8) as u8, n as u8], 8080)))
        .collect();
    assert_eq!(port.selection.local, local);
    assert_eq!(port.internal_endpoints().len(), 1000);

    // The incremental path: one slice changes, only that service is rebuilt.
    let mut tracker = ChangeTracker::new(opts.clone());
    tracker.apply(Event::Reset(objects));
    tracker.commit();
    assert_eq!(tracker.map(), &map);
    let mut first = snap
        .slice(&ObjectRef::new("default", "big-0"))
        .expect("slice big-0")
        .clone();
    first.endpoints.truncate(10);
    tracker.apply(Event::Apply(Object::EndpointSlice(first.clone())));
    let changes = tracker.commit();
    assert_eq!(changes.updated.len(), 1);
    snap.apply(Object::EndpointSlice(first));
    let rebuilt = ServiceMap::build(&snap, &opts);
    assert_eq!(tracker.map(), &rebuilt);
    assert_eq!(
        rebuilt.get(IpFamily::V4, &name).unwrap().endpoints.len(),
        total - PER_SLICE + 10
    );
}

// === Examples the properties above generate only sometimes ===

/// Port and object names reach the model byte for byte: backends, not conversion, must
/// quote them (an iptables comment, an ipset name, a log line).
#[test]
fn names_with_quotes_newlines_and_flags_are_kept_verbatim() {
    let name = "web\" -j ACCEPT #\n";
    let port = "http\"\n--comment x";
    let doc = json!({
        "kind": "Service",
        "metadata": { "name": name, "namespace": "ns with space" },
        "spec": { "clusterIP": " 10.96.0.1\t", "ports": [{ "name": port, "port": 80 }] },
    });
    let Ok(Some(Object::Service(svc))) = convert(doc) else {
        panic!("the service converts");
    };
    assert_eq!(svc.id, ObjectRef::new("ns with space", name));
    assert_eq!(svc.ports[0].name, port);
    assert_eq!(svc.cluster_ips, vec![IpAddr::from([10, 96, 0, 1])]);
}

/// IPs with a zone, a prefix or a leading zero, and ports beyond `i32`, are rejected with
/// the object and field named.
#[test]
fn zoned_prefixed_and_oversized_values_are_rejected_naming_the_field() {
    for (ip, field) in [
        ("fe80::1%eth0", "spec.clusterIP"),
        ("10.96.0.1/32", "spec.clusterIP"),
        ("010.96.0.1", "spec.clusterIP"),
    ] {
        let doc = json!({
            "kind": "Service",
            "metadata": { "name": "web", "namespace": "default" },
            "spec": { "clusterIP": ip, "ports": [{ "port": 80 }] },
        });
        let e = convert(doc).expect_err(ip);
        assert_names(
            &e,
            ObjectKind::Service,
            "default",
            "web",
            &[field.to_owned()],
        );
    }
    let doc = json!({
        "kind": "Service",
        "metadata": { "name": "web", "namespace": "default" },
        "spec": { "clusterIP": "10.96.0.1", "ports": [{ "port": 4_294_967_376_i64 }] },
    });
    let e = convert(doc).expect_err("a port beyond i32");
    assert_names(
        &e,
        ObjectKind::Service,
        "default",
        "web",
        &["(object)".to_owned()],
    );
}
