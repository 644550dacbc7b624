//! Endpoint selection: which endpoints cluster traffic and Local-policy traffic reach.
//!
//! This is upstream kube-proxy's `CategorizeEndpoints` (`pkg/proxy/topology.go`), computed
//! once here so that no backend re-derives it:
//!
//! 1. A topology mode is chosen from the hints of the **ready** endpoints, only when the
//!    port uses cluster endpoints: `PreferSameNode` when every ready endpoint has node
//!    hints and one is hinted for this node (with the `PreferSameTrafficDistribution`
//!    gate), else `PreferSameZone` when every ready endpoint has zone hints and one is
//!    hinted for this node's zone, else none.
//! 2. Cluster endpoints are the ready endpoints that pass that filter; when there are
//!    none, the endpoints that are serving **and** terminating, unfiltered.
//! 3. Local endpoints (only for `internalTrafficPolicy: Local` or an externally
//!    accessible port with `externalTrafficPolicy: Local`) are this node's ready
//!    endpoints, or, when there are none, this node's serving-terminating ones. Hints
//!    never apply to them.
//! 4. `has_any_endpoints` says whether the port has anywhere to send traffic at all; when
//!    false, backends reject its traffic.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::service_map::EndpointInfo;

/// How topology hints narrowed cluster traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TopologyMode {
    /// Hints are not used (missing on some ready endpoint, or none match this node).
    #[default]
    None,
    /// Only ready endpoints hinted for this node's zone.
    PreferSameZone,
    /// Only ready endpoints hinted for this node.
    PreferSameNode,
}

/// The endpoints each kind of traffic to one service port reaches, sorted by address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EndpointSelection {
    /// How topology hints were applied to cluster traffic.
    pub topology: TopologyMode,
    /// Endpoints for Cluster-policy traffic.
    pub cluster: Vec<SocketAddr>,
    /// Endpoints for Local-policy traffic (empty when the port uses no Local policy).
    pub local: Vec<SocketAddr>,
    /// Whether `cluster` fell back to serving-terminating endpoints.
    pub cluster_uses_terminating: bool,
    /// Whether `local` fell back to serving-terminating endpoints.
    pub local_uses_terminating: bool,
    /// Whether traffic has anywhere to go: false means REJECT upstream.
    pub has_any_endpoints: bool,
}

/// Why an endpoint does not receive some kind of traffic, for `kproxy plan` and logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "reason")]
pub enum Exclusion {
    /// Not ready, and not serving-terminating either.
    NotReady,
    /// Serving but terminating, and ready endpoints exist, so it gets no new traffic.
    Terminating,
    /// Ready, but topology hints send this node's traffic to another zone's endpoints.
    OtherZone {
        /// The zones the endpoint is hinted for.
        hints: Vec<String>,
    },
    /// Ready, but topology hints send this node's traffic to other nodes' endpoints.
    OtherNodeHint {
        /// The nodes the endpoint is hinted for.
        hints: Vec<String>,
    },
    /// On another node, and the traffic has a Local policy.
    OtherNode {
        /// The node it runs on, if known.
        node: Option<String>,
    },
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::NotReady => f.write_str("not ready"),
            Exclusion::Terminating => f.write_str("terminating (ready endpoints exist)"),
            Exclusion::OtherZone { hints } => {
                write!(f, "other zone (hinted for {})", hints.join(","))
            }
            Exclusion::OtherNodeHint { hints } => {
                write!(f, "other node (hinted for {})", hints.join(","))
            }
            Exclusion::OtherNode { node: Some(n) } => write!(f, "other node ({n})"),
            Exclusion::OtherNode { node: None } => f.write_str("other node (no nodeName)"),
        }
    }
}

/// What [`categorize`] needs to know about the port and this node.
#[derive(Debug, Clone, Copy)]
pub struct SelectionInput<'a> {
    /// `!iTPLocal || externally accessible` (upstream `UsesClusterEndpoints`).
    pub uses_cluster_endpoints: bool,
    /// `iTPLocal || (eTPLocal && externally accessible)` (upstream `UsesLocalEndpoints`).
    pub uses_local_endpoints: bool,
    /// This node's name (for node hints).
    pub node_name: &'a str,
    /// This node's zone label, if any.
    pub node_zone: Option<&'a str>,
    /// The `PreferSameTrafficDistribution` feature gate.
    pub prefer_same_node: bool,
}

fn serving_terminating(ep: &EndpointInfo) -> bool {
    ep.conditions.serving && ep.conditions.terminating
}

