//! Volume plugins' hint tables (volumerestrictions, nodevolumelimits,
//! volumezone and volumebinding _test.go), the main rows of each.

use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::api::storage::v1::{
    CSIDriver, CSINode, CSIStorageCapacity, StorageClass, VolumeAttachment,
};

use super::super::volumes::*;
use super::*;

fn with_volumes(name: &str, namespace: &str, node: Option<&str>, volumes: Value) -> PodInfo {
    let mut spec = json!({"containers": [], "volumes": volumes});
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    pod(json!({"metadata": {"name": name, "namespace": namespace}, "spec": spec}))
}

fn gce(pd: &str) -> Value {
    json!([{"name": "v", "gcePersistentDisk": {"pdName": pd}}])
}

fn aws(id: &str) -> Value {
    json!([{"name": "v", "awsElasticBlockStore": {"volumeID": id}}])
}

fn claims(names: &[&str]) -> Value {
    Value::Array(
        names
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"name": format!("v{i}"), "persistentVolumeClaim": {"claimName": c}}))
            .collect(),
    )
}

/// volumerestrictions Test_isSchedulableAfterAssignedPodDeleted.
#[test]
fn restrictions_assigned_pod_deleted() {
    let p = |v: Value| with_volumes("pod1", "default", None, v);
    let gone = |v: Value| Some(with_volumes("pod2", "default", Some("n"), v));
    assert_wrong_kind_queues(restrictions_after_assigned_pod_deleted);
    run_pod_cases(
        restrictions_after_assigned_pod_deleted,
        vec![
            (
                "queue-new-object-gcedisk-conflict",
                p(gce("foo")),
                gone(gce("foo")),
                None,
                Queue,
            ),
            (
                "skip-new-object-gcedisk-no-conflict",
                p(gce("foo")),
                gone(gce("bar")),
                None,
                QueueSkip,
            ),
            (
                "queue-new-object-awsdisk-conflict",
                p(aws("foo")),
                gone(aws("foo")),
                None,
                Queue,
            ),
            (
                "skip-new-object-awsdisk-no-conflict",
                p(aws("foo")),
                gone(aws("bar")),
                None,
                QueueSkip,
            ),
            (
                "queue-has-same-claim",
                p(claims(&["claim-rwop"])),
                gone(claims(&["claim-rwop"])),
                None,
                Queue,
            ),
            (
                "skip-no-same-claim",
                p(claims(&["claim-1-rwop"])),
                gone(claims(&["claim-2-rwop"])),
                None,
                QueueSkip,
            ),
            (
                "skip-other-namespace",
                p(claims(&["claim-rwop"])),
                Some(with_volumes(
                    "pod2",
                    "other",
                    Some("n"),
                    claims(&["claim-rwop"]),
                )),
                None,
                QueueSkip,
            ),
        ],
    );
}

/// volumerestrictions Test_isSchedulableAfterPersistentVolumeClaimChange
/// and nodevolumelimits TestCSILimitsAddedPVCQHint.
#[test]
fn claim_added() {
    let one = with_volumes(
        "pod-with-one-pvc",
        "default",
        Some("node-1"),
        claims(&["claim-with-rwx-1"]),
    );
    let two = with_volumes(
        "pod-with-two-pvcs",
        "default",
        Some("node-1"),
        claims(&["claim-with-rwx-1", "claim-with-rwx-2"]),
    );
    let other_ns = with_volumes(
        "pod-with-one-pvc",
        "kube-system",
        None,
        claims(&["claim-with-rwx-1"]),
    );
    let ephemeral = with_volumes(
        "p",
        "default",
        None,
        json!([{"name": "scratch", "ephemeral": {}}]),
    );
    let hint = |p: &PodInfo, c: &PersistentVolumeClaim| {
        restrictions_after_claim_added(p, None, Some(Object::PersistentVolumeClaim(c)))
    };
    let limits = node_volume_limits();
    let limits_hint = registered_hint(
        &limits,
        ClusterEvent::new(EventResource::PersistentVolumeClaim, ActionType::ADD),
    );
    let cases = [
        (
            "queue-on-pvc-added-with-one-pvc",
            &one,
            pvc("default", "claim-with-rwx-1"),
            Queue,
            Queue,
        ),
        (
            "queue-on-pvc-added-with-two-pvcs",
            &two,
            pvc("default", "claim-with-rwx-2"),
            Queue,
            Queue,
        ),
        (
            "skip-on-unrelated-pvc",
            &one,
            pvc("default", "unrelated"),
            QueueSkip,
            QueueSkip,
        ),
        (
            "skip-on-other-namespace",
            &other_ns,
            pvc("default", "claim-with-rwx-1"),
            QueueSkip,
            QueueSkip,
        ),
        // Only NodeVolumeLimits counts generated ephemeral claims.
        (
            "ephemeral claim",
            &ephemeral,
            pvc("default", "p-scratch"),
            QueueSkip,
            Queue,
        ),
    ];
    for (name, p, c, restrictions, limits) in cases {
        assert_eq!(hint(p, &c), restrictions, "VolumeRestrictions {name}");
        let got = limits_hint(p, None, Some(Object::PersistentVolumeClaim(&c)));
        assert_eq!(got, limits, "NodeVolumeLimits {name}");
    }
}

