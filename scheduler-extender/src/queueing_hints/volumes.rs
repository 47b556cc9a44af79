//! Hints of the volume plugins: VolumeRestrictions, NodeVolumeLimits,
//! VolumeZone and VolumeBinding.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Volume};
use k8s_openapi::api::storage::v1::CSIStorageCapacity;

use super::node::holds_a_node;
use super::{
    ActionType as A, ClusterEventWithHint as E, EventResource as R, Object, QueueingHint, as_pods,
    queue_if,
};
use crate::framework::PodInfo;
use crate::framework::quantity;
use crate::plugins::volume_binding::pod_volumes;
use crate::plugins::volume_restrictions::conflicts_with;

use QueueingHint::{Queue, QueueSkip};

pub(super) fn volume_restrictions() -> Vec<E> {
    vec![
        // Volumes are immutable, so pod updates are not registered.
        E::with(
            R::AssignedPod,
            A::DELETE,
            restrictions_after_assigned_pod_deleted,
        ),
        E::new(R::Node, A::ADD),
        // The claim must exist for its access modes to be checked.
        E::with(
            R::PersistentVolumeClaim,
            A::ADD,
            restrictions_after_claim_added,
        ),
    ]
}

fn claim_names(pod: &PodInfo, with_ephemeral: bool) -> Vec<String> {
    pod_volumes(pod)
        .iter()
        .filter_map(|v| match (&v.persistent_volume_claim, &v.ephemeral) {
            (Some(c), _) => Some(c.claim_name.clone()),
            // The ephemeral volume controller names the claim pod-volume.
            (None, Some(_)) if with_ephemeral => Some(format!("{}-{}", pod.name, v.name)),
            _ => None,
        })
        .collect()
}

fn as_claim<'a>(o: Option<Object<'a>>) -> Option<&'a PersistentVolumeClaim> {
    match o {
        Some(Object::PersistentVolumeClaim(c)) => Some(c),
        _ => None,
    }
}

/// Queue when the new claim is one the pod names (as `persistentVolumeClaim`,
/// or also as a generated ephemeral claim when `with_ephemeral`).
fn claim_named_by_pod(pod: &PodInfo, claim: &PersistentVolumeClaim, with_ephemeral: bool) -> bool {
    claim.metadata.namespace.as_deref().unwrap_or_default() == pod.namespace
        && claim_names(pod, with_ephemeral)
            .iter()
            .any(|n| Some(n.as_str()) == claim.metadata.name.as_deref())
}

pub(super) fn restrictions_after_claim_added(
    pod: &PodInfo,
    _old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let Some(claim) = as_claim(new) else {
        return Queue;
    };
    queue_if(claim_named_by_pod(pod, claim, false))
}

/// Queue when the deleted pod (of the pod's namespace) held a disk the pod
/// conflicts on, or used one of the pod's claims (ReadWriteOncePod).
pub(super) fn restrictions_after_assigned_pod_deleted(
    pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let Some((Some(deleted), _)) = as_pods(old, new) else {
        return Queue;
    };
    if deleted.namespace != pod.namespace {
        return QueueSkip;
    }
    if conflicts_with(pod, deleted) {
        return Queue;
    }
    let ours: BTreeSet<String> = claim_names(pod, false).into_iter().collect();
    queue_if(claim_names(deleted, false).iter().any(|n| ours.contains(n)))
}

pub(super) fn node_volume_limits() -> Vec<E> {
    vec![
        // Any new CSINode may be the one with room: no hint, as upstream.
        E::new(R::CSINode, A::ADD),
        E::with(R::CSINode, A::UPDATE, limits_after_csi_node_updated),
        E::with(R::AssignedPod, A::DELETE, limits_after_assigned_pod_deleted),
        E::with(R::PersistentVolumeClaim, A::ADD, |pod, _old, new| {
            let Some(claim) = as_claim(new) else {
                return Queue;
            };
            queue_if(claim_named_by_pod(pod, claim, true))
        }),
        E::with(
            R::VolumeAttachment,
            A::DELETE,
            limits_after_volume_attachment_deleted,
        ),
    ]
}

