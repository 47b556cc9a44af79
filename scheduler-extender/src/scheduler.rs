//! The scheduling loop: pop a pod, decide on a snapshot, assume it in the
//! cache and run Reserve, then bind asynchronously (PreBind, then
//! `pods/binding`); report failures as upstream does (PodScheduled=False with
//! Unschedulable or SchedulerError + FailedScheduling Event), running
//! Unreserve and forgetting the assumed pod when a step after Reserve fails.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio_util::task::TaskTracker;
use understudy_component_base::events::{self, EventRecorder, EventType};

use crate::cache::Cache;
use crate::config::SchedulerConfig;
use crate::extender_client::Extenders;
use crate::framework::{CycleState, Handle, PodInfo, QueuedPodInfo, Snapshot, Status};
use crate::metrics::{AttemptsLabels, Metrics, QueueLabels};
use crate::preemption::{self, pdb::PdbInfo};
use crate::profile::Profile;
use crate::queue::{
    MoveFilter, Popped, QueueName, Rejection, SchedulingQueue, assigned_pod_deleted,
};
use crate::queueing_hints::ProfileHints;
use crate::scheduling::{Algorithm, Diagnosis, FitError, Nominated, ScheduleError, ScheduleResult};

/// See [`Scheduler::bind_slots`].
const BINDS_IN_FLIGHT: usize = 128;

pub struct Scheduler {
    pub client: Client,
    pub profiles: HashMap<String, (Arc<Profile>, Arc<Algorithm>)>,
    /// Shared with Reserve/PreBind plugins through [`Scheduler::handle`].
    pub cache: Arc<Mutex<Cache>>,
    pub queue: SchedulingQueue,
    pub config: SchedulerConfig,
    pub events: HashMap<String, EventRecorder>,
    pub metrics: Metrics,
    /// Binds in flight, so shutdown can wait for them.
    pub binds: TaskTracker,
    /// Binds sent at once. kube-scheduler starts a goroutine per bind; a
    /// bound keeps a burst of decisions from queueing thousands of requests
    /// (and, over HTTP/1.1, from opening a TLS connection each — 3000 did
    /// before our client spoke HTTP/2).
    bind_slots: tokio::sync::Semaphore,
    /// Pending pods with a nominated node: uid → (node, pod).
    pub nominator: Mutex<HashMap<String, (String, Arc<PodInfo>)>>,
    /// Pods whose preemption (victims' API calls) is still in flight: they
    /// must not preempt again before it lands (upstream's
    /// IsPodRunningPreemption), or a slow apiserver costs extra victims.
    pub preempting: Mutex<std::collections::HashSet<String>>,
    /// Victims this scheduler deleted (by UID) until the watch shows them
    /// terminating or gone: their preemptors must wait for them rather than
    /// preempt again on a cache that lags the deletions.
    pub evicting: Mutex<std::collections::HashSet<String>>,
    /// The last cycle's snapshot, brought up to date by the next one.
    cycle_snapshot: Mutex<Option<Snapshot>>,
    /// PodDisruptionBudgets by namespace/name, for preemption.
    pub pdbs: Mutex<HashMap<String, PdbInfo>>,
    /// The configuration's HTTP extenders, called by every profile.
    pub extenders: Arc<Extenders>,
}

/// What happened to one attempt, for tests and metrics.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Assumed(String),
    Unschedulable(String),
    Error(String),
    Skipped,
}

impl Scheduler {
    /// `event_client` has its own rate limit, so Events never slow binds
    /// (upstream gives its event broadcaster a separate client too).
    pub fn new(
        client: Client,
        event_client: Client,
        config: SchedulerConfig,
        metrics: Metrics,
    ) -> Result<Self, String> {
        let extenders = Arc::new(Extenders::new(&config.extenders)?);
        let mut profiles = HashMap::new();
        let mut events = HashMap::new();
        let mut hints = HashMap::new();
        for p in &config.profiles {
            let profile = Profile::from_config(p)?;
            hints.insert(
                p.scheduler_name.clone(),
                profile_hints(&profile, p, !extenders.is_empty())?,
            );
            events.insert(
                p.scheduler_name.clone(),
                EventRecorder::new(event_client.clone(), &p.scheduler_name, None),
            );
            profiles.insert(
                p.scheduler_name.clone(),
                (
                    Arc::new(profile),
                    Arc::new(Algorithm::new(extenders.clone())),
                ),
            );
        }
        Ok(Self {
            client,
            profiles,
            cache: Arc::new(Mutex::new(Cache::new())),
            queue: SchedulingQueue::with_hints(
                config.pod_initial_backoff,
                config.pod_max_backoff,
                hints,
            )
            .with_incoming_metric(metrics.queue_incoming_pods.clone())
            .with_hint_duration_metric(metrics.queueing_hint_duration.clone()),
            config,
            events,
            metrics,
            binds: TaskTracker::new(),
            bind_slots: tokio::sync::Semaphore::new(BINDS_IN_FLIGHT),
            nominator: Mutex::new(HashMap::new()),
            preempting: Mutex::new(Default::default()),
            evicting: Mutex::new(Default::default()),
            cycle_snapshot: Mutex::new(None),
            pdbs: Mutex::new(HashMap::new()),
            extenders,
        })
    }

    /// What Reserve and PreBind plugins reach: the client and the cache.
    pub fn handle(&self) -> Handle {
        Handle {
            client: self.client.clone(),
            cache: self.cache.clone(),
        }
    }

    /// Whether this scheduler is responsible for `pod`.
    pub fn responsible_for(&self, pod: &Pod) -> bool {
        let name = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("default-scheduler");
        self.profiles.contains_key(name)
    }

    pub fn update_pending_metrics(&self) {
        let counts = self.queue.counts();
        for q in [
            QueueName::Active,
            QueueName::Backoff,
            QueueName::Unschedulable,
            QueueName::Gated,
        ] {
            self.metrics
                .pending_pods
                .get_or_create(&QueueLabels {
                    queue: q.as_str().into(),
                })
                .set(counts.get(&q).copied().unwrap_or(0) as i64);
        }
    }

