//! Scaling a Deployment that is not rolling out (a replicas change, or any
//! change while paused): one active set takes the whole size; with several,
//! the change is spread over them in proportion to their sizes, so a scale
//! during a rollout neither hastens nor stalls it (upstream's `scale` and
//! `GetReplicaSetProportion`). Pure; sync.rs applies the steps.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::annotations;
use super::rolling::max_surge;
use super::sets::{
    available_replicas, by_creation, by_size_newer, by_size_older, desired, is_active,
    is_rolling_update, spec_replicas, sum_spec,
};

/// One ReplicaSet resize. `force` also refreshes its desired/max replicas
/// annotations when the size stays.
#[derive(Debug, PartialEq)]
pub struct ScaleStep<'a> {
    pub rs: &'a ReplicaSet,
    pub to: i32,
    pub force: bool,
}

/// The only active set, or the newest set when none is active; None when
/// several are active (`FindActiveOrLatest`).
pub fn find_active_or_latest<'a>(
    new: Option<&'a ReplicaSet>,
    old: &'a [ReplicaSet],
) -> Option<&'a ReplicaSet> {
    let mut active = old.iter().chain(new).filter(|rs| is_active(rs));
    match (active.next(), active.next()) {
        (Some(only), None) => Some(only),
        (Some(_), Some(_)) => None,
        (None, _) => new.or_else(|| old.iter().max_by(|a, b| by_creation(a, b))),
    }
}

/// The new set holds every desired replica, knows it, and has them all
/// available (`IsSaturated`).
pub fn is_saturated(d: &Deployment, rs: Option<&ReplicaSet>) -> bool {
    let Some(rs) = rs else {
        return false;
    };
    let Some(recorded) = rs
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::DESIRED_REPLICAS))
        .and_then(|v| v.parse::<i64>().ok())
    else {
        return false;
    };
    let replicas = desired(d);
    spec_replicas(rs) == replicas
        && recorded as i32 == replicas
        && available_replicas(rs) == replicas
}

/// The replicas a set gains (or loses, negative) when the Deployment's
/// maximum size goes from what the set last saw (its max-replicas
/// annotation) to replicas+maxSurge now (`getReplicaSetFraction`).
pub fn replica_set_fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    let replicas = desired(d);
    let size = spec_replicas(rs);
    if replicas == 0 {
        return -size;
    }
    let max_now = replicas.saturating_add(max_surge(d));
    let max_before = match annotations::max_replicas(rs) {
        Some(n) if n != 0 => n,
        // Annotation missing or zeroed by someone else: assume the
        // Deployment's current size, which at least stays within bounds.
        _ => match d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0) {
            0 => return 0,
            n => n,
        },
    };
    let scaled = (i64::from(size) * i64::from(max_now)) as f64 / f64::from(max_before);
    // Go's math.Round: halves away from zero, as f64::round.
    (scaled.round() as i32).saturating_sub(size)
}

