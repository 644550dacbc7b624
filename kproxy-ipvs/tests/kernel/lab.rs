//! A small network inside the IPVS VM: two backend namespaces behind veths, a client
//! namespace, and servers that answer with their backend's name.
//!
//! ```text
//!  cl (192.168.50.2-6, fd00:50::2) --ec/hc-- node (192.168.50.1, kube-ipvs0 VIPs)
//!      |-- h1/e1 -- be1 (10.244.1.5, fd00:244:1::5): TCP+UDP :8080 "be1"
//!      `-- h2/e2 -- be2 (10.244.2.6, fd00:244:2::6): TCP+UDP :8080 "be2"
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

/// Runs a shell command, panicking with its stderr on failure; returns stdout.
pub fn sh(cmd: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Moves the calling thread into network namespace `ns` (threads have their own).
pub fn enter(ns: &str) {
    let f = File::open(format!("/var/run/netns/{ns}")).expect("netns file");
    setns(f, CloneFlags::CLONE_NEWNET).expect("setns");
}

/// The running lab; dropping it stops the servers and removes the namespaces.
pub struct Lab {
    stop: Arc<AtomicBool>,
    servers: Vec<JoinHandle<()>>,
}

const SETUP: &str = "
set -e
for n in be1 be2 cl; do ip netns add $n; ip -n $n link set lo up; done
ip link add h1 type veth peer name e1 netns be1
ip link add h2 type veth peer name e2 netns be2
ip link add hc type veth peer name ec netns cl
ip addr add 10.244.1.1/24 dev h1; ip link set h1 up
ip addr add 10.244.2.1/24 dev h2; ip link set h2 up
ip addr add 192.168.50.1/24 dev hc; ip link set hc up
ip -n be1 addr add 10.244.1.5/24 dev e1; ip -n be1 link set e1 up; ip -n be1 route add default via 10.244.1.1
ip -n be2 addr add 10.244.2.6/24 dev e2; ip -n be2 link set e2 up; ip -n be2 route add default via 10.244.2.1
for i in 2 3 4 5 6; do ip -n cl addr add 192.168.50.$i/24 dev ec; done
ip -n cl link set ec up; ip -n cl route add default via 192.168.50.1
ip addr add fd00:244:1::1/64 dev h1 nodad; ip addr add fd00:244:2::1/64 dev h2 nodad
ip addr add fd00:50::1/64 dev hc nodad
ip -n be1 addr add fd00:244:1::5/64 dev e1 nodad; ip -n be1 route add default via fd00:244:1::1
ip -n be2 addr add fd00:244:2::6/64 dev e2 nodad; ip -n be2 route add default via fd00:244:2::1
ip -n cl addr add fd00:50::2/64 dev ec nodad; ip -n cl route add default via fd00:50::1
sysctl -qw net.ipv6.conf.all.forwarding=1
";

const TEARDOWN: &str = "
ip link del h1 2>/dev/null; ip link del h2 2>/dev/null; ip link del hc 2>/dev/null
for n in be1 be2 cl; do ip netns del $n 2>/dev/null; done
ipvsadm -C
ip link del kube-ipvs0 2>/dev/null
true
";

impl Lab {
    /// Builds the network and starts the servers.
    pub fn up() -> Lab {
        sh(TEARDOWN);
        sh(SETUP);
        let stop = Arc::new(AtomicBool::new(false));
        let mut servers = Vec::new();
        for name in ["be1", "be2"] {
            let (tcp_stop, udp_stop) = (stop.clone(), stop.clone());
            let (tx, rx) = std::sync::mpsc::channel();
            let tx2 = tx.clone();
            servers.push(std::thread::spawn(move || {
                enter(name);
                serve_tcp(name, &tcp_stop, tx);
            }));
            servers.push(std::thread::spawn(move || {
                enter(name);
                serve_udp(name, &udp_stop, tx2);
            }));
            rx.recv().unwrap();
            rx.recv().unwrap();
        }
        Lab { stop, servers }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.servers.drain(..) {
            let _ = s.join();
        }
        let _ = Command::new("sh").arg("-c").arg(TEARDOWN).status();
    }
}

fn serve_tcp(name: &'static str, stop: &AtomicBool, ready: std::sync::mpsc::Sender<()>) {
    // [::] takes IPv4 too (IPV6_V6ONLY is off by default).
    let l = TcpListener::bind("[::]:8080").unwrap();
    l.set_nonblocking(true).unwrap();
    ready.send(()).unwrap();
    while !stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((mut s, _)) => {
                std::thread::spawn(move || {
                    s.set_nonblocking(false).unwrap();
                    let _ = s.write_all(format!("{name}\n").as_bytes());
                    // Hold the connection until the client closes it.
                    let mut sink = [0u8; 64];
                    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn serve_udp(name: &'static str, stop: &AtomicBool, ready: std::sync::mpsc::Sender<()>) {
    let s = UdpSocket::bind("[::]:8080").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    ready.send(()).unwrap();
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((_, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(name.as_bytes(), from);
        }
    }
}

/// Runs `f` on a thread inside namespace `ns` (the node's own namespace for `None`).
pub fn from_ns<T: Send + 'static>(
    ns: Option<&'static str>,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        if let Some(ns) = ns {
            enter(ns);
        }
        f()
    })
    .join()
    .unwrap()
}

/// Opens a TCP connection and reads the backend's name; the stream stays open.
pub fn tcp_hello(to: SocketAddr) -> (String, TcpStream) {
    let s = TcpStream::connect_timeout(&to, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("connect {to}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("read from {to}: {e}"));
    (line.trim().to_owned(), s)
}

/// Sends one datagram from `src` (port chosen by the kernel) and returns the reply.
pub fn udp_hello(src: IpAddr, to: SocketAddr) -> String {
    let s = UdpSocket::bind(SocketAddr::new(src, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.send_to(b"hi", to).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = s
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("udp reply from {to}: {e}"));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
