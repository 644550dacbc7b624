//! One nfnetlink request and its answer, over a `NETLINK_NETFILTER` socket opened in a
//! given network namespace. The socket is opened on a dedicated thread that enters the
//! namespace first (`setns`), so neither the caller's thread nor tokio's pool ever
//! changes namespace; a socket keeps the namespace it was created in.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use nix::sched::{CloneFlags, setns};

use crate::error::{Error, Result};
use crate::nfacct::{Counter, NfacctMessage, valid_name};

/// How long one request may take, answer included. The kernel answers nfacct requests
/// while handling the send, so this only bounds a broken socket.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// `EEXIST`.
const EEXIST: i32 = 17;

/// Creates `name` in `netns` (the current namespace when `None`); an existing object is
/// fine.
pub(super) async fn ensure(netns: Option<PathBuf>, name: &str) -> Result<()> {
    let err = |source| Error::Nfacct {
        op: "create",
        name: name.to_owned(),
        source,
    };
    if !valid_name(name) {
        return Err(err(invalid_name()));
    }
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    match request(netns, NfacctMessage::new_counter(name), flags).await {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(EEXIST) => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// Reads `name`'s counters in `netns`.
pub(super) async fn read(netns: Option<PathBuf>, name: &str) -> Result<Counter> {
    let err = |source| Error::Nfacct {
        op: "read",
        name: name.to_owned(),
        source,
    };
    if !valid_name(name) {
        return Err(err(invalid_name()));
    }
    let replies = request(
        netns,
        NfacctMessage::get_counter(name),
        NLM_F_REQUEST | NLM_F_ACK,
    )
    .await
    .map_err(err)?;
    replies
        .iter()
        .filter_map(NfacctMessage::counter)
        .find(|c| c.name == name)
        .ok_or_else(|| {
            err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the kernel's answer names no such counter",
            ))
        })
}

/// Deletes `name` in `netns` (tests and cleanup; `EBUSY` while rules use it).
pub(super) async fn delete(netns: Option<PathBuf>, name: &str) -> Result<()> {
    request(
        netns,
        NfacctMessage::del_counter(name),
        NLM_F_REQUEST | NLM_F_ACK,
    )
    .await
    .map(|_| ())
    .map_err(|source| Error::Nfacct {
        op: "delete",
        name: name.to_owned(),
        source,
    })
}

fn invalid_name() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "names have 1 to 31 bytes and no NUL",
    )
}

async fn request(
    netns: Option<PathBuf>,
    msg: NfacctMessage,
    flags: u16,
) -> io::Result<Vec<NfacctMessage>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("kproxy-nfacct".into())
        .spawn(move || {
            let _ = tx.send(blocking_request(netns, msg, flags));
        })?;
    match tokio::time::timeout(REPLY_TIMEOUT + Duration::from_secs(1), rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(io::Error::other("nfacct thread ended without an answer")),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no answer from the kernel",
        )),
    }
}

/// Runs on its own thread, which it may move into `netns`.
fn blocking_request(
    netns: Option<PathBuf>,
    msg: NfacctMessage,
    flags: u16,
) -> io::Result<Vec<NfacctMessage>> {
    if let Some(path) = netns {
        let file = File::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    }
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = 1;
    let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    m.finalize();
    let mut buf = vec![0; m.buffer_len()];
    m.serialize(&mut buf);
    socket.send(&buf, 0)?;
    socket.set_non_blocking(true)?;
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let mut replies = Vec::new();
    loop {
        let data = match socket.recv_from_full() {
            Ok((data, _)) => data,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no answer from the kernel",
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut rest = &data[..];
        while !rest.is_empty() {
            let parsed = NetlinkMessage::<NfacctMessage>::deserialize(rest)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = parsed.header.length as usize;
            if len == 0 {
                // A zero length would never advance: a broken answer, not a loop.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "netlink message of length 0",
                ));
            }
            match parsed.payload {
                // The acknowledgement (code 0) ends every request sent with NLM_F_ACK.
                NetlinkPayload::Error(e) if e.code.is_none() => return Ok(replies),
                NetlinkPayload::Error(e) => return Err(e.to_io()),
                NetlinkPayload::Done(_) => return Ok(replies),
                NetlinkPayload::InnerMessage(m) => replies.push(m),
                _ => {}
            }
            rest = rest.get(len.next_multiple_of(4).max(len)..).unwrap_or(&[]);
        }
    }
}
