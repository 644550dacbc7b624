//! Faults, end to end in-process: the daemon ([`run_with`]) against the fake API server
//! on a real socket ([`FakeApiServer`]), a `RecordingProxier` as the backend, real HTTP
//! requests to `/healthz`, and the daemon's own logs captured.
//!
//! # Why a 3-second outage stands for minutes
//! The watch path never gives up: kube-rs's `DefaultBackoff` (what the daemon uses) has
//! no attempt limit and caps at 30 s, so an outage of any length is the same loop of
//! "connect, fail, wait at most the cap, connect again". These tests run that same loop
//! with the cap at 100 ms instead of 30 s and a 1 s read timeout instead of 295 s, so a
//! 3 s outage is ~30 capped retries per resource, as many as a 15-minute outage makes
//! with the defaults. They check that the retry count keeps growing to the end (no
//! give-up), that the periodic syncs keep running with the last good map for several
//! `syncPeriod`s and health timeouts (2 × syncPeriod), and that the logs stay a few
//! lines however many retries there are (`warn_every` is 1 s here, 60 s by default).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use kproxy_core::config::Duration as CfgDuration;
use kproxy_core::{ProxierCall, RecordingProxier, ServiceMap};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::tests::{free_port, get};
use super::*;
use crate::source::kube::Resource;
use crate::source::kube::fake_http::FakeApiServer;

const TOKEN_MARKER: &str = "TOKEN-MARKER-5f0c2b";
const OBJECT_MARKER: &str = "OBJECT-MARKER-9d41e7";

// === objects ===

fn node() -> Value {
    json!({ "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": "n1" },
            "status": { "addresses": [{ "type": "InternalIP", "address": "10.0.0.1" }] } })
}

fn service(name: &str, ip: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": name, "namespace": "default",
                          "labels": { "marker": OBJECT_MARKER },
                          "annotations": { "kproxy.test/secret": OBJECT_MARKER } },
            "spec": { "clusterIP": ip, "ports": [{ "name": "http", "port": 80, "protocol": "TCP" }] } })
}

fn slice(service: &str, ips: &[&str]) -> Value {
    let endpoints: Vec<Value> = ips
        .iter()
        .map(|ip| json!({ "addresses": [ip], "conditions": { "ready": true }, "nodeName": "n2" }))
        .collect();
    json!({ "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": { "name": format!("{service}-1"), "namespace": "default",
                          "labels": { "kubernetes.io/service-name": service },
                          "annotations": { "kproxy.test/secret": OBJECT_MARKER } },
            "addressType": "IPv4",
            "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
            "endpoints": endpoints })
}

/// Adds a service with one endpoint.
fn add(api: &FakeApiServer, name: &str, ip: &str, endpoint: &str) {
    api.apply(Resource::Services, service(name, ip));
    api.apply(Resource::EndpointSlices, slice(name, &[endpoint]));
}

