//! What a sync decides: an ordered list of writes and Events, computed from
//! the controller's view without touching the API (the pure core), then
//! applied in order by [`super::apply`] until the first failed write, just
//! as upstream's syncClaim/syncVolume return on their first error.
//!
//! The planner applies every write to its own copy of the object, so later
//! steps see the earlier ones (claimRef before phase, volumeName before
//! claim phase); the applier only carries the resourceVersion each write
//! returns into the next write of the same object.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus,
    PersistentVolumeStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Resource;
use understudy_component_base::events::EventType;

use super::helpers::{
    ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER, claim_phase, claim_uid, claim_volume_name,
    has_annotation, is_volume_bound_to_claim, name_of_volume, set_annotation, volume_phase,
};
use crate::controllers::endpointslice::topology::parse_milli;

/// Upstream's util.AnnPreResizeCapacity: a resized volume's size before the
/// resize, which a newly bound claim reports until its filesystem grows.
const ANN_PRE_RESIZE_CAPACITY: &str = "volume.alpha.kubernetes.io/pre-resize-capacity";

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub regarding: ObjectReference,
    pub type_: EventType,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// PUT of the volume (metadata and spec).
    UpdateVolume(PersistentVolume),
    /// PUT of the volume's status subresource.
    UpdateVolumeStatus(PersistentVolume),
    /// PUT of the claim (metadata and spec).
    UpdateClaim(PersistentVolumeClaim),
    /// PUT of the claim's status subresource.
    UpdateClaimStatus(PersistentVolumeClaim),
    /// PUT of the claim giving it the default class (upstream counts these
    /// in `retroactive_storageclass_total`).
    AssignDefaultClass(PersistentVolumeClaim),
    Event(Event),
    /// Sync this claim (`namespace/name`) soon.
    EnqueueClaim(String),
    /// The sync ends in an error: retried with backoff.
    Fail(String),
}

