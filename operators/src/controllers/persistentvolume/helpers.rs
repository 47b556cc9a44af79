//! Upstream's storage helpers (component-helpers/storage/volume and
//! pkg/volume/util): annotation names, class lookup, binding predicates and
//! the default StorageClass. All pure; objects with missing fields read as
//! their zero values, as in Go.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NodeSelectorRequirement, NodeSelectorTerm, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;

use crate::controllers::endpointslice::topology::parse_milli_wide;

pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
pub const ANN_DYNAMICALLY_PROVISIONED: &str = "pv.kubernetes.io/provisioned-by";
pub const ANN_MIGRATED_TO: &str = "pv.kubernetes.io/migrated-to";
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
pub const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
pub const ANN_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
pub const ANN_BETA_DEFAULT_CLASS: &str = "storageclass.beta.kubernetes.io/is-default-class";

pub const FILESYSTEM: &str = "Filesystem";
pub const WAIT_FOR_FIRST_CONSUMER: &str = "WaitForFirstConsumer";

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

pub fn has_annotation(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> bool {
    annotation(meta, key).is_some()
}

pub fn set_annotation(
    meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
    value: &str,
) {
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.into(), value.into());
}

/// `namespace/name` of a claim, the claims queue's key.
pub fn claim_key(claim: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        claim.metadata.namespace.as_deref().unwrap_or_default(),
        claim.metadata.name.as_deref().unwrap_or_default()
    )
}

pub fn name_of_volume(volume: &PersistentVolume) -> &str {
    volume.metadata.name.as_deref().unwrap_or_default()
}

pub fn claim_uid(claim: &PersistentVolumeClaim) -> &str {
    claim.metadata.uid.as_deref().unwrap_or_default()
}

/// The claim's `spec.volumeName`, `""` when unset.
pub fn claim_volume_name(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or_default()
}

pub fn volume_phase(volume: &PersistentVolume) -> &str {
    volume
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

pub fn claim_phase(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

pub fn reclaim_policy(volume: &PersistentVolume) -> &str {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or_default()
}

/// Whether the claim asked for a class at all (the beta annotation counts,
/// and so does an explicit `""`).
pub fn claim_has_class(claim: &PersistentVolumeClaim) -> bool {
    has_annotation(&claim.metadata, ANN_BETA_STORAGE_CLASS)
        || claim
            .spec
            .as_ref()
            .is_some_and(|s| s.storage_class_name.is_some())
}

/// The claim's class, `""` for none; the beta annotation wins.
pub fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    if let Some(class) = annotation(&claim.metadata, ANN_BETA_STORAGE_CLASS) {
        return class;
    }
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or_default()
}

pub fn volume_class(volume: &PersistentVolume) -> &str {
    if let Some(class) = annotation(&volume.metadata, ANN_BETA_STORAGE_CLASS) {
        return class;
    }
    volume
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or_default()
}

fn claim_vac(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_attributes_class_name.as_deref())
        .unwrap_or_default()
}

fn volume_vac(volume: &PersistentVolume) -> &str {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.volume_attributes_class_name.as_deref())
        .unwrap_or_default()
}

