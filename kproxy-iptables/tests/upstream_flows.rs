//! Upstream `pkg/proxy/iptables/proxier_test.go` packet-flow cases (the tests that call
//! `runPacketFlowTests`), re-expressed over snapshot YAML: same services, same packets,
//! same expected endpoints, DROP/REJECT and masquerade. `""` upstream (no rule matched)
//! is `ACCEPT` here. Also the exact ruleset of `TestOverallIPTablesRules`.

mod common;

use common::{Case, TEST_NODE, map_of, run, tcp, upstream_config, upstream_node, v4_model};
use kproxy_core::model::{IpFamily, Protocol};
use kproxy_iptables::ruleset::Ruleset;

/// The services and slices of upstream's `TestOverallIPTablesRules`.
const OVERALL_YAML: &str = include_str!("data/overall.yaml");

/// The expected output of upstream's `TestOverallIPTablesRules` (rules data from
/// `proxier_test.go`; upstream prints the mark as `0x4000`).
const OVERALL_EXPECTED: &str = include_str!("data/overall_expected.txt");

#[test]
fn overall_ruleset_equals_upstream() {
    let map = map_of(OVERALL_YAML, TEST_NODE);
    let node = upstream_node();
    let cfg = upstream_config(IpFamily::V4);
    let text = kproxy_iptables::plan::plan(
        &map,
        &kproxy_core::ChangeSet::full(),
        &node,
        &cfg,
        IpFamily::V4,
        None,
    )
    .text;
    let ours = Ruleset::parse(&text).unwrap();
    let theirs = Ruleset::parse(OVERALL_EXPECTED).unwrap();
    assert_eq!(ours.canonical(), theirs.canonical(), "ours:\n{text}");
    // Same chain declarations, in the same tables.
    let decls = |t: &str| {
        let mut v: Vec<String> = t
            .lines()
            .filter(|l| l.starts_with(':') || l.starts_with('*'))
            .map(String::from)
            .collect();
        v.sort();
        v
    };
    assert_eq!(decls(&text), decls(OVERALL_EXPECTED));
}

#[test]
fn overall_flows() {
    let rs = v4_model(OVERALL_YAML);
    run(
        &rs,
        &[
            tcp(
                "clusterIP",
                "10.0.0.2",
                "172.30.0.41",
                80,
                "10.180.0.1:80",
                false,
            ),
            tcp(
                "external to clusterIP",
                "203.0.113.2",
                "172.30.0.41",
                80,
                "10.180.0.1:80",
                true,
            ),
            tcp(
                "eTP Local LB with no local endpoints",
                "203.0.113.2",
                "1.2.3.4",
                80,
                "DROP",
                false,
            ),
            tcp(
                "eTP Local nodePort from pod short-circuits",
                "10.0.0.2",
                "192.168.0.2",
                3001,
                "10.180.0.2:80",
                false,
            ),
            tcp(
                "eTP Local external IP from node",
                "192.168.0.2",
                "192.168.99.22",
                80,
                "10.180.0.2:80",
                true,
            ),
            tcp(
                "nodePort",
                "203.0.113.2",
                "192.168.0.2",
                3003,
                "10.180.0.3:80",
                true,
            ),
            tcp(
                "external IP",
                "203.0.113.2",
                "192.168.99.33",
                80,
                "10.180.0.4:80, 10.180.0.5:80",
                true,
            ),
            tcp(
                "LB with source range, allowed",
                "203.0.113.2",
                "5.6.7.8",
                80,
                "10.180.0.3:80",
                true,
            ),
            tcp(
                "LB with source range, blocked",
                "203.0.113.130",
                "5.6.7.8",
                80,
                "DROP",
                false,
            ),
            tcp(
                "no endpoints",
                "10.0.0.2",
                "172.30.0.46",
                80,
                "REJECT",
                false,
            ),
        ],
    );
}

#[test]
fn no_endpoints_reject() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: svc1, namespace: ns1}
spec:
  type: LoadBalancer
  clusterIP: 172.30.0.41
  externalIPs: [192.168.99.11]
  ports: [{name: p80, port: 80, protocol: TCP, nodePort: 3001}]
status: {loadBalancer: {ingress: [{ip: 1.2.3.4}]}}
"#;
    run(
        &v4_model(yaml),
        &[
            tcp(
                "pod to cluster IP with no endpoints",
                "10.0.0.2",
                "172.30.0.41",
                80,
                "REJECT",
                false,
            ),
            tcp(
                "external to external IP with no endpoints",
                "203.0.113.2",
                "192.168.99.11",
                80,
                "REJECT",
                false,
            ),
            tcp(
                "pod to NodePort with no endpoints",
                "10.0.0.2",
                "192.168.0.2",
                3001,
                "REJECT",
                false,
            ),
            tcp(
                "external to NodePort with no endpoints",
                "203.0.113.2",
                "192.168.0.2",
                3001,
                "REJECT",
                false,
            ),
            tcp(
                "pod to LoadBalancer IP with no endpoints",
                "10.0.0.2",
                "1.2.3.4",
                80,
                "REJECT",
                false,
            ),
            tcp(
                "external to LoadBalancer IP with no endpoints",
                "203.0.113.2",
                "1.2.3.4",
                80,
                "REJECT",
                false,
            ),
        ],
    );
}

#[test]
fn cluster_ip_general() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: svc1, namespace: ns1}
spec: {clusterIP: 172.30.0.41, ports: [{name: http, port: 80, protocol: TCP}]}
---
apiVersion: v1
kind: Service
metadata: {name: svc2, namespace: ns2}
spec:
  clusterIP: 172.30.0.42
  ports:
  - {name: http, port: 80, protocol: TCP}
  - {name: https, port: 443, protocol: TCP, targetPort: 8443}
  - {name: dns-udp, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 5353}
  - {name: dns-sctp, port: 53, protocol: SCTP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc1-1, namespace: ns1, labels: {kubernetes.io/service-name: svc1}}
