//! The output model of `kproxy plan`: a stable, serde-encoded view of the
//! [`ServiceMap`], independent of core's internal types so that the JSON and YAML forms
//! only change on purpose.

use std::net::{IpAddr, SocketAddr};

use kproxy_core::model::{IpFamily, ServiceType};
use kproxy_core::{
    BuildOptions, EndpointInfo, Exclusion, ServiceMap, ServicePort, Snapshot, TopologyMode,
};
use serde::{Deserialize, Serialize};

/// Everything `kproxy plan` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    /// The node the map is computed for.
    pub node: String,
    /// Whether the input holds that Node object (it gives the zone).
    pub node_found: bool,
    /// The node's zone label, if any.
    pub zone: Option<String>,
    /// One entry per IP family that has service ports, IPv4 first.
    pub families: Vec<FamilyReport>,
}

/// The service ports of one IP family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FamilyReport {
    /// `IPv4` or `IPv6`.
    pub family: String,
    /// The ports, by namespace/name:port.
    pub service_ports: Vec<PortReport>,
}

/// One service port in one family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortReport {
    /// `namespace/name:port` (`namespace/name` for an unnamed port).
    pub name: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// `ClusterIP`, `NodePort` or `LoadBalancer`.
    #[serde(rename = "type")]
    pub service_type: String,
    /// The cluster IP of this family.
    #[serde(rename = "clusterIP")]
    pub cluster_ip: IpAddr,
    /// The service port.
    pub port: u16,
    /// The node port, if any.
    pub node_port: Option<u16>,
    /// External IPs of this family.
    #[serde(rename = "externalIPs")]
    pub external_ips: Vec<IpAddr>,
    /// Load-balancer ingress IPs of this family.
    #[serde(rename = "loadBalancerIPs")]
    pub load_balancer_ips: Vec<IpAddr>,
    /// `loadBalancerSourceRanges` of this family.
    pub load_balancer_source_ranges: Vec<String>,
    /// `Cluster` or `Local`, as it takes effect (Local only on externally accessible ports).
    pub external_traffic_policy: String,
    /// `Cluster` or `Local`.
    pub internal_traffic_policy: String,
    /// ClientIP affinity timeout in seconds, if the service has ClientIP affinity.
    pub session_affinity_timeout_seconds: Option<u32>,
    /// The health check node port, if any.
    pub health_check_node_port: Option<u16>,
    /// How topology hints narrowed cluster traffic: `None`, `PreferSameZone`, `PreferSameNode`.
    pub topology: String,
    /// Where each kind of traffic goes.
    pub traffic: TrafficReport,
    /// Every endpoint, with whether each traffic class reaches it and why not.
    pub endpoints: Vec<EndpointReport>,
}

/// Which endpoints each kind of traffic reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficReport {
    /// Endpoints of Cluster-policy traffic; `None` when the port uses none
    /// (internalTrafficPolicy Local on a port not reachable from outside).
    pub cluster: Option<Vec<SocketAddr>>,
    /// Whether `cluster` fell back to serving-terminating endpoints.
    pub cluster_uses_terminating: bool,
    /// Endpoints of Local-policy traffic; `None` when the port has no Local policy.
    pub local: Option<Vec<SocketAddr>>,
    /// Whether `local` fell back to serving-terminating endpoints.
    pub local_uses_terminating: bool,
    /// Which set traffic to the cluster IP uses: `cluster` or `local`.
    #[serde(rename = "clusterIPUses")]
    pub cluster_ip_uses: String,
    /// Which set external traffic (node port, external and LB IPs) uses; `None` when the
    /// port is not reachable from outside.
    pub external_uses: Option<String>,
    /// Whether traffic has anywhere to go; false means it is rejected.
    pub has_any_endpoints: bool,
}

