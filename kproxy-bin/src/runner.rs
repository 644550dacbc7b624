//! The sync loop: applies source events to a [`ChangeTracker`] and drives the backend,
//! like upstream's `BoundedFrequencyRunner` around `syncProxyRules`:
//!
//! - nothing is synced before the sources' first `Reset` (the readiness barrier), so an
//!   empty or half-listed map never reaches the backend;
//! - after a change, a sync runs as soon as the rate limit allows: a token bucket of
//!   [`BURST`] (upstream: 2) tokens refilled one per `minSyncPeriod`, so after a quiet
//!   period two syncs may run back to back, and under a steady stream of changes one runs
//!   every `minSyncPeriod`; changes arriving meanwhile are coalesced into the next one;
//! - a sync runs at least every `syncPeriod`, and is a full one when the last full sync
//!   is older than an hour (upstream's `FullSyncPeriod`);
//! - a failed sync is retried with exponential backoff (1 s doubling up to `syncPeriod`)
//!   as a full sync carrying every change since the last success (`ChangeSet::merge`);
//! - on shutdown the loop returns and leaves the rules in place, as upstream does on
//!   SIGTERM, so traffic keeps flowing while the next kproxy starts.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kproxy_core::model::IpFamily;
use kproxy_core::{
    ChangeSet, ChangeTracker, Event, NodeFacts, Object, ObjectKey, Proxier, ServiceMap, Snapshot,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::health::ProxyHealth;
use crate::metrics::Metrics;

/// Upstream's `proxyutil.FullSyncPeriod`.
pub const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);
/// First retry delay after a failed sync.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Syncs allowed back to back after a quiet period (upstream's `BoundedFrequencyRunner`
/// is built with burst 2 in every proxier, `pkg/proxy/iptables/proxier.go` `burstSyncs`).
pub const BURST: u32 = 2;

/// The timing of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Least time between two syncs.
    pub min_sync_period: Duration,
    /// Most time between two syncs, and the longest retry backoff.
    pub sync_period: Duration,
    /// Most time between two full syncs.
    pub full_sync_period: Duration,
    /// Syncs allowed back to back (the token bucket's size; [`BURST`] in the daemon).
    pub burst: u32,
}

/// Drives one backend from the events of the sources.
pub struct Runner {
    tracker: ChangeTracker,
    proxier: Box<dyn Proxier>,
    timing: Timing,
    health: Arc<ProxyHealth>,
    metrics: Arc<Metrics>,
    /// `bindAddress`, when it names the node's primary IP (upstream `detectNodeIPs`).
    bind_ip: Option<IpAddr>,
    /// Receives the map after each successful sync (the service health servers).
    synced: Option<watch::Sender<Arc<Synced>>>,
    /// Read the local addresses from the host's interfaces.
    host_addresses: bool,
    /// Reading them failed once already (warned; the Node's addresses are used).
    host_addresses_failed: bool,
    /// Process start: older trigger times are not counted (as upstream).
    started: SystemTime,
}

/// What the last successful sync programmed.
#[derive(Debug, Clone, Default)]
pub struct Synced {
    /// The map.
    pub map: ServiceMap,
    /// The node facts it was programmed with.
    pub node: NodeFacts,
}

/// The node facts for a sync: from the Node object, with `bind_ip` replacing the primary
/// IP of its family when set.
pub fn node_facts(name: &str, bind_ip: Option<IpAddr>, snapshot: &Snapshot) -> NodeFacts {
    let mut facts = NodeFacts::from_node(name, snapshot.node(name));
    if let Some(ip) = bind_ip.filter(|ip| !ip.is_unspecified()) {
        facts
            .node_ips
            .retain(|n| IpFamily::of(n) != IpFamily::of(&ip));
        facts.node_ips.push(ip);
        facts.node_ips.sort_by_key(IpFamily::of);
    }
    facts
}