/// nodevolumelimits TestCSILimitsQHint (deleted assigned pods).
#[test]
fn limits_assigned_pod_deleted() {
    let target = with_volumes("p", "default", None, claims(&["c"]));
    assert_wrong_kind_queues(limits_after_assigned_pod_deleted);
    run_pod_cases(
        limits_after_assigned_pod_deleted,
        vec![
            (
                "queue on deleted pod with a claim",
                target.clone(),
                Some(with_volumes("d", "default", Some("n"), claims(&["other"]))),
                None,
                Queue,
            ),
            (
                "queue on deleted pod with a migratable inline volume",
                target.clone(),
                Some(with_volumes("d", "default", Some("n"), gce("pd"))),
                None,
                Queue,
            ),
            (
                "skip deleted pod without volumes",
                target.clone(),
                Some(with_volumes("d", "default", Some("n"), json!([]))),
                None,
                QueueSkip,
            ),
            (
                "skip deleted unscheduled pod",
                target.clone(),
                Some(with_volumes("d", "default", None, claims(&["other"]))),
                None,
                QueueSkip,
            ),
            (
                "skip deleted pod with only an emptyDir",
                target,
                Some(with_volumes(
                    "d",
                    "default",
                    Some("n"),
                    json!([{"name": "e", "emptyDir": {}}]),
                )),
                None,
                QueueSkip,
            ),
        ],
    );
}

/// nodevolumelimits TestCSILimitsDeletedVolumeAttachmentQHint and
/// TestCSILimitsAfterCSINodeUpdatedQHint.
#[test]
fn limits_attachments_and_csi_nodes() {
    let attachment: VolumeAttachment = serde_json::from_value(json!({"metadata": {"name": "va"},
        "spec": {"attacher": "ebs.csi.aws.com", "nodeName": "n", "source": {}}}))
    .unwrap();
    let va = Some(Object::VolumeAttachment(&attachment));
    let cases = [
        ("queue when the pod uses a claim", claims(&["c"]), Queue),
        (
            "queue when an inline volume migrates to the attacher",
            aws("id"),
            Queue,
        ),
        (
            "skip when the inline volume migrates elsewhere",
            gce("pd"),
            QueueSkip,
        ),
        ("skip without volumes", json!([]), QueueSkip),
    ];
    for (name, volumes, want) in cases {
        let p = with_volumes("p", "default", None, volumes);
        assert_eq!(
            limits_after_volume_attachment_deleted(&p, va, None),
            want,
            "{name}"
        );
    }
    let csi_node = |drivers: Value| -> CSINode {
        serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": {"drivers": drivers}}))
            .unwrap()
    };
    let driver = |name: &str, count: Option<i32>| {
        let mut d = json!({"name": name, "nodeID": "n"});
        if let Some(c) = count {
            d["allocatable"] = json!({"count": c});
        }
        d
    };
    let p = pod(json!({}));
    let cases = [
        (
            "queue when a limit grows",
            json!([driver("a", Some(1))]),
            json!([driver("a", Some(2))]),
            Queue,
        ),
        (
            "skip when a limit shrinks",
            json!([driver("a", Some(2))]),
            json!([driver("a", Some(1))]),
            QueueSkip,
        ),
        (
            "skip when nothing changed",
            json!([driver("a", Some(2))]),
            json!([driver("a", Some(2))]),
            QueueSkip,
        ),
        (
            "queue when a driver gets a limit",
            json!([driver("a", None)]),
            json!([driver("a", Some(1))]),
            Queue,
        ),
        (
            "queue when a new driver comes with a limit",
            json!([]),
            json!([driver("b", Some(1))]),
            Queue,
        ),
    ];
    for (name, old, new, want) in cases {
        let (old, new) = (csi_node(old), csi_node(new));
        let got = limits_after_csi_node_updated(
            &p,
            Some(Object::CSINode(&old)),
            Some(Object::CSINode(&new)),
        );
        assert_eq!(got, want, "{name}");
    }
}

fn class(v: Value) -> StorageClass {
    let mut v = v;
    v["metadata"] = json!({"name": "sc"});
    v["provisioner"] = json!("p");
    serde_json::from_value(v).unwrap()
}

