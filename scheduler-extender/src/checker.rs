//! Correctness checker: given the final API state, is every bound pod on a node
//! that all required rules allow? Each pod is re-checked from scratch against
//! its node with every *other* bound pod in place (PreFilter + Filter of the
//! default profile), so a wrong placement shows however it was made.

#[cfg(test)]
use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};

use crate::cache::{Cache, is_assigned_and_active};
use crate::config::SchedulerConfig;
use crate::framework::{CycleState, PodInfo};
use crate::profile::Profile;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub pod: String,
    pub node: String,
    pub reason: String,
}

/// The default profile, and a cache holding `nodes` and `namespaces`.
fn default_profile_and_cache(nodes: &[Node], namespaces: &[Namespace]) -> (Profile, Cache) {
    let config = SchedulerConfig::default();
    let profile = Profile::from_config(&config.profiles[0]).expect("the default profile builds");
    let mut cache = Cache::new();
    for n in nodes {
        cache.add_or_update_node(n.clone());
    }
    for ns in namespaces {
        cache.set_namespace(
            ns.metadata.name.clone().unwrap_or_default(),
            ns.metadata.labels.clone().unwrap_or_default(),
        );
    }
    (profile, cache)
}

/// Checks the pods selected by `which` (e.g. one namespace) against the
/// default profile's required rules.
pub fn check(
    nodes: &[Node],
    pods: &[Pod],
    namespaces: &[Namespace],
    which: impl Fn(&Pod) -> bool,
) -> Vec<Violation> {
    let (profile, mut cache) = default_profile_and_cache(nodes, namespaces);
    let active: Vec<&Pod> = pods.iter().filter(|p| is_assigned_and_active(p)).collect();
    for p in &active {
        cache.upsert_pod((*p).clone());
    }
    let mut violations = vec![];
    for pod in active.into_iter().filter(|p| which(p)) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        // The pod as it was before binding: unbound, and absent from its node.
        let mut unbound = pod.clone();
        if let Some(spec) = unbound.spec.as_mut() {
            spec.node_name = None;
        }
        let info = PodInfo::new(Arc::new(unbound));
        cache.remove_pod(&uid);
        let snapshot = cache.snapshot();
        let mut state = CycleState::new();
        let verdict = match (
            profile.run_pre_filter(&mut state, &info, &snapshot),
            snapshot.get(&node),
        ) {
            (_, None) => Some(format!("node {node} does not exist")),
            (Err(status), _) => Some(status.to_string()),
            (Ok((pre, _)), Some(node_info)) => {
                if pre
                    .node_names
                    .as_ref()
                    .is_some_and(|names| !names.contains(&node))
                {
                    Some("node excluded by PreFilter".into())
                } else {
                    let status = profile.run_filter(&state, &info, node_info);
                    (!status.is_success())
                        .then(|| format!("{}: {}", status.plugin, status.message()))
                }
            }
        };
        if let Some(reason) = verdict {
            violations.push(Violation {
                pod: info.key(),
                node: node.clone(),
                reason,
            });
        }
        cache.upsert_pod(pod.clone());
    }
    violations
}

/// The pending pods selected by `which` that some node would take now (by
/// the default profile's PreFilter + Filter, with every bound pod in place),
/// each with the first such node: after a scheduler settles, a pod listed
/// here was left pending although it fits.
pub fn pending_that_fit(
    nodes: &[Node],
    pods: &[Pod],
    namespaces: &[Namespace],
    which: impl Fn(&Pod) -> bool,
) -> Vec<Violation> {
    let (profile, mut cache) = default_profile_and_cache(nodes, namespaces);
    for p in pods.iter().filter(|p| is_assigned_and_active(p)) {
        cache.upsert_pod(p.clone());
    }
    let snapshot = cache.snapshot();
    let pending = pods.iter().filter(|p| {
        let unbound = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_none_or(str::is_empty);
        unbound && p.metadata.deletion_timestamp.is_none() && which(p)
    });
    let mut fits = vec![];
    for pod in pending {
        let info = PodInfo::new(Arc::new(pod.clone()));
        let mut state = CycleState::new();
        let Ok((pre, _)) = profile.run_pre_filter(&mut state, &info, &snapshot) else {
            continue;
        };
        let node = snapshot.nodes.iter().find(|n| {
            pre.node_names
                .as_ref()
                .is_none_or(|names| names.contains(&n.name))
                && profile.run_filter(&state, &info, n).is_success()
        });
        if let Some(node) = node {
            fits.push(Violation {
                pod: info.key(),
                node: node.name.clone(),
                reason: "pending, yet fits".into(),
            });
        }
    }
    fits
}

