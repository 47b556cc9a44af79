//! Upstream's hint tables (each plugin's `Test…isSchedulableAfter…` and
//! `TestEventsToRegister`), one row per upstream case, named as upstream.
//! Upstream's "wrong object type" rows become rows with an object of
//! another kind, answered with `Queue`.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use serde_json::{Value, json};

use super::QueueingHint::{Queue, QueueSkip};
use super::node::*;
use super::*;
use crate::framework::{NodeInfo, PodInfo};

mod events_tests;
mod pod_plugins;
mod volume_plugins;

/// A pod from a JSON object (metadata defaulted to `default/p`).
pub(super) fn pod(v: Value) -> PodInfo {
    let mut v = v;
    if v.get("metadata").is_none() {
        v["metadata"] = json!({});
    }
    let meta = v["metadata"].as_object_mut().unwrap();
    meta.entry("name").or_insert(json!("p"));
    meta.entry("namespace").or_insert(json!("default"));
    if v.get("spec").is_none() {
        v["spec"] = json!({});
    }
    if v["spec"].get("containers").is_none() {
        v["spec"]["containers"] = json!([]);
    }
    let pod: Pod = serde_json::from_value(v).expect("test pod");
    PodInfo::new(Arc::new(pod))
}

/// A pod whose only container requests `requests`, bound to `node` if set.
pub(super) fn pod_req(name: &str, requests: Value, node: Option<&str>) -> PodInfo {
    let mut spec = json!({"containers": [{"name": "c", "resources": {"requests": requests}}]});
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    pod(json!({"metadata": {"name": name}, "spec": spec}))
}

/// A node from a JSON object (named `n` unless set).
pub(super) fn node(v: Value) -> NodeInfo {
    let mut v = v;
    if v.get("metadata").is_none() {
        v["metadata"] = json!({"name": "n"});
    }
    let node: Node = serde_json::from_value(v).expect("test node");
    NodeInfo::new(Arc::new(node))
}

/// Upstream's `st.MakeNode().Capacity(resources)`: capacity and allocatable
/// both, with 32 pods.
pub(super) fn node_capacity(resources: Value) -> NodeInfo {
    let mut alloc = json!({"pods": "32"});
    for (k, v) in resources.as_object().unwrap() {
        alloc[k] = v.clone();
    }
    node(json!({"status": {"capacity": alloc.clone(), "allocatable": alloc}}))
}

pub(super) fn node_labels(labels: Value) -> NodeInfo {
    node(json!({"metadata": {"name": "n", "labels": labels}}))
}

pub(super) fn pvc(namespace: &str, name: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": namespace}})).unwrap()
}

/// The hint of `plugin`'s registration that `incoming` matches (the only one).
pub(super) fn registered_hint(
    registrations: &[ClusterEventWithHint],
    incoming: ClusterEvent,
) -> QueueingHintFn {
    let matching: Vec<_> = registrations
        .iter()
        .filter(|r| r.event.matches(&incoming))
        .collect();
    assert_eq!(matching.len(), 1, "registrations matching {incoming:?}");
    matching[0].hint.clone().expect("a hint")
}

type NodeCase<'a> = (
    &'a str,
    PodInfo,
    Option<NodeInfo>,
    Option<NodeInfo>,
    QueueingHint,
);
type PodCase<'a> = (
    &'a str,
    PodInfo,
    Option<PodInfo>,
    Option<PodInfo>,
    QueueingHint,
);

fn run_node_cases(
    hint: impl Fn(&PodInfo, Option<Object<'_>>, Option<Object<'_>>) -> QueueingHint,
    cases: Vec<NodeCase<'_>>,
) {
    for (name, p, old, new, want) in cases {
        let got = hint(
            &p,
            old.as_ref().map(Object::Node),
            new.as_ref().map(Object::Node),
        );
        assert_eq!(got, want, "{name}");
    }
}

pub(super) fn run_pod_cases(
    hint: impl Fn(&PodInfo, Option<Object<'_>>, Option<Object<'_>>) -> QueueingHint,
    cases: Vec<PodCase<'_>>,
) {
    for (name, p, old, new, want) in cases {
        let got = hint(
            &p,
            old.as_ref().map(Object::Pod),
            new.as_ref().map(Object::Pod),
        );
        assert_eq!(got, want, "{name}");
    }
}

/// Upstream's error rows: an object of the wrong kind always queues.
fn assert_wrong_kind_queues(
    hint: impl Fn(&PodInfo, Option<Object<'_>>, Option<Object<'_>>) -> QueueingHint,
) {
    let p = pod(json!({}));
    let claim = pvc("default", "c");
    let wrong = Some(Object::PersistentVolumeClaim(&claim));
    assert_eq!(hint(&p, None, wrong), Queue, "wrong new object");
    assert_eq!(hint(&p, wrong, None), Queue, "wrong old object");
}

