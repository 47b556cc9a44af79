//! Hints of the plugins that look at the node and the pod's own spec:
//! NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, NodePorts,
//! NodeResourcesFit, NodeDeclaredFeatures, SchedulingGates and
//! DefaultPreemption. Each reuses its plugin's own checks so a hint never
//! disagrees with the Filter it stands for.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Taint;
use serde_json::Value;

use super::{
    ActionType as A, ClusterEventWithHint as E, EventResource as R, Object, QueueingHint, as_nodes,
    as_pods, queue_if,
};
use crate::framework::resources::{EPHEMERAL_STORAGE, MEMORY};
use crate::framework::{NodeInfo, PodInfo};
use crate::plugins::node_affinity;
use crate::plugins::node_declared_features::required_features;
use crate::plugins::node_ports::fits_ports;
use crate::plugins::node_resources::fit::fits_request;
use crate::plugins::node_resources::scoring::is_scalar_resource_name;
use crate::plugins::node_unschedulable::TAINT_NODE_UNSCHEDULABLE;
use crate::plugins::taint_toleration::{
    EFFECT_NO_SCHEDULE, first_untolerated_do_not_schedule, pod_tolerations, tolerations_tolerate,
};

use QueueingHint::{Queue, QueueSkip};

/// Whether a pod is bound or nominated: only such a pod holds resources,
/// ports or anti-affinity a pending pod may be waiting on.
pub(super) fn holds_a_node(pod: &PodInfo) -> bool {
    pod.node_name().is_some()
        || pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
}

pub(super) fn node_unschedulable() -> Vec<E> {
    vec![
        E::with(
            R::Node,
            A::ADD | A::UPDATE_NODE_TAINT,
            node_unschedulable_after_node_change,
        ),
        E::with(
            R::TargetPod,
            A::UPDATE_POD_TOLERATION,
            node_unschedulable_after_toleration_change,
        ),
    ]
}

/// Queue when a schedulable node is added or a node is uncordoned.
pub(super) fn node_unschedulable_after_node_change(
    _pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let Some((old, Some(new))) = as_nodes(old, new) else {
        return Queue;
    };
    match old {
        Some(old) => queue_if(old.unschedulable() && !new.unschedulable()),
        None => queue_if(!new.unschedulable()),
    }
}

/// Queue when the pod's new tolerations tolerate the cordon taint. The old
/// ones did not, or the plugin would not have rejected the pod.
pub(super) fn node_unschedulable_after_toleration_change(
    _pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let Some((_, Some(modified))) = as_pods(old, new) else {
        return Queue;
    };
    let taint = Taint {
        key: TAINT_NODE_UNSCHEDULABLE.into(),
        effect: EFFECT_NO_SCHEDULE.into(),
        ..Default::default()
    };
    queue_if(tolerations_tolerate(pod_tolerations(modified), &taint))
}

/// Any new node may be the one named; no hint, as upstream.
pub(super) fn node_name() -> Vec<E> {
    vec![E::new(R::Node, A::ADD)]
}

pub(super) fn taint_toleration() -> Vec<E> {
    vec![
        E::with(
            R::Node,
            A::ADD | A::UPDATE_NODE_TAINT,
            taint_toleration_after_node_change,
        ),
        // A new toleration may be the one missing.
        E::with(R::TargetPod, A::UPDATE_POD_TOLERATION, |_, _, _| Queue),
    ]
}

/// Queue when the node goes from having an untolerated NoSchedule/NoExecute
/// taint (or not existing) to having none: this is what makes removing
/// `node.kubernetes.io/unreachable` retry the pods it kept off.
pub(super) fn taint_toleration_after_node_change(
    pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let Some((old, Some(new))) = as_nodes(old, new) else {
        return Queue;
    };
    let tolerations = pod_tolerations(pod);
    let was_untolerated =
        old.is_none_or(|o| first_untolerated_do_not_schedule(o.taints(), tolerations).is_some());
    let is_untolerated = first_untolerated_do_not_schedule(new.taints(), tolerations).is_some();
    queue_if(was_untolerated && !is_untolerated)
}

