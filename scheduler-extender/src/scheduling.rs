//! One scheduling decision over a snapshot, as upstream's schedulePod: PreFilter,
//! Filter across nodes in parallel (stopping once enough feasible nodes are
//! found, starting where the previous cycle stopped), PreScore, Score, and the
//! pick of the best node (random among ties). Pure: no API calls.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use crate::extender_client::Extenders;
use crate::framework::{CycleState, NodeInfo, PodInfo, Snapshot, Status};
use crate::profile::Profile;

/// Pods nominated to each node (by a preemption), which lower- or
/// equal-priority pods must leave room for.
pub type Nominated = HashMap<String, Vec<Arc<PodInfo>>>;

/// Nodes per unit of parallel filtering work: a filter pass over one node
/// takes about a microsecond, far less than waking a worker thread.
const FILTER_CHUNK: usize = 32;

/// Runs the Filters as upstream's RunFilterPluginsWithNominatedPods: when pods
/// of at least this pod's priority are nominated to the node, the pod must fit
/// both with them added and without them (their affinity may be what lets it fit).
pub fn filter_with_nominated(
    profile: &Profile,
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
    nominated: &Nominated,
    snapshot: &Snapshot,
) -> Status {
    // Nearly always empty: skip hashing the node name for every node.
    if nominated.is_empty() {
        return profile.run_filter(state, pod, node);
    }
    let ahead: Vec<&Arc<PodInfo>> = nominated
        .get(&node.name)
        .map(|list| {
            list.iter()
                .filter(|p| p.priority >= pod.priority && p.uid != pod.uid)
                .collect()
        })
        .unwrap_or_default();
    if ahead.is_empty() {
        return profile.run_filter(state, pod, node);
    }
    let mut with_state = state.clone();
    let mut with_node = node.clone();
    for p in &ahead {
        with_node.add_pod((*p).clone());
        if let Err(status) = profile.run_add_pod(&mut with_state, pod, p, &with_node, snapshot) {
            return status;
        }
    }
    let status = profile.run_filter(&with_state, pod, &with_node);
    if !status.is_success() {
        return status;
    }
    profile.run_filter(state, pod, node)
}

/// Below this many nodes every node is evaluated (upstream's minFeasibleNodesToFind).
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never drops below this (minFeasibleNodesPercentageToFind).
pub const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;

