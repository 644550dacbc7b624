//! Proxier tests that open no sockets (the ones that do live in `tests/kernel.rs`, inside
//! network namespaces).

use std::sync::Arc;

use kproxy_core::{BuildOptions, Snapshot};
use kproxy_iptables::Ruleset;
use kproxy_iptables::exec::fake::RecordingExecutor;

use super::*;
use crate::plan::Jumps;

const SCTP_ONLY: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: sig, namespace: default }
spec:
  clusterIP: 10.96.0.11
  ports: [{ port: 9000, protocol: SCTP }]
"#;

fn map_of(yaml: &str) -> ServiceMap {
    let (snap, problems) = Snapshot::from_documents(yaml).unwrap();
    assert!(problems.is_empty());
    ServiceMap::build(&snap, &BuildOptions::for_node("node-a"))
}

#[test]
fn loopback_and_garbage_bind_addresses_are_refused() {
    let exec: Arc<dyn Executor> = Arc::new(RecordingExecutor::new());
    let mut cfg = KubeProxyConfiguration::default();
    "127.0.0.1".clone_into(&mut cfg.bind_address);
    let err = UserspaceProxier::new(&cfg, Arc::clone(&exec)).unwrap_err();
    assert_eq!(err.to_string(), "cannot proxy on localhost");
    "[::1]".clone_into(&mut cfg.bind_address);
    assert!(matches!(
        UserspaceProxier::new(&cfg, Arc::clone(&exec)),
        Err(Error::LoopbackBind)
    ));
    "nope".clone_into(&mut cfg.bind_address);
    assert!(matches!(
        UserspaceProxier::new(&cfg, Arc::clone(&exec)),
        Err(Error::BadBindAddress(_))
    ));
    "0.0.0.0".clone_into(&mut cfg.bind_address);
    "9-1".clone_into(&mut cfg.port_range);
    assert!(matches!(
        UserspaceProxier::new(&cfg, exec),
        Err(Error::BadPortRange { .. })
    ));
}

#[tokio::test]
async fn sctp_ports_are_counted_once_and_never_proxied() {
    let rec = Arc::new(RecordingExecutor::new());
    let mut p = UserspaceProxier::new(&KubeProxyConfiguration::default(), rec.clone()).unwrap();
    let map = map_of(SCTP_ONLY);
    let node = NodeFacts::default();
    for _ in 0..3 {
        let stats = p.sync(&map, &ChangeSet::full(), &node).await.unwrap();
        assert_eq!(stats.ports_programmed, 0);
    }
    assert_eq!(p.metrics().snapshot().sctp_unsupported, 1);
    // Nothing to program, nothing ever programmed: iptables untouched.
    assert!(rec.calls().is_empty());
    // Once the port is gone and comes back it is reported again.
    p.sync(&ServiceMap::default(), &ChangeSet::full(), &node)
        .await
        .unwrap();
    p.sync(&map, &ChangeSet::full(), &node).await.unwrap();
    assert_eq!(p.metrics().snapshot().sctp_unsupported, 2);
}

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: default }
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  ports: [{ name: http, port: 80, protocol: TCP }]
status:
  loadBalancer:
    ingress: [{ ip: 198.51.100.4 }]
"#;

#[tokio::test]
async fn planned_rules_load_into_the_iptables_model_and_cleanup_removes_them() {
    let rec = Arc::new(RecordingExecutor::new());
    let map = map_of(WEB);
    let node = NodeFacts::default();
    let ports: BTreeMap<_, _> = map
        .family(IpFamily::V4)
        .keys()
        .map(|k| (k.clone(), 40000u16))
        .collect();
    // The model knows DNAT but not REDIRECT, physdev or state: listen on a specific
    // address, as `bindAddress: 10.0.0.5` would, with no external IP and no node port
    // (the kernel tests load those for real).
    let listen = ListenConfig::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)), IpFamily::V4, &node);
    let plan = plan::plan(&map, IpFamily::V4, &ports, &listen, &node, &Jumps::none());
    // Someone else's rule in PREROUTING must survive.
    let mut model =
        Ruleset::parse("*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j ACCEPT\nCOMMIT\n")
            .unwrap();
    model.restore(&plan.rules, true).unwrap();
    rec.set_model(IpFamily::V4, model);
    let nat = rec.model(IpFamily::V4).save_table("nat");
    assert_eq!(
        nat.matches("--to-destination 10.0.0.5:40000").count(),
        4,
        "{nat}"
    );
    // A second sync's input adds no duplicate jumps.
    let filter = rec.model(IpFamily::V4).save_table("filter");
    let again = plan::plan(
        &map,
        IpFamily::V4,
        &ports,
        &listen,
        &node,
        &Jumps::from_saved(&nat, &filter),
    );
    let mut m = rec.model(IpFamily::V4);
    m.restore(&again.rules, true).unwrap();
    assert_eq!(m.save_table("nat"), nat);

    let mut p = UserspaceProxier::new(&KubeProxyConfiguration::default(), rec.clone()).unwrap();
    p.cleanup().await.unwrap();
    let nat = rec.model(IpFamily::V4).save_table("nat");
    let filter = rec.model(IpFamily::V4).save_table("filter");
    assert!(
        !nat.contains("KUBE-") && !filter.contains("KUBE-"),
        "{nat}{filter}"
    );
    assert!(nat.contains("-A PREROUTING -j ACCEPT"));
}

#[tokio::test]
async fn a_failed_restore_fails_the_sync() {
    let rec = Arc::new(RecordingExecutor::new());
    let mut p = UserspaceProxier::new(&KubeProxyConfiguration::default(), rec.clone()).unwrap();
    p.programmed.insert(IpFamily::V4);
    rec.fail_next
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = p
        .sync(
            &ServiceMap::default(),
            &ChangeSet::full(),
            &NodeFacts::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "userspace sync failed");
    // The next sync loads the (empty) chains again.
    p.sync(
        &ServiceMap::default(),
        &ChangeSet::full(),
        &NodeFacts::default(),
    )
    .await
    .unwrap();
    let restores: Vec<String> = rec
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            kproxy_iptables::exec::fake::Call::Restore { text, .. } => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(restores.len(), 2);
    assert!(restores[1].contains(":KUBE-PORTALS-CONTAINER - [0:0]"));
}

#[tokio::test]
async fn removed_udp_virtual_ips_get_their_conntrack_entries_deleted() {
    use kproxy_core::model::Protocol;
    use kproxy_core::{FlowTarget, StaleFlow};
    let rec = Arc::new(RecordingExecutor::new());
    let mut p = UserspaceProxier::new(&KubeProxyConfiguration::default(), rec.clone()).unwrap();
    p.programmed.insert(IpFamily::V4);
    let gone = StaleFlow {
        family: IpFamily::V4,
        protocol: Protocol::Udp,
        target: FlowTarget::Vip {
            ip: "10.96.0.53".parse().unwrap(),
            port: 53,
        },
        endpoint: None,
    };
    let endpoint_only = StaleFlow {
        endpoint: Some("10.0.1.5".parse().unwrap()),
        ..gone
    };
    let changes = ChangeSet {
        stale_flows: vec![gone, endpoint_only],
        ..ChangeSet::default()
    };
    p.sync(&ServiceMap::default(), &changes, &NodeFacts::default())
        .await
        .unwrap();
    let deleted: Vec<StaleFlow> = rec
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            kproxy_iptables::exec::fake::Call::DeleteFlows(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, vec![gone]);
}
