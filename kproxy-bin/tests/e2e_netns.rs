//! kproxy end to end, in network namespaces this test creates (root only; skipped with
//! a printed reason otherwise).
//!
//! Topology (nothing is added to the root namespace; `ke-<id>-*` are deleted on every
//! path by [`Lab`]'s `Drop`):
//!
//! ```text
//!  ke-<id>-n (the node, runs kproxy)          ke-<id>-b (the backends)
//!  lo 127.0.0.1 (healthz, metrics)
//!  eth0 10.242.0.1/24  <------ veth ------>   eth0 10.242.0.2/24 "backend-1" :8080
//!  default via 10.242.0.2                           10.242.0.3/24 "backend-2" :8080
//! ```
//!
//! Servers and clients are this test binary run again as [`helper_process`] inside a
//! namespace (`ip netns exec NS <test binary> --exact helper_process`), with the role in
//! environment variables. Every wait is bounded in tries and time.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Environment variables of the helper role.
const ROLE: &str = "KPROXY_E2E_ROLE";
const ADDR: &str = "KPROXY_E2E_ADDR";
const DATA: &str = "KPROXY_E2E_DATA";
/// Markers around the helper's answer on stdout (the test harness prints too).
const BEGIN: &str = "<<<kproxy-e2e-begin>>>";
const END: &str = "<<<kproxy-e2e-end>>>";
/// Longest a helper server lives, even if nobody kills it.
const SERVER_LIFETIME: Duration = Duration::from_secs(300);

const NODE: &str = "ke-node";
const CLUSTER_IP: &str = "10.242.200.10";
const LB_CLUSTER_IP: &str = "10.242.200.11";
const NODE_IP: &str = "10.242.0.1";
const BACKEND_1: &str = "10.242.0.2";
const BACKEND_2: &str = "10.242.0.3";
const NODE_PORT: u16 = 30080;
const HC_NODE_PORT: u16 = 32001;

/// Not a test: the server or client this binary plays inside a namespace when [`ROLE`]
/// is set (and an immediate pass otherwise).
///
/// - `serve`: listens on `ADDR`, answers every connection with `DATA` and closes it;
///   exits after [`SERVER_LIFETIME`] at the latest.
/// - `get`: connects to `ADDR` (2 s limit), sends `DATA`, prints what comes back until
///   the peer closes (3 s limit) between the markers.
#[test]
fn helper_process() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let addr: SocketAddr = std::env::var(ADDR).unwrap().parse().unwrap();
    let data = std::env::var(DATA).unwrap_or_default();
    match role.as_str() {
        "serve" => {
            std::thread::spawn(|| {
                std::thread::sleep(SERVER_LIFETIME);
                std::process::exit(0);
            });
            let l = TcpListener::bind(addr).unwrap();
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let _ = c.write_all(data.as_bytes());
            }
        }
        "get" => {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s.write_all(data.as_bytes()).unwrap();
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            print!("{BEGIN}{}{END}", String::from_utf8_lossy(&got));
        }
        other => panic!("unknown role {other}"),
    }
}

/// Runs a command, with its output.
fn run(argv: &[&str]) -> Output {
    Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

/// Runs a command that must succeed.
fn must(argv: &[&str]) -> String {
    let out = run(argv);
    assert!(
        out.status.success(),
        "{argv:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Why this host cannot run the test, if it cannot.
fn cannot_run() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next().map(str::to_owned));
    if uid.as_deref() != Some("0") {
        return Some("not root".into());
    }
    for tool in ["ip", "iptables-save", "iptables-restore"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("no {tool} on PATH"));
        }
    }
    None
}

