//! `k8s_objects`: k8s-openapi Service, EndpointSlice, Endpoints and Node values through
//! `kproxy_core::convert`.
//!
//! Input that is JSON is used as it is (the seeds are readable objects). Anything else
//! drives a generator ([`arbitrary`]) of JSON values shaped like Kubernetes objects:
//! a `metadata` with names from a small pool most of the time, and keys and strings
//! drawn mostly from the fields and values the converters look at, so that random input
//! gets past deserialization and into the checks.

use arbitrary::{Result, Unstructured};
use k8s_openapi::api::core::v1 as core_api;
use k8s_openapi::api::discovery::v1 as discovery_api;
use kproxy_core::convert;
use kproxy_core::snapshot::Object;
use serde_json::{Map, Value};

use crate::check;

/// Field names the converters read, and a few they do not.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "deletionTimestamp",
    "spec",
    "status",
    "type",
    "clusterIP",
    "clusterIPs",
    "ports",
    "port",
    "targetPort",
    "nodePort",
    "protocol",
    "appProtocol",
    "externalIPs",
    "loadBalancer",
    "ingress",
    "ip",
    "ipMode",
    "hostname",
    "loadBalancerSourceRanges",
    "externalTrafficPolicy",
    "internalTrafficPolicy",
    "sessionAffinity",
    "sessionAffinityConfig",
    "clientIP",
    "timeoutSeconds",
    "healthCheckNodePort",
    "addressType",
    "endpoints",
    "addresses",
    "conditions",
    "ready",
    "serving",
    "terminating",
    "nodeName",
    "zone",
    "hints",
    "forZones",
    "forNodes",
    "subsets",
    "notReadyAddresses",
    "podCIDR",
    "podCIDRs",
    "taints",
    "key",
    "effect",
    "address",
    "kubernetes.io/service-name",
    "service.kubernetes.io/service-proxy-name",
    "service.kubernetes.io/headless",
    "topology.kubernetes.io/zone",
    "endpoints.kubernetes.io/last-change-trigger-time",
];

/// Values the converters compare against, hostile spellings included.
const STRINGS: &[&str] = &[
    "",
    "TCP",
    "UDP",
    "SCTP",
    "tcp",
    "ClusterIP",
    "NodePort",
    "LoadBalancer",
    "ExternalName",
    "None",
    "IPv4",
    "IPv6",
    "FQDN",
    "Local",
    "Cluster",
    "ClientIP",
    "Proxy",
    "VIP",
    "InternalIP",
    "ExternalIP",
    "Hostname",
    "ToBeDeletedByClusterAutoscaler",
    "NoSchedule",
    "10.96.0.10",
    "10.0.1.5",
    " 10.0.1.6 ",
    "::1",
    "fd00::10",
    "fe80::1%eth0",
    "10.0.0.0/8",
    "2001:db8::/64",
    "10.0.0.1/33",
    "999.1.1.1",
    "2024-01-01T00:00:00Z",
    "default",
    "kube-system",
    "web",
    "node-a",
    "zone-1",
    "a\"b\n-j ACCEPT #",
    "\u{202e}ünï",
];

const NAMES: &[&str] = &["web", "dns", "", "a b", "x\ny", "-j", "\u{1f600}"];
const NAMESPACES: &[&str] = &["default", "kube-system", "", "ns\"", "#"];
const MAX_DEPTH: u32 = 5;
const MAX_LEN: u32 = 4;

fn string(u: &mut Unstructured<'_>, pool: &[&str]) -> Result<String> {
    if u.ratio(1, 8)? {
        Ok(u.arbitrary::<String>()?)
    } else {
        Ok((*u.choose(pool)?).to_owned())
    }
}

fn number(u: &mut Unstructured<'_>) -> Result<Value> {
    const INTERESTING: &[i64] = &[
        0,
        1,
        -1,
        53,
        80,
        65535,
        65536,
        86400,
        86401,
        i32::MAX as i64,
        i32::MIN as i64,
        i32::MAX as i64 + 1,
        i64::MAX,
        i64::MIN,
    ];
    Ok(match u.int_in_range(0..=3)? {
        0 => Value::from(*u.choose(INTERESTING)?),
        1 => Value::from(u.arbitrary::<i64>()?),
        2 => Value::from(u.arbitrary::<u64>()?),
        _ => serde_json::Number::from_f64(u.arbitrary::<f64>()?).map_or(Value::Null, Value::Number),
    })
}