/// Service name → its cluster endpoints, for comparing maps.
fn summary(map: &ServiceMap) -> BTreeMap<String, Vec<SocketAddr>> {
    map.iter()
        .map(|p| (p.name.service.name.clone(), p.selection.cluster.clone()))
        .collect()
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<SocketAddr>> {
    pairs
        .iter()
        .map(|(n, ep)| ((*n).to_owned(), vec![format!("{ep}:8080").parse().unwrap()]))
        .collect()
}

// === logs ===

/// Captures the formatted log lines of this thread (the tests run on a current-thread
/// runtime, so every task of the daemon logs here).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// Installs a text subscriber with `filter` for this thread.
    fn install(filter: &str) -> (Capture, tracing::subscriber::DefaultGuard) {
        let c = Capture::default();
        let w = c.clone();
        let sub = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(move || w.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        (c, tracing::subscriber::set_default(sub))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Lines at `level` (`WARN`, `INFO`, …) containing `needle`.
    fn count(&self, level: &str, needle: &str) -> usize {
        self.text()
            .lines()
            .filter(|l| l.trim_start().starts_with(level) && l.contains(needle))
            .count()
    }
}

// === the daemon ===

struct Harness {
    proxier: RecordingProxier,
    metrics: Arc<Metrics>,
    healthz: u16,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<()>>,
    dir: PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The retry timing of these tests: see the module docs.
const FAST: source::kube::Tuning = source::kube::Tuning {
    backoff: Some((Duration::from_millis(10), Duration::from_millis(100))),
    read_timeout: Duration::from_secs(1),
    warn_every: Duration::from_secs(1),
};

fn write_kubeconfig(dir: &std::path::Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
         clusters: [{{name: fake, cluster: {{server: '{server}'}}}}]\n\
         users: [{{name: u, user: {{token: {TOKEN_MARKER}}}}}]\n\
         contexts: [{{name: c, context: {{cluster: fake, user: u}}}}]\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts the daemon on `api` with syncPeriod `sync` and minSyncPeriod `min_sync`.
fn start(api: &FakeApiServer, tag: &str, sync: Duration, min_sync: Duration) -> Harness {
    let proxier = RecordingProxier::default();
    let metrics = Arc::new(Metrics::new());
    let mut h = start_with(api, tag, sync, min_sync, Box::new(proxier.clone()), metrics);
    h.proxier = proxier;
    h
}

/// [`start`] with any backend (`Harness::proxier` then records nothing).
fn start_with(
    api: &FakeApiServer,
    tag: &str,
    sync: Duration,
    min_sync: Duration,
    backend: Box<dyn Proxier>,
    metrics: Arc<Metrics>,
) -> Harness {
    let dir = std::env::temp_dir().join(format!("kproxy-faults-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = write_kubeconfig(&dir, &api.url());
    let healthz = free_port();
    let mut cfg = KubeProxyConfiguration {
        healthz_bind_address: format!("127.0.0.1:{healthz}"),
        metrics_bind_address: format!("127.0.0.1:{}", free_port()),
        ..KubeProxyConfiguration::default()
    };
    cfg.iptables.sync_period = CfgDuration::from_std(sync);
    cfg.iptables.min_sync_period = CfgDuration::from_std(min_sync);
    cfg.client_connection.kubeconfig = kubeconfig.display().to_string();
    let settings = Settings {
        cfg,
        config_path: None,
        node_name: "n1".into(),
        master: None,
        from: vec![],
        api: FAST,
    };
    let proxier = RecordingProxier::default();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run_with(
        settings,
        backend,
        "recording",
        metrics.clone(),
        async move {
            let _ = stopped.await;
            Ok(())
        },
    ));
    Harness {
        proxier,
        metrics,
        healthz,
        stop: Some(stop),
        task,
        dir,
    }
}

impl Harness {
    fn syncs(&self) -> Vec<(ServiceMap, kproxy_core::ChangeSet)> {
        self.proxier
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                ProxierCall::Sync { map, changes, .. } => Some((map, changes)),
                ProxierCall::Cleanup => None,
            })
            .collect()
    }

    /// Waits (at most `limit`) until the last synced map has `want`; the sync count then.
    async fn wait_for(&self, want: &BTreeMap<String, Vec<SocketAddr>>, limit: Duration) -> usize {
        let start = Instant::now();
        loop {
            let syncs = self.syncs();
            if syncs.last().is_some_and(|(m, _)| summary(m) == *want) {
                return syncs.len();
            }
            assert!(
                start.elapsed() < limit,
                "no sync of {want:?} within {limit:?}; last: {:?}",
                syncs.last().map(|(m, _)| summary(m))
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `kubeproxy_watch_errors_total`, all resources.
    fn watch_errors(&self) -> u64 {
        self.metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("kubeproxy_watch_errors_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// `/healthz` must answer 200, quickly.
    async fn healthy(&self) {
        let asked = Instant::now();
        let r = get(self.healthz, "/healthz").await;
        let took = asked.elapsed();
        assert!(
            matches!(&r, Some((200, _, _))),
            "/healthz: {r:?} after {took:?}"
        );
        assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let r = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        assert!(matches!(r, Ok(Ok(Ok(())))), "daemon did not stop cleanly");
    }
}

/// Every sync keeps service `a`, with endpoints.
fn assert_a_never_removed(syncs: &[(ServiceMap, kproxy_core::ChangeSet)]) {
    for (i, (map, changes)) in syncs.iter().enumerate() {
        let s = summary(map);
        assert!(
            s.get("a").is_some_and(|e| !e.is_empty()),
            "sync {i} lost service a: {s:?}"
        );
        assert!(
            changes.removed.iter().all(|k| k.1.service.name != "a"),
            "sync {i} removes a"
        );
    }
}

/// The outage part shared by the refused and hanging cases: `during` seconds of outage,
/// with `/healthz` asked every 250 ms; returns the watch error counts seen.
async fn ride_out_outage(h: &Harness, before: &BTreeMap<String, Vec<SocketAddr>>) -> Vec<u64> {
    let start = Instant::now();
    let mut errors = Vec::new();
    while start.elapsed() < Duration::from_secs(3) {
        h.healthy().await;
        errors.push(h.watch_errors());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The last good map stayed: every sync in the outage (the periodic ones, one per
    // syncPeriod) programmed it unchanged.
    let syncs = h.syncs();
    assert!(syncs.len() >= 3, "periodic syncs stopped: {}", syncs.len());
    for (map, changes) in &syncs {
        assert_eq!(summary(map), *before);
        assert!(changes.removed.is_empty(), "{changes:?}");
    }
    errors
}

/// The API server changes while it is away, then comes back with new resourceVersions
/// (a compaction: every watch gets 410 and relists).
fn change_while_away(api: &FakeApiServer) {
    api.delete(Resource::Services, "default/b");
    api.delete(Resource::EndpointSlices, "default/b-1");
    add(api, "c", "10.96.0.3", "10.244.0.3");
    api.apply(Resource::EndpointSlices, slice("a", &["10.244.0.9"]));
    api.compact();
}

fn cluster(api: &FakeApiServer) -> BTreeMap<String, Vec<SocketAddr>> {
    api.apply(Resource::Node, node());
    add(api, "a", "10.96.0.1", "10.244.0.1");
    add(api, "b", "10.96.0.2", "10.244.0.2");
    expect(&[("a", "10.244.0.1"), ("b", "10.244.0.2")])
}

#[tokio::test]
async fn an_api_server_refusing_connections_for_minutes_loses_no_rule_and_recovery_is_automatic() {
    let (logs, _guard) = Capture::install("info,kproxy=debug");
    let mut api = FakeApiServer::start().await;
    let before = cluster(&api);
    let h = start(
        &api,
        "refused",
        Duration::from_secs(1),
        Duration::from_millis(100),
    );
    h.wait_for(&before, Duration::from_secs(15)).await;

    api.stop();
    let errors = ride_out_outage(&h, &before).await;
    // Retries never stop: the count grows through the whole outage, ~10 a second per
    // resource at the capped backoff.
    let n = errors.len();
    assert!(
        errors[0] < errors[n / 2] && errors[n / 2] < errors[n - 1],
        "{errors:?}"
    );
    assert!(errors[n - 1] >= 30, "{errors:?}");
    // Logged, without a flood: one warn per resource when it starts, then a reminder
    // per warn_every; each retry at debug only.
    let warns =
        logs.count("WARN", "watch failed, retrying") + logs.count("WARN", "watch still failing");
    let debugs = logs.count("DEBUG", "watch failed, retrying");
    assert!((3..=3 * 5).contains(&warns), "{warns} warn lines");
    assert!(
        debugs as u64 + 3 >= errors[n - 1] / 2,
        "{debugs} debug lines"
    );
    assert!(
        logs.count("WARN", "Connection refused") >= 3,
        "the cause is in the warning:\n{}",
        logs.text()
    );

    change_while_away(&api);
    let synced_before = h.syncs().len();
    api.restart().await;
    let want = expect(&[("a", "10.244.0.9"), ("c", "10.244.0.3")]);
    let converged = h.wait_for(&want, Duration::from_secs(10)).await;
    // One Reset per relisted resource, coalesced by the runner: at most three syncs
    // (the burst lets the first two through at once).
    assert!(
        converged - synced_before <= 3,
        "{} syncs to converge",
        converged - synced_before
    );
    assert_a_never_removed(&h.syncs());
    assert!(logs.count("INFO", "watch works again") >= 1);
    h.healthy().await;
    h.stop().await;
}

#[tokio::test]
async fn an_api_server_that_accepts_but_never_answers_loses_no_rule_and_is_retried() {
    let (logs, _guard) = Capture::install("info,kproxy=debug");
    let api = FakeApiServer::start().await;
    let before = cluster(&api);
    let h = start(
        &api,
        "hang",
        Duration::from_secs(1),
        Duration::from_millis(100),
    );
    h.wait_for(&before, Duration::from_secs(15)).await;

    api.hang();
    let (connections, requests) = (api.connections(), api.requests());
    let errors = ride_out_outage(&h, &before).await;
    // Each hung request ends at the read timeout (1 s here, 295 s by default) and is
    // retried on a new connection: kproxy is never stuck on a dead request.
    assert!(
        api.connections() >= connections + 3,
        "{} new connections",
        api.connections() - connections
    );
    assert!(
        api.requests() >= requests + 3,
        "requests were read, not answered"
    );
    assert!(errors[errors.len() - 1] > errors[0], "{errors:?}");
    assert!(logs.count("WARN", "watch failed, retrying") >= 1);

    change_while_away(&api);
    api.answer();
    let want = expect(&[("a", "10.244.0.9"), ("c", "10.244.0.3")]);
    h.wait_for(&want, Duration::from_secs(10)).await;
    assert_a_never_removed(&h.syncs());
    h.healthy().await;
    h.stop().await;
}

/// Service `flap` added and removed every 3 ms for 3 s through the API, while service
/// `a`'s endpoint changes once: syncs stay within the rate limit, `a`'s change is not
/// starved, `/healthz` answers fast and healthy throughout, and `a` is in every sync.
#[tokio::test]
async fn a_service_flapping_every_few_milliseconds_starves_neither_syncs_nor_health() {
    let api = FakeApiServer::start().await;
    api.apply(Resource::Node, node());
    add(&api, "a", "10.96.0.1", "10.244.0.1");
    let min_sync = Duration::from_millis(500);
    let h = start(&api, "flap", Duration::from_secs(1), min_sync);
    h.wait_for(&expect(&[("a", "10.244.0.1")]), Duration::from_secs(15))
        .await;

    let first = h.syncs().len();
    let start = Instant::now();
    let mut changed: Option<Instant> = None;
    let mut applied_after = None;
    let new_a: SocketAddr = "10.244.0.2:8080".parse().unwrap();
    for i in 0..1000u32 {
        if start.elapsed() > Duration::from_secs(3) {
            break;
        }
        if i % 2 == 0 {
            api.apply(Resource::Services, service("flap", "10.96.0.5"));
        } else {
            api.delete(Resource::Services, "default/flap");
        }
        if changed.is_none() && start.elapsed() > Duration::from_millis(1500) {
            api.apply(Resource::EndpointSlices, slice("a", &["10.244.0.2"]));
            changed = Some(Instant::now());
        }
        if i % 30 == 0 {
            h.healthy().await;
        }
        if let Some(at) = changed
            && applied_after.is_none()
            && h.syncs()
                .last()
                .is_some_and(|(m, _)| summary(m).get("a") == Some(&vec![new_a]))
        {
            applied_after = Some(at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let flapped = start.elapsed();
    let syncs = h.syncs();
    let during = syncs.len() - first;
    // At most one sync per minSyncPeriod plus the burst (+1 for a sync already under way
    // at either end of the window).
    let allowed = (flapped.as_millis() / min_sync.as_millis()) as usize + BURST as usize + 1;
    assert!(
        during <= allowed,
        "{during} syncs in {flapped:?}, {allowed} allowed"
    );
    assert!(
        syncs[first..]
            .iter()
            .any(|(m, _)| summary(m).contains_key("flap")),
        "the flapping service was never synced"
    );
    assert_a_never_removed(&syncs);
    if applied_after.is_none() {
        // The flapping stopped with `flap` present or absent; wait for `a` alone.
        let start = Instant::now();
        while h
            .syncs()
            .last()
            .is_none_or(|(m, _)| summary(m).get("a") != Some(&vec![new_a]))
        {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "a's change never synced"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        applied_after = changed.map(|c| c.elapsed());
    }
    let waited = applied_after.unwrap_or_default();
    // minSyncPeriod, plus the watch round trip and a debug build's slack.
    assert!(
        waited <= min_sync + Duration::from_millis(1000),
        "the stable service's change waited {waited:?}"
    );
    h.healthy().await;
    h.stop().await;
}

/// At info level, no log line carries object contents (labels, annotations) or the
/// bearer token; an object name with a newline stays on one (escaped) line.
#[tokio::test]
async fn logs_above_debug_carry_no_object_contents_or_credentials_and_escape_names() {
    let (logs, _guard) = Capture::install("info");
    let api = FakeApiServer::start().await;
    let before = cluster(&api);
    // A name no API server would accept, with an unusable clusterIP: logged and skipped.
    api.apply(
        Resource::Services,
        service("evil\nINJECTED-LINE level=ERROR", "not-an-ip"),
    );
    let h = start(
        &api,
        "logs",
        Duration::from_secs(1),
        Duration::from_millis(100),
    );
    h.wait_for(&before, Duration::from_secs(15)).await;
    add(&api, "d", "10.96.0.4", "10.244.0.4");
    let mut want = before.clone();
    want.extend(expect(&[("d", "10.244.0.4")]));
    h.wait_for(&want, Duration::from_secs(10)).await;
    h.stop().await;
    check_logs(&logs);
}

/// What [`logs_above_debug_carry_no_object_contents_or_credentials_and_escape_names`]
/// checks in the captured info-level output.
fn check_logs(logs: &Capture) {
    let text = logs.text();
    assert!(text.contains("starting kproxy"), "{text}");
    assert!(
        !text.contains(OBJECT_MARKER),
        "object contents logged:\n{text}"
    );
    assert!(!text.contains(TOKEN_MARKER), "token logged:\n{text}");
    assert!(
        text.lines().all(|l| !l.starts_with("INJECTED-LINE")),
        "a name split a log line:\n{text}"
    );
    assert!(
        text.contains("evil\\nINJECTED-LINE"),
        "the bad object is reported, escaped:\n{text}"
    );
}

/// Set in the child process of the 100 000 endpoints test.
const BIG_CHILD: &str = "KPROXY_TEST_BIG_CHILD";
const BIG_SERVICES: usize = 1000;
const BIG_PER_SERVICE: usize = 100;

/// The endpoint IPs of big service `i`: 10.(100 + i / 250).(i % 250).1..=100.
fn big_endpoints(i: usize) -> Vec<String> {
    (1..=BIG_PER_SERVICE)
        .map(|e| format!("10.{}.{}.{e}", 100 + i / 250, i % 250))
        .collect()
}

/// 100 000 endpoints (1000 services × 100) from the fake API server through the daemon
/// to the backend, then through the iptables planner: every endpoint reaches the plan.
/// Runs in a child process (this test binary again, this test only), so that its peak
/// RSS is its own and not the other tests'.
#[test]
fn a_hundred_thousand_endpoints_reach_the_iptables_plan_in_bounded_memory() {
    if std::env::var_os(BIG_CHILD).is_some() {
        return big_child();
    }
    let started = Instant::now();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "daemon::faults::a_hundred_thousand_endpoints_reach_the_iptables_plan_in_bounded_memory",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(BIG_CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peak_kib: u64 = stdout
        .lines()
        .find_map(|l| l.split("big-child peak-rss-kib=").nth(1))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no peak in {stdout}"));
    let base_kib: u64 = stdout
        .lines()
        .find_map(|l| l.split("base-rss-kib=").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no base in {stdout}"));
    // Measured (debug build, x86_64, 2 cores): the fake API server's own copy of the
    // cluster (100k endpoints as serde_json values) is ~175 MiB before the daemon starts
    // (`base`); the peak is ~345 MiB, so kproxy's side (the ~15 MB list body, the
    // watcher's typed objects, core's snapshot and map, the RecordingProxier's copy of
    // each synced map, the 30 MB iptables-restore text and this test's index of it)
    // adds ~170 MiB, ~1.7 KiB per endpoint. The bounds are about twice that: a leak per
    // event or one more copy of the cluster crosses them; allocator and build noise do not.
    let peak_mib = peak_kib / 1024;
    let added_mib = peak_kib.saturating_sub(base_kib) / 1024;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    eprintln!(
        "100k endpoints: peak RSS {peak_mib} MiB, {added_mib} MiB above the fake's objects, {:?}",
        started.elapsed()
    );
    assert!(peak_mib < 700, "peak RSS {peak_mib} MiB");
    assert!(
        added_mib < 400,
        "kproxy's side took {added_mib} MiB for 100k endpoints"
    );
}

/// `VmRSS` of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `VmRSS` and `VmHWM` of this process, for the child's progress lines.
fn rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .filter(|l| l.starts_with("VmRSS:") || l.starts_with("VmHWM:"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The child's part: prints `big-child peak-rss-kib=N` on success.
fn big_child() {
    let mut base = 0;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t0 = Instant::now();
        let api = FakeApiServer::start().await;
        api.apply(Resource::Node, node());
        for i in 0..BIG_SERVICES {
            let name = format!("s{i}");
            let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
            api.seed(Resource::Services, service(&name, &ip));
            let eps = big_endpoints(i);
            let refs: Vec<&str> = eps.iter().map(String::as_str).collect();
            api.seed(Resource::EndpointSlices, slice(&name, &refs));
        }
        assert_eq!(api.objects(), 1 + 2 * BIG_SERVICES);
        base = rss_kib();
        eprintln!("big-child: objects made in {:?}, {}", t0.elapsed(), rss());
        let h = start(&api, "big", Duration::from_secs(30), Duration::from_secs(1));
        let deadline = Instant::now() + Duration::from_secs(120);
        let (map, node_facts) = loop {
            let last = h.proxier.calls().into_iter().rev().find_map(|c| match c {
                ProxierCall::Sync { map, node, .. } if map.len() == BIG_SERVICES => {
                    Some((map, node))
                }
                _ => None,
            });
            if let Some(found) = last {
                break found;
            }
            assert!(Instant::now() < deadline, "no sync of every service");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        eprintln!("big-child: synced in {:?}, {}", t0.elapsed(), rss());
        h.stop().await;
        drop(api);
        let total: usize = map.iter().map(|p| p.selection.cluster.len()).sum();
        assert_eq!(total, BIG_SERVICES * BIG_PER_SERVICE);
        let cfg = KubeProxyConfiguration::default();
        let text =
            kproxy_iptables::render_plan(&map, &node_facts, &cfg, kproxy_core::model::IpFamily::V4)
                .unwrap();
        eprintln!(
            "big-child: planned {} bytes in {:?}, {}",
            text.len(),
            t0.elapsed(),
            rss()
        );
        let targets: std::collections::HashSet<&str> = text
            .lines()
            .filter_map(|l| l.split("--to-destination ").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .collect();
        for i in 0..BIG_SERVICES {
            for ip in big_endpoints(i) {
                let want = format!("{ip}:8080");
                assert!(targets.contains(want.as_str()), "{want} not in the plan");
            }
        }
        eprintln!("big-child: checked in {:?}", t0.elapsed());
    });
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("0")
        .to_owned();
    println!("\nbig-child peak-rss-kib={peak} base-rss-kib={base}");
}

/// The same through the real iptables backend (over a recording executor whose first
/// restore fails, so that the backend's error path logs too).
#[tokio::test]
async fn logs_of_the_iptables_backend_carry_no_object_contents_or_credentials() {
    use kproxy_iptables::IptablesProxier;
    use kproxy_iptables::exec::fake::RecordingExecutor;
    let (logs, _guard) = Capture::install("info");
    let api = FakeApiServer::start().await;
    cluster(&api);
    api.apply(
        Resource::Services,
        service("evil\nINJECTED-LINE level=ERROR", "not-an-ip"),
    );
    let exec = RecordingExecutor::new();
    exec.fail_next
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let families = vec![kproxy_core::model::IpFamily::V4];
    let cfg = KubeProxyConfiguration::default();
    let inner = IptablesProxier::new(exec, &cfg, &families).unwrap();
    let metrics = Arc::new(Metrics::new());
    let backend = crate::backend::iptables::Exported::new(inner, families, metrics.clone());
    let h = start_with(
        &api,
        "logs-ipt",
        Duration::from_secs(1),
        Duration::from_millis(100),
        Box::new(backend),
        metrics.clone(),
    );
    let synced = |m: &Metrics| {
        m.encode()
            .lines()
            .find(|l| {
                l.starts_with(
                    "kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}",
                )
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let start = Instant::now();
    while synced(&metrics) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no successful sync"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        metrics.encode().contains(
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family=\"IPv4\"} 1"
        ),
        "the injected failure happened"
    );
    let before = synced(&metrics);
    add(&api, "d", "10.96.0.4", "10.244.0.4");
    while synced(&metrics) == before {
        assert!(start.elapsed() < Duration::from_secs(20), "d never synced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.stop().await;
    assert!(logs.count("WARN", "sync failed") >= 1, "{}", logs.text());
    check_logs(&logs);
}
