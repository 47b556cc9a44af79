//! The saturated differential of issue 16: one seeded scenario — 900 pods of
//! mixed shapes (sizes, priorities, anti-affinity, topology spread) in three
//! bursts onto 50 private kwok nodes, more than they hold — run first with
//! kube-scheduler, then with understudy-scheduler, on the same nodes in the
//! same cluster. It compares what a user sees: scheduling attempts,
//! FailedScheduling Events, time to settle, and the pods left pending.
//! Attempts and Events are compared per pod waiting in each step, since
//! how many pods wait varies from run to run of either scheduler.
//!
//! After the bursts, while ~180 pods wait, the cluster changes in the ways
//! upstream's queueing hints tell apart: pods bound by someone else and node
//! labels no pod selects on (neither can make a waiting pod fit: upstream
//! retries none), then pods deleted, a taint lifted and a node added under
//! maintenance, then opened (each but the added node frees room for some of
//! the waiting pods: upstream retries those whose rejecting plugins the
//! change concerns; the added node retries them all, as upstream does for a
//! node whose allocatable would fit them, and they fail on its taint).
//!
//! Both schedulers run here as processes with a profile of this test's own,
//! so their metrics count this scenario's pods and nothing else, and both
//! use the lab's `system:kube-scheduler` identity and the same client rates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use understudy_e2e::bench::promtext;
use understudy_e2e::fixture::{Cluster, ClusterSpec, TestNamespace, binaries_dir};
use understudy_e2e::kwok_stages::NO_KUBELET_LABEL;
use understudy_e2e::nodes::{E2E_LABEL, HOSTNAME_LABEL, KWOK_ANNOTATION};
use understudy_e2e::pods::from_json;
use understudy_e2e::{probe, wait};

const NODES: usize = 50;
/// Nodes `NODES - TAINTED ..` start under a maintenance taint no pod
/// tolerates; the scenario lifts it.
const TAINTED: usize = 5;
const BURSTS: usize = 3;
const PER_BURST: usize = 300;
const SEED: u64 = 16;
/// A zone key of this test's own: the spread pods count only its nodes.
const ZONE_KEY: &str = "understudy.dev/saturated-zone";
const ZONES: usize = 5;
const OWNER_KEY: &str = "understudy.dev/test";
const MAINTENANCE_KEY: &str = "understudy.dev/maintenance";
/// A node label no pod of the scenario selects on.
const RACK_KEY: &str = "understudy.dev/saturated-rack";
/// Pods bound without a scheduler: their name prefix and `app` label.
const AGENT: &str = "agent";
const NODE_CPU: &str = "8";
const NODE_MEMORY: &str = "24Gi";
/// Both schedulers' client rates: binds and Events are not held back by
/// the defaults (50/100 for kube-scheduler), and neither has the faster client.
const QPS: u32 = 200;
/// No attempt for this long, with nothing queued to run: settled.
const QUIET: Duration = Duration::from_secs(3);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);
const T: Duration = Duration::from_secs(60);

