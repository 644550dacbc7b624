//! Proxy health, as upstream's `pkg/proxy/healthcheck/proxy_health.go`: the state the
//! runner feeds (`queued_update` on every change, `updated` after every successful sync)
//! and the `/healthz` and `/livez` handlers that report it.
//!
//! A family is unhealthy when a change has waited for a sync for `2 × syncPeriod` or
//! more. Families that never synced are healthy (starting up). `/healthz` also needs the
//! node to be eligible: its Node object known, not being deleted, not tainted
//! `ToBeDeletedByClusterAutoscaler`.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kproxy_core::model::{IpFamily, Node};
use serde::Serialize;

use crate::metrics::Metrics;
use crate::timefmt::{GO_ZERO_TIME, rfc3339};

/// One family's health, in the response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FamilyHealth {
    /// RFC 3339 time of the family's last successful sync.
    pub last_updated: String,
    /// Whether the family is healthy.
    pub healthy: bool,
}

/// The body of `/healthz` and `/livez` (upstream's `ProxyHealth`, field for field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// The latest sync of any family; the current time when healthy (upstream keeps
    /// that for compatibility with older releases).
    pub last_updated: String,
    /// The time of the request.
    pub current_time: String,
    /// `/healthz` only: whether the node may receive traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_eligible: Option<bool>,
    /// Whether every family is healthy.
    pub healthy: bool,
    /// Per family (`IPv4`, `IPv6`) that ever synced.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub status: BTreeMap<&'static str, FamilyHealth>,
}

#[derive(Debug, Default)]
struct Inner {
    last_updated: BTreeMap<IpFamily, SystemTime>,
    oldest_queued: BTreeMap<IpFamily, SystemTime>,
    node_eligible: bool,
}

/// The shared health state.
#[derive(Debug)]
pub struct ProxyHealth {
    timeout: Duration,
    inner: Mutex<Inner>,
}

impl ProxyHealth {
    /// Health with upstream's timeout: `2 × sync_period`.
    pub fn new(sync_period: Duration) -> Self {
        ProxyHealth {
            timeout: sync_period * 2,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A change is waiting for a sync (keeps the oldest time).
    pub fn queued_update(&self, now: SystemTime) {
        let mut inner = self.lock();
        for f in IpFamily::ALL {
            inner.oldest_queued.entry(f).or_insert(now);
        }
    }

    /// A sync succeeded: nothing is pending any more.
    pub fn updated(&self, now: SystemTime) {
        let mut inner = self.lock();
        for f in IpFamily::ALL {
            inner.oldest_queued.remove(&f);
            inner.last_updated.insert(f, now);
        }
    }

    /// Records this node's Node object (`None`: not known or deleted).
    pub fn set_node(&self, node: Option<&Node>) {
        self.lock().node_eligible = node.is_some_and(|n| !n.being_deleted);
    }

    /// Whether every family is healthy at `now` (what the service health checks use).
    pub fn is_healthy(&self, now: SystemTime) -> bool {
        self.report(now, false).healthy
    }

    /// The report at `now`; with `healthz`, node eligibility counts and is included.
    pub fn report(&self, now: SystemTime, healthz: bool) -> HealthReport {
        let inner = self.lock();
        let mut report = HealthReport {
            last_updated: rfc3339(GO_ZERO_TIME),
            current_time: rfc3339(now),
            node_eligible: healthz.then_some(inner.node_eligible),
            healthy: true,
            status: BTreeMap::new(),
        };
        let mut latest = None;
        for (family, updated) in &inner.last_updated {
            let late = inner
                .oldest_queued
                .get(family)
                .is_some_and(|q| now.duration_since(*q).unwrap_or_default() >= self.timeout);
            report.healthy &= !late;
            report.status.insert(
                family.as_api(),
                FamilyHealth {
                    last_updated: rfc3339(*updated),
                    healthy: !late,
                },
            );
            latest = latest.max(Some(*updated));
        }
        if let Some(t) = latest {
            report.last_updated = rfc3339(t);
        }
        if healthz {
            report.healthy &= inner.node_eligible;
        }
        if report.healthy {
            report.last_updated = report.current_time.clone();
        }
        report
    }
}

/// What the health handlers share.
#[derive(Clone)]
pub struct HealthServer {
    /// The health state.
    pub health: std::sync::Arc<ProxyHealth>,
    /// The metrics (for the healthz/livez request counters).
    pub metrics: std::sync::Arc<Metrics>,
}

/// The healthz server's routes: `/healthz` and `/livez`.
pub fn router(state: HealthServer) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .with_state(state)
}

async fn healthz(State(s): State<HealthServer>) -> Response {
    respond(&s, true)
}

async fn livez(State(s): State<HealthServer>) -> Response {
    respond(&s, false)
}

fn respond(s: &HealthServer, healthz: bool) -> Response {
    let report = s.health.report(SystemTime::now(), healthz);
    let code = if report.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    s.metrics.health_request(healthz, code.as_u16());
    let body = serde_json::to_string(&report).unwrap_or_default();
    json_response(code, body)
}

/// A response with upstream's JSON headers.
pub fn json_response(code: StatusCode, body: String) -> Response {
    let mut resp = (code, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn node(being_deleted: bool) -> Node {
        Node {
            name: "n1".into(),
            labels: Default::default(),
            addresses: vec![],
            pod_cidrs: vec![],
            being_deleted,
        }
    }

    #[test]
    fn a_change_waiting_two_sync_periods_makes_the_proxy_unhealthy() {
        let h = ProxyHealth::new(Duration::from_secs(30));
        h.set_node(Some(&node(false)));
        // Never synced: healthy (starting up), no per-family status.
        h.queued_update(at(1000));
        let r = h.report(at(5000), true);
        assert!(r.healthy);
        assert!(r.status.is_empty());
        h.updated(at(1010));
        h.queued_update(at(1020));
        h.queued_update(at(1050)); // the oldest pending change counts
        assert!(h.report(at(1079), true).healthy);
        let r = h.report(at(1080), true);
        assert!(!r.healthy);
        assert_eq!(r.last_updated, rfc3339(at(1010)));
        assert!(!r.status["IPv4"].healthy);
        h.updated(at(1081));
        assert!(h.report(at(1082), false).healthy);
    }

    #[test]
    fn healthz_needs_an_eligible_node_but_livez_does_not() {
        let h = ProxyHealth::new(Duration::from_secs(30));
        h.updated(at(100));
        assert!(!h.report(at(101), true).healthy, "unknown node");
        assert!(h.report(at(101), false).healthy);
        h.set_node(Some(&node(true)));
        let r = h.report(at(101), true);
        assert_eq!((r.healthy, r.node_eligible), (false, Some(false)));
        h.set_node(Some(&node(false)));
        let r = h.report(at(101), true);
        assert!(r.healthy);
        // Healthy: lastUpdated is the current time, as upstream.
        assert_eq!(r.last_updated, r.current_time);
        let json = serde_json::to_value(h.report(at(101), false)).unwrap();
        assert!(json.get("nodeEligible").is_none());
        assert_eq!(
            json["status"]["IPv6"]["lastUpdated"],
            "1970-01-01T00:01:40Z"
        );
    }
}
