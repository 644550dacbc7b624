//! What a [`ChangeSet`] asks backends to clean up in conntrack, per upstream's rules for
//! UDP (and SCTP) services.

use std::net::IpAddr;

use kproxy_core::model::{IpFamily, Protocol};
use kproxy_core::{BuildOptions, ChangeSet, FlowTarget, ServiceMap, Snapshot, StaleFlow};

fn map(endpoints: &str, protocol: &str) -> ServiceMap {
    let yaml = format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{ name: dns, namespace: kube-system }}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  externalIPs: [192.0.2.7]
  ports: [{{ name: dns, port: 53, protocol: {protocol}, nodePort: 30053 }}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{ name: dns-1, namespace: kube-system, labels: {{ kubernetes.io/service-name: dns }} }}
addressType: IPv4
ports: [{{ name: dns, port: 5353, protocol: {protocol} }}]
endpoints: {endpoints}
"#
    );
    let (snap, problems) = Snapshot::from_documents(&yaml).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    ServiceMap::build(&snap, &BuildOptions::for_node("n1"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn flow(target: FlowTarget, endpoint: Option<&str>) -> StaleFlow {
    StaleFlow {
        family: IpFamily::V4,
        protocol: Protocol::Udp,
        target,
        endpoint: endpoint.map(ip),
    }
}

const TWO: &str = "[{ addresses: [10.0.0.1] }, { addresses: [10.0.0.2] }]";
const ONE: &str = "[{ addresses: [10.0.0.1] }]";

#[test]
fn a_removed_udp_endpoint_has_its_flows_deleted_for_every_frontend() {
    let cs = ChangeSet::between(&map(TWO, "UDP"), &map(ONE, "UDP"));
    assert_eq!(cs.updated.len(), 1);
    assert_eq!(
        cs.stale_flows,
        vec![
            flow(
                FlowTarget::Vip {
                    ip: ip("10.96.0.10"),
                    port: 53
                },
                Some("10.0.0.2")
            ),
            flow(
                FlowTarget::Vip {
                    ip: ip("192.0.2.7"),
                    port: 53
                },
                Some("10.0.0.2")
            ),
            flow(FlowTarget::NodePort(30053), Some("10.0.0.2")),
        ]
    );
}

#[test]
fn a_udp_service_getting_its_first_endpoint_has_all_its_flows_deleted() {
    let cs = ChangeSet::between(&map("[]", "UDP"), &map(ONE, "UDP"));
    assert_eq!(
        cs.stale_flows,
        vec![
            flow(
                FlowTarget::Vip {
                    ip: ip("10.96.0.10"),
                    port: 53
                },
                None
            ),
            flow(
                FlowTarget::Vip {
                    ip: ip("192.0.2.7"),
                    port: 53
                },
                None
            ),
            flow(FlowTarget::NodePort(30053), None),
        ]
    );
}

#[test]
fn a_deleted_udp_service_has_all_its_flows_deleted() {
    let cs = ChangeSet::between(&map(ONE, "UDP"), &ServiceMap::default());
    assert_eq!(cs.removed.len(), 1);
    assert_eq!(cs.stale_flows.len(), 3);
    assert!(cs.stale_flows.iter().all(|f| f.endpoint.is_none()));
}

#[test]
fn tcp_changes_need_no_conntrack_cleanup() {
    let cs = ChangeSet::between(&map(TWO, "TCP"), &map(ONE, "TCP"));
    assert_eq!(cs.updated.len(), 1);
    assert!(cs.stale_flows.is_empty());
}

#[test]
fn sctp_is_cleaned_up_like_udp() {
    let cs = ChangeSet::between(&map(TWO, "SCTP"), &map(ONE, "SCTP"));
    assert_eq!(cs.stale_flows.len(), 3);
    assert!(cs.stale_flows.iter().all(|f| f.protocol == Protocol::Sctp));
}

#[test]
fn an_unchanged_map_has_an_empty_change_set() {
    let cs = ChangeSet::between(&map(TWO, "UDP"), &map(TWO, "UDP"));
    assert!(cs.is_empty());
}

#[test]
fn merge_cancels_a_port_added_then_removed() {
    let empty = ServiceMap::default();
    let one = map(ONE, "TCP");
    let mut cs = ChangeSet::between(&empty, &one);
    cs.merge(ChangeSet::between(&one, &empty));
    assert_eq!(cs.len(), 0);
}
