//! The [`ServiceMap`]: per IP family and service port, everything a backend needs to
//! program that port, with endpoint selection already done.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Bound;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::model::{
    EndpointConditions, EndpointSlice, IpFamily, Node, ObjectRef, Protocol, Service,
    ServicePortName, ServiceType, SessionAffinity, TrafficPolicy,
};
use crate::select::{self, EndpointSelection, Exclusion, SelectionInput};
use crate::snapshot::Snapshot;

/// What the map build needs to know about where it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// This node's name (`hostnameOverride`, else the host name, lower-cased): decides
    /// which endpoints are local and which Node object gives the zone.
    pub node_name: String,
    /// The `PreferSameTrafficDistribution` feature gate (beta, on by default since
    /// Kubernetes 1.34): honour per-node hints.
    pub prefer_same_node: bool,
}

impl BuildOptions {
    /// Options for node `name` with upstream's default feature gates.
    pub fn for_node(name: impl Into<String>) -> Self {
        BuildOptions {
            node_name: name.into(),
            prefer_same_node: true,
        }
    }

    /// Options from a config: its `hostnameOverride` (if set, else `fallback_name`) and its
    /// feature gates.
    pub fn from_config(cfg: &crate::KubeProxyConfiguration, fallback_name: &str) -> Self {
        let name = cfg.hostname_override.trim();
        let name = if name.is_empty() { fallback_name } else { name };
        BuildOptions {
            node_name: name.to_lowercase(),
            prefer_same_node: cfg
                .feature_gates
                .get("PreferSameTrafficDistribution")
                .copied()
                .unwrap_or(true),
        }
    }
}

/// One endpoint of one service port, merged across slices.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// Endpoint IP and target port.
    pub addr: SocketAddr,
    /// Ready / serving / terminating.
    pub conditions: EndpointConditions,
    /// Whether it runs on this node.
    pub is_local: bool,
    /// The node it runs on.
    pub node_name: Option<String>,
    /// Its zone.
    pub zone: Option<String>,
    /// Zones it is hinted for.
    pub zone_hints: Vec<String>,
    /// Nodes it is hinted for.
    pub node_hints: Vec<String>,
}

/// One service port in one IP family: virtual IPs, policies and selected endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServicePort {
    /// `namespace/name:port` and protocol.
    pub name: ServicePortName,
    /// The family of every address below.
    pub family: IpFamily,
    /// The Service's type.
    pub service_type: ServiceType,
    /// The cluster IP of this family.
    pub cluster_ip: IpAddr,
    /// The service port.
    pub port: u16,
    /// The node port, if any.
    pub node_port: Option<u16>,
    /// External IPs of this family.
    pub external_ips: Vec<IpAddr>,
    /// Load-balancer ingress IPs of this family (ipMode Proxy excluded).
    pub load_balancer_ips: Vec<IpAddr>,
    /// `loadBalancerSourceRanges` of this family.
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// `externalTrafficPolicy: Local` on an externally accessible service (upstream
    /// `ExternalPolicyLocal`).
    pub external_policy_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_policy_local: bool,
    /// ClientIP session affinity.
    pub session_affinity: Option<SessionAffinity>,
    /// The health check node port (LoadBalancer with externalTrafficPolicy Local only).
    pub health_check_node_port: Option<u16>,
    /// Every endpoint of this port, sorted by address, one per address.
    pub endpoints: Vec<EndpointInfo>,
    /// Which endpoints each kind of traffic reaches.
    pub selection: EndpointSelection,
}

