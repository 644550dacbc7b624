//! One test per upstream endpoint-selection rule (pkg/proxy/topology.go
//! `CategorizeEndpoints`, pkg/proxy/serviceport.go, pkg/proxy/endpointslicecache.go),
//! each written as the objects a cluster would hold.

use std::net::SocketAddr;

use kproxy_core::model::{IpFamily, ObjectRef, Protocol, ServicePortName};
use kproxy_core::{BuildOptions, Exclusion, ServiceMap, ServicePort, Snapshot, TopologyMode};

const NODE: &str = "node-a";

fn map_of(yaml: &str) -> ServiceMap {
    map_with(yaml, BuildOptions::for_node(NODE))
}

fn map_with(yaml: &str, opts: BuildOptions) -> ServiceMap {
    let (snap, problems) = Snapshot::from_documents(yaml).expect("test yaml parses");
    assert!(problems.is_empty(), "unexpected problems: {problems:?}");
    ServiceMap::build(&snap, &opts)
}

fn port<'a>(
    map: &'a ServiceMap,
    family: IpFamily,
    svc: &str,
    port: &str,
    proto: Protocol,
) -> &'a ServicePort {
    let name = ServicePortName::new(ObjectRef::new("default", svc), port, proto);
    map.get(family, &name)
        .unwrap_or_else(|| panic!("no {family} port {name}"))
}

fn web(map: &ServiceMap) -> &ServicePort {
    port(map, IpFamily::V4, "web", "http", Protocol::Tcp)
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter()
        .map(|s| s.parse().expect("test address"))
        .collect()
}

/// A Service `web` (port http 80/TCP) with `extra_spec` merged into its spec, and one
/// slice whose endpoints are `endpoints` (YAML list items, target port 8080).
fn web_service(extra_spec: &str, endpoints: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{ name: web, namespace: default }}
spec:
  clusterIP: 10.96.0.10
  ports: [{{ name: http, port: 80, protocol: TCP, nodePort: 30080 }}]
{extra_spec}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {{ kubernetes.io/service-name: web }}
addressType: IPv4
ports: [{{ name: http, port: 8080, protocol: TCP }}]
endpoints:
{endpoints}
---
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels: {{ topology.kubernetes.io/zone: zone-1 }}
status:
  addresses: [{{ type: InternalIP, address: 172.18.0.2 }}]
"#
    )
}

const THREE_READY: &str = r#"
- { addresses: [10.0.0.1], conditions: { ready: true }, nodeName: node-a }
- { addresses: [10.0.0.2], conditions: { ready: true }, nodeName: node-b }
- { addresses: [10.0.0.3], conditions: { ready: true }, nodeName: node-c }
"#;

#[test]
fn ready_endpoints_receive_cluster_traffic() {
    let map = map_of(&web_service("", THREE_READY));
    let p = web(&map);
    assert_eq!(
        p.selection.cluster,
        addrs(&["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"])
    );
    assert_eq!(p.internal_endpoints(), p.selection.cluster.as_slice());
    assert!(
        p.selection.local.is_empty(),
        "no Local policy, no local set"
    );
    assert!(p.selection.has_any_endpoints);
}

#[test]
fn nil_conditions_mean_ready() {
    let map = map_of(&web_service(
        "",
        "- { addresses: [10.0.0.1], nodeName: node-b }",
    ));
    assert_eq!(web(&map).selection.cluster, addrs(&["10.0.0.1:8080"]));
}

#[test]
fn not_ready_endpoints_are_left_out_with_reason() {
    let eps = r#"
- { addresses: [10.0.0.1], conditions: { ready: true } }
- { addresses: [10.0.0.2], conditions: { ready: false, serving: false } }
"#;
    let map = map_of(&web_service("", eps));
    let p = web(&map);
    assert_eq!(p.selection.cluster, addrs(&["10.0.0.1:8080"]));
    let opts = BuildOptions::for_node(NODE);
    assert_eq!(
        p.cluster_exclusion(&p.endpoints[1], &opts, Some("zone-1")),
        Some(Exclusion::NotReady)
    );
}

