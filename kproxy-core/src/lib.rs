//! # kproxy-core
//!
//! The pure heart of kproxy, a Kubernetes service proxy: no I/O, no clock, no threads.
//! It turns snapshots of Services, EndpointSlices and Nodes into a backend-neutral
//! [`ServiceMap`], tracks what changed between two maps ([`ChangeSet`]), and defines the
//! [`Proxier`] trait that every backend (iptables, ipvs, userspace, or a vendor's own)
//! implements.
//!
//! Where to start:
//! - [`convert`] turns Kubernetes API objects (k8s-openapi types) into kproxy's
//!   [`model`] types, reporting bad objects without letting them poison the others;
//! - [`Snapshot`] holds the converted objects; [`ServiceMap::build`] computes, per IP
//!   family and service port, which endpoints each kind of traffic reaches, following
//!   upstream kube-proxy's rules (readiness, terminating fallback, traffic policies,
//!   topology hints);
//! - [`ChangeTracker`] applies add/update/delete events incrementally and yields the
//!   same map a full build would, plus the [`ChangeSet`] a backend needs for a partial
//!   sync and conntrack cleanup;
//! - [`config::KubeProxyConfiguration`] is the `kubeproxy.config.k8s.io/v1alpha1` config.
//!
//! ```
//! use kproxy_core::{BuildOptions, ServiceMap, Snapshot};
//! use kproxy_core::model::IpFamily;
//!
//! let yaml = r#"
//! apiVersion: v1
//! kind: Service
//! metadata: { name: web, namespace: default }
//! spec:
//!   clusterIP: 10.96.0.10
//!   ports: [{ name: http, port: 80, protocol: TCP }]
//! ---
//! apiVersion: discovery.k8s.io/v1
//! kind: EndpointSlice
//! metadata:
//!   name: web-abc
//!   namespace: default
//!   labels: { kubernetes.io/service-name: web }
//! addressType: IPv4
//! ports: [{ name: http, port: 8080, protocol: TCP }]
//! endpoints:
//! - addresses: [10.0.1.5]
//!   conditions: { ready: true }
//!   nodeName: node-a
//! "#;
//! let (snapshot, problems) = Snapshot::from_documents(yaml).unwrap();
//! assert!(problems.is_empty());
//! let map = ServiceMap::build(&snapshot, &BuildOptions::for_node("node-a"));
//! let port = map.family(IpFamily::V4).values().next().unwrap();
//! assert_eq!(port.name.to_string(), "default/web:http");
//! assert_eq!(port.selection.cluster[0].to_string(), "10.0.1.5:8080");
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod change;
pub mod config;
pub mod convert;
mod error;
pub mod model;
pub mod proxier;
pub mod select;
pub mod service_map;
pub mod snapshot;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tracker;

pub use change::{ChangeSet, FlowTarget, PortKey, StaleFlow};
pub use config::KubeProxyConfiguration;
pub use error::{Error, FieldError, FieldErrors, Result};
pub use proxier::{Proxier, ProxierCall, RecordingProxier, SyncStats};
pub use select::{EndpointSelection, Exclusion, TopologyMode};
pub use service_map::{BuildOptions, EndpointInfo, NodeFacts, ServiceMap, ServicePort};
pub use snapshot::{Object, ObjectKey, Snapshot};
pub use tracker::{ChangeTracker, Event};
