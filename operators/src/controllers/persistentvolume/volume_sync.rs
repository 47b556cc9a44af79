//! Upstream's syncVolume and reclaimVolume as a pure decision: a volume and
//! the claim its claimRef names (as resolved by the caller) in, a [`Plan`]
//! out. There are no in-tree volume plugins here, so reclaiming behaves as
//! kube-controller-manager does for a volume no plugin of it handles:
//! Recycle and Delete of a statically provisioned volume fail with
//! upstream's Events; externally handled volumes are left to their owner.
//! Like upstream, a volume still used by pods is not recycled.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Resource;
use understudy_component_base::events::EventType;

use super::helpers::{
    ANN_DYNAMICALLY_PROVISIONED, ANN_MIGRATED_TO, claim_key, claim_uid, claim_volume_name,
    has_annotation, name_of_volume, reclaim_policy, volume_mode_mismatch, volume_phase,
};
use super::plan::Plan;

/// The claim named by the volume's claimRef, as the caller found it after
/// upstream's double checks (informer, then apiserver).
pub enum ClaimSeen<'a> {
    Found(&'a PersistentVolumeClaim),
    Missing,
}

/// Whether the volume's claim must be looked up beyond the controller's
/// view before deciding it is gone: upstream re-checks the lister and then
/// the apiserver for volumes not yet Released or Failed (a claim bound by
/// the scheduler may not have reached the informer), and the apiserver when
/// the cached claim's UID differs from the claimRef's.
pub fn needs_live_claim(volume: &PersistentVolume, cached: Option<&PersistentVolumeClaim>) -> bool {
    let ref_uid = volume
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .and_then(|r| r.uid.as_deref())
        .unwrap_or_default();
    match cached {
        None => !matches!(volume_phase(volume), "Released" | "Failed"),
        Some(claim) => claim_uid(claim) != ref_uid,
    }
}

/// `users`: the pods (`namespace/name`) not yet terminated that use the
/// claim the volume's claimRef names.
pub fn sync_volume(volume: &PersistentVolume, claim: ClaimSeen<'_>, users: &[String]) -> Plan {
    let claim_exists = matches!(claim, ClaimSeen::Found(_));
    let mut plan = Plan::default();
    let mut volume = volume.clone();
    let Some(claim_ref) = volume.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
        plan.update_volume_phase(&mut volume, "Available", "");
        return plan;
    };
    let ref_uid = claim_ref.uid.clone().unwrap_or_default();
    if ref_uid.is_empty() {
        // Pre-bound by the user to a claim not bound yet: the claim's sync
        // finishes it.
        plan.update_volume_phase(&mut volume, "Available", "");
        return plan;
    }
    let claim = match claim {
        ClaimSeen::Found(claim) if claim_uid(claim) == ref_uid => Some(claim),
        // A claim of the same name but another UID: ours was deleted.
        _ => None,
    };
    let Some(claim) = claim else {
        // The claim is gone. Keep a Failed phase visible while reclaiming
        // is retried.
        if !matches!(volume_phase(&volume), "Released" | "Failed") {
            plan.update_volume_phase(&mut volume, "Released", "");
        }
        reclaim_volume(&mut plan, &mut volume, None, users, claim_exists);
        return plan;
    };
    let bound_to = claim_volume_name(claim);
    if bound_to.is_empty() {
        if volume_mode_mismatch(claim, &volume) {
            // The claim's sync will never pick this volume; say why on both.
            plan.event(
                volume.object_ref(&()),
                EventType::Warning,
                "VolumeMismatch",
                format!(
                    "Cannot bind PersistentVolume to requested PersistentVolumeClaim {:?} due to incompatible volumeMode.",
                    claim.metadata.name.as_deref().unwrap_or_default()
                ),
            );
            plan.event(
                claim.object_ref(&()),
                EventType::Warning,
                "VolumeMismatch",
                format!(
                    "Cannot bind PersistentVolume {:?} to requested PersistentVolumeClaim due to incompatible volumeMode.",
                    name_of_volume(&volume)
                ),
            );
            return plan;
        }
        // Half bound (by us or by the scheduler) or pre-bound by the user:
        // the claim's sync finishes it, soon.
        plan.steps
            .push(super::plan::Step::EnqueueClaim(claim_key(claim)));
        return plan;
    }
    if bound_to == name_of_volume(&volume) {
        plan.update_volume_phase(&mut volume, "Bound", "");
        return plan;
    }
    // The claim is bound to another volume.
    if has_annotation(&volume.metadata, ANN_DYNAMICALLY_PROVISIONED)
        && reclaim_policy(&volume) == "Delete"
    {
        // Provisioned for this claim but not needed: release and delete.
        if !matches!(volume_phase(&volume), "Released" | "Failed") {
            plan.update_volume_phase(&mut volume, "Released", "");
        }
        reclaim_volume(&mut plan, &mut volume, Some(claim), users, claim_exists);
        return plan;
    }
    // Ours: we lost a race and bound two volumes; give this one back. The
    // user's pre-binding stays, without the UID, until the claim is free.
    plan.unbind_volume(&mut volume);
    plan
}

