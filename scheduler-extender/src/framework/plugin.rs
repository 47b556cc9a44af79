//! The extension points, as upstream's scheduler framework defines them. A
//! plugin is one type implementing [`Plugin`] and exposing the points it
//! serves through the `as_*` methods; the framework runs each enabled point in
//! the profile's order.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::cycle_state::CycleState;
use super::handle::Handle;
use super::status::Status;
use super::types::{NodeInfo, PodInfo, Snapshot};

/// Highest score a Score plugin may give after normalization.
pub const MAX_NODE_SCORE: i64 = 100;
pub const MIN_NODE_SCORE: i64 = 0;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeScore<'a> {
    /// Borrowed from the NodeInfo: scoring 500 nodes × 7 plugins per pod
    /// must not allocate a name each time.
    pub name: &'a str,
    pub score: i64,
}

/// What PreFilter may add: a restriction of the candidate nodes (e.g. a pod
/// with `spec.nodeName`-like affinity needs only one node looked at).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PreFilterResult {
    /// `None`: all nodes; `Some(set)`: only these.
    pub node_names: Option<BTreeSet<String>>,
}

pub trait Plugin: Send + Sync {
    /// The upstream plugin name (`NodeResourcesFit`, …), used in configuration.
    fn name(&self) -> &'static str;

    fn as_queue_sort(&self) -> Option<&dyn QueueSortPlugin> {
        None
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        None
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        None
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        None
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        None
    }
    fn as_reserve(&self) -> Option<&dyn ReservePlugin> {
        None
    }
    fn as_pre_bind(&self) -> Option<&dyn PreBindPlugin> {
        None
    }
}

/// Orders the active queue.
pub trait QueueSortPlugin: Plugin {
    fn less(&self, a: &QueuedPodInfo, b: &QueuedPodInfo) -> Ordering;
}

/// What the queue knows of a waiting pod.
#[derive(Clone, Debug)]
pub struct QueuedPodInfo {
    pub pod: Arc<PodInfo>,
    /// When the pod was first seen by the queue (creation order tie-break).
    pub initial_attempt: std::time::Instant,
    /// When it last entered the queue.
    pub timestamp: std::time::Instant,
    pub attempts: u32,
    /// Attempts that ended unschedulable; backoff doubles with them.
    pub unschedulable_count: u32,
    /// Errors since the last unschedulable attempt (a failed bind, an API
    /// error): while non-zero, backoff follows them instead.
    pub consecutive_errors: u32,
}

pub trait PreFilterPlugin: Plugin {
    /// Computes per-cycle data; Skip means "my Filter has nothing to check".
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (PreFilterResult, Status);

    /// Whether the plugin keeps state that `add_pod`/`remove_pod` must update
    /// (upstream's PreFilterExtensions), used for nominated pods and preemption.
    fn has_extensions(&self) -> bool {
        false
    }

    /// Updates the cycle state as if `to_add` ran on `node`.
    fn add_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _to_add: &Arc<PodInfo>,
        _node: &NodeInfo,
        _snapshot: &Snapshot,
    ) -> Status {
        Status::success()
    }

    /// Updates the cycle state as if `to_remove` were gone from `node`.
    fn remove_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _to_remove: &Arc<PodInfo>,
        _node: &NodeInfo,
        _snapshot: &Snapshot,
    ) -> Status {
        Status::success()
    }
}

pub trait FilterPlugin: Plugin {
    /// Whether `pod` fits `node`; runs in parallel across nodes.
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;
}

pub trait PreScorePlugin: Plugin {
    /// Computes per-cycle scoring data over the feasible `nodes`; Skip means
    /// "my Score has nothing to add".
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status;
}

pub trait ScorePlugin: Plugin {
    /// Raw score of `node`; normalized afterwards when the plugin normalizes.
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status>;

    /// Maps raw scores into [0, 100] in place. Default: already in range.
    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, _scores: &mut [NodeScore]) -> Status {
        Status::success()
    }
}

/// Runs once the pod is assumed on `node` in the cache, before the binding
/// cycle: the place to claim shared resources ahead of the API (upstream's
/// ReservePlugin).
pub trait ReservePlugin: Plugin {
    fn reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str, handle: &Handle)
    -> Status;

    /// Undoes `reserve` when a later step fails; runs for every Reserve
    /// plugin, in reverse order, also those whose `reserve` never ran or
    /// failed, so it must be idempotent.
    fn unreserve(&self, state: &CycleState, pod: &PodInfo, node: &str, handle: &Handle);
}

/// Runs in the binding cycle before the pod is bound; may wait on the API
/// (upstream's PreBindPlugin).
pub trait PreBindPlugin: Plugin {
    fn pre_bind<'a>(
        &'a self,
        state: &'a CycleState,
        pod: &'a PodInfo,
        node: &'a str,
        handle: &'a Handle,
    ) -> BoxFuture<'a, Status>;
}

/// Scales scores so the highest becomes `MAX_NODE_SCORE` (reverse: the
/// lowest does), as upstream's helper.DefaultNormalizeScore.
pub fn default_normalize_score(max_priority: i64, reverse: bool, scores: &mut [NodeScore]) {
    let max = scores.iter().map(|s| s.score).max().unwrap_or(0);
    if max == 0 {
        if reverse {
            for s in scores.iter_mut() {
                s.score = max_priority;
            }
        }
        return;
    }
    for s in scores.iter_mut() {
        let mut score = max_priority * s.score / max;
        if reverse {
            score = max_priority - score;
        }
        s.score = score;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(v: &[i64]) -> Vec<NodeScore<'static>> {
        v.iter()
            .map(|s| NodeScore {
                name: "n",
                score: *s,
            })
            .collect()
    }

    #[test]
    fn normalizes_to_the_max() {
        let mut s = scores(&[10, 5, 0]);
        default_normalize_score(100, false, &mut s);
        assert_eq!(
            s.iter().map(|s| s.score).collect::<Vec<_>>(),
            vec![100, 50, 0]
        );
        let mut s = scores(&[10, 5, 0]);
        default_normalize_score(100, true, &mut s);
        assert_eq!(
            s.iter().map(|s| s.score).collect::<Vec<_>>(),
            vec![0, 50, 100]
        );
        let mut s = scores(&[0, 0]);
        default_normalize_score(100, true, &mut s);
        assert_eq!(
            s.iter().map(|s| s.score).collect::<Vec<_>>(),
            vec![100, 100]
        );
    }
}
