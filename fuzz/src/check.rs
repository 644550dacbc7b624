//! Invariants shared by the targets: what backends rely on in converted objects, in
//! errors, and in a built [`ServiceMap`].

use std::collections::BTreeSet;

use kproxy_core::model::{EndpointSlice, IpFamily, Node, Service};
use kproxy_core::snapshot::Object;
use kproxy_core::{Error, ServiceMap};

/// An error about an object or a document names what it is about.
pub(crate) fn object_error(e: &Error) {
    let message = e.to_string();
    match e {
        Error::InvalidObject {
            kind,
            obj,
            field,
            reason,
        } => {
            assert!(!field.is_empty(), "error names no field: {message}");
            assert!(!reason.is_empty(), "error gives no reason: {message}");
            assert!(
                message.starts_with(&kind.to_string()),
                "error names no kind: {message}"
            );
            assert!(message.contains(field.as_str()), "field missing: {message}");
            // Only a missing name, or an object that did not decode at all, may leave
            // the object unnamed.
            if obj.name.is_empty() {
                assert!(
                    field == "metadata.name" || field == "(object)",
                    "unnamed object in: {message}"
                );
            }
        }
        Error::InvalidDocument { index, reason } => {
            assert!(*index >= 1, "documents count from 1: {message}");
            assert!(!reason.is_empty(), "error gives no reason: {message}");
        }
        other => panic!("unexpected error kind from object parsing: {other:?}"),
    }
}

/// A converted object keeps the invariants the model documents.
pub(crate) fn object(obj: &Object) {
    match obj {
        Object::Service(s) => service(s),
        Object::EndpointSlice(s) => slice(s),
        Object::Node(n) => node(n),
    }
    // Model objects serialize (ServiceMap determinism and `kproxy plan` rely on it).
    let json = match obj {
        Object::Service(s) => serde_json::to_string(s),
        Object::EndpointSlice(s) => serde_json::to_string(s),
        Object::Node(n) => serde_json::to_string(n),
    }
    .expect("model objects serialize");
    let back = match obj {
        Object::Service(_) => serde_json::from_str(&json).map(Object::Service),
        Object::EndpointSlice(_) => serde_json::from_str(&json).map(Object::EndpointSlice),
        Object::Node(_) => serde_json::from_str(&json).map(Object::Node),
    }
    .expect("model objects deserialize");
    assert_eq!(&back, obj, "a model object changed in a JSON round trip");
}

fn service(s: &Service) {
    assert!(!s.id.name.is_empty() && !s.id.namespace.is_empty(), "{s:?}");
    assert!(
        !s.cluster_ips.is_empty(),
        "a proxied service has a cluster IP"
    );
    let families: BTreeSet<IpFamily> = s.cluster_ips.iter().map(IpFamily::of).collect();
    assert_eq!(
        families.len(),
        s.cluster_ips.len(),
        "one cluster IP per family"
    );
    assert!(!s.ports.is_empty(), "a proxied service has ports");
    let mut seen = BTreeSet::new();
    for p in &s.ports {
        assert!(p.port >= 1, "service port 0 in {}", s.id);
        assert!(
            p.node_port.is_none_or(|n| n >= 1),
            "node port 0 in {}",
            s.id
        );
        assert!(
            seen.insert((&p.name, p.protocol)),
            "duplicate port in {}",
            s.id
        );
    }
    if let Some(a) = s.session_affinity {
        assert!((1..=86400).contains(&a.timeout_seconds), "{}", s.id);
    }
    assert!(s.health_check_node_port.is_none_or(|p| p >= 1));
}

fn slice(s: &EndpointSlice) {
    assert!(!s.id.name.is_empty() && !s.id.namespace.is_empty(), "{s:?}");
    assert!(!s.service.name.is_empty(), "slice {} has no service", s.id);
    assert_eq!(
        s.service.namespace, s.id.namespace,
        "service in another namespace"
    );
    for p in &s.ports {
        assert!(p.port >= 1, "slice port 0 in {}", s.id);
    }
    for e in &s.endpoints {
        assert_eq!(
            IpFamily::of(&e.address),
            s.family,
            "wrong family in {}",
            s.id
        );
        assert!(
            e.node_name.as_deref() != Some(""),
            "empty node name in {}",
            s.id
        );
    }
}

fn node(n: &Node) {
    assert!(!n.name.is_empty(), "unnamed node");
    let unique: BTreeSet<_> = n.addresses.iter().collect();
    assert_eq!(unique.len(), n.addresses.len(), "duplicate node address");
}

/// Every port of a map is consistent and its selections eligible: the same property as
/// `kproxy-core/tests/map_props.rs` `selected_endpoints_are_eligible`, for any node.
pub(crate) fn map(map: &ServiceMap) {
    for p in map.iter() {
        assert_eq!(IpFamily::of(&p.cluster_ip), p.family);
        assert!(p.port >= 1);
        let info = |a| p.endpoints.iter().find(|e| e.addr == a);
        for &a in &p.selection.cluster {
            let e = info(a).expect("cluster endpoint belongs to the port");
            assert_eq!(IpFamily::of(&a.ip()), p.family);
            if p.selection.cluster_uses_terminating {
                assert!(e.conditions.serving && e.conditions.terminating);
                assert!(p.endpoints.iter().all(|e| !e.conditions.ready));
            } else {
                assert!(e.conditions.ready, "{} sends to a not-ready {a}", p.name);
            }
        }
        for &a in &p.selection.local {
            let e = info(a).expect("local endpoint belongs to the port");
            assert!(
                e.is_local,
                "Local selections hold only this node's endpoints"
            );
            assert_eq!(e.node_name.as_deref(), Some(map.node_name()));
            assert!(e.conditions.ready || (e.conditions.serving && e.conditions.terminating));
        }
        if !p.uses_local_endpoints() {
            assert!(p.selection.local.is_empty());
        }
        let usable = p
            .endpoints
            .iter()
            .any(|e| e.conditions.ready || (e.conditions.serving && e.conditions.terminating));
        if p.uses_cluster_endpoints() {
            assert_eq!(p.selection.has_any_endpoints, usable, "{}", p.name);
        }
        assert!(
            p.endpoints.windows(2).all(|w| w[0].addr < w[1].addr),
            "endpoints of {} are not sorted and unique",
            p.name
        );
        assert!(p.selection.cluster.windows(2).all(|w| w[0] < w[1]));
        assert!(p.selection.local.windows(2).all(|w| w[0] < w[1]));
        for ip in p.virtual_ips() {
            assert_eq!(
                IpFamily::of(&ip),
                p.family,
                "{} has a VIP of another family",
                p.name
            );
        }
    }
}
