//! core/v1 Node → [`model::Node`](crate::model::Node).

use k8s_openapi::api::core::v1 as api;

use super::{Ctx, parse_ip};
use crate::Error;
use crate::model::{Node, ObjectKind};

/// The taint the cluster autoscaler puts on nodes it is about to delete.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// Converts a Node. Addresses that are not IPs (Hostname, InternalDNS, ...) are skipped;
/// InternalIP addresses come first, then ExternalIP ones.
pub fn node(node: &api::Node) -> Result<Node, Error> {
    let ctx = Ctx::new(ObjectKind::Node, &node.metadata)?;
    let mut addresses = Vec::new();
    let status_addrs = node.status.as_ref().and_then(|s| s.addresses.as_ref());
    for kind in ["InternalIP", "ExternalIP"] {
        for (i, a) in status_addrs.into_iter().flatten().enumerate() {
            if a.type_ == kind {
                let ip = parse_ip(&a.address).ok_or_else(|| {
                    ctx.err(
                        format!("status.addresses[{i}].address"),
                        format!("{:?} is not an IP address", a.address),
                    )
                })?;
                if !addresses.contains(&ip) {
                    addresses.push(ip);
                }
            }
        }
    }
    let spec = node.spec.as_ref();
    let mut pod_cidrs = Vec::new();
    let cidrs: Vec<(String, &String)> = match spec.and_then(|s| s.pod_cidrs.as_ref()) {
        Some(v) if !v.is_empty() => v
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("spec.podCIDRs[{i}]"), c))
            .collect(),
        _ => spec
            .and_then(|s| s.pod_cidr.as_ref())
            .map(|c| vec![("spec.podCIDR".to_owned(), c)])
            .unwrap_or_default(),
    };
    for (field, c) in cidrs {
        let net = c
            .trim()
            .parse::<ipnet::IpNet>()
            .map_err(|_| ctx.err(field, format!("{c:?} is not a CIDR")))?;
        pod_cidrs.push(net);
    }
    let tainted = spec
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .any(|t| t.key == TO_BE_DELETED_TAINT);
    Ok(Node {
        name: ctx.obj().name.clone(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        addresses,
        pod_cidrs,
        being_deleted: node.metadata.deletion_timestamp.is_some() || tainted,
    })
}