/// volumezone TestIsSchedulableAfterStorageClassAdded and
/// TestIsSchedulableAfterPersistentVolumeChange.
#[test]
fn zone_hints() {
    let regs = volume_zone();
    let sc_hint = registered_hint(
        &regs,
        ClusterEvent::new(EventResource::StorageClass, ActionType::ADD),
    );
    let p = pod(json!({}));
    let wait = class(json!({"volumeBindingMode": "WaitForFirstConsumer"}));
    let immediate = class(json!({"volumeBindingMode": "Immediate"}));
    let unset = class(json!({}));
    assert_eq!(
        sc_hint(&p, None, Some(Object::StorageClass(&wait))),
        Queue,
        "queue-on-wait-for-first-consumer"
    );
    assert_eq!(
        sc_hint(&p, None, Some(Object::StorageClass(&immediate))),
        QueueSkip,
        "skip-on-immediate"
    );
    assert_eq!(
        sc_hint(&p, None, Some(Object::StorageClass(&unset))),
        QueueSkip,
        "skip-on-unset-mode"
    );
    let pv = |labels: Value| -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": "pv", "labels": labels}})).unwrap()
    };
    let zone = |z: &str| pv(json!({"topology.kubernetes.io/zone": z}));
    let cases = [
        ("queue-on-pv-added", None, zone("us-west1-a"), Queue),
        (
            "skip-on-unrelated-label-change",
            Some(zone("us-west1-a")),
            { pv(json!({"topology.kubernetes.io/zone": "us-west1-a", "other": "x"})) },
            QueueSkip,
        ),
        (
            "queue-on-zone-change",
            Some(zone("us-west1-a")),
            zone("us-west1-b"),
            Queue,
        ),
        (
            "skip-on-same-zones-reformatted",
            Some(zone("a__b")),
            zone("b__a"),
            QueueSkip,
        ),
        (
            "queue-on-zone-label-added",
            Some(pv(json!({}))),
            zone("us-west1-a"),
            Queue,
        ),
    ];
    for (name, old, new, want) in cases {
        let got = zone_after_volume_change(
            &p,
            old.as_ref().map(Object::PersistentVolume),
            Some(Object::PersistentVolume(&new)),
        );
        assert_eq!(got, want, "{name}");
    }
}

