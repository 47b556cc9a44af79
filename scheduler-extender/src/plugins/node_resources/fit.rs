//! NodeResourcesFit: a node must have room for the pod's requests (and one
//! more pod); feasible nodes are scored by the configured strategy —
//! LeastAllocated (default), MostAllocated or RequestedToCapacityRatio.
//!
//! The pod's requests are `PodInfo.requests` (init containers, sidecars,
//! pod-level resources and overhead already folded in, as upstream's
//! `resource.PodRequests`). Not modelled: extended resources backed by DRA
//! device classes (the DRAExtendedResource delegation), which needs
//! DeviceClass objects this scheduler does not track.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::scoring::{
    self, BrokenLinear, MAX_CUSTOM_PRIORITY_SCORE, ResourceAllocation, ResourceSpec,
};
use crate::framework::resources::{CPU, EPHEMERAL_STORAGE, MEMORY, PODS, Resource};
use crate::framework::{
    Code, CycleState, FilterPlugin, MAX_NODE_SCORE, NodeInfo, Plugin, PodInfo, PreFilterPlugin,
    PreFilterResult, PreScorePlugin, ScorePlugin, Snapshot, Status,
};
use crate::plugins::parse_args;

pub const NAME: &str = "NodeResourcesFit";

/// Cycle-state keys, as upstream names them.
const PRE_FILTER_KEY: &str = "PreFilterNodeResourcesFit";
const PRE_SCORE_KEY: &str = "PreScoreNodeResourcesFit";

pub const LEAST_ALLOCATED: &str = "LeastAllocated";
pub const MOST_ALLOCATED: &str = "MostAllocated";
pub const REQUESTED_TO_CAPACITY_RATIO: &str = "RequestedToCapacityRatio";