fn cluster() -> &'static Cluster {
    Cluster::shared(ClusterSpec {
        nodes: 0,
        understudies: "none",
        start_understudies: false,
        real_nodes: 0,
        kwok: true,
        backend: None,
        proxy_mode: Default::default(),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Plain,
    /// Spread over the test's zones with maxSkew 1, DoNotSchedule.
    Spread,
    /// At most one per node (required anti-affinity on the hostname).
    Anti,
}

#[derive(Debug)]
struct Shape {
    name: &'static str,
    milli_cpu: u64,
    memory_mi: u64,
    /// Relative share among the pods of a burst.
    weight: u32,
    kind: Kind,
}

/// Demand is about 1.3× the CPU and 1.1× the memory of the 45 untainted
/// nodes: the last burst leaves ~180 pods pending, the steps after it place
/// about 120 of them.
const SHAPES: &[Shape] = &[
    Shape {
        name: "s",
        milli_cpu: 200,
        memory_mi: 256,
        weight: 36,
        kind: Kind::Plain,
    },
    Shape {
        name: "m",
        milli_cpu: 500,
        memory_mi: 1024,
        weight: 22,
        kind: Kind::Plain,
    },
    Shape {
        name: "l",
        milli_cpu: 1000,
        memory_mi: 2048,
        weight: 13,
        kind: Kind::Plain,
    },
    Shape {
        name: "xl",
        milli_cpu: 2000,
        memory_mi: 4096,
        weight: 7,
        kind: Kind::Plain,
    },
    Shape {
        name: "mem",
        milli_cpu: 100,
        memory_mi: 6144,
        weight: 7,
        kind: Kind::Plain,
    },
    Shape {
        name: "spread",
        milli_cpu: 300,
        memory_mi: 512,
        weight: 5,
        kind: Kind::Spread,
    },
    Shape {
        name: "anti",
        milli_cpu: 500,
        memory_mi: 512,
        weight: 10,
        kind: Kind::Anti,
    },
];

/// One pod of the scenario.
#[derive(Clone, Debug)]
struct PlannedPod {
    name: String,
    shape: &'static Shape,
    high_priority: bool,
}

/// The seeded plan: `BURSTS` bursts of `PER_BURST` pods. The first burst
/// has no anti-affinity pods and fits easily, so every one of its pods is
/// bound under either scheduler and the pods deleted later are the same.
fn plan() -> Vec<Vec<PlannedPod>> {
    let mut rng = fastrand::Rng::with_seed(SEED);
    (0..BURSTS)
        .map(|burst| {
            let shapes: Vec<&'static Shape> = SHAPES
                .iter()
                .filter(|s| burst > 0 || s.kind != Kind::Anti)
                .collect();
            let total: u32 = shapes.iter().map(|s| s.weight).sum();
            (0..PER_BURST)
                .map(|i| {
                    let mut pick = rng.u32(0..total);
                    let shape = shapes
                        .iter()
                        .find(|s| {
                            if pick < s.weight {
                                true
                            } else {
                                pick -= s.weight;
                                false
                            }
                        })
                        .expect("a pick below the total weight");
                    PlannedPod {
                        name: format!("{}-b{burst}-{i:03}", shape.name),
                        shape,
                        high_priority: rng.u32(0..5) == 0,
                    }
                })
                .collect()
        })
        .collect()
}

fn shape_of(pod_name: &str) -> &str {
    pod_name.split('-').next().unwrap_or_default()
}

/// The pods deleted mid-run: every fifth of the first burst (all bound).
fn deleted(plan: &[Vec<PlannedPod>]) -> Vec<String> {
    plan[0].iter().step_by(5).map(|p| p.name.clone()).collect()
}

fn pod(planned: &PlannedPod, profile: &str, owner: &str, high_class: &str) -> Pod {
    let shape = planned.shape;
    let mut spec = json!({
        "schedulerName": profile,
        "nodeSelector": {OWNER_KEY: owner},
        "tolerations": [{"key": OWNER_KEY, "operator": "Exists", "effect": "NoSchedule"}],
        "containers": [{
            "name": "c",
            "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {
                "cpu": format!("{}m", shape.milli_cpu),
                "memory": format!("{}Mi", shape.memory_mi),
            }},
        }],
    });
    if planned.high_priority {
        spec["priorityClassName"] = json!(high_class);
    }
    let selector = json!({"matchLabels": {"app": shape.name}});
    match shape.kind {
        Kind::Plain => {}
        Kind::Spread => {
            spec["topologySpreadConstraints"] = json!([{
                "maxSkew": 1,
                "topologyKey": ZONE_KEY,
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": selector,
            }]);
        }
        Kind::Anti => {
            spec["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": selector,
                "topologyKey": HOSTNAME_LABEL,
            }]}});
        }
    }
    from_json(json!({
        "metadata": {
            "name": planned.name,
            // No simulated kubelet status writes, as in upstream's scheduler_perf:
            // they would add pod updates unrelated to scheduling.
            "labels": {"app": shape.name, NO_KUBELET_LABEL: "none"},
        },
        "spec": spec,
    }))
}

fn node_name(i: usize, owner: &str) -> String {
    format!("sat{i:02}-{owner}")
}

fn taints(owner: &str, maintenance: bool) -> Value {
    let mut taints = vec![json!({"key": OWNER_KEY, "value": owner, "effect": "NoSchedule"})];
    if maintenance {
        taints.push(json!({"key": MAINTENANCE_KEY, "value": "true", "effect": "NoSchedule"}));
    }
    Value::Array(taints)
}

async fn create_node(client: &Client, i: usize, owner: &str, maintenance: bool) {
    let name = node_name(i, owner);
    let capacity = json!({"cpu": NODE_CPU, "memory": NODE_MEMORY, "pods": "110"});
    let node: Node = from_json(json!({
        "metadata": {
            "name": name,
            "labels": {
                "type": "kwok",
                HOSTNAME_LABEL: name,
                OWNER_KEY: owner,
                E2E_LABEL: "true",
                ZONE_KEY: format!("zone-{}", i % ZONES),
            },
            "annotations": {KWOK_ANNOTATION: "fake"},
        },
        "spec": {"taints": taints(owner, maintenance)},
        "status": {"allocatable": capacity, "capacity": capacity},
    }));
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap_or_else(|e| panic!("creating node {name}: {e}"));
}

