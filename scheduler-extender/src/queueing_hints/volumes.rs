//! Hints of the volume plugins: VolumeRestrictions, NodeVolumeLimits,
//! VolumeZone and VolumeBinding.

use super::{ActionType as A, ClusterEventWithHint as E, EventResource as R};

pub(super) fn volume_restrictions() -> Vec<E> {
    vec![
        E::new(R::AssignedPod, A::DELETE),
        E::new(R::Node, A::ADD),
        E::new(R::PersistentVolumeClaim, A::ADD),
    ]
}

pub(super) fn node_volume_limits() -> Vec<E> {
    vec![
        E::new(R::CSINode, A::ADD),
        E::new(R::CSINode, A::UPDATE),
        E::new(R::AssignedPod, A::DELETE),
        E::new(R::PersistentVolumeClaim, A::ADD),
        E::new(R::VolumeAttachment, A::DELETE),
    ]
}

pub(super) fn volume_zone() -> Vec<E> {
    vec![
        E::new(R::StorageClass, A::ADD),
        E::new(R::Node, A::ADD | A::UPDATE_NODE_LABEL),
        E::new(R::PersistentVolumeClaim, A::ADD | A::UPDATE),
        E::new(R::PersistentVolume, A::ADD | A::UPDATE),
    ]
}

pub(super) fn volume_binding() -> Vec<E> {
    vec![
        E::new(R::StorageClass, A::ADD | A::UPDATE),
        E::new(R::PersistentVolumeClaim, A::ADD | A::UPDATE),
        E::new(R::PersistentVolume, A::ADD | A::UPDATE),
        E::new(R::Node, A::ADD | A::UPDATE_NODE_LABEL),
        E::new(R::CSINode, A::ADD | A::UPDATE),
        E::new(R::CSIDriver, A::UPDATE),
        E::new(R::CSIStorageCapacity, A::ADD | A::UPDATE),
    ]
}