/// The namespaces, scratch directory and child processes of one test; all removed on
/// drop, whatever happened.
struct Lab {
    node: String,
    backend: String,
    dir: PathBuf,
    children: Vec<Child>,
    created: Vec<String>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.created {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    /// Two fresh namespaces joined by a veth pair, or `None` (with the reason printed)
    /// when namespaces cannot be made here.
    fn new(tag: &str) -> Option<Lab> {
        if let Some(why) = cannot_run() {
            eprintln!("skipping e2e_netns ({tag}): {why}");
            return None;
        }
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let id = format!("{:06x}", h.finish() & 0xff_ffff);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("e2e-{tag}-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("objects")).unwrap();
        let mut lab = Lab {
            node: format!("ke-{id}-n"),
            backend: format!("ke-{id}-b"),
            dir,
            children: Vec::new(),
            created: Vec::new(),
        };
        let node = lab.node.clone();
        let out = run(&["ip", "netns", "add", &node]);
        if !out.status.success() {
            eprintln!(
                "skipping e2e_netns ({tag}): ip netns add failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        lab.created.push(node.clone());
        let backend = lab.backend.clone();
        must(&["ip", "netns", "add", &backend]);
        lab.created.push(backend.clone());
        // The veth pair is made inside the node namespace, its peer moved straight into
        // the backend one: the root namespace never sees either end.
        lab.ns(&node, &["ip", "link", "set", "lo", "up"]);
        lab.ns(&backend, &["ip", "link", "set", "lo", "up"]);
        lab.ns(
            &node,
            &[
                "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
                &backend,
            ],
        );
        lab.ns(
            &node,
            &["ip", "addr", "add", "10.242.0.1/24", "dev", "eth0"],
        );
        lab.ns(&node, &["ip", "link", "set", "eth0", "up"]);
        lab.ns(&node, &["ip", "route", "add", "default", "via", BACKEND_1]);
        lab.ns(
            &node,
            &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
        );
        for a in ["10.242.0.2/24", "10.242.0.3/24"] {
            lab.ns(&backend, &["ip", "addr", "add", a, "dev", "eth0"]);
        }
        lab.ns(&backend, &["ip", "link", "set", "eth0", "up"]);
        lab.ns(&backend, &["ip", "route", "add", "default", "via", NODE_IP]);
        Some(lab)
    }

    /// Runs `argv` inside `ns`; it must succeed.
    fn ns(&self, ns: &str, argv: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(argv);
        must(&full)
    }

    /// Starts a helper server in the backend namespace.
    fn serve(&mut self, ip: &str, reply: &str) {
        let exe = std::env::current_exe().unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.backend])
            .arg(exe)
            .args([
                "--exact",
                "helper_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, "serve")
            .env(ADDR, format!("{ip}:8080"))
            .env(DATA, reply)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    /// Connects from `ns` to `addr`, sends `send`, returns the answer (`None` when the
    /// connection failed).
    fn get(&self, ns: &str, addr: &str, send: &str) -> Option<String> {
        let exe = std::env::current_exe().unwrap();
        let out = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(exe)
            .args([
                "--exact",
                "helper_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, "get")
            .env(ADDR, addr)
            .env(DATA, send)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let start = text.find(BEGIN)? + BEGIN.len();
        let end = text[start..].find(END)? + start;
        Some(text[start..end].to_owned())
    }

    /// An HTTP/1.1 GET from the node namespace.
    fn http_get(&self, addr: &str, path: &str) -> Option<String> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        self.get(&self.node, addr, &req)
    }

    /// Polls `get` from `ns` until the answer is `want` (at most `limit`, every 200 ms).
    fn wait_for(&self, ns: &str, addr: &str, want: &str, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        let mut last = None;
        for _ in 0..200 {
            last = self.get(ns, addr, "");
            if last.as_deref() == Some(want) {
                return Ok(());
            }
            if start.elapsed() > limit {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "{addr} from {ns}: wanted {want:?}, last answer {last:?} after {:?}",
            start.elapsed()
        ))
    }

    /// Writes the snapshot, atomically (the file source must never read half a file).
    fn write_objects(&self, endpoint: &str) {
        let file = self.dir.join("objects").join("cluster.yaml");
        let tmp = self.dir.join("cluster.yaml.tmp");
        std::fs::write(&tmp, snapshot(endpoint)).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    }

    /// Starts kproxy in the node namespace.
    fn start_kproxy(&mut self, mode: &str) -> u32 {
        self.start_kproxy_with(
            mode,
            &[],
            &[
                "--healthz-bind-address",
                "127.0.0.1:10256",
                "--metrics-bind-address",
                "127.0.0.1:10249",
            ],
        )
    }

    /// Starts kproxy in the node namespace under `wrapper` (e.g. `setpriv …`), with
    /// `extra` flags (the listen addresses).
    fn start_kproxy_with(&mut self, mode: &str, wrapper: &[&str], extra: &[&str]) -> u32 {
        let log = std::fs::File::create(self.dir.join("kproxy.log")).unwrap();
        let objects = self.dir.join("objects");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.node])
            .args(wrapper)
            .arg(env!("CARGO_BIN_EXE_kproxy"))
            .arg("--from")
            .arg(&objects)
            .args([
                "--hostname-override",
                NODE,
                "--proxy-mode",
                mode,
                "--iptables-min-sync-period",
                "200ms",
                // The conntrack table size and hash buckets are host-wide: leave them.
                "--conntrack-max-per-core",
                "0",
                "-v",
                "2",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }

    fn kproxy_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kproxy.log")).unwrap_or_default()
    }

    /// Sends SIGTERM to kproxy `pid`; it must exit, successfully, within 10 s.
    fn stop(&mut self, pid: u32) {
        let status = self
            .terminate(pid)
            .unwrap_or_else(|| self.fail("kproxy ignored SIGTERM"));
        assert!(status.success(), "kproxy exited with {status}");
    }

    /// Sends SIGTERM to a child and waits (at most 10 s) for it to exit.
    fn terminate(&mut self, pid: u32) -> Option<std::process::ExitStatus> {
        must(&["kill", "-TERM", &pid.to_string()]);
        let child = self.children.iter_mut().find(|c| c.id() == pid)?;
        for _ in 0..100 {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// `iptables-save` (both flavours, both families) in the node namespace.
    fn saved_rules(&self) -> String {
        let mut all = String::new();
        for tool in [
            "iptables-nft-save",
            "ip6tables-nft-save",
            "iptables-legacy-save",
            "ip6tables-legacy-save",
        ] {
            let out = run(&["ip", "netns", "exec", &self.node, tool]);
            if out.status.success() {
                all.push_str(&String::from_utf8_lossy(&out.stdout));
            }
        }
        all
    }

    fn fail(&self, why: &str) -> ! {
        panic!("{why}\n--- kproxy log ---\n{}", self.kproxy_log());
    }
}

/// A node, a ClusterIP+NodePort service whose one endpoint is `endpoint`, and a
/// LoadBalancer service with externalTrafficPolicy Local whose endpoint is on this node.
fn snapshot(endpoint: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Node
metadata: {{ name: {NODE} }}
status:
  addresses: [{{ type: InternalIP, address: {NODE_IP} }}]
---
apiVersion: v1
kind: Service
metadata: {{ name: echo, namespace: default }}
spec:
  type: NodePort
  clusterIP: {CLUSTER_IP}
  ports: [{{ name: tcp, port: 80, targetPort: 8080, protocol: TCP, nodePort: {NODE_PORT} }}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{ name: echo-1, namespace: default, labels: {{ kubernetes.io/service-name: echo }} }}
addressType: IPv4
ports: [{{ name: tcp, port: 8080, protocol: TCP }}]
endpoints: [{{ addresses: [{endpoint}], conditions: {{ ready: true }}, nodeName: other-node }}]
---
apiVersion: v1
kind: Service
metadata: {{ name: lb, namespace: default }}
spec:
  type: LoadBalancer
  clusterIP: {LB_CLUSTER_IP}
  externalTrafficPolicy: Local
  healthCheckNodePort: {HC_NODE_PORT}
  ports: [{{ name: tcp, port: 80, targetPort: 8080, protocol: TCP, nodePort: 30081 }}]
status:
  loadBalancer: {{ ingress: [{{ ip: 10.242.201.1 }}] }}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{ name: lb-1, namespace: default, labels: {{ kubernetes.io/service-name: lb }} }}
addressType: IPv4
ports: [{{ name: tcp, port: 8080, protocol: TCP }}]
endpoints: [{{ addresses: [{BACKEND_2}], conditions: {{ ready: true }}, nodeName: {NODE} }}]
"#
    )
}

/// Sets up the lab, the backends and kproxy in `mode`, and waits until the clusterIP
/// reaches backend-1.
fn start(tag: &str, mode: &str) -> Option<(Lab, u32)> {
    let mut lab = backends_up(tag)?;
    let pid = lab.start_kproxy(mode);
    wait_for_backend_1(&lab);
    Some((lab, pid))
}

/// The lab with both backends serving and the objects written; kproxy not started.
fn backends_up(tag: &str) -> Option<Lab> {
    let mut lab = Lab::new(tag)?;
    lab.serve(BACKEND_1, "backend-1");
    lab.serve(BACKEND_2, "backend-2");
    let node = lab.node.clone();
    for (ip, name) in [(BACKEND_1, "backend-1"), (BACKEND_2, "backend-2")] {
        if let Err(e) = lab.wait_for(&node, &format!("{ip}:8080"), name, Duration::from_secs(10)) {
            lab.fail(&format!("backend not up: {e}"));
        }
    }
    lab.write_objects(BACKEND_1);
    Some(lab)
}

/// Waits until the clusterIP reaches backend-1.
fn wait_for_backend_1(lab: &Lab) {
    let vip = format!("{CLUSTER_IP}:80");
    if let Err(e) = lab.wait_for(&lab.node, &vip, "backend-1", Duration::from_secs(20)) {
        lab.fail(&format!("clusterIP never reached backend-1: {e}"));
    }
}

/// The endpoint change reaches the data path within a few seconds.
fn check_endpoint_change(lab: &Lab) {
    lab.write_objects(BACKEND_2);
    let vip = format!("{CLUSTER_IP}:80");
    if let Err(e) = lab.wait_for(&lab.node, &vip, "backend-2", Duration::from_secs(8)) {
        lab.fail(&format!("traffic did not follow the new endpoint: {e}"));
    }
}

#[test]
fn iptables_mode_programs_a_node_in_a_network_namespace() {
    let Some((mut lab, pid)) = start("iptables", "iptables") else {
        return;
    };
    let node = lab.node.clone();
    let backend = lab.backend.clone();

    // The NodePort: from the node to its own IP and to 127.0.0.1 (localhostNodePorts,
    // which needs route_localnet), and from outside (the backend namespace).
    let np = format!("{NODE_IP}:{NODE_PORT}");
    for (ns, addr) in [
        (&node, np.clone()),
        (&node, format!("127.0.0.1:{NODE_PORT}")),
        (&backend, np.clone()),
    ] {
        if let Err(e) = lab.wait_for(ns, &addr, "backend-1", Duration::from_secs(5)) {
            lab.fail(&format!("nodePort: {e}"));
        }
    }
    assert_eq!(
        lab.ns(
            &node,
            &["cat", "/proc/sys/net/ipv4/conf/all/route_localnet"]
        )
        .trim(),
        "1"
    );

    check_endpoint_change(&lab);

    // /healthz: 200 with upstream's JSON fields.
    let healthz = lab
        .http_get("127.0.0.1:10256", "/healthz")
        .unwrap_or_else(|| lab.fail("no /healthz answer"));
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    for field in [
        "\"lastUpdated\"",
        "\"currentTime\"",
        "\"nodeEligible\":true",
        "\"healthy\":true",
    ] {
        assert!(healthz.contains(field), "{field} missing in {healthz}");
    }

    // /metrics: the runner's and the iptables backend's.
    let metrics = lab
        .http_get("127.0.0.1:10249", "/metrics")
        .unwrap_or_else(|| lab.fail("no /metrics answer"));
    assert!(
        metrics.starts_with("HTTP/1.1 200"),
        "{}",
        &metrics[..200.min(metrics.len())]
    );
    for want in [
        "kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}",
        "kubeproxy_sync_proxy_rules_iptables_total{table=\"nat\",ip_family=\"IPv4\"}",
        "kubeproxy_sync_proxy_rules_iptables_last{table=\"filter\",ip_family=\"IPv4\"}",
        "kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family=\"IPv4\"} 0",
    ] {
        assert!(metrics.contains(want), "{want} missing in\n{metrics}");
    }

    // The health check node port of the eTP Local service: one local endpoint.
    let hc = lab
        .http_get(&format!("127.0.0.1:{HC_NODE_PORT}"), "/")
        .unwrap_or_else(|| lab.fail("no health check node port answer"));
    assert!(hc.starts_with("HTTP/1.1 200"), "{hc}");
    assert!(hc.contains("\"localEndpoints\": 1"), "{hc}");
    assert!(
        hc.to_ascii_lowercase()
            .contains("x-load-balancing-endpoint-weight: 1"),
        "{hc}"
    );

    // SIGTERM: kproxy exits and leaves its rules, so traffic keeps flowing.
    lab.stop(pid);
    let rules = lab.saved_rules();
    assert!(rules.contains(":KUBE-SERVICES"), "{rules}");
    lab.wait_for(
        &node,
        &format!("{CLUSTER_IP}:80"),
        "backend-2",
        Duration::from_secs(3),
    )
    .unwrap_or_else(|e| lab.fail(&e));

    // --cleanup removes every chain kproxy made (kubelet's KUBE-FIREWALL is kept, as
    // upstream's cleanup keeps it).
    check_cleanup(&lab);
}

/// `kproxy --cleanup` in the node namespace leaves no KUBE- chain of kproxy's.
fn check_cleanup(lab: &Lab) {
    if std::env::var_os("KPROXY_E2E_VERBOSE").is_some() {
        eprintln!(
            "--- kproxy log ---\n{}\n--- rules before cleanup ---\n{}",
            lab.kproxy_log(),
            lab.saved_rules()
        );
    }
    let out = run(&[
        "ip",
        "netns",
        "exec",
        &lab.node,
        env!("CARGO_BIN_EXE_kproxy"),
        "--cleanup",
        "--hostname-override",
        NODE,
    ]);
    assert!(
        out.status.success(),
        "cleanup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = lab.saved_rules();
    let left: Vec<&str> = rules
        .lines()
        .filter(|l| l.starts_with(":KUBE-") && !l.starts_with(":KUBE-FIREWALL "))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}\n{rules}");
}

#[test]
fn userspace_mode_proxies_a_cluster_ip_in_a_network_namespace() {
    let Some((mut lab, pid)) = start("userspace", "userspace") else {
        return;
    };
    check_endpoint_change(&lab);
    lab.stop(pid);
    check_cleanup(&lab);
}

// === least privilege (docs/least-privilege.md) ===

/// `setpriv` arguments keeping exactly `caps` (e.g. `+net_admin,+net_raw`): the bounding
/// set is what a uid-0 process gets on exec, and `--no-new-privs` keeps it so.
fn only_caps(caps: &str) -> Vec<String> {
    vec![
        "setpriv".into(),
        format!("--bounding-set=-all,{caps}"),
        "--inh-caps=-all".into(),
        "--no-new-privs".into(),
    ]
}

/// Why the capability tests cannot run here (on top of [`cannot_run`]).
fn no_setpriv() -> Option<&'static str> {
    let found = Command::new("sh")
        .args(["-c", "command -v setpriv"])
        .output()
        .is_ok_and(|o| o.status.success());
    (!found).then_some("no setpriv (util-linux) on PATH")
}

/// The TCP sockets listening in `ns`, as `ip:port` (`[::]:port` for IPv6 any).
fn listeners(lab: &Lab, ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let text = lab.ns(ns, &["cat", file]);
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 || f[3] != "0A" {
                continue;
            }
            let Some((addr, port)) = f[1].split_once(':') else {
                continue;
            };
            let port = u16::from_str_radix(port, 16).unwrap();
            let ip = if v6 {
                if addr.chars().all(|c| c == '0') {
                    "[::]".to_owned()
                } else {
                    format!("[{addr}]")
                }
            } else {
                let n = u32::from_str_radix(addr, 16).unwrap();
                std::net::Ipv4Addr::from(n.swap_bytes()).to_string()
            };
            out.push(format!("{ip}:{port}"));
        }
    }
    out.sort();
    out
}

/// The listeners of `ns` other than the health check node port (which follows
/// nodePortAddresses, not the healthz/metrics settings).
fn server_listeners(lab: &Lab, ns: &str) -> Vec<String> {
    listeners(lab, ns)
        .into_iter()
        .filter(|l| !l.ends_with(&format!(":{HC_NODE_PORT}")))
        .collect()
}

/// Polls until `ns` has the listeners `want` (at most 10 s).
fn wait_listeners(lab: &Lab, want: &[&str]) {
    let start = Instant::now();
    let mut got = Vec::new();
    while start.elapsed() < Duration::from_secs(10) {
        got = server_listeners(lab, &lab.node);
        if got == want {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.fail(&format!("listeners {got:?}, wanted exactly {want:?}"));
}

/// `CapEff` of a process.
fn cap_eff(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// With CAP_NET_ADMIN and CAP_NET_RAW only (no CAP_SYS_ADMIN, no DAC override, no
/// CAP_NET_BIND_SERVICE), iptables mode syncs, passes traffic and follows an endpoint
/// change; healthz and metrics listen on exactly the configured addresses (metrics on an
/// address that exists only in this namespace), and `--healthz-port 0` turns healthz off.
#[test]
fn iptables_mode_works_with_only_net_admin_and_net_raw_and_listens_only_where_configured() {
    if let Some(why) = no_setpriv() {
        eprintln!("skipping least-privilege e2e: {why}");
        return;
    }
    let Some(mut lab) = backends_up("caps-ipt") else {
        return;
    };
    let wrapper = only_caps("+net_admin,+net_raw");
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let metrics = format!("{NODE_IP}:10249");
    let pid = lab.start_kproxy_with(
        "iptables",
        &wrapper,
        &[
            "--healthz-bind-address",
            "127.0.0.1:10256",
            "--metrics-bind-address",
            &metrics,
        ],
    );
    wait_for_backend_1(&lab);
    let caps = cap_eff(pid).unwrap_or_else(|| lab.fail("kproxy is gone"));
    assert_eq!(caps, (1 << 12) | (1 << 13), "CapEff {caps:#x}");
    check_endpoint_change(&lab);
    wait_listeners(&lab, &["10.242.0.1:10249", "127.0.0.1:10256"]);
    let m = lab
        .http_get(&metrics, "/metrics")
        .unwrap_or_else(|| lab.fail("no /metrics answer"));
    assert!(m.starts_with("HTTP/1.1 200"), "{}", &m[..m.len().min(200)]);
    assert!(lab.http_get("127.0.0.1:10249", "/metrics").is_none());
    assert!(
        lab.http_get(&format!("{NODE_IP}:10256"), "/healthz")
            .is_none()
    );
    lab.stop(pid);

    // --healthz-port 0 disables the healthz server (upstream's deprecated flag; an
    // empty --healthz-bind-address does the same). Metrics cannot be disabled: upstream
    // validation rejects an empty metricsBindAddress, and so does kproxy.
    let pid = lab.start_kproxy_with("iptables", &wrapper, &["--healthz-port", "0"]);
    check_endpoint_change(&lab);
    wait_listeners(&lab, &["127.0.0.1:10249"]);
    let log = lab.kproxy_log();
    assert!(log.contains("healthz server disabled"), "{log}");
    lab.stop(pid);
    check_cleanup(&lab);
}

/// Userspace mode with the same two capabilities: its proxy ports are unprivileged, so
/// CAP_NET_BIND_SERVICE is not needed.
#[test]
fn userspace_mode_works_with_only_net_admin_and_net_raw() {
    if let Some(why) = no_setpriv() {
        eprintln!("skipping least-privilege e2e: {why}");
        return;
    }
    let Some(mut lab) = backends_up("caps-us") else {
        return;
    };
    let wrapper = only_caps("+net_admin,+net_raw");
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let pid = lab.start_kproxy_with(
        "userspace",
        &wrapper,
        &["--healthz-bind-address", "127.0.0.1:10256"],
    );
    wait_for_backend_1(&lab);
    check_endpoint_change(&lab);
    lab.stop(pid);
    check_cleanup(&lab);
}

/// Without CAP_NET_ADMIN, kproxy exits at once with an error naming the capability,
/// instead of retrying failed syncs forever.
#[test]
fn without_net_admin_kproxy_exits_with_an_error_naming_the_capability() {
    if let Some(why) = no_setpriv() {
        eprintln!("skipping least-privilege e2e: {why}");
        return;
    }
    let Some(mut lab) = Lab::new("caps-none") else {
        return;
    };
    lab.write_objects(BACKEND_1);
    for mode in ["iptables", "userspace", "ipvs"] {
        let wrapper = only_caps("+net_raw");
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let pid = lab.start_kproxy_with(mode, &wrapper, &[]);
        let child = lab
            .children
            .iter_mut()
            .find(|c| c.id() == pid)
            .unwrap_or_else(|| panic!("no child {pid}"));
        let mut status = None;
        for _ in 0..100 {
            if let Ok(Some(s)) = child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = lab.kproxy_log();
        let status = status.unwrap_or_else(|| lab.fail(&format!("{mode}: still running")));
        assert_eq!(status.code(), Some(1), "{mode}: {log}");
        assert!(
            log.contains(&format!(
                "kproxy: {mode} needs CAP_NET_ADMIN, which this process does not have"
            )),
            "{mode}: {log}"
        );
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// `nodePortAddresses` CIDRs match the node's interface addresses, as upstream's do, not
/// only the addresses the Node object reports: a second address on the node's interface
/// (absent from the Node object) serves the node port, one outside the CIDR does not.
#[test]
fn nodeport_addresses_match_the_interfaces_addresses_not_only_the_node_objects() {
    let Some(mut lab) = backends_up("npaddr") else {
        return;
    };
    let (node, backend) = (lab.node.clone(), lab.backend.clone());
    lab.ns(
        &node,
        &["ip", "addr", "add", "10.242.0.9/24", "dev", "eth0"],
    );
    lab.ns(
        &node,
        &["ip", "addr", "add", "10.243.0.9/24", "dev", "eth0"],
    );
    lab.start_kproxy_with(
        "iptables",
        &[],
        &[
            "--healthz-bind-address",
            "127.0.0.1:10256",
            "--metrics-bind-address",
            "127.0.0.1:10249",
            "--nodeport-addresses",
            "10.242.0.0/24",
        ],
    );
    wait_for_backend_1(&lab);
    let extra = format!("10.242.0.9:{NODE_PORT}");
    if let Err(e) = lab.wait_for(&backend, &extra, "backend-1", Duration::from_secs(10)) {
        lab.fail(&format!("node port on an interface-only address: {e}"));
    }
    let rules = lab.saved_rules();
    assert!(
        rules.contains("-A KUBE-SERVICES -d 10.242.0.9/32 ") && !rules.contains("-d 10.243.0.9/32"),
        "KUBE-SERVICES jumps to KUBE-NODEPORTS per matching interface address:\n{rules}"
    );
}