/// `NodeResourcesFitArgs` as written in a KubeSchedulerConfiguration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeResourcesFitArgs {
    /// Extended resources Filter does not check.
    #[serde(default)]
    pub ignored_resources: Vec<String>,
    /// Extended-resource groups (the part before '/') Filter does not check.
    #[serde(default)]
    pub ignored_resource_groups: Vec<String>,
    pub scoring_strategy: Option<ScoringStrategy>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScoringStrategy {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub resources: Vec<ResourceSpec>,
    pub requested_to_capacity_ratio: Option<RequestedToCapacityRatioParam>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestedToCapacityRatioParam {
    #[serde(default)]
    pub shape: Vec<UtilizationShapePoint>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UtilizationShapePoint {
    /// Percent, 0..=100.
    #[serde(default)]
    pub utilization: i32,
    /// 0..=10, scaled to 0..=100 for scoring.
    #[serde(default)]
    pub score: i32,
}

impl NodeResourcesFitArgs {
    /// The v1 defaulting: LeastAllocated over cpu and memory when no strategy
    /// is given; cpu+memory when `resources` is empty; weight 0 means 1.
    fn defaulted(mut self) -> Self {
        let mut strategy = self
            .scoring_strategy
            .take()
            .unwrap_or_else(|| ScoringStrategy {
                type_: LEAST_ALLOCATED.to_string(),
                ..Default::default()
            });
        strategy.resources = scoring::defaulted_resources(std::mem::take(&mut strategy.resources));
        self.scoring_strategy = Some(strategy);
        self
    }

    /// Upstream's ValidateNodeResourcesFitArgs, with its field paths.
    fn validate(&self) -> Vec<String> {
        let mut errors = vec![];
        for (i, name) in self.ignored_resources.iter().enumerate() {
            for e in scoring::qualified_name_errors(name) {
                errors.push(format!(
                    "ignoredResources[{i}]: Invalid value: {name:?}: {e}"
                ));
            }
        }
        for (i, group) in self.ignored_resource_groups.iter().enumerate() {
            if group.contains('/') {
                errors.push(format!(
                    "ignoredResourceGroups[{i}]: Invalid value: {group:?}: resource group name can't contain '/'"
                ));
            }
            for e in scoring::qualified_name_errors(group) {
                errors.push(format!(
                    "ignoredResourceGroups[{i}]: Invalid value: {group:?}: {e}"
                ));
            }
        }
        if let Some(s) = &self.scoring_strategy {
            if ![LEAST_ALLOCATED, MOST_ALLOCATED, REQUESTED_TO_CAPACITY_RATIO]
                .contains(&s.type_.as_str())
            {
                errors.push(format!(
                    "scoringStrategy.type: Unsupported value: {:?}: supported values: \"{LEAST_ALLOCATED}\", \"{MOST_ALLOCATED}\", \"{REQUESTED_TO_CAPACITY_RATIO}\"",
                    s.type_
                ));
            }
            for (i, r) in s.resources.iter().enumerate() {
                if r.weight <= 0 || r.weight > 100 {
                    errors.push(format!(
                        "scoringStrategy.resources[{i}].weight: Invalid value: {}: resource weight of {} not in valid range (0, 100]",
                        r.weight, r.name
                    ));
                }
            }
            match &s.requested_to_capacity_ratio {
                Some(param) => errors.extend(validate_shape(&param.shape)),
                // Upstream dereferences the missing shape and crashes; an
                // error naming the field is the useful equivalent.
                None if s.type_ == REQUESTED_TO_CAPACITY_RATIO => errors.push(
                    "scoringStrategy.requestedToCapacityRatio: Required value: a shape is required for the RequestedToCapacityRatio strategy"
                        .to_string(),
                ),
                None => {}
            }
        }
        errors
    }
}

/// Upstream's validateFunctionShape; it reports under `scoringStrategy.shape`.
fn validate_shape(shape: &[UtilizationShapePoint]) -> Vec<String> {
    if shape.is_empty() {
        return vec![
            "scoringStrategy.shape: Required value: at least one point must be specified"
                .to_string(),
        ];
    }
    let mut errors = vec![];
    if let Some(i) = (1..shape.len()).find(|&i| shape[i - 1].utilization >= shape[i].utilization) {
        errors.push(format!(
            "scoringStrategy.shape[{i}].utilization: Invalid value: {}: values must be sorted in increasing order",
            shape[i].utilization
        ));
    }
    for (i, p) in shape.iter().enumerate() {
        if !(0..=100).contains(&p.utilization) {
            errors.push(format!(
                "scoringStrategy.shape[{i}].utilization: Invalid value: {}: not in valid range [0, 100]",
                p.utilization
            ));
        }
        if !(0..=MAX_CUSTOM_PRIORITY_SCORE as i32).contains(&p.score) {
            errors.push(format!(
                "scoringStrategy.shape[{i}].score: Invalid value: {}: not in valid range [0, {MAX_CUSTOM_PRIORITY_SCORE}]",
                p.score
            ));
        }
    }
    errors
}

/// One resource the node lacks room for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InsufficientResource {
    pub resource_name: String,
    pub reason: String,
    pub requested: i64,
    pub used: i64,
    pub capacity: i64,
    /// The request exceeds the node's whole allocatable, so evicting pods
    /// (preemption) cannot make room.
    pub unresolvable: bool,
}

/// What `pod_request` lacks on `node`: pod count, cpu, memory,
/// ephemeral-storage, then every scalar resource except the ignored extended
/// ones. Zero requests are never checked.
pub fn fits_request(
    pod_request: &Resource,
    node: &NodeInfo,
    ignored_resources: &HashSet<String>,
    ignored_resource_groups: &HashSet<String>,
) -> Vec<InsufficientResource> {
    let mut out = vec![];
    let allocatable = &node.allocatable;
    let requested = &node.requested;

    let pods = node.pods.len() as i64;
    if pods + 1 > allocatable.allowed_pod_number {
        out.push(InsufficientResource {
            resource_name: PODS.to_string(),
            reason: "Too many pods".to_string(),
            requested: 1,
            used: pods,
            capacity: allocatable.allowed_pod_number,
            unresolvable: false,
        });
    }

    let mut check = |name: &str, reason: String, request: i64, used: i64, capacity: i64| {
        if request > 0 && request > capacity.saturating_sub(used) {
            out.push(InsufficientResource {
                resource_name: name.to_string(),
                reason,
                requested: request,
                used,
                capacity,
                unresolvable: request > capacity,
            });
        }
    };
    check(
        CPU,
        "Insufficient cpu".to_string(),
        pod_request.milli_cpu,
        requested.milli_cpu,
        allocatable.milli_cpu,
    );
    check(
        MEMORY,
        "Insufficient memory".to_string(),
        pod_request.memory,
        requested.memory,
        allocatable.memory,
    );
    check(
        EPHEMERAL_STORAGE,
        "Insufficient ephemeral-storage".to_string(),
        pod_request.ephemeral_storage,
        requested.ephemeral_storage,
        allocatable.ephemeral_storage,
    );
    for (name, quantity) in &pod_request.scalar {
        // Names upstream does not account as scalar resources never reach
        // its request vector, so they are never checked.
        if *quantity == 0 || !scoring::is_scalar_resource_name(name) {
            continue;
        }
        if scoring::is_extended_resource_name(name) {
            let group = name.split('/').next().unwrap_or_default();
            if ignored_resources.contains(name) || ignored_resource_groups.contains(group) {
                continue;
            }
        }
        check(
            name,
            format!("Insufficient {name}"),
            *quantity,
            requested.get(name),
            allocatable.get(name),
        );
    }
    out
}

#[derive(Clone, Debug)]
enum Strategy {
    LeastAllocated,
    MostAllocated,
    RequestedToCapacityRatio(BrokenLinear),
}

/// The pod's requests, computed once per cycle for Filter.
#[derive(Clone, Debug)]
struct PreFilterState(Resource);

/// The pod's request of each scored resource, in `resources` order.
#[derive(Clone, Debug)]
struct PreScoreState(Vec<i64>);

pub struct Fit {
    ignored_resources: HashSet<String>,
    ignored_resource_groups: HashSet<String>,
    strategy: Strategy,
    scorer: ResourceAllocation,
}

impl Fit {
    pub fn from_args(args: NodeResourcesFitArgs) -> Result<Self, String> {
        let args = args.defaulted();
        let errors = args.validate();
        if !errors.is_empty() {
            return Err(format!("pluginConfig[{NAME}].args: {}", errors.join("; ")));
        }
        let strategy_args = args.scoring_strategy.unwrap_or_default();
        let strategy = match strategy_args.type_.as_str() {
            MOST_ALLOCATED => Strategy::MostAllocated,
            REQUESTED_TO_CAPACITY_RATIO => {
                let shape = strategy_args
                    .requested_to_capacity_ratio
                    .map(|r| r.shape)
                    .unwrap_or_default();
                Strategy::RequestedToCapacityRatio(BrokenLinear(
                    shape
                        .iter()
                        .map(|p| {
                            (
                                i64::from(p.utilization),
                                i64::from(p.score) * (MAX_NODE_SCORE / MAX_CUSTOM_PRIORITY_SCORE),
                            )
                        })
                        .collect(),
                ))
            }
            _ => Strategy::LeastAllocated,
        };
        Ok(Self {
            ignored_resources: args.ignored_resources.into_iter().collect(),
            ignored_resource_groups: args.ignored_resource_groups.into_iter().collect(),
            strategy,
            scorer: ResourceAllocation::new(false, strategy_args.resources),
        })
    }
}

impl Plugin for Fit {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for Fit {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _snapshot: &Snapshot,
    ) -> (PreFilterResult, Status) {
        state.write(PRE_FILTER_KEY, PreFilterState(pod.requests.clone()));
        (PreFilterResult::default(), Status::success())
    }
}

impl FilterPlugin for Fit {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(PreFilterState(request)) = state.read::<PreFilterState>(PRE_FILTER_KEY) else {
            return Status::error(format!(
                "error reading {PRE_FILTER_KEY:?} from cycleState: not found"
            ));
        };
        let insufficient = fits_request(
            request,
            node,
            &self.ignored_resources,
            &self.ignored_resource_groups,
        );
        if insufficient.is_empty() {
            return Status::success();
        }
        // One resource the node could never offer makes preemption futile.
        let code = if insufficient.iter().any(|r| r.unresolvable) {
            Code::UnschedulableAndUnresolvable
        } else {
            Code::Unschedulable
        };
        Status::new(code, insufficient.into_iter().map(|r| r.reason).collect())
    }
}

