//! The runner on paused tokio time with a `RecordingProxier`.

use kproxy_core::{BuildOptions, ProxierCall, RecordingProxier};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;

const TIMING: Timing = Timing {
    min_sync_period: Duration::from_secs(1),
    sync_period: Duration::from_secs(30),
    full_sync_period: Duration::from_secs(3600),
    burst: BURST,
};

fn service(name: &str, ip: &str) -> Object {
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{clusterIP: {ip}, ports: [{{name: http, port: 80}}]}}\n"
    );
    let (snap, problems) = Snapshot::from_documents(&yaml).unwrap();
    assert!(problems.is_empty());
    Object::Service(snap.services().next().unwrap().clone())
}

struct Harness {
    proxier: RecordingProxier,
    tx: mpsc::Sender<Event>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    health: Arc<ProxyHealth>,
    metrics: Arc<Metrics>,
}

impl Harness {
    fn start() -> Harness {
        let proxier = RecordingProxier::default();
        let health = Arc::new(ProxyHealth::new(TIMING.sync_period));
        let metrics = Arc::new(Metrics::new());
        let runner = Runner::new(
            ChangeTracker::new(BuildOptions::for_node("n1")),
            Box::new(proxier.clone()),
            TIMING,
            health.clone(),
            metrics.clone(),
        );
        let (tx, rx) = mpsc::channel(64);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(runner.run(rx, async move {
            let _ = stopped.await;
        }));
        Harness {
            proxier,
            tx,
            stop: Some(stop),
            task,
            health,
            metrics,
        }
    }

    async fn send(&self, ev: Event) {
        self.tx.send(ev).await.unwrap();
        // Let the runner take it before the test moves the clock.
        tokio::task::yield_now().await;
    }

    fn syncs(&self) -> Vec<(ServiceMap, ChangeSet)> {
        self.proxier
            .calls()
            .into_iter()
            .map(|c| match c {
                ProxierCall::Sync { map, changes, .. } => (map, changes),
                ProxierCall::Cleanup => panic!("the runner never cleans up"),
            })
            .collect()
    }
}