pub(super) fn node_affinity(args: Option<&Value>) -> Result<Vec<E>, String> {
    let plugin = node_affinity::from_args(args)?;
    Ok(vec![E::with(
        R::Node,
        A::ADD | A::UPDATE_NODE_LABEL,
        move |pod, old, new| {
            let Some((old, Some(new))) = as_nodes(old, new) else {
                return Queue;
            };
            if !plugin.added_affinity_matches(new) {
                return QueueSkip;
            }
            node_affinity_after_node_change(pod, old, new)
        },
    )])
}

/// Queue when an added node matches the pod's required affinity and
/// nodeSelector, or an updated one starts to.
pub(super) fn node_affinity_after_node_change(
    pod: &PodInfo,
    old: Option<&NodeInfo>,
    new: &NodeInfo,
) -> QueueingHint {
    if !node_affinity::pod_required_matches(pod, new) {
        return QueueSkip;
    }
    queue_if(old.is_none_or(|old| !node_affinity::pod_required_matches(pod, old)))
}

pub(super) fn node_ports() -> Vec<E> {
    vec![
        // Ports are immutable, so pod updates are not registered.
        E::with(R::AssignedPod, A::DELETE, node_ports_after_pod_deleted),
        E::new(R::Node, A::ADD),
    ]
}

/// Queue when the deleted pod held a node and one of its host ports
/// conflicts with one the pod wants.
pub(super) fn node_ports_after_pod_deleted(
    pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let Some((Some(deleted), _)) = as_pods(old, new) else {
        return Queue;
    };
    if !holds_a_node(deleted) {
        return QueueSkip;
    }
    let freed = deleted.host_ports();
    if freed.is_empty() {
        return QueueSkip;
    }
    queue_if(!fits_ports(&pod.host_ports(), &freed))
}

/// InPlacePodVerticalScaling is GA in v1.37, so scale-downs are
/// registered; the scale-up events of the alpha
/// InPlacePodVerticalScalingSchedulerPreemption gate are not, and neither
/// are DeviceClass events (no DRA extended resources here). Fit's hints
/// check without the profile's ignored resources, as upstream's `Fits`.
pub(super) fn node_resources_fit(_args: Option<&Value>) -> Result<Vec<E>, String> {
    Ok(vec![
        E::with(R::AssignedPod, A::DELETE, fit_after_assigned_pod_delete),
        E::with(
            R::Node,
            A::ADD | A::UPDATE_NODE_ALLOCATABLE,
            fit_after_node_change,
        ),
        E::with(
            R::AssignedPod,
            A::UPDATE_POD_SCALE_DOWN,
            fit_after_assigned_pod_scale_down,
        ),
        E::with(R::TargetPod, A::UPDATE_POD_SCALE_DOWN, |_, _, _| Queue),
    ])
}

/// Deleting any pod that held a node may free what the pod needs.
pub(super) fn fit_after_assigned_pod_delete(
    _pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let Some((Some(deleted), _)) = as_pods(old, new) else {
        return Queue;
    };
    queue_if(holds_a_node(deleted))
}

/// Queue when a bound pod's requests shrank in a resource the pod asks for.
pub(super) fn fit_after_assigned_pod_scale_down(
    pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let Some((Some(original), Some(modified))) = as_pods(old, new) else {
        return Queue;
    };
    if modified.node_name().is_none() {
        return QueueSkip;
    }
    let (before, after, wanted) = (&original.requests, &modified.requests, &pod.requests);
    let decreased = (wanted.milli_cpu != 0 && before.milli_cpu > after.milli_cpu)
        || (wanted.memory != 0 && before.memory > after.memory)
        || (wanted.ephemeral_storage != 0 && before.ephemeral_storage > after.ephemeral_storage)
        || wanted.scalar.iter().any(|(name, v)| {
            *v != 0 && is_scalar_resource_name(name) && before.get(name) > after.get(name)
        });
    queue_if(decreased)
}

