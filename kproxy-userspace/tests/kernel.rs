//! Kernel tests: the userspace proxier with real sockets and real iptables rules, inside
//! network namespaces the tests create (see `support`). Skipped, with a printed reason,
//! when not root or when `ip`/`iptables-restore` are missing.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kproxy_core::{
    BuildOptions, ChangeSet, KubeProxyConfiguration, NodeFacts, Proxier, ServiceMap, Snapshot,
};
use kproxy_userspace::UserspaceProxier;
use kproxy_userspace::exec::{Backend, RealExecutor};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Mutex;

use support::{BACKENDS, Lab, NODE_IP};

const LIMIT: Duration = Duration::from_secs(60);

/// A Service with one port, `(port, node port, target port)`, and the given endpoints
/// (all ready).
fn service(
    name: &str,
    ip: &str,
    proto: &str,
    (port, node_port, target): (u16, Option<u16>, u16),
    eps: &[&str],
    affinity: bool,
) -> String {
    let np = node_port
        .map(|p| format!(", nodePort: {p}"))
        .unwrap_or_default();
    let ty = if node_port.is_some() {
        "NodePort"
    } else {
        "ClusterIP"
    };
    let aff = if affinity {
        "\n  sessionAffinity: ClientIP"
    } else {
        ""
    };
    let family = if ip.contains(':') { "IPv6" } else { "IPv4" };
    let endpoints: String = eps
        .iter()
        .map(|e| format!("- addresses: [{e}]\n  conditions: {{ ready: true }}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{ name: {name}, namespace: default }}\nspec:\n  type: {ty}\n  clusterIP: {ip}{aff}\n  ports: [{{ name: p, port: {port}, protocol: {proto}{np} }}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: default\n  labels: {{ kubernetes.io/service-name: {name} }}\naddressType: {family}\nports: [{{ name: p, port: {target}, protocol: {proto} }}]\nendpoints:\n{endpoints}---\n"
    )
}

fn map_of(docs: &[String]) -> ServiceMap {
    let (snap, problems) = Snapshot::from_documents(&docs.concat()).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    ServiceMap::build(&snap, &BuildOptions::for_node("node"))
}

fn node_facts() -> NodeFacts {
    NodeFacts {
        name: "node".into(),
        node_ips: vec![NODE_IP.parse().unwrap()],
        local_addresses: vec![
            NODE_IP.parse().unwrap(),
            "10.241.2.1".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
        ],
        pod_cidrs: vec![],
    }
}

type Shared = Arc<Mutex<UserspaceProxier>>;

fn proxier(lab: &Lab) -> Shared {
    proxier_with(lab, KubeProxyConfiguration::default(), true)
}

fn proxier_with(lab: &Lab, cfg: KubeProxyConfiguration, splice: bool) -> Shared {
    lab.node.run(LIMIT, async move {
        let p = UserspaceProxier::new(&cfg, Arc::new(RealExecutor::new(Backend::Default))).unwrap();
        Arc::new(Mutex::new(p.with_seed(7).with_splice(splice)))
    })
}

fn sync(lab: &Lab, p: &Shared, map: ServiceMap) {
    let p = Arc::clone(p);
    lab.node.run(LIMIT, async move {
        p.lock()
            .await
            .sync(&map, &ChangeSet::full(), &node_facts())
            .await
            .unwrap();
    });
}

/// Starts a TCP server on each address that writes its own IP, then echoes until EOF.
fn whoami_servers(lab: &Lab, addrs: &[&str], port: u16) -> Vec<tokio::task::JoinHandle<()>> {
    addrs
        .iter()
        .map(|a| {
            let addr = SocketAddr::new(a.parse().unwrap(), port);
            let listener = lab
                .backend
                .run(LIMIT, async move { TcpListener::bind(addr).await.unwrap() });
            lab.backend.spawn(async move {
                loop {
                    let Ok((mut s, _)) = listener.accept().await else {
                        return;
                    };
                    tokio::spawn(async move {
                        let _ = s.write_all(format!("{}\n", addr.ip()).as_bytes()).await;
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            })
        })
        .collect()
}

/// Connects, reads the identity line.
async fn whoami(target: SocketAddr) -> std::io::Result<(String, TcpStream)> {
    let mut s = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(target))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read_exact(&mut b).await.is_ok() && b[0] != b'\n' {
        line.push(b[0]);
    }
    Ok((String::from_utf8_lossy(&line).into_owned(), s))
}

fn counts(ids: &[String]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for i in ids {
        *m.entry(i.clone()).or_insert(0) += 1;
    }
    m
}

#[test]
fn clients_reach_tcp_and_udp_services_through_cluster_ip_and_node_port() {
    require_lab!();
    let lab = Lab::new();
    let _servers = whoami_servers(&lab, &BACKENDS, 8080);
    // UDP backends answer "<ip>:<payload>".
    for a in &BACKENDS[..2] {
        let addr: SocketAddr = format!("{a}:5353").parse().unwrap();
        let sock = lab
            .backend
            .run(LIMIT, async move { UdpSocket::bind(addr).await.unwrap() });
        lab.backend.spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let mut reply = format!("{}:", addr.ip()).into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = sock.send_to(&reply, from).await;
            }
        });
    }
    let p = proxier(&lab);
    let map = map_of(&[
        service(
            "web",
            "10.241.100.10",
            "TCP",
            (80, Some(30080), 8080),
            &BACKENDS,
            false,
        ),
        service(
            "dns",
            "10.241.100.53",
            "UDP",
            (53, None, 5353),
            &BACKENDS[..2],
            false,
        ),
    ]);
    sync(&lab, &p, map);

    let ids: Vec<String> = lab.client.run(LIMIT, async {
        let mut ids = Vec::new();
        for _ in 0..9 {
            ids.push(whoami("10.241.100.10:80".parse().unwrap()).await.unwrap().0);
        }
        ids
    });
    let c = counts(&ids);
    assert_eq!(c.len(), 3, "{c:?}");
    assert!(
        c.values().all(|n| *n == 3),
        "round robin over 3 endpoints: {c:?}"
    );

    let via_node_port: Vec<String> = lab.client.run(LIMIT, async {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(
                whoami(format!("{NODE_IP}:30080").parse().unwrap())
                    .await
                    .unwrap()
                    .0,
            );
        }
        ids
    });
    assert!(
        via_node_port.iter().all(|i| BACKENDS.contains(&i.as_str())),
        "{via_node_port:?}"
    );

    // 50 UDP clients, each with its own socket, each gets its own answer back from the
    // service address.
    let answers: Vec<(String, SocketAddr)> = lab.client.run(LIMIT, async {
        let mut tasks = Vec::new();
        for i in 0..50 {
            tasks.push(tokio::spawn(async move {
                let s = UdpSocket::bind("10.241.1.2:0").await.unwrap();
                s.connect("10.241.100.53:53").await.unwrap();
                let mut buf = [0u8; 2048];
                for _attempt in 0..5 {
                    s.send(format!("q{i}").as_bytes()).await.unwrap();
                    if let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_millis(500), s.recv(&mut buf)).await
                    {
                        let peer = s.peer_addr().unwrap();
                        return (String::from_utf8_lossy(&buf[..n]).into_owned(), peer);
                    }
                }
                panic!("client {i}: no answer");
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    for (i, (a, from)) in answers.iter().enumerate() {
        assert!(a.ends_with(&format!(":q{i}")), "{a}");
        assert_eq!(from.to_string(), "10.241.100.53:53");
    }
    let servers: std::collections::BTreeSet<&str> = answers
        .iter()
        .map(|(a, _)| a.split(':').next().unwrap())
        .collect();
    assert_eq!(servers.len(), 2, "both UDP endpoints used");

    // Traffic from the node itself goes through KUBE-PORTALS-HOST (DNAT to the node IP).
    let from_host = lab.node.run(LIMIT, async {
        whoami("10.241.100.10:80".parse().unwrap()).await.unwrap().0
    });
    assert!(BACKENDS.contains(&from_host.as_str()), "{from_host}");

    let metrics = |lab: &Lab| {
        let p = Arc::clone(&p);
        lab.node
            .run(LIMIT, async move { p.lock().await.metrics().snapshot() })
    };
    let m = metrics(&lab);
    assert_eq!(m.tcp_connections, 13);
    assert!(m.udp_sessions >= 50);
    assert!(m.spliced_connections >= 1);

    // A UDP session idles out after udpIdleTimeout (250ms): the same client address then
    // opens a new session; within the timeout it reuses its session.
    let sessions_before = m.udp_sessions;
    lab.client.run(LIMIT, async {
        let s = UdpSocket::bind("10.241.1.2:0").await.unwrap();
        s.connect("10.241.100.53:53").await.unwrap();
        let mut buf = [0u8; 64];
        for wait in [0u64, 50, 600] {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            s.send(b"again").await.unwrap();
            tokio::time::timeout(Duration::from_secs(2), s.recv(&mut buf))
                .await
                .expect("answer")
                .unwrap();
        }
    });
    assert_eq!(metrics(&lab).udp_sessions, sessions_before + 2);

    // Cleanup removes every chain and jump.
    lab.node.run(LIMIT, {
        let p = Arc::clone(&p);
        async move { p.lock().await.cleanup().await.unwrap() }
    });
    let nat = lab.node_ns.exec(&["iptables-save", "-t", "nat"]);
    let filter = lab.node_ns.exec(&["iptables-save", "-t", "filter"]);
    assert!(
        !nat.contains("KUBE-") && !filter.contains("KUBE-"),
        "{nat}{filter}"
    );
}

/// Deterministic bytes for the big transfer.
fn fill(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let b = state.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

#[test]
fn a_100_mb_transfer_arrives_byte_identical() {
    require_lab!();
    const TOTAL: usize = 100 << 20;
    let lab = Lab::new();
    // The backend hashes what it receives and answers with the hex digest.
    let listener = lab.backend.run(LIMIT, async {
        TcpListener::bind("10.241.2.2:9000").await.unwrap()
    });
    lab.backend.spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut n_total = 0usize;
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            n_total += n;
            h.update(&buf[..n]);
        }
        let reply = format!("{n_total} {:x}", h.finalize());
        s.write_all(reply.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
    });
    let p = proxier(&lab);
    sync(
        &lab,
        &p,
        map_of(&[service(
            "bulk",
            "10.241.100.20",
            "TCP",
            (9000, None, 9000),
            &BACKENDS[..1],
            false,
        )]),
    );
    let (sent, reply) = lab.client.run(Duration::from_secs(80), async {
        let mut s = TcpStream::connect("10.241.100.20:9000").await.unwrap();
        let mut h = Sha256::new();
        let mut state = 0x1234_5678_9abc_def1u64;
        let mut buf = vec![0u8; 256 * 1024];
        let mut left = TOTAL;
        while left > 0 {
            let n = left.min(buf.len());
            fill(&mut buf[..n], &mut state);
            h.update(&buf[..n]);
            s.write_all(&buf[..n]).await.unwrap();
            left -= n;
        }
        s.shutdown().await.unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        (format!("{TOTAL} {:x}", h.finalize()), reply)
    });
    assert_eq!(reply, sent);
    let m = lab.node.run(LIMIT, {
        let p = Arc::clone(&p);
        async move { p.lock().await.metrics().snapshot() }
    });
    assert_eq!(m.bytes_to_endpoints, TOTAL as u64);
    assert_eq!(m.spliced_connections, 1);
}

#[test]
fn a_killed_backend_is_skipped_and_affinity_holds() {
    require_lab!();
    let lab = Lab::new();
    let servers = whoami_servers(&lab, &BACKENDS, 8080);
    // This one runs the tokio copy path instead of splice.
    let p = proxier_with(&lab, KubeProxyConfiguration::default(), false);
    sync(
        &lab,
        &p,
        map_of(&[
            service(
                "web",
                "10.241.100.10",
                "TCP",
                (80, None, 8080),
                &BACKENDS,
                false,
            ),
            service(
                "sticky",
                "10.241.100.11",
                "TCP",
                (80, None, 8080),
                &BACKENDS,
                true,
            ),
        ]),
    );
    // Kill one backend: its listener closes, dials to it are refused.
    servers[1].abort();
    std::thread::sleep(Duration::from_millis(100));
    let ids: Vec<String> = lab.client.run(LIMIT, async {
        let mut ids = Vec::new();
        for _ in 0..12 {
            ids.push(
                whoami("10.241.100.10:80".parse().unwrap())
                    .await
                    .expect("no client error")
                    .0,
            );
        }
        ids
    });
    assert!(ids.iter().all(|i| i != BACKENDS[1]), "{ids:?}");
    assert_eq!(ids.len(), 12);
    // Affinity: one client address, one endpoint.
    let sticky: Vec<String> = lab.client.run(LIMIT, async {
        let mut ids = Vec::new();
        for _ in 0..8 {
            ids.push(whoami("10.241.100.11:80".parse().unwrap()).await.unwrap().0);
        }
        ids
    });
    assert_eq!(counts(&sticky).len(), 1, "{sticky:?}");
    let m = lab.node.run(LIMIT, {
        let p = Arc::clone(&p);
        async move { p.lock().await.metrics().snapshot() }
    });
    assert!(m.dial_failures >= 1);
    assert_eq!(m.connections_failed, 0);
    assert_eq!(m.spliced_connections, 0);
    assert!(m.bytes_to_clients > 0);
}

#[test]
fn removing_an_endpoint_or_the_service_keeps_established_connections() {
    require_lab!();
    let lab = Lab::new();
    let _servers = whoami_servers(&lab, &BACKENDS[..2], 8080);
    let mut cfg = KubeProxyConfiguration::default();
    "40000-40009".clone_into(&mut cfg.port_range);
    let p = proxier_with(&lab, cfg, true);
    // "keep" stays as it is while "web" changes and goes.
    let keep = service(
        "keep",
        "10.241.100.12",
        "TCP",
        (80, None, 8080),
        &BACKENDS[..1],
        false,
    );
    let svc = |eps: &[&str]| {
        let web = service("web", "10.241.100.10", "TCP", (80, None, 8080), eps, false);
        map_of(&[web, keep.clone()])
    };
    sync(&lab, &p, svc(&BACKENDS[..1]));
    let ports: Vec<u16> = lab.node.run(LIMIT, {
        let p = Arc::clone(&p);
        async move {
            let p = p.lock().await;
            ["web", "keep"]
                .into_iter()
                .map(|n| {
                    let name = kproxy_core::model::ServicePortName::new(
                        kproxy_core::model::ObjectRef::new("default", n),
                        "p",
                        kproxy_core::model::Protocol::Tcp,
                    );
                    p.proxy_port(kproxy_core::model::IpFamily::V4, &name)
                        .unwrap()
                })
                .collect()
        }
    });
    assert!(
        ports.iter().all(|p| (40000..=40009).contains(p)),
        "{ports:?}"
    );
    let echo = |mut conn: TcpStream, msg: &'static [u8]| async move {
        conn.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; msg.len()];
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, msg);
        conn
    };
    let (id, conn, kept) = lab.client.run(LIMIT, async move {
        let (id, conn) = whoami("10.241.100.10:80".parse().unwrap()).await.unwrap();
        let (_, kept) = whoami("10.241.100.12:80".parse().unwrap()).await.unwrap();
        (id, echo(conn, b"first").await, echo(kept, b"first").await)
    });
    assert_eq!(id, BACKENDS[0]);
    // The endpoint goes away (replaced by another): new connections go to the new one,
    // the established one keeps its endpoint.
    sync(&lab, &p, svc(&BACKENDS[1..2]));
    let (id2, conn) = lab.client.run(LIMIT, async move {
        let (id2, _) = whoami("10.241.100.10:80".parse().unwrap()).await.unwrap();
        (id2, echo(conn, b"second").await)
    });
    assert_eq!(id2, BACKENDS[1]);
    // The service goes away: no new connections, the old one still echoes, and the other
    // service's connection never noticed.
    sync(&lab, &p, map_of(std::slice::from_ref(&keep)));
    let refused = lab.client.run(LIMIT, async move {
        echo(conn, b"still there").await;
        echo(kept, b"kept").await;
        whoami("10.241.100.10:80".parse().unwrap()).await.is_err()
    });
    assert!(refused, "no new connections to a removed service");
}

