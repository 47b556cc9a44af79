//! Deployment conditions with upstream's types, reasons and update rules
//! (deployment_util.go): a condition is replaced only when its status or
//! reason changes, keeps its lastTransitionTime while its status stays, and
//! a replaced condition moves to the end of the list.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus, ReplicaSetCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const PROGRESSING: &str = "Progressing";
pub const AVAILABLE: &str = "Available";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// Progressing: a set was scaled as part of the rollout.
pub const REPLICA_SET_UPDATED: &str = "ReplicaSetUpdated";
/// Progressing: the new set could not be created.
pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
/// Progressing: the new set was created.
pub const NEW_REPLICA_SET: &str = "NewReplicaSetCreated";
/// Progressing: an existing set was found to be the new one.
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
/// Progressing: the rollout is complete.
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
/// Progressing: no progress within progressDeadlineSeconds.
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";
/// Available: at least replicas-maxUnavailable pods are available.
pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

/// Whole seconds: what the apiserver keeps of a condition's times, so a
/// condition written and read back compares equal.
pub fn truncate(now: Timestamp) -> Timestamp {
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    now: Timestamp,
) -> DeploymentCondition {
    let now = Time(truncate(now));
    DeploymentCondition {
        type_: Some(type_.to_string()),
        status: Some(status.to_string()),
        reason: Some(reason.to_string()),
        message: Some(message.into()),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

pub fn get<'a>(
    status: Option<&'a DeploymentStatus>,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_.as_deref() == Some(type_))
}

pub fn reason(c: &DeploymentCondition) -> &str {
    c.reason.as_deref().unwrap_or_default()
}

/// Sets a condition as upstream's `SetDeploymentCondition`.
pub fn set(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    let type_ = condition.type_.clone().unwrap_or_default();
    if let Some(current) = get(Some(status), &type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove(status, &type_);
    status.conditions.get_or_insert_default().push(condition);
}

pub fn remove(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_.as_deref() != Some(type_));
    }
}

/// A ReplicaSet's condition promoted onto its Deployment.
pub fn from_replica_set(c: &ReplicaSetCondition) -> DeploymentCondition {
    DeploymentCondition {
        type_: c.type_.clone(),
        status: c.status.clone(),
        last_transition_time: c.last_transition_time.clone(),
        last_update_time: c.last_transition_time.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn types(status: &DeploymentStatus) -> Vec<(String, String)> {
        status
            .conditions
            .iter()
            .flatten()
            .map(|c| (c.type_.clone().unwrap(), c.reason.clone().unwrap()))
            .collect()
    }

    #[test]
    fn same_status_and_reason_changes_nothing() {
        let mut status = DeploymentStatus::default();
        set(
            &mut status,
            new_condition(PROGRESSING, TRUE, NEW_REPLICA_SET, "a", at(10)),
        );
        set(
            &mut status,
            new_condition(PROGRESSING, TRUE, NEW_REPLICA_SET, "b", at(20)),
        );
        let c = get(Some(&status), PROGRESSING).unwrap();
        assert_eq!(c.message.as_deref(), Some("a"));
        assert_eq!(c.last_update_time, Some(Time(at(10))));
    }

    #[test]
    fn same_status_keeps_the_transition_time_and_moves_last() {
        let mut status = DeploymentStatus::default();
        set(
            &mut status,
            new_condition(PROGRESSING, TRUE, NEW_REPLICA_SET, "a", at(10)),
        );
        set(
            &mut status,
            new_condition(AVAILABLE, FALSE, MINIMUM_REPLICAS_UNAVAILABLE, "m", at(10)),
        );
        set(
            &mut status,
            new_condition(PROGRESSING, TRUE, NEW_RS_AVAILABLE, "done", at(30)),
        );
        let c = get(Some(&status), PROGRESSING).unwrap();
        assert_eq!(c.last_transition_time, Some(Time(at(10))));
        assert_eq!(c.last_update_time, Some(Time(at(30))));
        assert_eq!(
            types(&status),
            [
                (
                    AVAILABLE.to_string(),
                    MINIMUM_REPLICAS_UNAVAILABLE.to_string()
                ),
                (PROGRESSING.to_string(), NEW_RS_AVAILABLE.to_string())
            ]
        );
        set(
            &mut status,
            new_condition(PROGRESSING, FALSE, TIMED_OUT, "late", at(40)),
        );
        let c = get(Some(&status), PROGRESSING).unwrap();
        assert_eq!(c.last_transition_time, Some(Time(at(40))));
        remove(&mut status, PROGRESSING);
        assert!(get(Some(&status), PROGRESSING).is_none());
        assert_eq!(status.conditions.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn times_are_whole_seconds() {
        let t: Timestamp = "2026-01-01T00:00:00.75Z".parse().unwrap();
        let c = new_condition(AVAILABLE, TRUE, MINIMUM_REPLICAS_AVAILABLE, "", t);
        assert_eq!(c.last_update_time.unwrap().0.subsec_nanosecond(), 0);
    }

    #[test]
    fn replica_failure_is_promoted_with_its_transition_time() {
        let rs = ReplicaSetCondition {
            type_: Some(REPLICA_FAILURE.into()),
            status: Some(TRUE.into()),
            reason: Some("FailedCreate".into()),
            message: Some("quota".into()),
            last_transition_time: Some(Time(at(5))),
        };
        let c = from_replica_set(&rs);
        assert_eq!(c.type_.as_deref(), Some(REPLICA_FAILURE));
        assert_eq!(c.last_update_time, Some(Time(at(5))));
        assert_eq!(c.reason.as_deref(), Some("FailedCreate"));
    }
}
