//! Informer changes → what to enqueue and which expectations they satisfy
//! (upstream's addRS/updateRS/deleteRS and addPod/updatePod/deletePod).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

use super::selector;
use crate::controllers::podutil;
use crate::informer::Store;
use crate::key::ObjectKey;

/// What one change asks of the controller, applied in field order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// ReplicaSets gone (or replaced by a same-named one): drop expectations.
    pub forget: Vec<ObjectKey>,
    pub creation_observed: Vec<ObjectKey>,
    /// (ReplicaSet, pod key `namespace/name`).
    pub deletion_observed: Vec<(ObjectKey, String)>,
    pub enqueue: Vec<ObjectKey>,
    pub enqueue_after: Vec<(ObjectKey, Duration)>,
}

pub fn replica_set_changed(old: Option<&ReplicaSet>, new: Option<&ReplicaSet>) -> Effects {
    let mut fx = Effects::default();
    match (old, new) {
        (old, Some(new)) => {
            // Deleted and re-created between two watch events: start clean.
            if let Some(old) = old
                && old.metadata.uid != new.metadata.uid
            {
                fx.forget.push(ObjectKey::of(old));
            }
            fx.enqueue.push(ObjectKey::of(new));
        }
        (Some(old), None) => {
            fx.forget.push(ObjectKey::of(old));
            fx.enqueue.push(ObjectKey::of(old));
        }
        (None, None) => {}
    }
    fx
}

pub fn pod_changed(
    replica_sets: &Store<ReplicaSet>,
    old: Option<&Pod>,
    new: Option<&Pod>,
) -> Effects {
    let mut fx = Effects::default();
    match (old, new) {
        (None, Some(pod)) => pod_added(replica_sets, pod, &mut fx),
        (Some(old), Some(new)) => pod_updated(replica_sets, old, new, &mut fx),
        (Some(old), None) => pod_deleted(replica_sets, old, &mut fx),
        (None, None) => {}
    }
    fx
}

fn pod_added(replica_sets: &Store<ReplicaSet>, pod: &Pod, fx: &mut Effects) {
    if pod.metadata.deletion_timestamp.is_some() {
        // Seen for the first time already terminating (e.g. after a
        // restart): that is no creation anyone waits for.
        pod_deleted(replica_sets, pod, fx);
        return;
    }
    if let Some(owner) = controller_ref(pod) {
        if let Some(rs) = resolve(replica_sets, pod, owner) {
            let key = ObjectKey::of(rs.as_ref());
            fx.creation_observed.push(key.clone());
            fx.enqueue.push(key);
        }
        return;
    }
    // An orphan: every ReplicaSet that could adopt it looks.
    fx.enqueue.extend(
        matching_replica_sets(replica_sets, pod)
            .iter()
            .map(|rs| ObjectKey::of(rs.as_ref())),
    );
}

fn pod_updated(replica_sets: &Store<ReplicaSet>, old: &Pod, new: &Pod, fx: &mut Effects) {
    if old.metadata.resource_version == new.metadata.resource_version {
        return;
    }
    let labels_changed = labels(old) != labels(new);
    if new.metadata.deletion_timestamp.is_some() {
        // A graceful deletion has begun: replacements need not wait for the
        // pod to be gone.
        pod_deleted(replica_sets, new, fx);
        if labels_changed {
            pod_deleted(replica_sets, old, fx);
        }
        return;
    }
    let old_ref = controller_ref(old);
    let new_ref = controller_ref(new);
    let ref_changed = old_ref != new_ref;
    if ref_changed
        && let Some(owner) = old_ref
        && let Some(rs) = resolve(replica_sets, old, owner)
    {
        fx.enqueue.push(ObjectKey::of(rs.as_ref()));
    }
    if let Some(owner) = new_ref {
        let Some(rs) = resolve(replica_sets, new, owner) else {
            return;
        };
        let key = ObjectKey::of(rs.as_ref());
        let min_ready = rs.spec.min_ready_seconds.unwrap_or(0);
        // Nothing reports when a ready pod turns available, so look again
        // once minReadySeconds have passed.
        if min_ready > 0 && !podutil::is_ready(old) && podutil::is_ready(new) {
            fx.enqueue_after.push((
                key.clone(),
                Duration::from_secs(min_ready.unsigned_abs().into()),
            ));
        }
        fx.enqueue.push(key);
        return;
    }
    if labels_changed || ref_changed {
        fx.enqueue.extend(
            matching_replica_sets(replica_sets, new)
                .iter()
                .map(|rs| ObjectKey::of(rs.as_ref())),
        );
    }
}

