//! The bidirectional byte copy between a client and an endpoint, for any
//! `AsyncRead + AsyncWrite` (the fallback when [`splice`](crate::splice) cannot be used,
//! and what the unit tests drive over `tokio::io::duplex`).
//!
//! Each direction is a small state machine ([`HalfState`]), in the manner of linkerd's
//! `duplex`: read into a buffer, write it all out, and on end of file shut down the
//! writing side so that the peer sees the half close. The copy finishes when both
//! directions are done; an error in either ends both. Upstream's `ProxyTCP`
//! (`pkg/proxy/userspace/proxysocket.go`) closed both sockets as soon as one side
//! finished; keeping the other direction open until its own EOF loses no bytes when a
//! client half-closes.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Size of each direction's buffer.
pub const BUFFER_SIZE: usize = 64 * 1024;

/// Where one direction of a copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalfState {
    /// Waiting for bytes from the source.
    Reading,
    /// Writing `buf[start..end]` to the destination.
    Writing {
        /// First byte not yet written.
        start: usize,
        /// End of the bytes read.
        end: usize,
    },
    /// The source reached end of file: shutting down the destination's write side.
    ShuttingDown,
    /// Finished; nothing more will flow this way.
    Done,
}

/// Copies `from` into `to` until `from` ends, then shuts `to` down for writing. Adds every
/// byte written to `counter`. Returns the number of bytes copied.
///
/// # Errors
/// The first read, write or shutdown error.
pub async fn copy_half<R, W>(from: &mut R, to: &mut W, counter: &AtomicU64) -> io::Result<u64>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = vec![0u8; BUFFER_SIZE];
    let mut total = 0u64;
    let mut state = HalfState::Reading;
    loop {
        state = match state {
            HalfState::Reading => match from.read(&mut buf).await? {
                0 => HalfState::ShuttingDown,
                n => HalfState::Writing { start: 0, end: n },
            },
            HalfState::Writing { start, end } => {
                let n = to.write(&buf[start..end]).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                total += n as u64;
                counter.fetch_add(n as u64, Ordering::Relaxed);
                if start + n == end {
                    HalfState::Reading
                } else {
                    HalfState::Writing {
                        start: start + n,
                        end,
                    }
                }
            }
            HalfState::ShuttingDown => {
                match to.shutdown().await {
                    // The peer may already be gone for writing; that is the same end.
                    Err(e) if e.kind() != io::ErrorKind::NotConnected => return Err(e),
                    _ => {}
                }
                HalfState::Done
            }
            HalfState::Done => return Ok(total),
        };
    }
}

/// Copies both ways between `client` and `endpoint` until both directions reached end of
/// file. Returns (bytes client → endpoint, bytes endpoint → client).
///
/// # Errors
/// The first error of either direction (both stop).
pub async fn duplex<A, B>(
    client: A,
    endpoint: B,
    to_endpoint: &AtomicU64,
    to_client: &AtomicU64,
) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut er, mut ew) = tokio::io::split(endpoint);
    tokio::try_join!(
        copy_half(&mut cr, &mut ew, to_endpoint),
        copy_half(&mut er, &mut cw, to_client)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use tokio::io::duplex as pipe;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ ((i >> 11) as u8))
            .collect()
    }

    #[tokio::test]
    async fn a_client_half_close_still_gets_the_whole_reply() {
        let (client, proxy_client_side) = pipe(1024);
        let (proxy_endpoint_side, endpoint) = pipe(1024);
        let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
        let proxy = duplex(proxy_client_side, proxy_endpoint_side, &up, &down);
        let server = async move {
            // The endpoint reads the request to EOF, then answers and closes.
            let (mut r, mut w) = tokio::io::split(endpoint);
            let mut req = Vec::new();
            r.read_to_end(&mut req).await.unwrap();
            w.write_all(b"reply to: ").await.unwrap();
            w.write_all(&req).await.unwrap();
            w.shutdown().await.unwrap();
            req
        };
        let client = async move {
            let (mut r, mut w) = tokio::io::split(client);
            w.write_all(b"hello").await.unwrap();
            w.shutdown().await.unwrap();
            let mut reply = Vec::new();
            r.read_to_end(&mut reply).await.unwrap();
            reply
        };
        let (res, req, reply) = tokio::join!(proxy, server, client);
        assert_eq!(res.unwrap(), (5, 15));
        assert_eq!(req, b"hello");
        assert_eq!(reply, b"reply to: hello");
        assert_eq!((up.into_inner(), down.into_inner()), (5, 15));
    }

    #[tokio::test]
    async fn a_large_transfer_both_ways_arrives_intact() {
        const LEN: usize = 8 << 20;
        let (client, a) = pipe(16 * 1024);
        let (b, endpoint) = pipe(7 * 1024);
        let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
        let proxy = duplex(a, b, &up, &down);
        let send_recv = |io: tokio::io::DuplexStream, seed: u8| async move {
            let (mut r, mut w) = tokio::io::split(io);
            let data = pattern(LEN, seed);
            let want = Sha256::digest(pattern(LEN, seed ^ 0xff));
            let writer = async {
                w.write_all(&data).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let reader = async {
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.unwrap();
                got
            };
            let ((), got) = tokio::join!(writer, reader);
            assert_eq!(got.len(), LEN);
            assert_eq!(Sha256::digest(&got), want);
        };
        let (res, (), ()) =
            tokio::join!(proxy, send_recv(client, 1), send_recv(endpoint, 1 ^ 0xff));
        assert_eq!(res.unwrap(), (LEN as u64, LEN as u64));
    }

    #[tokio::test]
    async fn an_endpoint_that_disappears_ends_the_copy_with_the_error() {
        struct Broken;
        impl AsyncRead for Broken {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                _: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                std::task::Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
            }
        }
        impl AsyncWrite for Broken {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                _: &[u8],
            ) -> std::task::Poll<io::Result<usize>> {
                std::task::Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
            }
            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
        }
        let (_client, a) = pipe(64);
        let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
        let err = duplex(a, Broken, &up, &down).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }
}
