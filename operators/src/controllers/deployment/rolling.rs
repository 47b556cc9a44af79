//! Rolling-update arithmetic: maxSurge/maxUnavailable, how far the new
//! ReplicaSet may grow, and how far the old ones may shrink, so that the
//! Deployment never runs more than replicas+maxSurge pods nor has fewer than
//! replicas-maxUnavailable available (upstream's rolling.go and the fencepost
//! helpers of deployment_util.go). Pure; sync.rs applies the decisions.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::sets::{
    RECREATE, ROLLING_UPDATE, available_replicas, desired, is_rolling_update, spec_replicas,
    strategy_type, sum_spec, sum_status,
};

/// An int, or a percentage of `total` rounded up or down
/// (`GetScaledValueFromIntOrPercent`).
pub fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let Some(number) = s.strip_suffix('%') else {
                return Err(format!(
                    "invalid value for IntOrString: invalid type: string is not a percentage ({s:?})"
                ));
            };
            let percent: i64 = number
                .parse()
                .map_err(|e| format!("invalid value for IntOrString: invalid value {s:?}: {e}"))?;
            let exact = percent as f64 * f64::from(total) / 100.0;
            let rounded = if round_up {
                exact.ceil()
            } else {
                exact.floor()
            };
            Ok(rounded as i32)
        }
    }
}

/// maxSurge rounds up and maxUnavailable down; when both come to 0,
/// maxUnavailable becomes 1 so a rollout can always move even where surge
/// pods cannot be created (e.g. quota). Missing values count as 0.
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), String> {
    let zero = IntOrString::Int(0);
    let surge = scaled_value(max_surge.unwrap_or(&zero), desired, true)?;
    let unavailable = scaled_value(max_unavailable.unwrap_or(&zero), desired, false)?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

fn rolling_params(d: &Deployment) -> (Option<&IntOrString>, Option<&IntOrString>) {
    let rolling = d
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    (
        rolling.and_then(|r| r.max_surge.as_ref()),
        rolling.and_then(|r| r.max_unavailable.as_ref()),
    )
}

/// Extra pods a rolling Deployment may run (0 for Recreate). Invalid values
/// are rejected by validation; upstream reads them as 0.
pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling_update(d) {
        return 0;
    }
    let (surge, unavailable) = rolling_params(d);
    resolve_fenceposts(surge, unavailable, desired(d)).map_or(0, |(s, _)| s)
}

/// Pods a rolling Deployment may have unavailable, at most all of them (0
/// for Recreate or no replicas).
pub fn max_unavailable(d: &Deployment) -> i32 {
    let replicas = desired(d);
    if !is_rolling_update(d) || replicas == 0 {
        return 0;
    }
    let (surge, unavailable) = rolling_params(d);
    let resolved = resolve_fenceposts(surge, unavailable, replicas).map_or(0, |(_, u)| u);
    resolved.min(replicas)
}

/// The size the new ReplicaSet should have during a rollout: grow towards
/// the Deployment's replicas without exceeding replicas+maxSurge pods in all
/// (`NewRSNewReplicas`).
pub fn new_rs_new_replicas(
    d: &Deployment,
    all: &[&ReplicaSet],
    new: &ReplicaSet,
) -> Result<i32, String> {
    let replicas = desired(d);
    let current_new = spec_replicas(new);
    match strategy_type(d) {
        Some(ROLLING_UPDATE) => {
            let (surge, _) = rolling_params(d);
            let surge = surge.ok_or_else(|| "nil value for IntOrString".to_string())?;
            let surge = scaled_value(surge, replicas, true)?;
            let current = sum_spec(all.iter().copied());
            let max_total = replicas.saturating_add(surge);
            if current >= max_total {
                return Ok(current_new);
            }
            let up = (max_total - current).min(replicas - current_new);
            Ok(current_new + up)
        }
        Some(RECREATE) => Ok(replicas),
        other => Err(format!(
            "deployment type {} isn't supported",
            other.unwrap_or_default()
        )),
    }
}

