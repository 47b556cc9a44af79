//! understudy-scheduler e2e: pods with `schedulerName: understudy-scheduler`
//! on the local control plane, each rule checked against the real apiserver.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use kube::Client;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use understudy_e2e::fixture::{Cluster, ClusterSpec, TestNamespace, binaries_dir};
use understudy_e2e::nodes::ZONE_LABEL;
use understudy_e2e::pods::{
    self, create, create_private_node, delete_node, wait_event, wait_scheduled,
};
use understudy_e2e::wait;

const SCHEDULER: &str = "understudy-scheduler";
const T: Duration = Duration::from_secs(60);

fn cluster() -> &'static Cluster {
    Cluster::shared(ClusterSpec {
        nodes: 3,
        understudies: "scheduler",
        start_understudies: true,
        real_nodes: 0,
        kwok: true,
        backend: None,
        proxy_mode: Default::default(),
    })
}

/// A pod for our scheduler with the given extra spec fields.
fn pod(name: &str, labels: Value, spec: Value) -> Value {
    let mut full = json!({
        "schedulerName": SCHEDULER,
        "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
    });
    for (k, v) in spec.as_object().expect("spec object") {
        full[k] = v.clone();
    }
    json!({"metadata": {"name": name, "labels": labels}, "spec": full})
}

async fn setup(prefix: &str) -> (Client, TestNamespace, Api<Pod>) {
    let cluster = cluster();
    let client = cluster.client().await;
    wait::nodes_ready(&client, 3, T).await.unwrap();
    let ns = TestNamespace::create(cluster, &client, prefix).await;
    let pods = Api::namespaced(client.clone(), &ns.name);
    (client, ns, pods)
}

async fn node_labels(client: &Client, name: &str) -> BTreeMap<String, String> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .get(name)
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap_or_default()
}

/// Every bound pod of `namespace` fits its node by all required rules,
/// recomputed from the final API state.
async fn assert_placements_valid(client: &Client, namespace: &str) {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let namespaces = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let violations = understudy_scheduler::checker::check(&nodes, &pods, &namespaces, |p| {
        p.metadata.namespace.as_deref() == Some(namespace)
    });
    assert!(
        violations.is_empty(),
        "placement violations: {:#?}",
        understudy_scheduler::checker::summarize(&violations)
    );
}

#[tokio::test]
async fn binds_a_pod_and_records_the_scheduled_event() {
    let (client, ns, pods) = setup("bind").await;
    create(&pods, pod("web", json!({}), json!({"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "100m"}}}]}))).await;
    let node = wait_scheduled(&pods, "web", T).await.unwrap();
    let event = wait_event(&client, &ns.name, "web", "Scheduled", T)
        .await
        .unwrap();
    assert_eq!(
        event.note.as_deref(),
        Some(format!("Successfully assigned {}/web to {node}", ns.name).as_str())
    );
    assert_eq!(event.reporting_controller.as_deref(), Some(SCHEDULER));
    wait::object(&pods, "web", T, kube::runtime::conditions::is_pod_running())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_oversized_pod_waits_unschedulable_then_fits_a_new_node() {
    let (client, ns, pods) = setup("overflow").await;
    let toleration = json!([{"key": "understudy.dev/test", "operator": "Equal", "value": ns.name, "effect": "NoSchedule"}]);
    create(&pods, pod("big", json!({}), json!({
        "tolerations": toleration,
        "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "40"}}}],
    })))
    .await;
    let (reason, message) = pods::wait_unschedulable_with(&pods, "big", T, "Insufficient cpu")
        .await
        .unwrap();
    assert_eq!(reason, "Unschedulable");
    assert!(
        message.starts_with("0/")
            && message.contains("nodes are available:")
            && message.contains("Insufficient cpu"),
        "{message}"
    );
    let event = wait_event(&client, &ns.name, "big", "FailedScheduling", T)
        .await
        .unwrap();
    assert!(event.note.unwrap_or_default().contains("Insufficient cpu"));

    let node_name = format!("big-{}", ns.name);
    create_private_node(&client, &node_name, &ns.name, "64", json!({})).await;
    let placed = wait_scheduled(&pods, "big", T).await;
    delete_node(&client, &node_name).await;
    assert_eq!(placed.unwrap(), node_name);
}

#[tokio::test]
async fn node_selector_and_required_node_affinity_are_honoured() {
    let (client, _ns, pods) = setup("affinity").await;
    create(
        &pods,
        pod(
            "in-zone-b",
            json!({}),
            json!({"nodeSelector": {ZONE_LABEL: "zone-b"}}),
        ),
    )
    .await;
    create(&pods, pod("on-node-2", json!({}), json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["kwok-node-2"]}]}]}}}}))).await;
    create(
        &pods,
        pod(
            "nowhere",
            json!({}),
            json!({"nodeSelector": {ZONE_LABEL: "zone-z"}}),
        ),
    )
    .await;
    let node = wait_scheduled(&pods, "in-zone-b", T).await.unwrap();
    assert_eq!(node_labels(&client, &node).await[ZONE_LABEL], "zone-b");
    assert_eq!(
        wait_scheduled(&pods, "on-node-2", T).await.unwrap(),
        "kwok-node-2"
    );
    let (_, message) = pods::wait_unschedulable_with(
        &pods,
        "nowhere",
        T,
        "node(s) didn't match Pod's node affinity/selector",
    )
    .await
    .unwrap();
    assert!(
        message.contains("node(s) didn't match Pod's node affinity/selector"),
        "{message}"
    );
}

