//! The scheduler's view of the cluster: pods with their parsed scheduling
//! constraints, nodes with what is placed on them, and the per-cycle snapshot.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, PodAffinityTerm,
};
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode, StorageClass};

use super::labels::{Labels, Selector};
use super::resources::{Resource, pod_requests};

/// One pod affinity or anti-affinity term, compiled.
#[derive(Clone, Debug)]
pub struct AffinityTerm {
    pub selector: Selector,
    /// Explicit namespaces; with no namespaces and no selector, the pod's own.
    pub namespaces: BTreeSet<String>,
    /// `namespaceSelector`; `Selector::nothing()` when unset.
    pub namespace_selector: Selector,
    pub topology_key: String,
}

#[derive(Clone, Debug)]
pub struct WeightedAffinityTerm {
    pub term: AffinityTerm,
    pub weight: i32,
}

impl AffinityTerm {
    /// Compiles `term` of a pod in `namespace`. matchLabelKeys and
    /// mismatchLabelKeys are not applied here: the apiserver merged them into
    /// the label selector, with the labels the pod had, when it was created
    /// (and upstream's scheduler reads the selector as stored, so a pod
    /// relabelled later keeps its selector).
    pub fn compile(term: &PodAffinityTerm, namespace: &str) -> Result<Self, String> {
        let selector = Selector::from_optional(term.label_selector.as_ref())?;
        let mut namespaces: BTreeSet<String> = term.namespaces.iter().flatten().cloned().collect();
        let namespace_selector = match &term.namespace_selector {
            Some(sel) => Selector::from_label_selector(sel)?,
            None => Selector::nothing(),
        };
        if namespaces.is_empty() && term.namespace_selector.is_none() {
            namespaces.insert(namespace.to_string());
        }
        Ok(Self {
            selector,
            namespaces,
            namespace_selector,
            topology_key: term.topology_key.clone(),
        })
    }

    /// Whether `pod` (with its namespace's labels) is selected by this term.
    pub fn matches(&self, pod: &PodInfo, namespace_labels: Option<&Labels>) -> bool {
        let ns_ok = self.namespaces.contains(&pod.namespace)
            || namespace_labels.is_some_and(|l| self.namespace_selector.matches(l));
        ns_ok && self.selector.matches(&pod.labels)
    }
}

/// A pod plus everything the plugins derive from it, computed once.
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: Labels,
    /// Effective requests (init containers, sidecars, overhead).
    pub requests: Resource,
    /// The same with scoring defaults for containers without requests.
    pub non_zero_requests: Resource,
    pub priority: i32,
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<WeightedAffinityTerm>,
    pub preferred_anti_affinity: Vec<WeightedAffinityTerm>,
    /// Problems compiling the pod's terms; such a pod cannot be scheduled.
    pub parse_errors: Vec<String>,
}

impl PodInfo {
    /// On its way out: terminating, or deleted by this scheduler (`evicting`
    /// holds those UIDs) before the watch has shown it.
    pub fn is_leaving(&self, evicting: &HashSet<String>) -> bool {
        self.pod.metadata.deletion_timestamp.is_some() || evicting.contains(&self.uid)
    }

