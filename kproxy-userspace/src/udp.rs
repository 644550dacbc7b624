//! The UDP proxy socket of one service port (upstream `udpProxySocket`,
//! `pkg/proxy/userspace/proxysocket.go`).
//!
//! Datagrams from each client address form a session: a socket connected to one endpoint,
//! created on the client's first datagram. Replies from the endpoint go back to the client
//! from the service's own socket, so the client sees the address it sent to. A session
//! ends after `idle` without traffic either way (upstream `udpIdleTimeout`, 250ms by
//! default), or when the endpoint refuses (ICMP port unreachable).
//!
//! Sessions run as tasks of the service's [`serve`] future: dropping it (service removed)
//! ends them, as closing the socket did upstream.
//!
//! Unlike TCP (`SO_ORIGINAL_DST`), a UDP socket cannot learn a datagram's destination
//! before the REDIRECT (`IP_ORIGDSTADDR` reports the address after it), so every UDP
//! session uses the endpoints of `internalTrafficPolicy`, whatever address the client
//! sent to.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::balance::dial_with_retries;
use crate::metrics::Metrics;
use crate::plan::unspecified;
use crate::route::Route;

/// Largest datagram relayed (upstream used 4 KiB; this never truncates).
const MAX_DATAGRAM: usize = 65536;

/// Opens a UDP socket on `addr` (port 0: the kernel picks).
///
/// # Errors
/// The socket or bind error.
pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// The idle clock of one session: the last time a datagram went either way.
#[derive(Debug)]
pub struct IdleClock {
    last: Mutex<Instant>,
    idle: Duration,
}

impl IdleClock {
    /// A clock last touched at `now`.
    pub fn new(now: Instant, idle: Duration) -> Self {
        IdleClock {
            last: Mutex::new(now),
            idle,
        }
    }

    /// Records traffic at `now`.
    pub fn touch(&self, now: Instant) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = now;
    }

    /// When the session expires if nothing else happens.
    pub fn deadline(&self) -> Instant {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) + self.idle
    }

    /// Whether the session is idle at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline()
    }
}

/// One client's session.
#[derive(Debug)]
struct Session {
    endpoint: Arc<UdpSocket>,
    clock: IdleClock,
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Arc<Session>>>>;

/// Relays datagrams for one service port until dropped.
pub async fn serve(socket: UdpSocket, route: Arc<Route>, metrics: Arc<Metrics>, idle: Duration) {
    let socket = Arc::new(socket);
    let sessions: Sessions = Arc::default();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        while tasks.try_join_next().is_some() {}
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(service = %route.name, error = %e, "udp receive failed");
                continue;
            }
        };
        let existing = sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&client)
            .cloned();
        let session = match existing {
            Some(s) => s,
            None => match open_session(client, &route, &metrics, idle).await {
                Some(s) => {
                    sessions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(client, Arc::clone(&s));
                    tasks.spawn(relay_replies(
                        Arc::clone(&socket),
                        client,
                        Arc::clone(&s),
                        Arc::clone(&sessions),
                        Arc::clone(&metrics),
                    ));
                    s
                }
                None => continue,
            },
        };
        session.clock.touch(Instant::now());
        match session.endpoint.send(&buf[..n]).await {
            Ok(sent) => Metrics::add(&metrics.bytes_to_endpoints, sent as u64),
            Err(e) => {
                tracing::debug!(service = %route.name, client = %client, error = %e, "udp send failed")
            }
        }
    }
}

/// Connects a socket to an endpoint for a new client (upstream retries this like a TCP
/// dial; a UDP connect fails only without a route).
async fn open_session(
    client: SocketAddr,
    route: &Route,
    metrics: &Metrics,
    idle: Duration,
) -> Option<Arc<Session>> {
    let res = dial_with_retries(
        &route.name,
        |reset| route.pick(client.ip(), None, reset, Instant::now().into_std()),
        |ep: SocketAddr, _timeout| async move {
            let s = UdpSocket::bind(SocketAddr::new(unspecified_of(ep.ip()), 0)).await?;
            s.connect(ep).await?;
            Ok(s)
        },
        |_, _| Metrics::add(&metrics.dial_failures, 1),
    )
    .await;
    match res {
        Ok((_, s)) => {
            Metrics::add(&metrics.udp_sessions, 1);
            Some(Arc::new(Session {
                endpoint: Arc::new(s),
                clock: IdleClock::new(Instant::now(), idle),
            }))
        }
        Err(e) => {
            Metrics::add(&metrics.connections_failed, 1);
            tracing::debug!(service = %route.name, client = %client, error = %e, "no udp endpoint");
            None
        }
    }
}

fn unspecified_of(ip: IpAddr) -> IpAddr {
    unspecified(kproxy_core::model::IpFamily::of(&ip))
}

/// Sends the endpoint's replies to `client` from the service socket until the session
/// idles out or the endpoint refuses, then forgets the session.
async fn relay_replies(
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    session: Arc<Session>,
    sessions: Sessions,
    metrics: Arc<Metrics>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            r = session.endpoint.recv(&mut buf) => match r {
                Ok(n) => {
                    session.clock.touch(Instant::now());
                    if let Ok(sent) = socket.send_to(&buf[..n], client).await {
                        Metrics::add(&metrics.bytes_to_clients, sent as u64);
                    }
                }
                Err(_) => break,
            },
            () = tokio::time::sleep_until(session.clock.deadline()) => {
                if session.clock.expired(Instant::now()) {
                    break;
                }
            }
        }
    }
    let mut map = sessions.lock().unwrap_or_else(PoisonError::into_inner);
    if map.get(&client).is_some_and(|s| Arc::ptr_eq(s, &session)) {
        map.remove(&client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_session_expires_only_after_idle_time_without_traffic() {
        let idle = Duration::from_millis(250);
        let clock = IdleClock::new(Instant::now(), idle);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!clock.expired(Instant::now()));
        clock.touch(Instant::now());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !clock.expired(Instant::now()),
            "traffic pushed the deadline out"
        );
        tokio::time::sleep_until(clock.deadline()).await;
        assert!(clock.expired(Instant::now()));
    }
}
