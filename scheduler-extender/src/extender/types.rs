//! The wire types of kube-scheduler's extender API
//! (`k8s.io/kube-scheduler/extender/v1`, types.go), and their decoding.
//!
//! Upstream's structs carry no json tags, so Go's encoding/json writes the Go
//! field names verbatim ("Pod", "NodeNames", "NumPDBViolations") and, when
//! reading, matches keys to fields case-insensitively and treats `null` as
//! "leave the zero value". We serialize with the exact upstream names and
//! decode through [`decode`], which reproduces those two reading rules before
//! handing the document to serde.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Lowest score an extender returns (upstream's MinExtenderPriority).
pub const MIN_EXTENDER_PRIORITY: i64 = 0;
/// Highest score an extender returns (upstream's MaxExtenderPriority);
/// kube-scheduler multiplies it by MaxNodeScore / 10 and the extender weight.
pub const MAX_EXTENDER_PRIORITY: i64 = 10;

/// A `v1.NodeList` as the scheduler sends it: built in memory, so usually
/// without apiVersion/kind, and with `"items": null` when empty.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeList {
    #[serde(default)]
    pub metadata: ListMeta,
    #[serde(default)]
    pub items: Vec<Node>,
}

/// Arguments of the filter and prioritize verbs. Exactly one of `nodes`
/// (extender not nodeCacheCapable) and `node_names` (nodeCacheCapable) is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExtenderArgs {
    #[serde(rename = "Pod")]
    pub pod: Option<Pod>,
    #[serde(rename = "Nodes")]
    pub nodes: Option<NodeList>,
    #[serde(rename = "NodeNames")]
    pub node_names: Option<Vec<String>>,
}

/// Node name → why the pod cannot go there (upstream's FailedNodesMap).
pub type FailedNodesMap = BTreeMap<String, String>;

/// Reply of the filter verb.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExtenderFilterResult {
    /// The feasible nodes, when the request carried `Nodes`.
    #[serde(rename = "Nodes")]
    pub nodes: Option<NodeList>,
    /// The feasible node names, when the request carried `NodeNames`.
    #[serde(rename = "NodeNames")]
    pub node_names: Option<Vec<String>>,
    /// Nodes preemption might make room on.
    #[serde(rename = "FailedNodes")]
    pub failed_nodes: FailedNodesMap,
    /// Nodes no preemption can help; upstream lets these win over FailedNodes.
    #[serde(rename = "FailedAndUnresolvableNodes")]
    pub failed_and_unresolvable_nodes: FailedNodesMap,
    /// Non-empty fails the whole scheduling attempt in kube-scheduler.
    #[serde(rename = "Error")]
    pub error: String,
}

/// One node's score from the prioritize verb, 0..=[`MAX_EXTENDER_PRIORITY`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostPriority {
    #[serde(rename = "Host")]
    pub host: String,
    #[serde(rename = "Score")]
    pub score: i64,
}

/// Reply of the prioritize verb.
pub type HostPriorityList = Vec<HostPriority>;

/// Victims as full pods (sent to extenders that are not nodeCacheCapable).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Victims {
    #[serde(rename = "Pods")]
    pub pods: Vec<Pod>,
    #[serde(rename = "NumPDBViolations")]
    pub num_pdb_violations: i64,
}

/// A pod named by UID only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetaPod {
    #[serde(rename = "UID")]
    pub uid: String,
}

/// Victims by UID (sent to nodeCacheCapable extenders, and always the reply).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetaVictims {
    #[serde(rename = "Pods")]
    pub pods: Vec<MetaPod>,
    #[serde(rename = "NumPDBViolations")]
    pub num_pdb_violations: i64,
}

/// Arguments of the preempt verb. Map values may be `null` on the wire (a Go
/// nil pointer); such a node is still evaluated.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExtenderPreemptionArgs {
    #[serde(rename = "Pod")]
    pub pod: Option<Pod>,
    #[serde(rename = "NodeNameToVictims")]
    pub node_name_to_victims: BTreeMap<String, Option<Victims>>,
    #[serde(rename = "NodeNameToMetaVictims")]
    pub node_name_to_meta_victims: BTreeMap<String, Option<MetaVictims>>,
}