async fn sleep(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn nothing_is_synced_before_the_first_reset_then_a_full_sync_runs_at_once() {
    let h = Harness::start();
    h.send(Event::Apply(service("early", "10.96.0.1"))).await;
    sleep(600_000).await;
    assert!(h.syncs().is_empty(), "synced before the sources were ready");
    h.send(Event::Reset(vec![service("a", "10.96.0.2")])).await;
    sleep(10).await;
    let syncs = h.syncs();
    assert_eq!(syncs.len(), 1);
    let (map, changes) = &syncs[0];
    assert!(changes.full);
    // The reset is all there is: the early object is gone.
    let names: Vec<String> = map.iter().map(|p| p.name.service.name.clone()).collect();
    assert_eq!(names, ["a"]);
}

#[tokio::test(start_paused = true)]
async fn changes_within_min_sync_period_are_coalesced_into_one_partial_sync() {
    let h = Harness::start();
    h.send(Event::Reset(vec![])).await;
    sleep(10).await;
    assert_eq!(h.syncs().len(), 1);
    // The second token of the burst: synced at once.
    h.send(Event::Apply(service("x", "10.96.0.9"))).await;
    sleep(10).await;
    assert_eq!(h.syncs().len(), 2, "burst 2: the second sync runs at once");
    h.send(Event::Apply(service("a", "10.96.0.2"))).await;
    sleep(100).await;
    h.send(Event::Apply(service("b", "10.96.0.3"))).await;
    sleep(100).await;
    h.send(Event::Apply(service("c", "10.96.0.4"))).await;
    // The bucket is empty until 1 s after the first sync.
    assert_eq!(h.syncs().len(), 2);
    sleep(1000).await;
    let syncs = h.syncs();
    assert_eq!(syncs.len(), 3, "one sync for three changes");
    let (map, changes) = &syncs[2];
    assert!(!changes.full);
    assert_eq!(changes.added.len(), 3);
    assert_eq!(map.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_failed_sync_is_retried_with_backoff_as_a_full_sync_with_every_change() {
    let h = Harness::start();
    h.send(Event::Reset(vec![])).await; // t = 0: sync 1
    sleep(10).await;
    h.proxier.fail_next_sync();
    h.send(Event::Apply(service("a", "10.96.0.2"))).await; // t = 10: sync 2 (burst), fails
    sleep(100).await;
    assert_eq!(h.syncs().len(), 2, "the failing sync ran");
    h.proxier.fail_next_sync();
    // t = 110. The next token comes at t = 1000, before the retry (1010): sync 3 then.
    h.send(Event::Apply(service("b", "10.96.0.3"))).await;
    sleep(940).await;
    assert_eq!(h.syncs().len(), 3);
    // Second failure: the backoff doubled to 2 s, the retry comes at t = 3000.
    sleep(1900).await;
    assert_eq!(h.syncs().len(), 3);
    sleep(200).await;
    let syncs = h.syncs();
    assert_eq!(syncs.len(), 4);
    let (map, changes) = &syncs[3];
    assert!(changes.full, "a retry rewrites everything");
    assert_eq!(
        changes.added.len(),
        2,
        "changes of the failed syncs are carried over"
    );
    assert_eq!(map.len(), 2);
    // After the success, back to normal partial syncs.
    h.send(Event::Delete(ObjectKey::Service(
        kproxy_core::model::ObjectRef::new("default", "a"),
    )))
    .await;
    sleep(1100).await;
    let syncs = h.syncs();
    assert_eq!(syncs.len(), 5);
    assert!(!syncs[4].1.full);
    assert_eq!(syncs[4].1.removed.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_sync_runs_every_sync_period_even_without_changes() {
    let h = Harness::start();
    h.send(Event::Reset(vec![service("a", "10.96.0.2")])).await;
    sleep(10).await;
    sleep(29_000).await;
    assert_eq!(h.syncs().len(), 1);
    sleep(1_000).await;
    let syncs = h.syncs();
    assert_eq!(syncs.len(), 2);
    assert!(syncs[1].1.is_empty(), "nothing changed: {:?}", syncs[1].1);
    assert!(
        h.health
            .report(SystemTime::now(), false)
            .status
            .contains_key("IPv4")
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_returns_without_touching_the_rules() {
    let mut h = Harness::start();
    h.send(Event::Reset(vec![service("a", "10.96.0.2")])).await;
    sleep(10).await;
    h.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(1), &mut h.task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        h.proxier
            .calls()
            .iter()
            .all(|c| matches!(c, ProxierCall::Sync { .. }))
    );
}

#[test]
fn bind_address_replaces_the_primary_ip_of_its_family_only() {
    let (snap, _) = Snapshot::from_documents(
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nstatus: {addresses: \
         [{type: InternalIP, address: 10.0.0.1}, {type: InternalIP, address: 'fd00::1'}]}\n",
    )
    .unwrap();
    let facts = node_facts("n1", Some("192.168.1.1".parse().unwrap()), &snap);
    assert_eq!(
        facts.node_ips,
        [
            "192.168.1.1".parse::<IpAddr>().unwrap(),
            "fd00::1".parse().unwrap()
        ]
    );
    let facts = node_facts("n1", Some("0.0.0.0".parse().unwrap()), &snap);
    assert_eq!(facts.node_ips[0], "10.0.0.1".parse::<IpAddr>().unwrap());
}

#[tokio::test(start_paused = true)]
async fn endpoint_changes_made_after_start_feed_the_network_programming_latency() {
    let h = Harness::start();
    let slice = |trigger: &str| {
        let yaml = format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: a-1, namespace: default,\n\
             \x20 labels: {{kubernetes.io/service-name: a}},\n\
             \x20 annotations: {{endpoints.kubernetes.io/last-change-trigger-time: '{trigger}'}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [10.244.0.1]}}]\n"
        );
        let (snap, problems) = Snapshot::from_documents(&yaml).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        Object::EndpointSlice(snap.slices().next().unwrap().clone())
    };
    // Changed before kproxy started: not counted.
    h.send(Event::Reset(vec![
        service("a", "10.96.0.2"),
        slice("2020-01-01T00:00:00Z"),
    ]))
    .await;
    sleep(10).await;
    let count = |m: &Metrics| {
        m.encode()
            .lines()
            .find(|l| {
                l.starts_with(
                    "kubeproxy_network_programming_duration_seconds_count{ip_family=\"IPv4\"}",
                )
            })
            .map(str::to_owned)
    };
    assert_eq!(count(&h.metrics), None);
    let now = crate::timefmt::rfc3339(SystemTime::now() + Duration::from_millis(1));
    h.send(Event::Apply(slice(&now))).await;
    sleep(1100).await;
    assert_eq!(h.syncs().len(), 2);
    assert_eq!(
        count(&h.metrics).as_deref(),
        Some("kubeproxy_network_programming_duration_seconds_count{ip_family=\"IPv4\"} 1")
    );
}

fn slice_of(service: &str, ip: &str) -> Object {
    let yaml = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {service}-1, namespace: default,\n\
         \x20 labels: {{kubernetes.io/service-name: {service}}}}}\n\
         addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [{ip}]}}]\n"
    );
    let (snap, problems) = Snapshot::from_documents(&yaml).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    Object::EndpointSlice(snap.slices().next().unwrap().clone())
}

