//! A Deployment's status as upstream computes it (sync.go's
//! calculateStatus, progress.go's syncRolloutStatus and
//! requeueStuckDeployment, the progress helpers of deployment_util.go).
//! Pure: ReplicaSets and the clock in, a status or a delay out.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};

use super::conditions::{self as cond, FALSE, PROGRESSING, TRUE, UNKNOWN};
use super::rolling::max_unavailable;
use super::sets::{
    available_replicas, desired, is_paused, ready_replicas, status_replicas, sum_spec, sum_status,
};

/// Whether progressDeadlineSeconds applies (unset or MaxInt32 means never).
pub fn has_progress_deadline(d: &Deployment) -> bool {
    matches!(d.spec.progress_deadline_seconds, Some(s) if s != i32::MAX)
}

/// Whether old ReplicaSets are cleaned up (MaxInt32 keeps them all).
pub fn has_revision_history_limit(d: &Deployment) -> bool {
    matches!(d.spec.revision_history_limit, Some(l) if l != i32::MAX)
}

fn int(v: Option<i32>) -> i32 {
    v.unwrap_or(0)
}

/// The status fields the apiserver omits when zero (Go's `omitempty` on
/// non-pointer fields) as `None`, so computed and stored statuses compare
/// equal when upstream's would.
pub fn normalize(mut status: DeploymentStatus) -> DeploymentStatus {
    fn zero_none<T: Default + PartialEq>(v: &mut Option<T>) {
        if v.as_ref() == Some(&T::default()) {
            *v = None;
        }
    }
    zero_none(&mut status.observed_generation);
    zero_none(&mut status.replicas);
    zero_none(&mut status.updated_replicas);
    zero_none(&mut status.ready_replicas);
    zero_none(&mut status.available_replicas);
    zero_none(&mut status.unavailable_replicas);
    if let Some(conditions) = status.conditions.as_mut() {
        for c in conditions.iter_mut() {
            zero_none(&mut c.reason);
            zero_none(&mut c.message);
        }
    }
    if status.conditions.as_ref().is_some_and(Vec::is_empty) {
        status.conditions = None;
    }
    status
}

/// Whether writing `new` would change the Deployment's status.
pub fn same_status(d: &Deployment, new: &DeploymentStatus) -> bool {
    normalize(d.status.clone().unwrap_or_default()) == normalize(new.clone())
}

/// Pods being deleted, once every set that has been synced reports them
/// (`GetTerminatingReplicaCountForReplicaSets`).
fn terminating_replicas(all: &[&ReplicaSet]) -> Option<i32> {
    let mut total: i32 = 0;
    for rs in all {
        let status = rs.status.as_ref();
        let observed = status.and_then(|s| s.observed_generation).unwrap_or(0);
        match status.and_then(|s| s.terminating_replicas) {
            None if observed == 0 => {}
            None => return None,
            Some(n) => total = total.saturating_add(n),
        }
    }
    Some(total)
}

/// The status the ReplicaSets imply, with the Available condition updated
/// (`calculateStatus`; DeploymentReplicaSetTerminatingReplicas is on by
/// default in v1.37).
pub fn calculate_status(
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> DeploymentStatus {
    let available = sum_status(all, available_replicas);
    let unavailable = (sum_spec(all.iter().copied()) - available).max(0);
    let current = d.status.as_ref();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(sum_status(all, status_replicas)),
        updated_replicas: Some(new.map_or(0, status_replicas)),
        ready_replicas: Some(sum_status(all, ready_replicas)),
        available_replicas: Some(available),
        unavailable_replicas: Some(unavailable),
        terminating_replicas: terminating_replicas(all),
        collision_count: current.and_then(|s| s.collision_count),
        conditions: current.and_then(|s| s.conditions.clone()),
    };
    let available_condition = if available >= desired(d) - max_unavailable(d) {
        cond::new_condition(
            cond::AVAILABLE,
            TRUE,
            cond::MINIMUM_REPLICAS_AVAILABLE,
            "Deployment has minimum availability.",
            now,
        )
    } else {
        cond::new_condition(
            cond::AVAILABLE,
            FALSE,
            cond::MINIMUM_REPLICAS_UNAVAILABLE,
            "Deployment does not have minimum availability.",
            now,
        )
    };
    cond::set(&mut status, available_condition);
    normalize(status)
}

