//! More of upstream `pkg/proxy/iptables/proxier_test.go`'s packet-flow tests
//! (`TestNodePorts`, `TestExternalTrafficPolicyLocal`, `TestExternalTrafficPolicyCluster`,
//! `TestHealthCheckNodePort`), over snapshot YAML.

mod common;

use common::{
    TEST_NODE, flow, full_model, map_of, run, tcp, upstream_config, upstream_node, v4_model,
};
use kproxy_core::model::{IpFamily, Protocol};
use kproxy_iptables::plan::NodePortAddresses;

#[test]
fn node_ports() {
    struct Np {
        family: IpFamily,
        localhost: bool,
        addresses: Option<NodePortAddresses>,
        allow_alt: bool,
    }
    let v4 = |s: &[&str]| {
        Some(NodePortAddresses::Cidrs(
            s.iter().map(|c| c.parse().unwrap()).collect(),
        ))
    };
    let cases = [
        Np {
            family: IpFamily::V4,
            localhost: true,
            addresses: None,
            allow_alt: true,
        },
        Np {
            family: IpFamily::V4,
            localhost: false,
            addresses: None,
            allow_alt: true,
        },
        Np {
            family: IpFamily::V4,
            localhost: false,
            addresses: v4(&["192.168.0.0/24", "127.0.0.1/32"]),
            allow_alt: false,
        },
        Np {
            family: IpFamily::V4,
            localhost: false,
            addresses: v4(&["192.168.0.0/24", "192.168.1.0/24"]),
            allow_alt: true,
        },
        Np {
            family: IpFamily::V6,
            localhost: false,
            addresses: None,
            allow_alt: true,
        },
        Np {
            family: IpFamily::V6,
            localhost: false,
            addresses: v4(&["2001:db8::/64"]),
            allow_alt: false,
        },
    ];
    for (i, tc) in cases.iter().enumerate() {
        let (svc_ip, ep1, ep2, af, pod, ext, node_ip, alt, lo) = match tc.family {
            IpFamily::V4 => (
                "172.30.0.41",
                "10.180.0.1",
                "10.180.2.1",
                "IPv4",
                "10.0.0.2",
                "203.0.113.2",
                "192.168.0.2",
                "192.168.1.2",
                "127.0.0.1",
            ),
            IpFamily::V6 => (
                "fd00:172:30::41",
                "fd00:10:180::1",
                "fd00:10:180::2:1",
                "IPv6",
                "fd00:10::2",
                "2600:5200::1",
                "2001:db8::1",
                "2001:db8:1::2",
                "::1",
            ),
        };
        let yaml = format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: svc1, namespace: ns1}}
spec: {{type: NodePort, clusterIP: "{svc_ip}", ports: [{{name: p80, port: 80, protocol: TCP, nodePort: 3001}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc1-1, namespace: ns1, labels: {{kubernetes.io/service-name: svc1}}}}
addressType: {af}
endpoints: [{{addresses: ["{ep1}"]}}, {{addresses: ["{ep2}"], nodeName: test-node}}]
ports: [{{name: p80, port: 80, protocol: TCP}}]
"#
        );
        let mut cfg = upstream_config(tc.family);
        cfg.localhost_node_ports = tc.localhost;
        if let Some(a) = &tc.addresses {
            cfg.node_port_addresses = a.clone();
        }
        let rs = full_model(&map_of(&yaml, TEST_NODE), &upstream_node(), &cfg, tc.family);
        let fmt = |ip: &str| {
            if ip.contains(':') {
                format!("[{ip}]:80")
            } else {
                format!("{ip}:80")
            }
        };
        let both = format!("{}, {}", fmt(ep1), fmt(ep2));
        let node = upstream_node();
        let check = |name: &str, src: &str, dst: &str, port: u16, want: &str, masq: bool| {
            let (out, m) = flow(&rs, &node, Protocol::Tcp, src, dst, port);
            assert_eq!(out, want, "case {i}: {name}");
            assert_eq!(m, masq, "case {i}: {name}: masquerade");
        };
        check("pod to cluster IP", pod, svc_ip, 80, &both, false);
        check("external to nodePort", ext, node_ip, 3001, &both, true);
        check("node to nodePort", node_ip, node_ip, 3001, &both, true);
        if tc.family == IpFamily::V4 && tc.localhost {
            check(
                "localhost to nodePort gets masqueraded",
                lo,
                lo,
                3001,
                &both,
                true,
            );
        } else {
            check(
                "localhost to nodePort is ignored",
                lo,
                lo,
                3001,
                "ACCEPT",
                false,
            );
        }
        if tc.allow_alt {
            check(
                "external to nodePort on secondary IP",
                ext,
                alt,
                3001,
                &both,
                true,
            );
        } else {
            check(
                "secondary nodePort IP is ignored",
                ext,
                alt,
                3001,
                "ACCEPT",
                false,
            );
        }
    }
}

