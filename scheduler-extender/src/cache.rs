//! The scheduler cache: per-node state fed by watches, plus the pods this
//! scheduler has *assumed* onto nodes ahead of the watch confirming the bind.
//! Nodes are copy-on-write `Arc`s, so a snapshot is a list of pointers and a
//! cycle never sees a half-applied change.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, StorageClass, VolumeAttachment};
use kube::ResourceExt;

use crate::framework::labels::Labels;
use crate::framework::{NodeInfo, PodInfo, Snapshot, VolumeIndex};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CacheError {
    #[error("pod {0} is already in the cache")]
    AlreadyPresent(String),
    #[error("pod {0} is not assumed")]
    NotAssumed(String),
}

#[derive(Clone, Debug)]
struct PodState {
    info: Arc<PodInfo>,
    node: String,
    assumed: bool,
}

/// The storage object kinds the cache indexes.
#[derive(Clone, Copy, Debug)]
pub enum VolumeKind {
    Claims,
    Volumes,
    StorageClasses,
    CsiNodes,
    CsiDrivers,
    /// Keyed by the VolumeAttachment's name.
    Attachments,
    ResourceClaims,
}

/// A stored object's previous version, if any, and its new one.
pub type Replaced<T> = (Option<Arc<T>>, Arc<T>);

#[derive(Default)]
pub struct Cache {
    /// Nodes with a Node object, in the order the snapshot lists them: a
    /// snapshot is a copy of this Vec's pointers, with no per-node lookup.
    nodes: Vec<Arc<NodeInfo>>,
    /// Node name → position in `nodes`.
    positions: HashMap<String, usize>,
    /// Pods bound to nodes whose Node object is not (or no longer) known.
    placeholders: HashMap<String, Arc<NodeInfo>>,
    pods: HashMap<String, PodState>,
    namespaces: HashMap<String, Labels>,
    volumes: VolumeIndex,
    /// Positions in `nodes` changed since the scheduling cycle's snapshot
    /// was last brought up to date ([`Cache::refresh`]).
    changed: Vec<usize>,
    /// Nodes were added or removed (positions moved) since then.
    layout_changed: bool,
    /// Nodes with pods that have affinity terms / required anti-affinity
    /// terms (upstream's havePodsWithAffinity lists): InterPodAffinity reads
    /// only these, so it need not visit every pod of every node each cycle.
    affinity_nodes: std::collections::BTreeSet<String>,
    anti_affinity_nodes: std::collections::BTreeSet<String>,
    affinity_lists: Option<(NodeNames, NodeNames)>,
    // Shared pieces of the snapshot, rebuilt only when their inputs change.
    node_set_dirty: bool,
    index: Arc<HashMap<String, usize>>,
    image_nodes: Arc<HashMap<String, usize>>,
    namespaces_arc: Option<Arc<HashMap<String, Labels>>>,
    volumes_arc: Option<Arc<VolumeIndex>>,
    /// VolumeBinding's assumptions over `volumes` (see [`AssumedVolumes`]).
    assumed_volumes: AssumedVolumes,
    /// Bumped on every storage object the watches deliver, so a PreBind
    /// waiting for the PV controller wakes when something changed.
    volume_changes: tokio::sync::watch::Sender<u64>,
}

/// Upstream's passive assume cache (volumebinding/passive_assume_cache.go)
/// over the claims and volumes of the watch: an assumed object shadows the
/// watched one while both have the same resourceVersion, so the next pods do
/// not pick a volume Reserve gave away; any newer version from the watch (or
/// a deletion) expires the assumption, and Unreserve restores it.
#[derive(Default)]
struct AssumedVolumes {
    claims: HashMap<String, Arc<PersistentVolumeClaim>>,
    volumes: HashMap<String, Arc<PersistentVolume>>,
}

fn resource_version(meta: &kube::api::ObjectMeta) -> &str {
    meta.resource_version.as_deref().unwrap_or_default()
}

/// Assumes `obj` over the watched `stored` (same resourceVersion only).
fn assume_over<T: kube::Resource>(
    stored: Option<&Arc<T>>,
    obj: T,
    resource: &str,
    key: &str,
    assumed: &mut HashMap<String, Arc<T>>,
) -> Result<(), String> {
    let Some(stored) = stored else {
        return Err(format!("{resource} {key:?} not found"));
    };
    let (have, want) = (
        resource_version(stored.meta()),
        resource_version(obj.meta()),
    );
    if have != want {
        return Err(format!(
            "{key:?} is out of sync (stored: {have}, assume: {want})"
        ));
    }
    assumed.insert(key.to_string(), Arc::new(obj));
    Ok(())
}

