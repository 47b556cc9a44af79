//! Queueing hints as upstream v1.37's: which cluster events each plugin
//! registers (`EventsToRegister`) and, per event, whether it may make a pod
//! that plugin rejected schedulable (`QueueingHintFn`).
//!
//! This module is pure: no queue, no informer. The scheduling queue asks
//! [`for_plugin`] once per profile plugin, classifies each watch event with
//! [`events::node_scheduling_properties_change`] /
//! [`events::pod_scheduling_properties_change`], and for every unschedulable
//! pod whose rejecting plugins registered a matching event (see
//! [`ClusterEvent::matches`]) calls their hints; one `Queue` moves the pod.
//! [`ProfileHints::strategy`] makes that decision for one pod and event.

pub mod events;
mod node;
mod pods;
mod strategy;
mod volumes;

pub use strategy::{ProfileHints, QueueingStrategy};

use std::fmt;
use std::ops::BitOr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::{
    CSIDriver, CSINode, CSIStorageCapacity, StorageClass, VolumeAttachment,
};
use serde_json::Value;

use crate::framework::{NodeInfo, PodInfo};
use crate::plugins;

/// What happened to an object, as upstream's bit flags so one registration
/// can name several actions and an update can carry several kinds of change.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActionType(pub u32);

impl ActionType {
    pub const NONE: Self = Self(0);
    pub const ADD: Self = Self(1 << 0);
    pub const DELETE: Self = Self(1 << 1);
    pub const UPDATE_NODE_ALLOCATABLE: Self = Self(1 << 2);
    pub const UPDATE_NODE_LABEL: Self = Self(1 << 3);
    /// Taints, or `spec.unschedulable` turned off.
    pub const UPDATE_NODE_TAINT: Self = Self(1 << 4);
    pub const UPDATE_NODE_CONDITION: Self = Self(1 << 5);
    pub const UPDATE_NODE_ANNOTATION: Self = Self(1 << 6);
    pub const UPDATE_NODE_DECLARED_FEATURE: Self = Self(1 << 7);
    pub const UPDATE_NODE_PREEMPTION_POLICY: Self = Self(1 << 8);
    pub const UPDATE_POD_LABEL: Self = Self(1 << 9);
    pub const UPDATE_POD_SCALE_DOWN: Self = Self(1 << 10);
    pub const UPDATE_POD_SCALE_UP: Self = Self(1 << 11);
    /// Tolerations can only be added (API validation), so a length change.
    pub const UPDATE_POD_TOLERATION: Self = Self(1 << 12);
    pub const UPDATE_POD_SCHEDULING_GATES_ELIMINATED: Self = Self(1 << 13);
    pub const UPDATE_POD_GENERATED_RESOURCE_CLAIM: Self = Self(1 << 14);
    pub const ALL: Self = Self((1 << 15) - 1);
    /// Every update bit: for registrations that care about any update, and
    /// for updates no specific bit describes.
    pub const UPDATE: Self = Self(Self::ALL.0 & !(Self::ADD.0 | Self::DELETE.0));

    pub fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// Upstream's name, for logs and metrics labels.
    pub fn name(self) -> &'static str {
        const NAMES: [(ActionType, &str); 18] = [
            (ActionType::NONE, "None"),
            (ActionType::ADD, "Add"),
            (ActionType::DELETE, "Delete"),
            (ActionType::UPDATE_NODE_ALLOCATABLE, "UpdateNodeAllocatable"),
            (ActionType::UPDATE_NODE_LABEL, "UpdateNodeLabel"),
            (ActionType::UPDATE_NODE_TAINT, "UpdateNodeTaint"),
            (ActionType::UPDATE_NODE_CONDITION, "UpdateNodeCondition"),
            (ActionType::UPDATE_NODE_ANNOTATION, "UpdateNodeAnnotation"),
            (
                ActionType::UPDATE_NODE_DECLARED_FEATURE,
                "UpdateNodeDeclaredFeature",
            ),
            (
                ActionType::UPDATE_NODE_PREEMPTION_POLICY,
                "UpdateNodePreemptionPolicy",
            ),
            (ActionType::UPDATE_POD_LABEL, "UpdatePodLabel"),
            (ActionType::UPDATE_POD_SCALE_DOWN, "UpdatePodScaleDown"),
            (ActionType::UPDATE_POD_SCALE_UP, "UpdatePodScaleUp"),
            (ActionType::UPDATE_POD_TOLERATION, "UpdatePodToleration"),
            (
                ActionType::UPDATE_POD_SCHEDULING_GATES_ELIMINATED,
                "UpdatePodSchedulingGatesEliminated",
            ),
            (
                ActionType::UPDATE_POD_GENERATED_RESOURCE_CLAIM,
                "UpdatePodGeneratedResourceClaim",
            ),
            (ActionType::ALL, "All"),
            (ActionType::UPDATE, "Update"),
        ];
        NAMES
            .iter()
            .find(|(a, _)| *a == self)
            .map_or("", |(_, n)| n)
    }
}