impl PreScorePlugin for Fit {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        _snapshot: &Snapshot,
    ) -> Status {
        state.write(PRE_SCORE_KEY, PreScoreState(self.scorer.pod_requests(pod)));
        Status::success()
    }
}

impl ScorePlugin for Fit {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let pod_requests = match state.read::<PreScoreState>(PRE_SCORE_KEY) {
            Some(PreScoreState(r)) => Cow::Borrowed(r),
            None => Cow::Owned(self.scorer.pod_requests(pod)),
        };
        let allocation = self.scorer.allocation(node, &pod_requests);
        let resources = &self.scorer.resources;
        Ok(match &self.strategy {
            Strategy::LeastAllocated => scoring::least_allocated(resources, &allocation),
            Strategy::MostAllocated => scoring::most_allocated(resources, &allocation),
            Strategy::RequestedToCapacityRatio(shape) => {
                scoring::requested_to_capacity_ratio(resources, shape, &allocation)
            }
        })
    }
}

pub fn new(args: Option<&Value>) -> Result<Arc<dyn Plugin>, String> {
    let args: NodeResourcesFitArgs = parse_args(NAME, args)?;
    Ok(Arc::new(Fit::from_args(args)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testing::{node_info, pod, snapshot};
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;

    const EXTENDED_A: &str = "example.com/aaa";
    const EXTENDED_B: &str = "example.com/bbb";
    const HUGEPAGE_A: &str = "hugepages-2Mi";
    const KUBERNETES_IO_A: &str = "kubernetes.io/something";

    /// A node with exactly `allocatable` (quantities as strings).
    fn node_with(name: &str, allocatable: Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"allocatable": allocatable},
        }))
        .unwrap()
    }

    /// A container requesting `requests` (a ResourceList as JSON).
    fn ctr(requests: Value) -> Value {
        json!({"name": "c", "resources": {"requests": requests}})
    }

    /// A pod whose containers request each of `requests`; `[]` makes a pod
    /// without containers (no scoring defaults apply to it).
    fn pod_req(name: &str, requests: &[Value]) -> Arc<PodInfo> {
        let containers: Vec<Value> = requests.iter().cloned().map(ctr).collect();
        pod(name, &[], json!({"containers": containers}))
    }

    /// Upstream's test node: 10m cpu, 20 bytes memory, 32 pods, 5 of
    /// example.com/aaa, 20 ephemeral-storage, 5 hugepages-2Mi.
    fn test_node() -> Node {
        node_with(
            "n",
            json!({"cpu": "10m", "memory": "20", "pods": "32", EXTENDED_A: "5",
                   "ephemeral-storage": "20", HUGEPAGE_A: "5"}),
        )
    }

    fn run_filter(plugin: &Fit, p: &PodInfo, node: &NodeInfo) -> Status {
        let mut state = CycleState::new();
        let snap = snapshot(vec![node.clone()], &[]);
        let (_, status) = plugin.pre_filter(&mut state, p, &snap);
        assert!(status.is_success());
        plugin.filter(&state, p, node)
    }

    fn fit(args: Value) -> Fit {
        Fit::from_args(serde_json::from_value(args).unwrap()).unwrap()
    }

    #[test]
    fn filter_enough_requests() {
        let cpu_mem = |cpu: &str, mem: &str| json!({"cpu": cpu, "memory": mem});
        struct Case {
            name: &'static str,
            pod: Arc<PodInfo>,
            existing: Vec<Arc<PodInfo>>,
            args: Value,
            code: Code,
            reasons: Vec<&'static str>,
        }
        let used = |cpu: &str, mem: &str| vec![pod_req("used", &[cpu_mem(cpu, mem)])];
        let mut init = pod("p", &[], json!({"containers": [ctr(cpu_mem("1m", "1"))]}))
            .pod
            .as_ref()
            .clone();
        init.spec.as_mut().unwrap().init_containers = Some(vec![
            serde_json::from_value(ctr(cpu_mem("3m", "1"))).unwrap(),
        ]);
        let init_pod = Arc::new(PodInfo::new(Arc::new(init)));
        let cases = vec![
            Case {
                name: "no resources requested always fits",
                pod: pod_req("p", &[]),
                existing: used("10m", "20"),
                args: json!({}),
                code: Code::Success,
                reasons: vec![],
            },
            Case {
                name: "too many resources fails",
                pod: pod_req("p", &[cpu_mem("1m", "1")]),
                existing: used("10m", "20"),
                args: json!({}),
                code: Code::Unschedulable,
                reasons: vec!["Insufficient cpu", "Insufficient memory"],
            },
            Case {
                name: "too many resources fails due to init container cpu",
                pod: init_pod.clone(),
                existing: used("8m", "19"),
                args: json!({}),
                code: Code::Unschedulable,
                reasons: vec!["Insufficient cpu"],
            },
            Case {
                name: "init container fits when the node has room for its peak",
                pod: init_pod,
                existing: used("7m", "19"),
                args: json!({}),
                code: Code::Success,
                reasons: vec![],
            },
            Case {
                name: "one resource memory fits",
                pod: pod_req("p", &[cpu_mem("1m", "1")]),
                existing: used("9m", "19"),
                args: json!({}),
                code: Code::Success,
                reasons: vec![],
            },
            Case {
                name: "request above the whole allocatable is unresolvable",
                pod: pod_req("p", &[cpu_mem("11m", "1")]),
                existing: vec![],
                args: json!({}),
                code: Code::UnschedulableAndUnresolvable,
                reasons: vec!["Insufficient cpu"],
            },
            Case {
                name: "one unresolvable resource makes the whole status unresolvable",
                pod: pod_req("p", &[cpu_mem("2m", "21")]),
                existing: used("9m", "0"),
                args: json!({}),
                code: Code::UnschedulableAndUnresolvable,
                reasons: vec!["Insufficient cpu", "Insufficient memory"],
            },
            Case {
                name: "ephemeral-storage enforced",
                pod: pod_req("p", &[json!({"ephemeral-storage": "5"})]),
                existing: vec![pod_req("used", &[json!({"ephemeral-storage": "16"})])],
                args: json!({}),
                code: Code::Unschedulable,
                reasons: vec!["Insufficient ephemeral-storage"],
            },
            Case {
                name: "extended resource fits",
                pod: pod_req("p", &[json!({EXTENDED_A: "1"})]),
                existing: vec![pod_req("used", &[json!({EXTENDED_A: "4"})])],
                args: json!({}),
                code: Code::Success,
                reasons: vec![],
            },
            Case {
                name: "extended resource allocatable enforced",
                pod: pod_req("p", &[json!({EXTENDED_A: "1"})]),
                existing: vec![pod_req("used", &[json!({EXTENDED_A: "5"})])],
                args: json!({}),
                code: Code::Unschedulable,
                reasons: vec!["Insufficient example.com/aaa"],
            },
            Case {
                name: "extended resource capacity enforced",
                pod: pod_req("p", &[json!({EXTENDED_A: "10"})]),
                existing: vec![],
                args: json!({}),
                code: Code::UnschedulableAndUnresolvable,
                reasons: vec!["Insufficient example.com/aaa"],
            },
            Case {
                name: "extended resource unknown to the node",
                pod: pod_req("p", &[json!({EXTENDED_B: "1"})]),
                existing: vec![],
                args: json!({}),
                code: Code::UnschedulableAndUnresolvable,
                reasons: vec!["Insufficient example.com/bbb"],
            },
            Case {
                name: "zero request of an unknown extended resource is skipped",
                pod: pod_req("p", &[json!({EXTENDED_B: "0"})]),
                existing: vec![],
                args: json!({}),
                code: Code::Success,
                reasons: vec![],
            },
            Case {
                name: "ignored extended resource is skipped",
                pod: pod_req("p", &[json!({EXTENDED_B: "1"})]),
                existing: vec![],
                args: json!({"ignoredResources": [EXTENDED_B]}),
                code: Code::Success,
                reasons: vec![],
            },
            Case {
                name: "ignored resource group is skipped",
                pod: pod_req("p", &[json!({EXTENDED_B: "1"})]),
                existing: vec![],
                args: json!({"ignoredResourceGroups": ["example.com"]}),
                code: Code::Success,
                reasons: vec![],
            },
            Case {
                name: "ignoring applies to extended resources only (prefixed native)",
                pod: pod_req("p", &[json!({KUBERNETES_IO_A: "1"})]),
                existing: vec![],
                args: json!({"ignoredResources": [KUBERNETES_IO_A]}),
                code: Code::UnschedulableAndUnresolvable,
                reasons: vec!["Insufficient kubernetes.io/something"],
            },
            Case {
                name: "ignoring applies to extended resources only (hugepages)",
                pod: pod_req("p", &[json!({HUGEPAGE_A: "6"})]),
                existing: vec![],
                args: json!({"ignoredResources": [HUGEPAGE_A]}),
                code: Code::UnschedulableAndUnresolvable,
                reasons: vec!["Insufficient hugepages-2Mi"],
            },
            Case {
                name: "hugepages allocatable enforced",
                pod: pod_req("p", &[json!({HUGEPAGE_A: "3"})]),
                existing: vec![pod_req("used", &[json!({HUGEPAGE_A: "3"})])],
                args: json!({}),
                code: Code::Unschedulable,
                reasons: vec!["Insufficient hugepages-2Mi"],
            },
            Case {
                name: "pod overhead counts",
                pod: pod(
                    "p",
                    &[],
                    json!({"containers": [ctr(cpu_mem("1m", "1"))],
                           "overhead": {"cpu": "3m", "memory": "13"}}),
                ),
                existing: used("7m", "5"),
                args: json!({}),
                code: Code::Unschedulable,
                reasons: vec!["Insufficient cpu"],
            },
        ];
        for c in cases {
            let node = node_info(test_node(), &c.existing);
            let status = run_filter(&fit(c.args), &c.pod, &node);
            assert_eq!(status.code, c.code, "{}: {status}", c.name);
            assert_eq!(status.reasons, c.reasons, "{}", c.name);
        }
    }

    #[test]
    fn filter_pod_count() {
        let node = node_with("n", json!({"cpu": "10m", "memory": "20", "pods": "1"}));
        let full = node_info(node, &[pod_req("used", &[json!({"cpu": "10m"})])]);
        let plugin = fit(json!({}));
        // Even a pod requesting nothing needs a pod slot; preemption can free it.
        let status = run_filter(&plugin, &pod_req("p", &[]), &full);
        assert_eq!(status.code, Code::Unschedulable);
        assert_eq!(status.reasons, vec!["Too many pods"]);
        let status = run_filter(&plugin, &pod_req("p", &[json!({"cpu": "1m"})]), &full);
        assert_eq!(status.code, Code::Unschedulable);
        assert_eq!(status.reasons, vec!["Too many pods", "Insufficient cpu"]);
    }

    #[test]
    fn filter_without_pre_filter_is_an_error() {
        let node = node_info(test_node(), &[]);
        let status = fit(json!({})).filter(&CycleState::new(), &pod_req("p", &[]), &node);
        assert_eq!(status.code, Code::Error);
    }

    /// Scores every node as the framework would: PreScore then Score.
    fn scores(plugin: &Fit, p: &PodInfo, nodes: &[NodeInfo]) -> Vec<i64> {
        let mut state = CycleState::new();
        let arcs: Vec<Arc<NodeInfo>> = nodes.iter().cloned().map(Arc::new).collect();
        let snap = snapshot(nodes.to_vec(), &[]);
        assert!(plugin.pre_score(&mut state, p, &arcs, &snap).is_success());
        nodes
            .iter()
            .map(|n| plugin.score(&state, p, n).unwrap())
            .collect()
    }

    fn cpu_mem_node(name: &str, cpu: &str, mem: &str, existing: &[Arc<PodInfo>]) -> NodeInfo {
        node_info(
            node_with(name, json!({"cpu": cpu, "memory": mem, "pods": "110"})),
            existing,
        )
    }

    fn requests(cpu: &str, mem: &str) -> Value {
        json!({"cpu": cpu, "memory": mem})
    }

    #[test]
    fn least_allocated_scores() {
        let plugin = fit(json!({}));
        let three_five = pod_req("p", &[requests("1", "2000"), requests("2", "3000")]);
        struct Case {
            name: &'static str,
            pod: Arc<PodInfo>,
            nodes: Vec<NodeInfo>,
            want: Vec<i64>,
        }
        let cases = vec![
            Case {
                name: "nothing scheduled, nothing requested",
                pod: pod_req("p", &[]),
                nodes: vec![
                    cpu_mem_node("n1", "4", "10000", &[]),
                    cpu_mem_node("n2", "4", "10000", &[]),
                ],
                want: vec![100, 100],
            },
            Case {
                // cpu (4-3)/4 = 25, memory 50 → 37; cpu 50, memory 50 → 50.
                name: "nothing scheduled, resources requested, differently sized nodes",
                pod: three_five.clone(),
                nodes: vec![
                    cpu_mem_node("n1", "4", "10000", &[]),
                    cpu_mem_node("n2", "6", "10000", &[]),
                ],
                want: vec![37, 50],
            },
            Case {
                // n1: cpu (10-6)/10 = 40, memory 100 → 70; n2: 40 and 75 → 57.
                name: "no resources requested, pods scheduled with resources",
                pod: pod_req("p", &[]),
                nodes: vec![
                    cpu_mem_node(
                        "n1",
                        "10",
                        "20000",
                        &[
                            pod_req("a", &[requests("3", "0")]),
                            pod_req("b", &[requests("3", "0")]),
                        ],
                    ),
                    cpu_mem_node(
                        "n2",
                        "10",
                        "20000",
                        &[
                            pod_req("a", &[requests("3", "0")]),
                            pod_req("b", &[requests("3", "5000")]),
                        ],
                    ),
                ],
                want: vec![70, 57],
            },
            Case {
                // cpu 6 of 4 → 0, memory 100 → 50; memory 50 → 25.
                name: "requested resources exceed node capacity",
                pod: pod_req("p", &[requests("3", "0")]),
                nodes: vec![
                    cpu_mem_node("n1", "4", "10000", &[pod_req("a", &[requests("3", "0")])]),
                    cpu_mem_node(
                        "n2",
                        "4",
                        "10000",
                        &[pod_req("a", &[requests("3", "5000")])],
                    ),
                ],
                want: vec![50, 25],
            },
            Case {
                name: "zero node resources",
                pod: pod_req("p", &[]),
                nodes: vec![cpu_mem_node("n1", "0", "0", &[])],
                want: vec![0],
            },
            Case {
                // A container without requests counts 100m cpu and 200Mi memory:
                // cpu (1000-100)/1000 = 90, memory (400Mi-200Mi)/400Mi = 50 → 70.
                name: "scoring defaults for containers without requests",
                pod: pod("p", &[], json!({"containers": [{"name": "c"}]})),
                nodes: vec![cpu_mem_node("n1", "1", "400Mi", &[])],
                want: vec![70],
            },
        ];
        for c in cases {
            assert_eq!(scores(&plugin, &c.pod, &c.nodes), c.want, "{}", c.name);
        }

        // memory weighted 2: (25 + 50*2)/3 = 41 and (50 + 50*2)/3 = 50.
        let weighted = fit(
            json!({"scoringStrategy": {"type": "LeastAllocated", "resources": [
            {"name": "memory", "weight": 2}, {"name": "cpu", "weight": 1}]}}),
        );
        let nodes = vec![
            cpu_mem_node("n1", "4", "10000", &[]),
            cpu_mem_node("n2", "6", "10000", &[]),
        ];
        assert_eq!(scores(&weighted, &three_five, &nodes), vec![41, 50]);
    }

    #[test]
    fn extended_resources_score_only_when_requested() {
        let plugin = fit(
            json!({"scoringStrategy": {"type": "LeastAllocated", "resources": [
            {"name": "cpu", "weight": 1}, {"name": "memory", "weight": 1},
            {"name": EXTENDED_A, "weight": 1}]}}),
        );
        let nodes = vec![
            node_info(
                node_with("n1", json!({"cpu": "6", "memory": "10000", "pods": "110"})),
                &[],
            ),
            node_info(
                node_with(
                    "n2",
                    json!({"cpu": "6", "memory": "10000", "pods": "110", EXTENDED_A: "4"}),
                ),
                &[],
            ),
        ];
        // cpu and memory 50 on both; the extended resource is not requested.
        let plain = pod_req("p", &[requests("1", "2000"), requests("2", "3000")]);
        assert_eq!(scores(&plugin, &plain, &nodes), vec![50, 50]);
        // Requested: n2 adds (4-2)/4 = 50; n1 lacks it, so it is skipped there.
        let with_ext = pod_req(
            "p",
            &[json!({"cpu": "3", "memory": "5000", EXTENDED_A: "2"})],
        );
        assert_eq!(scores(&plugin, &with_ext, &nodes), vec![50, 50]);
        let more = pod_req(
            "p",
            &[json!({"cpu": "3", "memory": "5000", EXTENDED_A: "1"})],
        );
        // n2: (50 + 50 + 75) / 3 = 58.
        assert_eq!(scores(&plugin, &more, &nodes), vec![50, 58]);
    }

    #[test]
    fn most_allocated_scores() {
        let plugin = fit(json!({"scoringStrategy": {"type": "MostAllocated"}}));
        // n1: cpu 3/4 = 75, memory 50 → 62; n2: 50 and 50 → 50.
        let p = pod_req("p", &[requests("1", "2000"), requests("2", "3000")]);
        let nodes = vec![
            cpu_mem_node("n1", "4", "10000", &[]),
            cpu_mem_node("n2", "6", "10000", &[]),
        ];
        assert_eq!(scores(&plugin, &p, &nodes), vec![62, 50]);
        // Over capacity counts as full: cpu 100, memory 50 → 75.
        let over = pod_req("p", &[requests("5", "5000")]);
        assert_eq!(
            scores(&plugin, &over, &[cpu_mem_node("n1", "4", "10000", &[])]),
            vec![75]
        );
    }

    #[test]
    fn requested_to_capacity_ratio_scores() {
        // Bin packing: utilization 0 → 0, 100 → 10 (scaled to 100).
        let plugin = fit(
            json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
            "requestedToCapacityRatio": {"shape": [
                {"utilization": 0, "score": 0}, {"utilization": 100, "score": 10}]}}}),
        );
        let p = pod_req("p", &[requests("1", "2500")]);
        let nodes = vec![
            cpu_mem_node("n1", "4", "10000", &[]),
            cpu_mem_node(
                "n2",
                "4",
                "10000",
                &[pod_req("a", &[requests("2", "5000")])],
            ),
        ];
        // n1: cpu 25, memory 25 → 25; n2: cpu 75, memory 75 → 75.
        assert_eq!(scores(&plugin, &p, &nodes), vec![25, 75]);

        // Spreading shape with a knee: 0 → 10, 50 → 8, 100 → 0 (scaled ×10).
        let spread = fit(
            json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
            "requestedToCapacityRatio": {"shape": [
                {"utilization": 0, "score": 10}, {"utilization": 50, "score": 8},
                {"utilization": 100, "score": 0}]}}}),
        );
        // n1: 25% → 100 - 20*25/50 = 90; n2: 75% → 80 - 80*25/50 = 40.
        assert_eq!(scores(&spread, &p, &nodes), vec![90, 40]);
    }

    #[test]
    fn score_without_pre_score_computes_requests() {
        let plugin = fit(json!({}));
        let p = pod_req("p", &[requests("1", "2000"), requests("2", "3000")]);
        let node = cpu_mem_node("n1", "4", "10000", &[]);
        assert_eq!(plugin.score(&CycleState::new(), &p, &node), Ok(37));
    }

    #[test]
    fn args_defaults_and_validation() {
        let plugin = Fit::from_args(NodeResourcesFitArgs::default()).unwrap();
        assert!(matches!(plugin.strategy, Strategy::LeastAllocated));
        assert_eq!(plugin.scorer.resources, scoring::default_resources());
        assert!(!plugin.scorer.use_requested);

        // A weight left out defaults to 1.
        let defaulted = fit(json!({"scoringStrategy": {"type": "MostAllocated",
            "resources": [{"name": "cpu"}]}}));
        assert_eq!(defaulted.scorer.resources[0].weight, 1);

        for (args, field) in [
            (
                json!({"scoringStrategy": {"type": "Foo"}}),
                "scoringStrategy.type: Unsupported value: \"Foo\"",
            ),
            (
                json!({"scoringStrategy": {"resources": [{"name": "cpu", "weight": 1}]}}),
                "scoringStrategy.type: Unsupported value: \"\"",
            ),
            (
                json!({"scoringStrategy": {"type": "LeastAllocated",
                    "resources": [{"name": "memory", "weight": -1}]}}),
                "scoringStrategy.resources[0].weight",
            ),
            (
                json!({"scoringStrategy": {"type": "LeastAllocated",
                    "resources": [{"name": "memory", "weight": 1}, {"name": "cpu", "weight": 101}]}}),
                "scoringStrategy.resources[1].weight",
            ),
            (
                json!({"ignoredResources": ["example.com/a/b"]}),
                "ignoredResources[0]",
            ),
            (
                json!({"ignoredResourceGroups": ["example.com/aaa"]}),
                "ignoredResourceGroups[0]: Invalid value: \"example.com/aaa\": resource group name can't contain '/'",
            ),
            (
                json!({"scoringStrategy": {"type": "RequestedToCapacityRatio"}}),
                "scoringStrategy.requestedToCapacityRatio: Required value",
            ),
            (
                json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
                    "requestedToCapacityRatio": {"shape": []}}}),
                "scoringStrategy.shape: Required value",
            ),
            (
                json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
                    "requestedToCapacityRatio": {"shape": [
                        {"utilization": 50, "score": 1}, {"utilization": 50, "score": 2}]}}}),
                "scoringStrategy.shape[1].utilization: Invalid value: 50: values must be sorted in increasing order",
            ),
            (
                json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
                    "requestedToCapacityRatio": {"shape": [{"utilization": 101, "score": 1}]}}}),
                "scoringStrategy.shape[0].utilization: Invalid value: 101: not in valid range [0, 100]",
            ),
            (
                json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
                    "requestedToCapacityRatio": {"shape": [{"utilization": 10, "score": 11}]}}}),
                "scoringStrategy.shape[0].score: Invalid value: 11: not in valid range [0, 10]",
            ),
        ] {
            let err = match new(Some(&args)) {
                Ok(_) => panic!("{args} should be rejected"),
                Err(e) => e,
            };
            assert!(err.contains(field), "{args}: {err}");
        }

        // Unknown fields are rejected by name.
        let err = match new(Some(
            &json!({"scoringStrategy": {"type": "LeastAllocated", "bogus": 1}}),
        )) {
            Ok(_) => panic!("unknown field accepted"),
            Err(e) => e,
        };
        assert!(err.contains("bogus"), "{err}");
        // apiVersion/kind, as in real configuration files, are fine.
        assert!(
            new(Some(
                &json!({"apiVersion": "kubescheduler.config.k8s.io/v1",
                "kind": "NodeResourcesFitArgs", "ignoredResources": [EXTENDED_B]})
            ))
            .is_ok()
        );
    }
}