/// Queue when the node (alone, empty) fits the pod and is new, or when an
/// update raised the allocatable of something the pod requests.
pub(super) fn fit_after_node_change(
    pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let Some((old, Some(new))) = as_nodes(old, new) else {
        return Queue;
    };
    // Upstream checks the node alone; a NodeInfo with pods would count
    // them, so only such a one is rebuilt (the usual one has none).
    let alone;
    let new_alone = if new.pods.is_empty() {
        new
    } else {
        alone = NodeInfo::new(new.node.clone());
        &alone
    };
    let none = HashSet::new();
    if !fits_request(&pod.requests, new_alone, &none, &none).is_empty() {
        return QueueSkip;
    }
    let Some(old) = old else {
        return Queue;
    };
    queue_if(any_requested_resource_increased(pod, old, new))
}

fn any_requested_resource_increased(pod: &PodInfo, old: &NodeInfo, new: &NodeInfo) -> bool {
    let (req, before, after) = (&pod.requests, &old.allocatable, &new.allocatable);
    if after.allowed_pod_number > before.allowed_pod_number {
        return true;
    }
    // Upstream's request keeps every scalar resource the pod names, even at
    // zero, so naming one is enough to go on.
    let scalar_requested = req.scalar.keys().any(|name| is_scalar_resource_name(name));
    if req.milli_cpu == 0 && req.memory == 0 && req.ephemeral_storage == 0 && !scalar_requested {
        return false;
    }
    let grew = |name: &str, requested: i64| requested > 0 && after.get(name) > before.get(name);
    if (req.milli_cpu > 0 && after.milli_cpu > before.milli_cpu)
        || grew(MEMORY, req.memory)
        || grew(EPHEMERAL_STORAGE, req.ephemeral_storage)
    {
        return true;
    }
    req.scalar
        .iter()
        .filter(|(name, v)| **v != 0 && is_scalar_resource_name(name))
        .any(|(name, _)| after.get(name) > before.get(name))
}

pub(super) fn node_declared_features() -> Vec<E> {
    vec![
        E::with(
            R::Node,
            A::ADD | A::UPDATE_NODE_DECLARED_FEATURE,
            declared_features_after_node_change,
        ),
        E::with(R::TargetPod, A::UPDATE, declared_features_after_pod_update),
    ]
}

/// Queue for a new node, or when a node's declared features changed.
pub(super) fn declared_features_after_node_change(
    _pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let Some((old, Some(new))) = as_nodes(old, new) else {
        return Queue;
    };
    let features = |n: &NodeInfo| {
        n.node
            .status
            .as_ref()
            .and_then(|s| s.declared_features.clone())
            .unwrap_or_default()
    };
    queue_if(old.is_none_or(|old| features(old) != features(new)))
}

/// Queue when the pod's update changed the features it needs.
pub(super) fn declared_features_after_pod_update(
    _pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let Some((Some(old), Some(new))) = as_pods(old, new) else {
        return Queue;
    };
    let needs = |p: &PodInfo| {
        let mut f = p
            .pod
            .spec
            .as_ref()
            .map(required_features)
            .unwrap_or_default();
        f.sort_unstable();
        f
    };
    queue_if(needs(old) != needs(new))
}

/// A pod leaves the gate only when its last scheduling gate is removed.
pub(super) fn scheduling_gates() -> Vec<E> {
    vec![E::with(
        R::TargetPod,
        A::UPDATE_POD_SCHEDULING_GATES_ELIMINATED,
        |_, _, _| Queue,
    )]
}

/// With async preemption (on in v1.37) the plugin registers pod deletions,
/// but its hint always skips: the preemptor is activated by the preemption
/// itself once the victims are gone, not by the event.
pub(super) fn default_preemption() -> Vec<E> {
    vec![E::with(R::AssignedPod, A::DELETE, |_, _, _| QueueSkip)]
}