#[test]
fn action_type_bits_and_names_as_upstream() {
    assert_eq!(ActionType::ADD.0, 1);
    assert_eq!(ActionType::DELETE.0, 2);
    assert_eq!(ActionType::UPDATE_POD_GENERATED_RESOURCE_CLAIM.0, 1 << 14);
    assert_eq!(ActionType::ALL.0, (1 << 15) - 1);
    assert_eq!(ActionType::UPDATE.0, ActionType::ALL.0 - 3);
    assert_eq!(ActionType::UPDATE.name(), "Update");
    assert_eq!(
        format!("{:?}", ActionType::ADD | ActionType::UPDATE_NODE_TAINT),
        "ActionType(0x11)"
    );
    assert_eq!(
        ClusterEvent::new(EventResource::Node, ActionType::UPDATE_NODE_TAINT).label(),
        "NodeUpdateNodeTaint"
    );
    assert_eq!(
        ClusterEvent::new(EventResource::CSINode, ActionType::ADD).label(),
        "storage.k8s.io/CSINodeAdd"
    );
}

/// Upstream's TestMatchClusterEvents (pkg/scheduler/framework/types_test.go).
#[test]
fn match_cluster_events() {
    use ActionType as A;
    use EventResource as R;
    let ev = ClusterEvent::new;
    let cases = [
        (
            "specific events match",
            ev(R::Node, A::ADD | A::UPDATE_NODE_LABEL),
            ev(R::Node, A::UPDATE_NODE_LABEL),
            true,
        ),
        (
            "registered event doesn't cover the incoming action",
            ev(R::Node, A::ADD | A::UPDATE_NODE_LABEL),
            ev(R::Node, A::UPDATE_NODE_TAINT),
            false,
        ),
        (
            "wildcard resource matches",
            ev(R::WildCard, A::ADD),
            ev(R::Node, A::ADD),
            true,
        ),
        (
            "wildcard event matches everything",
            ClusterEvent::WILDCARD,
            ev(R::PersistentVolume, A::DELETE),
            true,
        ),
        (
            "Pod matches AssignedPod",
            ev(R::Pod, A::ADD),
            ev(R::AssignedPod, A::ADD),
            true,
        ),
        (
            "Pod matches TargetPod",
            ev(R::Pod, A::UPDATE_POD_LABEL),
            ev(R::TargetPod, A::UPDATE_POD_LABEL),
            true,
        ),
        (
            "AssignedPod does not match UnscheduledPod",
            ev(R::AssignedPod, A::ADD),
            ev(R::UnscheduledPod, A::ADD),
            false,
        ),
        (
            "general Update reaches a registration for all of Update",
            ev(R::Node, A::UPDATE),
            ev(R::Node, A::UPDATE),
            true,
        ),
        (
            "general Update does not reach a specific update registration",
            ev(R::Node, A::ADD | A::UPDATE_NODE_LABEL),
            ev(R::Node, A::UPDATE),
            false,
        ),
        (
            "different resources",
            ev(R::Node, A::ALL),
            ev(R::PersistentVolume, A::ADD),
            false,
        ),
    ];
    for (name, registered, incoming, want) in cases {
        assert_eq!(registered.matches(&incoming), want, "{name}");
    }
}

