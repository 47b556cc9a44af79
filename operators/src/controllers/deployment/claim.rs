//! Which ReplicaSets a Deployment owns (upstream's ControllerRefManager):
//! it keeps the sets it controls that its selector still matches, adopts
//! matching orphans, and releases controlled sets its selector no longer
//! matches. Pure decisions and the patches that carry them out.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};

use crate::controllers::podutil::{controller_of, selector_matches};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Controlled and selected: the Deployment's.
    Keep,
    /// An orphan the selector matches: take control of it.
    Adopt,
    /// Controlled but no longer selected: let go of it.
    Release,
    /// Someone else's, or not to be touched now.
    Ignore,
}

pub fn claim(d: &Deployment, rs: &ReplicaSet) -> Claim {
    let no_labels = BTreeMap::new();
    let labels = rs.metadata.labels.as_ref().unwrap_or(&no_labels);
    let selected = selector_matches(&d.spec.selector, labels);
    let deleting = d.metadata.deletion_timestamp.is_some();
    match controller_of(rs.metadata.owner_references.as_ref()) {
        Some(owner) if Some(owner.uid.as_str()) != d.metadata.uid.as_deref() => Claim::Ignore,
        Some(_) if selected => Claim::Keep,
        // A Deployment being deleted changes nothing it owns.
        Some(_) if deleting => Claim::Ignore,
        Some(_) => Claim::Release,
        None if deleting || !selected || rs.metadata.deletion_timestamp.is_some() => Claim::Ignore,
        None if rs.metadata.namespace != d.metadata.namespace => Claim::Ignore,
        None => Claim::Adopt,
    }
}

/// Whether a selector can be evaluated at all: known operators with the
/// values each needs (upstream refuses to convert anything else, and so
/// never syncs such a Deployment).
pub fn selector_error(selector: &LabelSelector) -> Option<String> {
    for expr in selector.match_expressions.iter().flatten() {
        let values = expr.values.as_deref().unwrap_or_default();
        let ok = match expr.operator.as_str() {
            "In" | "NotIn" => !values.is_empty(),
            "Exists" | "DoesNotExist" => values.is_empty(),
            _ => false,
        };
        if !ok {
            return Some(format!(
                "invalid label selector requirement {:?} {} {:?}",
                expr.key, expr.operator, values
            ));
        }
    }
    None
}

/// The strategic-merge patch adopting a set: our controller reference
/// merged into its ownerReferences (by uid), guarded by the set's uid.
pub fn adopt_patch(d: &Deployment, rs_uid: &str) -> Value {
    json!({
        "metadata": {
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": d.metadata.name,
                "uid": d.metadata.uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
            "uid": rs_uid,
        }
    })
}

/// The strategic-merge patch removing our reference from a set.
pub fn release_patch(owner_uid: &str, rs_uid: &str) -> Value {
    json!({
        "metadata": {
            "ownerReferences": [{"$patch": "delete", "uid": owner_uid}],
            "uid": rs_uid,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::sets::fixtures::*;
    use super::*;

    fn orphan(name: &str) -> ReplicaSet {
        let mut set = rs(name, 1, 1, 1);
        set.metadata.owner_references = None;
        set
    }

    fn relabel(mut set: ReplicaSet, app: &str) -> ReplicaSet {
        set.metadata.labels = Some([("app".to_string(), app.to_string())].into());
        set
    }

    fn owned(name: &str) -> ReplicaSet {
        relabel(rs(name, 1, 1, 1), "web")
    }

    #[test]
    fn claims_follow_ownership_and_selection() {
        let d = rolling(1, 1, 0);
        let mut foreign = owned("f");
        foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
        let mut dying = relabel(orphan("x"), "web");
        dying.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let mut elsewhere = relabel(orphan("e"), "web");
        elsewhere.metadata.namespace = Some("other".into());
        let cases = [
            (owned("a"), Claim::Keep),
            (relabel(owned("b"), "api"), Claim::Release),
            (relabel(orphan("c"), "web"), Claim::Adopt),
            (relabel(orphan("d"), "api"), Claim::Ignore),
            (orphan("n"), Claim::Ignore),
            (foreign, Claim::Ignore),
            (dying, Claim::Ignore),
            (elsewhere, Claim::Ignore),
        ];
        for (set, want) in cases {
            assert_eq!(claim(&d, &set), want, "{:?}", set.metadata.name);
        }
        let mut deleting = d.clone();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert_eq!(claim(&deleting, &owned("a")), Claim::Keep);
        assert_eq!(claim(&deleting, &relabel(owned("b"), "api")), Claim::Ignore);
        assert_eq!(
            claim(&deleting, &relabel(orphan("c"), "web")),
            Claim::Ignore
        );
    }

    #[test]
    fn patches_carry_upstreams_owner_reference() {
        let d = rolling(1, 1, 0);
        assert_eq!(
            adopt_patch(&d, "rs-uid"),
            json!({"metadata": {"uid": "rs-uid", "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d-uid",
                "controller": true, "blockOwnerDeletion": true}]}})
        );
        assert_eq!(
            release_patch("d-uid", "rs-uid"),
            json!({"metadata": {"uid": "rs-uid", "ownerReferences": [{"$patch": "delete", "uid": "d-uid"}]}})
        );
    }

    #[test]
    fn selectors_with_bad_requirements_are_refused() {
        let sel = |v: serde_json::Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
        assert!(selector_error(&sel(json!({"matchLabels": {"a": "b"}}))).is_none());
        assert!(
            selector_error(&sel(
                json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["x"]}]})
            ))
            .is_none()
        );
        assert!(
            selector_error(&sel(
                json!({"matchExpressions": [{"key": "a", "operator": "In"}]})
            ))
            .is_some()
        );
        assert!(
            selector_error(&sel(
                json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]})
            ))
            .is_some()
        );
        assert!(
            selector_error(&sel(
                json!({"matchExpressions": [{"key": "a", "operator": "Near"}]})
            ))
            .is_some()
        );
    }
}
