//! The proxier against the fake IPVS table and the recording executor.

use std::net::SocketAddr;
use std::sync::Arc;

use kproxy_core::model::IpFamily;
use kproxy_core::{ChangeSet, Proxier, ServiceMap};

use super::*;
use crate::exec::{Call, FakeIpvs, RecordingExecutor};
use crate::plan::plan;
use crate::plan::tests::{EXAMPLE, cfg, map_of, node};

struct Rig {
    ipvs: Arc<FakeIpvs>,
    exec: Arc<RecordingExecutor>,
}

impl Rig {
    fn new() -> Rig {
        Rig {
            ipvs: Arc::new(FakeIpvs::default()),
            exec: Arc::new(RecordingExecutor::default()),
        }
    }

    fn proxier(&self) -> IpvsProxier {
        IpvsProxier::new(&cfg(), IpFamily::V4, self.ipvs.clone(), self.exec.clone()).unwrap()
    }
}

/// EXAMPLE with the remote web endpoint (10.244.2.6) gone.
fn without_remote_web() -> ServiceMap {
    map_of(&EXAMPLE.replace(
        "- { addresses: [10.244.2.6], conditions: { ready: true }, nodeName: node-b }\n",
        "",
    ))
}

fn kernel_matches_plan(rig: &Rig, p: &IpvsProxier) {
    let plan = p.last_plan().unwrap();
    let state = rig.ipvs.state();
    assert_eq!(
        state.keys().collect::<Vec<_>>(),
        plan.services.keys().collect::<Vec<_>>()
    );
    for (k, vs) in &plan.services {
        let (s, dests) = &state[k];
        assert!(s.same_config(&vs.service));
        assert_eq!(dests, &vs.destinations);
    }
    assert_eq!(rig.exec.addresses(DUMMY_INTERFACE), plan.addresses);
}

#[tokio::test]
async fn first_sync_programs_everything_and_an_unchanged_map_writes_nothing() {
    let rig = Rig::new();
    let mut p = rig.proxier();
    let map = map_of(EXAMPLE);
    let stats = p.sync(&map, &ChangeSet::full(), &node()).await.unwrap();
    assert!(stats.full && stats.ports_programmed == 2);
    kernel_matches_plan(&rig, &p);
    let calls = rig.exec.calls();
    assert!(calls.contains(&Call::SetSysctl("net/ipv4/vs/conntrack".into(), "1".into())));
    assert_eq!(
        calls
            .iter()
            .filter(|c| matches!(c, Call::IpsetRestore(_)))
            .count(),
        1
    );
    assert!(calls.contains(&Call::RestoreIptables(
        IpFamily::V4,
        p.last_plan().unwrap().iptables.clone()
    )));
    let inserts = calls
        .iter()
        .filter(|c| matches!(c, Call::Iptables(_, a) if a[2] == "-I"))
        .count();
    assert_eq!(inserts, 9);
    assert!(rig.exec.set_names().contains("KUBE-CLUSTER-IP"));
    assert!(
        !rig.exec
            .set_names()
            .iter()
            .any(|n| n.starts_with("KPROXY-TMP"))
    );

    rig.ipvs.clear_ops();
    rig.exec.clear();
    let stats = p.sync(&map, &ChangeSet::default(), &node()).await.unwrap();
    assert_eq!((stats.full, stats.objects_written), (false, 0));
    assert!(rig.ipvs.ops().is_empty());
    // A partial sync with nothing to do touches nothing on the host, not even the link.
    assert_eq!(rig.exec.calls(), vec![]);
}

