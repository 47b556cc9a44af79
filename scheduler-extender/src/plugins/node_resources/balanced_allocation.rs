//! NodeResourcesBalancedAllocation: favours nodes whose resource usage
//! becomes more even with the pod placed there.
//!
//! Balance is (1 - standard deviation of requested/allocatable fractions) *
//! 100 over the configured resources. As of v1.36 upstream scores the change
//! in balance (with the pod vs without it), mapped into [50, 100] with 75 for
//! "no change", rather than the balance after placement alone. Plain requests
//! are used (no scoring defaults), and pods requesting none of the resources
//! are not scored at all, so best-effort pods do not pile onto one node.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::scoring::{self, ResourceAllocation, ResourceSpec};
use crate::framework::{
    CycleState, NodeInfo, Plugin, PodInfo, PreScorePlugin, ScorePlugin, Snapshot, Status,
};
use crate::plugins::parse_args;

pub const NAME: &str = "NodeResourcesBalancedAllocation";

const PRE_SCORE_KEY: &str = "PreScoreNodeResourcesBalancedAllocation";

/// `NodeResourcesBalancedAllocationArgs` as written in a KubeSchedulerConfiguration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeResourcesBalancedAllocationArgs {
    /// Resources to balance; cpu and memory when empty. Weights must be 1
    /// (unset means 1): balance has no notion of weight.
    #[serde(default)]
    pub resources: Vec<ResourceSpec>,
}

impl NodeResourcesBalancedAllocationArgs {
    /// Upstream's ValidateNodeResourcesBalancedAllocationArgs, after v1 defaulting.
    fn validate(&self) -> Vec<String> {
        let mut errors = vec![];
        let mut seen = HashSet::new();
        for (i, r) in self.resources.iter().enumerate() {
            if !seen.insert(r.name.as_str()) {
                errors.push(format!(
                    "resources[{i}].name: Duplicate value: {:?}",
                    r.name
                ));
            }
            if r.weight != 1 {
                errors.push(format!(
                    "resources[{i}].weight: Invalid value: {}: must be 1",
                    r.weight
                ));
            }
        }
        errors
    }
}

/// The pod's request of each balanced resource, in `resources` order.
#[derive(Clone, Debug)]
struct PreScoreState(Vec<i64>);

pub struct BalancedAllocation {
    scorer: ResourceAllocation,
}

impl BalancedAllocation {
    pub fn from_args(args: NodeResourcesBalancedAllocationArgs) -> Result<Self, String> {
        let args = NodeResourcesBalancedAllocationArgs {
            resources: scoring::defaulted_resources(args.resources),
        };
        let errors = args.validate();
        if !errors.is_empty() {
            return Err(format!("pluginConfig[{NAME}].args: {}", errors.join("; ")));
        }
        Ok(Self {
            scorer: ResourceAllocation::new(true, args.resources),
        })
    }
}

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreScorePlugin for BalancedAllocation {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        _snapshot: &Snapshot,
    ) -> Status {
        let requests = self.scorer.pod_requests(pod);
        // A pod requesting nothing leaves every node's balance unchanged but
        // would still favour already-balanced (often busy) nodes, piling
        // best-effort pods onto them (kubernetes#129138).
        if scoring::requests_nothing(&requests) {
            return Status::skip();
        }
        state.write(PRE_SCORE_KEY, PreScoreState(requests));
        Status::success()
    }
}

impl ScorePlugin for BalancedAllocation {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let requests = match state.read::<PreScoreState>(PRE_SCORE_KEY) {
            Some(PreScoreState(r)) => Cow::Borrowed(r),
            None => {
                let r = self.scorer.pod_requests(pod);
                if scoring::requests_nothing(&r) {
                    return Ok(0);
                }
                Cow::Owned(r)
            }
        };
        Ok(scoring::balanced_allocation(
            &self.scorer.allocation(node, &requests),
        ))
    }
}