impl BitOr for ActionType {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl fmt::Debug for ActionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            "" => write!(f, "ActionType({:#x})", self.0),
            name => f.write_str(name),
        }
    }
}

/// The kind of object an event is about, named as upstream's EventResource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventResource {
    /// Any pod: matches the three below when registered.
    Pod,
    /// A pod bound to a node (or nominated to one).
    AssignedPod,
    /// An unscheduled pod other than the one the hint is asked about.
    UnscheduledPod,
    /// The unscheduled pod the hint is asked about, itself updated.
    TargetPod,
    Node,
    PersistentVolume,
    PersistentVolumeClaim,
    CSINode,
    CSIDriver,
    VolumeAttachment,
    CSIStorageCapacity,
    StorageClass,
    ResourceClaim,
    ResourceSlice,
    DeviceClass,
    /// Every resource (`*`).
    WildCard,
}

impl EventResource {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pod => "Pod",
            Self::AssignedPod => "AssignedPod",
            Self::UnscheduledPod => "UnscheduledPod",
            Self::TargetPod => "TargetPod",
            Self::Node => "Node",
            Self::PersistentVolume => "PersistentVolume",
            Self::PersistentVolumeClaim => "PersistentVolumeClaim",
            Self::CSINode => "storage.k8s.io/CSINode",
            Self::CSIDriver => "storage.k8s.io/CSIDriver",
            Self::VolumeAttachment => "storage.k8s.io/VolumeAttachment",
            Self::CSIStorageCapacity => "storage.k8s.io/CSIStorageCapacity",
            Self::StorageClass => "storage.k8s.io/StorageClass",
            Self::ResourceClaim => "resource.k8s.io/ResourceClaim",
            Self::ResourceSlice => "resource.k8s.io/ResourceSlice",
            Self::DeviceClass => "resource.k8s.io/DeviceClass",
            Self::WildCard => "*",
        }
    }
}

/// A change in the cluster: which kind of object, and what happened to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClusterEvent {
    pub resource: EventResource,
    pub action: ActionType,
}

impl ClusterEvent {
    pub const fn new(resource: EventResource, action: ActionType) -> Self {
        Self { resource, action }
    }

    /// `{*, All}`: registered by plugins without EventsToRegister, and sent
    /// by the unschedulable-timeout flush and forced activation, which move
    /// every pod without asking hints.
    pub const WILDCARD: Self = Self::new(EventResource::WildCard, ActionType::ALL);

    pub fn is_wildcard(&self) -> bool {
        *self == Self::WILDCARD
    }

    /// Whether `incoming` triggers this registered event (upstream's
    /// `MatchClusterEvents`). A general Update (every update bit) only
    /// triggers registrations that cover all of it, which the numeric
    /// comparison expresses: an event carrying bits the registration lacks
    /// sorts above it.
    pub fn matches(&self, incoming: &ClusterEvent) -> bool {
        if self.is_wildcard() {
            return true;
        }
        let resource = self.resource == EventResource::WildCard
            || self.resource == incoming.resource
            || (self.resource == EventResource::Pod
                && matches!(
                    incoming.resource,
                    EventResource::AssignedPod
                        | EventResource::UnscheduledPod
                        | EventResource::TargetPod
                ));
        resource && self.action.intersects(incoming.action) && incoming.action <= self.action
    }

