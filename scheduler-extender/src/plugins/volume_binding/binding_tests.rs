//! Reserve, PreBind and Unreserve of VolumeBinding against the scheduler
//! cache and a fake apiserver: what is assumed, what is written, and when
//! the binding cycle gives up.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::{Value, json};

use super::binder::check_bindings;
use super::test_util::*;
use super::*;
use crate::cache::Cache;
use crate::framework::Code;
use crate::framework::fake_api::{self, Request, Responder};
use crate::framework::testing::{node, pod};

const DYNAMIC: &str = "csi";

fn dynamic_class() -> Value {
    class(DYNAMIC, WAIT_FOR_FIRST_CONSUMER, "csi.example.com")
}

fn static_class() -> Value {
    class("local", WAIT_FOR_FIRST_CONSUMER, NOT_SUPPORTED_PROVISIONER)
}

fn with_version(mut obj: Value, rv: &str) -> Value {
    obj["metadata"]["resourceVersion"] = json!(rv);
    obj
}

struct World {
    handle: Handle,
    requests: tokio::sync::mpsc::UnboundedReceiver<Request>,
    plugin: Arc<VolumeBinding>,
}

fn world_with(
    respond: Arc<Responder>,
    nodes: &[&str],
    claims: Vec<Value>,
    pvs: Vec<Value>,
    timeout_seconds: i64,
) -> World {
    let (client, requests) = fake_api::apiserver(respond);
    let mut cache = Cache::new();
    for n in nodes {
        cache.add_or_update_node(node(n, "4", "8Gi", &[], json!({})));
    }
    for c in claims {
        cache.set_claim(serde_json::from_value::<PersistentVolumeClaim>(c).unwrap());
    }
    for v in pvs {
        cache.set_volume(serde_json::from_value::<PersistentVolume>(v).unwrap());
    }
    for sc in [static_class(), dynamic_class()] {
        cache.set_storage_class(serde_json::from_value::<StorageClass>(sc).unwrap());
    }
    World {
        handle: Handle {
            client,
            cache: Arc::new(Mutex::new(cache)),
        },
        requests,
        plugin: Arc::new(VolumeBinding {
            bind_timeout_seconds: timeout_seconds,
        }),
    }
}

fn world(nodes: &[&str], claims: Vec<Value>, pvs: Vec<Value>) -> World {
    world_with(
        Arc::new(fake_api::echo_bumping_version),
        nodes,
        claims,
        pvs,
        600,
    )
}

fn pod_using(name: &str, claims: &[&str]) -> Arc<PodInfo> {
    let volumes: Vec<Value> = claims.iter().map(|c| pvc_volume(c)).collect();
    pod(name, &[], json!({"volumes": volumes}))
}

impl World {
    /// PreFilter and Filter on every node of the cache's snapshot.
    fn filter(&self, pod: &PodInfo) -> (CycleState, Vec<(String, Status)>) {
        let snapshot = self.handle.cache().snapshot();
        let mut state = CycleState::new();
        let (_, status) = self.plugin.pre_filter(&mut state, pod, &snapshot);
        assert!(status.is_success(), "{status}");
        let statuses = snapshot
            .nodes
            .iter()
            .map(|n| (n.name.clone(), self.plugin.filter(&state, pod, n)))
            .collect();
        (state, statuses)
    }

    /// Filter, then Reserve on `node` with the pod assumed there, as the
    /// scheduling cycle does.
    fn reserve(&self, pod: &PodInfo, node: &str) -> CycleState {
        let (mut state, statuses) = self.filter(pod);
        let on_node = statuses.iter().find(|(n, _)| n == node).unwrap();
        assert!(on_node.1.is_success(), "{node}: {}", on_node.1);
        self.handle.cache().assume(pod, node).unwrap();
        let status = self.plugin.reserve(&mut state, pod, node, &self.handle);
        assert!(status.is_success(), "{status}");
        state
    }

