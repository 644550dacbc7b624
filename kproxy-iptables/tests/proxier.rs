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

/// The deleted-conntrack-flow calls since the last restore.
fn flows_after_last_restore(p: &IptablesProxier<RecordingExecutor>) -> Vec<kproxy_core::StaleFlow> {
    let calls = p.executor().calls();
    let last = calls
        .iter()
        .rposition(|c| matches!(c, Call::Restore { .. }))
        .unwrap();
    calls[last..]
        .iter()
        .filter_map(|c| match c {
            Call::DeleteFlows(f) => Some(*f),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn failed_syncs_lose_no_change_made_in_between() {
    let node = upstream_node();
    let udp = |eps: &[&str]| map_of(&yaml(eps, "UDP"), TEST_NODE);
    let mut p = proxier();
    let m1 = udp(&["10.180.0.1", "10.180.0.2"]);
    p.sync(&m1, &ChangeSet::full(), &node).await.unwrap();
    let good = p.executor().model(IpFamily::V4);

    // m1 -> m2 drops an endpoint; the restore fails: the kernel keeps m1's rules and
    // nothing is deleted from conntrack yet.
    let m2 = udp(&["10.180.0.1"]);
    let c12 = ChangeSet::between(&m1, &m2);
    assert!(!c12.stale_flows.is_empty());
    p.executor().fail_next.store(true, Ordering::SeqCst);
    assert!(p.sync(&m2, &c12, &node).await.is_err());
    assert_eq!(p.executor().model(IpFamily::V4), good);
    assert!(
        !p.executor()
            .calls()
            .iter()
            .any(|c| matches!(c, Call::DeleteFlows(_)))
    );

    // The caller only passes the newest delta (m2 -> m3, an endpoint added), as a
    // vendor's loop may: the proxier still programs everything and deletes m1 -> m2's
    // stale flows.
    let m3 = udp(&["10.180.0.1", "10.180.0.3"]);
    let stats = p
        .sync(&m3, &ChangeSet::between(&m2, &m3), &node)
        .await
        .unwrap();
    assert!(stats.full, "the sync after a failure is full");
    let mut fresh = proxier();
    fresh.sync(&m3, &ChangeSet::full(), &node).await.unwrap();
    assert_eq!(
        p.executor().model(IpFamily::V4),
        fresh.executor().model(IpFamily::V4),
        "the kernel holds exactly m3's rules"
    );
    assert_eq!(flows_after_last_restore(&p), c12.stale_flows);
    let m = p.metrics(IpFamily::V4).unwrap();
    assert_eq!(
        (m.restore_failures, m.partial_restore_failures, m.full_syncs),
        (1, 1, 2)
    );

    // An endpoint that failed to go and came back is not cut off afterwards.
    p.executor().fail_next.store(true, Ordering::SeqCst);
    let m4 = udp(&["10.180.0.1"]);
    assert!(
        p.sync(&m4, &ChangeSet::between(&m3, &m4), &node)
            .await
            .is_err()
    );
    p.sync(&m3, &ChangeSet::between(&m4, &m3), &node)
        .await
        .unwrap();
    assert_eq!(flows_after_last_restore(&p), vec![]);
}

#[tokio::test]
async fn full_syncs_ensure_the_nfacct_counters_and_the_rules_count_into_them() {
    let node = upstream_node();
    let mut p = proxier();
    assert!(p.nfacct_packets().await.is_empty(), "nothing before a sync");
    p.sync(&map(&["10.180.0.1"]), &ChangeSet::full(), &node)
        .await
        .unwrap();
    let calls = p.executor().calls();
    for name in kproxy_iptables::nfacct::COUNTERS {
        assert!(calls.contains(&Call::EnsureNfacct(name.into())), "{name}");
    }
    let (_, text) = p.executor().restores().pop().unwrap();
    assert!(text.contains(
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name ct_state_invalid_dropped_pkts -j DROP"
    ), "{text}");
    assert!(
        text.contains("-d 127.0.0.0/8 --dport 3001 -m nfacct --nfacct-name localhost_nps_accepted_pkts -j KUBE-EXT-"),
        "{text}"
    );
    p.executor()
        .set_nfacct("localhost_nps_accepted_pkts", 7, 420);
    let read = p.nfacct_packets().await;
    assert_eq!(read.get("localhost_nps_accepted_pkts"), Some(&7));
    assert_eq!(read.get("ct_state_invalid_dropped_pkts"), Some(&0));
}

#[tokio::test]
async fn without_nfacct_the_rules_go_without_it_and_nothing_is_read() {
    let node = upstream_node();
    let mut p = proxier();
    p.executor().no_nfacct.store(true, Ordering::SeqCst);
    p.sync(&map(&["10.180.0.1"]), &ChangeSet::full(), &node)
        .await
        .unwrap();
    let (_, text) = p.executor().restores().pop().unwrap();
    assert!(!text.contains("nfacct"), "{text}");
    assert!(text.contains("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"));
    assert!(p.nfacct_packets().await.is_empty());
    assert_eq!(to_svc(&p), "10.180.0.1:80");
    // Once creation works (module loaded), the next full sync uses the counters.
    p.executor().no_nfacct.store(false, Ordering::SeqCst);
    p.request_full_sync();
    p.sync(&map(&["10.180.0.1"]), &ChangeSet::default(), &node)
        .await
        .unwrap();
    let (_, text) = p.executor().restores().pop().unwrap();
    assert!(text.contains("--nfacct-name ct_state_invalid_dropped_pkts"));
}
