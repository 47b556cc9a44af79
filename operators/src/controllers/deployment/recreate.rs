//! Recreate's gate: the new ReplicaSet is created or scaled up only once no
//! pod of an old one is left running (upstream's `oldPodsRunning`). Pure.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;

use super::sets::status_replicas;
use crate::controllers::podutil::controller_of;

/// Whether an old set still reports pods, or any pod controlled by one of
/// the Deployment's sets other than the new one is not finished. Pods being
/// deleted still count: they may still be running.
pub fn old_pods_running(
    new: Option<&ReplicaSet>,
    old: &[ReplicaSet],
    claimed: &[ReplicaSet],
    pods: &[Arc<Pod>],
) -> bool {
    if old.iter().map(status_replicas).sum::<i32>() > 0 {
        return true;
    }
    let new_uid = new.and_then(|rs| rs.metadata.uid.as_deref());
    let old_uids: HashSet<&str> = claimed
        .iter()
        .filter_map(|rs| rs.metadata.uid.as_deref())
        .filter(|uid| Some(*uid) != new_uid)
        .collect();
    pods.iter().any(|pod| {
        let owned = controller_of(pod.metadata.owner_references.as_ref())
            .is_some_and(|r| r.kind == "ReplicaSet" && old_uids.contains(r.uid.as_str()));
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        owned && !matches!(phase, Some("Failed") | Some("Succeeded"))
    })
}

#[cfg(test)]
mod tests {
    use super::super::sets::fixtures::*;
    use super::*;
    use serde_json::json;

    fn pod(owner_uid: &str, phase: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "p", "namespace": "ns", "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x",
                     "uid": owner_uid, "controller": true}]},
                "status": {"phase": phase},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn waits_for_old_pods_to_finish() {
        let mut old = rs("old", 1, 0, 0);
        old.status.as_mut().unwrap().replicas = 0;
        let new = rs("new", 2, 0, 0);
        let claimed = [old.clone(), new.clone()];
        let olds = std::slice::from_ref(&old);
        let cases = [
            (vec![], false),
            (vec![pod("old-uid", "Running")], true),
            (vec![pod("old-uid", "Pending")], true),
            (vec![pod("old-uid", "Unknown")], true),
            (
                vec![pod("old-uid", "Succeeded"), pod("old-uid", "Failed")],
                false,
            ),
            (vec![pod("new-uid", "Running")], false),
            (vec![pod("stranger", "Running")], false),
        ];
        for (pods, want) in cases {
            assert_eq!(
                old_pods_running(Some(&new), olds, &claimed, &pods),
                want,
                "{pods:?}"
            );
        }
        // An old set still reporting replicas is enough.
        let busy = [rs("old", 1, 2, 0)];
        assert!(old_pods_running(Some(&new), &busy, &claimed, &[]));
        // Without a new set every claimed set is old.
        assert!(old_pods_running(
            None,
            olds,
            &claimed,
            &[pod("new-uid", "Running")]
        ));
    }
}
