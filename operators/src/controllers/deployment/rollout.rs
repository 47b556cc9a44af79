//! The rollout strategies and the annotation rollback, as upstream's
//! rolling.go, recreate.go and rollback.go: the I/O around the decisions of
//! rolling.rs, recreate.rs and rollback.rs.

use anyhow::{Result, anyhow, bail};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet};
use kube::ResourceExt;

use super::recreate::old_pods_running;
use super::rollback::{self, Rollback, clear_rollback_to};
use super::rolling::{max_scaled_down, new_replica_set_target, old_scale_down, unhealthy_cleanup};
use super::sets::{all_sets, by_creation, desired, is_active, spec_replicas, sum_spec};
use super::status::deployment_complete;
use super::sync::{Syncer, namespace};
use crate::worker::Requeue;

fn complete_now(d: &Deployment) -> bool {
    deployment_complete(d, d.status.as_ref().unwrap_or(&DeploymentStatus::default()))
}

impl Syncer {
    /// One step of a rolling update: grow the new set if the surge allows,
    /// else shrink old sets if availability allows, else tidy up.
    pub(super) async fn rollout_rolling(
        &self,
        d: &mut Deployment,
        sets: &mut Vec<ReplicaSet>,
    ) -> Result<Requeue> {
        let (new, old) = self.get_all_sets(d, sets, true).await?;
        let Some(new) = new else {
            bail!(
                "no new replica set for deployment {}/{}",
                namespace(d),
                d.name_any()
            );
        };
        let all = all_sets(&old, Some(&new));

        if let Some(target) = new_replica_set_target(d, &all, &new).map_err(|e| anyhow!(e))? {
            let (scaled, _) = self.scale_replica_set(&new, target, d, false).await?;
            if scaled {
                return self.sync_rollout_status(&all, Some(&new), d).await;
            }
        }

        let active_old: Vec<ReplicaSet> = old.iter().filter(|rs| is_active(rs)).cloned().collect();
        if self
            .reconcile_old_replica_sets(&all, active_old, &new, d)
            .await
        {
            return self.sync_rollout_status(&all, Some(&new), d).await;
        }

        if complete_now(d) {
            self.cleanup_deployment(&old, d).await?;
        }
        self.sync_rollout_status(&all, Some(&new), d).await
    }

    /// Shrinks old sets: unavailable replicas first, then as far as
    /// availability allows. Whether anything shrank; a failed write ends the
    /// step quietly, as upstream (the status sync that follows, and the
    /// events of the write, bring the Deployment back).
    async fn reconcile_old_replica_sets(
        &self,
        all: &[&ReplicaSet],
        mut old: Vec<ReplicaSet>,
        new: &ReplicaSet,
        d: &Deployment,
    ) -> bool {
        if sum_spec(&old) == 0 {
            return false;
        }
        let budget = max_scaled_down(d, all, new);
        if budget <= 0 {
            return false;
        }
        old.sort_by(by_creation);
        let mut total = 0;

        let cleanup = unhealthy_cleanup(&old, budget);
        for (i, to) in cleanup.steps {
            let from = spec_replicas(&old[i]);
            match self.scale_replica_set(&old[i], to, d, false).await {
                Ok((_, updated)) => {
                    old[i] = updated;
                    total += from - to;
                }
                Err(error) => {
                    tracing::warn!(deployment = %d.name_any(), error = format!("{error:#}"), "could not clean up unhealthy replicas");
                    return false;
                }
            }
        }
        if cleanup.abort {
            tracing::warn!(deployment = %d.name_any(), "an old replica set reports more available than desired replicas; waiting for its status");
            return false;
        }

        let steps = {
            let all = all_sets(&old, Some(new));
            old_scale_down(d, &all, &old)
        };
        for (i, to) in steps {
            let from = spec_replicas(&old[i]);
            if let Err(error) = self.scale_replica_set(&old[i], to, d, false).await {
                tracing::warn!(deployment = %d.name_any(), error = format!("{error:#}"), "could not scale down old replica set");
                return false;
            }
            total += from - to;
        }
        total > 0
    }

    /// One step of a Recreate rollout: empty the old sets, wait for their
    /// pods to be gone, then create and fill the new set.
    pub(super) async fn rollout_recreate(
        &self,
        d: &mut Deployment,
        sets: &mut Vec<ReplicaSet>,
    ) -> Result<Requeue> {
        // Not created yet: nothing new may run before the old pods are gone.
        let (mut new, mut old) = self.get_all_sets(d, sets, false).await?;

        let mut scaled_down = false;
        for rs in old.iter().filter(|rs| is_active(rs)) {
            let (scaled, _) = self.scale_replica_set(rs, 0, d, false).await?;
            scaled_down |= scaled;
        }
        if scaled_down {
            let all = all_sets(&old, new.as_ref());
            return self.sync_rollout_status(&all, new.as_ref(), d).await;
        }

        let pods = self.pods.list_namespace(&namespace(d));
        if old_pods_running(new.as_ref(), &old, sets, &pods) {
            let all = all_sets(&old, new.as_ref());
            return self.sync_rollout_status(&all, new.as_ref(), d).await;
        }

        if new.is_none() {
            (new, old) = self.get_all_sets(d, sets, true).await?;
        }
        let Some(new_rs) = new.as_ref() else {
            bail!(
                "no new replica set for deployment {}/{}",
                namespace(d),
                d.name_any()
            );
        };
        self.scale_replica_set(new_rs, desired(d), d, false).await?;

        if complete_now(d) {
            self.cleanup_deployment(&old, d).await?;
        }
        let all = all_sets(&old, new.as_ref());
        self.sync_rollout_status(&all, new.as_ref(), d).await
    }

    /// Rolls back to the revision the rollback annotation names, then
    /// clears it (upstream's `rollback`).
    pub(super) async fn rollback(
        &self,
        d: &mut Deployment,
        sets: &mut Vec<ReplicaSet>,
    ) -> Result<()> {
        let (new, old) = self.get_all_sets(d, sets, true).await?;
        let all = all_sets(&old, new.as_ref());
        let (target, revision) = match rollback::decide(d, &all) {
            Rollback::NotFound(message) => {
                self.warning(d, rollback::REVISION_NOT_FOUND, "Rollback", message.into())
                    .await;
                return self.clear_rollback(d).await;
            }
            Rollback::To(rs, revision) => (rs.clone(), revision),
        };
        let performed = rollback::apply(d, &target);
        if !performed {
            let note = format!(
                "The rollback revision contains the same template as current deployment \"{}\"",
                d.name_any()
            );
            self.warning(d, rollback::TEMPLATE_UNCHANGED, "Rollback", note)
                .await;
        }
        self.clear_rollback(d).await?;
        if performed {
            let note = format!(
                "Rolled back deployment \"{}\" to revision {revision}",
                d.name_any()
            );
            self.normal(d, rollback::DONE, "Rollback", note).await;
        }
        Ok(())
    }

    async fn clear_rollback(&self, d: &mut Deployment) -> Result<()> {
        clear_rollback_to(d);
        self.write(d).await?;
        Ok(())
    }
}