/// Chooses the topology mode from the ready endpoints' hints (step 1 above).
fn topology_mode(endpoints: &[EndpointInfo], input: &SelectionInput<'_>) -> TopologyMode {
    let ready = || endpoints.iter().filter(|e| e.conditions.ready);
    // Most services carry no hints at all: the first ready endpoint settles that cheaply.
    let Some(first) = ready().next() else {
        return TopologyMode::None;
    };
    if first.node_hints.is_empty() && first.zone_hints.is_empty() {
        return TopologyMode::None;
    }
    if input.prefer_same_node
        && ready().all(|e| !e.node_hints.is_empty())
        && ready().any(|e| e.node_hints.iter().any(|h| h == input.node_name))
    {
        return TopologyMode::PreferSameNode;
    }
    if let Some(zone) = input.node_zone
        && ready().all(|e| !e.zone_hints.is_empty())
        && ready().any(|e| e.zone_hints.iter().any(|h| h == zone))
    {
        return TopologyMode::PreferSameZone;
    }
    TopologyMode::None
}

fn passes_topology(ep: &EndpointInfo, mode: TopologyMode, input: &SelectionInput<'_>) -> bool {
    match mode {
        TopologyMode::None => true,
        TopologyMode::PreferSameNode => ep.node_hints.iter().any(|h| h == input.node_name),
        TopologyMode::PreferSameZone => input
            .node_zone
            .is_some_and(|z| ep.zone_hints.iter().any(|h| h == z)),
    }
}

/// Upstream's `CategorizeEndpoints` over one port's endpoints (sorted by address; the
/// output keeps that order).
pub fn categorize(endpoints: &[EndpointInfo], input: &SelectionInput<'_>) -> EndpointSelection {
    let mut sel = EndpointSelection::default();
    if input.uses_cluster_endpoints {
        sel.topology = topology_mode(endpoints, input);
        sel.cluster = endpoints
            .iter()
            .filter(|e| e.conditions.ready && passes_topology(e, sel.topology, input))
            .map(|e| e.addr)
            .collect();
        if sel.cluster.is_empty() {
            sel.cluster = endpoints
                .iter()
                .filter(|e| serving_terminating(e))
                .map(|e| e.addr)
                .collect();
            sel.cluster_uses_terminating = !sel.cluster.is_empty();
        }
    }
    if input.uses_local_endpoints {
        sel.local = endpoints
            .iter()
            .filter(|e| e.is_local && e.conditions.ready)
            .map(|e| e.addr)
            .collect();
        if sel.local.is_empty() {
            sel.local = endpoints
                .iter()
                .filter(|e| e.is_local && serving_terminating(e))
                .map(|e| e.addr)
                .collect();
            sel.local_uses_terminating = !sel.local.is_empty();
        }
    }
    // Upstream: with a Local policy, "any endpoint anywhere" counts even when the cluster
    // set was not computed, so that a Local-only port with remote endpoints drops instead
    // of rejecting.
    sel.has_any_endpoints = !sel.cluster.is_empty()
        || (input.uses_local_endpoints
            && endpoints
                .iter()
                .any(|e| e.conditions.ready || serving_terminating(e)));
    sel
}

/// Why `ep` is not in `sel.cluster` (`None` when it is), given the same input.
pub fn cluster_exclusion(
    ep: &EndpointInfo,
    sel: &EndpointSelection,
    input: &SelectionInput<'_>,
) -> Option<Exclusion> {
    if sel.cluster.binary_search(&ep.addr).is_ok() {
        return None;
    }
    if ep.conditions.ready {
        return Some(match sel.topology {
            TopologyMode::PreferSameNode => Exclusion::OtherNodeHint {
                hints: ep.node_hints.clone(),
            },
            TopologyMode::PreferSameZone => Exclusion::OtherZone {
                hints: ep.zone_hints.clone(),
            },
            // Ready, no topology filter, yet absent: only when the port uses no cluster
            // endpoints (iTP Local on an internal-only port); the local check explains it.
            TopologyMode::None => return local_exclusion(ep, sel, input),
        });
    }
    if serving_terminating(ep) {
        return Some(Exclusion::Terminating);
    }
    Some(Exclusion::NotReady)
}

/// Why `ep` is not in `sel.local` (`None` when it is, or when the port has no Local policy).
pub fn local_exclusion(
    ep: &EndpointInfo,
    sel: &EndpointSelection,
    input: &SelectionInput<'_>,
) -> Option<Exclusion> {
    if !input.uses_local_endpoints || sel.local.binary_search(&ep.addr).is_ok() {
        return None;
    }
    if !ep.is_local {
        return Some(Exclusion::OtherNode {
            node: ep.node_name.as_deref().map(str::to_owned),
        });
    }
    if serving_terminating(ep) && !ep.conditions.ready {
        return Some(Exclusion::Terminating);
    }
    Some(Exclusion::NotReady)
}