#[tokio::test]
async fn taints_repel_pods_without_a_toleration() {
    let (client, ns, pods) = setup("taints").await;
    let node_name = format!("tainted-{}", ns.name);
    create_private_node(
        &client,
        &node_name,
        &ns.name,
        "8",
        json!({"dedicated": ns.name}),
    )
    .await;
    create(
        &pods,
        pod(
            "intolerant",
            json!({}),
            json!({"nodeSelector": {"dedicated": ns.name}}),
        ),
    )
    .await;
    create(&pods, pod("tolerant", json!({}), json!({
        "nodeSelector": {"dedicated": ns.name},
        "tolerations": [{"key": "understudy.dev/test", "operator": "Exists", "effect": "NoSchedule"}],
    })))
    .await;
    let tolerant = wait_scheduled(&pods, "tolerant", T).await;
    let intolerant =
        pods::wait_unschedulable_with(&pods, "intolerant", T, "untolerated taint").await;
    delete_node(&client, &node_name).await;
    assert_eq!(tolerant.unwrap(), node_name);
    let (_, message) = intolerant.unwrap();
    assert!(message.contains("untolerated taint"), "{message}");
}

#[tokio::test]
async fn host_ports_conflict_on_one_node() {
    let (_client, _ns, pods) = setup("ports").await;
    let spec = json!({
        "nodeSelector": {"kubernetes.io/hostname": "kwok-node-0"},
        "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": 18080}]}],
    });
    create(&pods, pod("first", json!({}), spec.clone())).await;
    assert_eq!(
        wait_scheduled(&pods, "first", T).await.unwrap(),
        "kwok-node-0"
    );
    create(&pods, pod("second", json!({}), spec)).await;
    let (_, message) = pods::wait_unschedulable_with(
        &pods,
        "second",
        T,
        "node(s) didn't have free ports for the requested pod ports",
    )
    .await
    .unwrap();
    assert!(
        message.contains("node(s) didn't have free ports for the requested pod ports"),
        "{message}"
    );
}

#[tokio::test]
async fn required_anti_affinity_spreads_pods_across_zones() {
    let (client, ns, pods) = setup("anti").await;
    let app = format!("anti-{}", ns.name);
    let spec = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": {"app": app}},
        "topologyKey": ZONE_LABEL,
    }]}}});
    for i in 0..3 {
        create(
            &pods,
            pod(&format!("a{i}"), json!({"app": app}), spec.clone()),
        )
        .await;
    }
    let mut zones = BTreeSet::new();
    for i in 0..3 {
        let node = wait_scheduled(&pods, &format!("a{i}"), T).await.unwrap();
        zones.insert(node_labels(&client, &node).await[ZONE_LABEL].clone());
    }
    assert_eq!(zones.len(), 3, "one pod per zone: {zones:?}");
    create(&pods, pod("a3", json!({"app": app}), spec)).await;
    let (_, message) =
        pods::wait_unschedulable_with(&pods, "a3", T, "didn't match pod anti-affinity rules")
            .await
            .unwrap();
    assert!(
        message.contains("didn't match pod anti-affinity rules"),
        "{message}"
    );
    assert_placements_valid(&client, &ns.name).await;
}