/// The names of the volumes a plan writes, each once.
pub fn volumes_written(plan: &Plan) -> Vec<String> {
    let mut names: Vec<String> = plan
        .steps
        .iter()
        .filter_map(|step| match step {
            Step::UpdateVolume(v) | Step::UpdateVolumeStatus(v) => {
                Some(name_of_volume(v).to_string())
            }
            _ => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Marks a plan that ended in [`Step::Fail`]; the caller stops planning.
#[derive(Debug)]
pub struct Stop;

#[derive(Debug, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn fail(&mut self, message: impl Into<String>) -> Stop {
        self.steps.push(Step::Fail(message.into()));
        Stop
    }

    pub fn event(
        &mut self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &'static str,
        message: impl Into<String>,
    ) {
        self.steps.push(Step::Event(Event {
            regarding,
            type_,
            reason,
            message: message.into(),
        }));
    }

    /// The Event reasons in order, for tests and logs.
    pub fn reasons(&self) -> Vec<&'static str> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Event(e) => Some(e.reason),
                _ => None,
            })
            .collect()
    }

    /// Upstream's updateClaimStatus: phase, and the bound volume's access
    /// modes and capacity (or none without a volume).
    pub fn update_claim_status(
        &mut self,
        claim: &mut PersistentVolumeClaim,
        phase: &str,
        volume: Option<&PersistentVolume>,
    ) -> Result<(), Stop> {
        let old_phase = claim_phase(claim).to_string();
        let mut next = claim.clone();
        let status = next
            .status
            .get_or_insert_with(PersistentVolumeClaimStatus::default);
        let mut dirty = false;
        if old_phase != phase {
            status.phase = Some(phase.into());
            dirty = true;
        }
        match volume {
            None => {
                if status.access_modes.is_some() {
                    status.access_modes = None;
                    dirty = true;
                }
                if status.capacity.is_some() {
                    status.capacity = None;
                    dirty = true;
                }
                if status.current_volume_attributes_class_name.is_some() {
                    status.current_volume_attributes_class_name = None;
                    dirty = true;
                }
            }
            Some(volume) => {
                let spec = volume.spec.clone().unwrap_or_default();
                if status.access_modes != spec.access_modes {
                    status.access_modes = spec.access_modes.clone();
                    dirty = true;
                }
                // Only when becoming Bound: a later difference can be on
                // purpose (filesystem smaller than the grown device).
                if old_phase != phase {
                    let Some(volume_cap) = spec.capacity.as_ref().and_then(|c| c.get("storage"))
                    else {
                        return Err(self.fail(format!(
                            "PersistentVolume {:?} is without a storage capacity",
                            name_of_volume(volume)
                        )));
                    };
                    let claim_cap = status.capacity.as_ref().and_then(|c| c.get("storage"));
                    let pre_resize = volume
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(ANN_PRE_RESIZE_CAPACITY));
                    if let Some(pre_resize) = pre_resize {
                        let size = if parse_milli(pre_resize).is_some() {
                            Quantity(pre_resize.clone())
                        } else {
                            volume_cap.clone()
                        };
                        status
                            .capacity
                            .get_or_insert_with(BTreeMap::new)
                            .insert("storage".into(), size);
                        dirty = true;
                    } else if claim_cap.is_none_or(|c| !same_quantity(c, volume_cap)) {
                        status.capacity = spec.capacity.clone();
                        dirty = true;
                    }
                }
                if old_phase == "Pending"
                    && phase == "Bound"
                    && status.current_volume_attributes_class_name
                        != spec.volume_attributes_class_name
                {
                    status.current_volume_attributes_class_name =
                        spec.volume_attributes_class_name.clone();
                    dirty = true;
                }
            }
        }
        if dirty {
            *claim = next;
            self.steps.push(Step::UpdateClaimStatus(claim.clone()));
        }
        Ok(())
    }

    /// Upstream's updateClaimStatusWithEvent: only a phase change writes,
    /// and only then is the Event sent.
    pub fn update_claim_status_with_event(
        &mut self,
        claim: &mut PersistentVolumeClaim,
        phase: &str,
        volume: Option<&PersistentVolume>,
        type_: EventType,
        reason: &'static str,
        message: &str,
    ) -> Result<(), Stop> {
        if claim_phase(claim) == phase {
            return Ok(());
        }
        self.update_claim_status(claim, phase, volume)?;
        self.event(claim.object_ref(&()), type_, reason, message);
        Ok(())
    }

    /// Upstream's updateVolumePhase.
    pub fn update_volume_phase(
        &mut self,
        volume: &mut PersistentVolume,
        phase: &str,
        message: &str,
    ) {
        if volume_phase(volume) == phase {
            return;
        }
        let status = volume
            .status
            .get_or_insert_with(PersistentVolumeStatus::default);
        status.phase = Some(phase.into());
        status.message = (!message.is_empty()).then(|| message.into());
        self.steps.push(Step::UpdateVolumeStatus(volume.clone()));
    }

    /// Upstream's updateVolumePhaseWithEvent.
    pub fn update_volume_phase_with_event(
        &mut self,
        volume: &mut PersistentVolume,
        phase: &str,
        type_: EventType,
        reason: &'static str,
        message: &str,
    ) {
        if volume_phase(volume) == phase {
            return;
        }
        self.update_volume_phase(volume, phase, message);
        self.event(volume.object_ref(&()), type_, reason, message);
    }

    /// Upstream's bind: claimRef on the volume, volume Bound, volumeName and
    /// annotations on the claim, claim Bound — in that order, each written
    /// only when it differs, so a sync after a crash resumes where the last
    /// one stopped.
    pub fn bind(
        &mut self,
        volume: &mut PersistentVolume,
        claim: &mut PersistentVolumeClaim,
    ) -> Result<(), Stop> {
        self.bind_volume_to_claim(volume, claim);
        self.update_volume_phase(volume, "Bound", "");
        self.bind_claim_to_volume(claim, volume);
        self.update_claim_status(claim, "Bound", Some(volume))
    }

    /// Upstream's GetBindVolumeToClaim + update: a full reference to the
    /// claim, and bound-by-controller unless the user pre-bound the volume.
    fn bind_volume_to_claim(
        &mut self,
        volume: &mut PersistentVolume,
        claim: &PersistentVolumeClaim,
    ) {
        let by_controller = !is_volume_bound_to_claim(volume, claim);
        let mut dirty = false;
        let spec = volume.spec.get_or_insert_with(Default::default);
        let current = spec.claim_ref.as_ref();
        let same = current.is_some_and(|r| {
            r.name == claim.metadata.name
                && r.namespace.as_deref().unwrap_or_default()
                    == claim.metadata.namespace.as_deref().unwrap_or_default()
                && r.uid.as_deref().unwrap_or_default() == claim_uid(claim)
        });
        if !same {
            spec.claim_ref = Some(claim_reference(claim));
            dirty = true;
        }
        if by_controller && !has_annotation(&volume.metadata, ANN_BOUND_BY_CONTROLLER) {
            set_annotation(&mut volume.metadata, ANN_BOUND_BY_CONTROLLER, "yes");
            dirty = true;
        }
        if dirty {
            self.steps.push(Step::UpdateVolume(volume.clone()));
        }
    }

    /// Upstream's bindClaimToVolume.
    fn bind_claim_to_volume(
        &mut self,
        claim: &mut PersistentVolumeClaim,
        volume: &PersistentVolume,
    ) {
        let mut dirty = false;
        if claim_volume_name(claim) != name_of_volume(volume) {
            claim.spec.get_or_insert_with(Default::default).volume_name =
                Some(name_of_volume(volume).into());
            if !has_annotation(&claim.metadata, ANN_BOUND_BY_CONTROLLER) {
                set_annotation(&mut claim.metadata, ANN_BOUND_BY_CONTROLLER, "yes");
            }
            dirty = true;
        }
        if !has_annotation(&claim.metadata, ANN_BIND_COMPLETED) {
            set_annotation(&mut claim.metadata, ANN_BIND_COMPLETED, "yes");
            dirty = true;
        }
        if dirty {
            self.steps.push(Step::UpdateClaim(claim.clone()));
        }
    }

    /// Upstream's unbindVolume: a volume the controller bound loses its
    /// claimRef; one the user pre-bound keeps it, without the UID. Then
    /// Available.
    pub fn unbind_volume(&mut self, volume: &mut PersistentVolume) {
        let by_controller = has_annotation(&volume.metadata, ANN_BOUND_BY_CONTROLLER);
        let spec = volume.spec.get_or_insert_with(Default::default);
        if by_controller {
            spec.claim_ref = None;
            if let Some(annotations) = volume.metadata.annotations.as_mut() {
                annotations.remove(ANN_BOUND_BY_CONTROLLER);
                if annotations.is_empty() {
                    volume.metadata.annotations = None;
                }
            }
        } else if let Some(claim_ref) = spec.claim_ref.as_mut() {
            claim_ref.uid = None;
        }
        self.steps.push(Step::UpdateVolume(volume.clone()));
        self.update_volume_phase(volume, "Available", "");
    }
}

/// client-go's GetReference of a claim.
pub fn claim_reference(claim: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: claim.metadata.namespace.clone(),
        name: claim.metadata.name.clone(),
        uid: claim.metadata.uid.clone(),
        resource_version: claim.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

/// Quantities compared by value ("1Gi" equals "1073741824").
fn same_quantity(a: &Quantity, b: &Quantity) -> bool {
    a.0 == b.0 || matches!((parse_milli(&a.0), parse_milli(&b.0)), (Some(x), Some(y)) if x == y)
}
