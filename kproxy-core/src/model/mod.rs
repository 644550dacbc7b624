//! kproxy's own small types for the objects it reads: Services, EndpointSlices (legacy
//! Endpoints convert into the same shape) and Nodes.
//!
//! The Kubernetes API structs stop at [`crate::convert`]; everything after it (the
//! [`ServiceMap`](crate::ServiceMap), every backend planner) sees only these types, with
//! IPs parsed, ports range-checked and protocols known.

mod names;
mod objects;

pub use names::{
    Escaped, EscapedPortName, EscapedRef, IpFamily, ObjectKind, ObjectRef, Protocol,
    ServicePortName,
};
pub use objects::{
    Endpoint, EndpointConditions, EndpointSlice, LoadBalancerIngress, Node, Service,
    ServicePortSpec, ServiceType, SessionAffinity, SlicePort, TrafficPolicy,
};
