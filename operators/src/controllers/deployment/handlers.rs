//! Informer handlers: which Deployments a change concerns (upstream's
//! add/update/delete handlers of deployment_controller.go). They only
//! compute keys and enqueue them.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;

use super::claim::selector_error;
use super::sets::{RECREATE, strategy_type};
use crate::controllers::podutil::{controller_of, selector_is_empty, selector_matches};
use crate::informer::{Informer, Store};
use crate::key::ObjectKey;
use crate::workqueue::WorkQueue;

/// The Deployment a controller reference points to, if it still exists
/// with that UID.
fn resolve(
    deployments: &Store<Deployment>,
    namespace: &str,
    owner: &OwnerReference,
) -> Option<ObjectKey> {
    if owner.kind != "Deployment" {
        return None;
    }
    let key = ObjectKey::new(namespace, owner.name.clone());
    let d = deployments.get(&key)?;
    (d.metadata.uid.as_deref() == Some(owner.uid.as_str())).then_some(key)
}

/// Deployments whose selector matches an orphan set: they may adopt it.
/// Empty or invalid selectors match nothing here.
fn selecting(deployments: &Store<Deployment>, rs: &ReplicaSet) -> Vec<ObjectKey> {
    let Some(labels) = rs.metadata.labels.as_ref().filter(|l| !l.is_empty()) else {
        return Vec::new();
    };
    deployments
        .list_namespace(&rs.namespace().unwrap_or_default())
        .iter()
        .filter(|d| {
            let sel = &d.spec.selector;
            !selector_is_empty(sel)
                && selector_error(sel).is_none()
                && selector_matches(sel, labels)
        })
        .map(|d| ObjectKey::of(d.as_ref()))
        .collect()
}

fn owner_of(deployments: &Store<Deployment>, rs: &ReplicaSet) -> Option<ObjectKey> {
    let owner = controller_of(rs.metadata.owner_references.as_ref())?;
    resolve(deployments, &rs.namespace().unwrap_or_default(), owner)
}

pub fn on_rs_added(deployments: &Store<Deployment>, rs: &ReplicaSet) -> Vec<ObjectKey> {
    // After a restart a set may show up already being deleted.
    if rs.metadata.deletion_timestamp.is_some() {
        return on_rs_deleted(deployments, rs);
    }
    if controller_of(rs.metadata.owner_references.as_ref()).is_some() {
        return owner_of(deployments, rs).into_iter().collect();
    }
    selecting(deployments, rs)
}

pub fn on_rs_updated(
    deployments: &Store<Deployment>,
    old: &ReplicaSet,
    cur: &ReplicaSet,
) -> Vec<ObjectKey> {
    if old.metadata.resource_version == cur.metadata.resource_version {
        return Vec::new();
    }
    let old_ref = controller_of(old.metadata.owner_references.as_ref());
    let cur_ref = controller_of(cur.metadata.owner_references.as_ref());
    let ref_changed = old_ref != cur_ref;
    let mut keys = Vec::new();
    if ref_changed && let Some(old_ref) = old_ref {
        keys.extend(resolve(
            deployments,
            &old.namespace().unwrap_or_default(),
            old_ref,
        ));
    }
    if let Some(cur_ref) = cur_ref {
        keys.extend(resolve(
            deployments,
            &cur.namespace().unwrap_or_default(),
            cur_ref,
        ));
        return keys;
    }
    if ref_changed || old.metadata.labels != cur.metadata.labels {
        keys.extend(selecting(deployments, cur));
    }
    keys
}

pub fn on_rs_deleted(deployments: &Store<Deployment>, rs: &ReplicaSet) -> Vec<ObjectKey> {
    owner_of(deployments, rs).into_iter().collect()
}

/// A Recreate Deployment waits for its old pods to be gone, so a pod
/// deletion may let it proceed.
pub fn on_pod_deleted(
    deployments: &Store<Deployment>,
    sets: &Store<ReplicaSet>,
    pod: &Pod,
) -> Option<ObjectKey> {
    let owner = controller_of(pod.metadata.owner_references.as_ref())?;
    if owner.kind != "ReplicaSet" {
        return None;
    }
    let namespace = pod.namespace().unwrap_or_default();
    let rs = sets.get(&ObjectKey::new(namespace.clone(), owner.name.clone()))?;
    if rs.metadata.uid.as_deref() != Some(owner.uid.as_str()) {
        return None;
    }
    let key = owner_of(deployments, &rs)?;
    let d = deployments.get(&key)?;
    (strategy_type(&d) == Some(RECREATE)).then_some(key)
}

/// ReplicaSet updates to one Deployment within this window make one sync.
const RS_UPDATE_BATCH: std::time::Duration = std::time::Duration::from_millis(100);