/// How many feasible nodes to find before scoring, as upstream's numFeasibleNodesToFind.
pub fn num_feasible_nodes_to_find(percentage: Option<u32>, num_all_nodes: usize) -> usize {
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return num_all_nodes;
    }
    let percentage = match percentage {
        Some(p) if p > 0 => p as usize,
        _ => {
            (50usize.saturating_sub(num_all_nodes / 125)).max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
        }
    };
    if percentage >= 100 {
        return num_all_nodes;
    }
    (num_all_nodes * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Why a pod fits nowhere: each node's rejection, for the event message and
/// for preemption.
#[derive(Clone, Debug, Default)]
pub struct Diagnosis {
    pub node_statuses: BTreeMap<String, Status>,
    /// A PreFilter rejection applies to every node.
    pub pre_filter: Option<Status>,
    /// Message of the PostFilter (preemption) attempt, appended to the event.
    pub post_filter_msg: Option<String>,
    /// The PreFilter plugins that narrowed the candidate nodes: they
    /// rejected the nodes they left out (upstream puts them in the
    /// diagnosis' UnschedulablePlugins).
    pub narrowing_plugins: Vec<&'static str>,
}

#[derive(Clone, Debug)]
pub struct FitError {
    pub num_all_nodes: usize,
    pub diagnosis: Diagnosis,
}

impl FitError {
    /// Upstream's message: "0/5 nodes are available: 3 Insufficient cpu, 2 node(s) …."
    pub fn message(&self) -> String {
        if self.num_all_nodes == 0 {
            return "no nodes available to schedule pods".into();
        }
        let mut msg = format!("0/{} nodes are available:", self.num_all_nodes);
        if let Some(pf) = &self.diagnosis.pre_filter {
            msg.push_str(&format!(" {}.", pf.message()));
        }
        let mut histogram: BTreeMap<&str, usize> = BTreeMap::new();
        for status in self.diagnosis.node_statuses.values() {
            for reason in &status.reasons {
                *histogram.entry(reason.as_str()).or_default() += 1;
            }
        }
        if !histogram.is_empty() {
            let mut parts: Vec<String> =
                histogram.iter().map(|(r, n)| format!("{n} {r}")).collect();
            parts.sort();
            msg.push_str(&format!(" {}.", parts.join(", ")));
        }
        if let Some(post) = &self.diagnosis.post_filter_msg {
            msg.push_str(&format!(" {post}"));
        }
        msg
    }
}

#[derive(Debug)]
pub enum ScheduleError {
    /// No node fits; the pod waits for a cluster change.
    /// Boxed: a diagnosis is large, and errors are passed by value.
    Unfit(Box<FitError>),
    /// A plugin failed; the pod retries with backoff.
    Internal(Status),
}

#[derive(Clone, Debug)]
pub struct ScheduleResult {
    pub node: String,
    pub evaluated_nodes: usize,
    pub feasible_nodes: usize,
}

/// Per-profile scheduling state carried across cycles, and the extenders
/// every profile calls.
#[derive(Default)]
pub struct Algorithm {
    next_start_node_index: AtomicUsize,
    extenders: Arc<Extenders>,
}

impl Algorithm {
    pub fn new(extenders: Arc<Extenders>) -> Self {
        Self {
            next_start_node_index: AtomicUsize::new(0),
            extenders,
        }
    }

    pub fn schedule(
        &self,
        profile: &Profile,
        global_percentage: Option<u32>,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        nominated: &Nominated,
    ) -> Result<ScheduleResult, ScheduleError> {
        let extenders = &*self.extenders;
        let num_all = snapshot.nodes.len();
        if num_all == 0 {
            return Err(ScheduleError::Unfit(Box::new(FitError {
                num_all_nodes: 0,
                diagnosis: Diagnosis::default(),
            })));
        }
        let (feasible, diagnosis) =
            self.find_feasible(profile, global_percentage, state, pod, snapshot, nominated)?;
        if feasible.is_empty() {
            return Err(ScheduleError::Unfit(Box::new(FitError {
                num_all_nodes: num_all,
                diagnosis,
            })));
        }
        let evaluated = feasible.len() + diagnosis.node_statuses.len();
        // (Counts nodes PreFilter excluded too: upstream's evaluatedNodes does.)
        if feasible.len() == 1 {
            return Ok(ScheduleResult {
                node: feasible[0].name.clone(),
                evaluated_nodes: evaluated,
                feasible_nodes: 1,
            });
        }
        profile
            .run_pre_score(state, pod, &feasible, snapshot)
            .map_err(ScheduleError::Internal)?;
        let scores = profile
            .run_score(state, pod, &feasible)
            .map_err(ScheduleError::Internal)?;
        let mut totals: Vec<i64> = scores.iter().map(|s| s.score).collect();
        if !extenders.is_empty() {
            let added = block_on(extenders.prioritize(&pod.pod, &feasible));
            for (total, s) in totals.iter_mut().zip(&scores) {
                *total += added.get(s.name).copied().unwrap_or(0);
            }
        }
        let best = select_host(&totals, fastrand::u64(..));
        Ok(ScheduleResult {
            node: scores[best].name.to_string(),
            evaluated_nodes: evaluated,
            feasible_nodes: feasible.len(),
        })
    }

    /// PreFilter, then Filter over nodes in round-robin order from where the
    /// last cycle stopped, until enough feasible nodes are found; then the
    /// filtering extenders, if any.
    pub fn find_feasible(
        &self,
        profile: &Profile,
        global_percentage: Option<u32>,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        nominated: &Nominated,
    ) -> Result<(Vec<Arc<NodeInfo>>, Diagnosis), ScheduleError> {
        let extenders = &*self.extenders;
        let mut diagnosis = Diagnosis::default();
        if let Some(err) = pod.parse_errors.first() {
            diagnosis.pre_filter =
                Some(Status::unresolvable(format!("invalid pod affinity: {err}")));
            return Ok((vec![], diagnosis));
        }
        let pre_filtered = profile.run_pre_filter(state, pod, snapshot);
        diagnosis.narrowing_plugins = state.narrowing.clone();
        let (pre, narrowing) = match pre_filtered {
            Ok(r) => r,
            Err(status) if status.is_rejected() => {
                diagnosis.pre_filter = Some(status);
                return Ok((vec![], diagnosis));
            }
            Err(status) => return Err(ScheduleError::Internal(status)),
        };
        // Borrowed unless PreFilter narrowed the nodes: no reason to write
        // (and then release) a reference count in each of 5000 nodes per
        // cycle when a cycle filters ~10 % of them.
        let candidates: std::borrow::Cow<'_, [Arc<NodeInfo>]> = match &pre.node_names {
            Some(names) => {
                // Nodes PreFilter ruled out still count in "0/N nodes", with
                // the plugins that ruled them out.
                let reason = format!("node(s) didn't satisfy plugin(s) [{}]", narrowing.join(" "));
                for node in &snapshot.nodes {
                    if !names.contains(&node.name) {
                        diagnosis
                            .node_statuses
                            .insert(node.name.clone(), Status::unresolvable(reason.clone()));
                    }
                }
                names
                    .iter()
                    .filter_map(|n| snapshot.get(n).cloned())
                    .collect::<Vec<_>>()
                    .into()
            }
            None => snapshot.nodes.as_slice().into(),
        };
        let n = candidates.len();
        if n == 0 {
            return Ok((vec![], diagnosis));
        }
        // A pod that preempted tries its nominated node first: the room made
        // there is meant for it (upstream's evaluateNominatedNode).
        let nominated_node = pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .and_then(|name| candidates.iter().find(|c| c.name == name));
        if let Some(node) = nominated_node {
            let status = filter_with_nominated(profile, state, pod, node, nominated, snapshot);
            if status.is_success() {
                // As upstream's evaluateNominatedNode, the extenders must
                // accept it too; if they do not, every node is searched.
                // An extender's error here only costs the shortcut.
                match filter_by_extenders(extenders, pod, vec![node.clone()], &mut diagnosis) {
                    Ok(passed) if !passed.is_empty() => return Ok((passed, diagnosis)),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(pod = %pod.key(), node = %node.name, error = ?e, "evaluation failed on nominated node")
                    }
                }
            } else {
                tracing::debug!(pod = %pod.key(), node = %node.name, reason = %status.message(), "nominated node does not fit");
            }
        }
        let percentage = profile.percentage_of_nodes_to_score.or(global_percentage);
        let want = if pre.node_names.is_some() {
            n
        } else {
            num_feasible_nodes_to_find(percentage, n)
        };
        let start = if pre.node_names.is_some() {
            0
        } else {
            self.next_start_node_index.load(Ordering::Relaxed) % n
        };
        let state_ref: &CycleState = state;
        let mut feasible = Vec::with_capacity(want);
        let mut processed = 0;
        // Batches keep the parallel filter from overshooting `want` by much
        // while still giving every core a share of the work.
        let batch = want.max(64);
        while processed < n && feasible.len() < want {
            let end = (processed + batch).min(n);
            let results: Vec<(usize, Status)> = (processed..end)
                .into_par_iter()
                .with_min_len(FILTER_CHUNK)
                .map(|i| {
                    let node = &candidates[(start + i) % n];
                    let status =
                        filter_with_nominated(profile, state_ref, pod, node, nominated, snapshot);
                    (i, status)
                })
                .collect();
            for (i, status) in results {
                let node = &candidates[(start + i) % n];
                processed = processed.max(i + 1);
                if feasible.len() >= want {
                    processed = i;
                    break;
                }
                if status.is_success() {
                    feasible.push(node.clone());
                } else if status.is_rejected() {
                    diagnosis.node_statuses.insert(node.name.clone(), status);
                } else {
                    return Err(ScheduleError::Internal(status));
                }
            }
        }
        if pre.node_names.is_none() {
            self.next_start_node_index
                .store((start + processed) % n, Ordering::Relaxed);
        }
        let feasible = filter_by_extenders(extenders, pod, feasible, &mut diagnosis)?;
        Ok((feasible, diagnosis))
    }
}

