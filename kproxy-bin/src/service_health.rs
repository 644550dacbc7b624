//! Health check node port servers, as upstream's `pkg/proxy/healthcheck/service_health.go`:
//! one HTTP server per LoadBalancer Service with `externalTrafficPolicy: Local`, on its
//! `healthCheckNodePort`, telling the cloud load balancer whether this node has local
//! endpoints. Reconciled after every successful sync; a port change closes the old
//! server and opens the new one; a failed listen is retried at the next sync.
//!
//! Any method and path is answered: 200 when the service has ready endpoints on this node
//! and the proxy is healthy, else 503, with the endpoint count in
//! `X-Load-Balancing-Endpoint-Weight` and a tab-indented JSON body without a trailing
//! newline, byte for byte upstream's `json.MarshalIndent` output.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use kproxy_core::ServiceMap;
use kproxy_core::model::{IpFamily, ObjectRef};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::health::{ProxyHealth, json_response};

/// What one server reports.
struct ServiceState {
    service: ObjectRef,
    local_endpoints: AtomicUsize,
    health: Arc<ProxyHealth>,
}

/// One running server.
struct Server {
    port: u16,
    state: Arc<ServiceState>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The set of health check node port servers.
pub struct ServiceHealthServers {
    health: Arc<ProxyHealth>,
    /// Addresses to listen on; empty: one dual-stack wildcard listener.
    addresses: Vec<IpAddr>,
    servers: BTreeMap<ObjectRef, Server>,
}

impl ServiceHealthServers {
    /// No servers yet; they listen on the addresses [`reconcile`](Self::reconcile) gets.
    pub fn new(health: Arc<ProxyHealth>) -> Self {
        ServiceHealthServers {
            health,
            addresses: Vec::new(),
            servers: BTreeMap::new(),
        }
    }

    /// The addresses to listen on, as upstream: the node IPs that `nodePortAddresses`
    /// selects (CIDRs, or `primary`), or every address (empty) when it is unset.
    pub fn listen_addresses(node_port_addresses: &[String], node_ips: &[IpAddr]) -> Vec<IpAddr> {
        if node_port_addresses.is_empty() {
            return Vec::new();
        }
        let nets: Vec<ipnet::IpNet> = node_port_addresses
            .iter()
            .filter_map(|c| c.trim().parse().ok())
            .collect();
        let primary = node_port_addresses.iter().any(|c| c.trim() == "primary");
        node_ips
            .iter()
            .copied()
            .filter(|ip| primary || nets.iter().any(|n| n.contains(ip)))
            .collect()
    }

    /// The ports currently served, by service.
    #[cfg(test)]
    pub fn ports(&self) -> BTreeMap<ObjectRef, u16> {
        self.servers
            .iter()
            .map(|(k, s)| (k.clone(), s.port))
            .collect()
    }

    /// Makes the servers match `map`: opens, moves and closes servers, and updates the
    /// local endpoint counts. New listen `addresses` reopen every server.
    pub async fn reconcile(&mut self, map: &ServiceMap, addresses: &[IpAddr]) {
        if self.addresses != addresses {
            self.servers.clear();
            addresses.clone_into(&mut self.addresses);
        }
        let mut wanted: BTreeMap<ObjectRef, (u16, usize)> = BTreeMap::new();
        for family in IpFamily::ALL {
            for port in map.family(family).values() {
                if let Some(hc) = port.health_check_node_port {
                    let n = map.local_ready_endpoints(family, &port.name.service);
                    let e = wanted.entry(port.name.service.clone()).or_insert((hc, 0));
                    // Dual-stack: a pod has one IP per family; count it once.
                    e.1 = e.1.max(n);
                }
            }
        }
        self.servers
            .retain(|svc, s| wanted.get(svc).is_some_and(|(p, _)| *p == s.port));
        for (svc, (port, count)) in wanted {
            if let Some(s) = self.servers.get(&svc) {
                s.state.local_endpoints.store(count, Ordering::Relaxed);
                continue;
            }
            let state = Arc::new(ServiceState {
                service: svc.clone(),
                local_endpoints: AtomicUsize::new(count),
                health: self.health.clone(),
            });
            match self.listen(port, state.clone()).await {
                Ok(tasks) => {
                    tracing::info!(service = %crate::error::one_line(&svc), port, "serving health check node port");
                    self.servers.insert(svc, Server { port, state, tasks });
                }
                Err(e) => {
                    tracing::warn!(service = %crate::error::one_line(&svc), port, error = %e, "cannot listen on health check node port; retrying at the next sync")
                }
            }
        }
    }

    async fn listen(
        &self,
        port: u16,
        state: Arc<ServiceState>,
    ) -> std::io::Result<Vec<JoinHandle<()>>> {
        let mut listeners = Vec::new();
        if self.addresses.is_empty() {
            // [::] takes IPv4 too on Linux (bindv6only=0), like Go's ":port"; fall back
            // to IPv4 alone on hosts without IPv6.
            let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
            match TcpListener::bind(any6).await {
                Ok(l) => listeners.push(l),
                Err(_) => listeners.push(
                    TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
                        .await?,
                ),
            }
        } else {
            for ip in &self.addresses {
                listeners.push(TcpListener::bind(SocketAddr::new(*ip, port)).await?);
            }
        }
        let app = Router::new().fallback(answer).with_state(state);
        Ok(listeners
            .into_iter()
            .map(|l| {
                let app = app.clone();
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(l, app).await {
                        tracing::warn!(error = %e, "health check node port server failed");
                    }
                })
            })
            .collect())
    }
}

