//! A ReplicaSet's status from its pods (upstream's `calculateStatus`), whether
//! it needs writing, and when availability must be looked at again.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::controllers::podutil;

pub const REPLICA_FAILURE: &str = "ReplicaFailure";
pub const FAILED_CREATE: &str = "FailedCreate";
pub const FAILED_DELETE: &str = "FailedDelete";

/// The status the ReplicaSet should have. `active` are the claimed active
/// pods, `terminating` the number of claimed pods being deleted (upstream's
/// DeploymentReplicaSetTerminatingReplicas gate is on by default in v1.37),
/// `manage_error` the failure of this round's creations or deletions.
pub fn calculate_status(
    rs: &ReplicaSet,
    active: &[Arc<Pod>],
    terminating: usize,
    manage_error: Option<&str>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let spec = &rs.spec;
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.as_ref());
    let mut fully_labeled = 0;
    let mut ready = 0;
    let mut available = 0;
    for pod in active {
        let labels = pod.metadata.labels.as_ref();
        let has_template_labels = template_labels
            .into_iter()
            .flatten()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
        if has_template_labels {
            fully_labeled += 1;
        }
        if podutil::is_ready(pod) {
            ready += 1;
            if podutil::is_available(pod, min_ready, now) {
                available += 1;
            }
        }
    }

    let mut status = rs.status.clone().unwrap_or_default();
    let has_failure = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_.as_deref() == Some(REPLICA_FAILURE));
    match (manage_error, has_failure) {
        // An existing failure condition is kept as it is (its first message
        // and transition time), as upstream.
        (Some(message), false) => {
            let reason = match (active.len() as i64).cmp(&i64::from(desired_replicas(rs))) {
                std::cmp::Ordering::Less => FAILED_CREATE,
                std::cmp::Ordering::Greater => FAILED_DELETE,
                std::cmp::Ordering::Equal => "",
            };
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(ReplicaSetCondition {
                    type_: Some(REPLICA_FAILURE.into()),
                    status: Some("True".into()),
                    reason: Some(reason.into()),
                    message: Some(message.into()),
                    last_transition_time: Some(Time(
                        Timestamp::from_second(now.as_second()).unwrap_or(now),
                    )),
                });
        }
        (None, true) => {
            let kept: Vec<_> = status
                .conditions
                .take()
                .into_iter()
                .flatten()
                .filter(|c| c.type_.as_deref() != Some(REPLICA_FAILURE))
                .collect();
            status.conditions = (!kept.is_empty()).then_some(kept);
        }
        _ => {}
    }

    status.replicas = count(active.len());
    status.fully_labeled_replicas = Some(fully_labeled);
    status.ready_replicas = Some(ready);
    status.available_replicas = Some(available);
    status.terminating_replicas = Some(count(terminating));
    status.observed_generation = Some(rs.metadata.generation.unwrap_or(0));
    status
}

/// `spec.replicas`, defaulted as the apiserver does.
pub fn desired_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

/// Whether `new` differs from what is stored. Zero counts and empty lists
/// are omitted on the wire, so absent and zero compare equal;
/// terminatingReplicas is a pointer upstream, so absent and 0 differ.
pub fn status_changed(old: Option<&ReplicaSetStatus>, new: &ReplicaSetStatus) -> bool {
    let default = ReplicaSetStatus::default();
    let old = old.unwrap_or(&default);
    let n = |v: Option<i32>| v.unwrap_or(0);
    let conditions = |s: &ReplicaSetStatus| s.conditions.clone().unwrap_or_default();
    old.replicas != new.replicas
        || n(old.fully_labeled_replicas) != n(new.fully_labeled_replicas)
        || n(old.ready_replicas) != n(new.ready_replicas)
        || n(old.available_replicas) != n(new.available_replicas)
        || old.terminating_replicas != new.terminating_replicas
        || old.observed_generation.unwrap_or(0) != new.observed_generation.unwrap_or(0)
        || conditions(old) != conditions(new)
}