/// The CSI driver an inline in-tree volume is migrated to (all of these
/// plugins' migration is GA), as upstream's translator names them.
fn migrated_driver(v: &Volume) -> Option<&'static str> {
    if v.gce_persistent_disk.is_some() {
        Some("pd.csi.storage.gke.io")
    } else if v.aws_elastic_block_store.is_some() {
        Some("ebs.csi.aws.com")
    } else if v.azure_disk.is_some() {
        Some("disk.csi.azure.com")
    } else if v.azure_file.is_some() {
        Some("file.csi.azure.com")
    } else if v.cinder.is_some() {
        Some("cinder.csi.openstack.org")
    } else if v.vsphere_volume.is_some() {
        Some("csi.vsphere.vmware.com")
    } else if v.portworx_volume.is_some() {
        Some("pxd.portworx.com")
    } else {
        None
    }
}

/// Queue when the deleted pod held a node and had a volume that counts
/// against a limit (a claim, an ephemeral claim or a migratable one).
pub(super) fn limits_after_assigned_pod_deleted(
    _pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let Some((Some(deleted), _)) = as_pods(old, new) else {
        return Queue;
    };
    let volumes = pod_volumes(deleted);
    if volumes.is_empty() || !holds_a_node(deleted) {
        return QueueSkip;
    }
    queue_if(volumes.iter().any(|v| {
        v.persistent_volume_claim.is_some() || v.ephemeral.is_some() || migrated_driver(v).is_some()
    }))
}

/// Queue when the pod uses a claim (any attachment may have been its
/// driver's), or an inline volume migrated to the attachment's driver.
pub(super) fn limits_after_volume_attachment_deleted(
    pod: &PodInfo,
    old: Option<Object<'_>>,
    _new: Option<Object<'_>>,
) -> QueueingHint {
    let Some(Object::VolumeAttachment(attachment)) = old else {
        return Queue;
    };
    for v in pod_volumes(pod) {
        if v.persistent_volume_claim.is_some() {
            return Queue;
        }
        if migrated_driver(v) == Some(attachment.spec.attacher.as_str()) {
            return Queue;
        }
    }
    QueueSkip
}

/// Queue when some driver's attach limit on the node grew.
pub(super) fn limits_after_csi_node_updated(
    _pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let (Some(Object::CSINode(old)), Some(Object::CSINode(new))) = (old, new) else {
        return Queue;
    };
    let count = |d: &k8s_openapi::api::storage::v1::CSINodeDriver| {
        d.allocatable.as_ref().and_then(|a| a.count).unwrap_or(0)
    };
    queue_if(new.spec.drivers.iter().any(|d| {
        let before = old
            .spec
            .drivers
            .iter()
            .find(|o| o.name == d.name)
            .map_or(0, count);
        count(d) > before
    }))
}

