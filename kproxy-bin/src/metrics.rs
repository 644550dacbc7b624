//! kube-proxy's metrics (`pkg/proxy/metrics/metrics.go`), same names and labels, in a
//! prometheus-client registry, and the metrics server (`/metrics`, `/healthz`,
//! `/proxyMode`, `/configz`, as upstream's `serveMetrics`).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kproxy_core::model::IpFamily;
use kproxy_core::{KubeProxyConfiguration, ServiceMap};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type FamilyLabel = [(&'static str, &'static str); 1];
type PolicyLabels = [(&'static str, &'static str); 2];
type CodeLabel = [(&'static str, String); 1];
type TableLabels = [(&'static str, &'static str); 2];
/// No labels: a family of these has no sample until the first value is known, as
/// upstream's collector emits none while its nfacct counter cannot be read.
type NoLabels = [(&'static str, &'static str); 0];
type F64Gauge = Gauge<f64, AtomicU64>;

fn new_histogram() -> Histogram {
    // Upstream: prometheus.ExponentialBuckets(0.001, 2, 15).
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn network_programming_histogram() -> Histogram {
    // Upstream: 0.25 s, 0.5 s, then 1..59 s by 1, 60..115 s by 5, 120..300 s by 30.
    let buckets = [0.25, 0.5]
        .into_iter()
        .chain((1..60).map(f64::from))
        .chain((60..120).step_by(5).map(f64::from))
        .chain((120..=300).step_by(30).map(f64::from));
    Histogram::new(buckets)
}

fn label(family: IpFamily) -> FamilyLabel {
    [("ip_family", family.as_api())]
}

/// Every metric kproxy exports; cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    sync_duration: Family<FamilyLabel, Histogram, fn() -> Histogram>,
    sync_full_duration: Family<FamilyLabel, Histogram, fn() -> Histogram>,
    sync_partial_duration: Family<FamilyLabel, Histogram, fn() -> Histogram>,
    network_programming: Family<FamilyLabel, Histogram, fn() -> Histogram>,
    last_sync: Family<FamilyLabel, F64Gauge>,
    last_queued: Family<FamilyLabel, F64Gauge>,
    endpoint_changes_pending: Gauge,
    endpoint_changes_total: Counter,
    service_changes_pending: Gauge,
    service_changes_total: Counter,
    no_local_endpoints: Family<PolicyLabels, Gauge>,
    healthz_total: Family<CodeLabel, Counter>,
    livez_total: Family<CodeLabel, Counter>,
    sync_failures: Family<FamilyLabel, Counter>,
    watch_errors: Family<[(&'static str, &'static str); 1], Counter>,
    iptables_restore_failures: Family<FamilyLabel, Counter>,
    iptables_partial_restore_failures: Family<FamilyLabel, Counter>,
    iptables_total: Family<TableLabels, Gauge>,
    iptables_last: Family<TableLabels, Gauge>,
    iptables_ct_state_invalid_dropped: Family<NoLabels, Counter>,
    iptables_localhost_nodeports_accepted: Family<NoLabels, Counter>,
    ipvs_failures: Family<FamilyLabel, Counter>,
    ipset_restore_failures: Family<FamilyLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The metrics, registered under the `kubeproxy_` prefix. prometheus-client appends
    /// `_total` to counters, so they are registered without it.
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("kubeproxy"),
            sync_duration: Family::new_with_constructor(new_histogram),
            sync_full_duration: Family::new_with_constructor(new_histogram),
            sync_partial_duration: Family::new_with_constructor(new_histogram),
            network_programming: Family::new_with_constructor(network_programming_histogram),
            last_sync: Family::default(),
            last_queued: Family::default(),
            endpoint_changes_pending: Gauge::default(),
            endpoint_changes_total: Counter::default(),
            service_changes_pending: Gauge::default(),
            service_changes_total: Counter::default(),
            no_local_endpoints: Family::default(),
            healthz_total: Family::default(),
            livez_total: Family::default(),
            sync_failures: Family::default(),
            watch_errors: Family::default(),
            iptables_restore_failures: Family::default(),
            iptables_partial_restore_failures: Family::default(),
            iptables_total: Family::default(),
            iptables_last: Family::default(),
            iptables_ct_state_invalid_dropped: Family::default(),
            iptables_localhost_nodeports_accepted: Family::default(),
            ipvs_failures: Family::default(),
            ipset_restore_failures: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration.clone(),
        );
        r.register(
            "sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            m.sync_full_duration.clone(),
        );
        r.register(
            "sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            m.sync_partial_duration.clone(),
        );
        r.register(
            "network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            m.network_programming.clone(),
        );
        r.register(
            "sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_sync.clone(),
        );
        r.register(
            "sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            m.last_queued.clone(),
        );
        r.register(
            "sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            m.endpoint_changes_pending.clone(),
        );
        r.register(
            "sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            m.endpoint_changes_total.clone(),
        );
        r.register(
            "sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            m.service_changes_pending.clone(),
        );
        r.register(
            "sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            m.service_changes_total.clone(),
        );
        r.register(
            "sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            m.no_local_endpoints.clone(),
        );
        r.register(
            "proxy_healthz",
            "Cumulative proxy healthz HTTP status",
            m.healthz_total.clone(),
        );
        r.register(
            "proxy_livez",
            "Cumulative proxy livez HTTP status",
            m.livez_total.clone(),
        );
        r.register(
            "sync_proxy_rules_failures",
            "Cumulative proxy rules sync failures (kproxy: any backend)",
            m.sync_failures.clone(),
        );
        r.register(
            "sync_proxy_rules_iptables_restore_failures",
            "Cumulative proxy iptables restore failures",
            m.iptables_restore_failures.clone(),
        );
        r.register(
            "sync_proxy_rules_iptables_partial_restore_failures",
            "Cumulative proxy iptables failures caused by partial syncs",
            m.iptables_partial_restore_failures.clone(),
        );
        r.register(
            "sync_proxy_rules_ipvs_failures",
            "Cumulative IPVS netlink requests the kernel refused (kproxy, ipvs mode)",
            m.ipvs_failures.clone(),
        );
        r.register(
            "sync_proxy_rules_ipset_restore_failures",
            "Cumulative ipset restore failures (kproxy, ipvs mode)",
            m.ipset_restore_failures.clone(),
        );
        // Gauges whose upstream names end in `_total`: registered as spelled.
        r.register(
            "sync_proxy_rules_iptables_total",
            "Total number of iptables rules owned by kube-proxy",
            m.iptables_total.clone(),
        );
        r.register(
            "sync_proxy_rules_iptables_last",
            "Number of iptables rules written by kube-proxy in last sync",
            m.iptables_last.clone(),
        );
        // Upstream's custom collectors over the nfacct objects
        // (`pkg/proxy/metrics/metrics.go`, `nfacctMetricsCollector`).
        r.register(
            "iptables_ct_state_invalid_dropped_packets",
            "packets dropped by iptables to work around conntrack problems",
            m.iptables_ct_state_invalid_dropped.clone(),
        );
        r.register(
            "iptables_localhost_nodeports_accepted_packets",
            "Number of packets accepted on nodeports of loopback interface",
            m.iptables_localhost_nodeports_accepted.clone(),
        );
        r.register(
            "watch_errors",
            "Cumulative watch errors per resource (kproxy only)",
            m.watch_errors.clone(),
        );
        m
    }

    /// A change arrived (`services` Service and `endpoints` EndpointSlice events), at `now`.
    pub fn queued(&self, now: SystemTime, services: u64, endpoints: u64) {
        let t = unix_seconds(now);
        for f in IpFamily::ALL {
            self.last_queued.get_or_create(&label(f)).set(t);
        }
        self.service_changes_total.inc_by(services);
        self.endpoint_changes_total.inc_by(endpoints);
    }

    /// Pending changes not yet synced.
    pub fn pending(&self, services: u64, endpoints: u64) {
        self.service_changes_pending
            .set(i64::try_from(services).unwrap_or(i64::MAX));
        self.endpoint_changes_pending
            .set(i64::try_from(endpoints).unwrap_or(i64::MAX));
    }

    /// A sync that took `took` succeeded at `now`.
    pub fn synced(&self, now: SystemTime, took: Duration, full: bool, map: &ServiceMap) {
        for f in IpFamily::ALL {
            let l = label(f);
            self.sync_duration
                .get_or_create(&l)
                .observe(took.as_secs_f64());
            let kind = if full {
                &self.sync_full_duration
            } else {
                &self.sync_partial_duration
            };
            kind.get_or_create(&l).observe(took.as_secs_f64());
            self.last_sync.get_or_create(&l).set(unix_seconds(now));
            // Upstream counts service ports with a Local policy and no local endpoints,
            // per traffic policy.
            let ports = map.family(f).values();
            let (mut internal, mut external) = (0, 0);
            for p in ports {
                if p.internal_policy_local && p.selection.local.is_empty() {
                    internal += 1;
                }
                if p.external_policy_local
                    && p.externally_accessible()
                    && p.selection.local.is_empty()
                {
                    external += 1;
                }
            }
            let fam = f.as_api();
            self.no_local_endpoints
                .get_or_create(&[("traffic_policy", "internal"), ("ip_family", fam)])
                .set(internal);
            self.no_local_endpoints
                .get_or_create(&[("traffic_policy", "external"), ("ip_family", fam)])
                .set(external);
        }
        self.pending(0, 0);
    }

    /// Endpoints changed `latency` ago (their slice's last-change-trigger-time) are now
    /// programmed.
    pub fn network_programmed(&self, family: IpFamily, latency: Duration) {
        self.network_programming
            .get_or_create(&label(family))
            .observe(latency.as_secs_f64());
    }

    /// The iptables backend's counters of `family` after a sync (successful or not):
    /// its cumulative failure counts, the rules it owns and the rules the last restore
    /// wrote, per table, and the ports with a Local policy and no local endpoint.
    pub fn iptables_synced(&self, family: IpFamily, m: &kproxy_iptables::Metrics) {
        let l = label(family);
        let catch_up = |c: &Counter, total: u64| {
            let seen = c.get();
            if total > seen {
                c.inc_by(total - seen);
            }
        };
        catch_up(
            &self.iptables_restore_failures.get_or_create(&l),
            m.restore_failures,
        );
        catch_up(
            &self.iptables_partial_restore_failures.get_or_create(&l),
            m.partial_restore_failures,
        );
        let fam = family.as_api();
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        for (table, total, last) in [
            ("filter", m.rules_total.filter, m.rules_last.filter),
            ("nat", m.rules_total.nat, m.rules_last.nat),
        ] {
            let labels = [("table", table), ("ip_family", fam)];
            self.iptables_total.get_or_create(&labels).set(gauge(total));
            self.iptables_last.get_or_create(&labels).set(gauge(last));
        }
        self.no_local_endpoints
            .get_or_create(&[("traffic_policy", "internal"), ("ip_family", fam)])
            .set(gauge(m.no_local_internal));
        self.no_local_endpoints
            .get_or_create(&[("traffic_policy", "external"), ("ip_family", fam)])
            .set(gauge(m.no_local_external));
    }

    /// The IPVS backend's cumulative failure counts of `family` after a sync (successful
    /// or not): its companion iptables-restore failures under upstream's name, and
    /// kproxy's own IPVS request and ipset restore failures.
    pub fn ipvs_synced(&self, family: IpFamily, m: &kproxy_ipvs::proxier::Metrics) {
        let l = label(family);
        for (counter, total) in [
            (&self.iptables_restore_failures, m.iptables_restore_failures),
            (&self.ipvs_failures, m.ipvs_failures),
            (&self.ipset_restore_failures, m.ipset_restore_failures),
        ] {
            let c = counter.get_or_create(&l);
            let seen = c.get();
            if total > seen {
                c.inc_by(total - seen);
            }
        }
    }

    /// The packet counts of the iptables backend's nfacct objects, by object name
    /// (`ct_state_invalid_dropped_pkts`, `localhost_nps_accepted_pkts`), read from the
    /// kernel. A counter missing from `packets` keeps its last value (none before the
    /// first read); one the kernel reset (recreated object) resumes once it passes it.
    pub fn iptables_nfacct(&self, packets: &std::collections::BTreeMap<&str, u64>) {
        for (name, counter) in [
            (
                kproxy_iptables::nfacct::CT_STATE_INVALID_DROPPED,
                &self.iptables_ct_state_invalid_dropped,
            ),
            (
                kproxy_iptables::nfacct::LOCALHOST_NODEPORTS_ACCEPTED,
                &self.iptables_localhost_nodeports_accepted,
            ),
        ] {
            if let Some(&n) = packets.get(name) {
                let c = counter.get_or_create(&[]);
                let seen = c.get();
                if n > seen {
                    c.inc_by(n - seen);
                }
            }
        }
    }

    /// A sync failed.
    pub fn sync_failed(&self) {
        for f in IpFamily::ALL {
            self.sync_failures.get_or_create(&label(f)).inc();
        }
    }

    /// A `/healthz` (or `/livez`) request answered with `code`.
    pub fn health_request(&self, healthz: bool, code: u16) {
        let family = if healthz {
            &self.healthz_total
        } else {
            &self.livez_total
        };
        family.get_or_create(&[("code", code.to_string())]).inc();
    }

    /// A watch of `resource` failed.
    pub fn watch_error(&self, resource: &'static str) {
        self.watch_errors
            .get_or_create(&[("resource", resource)])
            .inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// What the metrics handlers share.
#[derive(Clone)]
pub struct MetricsServer {
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The proxy mode, for `/proxyMode`.
    pub mode: &'static str,
    /// The effective config, for `/configz`.
    pub config: Arc<KubeProxyConfiguration>,
}

/// The metrics server's routes.
pub fn router(state: MetricsServer) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/proxyMode", get(proxy_mode))
        .route("/configz", get(configz))
        .with_state(state)
}

async fn metrics(State(s): State<MetricsServer>) -> Response {
    let mut resp = s.metrics.encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

async fn proxy_mode(State(s): State<MetricsServer>) -> Response {
    let mut resp = s.mode.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

async fn configz(State(s): State<MetricsServer>) -> Response {
    let body = serde_json::json!({ "kubeproxy.config.k8s.io": &*s.config });
    crate::health::json_response(StatusCode::OK, body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_upstreams() {
        let m = Metrics::new();
        m.queued(UNIX_EPOCH + Duration::from_secs(5), 1, 2);
        m.synced(
            UNIX_EPOCH + Duration::from_secs(7),
            Duration::from_millis(3),
            true,
            &ServiceMap::default(),
        );
        m.health_request(true, 503);
        m.network_programmed(IpFamily::V6, Duration::from_millis(700));
        let text = m.encode();
        for want in [
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.004\",ip_family=\"IPv4\"} 1",
            "kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family=\"IPv6\"} 1",
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"} 7.0",
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family=\"IPv4\"} 5.0",
            "kubeproxy_sync_proxy_rules_endpoint_changes_total 2",
            "kubeproxy_sync_proxy_rules_service_changes_total 1",
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending 0",
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\",ip_family=\"IPv4\"} 0",
            "kubeproxy_proxy_healthz_total{code=\"503\"} 1",
            "kubeproxy_network_programming_duration_seconds_bucket{le=\"0.5\",ip_family=\"IPv6\"} 0",
            "kubeproxy_network_programming_duration_seconds_bucket{le=\"1.0\",ip_family=\"IPv6\"} 1",
            "kubeproxy_network_programming_duration_seconds_bucket{le=\"300.0\",ip_family=\"IPv6\"} 1",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn nfacct_counters_appear_once_read_and_follow_the_kernel() {
        let m = Metrics::new();
        let sample = |text: &str, name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .map(str::to_owned)
        };
        let ct = "kubeproxy_iptables_ct_state_invalid_dropped_packets_total";
        let lo = "kubeproxy_iptables_localhost_nodeports_accepted_packets_total";
        let text = m.encode();
        assert_eq!(sample(&text, ct), None, "no sample before a read");
        let mut read = std::collections::BTreeMap::new();
        read.insert("ct_state_invalid_dropped_pkts", 0u64);
        read.insert("localhost_nps_accepted_pkts", 5u64);
        m.iptables_nfacct(&read);
        read.insert("localhost_nps_accepted_pkts", 9);
        m.iptables_nfacct(&read);
        let text = m.encode();
        assert_eq!(sample(&text, ct), Some(format!("{ct} 0")));
        assert_eq!(sample(&text, lo), Some(format!("{lo} 9")));
        assert!(text.contains(
            "# HELP kubeproxy_iptables_localhost_nodeports_accepted_packets Number of packets accepted on nodeports of loopback interface.\n# TYPE kubeproxy_iptables_localhost_nodeports_accepted_packets counter\n"
        ), "{text}");
    }
}