impl ServicePort {
    /// Whether traffic from outside reaches this port on this node: a node port, a
    /// load-balancer IP or an external IP (upstream `ExternallyAccessible`).
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some()
            || !self.load_balancer_ips.is_empty()
            || !self.external_ips.is_empty()
    }

    /// Upstream `UsesClusterEndpoints`.
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_policy_local || self.externally_accessible()
    }

    /// Upstream `UsesLocalEndpoints`.
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_policy_local || (self.external_policy_local && self.externally_accessible())
    }

    /// Endpoints for traffic to the cluster IP: local ones with `internalTrafficPolicy:
    /// Local`, else the cluster ones.
    pub fn internal_endpoints(&self) -> &[SocketAddr] {
        if self.internal_policy_local {
            &self.selection.local
        } else {
            &self.selection.cluster
        }
    }

    /// Endpoints for external traffic (node port, external IP, LB IP) from outside the
    /// node: local ones with `externalTrafficPolicy: Local`, else the cluster ones.
    pub fn external_endpoints(&self) -> &[SocketAddr] {
        if self.external_policy_local {
            &self.selection.local
        } else {
            &self.selection.cluster
        }
    }

    /// Cluster ∪ local endpoints, sorted: every endpoint some traffic can reach (the
    /// endpoints that get a KUBE-SEP chain upstream).
    pub fn reachable_endpoints(&self) -> Vec<SocketAddr> {
        let mut all: Vec<SocketAddr> = self
            .selection
            .cluster
            .iter()
            .chain(&self.selection.local)
            .copied()
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    /// All virtual IPs of the port: the cluster IP, external IPs and load-balancer IPs.
    pub fn virtual_ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        std::iter::once(self.cluster_ip)
            .chain(self.external_ips.iter().copied())
            .chain(self.load_balancer_ips.iter().copied())
    }

    /// Why an endpoint of this port receives no cluster traffic (None: it does).
    pub fn cluster_exclusion(
        &self,
        ep: &EndpointInfo,
        opts: &BuildOptions,
        zone: Option<&str>,
    ) -> Option<Exclusion> {
        select::cluster_exclusion(ep, &self.selection, &self.selection_input(opts, zone))
    }

    /// Why an endpoint of this port receives no Local-policy traffic (None: it does, or
    /// the port has no Local policy).
    pub fn local_exclusion(
        &self,
        ep: &EndpointInfo,
        opts: &BuildOptions,
        zone: Option<&str>,
    ) -> Option<Exclusion> {
        select::local_exclusion(ep, &self.selection, &self.selection_input(opts, zone))
    }

    fn selection_input<'a>(
        &self,
        opts: &'a BuildOptions,
        zone: Option<&'a str>,
    ) -> SelectionInput<'a> {
        SelectionInput {
            uses_cluster_endpoints: self.uses_cluster_endpoints(),
            uses_local_endpoints: self.uses_local_endpoints(),
            node_name: &opts.node_name,
            node_zone: zone,
            prefer_same_node: opts.prefer_same_node,
        }
    }
}

/// Facts about the node that planners need beyond the map: its addresses (for node
/// ports and `nodePortAddresses`) and pod CIDRs (for `detectLocalMode: NodeCIDR`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFacts {
    /// The node's name.
    pub name: String,
    /// The node's primary IPs, at most one per family (from `bindAddress` or the Node
    /// object), as upstream's `detectNodeIPs`.
    pub node_ips: Vec<IpAddr>,
    /// Every address local to the node (what `-m addrtype --dst-type LOCAL` matches),
    /// loopback included.
    pub local_addresses: Vec<IpAddr>,
    /// The Node's `spec.podCIDRs`.
    pub pod_cidrs: Vec<IpNet>,
}

impl NodeFacts {
    /// Facts as `kproxy plan` assumes them: the Node object's addresses plus loopback, or
    /// only loopback when the Node is unknown.
    pub fn from_node(name: &str, node: Option<&Node>) -> Self {
        let mut node_ips = Vec::new();
        let mut local = Vec::new();
        if let Some(n) = node {
            for fam in IpFamily::ALL {
                if let Some(ip) = n
                    .addresses
                    .iter()
                    .find(|a| IpFamily::of(a) == fam && !a.is_loopback())
                {
                    node_ips.push(*ip);
                }
            }
            local.extend(n.addresses.iter().copied());
        }
        if node_ips.is_empty() {
            node_ips.extend([
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]);
        }
        local.extend([
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]);
        local.sort_unstable();
        local.dedup();
        NodeFacts {
            name: name.to_owned(),
            node_ips,
            local_addresses: local,
            pod_cidrs: node.map(|n| n.pod_cidrs.clone()).unwrap_or_default(),
        }
    }

    /// The node IP of `family`, if it has one.
    pub fn node_ip(&self, family: IpFamily) -> Option<IpAddr> {
        self.node_ips
            .iter()
            .copied()
            .find(|ip| IpFamily::of(ip) == family)
    }
}

/// Every proxied service port of the cluster, per IP family, keyed by
/// [`ServicePortName`], with its endpoint selection for this node.
///
/// Built in full by [`ServiceMap::build`], or kept up to date by
/// [`ChangeTracker`](crate::ChangeTracker); both give equal maps for the same objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceMap {
    /// The node the map was built for.
    node_name: String,
    #[serde(with = "port_list")]
    v4: BTreeMap<ServicePortName, ServicePort>,
    #[serde(with = "port_list")]
    v6: BTreeMap<ServicePortName, ServicePort>,
}

/// Serializes a family's ports as a list (JSON map keys must be strings; each port
/// carries its own name anyway).
mod port_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::ServicePort;
    use crate::model::ServicePortName;

    pub(super) fn serialize<S: Serializer>(
        m: &BTreeMap<ServicePortName, ServicePort>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.values())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<ServicePortName, ServicePort>, D::Error> {
        Ok(Vec::<ServicePort>::deserialize(d)?
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect())
    }
}