#[tokio::test]
async fn topology_spread_keeps_skew_within_max_skew() {
    let (client, ns, pods) = setup("spread").await;
    let app = format!("spread-{}", ns.name);
    let spec = json!({"topologySpreadConstraints": [{
        "maxSkew": 1,
        "topologyKey": ZONE_LABEL,
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": app}},
    }]});
    for i in 0..7 {
        create(
            &pods,
            pod(&format!("s{i}"), json!({"app": app}), spec.clone()),
        )
        .await;
        // Sequential creation: each decision sees the previous placements, as
        // a Deployment's pods would arrive.
        wait_scheduled(&pods, &format!("s{i}"), T).await.unwrap();
    }
    let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
    for p in pods.list(&ListParams::default()).await.unwrap() {
        let node = p.spec.unwrap().node_name.unwrap();
        *per_zone
            .entry(node_labels(&client, &node).await[ZONE_LABEL].clone())
            .or_default() += 1;
    }
    let max = per_zone.values().max().unwrap();
    let min = per_zone.values().min().unwrap();
    assert_eq!(per_zone.len(), 3, "{per_zone:?}");
    assert!(max - min <= 1, "skew over maxSkew: {per_zone:?}");
    assert_placements_valid(&client, &ns.name).await;
}

#[tokio::test]
async fn pods_a_service_selects_spread_over_nodes_by_default() {
    let (client, ns, pods) = setup("default-spread").await;
    // A roomy node and a small one: resource scoring alone puts both pods on
    // the roomy one; the default constraints (hostname, maxSkew 3,
    // ScheduleAnyway, pointed at the Service's selector) spread them.
    let roomy = format!("roomy-{}", ns.name);
    let small = format!("small-{}", ns.name);
    create_private_node(&client, &roomy, &ns.name, "64", json!({})).await;
    create_private_node(&client, &small, &ns.name, "8", json!({})).await;
    // Both must be schedulable (kwok Ready, the not-ready taint lifted)
    // before the first pod, or it lands where it can, not where it should.
    let nodes: Api<Node> = Api::all(client.clone());
    for name in [&roomy, &small] {
        wait::object(&nodes, name, T, |n: Option<&Node>| {
            n.is_some_and(wait::node_is_ready)
        })
        .await
        .unwrap();
    }
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let app = format!("web-{}", ns.name);
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": app}, "ports": [{"port": 80}]},
    }))
    .unwrap();
    services
        .create(&Default::default(), &service)
        .await
        .unwrap();
    let spec = json!({
        "nodeSelector": {"understudy.dev/test": ns.name},
        "tolerations": [{"key": "understudy.dev/test", "operator": "Equal", "value": ns.name, "effect": "NoSchedule"}],
        "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}}],
    });
    let mut placed = BTreeSet::new();
    for name in ["web-0", "web-1"] {
        create(&pods, pod(name, json!({"app": app}), spec.clone())).await;
        placed.insert(wait_scheduled(&pods, name, T).await.unwrap());
    }
    // Without a selecting Service or owner there is nothing to spread by.
    create(&pods, pod("loner-0", json!({}), spec.clone())).await;
    create(&pods, pod("loner-1", json!({}), spec.clone())).await;
    let loners = [
        wait_scheduled(&pods, "loner-0", T).await.unwrap(),
        wait_scheduled(&pods, "loner-1", T).await.unwrap(),
    ];
    delete_node(&client, &roomy).await;
    delete_node(&client, &small).await;
    assert_eq!(
        placed,
        BTreeSet::from([roomy.clone(), small]),
        "spread by default"
    );
    assert_eq!(loners, [roomy.clone(), roomy], "resource scoring alone");
}

#[tokio::test]
async fn pods_for_default_scheduler_are_left_to_kube_scheduler() {
    let (client, ns, pods) = setup("default").await;
    let mut p = pod("theirs", json!({}), json!({}));
    p["spec"].as_object_mut().unwrap().remove("schedulerName");
    create(&pods, p).await;
    wait_scheduled(&pods, "theirs", T).await.unwrap();
    let event = wait_event(&client, &ns.name, "theirs", "Scheduled", T)
        .await
        .unwrap();
    assert_eq!(
        event.reporting_controller.as_deref(),
        Some("default-scheduler")
    );
    let ours = pods::events_for(&client, &ns.name, "theirs").await;
    assert!(
        ours.iter()
            .all(|e| e.reporting_controller.as_deref() != Some(SCHEDULER)),
        "{ours:?}"
    );
}

