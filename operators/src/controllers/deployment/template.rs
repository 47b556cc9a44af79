//! The pod template of a Deployment and of its ReplicaSets: the
//! pod-template-hash, ReplicaSet names, and template equality.
//!
//! Upstream hashes the Go struct as printed by spew (`DeepHashObject`), which
//! cannot be reproduced outside Go. We hash a canonical JSON serialisation
//! instead: k8s-openapi writes struct fields in a fixed order and its maps are
//! `BTreeMap`s, so equal templates always give equal bytes. Everything around
//! the digest is upstream's: FNV-1a 32-bit, the collisionCount appended as
//! 8 bytes (little-endian uint32, then 4 zero bytes), the `uint32` printed in
//! decimal and mapped through `SafeEncodeString`'s alphabet. Our hashes thus
//! differ from upstream's for the same template, which is harmless: a
//! ReplicaSet is matched to its Deployment by comparing templates while
//! ignoring the hash label ([`equal_ignore_hash`]), exactly as upstream does,
//! so ReplicaSets created by either controller are found and reused.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use crate::controllers::podutil::POD_TEMPLATE_HASH_LABEL;

/// `rand.SafeEncodeString`'s alphabet (no vowels, no confusable digits).
const SAFE_ALPHABET: &[u8; 27] = b"bcdfghjklmnpqrstvwxz2456789";

/// Longest object name (a DNS-1123 subdomain).
const MAX_NAME_LENGTH: usize = 253;

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;

/// FNV-1a, 32 bits, writable by serde_json.
struct Fnv1a32(u32);

impl Fnv1a32 {
    fn new() -> Self {
        Self(FNV_OFFSET)
    }

    fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u32::from(*b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }
}

impl std::io::Write for Fnv1a32 {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The `pod-template-hash` of a Deployment's template (see the module doc).
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut hasher = Fnv1a32::new();
    // Serialising k8s-openapi types cannot fail: every map key is a string.
    if let Err(error) = serde_json::to_writer(&mut hasher, template) {
        tracing::warn!(%error, "could not serialise a pod template for hashing");
    }
    if let Some(count) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(count as u32).to_le_bytes());
        hasher.update(&bytes);
    }
    safe_encode(&hasher.0.to_string())
}

/// Maps every byte onto the safe alphabet (`rand.SafeEncodeString`).
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// `<deployment>-<hash>`, the Deployment's name cut so the whole stays a
/// valid object name.
pub fn replica_set_name(deployment: &str, hash: &str) -> String {
    let room = MAX_NAME_LENGTH.saturating_sub(1 + hash.len());
    let base = if deployment.len() > room && room > 0 {
        deployment.get(..room).unwrap_or(deployment)
    } else {
        deployment
    };
    format!("{base}-{hash}")
}

/// Labels with the hash label added.
pub fn labels_with_hash(
    labels: Option<&BTreeMap<String, String>>,
    hash: &str,
) -> BTreeMap<String, String> {
    let mut out = labels.cloned().unwrap_or_default();
    out.insert(POD_TEMPLATE_HASH_LABEL.to_string(), hash.to_string());
    out
}

/// A selector that also requires the hash label.
pub fn selector_with_hash(selector: &LabelSelector, hash: &str) -> LabelSelector {
    let mut out = selector.clone();
    out.match_labels = Some(labels_with_hash(selector.match_labels.as_ref(), hash));
    out
}

/// Whether two templates are equal once the hash label is ignored, with
/// upstream's semantic equality (an empty list or map equals a missing one).
/// Both templates come from the apiserver, which writes quantities and
/// defaults canonically, so a JSON comparison is as strict as upstream's.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    comparable(a) == comparable(b)
}

fn comparable(template: &PodTemplateSpec) -> Value {
    let mut value = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(labels) = value
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    prune_empty(&mut value);
    value
}

/// Drops nulls and empty lists and maps, recursively.
fn prune_empty(value: &mut Value) {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    match value {
        Value::Object(map) => {
            for v in map.values_mut() {
                prune_empty(v);
            }
            map.retain(|_, v| !empty(v));
        }
        Value::Array(items) => items.iter_mut().for_each(prune_empty),
        _ => {}
    }
}

