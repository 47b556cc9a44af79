//! Hints of the plugins that look at other pods: InterPodAffinity and
//! PodTopologySpread.

use serde_json::Value;

use super::node::holds_a_node;
use super::{
    ActionType as A, ClusterEventWithHint as E, EventResource as R, Object, QueueingHint, as_nodes,
    as_pods, queue_if,
};
use crate::framework::labels::Labels;
use crate::framework::{AffinityTerm, NodeInfo, PodInfo};
use crate::plugins::pod_topology_spread::common::{Constraint, InclusionPolicy};
use crate::plugins::pod_topology_spread::{self, PodTopologySpread};

use QueueingHint::{Queue, QueueSkip};

pub(super) fn inter_pod_affinity() -> Vec<E> {
    vec![
        E::with(
            R::AssignedPod,
            A::ADD | A::UPDATE_POD_LABEL | A::DELETE,
            affinity_after_assigned_pod_change,
        ),
        // Another pod's anti-affinity may have hated the old labels.
        E::with(R::TargetPod, A::UPDATE_POD_LABEL, |_, _, _| Queue),
        E::with(
            R::Node,
            A::ADD | A::UPDATE_NODE_LABEL,
            affinity_after_node_change,
        ),
    ]
}

/// Terms are matched without namespace labels, as upstream's hint does
/// (an empty set: a `namespaceSelector: {}` still matches every namespace).
fn term_matches(term: &AffinityTerm, pod: &PodInfo) -> bool {
    term.matches(pod, Some(&Labels::new()))
}

/// One existing pod must satisfy all affinity terms; none is no match.
fn matches_all(terms: &[AffinityTerm], pod: &PodInfo) -> bool {
    !terms.is_empty() && terms.iter().all(|t| term_matches(t, pod))
}

fn matches_any(terms: &[AffinityTerm], pod: &PodInfo) -> bool {
    terms.iter().any(|t| term_matches(t, pod))
}

/// Queue when a placed pod starts matching all the pod's affinity terms
/// (added or relabelled), stops matching its anti-affinity (relabelled or
/// deleted), or was deleted while its own anti-affinity hated the pod.
pub(super) fn affinity_after_assigned_pod_change(
    pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let Some((original, modified)) = as_pods(old, new) else {
        return Queue;
    };
    if modified.is_some_and(|p| !holds_a_node(p)) || original.is_some_and(|p| !holds_a_node(p)) {
        return QueueSkip;
    }
    // Terms that failed to compile: upstream's hint errors, which queues.
    if !pod.parse_errors.is_empty() {
        return Queue;
    }
    let (terms, anti) = (&pod.required_affinity, &pod.required_anti_affinity);
    match (original, modified) {
        (Some(original), Some(modified)) => queue_if(
            (!matches_all(terms, original) && matches_all(terms, modified))
                || (matches_any(anti, original) && !matches_any(anti, modified)),
        ),
        (None, Some(added)) => queue_if(matches_all(terms, added)),
        (Some(deleted), None) => {
            if matches_any(anti, deleted) {
                return Queue;
            }
            if !deleted.parse_errors.is_empty() {
                return Queue;
            }
            queue_if(matches_any(&deleted.required_anti_affinity, pod))
        }
        (None, None) => Queue,
    }
}

/// Queue when a node gains, or changes the value of, an affinity term's
/// topology key; for anti-affinity, on any new node, or when a node loses
/// or changes a term's key.
pub(super) fn affinity_after_node_change(
    pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let Some((original, Some(modified))) = as_nodes(old, new) else {
        return Queue;
    };
    if !pod.parse_errors.is_empty() {
        return Queue;
    }
    for term in &pod.required_affinity {
        let key = &term.topology_key;
        let after = modified.labels.get(key);
        let Some(original) = original else {
            if after.is_some() {
                return Queue;
            }
            continue;
        };
        match (original.labels.get(key), after) {
            (None, Some(_)) => return Queue,
            (Some(a), Some(b)) if a != b => return Queue,
            _ => {}
        }
    }
    for term in &pod.required_anti_affinity {
        let Some(original) = original else {
            // A new node without the key always takes the pod; with it,
            // whether its domain is free is beyond the hint.
            return Queue;
        };
        let key = &term.topology_key;
        match (original.labels.get(key), modified.labels.get(key)) {
            (Some(_), None) => return Queue,
            (Some(a), Some(b)) if a != b => return Queue,
            _ => {}
        }
    }
    QueueSkip
}

pub(super) fn pod_topology_spread(args: Option<&Value>) -> Result<Vec<E>, String> {
    let plugin = std::sync::Arc::new(pod_topology_spread::from_config(args)?);
    Ok(spread_events(plugin))
}

