//! The extender verbs' decisions as pure functions over a snapshot: the same
//! PreFilter/Filter/PreScore/Score runners and victim selection the
//! scheduling cycle uses, so an upstream kube-scheduler calling us sees our
//! exact verdicts.

use std::collections::BTreeMap;
use std::sync::Arc;

use rayon::prelude::*;

use crate::framework::{Code, CycleState, MAX_NODE_SCORE, NodeInfo, PodInfo, Snapshot, Status};
use crate::preemption::eligible;
use crate::preemption::pdb::PdbInfo;
use crate::preemption::victims::{DryRun, select_victims_on_node};
use crate::profile::Profile;
use crate::scheduling::{Nominated, filter_with_nominated};

use super::types::{
    FailedNodesMap, HostPriority, MAX_EXTENDER_PRIORITY, MIN_EXTENDER_PRIORITY, MetaPod,
    MetaVictims,
};

/// The reason given for a node the request names but the cache does not know.
pub const NODE_NOT_FOUND: &str = "node not found";

/// The filter verb's verdict, in the request's node order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterOutcome {
    pub feasible: Vec<String>,
    /// Unschedulable: preemption may help.
    pub failed: FailedNodesMap,
    /// UnschedulableAndUnresolvable (or unknown to us): nothing helps.
    pub unresolvable: FailedNodesMap,
    /// An internal plugin error; kube-scheduler fails the attempt with it.
    pub error: Option<String>,
}

impl FilterOutcome {
    fn reject(&mut self, node: &str, status: &Status) {
        let target = match status.code {
            Code::Unschedulable => &mut self.failed,
            _ => &mut self.unresolvable,
        };
        target.insert(node.to_string(), status.message());
    }
}

/// Runs the profile's PreFilter and Filter for `pod` on each of `nodes`, with
/// pods nominated to a node counted as upstream's RunFilterPluginsWithNominatedPods.
pub fn filter_nodes(
    profile: &Profile,
    snapshot: &Snapshot,
    nominated: &Nominated,
    pod: &PodInfo,
    nodes: &[String],
) -> FilterOutcome {
    let mut out = FilterOutcome::default();
    let mut known: Vec<(&String, &Arc<NodeInfo>)> = Vec::with_capacity(nodes.len());
    for name in nodes {
        match snapshot.get(name) {
            Some(info) => known.push((name, info)),
            None => {
                out.unresolvable
                    .insert(name.clone(), NODE_NOT_FOUND.to_string());
            }
        }
    }
    if let Some(err) = pod.parse_errors.first() {
        let status = Status::unresolvable(format!("invalid pod affinity: {err}"));
        for (name, _) in known {
            out.reject(name, &status);
        }
        return out;
    }
    let mut state = CycleState::new();
    let allowed = match profile.run_pre_filter(&mut state, pod, snapshot) {
        Ok((pre, narrowing)) => pre.node_names.map(|names| (names, narrowing)),
        Err(status) if status.is_rejected() => {
            // A PreFilter rejection applies to every node alike.
            for (name, _) in known {
                out.reject(name, &status);
            }
            return out;
        }
        Err(status) => {
            out.error = Some(status.message());
            return out;
        }
    };
    let mut candidates = Vec::with_capacity(known.len());
    for (name, info) in known {
        match &allowed {
            Some((names, narrowing)) if !names.contains(name) => {
                let reason = format!("node(s) didn't satisfy plugin(s) [{}]", narrowing.join(" "));
                out.unresolvable.insert(name.clone(), reason);
            }
            _ => candidates.push((name, info)),
        }
    }
    let state = &state;
    let statuses: Vec<Status> = candidates
        .par_iter()
        .map(|(_, node)| filter_with_nominated(profile, state, pod, node, nominated, snapshot))
        .collect();
    for ((name, _), status) in candidates.into_iter().zip(statuses) {
        if status.is_success() {
            out.feasible.push(name.clone());
        } else if status.is_rejected() {
            out.reject(name, &status);
        } else {
            out.error = Some(status.message());
            out.feasible.clear();
            return out;
        }
    }
    out
}