/// When the earliest ready-but-not-yet-available pod becomes available, if
/// any (upstream's `nextPodAvailabilityCheck` over the pods).
pub fn next_availability_check(
    pods: &[Arc<Pod>],
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<Duration> {
    if min_ready_seconds <= 0 {
        return None;
    }
    pods.iter()
        .filter_map(|pod| {
            let since = podutil::ready_condition(pod)
                .filter(|c| c.status == "True")?
                .last_transition_time
                .as_ref()?
                .0;
            let left = since
                .checked_add(SignedDuration::from_secs(i64::from(min_ready_seconds)))
                .ok()?
                .duration_since(now);
            left.is_positive().then(|| left.unsigned_abs())
        })
        .min()
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const NOW: &str = "2026-01-01T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    fn rs(extra: Value) -> ReplicaSet {
        let mut v = json!({
            "metadata": {"name": "rs", "namespace": "ns", "generation": 3},
            "spec": {
                "replicas": 3,
                "minReadySeconds": 10,
                "selector": {"matchLabels": {"app": "a"}},
                "template": {"metadata": {"labels": {"app": "a", "tier": "t"}}}
            }
        });
        if let (Some(base), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            for (k, val) in extra {
                base.insert(k.clone(), val.clone());
            }
        }
        serde_json::from_value(v).unwrap()
    }

    /// A pod with `labels`, ready since `ready_since` (None: not ready).
    fn pod(labels: Value, ready_since: Option<&str>) -> Arc<Pod> {
        let conditions = match ready_since {
            Some(t) => json!([{"type": "Ready", "status": "True", "lastTransitionTime": t}]),
            None => json!([{"type": "Ready", "status": "False"}]),
        };
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "p", "labels": labels},
                "status": {"phase": "Running", "conditions": conditions}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn counts_labeled_ready_and_available_pods() {
        let full = json!({"app": "a", "tier": "t", "extra": "x"});
        let partial = json!({"app": "a"});
        let pods = vec![
            pod(full.clone(), Some("2026-01-01T11:00:00Z")), // available
            pod(full.clone(), Some("2026-01-01T11:59:55Z")), // ready for 5 s of 10
            pod(partial.clone(), Some("2026-01-01T11:59:50Z")), // exactly 10 s
            pod(partial, None),
        ];
        let s = calculate_status(&rs(json!({})), &pods, 2, None, now());
        assert_eq!(s.replicas, 4);
        assert_eq!(s.fully_labeled_replicas, Some(2));
        assert_eq!(s.ready_replicas, Some(3));
        assert_eq!(s.available_replicas, Some(2));
        assert_eq!(s.terminating_replicas, Some(2));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.conditions, None);
    }

    #[test]
    fn failure_condition_follows_the_manage_error() {
        let failure = |reason: &str, message: &str| {
            json!({"type": "ReplicaFailure", "status": "True", "reason": reason,
                   "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z"})
        };
        let one_pod = vec![pod(json!({"app": "a"}), None)];
        let five_pods: Vec<_> = (0..5).map(|_| pod(json!({"app": "a"}), None)).collect();
        let three_pods: Vec<_> = (0..3).map(|_| pod(json!({"app": "a"}), None)).collect();
        type Case<'a> = (
            &'a str,
            Value,
            &'a [Arc<Pod>],
            Option<&'a str>,
            Option<Value>,
        );
        let cases: Vec<Case> = vec![
            (
                "too few: FailedCreate",
                json!({}),
                &one_pod,
                Some("quota"),
                Some(
                    json!([{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                             "message": "quota", "lastTransitionTime": NOW}]),
                ),
            ),
            (
                "too many: FailedDelete",
                json!({}),
                &five_pods,
                Some("unable to delete pods: x"),
                Some(
                    json!([{"type": "ReplicaFailure", "status": "True", "reason": "FailedDelete",
                             "message": "unable to delete pods: x", "lastTransitionTime": NOW}]),
                ),
            ),
            (
                "existing condition kept on a new error",
                json!({"status": {"replicas": 1, "conditions": [failure("FailedCreate", "old")]}}),
                &five_pods,
                Some("new"),
                Some(json!([failure("FailedCreate", "old")])),
            ),
            (
                "removed once managing succeeds",
                json!({"status": {"replicas": 1, "conditions": [failure("FailedCreate", "old")]}}),
                &three_pods,
                None,
                None,
            ),
        ];
        for (name, extra, pods, error, want) in cases {
            let s = calculate_status(&rs(extra), pods, 0, error, now());
            let want: Option<Vec<ReplicaSetCondition>> =
                want.map(|w| serde_json::from_value(w).unwrap());
            assert_eq!(s.conditions, want, "{name}");
        }
    }

    #[test]
    fn status_changes_are_detected_modulo_omitted_zeros() {
        let stored: ReplicaSetStatus = serde_json::from_value(json!({
            "replicas": 2, "readyReplicas": 2, "availableReplicas": 2, "fullyLabeledReplicas": 2,
            "observedGeneration": 3, "terminatingReplicas": 0
        }))
        .unwrap();
        let mut same = stored.clone();
        same.conditions = Some(vec![]);
        assert!(!status_changed(Some(&stored), &same));

        let zero: ReplicaSetStatus = serde_json::from_value(json!({
            "replicas": 0, "terminatingReplicas": 0
        }))
        .unwrap();
        let mut explicit = zero.clone();
        explicit.ready_replicas = Some(0);
        explicit.observed_generation = Some(0);
        assert!(!status_changed(Some(&zero), &explicit));

        let mut no_terminating = stored.clone();
        no_terminating.terminating_replicas = None;
        assert!(status_changed(Some(&stored), &no_terminating));

        let mut newer = stored.clone();
        newer.observed_generation = Some(4);
        assert!(status_changed(Some(&stored), &newer));
        assert!(status_changed(None, &stored));
    }

    #[test]
    fn next_check_is_when_the_first_pod_becomes_available() {
        let pods = vec![
            pod(json!({}), Some("2026-01-01T11:59:58Z")), // 8 s left
            pod(json!({}), Some("2026-01-01T11:59:55Z")), // 5 s left
            pod(json!({}), Some("2026-01-01T11:00:00Z")), // available
            pod(json!({}), None),
        ];
        assert_eq!(
            next_availability_check(&pods, 10, now()),
            Some(Duration::from_secs(5))
        );
        assert_eq!(next_availability_check(&pods, 0, now()), None);
        assert_eq!(next_availability_check(&pods[2..], 10, now()), None);
    }
}
