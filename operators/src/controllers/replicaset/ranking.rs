//! Which pods go first when a ReplicaSet scales down: upstream's
//! `getPodsToDelete` with the `ActivePodsWithRanks` ordering. Pods early in
//! their start-up (unscheduled, pending, not ready), cheap to delete (the
//! pod-deletion-cost annotation), doubled up on a node, recently ready,
//! crash-looping or young are deleted first.
//!
//! Upstream compares ready and creation times on a log2 scale of their age and
//! breaks ties within one bucket by UID, so equivalent pods are picked
//! pseudo-randomly rather than always the newest. That comparison is not a
//! strict weak order in corner cases (equal times fall through to later rules,
//! same-bucket times do not), so pods are sorted with a merge sort that stays
//! well defined for any comparator instead of the standard library's sorts,
//! which may panic on an inconsistent one.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

use crate::controllers::podutil;

/// The annotation by which users rank pods for deletion (lower goes first).
pub const POD_DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Picks `count` of `active` pods to delete, in deletion order. `related` are
/// the pods whose colocation counts: for a ReplicaSet owned by a Deployment,
/// every pod selected by the Deployment's ReplicaSets; for one without a
/// controller, none (upstream finds no related ReplicaSets then, so every
/// rank is 0).
pub fn pods_to_delete(
    active: &[Arc<Pod>],
    related: &[Arc<Pod>],
    count: usize,
    now: Timestamp,
) -> Vec<Arc<Pod>> {
    if count >= active.len() {
        // Everything goes; no ordering needed (as upstream).
        return active.to_vec();
    }
    let ranks = colocation_ranks(active, related);
    let ranked: Vec<(Arc<Pod>, usize)> = active.iter().cloned().zip(ranks).collect();
    sort_for_deletion(ranked, now)
        .into_iter()
        .take(count)
        .map(|(pod, _)| pod)
        .collect()
}

/// Each pod's rank: how many active `related` pods share its node (pods
/// without a node share the node `""`).
pub fn colocation_ranks(pods: &[Arc<Pod>], related: &[Arc<Pod>]) -> Vec<usize> {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for pod in related.iter().filter(|p| podutil::is_active(p)) {
        // A pod selected by two related ReplicaSets counts once.
        if let Some(uid) = pod.metadata.uid.as_deref()
            && !seen.insert(uid)
        {
            continue;
        }
        *per_node.entry(node_name(pod)).or_default() += 1;
    }
    pods.iter()
        .map(|p| per_node.get(node_name(p)).copied().unwrap_or(0))
        .collect()
}

/// Sorts pods with their ranks so the first should be deleted first.
pub fn sort_for_deletion<P: AsRef<Pod>>(pods: Vec<(P, usize)>, now: Timestamp) -> Vec<(P, usize)> {
    merge_sort(pods, &mut |(a, ra), (b, rb)| {
        compare_for_deletion(a.as_ref(), *ra, b.as_ref(), *rb, now)
    })
}

/// `Less` when pod `a` (with rank `rank_a`) should be deleted before `b`.
pub fn compare_for_deletion(
    a: &Pod,
    rank_a: usize,
    b: &Pod,
    rank_b: usize,
    now: Timestamp,
) -> Ordering {
    let ready_a = podutil::is_ready(a);
    let ready_b = podutil::is_ready(b);
    // Unscheduled, then Pending < Unknown < Running, then not ready.
    let early = is_scheduled(a)
        .cmp(&is_scheduled(b))
        .then(phase_ordinal(a).cmp(&phase_ordinal(b)))
        .then(ready_a.cmp(&ready_b))
        .then(deletion_cost(a).cmp(&deletion_cost(b)))
        // More pods on the same node goes first.
        .then(rank_b.cmp(&rank_a));
    if early != Ordering::Equal {
        return early;
    }
    if ready_a && ready_b {
        let (ta, tb) = (ready_since(a), ready_since(b));
        if ta != tb {
            return compare_times(ta, tb, a, b, now);
        }
    }
    let restarts = max_restarts(b).cmp(&max_restarts(a));
    if restarts != Ordering::Equal {
        return restarts;
    }
    let (ca, cb) = (created(a), created(b));
    if ca != cb {
        return compare_times(ca, cb, a, b, now);
    }
    Ordering::Equal
}

