//! Controllers benchmark: upstream kube-controller-manager running only the
//! Deployment, ReplicaSet, Endpoints and EndpointSlice controllers, then
//! understudy-controllers, one after the other on one local control plane
//! whose own kube-controller-manager has those four switched off.
//!
//! Each run, in a fresh namespace: (1) 100 Services over 100 Deployments of
//! 10 pods, measuring how long after a pod is seen Ready its endpoint is seen
//! ready in an EndpointSlice; (2) 100 Deployments × 20 replicas created at
//! once, until all are Available; (3) a new image for all of them, until all
//! have rolled out. Pods carry a `nodeName`, so no scheduler is in the loop:
//! the time measured is the controllers' and the apiserver's.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::procstat::{self, ProcUsage};
use crate::controlplane::free_port;
use crate::process::{self, ProcessRecord};
use crate::state::ClusterState;
use crate::wait;
use crate::workloads::{PAUSE_IMAGE, deployment, pod_is_ready, rolled_out, service};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Upstream,
    Understudy,
}

impl Variant {
    pub fn label(self) -> &'static str {
        match self {
            Self::Upstream => "kube-controller-manager (4 controllers)",
            Self::Understudy => "understudy-controllers",
        }
    }
    fn slug(self) -> &'static str {
        match self {
            Self::Upstream => "kube",
            Self::Understudy => "understudy",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub deployments: usize,
    pub replicas: usize,
    pub services: usize,
    pub pods_per_service: usize,
    /// Client QPS and burst of both controller managers.
    pub qps: u32,
    pub components_dir: PathBuf,
}

#[derive(Clone, Debug, Default)]
pub struct VariantResult {
    pub slice_latency_p50: f64,
    pub slice_latency_p99: f64,
    pub endpoints_measured: usize,
    pub to_available_seconds: f64,
    pub rollout_seconds: f64,
    pub usage: Option<ProcUsage>,
    /// kube-apiserver's CPU seconds during the run: what serving this
    /// controller manager cost the control plane.
    pub apiserver_cpu_seconds: Option<f64>,
    /// Requests the apiserver served during the run: all but watches, and
    /// writes (POST, PUT, PATCH, DELETE).
    pub requests: Option<(f64, f64)>,
}

/// (requests other than WATCH, writes) among request counters.
fn totals(counts: &BTreeMap<String, f64>) -> (f64, f64) {
    let all = counts.values().sum();
    let writes = counts
        .iter()
        .filter(|(series, _)| {
            ["POST", "PUT", "PATCH", "DELETE"]
                .iter()
                .any(|v| series.contains(&format!("verb=\"{v}\"")))
        })
        .map(|(_, n)| n)
        .sum();
    (all, writes)
}

const UPSTREAM_CONTROLLERS: &str =
    "deployment-controller,replicaset-controller,endpoints-controller,endpointslice-controller";

fn start(variant: Variant, state: &ClusterState, opts: &Options) -> anyhow::Result<ProcessRecord> {
    let logs = state.state_dir.join("logs");
    let port = free_port()?;
    let qps = opts.qps.to_string();
    let kubeconfig = state.kubeconfig.display().to_string();
    let (name, program, args) = match variant {
        Variant::Upstream => (
            "bench-kube-controller-manager",
            state.toolchain_dir.join("kube-controller-manager"),
            vec![
                format!("--kubeconfig={kubeconfig}"),
                format!("--authentication-kubeconfig={kubeconfig}"),
                format!("--authorization-kubeconfig={kubeconfig}"),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                format!("--cert-dir={}", state.state_dir.join("bench-kcm").display()),
                format!("--controllers={UPSTREAM_CONTROLLERS}"),
                "--leader-elect=false".into(),
                format!("--kube-api-qps={qps}"),
                format!("--kube-api-burst={qps}"),
                "--v=0".into(),
            ],
        ),
        Variant::Understudy => (
            "bench-understudy-controllers",
            opts.components_dir.join("understudy-controllers"),
            vec![
                format!("--kubeconfig={kubeconfig}"),
                "--bind-address=127.0.0.1".into(),
                format!("--port={port}"),
                "--leader-elect=false".into(),
                format!("--kube-api-qps={qps}"),
                format!("--kube-api-burst={qps}"),
                format!("--log-level={}", super::log_level()),
            ],
        ),
    };
    Ok(process::spawn(
        name,
        &program,
        &args,
        &logs.join(format!("{name}.log")),
    )?)
}

