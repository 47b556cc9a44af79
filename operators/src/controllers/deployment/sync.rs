//! The I/O half of the controller: upstream's syncDeployment step by step.
//! It reads the informer stores, asks the pure modules what to do, and
//! applies their answers with API calls and Events.
//!
//! Writes carry the resourceVersion they were read at, so a stale cache
//! ends in a conflict and a retry rather than a lost update. Unlike
//! upstream, the objects in hand are refreshed from each write's response,
//! which saves the conflict (and retry) upstream meets when one sync writes
//! the same object twice.

use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use understudy_component_base::events::EventRecorder;

use super::annotations::{
    self, MAX_REVISION_HISTORY_CHARS, REVISION, max_revision, set_deployment_revision,
    set_new_replica_set_annotations,
};
use super::claim::{Claim, adopt_patch, claim, release_patch, selector_error};
use super::cleanup::replica_sets_to_delete;
use super::conditions::{self as cond, PROGRESSING, TRUE};
use super::proportion::plan_scale;
use super::rollback::rollback_to;
use super::rolling::{max_surge, new_rs_new_replicas};
use super::sets::{
    RECREATE, ROLLING_UPDATE, all_sets, desired, is_active, is_paused, spec_replicas,
    split_new_and_old, strategy_type,
};
use super::status::{
    calculate_status, has_progress_deadline, paused_condition, requeue_after, rollout_status,
    same_status,
};
use super::template::{
    equal_ignore_hash, labels_with_hash, pod_template_hash, replica_set_name, selector_with_hash,
};
use crate::controllers::podutil::{controller_of, selector_is_empty};
use crate::informer::Store;
use crate::key::ObjectKey;
use crate::worker::Requeue;

/// Event reasons of upstream's deployment controller.
const SELECTING_ALL: &str = "SelectingAll";
pub(super) const SCALING_REPLICA_SET: &str = "ScalingReplicaSet";

/// The new ReplicaSet (if any) and the old ones, oldest first.
pub(super) type Sets = (Option<ReplicaSet>, Vec<ReplicaSet>);

pub struct Syncer {
    pub(super) client: Client,
    pub(super) recorder: EventRecorder,
    pub(super) deployments: Arc<Store<Deployment>>,
    pub(super) sets: Arc<Store<ReplicaSet>>,
    pub(super) pods: Arc<Store<Pod>>,
}

pub(super) fn namespace(d: &Deployment) -> String {
    d.metadata.namespace.clone().unwrap_or_default()
}

fn api_status(e: &kube::Error) -> Option<&kube::core::Status> {
    match e {
        kube::Error::Api(status) => Some(status),
        _ => None,
    }
}

pub(super) fn is_not_found(e: &kube::Error) -> bool {
    api_status(e).is_some_and(|s| s.is_not_found())
}

fn is_invalid(e: &kube::Error) -> bool {
    api_status(e).is_some_and(|s| s.is_invalid())
}

fn is_already_exists(e: &kube::Error) -> bool {
    api_status(e).is_some_and(|s| s.is_already_exists())
}

/// Writes refused because the namespace is going away; upstream drops the
/// key rather than retrying.
pub(super) fn is_namespace_terminating(e: &kube::Error) -> bool {
    api_status(e)
        .and_then(|s| s.details.as_ref())
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
}

/// The error text Go's client would print (the Status message for API
/// errors).
fn error_text(e: &kube::Error) -> String {
    match api_status(e) {
        Some(s) if !s.message.is_empty() => s.message.clone(),
        _ => e.to_string(),
    }
}

/// Replaces the set of the same name in `sets`, or adds it.
fn remember(sets: &mut Vec<ReplicaSet>, rs: &ReplicaSet) {
    match sets
        .iter_mut()
        .find(|s| s.metadata.name == rs.metadata.name)
    {
        Some(slot) => *slot = rs.clone(),
        None => sets.push(rs.clone()),
    }
}

fn controller_ref(d: &Deployment) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: d.name_any(),
        uid: d.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