/// Two different times, the more recent first: a missing time first, then
/// by log2 bucket of age, then by pod UID within a bucket.
fn compare_times(
    ta: Option<Timestamp>,
    tb: Option<Timestamp>,
    a: &Pod,
    b: &Pod,
    now: Timestamp,
) -> Ordering {
    match (ta, tb) {
        (None, _) => Ordering::Less,
        (_, None) => Ordering::Greater,
        (Some(ta), Some(tb)) => age_bucket(ta, now)
            .cmp(&age_bucket(tb, now))
            .then_with(|| uid(a).cmp(uid(b))),
    }
}

/// floor(log2(age in nanoseconds)), or -1 for a time not in the past.
pub fn age_bucket(t: Timestamp, now: Timestamp) -> i64 {
    let age = now.duration_since(t).as_nanos();
    if age <= 0 {
        return -1;
    }
    // As upstream: the float log of the age, truncated.
    (age as f64).log2() as i64
}

/// The pod-deletion-cost annotation as upstream parses it: a decimal int32
/// without `+` or leading zeros; anything else counts as 0.
pub fn deletion_cost(pod: &Pod) -> i32 {
    let Some(value) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST_ANNOTATION))
    else {
        return 0;
    };
    let well_formed = match value.as_bytes().first() {
        Some(b'-') | Some(b'1'..=b'9') => true,
        Some(b'0') => value == "0",
        _ => false,
    };
    if !well_formed {
        return 0;
    }
    value.parse().unwrap_or(0)
}

