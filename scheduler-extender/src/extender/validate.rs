//! Checks on what an extender caller sends that the apiserver would have
//! checked for a stored object: a request is decoded from anyone who can
//! reach the port, and the plugins read quantities and terms assuming they
//! are valid (an unparsable request would count as zero, so a pod asking for
//! `"abc"` cpu would fit everywhere). A problem found here is answered with
//! 400 naming the field, as the apiserver's validation names it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::framework::PodInfo;
use crate::framework::labels::Selector;
use crate::framework::quantity;

use super::types::NodeList;

/// Every problem with the pod, each as `Pod.<field path>: <problem>`, in
/// field order; empty when the scheduler can judge it.
pub fn pod_problems(pod: &Pod) -> Vec<String> {
    let mut out = Problems::default();
    if let Some(spec) = &pod.spec {
        let containers = spec.containers.iter().map(|c| ("containers", c));
        let init = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| ("initContainers", c));
        let mut index: BTreeMap<&str, usize> = BTreeMap::new();
        for (kind, c) in containers.chain(init) {
            let i = index.entry(kind).or_default();
            container(&mut out, &format!("spec.{kind}[{i}]"), c);
            *i += 1;
        }
        out.list("spec.overhead", spec.overhead.as_ref());
        requirements(&mut out, "spec.resources", spec.resources.as_ref());
        for (i, c) in spec
            .topology_spread_constraints
            .iter()
            .flatten()
            .enumerate()
        {
            let path = format!("spec.topologySpreadConstraints[{i}]");
            if c.max_skew <= 0 {
                out.push(
                    &path,
                    "maxSkew",
                    format!("{} must be greater than 0", c.max_skew),
                );
            }
            if c.topology_key.is_empty() {
                out.push(&path, "topologyKey", "must not be empty".into());
            }
            if !matches!(
                c.when_unsatisfiable.as_str(),
                "DoNotSchedule" | "ScheduleAnyway"
            ) {
                out.push(
                    &path,
                    "whenUnsatisfiable",
                    format!(
                        "{:?} is not DoNotSchedule or ScheduleAnyway",
                        c.when_unsatisfiable
                    ),
                );
            }
            if c.min_domains.is_some_and(|m| m <= 0) {
                out.push(&path, "minDomains", "must be greater than 0".into());
            }
            if let Err(e) = Selector::from_optional(c.label_selector.as_ref()) {
                out.push(&path, "labelSelector", e);
            }
        }
    }
    if let Some(status) = &pod.status {
        out.list(
            "status.allocatedResources",
            status.allocated_resources.as_ref(),
        );
        requirements(&mut out, "status.resources", status.resources.as_ref());
        for (kind, list) in [
            ("containerStatuses", &status.container_statuses),
            ("initContainerStatuses", &status.init_container_statuses),
        ] {
            for (i, s) in list.iter().flatten().enumerate() {
                container_status(&mut out, &format!("status.{kind}[{i}]"), s);
            }
        }
    }
    // Affinity terms the plugins could not compile (bad operators or
    // selectors): upstream's validation refuses such a pod at creation.
    let info = PodInfo::new(std::sync::Arc::new(pod.clone()));
    for e in &info.parse_errors {
        out.0.push(format!("Pod.spec.affinity: {e}"));
    }
    out.0
}

/// The first problem with `Nodes`: the node names are what the verbs use, so
/// an item without one cannot be answered for.
pub fn node_list_problem(nodes: &NodeList) -> Option<String> {
    nodes
        .items
        .iter()
        .position(|n| n.metadata.name.as_deref().is_none_or(str::is_empty))
        .map(|i| format!("Nodes.items[{i}].metadata.name: required"))
}

#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, path: &str, field: &str, problem: String) {
        self.0.push(format!("Pod.{path}.{field}: {problem}"));
    }

    /// A ResourceList: each quantity parses and is not negative (upstream's
    /// ValidateResourceQuantityValue / ValidateNonnegativeQuantity).
    fn list(&mut self, path: &str, list: Option<&BTreeMap<String, Quantity>>) {
        for (name, q) in list.into_iter().flatten() {
            let field = format!("{path}[{name}]");
            match quantity::milli_value(&q.0) {
                Err(e) => self.0.push(format!("Pod.{field}: {e}")),
                Ok(v) if v < 0 => self.0.push(format!(
                    "Pod.{field}: {:?} must be greater than or equal to 0",
                    q.0
                )),
                Ok(_) => {}
            }
        }
    }
}

