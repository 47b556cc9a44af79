//! Scheduler benchmark, after upstream's scheduler_perf SchedulingBasic: N
//! nodes, some existing pods, then many pending pods, scheduled by (1) a null
//! scheduler that binds round-robin with no decision — the apiserver's bind
//! ceiling on this machine —, (2) upstream kube-scheduler and (3)
//! understudy-scheduler, one after the other on the same control plane.
//!
//! The measured pods are created while no scheduler runs, then the scheduler
//! starts: throughput is measured from its first bind to its last, so it is
//! the scheduler's pace, not the pod-creation rate.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use understudy_component_base::client::ClientOptions;

use super::null_scheduler;
use super::procstat::{self, ProcUsage};
use super::promtext;
use super::write_costs::median;
use crate::controlplane::free_port;
use crate::kwok_stages::NO_KUBELET_LABEL;
use crate::probe;
use crate::process::{self, ProcessRecord};
use crate::state::ClusterState;
use crate::wait;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Null,
    /// The null scheduler that also records each pod's `Scheduled` Event, as
    /// every scheduler does: the ceiling for a scheduler with no decision cost.
    NullWithEvents,
    /// The null scheduler with Events, fed by watches of pods and nodes
    /// instead of lists: the ceiling of a scheduler that must watch to learn
    /// of pods but decides nothing.
    NullWatching,
    KubeScheduler,
    Understudy,
}

impl Variant {
    pub fn label(self) -> &'static str {
        match self {
            Self::Null => "null scheduler (bind ceiling)",
            Self::NullWithEvents => "null scheduler + Events (bind+event ceiling)",
            Self::NullWatching => "watching null scheduler + Events",
            Self::KubeScheduler => "kube-scheduler",
            Self::Understudy => "understudy-scheduler",
        }
    }
    fn slug(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::NullWithEvents => "null-events",
            Self::NullWatching => "null-watch",
            Self::KubeScheduler => "kube",
            Self::Understudy => "understudy",
        }
    }
    fn scheduler_name(self) -> &'static str {
        match self {
            Self::Null | Self::NullWithEvents | Self::NullWatching => "null-scheduler",
            Self::KubeScheduler => "default-scheduler",
            Self::Understudy => "understudy-scheduler",
        }
    }
}

/// What the pods look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// SchedulingBasic: small pods, room everywhere.
    Basic,
    /// Preemption: the existing pods are low priority and fill every node;
    /// each measured pod is high priority and needs one evicted.
    Preemption,
}

const LOW_CLASS: &str = "understudy-bench-low";
const HIGH_CLASS: &str = "understudy-bench-high";

#[derive(Clone, Debug)]
pub struct Options {
    pub workload: Workload,
    pub existing: usize,
    pub measured: usize,
    /// Client QPS and burst given to both schedulers.
    pub qps: u32,
    pub components_dir: PathBuf,
    /// Whether kwok plays the bound pods' kubelet. scheduler_perf runs none:
    /// without, pods are labelled for kwok to leave them Pending.
    pub kubelet: bool,
    /// Times the whole sequence of variants runs, one after the other.
    pub rounds: usize,
}

#[derive(Clone, Debug, Default)]
pub struct VariantResult {
    pub pods_per_second: f64,
    /// From the scheduler's start to the last bind.
    pub total_seconds: f64,
    pub p50_attempt_seconds: Option<f64>,
    pub p99_attempt_seconds: Option<f64>,
    /// `scheduler_scheduling_algorithm_duration_seconds` p99: the decision
    /// alone (filters, scores, preemption), without the bind.
    pub p99_algorithm_seconds: Option<f64>,
    /// CPU ms per bound pod in each tenth of the measured pods (empty
    /// without a process to measure).
    pub cpu_ms_per_pod_by_decile: Vec<f64>,
    pub usage: Option<ProcUsage>,
    /// Preemption workload: existing pods evicted.
    pub victims: Option<usize>,
}