/// Every plugin of the registry is known here, and those upstream gives
/// EventsToRegister register exactly upstream's v1.37 events.
#[test]
fn events_to_register() {
    use ActionType as A;
    use EventResource as R;
    let events = |plugin: &str| -> Vec<(EventResource, ActionType, bool)> {
        for_plugin(plugin, None)
            .unwrap()
            .iter()
            .map(|e| (e.event.resource, e.event.action, e.hint.is_some()))
            .collect()
    };
    for (name, _) in crate::plugins::registry() {
        assert!(
            !events(name).iter().any(|(r, _, _)| *r == R::WildCard),
            "{name} falls back to the wildcard"
        );
    }
    assert_eq!(
        events("NodeResourcesFit"),
        vec![
            (R::AssignedPod, A::DELETE, true),
            (R::Node, A::ADD | A::UPDATE_NODE_ALLOCATABLE, true),
            (R::AssignedPod, A::UPDATE_POD_SCALE_DOWN, true),
            (R::TargetPod, A::UPDATE_POD_SCALE_DOWN, true),
        ]
    );
    assert_eq!(
        events("NodeDeclaredFeatures"),
        vec![
            (R::Node, A::ADD | A::UPDATE_NODE_DECLARED_FEATURE, true),
            (R::TargetPod, A::UPDATE, true),
        ]
    );
    assert_eq!(events("NodeName"), vec![(R::Node, A::ADD, false)]);
    assert_eq!(
        events("NodePorts"),
        vec![(R::AssignedPod, A::DELETE, true), (R::Node, A::ADD, false)]
    );
    assert_eq!(
        events("TaintToleration"),
        vec![
            (R::Node, A::ADD | A::UPDATE_NODE_TAINT, true),
            (R::TargetPod, A::UPDATE_POD_TOLERATION, true),
        ]
    );
    assert_eq!(
        events("SchedulingGates"),
        vec![(
            R::TargetPod,
            A::UPDATE_POD_SCHEDULING_GATES_ELIMINATED,
            true
        )]
    );
    assert_eq!(
        events("NodeUnschedulable"),
        vec![
            (R::Node, A::ADD | A::UPDATE_NODE_TAINT, true),
            (R::TargetPod, A::UPDATE_POD_TOLERATION, true),
        ]
    );
    assert_eq!(
        events("NodeAffinity"),
        vec![(R::Node, A::ADD | A::UPDATE_NODE_LABEL, true)]
    );
    assert_eq!(
        events("InterPodAffinity"),
        vec![
            (
                R::AssignedPod,
                A::ADD | A::UPDATE_POD_LABEL | A::DELETE,
                true
            ),
            (R::TargetPod, A::UPDATE_POD_LABEL, true),
            (R::Node, A::ADD | A::UPDATE_NODE_LABEL, true),
        ]
    );
    assert_eq!(
        events("PodTopologySpread"),
        vec![
            (
                R::AssignedPod,
                A::ADD | A::UPDATE_POD_LABEL | A::DELETE,
                true
            ),
            (
                R::TargetPod,
                A::UPDATE_POD_TOLERATION | A::UPDATE_POD_LABEL,
                true
            ),
            (
                R::Node,
                A::ADD | A::DELETE | A::UPDATE_NODE_LABEL | A::UPDATE_NODE_TAINT,
                true
            ),
        ]
    );
    assert_eq!(
        events("VolumeRestrictions"),
        vec![
            (R::AssignedPod, A::DELETE, true),
            (R::Node, A::ADD, false),
            (R::PersistentVolumeClaim, A::ADD, true),
        ]
    );
    assert_eq!(
        events("NodeVolumeLimits"),
        vec![
            (R::CSINode, A::ADD, false),
            (R::CSINode, A::UPDATE, true),
            (R::AssignedPod, A::DELETE, true),
            (R::PersistentVolumeClaim, A::ADD, true),
            (R::VolumeAttachment, A::DELETE, true),
        ]
    );
    assert_eq!(
        events("VolumeZone"),
        vec![
            (R::StorageClass, A::ADD, true),
            (R::Node, A::ADD | A::UPDATE_NODE_LABEL, false),
            (R::PersistentVolumeClaim, A::ADD | A::UPDATE, true),
            (R::PersistentVolume, A::ADD | A::UPDATE, true),
        ]
    );
    assert_eq!(
        events("VolumeBinding"),
        vec![
            (R::StorageClass, A::ADD | A::UPDATE, true),
            (R::PersistentVolumeClaim, A::ADD | A::UPDATE, true),
            (R::PersistentVolume, A::ADD | A::UPDATE, false),
            (R::Node, A::ADD | A::UPDATE_NODE_LABEL, false),
            (R::CSINode, A::ADD | A::UPDATE, true),
            (R::CSIDriver, A::UPDATE, true),
            (R::CSIStorageCapacity, A::ADD | A::UPDATE, true),
        ]
    );
    assert_eq!(
        events("DefaultPreemption"),
        vec![(R::AssignedPod, A::DELETE, true)]
    );
    assert!(events("NodeResourcesBalancedAllocation").is_empty());
    assert!(events("ImageLocality").is_empty());
    assert_eq!(
        events("SomeOutOfTreePlugin"),
        vec![(R::WildCard, A::ALL, false)]
    );
}

#[test]
fn wrong_object_kinds_queue() {
    assert_wrong_kind_queues(node_unschedulable_after_node_change);
    assert_wrong_kind_queues(node_unschedulable_after_toleration_change);
    assert_wrong_kind_queues(taint_toleration_after_node_change);
    assert_wrong_kind_queues(node_ports_after_pod_deleted);
    assert_wrong_kind_queues(fit_after_assigned_pod_delete);
    assert_wrong_kind_queues(fit_after_assigned_pod_scale_down);
    assert_wrong_kind_queues(fit_after_node_change);
    assert_wrong_kind_queues(declared_features_after_node_change);
    assert_wrong_kind_queues(declared_features_after_pod_update);
}

