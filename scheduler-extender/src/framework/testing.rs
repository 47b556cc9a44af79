//! Builders for plugin unit tests: pods and nodes from compact JSON, and a
//! snapshot from them, so each test reads like upstream's table tests.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

use super::labels::Labels;
use super::types::{NodeInfo, PodInfo, Snapshot, VolumeIndex};

/// A label map from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A pod named `name` in `default` with the given `spec` (JSON) and labels.
pub fn pod(name: &str, labels: &[(&str, &str)], spec: Value) -> Arc<PodInfo> {
    pod_in("default", name, labels, spec)
}

pub fn pod_in(namespace: &str, name: &str, labels: &[(&str, &str)], spec: Value) -> Arc<PodInfo> {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c"}]);
    }
    let labels: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{namespace}-{name}"), "labels": labels},
        "spec": spec,
    }))
    .expect("test pod");
    Arc::new(PodInfo::new(Arc::new(pod)))
}

/// A container requesting `cpu`/`memory` (either may be empty to omit it).
pub fn container(cpu: &str, memory: &str) -> Value {
    let mut requests = serde_json::Map::new();
    if !cpu.is_empty() {
        requests.insert("cpu".into(), json!(cpu));
    }
    if !memory.is_empty() {
        requests.insert("memory".into(), json!(memory));
    }
    json!({"name": "c", "resources": {"requests": requests}})
}

/// A node with allocatable `cpu`/`memory`/110 pods, labels and extra `spec`.
pub fn node(name: &str, cpu: &str, memory: &str, labels: &[(&str, &str)], spec: Value) -> Node {
    let mut all_labels: Labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all_labels
        .entry("kubernetes.io/hostname".into())
        .or_insert_with(|| name.to_string());
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": all_labels},
        "spec": spec,
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"}},
    }))
    .expect("test node")
}

/// NodeInfo for `node` with `pods` placed on it.
pub fn node_info(node: Node, pods: &[Arc<PodInfo>]) -> NodeInfo {
    let mut info = NodeInfo::new(Arc::new(node));
    for p in pods {
        info.add_pod(p.clone());
    }
    info
}

/// A snapshot of `nodes` with namespaces `default` (no labels) plus `namespaces`.
pub fn snapshot(nodes: Vec<NodeInfo>, namespaces: &[(&str, &[(&str, &str)])]) -> Snapshot {
    let mut ns: HashMap<String, Labels> = HashMap::from([("default".to_string(), Labels::new())]);
    for (name, labels) in namespaces {
        ns.insert(
            name.to_string(),
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }
    Snapshot::new(
        nodes.into_iter().map(Arc::new).collect(),
        ns,
        VolumeIndex::default(),
    )
}
