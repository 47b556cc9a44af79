//! Status writes as JSON merge patches. A controller is the only writer of
//! its objects' status and computes it whole from its own view, so it need
//! not fail on a resourceVersion conflict with a spec change it has not seen
//! yet (a conflicting replace costs a re-read and a second write); the next
//! change reconciles again anyway.

use serde::Serialize;
use serde_json::{Value, json};

/// A merge patch setting the whole status: fields of `all_fields` that
/// `status` leaves out are nulled (a merge patch removes only what it names),
/// and `uid` is a precondition, so a deleted and recreated object of the same
/// name is never written.
pub fn whole_status<S: Serialize>(uid: &str, status: &S, all_fields: &[&str]) -> Value {
    let mut status = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    if let Some(map) = status.as_object_mut() {
        for field in all_fields {
            map.entry(field.to_string()).or_insert(Value::Null);
        }
    }
    json!({"metadata": {"uid": uid}, "status": status})
}

/// The fields of apps/v1 ReplicaSetStatus.
pub const REPLICA_SET_STATUS_FIELDS: &[&str] = &[
    "availableReplicas",
    "conditions",
    "fullyLabeledReplicas",
    "observedGeneration",
    "readyReplicas",
    "replicas",
    "terminatingReplicas",
];

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetStatus;

    #[test]
    fn absent_fields_are_nulled_and_uid_is_a_precondition() {
        let status = ReplicaSetStatus {
            replicas: 3,
            ready_replicas: Some(2),
            ..Default::default()
        };
        let patch = whole_status("u1", &status, REPLICA_SET_STATUS_FIELDS);
        assert_eq!(patch["metadata"]["uid"], "u1");
        assert_eq!(patch["status"]["replicas"], 3);
        assert_eq!(patch["status"]["readyReplicas"], 2);
        assert!(patch["status"]["availableReplicas"].is_null());
        assert!(
            patch["status"]
                .as_object()
                .unwrap()
                .contains_key("conditions")
        );
    }
}