/// What reconcileNewReplicaSet does with the new set: nothing, shrink it to
/// the Deployment's replicas, or grow it as far as the surge allows.
pub fn new_replica_set_target(
    d: &Deployment,
    all: &[&ReplicaSet],
    new: &ReplicaSet,
) -> Result<Option<i32>, String> {
    let replicas = desired(d);
    let current = spec_replicas(new);
    if current == replicas {
        Ok(None)
    } else if current > replicas {
        Ok(Some(replicas))
    } else {
        new_rs_new_replicas(d, all, new).map(Some)
    }
}

/// How many old pods may go now: all pods, less the minimum that must stay
/// available, less the new set's pods that are not available yet (those may
/// never become available, so they must not be counted on).
pub fn max_scaled_down(d: &Deployment, all: &[&ReplicaSet], new: &ReplicaSet) -> i32 {
    let min_available = desired(d) - max_unavailable(d);
    let new_unavailable = spec_replicas(new) - available_replicas(new);
    sum_spec(all.iter().copied()) - min_available - new_unavailable
}

/// Scale-downs of old sets' unavailable replicas, oldest set first.
#[derive(Debug, Default, PartialEq)]
pub struct CleanupPlan {
    /// `(index in the old sets, new size)`, to apply in order.
    pub steps: Vec<(usize, i32)>,
    /// A set reports more available than desired replicas (its status lags
    /// a scale-down); upstream aborts the whole old-set reconcile there,
    /// after the steps before it.
    pub abort: bool,
}

/// Removes unavailable replicas of old sets first, up to `max_cleanup`: they
/// add nothing to availability, and left alone they can block a rollout
/// forever (`cleanupUnhealthyReplicas`). `old` must be oldest first.
pub fn unhealthy_cleanup(old: &[ReplicaSet], max_cleanup: i32) -> CleanupPlan {
    let mut plan = CleanupPlan::default();
    let mut total = 0;
    for (i, rs) in old.iter().enumerate() {
        if total >= max_cleanup {
            break;
        }
        let spec = spec_replicas(rs);
        let available = available_replicas(rs);
        if spec == 0 || spec == available {
            continue;
        }
        let down = (max_cleanup - total).min(spec - available);
        if down < 0 {
            plan.abort = true;
            break;
        }
        plan.steps.push((i, spec - down));
        total += down;
    }
    plan
}