/// Every desired replica is updated and available, no old pod is left, and
/// the latest spec has been observed.
pub fn deployment_complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let replicas = desired(d);
    int(status.updated_replicas) == replicas
        && int(status.replicas) == replicas
        && int(status.available_replicas) == replicas
        && status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Progress since the stored status: new pods added, old pods gone, or
/// more pods ready or available.
pub fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = int(old.replicas) - int(old.updated_replicas);
    let new_old = int(new.replicas) - int(new.updated_replicas);
    int(new.updated_replicas) > int(old.updated_replicas)
        || new_old < old_old
        || int(new.ready_replicas) > int(old.ready_replicas)
        || int(new.available_replicas) > int(old.available_replicas)
}

fn last_update(c: &DeploymentCondition) -> Timestamp {
    c.last_update_time.as_ref().map_or(Timestamp::MIN, |t| t.0)
}

fn deadline(d: &Deployment) -> SignedDuration {
    SignedDuration::from_secs(i64::from(d.spec.progress_deadline_seconds.unwrap_or(0)))
}

/// No progress reported within progressDeadlineSeconds of the last one.
pub fn deployment_timed_out(d: &Deployment, status: &DeploymentStatus, now: Timestamp) -> bool {
    if !has_progress_deadline(d) {
        return false;
    }
    let Some(c) = cond::get(Some(status), PROGRESSING) else {
        return false;
    };
    match cond::reason(c) {
        // A finished rollout is never late; a late one stays late.
        cond::NEW_RS_AVAILABLE => false,
        cond::TIMED_OUT => true,
        _ => last_update(c)
            .checked_add(deadline(d))
            .is_ok_and(|due| due < now),
    }
}

/// The status to write after a rollout step (`syncRolloutStatus`): the
/// computed status with the Progressing condition advanced and the new
/// set's (or else any set's) ReplicaFailure condition mirrored.
pub fn rollout_status(
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> DeploymentStatus {
    let mut status = calculate_status(all, new, d, now);
    if !has_progress_deadline(d) {
        cond::remove(&mut status, PROGRESSING);
    }
    let current = cond::get(d.status.as_ref(), PROGRESSING).cloned();
    // A finished rollout being resynced: nothing to estimate.
    let finished = int(status.replicas) == int(status.updated_replicas)
        && current
            .as_ref()
            .is_some_and(|c| cond::reason(c) == cond::NEW_RS_AVAILABLE);
    if has_progress_deadline(d) && !finished {
        let subject = |what: &str| match new {
            Some(rs) => format!(
                "ReplicaSet \"{}\" {what}",
                rs.metadata.name.as_deref().unwrap_or_default()
            ),
            None => format!(
                "Deployment \"{}\" {what}",
                d.metadata.name.as_deref().unwrap_or_default()
            ),
        };
        if deployment_complete(d, &status) {
            let c = cond::new_condition(
                PROGRESSING,
                TRUE,
                cond::NEW_RS_AVAILABLE,
                subject("has successfully progressed."),
                now,
            );
            cond::set(&mut status, c);
        } else if deployment_progressing(d, &status) {
            let mut c = cond::new_condition(
                PROGRESSING,
                TRUE,
                cond::REPLICA_SET_UPDATED,
                subject("is progressing."),
                now,
            );
            // Progress refreshes lastUpdateTime even when the reason stays,
            // which `set` alone would not do.
            if let Some(current) = &current {
                if current.status.as_deref() == Some(TRUE) {
                    c.last_transition_time = current.last_transition_time.clone();
                }
                cond::remove(&mut status, PROGRESSING);
            }
            cond::set(&mut status, c);
        } else if deployment_timed_out(d, &status, now) {
            let c = cond::new_condition(
                PROGRESSING,
                FALSE,
                cond::TIMED_OUT,
                subject("has timed out progressing."),
                now,
            );
            cond::set(&mut status, c);
        }
    }
    match replica_failure(all, new) {
        Some(c) => cond::set(&mut status, c),
        None => cond::remove(&mut status, cond::REPLICA_FAILURE),
    }
    normalize(status)
}

/// The ReplicaFailure condition to mirror: the new set's first, else the
/// first of any set.
fn replica_failure(all: &[&ReplicaSet], new: Option<&ReplicaSet>) -> Option<DeploymentCondition> {
    let failure = |rs: &ReplicaSet| {
        rs.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_.as_deref() == Some(cond::REPLICA_FAILURE))
            .map(cond::from_replica_set)
    };
    new.and_then(failure)
        .or_else(|| all.iter().find_map(|rs| failure(rs)))
}

