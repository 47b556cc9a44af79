//! Property-based fuzzing of the extender API: random, near-valid and
//! mutated bodies go through the real router to a backend running the real
//! decisions (the default profile's plugins over a small cluster). Whatever
//! the body, the reply is 200 or 400 — never a 5xx, a panic or a hang.
//!
//! Case counts are bounded so the whole module runs in seconds inside
//! `cargo test`; `PROPTEST_CASES=N` runs more. A failure prints the
//! shrunk body that caused it.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::config::SchedulerConfig;
use crate::framework::testing::{container, node, node_info, pod, snapshot};
use crate::framework::{PodInfo, Snapshot};
use crate::profile::Profile;
use crate::scheduling::Nominated;

use super::decide::{filter_nodes, preempt_nodes, prioritize};
use super::server::{Backend, BodyLimit, Failure, Limits, router_with_limits};
use super::types::{
    ExtenderArgs, ExtenderBindingArgs, ExtenderBindingResult, ExtenderFilterResult,
    ExtenderPreemptionArgs, ExtenderPreemptionResult, HostPriorityList,
};

/// The verbs answered by the real decisions over a fixed cluster, as the
/// scheduler's own backend does over its cache.
struct Real {
    profile: Profile,
    snapshot: Snapshot,
}

impl Real {
    fn new() -> Self {
        let taint = json!({"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]});
        let busy = pod(
            "busy",
            &[("app", "web")],
            json!({"nodeName": "n1", "priority": 0, "containers": [container("3", "1Gi")]}),
        );
        Real {
            profile: Profile::from_config(&SchedulerConfig::default().profiles[0]).unwrap(),
            snapshot: snapshot(
                vec![
                    node_info(node("n1", "4", "8Gi", &[("zone", "a")], json!({})), &[busy]),
                    node_info(node("n2", "4", "8Gi", &[("zone", "b")], json!({})), &[]),
                    node_info(node("n3", "2", "4Gi", &[], taint), &[]),
                ],
                &[],
            ),
        }
    }

    fn pod(pod: Option<k8s_openapi::api::core::v1::Pod>) -> Result<PodInfo, Failure> {
        let pod = pod.ok_or_else(|| Failure::BadRequest("Pod is required".into()))?;
        Ok(PodInfo::new(Arc::new(pod)))
    }
}

fn names(args: &ExtenderArgs) -> Vec<String> {
    match (&args.nodes, &args.node_names) {
        (Some(list), _) => list
            .items
            .iter()
            .map(|n| n.metadata.name.clone().unwrap_or_default())
            .collect(),
        (None, Some(names)) => names.clone(),
        (None, None) => vec![],
    }
}

impl Backend for Real {
    fn filter(&self, args: ExtenderArgs) -> Result<ExtenderFilterResult, Failure> {
        let names = names(&args);
        let pod = Self::pod(args.pod)?;
        let out = filter_nodes(
            &self.profile,
            &self.snapshot,
            &Nominated::new(),
            &pod,
            &names,
        );
        Ok(ExtenderFilterResult {
            nodes: None,
            node_names: Some(out.feasible),
            failed_nodes: out.failed,
            failed_and_unresolvable_nodes: out.unresolvable,
            error: out.error.unwrap_or_default(),
        })
    }

    fn prioritize(&self, args: ExtenderArgs) -> Result<HostPriorityList, Failure> {
        let names = names(&args);
        let pod = Self::pod(args.pod)?;
        prioritize(&self.profile, &self.snapshot, &pod, &names).map_err(Failure::Internal)
    }

    fn preempt(&self, args: ExtenderPreemptionArgs) -> Result<ExtenderPreemptionResult, Failure> {
        let names: Vec<String> = args
            .node_name_to_victims
            .keys()
            .chain(args.node_name_to_meta_victims.keys())
            .cloned()
            .collect();
        let pod = Self::pod(args.pod)?;
        let victims = preempt_nodes(
            &self.profile,
            &self.snapshot,
            &Nominated::new(),
            &[],
            &pod,
            &names,
        )
        .map_err(Failure::Internal)?;
        Ok(ExtenderPreemptionResult {
            node_name_to_meta_victims: victims,
        })
    }

    async fn bind(&self, args: ExtenderBindingArgs) -> ExtenderBindingResult {
        ExtenderBindingResult {
            error: if args.node.is_empty() {
                "Node is required".into()
            } else {
                String::new()
            },
        }
    }

    fn node_count(&self) -> usize {
        3
    }
}

const PATHS: &[&str] = &[
    "/filter",
    "/prioritize",
    "/preempt",
    "/bind",
    "/scheduler/filter",
];

/// Field names of the extender's and the Pod's shapes, so random objects
/// get past the first level of decoding often.
const KEYS: &[&str] = &[
    "Pod",
    "pod",
    "Nodes",
    "NodeNames",
    "nodenames",
    "items",
    "metadata",
    "name",
    "namespace",
    "uid",
    "labels",
    "spec",
    "status",
    "containers",
    "initContainers",
    "resources",
    "requests",
    "limits",
    "cpu",
    "memory",
    "overhead",
    "priority",
    "affinity",
    "nodeAffinity",
    "podAntiAffinity",
    "topologySpreadConstraints",
    "maxSkew",
    "topologyKey",
    "whenUnsatisfiable",
    "labelSelector",
    "matchExpressions",
    "key",
    "operator",
    "values",
    "tolerations",
    "nodeSelector",
    "NodeNameToVictims",
    "NodeNameToMetaVictims",
    "Pods",
    "UID",
    "NumPDBViolations",
    "PodName",
    "PodNamespace",
    "PodUID",
    "Node",
    "",
    "\u{212A}ind",
];

const STRINGS: &[&str] = &[
    "n1",
    "n2",
    "n3",
    "gone",
    "",
    "abc",
    "1",
    "-1",
    "100m",
    "1.5Gi",
    "1e3",
    "1Zi",
    "99999Ei",
    "In",
    "NotIn",
    "Exists",
    "Gt",
    "Lt",
    "DoNotSchedule",
    "ScheduleAnyway",
    "zone",
    "app",
    "web",
    "\u{0}",
    "é",
];

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS).prop_map(str::to_string)
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(STRINGS).prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

/// Any JSON value, biased towards the extender's field names.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        string().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn quantity() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(&["0", "1", "100m", "250m", "2", "1Gi", "512Mi", "3.5", "1e3", "99999Ei"][..])
            .prop_map(|q| json!(q)),
        1 => string().prop_map(Value::String),
        1 => any::<i32>().prop_map(|n| json!(n)),
    ]
}

