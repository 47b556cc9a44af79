//! InterPodAffinity: required pod affinity / anti-affinity (Filter, including
//! the symmetric check of existing pods' required anti-affinity) and preferred
//! terms (Score), as upstream's `interpodaffinity` plugin.
//!
//! Namespace handling follows upstream: the incoming pod's `namespaceSelector`
//! is resolved against the namespaces that exist (so a pod in an unknown
//! namespace is selected only by an empty, match-all selector), while existing
//! pods' terms are matched against the incoming pod's namespace labels (none
//! when the namespace is unknown).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::framework::labels::Labels;
use crate::framework::{
    AffinityTerm, FilterPlugin, Plugin, PodInfo, PreFilterPlugin, PreScorePlugin, ScorePlugin,
};

use super::parse_args;

mod filtering;
mod scoring;

pub const NAME: &str = "InterPodAffinity";

/// Upstream's defaulting for `hardPodAffinityWeight`.
pub const DEFAULT_HARD_POD_AFFINITY_WEIGHT: i32 = 1;
const MAX_HARD_POD_AFFINITY_WEIGHT: i32 = 100;

/// `InterPodAffinityArgs` of the KubeSchedulerConfiguration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct InterPodAffinityArgs {
    /// Score weight of an existing pod's *required* affinity term that the
    /// incoming pod satisfies (symmetric affinity), 0..=100; 0 disables it.
    pub hard_pod_affinity_weight: i32,
    /// When the incoming pod has no preferred terms, skip scoring entirely
    /// instead of scoring existing pods' terms against it.
    pub ignore_preferred_terms_of_existing_pods: bool,
}

impl Default for InterPodAffinityArgs {
    fn default() -> Self {
        Self {
            hard_pod_affinity_weight: DEFAULT_HARD_POD_AFFINITY_WEIGHT,
            ignore_preferred_terms_of_existing_pods: false,
        }
    }
}

impl InterPodAffinityArgs {
    fn validate(&self) -> Result<(), String> {
        let w = self.hard_pod_affinity_weight;
        if !(0..=MAX_HARD_POD_AFFINITY_WEIGHT).contains(&w) {
            return Err(format!(
                "pluginConfig[{NAME}].args: hardPodAffinityWeight: Invalid value: {w}: not in valid range [0, {MAX_HARD_POD_AFFINITY_WEIGHT}]"
            ));
        }
        Ok(())
    }
}

pub struct InterPodAffinity {
    args: InterPodAffinityArgs,
}

impl InterPodAffinity {
    pub fn with_args(args: InterPodAffinityArgs) -> Result<Self, String> {
        args.validate()?;
        Ok(Self { args })
    }
}

pub fn new(args: Option<&Value>) -> Result<Arc<dyn Plugin>, String> {
    let args: InterPodAffinityArgs = parse_args(NAME, args)?;
    Ok(Arc::new(InterPodAffinity::with_args(args)?))
}

impl Plugin for InterPodAffinity {
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

static NO_LABELS: Labels = Labels::new();

/// Whether a term of the *incoming* pod selects `other`. Upstream expands
/// such a term's namespaceSelector into the names of existing namespaces (an
/// empty selector stays "all namespaces"), so an unknown namespace counts as
/// unselected unless the selector is empty.
fn incoming_term_matches(
    term: &AffinityTerm,
    other: &PodInfo,
    namespaces: &HashMap<String, Labels>,
) -> bool {
    let labels = match namespaces.get(&other.namespace) {
        Some(labels) => Some(labels),
        None if term.namespace_selector.is_empty() => Some(&NO_LABELS),
        None => None,
    };
    term.matches(other, labels)
}

/// Upstream's podMatchesAllAffinityTerms: an empty list matches nothing.
fn incoming_terms_all_match(
    terms: &[AffinityTerm],
    other: &PodInfo,
    namespaces: &HashMap<String, Labels>,
) -> bool {
    !terms.is_empty()
        && terms
            .iter()
            .all(|t| incoming_term_matches(t, other, namespaces))
}

/// Labels of the incoming pod's namespace as upstream snapshots them: empty
/// when the namespace is unknown (a nil label set).
fn incoming_namespace_labels(pod: &PodInfo, namespaces: &HashMap<String, Labels>) -> Labels {
    namespaces.get(&pod.namespace).cloned().unwrap_or_default()
}

/// Upstream's aggregate error text: one error as is, several in brackets.
fn aggregate(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// Upstream reads the raw spec here, not the parsed terms.
fn has_preferred_terms(pod: &PodInfo) -> bool {
    let affinity = pod.pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let aff = affinity
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_some_and(|t| !t.is_empty());
    let anti = affinity
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_some_and(|t| !t.is_empty());
    aff || anti
}

#[cfg(test)]
pub(super) mod testutil {
    //! Pod/term builders shaped like upstream's `st.MakePod().PodAffinityIn(…)`.

    use std::sync::Arc;

    use k8s_openapi::api::core::v1::Node;
    use serde_json::{Value, json};

    use crate::framework::testing;
    use crate::framework::{PodInfo, Snapshot};

    pub fn term(key: &str, op: &str, values: &[&str], topology: &str) -> Value {
        let mut expr = json!({"key": key, "operator": op});
        if !values.is_empty() {
            expr["values"] = json!(values);
        }
        json!({"labelSelector": {"matchExpressions": [expr]}, "topologyKey": topology})
    }

    pub fn term_in(key: &str, values: &[&str], topology: &str) -> Value {
        term(key, "In", values, topology)
    }

    pub fn term_exists(key: &str, topology: &str) -> Value {
        term(key, "Exists", &[], topology)
    }

    pub fn with_ns_selector(mut term: Value, selector: Value) -> Value {
        term["namespaceSelector"] = selector;
        term
    }

    pub fn weighted(weight: i32, term: Value) -> Value {
        json!({"weight": weight, "podAffinityTerm": term})
    }

    /// A pod spec's constraints; `node` empty means unscheduled.
    #[derive(Default)]
    pub struct Spec {
        pub node: &'static str,
        pub affinity: Vec<Value>,
        pub anti_affinity: Vec<Value>,
        pub preferred: Vec<Value>,
        pub preferred_anti: Vec<Value>,
    }

    impl Spec {
        pub fn on(node: &'static str) -> Self {
            Self {
                node,
                ..Self::default()
            }
        }
        pub fn affinity(mut self, t: Value) -> Self {
            self.affinity.push(t);
            self
        }
        pub fn anti(mut self, t: Value) -> Self {
            self.anti_affinity.push(t);
            self
        }
        pub fn preferred(mut self, weight: i32, t: Value) -> Self {
            self.preferred.push(weighted(weight, t));
            self
        }
        pub fn preferred_anti(mut self, weight: i32, t: Value) -> Self {
            self.preferred_anti.push(weighted(weight, t));
            self
        }
        pub fn json(&self) -> Value {
            let mut spec = json!({"affinity": {
                "podAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": self.affinity,
                    "preferredDuringSchedulingIgnoredDuringExecution": self.preferred,
                },
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": self.anti_affinity,
                    "preferredDuringSchedulingIgnoredDuringExecution": self.preferred_anti,
                },
            }});
            if !self.node.is_empty() {
                spec["nodeName"] = json!(self.node);
            }
            spec
        }
    }