#[tokio::test]
async fn a_restarted_proxier_adopts_the_kernel_state_without_changing_it() {
    let rig = Rig::new();
    let map = map_of(EXAMPLE);
    rig.proxier()
        .sync(&map, &ChangeSet::full(), &node())
        .await
        .unwrap();
    rig.ipvs.clear_ops();
    rig.exec.clear();
    let mut second = rig.proxier();
    let stats = second
        .sync(&map, &ChangeSet::full(), &node())
        .await
        .unwrap();
    assert!(rig.ipvs.ops().is_empty(), "{:?}", rig.ipvs.ops());
    assert!(
        !rig.exec
            .calls()
            .iter()
            .any(|c| matches!(c, Call::AddAddress(..) | Call::DelAddress(..)))
    );
    // The jump rules are found in place, not inserted again.
    assert!(
        !rig.exec
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Iptables(_, a) if a[2] == "-I"))
    );
    // Only the ipsets (swapped in whole) and the iptables restore are written again.
    assert_eq!(
        stats.objects_written,
        second.last_plan().unwrap().ipsets.len() + 1
    );
    kernel_matches_plan(&rig, &second);
}

#[tokio::test(start_paused = true)]
async fn a_removed_tcp_endpoint_drains_then_disappears() {
    let rig = Rig::new();
    let mut p = rig.proxier().with_graceful_timeout(Duration::from_secs(60));
    let before = map_of(EXAMPLE);
    p.sync(&before, &ChangeSet::full(), &node()).await.unwrap();
    let cip = p
        .last_plan()
        .unwrap()
        .services
        .values()
        .find(|v| v.service.port == 80 && v.service.address.to_string() == "10.96.0.10")
        .unwrap()
        .service
        .key();
    let gone: SocketAddr = "10.244.2.6:8080".parse().unwrap();
    rig.ipvs.set_connections(&cip, gone, 2);

    let after = without_remote_web();
    p.sync(&after, &ChangeSet::between(&before, &after), &node())
        .await
        .unwrap();
    let dests = &rig.ipvs.state()[&cip].1;
    assert_eq!(
        dests
            .iter()
            .find(|d| d.socket_addr() == gone)
            .map(|d| d.weight),
        Some(0)
    );
    assert_eq!(p.draining(), [(cip, gone)].into());

    // Still connected: stays. Connections end: deleted on the next sync.
    p.sync(&after, &ChangeSet::default(), &node())
        .await
        .unwrap();
    assert_eq!(rig.ipvs.state()[&cip].1.len(), 2);
    rig.ipvs.set_connections(&cip, gone, 0);
    p.sync(&after, &ChangeSet::default(), &node())
        .await
        .unwrap();
    assert_eq!(rig.ipvs.state()[&cip].1.len(), 1);
    assert!(p.draining().is_empty());

    // Again, but the connections never end: the grace period runs out.
    p.sync(&before, &ChangeSet::between(&after, &before), &node())
        .await
        .unwrap();
    rig.ipvs.set_connections(&cip, gone, 5);
    p.sync(&after, &ChangeSet::between(&before, &after), &node())
        .await
        .unwrap();
    assert_eq!(p.draining().len(), 1);
    tokio::time::advance(Duration::from_secs(61)).await;
    p.sync(&after, &ChangeSet::default(), &node())
        .await
        .unwrap();
    assert_eq!(rig.ipvs.state()[&cip].1.len(), 1);
    assert!(p.draining().is_empty());
}

#[tokio::test]
async fn removed_udp_endpoints_are_deleted_at_once_and_their_flows_cleared() {
    let rig = Rig::new();
    let mut p = rig.proxier();
    let yaml = |eps: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{ name: dns, namespace: default }}\nspec:\n  clusterIP: 10.96.0.53\n  ports: [{{ name: dns, port: 53, protocol: UDP }}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: dns-a\n  namespace: default\n  labels: {{ kubernetes.io/service-name: dns }}\naddressType: IPv4\nports: [{{ name: dns, port: 53, protocol: UDP }}]\nendpoints:\n{eps}"
        )
    };
    let before = map_of(&yaml(
        "- { addresses: [10.244.1.1] }\n- { addresses: [10.244.1.2] }\n",
    ));
    let after = map_of(&yaml("- { addresses: [10.244.1.1] }\n"));
    p.sync(&before, &ChangeSet::full(), &node()).await.unwrap();
    let key = *rig.ipvs.state().keys().next().unwrap();
    rig.ipvs
        .set_connections(&key, "10.244.1.2:53".parse().unwrap(), 4);
    let stats = p
        .sync(&after, &ChangeSet::between(&before, &after), &node())
        .await
        .unwrap();
    assert_eq!(rig.ipvs.state()[&key].1.len(), 1);
    assert!(p.draining().is_empty());
    assert_eq!(stats.flows_deleted, 1);
    assert!(rig.exec.calls().iter().any(|c| matches!(c, Call::ConntrackDelete(f) if f.endpoint == Some("10.244.1.2".parse().unwrap()))));
}

