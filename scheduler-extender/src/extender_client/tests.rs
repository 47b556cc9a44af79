//! The client against our own extender server (the same wire types, served
//! by axum on loopback) with a scripted backend, and the scheduling cycle
//! with extenders in it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::config::{ExtenderConfig, ExtenderTlsConfig, ManagedResource};
use super::*;
use crate::extender::types::{
    ExtenderArgs, ExtenderBindingArgs, ExtenderBindingResult, ExtenderFilterResult,
    ExtenderPreemptionArgs, ExtenderPreemptionResult, HostPriority, HostPriorityList,
};
use crate::extender::{Backend, Failure};
use crate::framework::testing::{container, node, node_info, pod, snapshot};
use crate::framework::{CycleState, Snapshot};
use crate::scheduling::{Algorithm, ScheduleError};

/// Rejects nodes whose name starts with "no-" (unresolvable for "never-"),
/// scores node "best" 10 and others 1, keeps the first victim of each
/// candidate, and records every request.
#[derive(Default)]
struct Scripted {
    seen: Mutex<Vec<String>>,
    filter_error: Option<String>,
}

fn names(args: &ExtenderArgs) -> Vec<String> {
    match (&args.nodes, &args.node_names) {
        (Some(l), _) => l
            .items
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect(),
        (None, Some(n)) => n.clone(),
        _ => vec![],
    }
}

impl Backend for Scripted {
    fn filter(&self, args: ExtenderArgs) -> Result<ExtenderFilterResult, Failure> {
        let form = if args.node_names.is_some() {
            "names"
        } else {
            "nodes"
        };
        self.seen.lock().unwrap().push(format!("filter:{form}"));
        if let Some(e) = &self.filter_error {
            return Ok(ExtenderFilterResult {
                error: e.clone(),
                ..Default::default()
            });
        }
        let mut result = ExtenderFilterResult::default();
        let mut kept = vec![];
        for n in names(&args) {
            if n.starts_with("never-") {
                result
                    .failed_and_unresolvable_nodes
                    .insert(n, "node(s) are never good".into());
            } else if n.starts_with("no-") {
                result.failed_nodes.insert(n, "node(s) said no".into());
            } else {
                kept.push(n);
            }
        }
        if args.node_names.is_some() {
            result.node_names = Some(kept);
        } else {
            let mut list = args.nodes.unwrap_or_default();
            list.items
                .retain(|n| kept.contains(n.metadata.name.as_ref().unwrap()));
            result.nodes = Some(list);
        }
        Ok(result)
    }

    fn prioritize(&self, args: ExtenderArgs) -> Result<HostPriorityList, Failure> {
        self.seen.lock().unwrap().push("prioritize".into());
        Ok(names(&args)
            .into_iter()
            .map(|host| HostPriority {
                score: if host == "best" { 10 } else { 1 },
                host,
            })
            .collect())
    }

    fn preempt(&self, args: ExtenderPreemptionArgs) -> Result<ExtenderPreemptionResult, Failure> {
        let form = if args.node_name_to_victims.is_empty() {
            "meta"
        } else {
            "pods"
        };
        self.seen.lock().unwrap().push(format!("preempt:{form}"));
        let mut out = ExtenderPreemptionResult::default();
        for (node, victims) in args.node_name_to_meta_victims {
            let mut v = victims.unwrap_or_default();
            v.pods.truncate(1);
            out.node_name_to_meta_victims.insert(node, v);
        }
        for (node, victims) in args.node_name_to_victims {
            let v = victims.unwrap_or_default();
            out.node_name_to_meta_victims.insert(
                node,
                MetaVictims {
                    pods: v
                        .pods
                        .iter()
                        .take(1)
                        .map(|p| MetaPod {
                            uid: p.metadata.uid.clone().unwrap_or_default(),
                        })
                        .collect(),
                    num_pdb_violations: v.num_pdb_violations,
                },
            );
        }
        Ok(out)
    }

    async fn bind(&self, args: ExtenderBindingArgs) -> ExtenderBindingResult {
        self.seen.lock().unwrap().push(format!(
            "bind:{}/{}:{}:{}",
            args.pod_namespace, args.pod_name, args.pod_uid, args.node
        ));
        if args.node == "refuse" {
            return ExtenderBindingResult {
                error: "node refused".into(),
            };
        }
        ExtenderBindingResult::default()
    }
}

struct Served {
    url: String,
    backend: Arc<Scripted>,
    _stop: tokio_util::sync::DropGuard,
}

async fn serve(backend: Scripted, tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>) -> Served {
    let backend = Arc::new(backend);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    let scheme = if tls.is_some() { "https" } else { "http" };
    tokio::spawn(crate::extender::serve(
        listener,
        crate::extender::router(backend.clone()),
        tls,
        stop.clone(),
    ));
    Served {
        url: format!("{scheme}://127.0.0.1:{port}/scheduler"),
        backend,
        _stop: stop.drop_guard(),
    }
}