/// Upstream's `json.MarshalIndent(..., "", "\t")` of the response, by hand so that the
/// bytes match.
fn body(service: &ObjectRef, local_endpoints: usize, healthy: bool) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {local_endpoints},\n\t\"serviceProxyHealthy\": {healthy}\n}}",
        q(&service.namespace),
        q(&service.name)
    )
}

async fn answer(State(s): State<Arc<ServiceState>>) -> Response {
    let count = s.local_endpoints.load(Ordering::Relaxed);
    let healthy = s.health.is_healthy(SystemTime::now());
    let code = if count > 0 && healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut resp = json_response(code, body(&s.service, count, healthy));
    resp.headers_mut()
        .insert("x-load-balancing-endpoint-weight", HeaderValue::from(count));
    resp
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kproxy_core::{BuildOptions, Snapshot};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn map(hc_port: u16, ready_local: bool) -> ServiceMap {
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: lb, namespace: web}}\n\
             spec: {{type: LoadBalancer, externalTrafficPolicy: Local, healthCheckNodePort: {hc_port},\n\
             \x20 clusterIP: 10.96.0.9, ports: [{{name: http, port: 80, nodePort: 30080}}]}}\n\
             status: {{loadBalancer: {{ingress: [{{ip: 203.0.113.1}}]}}}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: lb-1, namespace: web, labels: {{kubernetes.io/service-name: lb}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080}}]\n\
             endpoints: [{{addresses: [10.244.0.1], conditions: {{ready: {ready_local}}}, nodeName: n1}},\n\
             \x20 {{addresses: [10.244.0.2], conditions: {{ready: true}}, nodeName: n2}}]\n"
        );
        let (snap, problems) = Snapshot::from_documents(&yaml).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        ServiceMap::build(&snap, &BuildOptions::for_node("n1"))
    }

    const LOCAL: &[IpAddr] = &[IpAddr::V4(Ipv4Addr::LOCALHOST)];

    #[test]
    fn node_port_addresses_select_node_ips() {
        let ips: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()];
        assert!(ServiceHealthServers::listen_addresses(&[], &ips).is_empty());
        let v4 = ServiceHealthServers::listen_addresses(&["10.0.0.0/8".into()], &ips);
        assert_eq!(v4, &ips[..1]);
        assert_eq!(
            ServiceHealthServers::listen_addresses(&["primary".into()], &ips),
            ips
        );
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// A raw HTTP/1.1 request, so the test sees exactly what a load balancer sees.
    async fn get(port: u16, path: &str) -> (u16, String, String) {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut raw))
            .await
            .unwrap()
            .unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let code = head[9..12].parse().unwrap();
        (code, head.to_ascii_lowercase(), body.to_owned())
    }

    #[tokio::test]
    async fn answers_with_upstreams_body_and_headers_and_follows_the_map() {
        let health = Arc::new(ProxyHealth::new(Duration::from_secs(30)));
        health.updated(SystemTime::now());
        let mut servers = ServiceHealthServers::new(health.clone());
        let port = free_port();
        servers.reconcile(&map(port, true), LOCAL).await;
        let (code, head, body) = get(port, "/any/path").await;
        assert_eq!(code, 200);
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        assert!(
            head.contains("x-load-balancing-endpoint-weight: 1"),
            "{head}"
        );
        assert_eq!(
            body,
            "{\n\t\"service\": {\n\t\t\"namespace\": \"web\",\n\t\t\"name\": \"lb\"\n\t},\n\t\"localEndpoints\": 1,\n\t\"serviceProxyHealthy\": true\n}"
        );

        // The local endpoint stops being ready: 503, weight 0.
        servers.reconcile(&map(port, false), LOCAL).await;
        let (code, head, body) = get(port, "/").await;
        assert_eq!(code, 503);
        assert!(
            head.contains("x-load-balancing-endpoint-weight: 0"),
            "{head}"
        );
        assert!(body.contains("\"localEndpoints\": 0"));

        // A new port: the old server closes, the new one answers.
        let moved = free_port();
        servers.reconcile(&map(moved, true), LOCAL).await;
        assert_eq!(
            servers.ports().values().copied().collect::<Vec<_>>(),
            [moved]
        );
        assert_eq!(get(moved, "/").await.0, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err(),
            "old port still open"
        );

        // The service goes away: no server.
        servers.reconcile(&ServiceMap::default(), LOCAL).await;
        assert!(servers.ports().is_empty());
    }

    #[tokio::test]
    async fn an_unhealthy_proxy_fails_the_check_even_with_local_endpoints() {
        let health = Arc::new(ProxyHealth::new(Duration::from_secs(30)));
        let long_ago = SystemTime::now() - Duration::from_secs(600);
        health.updated(long_ago);
        health.queued_update(long_ago);
        let mut servers = ServiceHealthServers::new(health);
        let port = free_port();
        servers.reconcile(&map(port, true), LOCAL).await;
        let (code, _, body) = get(port, "/").await;
        assert_eq!(code, 503);
        assert!(
            body.ends_with("\"localEndpoints\": 1,\n\t\"serviceProxyHealthy\": false\n}"),
            "{body}"
        );
    }
}