    fn volume(&self, name: &str) -> Arc<PersistentVolume> {
        self.handle.cache().snapshot().volumes.volumes[name].clone()
    }

    fn claim(&self, name: &str) -> Arc<PersistentVolumeClaim> {
        self.handle.cache().snapshot().volumes.claims[&format!("default/{name}")].clone()
    }

    /// What the watch would deliver after the PV controller's work.
    fn watch_volume(&self, pv: Value) {
        self.handle
            .cache()
            .set_volume(serde_json::from_value(pv).unwrap());
    }
    fn watch_claim(&self, pvc: Value) {
        self.handle
            .cache()
            .set_claim(serde_json::from_value(pvc).unwrap());
    }
}

fn claim_ref_name(pv: &PersistentVolume) -> Option<String> {
    pv.spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .and_then(|r| r.name.clone())
}

fn selected_node(pvc: &PersistentVolumeClaim) -> Option<String> {
    pvc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_SELECTED_NODE))
        .cloned()
}

fn rejected_for_binding() -> Status {
    Status::new(
        Code::UnschedulableAndUnresolvable,
        vec![ERR_REASON_BIND_CONFLICT.to_string()],
    )
}

#[tokio::test]
async fn two_pods_never_get_the_same_volume_and_unreserve_gives_it_back() {
    let w = world(
        &["node-a"],
        vec![
            with_version(claim("c1", Some("local"), "", json!({})), "1"),
            with_version(claim("c2", Some("local"), "", json!({})), "2"),
        ],
        vec![with_version(pv("pv-1", "local", "2Gi", json!({})), "5")],
    );
    let first = pod_using("p1", &["c1"]);
    let state = w.reserve(&first, "node-a");

    let taken = w.volume("pv-1");
    assert_eq!(claim_ref_name(&taken).as_deref(), Some("c1"));
    assert_eq!(
        taken.metadata.annotations.as_ref().unwrap()[ANN_BOUND_BY_CONTROLLER],
        "yes"
    );

    let second = pod_using("p2", &["c2"]);
    let (_, statuses) = w.filter(&second);
    assert_eq!(statuses[0].1, rejected_for_binding(), "pv-1 is assumed");

    w.plugin.unreserve(&state, &first, "node-a", &w.handle);
    assert_eq!(claim_ref_name(&w.volume("pv-1")), None);
    let (_, statuses) = w.filter(&second);
    assert!(statuses[0].1.is_success(), "{}", statuses[0].1);
}

#[tokio::test]
async fn volume_node_affinity_decides_the_node_and_what_reserve_assumes() {
    let w = world(
        &["node-a", "node-b"],
        vec![with_version(claim("c1", Some("local"), "", json!({})), "1")],
        vec![
            with_version(pv("pv-a", "local", "2Gi", host_affinity("node-a")), "3"),
            with_version(pv("pv-b", "local", "1Gi", host_affinity("node-b")), "4"),
        ],
    );
    let p = pod_using("p", &["c1"]);
    // Each node fits with its own local volume.
    let (_, statuses) = w.filter(&p);
    assert!(statuses.iter().all(|(_, s)| s.is_success()), "{statuses:?}");
    w.reserve(&p, "node-a");
    assert_eq!(claim_ref_name(&w.volume("pv-a")).as_deref(), Some("c1"));
    assert_eq!(
        claim_ref_name(&w.volume("pv-b")),
        None,
        "not node-b's volume"
    );

    // With node-a's volume gone, only node-b fits.
    let w = world(
        &["node-a", "node-b"],
        vec![with_version(claim("c1", Some("local"), "", json!({})), "1")],
        vec![with_version(
            pv("pv-b", "local", "1Gi", host_affinity("node-b")),
            "4",
        )],
    );
    let (_, statuses) = w.filter(&p);
    assert_eq!(statuses[0], ("node-a".to_string(), rejected_for_binding()));
    assert!(statuses[1].1.is_success());
}