fn selector() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(&["app", "zone", ""][..]),
        string(),
        prop::collection::vec(string(), 0..3),
    )
        .prop_map(|(key, operator, values)| {
            json!({"matchExpressions": [{"key": key, "operator": operator, "values": values}]})
        })
}

/// A Pod close to what kube-scheduler sends, with every field the plugins
/// read drawn from valid, edge and invalid values.
fn near_valid_pod() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec((quantity(), quantity()), 0..3),
        prop::option::of(quantity()),
        any::<i32>(),
        prop::option::of((any::<i32>(), string(), string(), selector())),
        prop::option::of((string(), selector())),
        prop::option::of((string(), string(), string())),
        prop::option::of(string()),
    )
        .prop_map(
            |(containers, overhead, priority, spread, anti, toleration, node_name)| {
                let containers: Vec<Value> = containers
                    .into_iter()
                    .enumerate()
                    .map(|(i, (cpu, memory))| {
                        json!({"name": format!("c{i}"), "resources": {"requests": {"cpu": cpu, "memory": memory}}})
                    })
                    .collect();
                let mut spec = json!({"containers": containers, "priority": priority});
                if let Some(q) = overhead {
                    spec["overhead"] = json!({"cpu": q});
                }
                if let Some((skew, key, when, selector)) = spread {
                    spec["topologySpreadConstraints"] = json!([{"maxSkew": skew, "topologyKey": key,
                        "whenUnsatisfiable": when, "labelSelector": selector}]);
                }
                if let Some((key, selector)) = anti {
                    spec["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"topologyKey": key, "labelSelector": selector}]},
                        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [selector]}}});
                }
                if let Some((key, operator, effect)) = toleration {
                    spec["tolerations"] = json!([{"key": key, "operator": operator, "effect": effect}]);
                }
                if let Some(n) = node_name {
                    spec["nodeName"] = json!(n);
                }
                json!({"metadata": {"name": "p", "namespace": "default", "uid": "u", "labels": {"app": "web"}}, "spec": spec})
            },
        )
}

