//! The shared, updatable routing state of one service port: which endpoints its traffic
//! goes to. The proxier updates it on every sync; the proxy sockets read it for every new
//! connection or UDP session, so endpoint changes apply to new traffic at once while
//! established connections keep their endpoint.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use kproxy_core::ServicePort;

use crate::balance::Balancer;
use crate::error::Result;

/// Endpoints of one service port, split the way core selected them: traffic to the
/// cluster IP goes to the internal endpoints (`internalTrafficPolicy`), traffic to a node
/// port, external IP or load-balancer IP to the external ones (`externalTrafficPolicy`).
#[derive(Debug)]
pub struct Route {
    /// `namespace/name:port`, for logs.
    pub name: String,
    state: Mutex<RouteState>,
}

#[derive(Debug)]
struct RouteState {
    cluster_ip: IpAddr,
    internal: Balancer,
    external: Balancer,
}

impl Route {
    /// A route for `port`; `seed` drives both balancers' shuffles.
    pub fn new(port: &ServicePort, seed: u64) -> Self {
        let mut internal = Balancer::new(seed, port.session_affinity);
        let mut external = Balancer::new(seed ^ 0x5a5a, port.session_affinity);
        internal.update(port.internal_endpoints());
        external.update(port.external_endpoints());
        Route {
            name: port.name.to_string(),
            state: Mutex::new(RouteState {
                cluster_ip: port.cluster_ip,
                internal,
                external,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RouteState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a new definition of the port; returns whether an endpoint list changed.
    pub fn update(&self, port: &ServicePort, now: Instant) -> bool {
        let mut st = self.lock();
        st.cluster_ip = port.cluster_ip;
        st.internal.set_affinity(port.session_affinity);
        st.external.set_affinity(port.session_affinity);
        let a = st.internal.update(port.internal_endpoints());
        let b = st.external.update(port.external_endpoints());
        st.internal.cleanup_stale(now);
        st.external.cleanup_stale(now);
        a || b
    }

    /// The endpoint for a new flow from `client` whose original destination was
    /// `orig_dst` (`None` when unknown: treated as cluster traffic).
    ///
    /// # Errors
    /// [`Error::NoEndpoints`](crate::Error::NoEndpoints) when the list is empty.
    pub fn pick(
        &self,
        client: IpAddr,
        orig_dst: Option<IpAddr>,
        reset_affinity: bool,
        now: Instant,
    ) -> Result<SocketAddr> {
        let mut st = self.lock();
        let external = orig_dst.is_some_and(|d| d != st.cluster_ip);
        if external {
            st.external.next_endpoint(client, reset_affinity, now)
        } else {
            st.internal.next_endpoint(client, reset_affinity, now)
        }
    }

    /// The internal endpoints in balancing order (for tests and logs).
    pub fn internal_endpoints(&self) -> Vec<SocketAddr> {
        self.lock().internal.endpoints().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kproxy_core::model::IpFamily;
    use kproxy_core::{BuildOptions, ServiceMap, Snapshot};

    use super::*;

    const STICKY: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: default }
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  sessionAffinity: ClientIP
  sessionAffinityConfig: { clientIP: { timeoutSeconds: 10 } }
  externalTrafficPolicy: Local
  ports: [{ name: http, port: 80, nodePort: 30080, protocol: TCP }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: default
  labels: { kubernetes.io/service-name: web }
addressType: IPv4
ports: [{ name: http, port: 8080, protocol: TCP }]
endpoints:
- { addresses: [10.0.1.5], nodeName: node-a }
- { addresses: [10.0.1.6], nodeName: node-b }
- { addresses: [10.0.1.7], nodeName: node-b }
"#;

    fn port() -> ServicePort {
        let (snap, problems) = Snapshot::from_documents(STICKY).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let map = ServiceMap::build(&snap, &BuildOptions::for_node("node-a"));
        map.family(IpFamily::V4).values().next().unwrap().clone()
    }

    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    #[tokio::test(start_paused = true)]
    async fn affinity_holds_for_its_timeout_on_the_paused_clock() {
        let route = Route::new(&port(), 1);
        let client: IpAddr = "192.168.0.9".parse().unwrap();
        let cip = Some("10.96.0.10".parse().unwrap());
        let first = route.pick(client, cip, false, now()).unwrap();
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(9)).await;
            assert_eq!(route.pick(client, cip, false, now()).unwrap(), first);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_ne!(route.pick(client, cip, false, now()).unwrap(), first);
    }

    #[tokio::test(start_paused = true)]
    async fn node_port_traffic_uses_the_local_endpoints_with_etp_local() {
        let route = Route::new(&port(), 1);
        let client: IpAddr = "192.168.0.9".parse().unwrap();
        let node_ip = Some("172.18.0.2".parse().unwrap());
        for i in 0..5u8 {
            let c = IpAddr::from([192, 168, 1, i]);
            let ep = route.pick(c, node_ip, false, now()).unwrap();
            assert_eq!(ep.to_string(), "10.0.1.5:8080");
        }
        assert_eq!(route.internal_endpoints().len(), 3);
        // An update that drops every endpoint stops new picks at once.
        let mut gone = port();
        gone.selection = kproxy_core::EndpointSelection::default();
        assert!(route.update(&gone, now()));
        assert!(route.pick(client, None, false, now()).is_err());
    }
}
