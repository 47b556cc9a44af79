//! Facts about a Deployment and its ReplicaSets that every step reads:
//! sizes with the apiserver's defaults, upstream's orderings, and which
//! ReplicaSet is the new one.

use std::cmp::Ordering;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::ResourceExt;

use super::annotations;
use super::template::equal_ignore_hash;

pub const ROLLING_UPDATE: &str = "RollingUpdate";
pub const RECREATE: &str = "Recreate";

/// `spec.replicas` of a Deployment (defaulted to 1 by the apiserver).
pub fn desired(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1)
}

pub fn strategy_type(d: &Deployment) -> Option<&str> {
    d.spec.strategy.as_ref()?.type_.as_deref()
}

pub fn is_rolling_update(d: &Deployment) -> bool {
    strategy_type(d) == Some(ROLLING_UPDATE)
}

pub fn is_paused(d: &Deployment) -> bool {
    d.spec.paused.unwrap_or(false)
}

pub fn rs_template(rs: &ReplicaSet) -> PodTemplateSpec {
    rs.spec.template.clone().unwrap_or_default()
}

/// `spec.replicas` of a ReplicaSet (defaulted to 1 by the apiserver).
pub fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

pub fn status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

pub fn ready_replicas(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

pub fn available_replicas(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// Has pods to run (upstream's `FilterActiveReplicaSets`).
pub fn is_active(rs: &ReplicaSet) -> bool {
    spec_replicas(rs) > 0
}

pub fn sum_spec<'a>(sets: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    sets.into_iter()
        .map(spec_replicas)
        .fold(0, i32::saturating_add)
}

pub fn sum_status(sets: &[&ReplicaSet], field: fn(&ReplicaSet) -> i32) -> i32 {
    sets.iter().map(|rs| field(rs)).fold(0, i32::saturating_add)
}

/// Oldest first, by creation time then name (`ReplicaSetsByCreationTimestamp`).
pub fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let at = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let bt = b.metadata.creation_timestamp.as_ref().map(|t| t.0);
    at.cmp(&bt).then_with(|| a.name_any().cmp(&b.name_any()))
}

/// Largest first; among equals the newest first (`ReplicaSetsBySizeNewer`,
/// used when scaling up so newer sets grow first).
pub fn by_size_newer(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    spec_replicas(b)
        .cmp(&spec_replicas(a))
        .then_with(|| by_creation(b, a))
}

/// Largest first; among equals the oldest first (`ReplicaSetsBySizeOlder`,
/// used when scaling down so older sets shrink first).
pub fn by_size_older(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    spec_replicas(b)
        .cmp(&spec_replicas(a))
        .then_with(|| by_creation(a, b))
}

/// Oldest revision first, then by creation (`ReplicaSetsByRevision`). An
/// unparsable revision sorts as 0 (upstream falls back to creation order
/// pairwise, which is no total order; Rust's sorts need one).
pub fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let rev = |rs: &ReplicaSet| annotations::revision(rs).unwrap_or(0);
    rev(a).cmp(&rev(b)).then_with(|| by_creation(a, b))
}

/// The ReplicaSet running the Deployment's current template: the oldest
/// whose template equals it, hash label aside (`FindNewReplicaSet`).
pub fn find_new<'a>(d: &Deployment, sets: &'a [ReplicaSet]) -> Option<&'a ReplicaSet> {
    sets.iter()
        .filter(|rs| equal_ignore_hash(&rs_template(rs), &d.spec.template))
        .min_by(|a, b| by_creation(a, b))
}

/// The new ReplicaSet (if any) and all the others, oldest first.
pub fn split_new_and_old(
    d: &Deployment,
    sets: &[ReplicaSet],
) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
    let new = find_new(d, sets).cloned();
    // Names are unique in a namespace, as UIDs are.
    let new_name = new.as_ref().map(|rs| rs.name_any());
    let mut old: Vec<ReplicaSet> = sets
        .iter()
        .filter(|rs| new_name.as_deref() != Some(rs.name_any().as_str()))
        .cloned()
        .collect();
    old.sort_by(by_creation);
    (new, old)
}

/// Old sets followed by the new one, as upstream's `append(oldRSs, newRS)`.
pub fn all_sets<'a>(old: &'a [ReplicaSet], new: Option<&'a ReplicaSet>) -> Vec<&'a ReplicaSet> {
    old.iter().chain(new).collect()
}

#[cfg(test)]
pub(super) mod fixtures {
    //! Objects for the unit tests of this controller.

    use super::*;
    use serde_json::{Value, json};