/// nodeunschedulable TestIsSchedulableAfterNodeChange.
#[test]
fn node_unschedulable_node_change() {
    let n = |spec: Value| Some(node(json!({"metadata": {"name": "n"}, "spec": spec})));
    let not_ready = json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]);
    run_node_cases(
        node_unschedulable_after_node_change,
        vec![
            (
                "skip-queue-on-unschedulable-node-added",
                pod(json!({})),
                None,
                n(json!({"unschedulable": true})),
                QueueSkip,
            ),
            (
                "queue-on-schedulable-node-added",
                pod(json!({})),
                None,
                n(json!({"unschedulable": false})),
                Queue,
            ),
            (
                "skip-unrelated-change-unschedulable-true",
                pod(json!({})),
                n(json!({"unschedulable": true})),
                n(json!({"unschedulable": true, "taints": not_ready})),
                QueueSkip,
            ),
            (
                "skip-unrelated-change-unschedulable-false",
                pod(json!({})),
                n(json!({"unschedulable": false})),
                n(json!({"unschedulable": false, "taints": not_ready})),
                QueueSkip,
            ),
            (
                "queue-on-unschedulable-field-change",
                pod(json!({})),
                n(json!({"unschedulable": true})),
                n(json!({"unschedulable": false})),
                Queue,
            ),
        ],
    );
}

/// nodeunschedulable TestIsSchedulableAfterPodTolerationChange.
#[test]
fn node_unschedulable_toleration_change() {
    let tolerating =
        |key: &str| pod(json!({"spec": {"tolerations": [{"key": key, "operator": "Exists"}]}}));
    run_pod_cases(
        node_unschedulable_after_toleration_change,
        vec![
            (
                "queue-when-the-unsched-pod-gets-toleration",
                pod(json!({})),
                Some(pod(json!({}))),
                Some(tolerating("node.kubernetes.io/unschedulable")),
                Queue,
            ),
            (
                "skip-when-the-unsched-pod-gets-unrelated-toleration",
                pod(json!({})),
                Some(pod(json!({}))),
                Some(tolerating("unrelated-key")),
                QueueSkip,
            ),
        ],
    );
}

/// tainttoleration TestIsSchedulableAfterNodeChange, plus the removal of
/// an unreachable taint (issue 16's asymmetric case).
#[test]
fn taint_toleration_node_change() {
    let tolerating_user2 = || {
        pod(json!({"spec": {"tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "user2", "effect": "NoSchedule"}
        ]}}))
    };
    let tainted = |values: &[&str]| {
        let taints: Vec<Value> = values
            .iter()
            .map(|v| json!({"key": "dedicated", "value": v, "effect": "NoSchedule"}))
            .collect();
        Some(node(
            json!({"metadata": {"name": "nodeA"}, "spec": {"taints": taints}}),
        ))
    };
    let unreachable = Some(node(
        json!({"metadata": {"name": "nodeA"}, "spec": {"taints": [
            {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}
        ]}}),
    ));
    let untainted = Some(node(json!({"metadata": {"name": "nodeA"}})));
    run_node_cases(
        taint_toleration_after_node_change,
        vec![
            (
                "skip-queue-on-untoleratedtaint-node-added",
                tolerating_user2(),
                None,
                tainted(&["user1"]),
                QueueSkip,
            ),
            (
                "queue-on-toleratedtaint-node-added",
                tolerating_user2(),
                None,
                tainted(&["user2"]),
                Queue,
            ),
            (
                "skip-unrelated-change",
                tolerating_user2(),
                tainted(&["user1"]),
                tainted(&["user1", "user3"]),
                QueueSkip,
            ),
            (
                "queue-on-taint-change",
                tolerating_user2(),
                tainted(&["user1"]),
                tainted(&["user2"]),
                Queue,
            ),
            (
                "queue-on-unreachable-taint-removed",
                pod(json!({})),
                unreachable.clone(),
                untainted.clone(),
                Queue,
            ),
            (
                "skip-on-unreachable-taint-added",
                pod(json!({})),
                untainted,
                unreachable,
                QueueSkip,
            ),
        ],
    );
}