/// VolumeAttributesClass is GA (on by default) in v1.37: names must equal.
pub fn attributes_class_mismatch(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> bool {
    claim_vac(claim) != volume_vac(volume)
}

/// Upstream's IsVolumeBoundToClaim: claimRef names the claim, and its UID
/// (when set) is the claim's.
pub fn is_volume_bound_to_claim(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(claim_ref) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    if claim_ref.name.as_deref().unwrap_or_default()
        != claim.metadata.name.as_deref().unwrap_or_default()
        || claim_ref.namespace.as_deref().unwrap_or_default()
            != claim.metadata.namespace.as_deref().unwrap_or_default()
    {
        return false;
    }
    let uid = claim_ref.uid.as_deref().unwrap_or_default();
    uid.is_empty() || uid == claim_uid(claim)
}

/// Filesystem unless set, on both sides.
pub fn volume_mode_mismatch(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> bool {
    let wanted = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or(FILESYSTEM);
    let offered = volume
        .spec
        .as_ref()
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or(FILESYSTEM);
    wanted != offered
}

pub fn claim_access_modes(claim: &PersistentVolumeClaim) -> &[String] {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default()
}

pub fn volume_access_modes(volume: &PersistentVolume) -> &[String] {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default()
}

/// Every mode the claim asks for is offered by the volume.
pub fn access_modes_fit(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> bool {
    let offered = volume_access_modes(volume);
    claim_access_modes(claim)
        .iter()
        .all(|mode| offered.contains(mode))
}

/// Storage in thousandths of a byte: the claim's request (0 when none, as a
/// missing map entry in Go), or `None` when it cannot be parsed.
pub fn requested_storage(claim: &PersistentVolumeClaim) -> Option<i128> {
    match claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
    {
        None => Some(0),
        Some(q) => parse_milli_wide(&q.0),
    }
}

/// The volume's capacity in thousandths of a byte; 0 when missing, `None`
/// when unparsable.
pub fn volume_capacity(volume: &PersistentVolume) -> Option<i128> {
    match volume
        .spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
    {
        None => Some(0),
        Some(q) => parse_milli_wide(&q.0),
    }
}

/// Upstream's CheckNodeAffinity with a node known only by its labels: the
/// volume's required node selector terms (ORed) must select the node.
pub fn node_affinity_allows(
    volume: &PersistentVolume,
    node_labels: &BTreeMap<String, String>,
) -> bool {
    let Some(required) = volume
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return true;
    };
    required
        .node_selector_terms
        .iter()
        .any(|term| term_matches(term, node_labels))
}

/// A term with no requirements selects nothing, as upstream's
/// MatchNodeSelectorTerms. Field requirements (metadata.name) cannot match a
/// node known only by labels.
fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    fields.is_empty() && expressions.iter().all(|r| requirement_matches(r, labels))
}

fn requirement_matches(req: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&req.key);
    let values = req.values.as_deref().unwrap_or_default();
    let as_int = |s: &str| s.parse::<i64>().ok();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), [bound]) = (value.and_then(|v| as_int(v)), values) else {
                return false;
            };
            let Some(bound) = as_int(bound) else {
                return false;
            };
            if req.operator == "Gt" {
                have > bound
            } else {
                have < bound
            }
        }
        _ => false,
    }
}

fn is_default_class(class: &StorageClass) -> bool {
    annotation(&class.metadata, ANN_DEFAULT_CLASS) == Some("true")
        || annotation(&class.metadata, ANN_BETA_DEFAULT_CLASS) == Some("true")
}

/// Upstream's GetDefaultClass: among the classes annotated as default, the
/// newest; equally old ones by name.
pub fn default_class<'a>(
    classes: impl IntoIterator<Item = &'a StorageClass>,
) -> Option<&'a StorageClass> {
    classes
        .into_iter()
        .filter(|c| is_default_class(c))
        .min_by(|a, b| {
            let created = |c: &StorageClass| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(b)
                .cmp(&created(a))
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        })
}

/// Whether a claim's class delays binding until a pod is scheduled. A class
/// that does not exist does not delay; one without a binding mode is an
/// error, as upstream.
pub fn is_delay_binding_mode(
    claim: &PersistentVolumeClaim,
    classes: &BTreeMap<String, StorageClass>,
) -> Result<bool, String> {
    let name = claim_class(claim);
    if name.is_empty() {
        return Ok(false);
    }
    let Some(class) = classes.get(name) else {
        return Ok(false);
    };
    match class.volume_binding_mode.as_deref() {
        None => Err(format!(
            "VolumeBindingMode not set for StorageClass {name:?}"
        )),
        Some(mode) => Ok(mode == WAIT_FOR_FIRST_CONSUMER),
    }
}

/// The scheduler picked a node for provisioning this claim.
pub fn is_delay_binding_provisioning(claim: &PersistentVolumeClaim) -> bool {
    has_annotation(&claim.metadata, ANN_SELECTED_NODE)
}

/// The claims a pod uses (upstream's PodPVCIndex): named ones, and the
/// `<pod>-<volume>` claim of each ephemeral volume.
pub fn pod_claim_names(pod: &Pod) -> impl Iterator<Item = String> + '_ {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(move |v| {
            if let Some(pvc) = &v.persistent_volume_claim {
                Some(pvc.claim_name.clone())
            } else {
                v.ephemeral
                    .as_ref()
                    .map(|_| format!("{pod_name}-{}", v.name))
            }
        })
}

pub fn pod_uses_claim(pod: &Pod, claim_name: &str) -> bool {
    pod_claim_names(pod).any(|c| c == claim_name)
}