/// When each pod IP was first seen Ready, and first seen ready in a slice.
#[derive(Default)]
struct Latencies {
    pod_ready: HashMap<String, Instant>,
    slice_ready: HashMap<String, Instant>,
}

fn track_latencies(
    client: &Client,
    ns: &str,
) -> (Arc<Mutex<Latencies>>, Vec<tokio::task::JoinHandle<()>>) {
    let seen = Arc::new(Mutex::new(Latencies::default()));
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let sink = seen.clone();
    let pod_task = tokio::spawn(async move {
        let mut stream =
            watcher::watcher(pods, watcher::Config::default().labels("bench=endpoints")).boxed();
        while let Ok(Some(event)) = stream.try_next().await {
            if let Event::Apply(p) | Event::InitApply(p) = event {
                let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone());
                if let (Some(ip), true) = (ip, pod_is_ready(&p)) {
                    sink.lock()
                        .expect("latency lock")
                        .pod_ready
                        .entry(ip)
                        .or_insert_with(Instant::now);
                }
            }
        }
    });
    let sink = seen.clone();
    let slice_task = tokio::spawn(async move {
        let mut stream = watcher::watcher(slices, watcher::Config::default()).boxed();
        while let Ok(Some(event)) = stream.try_next().await {
            if let Event::Apply(s) | Event::InitApply(s) = event {
                let now = Instant::now();
                let mut l = sink.lock().expect("latency lock");
                for e in s.endpoints.iter().flatten() {
                    if e.conditions.as_ref().and_then(|c| c.ready) == Some(true) {
                        for a in &e.addresses {
                            l.slice_ready.entry(a.clone()).or_insert(now);
                        }
                    }
                }
            }
        }
    });
    (seen, vec![pod_task, slice_task])
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A Deployment whose pods go to `node` directly (no scheduler involved).
fn placed_deployment(
    name: &str,
    replicas: usize,
    node: &str,
    labels: serde_json::Value,
) -> Deployment {
    deployment(
        name,
        replicas as i32,
        PAUSE_IMAGE,
        json!({
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"metadata": {"labels": labels}, "spec": {
                "nodeName": node,
                "containers": [{"name": "c", "image": PAUSE_IMAGE, "ports": [{"containerPort": 8080}]}],
            }},
        }),
    )
}

async fn wait_deployments(
    client: &Client,
    ns: &str,
    prefix: &str,
    generation: i64,
    what: &str,
) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    wait::until(what, Duration::from_secs(1800), || async {
        let all = api
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items;
        let ours: Vec<&Deployment> = all
            .iter()
            .filter(|d| d.name_any().starts_with(prefix))
            .collect();
        Ok(ours
            .iter()
            .all(|d| rolled_out(d) && d.metadata.generation == Some(generation))
            .then_some(()))
    })
    .await?;
    Ok(())
}

/// Runs the API calls 16 at a time (as a client creating many objects at
/// once would), failing on the first error.
async fn all_in_flight<T>(
    calls: impl Iterator<Item = impl std::future::Future<Output = Result<T, kube::Error>>>,
) -> Result<(), kube::Error> {
    let results: Vec<Result<T, kube::Error>> = futures::stream::iter(calls)
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().try_for_each(|r| r.map(drop))
}