/// The Deployment template a ReplicaSet's template stands for: the same
/// template without the hash label (used when rolling back to it).
pub fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut out = template.clone();
    let metadata = out.metadata.get_or_insert_default();
    let mut labels = metadata.labels.take().unwrap_or_default();
    labels.remove(POD_TEMPLATE_HASH_LABEL);
    metadata.labels = Some(labels);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(v: Value) -> PodTemplateSpec {
        serde_json::from_value(v).unwrap()
    }

    fn web() -> PodTemplateSpec {
        template(json!({
            "metadata": {"labels": {"app": "web", "tier": "front"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1"}]},
        }))
    }

    #[test]
    fn hash_is_stable_and_uses_the_safe_alphabet() {
        let a = pod_template_hash(&web(), None);
        assert_eq!(a, pod_template_hash(&web(), None));
        assert!(!a.is_empty() && a.len() <= 10, "a decimal uint32: {a}");
        assert!(a.bytes().all(|b| SAFE_ALPHABET.contains(&b)));
    }

    #[test]
    fn label_order_does_not_change_the_hash() {
        let reordered = template(json!({
            "spec": {"containers": [{"image": "nginx:1", "name": "c"}]},
            "metadata": {"labels": {"tier": "front", "app": "web"}},
        }));
        assert_eq!(
            pod_template_hash(&web(), None),
            pod_template_hash(&reordered, None)
        );
    }

    #[test]
    fn template_and_collision_count_change_the_hash() {
        let base = pod_template_hash(&web(), None);
        let mut other = web();
        other.spec.as_mut().unwrap().containers[0].image = Some("nginx:2".into());
        assert_ne!(base, pod_template_hash(&other, None));
        let one = pod_template_hash(&web(), Some(1));
        assert_ne!(base, one);
        assert_ne!(one, pod_template_hash(&web(), Some(2)));
        // A zero count is still appended, as upstream's non-nil pointer is.
        assert_ne!(base, pod_template_hash(&web(), Some(0)));
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        for (input, want) in [
            ("", 0x811c_9dc5u32),
            ("a", 0xe40c_292c),
            ("foobar", 0xbf9c_f968),
        ] {
            let mut h = Fnv1a32::new();
            h.update(input.as_bytes());
            assert_eq!(h.0, want, "{input:?}");
        }
    }

    #[test]
    fn safe_encoding_maps_digits_like_upstream() {
        // '0' is 48, 48 % 27 = 21 → '4'; '9' is 57, 57 % 27 = 3 → 'f'.
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    #[test]
    fn replica_set_names_fit_the_name_limit() {
        assert_eq!(replica_set_name("web", "abc"), "web-abc");
        let long = "d".repeat(300);
        let name = replica_set_name(&long, "5d4f8c9b7");
        assert_eq!(name.len(), 253);
        assert!(name.ends_with("-5d4f8c9b7"));
    }

    #[test]
    fn equality_ignores_the_hash_label_and_empty_collections() {
        let mut labelled = web();
        labelled
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(POD_TEMPLATE_HASH_LABEL.into(), "xyz".into());
        assert!(equal_ignore_hash(&web(), &labelled));

        let with_empties = template(json!({
            "metadata": {"labels": {"app": "web", "tier": "front"}, "annotations": {}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1", "env": [], "resources": {}}],
                     "volumes": null},
        }));
        assert!(equal_ignore_hash(&web(), &with_empties));

        let mut other = web();
        other.spec.as_mut().unwrap().containers[0].image = Some("nginx:2".into());
        assert!(!equal_ignore_hash(&web(), &other));
    }

    #[test]
    fn hash_label_is_added_to_labels_and_selector() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "Exists"}],
        }))
        .unwrap();
        let out = selector_with_hash(&sel, "h");
        let labels = out.match_labels.unwrap();
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            labels.get(POD_TEMPLATE_HASH_LABEL).map(String::as_str),
            Some("h")
        );
        assert_eq!(out.match_expressions.unwrap().len(), 1);
        let stripped = without_hash(&template(json!({
            "metadata": {"labels": {"app": "web", "pod-template-hash": "h"}},
        })));
        assert_eq!(
            stripped
                .metadata
                .unwrap()
                .labels
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            vec!["app"]
        );
    }
}
