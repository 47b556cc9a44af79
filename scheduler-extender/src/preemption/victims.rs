//! Victim selection on one node (upstream's SelectVictimsOnNode): remove every
//! lower-priority pod, check the preemptor fits, then give back ("reprieve")
//! as many as possible — PDB-protected pods first, most important first.
//!
//! Beyond upstream: lower-priority pods already on their way out (deleted,
//! whether or not the watch has shown it yet) are treated as gone — never
//! reprieved, never counted as victims. Upstream reprieves them like any
//! other pod, so a preemption that comes before an earlier one's victims
//! have vanished evicts fresh pods while keeping the doomed ones "in place".

use std::collections::HashSet;
use std::sync::Arc;

use crate::framework::{CycleState, NodeInfo, PodInfo, Snapshot, Status};
use crate::profile::Profile;
use crate::scheduling::{Nominated, filter_with_nominated};

use super::candidates::Candidate;
use super::pdb::{PdbInfo, split_by_pdb};

pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// More important pods sort first: higher priority, then the one that started
/// earlier (it has been running longer).
pub fn more_important(a: &Arc<PodInfo>, b: &Arc<PodInfo>) -> std::cmp::Ordering {
    let start = |p: &PodInfo| super::candidates::start_time(p);
    b.priority
        .cmp(&a.priority)
        .then_with(|| match (start(a), start(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        })
}

struct Trial<'a> {
    profile: &'a Profile,
    preemptor: &'a PodInfo,
    snapshot: &'a Snapshot,
    nominated: &'a Nominated,
    state: CycleState,
    node: NodeInfo,
}

impl Trial<'_> {
    fn remove(&mut self, victim: &Arc<PodInfo>) -> Result<(), Status> {
        self.node.remove_pod(&victim.uid);
        self.profile.run_remove_pod(
            &mut self.state,
            self.preemptor,
            victim,
            &self.node,
            self.snapshot,
        )
    }

    fn add(&mut self, victim: &Arc<PodInfo>) -> Result<(), Status> {
        self.node.add_pod(victim.clone());
        self.profile.run_add_pod(
            &mut self.state,
            self.preemptor,
            victim,
            &self.node,
            self.snapshot,
        )
    }

    fn fits(&self) -> Status {
        filter_with_nominated(
            self.profile,
            &self.state,
            self.preemptor,
            &self.node,
            self.nominated,
            self.snapshot,
        )
    }
}

/// What a dry run on any node of one cycle shares.
pub struct DryRun<'a> {
    pub profile: &'a Profile,
    pub state: &'a CycleState,
    pub snapshot: &'a Snapshot,
    pub nominated: &'a Nominated,
    pub pdbs: &'a [PdbInfo],
    /// Pods this scheduler deleted that the cache still shows alive.
    pub evicting: &'a HashSet<String>,
}

