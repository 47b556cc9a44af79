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