fn requirements(out: &mut Problems, path: &str, r: Option<&ResourceRequirements>) {
    if let Some(r) = r {
        out.list(&format!("{path}.requests"), r.requests.as_ref());
        out.list(&format!("{path}.limits"), r.limits.as_ref());
    }
}

fn container(out: &mut Problems, path: &str, c: &Container) {
    requirements(out, &format!("{path}.resources"), c.resources.as_ref());
}

fn container_status(out: &mut Problems, path: &str, s: &ContainerStatus) {
    out.list(
        &format!("{path}.allocatedResources"),
        s.allocated_resources.as_ref(),
    );
    requirements(out, &format!("{path}.resources"), s.resources.as_ref());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(pod: serde_json::Value) -> Vec<String> {
        pod_problems(&serde_json::from_value(pod).unwrap())
    }

    #[test]
    fn a_valid_pod_has_no_problem() {
        assert!(problems(json!({})).is_empty());
        assert!(
            problems(json!({"spec": {
                "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"cpu": "2"}}}],
                "initContainers": [{"name": "i", "resources": {"requests": {"example.com/gpu": "1"}}}],
                "overhead": {"cpu": "250m"},
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}],
            }}))
            .is_empty()
        );
    }

    #[test]
    fn unparsable_and_negative_quantities_are_named_by_path() {
        let got = problems(json!({
            "spec": {
                "containers": [
                    {"name": "ok", "resources": {"requests": {"cpu": "1"}}},
                    {"name": "bad", "resources": {"requests": {"cpu": "abc"}, "limits": {"memory": "1Zi"}}},
                ],
                "initContainers": [{"name": "i", "resources": {"requests": {"memory": "-1"}}}],
                "overhead": {"cpu": "x"},
                "resources": {"requests": {"cpu": ""}},
            },
            "status": {
                "allocatedResources": {"cpu": "1..2"},
                "containerStatuses": [{"name": "bad", "image": "i", "imageID": "", "ready": false,
                    "restartCount": 0, "allocatedResources": {"cpu": "lots"}}],
            },
        }));
        let joined = got.join("\n");
        for needle in [
            "Pod.spec.containers[1].resources.requests[cpu]: invalid quantity \"abc\"",
            "Pod.spec.containers[1].resources.limits[memory]: invalid suffix",
            "Pod.spec.initContainers[0].resources.requests[memory]: \"-1\" must be greater than or equal to 0",
            "Pod.spec.overhead[cpu]",
            "Pod.spec.resources.requests[cpu]: empty quantity",
            "Pod.status.allocatedResources[cpu]",
            "Pod.status.containerStatuses[0].allocatedResources[cpu]",
        ] {
            assert!(joined.contains(needle), "{needle} not in:\n{joined}");
        }
        assert_eq!(got.len(), 7, "{joined}");
    }

    #[test]
    fn spread_constraints_and_affinity_terms_are_checked() {
        let got = problems(json!({"spec": {
            "containers": [],
            "topologySpreadConstraints": [
                {"maxSkew": 0, "topologyKey": "", "whenUnsatisfiable": "Sometimes", "minDomains": 0,
                 "labelSelector": {"matchExpressions": [{"key": "app", "operator": ""}]}},
            ],
            "affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "zone", "labelSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}},
            ]}},
        }}));
        let joined = got.join("\n");
        for needle in [
            "topologySpreadConstraints[0].maxSkew: 0 must be greater than 0",
            "topologySpreadConstraints[0].topologyKey: must not be empty",
            "topologySpreadConstraints[0].whenUnsatisfiable: \"Sometimes\"",
            "topologySpreadConstraints[0].minDomains",
            "topologySpreadConstraints[0].labelSelector: unknown operator \"\" on \"app\"",
            "Pod.spec.affinity: ",
        ] {
            assert!(joined.contains(needle), "{needle} not in:\n{joined}");
        }
    }

    #[test]
    fn node_items_need_names() {
        let list: NodeList = serde_json::from_value(
            json!({"items": [{"metadata": {"name": "a"}}, {"metadata": {}}]}),
        )
        .unwrap();
        assert_eq!(
            node_list_problem(&list).as_deref(),
            Some("Nodes.items[1].metadata.name: required")
        );
    }
}