/// tainttoleration Test_isSchedulableAfterTargetPodTolerationChange.
#[test]
fn taint_toleration_target_pod_toleration_change() {
    let regs = taint_toleration();
    let hint = registered_hint(
        &regs,
        ClusterEvent::new(EventResource::TargetPod, ActionType::UPDATE_POD_TOLERATION),
    );
    let old = pod(json!({"metadata": {"name": "pod-1", "namespace": "ns-1"}}));
    let new = pod(json!({"metadata": {"name": "pod-1", "namespace": "ns-1"},
        "spec": {"tolerations": [{"key": "foo", "effect": "NoSchedule"}]}}));
    run_pod_cases(
        hint.as_ref(),
        vec![(
            "queue-on-toleration-added",
            old.clone(),
            Some(old),
            Some(new),
            Queue,
        )],
    );
}

/// nodeaffinity Test_isSchedulableAfterNodeChange.
#[test]
fn node_affinity_node_change() {
    let with_affinity = || {
        pod(
            json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "foo", "operator": "In", "values": ["bar"]}]}]
            }}}}}),
        )
    };
    let plain = || Some(node(json!({"metadata": {"name": "n"}})));
    let labelled = |k: &str, v: &str| Some(node_labels(json!({k: v})));
    let capacity = || Some(node_capacity(json!({})));
    let capacity_labelled = || {
        Some(node(
            json!({"metadata": {"name": "n", "labels": {"foo": "bar"}},
            "status": {"capacity": {"pods": "32"}, "allocatable": {"pods": "32"}}}),
        ))
    };
    let added_affinity = json!({"addedAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "foo", "operator": "In", "values": ["bar"]}]}]
    }}});
    let event = ClusterEvent::new(EventResource::Node, ActionType::ADD);
    let plain_hint = registered_hint(&node_affinity(None).unwrap(), event);
    let enforced_hint = registered_hint(&node_affinity(Some(&added_affinity)).unwrap(), event);
    assert_wrong_kind_queues(plain_hint.as_ref());
    run_node_cases(
        plain_hint.as_ref(),
        vec![
            (
                "skip-queue-on-add",
                with_affinity(),
                None,
                plain(),
                QueueSkip,
            ),
            (
                "queue-on-add",
                with_affinity(),
                None,
                labelled("foo", "bar"),
                Queue,
            ),
            (
                "skip-unrelated-changes",
                with_affinity(),
                plain(),
                capacity(),
                QueueSkip,
            ),
            (
                "skip-unrelated-changes-on-labels",
                with_affinity(),
                plain(),
                labelled("k", "v"),
                QueueSkip,
            ),
            (
                "skip-labels-changes-on-node-from-suitable-to-unsuitable",
                with_affinity(),
                labelled("foo", "bar"),
                labelled("k", "v"),
                QueueSkip,
            ),
            (
                "queue-on-labels-change-makes-pod-schedulable",
                with_affinity(),
                plain(),
                labelled("foo", "bar"),
                Queue,
            ),
            (
                "skip-unrelated-change-that-keeps-pod-schedulable",
                with_affinity(),
                labelled("foo", "bar"),
                capacity_labelled(),
                QueueSkip,
            ),
        ],
    );
    run_node_cases(
        enforced_hint.as_ref(),
        vec![
            (
                "skip-queue-on-add-scheduler-enforced-node-affinity",
                with_affinity(),
                None,
                plain(),
                QueueSkip,
            ),
            (
                "queue-on-add-scheduler-enforced-node-affinity",
                with_affinity(),
                None,
                labelled("foo", "bar"),
                Queue,
            ),
        ],
    );
}

/// nodeports Test_isSchedulableAfterAssignedPodDeleted.
#[test]
fn node_ports_assigned_pod_deleted() {
    let with_port = |port: Option<i32>, node: Option<&str>| {
        let mut spec = json!({"containers": []});
        if let Some(port) = port {
            spec["containers"] = json!([{"name": "container", "image": "pause",
                "ports": [{"containerPort": port, "hostPort": port}]}]);
        }
        if let Some(n) = node {
            spec["nodeName"] = json!(n);
        }
        pod(json!({"spec": spec}))
    };
    run_pod_cases(
        node_ports_after_pod_deleted,
        vec![
            (
                "skip-queue-on-unscheduled",
                with_port(Some(8080), None),
                Some(with_port(None, None)),
                None,
                QueueSkip,
            ),
            (
                "skip-queue-on-non-hostport",
                with_port(Some(8080), None),
                Some(with_port(None, Some("fake-node"))),
                None,
                QueueSkip,
            ),
            (
                "skip-queue-on-unrelated-hostport",
                with_port(Some(8080), None),
                Some(with_port(Some(8081), Some("fake-node"))),
                None,
                QueueSkip,
            ),
            (
                "queue-on-released-hostport",
                with_port(Some(8080), None),
                Some(with_port(Some(8080), Some("fake-node"))),
                None,
                Queue,
            ),
        ],
    );
}

