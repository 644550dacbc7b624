//! Pipelined netlink requests over a blocking socket: many requests in one `sendmsg`,
//! replies read in bulk.
//!
//! The kernel runs every message of a datagram in order, inside the `sendmsg` call
//! (`netlink_rcv_skb`, net/netlink/af_netlink.c), and answers a message only when it
//! fails or carries `NLM_F_ACK`. So [`Pipeline::run`] packs up to [`CHUNK_MESSAGES`]
//! requests ([`CHUNK_BYTES`] at most) into one datagram with the ack flag on the last
//! only, then reads replies until that ack: an error reply for each failed request,
//! matched to it by sequence number, then the final ack. A chunk costs two system calls
//! instead of two per request. `NETLINK_CAP_ACK` keeps error replies short, and the
//! receive buffer is raised so that a chunk whose requests all fail still fits; when it
//! does not (`ENOBUFS`), every request of the chunk not yet answered counts as failed.
//!
//! Dumps cannot share a datagram (a second dump on a socket is `EBUSY` until the first
//! ends), so [`Pipeline::dump`] sends one and reads to `NLMSG_DONE`.

use std::io;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkDeserializable, NetlinkMessage,
    NetlinkSerializable,
};
use netlink_sys::{Socket, SocketAddr};

/// Requests per datagram at most.
pub const CHUNK_MESSAGES: usize = 256;
/// Bytes per datagram at most (the default `wmem` allows about 200 KiB).
pub const CHUNK_BYTES: usize = 60 * 1024;
/// The receive buffer asked for (`SO_RCVBUFFORCE` as root, else `SO_RCVBUF`, which the
/// kernel caps at `net.core.rmem_max`).
const RCVBUF: usize = 8 << 20;
/// How long to wait for a reply the kernel owes (it answers inside `sendmsg`, so this
/// only matters when a reply was lost).
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const ENOBUFS: i32 = 105;

/// A blocking netlink socket of one protocol that runs requests in chunks.
#[derive(Debug)]
pub struct Pipeline {
    sock: Socket,
    seq: u32,
    recv: Vec<u8>,
}

/// The outcome of one request: `None` when it succeeded, else the kernel's errno.
pub type Outcome = Option<i32>;

