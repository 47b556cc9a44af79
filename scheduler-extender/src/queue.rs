//! The scheduling queue, as upstream's PriorityQueue: an active queue ordered
//! by priority then arrival (PrioritySort), a backoff queue of pods waiting out
//! an exponential backoff after a failed attempt, and an unschedulable set
//! that cluster events (a node added, a pod deleted, …) move back to active,
//! flushed periodically. Pods with scheduling gates wait apart until ungated.
//! When nothing is active, the pod whose backoff ends first is popped early
//! (upstream's SchedulerPopFromBackoffQ, on by default), unless it backs off
//! from an error.
//!
//! An event moves an unschedulable pod only if a plugin that rejected it
//! says, through its queueing hint, that the event may make it schedulable
//! (upstream's `isPodWorthRequeuing`); events that arrive while a pod is
//! being tried are kept and asked about when its attempt fails
//! (upstream's in-flight events). Backoffs end on whole-second windows, and
//! within one window pods leave by priority, as upstream's backoffQ.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use crate::framework::{PodInfo, QueuedPodInfo};
use crate::metrics::{HintLabels, HistogramFamily, IncomingLabels, hint_buckets};
use crate::queueing_hints::events::pod_scheduling_properties_change;
use crate::queueing_hints::{
    ClusterEvent, OwnedObject, ProfileHints, QueueingHint, QueueingStrategy,
};

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

/// The event of a failed attempt's requeue, as upstream labels it.
const SCHEDULE_ATTEMPT_FAILURE: &str = "ScheduleAttemptFailure";

type ActiveKey = (Reverse<i32>, Instant, u64);
/// The window (whole seconds since the queue began) in which the backoff
/// ends, then as the active queue orders.
type BackoffKey = (u64, Reverse<i32>, Instant, u64);

/// Why an attempt failed, as the queue needs it: the plugins that rejected
/// the pod (`UnschedulablePlugins`) and those that keep it waiting
/// (`PendingPlugins`). None of either means an error: the pod backs off by
/// its consecutive errors and is retried without waiting for an event.
#[derive(Clone, Debug, Default)]
pub struct Rejection {
    pub plugins: HashSet<String>,
    pub pending: HashSet<String>,
}

impl Rejection {
    pub fn error() -> Self {
        Self::default()
    }

    pub fn by<S: Into<String>>(plugins: impl IntoIterator<Item = S>) -> Self {
        Self {
            plugins: plugins.into_iter().map(Into::into).collect(),
            pending: HashSet::new(),
        }
    }

    fn is_error(&self) -> bool {
        self.plugins.is_empty() && self.pending.is_empty()
    }
}

/// A cluster event, with the objects its hints look at.
#[derive(Clone)]
pub struct QueueEvent {
    pub event: ClusterEvent,
    pub old: Option<OwnedObject>,
    pub new: Option<OwnedObject>,
}

impl QueueEvent {
    pub fn new(event: ClusterEvent, old: Option<OwnedObject>, new: Option<OwnedObject>) -> Self {
        Self { event, old, new }
    }

    /// Every pending pod, hints unasked (upstream's forced moves and the
    /// unschedulable timeout).
    pub fn wildcard() -> Self {
        Self::new(ClusterEvent::WILDCARD, None, None)
    }
}

/// Which unschedulable pods an event may move at all, before their hints
/// are asked (upstream's PreEnqueueCheck, and our preemptors' wait).
#[derive(Clone, Debug)]
pub enum MoveFilter {
    All,
    /// A nominated pod went away: only pods of its priority or lower counted it.
    UpToPriority(i32),
    /// An assigned pod on `node` was deleted. A pod nominated to another
    /// node waits for its own victims (retrying it on other deletions only
    /// grows its backoff; other events and the flush still retry it), and
    /// one above `still_leaving` (the lowest priority of the node's pods
    /// still terminating) would only find its victims still there.
    DeletedOn {
        node: String,
        still_leaving: Option<i32>,
    },
    /// The pod itself was updated.
    Only(String),
}

impl MoveFilter {
    fn admits(&self, uid: &str, entry: &Entry) -> bool {
        match self {
            Self::All => true,
            Self::UpToPriority(p) => entry.info.pod.priority <= *p,
            Self::DeletedOn {
                node,
                still_leaving,
            } => match entry.waits_on() {
                None => true,
                Some(n) => n == node && still_leaving.is_none_or(|p| p >= entry.info.pod.priority),
            },
            Self::Only(only) => only == uid,
        }
    }
}