/// One endpoint of a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointReport {
    /// IP and target port.
    pub address: SocketAddr,
    /// `conditions.ready`.
    pub ready: bool,
    /// `conditions.serving`.
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
    /// The node it runs on.
    pub node: Option<String>,
    /// Its zone.
    pub zone: Option<String>,
    /// Whether it runs on this node.
    pub local: bool,
    /// Whether cluster traffic reaches it.
    pub cluster: Reach,
    /// Whether Local-policy traffic reaches it.
    pub local_policy: Reach,
}

/// Whether one kind of traffic reaches an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "status")]
pub enum Reach {
    /// The endpoint is selected.
    Selected,
    /// The endpoint is left out.
    Excluded {
        /// A stable code: `notReady`, `terminating`, `otherZone`, `otherNodeHint`, `otherNode`.
        code: String,
        /// The explanation, for people.
        reason: String,
    },
    /// The port does not use this kind of traffic.
    NotUsed,
}

impl Reach {
    fn of(used: bool, exclusion: Option<Exclusion>) -> Reach {
        match (used, exclusion) {
            (false, _) => Reach::NotUsed,
            (true, None) => Reach::Selected,
            (true, Some(why)) => Reach::Excluded {
                code: code(&why).to_owned(),
                reason: why.to_string(),
            },
        }
    }
}

fn code(why: &Exclusion) -> &'static str {
    match why {
        Exclusion::NotReady => "notReady",
        Exclusion::Terminating => "terminating",
        Exclusion::OtherZone { .. } => "otherZone",
        Exclusion::OtherNodeHint { .. } => "otherNodeHint",
        Exclusion::OtherNode { .. } => "otherNode",
    }
}

fn policy(local: bool) -> String {
    if local { "Local" } else { "Cluster" }.to_owned()
}

fn service_type(t: ServiceType) -> &'static str {
    match t {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    }
}

fn topology(t: TopologyMode) -> &'static str {
    match t {
        TopologyMode::None => "None",
        TopologyMode::PreferSameZone => "PreferSameZone",
        TopologyMode::PreferSameNode => "PreferSameNode",
    }
}

impl PlanReport {
    /// The report of `map`, built from `snapshot` with `opts`.
    pub fn new(snapshot: &Snapshot, map: &ServiceMap, opts: &BuildOptions) -> PlanReport {
        let node = snapshot.node(&opts.node_name);
        let zone = node.and_then(|n| n.zone());
        let families = IpFamily::ALL
            .iter()
            .filter(|f| !map.family(**f).is_empty())
            .map(|f| FamilyReport {
                family: f.as_api().to_owned(),
                service_ports: map
                    .family(*f)
                    .values()
                    .map(|p| port_report(p, opts, zone))
                    .collect(),
            })
            .collect();
        PlanReport {
            node: opts.node_name.clone(),
            node_found: node.is_some(),
            zone: zone.map(str::to_owned),
            families,
        }
    }
}

fn port_report(p: &ServicePort, opts: &BuildOptions, zone: Option<&str>) -> PortReport {
    let uses_cluster = p.uses_cluster_endpoints();
    let uses_local = p.uses_local_endpoints();
    let which = |local: bool| if local { "local" } else { "cluster" }.to_owned();
    PortReport {
        name: p.name.to_string(),
        protocol: p.name.protocol.as_api().to_owned(),
        service_type: service_type(p.service_type).to_owned(),
        cluster_ip: p.cluster_ip,
        port: p.port,
        node_port: p.node_port,
        external_ips: p.external_ips.clone(),
        load_balancer_ips: p.load_balancer_ips.clone(),
        load_balancer_source_ranges: p
            .load_balancer_source_ranges
            .iter()
            .map(ToString::to_string)
            .collect(),
        external_traffic_policy: policy(p.external_policy_local),
        internal_traffic_policy: policy(p.internal_policy_local),
        session_affinity_timeout_seconds: p.session_affinity.map(|a| a.timeout_seconds),
        health_check_node_port: p.health_check_node_port,
        topology: topology(p.selection.topology).to_owned(),
        traffic: TrafficReport {
            cluster: uses_cluster.then(|| p.selection.cluster.clone()),
            cluster_uses_terminating: p.selection.cluster_uses_terminating,
            local: uses_local.then(|| p.selection.local.clone()),
            local_uses_terminating: p.selection.local_uses_terminating,
            cluster_ip_uses: which(p.internal_policy_local),
            external_uses: p
                .externally_accessible()
                .then(|| which(p.external_policy_local)),
            has_any_endpoints: p.selection.has_any_endpoints,
        },
        endpoints: p
            .endpoints
            .iter()
            .map(|e| endpoint_report(p, e, opts, zone))
            .collect(),
    }
}