fn config(url: &str) -> ExtenderConfig {
    ExtenderConfig {
        url_prefix: url.into(),
        filter_verb: "filter".into(),
        prioritize_verb: "prioritize".into(),
        preempt_verb: "preempt".into(),
        bind_verb: "bind".into(),
        weight: 2,
        ..Default::default()
    }
}

fn nodes(names: &[&str]) -> Vec<Arc<NodeInfo>> {
    names
        .iter()
        .map(|n| Arc::new(node_info(node(n, "4", "8Gi", &[], json!({})), &[])))
        .collect()
}

fn names_of(nodes: &[Arc<NodeInfo>]) -> Vec<&str> {
    nodes.iter().map(|n| n.name.as_str()).collect()
}

#[tokio::test]
async fn filter_round_trips_in_both_forms_with_failure_maps() {
    let served = serve(Scripted::default(), None).await;
    let p = pod("p", &[], json!({}));
    for cache_capable in [false, true] {
        let e = HttpExtender::new(&ExtenderConfig {
            node_cache_capable: cache_capable,
            ..config(&served.url)
        })
        .unwrap();
        let f = e
            .filter(&p.pod, &nodes(&["a", "no-b", "never-c", "d"]))
            .await
            .unwrap();
        assert_eq!(names_of(&f.nodes), ["a", "d"]);
        assert_eq!(f.failed["no-b"], "node(s) said no");
        assert_eq!(
            f.failed_and_unresolvable["never-c"],
            "node(s) are never good"
        );
    }
    assert_eq!(
        *served.backend.seen.lock().unwrap(),
        ["filter:nodes", "filter:names"]
    );
}

#[tokio::test]
async fn a_reply_error_or_a_bad_status_is_an_error_in_upstreams_words() {
    let served = serve(
        Scripted {
            filter_error: Some("extender is unhappy".into()),
            ..Default::default()
        },
        None,
    )
    .await;
    let p = pod("p", &[], json!({}));
    let e = HttpExtender::new(&config(&served.url)).unwrap();
    let err = e.filter(&p.pod, &nodes(&["a"])).await.unwrap_err();
    assert_eq!(err.to_string(), "extender is unhappy");
    // Our server answers 404 for an unknown verb.
    let e = HttpExtender::new(&ExtenderConfig {
        filter_verb: "filtre".into(),
        ..config(&served.url)
    })
    .unwrap();
    let err = e.filter(&p.pod, &nodes(&["a"])).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "failed filtre with extender at URL {}/filtre, code 404",
            served.url
        )
    );
}

#[tokio::test]
async fn prioritize_scales_scores_by_weight_and_ignores_failures() {
    let served = serve(Scripted::default(), None).await;
    let p = pod("p", &[], json!({}));
    let extenders = Extenders::new(&[
        config(&served.url),
        // Nothing listens there: its scores are simply missing.
        ExtenderConfig {
            url_prefix: "http://127.0.0.1:1/x".into(),
            ..config(&served.url)
        },
    ])
    .unwrap();
    let totals = extenders
        .prioritize(&p.pod, &nodes(&["best", "other"]))
        .await;
    // score × weight 2 × (100 / 10)
    assert_eq!(totals["best"], 200);
    assert_eq!(totals["other"], 20);
}

#[tokio::test]
async fn managed_resources_decide_which_pods_an_extender_sees() {
    let e = HttpExtender::new(&ExtenderConfig {
        managed_resources: vec![ManagedResource {
            name: "example.com/gpu".into(),
            ignored_by_scheduler: false,
        }],
        ..config("http://127.0.0.1:1")
    })
    .unwrap();
    let plain = pod("plain", &[], json!({"containers": [container("1", "1Gi")]}));
    let gpu = pod(
        "gpu",
        &[],
        json!({"containers": [{"name": "c", "resources": {"limits": {"example.com/gpu": "1"}}}]}),
    );
    let init = pod(
        "init",
        &[],
        json!({"containers": [container("1", "1Gi")],
               "initContainers": [{"name": "i", "resources": {"requests": {"example.com/gpu": "1"}}}]}),
    );
    assert!(!e.is_interested(&plain.pod));
    assert!(e.is_interested(&gpu.pod));
    assert!(e.is_interested(&init.pod));
    // An uninterested extender is not called: nothing listens on port 1.
    let extenders = Extenders::new(&[ExtenderConfig {
        managed_resources: vec![ManagedResource {
            name: "example.com/gpu".into(),
            ignored_by_scheduler: false,
        }],
        ..config("http://127.0.0.1:1")
    }])
    .unwrap();
    let out = extenders.filter(&plain.pod, nodes(&["a"])).await.unwrap();
    assert_eq!(names_of(&out.nodes), ["a"]);
    assert!(extenders.filter(&gpu.pod, nodes(&["a"])).await.is_err());
}

