//! Which endpoints a service port uses from this node (upstream's
//! CategorizeEndpoints): ready endpoints, else serving-terminating ones, each
//! decided separately for Cluster and Local policy; topology hints narrow the
//! cluster-wide set when every ready endpoint carries them.

use std::collections::BTreeMap;

use super::endpoints::EndpointInfo;
use super::service::ServicePortInfo;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Categorized<'a> {
    /// For Cluster policy traffic (empty if the service never uses it).
    pub cluster: Vec<&'a EndpointInfo>,
    /// For Local policy traffic (empty if the service never uses it).
    pub local: Vec<&'a EndpointInfo>,
    /// Every endpoint some traffic from this node may reach: the union of
    /// the two, sorted by text.
    pub all_reachable: Vec<&'a EndpointInfo>,
    /// Some usable endpoint exists somewhere in the cluster (even when none
    /// is reachable from here).
    pub has_any: bool,
}

impl Categorized<'_> {
    /// Where traffic of one policy goes — the Local chain with `Local`,
    /// else the Cluster one — and whether it has endpoints there
    /// (upstream's internalPolicyChain / hasInternalEndpoints and their
    /// external twins), for any renderer's chain type.
    pub fn policy_target<'c, C>(
        &self,
        policy_local: bool,
        cluster: &'c C,
        local: &'c C,
    ) -> (&'c C, bool) {
        if policy_local {
            (local, self.has_any && !self.local.is_empty())
        } else {
            (cluster, self.has_any)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TopologyMode {
    None,
    PreferSameNode,
    PreferSameZone,
}

pub fn categorize_endpoints<'a>(
    endpoints: &'a [EndpointInfo],
    service: &ServicePortInfo,
    node_name: &str,
    zone: Option<&str>,
) -> Categorized<'a> {
    let mut result = Categorized::default();
    let mut topology = TopologyMode::None;

    if service.uses_cluster_endpoints() {
        topology = topology_mode(endpoints, node_name, zone);
        result.cluster = (endpoints.iter())
            .filter(|ep| ep.ready && available_for_topology(ep, topology, node_name, zone))
            .collect();
        // Topology never leaves a ready endpoint unused when ready ones exist
        // (the mode would have fallen back), so an empty set means none is
        // ready anywhere: fall back to serving-terminating endpoints.
        if result.cluster.is_empty() {
            result.cluster = endpoints
                .iter()
                .filter(|ep| ep.serving && ep.terminating)
                .collect();
        }
        result.has_any = !result.cluster.is_empty();
    }

    if !service.uses_local_endpoints() {
        result.all_reachable = result.cluster.clone();
        return result;
    }

    let mut has_local_ready = false;
    let mut has_local_serving_terminating = false;
    for ep in endpoints {
        if ep.ready {
            result.has_any = true;
            has_local_ready |= ep.is_local;
        } else if ep.serving && ep.terminating {
            result.has_any = true;
            has_local_serving_terminating |= ep.is_local;
        }
    }
    let local_uses_terminating = !has_local_ready && has_local_serving_terminating;
    result.local = if has_local_ready {
        endpoints
            .iter()
            .filter(|ep| ep.is_local && ep.ready)
            .collect()
    } else if has_local_serving_terminating {
        (endpoints.iter())
            .filter(|ep| ep.is_local && ep.serving && ep.terminating)
            .collect()
    } else {
        Vec::new()
    };

    if !service.uses_cluster_endpoints() {
        result.all_reachable = result.local.clone();
        return result;
    }
    if topology == TopologyMode::None && !local_uses_terminating {
        // Cluster holds every ready endpoint, so it already holds the local ones.
        result.all_reachable = result.cluster.clone();
        return result;
    }
    let mut union: BTreeMap<String, &EndpointInfo> = BTreeMap::new();
    for ep in result.cluster.iter().chain(result.local.iter()) {
        union.insert(ep.to_string(), ep);
    }
    result.all_reachable = union.into_values().collect();
    result
}

/// Same-node hints win when every ready endpoint has one and one names this
/// node; else same-zone hints, likewise for this node's zone; else none.
fn topology_mode(endpoints: &[EndpointInfo], node_name: &str, zone: Option<&str>) -> TopologyMode {
    let ready: Vec<&EndpointInfo> = endpoints.iter().filter(|ep| ep.ready).collect();
    let all_have_node_hints = ready.iter().all(|ep| !ep.node_hints.is_empty());
    if all_have_node_hints && ready.iter().any(|ep| ep.node_hints.contains(node_name)) {
        return TopologyMode::PreferSameNode;
    }
    let all_have_zone_hints = ready.iter().all(|ep| !ep.zone_hints.is_empty());
    if let Some(zone) = zone
        && all_have_zone_hints
        && ready.iter().any(|ep| ep.zone_hints.contains(zone))
    {
        return TopologyMode::PreferSameZone;
    }
    TopologyMode::None
}

fn available_for_topology(
    ep: &EndpointInfo,
    mode: TopologyMode,
    node_name: &str,
    zone: Option<&str>,
) -> bool {
    match mode {
        TopologyMode::None => true,
        TopologyMode::PreferSameNode => ep.node_hints.contains(node_name),
        TopologyMode::PreferSameZone => zone.is_some_and(|z| ep.zone_hints.contains(z)),
    }
}