#[test]
fn serving_terminating_endpoints_are_used_only_when_no_endpoint_is_ready() {
    let some_ready = r#"
- { addresses: [10.0.0.1], conditions: { ready: true } }
- { addresses: [10.0.0.2], conditions: { ready: false, serving: true, terminating: true } }
"#;
    let map = map_of(&web_service("", some_ready));
    let p = web(&map);
    assert_eq!(p.selection.cluster, addrs(&["10.0.0.1:8080"]));
    assert!(!p.selection.cluster_uses_terminating);
    let opts = BuildOptions::for_node(NODE);
    assert_eq!(
        p.cluster_exclusion(&p.endpoints[1], &opts, None),
        Some(Exclusion::Terminating)
    );

    let none_ready = r#"
- { addresses: [10.0.0.1], conditions: { ready: false, serving: false } }
- { addresses: [10.0.0.2], conditions: { ready: false, serving: true, terminating: true } }
- { addresses: [10.0.0.3], conditions: { ready: false, serving: true, terminating: true } }
"#;
    let map = map_of(&web_service("", none_ready));
    let p = web(&map);
    assert_eq!(
        p.selection.cluster,
        addrs(&["10.0.0.2:8080", "10.0.0.3:8080"])
    );
    assert!(p.selection.cluster_uses_terminating);
    assert!(p.selection.has_any_endpoints);
}

#[test]
fn terminating_endpoints_that_are_not_serving_are_never_used() {
    let eps = "- { addresses: [10.0.0.1], conditions: { ready: false, serving: false, terminating: true } }";
    let map = map_of(&web_service("", eps));
    let p = web(&map);
    assert!(p.selection.cluster.is_empty());
    assert!(
        !p.selection.has_any_endpoints,
        "nothing usable: upstream rejects"
    );
}

#[test]
fn service_without_endpoints_is_marked_for_reject() {
    let map = map_of(&web_service("", "  []"));
    let p = web(&map);
    assert!(!p.selection.has_any_endpoints);
    assert!(p.reachable_endpoints().is_empty());
}

#[test]
fn internal_traffic_policy_local_uses_only_this_nodes_endpoints() {
    let map = map_of(&web_service(
        "  type: ClusterIP\n  internalTrafficPolicy: Local",
        THREE_READY,
    ));
    let p = web(&map);
    assert!(p.internal_policy_local);
    assert!(
        !p.uses_cluster_endpoints(),
        "an internal-only port with iTP Local needs no cluster set"
    );
    assert_eq!(p.internal_endpoints(), addrs(&["10.0.0.1:8080"]).as_slice());
    assert!(p.selection.cluster.is_empty());
}

#[test]
fn internal_traffic_policy_local_without_local_endpoints_drops_instead_of_rejecting() {
    let eps = "- { addresses: [10.0.0.2], conditions: { ready: true }, nodeName: node-b }";
    let map = map_of(&web_service("  internalTrafficPolicy: Local", eps));
    let p = web(&map);
    assert!(p.internal_endpoints().is_empty());
    assert!(
        p.selection.has_any_endpoints,
        "endpoints exist elsewhere: DROP, not REJECT"
    );
    let opts = BuildOptions::for_node(NODE);
    assert_eq!(
        p.local_exclusion(&p.endpoints[0], &opts, None),
        Some(Exclusion::OtherNode {
            node: Some("node-b".into())
        })
    );
}

#[test]
fn external_traffic_policy_local_sends_external_traffic_to_local_endpoints_only() {
    let map = map_of(&web_service(
        "  type: NodePort\n  externalTrafficPolicy: Local",
        THREE_READY,
    ));
    let p = web(&map);
    assert!(p.external_policy_local);
    assert_eq!(p.external_endpoints(), addrs(&["10.0.0.1:8080"]).as_slice());
    assert_eq!(
        p.internal_endpoints().len(),
        3,
        "cluster IP traffic still uses every endpoint"
    );
}

#[test]
fn external_traffic_policy_local_is_ignored_on_services_not_externally_accessible() {
    let map = map_of(&web_service(
        "  type: ClusterIP\n  externalTrafficPolicy: Local",
        THREE_READY,
    ));
    let p = web(&map);
    assert!(!p.external_policy_local);
    assert!(
        p.node_port.is_none(),
        "a ClusterIP service has no node port even if one is written"
    );
    assert!(p.selection.local.is_empty());
}

