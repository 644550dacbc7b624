//! The per-service-port balancer: round robin over the endpoints core selected, with
//! ClientIP session affinity, and the dial retry schedule.
//!
//! Behaviour follows upstream's `LoadBalancerRR` (`pkg/proxy/userspace/roundrobin.go`):
//! - the endpoint list is shuffled whenever it changes, and the index goes back to 0;
//! - `next_endpoint` returns `endpoints[index]` and advances the index;
//! - with ClientIP affinity, a client keeps its endpoint while `now - last_used < ttl`
//!   (`ttl` 0 means 10800 s), and each use refreshes `last_used`;
//! - sticky entries are dropped when their endpoint disappears, and when they expire
//!   (upstream `CleanupStaleStickySessions`, run on every sync).
//!
//! Nothing here reads a clock or an entropy source: callers pass `now` and a seed.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use kproxy_core::model::SessionAffinity;

use crate::error::{Error, Result};

/// Dial timeouts of the successive attempts to reach an endpoint: upstream `tryConnect`
/// (`pkg/proxy/userspace/proxysocket.go`) tries 4 times with these timeouts.
pub const DIAL_TIMEOUTS: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// A small deterministic generator (SplitMix64) for shuffles: seeded by the caller so
/// that tests can predict the order.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        // n is tiny next to 2^64, so the modulo bias does not matter for shuffling.
        (self.next_u64() % n as u64) as usize
    }

    /// Shuffles `v` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Which endpoint a client is stuck to, and when it last used it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sticky {
    endpoint: SocketAddr,
    last_used: Instant,
}

/// Round robin with optional ClientIP affinity over one service port's endpoints.
#[derive(Debug, Clone)]
pub struct Balancer {
    /// The endpoints, in shuffled order.
    endpoints: Vec<SocketAddr>,
    /// The next endpoint to hand out.
    index: usize,
    /// The affinity time-to-live; `None` without affinity.
    ttl: Option<Duration>,
    /// Client IP → its endpoint.
    sticky: HashMap<IpAddr, Sticky>,
    rng: SplitMix64,
}

impl Balancer {
    /// An empty balancer; `seed` drives the shuffles.
    pub fn new(seed: u64, affinity: Option<SessionAffinity>) -> Self {
        Balancer {
            endpoints: Vec::new(),
            index: 0,
            ttl: affinity.map(affinity_ttl),
            sticky: HashMap::new(),
            rng: SplitMix64::new(seed),
        }
    }

    /// The endpoints in their current (shuffled) order.
    pub fn endpoints(&self) -> &[SocketAddr] {
        &self.endpoints
    }

    /// Number of clients with a sticky endpoint.
    pub fn sticky_clients(&self) -> usize {
        self.sticky.len()
    }

    /// Sets the affinity; switching it off or changing the timeout forgets every client
    /// (upstream `NewService` resets the affinity state when the type changes).
    pub fn set_affinity(&mut self, affinity: Option<SessionAffinity>) {
        let ttl = affinity.map(affinity_ttl);
        if ttl != self.ttl {
            self.ttl = ttl;
            self.sticky.clear();
        }
    }

    /// Replaces the endpoint list. When the set differs from the current one, the list is
    /// shuffled, the index reset to 0 and sticky entries of vanished endpoints dropped
    /// (upstream `OnEndpointsUpdate`/`removeSessionAffinityByEndpoint`). An unchanged set
    /// keeps the order and index. Returns whether the set changed.
    pub fn update(&mut self, endpoints: &[SocketAddr]) -> bool {
        let mut new: Vec<SocketAddr> = endpoints.to_vec();
        new.sort_unstable();
        new.dedup();
        let mut old = self.endpoints.clone();
        old.sort_unstable();
        if old == new {
            return false;
        }
        self.sticky
            .retain(|_, s| new.binary_search(&s.endpoint).is_ok());
        self.rng.shuffle(&mut new);
        self.endpoints = new;
        self.index = 0;
        true
    }

    /// The endpoint for a new connection from `client` at `now`.
    ///
    /// With affinity and `reset_affinity == false`, a live sticky entry wins (and is
    /// refreshed); otherwise the next endpoint in round-robin order is taken and, with
    /// affinity, recorded for the client. A retry after a failed dial passes
    /// `reset_affinity = true`, so it moves on instead of retrying the sticky endpoint.
    ///
    /// # Errors
    /// [`Error::NoEndpoints`] when the list is empty.
    pub fn next_endpoint(
        &mut self,
        client: IpAddr,
        reset_affinity: bool,
        now: Instant,
    ) -> Result<SocketAddr> {
        if self.endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        if let Some(ttl) = self.ttl
            && !reset_affinity
            && let Some(s) = self.sticky.get_mut(&client)
            && now.saturating_duration_since(s.last_used) < ttl
        {
            s.last_used = now;
            return Ok(s.endpoint);
        }
        let ep = self.endpoints[self.index % self.endpoints.len()];
        self.index = (self.index + 1) % self.endpoints.len();
        if self.ttl.is_some() {
            self.sticky.insert(
                client,
                Sticky {
                    endpoint: ep,
                    last_used: now,
                },
            );
        }
        Ok(ep)
    }

    /// Drops sticky entries that expired at `now` (upstream `CleanupStaleStickySessions`).
    pub fn cleanup_stale(&mut self, now: Instant) {
        if let Some(ttl) = self.ttl {
            self.sticky
                .retain(|_, s| now.saturating_duration_since(s.last_used) < ttl);
        }
    }
}

/// The affinity TTL: `timeoutSeconds`, with 0 meaning the API default of 10800 s.
fn affinity_ttl(a: SessionAffinity) -> Duration {
    let secs = if a.timeout_seconds == 0 {
        SessionAffinity::DEFAULT_TIMEOUT_SECONDS
    } else {
        a.timeout_seconds
    };
    Duration::from_secs(u64::from(secs))
}

/// Dials an endpoint for a new connection from `client`, trying up to
/// [`DIAL_TIMEOUTS`]`.len()` times (upstream `tryConnect`). The first attempt honours
/// affinity; each retry passes `reset_affinity`, so a dead sticky endpoint is skipped.
///
/// `pick` asks the balancer (it is handed `reset_affinity`); `dial` connects with a
/// timeout; `on_failure` is told about every failed attempt (for the metrics and logs).
///
/// # Errors
/// [`Error::NoEndpoints`] when there is nothing to dial, [`Error::DialFailed`] when
/// every attempt failed.
pub async fn dial_with_retries<T, P, D, F>(
    service: &str,
    mut pick: P,
    mut dial: D,
    mut on_failure: impl FnMut(SocketAddr, &std::io::Error),
) -> Result<(SocketAddr, T)>
where
    P: FnMut(bool) -> Result<SocketAddr>,
    D: FnMut(SocketAddr, Duration) -> F,
    F: Future<Output = std::io::Result<T>>,
{
    for (attempt, timeout) in DIAL_TIMEOUTS.iter().enumerate() {
        let ep = pick(attempt > 0)?;
        match dial(ep, *timeout).await {
            Ok(conn) => return Ok((ep, conn)),
            Err(e) => on_failure(ep, &e),
        }
    }
    Err(Error::DialFailed {
        service: service.to_owned(),
        attempts: DIAL_TIMEOUTS.len(),
    })
}

#[cfg(test)]
#[path = "balance_tests.rs"]
mod tests;