fn nominated(mut p: PodInfo, node: &str) -> PodInfo {
    let mut pod = (*p.pod).clone();
    pod.status.get_or_insert_default().nominated_node_name = Some(node.into());
    p.pod = Arc::new(pod);
    p
}

/// noderesources Test_isSchedulableAfterAssignedPodDelete (the rows for the
/// alpha deferred-resize gate are left out: the gate is off in v1.37).
#[test]
fn fit_assigned_pod_delete() {
    run_pod_cases(
        fit_after_assigned_pod_delete,
        vec![
            (
                "queue-on-other-pod-deleted",
                pod_req("pod1", json!({"cpu": "1"}), None),
                Some(pod_req("pod2", json!({"cpu": "1"}), Some("fake"))),
                None,
                Queue,
            ),
            (
                "skip-queue-on-unscheduled-pod-deleted",
                pod(json!({})),
                Some(pod(json!({}))),
                None,
                QueueSkip,
            ),
            (
                "queue-on-nominated-pod-deleted",
                pod_req("pod1", json!({"cpu": "1"}), None),
                Some(nominated(
                    pod_req("pod2", json!({"cpu": "2"}), None),
                    "fake",
                )),
                None,
                Queue,
            ),
        ],
    );
}

/// noderesources Test_isSchedulableAfterTargetPodScaleDown.
#[test]
fn fit_target_pod_scale_down() {
    let regs = node_resources_fit(None).unwrap();
    let hint = registered_hint(
        &regs,
        ClusterEvent::new(EventResource::TargetPod, ActionType::UPDATE_POD_SCALE_DOWN),
    );
    let pod_level = pod(json!({"spec": {"containers": [{"name": "c"}],
        "resources": {"requests": {"cpu": "1"}}}}));
    run_pod_cases(
        hint.as_ref(),
        vec![
            (
                "queue-on-target-pod-some-resource-scale-down",
                pod_req("pod1", json!({"cpu": "1"}), None),
                None,
                None,
                Queue,
            ),
            (
                "queue-on-target-pod-some-pod-level-resource-scale-down",
                pod_level,
                None,
                None,
                Queue,
            ),
        ],
    );
}

/// noderesources Test_isSchedulableAfterAssignedPodScaleDown (without the
/// deferred-resize rows, as above).
#[test]
fn fit_assigned_pod_scale_down() {
    let pod_level = |name: &str, requests: Value, node: Option<&str>| {
        let mut spec = json!({"containers": [{"name": "c"}], "resources": {"requests": requests}});
        if let Some(n) = node {
            spec["nodeName"] = json!(n);
        }
        pod(json!({"metadata": {"name": name}, "spec": spec}))
    };
    run_pod_cases(
        fit_after_assigned_pod_scale_down,
        vec![
            (
                "skip-queue-on-other-unscheduled-pod",
                pod_req("pod1", json!({"cpu": "1"}), None),
                Some(pod_req("pod2", json!({"cpu": "2"}), None)),
                Some(pod_req("pod2", json!({"cpu": "1"}), None)),
                QueueSkip,
            ),
            (
                "skip-queue-on-other-pod-unrelated-resource-scaled-down",
                pod_req("pod1", json!({"cpu": "1"}), None),
                Some(pod_req("pod2", json!({"memory": "2"}), Some("fake"))),
                Some(pod_req("pod2", json!({"memory": "1"}), Some("fake"))),
                QueueSkip,
            ),
            (
                "skip-queue-on-other-pod-unrelated-pod-level-resource-scaled-down",
                pod_level("pod1", json!({"cpu": "1"}), None),
                Some(pod_level("pod2", json!({"memory": "2"}), Some("fake"))),
                Some(pod_level("pod2", json!({"memory": "1"}), Some("fake"))),
                QueueSkip,
            ),
            (
                "queue-on-other-pod-some-resource-scale-down",
                pod_req("pod1", json!({"cpu": "1"}), None),
                Some(pod_req("pod2", json!({"cpu": "2"}), Some("fake"))),
                Some(pod_req("pod2", json!({"cpu": "1"}), Some("fake"))),
                Queue,
            ),
            (
                "queue-on-other-pod-some-pod-level-resource-scale-down",
                pod_level("pod1", json!({"cpu": "1"}), None),
                Some(pod_level("pod2", json!({"cpu": "2"}), Some("fake"))),
                Some(pod_level("pod2", json!({"cpu": "1"}), Some("fake"))),
                Queue,
            ),
        ],
    );
}