fn pod_deleted(replica_sets: &Store<ReplicaSet>, pod: &Pod, fx: &mut Effects) {
    let Some(owner) = controller_ref(pod) else {
        return;
    };
    if let Some(rs) = resolve(replica_sets, pod, owner) {
        let key = ObjectKey::of(rs.as_ref());
        fx.deletion_observed.push((key.clone(), pod_key(pod)));
        fx.enqueue.push(key);
    }
}

/// `namespace/name`, the key expectations track deletions by.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn controller_ref(pod: &Pod) -> Option<&OwnerReference> {
    podutil::controller_of(pod.metadata.owner_references.as_ref())
}

fn labels(pod: &Pod) -> Option<&BTreeMap<String, String>> {
    pod.metadata.labels.as_ref().filter(|l| !l.is_empty())
}

/// The ReplicaSet a controller reference points at, if it still exists with
/// that UID.
fn resolve(
    replica_sets: &Store<ReplicaSet>,
    pod: &Pod,
    owner: &OwnerReference,
) -> Option<Arc<ReplicaSet>> {
    if owner.kind != "ReplicaSet" {
        return None;
    }
    let key = ObjectKey::new(
        pod.metadata.namespace.clone().unwrap_or_default(),
        owner.name.clone(),
    );
    replica_sets
        .get(&key)
        .filter(|rs| rs.metadata.uid.as_deref() == Some(owner.uid.as_str()))
}

