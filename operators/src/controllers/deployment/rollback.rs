//! Rollback by the `deprecated.deployment.rollback.to` annotation, which
//! round-trips extensions/v1beta1's `spec.rollbackTo` (upstream still honours
//! it in v1.37): the Deployment takes the template and annotations of the
//! ReplicaSet with that revision (0: the previous one), and the annotation is
//! cleared. `kubectl rollout undo` does not use it (it re-applies an old
//! template itself); either way the old set is then found as the new one
//! and gets the next revision. Pure decisions; rollout.rs applies them.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::annotations::{ROLLBACK_TO, last_revision, revision, set_deployment_annotations_to};
use super::sets::rs_template;
use super::template::{equal_ignore_hash, without_hash};

/// Event reasons (deployment_util.go).
pub const REVISION_NOT_FOUND: &str = "DeploymentRollbackRevisionNotFound";
pub const TEMPLATE_UNCHANGED: &str = "DeploymentRollbackTemplateUnchanged";
pub const DONE: &str = "DeploymentRollback";

/// The revision asked for, if the annotation holds a number.
pub fn rollback_to(d: &Deployment) -> Option<i64> {
    let value = d.metadata.annotations.as_ref()?.get(ROLLBACK_TO)?;
    if value.is_empty() {
        return None;
    }
    value.parse().ok()
}

pub fn clear_rollback_to(d: &mut Deployment) {
    if let Some(a) = d.metadata.annotations.as_mut() {
        a.remove(ROLLBACK_TO);
    }
}

#[derive(Debug, PartialEq)]
pub enum Rollback<'a> {
    /// No such revision; the Warning Event's message.
    NotFound(&'static str),
    /// The set to go back to, and its revision.
    To(&'a ReplicaSet, i64),
}

pub fn decide<'a>(d: &Deployment, all: &[&'a ReplicaSet]) -> Rollback<'a> {
    let mut wanted = rollback_to(d).unwrap_or(0);
    if wanted == 0 {
        wanted = last_revision(all.iter().copied());
        if wanted == 0 {
            return Rollback::NotFound("Unable to find last revision.");
        }
    }
    all.iter()
        .find(|rs| revision(rs).is_ok_and(|v| v == wanted))
        .map_or(
            Rollback::NotFound("Unable to find the revision to rollback to."),
            |rs| Rollback::To(rs, wanted),
        )
}

/// Puts the set's template (hash label removed) and annotations on the
/// Deployment; false when the templates were already equal.
pub fn apply(d: &mut Deployment, rs: &ReplicaSet) -> bool {
    let template = rs_template(rs);
    if equal_ignore_hash(&d.spec.template, &template) {
        return false;
    }
    d.spec.template = without_hash(&template);
    set_deployment_annotations_to(d, rs);
    true
}

#[cfg(test)]
mod tests {
    use super::super::annotations::REVISION;
    use super::super::sets::fixtures::*;
    use super::*;
    use kube::ResourceExt;

    fn asking(rev: &str) -> Deployment {
        let mut d = rolling(1, 1, 0);
        d.metadata.annotations = Some([(ROLLBACK_TO.to_string(), rev.to_string())].into());
        d
    }

    #[test]
    fn the_annotation_names_a_revision() {
        assert_eq!(rollback_to(&asking("3")), Some(3));
        assert_eq!(rollback_to(&asking("")), None);
        assert_eq!(rollback_to(&asking("x")), None);
        assert_eq!(rollback_to(&rolling(1, 1, 0)), None);
        let mut d = asking("3");
        clear_rollback_to(&mut d);
        assert_eq!(rollback_to(&d), None);
    }

    #[test]
    fn revision_zero_means_the_previous_one() {
        let a = annotate(rs("a", 1, 0, 0), &[(REVISION, "1")]);
        let b = annotate(rs("b", 2, 0, 0), &[(REVISION, "2")]);
        let c = annotate(rs("c", 3, 1, 1), &[(REVISION, "3")]);
        let all = [&a, &b, &c];
        let name = |r: Rollback<'_>| match r {
            Rollback::To(rs, v) => format!("{} {v}", rs.name_any()),
            Rollback::NotFound(m) => m.to_string(),
        };
        assert_eq!(name(decide(&asking("0"), &all)), "b 2");
        assert_eq!(name(decide(&asking("1"), &all)), "a 1");
        assert_eq!(
            name(decide(&asking("9"), &all)),
            "Unable to find the revision to rollback to."
        );
        assert_eq!(
            name(decide(&asking("0"), &[&c])),
            "Unable to find last revision."
        );
    }

    #[test]
    fn applying_takes_template_and_annotations() {
        let target = annotate(rs("a", 1, 0, 0), &[(REVISION, "1"), ("cause", "create")]);
        let mut d = asking("1");
        assert!(apply(&mut d, &target));
        let labels = d
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        assert!(!labels.contains_key("pod-template-hash"));
        assert!(equal_ignore_hash(&d.spec.template, &rs_template(&target)));
        let a = d.metadata.annotations.clone().unwrap();
        assert_eq!(a.get("cause").map(String::as_str), Some("create"));
        assert_eq!(
            a.get(ROLLBACK_TO).map(String::as_str),
            Some("1"),
            "cleared separately"
        );
        assert!(!apply(&mut d, &target), "already there");
    }
}
