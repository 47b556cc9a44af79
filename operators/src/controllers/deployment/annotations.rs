//! The annotations a Deployment keeps on its ReplicaSets: revisions, the
//! revision history of a re-used ReplicaSet, the desired/max replicas that
//! tell scaling events from rollouts, and the Deployment's own annotations
//! copied over (upstream's `SetNewReplicaSetAnnotations` and friends).

use std::collections::BTreeMap;
use std::num::ParseIntError;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::rolling::max_surge;
use super::sets::desired;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Round-trips extensions/v1beta1's `spec.rollbackTo` (see rollback.rs).
pub const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";

/// Longest revision history kept, in characters (about 100 revisions).
pub const MAX_REVISION_HISTORY_CHARS: usize = 2000;

/// Annotations the controller owns, never copied between a Deployment and
/// its ReplicaSets.
fn skip_copy(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | ROLLBACK_TO
    )
}

fn get<'a>(annotations: Option<&'a BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    annotations?.get(key).map(String::as_str)
}

/// A ReplicaSet's revision: 0 without the annotation, an error when it is
/// not a number.
pub fn revision(rs: &ReplicaSet) -> Result<i64, ParseIntError> {
    match get(rs.metadata.annotations.as_ref(), REVISION) {
        None => Ok(0),
        Some(v) => v.parse(),
    }
}

/// The highest revision among the sets, unparsable ones skipped.
pub fn max_revision<'a>(sets: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    sets.into_iter()
        .filter_map(|rs| revision(rs).ok())
        .fold(0, i64::max)
}

/// The second highest revision (the one before the current), or 0.
pub fn last_revision<'a>(sets: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    let (mut max, mut second) = (0, 0);
    for v in sets.into_iter().filter_map(|rs| revision(rs).ok()) {
        if v >= max {
            second = max;
            max = v;
        } else if v > second {
            second = v;
        }
    }
    second
}

/// Parses a non-negative int32 annotation as upstream (digits only).
fn non_negative_i32(rs: &ReplicaSet, key: &str) -> Option<i32> {
    let value = get(rs.metadata.annotations.as_ref(), key)?;
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value
        .parse::<u64>()
        .ok()
        .and_then(|v| i32::try_from(v).ok())
}

/// The Deployment's replicas when the set was last sized by it.
pub fn desired_replicas(rs: &ReplicaSet) -> Option<i32> {
    non_negative_i32(rs, DESIRED_REPLICAS)
}

/// The Deployment's replicas + maxSurge when the set was last sized by it.
pub fn max_replicas(rs: &ReplicaSet) -> Option<i32> {
    non_negative_i32(rs, MAX_REPLICAS)
}

/// Records desired and max replicas; true when anything changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_default();
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let value = value.to_string();
        if annotations.get(key) != Some(&value) {
            annotations.insert(key.to_string(), value);
            changed = true;
        }
    }
    changed
}

pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.as_ref();
    get(annotations, DESIRED_REPLICAS) != Some(desired.to_string().as_str())
        || get(annotations, MAX_REPLICAS) != Some(max.to_string().as_str())
}

/// Copies the Deployment's own annotations onto the set (never removing
/// any); true when anything changed.
fn copy_deployment_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let target = rs.metadata.annotations.get_or_insert_default();
    let mut changed = false;
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if skip_copy(k) || target.get(k) == Some(v) {
            continue;
        }
        target.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// Brings the new ReplicaSet's annotations up to date: the Deployment's
/// annotations, a revision raised to `new_revision` (remembering the one it
/// replaces in the revision history, as when a rollback re-uses an old set),
/// and, for a set about to be created, desired/max replicas. True when
/// anything changed.
pub fn set_new_replica_set_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
    history_limit: usize,
) -> bool {
    let mut changed = copy_deployment_annotations(d, rs);
    let annotations = rs.metadata.annotations.get_or_insert_default();
    let old_revision = annotations.get(REVISION).cloned();
    let old_number = match old_revision.as_deref() {
        None | Some("") => 0,
        Some(v) => match v.parse::<i64>() {
            Ok(n) => n,
            Err(error) => {
                tracing::info!(revision = v, %error, "replica set revision is not a number; leaving it");
                return false;
            }
        },
    };
    if old_number < new_revision {
        annotations.insert(REVISION.to_string(), new_revision.to_string());
        changed = true;
        if let Some(old) = old_revision {
            record_history(annotations, &old, history_limit);
        }
    }
    if !exists {
        let desired = desired(d);
        changed |= set_replicas_annotations(rs, desired, desired.saturating_add(max_surge(d)));
    }
    changed
}