#[derive(Default)]
struct Inner {
    active: BTreeSet<ActiveKey>,
    backoff: BTreeSet<BackoffKey>,
    /// Pods backing off from an error, apart (upstream's errorBackoffQ):
    /// they are never popped early, so an idle queue looks at `backoff`
    /// alone.
    error_backoff: BTreeSet<BackoffKey>,
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
    /// Events of interest that arrived while pods were being tried, each
    /// numbered; a failed attempt asks its pod's hints about those numbered
    /// above the count when it was popped (`in_flight_since`).
    in_flight_events: VecDeque<(u64, Arc<(QueueEvent, MoveFilter)>)>,
    in_flight_since: HashMap<String, u64>,
    event_seq: u64,
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
    /// Drops the in-flight events no pod in flight can still be asked about.
    fn prune_in_flight_events(&mut self) {
        match self.in_flight_since.values().min().copied() {
            None => self.in_flight_events.clear(),
            Some(oldest) => {
                while self
                    .in_flight_events
                    .front()
                    .is_some_and(|(seq, _)| *seq <= oldest)
                {
                    self.in_flight_events.pop_front();
                }
            }
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
    /// The plugins that rejected the pod's last attempt.
    unschedulable_plugins: HashSet<String>,
    /// The plugins that keep it waiting (their hints move it at once).
    pending_plugins: HashSet<String>,
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
    Backoff(BackoffKey),
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
    /// Each profile's hints, by scheduler name. A pod of a profile without
    /// hints is moved by every event (as upstream when its map lacks one).
    hints: HashMap<String, ProfileHints>,
    /// Backoff windows are whole seconds counted from here.
    epoch: Instant,
    /// `scheduler_queue_incoming_pods_total{queue,event}`.
    incoming: Family<IncomingLabels, Counter>,
    /// `scheduler_queueing_hint_execution_duration_seconds{plugin,event,hint}`.
    hint_duration: HistogramFamily<HintLabels>,
}

fn is_gated(pod: &PodInfo) -> bool {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| !g.is_empty())
}

/// The event of an assigned pod's deletion.
pub fn assigned_pod_deleted(gone: Arc<PodInfo>) -> QueueEvent {
    use crate::queueing_hints::{ActionType, EventResource};
    QueueEvent::new(
        ClusterEvent::new(EventResource::AssignedPod, ActionType::DELETE),
        Some(OwnedObject::Pod(gone)),
        None,
    )
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

/// A popped pod, being tried.
pub struct Popped {
    pub info: QueuedPodInfo,
}

fn scheduler_name(pod: &PodInfo) -> &str {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or("default-scheduler")
}

impl SchedulingQueue {
    pub fn new(initial_backoff: Duration, max_backoff: Duration) -> Self {
        Self::with_hints(initial_backoff, max_backoff, HashMap::new())
    }

    pub fn with_hints(
        initial_backoff: Duration,
        max_backoff: Duration,
        hints: HashMap<String, ProfileHints>,
    ) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            initial_backoff,
            max_backoff,
            hints,
            epoch: Instant::now(),
            incoming: Family::default(),
            hint_duration: Family::new_with_constructor(hint_buckets as fn() -> Histogram),
        }
    }

    /// Times each queueing hint asked into `family` (upstream's
    /// `scheduler_queueing_hint_execution_duration_seconds`).
    pub fn with_hint_duration_metric(mut self, family: HistogramFamily<HintLabels>) -> Self {
        self.hint_duration = family;
        self
    }

    /// Counts pods entering each queue, by what moved them, into `family`
    /// (upstream's `scheduler_queue_incoming_pods_total`).
    pub fn with_incoming_metric(mut self, family: Family<IncomingLabels, Counter>) -> Self {
        self.incoming = family;
        self
    }

    /// Counts the pod's arrival where it now is, moved by `event`.
    fn arrived(&self, inner: &Inner, uid: &str, event: &str) {
        let queue = match inner.entries.get(uid).map(|e| e.place) {
            Some(Place::Active(_)) => "active",
            Some(Place::Backoff(_)) => "backoff",
            Some(Place::Unschedulable(_) | Place::Gated) => "unschedulable",
            _ => return,
        };
        self.incoming
            .get_or_create(&IncomingLabels {
                queue: queue.to_string(),
                event: event.to_string(),
            })
            .inc();
    }

    /// The backoff window `t` falls in.
    fn window(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_secs()
    }

    /// Whether any profile's plugin registered an event `event` matches:
    /// others move no pod and need not be kept for pods in flight.
    pub fn interested(&self, event: &ClusterEvent) -> bool {
        self.hints.is_empty() || self.hints.values().any(|h| h.is_event_of_interest(event))
    }

