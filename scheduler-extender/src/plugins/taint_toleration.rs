//! TaintToleration: a node's NoSchedule/NoExecute taints must all be
//! tolerated by the pod; among feasible nodes, fewer untolerated
//! PreferNoSchedule taints score higher.
//!
//! The toleration matching here is upstream's `Toleration.ToleratesTaint`
//! with the `TaintTolerationComparisonOperators` gate at its v1.37 default
//! (off): `Lt`/`Gt` tolerations tolerate nothing. Other plugins that need to
//! match tolerations (NodeUnschedulable, …) use [`tolerations_tolerate`].

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Taint, Toleration};
use serde_json::Value;

use crate::framework::{
    CycleState, FilterPlugin, MAX_NODE_SCORE, NodeInfo, NodeScore, Plugin, PodInfo, PreScorePlugin,
    ScorePlugin, Snapshot, Status, default_normalize_score,
};

pub const NAME: &str = "TaintToleration";

/// Upstream's v1.37 Filter reason: deliberately node-independent (it no
/// longer names the taint) so pods with equal tolerations share a signature.
pub const ERR_REASON_UNTOLERATED: &str = "node(s) had untolerated taint(s)";

pub const EFFECT_NO_SCHEDULE: &str = "NoSchedule";
pub const EFFECT_NO_EXECUTE: &str = "NoExecute";
pub const EFFECT_PREFER_NO_SCHEDULE: &str = "PreferNoSchedule";

/// Whether `toleration` tolerates `taint`: an empty effect matches every
/// effect, an empty key (only valid with `Exists`) every key, `Exists` every
/// value, and `Equal` (or no operator) the exact value.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        "Exists" => true,
        // Lt/Gt need the alpha comparison-operators gate, off in v1.37; any
        // other operator is invalid and tolerates nothing.
        _ => false,
    }
}

pub fn tolerations_tolerate(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

pub fn pod_tolerations(pod: &PodInfo) -> &[Toleration] {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

/// The first NoSchedule/NoExecute taint none of `tolerations` tolerates.
pub fn first_untolerated_do_not_schedule<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
) -> Option<&'a Taint> {
    taints.iter().find(|t| {
        (t.effect == EFFECT_NO_SCHEDULE || t.effect == EFFECT_NO_EXECUTE)
            && !tolerations_tolerate(tolerations, t)
    })
}

/// Tolerations that can match a PreferNoSchedule taint: those with that
/// effect or with none (an empty effect matches all effects).
fn prefer_no_schedule_tolerations(tolerations: &[Toleration]) -> Vec<Toleration> {
    tolerations
        .iter()
        .filter(|t| {
            let effect = t.effect.as_deref().unwrap_or_default();
            effect.is_empty() || effect == EFFECT_PREFER_NO_SCHEDULE
        })
        .cloned()
        .collect()
}

fn count_intolerable_prefer_no_schedule(taints: &[Taint], tolerations: &[Toleration]) -> i64 {
    taints
        .iter()
        .filter(|t| t.effect == EFFECT_PREFER_NO_SCHEDULE && !tolerations_tolerate(tolerations, t))
        .count() as i64
}

#[derive(Clone)]
struct PreScoreState {
    tolerations_prefer_no_schedule: Arc<Vec<Toleration>>,
}

pub struct TaintToleration;

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
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

impl FilterPlugin for TaintToleration {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match first_untolerated_do_not_schedule(node.taints(), pod_tolerations(pod)) {
            None => Status::success(),
            Some(_) => Status::unresolvable(ERR_REASON_UNTOLERATED),
        }
    }
}

impl PreScorePlugin for TaintToleration {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        _snapshot: &Snapshot,
    ) -> Status {
        state.write(
            NAME,
            PreScoreState {
                tolerations_prefer_no_schedule: Arc::new(prefer_no_schedule_tolerations(
                    pod_tolerations(pod),
                )),
            },
        );
        Status::success()
    }
}

impl ScorePlugin for TaintToleration {
    /// Raw score: the number of untolerated PreferNoSchedule taints, which
    /// `normalize` turns around so that fewer is better.
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let count = match state.read::<PreScoreState>(NAME) {
            Some(s) => count_intolerable_prefer_no_schedule(
                node.taints(),
                &s.tolerations_prefer_no_schedule,
            ),
            // PreScore disabled in the profile: the same list, computed here.
            None => count_intolerable_prefer_no_schedule(
                node.taints(),
                &prefer_no_schedule_tolerations(pod_tolerations(pod)),
            ),
        };
        Ok(count)
    }

    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, scores: &mut [NodeScore]) -> Status {
        default_normalize_score(MAX_NODE_SCORE, true, scores);
        Status::success()
    }
}

