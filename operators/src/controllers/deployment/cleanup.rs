//! Old ReplicaSets past revisionHistoryLimit (upstream's
//! `cleanupDeployment`): the oldest revisions go first, but only sets that
//! are idle (no replicas wanted or running, status caught up) and not
//! already being deleted. Pure; sync.rs deletes them.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::sets::{by_revision, spec_replicas, status_replicas};
use super::status::has_revision_history_limit;

pub fn replica_sets_to_delete<'a>(d: &Deployment, old: &'a [ReplicaSet]) -> Vec<&'a ReplicaSet> {
    if !has_revision_history_limit(d) {
        return Vec::new();
    }
    let limit = d.spec.revision_history_limit.unwrap_or(0).max(0) as usize;
    let mut alive: Vec<&ReplicaSet> = old
        .iter()
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .collect();
    if alive.len() <= limit {
        return Vec::new();
    }
    let excess = alive.len() - limit;
    alive.sort_by(|a, b| by_revision(a, b));
    alive
        .into_iter()
        .take(excess)
        .filter(|rs| {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            status_replicas(rs) == 0
                && spec_replicas(rs) == 0
                && rs.metadata.generation.unwrap_or(0) <= observed
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::annotations::REVISION;
    use super::super::sets::fixtures::*;
    use super::*;
    use kube::ResourceExt;

    fn idle(name: &str, created: i64, revision: &str) -> ReplicaSet {
        annotate(rs(name, created, 0, 0), &[(REVISION, revision)])
    }

    fn names(sets: Vec<&ReplicaSet>) -> Vec<String> {
        sets.into_iter().map(|rs| rs.name_any()).collect()
    }

    fn limited(limit: Option<i32>) -> Deployment {
        let mut d = rolling(1, 1, 0);
        d.spec.revision_history_limit = limit;
        d
    }

    #[test]
    fn the_oldest_revisions_beyond_the_limit_go() {
        let old = [idle("c", 1, "3"), idle("a", 2, "1"), idle("b", 3, "2")];
        assert_eq!(
            names(replica_sets_to_delete(&limited(Some(1)), &old)),
            ["a", "b"]
        );
        assert_eq!(
            names(replica_sets_to_delete(&limited(Some(0)), &old)),
            ["a", "b", "c"]
        );
        assert!(replica_sets_to_delete(&limited(Some(3)), &old).is_empty());
        assert!(replica_sets_to_delete(&limited(None), &old).is_empty());
        assert!(replica_sets_to_delete(&limited(Some(i32::MAX)), &old).is_empty());
    }

    #[test]
    fn busy_or_deleting_sets_are_kept() {
        let mut deleting = idle("d", 1, "1");
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let scaled = annotate(rs("s", 2, 1, 0), &[(REVISION, "2")]);
        let mut draining = idle("r", 3, "3");
        draining.status.as_mut().unwrap().replicas = 1;
        let mut unobserved = idle("u", 4, "4");
        unobserved.metadata.generation = Some(2);
        let fine = idle("f", 5, "5");
        let old = [
            deleting,
            scaled,
            draining,
            unobserved,
            fine,
            idle("k", 6, "6"),
        ];
        // Five alive, limit 0: all five are candidates; "f" and "k" are idle.
        assert_eq!(
            names(replica_sets_to_delete(&limited(Some(0)), &old)),
            ["f", "k"]
        );
        // Limit 3: the two oldest alive are candidates; neither is idle.
        assert!(replica_sets_to_delete(&limited(Some(3)), &old).is_empty());
    }
}
