//! NodeAffinity: a node must match the pod's `nodeSelector` and required node
//! affinity (and the profile's `addedAffinity`); feasible nodes score the
//! summed weights of the preferred terms they match.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    NodeAffinity as NodeAffinitySpec, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    PreferredSchedulingTerm,
};
use serde::Deserialize;
use serde_json::Value;

use crate::framework::labels::{Labels, NodeTerm};
use crate::framework::{
    CycleState, FilterPlugin, MAX_NODE_SCORE, NodeInfo, NodeScore, Plugin, PodInfo,
    PreFilterPlugin, PreFilterResult, PreScorePlugin, ScorePlugin, Snapshot, Status,
    default_normalize_score,
};
use crate::plugins::parse_args;

pub const NAME: &str = "NodeAffinity";

pub const ERR_REASON_POD: &str = "node(s) didn't match Pod's node affinity/selector";
pub const ERR_REASON_ENFORCED: &str = "node(s) didn't match scheduler-enforced node affinity";
pub const ERR_REASON_CONFLICT: &str = "pod affinity terms conflict";

const OBJECT_NAME_FIELD: &str = "metadata.name";

/// `NodeAffinityArgs` of kubescheduler.config.k8s.io/v1.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAffinityArgs {
    /// Applied to every pod of the profile, on top of the pod's own affinity.
    #[serde(default)]
    pub added_affinity: Option<NodeAffinitySpec>,
}

/// The checks upstream's selector parsing makes that `NodeTerm::compile`
/// leaves to API validation, so configuration and pods are rejected alike.
fn check_requirements(reqs: &[NodeSelectorRequirement], fields: bool) -> Result<(), String> {
    for (i, r) in reqs.iter().enumerate() {
        let n = r.values.as_ref().map_or(0, Vec::len);
        let bad = match r.operator.as_str() {
            "In" | "NotIn" if fields && n != 1 => Some("values: must have one element"),
            "Exists" | "DoesNotExist" if n != 0 => {
                Some("values: must be empty for Exists and DoesNotExist")
            }
            _ => None,
        };
        if let Some(msg) = bad {
            let which = if fields {
                "matchFields"
            } else {
                "matchExpressions"
            };
            return Err(format!("{which}[{i}].{msg}"));
        }
    }
    Ok(())
}

fn is_empty_term(term: &NodeSelectorTerm) -> bool {
    term.match_expressions.as_ref().is_none_or(Vec::is_empty)
        && term.match_fields.as_ref().is_none_or(Vec::is_empty)
}

fn compile_term(term: &NodeSelectorTerm) -> Result<NodeTerm, String> {
    check_requirements(term.match_expressions.as_deref().unwrap_or_default(), false)?;
    check_requirements(term.match_fields.as_deref().unwrap_or_default(), true)?;
    NodeTerm::compile(term)
}

/// ORed node selector terms. Empty terms select nothing and are dropped.
#[derive(Clone, Debug)]
struct Terms(Vec<NodeTerm>);

impl Terms {
    /// Any term that fails to parse fails the whole selector (configuration).
    fn strict(sel: &NodeSelector, path: &str) -> Result<Self, String> {
        let mut terms = vec![];
        for (i, term) in sel.node_selector_terms.iter().enumerate() {
            if is_empty_term(term) {
                continue;
            }
            terms.push(
                compile_term(term).map_err(|e| format!("{path}.nodeSelectorTerms[{i}]: {e}"))?,
            );
        }
        Ok(Self(terms))
    }

    /// A term that fails to parse just never matches, as upstream keeps it
    /// for backwards compatibility of pods admitted with invalid terms.
    fn lazy(sel: &NodeSelector) -> Self {
        Self(
            sel.node_selector_terms
                .iter()
                .filter(|t| !is_empty_term(t))
                .filter_map(|t| compile_term(t).ok())
                .collect(),
        )
    }

    fn matches(&self, node: &NodeInfo) -> bool {
        self.0.iter().any(|t| t.matches(&node.name, &node.labels))
    }
}