async fn run_variant(
    variant: Variant,
    state: &ClusterState,
    opts: &Options,
    client: &Client,
    nodes: &[String],
) -> anyhow::Result<VariantResult> {
    let ns = format!("bench-ctl-{}", variant.slug());
    super::create_namespace(client, &ns).await?;
    let apiserver = state.process("kube-apiserver").map(|p| p.pid);
    let apiserver_cpu = || apiserver.and_then(procstat::usage).map(|u| u.cpu_seconds);
    let apiserver_before = apiserver_cpu();
    let requests_before = super::request_counts(client).await;
    let record = start(variant, state, opts)?;
    let pp = PostParams::default();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);

    eprintln!(
        "bench: {}: {} services × {} pods",
        variant.label(),
        opts.services,
        opts.pods_per_service
    );
    let (latencies, trackers) = track_latencies(client, &ns);
    for i in 0..opts.services {
        let app = format!("ep-{i}");
        services
            .create(&pp, &service(&app, &app, json!(8080)))
            .await?;
    }
    let creates = (0..opts.services).map(|i| {
        let app = format!("ep-{i}");
        let d = placed_deployment(
            &app,
            opts.pods_per_service,
            &nodes[i % nodes.len()],
            json!({"app": app, "bench": "endpoints"}),
        );
        let api = deployments.clone();
        async move { api.create(&PostParams::default(), &d).await }
    });
    all_in_flight(creates).await?;
    let expected = opts.services * opts.pods_per_service;
    wait::until(
        "every pod ready in a slice",
        Duration::from_secs(1800),
        || {
            let l = latencies.clone();
            async move {
                let l = l.lock().expect("latency lock");
                let done = l
                    .pod_ready
                    .keys()
                    .filter(|ip| l.slice_ready.contains_key(*ip))
                    .count();
                Ok((done >= expected).then_some(()))
            }
        },
    )
    .await?;
    for t in trackers {
        t.abort();
    }
    let mut samples: Vec<f64> = {
        let l = latencies.lock().expect("latency lock");
        l.pod_ready
            .iter()
            .filter_map(|(ip, ready)| {
                let in_slice = l.slice_ready.get(ip)?;
                Some(in_slice.saturating_duration_since(*ready).as_secs_f64())
            })
            .collect()
    };
    samples.sort_by(f64::total_cmp);

    eprintln!(
        "bench: {}: {} deployments × {} replicas",
        variant.label(),
        opts.deployments,
        opts.replicas
    );
    let started = Instant::now();
    let creates = (0..opts.deployments).map(|i| {
        let name = format!("dep-{i}");
        let d = placed_deployment(
            &name,
            opts.replicas,
            &nodes[i % nodes.len()],
            json!({"app": name}),
        );
        let api = deployments.clone();
        async move { api.create(&PostParams::default(), &d).await }
    });
    all_in_flight(creates).await?;
    wait_deployments(client, &ns, "dep-", 1, "all deployments available").await?;
    let to_available = started.elapsed().as_secs_f64();

    eprintln!("bench: {}: rolling out a new image", variant.label());
    let started = Instant::now();
    let patches = (0..opts.deployments).map(|i| {
        let api = deployments.clone();
        async move {
            let patch = json!({"spec": {"template": {"spec": {"containers": [
                {"name": "c", "image": "registry.k8s.io/pause:3.9"}]}}}});
            api.patch(
                &format!("dep-{i}"),
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
        }
    });
    all_in_flight(patches).await?;
    wait_deployments(client, &ns, "dep-", 2, "all deployments rolled out").await?;
    let rollout = started.elapsed().as_secs_f64();
    let usage = procstat::usage(record.pid);
    let apiserver_cpu_seconds = apiserver_cpu().zip(apiserver_before).map(|(a, b)| a - b);
    let requests = match (requests_before, super::request_counts(client).await) {
        (Some(before), Some(after)) => {
            super::print_request_delta(variant.label(), &before, &after);
            let ((all, writes), (all0, writes0)) = (totals(&after), totals(&before));
            Some((all - all0, writes - writes0))
        }
        _ => None,
    };
    record.stop(Duration::from_secs(10));

    eprintln!("bench: {}: cleaning up", variant.label());
    super::delete_namespace(client, &ns).await?;
    Ok(VariantResult {
        slice_latency_p50: percentile(&samples, 0.5),
        slice_latency_p99: percentile(&samples, 0.99),
        endpoints_measured: samples.len(),
        to_available_seconds: to_available,
        rollout_seconds: rollout,
        usage,
        apiserver_cpu_seconds,
        requests,
    })
}