/// When to look again at a rollout that made no progress, so that
/// ProgressDeadlineExceeded is reported on time (`requeueStuckDeployment`).
/// None when there is no deadline to watch.
pub fn requeue_after(d: &Deployment, new: &DeploymentStatus, now: Timestamp) -> Option<Duration> {
    let current = cond::get(d.status.as_ref(), PROGRESSING)?;
    if !has_progress_deadline(d)
        || deployment_complete(d, new)
        || cond::reason(current) == cond::TIMED_OUT
    {
        return None;
    }
    let due = last_update(current).checked_add(deadline(d)).ok()?;
    let left = now.duration_until(due);
    if left >= SignedDuration::from_secs(1) {
        // A second more so the deadline has surely passed on the next look.
        return Duration::try_from(left + SignedDuration::from_secs(1)).ok();
    }
    if left.is_positive() {
        // The deadline is strict (`due < now`): just past it is enough.
        return Duration::try_from(left)
            .ok()
            .map(|d| d + Duration::from_millis(5));
    }
    // Overdue yet not timed out: only a finished rollout that lost
    // availability gets here, and only ReplicaSet changes (which enqueue the
    // Deployment anyway) can move it. Upstream re-queues at once, rate
    // limited; a steady second does the same without spinning.
    Some(Duration::from_secs(1))
}

