//! One sync of one ReplicaSet (upstream's `syncReplicaSet`): claim pods,
//! create or delete pods when the last round's effects have been observed,
//! then write the status. Decisions come from the pure modules; this file
//! only reads the stores and talks to the API.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use understudy_component_base::events::EventRecorder;

use super::claim::{self, Claim, Claimer};
use super::selector::{self, SelectorProblem};
use super::{BURST_REPLICAS, handlers, ranking, slow_start, status, template};
use crate::controllers::{podutil, status_patch};
use crate::expectations::Expectations;
use crate::informer::Store;
use crate::key::ObjectKey;
use crate::lean;
use crate::worker::Requeue;

pub struct ReplicaSetSync {
    pub client: Client,
    pub replica_sets: Arc<Store<ReplicaSet>>,
    pub pods: Arc<Store<Pod>>,
    pub expectations: Arc<Expectations>,
    pub recorder: EventRecorder,
    /// UIDs of ReplicaSets already warned about their selector (selectors
    /// are immutable, so once per ReplicaSet is enough).
    pub warned_selectors: Mutex<HashSet<String>>,
}

/// The identity of the ReplicaSet being synced.
struct Target<'a> {
    rs: &'a ReplicaSet,
    key: &'a ObjectKey,
    name: &'a str,
    uid: &'a str,
    reference: ObjectReference,
}

impl ReplicaSetSync {
    pub async fn sync(&self, key: &ObjectKey) -> anyhow::Result<Requeue> {
        let Some(rs) = self.replica_sets.get(key) else {
            self.expectations.delete(key);
            return Ok(None);
        };
        // Checked before the pods are listed: when satisfied, every pod this
        // controller created or deleted is already reflected in the store.
        let needs_sync = self.expectations.satisfied(key);
        let spec = &rs.spec;
        let (Some(name), Some(uid)) = (rs.metadata.name.as_deref(), rs.metadata.uid.as_deref())
        else {
            tracing::warn!(replicaset = %key, "ReplicaSet without name or uid; skipped");
            return Ok(None);
        };
        if let Err(problem) = selector::check(&spec.selector) {
            self.warn_selector(&rs, key, uid, problem).await;
            return Ok(None);
        }
        let target = Target {
            rs: &rs,
            key,
            name,
            uid,
            reference: rs.object_ref(&()),
        };

        // Its own pods and orphans (upstream's FilterPodsByOwner), from the
        // controller index rather than a scan of the namespace.
        let mut candidates: Vec<Arc<Pod>> = self.pods.claimable_by(&key.namespace, uid);
        candidates.retain(|p| claim::owned_or_orphan(p, name, uid));
        let active: Vec<Arc<Pod>> = candidates
            .iter()
            .filter(|p| podutil::is_active(p))
            .cloned()
            .collect();
        let claimed = self.claim_pods(&target, &spec.selector, active).await?;
        let terminating = candidates
            .iter()
            .filter(|p| {
                is_terminating(p)
                    && claim::controlled_by(p, uid)
                    && selector::selects(&spec.selector, p.metadata.labels.as_ref())
            })
            .count();

        let manage_error = if needs_sync && rs.metadata.deletion_timestamp.is_none() {
            self.manage_replicas(&target, &claimed).await.err()
        } else {
            None
        };

        let now = Timestamp::now();
        let new_status =
            status::calculate_status(&rs, &claimed, terminating, manage_error.as_deref(), now);
        if status::status_changed(rs.status.as_ref(), &new_status) {
            self.write_status(&target, new_status.clone()).await?;
        }
        if let Some(error) = manage_error {
            anyhow::bail!(error);
        }

        // Nothing reports a ready pod turning available, so look again when
        // the first one does (or after minReadySeconds at the latest).
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        if min_ready > 0 && new_status.ready_replicas != new_status.available_replicas {
            let fallback = Duration::from_secs(min_ready.unsigned_abs().into());
            let next = status::next_availability_check(&claimed, min_ready, now)
                .map(|left| left.saturating_sub(since(now)))
                .unwrap_or(fallback);
            return Ok(Some(next));
        }
        Ok(None)
    }

