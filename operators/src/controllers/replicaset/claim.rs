//! Which pods a ReplicaSet owns (upstream's `ControllerRefManager`): orphans
//! its selector matches are adopted, owned pods it no longer matches are
//! released, pods of other controllers are left alone.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};

use crate::controllers::podutil;

/// What to do with one pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Ours already and matching: counted.
    Owned,
    /// An orphan to take: patch in our ownerReference, then count it.
    Adopt,
    /// Ours but no longer matching: patch our ownerReference out.
    Release,
    /// Someone else's, or not ours to touch now.
    Ignore,
}

/// The ReplicaSet as the claim sees it.
pub struct Claimer<'a> {
    pub namespace: &'a str,
    pub uid: &'a str,
    pub selector: &'a LabelSelector,
    /// Being deleted: no adoptions or releases, only what it already owns.
    pub deleting: bool,
}

impl Claimer<'_> {
    pub fn classify(&self, pod: &Pod) -> Claim {
        let matches = || {
            let empty = Default::default();
            podutil::selector_matches(
                self.selector,
                pod.metadata.labels.as_ref().unwrap_or(&empty),
            )
        };
        match podutil::controller_of(pod.metadata.owner_references.as_ref()) {
            Some(owner) if owner.uid != self.uid => Claim::Ignore,
            Some(_) if matches() => Claim::Owned,
            Some(_) if self.deleting => Claim::Ignore,
            Some(_) => Claim::Release,
            None if self.deleting
                || !matches()
                || pod.metadata.deletion_timestamp.is_some()
                || pod.metadata.namespace.as_deref().unwrap_or_default() != self.namespace =>
            {
                Claim::Ignore
            }
            None => Claim::Adopt,
        }
    }
}

/// Whether the pod is a candidate at all: controlled by this ReplicaSet
/// (by kind, name and UID) or by nobody (upstream's `FilterPodsByOwner`
/// with orphans).
pub fn owned_or_orphan(pod: &Pod, rs_name: &str, rs_uid: &str) -> bool {
    match podutil::controller_of(pod.metadata.owner_references.as_ref()) {
        None => true,
        Some(o) => o.kind == "ReplicaSet" && o.name == rs_name && o.uid == rs_uid,
    }
}

/// Whether the ReplicaSet controls the pod (upstream's `IsControlledBy`).
pub fn controlled_by(pod: &Pod, rs_uid: &str) -> bool {
    podutil::controller_of(pod.metadata.owner_references.as_ref()).is_some_and(|o| o.uid == rs_uid)
}

/// The strategic merge patch adopting a pod; the pod's UID makes it fail
/// rather than adopt a same-named successor.
pub fn adopt_patch(rs_name: &str, rs_uid: &str, pod_uid: &str) -> Value {
    json!({
        "metadata": {
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": rs_name,
                "uid": rs_uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
            "uid": pod_uid,
        }
    })
}

/// The strategic merge patch removing our ownerReference from a pod.
pub fn release_patch(rs_uid: &str, pod_uid: &str) -> Value {
    json!({
        "metadata": {
            "uid": pod_uid,
            "ownerReferences": [{"$patch": "delete", "uid": rs_uid}],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn owned_by(uid: &str) -> Value {
        json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": uid, "controller": true}])
    }

    #[test]
    fn claim_decisions() {
        let selector: LabelSelector =
            serde_json::from_value(json!({"matchLabels": {"app": "a"}})).unwrap();
        let matching = json!({"app": "a"});
        let other = json!({"app": "b"});
        let cases = [
            (
                "ours and matching",
                owned_by("u1"),
                matching.clone(),
                false,
                None,
                "ns",
                Claim::Owned,
            ),
            (
                "ours and matching while deleting",
                owned_by("u1"),
                matching.clone(),
                true,
                None,
                "ns",
                Claim::Owned,
            ),
            (
                "ours, no longer matching",
                owned_by("u1"),
                other.clone(),
                false,
                None,
                "ns",
                Claim::Release,
            ),
            (
                "ours, not matching, we are deleted",
                owned_by("u1"),
                other.clone(),
                true,
                None,
                "ns",
                Claim::Ignore,
            ),
            (
                "someone else's",
                owned_by("u2"),
                matching.clone(),
                false,
                None,
                "ns",
                Claim::Ignore,
            ),
            (
                "matching orphan",
                Value::Null,
                matching.clone(),
                false,
                None,
                "ns",
                Claim::Adopt,
            ),
            (
                "orphan, we are deleted",
                Value::Null,
                matching.clone(),
                true,
                None,
                "ns",
                Claim::Ignore,
            ),
            (
                "orphan not matching",
                Value::Null,
                other.clone(),
                false,
                None,
                "ns",
                Claim::Ignore,
            ),
            (
                "orphan being deleted",
                Value::Null,
                matching.clone(),
                false,
                Some("2026-01-01T00:00:00Z"),
                "ns",
                Claim::Ignore,
            ),
            (
                "orphan elsewhere",
                Value::Null,
                matching.clone(),
                false,
                None,
                "other",
                Claim::Ignore,
            ),
            (
                "non-controller owner is an orphan",
                json!([{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u1"}]),
                matching.clone(),
                false,
                None,
                "ns",
                Claim::Adopt,
            ),
        ];
        for (name, owners, labels, deleting, deletion, ns, want) in cases {
            let p = pod(
                json!({"metadata": {"name": "p", "namespace": ns, "labels": labels,
                "ownerReferences": owners, "deletionTimestamp": deletion}}),
            );
            let claimer = Claimer {
                namespace: "ns",
                uid: "u1",
                selector: &selector,
                deleting,
            };
            assert_eq!(claimer.classify(&p), want, "{name}");
        }
    }

    #[test]
    fn candidates_are_ours_or_orphans() {
        let with =
            |owners: Value| pod(json!({"metadata": {"name": "p", "ownerReferences": owners}}));
        assert!(owned_or_orphan(&with(Value::Null), "rs", "u1"));
        assert!(owned_or_orphan(&with(owned_by("u1")), "rs", "u1"));
        assert!(!owned_or_orphan(&with(owned_by("u2")), "rs", "u1"));
        assert!(!owned_or_orphan(&with(owned_by("u1")), "other", "u1"));
        assert!(controlled_by(&with(owned_by("u1")), "u1"));
        assert!(!controlled_by(&with(Value::Null), "u1"));
    }

    #[test]
    fn patches_are_upstreams() {
        assert_eq!(
            adopt_patch("rs", "u1", "p1"),
            json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "rs", "uid": "u1", "controller": true, "blockOwnerDeletion": true}], "uid": "p1"}})
        );
        assert_eq!(
            release_patch("u1", "p1"),
            json!({"metadata": {"uid": "p1", "ownerReferences": [{"$patch": "delete", "uid": "u1"}]}})
        );
    }
}