    /// Runs until the queue is closed, then waits for in-flight binds.
    pub async fn run(self: Arc<Self>) {
        let runtime = tokio::runtime::Handle::current();
        loop {
            // Decide a pod only when its bind can start: decided pods waiting
            // for a bind slot would hold assumptions made long before they
            // land, let later higher-priority pods queue behind them, and
            // count that wait as scheduling latency.
            drop(self.bind_slots.acquire().await.expect("never closed"));
            let Some(popped) = self.queue.pop().await else {
                break;
            };
            let this = self.clone();
            let runtime = runtime.clone();
            let attempted = popped.info.clone();
            // The decision is CPU work: keep it off the async workers that
            // serve watches and binds, and run it on a worker of the filter
            // pool itself, so its parallel filters and scores start there
            // instead of handing every cycle from thread to thread.
            let (done, outcome) = tokio::sync::oneshot::channel();
            rayon::spawn(move || {
                let _runtime = runtime.enter();
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    this.schedule_one(popped)
                }));
                let _ = done.send(result.is_ok());
            });
            if outcome.await != Ok(true) {
                tracing::error!(pod = %attempted.pod.key(), "scheduling cycle panicked");
                // Back in the queue as an error, or the pod would stay in
                // flight for good (and the queue would keep every event
                // for it).
                self.queue.requeue_if_in_flight(attempted);
            }
            self.update_pending_metrics();
        }
        self.binds.close();
        self.binds.wait().await;
    }

    /// Nominated pods per node, without `uid` (a pod never waits for itself).
    pub fn nominated_except(&self, uid: &str) -> Nominated {
        let mut out: Nominated = HashMap::new();
        for (other, (node, pod)) in self.nominator.lock().expect("nominator lock").iter() {
            if other != uid {
                out.entry(node.clone()).or_default().push(pod.clone());
            }
        }
        out
    }

    /// Evicts the chosen victims as upstream's prepareCandidate: mark each with
    /// the DisruptionTarget condition, delete it (its grace period applies), and
    /// record Preempted; then lower-priority pods nominated to the node lose
    /// their nomination.
    async fn prepare_candidate(
        &self,
        preemptor: &PodInfo,
        profile: &str,
        candidate: &preemption::Candidate,
    ) {
        self.metrics
            .preemption_victims
            .observe(candidate.victims.len() as f64);
        for victim in &candidate.victims {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &victim.namespace);
            let condition = json!({"status": {"conditions": [{
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "PreemptionByScheduler",
                "message": format!("{profile}: preempting to accommodate a higher priority pod"),
                "lastTransitionTime": jiff::Timestamp::now().to_string(),
            }]}});
            if let Err(e) = pods
                .patch_status(
                    &victim.name,
                    &PatchParams::default(),
                    &Patch::Strategic(condition),
                )
                .await
            {
                tracing::debug!(victim = %victim.key(), error = %e, "could not set DisruptionTarget");
            }
            let delete = kube::api::DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: Some(victim.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match pods.delete(&victim.name, &delete).await {
                Ok(_) => {
                    tracing::info!(victim = %victim.key(), preemptor = %preemptor.key(), node = %candidate.node, "preempted");
                    if let Some(events) = self.events.get(profile) {
                        let note = format!(
                            "Preempted by pod {} on node {}",
                            preemptor.uid, candidate.node
                        );
                        // Upstream names the preemptor as the related object.
                        events.record_related(
                            &object_ref(victim),
                            Some(&object_ref(preemptor)),
                            EventType::Normal,
                            "Preempted",
                            "Preempting",
                            note,
                        );
                    }
                }
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                    self.observed_eviction(&victim.uid)
                }
                Err(e) => {
                    self.observed_eviction(&victim.uid);
                    tracing::warn!(victim = %victim.key(), error = %e, "could not delete preemption victim");
                    // No deletion will wake the preemptor, which waits for one.
                    self.queue.move_all_to_active();
                }
            }
        }
        let lower: Vec<Arc<PodInfo>> = {
            let mut nominator = self.nominator.lock().expect("nominator lock");
            let lower: Vec<Arc<PodInfo>> = nominator
                .values()
                .filter(|(node, p)| node == &candidate.node && p.priority < preemptor.priority)
                .map(|(_, p)| p.clone())
                .collect();
            for p in &lower {
                nominator.remove(&p.uid);
                self.queue.clear_nomination(&p.uid);
            }
            lower
        };
        for p in lower {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &p.namespace);
            let clear = json!({"status": {"nominatedNodeName": null}});
            if let Err(e) = pods
                .patch_status(&p.name, &PatchParams::default(), &Patch::Merge(clear))
                .await
            {
                tracing::debug!(pod = %p.key(), error = %e, "could not clear nominatedNodeName");
            }
        }
    }

    /// The cache has seen `uid` terminating or gone (or it was never deleted).
    pub fn observed_eviction(&self, uid: &str) {
        self.evicting.lock().expect("evicting lock").remove(uid);
    }

    pub fn snapshot(&self) -> Snapshot {
        self.cache.lock().expect("cache lock").snapshot()
    }

    /// The PodDisruptionBudgets preemption must respect.
    pub fn pdb_list(&self) -> Vec<PdbInfo> {
        self.pdbs
            .lock()
            .expect("pdb lock")
            .values()
            .cloned()
            .collect()
    }

    /// One scheduling cycle for `popped`; on success the bind is started in the
    /// background.
    pub fn schedule_one(self: &Arc<Self>, popped: Popped) -> Outcome {
        let start = Instant::now();
        let pod = popped.info.pod.clone();
        let scheduler_name = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.clone())
            .unwrap_or_else(|| "default-scheduler".into());
        let Some((profile, algorithm)) = self.profiles.get(&scheduler_name).cloned() else {
            self.queue.done(&pod.uid);
            return Outcome::Skipped;
        };
        if pod.pod.metadata.deletion_timestamp.is_some() {
            self.queue.done(&pod.uid);
            return Outcome::Skipped;
        }
        let previous = self
            .cycle_snapshot
            .lock()
            .expect("cycle snapshot lock")
            .take();
        let snapshot = self.cache.lock().expect("cache lock").refresh(previous);
        let nominated = self.nominated_except(&pod.uid);
        let mut state = CycleState::new();
        let mut result = match unsupported(&pod, &snapshot) {
            Some(fit) => Err(ScheduleError::Unfit(Box::new(fit))),
            None => algorithm.schedule(
                &profile,
                self.config.percentage_of_nodes_to_score,
                &mut state,
                &pod,
                &snapshot,
                &nominated,
            ),
        };
        let mut preemption = None;
        if let (Err(ScheduleError::Unfit(fit)), Some(args)) = (&mut result, &profile.preemption) {
            let pdbs = self.pdb_list();
            let seed = pod.uid.bytes().fold(popped.info.attempts as u64, |a, b| {
                a.wrapping_mul(31).wrapping_add(b as u64)
            });
            self.metrics.preemption_attempts.inc();
            let own_nomination = self
                .nominator
                .lock()
                .expect("nominator lock")
                .get(&pod.uid)
                .map(|(node, _)| node.clone());
            let evicting = self.evicting.lock().expect("evicting lock").clone();
            let cycle = preemption::Cycle {
                profile: &profile,
                state: &state,
                pod: &pod,
                snapshot: &snapshot,
                nominated: &nominated,
                own_nomination: own_nomination.as_deref(),
                evicting: &evicting,
                extenders: &self.extenders,
            };
            let running = self
                .preempting
                .lock()
                .expect("preempting lock")
                .contains(&pod.uid);
            let outcome = if running {
                preemption::Outcome::NotHelpful(
                    "waiting for the preemption for this pod to be finished".into(),
                )
            } else {
                preemption::preempt(&cycle, args, &pdbs, fit, seed)
            };
            match outcome {
                preemption::Outcome::Preempt(candidate) => {
                    // Upstream's PostFilter message on success, in the
                    // failure this cycle still reports.
                    fit.diagnosis.post_filter_msg = Some(format!(
                        "preemption: found a potential placement for pod on node {}, preempting {} victims",
                        candidate.node,
                        candidate.victims.len()
                    ));
                    preemption = Some(candidate)
                }
                preemption::Outcome::NotHelpful(msg) => {
                    fit.diagnosis.post_filter_msg = Some(format!("preemption: {msg}"))
                }
            }
        }
        // Kept for the next cycle, which copies in only what changed.
        *self.cycle_snapshot.lock().expect("cycle snapshot lock") = Some(snapshot);
        self.metrics
            .algorithm_duration
            .observe(start.elapsed().as_secs_f64());
        match result {
            Ok(ScheduleResult { node, .. }) => {
                let assumed = self.cache.lock().expect("cache lock").assume(&pod, &node);
                let assumed = match assumed {
                    Ok(info) => info,
                    Err(e) => {
                        tracing::error!(pod = %pod.key(), error = %e, "assume failed");
                        self.queue.requeue_failed(popped, Rejection::error());
                        self.metrics.attempt(
                            "error",
                            &profile.scheduler_name,
                            start.elapsed().as_secs_f64(),
                        );
                        return Outcome::Error(e.to_string());
                    }
                };
                let handle = self.handle();
                if let Err(status) = profile.run_reserve(&mut state, &assumed, &node, &handle) {
                    // Upstream's unreserveAndForget, then the failure handler.
                    profile.run_unreserve(&state, &assumed, &node, &handle);
                    if let Err(e) = self.cache.lock().expect("cache lock").forget(&pod.uid) {
                        tracing::error!(pod = %pod.key(), error = %e, "forget failed");
                    }
                    return self.reserve_failed(popped, &profile, status, &node, start);
                }
                // The pod now occupies the node in the cache; still
                // counting its nomination would hold its room twice
                // and push other nominated pods elsewhere (upstream
                // drops the nomination on assume too).
                self.nominator
                    .lock()
                    .expect("nominator lock")
                    .remove(&pod.uid);
                self.queue.done(&pod.uid);
                let this = self.clone();
                let node2 = node.clone();
                let queued = popped.info.clone();
                let cycle = BindingCycle {
                    pod: assumed,
                    node: node2,
                    profile: profile.clone(),
                    state,
                    start,
                    queued,
                };
                let runtime = tokio::runtime::Handle::current();
                self.binds
                    .spawn_on(async move { this.bind(cycle).await }, &runtime);
                Outcome::Assumed(node)
            }
            Err(ScheduleError::Unfit(fit)) => {
                let message = fit.message();
                tracing::info!(pod = %pod.key(), %message, "unable to schedule pod");
                self.metrics.attempt(
                    "unschedulable",
                    &profile.scheduler_name,
                    start.elapsed().as_secs_f64(),
                );
                let nominate = preemption.as_ref().map(|c| c.node.clone());
                let rejection = rejection_of(&fit);
                match &nominate {
                    Some(node) => self.queue.requeue_preempting(popped, node, rejection),
                    None => self.queue.requeue_failed(popped, rejection),
                }
                let this = self.clone();
                let name = profile.scheduler_name.clone();
                let msg = message.clone();
                if let Some(node) = &nominate {
                    // Later cycles must already keep this room for the pod.
                    self.nominator
                        .lock()
                        .expect("nominator lock")
                        .insert(pod.uid.clone(), (node.clone(), pod.clone()));
                }
                if let Some(candidate) = &preemption {
                    self.preempting
                        .lock()
                        .expect("preempting lock")
                        .insert(pod.uid.clone());
                    self.evicting
                        .lock()
                        .expect("evicting lock")
                        .extend(candidate.victims.iter().map(|v| v.uid.clone()));
                }
                tokio::runtime::Handle::current().spawn(async move {
                    // This attempt's condition, nomination and Event first,
                    // then the victims, as upstream's asynchronous preemption:
                    // their deletions retry the pod, and a later attempt's
                    // report must not land before this one's.
                    this.report_unschedulable(
                        &pod,
                        &name,
                        "Unschedulable",
                        &msg,
                        nominate.as_deref(),
                    )
                    .await;
                    let preempted = preemption.is_some();
                    if let Some(candidate) = preemption {
                        this.prepare_candidate(&pod, &name, &candidate).await;
                    }
                    // Only now is the nomination in the pod's status too.
                    if preempted {
                        this.preempting
                            .lock()
                            .expect("preempting lock")
                            .remove(&pod.uid);
                    }
                });
                Outcome::Unschedulable(message)
            }
            Err(ScheduleError::Internal(status)) => {
                let message = status.message();
                tracing::error!(pod = %pod.key(), plugin = status.plugin, %message, "scheduling error");
                self.metrics.attempt(
                    "error",
                    &profile.scheduler_name,
                    start.elapsed().as_secs_f64(),
                );
                self.queue.requeue_failed(popped, Rejection::error());
                let this = self.clone();
                let name = profile.scheduler_name.clone();
                tokio::runtime::Handle::current().spawn(async move {
                    this.report_unschedulable(&pod, &name, "SchedulerError", &message, None)
                        .await;
                });
                Outcome::Error(status.message())
            }
        }
    }

    /// A Reserve plugin failed: a rejection reports the pod unschedulable on
    /// this one node, anything else is an error retried with backoff (as
    /// upstream's schedulingCycle after RunReservePluginsReserve).
    fn reserve_failed(
        self: &Arc<Self>,
        popped: Popped,
        profile: &Profile,
        status: Status,
        node: &str,
        start: Instant,
    ) -> Outcome {
        let pod = popped.info.pod.clone();
        let rejected = status.is_rejected();
        let (reason, message) = if rejected {
            let fit = FitError {
                num_all_nodes: 1,
                diagnosis: Diagnosis {
                    node_statuses: [(node.to_string(), status.clone())].into(),
                    ..Default::default()
                },
            };
            ("Unschedulable", fit.message())
        } else {
            ("SchedulerError", status.message())
        };
        tracing::info!(pod = %pod.key(), plugin = status.plugin, %message, "reserve failed");
        let result = if rejected { "unschedulable" } else { "error" };
        self.metrics.attempt(
            result,
            &profile.scheduler_name,
            start.elapsed().as_secs_f64(),
        );
        let rejection = if rejected {
            Rejection::by([status.plugin])
        } else {
            Rejection::error()
        };
        self.queue.requeue_failed(popped, rejection);
        let this = self.clone();
        let name = profile.scheduler_name.clone();
        let msg = message.clone();
        tokio::runtime::Handle::current().spawn(async move {
            this.report_unschedulable(&pod, &name, reason, &msg, None)
                .await;
        });
        if rejected {
            Outcome::Unschedulable(message)
        } else {
            Outcome::Error(message)
        }
    }

    /// The binding cycle: PreBind plugins, then `pods/binding`. A failure
    /// unreserves, forgets the assumed pod and retries it with backoff, as
    /// upstream's handleBindingCycleError.
    async fn bind(&self, cycle: BindingCycle) {
        let BindingCycle {
            pod,
            node,
            profile: profile_ref,
            state,
            start,
            queued,
        } = cycle;
        let profile = profile_ref.scheduler_name.clone();
        let handle = self.handle();
        // Before taking a bind slot: PreBind may wait minutes for volumes.
        if let Err(status) = profile_ref.run_pre_bind(&state, &pod, &node, &handle).await {
            profile_ref.run_unreserve(&state, &pod, &node, &handle);
            let forgotten = self
                .cache
                .lock()
                .expect("cache lock")
                .forget(&pod.uid)
                .is_ok();
            self.metrics
                .attempt("error", &profile, start.elapsed().as_secs_f64());
            if !forgotten {
                // Deleted (or bound by someone else) meanwhile: the watch
                // already took it out of the cache, and nothing is to retry.
                tracing::info!(pod = %pod.key(), %node, plugin = status.plugin, message = %status.message(), "prebind failed for a pod that is gone; dropping it");
                return;
            }
            // As upstream's handleBindingCycleError: the room the pod held is free.
            self.queue
                .on_event(assigned_pod_deleted(pod.clone()), MoveFilter::All);
            let (reason, message) = if status.is_rejected() {
                let fit = FitError {
                    num_all_nodes: 1,
                    diagnosis: Diagnosis {
                        node_statuses: [(node.clone(), status.clone())].into(),
                        ..Default::default()
                    },
                };
                ("Unschedulable", fit.message())
            } else {
                ("SchedulerError", status.message())
            };
            tracing::warn!(pod = %pod.key(), %node, plugin = status.plugin, %message, "prebind failed; retrying with backoff");
            self.queue.requeue_after_bind_failure(pod.clone(), &queued);
            self.report_unschedulable(&pod, &profile, reason, &message, None)
                .await;
            return;
        }
        let _slot = self.bind_slots.acquire().await.expect("never closed");
        let bind_start = Instant::now();
        let result = self.bind_call(&pod, &node).await;
        self.metrics
            .binding_duration
            .observe(bind_start.elapsed().as_secs_f64());
        match result {
            Ok(_) => {
                self.metrics
                    .attempt("scheduled", &profile, start.elapsed().as_secs_f64());
                self.metrics
                    .pod_scheduling_sli_duration
                    .get_or_create(&AttemptsLabels {
                        attempts: queued.attempts.to_string(),
                    })
                    .observe(queued.initial_attempt.elapsed().as_secs_f64());
                tracing::debug!(pod = %pod.key(), %node, "bound");
                if let Some(events) = self.events.get(&profile) {
                    let note = format!("Successfully assigned {} to {node}", pod.key());
                    events
                        .normal(&object_ref(&pod), "Scheduled", "Binding", note)
                        .await;
                }
            }
            Err(e) => {
                profile_ref.run_unreserve(&state, &pod, &node, &handle);
                // If the watch already confirmed the pod bound, there is nothing to undo.
                let forgotten = self
                    .cache
                    .lock()
                    .expect("cache lock")
                    .forget(&pod.uid)
                    .is_ok();
                self.metrics
                    .attempt("error", &profile, start.elapsed().as_secs_f64());
                if forgotten {
                    // The assumed pod may have kept others out of its node.
                    self.queue
                        .on_event(assigned_pod_deleted(pod.clone()), MoveFilter::All);
                }
                let gone = matches!(&e, BindError::Api(kube::Error::Api(s)) if s.code == 404 || s.code == 409);
                if gone || !forgotten {
                    // Deleted, or bound by someone else: the watch will tell the cache.
                    tracing::info!(pod = %pod.key(), error = %e, "binding rejected; dropping the pod");
                } else {
                    tracing::warn!(pod = %pod.key(), %node, error = %e, "binding failed; retrying with backoff");
                    self.queue.requeue_after_bind_failure(pod.clone(), &queued);
                    let message = format!("Binding rejected: {e}");
                    self.report_unschedulable(&pod, &profile, "SchedulerError", &message, None)
                        .await;
                }
            }
        }
    }

    /// The bind itself: a binding extender interested in the pod binds it,
    /// else `pods/binding` (upstream's extendersBinding, then the Bind plugin).
    async fn bind_call(&self, pod: &PodInfo, node: &str) -> Result<(), BindError> {
        if let Some(result) = self.extenders.bind(pod, node).await {
            return result.map_err(BindError::Extender);
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let binding = binding_body(&pod.namespace, &pod.name, &pod.uid, node);
        pods.create_subresource::<_, serde_json::Value>(
            "binding",
            &pod.name,
            &PostParams::default(),
            &binding,
        )
        .await
        .map(drop)
        .map_err(BindError::Api)
    }

    /// Sets PodScheduled=False with `reason` and records FailedScheduling, as
    /// upstream's handleSchedulingFailure, about the pod as the watch last
    /// showed it. The Event regards the pod by its whole reference, with the
    /// resourceVersion the condition patch left (the watched one if nothing
    /// was patched), and Events fold into series by that reference: a failure
    /// for a new reason patches the condition, moves the version on and so
    /// starts a new Event stating the new reason; a repeat of the same reason
    /// patches nothing and counts on the Event that states it. Upstream
    /// regards the version from before its patch, so after a repeat a new
    /// reason folds into the repeat's Event and the newest Event keeps the
    /// old reason until the next attempt; regarding the patched version
    /// keeps the newest Event and the condition in step.
    async fn report_unschedulable(
        &self,
        pod: &PodInfo,
        profile: &str,
        reason: &str,
        message: &str,
        nominate: Option<&str>,
    ) {
        // Placed meanwhile (a later attempt, or someone else): the failure is stale.
        if self
            .cache
            .lock()
            .expect("cache lock")
            .node_of(&pod.uid)
            .is_some()
        {
            return;
        }
        // Deleted (or bound elsewhere, or no longer ours) meanwhile: there
        // is no pod left to report on. The queue is keyed by UID, so a pod
        // re-created with the same name is another pod.
        let Some(current) = self.queue.pod(&pod.uid) else {
            tracing::debug!(pod = %pod.key(), "pod left the queue; not reporting its failure");
            return;
        };
        let patched = self
            .patch_condition(&current, reason, message, nominate)
            .await;
        if let Some(events) = self.events.get(profile) {
            let mut regarding = object_ref(&current);
            if let Some(version) = patched {
                regarding.resource_version = Some(version);
            }
            let note = truncate_note(message);
            events
                .warning(&regarding, "FailedScheduling", "Scheduling", note)
                .await;
        }
    }

    /// A pod was deleted: its Event series end, and no Event about it is
    /// written any more (see [`EventRecorder::object_deleted`]).
    pub fn pod_deleted(&self, uid: &str) {
        for events in self.events.values() {
            events.object_deleted(uid);
        }
    }

    /// Sets PodScheduled=False and, after a preemption, `status.nominatedNodeName`.
    /// Returns the pod's resourceVersion after the patch, if it patched.
    async fn patch_condition(
        &self,
        pod: &PodInfo,
        reason: &str,
        message: &str,
        nominate: Option<&str>,
    ) -> Option<String> {
        let current = pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
        let current_nomination = pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref());
        if nominate.is_none_or(|n| current_nomination == Some(n))
            && current.is_some_and(|c| {
                c.status == "False"
                    && c.reason.as_deref() == Some(reason)
                    && c.message.as_deref() == Some(message)
            })
        {
            return None;
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        // The condition stays False: it keeps the time it became False.
        let transitioned = current
            .filter(|c| c.status == "False")
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| jiff::Timestamp::now().to_string());
        let mut patch = json!({"status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": reason,
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": transitioned,
        }]}});
        if let Some(generation) = pod.pod.metadata.generation {
            patch["status"]["conditions"][0]["observedGeneration"] = json!(generation);
        }
        if let Some(node) = nominate {
            patch["status"]["nominatedNodeName"] = json!(node);
        }
        match pods
            .patch_status(&pod.name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            // A pod re-created under the name meanwhile is another pod.
            Ok(patched) if patched.metadata.uid.as_deref() == Some(pod.uid.as_str()) => {
                patched.metadata.resource_version
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(pod = %pod.key(), error = %e, "could not update the PodScheduled condition");
                None
            }
        }
    }
}

