//! Network namespaces for the kernel tests: a client, a node and a backend namespace
//! joined by veth pairs, addresses only inside them (10.240.x.x, fd00:240::/32). The root
//! namespace is never touched: veths are created inside the node namespace with their
//! peer placed straight into the other namespace. [`Topology`]'s `Drop` deletes them.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

/// Why the kernel tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root".into());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) if o.status.success() => {}
        _ => return Some("`ip netns` unavailable".into()),
    }
    if Command::new("iptables-restore")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("iptables-restore unavailable".into());
    }
    None
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Three namespaces: `client` (10.240.1.2, fd00:240:1::2), `node` (10.240.1.1 towards the
/// client, 10.240.2.1 towards the backends; forwarding on) and `backend` (10.240.2.10 and
/// 10.240.2.11, fd00:240:2::10 and ::11).
pub struct Topology {
    /// The client namespace.
    pub client: String,
    /// The node namespace, where the rules go.
    pub node: String,
    /// The backend namespace.
    pub backend: String,
    stop: Arc<AtomicBool>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for ns in [&self.client, &self.node, &self.backend] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Backend addresses.
pub const BACKENDS_V4: [&str; 2] = ["10.240.2.10", "10.240.2.11"];
/// IPv6 backend addresses.
pub const BACKENDS_V6: [&str; 2] = ["fd00:240:2::10", "fd00:240:2::11"];
/// The port backends listen on (TCP and UDP).
pub const BACKEND_PORT: u16 = 8080;

impl Topology {
    /// Creates the namespaces and starts the backend servers.
    pub fn new() -> Result<Topology, String> {
        let id = format!(
            "kp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let t = Topology {
            client: format!("{id}-c"),
            node: format!("{id}-n"),
            backend: format!("{id}-b"),
            stop: Arc::new(AtomicBool::new(false)),
        };
        for ns in [&t.client, &t.node, &t.backend] {
            run(&["ip", "netns", "add", ns])?;
        }
        let (c, n, b) = (t.client.as_str(), t.node.as_str(), t.backend.as_str());
        let steps: Vec<Vec<&str>> = vec![
            vec![
                "ip", "-n", n, "link", "add", "c0", "type", "veth", "peer", "name", "eth0",
                "netns", c,
            ],
            vec![
                "ip", "-n", n, "link", "add", "b0", "type", "veth", "peer", "name", "eth0",
                "netns", b,
            ],
            vec!["ip", "-n", c, "addr", "add", "10.240.1.2/24", "dev", "eth0"],
            vec![
                "ip",
                "-n",
                c,
                "addr",
                "add",
                "fd00:240:1::2/64",
                "dev",
                "eth0",
                "nodad",
            ],
            vec!["ip", "-n", n, "addr", "add", "10.240.1.1/24", "dev", "c0"],
            vec![
                "ip",
                "-n",
                n,
                "addr",
                "add",
                "fd00:240:1::1/64",
                "dev",
                "c0",
                "nodad",
            ],
            vec!["ip", "-n", n, "addr", "add", "10.240.2.1/24", "dev", "b0"],
            vec![
                "ip",
                "-n",
                n,
                "addr",
                "add",
                "fd00:240:2::1/64",
                "dev",
                "b0",
                "nodad",
            ],
            vec![
                "ip",
                "-n",
                b,
                "addr",
                "add",
                "10.240.2.10/24",
                "dev",
                "eth0",
            ],
            vec![
                "ip",
                "-n",
                b,
                "addr",
                "add",
                "10.240.2.11/24",
                "dev",
                "eth0",
            ],
            vec![
                "ip",
                "-n",
                b,
                "addr",
                "add",
                "fd00:240:2::10/64",
                "dev",
                "eth0",
                "nodad",
            ],
            vec![
                "ip",
                "-n",
                b,
                "addr",
                "add",
                "fd00:240:2::11/64",
                "dev",
                "eth0",
                "nodad",
            ],
        ];
        for s in &steps {
            run(s)?;
        }
        for (ns, dev) in [
            (c, "eth0"),
            (n, "c0"),
            (n, "b0"),
            (b, "eth0"),
            (c, "lo"),
            (n, "lo"),
            (b, "lo"),
        ] {
            run(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        }
        run(&[
            "ip",
            "-n",
            c,
            "route",
            "add",
            "default",
            "via",
            "10.240.1.1",
        ])?;
        run(&[
            "ip",
            "-n",
            c,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd00:240:1::1",
        ])?;
        run(&[
            "ip",
            "-n",
            b,
            "route",
            "add",
            "default",
            "via",
            "10.240.2.1",
        ])?;
        run(&[
            "ip",
            "-n",
            b,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd00:240:2::1",
        ])?;
        // The node routes everything else towards the backend side, as a cluster node has a
        // default route: virtual IPs without a DNAT must reach the filter FORWARD chain.
        run(&[
            "ip",
            "-n",
            n,
            "route",
            "add",
            "default",
            "via",
            "10.240.2.10",
        ])?;
        run(&[
            "ip",
            "-n",
            n,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "fd00:240:2::10",
        ])?;
        run(&[
            "ip",
            "netns",
            "exec",
            n,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
        ])?;
        t.start_backends()?;
        Ok(t)
    }

    /// The node's addresses, as `NodeFacts` wants them.
    pub fn node_addresses() -> Vec<IpAddr> {
        [
            "10.240.1.1",
            "10.240.2.1",
            "fd00:240:1::1",
            "fd00:240:2::1",
            "127.0.0.1",
            "::1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect()
    }

    /// Runs `f` on a thread inside namespace `ns`.
    pub fn in_ns<T: Send + 'static>(
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let path = format!("/run/netns/{ns}");
        thread::spawn(move || {
            let file = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {path}: {e}"))?;
            Ok(f())
        })
        .join()
        .map_err(|_| "namespace thread panicked".to_owned())?
    }

    fn start_backends(&self) -> Result<(), String> {
        let stop = self.stop.clone();
        Topology::in_ns(&self.backend, move || -> Result<(), String> {
            for ip in BACKENDS_V4.iter().chain(&BACKENDS_V6) {
                let addr = SocketAddr::new(ip.parse().unwrap(), BACKEND_PORT);
                let tcp = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
                tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
                let udp = UdpSocket::bind(addr).map_err(|e| format!("bind udp {addr}: {e}"))?;
                udp.set_read_timeout(Some(Duration::from_millis(50)))
                    .map_err(|e| e.to_string())?;
                let s = stop.clone();
                thread::spawn(move || tcp_server(tcp, s));
                let s = stop.clone();
                thread::spawn(move || udp_server(udp, s));
            }
            Ok(())
        })?
    }
}

/// Answers each line with `<local ip> <peer ip>`.
fn tcp_server(l: TcpListener, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((conn, peer)) => {
                let s = stop.clone();
                thread::spawn(move || {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                    let local = conn
                        .local_addr()
                        .map(|a| a.ip().to_string())
                        .unwrap_or_default();
                    let mut w = match conn.try_clone() {
                        Ok(w) => w,
                        Err(_) => return,
                    };
                    let mut r = BufReader::new(conn);
                    let mut line = String::new();
                    while !s.load(Ordering::SeqCst) {
                        line.clear();
                        match r.read_line(&mut line) {
                            Ok(0) => return,
                            Ok(_) => {
                                if writeln!(w, "{local} {}", peer.ip()).is_err() {
                                    return;
                                }
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => return,
                        }
                    }
                });
            }
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn udp_server(s: UdpSocket, stop: Arc<AtomicBool>) {
    let local = s
        .local_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((_, peer)) = s.recv_from(&mut buf) {
            let _ = s.send_to(format!("{local} {}", peer.ip()).as_bytes(), peer);
        }
    }
}

/// One TCP request on a new connection: the backend's `<local ip> <peer ip>`.
pub fn tcp_ask(dst: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let conn = TcpStream::connect_timeout(&dst, timeout)?;
    ask_on(&conn, timeout)
}

/// One request on an open connection.
pub fn ask_on(conn: &TcpStream, timeout: Duration) -> std::io::Result<String> {
    conn.set_read_timeout(Some(timeout))?;
    let mut w = conn.try_clone()?;
    writeln!(w, "who")?;
    let mut line = String::new();
    BufReader::new(conn.try_clone()?).read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

/// One UDP request from `sock`.
pub fn udp_ask(sock: &UdpSocket, dst: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    sock.set_read_timeout(Some(timeout))?;
    sock.send_to(b"who", dst)?;
    let mut buf = [0u8; 512];
    let (n, _) = sock.recv_from(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
}