/// Loop state between iterations.
struct LoopState {
    ready: bool,
    dirty: bool,
    pending: ChangeSet,
    last_attempt: Option<Instant>,
    /// The token bucket (GCRA form): when it will be full again. A sync may start at
    /// `t` if `t >= bucket_full - (burst - 1) × minSyncPeriod`; each sync moves it to
    /// `max(bucket_full, t) + minSyncPeriod`.
    bucket_full: Option<Instant>,
    last_full: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Service and EndpointSlice changes since the last successful sync.
    pending_changes: (u64, u64),
    /// Last-change-trigger-times of the slices changed since the last successful sync.
    triggers: Vec<(IpFamily, SystemTime)>,
}

impl Runner {
    /// A runner for `proxier`, building maps with `tracker`'s options.
    pub fn new(
        tracker: ChangeTracker,
        proxier: Box<dyn Proxier>,
        timing: Timing,
        health: Arc<ProxyHealth>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Runner {
            tracker,
            proxier,
            timing,
            health,
            metrics,
            bind_ip: None,
            host_addresses: false,
            host_addresses_failed: false,
            synced: None,
            started: SystemTime::now(),
        }
    }

    /// Takes the node's local addresses from its interfaces at each sync (as upstream),
    /// instead of the Node object's; see [`crate::host`].
    #[must_use]
    pub fn with_host_addresses(mut self, on: bool) -> Self {
        self.host_addresses = on;
        self
    }

    /// Uses `ip` as the node's primary IP of its family.
    #[must_use]
    pub fn with_bind_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.bind_ip = ip;
        self
    }

    /// Publishes the map on `tx` after every successful sync.
    #[must_use]
    pub fn with_synced(mut self, tx: watch::Sender<Arc<Synced>>) -> Self {
        self.synced = Some(tx);
        self
    }

    /// Runs until `shutdown` completes or every source is gone.
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut st = LoopState {
            ready: false,
            dirty: false,
            pending: ChangeSet::full(),
            last_attempt: None,
            bucket_full: None,
            last_full: None,
            retry_at: None,
            backoff: FIRST_RETRY,
            pending_changes: (0, 0),
            triggers: Vec::new(),
        };
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let deadline = self.deadline(&st);
            tokio::select! {
                biased;
                () = &mut shutdown => {
                    tracing::info!("shutting down; rules are left in place");
                    return;
                }
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(&mut st, ev),
                    None => {
                        tracing::info!("event sources ended");
                        return;
                    }
                },
                () = sleep_until(deadline), if deadline.is_some() => self.sync(&mut st).await,
            }
        }
    }

    /// When the next sync is due, if any.
    fn deadline(&self, st: &LoopState) -> Option<Instant> {
        if !st.ready {
            return None;
        }
        let Some(last) = st.last_attempt else {
            return Some(Instant::now());
        };
        let mut due = last + self.timing.sync_period;
        if st.dirty {
            due = due.min(self.token_at(st).unwrap_or(last));
        }
        if let Some(retry) = st.retry_at {
            due = due.min(retry);
        }
        Some(due)
    }

    /// When the bucket next holds a token (`None`: it is full).
    fn token_at(&self, st: &LoopState) -> Option<Instant> {
        let spare = self
            .timing
            .min_sync_period
            .saturating_mul(self.timing.burst.max(1) - 1);
        let full = st.bucket_full?;
        Some(full.checked_sub(spare).unwrap_or(full))
    }

    fn on_event(&mut self, st: &mut LoopState, ev: Event) {
        let (services, endpoints) = count(&ev);
        if matches!(ev, Event::Reset(_)) && !st.ready {
            tracing::info!("sources listed everything; syncing may start");
            st.ready = true;
        }
        st.triggers
            .extend(trigger_times(&ev).filter(|(_, t)| *t > self.started));
        self.tracker.apply(ev);
        st.dirty = true;
        st.pending_changes.0 += services;
        st.pending_changes.1 += endpoints;
        let now = SystemTime::now();
        self.health.queued_update(now);
        self.metrics.queued(now, services, endpoints);
        self.metrics
            .pending(st.pending_changes.0, st.pending_changes.1);
    }

    async fn sync(&mut self, st: &mut LoopState) {
        let start = Instant::now();
        st.pending.merge(self.tracker.commit());
        if st
            .last_full
            .is_none_or(|t| start.duration_since(t) >= self.timing.full_sync_period)
        {
            st.pending.full = true;
        }
        let snapshot = self.tracker.snapshot();
        let name = self.tracker.options().node_name.clone();
        self.health.set_node(snapshot.node(&name));
        let mut facts = node_facts(&name, self.bind_ip, snapshot);
        if self.host_addresses {
            match crate::host::interface_addresses() {
                Ok(ips) => {
                    facts.local_addresses =
                        crate::host::local_addresses(Some(&ips), &facts.local_addresses);
                }
                Err(e) if !self.host_addresses_failed => {
                    self.host_addresses_failed = true;
                    tracing::warn!(error = %e, "cannot read the interfaces' addresses; using the Node object's");
                }
                Err(_) => {}
            }
        }
        let map = self.tracker.map();
        let result = self.proxier.sync(map, &st.pending, &facts).await;
        st.dirty = false;
        st.last_attempt = Some(start);
        st.bucket_full =
            Some(st.bucket_full.map_or(start, |f| f.max(start)) + self.timing.min_sync_period);
        match result {
            Ok(stats) => {
                if st.pending.full {
                    st.last_full = Some(start);
                }
                tracing::debug!(full = stats.full, ports = stats.ports_programmed, "synced");
                self.metrics
                    .synced(SystemTime::now(), start.elapsed(), st.pending.full, map);
                self.health.updated(SystemTime::now());
                st.pending = ChangeSet::default();
                st.retry_at = None;
                st.backoff = FIRST_RETRY;
                st.pending_changes = (0, 0);
                let now = SystemTime::now();
                for (family, t) in st.triggers.drain(..) {
                    self.metrics
                        .network_programmed(family, now.duration_since(t).unwrap_or_default());
                }
                if let Some(tx) = &self.synced {
                    tx.send_replace(Arc::new(Synced {
                        map: map.clone(),
                        node: facts,
                    }));
                }
            }
            Err(e) => {
                // The backend keeps its last good rules; the retry rewrites everything.
                st.pending.full = true;
                st.retry_at = Some(start + st.backoff);
                tracing::warn!(error = %crate::error::Error::backend(self.proxier.mode(), e).report(), retry_in = ?st.backoff, "sync failed");
                st.backoff = (st.backoff * 2).min(self.timing.sync_period.max(FIRST_RETRY));
                self.metrics.sync_failed();
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d).await;
    }
}