/// noderesources Test_isSchedulableAfterNodeChange. Upstream's
/// `newResourcePod` names cpu, memory, pods and ephemeral-storage (zero
/// when unset) plus the scalar resources.
#[test]
fn fit_node_change() {
    const A: &str = "example.com/aaa";
    const B: &str = "example.com/bbb";
    let resource_pod = |memory: i64, a: Option<i64>| {
        let mut requests = json!({"cpu": "0", "memory": memory.to_string(),
            "pods": "0", "ephemeral-storage": "0"});
        if let Some(a) = a {
            requests[A] = json!(a.to_string());
        }
        pod_req("p", requests, None)
    };
    let cap = |v: Value| Some(node_capacity(v));
    run_node_cases(
        fit_after_node_change,
        vec![
            (
                "skip-queue-on-node-add-without-sufficient-resources",
                resource_pod(2, None),
                None,
                cap(json!({"memory": "1"})),
                QueueSkip,
            ),
            (
                "skip-queue-on-node-add-without-required-resource-type",
                pod_req(
                    "p",
                    json!({"cpu": "0", "memory": "0", "pods": "0",
                    "ephemeral-storage": "0", A: "1"}),
                    None,
                ),
                None,
                cap(json!({B: "1"})),
                QueueSkip,
            ),
            (
                "queue-on-node-add-with-sufficient-resources",
                resource_pod(2, Some(1)),
                None,
                cap(json!({"memory": "4", A: "2"})),
                Queue,
            ),
            (
                "skip-queue-on-node-unrelated-changes",
                resource_pod(2, Some(1)),
                cap(json!({"memory": "2", A: "2"})),
                cap(json!({"memory": "2", A: "1", B: "2"})),
                QueueSkip,
            ),
            (
                "queue-on-pod-requested-resources-increase",
                resource_pod(2, Some(1)),
                cap(json!({"memory": "2", A: "1"})),
                cap(json!({"memory": "2", A: "2"})),
                Queue,
            ),
            (
                "skip-queue-on-node-changes-from-suitable-to-unsuitable",
                resource_pod(2, Some(1)),
                cap(json!({"memory": "4", A: "2"})),
                cap(json!({"memory": "1", A: "2"})),
                QueueSkip,
            ),
            (
                "queue-on-node-changes-from-unsuitable-to-suitable",
                resource_pod(2, Some(1)),
                cap(json!({"memory": "1", A: "2"})),
                cap(json!({"memory": "4", A: "2"})),
                Queue,
            ),
        ],
    );
}

/// Fit's node hint looks at the node alone even when given one with pods.
#[test]
fn fit_node_change_ignores_placed_pods() {
    let mut full = node_capacity(json!({"cpu": "1"}));
    full.add_pod(Arc::new(pod_req("placed", json!({"cpu": "1"}), Some("n"))));
    let wanting = pod_req("p", json!({"cpu": "1"}), None);
    assert_eq!(
        fit_after_node_change(&wanting, None, Some(Object::Node(&full))),
        Queue
    );
}

/// schedulinggates TestIsSchedulableAfterUpdateTargetPodSchedulingGatesEliminated
/// and defaultpreemption's always-skip deletion hint.
#[test]
fn scheduling_gates_and_default_preemption() {
    let gates = scheduling_gates();
    let hint = registered_hint(
        &gates,
        ClusterEvent::new(
            EventResource::TargetPod,
            ActionType::UPDATE_POD_SCHEDULING_GATES_ELIMINATED,
        ),
    );
    let gated = pod(json!({"spec": {"schedulingGates": [{"name": "foo"}]}}));
    run_pod_cases(
        hint.as_ref(),
        vec![(
            "queue when the gates are eliminated",
            pod(json!({})),
            Some(gated),
            Some(pod(json!({}))),
            Queue,
        )],
    );
    let preemption = default_preemption();
    let hint = registered_hint(
        &preemption,
        ClusterEvent::new(EventResource::AssignedPod, ActionType::DELETE),
    );
    let victim = pod(json!({"spec": {"nodeName": "n"}}));
    run_pod_cases(
        hint.as_ref(),
        vec![("skip", pod(json!({})), Some(victim), None, QueueSkip)],
    );
}