    pub fn new(pod: Arc<Pod>) -> Self {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let mut parse_errors = vec![];
        let mut compile_all = |terms: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms
                .into_iter()
                .flatten()
                .filter_map(|t| {
                    AffinityTerm::compile(t, &namespace)
                        .map_err(|e| parse_errors.push(e))
                        .ok()
                })
                .collect()
        };
        let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let pod_aff = affinity.and_then(|a| a.pod_affinity.as_ref());
        let pod_anti = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let required_affinity = compile_all(pod_aff.and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        }));
        let required_anti_affinity = compile_all(pod_anti.and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        }));
        let mut compile_weighted =
            |terms: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
                terms
                    .into_iter()
                    .flatten()
                    .filter_map(|w| {
                        AffinityTerm::compile(&w.pod_affinity_term, &namespace)
                            .map_err(|e| parse_errors.push(e))
                            .ok()
                            .map(|term| WeightedAffinityTerm {
                                term,
                                weight: w.weight,
                            })
                    })
                    .collect::<Vec<_>>()
            };
        let preferred_affinity = compile_weighted(pod_aff.and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        }));
        let preferred_anti_affinity = compile_weighted(pod_anti.and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        }));
        Self {
            namespace: namespace.clone(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            requests: pod_requests(&pod, false),
            non_zero_requests: pod_requests(&pod, true),
            priority: pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
            required_affinity,
            required_anti_affinity,
            preferred_affinity,
            preferred_anti_affinity,
            parse_errors,
            labels,
            pod,
        }
    }

    /// `namespace/name`, the key users see in messages.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn node_name(&self) -> Option<&str> {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
    }

    pub fn has_affinity(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }

    pub fn has_required_anti_affinity(&self) -> bool {
        !self.required_anti_affinity.is_empty()
    }

    /// Host ports the pod's containers (and sidecars) ask for, as
    /// (hostIP, protocol, port) with hostIP defaulting to 0.0.0.0.
    pub fn host_ports(&self) -> Vec<HostPort> {
        let Some(spec) = self.pod.spec.as_ref() else {
            return vec![];
        };
        spec.containers
            .iter()
            .chain(
                spec.init_containers
                    .iter()
                    .flatten()
                    .filter(|c| c.restart_policy.as_deref() == Some("Always")),
            )
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.host_port.unwrap_or(0) > 0)
            .map(|p| HostPort {
                ip: p
                    .host_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port: p.host_port.unwrap_or(0),
            })
            .collect()
    }

    /// Names of PVCs the pod mounts.
    pub fn pvc_names(&self) -> Vec<&str> {
        self.pod
            .spec
            .as_ref()
            .map(|s| {
                s.volumes
                    .iter()
                    .flatten()
                    .filter_map(|v| {
                        v.persistent_volume_claim
                            .as_ref()
                            .map(|c| c.claim_name.as_str())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// 0.0.0.0 on a port conflicts with every address on that port/protocol.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// A node and what the scheduler has placed on it (bound and assumed pods).
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub name: String,
    pub labels: Labels,
    pub allocatable: Resource,
    pub pods: Vec<Arc<PodInfo>>,
    pub requested: Resource,
    pub non_zero_requested: Resource,
    pub used_ports: Vec<HostPort>,
    /// Image name → size in bytes, from node.status.images.
    pub images: HashMap<String, i64>,
    /// PVC `namespace/name` → number of pods on this node using it.
    pub pvc_refs: HashMap<String, usize>,
    /// Copied out of the Node so the first filters of every cycle read them
    /// without chasing the Node object (measurably cheaper across thousands
    /// of nodes).
    taints: Vec<k8s_openapi::api::core::v1::Taint>,
    unschedulable: bool,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> Self {
        let mut info = Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: Labels::new(),
            allocatable: Resource::default(),
            pods: vec![],
            requested: Resource::default(),
            non_zero_requested: Resource::default(),
            used_ports: vec![],
            images: HashMap::new(),
            pvc_refs: HashMap::new(),
            taints: vec![],
            unschedulable: false,
            node: node.clone(),
        };
        info.set_node(node);
        info
    }

    /// Replaces the Node object, keeping the pods.
    pub fn set_node(&mut self, node: Arc<Node>) {
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        let spec = node.spec.as_ref();
        self.taints = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        self.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        let status = node.status.as_ref();
        self.allocatable = status
            .and_then(|s| s.allocatable.as_ref())
            .map(Resource::from_list)
            .unwrap_or_default();
        self.images = status
            .and_then(|s| s.images.as_ref())
            .map(|images| {
                images
                    .iter()
                    .flat_map(|i| {
                        let size = i.size_bytes.unwrap_or(0);
                        i.names.iter().flatten().map(move |n| (n.clone(), size))
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.node = node;
    }

    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.non_zero_requested.add(&pod.non_zero_requests);
        self.used_ports.extend(pod.host_ports());
        for claim in pod.pvc_names() {
            *self
                .pvc_refs
                .entry(format!("{}/{claim}", pod.namespace))
                .or_default() += 1;
        }
        self.pods.push(pod);
    }

    /// Removes the pod with `uid`; returns whether it was there.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(index) = self.pods.iter().position(|p| p.uid == uid) else {
            return false;
        };
        let pod = self.pods.swap_remove(index);
        self.requested.sub(&pod.requests);
        self.non_zero_requested.sub(&pod.non_zero_requests);
        for port in pod.host_ports() {
            if let Some(i) = self.used_ports.iter().position(|p| *p == port) {
                self.used_ports.swap_remove(i);
            }
        }
        for claim in pod.pvc_names() {
            let key = format!("{}/{claim}", pod.namespace);
            if let Some(n) = self.pvc_refs.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.pvc_refs.remove(&key);
                }
            }
        }
        true
    }

    pub fn pods_with_affinity(&self) -> impl Iterator<Item = &Arc<PodInfo>> {
        self.pods.iter().filter(|p| p.has_affinity())
    }

    pub fn pods_with_required_anti_affinity(&self) -> impl Iterator<Item = &Arc<PodInfo>> {
        self.pods
            .iter()
            .filter(|p| !p.required_anti_affinity.is_empty())
    }

    pub fn taints(&self) -> &[k8s_openapi::api::core::v1::Taint] {
        &self.taints
    }

    pub fn unschedulable(&self) -> bool {
        self.unschedulable
    }
}

/// Storage objects the volume plugins consult, keyed as the API does.
#[derive(Clone, Debug, Default)]
pub struct VolumeIndex {
    /// `namespace/name` → claim.
    pub claims: HashMap<String, Arc<PersistentVolumeClaim>>,
    pub volumes: HashMap<String, Arc<PersistentVolume>>,
    pub storage_classes: HashMap<String, Arc<StorageClass>>,
    pub csi_nodes: HashMap<String, Arc<CSINode>>,
    pub csi_drivers: HashMap<String, Arc<CSIDriver>>,
    /// Node → VolumeAttachment name → (attacher, PV name), for attachments
    /// that name both (upstream's VolumeAttachment index by node).
    pub attachments: HashMap<String, HashMap<String, (String, String)>>,
    /// `namespace/name` → ResourceClaim (DynamicResources' refusals).
    pub resource_claims: HashMap<String, Arc<k8s_openapi::api::resource::v1::ResourceClaim>>,
}

/// An immutable picture of the cluster for one scheduling cycle.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub nodes: Vec<Arc<NodeInfo>>,
    /// Node name → position in `nodes`; shared between snapshots until the
    /// node set changes.
    pub index: Arc<HashMap<String, usize>>,
    /// Namespace name → labels, for namespaceSelector.
    pub namespaces: Arc<HashMap<String, Labels>>,
    pub volumes: Arc<VolumeIndex>,
    /// Image name → number of nodes that have it (ImageLocality's spread factor).
    pub image_nodes: Arc<HashMap<String, usize>>,
    /// Names of the nodes with pods that have affinity terms, and with pods
    /// that have required anti-affinity terms.
    pub affinity_nodes: Arc<Vec<String>>,
    pub anti_affinity_nodes: Arc<Vec<String>>,
}

impl Snapshot {
    pub fn new(
        nodes: Vec<Arc<NodeInfo>>,
        namespaces: HashMap<String, Labels>,
        volumes: VolumeIndex,
    ) -> Self {
        let index = Arc::new(Self::index_of(&nodes));
        let image_nodes = Arc::new(Self::image_counts(&nodes));
        let names_where = |has: fn(&PodInfo) -> bool| {
            Arc::new(
                nodes
                    .iter()
                    .filter(|n| n.pods.iter().any(|p| has(p)))
                    .map(|n| n.name.clone())
                    .collect(),
            )
        };
        let affinity_nodes = names_where(PodInfo::has_affinity);
        let anti_affinity_nodes = names_where(PodInfo::has_required_anti_affinity);
        Self {
            nodes,
            index,
            namespaces: Arc::new(namespaces),
            volumes: Arc::new(volumes),
            image_nodes,
            affinity_nodes,
            anti_affinity_nodes,
        }
    }

    pub fn index_of(nodes: &[Arc<NodeInfo>]) -> HashMap<String, usize> {
        nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect()
    }

    pub fn image_counts(nodes: &[Arc<NodeInfo>]) -> HashMap<String, usize> {
        let mut image_nodes: HashMap<String, usize> = HashMap::new();
        for node in nodes {
            let unique: HashSet<&String> = node.images.keys().collect();
            for image in unique {
                *image_nodes.entry(image.clone()).or_default() += 1;
            }
        }
        image_nodes
    }

    pub fn get(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }

    pub fn namespace_labels(&self, namespace: &str) -> Option<&Labels> {
        self.namespaces.get(namespace)
    }

    /// Nodes hosting at least one pod with (anti-)affinity terms.
    pub fn nodes_with_affinity_pods(&self) -> impl Iterator<Item = &Arc<NodeInfo>> {
        self.affinity_nodes.iter().filter_map(|n| self.get(n))
    }

    pub fn nodes_with_required_anti_affinity_pods(&self) -> impl Iterator<Item = &Arc<NodeInfo>> {
        self.anti_affinity_nodes.iter().filter_map(|n| self.get(n))
    }
}

/// Kept for plugin tests and the checker: builds a Namespace's label map.
pub fn namespace_labels(ns: &Namespace) -> (String, Labels) {
    (
        ns.metadata.name.clone().unwrap_or_default(),
        ns.metadata.labels.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn affinity_terms_use_the_stored_selector_not_match_label_keys() {
        // The apiserver merged `version In (v1)` into the selector when the
        // pod was created; the pod was relabelled to v2 since.
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web", "version": "v2"}},
            "spec": {"containers": [], "affinity": {"podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "topologyKey": "zone",
                    "labelSelector": {"matchLabels": {"app": "web"}, "matchExpressions": [
                        {"key": "version", "operator": "In", "values": ["v1"]}]},
                    "matchLabelKeys": ["version"],
                }]}}},
        }))
        .unwrap();
        let info = PodInfo::new(Arc::new(pod));
        assert!(info.parse_errors.is_empty(), "{:?}", info.parse_errors);
        let term = &info.required_affinity[0];
        let v1: Labels = [("app", "web"), ("version", "v1")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        assert!(term.selector.matches(&v1));
        let v2: Labels = [("app", "web"), ("version", "v2")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        assert!(!term.selector.matches(&v2));
    }
}