    pub fn deployment(replicas: i32, strategy: Value) -> Deployment {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "d-uid", "generation": 1},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx:1"}]},
                },
            },
        }))
        .unwrap();
        let strategy: k8s_openapi::api::apps::v1::DeploymentStrategy =
            serde_json::from_value(strategy).unwrap();
        d.spec.strategy = Some(strategy);
        d
    }

    /// A RollingUpdate Deployment with int maxSurge/maxUnavailable.
    pub fn rolling(replicas: i32, surge: i32, unavailable: i32) -> Deployment {
        deployment(
            replicas,
            json!({"type": "RollingUpdate",
                   "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}),
        )
    }

    pub fn recreate(replicas: i32) -> Deployment {
        deployment(replicas, json!({"type": "Recreate"}))
    }

    /// A ReplicaSet created `age` seconds after the epoch, with the given
    /// image, spec replicas and available replicas.
    pub fn rs(name: &str, created: i64, spec: i32, available: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {
                "name": name, "namespace": "ns", "uid": format!("{name}-uid"),
                "creationTimestamp": jiff::Timestamp::from_second(created).unwrap().to_string(),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                     "uid": "d-uid", "controller": true}],
            },
            "spec": {
                "replicas": spec,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web", "pod-template-hash": name}},
                    "spec": {"containers": [{"name": "c", "image": format!("img-{name}")}]},
                },
            },
            "status": {"replicas": spec, "availableReplicas": available, "readyReplicas": available},
        }))
        .unwrap()
    }

    pub fn annotate(mut rs: ReplicaSet, pairs: &[(&str, &str)]) -> ReplicaSet {
        let a = rs.metadata.annotations.get_or_insert_default();
        for (k, v) in pairs {
            a.insert(k.to_string(), v.to_string());
        }
        rs
    }

    /// The Deployment's template set to the given ReplicaSet's.
    pub fn running(mut d: Deployment, rs: &ReplicaSet) -> Deployment {
        d.spec.template = crate::controllers::deployment::template::without_hash(&rs_template(rs));
        d
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    fn names(sets: &[ReplicaSet]) -> Vec<String> {
        sets.iter().map(|rs| rs.name_any()).collect()
    }

    #[test]
    fn orderings_follow_upstream_tie_breaks() {
        let a = rs("a", 10, 3, 0);
        let b = rs("b", 20, 3, 0);
        let c = rs("c", 5, 1, 0);
        let mut sets = vec![b.clone(), c.clone(), a.clone()];
        sets.sort_by(by_creation);
        assert_eq!(names(&sets), ["c", "a", "b"]);
        sets.sort_by(by_size_newer);
        assert_eq!(names(&sets), ["b", "a", "c"]);
        sets.sort_by(by_size_older);
        assert_eq!(names(&sets), ["a", "b", "c"]);
        let same_time = [rs("y", 1, 1, 0), rs("x", 1, 1, 0)];
        let mut s = same_time.to_vec();
        s.sort_by(by_creation);
        assert_eq!(names(&s), ["x", "y"]);
    }

    #[test]
    fn revision_order_falls_back_to_creation() {
        let mut sets = vec![
            annotate(
                rs("a", 1, 0, 0),
                &[("deployment.kubernetes.io/revision", "3")],
            ),
            annotate(
                rs("b", 2, 0, 0),
                &[("deployment.kubernetes.io/revision", "1")],
            ),
            annotate(
                rs("c", 3, 0, 0),
                &[("deployment.kubernetes.io/revision", "1")],
            ),
            rs("d", 4, 0, 0),
        ];
        sets.sort_by(by_revision);
        assert_eq!(names(&sets), ["d", "b", "c", "a"]);
    }

    #[test]
    fn the_oldest_matching_template_is_new() {
        let old = rs("old", 1, 2, 2);
        let mut twin = rs("twin", 3, 0, 0);
        twin.spec.template = old.spec.template.clone();
        let other = rs("other", 2, 1, 1);
        let d = running(rolling(3, 1, 1), &old);
        let sets = vec![twin.clone(), other.clone(), old.clone()];
        assert_eq!(
            find_new(&d, &sets).map(|r| r.name_any()).as_deref(),
            Some("old")
        );
        let (new, rest) = split_new_and_old(&d, &sets);
        assert_eq!(new.map(|r| r.name_any()).as_deref(), Some("old"));
        assert_eq!(names(&rest), ["other", "twin"]);
        let (none, all) = split_new_and_old(&rolling(3, 1, 1), &sets);
        assert!(none.is_none());
        assert_eq!(all.len(), 3);
    }
}
