//! understudy-scheduler calling HTTP extenders from its configuration, on the
//! local control plane: a second understudy-scheduler serving our own
//! extender API, and a small extender written here (raw JSON, independent
//! of our wire types) that manages an extended resource and binds the pods
//! that ask for it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use understudy_e2e::fixture::{Cluster, ClusterSpec, TestNamespace, binaries_dir};
use understudy_e2e::pods::{
    self, create, create_private_node, delete_node, wait_event, wait_event_with, wait_scheduled,
};
use understudy_e2e::wait;

const T: Duration = Duration::from_secs(60);
const WIDGET: &str = "example.com/widget";

fn cluster() -> &'static Cluster {
    Cluster::shared(ClusterSpec {
        nodes: 1,
        understudies: "none",
        start_understudies: false,
        real_nodes: 0,
        kwok: true,
        backend: None,
        proxy_mode: Default::default(),
    })
}

/// What the test extender saw, by verb: the pods' names.
#[derive(Default)]
struct Seen {
    filter: Vec<String>,
    prioritize: Vec<String>,
    bind: Vec<String>,
}

#[derive(Clone)]
struct TestExtender {
    client: Client,
    seen: Arc<Mutex<Seen>>,
    /// Nodes it refuses, and the one it prefers.
    refuse: String,
    prefer: String,
}

