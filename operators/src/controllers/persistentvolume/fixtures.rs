//! Object constructors for the binder's tests, after upstream's
//! framework_test.go newVolume/newClaim: a few positional fields, then
//! closures for anything else.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimStatus, PersistentVolumeSpec, PersistentVolumeStatus,
    VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::json;

pub const NS: &str = "default";

pub fn annotations(list: &[&str]) -> Option<BTreeMap<String, String>> {
    if list.is_empty() {
        return None;
    }
    Some(
        list.iter()
            .map(|a| match a.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (a.to_string(), "yes".to_string()),
            })
            .collect(),
    )
}

/// A volume of `size`, bound (or pre-bound, with an empty UID) to claim
/// `claim` when that is not empty. Positional like upstream's newVolume, so
/// a table row reads as one line of fields.
#[allow(clippy::too_many_arguments)]
pub fn volume(
    name: &str,
    size: &str,
    claim_uid: &str,
    claim: &str,
    phase: &str,
    policy: &str,
    class: &str,
    anns: &[&str],
) -> PersistentVolume {
    let mut pv = PersistentVolume::default();
    pv.metadata.name = Some(name.into());
    pv.metadata.resource_version = Some("1".into());
    pv.metadata.annotations = annotations(anns);
    pv.spec = Some(PersistentVolumeSpec {
        capacity: Some([("storage".to_string(), Quantity(size.into()))].into()),
        access_modes: Some(vec!["ReadWriteOnce".into(), "ReadOnlyMany".into()]),
        persistent_volume_reclaim_policy: Some(policy.into()),
        storage_class_name: (!class.is_empty()).then(|| class.into()),
        claim_ref: (!claim.is_empty()).then(|| ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: Some(NS.into()),
            name: Some(claim.into()),
            uid: (!claim_uid.is_empty()).then(|| claim_uid.into()),
            ..ObjectReference::default()
        }),
        ..PersistentVolumeSpec::default()
    });
    if !phase.is_empty() {
        pv.status = Some(PersistentVolumeStatus {
            phase: Some(phase.into()),
            ..PersistentVolumeStatus::default()
        });
    }
    pv
}

/// A claim asking for `size`, bound to volume `bound_to` when not empty;
/// `class` None leaves storageClassName unset.
pub fn claim(
    name: &str,
    uid: &str,
    size: &str,
    bound_to: &str,
    phase: &str,
    class: Option<&str>,
    anns: &[&str],
) -> PersistentVolumeClaim {
    let mut pvc = PersistentVolumeClaim::default();
    pvc.metadata.name = Some(name.into());
    pvc.metadata.namespace = Some(NS.into());
    pvc.metadata.uid = Some(uid.into());
    pvc.metadata.resource_version = Some("1".into());
    pvc.metadata.annotations = annotations(anns);
    pvc.spec = Some(PersistentVolumeClaimSpec {
        access_modes: Some(vec!["ReadWriteOnce".into(), "ReadOnlyMany".into()]),
        resources: Some(VolumeResourceRequirements {
            requests: Some([("storage".to_string(), Quantity(size.into()))].into()),
            ..Default::default()
        }),
        volume_name: (!bound_to.is_empty()).then(|| bound_to.into()),
        storage_class_name: class.map(Into::into),
        ..PersistentVolumeClaimSpec::default()
    });
    if !phase.is_empty() {
        pvc.status = Some(PersistentVolumeClaimStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
    }
    pvc
}

/// The claim as upstream's bind leaves it: Bound, with the volume's access
/// modes and capacity.
pub fn bound_status(mut pvc: PersistentVolumeClaim, size: &str) -> PersistentVolumeClaim {
    pvc.status = Some(PersistentVolumeClaimStatus {
        phase: Some("Bound".into()),
        access_modes: Some(vec!["ReadWriteOnce".into(), "ReadOnlyMany".into()]),
        capacity: Some([("storage".to_string(), Quantity(size.into()))].into()),
        ..Default::default()
    });
    pvc
}

pub fn with<T>(mut obj: T, change: impl FnOnce(&mut T)) -> T {
    change(&mut obj);
    obj
}

pub fn class(name: &str, provisioner: &str, mode: &str, default: bool) -> StorageClass {
    let mut value = json!({
        "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "provisioner": provisioner,
        "volumeBindingMode": mode,
    });
    if default {
        value["metadata"]["annotations"] =
            json!({"storageclass.kubernetes.io/is-default-class": "true"});
    }
    serde_json::from_value(value).expect("class")
}