/// The victims preempting on `node` would take, or why it would not help.
/// A candidate may have no victims when pods already leaving make the room.
pub fn select_victims_on_node(
    run: &DryRun,
    preemptor: &PodInfo,
    node: &NodeInfo,
) -> Result<Candidate, Status> {
    let mut trial = Trial {
        profile: run.profile,
        preemptor,
        snapshot: run.snapshot,
        nominated: run.nominated,
        state: run.state.clone(),
        node: node.clone(),
    };
    let (leaving, mut potential): (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) = node
        .pods
        .iter()
        .filter(|p| p.priority < preemptor.priority)
        .cloned()
        .partition(|p| p.is_leaving(run.evicting));
    if potential.is_empty() && leaving.is_empty() {
        return Err(Status::unresolvable(NO_VICTIMS));
    }
    for v in leaving.iter().chain(&potential) {
        trial.remove(v)?;
    }
    let status = trial.fits();
    if !status.is_success() {
        return Err(status);
    }
    potential.sort_by(more_important);
    let (violating, fine) = split_by_pdb(&potential, run.pdbs);
    let mut victims = vec![];
    let mut num_pdb_violations = 0;
    for (pods, violates) in [(violating, true), (fine, false)] {
        for p in pods {
            trial.add(&p)?;
            if !trial.fits().is_success() {
                trial.remove(&p)?;
                victims.push(p);
                if violates {
                    num_pdb_violations += 1;
                }
            }
        }
    }
    victims.sort_by(more_important);
    Ok(Candidate {
        node: node.name.clone(),
        victims,
        num_pdb_violations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SchedulerConfig;
    use crate::framework::testing::{node, node_info, pod, snapshot};
    use crate::preemption::pdb::PdbInfo;
    use serde_json::json;

    fn profile() -> Profile {
        Profile::from_config(&SchedulerConfig::default().profiles[0]).unwrap()
    }

    fn p(name: &str, priority: i32, cpu: &str, labels: &[(&str, &str)]) -> Arc<PodInfo> {
        pod(
            name,
            labels,
            json!({"priority": priority, "nodeName": "n1", "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}),
        )
    }

    fn preemptor(priority: i32, cpu: &str) -> Arc<PodInfo> {
        pod(
            "preemptor",
            &[],
            json!({"priority": priority, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}),
        )
    }

    fn run(pods: &[Arc<PodInfo>], who: &PodInfo, pdbs: &[PdbInfo]) -> Result<Candidate, Status> {
        run_evicting(pods, who, pdbs, &HashSet::new())
    }

    fn run_evicting(
        pods: &[Arc<PodInfo>],
        who: &PodInfo,
        pdbs: &[PdbInfo],
        evicting: &HashSet<String>,
    ) -> Result<Candidate, Status> {
        let profile = profile();
        let snap = snapshot(
            vec![node_info(node("n1", "4", "8Gi", &[], json!({})), pods)],
            &[],
        );
        let mut state = CycleState::new();
        profile.run_pre_filter(&mut state, who, &snap).unwrap();
        let n = snap.get("n1").unwrap().clone();
        let run = DryRun {
            profile: &profile,
            state: &state,
            snapshot: &snap,
            nominated: &Nominated::new(),
            pdbs,
            evicting,
        };
        select_victims_on_node(&run, who, &n)
    }

    fn terminating(pod: Arc<PodInfo>) -> Arc<PodInfo> {
        let mut p = (*pod.pod).clone();
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:00Z".parse().unwrap(),
        ));
        Arc::new(PodInfo::new(Arc::new(p)))
    }

    #[test]
    fn pods_already_leaving_make_room_without_new_victims() {
        // A deletes before the watch shows it counts as much as one it shows.
        let shown = vec![
            terminating(p("a", 1, "1", &[])),
            p("b", 1, "1", &[]),
            p("c", 1, "1", &[]),
            p("d", 1, "1", &[]),
        ];
        let c = run(&shown, &preemptor(10, "1"), &[]).unwrap();
        assert!(c.victims.is_empty(), "{:?}", names(&c));
        let unseen = vec![
            p("a", 1, "1", &[]),
            p("b", 1, "1", &[]),
            p("c", 1, "1", &[]),
            p("d", 1, "1", &[]),
        ];
        let evicting: HashSet<String> = [unseen[0].uid.clone()].into();
        let c = run_evicting(&unseen, &preemptor(10, "1"), &[], &evicting).unwrap();
        assert!(c.victims.is_empty(), "{:?}", names(&c));
    }

    #[test]
    fn pods_already_leaving_are_neither_reprieved_nor_counted() {
        // Upstream would reprieve the more important (leaving) "a" and take
        // two fresh victims; the room "a" leaves needs only one more.
        let pods = vec![
            terminating(p("a", 4, "1", &[])),
            p("b", 3, "1", &[]),
            p("c", 2, "1", &[]),
            p("d", 1, "1", &[]),
        ];
        let c = run(&pods, &preemptor(10, "2"), &[]).unwrap();
        assert_eq!(names(&c), vec!["d"]);
    }

    fn names(c: &Candidate) -> Vec<&str> {
        c.victims.iter().map(|v| v.name.as_str()).collect()
    }

    #[test]
    fn evicts_the_fewest_and_least_important() {
        let pods = vec![
            p("a", 4, "1", &[]),
            p("b", 3, "1", &[]),
            p("c", 2, "1", &[]),
            p("d", 1, "1", &[]),
        ];
        let c = run(&pods, &preemptor(10, "2"), &[]).unwrap();
        assert_eq!(
            names(&c),
            ["c", "d"],
            "the two lowest priorities go, most important first"
        );
        assert_eq!(c.num_pdb_violations, 0);
    }

    #[test]
    fn never_evicts_equal_or_higher_priority() {
        let pods = vec![
            p("peer", 10, "2", &[]),
            p("boss", 20, "1", &[]),
            p("low", 1, "1", &[]),
        ];
        let err = run(&pods, &preemptor(10, "2"), &[]).unwrap_err();
        assert!(err.message().contains("Insufficient cpu"), "{err}");
        let err = run(&[p("peer", 10, "4", &[])], &preemptor(10, "1"), &[]).unwrap_err();
        assert_eq!(err.message(), NO_VICTIMS);
    }

    #[test]
    fn pdb_protected_pods_are_reprieved_first() {
        let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "b", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "guarded"}}},
            "status": {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1},
        }))
        .unwrap();
        // Equal priorities: without the budget the earliest-listed would stay.
        let pods = vec![
            p("x", 1, "1", &[]),
            p("y", 1, "1", &[]),
            p("z", 1, "1", &[]),
            p("g", 1, "1", &[("app", "guarded")]),
        ];
        let c = run(&pods, &preemptor(10, "3"), &[PdbInfo::new(&pdb)]).unwrap();
        assert!(!names(&c).contains(&"g"), "{:?}", names(&c));
        assert_eq!(c.victims.len(), 3);
        assert_eq!(c.num_pdb_violations, 0);
    }

    #[test]
    fn counts_violations_when_protected_pods_must_go() {
        let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "b", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "guarded"}}},
            "status": {"disruptionsAllowed": 0, "currentHealthy": 2, "desiredHealthy": 2, "expectedPods": 2},
        }))
        .unwrap();
        let pods = vec![
            p("g1", 1, "2", &[("app", "guarded")]),
            p("g2", 1, "2", &[("app", "guarded")]),
        ];
        let c = run(&pods, &preemptor(10, "4"), &[PdbInfo::new(&pdb)]).unwrap();
        assert_eq!(c.victims.len(), 2);
        assert_eq!(c.num_pdb_violations, 2);
    }
}
