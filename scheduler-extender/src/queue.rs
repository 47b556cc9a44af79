//! The scheduling queue, as upstream's PriorityQueue: an active queue ordered
//! by priority then arrival (PrioritySort), a backoff queue of pods waiting out
//! an exponential backoff after a failed attempt, and an unschedulable set
//! that cluster events (a node added, a pod deleted, …) move back to active,
//! flushed periodically. Pods with scheduling gates wait apart until ungated.
//! When nothing is active, the pod whose backoff ends first is popped early
//! (upstream's SchedulerPopFromBackoffQ, on by default), unless it backs off
//! from an error.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::framework::{PodInfo, QueuedPodInfo};

/// Pods unschedulable this long are retried even without a matching event
/// (upstream's podMaxInUnschedulablePodsDuration).
pub const MAX_IN_UNSCHEDULABLE: Duration = Duration::from_secs(5 * 60);

/// Where a pending pod sits, for the `scheduler_pending_pods` metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueName {
    Active,
    Backoff,
    Unschedulable,
    Gated,
}

impl QueueName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Backoff => "backoff",
            Self::Unschedulable => "unschedulable",
            Self::Gated => "gated",
        }
    }
}

type ActiveKey = (Reverse<i32>, Instant, u64);

#[derive(Default)]
struct Inner {
    active: BTreeSet<ActiveKey>,
    backoff: BTreeSet<(Instant, u64)>,
    /// Unschedulable pods by the time they became so: moves and the periodic
    /// flush touch only these, never the whole queue.
    unschedulable: BTreeSet<(Instant, u64)>,
    gated: usize,
    in_flight: usize,
    /// uid → entry, for every pod in any queue.
    entries: HashMap<String, Entry>,
    /// seq → uid, to resolve set keys.
    by_seq: HashMap<u64, String>,
    seq: u64,
    /// Bumped by every cluster event that may make pods schedulable; a pod
    /// whose attempt started before the bump goes to backoff, not unschedulable.
    move_cycle: u64,
    /// Deletions of assigned pods, in all and per node: a pod nominated to a
    /// node (a preemptor waiting for its victims) only cares about its node.
    deletions: u64,
    deletions_by_node: HashMap<String, u64>,
    closed: bool,
}

/// The node a pod was nominated to, as last seen in its status.
fn nominated_node(pod: &PodInfo) -> Option<&str> {
    pod.pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty())
}

impl Inner {
    /// The deletion count that matters to a pod: its nominated node's, or all.
    fn deletions_for(&self, pod: &PodInfo) -> u64 {
        match nominated_node(pod) {
            Some(node) => self.deletions_by_node.get(node).copied().unwrap_or(0),
            None => self.deletions,
        }
    }
}

struct Entry {
    info: QueuedPodInfo,
    place: Place,
    seq: u64,
    /// When the last failed attempt ended (backoff is counted from it).
    last_failure: Option<Instant>,
    /// Where this scheduler nominated the pod, known before its status says so.
    nominated: Option<String>,
}

impl Entry {
    /// The node whose deletions this pod waits for, if it preempted.
    fn waits_on(&self) -> Option<&str> {
        self.nominated
            .as_deref()
            .or_else(|| nominated_node(&self.info.pod))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Active(ActiveKey),
    Backoff(Instant),
    Unschedulable(Instant),
    Gated,
    /// Popped and being scheduled.
    InFlight,
    /// Not yet placed (a new entry).
    Nowhere,
}

pub struct SchedulingQueue {
    inner: Mutex<Inner>,
    notify: Notify,
    initial_backoff: Duration,
    max_backoff: Duration,
}

fn is_gated(pod: &PodInfo) -> bool {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| !g.is_empty())
}

