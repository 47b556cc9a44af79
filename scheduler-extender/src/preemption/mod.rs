//! Preemption (upstream's DefaultPreemption PostFilter): when a pod fits
//! nowhere, find nodes where evicting lower-priority pods makes it fit, pick
//! the cheapest, and nominate it. The decision is pure; evicting the victims
//! and setting `nominatedNodeName` happen in the scheduler.

pub mod candidates;
pub mod pdb;
pub mod victims;

use std::collections::{BTreeMap, HashSet};

use rayon::prelude::*;
use serde::Deserialize;

use crate::extender_client::{Extenders, VictimSet};
use crate::framework::{Code, CycleState, PodInfo, Snapshot, Status};
use crate::profile::Profile;
use crate::scheduling::{Diagnosis, FitError, Nominated};

pub use candidates::Candidate;
use pdb::PdbInfo;

pub const NAME: &str = "DefaultPreemption";
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";

/// DefaultPreemptionArgs.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreemptionArgs {
    #[serde(default = "default_percentage")]
    pub min_candidate_nodes_percentage: u32,
    #[serde(default = "default_absolute")]
    pub min_candidate_nodes_absolute: u32,
}

fn default_percentage() -> u32 {
    10
}
fn default_absolute() -> u32 {
    100
}

impl Default for PreemptionArgs {
    fn default() -> Self {
        Self {
            min_candidate_nodes_percentage: default_percentage(),
            min_candidate_nodes_absolute: default_absolute(),
        }
    }
}

impl PreemptionArgs {
    pub fn parse(args: Option<&serde_json::Value>) -> Result<Self, String> {
        let args: Self = crate::plugins::parse_args(NAME, args)?;
        if args.min_candidate_nodes_percentage > 100 {
            return Err(format!(
                "pluginConfig[{NAME}].args: minCandidateNodesPercentage: Invalid value: {}: not in valid range [0, 100]",
                args.min_candidate_nodes_percentage
            ));
        }
        if args.min_candidate_nodes_percentage == 0 && args.min_candidate_nodes_absolute == 0 {
            return Err(format!(
                "pluginConfig[{NAME}].args: minCandidateNodesPercentage and minCandidateNodesAbsolute cannot both be zero"
            ));
        }
        Ok(args)
    }
}

/// What preemption decided.
#[derive(Debug)]
pub enum Outcome {
    /// Evict `victims` on `node` and nominate it.
    Preempt(Candidate),
    /// Nothing to do; the message goes after "preemption: " in the event.
    NotHelpful(String),
}

/// Whether the pod may preempt at all (upstream's PodEligibleToPreemptOthers).
/// `own_nomination` is where this scheduler nominated the pod, which it
/// knows before the pod's status says so; `evicting` holds the UIDs of pods
/// this scheduler deleted whose deletion the cache has not seen yet.
pub fn eligible(
    pod: &PodInfo,
    snapshot: &Snapshot,
    own_nomination: Option<&str>,
    evicting: &HashSet<String>,
) -> Result<(), String> {
    let spec = pod.pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Err("not eligible due to preemptionPolicy=Never.".into());
    }
    // A pod that already preempted waits for its victims to go away instead
    // of preempting again.
    let nominated = own_nomination.or_else(|| {
        pod.pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
    });
    // A victim counts as terminating from the moment it was deleted, not
    // only once the watch says so: a lagging watch would otherwise show the
    // node still full and the pod would take a second set of victims.
    if let Some(node) = nominated.and_then(|n| snapshot.get(n))
        && node
            .pods
            .iter()
            .any(|p| p.priority < pod.priority && p.is_leaving(evicting))
    {
        return Err("not eligible due to a terminating pod on the nominated node.".into());
    }
    Ok(())
}

/// The scheduling cycle a preemption decision is made in.
pub struct Cycle<'a> {
    pub profile: &'a Profile,
    pub state: &'a CycleState,
    pub pod: &'a PodInfo,
    pub snapshot: &'a Snapshot,
    pub nominated: &'a Nominated,
    /// Where this scheduler already nominated the pod, if anywhere.
    pub own_nomination: Option<&'a str>,
    /// Victims deleted by this scheduler that the cache still shows alive.
    pub evicting: &'a HashSet<String>,
    /// Preempting extenders narrow the candidates before one is picked.
    pub extenders: &'a Extenders,
}

