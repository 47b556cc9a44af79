//! Upstream's syncClaim, syncUnboundClaim and syncBoundClaim as a pure
//! decision: a claim and the controller's view in, a [`Plan`] out.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Resource;
use understudy_component_base::events::EventType;

use super::helpers::{
    ANN_BETA_STORAGE_PROVISIONER, ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER,
    ANN_STORAGE_PROVISIONER, attributes_class_mismatch, claim_class, claim_has_class, claim_key,
    claim_uid, claim_volume_name, default_class, has_annotation, is_delay_binding_mode,
    is_delay_binding_provisioning, is_pod_terminated, is_volume_bound_to_claim, requested_storage,
    set_annotation, volume_capacity, volume_class, volume_mode_mismatch,
};
use super::index::find_best_match_for_claim;
use super::plan::{Plan, Stop};

/// What a claim sync reads besides the claim.
pub struct ClaimView<'a> {
    /// The controller's volumes by name (informer + own writes, newest).
    pub volumes: &'a BTreeMap<Arc<str>, Arc<PersistentVolume>>,
    pub classes: &'a BTreeMap<String, StorageClass>,
    /// The pods that use the claim.
    pub pods: &'a [Arc<Pod>],
    /// kube-controller-manager's --enable-dynamic-provisioning.
    pub dynamic_provisioning: bool,
}

pub fn sync_claim(claim: &PersistentVolumeClaim, view: &ClaimView<'_>) -> Plan {
    let mut plan = Plan::default();
    let mut claim = claim.clone();
    let _ = if has_annotation(&claim.metadata, ANN_BIND_COMPLETED) {
        sync_bound_claim(&mut plan, &mut claim, view)
    } else {
        sync_unbound_claim(&mut plan, &mut claim, view)
    };
    plan
}

/// Upstream's checkVolumeSatisfyClaim, for a volume the claim names.
pub fn check_volume_satisfies_claim(
    volume: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> Result<(), String> {
    if volume.metadata.deletion_timestamp.is_some() {
        return Err(format!(
            "the volume is marked for deletion {:?}",
            volume.metadata.name.as_deref().unwrap_or_default()
        ));
    }
    let fits = match (volume_capacity(volume), requested_storage(claim)) {
        (Some(have), Some(want)) => have >= want,
        _ => false,
    };
    if !fits {
        return Err("requested PV is too small".into());
    }
    if volume_class(volume) != claim_class(claim) {
        return Err("storageClassName does not match".into());
    }
    if attributes_class_mismatch(claim, volume) {
        return Err("volumeAttributesClassName does not match".into());
    }
    if volume_mode_mismatch(claim, volume) {
        return Err("incompatible volumeMode".into());
    }
    if !super::helpers::access_modes_fit(claim, volume) {
        return Err("incompatible accessMode".into());
    }
    Ok(())
}

fn sync_unbound_claim(
    plan: &mut Plan,
    claim: &mut PersistentVolumeClaim,
    view: &ClaimView<'_>,
) -> Result<(), Stop> {
    let requested = claim_volume_name(claim).to_string();
    if requested.is_empty() {
        return find_and_bind(plan, claim, view);
    }
    // The user asked for a specific volume.
    let Some(volume) = view.volumes.get(requested.as_str()) else {
        // Not there (yet): stay Pending and look again later.
        return plan.update_claim_status(claim, "Pending", None);
    };
    let mut volume = PersistentVolume::clone(volume);
    let claim_ref = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    if claim_ref.is_none() {
        if let Err(problem) = check_volume_satisfies_claim(&volume, claim) {
            plan.event(
                claim.object_ref(&()),
                EventType::Warning,
                "VolumeMismatch",
                format!("Cannot bind to requested volume {requested:?}: {problem}"),
            );
            return plan.update_claim_status(claim, "Pending", None);
        }
        return plan.bind(&mut volume, claim);
    }
    if is_volume_bound_to_claim(&volume, claim) {
        // Pre-bound both ways, or our own half-done binding: finish it.
        return plan.bind(&mut volume, claim);
    }
    let message = format!("volume {requested:?} already bound to a different claim.");
    plan.event(
        claim.object_ref(&()),
        EventType::Warning,
        "FailedBinding",
        message,
    );
    if !has_annotation(&claim.metadata, ANN_BOUND_BY_CONTROLLER) {
        // The user's choice: wait until the volume is free.
        return plan.update_claim_status(claim, "Pending", None);
    }
    // Only possible if someone removed bind-completed from the claim.
    let owner = claim_ref
        .map(|r| {
            format!(
                "{}/{}",
                r.namespace.as_deref().unwrap_or_default(),
                r.name.as_deref().unwrap_or_default()
            )
        })
        .unwrap_or_default();
    Err(plan.fail(format!(
        "invalid binding of claim {:?} to volume {requested:?}: volume already claimed by {owner:?}",
        claim_key(claim)
    )))
}

/// The claim does not care which volume it gets.
fn find_and_bind(
    plan: &mut Plan,
    claim: &mut PersistentVolumeClaim,
    view: &ClaimView<'_>,
) -> Result<(), Stop> {
    let delay_binding = match is_delay_binding_mode(claim, view.classes) {
        Ok(delay) => delay,
        Err(error) => return Err(plan.fail(error)),
    };
    let found = match find_best_match_for_claim(claim, view.volumes.values(), delay_binding, None) {
        Ok(found) => found,
        Err(error) => {
            return Err(plan.fail(format!(
                "error finding PV for claim {:?}: {error}",
                claim_key(claim)
            )));
        }
    };
    if let Some(volume) = found {
        let mut volume = PersistentVolume::clone(&volume);
        return plan.bind(&mut volume, claim);
    }
    // Nothing fits. A claim without any class gets the default one, and is
    // matched again on the next sync (triggered by this very write).
    if !claim_has_class(claim)
        && let Some(class) = default_class(view.classes.values())
    {
        claim
            .spec
            .get_or_insert_with(Default::default)
            .storage_class_name = class.metadata.name.clone();
        plan.steps
            .push(super::plan::Step::AssignDefaultClass(claim.clone()));
        return Ok(());
    }
    let class = claim_class(claim).to_string();
    if delay_binding && !is_delay_binding_provisioning(claim) {
        wait_for_consumer(plan, claim, view.pods);
    } else if !class.is_empty() {
        // Provisioning is someone else's job; upstream returns without
        // touching the claim's status here.
        if view.dynamic_provisioning {
            provision(plan, claim, &class, view);
        }
        return Ok(());
    } else {
        plan.event(
            claim.object_ref(&()),
            EventType::Normal,
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set",
        );
    }
    plan.update_claim_status(claim, "Pending", None)
}

/// Upstream's emitEventForUnboundDelayBindingClaim: which pods the claim
/// waits for, if any is known.
fn wait_for_consumer(plan: &mut Plan, claim: &PersistentVolumeClaim, pods: &[Arc<Pod>]) {
    let mut waiting: Vec<&str> = pods
        .iter()
        .filter(|p| !is_pod_terminated(p))
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_none_or(str::is_empty)
        })
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    waiting.sort_unstable();
    let (reason, message) = match waiting.as_slice() {
        [] => (
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding".to_string(),
        ),
        [one] => (
            "WaitForPodScheduled",
            format!("waiting for pod {one} to be scheduled"),
        ),
        many => (
            "WaitForPodScheduled",
            format!("waiting for pods {} to be scheduled", many.join(",")),
        ),
    };
    plan.event(claim.object_ref(&()), EventType::Normal, reason, message);
}