impl Syncer {
    fn deployment_api(&self, ns: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), ns)
    }

    pub(super) fn replica_set_api(&self, ns: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), ns)
    }

    pub(super) async fn normal(&self, d: &Deployment, reason: &str, action: &str, note: String) {
        self.recorder
            .normal(&d.object_ref(&()), reason, action, note)
            .await;
    }

    pub(super) async fn warning(&self, d: &Deployment, reason: &str, action: &str, note: String) {
        self.recorder
            .warning(&d.object_ref(&()), reason, action, note)
            .await;
    }

    /// Writes the Deployment's status (and annotations, which the status
    /// subresource also takes), keeping the new resourceVersion.
    pub(super) async fn write_status(&self, d: &mut Deployment) -> Result<(), kube::Error> {
        let written = self
            .deployment_api(&namespace(d))
            .replace_status(&d.name_any(), &PostParams::default(), d)
            .await?;
        d.metadata.resource_version = written.metadata.resource_version;
        Ok(())
    }

    /// Writes the Deployment itself, keeping the new resourceVersion.
    pub(super) async fn write(&self, d: &mut Deployment) -> Result<(), kube::Error> {
        let written = self
            .deployment_api(&namespace(d))
            .replace(&d.name_any(), &PostParams::default(), d)
            .await?;
        d.metadata.resource_version = written.metadata.resource_version;
        Ok(())
    }

    /// Reconciles the Deployment named by `key` (upstream's syncDeployment).
    pub async fn sync_deployment(&self, key: &ObjectKey) -> Result<Requeue> {
        let Some(cached) = self.deployments.get(key) else {
            tracing::debug!(deployment = %key, "deployment has been deleted");
            return Ok(None);
        };
        let mut d = Deployment::clone(&cached);
        match self.sync(&mut d).await {
            Err(error)
                if error.chain().any(|e| {
                    e.downcast_ref::<kube::Error>()
                        .is_some_and(is_namespace_terminating)
                }) =>
            {
                tracing::debug!(deployment = %key, "namespace terminating; not retrying");
                Ok(None)
            }
            other => other,
        }
    }

    async fn sync(&self, d: &mut Deployment) -> Result<Requeue> {
        if selector_is_empty(&d.spec.selector) {
            self.warning(
                d,
                SELECTING_ALL,
                "Sync",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            )
            .await;
            let status = d.status.get_or_insert_default();
            if status.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
                status.observed_generation = d.metadata.generation;
                if let Err(error) = self.write_status(d).await {
                    tracing::warn!(deployment = %d.name_any(), %error, "could not record the observed generation");
                }
            }
            return Ok(None);
        }
        if let Some(problem) = selector_error(&d.spec.selector) {
            bail!(
                "deployment {}/{} has invalid label selector: {problem}",
                namespace(d),
                d.name_any()
            );
        }
        let mut sets = self.claim_replica_sets(d).await?;
        if d.metadata.deletion_timestamp.is_some() {
            self.sync_status_only(d, &mut sets).await?;
            return Ok(None);
        }
        self.check_paused_conditions(d).await?;
        if is_paused(d) {
            self.scale_and_sync(d, &mut sets).await?;
            return Ok(None);
        }
        if rollback_to(d).is_some() {
            self.rollback(d, &mut sets).await?;
            return Ok(None);
        }
        if self.is_scaling_event(d, &mut sets).await? {
            self.scale_and_sync(d, &mut sets).await?;
            return Ok(None);
        }
        match strategy_type(d) {
            Some(RECREATE) => self.rollout_recreate(d, &mut sets).await,
            Some(ROLLING_UPDATE) => self.rollout_rolling(d, &mut sets).await,
            other => bail!(
                "unexpected deployment strategy type: {}",
                other.unwrap_or_default()
            ),
        }
    }

    /// The Deployment's ReplicaSets after adopting matching orphans and
    /// releasing sets it no longer selects (`getReplicaSetsForDeployment`).
    async fn claim_replica_sets(&self, d: &Deployment) -> Result<Vec<ReplicaSet>> {
        let ns = namespace(d);
        let mut claimed = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        let mut can_adopt: Option<Result<(), String>> = None;
        // Only its own sets and orphans can be claimed (others' are ignored):
        // read them from the controller index, not the whole namespace.
        let uid = d.metadata.uid.as_deref().unwrap_or_default();
        for rs in self.sets.claimable_by(&ns, uid) {
            match claim(d, &rs) {
                Claim::Keep => claimed.push(ReplicaSet::clone(&rs)),
                Claim::Ignore => {}
                Claim::Release => {
                    if let Err(e) = self.release(d, &rs).await {
                        errors.push(e.to_string());
                    }
                }
                Claim::Adopt => {
                    // Once per sync, and only when there is an orphan: make
                    // sure the Deployment is not being deleted after all.
                    if can_adopt.is_none() {
                        can_adopt = Some(self.can_adopt(d).await);
                    }
                    if let Some(Err(why)) = &can_adopt {
                        errors.push(format!(
                            "can't adopt ReplicaSet {ns}/{} ({}): {why}",
                            rs.name_any(),
                            rs.metadata.uid.as_deref().unwrap_or_default()
                        ));
                        continue;
                    }
                    match self.adopt(d, &rs).await {
                        Ok(Some(adopted)) => claimed.push(adopted),
                        Ok(None) => {}
                        Err(e) => errors.push(e.to_string()),
                    }
                }
            }
        }
        if !errors.is_empty() {
            bail!("{}", errors.join("; "));
        }
        Ok(claimed)
    }

    async fn can_adopt(&self, d: &Deployment) -> Result<(), String> {
        let fresh = self
            .deployment_api(&namespace(d))
            .get(&d.name_any())
            .await
            .map_err(|e| format!("can't recheck DeletionTimestamp: {e}"))?;
        if fresh.metadata.uid != d.metadata.uid {
            return Err(format!(
                "can't recheck DeletionTimestamp: original Deployment {}/{} is gone: got uid {}, wanted {}",
                namespace(d),
                d.name_any(),
                fresh.metadata.uid.unwrap_or_default(),
                d.metadata.uid.as_deref().unwrap_or_default()
            ));
        }
        if let Some(at) = fresh.metadata.deletion_timestamp {
            return Err(format!(
                "{}/{} has just been deleted at {}",
                namespace(d),
                d.name_any(),
                at.0
            ));
        }
        Ok(())
    }

    /// Takes control of an orphan; None when it is gone.
    async fn adopt(
        &self,
        d: &Deployment,
        rs: &ReplicaSet,
    ) -> Result<Option<ReplicaSet>, kube::Error> {
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let patch = Patch::Strategic(adopt_patch(d, &uid));
        match self
            .replica_set_api(&namespace(d))
            .patch(&rs.name_any(), &PatchParams::default(), &patch)
            .await
        {
            Ok(adopted) => Ok(Some(adopted)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lets go of a set; a set that is gone, or no longer ours (the patch
    /// is then invalid), needs nothing more.
    async fn release(&self, d: &Deployment, rs: &ReplicaSet) -> Result<(), kube::Error> {
        tracing::info!(deployment = %d.name_any(), replicaset = %rs.name_any(), "releasing replica set");
        let patch = Patch::Strategic(release_patch(
            d.metadata.uid.as_deref().unwrap_or_default(),
            rs.metadata.uid.as_deref().unwrap_or_default(),
        ));
        match self
            .replica_set_api(&namespace(d))
            .patch(&rs.name_any(), &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) || is_invalid(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Records pausing or resuming in the Progressing condition.
    async fn check_paused_conditions(&self, d: &mut Deployment) -> Result<()> {
        if let Some(c) = paused_condition(d, Timestamp::now()) {
            cond::set(d.status.get_or_insert_default(), c);
            self.write_status(d).await?;
        }
        Ok(())
    }

    /// Whether the Deployment's replicas changed since its active sets were
    /// last sized (their desired-replicas annotation).
    async fn is_scaling_event(
        &self,
        d: &mut Deployment,
        sets: &mut Vec<ReplicaSet>,
    ) -> Result<bool> {
        let (new, old) = self.get_all_sets(d, sets, false).await?;
        let replicas = desired(d);
        Ok(all_sets(&old, new.as_ref())
            .into_iter()
            .filter(|rs| is_active(rs))
            .any(|rs| annotations::desired_replicas(rs).is_some_and(|v| v != replicas)))
    }

    /// The new and old sets, the new one's revision brought up to date and
    /// created when asked to (`getAllReplicaSetsAndSyncRevision`). `sets`
    /// follows any set written.
    pub(super) async fn get_all_sets(
        &self,
        d: &mut Deployment,
        sets: &mut Vec<ReplicaSet>,
        create: bool,
    ) -> Result<Sets> {
        let (existing, old) = split_new_and_old(d, sets);
        let new = self
            .get_new_replica_set(d, sets, existing, &old, create)
            .await?;
        Ok((new, old))
    }

    /// Brings an existing new set's annotations up to date, or creates it
    /// (`getNewReplicaSet`).
    async fn get_new_replica_set(
        &self,
        d: &mut Deployment,
        sets: &mut Vec<ReplicaSet>,
        existing: Option<ReplicaSet>,
        old: &[ReplicaSet],
        create: bool,
    ) -> Result<Option<ReplicaSet>> {
        let new_revision = max_revision(old) + 1;
        let ns = namespace(d);
        if let Some(mut rs) = existing {
            let annotations_changed = set_new_replica_set_annotations(
                d,
                &mut rs,
                new_revision,
                true,
                MAX_REVISION_HISTORY_CHARS,
            );
            let min_ready_changed =
                rs.spec.min_ready_seconds.unwrap_or(0) != d.spec.min_ready_seconds.unwrap_or(0);
            if annotations_changed || min_ready_changed {
                rs.spec.min_ready_seconds = d.spec.min_ready_seconds;
                let updated = self
                    .replica_set_api(&ns)
                    .replace(&rs.name_any(), &PostParams::default(), &rs)
                    .await?;
                remember(sets, &updated);
                // The Deployment's revision follows on the next sync.
                return Ok(Some(updated));
            }
            let revision = rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                .cloned()
                .unwrap_or_default();
            let mut needs_update = set_deployment_revision(d, &revision);
            // A Deployment that never had a Progressing condition starts
            // counting progress from when its new set was first seen.
            if has_progress_deadline(d) && cond::get(d.status.as_ref(), PROGRESSING).is_none() {
                let c = cond::new_condition(
                    PROGRESSING,
                    TRUE,
                    cond::FOUND_NEW_RS,
                    format!("Found new replica set \"{}\"", rs.name_any()),
                    Timestamp::now(),
                );
                cond::set(d.status.get_or_insert_default(), c);
                needs_update = true;
            }
            if needs_update {
                self.write_status(d).await?;
            }
            return Ok(Some(rs));
        }
        if !create {
            return Ok(None);
        }

        let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = pod_template_hash(&d.spec.template, collision_count);
        let mut template = d.spec.template.clone();
        let labels = labels_with_hash(
            template.metadata.as_ref().and_then(|m| m.labels.as_ref()),
            &hash,
        );
        template.metadata.get_or_insert_default().labels = Some(labels.clone());
        let name = replica_set_name(&d.name_any(), &hash);
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                owner_references: Some(vec![controller_ref(d)]),
                labels: Some(labels),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: d.spec.min_ready_seconds,
                selector: selector_with_hash(&d.spec.selector, &hash),
                template: Some(template),
            },
            status: None,
        };
        let all: Vec<&ReplicaSet> = old.iter().chain([&rs]).collect();
        let count = new_rs_new_replicas(d, &all, &rs).map_err(|e| anyhow!(e))?;
        rs.spec.replicas = Some(count);
        set_new_replica_set_annotations(
            d,
            &mut rs,
            new_revision,
            false,
            MAX_REVISION_HISTORY_CHARS,
        );

        let (created, already_existed) = match self
            .replica_set_api(&ns)
            .create(&PostParams::default(), &rs)
            .await
        {
            Ok(created) => (created, false),
            // Probably our own set, created by a sync whose cache lagged.
            Err(e) if is_already_exists(&e) => {
                let Some(found) = self.sets.get(&ObjectKey::new(ns.clone(), name.clone())) else {
                    bail!("replica set {ns}/{name} exists but is not in the cache yet");
                };
                let ours = controller_of(found.metadata.owner_references.as_ref())
                    .is_some_and(|r| Some(r.uid.as_str()) == d.metadata.uid.as_deref());
                let template = found.spec.template.clone().unwrap_or_default();
                if ours && equal_ignore_hash(&d.spec.template, &template) {
                    (ReplicaSet::clone(&found), true)
                } else {
                    // A hash collision: another template got this name. A
                    // new collisionCount gives a new name on the next sync.
                    let status = d.status.get_or_insert_default();
                    let before = status.collision_count.unwrap_or(0);
                    status.collision_count = Some(before.wrapping_add(1));
                    if self.write_status(d).await.is_ok() {
                        tracing::info!(
                            deployment = %d.name_any(),
                            old_collision_count = before,
                            new_collision_count = before.wrapping_add(1),
                            "found a hash collision for deployment - bumping collisionCount to resolve it"
                        );
                    }
                    return Err(e.into());
                }
            }
            Err(e) if is_namespace_terminating(&e) => return Err(e.into()),
            Err(e) => {
                let msg = format!(
                    "Failed to create new replica set \"{name}\": {}",
                    error_text(&e)
                );
                if has_progress_deadline(d) {
                    let c = cond::new_condition(
                        PROGRESSING,
                        cond::FALSE,
                        cond::FAILED_RS_CREATE,
                        msg.clone(),
                        Timestamp::now(),
                    );
                    cond::set(d.status.get_or_insert_default(), c);
                    // The create error is the one to report.
                    let _ = self.write_status(d).await;
                }
                self.warning(d, cond::FAILED_RS_CREATE, "Create", msg).await;
                return Err(e.into());
            }
        };
        if !already_existed && count > 0 {
            self.normal(
                d,
                SCALING_REPLICA_SET,
                "Scale",
                format!(
                    "Scaled up replica set {} from 0 to {count}",
                    created.name_any()
                ),
            )
            .await;
        }
        remember(sets, &created);
        let mut needs_update = set_deployment_revision(d, &new_revision.to_string());
        if !already_existed && has_progress_deadline(d) {
            let c = cond::new_condition(
                PROGRESSING,
                TRUE,
                cond::NEW_REPLICA_SET,
                format!("Created new replica set \"{}\"", created.name_any()),
                Timestamp::now(),
            );
            cond::set(d.status.get_or_insert_default(), c);
            needs_update = true;
        }
        if needs_update {
            self.write_status(d).await?;
        }
        Ok(Some(created))
    }

    /// Resizes a set, refreshing its desired/max replicas annotations; with
    /// `force`, refreshes stale annotations even at the same size. Returns
    /// whether the size changed, and the set as written.
    pub(super) async fn scale_replica_set(
        &self,
        rs: &ReplicaSet,
        to: i32,
        d: &Deployment,
        force: bool,
    ) -> Result<(bool, ReplicaSet)> {
        let from = spec_replicas(rs);
        if !force && from == to {
            return Ok((false, rs.clone()));
        }
        let replicas = desired(d);
        let max = replicas.saturating_add(max_surge(d));
        let resize = from != to;
        if !resize && !annotations::replicas_annotations_need_update(rs, replicas, max) {
            return Ok((false, rs.clone()));
        }
        let mut copy = rs.clone();
        copy.spec.replicas = Some(to);
        annotations::set_replicas_annotations(&mut copy, replicas, max);
        let updated = self
            .replica_set_api(&rs.namespace().unwrap_or_default())
            .replace(&rs.name_any(), &PostParams::default(), &copy)
            .await?;
        if resize {
            let direction = if from < to { "up" } else { "down" };
            self.normal(
                d,
                SCALING_REPLICA_SET,
                "Scale",
                format!(
                    "Scaled {direction} replica set {} from {from} to {to}",
                    updated.name_any()
                ),
            )
            .await;
        }
        Ok((resize, updated))
    }

    /// Scales on a replicas change or while paused (upstream's `sync`).
    async fn scale_and_sync(&self, d: &mut Deployment, sets: &mut Vec<ReplicaSet>) -> Result<()> {
        let (new, old) = self.get_all_sets(d, sets, false).await?;
        for step in plan_scale(d, new.as_ref(), &old) {
            self.scale_replica_set(step.rs, step.to, d, step.force)
                .await?;
        }
        if is_paused(d) && rollback_to(d).is_none() {
            self.cleanup_deployment(&old, d).await?;
        }
        let all = all_sets(&old, new.as_ref());
        self.sync_deployment_status(&all, new.as_ref(), d).await
    }

    async fn sync_status_only(&self, d: &mut Deployment, sets: &mut Vec<ReplicaSet>) -> Result<()> {
        let (new, old) = self.get_all_sets(d, sets, false).await?;
        let all = all_sets(&old, new.as_ref());
        self.sync_deployment_status(&all, new.as_ref(), d).await
    }

    /// Deletes old sets beyond revisionHistoryLimit.
    pub(super) async fn cleanup_deployment(
        &self,
        old: &[ReplicaSet],
        d: &Deployment,
    ) -> Result<()> {
        for rs in replica_sets_to_delete(d, old) {
            tracing::debug!(deployment = %d.name_any(), replicaset = %rs.name_any(), "cleaning up old replica set");
            match self
                .replica_set_api(&namespace(d))
                .delete(&rs.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                // Stop at the first failure rather than press on against
                // an apiserver that may be struggling.
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Writes the computed status if it changed (`syncDeploymentStatus`).
    async fn sync_deployment_status(
        &self,
        all: &[&ReplicaSet],
        new: Option<&ReplicaSet>,
        d: &mut Deployment,
    ) -> Result<()> {
        let status = calculate_status(all, new, d, Timestamp::now());
        if same_status(d, &status) {
            return Ok(());
        }
        d.status = Some(status);
        self.write_status(d).await?;
        Ok(())
    }

    /// Writes the rollout status if it changed; otherwise says when to look
    /// again for the progress deadline (`syncRolloutStatus`).
    pub(super) async fn sync_rollout_status(
        &self,
        all: &[&ReplicaSet],
        new: Option<&ReplicaSet>,
        d: &mut Deployment,
    ) -> Result<Requeue> {
        let now = Timestamp::now();
        let status = rollout_status(all, new, d, now);
        if same_status(d, &status) {
            return Ok(requeue_after(d, &status, now));
        }
        d.status = Some(status);
        self.write_status(d).await?;
        Ok(None)
    }
}
