//! Scheduling invariants: a pod is bound once and stays on its node; the
//! pods bound to a node fit in what it has.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;

use super::quantity::milli;
use super::{Invariant, Violation, object_name};
use crate::audit::Write;

/// Where each pod (by UID) was first seen bound, across snapshots: a pod's
/// `nodeName` is set once by its binding and never changes.
#[derive(Debug, Default)]
pub struct BindingHistory {
    seen: HashMap<String, String>,
}

impl BindingHistory {
    /// Records the pods' nodes; a violation for each pod now on another
    /// node than where it was seen before.
    pub fn observe(&mut self, pods: &[Pod]) -> Vec<Violation> {
        let mut found = vec![];
        for pod in pods {
            let (Some(uid), Some(node)) = (
                pod.uid(),
                pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            ) else {
                continue;
            };
            match self.seen.get(&uid) {
                Some(before) if *before != node => found.push(Violation::new(
                    Invariant::PodBoundOnce,
                    vec![
                        object_name(pod),
                        format!("Node/{before}"),
                        format!("Node/{node}"),
                    ],
                    format!("pod moved from {before} to {node}"),
                )),
                Some(_) => {}
                None => {
                    self.seen.insert(uid, node);
                }
            }
        }
        found
    }
}

/// From the audit log's writes: a pod with two successful `pods/binding`
/// creates was bound twice (the second should have met a conflict).
pub fn bound_at_most_once(writes: &[Write]) -> Vec<Violation> {
    let mut bindings: BTreeMap<(String, String), Vec<&Write>> = BTreeMap::new();
    for write in writes {
        if write.resource == "pods"
            && write.subresource.as_deref() == Some("binding")
            && write.verb == "create"
            && (200..300).contains(&write.code)
        {
            bindings
                .entry((write.namespace.clone(), write.name.clone()))
                .or_default()
                .push(write);
        }
    }
    bindings
        .into_iter()
        .filter(|(_, writes)| writes.len() > 1)
        .map(|((ns, name), writes)| {
            let by: Vec<&str> = writes.iter().map(|w| w.user.as_str()).collect();
            Violation::new(
                Invariant::PodBoundOnce,
                vec![format!("Pod/{ns}/{name}")],
                format!("{} successful bindings, by {}", writes.len(), by.join(", ")),
            )
        })
        .collect()
}

/// Still holding its node's resources: bound and not finished. A pod being
/// deleted holds them until it is gone, as the scheduler counts it.
fn holds_resources(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed"))
}