fn value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let leaf_only = depth >= MAX_DEPTH;
    Ok(match u.int_in_range(0..=if leaf_only { 3 } else { 5 })? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => number(u)?,
        3 => Value::String(string(u, STRINGS)?),
        4 => {
            let n = u.int_in_range(0..=MAX_LEN)?;
            let mut items = Vec::new();
            for _ in 0..n {
                items.push(value(u, depth + 1)?);
            }
            Value::Array(items)
        }
        _ => Value::Object(object(u, depth + 1)?),
    })
}

fn object(u: &mut Unstructured<'_>, depth: u32) -> Result<Map<String, Value>> {
    let n = u.int_in_range(0..=MAX_LEN)?;
    let mut map = Map::new();
    for _ in 0..n {
        let key = string(u, KEYS)?;
        map.insert(key, value(u, depth + 1)?);
    }
    Ok(map)
}

/// A value shaped like a Kubernetes object: usually a named `metadata` (with the
/// service-name label a slice needs), then generated top-level fields.
fn k8s_like(u: &mut Unstructured<'_>) -> Result<Value> {
    let mut top = Map::new();
    if u.ratio(7, 8)? {
        let mut meta = Map::new();
        let name = string(u, NAMES)?;
        meta.insert("name".into(), Value::String(name.clone()));
        meta.insert("namespace".into(), Value::String(string(u, NAMESPACES)?));
        if u.ratio(3, 4)? {
            let mut labels = Map::new();
            labels.insert("kubernetes.io/service-name".into(), Value::String(name));
            meta.insert("labels".into(), Value::Object(labels));
        }
        for (k, v) in object(u, 1)? {
            meta.insert(k, v);
        }
        top.insert("metadata".into(), Value::Object(meta));
    }
    for (k, v) in object(u, 0)? {
        top.insert(k, v);
    }
    // Most of the time give each kind the one top-level field it requires.
    if u.ratio(3, 4)? {
        top.entry("addressType")
            .or_insert_with(|| Value::String("IPv4".into()));
        top.entry("endpoints")
            .or_insert_with(|| Value::Array(vec![]));
    }
    Ok(Value::Object(top))
}

/// Reads a JSON value from `data` (JSON text as it is, anything else through the
/// generator), decodes it as each of Service, EndpointSlice, Endpoints and Node, and
/// converts whatever decodes. Conversion never panics; an error names the object and
/// field; a converted object keeps the model's invariants (IPs parsed, ports in
/// 1..=65535, one cluster IP per family, endpoints of the slice's family, ...).
pub fn k8s_objects(data: &[u8]) {
    let doc = match serde_json::from_slice::<Value>(data) {
        Ok(v) => v,
        Err(_) => match k8s_like(&mut Unstructured::new(data)) {
            Ok(v) => v,
            Err(_) => return,
        },
    };
    if let Ok(svc) = serde_json::from_value::<core_api::Service>(doc.clone()) {
        converted(convert::service(&svc).map(|s| s.map(Object::Service).into_iter().collect()));
    }
    if let Ok(slice) = serde_json::from_value::<discovery_api::EndpointSlice>(doc.clone()) {
        converted(
            convert::endpoint_slice(&slice)
                .map(|s| s.map(Object::EndpointSlice).into_iter().collect()),
        );
    }
    if let Ok(eps) = serde_json::from_value::<core_api::Endpoints>(doc.clone()) {
        let result = convert::endpoints(&eps);
        if let Ok(slices) = &result {
            let mut ids: Vec<_> = slices.iter().map(|s| &s.id).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), slices.len(), "two converted slices share a name");
        }
        converted(result.map(|v| v.into_iter().map(Object::EndpointSlice).collect()));
    }
    if let Ok(node) = serde_json::from_value::<core_api::Node>(doc) {
        converted(convert::node(&node).map(|n| vec![Object::Node(n)]));
    }
}

fn converted(result: std::result::Result<Vec<Object>, kproxy_core::Error>) {
    match result {
        Ok(objects) => objects.iter().for_each(check::object),
        Err(e) => check::object_error(&e),
    }
}