/// Maps a node's weighted score total onto the extender range.
///
/// Our total is Σ weightᵢ × scoreᵢ with every scoreᵢ in 0..=MaxNodeScore (100),
/// so it lies in 0..=100 × Σ weightᵢ, summed over the Score plugins that did
/// not skip this pod. The extender reply must be 0..=MaxExtenderPriority (10),
/// which kube-scheduler multiplies back by 10 and the extender's weight, so:
///
/// `score = total × 10 / (100 × Σ weightᵢ)`, integer division (rounding down),
/// clamped to 0..=10; 0 for every node when no plugin scored.
pub fn to_extender_score(total: i64, weight_sum: i64) -> i64 {
    if weight_sum <= 0 {
        return MIN_EXTENDER_PRIORITY;
    }
    let max_total = MAX_NODE_SCORE.saturating_mul(weight_sum);
    (total.saturating_mul(MAX_EXTENDER_PRIORITY) / max_total)
        .clamp(MIN_EXTENDER_PRIORITY, MAX_EXTENDER_PRIORITY)
}

/// Scores `pod` on `nodes` (kube-scheduler's feasible nodes) with the
/// profile's PreScore and Score, scaled by [`to_extender_score`]. Nodes the
/// cache does not know score 0. Err carries an internal plugin failure.
pub fn prioritize(
    profile: &Profile,
    snapshot: &Snapshot,
    pod: &PodInfo,
    nodes: &[String],
) -> Result<Vec<HostPriority>, String> {
    let known: Vec<Arc<NodeInfo>> = nodes
        .iter()
        .filter_map(|n| snapshot.get(n).cloned())
        .collect();
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    let mut weight_sum = 0;
    if !known.is_empty() && pod.parse_errors.is_empty() {
        let mut state = CycleState::new();
        // Some Score plugins read what their PreFilter computed. A rejection
        // here does not matter: kube-scheduler already found these nodes
        // feasible and only asks how good they are.
        match profile.run_pre_filter(&mut state, pod, snapshot) {
            Err(status) if status.code == Code::Error => return Err(status.message()),
            _ => {}
        }
        profile
            .run_pre_score(&mut state, pod, &known, snapshot)
            .map_err(|s| s.message())?;
        weight_sum = profile
            .score
            .iter()
            .filter(|(p, _)| !state.skip_score.contains(p.name()))
            .map(|(_, w)| *w)
            .sum();
        for s in profile
            .run_score(&state, pod, &known)
            .map_err(|s| s.message())?
        {
            totals.insert(s.name.to_string(), s.score);
        }
    }
    Ok(nodes
        .iter()
        .map(|host| HostPriority {
            host: host.clone(),
            score: to_extender_score(totals.get(host).copied().unwrap_or(0), weight_sum),
        })
        .collect())
}