/// The plugin name of nodes an extender rejected (upstream's ExtenderName).
pub const EXTENDER: &str = "Extender";

/// Runs the extenders' filters over `feasible`, recording their rejections
/// in the diagnosis; an extender's error fails the cycle (upstream's
/// schedulePod returns it, and the pod is retried with backoff).
fn filter_by_extenders(
    extenders: &Extenders,
    pod: &PodInfo,
    feasible: Vec<Arc<NodeInfo>>,
    diagnosis: &mut Diagnosis,
) -> Result<Vec<Arc<NodeInfo>>, ScheduleError> {
    if extenders.is_empty() || feasible.is_empty() {
        return Ok(feasible);
    }
    let outcome = block_on(extenders.filter(&pod.pod, feasible))
        .map_err(|e| ScheduleError::Internal(Status::error(e.to_string())))?;
    for (node, message, unresolvable) in outcome.rejected {
        let mut status = if unresolvable {
            Status::unresolvable(message)
        } else {
            Status::unschedulable(message)
        };
        status.plugin = EXTENDER;
        diagnosis.node_statuses.insert(node, status);
    }
    Ok(outcome.nodes)
}

/// Runs an extender call from the (synchronous) scheduling cycle. The cycle
/// runs on a filter-pool thread that has entered the runtime but is not one
/// of its workers, so blocking here holds up no async task; extender calls
/// are bounded by their httpTimeout.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Handle::current().block_on(future)
}