#[test]
fn external_traffic_policy_local_counts_for_cluster_ip_services_with_external_ips() {
    let spec = "  externalTrafficPolicy: Local\n  externalIPs: [192.0.2.10]";
    let map = map_of(&web_service(spec, THREE_READY));
    let p = web(&map);
    assert!(p.external_policy_local);
    assert_eq!(
        p.external_ips,
        vec!["192.0.2.10".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(p.external_endpoints(), addrs(&["10.0.0.1:8080"]).as_slice());
}

#[test]
fn local_policy_falls_back_to_local_serving_terminating_endpoints() {
    let eps = r#"
- { addresses: [10.0.0.1], conditions: { ready: false, serving: true, terminating: true }, nodeName: node-a }
- { addresses: [10.0.0.2], conditions: { ready: true }, nodeName: node-b }
"#;
    let map = map_of(&web_service(
        "  type: NodePort\n  externalTrafficPolicy: Local",
        eps,
    ));
    let p = web(&map);
    assert_eq!(p.selection.local, addrs(&["10.0.0.1:8080"]));
    assert!(p.selection.local_uses_terminating);
    assert_eq!(
        p.selection.cluster,
        addrs(&["10.0.0.2:8080"]),
        "cluster set still prefers ready"
    );
}

const ZONED: &str = r#"
- { addresses: [10.0.0.1], conditions: { ready: true }, nodeName: node-a, zone: zone-1, hints: { forZones: [{ name: zone-1 }] } }
- { addresses: [10.0.0.2], conditions: { ready: true }, nodeName: node-b, zone: zone-2, hints: { forZones: [{ name: zone-2 }] } }
- { addresses: [10.0.0.3], conditions: { ready: true }, nodeName: node-c, zone: zone-1, hints: { forZones: [{ name: zone-1 }] } }
"#;

#[test]
fn topology_zone_hints_narrow_cluster_traffic_to_this_zone() {
    let map = map_of(&web_service("", ZONED));
    let p = web(&map);
    assert_eq!(p.selection.topology, TopologyMode::PreferSameZone);
    assert_eq!(
        p.selection.cluster,
        addrs(&["10.0.0.1:8080", "10.0.0.3:8080"])
    );
    let opts = BuildOptions::for_node(NODE);
    assert_eq!(
        p.cluster_exclusion(&p.endpoints[1], &opts, Some("zone-1")),
        Some(Exclusion::OtherZone {
            hints: vec!["zone-2".into()]
        })
    );
}

#[test]
fn topology_hints_are_ignored_when_a_ready_endpoint_has_none() {
    let eps = format!(
        "{ZONED}- {{ addresses: [10.0.0.4], conditions: {{ ready: true }}, nodeName: node-b }}\n"
    );
    let map = map_of(&web_service("", &eps));
    let p = web(&map);
    assert_eq!(p.selection.topology, TopologyMode::None);
    assert_eq!(p.selection.cluster.len(), 4);
}

#[test]
fn topology_hints_of_not_ready_endpoints_do_not_matter() {
    let eps = format!(
        "{ZONED}- {{ addresses: [10.0.0.4], conditions: {{ ready: false, serving: false }} }}\n"
    );
    let map = map_of(&web_service("", &eps));
    assert_eq!(web(&map).selection.topology, TopologyMode::PreferSameZone);
}

#[test]
fn topology_hints_are_ignored_when_none_match_this_nodes_zone() {
    let yaml = web_service("", ZONED).replace(
        "topology.kubernetes.io/zone: zone-1",
        "topology.kubernetes.io/zone: zone-9",
    );
    let map = map_of(&yaml);
    let p = web(&map);
    assert_eq!(p.selection.topology, TopologyMode::None);
    assert_eq!(p.selection.cluster.len(), 3);
}

#[test]
fn topology_hints_are_ignored_without_a_node_zone_label() {
    let yaml = web_service("", ZONED).replace(
        "labels: { topology.kubernetes.io/zone: zone-1 }",
        "labels: {}",
    );
    let map = map_of(&yaml);
    assert_eq!(web(&map).selection.topology, TopologyMode::None);
}

#[test]
fn topology_hints_never_apply_to_local_policy() {
    let eps = r#"
- { addresses: [10.0.0.1], conditions: { ready: true }, nodeName: node-a, hints: { forZones: [{ name: zone-2 }] } }
- { addresses: [10.0.0.2], conditions: { ready: true }, nodeName: node-b, hints: { forZones: [{ name: zone-1 }] } }
"#;
    let map = map_of(&web_service(
        "  type: NodePort\n  externalTrafficPolicy: Local",
        eps,
    ));
    let p = web(&map);
    assert_eq!(p.selection.topology, TopologyMode::PreferSameZone);
    assert_eq!(p.selection.cluster, addrs(&["10.0.0.2:8080"]));
    assert_eq!(
        p.selection.local,
        addrs(&["10.0.0.1:8080"]),
        "local set ignores the zone-2 hint"
    );
}

#[test]
fn serving_terminating_fallback_ignores_topology() {
    let eps = r#"
- { addresses: [10.0.0.1], conditions: { ready: false, serving: true, terminating: true }, hints: { forZones: [{ name: zone-2 }] } }
"#;
    let map = map_of(&web_service("", eps));
    assert_eq!(web(&map).selection.cluster, addrs(&["10.0.0.1:8080"]));
}

const NODE_HINTED: &str = r#"
- { addresses: [10.0.0.1], conditions: { ready: true }, nodeName: node-a, hints: { forNodes: [{ name: node-a }], forZones: [{ name: zone-1 }] } }
- { addresses: [10.0.0.2], conditions: { ready: true }, nodeName: node-b, hints: { forNodes: [{ name: node-b }], forZones: [{ name: zone-1 }] } }
"#;

#[test]
fn prefer_same_node_hints_keep_traffic_on_this_node() {
    let map = map_of(&web_service(
        "  trafficDistribution: PreferSameNode",
        NODE_HINTED,
    ));
    let p = web(&map);
    assert_eq!(p.selection.topology, TopologyMode::PreferSameNode);
    assert_eq!(p.selection.cluster, addrs(&["10.0.0.1:8080"]));
}

#[test]
fn prefer_same_node_hints_need_the_feature_gate() {
    let opts = BuildOptions {
        prefer_same_node: false,
        ..BuildOptions::for_node(NODE)
    };
    let map = map_with(&web_service("", NODE_HINTED), opts);
    let p = web(&map);
    assert_eq!(
        p.selection.topology,
        TopologyMode::PreferSameZone,
        "falls back to the zone hints"
    );
    assert_eq!(p.selection.cluster.len(), 2);
}

#[test]
fn headless_and_external_name_services_are_ignored() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: { name: headless, namespace: default }
spec: { clusterIP: None, ports: [{ port: 80 }] }
---
apiVersion: v1
kind: Service
metadata: { name: ext, namespace: default }
spec: { type: ExternalName, externalName: example.com }
---
apiVersion: v1
kind: Service
metadata: { name: other-proxy, namespace: default, labels: { service.kubernetes.io/service-proxy-name: foo } }
spec: { clusterIP: 10.96.0.5, ports: [{ port: 80 }] }
"#;
    assert!(map_of(yaml).is_empty());
}

#[test]
fn dual_stack_service_gets_one_entry_per_family_with_that_familys_endpoints() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: default }
spec:
  clusterIPs: [10.96.0.10, "fd00:96::10"]
  ipFamilies: [IPv4, IPv6]
  ports: [{ name: http, port: 80 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-v4, namespace: default, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
ports: [{ name: http, port: 8080 }]
endpoints: [{ addresses: [10.0.0.1] }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-v6, namespace: default, labels: { kubernetes.io/service-name: web } }
addressType: IPv6
ports: [{ name: http, port: 8080 }]
endpoints: [{ addresses: ["fd00:1::1"] }]
"#;
    let map = map_of(yaml);
    assert_eq!(map.len(), 2);
    assert_eq!(
        port(&map, IpFamily::V4, "web", "http", Protocol::Tcp)
            .selection
            .cluster,
        addrs(&["10.0.0.1:8080"])
    );
    assert_eq!(
        port(&map, IpFamily::V6, "web", "http", Protocol::Tcp)
            .selection
            .cluster,
        addrs(&["[fd00:1::1]:8080"])
    );
}

#[test]
fn the_same_endpoint_in_two_slices_counts_once_and_the_non_terminating_copy_wins() {
    let yaml = format!(
        "{}---\n{}",
        web_service(
            "",
            "- { addresses: [10.0.0.1], conditions: { ready: false, serving: true, terminating: true } }"
        ),
        r#"apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-2, namespace: default, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
ports: [{ name: http, port: 8080, protocol: TCP }]
endpoints: [{ addresses: [10.0.0.1], conditions: { ready: true } }]
"#
    );
    let map = map_of(&yaml);
    let p = web(&map);
    assert_eq!(p.endpoints.len(), 1);
    assert!(p.endpoints[0].conditions.ready);
    assert!(!p.selection.cluster_uses_terminating);
}

#[test]
fn slice_ports_match_service_ports_by_name_and_protocol() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: { name: dns, namespace: default }
spec:
  clusterIP: 10.96.0.10
  ports: [{ name: dns, port: 53, protocol: UDP }, { name: dns-tcp, port: 53, protocol: TCP }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: dns-1, namespace: default, labels: { kubernetes.io/service-name: dns } }
addressType: IPv4
ports: [{ name: dns, port: 5353, protocol: UDP }, { name: dns-tcp, port: 5354, protocol: TCP }, { name: dns, port: 9999, protocol: TCP }]
endpoints: [{ addresses: [10.0.0.1] }]
"#;
    let map = map_of(yaml);
    assert_eq!(
        port(&map, IpFamily::V4, "dns", "dns", Protocol::Udp)
            .selection
            .cluster,
        addrs(&["10.0.0.1:5353"])
    );
    assert_eq!(
        port(&map, IpFamily::V4, "dns", "dns-tcp", Protocol::Tcp)
            .selection
            .cluster,
        addrs(&["10.0.0.1:5354"])
    );
}