/// Reply of the preempt verb: the nodes where preemption still helps, with the
/// victims this scheduler would take there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExtenderPreemptionResult {
    #[serde(rename = "NodeNameToMetaVictims")]
    pub node_name_to_meta_victims: BTreeMap<String, MetaVictims>,
}

/// Arguments of the bind verb.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExtenderBindingArgs {
    #[serde(rename = "PodName")]
    pub pod_name: String,
    #[serde(rename = "PodNamespace")]
    pub pod_namespace: String,
    #[serde(rename = "PodUID")]
    pub pod_uid: String,
    #[serde(rename = "Node")]
    pub node: String,
}

/// Reply of the bind verb; a non-empty error fails the bind in kube-scheduler.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExtenderBindingResult {
    #[serde(rename = "Error")]
    pub error: String,
}

/// How a JSON document maps onto the extender types, so [`decode`] knows which
/// object keys are Go struct fields (matched case-insensitively), which are
/// map keys (node names: verbatim) and which belong to Kubernetes objects.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// An extender struct: its canonical field names and their shapes.
    Struct(&'static [(&'static str, Shape)]),
    /// A map with verbatim keys (node names) whose values have this shape.
    Map(&'static Shape),
    List(&'static Shape),
    /// A Kubernetes object (Pod, Node, NodeList items): keys are already the
    /// exact json tags every client sends; only nulls are dropped.
    Object,
    Scalar,
}

const POD: Shape = Shape::Object;
const NODE_LIST: Shape = Shape::Struct(&[
    ("metadata", Shape::Object),
    ("items", Shape::List(&Shape::Object)),
]);
const META_POD: Shape = Shape::Struct(&[("UID", Shape::Scalar)]);
const VICTIMS: Shape = Shape::Struct(&[
    ("Pods", Shape::List(&POD)),
    ("NumPDBViolations", Shape::Scalar),
]);
const META_VICTIMS: Shape = Shape::Struct(&[
    ("Pods", Shape::List(&META_POD)),
    ("NumPDBViolations", Shape::Scalar),
]);
const FAILED_NODES: Shape = Shape::Map(&Shape::Scalar);
const HOST_PRIORITY: Shape = Shape::Struct(&[("Host", Shape::Scalar), ("Score", Shape::Scalar)]);

/// A type [`decode`] can read: its [`Shape`].
pub trait Wire: DeserializeOwned {
    const SHAPE: Shape;
}

impl Wire for ExtenderArgs {
    const SHAPE: Shape = Shape::Struct(&[
        ("Pod", POD),
        ("Nodes", NODE_LIST),
        ("NodeNames", Shape::List(&Shape::Scalar)),
    ]);
}

impl Wire for ExtenderFilterResult {
    const SHAPE: Shape = Shape::Struct(&[
        ("Nodes", NODE_LIST),
        ("NodeNames", Shape::List(&Shape::Scalar)),
        ("FailedNodes", FAILED_NODES),
        ("FailedAndUnresolvableNodes", FAILED_NODES),
        ("Error", Shape::Scalar),
    ]);
}

impl Wire for HostPriorityList {
    const SHAPE: Shape = Shape::List(&HOST_PRIORITY);
}

impl Wire for ExtenderPreemptionArgs {
    const SHAPE: Shape = Shape::Struct(&[
        ("Pod", POD),
        ("NodeNameToVictims", Shape::Map(&VICTIMS)),
        ("NodeNameToMetaVictims", Shape::Map(&META_VICTIMS)),
    ]);
}

impl Wire for ExtenderPreemptionResult {
    const SHAPE: Shape = Shape::Struct(&[("NodeNameToMetaVictims", Shape::Map(&META_VICTIMS))]);
}

impl Wire for ExtenderBindingArgs {
    const SHAPE: Shape = Shape::Struct(&[
        ("PodName", Shape::Scalar),
        ("PodNamespace", Shape::Scalar),
        ("PodUID", Shape::Scalar),
        ("Node", Shape::Scalar),
    ]);
}

impl Wire for ExtenderBindingResult {
    const SHAPE: Shape = Shape::Struct(&[("Error", Shape::Scalar)]);
}

/// Why a request body could not be read; the text goes back in the 400 reply.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("request body is not valid JSON: {0}")]
    Syntax(serde_json::Error),
    /// serde would read a struct from a JSON array; Go does not.
    #[error("request body does not match: {at} must be a JSON object")]
    NotAnObject { at: String },
    /// A field of the wrong type or value, named by its path
    /// (`Pod.spec.containers[0].resources.requests.cpu`).
    #[error("request body does not match {what}: {path}: {source}")]
    Shape {
        what: &'static str,
        path: String,
        source: serde_json::Error,
    },
}