/// volumebinding TestIsSchedulableAfterStorageClassChange,
/// TestIsSchedulableAfterCSINodeChange, TestIsSchedulableAfterCSIDriverChange
/// and TestIsSchedulableAfterCSIStorageCapacityChange.
#[test]
fn binding_hints() {
    let p = pod(json!({}));
    let topo = |zone: &str| {
        class(json!({"allowedTopologies": [{"matchLabelExpressions": [
            {"key": "topology.kubernetes.io/zone", "values": [zone]}]}]}))
    };
    let sc = |o: Option<&StorageClass>, n: &StorageClass| {
        binding_after_storage_class_change(
            &p,
            o.map(Object::StorageClass),
            Some(Object::StorageClass(n)),
        )
    };
    assert_eq!(sc(None, &topo("a")), Queue, "queue-on-add");
    assert_eq!(
        sc(Some(&topo("a")), &topo("b")),
        Queue,
        "queue-on-allowed-topologies-change"
    );
    let mut relabelled = topo("a");
    relabelled.metadata.labels = Some([("k".to_string(), "v".to_string())].into());
    assert_eq!(
        sc(Some(&topo("a")), &relabelled),
        QueueSkip,
        "skip-unrelated-change"
    );

    let csi_node = |migrated: Option<&str>| -> CSINode {
        let mut meta = json!({"name": "n"});
        if let Some(m) = migrated {
            meta["annotations"] = json!({"storage.alpha.kubernetes.io/migrated-plugins": m});
        }
        serde_json::from_value(json!({"metadata": meta, "spec": {"drivers": []}})).unwrap()
    };
    let cn = |o: Option<&CSINode>, n: &CSINode| {
        binding_after_csi_node_change(&p, o.map(Object::CSINode), Some(Object::CSINode(n)))
    };
    assert_eq!(cn(None, &csi_node(None)), Queue, "queue-on-add");
    assert_eq!(
        cn(
            Some(&csi_node(None)),
            &csi_node(Some("kubernetes.io/gce-pd"))
        ),
        Queue,
        "queue-on-migrated-plugins-change"
    );
    assert_eq!(
        cn(Some(&csi_node(Some("x"))), &csi_node(Some("x"))),
        QueueSkip,
        "skip-unrelated-change"
    );

    let driver = |capacity: Option<bool>| -> CSIDriver {
        let mut spec = json!({});
        if let Some(c) = capacity {
            spec["storageCapacity"] = json!(c);
        }
        serde_json::from_value(json!({"metadata": {"name": "test-driver"}, "spec": spec})).unwrap()
    };
    let csi_pod = with_volumes(
        "p",
        "default",
        None,
        json!([{"name": "v", "csi": {"driver": "test-driver"}}]),
    );
    let other_pod = with_volumes(
        "p",
        "default",
        None,
        json!([{"name": "v", "csi": {"driver": "other"}}]),
    );
    let dr = |pod: &PodInfo, o: &CSIDriver, n: &CSIDriver| {
        binding_after_csi_driver_change(pod, Some(Object::CSIDriver(o)), Some(Object::CSIDriver(n)))
    };
    assert_eq!(
        dr(&csi_pod, &driver(Some(true)), &driver(Some(false))),
        Queue,
        "queue-when-capacity-tracking-stops"
    );
    assert_eq!(
        dr(&csi_pod, &driver(Some(true)), &driver(None)),
        Queue,
        "queue-when-capacity-tracking-unset"
    );
    assert_eq!(
        dr(&csi_pod, &driver(Some(false)), &driver(Some(true))),
        QueueSkip,
        "skip-when-tracking-starts"
    );
    assert_eq!(
        dr(&other_pod, &driver(Some(true)), &driver(Some(false))),
        QueueSkip,
        "skip-other-driver"
    );

    let cap = |capacity: Option<&str>, max: Option<&str>| -> CSIStorageCapacity {
        let mut v = json!({"metadata": {"name": "cap"}, "storageClassName": "sc"});
        if let Some(c) = capacity {
            v["capacity"] = json!(c);
        }
        if let Some(m) = max {
            v["maximumVolumeSize"] = json!(m);
        }
        serde_json::from_value(v).unwrap()
    };
    let cc = |o: Option<&CSIStorageCapacity>, n: &CSIStorageCapacity| {
        binding_after_capacity_change(
            &p,
            o.map(Object::CSIStorageCapacity),
            Some(Object::CSIStorageCapacity(n)),
        )
    };
    assert_eq!(cc(None, &cap(Some("1Gi"), None)), Queue, "queue-on-add");
    assert_eq!(
        cc(Some(&cap(Some("1Gi"), None)), &cap(Some("2Gi"), None)),
        Queue,
        "queue-on-capacity-increase"
    );
    assert_eq!(
        cc(Some(&cap(Some("2Gi"), None)), &cap(Some("1Gi"), None)),
        QueueSkip,
        "skip-on-capacity-decrease"
    );
    assert_eq!(
        cc(Some(&cap(None, None)), &cap(Some("1Gi"), None)),
        Queue,
        "queue-on-capacity-set"
    );
    assert_eq!(
        cc(
            Some(&cap(Some("1Gi"), Some("1Gi"))),
            &cap(Some("5Gi"), Some("1Gi"))
        ),
        QueueSkip,
        "skip-when-max-volume-size-unchanged"
    );
    assert_eq!(
        cc(
            Some(&cap(Some("1Gi"), Some("1Gi"))),
            &cap(Some("1Gi"), Some("2Gi"))
        ),
        Queue,
        "queue-on-max-volume-size-increase"
    );
}

/// volumezone TestIsSchedulableAfterPersistentVolumeClaimAdded.
#[test]
fn zone_claim_change() {
    let regs = volume_zone();
    let hint = registered_hint(
        &regs,
        ClusterEvent::new(EventResource::PersistentVolumeClaim, ActionType::ADD),
    );
    let wrong = node(json!({}));
    assert_eq!(
        hint(&pod(json!({})), None, Some(Object::Node(&wrong))),
        Queue
    );
    let claim = |ns: &str, volume: &str| -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": "PVC_1", "namespace": ns},
            "spec": {"volumeName": volume}}))
        .unwrap()
    };
    let using = |c: &str| with_volumes("pod_1", "default", None, claims(&[c]));
    let without = with_volumes("pod_1", "default", None, json!([]));
    let cases = [
        (
            "pod has no pvc",
            &without,
            None,
            claim("default", "Vol_1"),
            QueueSkip,
        ),
        (
            "pvc not used by the pod",
            &using("PVC_2"),
            None,
            claim("default", "Vol_1"),
            QueueSkip,
        ),
        (
            "pvc in another namespace",
            &using("PVC_1"),
            None,
            claim("ns1", "Vol_1"),
            QueueSkip,
        ),
        (
            "pvc added",
            &using("PVC_1"),
            None,
            claim("default", "Vol_1"),
            Queue,
        ),
        (
            "pvc bound",
            &using("PVC_1"),
            Some(claim("default", "")),
            claim("default", "Vol_1"),
            Queue,
        ),
        (
            "pvc bound, pod without pvc",
            &without,
            Some(claim("default", "")),
            claim("default", "Vol_1"),
            QueueSkip,
        ),
    ];
    for (name, p, old, new, want) in cases {
        let got = hint(
            p,
            old.as_ref().map(Object::PersistentVolumeClaim),
            Some(Object::PersistentVolumeClaim(&new)),
        );
        assert_eq!(got, want, "{name}");
    }
}