fn policy_yaml(policy: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: svc1, namespace: ns1}}
spec:
  type: LoadBalancer
  externalTrafficPolicy: {policy}
  clusterIP: 172.30.0.41
  externalIPs: [192.168.99.11]
  healthCheckNodePort: 30000
  ports: [{{name: p80, port: 80, protocol: TCP, nodePort: 3001, targetPort: 80}}]
status: {{loadBalancer: {{ingress: [{{ip: 1.2.3.4}}]}}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc1-1, namespace: ns1, labels: {{kubernetes.io/service-name: svc1}}}}
addressType: IPv4
endpoints: [{{addresses: [10.180.0.1]}}, {{addresses: [10.180.2.1], nodeName: test-node}}]
ports: [{{name: p80, port: 80, protocol: TCP}}]
"#
    )
}

#[test]
fn external_traffic_policy_local() {
    let both = "10.180.0.1:80, 10.180.2.1:80";
    let local = "10.180.2.1:80";
    run(
        &v4_model(&policy_yaml("Local")),
        &[
            tcp(
                "pod to cluster IP hits both endpoints, unmasqueraded",
                "10.0.0.2",
                "172.30.0.41",
                80,
                both,
                false,
            ),
            tcp(
                "pod to external IP hits both endpoints, unmasqueraded",
                "10.0.0.2",
                "192.168.99.11",
                80,
                both,
                false,
            ),
            tcp(
                "external to external IP hits only local endpoint",
                "203.0.113.2",
                "192.168.99.11",
                80,
                local,
                false,
            ),
            tcp(
                "pod to LB IP hits both endpoints, unmasqueraded",
                "10.0.0.2",
                "1.2.3.4",
                80,
                both,
                false,
            ),
            tcp(
                "external to LB IP hits only local endpoint",
                "203.0.113.2",
                "1.2.3.4",
                80,
                local,
                false,
            ),
            tcp(
                "pod to NodePort hits both endpoints, unmasqueraded",
                "10.0.0.2",
                "192.168.0.2",
                3001,
                both,
                false,
            ),
            tcp(
                "external to NodePort hits only local endpoint",
                "203.0.113.2",
                "192.168.0.2",
                3001,
                local,
                false,
            ),
        ],
    );
}

#[test]
fn external_traffic_policy_cluster() {
    let both = "10.180.0.1:80, 10.180.2.1:80";
    run(
        &v4_model(&policy_yaml("Cluster")),
        &[
            tcp(
                "pod to cluster IP hits both endpoints, unmasqueraded",
                "10.0.0.2",
                "172.30.0.41",
                80,
                both,
                false,
            ),
            tcp(
                "pod to external IP hits both endpoints, masqueraded",
                "10.0.0.2",
                "192.168.99.11",
                80,
                both,
                true,
            ),
            tcp(
                "external to external IP hits both endpoints, masqueraded",
                "203.0.113.2",
                "192.168.99.11",
                80,
                both,
                true,
            ),
            tcp(
                "pod to LB IP hits both endpoints, masqueraded",
                "10.0.0.2",
                "1.2.3.4",
                80,
                both,
                true,
            ),
            tcp(
                "external to LB IP hits both endpoints, masqueraded",
                "203.0.113.2",
                "1.2.3.4",
                80,
                both,
                true,
            ),
            tcp(
                "pod to NodePort hits both endpoints, masqueraded",
                "10.0.0.2",
                "192.168.0.2",
                3001,
                both,
                true,
            ),
            tcp(
                "external to NodePort hits both endpoints, masqueraded",
                "203.0.113.2",
                "192.168.0.2",
                3001,
                both,
                true,
            ),
        ],
    );
}

#[test]
fn health_check_node_port() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: svc1, namespace: ns1}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  clusterIP: 172.30.0.42
  healthCheckNodePort: 30000
  ports: [{name: p80, port: 80, protocol: TCP, nodePort: 3001}]
"#;
    let node = upstream_node();
    let mut cfg = upstream_config(IpFamily::V4);
    cfg.node_port_addresses = NodePortAddresses::Cidrs(vec!["127.0.0.0/8".parse().unwrap()]);
    let decided = |yaml: &str| {
        let rs = full_model(&map_of(yaml, TEST_NODE), &node, &cfg, IpFamily::V4);
        let pkt = common::packet(&node, Protocol::Tcp, "1.2.3.4", "192.168.0.2", 30000);
        let t = kproxy_iptables::trace_packet(&rs, &pkt, &node.local_addresses).unwrap();
        assert_eq!(common::summary(&t).0, "ACCEPT");
        t.outcomes[0].decided_by.clone()
    };
    // "firewall accepts HealthCheckNodePort": an explicit ACCEPT rule.
    assert!(
        decided(yaml).contains("health check node port\" -m tcp -p tcp --dport 30000 -j ACCEPT")
    );
    // "HealthCheckNodePort no longer has any rule" once the service is gone.
    assert!(decided("").contains("policy ACCEPT"));
}
