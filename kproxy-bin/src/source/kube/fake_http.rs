//! A fake Kubernetes API server on a real TCP socket (127.0.0.1, a free port), for tests
//! that run the whole daemon against it: LIST and WATCH of Services, EndpointSlices and
//! Nodes, resourceVersions, 410 Gone after a compaction, and three kinds of outage:
//!
//! - [`FakeApiServer::stop`]: the listener and every connection are gone, so connects
//!   are refused (until [`FakeApiServer::restart`] listens on the same port again);
//! - [`FakeApiServer::hang`]: connections are accepted and requests read, but nothing is
//!   ever answered, and open watch streams go silent (until [`FakeApiServer::answer`]);
//! - [`FakeApiServer::compact`]: every resourceVersion handed out so far is too old, so
//!   each watch is answered with a 410 and the watcher relists.
//!
//! HTTP/1.1 only, one request per connection (`Connection: close`), a watch body is
//! newline-separated JSON ended by closing the connection after
//! [`FakeApiServer::watch_window`] (as the real server ends a watch after
//! `timeoutSeconds`). Selectors are ignored.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::Resource;

#[derive(Debug, Default)]
struct State {
    rv: u64,
    /// Watches from an older resourceVersion get 410 Gone.
    oldest_watchable: u64,
    objects: BTreeMap<(Resource, String), Value>,
    /// (resourceVersion, resource, ADDED/MODIFIED/DELETED, object).
    log: Vec<(u64, Resource, &'static str, Value)>,
    hanging: bool,
    /// Requests read, per (resource, watch).
    requests: BTreeMap<(Resource, bool), u64>,
    connections: u64,
}

/// The fake server; stops (every task and connection) when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Bumped on every change (new events, hang/answer), to wake open watches.
    changed: watch::Sender<u64>,
    /// The accept loop, which owns every connection task.
    task: Option<tokio::task::JoinHandle<()>>,
    /// How long a watch stays open.
    pub watch_window: Duration,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn path_of(resource: Resource) -> (&'static str, &'static str, &'static str) {
    match resource {
        Resource::Services => ("/api/v1/services", "v1", "ServiceList"),
        Resource::EndpointSlices => (
            "/apis/discovery.k8s.io/v1/endpointslices",
            "discovery.k8s.io/v1",
            "EndpointSliceList",
        ),
        Resource::Node => ("/api/v1/nodes", "v1", "NodeList"),
    }
}

fn key_of(object: &Value) -> String {
    format!(
        "{}/{}",
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

impl FakeApiServer {
    /// A server on a free port of 127.0.0.1, with no objects.
    pub async fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut s = FakeApiServer {
            addr: listener.local_addr().unwrap(),
            state: Arc::default(),
            changed: watch::channel(0).0,
            task: None,
            watch_window: Duration::from_millis(300),
        };
        s.state.lock().unwrap().rv = 100;
        s.serve(listener);
        s
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn serve(&mut self, listener: TcpListener) {
        let state = self.state.clone();
        let changed = self.changed.clone();
        let window = self.watch_window;
        self.task = Some(tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        state.lock().unwrap_or_else(PoisonError::into_inner).connections += 1;
                        conns.spawn(handle(stream, state.clone(), changed.subscribe(), window));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        }));
    }

    /// Stops listening and drops every connection: connects are refused.
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens again on the same port (after [`stop`](Self::stop)).
    pub async fn restart(&mut self) {
        self.stop();
        // The aborted accept loop drops its listener on its next poll; retry briefly.
        for _ in 0..100 {
            if let Ok(l) = TcpListener::bind(self.addr).await {
                self.serve(l);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot listen on {} again", self.addr);
    }

    /// Accepts and reads requests but answers none; open watches go silent.
    pub fn hang(&self) {
        self.lock().hanging = true;
        self.changed.send_modify(|v| *v += 1);
    }

    /// Answers requests again (new ones; the hung ones stay hung until the client gives
    /// up on them).
    pub fn answer(&self) {
        self.lock().hanging = false;
        self.changed.send_modify(|v| *v += 1);
    }

    /// Forgets every resourceVersion handed out so far (an etcd compaction, or an API
    /// server restored from backup): watches from them get 410 Gone, and the
    /// resourceVersions jump ahead.
    pub fn compact(&self) {
        let mut st = self.lock();
        st.rv += 1000;
        st.oldest_watchable = st.rv;
        st.log.clear();
    }

    /// Creates or replaces an object (its `metadata.resourceVersion` is set).
    pub fn apply(&self, resource: Resource, mut object: Value) {
        {
            let mut st = self.lock();
            st.rv += 1;
            let rv = st.rv;
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            let key = (resource, key_of(&object));
            let kind = if st.objects.contains_key(&key) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            st.objects.insert(key, object.clone());
            st.log.push((rv, resource, kind, object));
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Adds an object without a watch event (for big clusters listed once).
    pub fn seed(&self, resource: Resource, mut object: Value) {
        let mut st = self.lock();
        st.rv += 1;
        object["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        st.objects.insert((resource, key_of(&object)), object);
    }

    /// Deletes an object (`namespace/name`, or `/name` when cluster-scoped).
    pub fn delete(&self, resource: Resource, key: &str) {
        {
            let mut st = self.lock();
            let Some(mut object) = st.objects.remove(&(resource, key.to_owned())) else {
                return;
            };
            st.rv += 1;
            let rv = st.rv;
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            st.log.push((rv, resource, "DELETED", object));
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.lock().connections
    }

    /// Requests read so far, LIST and WATCH of every resource.
    pub fn requests(&self) -> u64 {
        self.lock().requests.values().sum()
    }

    /// Objects held.
    pub fn objects(&self) -> usize {
        self.lock().objects.len()
    }
}

/// Serves one connection: one request.
async fn handle(
    mut stream: TcpStream,
    state: Arc<Mutex<State>>,
    mut changed: watch::Receiver<u64>,
    window: Duration,
) {
    let lock = || state.lock().unwrap_or_else(PoisonError::into_inner);
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
    };
    let resource = [Resource::Services, Resource::EndpointSlices, Resource::Node]
        .into_iter()
        .find(|r| path_of(*r).0 == path);
    let is_watch = param("watch").is_some_and(|w| w == "true" || w == "1");
    let hanging = {
        let mut st = lock();
        if let Some(r) = resource {
            *st.requests.entry((r, is_watch)).or_default() += 1;
        }
        st.hanging
    };
    if hanging {
        // Accepted, read, never answered; the client's read timeout ends it.
        std::future::pending::<()>().await;
    }
    let Some(resource) = resource else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    };
    let (_, api_version, list_kind) = path_of(resource);
    if !is_watch {
        let body = {
            let st = lock();
            let items: Vec<&Value> = st
                .objects
                .iter()
                .filter(|((r, _), _)| *r == resource)
                .map(|(_, v)| v)
                .collect();
            serde_json::to_vec(&json!({
                "kind": list_kind, "apiVersion": api_version,
                "metadata": { "resourceVersion": st.rv.to_string() },
                "items": items,
            }))
            .unwrap_or_default()
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(&body).await;
        return;
    }
    let mut cursor: u64 = param("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let too_old = cursor < lock().oldest_watchable;
    if too_old {
        let gone = json!({ "type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {cursor}"), "reason": "Expired", "code": 410 } });
        let _ = stream.write_all(format!("{gone}\n").as_bytes()).await;
        return;
    }
    let deadline = tokio::time::Instant::now() + window;
    loop {
        let (lines, hanging) = {
            let st = lock();
            let mut lines = String::new();
            for (rv, r, kind, object) in &st.log {
                if *r == resource && *rv > cursor {
                    lines.push_str(&json!({ "type": kind, "object": object }).to_string());
                    lines.push('\n');
                    cursor = *rv;
                }
            }
            (lines, st.hanging)
        };
        if hanging {
            std::future::pending::<()>().await;
        }
        if !lines.is_empty() && stream.write_all(lines.as_bytes()).await.is_err() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return,
            r = changed.changed() => if r.is_err() { return },
        }
    }
}