#[test]
fn health_check_node_port_only_for_load_balancers_with_local_policy() {
    let lb_local =
        "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  healthCheckNodePort: 32000";
    let map = map_of(&web_service(lb_local, THREE_READY));
    assert_eq!(web(&map).health_check_node_port, Some(32000));
    let np_local = "  type: NodePort\n  externalTrafficPolicy: Local\n  healthCheckNodePort: 32000";
    let map = map_of(&web_service(np_local, THREE_READY));
    assert_eq!(web(&map).health_check_node_port, None);
}

#[test]
fn health_check_counts_distinct_local_ready_ips_across_ports() {
    let eps = r#"
- { addresses: [10.0.0.1], conditions: { ready: true }, nodeName: node-a }
- { addresses: [10.0.0.4], conditions: { ready: false, serving: true, terminating: true }, nodeName: node-a }
- { addresses: [10.0.0.2], conditions: { ready: true }, nodeName: node-b }
"#;
    let yaml = web_service("", eps).replace(
        "ports: [{ name: http, port: 80, protocol: TCP, nodePort: 30080 }]",
        "ports: [{ name: http, port: 80, protocol: TCP, nodePort: 30080 }, { name: https, port: 443 }]",
    ).replace(
        "ports: [{ name: http, port: 8080, protocol: TCP }]",
        "ports: [{ name: http, port: 8080, protocol: TCP }, { name: https, port: 8443 }]",
    );
    let map = map_of(&yaml);
    assert_eq!(
        map.local_ready_endpoints(IpFamily::V4, &ObjectRef::new("default", "web")),
        1
    );
}