fn endpoint_report(
    p: &ServicePort,
    e: &EndpointInfo,
    opts: &BuildOptions,
    zone: Option<&str>,
) -> EndpointReport {
    EndpointReport {
        address: e.addr,
        ready: e.conditions.ready,
        serving: e.conditions.serving,
        terminating: e.conditions.terminating,
        node: e.node_name.clone(),
        zone: e.zone.clone(),
        local: e.is_local,
        cluster: Reach::of(
            p.uses_cluster_endpoints(),
            p.cluster_exclusion(e, opts, zone),
        ),
        local_policy: Reach::of(p.uses_local_endpoints(), p.local_exclusion(e, opts, zone)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INPUT: &str = r#"
apiVersion: v1
kind: Service
metadata: { name: web, namespace: default }
spec:
  type: NodePort
  externalTrafficPolicy: Local
  clusterIP: 10.96.0.20
  ports: [{ name: http, port: 80, nodePort: 30080 }]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-1, namespace: default, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
ports: [{ name: http, port: 8080 }]
endpoints:
- { addresses: [10.0.0.1], conditions: { ready: true }, nodeName: a }
- { addresses: [10.0.0.2], conditions: { ready: true }, nodeName: b }
- { addresses: [10.0.0.3], conditions: { ready: false, serving: false }, nodeName: a }
"#;

    fn report() -> PlanReport {
        let (snap, problems) = Snapshot::from_documents(INPUT).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let opts = BuildOptions::for_node("a");
        PlanReport::new(&snap, &ServiceMap::build(&snap, &opts), &opts)
    }

    #[test]
    fn external_local_policy_reports_both_sets_and_why_each_endpoint_is_left_out() {
        let r = report();
        assert!(!r.node_found);
        let p = &r.families[0].service_ports[0];
        assert_eq!(p.name, "default/web:http");
        assert_eq!(p.external_traffic_policy, "Local");
        assert_eq!(p.traffic.cluster_ip_uses, "cluster");
        assert_eq!(p.traffic.external_uses.as_deref(), Some("local"));
        assert_eq!(p.traffic.cluster.as_ref().unwrap().len(), 2);
        assert_eq!(
            p.traffic.local.as_ref().unwrap(),
            &["10.0.0.1:8080".parse::<SocketAddr>().unwrap()]
        );
        let remote = &p.endpoints[1];
        assert_eq!(remote.cluster, Reach::Selected);
        assert_eq!(
            remote.local_policy,
            Reach::Excluded {
                code: "otherNode".into(),
                reason: "other node (b)".into()
            }
        );
        let not_ready = &p.endpoints[2];
        assert_eq!(
            not_ready.cluster,
            Reach::Excluded {
                code: "notReady".into(),
                reason: "not ready".into()
            }
        );
    }

    #[test]
    fn json_form_uses_stable_camel_case_names() {
        let v = serde_json::to_value(report()).unwrap();
        let p = &v["families"][0]["servicePorts"][0];
        assert_eq!(p["clusterIP"], "10.96.0.20");
        assert_eq!(p["type"], "NodePort");
        assert_eq!(p["traffic"]["clusterIPUses"], "cluster");
        assert_eq!(p["endpoints"][2]["cluster"]["status"], "excluded");
        assert_eq!(p["endpoints"][2]["cluster"]["code"], "notReady");
        assert_eq!(p["endpoints"][0]["localPolicy"]["status"], "selected");
    }
}