/// Expires the assumption of `key` unless the watch still shows the version
/// it was made on (a resync of the same object keeps it).
fn expire_assumed<T: kube::Resource>(
    stored: Option<&Arc<T>>,
    key: &str,
    assumed: &mut HashMap<String, Arc<T>>,
) -> bool {
    let keep = match (assumed.get(key), stored) {
        (Some(a), Some(s)) => resource_version(a.meta()) == resource_version(s.meta()),
        (Some(_), None) => false,
        (None, _) => return false,
    };
    if !keep {
        assumed.remove(key);
    }
    !keep
}

type NodeNames = Arc<Vec<String>>;

/// Whether a pod holds node resources: bound and not finished.
pub fn is_assigned_and_active(pod: &Pod) -> bool {
    let assigned = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    assigned && !matches!(phase, Some("Succeeded") | Some("Failed"))
}

impl Cache {
    pub fn new() -> Self {
        Self {
            node_set_dirty: true,
            ..Default::default()
        }
    }

    /// Notified whenever a watched claim or volume changes.
    pub fn volume_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.volume_changes.subscribe()
    }

    fn volumes_changed(&mut self) {
        self.volumes_arc = None;
        self.volume_changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Reserve: `pv` (with its claimRef set) stands in for the watched volume.
    pub fn assume_volume(&mut self, pv: PersistentVolume) -> Result<(), String> {
        let key = pv.name_any();
        assume_over(
            self.volumes.volumes.get(&key),
            pv,
            "persistentvolumes",
            &key,
            &mut self.assumed_volumes.volumes,
        )?;
        self.volumes_arc = None;
        Ok(())
    }

    /// Reserve: `claim` (with the selected-node annotation) stands in for the
    /// watched claim.
    pub fn assume_claim(&mut self, claim: PersistentVolumeClaim) -> Result<(), String> {
        let key = format!(
            "{}/{}",
            claim.namespace().unwrap_or_default(),
            claim.name_any()
        );
        assume_over(
            self.volumes.claims.get(&key),
            claim,
            "persistentvolumeclaims",
            &key,
            &mut self.assumed_volumes.claims,
        )?;
        self.volumes_arc = None;
        Ok(())
    }

    /// Unreserve: drops the assumption of `pv` if it is still the one made.
    pub fn restore_volume(&mut self, pv: &PersistentVolume) {
        let key = pv.name_any();
        if self
            .assumed_volumes
            .volumes
            .get(&key)
            .is_some_and(|a| resource_version(&a.metadata) == resource_version(&pv.metadata))
        {
            self.assumed_volumes.volumes.remove(&key);
            self.volumes_arc = None;
        }
    }

    pub fn restore_claim(&mut self, claim: &PersistentVolumeClaim) {
        let key = format!(
            "{}/{}",
            claim.namespace().unwrap_or_default(),
            claim.name_any()
        );
        if self
            .assumed_volumes
            .claims
            .get(&key)
            .is_some_and(|a| resource_version(&a.metadata) == resource_version(&claim.metadata))
        {
            self.assumed_volumes.claims.remove(&key);
            self.volumes_arc = None;
        }
    }

    /// The volume as the watch last showed it, ignoring assumptions.
    pub fn api_volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.volumes.volumes.get(name).cloned()
    }

    /// The claim (`namespace/name`) as scheduling sees it: assumed, else watched.
    pub fn claim(&self, key: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.assumed_volumes
            .claims
            .get(key)
            .or_else(|| self.volumes.claims.get(key))
            .cloned()
    }

    /// The claim (`namespace/name`) as the watch last showed it.
    pub fn api_claim(&self, key: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.volumes.claims.get(key).cloned()
    }

    /// The labels of a node with a Node object.
    pub fn node_labels(&self, name: &str) -> Option<Labels> {
        self.positions
            .get(name)
            .map(|&i| self.nodes[i].labels.clone())
    }

    fn node_mut(&mut self, name: &str) -> &mut NodeInfo {
        let entry = match self.positions.get(name) {
            Some(&i) => {
                self.note_changed(i);
                &mut self.nodes[i]
            }
            None => self
                .placeholders
                .entry(name.to_string())
                .or_insert_with(|| {
                    let placeholder = Node {
                        metadata: kube::api::ObjectMeta {
                            name: Some(name.to_string()),
                            ..Default::default()
                        },
                        ..Default::default()
                    };
                    Arc::new(NodeInfo::new(Arc::new(placeholder)))
                }),
        };
        Arc::make_mut(entry)
    }

    fn add_pod_to(&mut self, node: &str, pod: &Arc<PodInfo>) {
        self.node_mut(node).add_pod(pod.clone());
        // Any anti-affinity term is an affinity term: pods without one leave
        // both lists as they are.
        if pod.has_affinity() {
            self.track_affinity(node);
        }
    }

    fn remove_pod_from(&mut self, node: &str, pod: &Arc<PodInfo>) {
        self.node_mut(node).remove_pod(&pod.uid);
        // Any anti-affinity term is an affinity term: pods without one leave
        // both lists as they are.
        if pod.has_affinity() {
            self.track_affinity(node);
        }
    }

    /// Re-reads whether `node` (a real node, not a placeholder) holds pods
    /// with affinity terms.
    fn track_affinity(&mut self, node: &str) {
        let (affinity, anti) = match self.positions.get(node) {
            Some(&i) => {
                let pods = &self.nodes[i].pods;
                (
                    pods.iter().any(|p| p.has_affinity()),
                    pods.iter().any(|p| p.has_required_anti_affinity()),
                )
            }
            None => (false, false),
        };
        let mut changed = false;
        for (set, member) in [
            (&mut self.affinity_nodes, affinity),
            (&mut self.anti_affinity_nodes, anti),
        ] {
            changed |= if member {
                set.insert(node.to_string())
            } else {
                set.remove(node)
            };
        }
        if changed {
            self.affinity_lists = None;
        }
    }

    fn note_changed(&mut self, position: usize) {
        // Bounded: with no cycle to consume them, a full copy is cheaper.
        if self.changed.len() >= self.nodes.len() {
            self.layout_changed = true;
            self.changed.clear();
        } else if !self.layout_changed {
            self.changed.push(position);
        }
    }

    pub fn add_or_update_node(&mut self, node: Node) {
        let name = node.name_any();
        if let Some(&i) = self.positions.get(&name) {
            let same_images = self.nodes[i]
                .node
                .status
                .as_ref()
                .and_then(|s| s.images.as_ref())
                == node.status.as_ref().and_then(|s| s.images.as_ref());
            self.node_mut(&name).set_node(Arc::new(node));
            if !same_images {
                self.node_set_dirty = true;
            }
            return;
        }
        // New node: adopt the pods already bound to it, if any.
        let mut info = match self.placeholders.remove(&name) {
            Some(p) => p,
            None => Arc::new(NodeInfo::new(Arc::new(node.clone()))),
        };
        Arc::make_mut(&mut info).set_node(Arc::new(node));
        self.positions.insert(name.clone(), self.nodes.len());
        self.nodes.push(info);
        self.node_set_dirty = true;
        self.layout_changed = true;
        self.track_affinity(&name);
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.positions.remove(name) else {
            return;
        };
        let info = self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.positions.insert(moved.name.clone(), i);
        }
        // Keep its pods accounted while they still reference it (upstream does too).
        if !info.pods.is_empty() {
            self.placeholders.insert(name.to_string(), info);
        }
        self.node_set_dirty = true;
        self.layout_changed = true;
        self.track_affinity(name);
    }

    /// A pod from the watch. Bound, unfinished pods are placed on their node;
    /// an assumed pod is confirmed; anything else is removed.
    /// Accounts `pod` on its node (or forgets it once it is no longer
    /// active). Returns whether it now asks its node for less than before —
    /// an in-place scale-down —, so pods waiting for room may fit.
    pub fn upsert_pod(&mut self, pod: Pod) -> bool {
        let uid = pod.uid().unwrap_or_default();
        if !is_assigned_and_active(&pod) {
            self.remove_pod(&uid);
            return false;
        }
        let info = Arc::new(PodInfo::new(Arc::new(pod)));
        let node = info.node_name().unwrap_or_default().to_string();
        let mut shrank = false;
        if let Some(old) = self.pods.get(&uid).cloned() {
            shrank = old.node == node && old.info.requests.exceeds_in_any(&info.requests);
            self.remove_pod_from(&old.node, &old.info);
            self.drop_empty_placeholder(&old.node);
        }
        self.add_pod_to(&node, &info);
        self.pods.insert(
            uid,
            PodState {
                info,
                node,
                assumed: false,
            },
        );
        shrank
    }

    pub fn remove_pod(&mut self, uid: &str) {
        if let Some(state) = self.pods.remove(uid) {
            self.remove_pod_from(&state.node, &state.info);
            self.drop_empty_placeholder(&state.node);
        }
    }

    fn drop_empty_placeholder(&mut self, node: &str) {
        if self
            .placeholders
            .get(node)
            .is_some_and(|n| n.pods.is_empty())
        {
            self.placeholders.remove(node);
        }
    }

    /// Places `pod` on `node` before the bind is confirmed, so the next cycle
    /// already counts it.
    pub fn assume(&mut self, pod: &PodInfo, node: &str) -> Result<Arc<PodInfo>, CacheError> {
        if self.pods.contains_key(&pod.uid) {
            return Err(CacheError::AlreadyPresent(pod.key()));
        }
        let mut bound = (*pod.pod).clone();
        bound.spec.get_or_insert_with(Default::default).node_name = Some(node.to_string());
        let mut info = pod.clone();
        info.pod = Arc::new(bound);
        let info = Arc::new(info);
        self.add_pod_to(node, &info);
        self.pods.insert(
            pod.uid.clone(),
            PodState {
                info: info.clone(),
                node: node.to_string(),
                assumed: true,
            },
        );
        Ok(info)
    }

    /// Undoes [`Cache::assume`] after a failed bind.
    pub fn forget(&mut self, uid: &str) -> Result<(), CacheError> {
        match self.pods.get(uid) {
            Some(state) if state.assumed => {
                self.remove_pod(uid);
                Ok(())
            }
            Some(state) => Err(CacheError::NotAssumed(state.info.key())),
            None => Err(CacheError::NotAssumed(uid.to_string())),
        }
    }

    pub fn is_assumed(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|s| s.assumed)
    }

    /// Whether the pod is placed (bound or assumed) on some node.
    /// The lowest priority among pods on `node` that are on their way out
    /// (terminating, or `leaving` by UID): a preemptor nominated there with a
    /// higher priority still waits for them.
    pub fn lowest_leaving_priority(
        &self,
        node: &str,
        leaving: &std::collections::HashSet<String>,
    ) -> Option<i32> {
        let info = match self.positions.get(node) {
            Some(&i) => &self.nodes[i],
            None => self.placeholders.get(node)?,
        };
        info.pods
            .iter()
            .filter(|p| p.is_leaving(leaving))
            .map(|p| p.priority)
            .min()
    }

    pub fn node_of(&self, uid: &str) -> Option<&str> {
        self.pods.get(uid).map(|s| s.node.as_str())
    }

    pub fn set_namespace(&mut self, name: String, labels: Labels) {
        self.namespaces.insert(name, labels);
        self.namespaces_arc = None;
    }

    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
        self.namespaces_arc = None;
    }

    // The setters return the version replaced (none for a new object) and
    // the one stored: the queue's hints compare the two.
    pub fn set_claim(&mut self, claim: PersistentVolumeClaim) -> Replaced<PersistentVolumeClaim> {
        let key = format!(
            "{}/{}",
            claim.namespace().unwrap_or_default(),
            claim.name_any()
        );
        let new = Arc::new(claim);
        let old = self.volumes.claims.insert(key.clone(), new.clone());
        expire_assumed(
            self.volumes.claims.get(&key),
            &key,
            &mut self.assumed_volumes.claims,
        );
        self.volumes_changed();
        (old, new)
    }
    pub fn set_volume(&mut self, pv: PersistentVolume) -> Replaced<PersistentVolume> {
        let key = pv.name_any();
        let new = Arc::new(pv);
        let old = self.volumes.volumes.insert(key.clone(), new.clone());
        expire_assumed(
            self.volumes.volumes.get(&key),
            &key,
            &mut self.assumed_volumes.volumes,
        );
        self.volumes_changed();
        (old, new)
    }
    pub fn set_storage_class(&mut self, sc: StorageClass) -> Replaced<StorageClass> {
        let new = Arc::new(sc);
        let old = self
            .volumes
            .storage_classes
            .insert(new.name_any(), new.clone());
        self.volumes_arc = None;
        (old, new)
    }
    pub fn set_csi_node(&mut self, n: CSINode) -> Replaced<CSINode> {
        let new = Arc::new(n);
        let old = self.volumes.csi_nodes.insert(new.name_any(), new.clone());
        self.volumes_arc = None;
        (old, new)
    }

    pub fn set_resource_claim(
        &mut self,
        c: k8s_openapi::api::resource::v1::ResourceClaim,
    ) -> Replaced<k8s_openapi::api::resource::v1::ResourceClaim> {
        let key = format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any());
        let new = Arc::new(c);
        let old = self.volumes.resource_claims.insert(key, new.clone());
        self.volumes_arc = None;
        (old, new)
    }

    pub fn set_csi_driver(&mut self, d: CSIDriver) -> Replaced<CSIDriver> {
        let new = Arc::new(d);
        let old = self.volumes.csi_drivers.insert(new.name_any(), new.clone());
        self.volumes_arc = None;
        (old, new)
    }

    /// The pod as the cache holds it (bound, or assumed by us).
    pub fn pod_info(&self, uid: &str) -> Option<Arc<PodInfo>> {
        self.pods.get(uid).map(|s| s.info.clone())
    }

    /// The Node object of a known node, as last seen.
    pub fn node_object(&self, name: &str) -> Option<Arc<Node>> {
        self.positions
            .get(name)
            .map(|&i| self.nodes[i].node.clone())
    }

    /// Records where a VolumeAttachment attaches which PV; one without an
    /// attacher or a PV name counts for nothing (as upstream). Returns
    /// whether what NodeVolumeLimits reads changed (status updates do not).
    pub fn set_volume_attachment(&mut self, va: &VolumeAttachment) -> bool {
        let name = va.name_any();
        let spec = &va.spec;
        let counted = (!spec.attacher.is_empty())
            .then(|| spec.source.persistent_volume_name.clone())
            .flatten()
            .map(|pv| (spec.attacher.clone(), pv));
        let on_node = self.volumes.attachments.get(&spec.node_name);
        if on_node.and_then(|m| m.get(&name)) == counted.as_ref() {
            return false;
        }
        match counted {
            Some(entry) => {
                self.volumes
                    .attachments
                    .entry(spec.node_name.clone())
                    .or_default()
                    .insert(name, entry);
            }
            None => {
                if let Some(m) = self.volumes.attachments.get_mut(&spec.node_name) {
                    m.remove(&name);
                }
            }
        }
        self.volumes_arc = None;
        true
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// A consistent picture for one cycle: O(nodes) pointer copies; the index
    /// and image counts are shared until the node set changes.
    pub fn snapshot(&mut self) -> Snapshot {
        let nodes = self.nodes.clone();
        self.snapshot_with(nodes)
    }

    /// Brings the scheduling cycle's snapshot up to date: only the nodes
    /// changed since `previous` was made are copied in (as upstream's
    /// UpdateSnapshot copies by generation). Copying all 5000 node pointers
    /// each cycle touched every node's reference count twice and cost more
    /// than filtering. Without `previous`, or after nodes came or went, a
    /// full copy.
    pub fn refresh(&mut self, previous: Option<Snapshot>) -> Snapshot {
        let changed = std::mem::take(&mut self.changed);
        let layout_changed = std::mem::replace(&mut self.layout_changed, false);
        match previous {
            Some(mut snap) if !layout_changed && snap.nodes.len() == self.nodes.len() => {
                for i in changed {
                    snap.nodes[i] = self.nodes[i].clone();
                }
                let nodes = std::mem::take(&mut snap.nodes);
                self.snapshot_with(nodes)
            }
            _ => self.snapshot(),
        }
    }

    fn snapshot_with(&mut self, nodes: Vec<Arc<NodeInfo>>) -> Snapshot {
        if self.node_set_dirty {
            self.index = Arc::new(Snapshot::index_of(&nodes));
            self.image_nodes = Arc::new(Snapshot::image_counts(&nodes));
            self.node_set_dirty = false;
        }
        let namespaces = self
            .namespaces_arc
            .get_or_insert_with(|| Arc::new(self.namespaces.clone()))
            .clone();
        let volumes = self
            .volumes_arc
            .get_or_insert_with(|| {
                let mut index = self.volumes.clone();
                for (key, claim) in &self.assumed_volumes.claims {
                    index.claims.insert(key.clone(), claim.clone());
                }
                for (key, pv) in &self.assumed_volumes.volumes {
                    index.volumes.insert(key.clone(), pv.clone());
                }
                Arc::new(index)
            })
            .clone();
        let (affinity_nodes, anti_affinity_nodes) = self
            .affinity_lists
            .get_or_insert_with(|| {
                (
                    Arc::new(self.affinity_nodes.iter().cloned().collect()),
                    Arc::new(self.anti_affinity_nodes.iter().cloned().collect()),
                )
            })
            .clone();
        Snapshot {
            nodes,
            index: self.index.clone(),
            namespaces,
            volumes,
            image_nodes: self.image_nodes.clone(),
            affinity_nodes,
            anti_affinity_nodes,
        }
    }

    /// Names of every node with a Node object.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    pub fn retain_namespaces(&mut self, keep: &HashSet<String>) {
        let before = self.namespaces.len();
        self.namespaces.retain(|name, _| keep.contains(name));
        if self.namespaces.len() != before {
            self.namespaces_arc = None;
        }
    }

    /// Drops the storage objects of `kind` whose keys are in `gone`.
    pub fn remove_volume_object(&mut self, kind: VolumeKind, gone: HashSet<String>) {
        self.retain_volumes_where(kind, |k| !gone.contains(k));
    }

    /// The storage objects as the cache holds them.
    pub fn volume_index(&self) -> &VolumeIndex {
        &self.volumes
    }

    /// Drops storage objects of `kind` whose key is not in `keep`.
    pub fn retain_volume_objects(&mut self, kind: VolumeKind, keep: &HashSet<String>) {
        self.retain_volumes_where(kind, |k| keep.contains(k));
    }

    fn retain_volumes_where(&mut self, kind: VolumeKind, keep: impl Fn(&String) -> bool) {
        let v = &mut self.volumes;
        match kind {
            VolumeKind::Claims => v.claims.retain(|k, _| keep(k)),
            VolumeKind::Volumes => v.volumes.retain(|k, _| keep(k)),
            VolumeKind::StorageClasses => v.storage_classes.retain(|k, _| keep(k)),
            VolumeKind::CsiNodes => v.csi_nodes.retain(|k, _| keep(k)),
            VolumeKind::CsiDrivers => v.csi_drivers.retain(|k, _| keep(k)),
            VolumeKind::ResourceClaims => v.resource_claims.retain(|k, _| keep(k)),
            VolumeKind::Attachments => {
                for on_node in v.attachments.values_mut() {
                    on_node.retain(|k, _| keep(k));
                }
                v.attachments.retain(|_, on_node| !on_node.is_empty());
            }
        }
        // A deleted object expires its assumption.
        let assumed = &mut self.assumed_volumes;
        assumed.claims.retain(|k, _| v.claims.contains_key(k));
        assumed.volumes.retain(|k, _| v.volumes.contains_key(k));
        self.volumes_changed();
    }

    /// UIDs of every pod placed on a node (for consistency checks).
    pub fn pod_uids(&self) -> HashSet<String> {
        self.pods.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testing::{node, pod};
    use serde_json::json;

    fn bound(name: &str, node: &str, cpu: &str) -> Pod {
        let p = pod(
            name,
            &[],
            json!({"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}),
        );
        (*p.pod).clone()
    }

    #[test]
    fn bound_pods_count_on_their_node() {
        let mut cache = Cache::new();
        cache.add_or_update_node(node("n1", "4", "8Gi", &[], json!({})));
        cache.upsert_pod(bound("a", "n1", "1"));
        cache.upsert_pod(bound("b", "n1", "500m"));
        let snap = cache.snapshot();
        assert_eq!(snap.get("n1").unwrap().requested.milli_cpu, 1500);
        // An in-place resize: a scale-down says room was freed, a scale-up not.
        assert!(cache.upsert_pod(bound("a", "n1", "500m")));
        assert!(!cache.upsert_pod(bound("a", "n1", "1")));
        assert!(!cache.upsert_pod(bound("a", "n1", "1")));
        cache.remove_pod("uid-default-a");
        assert_eq!(cache.snapshot().get("n1").unwrap().requested.milli_cpu, 500);
        // The first snapshot is unaffected: copy-on-write.
        assert_eq!(snap.get("n1").unwrap().requested.milli_cpu, 1500);
    }

    #[test]
    fn refreshing_copies_only_changed_nodes_and_keeps_old_snapshots() {
        let mut cache = Cache::new();
        cache.add_or_update_node(node("n1", "4", "8Gi", &[], json!({})));
        cache.add_or_update_node(node("n2", "4", "8Gi", &[], json!({})));
        let first = cache.refresh(None);
        assert_eq!(first.nodes.len(), 2);
        let untouched = first.get("n2").unwrap().clone();
        let kept = first.clone();

        cache.upsert_pod(bound("a", "n1", "1"));
        let second = cache.refresh(Some(first));
        assert_eq!(second.get("n1").unwrap().requested.milli_cpu, 1000);
        assert!(
            Arc::ptr_eq(second.get("n2").unwrap(), &untouched),
            "an unchanged node is not copied"
        );
        assert_eq!(
            kept.get("n1").unwrap().requested.milli_cpu,
            0,
            "an earlier snapshot still sees the old node"
        );

        cache.add_or_update_node(node("n3", "4", "8Gi", &[], json!({})));
        cache.remove_node("n1");
        let third = cache.refresh(Some(second));
        let mut names: Vec<&str> = third.nodes.iter().map(|n| n.name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["n2", "n3"], "nodes coming and going rebuild it");
        assert!(third.get("n3").is_some() && third.get("n1").is_none());
    }

    #[test]
    fn nodes_with_affinity_pods_are_tracked_as_pods_come_and_go() {
        let mut cache = Cache::new();
        cache.add_or_update_node(node("n1", "4", "8Gi", &[], json!({})));
        cache.add_or_update_node(node("n2", "4", "8Gi", &[], json!({})));
        let mut anti = bound("anti", "n1", "1");
        anti.spec.as_mut().unwrap().affinity = Some(
            serde_json::from_value(json!({"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "zone"}
                ]
            }}))
            .unwrap(),
        );
        cache.upsert_pod(anti);
        cache.upsert_pod(bound("plain", "n2", "1"));
        let names = |snap: &Snapshot, anti: bool| -> Vec<String> {
            let nodes: Vec<_> = if anti {
                snap.nodes_with_required_anti_affinity_pods().collect()
            } else {
                snap.nodes_with_affinity_pods().collect()
            };
            nodes.iter().map(|n| n.name.clone()).collect()
        };
        let snap = cache.snapshot();
        assert_eq!(names(&snap, false), ["n1"]);
        assert_eq!(names(&snap, true), ["n1"]);
        cache.remove_pod("uid-default-anti");
        let snap = cache.refresh(Some(snap));
        assert!(names(&snap, false).is_empty() && names(&snap, true).is_empty());
    }

    #[test]
    fn assume_confirm_and_forget() {
        let mut cache = Cache::new();
        cache.add_or_update_node(node("n1", "4", "8Gi", &[], json!({})));
        let p = pod(
            "p",
            &[],
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]}),
        );
        cache.assume(&p, "n1").unwrap();
        assert!(cache.is_assumed(&p.uid));
        assert_eq!(
            cache.assume(&p, "n1").unwrap_err(),
            CacheError::AlreadyPresent("default/p".into())
        );
        assert_eq!(
            cache.snapshot().get("n1").unwrap().requested.milli_cpu,
            2000
        );
        cache.forget(&p.uid).unwrap();
        assert_eq!(cache.snapshot().get("n1").unwrap().requested.milli_cpu, 0);
        // Assume again, then the watch confirms the bind: counted once.
        cache.assume(&p, "n1").unwrap();
        cache.upsert_pod(bound("p", "n1", "2"));
        assert!(!cache.is_assumed(&p.uid));
        assert_eq!(
            cache.snapshot().get("n1").unwrap().requested.milli_cpu,
            2000
        );
        assert!(
            cache.forget(&p.uid).is_err(),
            "a confirmed pod cannot be forgotten"
        );
    }

    #[test]
    fn finished_pods_free_their_resources() {
        let mut cache = Cache::new();
        cache.add_or_update_node(node("n1", "4", "8Gi", &[], json!({})));
        let mut p = bound("a", "n1", "1");
        cache.upsert_pod(p.clone());
        p.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
        cache.upsert_pod(p);
        assert_eq!(cache.snapshot().get("n1").unwrap().requested.milli_cpu, 0);
    }

    #[test]
    fn pods_seen_before_their_node_are_kept() {
        let mut cache = Cache::new();
        cache.upsert_pod(bound("early", "n2", "1"));
        assert!(cache.snapshot().get("n2").is_none(), "no Node object yet");
        cache.add_or_update_node(node("n2", "4", "8Gi", &[], json!({})));
        assert_eq!(
            cache.snapshot().get("n2").unwrap().requested.milli_cpu,
            1000
        );
        cache.remove_node("n2");
        assert!(cache.snapshot().get("n2").is_none());
    }

    fn volume(rv: &str, claim: Option<&str>) -> PersistentVolume {
        let mut pv = json!({"metadata": {"name": "pv-1", "resourceVersion": rv}, "spec": {}});
        if let Some(c) = claim {
            pv["spec"]["claimRef"] = json!({"name": c, "namespace": "default"});
        }
        serde_json::from_value(pv).unwrap()
    }

    fn claim_of_snapshot(cache: &mut Cache) -> Option<String> {
        cache.snapshot().volumes.volumes["pv-1"]
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .and_then(|r| r.name.clone())
    }

    /// Upstream's passive assume cache: an assumption shadows the watched
    /// object of the same version only.
    #[test]
    fn assumed_volumes_last_until_the_watch_shows_a_newer_version() {
        let mut cache = Cache::new();
        assert_eq!(
            cache.assume_volume(volume("1", Some("c1"))),
            Err("persistentvolumes \"pv-1\" not found".into())
        );
        cache.set_volume(volume("5", None));
        assert_eq!(
            cache.assume_volume(volume("4", Some("c1"))),
            Err("\"pv-1\" is out of sync (stored: 5, assume: 4)".into())
        );
        cache.assume_volume(volume("5", Some("c1"))).unwrap();
        assert_eq!(claim_of_snapshot(&mut cache).as_deref(), Some("c1"));
        assert_eq!(
            cache
                .api_volume("pv-1")
                .unwrap()
                .spec
                .as_ref()
                .unwrap()
                .claim_ref,
            None,
            "the watched object stays as it was"
        );

        // A resync of the same version keeps the assumption.
        cache.set_volume(volume("5", None));
        assert_eq!(claim_of_snapshot(&mut cache).as_deref(), Some("c1"));

        // A newer version replaces it, and restoring the old one is a no-op.
        cache.set_volume(volume("6", Some("other")));
        assert_eq!(claim_of_snapshot(&mut cache).as_deref(), Some("other"));
        cache.restore_volume(&volume("5", Some("c1")));
        assert_eq!(claim_of_snapshot(&mut cache).as_deref(), Some("other"));

        // Restore drops an assumption of the current version.
        cache.assume_volume(volume("6", Some("c1"))).unwrap();
        cache.restore_volume(&volume("6", Some("c1")));
        assert_eq!(claim_of_snapshot(&mut cache).as_deref(), Some("other"));

        // Deleting the object expires its assumption.
        cache.assume_volume(volume("6", Some("c1"))).unwrap();
        cache.remove_volume_object(VolumeKind::Volumes, HashSet::from(["pv-1".to_string()]));
        assert!(cache.snapshot().volumes.volumes.is_empty());
        cache.set_volume(volume("7", None));
        assert_eq!(claim_of_snapshot(&mut cache), None);
    }

    #[test]
    fn watched_volume_changes_are_announced() {
        let mut cache = Cache::new();
        let mut changes = cache.volume_changes();
        assert!(!changes.has_changed().unwrap());
        cache.set_volume(volume("1", None));
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        cache.assume_volume(volume("1", Some("c1"))).unwrap();
        assert!(
            !changes.has_changed().unwrap(),
            "only the watch's changes wake a waiting PreBind"
        );
    }

    #[test]
    fn volume_attachments_are_indexed_by_node_and_status_changes_are_no_change() {
        let va =
            |name: &str, attacher: &str, pv: Option<&str>, attached: bool| -> VolumeAttachment {
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name},
                    "spec": {"attacher": attacher, "nodeName": "n1",
                             "source": {"persistentVolumeName": pv}},
                    "status": {"attached": attached},
                }))
                .unwrap()
            };
        let mut cache = Cache::new();
        assert!(cache.set_volume_attachment(&va("a", "ebs", Some("pv-1"), false)));
        assert!(!cache.set_volume_attachment(&va("a", "ebs", Some("pv-1"), true)));
        assert!(!cache.set_volume_attachment(&va("b", "", Some("pv-2"), false)));
        let snap = cache.snapshot();
        let on_node = &snap.volumes.attachments["n1"];
        assert_eq!(on_node.len(), 1, "no attacher: not counted");
        assert_eq!(on_node["a"], ("ebs".to_string(), "pv-1".to_string()));
        cache.remove_volume_object(VolumeKind::Attachments, HashSet::from(["a".to_string()]));
        assert!(cache.snapshot().volumes.attachments.is_empty());
    }
}
