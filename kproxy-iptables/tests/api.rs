//! The functions the binary calls: `render_plan` for `kproxy plan --proxy-mode iptables`
//! and `trace` (with its `Display`) for `kproxy trace`.

mod common;

use common::{TEST_NODE, map_of, upstream_node};
use kproxy_core::KubeProxyConfiguration;
use kproxy_core::model::{IpFamily, Protocol};
use kproxy_iptables::{Packet, Ruleset, Verdict, render_plan, trace};

const YAML: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: kubernetes, namespace: default}
spec: {clusterIP: 10.96.0.1, ports: [{name: https, port: 443, protocol: TCP, targetPort: 6443}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: kubernetes, namespace: default, labels: {kubernetes.io/service-name: kubernetes}}
addressType: IPv4
endpoints: [{addresses: [192.168.0.10]}, {addresses: [192.168.0.11]}]
ports: [{name: https, port: 6443, protocol: TCP}]
"#;

#[test]
fn render_plan_prints_the_full_sync_text() {
    let map = map_of(YAML, TEST_NODE);
    let text = render_plan(
        &map,
        &upstream_node(),
        &KubeProxyConfiguration::default(),
        IpFamily::V4,
    )
    .unwrap();
    assert!(text.starts_with("*filter\n") && text.ends_with("COMMIT\n"));
    assert!(text.contains("-j KUBE-SVC-NPX46M4PTMTKRN6Y"), "{text}");
    assert!(text.contains("--probability 0.5000000000"));
    assert!(text.contains("-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000"));
    Ruleset::parse(&text).unwrap();
    let v6 = render_plan(
        &map,
        &upstream_node(),
        &KubeProxyConfiguration::default(),
        IpFamily::V6,
    )
    .unwrap();
    assert!(!v6.contains("KUBE-SVC-"), "no IPv6 service");
    assert!(v6.contains("! -d ::1/128 -j KUBE-NODEPORTS"));
    let bad = KubeProxyConfiguration {
        node_port_addresses: vec!["nope".into()],
        ..Default::default()
    };
    assert!(render_plan(&map, &upstream_node(), &bad, IpFamily::V4).is_err());
}

#[test]
fn trace_explains_where_a_packet_goes() {
    let map = map_of(YAML, TEST_NODE);
    let packet = Packet {
        protocol: Protocol::Tcp,
        src: "10.0.0.5".parse().unwrap(),
        dst: "10.96.0.1".parse().unwrap(),
        dport: 443,
        in_iface: Some("cni0".into()),
        src_local: false,
    };
    let result = trace(
        &map,
        &upstream_node(),
        &KubeProxyConfiguration::default(),
        &packet,
    )
    .unwrap();
    assert_eq!(result.outcomes.len(), 2);
    for o in &result.outcomes {
        assert_eq!(o.verdict, Verdict::Accept);
        assert!((o.probability - 0.5).abs() < 1e-9);
        assert!(o.path.iter().any(|c| c == "nat/KUBE-SVC-NPX46M4PTMTKRN6Y"));
    }
    let shown = result.to_string();
    assert!(
        shown.starts_with("packet: tcp 10.0.0.5 -> 10.96.0.1:443 (in cni0)\n"),
        "{shown}"
    );
    assert!(
        shown.contains("DNAT to 192.168.0.10:6443") && shown.contains("DNAT to 192.168.0.11:6443"),
        "{shown}"
    );
    assert!(shown.contains("decided by nat/KUBE-SEP-"), "{shown}");
    // A port the service does not have is not translated.
    let other = Packet {
        dport: 80,
        ..packet
    };
    let r = trace(
        &map,
        &upstream_node(),
        &KubeProxyConfiguration::default(),
        &other,
    )
    .unwrap();
    assert_eq!(r.outcomes.len(), 1);
    assert_eq!(r.outcomes[0].dnat, None);
    assert!(r.to_string().contains("policy ACCEPT"), "{r}");
}