impl ServiceMap {
    /// Builds the map from a snapshot, from scratch.
    pub fn build(snapshot: &Snapshot, opts: &BuildOptions) -> ServiceMap {
        let mut map = ServiceMap {
            node_name: opts.node_name.clone(),
            ..Default::default()
        };
        let zone = snapshot.node(&opts.node_name).and_then(Node::zone);
        for svc in snapshot.services() {
            for port in build_service(svc, snapshot.slices_of(&svc.id), opts, zone) {
                map.insert(port);
            }
        }
        map
    }

    /// The node the map was built for.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The ports of one family.
    pub fn family(&self, family: IpFamily) -> &BTreeMap<ServicePortName, ServicePort> {
        match family {
            IpFamily::V4 => &self.v4,
            IpFamily::V6 => &self.v6,
        }
    }

    fn family_mut(&mut self, family: IpFamily) -> &mut BTreeMap<ServicePortName, ServicePort> {
        match family {
            IpFamily::V4 => &mut self.v4,
            IpFamily::V6 => &mut self.v6,
        }
    }

    /// One port of one family.
    pub fn get(&self, family: IpFamily, name: &ServicePortName) -> Option<&ServicePort> {
        self.family(family).get(name)
    }

    /// Every port, IPv4 first, each family in name order.
    pub fn iter(&self) -> impl Iterator<Item = &ServicePort> {
        self.v4.values().chain(self.v6.values())
    }

    /// Number of (family, port) entries.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether the map has no ports.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ports of one Service in one family.
    pub fn ports_of<'a>(
        &'a self,
        family: IpFamily,
        service: &'a ObjectRef,
    ) -> impl Iterator<Item = &'a ServicePort> + 'a {
        service_range(self.family(family), service).map(|(_, p)| p)
    }

    /// Number of distinct endpoint IPs of `service` in `family` that run on this node and
    /// are ready, across all its ports: what the health check node port reports
    /// (serving-terminating endpoints do not count, as upstream).
    pub fn local_ready_endpoints(&self, family: IpFamily, service: &ObjectRef) -> usize {
        let mut ips: Vec<IpAddr> = self
            .ports_of(family, service)
            .flat_map(|p| p.endpoints.iter())
            .filter(|e| e.is_local && e.conditions.ready)
            .map(|e| e.addr.ip())
            .collect();
        ips.sort_unstable();
        ips.dedup();
        ips.len()
    }

    /// Total endpoints across all ports of a family (upstream's large-cluster threshold
    /// counts these).
    pub fn endpoint_count(&self, family: IpFamily) -> usize {
        self.family(family)
            .values()
            .map(|p| p.endpoints.len())
            .sum()
    }

    pub(crate) fn insert(&mut self, port: ServicePort) {
        self.family_mut(port.family).insert(port.name.clone(), port);
    }

    /// Replaces every port of `service` (both families) with `ports`, returning the old ones.
    pub(crate) fn replace_service(
        &mut self,
        service: &ObjectRef,
        ports: Vec<ServicePort>,
    ) -> Vec<ServicePort> {
        let mut old = Vec::new();
        for fam in IpFamily::ALL {
            let m = self.family_mut(fam);
            let keys: Vec<ServicePortName> =
                service_range(m, service).map(|(k, _)| k.clone()).collect();
            for k in keys {
                if let Some(p) = m.remove(&k) {
                    old.push(p);
                }
            }
        }
        for p in ports {
            self.insert(p);
        }
        old
    }
}

/// The entries of `service` in a family map: a range scan, as names sort by service first.
fn service_range<'a>(
    m: &'a BTreeMap<ServicePortName, ServicePort>,
    service: &'a ObjectRef,
) -> impl Iterator<Item = (&'a ServicePortName, &'a ServicePort)> + 'a {
    let start = ServicePortName::new(service.clone(), "", Protocol::Tcp);
    m.range((Bound::Included(start), Bound::Unbounded))
        .take_while(move |(k, _)| &k.service == service)
}