    /// `ResourceAction`, as upstream's metrics and logs label events.
    pub fn label(&self) -> String {
        format!("{}{}", self.resource.name(), self.action.name())
    }
}

/// A hint's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueingHint {
    /// The event cannot make the pod schedulable.
    QueueSkip,
    /// The event may make the pod schedulable: retry it (after backoff).
    Queue,
}

/// The object an event is about. Nodes come as a [`NodeInfo`] built from
/// the Node alone (`NodeInfo::new`), as upstream's hints build one to run
/// the plugins' fit checks; its pods are not looked at.
#[derive(Clone, Copy)]
pub enum Object<'a> {
    Pod(&'a PodInfo),
    Node(&'a NodeInfo),
    PersistentVolume(&'a PersistentVolume),
    PersistentVolumeClaim(&'a PersistentVolumeClaim),
    StorageClass(&'a StorageClass),
    CSINode(&'a CSINode),
    CSIDriver(&'a CSIDriver),
    VolumeAttachment(&'a VolumeAttachment),
    CSIStorageCapacity(&'a CSIStorageCapacity),
}

/// An event's object kept beyond the watch callback: events that arrive
/// while pods are being scheduled are replayed to those pods' hints when
/// their attempt fails (upstream's in-flight events).
#[derive(Clone)]
pub enum OwnedObject {
    Pod(Arc<PodInfo>),
    Node(Arc<NodeInfo>),
    PersistentVolume(Arc<PersistentVolume>),
    PersistentVolumeClaim(Arc<PersistentVolumeClaim>),
    StorageClass(Arc<StorageClass>),
    CSINode(Arc<CSINode>),
    CSIDriver(Arc<CSIDriver>),
    VolumeAttachment(Arc<VolumeAttachment>),
    CSIStorageCapacity(Arc<CSIStorageCapacity>),
}

impl OwnedObject {
    pub fn as_object(&self) -> Object<'_> {
        match self {
            Self::Pod(p) => Object::Pod(p),
            Self::Node(n) => Object::Node(n),
            Self::PersistentVolume(v) => Object::PersistentVolume(v),
            Self::PersistentVolumeClaim(c) => Object::PersistentVolumeClaim(c),
            Self::StorageClass(c) => Object::StorageClass(c),
            Self::CSINode(n) => Object::CSINode(n),
            Self::CSIDriver(d) => Object::CSIDriver(d),
            Self::VolumeAttachment(a) => Object::VolumeAttachment(a),
            Self::CSIStorageCapacity(c) => Object::CSIStorageCapacity(c),
        }
    }
}

/// `hint(pod, old, new)`: `old` is `None` for adds, `new` is `None` for
/// deletes. An object of an unexpected kind answers `Queue`, as upstream's
/// hints do when their type assertion fails.
pub type QueueingHintFn =
    Arc<dyn Fn(&PodInfo, Option<Object<'_>>, Option<Object<'_>>) -> QueueingHint + Send + Sync>;

/// One registration: an event and, optionally, the hint filtering it. No
/// hint means every matching event queues the pod.
#[derive(Clone)]
pub struct ClusterEventWithHint {
    pub event: ClusterEvent,
    pub hint: Option<QueueingHintFn>,
}

impl ClusterEventWithHint {
    fn new(resource: EventResource, action: ActionType) -> Self {
        Self {
            event: ClusterEvent::new(resource, action),
            hint: None,
        }
    }

    fn with(
        resource: EventResource,
        action: ActionType,
        hint: impl Fn(&PodInfo, Option<Object<'_>>, Option<Object<'_>>) -> QueueingHint
        + Send
        + Sync
        + 'static,
    ) -> Self {
        Self {
            event: ClusterEvent::new(resource, action),
            hint: Some(Arc::new(hint)),
        }
    }

    /// This registration's answer for `incoming`: `None` when it does not
    /// match, else the hint's (or `Queue` without one).
    pub fn hint_for(
        &self,
        incoming: &ClusterEvent,
        pod: &PodInfo,
        old: Option<Object<'_>>,
        new: Option<Object<'_>>,
    ) -> Option<QueueingHint> {
        if !self.event.matches(incoming) {
            return None;
        }
        Some(
            self.hint
                .as_ref()
                .map_or(QueueingHint::Queue, |h| h(pod, old, new)),
        )
    }
}

impl fmt::Debug for ClusterEventWithHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterEventWithHint")
            .field("event", &self.event)
            .field("hint", &self.hint.is_some())
            .finish()
    }
}

/// Name of the plugin that gates pods with `spec.schedulingGates` (PreEnqueue).
pub const SCHEDULING_GATES: &str = "SchedulingGates";
/// Name of the PostFilter plugin; with async preemption it keeps
/// preemptors pending until their victims are gone.
pub const DEFAULT_PREEMPTION: &str = "DefaultPreemption";

/// The events `plugin` registers, configured by the same `args` as its
/// registry entry (NodeAffinity's `addedAffinity`, PodTopologySpread's
/// default constraints change its hints). Plugins that never reject a pod
/// (score-only, QueueSort, binding) register nothing. An unknown plugin gets
/// upstream's default for plugins without EventsToRegister: the wildcard.
pub fn for_plugin(plugin: &str, args: Option<&Value>) -> Result<Vec<ClusterEventWithHint>, String> {
    Ok(match plugin {
        plugins::node_unschedulable::NAME => node::node_unschedulable(),
        plugins::node_name::NAME => node::node_name(),
        plugins::taint_toleration::NAME => node::taint_toleration(),
        plugins::node_affinity::NAME => node::node_affinity(args)?,
        plugins::node_ports::NAME => node::node_ports(),
        plugins::node_resources::fit::NAME => node::node_resources_fit(args)?,
        plugins::node_declared_features::NAME => node::node_declared_features(),
        SCHEDULING_GATES => node::scheduling_gates(),
        DEFAULT_PREEMPTION => node::default_preemption(),
        plugins::inter_pod_affinity::NAME => pods::inter_pod_affinity(),
        plugins::pod_topology_spread::NAME => pods::pod_topology_spread(args)?,
        plugins::volume_restrictions::NAME => volumes::volume_restrictions(),
        plugins::node_volume_limits::NAME => volumes::node_volume_limits(),
        plugins::volume_zone::NAME => volumes::volume_zone(),
        plugins::volume_binding::NAME => volumes::volume_binding(),
        plugins::node_resources::balanced_allocation::NAME
        | plugins::image_locality::NAME
        | plugins::queue_sort::NAME
        | "DefaultBinder" => vec![],
        _ => vec![ClusterEventWithHint {
            event: ClusterEvent::WILDCARD,
            hint: None,
        }],
    })
}

/// Upstream's `util.As` for nodes: the hint's objects as nodes, or `None`
/// (the hint then answers `Queue`) when either is something else.
fn as_nodes<'a>(
    old: Option<Object<'a>>,
    new: Option<Object<'a>>,
) -> Option<(Option<&'a NodeInfo>, Option<&'a NodeInfo>)> {
    let one = |o: Option<Object<'a>>| match o {
        None => Some(None),
        Some(Object::Node(n)) => Some(Some(n)),
        Some(_) => None,
    };
    Some((one(old)?, one(new)?))
}

/// `util.As` for pods.
fn as_pods<'a>(
    old: Option<Object<'a>>,
    new: Option<Object<'a>>,
) -> Option<(Option<&'a PodInfo>, Option<&'a PodInfo>)> {
    let one = |o: Option<Object<'a>>| match o {
        None => Some(None),
        Some(Object::Pod(p)) => Some(Some(p)),
        Some(_) => None,
    };
    Some((one(old)?, one(new)?))
}

fn queue_if(cond: bool) -> QueueingHint {
    if cond {
        QueueingHint::Queue
    } else {
        QueueingHint::QueueSkip
    }
}

#[cfg(test)]
mod tests;
