//! Helper for `bench/bench.sh` (run inside the namespaces the script creates):
//!
//! - `proxy CLUSTER_IP:PORT ENDPOINT...`: runs the userspace proxier for one TCP service
//!   in the current network namespace until killed;
//! - `server ADDR`: a TCP server that discards what it reads, answers `P` to a one-byte
//!   ping, and closes at end of file;
//! - `send ADDR BYTES`: sends BYTES, waits for the server to close, prints `MB/s`;
//! - `cps ADDR CONNS PARALLEL`: CONNS ping connections, PARALLEL at a time, prints
//!   connections per second.
//!
//! Every runtime is single-threaded, as the proxies it is compared with run one worker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kproxy_core::{
    BuildOptions, ChangeSet, KubeProxyConfiguration, NodeFacts, Proxier, ServiceMap, Snapshot,
};
use kproxy_userspace::UserspaceProxier;
use kproxy_userspace::exec::{Backend, RealExecutor};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn usage() -> ! {
    eprintln!(
        "usage: bench_tool proxy VIP:PORT EP... | server ADDR | send ADDR BYTES | cps ADDR CONNS PARALLEL"
    );
    std::process::exit(64)
}

fn addr(s: Option<&String>) -> SocketAddr {
    s.and_then(|s| s.parse().ok()).unwrap_or_else(|| usage())
}

fn num(s: Option<&String>) -> u64 {
    s.and_then(|s| s.parse().ok()).unwrap_or_else(|| usage())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.first().map(String::as_str) {
        Some("proxy") => rt.block_on(proxy(addr(args.get(1)), &args[2..])),
        Some("server") => rt.block_on(server(addr(args.get(1)))),
        Some("send") => rt.block_on(send(addr(args.get(1)), num(args.get(2)))),
        Some("cps") => rt.block_on(cps(addr(args.get(1)), num(args.get(2)), num(args.get(3)))),
        _ => usage(),
    }
}

async fn proxy(vip: SocketAddr, endpoints: &[String]) {
    let eps: Vec<SocketAddr> = endpoints
        .iter()
        .map(|e| e.parse().unwrap_or_else(|_| usage()))
        .collect();
    let port = eps.first().map_or_else(|| usage(), SocketAddr::port);
    let list: String = eps
        .iter()
        .map(|e| format!("- addresses: [{}]\n", e.ip()))
        .collect();
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{ name: bench, namespace: default }}\nspec:\n  clusterIP: {}\n  ports: [{{ name: p, port: {}, protocol: TCP }}]\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: bench-1\n  namespace: default\n  labels: {{ kubernetes.io/service-name: bench }}\naddressType: IPv4\nports: [{{ name: p, port: {port}, protocol: TCP }}]\nendpoints:\n{list}",
        vip.ip(),
        vip.port()
    );
    let (snap, _) = Snapshot::from_documents(&yaml).expect("service yaml");
    let map = ServiceMap::build(&snap, &BuildOptions::for_node("bench"));
    assert!(
        map.iter().all(|p| !p.selection.cluster.is_empty()),
        "service without endpoints"
    );
    let mut p = UserspaceProxier::new(
        &KubeProxyConfiguration::default(),
        Arc::new(RealExecutor::new(Backend::Default)),
    )
    .expect("proxier");
    p.sync(&map, &ChangeSet::full(), &NodeFacts::default())
        .await
        .expect("sync");
    eprintln!("kproxy userspace proxying {vip} -> {endpoints:?}");
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

async fn server(addr: SocketAddr) {
    let l = TcpListener::bind(addr).await.expect("bind");
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            let mut first = true;
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if first && n == 1 && buf[0] == b'p' && s.write_all(b"P").await.is_err() {
                    break;
                }
                first = false;
            }
        });
    }
}

async fn send(addr: SocketAddr, bytes: u64) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let buf = vec![0x5au8; 256 * 1024];
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..n]).await.expect("write");
        left -= n as u64;
    }
    s.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.expect("wait for close");
    let secs = start.elapsed().as_secs_f64();
    println!("{:.1}", bytes as f64 / secs / 1e6);
}

async fn cps(addr: SocketAddr, conns: u64, parallel: u64) {
    let start = Instant::now();
    let per = conns / parallel;
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                let mut s = TcpStream::connect(addr).await.expect("connect");
                // No TIME_WAIT pile-up on the client: close with RST after the answer.
                socket2::SockRef::from(&s)
                    .set_linger(Some(Duration::ZERO))
                    .expect("linger");
                s.write_all(b"p").await.expect("ping");
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await.expect("pong");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    println!(
        "{:.0}",
        (per * parallel) as f64 / start.elapsed().as_secs_f64()
    );
}
