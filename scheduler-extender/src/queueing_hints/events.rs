//! Turning a watch update into cluster events, as upstream's
//! `NodeSchedulingPropertiesChange` and `PodSchedulingPropertiesChange`: an
//! update carries one bit per kind of change that matters to scheduling, so
//! plugins registered for, say, label changes are not asked about a
//! heartbeat.
//!
//! Comparisons are semantic as upstream's `equality.Semantic`: an absent
//! list or map equals an empty one, and quantities compare by value.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{ActionType, ClusterEvent, EventResource};
use crate::framework::resources::{Resource, pod_requests};

/// The events of a Node update; empty when nothing scheduling-relevant
/// changed (upstream then notifies nothing).
pub fn node_scheduling_properties_change(new: &Node, old: &Node) -> Vec<ClusterEvent> {
    let extractors: [fn(&Node, &Node) -> ActionType; 8] = [
        spec_unschedulable_change,
        allocatable_change,
        labels_change,
        taints_change,
        conditions_change,
        annotations_change,
        preemption_policy_change,
        declared_features_change,
    ];
    extractors
        .iter()
        .map(|f| f(new, old))
        .filter(|a| *a != ActionType::NONE)
        .map(|a| ClusterEvent::new(EventResource::Node, a))
        .collect()
}

/// Uncordoning counts as a taint change (upstream has no own bit for it);
/// cordoning is not an event: it can only make pods less schedulable.
fn spec_unschedulable_change(new: &Node, old: &Node) -> ActionType {
    let unschedulable = |n: &Node| n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
    if unschedulable(new) != unschedulable(old) && !unschedulable(new) {
        ActionType::UPDATE_NODE_TAINT
    } else {
        ActionType::NONE
    }
}

fn quantities_equal(
    a: Option<&BTreeMap<String, Quantity>>,
    b: Option<&BTreeMap<String, Quantity>>,
) -> bool {
    let empty = BTreeMap::new();
    let (a, b) = (a.unwrap_or(&empty), b.unwrap_or(&empty));
    a.len() == b.len() && a.keys().eq(b.keys()) && Resource::from_list(a) == Resource::from_list(b)
}

fn allocatable(n: &Node) -> Option<&BTreeMap<String, Quantity>> {
    n.status.as_ref().and_then(|s| s.allocatable.as_ref())
}

fn allocatable_change(new: &Node, old: &Node) -> ActionType {
    if quantities_equal(allocatable(new), allocatable(old)) {
        ActionType::NONE
    } else {
        ActionType::UPDATE_NODE_ALLOCATABLE
    }
}

fn maps_equal(a: Option<&BTreeMap<String, String>>, b: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    a.unwrap_or(&empty) == b.unwrap_or(&empty)
}

fn labels_change(new: &Node, old: &Node) -> ActionType {
    if maps_equal(new.metadata.labels.as_ref(), old.metadata.labels.as_ref()) {
        ActionType::NONE
    } else {
        ActionType::UPDATE_NODE_LABEL
    }
}

fn taints_change(new: &Node, old: &Node) -> ActionType {
    let taints = |n: &Node| {
        n.spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
    };
    if taints(new) == taints(old) {
        ActionType::NONE
    } else {
        ActionType::UPDATE_NODE_TAINT
    }
}

/// Only each condition's status counts: heartbeat and transition times
/// change on every kubelet update and mean nothing to scheduling.
fn conditions_change(new: &Node, old: &Node) -> ActionType {
    let strip = |n: &Node| -> BTreeMap<String, String> {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .map(|c| (c.type_.clone(), c.status.clone()))
            .collect()
    };
    if strip(new) == strip(old) {
        ActionType::NONE
    } else {
        ActionType::UPDATE_NODE_CONDITION
    }
}

fn annotations_change(new: &Node, old: &Node) -> ActionType {
    if maps_equal(
        new.metadata.annotations.as_ref(),
        old.metadata.annotations.as_ref(),
    ) {
        ActionType::NONE
    } else {
        ActionType::UPDATE_NODE_ANNOTATION
    }
}