/// Whether an update can change a scheduling decision: anything but status,
/// resourceVersion and managedFields (upstream's isPodUpdated), so our own
/// PodScheduled condition patch does not trigger a retry.
fn pod_changed(old: &PodInfo, new: &PodInfo) -> bool {
    let (o, n) = (&old.pod, &new.pod);
    o.spec != n.spec
        || o.metadata.labels != n.metadata.labels
        || o.metadata.annotations != n.metadata.annotations
        || o.metadata.deletion_timestamp != n.metadata.deletion_timestamp
        || o.metadata.owner_references != n.metadata.owner_references
}

/// A popped pod plus the move cycle (and deletion count that matters to it)
/// it was popped in.
pub struct Popped {
    pub info: QueuedPodInfo,
    pub move_cycle: u64,
    pub deletions: u64,
}

impl SchedulingQueue {
    pub fn new(initial_backoff: Duration, max_backoff: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            initial_backoff,
            max_backoff,
        }
    }

    /// How long a pod backs off after its last failure, as upstream: by its
    /// consecutive errors if the last failure was one, else by its
    /// unschedulable attempts; none before any failure.
    fn backoff_of(&self, info: &QueuedPodInfo) -> Option<Duration> {
        let count = if info.consecutive_errors > 0 {
            info.consecutive_errors
        } else {
            info.unschedulable_count
        };
        (count > 0).then(|| self.backoff_duration(count))
    }

    /// The backoff after `attempts` failed attempts: initial × 2^(attempts−1), capped.
    pub fn backoff_duration(&self, attempts: u32) -> Duration {
        let mut d = self.initial_backoff;
        for _ in 1..attempts {
            d = d.saturating_mul(2);
            if d >= self.max_backoff {
                return self.max_backoff;
            }
        }
        d.min(self.max_backoff)
    }

    fn place(inner: &mut Inner, uid: &str, place: Place) {
        let Some(entry) = inner.entries.get_mut(uid) else {
            return;
        };
        let seq = entry.seq;
        let old = std::mem::replace(&mut entry.place, place);
        match old {
            Place::Active(k) => {
                inner.active.remove(&k);
            }
            Place::Backoff(t) => {
                inner.backoff.remove(&(t, seq));
            }
            Place::Unschedulable(t) => {
                inner.unschedulable.remove(&(t, seq));
            }
            Place::Gated => inner.gated -= 1,
            Place::InFlight => inner.in_flight -= 1,
            Place::Nowhere => {}
        }
        match place {
            Place::Active(k) => {
                inner.active.insert(k);
            }
            Place::Backoff(t) => {
                inner.backoff.insert((t, seq));
            }
            Place::Unschedulable(t) => {
                inner.unschedulable.insert((t, seq));
            }
            Place::Gated => inner.gated += 1,
            Place::InFlight => inner.in_flight += 1,
            Place::Nowhere => {}
        }
    }

    /// To active, unless gated or still backing off from its last failure.
    fn activate_or_backoff(&self, inner: &mut Inner, uid: &str, now: Instant) {
        let Some(entry) = inner.entries.get_mut(uid) else {
            return;
        };
        if is_gated(&entry.info.pod) {
            Self::place(inner, uid, Place::Gated);
            return;
        }
        if let (Some(failed), Some(backoff)) = (entry.last_failure, self.backoff_of(&entry.info)) {
            let until = failed + backoff;
            if until > now {
                Self::place(inner, uid, Place::Backoff(until));
                return;
            }
        }
        Self::activate(inner, uid, now);
    }

    fn activate(inner: &mut Inner, uid: &str, now: Instant) {
        let Some(entry) = inner.entries.get_mut(uid) else {
            return;
        };
        if is_gated(&entry.info.pod) {
            Self::place(inner, uid, Place::Gated);
            return;
        }
        // Ordered by when the pod last became schedulable (creation, or end of
        // its backoff), as upstream's queue timestamp.
        entry.info.timestamp = entry.last_failure.unwrap_or(now);
        let key = (
            Reverse(entry.info.pod.priority),
            entry.info.timestamp,
            entry.seq,
        );
        Self::place(inner, uid, Place::Active(key));
    }

    fn insert(
        inner: &mut Inner,
        pod: Arc<PodInfo>,
        attempts: u32,
        initial_attempt: Instant,
        last_failure: Option<Instant>,
    ) -> String {
        inner.seq += 1;
        let seq = inner.seq;
        let uid = pod.uid.clone();
        inner.by_seq.insert(seq, uid.clone());
        inner.entries.insert(
            uid.clone(),
            Entry {
                info: QueuedPodInfo {
                    pod,
                    initial_attempt,
                    timestamp: initial_attempt,
                    attempts,
                    unschedulable_count: 0,
                    consecutive_errors: 0,
                },
                place: Place::Nowhere,
                seq,
                last_failure,
                nominated: None,
            },
        );
        uid
    }

    /// Adds a new pending pod, or applies an update to a known one.
    pub fn add(&self, pod: Arc<PodInfo>) {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("queue lock");
        let uid = pod.uid.clone();
        if let Some(entry) = inner.entries.get_mut(&uid) {
            let changed = pod_changed(&entry.info.pod, &pod);
            entry.info.pod = pod;
            if !changed {
                return;
            }
            match entry.place {
                // An update may be what an unschedulable or gated pod waited for.
                Place::Unschedulable(_) | Place::Gated => {
                    self.activate_or_backoff(&mut inner, &uid, now)
                }
                // Re-key: the priority may have changed.
                Place::Active(_) => Self::activate(&mut inner, &uid, now),
                // The attempt in flight used the old spec: retry rather than park.
                Place::InFlight => inner.move_cycle += 1,
                Place::Backoff(_) | Place::Nowhere => {}
            }
        } else {
            Self::insert(&mut inner, pod, 0, now, None);
            Self::activate(&mut inner, &uid, now);
        }
        drop(inner);
        self.notify.notify_one();
    }

    /// Forgets a pod (deleted, or bound by someone else).
    pub fn delete(&self, uid: &str) {
        let mut inner = self.inner.lock().expect("queue lock");
        Self::place(&mut inner, uid, Place::Nowhere);
        if let Some(entry) = inner.entries.remove(uid) {
            inner.by_seq.remove(&entry.seq);
        }
    }

    /// Moves every unschedulable pod back (to backoff if still backing off):
    /// something changed that may let them fit.
    pub fn move_all_to_active(&self) {
        let mut inner = self.inner.lock().expect("queue lock");
        inner.move_cycle += 1;
        self.move_unschedulable(inner, |_| true);
    }

    /// Moves the unschedulable pods of priority `priority` or lower: a
    /// nominated pod of that priority went away, and only those counted it.
    pub fn move_up_to_priority(&self, priority: i32) {
        let mut inner = self.inner.lock().expect("queue lock");
        inner.move_cycle += 1;
        self.move_unschedulable(inner, |e| e.info.pod.priority <= priority);
    }

    /// Moves the unschedulable pods `wanted` accepts back to active (or
    /// backoff), then wakes the scheduling loop.
    fn move_unschedulable(
        &self,
        mut inner: std::sync::MutexGuard<'_, Inner>,
        wanted: impl Fn(&Entry) -> bool,
    ) {
        if inner.unschedulable.is_empty() {
            return;
        }
        let now = Instant::now();
        let waiting: Vec<String> = inner
            .unschedulable
            .iter()
            .filter_map(|(_, seq)| inner.by_seq.get(seq))
            .filter(|uid| inner.entries.get(*uid).is_some_and(&wanted))
            .cloned()
            .collect();
        for uid in waiting {
            self.activate_or_backoff(&mut inner, &uid, now);
        }
        drop(inner);
        self.notify.notify_one();
    }

    /// An assigned pod on `node` was deleted: unschedulable pods may fit now,
    /// except those nominated to another node — a preemptor waits for its
    /// own victims, and retrying it on every other deletion only grows its
    /// backoff (it is still retried by other events and the periodic flush).
    /// `still_leaving` is the lowest priority of the node's pods that are
    /// still terminating: preemptors above it would only find themselves not
    /// eligible yet and double their backoff, so they keep waiting.
    pub fn move_after_pod_deleted(&self, node: &str, still_leaving: Option<i32>) {
        let mut inner = self.inner.lock().expect("queue lock");
        inner.deletions += 1;
        *inner.deletions_by_node.entry(node.to_string()).or_default() += 1;
        self.move_unschedulable(inner, |e| match e.waits_on() {
            None => true,
            Some(n) => n == node && still_leaving.is_none_or(|p| p >= e.info.pod.priority),
        });
    }

    /// The pod just preempted on `node`: it waits, unschedulable, for its
    /// victims to be deleted, whatever else happened during the attempt —
    /// the victims' deletions (which come after this) move it, and retrying
    /// it sooner only finds them still terminating and doubles its backoff.
    pub fn requeue_preempting(&self, popped: Popped, node: &str) {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("queue lock");
        let uid = popped.info.pod.uid.clone();
        let Some(entry) = inner.entries.get_mut(&uid) else {
            return; // deleted meanwhile
        };
        entry.info.attempts = popped.info.attempts;
        entry.info.unschedulable_count += 1;
        entry.info.consecutive_errors = 0;
        entry.last_failure = Some(now);
        entry.nominated = Some(node.to_string());
        Self::place(&mut inner, &uid, Place::Unschedulable(now));
    }

    /// The pod lost its nomination (a higher-priority pod took the node).
    pub fn clear_nomination(&self, uid: &str) {
        if let Some(entry) = self.inner.lock().expect("queue lock").entries.get_mut(uid) {
            entry.nominated = None;
        }
    }

    /// Forgets a node's deletion count (the node is gone).
    pub fn forget_node(&self, node: &str) {
        self.inner
            .lock()
            .expect("queue lock")
            .deletions_by_node
            .remove(node);
    }

    /// A failed attempt: back to unschedulable, or to backoff when a cluster
    /// event arrived during the attempt (it might have changed the answer) or
    /// the failure was an error.
    pub fn requeue_failed(&self, popped: Popped, unschedulable: bool) {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("queue lock");
        let uid = popped.info.pod.uid.clone();
        let quiet = inner.move_cycle == popped.move_cycle
            && inner.deletions_for(&popped.info.pod) == popped.deletions;
        let Some(entry) = inner.entries.get_mut(&uid) else {
            return; // deleted meanwhile
        };
        entry.info.attempts = popped.info.attempts;
        if unschedulable {
            entry.info.unschedulable_count += 1;
            entry.info.consecutive_errors = 0;
        } else {
            entry.info.consecutive_errors += 1;
        }
        entry.last_failure = Some(now);
        if unschedulable && quiet {
            Self::place(&mut inner, &uid, Place::Unschedulable(now));
        } else {
            self.activate_or_backoff(&mut inner, &uid, now);
        }
        drop(inner);
        self.notify.notify_one();
    }

    /// A bind failed after the pod left the queue (`popped` is how it left):
    /// back in, backing off from one more error, its counts kept.
    pub fn requeue_after_bind_failure(&self, pod: Arc<PodInfo>, popped: &QueuedPodInfo) {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("queue lock");
        if inner.entries.contains_key(&pod.uid) {
            return;
        }
        let uid = Self::insert(
            &mut inner,
            pod,
            popped.attempts,
            popped.initial_attempt,
            Some(now),
        );
        if let Some(entry) = inner.entries.get_mut(&uid) {
            entry.info.unschedulable_count = popped.unschedulable_count;
            entry.info.consecutive_errors = popped.consecutive_errors + 1;
        }
        self.activate_or_backoff(&mut inner, &uid, now);
        drop(inner);
        self.notify.notify_one();
    }

    /// The pod was scheduled (assumed): it leaves the queue.
    pub fn done(&self, uid: &str) {
        self.delete(uid);
    }

    /// Moves expired backoffs and stale unschedulable pods to active; returns
    /// the next time something expires.
    fn flush(&self, inner: &mut Inner) -> Option<Instant> {
        let now = Instant::now();
        while let Some(&(t, seq)) = inner.backoff.iter().next() {
            if t > now {
                break;
            }
            let uid = inner.by_seq.get(&seq).cloned().expect("seq indexed");
            Self::activate(inner, &uid, now);
        }
        while let Some(&(t, seq)) = inner.unschedulable.iter().next() {
            if now.duration_since(t) < MAX_IN_UNSCHEDULABLE {
                break;
            }
            let uid = inner.by_seq.get(&seq).cloned().expect("seq indexed");
            self.activate_or_backoff(inner, &uid, now);
        }
        let next_backoff = inner.backoff.iter().next().map(|(t, _)| *t);
        let next_stale = inner
            .unschedulable
            .iter()
            .next()
            .map(|(t, _)| *t + MAX_IN_UNSCHEDULABLE);
        match (next_backoff, next_stale) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Waits for the next pod to schedule; `None` once closed.
    pub async fn pop(&self) -> Option<Popped> {
        loop {
            let notified = self.notify.notified();
            let next_wake = {
                let mut inner = self.inner.lock().expect("queue lock");
                if inner.closed {
                    return None;
                }
                let next_wake = self.flush(&mut inner);
                let next = match inner.active.iter().next() {
                    Some(key) => Some(key.2),
                    None => Self::first_unschedulable_backoff(&inner),
                };
                if let Some(seq) = next {
                    let uid = inner.by_seq.get(&seq).cloned().expect("seq indexed");
                    Self::place(&mut inner, &uid, Place::InFlight);
                    let move_cycle = inner.move_cycle;
                    let deletions = inner.deletions_for(&inner.entries[&uid].info.pod);
                    let entry = inner.entries.get_mut(&uid).expect("entry");
                    entry.info.attempts += 1;
                    return Some(Popped {
                        info: entry.info.clone(),
                        move_cycle,
                        deletions,
                    });
                }
                next_wake
            };
            let wait = next_wake
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(30))
                .min(Duration::from_secs(30));
            let _ = tokio::time::timeout(wait, notified).await;
        }
    }

    /// The backing-off pod whose backoff ends first, if it backs off from
    /// being unschedulable (error backoffs are waited out in full).
    fn first_unschedulable_backoff(inner: &Inner) -> Option<u64> {
        inner.backoff.iter().map(|(_, seq)| *seq).find(|seq| {
            inner
                .by_seq
                .get(seq)
                .and_then(|uid| inner.entries.get(uid))
                .is_some_and(|e| e.info.consecutive_errors == 0)
        })
    }

    pub fn close(&self) {
        self.inner.lock().expect("queue lock").closed = true;
        self.notify.notify_waiters();
    }

    /// Pending pods per queue (in-flight pods count as active, as upstream).
    pub fn counts(&self) -> HashMap<QueueName, usize> {
        let inner = self.inner.lock().expect("queue lock");
        HashMap::from([
            (QueueName::Active, inner.active.len() + inner.in_flight),
            (QueueName::Backoff, inner.backoff.len()),
            (QueueName::Unschedulable, inner.unschedulable.len()),
            (QueueName::Gated, inner.gated),
        ])
    }

    /// UIDs of every pod the queue holds.
    pub fn uids(&self) -> Vec<String> {
        self.inner
            .lock()
            .expect("queue lock")
            .entries
            .keys()
            .cloned()
            .collect()
    }

    /// The newest version of a pod the queue holds (its watch updates it
    /// while the pod waits or is being tried), as upstream's informer cache
    /// lookup in handleSchedulingFailure; `None` once the pod is deleted,
    /// bound or no longer this scheduler's.
    pub fn pod(&self, uid: &str) -> Option<Arc<PodInfo>> {
        self.inner
            .lock()
            .expect("queue lock")
            .entries
            .get(uid)
            .map(|e| e.info.pod.clone())
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.inner
            .lock()
            .expect("queue lock")
            .entries
            .contains_key(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testing::pod;
    use serde_json::json;

    fn q() -> SchedulingQueue {
        SchedulingQueue::new(Duration::from_secs(1), Duration::from_secs(10))
    }

    async fn pop_now(q: &SchedulingQueue) -> Option<Popped> {
        tokio::time::timeout(Duration::from_millis(50), q.pop())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn pops_by_priority_then_arrival() {
        let q = q();
        q.add(pod("low", &[], json!({"priority": 1})));
        q.add(pod("high", &[], json!({"priority": 100})));
        q.add(pod("low2", &[], json!({"priority": 1})));
        let order: Vec<String> = [
            pop_now(&q).await.unwrap(),
            pop_now(&q).await.unwrap(),
            pop_now(&q).await.unwrap(),
        ]
        .iter()
        .map(|p| p.info.pod.name.clone())
        .collect();
        assert_eq!(order, ["high", "low", "low2"]);
        assert!(pop_now(&q).await.is_none());
    }

    /// A pod nominated to `node` (as a preemptor is after preempting).
    fn nominated(name: &str, node: &str) -> Arc<PodInfo> {
        let base = pod(name, &[], json!({}));
        let mut p = (*base.pod).clone();
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            nominated_node_name: Some(node.into()),
            ..Default::default()
        });
        Arc::new(PodInfo::new(Arc::new(p)))
    }

    #[tokio::test]
    async fn a_nominated_pod_waits_for_deletions_on_its_own_node() {
        let q = SchedulingQueue::new(Duration::ZERO, Duration::ZERO);
        q.add(nominated("preemptor", "n1"));
        q.add(pod("plain", &[], json!({})));
        for _ in 0..2 {
            let popped = pop_now(&q).await.unwrap();
            q.requeue_failed(popped, true);
        }
        q.move_after_pod_deleted("n2", None);
        let moved = pop_now(&q).await.unwrap();
        assert_eq!(
            moved.info.pod.name, "plain",
            "any deletion may help an un-nominated pod"
        );
        q.requeue_failed(moved, true);
        assert_eq!(q.counts()[&QueueName::Unschedulable], 2);
        q.move_after_pod_deleted("n1", None);
        let names: Vec<String> = [pop_now(&q).await.unwrap(), pop_now(&q).await.unwrap()]
            .iter()
            .map(|p| p.info.pod.name.clone())
            .collect();
        assert!(names.contains(&"preemptor".to_string()) && names.contains(&"plain".to_string()));
    }

    #[tokio::test]
    async fn a_pod_that_just_preempted_waits_for_its_nodes_deletions_only() {
        let q = SchedulingQueue::new(Duration::ZERO, Duration::ZERO);
        q.add(pod("preemptor", &[], json!({})));
        let popped = pop_now(&q).await.unwrap();
        // Events during the attempt would send an ordinary failure to backoff.
        q.move_all_to_active();
        q.requeue_preempting(popped, "n1");
        assert_eq!(q.counts()[&QueueName::Unschedulable], 1);
        // Its status does not name the node yet; the queue knows anyway.
        q.move_after_pod_deleted("n2", None);
        assert_eq!(q.counts()[&QueueName::Unschedulable], 1);
        q.move_after_pod_deleted("n1", None);
        assert_eq!(pop_now(&q).await.unwrap().info.pod.name, "preemptor");
    }

    #[tokio::test]
    async fn a_preemptor_keeps_waiting_while_lower_priority_pods_still_leave_its_node() {
        let q = SchedulingQueue::new(Duration::ZERO, Duration::ZERO);
        q.add(pod("preemptor", &[], json!({"priority": 100})));
        let popped = pop_now(&q).await.unwrap();
        q.requeue_preempting(popped, "n1");
        q.move_after_pod_deleted("n1", Some(1));
        assert_eq!(q.counts()[&QueueName::Unschedulable], 1);
        // Pods of its own priority or above leaving do not hold it back.
        q.move_after_pod_deleted("n1", Some(100));
        assert_eq!(pop_now(&q).await.unwrap().info.pod.name, "preemptor");
    }

    #[tokio::test]
    async fn a_pod_that_lost_its_nomination_waits_for_any_deletion_again() {
        let q = SchedulingQueue::new(Duration::ZERO, Duration::ZERO);
        q.add(pod("preemptor", &[], json!({})));
        let popped = pop_now(&q).await.unwrap();
        q.requeue_preempting(popped, "n1");
        q.clear_nomination(&pod("preemptor", &[], json!({})).uid);
        q.move_after_pod_deleted("n2", None);
        assert_eq!(pop_now(&q).await.unwrap().info.pod.name, "preemptor");
    }

    #[tokio::test]
    async fn a_deletion_elsewhere_during_a_nominated_pods_attempt_does_not_send_it_to_backoff() {
        let q = q();
        q.add(nominated("preemptor", "n1"));
        let popped = pop_now(&q).await.unwrap();
        q.move_after_pod_deleted("n2", None);
        q.requeue_failed(popped, true);
        assert_eq!(q.counts()[&QueueName::Unschedulable], 1);

        q.move_all_to_active();
        assert_eq!(
            q.counts()[&QueueName::Backoff],
            1,
            "still backing off (1 s)"
        );
        q.add(pod("other", &[], json!({})));
        let other = pop_now(&q).await.unwrap();
        q.move_after_pod_deleted("n3", None);
        q.requeue_failed(other, true);
        assert_eq!(
            q.counts()[&QueueName::Backoff],
            2,
            "an un-nominated pod retries"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let q = q();
        let secs: Vec<u64> = (1..=6).map(|a| q.backoff_duration(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
    }

    #[tokio::test]
    async fn unschedulable_pods_wait_for_an_event() {
        let q = q();
        q.add(pod("p", &[], json!({})));
        let popped = pop_now(&q).await.unwrap();
        q.requeue_failed(popped, true);
        assert_eq!(q.counts()[&QueueName::Unschedulable], 1);
        assert!(pop_now(&q).await.is_none(), "no event, no retry");
        q.move_all_to_active();
        // Still inside its 1s backoff: it goes to backoff, then active.
        assert_eq!(q.counts()[&QueueName::Backoff], 1);
        let popped = tokio::time::timeout(Duration::from_secs(5), q.pop())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(popped.info.attempts, 2);
    }

    #[tokio::test]
    async fn an_idle_queue_pops_a_pod_backing_off_from_unschedulable_early() {
        let q = SchedulingQueue::new(Duration::from_secs(60), Duration::from_secs(60));
        q.add(pod("p", &[], json!({})));
        let popped = pop_now(&q).await.unwrap();
        q.move_all_to_active();
        q.requeue_failed(popped, true);
        assert_eq!(q.counts()[&QueueName::Backoff], 1);
        // Nothing active: no need to wait the minute out.
        let popped = pop_now(&q).await.expect("popped from backoff");
        // An error backoff is waited out in full.
        q.requeue_failed(popped, false);
        assert_eq!(q.counts()[&QueueName::Backoff], 1);
        assert!(pop_now(&q).await.is_none());
    }

    #[test]
    fn backoff_follows_errors_then_unschedulable_attempts() {
        let q = q();
        let mut info = QueuedPodInfo {
            pod: pod("p", &[], json!({})),
            initial_attempt: Instant::now(),
            timestamp: Instant::now(),
            attempts: 6,
            unschedulable_count: 0,
            consecutive_errors: 0,
        };
        assert_eq!(q.backoff_of(&info), None, "never failed");
        info.unschedulable_count = 4;
        assert_eq!(q.backoff_of(&info), Some(Duration::from_secs(8)));
        // The first error after four unschedulable attempts: 1 s, not 8.
        info.consecutive_errors = 1;
        assert_eq!(q.backoff_of(&info), Some(Duration::from_secs(1)));
        info.consecutive_errors = 2;
        assert_eq!(q.backoff_of(&info), Some(Duration::from_secs(2)));
    }

    #[tokio::test]
    async fn a_nominated_pod_going_away_moves_only_pods_it_could_block() {
        let q = SchedulingQueue::new(Duration::ZERO, Duration::ZERO);
        for (name, priority) in [("low", 10), ("high", 1000)] {
            q.add(pod(name, &[], json!({"priority": priority})));
            let popped = pop_now(&q).await.unwrap();
            q.requeue_failed(popped, true);
        }
        assert_eq!(q.counts()[&QueueName::Unschedulable], 2);
        q.move_up_to_priority(100);
        assert_eq!(pop_now(&q).await.unwrap().info.pod.name, "low");
        assert_eq!(q.counts()[&QueueName::Unschedulable], 1, "high still waits");
    }

    #[tokio::test]
    async fn an_event_during_the_attempt_sends_the_pod_to_backoff() {
        let q = q();
        q.add(pod("p", &[], json!({})));
        let popped = pop_now(&q).await.unwrap();
        q.move_all_to_active();
        q.requeue_failed(popped, true);
        assert_eq!(q.counts()[&QueueName::Backoff], 1);
    }

    #[tokio::test]
    async fn gated_pods_wait_until_ungated() {
        let q = q();
        q.add(pod(
            "g",
            &[],
            json!({"schedulingGates": [{"name": "example.com/wait"}]}),
        ));
        assert_eq!(q.counts()[&QueueName::Gated], 1);
        assert!(pop_now(&q).await.is_none());
        q.move_all_to_active();
        assert!(pop_now(&q).await.is_none(), "events do not ungate");
        q.add(pod("g", &[], json!({})));
        assert_eq!(pop_now(&q).await.unwrap().info.pod.name, "g");
    }

    #[tokio::test]
    async fn status_only_updates_do_not_retry_an_unschedulable_pod() {
        let q = q();
        let p = pod("p", &[], json!({}));
        q.add(p.clone());
        let popped = pop_now(&q).await.unwrap();
        q.requeue_failed(popped, true);
        let mut updated = (*p.pod).clone();
        updated.status = Some(
            serde_json::from_value(
                json!({"conditions": [{"type": "PodScheduled", "status": "False"}]}),
            )
            .unwrap(),
        );
        q.add(Arc::new(PodInfo::new(Arc::new(updated))));
        assert_eq!(
            q.counts()[&QueueName::Unschedulable],
            1,
            "our own status patch must not requeue"
        );
        let mut relabelled = (*p.pod).clone();
        relabelled.metadata.labels = Some([("new".to_string(), "label".to_string())].into());
        q.add(Arc::new(PodInfo::new(Arc::new(relabelled))));
        assert_eq!(
            q.counts()[&QueueName::Backoff],
            1,
            "a real change retries, after the backoff"
        );
    }

    #[tokio::test]
    async fn a_failed_bind_requeues_with_backoff_and_attempts() {
        let q = q();
        let p = pod("p", &[], json!({}));
        q.add(p.clone());
        let popped = pop_now(&q).await.unwrap();
        q.done(&p.uid);
        q.requeue_after_bind_failure(p.clone(), &popped.info);
        assert_eq!(q.counts()[&QueueName::Backoff], 1);
        assert!(pop_now(&q).await.is_none(), "not before the backoff ends");
        let again = tokio::time::timeout(Duration::from_secs(5), q.pop())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.info.attempts, 2);
    }

    #[tokio::test]
    async fn deleted_pods_leave_every_queue() {
        let q = q();
        let p = pod("p", &[], json!({}));
        q.add(p.clone());
        q.delete(&p.uid);
        assert!(pop_now(&q).await.is_none());
        assert!(!q.contains(&p.uid));
    }
}
