//! Fake nodes for kwok to run: Node objects that look like a real cloud's, with
//! capacity, zone/hostname labels and optional taints.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;

/// The annotation kwok is told to manage (`--manage-nodes-with-annotation-selector`).
pub const KWOK_ANNOTATION: &str = "kwok.x-k8s.io/node";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Marks what the suite made on a cluster (`true`): test namespaces, and the
/// fake nodes it adds to an external cluster, which `understudy-lab
/// fake-nodes` deletes when it stops.
pub const E2E_LABEL: &str = "understudy.dev/e2e";

/// Shape of the fake nodes to create.
#[derive(Clone, Debug)]
pub struct NodeTemplate {
    pub name_prefix: String,
    pub cpu: String,
    pub memory: String,
    pub pods: String,
    pub ephemeral_storage: String,
    /// Nodes are spread over these zones round-robin.
    pub zones: Vec<String>,
    pub taints: Vec<Taint>,
    pub extra_labels: BTreeMap<String, String>,
}

impl Default for NodeTemplate {
    fn default() -> Self {
        Self {
            name_prefix: "kwok-node-".into(),
            cpu: "32".into(),
            memory: "128Gi".into(),
            pods: "110".into(),
            ephemeral_storage: "500Gi".into(),
            zones: vec!["zone-a".into(), "zone-b".into(), "zone-c".into()],
            taints: vec![],
            extra_labels: BTreeMap::new(),
        }
    }
}

/// Parses `key[=value]:Effect`, kubectl taint's syntax.
pub fn parse_taint(spec: &str) -> Result<Taint, String> {
    let (kv, effect) = spec
        .rsplit_once(':')
        .ok_or_else(|| format!("taint {spec:?} has no effect; expected key[=value]:Effect"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!(
            "taint {spec:?}: effect {effect:?} is not NoSchedule, PreferNoSchedule or NoExecute"
        ));
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    if key.is_empty() {
        return Err(format!("taint {spec:?} has an empty key"));
    }
    Ok(Taint {
        key: key.into(),
        value,
        effect: effect.into(),
        time_added: None,
    })
}

impl NodeTemplate {
    /// The `index`th node. Each gets its own /24 pod CIDR so kwok hands out
    /// distinct pod IPs across many nodes (10.128.0.0/9 fits 32768 nodes).
    pub fn node(&self, index: usize, kubelet_version: &str) -> Node {
        let name = format!("{}{index}", self.name_prefix);
        let zone = self
            .zones
            .get(index % self.zones.len().max(1))
            .cloned()
            .unwrap_or_else(|| "zone-a".into());
        let mut labels = BTreeMap::from([
            ("type".to_string(), "kwok".to_string()),
            (HOSTNAME_LABEL.to_string(), name.clone()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("kubernetes.io/arch".to_string(), "amd64".to_string()),
            (ZONE_LABEL.to_string(), zone),
            (REGION_LABEL.to_string(), "region-1".to_string()),
            (
                "node.kubernetes.io/instance-type".to_string(),
                "kwok.fake".to_string(),
            ),
        ]);
        labels.extend(self.extra_labels.clone());
        let resources = BTreeMap::from([
            ("cpu".to_string(), Quantity(self.cpu.clone())),
            ("memory".to_string(), Quantity(self.memory.clone())),
            ("pods".to_string(), Quantity(self.pods.clone())),
            (
                "ephemeral-storage".to_string(),
                Quantity(self.ephemeral_storage.clone()),
            ),
        ]);
        let cidr = format!("10.{}.{}.0/24", 128 + index / 256, index % 256);
        Node {
            metadata: ObjectMeta {
                name: Some(name),
                labels: Some(labels),
                annotations: Some(BTreeMap::from([
                    (KWOK_ANNOTATION.to_string(), "fake".to_string()),
                    ("node.alpha.kubernetes.io/ttl".to_string(), "0".to_string()),
                ])),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: Some(cidr.clone()),
                pod_cidrs: Some(vec![cidr]),
                taints: (!self.taints.is_empty()).then(|| self.taints.clone()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                allocatable: Some(resources.clone()),
                capacity: Some(resources),
                node_info: Some(k8s_openapi::api::core::v1::NodeSystemInfo {
                    architecture: "amd64".into(),
                    operating_system: "linux".into(),
                    kubelet_version: kubelet_version.into(),
                    kube_proxy_version: kubelet_version.into(),
                    container_runtime_version: "kwok".into(),
                    kernel_version: "kwok".into(),
                    os_image: "kwok".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_zones_and_gives_distinct_cidrs() {
        let template = NodeTemplate::default();
        let nodes: Vec<Node> = (0..300).map(|i| template.node(i, "v1.37.2")).collect();
        let zone = |n: &Node| n.metadata.labels.as_ref().unwrap()[ZONE_LABEL].clone();
        assert_eq!(zone(&nodes[0]), "zone-a");
        assert_eq!(zone(&nodes[1]), "zone-b");
        assert_eq!(zone(&nodes[3]), "zone-a");
        let cidrs: std::collections::BTreeSet<_> = nodes
            .iter()
            .map(|n| n.spec.as_ref().unwrap().pod_cidr.clone().unwrap())
            .collect();
        assert_eq!(cidrs.len(), 300);
        assert!(
            cidrs.contains("10.129.0.0/24"),
            "node 256 starts the next /16"
        );
        let node = &nodes[7];
        assert_eq!(node.metadata.name.as_deref(), Some("kwok-node-7"));
        assert_eq!(
            node.metadata.labels.as_ref().unwrap()[HOSTNAME_LABEL],
            "kwok-node-7"
        );
        assert_eq!(
            node.metadata.annotations.as_ref().unwrap()[KWOK_ANNOTATION],
            "fake"
        );
    }

    #[test]
    fn parses_kubectl_taint_syntax() {
        let taint = parse_taint("dedicated=gpu:NoSchedule").unwrap();
        assert_eq!(
            (
                taint.key.as_str(),
                taint.value.as_deref(),
                taint.effect.as_str()
            ),
            ("dedicated", Some("gpu"), "NoSchedule")
        );
        let taint = parse_taint("spot:PreferNoSchedule").unwrap();
        assert_eq!(taint.value, None);
        assert!(parse_taint("novalue").unwrap_err().contains("no effect"));
        assert!(
            parse_taint("k=v:Sometimes")
                .unwrap_err()
                .contains("Sometimes")
        );
        assert!(parse_taint("=v:NoSchedule").is_err());
    }
}
