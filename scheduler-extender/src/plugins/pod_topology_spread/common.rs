//! What Filter and Score share: the pod's constraints compiled for one
//! `whenUnsatisfiable`, which nodes count towards a constraint (the node
//! inclusion policies), and how matching pods on a node are counted.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Toleration, TopologySpreadConstraint};

use crate::framework::labels::{Labels, NodeTerm, Requirement, Selector};
use crate::framework::{NodeInfo, PodInfo};
// Only NoSchedule/NoExecute taints keep a pod off a node, as in TaintToleration.
use crate::plugins::taint_toleration::first_untolerated_do_not_schedule;

pub(super) const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
pub(super) const LABEL_TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";

pub(super) const DO_NOT_SCHEDULE: &str = "DoNotSchedule";
pub(super) const SCHEDULE_ANYWAY: &str = "ScheduleAnyway";

const POLICY_HONOR: &str = "Honor";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InclusionPolicy {
    Honor,
    Ignore,
}

impl InclusionPolicy {
    /// Upstream compares against "Honor" only, so any other value (the API
    /// rejects them, but the args are not API-validated) means Ignore.
    fn parse(value: Option<&str>, default: Self) -> Self {
        match value {
            None => default,
            Some(POLICY_HONOR) => Self::Honor,
            Some(_) => Self::Ignore,
        }
    }
}

/// A `TopologySpreadConstraint` with its selector compiled and the optional
/// fields resolved to their defaults.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Constraint {
    pub max_skew: i32,
    pub topology_key: String,
    pub selector: Selector,
    pub min_domains: i32,
    pub node_affinity_policy: InclusionPolicy,
    pub node_taints_policy: InclusionPolicy,
}

/// Compiles the constraints whose `whenUnsatisfiable` is `action`, in order.
/// `matchLabelKeys` turn into `key In (pod's value)` on the selector; a nil
/// selector stays one that matches nothing, as upstream's merge keeps it.
pub(super) fn filter_constraints(
    constraints: &[TopologySpreadConstraint],
    pod_labels: &Labels,
    action: &str,
) -> Result<Vec<Constraint>, String> {
    let mut out = vec![];
    for c in constraints
        .iter()
        .filter(|c| c.when_unsatisfiable == action)
    {
        let mut selector = Selector::from_optional(c.label_selector.as_ref())?;
        for key in c.match_label_keys.iter().flatten() {
            if let Some(value) = pod_labels.get(key) {
                selector.require(Requirement::In(key.clone(), vec![value.clone()]));
            }
        }
        out.push(Constraint {
            max_skew: c.max_skew,
            topology_key: c.topology_key.clone(),
            selector,
            min_domains: c.min_domains.unwrap_or(1),
            node_affinity_policy: InclusionPolicy::parse(
                c.node_affinity_policy.as_deref(),
                InclusionPolicy::Honor,
            ),
            node_taints_policy: InclusionPolicy::parse(
                c.node_taints_policy.as_deref(),
                InclusionPolicy::Ignore,
            ),
        });
    }
    Ok(out)
}

/// Whether the node carries every constraint's topology key.
pub(super) fn node_has_all_topology_keys(labels: &Labels, constraints: &[Constraint]) -> bool {
    constraints
        .iter()
        .all(|c| labels.contains_key(&c.topology_key))
}

/// Matching pods of `namespace` on a node. An empty selector counts nothing
/// (upstream's early return), and terminating pods are left out because
/// they are about to free their domain (kubernetes#87621).
pub(super) fn count_pods_match_selector(
    pods: &[Arc<PodInfo>],
    selector: &Selector,
    namespace: &str,
) -> i64 {
    if selector.is_empty() {
        return 0;
    }
    pods.iter()
        .filter(|p| p.pod.metadata.deletion_timestamp.is_none() && p.namespace == namespace)
        .filter(|p| selector.matches(&p.labels))
        .count() as i64
}

/// The incoming pod's `nodeSelector` and required node affinity, as
/// upstream's `nodeaffinity.GetRequiredNodeAffinity`. Terms that fail to
/// compile never match, the rest still do: upstream ignores parse errors
/// here for backwards compatibility.
#[derive(Clone, Debug)]
struct RequiredNodeAffinity {
    node_selector: Vec<Requirement>,
    /// `None` when the pod has no required node affinity.
    terms: Option<Vec<NodeTerm>>,
}

impl RequiredNodeAffinity {
    fn of(pod: &PodInfo) -> Self {
        let spec = pod.pod.spec.as_ref();
        let node_selector = spec
            .and_then(|s| s.node_selector.as_ref())
            .into_iter()
            .flatten()
            .map(|(k, v)| Requirement::In(k.clone(), vec![v.clone()]))
            .collect();
        let terms = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|sel| {
                sel.node_selector_terms
                    .iter()
                    .filter_map(|t| NodeTerm::compile(t).ok())
                    .collect()
            });
        Self {
            node_selector,
            terms,
        }
    }

    fn matches(&self, node: &NodeInfo) -> bool {
        self.node_selector.iter().all(|r| r.matches(&node.labels))
            && self
                .terms
                .as_ref()
                .is_none_or(|terms| terms.iter().any(|t| t.matches(&node.name, &node.labels)))
    }
}