/// For each of `nodes`, the victims preempting there would take according to
/// our cache and budgets (upstream's SelectVictimsOnNode), by UID. Nodes where
/// preemption does not help, or where it needs no victim (kube-scheduler
/// requires at least one per node), are left out. Err carries an internal
/// plugin failure.
pub fn preempt_nodes(
    profile: &Profile,
    snapshot: &Snapshot,
    nominated: &Nominated,
    pdbs: &[PdbInfo],
    pod: &PodInfo,
    nodes: &[String],
) -> Result<BTreeMap<String, MetaVictims>, String> {
    let mut out = BTreeMap::new();
    if !pod.parse_errors.is_empty() || eligible(pod, snapshot, None, &Default::default()).is_err() {
        return Ok(out);
    }
    let mut state = CycleState::new();
    let allowed = match profile.run_pre_filter(&mut state, pod, snapshot) {
        Ok((pre, _)) => pre.node_names,
        // Evicting pods can cure an Unschedulable PreFilter; the state the
        // PreFilters wrote is complete (the runner keeps going past it).
        Err(status) if status.code == Code::Unschedulable => None,
        Err(status) if status.is_rejected() => return Ok(out),
        Err(status) => return Err(status.message()),
    };
    let candidates: Vec<&Arc<NodeInfo>> = nodes
        .iter()
        .filter(|n| allowed.as_ref().is_none_or(|a| a.contains(*n)))
        .filter_map(|n| snapshot.get(n))
        .collect();
    let evicting = Default::default();
    let dry_run = DryRun {
        profile,
        state: &state,
        snapshot,
        nominated,
        pdbs,
        evicting: &evicting,
    };
    let results: Vec<_> = candidates
        .par_iter()
        .map(|node| select_victims_on_node(&dry_run, pod, node))
        .collect();
    for r in results {
        match r {
            Ok(c) if !c.victims.is_empty() => {
                let victims = MetaVictims {
                    pods: c
                        .victims
                        .iter()
                        .map(|v| MetaPod { uid: v.uid.clone() })
                        .collect(),
                    num_pdb_violations: c.num_pdb_violations as i64,
                };
                out.insert(c.node, victims);
            }
            Ok(_) => {}
            Err(s) if s.code == Code::Error => return Err(s.message()),
            Err(_) => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SchedulerConfig;
    use crate::framework::testing::{container, node, node_info, pod, snapshot};
    use serde_json::json;

    fn profile() -> Profile {
        Profile::from_config(&SchedulerConfig::default().profiles[0]).unwrap()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn bound(name: &str, node: &str, priority: i32, cpu: &str) -> Arc<PodInfo> {
        pod(
            name,
            &[],
            json!({"nodeName": node, "priority": priority, "containers": [container(cpu, "")]}),
        )
    }

    /// n1: 4 cpu, 3 used; n2: 4 cpu, empty; n3: tainted NoSchedule; n4: empty,
    /// labelled zone=b.
    fn cluster() -> Snapshot {
        let taint = json!({"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]});
        snapshot(
            vec![
                node_info(
                    node("n1", "4", "8Gi", &[], json!({})),
                    &[bound("busy", "n1", 0, "3")],
                ),
                node_info(node("n2", "4", "8Gi", &[], json!({})), &[]),
                node_info(node("n3", "4", "8Gi", &[], taint), &[]),
                node_info(node("n4", "4", "8Gi", &[("zone", "b")], json!({})), &[]),
            ],
            &[],
        )
    }

    #[test]
    fn filter_splits_nodes_by_how_they_failed() {
        let p = pod("web", &[], json!({"containers": [container("2", "")]}));
        let out = filter_nodes(
            &profile(),
            &cluster(),
            &Nominated::new(),
            &p,
            &names(&["n1", "n2", "n3", "gone"]),
        );
        assert_eq!(out.feasible, ["n2"]);
        assert_eq!(
            out.failed,
            [("n1".to_string(), "Insufficient cpu".to_string())].into()
        );
        assert_eq!(out.unresolvable["gone"], NODE_NOT_FOUND);
        assert!(
            out.unresolvable["n3"].contains("untolerated taint"),
            "{:?}",
            out.unresolvable
        );
        assert_eq!(out.error, None);
    }

    #[test]
    fn filter_reports_prefilter_narrowing_and_rejections_per_node() {
        // Required node affinity narrows the candidates in PreFilter.
        let p = pod(
            "web",
            &[],
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n4"]}]}]}}}}),
        );
        let out = filter_nodes(
            &profile(),
            &cluster(),
            &Nominated::new(),
            &p,
            &names(&["n2", "n4"]),
        );
        assert_eq!(out.feasible, ["n4"]);
        assert!(out.unresolvable.contains_key("n2"), "{out:?}");

        // A pod whose affinity cannot be compiled fails everywhere, unresolvably.
        let bad = pod(
            "bad",
            &[],
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "zone", "labelSelector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}}]}}}),
        );
        let out = filter_nodes(
            &profile(),
            &cluster(),
            &Nominated::new(),
            &bad,
            &names(&["n2"]),
        );
        assert!(out.feasible.is_empty());
        assert!(out.unresolvable["n2"].starts_with("invalid pod affinity"));
    }

    /// A constraint on a key no node has is valid to the apiserver: upstream
    /// then finds no node for a DoNotSchedule constraint (with its "missing
    /// required label" reason, so the FailedScheduling Event says why) and
    /// ignores a ScheduleAnyway one; other pods are unaffected.
    #[test]
    fn max_skew_on_a_key_no_node_has() {
        let spread = |when: &str| {
            pod(
                "web",
                &[("app", "web")],
                json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "no-such-key",
                    "whenUnsatisfiable": when, "labelSelector": {"matchLabels": {"app": "web"}}}]}),
            )
        };
        let all = names(&["n1", "n2", "n4"]);
        let out = filter_nodes(
            &profile(),
            &cluster(),
            &Nominated::new(),
            &spread("DoNotSchedule"),
            &all,
        );
        assert!(out.feasible.is_empty(), "{out:?}");
        assert_eq!(out.error, None);
        for n in &all {
            assert_eq!(
                out.unresolvable[n],
                "node(s) didn't match pod topology spread constraints (missing required label)"
            );
        }
        let out = filter_nodes(
            &profile(),
            &cluster(),
            &Nominated::new(),
            &spread("ScheduleAnyway"),
            &all,
        );
        assert_eq!(out.feasible, all);
        let scores = prioritize(&profile(), &cluster(), &spread("ScheduleAnyway"), &all).unwrap();
        assert_eq!(scores.len(), 3);
        let plain = pod("other", &[], json!({}));
        let out = filter_nodes(&profile(), &cluster(), &Nominated::new(), &plain, &all);
        assert_eq!(out.feasible, all);
    }

    #[test]
    fn filter_leaves_room_for_nominated_pods() {
        let p = pod(
            "web",
            &[],
            json!({"priority": 1, "containers": [container("3", "")]}),
        );
        let ahead = pod(
            "ahead",
            &[],
            json!({"priority": 5, "containers": [container("2", "")]}),
        );
        let nominated: Nominated = [("n2".to_string(), vec![ahead])].into();
        let out = filter_nodes(
            &profile(),
            &cluster(),
            &nominated,
            &p,
            &names(&["n2", "n4"]),
        );
        assert_eq!(out.feasible, ["n4"]);
        assert_eq!(out.failed["n2"], "Insufficient cpu");
    }

    #[test]
    fn score_mapping_is_floor_of_total_over_max() {
        assert_eq!(to_extender_score(0, 12), 0);
        assert_eq!(to_extender_score(1200, 12), 10);
        assert_eq!(to_extender_score(1199, 12), 9);
        assert_eq!(to_extender_score(600, 12), 5);
        assert_eq!(to_extender_score(50, 1), 5);
        assert_eq!(to_extender_score(5000, 1), 10, "clamped");
        assert_eq!(to_extender_score(-5, 1), 0, "clamped");
        assert_eq!(to_extender_score(70, 0), 0, "no plugin scored");
        assert_eq!(to_extender_score(i64::MAX, 1), 10, "no overflow");
    }

    #[test]
    fn prioritize_prefers_the_emptier_node_and_stays_in_range() {
        let p = pod("web", &[], json!({"containers": [container("1", "1Gi")]}));
        let scores =
            prioritize(&profile(), &cluster(), &p, &names(&["n1", "n2", "unknown"])).unwrap();
        assert_eq!(
            scores.iter().map(|s| s.host.as_str()).collect::<Vec<_>>(),
            ["n1", "n2", "unknown"]
        );
        for s in &scores {
            assert!((0..=10).contains(&s.score), "{s:?}");
        }
        assert!(scores[1].score > scores[0].score, "{scores:?}");
        assert_eq!(scores[2].score, 0);

        // Preferred node affinity for zone=b lifts n4 above n2.
        let p = pod(
            "web",
            &[],
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}}]}}}),
        );
        let scores = prioritize(&profile(), &cluster(), &p, &names(&["n2", "n4"])).unwrap();
        assert!(scores[1].score > scores[0].score, "{scores:?}");
    }

    #[test]
    fn preempt_returns_victims_by_uid_and_drops_hopeless_nodes() {
        let snap = snapshot(
            vec![
                node_info(
                    node("n1", "4", "8Gi", &[], json!({})),
                    &[bound("low", "n1", 1, "3"), bound("mid", "n1", 5, "1")],
                ),
                node_info(
                    node("n2", "4", "8Gi", &[], json!({})),
                    &[bound("high", "n2", 100, "4")],
                ),
                node_info(node("n3", "4", "8Gi", &[], json!({})), &[]),
            ],
            &[],
        );
        let p = pod(
            "urgent",
            &[],
            json!({"priority": 10, "containers": [container("3", "")]}),
        );
        let out = preempt_nodes(
            &profile(),
            &snap,
            &Nominated::new(),
            &[],
            &p,
            &names(&["n1", "n2", "n3", "gone"]),
        )
        .unwrap();
        assert_eq!(out.keys().collect::<Vec<_>>(), ["n1"], "{out:?}");
        assert_eq!(
            out["n1"].pods,
            [MetaPod {
                uid: "uid-default-low".into()
            }]
        );
        assert_eq!(out["n1"].num_pdb_violations, 0);

        // preemptionPolicy: Never preempts nothing.
        let never = pod(
            "polite",
            &[],
            json!({"priority": 10, "preemptionPolicy": "Never", "containers": [container("3", "")]}),
        );
        let out = preempt_nodes(
            &profile(),
            &snap,
            &Nominated::new(),
            &[],
            &never,
            &names(&["n1"]),
        )
        .unwrap();
        assert!(out.is_empty());
    }
}