/// Appends `old` to the comma-separated revision history, dropping the
/// oldest entries to stay within `limit` characters.
fn record_history(annotations: &mut BTreeMap<String, String>, old: &str, limit: usize) {
    let history = annotations
        .get(REVISION_HISTORY)
        .cloned()
        .unwrap_or_default();
    let entries: Vec<&str> = history.split(',').collect();
    if entries.first().is_none_or(|e| e.is_empty()) {
        annotations.insert(REVISION_HISTORY.to_string(), old.to_string());
        return;
    }
    let mut total = history.len() + old.len() + 1;
    let mut start = 0;
    while total > limit && start < entries.len() {
        total -= entries[start].len() + 1;
        start += 1;
    }
    if total <= limit {
        let mut kept: Vec<&str> = entries[start..].to_vec();
        kept.push(old);
        annotations.insert(REVISION_HISTORY.to_string(), kept.join(","));
    } else {
        tracing::info!(limit, "revision history full; not appending");
    }
}

/// Records the new ReplicaSet's revision on the Deployment; true when it
/// changed.
pub fn set_deployment_revision(d: &mut Deployment, revision: &str) -> bool {
    let annotations = d.metadata.annotations.get_or_insert_default();
    if annotations.get(REVISION).map(String::as_str) == Some(revision) {
        return false;
    }
    annotations.insert(REVISION.to_string(), revision.to_string());
    true
}

/// On a rollback to `rs`, the Deployment takes the set's annotations back
/// (keeping only its controller-owned ones), so the change-cause and the
/// like follow the template.
pub fn set_deployment_annotations_to(d: &mut Deployment, rs: &ReplicaSet) {
    let mut kept: BTreeMap<String, String> = d
        .metadata
        .annotations
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| skip_copy(k))
        .collect();
    for (k, v) in rs.metadata.annotations.iter().flatten() {
        if !skip_copy(k) {
            kept.insert(k.clone(), v.clone());
        }
    }
    d.metadata.annotations = Some(kept);
}

#[cfg(test)]
mod tests {
    use super::super::sets::fixtures::*;
    use super::*;

    fn ann(rs: &ReplicaSet, key: &str) -> Option<String> {
        rs.metadata.annotations.as_ref()?.get(key).cloned()
    }

    #[test]
    fn revisions_parse_and_rank() {
        let sets = [
            annotate(rs("a", 1, 0, 0), &[(REVISION, "2")]),
            annotate(rs("b", 2, 0, 0), &[(REVISION, "7")]),
            annotate(rs("c", 3, 0, 0), &[(REVISION, "junk")]),
            rs("d", 4, 0, 0),
        ];
        assert_eq!(revision(&sets[0]), Ok(2));
        assert!(revision(&sets[2]).is_err());
        assert_eq!(revision(&sets[3]), Ok(0));
        assert_eq!(max_revision(&sets), 7);
        assert_eq!(last_revision(&sets), 2);
        assert_eq!(last_revision(&sets[..1]), 0);
        assert_eq!(max_revision([]), 0);
    }

    #[test]
    fn replica_annotations_parse_non_negative_int32_only() {
        for (value, want) in [
            ("3", Some(3)),
            ("0", Some(0)),
            ("-1", None),
            ("+1", None),
            ("", None),
            ("2147483647", Some(i32::MAX)),
            ("2147483648", None),
            ("x", None),
        ] {
            let set = annotate(rs("a", 1, 0, 0), &[(DESIRED_REPLICAS, value)]);
            assert_eq!(desired_replicas(&set), want, "{value:?}");
        }
        assert_eq!(desired_replicas(&rs("a", 1, 0, 0)), None);
    }

    #[test]
    fn replicas_annotations_are_set_and_compared() {
        let mut set = rs("a", 1, 0, 0);
        assert!(replicas_annotations_need_update(&set, 3, 4));
        assert!(set_replicas_annotations(&mut set, 3, 4));
        assert!(!replicas_annotations_need_update(&set, 3, 4));
        assert!(!set_replicas_annotations(&mut set, 3, 4));
        assert_eq!(max_replicas(&set), Some(4));
        assert!(replicas_annotations_need_update(&set, 3, 5));
    }