/// Merge-patches the test's nodes `range` with `patch(i)`.
async fn patch_nodes(
    client: &Client,
    owner: &str,
    range: std::ops::Range<usize>,
    patch: impl Fn(usize) -> Value,
    what: &str,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    for i in range {
        nodes
            .patch(
                &node_name(i, owner),
                &PatchParams::default(),
                &Patch::Merge(&patch(i)),
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
}

async fn set_maintenance(client: &Client, owner: &str, on: bool) {
    let patch = |_| json!({"spec": {"taints": taints(owner, on)}});
    let what = "setting the maintenance taint";
    patch_nodes(client, owner, NODES - TAINTED..NODES, patch, what).await;
}

/// Until a (consistent) list shows no node of the test with the maintenance
/// taint: the apiserver's watch cache has every untaint by then.
async fn maintenance_gone(client: &Client, owner: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let params = ListParams::default().labels(&format!("{OWNER_KEY}={owner}"));
    wait::until("the maintenance taints gone", T, || {
        let (nodes, params) = (nodes.clone(), params.clone());
        async move {
            let list = nodes.list(&params).await.map_err(|e| e.to_string())?;
            let tainted = list.items.iter().any(|n| {
                n.spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .is_some_and(|t| t.iter().any(|t| t.key == MAINTENANCE_KEY))
            });
            Ok((!tainted).then_some(()))
        }
    })
    .await
    .unwrap();
}

/// Gives 10 nodes a label no pod selects on (a rack, say).
async fn relabel(client: &Client, owner: &str) {
    let patch = |i| json!({"metadata": {"labels": {RACK_KEY: format!("rack-{}", i % 3)}}});
    patch_nodes(client, owner, 0..10, patch, "labelling a node").await;
}

async fn unlabel(client: &Client, owner: &str) {
    let patch = |_| json!({"metadata": {"labels": {RACK_KEY: null}}});
    patch_nodes(client, owner, 0..10, patch, "unlabelling a node").await;
}

/// Until the test's first `count` nodes are Ready (without the lifecycle
/// controller's not-ready taint) and the node after them is gone.
async fn nodes_ready(client: &Client, owner: &str, count: usize) {
    let nodes: Api<Node> = Api::all(client.clone());
    let params = ListParams::default().labels(&format!("{OWNER_KEY}={owner}"));
    wait::until(&format!("{count} Ready nodes of the test"), T, || {
        let (nodes, params) = (nodes.clone(), params.clone());
        async move {
            let list = nodes.list(&params).await.map_err(|e| e.to_string())?;
            let ready = list.items.iter().filter(|n| wait::node_is_ready(n)).count();
            Ok((ready == count && list.items.len() == count).then_some(()))
        }
    })
    .await
    .unwrap();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Upstream,
    Understudy,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Self::Upstream => "kube-scheduler",
            Self::Understudy => "understudy",
        }
    }
}

/// A scheduler process of the test, killed when dropped.
struct Scheduler {
    child: tokio::process::Child,
    metrics_url: String,
    profile: String,
}

/// Where the lab keeps the `system:kube-scheduler` kubeconfig and the
/// upstream binaries; an external cluster's admin kubeconfig otherwise.
fn scheduler_kubeconfig(cluster: &Cluster) -> PathBuf {
    match &cluster.local {
        Some(state) => state.state_dir.join("kubeconfigs/scheduler.yaml"),
        None => cluster.kubeconfig.clone(),
    }
}

fn kube_scheduler_binary(cluster: &Cluster) -> PathBuf {
    match &cluster.local {
        Some(state) => state.toolchain_dir.join("kube-scheduler"),
        None => understudy_e2e::toolchain::Toolchain::locate()
            .expect("the upstream toolchain")
            .bin("kube-scheduler"),
    }
}

fn log_file(cluster: &Cluster, dir: &Path, name: &str) -> std::fs::File {
    let dir = cluster
        .local
        .as_ref()
        .map_or(dir.to_path_buf(), |s| s.logs_dir());
    std::fs::File::create(dir.join(format!("{name}.log"))).expect("a log file")
}

