//! Network-namespace lab for the kernel tests: three namespaces the test creates and
//! deletes (client, node, backend), veth pairs between them, addresses in 10.241.0.0/16
//! only inside them. Nothing is done in the root namespace except creating and deleting
//! the namespaces themselves.
//!
//! ```text
//!  client 10.241.1.2 ──veth── 10.241.1.1 node 10.241.2.1 ──veth── 10.241.2.{2,3,4} backend
//!  route 10.241.100.0/24 via node
//! ```

#![allow(dead_code, missing_docs)]

use std::fs::File;
use std::future::Future;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use tokio::runtime::Handle;

/// Why the kernel tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1));
    if euid != Some("0") {
        return Some("not root".into());
    }
    for tool in ["ip", "iptables-restore", "iptables-save"] {
        let ok = Command::new(tool)
            .arg(if tool == "ip" { "-V" } else { "--version" })
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            return Some(format!("{tool} unavailable"));
        }
    }
    None
}

/// Skips the calling test (returns from it) with a printed reason.
#[macro_export]
macro_rules! require_lab {
    () => {
        if let Some(why) = support::skip_reason() {
            eprintln!("skipping kernel test: {why}");
            return;
        }
    };
}

fn run(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    fn create(name: String) -> Netns {
        run(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Runs `ip -n <ns> args`.
    pub fn ip(&self, args: &[&str]) {
        let mut v = vec!["-n", self.name.as_str()];
        v.extend_from_slice(args);
        run(&v);
    }

    /// Runs a command inside the namespace (`ip netns exec`), returning its stdout.
    pub fn exec(&self, cmd: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .expect("ip netns exec");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A thread inside this namespace running a current-thread tokio runtime.
    pub fn runtime(&self) -> NsRuntime {
        NsRuntime::start(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A tokio runtime on a dedicated thread that joined a namespace with `setns`: sockets
/// its tasks open and processes they spawn live in that namespace.
pub struct NsRuntime {
    handle: Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsRuntime {
    fn start(ns: &str) -> NsRuntime {
        let path = format!("/var/run/netns/{ns}");
        let (tx, rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let f = File::open(&path).expect("open netns");
            setns(&f, CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            tx.send(rt.handle().clone()).expect("send handle");
            rt.block_on(async {
                let _ = stop_rx.await;
            });
        });
        let handle = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("runtime started");
        NsRuntime {
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Runs `f` in the namespace and waits for its result, at most `limit`.
    pub fn run<F, R>(&self, limit: Duration, f: F) -> R
    where
        F: Future<Output = R> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv_timeout(limit).expect("task finished in time")
    }

    /// Starts `f` in the namespace without waiting.
    pub fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(f)
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The three namespaces and their runtimes. Runtimes drop before the namespaces.
pub struct Lab {
    pub client: NsRuntime,
    pub node: NsRuntime,
    pub backend: NsRuntime,
    pub node_ns: Netns,
    pub client_ns: Netns,
    pub backend_ns: Netns,
}

/// Backend addresses in the lab.
pub const BACKENDS: [&str; 3] = ["10.241.2.2", "10.241.2.3", "10.241.2.4"];
/// IPv6 backend addresses (after [`Lab::add_ipv6`]).
pub const BACKENDS_V6: [&str; 2] = ["fd00:241:2::2", "fd00:241:2::3"];
/// The node's address on the client side.
pub const NODE_IP: &str = "10.241.1.1";

impl Lab {
    /// Adds the IPv6 mirror of the IPv4 layout (fd00:241:1::/64, fd00:241:2::/64, service
    /// range fd00:241:100::/64), without duplicate address detection.
    pub fn add_ipv6(&self) {
        self.node_ns.ip(&[
            "-6",
            "addr",
            "add",
            "fd00:241:1::1/64",
            "dev",
            "vnc",
            "nodad",
        ]);
        self.node_ns.ip(&[
            "-6",
            "addr",
            "add",
            "fd00:241:2::1/64",
            "dev",
            "vnb",
            "nodad",
        ]);
        self.node_ns.ip(&[
            "-6",
            "route",
            "add",
            "fd00:241:100::/64",
            "via",
            "fd00:241:1::2",
        ]);
        self.client_ns.ip(&[
            "-6",
            "addr",
            "add",
            "fd00:241:1::2/64",
            "dev",
            "vcn",
            "nodad",
        ]);
        self.client_ns.ip(&[
            "-6",
            "route",
            "add",
            "fd00:241:100::/64",
            "via",
            "fd00:241:1::1",
        ]);
        for b in BACKENDS_V6 {
            self.backend_ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{b}/64"),
                "dev",
                "vbn",
                "nodad",
            ]);
        }
        let out = self.node_ns.exec(&[
            "ip6tables",
            "-w",
            "5",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            "fd00:241:99::/64",
            "-j",
            "MASQUERADE",
        ]);
        assert!(out.is_empty(), "{out}");
    }

    pub fn new() -> Lab {
        let tag = format!(
            "{:x}{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos()
        );
        let client_ns = Netns::create(format!("ku-{tag}-c"));
        let node_ns = Netns::create(format!("ku-{tag}-n"));
        let backend_ns = Netns::create(format!("ku-{tag}-b"));
        node_ns.ip(&[
            "link",
            "add",
            "vnc",
            "type",
            "veth",
            "peer",
            "name",
            "vcn",
            "netns",
            &client_ns.name,
        ]);
        node_ns.ip(&[
            "link",
            "add",
            "vnb",
            "type",
            "veth",
            "peer",
            "name",
            "vbn",
            "netns",
            &backend_ns.name,
        ]);
        node_ns.ip(&["addr", "add", "10.241.1.1/24", "dev", "vnc"]);
        node_ns.ip(&["addr", "add", "10.241.2.1/24", "dev", "vnb"]);
        node_ns.ip(&["link", "set", "vnc", "up"]);
        node_ns.ip(&["link", "set", "vnb", "up"]);
        client_ns.ip(&["addr", "add", "10.241.1.2/24", "dev", "vcn"]);
        client_ns.ip(&["link", "set", "vcn", "up"]);
        client_ns.ip(&["route", "add", "10.241.100.0/24", "via", "10.241.1.1"]);
        // The node needs a route for service IPs before OUTPUT's DNAT (a real node has a
        // default route); the client plays its gateway.
        node_ns.ip(&["route", "add", "10.241.100.0/24", "via", "10.241.1.2"]);
        for b in BACKENDS {
            backend_ns.ip(&["addr", "add", &format!("{b}/24"), "dev", "vbn"]);
        }
        backend_ns.ip(&["link", "set", "vbn", "up"]);
        // A real node always has some NAT rule (kubelet's KUBE-POSTROUTING masquerade, the
        // CNI's). The kernel registers its NAT hooks in a namespace only while a NAT rule
        // exists; with none, established REDIRECTed flows lose their translation when the
        // last service's rules go. This rule matches nothing here.
        let out = node_ns.exec(&[
            "iptables",
            "-w",
            "5",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            "10.241.99.0/24",
            "-j",
            "MASQUERADE",
        ]);
        assert!(out.is_empty(), "{out}");
        Lab {
            client: client_ns.runtime(),
            node: node_ns.runtime(),
            backend: backend_ns.runtime(),
            node_ns,
            client_ns,
            backend_ns,
        }
    }
}