pub async fn run(
    state: &ClusterState,
    opts: &Options,
    variants: &[Variant],
) -> anyhow::Result<Vec<(Variant, VariantResult)>> {
    let client = wait::client_for(&state.kubeconfig).await?;
    let nodes = super::node_names(&client).await?;
    anyhow::ensure!(!nodes.is_empty(), "the bench cluster has no nodes");
    let mut results = vec![];
    for v in variants {
        results.push((*v, run_variant(*v, state, opts, &client, &nodes).await?));
    }
    Ok(results)
}

/// A markdown table of the results with ratios against upstream.
pub fn report(results: &[(Variant, VariantResult)], opts: &Options) -> String {
    let mut out = format!(
        "Controllers: {} Services × {} pods (slice latency), {} Deployments × {} replicas (to Available, then a rollout), client QPS/burst {}\n\n\
         | controllers | slice latency p50 | p99 | to Available | rollout | CPU s | peak RSS | apiserver CPU s | API requests (writes) |\n|---|---|---|---|---|---|---|---|---|\n",
        opts.services, opts.pods_per_service, opts.deployments, opts.replicas, opts.qps
    );
    for (v, r) in results {
        let (cpu, rss) = match r.usage {
            Some(u) => (
                format!("{:.1}", u.cpu_seconds),
                format!("{:.0} MiB", u.peak_rss_bytes as f64 / (1024.0 * 1024.0)),
            ),
            None => ("–".into(), "–".into()),
        };
        out.push_str(&format!(
            "| {} | {:.0} ms | {:.0} ms | {:.1} s | {:.1} s | {cpu} | {rss} | {} | {} |\n",
            v.label(),
            r.slice_latency_p50 * 1000.0,
            r.slice_latency_p99 * 1000.0,
            r.to_available_seconds,
            r.rollout_seconds,
            r.apiserver_cpu_seconds
                .map_or("–".into(), |c| format!("{c:.1}")),
            r.requests.map_or("–".into(), |(all, writes)| format!(
                "{all:.0} ({writes:.0})"
            )),
        ));
    }
    let find = |want: Variant| {
        results
            .iter()
            .find(|(v, _)| *v == want)
            .map(|(_, r)| r.clone())
    };
    if let (Some(u), Some(o)) = (find(Variant::Upstream), find(Variant::Understudy)) {
        out.push_str(&format!(
            "\nunderstudy / upstream: to Available {:.2}×, rollout {:.2}× (time; lower is faster)",
            o.to_available_seconds / u.to_available_seconds,
            o.rollout_seconds / u.rollout_seconds,
        ));
        if let (Some(ou), Some(uu)) = (o.usage, u.usage) {
            out.push_str(&format!(
                ", CPU seconds {:.2}×, peak RSS {:.2}×",
                ou.cpu_seconds / uu.cpu_seconds,
                ou.peak_rss_bytes as f64 / uu.peak_rss_bytes as f64
            ));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_count_writes_by_verb() {
        let counts: BTreeMap<String, f64> = [
            (r#"{code="201",resource="pods",verb="POST"}"#, 3.0),
            (r#"{code="200",resource="pods",verb="GET"}"#, 5.0),
            (r#"{code="200",resource="replicasets",verb="PATCH"}"#, 2.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(totals(&counts), (10.0, 5.0));
    }
}