pub fn register(
    queue: &Arc<WorkQueue<ObjectKey>>,
    deployments: &Arc<Informer<Deployment>>,
    sets: &Arc<Informer<ReplicaSet>>,
    pods: &Arc<Informer<Pod>>,
) {
    let q = queue.clone();
    deployments.on_change(move |old, new| {
        if let Some(d) = new.or(old) {
            q.add(ObjectKey::of(d.as_ref()));
        }
    });

    let q = queue.clone();
    let store = deployments.store.clone();
    sets.on_change(move |old, new| {
        let (keys, batch) = match (old, new) {
            (None, Some(rs)) => (on_rs_added(&store, rs), false),
            (Some(old), Some(cur)) => (on_rs_updated(&store, old, cur), true),
            (Some(rs), None) => (on_rs_deleted(&store, rs), false),
            (None, None) => (Vec::new(), false),
        };
        for key in keys {
            // ReplicaSet status changes come in bursts while pods start:
            // one Deployment sync (and status write) per burst.
            if batch {
                q.add_batched(key, RS_UPDATE_BATCH);
            } else {
                q.add(key);
            }
        }
    });

    let q = queue.clone();
    let store = deployments.store.clone();
    let set_store = sets.store.clone();
    pods.on_change(move |old, new| {
        if let (Some(pod), None) = (old, new)
            && let Some(key) = on_pod_deleted(&store, &set_store, pod)
        {
            q.add(key);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::super::sets::fixtures::*;
    use super::*;
    use serde_json::json;

    fn store(ds: Vec<Deployment>) -> Store<Deployment> {
        let s = Store::default();
        for d in ds {
            s.insert(Arc::new(d));
        }
        s
    }

    fn named(mut d: Deployment, name: &str, uid: &str, app: &str) -> Deployment {
        d.metadata.name = Some(name.into());
        d.metadata.uid = Some(uid.into());
        d.spec.selector.match_labels = Some([("app".to_string(), app.to_string())].into());
        d
    }

    fn orphan(app: &str) -> ReplicaSet {
        let mut set = rs("o", 1, 1, 1);
        set.metadata.owner_references = None;
        set.metadata.labels = Some([("app".to_string(), app.to_string())].into());
        set
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("ns", name)
    }

    #[test]
    fn sets_wake_their_owner_or_every_selecting_deployment() {
        let ds = store(vec![
            rolling(1, 1, 0),
            named(rolling(1, 1, 0), "web2", "d2", "web"),
            named(rolling(1, 1, 0), "api", "d3", "api"),
        ]);
        let owned = rs("a", 1, 1, 1);
        assert_eq!(on_rs_added(&ds, &owned), [key("web")]);
        assert_eq!(on_rs_deleted(&ds, &owned), [key("web")]);
        let mut got = on_rs_added(&ds, &orphan("web"));
        got.sort();
        assert_eq!(got, [key("web"), key("web2")]);
        assert!(on_rs_deleted(&ds, &orphan("web")).is_empty());
        // A stale owner (same name, other UID) is nobody.
        let mut stale = owned.clone();
        stale.metadata.owner_references.as_mut().unwrap()[0].uid = "gone".into();
        assert!(on_rs_added(&ds, &stale).is_empty());
        // A set already being deleted wakes its owner.
        let mut dying = owned.clone();
        dying.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert_eq!(on_rs_added(&ds, &dying), [key("web")]);
    }

    #[test]
    fn updates_wake_old_and_new_owners() {
        let ds = store(vec![
            rolling(1, 1, 0),
            named(rolling(1, 1, 0), "api", "d3", "api"),
        ]);
        let mut old = rs("a", 1, 1, 1);
        old.metadata.resource_version = Some("1".into());
        let mut moved = old.clone();
        moved.metadata.resource_version = Some("2".into());
        moved.metadata.owner_references.as_mut().unwrap()[0] = OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "api".into(),
            uid: "d3".into(),
            controller: Some(true),
            ..Default::default()
        };
        assert_eq!(on_rs_updated(&ds, &old, &moved), [key("web"), key("api")]);
        assert!(on_rs_updated(&ds, &old, &old).is_empty(), "resync");
        // Released and relabelled: the old owner and any matching one.
        let mut released = orphan("api");
        released.metadata.resource_version = Some("3".into());
        assert_eq!(
            on_rs_updated(&ds, &old, &released),
            [key("web"), key("api")]
        );
        // An orphan whose labels did not change wakes nobody.
        let mut o1 = orphan("api");
        o1.metadata.resource_version = Some("4".into());
        let mut o2 = o1.clone();
        o2.metadata.resource_version = Some("5".into());
        assert!(on_rs_updated(&ds, &o1, &o2).is_empty());
    }

    #[test]
    fn pod_deletions_wake_only_recreate_deployments() {
        let sets: Store<ReplicaSet> = Store::default();
        sets.insert(Arc::new(rs("a", 1, 1, 1)));
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "a", "uid": "a-uid", "controller": true}]},
        }))
        .unwrap();
        assert_eq!(
            on_pod_deleted(&store(vec![recreate(1)]), &sets, &pod),
            Some(key("web"))
        );
        assert_eq!(
            on_pod_deleted(&store(vec![rolling(1, 1, 0)]), &sets, &pod),
            None
        );
        let mut stranger = pod.clone();
        stranger.metadata.owner_references.as_mut().unwrap()[0].uid = "x".into();
        assert_eq!(
            on_pod_deleted(&store(vec![recreate(1)]), &sets, &stranger),
            None
        );
    }
}