    /// What `event` means for the pod of `entry`.
    fn strategy(&self, entry: &Entry, event: &QueueEvent) -> QueueingStrategy {
        let Some(hints) = self.hints.get(scheduler_name(&entry.info.pod)) else {
            return QueueingStrategy::AfterBackoff;
        };
        // Only built once a hint is asked: most events ask none for most pods.
        let mut label: Option<String> = None;
        hints.strategy_timed(
            &entry.unschedulable_plugins,
            &entry.pending_plugins,
            &event.event,
            &entry.info.pod,
            (
                event.old.as_ref().map(OwnedObject::as_object),
                event.new.as_ref().map(OwnedObject::as_object),
            ),
            &mut |plugin, hint, took| {
                let hint = match hint {
                    QueueingHint::Queue => "Queue",
                    QueueingHint::QueueSkip => "QueueSkip",
                };
                self.hint_duration
                    .get_or_create(&HintLabels {
                        plugin: plugin.to_string(),
                        event: label.get_or_insert_with(|| event.event.label()).clone(),
                        hint: hint.to_string(),
                    })
                    .observe(took.as_secs_f64());
            },
        )
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
        let after_error = entry.info.consecutive_errors > 0;
        let old = std::mem::replace(&mut entry.place, place);
        match old {
            Place::Active(k) => {
                inner.active.remove(&k);
            }
            Place::Backoff(key) => {
                if !inner.backoff.remove(&key) {
                    inner.error_backoff.remove(&key);
                }
            }
            Place::Unschedulable(t) => {
                inner.unschedulable.remove(&(t, seq));
            }
            Place::Gated => inner.gated -= 1,
            Place::InFlight => {
                inner.in_flight -= 1;
                inner.in_flight_since.remove(uid);
                inner.prune_in_flight_events();
            }
            Place::Nowhere => {}
        }
        match place {
            Place::Active(k) => {
                inner.active.insert(k);
            }
            Place::Backoff(key) if after_error => {
                inner.error_backoff.insert(key);
            }
            Place::Backoff(key) => {
                inner.backoff.insert(key);
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
        if let (Some(failed), Some(backoff)) = (entry.last_failure, self.backoff_of(&entry.info))
            && !self.max_backoff.is_zero()
        {
            // As upstream's backoffQ: the backoff ends with the window its
            // end falls in, and pods leaving in one window go by priority.
            let ends = self.window(failed + backoff);
            if ends >= self.window(now) {
                let key = (ends, Reverse(entry.info.pod.priority), failed, entry.seq);
                Self::place(inner, uid, Place::Backoff(key));
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
                unschedulable_plugins: HashSet::new(),
                pending_plugins: HashSet::new(),
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
            let old = std::mem::replace(&mut entry.info.pod, pod.clone());
            if !pod_changed(&old, &pod) {
                return;
            }
            let place = entry.place;
            // The pod's own update, as upstream's Update: TargetPod events.
            let events = || {
                pod_scheduling_properties_change(&pod.pod, &old.pod, true)
                    .into_iter()
                    .filter(|e| self.interested(e))
                    .map(|e| {
                        QueueEvent::new(
                            e,
                            Some(OwnedObject::Pod(old.clone())),
                            Some(OwnedObject::Pod(pod.clone())),
                        )
                    })
            };
            match place {
                // The update may be what the pod waited for.
                Place::Unschedulable(_) => {
                    // The first event that moves the pod decides, as
                    // upstream's Update (it stops there).
                    let (mut strategy, mut label) = (QueueingStrategy::Skip, String::new());
                    for event in events() {
                        let this = self.strategy(&inner.entries[&uid], &event);
                        if this != QueueingStrategy::Skip {
                            (strategy, label) = (this, event.event.label());
                            break;
                        }
                    }
                    match strategy {
                        QueueingStrategy::Skip => return,
                        QueueingStrategy::AfterBackoff => {
                            self.activate_or_backoff(&mut inner, &uid, now)
                        }
                        QueueingStrategy::Immediately => Self::activate(&mut inner, &uid, now),
                    }
                    self.arrived(&inner, &uid, &label);
                }
                Place::Gated => {
                    self.activate_or_backoff(&mut inner, &uid, now);
                    if !matches!(inner.entries[&uid].place, Place::Gated) {
                        self.arrived(&inner, &uid, "UnscheduledPodUpdate");
                    }
                }
                // Re-keyed for a changed priority, keeping its place in time
                // (upstream's activeQ update keeps the timestamp).
                Place::Active(_) => {
                    let entry = &inner.entries[&uid];
                    let key = (
                        Reverse(entry.info.pod.priority),
                        entry.info.timestamp,
                        entry.seq,
                    );
                    Self::place(&mut inner, &uid, Place::Active(key));
                }
                // The attempt in flight used the old spec: its failure asks
                // the hints about this update.
                Place::InFlight => {
                    let events: Vec<QueueEvent> = events().collect();
                    for event in events {
                        Self::record_in_flight(&mut inner, event, MoveFilter::Only(uid.clone()));
                    }
                    return;
                }
                Place::Backoff(_) | Place::Nowhere => return,
            }
        } else {
            Self::insert(&mut inner, pod, 0, now, None);
            Self::activate(&mut inner, &uid, now);
            self.arrived(&inner, &uid, "UnscheduledPodAdd");
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

    /// Moves every unschedulable pod back (to backoff if still backing
    /// off), hints unasked: something changed that no event describes.
    pub fn move_all_to_active(&self) {
        self.on_event(QueueEvent::wildcard(), MoveFilter::All);
    }

    /// A cluster event: each unschedulable pod `filter` admits moves if its
    /// rejecting plugins' hints say the event may help it (upstream's
    /// MoveAllToActiveOrBackoffQueue); pods in flight hear of it when their
    /// attempt fails.
    pub fn on_event(&self, event: QueueEvent, filter: MoveFilter) {
        if !self.interested(&event.event) {
            return;
        }
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("queue lock");
        let waiting: Vec<String> = inner
            .unschedulable
            .iter()
            .filter_map(|(_, seq)| inner.by_seq.get(seq))
            .filter(|uid| {
                inner
                    .entries
                    .get(*uid)
                    .is_some_and(|e| filter.admits(uid, e))
            })
            .cloned()
            .collect();
        let mut moved = false;
        let label = if event.event.is_wildcard() {
            "ForceActivate".to_string()
        } else {
            event.event.label()
        };
        for uid in waiting {
            match self.strategy(&inner.entries[&uid], &event) {
                QueueingStrategy::Skip => continue,
                QueueingStrategy::AfterBackoff => self.activate_or_backoff(&mut inner, &uid, now),
                QueueingStrategy::Immediately => Self::activate(&mut inner, &uid, now),
            }
            self.arrived(&inner, &uid, &label);
            moved = true;
        }
        Self::record_in_flight(&mut inner, event, filter);
        drop(inner);
        if moved {
            self.notify.notify_one();
        }
    }

    /// Keeps an event for the pods being tried, if any.
    fn record_in_flight(inner: &mut Inner, event: QueueEvent, filter: MoveFilter) {
        if inner.in_flight_since.is_empty() {
            return;
        }
        inner.event_seq += 1;
        let seq = inner.event_seq;
        inner
            .in_flight_events
            .push_back((seq, Arc::new((event, filter))));
    }

    /// Moves the unschedulable pods of priority `priority` or lower: the
    /// nominated pod `gone` went away, and only those counted it.
    pub fn move_up_to_priority(&self, gone: Arc<PodInfo>) {
        let filter = MoveFilter::UpToPriority(gone.priority);
        self.on_event(assigned_pod_deleted(gone), filter);
    }

    /// The assigned pod `gone` on `node` was deleted (see
    /// [`MoveFilter::DeletedOn`] for `still_leaving`).
    pub fn move_after_pod_deleted(
        &self,
        node: &str,
        still_leaving: Option<i32>,
        gone: Arc<PodInfo>,
    ) {
        let filter = MoveFilter::DeletedOn {
            node: node.to_string(),
            still_leaving,
        };
        self.on_event(assigned_pod_deleted(gone), filter);
    }

    /// The pod just preempted on `node`: it waits, unschedulable, for its
    /// victims to be deleted, whatever else happened during the attempt —
    /// the victims' deletions (which come after this) move it, and retrying
    /// it sooner only finds them still terminating and doubles its backoff.
    pub fn requeue_preempting(&self, popped: Popped, node: &str, rejection: Rejection) {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("queue lock");
        let uid = popped.info.pod.uid.clone();
        let Some(entry) = inner.entries.get_mut(&uid) else {
            return; // deleted meanwhile
        };
        entry.info.attempts = popped.info.attempts;
        entry.unschedulable_plugins = rejection.plugins;
        entry.pending_plugins = rejection.pending;
        entry.info.unschedulable_count += 1;
        entry.info.consecutive_errors = 0;
        entry.last_failure = Some(now);
        entry.nominated = Some(node.to_string());
        Self::place(&mut inner, &uid, Place::Unschedulable(now));
        self.arrived(&inner, &uid, SCHEDULE_ATTEMPT_FAILURE);
    }

    /// The pod lost its nomination (a higher-priority pod took the node).
    pub fn clear_nomination(&self, uid: &str) {
        if let Some(entry) = self.inner.lock().expect("queue lock").entries.get_mut(uid) {
            entry.nominated = None;
        }
    }

    /// A failed attempt: back to unschedulable, unless an event that
    /// arrived during the attempt may change the answer (its hints are
    /// asked, as upstream's determineSchedulingHintForInFlightPod) or the
    /// failure was an error; then to backoff or active.
    pub fn requeue_failed(&self, popped: Popped, rejection: Rejection) {
        let now = Instant::now();
        let mut guard = self.inner.lock().expect("queue lock");
        let inner = &mut *guard;
        let uid = popped.info.pod.uid.clone();
        let since = inner.in_flight_since.get(&uid).copied().unwrap_or(u64::MAX);
        let Some(entry) = inner.entries.get_mut(&uid) else {
            return; // deleted meanwhile
        };
        entry.info.attempts = popped.info.attempts;
        let error = rejection.is_error();
        if error {
            entry.info.consecutive_errors += 1;
        } else {
            entry.info.unschedulable_count += 1;
            entry.info.consecutive_errors = 0;
        }
        entry.unschedulable_plugins = rejection.plugins;
        entry.pending_plugins = rejection.pending;
        entry.last_failure = Some(now);
        let mut strategy = if error {
            QueueingStrategy::AfterBackoff
        } else {
            QueueingStrategy::Skip
        };
        for (_, kept) in inner
            .in_flight_events
            .iter()
            .filter(|(seq, _)| *seq > since)
        {
            // Nothing beats Immediately, and only a pending plugin can
            // make it: upstream stops asking there too.
            if strategy == QueueingStrategy::Immediately
                || (strategy == QueueingStrategy::AfterBackoff && entry.pending_plugins.is_empty())
            {
                break;
            }
            let (event, filter) = &**kept;
            if filter.admits(&uid, entry) {
                strategy = strategy.max(self.strategy(entry, event));
            }
        }
        match strategy {
            QueueingStrategy::Skip => Self::place(inner, &uid, Place::Unschedulable(now)),
            QueueingStrategy::AfterBackoff => self.activate_or_backoff(inner, &uid, now),
            QueueingStrategy::Immediately => Self::activate(inner, &uid, now),
        }
        self.arrived(inner, &uid, SCHEDULE_ATTEMPT_FAILURE);
        drop(guard);
        self.notify.notify_one();
    }

    /// A cycle that panicked: its pod, if still in flight, goes back as an
    /// error (backing off) instead of staying in flight for good.
    pub fn requeue_if_in_flight(&self, info: QueuedPodInfo) {
        let in_flight = self
            .inner
            .lock()
            .expect("queue lock")
            .entries
            .get(&info.pod.uid)
            .is_some_and(|e| e.place == Place::InFlight);
        if in_flight {
            self.requeue_failed(Popped { info }, Rejection::error());
        }
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
        self.arrived(&inner, &uid, SCHEDULE_ATTEMPT_FAILURE);
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
        let window = self.window(now);
        loop {
            let ended = |set: &BTreeSet<BackoffKey>| set.first().copied().filter(|k| k.0 < window);
            let Some((_, _, _, seq)) =
                ended(&inner.backoff).or_else(|| ended(&inner.error_backoff))
            else {
                break;
            };
            let uid = inner.by_seq.get(&seq).cloned().expect("seq indexed");
            Self::activate(inner, &uid, now);
            self.arrived(inner, &uid, "BackoffComplete");
        }
        while let Some(&(t, seq)) = inner.unschedulable.iter().next() {
            if now.duration_since(t) < MAX_IN_UNSCHEDULABLE {
                break;
            }
            let uid = inner.by_seq.get(&seq).cloned().expect("seq indexed");
            self.activate_or_backoff(inner, &uid, now);
            self.arrived(inner, &uid, "UnschedulableTimeout");
        }
        let next_backoff = [inner.backoff.first(), inner.error_backoff.first()]
            .into_iter()
            .flatten()
            .map(|(ends, ..)| self.epoch + Duration::from_secs(ends + 1))
            .min();
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
                    Some(key) => Some((key.2, false)),
                    None => Self::first_unschedulable_backoff(&inner).map(|seq| (seq, true)),
                };
                if let Some((seq, from_backoff)) = next {
                    let uid = inner.by_seq.get(&seq).cloned().expect("seq indexed");
                    if from_backoff {
                        self.incoming
                            .get_or_create(&IncomingLabels {
                                queue: "active".into(),
                                event: "PopFromBackoffQ".into(),
                            })
                            .inc();
                    }
                    Self::place(&mut inner, &uid, Place::InFlight);
                    let since = inner.event_seq;
                    inner.in_flight_since.insert(uid.clone(), since);
                    let entry = inner.entries.get_mut(&uid).expect("entry");
                    entry.info.attempts += 1;
                    return Some(Popped {
                        info: entry.info.clone(),
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
        inner.backoff.first().map(|key| key.3)
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
            (
                QueueName::Backoff,
                inner.backoff.len() + inner.error_backoff.len(),
            ),
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

    /// Rejected by a plugin; without profile hints every event moves it.
    fn rejected() -> Rejection {
        Rejection::by(["NodeResourcesFit"])
    }

    /// An assigned pod whose deletion is the event.
    fn gone() -> Arc<PodInfo> {
        pod("gone", &[], json!({"nodeName": "n0"}))
    }

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
            q.requeue_failed(popped, rejected());
        }
        q.move_after_pod_deleted("n2", None, gone());
        let moved = pop_now(&q).await.unwrap();
        assert_eq!(
            moved.info.pod.name, "plain",
            "any deletion may help an un-nominated pod"
        );
        q.requeue_failed(moved, rejected());
        assert_eq!(q.counts()[&QueueName::Unschedulable], 2);
        q.move_after_pod_deleted("n1", None, gone());
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
        q.requeue_preempting(popped, "n1", rejected());
        assert_eq!(q.counts()[&QueueName::Unschedulable], 1);
        // Its status does not name the node yet; the queue knows anyway.
        q.move_after_pod_deleted("n2", None, gone());
        assert_eq!(q.counts()[&QueueName::Unschedulable], 1);
        q.move_after_pod_deleted("n1", None, gone());
        assert_eq!(pop_now(&q).await.unwrap().info.pod.name, "preemptor");
    }

    #[tokio::test]
    async fn a_preemptor_keeps_waiting_while_lower_priority_pods_still_leave_its_node() {
        let q = SchedulingQueue::new(Duration::ZERO, Duration::ZERO);
        q.add(pod("preemptor", &[], json!({"priority": 100})));
        let popped = pop_now(&q).await.unwrap();
        q.requeue_preempting(popped, "n1", rejected());
        q.move_after_pod_deleted("n1", Some(1), gone());
        assert_eq!(q.counts()[&QueueName::Unschedulable], 1);
        // Pods of its own priority or above leaving do not hold it back.
        q.move_after_pod_deleted("n1", Some(100), gone());
        assert_eq!(pop_now(&q).await.unwrap().info.pod.name, "preemptor");
    }

    #[tokio::test]
    async fn a_pod_that_lost_its_nomination_waits_for_any_deletion_again() {
        let q = SchedulingQueue::new(Duration::ZERO, Duration::ZERO);
        q.add(pod("preemptor", &[], json!({})));
        let popped = pop_now(&q).await.unwrap();
        q.requeue_preempting(popped, "n1", rejected());
        q.clear_nomination(&pod("preemptor", &[], json!({})).uid);
        q.move_after_pod_deleted("n2", None, gone());
        assert_eq!(pop_now(&q).await.unwrap().info.pod.name, "preemptor");
    }

    #[tokio::test]
    async fn a_deletion_elsewhere_during_a_nominated_pods_attempt_does_not_send_it_to_backoff() {
        let q = q();
        q.add(nominated("preemptor", "n1"));
        let popped = pop_now(&q).await.unwrap();
        q.move_after_pod_deleted("n2", None, gone());
        q.requeue_failed(popped, rejected());
        assert_eq!(q.counts()[&QueueName::Unschedulable], 1);

        q.move_all_to_active();
        assert_eq!(
            q.counts()[&QueueName::Backoff],
            1,
            "still backing off (1 s)"
        );
        q.add(pod("other", &[], json!({})));
        let other = pop_now(&q).await.unwrap();
        q.move_after_pod_deleted("n3", None, gone());
        q.requeue_failed(other, rejected());
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
        q.requeue_failed(popped, rejected());
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
        q.requeue_failed(popped, rejected());
        assert_eq!(q.counts()[&QueueName::Backoff], 1);
        // Nothing active: no need to wait the minute out.
        let popped = pop_now(&q).await.expect("popped from backoff");
        // An error backoff is waited out in full.
        q.requeue_failed(popped, Rejection::error());
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
            q.requeue_failed(popped, rejected());
        }
        assert_eq!(q.counts()[&QueueName::Unschedulable], 2);
        q.move_up_to_priority(pod("gone", &[], json!({"priority": 100})));
        assert_eq!(pop_now(&q).await.unwrap().info.pod.name, "low");
        assert_eq!(q.counts()[&QueueName::Unschedulable], 1, "high still waits");
    }

    #[tokio::test]
    async fn an_event_during_the_attempt_sends_the_pod_to_backoff() {
        let q = q();
        q.add(pod("p", &[], json!({})));
        let popped = pop_now(&q).await.unwrap();
        q.move_all_to_active();
        q.requeue_failed(popped, rejected());
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
        q.requeue_failed(popped, rejected());
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

    /// Upstream's Update asks the pod's events in turn and stops at the
    /// first that moves it: here its new labels (backoff), before its new
    /// toleration could have sent it straight to active.
    #[tokio::test]
    async fn an_update_goes_where_its_first_moving_event_sends_it() {
        let hints =
            ProfileHints::new([("InterPodAffinity", None), ("TaintToleration", None)]).unwrap();
        let q = SchedulingQueue::with_hints(
            Duration::from_secs(1),
            Duration::from_secs(10),
            HashMap::from([("understudy-scheduler".to_string(), hints)]),
        );
        let p = ours("p");
        q.add(p.clone());
        let popped = pop_now(&q).await.unwrap();
        let mut rejection = Rejection::by(["InterPodAffinity"]);
        rejection.pending.insert("TaintToleration".into());
        q.requeue_failed(popped, rejection);
        assert_eq!(q.counts()[&QueueName::Unschedulable], 1);
        let mut updated = (*p.pod).clone();
        updated.metadata.labels = Some([("new".to_string(), "label".to_string())].into());
        updated.spec.as_mut().unwrap().tolerations = Some(vec![
            serde_json::from_value(json!({"key": "k", "operator": "Exists"})).unwrap(),
        ]);
        q.add(Arc::new(PodInfo::new(Arc::new(updated))));
        assert_eq!(q.counts()[&QueueName::Backoff], 1);
        assert_eq!(q.counts()[&QueueName::Active], 0);
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

    /// A queue whose `understudy-scheduler` profile has upstream's hints for
    /// TaintToleration and NodeResourcesFit.
    fn hinted(initial: Duration) -> SchedulingQueue {
        let hints =
            ProfileHints::new([("TaintToleration", None), ("NodeResourcesFit", None)]).unwrap();
        SchedulingQueue::with_hints(
            initial,
            Duration::from_secs(10),
            HashMap::from([("understudy-scheduler".to_string(), hints)]),
        )
    }

    fn ours(name: &str) -> Arc<PodInfo> {
        pod(name, &[], json!({"schedulerName": "understudy-scheduler"}))
    }

    /// A node event: `old` → `new` taints (`None` old: the node is new).
    fn node_event(old: Option<Value>, new: Value) -> QueueEvent {
        use crate::queueing_hints::{ActionType, EventResource};
        let node = |taints: Value| {
            let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
                "metadata": {"name": "n1"},
                "spec": {"taints": taints},
                "status": {"allocatable": {"cpu": "1", "pods": "10"}},
            }))
            .unwrap();
            OwnedObject::Node(Arc::new(crate::framework::NodeInfo::new(Arc::new(node))))
        };
        let action = if old.is_some() {
            ActionType::UPDATE_NODE_TAINT
        } else {
            ActionType::ADD
        };
        QueueEvent::new(
            ClusterEvent::new(EventResource::Node, action),
            old.map(node),
            Some(node(new)),
        )
    }

    use serde_json::Value;

    #[tokio::test]
    async fn only_events_a_rejecting_plugins_hint_accepts_move_a_pod() {
        let q = hinted(Duration::ZERO);
        q.add(ours("p"));
        let popped = pop_now(&q).await.unwrap();
        q.requeue_failed(popped, Rejection::by(["TaintToleration"]));
        let tainted = json!([{"key": "k", "effect": "NoSchedule"}]);
        // A pod deletion: TaintToleration registers none.
        q.move_after_pod_deleted("n1", None, gone());
        // Another taint added: not what the pod waits for.
        q.on_event(
            node_event(
                Some(tainted.clone()),
                json!([{"key": "k2", "effect": "NoSchedule"}, tainted[0]]),
            ),
            MoveFilter::All,
        );
        assert_eq!(q.counts()[&QueueName::Unschedulable], 1);
        // The taint removed: TaintToleration's hint says Queue.
        q.on_event(node_event(Some(tainted), json!([])), MoveFilter::All);
        assert_eq!(pop_now(&q).await.unwrap().info.pod.name, "p");
    }

    #[tokio::test]
    async fn events_during_an_attempt_are_asked_when_it_fails() {
        let q = hinted(Duration::from_secs(1));
        q.add(ours("p"));
        let popped = pop_now(&q).await.unwrap();
        let tainted = json!([{"key": "k", "effect": "NoSchedule"}]);
        q.on_event(node_event(None, tainted.clone()), MoveFilter::All);
        q.requeue_failed(popped, Rejection::by(["TaintToleration"]));
        assert_eq!(
            q.counts()[&QueueName::Unschedulable],
            1,
            "a node the pod does not tolerate changes nothing"
        );
        q.on_event(node_event(None, tainted), MoveFilter::All);
        assert_eq!(q.counts()[&QueueName::Unschedulable], 1);
        q.move_all_to_active();
        let popped = tokio::time::timeout(Duration::from_secs(5), q.pop())
            .await
            .unwrap()
            .unwrap();
        q.on_event(node_event(None, json!([])), MoveFilter::All);
        q.requeue_failed(popped, Rejection::by(["TaintToleration"]));
        assert_eq!(
            q.counts()[&QueueName::Backoff],
            1,
            "an untainted node added during the attempt may be the one"
        );
        assert!(
            q.inner.lock().unwrap().in_flight_events.is_empty(),
            "nothing kept once no pod is in flight"
        );
    }

    #[tokio::test]
    async fn a_pod_rejected_by_no_plugin_backs_off_as_an_error() {
        let q = hinted(Duration::from_secs(60));
        q.add(ours("p"));
        let popped = pop_now(&q).await.unwrap();
        q.requeue_failed(popped, Rejection::error());
        assert_eq!(q.counts()[&QueueName::Backoff], 1);
        assert!(
            pop_now(&q).await.is_none(),
            "an error backoff is waited out"
        );
    }

    #[test]
    fn backoffs_ending_in_one_window_leave_by_priority() {
        let q = hinted(Duration::from_secs(1));
        let failed = Instant::now();
        let mut inner = q.inner.lock().unwrap();
        for (name, priority) in [("low", 1), ("high", 100), ("mid", 50)] {
            let uid = SchedulingQueue::insert(
                &mut inner,
                pod(name, &[], json!({"priority": priority})),
                1,
                failed,
                Some(failed),
            );
            inner
                .entries
                .get_mut(&uid)
                .unwrap()
                .info
                .unschedulable_count = 1;
            q.activate_or_backoff(&mut inner, &uid, failed);
        }
        let order: Vec<String> = inner
            .backoff
            .iter()
            .map(|key| inner.entries[&inner.by_seq[&key.3]].info.pod.name.clone())
            .collect();
        assert_eq!(order, ["high", "mid", "low"]);
        let (ends, ..) = *inner.backoff.first().unwrap();
        assert_eq!(ends, q.window(failed + Duration::from_secs(1)));
    }

    #[tokio::test]
    async fn pods_entering_a_queue_are_counted_by_what_moved_them() {
        let family: Family<IncomingLabels, Counter> = Family::default();
        let q = hinted(Duration::ZERO).with_incoming_metric(family.clone());
        let count = |queue: &str, event: &str| {
            family
                .get_or_create(&IncomingLabels {
                    queue: queue.into(),
                    event: event.into(),
                })
                .get()
        };
        q.add(ours("p"));
        let popped = pop_now(&q).await.unwrap();
        q.requeue_failed(popped, Rejection::by(["TaintToleration"]));
        q.on_event(
            node_event(
                Some(json!([{"key": "k", "effect": "NoSchedule"}])),
                json!([]),
            ),
            MoveFilter::All,
        );
        assert_eq!(count("active", "UnscheduledPodAdd"), 1);
        assert_eq!(count("unschedulable", "ScheduleAttemptFailure"), 1);
        assert_eq!(count("backoff", "NodeUpdateNodeTaint"), 1);
    }

    #[tokio::test]
    async fn each_hint_asked_is_timed_by_plugin_event_and_answer() {
        let family: HistogramFamily<HintLabels> =
            Family::new_with_constructor(hint_buckets as fn() -> Histogram);
        let q = hinted(Duration::ZERO).with_hint_duration_metric(family.clone());
        let count = |event: &str, hint: &str| {
            let labels = HintLabels {
                plugin: "TaintToleration".into(),
                event: event.into(),
                hint: hint.into(),
            };
            let mut text = String::new();
            let mut registry = prometheus_client::registry::Registry::default();
            registry.register("h", "", family.clone());
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            let series = format!(
                "h_count{{plugin=\"{}\",event=\"{}\",hint=\"{}\"}} ",
                labels.plugin, labels.event, labels.hint
            );
            text.lines()
                .find_map(|l| l.strip_prefix(&series))
                .map_or(0, |n| n.parse::<u64>().unwrap())
        };
        q.add(ours("p"));
        let popped = pop_now(&q).await.unwrap();
        q.requeue_failed(popped, Rejection::by(["TaintToleration"]));
        let tainted = || Some(json!([{"key": "k", "effect": "NoSchedule"}]));
        // A taint kept: the hint says skip.
        q.on_event(node_event(tainted(), tainted().unwrap()), MoveFilter::All);
        assert_eq!(count("NodeUpdateNodeTaint", "QueueSkip"), 1);
        assert_eq!(count("NodeUpdateNodeTaint", "Queue"), 0);
        q.on_event(node_event(tainted(), json!([])), MoveFilter::All);
        assert_eq!(count("NodeUpdateNodeTaint", "Queue"), 1);
    }

    #[tokio::test]
    async fn a_pod_whose_cycle_panicked_goes_back_as_an_error() {
        let q = hinted(Duration::from_secs(1));
        q.add(ours("p"));
        let popped = pop_now(&q).await.unwrap();
        let info = popped.info.clone();
        drop(popped);
        q.requeue_if_in_flight(info.clone());
        assert_eq!(q.counts()[&QueueName::Backoff], 1);
        let inner = q.inner.lock().unwrap();
        assert!(inner.in_flight_since.is_empty() && inner.in_flight_events.is_empty());
        assert_eq!(inner.entries[&info.pod.uid].info.consecutive_errors, 1);
        drop(inner);
        // Not in flight any more: nothing happens.
        q.requeue_if_in_flight(info);
        assert_eq!(q.counts()[&QueueName::Backoff], 1);
    }
}