/// Weighted preferred terms; zero-weight and empty terms count for nothing.
#[derive(Clone, Debug)]
struct PreferredTerms(Vec<(NodeTerm, i64)>);

impl PreferredTerms {
    fn compile(terms: &[PreferredSchedulingTerm], path: &str) -> Result<Self, String> {
        let mut out = vec![];
        for (i, t) in terms.iter().enumerate() {
            if t.weight == 0 || is_empty_term(&t.preference) {
                continue;
            }
            let term =
                compile_term(&t.preference).map_err(|e| format!("{path}[{i}].preference: {e}"))?;
            out.push((term, i64::from(t.weight)));
        }
        Ok(Self(out))
    }

    fn score(&self, node: &NodeInfo) -> i64 {
        self.0
            .iter()
            .filter(|(t, _)| t.matches(&node.name, &node.labels))
            .map(|(_, w)| w)
            .sum()
    }
}

/// The pod's `nodeSelector` and required node affinity, both of which must match.
#[derive(Clone, Debug)]
struct RequiredNodeAffinity {
    node_selector: Option<BTreeMap<String, String>>,
    affinity: Option<Terms>,
}

impl RequiredNodeAffinity {
    fn of(pod: &PodInfo) -> Self {
        let spec = pod.pod.spec.as_ref();
        Self {
            node_selector: spec
                .and_then(|s| s.node_selector.clone())
                .filter(|m| !m.is_empty()),
            affinity: required_of(pod).map(Terms::lazy),
        }
    }

    fn matches(&self, node: &NodeInfo) -> bool {
        if let Some(sel) = &self.node_selector
            && !selector_matches(sel, &node.labels)
        {
            return false;
        }
        self.affinity.as_ref().is_none_or(|a| a.matches(node))
    }
}

fn selector_matches(sel: &BTreeMap<String, String>, labels: &Labels) -> bool {
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn node_affinity_of(pod: &PodInfo) -> Option<&NodeAffinitySpec> {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
}

fn required_of(pod: &PodInfo) -> Option<&NodeSelector> {
    node_affinity_of(pod).and_then(|a| {
        a.required_during_scheduling_ignored_during_execution
            .as_ref()
    })
}

fn pod_preferred(pod: &PodInfo) -> Result<Option<PreferredTerms>, String> {
    node_affinity_of(pod)
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|terms| {
            PreferredTerms::compile(
                terms,
                "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution",
            )
        })
        .transpose()
}

/// Node names a `matchFields: metadata.name In` requirement pins every term
/// to, unioned over the (ORed) terms; `None` when some term can match any node.
fn pinned_node_names(terms: &[NodeSelectorTerm]) -> Option<BTreeSet<String>> {
    let mut union = BTreeSet::new();
    for term in terms {
        let mut in_term: Option<BTreeSet<String>> = None;
        for r in term.match_fields.iter().flatten() {
            if r.key == OBJECT_NAME_FIELD && r.operator == "In" {
                let values: BTreeSet<String> = r.values.iter().flatten().cloned().collect();
                // Requirements within a term are ANDed.
                in_term = Some(match in_term {
                    None => values,
                    Some(prev) => prev.intersection(&values).cloned().collect(),
                });
            }
        }
        union.extend(in_term?);
    }
    Some(union)
}

#[derive(Clone)]
struct PreFilterState(Arc<RequiredNodeAffinity>);

#[derive(Clone)]
struct PreScoreState(Option<Arc<PreferredTerms>>);

pub struct NodeAffinity {
    added_node_selector: Option<Terms>,
    added_preferred: Option<PreferredTerms>,
}

