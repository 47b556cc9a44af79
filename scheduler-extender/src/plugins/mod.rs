//! The in-tree plugins, one module per upstream plugin, named as upstream, and
//! the registry that builds them from a profile's configuration.

use std::sync::Arc;

use serde_json::Value;

use crate::framework::Plugin;

pub mod dynamic_resources;
pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_declared_features;
pub mod node_name;
pub mod node_ports;
pub mod node_resources;
pub mod node_unschedulable;
pub mod node_volume_limits;
pub mod pod_topology_spread;
pub mod queue_sort;
pub mod taint_toleration;
pub mod volume_binding;
pub mod volume_restrictions;
pub mod volume_zone;

/// Builds a plugin from its `pluginConfig` args (`None` when the profile has none).
pub type Factory = fn(Option<&Value>) -> Result<Arc<dyn Plugin>, String>;

/// Every plugin this scheduler knows, by upstream name.
pub fn registry() -> Vec<(&'static str, Factory)> {
    vec![
        (queue_sort::NAME, queue_sort::new),
        (node_unschedulable::NAME, node_unschedulable::new),
        (node_name::NAME, node_name::new),
        (taint_toleration::NAME, taint_toleration::new),
        (node_affinity::NAME, node_affinity::new),
        (node_ports::NAME, node_ports::new),
        (node_resources::fit::NAME, node_resources::fit::new),
        (
            node_resources::balanced_allocation::NAME,
            node_resources::balanced_allocation::new,
        ),
        (image_locality::NAME, image_locality::new),
        (inter_pod_affinity::NAME, inter_pod_affinity::new),
        (pod_topology_spread::NAME, pod_topology_spread::new),
        (volume_restrictions::NAME, volume_restrictions::new),
        (node_volume_limits::NAME, node_volume_limits::new),
        (volume_zone::NAME, volume_zone::new),
        (volume_binding::NAME, volume_binding::new),
        (node_declared_features::NAME, node_declared_features::new),
    ]
}

/// Parses a plugin's args, rejecting unknown fields by name. `kind` and
/// `apiVersion` (present in upstream's args objects) are accepted and ignored.
pub fn parse_args<T: serde::de::DeserializeOwned + Default>(
    plugin: &str,
    args: Option<&Value>,
) -> Result<T, String> {
    let Some(args) = args else {
        return Ok(T::default());
    };
    let mut args = args.clone();
    if let Some(map) = args.as_object_mut() {
        map.remove("kind");
        map.remove("apiVersion");
    }
    // The error names the field inside args, as upstream's strict decoding
    // does: `pluginConfig[NodeResourcesFit].args.scoringStrategy: unknown field …`.
    serde_path_to_error::deserialize(args).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!(".{path}")
        };
        format!("pluginConfig[{plugin}].args{at}: {}", e.inner())
    })
}
