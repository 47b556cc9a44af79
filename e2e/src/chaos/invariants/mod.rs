//! Invariants of the cluster's objects that no fault may break, each a small
//! pure function over listed objects returning the violations it found, named
//! by the objects involved.
//!
//! Two kinds: *safety* invariants (a pod bound twice or moved, a node
//! overcommitted, a volume bound to two claims) must never be seen, not even
//! for a moment; *convergence* invariants (owners alive, Deployment bounds,
//! endpoints, claim↔volume agreement) may be broken for the moments a change
//! or a fault takes to be worked through — the garbage collector deleting a
//! ReplicaSet after its Deployment, an EndpointSlice following a pod that just
//! became ready — so the runner counts one only when it persists past a grace
//! period, or is still there once everything should have converged.
//! `service-routes` is neither: it reads the run's probe log, not a listing,
//! and carries its own bounded window (see `traffic`).

mod endpoints;
mod ownership;
pub mod quantity;
mod rollout;
mod scheduling;
pub mod traffic;
mod volumes;

use std::fmt;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{
    Endpoints, Node, PersistentVolume, PersistentVolumeClaim, Pod, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

pub use endpoints::ready_endpoints_in_one_slice_and_in_endpoints;
pub use ownership::owners_are_live;
pub use rollout::deployments_within_surge_and_availability;
pub use scheduling::{BindingHistory, bound_at_most_once, bound_pods_fit_their_nodes};
pub use volumes::volumes_bound_to_one_claim_that_agrees;

/// Which invariant a violation breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Invariant {
    /// A pod's `nodeName` changed, or two bindings of it succeeded.
    PodBoundOnce,
    /// The pods bound to a node ask for more than it has.
    PodsFitNode,
    /// A ReplicaSet or pod whose controller owner is gone (or another one).
    OwnerLive,
    /// More pods than `replicas + maxSurge`, or fewer available than `replicas − maxUnavailable`.
    DeploymentBounds,
    /// A ready endpoint in no slice, in two, or missing from the Endpoints.
    EndpointsAgree,
    /// Two claims on one volume, or a claim and its volume disagreeing.
    VolumeBinding,
    /// Requests to a stable Service's ClusterIP failed (checked over the
    /// whole run's probe log at its end; see `traffic`).
    ServiceRoutes,
}

impl Invariant {
    /// Safety invariants are violated the moment they are seen; the others
    /// only when the violation outlives the runner's grace period.
    pub fn is_safety(self) -> bool {
        matches!(self, Self::PodBoundOnce | Self::PodsFitNode)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::PodBoundOnce => "pod-bound-once",
            Self::PodsFitNode => "pods-fit-node",
            Self::OwnerLive => "owner-live",
            Self::DeploymentBounds => "deployment-bounds",
            Self::EndpointsAgree => "endpoints-agree",
            Self::VolumeBinding => "volume-binding",
            Self::ServiceRoutes => "service-routes",
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One broken invariant: the objects involved (`kind/namespace/name`) and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Violation {
    pub invariant: Invariant,
    pub objects: Vec<String>,
    pub detail: String,
}

impl Violation {
    fn new(invariant: Invariant, objects: Vec<String>, detail: impl Into<String>) -> Self {
        Self {
            invariant,
            objects,
            detail: detail.into(),
        }
    }

    /// What identifies the violation across snapshots: the same objects
    /// breaking the same invariant (the detail's numbers may move).
    pub fn key(&self) -> (Invariant, Vec<String>) {
        (self.invariant, self.objects.clone())
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({})",
            self.invariant,
            self.detail,
            self.objects.join(", ")
        )
    }
}

/// `Kind/namespace/name` (or `Kind/name` for cluster-scoped objects).
pub fn object_name<K: kube::Resource<DynamicType = ()>>(object: &K) -> String {
    let kind = K::kind(&());
    match object.namespace() {
        Some(ns) => format!("{kind}/{ns}/{}", object.name_any()),
        None => format!("{kind}/{}", object.name_any()),
    }
}

/// The objects the invariants read, listed at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub replica_sets: Vec<ReplicaSet>,
    pub deployments: Vec<Deployment>,
    pub services: Vec<Service>,
    pub endpoints: Vec<Endpoints>,
    pub slices: Vec<EndpointSlice>,
    pub volumes: Vec<PersistentVolume>,
    pub claims: Vec<PersistentVolumeClaim>,
}

impl Snapshot {
    /// Every invariant that needs no history, on this snapshot.
    pub fn check(&self) -> Vec<Violation> {
        let mut found = bound_pods_fit_their_nodes(&self.nodes, &self.pods);
        found.extend(owners_are_live(
            &self.deployments,
            &self.replica_sets,
            &self.pods,
        ));
        found.extend(deployments_within_surge_and_availability(
            &self.deployments,
            &self.replica_sets,
            &self.pods,
        ));
        found.extend(ready_endpoints_in_one_slice_and_in_endpoints(
            &self.services,
            &self.slices,
            &self.endpoints,
        ));
        found.extend(volumes_bound_to_one_claim_that_agrees(
            &self.volumes,
            &self.claims,
        ));
        found
    }
}

/// Test fixtures shared by the invariants' unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use serde_json::{Value, json};

    pub fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
        serde_json::from_value(value).expect("valid fixture")
    }

    pub fn owner(kind: &str, name: &str, uid: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid, "controller": true})
    }
}