/// A set's share of `to_add`, never taking more than what is left of it
/// after `added` (`GetReplicaSetProportion`).
pub fn replica_set_proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if spec_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = replica_set_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// The resizes a scaling event calls for.
pub fn plan_scale<'a>(
    d: &Deployment,
    new: Option<&'a ReplicaSet>,
    old: &'a [ReplicaSet],
) -> Vec<ScaleStep<'a>> {
    let replicas = desired(d);
    if new.is_none() && old.is_empty() {
        return Vec::new();
    }
    if let Some(rs) = find_active_or_latest(new, old) {
        if spec_replicas(rs) == replicas {
            return Vec::new();
        }
        return vec![ScaleStep {
            rs,
            to: replicas,
            force: false,
        }];
    }
    // A saturated new set (e.g. after adopting sets mid-rollout) leaves
    // nothing for the old ones.
    if is_saturated(d, new) {
        return old
            .iter()
            .filter(|rs| is_active(rs))
            .map(|rs| ScaleStep {
                rs,
                to: 0,
                force: false,
            })
            .collect();
    }
    if !is_rolling_update(d) {
        return Vec::new();
    }
    // Upstream lists the old sets newest first here (a side effect of
    // FindActiveOrLatest); the order only matters when nothing is added.
    let mut sets: Vec<&ReplicaSet> = old.iter().chain(new).filter(|rs| is_active(rs)).collect();
    sets.sort_by(|a, b| by_creation(b, a));
    if let Some(pos) = new.and_then(|n| sets.iter().position(|rs| std::ptr::eq(*rs, n))) {
        let n = sets.remove(pos);
        sets.push(n);
    }
    let allowed = if replicas > 0 {
        replicas.saturating_add(max_surge(d))
    } else {
        0
    };
    let to_add = allowed - sum_spec(sets.iter().copied());
    // Growing, larger then newer sets take first; shrinking, larger then
    // older sets give first.
    if to_add > 0 {
        sets.sort_by(|a, b| by_size_newer(a, b));
    } else if to_add < 0 {
        sets.sort_by(|a, b| by_size_older(a, b));
    }
    let mut added = 0;
    let mut sizes: Vec<i32> = Vec::with_capacity(sets.len());
    for rs in &sets {
        if to_add == 0 {
            sizes.push(spec_replicas(rs));
        } else {
            let share = replica_set_proportion(rs, d, to_add, added);
            sizes.push(spec_replicas(rs) + share);
            added += share;
        }
    }
    // Rounding leftovers go to the largest set.
    if to_add != 0
        && let Some(first) = sizes.first_mut()
    {
        *first = (*first + to_add - added).max(0);
    }
    sets.into_iter()
        .zip(sizes)
        .map(|(rs, to)| ScaleStep {
            rs,
            to,
            force: true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::annotations::{DESIRED_REPLICAS, MAX_REPLICAS};
    use super::super::sets::fixtures::*;
    use super::*;
    use kube::ResourceExt;

    fn sized(name: &str, created: i64, spec: i32, max: i32) -> ReplicaSet {
        let max = max.to_string();
        annotate(
            rs(name, created, spec, spec),
            &[(MAX_REPLICAS, max.as_str())],
        )
    }

    fn steps(plan: &[ScaleStep<'_>]) -> Vec<(String, i32, bool)> {
        plan.iter()
            .map(|s| (s.rs.name_any(), s.to, s.force))
            .collect()
    }

    #[test]
    fn fractions_follow_the_max_replicas_annotation() {
        // (replicas, status replicas, maxSurge, set size, max-replicas, fraction)
        let cases = [
            (0, 0, 0, 10, None, -10),
            (10, 0, 0, 5, None, 0),
            (10, 0, 0, 5, Some("0"), 0),
            (120, 100, 0, 50, None, 10),
            (120, 100, 0, 50, Some("0"), 10),
            (120, 0, 0, 50, Some("100"), 10),
            (120, 0, 10, 50, Some("110"), 9),
            (10, 0, 0, 6, Some("12"), -1),
            (100, 0, 10, 50, Some("130"), -8),
        ];
        for (replicas, status_replicas, surge, size, max, want) in cases {
            let mut d = rolling(replicas, surge, 1);
            d.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
                replicas: Some(status_replicas),
                ..Default::default()
            });
            let mut set = rs("a", 1, size, size);
            if let Some(max) = max {
                set = annotate(set, &[(MAX_REPLICAS, max)]);
            }
            assert_eq!(
                replica_set_fraction(&set, &d),
                want,
                "{replicas} {surge} {size} {max:?}"
            );
        }
    }

    #[test]
    fn proportions_never_exceed_what_is_left() {
        let d = rolling(20, 3, 2);
        let set = sized("a", 1, 8, 13);
        assert_eq!(replica_set_proportion(&set, &d, 10, 0), 6);
        assert_eq!(replica_set_proportion(&set, &d, 10, 7), 3);
        assert_eq!(replica_set_proportion(&set, &d, 10, 10), 0);
        assert_eq!(replica_set_proportion(&rs("z", 1, 0, 0), &d, 10, 0), 0);
        let down = rolling(5, 3, 2);
        // round(8 * 8 / 13) - 8 = -3, but only -2 may go.
        assert_eq!(replica_set_proportion(&set, &down, -2, 0), -2);
    }

    #[test]
    fn one_active_set_takes_the_whole_size() {
        let d = rolling(5, 1, 1);
        let old = [rs("a", 1, 0, 0), rs("b", 2, 3, 3)];
        let plan = plan_scale(&d, None, &old);
        assert_eq!(steps(&plan), [("b".to_string(), 5, false)]);
        // Nothing active: the new set, else the newest old one.
        let idle = [rs("a", 1, 0, 0), rs("b", 2, 0, 0)];
        let new = rs("n", 3, 0, 0);
        assert_eq!(
            steps(&plan_scale(&d, Some(&new), &idle)),
            [("n".to_string(), 5, false)]
        );
        assert_eq!(
            steps(&plan_scale(&d, None, &idle)),
            [("b".to_string(), 5, false)]
        );
        let done = [rs("a", 1, 5, 5)];
        assert!(plan_scale(&d, None, &done).is_empty());
        assert!(plan_scale(&d, None, &[]).is_empty());
    }

    #[test]
    fn a_saturated_new_set_empties_the_old_ones() {
        let d = rolling(3, 1, 1);
        let new = annotate(rs("n", 3, 3, 3), &[(DESIRED_REPLICAS, "3")]);
        let old = [rs("a", 1, 2, 2), rs("b", 2, 0, 0)];
        assert!(is_saturated(&d, Some(&new)));
        assert_eq!(
            steps(&plan_scale(&d, Some(&new), &old)),
            [("a".to_string(), 0, false)]
        );
        let not_ready = annotate(rs("n", 3, 3, 2), &[(DESIRED_REPLICAS, "3")]);
        assert!(!is_saturated(&d, Some(&not_ready)));
        assert!(!is_saturated(&d, Some(&rs("n", 3, 3, 3))), "no annotation");
    }

    #[test]
    fn scaling_mid_rollout_is_proportional() {
        // 10 → 20 replicas, maxSurge 3, stalled at 8 old : 5 new (both saw 13).
        let d = rolling(20, 3, 2);
        let old = [sized("old", 1, 8, 13)];
        let new = sized("new", 2, 5, 13);
        let plan = plan_scale(&d, Some(&new), &old);
        assert_eq!(
            steps(&plan),
            [("old".to_string(), 14, true), ("new".to_string(), 9, true)]
        );
        // Back down to 5 (8 allowed): the larger (old) set gives first.
        let d = rolling(5, 3, 2);
        let old = [sized("old", 1, 14, 23)];
        let new = sized("new", 2, 9, 23);
        let plan = plan_scale(&d, Some(&new), &old);
        assert_eq!(
            steps(&plan),
            [("old".to_string(), 5, true), ("new".to_string(), 3, true)]
        );
    }

    #[test]
    fn leftovers_go_to_the_largest_set() {
        // Three equal sets of 1 (saw max 3) growing to 4 + surge 0: each
        // rounds 1*4/3 to 1, so the leftover 1 goes to the first (newest).
        let d = rolling(4, 0, 1);
        let old = [sized("a", 1, 1, 3), sized("b", 2, 1, 3)];
        let new = sized("c", 3, 1, 3);
        let plan = plan_scale(&d, Some(&new), &old);
        assert_eq!(
            steps(&plan),
            [
                ("c".to_string(), 2, true),
                ("b".to_string(), 1, true),
                ("a".to_string(), 1, true)
            ]
        );
        // Nothing to add: every set keeps its size (annotations refreshed).
        let d = rolling(2, 1, 1);
        let plan = plan_scale(&d, Some(&new), &old);
        assert!(plan.iter().all(|s| s.to == 1 && s.force));
        assert_eq!(plan.len(), 3);
        // Recreate never scales proportionally.
        assert!(plan_scale(&recreate(5), Some(&new), &old).is_empty());
    }
}