/// Upstream's IsPodTerminated as far as the kept pod tells: a finished
/// phase, or deleted before it was ever scheduled (so nothing runs). A
/// deleted pod on a node counts as running: the trimmed pod does not say
/// whether its containers stopped.
pub fn is_pod_terminated(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    matches!(phase, Some("Failed" | "Succeeded"))
        || (pod.metadata.deletion_timestamp.is_some() && !scheduled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::persistentvolume::fixtures::{claim, class, volume, with};

    #[test]
    fn the_newest_default_class_wins_then_the_first_name() {
        let at = |c: StorageClass, t: &str| {
            with(c, |c| {
                c.metadata.creation_timestamp = Some(
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t.parse().unwrap()),
                )
            })
        };
        let old = at(class("old", "p", "Immediate", true), "2026-01-01T00:00:00Z");
        let new_b = at(
            class("new-b", "p", "Immediate", true),
            "2026-02-01T00:00:00Z",
        );
        let new_a = at(
            class("new-a", "p", "Immediate", true),
            "2026-02-01T00:00:00Z",
        );
        let newer_not_default = at(
            class("plain", "p", "Immediate", false),
            "2026-03-01T00:00:00Z",
        );
        let beta = with(
            at(
                class("beta", "p", "Immediate", false),
                "2025-01-01T00:00:00Z",
            ),
            |c| {
                c.metadata.annotations =
                    Some([(ANN_BETA_DEFAULT_CLASS.to_string(), "true".to_string())].into())
            },
        );
        let name =
            |classes: &[StorageClass]| default_class(classes).and_then(|c| c.metadata.name.clone());
        assert_eq!(
            name(&[old.clone(), new_b.clone(), new_a, newer_not_default.clone()]).as_deref(),
            Some("new-a")
        );
        assert_eq!(name(&[old, new_b]).as_deref(), Some("new-b"));
        assert_eq!(
            name(&[beta, newer_not_default.clone()]).as_deref(),
            Some("beta")
        );
        assert_eq!(name(&[newer_not_default]), None);
    }

    #[test]
    fn claim_classes_read_the_beta_annotation_first() {
        let c = claim("c", "u", "1Gi", "", "", Some("gold"), &[]);
        assert_eq!((claim_class(&c), claim_has_class(&c)), ("gold", true));
        let c = claim("c", "u", "1Gi", "", "", None, &[]);
        assert_eq!((claim_class(&c), claim_has_class(&c)), ("", false));
        let c = claim("c", "u", "1Gi", "", "", Some(""), &[]);
        assert_eq!((claim_class(&c), claim_has_class(&c)), ("", true));
        let c = claim(
            "c",
            "u",
            "1Gi",
            "",
            "",
            Some("gold"),
            &["volume.beta.kubernetes.io/storage-class=silver"],
        );
        assert_eq!(claim_class(&c), "silver");
        let v = volume(
            "v",
            "1Gi",
            "",
            "",
            "",
            "Retain",
            "gold",
            &["volume.beta.kubernetes.io/storage-class=silver"],
        );
        assert_eq!(volume_class(&v), "silver");
    }

    #[test]
    fn node_affinity_operators() {
        let labels: BTreeMap<String, String> = [
            ("zone".to_string(), "a".to_string()),
            ("rank".to_string(), "5".to_string()),
        ]
        .into();
        let allows = |terms: serde_json::Value| {
            let v = with(volume("v", "1Gi", "", "", "", "Retain", "", &[]), |v| {
                v.spec.as_mut().unwrap().node_affinity = Some(
                    serde_json::from_value(
                        serde_json::json!({"required": {"nodeSelectorTerms": terms}}),
                    )
                    .unwrap(),
                )
            });
            node_affinity_allows(&v, &labels)
        };
        let expr = |key: &str, op: &str, values: &[&str]| serde_json::json!([{"matchExpressions": [{"key": key, "operator": op, "values": values}]}]);
        assert!(allows(expr("zone", "In", &["a", "b"])));
        assert!(!allows(expr("zone", "NotIn", &["a"])));
        assert!(allows(expr("rank", "Gt", &["4"])));
        assert!(!allows(expr("rank", "Lt", &["5"])));
        assert!(allows(
            serde_json::json!([{"matchExpressions": [{"key": "zone", "operator": "Exists"}]}])
        ));
        assert!(!allows(
            serde_json::json!([{"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}])
        ));
        // Terms are ORed; an empty term selects nothing.
        assert!(allows(
            serde_json::json!([{}, {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}])
        ));
        assert!(!allows(serde_json::json!([{}])));
        let unrestricted = volume("v", "1Gi", "", "", "", "Retain", "", &[]);
        assert!(node_affinity_allows(&unrestricted, &labels));
    }
}
