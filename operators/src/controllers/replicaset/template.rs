//! The pods a ReplicaSet creates (upstream's `GetPodFromTemplate` and
//! `NewControllerRef`).

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// Longest object name (a DNS subdomain).
const MAX_NAME_LENGTH: usize = 253;

/// The ownerReference a ReplicaSet puts on its pods, or `None` for a
/// ReplicaSet without name or UID.
pub fn controller_ref(rs: &ReplicaSet) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: rs.metadata.name.clone()?,
        uid: rs.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// `<name>-`, or the bare name when the dash would make it too long.
pub fn generate_name_prefix(name: &str) -> String {
    if name.len() < MAX_NAME_LENGTH {
        format!("{name}-")
    } else {
        name.to_string()
    }
}

/// A new pod from the ReplicaSet's template: its labels, annotations,
/// finalizers and spec, owned by `owner`. Errors (with upstream's message)
/// when the template has no labels, which the apiserver would accept but
/// the ReplicaSet could never select.
pub fn pod_from_template(rs: &ReplicaSet, owner: OwnerReference) -> Result<Pod, String> {
    let template = rs.spec.template.as_ref();
    let meta = template.and_then(|t| t.metadata.as_ref());
    let labels = meta
        .and_then(|m| m.labels.clone())
        .filter(|l| !l.is_empty());
    if labels.is_none() {
        return Err("unable to create pods, no labels".into());
    }
    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name_prefix(
                rs.metadata.name.as_deref().unwrap_or_default(),
            )),
            labels,
            annotations: meta
                .and_then(|m| m.annotations.clone())
                .filter(|a| !a.is_empty()),
            finalizers: meta
                .and_then(|m| m.finalizers.clone())
                .filter(|f| !f.is_empty()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.and_then(|t| t.spec.clone()),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rs(template: serde_json::Value) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template}
        }))
        .unwrap()
    }

    #[test]
    fn pods_copy_the_template_and_point_at_the_replica_set() {
        let rs = rs(json!({
            "metadata": {
                "name": "ignored", "namespace": "ignored",
                "labels": {"app": "web"},
                "annotations": {"a": "b"},
                "finalizers": ["example.com/f"],
                "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "x"}]
            },
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        }));
        let owner = controller_ref(&rs).unwrap();
        let pod = pod_from_template(&rs, owner).unwrap();
        assert_eq!(
            serde_json::to_value(&pod).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "generateName": "web-",
                    "labels": {"app": "web"},
                    "annotations": {"a": "b"},
                    "finalizers": ["example.com/f"],
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": "web", "uid": "u1", "controller": true, "blockOwnerDeletion": true}]
                },
                "spec": {"containers": [{"name": "c", "image": "i"}]}
            })
        );
    }

    #[test]
    fn a_template_without_labels_is_refused() {
        let rs = rs(json!({"spec": {"containers": []}}));
        let owner = controller_ref(&rs).unwrap();
        assert_eq!(
            pod_from_template(&rs, owner),
            Err("unable to create pods, no labels".into())
        );
    }

    #[test]
    fn long_names_get_no_dash() {
        assert_eq!(generate_name_prefix("a"), "a-");
        let long = "a".repeat(253);
        assert_eq!(generate_name_prefix(&long), long);
        let fits = "a".repeat(252);
        assert_eq!(generate_name_prefix(&fits), format!("{fits}-"));
    }
}