/// The ports of one Service for this node, both families, from the Service and its slices.
pub(crate) fn build_service<'a>(
    svc: &Service,
    slices: impl Iterator<Item = &'a EndpointSlice> + Clone,
    opts: &BuildOptions,
    zone: Option<&str>,
) -> Vec<ServicePort> {
    let mut out = Vec::new();
    for family in IpFamily::ALL {
        let Some(cluster_ip) = svc
            .cluster_ips
            .iter()
            .copied()
            .find(|ip| IpFamily::of(ip) == family)
        else {
            continue;
        };
        let of_family = |ip: &&IpAddr| IpFamily::of(ip) == family;
        let external_ips: Vec<IpAddr> = sorted(svc.external_ips.iter().filter(of_family).copied());
        let load_balancer_ips: Vec<IpAddr> = if svc.service_type == ServiceType::LoadBalancer {
            sorted(
                svc.load_balancer_ingress
                    .iter()
                    .filter(|i| !i.proxy_mode)
                    .map(|i| i.ip)
                    .filter(|ip| IpFamily::of(ip) == family),
            )
        } else {
            Vec::new()
        };
        let load_balancer_source_ranges: Vec<IpNet> = if load_balancer_ips.is_empty() {
            Vec::new()
        } else {
            let mut v: Vec<IpNet> = svc
                .load_balancer_source_ranges
                .iter()
                .filter(|n| IpFamily::of(&n.addr()) == family)
                .copied()
                .collect();
            v.dedup();
            v
        };
        // Upstream ExternalPolicyLocal: eTP Local only counts for externally accessible
        // services (LoadBalancer, NodePort, or with external IPs).
        let externally_accessible_service = matches!(
            svc.service_type,
            ServiceType::NodePort | ServiceType::LoadBalancer
        ) || !svc.external_ips.is_empty();
        let external_policy_local =
            svc.external_traffic_policy == TrafficPolicy::Local && externally_accessible_service;
        let internal_policy_local = svc.internal_traffic_policy == TrafficPolicy::Local;
        let health_check_node_port =
            if svc.service_type == ServiceType::LoadBalancer && external_policy_local {
                svc.health_check_node_port
            } else {
                None
            };
        for spec in &svc.ports {
            let node_port = match svc.service_type {
                ServiceType::ClusterIP => None,
                _ => spec.node_port,
            };
            let name = ServicePortName::new(svc.id.clone(), spec.name.clone(), spec.protocol);
            let endpoints = collect_endpoints(&name, family, slices.clone(), opts);
            let mut port = ServicePort {
                name,
                family,
                service_type: svc.service_type,
                cluster_ip,
                port: spec.port,
                node_port,
                external_ips: external_ips.clone(),
                load_balancer_ips: load_balancer_ips.clone(),
                load_balancer_source_ranges: load_balancer_source_ranges.clone(),
                external_policy_local,
                internal_policy_local,
                session_affinity: svc.session_affinity,
                health_check_node_port,
                endpoints,
                selection: EndpointSelection::default(),
            };
            port.selection = select::categorize(&port.endpoints, &port.selection_input(opts, zone));
            out.push(port);
        }
    }
    out
}

fn sorted<T: Ord>(it: impl Iterator<Item = T>) -> Vec<T> {
    let mut v: Vec<T> = it.collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The endpoints of one port in one family, merged across slices: keyed by `ip:port`,
/// where the same address is in two slices the non-terminating one wins (upstream
/// `EndpointSliceCache`).
fn collect_endpoints<'a>(
    name: &ServicePortName,
    family: IpFamily,
    slices: impl Iterator<Item = &'a EndpointSlice>,
    opts: &BuildOptions,
) -> Vec<EndpointInfo> {
    let mut out: Vec<EndpointInfo> = Vec::new();
    for slice in slices.filter(|s| s.family == family) {
        out.reserve(slice.endpoints.len());
        let Some(sp) = slice
            .ports
            .iter()
            .find(|p| p.name == name.port && p.protocol == name.protocol)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            if IpFamily::of(&ep.address) != family {
                continue;
            }
            out.push(EndpointInfo {
                addr: SocketAddr::new(ep.address, sp.port),
                conditions: ep.conditions,
                is_local: ep.node_name.as_deref() == Some(opts.node_name.as_str()),
                node_name: ep.node_name.clone(),
                zone: ep.zone.clone(),
                zone_hints: ep.zone_hints.clone(),
                node_hints: ep.node_hints.clone(),
            });
        }
    }
    // Sort by address, non-terminating first, then by the rest so the survivor of a
    // duplicate does not depend on slice order.
    out.sort_unstable_by(|a, b| {
        a.addr
            .cmp(&b.addr)
            .then(a.conditions.terminating.cmp(&b.conditions.terminating))
            .then_with(|| {
                (
                    &a.conditions,
                    &a.node_name,
                    &a.zone,
                    &a.zone_hints,
                    &a.node_hints,
                )
                    .cmp(&(
                        &b.conditions,
                        &b.node_name,
                        &b.zone,
                        &b.zone_hints,
                        &b.node_hints,
                    ))
            })
    });
    out.dedup_by(|later, first| later.addr == first.addr);
    out
}