pub(super) fn spread_events(plugin: std::sync::Arc<PodTopologySpread>) -> Vec<E> {
    let (p1, p2, p3) = (plugin.clone(), plugin.clone(), plugin);
    vec![
        E::with(
            R::AssignedPod,
            A::ADD | A::UPDATE_POD_LABEL | A::DELETE,
            move |pod, old, new| spread_after_assigned_pod_change(&p1, pod, old, new),
        ),
        E::with(
            R::TargetPod,
            A::UPDATE_POD_TOLERATION | A::UPDATE_POD_LABEL,
            move |pod, old, new| spread_after_target_pod_change(&p2, pod, old, new),
        ),
        E::with(
            R::Node,
            A::ADD | A::DELETE | A::UPDATE_NODE_LABEL | A::UPDATE_NODE_TAINT,
            move |pod, old, new| spread_after_node_change(&p3, pod, old, new),
        ),
    ]
}

/// Whether `other` (placed or nominated) counts in `pod`'s spreading: the
/// constraints only count pods of the pod's own namespace.
fn involved_in_spreading(other: &PodInfo, pod: &PodInfo) -> bool {
    holds_a_node(other) && other.namespace == pod.namespace
}

fn labels_match_constraints(constraints: &[Constraint], labels: &Labels) -> bool {
    constraints.iter().any(|c| c.selector.matches(labels))
}

/// Queue when the relabelling flips whether the pod is selected by any of
/// the constraints.
fn spread_after_label_change(
    original: &PodInfo,
    modified: &PodInfo,
    constraints: &[Constraint],
) -> QueueingHint {
    if original.labels == modified.labels {
        return QueueSkip;
    }
    queue_if(
        constraints
            .iter()
            .any(|c| c.selector.matches(&original.labels) != c.selector.matches(&modified.labels)),
    )
}

fn spread_after_assigned_pod_change(
    plugin: &PodTopologySpread,
    pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let Some((original, modified)) = as_pods(old, new) else {
        return Queue;
    };
    if modified.is_some_and(|p| !involved_in_spreading(p, pod))
        || original.is_some_and(|p| !involved_in_spreading(p, pod))
    {
        return QueueSkip;
    }
    let Ok(constraints) = plugin.hard_constraints(pod) else {
        return Queue;
    };
    match (original, modified) {
        (Some(original), Some(modified)) => {
            spread_after_label_change(original, modified, &constraints)
        }
        (None, Some(added)) => queue_if(labels_match_constraints(&constraints, &added.labels)),
        (Some(deleted), None) => queue_if(labels_match_constraints(&constraints, &deleted.labels)),
        (None, None) => Queue,
    }
}

/// A new toleration matters when a constraint honours node taints.
fn spread_after_target_pod_change(
    plugin: &PodTopologySpread,
    pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let Some((Some(original), Some(modified))) = as_pods(old, new) else {
        return Queue;
    };
    let Ok(constraints) = plugin.hard_constraints(pod) else {
        return Queue;
    };
    let tolerations = |p: &PodInfo| {
        p.pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default()
    };
    if tolerations(original) != tolerations(modified)
        && constraints
            .iter()
            .any(|c| c.node_taints_policy == InclusionPolicy::Honor)
    {
        return Queue;
    }
    spread_after_label_change(original, modified, &constraints)
}

fn node_has_all_keys(node: &NodeInfo, constraints: &[Constraint]) -> bool {
    constraints
        .iter()
        .all(|c| node.labels.contains_key(&c.topology_key))
}

/// Queue when a node carrying all topology keys is added or deleted, gains
/// or loses one of them, or (still carrying them) changes a key's value or
/// its taints.
fn spread_after_node_change(
    plugin: &PodTopologySpread,
    pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let Some((original, modified)) = as_nodes(old, new) else {
        return Queue;
    };
    let Ok(constraints) = plugin.hard_constraints(pod) else {
        return Queue;
    };
    match (original, modified) {
        (Some(original), Some(modified)) => {
            let was = node_has_all_keys(original, &constraints);
            let is = node_has_all_keys(modified, &constraints);
            if was != is {
                return Queue;
            }
            let key_changed = constraints.iter().any(|c| {
                original.labels.get(&c.topology_key) != modified.labels.get(&c.topology_key)
            });
            queue_if(is && (key_changed || original.taints() != modified.taints()))
        }
        (None, Some(added)) => queue_if(node_has_all_keys(added, &constraints)),
        (Some(deleted), None) => queue_if(node_has_all_keys(deleted, &constraints)),
        (None, None) => Queue,
    }
}
