//! PreFilter/Filter for DoNotSchedule constraints: count matching pods per
//! topology domain once, then check each node's domain against the
//! smallest one.

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, PodInfo, PreFilterPlugin, PreFilterResult, Snapshot, Status,
};

use super::common::{
    Constraint, DO_NOT_SCHEDULE, NodeInclusion, count_pods_match_selector,
    node_has_all_topology_keys,
};
use super::{ERR_REASON_CONSTRAINTS_NOT_MATCH, ERR_REASON_NODE_LABEL_NOT_MATCH, PodTopologySpread};

pub(super) const PRE_FILTER_STATE_KEY: &str = "PreFilterPodTopologySpread";

/// Starting count of an unfilled critical path, as upstream (MaxInt32).
const UNSET_MATCH_NUM: i64 = i32::MAX as i64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CriticalPath {
    pub topology_value: String,
    pub match_num: i64,
}

/// The two least crowded domains of a constraint. `[0]` always holds the
/// minimum; `[1]` is not necessarily the second minimum. Two are enough
/// because preemption only ever removes pods from a single node per try, so
/// the minimum can move at most to the runner-up (upstream's reasoning).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CriticalPaths(pub [CriticalPath; 2]);

impl CriticalPaths {
    fn new() -> Self {
        let unset = CriticalPath {
            topology_value: String::new(),
            match_num: UNSET_MATCH_NUM,
        };
        Self([unset.clone(), unset])
    }

    fn update(&mut self, value: &str, num: i64) {
        let p = &mut self.0;
        let existing = if p[0].topology_value == value {
            Some(0)
        } else if p[1].topology_value == value {
            Some(1)
        } else {
            None
        };
        match existing {
            Some(i) => {
                p[i].match_num = num;
                if p[0].match_num > p[1].match_num {
                    p.swap(0, 1);
                }
            }
            None if num < p[0].match_num => {
                p[1] = p[0].clone();
                p[0] = CriticalPath {
                    topology_value: value.to_string(),
                    match_num: num,
                };
            }
            None if num < p[1].match_num => {
                p[1] = CriticalPath {
                    topology_value: value.to_string(),
                    match_num: num,
                };
            }
            None => {}
        }
    }
}

/// Computed in PreFilter, read by Filter, adjusted by AddPod/RemovePod.
#[derive(Clone, Debug)]
pub(super) struct PreFilterState {
    pub constraints: Arc<Vec<Constraint>>,
    /// Per constraint.
    pub critical_paths: Vec<CriticalPaths>,
    /// Per constraint: topology value → matching pods in that domain.
    pub tp_value_to_match_num: Vec<HashMap<String, i64>>,
    /// The incoming pod's node selection, for AddPod/RemovePod.
    inclusion: Arc<NodeInclusion>,
}

impl PreFilterState {
    /// The global minimum the skew is measured against: 0 while fewer than
    /// `minDomains` domains exist, so new domains are preferred.
    fn min_match_num(&self, i: usize, min_domains: i32) -> i64 {
        if (self.tp_value_to_match_num[i].len() as i64) < i64::from(min_domains) {
            0
        } else {
            self.critical_paths[i].0[0].match_num
        }
    }

    fn update_with_pod(
        &mut self,
        updated: &PodInfo,
        preemptor: &PodInfo,
        node: &NodeInfo,
        delta: i64,
    ) {
        if updated.namespace != preemptor.namespace
            || !node_has_all_topology_keys(&node.labels, &self.constraints)
        {
            return;
        }
        for (i, c) in self.constraints.iter().enumerate() {
            if !c.selector.matches(&updated.labels) || !self.inclusion.includes(c, node) {
                continue;
            }
            let value = &node.labels[&c.topology_key];
            let num = self.tp_value_to_match_num[i]
                .entry(value.clone())
                .or_default();
            *num += delta;
            let num = *num;
            self.critical_paths[i].update(value, num);
        }
    }
}

impl PodTopologySpread {
    pub(super) fn cal_pre_filter_state(
        &self,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
    ) -> Result<PreFilterState, String> {
        let constraints = self.constraints_for(pod, DO_NOT_SCHEDULE).map_err(|e| {
            format!(
                "get constraints from pod: obtaining pod's hard topology spread constraints: {e}"
            )
        })?;
        let inclusion = NodeInclusion::of(pod);
        // No hard constraint (the usual case: the system defaults are all
        // ScheduleAnyway): nothing to count, and no node to visit.
        let nodes = if constraints.is_empty() { &[] } else { nodes };
        let per_node: Vec<Vec<(usize, &str, i64)>> = nodes
            .par_iter()
            .map(|node| {
                if !node_has_all_topology_keys(&node.labels, &constraints) {
                    return vec![];
                }
                constraints
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| inclusion.includes(c, node))
                    .map(|(i, c)| {
                        (
                            i,
                            node.labels[&c.topology_key].as_str(),
                            count_pods_match_selector(&node.pods, &c.selector, &pod.namespace),
                        )
                    })
                    .collect()
            })
            .collect();
        let mut tp_value_to_match_num = vec![HashMap::new(); constraints.len()];
        for (i, value, count) in per_node.into_iter().flatten() {
            *tp_value_to_match_num[i]
                .entry(value.to_string())
                .or_default() += count;
        }
        let critical_paths = tp_value_to_match_num
            .iter()
            .map(|counts| {
                let mut paths = CriticalPaths::new();
                for (value, num) in counts {
                    paths.update(value, *num);
                }
                paths
            })
            .collect();
        Ok(PreFilterState {
            constraints: Arc::new(constraints),
            critical_paths,
            tp_value_to_match_num,
            inclusion: Arc::new(inclusion),
        })
    }
}

