//! Services, EndpointSlices and Nodes after conversion: already checked, so every field
//! here is usable as it is.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{IpFamily, ObjectRef, Protocol};

/// A Service's type. `ExternalName` services are dropped at conversion: kube-proxy does
/// not proxy them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ServiceType {
    /// Reachable on its cluster IPs (and external IPs, if any).
    ClusterIP,
    /// ClusterIP plus a port on every node.
    NodePort,
    /// NodePort plus load-balancer ingress IPs.
    LoadBalancer,
}

/// `externalTrafficPolicy` / `internalTrafficPolicy`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum TrafficPolicy {
    /// Any ready endpoint in the cluster (the default).
    #[default]
    Cluster,
    /// Only endpoints on this node.
    Local,
}

/// ClientIP session affinity: a client keeps reaching the same endpoint for `timeout_seconds`
/// after its last packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionAffinity {
    /// `sessionAffinityConfig.clientIP.timeoutSeconds`; the API default is 10800.
    pub timeout_seconds: u32,
}

impl SessionAffinity {
    /// The API default timeout (`DefaultClientIPServiceAffinitySeconds`): 3 hours.
    pub const DEFAULT_TIMEOUT_SECONDS: u32 = 10800;
    /// The API maximum timeout: one day.
    pub const MAX_TIMEOUT_SECONDS: u32 = 86400;
}

/// One `status.loadBalancer.ingress[]` entry that has an IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LoadBalancerIngress {
    /// The load balancer's IP.
    pub ip: IpAddr,
    /// `ipMode: Proxy`: the load balancer proxies and the node never sees this IP as a
    /// destination, so kube-proxy installs no rules for it.
    pub proxy_mode: bool,
}

/// One entry of `spec.ports`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServicePortSpec {
    /// Port name; may be empty when the service has one port.
    pub name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// The service port (1..=65535).
    pub port: u16,
    /// The node port, if allocated.
    pub node_port: Option<u16>,
}

/// A Service, as kproxy uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Namespace and name.
    pub id: ObjectRef,
    /// `spec.type` (ExternalName never gets here).
    pub service_type: ServiceType,
    /// `spec.clusterIPs` (falling back to `spec.clusterIP`), at most one per family.
    /// Empty for a headless service, which kube-proxy ignores.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.ports`.
    pub ports: Vec<ServicePortSpec>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip` (entries with only a hostname are skipped).
    pub load_balancer_ingress: Vec<LoadBalancerIngress>,
    /// `spec.loadBalancerSourceRanges`, whitespace-trimmed.
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// `spec.externalTrafficPolicy`.
    pub external_traffic_policy: TrafficPolicy,
    /// `spec.internalTrafficPolicy`.
    pub internal_traffic_policy: TrafficPolicy,
    /// `spec.sessionAffinity: ClientIP` with its timeout.
    pub session_affinity: Option<SessionAffinity>,
    /// `spec.healthCheckNodePort`, for LoadBalancer services with externalTrafficPolicy Local.
    pub health_check_node_port: Option<u16>,
}

/// The conditions of one endpoint, with upstream's nil handling already applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EndpointConditions {
    /// `conditions.ready`, nil meaning true.
    pub ready: bool,
    /// `conditions.serving`, nil meaning true.
    pub serving: bool,
    /// `conditions.terminating`, nil meaning false.
    pub terminating: bool,
}

impl Default for EndpointConditions {
    fn default() -> Self {
        EndpointConditions {
            ready: true,
            serving: true,
            terminating: false,
        }
    }
}

/// One endpoint of a slice (upstream uses only `addresses[0]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// The endpoint's address.
    pub address: IpAddr,
    /// Readiness, serving and terminating.
    pub conditions: EndpointConditions,
    /// `nodeName`: the node the endpoint runs on.
    pub node_name: Option<String>,
    /// `zone`: the endpoint's own zone.
    pub zone: Option<String>,
    /// `hints.forZones[].name`.
    pub zone_hints: Vec<String>,
    /// `hints.forNodes[].name`.
    pub node_hints: Vec<String>,
}

/// One entry of an EndpointSlice's `ports`: matched to a service port by name and protocol.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SlicePort {
    /// Name; matches the service port's name (empty for an unnamed port).
    pub name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// The target port on the endpoints.
    pub port: u16,
}

/// An EndpointSlice (or a legacy Endpoints subset converted into one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSlice {
    /// Namespace and name of the slice.
    pub id: ObjectRef,
    /// The owning Service (label `kubernetes.io/service-name`), in the slice's namespace.
    pub service: ObjectRef,
    /// `addressType`; FQDN slices never get here.
    pub family: IpFamily,
    /// `ports`.
    pub ports: Vec<SlicePort>,
    /// `endpoints`.
    pub endpoints: Vec<Endpoint>,
    /// Annotation `endpoints.kubernetes.io/last-change-trigger-time` (RFC 3339), for the
    /// network programming latency metric.
    pub last_change_trigger_time: Option<String>,
}

/// The parts of a Node that kube-proxy uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The node's name.
    pub name: String,
    /// Labels (`topology.kubernetes.io/zone` is the one that matters).
    pub labels: BTreeMap<String, String>,
    /// `status.addresses` that parse as IPs (InternalIP first, then ExternalIP).
    pub addresses: Vec<IpAddr>,
    /// `spec.podCIDRs` (or `spec.podCIDR`).
    pub pod_cidrs: Vec<IpNet>,
    /// The node is being deleted (`metadata.deletionTimestamp` set) or carries the
    /// `ToBeDeletedByClusterAutoscaler` taint: its health check reports not eligible.
    pub being_deleted: bool,
}

impl Node {
    /// The label that names a node's zone.
    pub const ZONE_LABEL: &'static str = "topology.kubernetes.io/zone";

    /// The node's zone, from its `topology.kubernetes.io/zone` label.
    pub fn zone(&self) -> Option<&str> {
        self.labels.get(Self::ZONE_LABEL).map(String::as_str)
    }
}
