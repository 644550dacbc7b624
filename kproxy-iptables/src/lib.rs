//! # kproxy-iptables
//!
//! kproxy's iptables backend: the rules upstream kube-proxy's iptables mode installs
//! (`pkg/proxy/iptables/proxier.go`), planned by pure functions, applied with one
//! `iptables-restore --noflush` per family, and checked by a packet tracer.
//!
//! Where to start:
//! - [`plan::plan`] turns a [`ServiceMap`](kproxy_core::ServiceMap) and a
//!   [`ChangeSet`](kproxy_core::ChangeSet) into restore input, full or partial (see the
//!   module docs for how partial syncs avoid rewriting shared chains);
//! - [`ruleset::Ruleset`] parses that input into a model and applies `--noflush`
//!   restores to it; [`trace::trace_packet`] follows a packet through the model;
//! - [`exec::Executor`] runs `iptables-restore`, `iptables-save` and `conntrack`, and
//!   creates and reads upstream's nfacct counters over nfnetlink ([`nfacct`], no
//!   `nfacct` binary); a command that outlives its time limit is killed with its
//!   process group;
//! - [`IptablesProxier`] implements [`kproxy_core::Proxier`] on top of them.
//!
//! For the binary: [`render_plan`] prints what a full sync loads, [`trace()`] explains
//! where a packet goes.
//!
//! ```
//! use kproxy_core::model::{IpFamily, Protocol};
//! use kproxy_core::{BuildOptions, KubeProxyConfiguration, NodeFacts, ServiceMap, Snapshot};
//! use kproxy_iptables::{Packet, render_plan, trace};
//!
//! let yaml = r#"
//! apiVersion: v1
//! kind: Service
//! metadata: { name: kubernetes, namespace: default }
//! spec: { clusterIP: 10.96.0.1, ports: [{ name: https, port: 443, protocol: TCP }] }
//! ---
//! apiVersion: discovery.k8s.io/v1
//! kind: EndpointSlice
//! metadata: { name: k, namespace: default, labels: { kubernetes.io/service-name: kubernetes } }
//! addressType: IPv4
//! ports: [{ name: https, port: 6443, protocol: TCP }]
//! endpoints: [{ addresses: [192.168.0.10] }]
//! "#;
//! let (snapshot, _) = Snapshot::from_documents(yaml).unwrap();
//! let map = ServiceMap::build(&snapshot, &BuildOptions::for_node("node-a"));
//! let node = NodeFacts::from_node("node-a", None);
//! let cfg = KubeProxyConfiguration::default();
//! let text = render_plan(&map, &node, &cfg, IpFamily::V4).unwrap();
//! assert!(text.contains("-A KUBE-SERVICES -m comment --comment \"default/kubernetes:https cluster IP\" \
//!     -m tcp -p tcp -d 10.96.0.1 --dport 443 -j KUBE-SVC-NPX46M4PTMTKRN6Y"));
//!
//! let packet = Packet {
//!     protocol: Protocol::Tcp,
//!     src: "10.0.0.5".parse().unwrap(),
//!     dst: "10.96.0.1".parse().unwrap(),
//!     dport: 443,
//!     in_iface: Some("cni0".into()),
//!     src_local: false,
//! };
//! let result = trace(&map, &node, &cfg, &packet).unwrap();
//! assert_eq!(result.outcomes[0].dnat, Some("192.168.0.10:6443".parse().unwrap()));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod chains;
mod error;
pub mod exec;
pub mod nfacct;
pub mod plan;
pub mod proxier;
pub mod ruleset;
#[cfg(any(test, feature = "testing"))]
pub mod synth;
pub mod trace;

pub use error::{Error, Result};
pub use exec::{Backend, Executor, RealExecutor, RestoreFlags};
pub use plan::{Plan, PlanConfig, PlanState, Table, plan};
pub use proxier::{IptablesProxier, Metrics};
pub use ruleset::Ruleset;
pub use trace::{Packet, TraceOutcome, TraceResult, Verdict, render_plan, trace, trace_packet};