#[tokio::test]
async fn prebind_writes_the_bindings_and_waits_for_the_pv_controller() {
    let mut w = world(
        &["node-a"],
        vec![
            with_version(claim("c1", Some("local"), "", json!({})), "1"),
            with_version(claim("c2", Some(DYNAMIC), "", json!({})), "2"),
        ],
        vec![with_version(pv("pv-1", "local", "2Gi", json!({})), "5")],
    );
    let p = pod_using("p", &["c1", "c2"]);
    let state = w.reserve(&p, "node-a");
    assert_eq!(
        selected_node(&w.claim("c2")).as_deref(),
        Some("node-a"),
        "the claim to provision is assumed with the node"
    );

    let (plugin, handle, pod) = (w.plugin.clone(), w.handle.clone(), p.clone());
    let binding =
        tokio::spawn(async move { plugin.pre_bind(&state, &pod, "node-a", &handle).await });

    let pv_write = w.requests.recv().await.unwrap();
    assert_eq!(
        (pv_write.method.as_str(), pv_write.path.as_str()),
        ("PUT", "/api/v1/persistentvolumes/pv-1")
    );
    assert_eq!(
        pv_write.body["spec"]["claimRef"],
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "default",
               "name": "c1", "uid": "uid-c1", "resourceVersion": "1"})
    );
    assert_eq!(
        pv_write.body["metadata"]["annotations"][ANN_BOUND_BY_CONTROLLER],
        "yes"
    );
    assert_eq!(
        pv_write.body["metadata"]["resourceVersion"], "5",
        "an update conditional on the version the choice was made on"
    );
    let claim_write = w.requests.recv().await.unwrap();
    assert_eq!(
        (claim_write.method.as_str(), claim_write.path.as_str()),
        (
            "PUT",
            "/api/v1/namespaces/default/persistentvolumeclaims/c2"
        )
    );
    assert_eq!(
        claim_write.body["metadata"]["annotations"][ANN_SELECTED_NODE],
        "node-a"
    );

    // The writes reached the watch, the controller has not bound yet.
    let mut written_pv = pv_write.body.clone();
    written_pv["metadata"]["resourceVersion"] = json!("6");
    w.watch_volume(written_pv.clone());
    let mut written_claim = claim_write.body.clone();
    written_claim["metadata"]["resourceVersion"] = json!("3");
    w.watch_claim(written_claim.clone());
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!binding.is_finished(), "waits for the PV controller");

    // The PV controller completes both.
    let mut bound_c1 = claim("c1", Some("local"), "pv-1", json!({}));
    bound_c1["metadata"]["resourceVersion"] = json!("7");
    w.watch_claim(bound_c1);
    let mut bound_c2 = claim("c2", Some(DYNAMIC), "pv-dyn", json!({}));
    bound_c2["metadata"]["annotations"][ANN_SELECTED_NODE] = json!("node-a");
    bound_c2["metadata"]["resourceVersion"] = json!("9");
    w.watch_volume(with_version(pv("pv-dyn", DYNAMIC, "1Gi", json!({})), "8"));
    w.watch_claim(bound_c2);
    assert_eq!(binding.await.unwrap(), Status::success());
    assert!(w.requests.try_recv().is_err(), "nothing else written");
}

#[tokio::test(start_paused = true)]
async fn bind_timeout_is_an_error() {
    let mut w = world_with(
        Arc::new(fake_api::echo_bumping_version),
        &["node-a"],
        vec![with_version(claim("c1", Some("local"), "", json!({})), "1")],
        vec![with_version(pv("pv-1", "local", "2Gi", json!({})), "5")],
        30,
    );
    let p = pod_using("p", &["c1"]);
    let state = w.reserve(&p, "node-a");
    let started = tokio::time::Instant::now();
    let status = w.plugin.pre_bind(&state, &p, "node-a", &w.handle).await;
    assert_eq!(
        status,
        Status::error("binding volumes: context deadline exceeded")
    );
    assert_eq!(started.elapsed(), std::time::Duration::from_secs(30));
    assert_eq!(w.requests.recv().await.unwrap().method, "PUT");
}