fn preemption_policy_change(new: &Node, old: &Node) -> ActionType {
    let policy = |n: &Node| {
        n.spec
            .as_ref()
            .and_then(|s| s.pod_preemption_policy.clone())
    };
    if policy(new) == policy(old) {
        ActionType::NONE
    } else {
        ActionType::UPDATE_NODE_PREEMPTION_POLICY
    }
}

/// The kubelet keeps `declaredFeatures` sorted, so a list comparison is exact.
fn declared_features_change(new: &Node, old: &Node) -> ActionType {
    let features = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.declared_features.clone())
            .unwrap_or_default()
    };
    if features(new) == features(old) {
        ActionType::NONE
    } else {
        ActionType::UPDATE_NODE_DECLARED_FEATURE
    }
}

/// The events of a Pod update. The resource is AssignedPod for a bound pod,
/// TargetPod when `is_target_pod` (the pod being asked about is the one
/// updated), else UnscheduledPod. With no specific change, one general
/// Update event, which only reaches plugins registered for all of Update.
pub fn pod_scheduling_properties_change(
    new: &Pod,
    old: &Pod,
    is_target_pod: bool,
) -> Vec<ClusterEvent> {
    let bound = new
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let resource = if bound {
        EventResource::AssignedPod
    } else if is_target_pod {
        EventResource::TargetPod
    } else {
        EventResource::UnscheduledPod
    };
    let extractors: [fn(&Pod, &Pod) -> ActionType; 6] = [
        pod_labels_change,
        pod_scale_down,
        pod_scale_up,
        pod_scheduling_gates_eliminated,
        pod_toleration_change,
        pod_generated_resource_claim_change,
    ];
    let mut events: Vec<ClusterEvent> = extractors
        .iter()
        .map(|f| f(new, old))
        .filter(|a| *a != ActionType::NONE)
        .map(|a| ClusterEvent::new(resource, a))
        .collect();
    if events.is_empty() {
        events.push(ClusterEvent::new(resource, ActionType::UPDATE));
    }
    events
}

fn pod_labels_change(new: &Pod, old: &Pod) -> ActionType {
    if maps_equal(new.metadata.labels.as_ref(), old.metadata.labels.as_ref()) {
        ActionType::NONE
    } else {
        ActionType::UPDATE_POD_LABEL
    }
}

/// Any effective request (status resources included, as in-place resize is
/// on in v1.37) got smaller or went away.
fn pod_scale_down(new: &Pod, old: &Pod) -> ActionType {
    if pod_requests(old, false).exceeds_in_any(&pod_requests(new, false)) {
        ActionType::UPDATE_POD_SCALE_DOWN
    } else {
        ActionType::NONE
    }
}

fn pod_scale_up(new: &Pod, old: &Pod) -> ActionType {
    if pod_requests(new, false).exceeds_in_any(&pod_requests(old, false)) {
        ActionType::UPDATE_POD_SCALE_UP
    } else {
        ActionType::NONE
    }
}

fn gates(p: &Pod) -> usize {
    p.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .map_or(0, Vec::len)
}

fn pod_scheduling_gates_eliminated(new: &Pod, old: &Pod) -> ActionType {
    if gates(new) == 0 && gates(old) != 0 {
        ActionType::UPDATE_POD_SCHEDULING_GATES_ELIMINATED
    } else {
        ActionType::NONE
    }
}

/// Tolerations can be added but neither changed nor removed (API
/// validation), so a different count is a new toleration.
fn pod_toleration_change(new: &Pod, old: &Pod) -> ActionType {
    let count = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.tolerations.as_ref())
            .map_or(0, Vec::len)
    };
    if count(new) == count(old) {
        ActionType::NONE
    } else {
        ActionType::UPDATE_POD_TOLERATION
    }
}

/// DynamicResourceAllocation is on in v1.37, so the generated claims listed
/// in the pod's status count too.
fn pod_generated_resource_claim_change(new: &Pod, old: &Pod) -> ActionType {
    let statuses = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.resource_claim_statuses.clone())
            .unwrap_or_default()
    };
    let extended = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.extended_resource_claim_status.clone())
    };
    if statuses(new) == statuses(old) && extended(new) == extended(old) {
        ActionType::NONE
    } else {
        ActionType::UPDATE_POD_GENERATED_RESOURCE_CLAIM
    }
}