/// The last-change-trigger-times of the slices in an event.
fn trigger_times(ev: &Event) -> impl Iterator<Item = (IpFamily, SystemTime)> + '_ {
    let objects: &[Object] = match ev {
        Event::Apply(o) => std::slice::from_ref(o),
        Event::Reset(objects) => objects,
        Event::Delete(_) => &[],
    };
    objects.iter().filter_map(|o| match o {
        Object::EndpointSlice(s) => Some((
            s.family,
            crate::timefmt::parse_rfc3339(s.last_change_trigger_time.as_deref()?)?,
        )),
        _ => None,
    })
}

/// Service and EndpointSlice changes in an event, for the change counters.
fn count(ev: &Event) -> (u64, u64) {
    let of = |o: &Object| match o {
        Object::Service(_) => (1, 0),
        Object::EndpointSlice(_) => (0, 1),
        Object::Node(_) => (0, 0),
    };
    match ev {
        Event::Apply(o) => of(o),
        Event::Delete(ObjectKey::Service(_)) => (1, 0),
        Event::Delete(ObjectKey::EndpointSlice(_)) => (0, 1),
        Event::Delete(ObjectKey::Node(_)) => (0, 0),
        Event::Reset(objects) => objects
            .iter()
            .map(of)
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)),
    }
}

#[cfg(test)]
mod tests;
