//! Conversion from Kubernetes API objects (k8s-openapi types) into [`crate::model`].
//!
//! Each function checks what kube-proxy relies on (IPs parse, ports in range, known
//! protocols, an owning service for a slice) and returns an [`Error::InvalidObject`]
//! naming the object and the field when something is off. Objects kube-proxy ignores on
//! purpose (ExternalName and headless Services, FQDN slices) convert to `Ok(None)`.
//!
//! [`Error::InvalidObject`]: crate::Error::InvalidObject

mod endpoints;
mod node;
mod service;
mod slice;

pub use endpoints::endpoints;
pub use node::node;
pub use service::service;
pub use slice::endpoint_slice;

use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::Error;
use crate::model::{ObjectKind, ObjectRef, Protocol};

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Objects with this label belong to another service proxy; kube-proxy skips them.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Label the EndpointSlice controller puts on headless services' slices.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// EndpointSlice annotation used for the network programming latency metric.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Builds errors for one object, so each check is one line.
pub(crate) struct Ctx {
    kind: ObjectKind,
    obj: ObjectRef,
}

impl Ctx {
    pub(crate) fn new(kind: ObjectKind, meta: &ObjectMeta) -> Result<Ctx, Error> {
        let obj = ObjectRef::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        let ctx = Ctx { kind, obj };
        if ctx.obj.name.is_empty() {
            return Err(ctx.err("metadata.name", "missing"));
        }
        if kind != ObjectKind::Node && ctx.obj.namespace.is_empty() {
            return Err(ctx.err("metadata.namespace", "missing"));
        }
        Ok(ctx)
    }

    pub(crate) fn obj(&self) -> &ObjectRef {
        &self.obj
    }

    pub(crate) fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidObject {
            kind: self.kind,
            obj: self.obj.clone(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn ip(&self, field: impl Into<String>, value: &str) -> Result<IpAddr, Error> {
        parse_ip(value).ok_or_else(|| self.err(field, format!("{value:?} is not an IP address")))
    }

    pub(crate) fn port(&self, field: impl Into<String>, value: i32) -> Result<u16, Error> {
        match u16::try_from(value) {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(self.err(field, format!("port {value} is out of range 1-65535"))),
        }
    }

    pub(crate) fn protocol(
        &self,
        field: impl Into<String>,
        value: Option<&str>,
    ) -> Result<Protocol, Error> {
        match value {
            None => Ok(Protocol::Tcp),
            Some(p) => Protocol::from_api(p).ok_or_else(|| {
                self.err(
                    field,
                    format!("unknown protocol {p:?} (want TCP, UDP or SCTP)"),
                )
            }),
        }
    }
}

/// Parses an IP the way Kubernetes writes them, accepting surrounding whitespace but not
/// zone suffixes or CIDRs.
pub(crate) fn parse_ip(s: &str) -> Option<IpAddr> {
    s.trim().parse().ok()
}

/// Whether `meta` carries the service-proxy-name label (another proxy's object).
pub(crate) fn has_label(meta: &ObjectMeta, label: &str) -> bool {
    meta.labels.as_ref().is_some_and(|l| l.contains_key(label))
}