    /// Writes the whole status as a merge patch guarded by the UID (see
    /// `status_patch`): no conflict with a concurrent spec change, one
    /// request instead of upstream's replace, re-read and replace.
    async fn write_status(
        &self,
        target: &Target<'_>,
        new_status: ReplicaSetStatus,
    ) -> anyhow::Result<()> {
        let patch = status_patch::whole_status(
            target.uid,
            &new_status,
            status_patch::REPLICA_SET_STATUS_FIELDS,
        );
        lean::patch_status::<ReplicaSet, _>(
            &self.client,
            &target.key.namespace,
            target.name,
            &Patch::Merge(&patch),
        )
        .await
        .with_context(|| format!("updating the status of ReplicaSet {}", target.key))?;
        Ok(())
    }

    /// Adopts matching orphans and releases owned pods that no longer match;
    /// returns the pods the ReplicaSet owns afterwards.
    async fn claim_pods(
        &self,
        target: &Target<'_>,
        selector: &LabelSelector,
        active: Vec<Arc<Pod>>,
    ) -> anyhow::Result<Vec<Arc<Pod>>> {
        let claimer = Claimer {
            namespace: &target.key.namespace,
            uid: target.uid,
            selector,
            deleting: target.rs.metadata.deletion_timestamp.is_some(),
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &target.key.namespace);
        let mut can_adopt: Option<Result<(), String>> = None;
        let mut claimed = Vec::new();
        let mut errors = Vec::new();
        for pod in active {
            let pod_name = pod.name_any();
            let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
            match claimer.classify(&pod) {
                Claim::Owned => claimed.push(pod),
                Claim::Ignore => {}
                Claim::Adopt => {
                    // The cached ReplicaSet may be stale: make sure it is
                    // neither deleted nor replaced before the first adoption.
                    if can_adopt.is_none() {
                        can_adopt = Some(self.can_adopt(target).await);
                    }
                    if let Some(Err(e)) = &can_adopt {
                        errors.push(format!(
                            "can't adopt Pod {}/{pod_name} ({pod_uid}): {e}",
                            target.key.namespace
                        ));
                        continue;
                    }
                    let patch = claim::adopt_patch(target.name, target.uid, &pod_uid);
                    match api
                        .patch(&pod_name, &PatchParams::default(), &Patch::Strategic(patch))
                        .await
                    {
                        Ok(_) => claimed.push(pod),
                        Err(e) if is_not_found(&e) => {}
                        Err(e) => errors.push(api_message(&e)),
                    }
                }
                Claim::Release => {
                    tracing::debug!(replicaset = %target.key, pod = %pod_name, "releasing pod");
                    let patch = claim::release_patch(target.uid, &pod_uid);
                    match api
                        .patch(&pod_name, &PatchParams::default(), &Patch::Strategic(patch))
                        .await
                    {
                        // Gone, or re-created with another UID: nothing to release.
                        Err(e) if !is_not_found(&e) && !is_invalid(&e) => {
                            errors.push(api_message(&e))
                        }
                        _ => {}
                    }
                }
            }
        }
        match errors.len() {
            0 => Ok(claimed),
            1 => anyhow::bail!(errors.remove(0)),
            _ => anyhow::bail!("[{}]", errors.join(", ")),
        }
    }

    /// Upstream's RecheckDeletionTimestamp with a live GET.
    async fn can_adopt(&self, target: &Target<'_>) -> Result<(), String> {
        let ns = &target.key.namespace;
        let fresh = Api::<ReplicaSet>::namespaced(self.client.clone(), ns)
            .get(target.name)
            .await
            .map_err(|e| format!("can't recheck DeletionTimestamp: {}", api_message(&e)))?;
        let fresh_uid = fresh.metadata.uid.as_deref().unwrap_or_default();
        if fresh_uid != target.uid {
            return Err(format!(
                "can't recheck DeletionTimestamp: original ReplicaSet {ns}/{} is gone: got uid {fresh_uid}, wanted {}",
                target.name, target.uid
            ));
        }
        if let Some(deleted) = &fresh.metadata.deletion_timestamp {
            return Err(format!(
                "{ns}/{} has just been deleted at {}",
                target.name, deleted.0
            ));
        }
        Ok(())
    }