/// Scale-downs of old sets, oldest first, keeping at least
/// replicas-maxUnavailable pods available
/// (`scaleDownOldReplicaSetsForRollingUpdate`). `all` gives the available
/// count, `old` (oldest first) the sets to shrink.
pub fn old_scale_down(
    d: &Deployment,
    all: &[&ReplicaSet],
    old: &[ReplicaSet],
) -> Vec<(usize, i32)> {
    let min_available = desired(d) - max_unavailable(d);
    let available = sum_status(all, available_replicas);
    if available <= min_available {
        return Vec::new();
    }
    let budget = available - min_available;
    let mut total = 0;
    let mut steps = Vec::new();
    for (i, rs) in old.iter().enumerate() {
        if total >= budget {
            break;
        }
        let spec = spec_replicas(rs);
        if spec == 0 {
            continue;
        }
        let down = spec.min(budget - total);
        steps.push((i, spec - down));
        total += down;
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::super::sets::fixtures::*;
    use super::super::sets::{all_sets, by_creation};
    use super::*;
    use serde_json::json;

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    /// maxSurge, maxUnavailable, replicas, and (surge, unavailable) or an error.
    type FencepostCase = (
        Option<IntOrString>,
        Option<IntOrString>,
        i32,
        Result<(i32, i32), ()>,
    );

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        let cases: &[FencepostCase] = &[
            (Some(pct("0%")), Some(pct("0%")), 0, Ok((0, 1))),
            (Some(pct("39%")), Some(pct("39%")), 10, Ok((4, 3))),
            (Some(pct("oops")), Some(pct("39%")), 10, Err(())),
            (Some(pct("55%")), Some(pct("urg")), 10, Err(())),
            (Some(pct("10")), None, 10, Err(())),
            (None, Some(pct("39%")), 10, Ok((0, 3))),
            (Some(pct("39%")), None, 10, Ok((4, 0))),
            (None, None, 10, Ok((0, 1))),
            (Some(pct("25%")), Some(pct("25%")), 10, Ok((3, 2))),
            (Some(pct("25%")), Some(pct("25%")), 1, Ok((1, 0))),
            (
                Some(IntOrString::Int(0)),
                Some(IntOrString::Int(0)),
                5,
                Ok((0, 1)),
            ),
            (
                Some(IntOrString::Int(2)),
                Some(IntOrString::Int(7)),
                5,
                Ok((2, 7)),
            ),
        ];
        for (surge, unavailable, desired, want) in cases {
            let got = resolve_fenceposts(surge.as_ref(), unavailable.as_ref(), *desired);
            assert_eq!(
                got.map_err(|_| ()),
                *want,
                "{surge:?} {unavailable:?} {desired}"
            );
        }
    }

    #[test]
    fn max_unavailable_is_capped_and_zero_when_not_rolling() {
        let cases = [
            (rolling(10, 0, 20), 10),
            (rolling(10, 0, 2), 2),
            (rolling(0, 1, 1), 0),
            (rolling(10, 1, 0), 0),
            (rolling(10, 0, 0), 1),
            (recreate(10), 0),
        ];
        for (d, want) in cases {
            assert_eq!(max_unavailable(&d), want, "{:?}", d.spec.strategy);
        }
        let percent = deployment(
            10,
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
        );
        assert_eq!((max_surge(&percent), max_unavailable(&percent)), (3, 2));
        assert_eq!(max_surge(&recreate(10)), 0);
    }

    #[test]
    fn new_replica_set_grows_within_the_surge() {
        // (strategy, deployment replicas, new RS replicas, maxSurge, expected)
        // with one other set of 5 replicas.
        let cases = [
            ("can not scale up", rolling(1, 1, 1), 5, 5),
            ("scale up to replicas", rolling(6, 10, 1), 2, 6),
            ("scale up to surge", rolling(10, 2, 1), 0, 7),
            ("recreate to replicas", recreate(3), 1, 3),
        ];
        let other = rs("other", 1, 5, 5);
        for (name, d, new_size, want) in cases {
            let new = rs("new", 2, new_size, 0);
            let all = [&other, &new];
            // Upstream counts only the other set here; so do its tables.
            let got = new_rs_new_replicas(&d, &all[..1], &new).unwrap();
            assert_eq!(got, want, "{name}");
        }
        let bad = deployment(1, json!({"type": "Sideways"}));
        assert!(new_rs_new_replicas(&bad, &[], &rs("n", 1, 0, 0)).is_err());
    }

    #[test]
    fn new_replica_set_target_shrinks_grows_or_stays() {
        let d = rolling(10, 3, 2);
        let old = rs("old", 1, 10, 10);
        for (new_size, want) in [(10, None), (12, Some(10)), (0, Some(3)), (2, Some(3))] {
            let new = rs("new", 2, new_size, 0);
            let all = all_sets(std::slice::from_ref(&old), Some(&new));
            assert_eq!(
                new_replica_set_target(&d, &all, &new).unwrap(),
                want,
                "{new_size}"
            );
        }
    }

    /// Both phases of reconcileOldReplicaSets, assuming every update works:
    /// the old set's size afterwards, or None when nothing moved.
    fn reconcile_old(d: &Deployment, old: ReplicaSet, new: ReplicaSet) -> Option<i32> {
        let all = [&old, &new];
        if sum_spec([&old]) == 0 || max_scaled_down(d, &all, &new) <= 0 {
            return None;
        }
        let mut olds = vec![old.clone()];
        let plan = unhealthy_cleanup(&olds, max_scaled_down(d, &all, &new));
        assert!(!plan.abort);
        let mut moved = false;
        for (i, to) in plan.steps {
            olds[i].spec.replicas = Some(to);
            moved = true;
        }
        let all = all_sets(&olds, Some(&new));
        let steps = old_scale_down(d, &all, &olds);
        for (i, to) in steps {
            olds[i].spec.replicas = Some(to);
            moved = true;
        }
        moved.then(|| spec_replicas(&olds[0]))
    }

    #[test]
    fn old_sets_shrink_within_max_unavailable() {
        // (replicas, maxUnavailable, old size, new size, old available,
        //  new available, old size afterwards)
        let cases = [
            (10, 0, 10, 0, 10, 0, Some(9)),
            (10, 2, 10, 0, 10, 0, Some(8)),
            (10, 2, 10, 0, 8, 0, Some(8)),
            (10, 2, 10, 0, 9, 0, Some(8)),
            (10, 2, 8, 2, 8, 0, None),
            (10, 2, 8, 2, 8, 2, Some(6)),
            (10, 2, 0, 10, 0, 10, None),
        ];
        for (replicas, unavailable, old_size, new_size, old_avail, new_avail, want) in cases {
            let d = rolling(replicas, 0, unavailable);
            let old = rs("old", 1, old_size, old_avail);
            let new = rs("new", 2, new_size, new_avail);
            assert_eq!(
                reconcile_old(&d, old, new),
                want,
                "{replicas} {unavailable} {old_size} {new_size} {old_avail} {new_avail}"
            );
        }
    }

    #[test]
    fn unhealthy_replicas_go_first_up_to_the_budget() {
        // (old size, available, budget, cleaned)
        for (size, available, budget, cleaned) in
            [(10, 8, 1, 1), (10, 8, 3, 2), (10, 8, 0, 0), (10, 10, 3, 0)]
        {
            let old = [rs("old", 1, size, available)];
            let plan = unhealthy_cleanup(&old, budget);
            let total: i32 = plan.steps.iter().map(|(_, to)| size - to).sum();
            assert_eq!(total, cleaned, "{size} {available} {budget}");
        }
        // Oldest first, and a lagging status aborts after what came before.
        let mut sets = vec![rs("b", 2, 3, 1), rs("a", 1, 2, 0), rs("c", 3, 1, 4)];
        sets.sort_by(by_creation);
        let plan = unhealthy_cleanup(&sets, 10);
        assert_eq!(plan.steps, vec![(0, 0), (1, 1)]);
        assert!(plan.abort);
    }

    #[test]
    fn old_scale_down_keeps_min_available() {
        // (replicas, maxUnavailable, available, old size, expected old size)
        let cases = [
            (10, 0, 10, 10, Some(9)),
            (10, 2, 10, 10, Some(8)),
            (10, 2, 8, 10, None),
            (10, 2, 10, 0, None),
            (10, 2, 1, 10, None),
        ];
        for (replicas, unavailable, available, size, want) in cases {
            let d = rolling(replicas, 0, unavailable);
            let old = [rs("old", 1, size, available)];
            let all: Vec<&ReplicaSet> = old.iter().collect();
            let steps = old_scale_down(&d, &all, &old);
            assert_eq!(
                steps.first().map(|(_, to)| *to),
                want,
                "{replicas} {unavailable} {available} {size}"
            );
        }
        // Oldest sets shrink first, and empty ones are skipped.
        let d = rolling(10, 0, 3);
        let old = [rs("a", 1, 0, 0), rs("b", 2, 2, 2), rs("c", 3, 5, 5)];
        let new = rs("n", 4, 6, 6);
        let all = all_sets(&old, Some(&new));
        assert_eq!(old_scale_down(&d, &all, &old), vec![(1, 0), (2, 1)]);
    }
}
