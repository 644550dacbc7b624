//! Legacy core/v1 Endpoints → [`model::EndpointSlice`](crate::model::EndpointSlice)s.

use k8s_openapi::api::core::v1 as api;

use super::{Ctx, LAST_CHANGE_TRIGGER_TIME, SERVICE_PROXY_NAME_LABEL, has_label};
use crate::Error;
use crate::model::{Endpoint, EndpointConditions, EndpointSlice, IpFamily, ObjectKind, SlicePort};

/// Converts a legacy Endpoints object into slices, one per subset and IP family, named
/// `<name>/endpoints-<subset>-<family>` (a `/` no real slice name can contain, so they
/// never collide with EndpointSlices). `addresses` are ready; `notReadyAddresses` are
/// neither ready nor serving, as the EndpointSlice mirroring controller maps them.
pub fn endpoints(eps: &api::Endpoints) -> Result<Vec<EndpointSlice>, Error> {
    let ctx = Ctx::new(ObjectKind::Endpoints, &eps.metadata)?;
    if has_label(&eps.metadata, SERVICE_PROXY_NAME_LABEL) {
        return Ok(Vec::new());
    }
    let trigger = eps
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAST_CHANGE_TRIGGER_TIME))
        .cloned();
    let mut out = Vec::new();
    for (s, subset) in eps.subsets.iter().flatten().enumerate() {
        let mut ports = Vec::new();
        for (i, p) in subset.ports.iter().flatten().enumerate() {
            let protocol = ctx.protocol(
                format!("subsets[{s}].ports[{i}].protocol"),
                p.protocol.as_deref(),
            )?;
            let port = ctx.port(format!("subsets[{s}].ports[{i}].port"), p.port)?;
            ports.push(SlicePort {
                name: p.name.clone().unwrap_or_default(),
                protocol,
                port,
            });
        }
        let mut by_family: [Vec<Endpoint>; 2] = [Vec::new(), Vec::new()];
        let lists = [
            ("addresses", subset.addresses.as_ref(), true),
            (
                "notReadyAddresses",
                subset.not_ready_addresses.as_ref(),
                false,
            ),
        ];
        for (field, list, ready) in lists {
            for (i, a) in list.into_iter().flatten().enumerate() {
                let address = ctx.ip(format!("subsets[{s}].{field}[{i}].ip"), &a.ip)?;
                let ep = Endpoint {
                    address,
                    conditions: EndpointConditions {
                        ready,
                        serving: ready,
                        terminating: false,
                    },
                    node_name: a.node_name.clone().filter(|n| !n.is_empty()),
                    zone: None,
                    zone_hints: Vec::new(),
                    node_hints: Vec::new(),
                };
                by_family[usize::from(IpFamily::of(&address) == IpFamily::V6)].push(ep);
            }
        }
        for (family, endpoints) in IpFamily::ALL.into_iter().zip(by_family) {
            if endpoints.is_empty() {
                continue;
            }
            let suffix = if family == IpFamily::V4 {
                "ipv4"
            } else {
                "ipv6"
            };
            let mut id = ctx.obj().clone();
            id.name = format!("{}/endpoints-{s}-{suffix}", id.name);
            out.push(EndpointSlice {
                id,
                service: ctx.obj().clone(),
                family,
                ports: ports.clone(),
                endpoints,
                last_change_trigger_time: trigger.clone(),
            });
        }
    }
    Ok(out)
}