/// The endpoints of `service`'s port in a synced map (`None`: the port is not there).
fn endpoints_of(map: &ServiceMap, service: &str) -> Option<Vec<std::net::SocketAddr>> {
    map.iter()
        .find(|p| p.name.service.name == service)
        .map(|p| p.selection.cluster.clone())
}

/// A service added and removed every 3 ms for 3 s (1000 events), while a stable service's
/// endpoint changes once in the middle. The bucket lets through at most one sync per
/// minSyncPeriod plus the burst; the stable change waits for no more than one
/// minSyncPeriod; no sync ever lacks the stable service.
#[tokio::test(start_paused = true)]
async fn a_service_flapping_every_few_milliseconds_is_coalesced_and_starves_nothing() {
    let h = Harness::start();
    h.send(Event::Reset(vec![
        service("stable", "10.96.0.2"),
        slice_of("stable", "10.244.0.1"),
    ]))
    .await;
    sleep(10).await;
    assert_eq!(h.syncs().len(), 1);
    let start = Instant::now();
    let mut changed_at = None;
    let mut applied_after = None;
    for i in 0..1000u32 {
        if i % 2 == 0 {
            h.send(Event::Apply(service("flap", "10.96.0.3"))).await;
        } else {
            h.send(Event::Delete(ObjectKey::Service(
                kproxy_core::model::ObjectRef::new("default", "flap"),
            )))
            .await;
        }
        if i == 500 {
            h.send(Event::Apply(slice_of("stable", "10.244.0.2"))).await;
            changed_at = Some((Instant::now(), h.syncs().len()));
        }
        sleep(3).await;
        if let Some((at, before)) = changed_at
            && applied_after.is_none()
            && h.syncs().len() > before
        {
            applied_after = Some(at.elapsed());
        }
    }
    let flapped = start.elapsed();
    let syncs = h.syncs();
    // Syncs during the flapping: at most one per minSyncPeriod, plus the burst.
    let allowed = flapped.as_millis() / TIMING.min_sync_period.as_millis() + u128::from(BURST);
    assert!(
        (syncs.len() - 1) as u128 <= allowed,
        "{} syncs in {flapped:?}, at most {allowed} allowed",
        syncs.len() - 1
    );
    assert!(syncs.len() >= 3, "the flapping service was synced too");
    for (i, (map, changes)) in syncs.iter().enumerate() {
        assert!(
            endpoints_of(map, "stable").is_some_and(|e| !e.is_empty()),
            "sync {i} lacks the stable service's endpoints"
        );
        assert!(
            changes.removed.iter().all(|k| k.1.service.name != "stable"),
            "sync {i} removes the stable service"
        );
    }
    // The stable change was applied by the first sync after it, within minSyncPeriod.
    let (_, before) = changed_at.unwrap();
    let waited = applied_after.expect("the stable change was never synced");
    assert!(
        waited <= TIMING.min_sync_period + Duration::from_millis(3),
        "the stable change waited {waited:?}"
    );
    let new: std::net::SocketAddr = "10.244.0.2:8080".parse().unwrap();
    let (map, _) = &syncs[before];
    assert_eq!(endpoints_of(map, "stable"), Some(vec![new]));
    // The runner is still healthy and answers as soon as the flapping stops.
    assert!(h.health.is_healthy(SystemTime::now()));
    sleep(1100).await;
    let last = h.syncs().len();
    sleep(5_000).await;
    assert_eq!(
        h.syncs().len(),
        last,
        "nothing left to sync once it settles"
    );
}