#[test]
fn session_affinity_client_ip_defaults_to_three_hours() {
    let map = map_of(&web_service("  sessionAffinity: ClientIP", THREE_READY));
    assert_eq!(
        web(&map).session_affinity.map(|a| a.timeout_seconds),
        Some(10800)
    );
    let spec = "  sessionAffinity: ClientIP\n  sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } }";
    let map = map_of(&web_service(spec, THREE_READY));
    assert_eq!(
        web(&map).session_affinity.map(|a| a.timeout_seconds),
        Some(60)
    );
}

#[test]
fn load_balancer_ingress_with_ip_mode_proxy_gets_no_rules() {
    let yaml = web_service("  type: LoadBalancer", THREE_READY).replace(
        "kind: Service\nmetadata: { name: web, namespace: default }",
        "kind: Service\nmetadata: { name: web, namespace: default }\nstatus: { loadBalancer: { ingress: [{ ip: 192.0.2.1 }, { ip: 192.0.2.2, ipMode: Proxy }, { hostname: lb.example.com }] } }",
    );
    let map = map_of(&yaml);
    assert_eq!(
        web(&map).load_balancer_ips,
        vec!["192.0.2.1".parse::<std::net::IpAddr>().unwrap()]
    );
}

#[test]
fn load_balancer_source_ranges_are_trimmed_and_split_by_family() {
    let yaml = web_service("  type: LoadBalancer\n  loadBalancerSourceRanges: [' 203.0.113.0/24 ', '2001:db8::/32']", THREE_READY).replace(
        "kind: Service\nmetadata: { name: web, namespace: default }",
        "kind: Service\nmetadata: { name: web, namespace: default }\nstatus: { loadBalancer: { ingress: [{ ip: 192.0.2.1 }] } }",
    );
    let map = map_of(&yaml);
    assert_eq!(
        web(&map).load_balancer_source_ranges,
        vec!["203.0.113.0/24".parse::<ipnet::IpNet>().unwrap()]
    );
}

