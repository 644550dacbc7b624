//! Plain counters for the userspace proxy; `kproxy-bin` exports them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by every proxy socket of one [`UserspaceProxier`](crate::UserspaceProxier).
#[derive(Debug, Default)]
pub struct Metrics {
    /// TCP connections accepted.
    pub tcp_connections: AtomicU64,
    /// TCP connections currently open.
    pub tcp_active: AtomicU64,
    /// UDP client sessions created.
    pub udp_sessions: AtomicU64,
    /// Bytes copied from clients to endpoints (TCP and UDP).
    pub bytes_to_endpoints: AtomicU64,
    /// Bytes copied from endpoints back to clients (TCP and UDP).
    pub bytes_to_clients: AtomicU64,
    /// Failed dial attempts (each retry counts).
    pub dial_failures: AtomicU64,
    /// Connections dropped because no endpoint could be reached.
    pub connections_failed: AtomicU64,
    /// SCTP service ports seen and not proxied (the userspace mode has no SCTP).
    pub sctp_unsupported: AtomicU64,
    /// TCP copies that used `splice(2)`.
    pub spliced_connections: AtomicU64,
}

/// A point-in-time copy of [`Metrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// See [`Metrics::tcp_connections`].
    pub tcp_connections: u64,
    /// See [`Metrics::tcp_active`].
    pub tcp_active: u64,
    /// See [`Metrics::udp_sessions`].
    pub udp_sessions: u64,
    /// See [`Metrics::bytes_to_endpoints`].
    pub bytes_to_endpoints: u64,
    /// See [`Metrics::bytes_to_clients`].
    pub bytes_to_clients: u64,
    /// See [`Metrics::dial_failures`].
    pub dial_failures: u64,
    /// See [`Metrics::connections_failed`].
    pub connections_failed: u64,
    /// See [`Metrics::sctp_unsupported`].
    pub sctp_unsupported: u64,
    /// See [`Metrics::spliced_connections`].
    pub spliced_connections: u64,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            tcp_connections: r(&self.tcp_connections),
            tcp_active: r(&self.tcp_active),
            udp_sessions: r(&self.udp_sessions),
            bytes_to_endpoints: r(&self.bytes_to_endpoints),
            bytes_to_clients: r(&self.bytes_to_clients),
            dial_failures: r(&self.dial_failures),
            connections_failed: r(&self.connections_failed),
            sctp_unsupported: r(&self.sctp_unsupported),
            spliced_connections: r(&self.spliced_connections),
        }
    }
}