/// The Progressing condition pausing or resuming sets, so time spent paused
/// never counts against progressDeadlineSeconds (`checkPausedConditions`).
pub fn paused_condition(d: &Deployment, now: Timestamp) -> Option<DeploymentCondition> {
    if !has_progress_deadline(d) {
        return None;
    }
    let current = cond::get(d.status.as_ref(), PROGRESSING);
    if current.is_some_and(|c| cond::reason(c) == cond::TIMED_OUT) {
        return None;
    }
    let paused_recorded = current.is_some_and(|c| cond::reason(c) == cond::PAUSED);
    match (is_paused(d), paused_recorded) {
        (true, false) => Some(cond::new_condition(
            PROGRESSING,
            UNKNOWN,
            cond::PAUSED,
            "Deployment is paused",
            now,
        )),
        (false, true) => Some(cond::new_condition(
            PROGRESSING,
            UNKNOWN,
            cond::RESUMED,
            "Deployment is resumed",
            now,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::sets::all_sets;
    use super::super::sets::fixtures::*;
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn with_deadline(mut d: Deployment, secs: i32) -> Deployment {
        d.spec.progress_deadline_seconds = Some(secs);
        d
    }

    fn with_progressing(mut d: Deployment, status: &str, reason: &str, updated: i64) -> Deployment {
        let st = d.status.get_or_insert_default();
        let mut c = cond::new_condition(PROGRESSING, status, reason, "m", at(updated));
        c.last_transition_time = Some(Time(at(1)));
        cond::set(st, c);
        d
    }

    fn reason_of(status: &DeploymentStatus, type_: &str) -> Option<String> {
        cond::get(Some(status), type_).and_then(|c| c.reason.clone())
    }

    #[test]
    fn status_sums_sets_and_reports_availability() {
        let d = rolling(10, 3, 2);
        let old = [rs("old", 1, 5, 4)];
        let new = rs("new", 2, 4, 3);
        let all = all_sets(&old, Some(&new));
        let st = calculate_status(&all, Some(&new), &d, at(100));
        assert_eq!(st.observed_generation, Some(1));
        assert_eq!(st.replicas, Some(9));
        assert_eq!(st.updated_replicas, Some(4));
        assert_eq!(st.ready_replicas, Some(7));
        assert_eq!(st.available_replicas, Some(7));
        assert_eq!(st.unavailable_replicas, Some(2));
        assert_eq!(
            st.terminating_replicas,
            Some(0),
            "never-synced sets count 0"
        );
        // 7 available < 10 - 2.
        assert_eq!(
            reason_of(&st, cond::AVAILABLE).as_deref(),
            Some(cond::MINIMUM_REPLICAS_UNAVAILABLE)
        );

        let new = rs("new", 2, 4, 4);
        let all = all_sets(&old, Some(&new));
        let st = calculate_status(&all, Some(&new), &d, at(100));
        assert_eq!(
            reason_of(&st, cond::AVAILABLE).as_deref(),
            Some(cond::MINIMUM_REPLICAS_AVAILABLE)
        );
    }

    #[test]
    fn zero_counts_are_omitted_and_unavailable_never_negative() {
        let d = rolling(0, 1, 1);
        let st = calculate_status(&[], None, &d, at(1));
        assert_eq!(st.replicas, None);
        assert_eq!(st.unavailable_replicas, None);
        let surplus = [rs("a", 1, 1, 3)];
        let all: Vec<_> = surplus.iter().collect();
        let st = calculate_status(&all, None, &d, at(1));
        assert_eq!(st.unavailable_replicas, None);
    }

    #[test]
    fn terminating_replicas_need_every_synced_set_to_report() {
        let mut a = rs("a", 1, 1, 1);
        let mut b = rs("b", 2, 1, 1);
        let status = |rs: &mut ReplicaSet| rs.status.as_mut().unwrap().clone();
        let mut sa = status(&mut a);
        sa.observed_generation = Some(1);
        sa.terminating_replicas = Some(2);
        a.status = Some(sa);
        let mut sb = status(&mut b);
        sb.observed_generation = Some(1);
        b.status = Some(sb.clone());
        assert_eq!(terminating_replicas(&[&a, &b]), None);
        sb.terminating_replicas = Some(1);
        b.status = Some(sb);
        assert_eq!(terminating_replicas(&[&a, &b]), Some(3));
    }

    #[test]
    fn complete_and_progressing_compare_statuses() {
        let mut d = rolling(3, 1, 1);
        let full = DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(3),
            updated_replicas: Some(3),
            available_replicas: Some(3),
            ..Default::default()
        };
        assert!(deployment_complete(&d, &full));
        d.metadata.generation = Some(2);
        assert!(
            !deployment_complete(&d, &full),
            "new generation not observed"
        );

        d.status = Some(DeploymentStatus {
            replicas: Some(4),
            updated_replicas: Some(1),
            ready_replicas: Some(3),
            available_replicas: Some(3),
            ..Default::default()
        });
        let same = d.status.clone().unwrap();
        assert!(!deployment_progressing(&d, &same));
        let cases = [
            DeploymentStatus {
                updated_replicas: Some(2),
                ..same.clone()
            },
            DeploymentStatus {
                replicas: Some(3),
                ..same.clone()
            },
            DeploymentStatus {
                ready_replicas: Some(4),
                ..same.clone()
            },
            DeploymentStatus {
                available_replicas: Some(4),
                ..same.clone()
            },
        ];
        for st in cases {
            assert!(deployment_progressing(&d, &st), "{st:?}");
        }
    }

    #[test]
    fn timing_out_needs_a_deadline_and_an_old_condition() {
        let d = with_deadline(rolling(3, 1, 1), 60);
        let st = |d: &Deployment| d.status.clone().unwrap_or_default();
        let cases = [
            (rolling(3, 1, 1), 1000, false, "no deadline"),
            (d.clone(), 1000, false, "no condition"),
            (
                with_progressing(d.clone(), TRUE, cond::REPLICA_SET_UPDATED, 100),
                161,
                true,
                "late",
            ),
            (
                with_progressing(d.clone(), TRUE, cond::REPLICA_SET_UPDATED, 100),
                160,
                false,
                "exactly due",
            ),
            (
                with_progressing(d.clone(), TRUE, cond::NEW_RS_AVAILABLE, 100),
                1000,
                false,
                "finished",
            ),
            (
                with_progressing(d.clone(), FALSE, cond::TIMED_OUT, 100),
                101,
                true,
                "already late",
            ),
        ];
        for (d, now, want, name) in cases {
            assert_eq!(deployment_timed_out(&d, &st(&d), at(now)), want, "{name}");
        }
    }

    #[test]
    fn rollout_status_moves_the_progressing_condition() {
        let base = with_deadline(rolling(2, 1, 0), 60);
        let old = [rs("old", 1, 1, 1)];
        let new = rs("new", 2, 2, 1);
        let all = all_sets(&old, Some(&new));

        // Progress made: ReplicaSetUpdated, keeping the transition time.
        let d = with_progressing(base.clone(), TRUE, cond::NEW_REPLICA_SET, 100);
        let st = rollout_status(&all, Some(&new), &d, at(130));
        let c = cond::get(Some(&st), PROGRESSING).unwrap();
        assert_eq!(cond::reason(c), cond::REPLICA_SET_UPDATED);
        assert_eq!(
            c.message.as_deref(),
            Some("ReplicaSet \"new\" is progressing.")
        );
        assert_eq!(c.last_transition_time, Some(Time(at(1))));
        assert_eq!(c.last_update_time, Some(Time(at(130))));

        // No progress since the stored status, past the deadline: timed out.
        let mut d = with_progressing(base.clone(), TRUE, cond::REPLICA_SET_UPDATED, 100);
        let mut stored = d.status.take().unwrap();
        let computed = calculate_status(&all, Some(&new), &base, at(100));
        stored.replicas = computed.replicas;
        stored.updated_replicas = computed.updated_replicas;
        stored.ready_replicas = computed.ready_replicas;
        stored.available_replicas = computed.available_replicas;
        d.status = Some(stored);
        let st = rollout_status(&all, Some(&new), &d, at(161));
        let c = cond::get(Some(&st), PROGRESSING).unwrap();
        assert_eq!(cond::reason(c), cond::TIMED_OUT);
        assert_eq!(c.status.as_deref(), Some(FALSE));
        assert_eq!(
            c.message.as_deref(),
            Some("ReplicaSet \"new\" has timed out progressing.")
        );
        // Before the deadline: unchanged, and a look is due when it passes.
        let st = rollout_status(&all, Some(&new), &d, at(130));
        assert_eq!(
            reason_of(&st, PROGRESSING).as_deref(),
            Some(cond::REPLICA_SET_UPDATED)
        );
        assert_eq!(
            requeue_after(&d, &st, at(130)),
            Some(Duration::from_secs(31))
        );

        // Complete: NewReplicaSetAvailable.
        let done = [rs("new", 2, 2, 2)];
        let all: Vec<_> = done.iter().collect();
        let d = with_progressing(base.clone(), TRUE, cond::REPLICA_SET_UPDATED, 100);
        let st = rollout_status(&all, Some(&done[0]), &d, at(130));
        let c = cond::get(Some(&st), PROGRESSING).unwrap();
        assert_eq!(cond::reason(c), cond::NEW_RS_AVAILABLE);
        assert_eq!(
            c.message.as_deref(),
            Some("ReplicaSet \"new\" has successfully progressed.")
        );
        assert_eq!(requeue_after(&d, &st, at(130)), None);

        // Without a deadline there is no Progressing condition at all.
        let d = with_progressing(rolling(2, 1, 0), TRUE, cond::REPLICA_SET_UPDATED, 100);
        let st = rollout_status(&all, Some(&done[0]), &d, at(130));
        assert!(cond::get(Some(&st), PROGRESSING).is_none());
    }

    #[test]
    fn replica_failures_prefer_the_new_set() {
        let failing = |name: &str, reason: &str| {
            let mut set = rs(name, 1, 1, 0);
            set.status.as_mut().unwrap().conditions =
                Some(vec![k8s_openapi::api::apps::v1::ReplicaSetCondition {
                    type_: Some(cond::REPLICA_FAILURE.into()),
                    status: Some(TRUE.into()),
                    reason: Some(reason.into()),
                    ..Default::default()
                }]);
            set
        };
        let d = rolling(1, 1, 0);
        let old = [failing("old", "OldFailure")];
        let new = failing("new", "NewFailure");
        let all = all_sets(&old, Some(&new));
        let st = rollout_status(&all, Some(&new), &d, at(1));
        assert_eq!(
            reason_of(&st, cond::REPLICA_FAILURE).as_deref(),
            Some("NewFailure")
        );
        let healthy = rs("new", 2, 1, 1);
        let all = all_sets(&old, Some(&healthy));
        let st = rollout_status(&all, Some(&healthy), &d, at(1));
        assert_eq!(
            reason_of(&st, cond::REPLICA_FAILURE).as_deref(),
            Some("OldFailure")
        );
        let mut d = d;
        d.status = Some(st);
        let all = [&healthy];
        let st = rollout_status(&all, Some(&healthy), &d, at(1));
        assert!(cond::get(Some(&st), cond::REPLICA_FAILURE).is_none());
    }

    #[test]
    fn requeue_waits_for_the_deadline() {
        let d = with_deadline(rolling(2, 1, 0), 10);
        let st = DeploymentStatus::default();
        assert_eq!(requeue_after(&d, &st, at(100)), None, "no condition");
        let late = with_progressing(d.clone(), TRUE, cond::REPLICA_SET_UPDATED, 100);
        assert_eq!(
            requeue_after(&late, &st, at(103)),
            Some(Duration::from_secs(8))
        );
        let soon: Timestamp = "1970-01-01T00:01:49.5Z".parse().unwrap();
        assert_eq!(
            requeue_after(&late, &st, soon),
            Some(Duration::from_millis(505))
        );
        assert_eq!(
            requeue_after(&late, &st, at(200)),
            Some(Duration::from_secs(1))
        );
        let timed_out = with_progressing(d.clone(), FALSE, cond::TIMED_OUT, 100);
        assert_eq!(requeue_after(&timed_out, &st, at(103)), None);
    }

    #[test]
    fn pausing_and_resuming_set_unknown_progress() {
        let mut paused = with_deadline(rolling(1, 1, 0), 60);
        paused.spec.paused = Some(true);
        let c = paused_condition(&paused, at(5)).unwrap();
        assert_eq!(
            (c.status.as_deref(), cond::reason(&c)),
            (Some(UNKNOWN), cond::PAUSED)
        );
        assert_eq!(c.message.as_deref(), Some("Deployment is paused"));
        let recorded = with_progressing(paused.clone(), UNKNOWN, cond::PAUSED, 5);
        assert!(paused_condition(&recorded, at(6)).is_none());
        let mut resumed = recorded.clone();
        resumed.spec.paused = Some(false);
        let c = paused_condition(&resumed, at(7)).unwrap();
        assert_eq!(cond::reason(&c), cond::RESUMED);
        assert_eq!(c.message.as_deref(), Some("Deployment is resumed"));
        let late = with_progressing(paused.clone(), FALSE, cond::TIMED_OUT, 5);
        assert!(
            paused_condition(&late, at(6)).is_none(),
            "a timeout is never overwritten"
        );
        let mut no_deadline = rolling(1, 1, 0);
        no_deadline.spec.paused = Some(true);
        assert!(paused_condition(&no_deadline, at(6)).is_none());
    }

    #[test]
    fn stored_and_computed_statuses_compare_modulo_omitted_zeros() {
        let mut d = rolling(0, 1, 0);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(1),
            conditions: Some(vec![]),
            ..Default::default()
        });
        let computed = DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(0),
            available_replicas: Some(0),
            ..Default::default()
        };
        assert!(same_status(&d, &computed));
        let changed = DeploymentStatus {
            replicas: Some(1),
            ..computed
        };
        assert!(!same_status(&d, &changed));
    }
}