/// nodedeclaredfeatures TestIsSchedulableAfterTargetPodUpdate, and the node
/// hint (declared features changed or not).
#[test]
fn node_declared_features_hints() {
    let bind_mounts = pod(json!({"spec": {"containers": [{"name": "c",
        "volumeMounts": [{"name": "v", "mountPath": "/v", "bindMountOptions": ["rbind"]}]}]}}));
    let plain = pod(json!({"spec": {"containers": [{"name": "c"}]}}));
    let relabelled = pod(json!({"metadata": {"labels": {"a": "b"}},
        "spec": {"containers": [{"name": "c"}]}}));
    run_pod_cases(
        declared_features_after_pod_update,
        vec![
            (
                "Pod Update adds requirement",
                plain.clone(),
                Some(plain.clone()),
                Some(bind_mounts.clone()),
                Queue,
            ),
            (
                "Pod Update removes requirement",
                plain.clone(),
                Some(bind_mounts),
                Some(plain.clone()),
                Queue,
            ),
            (
                "Pod Update with no change in requirements",
                plain.clone(),
                Some(plain.clone()),
                Some(relabelled),
                QueueSkip,
            ),
        ],
    );
    let with_features = |f: Value| {
        Some(node(json!({"metadata": {"name": "n"},
        "status": {"declaredFeatures": f}})))
    };
    run_node_cases(
        declared_features_after_node_change,
        vec![
            (
                "node added",
                plain.clone(),
                None,
                with_features(json!(["A"])),
                Queue,
            ),
            (
                "features unchanged",
                plain.clone(),
                with_features(json!(["A"])),
                with_features(json!(["A"])),
                QueueSkip,
            ),
            (
                "features changed",
                plain,
                with_features(json!(["A"])),
                with_features(json!(["A", "B"])),
                Queue,
            ),
        ],
    );
}

/// The decision of upstream's isPodWorthRequeuing
/// (TestPriorityQueue_isPodWorthRequeuing's situations).
#[test]
fn queueing_strategy() {
    use QueueingStrategy as S;
    let hints = ProfileHints::new([
        ("NodeResourcesFit", None),
        ("TaintToleration", None),
        ("NodeName", None),
        ("SchedulingGates", None),
    ])
    .unwrap();
    let set = |names: &[&str]| -> std::collections::HashSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    };
    let p = pod_req("p", json!({"cpu": "1"}), None);
    let small = node_capacity(json!({"cpu": "2"}));
    let tiny = node_capacity(json!({"cpu": "500m"}));
    let node_add = ClusterEvent::new(EventResource::Node, ActionType::ADD);
    let label_update = ClusterEvent::new(EventResource::Node, ActionType::UPDATE_NODE_LABEL);
    fn add(n: &NodeInfo) -> Option<Object<'_>> {
        Some(Object::Node(n))
    }
    let other = pod(json!({"metadata": {"name": "other", "uid": "other"}}));
    let cases = [
        (
            "no rejector: retried on any event",
            set(&[]),
            set(&[]),
            label_update,
            add(&small),
            S::AfterBackoff,
        ),
        (
            "wildcard moves without hints",
            set(&["NodeResourcesFit"]),
            set(&[]),
            ClusterEvent::WILDCARD,
            None,
            S::AfterBackoff,
        ),
        (
            "wildcard naming another pod skips",
            set(&["NodeResourcesFit"]),
            set(&[]),
            ClusterEvent::WILDCARD,
            Some(Object::Pod(&other)),
            S::Skip,
        ),
        (
            "the rejector's hint queues",
            set(&["NodeResourcesFit"]),
            set(&[]),
            node_add,
            add(&small),
            S::AfterBackoff,
        ),
        (
            "the rejector's hint skips",
            set(&["NodeResourcesFit"]),
            set(&[]),
            node_add,
            add(&tiny),
            S::Skip,
        ),
        (
            "one of two rejectors queues (NodeName has no hint)",
            set(&["NodeResourcesFit", "NodeName"]),
            set(&[]),
            node_add,
            add(&tiny),
            S::AfterBackoff,
        ),
        (
            "an event no rejector registered",
            set(&["NodeResourcesFit"]),
            set(&[]),
            label_update,
            add(&small),
            S::Skip,
        ),
        (
            "a pending plugin's Queue activates at once",
            set(&[]),
            set(&["NodeName"]),
            node_add,
            add(&small),
            S::Immediately,
        ),
        (
            "a rejector's Queue with a pending plugin that skips",
            set(&["NodeResourcesFit"]),
            set(&["SchedulingGates"]),
            node_add,
            add(&small),
            S::AfterBackoff,
        ),
    ];
    for (name, unschedulable, pending, event, new, want) in cases {
        let got = hints.strategy(&unschedulable, &pending, &event, &p, None, new);
        assert_eq!(got, want, "{name}");
    }
    assert!(hints.is_event_of_interest(&node_add));
    assert!(!hints.is_event_of_interest(&ClusterEvent::new(
        EventResource::PersistentVolume,
        ActionType::ADD
    )));
}