/// Reads `T` from JSON as Go's encoding/json would: struct keys matched
/// case-insensitively (an exact match wins), unknown keys ignored, `null`
/// meaning the zero value.
pub fn decode<T: Wire>(body: &[u8]) -> Result<T, DecodeError> {
    let what = short_type_name::<T>();
    let mut value: Value = serde_json::from_slice(body).map_err(DecodeError::Syntax)?;
    canonicalize(&mut value, &T::SHAPE, what).map_err(|at| DecodeError::NotAnObject { at })?;
    serde_path_to_error::deserialize(value).map_err(|e| DecodeError::Shape {
        what,
        path: e.path().to_string(),
        source: e.into_inner(),
    })
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Rewrites `value` in place so serde's exact-name matching sees what Go's
/// case-insensitive matching would. Fails with the path of a struct that is
/// not a JSON object.
fn canonicalize(value: &mut Value, shape: &Shape, at: &str) -> Result<(), String> {
    match shape {
        Shape::Struct(fields) => {
            // `null` for a whole struct is its zero value in Go.
            if value.is_null() {
                *value = Value::Object(Map::new());
            }
            let Value::Object(object) = value else {
                return Err(at.to_string());
            };
            let mut exact = Map::new();
            let mut folded = Map::new();
            for (key, mut v) in std::mem::take(object) {
                if v.is_null() {
                    continue;
                }
                match fields.iter().find(|(name, _)| *name == key) {
                    Some((name, field_shape)) => {
                        canonicalize(&mut v, field_shape, &format!("{at}.{name}"))?;
                        exact.insert((*name).to_string(), v);
                    }
                    None => {
                        if let Some((name, field_shape)) =
                            fields.iter().find(|(name, _)| equal_fold(name, &key))
                        {
                            canonicalize(&mut v, field_shape, &format!("{at}.{name}"))?;
                            folded.insert((*name).to_string(), v);
                        }
                        // Keys matching no field are ignored, as in Go.
                    }
                }
            }
            folded.extend(exact);
            *object = folded;
        }
        Shape::Map(inner) => {
            if let Value::Object(object) = value {
                for (key, v) in object.iter_mut().filter(|(_, v)| !v.is_null()) {
                    canonicalize(v, inner, &format!("{at}[{key:?}]"))?;
                }
            }
        }
        Shape::List(inner) => {
            if let Value::Array(items) = value {
                for (i, v) in items.iter_mut().enumerate().filter(|(_, v)| !v.is_null()) {
                    canonicalize(v, inner, &format!("{at}[{i}]"))?;
                }
            }
        }
        Shape::Object => drop_nulls(value),
        Shape::Scalar => {}
    }
    Ok(())
}

/// Removes null-valued keys at every depth: Go decodes them as "absent", while
/// k8s-openapi rejects `null` for its non-optional fields (e.g. `containers`).
fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(object) => {
            object.retain(|_, v| !v.is_null());
            object.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Go's case folding for JSON keys: equal under simple Unicode case folding
/// (so "nodenames", "NODENAMES" and "nodeNames" all name NodeNames).
fn equal_fold(a: &str, b: &str) -> bool {
    let fold = |s: &str| -> String {
        s.chars()
            .flat_map(char::to_uppercase)
            .flat_map(char::to_lowercase)
            .collect()
    };
    fold(a) == fold(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What kube-scheduler v1.37 sends for a nodeCacheCapable=false filter call
    /// (json.Marshal of ExtenderArgs: informer objects without TypeMeta, nil
    /// NodeNames as null, Go's `null` for nil slices inside objects).
    const UPSTREAM_FILTER_ARGS: &str = r#"{
        "Pod": {"metadata": {"name": "web-0", "namespace": "default", "uid": "u-1", "creationTimestamp": null},
                "spec": {"containers": [{"name": "c", "image": "nginx", "resources": {}}], "schedulerName": "default-scheduler"},
                "status": {"phase": "Pending", "conditions": null}},
        "Nodes": {"metadata": {}, "items": [
            {"metadata": {"name": "n1", "creationTimestamp": null, "labels": {"kubernetes.io/hostname": "n1"}},
             "spec": {}, "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}, "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}}, "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "", "containerRuntimeVersion": "", "kubeletVersion": "", "kubeProxyVersion": "", "operatingSystem": "", "architecture": ""}}}
        ]},
        "NodeNames": null
    }"#;

    #[test]
    fn decodes_upstream_filter_args() {
        let args: ExtenderArgs = decode(UPSTREAM_FILTER_ARGS.as_bytes()).unwrap();
        let pod = args.pod.as_ref().unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("web-0"));
        let nodes = args.nodes.as_ref().unwrap();
        assert_eq!(nodes.items.len(), 1);
        assert_eq!(nodes.items[0].metadata.name.as_deref(), Some("n1"));
        assert_eq!(args.node_names, None);
        // And back: the same field names upstream writes.
        let out = serde_json::to_value(&args).unwrap();
        let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["NodeNames", "Nodes", "Pod"]);
        assert_eq!(out["NodeNames"], Value::Null);
        let again: ExtenderArgs = decode(&serde_json::to_vec(&out).unwrap()).unwrap();
        assert_eq!(again, args);
    }

    #[test]
    fn field_names_match_case_insensitively_but_node_names_stay_verbatim() {
        let args: ExtenderPreemptionArgs = decode(
            json!({
                "pod": {"metadata": {"name": "p"}},
                "NODENAMETOMETAVICTIMS": {"Node-A": {"pods": [{"uid": "x"}, {"Uid": "y"}], "numpdbviolations": 2}, "node-b": null},
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            args.pod.unwrap().metadata.name.as_deref(),
            Some("p"),
            "lower-case Pod"
        );
        let a = args.node_name_to_meta_victims["Node-A"].clone().unwrap();
        assert_eq!(
            a.pods,
            [MetaPod { uid: "x".into() }, MetaPod { uid: "y".into() }]
        );
        assert_eq!(a.num_pdb_violations, 2);
        assert_eq!(args.node_name_to_meta_victims["node-b"], None);

        let args: ExtenderArgs =
            decode(br#"{"nodenames": ["n1", "N2"], "NodeNames": ["exact"]}"#).unwrap();
        assert_eq!(
            args.node_names.unwrap(),
            ["exact"],
            "an exact match wins over a folded one"
        );
        let args: ExtenderBindingArgs = decode(
            br#"{"podname": "p", "PODNAMESPACE": "ns", "podUid": "u", "node": "n", "Extra": 1}"#,
        )
        .unwrap();
        assert_eq!(
            args,
            ExtenderBindingArgs {
                pod_name: "p".into(),
                pod_namespace: "ns".into(),
                pod_uid: "u".into(),
                node: "n".into()
            }
        );
    }

    #[test]
    fn results_use_upstream_field_names() {
        let filter = ExtenderFilterResult {
            nodes: None,
            node_names: Some(vec!["n1".into()]),
            failed_nodes: [("n2".to_string(), "Insufficient cpu".to_string())].into(),
            failed_and_unresolvable_nodes: [("n3".to_string(), "node not found".to_string())]
                .into(),
            error: String::new(),
        };
        assert_eq!(
            serde_json::to_value(&filter).unwrap(),
            json!({"Nodes": null, "NodeNames": ["n1"], "FailedNodes": {"n2": "Insufficient cpu"},
                   "FailedAndUnresolvableNodes": {"n3": "node not found"}, "Error": ""})
        );
        let list: HostPriorityList = vec![HostPriority {
            host: "n1".into(),
            score: 7,
        }];
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            json!([{"Host": "n1", "Score": 7}])
        );
        let preempt = ExtenderPreemptionResult {
            node_name_to_meta_victims: [(
                "n1".to_string(),
                MetaVictims {
                    pods: vec![MetaPod { uid: "u".into() }],
                    num_pdb_violations: 1,
                },
            )]
            .into(),
        };
        assert_eq!(
            serde_json::to_value(&preempt).unwrap(),
            json!({"NodeNameToMetaVictims": {"n1": {"Pods": [{"UID": "u"}], "NumPDBViolations": 1}}})
        );
        assert_eq!(
            serde_json::to_value(ExtenderBindingResult::default()).unwrap(),
            json!({"Error": ""})
        );
        // Each result also reads back through the Go-compatible decoder.
        let back: ExtenderFilterResult = decode(&serde_json::to_vec(&filter).unwrap()).unwrap();
        assert_eq!(back, filter);
        let back: ExtenderPreemptionResult =
            decode(&serde_json::to_vec(&preempt).unwrap()).unwrap();
        assert_eq!(back, preempt);
        let back: HostPriorityList = decode(br#"[{"host": "n1", "score": 7}]"#).unwrap();
        assert_eq!(back, list);
    }

    #[test]
    fn upstream_preemption_args_with_full_victims() {
        let args: ExtenderPreemptionArgs = decode(
            br#"{"Pod": {"metadata": {"name": "hi"}, "spec": {"containers": null}},
                 "NodeNameToVictims": {"n1": {"Pods": [{"metadata": {"name": "lo", "uid": "u-lo"}}], "NumPDBViolations": 0}},
                 "NodeNameToMetaVictims": null}"#,
        )
        .unwrap();
        let victims = args.node_name_to_victims["n1"].as_ref().unwrap();
        assert_eq!(victims.pods[0].metadata.uid.as_deref(), Some("u-lo"));
        assert!(args.node_name_to_meta_victims.is_empty());
    }

    #[test]
    fn go_null_and_empty_documents_are_zero_values() {
        let args: ExtenderArgs = decode(b"null").unwrap();
        assert_eq!(args, ExtenderArgs::default());
        let args: ExtenderArgs = decode(br#"{"Nodes": {"metadata": {}, "items": null}}"#).unwrap();
        assert_eq!(args.nodes.unwrap().items, vec![]);
    }

    #[test]
    fn malformed_documents_are_errors_not_panics() {
        for body in [
            &b""[..],
            b"{",
            b"[1,2]",
            br#"{"Pod": 3}"#,
            br#"{"NodeNames": "n1"}"#,
            br#"{"Pod": {"kind": "Node"}}"#,
            br#"{"Pod": {"spec": {"containers": [{"name": 1}]}}}"#,
            b"[]",
            br#"{"Nodes": []}"#,
        ] {
            assert!(
                decode::<ExtenderArgs>(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(decode::<HostPriorityList>(br#"[{"Score": 1.5}]"#).is_err());
        assert!(decode::<ExtenderBindingArgs>(br#"{"Node": ["n"]}"#).is_err());
    }

    #[test]
    fn case_folding_follows_go() {
        assert!(equal_fold("NodeNames", "nodenames"));
        assert!(equal_fold("UID", "uid"));
        // U+212A KELVIN SIGN folds to k, as in Go.
        assert!(equal_fold("k", "\u{212A}"));
        assert!(!equal_fold("Pod", "Pods"));
    }
}