/// Index of the highest score; ties broken uniformly at random (reservoir
/// sampling over the tied nodes, as upstream's selectHost).
pub fn select_host(scores: &[i64], mut seed: u64) -> usize {
    let mut best = 0;
    let mut ties = 1u64;
    for (i, s) in scores.iter().enumerate().skip(1) {
        if *s > scores[best] {
            best = i;
            ties = 1;
        } else if *s == scores[best] {
            ties += 1;
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if (seed >> 33).is_multiple_of(ties) {
                best = i;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feasible_nodes_to_find_matches_upstream() {
        assert_eq!(num_feasible_nodes_to_find(None, 50), 50);
        assert_eq!(num_feasible_nodes_to_find(None, 99), 99);
        // 50 - 100/125 = 50% of 100 → 50, raised to the 100 minimum.
        assert_eq!(num_feasible_nodes_to_find(None, 100), 100);
        // 5000 nodes: 50 - 40 = 10% → 500.
        assert_eq!(num_feasible_nodes_to_find(None, 5000), 500);
        // 6000 nodes: 50 - 48 = 2% → floor 5% → 300.
        assert_eq!(num_feasible_nodes_to_find(None, 6000), 300);
        assert_eq!(num_feasible_nodes_to_find(Some(30), 1000), 300);
        assert_eq!(num_feasible_nodes_to_find(Some(1), 1000), 100);
        assert_eq!(num_feasible_nodes_to_find(Some(100), 1000), 1000);
    }

    #[test]
    fn no_nodes_has_its_own_message() {
        let e = FitError {
            num_all_nodes: 0,
            diagnosis: Diagnosis::default(),
        };
        assert_eq!(e.message(), "no nodes available to schedule pods");
    }

    #[test]
    fn select_host_picks_the_max_and_spreads_ties() {
        assert_eq!(select_host(&[1, 5, 3], 7), 1);
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..200 {
            seen.insert(select_host(&[4, 9, 9, 2, 9], seed));
        }
        assert_eq!(seen, [1, 2, 4].into_iter().collect());
    }

    #[test]
    fn fit_error_message_has_upstream_shape() {
        let mut diagnosis = Diagnosis::default();
        for (node, reason) in [
            ("a", "Insufficient cpu"),
            ("b", "Insufficient cpu"),
            ("c", "node(s) had untolerated taint {k: v}"),
        ] {
            diagnosis
                .node_statuses
                .insert(node.into(), Status::unschedulable(reason));
        }
        let e = FitError {
            num_all_nodes: 3,
            diagnosis,
        };
        assert_eq!(
            e.message(),
            "0/3 nodes are available: 1 node(s) had untolerated taint {k: v}, 2 Insufficient cpu."
        );
        let mut e = e;
        e.diagnosis.post_filter_msg = Some(
            "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
                .into(),
        );
        assert!(e.message().ends_with("2 Insufficient cpu. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."));
    }
}