/// TaintToleration has no args; like upstream, any given are ignored.
pub fn new(_args: Option<&Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(TaintToleration))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::framework::testing::{node, node_info, pod, snapshot};
    use serde_json::{Value, json};

    fn taint(key: &str, value: &str, effect: &str) -> Value {
        json!({"key": key, "value": value, "effect": effect})
    }

    fn toleration(key: &str, op: &str, value: &str, effect: &str) -> Value {
        json!({"key": key, "operator": op, "value": value, "effect": effect})
    }

    fn tainted(name: &str, taints: Vec<Value>) -> NodeInfo {
        node_info(node(name, "4", "8Gi", &[], json!({"taints": taints})), &[])
    }

    fn tolerating(tolerations: Vec<Value>) -> Arc<PodInfo> {
        pod("p", &[], json!({"tolerations": tolerations}))
    }

    #[test]
    fn toleration_matching_rules() {
        let t = |v: Value| -> Toleration { serde_json::from_value(v).unwrap() };
        let taint_of = |v: Value| -> Taint { serde_json::from_value(v).unwrap() };
        let foo_bar = taint_of(taint("foo", "bar", "NoSchedule"));
        let foo_novalue = taint_of(json!({"key": "foo", "effect": "NoSchedule"}));
        let numeric = taint_of(taint("foo", "5", "NoSchedule"));
        let cases: Vec<(&str, Toleration, &Taint, bool)> = vec![
            (
                "Exists, same key/effect, taint without value",
                t(toleration("foo", "Exists", "", "NoSchedule")),
                &foo_novalue,
                true,
            ),
            (
                "Exists ignores the value",
                t(toleration("foo", "Exists", "", "NoSchedule")),
                &foo_bar,
                true,
            ),
            (
                "empty key with Exists matches every key",
                t(json!({"operator": "Exists", "effect": "NoSchedule"})),
                &foo_bar,
                true,
            ),
            (
                "Equal with the same value",
                t(toleration("foo", "Equal", "bar", "NoSchedule")),
                &foo_bar,
                true,
            ),
            (
                "no operator means Equal",
                t(json!({"key": "foo", "value": "bar", "effect": "NoSchedule"})),
                &foo_bar,
                true,
            ),
            (
                "Equal with another value",
                t(toleration("foo", "Equal", "baz", "NoSchedule")),
                &foo_bar,
                false,
            ),
            (
                "different effect",
                t(toleration("foo", "Equal", "bar", "NoExecute")),
                &foo_bar,
                false,
            ),
            (
                "empty effect matches every effect",
                t(json!({"key": "foo", "operator": "Equal", "value": "bar"})),
                &foo_bar,
                true,
            ),
            (
                "different key",
                t(toleration("other", "Exists", "", "NoSchedule")),
                &foo_bar,
                false,
            ),
            (
                "Gt needs the comparison-operators gate (off)",
                t(toleration("foo", "Gt", "1", "NoSchedule")),
                &numeric,
                false,
            ),
        ];
        for (name, tol, taint, want) in cases {
            assert_eq!(tolerates(&tol, taint), want, "{name}");
        }
    }

    #[test]
    fn filter() {
        let cases: Vec<(&str, Arc<PodInfo>, NodeInfo, bool)> = vec![
            (
                "a pod with no tolerations on a node without taints",
                tolerating(vec![]),
                tainted("n", vec![]),
                true,
            ),
            (
                "a pod without tolerations on a NoSchedule-tainted node",
                tolerating(vec![]),
                tainted("n", vec![taint("dedicated", "user1", "NoSchedule")]),
                false,
            ),
            (
                "a pod tolerating the taint by Equal",
                tolerating(vec![toleration(
                    "dedicated",
                    "Equal",
                    "user1",
                    "NoSchedule",
                )]),
                tainted("n", vec![taint("dedicated", "user1", "NoSchedule")]),
                true,
            ),
            (
                "a toleration with another value does not tolerate",
                tolerating(vec![toleration(
                    "dedicated",
                    "Equal",
                    "user2",
                    "NoSchedule",
                )]),
                tainted("n", vec![taint("dedicated", "user1", "NoSchedule")]),
                false,
            ),
            (
                "Exists tolerates any value",
                tolerating(vec![toleration("foo", "Exists", "", "NoSchedule")]),
                tainted("n", vec![taint("foo", "bar", "NoSchedule")]),
                true,
            ),
            (
                "every NoSchedule/NoExecute taint must be tolerated",
                tolerating(vec![toleration(
                    "dedicated",
                    "Equal",
                    "user2",
                    "NoSchedule",
                )]),
                tainted(
                    "n",
                    vec![
                        taint("dedicated", "user2", "NoSchedule"),
                        taint("foo", "bar", "NoExecute"),
                    ],
                ),
                false,
            ),
            (
                "PreferNoSchedule taints do not filter",
                tolerating(vec![toleration("foo", "Equal", "bar", "PreferNoSchedule")]),
                tainted(
                    "n",
                    vec![
                        taint("foo", "bar", "PreferNoSchedule"),
                        taint("other", "x", "PreferNoSchedule"),
                    ],
                ),
                true,
            ),
            (
                "a toleration with another effect does not tolerate",
                tolerating(vec![toleration("foo", "Equal", "bar", "PreferNoSchedule")]),
                tainted("n", vec![taint("foo", "bar", "NoSchedule")]),
                false,
            ),
        ];
        for (name, pod, node, fits) in cases {
            let status = TaintToleration.filter(&CycleState::new(), &pod, &node);
            if fits {
                assert!(status.is_success(), "{name}: {status}");
            } else {
                assert_eq!(status.code, Code::UnschedulableAndUnresolvable, "{name}");
                assert_eq!(status.reasons, vec![ERR_REASON_UNTOLERATED], "{name}");
            }
        }
    }

    fn scores(pod: &PodInfo, nodes: Vec<NodeInfo>, run_pre_score: bool) -> Vec<i64> {
        let snap = snapshot(nodes, &[]);
        let mut state = CycleState::new();
        if run_pre_score {
            assert!(
                TaintToleration
                    .pre_score(&mut state, pod, &snap.nodes, &snap)
                    .is_success()
            );
        }
        let mut out: Vec<NodeScore> = snap
            .nodes
            .iter()
            .map(|n| NodeScore {
                name: n.name.as_str(),
                score: TaintToleration.score(&state, pod, n).unwrap(),
            })
            .collect();
        assert!(
            TaintToleration
                .normalize(&state, pod, &mut out)
                .is_success()
        );
        out.into_iter().map(|s| s.score).collect()
    }

    #[test]
    fn score() {
        type Case = (&'static str, Arc<PodInfo>, Vec<NodeInfo>, Vec<i64>);
        let cases: Vec<Case> = vec![
            (
                "a node whose PreferNoSchedule taints are tolerated scores highest",
                tolerating(vec![toleration("foo", "Equal", "bar", "PreferNoSchedule")]),
                vec![
                    tainted("n1", vec![taint("foo", "bar", "PreferNoSchedule")]),
                    tainted("n2", vec![taint("foo", "blah", "PreferNoSchedule")]),
                ],
                vec![100, 0],
            ),
            (
                "every PreferNoSchedule taint tolerated: all nodes equal",
                tolerating(vec![
                    toleration("cpu-type", "Equal", "arm64", "PreferNoSchedule"),
                    toleration("disk-type", "Equal", "ssd", "PreferNoSchedule"),
                ]),
                vec![
                    tainted("n1", vec![]),
                    tainted("n2", vec![taint("cpu-type", "arm64", "PreferNoSchedule")]),
                    tainted(
                        "n3",
                        vec![
                            taint("cpu-type", "arm64", "PreferNoSchedule"),
                            taint("disk-type", "ssd", "PreferNoSchedule"),
                        ],
                    ),
                ],
                vec![100, 100, 100],
            ),
            (
                "the more untolerated PreferNoSchedule taints, the lower",
                tolerating(vec![toleration("foo", "Equal", "bar", "PreferNoSchedule")]),
                vec![
                    tainted("n1", vec![]),
                    tainted("n2", vec![taint("cpu-type", "arm64", "PreferNoSchedule")]),
                    tainted(
                        "n3",
                        vec![
                            taint("cpu-type", "arm64", "PreferNoSchedule"),
                            taint("disk-type", "ssd", "PreferNoSchedule"),
                        ],
                    ),
                ],
                vec![100, 50, 0],
            ),
            (
                "only PreferNoSchedule taints count",
                tolerating(vec![toleration("foo", "Equal", "bar", "NoSchedule")]),
                vec![
                    tainted("n1", vec![]),
                    tainted("n2", vec![taint("cpu-type", "arm64", "NoSchedule")]),
                    tainted("n3", vec![taint("cpu-type", "arm64", "PreferNoSchedule")]),
                ],
                vec![100, 100, 0],
            ),
            (
                "a NoSchedule toleration does not tolerate a PreferNoSchedule taint",
                tolerating(vec![toleration("foo", "Equal", "bar", "NoSchedule")]),
                vec![
                    tainted("n1", vec![taint("foo", "bar", "PreferNoSchedule")]),
                    tainted("n2", vec![]),
                ],
                vec![0, 100],
            ),
            (
                "a toleration without effect tolerates PreferNoSchedule",
                tolerating(vec![json!({"key": "foo", "operator": "Exists"})]),
                vec![
                    tainted("n1", vec![taint("foo", "bar", "PreferNoSchedule")]),
                    tainted("n2", vec![taint("baz", "", "PreferNoSchedule")]),
                ],
                vec![100, 0],
            ),
        ];
        for (name, pod, nodes, want) in cases {
            assert_eq!(scores(&pod, nodes.clone(), true), want, "{name}");
            assert_eq!(scores(&pod, nodes, false), want, "{name} (no PreScore)");
        }
    }
}