fn pod_name(args: &Value) -> String {
    args["Pod"]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Node names from either form kube-scheduler's extender API sends.
fn node_names(args: &Value) -> Vec<String> {
    if let Some(names) = args["NodeNames"].as_array() {
        return names
            .iter()
            .filter_map(|n| n.as_str().map(String::from))
            .collect();
    }
    args["Nodes"]["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|n| n["metadata"]["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

async fn filter(State(ext): State<TestExtender>, body: Bytes) -> String {
    let args: Value = serde_json::from_slice(&body).unwrap_or_default();
    ext.seen.lock().unwrap().filter.push(pod_name(&args));
    let names = node_names(&args);
    let kept: Vec<&String> = names.iter().filter(|n| **n != ext.refuse).collect();
    let failed: serde_json::Map<String, Value> = names
        .iter()
        .filter(|n| **n == ext.refuse)
        .map(|n| (n.clone(), json!("node(s) refused by the test extender")))
        .collect();
    json!({"NodeNames": kept, "FailedNodes": failed, "Error": ""}).to_string()
}

async fn prioritize(State(ext): State<TestExtender>, body: Bytes) -> String {
    let args: Value = serde_json::from_slice(&body).unwrap_or_default();
    ext.seen.lock().unwrap().prioritize.push(pod_name(&args));
    let scores: Vec<Value> = node_names(&args)
        .into_iter()
        .map(|n| json!({"Host": n, "Score": if n == ext.prefer { 10 } else { 0 }}))
        .collect();
    Value::Array(scores).to_string()
}

async fn bind(State(ext): State<TestExtender>, body: Bytes) -> String {
    let args: Value = serde_json::from_slice(&body).unwrap_or_default();
    let (ns, name, uid, node) = (
        args["PodNamespace"].as_str().unwrap_or_default(),
        args["PodName"].as_str().unwrap_or_default(),
        args["PodUID"].as_str().unwrap_or_default(),
        args["Node"].as_str().unwrap_or_default(),
    );
    ext.seen.lock().unwrap().bind.push(name.to_string());
    let pods: Api<Pod> = Api::namespaced(ext.client.clone(), ns);
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let error = match pods
        .create_subresource::<_, Value>("binding", name, &PostParams::default(), &binding)
        .await
    {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    };
    json!({ "Error": error }).to_string()
}

async fn serve_test_extender(ext: TestExtender) -> String {
    let app = axum::Router::new()
        .route("/ext/filter", post(filter))
        .route("/ext/prioritize", post(prioritize))
        .route("/ext/bind", post(bind))
        .with_state(ext);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://127.0.0.1:{port}/ext")
}

async fn ready(metrics_port: u16) {
    let http = understudy_e2e::probe::http_client();
    let url = format!("http://127.0.0.1:{metrics_port}/readyz");
    wait::until("understudy-scheduler ready", T, || async {
        Ok(understudy_e2e::probe::healthy(&http, &url)
            .await
            .then_some(()))
    })
    .await
    .unwrap();
}

fn scheduler(
    config: &std::path::Path,
    metrics_port: u16,
    extender_port: u16,
) -> tokio::process::Child {
    tokio::process::Command::new(binaries_dir().join("understudy-scheduler"))
        .arg(format!("--config={}", config.display()))
        .arg(format!("--kubeconfig={}", cluster().kubeconfig.display()))
        .args([
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--log-level=warn",
        ])
        .arg(format!("--port={metrics_port}"))
        .arg(format!("--extender-port={extender_port}"))
        .kill_on_drop(true)
        .spawn()
        .expect("start understudy-scheduler")
}

/// A pod for `profile` on this test's private nodes, optionally asking for
/// a widget (which no node advertises: only the extender manages it).
fn pod(name: &str, profile: &str, owner: &str, widget: bool, node: Option<&str>) -> Value {
    let mut resources = json!({"requests": {"cpu": "100m"}});
    if widget {
        resources["requests"][WIDGET] = json!("1");
        resources["limits"] = json!({ WIDGET: "1" });
    }
    let mut selector = json!({"understudy.dev/test": owner});
    if let Some(node) = node {
        selector["kubernetes.io/hostname"] = json!(node);
    }
    json!({
        "metadata": {"name": name},
        "spec": {
            "schedulerName": profile,
            "nodeSelector": selector,
            "tolerations": [{"key": "understudy.dev/test", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10", "resources": resources}],
        }
    })
}

/// The scheduler under test calls both extenders: our extender API (another
/// understudy-scheduler whose profile only admits `extender-ok` nodes,
/// nodeCacheCapable) filters every pod; the test extender, interested only in
/// widget pods, refuses one node, prefers another and binds them itself.
#[tokio::test]
async fn understudy_scheduler_calls_our_extender_api_and_a_test_extender() {
    let cluster = cluster();
    let client = cluster.client().await;
    let ns = TestNamespace::create(cluster, &client, "callout").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let node = |n: &str| format!("{n}-{}", ns.name);
    let (ok1, ok2, refused, other) = (node("ok1"), node("ok2"), node("refused"), node("big"));
    for n in [&ok1, &ok2, &refused] {
        create_private_node(&client, n, &ns.name, "8", json!({"extender-ok": "true"})).await;
    }
    // The roomiest node: without our extender API's filter every pod would go here.
    create_private_node(&client, &other, &ns.name, "64", json!({})).await;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let test_extender = serve_test_extender(TestExtender {
        client: client.clone(),
        seen: seen.clone(),
        refuse: refused.clone(),
        prefer: ok2.clone(),
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let free = || understudy_e2e::controlplane::free_port().unwrap();
    let (api_metrics, api_port) = (free(), free());
    let provider = dir.path().join("provider.yaml");
    std::fs::write(&provider, format!(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
         profiles:\n- schedulerName: provider-{ns}\n  pluginConfig:\n  - name: NodeResourcesFit\n    args: {{ignoredResources: [{WIDGET}]}}\n  - name: NodeAffinity\n    args:\n      addedAffinity:\n        \
         requiredDuringSchedulingIgnoredDuringExecution:\n          nodeSelectorTerms:\n          - matchExpressions: [{{key: extender-ok, operator: In, values: [\"true\"]}}]\n",
        ns = ns.name
    )).unwrap();
    let _provider = scheduler(&provider, api_metrics, api_port);
    ready(api_metrics).await;

    let profile = format!("caller-{}", ns.name);
    let caller_metrics = free();
    let caller = dir.path().join("caller.yaml");
    std::fs::write(&caller, format!(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
         profiles: [{{schedulerName: {profile}}}]\n\
         extenders:\n\
         - urlPrefix: http://127.0.0.1:{api_port}\n  filterVerb: filter\n  prioritizeVerb: prioritize\n  weight: 1\n  nodeCacheCapable: true\n\
         - urlPrefix: {test_extender}\n  filterVerb: filter\n  prioritizeVerb: prioritize\n  bindVerb: bind\n  weight: 5\n  nodeCacheCapable: true\n  \
         managedResources: [{{name: {WIDGET}, ignoredByScheduler: true}}]\n  httpTimeout: 10s\n",
    )).unwrap();
    let _caller = scheduler(&caller, caller_metrics, free());
    ready(caller_metrics).await;

    // Plain pods: only our extender API filters them; the default binding.
    for i in 0..3 {
        create(
            &pods,
            pod(&format!("plain{i}"), &profile, &ns.name, false, None),
        )
        .await;
    }
    // Widget pods: both extenders; the test extender refuses one node,
    // prefers ok2 (5 × 10 × 10 points outweigh any plugin score) and binds.
    for i in 0..3 {
        create(
            &pods,
            pod(&format!("widget{i}"), &profile, &ns.name, true, None),
        )
        .await;
    }
    // A widget pod only the refused node could take: unschedulable, in the
    // extender's words.
    create(
        &pods,
        pod("stuck", &profile, &ns.name, true, Some(&refused)),
    )
    .await;

    let mut plain = vec![];
    for i in 0..3 {
        plain.push(
            wait_scheduled(&pods, &format!("plain{i}"), T)
                .await
                .unwrap(),
        );
    }
    let mut widgets = vec![];
    for i in 0..3 {
        widgets.push(
            wait_scheduled(&pods, &format!("widget{i}"), T)
                .await
                .unwrap(),
        );
    }
    let stuck = wait_event_with(
        &client,
        &ns.name,
        "stuck",
        "FailedScheduling",
        "node(s) refused by the test extender",
        T,
    )
    .await;
    let scheduled = wait_event(&client, &ns.name, "widget0", "Scheduled", T).await;

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    for n in [&ok1, &ok2, &refused, &other] {
        delete_node(&client, n).await;
    }
    for n in &plain {
        assert!(
            [&ok1, &ok2, &refused].contains(&n),
            "a plain pod went to {n}, which our extender API's filter rejects"
        );
    }
    assert!(
        widgets.iter().all(|n| *n == ok2),
        "widget pods: {widgets:?}"
    );
    let stuck = stuck.unwrap();
    let note = stuck.note.unwrap_or_default();
    assert!(note.starts_with("0/"), "{note}");
    // Plain pods never reach the test extender; widget pods are bound by it.
    assert!(
        seen.filter
            .iter()
            .all(|p| p.starts_with("widget") || p == "stuck"),
        "{:?}",
        seen.filter
    );
    assert!(seen.filter.iter().any(|p| p == "stuck"));
    let mut bound = seen.bind.clone();
    bound.sort();
    assert_eq!(bound, ["widget0", "widget1", "widget2"]);
    assert!(seen.prioritize.iter().any(|p| p.starts_with("widget")));
    // The Scheduled Event is the scheduler's, whoever bound.
    let scheduled = scheduled.unwrap();
    assert_eq!(
        scheduled.reporting_controller.as_deref(),
        Some(profile.as_str())
    );
    let events = pods::events_for(&client, &ns.name, "plain0").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("Scheduled")),
        "{events:?}"
    );
}
