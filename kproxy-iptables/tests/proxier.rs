//! [`IptablesProxier`] against the recording executor, whose model of the tables lets
//! the tests trace packets through what "the kernel" holds after each sync.

mod common;

use common::{TEST_NODE, flow, map_of, upstream_node};
use kproxy_core::model::{IpFamily, Protocol};
use kproxy_core::{ChangeSet, KubeProxyConfiguration, Proxier, ServiceMap};
use kproxy_iptables::exec::fake::{Call, RecordingExecutor};
use kproxy_iptables::proxier::IptablesProxier;
use kproxy_iptables::ruleset::{Ruleset, Target};
use std::sync::atomic::Ordering;

fn cfg() -> KubeProxyConfiguration {
    KubeProxyConfiguration {
        cluster_cidr: "10.0.0.0/8".into(),
        ..Default::default()
    }
}

fn yaml(endpoints: &[&str], protocol: &str) -> String {
    let eps: Vec<String> = endpoints
        .iter()
        .map(|e| format!("{{addresses: [{e}]}}"))
        .collect();
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: svc1, namespace: ns1}}
spec: {{type: NodePort, clusterIP: 172.30.0.41, ports: [{{name: p80, port: 80, protocol: {protocol}, nodePort: 3001}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: other, namespace: ns1}}
spec: {{clusterIP: 172.30.0.50, ports: [{{name: p80, port: 80, protocol: TCP}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc1-1, namespace: ns1, labels: {{kubernetes.io/service-name: svc1}}}}
addressType: IPv4
endpoints: [{}]
ports: [{{name: p80, port: 80, protocol: {protocol}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: other-1, namespace: ns1, labels: {{kubernetes.io/service-name: other}}}}
addressType: IPv4
endpoints: [{{addresses: [10.180.9.9]}}]
ports: [{{name: p80, port: 80, protocol: TCP}}]
"#,
        eps.join(", ")
    )
}

fn map(endpoints: &[&str]) -> ServiceMap {
    map_of(&yaml(endpoints, "TCP"), TEST_NODE)
}

fn proxier() -> IptablesProxier<RecordingExecutor> {
    IptablesProxier::new(RecordingExecutor::new(), &cfg(), &[IpFamily::V4]).unwrap()
}

fn to_svc(p: &IptablesProxier<RecordingExecutor>) -> String {
    flow(
        &p.executor().model(IpFamily::V4),
        &upstream_node(),
        Protocol::Tcp,
        "10.0.0.2",
        "172.30.0.41",
        80,
    )
    .0
}

#[tokio::test]
async fn first_sync_is_full_and_programs_the_kernel() {
    let mut p = proxier();
    let stats = p
        .sync(
            &map(&["10.180.0.1"]),
            &ChangeSet::default(),
            &upstream_node(),
        )
        .await
        .unwrap();
    assert!(stats.full, "the first sync is full even when not asked");
    assert_eq!(to_svc(&p), "10.180.0.1:80");
    let m = p.executor().model(IpFamily::V4);
    assert!(m.chain("mangle", "KUBE-PROXY-CANARY").is_some());
    let pre = &m.chain("nat", "PREROUTING").unwrap().rules;
    assert_eq!(pre[0].target, Target::Jump("KUBE-SERVICES".into()));
    assert!(p.canary_present(IpFamily::V4).await.unwrap());
    let metrics = p.metrics(IpFamily::V4).unwrap();
    assert_eq!(metrics.full_syncs, 1);
    assert!(metrics.rules_total.nat > 0 && metrics.rules_last.nat == metrics.rules_total.nat);
}

#[tokio::test]
async fn endpoint_change_is_a_partial_sync_touching_no_shared_chain() {
    let mut p = proxier();
    let node = upstream_node();
    let m1 = map(&["10.180.0.1"]);
    p.sync(&m1, &ChangeSet::full(), &node).await.unwrap();
    let m2 = map(&["10.180.0.1", "10.180.0.2"]);
    let stats = p
        .sync(&m2, &ChangeSet::between(&m1, &m2), &node)
        .await
        .unwrap();
    assert!(!stats.full);
    assert_eq!(stats.ports_programmed, 1);
    let (_, text) = p.executor().restores().pop().unwrap();
    for shared in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-PROXY-FIREWALL",
        "KUBE-FORWARD",
    ] {
        assert!(
            !text
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(shared)
                    || l.starts_with(&format!(":{shared} "))),
            "{shared} touched:\n{text}"
        );
    }
    assert_eq!(to_svc(&p), "10.180.0.1:80, 10.180.0.2:80");
    // The result equals a full resync of the same map.
    let mut fresh = proxier();
    fresh.sync(&m2, &ChangeSet::full(), &node).await.unwrap();
    assert_eq!(
        p.executor().model(IpFamily::V4).canonical(),
        fresh.executor().model(IpFamily::V4).canonical()
    );
    assert_eq!(p.metrics(IpFamily::V4).unwrap().partial_syncs, 1);
}

#[tokio::test]
async fn failed_restore_keeps_old_rules_and_forces_a_full_sync() {
    let mut p = proxier();
    let node = upstream_node();
    let m1 = map(&["10.180.0.1"]);
    p.sync(&m1, &ChangeSet::full(), &node).await.unwrap();
    let before = p.executor().model(IpFamily::V4);
    let m2 = map(&["10.180.0.2"]);
    p.executor().fail_next.store(true, Ordering::SeqCst);
    assert!(
        p.sync(&m2, &ChangeSet::between(&m1, &m2), &node)
            .await
            .is_err()
    );
    assert_eq!(p.executor().model(IpFamily::V4), before);
    assert_eq!(to_svc(&p), "10.180.0.1:80");
    let metrics = p.metrics(IpFamily::V4).unwrap();
    assert_eq!(
        (metrics.restore_failures, metrics.partial_restore_failures),
        (1, 1)
    );
    assert!(p.needs_full_sync(IpFamily::V4));
    // The runner retries with the changes since the last success; the proxier makes it full.
    let stats = p
        .sync(&m2, &ChangeSet::between(&m1, &m2), &node)
        .await
        .unwrap();
    assert!(stats.full);
    assert_eq!(to_svc(&p), "10.180.0.2:80");
}

#[tokio::test]
async fn full_sync_on_request_removes_stale_chains_and_leftovers() {
    let mut p = proxier();
    let node = upstream_node();
    // A leftover from an earlier run.
    let mut m = Ruleset::new();
    m.restore("*nat\n:KUBE-SVC-LEFTOVER0000000 - [0:0]\n-A KUBE-SVC-LEFTOVER0000000 -j DNAT --to-destination 10.9.9.9:80\nCOMMIT\n", true).unwrap();
    p.executor().set_model(IpFamily::V4, m);
    let m1 = map(&["10.180.0.1", "10.180.0.2"]);
    p.sync(&m1, &ChangeSet::default(), &node).await.unwrap();
    let model = p.executor().model(IpFamily::V4);
    assert!(model.chain("nat", "KUBE-SVC-LEFTOVER0000000").is_none());
    let seps = |m: &Ruleset| {
        m.tables["nat"]
            .chains
            .keys()
            .filter(|c| c.starts_with("KUBE-SEP-"))
            .count()
    };
    assert_eq!(seps(&model), 3);
    let m2 = map(&["10.180.0.1"]);
    p.request_full_sync();
    let stats = p
        .sync(&m2, &ChangeSet::between(&m1, &m2), &node)
        .await
        .unwrap();
    assert!(stats.full);
    assert_eq!(
        seps(&p.executor().model(IpFamily::V4)),
        2,
        "the removed endpoint's chain is deleted"
    );
}

#[tokio::test]
async fn udp_endpoint_removal_deletes_conntrack_entries_after_the_restore() {
    let mut p = proxier();
    let node = upstream_node();
    let m1 = map_of(&yaml(&["10.180.0.1", "10.180.0.2"], "UDP"), TEST_NODE);
    p.sync(&m1, &ChangeSet::full(), &node).await.unwrap();
    let m2 = map_of(&yaml(&["10.180.0.1"], "UDP"), TEST_NODE);
    let changes = ChangeSet::between(&m1, &m2);
    assert!(!changes.stale_flows.is_empty());
    p.sync(&m2, &changes, &node).await.unwrap();
    let calls = p.executor().calls();
    let last_restore = calls
        .iter()
        .rposition(|c| matches!(c, Call::Restore { .. }))
        .unwrap();
    let flows: Vec<_> = calls
        .iter()
        .skip(last_restore)
        .filter_map(|c| match c {
            Call::DeleteFlows(f) => Some(*f),
            _ => None,
        })
        .collect();
    assert_eq!(flows, changes.stale_flows);
    assert!(
        flows
            .iter()
            .all(|f| f.endpoint == Some("10.180.0.2".parse().unwrap()))
    );
}

#[tokio::test]
async fn cleanup_removes_everything_but_kubelets_chain() {
    let mut p = proxier();
    let node = upstream_node();
    p.sync(&map(&["10.180.0.1"]), &ChangeSet::full(), &node)
        .await
        .unwrap();
    p.cleanup().await.unwrap();
    let m = p.executor().model(IpFamily::V4);
    for (tname, t) in &m.tables {
        for (cname, c) in &t.chains {
            if c.policy.is_none() {
                assert_eq!(cname, "KUBE-FIREWALL", "{tname}/{cname} left behind");
            }
            for r in &c.rules {
                if let Target::Jump(j) = &r.target {
                    assert_eq!(j, "KUBE-FIREWALL", "{tname}/{cname}: {r} left behind");
                }
            }
        }
    }
    assert!(!p.canary_present(IpFamily::V4).await.unwrap());
    // Cleanup twice is harmless, and a sync afterwards starts from scratch.
    p.cleanup().await.unwrap();
    let stats = p
        .sync(&map(&["10.180.0.1"]), &ChangeSet::default(), &node)
        .await
        .unwrap();
    assert!(stats.full);
    assert_eq!(to_svc(&p), "10.180.0.1:80");
}
