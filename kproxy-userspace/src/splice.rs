//! Zero-copy TCP forwarding with `splice(2)`: socket → pipe → socket, so the bytes never
//! enter userspace. nix's `splice` and `pipe2` are safe wrappers, so this module needs
//! no `unsafe`.
//!
//! Each direction owns a pipe and runs [`SpliceState`]: fill the pipe from the source
//! (up to [`CHUNK`] bytes), drain it completely into the destination, repeat; on end of
//! file shut the destination down for writing. Because the pipe is always drained before
//! the next fill, only the sockets can block, and tokio's readiness (`try_io`) covers
//! them.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{OFlag, SpliceFFlags, splice};
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes moved per fill (the default pipe capacity).
pub const CHUNK: usize = 64 * 1024;

/// Where one direction of a spliced copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpliceState {
    /// Waiting for the source to have data, then moving it into the pipe.
    Filling,
    /// `pending` bytes sit in the pipe, to be moved into the destination.
    Draining {
        /// Bytes still in the pipe.
        pending: usize,
    },
    /// The source ended: shutting down the destination's write side.
    ShuttingDown,
    /// Finished.
    Done,
}

/// A pipe used as the in-kernel buffer of one direction.
#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        Ok(Pipe { read, write })
    }
}

fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
}

/// Splices `from` into `to` until `from` ends, then shuts `to` down for writing.
async fn splice_half(
    from: &TcpStream,
    to: &TcpStream,
    pipe: Pipe,
    counter: &AtomicU64,
) -> io::Result<u64> {
    let mut total = 0u64;
    let mut state = SpliceState::Filling;
    loop {
        state = match state {
            SpliceState::Filling => {
                from.readable().await?;
                match from.try_io(Interest::READABLE, || {
                    splice(from.as_fd(), None, pipe.write.as_fd(), None, CHUNK, flags())
                        .map_err(io::Error::from)
                }) {
                    Ok(0) => SpliceState::ShuttingDown,
                    Ok(n) => SpliceState::Draining { pending: n },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => SpliceState::Filling,
                    Err(e) => return Err(e),
                }
            }
            SpliceState::Draining { pending } => {
                to.writable().await?;
                match to.try_io(Interest::WRITABLE, || {
                    splice(pipe.read.as_fd(), None, to.as_fd(), None, pending, flags())
                        .map_err(io::Error::from)
                }) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        total += n as u64;
                        counter.fetch_add(n as u64, Ordering::Relaxed);
                        if n == pending {
                            SpliceState::Filling
                        } else {
                            SpliceState::Draining {
                                pending: pending - n,
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        SpliceState::Draining { pending }
                    }
                    Err(e) => return Err(e),
                }
            }
            SpliceState::ShuttingDown => {
                match SockRef::from(to).shutdown(std::net::Shutdown::Write) {
                    Err(e) if e.kind() != io::ErrorKind::NotConnected => return Err(e),
                    _ => {}
                }
                SpliceState::Done
            }
            SpliceState::Done => return Ok(total),
        };
    }
}

/// Copies both ways between two TCP streams with `splice(2)`, until both directions
/// reached end of file. Returns `Ok(None)` without touching the streams when the pipes
/// cannot be created (the caller falls back to [`copy::duplex`](crate::copy::duplex)),
/// else (bytes client → endpoint, bytes endpoint → client).
///
/// # Errors
/// The first error of either direction (both stop).
pub async fn splice_duplex(
    client: &TcpStream,
    endpoint: &TcpStream,
    to_endpoint: &AtomicU64,
    to_client: &AtomicU64,
) -> io::Result<Option<(u64, u64)>> {
    let (Ok(up), Ok(down)) = (Pipe::new(), Pipe::new()) else {
        return Ok(None);
    };
    let res = tokio::try_join!(
        splice_half(client, endpoint, up, to_endpoint),
        splice_half(endpoint, client, down, to_client)
    )?;
    Ok(Some(res))
}