impl Scheduler {
    async fn start(side: Side, cluster: &Cluster, dir: &Path, owner: &str) -> Self {
        let kubeconfig = scheduler_kubeconfig(cluster);
        let port = understudy_e2e::controlplane::free_port().unwrap();
        let profile = format!("{}-{owner}", side.label());
        let config = dir.join(format!("{}.yaml", side.label()));
        std::fs::write(
            &config,
            format!(
                "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n\
                 clientConnection: {{kubeconfig: {kc}, qps: {QPS}, burst: {QPS}}}\n\
                 leaderElection: {{leaderElect: false}}\n\
                 profiles: [{{schedulerName: {profile}}}]\n",
                kc = kubeconfig.display()
            ),
        )
        .unwrap();
        let log = log_file(cluster, dir, &format!("saturated-{}", side.label()));
        let (program, args, scheme): (PathBuf, Vec<String>, &str) = match side {
            Side::Upstream => (
                kube_scheduler_binary(cluster),
                vec![
                    format!("--config={}", config.display()),
                    format!("--authentication-kubeconfig={}", kubeconfig.display()),
                    format!("--authorization-kubeconfig={}", kubeconfig.display()),
                    "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics".into(),
                    "--bind-address=127.0.0.1".into(),
                    format!("--secure-port={port}"),
                    "--v=0".into(),
                ],
                "https",
            ),
            Side::Understudy => (
                binaries_dir().join("understudy-scheduler"),
                vec![
                    format!("--config={}", config.display()),
                    format!("--kubeconfig={}", kubeconfig.display()),
                    "--bind-address=127.0.0.1".into(),
                    format!("--port={port}"),
                    "--extender-port=0".into(),
                    "--leader-elect=false".into(),
                    "--log-level=warn".into(),
                ],
                "http",
            ),
        };
        let child = tokio::process::Command::new(&program)
            .args(&args)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let http = probe::http_client();
        let ready = format!("{scheme}://127.0.0.1:{port}/readyz");
        wait::until(&format!("{} ready", side.label()), T, || async {
            Ok(probe::healthy(&http, &ready).await.then_some(()))
        })
        .await
        .unwrap();
        Self {
            child,
            metrics_url: format!("{scheme}://127.0.0.1:{port}/metrics"),
            profile,
        }
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the process: what the watch
    /// sends meanwhile waits in its connection.
    fn hold(&self, stopped: bool) {
        use nix::sys::signal::{Signal, kill};
        let pid = self.child.id().expect("the scheduler is running");
        let signal = if stopped {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        kill(nix::unistd::Pid::from_raw(pid as i32), signal)
            .unwrap_or_else(|e| panic!("{signal} to the scheduler: {e}"));
    }

    async fn metrics_text(&self) -> Result<String, String> {
        probe::http_client()
            .get(&self.metrics_url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())
    }

    /// Pods moved into a queue so far, by the event that moved them
    /// (`scheduler_queue_incoming_pods_total`, summed over queues): which
    /// cluster events retried how many pods.
    async fn moves(&self) -> Result<BTreeMap<String, u64>, String> {
        let text = self.metrics_text().await?;
        let mut moves = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("scheduler_queue_incoming_pods_total{") else {
                continue;
            };
            let event = rest
                .split_once("event=\"")
                .and_then(|(_, after)| after.split_once('"'))
                .map(|(event, _)| event.to_string());
            let value = rest
                .rsplit_once(' ')
                .and_then(|(_, v)| v.parse::<f64>().ok());
            if let (Some(event), Some(value)) = (event, value) {
                *moves.entry(event).or_default() += value as u64;
            }
        }
        Ok(moves)
    }

    async fn metrics(&self) -> Result<Metrics, String> {
        let text = self.metrics_text().await?;
        let profile = format!("profile=\"{}\"", self.profile);
        let attempts = |result: &str| {
            promtext::sum(
                &text,
                "scheduler_schedule_attempts_total",
                &[&profile, &format!("result=\"{result}\"")],
            ) as u64
        };
        let queued = |queue: &str| {
            promtext::sum(
                &text,
                "scheduler_pending_pods",
                &[&format!("queue=\"{queue}\"")],
            ) as u64
        };
        Ok(Metrics {
            scheduled: attempts("scheduled"),
            unschedulable: attempts("unschedulable"),
            error: attempts("error"),
            queued: queued("active") + queued("backoff"),
        })
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Metrics {
    scheduled: u64,
    unschedulable: u64,
    error: u64,
    /// Pods in the active and backoff queues: due for an attempt.
    queued: u64,
}

impl Metrics {
    fn attempts(&self) -> u64 {
        self.scheduled + self.unschedulable + self.error
    }
}

/// Whether every pod of `ns` has been decided: bound, or reported
/// unschedulable in its PodScheduled condition.
async fn all_decided(pods: &Api<Pod>) -> Result<bool, String> {
    let list = pods
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(list.items.iter().all(|p| {
        let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        let refused = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "PodScheduled" && c.status == "False")
            });
        bound || refused
    }))
}

