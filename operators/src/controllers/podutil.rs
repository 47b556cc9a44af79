//! Pod and selector facts shared by the controllers, as upstream's podutil
//! and labels packages define them.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, ContainerStatus, EphemeralVolumeSource,
    PersistentVolumeClaimVolumeSource, Pod, PodCondition, PodSpec, PodStatus, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use crate::controllers::replicaset::ranking::POD_DELETION_COST_ANNOTATION;

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
pub fn ready_condition(pod: &Pod) -> Option<&PodCondition> {
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

/// Reduces a pod to what the controllers read, before the shared
/// informer stores it. The store holds every pod in the cluster, and what no
/// controller reads (managedFields, most annotations, commands, environments,
/// probes, volumes, container states) is most of a pod's size.
///
/// # The kept set
///
/// - metadata: `name`, `namespace`, `uid`, `resourceVersion`,
///   `creationTimestamp`, `deletionTimestamp`, `labels`, `ownerReferences`
///   (all of each), and of the annotations only
///   `controller.kubernetes.io/pod-deletion-cost`;
/// - spec: `nodeName`, `hostname`, `subdomain`; of each container and init
///   container its `name`, `restartPolicy` and `ports` (`name`,
///   `containerPort`, `protocol`); of the volumes only those that use a
///   claim, with their `name` and `persistentVolumeClaim.claimName`, or an
///   empty `ephemeral` (the PV binder finds the pods using a claim);
/// - status: `phase`, `podIP`, `podIPs`, the `Ready` conditions (`type`,
///   `status`, `lastTransitionTime`), and of each container and init
///   container status its `name` and `restartCount`.
///
/// Empty lists and maps become absent, as Go's JSON encoding leaves them
/// out; every reader treats the two alike.
///
/// This list is the contract between the JSON path (this function, applied
/// to what kube-runtime's watcher decoded) and the protobuf path
/// ([`crate::protobuf`], which decodes only these fields): both must store
/// identical pods, as the fixture test in `protobuf::convert` checks. A
/// controller that starts reading another field extends both.
pub fn trim_pod(pod: &mut Pod) {
    *pod = trimmed(std::mem::take(pod));
}

fn trimmed(pod: Pod) -> Pod {
    let meta = pod.metadata;
    Pod {
        metadata: ObjectMeta {
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            resource_version: meta.resource_version,
            creation_timestamp: meta.creation_timestamp,
            deletion_timestamp: meta.deletion_timestamp,
            labels: meta.labels.filter(|l| !l.is_empty()),
            annotations: meta
                .annotations
                .map(|mut a| {
                    a.retain(|k, _| is_kept_annotation(k.as_bytes()));
                    a
                })
                .filter(|a| !a.is_empty()),
            owner_references: meta.owner_references.and_then(non_empty),
            ..ObjectMeta::default()
        },
        spec: pod.spec.map(|spec| PodSpec {
            volumes: spec.volumes.and_then(|volumes| {
                non_empty(volumes.into_iter().filter_map(trimmed_volume).collect())
            }),
            containers: spec.containers.into_iter().map(trimmed_container).collect(),
            init_containers: spec
                .init_containers
                .and_then(|c| non_empty(c.into_iter().map(trimmed_container).collect())),
            node_name: spec.node_name,
            hostname: spec.hostname,
            subdomain: spec.subdomain,
            ..PodSpec::default()
        }),
        status: pod.status.map(|status| PodStatus {
            phase: status.phase,
            pod_ip: status.pod_ip,
            pod_ips: status.pod_ips.and_then(non_empty),
            conditions: ready_conditions(status.conditions.into_iter().flatten().map(|c| {
                PodCondition {
                    type_: c.type_,
                    status: c.status,
                    last_transition_time: c.last_transition_time,
                    ..PodCondition::default()
                }
            })),
            container_statuses: status.container_statuses.and_then(trimmed_statuses),
            init_container_statuses: status.init_container_statuses.and_then(trimmed_statuses),
            ..PodStatus::default()
        }),
    }
}

fn trimmed_volume(v: Volume) -> Option<Volume> {
    if let Some(pvc) = v.persistent_volume_claim {
        return Some(claim_volume(v.name, Some(pvc.claim_name), false));
    }
    v.ephemeral.map(|_| claim_volume(v.name, None, true))
}

/// A pod volume in the kept form: a claim's name, or an ephemeral volume
/// (whose claim is named after the pod and the volume).
pub(crate) fn claim_volume(name: String, claim_name: Option<String>, ephemeral: bool) -> Volume {
    Volume {
        name,
        persistent_volume_claim: claim_name.map(|claim_name| PersistentVolumeClaimVolumeSource {
            claim_name,
            ..PersistentVolumeClaimVolumeSource::default()
        }),
        ephemeral: ephemeral.then(EphemeralVolumeSource::default),
        ..Volume::default()
    }
}

fn trimmed_container(c: Container) -> Container {
    Container {
        name: c.name,
        restart_policy: c.restart_policy,
        ports: c.ports.and_then(|ports| {
            non_empty(
                ports
                    .into_iter()
                    .map(|p| ContainerPort {
                        name: p.name,
                        container_port: p.container_port,
                        protocol: p.protocol,
                        ..ContainerPort::default()
                    })
                    .collect(),
            )
        }),
        ..Container::default()
    }
}

fn trimmed_statuses(statuses: Vec<ContainerStatus>) -> Option<Vec<ContainerStatus>> {
    non_empty(
        statuses
            .into_iter()
            .map(|s| ContainerStatus {
                name: s.name,
                restart_count: s.restart_count,
                ..ContainerStatus::default()
            })
            .collect(),
    )
}

/// Whether an annotation is in the kept set.
pub(crate) fn is_kept_annotation(key: &[u8]) -> bool {
    key == POD_DELETION_COST_ANNOTATION.as_bytes()
}

/// The `Ready` conditions (the only ones any controller looks at), `None`
/// when there is none.
pub(crate) fn ready_conditions(
    conditions: impl IntoIterator<Item = PodCondition>,
) -> Option<Vec<PodCondition>> {
    non_empty(
        conditions
            .into_iter()
            .filter(|c| c.type_ == "Ready")
            .collect(),
    )
}

pub(crate) fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

#[cfg(test)]
mod trim_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn trimming_keeps_what_the_controllers_read() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "a"},
                         "annotations": {"controller.kubernetes.io/pod-deletion-cost": "5", "note": "x"},
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
                       "conditions": [{"type": "PodScheduled", "status": "True"},
                                      {"type": "Ready", "status": "True", "reason": "r"}],
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
        assert_eq!((cs.restart_count, cs.ready), (3, false));
        assert!(cs.state.is_none() && cs.image.is_empty());
        let conditions = status.conditions.as_ref().unwrap();
        assert_eq!(conditions.len(), 1);
        assert!(conditions[0].reason.is_none());
        assert!(pod.metadata.managed_fields.is_none());
        assert_eq!(
            pod.metadata.owner_references.as_ref().unwrap()[0].name,
            "rs"
        );
        assert_eq!(pod.metadata.annotations.as_ref().unwrap().len(), 1);

        let once = pod.clone();
        trim_pod(&mut pod);
        assert_eq!(pod, once, "trimming a trimmed pod changes nothing");
    }
}
