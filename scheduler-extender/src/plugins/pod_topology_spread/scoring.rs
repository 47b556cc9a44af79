//! PreScore/Score/NormalizeScore for ScheduleAnyway constraints: a node
//! scores the (weighted) number of matching pods already in its domains,
//! and normalization turns "fewest pods" into the highest score.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rayon::prelude::*;

use crate::framework::{
    CycleState, MAX_NODE_SCORE, NodeInfo, NodeScore, PodInfo, PreScorePlugin, ScorePlugin,
    Snapshot, Status,
};

use super::common::{
    Constraint, LABEL_HOSTNAME, NodeInclusion, SCHEDULE_ANYWAY, count_pods_match_selector,
    node_has_all_topology_keys,
};
use super::{PodTopologySpread, pod_constraints};

pub(super) const PRE_SCORE_STATE_KEY: &str = "PreScorePodTopologySpread";

/// Computed in PreScore; read-only afterwards, so clones share it.
#[derive(Debug)]
pub(super) struct PreScoreState {
    pub constraints: Vec<Constraint>,
    /// Candidate nodes lacking a required topology key: they score 0.
    pub ignored_nodes: HashSet<String>,
    /// Per constraint: topology value → matching pods. Only domains of
    /// candidate nodes are present; hostname constraints are counted in
    /// Score instead (one node per domain), so their maps stay empty.
    pub topology_value_to_pod_counts: Vec<HashMap<String, i64>>,
    /// Per constraint: ln(domains + 2), so that a constraint over many small
    /// domains is not drowned out by one over a few big ones.
    pub topology_normalizing_weight: Vec<f64>,
}

fn topology_normalizing_weight(size: usize) -> f64 {
    ((size + 2) as f64).ln()
}

/// `maxSkew - 1` is added so that a larger tolerated skew waters down the
/// differences between domains.
fn score_for_count(count: i64, max_skew: i32, weight: f64) -> f64 {
    count as f64 * weight + f64::from(max_skew - 1)
}