impl Plugin for NodeAffinity {
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

impl PreFilterPlugin for NodeAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _snapshot: &Snapshot,
    ) -> (PreFilterResult, Status) {
        let required = required_of(pod);
        let has_node_selector = pod
            .pod
            .spec
            .as_ref()
            .is_some_and(|s| s.node_selector.is_some());
        if required.is_none() && self.added_node_selector.is_none() && !has_node_selector {
            return (PreFilterResult::default(), Status::skip());
        }
        state.write(
            NAME,
            PreFilterState(Arc::new(RequiredNodeAffinity::of(pod))),
        );
        let Some(required) = required.filter(|r| !r.node_selector_terms.is_empty()) else {
            return (PreFilterResult::default(), Status::success());
        };
        match pinned_node_names(&required.node_selector_terms) {
            Some(names) if names.is_empty() => (
                PreFilterResult::default(),
                Status::unresolvable(ERR_REASON_CONFLICT),
            ),
            Some(names) => (
                PreFilterResult {
                    node_names: Some(names),
                },
                Status::success(),
            ),
            None => (PreFilterResult::default(), Status::success()),
        }
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if let Some(added) = &self.added_node_selector
            && !added.matches(node)
        {
            return Status::unresolvable(ERR_REASON_ENFORCED);
        }
        let matches = match state.read::<PreFilterState>(NAME) {
            Some(PreFilterState(required)) => required.matches(node),
            // PreFilter disabled in the profile: parse the pod's terms here.
            None => RequiredNodeAffinity::of(pod).matches(node),
        };
        if matches {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON_POD)
        }
    }
}

impl PreScorePlugin for NodeAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        _snapshot: &Snapshot,
    ) -> Status {
        let preferred = match pod_preferred(pod) {
            Ok(p) => p,
            Err(e) => return Status::error(e),
        };
        if preferred.is_none() && self.added_preferred.is_none() {
            return Status::skip();
        }
        state.write(NAME, PreScoreState(preferred.map(Arc::new)));
        Status::success()
    }
}

impl ScorePlugin for NodeAffinity {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let mut score = self.added_preferred.as_ref().map_or(0, |t| t.score(node));
        match state.read::<PreScoreState>(NAME) {
            Some(PreScoreState(preferred)) => {
                score += preferred.as_ref().map_or(0, |t| t.score(node));
            }
            // PreScore disabled in the profile: parse the pod's terms here.
            None => {
                let preferred = pod_preferred(pod).map_err(Status::error)?;
                score += preferred.map_or(0, |t| t.score(node));
            }
        }
        Ok(score)
    }

    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, scores: &mut [NodeScore]) -> Status {
        default_normalize_score(MAX_NODE_SCORE, false, scores);
        Status::success()
    }
}

pub fn new(args: Option<&Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(from_args(args)?))
}

/// The plugin as configured by `args` (its queueing hint needs the
/// scheduler-enforced affinity too).
pub fn from_args(args: Option<&Value>) -> Result<NodeAffinity, String> {
    let args: NodeAffinityArgs = parse_args(NAME, args)?;
    let context = |e: String| format!("pluginConfig[{NAME}].args: {e}");
    let mut plugin = NodeAffinity {
        added_node_selector: None,
        added_preferred: None,
    };
    if let Some(added) = &args.added_affinity {
        if let Some(sel) = &added.required_during_scheduling_ignored_during_execution {
            plugin.added_node_selector = Some(
                Terms::strict(
                    sel,
                    "addedAffinity.requiredDuringSchedulingIgnoredDuringExecution",
                )
                .map_err(context)?,
            );
        }
        if let Some(terms) = added
            .preferred_during_scheduling_ignored_during_execution
            .as_ref()
            .filter(|t| !t.is_empty())
        {
            plugin.added_preferred = Some(
                PreferredTerms::compile(
                    terms,
                    "addedAffinity.preferredDuringSchedulingIgnoredDuringExecution",
                )
                .map_err(context)?,
            );
        }
    }
    Ok(plugin)
}

impl NodeAffinity {
    /// Whether `node` passes the profile's `addedAffinity` (true without one).
    pub fn added_affinity_matches(&self, node: &NodeInfo) -> bool {
        self.added_node_selector
            .as_ref()
            .is_none_or(|added| added.matches(node))
    }
}