/// Two replicas with their own profile and lease; the leader is killed while
/// pods arrive; the standby finishes the work and no pod is bound twice.
#[tokio::test]
async fn leader_failover_binds_every_pod_exactly_once() {
    let (client, ns, pods) = setup("failover").await;
    let cluster = cluster();
    let profile = format!("failover-{}", ns.name);
    let config_path = std::env::temp_dir().join(format!("{profile}.yaml"));
    std::fs::write(&config_path, format!(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
         leaderElection: {{leaderElect: true, resourceName: {profile}, resourceNamespace: {ns}, leaseDuration: 4s, renewDeadline: 2s, retryPeriod: 1s}}\n\
         profiles: [{{schedulerName: {profile}}}]\n",
        ns = ns.name
    )).unwrap();
    let spawn = |id: &str| {
        tokio::process::Command::new(binaries_dir().join("understudy-scheduler"))
            .arg(format!("--config={}", config_path.display()))
            .arg(format!("--kubeconfig={}", cluster.kubeconfig.display()))
            .args([
                "--bind-address=127.0.0.1",
                "--port=0",
                "--extender-port=0",
                "--log-level=warn",
            ])
            .arg(format!("--leader-elect-identity={id}"))
            .kill_on_drop(true)
            .spawn()
            .expect("start understudy-scheduler")
    };
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &ns.name);
    let mut a = spawn("a");
    wait::until("replica a to lead", T, || async {
        let l = leases.get_opt(&profile).await.map_err(|e| e.to_string())?;
        Ok((l
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .as_deref()
            == Some("a"))
        .then_some(()))
    })
    .await
    .unwrap();
    let _b = spawn("b");
    let with_profile = |name: String| {
        let mut p = pod(&name, json!({}), json!({}));
        p["spec"]["schedulerName"] = json!(profile);
        p
    };
    for i in 0..10 {
        create(&pods, with_profile(format!("f{i}"))).await;
    }
    a.start_kill().unwrap();
    a.wait().await.unwrap();
    for i in 10..20 {
        create(&pods, with_profile(format!("f{i}"))).await;
    }
    for i in 0..20 {
        wait_scheduled(&pods, &format!("f{i}"), Duration::from_secs(90))
            .await
            .unwrap();
    }
    for i in 0..20 {
        let name = format!("f{i}");
        let scheduled = pods::events_for(&client, &ns.name, &name)
            .await
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Scheduled"))
            .count();
        assert!(scheduled <= 1, "{name} has {scheduled} Scheduled events");
    }
    let _ = std::fs::remove_file(config_path);
}