#[tokio::test]
async fn ignorable_extenders_go_last_and_their_errors_are_skipped() {
    let served = serve(Scripted::default(), None).await;
    let p = pod("p", &[], json!({}));
    let extenders = Extenders::new(&[
        ExtenderConfig {
            url_prefix: "http://127.0.0.1:1/down".into(),
            ignorable: true,
            bind_verb: String::new(),
            ..config(&served.url)
        },
        config(&served.url),
    ])
    .unwrap();
    let order: Vec<&str> = extenders.iter().map(|e| e.name()).collect();
    assert_eq!(order, [served.url.as_str(), "http://127.0.0.1:1/down"]);
    let out = extenders
        .filter(&p.pod, nodes(&["a", "no-b", "never-c"]))
        .await
        .unwrap();
    assert_eq!(names_of(&out.nodes), ["a"]);
    let mut rejected = out.rejected.clone();
    rejected.sort();
    assert_eq!(
        rejected,
        [
            (
                "never-c".to_string(),
                "node(s) are never good".to_string(),
                true
            ),
            ("no-b".to_string(), "node(s) said no".to_string(), false),
        ]
    );
}

#[tokio::test]
async fn preemption_candidates_are_narrowed_to_the_victims_the_extender_names() {
    let served = serve(Scripted::default(), None).await;
    let victims = [
        pod("v1", &[], json!({"nodeName": "n1", "priority": 1})),
        pod("v2", &[], json!({"nodeName": "n1", "priority": 0})),
    ];
    let n1 = Arc::new(node_info(node("n1", "4", "8Gi", &[], json!({})), &victims));
    let preemptor = pod("p", &[], json!({"priority": 10}));
    let lookup = |name: &str| (name == "n1").then(|| n1.clone());
    for cache_capable in [false, true] {
        let extenders = Extenders::new(&[ExtenderConfig {
            node_cache_capable: cache_capable,
            ..config(&served.url)
        }])
        .unwrap();
        let candidates = BTreeMap::from([(
            "n1".to_string(),
            VictimSet {
                pods: victims.to_vec(),
                num_pdb_violations: 1,
            },
        )]);
        let out = extenders
            .process_preemption(&preemptor.pod, candidates, &lookup)
            .await
            .unwrap();
        assert_eq!(out["n1"].pods.len(), 1);
        assert_eq!(out["n1"].pods[0].uid, victims[0].uid);
        assert_eq!(out["n1"].num_pdb_violations, 1);
    }
    assert_eq!(
        *served.backend.seen.lock().unwrap(),
        ["preempt:pods", "preempt:meta"]
    );
}

#[tokio::test]
async fn a_victim_the_node_does_not_hold_is_refused() {
    let served = serve(Scripted::default(), None).await;
    let v = pod("v", &[], json!({"nodeName": "n1"}));
    let empty = Arc::new(node_info(node("n1", "4", "8Gi", &[], json!({})), &[]));
    let extenders = Extenders::new(&[config(&served.url)]).unwrap();
    let candidates = BTreeMap::from([(
        "n1".to_string(),
        VictimSet {
            pods: vec![v.clone()],
            num_pdb_violations: 0,
        },
    )]);
    let lookup = |_: &str| Some(empty.clone());
    let err = extenders
        .process_preemption(&pod("p", &[], json!({})).pod, candidates, &lookup)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("but the pod is not found on that node"),
        "{err}"
    );
}

#[tokio::test]
async fn bind_goes_to_the_binding_extender_and_reports_its_error() {
    let served = serve(Scripted::default(), None).await;
    let extenders = Extenders::new(&[config(&served.url)]).unwrap();
    let p = pod("p", &[], json!({}));
    extenders.bind(&p, "n1").await.unwrap().unwrap();
    let err = extenders.bind(&p, "refuse").await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "node refused");
    let seen = served.backend.seen.lock().unwrap().clone();
    assert_eq!(seen[0], format!("bind:{}/p:{}:n1", p.namespace, p.uid));
    // No binding extender: the default binding applies.
    let none = Extenders::new(&[ExtenderConfig {
        bind_verb: String::new(),
        ..config(&served.url)
    }])
    .unwrap();
    assert!(none.bind(&p, "n1").await.is_none());
}