/// Until the scheduler is idle: nothing due in its queues, no attempt for
/// `QUIET`, and every pod decided. Returns the time from `start` to its
/// last attempt.
async fn settle(scheduler: &Scheduler, pods: &Api<Pod>, start: Instant, what: &str) -> Duration {
    let deadline = start + SETTLE_TIMEOUT;
    let mut last = scheduler.metrics().await.ok();
    let mut last_change = Instant::now();
    loop {
        let now = scheduler.metrics().await.ok();
        if now.map(|m| m.attempts()) != last.map(|m| m.attempts()) {
            last_change = Instant::now();
        }
        last = now;
        let idle = last.is_some_and(|m| m.queued == 0) && last_change.elapsed() >= QUIET;
        if idle && all_decided(pods).await.unwrap_or(false) {
            return last_change.saturating_duration_since(start);
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} not settled after {SETTLE_TIMEOUT:?} (metrics {last:?})",
            scheduler.profile
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// FailedScheduling Events of `ns` recorded by `controller`: the number of
/// Event objects and the occurrences they state (series count, or 1).
async fn failed_scheduling(events: &Api<Event>, controller: &str) -> Result<(u64, u64), String> {
    let list = events
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    let mine = list.items.iter().filter(|e| {
        e.reason.as_deref() == Some("FailedScheduling")
            && e.reporting_controller.as_deref() == Some(controller)
    });
    Ok(mine.fold((0, 0), |(objects, occurrences), e| {
        let count = e
            .series
            .as_ref()
            .map(|s| s.count as u64)
            .or(e.deprecated_count.map(|c| c as u64))
            .unwrap_or(1)
            .max(1);
        (objects + 1, occurrences + count)
    }))
}

/// Until the Events stop changing for `QUIET`: they are written after the
/// attempts, in the background.
async fn settled_events(events: &Api<Event>, controller: &str) -> (u64, u64) {
    let deadline = Instant::now() + T;
    let mut last = None;
    let mut since = Instant::now();
    loop {
        let now = failed_scheduling(events, controller).await.ok();
        if now != last {
            (last, since) = (now, Instant::now());
        } else if let Some(counts) = now.filter(|_| since.elapsed() >= QUIET) {
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "{controller}'s Events still changing after {T:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_pods_gone(pods: &Api<Pod>, names: Option<&BTreeSet<String>>) {
    wait::until("deleted pods to be gone", T, || async {
        let list = pods
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let left = list
            .items
            .iter()
            .filter(|p| names.is_none_or(|n| n.contains(&p.name_any())))
            .count();
        Ok((left == 0).then_some(()))
    })
    .await
    .unwrap();
}

/// One step of the scenario under one scheduler.
struct Step {
    name: &'static str,
    /// Scenario pods waiting to be placed during the step: those pending
    /// when it began and those it created.
    waiting: usize,
    attempts: u64,
    /// Attempts that found no node.
    unschedulable: u64,
    /// From the step's start to its last attempt.
    settle: Duration,
    /// Scenario pods pending once it settled.
    pending: usize,
    /// Pods moved to a queue during the step, by event.
    moves: BTreeMap<String, u64>,
}

/// What one scheduler did with the scenario.
struct Outcome {
    side: Side,
    /// Per step: its name, the attempts it took, its time to settle.
    steps: Vec<Step>,
    metrics: Metrics,
    events: (u64, u64),
    settle: Duration,
    placement: Placement,
    wall: Duration,
}

struct Scenario<'a> {
    cluster: &'static Cluster,
    client: Client,
    owner: &'a str,
    high_class: &'a str,
    dir: &'a Path,
    plan: Vec<Vec<PlannedPod>>,
}

impl Scenario<'_> {
    async fn create_burst(&self, pods: &Api<Pod>, burst: &[PlannedPod], profile: &str) {
        let results: Vec<kube::Result<Pod>> = futures::stream::iter(burst)
            .map(|p| {
                let pod = pod(p, profile, self.owner, self.high_class);
                async move { pods.create(&PostParams::default(), &pod).await }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        for r in results {
            r.unwrap_or_else(|e| panic!("creating a pod: {e}"));
        }
    }

    /// One pod per node, bound at creation (as another scheduler's or a
    /// static pod's): no resources, a label nothing selects.
    async fn bind_agents(&self, pods: &Api<Pod>) {
        let results: Vec<kube::Result<Pod>> = futures::stream::iter(0..NODES)
            .map(|i| {
                let pod: Pod = from_json(json!({
                    "metadata": {
                        "name": format!("{AGENT}-{i:02}"),
                        "labels": {"app": AGENT, NO_KUBELET_LABEL: "none"},
                    },
                    "spec": {
                        "nodeName": node_name(i, self.owner),
                        "tolerations": [{"operator": "Exists"}],
                        "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
                    },
                }));
                async move { pods.create(&PostParams::default(), &pod).await }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for r in results {
            r.unwrap_or_else(|e| panic!("creating an agent pod: {e}"));
        }
    }

    async fn run(&self, side: Side) -> Outcome {
        let began = Instant::now();
        let client = &self.client;
        let pods: Api<Pod> = Api::namespaced(client.clone(), self.owner);
        let scheduler = Scheduler::start(side, self.cluster, self.dir, self.owner).await;
        let profile = scheduler.profile.clone();
        let mut steps = vec![];
        let mut before = scheduler.metrics().await.unwrap();
        let mut moved_before = scheduler.moves().await.unwrap();
        let first = before;
        let mut pending_before = 0;
        let mut step = async |name: &'static str, created: usize, start: Instant| {
            let took = settle(&scheduler, &pods, start, name).await;
            let now = scheduler.metrics().await.unwrap();
            let moved = scheduler.moves().await.unwrap();
            let moves = moved
                .iter()
                .map(|(event, n)| (event.clone(), n - moved_before.get(event).unwrap_or(&0)))
                .filter(|(_, n)| *n > 0)
                .collect();
            let pending = pods
                .list(&ListParams::default().fields("spec.nodeName="))
                .await
                .unwrap()
                .items
                .iter()
                .filter(|p| !p.name_any().starts_with(AGENT))
                .count();
            steps.push(Step {
                name,
                waiting: pending_before + created,
                attempts: now.attempts() - before.attempts(),
                unschedulable: now.unschedulable - before.unschedulable,
                settle: took,
                pending,
                moves,
            });
            before = now;
            moved_before = moved;
            pending_before = pending;
        };

        for (i, burst) in self.plan.iter().enumerate() {
            let start = Instant::now();
            self.create_burst(&pods, burst, &profile).await;
            step(["burst 1", "burst 2", "burst 3"][i], burst.len(), start).await;
        }

        // Cluster changes that can make no pending pod fit, which upstream's
        // hints filter out: pods bound by someone else (no requests, no
        // label any pod's affinity or spread selects), and node labels no
        // pod selects on.
        let start = Instant::now();
        self.bind_agents(&pods).await;
        step("50 pods bound elsewhere", 0, start).await;

        let start = Instant::now();
        relabel(client, self.owner).await;
        step("relabel 10 nodes", 0, start).await;

        let start = Instant::now();
        let gone: BTreeSet<String> = deleted(&self.plan).into_iter().collect();
        // All at once, as a scale-down would: deletions spread over a
        // second would measure each scheduler's speed between them (a pod
        // retried and failed before the next deletion is moved again by
        // it), not which events retry which pods. Sixty requests still
        // reach the watch over some hundreds of milliseconds, more on a
        // busy machine (a run had ours retry the waiting pods three times
        // over, 555 attempts against upstream's 183), so the scheduler is
        // held (SIGSTOP) until every deletion is done and gets them as one
        // burst, whichever scheduler it is.
        scheduler.hold(true);
        futures::future::join_all(gone.iter().map(|name| {
            let pods = pods.clone();
            async move {
                pods.delete(name, &DeleteParams::default().grace_period(0))
                    .await
                    .unwrap_or_else(|e| panic!("deleting {name}: {e}"));
            }
        }))
        .await;
        wait_pods_gone(&pods, Some(&gone)).await;
        scheduler.hold(false);
        step("delete 60 bound", 0, start).await;

        // Five patches in a row, as one burst for the same reason as the
        // deletions: a pod retried and failed between two of them is moved
        // again by the next (runs had ours retry the waiting pods twice
        // over, 225 attempts against upstream's 128).
        let start = Instant::now();
        scheduler.hold(true);
        set_maintenance(client, self.owner, false).await;
        maintenance_gone(client, self.owner).await;
        scheduler.hold(false);
        step("untaint 5 nodes", 0, start).await;

        // The node comes in under maintenance and is opened once Ready. A
        // new node carries the not-ready taint until the node lifecycle
        // controller sees it Ready, and its removal retries the pods tried
        // against the node before it (TaintToleration's hint): how many
        // that is depends only on each scheduler's speed against
        // kube-controller-manager's (25 vs 88 pods, and 52 vs 0, in two
        // runs), not on which events retry which pods. Under maintenance,
        // that removal helps no pod, for both.
        let start = Instant::now();
        create_node(client, NODES, self.owner, true).await;
        nodes_ready(client, self.owner, NODES + 1).await;
        step("add a node in maintenance", 0, start).await;

        let start = Instant::now();
        let patch = |_| json!({"spec": {"taints": taints(self.owner, false)}});
        let new_node = NODES..NODES + 1;
        patch_nodes(client, self.owner, new_node, patch, "opening the new node").await;
        step("open the new node", 0, start).await;

        let metrics = scheduler.metrics().await.unwrap();
        let metrics = Metrics {
            scheduled: metrics.scheduled - first.scheduled,
            unschedulable: metrics.unschedulable - first.unschedulable,
            error: metrics.error - first.error,
            queued: metrics.queued,
        };
        let events = settled_events(&Api::namespaced(client.clone(), self.owner), &profile).await;
        scheduler.stop().await;

        let placement = self.final_state(&pods).await;
        let settle = steps.iter().map(|s| s.settle).sum();
        let outcome = Outcome {
            side,
            steps,
            metrics,
            events,
            settle,
            placement,
            wall: began.elapsed(),
        };

        // The next run starts from the same cluster: no pods, the five
        // nodes under maintenance again, the added node gone.
        pods.delete_collection(
            &DeleteParams::default().grace_period(0),
            &ListParams::default(),
        )
        .await
        .unwrap();
        wait_pods_gone(&pods, None).await;
        let nodes: Api<Node> = Api::all(client.clone());
        let _ = nodes
            .delete(&node_name(NODES, self.owner), &DeleteParams::default())
            .await;
        set_maintenance(client, self.owner, true).await;
        unlabel(client, self.owner).await;
        nodes_ready(client, self.owner, NODES).await;
        outcome
    }

    async fn final_state(&self, pods: &Api<Pod>) -> Placement {
        async fn list<K>(api: Api<K>) -> Vec<K>
        where
            K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
        {
            api.list(&ListParams::default()).await.unwrap().items
        }
        let all_pods: Vec<Pod> = list(Api::all(self.client.clone())).await;
        let nodes: Vec<Node> = list(Api::all(self.client.clone())).await;
        let namespaces: Vec<Namespace> = list(Api::all(self.client.clone())).await;
        let mut placement = Placement::default();
        for p in list(pods.clone()).await {
            let name = p.name_any();
            let Some(shape) = SHAPES.iter().find(|s| s.name == shape_of(&name)) else {
                continue; // an agent
            };
            if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                *placement.bound.entry(shape.name).or_default() += 1;
                placement.milli_cpu += shape.milli_cpu;
                placement.memory_mi += shape.memory_mi;
            } else {
                *placement.pending.entry(shape.name).or_default() += 1;
            }
        }
        placement.pending_that_fit =
            understudy_scheduler::checker::pending_that_fit(&nodes, &all_pods, &namespaces, |p| {
                p.metadata.namespace.as_deref() == Some(self.owner)
            })
            .into_iter()
            .map(|v| format!("{} (fits {})", v.pod, v.node))
            .collect();
        placement
    }
}

/// Where the scenario's pods ended up.
#[derive(Default)]
struct Placement {
    bound: BTreeMap<&'static str, u64>,
    pending: BTreeMap<&'static str, u64>,
    /// The requests of the bound pods: the room they fill.
    milli_cpu: u64,
    memory_mi: u64,
    /// Pending pods that a node would take in the final state.
    pending_that_fit: Vec<String>,
}

impl Placement {
    fn pending_total(&self) -> u64 {
        self.pending.values().sum()
    }
}

fn within(ours: u64, theirs: u64) -> bool {
    // 10 % of upstream's figure, and never less than 5: with a few dozen of
    // anything, one Event or attempt more is timing (a bind landing before
    // or after a pod's retry), not behaviour.
    let slack = (theirs as f64 * 0.1).max(5.0);
    (ours as f64 - theirs as f64).abs() <= slack
}

/// What understudy-scheduler's run would count at kube-scheduler's rates:
/// for each step, the pods waiting in ours times upstream's count `of` per
/// pod waiting in its own run. Which pods get the last room differs from
/// run to run of either scheduler (ties between nodes are broken at random,
/// the 60 deletions reach the watch interleaved with attempts), so one run
/// leaves more pods waiting than another, and every later step retries
/// each of them; raw totals compound that. Per waiting pod, a step's
/// attempts and failures are what the queueing hints decide.
fn at_upstream_rates(up: &Outcome, us: &Outcome, of: impl Fn(&Step) -> u64) -> u64 {
    up.steps
        .iter()
        .zip(&us.steps)
        .filter(|(a, _)| a.waiting > 0)
        .map(|(a, b)| b.waiting as f64 * of(a) as f64 / a.waiting as f64)
        .sum::<f64>()
        .round() as u64
}

/// FailedScheduling Event occurrences at upstream's rates: its failures per
/// waiting pod, then its occurrences per failure.
fn events_at_upstream_rates(up: &Outcome, us: &Outcome) -> u64 {
    let failures = at_upstream_rates(up, us, |s| s.unschedulable);
    if up.metrics.unschedulable == 0 {
        return 0;
    }
    (failures as f64 * up.events.1 as f64 / up.metrics.unschedulable as f64).round() as u64
}

fn ratio(ours: u64, theirs: u64) -> String {
    if theirs == 0 {
        "-".into()
    } else {
        format!("{:.2}×", ours as f64 / theirs as f64)
    }
}

fn report(up: &Outcome, us: &Outcome) -> String {
    let mut out = format!(
        "saturated differential: {NODES} nodes (+1 added, {} untainted mid-run), {} pods, seed {SEED}\n\
         | | {} | {} | ratio |\n|---|---|---|---|\n",
        TAINTED + 1,
        BURSTS * PER_BURST,
        up.side.label(),
        us.side.label()
    );
    let mut row = |name: &str, a: u64, b: u64| {
        out.push_str(&format!("| {name} | {a} | {b} | {} |\n", ratio(b, a)));
    };
    row("attempts", up.metrics.attempts(), us.metrics.attempts());
    row("  scheduled", up.metrics.scheduled, us.metrics.scheduled);
    row(
        "  unschedulable",
        up.metrics.unschedulable,
        us.metrics.unschedulable,
    );
    row("  error", up.metrics.error, us.metrics.error);
    for (a, b) in up.steps.iter().zip(&us.steps) {
        row(&format!("  attempts in {}", a.name), a.attempts, b.attempts);
    }
    for (a, b) in up.steps.iter().zip(&us.steps) {
        let events: BTreeSet<&String> = a.moves.keys().chain(b.moves.keys()).collect();
        for event in events {
            let n = |s: &Step| s.moves.get(event).copied().unwrap_or(0);
            row(&format!("  moved by {event} in {}", a.name), n(a), n(b));
        }
    }
    for (a, b) in up.steps.iter().zip(&us.steps) {
        row(
            &format!("  pending after {}", a.name),
            a.pending as u64,
            b.pending as u64,
        );
    }
    for (a, b) in up.steps.iter().zip(&us.steps) {
        row(
            &format!("  waiting in {}", a.name),
            a.waiting as u64,
            b.waiting as u64,
        );
    }
    row(
        "attempts at upstream's rates per waiting pod",
        at_upstream_rates(up, us, |s| s.attempts),
        us.metrics.attempts(),
    );
    row("FailedScheduling occurrences", up.events.1, us.events.1);
    row(
        "FailedScheduling occurrences at upstream's rates per waiting pod",
        events_at_upstream_rates(up, us),
        us.events.1,
    );
    row("FailedScheduling Event objects", up.events.0, us.events.0);
    let (a, b) = (&up.placement, &us.placement);
    row("pending at the end", a.pending_total(), b.pending_total());
    row("bound CPU (m)", a.milli_cpu, b.milli_cpu);
    row("bound memory (Mi)", a.memory_mi, b.memory_mi);
    row(
        "time to settle (ms)",
        up.settle.as_millis() as u64,
        us.settle.as_millis() as u64,
    );
    for (a, b) in up.steps.iter().zip(&us.steps) {
        row(
            &format!("  settle {} (ms)", a.name),
            a.settle.as_millis() as u64,
            b.settle.as_millis() as u64,
        );
    }
    for shape in SHAPES.iter().map(|s| s.name) {
        let count = |p: &Placement, of: &str| match of {
            "bound" => p.bound.get(shape).copied().unwrap_or(0),
            _ => p.pending.get(shape).copied().unwrap_or(0),
        };
        for of in ["bound", "pending"] {
            row(
                &format!("{shape}: {of}"),
                count(&up.placement, of),
                count(&us.placement, of),
            );
        }
    }
    out.push_str(&format!(
        "wall time per run: {:.1} s / {:.1} s\n",
        up.wall.as_secs_f64(),
        us.wall.as_secs_f64()
    ));
    out
}

#[tokio::test]
async fn saturated_scenario_attempts_events_and_pending_as_kube_schedulers() {
    let cluster = cluster();
    let client = cluster.client().await;
    let ns = TestNamespace::create(cluster, &client, "saturated").await;
    let owner = ns.name.as_str();
    let dir = tempfile::tempdir().unwrap();

    // Priority orders the queues; preemption is off (`Never`) so that every
    // pod the scenario creates stays: which victims each scheduler picks is
    // the preemption e2e's subject, and victims would change the pending set.
    let high_class = format!("saturated-high-{owner}");
    let classes: Api<PriorityClass> = Api::all(client.clone());
    classes
        .create(
            &PostParams::default(),
            &from_json(json!({
                "metadata": {"name": high_class},
                "value": 1000,
                "preemptionPolicy": "Never",
            })),
        )
        .await
        .unwrap();
    for i in 0..NODES {
        create_node(&client, i, owner, i >= NODES - TAINTED).await;
    }
    nodes_ready(&client, owner, NODES).await;

    let scenario = Scenario {
        cluster,
        client: client.clone(),
        owner,
        high_class: &high_class,
        dir: dir.path(),
        plan: plan(),
    };
    let upstream = scenario.run(Side::Upstream).await;
    let ours = scenario.run(Side::Understudy).await;

    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..=NODES {
        let _ = nodes
            .delete(&node_name(i, owner), &DeleteParams::default())
            .await;
    }
    let _ = classes.delete(&high_class, &DeleteParams::default()).await;

    eprintln!("{}", report(&upstream, &ours));

    // Sanity of the scenario itself: it saturates (some pods stay pending
    // under upstream) and upstream leaves no pod pending that fits.
    let (theirs, mine) = (&upstream.placement, &ours.placement);
    assert!(
        theirs.pending_total() > 0,
        "the scenario did not saturate the nodes"
    );
    assert!(
        theirs.pending_that_fit.is_empty(),
        "kube-scheduler left pods pending that fit (our Filter disagrees with upstream's?): {:?}",
        theirs.pending_that_fit
    );
    // No pod upstream would bind is left pending. Directly: ours leaves no
    // pending pod that a node would take.
    assert!(
        mine.pending_that_fit.is_empty(),
        "understudy-scheduler left pods pending that fit: {:?}",
        mine.pending_that_fit
    );
    // Against upstream, by shape rather than by name: which pod gets the
    // last room depends on the order pods reach the queue (created 32 at a
    // time) and on ties between equally scored nodes, broken at random by
    // both schedulers. Two runs of kube-scheduler itself bind different
    // pods, and different counts of the shapes the room ran out for (up to
    // 5 of ~170 apart). So: a shape upstream placed in full, ours places in
    // full; and ours fills as much room as upstream, within 3 % of the CPU
    // and memory requests bound (measured: kube-scheduler against itself
    // 0.6 %, ours against it 0–1.9 %): a packing of ours that stranded pods
    // upstream places shows there. The hard guarantee is the one above:
    // nothing pending fits.
    let short: Vec<String> = SHAPES
        .iter()
        .filter(|s| !theirs.pending.contains_key(s.name) && mine.pending.contains_key(s.name))
        .map(|s| format!("{}: {} pending", s.name, mine.pending[s.name]))
        .collect();
    assert!(
        short.is_empty(),
        "pods of shapes upstream placed in full left pending: {short:?}"
    );
    assert!(
        mine.milli_cpu * 100 >= theirs.milli_cpu * 97
            && mine.memory_mi * 100 >= theirs.memory_mi * 97,
        "bound requests: ours {} m CPU, {} Mi vs upstream's {} m, {} Mi",
        mine.milli_cpu,
        mine.memory_mi,
        theirs.milli_cpu,
        theirs.memory_mi
    );
    // Attempts and FailedScheduling Events against upstream's, per pod
    // waiting in each step (see `at_upstream_rates`). Raw totals are printed
    // but not compared: kube-scheduler's own FailedScheduling Events ranged
    // from 522 to 605 over 14 runs of this scenario (pods pending after the
    // deletions: 108 to 129), so two runs of it can be more than 10 % apart.
    // A scheduler that retries waiting pods on events that cannot help them,
    // retries them more than once per event, or writes an Event where
    // upstream folds a failure into one, is off per waiting pod.
    let attempts = at_upstream_rates(&upstream, &ours, |s| s.attempts);
    assert!(
        within(ours.metrics.attempts(), attempts),
        "scheduling attempts: ours {} vs {attempts} at kube-scheduler's rates per waiting pod \
         (more than 10 % apart; raw: {})",
        ours.metrics.attempts(),
        upstream.metrics.attempts()
    );
    let events = events_at_upstream_rates(&upstream, &ours);
    assert!(
        within(ours.events.1, events),
        "FailedScheduling Events: ours {} vs {events} at kube-scheduler's rates per waiting pod \
         (more than 10 % apart; raw: {})",
        ours.events.1,
        upstream.events.1
    );
}
