//! The TCP proxy socket of one service port (upstream `tcpProxySocket`,
//! `pkg/proxy/userspace/proxysocket.go`): accept, pick an endpoint, dial it with retries,
//! then copy both ways (with `splice(2)` when possible).
//!
//! Every accepted connection runs in its own task, detached from the accept loop, so
//! closing the listener (service removed) or changing the endpoints leaves established
//! connections alone: they drain on their own.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

use crate::balance::dial_with_retries;
use crate::metrics::Metrics;
use crate::route::Route;
use crate::{copy, splice};

/// Opens a listening TCP socket on `addr` (port 0: the kernel picks), with
/// `SO_REUSEADDR` and, for IPv6, `IPV6_V6ONLY` so both families can use one port number.
///
/// # Errors
/// The socket, bind or listen error.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    TcpListener::from_std(sock.into())
}

/// The destination the client dialled before the REDIRECT/DNAT (`SO_ORIGINAL_DST`), if
/// the connection was NATed.
fn original_dst(s: &TcpStream) -> Option<IpAddr> {
    let sock = SockRef::from(s);
    let local = s.local_addr().ok()?;
    let orig = if local.is_ipv4() {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6()
    }
    .ok()?
    .as_socket()?;
    (orig != local).then_some(orig.ip())
}

/// Accepts connections forever, each handled by [`proxy_connection`] in its own task.
/// `use_splice` selects the zero-copy path.
pub async fn serve(
    listener: TcpListener,
    route: Arc<Route>,
    metrics: Arc<Metrics>,
    use_splice: bool,
) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                tokio::spawn(proxy_connection(
                    client,
                    peer,
                    Arc::clone(&route),
                    Arc::clone(&metrics),
                    use_splice,
                ));
            }
            Err(e) => {
                // Upstream panicked on "too many open files"; backing off keeps the other
                // services running.
                tracing::warn!(service = %route.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Dials `ep` with a timeout.
async fn dial(ep: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    tokio::time::timeout(timeout, TcpStream::connect(ep))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

/// Proxies one accepted connection to an endpoint of `route`.
pub async fn proxy_connection(
    client: TcpStream,
    peer: SocketAddr,
    route: Arc<Route>,
    metrics: Arc<Metrics>,
    use_splice: bool,
) {
    Metrics::add(&metrics.tcp_connections, 1);
    let orig = original_dst(&client);
    let dialled = dial_with_retries(
        &route.name,
        |reset| {
            route.pick(
                peer.ip(),
                orig,
                reset,
                tokio::time::Instant::now().into_std(),
            )
        },
        dial,
        |ep, e| {
            Metrics::add(&metrics.dial_failures, 1);
            tracing::debug!(service = %route.name, endpoint = %ep, error = %e, "dial failed");
        },
    )
    .await;
    let (ep, endpoint) = match dialled {
        Ok(x) => x,
        Err(e) => {
            Metrics::add(&metrics.connections_failed, 1);
            tracing::warn!(service = %route.name, client = %peer, error = %e, "dropping connection");
            return;
        }
    };
    Metrics::add(&metrics.tcp_active, 1);
    let _ = client.set_nodelay(true);
    let _ = endpoint.set_nodelay(true);
    let spliced = if use_splice {
        splice::splice_duplex(
            &client,
            &endpoint,
            &metrics.bytes_to_endpoints,
            &metrics.bytes_to_clients,
        )
        .await
    } else {
        Ok(None)
    };
    let res = match spliced {
        Ok(Some(n)) => {
            Metrics::add(&metrics.spliced_connections, 1);
            Ok(n)
        }
        Ok(None) => {
            copy::duplex(
                client,
                endpoint,
                &metrics.bytes_to_endpoints,
                &metrics.bytes_to_clients,
            )
            .await
        }
        Err(e) => Err(e),
    };
    metrics.tcp_active.fetch_sub(1, Ordering::Relaxed);
    match res {
        Ok((up, down)) => {
            tracing::trace!(service = %route.name, client = %peer, endpoint = %ep, up, down, "connection done");
        }
        Err(e) => {
            tracing::debug!(service = %route.name, client = %peer, endpoint = %ep, error = %e, "connection ended");
        }
    }
}