/// ReplicaSets in the pod's namespace whose (usable) selector matches it;
/// a pod without labels matches none.
pub fn matching_replica_sets(replica_sets: &Store<ReplicaSet>, pod: &Pod) -> Vec<Arc<ReplicaSet>> {
    let Some(labels) = labels(pod) else {
        return Vec::new();
    };
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut found: Vec<_> = replica_sets
        .list_namespace(namespace)
        .into_iter()
        .filter(|rs| selector::selects(&rs.spec.selector, Some(labels)))
        .collect();
    if found.len() > 1 {
        tracing::debug!(
            pod = %pod_key(pod),
            "more than one ReplicaSet selects the pod's labels; ownerReferences decide"
        );
    }
    found.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn replica_set(name: &str, uid: &str, selector: Value, min_ready: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": uid},
            "spec": {"selector": selector, "minReadySeconds": min_ready}
        }))
        .unwrap()
    }

    fn store() -> Store<ReplicaSet> {
        let s = Store::default();
        s.insert(Arc::new(replica_set(
            "a",
            "ua",
            json!({"matchLabels": {"app": "x"}}),
            0,
        )));
        s.insert(Arc::new(replica_set(
            "b",
            "ub",
            json!({"matchLabels": {"app": "x", "v": "1"}}),
            0,
        )));
        s.insert(Arc::new(replica_set(
            "slow",
            "us",
            json!({"matchLabels": {"app": "slow"}}),
            30,
        )));
        s.insert(Arc::new(replica_set("all", "uall", json!({}), 0)));
        s
    }

    /// A pod; `owner` is `(name, uid)` of a controlling ReplicaSet.
    fn pod(
        rv: &str,
        labels: Value,
        owner: Option<(&str, &str)>,
        ready: bool,
        deleting: bool,
    ) -> Pod {
        let owners = owner.map(|(name, uid)| {
            json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": uid, "controller": true}])
        });
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "resourceVersion": rv, "labels": labels,
                         "ownerReferences": owners,
                         "deletionTimestamp": deleting.then_some("2026-01-01T00:00:00Z")},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    fn k(name: &str) -> ObjectKey {
        ObjectKey::new("ns", name)
    }

    fn x() -> Value {
        json!({"app": "x"})
    }

    #[test]
    fn pod_changes() {
        let s = store();
        let owned_a = pod("1", x(), Some(("a", "ua")), false, false);
        let cases: Vec<(&str, Option<Pod>, Option<Pod>, Effects)> = vec![
            (
                "owned pod added: creation observed",
                None,
                Some(owned_a.clone()),
                Effects {
                    creation_observed: vec![k("a")],
                    enqueue: vec![k("a")],
                    ..Default::default()
                },
            ),
            (
                "pod of a vanished owner added: nothing",
                None,
                Some(pod("1", x(), Some(("a", "old-uid")), false, false)),
                Effects::default(),
            ),
            (
                "orphan added: every usable matching selector",
                None,
                Some(pod("1", json!({"app": "x", "v": "1"}), None, false, false)),
                Effects {
                    enqueue: vec![k("a"), k("b")],
                    ..Default::default()
                },
            ),
            (
                "orphan without labels: nothing",
                None,
                Some(pod("1", Value::Null, None, false, false)),
                Effects::default(),
            ),
            (
                "added already terminating: a deletion",
                None,
                Some(pod("1", x(), Some(("a", "ua")), false, true)),
                Effects {
                    deletion_observed: vec![(k("a"), "ns/p".into())],
                    enqueue: vec![k("a")],
                    ..Default::default()
                },
            ),
            (
                "resync (same resourceVersion): nothing",
                Some(owned_a.clone()),
                Some(owned_a.clone()),
                Effects::default(),
            ),
            (
                "status update of an owned pod",
                Some(owned_a.clone()),
                Some(pod("2", x(), Some(("a", "ua")), true, false)),
                Effects {
                    enqueue: vec![k("a")],
                    ..Default::default()
                },
            ),
            (
                "ready with minReadySeconds: look again after them",
                Some(pod(
                    "1",
                    json!({"app": "slow"}),
                    Some(("slow", "us")),
                    false,
                    false,
                )),
                Some(pod(
                    "2",
                    json!({"app": "slow"}),
                    Some(("slow", "us")),
                    true,
                    false,
                )),
                Effects {
                    enqueue: vec![k("slow")],
                    enqueue_after: vec![(k("slow"), Duration::from_secs(30))],
                    ..Default::default()
                },
            ),
            (
                "still ready: no delayed look",
                Some(pod(
                    "1",
                    json!({"app": "slow"}),
                    Some(("slow", "us")),
                    true,
                    false,
                )),
                Some(pod(
                    "2",
                    json!({"app": "slow"}),
                    Some(("slow", "us")),
                    true,
                    false,
                )),
                Effects {
                    enqueue: vec![k("slow")],
                    ..Default::default()
                },
            ),
            (
                "deletion started: deletion observed",
                Some(owned_a.clone()),
                Some(pod("2", x(), Some(("a", "ua")), false, true)),
                Effects {
                    deletion_observed: vec![(k("a"), "ns/p".into())],
                    enqueue: vec![k("a")],
                    ..Default::default()
                },
            ),
            (
                "deletion with relabel and new owner: both owners observe",
                Some(owned_a.clone()),
                Some(pod(
                    "2",
                    json!({"app": "slow"}),
                    Some(("slow", "us")),
                    false,
                    true,
                )),
                Effects {
                    deletion_observed: vec![(k("slow"), "ns/p".into()), (k("a"), "ns/p".into())],
                    enqueue: vec![k("slow"), k("a")],
                    ..Default::default()
                },
            ),
            (
                "controller changed: old and new owners",
                Some(owned_a.clone()),
                Some(pod("2", x(), Some(("b", "ub")), false, false)),
                Effects {
                    enqueue: vec![k("a"), k("b")],
                    ..Default::default()
                },
            ),
            (
                "released: old owner and matching ReplicaSets",
                Some(owned_a.clone()),
                Some(pod("2", x(), None, false, false)),
                Effects {
                    enqueue: vec![k("a"), k("a")],
                    ..Default::default()
                },
            ),
            (
                "orphan relabelled: new matches",
                Some(pod("1", json!({"app": "y"}), None, false, false)),
                Some(pod("2", json!({"app": "slow"}), None, false, false)),
                Effects {
                    enqueue: vec![k("slow")],
                    ..Default::default()
                },
            ),
            (
                "orphan status update: nothing",
                Some(pod("1", x(), None, false, false)),
                Some(pod("2", x(), None, true, false)),
                Effects::default(),
            ),
            (
                "owned pod deleted",
                Some(owned_a.clone()),
                None,
                Effects {
                    deletion_observed: vec![(k("a"), "ns/p".into())],
                    enqueue: vec![k("a")],
                    ..Default::default()
                },
            ),
            (
                "orphan deleted: nothing",
                Some(pod("1", x(), None, false, false)),
                None,
                Effects::default(),
            ),
        ];
        for (name, old, new, want) in cases {
            assert_eq!(pod_changed(&s, old.as_ref(), new.as_ref()), want, "{name}");
        }
    }

    #[test]
    fn replica_set_changes() {
        let a = replica_set("a", "ua", json!({"matchLabels": {"app": "x"}}), 0);
        let recreated = replica_set("a", "ua2", json!({"matchLabels": {"app": "x"}}), 0);
        assert_eq!(
            replica_set_changed(None, Some(&a)),
            Effects {
                enqueue: vec![k("a")],
                ..Default::default()
            }
        );
        assert_eq!(
            replica_set_changed(Some(&a), Some(&a)),
            Effects {
                enqueue: vec![k("a")],
                ..Default::default()
            }
        );
        assert_eq!(
            replica_set_changed(Some(&a), Some(&recreated)),
            Effects {
                forget: vec![k("a")],
                enqueue: vec![k("a")],
                ..Default::default()
            }
        );
        assert_eq!(
            replica_set_changed(Some(&a), None),
            Effects {
                forget: vec![k("a")],
                enqueue: vec![k("a")],
                ..Default::default()
            }
        );
    }
}