    pub fn pod_ns(ns: &str, name: &str, labels: &[(&str, &str)], spec: Spec) -> Arc<PodInfo> {
        testing::pod_in(ns, name, labels, spec.json())
    }

    pub fn pod(name: &str, labels: &[(&str, &str)], spec: Spec) -> Arc<PodInfo> {
        pod_ns("default", name, labels, spec)
    }

    pub fn node(name: &str, labels: &[(&str, &str)]) -> Node {
        testing::node(name, "4", "8Gi", labels, json!({}))
    }

    pub const TEAM1: &[(&str, &str)] = &[("team", "team1")];
    pub const TEAM2: &[(&str, &str)] = &[("team", "team2")];
    pub const NAMESPACES: &[(&str, &[(&str, &str)])] = &[
        ("subteam1.team1", TEAM1),
        ("subteam2.team1", TEAM1),
        ("subteam1.team2", TEAM2),
        ("subteam2.team2", TEAM2),
    ];

    /// A snapshot with each pod on the node its `nodeName` names, as
    /// upstream's cache.NewSnapshot.
    pub fn cluster(nodes: Vec<Node>, pods: &[Arc<PodInfo>]) -> Snapshot {
        let infos = nodes
            .into_iter()
            .map(|n| {
                let name = n.metadata.name.clone().unwrap_or_default();
                let on_node: Vec<_> = pods
                    .iter()
                    .filter(|p| p.node_name() == Some(name.as_str()))
                    .cloned()
                    .collect();
                testing::node_info(n, &on_node)
            })
            .collect();
        testing::snapshot(infos, NAMESPACES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn args_default_and_validation() {
        let defaults: InterPodAffinityArgs = parse_args(NAME, None).unwrap();
        assert_eq!(defaults.hard_pod_affinity_weight, 1);
        assert!(!defaults.ignore_preferred_terms_of_existing_pods);

        let partial =
            json!({"kind": "InterPodAffinityArgs", "ignorePreferredTermsOfExistingPods": true});
        let args: InterPodAffinityArgs = parse_args(NAME, Some(&partial)).unwrap();
        assert_eq!(
            args,
            InterPodAffinityArgs {
                hard_pod_affinity_weight: 1,
                ignore_preferred_terms_of_existing_pods: true
            }
        );

        assert!(new(Some(&json!({"hardPodAffinityWeight": 0}))).is_ok());
        assert!(new(Some(&json!({"hardPodAffinityWeight": 100}))).is_ok());
        for bad in [-1, 101] {
            let err = new(Some(&json!({"hardPodAffinityWeight": bad})))
                .err()
                .unwrap();
            assert!(
                err.contains("hardPodAffinityWeight")
                    && err.contains("not in valid range [0, 100]"),
                "{err}"
            );
        }
        let err = new(Some(&json!({"hardPodAffinityWieght": 2})))
            .err()
            .unwrap();
        assert!(err.contains("hardPodAffinityWieght"), "{err}");
    }

    #[test]
    fn plugin_serves_filter_and_score_points() {
        let p = new(None).unwrap();
        assert_eq!(p.name(), "InterPodAffinity");
        assert!(p.as_pre_filter().is_some_and(|pf| pf.has_extensions()));
        assert!(p.as_filter().is_some());
        assert!(p.as_pre_score().is_some());
        assert!(p.as_score().is_some());
    }

    #[test]
    fn aggregate_formats_like_upstream() {
        assert_eq!(aggregate(&["a".into()]), "a");
        assert_eq!(aggregate(&["a".into(), "b".into()]), "[a, b]");
    }
}