pub fn new(args: Option<&Value>) -> Result<Arc<dyn Plugin>, String> {
    let args: NodeResourcesBalancedAllocationArgs = parse_args(NAME, args)?;
    Ok(Arc::new(BalancedAllocation::from_args(args)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::framework::testing::{node_info, pod, snapshot};
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;

    const EXTENDED: &str = "example.com/aaa";

    fn node_with(name: &str, allocatable: Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"allocatable": allocatable},
        }))
        .unwrap()
    }

    fn cpu_mem_node(name: &str, cpu: &str, mem: &str, existing: &[Arc<PodInfo>]) -> NodeInfo {
        node_info(
            node_with(name, json!({"cpu": cpu, "memory": mem, "pods": "110"})),
            existing,
        )
    }

    /// A pod whose containers request each of `requests` (ResourceLists).
    fn pod_req(name: &str, requests: &[Value]) -> Arc<PodInfo> {
        let containers: Vec<Value> = requests
            .iter()
            .map(|r| json!({"name": "c", "resources": {"requests": r}}))
            .collect();
        pod(name, &[], json!({"containers": containers}))
    }

    fn plugin(args: Value) -> BalancedAllocation {
        BalancedAllocation::from_args(serde_json::from_value(args).unwrap()).unwrap()
    }

    /// PreScore then Score on every node; `None` when PreScore skips.
    fn scores(pl: &BalancedAllocation, p: &PodInfo, nodes: &[NodeInfo]) -> Option<Vec<i64>> {
        let mut state = CycleState::new();
        let arcs: Vec<Arc<NodeInfo>> = nodes.iter().cloned().map(Arc::new).collect();
        let status = pl.pre_score(&mut state, p, &arcs, &snapshot(nodes.to_vec(), &[]));
        if status.is_skip() {
            return None;
        }
        assert!(status.is_success(), "{status}");
        Some(
            nodes
                .iter()
                .map(|n| pl.score(&state, p, n).unwrap())
                .collect(),
        )
    }

    #[test]
    fn balanced_scores() {
        let cpu_mem = |cpu: &str, mem: &str| json!({"cpu": cpu, "memory": mem});
        struct Case {
            name: &'static str,
            pod: Arc<PodInfo>,
            nodes: Vec<NodeInfo>,
            args: Value,
            want: Option<Vec<i64>>,
        }
        let cases = vec![
            Case {
                name: "best-effort pod is not scored",
                pod: pod("p", &[], json!({"containers": [{"name": "c"}]})),
                nodes: vec![cpu_mem_node("n1", "4", "10000", &[])],
                args: json!({}),
                want: None,
            },
            Case {
                name: "requests outside the balanced resources count as best-effort",
                pod: pod_req("p", &[json!({"ephemeral-storage": "1Gi"})]),
                nodes: vec![cpu_mem_node("n1", "4", "10000", &[])],
                args: json!({}),
                want: None,
            },
            Case {
                // n1: with the pod cpu 0.75 / memory 0.5 → 87, empty → 100:
                // 50 + (50 + 87 - 100)/2 = 68. n2: 0.5 / 0.5 → no change → 75.
                name: "nothing scheduled, resources requested, differently sized nodes",
                pod: pod_req("p", &[cpu_mem("1", "2000"), cpu_mem("2", "3000")]),
                nodes: vec![
                    cpu_mem_node("n1", "4", "10000", &[]),
                    cpu_mem_node("n2", "6", "10000", &[]),
                ],
                args: json!({}),
                want: Some(vec![68, 75]),
            },
            Case {
                // n1: 0.5/0 (75) → 1/0 (50): 50 + (50 + 50 - 75)/2 = 62.
                // n2: 0.5/0.5 (100) → 1/0.5 (75): 50 + (50 + 75 - 100)/2 = 62.
                name: "cpu-only pod on cpu-loaded and balanced nodes",
                pod: pod_req("p", &[json!({"cpu": "3"})]),
                nodes: vec![
                    cpu_mem_node(
                        "n1",
                        "6",
                        "10000",
                        &[
                            pod_req("a", &[json!({"cpu": "1"})]),
                            pod_req("b", &[json!({"cpu": "2"})]),
                        ],
                    ),
                    cpu_mem_node(
                        "n2",
                        "6",
                        "10000",
                        &[pod_req("a", &[cpu_mem("1", "2000"), cpu_mem("2", "3000")])],
                    ),
                ],
                args: json!({}),
                want: Some(vec![62, 62]),
            },
            Case {
                // Without the pod 0.6/0 (70); with it 0.6/0.5 (95): the pod
                // evens the node out, 50 + (50 + 95 - 70)/2 = 87; an empty
                // node gets 0/0.5 (75) from 100: 50 + (50 + 75 - 100)/2 = 62.
                name: "a pod that improves balance scores higher",
                pod: pod_req("p", &[json!({"memory": "10000"})]),
                nodes: vec![
                    cpu_mem_node("n1", "10", "20000", &[pod_req("a", &[json!({"cpu": "6"})])]),
                    cpu_mem_node("n2", "10", "20000", &[]),
                ],
                args: json!({}),
                want: Some(vec![87, 62]),
            },
            Case {
                // Existing pods without requests add nothing (plain requests,
                // no scoring defaults): as the empty node, 0.5/0.5 → 75.
                name: "pods without requests do not count",
                pod: pod_req("p", &[cpu_mem("2", "5000")]),
                nodes: vec![cpu_mem_node(
                    "n1",
                    "4",
                    "10000",
                    &[pod("a", &[], json!({"containers": [{"name": "c"}]}))],
                )],
                args: json!({}),
                want: Some(vec![75]),
            },
            Case {
                // Fractions are capped at 1: with the pod cpu 8/4 → 1 and
                // memory 0 (50), without 0.5/0 (75): 50 + (50 + 50 - 75)/2 = 62.
                name: "requests above capacity are capped",
                pod: pod_req("p", &[json!({"cpu": "6"})]),
                nodes: vec![cpu_mem_node(
                    "n1",
                    "4",
                    "10000",
                    &[pod_req("a", &[json!({"cpu": "2"})])],
                )],
                args: json!({}),
                want: Some(vec![62]),
            },
            Case {
                // n1: 0.5, 0.5, 1 → std sqrt(1/18) → 76 vs 100 when empty:
                // 50 + (50 + 76 - 100)/2 = 63. n2 lacks the extended resource,
                // so only cpu/memory count: no change → 75.
                name: "three resources use the full standard deviation",
                pod: pod_req("p", &[json!({"cpu": "2", "memory": "5000", EXTENDED: "4"})]),
                nodes: vec![
                    node_info(
                        node_with(
                            "n1",
                            json!({"cpu": "4", "memory": "10000", "pods": "110", EXTENDED: "4"}),
                        ),
                        &[],
                    ),
                    cpu_mem_node("n2", "4", "10000", &[]),
                ],
                args: json!({"resources": [{"name": "cpu"}, {"name": "memory"}, {"name": EXTENDED}]}),
                want: Some(vec![63, 75]),
            },
            Case {
                // The extended resource is not requested, so it is skipped:
                // cpu 0.5 / memory 0.5 on both nodes.
                name: "unrequested extended resources are not balanced",
                pod: pod_req("p", &[cpu_mem("2", "5000")]),
                nodes: vec![node_info(
                    node_with(
                        "n1",
                        json!({"cpu": "4", "memory": "10000", "pods": "110", EXTENDED: "4"}),
                    ),
                    &[],
                )],
                args: json!({"resources": [{"name": "cpu", "weight": 1}, {"name": "memory", "weight": 1},
                    {"name": EXTENDED, "weight": 1}]}),
                want: Some(vec![75]),
            },
            Case {
                // A single resource is always balanced: 100 with and without.
                name: "single resource",
                pod: pod_req("p", &[json!({"cpu": "1"})]),
                nodes: vec![cpu_mem_node("n1", "4", "10000", &[])],
                args: json!({"resources": [{"name": "cpu"}]}),
                want: Some(vec![75]),
            },
        ];
        for c in cases {
            let pl = plugin(c.args);
            assert_eq!(scores(&pl, &c.pod, &c.nodes), c.want, "{}", c.name);
        }
    }

    #[test]
    fn pre_score_skip_sets_the_status_code() {
        let pl = plugin(json!({}));
        let mut state = CycleState::new();
        let status = pl.pre_score(&mut state, &pod_req("p", &[]), &[], &Snapshot::default());
        assert_eq!(status.code, Code::Skip);
    }

    #[test]
    fn score_without_pre_score() {
        let pl = plugin(json!({}));
        let node = cpu_mem_node("n1", "4", "10000", &[]);
        let state = CycleState::new();
        assert_eq!(pl.score(&state, &pod_req("p", &[]), &node), Ok(0));
        let p = pod_req("p", &[json!({"cpu": "3", "memory": "5000"})]);
        assert_eq!(pl.score(&state, &p, &node), Ok(68));
    }

    #[test]
    fn args_defaults_and_validation() {
        let pl = BalancedAllocation::from_args(Default::default()).unwrap();
        assert_eq!(pl.scorer.resources, scoring::default_resources());
        assert!(pl.scorer.use_requested);

        for (args, want) in [
            (
                json!({"resources": [{"name": "cpu", "weight": 2}]}),
                "resources[0].weight: Invalid value: 2: must be 1",
            ),
            (
                json!({"resources": [{"name": "cpu"}, {"name": "cpu"}]}),
                "resources[1].name: Duplicate value: \"cpu\"",
            ),
            (json!({"resource": []}), "unknown field `resource`"),
        ] {
            let err = match new(Some(&args)) {
                Ok(_) => panic!("{args} should be rejected"),
                Err(e) => e,
            };
            assert!(err.contains(want), "{args}: {err}");
        }
        assert!(new(Some(&json!({"resources": [{"name": "cpu", "weight": 1}]}))).is_ok());
    }
}
