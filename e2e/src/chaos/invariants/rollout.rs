//! A Deployment's rollout bounds: never more pods than `replicas + maxSurge`,
//! never fewer available than `replicas − maxUnavailable`.

use std::collections::HashSet;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{Invariant, Violation, object_name};

/// An absolute or percentage bound resolved against `replicas`, rounding
/// up (surge) or down (unavailable) as upstream's `ResolveFenceposts`.
fn resolve(value: Option<&IntOrString>, replicas: i32, round_up: bool) -> i32 {
    match value {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let percent: i64 = s.trim_end_matches('%').parse().unwrap_or(25);
            let scaled = percent * i64::from(replicas);
            (if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            }) as i32
        }
        None => resolve(Some(&IntOrString::String("25%".into())), replicas, round_up),
    }
}

/// (maxSurge, maxUnavailable) of a Deployment's strategy.
pub fn fenceposts(deployment: &Deployment) -> (i32, i32) {
    let spec = &deployment.spec;
    let replicas = spec.replicas.unwrap_or(1);
    let strategy = spec.strategy.as_ref();
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return (0, replicas);
    }
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
    let surge = resolve(rolling.and_then(|r| r.max_surge.as_ref()), replicas, true);
    let unavailable = resolve(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        replicas,
        false,
    );
    // Both zero would block every rollout: upstream lets one be unavailable.
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Each live Deployment's active pods (those of the ReplicaSets it
/// controls) within its surge, and its available pods above its floor.
/// Availability is judged as readiness, so Deployments with
/// `minReadySeconds` get only the upper bound checked.
pub fn deployments_within_surge_and_availability(
    deployments: &[Deployment],
    replica_sets: &[ReplicaSet],
    pods: &[Pod],
) -> Vec<Violation> {
    let mut found = vec![];
    for deployment in deployments {
        let spec = &deployment.spec;
        if deployment.metadata.deletion_timestamp.is_some() || spec.paused == Some(true) {
            continue;
        }
        let Some(uid) = deployment.uid() else {
            continue;
        };
        let sets: HashSet<String> = replica_sets
            .iter()
            .filter(|rs| {
                rs.owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && o.uid == uid)
            })
            .filter_map(|rs| rs.uid())
            .collect();
        let mine: Vec<&Pod> = pods
            .iter()
            .filter(|p| active(p))
            .filter(|p| {
                p.owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && sets.contains(&o.uid))
            })
            .collect();
        let replicas = spec.replicas.unwrap_or(1);
        let (surge, unavailable) = fenceposts(deployment);
        let count = mine.len() as i32;
        if count > replicas + surge {
            found.push(Violation::new(
                Invariant::DeploymentBounds,
                vec![object_name(deployment)],
                format!("{count} pods > replicas {replicas} + maxSurge {surge}"),
            ));
        }
        let floor = replicas - unavailable;
        let available = mine.iter().filter(|p| ready(p)).count() as i32;
        if spec.min_ready_seconds.unwrap_or(0) == 0 && available < floor {
            found.push(Violation::new(
                Invariant::DeploymentBounds,
                vec![object_name(deployment)],
                format!(
                    "{available} available < replicas {replicas} − maxUnavailable {unavailable}"
                ),
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{from, owner};
    use super::*;
    use serde_json::{Value, json};

    fn deployment(replicas: i32, strategy: Value) -> Deployment {
        from(json!({
            "metadata": {"name": "d", "namespace": "ns", "uid": "d1"},
            "spec": {"replicas": replicas, "strategy": strategy, "selector": {}, "template": {}},
        }))
    }

    fn rs(uid: &str) -> ReplicaSet {
        from(
            json!({"metadata": {"name": format!("d-{uid}"), "namespace": "ns", "uid": uid,
                                 "ownerReferences": [owner("Deployment", "d", "d1")]},
                    "spec": {"selector": {}}}),
        )
    }

    fn pods(n: usize, rs: &str, ready: bool) -> Vec<Pod> {
        (0..n)
            .map(|i| {
                from(json!({
                    "metadata": {"name": format!("{rs}-{i}"), "namespace": "ns",
                                 "uid": format!("{rs}-{i}"),
                                 "ownerReferences": [owner("ReplicaSet", &format!("d-{rs}"), rs)]},
                    "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
                }))
            })
            .collect()
    }

    #[test]
    fn resolves_percentages_as_upstream() {
        assert_eq!(fenceposts(&deployment(10, json!({}))), (3, 2));
        assert_eq!(
            fenceposts(&deployment(
                4,
                json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}})
            )),
            (0, 1)
        );
        assert_eq!(
            fenceposts(&deployment(4, json!({"type": "Recreate"}))),
            (0, 4)
        );
    }

    #[test]
    fn a_rollout_within_its_fenceposts_passes() {
        // 4 replicas, 25 %: surge 1, unavailable 1 → at most 5 pods, 3 available.
        let mut all = pods(3, "old", true);
        all.extend(pods(2, "new", false));
        let found = deployments_within_surge_and_availability(
            &[deployment(4, json!({}))],
            &[rs("old"), rs("new")],
            &all,
        );
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn too_many_pods_are_caught() {
        let mut all = pods(4, "old", true);
        all.extend(pods(2, "new", false));
        let found = deployments_within_surge_and_availability(
            &[deployment(4, json!({}))],
            &[rs("old"), rs("new")],
            &all,
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].objects, ["Deployment/ns/d"]);
        assert!(
            found[0]
                .detail
                .starts_with("6 pods > replicas 4 + maxSurge 1")
        );
    }

    #[test]
    fn too_few_available_are_caught() {
        let mut all = pods(2, "old", true);
        all.extend(pods(2, "new", false));
        let found = deployments_within_surge_and_availability(
            &[deployment(4, json!({}))],
            &[rs("old"), rs("new")],
            &all,
        );
        assert_eq!(found.len(), 1);
        assert!(
            found[0].detail.starts_with("2 available < replicas 4"),
            "{}",
            found[0].detail
        );
    }

    #[test]
    fn pods_of_other_deployments_and_terminating_pods_do_not_count() {
        let mut all = pods(4, "old", true);
        let mut stranger = pods(3, "x", false);
        for p in &mut stranger {
            p.metadata.owner_references = Some(vec![from(owner("ReplicaSet", "other", "o1"))]);
        }
        all.extend(stranger);
        let mut leaving = pods(2, "gone", false);
        for p in &mut leaving {
            p.metadata.deletion_timestamp = Some(from(json!("2026-12-06T10:00:00Z")));
        }
        all.extend(leaving);
        let found = deployments_within_surge_and_availability(
            &[deployment(4, json!({}))],
            &[rs("old"), rs("gone")],
            &all,
        );
        assert!(found.is_empty(), "{found:?}");
    }
}
