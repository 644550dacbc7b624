//! discovery/v1 EndpointSlice → [`model::EndpointSlice`](crate::model::EndpointSlice).

use k8s_openapi::api::discovery::v1 as api;

use super::{
    Ctx, LAST_CHANGE_TRIGGER_TIME, SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL, has_label,
};
use crate::Error;
use crate::model::{
    Endpoint, EndpointConditions, EndpointSlice, IpFamily, ObjectKind, ObjectRef, SlicePort,
};

/// Converts an EndpointSlice. `Ok(None)` for slices kube-proxy ignores: `addressType:
/// FQDN`, and those labelled `service.kubernetes.io/service-proxy-name`. Ports without a
/// name or a port number are skipped, as upstream's `EndpointSliceCache` does.
pub fn endpoint_slice(slice: &api::EndpointSlice) -> Result<Option<EndpointSlice>, Error> {
    let ctx = Ctx::new(ObjectKind::EndpointSlice, &slice.metadata)?;
    if has_label(&slice.metadata, SERVICE_PROXY_NAME_LABEL) {
        return Ok(None);
    }
    let family = match slice.address_type.as_str() {
        "IPv4" => IpFamily::V4,
        "IPv6" => IpFamily::V6,
        "FQDN" => return Ok(None),
        other => return Err(ctx.err("addressType", format!("unknown address type {other:?}"))),
    };
    let service_name = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ctx.err(format!("metadata.labels[{SERVICE_NAME_LABEL}]"), "missing"))?;

    let mut ports = Vec::new();
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        let (Some(name), Some(port)) = (p.name.as_ref(), p.port) else {
            continue;
        };
        let protocol = ctx.protocol(format!("ports[{i}].protocol"), p.protocol.as_deref())?;
        let port = ctx.port(format!("ports[{i}].port"), port)?;
        ports.push(SlicePort {
            name: name.clone(),
            protocol,
            port,
        });
    }

    let mut endpoints = Vec::new();
    for (i, ep) in slice.endpoints.iter().enumerate() {
        // Upstream uses only the first address of an endpoint.
        let Some(first) = ep.addresses.first() else {
            return Err(ctx.err(format!("endpoints[{i}].addresses"), "empty"));
        };
        let address = ctx.ip(format!("endpoints[{i}].addresses[0]"), first)?;
        if IpFamily::of(&address) != family {
            return Err(ctx.err(
                format!("endpoints[{i}].addresses[0]"),
                format!("{address} is not an {family} address"),
            ));
        }
        let c = ep.conditions.as_ref();
        let conditions = EndpointConditions {
            ready: c.and_then(|c| c.ready).unwrap_or(true),
            serving: c.and_then(|c| c.serving).unwrap_or(true),
            terminating: c.and_then(|c| c.terminating).unwrap_or(false),
        };
        let hints = ep.hints.as_ref();
        endpoints.push(Endpoint {
            address,
            conditions,
            node_name: ep.node_name.clone().filter(|n| !n.is_empty()),
            zone: ep.zone.clone().filter(|z| !z.is_empty()),
            zone_hints: hints
                .and_then(|h| h.for_zones.as_ref())
                .into_iter()
                .flatten()
                .map(|z| z.name.clone())
                .collect(),
            node_hints: hints
                .and_then(|h| h.for_nodes.as_ref())
                .into_iter()
                .flatten()
                .map(|n| n.name.clone())
                .collect(),
        });
    }

    Ok(Some(EndpointSlice {
        service: ObjectRef::new(ctx.obj().namespace.clone(), service_name.clone()),
        id: ctx.obj().clone(),
        family,
        ports,
        endpoints,
        last_change_trigger_time: slice
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LAST_CHANGE_TRIGGER_TIME))
            .cloned(),
    }))
}