#[tokio::test]
async fn tls_with_a_ca_a_server_name_and_insecure_as_client_go() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["extender.test".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let served = serve(
        Scripted::default(),
        Some(crate::extender::tls_config(&cert_path, &key_path).unwrap()),
    )
    .await;
    let p = pod("p", &[], json!({}));
    let ca = data_encoding::BASE64.encode(cert.cert.pem().as_bytes());
    let with_tls = |tls: ExtenderTlsConfig, enable_https: bool| ExtenderConfig {
        tls_config: Some(tls),
        enable_https,
        ..config(&served.url)
    };
    let ok = |c: ExtenderConfig| {
        let p = p.clone();
        async move {
            HttpExtender::new(&c)
                .unwrap()
                .filter(&p.pod, &nodes(&["a"]))
                .await
                .map(|f| f.nodes.len())
        }
    };
    // The certificate names extender.test, not 127.0.0.1: serverName fixes that.
    let named = ExtenderTlsConfig {
        ca_data: ca.clone(),
        server_name: "extender.test".into(),
        ..Default::default()
    };
    assert_eq!(ok(with_tls(named, false)).await.unwrap(), 1);
    let unnamed = ExtenderTlsConfig {
        ca_data: ca.clone(),
        ..Default::default()
    };
    assert!(ok(with_tls(unnamed, false)).await.is_err());
    // enableHTTPS without a CA skips verification, as upstream's makeTransport.
    assert_eq!(
        ok(with_tls(ExtenderTlsConfig::default(), true))
            .await
            .unwrap(),
        1
    );
    // Without either, the self-signed certificate is refused.
    assert!(ok(config(&served.url)).await.is_err());
    let contradiction = ExtenderTlsConfig {
        ca_data: ca,
        insecure: true,
        ..Default::default()
    };
    let err = HttpExtender::new(&with_tls(contradiction, false))
        .err()
        .unwrap();
    assert!(err.contains("insecure flag is not allowed"), "{err}");
}

fn schedule_with(extenders: Extenders, snap: Snapshot) -> Result<String, ScheduleError> {
    let profile = crate::profile::Profile::from_config(
        &crate::config::SchedulerConfig::default().profiles[0],
    )
    .unwrap();
    let p = pod("p", &[], json!({"containers": [container("1", "1Gi")]}));
    let mut state = CycleState::new();
    Algorithm::new(Arc::new(extenders))
        .schedule(&profile, None, &mut state, &p, &snap, &Default::default())
        .map(|r| r.node)
}

#[tokio::test]
async fn the_cycle_applies_extender_filters_and_scores() {
    let served = serve(Scripted::default(), None).await;
    let url = served.url.clone();
    let mk = |names: &[&str]| {
        snapshot(
            names
                .iter()
                .map(|n| node_info(node(n, "4", "8Gi", &[], json!({})), &[]))
                .collect(),
            &[],
        )
    };
    // The cycle blocks on extender calls, as on the scheduler's filter pool.
    let (placed, unfit) = tokio::task::spawn_blocking(move || {
        let extenders = || {
            Extenders::new(&[ExtenderConfig {
                weight: 100,
                ..config(&url)
            }])
            .unwrap()
        };
        let placed: Vec<String> = (0..5)
            .map(|_| schedule_with(extenders(), mk(&["no-a", "best", "c", "never-d"])).unwrap())
            .collect();
        let unfit = schedule_with(extenders(), mk(&["no-a", "never-d"])).unwrap_err();
        (placed, unfit)
    })
    .await
    .unwrap();
    // Equal plugin scores everywhere: only the extender's 10 vs 1 decides.
    assert!(placed.iter().all(|n| n == "best"), "{placed:?}");
    let ScheduleError::Unfit(fit) = unfit else {
        panic!("{unfit:?}")
    };
    assert_eq!(
        fit.message(),
        "0/2 nodes are available: 1 node(s) are never good, 1 node(s) said no."
    );
    assert_eq!(
        fit.diagnosis.node_statuses["never-d"].code,
        crate::framework::Code::UnschedulableAndUnresolvable
    );
}

#[tokio::test]
async fn an_extender_error_fails_the_cycle_unless_ignorable() {
    let served = serve(
        Scripted {
            filter_error: Some("no capacity data".into()),
            ..Default::default()
        },
        None,
    )
    .await;
    let url = served.url.clone();
    let (strict, lenient) = tokio::task::spawn_blocking(move || {
        let snap = || {
            snapshot(
                vec![node_info(node("a", "4", "8Gi", &[], json!({})), &[])],
                &[],
            )
        };
        let strict = schedule_with(Extenders::new(&[config(&url)]).unwrap(), snap());
        let lenient = schedule_with(
            Extenders::new(&[ExtenderConfig {
                ignorable: true,
                ..config(&url)
            }])
            .unwrap(),
            snap(),
        );
        (strict, lenient)
    })
    .await
    .unwrap();
    match strict {
        Err(ScheduleError::Internal(s)) => assert_eq!(s.message(), "no capacity data"),
        other => panic!("{other:?}"),
    }
    assert_eq!(lenient.unwrap(), "a");
}