#[tokio::test]
async fn a_failed_sync_is_reported_and_the_next_one_rereads_the_kernel() {
    let rig = Rig::new();
    let mut p = rig.proxier();
    let map = map_of(EXAMPLE);
    rig.exec.fail_next_restore();
    let err = p.sync(&map, &ChangeSet::full(), &node()).await.unwrap_err();
    assert_eq!(err.to_string(), "ipvs sync failed");
    // The IPVS part went in before iptables-restore failed; a failed IPVS write next.
    let after = without_remote_web();
    rig.ipvs.fail_next("netlink");
    assert!(
        p.sync(&after, &ChangeSet::between(&map, &after), &node())
            .await
            .is_err()
    );
    let stats = p
        .sync(&after, &ChangeSet::default(), &node())
        .await
        .unwrap();
    assert!(stats.full);
    kernel_matches_plan(&rig, &p);
}

#[tokio::test]
async fn cleanup_flushes_ipvs_then_link_then_iptables_then_ipsets() {
    let rig = Rig::new();
    let mut p = rig.proxier();
    p.sync(&map_of(EXAMPLE), &ChangeSet::full(), &node())
        .await
        .unwrap();
    rig.exec.clear();
    p.cleanup().await.unwrap();
    assert!(rig.ipvs.state().is_empty());
    let calls = rig.exec.calls();
    let pos = |f: &dyn Fn(&Call) -> bool| calls.iter().position(f).unwrap();
    let link = pos(&|c| matches!(c, Call::DeleteDummy(_)));
    let jump = pos(&|c| matches!(c, Call::Iptables(_, a) if a[2] == "-D"));
    let chain = pos(&|c| matches!(c, Call::Iptables(_, a) if a[2] == "-X"));
    let set = pos(&|c| matches!(c, Call::IpsetRestore(t) if t.starts_with("destroy KUBE-")));
    assert!(link < jump && jump < chain && chain < set, "{calls:?}");
    assert!(rig.exec.set_names().is_empty());
    // Every jump rule was deleted.
    assert!(!rig.exec.calls().is_empty());
    let mut again = rig.proxier();
    again
        .sync(&map_of(EXAMPLE), &ChangeSet::full(), &node())
        .await
        .unwrap();
    assert_eq!(
        rig.exec
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::Iptables(_, a) if a[2] == "-I"))
            .count(),
        9
    );
}

#[test]
fn bad_exclude_cidr_names_the_field() {
    let mut c = cfg();
    c.ipvs.exclude_cidrs = vec!["10.0.0.0/8".into(), "nope".into()];
    let rig = Rig::new();
    let err = IpvsProxier::new(&c, IpFamily::V4, rig.ipvs.clone(), rig.exec.clone()).unwrap_err();
    assert!(
        err.to_string().starts_with("config ipvs.excludeCIDRs[1]: "),
        "{err}"
    );
}

#[tokio::test]
async fn one_failing_ipvs_operation_does_not_stop_the_others() {
    let rig = Rig::new();
    let mut p = rig.proxier();
    rig.ipvs.fail_next("EINVAL");
    let err = p
        .sync(&map_of(EXAMPLE), &ChangeSet::full(), &node())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "ipvs sync failed");
    // The first AddService failed (and with it its destinations); the others went in.
    let plan = plan(&map_of(EXAMPLE), &node(), &cfg(), IpFamily::V4);
    assert_eq!(rig.ipvs.state().len(), plan.services.len() - 1);
    p.sync(&map_of(EXAMPLE), &ChangeSet::default(), &node())
        .await
        .unwrap();
    kernel_matches_plan(&rig, &p);
}