/// An Event note is at most 1024 bytes (the apiserver rejects longer ones):
/// longer messages are cut, ending in " ...", as upstream's truncateMessage
/// (at a character boundary, where Go cuts bytes).
fn truncate_note(message: &str) -> String {
    const NOTE_LENGTH_LIMIT: usize = 1024;
    const SUFFIX: &str = " ...";
    if message.len() <= NOTE_LENGTH_LIMIT {
        return message.to_string();
    }
    let mut end = NOTE_LENGTH_LIMIT - SUFFIX.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{SUFFIX}", &message[..end])
}

/// Pods this scheduler must not place because the step that makes them
/// runnable is not implemented: binding them would leave them stuck in
/// ContainerCreating, so they are reported unschedulable with the reason.
/// Pods with resource claims are refused before any node is tried
/// (DynamicResources' PreFilter), in upstream's words where it has them.
fn unsupported(pod: &PodInfo, snapshot: &Snapshot) -> Option<FitError> {
    let reason =
        crate::plugins::dynamic_resources::refusal(pod, &snapshot.volumes.resource_claims)?;
    Some(FitError {
        num_all_nodes: snapshot.nodes.len(),
        diagnosis: Diagnosis {
            pre_filter: Some(
                crate::framework::Status::unresolvable(reason)
                    .with_plugin(crate::plugins::dynamic_resources::NAME),
            ),
            ..Default::default()
        },
    })
}