addressType: IPv4
endpoints: [{addresses: [10.180.0.1], nodeName: test-node}]
ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc2-1, namespace: ns2, labels: {kubernetes.io/service-name: svc2}}
addressType: IPv4
endpoints: [{addresses: [10.180.0.1], nodeName: test-node}, {addresses: [10.180.2.1], nodeName: node2}]
ports:
- {name: http, port: 80, protocol: TCP}
- {name: https, port: 8443, protocol: TCP}
- {name: dns-udp, port: 53, protocol: UDP}
- {name: dns-tcp, port: 5353, protocol: TCP}
- {name: dns-sctp, port: 53, protocol: SCTP}
"#;
    let rs = v4_model(yaml);
    let udp = |name, out| Case {
        name,
        proto: Protocol::Udp,
        src: "10.180.0.2",
        dst: "172.30.0.42",
        port: 53,
        output: out,
        masq: false,
    };
    run(
        &rs,
        &[
            tcp(
                "simple clusterIP",
                "10.180.0.2",
                "172.30.0.41",
                80,
                "10.180.0.1:80",
                false,
            ),
            tcp(
                "hairpin to cluster IP",
                "10.180.0.1",
                "172.30.0.41",
                80,
                "10.180.0.1:80",
                true,
            ),
            tcp(
                "clusterIP with multiple endpoints",
                "10.180.0.2",
                "172.30.0.42",
                80,
                "10.180.0.1:80, 10.180.2.1:80",
                false,
            ),
            tcp(
                "clusterIP with TargetPort",
                "10.180.0.2",
                "172.30.0.42",
                443,
                "10.180.0.1:8443, 10.180.2.1:8443",
                false,
            ),
            tcp(
                "same port, TCP",
                "10.180.0.2",
                "172.30.0.42",
                53,
                "10.180.0.1:5353, 10.180.2.1:5353",
                false,
            ),
            udp("same port, UDP", "10.180.0.1:53, 10.180.2.1:53"),
            Case {
                name: "same port, SCTP",
                proto: Protocol::Sctp,
                src: "10.180.0.2",
                dst: "172.30.0.42",
                port: 53,
                output: "10.180.0.1:53, 10.180.2.1:53",
                masq: false,
            },
            Case {
                name: "TCP-only port does not match UDP",
                proto: Protocol::Udp,
                src: "10.180.0.2",
                dst: "172.30.0.42",
                port: 80,
                output: "ACCEPT",
                masq: false,
            },
            tcp(
                "svc1 does not accept svc2's ports",
                "10.180.0.2",
                "172.30.0.41",
                443,
                "ACCEPT",
                false,
            ),
        ],
    );
}

#[test]
fn load_balancer() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: svc1, namespace: ns1}
spec:
  type: LoadBalancer
  clusterIP: 172.30.0.41
  loadBalancerSourceRanges: [192.168.0.0/24, " 203.0.113.0/25"]
  ports: [{name: p80, port: 80, protocol: TCP, nodePort: 3001}]
status: {loadBalancer: {ingress: [{ip: 1.2.3.4}, {ip: 5.6.7.8}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc1-1, namespace: ns1, labels: {kubernetes.io/service-name: svc1}}
addressType: IPv4
endpoints: [{addresses: [10.180.0.1]}]
ports: [{name: p80, port: 80, protocol: TCP}]
"#;
    let ep = "10.180.0.1:80";
    run(
        &v4_model(yaml),
        &[
            tcp(
                "pod to cluster IP",
                "10.0.0.2",
                "172.30.0.41",
                80,
                ep,
                false,
            ),
            tcp(
                "external to nodePort",
                "203.0.113.2",
                "192.168.0.2",
                3001,
                ep,
                true,
            ),
            tcp(
                "nodePort bypasses LoadBalancerSourceRanges",
                "203.0.113.130",
                "192.168.0.2",
                3001,
                ep,
                true,
            ),
            tcp(
                "accepted external to LB1",
                "203.0.113.2",
                "1.2.3.4",
                80,
                ep,
                true,
            ),
            tcp(
                "accepted external to LB2",
                "203.0.113.2",
                "5.6.7.8",
                80,
                ep,
                true,
            ),
            tcp(
                "blocked external to LB1",
                "203.0.113.130",
                "1.2.3.4",
                80,
                "DROP",
                false,
            ),
            tcp(
                "blocked external to LB2",
                "203.0.113.130",
                "5.6.7.8",
                80,
                "DROP",
                false,
            ),
            tcp(
                "pod to LB1 (blocked)",
                "10.0.0.2",
                "1.2.3.4",
                80,
                "DROP",
                false,
            ),
            tcp(
                "pod to LB2 (blocked)",
                "10.0.0.2",
                "5.6.7.8",
                80,
                "DROP",
                false,
            ),
            tcp(
                "node to LB1 (allowed)",
                "192.168.0.2",
                "1.2.3.4",
                80,
                ep,
                true,
            ),
            tcp(
                "node to LB2 (allowed)",
                "192.168.0.2",
                "5.6.7.8",
                80,
                ep,
                true,
            ),
            tcp(
                "same node to LB1, SNATted to LB1",
                "1.2.3.4",
                "1.2.3.4",
                80,
                ep,
                true,
            ),
            tcp(
                "same node to LB2, SNATted to LB2",
                "5.6.7.8",
                "5.6.7.8",
                80,
                ep,
                true,
            ),
        ],
    );
}