    /// Creates or deletes pods towards `spec.replicas`; the error is the
    /// message for the ReplicaFailure condition.
    async fn manage_replicas(
        &self,
        target: &Target<'_>,
        active: &[Arc<Pod>],
    ) -> Result<(), String> {
        let desired = usize::try_from(status::desired_replicas(target.rs)).unwrap_or(0);
        if active.len() < desired {
            let count = (desired - active.len()).min(BURST_REPLICAS);
            tracing::debug!(replicaset = %target.key, desired, creating = count, "too few replicas");
            self.create_pods(target, count).await
        } else if active.len() > desired {
            let count = (active.len() - desired).min(BURST_REPLICAS);
            tracing::debug!(replicaset = %target.key, desired, deleting = count, "too many replicas");
            self.delete_pods(target, active, count).await
        } else {
            Ok(())
        }
    }

    async fn create_pods(&self, target: &Target<'_>, count: usize) -> Result<(), String> {
        self.expectations.expect_creations(target.key, count);
        let pod = template::controller_ref(target.rs)
            .ok_or_else(|| "ReplicaSet has no name or uid".to_string())
            .and_then(|owner| template::pod_from_template(target.rs, owner));
        let namespace = target.key.namespace.as_str();
        let (created, error) = slow_start::run(count, slow_start::INITIAL_BATCH_SIZE, || {
            self.create_pod(namespace, &pod, &target.reference)
        })
        .await;
        // Creations never attempted (or failed) will never be observed.
        let skipped = count - created;
        if skipped > 0 {
            tracing::debug!(replicaset = %target.key, skipped, "slow-start failure; lowering expectations");
        }
        for _ in 0..skipped {
            self.expectations.creation_observed(target.key);
        }
        error.map_or(Ok(()), Err)
    }

    async fn create_pod(
        &self,
        namespace: &str,
        pod: &Result<Pod, String>,
        rs: &ObjectReference,
    ) -> Result<(), String> {
        let pod = pod.as_ref().map_err(Clone::clone)?;
        match lean::create(&self.client, namespace, pod).await {
            Ok(name) => {
                let note = format!("Created pod: {name}");
                self.event(rs, false, "SuccessfulCreate", "Create", note);
                Ok(())
            }
            // Every creation would fail the same way and nobody needs to hear.
            Err(e) if has_cause(&e, "NamespaceTerminating") => Ok(()),
            Err(e) => {
                let message = api_message(&e);
                let note = format!("Error creating: {message}");
                self.event(rs, true, status::FAILED_CREATE, "Create", note);
                Err(message)
            }
        }
    }