/// Upstream's isVolumeReleased given the volume's claim as seen: the claim
/// is gone, or it is bound to another volume.
fn is_released(volume: &PersistentVolume, claim: Option<&PersistentVolumeClaim>) -> bool {
    let Some(claim_ref) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    let ref_uid = claim_ref.uid.as_deref().unwrap_or_default();
    if ref_uid.is_empty() {
        return false;
    }
    match claim {
        Some(claim) if claim_uid(claim) == ref_uid => {
            let bound_to = claim_volume_name(claim);
            !bound_to.is_empty() && bound_to != name_of_volume(volume)
        }
        _ => true,
    }
}

/// Upstream's reclaimVolume, with no volume plugins to run.
fn reclaim_volume(
    plan: &mut Plan,
    volume: &mut PersistentVolume,
    claim: Option<&PersistentVolumeClaim>,
    users: &[String],
    claim_exists: bool,
) {
    let migrated = volume
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_MIGRATED_TO))
        .is_some_and(|v| !v.is_empty());
    if migrated {
        // The external provisioner of the CSI driver owns it.
        return;
    }
    match reclaim_policy(volume) {
        "Retain" => {}
        "Recycle" => {
            // A claim of that name still around uses another volume, so its
            // pods do not hold this one (upstream's reasoning).
            if is_released(volume, claim) && !users.is_empty() && !claim_exists {
                plan.event(
                    volume.object_ref(&()),
                    EventType::Normal,
                    "VolumeFailedRecycle",
                    format!("Volume is used by pods: {}", users.join(",")),
                );
            } else if is_released(volume, claim) {
                plan.update_volume_phase_with_event(
                    volume,
                    "Failed",
                    EventType::Warning,
                    "VolumeFailedRecycle",
                    "No recycler plugin found for the volume!",
                );
            }
        }
        "Delete" => {
            if let Err(error) = deleter_of(volume) {
                plan.update_volume_phase_with_event(
                    volume,
                    "Failed",
                    EventType::Warning,
                    "VolumeFailedDelete",
                    &error,
                );
            }
            // Otherwise an external deleter (CSI provisioner) deletes it.
        }
        _ => plan.update_volume_phase_with_event(
            volume,
            "Failed",
            EventType::Warning,
            "VolumeUnknownReclaimPolicy",
            "Volume has unrecognized PersistentVolumeReclaimPolicy",
        ),
    }
}

/// Upstream's findDeletablePlugin with no in-tree plugins: `Ok` when an
/// external deleter is expected, the error upstream reports otherwise.
fn deleter_of(volume: &PersistentVolume) -> Result<(), String> {
    let annotations = volume.metadata.annotations.as_ref();
    if let Some(provisioner) = annotations
        .and_then(|a| a.get(ANN_DYNAMICALLY_PROVISIONED))
        .filter(|p| !p.is_empty())
    {
        if provisioner.starts_with("kubernetes.io/") {
            return Err(format!("no volume plugin matched name: {provisioner}"));
        }
        return Ok(());
    }
    if annotations.is_some_and(|a| a.contains_key(ANN_MIGRATED_TO)) {
        return Ok(());
    }
    if volume.spec.as_ref().is_some_and(|s| s.csi.is_some()) {
        return Ok(());
    }
    Err(format!(
        "error getting deleter volume plugin for volume {:?}: no volume plugin matched",
        name_of_volume(volume)
    ))
}