#[tokio::test]
async fn a_refused_write_drops_the_assumptions() {
    let refuse: Arc<Responder> = Arc::new(|_: &Request| {
        fake_api::refusal(
            409,
            "Conflict",
            "Operation cannot be fulfilled on persistentvolumes \"pv-1\": the object has been modified; please apply your changes to the latest version and try again",
        )
    });
    let w = world_with(
        refuse,
        &["node-a"],
        vec![
            with_version(claim("c1", Some("local"), "", json!({})), "1"),
            with_version(claim("c2", Some(DYNAMIC), "", json!({})), "2"),
        ],
        vec![with_version(pv("pv-1", "local", "2Gi", json!({})), "5")],
        600,
    );
    let p = pod_using("p", &["c1", "c2"]);
    let state = w.reserve(&p, "node-a");
    let status = w.plugin.pre_bind(&state, &p, "node-a", &w.handle).await;
    assert_eq!(status.code, Code::Error);
    assert!(
        status
            .message()
            .starts_with("Operation cannot be fulfilled"),
        "{status}"
    );
    assert_eq!(claim_ref_name(&w.volume("pv-1")), None);
    assert_eq!(selected_node(&w.claim("c2")), None);
}

#[tokio::test]
async fn a_node_selected_by_another_scheduler_is_kept() {
    let mut selected = claim("c1", Some(DYNAMIC), "", json!({}));
    selected["metadata"]["annotations"] = json!({ANN_SELECTED_NODE: "node-b"});
    let mut w = world(
        &["node-a", "node-b"],
        vec![with_version(selected, "4")],
        vec![],
    );
    let p = pod_using("p", &["c1"]);
    let (_, statuses) = w.filter(&p);
    assert_eq!(statuses[0], ("node-a".to_string(), rejected_for_binding()));
    assert!(statuses[1].1.is_success());

    let state = w.reserve(&p, "node-b");
    let (plugin, handle, pod) = (w.plugin.clone(), w.handle.clone(), p.clone());
    let binding =
        tokio::spawn(async move { plugin.pre_bind(&state, &pod, "node-b", &handle).await });
    let write = w.requests.recv().await.unwrap();
    assert_eq!(
        write.path,
        "/api/v1/namespaces/default/persistentvolumeclaims/c1"
    );
    assert_eq!(
        write.body["metadata"]["annotations"][ANN_SELECTED_NODE],
        "node-b"
    );
    let mut bound = claim("c1", Some(DYNAMIC), "pv-dyn", json!({}));
    bound["metadata"]["annotations"][ANN_SELECTED_NODE] = json!("node-b");
    w.watch_volume(with_version(pv("pv-dyn", DYNAMIC, "1Gi", json!({})), "6"));
    w.watch_claim(with_version(bound, "7"));
    assert_eq!(binding.await.unwrap(), Status::success());
}

#[tokio::test]
async fn pods_with_bound_claims_have_nothing_to_prebind() {
    let w = world(
        &["node-a"],
        vec![with_version(
            claim("c1", Some("local"), "pv-1", json!({})),
            "1",
        )],
        vec![with_version(pv("pv-1", "local", "2Gi", json!({})), "5")],
    );
    let p = pod_using("p", &["c1"]);
    let state = w.reserve(&p, "node-a");
    assert!(state.read::<BindingState>(NAME).unwrap().all_bound);
}