/// What the node inclusion policies look at on the incoming pod, computed
/// once per cycle.
#[derive(Clone, Debug)]
pub(super) struct NodeInclusion {
    affinity: RequiredNodeAffinity,
    tolerations: Vec<Toleration>,
}

impl NodeInclusion {
    pub fn of(pod: &PodInfo) -> Self {
        Self {
            affinity: RequiredNodeAffinity::of(pod),
            tolerations: pod
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.clone())
                .unwrap_or_default(),
        }
    }

    /// Whether `node`'s pods count towards `constraint` (upstream's
    /// matchNodeInclusionPolicies).
    pub fn includes(&self, constraint: &Constraint, node: &NodeInfo) -> bool {
        if constraint.node_affinity_policy == InclusionPolicy::Honor && !self.affinity.matches(node)
        {
            return false;
        }
        if constraint.node_taints_policy == InclusionPolicy::Honor
            && first_untolerated_do_not_schedule(node.taints(), &self.tolerations).is_some()
        {
            return false;
        }
        true
    }
}

#[cfg(test)]
pub(super) mod test_support {
    //! Builders closer to upstream's `st.MakeNode()`/`st.MakePod()` than the
    //! shared ones: nodes carry only the labels given (no implicit hostname,
    //! which several upstream cases depend on), and pods can be terminating.

    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::{Value, json};

    use crate::framework::testing::node_info;
    use crate::framework::{NodeInfo, PodInfo};

    pub fn node(name: &str, labels: &[(&str, &str)]) -> Node {
        node_with(name, labels, json!({}))
    }