/// Runs the preemption decision for a pod that failed with `fit`.
pub fn preempt(
    cycle: &Cycle,
    args: &PreemptionArgs,
    pdbs: &[PdbInfo],
    fit: &FitError,
    seed: u64,
) -> Outcome {
    let Cycle {
        profile,
        state,
        pod,
        snapshot,
        nominated,
        own_nomination,
        evicting,
        extenders,
    } = *cycle;
    if let Err(msg) = eligible(pod, snapshot, own_nomination, evicting) {
        return Outcome::NotHelpful(msg);
    }
    // Only nodes that failed for a reason eviction can fix are candidates.
    let mut statuses: BTreeMap<String, Status> = BTreeMap::new();
    let mut potential = vec![];
    for node in &snapshot.nodes {
        match fit.diagnosis.node_statuses.get(&node.name) {
            Some(s) if s.code == Code::Unschedulable => potential.push(node.clone()),
            _ if fit
                .diagnosis
                .pre_filter
                .as_ref()
                .is_some_and(|s| s.code == Code::Unschedulable) =>
            {
                potential.push(node.clone())
            }
            _ => {
                statuses.insert(node.name.clone(), Status::unresolvable(NOT_HELPFUL));
            }
        }
    }
    if potential.is_empty() {
        return Outcome::NotHelpful(no_candidates_message(snapshot.nodes.len(), statuses));
    }
    let wanted = candidates::num_candidates(
        potential.len(),
        args.min_candidate_nodes_percentage,
        args.min_candidate_nodes_absolute,
    );
    let offset = (seed as usize) % potential.len();
    potential.rotate_left(offset);
    // Dry runs in parallel over a window; stop once enough candidates that
    // violate no budget are found.
    let dry_run = victims::DryRun {
        profile,
        state,
        snapshot,
        nominated,
        pdbs,
        evicting,
    };
    let mut found: Vec<Candidate> = vec![];
    for chunk in potential.chunks(wanted.max(16)) {
        let results: Vec<(String, Result<Candidate, Status>)> = chunk
            .par_iter()
            .map(|node| {
                let r = victims::select_victims_on_node(&dry_run, pod, node);
                (node.name.clone(), r)
            })
            .collect();
        for (name, r) in results {
            match r {
                Ok(c) => found.push(c),
                Err(s) => {
                    statuses.insert(name, s);
                }
            }
        }
        if found.iter().filter(|c| c.num_pdb_violations == 0).count() >= wanted {
            break;
        }
    }
    let found = match ask_extenders(extenders, pod, snapshot, found) {
        Ok(found) => found,
        // Upstream's PostFilter fails with the extender's error as its message.
        Err(msg) => return Outcome::NotHelpful(msg),
    };
    let non_violating: Vec<Candidate> = found
        .iter()
        .filter(|c| c.num_pdb_violations == 0)
        .cloned()
        .collect();
    let pool = if non_violating.is_empty() {
        found
    } else {
        non_violating
    };
    match candidates::pick_one(&pool) {
        Some(i) => Outcome::Preempt(pool[i].clone()),
        None => Outcome::NotHelpful(no_candidates_message(snapshot.nodes.len(), statuses)),
    }
}

/// Upstream's callExtenders: the preempting extenders interested in the
/// pod see every candidate and keep those (with the victims) they accept.
fn ask_extenders(
    extenders: &Extenders,
    pod: &PodInfo,
    snapshot: &Snapshot,
    found: Vec<Candidate>,
) -> Result<Vec<Candidate>, String> {
    if found.is_empty()
        || !extenders
            .iter()
            .any(|e| e.supports_preemption() && e.is_interested(&pod.pod))
    {
        return Ok(found);
    }
    let candidates = found
        .into_iter()
        .map(|c| {
            let set = VictimSet {
                pods: c.victims,
                num_pdb_violations: c.num_pdb_violations,
            };
            (c.node, set)
        })
        .collect();
    let lookup = |name: &str| snapshot.get(name).cloned();
    let narrowed =
        crate::scheduling::block_on(extenders.process_preemption(&pod.pod, candidates, &lookup))
            .map_err(|e| e.to_string())?;
    Ok(narrowed
        .into_iter()
        .map(|(node, set)| Candidate {
            node,
            victims: set.pods,
            num_pdb_violations: set.num_pdb_violations,
        })
        .collect())
}

fn no_candidates_message(num_all_nodes: usize, statuses: BTreeMap<String, Status>) -> String {
    let fit = FitError {
        num_all_nodes,
        diagnosis: Diagnosis {
            node_statuses: statuses,
            ..Default::default()
        },
    };
    fit.message()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testing::{node, node_info, pod, snapshot};
    use serde_json::json;

    fn eligibility(victim_evicting: bool, victim_priority: i32) -> Result<(), String> {
        let victim = pod(
            "victim",
            &[],
            json!({"priority": victim_priority, "nodeName": "n1"}),
        );
        let snap = snapshot(
            vec![node_info(
                node("n1", "1", "1Gi", &[], json!({})),
                std::slice::from_ref(&victim),
            )],
            &[],
        );
        let preemptor = pod("preemptor", &[], json!({"priority": 100}));
        let evicting: HashSet<String> = if victim_evicting {
            [victim.uid.clone()].into()
        } else {
            HashSet::new()
        };
        eligible(&preemptor, &snap, Some("n1"), &evicting)
    }

    #[test]
    fn a_deleted_victim_the_watch_has_not_shown_yet_makes_the_preemptor_wait() {
        assert_eq!(
            eligibility(true, 0).unwrap_err(),
            "not eligible due to a terminating pod on the nominated node."
        );
    }

    #[test]
    fn a_live_pod_on_the_nominated_node_leaves_the_preemptor_eligible() {
        assert!(eligibility(false, 0).is_ok());
    }

    #[test]
    fn only_lower_priority_evictions_hold_the_preemptor_back() {
        assert!(eligibility(true, 100).is_ok());
    }
}