pub(super) fn volume_zone() -> Vec<E> {
    vec![
        // The binding mode is immutable, so class updates are not registered.
        E::with(R::StorageClass, A::ADD, |_pod, _old, new| {
            let Some(Object::StorageClass(class)) = new else {
                return Queue;
            };
            queue_if(class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"))
        }),
        E::new(R::Node, A::ADD | A::UPDATE_NODE_LABEL),
        E::with(
            R::PersistentVolumeClaim,
            A::ADD | A::UPDATE,
            |pod, _old, new| {
                let Some(claim) = as_claim(new) else {
                    return Queue;
                };
                queue_if(claim_named_by_pod(pod, claim, false))
            },
        ),
        E::with(
            R::PersistentVolume,
            A::ADD | A::UPDATE,
            zone_after_volume_change,
        ),
    ]
}

const TOPOLOGY_LABELS: [&str; 4] = [
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
];

/// The PV's zone and region labels, each as its set of zones (`a__b`);
/// unparsable values are skipped, as upstream's getPVTopologies.
fn volume_topologies(pv: &PersistentVolume) -> Vec<(&'static str, BTreeSet<String>)> {
    let labels = pv.metadata.labels.clone().unwrap_or_default();
    TOPOLOGY_LABELS
        .iter()
        .filter_map(|key| {
            let value = labels.get(*key)?;
            let zones: Option<BTreeSet<String>> = value
                .split("__")
                .map(|z| {
                    let z = z.trim();
                    (!z.is_empty()).then(|| z.to_string())
                })
                .collect();
            zones.map(|z| (*key, z))
        })
        .collect()
}

/// Queue for a new PV, or when a PV's topology labels changed.
pub(super) fn zone_after_volume_change(
    _pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let new = match new {
        Some(Object::PersistentVolume(pv)) => pv,
        _ => return Queue,
    };
    match old {
        None => Queue,
        Some(Object::PersistentVolume(old)) => {
            queue_if(volume_topologies(old) != volume_topologies(new))
        }
        Some(_) => Queue,
    }
}

pub(super) fn volume_binding() -> Vec<E> {
    vec![
        E::with(
            R::StorageClass,
            A::ADD | A::UPDATE,
            binding_after_storage_class_change,
        ),
        E::with(
            R::PersistentVolumeClaim,
            A::ADD | A::UPDATE,
            |pod, _old, new| {
                let Some(claim) = as_claim(new) else {
                    return Queue;
                };
                queue_if(claim_named_by_pod(pod, claim, true))
            },
        ),
        // Any PV may be the one to bind: no hint, as upstream.
        E::new(R::PersistentVolume, A::ADD | A::UPDATE),
        E::new(R::Node, A::ADD | A::UPDATE_NODE_LABEL),
        E::with(
            R::CSINode,
            A::ADD | A::UPDATE,
            binding_after_csi_node_change,
        ),
        E::with(R::CSIDriver, A::UPDATE, binding_after_csi_driver_change),
        E::with(
            R::CSIStorageCapacity,
            A::ADD | A::UPDATE,
            binding_after_capacity_change,
        ),
    ]
}

/// Queue for a new class, or when a class's allowed topologies changed.
pub(super) fn binding_after_storage_class_change(
    _pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let Some(Object::StorageClass(new)) = new else {
        return Queue;
    };
    match old {
        None => Queue,
        Some(Object::StorageClass(old)) => queue_if(
            old.allowed_topologies.clone().unwrap_or_default()
                != new.allowed_topologies.clone().unwrap_or_default(),
        ),
        Some(_) => Queue,
    }
}

const MIGRATED_PLUGINS_ANNOTATION: &str = "storage.alpha.kubernetes.io/migrated-plugins";

/// Queue for a new CSINode, or when the node's migrated plugins changed.
pub(super) fn binding_after_csi_node_change(
    _pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let Some(old) = old else {
        return Queue;
    };
    let (Object::CSINode(old), Some(Object::CSINode(new))) = (old, new) else {
        return Queue;
    };
    let migrated = |n: &k8s_openapi::api::storage::v1::CSINode| {
        n.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(MIGRATED_PLUGINS_ANNOTATION).cloned())
            .unwrap_or_default()
    };
    queue_if(migrated(old) != migrated(new))
}

/// Queue when a driver the pod's inline CSI volumes use stops tracking
/// storage capacity (its volumes then need no capacity).
pub(super) fn binding_after_csi_driver_change(
    pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let (Some(Object::CSIDriver(old)), Some(Object::CSIDriver(new))) = (old, new) else {
        return Queue;
    };
    let name = new.metadata.name.as_deref().unwrap_or_default();
    let uses = pod_volumes(pod)
        .iter()
        .any(|v| v.csi.as_ref().is_some_and(|c| c.driver == name));
    let tracked =
        |d: &k8s_openapi::api::storage::v1::CSIDriver| d.spec.storage_capacity == Some(true);
    queue_if(uses && tracked(old) && !tracked(new))
}

/// A capacity's usable volume size: maximumVolumeSize, else capacity.
fn volume_limit(c: &CSIStorageCapacity) -> Option<i64> {
    c.maximum_volume_size
        .as_ref()
        .or(c.capacity.as_ref())
        .map(|q| quantity::value(&q.0).unwrap_or(0))
}

/// Queue for a new capacity, or when the usable size grew (or appeared).
pub(super) fn binding_after_capacity_change(
    _pod: &PodInfo,
    old: Option<Object<'_>>,
    new: Option<Object<'_>>,
) -> QueueingHint {
    let Some(Object::CSIStorageCapacity(new)) = new else {
        return Queue;
    };
    let old = match old {
        None => return Queue,
        Some(Object::CSIStorageCapacity(old)) => old,
        Some(_) => return Queue,
    };
    match (volume_limit(old), volume_limit(new)) {
        (_, None) => QueueSkip,
        (None, Some(_)) => Queue,
        (Some(before), Some(after)) => queue_if(after > before),
    }
}