impl PodTopologySpread {
    /// The state before pods are counted: which candidates are ignored,
    /// which domains the candidates span, and each constraint's weight.
    /// `None` when the pod has no soft constraints.
    fn init_pre_score_state(
        &self,
        pod: &PodInfo,
        filtered: &[Arc<NodeInfo>],
        require_all_topologies: bool,
    ) -> Result<Option<PreScoreState>, String> {
        let constraints = self.constraints_for(pod, SCHEDULE_ANYWAY).map_err(|e| {
            format!(
                "calculating preScoreState: obtaining pod's soft topology spread constraints: {e}"
            )
        })?;
        if constraints.is_empty() {
            return Ok(None);
        }
        let mut counts = vec![HashMap::new(); constraints.len()];
        let mut ignored_nodes = HashSet::new();
        for node in filtered {
            if require_all_topologies && !node_has_all_topology_keys(&node.labels, &constraints) {
                ignored_nodes.insert(node.name.clone());
                continue;
            }
            for (i, c) in constraints.iter().enumerate() {
                if c.topology_key == LABEL_HOSTNAME {
                    continue;
                }
                // Without requireAllTopologies (system defaults), nodes
                // without the key form one domain of their own: "".
                let value = node
                    .labels
                    .get(&c.topology_key)
                    .cloned()
                    .unwrap_or_default();
                counts[i].entry(value).or_insert(0);
            }
        }
        let topology_normalizing_weight = constraints
            .iter()
            .zip(&counts)
            .map(|(c, domains)| {
                let size = if c.topology_key == LABEL_HOSTNAME {
                    filtered.len() - ignored_nodes.len()
                } else {
                    domains.len()
                };
                topology_normalizing_weight(size)
            })
            .collect();
        Ok(Some(PreScoreState {
            constraints,
            ignored_nodes,
            topology_value_to_pod_counts: counts,
            topology_normalizing_weight,
        }))
    }
}

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status {
        let all_nodes = &snapshot.nodes;
        if all_nodes.is_empty() {
            return Status::skip();
        }
        // Only the system defaults let nodes without every topology key
        // score, so that hostname spreading works on nodes without a zone.
        let require_all_topologies = pod_constraints(pod).is_some() || !self.system_defaulted;
        let mut s = match self.init_pre_score_state(pod, nodes, require_all_topologies) {
            Ok(Some(s)) => s,
            Ok(None) => return Status::skip(),
            Err(e) => return Status::error(e),
        };
        let inclusion = NodeInclusion::of(pod);
        let seeded = &s.topology_value_to_pod_counts;
        let contributions: Vec<(usize, String, i64)> = all_nodes
            .par_iter()
            .filter(|node| {
                !require_all_topologies || node_has_all_topology_keys(&node.labels, &s.constraints)
            })
            .flat_map_iter(|node| {
                s.constraints
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| inclusion.includes(c, node))
                    .filter_map(|(i, c)| {
                        let value = node
                            .labels
                            .get(&c.topology_key)
                            .cloned()
                            .unwrap_or_default();
                        // Domains no candidate is in don't matter for scoring
                        // (hostname domains are never seeded: Score counts them).
                        seeded[i].contains_key(&value).then(|| {
                            let count =
                                count_pods_match_selector(&node.pods, &c.selector, &pod.namespace);
                            (i, value, count)
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        for (i, value, count) in contributions {
            if let Some(total) = s.topology_value_to_pod_counts[i].get_mut(&value) {
                *total += count;
            }
        }
        state.write(PRE_SCORE_STATE_KEY, Arc::new(s));
        Status::success()
    }
}

fn missing_state() -> Status {
    Status::error(format!(
        "error reading {PRE_SCORE_STATE_KEY:?} from cycleState: not found"
    ))
}

impl ScorePlugin for PodTopologySpread {
    /// Weighted count of matching pods in the node's domains; normalized
    /// (and inverted) afterwards.
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let s = state
            .read::<Arc<PreScoreState>>(PRE_SCORE_STATE_KEY)
            .ok_or_else(missing_state)?;
        if s.ignored_nodes.contains(&node.name) {
            return Ok(0);
        }
        let mut score = 0.0;
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(value) = node.labels.get(&c.topology_key) else {
                continue;
            };
            let count = if c.topology_key == LABEL_HOSTNAME {
                count_pods_match_selector(&node.pods, &c.selector, &pod.namespace)
            } else {
                s.topology_value_to_pod_counts[i]
                    .get(value)
                    .copied()
                    .unwrap_or(0)
            };
            score += score_for_count(count, c.max_skew, s.topology_normalizing_weight[i]);
        }
        Ok(score.round() as i64)
    }

    /// Fewest pods → 100; ignored nodes → 0.
    fn normalize(&self, state: &CycleState, _pod: &PodInfo, scores: &mut [NodeScore]) -> Status {
        let Some(s) = state.read::<Arc<PreScoreState>>(PRE_SCORE_STATE_KEY) else {
            return missing_state();
        };
        let counted = || scores.iter().filter(|n| !s.ignored_nodes.contains(n.name));
        let min = counted().map(|n| n.score).min().unwrap_or(i64::MAX);
        let max = counted().map(|n| n.score).max().unwrap_or(0).max(0);
        for n in scores.iter_mut() {
            n.score = if s.ignored_nodes.contains(n.name) {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - n.score) / max
            };
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::super::common::test_support::*;
    use super::super::{DefaultSelectorSource, PodTopologySpreadArgs};
    use super::*;
    use crate::framework::Code;
    use crate::framework::labels::{Requirement, Selector};
    use crate::framework::testing::{pod, pod_in, snapshot};
    use k8s_openapi::api::core::v1::Node;
    use serde_json::{Value, json};

    const H: &str = LABEL_HOSTNAME;

    /// As upstream's score tests: system defaulting, which the pods' own
    /// constraints override.
    fn plugin() -> PodTopologySpread {
        PodTopologySpread::from_args(&PodTopologySpreadArgs::default()).unwrap()
    }

    fn incoming(labels: &[(&str, &str)], constraints: Vec<Value>, extra: Value) -> Arc<PodInfo> {
        let mut spec = extra;
        spec["topologySpreadConstraints"] = Value::Array(constraints);
        pod("p", labels, spec)
    }

    fn labelled(name: &str, labels: &[(&str, &str)]) -> Arc<PodInfo> {
        pod(name, labels, json!({}))
    }

    fn foo_pods(n: usize, prefix: &str) -> Vec<Arc<PodInfo>> {
        (0..n)
            .map(|i| labelled(&format!("{prefix}{i}"), &[("foo", "")]))
            .collect()
    }

    fn hostname_node(name: &str) -> Node {
        node(name, &[(H, name)])
    }

    fn zone_node(name: &str, zone: &str) -> Node {
        node(name, &[("zone", zone), (H, name)])
    }

    /// Candidates first, then the nodes that failed filtering; `pods[i]`
    /// runs on the i-th node of that combined list.
    struct Case {
        name: &'static str,
        pod: Arc<PodInfo>,
        nodes: Vec<Node>,
        failed: Vec<Node>,
        pods: Vec<Vec<Arc<PodInfo>>>,
        want: Vec<i64>,
    }

    fn run(p: &PodTopologySpread, c: &Case) -> Vec<i64> {
        let all: Vec<Node> = c.nodes.iter().chain(&c.failed).cloned().collect();
        let infos = all
            .into_iter()
            .enumerate()
            .map(|(i, n)| info(n, c.pods.get(i).map(Vec::as_slice).unwrap_or_default()))
            .collect();
        let snap = snapshot(infos, &[]);
        let filtered: Vec<Arc<NodeInfo>> = snap.nodes[..c.nodes.len()].to_vec();
        let mut state = CycleState::new();
        let status = p.pre_score(&mut state, &c.pod, &filtered, &snap);
        assert!(status.is_success(), "{}: {status}", c.name);
        let mut scores: Vec<NodeScore> = filtered
            .iter()
            .map(|n| NodeScore {
                name: n.name.as_str(),
                score: p.score(&state, &c.pod, n).unwrap(),
            })
            .collect();
        assert!(p.normalize(&state, &c.pod, &mut scores).is_success());
        scores.into_iter().map(|s| s.score).collect()
    }

    fn soft(max_skew: i32, key: &str, selector: Value) -> Value {
        constraint(max_skew, key, SCHEDULE_ANYWAY, selector)
    }

    #[test]
    fn scores_like_upstream() {
        let foo = || exists("foo");
        let bar = || exists("bar");
        let one_on_host = |skew| incoming(&[("foo", "")], vec![soft(skew, H, foo())], json!({}));
        let four_hosts = || {
            ["node-a", "node-b", "node-c", "node-d"]
                .map(hostname_node)
                .to_vec()
        };
        let cases = vec![
            Case {
                name: "one constraint on node, no existing pods",
                pod: one_on_host(1),
                nodes: vec![hostname_node("node-a"), hostname_node("node-b")],
                failed: vec![],
                pods: vec![],
                want: vec![100, 100],
            },
            Case {
                name: "one constraint on node, only one node is candidate",
                pod: one_on_host(1),
                nodes: vec![hostname_node("node-a")],
                failed: vec![hostname_node("node-b")],
                pods: vec![foo_pods(2, "a"), foo_pods(1, "b")],
                want: vec![100],
            },
            Case {
                name: "one constraint on node, all nodes have the same number of matching pods",
                pod: one_on_host(1),
                nodes: vec![hostname_node("node-a"), hostname_node("node-b")],
                failed: vec![],
                pods: vec![foo_pods(1, "a"), foo_pods(1, "b")],
                want: vec![100, 100],
            },
            Case {
                name: "one constraint on node, all 4 nodes are candidates (2/1/0/3)",
                pod: one_on_host(1),
                nodes: four_hosts(),
                failed: vec![],
                pods: vec![foo_pods(2, "a"), foo_pods(1, "b"), vec![], foo_pods(3, "d")],
                want: vec![20, 60, 100, 0],
            },
            Case {
                name: "one constraint on node, null selector",
                pod: incoming(&[("foo", "")], vec![soft(1, H, Value::Null)], json!({})),
                nodes: four_hosts(),
                failed: vec![],
                pods: vec![foo_pods(2, "a"), foo_pods(1, "b"), vec![], foo_pods(3, "d")],
                want: vec![100, 100, 100, 100],
            },
            Case {
                name: "one constraint on node, all 4 nodes are candidates, maxSkew=2",
                pod: one_on_host(2),
                nodes: four_hosts(),
                failed: vec![],
                pods: vec![foo_pods(2, "a"), foo_pods(1, "b"), vec![], foo_pods(3, "d")],
                want: vec![33, 66, 100, 16],
            },
            Case {
                name: "one constraint on node, all 4 nodes are candidates, maxSkew=3",
                pod: one_on_host(3),
                nodes: four_hosts(),
                failed: vec![],
                pods: vec![
                    foo_pods(4, "a"),
                    foo_pods(3, "b"),
                    foo_pods(2, "c"),
                    foo_pods(1, "d"),
                ],
                want: vec![44, 66, 77, 100],
            },
            Case {
                name: "one constraint on node, 3 out of 4 nodes are candidates (4/2/1/~3~)",
                pod: one_on_host(1),
                nodes: vec![
                    hostname_node("node-a"),
                    hostname_node("node-b"),
                    hostname_node("node-x"),
                ],
                failed: vec![hostname_node("node-y")],
                pods: vec![
                    foo_pods(4, "a"),
                    foo_pods(2, "b"),
                    foo_pods(1, "x"),
                    foo_pods(3, "y"),
                ],
                want: vec![33, 83, 100],
            },
            Case {
                name: "one constraint on node, one candidate doesn't match topology key",
                pod: one_on_host(1),
                nodes: vec![
                    hostname_node("node-a"),
                    node("node-b", &[("n", "node-b")]),
                    hostname_node("node-x"),
                ],
                failed: vec![hostname_node("node-y")],
                pods: vec![
                    foo_pods(4, "a"),
                    foo_pods(2, "b"),
                    foo_pods(1, "x"),
                    foo_pods(3, "y"),
                ],
                want: vec![16, 0, 100],
            },
            Case {
                name: "one constraint on zone, 3 out of 4 nodes are candidates",
                pod: incoming(&[("foo", "")], vec![soft(1, "zone", foo())], json!({})),
                nodes: vec![
                    zone_node("node-a", "zone1"),
                    zone_node("node-b", "zone1"),
                    zone_node("node-x", "zone2"),
                ],
                failed: vec![zone_node("node-y", "zone2")],
                pods: vec![
                    foo_pods(4, "a"),
                    foo_pods(2, "b"),
                    foo_pods(1, "x"),
                    foo_pods(3, "y"),
                ],
                want: vec![75, 75, 100],
            },
            Case {
                name: "two constraints on zone and node, 2 out of 4 nodes are candidates",
                pod: incoming(
                    &[("foo", "")],
                    vec![soft(1, "zone", foo()), soft(1, H, foo())],
                    json!({}),
                ),
                nodes: vec![zone_node("node-a", "zone1"), zone_node("node-x", "zone2")],
                failed: vec![zone_node("node-b", "zone1"), zone_node("node-y", "zone2")],
                pods: vec![
                    foo_pods(2, "a"),
                    foo_pods(2, "x"),
                    foo_pods(1, "b"),
                    foo_pods(4, "y"),
                ],
                want: vec![100, 63],
            },
            Case {
                name: "two constraints on zone, 2 out of 4 nodes are candidates",
                pod: incoming(
                    &[("foo", ""), ("bar", "")],
                    vec![soft(1, "zone", foo()), soft(1, "zone", bar())],
                    json!({}),
                ),
                nodes: vec![
                    node("node-a", &[("zone", "zone1")]),
                    node("node-x", &[("zone", "zone2")]),
                ],
                failed: vec![
                    node("node-b", &[("zone", "zone1")]),
                    node("node-y", &[("zone", "zone2")]),
                ],
                pods: vec![
                    vec![
                        labelled("a1", &[("foo", ""), ("bar", "")]),
                        labelled("a2", &[("foo", "")]),
                    ],
                    vec![],
                    vec![labelled("b1", &[("foo", ""), ("bar", "")])],
                    vec![
                        labelled("y1", &[("foo", "")]),
                        labelled("y2", &[("foo", ""), ("bar", "")]),
                        labelled("y3", &[("foo", "")]),
                    ],
                ],
                want: vec![85, 100],
            },
            Case {
                name: "two constraints on zone and node, with different labelSelectors",
                pod: incoming(
                    &[("foo", ""), ("bar", "")],
                    vec![soft(1, "zone", foo()), soft(1, H, bar())],
                    json!({}),
                ),
                nodes: vec![
                    zone_node("node-a", "zone1"),
                    zone_node("node-b", "zone1"),
                    zone_node("node-x", "zone2"),
                    zone_node("node-y", "zone2"),
                ],
                failed: vec![],
                pods: vec![
                    vec![labelled("a1", &[("foo", "")])],
                    vec![labelled("b1", &[("foo", ""), ("bar", "")])],
                    vec![],
                    vec![
                        labelled("y1", &[("foo", "")]),
                        labelled("y2", &[("bar", "")]),
                    ],
                ],
                want: vec![60, 20, 100, 60],
            },
            Case {
                name: "two constraints on zone and node, with different labelSelectors, some nodes have 0 pods",
                pod: incoming(
                    &[("foo", ""), ("bar", "")],
                    vec![soft(1, "zone", foo()), soft(1, H, bar())],
                    json!({}),
                ),
                nodes: vec![
                    zone_node("node-a", "zone1"),
                    zone_node("node-b", "zone1"),
                    zone_node("node-x", "zone2"),
                    zone_node("node-y", "zone2"),
                ],
                failed: vec![],
                pods: vec![
                    vec![],
                    vec![labelled("b1", &[("bar", "")])],
                    vec![labelled("x1", &[("foo", "")])],
                    vec![labelled("y1", &[("foo", ""), ("bar", "")])],
                ],
                want: vec![100, 60, 40, 0],
            },
            Case {
                name: "two constraints on zone and node, with different labelSelectors, 3 out of 4 nodes are candidates",
                pod: incoming(
                    &[("foo", ""), ("bar", "")],
                    vec![soft(1, "zone", foo()), soft(1, H, bar())],
                    json!({}),
                ),
                nodes: vec![
                    zone_node("node-a", "zone1"),
                    zone_node("node-b", "zone1"),
                    zone_node("node-x", "zone2"),
                ],
                failed: vec![zone_node("node-y", "zone2")],
                pods: vec![
                    vec![labelled("a1", &[("foo", "")])],
                    vec![labelled("b1", &[("foo", ""), ("bar", "")])],
                    vec![],
                    vec![
                        labelled("y1", &[("foo", "")]),
                        labelled("y2", &[("bar", "")]),
                    ],
                ],
                want: vec![50, 25, 100],
            },
            Case {
                name: "existing pods in a different namespace do not count",
                pod: one_on_host(1),
                nodes: vec![hostname_node("node-a"), hostname_node("node-b")],
                failed: vec![],
                pods: vec![
                    vec![
                        pod_in("ns1", "a1", &[("foo", "")], json!({})),
                        labelled("a2", &[("foo", "")]),
                    ],
                    foo_pods(2, "b"),
                ],
                want: vec![100, 33],
            },
            Case {
                name: "terminating Pods should be excluded",
                pod: one_on_host(1),
                nodes: vec![hostname_node("node-a"), hostname_node("node-b")],
                failed: vec![],
                pods: vec![
                    vec![terminating(&labelled("a", &[("foo", "")]))],
                    foo_pods(1, "b"),
                ],
                want: vec![100, 0],
            },
            Case {
                name: "minDomains has no effect when ScheduleAnyway",
                pod: incoming(
                    &[("foo", "")],
                    vec![
                        json!({"maxSkew": 2, "topologyKey": "node", "whenUnsatisfiable": SCHEDULE_ANYWAY,
                        "labelSelector": foo(), "minDomains": 10}),
                    ],
                    json!({}),
                ),
                nodes: ["node-a", "node-b", "node-c"]
                    .map(|n| node(n, &[("node", n)]))
                    .to_vec(),
                failed: vec![],
                pods: vec![foo_pods(2, "a"), foo_pods(2, "b"), foo_pods(1, "c")],
                want: vec![75, 75, 100],
            },
            Case {
                name: "NodeAffinityPolicy honored with labelSelectors",
                pod: incoming(
                    &[("foo", "")],
                    vec![soft(1, "node", foo())],
                    json!({"nodeSelector": {"foo": ""}}),
                ),
                nodes: vec![
                    node("node-a", &[("node", "node-a"), ("foo", "")]),
                    node("node-b", &[("node", "node-b"), ("foo", "")]),
                    node("node-c", &[("node", "node-c")]),
                ],
                failed: vec![],
                pods: vec![foo_pods(2, "a"), foo_pods(1, "b"), foo_pods(1, "c")],
                want: vec![0, 33, 100],
            },
            Case {
                name: "NodeAffinityPolicy ignored with labelSelectors",
                pod: incoming(
                    &[("foo", "")],
                    vec![
                        json!({"maxSkew": 1, "topologyKey": "node", "whenUnsatisfiable": SCHEDULE_ANYWAY,
                        "labelSelector": foo(), "nodeAffinityPolicy": "Ignore"}),
                    ],
                    json!({"nodeSelector": {"foo": ""}}),
                ),
                nodes: vec![
                    node("node-a", &[("node", "node-a"), ("foo", "")]),
                    node("node-b", &[("node", "node-b"), ("foo", "")]),
                    node("node-c", &[("node", "node-c")]),
                ],
                failed: vec![],
                pods: vec![foo_pods(2, "a"), foo_pods(1, "b"), foo_pods(1, "c")],
                want: vec![66, 100, 100],
            },
            Case {
                name: "NodeAffinityPolicy honored with nodeAffinity",
                pod: incoming(
                    &[("foo", "")],
                    vec![soft(1, "node", foo())],
                    json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "foo", "operator": "In", "values": [""]}]}]}}}}),
                ),
                nodes: vec![
                    node("node-a", &[("node", "node-a"), ("foo", "")]),
                    node("node-b", &[("node", "node-b"), ("foo", "")]),
                    node("node-c", &[("node", "node-c")]),
                ],
                failed: vec![],
                pods: vec![foo_pods(2, "a"), foo_pods(1, "b"), foo_pods(1, "c")],
                want: vec![0, 33, 100],
            },
            Case {
                name: "NodeTaintsPolicy honored",
                pod: incoming(
                    &[("foo", "")],
                    vec![
                        json!({"maxSkew": 1, "topologyKey": "node", "whenUnsatisfiable": SCHEDULE_ANYWAY,
                        "labelSelector": foo(), "nodeTaintsPolicy": "Honor"}),
                    ],
                    json!({}),
                ),
                nodes: vec![
                    node("node-a", &[("node", "node-a")]),
                    node("node-b", &[("node", "node-b")]),
                    node_with(
                        "node-c",
                        &[("node", "node-c")],
                        json!({"taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}),
                    ),
                ],
                failed: vec![],
                pods: vec![foo_pods(2, "a"), foo_pods(1, "b"), foo_pods(1, "c")],
                want: vec![0, 33, 100],
            },
            Case {
                name: "NodeTaintsPolicy ignored",
                pod: incoming(&[("foo", "")], vec![soft(1, "node", foo())], json!({})),
                nodes: vec![
                    node("node-a", &[("node", "node-a")]),
                    node("node-b", &[("node", "node-b")]),
                    node_with(
                        "node-c",
                        &[("node", "node-c")],
                        json!({"taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}),
                    ),
                ],
                failed: vec![],
                pods: vec![foo_pods(2, "a"), foo_pods(1, "b"), foo_pods(1, "c")],
                want: vec![66, 100, 100],
            },
            Case {
                name: "matchLabelKeys ANDed with LabelSelector when LabelSelector is empty",
                pod: incoming(
                    &[("foo", ""), ("bar", "")],
                    vec![
                        json!({"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": SCHEDULE_ANYWAY,
                            "labelSelector": {}, "matchLabelKeys": ["foo"]}),
                        json!({"maxSkew": 1, "topologyKey": H, "whenUnsatisfiable": SCHEDULE_ANYWAY,
                            "labelSelector": {}, "matchLabelKeys": ["bar"]}),
                    ],
                    json!({}),
                ),
                nodes: vec![
                    zone_node("node-a", "zone1"),
                    zone_node("node-b", "zone1"),
                    zone_node("node-c", "zone2"),
                    zone_node("node-d", "zone2"),
                ],
                failed: vec![],
                pods: vec![
                    vec![labelled("a1", &[("foo", "")])],
                    vec![labelled("b1", &[("foo", ""), ("bar", "")])],
                    vec![
                        labelled("c1", &[("foo", "")]),
                        labelled("c2", &[("bar", "")]),
                    ],
                ],
                want: vec![60, 20, 60, 100],
            },
            Case {
                name: "matchLabelKeys ANDed with LabelSelector when LabelSelector isn't empty",
                pod: incoming(
                    &[("foo", ""), ("bar", ""), ("baz", "")],
                    vec![
                        soft(1, "zone", foo()),
                        json!({"maxSkew": 1, "topologyKey": H, "whenUnsatisfiable": SCHEDULE_ANYWAY,
                            "labelSelector": bar(), "matchLabelKeys": ["baz"]}),
                    ],
                    json!({}),
                ),
                nodes: vec![
                    zone_node("node-a", "zone1"),
                    zone_node("node-b", "zone1"),
                    zone_node("node-c", "zone2"),
                    zone_node("node-d", "zone2"),
                ],
                failed: vec![],
                pods: vec![
                    vec![labelled("a1", &[("foo", "")])],
                    vec![labelled("b1", &[("foo", ""), ("bar", ""), ("baz", "")])],
                    vec![
                        labelled("c1", &[("foo", "")]),
                        labelled("c2", &[("bar", "")]),
                        labelled("c3", &[("bar", ""), ("baz", "")]),
                    ],
                ],
                want: vec![60, 20, 60, 100],
            },
        ];
        for c in &cases {
            assert_eq!(run(&plugin(), c), c.want, "{}", c.name);
        }
    }

    fn foo_selector() -> DefaultSelectorSource {
        Arc::new(|pod: &PodInfo| {
            let mut s = Selector::everything();
            if let Some(v) = pod.labels.get("foo") {
                s.require(Requirement::In("foo".into(), vec![v.clone()]));
            }
            s
        })
    }

    #[test]
    fn system_defaults_spread_nodes_without_zone_by_hostname() {
        let p = plugin().with_default_selector(foo_selector());
        let c = Case {
            name: "system defaulting, nodes don't have zone, pods match service",
            pod: labelled("p", &[("foo", "")]),
            nodes: ["node-a", "node-b", "node-c", "node-d"]
                .map(hostname_node)
                .to_vec(),
            failed: vec![],
            pods: vec![
                foo_pods(4, "a"),
                foo_pods(3, "b"),
                foo_pods(2, "c"),
                foo_pods(1, "d"),
            ],
            want: vec![44, 66, 77, 100],
        };
        assert_eq!(run(&p, &c), c.want);

        // With a List of defaults every node needs every key: a node without
        // the zone is ignored (scores 0) rather than hostname-spread.
        let args: PodTopologySpreadArgs = serde_json::from_value(json!({
            "defaultingType": "List",
            "defaultConstraints": [
                {"maxSkew": 3, "topologyKey": H, "whenUnsatisfiable": SCHEDULE_ANYWAY},
                {"maxSkew": 5, "topologyKey": LABEL_TOPOLOGY_ZONE_KEY, "whenUnsatisfiable": SCHEDULE_ANYWAY},
            ],
        }))
        .unwrap();
        let p = PodTopologySpread::from_args(&args)
            .unwrap()
            .with_default_selector(foo_selector());
        let c = Case {
            name: "list defaulting, one node without zone",
            pod: labelled("p", &[("foo", "")]),
            nodes: vec![
                node("node-a", &[(H, "node-a"), (LABEL_TOPOLOGY_ZONE_KEY, "z1")]),
                node("node-b", &[(H, "node-b"), (LABEL_TOPOLOGY_ZONE_KEY, "z2")]),
                hostname_node("node-c"),
            ],
            failed: vec![],
            pods: vec![foo_pods(1, "a"), vec![], vec![]],
            // a: ln4 + 2 (hostname) + ln4 + 4 (zone) ≈ 9; b: 2 + 4 = 6.
            want: vec![66, 100, 0],
        };
        assert_eq!(run(&p, &c), c.want);
    }

    const LABEL_TOPOLOGY_ZONE_KEY: &str = super::super::common::LABEL_TOPOLOGY_ZONE;

    #[test]
    fn pre_score_skips() {
        let snap = snapshot(vec![info(hostname_node("node-a"), &[])], &[]);
        let nodes = snap.nodes.clone();
        let mut state = CycleState::new();
        let no_constraints = labelled("p", &[("foo", "")]);
        // System defaults without a workload selector: nothing to score.
        assert!(
            plugin()
                .pre_score(&mut state, &no_constraints, &nodes, &snap)
                .is_skip()
        );
        let hard_only = incoming(
            &[("foo", "")],
            vec![constraint(1, H, "DoNotSchedule", exists("foo"))],
            json!({}),
        );
        assert!(
            plugin()
                .pre_score(&mut state, &hard_only, &nodes, &snap)
                .is_skip()
        );
        let soft_pod = incoming(&[("foo", "")], vec![soft(1, H, exists("foo"))], json!({}));
        let empty = Snapshot::default();
        assert!(
            plugin()
                .pre_score(&mut state, &soft_pod, &[], &empty)
                .is_skip()
        );
        assert!(
            state
                .read::<Arc<PreScoreState>>(PRE_SCORE_STATE_KEY)
                .is_none()
        );
    }

    #[test]
    fn pre_score_state_weights_and_ignored_nodes() {
        let p = incoming(
            &[("foo", "")],
            vec![soft(1, "zone", exists("foo")), soft(1, H, exists("bar"))],
            json!({}),
        );
        let snap = snapshot(
            vec![
                info(zone_node("node-a", "zone1"), &[]),
                info(zone_node("node-b", "zone1"), &[]),
                info(hostname_node("node-x"), &[]),
            ],
            &[],
        );
        let mut state = CycleState::new();
        assert!(
            plugin()
                .pre_score(&mut state, &p, &snap.nodes, &snap)
                .is_success()
        );
        let s = state
            .read::<Arc<PreScoreState>>(PRE_SCORE_STATE_KEY)
            .unwrap();
        assert_eq!(s.ignored_nodes, HashSet::from(["node-x".to_string()]));
        assert_eq!(
            s.topology_value_to_pod_counts,
            vec![HashMap::from([("zone1".to_string(), 0)]), HashMap::new()]
        );
        assert_eq!(
            s.topology_normalizing_weight,
            vec![
                topology_normalizing_weight(1),
                topology_normalizing_weight(2)
            ]
        );
    }

    #[test]
    fn score_without_pre_score_state_is_an_error() {
        let p = incoming(&[("foo", "")], vec![soft(1, H, exists("foo"))], json!({}));
        let n = info(hostname_node("node-a"), &[]);
        let err = plugin().score(&CycleState::new(), &p, &n).unwrap_err();
        assert_eq!(err.code, Code::Error);
    }
}