fn missing_state() -> Status {
    Status::error(format!(
        "reading {PRE_FILTER_STATE_KEY:?} from cycleState: not found"
    ))
}

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (PreFilterResult, Status) {
        let s = match self.cal_pre_filter_state(pod, &snapshot.nodes) {
            Ok(s) => s,
            Err(e) => return (PreFilterResult::default(), Status::error(e)),
        };
        if s.constraints.is_empty() {
            return (PreFilterResult::default(), Status::skip());
        }
        state.write(PRE_FILTER_STATE_KEY, s);
        (PreFilterResult::default(), Status::success())
    }

    fn has_extensions(&self) -> bool {
        true
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        to_add: &Arc<PodInfo>,
        node: &NodeInfo,
        _snapshot: &Snapshot,
    ) -> Status {
        let Some(s) = state.read_mut::<PreFilterState>(PRE_FILTER_STATE_KEY) else {
            return missing_state();
        };
        s.update_with_pod(to_add, pod, node, 1);
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        to_remove: &Arc<PodInfo>,
        node: &NodeInfo,
        _snapshot: &Snapshot,
    ) -> Status {
        let Some(s) = state.read_mut::<PreFilterState>(PRE_FILTER_STATE_KEY) else {
            return missing_state();
        };
        s.update_with_pod(to_remove, pod, node, -1);
        Status::success()
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<PreFilterState>(PRE_FILTER_STATE_KEY) else {
            return missing_state();
        };
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(value) = node.labels.get(&c.topology_key) else {
                return Status::unresolvable(ERR_REASON_NODE_LABEL_NOT_MATCH);
            };
            let min_match_num = s.min_match_num(i, c.min_domains);
            let self_match_num = i64::from(c.selector.matches(&pod.labels));
            let match_num = s.tp_value_to_match_num[i].get(value).copied().unwrap_or(0);
            if match_num + self_match_num - min_match_num > i64::from(c.max_skew) {
                return Status::unschedulable(ERR_REASON_CONSTRAINTS_NOT_MATCH);
            }
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::super::PodTopologySpreadArgs;
    use super::super::common::test_support::*;
    use super::*;
    use crate::framework::Code;
    use crate::framework::testing::{pod, pod_in, snapshot};
    use k8s_openapi::api::core::v1::Node;
    use serde_json::{Value, json};

    fn plugin() -> PodTopologySpread {
        let args: PodTopologySpreadArgs =
            serde_json::from_value(json!({"defaultingType": "List"})).unwrap();
        PodTopologySpread::from_args(&args).unwrap()
    }

    /// A pod labelled `labels` with `extra` spec fields and `constraints`.
    fn incoming(labels: &[(&str, &str)], constraints: Vec<Value>, extra: Value) -> Arc<PodInfo> {
        let mut spec = extra;
        spec["topologySpreadConstraints"] = Value::Array(constraints);
        pod("p", labels, spec)
    }

    fn foo_pod(name: &str) -> Arc<PodInfo> {
        pod(name, &[("foo", "")], json!({}))
    }

    /// node-a/node-b in zone1 and node-x/node-y in zone2, each also
    /// labelled `node=<name>`.
    fn four_nodes() -> Vec<Node> {
        [
            ("node-a", "zone1"),
            ("node-b", "zone1"),
            ("node-x", "zone2"),
            ("node-y", "zone2"),
        ]
        .iter()
        .map(|(n, z)| node(n, &[("zone", z), ("node", n)]))
        .collect()
    }

    /// Places `pods[i]` (count, labels) on `nodes[i]`.
    fn cluster(nodes: Vec<Node>, pods: &[Vec<Arc<PodInfo>>]) -> Snapshot {
        let infos = nodes
            .into_iter()
            .enumerate()
            .map(|(i, n)| info(n, pods.get(i).map(Vec::as_slice).unwrap_or_default()))
            .collect();
        snapshot(infos, &[])
    }

    fn foo_pods(n: usize, prefix: &str) -> Vec<Arc<PodInfo>> {
        (0..n).map(|i| foo_pod(&format!("{prefix}{i}"))).collect()
    }

    fn counts(pairs: &[(&str, i64)]) -> HashMap<String, i64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn min_paths(s: &PreFilterState) -> Vec<i64> {
        s.critical_paths.iter().map(|p| p.0[0].match_num).collect()
    }

    #[test]
    fn pre_filter_counts_domains() {
        struct Case {
            name: &'static str,
            pod: Arc<PodInfo>,
            snapshot: Snapshot,
            want_counts: Vec<HashMap<String, i64>>,
            want_min: Vec<i64>,
        }
        let foo = exists("foo");
        let cases = vec![
            Case {
                name: "clean cluster with one spreadConstraint",
                pod: incoming(
                    &[("foo", "")],
                    vec![constraint(
                        5,
                        "zone",
                        DO_NOT_SCHEDULE,
                        json!({"matchLabels": {"foo": "bar"}}),
                    )],
                    json!({}),
                ),
                snapshot: cluster(four_nodes(), &[]),
                want_counts: vec![counts(&[("zone1", 0), ("zone2", 0)])],
                want_min: vec![0],
            },
            Case {
                name: "normal case with one spreadConstraint",
                pod: incoming(
                    &[("foo", "")],
                    vec![constraint(1, "zone", DO_NOT_SCHEDULE, foo.clone())],
                    json!({}),
                ),
                snapshot: cluster(
                    four_nodes(),
                    &[foo_pods(2, "a"), foo_pods(1, "b"), vec![], foo_pods(2, "y")],
                ),
                want_counts: vec![counts(&[("zone1", 3), ("zone2", 2)])],
                want_min: vec![2],
            },
            Case {
                name: "null label selector counts nothing",
                pod: incoming(
                    &[("foo", "")],
                    vec![constraint(1, "zone", DO_NOT_SCHEDULE, Value::Null)],
                    json!({}),
                ),
                snapshot: cluster(
                    four_nodes(),
                    &[foo_pods(2, "a"), foo_pods(1, "b"), vec![], foo_pods(2, "y")],
                ),
                want_counts: vec![counts(&[("zone1", 0), ("zone2", 0)])],
                want_min: vec![0],
            },
            Case {
                name: "namespace mismatch doesn't count",
                pod: incoming(
                    &[("foo", "")],
                    vec![constraint(1, "zone", DO_NOT_SCHEDULE, foo.clone())],
                    json!({}),
                ),
                snapshot: cluster(
                    four_nodes(),
                    &[
                        vec![
                            foo_pod("a1"),
                            pod_in("ns1", "a2", &[("foo", "")], json!({})),
                        ],
                        foo_pods(1, "b"),
                        vec![],
                        vec![
                            pod_in("ns2", "y1", &[("foo", "")], json!({})),
                            foo_pod("y2"),
                        ],
                    ],
                ),
                want_counts: vec![counts(&[("zone1", 2), ("zone2", 1)])],
                want_min: vec![1],
            },
            Case {
                name: "two constraints; soft ones are bypassed",
                pod: incoming(
                    &[("foo", "")],
                    vec![
                        constraint(1, "zone", "ScheduleAnyway", foo.clone()),
                        constraint(1, "zone", DO_NOT_SCHEDULE, foo.clone()),
                        constraint(1, "node", "ScheduleAnyway", foo.clone()),
                        constraint(1, "node", DO_NOT_SCHEDULE, foo.clone()),
                    ],
                    json!({}),
                ),
                snapshot: cluster(
                    four_nodes(),
                    &[foo_pods(2, "a"), foo_pods(1, "b"), vec![], foo_pods(4, "y")],
                ),
                want_counts: vec![
                    counts(&[("zone1", 3), ("zone2", 4)]),
                    counts(&[("node-a", 2), ("node-b", 1), ("node-x", 0), ("node-y", 4)]),
                ],
                want_min: vec![3, 0],
            },
            Case {
                name: "nodes missing any topology key are left out of every constraint",
                pod: incoming(
                    &[("foo", "")],
                    vec![
                        constraint(1, "zone", DO_NOT_SCHEDULE, foo.clone()),
                        constraint(1, "node", DO_NOT_SCHEDULE, foo.clone()),
                    ],
                    json!({}),
                ),
                snapshot: cluster(
                    vec![
                        node("node-a", &[("zone", "zone1"), ("node", "node-a")]),
                        node("node-b", &[("zone", "zone1")]),
                        node("node-x", &[("zone", "zone2"), ("node", "node-x")]),
                    ],
                    &[foo_pods(1, "a"), foo_pods(5, "b"), foo_pods(2, "x")],
                ),
                want_counts: vec![
                    counts(&[("zone1", 1), ("zone2", 2)]),
                    counts(&[("node-a", 1), ("node-x", 2)]),
                ],
                want_min: vec![1, 1],
            },
            Case {
                name: "NodeAffinityPolicy Honor leaves out nodes the pod can't go to",
                pod: incoming(
                    &[("foo", "")],
                    vec![constraint(1, "zone", DO_NOT_SCHEDULE, foo.clone())],
                    json!({"nodeSelector": {"foo": ""}}),
                ),
                snapshot: cluster(
                    vec![
                        node("node-a", &[("zone", "zone1"), ("foo", "")]),
                        node("node-b", &[("zone", "zone1")]),
                        node("node-x", &[("zone", "zone2")]),
                    ],
                    &[foo_pods(1, "a"), foo_pods(2, "b"), foo_pods(3, "x")],
                ),
                want_counts: vec![counts(&[("zone1", 1)])],
                want_min: vec![1],
            },
            Case {
                name: "NodeAffinityPolicy Ignore counts every node",
                pod: incoming(
                    &[("foo", "")],
                    vec![
                        json!({"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": DO_NOT_SCHEDULE,
                        "labelSelector": foo, "nodeAffinityPolicy": "Ignore"}),
                    ],
                    json!({"nodeSelector": {"foo": ""}}),
                ),
                snapshot: cluster(
                    vec![
                        node("node-a", &[("zone", "zone1"), ("foo", "")]),
                        node("node-b", &[("zone", "zone1")]),
                        node("node-x", &[("zone", "zone2")]),
                    ],
                    &[foo_pods(1, "a"), foo_pods(2, "b"), foo_pods(3, "x")],
                ),
                want_counts: vec![counts(&[("zone1", 3), ("zone2", 3)])],
                want_min: vec![3],
            },
            Case {
                name: "NodeTaintsPolicy Honor leaves out untolerated tainted nodes",
                pod: incoming(
                    &[("foo", "")],
                    vec![
                        json!({"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": DO_NOT_SCHEDULE,
                        "labelSelector": foo, "nodeTaintsPolicy": "Honor"}),
                    ],
                    json!({}),
                ),
                snapshot: cluster(
                    vec![
                        node_with(
                            "node-a",
                            &[("zone", "zone1")],
                            json!({"taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}),
                        ),
                        node("node-b", &[("zone", "zone1")]),
                        node("node-x", &[("zone", "zone2")]),
                    ],
                    &[foo_pods(1, "a"), foo_pods(2, "b"), foo_pods(3, "x")],
                ),
                want_counts: vec![counts(&[("zone1", 2), ("zone2", 3)])],
                want_min: vec![2],
            },
            Case {
                name: "NodeTaintsPolicy Ignore (default) counts tainted nodes",
                pod: incoming(
                    &[("foo", "")],
                    vec![constraint(1, "zone", DO_NOT_SCHEDULE, foo.clone())],
                    json!({}),
                ),
                snapshot: cluster(
                    vec![
                        node_with(
                            "node-a",
                            &[("zone", "zone1")],
                            json!({"taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}),
                        ),
                        node("node-b", &[("zone", "zone1")]),
                        node("node-x", &[("zone", "zone2")]),
                    ],
                    &[foo_pods(1, "a"), foo_pods(2, "b"), foo_pods(3, "x")],
                ),
                want_counts: vec![counts(&[("zone1", 3), ("zone2", 3)])],
                want_min: vec![3],
            },
            Case {
                name: "matchLabelKeys narrow what is counted",
                pod: incoming(
                    &[("foo", ""), ("version", "v1")],
                    vec![
                        json!({"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": DO_NOT_SCHEDULE,
                        "labelSelector": foo, "matchLabelKeys": ["version"]}),
                    ],
                    json!({}),
                ),
                snapshot: cluster(
                    four_nodes(),
                    &[
                        vec![pod("a1", &[("foo", ""), ("version", "v1")], json!({}))],
                        vec![pod("b1", &[("foo", ""), ("version", "v2")], json!({}))],
                        foo_pods(1, "x"),
                    ],
                ),
                want_counts: vec![counts(&[("zone1", 1), ("zone2", 0)])],
                want_min: vec![0],
            },
        ];
        for c in cases {
            let s = plugin()
                .cal_pre_filter_state(&c.pod, &c.snapshot.nodes)
                .unwrap();
            assert_eq!(s.tp_value_to_match_num, c.want_counts, "{}", c.name);
            assert_eq!(min_paths(&s), c.want_min, "{}", c.name);
        }
    }

    #[test]
    fn pre_filter_skips_without_hard_constraints() {
        let snap = cluster(four_nodes(), &[]);
        let mut state = CycleState::new();
        let soft = incoming(
            &[("foo", "")],
            vec![constraint(1, "zone", "ScheduleAnyway", exists("foo"))],
            json!({}),
        );
        let (_, status) = plugin().pre_filter(&mut state, &soft, &snap);
        assert!(status.is_skip());
        let none = pod("p", &[("foo", "")], json!({}));
        let (_, status) = plugin().pre_filter(&mut state, &none, &snap);
        assert!(status.is_skip());
        // System defaults are all ScheduleAnyway: nothing to filter either.
        let system = PodTopologySpread::from_args(&PodTopologySpreadArgs::default()).unwrap();
        let (_, status) = system.pre_filter(&mut state, &none, &snap);
        assert!(status.is_skip());
        assert!(state.read::<PreFilterState>(PRE_FILTER_STATE_KEY).is_none());
    }

    #[test]
    fn pre_filter_reports_bad_selectors() {
        let snap = cluster(four_nodes(), &[]);
        let bad = incoming(
            &[],
            vec![constraint(
                1,
                "zone",
                DO_NOT_SCHEDULE,
                json!({"matchExpressions": [{"key": "k", "operator": "In"}]}),
            )],
            json!({}),
        );
        let (_, status) = plugin().pre_filter(&mut CycleState::new(), &bad, &snap);
        assert_eq!(status.code, Code::Error);
        assert!(
            status.message().starts_with("get constraints from pod"),
            "{status}"
        );
    }

    #[test]
    fn critical_paths_track_the_minimum() {
        let mut p = CriticalPaths::new();
        for (v, n) in [("zone1", 3), ("zone2", 2), ("zone3", 0)] {
            p.update(v, n);
        }
        assert_eq!(p.0[0].match_num, 0);
        assert_eq!(p.0[0].topology_value, "zone3");
        assert_eq!(p.0[1].match_num, 2);
        // The minimum domain grows past the runner-up: they swap.
        p.update("zone3", 5);
        assert_eq!(
            (p.0[0].topology_value.as_str(), p.0[0].match_num),
            ("zone2", 2)
        );
        assert_eq!(
            (p.0[1].topology_value.as_str(), p.0[1].match_num),
            ("zone3", 5)
        );
        // A domain outside the two paths that drops below both takes [0].
        p.update("zone1", 1);
        assert_eq!(
            (p.0[0].topology_value.as_str(), p.0[0].match_num),
            ("zone1", 1)
        );
        assert_eq!(
            (p.0[1].topology_value.as_str(), p.0[1].match_num),
            ("zone2", 2)
        );
    }

    /// Runs PreFilter then Filter on every node; returns (node, code, reason).
    fn filter_all(
        p: &PodTopologySpread,
        pod: &PodInfo,
        snap: &Snapshot,
    ) -> Vec<(String, Code, String)> {
        let mut state = CycleState::new();
        let (_, status) = p.pre_filter(&mut state, pod, snap);
        assert!(status.is_success(), "{status}");
        snap.nodes
            .iter()
            .map(|n| {
                let s = p.filter(&state, pod, n);
                (n.name.clone(), s.code, s.message())
            })
            .collect()
    }

    fn codes(results: &[(String, Code, String)]) -> Vec<(&str, Code)> {
        results.iter().map(|(n, c, _)| (n.as_str(), *c)).collect()
    }

    /// Expected filter code per node.
    type Want = Vec<(&'static str, Code)>;
    type PodsPerNode = Vec<Vec<Arc<PodInfo>>>;

    use Code::{Success as OK, Unschedulable as UNS, UnschedulableAndUnresolvable as UNR};

    #[test]
    fn filter_single_constraint() {
        let foo = exists("foo");
        let zone1 = |skew| vec![constraint(skew, "zone", DO_NOT_SCHEDULE, exists("foo"))];
        let by_node = |skew| vec![constraint(skew, "node", DO_NOT_SCHEDULE, exists("foo"))];
        let spread_2_1_0_3 = || vec![foo_pods(2, "a"), foo_pods(1, "b"), vec![], foo_pods(3, "y")];
        let cases: Vec<(&str, Arc<PodInfo>, Snapshot, Want)> = vec![
            (
                "no existing pods",
                incoming(&[("foo", "")], zone1(1), json!({})),
                cluster(four_nodes(), &[]),
                vec![
                    ("node-a", OK),
                    ("node-b", OK),
                    ("node-x", OK),
                    ("node-y", OK),
                ],
            ),
            (
                "no existing pods, incoming pod doesn't match itself",
                incoming(
                    &[("foo", "")],
                    vec![constraint(1, "zone", DO_NOT_SCHEDULE, exists("bar"))],
                    json!({}),
                ),
                cluster(four_nodes(), &[]),
                vec![
                    ("node-a", OK),
                    ("node-b", OK),
                    ("node-x", OK),
                    ("node-y", OK),
                ],
            ),
            (
                "existing pods in a different namespace do not count",
                incoming(&[("foo", "")], zone1(1), json!({})),
                cluster(
                    four_nodes(),
                    &[
                        vec![
                            pod_in("ns1", "a1", &[("foo", "")], json!({})),
                            pod_in("ns2", "b1", &[("foo", "")], json!({})),
                        ],
                        vec![],
                        foo_pods(1, "x"),
                        foo_pods(1, "y"),
                    ],
                ),
                vec![
                    ("node-a", OK),
                    ("node-b", OK),
                    ("node-x", UNS),
                    ("node-y", UNS),
                ],
            ),
            (
                "existing pods do not match null selector",
                incoming(
                    &[("foo", "")],
                    vec![constraint(1, "zone", DO_NOT_SCHEDULE, Value::Null)],
                    json!({}),
                ),
                cluster(
                    four_nodes(),
                    &[vec![], vec![], foo_pods(1, "x"), foo_pods(1, "y")],
                ),
                vec![
                    ("node-a", OK),
                    ("node-b", OK),
                    ("node-x", OK),
                    ("node-y", OK),
                ],
            ),
            (
                "pods spread across zones as 3/3, all nodes fit",
                incoming(&[("foo", "")], zone1(1), json!({})),
                cluster(
                    four_nodes(),
                    &[foo_pods(2, "a"), foo_pods(1, "b"), vec![], foo_pods(3, "y")],
                ),
                vec![
                    ("node-a", OK),
                    ("node-b", OK),
                    ("node-x", OK),
                    ("node-y", OK),
                ],
            ),
            (
                "pods spread across zones as 1/2 due to absence of label 'zone' on node-b",
                incoming(&[("foo", "")], zone1(1), json!({})),
                cluster(
                    vec![
                        node("node-a", &[("zone", "zone1"), ("node", "node-a")]),
                        node("node-b", &[("zon", "zone1"), ("node", "node-b")]),
                        node("node-x", &[("zone", "zone2"), ("node", "node-x")]),
                        node("node-y", &[("zone", "zone2"), ("node", "node-y")]),
                    ],
                    &[
                        foo_pods(1, "a"),
                        foo_pods(1, "b"),
                        foo_pods(1, "x"),
                        foo_pods(1, "y"),
                    ],
                ),
                vec![
                    ("node-a", OK),
                    ("node-b", UNR),
                    ("node-x", UNS),
                    ("node-y", UNS),
                ],
            ),
            (
                "pods spread across nodes as 2/1/0/3, only node-x fits",
                incoming(&[("foo", "")], by_node(1), json!({})),
                cluster(four_nodes(), &spread_2_1_0_3()),
                vec![
                    ("node-a", UNS),
                    ("node-b", UNS),
                    ("node-x", OK),
                    ("node-y", UNS),
                ],
            ),
            (
                "pods spread across nodes as 2/1/0/3, maxSkew is 2, node-b and node-x fit",
                incoming(&[("foo", "")], by_node(2), json!({})),
                cluster(four_nodes(), &spread_2_1_0_3()),
                vec![
                    ("node-a", UNS),
                    ("node-b", OK),
                    ("node-x", OK),
                    ("node-y", UNS),
                ],
            ),
            (
                "pods spread across nodes as 2/1/0/3, but pod doesn't match itself",
                incoming(&[("bar", "")], by_node(1), json!({})),
                cluster(four_nodes(), &spread_2_1_0_3()),
                vec![
                    ("node-a", UNS),
                    ("node-b", OK),
                    ("node-x", OK),
                    ("node-y", UNS),
                ],
            ),
            (
                "incoming pod has nodeAffinity, pods spread as 2/~1~/~0~/3, hence node-a fits",
                incoming(
                    &[("foo", "")],
                    by_node(1),
                    json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "node", "operator": "In", "values": ["node-a", "node-y"]}]}]}}}}),
                ),
                cluster(four_nodes(), &spread_2_1_0_3()),
                vec![
                    ("node-a", OK),
                    ("node-b", OK),
                    ("node-x", OK),
                    ("node-y", UNS),
                ],
            ),
            (
                "terminating Pods should be excluded",
                incoming(&[("foo", "")], by_node(1), json!({})),
                cluster(
                    vec![
                        node("node-a", &[("node", "node-a")]),
                        node("node-b", &[("node", "node-b")]),
                    ],
                    &[vec![terminating(&foo_pod("a"))], foo_pods(1, "b")],
                ),
                vec![("node-a", OK), ("node-b", UNS)],
            ),
            (
                "incoming pod has nodeAffinity, pods spread as 0/~2~/0/1, hence node-a fits",
                incoming(
                    &[("foo", "")],
                    zone1(1),
                    json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "node", "operator": "NotIn", "values": ["node-b"]}]}]}}}}),
                ),
                cluster(
                    four_nodes(),
                    &[vec![], foo_pods(2, "b"), vec![], foo_pods(1, "y")],
                ),
                vec![
                    ("node-a", OK),
                    ("node-b", OK),
                    ("node-x", UNS),
                    ("node-y", UNS),
                ],
            ),
            (
                "2/2/1, maxSkew 2, fewer domains than minDomains: only the third node fits",
                incoming(
                    &[("foo", "")],
                    vec![
                        json!({"maxSkew": 2, "topologyKey": "node", "whenUnsatisfiable": DO_NOT_SCHEDULE,
                        "labelSelector": foo, "minDomains": 4}),
                    ],
                    json!({}),
                ),
                cluster(
                    vec![
                        node("node-a", &[("node", "node-a")]),
                        node("node-b", &[("node", "node-b")]),
                        node("node-c", &[("node", "node-c")]),
                    ],
                    &[foo_pods(2, "a"), foo_pods(2, "b"), foo_pods(1, "c")],
                ),
                vec![("node-a", UNS), ("node-b", UNS), ("node-c", OK)],
            ),
            (
                "2/2/1, maxSkew 2, more domains than minDomains: all nodes fit",
                incoming(
                    &[("foo", "")],
                    vec![
                        json!({"maxSkew": 2, "topologyKey": "node", "whenUnsatisfiable": DO_NOT_SCHEDULE,
                        "labelSelector": foo, "minDomains": 2}),
                    ],
                    json!({}),
                ),
                cluster(
                    vec![
                        node("node-a", &[("node", "node-a")]),
                        node("node-b", &[("node", "node-b")]),
                        node("node-c", &[("node", "node-c")]),
                    ],
                    &[foo_pods(2, "a"), foo_pods(2, "b"), foo_pods(1, "c")],
                ),
                vec![("node-a", OK), ("node-b", OK), ("node-c", OK)],
            ),
            (
                "NodeTaintsPolicy Honor: the tainted node's empty domain isn't the minimum",
                incoming(
                    &[("foo", "")],
                    vec![
                        json!({"maxSkew": 1, "topologyKey": "node", "whenUnsatisfiable": DO_NOT_SCHEDULE,
                        "labelSelector": foo, "nodeTaintsPolicy": "Honor"}),
                    ],
                    json!({}),
                ),
                cluster(
                    vec![
                        node("node-a", &[("node", "node-a")]),
                        node("node-b", &[("node", "node-b")]),
                        node_with(
                            "node-c",
                            &[("node", "node-c")],
                            json!({"taints": [{"key": "k", "effect": "NoSchedule"}]}),
                        ),
                    ],
                    &[foo_pods(1, "a"), foo_pods(2, "b")],
                ),
                // Without Honor the empty node-c domain would be the minimum
                // and reject node-a too. node-c itself passes: keeping pods
                // off tainted nodes is TaintToleration's job.
                vec![("node-a", OK), ("node-b", UNS), ("node-c", OK)],
            ),
        ];
        for (name, pod, snap, want) in cases {
            let got = filter_all(&plugin(), &pod, &snap);
            assert_eq!(codes(&got), want, "{name}");
        }
    }

    #[test]
    fn filter_reasons() {
        let p = incoming(
            &[("foo", "")],
            vec![constraint(1, "zone", DO_NOT_SCHEDULE, exists("foo"))],
            json!({}),
        );
        let snap = cluster(
            vec![
                node("node-a", &[("zone", "zone1")]),
                node("node-b", &[("zone", "zone2")]),
                node("node-c", &[]),
            ],
            &[foo_pods(1, "a")],
        );
        let got = filter_all(&plugin(), &p, &snap);
        assert_eq!(
            got[0],
            (
                "node-a".into(),
                UNS,
                ERR_REASON_CONSTRAINTS_NOT_MATCH.into()
            )
        );
        assert_eq!(got[1], ("node-b".into(), OK, String::new()));
        assert_eq!(
            got[2],
            ("node-c".into(), UNR, ERR_REASON_NODE_LABEL_NOT_MATCH.into())
        );
        assert_eq!(
            ERR_REASON_CONSTRAINTS_NOT_MATCH,
            "node(s) didn't match pod topology spread constraints"
        );
        assert_eq!(
            ERR_REASON_NODE_LABEL_NOT_MATCH,
            "node(s) didn't match pod topology spread constraints (missing required label)"
        );
    }

    #[test]
    fn filter_multiple_constraints() {
        let foo = exists("foo");
        let bar = exists("bar");
        let cases: Vec<(&str, Arc<PodInfo>, PodsPerNode, Want)> = vec![
            (
                // zone: 3/3 → all fit; node: 2/1/0/3 → only node-x.
                "two constraints on zone and node, spreads = [3/3, 2/1/0/3]",
                incoming(
                    &[("foo", "")],
                    vec![
                        constraint(1, "zone", DO_NOT_SCHEDULE, foo.clone()),
                        constraint(1, "node", DO_NOT_SCHEDULE, foo.clone()),
                    ],
                    json!({}),
                ),
                vec![foo_pods(2, "a"), foo_pods(1, "b"), vec![], foo_pods(3, "y")],
                vec![
                    ("node-a", UNS),
                    ("node-b", UNS),
                    ("node-x", OK),
                    ("node-y", UNS),
                ],
            ),
            (
                // zone: 3/4 → zone1 fits; node: 2/1/0/4 → only node-x; intersection: none.
                "two constraints on zone and node, spreads = [3/4, 2/1/0/4]",
                incoming(
                    &[("foo", "")],
                    vec![
                        constraint(1, "zone", DO_NOT_SCHEDULE, foo.clone()),
                        constraint(1, "node", DO_NOT_SCHEDULE, foo.clone()),
                    ],
                    json!({}),
                ),
                vec![foo_pods(2, "a"), foo_pods(1, "b"), vec![], foo_pods(4, "y")],
                vec![
                    ("node-a", UNS),
                    ("node-b", UNS),
                    ("node-x", UNS),
                    ("node-y", UNS),
                ],
            ),
            (
                // zone (foo): 1/0 → zone2; node (bar): 0/1/0/0 → not node-b.
                "constraints hold different labelSelectors, spreads = [1/0, 0/1/0/0]",
                incoming(
                    &[("foo", ""), ("bar", "")],
                    vec![
                        constraint(1, "zone", DO_NOT_SCHEDULE, foo.clone()),
                        constraint(1, "node", DO_NOT_SCHEDULE, bar.clone()),
                    ],
                    json!({}),
                ),
                vec![foo_pods(1, "a"), vec![pod("b1", &[("bar", "")], json!({}))]],
                vec![
                    ("node-a", UNS),
                    ("node-b", UNS),
                    ("node-x", OK),
                    ("node-y", OK),
                ],
            ),
        ];
        for (name, pod, pods, want) in cases {
            let got = filter_all(&plugin(), &pod, &cluster(four_nodes(), &pods));
            assert_eq!(codes(&got), want, "{name}");
        }
    }

    #[test]
    fn add_and_remove_pod_update_counts() {
        let foo = exists("foo");
        let preemptor = incoming(
            &[("foo", "")],
            vec![
                constraint(1, "zone", DO_NOT_SCHEDULE, foo.clone()),
                constraint(1, "node", DO_NOT_SCHEDULE, foo.clone()),
            ],
            json!({}),
        );
        let snap = cluster(
            vec![
                node("node-a", &[("zone", "zone1"), ("node", "node-a")]),
                node("node-b", &[("zone", "zone1"), ("node", "node-b")]),
                node("node-x", &[("zone", "zone2"), ("node", "node-x")]),
            ],
            &[vec![], foo_pods(2, "b"), foo_pods(1, "x")],
        );
        let p = plugin();
        let mut state = CycleState::new();
        let (_, status) = p.pre_filter(&mut state, &preemptor, &snap);
        assert!(status.is_success());
        assert!(p.has_extensions());

        let added = foo_pod("a1");
        let status = p.add_pod(&mut state, &preemptor, &added, &snap.nodes[0], &snap);
        assert!(status.is_success());
        let s = state.read::<PreFilterState>(PRE_FILTER_STATE_KEY).unwrap();
        assert_eq!(
            s.tp_value_to_match_num,
            vec![
                counts(&[("zone1", 3), ("zone2", 1)]),
                counts(&[("node-a", 1), ("node-b", 2), ("node-x", 1)]),
            ]
        );
        assert_eq!(min_paths(s), vec![1, 1]);

        // A dry run on a clone leaves the original alone.
        let mut dry = state.clone();
        let removed = snap.nodes[2].pods[0].clone();
        let status = p.remove_pod(&mut dry, &preemptor, &removed, &snap.nodes[2], &snap);
        assert!(status.is_success());
        let s = dry.read::<PreFilterState>(PRE_FILTER_STATE_KEY).unwrap();
        assert_eq!(
            s.tp_value_to_match_num[0],
            counts(&[("zone1", 3), ("zone2", 0)])
        );
        assert_eq!(min_paths(s), vec![0, 0]);
        assert_eq!(
            min_paths(state.read::<PreFilterState>(PRE_FILTER_STATE_KEY).unwrap()),
            vec![1, 1]
        );

        // Pods of other namespaces, non-matching pods and nodes missing a
        // topology key change nothing.
        let before = state
            .read::<PreFilterState>(PRE_FILTER_STATE_KEY)
            .unwrap()
            .tp_value_to_match_num
            .clone();
        let other_ns = pod_in("ns1", "o", &[("foo", "")], json!({}));
        p.add_pod(&mut state, &preemptor, &other_ns, &snap.nodes[0], &snap);
        let unmatched = pod("u", &[("bar", "")], json!({}));
        p.add_pod(&mut state, &preemptor, &unmatched, &snap.nodes[0], &snap);
        let keyless = info(node("node-z", &[("zone", "zone3")]), &[]);
        p.add_pod(&mut state, &preemptor, &foo_pod("z"), &keyless, &snap);
        assert_eq!(
            state
                .read::<PreFilterState>(PRE_FILTER_STATE_KEY)
                .unwrap()
                .tp_value_to_match_num,
            before
        );
    }

    #[test]
    fn add_pod_honors_inclusion_policies() {
        let preemptor = incoming(
            &[("foo", "")],
            vec![constraint(1, "zone", DO_NOT_SCHEDULE, exists("foo"))],
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "foo", "operator": "NotIn", "values": ["bar"]}]}]}}}}),
        );
        let snap = cluster(
            vec![
                node("node-a", &[("zone", "zone1"), ("foo", "bar")]),
                node("node-b", &[("zone", "zone2"), ("foo", "")]),
            ],
            &[foo_pods(1, "a"), foo_pods(1, "b")],
        );
        let p = plugin();
        let mut state = CycleState::new();
        p.pre_filter(&mut state, &preemptor, &snap);
        p.add_pod(
            &mut state,
            &preemptor,
            &foo_pod("a2"),
            &snap.nodes[0],
            &snap,
        );
        let s = state.read::<PreFilterState>(PRE_FILTER_STATE_KEY).unwrap();
        assert_eq!(s.tp_value_to_match_num, vec![counts(&[("zone2", 1)])]);
        assert_eq!(s.critical_paths[0].0[1].match_num, UNSET_MATCH_NUM);
    }

    #[test]
    fn filter_without_pre_filter_state_is_an_error() {
        let p = incoming(
            &[("foo", "")],
            vec![constraint(1, "zone", DO_NOT_SCHEDULE, exists("foo"))],
            json!({}),
        );
        let n = info(node("node-a", &[("zone", "zone1")]), &[]);
        let status = plugin().filter(&CycleState::new(), &p, &n);
        assert_eq!(status.code, Code::Error);
    }
}
