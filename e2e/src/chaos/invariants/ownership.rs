//! Ownership: a ReplicaSet's controlling Deployment and a pod's controlling
//! ReplicaSet exist, with the UID the reference names.

use std::collections::HashMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;

use super::{Invariant, Violation, object_name};

fn controller_of<K: ResourceExt>(object: &K) -> Option<&OwnerReference> {
    object
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
}

/// One object's controller reference of `kind` checked against the live
/// owners of that kind in its namespace (name → UID).
fn check_owner<K: kube::Resource<DynamicType = ()>>(
    object: &K,
    kind: &str,
    live: &HashMap<(String, String), String>,
) -> Option<Violation> {
    // Being deleted, an object may outlive its owner: the garbage collector
    // removes dependents after the owner, not before.
    if object.meta().deletion_timestamp.is_some() {
        return None;
    }
    let owner = controller_of(object).filter(|o| o.kind == kind)?;
    let ns = object.namespace().unwrap_or_default();
    let owner_name = format!("{kind}/{ns}/{}", owner.name);
    match live.get(&(ns, owner.name.clone())) {
        Some(uid) if *uid == owner.uid => None,
        Some(uid) => Some(Violation::new(
            Invariant::OwnerLive,
            vec![object_name(object), owner_name],
            format!(
                "controller reference names UID {} but the live owner is {uid}",
                owner.uid
            ),
        )),
        None => Some(Violation::new(
            Invariant::OwnerLive,
            vec![object_name(object), owner_name],
            "controller owner is gone",
        )),
    }
}

fn live<K: ResourceExt>(objects: &[K]) -> HashMap<(String, String), String> {
    objects
        .iter()
        .filter_map(|o| Some(((o.namespace().unwrap_or_default(), o.name_any()), o.uid()?)))
        .collect()
}

/// Every ReplicaSet controlled by a Deployment, and every pod controlled by
/// a ReplicaSet, has that owner alive with the referenced UID.
pub fn owners_are_live(
    deployments: &[Deployment],
    replica_sets: &[ReplicaSet],
    pods: &[Pod],
) -> Vec<Violation> {
    let deployments = live(deployments);
    let sets = live(replica_sets);
    let mut found: Vec<Violation> = replica_sets
        .iter()
        .filter_map(|rs| check_owner(rs, "Deployment", &deployments))
        .collect();
    found.extend(
        pods.iter()
            .filter_map(|pod| check_owner(pod, "ReplicaSet", &sets)),
    );
    found
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{from, owner};
    use super::*;
    use serde_json::json;

    fn deployment(name: &str, uid: &str) -> Deployment {
        from(
            json!({"metadata": {"name": name, "namespace": "ns", "uid": uid},
                    "spec": {"selector": {}, "template": {}}}),
        )
    }

    fn rs(name: &str, uid: &str, owned_by: Option<(&str, &str)>) -> ReplicaSet {
        let owners: Vec<_> = owned_by
            .map(|(n, u)| owner("Deployment", n, u))
            .into_iter()
            .collect();
        from(
            json!({"metadata": {"name": name, "namespace": "ns", "uid": uid,
                                 "ownerReferences": owners},
                    "spec": {"selector": {}}}),
        )
    }

    fn pod(name: &str, owned_by: (&str, &str)) -> Pod {
        from(
            json!({"metadata": {"name": name, "namespace": "ns", "uid": name,
                                 "ownerReferences": [owner("ReplicaSet", owned_by.0, owned_by.1)]}}),
        )
    }

    #[test]
    fn live_owners_and_unowned_objects_pass() {
        let found = owners_are_live(
            &[deployment("d", "d1")],
            &[rs("d-1", "r1", Some(("d", "d1"))), rs("alone", "r2", None)],
            &[pod("p", ("d-1", "r1"))],
        );
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_replica_set_whose_deployment_is_gone_is_caught() {
        let found = owners_are_live(&[], &[rs("d-1", "r1", Some(("d", "d1")))], &[]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].objects, ["ReplicaSet/ns/d-1", "Deployment/ns/d"]);
        assert_eq!(found[0].detail, "controller owner is gone");
    }

    #[test]
    fn a_pod_owned_by_a_recreated_replica_set_is_caught() {
        // Same name, another UID: the pod's owner was deleted and a new
        // ReplicaSet took its name; the pod belongs to neither.
        let found = owners_are_live(
            &[deployment("d", "d1")],
            &[rs("d-1", "r2", Some(("d", "d1")))],
            &[pod("p", ("d-1", "r1"))],
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].objects, ["Pod/ns/p", "ReplicaSet/ns/d-1"]);
        assert!(found[0].detail.contains("r1"), "{}", found[0].detail);
    }

    #[test]
    fn an_object_being_deleted_may_outlive_its_owner() {
        let mut orphan = rs("d-1", "r1", Some(("d", "d1")));
        orphan.metadata.deletion_timestamp = Some(from(json!("2026-12-06T10:00:00Z")));
        assert!(owners_are_live(&[], &[orphan], &[]).is_empty());
    }
}