    #[test]
    fn a_new_set_gets_revision_replicas_and_copied_annotations() {
        let mut d = rolling(10, 3, 2);
        d.metadata.annotations = Some(BTreeMap::from([
            ("team".to_string(), "blue".to_string()),
            (LAST_APPLIED.to_string(), "{}".to_string()),
            (REVISION.to_string(), "4".to_string()),
        ]));
        let mut set = rs("n", 1, 0, 0);
        assert!(set_new_replica_set_annotations(
            &d, &mut set, 5, false, 2000
        ));
        assert_eq!(ann(&set, REVISION).as_deref(), Some("5"));
        assert_eq!(ann(&set, "team").as_deref(), Some("blue"));
        assert_eq!(ann(&set, LAST_APPLIED), None);
        assert_eq!(ann(&set, DESIRED_REPLICAS).as_deref(), Some("10"));
        assert_eq!(ann(&set, MAX_REPLICAS).as_deref(), Some("13"));
        assert_eq!(ann(&set, REVISION_HISTORY), None);
        // Nothing left to change.
        assert!(!set_new_replica_set_annotations(
            &d, &mut set, 5, true, 2000
        ));
        // A lower revision never lowers the set's.
        assert!(!set_new_replica_set_annotations(
            &d, &mut set, 3, true, 2000
        ));
        assert_eq!(ann(&set, REVISION).as_deref(), Some("5"));
    }

    #[test]
    fn a_reused_set_remembers_its_old_revisions() {
        let d = rolling(1, 1, 0);
        let mut set = annotate(rs("o", 1, 0, 0), &[(REVISION, "1")]);
        assert!(set_new_replica_set_annotations(&d, &mut set, 3, true, 2000));
        assert_eq!(ann(&set, REVISION).as_deref(), Some("3"));
        assert_eq!(ann(&set, REVISION_HISTORY).as_deref(), Some("1"));
        assert!(set_new_replica_set_annotations(&d, &mut set, 5, true, 2000));
        assert_eq!(ann(&set, REVISION_HISTORY).as_deref(), Some("1,3"));
        // Existing sets get no replicas annotations from here.
        assert_eq!(ann(&set, DESIRED_REPLICAS), None);
    }

    #[test]
    fn revision_history_drops_the_oldest_past_the_limit() {
        let mut a = BTreeMap::from([(REVISION_HISTORY.to_string(), "1,2,3".to_string())]);
        record_history(&mut a, "4", 6);
        assert_eq!(a[REVISION_HISTORY], "2,3,4");
        record_history(&mut a, "10", 5);
        assert_eq!(a[REVISION_HISTORY], "4,10");
        record_history(&mut a, "123456", 3);
        assert_eq!(a[REVISION_HISTORY], "4,10", "too long to ever fit");
    }

    #[test]
    fn an_unparsable_set_revision_is_left_alone() {
        let d = rolling(1, 1, 0);
        let mut set = annotate(rs("o", 1, 0, 0), &[(REVISION, "x")]);
        assert!(!set_new_replica_set_annotations(
            &d, &mut set, 2, true, 2000
        ));
        assert_eq!(ann(&set, REVISION).as_deref(), Some("x"));
    }

    #[test]
    fn rollback_takes_the_sets_annotations() {
        let mut d = rolling(1, 1, 0);
        d.metadata.annotations = Some(BTreeMap::from([
            ("change-cause".to_string(), "edit".to_string()),
            (REVISION.to_string(), "2".to_string()),
        ]));
        let set = annotate(
            rs("o", 1, 0, 0),
            &[
                ("change-cause", "create"),
                (REVISION, "1"),
                (DESIRED_REPLICAS, "1"),
            ],
        );
        set_deployment_annotations_to(&mut d, &set);
        let a = d.metadata.annotations.unwrap();
        assert_eq!(a["change-cause"], "create");
        assert_eq!(a[REVISION], "2");
        assert!(!a.contains_key(DESIRED_REPLICAS));
        let mut d = rolling(1, 1, 0);
        assert!(set_deployment_revision(&mut d, "3"));
        assert!(!set_deployment_revision(&mut d, "3"));
    }
}
