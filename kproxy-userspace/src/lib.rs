//! # kproxy-userspace
//!
//! kproxy's userspace backend, a reimplementation of the userspace mode upstream
//! kube-proxy removed in v1.26 (`pkg/proxy/userspace`): every TCP and UDP service port
//! gets a proxy socket on `bindAddress`, and iptables `REDIRECT`/`DNAT` rules send the
//! service's virtual IPs and node ports to that socket. The proxy picks an endpoint
//! (round robin, optional ClientIP affinity) and copies bytes.
//!
//! Where to start:
//! - [`balance`]: the per-port round-robin balancer with session affinity (pure, injected
//!   clock and seed) and the dial retry schedule;
//! - [`plan`]: pure functions from a [`ServiceMap`](kproxy_core::ServiceMap) to the
//!   listeners wanted and the `iptables-restore` text; [`render_plan`] is what
//!   `kproxy plan --proxy-mode userspace` prints;
//! - [`copy`] and [`splice`]: the bidirectional byte copy (a state machine over any
//!   `AsyncRead + AsyncWrite`, and a zero-copy `splice(2)` path for TCP sockets);
//! - [`tcp`] and [`udp`]: the proxy sockets;
//! - [`UserspaceProxier`]: the [`kproxy_core::Proxier`] gluing them, with [`Metrics`].
//!
//! For the binary, `kproxy plan --proxy-mode userspace` prints [`render_plan`], and
//! `kproxy run` builds the proxier with the iptables mode's executor:
//!
//! ```
//! use std::sync::Arc;
//! use kproxy_core::model::IpFamily;
//! use kproxy_core::{BuildOptions, KubeProxyConfiguration, NodeFacts, ServiceMap, Snapshot};
//! use kproxy_userspace::exec::{Backend, RealExecutor};
//! use kproxy_userspace::{UserspaceProxier, render_plan};
//!
//! let yaml = r#"
//! apiVersion: v1
//! kind: Service
//! metadata: { name: dns, namespace: kube-system }
//! spec:
//!   clusterIP: 10.96.0.10
//!   ports: [{ name: dns, port: 53, protocol: UDP }]
//! "#;
//! let (snapshot, _) = Snapshot::from_documents(yaml).unwrap();
//! let map = ServiceMap::build(&snapshot, &BuildOptions::for_node("node-a"));
//! let mut cfg = KubeProxyConfiguration::default();
//! cfg.port_range = "30000-30100".into();
//! let text = render_plan(&map, &NodeFacts::from_node("node-a", None), &cfg, IpFamily::V4);
//! assert!(text.contains("-A KUBE-PORTALS-CONTAINER -m comment --comment \"kube-system/dns:dns\" \
//!     -p udp -m udp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-ports 30000"));
//!
//! // Opens nothing until the first `sync`.
//! let proxier = UserspaceProxier::new(&cfg, Arc::new(RealExecutor::new(Backend::Default)))?;
//! # drop(proxier);
//! # Ok::<(), kproxy_userspace::Error>(())
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod balance;
pub mod copy;
mod error;
pub mod exec;
pub mod metrics;
pub mod plan;
pub mod ports;
pub mod proxier;
pub mod route;
pub mod splice;
pub mod tcp;
pub mod udp;

pub use balance::{Balancer, DIAL_TIMEOUTS};
pub use error::{Error, Result};
pub use exec::{Executor, RealExecutor};
pub use metrics::{Metrics, MetricsSnapshot};
pub use plan::{Plan, PlannedListener, render_plan};
pub use proxier::UserspaceProxier;
