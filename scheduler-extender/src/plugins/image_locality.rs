//! ImageLocality: favours nodes that already hold the pod's images, weighting
//! each image's size by the share of nodes holding it so one node with a big
//! image does not attract every pod ("node heating").
//!
//! Upstream reads the cluster-wide counts from the snapshot inside Score; our
//! Score only sees the node, so PreScore stashes them in the cycle state.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::framework::{
    CycleState, MAX_NODE_SCORE, NodeInfo, Plugin, PodInfo, PreScorePlugin, ScorePlugin, Snapshot,
    Status,
};

pub const NAME: &str = "ImageLocality";

const MB: i64 = 1024 * 1024;
/// Bounds of the per-image score range: sizes of typical compressed images
/// (90th percentile on Docker Hub falls inside).
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// Adds the implicit `:latest` tag, so `nginx` in a pod matches the
/// `nginx:latest` the kubelet reports; a tag or digest is left alone.
pub fn normalized_image_name(name: &str) -> String {
    let last_colon = name.rfind(':');
    let last_slash = name.rfind('/');
    // A colon before the last slash is a registry port, not a tag.
    if last_colon <= last_slash {
        format!("{name}:latest")
    } else {
        name.to_string()
    }
}

/// Every image the pod needs, normalized: init containers, containers and
/// image volumes, each counted once per use.
fn pod_images(pod: &PodInfo) -> Vec<String> {
    let Some(spec) = pod.pod.spec.as_ref() else {
        return vec![];
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .map(|c| c.image.as_deref().unwrap_or_default())
        .chain(
            spec.volumes
                .iter()
                .flatten()
                .filter_map(|v| v.image.as_ref())
                .map(|i| i.reference.as_deref().unwrap_or_default()),
        )
        .map(normalized_image_name)
        .collect()
}

/// The image's size scaled by the share of all nodes that hold it.
fn scaled_image_score(size: i64, num_nodes: usize, total_nodes: usize) -> i64 {
    if total_nodes == 0 {
        return 0;
    }
    let spread = num_nodes as f64 / total_nodes as f64;
    (size as f64 * spread) as i64
}

/// Maps the summed image scores linearly onto 0..=100 between the minimum
/// and `images` times the per-image maximum.
fn calculate_priority(sum: i64, images: usize) -> i64 {
    let max_threshold = MAX_CONTAINER_THRESHOLD * images as i64;
    let sum = if sum < MIN_THRESHOLD {
        MIN_THRESHOLD
    } else {
        sum.min(max_threshold)
    };
    MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max_threshold - MIN_THRESHOLD)
}

#[derive(Clone)]
struct PreScoreState {
    images: Arc<Vec<String>>,
    /// Nodes in the whole snapshot, not only the feasible ones.
    total_nodes: usize,
    image_nodes: Arc<HashMap<String, usize>>,
}

impl PreScoreState {
    fn score(&self, node: &NodeInfo) -> i64 {
        let sum = self
            .images
            .iter()
            .filter_map(|image| {
                let size = node.images.get(image)?;
                let holders = self.image_nodes.get(image).copied().unwrap_or(1);
                Some(scaled_image_score(*size, holders, self.total_nodes))
            })
            .sum();
        calculate_priority(sum, self.images.len())
    }
}

pub struct ImageLocality;

impl Plugin for ImageLocality {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreScorePlugin for ImageLocality {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status {
        state.write(
            NAME,
            PreScoreState {
                images: Arc::new(pod_images(pod)),
                total_nodes: snapshot.nodes.len(),
                image_nodes: snapshot.image_nodes.clone(),
            },
        );
        Status::success()
    }
}

impl ScorePlugin for ImageLocality {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        match state.read::<PreScoreState>(NAME) {
            Some(s) => Ok(s.score(node)),
            // A profile that disables our PreScore leaves no cluster-wide
            // counts; score as if every image were on every node rather than
            // fail the pod.
            None => {
                let images = pod_images(pod);
                let fallback = PreScoreState {
                    image_nodes: Arc::new(images.iter().map(|i| (i.clone(), 1)).collect()),
                    images: Arc::new(images),
                    total_nodes: 1,
                };
                Ok(fallback.score(node))
            }
        }
    }
}