/// Whether `node` matches the pod's `nodeSelector` and required node
/// affinity, as Filter checks them.
pub fn pod_required_matches(pod: &PodInfo, node: &NodeInfo) -> bool {
    RequiredNodeAffinity::of(pod).matches(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::framework::testing::{node, node_info, pod, snapshot};
    use serde_json::json;

    fn plain() -> NodeAffinity {
        NodeAffinity {
            added_node_selector: None,
            added_preferred: None,
        }
    }

    fn with_args(args: Value) -> Arc<dyn Plugin> {
        new(Some(&args)).unwrap()
    }

    fn labelled(name: &str, labels: &[(&str, &str)]) -> NodeInfo {
        node_info(node(name, "1", "1Gi", labels, json!({})), &[])
    }

    fn required(terms: Value) -> Value {
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}})
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> Value {
        json!({"key": key, "operator": op, "values": values})
    }

    /// Runs PreFilter then Filter, as the framework does.
    fn run_filter(plugin: &dyn Plugin, spec: Value, node: NodeInfo) -> Status {
        let p = pod("p", &[], spec);
        let snap = snapshot(vec![node], &[]);
        let mut state = CycleState::new();
        let (_, status) = plugin
            .as_pre_filter()
            .unwrap()
            .pre_filter(&mut state, &p, &snap);
        if status.is_skip() {
            return Status::success();
        }
        if !status.is_success() {
            return status;
        }
        plugin
            .as_filter()
            .unwrap()
            .filter(&state, &p, &snap.nodes[0])
    }

    #[test]
    fn filter() {
        type Case<'a> = (&'a str, Value, &'a [(&'a str, &'a str)], bool);
        let cases: Vec<Case> = vec![
            ("no selector", json!({}), &[], true),
            (
                "missing labels",
                json!({"nodeSelector": {"foo": "bar"}}),
                &[],
                false,
            ),
            (
                "same labels",
                json!({"nodeSelector": {"foo": "bar"}}),
                &[("foo", "bar")],
                true,
            ),
            (
                "node labels are a superset",
                json!({"nodeSelector": {"foo": "bar"}}),
                &[("foo", "bar"), ("baz", "blah")],
                true,
            ),
            (
                "node labels are a subset",
                json!({"nodeSelector": {"foo": "bar", "baz": "blah"}}),
                &[("foo", "bar")],
                false,
            ),
            (
                "In matches",
                required(json!([{"matchExpressions": [expr("foo", "In", &["bar", "value2"])]}])),
                &[("foo", "bar")],
                true,
            ),
            (
                "Gt matches",
                required(json!([{"matchExpressions": [expr("kernel-version", "Gt", &["0204"])]}])),
                &[("kernel-version", "0206")],
                true,
            ),
            (
                "NotIn excludes",
                required(
                    json!([{"matchExpressions": [expr("mem-type", "NotIn", &["DDR", "DDR2"])]}]),
                ),
                &[("mem-type", "DDR3")],
                true,
            ),
            (
                "Exists on a missing label",
                required(json!([{"matchExpressions": [expr("GPU", "Exists", &[])]}])),
                &[("foo", "bar")],
                false,
            ),
            (
                "In does not match another value",
                required(json!([{"matchExpressions": [expr("foo", "In", &["value1", "value2"])]}])),
                &[("foo", "bar")],
                false,
            ),
            (
                "empty nodeSelectorTerms matches nothing",
                required(json!([])),
                &[("foo", "bar")],
                false,
            ),
            (
                "a term with empty matchExpressions matches nothing",
                required(json!([{"matchExpressions": []}])),
                &[("foo", "bar")],
                false,
            ),
            (
                "requirements within a term are ANDed",
                required(json!([{"matchExpressions": [
                    expr("GPU", "Exists", &[]),
                    expr("GPU", "NotIn", &["AMD", "INTER"]),
                ]}])),
                &[("GPU", "NVIDIA-GRID-K1")],
                true,
            ),
            (
                "one failing requirement fails the term",
                required(json!([{"matchExpressions": [
                    expr("GPU", "Exists", &[]),
                    expr("GPU", "In", &["AMD", "INTER"]),
                ]}])),
                &[("GPU", "NVIDIA-GRID-K1")],
                false,
            ),
            (
                "terms are ORed",
                required(json!([
                    {"matchExpressions": [expr("foo", "In", &["bar", "value2"])]},
                    {"matchExpressions": [expr("diffkey", "In", &["wrong", "value2"])]},
                ])),
                &[("foo", "bar")],
                true,
            ),
            (
                "nodeSelector and affinity must both match (affinity fails)",
                json!({
                    "nodeSelector": {"foo": "bar"},
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [expr("foo", "DoesNotExist", &[])]}]}}},
                }),
                &[("foo", "bar")],
                false,
            ),
            (
                "nodeSelector and affinity must both match (selector fails)",
                json!({
                    "nodeSelector": {"foo": "bar"},
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [expr("foo", "Exists", &[])]}]}}},
                }),
                &[("foo", "baz")],
                false,
            ),
            (
                "only preferred affinity: any node",
                json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1, "preference": {"matchExpressions": [expr("foo", "In", &["x"])]}}]}}}),
                &[],
                true,
            ),
            (
                "matchFields metadata.name matches the node",
                required(json!([{"matchFields": [expr("metadata.name", "In", &["node1"])]}])),
                &[],
                true,
            ),
            (
                "matchFields NotIn the node's name",
                required(json!([{"matchFields": [expr("metadata.name", "NotIn", &["node1"])]}])),
                &[],
                false,
            ),
            (
                "matchFields and matchExpressions are ANDed",
                required(json!([{
                    "matchFields": [expr("metadata.name", "In", &["node1"])],
                    "matchExpressions": [expr("foo", "In", &["bar"])],
                }])),
                &[("foo", "baz")],
                false,
            ),
            (
                "an invalid term never matches, a valid one still can",
                required(json!([
                    {"matchExpressions": [expr("foo", "Gt", &["not-a-number"])]},
                    {"matchExpressions": [expr("foo", "In", &["bar"])]},
                ])),
                &[("foo", "bar")],
                true,
            ),
            (
                "only an invalid term: nothing matches",
                required(json!([{"matchExpressions": [expr("foo", "Exists", &["bar"])]}])),
                &[("foo", "bar")],
                false,
            ),
        ];
        for (name, spec, labels, fits) in cases {
            let status = run_filter(&plain(), spec.clone(), labelled("node1", labels));
            if fits {
                assert!(status.is_success(), "{name}: {status}");
            } else {
                assert_eq!(status.code, Code::UnschedulableAndUnresolvable, "{name}");
                assert_eq!(status.reasons, vec![ERR_REASON_POD], "{name}");
            }
            // Without PreFilter state, Filter parses the pod itself.
            let fallback = plain().filter(
                &CycleState::new(),
                &pod("p", &[], spec),
                &labelled("node1", labels),
            );
            assert_eq!(fallback.is_success(), fits, "{name} (no PreFilter)");
        }
    }

    #[test]
    fn added_affinity_filters_first() {
        let plugin = with_args(
            json!({"addedAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [expr("zone", "In", &["foo"])]}]}}}),
        );
        let status = run_filter(
            plugin.as_ref(),
            json!({}),
            labelled("n", &[("zone", "bar")]),
        );
        assert_eq!(status.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(status.reasons, vec![ERR_REASON_ENFORCED]);
        let status = run_filter(
            plugin.as_ref(),
            json!({"nodeSelector": {"foo": "bar"}}),
            labelled("n", &[("zone", "foo")]),
        );
        assert_eq!(status.reasons, vec![ERR_REASON_POD]);
        let status = run_filter(
            plugin.as_ref(),
            json!({"nodeSelector": {"foo": "bar"}}),
            labelled("n", &[("zone", "foo"), ("foo", "bar")]),
        );
        assert!(status.is_success(), "{status}");
    }

    #[test]
    fn pre_filter() {
        let snap = snapshot(vec![labelled("node1", &[])], &[]);
        let names = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>());
        let field_in = |names: &[&str]| expr("metadata.name", "In", names);
        let cases: Vec<(&str, Value, Code, Option<BTreeSet<String>>)> = vec![
            ("nothing to check", json!({}), Code::Skip, None),
            (
                "only preferred affinity",
                json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}}),
                Code::Skip,
                None,
            ),
            (
                "nodeSelector only",
                json!({"nodeSelector": {"a": "b"}}),
                Code::Success,
                None,
            ),
            (
                "label terms do not restrict nodes",
                required(json!([{"matchExpressions": [expr("foo", "In", &["bar"])]}])),
                Code::Success,
                None,
            ),
            (
                "a metadata.name term",
                required(json!([{"matchFields": [field_in(&["node1"])]}])),
                Code::Success,
                names(&["node1"]),
            ),
            (
                "names are unioned across terms",
                required(json!([
                    {"matchFields": [field_in(&["node1"])]},
                    {"matchFields": [field_in(&["node2"])]},
                ])),
                Code::Success,
                names(&["node1", "node2"]),
            ),
            (
                "names are intersected within a term",
                required(
                    json!([{"matchFields": [field_in(&["node1", "node2"]), field_in(&["node2", "node3"])]}]),
                ),
                Code::Success,
                names(&["node2"]),
            ),
            (
                "a term without names allows every node",
                required(json!([
                    {"matchFields": [field_in(&["node1"])]},
                    {"matchExpressions": [expr("foo", "In", &["bar"])]},
                ])),
                Code::Success,
                None,
            ),
            (
                "NotIn does not pin names",
                required(json!([{"matchFields": [expr("metadata.name", "NotIn", &["node1"])]}])),
                Code::Success,
                None,
            ),
            (
                "conflicting names",
                required(json!([{"matchFields": [field_in(&["node1"]), field_in(&["node2"])]}])),
                Code::UnschedulableAndUnresolvable,
                None,
            ),
        ];
        for (name, spec, code, want) in cases {
            let mut state = CycleState::new();
            let (result, status) = plain().pre_filter(&mut state, &pod("p", &[], spec), &snap);
            assert_eq!(status.code, code, "{name}");
            assert_eq!(result.node_names, want, "{name}");
            if code == Code::UnschedulableAndUnresolvable {
                assert_eq!(status.reasons, vec![ERR_REASON_CONFLICT], "{name}");
            }
        }
        let added = with_args(
            json!({"addedAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [expr("zone", "Exists", &[])]}]}}}),
        );
        let (_, status) = added.as_pre_filter().unwrap().pre_filter(
            &mut CycleState::new(),
            &pod("p", &[], json!({})),
            &snap,
        );
        assert!(status.is_success(), "addedAffinity makes Filter needed");
    }

    fn preferred(terms: Value) -> Value {
        json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": terms}}})
    }

    fn pref(weight: i32, exprs: Value) -> Value {
        json!({"weight": weight, "preference": {"matchExpressions": exprs}})
    }

    fn scores(plugin: &dyn Plugin, spec: Value, nodes: Vec<NodeInfo>) -> Option<Vec<i64>> {
        let p = pod("p", &[], spec);
        let snap = snapshot(nodes, &[]);
        let mut state = CycleState::new();
        let status = plugin
            .as_pre_score()
            .unwrap()
            .pre_score(&mut state, &p, &snap.nodes, &snap);
        if status.is_skip() {
            return None;
        }
        assert!(status.is_success(), "{status}");
        let scorer = plugin.as_score().unwrap();
        let mut out: Vec<NodeScore> = snap
            .nodes
            .iter()
            .map(|n| NodeScore {
                name: n.name.as_str(),
                score: scorer.score(&state, &p, n).unwrap(),
            })
            .collect();
        assert!(scorer.normalize(&state, &p, &mut out).is_success());
        Some(out.into_iter().map(|s| s.score).collect())
    }

    #[test]
    fn score() {
        let nodes = || {
            vec![
                labelled("node1", &[("foo", "bar")]),
                labelled("node2", &[("key", "value")]),
                labelled("node3", &[("az", "az1"), ("foo", "bar"), ("key", "value")]),
            ]
        };
        let cases: Vec<(&str, Value, Option<Vec<i64>>)> = vec![
            ("no preferred terms: skipped", json!({}), None),
            (
                "no node matches: all zero",
                preferred(json!([pref(2, json!([expr("foo", "In", &["nope"])]))])),
                Some(vec![0, 0, 0]),
            ),
            (
                "one term",
                preferred(json!([pref(2, json!([expr("foo", "In", &["bar"])]))])),
                Some(vec![100, 0, 100]),
            ),
            (
                "weights of matching terms add up",
                preferred(json!([
                    pref(2, json!([expr("foo", "In", &["bar"])])),
                    pref(4, json!([expr("key", "In", &["value"])])),
                    pref(5, json!([expr("az", "In", &["az1"])])),
                ])),
                Some(vec![18, 36, 100]),
            ),
            (
                "zero-weight terms count for nothing",
                preferred(json!([
                    pref(0, json!([expr("foo", "In", &["bar"])])),
                    pref(1, json!([expr("key", "In", &["value"])])),
                ])),
                Some(vec![0, 100, 100]),
            ),
            (
                "an empty preference matches nothing",
                preferred(
                    json!([{"weight": 3, "preference": {}}, pref(1, json!([expr("foo", "Exists", &[])]))]),
                ),
                Some(vec![100, 0, 100]),
            ),
        ];
        for (name, spec, want) in cases {
            assert_eq!(scores(&plain(), spec, nodes()), want, "{name}");
        }

        let added = with_args(
            json!({"addedAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            pref(3, json!([expr("key", "In", &["value"])]))]}}),
        );
        assert_eq!(
            scores(added.as_ref(), json!({}), nodes()),
            Some(vec![0, 100, 100]),
            "added preferred terms score even for pods without affinity"
        );
        assert_eq!(
            scores(
                added.as_ref(),
                preferred(json!([pref(1, json!([expr("foo", "In", &["bar"])]))])),
                nodes()
            ),
            Some(vec![25, 75, 100]),
            "added and pod terms add up"
        );
    }

    #[test]
    fn score_without_pre_score_state() {
        let p = pod(
            "p",
            &[],
            preferred(json!([pref(7, json!([expr("foo", "In", &["bar"])]))])),
        );
        let state = CycleState::new();
        assert_eq!(
            plain().score(&state, &p, &labelled("a", &[("foo", "bar")])),
            Ok(7)
        );
        assert_eq!(plain().score(&state, &p, &labelled("b", &[])), Ok(0));
    }

    #[test]
    fn args() {
        assert!(new(None).is_ok());
        assert!(
            new(Some(
                &json!({"kind": "NodeAffinityArgs", "apiVersion": "kubescheduler.config.k8s.io/v1"})
            ))
            .is_ok()
        );
        let err = new(Some(&json!({"addedAfinity": {}}))).err().unwrap();
        assert!(err.contains("addedAfinity"), "{err}");
        let err = new(Some(
            &json!({"addedAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [expr("zone", "In", &["a"])]},
                                  {"matchExpressions": [expr("zone", "Bogus", &["a"])]}]}}}),
        ))
        .err()
        .unwrap();
        assert!(
            err.contains(
                "addedAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[1]"
            ),
            "{err}"
        );
        let err = new(Some(&json!({"addedAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "preference": {"matchFields": [expr("metadata.name", "In", &["a", "b"])]}}]}})))
        .err()
        .unwrap();
        assert!(
            err.contains("addedAffinity.preferredDuringSchedulingIgnoredDuringExecution[0]"),
            "{err}"
        );
    }
}