#[test]
fn ipv6_clients_reach_a_service_through_ip6tables_redirect() {
    require_lab!();
    let lab = Lab::new();
    lab.add_ipv6();
    let _servers = whoami_servers(&lab, &support::BACKENDS_V6, 8080);
    let p = proxier(&lab);
    let map = map_of(&[service(
        "web6",
        "fd00:241:100::10",
        "TCP",
        (80, None, 8080),
        &support::BACKENDS_V6,
        false,
    )]);
    assert_eq!(map.family(kproxy_core::model::IpFamily::V6).len(), 1);
    sync(&lab, &p, map);
    let ids: Vec<String> = lab.client.run(LIMIT, async {
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(
                whoami("[fd00:241:100::10]:80".parse().unwrap())
                    .await
                    .unwrap()
                    .0,
            );
        }
        ids
    });
    let c = counts(&ids);
    assert_eq!(c.len(), 2, "{c:?}");
    assert!(
        lab.node_ns
            .exec(&["ip6tables-save", "-t", "nat"])
            .contains("REDIRECT --to-ports")
    );
}

#[test]
fn tcp_node_port_traffic_honours_external_traffic_policy_local() {
    require_lab!();
    let lab = Lab::new();
    let _servers = whoami_servers(&lab, &BACKENDS[..2], 8080);
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{ name: web, namespace: default }}\nspec:\n  type: NodePort\n  clusterIP: 10.241.100.10\n  externalTrafficPolicy: Local\n  ports: [{{ name: p, port: 80, nodePort: 30080, protocol: TCP }}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: default\n  labels: {{ kubernetes.io/service-name: web }}\naddressType: IPv4\nports: [{{ name: p, port: 8080, protocol: TCP }}]\nendpoints:\n\
         - {{ addresses: [{}], nodeName: node }}\n- {{ addresses: [{}], nodeName: other }}\n",
        BACKENDS[0], BACKENDS[1]
    );
    let p = proxier(&lab);
    sync(&lab, &p, map_of(&[yaml]));
    // SO_ORIGINAL_DST tells the proxy which address the client dialled: the cluster IP
    // reaches every endpoint, the node port only this node's.
    let (cluster, node_port) = lab.client.run(LIMIT, async {
        let mut cluster = Vec::new();
        let mut node_port = Vec::new();
        for _ in 0..4 {
            cluster.push(whoami("10.241.100.10:80".parse().unwrap()).await.unwrap().0);
            let np = format!("{NODE_IP}:30080").parse().unwrap();
            node_port.push(whoami(np).await.unwrap().0);
        }
        (cluster, node_port)
    });
    assert_eq!(counts(&cluster).len(), 2, "{cluster:?}");
    assert!(node_port.iter().all(|a| a == BACKENDS[0]), "{node_port:?}");
}