    async fn delete_pods(
        &self,
        target: &Target<'_>,
        active: &[Arc<Pod>],
        count: usize,
    ) -> Result<(), String> {
        let related = self.related_pods(target.rs);
        let victims = ranking::pods_to_delete(active, &related, count, Timestamp::now());
        // Expect each by key, so a deletion is counted once whether seen as
        // a deletionTimestamp update or as the delete itself.
        self.expectations
            .expect_deletions(target.key, victims.iter().map(|p| handlers::pod_key(p)));
        let results =
            futures::future::join_all(victims.iter().map(|pod| self.delete_pod(target, pod))).await;
        results
            .into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), Err)
    }

    async fn delete_pod(&self, target: &Target<'_>, pod: &Pod) -> Result<(), String> {
        let name = pod.name_any();
        let namespace = &target.key.namespace;
        match lean::delete::<Pod>(&self.client, namespace, &name, &DeleteParams::default()).await {
            Ok(_) => {
                let note = format!("Deleted pod: {name}");
                self.event(&target.reference, false, "SuccessfulDelete", "Delete", note);
                Ok(())
            }
            Err(e) => {
                // The watch will never report this deletion.
                self.expectations
                    .deletion_observed(target.key, &handlers::pod_key(pod));
                if is_not_found(&e) {
                    return Ok(());
                }
                let message = api_message(&e);
                let note = format!("Error deleting: {message}");
                self.event(
                    &target.reference,
                    true,
                    status::FAILED_DELETE,
                    "Delete",
                    note,
                );
                Err(format!("unable to delete pods: {message}"))
            }
        }
    }

    /// Pods of every ReplicaSet sharing this one's controller (a Deployment's
    /// old and new ReplicaSets), for ranking by colocation; none for a
    /// ReplicaSet without a controller, as upstream.
    fn related_pods(&self, rs: &ReplicaSet) -> Vec<Arc<Pod>> {
        let Some(owner) = podutil::controller_of(rs.metadata.owner_references.as_ref()) else {
            return Vec::new();
        };
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        // A sibling's selector (it carries the pod-template-hash) selects the
        // pods it controls and orphans: read those from the controller index
        // rather than matching every pod of the namespace for every sibling.
        let orphans = self.pods.controlled_by(namespace, None);
        let mut seen = HashSet::new();
        let mut related = Vec::new();
        for sibling in self.replica_sets.controlled_by(namespace, Some(&owner.uid)) {
            let sibling_uid = sibling.metadata.uid.as_deref().unwrap_or_default();
            let controlled = self.pods.controlled_by(namespace, Some(sibling_uid));
            for pod in controlled.iter().chain(&orphans) {
                if selector::selects(&sibling.spec.selector, pod.metadata.labels.as_ref())
                    && seen.insert(pod.metadata.uid.clone())
                {
                    related.push(pod.clone());
                }
            }
        }
        related
    }

    async fn warn_selector(
        &self,
        rs: &ReplicaSet,
        key: &ObjectKey,
        uid: &str,
        problem: SelectorProblem,
    ) {
        let (reason, note) = match &problem {
            SelectorProblem::Empty => (
                "SelectingAll",
                "This ReplicaSet is selecting all pods. A non-empty selector is required."
                    .to_string(),
            ),
            SelectorProblem::Invalid(e) => ("InvalidSelector", format!("Invalid selector: {e}")),
        };
        tracing::warn!(replicaset = %key, problem = ?problem, "unusable selector; ReplicaSet skipped");
        let first = self
            .warned_selectors
            .lock()
            .expect("warned selectors lock")
            .insert(uid.to_string());
        if first {
            self.recorder
                .warning(&rs.object_ref(&()), reason, "Sync", note)
                .await;
        }
    }

    /// Records an Event without waiting for it (upstream's broadcaster is
    /// asynchronous too), so pod creation is not slowed by Event writes.
    fn event(
        &self,
        rs: &ObjectReference,
        warning: bool,
        reason: &'static str,
        action: &'static str,
        note: String,
    ) {
        let recorder = self.recorder.clone();
        let rs = rs.clone();
        tokio::spawn(async move {
            if warning {
                recorder.warning(&rs, reason, action, note).await;
            } else {
                recorder.normal(&rs, reason, action, note).await;
            }
        });
    }
}

/// Being deleted but not finished (upstream's `IsPodTerminating`).
fn is_terminating(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_some()
        && !matches!(phase, Some("Succeeded") | Some("Failed"))
}

/// How long ago `t` was (zero if in the future).
fn since(t: Timestamp) -> Duration {
    let elapsed = Timestamp::now().duration_since(t);
    if elapsed.is_positive() {
        elapsed.unsigned_abs()
    } else {
        Duration::ZERO
    }
}

/// The apiserver's message for an API error (what Go's `err.Error()` gives
/// for a StatusError), else the client error.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

fn is_invalid(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_invalid())
}

fn has_cause(e: &kube::Error, cause: &str) -> bool {
    matches!(e, kube::Error::Api(s)
        if s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == cause)))
}