/// Upstream kube-scheduler configured with `extenders:` pointing at
/// understudy-scheduler: our filter's decision (here: a NodeAffinity
/// `addedAffinity` only our profile has) is visibly applied, our prioritize is
/// called, and binding goes through our extender.
#[tokio::test]
async fn kube_scheduler_uses_our_extender_to_filter_prioritize_and_bind() {
    let (client, ns, pods) = setup("extender").await;
    let cluster = cluster();
    let Some(state) = &cluster.local else {
        // Needs the lab's kube-scheduler binary and its credentials.
        eprintln!("skipped: starts a kube-scheduler of its own, so needs the lab");
        return;
    };
    let ok = [format!("ext-a-{}", ns.name), format!("ext-c-{}", ns.name)];
    let other = format!("ext-b-{}", ns.name);
    for n in &ok {
        create_private_node(&client, n, &ns.name, "8", json!({"extender-ok": "true"})).await;
    }
    // The roomiest node: kube-scheduler alone would prefer it for every pod.
    create_private_node(&client, &other, &ns.name, "64", json!({})).await;

    let dir = std::env::temp_dir().join(format!("extender-{}", ns.name));
    std::fs::create_dir_all(&dir).unwrap();
    let free = || understudy_e2e::controlplane::free_port().unwrap();
    let (metrics_port, extender_port, kube_port) = (free(), free(), free());
    let ours = dir.join("understudy.yaml");
    std::fs::write(&ours, format!(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
         profiles:\n- schedulerName: unused-{ns}\n  pluginConfig:\n  - name: NodeAffinity\n    args:\n      addedAffinity:\n        \
         requiredDuringSchedulingIgnoredDuringExecution:\n          nodeSelectorTerms:\n          - matchExpressions: [{{key: extender-ok, operator: In, values: [\"true\"]}}]\n",
        ns = ns.name
    )).unwrap();
    let _understudy = tokio::process::Command::new(binaries_dir().join("understudy-scheduler"))
        .arg(format!("--config={}", ours.display()))
        .arg(format!("--kubeconfig={}", cluster.kubeconfig.display()))
        .args([
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--log-level=warn",
        ])
        .arg(format!("--port={metrics_port}"))
        .arg(format!("--extender-port={extender_port}"))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{metrics_port}/readyz");
    wait::until("understudy-scheduler ready", T, || async {
        Ok(http
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
            .then_some(()))
    })
    .await
    .unwrap();

    let profile = format!("extended-{}", ns.name);
    let sched_kubeconfig = state.state_dir.join("kubeconfigs/scheduler.yaml");
    let upstream = dir.join("kube-scheduler.yaml");
    std::fs::write(&upstream, format!(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
         clientConnection: {{kubeconfig: {kc}}}\nleaderElection: {{leaderElect: false}}\n\
         profiles: [{{schedulerName: {profile}}}]\n\
         extenders:\n- urlPrefix: http://127.0.0.1:{extender_port}\n  filterVerb: filter\n  prioritizeVerb: prioritize\n  \
         bindVerb: bind\n  weight: 5\n  nodeCacheCapable: true\n",
        kc = sched_kubeconfig.display()
    )).unwrap();
    let _kube = tokio::process::Command::new(state.toolchain_dir.join("kube-scheduler"))
        .arg(format!("--config={}", upstream.display()))
        .arg(format!(
            "--authentication-kubeconfig={}",
            sched_kubeconfig.display()
        ))
        .arg(format!(
            "--authorization-kubeconfig={}",
            sched_kubeconfig.display()
        ))
        .args(["--bind-address=127.0.0.1", "--v=1"])
        .arg(format!("--secure-port={kube_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    for i in 0..4 {
        let mut p = pod(
            &format!("e{i}"),
            json!({}),
            json!({
                "nodeSelector": {"understudy.dev/test": ns.name},
                "tolerations": [{"key": "understudy.dev/test", "operator": "Exists", "effect": "NoSchedule"}],
            }),
        );
        p["spec"]["schedulerName"] = json!(profile);
        create(&pods, p).await;
    }
    let mut placed = vec![];
    for i in 0..4 {
        placed.push(wait_scheduled(&pods, &format!("e{i}"), Duration::from_secs(90)).await);
    }
    let metrics = http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |verb: &str| -> u64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "understudy_scheduler_extender_requests_total{{verb=\"{verb}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (filters, prioritizes, binds) = (count("filter"), count("prioritize"), count("bind"));
    for n in ok.iter().chain([&other]) {
        delete_node(&client, n).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    for node in placed {
        let node = node.unwrap();
        assert!(
            ok.contains(&node),
            "placed on {node}, which only our filter rejects"
        );
    }
    assert!(filters >= 4, "filter calls: {filters}\n{metrics}");
    assert!(prioritizes >= 1, "prioritize calls: {prioritizes}");
    assert!(binds >= 4, "bind calls: {binds}");
    let event = wait_event(&client, &ns.name, "e0", "Scheduled", T)
        .await
        .unwrap();
    assert_eq!(
        event.reporting_controller.as_deref(),
        Some(profile.as_str())
    );
}

/// The PodScheduled=False message of pod `name`, and the note of its newest
/// FailedScheduling Event (newest by last observation), if both exist.
async fn condition_and_newest_event(
    client: &Client,
    pods: &Api<Pod>,
    namespace: &str,
    name: &str,
) -> Result<Option<(String, String)>, String> {
    let Some(pod) = pods.get_opt(name).await.map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let uid = pod.metadata.uid.clone();
    let condition = pod
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .and_then(|c| c.message);
    let newest = pods::events_for(client, namespace, name)
        .await
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("FailedScheduling")
                && e.regarding.as_ref().and_then(|r| r.uid.clone()) == uid
        })
        .max_by_key(|e| {
            e.series
                .as_ref()
                .map(|s| s.last_observed_time.0)
                .or(e.event_time.as_ref().map(|t| t.0))
        })
        .and_then(|e| e.note);
    Ok(condition.zip(newest))
}

/// Until the pod's PodScheduled condition says `needle`; then, within the
/// same deadline, until its newest FailedScheduling Event says the same as
/// the condition. Returns the message.
async fn wait_event_follows_condition(
    client: &Client,
    pods: &Api<Pod>,
    namespace: &str,
    name: &str,
    needle: &str,
) -> Result<String, String> {
    let (_, condition) = pods::wait_unschedulable_with(pods, name, T, needle)
        .await
        .map_err(|e| e.to_string())?;
    let last = std::sync::Mutex::new(None);
    let agreed = wait::until(
        &format!("the newest FailedScheduling Event of {name} to say {condition:?}"),
        T,
        || {
            let last = &last;
            async move {
                let pair = condition_and_newest_event(client, pods, namespace, name).await?;
                let agreed = pair
                    .as_ref()
                    .filter(|(c, e)| c == e && c.contains(needle))
                    .map(|(c, _)| c.clone());
                *last.lock().unwrap() = pair;
                Ok(agreed)
            }
        },
    )
    .await;
    agreed.map_err(|e| {
        let last = last.lock().unwrap();
        format!("{e}; last (condition, newest event): {last:?}")
    })
}

/// A kwok node for one test, as `create_private_node` makes them but
/// labelled `events-test=<owner>` and tainted with `extra_taints` too from
/// its creation (a taint added later would let a pod land first).
async fn create_private_node_with_taints(
    client: &Client,
    name: &str,
    owner: &str,
    cpu: &str,
    extra_taints: Value,
) {
    let mut taints =
        json!([{"key": "understudy.dev/test", "value": owner, "effect": "NoSchedule"}]);
    taints
        .as_array_mut()
        .unwrap()
        .extend(extra_taints.as_array().unwrap().iter().cloned());
    let node: Node = pods::from_json(json!({
        "metadata": {
            "name": name,
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "understudy.dev/test": owner,
                "events-test": owner,
                understudy_e2e::nodes::E2E_LABEL: "true",
            },
            "annotations": {"kwok.x-k8s.io/node": "fake"},
        },
        "spec": {"taints": taints},
        "status": {
            "allocatable": {"cpu": cpu, "memory": "64Gi", "pods": "110"},
            "capacity": {"cpu": cpu, "memory": "64Gi", "pods": "110"},
        },
    }));
    Api::<Node>::all(client.clone())
        .create(&Default::default(), &node)
        .await
        .unwrap_or_else(|e| panic!("creating node {name}: {e}"));
}

async fn set_taints(client: &Client, name: &str, taints: &[k8s_openapi::api::core::v1::Taint]) {
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = json!({"spec": {"taints": taints}});
    nodes
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap_or_else(|e| panic!("setting the taints of {name}: {e}"));
}

/// The "stale FailedScheduling message": a pending pod's newest
/// Event states the reason its PodScheduled condition states after each
/// change under it — a node added (a new reason: an untolerated taint), the
/// taint removed (Insufficient cpu), a pod deleted (anti-affinity). Each
/// change must also retry the pod, or the condition would not move either.
#[tokio::test]
async fn the_newest_failed_scheduling_event_states_the_current_reason() {
    let (client, ns, pods) = setup("evfollow").await;
    let blocker = format!("blocker-{}", ns.name);
    create(&pods, pod("waiter", json!({}), json!({
        "nodeSelector": {"events-test": ns.name},
        "tolerations": [{"key": "understudy.dev/test", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {"app": blocker}},
            "topologyKey": "kubernetes.io/hostname",
        }]}},
        "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "1"}}}],
    })))
    .await;
    let mut steps = vec![];
    steps.push(
        wait_event_follows_condition(
            &client,
            &pods,
            &ns.name,
            "waiter",
            "didn't match Pod's node affinity/selector",
        )
        .await,
    );

    // A node is added: the pod's selector matches it, but a taint repels it.
    let node_name = format!("evfollow-{}", ns.name);
    create_private_node_with_taints(
        &client,
        &node_name,
        &ns.name,
        "1",
        json!([{"key": "understudy.dev/events-blocked", "effect": "NoSchedule"}]),
    )
    .await;
    // Two pods on the node: one takes its CPU, one the pod must not share a
    // node with. Our scheduler places them (they tolerate the taints and
    // select the node) rather than the test setting nodeName: it counts a
    // pod it binds from its own decision on, whereas a pod created bound
    // reaches it on the pod watch, which may lag the node watch — the
    // taint's removal below could then retry the waiter against a node that
    // looks empty, and bind it there.
    for (name, labels, cpu) in [
        ("hog", json!({}), "1"),
        ("marker", json!({"app": blocker}), "0"),
    ] {
        create(
            &pods,
            pod(
                name,
                labels,
                json!({
                    "nodeSelector": {"events-test": ns.name},
                    "tolerations": [
                        {"key": "understudy.dev/test", "operator": "Exists", "effect": "NoSchedule"},
                        {"key": "understudy.dev/events-blocked", "operator": "Exists", "effect": "NoSchedule"},
                    ],
                    "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": cpu}}}],
                }),
            ),
        )
        .await;
        let placed = wait_scheduled(&pods, name, T).await.unwrap();
        assert_eq!(placed, node_name, "{name} is placed on the test's node");
    }
    // No count in the needle: other tests of this binary add tainted nodes
    // of their own at any time, and those count in the message too.
    steps.push(
        wait_event_follows_condition(
            &client,
            &pods,
            &ns.name,
            "waiter",
            "node(s) had untolerated taint(s)",
        )
        .await,
    );

    // The taint is removed: now the CPU is what is missing.
    set_taints(
        &client,
        &node_name,
        &pods::from_json::<Vec<_>>(
            json!([{"key": "understudy.dev/test", "value": ns.name, "effect": "NoSchedule"}]),
        ),
    )
    .await;
    steps.push(
        wait_event_follows_condition(&client, &pods, &ns.name, "waiter", "Insufficient cpu").await,
    );

    // A pod is deleted: the CPU is free, the anti-affinity remains.
    pods.delete("hog", &kube::api::DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    steps.push(
        wait_event_follows_condition(
            &client,
            &pods,
            &ns.name,
            "waiter",
            "didn't match pod anti-affinity rules",
        )
        .await,
    );
    let still_pending = pods
        .get("waiter")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.node_name)
        .is_none();
    delete_node(&client, &node_name).await;
    for step in steps {
        step.unwrap();
    }
    assert!(still_pending, "the pod must still be pending");
}