/// Groups violations per node, for readable test failures.
pub fn summarize(violations: &[Violation]) -> HashMap<String, Vec<String>> {
    let mut by_node: HashMap<String, Vec<String>> = HashMap::new();
    for v in violations {
        by_node
            .entry(v.node.clone())
            .or_default()
            .push(format!("{}: {}", v.pod, v.reason));
    }
    by_node
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testing::{node, pod};
    use serde_json::json;

    fn bound(name: &str, node: &str, spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["nodeName"] = json!(node);
        (*pod(name, &[("app", "x")], spec).pod).clone()
    }

    #[test]
    fn valid_placements_pass() {
        let nodes = vec![
            node("n1", "4", "8Gi", &[], json!({})),
            node("n2", "4", "8Gi", &[], json!({})),
        ];
        let pods = vec![
            bound(
                "a",
                "n1",
                json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]}),
            ),
            bound(
                "b",
                "n1",
                json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]}),
            ),
            bound(
                "c",
                "n2",
                json!({"nodeSelector": {"kubernetes.io/hostname": "n2"}}),
            ),
        ];
        assert_eq!(check(&nodes, &pods, &[], |_| true), vec![]);
    }

    #[test]
    fn finds_pending_pods_that_fit() {
        let nodes = vec![node("n1", "4", "8Gi", &[], json!({}))];
        let cpu =
            |c: &str| json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": c}}}]});
        let pending = |name: &str, c: &str| (*pod(name, &[("app", "x")], cpu(c)).pod).clone();
        let pods = vec![
            bound("a", "n1", cpu("3")),
            pending("small", "1"),
            pending("big", "2"),
        ];
        let fits = pending_that_fit(&nodes, &pods, &[], |_| true);
        assert_eq!(
            fits.iter().map(|v| v.pod.as_str()).collect::<Vec<_>>(),
            ["default/small"]
        );
        assert_eq!(fits[0].node, "n1");
        assert!(
            pending_that_fit(&nodes, &pods, &[], |p| p.metadata.name.as_deref()
                == Some("big"))
            .is_empty()
        );
    }

    #[test]
    fn finds_overcommit_taint_and_selector_violations() {
        let tainted = json!({"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]});
        let nodes = vec![
            node("n1", "4", "8Gi", &[], json!({})),
            node("n2", "4", "8Gi", &[], tainted),
        ];
        let pods = vec![
            bound(
                "a",
                "n1",
                json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "3"}}}]}),
            ),
            bound(
                "b",
                "n1",
                json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "3"}}}]}),
            ),
            bound("t", "n2", json!({})),
            bound(
                "s",
                "n1",
                json!({"nodeSelector": {"kubernetes.io/hostname": "n2"}}),
            ),
            bound("gone", "n9", json!({})),
        ];
        let violations = check(&nodes, &pods, &[], |_| true);
        let by_pod: BTreeMap<&str, &str> = violations
            .iter()
            .map(|v| (v.pod.as_str(), v.reason.as_str()))
            .collect();
        assert!(
            by_pod["default/a"].contains("Insufficient cpu"),
            "{violations:?}"
        );
        assert!(
            by_pod["default/b"].contains("Insufficient cpu"),
            "{violations:?}"
        );
        assert!(
            by_pod["default/t"].contains("untolerated taint"),
            "{violations:?}"
        );
        assert!(
            by_pod["default/s"].contains("node affinity/selector"),
            "{violations:?}"
        );
        assert!(
            by_pod["default/gone"].contains("does not exist"),
            "{violations:?}"
        );
        let only_t = check(&nodes, &pods, &[], |p| {
            p.metadata.name.as_deref() == Some("t")
        });
        assert_eq!(only_t.len(), 1);
    }
}
