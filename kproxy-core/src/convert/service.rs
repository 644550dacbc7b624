//! core/v1 Service → [`model::Service`](crate::model::Service).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1 as api;

use super::{Ctx, SERVICE_PROXY_NAME_LABEL, has_label};
use crate::Error;
use crate::model::{
    IpFamily, LoadBalancerIngress, ObjectKind, Service, ServicePortSpec, ServiceType,
    SessionAffinity, TrafficPolicy,
};

/// Converts a Service. `Ok(None)` for services kube-proxy does not proxy: ExternalName,
/// headless (`clusterIP: None` or empty), and those labelled
/// `service.kubernetes.io/service-proxy-name` (another proxy owns them).
///
/// ```
/// # use k8s_openapi::api::core::v1::Service;
/// let svc: Service = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "web", "namespace": "default"},
///     "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "protocol": "FTP"}]}
/// })).unwrap();
/// let err = kproxy_core::convert::service(&svc).unwrap_err();
/// assert_eq!(err.to_string(),
///     r#"service default/web: spec.ports[0].protocol: unknown protocol "FTP" (want TCP, UDP or SCTP)"#);
/// ```
pub fn service(svc: &api::Service) -> Result<Option<Service>, Error> {
    let ctx = Ctx::new(ObjectKind::Service, &svc.metadata)?;
    if has_label(&svc.metadata, SERVICE_PROXY_NAME_LABEL) {
        return Ok(None);
    }
    let Some(spec) = svc.spec.as_ref() else {
        return Err(ctx.err("spec", "missing"));
    };
    let service_type = match spec.type_.as_deref() {
        None | Some("ClusterIP") | Some("") => ServiceType::ClusterIP,
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        Some("ExternalName") => return Ok(None),
        Some(other) => return Err(ctx.err("spec.type", format!("unknown service type {other:?}"))),
    };

    // spec.clusterIPs is authoritative when set; spec.clusterIP is its first element.
    let raw_ips: Vec<(String, &str)> = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("spec.clusterIPs[{i}]"), s.as_str()))
            .collect(),
        _ => spec
            .cluster_ip
            .as_deref()
            .map(|s| vec![("spec.clusterIP".to_owned(), s)])
            .unwrap_or_default(),
    };
    if raw_ips.is_empty() || raw_ips.iter().any(|(_, s)| s.is_empty() || *s == "None") {
        return Ok(None);
    }
    let mut cluster_ips = Vec::new();
    for (field, s) in &raw_ips {
        let ip = ctx.ip(field.as_str(), s)?;
        if cluster_ips
            .iter()
            .any(|c| IpFamily::of(c) == IpFamily::of(&ip))
        {
            return Err(ctx.err(
                field.as_str(),
                format!("second {} cluster IP {ip}", IpFamily::of(&ip)),
            ));
        }
        cluster_ips.push(ip);
    }

    let mut ports = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let protocol = ctx.protocol(format!("spec.ports[{i}].protocol"), p.protocol.as_deref())?;
        let port = ctx.port(format!("spec.ports[{i}].port"), p.port)?;
        let node_port = match p.node_port {
            None | Some(0) => None,
            Some(n) => Some(ctx.port(format!("spec.ports[{i}].nodePort"), n)?),
        };
        let name = p.name.clone().unwrap_or_default();
        if !seen.insert((name.clone(), protocol)) {
            return Err(ctx.err(
                format!("spec.ports[{i}].name"),
                format!("duplicate port {name:?}/{protocol}"),
            ));
        }
        ports.push(ServicePortSpec {
            name,
            protocol,
            port,
            node_port,
        });
    }
    if ports.is_empty() {
        return Err(ctx.err("spec.ports", "no ports"));
    }

    let mut external_ips = Vec::new();
    for (i, s) in spec.external_ips.iter().flatten().enumerate() {
        external_ips.push(ctx.ip(format!("spec.externalIPs[{i}]"), s)?);
    }

    let mut load_balancer_ingress = Vec::new();
    if let Some(ingress) = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
    {
        for (i, ing) in ingress.iter().enumerate() {
            let Some(ip) = ing.ip.as_deref().filter(|s| !s.is_empty()) else {
                continue;
            };
            let ip = ctx.ip(format!("status.loadBalancer.ingress[{i}].ip"), ip)?;
            let proxy_mode = ing.ip_mode.as_deref() == Some("Proxy");
            load_balancer_ingress.push(LoadBalancerIngress { ip, proxy_mode });
        }
    }

    let mut load_balancer_source_ranges = Vec::new();
    for (i, s) in spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
    {
        let t = s.trim();
        let net = t.parse::<ipnet::IpNet>().map_err(|_| {
            ctx.err(
                format!("spec.loadBalancerSourceRanges[{i}]"),
                format!("{s:?} is not a CIDR"),
            )
        })?;
        load_balancer_source_ranges.push(net.trunc());
    }

    let policy = |field: &str, v: Option<&str>| -> Result<TrafficPolicy, Error> {
        match v {
            None | Some("") | Some("Cluster") => Ok(TrafficPolicy::Cluster),
            Some("Local") => Ok(TrafficPolicy::Local),
            Some(o) => Err(ctx.err(field, format!("unknown traffic policy {o:?}"))),
        }
    };
    let external_traffic_policy = policy(
        "spec.externalTrafficPolicy",
        spec.external_traffic_policy.as_deref(),
    )?;
    let internal_traffic_policy = policy(
        "spec.internalTrafficPolicy",
        spec.internal_traffic_policy.as_deref(),
    )?;

    let session_affinity = match spec.session_affinity.as_deref() {
        None | Some("") | Some("None") => None,
        Some("ClientIP") => {
            let t = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            let timeout_seconds = match t {
                None => SessionAffinity::DEFAULT_TIMEOUT_SECONDS,
                Some(t) if t > 0 && t as u32 <= SessionAffinity::MAX_TIMEOUT_SECONDS => t as u32,
                Some(t) => {
                    return Err(ctx.err(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        format!(
                            "{t} is out of range 1-{}",
                            SessionAffinity::MAX_TIMEOUT_SECONDS
                        ),
                    ));
                }
            };
            Some(SessionAffinity { timeout_seconds })
        }
        Some(o) => {
            return Err(ctx.err(
                "spec.sessionAffinity",
                format!("unknown session affinity {o:?}"),
            ));
        }
    };

    let health_check_node_port = match spec.health_check_node_port {
        None | Some(0) => None,
        Some(p) => Some(ctx.port("spec.healthCheckNodePort", p)?),
    };

    Ok(Some(Service {
        id: ctx.obj().clone(),
        service_type,
        cluster_ips,
        ports,
        external_ips,
        load_balancer_ingress,
        load_balancer_source_ranges,
        external_traffic_policy,
        internal_traffic_policy,
        session_affinity,
        health_check_node_port,
    }))
}