/// What a pod asks of its node, in thousandths: the larger of its
/// containers' sum and its largest init container, plus its overhead.
fn requests(pod: &Pod) -> BTreeMap<String, i128> {
    let mut total: BTreeMap<String, i128> = BTreeMap::new();
    let Some(spec) = pod.spec.as_ref() else {
        return total;
    };
    let of = |c: &k8s_openapi::api::core::v1::Container| -> BTreeMap<String, i128> {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .map(|r| {
                r.iter()
                    .filter_map(|(k, q)| Some((k.clone(), milli(&q.0)?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    for container in &spec.containers {
        for (k, v) in of(container) {
            *total.entry(k).or_default() += v;
        }
    }
    for init in spec.init_containers.iter().flatten() {
        for (k, v) in of(init) {
            let entry = total.entry(k).or_default();
            *entry = (*entry).max(v);
        }
    }
    for (k, q) in spec.overhead.iter().flatten() {
        if let Some(v) = milli(&q.0) {
            *total.entry(k.clone()).or_default() += v;
        }
    }
    total
}

/// What a node's bound pods ask for: requests by resource and the pod count
/// (both in thousandths), and the pods by name.
type NodeUse = (BTreeMap<String, i128>, i128, Vec<String>);

/// Every node's bound pods, summed, within its allocatable: each resource
/// it lists, and the pod count.
pub fn bound_pods_fit_their_nodes(nodes: &[Node], pods: &[Pod]) -> Vec<Violation> {
    let mut used: HashMap<&str, NodeUse> = HashMap::new();
    for pod in pods.iter().filter(|p| holds_resources(p)) {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        let entry = used.entry(node).or_default();
        for (k, v) in requests(pod) {
            *entry.0.entry(k).or_default() += v;
        }
        entry.1 += 1000;
        entry.2.push(object_name(pod));
    }
    let mut found = vec![];
    for node in nodes {
        let name = node.name_any();
        let Some((requested, count, pods)) = used.get(name.as_str()) else {
            continue;
        };
        let Some(allocatable) = node.status.as_ref().and_then(|s| s.allocatable.as_ref()) else {
            continue;
        };
        let mut over = vec![];
        for (resource, quantity) in allocatable {
            let Some(capacity) = milli(&quantity.0) else {
                continue;
            };
            let asked = if resource == "pods" {
                *count
            } else {
                requested.get(resource).copied().unwrap_or(0)
            };
            if asked > capacity {
                over.push(format!(
                    "{resource}: {} requested of {} allocatable",
                    asked as f64 / 1000.0,
                    capacity as f64 / 1000.0
                ));
            }
        }
        if !over.is_empty() {
            let mut objects = vec![object_name(node)];
            objects.extend(pods.iter().cloned());
            found.push(Violation::new(
                Invariant::PodsFitNode,
                objects,
                format!("node overcommitted: {}", over.join("; ")),
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::from;
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str, pods: &str) -> Node {
        from(json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": "1Gi", "pods": pods}},
        }))
    }

    fn pod(name: &str, uid: &str, node: Option<&str>, cpu: &str) -> Pod {
        from(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": uid},
            "spec": {
                "nodeName": node,
                "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu}}}],
            },
        }))
    }

    #[test]
    fn a_pod_that_changes_node_is_caught() {
        let mut history = BindingHistory::default();
        assert!(history.observe(&[pod("a", "u1", None, "1")]).is_empty());
        assert!(
            history
                .observe(&[pod("a", "u1", Some("n1"), "1")])
                .is_empty()
        );
        assert!(
            history
                .observe(&[pod("a", "u1", Some("n1"), "1")])
                .is_empty()
        );
        let found = history.observe(&[pod("a", "u1", Some("n2"), "1")]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].invariant, Invariant::PodBoundOnce);
        assert_eq!(found[0].objects, ["Pod/ns/a", "Node/n1", "Node/n2"]);
        // A new pod of the same name (another UID) is free to land elsewhere.
        assert!(
            history
                .observe(&[pod("a", "u2", Some("n2"), "1")])
                .is_empty()
        );
    }

    fn binding(user: &str, name: &str, code: u16) -> Write {
        Write {
            user: user.into(),
            verb: "create".into(),
            resource: "pods".into(),
            subresource: Some("binding".into()),
            namespace: "ns".into(),
            name: name.into(),
            code,
            at: Default::default(),
            pod: None,
        }
    }

    #[test]
    fn two_successful_bindings_are_caught() {
        let once = [binding("a", "p", 201), binding("b", "p", 409)];
        assert!(bound_at_most_once(&once).is_empty());
        let twice = [binding("a", "p", 201), binding("b", "p", 201)];
        let found = bound_at_most_once(&twice);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].objects, ["Pod/ns/p"]);
        assert!(found[0].detail.contains("a, b"), "{}", found[0].detail);
    }

    #[test]
    fn pods_within_the_node_pass() {
        let nodes = [node("n1", "2", "2")];
        let pods = [
            pod("a", "u1", Some("n1"), "1"),
            pod("b", "u2", Some("n1"), "500m"),
            pod("pending", "u3", None, "8"),
        ];
        assert!(bound_pods_fit_their_nodes(&nodes, &pods).is_empty());
    }

    #[test]
    fn an_overcommitted_cpu_is_caught_naming_node_and_pods() {
        let nodes = [node("n1", "2", "10")];
        let pods = [
            pod("a", "u1", Some("n1"), "1500m"),
            pod("b", "u2", Some("n1"), "1"),
        ];
        let found = bound_pods_fit_their_nodes(&nodes, &pods);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].objects, ["Node/n1", "Pod/ns/a", "Pod/ns/b"]);
        assert!(
            found[0].detail.contains("cpu: 2.5 requested of 2"),
            "{}",
            found[0].detail
        );
    }

    #[test]
    fn too_many_pods_are_caught_and_finished_ones_do_not_count() {
        let nodes = [node("n1", "10", "1")];
        let mut done = pod("done", "u0", Some("n1"), "1");
        done.status = Some(from(json!({"phase": "Succeeded"})));
        let one = [done.clone(), pod("a", "u1", Some("n1"), "1")];
        assert!(bound_pods_fit_their_nodes(&nodes, &one).is_empty());
        let two = [
            done,
            pod("a", "u1", Some("n1"), "1"),
            pod("b", "u2", Some("n1"), "1"),
        ];
        let found = bound_pods_fit_their_nodes(&nodes, &two);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].detail.contains("pods: 2 requested of 1"),
            "{}",
            found[0].detail
        );
    }

    #[test]
    fn init_containers_count_at_their_largest() {
        let nodes = [node("n1", "2", "10")];
        let mut p = pod("a", "u1", Some("n1"), "1");
        p.spec.as_mut().unwrap().init_containers = Some(vec![from(json!(
            {"name": "init", "image": "i", "resources": {"requests": {"cpu": "3"}}}
        ))]);
        assert_eq!(bound_pods_fit_their_nodes(&nodes, &[p]).len(), 1);
    }
}