#[test]
fn a_bad_object_is_reported_by_name_and_field_and_does_not_poison_the_others() {
    let yaml = format!(
        "{}---\n{}",
        web_service("", THREE_READY),
        r#"apiVersion: v1
kind: Service
metadata: { name: broken, namespace: default }
spec: { clusterIP: 10.96.0.300, ports: [{ port: 80 }] }
---
apiVersion: v1
kind: Service
metadata: { name: badport, namespace: default }
spec: { clusterIP: 10.96.0.11, ports: [{ port: 70000 }] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: orphan, namespace: default }
addressType: IPv4
endpoints: []
"#
    );
    let (snap, problems) = Snapshot::from_documents(&yaml).unwrap();
    let msgs: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        msgs,
        vec![
            r#"service default/broken: spec.clusterIP: "10.96.0.300" is not an IP address"#,
            "service default/badport: spec.ports[0].port: port 70000 is out of range 1-65535",
            "endpointslice default/orphan: metadata.labels[kubernetes.io/service-name]: missing",
        ]
    );
    let map = ServiceMap::build(&snap, &BuildOptions::for_node(NODE));
    assert_eq!(web(&map).selection.cluster.len(), 3);
}

#[test]
fn legacy_endpoints_convert_into_the_same_endpoint_model() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: default }
spec: { clusterIP: 10.96.0.10, ports: [{ name: http, port: 80 }] }
---
apiVersion: v1
kind: Endpoints
metadata: { name: web, namespace: default }
subsets:
- addresses: [{ ip: 10.0.0.1, nodeName: node-a }]
  notReadyAddresses: [{ ip: 10.0.0.2 }]
  ports: [{ name: http, port: 8080 }]
"#;
    let map = map_of(yaml);
    let p = web(&map);
    assert_eq!(p.endpoints.len(), 2);
    assert_eq!(p.selection.cluster, addrs(&["10.0.0.1:8080"]));
    assert!(p.endpoints[0].is_local);
}

#[test]
fn a_kubectl_list_with_typed_list_kinds_is_read() {
    let yaml = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: { name: web, namespace: default }
  spec: { clusterIP: 10.96.0.10, ports: [{ name: http, port: 80 }] }
- apiVersion: v1
  kind: Pod
  metadata: { name: ignored, namespace: default }
"#;
    assert_eq!(map_of(yaml).len(), 1);
    let json = r#"{"kind":"ServiceList","apiVersion":"v1","items":[{"metadata":{"name":"web","namespace":"default"},"spec":{"clusterIP":"10.96.0.10","ports":[{"name":"http","port":80}]}}]}"#;
    assert_eq!(map_of(json).len(), 1);
}