/// The `pods/binding` body upstream's DefaultBinder posts. A non-empty `uid`
/// makes the apiserver refuse to bind a different pod of the same name.
pub fn binding_body(namespace: &str, name: &str, uid: &str, node: &str) -> serde_json::Value {
    let mut metadata = json!({"name": name, "namespace": namespace});
    if !uid.is_empty() {
        metadata["uid"] = json!(uid);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": metadata,
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    })
}

/// What the binding cycle carries over from the scheduling cycle.
/// Why a bind failed: the apiserver's answer, or a binding extender's.
#[derive(Debug, thiserror::Error)]
enum BindError {
    #[error(transparent)]
    Api(kube::Error),
    #[error(transparent)]
    Extender(crate::extender_client::ExtenderError),
}

struct BindingCycle {
    /// The assumed pod (with `spec.nodeName` set).
    pod: Arc<PodInfo>,
    node: String,
    profile: Arc<Profile>,
    /// The cycle state Reserve left, read by PreBind and Unreserve.
    state: CycleState,
    start: Instant,
    queued: QueuedPodInfo,
}

/// client-go's reference.GetReference of the pod, resourceVersion included.
fn object_ref(pod: &PodInfo) -> ObjectReference {
    let mut r = events::reference(pod.pod.as_ref());
    r.uid = Some(pod.uid.clone());
    r
}