/// A request of the verb's shape around a near-valid Pod.
fn near_valid_body() -> impl Strategy<Value = (&'static str, Value)> {
    let nodes = prop::collection::vec(
        prop::sample::select(&["n1", "n2", "n3", "gone", ""][..]),
        0..4,
    );
    (near_valid_pod(), nodes, prop::sample::select(PATHS), any::<bool>()).prop_map(
        |(pod, nodes, path, full_nodes)| {
            let body = match path {
                "/preempt" => {
                    let victims: serde_json::Map<String, Value> = nodes
                        .iter()
                        .map(|n| (n.to_string(), json!({"Pods": [{"UID": "uid-default-busy"}], "NumPDBViolations": 0})))
                        .collect();
                    json!({"Pod": pod, "NodeNameToMetaVictims": victims})
                }
                "/bind" => json!({"PodName": "p", "PodNamespace": "default", "PodUID": "u", "Node": nodes.first()}),
                _ if full_nodes => {
                    let items: Vec<Value> = nodes.iter().map(|n| json!({"metadata": {"name": n}})).collect();
                    json!({"Pod": pod, "Nodes": {"items": items}})
                }
                _ => json!({"Pod": pod, "NodeNames": nodes}),
            };
            (path, body)
        },
    )
}

/// Byte-level damage: truncation, flips, insertions, deletions, swaps.
fn mutated(bytes: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = bytes.len().max(1);
    prop::collection::vec((0..5u8, 0..len, 0..len, any::<u8>()), 1..6).prop_map(move |edits| {
        let mut b = bytes.clone();
        for (op, i, j, byte) in edits {
            if b.is_empty() {
                b.push(b'{');
            }
            let (i, j) = (i % b.len(), j % b.len());
            match op {
                0 => b.truncate(i),
                1 => b[i] = byte,
                2 => {
                    let set = b"{}[]\",:0-e\\ \xff";
                    b.insert(i, set[byte as usize % set.len()])
                }
                3 => {
                    b.remove(i);
                }
                _ => b.swap(i, j),
            }
        }
        b
    })
}

fn any_body() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    prop_oneof![
        2 => near_valid_body().prop_map(|(p, v)| (p, v.to_string().into_bytes())),
        2 => near_valid_body().prop_flat_map(|(p, v)| (Just(p), mutated(v.to_string().into_bytes()))),
        1 => (prop::sample::select(PATHS), json_value()).prop_map(|(p, v)| (p, v.to_string().into_bytes())),
        1 => (prop::sample::select(PATHS), prop::collection::vec(any::<u8>(), 0..256)),
    ]
}

/// Runs `cases` bodies through the router on one runtime; every reply must
/// be 200 or 400 within a deadline, and a 200 must carry JSON.
fn check_bodies(cases: u32) -> Result<std::collections::BTreeMap<u16, u32>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let router: Router = router_with_limits(
        Arc::new(Real::new()),
        Limits {
            body: BodyLimit::Fixed(1 << 20),
            read_timeout: Duration::from_secs(5),
        },
    );
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    let mut config = Config::with_cases(cases);
    config.failure_persistence = None;
    // Shrinking a JSON body takes long: a shorter search still leaves a
    // readable case, and the first failing body is printed too.
    config.max_shrink_iters = 2000;
    let mut runner = TestRunner::new(config);
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    runner
        .run(&any_body(), |(path, body)| {
            let request = axum::http::Request::builder()
                .method(Method::POST)
                .uri(path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.clone()))
                .unwrap();
            let reply = runtime.block_on(async {
                // A deadline far above a case's milliseconds: a hang fails.
                tokio::time::timeout(Duration::from_secs(20), async {
                    let response = router.clone().oneshot(request).await.unwrap();
                    let status = response.status();
                    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                        .await
                        .unwrap();
                    (status, bytes)
                })
                .await
            });
            let (status, reply) = reply.map_err(|_| {
                TestCaseError::fail(format!("{path} hung: {}", String::from_utf8_lossy(&body)))
            })?;
            *seen.borrow_mut().entry(status.as_u16()).or_default() += 1;
            prop_assert!(
                status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
                "{} {}: {} -> {}",
                path,
                status,
                String::from_utf8_lossy(&body),
                String::from_utf8_lossy(&reply)
            );
            if status == StatusCode::OK {
                prop_assert!(serde_json::from_slice::<Value>(&reply).is_ok());
            } else {
                prop_assert!(!reply.is_empty(), "a 400 says why");
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok(seen.into_inner())
}

#[test]
fn fuzzed_bodies_get_200_or_400_never_5xx_panics_or_hangs() {
    let seen = check_bodies(600).unwrap_or_else(|e| panic!("{e}"));
    // Both outcomes occur, so the generators reach the plugins as well as
    // the decoder.
    assert!(seen.get(&200).copied().unwrap_or(0) > 50, "{seen:?}");
    assert!(seen.get(&400).copied().unwrap_or(0) > 50, "{seen:?}");
}