/// What upstream's provisionClaim does when it has no in-tree plugin: an
/// external provisioner is asked through the claim's annotations; an
/// unknown class or an in-tree (`kubernetes.io/…`) provisioner is reported.
fn provision(
    plan: &mut Plan,
    claim: &mut PersistentVolumeClaim,
    class: &str,
    view: &ClaimView<'_>,
) {
    let Some(storage_class) = view.classes.get(class) else {
        plan.event(
            claim.object_ref(&()),
            EventType::Warning,
            "ProvisioningFailed",
            format!("storageclass.storage.k8s.io {class:?} not found"),
        );
        return;
    };
    let provisioner = storage_class.provisioner.as_str();
    if provisioner.starts_with("kubernetes.io/") {
        plan.event(
            claim.object_ref(&()),
            EventType::Warning,
            "ProvisioningFailed",
            format!("no volume plugin matched name: {provisioner}"),
        );
        return;
    }
    let current = claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_STORAGE_PROVISIONER));
    if current.map(String::as_str) != Some(provisioner) {
        set_annotation(
            &mut claim.metadata,
            ANN_BETA_STORAGE_PROVISIONER,
            provisioner,
        );
        set_annotation(&mut claim.metadata, ANN_STORAGE_PROVISIONER, provisioner);
        plan.steps
            .push(super::plan::Step::UpdateClaim(claim.clone()));
    }
    plan.event(
        claim.object_ref(&()),
        EventType::Normal,
        "ExternalProvisioning",
        format!(
            "Waiting for a volume to be created either by the external provisioner '{provisioner}' \
             or manually by the system administrator. If volume creation is delayed, please verify \
             that the provisioner is running and correctly registered."
        ),
    );
}

fn sync_bound_claim(
    plan: &mut Plan,
    claim: &mut PersistentVolumeClaim,
    view: &ClaimView<'_>,
) -> Result<(), Stop> {
    let name = claim_volume_name(claim).to_string();
    if name.is_empty() {
        return plan.update_claim_status_with_event(
            claim,
            "Lost",
            None,
            EventType::Warning,
            "ClaimLost",
            "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
        );
    }
    let Some(volume) = view.volumes.get(name.as_str()) else {
        return plan.update_claim_status_with_event(
            claim,
            "Lost",
            None,
            EventType::Warning,
            "ClaimLost",
            "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
        );
    };
    let mut volume = PersistentVolume::clone(volume);
    let ref_uid = volume
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .map(|r| r.uid.clone().unwrap_or_default());
    match ref_uid {
        // Came unbound, or our view lags behind our own write: bind again.
        None => plan.bind(&mut volume, claim),
        // All is well; bind only fills in what is missing.
        Some(uid) if uid == claim_uid(claim) => plan.bind(&mut volume, claim),
        Some(_) => plan.update_claim_status_with_event(
            claim,
            "Lost",
            None,
            EventType::Warning,
            "ClaimMisbound",
            "Two claims are bound to the same volume, this one is bound incorrectly",
        ),
    }
}