fn pod(name: &str, scheduler: &str, opts: &Options, measured: bool) -> Pod {
    let workload = opts.workload;
    let (cpu, class) = match (workload, measured) {
        (Workload::Basic, _) => ("100m", None),
        (Workload::Preemption, false) => ("1", Some(LOW_CLASS)),
        (Workload::Preemption, true) => ("1", Some(HIGH_CLASS)),
    };
    let mut p = json!({
        "metadata": {"name": name, "labels": {"bench": "scheduler"}},
        "spec": {
            "schedulerName": scheduler,
            "containers": [{
                "name": "pause",
                "image": "registry.k8s.io/pause:3.10",
                "resources": {"requests": {"cpu": cpu, "memory": "500Mi"}},
            }],
        },
    });
    if let Some(class) = class {
        p["spec"]["priorityClassName"] = json!(class);
    }
    if !opts.kubelet {
        p["metadata"]["labels"][NO_KUBELET_LABEL] = json!("none");
    }
    serde_json::from_value(p).expect("static pod")
}

async fn ensure_priority_classes(client: &Client) -> anyhow::Result<()> {
    let classes: Api<k8s_openapi::api::scheduling::v1::PriorityClass> = Api::all(client.clone());
    for (name, value) in [(LOW_CLASS, 100), (HIGH_CLASS, 1000)] {
        let pc = serde_json::from_value(json!({"metadata": {"name": name}, "value": value}))?;
        match classes.create(&PostParams::default(), &pc).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn create_pods(
    client: &Client,
    ns: &str,
    prefix: &str,
    count: usize,
    scheduler: &str,
    opts: &Options,
) -> anyhow::Result<()> {
    let measured = prefix == "measured-";
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let results: Vec<Result<Pod, kube::Error>> = futures::stream::iter(0..count)
        .map(|i| {
            let pods = pods.clone();
            let p = pod(&format!("{prefix}{i}"), scheduler, opts, measured);
            async move { pods.create(&PostParams::default(), &p).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(())
}

fn bench_usage() -> Option<ProcUsage> {
    procstat::usage(std::process::id() as i32)
}

fn bench_cpu_seconds() -> f64 {
    bench_usage().map_or(0.0, |u| u.cpu_seconds)
}

/// A running scheduler under test.
enum Running {
    /// A null scheduler's tasks in the bench's own process, and that
    /// process's CPU seconds when they started.
    Null(Vec<tokio::task::JoinHandle<()>>, f64),
    Process {
        record: ProcessRecord,
        metrics_url: String,
    },
}

impl Running {
    fn usage(&self) -> Option<ProcUsage> {
        match self {
            // The bench's own CPU since the null scheduler started (the
            // bind tracker's watch included): an upper bound of its cost.
            // Its peak RSS is the bench's, not the null scheduler's: none.
            Self::Null(_, cpu_at_start) => bench_usage().map(|u| ProcUsage {
                cpu_seconds: u.cpu_seconds - cpu_at_start,
                peak_rss_bytes: 0,
                children_cpu_seconds: 0.0,
            }),
            Self::Process { record, .. } => procstat::usage(record.pid),
        }
    }

    async fn metrics(&self) -> Option<String> {
        match self {
            Self::Null(..) => None,
            Self::Process { metrics_url, .. } => {
                let r = probe::http_client().get(metrics_url).send().await.ok()?;
                r.text().await.ok()
            }
        }
    }

    fn stop(self) {
        match self {
            Self::Null(tasks, _) => {
                for task in tasks {
                    task.abort();
                }
            }
            Self::Process { record, .. } => {
                record.stop(Duration::from_secs(10));
            }
        }
    }
}

/// The same client as the understudies' (HTTP/2, QPS/burst), so the
/// ceiling is not lowered by a slower client.
async fn null_client(kubeconfig: &std::path::Path, qps: u32) -> anyhow::Result<Client> {
    Ok(ClientOptions {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        qps: qps as f32,
        burst: qps,
        user_agent: "null-scheduler".into(),
    }
    .client()
    .await?)
}

async fn start(
    variant: Variant,
    state: &ClusterState,
    opts: &Options,
    ns: &str,
    nodes: &[String],
    run: &str,
) -> anyhow::Result<Running> {
    let logs = state.state_dir.join("logs");
    let qps = opts.qps.to_string();
    // Every scheduler runs as system:kube-scheduler, so the apiserver's
    // priority and fairness treats them alike (the admin is exempt from it).
    let kubeconfig = state.state_dir.join("kubeconfigs/scheduler.yaml");
    match variant {
        Variant::NullWatching => {
            let client = null_client(&kubeconfig, opts.qps).await?;
            Ok(Running::Null(
                null_scheduler::watching(client, ns.to_string(), variant.scheduler_name(), true),
                bench_cpu_seconds(),
            ))
        }
        Variant::Null | Variant::NullWithEvents => {
            let client = null_client(&kubeconfig, opts.qps).await?;
            Ok(Running::Null(
                vec![tokio::spawn(null_scheduler::polling(
                    client,
                    ns.to_string(),
                    nodes.to_vec(),
                    variant == Variant::NullWithEvents,
                ))],
                bench_cpu_seconds(),
            ))
        }
        Variant::KubeScheduler => {
            let port = free_port()?;
            let args = vec![
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--authentication-kubeconfig={}", kubeconfig.display()),
                format!("--authorization-kubeconfig={}", kubeconfig.display()),
                "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                "--leader-elect=false".into(),
                format!("--kube-api-qps={qps}"),
                format!("--kube-api-burst={qps}"),
                "--v=0".into(),
            ];
            let record = process::spawn(
                &format!("bench-kube-scheduler-{run}"),
                &state.toolchain_dir.join("kube-scheduler"),
                &args,
                &logs.join(format!("bench-kube-scheduler-{run}.log")),
            )?;
            Ok(Running::Process {
                record,
                metrics_url: format!("https://127.0.0.1:{port}/metrics"),
            })
        }
        Variant::Understudy => {
            let port = free_port()?;
            let args = vec![
                format!("--kubeconfig={}", kubeconfig.display()),
                "--bind-address=127.0.0.1".into(),
                format!("--port={port}"),
                "--extender-port=0".into(),
                "--leader-elect=false".into(),
                format!("--kube-api-qps={qps}"),
                format!("--kube-api-burst={qps}"),
                format!("--log-level={}", super::log_level()),
            ];
            let record = process::spawn(
                &format!("bench-understudy-scheduler-{run}"),
                &opts.components_dir.join("understudy-scheduler"),
                &args,
                &logs.join(format!("bench-understudy-scheduler-{run}.log")),
            )?;
            Ok(Running::Process {
                record,
                metrics_url: format!("http://127.0.0.1:{port}/metrics"),
            })
        }
    }
}

/// Records when each pod of `ns` whose name starts with `prefix` is first seen bound.
fn track_binds(
    client: &Client,
    ns: &str,
    prefix: &str,
) -> (Arc<Mutex<Vec<Instant>>>, tokio::task::JoinHandle<()>) {
    let times = Arc::new(Mutex::new(vec![]));
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let prefix = prefix.to_string();
    let sink = times.clone();
    let task = tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut stream = watcher::watcher(pods, watcher::Config::default().any_semantic())
            .applied_objects()
            .boxed();
        while let Ok(Some(p)) = stream.try_next().await {
            let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
            let name = p.name_any();
            if bound && name.starts_with(&prefix) && seen.insert(name) {
                sink.lock().expect("times lock").push(Instant::now());
            }
        }
    });
    (times, task)
}

async fn wait_all_bound(
    client: &Client,
    ns: &str,
    what: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait::until(what, timeout, || async {
        let left = null_scheduler::unbound(client, ns)
            .await
            .map_err(|e| e.to_string())?
            .len();
        Ok((left == 0).then_some(()))
    })
    .await?;
    Ok(())
}

async fn run_variant(
    variant: Variant,
    state: &ClusterState,
    opts: &Options,
    client: &Client,
    nodes: &[String],
) -> anyhow::Result<VariantResult> {
    let ns = format!("bench-{}", variant.slug());
    super::create_namespace(client, &ns).await?;

    eprintln!(
        "bench: {}: {} existing pods",
        variant.label(),
        opts.existing
    );
    create_pods(
        client,
        &ns,
        "existing-",
        opts.existing,
        variant.scheduler_name(),
        opts,
    )
    .await?;
    let running = start(variant, state, opts, &ns, nodes, "init").await?;
    wait_all_bound(
        client,
        &ns,
        "existing pods bound",
        Duration::from_secs(1800),
    )
    .await?;
    running.stop();

    eprintln!(
        "bench: {}: creating {} measured pods",
        variant.label(),
        opts.measured
    );
    create_pods(
        client,
        &ns,
        "measured-",
        opts.measured,
        variant.scheduler_name(),
        opts,
    )
    .await?;
    let (times, tracker) = track_binds(client, &ns, "measured-");
    let requests_before = super::request_counts(client).await;
    let started = Instant::now();
    let running = start(variant, state, opts, &ns, nodes, "measured").await?;
    eprintln!("bench: {}: scheduling", variant.label());
    // The scheduler's CPU each time another tenth of the pods is bound: a
    // scheduler whose per-pod cost grows with what it has placed shows it
    // here (the scale run's flatness check). Counted from the first bind,
    // so that the first tenth is not charged with the start-up (the initial
    // lists of nodes and pods).
    let mut deciles: Vec<(usize, f64)> = vec![];
    let deadline = Instant::now() + Duration::from_secs(3600);
    let mut sample = tokio::time::interval(Duration::from_millis(100));
    loop {
        sample.tick().await;
        let bound = times.lock().expect("times lock").len();
        let next = opts.measured * deciles.len() / 10;
        if bound >= next.max(1)
            && deciles.len() <= 10
            && let Some(u) = running.usage()
        {
            deciles.push((bound, u.cpu_seconds));
        }
        if bound >= opts.measured {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{}: {bound} of {} measured pods bound after an hour",
                variant.label(),
                opts.measured
            );
        }
    }
    let metrics = running.metrics().await;
    let usage = running.usage();
    running.stop();
    if let (Some(before), Some(after)) = (requests_before, super::request_counts(client).await) {
        super::print_request_delta(variant.label(), &before, &after);
    }
    let victims = match opts.workload {
        Workload::Basic => None,
        Workload::Preemption => {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let left = pods
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .filter(|p| {
                    p.name_any().starts_with("existing-") && p.metadata.deletion_timestamp.is_none()
                })
                .count();
            Some(opts.existing.saturating_sub(left))
        }
    };
    tracker.abort();
    let times = times.lock().expect("times lock").clone();
    // Binds per second since the scheduler's start: where the time goes.
    let mut per_second: Vec<usize> = vec![];
    for t in &times {
        let s = t.duration_since(started).as_secs() as usize;
        if per_second.len() <= s {
            per_second.resize(s + 1, 0);
        }
        per_second[s] += 1;
    }
    eprintln!(
        "bench: {}: binds per second since start: {per_second:?}",
        variant.label()
    );
    if let Some(text) = &metrics {
        // Pods by the number of attempts they needed (both schedulers export it).
        let by_attempts: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("scheduler_pod_scheduling_sli_duration_seconds_count"))
            .collect();
        eprintln!("bench: {}: {by_attempts:?}", variant.label());
    }
    let first = *times.iter().min().expect("binds recorded");
    let last = *times.iter().max().expect("binds recorded");
    let span = last.duration_since(first).as_secs_f64().max(1e-3);
    let (p50, p99, algorithm_p99) = match &metrics {
        Some(text) => {
            let b = promtext::buckets(
                text,
                "scheduler_scheduling_attempt_duration_seconds",
                &["result=\"scheduled\""],
            );
            let algorithm =
                promtext::buckets(text, "scheduler_scheduling_algorithm_duration_seconds", &[]);
            (
                promtext::quantile(0.5, &b),
                promtext::quantile(0.99, &b),
                promtext::quantile(0.99, &algorithm),
            )
        }
        None => (None, None, None),
    };
    // SchedulingBasic: the pace between the first and last bind. Preemption:
    // every pod waits for its victims, so what counts is the time until all
    // are bound, from the scheduler's start.
    let pods_per_second = match opts.workload {
        Workload::Basic => (times.len() as f64 - 1.0).max(1.0) / span,
        Workload::Preemption => {
            times.len() as f64 / last.duration_since(started).as_secs_f64().max(1e-3)
        }
    };
    let result = VariantResult {
        pods_per_second,
        total_seconds: last.duration_since(started).as_secs_f64(),
        p50_attempt_seconds: p50,
        p99_attempt_seconds: p99,
        p99_algorithm_seconds: algorithm_p99,
        cpu_ms_per_pod_by_decile: per_decile(&deciles),
        usage,
        victims,
    };

    // Printed now: cleaning up 100000 pods can outlast the run's patience.
    let shown: Vec<String> = result
        .cpu_ms_per_pod_by_decile
        .iter()
        .map(|x| format!("{x:.2}"))
        .collect();
    eprintln!(
        "bench: {}: CPU ms/pod by tenth of the pods: [{}]",
        variant.label(),
        shown.join(", ")
    );
    eprintln!("bench: {}: cleaning up", variant.label());
    super::delete_namespace(client, &ns).await?;
    Ok(result)
}

/// Every variant in turn, `opts.rounds` times; one round's results each.
pub async fn run(
    state: &ClusterState,
    opts: &Options,
    variants: &[Variant],
    node_count: usize,
) -> anyhow::Result<Vec<Vec<(Variant, VariantResult)>>> {
    let client = wait::client_for(&state.kubeconfig).await?;
    if opts.workload == Workload::Preemption {
        ensure_priority_classes(&client).await?;
    }
    let nodes = super::node_names(&client).await?;
    let mut rounds = vec![];
    for round in 1..=opts.rounds.max(1) {
        let mut results = vec![];
        for v in variants {
            results.push((*v, run_variant(*v, state, opts, &client, &nodes).await?));
        }
        if opts.rounds > 1 {
            // Printed as it comes: a long series is still worth its
            // finished rounds if it is stopped.
            println!("round {round}:\n{}", report(&results, node_count, opts));
        }
        rounds.push(results);
    }
    Ok(rounds)
}

fn ratios(rounds: &[Vec<(Variant, VariantResult)>], of: Variant, over: Variant) -> Vec<f64> {
    super::ratios_by_round(rounds, of, over, |r| r.pods_per_second)
}

/// Over several rounds: ours' pace against each other variant's of the
/// same round, as the median of the per-round ratios (this machine's pace
/// moves by ±20 % between runs, so one run's ratio says little).
pub fn summary(rounds: &[Vec<(Variant, VariantResult)>]) -> String {
    let mut out = format!(
        "summary of {} rounds (median of per-round ratios):\n",
        rounds.len()
    );
    for (over, what) in [
        (Variant::Null, "understudy / bind ceiling"),
        (
            Variant::NullWithEvents,
            "understudy / bind+event ceiling (target ≥ 90 %)",
        ),
        (
            Variant::NullWatching,
            "understudy / watching null scheduler + Events",
        ),
        (Variant::KubeScheduler, "understudy / kube-scheduler"),
    ] {
        let values = ratios(rounds, Variant::Understudy, over);
        if values.is_empty() {
            continue;
        }
        let each: Vec<String> = values
            .iter()
            .map(|v| format!("{:.0} %", 100.0 * v))
            .collect();
        out.push_str(&format!(
            "- {what}: median {:.0} % (rounds: {})\n",
            100.0 * median(values.clone()),
            each.join(", ")
        ));
    }
    out
}

/// CPU ms per pod between successive samples of (pods bound, CPU seconds).
fn per_decile(samples: &[(usize, f64)]) -> Vec<f64> {
    samples
        .windows(2)
        .filter(|w| w[1].0 > w[0].0)
        .map(|w| (w[1].1 - w[0].1) * 1000.0 / (w[1].0 - w[0].0) as f64)
        .collect()
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map(|s| format!("{:.1} ms", s * 1000.0))
        .unwrap_or_else(|| "–".into())
}

/// A markdown table of the results with ratios against kube-scheduler.
pub fn report(results: &[(Variant, VariantResult)], nodes: usize, opts: &Options) -> String {
    let result_of = |variant| {
        results
            .iter()
            .find(|(v, _)| *v == variant)
            .map(|(_, r)| r.clone())
    };
    let upstream = result_of(Variant::KubeScheduler);
    let ours = result_of(Variant::Understudy);
    let name = match opts.workload {
        Workload::Basic => "SchedulingBasic",
        Workload::Preemption => {
            "Preemption (existing pods low priority, measured pods high priority)"
        }
    };
    let mut out = format!(
        "{name}: {nodes} nodes, {} existing pods, {} measured pods, client QPS/burst {}, {}\n\n\
         | scheduler | pods/s | time to all bound | attempt p50 | attempt p99 | algorithm p99 | CPU s | CPU ms/pod | peak RSS | victims |\n|---|---|---|---|---|---|---|---|---|---|\n",
        opts.existing,
        opts.measured,
        opts.qps,
        if opts.kubelet {
            "kwok's kubelet makes bound pods Running"
        } else {
            "no kubelet (bound pods stay Pending, as in scheduler_perf)"
        }
    );
    for (v, r) in results {
        let (cpu, per_pod, rss) = match r.usage {
            Some(u) => (
                format!("{:.1}", u.cpu_seconds),
                format!("{:.2}", u.cpu_seconds * 1000.0 / opts.measured as f64),
                if u.peak_rss_bytes == 0 {
                    "–".into()
                } else {
                    format!("{:.0} MiB", u.peak_rss_bytes as f64 / (1024.0 * 1024.0))
                },
            ),
            None => ("–".into(), "–".into(), "–".into()),
        };
        out.push_str(&format!(
            "| {} | {:.0} | {:.1} s | {} | {} | {} | {cpu} | {per_pod} | {rss} | {} |\n",
            v.label(),
            r.pods_per_second,
            r.total_seconds,
            fmt_ms(r.p50_attempt_seconds),
            fmt_ms(r.p99_attempt_seconds),
            fmt_ms(r.p99_algorithm_seconds),
            r.victims
                .map(|v| v.to_string())
                .unwrap_or_else(|| "–".into()),
        ));
    }
    if results.iter().any(|(v, r)| {
        matches!(
            v,
            Variant::Null | Variant::NullWithEvents | Variant::NullWatching
        ) && r.usage.is_some()
    }) {
        out.push_str(
            "\nA null scheduler's CPU is the bench process's while it ran (its watch of binds included).\n",
        );
    }
    if let (Some(u), Some(o)) = (&upstream, &ours) {
        out.push_str(&format!(
            "\nunderstudy / kube-scheduler: throughput {:.2}×",
            o.pods_per_second / u.pods_per_second
        ));
        if let (Some(oa), Some(ua)) = (o.p99_algorithm_seconds, u.p99_algorithm_seconds) {
            out.push_str(&format!(", algorithm p99 {:.2}× (target ≤ 0.20×)", oa / ua));
        }
        if let (Some(ou), Some(uu)) = (o.usage, u.usage) {
            out.push_str(&format!(
                ", CPU seconds {:.2}×, peak RSS {:.2}×",
                ou.cpu_seconds / uu.cpu_seconds,
                ou.peak_rss_bytes as f64 / uu.peak_rss_bytes as f64
            ));
        }
        out.push('\n');
    }
    for (v, r) in results {
        let d = &r.cpu_ms_per_pod_by_decile;
        if let (Some(first), Some(last)) = (d.first(), d.last())
            && d.len() > 1
        {
            let shown: Vec<String> = d.iter().map(|x| format!("{x:.2}")).collect();
            out.push_str(&format!(
                "{}: CPU ms/pod by tenth of the pods: [{}]; last/first {:.2}×\n",
                v.label(),
                shown.join(", "),
                last / first
            ));
        }
    }
    for (variant, what) in [
        (Variant::Null, "bind ceiling"),
        (Variant::NullWithEvents, "bind+event ceiling"),
        (Variant::NullWatching, "watching null scheduler + Events"),
    ] {
        if let (Some(c), Some(o)) = (result_of(variant), &ours) {
            out.push_str(&format!(
                "understudy / {what}: {:.0} %\n",
                100.0 * o.pods_per_second / c.pods_per_second
            ));
        }
    }
    out
}

/// Where benchmark clusters keep their state.
pub fn state_dir() -> PathBuf {
    std::env::temp_dir().join("understudy-bench")
}

#[cfg(test)]
mod decile_tests {
    use super::per_decile;

    #[test]
    fn per_decile_cost_is_cpu_between_samples_over_pods_between_them() {
        let d = per_decile(&[(0, 1.0), (100, 1.5), (200, 2.0), (200, 2.5), (300, 3.1)]);
        assert_eq!(d.len(), 3);
        assert!((d[0] - 5.0).abs() < 1e-9 && (d[1] - 5.0).abs() < 1e-9);
        assert!((d[2] - 6.0).abs() < 1e-9, "{d:?}");
    }
}

#[cfg(test)]
mod summary_tests {
    use super::*;

    fn paced(pods_per_second: f64) -> VariantResult {
        VariantResult {
            pods_per_second,
            ..Default::default()
        }
    }

    #[test]
    fn the_summary_takes_the_median_of_each_rounds_own_ratio() {
        let rounds = vec![
            vec![
                (Variant::NullWithEvents, paced(1000.0)),
                (Variant::Understudy, paced(900.0)),
            ],
            vec![
                (Variant::NullWithEvents, paced(500.0)),
                (Variant::Understudy, paced(400.0)),
            ],
            vec![
                (Variant::NullWithEvents, paced(600.0)),
                (Variant::Understudy, paced(510.0)),
            ],
        ];
        let text = summary(&rounds);
        assert!(
            text.contains(
                "understudy / bind+event ceiling (target ≥ 90 %): median 85 % (rounds: 90 %, 80 %, 85 %)"
            ),
            "{text}"
        );
        // Variants that did not run are left out.
        assert!(!text.contains("kube-scheduler"), "{text}");
    }
}
