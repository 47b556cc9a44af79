//! Applies a [`Plan`] through a [`BinderApi`], in order, stopping at the
//! first failed write (the sync then fails and is retried with backoff,
//! as upstream). Every write is a full update carrying the resourceVersion
//! the planner saw, or the one our previous write of the same object got
//! back, so a write based on a stale view fails with a conflict instead of
//! overwriting someone else's binding.

use std::collections::HashMap;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use super::helpers::claim_key;
use super::plan::{Event, Plan, Step};

/// The four writes the binder makes. Implementations keep the controller's
/// view up to date with what each write returns.
pub trait BinderApi: Send + Sync {
    fn update_volume(
        &self,
        volume: PersistentVolume,
    ) -> BoxFuture<'_, Result<PersistentVolume, String>>;
    fn update_volume_status(
        &self,
        volume: PersistentVolume,
    ) -> BoxFuture<'_, Result<PersistentVolume, String>>;
    fn update_claim(
        &self,
        claim: PersistentVolumeClaim,
    ) -> BoxFuture<'_, Result<PersistentVolumeClaim, String>>;
    fn update_claim_status(
        &self,
        claim: PersistentVolumeClaim,
    ) -> BoxFuture<'_, Result<PersistentVolumeClaim, String>>;
}

/// What applying a plan produced besides the writes.
#[derive(Debug, Default)]
pub struct Applied {
    /// Events to record, in order (only those whose write went through).
    pub events: Vec<Event>,
    pub enqueue_claims: Vec<String>,
    /// Whether a default-class assignment was tried, and how it went.
    pub retroactive_class: Option<bool>,
    /// Why the sync must be retried, if it must.
    pub error: Option<String>,
}

pub async fn apply(plan: Plan, api: &dyn BinderApi) -> Applied {
    let mut applied = Applied::default();
    // resourceVersions our own writes returned, by object.
    let mut versions: HashMap<String, String> = HashMap::new();
    for step in plan.steps {
        let outcome = match step {
            Step::Event(event) => {
                applied.events.push(event);
                Ok(())
            }
            Step::EnqueueClaim(key) => {
                applied.enqueue_claims.push(key);
                Ok(())
            }
            Step::Fail(message) => Err(message),
            Step::UpdateVolume(volume) => write_volume(api, &mut versions, volume, false).await,
            Step::UpdateVolumeStatus(volume) => {
                write_volume(api, &mut versions, volume, true).await
            }
            Step::UpdateClaim(claim) => write_claim(api, &mut versions, claim, false).await,
            Step::UpdateClaimStatus(claim) => write_claim(api, &mut versions, claim, true).await,
            Step::AssignDefaultClass(claim) => {
                let outcome = write_claim(api, &mut versions, claim, false).await;
                applied.retroactive_class = Some(outcome.is_ok());
                outcome
            }
        };
        if let Err(error) = outcome {
            applied.error = Some(error);
            break;
        }
    }
    applied
}

fn carry(versions: &HashMap<String, String>, key: &str, rv: &mut Option<String>) {
    if let Some(ours) = versions.get(key) {
        *rv = Some(ours.clone());
    }
}

async fn write_volume(
    api: &dyn BinderApi,
    versions: &mut HashMap<String, String>,
    mut volume: PersistentVolume,
    status: bool,
) -> Result<(), String> {
    let key = format!("pv/{}", volume.metadata.name.as_deref().unwrap_or_default());
    carry(versions, &key, &mut volume.metadata.resource_version);
    let written = if status {
        api.update_volume_status(volume).await?
    } else {
        api.update_volume(volume).await?
    };
    if let Some(rv) = written.metadata.resource_version {
        versions.insert(key, rv);
    }
    Ok(())
}

async fn write_claim(
    api: &dyn BinderApi,
    versions: &mut HashMap<String, String>,
    mut claim: PersistentVolumeClaim,
    status: bool,
) -> Result<(), String> {
    let key = format!("pvc/{}", claim_key(&claim));
    carry(versions, &key, &mut claim.metadata.resource_version);
    let written = if status {
        api.update_claim_status(claim).await?
    } else {
        api.update_claim(claim).await?
    };
    if let Some(rv) = written.metadata.resource_version {
        versions.insert(key, rv);
    }
    Ok(())
}
