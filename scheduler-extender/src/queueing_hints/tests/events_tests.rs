//! pkg/scheduler/framework/events_test.go: classifying updates.

use super::super::events::{node_scheduling_properties_change, pod_scheduling_properties_change};
use super::*;

use ActionType as A;
use EventResource as R;

fn raw_node(v: Value) -> Node {
    serde_json::from_value(v).unwrap()
}

fn raw_pod(v: Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

fn node_actions(old: Value, new: Value) -> Vec<ActionType> {
    node_scheduling_properties_change(&raw_node(new), &raw_node(old))
        .into_iter()
        .map(|e| {
            assert_eq!(e.resource, R::Node);
            e.action
        })
        .collect()
}

/// TestNodeAllocatableChange, TestNodeLabelsChange, TestNodeTaintsChange,
/// TestNodeConditionsChange and TestExtractNodeFeaturesChange, each as
/// (name, old node, new node, expected single action or none).
#[test]
fn node_change_extractors() {
    let alloc = |v: Value| json!({"status": {"allocatable": v}});
    let labels = |v: Value| json!({"metadata": {"labels": v}});
    let taints = |v: Value| json!({"spec": {"taints": v}});
    let conditions = |v: Value| json!({"status": {"conditions": v}});
    let features = |v: Value| json!({"status": {"declaredFeatures": v}});
    let cases = [
        (
            "no allocatable resources changed",
            alloc(json!({"memory": "1Ki"})),
            alloc(json!({"memory": "1024"})),
            None,
        ),
        (
            "new node has more allocatable resources",
            alloc(json!({"memory": "1024"})),
            alloc(json!({"memory": "1024", "storage": "1024"})),
            Some(A::UPDATE_NODE_ALLOCATABLE),
        ),
        (
            "no labels changed",
            labels(json!({"foo": "bar"})),
            labels(json!({"foo": "bar"})),
            None,
        ),
        (
            "new object has more labels",
            labels(json!({"foo": "bar"})),
            labels(json!({"foo": "bar", "test": "value"})),
            Some(A::UPDATE_NODE_LABEL),
        ),
        (
            "nil and empty labels are equal",
            json!({}),
            labels(json!({})),
            None,
        ),
        (
            "no taint changed",
            taints(json!([{"key": "key", "value": "value", "effect": "NoSchedule"}])),
            taints(json!([{"key": "key", "value": "value", "effect": "NoSchedule"}])),
            None,
        ),
        (
            "taint value changed",
            taints(json!([{"key": "key", "value": "value1", "effect": "NoSchedule"}])),
            taints(json!([{"key": "key", "value": "value2", "effect": "NoSchedule"}])),
            Some(A::UPDATE_NODE_TAINT),
        ),
        (
            "no condition changed",
            conditions(json!([{"type": "DiskPressure", "status": "True"}])),
            conditions(json!([{"type": "DiskPressure", "status": "True"}])),
            None,
        ),
        (
            "only LastHeartbeatTime changed",
            conditions(json!([{"type": "DiskPressure", "status": "True",
                "lastHeartbeatTime": "1970-01-01T00:00:01Z"}])),
            conditions(json!([{"type": "DiskPressure", "status": "True",
                "lastHeartbeatTime": "1970-01-01T00:00:02Z"}])),
            None,
        ),
        (
            "new node has more healthy conditions",
            conditions(json!([])),
            conditions(json!([{"type": "Ready", "status": "True"}])),
            Some(A::UPDATE_NODE_CONDITION),
        ),
        (
            "new node has less unhealthy conditions",
            conditions(json!([{"type": "DiskPressure", "status": "True"}])),
            conditions(json!([])),
            Some(A::UPDATE_NODE_CONDITION),
        ),
        (
            "condition status changed",
            conditions(json!([{"type": "Ready", "status": "False"}])),
            conditions(json!([{"type": "Ready", "status": "True"}])),
            Some(A::UPDATE_NODE_CONDITION),
        ),
        (
            "no features changed",
            features(json!(["A", "B"])),
            features(json!(["A", "B"])),
            None,
        ),
        (
            "features added",
            features(json!(["A"])),
            features(json!(["A", "B"])),
            Some(A::UPDATE_NODE_DECLARED_FEATURE),
        ),
        (
            "features removed",
            features(json!(["A", "B"])),
            features(json!(["A"])),
            Some(A::UPDATE_NODE_DECLARED_FEATURE),
        ),
        (
            "features different",
            features(json!(["A"])),
            features(json!(["B"])),
            Some(A::UPDATE_NODE_DECLARED_FEATURE),
        ),
        (
            "old features nil, new has features",
            json!({}),
            features(json!(["A"])),
            Some(A::UPDATE_NODE_DECLARED_FEATURE),
        ),
        (
            "old features empty, new has features",
            features(json!([])),
            features(json!(["A"])),
            Some(A::UPDATE_NODE_DECLARED_FEATURE),
        ),
        (
            "old has features, new is nil",
            features(json!(["A"])),
            json!({}),
            Some(A::UPDATE_NODE_DECLARED_FEATURE),
        ),
        ("both nil", json!({}), json!({}), None),
    ];
    for (name, old, new, want) in cases {
        assert_eq!(
            node_actions(old, new),
            want.into_iter().collect::<Vec<_>>(),
            "{name}"
        );
    }
}

/// TestNodeSchedulingPropertiesChange.
#[test]
fn node_scheduling_properties() {
    let base = json!({"metadata": {"name": "n"}, "spec": {}, "status": {}});
    let with = |path: &[&str], v: Value| {
        let mut n = base.clone();
        let mut cur = &mut n;
        for p in &path[..path.len() - 1] {
            cur = cur.get_mut(*p).unwrap();
        }
        cur[path[path.len() - 1]] = v;
        n
    };
    let taint = json!([{"key": "key", "value": "value", "effect": "NoSchedule"}]);
    let cases = [
        (
            "no specific changed applied",
            base.clone(),
            base.clone(),
            vec![],
        ),
        (
            "only node spec unavailable changed",
            with(&["spec", "unschedulable"], json!(true)),
            base.clone(),
            vec![A::UPDATE_NODE_TAINT],
        ),
        (
            "cordoning is not an event",
            base.clone(),
            with(&["spec", "unschedulable"], json!(true)),
            vec![],
        ),
        (
            "only node allocatable changed",
            with(&["status", "allocatable"], json!({"cpu": "1"})),
            with(&["status", "allocatable"], json!({"cpu": "2"})),
            vec![A::UPDATE_NODE_ALLOCATABLE],
        ),
        (
            "only node label changed",
            base.clone(),
            with(&["metadata", "labels"], json!({"foo": "bar"})),
            vec![A::UPDATE_NODE_LABEL],
        ),
        (
            "only node taint changed",
            base.clone(),
            with(&["spec", "taints"], taint.clone()),
            vec![A::UPDATE_NODE_TAINT],
        ),
        (
            "only node annotation changed",
            base.clone(),
            with(&["metadata", "annotations"], json!({"foo": "bar"})),
            vec![A::UPDATE_NODE_ANNOTATION],
        ),
        (
            "only node condition changed",
            with(
                &["status", "conditions"],
                json!([{"type": "Ready", "status": "False"}]),
            ),
            with(
                &["status", "conditions"],
                json!([{"type": "Ready", "status": "True"}]),
            ),
            vec![A::UPDATE_NODE_CONDITION],
        ),
        (
            "both node label and node taint changed",
            base.clone(),
            {
                let mut n = with(&["metadata", "labels"], json!({"foo": "bar"}));
                n["spec"]["taints"] = taint;
                n
            },
            vec![A::UPDATE_NODE_LABEL, A::UPDATE_NODE_TAINT],
        ),
    ];
    for (name, old, new, want) in cases {
        assert_eq!(node_actions(old, new), want, "{name}");
    }
}

/// Test_podSchedulingPropertiesChange.
#[test]
fn pod_scheduling_properties() {
    let with_cpu = |cpu: &str, labels: Value| {
        json!({"metadata": {"labels": labels}, "spec": {"containers": [
            {"name": "app", "resources": {"requests": {"cpu": cpu}}}
        ]}})
    };
    let big = with_cpu("101m", json!({}));
    let small = with_cpu("100m", json!({}));
    let small_labelled = with_cpu("100m", json!({"foo": "bar"}));
    let assigned = |mut p: Value| {
        p["spec"]["nodeName"] = json!("node");
        p
    };
    let with_spec = |key: &str, v: Value| {
        let mut p = small.clone();
        p["spec"][key] = v;
        p
    };
    let with_status = |key: &str, v: Value| {
        let mut p = small.clone();
        p["status"] = json!({key: v});
        p
    };
    let claim_a = json!({"name": "my-claim", "resourceClaimName": "claim"});
    let claim_b = json!({"name": "my-claim-2", "resourceClaimName": "claim-2"});
    let extended = |container: &str| {
        json!({"requestMappings": [{"requestName": "request", "containerName": container,
            "resourceName": "example.com/gpu"}], "resourceClaimName": "claim"})
    };
    let cases = [
        (
            "assigned pod is updated",
            assigned(small.clone()),
            assigned(small_labelled.clone()),
            false,
            vec![(R::AssignedPod, A::UPDATE_POD_LABEL)],
        ),
        (
            "unscheduled pod label is updated",
            small.clone(),
            small_labelled.clone(),
            false,
            vec![(R::UnscheduledPod, A::UPDATE_POD_LABEL)],
        ),
        (
            "pod's resource request is scaled down",
            big.clone(),
            small.clone(),
            false,
            vec![(R::UnscheduledPod, A::UPDATE_POD_SCALE_DOWN)],
        ),
        (
            "pod's resource request is scaled up",
            small.clone(),
            big.clone(),
            false,
            vec![(R::UnscheduledPod, A::UPDATE_POD_SCALE_UP)],
        ),
        (
            "both pod's resource request and label are updated",
            big.clone(),
            small_labelled.clone(),
            false,
            vec![
                (R::UnscheduledPod, A::UPDATE_POD_LABEL),
                (R::UnscheduledPod, A::UPDATE_POD_SCALE_DOWN),
            ],
        ),
        (
            "untracked properties of pod is updated",
            small.clone(),
            with_spec("priorityClassName", json!("x")),
            false,
            vec![(R::UnscheduledPod, A::UPDATE)],
        ),
        (
            "scheduling gate is eliminated",
            with_spec("schedulingGates", json!([{"name": "foo"}])),
            small.clone(),
            true,
            vec![(R::TargetPod, A::UPDATE_POD_SCHEDULING_GATES_ELIMINATED)],
        ),
        (
            "scheduling gate is removed, but not completely eliminated",
            with_spec("schedulingGates", json!([{"name": "foo"}, {"name": "bar"}])),
            with_spec("schedulingGates", json!([{"name": "foo"}])),
            true,
            vec![(R::TargetPod, A::UPDATE)],
        ),
        (
            "pod's tolerations are updated",
            small.clone(),
            with_spec(
                "tolerations",
                json!([{"key": "key", "effect": "NoExecute"}]),
            ),
            true,
            vec![(R::TargetPod, A::UPDATE_POD_TOLERATION)],
        ),
        (
            "pod claim statuses change, feature enabled",
            small.clone(),
            with_status("resourceClaimStatuses", json!([claim_a.clone()])),
            true,
            vec![(R::TargetPod, A::UPDATE_POD_GENERATED_RESOURCE_CLAIM)],
        ),
        (
            "pod claim statuses swapped",
            with_status(
                "resourceClaimStatuses",
                json!([claim_a.clone(), claim_b.clone()]),
            ),
            with_status("resourceClaimStatuses", json!([claim_b, claim_a])),
            true,
            vec![(R::TargetPod, A::UPDATE_POD_GENERATED_RESOURCE_CLAIM)],
        ),
        (
            "pod extended resource claim status change, feature enabled",
            small.clone(),
            with_status("extendedResourceClaimStatus", extended("c")),
            true,
            vec![(R::TargetPod, A::UPDATE_POD_GENERATED_RESOURCE_CLAIM)],
        ),
        (
            "pod extended resource claim status changed",
            with_status("extendedResourceClaimStatus", extended("c")),
            with_status("extendedResourceClaimStatus", extended("d")),
            true,
            vec![(R::TargetPod, A::UPDATE_POD_GENERATED_RESOURCE_CLAIM)],
        ),
    ];
    for (name, old, new, target, want) in cases {
        let got: Vec<_> = pod_scheduling_properties_change(&raw_pod(new), &raw_pod(old), target)
            .into_iter()
            .map(|e| (e.resource, e.action))
            .collect();
        assert_eq!(got, want, "{name}");
    }
}
