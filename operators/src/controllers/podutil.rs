//! Pod and selector facts shared by the controllers, as upstream's podutil
//! and labels packages define them.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};

/// The label a Deployment puts on its ReplicaSets and their pods.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// A pod that still counts: not finished and not being deleted
/// (upstream's `controller.IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded") | Some("Failed"))
        && pod.metadata.deletion_timestamp.is_none()
}

pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// The pod's `Ready` condition, if any.
pub fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// Ready for at least `min_ready_seconds` at `now` (upstream's
/// `IsPodAvailable`).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    let Some(cond) = ready_condition(pod).filter(|c| c.status == "True") else {
        return false;
    };
    if min_ready_seconds <= 0 {
        return true;
    }
    match cond.last_transition_time.as_ref() {
        Some(t) => t.0.as_second() + i64::from(min_ready_seconds) <= now.as_second(),
        None => false,
    }
}

/// The controller owner reference of an object, if any.
pub fn controller_of(owners: Option<&Vec<OwnerReference>>) -> Option<&OwnerReference> {
    owners?.iter().find(|o| o.controller == Some(true))
}

/// Whether a `LabelSelector` selects `labels`. An empty selector selects
/// everything; an invalid operator selects nothing (as upstream, which
/// refuses to convert it).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    if let Some(ml) = &selector.match_labels
        && ml.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    for expr in selector.match_expressions.iter().flatten() {
        let value = labels.get(&expr.key);
        let values = expr.values.as_deref().unwrap_or_default();
        let ok = match expr.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Whether a selector is empty (selects everything). Controllers refuse
/// empty selectors, as upstream's validation and controllers do.
pub fn selector_is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty())
}

/// Whether a Service-style map selector selects `labels` (empty selects nothing
/// here: Services without a selector are not managed).
pub fn map_selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ]
        }))
        .unwrap();
        assert!(selector_matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "a")])
        ));
        assert!(!selector_matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "c")])
        ));
        assert!(!selector_matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "a"), ("canary", "1")])
        ));
        assert!(!selector_matches(&sel, &labels(&[("tier", "a")])));
        assert!(selector_matches(&LabelSelector::default(), &labels(&[])));
        assert!(selector_is_empty(&LabelSelector::default()));
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
            ]}
        }))
        .unwrap();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        assert!(is_ready(&pod));
        assert!(is_available(&pod, 0, t0));
        assert!(!is_available(&pod, 10, t0));
        assert!(is_available(
            &pod,
            10,
            "2026-01-01T00:00:10Z".parse().unwrap()
        ));
        assert!(is_active(&pod));
    }

    #[test]
    fn empty_service_selector_selects_nothing() {
        assert!(!map_selector_matches(&labels(&[]), &labels(&[("a", "b")])));
        assert!(map_selector_matches(
            &labels(&[("a", "b")]),
            &labels(&[("a", "b"), ("c", "d")])
        ));
    }
}

/// Keeps only what the four controllers read of a pod, before the shared
/// informer stores it (as upstream's informer transforms drop managedFields):
/// metadata; nodeName, hostname, subdomain; each container's name, ports and
/// restartPolicy; phase, conditions, IPs and restart counts. The store holds
/// every pod in the cluster, and commands, environments, probes, volumes and
/// container states are most of a pod's size.
pub fn trim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    if let Some(spec) = pod.spec.as_mut() {
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            *c = k8s_openapi::api::core::v1::Container {
                name: std::mem::take(&mut c.name),
                ports: c.ports.take(),
                restart_policy: c.restart_policy.take(),
                ..Default::default()
            };
        }
        spec.ephemeral_containers = None;
        spec.volumes = None;
        spec.affinity = None;
        spec.tolerations = None;
        spec.topology_spread_constraints = None;
        spec.security_context = None;
        spec.image_pull_secrets = None;
        spec.dns_config = None;
        spec.resource_claims = None;
        spec.resources = None;
        spec.overhead = None;
        spec.node_selector = None;
    }
    if let Some(status) = pod.status.as_mut() {
        for s in status
            .container_statuses
            .iter_mut()
            .flatten()
            .chain(status.init_container_statuses.iter_mut().flatten())
        {
            *s = k8s_openapi::api::core::v1::ContainerStatus {
                name: std::mem::take(&mut s.name),
                restart_count: s.restart_count,
                ready: s.ready,
                ..Default::default()
            };
        }
        status.ephemeral_container_statuses = None;
        status.resource_claim_statuses = None;
        status.message = None;
    }
}

#[cfg(test)]
mod trim_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn trimming_keeps_what_the_controllers_read() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "a"},
                         "annotations": {"controller.kubernetes.io/pod-deletion-cost": "5"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "r", "controller": true}],
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {
                "nodeName": "n1", "hostname": "h", "subdomain": "s",
                "containers": [{"name": "c", "image": "nginx", "env": [{"name": "A", "value": "b"}],
                                "ports": [{"name": "http", "containerPort": 8080}]}],
                "initContainers": [{"name": "side", "image": "x", "restartPolicy": "Always",
                                    "ports": [{"name": "m", "containerPort": 9090}]}],
                "volumes": [{"name": "v", "emptyDir": {}}],
            },
            "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}],
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "c", "image": "nginx", "imageID": "", "ready": true, "restartCount": 3,
                                              "state": {"running": {}}}]},
        }))
        .unwrap();
        trim_pod(&mut pod);
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!(
            (spec.hostname.as_deref(), spec.subdomain.as_deref()),
            (Some("h"), Some("s"))
        );
        assert_eq!(
            spec.containers[0].ports.as_ref().unwrap()[0].container_port,
            8080
        );
        assert!(spec.containers[0].env.is_none() && spec.containers[0].image.is_none());
        let side = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(side.restart_policy.as_deref(), Some("Always"));
        assert!(side.ports.is_some());
        assert!(spec.volumes.is_none());
        let status = pod.status.as_ref().unwrap();
        assert!(is_ready(&pod));
        assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.1"));
        let cs = &status.container_statuses.as_ref().unwrap()[0];
        assert_eq!((cs.restart_count, cs.ready), (3, true));
        assert!(cs.state.is_none());
        assert!(pod.metadata.managed_fields.is_none());
        assert_eq!(
            pod.metadata.owner_references.as_ref().unwrap()[0].name,
            "rs"
        );
        assert_eq!(pod.metadata.annotations.as_ref().unwrap().len(), 1);
    }
}