    pub fn node_with(name: &str, labels: &[(&str, &str)], spec: Value) -> Node {
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": spec,
        }))
        .expect("test node")
    }

    pub fn info(node: Node, pods: &[Arc<PodInfo>]) -> NodeInfo {
        node_info(node, pods)
    }

    pub fn terminating(pod: &Arc<PodInfo>) -> Arc<PodInfo> {
        let mut p: Pod = (*pod.pod).clone();
        p.metadata.deletion_timestamp =
            Some(serde_json::from_value(json!("2024-01-01T00:00:00Z")).unwrap());
        Arc::new(PodInfo::new(Arc::new(p)))
    }

    /// One spread constraint as JSON; `selector` is a LabelSelector or null.
    pub fn constraint(max_skew: i32, key: &str, action: &str, selector: Value) -> Value {
        json!({
            "maxSkew": max_skew,
            "topologyKey": key,
            "whenUnsatisfiable": action,
            "labelSelector": selector,
        })
    }

    pub fn exists(key: &str) -> Value {
        json!({"matchExpressions": [{"key": key, "operator": "Exists"}]})
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::framework::testing::labels;
    use crate::framework::testing::pod;
    use serde_json::json;

    fn constraints(v: serde_json::Value) -> Vec<TopologySpreadConstraint> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn filters_by_action_and_applies_defaults() {
        let cs = constraints(json!([
            constraint(1, "zone", SCHEDULE_ANYWAY, exists("foo")),
            {"maxSkew": 2, "topologyKey": "node", "whenUnsatisfiable": DO_NOT_SCHEDULE,
             "labelSelector": exists("foo"), "minDomains": 3,
             "nodeAffinityPolicy": "Ignore", "nodeTaintsPolicy": "Honor"},
        ]));
        let hard = filter_constraints(&cs, &Labels::new(), DO_NOT_SCHEDULE).unwrap();
        assert_eq!(hard.len(), 1);
        assert_eq!(hard[0].topology_key, "node");
        assert_eq!(hard[0].max_skew, 2);
        assert_eq!(hard[0].min_domains, 3);
        assert_eq!(hard[0].node_affinity_policy, InclusionPolicy::Ignore);
        assert_eq!(hard[0].node_taints_policy, InclusionPolicy::Honor);
        let soft = filter_constraints(&cs, &Labels::new(), SCHEDULE_ANYWAY).unwrap();
        assert_eq!(soft.len(), 1);
        assert_eq!(soft[0].min_domains, 1);
        assert_eq!(soft[0].node_affinity_policy, InclusionPolicy::Honor);
        assert_eq!(soft[0].node_taints_policy, InclusionPolicy::Ignore);
    }

    #[test]
    fn match_label_keys_narrow_the_selector() {
        let cs = constraints(json!([{
            "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": DO_NOT_SCHEDULE,
            "labelSelector": exists("foo"), "matchLabelKeys": ["version", "absent"],
        }]));
        let pod_labels = labels(&[("foo", ""), ("version", "v1")]);
        let c = &filter_constraints(&cs, &pod_labels, DO_NOT_SCHEDULE).unwrap()[0];
        assert!(
            c.selector
                .matches(&labels(&[("foo", "x"), ("version", "v1")]))
        );
        assert!(
            !c.selector
                .matches(&labels(&[("foo", "x"), ("version", "v2")]))
        );
        assert!(!c.selector.matches(&labels(&[("version", "v1")])));

        // A nil labelSelector selects nothing, even with matchLabelKeys.
        let cs = constraints(json!([{
            "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": DO_NOT_SCHEDULE,
            "matchLabelKeys": ["version"],
        }]));
        let c = &filter_constraints(&cs, &pod_labels, DO_NOT_SCHEDULE).unwrap()[0];
        assert!(!c.selector.matches(&pod_labels));
    }

    #[test]
    fn counting_skips_other_namespaces_terminating_pods_and_empty_selectors() {
        let foo = pod("a", &[("foo", "")], json!({}));
        let other_ns = crate::framework::testing::pod_in("ns1", "b", &[("foo", "")], json!({}));
        let leaving = terminating(&pod("c", &[("foo", "")], json!({})));
        let bar = pod("d", &[("bar", "")], json!({}));
        let pods = vec![foo, other_ns, leaving, bar];
        let sel =
            Selector::from_label_selector(&serde_json::from_value(exists("foo")).unwrap()).unwrap();
        assert_eq!(count_pods_match_selector(&pods, &sel, "default"), 1);
        assert_eq!(count_pods_match_selector(&pods, &sel, "ns1"), 1);
        assert_eq!(
            count_pods_match_selector(&pods, &Selector::everything(), "default"),
            0
        );
    }

    #[test]
    fn inclusion_policies() {
        let honor_both = Constraint {
            max_skew: 1,
            topology_key: "zone".into(),
            selector: Selector::everything(),
            min_domains: 1,
            node_affinity_policy: InclusionPolicy::Honor,
            node_taints_policy: InclusionPolicy::Honor,
        };
        let ignore_both = Constraint {
            node_affinity_policy: InclusionPolicy::Ignore,
            node_taints_policy: InclusionPolicy::Ignore,
            ..honor_both.clone()
        };
        let tainted = info(
            node_with(
                "t",
                &[("zone", "z"), ("foo", "")],
                json!({"taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}),
            ),
            &[],
        );
        let prefer_tainted = info(
            node_with(
                "p",
                &[("zone", "z"), ("foo", "")],
                json!({"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}),
            ),
            &[],
        );
        let unlabelled = info(node("u", &[("zone", "z")]), &[]);

        let plain = NodeInclusion::of(&pod("p", &[], json!({"nodeSelector": {"foo": ""}})));
        assert!(!plain.includes(&honor_both, &tainted), "untolerated taint");
        assert!(plain.includes(&ignore_both, &tainted));
        assert!(
            plain.includes(&honor_both, &prefer_tainted),
            "PreferNoSchedule does not exclude"
        );
        assert!(
            !plain.includes(&honor_both, &unlabelled),
            "nodeSelector mismatch"
        );
        assert!(plain.includes(&ignore_both, &unlabelled));

        let tolerant = NodeInclusion::of(&pod(
            "p",
            &[],
            json!({"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}]}),
        ));
        assert!(tolerant.includes(&honor_both, &tainted));
        let wrong_effect = NodeInclusion::of(&pod(
            "p",
            &[],
            json!({"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoExecute"}]}),
        ));
        assert!(!wrong_effect.includes(&honor_both, &tainted));
        let comparison = NodeInclusion::of(&pod(
            "p",
            &[],
            json!({"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Gt", "value": "1"}]}),
        ));
        assert!(
            !comparison.includes(&honor_both, &tainted),
            "Gt is gated off"
        );
    }

    #[test]
    fn required_affinity_ignores_broken_terms() {
        let affinity = |terms: serde_json::Value| {
            NodeInclusion::of(&pod(
                "p",
                &[],
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}),
            ))
        };
        let c = Constraint {
            max_skew: 1,
            topology_key: "zone".into(),
            selector: Selector::everything(),
            min_domains: 1,
            node_affinity_policy: InclusionPolicy::Honor,
            node_taints_policy: InclusionPolicy::Ignore,
        };
        let a = info(node("a", &[("zone", "z"), ("node", "a")]), &[]);
        let b = info(node("b", &[("zone", "z"), ("node", "b")]), &[]);
        let inc = affinity(json!([
            {"matchExpressions": [{"key": "node", "operator": "Gt", "values": ["x"]}]},
            {"matchExpressions": [{"key": "node", "operator": "In", "values": ["a"]}]},
        ]));
        assert!(inc.includes(&c, &a));
        assert!(!inc.includes(&c, &b));
        let inc = affinity(json!([
            {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["a"]}]},
        ]));
        assert!(!inc.includes(&c, &a));
        assert!(inc.includes(&c, &b));
    }
}