/// checkBindings' verdicts once the writes are in: wait, done, or an error
/// that sends the pod back to scheduling.
#[tokio::test]
async fn undone_bindings_are_errors() {
    let bound_claim = |rv: &str| with_version(claim("c1", Some("local"), "pv-1", json!({})), rv);
    let claimed_pv = |rv: &str| {
        with_version(
            pv(
                "pv-1",
                "local",
                "2Gi",
                json!({"claimRef": {"name": "c1", "namespace": "default", "uid": "uid-c1"}}),
            ),
            rv,
        )
    };
    let provisioned = |annotation: Option<&str>, volume: &str| {
        let mut c = claim("c2", Some(DYNAMIC), volume, json!({}));
        if let Some(node) = annotation {
            c["metadata"]["annotations"] =
                json!({ANN_SELECTED_NODE: node, ANN_BIND_COMPLETED: "yes"});
        } else {
            c["metadata"]["annotations"] = json!({ANN_BIND_COMPLETED: "yes"});
        }
        with_version(c, "20")
    };
    type Case = (
        &'static str,
        Vec<Value>,
        Vec<Value>,
        bool,
        Result<bool, String>,
    );
    let cases: Vec<Case> = vec![
        (
            "all bound",
            vec![bound_claim("11"), provisioned(Some("node-a"), "pv-2")],
            vec![claimed_pv("10"), with_version(pv("pv-2", DYNAMIC, "1Gi", json!({})), "3")],
            true,
            Ok(true),
        ),
        (
            "our write not yet seen",
            vec![bound_claim("11"), provisioned(Some("node-a"), "pv-2")],
            vec![claimed_pv("9"), with_version(pv("pv-2", DYNAMIC, "1Gi", json!({})), "3")],
            true,
            Ok(false),
        ),
        (
            "claim not yet bound",
            vec![
                with_version(claim("c1", Some("local"), "", json!({})), "11"),
                provisioned(Some("node-a"), "pv-2"),
            ],
            vec![claimed_pv("10"), with_version(pv("pv-2", DYNAMIC, "1Gi", json!({})), "3")],
            true,
            Ok(false),
        ),
        (
            "claimRef dropped",
            vec![bound_claim("11"), provisioned(Some("node-a"), "pv-2")],
            vec![with_version(pv("pv-1", "local", "2Gi", json!({})), "12")],
            true,
            Err("ClaimRef got reset for pv \"pv-1\"".into()),
        ),
        (
            "provisioning failed",
            vec![bound_claim("11"), provisioned(None, "")],
            vec![claimed_pv("10")],
            true,
            Err("provisioning failed for PVC \"c2\"".into()),
        ),
        (
            "provisioned volume on another node",
            vec![bound_claim("11"), provisioned(Some("node-a"), "pv-2")],
            vec![
                claimed_pv("10"),
                with_version(pv("pv-2", DYNAMIC, "1Gi", host_affinity("node-b")), "3"),
            ],
            true,
            Err(
                "pv \"pv-2\" node affinity doesn't match node \"node-a\": no matching NodeSelectorTerms"
                    .into(),
            ),
        ),
        (
            "pod deleted",
            vec![bound_claim("11"), provisioned(Some("node-a"), "pv-2")],
            vec![claimed_pv("10"), with_version(pv("pv-2", DYNAMIC, "1Gi", json!({})), "3")],
            false,
            Err("pod does not exist any more: pods \"p\" not found".into()),
        ),
    ];
    let written = PodVolumes {
        static_bindings: vec![(
            Arc::new(serde_json::from_value(claimed_pv("10")).unwrap()),
            Arc::new(serde_json::from_value(claim("c1", Some("local"), "", json!({}))).unwrap()),
        )],
        provisions: vec![Arc::new(
            serde_json::from_value(with_version(
                claim("c2", Some(DYNAMIC), "", json!({})),
                "20",
            ))
            .unwrap(),
        )],
    };
    for (name, claims, pvs, pod_exists, want) in cases {
        let w = world(&["node-a"], claims, pvs);
        let p = pod_using("p", &["c1", "c2"]);
        if pod_exists {
            w.handle.cache().assume(&p, "node-a").unwrap();
        }
        let got = check_bindings(&w.handle.cache(), &p, "node-a", &written);
        assert_eq!(got, want, "{name}");
    }
}