/// A profile's queueing hints: its plugins that can reject or hold a pod,
/// with their args, and the extenders' stand-in (upstream registers every
/// event for `Extender`, the name put in a pod's unschedulable plugins when
/// an extender rejected nodes).
fn profile_hints(
    profile: &Profile,
    config: &crate::config::ProfileConfig,
    has_extenders: bool,
) -> Result<ProfileHints, String> {
    let mut names: Vec<&str> = vec![];
    for point in ["preFilter", "filter", "reserve", "preBind"] {
        for name in profile.plugin_names(point) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    if profile.preemption.is_some() {
        names.push(crate::queueing_hints::DEFAULT_PREEMPTION);
    }
    names.push(crate::queueing_hints::SCHEDULING_GATES);
    // Its refusals stand in for the plugin until DRA allocation exists; as a
    // plugin without hints here it gets the wildcard.
    names.push(crate::plugins::dynamic_resources::NAME);
    if has_extenders {
        names.push(crate::scheduling::EXTENDER);
    }
    ProfileHints::new(
        names
            .into_iter()
            .map(|n| (n, config.plugin_config.get(n).filter(|v| !v.is_null()))),
    )
    .map_err(|e| format!("profile {:?}: {e}", config.scheduler_name))
}

/// The plugins that rejected the pod in this attempt (upstream's
/// Diagnosis.UnschedulablePlugins); none when there were no nodes at all.
fn rejection_of(fit: &FitError) -> Rejection {
    let mut plugins: std::collections::HashSet<String> = Default::default();
    let statuses = fit
        .diagnosis
        .pre_filter
        .iter()
        .chain(fit.diagnosis.node_statuses.values());
    let narrowing = fit.diagnosis.narrowing_plugins.iter().copied();
    for plugin in statuses.map(|s| s.plugin).chain(narrowing) {
        if !plugin.is_empty() && !plugins.contains(plugin) {
            plugins.insert(plugin.to_string());
        }
    }
    Rejection {
        plugins,
        pending: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::fake_api::{self, Request};
    use crate::framework::testing::{container, node, pod};
    use crate::framework::{Plugin, PreBindPlugin, ReservePlugin};
    use crate::queue::QueueName;
    use serde_json::Value;

    type Log = Arc<Mutex<Vec<String>>>;

    /// The profile of the default configuration.
    const PROFILE: &str = "understudy-scheduler";

    /// Serves Reserve and PreBind with fixed answers, logging each call.
    struct Scripted {
        log: Log,
        reserve: Status,
        pre_bind: Status,
        /// The pod's deletion reaches the cache while PreBind runs.
        deleted_during_pre_bind: bool,
    }

    impl Plugin for Scripted {
        fn name(&self) -> &'static str {
            "Scripted"
        }
        fn as_reserve(&self) -> Option<&dyn ReservePlugin> {
            Some(self)
        }
        fn as_pre_bind(&self) -> Option<&dyn PreBindPlugin> {
            Some(self)
        }
    }

    impl ReservePlugin for Scripted {
        fn reserve(&self, _: &mut CycleState, _: &PodInfo, node: &str, _: &Handle) -> Status {
            self.log.lock().unwrap().push(format!("reserve {node}"));
            self.reserve.clone()
        }
        fn unreserve(&self, _: &CycleState, _: &PodInfo, node: &str, _: &Handle) {
            self.log.lock().unwrap().push(format!("unreserve {node}"));
        }
    }

    impl PreBindPlugin for Scripted {
        fn pre_bind<'a>(
            &'a self,
            _: &'a CycleState,
            pod: &'a PodInfo,
            node: &'a str,
            handle: &'a Handle,
        ) -> futures::future::BoxFuture<'a, Status> {
            Box::pin(async move {
                if self.deleted_during_pre_bind {
                    handle.cache().remove_pod(&pod.uid);
                }
                self.log.lock().unwrap().push(format!("prebind {node}"));
                self.pre_bind.clone()
            })
        }
    }

    struct Run {
        scheduler: Arc<Scheduler>,
        log: Log,
        requests: tokio::sync::mpsc::UnboundedReceiver<Request>,
        outcome: Outcome,
        uid: String,
    }

    /// One scheduling cycle of a pod that fits node `n1`, with the default
    /// profile's Reserve and PreBind plugins replaced by [`Scripted`], and
    /// its binding cycle run to the end.
    async fn schedule(reserve: Status, pre_bind: Status) -> Run {
        schedule_with(reserve, pre_bind, false).await
    }

    async fn schedule_with(reserve: Status, pre_bind: Status, deleted: bool) -> Run {
        let (client, requests) = fake_api::apiserver(Arc::new(fake_api::echo_bumping_version));
        let mut registry = prometheus_client::registry::Registry::default();
        let mut scheduler = Scheduler::new(
            client.clone(),
            client,
            SchedulerConfig::default(),
            Metrics::register(&mut registry),
        )
        .unwrap();
        let log: Log = Default::default();
        let (profile, algorithm) = scheduler.profiles.remove(PROFILE).unwrap();
        let mut profile = Arc::try_unwrap(profile).ok().unwrap();
        let scripted: Arc<dyn Plugin> = Arc::new(Scripted {
            log: log.clone(),
            reserve,
            pre_bind,
            deleted_during_pre_bind: deleted,
        });
        profile.reserve = vec![scripted.clone()];
        profile.pre_bind = vec![scripted];
        scheduler
            .profiles
            .insert(PROFILE.into(), (Arc::new(profile), algorithm));
        let scheduler = Arc::new(scheduler);
        scheduler
            .cache
            .lock()
            .unwrap()
            .add_or_update_node(node("n1", "4", "8Gi", &[], json!({})));
        let p = pod(
            "p",
            &[],
            json!({"schedulerName": PROFILE, "containers": [container("100m", "100Mi")]}),
        );
        let uid = p.uid.clone();
        scheduler.queue.add(p);
        let popped = scheduler.queue.pop().await.unwrap();
        let outcome = scheduler.schedule_one(popped);
        scheduler.binds.close();
        scheduler.binds.wait().await;
        Run {
            scheduler,
            log,
            requests,
            outcome,
            uid,
        }
    }

    impl Run {
        fn calls(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
        fn forgotten(&self) -> bool {
            self.scheduler
                .cache
                .lock()
                .unwrap()
                .node_of(&self.uid)
                .is_none()
        }
        fn waiting_in(&self, queue: QueueName) -> usize {
            self.scheduler.queue.counts()[&queue]
        }
        /// The PodScheduled condition written, and whether a bind was sent.
        async fn condition_and_binding(&mut self) -> (Option<Value>, bool) {
            let mut bound = false;
            loop {
                let r = self.requests.recv().await.unwrap();
                if r.path.ends_with("/binding") {
                    bound = true;
                }
                if r.path.ends_with("/status") {
                    return (Some(r.body["status"]["conditions"][0].clone()), bound);
                }
                if r.path.contains("/events") && bound {
                    return (None, bound);
                }
            }
        }
    }

    fn reason_and_message(condition: &Value) -> (&str, &str) {
        (
            condition["reason"].as_str().unwrap(),
            condition["message"].as_str().unwrap(),
        )
    }

    #[tokio::test]
    async fn a_reserve_error_unreserves_forgets_and_backs_off() {
        let mut run = schedule(Status::error("boom"), Status::success()).await;
        let message = "running Reserve plugin \"Scripted\": boom";
        assert_eq!(run.outcome, Outcome::Error(message.into()));
        assert_eq!(run.calls(), vec!["reserve n1", "unreserve n1"]);
        assert!(run.forgotten());
        assert_eq!(run.waiting_in(QueueName::Backoff), 1);
        let (condition, bound) = run.condition_and_binding().await;
        assert!(!bound);
        assert_eq!(
            reason_and_message(&condition.unwrap()),
            ("SchedulerError", message)
        );
    }

    #[tokio::test]
    async fn a_reserve_rejection_is_unschedulable_on_that_node() {
        let mut run = schedule(Status::unschedulable("no room"), Status::success()).await;
        let message = "0/1 nodes are available: 1 no room.";
        assert_eq!(run.outcome, Outcome::Unschedulable(message.into()));
        assert_eq!(run.calls(), vec!["reserve n1", "unreserve n1"]);
        assert!(run.forgotten());
        assert_eq!(run.waiting_in(QueueName::Unschedulable), 1);
        let (condition, _) = run.condition_and_binding().await;
        assert_eq!(
            reason_and_message(&condition.unwrap()),
            ("Unschedulable", message)
        );
    }

    #[tokio::test]
    async fn a_pre_bind_error_unreserves_forgets_and_retries_without_binding() {
        let mut run = schedule(
            Status::success(),
            Status::error("binding volumes: context deadline exceeded"),
        )
        .await;
        assert_eq!(run.outcome, Outcome::Assumed("n1".into()));
        assert_eq!(
            run.calls(),
            vec!["reserve n1", "prebind n1", "unreserve n1"]
        );
        assert!(run.forgotten());
        assert_eq!(run.waiting_in(QueueName::Backoff), 1);
        let (condition, bound) = run.condition_and_binding().await;
        assert!(!bound, "no bind after a failed PreBind");
        assert_eq!(
            reason_and_message(&condition.unwrap()),
            (
                "SchedulerError",
                "running PreBind plugin \"Scripted\": binding volumes: context deadline exceeded"
            )
        );
    }

    #[tokio::test]
    async fn a_pre_bind_error_for_a_deleted_pod_drops_it() {
        let mut run = schedule_with(
            Status::success(),
            Status::error("binding volumes: pod does not exist any more"),
            true,
        )
        .await;
        assert_eq!(
            run.calls(),
            vec!["reserve n1", "prebind n1", "unreserve n1"]
        );
        assert!(run.scheduler.queue.counts().values().all(|n| *n == 0));
        // The binding cycle is over: whatever it wrote has arrived.
        while let Ok(r) = run.requests.try_recv() {
            assert!(
                !r.path.ends_with("/status") && !r.path.ends_with("/binding"),
                "{r:?}"
            );
        }
    }

    #[tokio::test]
    async fn pre_bind_runs_before_the_bind() {
        let mut run = schedule(Status::success(), Status::success()).await;
        assert_eq!(run.outcome, Outcome::Assumed("n1".into()));
        assert_eq!(run.calls(), vec!["reserve n1", "prebind n1"]);
        assert!(!run.forgotten());
        let (condition, bound) = run.condition_and_binding().await;
        assert!(bound);
        assert_eq!(condition, None);
    }

    /// A scheduler over a fake apiserver with no nodes, so every pod is
    /// unschedulable. A status patch answers with the pod at resourceVersion
    /// 10 + the number of status patches so far.
    fn scheduler_without_nodes() -> (
        Arc<Scheduler>,
        tokio::sync::mpsc::UnboundedReceiver<Request>,
    ) {
        let patches = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let respond = move |r: &Request| {
            if r.path.ends_with("/status") {
                let n = 1 + patches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let pod = json!({"metadata": {"name": "p", "namespace": "default",
                    "uid": "uid-default-p", "resourceVersion": (10 + n).to_string()},
                    "status": r.body["status"]});
                return (200, pod);
            }
            fake_api::echo_bumping_version(r)
        };
        let (client, requests) = fake_api::apiserver(Arc::new(respond));
        let mut registry = prometheus_client::registry::Registry::default();
        let scheduler = Scheduler::new(
            client.clone(),
            client,
            SchedulerConfig::default(),
            Metrics::register(&mut registry),
        )
        .unwrap();
        (Arc::new(scheduler), requests)
    }

    /// Pod `p` at `resource_version`, as its watch shows it.
    fn pending_pod(resource_version: &str, condition_message: Option<&str>) -> Arc<PodInfo> {
        let info = pod(
            "p",
            &[],
            json!({"schedulerName": PROFILE, "containers": [container("100m", "100Mi")]}),
        );
        let mut p = (*info.pod).clone();
        p.metadata.resource_version = Some(resource_version.into());
        if let Some(message) = condition_message {
            p.status = Some(
                serde_json::from_value(json!({"conditions": [{
                    "type": "PodScheduled", "status": "False",
                    "reason": "Unschedulable", "message": message}]}))
                .unwrap(),
            );
        }
        Arc::new(PodInfo::new(Arc::new(p)))
    }

    /// The next Event written (skipping other requests).
    async fn next_event(requests: &mut tokio::sync::mpsc::UnboundedReceiver<Request>) -> Request {
        loop {
            let r = tokio::time::timeout(std::time::Duration::from_secs(10), requests.recv())
                .await
                .expect("an Event within 10 s")
                .unwrap();
            if r.path.contains("/events") {
                return r;
            }
        }
    }

    /// Pops the pod (after its backoff) and tries it.
    async fn attempt(scheduler: &Arc<Scheduler>) {
        scheduler.queue.move_all_to_active();
        let popped = scheduler.queue.pop().await.unwrap();
        assert!(matches!(
            scheduler.schedule_one(popped),
            Outcome::Unschedulable(_)
        ));
    }

    /// The FailedScheduling Event regards the pod by its whole reference at
    /// the version the condition patch left: a repeat of the same reason
    /// (no patch) counts on the Event stating it, and a new reason (a new
    /// version) is a new Event with its own note — so the newest Event
    /// states what the condition states.
    #[tokio::test]
    async fn failed_scheduling_events_follow_the_condition() {
        let (scheduler, mut requests) = scheduler_without_nodes();
        scheduler.queue.add(pending_pod("10", None));
        attempt(&scheduler).await;
        let first = next_event(&mut requests).await;
        assert_eq!(first.method, "POST");
        assert_eq!(first.body["reason"], "FailedScheduling");
        assert_eq!(first.body["action"], "Scheduling");
        assert_eq!(first.body["type"], "Warning");
        assert_eq!(
            first.body["regarding"],
            json!({"apiVersion": "v1", "kind": "Pod", "namespace": "default",
                   "name": "p", "uid": "uid-default-p", "resourceVersion": "11"})
        );
        // The watch shows the condition patch; the same reason again.
        let note = first.body["note"].as_str().unwrap().to_string();
        scheduler.queue.add(pending_pod("11", Some(&note)));
        attempt(&scheduler).await;
        let repeat = next_event(&mut requests).await;
        assert_eq!(repeat.method, "PATCH", "a series on the first Event");
        assert!(
            repeat
                .path
                .ends_with(first.body["metadata"]["name"].as_str().unwrap())
        );
        assert_eq!(repeat.body["series"]["count"], 2);
        // A node appears that the pod does not tolerate: a new reason.
        scheduler.cache.lock().unwrap().add_or_update_node(node(
            "n1",
            "4",
            "8Gi",
            &[],
            json!({"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}),
        ));
        attempt(&scheduler).await;
        let changed = next_event(&mut requests).await;
        assert_eq!(
            changed.method, "POST",
            "a new Event, not a count on the old"
        );
        assert_eq!(changed.body["regarding"]["resourceVersion"], "12");
        assert_ne!(changed.body["note"], first.body["note"]);
        assert!(
            changed.body["note"]
                .as_str()
                .unwrap()
                .contains("untolerated taint"),
            "{}",
            changed.body["note"]
        );
    }

    /// A pod deleted while its attempt ran gets no Event and no condition.
    #[tokio::test]
    async fn no_report_about_a_pod_deleted_during_its_attempt() {
        let (scheduler, mut requests) = scheduler_without_nodes();
        scheduler.queue.add(pending_pod("10", None));
        let popped = scheduler.queue.pop().await.unwrap();
        // The watch's deletion, as the pod informer applies it.
        scheduler.pod_deleted("uid-default-p");
        scheduler.queue.delete("uid-default-p");
        scheduler.schedule_one(popped);
        let written =
            tokio::time::timeout(std::time::Duration::from_secs(2), requests.recv()).await;
        assert!(written.is_err(), "unexpected write {written:?}");
    }

    #[test]
    fn event_notes_are_cut_to_the_apiserver_limit() {
        assert_eq!(
            truncate_note("0/3 nodes are available."),
            "0/3 nodes are available."
        );
        let exact = "x".repeat(1024);
        assert_eq!(truncate_note(&exact), exact);
        let long = "y".repeat(2000);
        let cut = truncate_note(&long);
        assert_eq!(cut.len(), 1024);
        assert!(cut.ends_with("y ..."));
        // Never inside a character: "é" is two bytes.
        let accented = "é".repeat(600);
        let cut = truncate_note(&accented);
        assert!(cut.len() <= 1024 && cut.ends_with(" ..."));
        assert_eq!(cut.len(), 1020 + " ...".len());
    }

    #[test]
    fn a_pods_rejecting_plugins_include_those_that_narrowed_the_nodes() {
        let fit = FitError {
            num_all_nodes: 2,
            diagnosis: Diagnosis {
                node_statuses: [
                    (
                        "a".to_string(),
                        Status::unresolvable("node(s) didn't satisfy plugin(s) [NodeAffinity]"),
                    ),
                    (
                        "b".to_string(),
                        Status::unschedulable("Insufficient cpu").with_plugin("NodeResourcesFit"),
                    ),
                ]
                .into(),
                narrowing_plugins: vec!["NodeAffinity"],
                ..Default::default()
            },
        };
        let rejection = rejection_of(&fit);
        assert_eq!(
            rejection.plugins,
            ["NodeAffinity", "NodeResourcesFit"]
                .map(String::from)
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn a_refused_resource_claim_is_a_rejection_by_dynamic_resources() {
        let claim_pod = pod(
            "p",
            &[],
            serde_json::json!({"resourceClaims": [{"name": "gpu", "resourceClaimName": "gpu"}]}),
        );
        let snapshot = Snapshot::default();
        let fit = unsupported(&claim_pod, &snapshot).expect("refused");
        assert!(
            rejection_of(&fit)
                .plugins
                .contains(crate::plugins::dynamic_resources::NAME)
        );
    }
}
