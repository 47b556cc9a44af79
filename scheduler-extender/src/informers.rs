//! Watches that feed the cache and the queue: Pods, Nodes, Namespaces and the
//! storage objects. Each watcher reports when its initial list is applied, so
//! the scheduler only schedules (and reports ready) on a complete picture.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{
    ContainerStatus, EphemeralContainer, Namespace, Node, PersistentVolume, PersistentVolumeClaim,
    Pod, ResourceRequirements, VolumeMount,
};
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, StorageClass, VolumeAttachment};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::cache::{VolumeKind, is_assigned_and_active};
use crate::framework::{NodeInfo, PodInfo};
use crate::preemption::pdb::PdbInfo;
use crate::queue::{MoveFilter, QueueEvent, assigned_pod_deleted};
use crate::queueing_hints::events::{
    node_scheduling_properties_change, pod_scheduling_properties_change,
};
use crate::queueing_hints::{ActionType, ClusterEvent, EventResource, OwnedObject};
use crate::scheduler::Scheduler;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{ReplicationController, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::workloads::{Kind, WorkloadIndex};

/// Applies one watched object change to the scheduler's state.
trait Handler<K: Resource>: Send + Sync + 'static {
    fn apply(&self, s: &Scheduler, obj: K);
    fn delete(&self, s: &Scheduler, obj: K);
    /// The identity `resync` compares: the UID by default.
    fn key(&self, obj: &K) -> String;
    /// Drops what the scheduler never reads before the object is kept.
    fn trim(&self, obj: &mut K) {
        obj.meta_mut().managed_fields = None;
    }
    /// After a (re)list: forget what the list no longer contains (deleted
    /// while the watch was down). `seen` holds the listed objects' keys.
    fn resync(&self, s: &Scheduler, seen: &HashSet<String>);
}

struct Pods;
impl Handler<Pod> for Pods {
    fn trim(&self, pod: &mut Pod) {
        slim_pod(pod);
    }
    fn apply(&self, s: &Scheduler, pod: Pod) {
        let uid = pod.uid().unwrap_or_default();
        let assigned = pod
            .spec
            .as_ref()
            .and_then(|sp| sp.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        if assigned {
            s.queue.delete(&uid);
            s.nominator.lock().expect("nominator lock").remove(&uid);
            if pod.metadata.deletion_timestamp.is_some() {
                s.observed_eviction(&uid);
            }
            let active = is_assigned_and_active(&pod);
            let (old, was_assumed, new) = {
                let mut cache = s.cache.lock().expect("cache lock");
                let old = cache.pod_info(&uid);
                let was_assumed = cache.is_assumed(&uid);
                cache.upsert_pod(pod);
                (old, was_assumed, cache.pod_info(&uid))
            };
            assigned_pod_events(s, old, was_assumed, new, active);
            return;
        }
        let terminal = matches!(
            pod.status.as_ref().and_then(|st| st.phase.as_deref()),
            Some("Succeeded") | Some("Failed")
        );
        if !s.responsible_for(&pod) || terminal || pod.metadata.deletion_timestamp.is_some() {
            s.queue.delete(&uid);
            s.nominator.lock().expect("nominator lock").remove(&uid);
            return;
        }
        let nominated = pod
            .status
            .as_ref()
            .and_then(|st| st.nominated_node_name.clone())
            .filter(|n| !n.is_empty());
        if s.cache.lock().expect("cache lock").is_assumed(&uid) {
            return; // our bind is in flight; the watch will confirm it
        }
        let info = Arc::new(PodInfo::new(Arc::new(pod)));
        {
            let mut nominator = s.nominator.lock().expect("nominator lock");
            match nominated {
                Some(node) => {
                    nominator.insert(uid.clone(), (node, info.clone()));
                }
                // An update without a nomination can overtake the status
                // patch of the preemption that made one (as upstream's
                // nominator notes): keep the reservation in memory, or an
                // equal-priority pod takes the room and this one preempts
                // again. Binding, deletion and lower-priority clearing end it.
                None => {
                    if let Some(entry) = nominator.get_mut(&uid) {
                        entry.1 = info.clone();
                    }
                }
            }
        }
        let old = s.queue.pod(&uid);
        s.queue.add(info.clone());
        // Pods of its priority or lower counted the pod on its old
        // nominated node; as upstream, that is as if it left the node.
        if let Some(old) = old
            && nominated_node_changed(&old.pod, &info.pod)
        {
            s.queue.move_up_to_priority(old);
        }
    }
    fn delete(&self, s: &Scheduler, pod: Pod) {
        let uid = pod.uid().unwrap_or_default();
        s.pod_deleted(&uid);
        s.observed_eviction(&uid);
        s.queue.delete(&uid);
        // The node it was nominated to: in our nominator before (or
        // without) the status saying so, or in its status.
        let nominated_to = s
            .nominator
            .lock()
            .expect("nominator lock")
            .remove(&uid)
            .map(|(node, _)| node)
            .or_else(|| {
                pod.status
                    .as_ref()
                    .and_then(|st| st.nominated_node_name.clone())
                    .filter(|n| !n.is_empty())
            });
        let (was_assumed, cached) = {
            let mut cache = s.cache.lock().expect("cache lock");
            let assumed = cache.is_assumed(&uid);
            let cached = cache.pod_info(&uid);
            cache.remove_pod(&uid);
            (assumed, cached)
        };
        let gone = || {
            cached
                .clone()
                .unwrap_or_else(|| Arc::new(PodInfo::new(Arc::new(pod.clone()))))
        };
        match pod.spec.as_ref().and_then(|sp| sp.node_name.as_deref()) {
            // Finished before: its room was freed (and the event sent) then.
            Some(node) if !node.is_empty() && cached.is_none() && !is_assigned_and_active(&pod) => {
            }
            Some(node) if !node.is_empty() => {
                let still_leaving = {
                    let evicting = s.evicting.lock().expect("evicting lock");
                    let cache = s.cache.lock().expect("cache lock");
                    cache.lowest_leaving_priority(node, &evicting)
                };
                s.queue.move_after_pod_deleted(node, still_leaving, gone())
            }
            // Our bind was in flight: the room it held is free.
            _ if was_assumed => s
                .queue
                .on_event(assigned_pod_deleted(gone()), MoveFilter::All),
            // Pods of lower or equal priority counted a nominated pod as if it
            // ran on its node (upstream moves only those). A pending pod held
            // nothing: its deletion helps no one.
            _ if nominated_to.is_some() => {
                // Hints ask whether the deleted pod held a node.
                let mut nominated = pod.clone();
                nominated
                    .status
                    .get_or_insert_with(Default::default)
                    .nominated_node_name = nominated_to;
                s.queue
                    .move_up_to_priority(Arc::new(PodInfo::new(Arc::new(nominated))))
            }
            _ => {}
        }
    }
    fn key(&self, pod: &Pod) -> String {
        pod.uid().unwrap_or_default()
    }
    fn resync(&self, s: &Scheduler, seen: &HashSet<String>) {
        let mut cache = s.cache.lock().expect("cache lock");
        let gone: Vec<String> = cache
            .pod_uids()
            .into_iter()
            .filter(|uid| !seen.contains(uid) && !cache.is_assumed(uid))
            .collect();
        for uid in &gone {
            cache.remove_pod(uid);
            s.pod_deleted(uid);
        }
        drop(cache);
        s.evicting
            .lock()
            .expect("evicting lock")
            .retain(|uid| seen.contains(uid));
        for uid in s.queue.uids() {
            if !seen.contains(&uid) {
                s.pod_deleted(&uid);
                s.queue.delete(&uid);
            }
        }
        if !gone.is_empty() {
            s.queue.move_all_to_active();
        }
    }
}

/// Whether a pod lost or changed the node it was nominated to (upstream's
/// hasNominatedNodeNameChanged).
fn nominated_node_changed(old: &Pod, new: &Pod) -> bool {
    let nominated = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.nominated_node_name.clone())
            .unwrap_or_default()
    };
    let before = nominated(old);
    !before.is_empty() && before != nominated(new)
}