/// The "Events that outlive their pods": pods of a namespace have
/// ongoing Event series when the namespace is deleted and created again
/// with the same name; when the series would have ended (a private
/// scheduler ends quiet series after 30 s instead of 6 minutes, and a
/// canary pod elsewhere shows when its recorder ended them), no Event about
/// the old pods is written into the new namespace.
#[tokio::test]
async fn a_recreated_namespace_gets_no_events_about_the_old_ones_objects() {
    let (client, canary_ns, canary_pods) = setup("evcanary").await;
    let cluster = cluster();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let name = format!("e2e-evrecreate-{:x}", fastrand::u32(..));
    let new_namespace = || Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            labels: Some(
                [(
                    understudy_e2e::nodes::E2E_LABEL.to_string(),
                    "true".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&Default::default(), &new_namespace())
        .await
        .unwrap();
    wait::accepts_pods(&client, &name, T).await.unwrap();
    let old_pods: Api<Pod> = Api::namespaced(client.clone(), &name);

    let profile = format!("events-{}", canary_ns.name);
    let config_path = std::env::temp_dir().join(format!("{profile}.yaml"));
    std::fs::write(
        &config_path,
        format!(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
             leaderElection: {{leaderElect: false}}\nprofiles: [{{schedulerName: {profile}}}]\n"
        ),
    )
    .unwrap();
    let _scheduler = tokio::process::Command::new(binaries_dir().join("understudy-scheduler"))
        .arg(format!("--config={}", config_path.display()))
        .arg(format!("--kubeconfig={}", cluster.kubeconfig.display()))
        .args([
            "--bind-address=127.0.0.1",
            "--port=0",
            "--extender-port=0",
            "--log-level=warn",
        ])
        .env(understudy_component_base::events::FINISH_AFTER_ENV, "30")
        .kill_on_drop(true)
        .spawn()
        .expect("start understudy-scheduler");
    // The pods select the test's private node (1 CPU) and ask for 2 CPUs:
    // NodeAffinity rejects every other node, NodeResourcesFit this one.
    let owner = canary_ns.name.clone();
    let never = |name: &str| {
        let mut p = pod(
            name,
            json!({}),
            json!({
                "nodeSelector": {"understudy.dev/test": owner},
                "tolerations": [{"key": "understudy.dev/test", "operator": "Exists"}],
                "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                                "resources": {"requests": {"cpu": "2"}}}],
            }),
        );
        p["spec"]["schedulerName"] = json!(profile);
        p
    };
    let mut uids = BTreeSet::new();
    for i in 0..3 {
        let created = create(&old_pods, never(&format!("old-{i}"))).await;
        uids.insert(created.metadata.uid.unwrap());
    }
    create(&canary_pods, never("canary")).await;

    // A node appears, then pods bound to it straight away are deleted,
    // which frees room as far as NodeResourcesFit's queueing hint knows, so
    // the waiting pods are retried without their reason changing: each has
    // a series (count 2 written, later repeats only counted). (Upstream's
    // hints would not retry them on a change they cannot benefit from,
    // such as a label that none of them selects.)
    let node_name = format!("evrecreate-{}", canary_ns.name);
    create_private_node(&client, &node_name, &canary_ns.name, "1", json!({})).await;
    let poke = |round: u32| {
        let canary_pods = canary_pods.clone();
        let node_name = node_name.clone();
        async move {
            let name = format!("poke-{round:x}");
            let mut bound = pod(&name, json!({}), json!({}));
            bound["spec"]["nodeName"] = json!(node_name);
            let bound: Pod = pods::from_json(bound);
            canary_pods
                .create(&Default::default(), &bound)
                .await
                .unwrap();
            canary_pods
                .delete(&name, &kube::api::DeleteParams::default().grace_period(0))
                .await
                .unwrap();
        }
    };
    let series_count = |namespace: String, pod: String| {
        let client = client.clone();
        async move {
            pods::events_for(&client, &namespace, &pod)
                .await
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("FailedScheduling"))
                .filter_map(|e| e.series.map(|s| s.count))
                .max()
                .unwrap_or(0)
        }
    };
    let all_in_series = wait::until("every pod to have a series", T, || {
        let names: Vec<(String, String)> = (0..3)
            .map(|i| (name.clone(), format!("old-{i}")))
            .chain([(canary_ns.name.clone(), "canary".to_string())])
            .collect();
        let series_count = &series_count;
        let poke = &poke;
        async move {
            poke(fastrand::u32(..)).await;
            for (namespace, pod) in names {
                if series_count(namespace, pod).await < 2 {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        }
    })
    .await;

    // The namespace goes, with its pods, and comes back under its name.
    namespaces
        .delete(&name, &kube::api::DeleteParams::background())
        .await
        .unwrap();
    let gone = wait::until(
        "the namespace to be gone",
        Duration::from_secs(120),
        || async {
            Ok(namespaces
                .get_opt(&name)
                .await
                .map_err(|e| e.to_string())?
                .is_none()
                .then_some(()))
        },
    )
    .await;
    namespaces
        .create(&Default::default(), &new_namespace())
        .await
        .unwrap();

    // The canary fails three more times after the namespace is back (a
    // failure per poke: pokes are further apart than its longest backoff,
    // 10 s, and closer than a series' end), then goes quiet, and its
    // recorder ends its series, writing a count of at least 3 observed
    // after the re-creation: by then the old pods' series, quiet since
    // before, would have ended too.
    let recreated = k8s_openapi::jiff::Timestamp::now();
    let canary_events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), &canary_ns.name);
    let pokes = std::sync::Mutex::new((0u32, tokio::time::Instant::now()));
    let canary_ended = wait::until(
        "the canary's series to end after the re-creation",
        Duration::from_secs(150),
        || async {
            let due = {
                let mut pokes = pokes.lock().unwrap();
                let due =
                    pokes.0 < 3 && (pokes.0 == 0 || pokes.1.elapsed() >= Duration::from_secs(12));
                if due {
                    *pokes = (pokes.0 + 1, tokio::time::Instant::now());
                }
                due
            };
            if due {
                poke(fastrand::u32(..)).await;
            }
            let events = canary_events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            Ok(events
                .items
                .into_iter()
                .any(|e| {
                    e.reason.as_deref() == Some("FailedScheduling")
                        && e.series
                            .is_some_and(|s| s.count >= 3 && s.last_observed_time.0 > recreated)
                })
                .then_some(()))
        },
    )
    .await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &name);
    let about_old: Vec<_> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .and_then(|r| r.uid.as_ref())
                .is_some_and(|uid| uids.contains(uid))
        })
        .map(|e| (e.metadata.name, e.reason, e.series.map(|s| s.count)))
        .collect();

    delete_node(&client, &node_name).await;
    let _ = namespaces
        .delete(&name, &kube::api::DeleteParams::background())
        .await;
    let _ = std::fs::remove_file(config_path);
    all_in_series.unwrap();
    gone.unwrap();
    canary_ended.unwrap();
    assert!(
        about_old.is_empty(),
        "Events about the old namespace's pods in the new one: {about_old:?}"
    );
}