/// ImageLocality has no args; like upstream, any given are ignored.
pub fn new(_args: Option<&Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(ImageLocality))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testing::{node, node_info, pod, snapshot};
    use serde_json::json;

    /// A node holding `images` as (names, size in MB).
    fn with_images(name: &str, images: &[(&[&str], i64)]) -> NodeInfo {
        let mut n = node(name, "1", "1Gi", &[], json!({}));
        let images: Vec<Value> = images
            .iter()
            .map(|(names, mb)| json!({"names": names, "sizeBytes": mb * MB}))
            .collect();
        n.status.as_mut().unwrap().images = Some(serde_json::from_value(json!(images)).unwrap());
        node_info(n, &[])
    }

    fn node_403002000() -> NodeInfo {
        with_images(
            "machine1",
            &[
                (&["gcr.io/40:latest", "gcr.io/40:v1", "gcr.io/40:v1"], 40),
                (&["gcr.io/300:latest", "gcr.io/300:v1"], 300),
                (&["gcr.io/2000:latest"], 2000),
            ],
        )
    }

    fn node_25010() -> NodeInfo {
        with_images(
            "machine2",
            &[
                (&["gcr.io/250:latest"], 250),
                (&["gcr.io/10:latest", "gcr.io/10:v1"], 10),
            ],
        )
    }

    fn containers(images: &[&str]) -> Value {
        let cs: Vec<Value> = images
            .iter()
            .enumerate()
            .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
            .collect();
        json!({"containers": cs})
    }

    fn scores(spec: Value, nodes: Vec<NodeInfo>) -> Vec<i64> {
        let p = pod("p", &[], spec);
        let snap = snapshot(nodes, &[]);
        let mut state = CycleState::new();
        assert!(
            ImageLocality
                .pre_score(&mut state, &p, &snap.nodes, &snap)
                .is_success()
        );
        snap.nodes
            .iter()
            .map(|n| ImageLocality.score(&state, &p, n).unwrap())
            .collect()
    }

    #[test]
    fn score() {
        let cases: Vec<(&str, Value, Vec<NodeInfo>, Vec<i64>)> = vec![
            (
                // machine1: 40MB/2 < 23MB → 0; machine2: (250MB/2 - 23MB)/(2000MB - 23MB) → 5
                "two images spread on two nodes, prefer the larger image one",
                containers(&["gcr.io/40", "gcr.io/250"]),
                vec![node_403002000(), node_25010()],
                vec![0, 5],
            ),
            (
                // machine1: ((40 + 300)/2 - 23)/(2000 - 23) → 7
                "two images on one node, prefer this node",
                containers(&["gcr.io/40", "gcr.io/300"]),
                vec![node_403002000(), node_25010()],
                vec![7, 0],
            ),
            (
                // machine1: (2000/2 - 23)/(2000 - 23) → 49; machine2: 10/2 < 23 → 0
                "big image scaled by its spread",
                containers(&["gcr.io/10", "gcr.io/2000"]),
                vec![node_403002000(), node_25010()],
                vec![49, 0],
            ),
            (
                // machine1: (2000/3 - 23)/(2000 - 23) → 32
                "a node without images lowers the spread",
                containers(&["gcr.io/10", "gcr.io/2000"]),
                vec![node_403002000(), node_25010(), with_images("machine3", &[])],
                vec![32, 0, 0],
            ),
            (
                // (2000/1 - 23)/(1000 - 23) → above max → 100
                "if exceeding the limit, use the limit",
                containers(&["gcr.io/2000"]),
                vec![node_403002000()],
                vec![100],
            ),
            (
                // both nodes hold 300MB: spread 1; (300 - 23)/(1000 - 23) → 28
                "an image on every node is not scaled down",
                containers(&["gcr.io/300:v1"]),
                vec![
                    node_403002000(),
                    with_images("machine2", &[(&["gcr.io/300:v1"], 300)]),
                ],
                vec![28, 28],
            ),
            (
                // init container counts as an image: (300/2 - 23)/(2000 - 23) → 6
                "init containers count",
                json!({"initContainers": [{"name": "i", "image": "gcr.io/300"}], "containers": [{"name": "c", "image": "nope"}]}),
                vec![node_403002000(), node_25010()],
                vec![6, 0],
            ),
            (
                // image volume counts as an image: (250/2 - 23)/(2000 - 23) → 5
                "image volumes count",
                json!({"containers": [{"name": "c", "image": "nope"}],
                       "volumes": [{"name": "v", "image": {"reference": "gcr.io/250"}}]}),
                vec![node_403002000(), node_25010()],
                vec![0, 5],
            ),
            (
                "a tag other than latest does not match latest",
                containers(&["gcr.io/250:v2"]),
                vec![node_25010()],
                vec![0],
            ),
        ];
        for (name, spec, nodes, want) in cases {
            assert_eq!(scores(spec, nodes), want, "{name}");
        }
    }

    #[test]
    fn score_without_pre_score_state() {
        let p = pod("p", &[], containers(&["gcr.io/300"]));
        // Spread assumed 1: (300 - 23)/(1000 - 23) → 28.
        assert_eq!(
            ImageLocality.score(&CycleState::new(), &p, &node_403002000()),
            Ok(28)
        );
    }

    #[test]
    fn normalized_image_names() {
        let digest = "sha256:0123456789abcdef";
        for (input, want) in [
            ("root", "root:latest".to_string()),
            ("gcr.io:5000/root", "gcr.io:5000/root:latest".to_string()),
            ("root:tag", "root:tag".to_string()),
            (&format!("root@{digest}"), format!("root@{digest}")),
        ] {
            assert_eq!(normalized_image_name(input), want, "{input}");
        }
    }
}