fn is_scheduled(pod: &Pod) -> bool {
    !node_name(pod).is_empty()
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// Pending (and any phase upstream does not list) < Unknown < Running.
fn phase_ordinal(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn ready_since(pod: &Pod) -> Option<Timestamp> {
    podutil::ready_condition(pod)
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

fn created(pod: &Pod) -> Option<Timestamp> {
    pod.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

/// The highest restart count of the regular containers, then of the sidecars
/// (init containers that restart always).
fn max_restarts(pod: &Pod) -> (i32, i32) {
    let Some(status) = pod.status.as_ref() else {
        return (0, 0);
    };
    let regular = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
        .max(0);
    let sidecars: HashSet<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect();
    let sidecar = status
        .init_container_statuses
        .iter()
        .flatten()
        .filter(|c| sidecars.contains(c.name.as_str()))
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
        .max(0);
    (regular, sidecar)
}

/// A stable merge sort that terminates with some order whatever `cmp` says.
fn merge_sort<T>(mut items: Vec<T>, cmp: &mut impl FnMut(&T, &T) -> Ordering) -> Vec<T> {
    if items.len() <= 1 {
        return items;
    }
    let right = items.split_off(items.len() / 2);
    let left = merge_sort(items, cmp);
    let right = merge_sort(right, cmp);
    let mut merged = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_right = match (left.peek(), right.peek()) {
            (Some(l), Some(r)) => cmp(r, l) == Ordering::Less,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (None, None) => break,
        };
        let next = if take_right {
            right.next()
        } else {
            left.next()
        };
        merged.extend(next);
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const NOW: &str = "2026-01-01T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    /// A scheduled, running, ready pod created and ready long ago; each test
    /// changes one thing.
    fn base(name: &str) -> Value {
        json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"),
                         "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}
            ]}
        })
    }

    fn pod(v: Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn with(name: &str, edit: impl FnOnce(&mut Value)) -> Arc<Pod> {
        let mut v = base(name);
        edit(&mut v);
        pod(v)
    }

    fn not_ready(v: &mut Value) {
        v["status"]["conditions"][0]["status"] = json!("False");
    }

    /// (first, second, rank of first, rank of second): `first` must be
    /// deleted before `second`, and the reverse comparison must agree.
    fn assert_first(first: &Arc<Pod>, second: &Arc<Pod>, ranks: (usize, usize), rule: &str) {
        assert_eq!(
            compare_for_deletion(first, ranks.0, second, ranks.1, now()),
            Ordering::Less,
            "{rule}"
        );
        assert_eq!(
            compare_for_deletion(second, ranks.1, first, ranks.0, now()),
            Ordering::Greater,
            "{rule} (reversed)"
        );
    }

    #[test]
    fn each_rule_decides_alone() {
        let plain = with("plain", |_| {});
        let cases: Vec<(&str, Arc<Pod>, (usize, usize))> = vec![
            (
                "unscheduled before scheduled",
                with("a", |v| v["spec"]["nodeName"] = Value::Null),
                (0, 0),
            ),
            (
                "pending before running",
                with("a", |v| v["status"]["phase"] = json!("Pending")),
                (0, 0),
            ),
            (
                "unknown before running",
                with("a", |v| v["status"]["phase"] = json!("Unknown")),
                (0, 0),
            ),
            ("not ready before ready", with("a", not_ready), (0, 0)),
            (
                "lower deletion cost first",
                with("a", |v| {
                    v["metadata"]["annotations"] = json!({POD_DELETION_COST_ANNOTATION: "-5"})
                }),
                (0, 0),
            ),
            ("higher rank first", with("a", |_| {}), (3, 1)),
            (
                "more recently ready first",
                with("a", |v| {
                    v["status"]["conditions"][0]["lastTransitionTime"] =
                        json!("2026-01-01T11:59:00Z")
                }),
                (0, 0),
            ),
            (
                "more restarts first",
                with("a", |v| {
                    v["status"]["containerStatuses"] = json!([{"name": "c", "image": "i",
                        "imageID": "", "ready": true, "restartCount": 4}])
                }),
                (0, 0),
            ),
            (
                "newer first",
                with("a", |v| {
                    v["metadata"]["creationTimestamp"] = json!("2026-01-01T11:00:00Z")
                }),
                (0, 0),
            ),
        ];
        for (rule, first, ranks) in cases {
            assert_first(&first, &plain, ranks, rule);
        }
    }

    #[test]
    fn earlier_rules_win_over_later_ones() {
        // Unscheduled but old beats scheduled and pending.
        let unscheduled = with("a", |v| v["spec"]["nodeName"] = Value::Null);
        let pending = with("b", |v| {
            v["status"]["phase"] = json!("Pending");
            v["metadata"]["creationTimestamp"] = json!("2026-01-01T11:59:59Z");
        });
        assert_first(&unscheduled, &pending, (0, 5), "scheduling before phase");
        // Deletion cost beats rank.
        let cheap = with("a", |v| {
            v["metadata"]["annotations"] = json!({POD_DELETION_COST_ANNOTATION: "1"})
        });
        let dear = with("b", |v| {
            v["metadata"]["annotations"] = json!({POD_DELETION_COST_ANNOTATION: "2"})
        });
        assert_first(&cheap, &dear, (0, 9), "cost before rank");
        // Not-ready pods skip the ready-time rule.
        let young = with("a", |v| {
            not_ready(v);
            v["metadata"]["creationTimestamp"] = json!("2026-01-01T11:00:00Z");
        });
        let old = with("b", |v| {
            not_ready(v);
            v["status"]["conditions"][0]["lastTransitionTime"] = json!("2026-01-01T11:59:59Z");
        });
        assert_first(&young, &old, (0, 0), "ready time ignored when not ready");
    }

    #[test]
    fn sidecar_restarts_break_regular_ties() {
        let sidecar = with("a", |v| {
            v["spec"]["initContainers"] = json!([{"name": "s", "restartPolicy": "Always"}]);
            v["status"]["initContainerStatuses"] = json!([{"name": "s", "image": "i",
                "imageID": "", "ready": true, "restartCount": 2}]);
        });
        let plain_init = with("b", |v| {
            v["spec"]["initContainers"] = json!([{"name": "s"}]);
            v["status"]["initContainerStatuses"] = json!([{"name": "s", "image": "i",
                "imageID": "", "ready": true, "restartCount": 7}]);
        });
        assert_first(&sidecar, &plain_init, (0, 0), "only sidecars count");
    }

    #[test]
    fn times_in_one_log_bucket_are_ordered_by_uid() {
        // Created 1000 s and 1010 s ago: both in bucket floor(log2(1e12)).
        let a = with("z", |v| {
            v["metadata"]["creationTimestamp"] = json!("2026-01-01T11:43:20Z")
        });
        let b = with("y", |v| {
            v["metadata"]["creationTimestamp"] = json!("2026-01-01T11:43:10Z")
        });
        // uid-y < uid-z, so the older one goes first within the bucket.
        assert_first(&b, &a, (0, 0), "uid tie-break");
        // A pod without creation time goes first.
        let none = with("x", |v| v["metadata"]["creationTimestamp"] = Value::Null);
        assert_first(&none, &b, (0, 0), "missing creation time first");
    }

    #[test]
    fn equal_ready_times_fall_through_to_restarts() {
        let restarted = with("z", |v| {
            v["status"]["containerStatuses"] = json!([{"name": "c", "image": "i",
                "imageID": "", "ready": true, "restartCount": 1}]);
        });
        let other = with("a", |_| {});
        assert_first(
            &restarted,
            &other,
            (0, 0),
            "restarts after equal ready times",
        );
    }

    #[test]
    fn deletion_cost_parsing() {
        let cost = |v: &str| {
            deletion_cost(&with("a", |p| {
                p["metadata"]["annotations"] = json!({POD_DELETION_COST_ANNOTATION: v})
            }))
        };
        for (value, want) in [
            ("10", 10),
            ("-3", -3),
            ("0", 0),
            ("+10", 0),
            ("008", 0),
            ("abc", 0),
            ("", 0),
            ("99999999999", 0),
        ] {
            assert_eq!(cost(value), want, "{value:?}");
        }
    }

    #[test]
    fn age_buckets_are_log2_of_nanoseconds() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(age_bucket(now(), now()), -1);
        assert_eq!(age_bucket(t("2026-01-01T12:00:01Z"), now()), -1);
        // 1 s = 1e9 ns; log2(1e9) = 29.9.
        assert_eq!(age_bucket(t("2026-01-01T11:59:59Z"), now()), 29);
        // 2 s: 30.9.
        assert_eq!(age_bucket(t("2026-01-01T11:59:58Z"), now()), 30);
    }

    #[test]
    fn ranks_count_active_related_pods_per_node() {
        let on =
            |name: &str, node: Option<&str>| with(name, |v| v["spec"]["nodeName"] = json!(node));
        let a = on("a", Some("n1"));
        let b = on("b", Some("n1"));
        let c = on("c", Some("n2"));
        let gone = with("d", |v| v["metadata"]["deletionTimestamp"] = json!(NOW));
        let u = on("u", None);
        let related = vec![a.clone(), b.clone(), b.clone(), c.clone(), gone, u.clone()];
        assert_eq!(
            colocation_ranks(&[a, c, u, on("e", Some("n3"))], &related),
            vec![2, 1, 1, 0]
        );
    }

    #[test]
    fn picks_the_first_in_deletion_order() {
        let ready_old = with("old", |_| {});
        let pending = with("pending", |v| v["status"]["phase"] = json!("Pending"));
        let not_ready = with("notready", not_ready);
        let unscheduled = with("unscheduled", |v| v["spec"]["nodeName"] = Value::Null);
        let active = vec![
            ready_old.clone(),
            not_ready.clone(),
            unscheduled.clone(),
            pending.clone(),
        ];
        let names = |pods: Vec<Arc<Pod>>| -> Vec<String> {
            pods.iter()
                .map(|p| p.metadata.name.clone().unwrap())
                .collect()
        };
        assert_eq!(
            names(pods_to_delete(&active, &[], 3, now())),
            vec!["unscheduled", "pending", "notready"]
        );
        // All of them: no sorting, input order kept.
        assert_eq!(names(pods_to_delete(&active, &[], 4, now())).len(), 4);
    }

    #[test]
    fn colocated_pods_go_first() {
        let a = with("a", |v| v["spec"]["nodeName"] = json!("busy"));
        let b = with("b", |v| v["spec"]["nodeName"] = json!("busy"));
        let c = with("c", |v| v["spec"]["nodeName"] = json!("quiet"));
        let active = vec![c.clone(), a.clone(), b.clone()];
        let picked = pods_to_delete(&active, &active, 1, now());
        assert_ne!(picked[0].metadata.name.as_deref(), Some("c"));
    }

    #[test]
    fn merge_sort_survives_an_inconsistent_comparator() {
        let items: Vec<u32> = (0..50).collect();
        // Rock-paper-scissors: not transitive.
        let sorted = merge_sort(items, &mut |a, b| match (a % 3, b % 3) {
            (x, y) if x == y => Ordering::Equal,
            (0, 1) | (1, 2) | (2, 0) => Ordering::Less,
            _ => Ordering::Greater,
        });
        assert_eq!(sorted.len(), 50);
        let stable = merge_sort(vec![(1, 'a'), (0, 'b'), (1, 'c')], &mut |a, b| {
            a.0.cmp(&b.0)
        });
        assert_eq!(stable, vec![(0, 'b'), (1, 'a'), (1, 'c')]);
    }
}