/// The events of an assigned pod's change, as upstream's handlers: Add for
/// one new to the cache (or confirmed after our assume), Delete for one no
/// longer running, else what changed.
fn assigned_pod_events(
    s: &Scheduler,
    old: Option<Arc<PodInfo>>,
    was_assumed: bool,
    new: Option<Arc<PodInfo>>,
    active: bool,
) {
    let event = |action| ClusterEvent::new(EventResource::AssignedPod, action);
    match (old, new) {
        (Some(old), _) if !active => s.queue.on_event(assigned_pod_deleted(old), MoveFilter::All),
        (old, Some(new)) if old.is_none() || was_assumed => s.queue.on_event(
            QueueEvent::new(event(ActionType::ADD), None, Some(OwnedObject::Pod(new))),
            MoveFilter::All,
        ),
        (Some(old), Some(new)) => {
            for e in pod_scheduling_properties_change(&new.pod, &old.pod, false) {
                s.queue.on_event(
                    QueueEvent::new(
                        e,
                        Some(OwnedObject::Pod(old.clone())),
                        Some(OwnedObject::Pod(new.clone())),
                    ),
                    MoveFilter::All,
                );
            }
        }
        _ => {}
    }
}

/// Keeps only what scheduling reads of a pod: the cache holds every pod in
/// the cluster, and container commands, environments, probes, statuses and
/// the service-account token volume are most of a pod's size (k8s-openapi's
/// `Volume` alone is 3 KiB inline, its projected sources 0.5 KiB each).
/// managedFields go too, as upstream's informers drop them.
pub fn slim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    if let Some(spec) = pod.spec.as_mut() {
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            c.command = None;
            c.args = None;
            c.env = None;
            c.env_from = None;
            c.liveness_probe = None;
            c.readiness_probe = None;
            c.startup_probe = None;
            c.lifecycle = None;
            // NodeDeclaredFeatures reads only whether a mount has bind options.
            c.volume_mounts = c
                .volume_mounts
                .take()
                .map(bind_mounts)
                .filter(|m| !m.is_empty());
            c.volume_devices = None;
            c.security_context = None;
            c.working_dir = None;
            c.image_pull_policy = None;
            c.termination_message_path = None;
            c.termination_message_policy = None;
            c.resize_policy = None;
            // NodePorts reads host ports only.
            if let Some(ports) = c.ports.as_mut() {
                ports.retain(|p| p.host_port.unwrap_or(0) > 0);
            }
            c.ports = c.ports.take().filter(|p| !p.is_empty());
        }
        // Only an ephemeral container's bind-mount options matter (NodeDeclaredFeatures).
        spec.ephemeral_containers = spec
            .ephemeral_containers
            .take()
            .map(|list| {
                list.into_iter()
                    .filter_map(|c| {
                        let mounts = bind_mounts(c.volume_mounts.unwrap_or_default());
                        (!mounts.is_empty()).then(|| EphemeralContainer {
                            name: c.name,
                            volume_mounts: Some(mounts),
                            ..Default::default()
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|l| !l.is_empty());
        if let Some(volumes) = spec.volumes.as_mut() {
            volumes.retain(volume_read_by_scheduling);
            volumes.shrink_to_fit();
        }
        spec.volumes = spec.volumes.take().filter(|v| !v.is_empty());
        spec.containers.shrink_to_fit();
        if let Some(tolerations) = spec.tolerations.as_mut() {
            tolerations.shrink_to_fit();
        }
    }
    if let Some(status) = pod.status.as_mut() {
        // Of the container statuses only the resources of an in-place resize
        // count (allocated and actuated requests).
        for statuses in [
            &mut status.container_statuses,
            &mut status.init_container_statuses,
        ] {
            *statuses = statuses
                .take()
                .map(|list| {
                    list.into_iter()
                        .filter(|c| c.allocated_resources.is_some() || c.resources.is_some())
                        .map(|c| ContainerStatus {
                            name: c.name,
                            allocated_resources: c.allocated_resources,
                            resources: c.resources.map(|r| ResourceRequirements {
                                requests: r.requests,
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .collect::<Vec<_>>()
                })
                .filter(|list| !list.is_empty());
        }
        status.ephemeral_container_statuses = None;
        status.host_ip = None;
        status.host_ips = None;
        status.pod_ip = None;
        status.pod_ips = None;
        // Only our own condition is read (to skip rewriting it unchanged),
        // and whether a resize is infeasible.
        if let Some(conditions) = status.conditions.as_mut() {
            conditions.retain(|c| c.type_ == "PodScheduled" || c.type_ == "PodResizePending");
            conditions.shrink_to_fit();
        }
    }
}

/// Volume sources no plugin reads (upstream's VolumeRestrictions,
/// NodeVolumeLimits, VolumeZone, VolumeBinding and ImageLocality look at
/// claims, ephemeral claims, image volumes and the in-tree disk kinds only).
fn volume_read_by_scheduling(v: &k8s_openapi::api::core::v1::Volume) -> bool {
    v.projected.is_none()
        && v.config_map.is_none()
        && v.secret.is_none()
        && v.downward_api.is_none()
        && v.empty_dir.is_none()
        && v.host_path.is_none()
}

/// The volume mounts with bind-mount options, the only ones scheduling reads.
fn bind_mounts(mut mounts: Vec<VolumeMount>) -> Vec<VolumeMount> {
    mounts.retain(|m| m.bind_mount_options.as_ref().is_some_and(|o| !o.is_empty()));
    mounts
}

/// Keeps what scheduling reads of a node (spec, labels, annotations,
/// allocatable, capacity and images): the conditions, addresses and system
/// info that heartbeats rewrite are never read.
pub fn slim_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    if let Some(status) = node.status.as_mut() {
        status.conditions = None;
        status.addresses = None;
        status.node_info = None;
        status.daemon_endpoints = None;
        status.config = None;
        status.features = None;
        status.runtime_handlers = None;
        status.volumes_attached = None;
        status.volumes_in_use = None;
    }
}

/// The Node/Delete event.
fn node_deleted(s: &Scheduler, node: Arc<Node>) {
    s.queue.on_event(
        QueueEvent::new(
            ClusterEvent::new(EventResource::Node, ActionType::DELETE),
            Some(node_info(node)),
            None,
        ),
        MoveFilter::All,
    );
}

/// A node as hints see it: its NodeInfo built from the Node alone.
fn node_info(node: Arc<Node>) -> OwnedObject {
    OwnedObject::Node(Arc::new(NodeInfo::new(node)))
}

struct Nodes;
impl Handler<Node> for Nodes {
    fn trim(&self, node: &mut Node) {
        slim_node(node);
    }
    fn apply(&self, s: &Scheduler, node: Node) {
        let name = node.name_any();
        let (old, new) = {
            let mut cache = s.cache.lock().expect("cache lock");
            let old = cache.node_object(&name);
            cache.add_or_update_node(node);
            (old, cache.node_object(&name))
        };
        let Some(new) = new else {
            return;
        };
        // Heartbeats only touch conditions, which the cache does not keep:
        // they make no event.
        let events: Vec<ClusterEvent> = match &old {
            None => vec![ClusterEvent::new(EventResource::Node, ActionType::ADD)],
            Some(old) => node_scheduling_properties_change(&new, old),
        }
        .into_iter()
        .filter(|e| s.queue.interested(e))
        .collect();
        if events.is_empty() {
            return;
        }
        let (old, new) = (old.map(node_info), node_info(new));
        for event in events {
            s.queue.on_event(
                QueueEvent::new(event, old.clone(), Some(new.clone())),
                MoveFilter::All,
            );
        }
    }
    fn delete(&self, s: &Scheduler, node: Node) {
        s.cache
            .lock()
            .expect("cache lock")
            .remove_node(&node.name_any());
        node_deleted(s, Arc::new(node));
    }
    fn key(&self, node: &Node) -> String {
        node.name_any()
    }
    fn resync(&self, s: &Scheduler, seen: &HashSet<String>) {
        let gone: Vec<Arc<Node>> = {
            let mut cache = s.cache.lock().expect("cache lock");
            let names: Vec<String> = cache
                .node_names()
                .into_iter()
                .filter(|name| !seen.contains(name))
                .collect();
            names
                .iter()
                .filter_map(|name| {
                    let node = cache.node_object(name);
                    cache.remove_node(name);
                    node
                })
                .collect()
        };
        // Deleted while the watch was down: the same event as a watched
        // deletion (upstream's relist delivers one).
        for node in gone {
            node_deleted(s, node);
        }
    }
}

struct Namespaces;
impl Handler<Namespace> for Namespaces {
    fn apply(&self, s: &Scheduler, ns: Namespace) {
        let labels = ns.labels().clone();
        s.cache
            .lock()
            .expect("cache lock")
            .set_namespace(ns.name_any(), labels);
        // No queue move: upstream's scheduler registers no Namespace event.
    }
    fn delete(&self, s: &Scheduler, ns: Namespace) {
        s.cache
            .lock()
            .expect("cache lock")
            .remove_namespace(&ns.name_any());
    }
    fn key(&self, ns: &Namespace) -> String {
        ns.name_any()
    }
    fn resync(&self, s: &Scheduler, seen: &HashSet<String>) {
        s.cache.lock().expect("cache lock").retain_namespaces(seen);
    }
}

struct Budgets;
impl Handler<PodDisruptionBudget> for Budgets {
    fn apply(&self, s: &Scheduler, pdb: PodDisruptionBudget) {
        let key = self.key(&pdb);
        s.pdbs
            .lock()
            .expect("pdb lock")
            .insert(key, PdbInfo::new(&pdb));
    }
    fn delete(&self, s: &Scheduler, pdb: PodDisruptionBudget) {
        s.pdbs.lock().expect("pdb lock").remove(&self.key(&pdb));
    }
    fn key(&self, pdb: &PodDisruptionBudget) -> String {
        format!("{}/{}", pdb.namespace().unwrap_or_default(), pdb.name_any())
    }
    fn resync(&self, s: &Scheduler, seen: &HashSet<String>) {
        s.pdbs
            .lock()
            .expect("pdb lock")
            .retain(|k, _| seen.contains(k));
    }
}

/// The selectors PodTopologySpread's default constraints use
/// ([`crate::workloads`]), one handler for the four kinds.
struct Workloads;

/// A kind whose selector the workload index keeps.
trait Workload: Resource {
    const KIND: Kind;
    /// Records the object's selector (a Service or ReplicationController
    /// without one is forgotten).
    fn record(self, index: &mut WorkloadIndex, ns: &str, name: &str);
}

impl Workload for Service {
    const KIND: Kind = Kind::Service;
    fn record(self, index: &mut WorkloadIndex, ns: &str, name: &str) {
        index.set_service(ns, name, self.spec.and_then(|s| s.selector));
    }
}

impl Workload for ReplicationController {
    const KIND: Kind = Kind::ReplicationController;
    fn record(self, index: &mut WorkloadIndex, ns: &str, name: &str) {
        index.set_replication_controller(ns, name, self.spec.and_then(|s| s.selector));
    }
}

impl Workload for ReplicaSet {
    const KIND: Kind = Kind::ReplicaSet;
    fn record(self, index: &mut WorkloadIndex, ns: &str, name: &str) {
        index.set_replica_set(ns, name, self.spec.selector);
    }
}

impl Workload for StatefulSet {
    const KIND: Kind = Kind::StatefulSet;
    fn record(self, index: &mut WorkloadIndex, ns: &str, name: &str) {
        index.set_stateful_set(ns, name, self.spec.selector);
    }
}

fn workload_index() -> std::sync::RwLockWriteGuard<'static, WorkloadIndex> {
    crate::workloads::global()
        .write()
        .expect("workload index lock")
}

fn namespace_and_name<K: Resource>(obj: &K) -> (String, String) {
    let meta = obj.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl<K: Workload> Handler<K> for Workloads {
    fn apply(&self, _: &Scheduler, obj: K) {
        let (ns, name) = namespace_and_name(&obj);
        obj.record(&mut workload_index(), &ns, &name);
    }
    fn delete(&self, _: &Scheduler, obj: K) {
        let (ns, name) = namespace_and_name(&obj);
        workload_index().remove(K::KIND, &ns, &name);
    }
    fn key(&self, obj: &K) -> String {
        let (ns, name) = namespace_and_name(obj);
        format!("{ns}/{name}")
    }
    fn resync(&self, _: &Scheduler, seen: &HashSet<String>) {
        workload_index().retain(K::KIND, seen);
    }
}

/// Handlers of the storage objects: each sets, removes and resyncs one map of
/// the cache's volume index.
macro_rules! volume_handler {
    ($handler:ident, $kind:ty, $set:ident, $kind_tag:expr, $field:ident, $resource:ident, $owned:expr, |$obj:ident| $key:expr) => {
        struct $handler;
        impl $handler {
            /// The kind's Delete event, for a watched deletion and for an
            /// object a relist no longer holds alike.
            fn deleted(s: &Scheduler, obj: Arc<$kind>) {
                let owned: fn(Arc<$kind>) -> Option<OwnedObject> = $owned;
                s.queue.on_event(
                    QueueEvent::new(
                        ClusterEvent::new(EventResource::$resource, ActionType::DELETE),
                        owned(obj),
                        None,
                    ),
                    MoveFilter::All,
                );
            }
        }
        impl Handler<$kind> for $handler {
            fn apply(&self, s: &Scheduler, obj: $kind) {
                let (old, new) = s.cache.lock().expect("cache lock").$set(obj);
                let owned: fn(Arc<$kind>) -> Option<OwnedObject> = $owned;
                let action = if old.is_some() {
                    ActionType::UPDATE
                } else {
                    ActionType::ADD
                };
                s.queue.on_event(
                    QueueEvent::new(
                        ClusterEvent::new(EventResource::$resource, action),
                        old.and_then(owned),
                        owned(new),
                    ),
                    MoveFilter::All,
                );
            }
            fn delete(&self, s: &Scheduler, obj: $kind) {
                let gone = HashSet::from([self.key(&obj)]);
                s.cache
                    .lock()
                    .expect("cache lock")
                    .remove_volume_object($kind_tag, gone);
                Self::deleted(s, Arc::new(obj));
            }
            fn key(&self, $obj: &$kind) -> String {
                $key
            }
            fn resync(&self, s: &Scheduler, seen: &HashSet<String>) {
                let gone: Vec<Arc<$kind>> = {
                    let mut cache = s.cache.lock().expect("cache lock");
                    let gone = cache
                        .volume_index()
                        .$field
                        .iter()
                        .filter(|(key, _)| !seen.contains(*key))
                        .map(|(_, obj)| obj.clone())
                        .collect();
                    cache.retain_volume_objects($kind_tag, seen);
                    gone
                };
                // Deleted while the watch was down: the same event as a
                // watched deletion (upstream's relist delivers one).
                for obj in gone {
                    Self::deleted(s, obj);
                }
            }
        }
    };
}

volume_handler!(
    Claims,
    PersistentVolumeClaim,
    set_claim,
    VolumeKind::Claims,
    claims,
    PersistentVolumeClaim,
    |c| Some(OwnedObject::PersistentVolumeClaim(c)),
    |c| format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any())
);
volume_handler!(
    Volumes,
    PersistentVolume,
    set_volume,
    VolumeKind::Volumes,
    volumes,
    PersistentVolume,
    |v| Some(OwnedObject::PersistentVolume(v)),
    |v| v.name_any()
);
volume_handler!(
    StorageClasses,
    StorageClass,
    set_storage_class,
    VolumeKind::StorageClasses,
    storage_classes,
    StorageClass,
    |c| Some(OwnedObject::StorageClass(c)),
    |c| c.name_any()
);
volume_handler!(
    CsiNodes,
    CSINode,
    set_csi_node,
    VolumeKind::CsiNodes,
    csi_nodes,
    CSINode,
    |n| Some(OwnedObject::CSINode(n)),
    |n| n.name_any()
);
// No hint reads a ResourceClaim yet (DynamicResources registers the wildcard).
volume_handler!(
    ResourceClaims,
    k8s_openapi::api::resource::v1::ResourceClaim,
    set_resource_claim,
    VolumeKind::ResourceClaims,
    resource_claims,
    ResourceClaim,
    |_| None,
    |c| format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any())
);
volume_handler!(
    CsiDrivers,
    CSIDriver,
    set_csi_driver,
    VolumeKind::CsiDrivers,
    csi_drivers,
    CSIDriver,
    |d| Some(OwnedObject::CSIDriver(d)),
    |d| d.name_any()
);

/// VolumeAttachments count against a node's CSI limits. Their status flips
/// as volumes attach, which changes nothing for scheduling; only a deletion
/// frees room (upstream registers VolumeAttachment/Delete alone).
struct Attachments;
impl Handler<VolumeAttachment> for Attachments {
    fn trim(&self, va: &mut VolumeAttachment) {
        va.metadata.managed_fields = None;
        va.status = None;
    }
    fn apply(&self, s: &Scheduler, va: VolumeAttachment) {
        s.cache
            .lock()
            .expect("cache lock")
            .set_volume_attachment(&va);
    }
    fn delete(&self, s: &Scheduler, va: VolumeAttachment) {
        s.cache
            .lock()
            .expect("cache lock")
            .remove_volume_object(VolumeKind::Attachments, HashSet::from([va.name_any()]));
        attachment_deleted(s, va);
    }
    fn key(&self, va: &VolumeAttachment) -> String {
        va.name_any()
    }
    fn resync(&self, s: &Scheduler, seen: &HashSet<String>) {
        let gone: Vec<VolumeAttachment> = {
            let mut cache = s.cache.lock().expect("cache lock");
            let gone = cache
                .volume_index()
                .attachments
                .iter()
                .flat_map(|(node, on_node)| {
                    on_node
                        .iter()
                        .filter(|(name, _)| !seen.contains(*name))
                        .map(move |(name, (attacher, pv))| {
                            remembered_attachment(name, node, attacher, pv)
                        })
                })
                .collect();
            cache.retain_volume_objects(VolumeKind::Attachments, seen);
            gone
        };
        // Deleted while the watch was down: the same event as a watched
        // deletion (upstream's relist delivers one).
        for va in gone {
            attachment_deleted(s, va);
        }
    }
}

/// The VolumeAttachment/Delete event.
fn attachment_deleted(s: &Scheduler, va: VolumeAttachment) {
    s.queue.on_event(
        QueueEvent::new(
            ClusterEvent::new(EventResource::VolumeAttachment, ActionType::DELETE),
            Some(OwnedObject::VolumeAttachment(Arc::new(va))),
            None,
        ),
        MoveFilter::All,
    );
}

/// An attachment rebuilt from what the cache keeps of it (its name, node,
/// attacher and volume: all the hints read).
fn remembered_attachment(name: &str, node: &str, attacher: &str, pv: &str) -> VolumeAttachment {
    let mut va = VolumeAttachment::default();
    va.metadata.name = Some(name.to_string());
    va.spec.attacher = attacher.to_string();
    va.spec.node_name = node.to_string();
    va.spec.source.persistent_volume_name = Some(pv.to_string());
    va
}

/// Runs one watch forever (it retries with backoff inside kube's watcher),
/// flipping `synced` once the initial list has been applied.
async fn watch_into<K, H>(
    s: Arc<Scheduler>,
    api: Api<K>,
    config: watcher::Config,
    handler: H,
    synced: watch::Sender<bool>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    H: Handler<K>,
    K::DynamicType: Default,
{
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    // During a (re)list, objects seen are collected so deletions missed
    // while disconnected are applied when the list completes.
    let mut listing: Option<HashSet<String>> = None;
    loop {
        match stream.try_next().await {
            Ok(Some(Event::Init)) => listing = Some(Default::default()),
            Ok(Some(Event::InitApply(mut obj))) => {
                handler.trim(&mut obj);
                if let Some(seen) = listing.as_mut() {
                    seen.insert(handler.key(&obj));
                }
                handler.apply(&s, obj);
            }
            Ok(Some(Event::InitDone)) => {
                if let Some(seen) = listing.take() {
                    handler.resync(&s, &seen);
                }
                let _ = synced.send(true);
            }
            Ok(Some(Event::Apply(mut obj))) => {
                handler.trim(&mut obj);
                handler.apply(&s, obj)
            }
            Ok(Some(Event::Delete(obj))) => handler.delete(&s, obj),
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(kind = %K::kind(&Default::default()), error = %e, "watch error; retrying")
            }
        }
    }
}

/// Starts every watch; the returned receiver turns true once all have synced.
pub fn start(s: Arc<Scheduler>) -> watch::Receiver<bool> {
    let client = s.client.clone();
    let mut receivers = vec![];
    macro_rules! spawn_watch {
        ($kind:ty, $handler:expr) => {
            spawn_watch!($kind, $handler, watcher::Config::default())
        };
        ($kind:ty, $handler:expr, $config:expr) => {{
            let (tx, rx) = watch::channel(false);
            receivers.push(rx);
            let api: Api<$kind> = Api::all(client.clone());
            tokio::spawn(watch_into(s.clone(), api, $config, $handler, tx));
        }};
    }
    spawn_watch!(Namespace, Namespaces);
    spawn_watch!(Node, Nodes);
    spawn_watch!(PersistentVolume, Volumes);
    spawn_watch!(PersistentVolumeClaim, Claims);
    spawn_watch!(StorageClass, StorageClasses);
    spawn_watch!(CSINode, CsiNodes);
    spawn_watch!(CSIDriver, CsiDrivers);
    spawn_watch!(
        k8s_openapi::api::resource::v1::ResourceClaim,
        ResourceClaims
    );
    spawn_watch!(VolumeAttachment, Attachments);
    spawn_watch!(PodDisruptionBudget, Budgets);
    spawn_watch!(Service, Workloads);
    spawn_watch!(ReplicationController, Workloads);
    spawn_watch!(ReplicaSet, Workloads);
    spawn_watch!(StatefulSet, Workloads);
    // As upstream's informer: finished pods hold nothing and need no decision;
    // a pod that finishes leaves the watch as a deletion.
    spawn_watch!(
        Pod,
        Pods,
        watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed")
    );
    let (all_tx, all_rx) = watch::channel(false);
    tokio::spawn(async move {
        for mut rx in receivers {
            if rx.wait_for(|synced| *synced).await.is_err() {
                return;
            }
        }
        let _ = all_tx.send(true);
    });
    all_rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{QueueName, Rejection};
    use serde_json::json;

    /// The parts of a Node the scheduling plugins read: slimming must keep them.
    #[derive(Clone, Debug, PartialEq)]
    struct NodeSummary {
        labels: std::collections::BTreeMap<String, String>,
        taints: Option<Vec<k8s_openapi::api::core::v1::Taint>>,
        unschedulable: Option<bool>,
        allocatable: Option<
            std::collections::BTreeMap<
                String,
                k8s_openapi::apimachinery::pkg::api::resource::Quantity,
            >,
        >,
        /// NodeDeclaredFeatures reads them.
        declared_features: Option<Vec<String>>,
    }

    impl NodeSummary {
        fn of(node: &Node) -> Self {
            Self {
                labels: node.labels().clone(),
                taints: node.spec.as_ref().and_then(|s| s.taints.clone()),
                unschedulable: node.spec.as_ref().and_then(|s| s.unschedulable),
                allocatable: node.status.as_ref().and_then(|s| s.allocatable.clone()),
                declared_features: node
                    .status
                    .as_ref()
                    .and_then(|s| s.declared_features.clone()),
            }
        }
    }

    fn scheduler() -> Scheduler {
        let (client, _) = crate::framework::fake_api::apiserver(Arc::new(
            crate::framework::fake_api::echo_bumping_version,
        ));
        let mut registry = prometheus_client::registry::Registry::default();
        Scheduler::new(
            client.clone(),
            client,
            crate::config::SchedulerConfig::default(),
            crate::metrics::Metrics::register(&mut registry),
        )
        .unwrap()
    }

    fn node(name: &str, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {"taints": taints},
            "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "110"}},
        }))
        .unwrap()
    }

    fn pod(name: &str, node: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {"schedulerName": "understudy-scheduler", "nodeName": node,
                     "containers": [{"name": "c"}]},
        }))
        .unwrap()
    }

    /// Adds a pending pod and parks it unschedulable, rejected by `plugin`,
    /// as a failed attempt does.
    async fn park_unschedulable(s: &Scheduler, name: &str, plugin: &str) {
        Pods.apply(s, pod(name, None));
        let popped = s.queue.pop().await.unwrap();
        assert_eq!(popped.info.pod.name, name);
        s.queue.requeue_failed(popped, Rejection::by([plugin]));
        assert_eq!(s.queue.counts()[&QueueName::Unschedulable], 1);
    }

    /// The cluster changes the issue names each retry unschedulable pods
    /// (so their condition and newest Event state the current reason): a
    /// node added, a taint removed (not only added), an assigned pod
    /// deleted; a heartbeat that changes nothing scheduling reads does not.
    #[tokio::test]
    async fn node_added_taint_removed_and_pod_deleted_retry_unschedulable_pods() {
        let s = scheduler();
        let unreachable =
            json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}]);
        Nodes.apply(&s, node("n1", unreachable.clone()));

        park_unschedulable(&s, "a", "TaintToleration").await;
        Nodes.apply(&s, node("n1", unreachable));
        assert_eq!(
            s.queue.counts()[&QueueName::Unschedulable],
            1,
            "a heartbeat retries nothing"
        );
        Nodes.apply(&s, node("n1", json!([])));
        assert_eq!(
            s.queue.counts()[&QueueName::Unschedulable],
            0,
            "taint removed"
        );

        park_unschedulable(&s, "b", "NodeResourcesFit").await;
        Nodes.apply(&s, node("n2", json!(null)));
        assert_eq!(s.queue.counts()[&QueueName::Unschedulable], 0, "node added");

        Pods.apply(&s, pod("running", Some("n2")));
        park_unschedulable(&s, "c", "NodeResourcesFit").await;
        Pods.delete(&s, pod("running", Some("n2")));
        assert_eq!(
            s.queue.counts()[&QueueName::Unschedulable],
            0,
            "assigned pod deleted"
        );
    }

    #[test]
    fn slimming_keeps_what_scheduling_reads() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "managedFields": [{"manager": "kubectl"}]},
            "spec": {
                "containers": [{
                    "name": "c", "image": "nginx:1", "command": ["sh"], "env": [{"name": "A", "value": "b"}],
                    "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 9090}],
                    "resources": {"requests": {"cpu": "1"}},
                    "readinessProbe": {"exec": {"command": ["true"]}},
                }],
                "volumes": [
                    {"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
                    {"name": "v", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "cfg", "configMap": {"name": "cfg"}},
                ],
            },
            "status": {
                "phase": "Running", "nominatedNodeName": "n1", "podIP": "10.0.0.1",
                "startTime": "2026-11-26T10:00:00Z",
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [{"name": "c", "image": "nginx:1", "imageID": "", "ready": true, "restartCount": 0}],
            },
        }))
        .unwrap();
        slim_pod(&mut pod);
        let before = PodInfo::new(Arc::new(pod.clone()));
        let c = &pod.spec.as_ref().unwrap().containers[0];
        assert!(c.command.is_none() && c.env.is_none() && c.readiness_probe.is_none());
        assert_eq!(c.image.as_deref(), Some("nginx:1"));
        assert_eq!(before.requests.milli_cpu, 1000);
        assert_eq!(before.host_ports().len(), 1);
        assert_eq!(
            c.ports.as_ref().map(Vec::len),
            Some(1),
            "only host ports are kept"
        );
        assert_eq!(before.pvc_names(), ["data"]);
        let volumes = pod.spec.as_ref().unwrap().volumes.as_ref().unwrap();
        assert_eq!(
            volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
            ["v"],
            "token and config volumes are never read"
        );
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.nominated_node_name.as_deref(), Some("n1"));
        assert!(
            status.start_time.is_some(),
            "preemption ranks victims by it"
        );
        assert!(status.container_statuses.is_none() && status.pod_ip.is_none());
        let conditions = status.conditions.as_ref().unwrap();
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, "PodScheduled");
        assert!(pod.metadata.managed_fields.is_none());
    }

    #[test]
    fn slimming_keeps_what_node_declared_features_reads() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {
                "hostNetwork": true, "hostUsers": false,
                "containers": [{"name": "c", "image": "i",
                    "restartPolicyRules": [{"action": "RestartAllContainers", "exitCodes": {"operator": "In", "values": [3]}}],
                    "volumeMounts": [
                        {"name": "plain", "mountPath": "/a"},
                        {"name": "bound", "mountPath": "/b", "bindMountOptions": ["nosuid"]},
                    ]}],
                "ephemeralContainers": [
                    {"name": "debug", "image": "busybox", "volumeMounts": [{"name": "plain", "mountPath": "/a"}]},
                ],
            },
        }))
        .unwrap();
        let before =
            crate::plugins::node_declared_features::required_features(pod.spec.as_ref().unwrap());
        slim_pod(&mut pod);
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(
            crate::plugins::node_declared_features::required_features(spec),
            before
        );
        assert_eq!(before.len(), 3);
        let mounts = spec.containers[0].volume_mounts.as_ref().unwrap();
        assert_eq!(mounts.len(), 1, "only mounts with bind options are kept");
        assert!(spec.ephemeral_containers.is_none());
        let mut node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "status": {"declaredFeatures": ["VolumeBindMountOptions"], "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap();
        slim_node(&mut node);
        let status = node.status.unwrap();
        assert_eq!(
            status.declared_features.unwrap(),
            ["VolumeBindMountOptions"]
        );
        assert!(status.conditions.is_none());
    }

    #[test]
    fn slimming_keeps_the_resources_of_an_in_place_resize() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "a", "image": "i", "resources": {"requests": {"cpu": "1"}}},
                {"name": "b", "image": "i", "resources": {"requests": {"cpu": "1"}}},
            ]},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "PodResizePending", "status": "True", "reason": "Deferred"}],
                "containerStatuses": [
                    {"name": "a", "image": "i", "imageID": "sha", "ready": true, "restartCount": 3,
                     "allocatedResources": {"cpu": "2"},
                     "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "4"}}},
                    {"name": "b", "image": "i", "imageID": "sha", "ready": true, "restartCount": 0},
                ],
            },
        }))
        .unwrap();
        slim_pod(&mut pod);
        let status = pod.status.as_ref().unwrap();
        let statuses = status.container_statuses.as_ref().unwrap();
        assert_eq!(statuses.len(), 1, "only statuses with resources are kept");
        assert_eq!(statuses[0].name, "a");
        assert!(statuses[0].image.is_empty() && statuses[0].restart_count == 0);
        let resources = statuses[0].resources.as_ref().unwrap();
        assert!(resources.requests.is_some() && resources.limits.is_none());
        assert_eq!(
            status.conditions.as_ref().unwrap()[0].type_,
            "PodResizePending"
        );
        assert_eq!(PodInfo::new(Arc::new(pod)).requests.milli_cpu, 3000);
    }

    #[test]
    fn slimming_a_node_keeps_what_scheduling_reads() {
        let mut node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"}, "managedFields": [{"manager": "kubelet"}]},
            "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}], "unschedulable": true},
            "status": {
                "allocatable": {"cpu": "4"}, "capacity": {"cpu": "4"},
                "images": [{"names": ["nginx:1"], "sizeBytes": 1000}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "", "containerRuntimeVersion": "", "kubeletVersion": "", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
            },
        }))
        .unwrap();
        let summary = NodeSummary::of(&node);
        slim_node(&mut node);
        assert!(
            summary == NodeSummary::of(&node),
            "nothing scheduling compares is lost"
        );
        let status = node.status.as_ref().unwrap();
        assert!(status.images.is_some() && status.capacity.is_some());
        assert!(
            status.conditions.is_none() && status.addresses.is_none() && status.node_info.is_none()
        );
        assert!(node.metadata.managed_fields.is_none());
        assert_eq!(
            node.spec.as_ref().unwrap().taints.as_ref().unwrap().len(),
            1
        );
    }

    #[tokio::test]
    async fn deleting_a_pod_nominated_only_in_memory_retries_pods_that_counted_it() {
        let s = scheduler();
        Nodes.apply(&s, node("n1", json!(null)));
        park_unschedulable(&s, "waiting", "NodeResourcesFit").await;
        let preemptor = pod("preemptor", None);
        s.nominator.lock().unwrap().insert(
            preemptor.uid().unwrap(),
            (
                "n1".to_string(),
                Arc::new(PodInfo::new(Arc::new(preemptor.clone()))),
            ),
        );
        // Its status never said so: the deletion's pod names no node.
        Pods.delete(&s, preemptor);
        assert_eq!(s.queue.counts()[&QueueName::Unschedulable], 0);
    }

    /// A storage object a relist no longer holds is gone from the cache and
    /// sends its Delete event, as a watched deletion does.
    #[tokio::test]
    async fn a_claim_gone_on_a_relist_sends_its_delete_event() {
        let s = scheduler();
        Nodes.apply(&s, node("n1", json!(null)));
        let claim: PersistentVolumeClaim =
            serde_json::from_value(json!({"metadata": {"name": "c", "namespace": "ns"}})).unwrap();
        Claims.apply(&s, claim);
        // DynamicResources registers every event.
        park_unschedulable(&s, "a", "DynamicResources").await;
        Claims.resync(&s, &HashSet::from(["ns/c".to_string()]));
        assert_eq!(
            s.queue.counts()[&QueueName::Unschedulable],
            1,
            "still listed: nothing happened"
        );
        Claims.resync(&s, &HashSet::new());
        assert_eq!(s.queue.counts()[&QueueName::Unschedulable], 0);
        assert!(s.cache.lock().unwrap().volume_index().claims.is_empty());
    }

    /// NodeVolumeLimits waits for an attachment's deletion; one missed while
    /// the watch was down is delivered by the relist.
    #[tokio::test]
    async fn an_attachment_gone_on_a_relist_sends_its_delete_event() {
        let s = scheduler();
        Nodes.apply(&s, node("n1", json!(null)));
        let va: VolumeAttachment = serde_json::from_value(json!({
            "metadata": {"name": "va"},
            "spec": {"attacher": "csi.example.com", "nodeName": "n1",
                     "source": {"persistentVolumeName": "pv"}},
        }))
        .unwrap();
        Attachments.apply(&s, va);
        let mut with_claim = pod("a", None);
        with_claim.spec.as_mut().unwrap().volumes = Some(vec![
            serde_json::from_value(
                json!({"name": "v", "persistentVolumeClaim": {"claimName": "c"}}),
            )
            .unwrap(),
        ]);
        Pods.apply(&s, with_claim);
        let popped = s.queue.pop().await.unwrap();
        s.queue
            .requeue_failed(popped, Rejection::by(["NodeVolumeLimits"]));
        Attachments.resync(&s, &HashSet::from(["va".to_string()]));
        assert_eq!(s.queue.counts()[&QueueName::Unschedulable], 1);
        Attachments.resync(&s, &HashSet::new());
        assert_eq!(s.queue.counts()[&QueueName::Unschedulable], 0);
        assert!(
            s.cache
                .lock()
                .unwrap()
                .volume_index()
                .attachments
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_finished_pod_frees_its_room_once() {
        let s = scheduler();
        Nodes.apply(&s, node("n1", json!(null)));
        Pods.apply(&s, pod("job", Some("n1")));
        park_unschedulable(&s, "waiting", "NodeResourcesFit").await;
        let mut finished = pod("job", Some("n1"));
        finished.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
        Pods.apply(&s, finished.clone());
        assert_eq!(
            s.queue.counts()[&QueueName::Unschedulable],
            0,
            "finishing frees the room"
        );
        let popped = s.queue.pop().await.unwrap();
        s.queue
            .requeue_failed(popped, Rejection::by(["NodeResourcesFit"]));
        Pods.delete(&s, finished);
        assert_eq!(
            s.queue.counts()[&QueueName::Unschedulable],
            1,
            "its deletion frees nothing more"
        );
    }
}