impl Pipeline {
    /// Opens and connects a socket of `protocol` (`NETLINK_GENERIC`, `NETLINK_ROUTE`)
    /// in the calling thread's network namespace.
    pub fn open(protocol: isize) -> io::Result<Pipeline> {
        let mut sock = Socket::new(protocol)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Best effort: both only make failures cheaper to report.
        let _ = sock.set_cap_ack(true);
        if nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBufForce, &RCVBUF)
            .is_err()
        {
            let _ = sock.set_rx_buf_sz(RCVBUF);
        }
        let tv =
            nix::sys::time::TimeVal::new(i64::try_from(REPLY_TIMEOUT.as_secs()).unwrap_or(5), 0);
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
            .map_err(io::Error::from)?;
        Ok(Pipeline {
            sock,
            seq: 0,
            recv: vec![0; 64 * 1024],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Runs `msgs` in order, chunked, and returns one outcome per message. Each message
    /// keeps its own flags (`NLM_F_CREATE`, …); `NLM_F_REQUEST` is added, `NLM_F_ACK` is
    /// set on the last of each chunk only. An `Err` means the socket itself failed:
    /// the kernel may have run any prefix of the messages.
    pub fn run<T: NetlinkSerializable>(
        &mut self,
        msgs: &mut [NetlinkMessage<T>],
    ) -> io::Result<Vec<Outcome>> {
        let mut out = Vec::with_capacity(msgs.len());
        let mut buf = Vec::with_capacity(CHUNK_BYTES);
        let mut start = 0;
        while start < msgs.len() {
            // Pick the chunk: as many messages as fit.
            let mut end = start;
            let mut bytes = 0;
            while end < msgs.len() && end - start < CHUNK_MESSAGES {
                msgs[end].finalize();
                let len = msgs[end].buffer_len();
                if end > start && bytes + len > CHUNK_BYTES {
                    break;
                }
                bytes += len;
                end += 1;
            }
            buf.clear();
            buf.resize(bytes, 0);
            let first = self.seq.wrapping_add(1);
            let mut off = 0;
            for (i, m) in msgs[start..end].iter_mut().enumerate() {
                m.header.sequence_number = self.next_seq();
                m.header.flags |= NLM_F_REQUEST;
                m.header.flags &= !NLM_F_ACK;
                if start + i + 1 == end {
                    m.header.flags |= NLM_F_ACK;
                }
                let len = m.buffer_len();
                m.serialize(&mut buf[off..off + len]);
                off += len;
            }
            let last = self.seq;
            self.sock.send(&buf, 0)?;
            let mut chunk: Vec<Outcome> = vec![None; end - start];
            self.read_acks(first, last, &mut chunk)?;
            out.extend(chunk);
            start = end;
        }
        Ok(out)
    }

    /// Reads replies until the ack of `last`, recording errors of `first..=last`.
    fn read_acks(&mut self, first: u32, last: u32, chunk: &mut [Outcome]) -> io::Result<()> {
        loop {
            let n = match self.sock.recv(&mut &mut self.recv[..], 0) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                    // Replies were dropped: nothing tells which requests failed. Wait for
                    // the final ack if it is still coming, then fail the whole chunk.
                    for o in chunk.iter_mut() {
                        o.get_or_insert(ENOBUFS);
                    }
                    return self.drain();
                }
                Err(e) => return Err(e),
            };
            let mut done = false;
            for (kind, seq, code) in headers(&self.recv[..n]) {
                if kind != NLMSG_ERROR {
                    continue;
                }
                let i = seq.wrapping_sub(first) as usize;
                if i < chunk.len() {
                    if code != 0 {
                        chunk[i] = Some(-code);
                    }
                    done |= seq == last;
                }
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Discards whatever is queued (after lost replies), without waiting.
    fn drain(&mut self) -> io::Result<()> {
        while let Ok(n) = self.sock.recv(&mut &mut self.recv[..], libc_dontwait()) {
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Sends one dump request and collects its replies (parsed as `T`) up to
    /// `NLMSG_DONE`. A kernel error ends the dump with `Ok(Err(errno))`.
    pub fn dump<T>(
        &mut self,
        mut msg: NetlinkMessage<T>,
    ) -> io::Result<Result<Vec<NetlinkMessage<T>>, i32>>
    where
        T: NetlinkSerializable + NetlinkDeserializable,
    {
        let seq = self.next_seq();
        msg.header.sequence_number = seq;
        msg.header.flags |= NLM_F_REQUEST | NLM_F_DUMP;
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        let mut out = Vec::new();
        loop {
            let n = self.sock.recv(&mut &mut self.recv[..], 0)?;
            let mut off = 0;
            while off + NLMSG_HDRLEN <= n {
                let (len, kind, rseq, code) = header_at(&self.recv[..n], off);
                if len < NLMSG_HDRLEN || off + len > n {
                    break;
                }
                if rseq == seq {
                    match kind {
                        NLMSG_DONE => return Ok(Ok(out)),
                        NLMSG_ERROR if code != 0 => return Ok(Err(-code)),
                        NLMSG_ERROR => return Ok(Ok(out)),
                        _ => {
                            let m = NetlinkMessage::<T>::deserialize(&self.recv[off..off + len])
                                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                            out.push(m);
                        }
                    }
                }
                off += (len + 3) & !3;
            }
        }
    }
}

fn libc_dontwait() -> i32 {
    nix::sys::socket::MsgFlags::MSG_DONTWAIT.bits()
}

/// (length, type, sequence number, error code or 0) of the message at `off`.
fn header_at(b: &[u8], off: usize) -> (usize, u16, u32, i32) {
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .and_then(|s| s.try_into().ok())
            .map_or(0, u32::from_ne_bytes)
    };
    let len = u32_at(off) as usize;
    let kind = b
        .get(off + 4..off + 6)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u16::from_ne_bytes);
    let seq = u32_at(off + 8);
    let code = if kind == NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 {
        u32_at(off + NLMSG_HDRLEN) as i32
    } else {
        0
    };
    (len, kind, seq, code)
}

/// The (type, sequence number, error code) of every message in a datagram.
fn headers(b: &[u8]) -> Vec<(u16, u32, i32)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= b.len() {
        let (len, kind, seq, code) = header_at(b, off);
        if len < NLMSG_HDRLEN || off + len > b.len() {
            break;
        }
        out.push((kind, seq, code));
        off += (len + 3) & !3;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_reads_every_message_of_a_datagram_and_stops_at_a_short_one() {
        let mut b = Vec::new();
        // An ack (error 0) for seq 7 and an error -17 for seq 8, then garbage.
        for (seq, code) in [(7u32, 0i32), (8, -17)] {
            b.extend_from_slice(&36u32.to_ne_bytes());
            b.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            b.extend_from_slice(&0u16.to_ne_bytes());
            b.extend_from_slice(&seq.to_ne_bytes());
            b.extend_from_slice(&0u32.to_ne_bytes());
            b.extend_from_slice(&code.to_ne_bytes());
            b.extend_from_slice(&[0; 16]);
        }
        b.extend_from_slice(&[1, 2, 3]);
        assert_eq!(
            headers(&b),
            vec![(NLMSG_ERROR, 7, 0), (NLMSG_ERROR, 8, -17)]
        );
        assert!(headers(&b[..20]).is_empty());
    }
}
