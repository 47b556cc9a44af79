//! PV binder benchmark: N static volumes and N claims to all Bound, with
//! upstream's binder (kube-controller-manager running only
//! `persistentvolume-binder-controller`), ours, and a "null binder" — the
//! bench itself making exactly the four writes a bind needs (volume
//! claimRef, volume status, claim volumeName, claim status) for claim i and
//! volume i, many in flight, deciding nothing: the apiserver's pace for
//! that work here, the ceiling any binder is measured against.
//!
//! Each variant, in a namespace and storage class of its own, on a lab whose
//! kube-controller-manager runs no binder:
//! 1. backlog: N volumes (Available, as a binder that saw them created
//!    leaves them) and N claims exist before the binder starts; time
//!    until all are Bound, the pace (pairs/s, from the first bind seen to the
//!    last), and the API writes the apiserver served meanwhile;
//! 2. latency (not for the null binder): with the binder running, N more
//!    volumes, then N more claims created 16 at a time; for each, from its
//!    create to the claim seen Bound.
//!
//! The null binder's pace moves by ±30 % between runs on a small machine,
//! so `--rounds` repeats the whole sequence and the summary compares each
//! binder with the null binder of its own round, then takes the median.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::procstat::{self, ProcUsage};
use super::write_costs::median;
use crate::binder::{self, Binder, BinderOptions, BoundWatch, RunningBinder};
use crate::state::ClusterState;
use crate::wait;

const LONG: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Null,
    /// The null binder fed by watches of volumes and claims, as any binder
    /// must learn of them: the ceiling of a binder that decides nothing.
    NullWatching,
    Upstream,
    Understudy,
}

impl Variant {
    pub fn label(self) -> &'static str {
        match self {
            Self::Null => "null binder (4 writes per pair, no decisions)",
            Self::NullWatching => "watching null binder (the same, from watches)",
            Self::Upstream => Binder::Upstream.label(),
            Self::Understudy => Binder::Ours.label(),
        }
    }
    fn slug(self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::NullWatching => "null-watch",
            Self::Upstream => Binder::Upstream.slug(),
            Self::Understudy => Binder::Ours.slug(),
        }
    }
    fn binder(self) -> Option<Binder> {
        match self {
            Self::Null | Self::NullWatching => None,
            Self::Upstream => Some(Binder::Upstream),
            Self::Understudy => Some(Binder::Ours),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Volumes and claims per phase.
    pub pairs: usize,
    /// Client QPS and burst of both binders.
    pub qps: u32,
    /// Pairs the null binder binds at once.
    pub in_flight: usize,
    /// Times the whole sequence of variants runs, one after the other.
    pub rounds: usize,
    pub components_dir: PathBuf,
}

/// The writes one bind needs, as upstream makes them: the volume's claimRef,
/// its phase, the claim's volumeName, its phase.
pub const WRITES_PER_BIND: f64 = 4.0;

#[derive(Clone, Debug, Default)]
pub struct VariantResult {
    /// From the binder's start to the last claim seen Bound (backlog).
    pub to_all_bound_seconds: f64,
    /// Pairs per second from the first bind seen to the last (backlog).
    pub pairs_per_second: f64,
    pub latency_p50: Option<f64>,
    pub latency_p99: Option<f64>,
    /// Writes to volumes, claims and Events during the backlog phase, less
    /// pvc-protection's one `Unused` condition per Bound claim.
    pub binder_writes: Option<f64>,
    /// Every write the apiserver served during the backlog phase.
    pub all_writes: Option<f64>,
    pub usage: Option<ProcUsage>,
    pub apiserver_cpu_seconds: Option<f64>,
}

/// (writes to volumes, claims and Events; all writes) among request counters.
fn writes(counts: &BTreeMap<String, f64>) -> (f64, f64) {
    let is_write = |series: &str| {
        ["POST", "PUT", "PATCH", "DELETE"]
            .iter()
            .any(|v| series.contains(&format!("verb=\"{v}\"")))
    };
    let of_binder = |series: &str| {
        ["persistentvolumes", "persistentvolumeclaims", "events"]
            .iter()
            .any(|r| series.contains(&format!("resource=\"{r}\"")))
    };
    let mut binder = 0.0;
    let mut all = 0.0;
    for (series, n) in counts {
        if is_write(series) {
            all += n;
            if of_binder(series) {
                binder += n;
            }
        }
    }
    (binder, all)
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .collect()
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

/// Binds claim i to volume i with the four writes a bind needs, `in_flight`
/// pairs at a time, each pair's writes in upstream's order.
async fn null_bind(client: &Client, ns: &str, class: &str, opts: &Options) -> anyhow::Result<()> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let by_volume: BTreeMap<String, PersistentVolume> = binder::volumes_of(client, class)
        .await?
        .into_iter()
        .map(|v| (v.name_any(), v))
        .collect();
    let by_claim: BTreeMap<String, PersistentVolumeClaim> = claims
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|c| (c.name_any(), c))
        .collect();
    bind_pairs(client, ns, class, opts, by_volume, by_claim).await
}

/// A watch of every `K` into a shared map by name, until aborted; `synced`
/// turns true once the initial list is in.
fn watch_into<K>(
    api: Api<K>,
    into: Arc<Mutex<BTreeMap<String, K>>>,
    synced: tokio::sync::watch::Sender<bool>,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
        loop {
            match stream.try_next().await {
                Ok(Some(watcher::Event::InitApply(mut o) | watcher::Event::Apply(mut o))) => {
                    o.meta_mut().managed_fields = None;
                    into.lock().expect("watch map").insert(o.name_any(), o);
                }
                Ok(Some(watcher::Event::Delete(o))) => {
                    into.lock().expect("watch map").remove(&o.name_any());
                }
                Ok(Some(watcher::Event::InitDone)) => {
                    let _ = synced.send(true);
                }
                Ok(Some(watcher::Event::Init)) => {}
                Ok(None) => return,
                Err(e) => eprintln!("bench: watching null binder: {e}"),
            }
        }
    })
}

/// The null binder with what it binds learned from watches of every volume
/// and claim (as a binder's informers), kept running while it binds so that
/// each of its writes comes back to it, as to any binder.
async fn null_bind_watching(
    client: &Client,
    ns: &str,
    class: &str,
    opts: &Options,
) -> anyhow::Result<()> {
    let volumes = Arc::new(Mutex::new(BTreeMap::new()));
    let claims = Arc::new(Mutex::new(BTreeMap::new()));
    let (volumes_synced, mut volumes_rx) = tokio::sync::watch::channel(false);
    let (claims_synced, mut claims_rx) = tokio::sync::watch::channel(false);
    let watches = [
        watch_into(
            Api::<PersistentVolume>::all(client.clone()),
            volumes.clone(),
            volumes_synced,
        ),
        watch_into(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            claims.clone(),
            claims_synced,
        ),
    ];
    let synced = async {
        volumes_rx.wait_for(|s| *s).await?;
        claims_rx.wait_for(|s| *s).await?;
        anyhow::Ok(())
    };
    let bound = match synced.await {
        Ok(()) => {
            let of_class = |v: &PersistentVolume| {
                v.spec
                    .as_ref()
                    .and_then(|s| s.storage_class_name.as_deref())
                    == Some(class)
            };
            let by_volume = volumes
                .lock()
                .expect("watch map")
                .values()
                .filter(|v| of_class(v))
                .map(|v| (v.name_any(), v.clone()))
                .collect();
            let by_claim = claims
                .lock()
                .expect("watch map")
                .values()
                .filter(|c| c.namespace().as_deref() == Some(ns))
                .map(|c| (c.name_any(), c.clone()))
                .collect();
            bind_pairs(client, ns, class, opts, by_volume, by_claim).await
        }
        Err(e) => Err(e),
    };
    for w in watches {
        w.abort();
    }
    bound
}

async fn bind_pairs(
    client: &Client,
    ns: &str,
    class: &str,
    opts: &Options,
    mut by_volume: BTreeMap<String, PersistentVolume>,
    mut by_claim: BTreeMap<String, PersistentVolumeClaim>,
) -> anyhow::Result<()> {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pairs: Vec<(PersistentVolume, PersistentVolumeClaim)> = (0..opts.pairs)
        .filter_map(|i| {
            Some((
                by_volume.remove(&binder::volume_name(class, i))?,
                by_claim.remove(&binder::claim_name(i))?,
            ))
        })
        .collect();
    anyhow::ensure!(
        pairs.len() == opts.pairs,
        "the null binder found {} pairs",
        pairs.len()
    );
    let results: Vec<kube::Result<()>> = futures::stream::iter(pairs)
        .map(|(volume, claim)| {
            let (volumes, claims, ns) = (volumes.clone(), claims.clone(), ns.to_string());
            async move { bind_pair(&volumes, &claims, &ns, volume, claim).await }
        })
        .buffer_unordered(opts.in_flight.max(1))
        .collect()
        .await;
    results.into_iter().try_for_each(|r| r)?;
    Ok(())
}

async fn bind_pair(
    volumes: &Api<PersistentVolume>,
    claims: &Api<PersistentVolumeClaim>,
    ns: &str,
    mut volume: PersistentVolume,
    mut claim: PersistentVolumeClaim,
) -> kube::Result<()> {
    let pp = PostParams::default();
    let (vname, cname) = (volume.name_any(), claim.name_any());
    volume
        .annotations_mut()
        .insert("pv.kubernetes.io/bound-by-controller".into(), "yes".into());
    if let Some(spec) = volume.spec.as_mut() {
        spec.claim_ref = Some(
            serde_json::from_value(json!({
                "kind": "PersistentVolumeClaim", "apiVersion": "v1",
                "namespace": ns, "name": cname,
                "uid": claim.metadata.uid, "resourceVersion": claim.metadata.resource_version,
            }))
            .expect("claimRef"),
        );
    }
    let mut volume = volumes.replace(&vname, &pp, &volume).await?;
    volume.status = Some(serde_json::from_value(json!({"phase": "Bound"})).expect("status"));
    volumes.replace_status(&vname, &pp, &volume).await?;

    for key in [
        "pv.kubernetes.io/bind-completed",
        "pv.kubernetes.io/bound-by-controller",
    ] {
        claim.annotations_mut().insert(key.into(), "yes".into());
    }
    if let Some(spec) = claim.spec.as_mut() {
        spec.volume_name = Some(vname.clone());
    }
    let mut claim = claims.replace(&cname, &pp, &claim).await?;
    let spec = volume.spec.clone().unwrap_or_default();
    // The status as it is, conditions (pvc-protection's Unused) kept.
    let status = claim.status.get_or_insert_with(Default::default);
    status.phase = Some("Bound".into());
    status.access_modes = spec.access_modes;
    status.capacity = spec.capacity;
    claims.replace_status(&cname, &pp, &claim).await?;
    Ok(())
}

async fn wait_available(client: &Client, class: &str, count: usize) -> anyhow::Result<()> {
    wait::until("new volumes Available", LONG, || async {
        let vols = binder::volumes_of(client, class)
            .await
            .map_err(|e| e.to_string())?;
        let available = vols
            .iter()
            .filter(|v| v.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Available"))
            .count();
        Ok((available >= count).then_some(()))
    })
    .await?;
    Ok(())
}

/// Waits until kube-controller-manager's pvc-protection controller has
/// written its `Unused` condition (feature PersistentVolumeClaimUnusedSinceTime)
/// on `count` claims, which it does once a claim is Bound, and returns how
/// many carry it: each is one write of the control plane, not of the
/// binder, that a bind brings about. Without the feature no claim gets the
/// condition: go on after a while.
async fn marked_unused(client: &Client, ns: &str, count: usize) -> usize {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let marked = || async {
        let list = claims
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok::<usize, String>(
            list.items
                .iter()
                .filter(|c| {
                    c.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Unused"))
                })
                .count(),
        )
    };
    let all = wait::until("claims marked Unused", Duration::from_secs(30), || async {
        Ok((marked().await? >= count).then_some(count))
    })
    .await;
    match all {
        Ok(n) => n,
        Err(_) => marked().await.unwrap_or(0),
    }
}

async fn run_variant(
    variant: Variant,
    state: &ClusterState,
    opts: &Options,
    client: &Client,
) -> anyhow::Result<VariantResult> {
    let ns = format!("bench-binder-{}", variant.slug());
    let class = ns.clone();
    super::create_namespace(client, &ns).await?;
    let n = opts.pairs;
    eprintln!("bench: {}: {n} volumes and {n} claims", variant.label());
    binder::create_volumes(client, &class, 0, n, 32).await?;
    binder::create_claims(client, &ns, &class, 0, n, 32).await?;
    binder::mark_available(client, &class, 32).await?;
    let mut bound = BoundWatch::start(client, &ns);

    let apiserver = state.process("kube-apiserver").map(|p| p.pid);
    let apiserver_cpu = || apiserver.and_then(procstat::usage).map(|u| u.cpu_seconds);
    let apiserver_before = apiserver_cpu();
    let requests_before = super::request_counts(client).await;
    let binder_opts = BinderOptions {
        kubeconfig: state.kubeconfig.clone(),
        toolchain_dir: state.toolchain_dir.clone(),
        components_dir: opts.components_dir.clone(),
        work_dir: state.logs_dir(),
        lease: None,
        qps: opts.qps,
        log_level: super::log_level(),
    };
    eprintln!("bench: {}: binding the backlog", variant.label());
    let started = Instant::now();
    let running = match variant.binder() {
        Some(b) => Some(RunningBinder::start(
            b,
            &binder_opts,
            &format!("bench-binder-{}", b.slug()),
        )?),
        None if variant == Variant::NullWatching => {
            null_bind_watching(client, &ns, &class, opts).await?;
            None
        }
        None => {
            null_bind(client, &ns, &class, opts).await?;
            None
        }
    };
    bound.wait_for(n, LONG).await.map_err(anyhow::Error::msg)?;
    let times: Vec<Instant> = bound.bound_at().into_values().collect();
    let protection_writes = marked_unused(client, &ns, n).await as f64;
    let first = times.iter().min().copied().unwrap_or(started);
    let last = times.iter().max().copied().unwrap_or(started);
    let requests = match (requests_before, super::request_counts(client).await) {
        (Some(before), Some(after)) => {
            super::print_request_delta(variant.label(), &before, &after);
            let (binder, all) = writes(&delta(&before, &after));
            Some((binder - protection_writes, all))
        }
        _ => None,
    };
    let apiserver_cpu_seconds = apiserver_cpu().zip(apiserver_before).map(|(a, b)| a - b);

    let mut latencies = vec![];
    if running.is_some() {
        eprintln!(
            "bench: {}: {n} more claims, one by one as they come",
            variant.label()
        );
        binder::create_volumes(client, &class, n, n, 32).await?;
        wait_available(client, &class, n).await?;
        let created = binder::create_claims(client, &ns, &class, n, n, 16).await?;
        bound
            .wait_for(2 * n, LONG)
            .await
            .map_err(anyhow::Error::msg)?;
        let seen = bound.bound_at();
        latencies = created
            .iter()
            .filter_map(|(name, at)| {
                Some(seen.get(name)?.saturating_duration_since(*at).as_secs_f64())
            })
            .collect();
        latencies.sort_by(f64::total_cmp);
    }
    let usage = running.as_ref().and_then(|r| procstat::usage(r.record.pid));
    if let Some(r) = running {
        r.stop(Duration::from_secs(10));
    }
    drop(bound);

    eprintln!("bench: {}: cleaning up", variant.label());
    super::delete_namespace(client, &ns).await?;
    binder::delete_volumes(client, &class, LONG).await?;
    Ok(VariantResult {
        to_all_bound_seconds: last.saturating_duration_since(started).as_secs_f64(),
        pairs_per_second: n as f64
            / last
                .saturating_duration_since(first)
                .as_secs_f64()
                .max(1e-3),
        latency_p50: percentile(&latencies, 0.5),
        latency_p99: percentile(&latencies, 0.99),
        binder_writes: requests.map(|(b, _)| b),
        all_writes: requests.map(|(_, a)| a),
        usage,
        apiserver_cpu_seconds,
    })
}

pub async fn run(
    state: &ClusterState,
    opts: &Options,
    variants: &[Variant],
) -> anyhow::Result<Vec<Vec<(Variant, VariantResult)>>> {
    let client = wait::client_for(&state.kubeconfig).await?;
    let mut rounds = vec![];
    for round in 1..=opts.rounds.max(1) {
        let mut results = vec![];
        for v in variants {
            results.push((*v, run_variant(*v, state, opts, &client).await?));
        }
        if opts.rounds > 1 {
            // Printed as it comes: a long series is still worth its
            // finished rounds if it is stopped.
            println!("round {round}:\n{}", report(&results, opts));
        }
        rounds.push(results);
    }
    Ok(rounds)
}

fn ratios(rounds: &[Vec<(Variant, VariantResult)>], of: Variant, over: Variant) -> Vec<f64> {
    super::ratios_by_round(rounds, of, over, |r| r.pairs_per_second)
}

/// Over several rounds: each binder's pace against the null binder's and
/// ours against upstream's, as the median of the per-round ratios.
pub fn summary(rounds: &[Vec<(Variant, VariantResult)>]) -> String {
    let mut out = format!(
        "summary of {} rounds (median of per-round ratios):\n",
        rounds.len()
    );
    let line = |what: &str, values: Vec<f64>, percent: bool| {
        if values.is_empty() {
            return String::new();
        }
        let shown = |v: f64| {
            if percent {
                format!("{:.0} %", 100.0 * v)
            } else {
                format!("{v:.2}×")
            }
        };
        let each: Vec<String> = values.iter().map(|v| shown(*v)).collect();
        format!(
            "- {what}: median {} (rounds: {})\n",
            shown(median(values.clone())),
            each.join(", ")
        )
    };
    out.push_str(&line(
        "understudy / null binder (target ≥ 80 %)",
        ratios(rounds, Variant::Understudy, Variant::Null),
        true,
    ));
    out.push_str(&line(
        "understudy / watching null binder",
        ratios(rounds, Variant::Understudy, Variant::NullWatching),
        true,
    ));
    out.push_str(&line(
        "watching null binder / null binder",
        ratios(rounds, Variant::NullWatching, Variant::Null),
        true,
    ));
    out.push_str(&line(
        "upstream / null binder",
        ratios(rounds, Variant::Upstream, Variant::Null),
        true,
    ));
    out.push_str(&line(
        "understudy / upstream (target ≥ 5×)",
        ratios(rounds, Variant::Understudy, Variant::Upstream),
        false,
    ));
    out
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |s| format!("{:.0} ms", s * 1000.0))
}

/// A markdown table of the results, with ours against upstream's pace
/// (target ≥ 5×) and against the null binder's (target ≥ 80 %).
pub fn report(results: &[(Variant, VariantResult)], opts: &Options) -> String {
    let n = opts.pairs;
    let mut out = format!(
        "PV binder: {n} volumes + {n} claims to Bound (backlog), then {n} + {n} more created \
         as they come (latency), client QPS/burst {}; binder's writes: to volumes, claims and Events \
         during the backlog, less pvc-protection's Unused condition on each Bound claim\n\n\
         | binder | to all Bound | pairs/s | bind latency p50 | p99 | binder's writes (per pair) | all writes | CPU s | peak RSS | apiserver CPU s |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        opts.qps
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
            "| {} | {:.1} s | {:.0} | {} | {} | {} | {} | {cpu} | {rss} | {} |\n",
            v.label(),
            r.to_all_bound_seconds,
            r.pairs_per_second,
            ms(r.latency_p50),
            ms(r.latency_p99),
            r.binder_writes.map_or("–".into(), |w| format!(
                "{w:.0} ({:.2})",
                w / n.max(1) as f64
            )),
            r.all_writes.map_or("–".into(), |w| format!("{w:.0}")),
            r.apiserver_cpu_seconds
                .map_or("–".into(), |c| format!("{c:.1}")),
        ));
    }
    let find = |want: Variant| results.iter().find(|(v, _)| *v == want).map(|(_, r)| r);
    if let Some(o) = find(Variant::Understudy) {
        let mut figures = vec![];
        if let Some(u) = find(Variant::Upstream) {
            figures.push(format!(
                "pairs/s {:.2}× upstream's (target ≥ 5×)",
                o.pairs_per_second / u.pairs_per_second
            ));
            if let (Some(ou), Some(uu)) = (o.usage, u.usage) {
                figures.push(format!(
                    "CPU seconds {:.2}×, peak RSS {:.2}×",
                    ou.cpu_seconds / uu.cpu_seconds,
                    ou.peak_rss_bytes as f64 / uu.peak_rss_bytes as f64
                ));
            }
        }
        if let Some(c) = find(Variant::Null) {
            figures.push(format!(
                "{:.0} % of the null binder's pace, the apiserver's ceiling for {WRITES_PER_BIND:.0} writes a pair (target ≥ 80 %)",
                100.0 * o.pairs_per_second / c.pairs_per_second
            ));
        }
        if !figures.is_empty() {
            out.push_str(&format!("\nunderstudy: {}\n", figures.join("; ")));
        }
    }
    if let (Some(w), Some(c)) = (find(Variant::NullWatching), find(Variant::Null)) {
        out.push_str(&format!(
            "watching null binder: {:.0} % of the null binder's pace\n",
            100.0 * w.pairs_per_second / c.pairs_per_second
        ));
    }
    if let (Some(u), Some(c)) = (find(Variant::Upstream), find(Variant::Null)) {
        out.push_str(&format!(
            "upstream: {:.0} % of the null binder's pace\n",
            100.0 * u.pairs_per_second / c.pairs_per_second
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(rows: &[(&str, f64)]) -> BTreeMap<String, f64> {
        rows.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn writes_split_the_binders_from_the_rest() {
        let before = counts(&[
            (
                r#"{resource="persistentvolumes",subresource="",verb="PUT"}"#,
                10.0,
            ),
            (r#"{resource="leases",subresource="",verb="PUT"}"#, 1.0),
        ]);
        let after = counts(&[
            (
                r#"{resource="persistentvolumes",subresource="",verb="PUT"}"#,
                30.0,
            ),
            (
                r#"{resource="persistentvolumes",subresource="status",verb="PUT"}"#,
                20.0,
            ),
            (
                r#"{resource="persistentvolumeclaims",subresource="",verb="PUT"}"#,
                20.0,
            ),
            (
                r#"{resource="persistentvolumeclaims",subresource="",verb="LIST"}"#,
                3.0,
            ),
            (r#"{resource="events",subresource="",verb="POST"}"#, 2.0),
            (r#"{resource="leases",subresource="",verb="PUT"}"#, 5.0),
        ]);
        assert_eq!(writes(&delta(&before, &after)), (62.0, 66.0));
    }

    #[test]
    fn summary_compares_each_round_with_its_own_null_binder() {
        let r = |pace: f64| VariantResult {
            pairs_per_second: pace,
            ..Default::default()
        };
        let rounds = vec![
            vec![(Variant::Null, r(100.0)), (Variant::Understudy, r(90.0))],
            vec![(Variant::Null, r(200.0)), (Variant::Understudy, r(120.0))],
            vec![(Variant::Null, r(50.0)), (Variant::Understudy, r(40.0))],
        ];
        let text = summary(&rounds);
        assert!(
            text.contains(
                "understudy / null binder (target ≥ 80 %): median 80 % (rounds: 90 %, 60 %, 80 %)"
            ),
            "{text}"
        );
        assert!(!text.contains("upstream"), "no upstream ran: {text}");
    }

    #[test]
    fn report_gives_both_targets() {
        let opts = Options {
            pairs: 100,
            qps: 1000,
            in_flight: 64,
            rounds: 1,
            components_dir: PathBuf::new(),
        };
        let r = |pace: f64| VariantResult {
            to_all_bound_seconds: 100.0 / pace,
            pairs_per_second: pace,
            binder_writes: Some(400.0),
            ..Default::default()
        };
        let text = report(
            &[
                (Variant::Null, r(200.0)),
                (Variant::Upstream, r(20.0)),
                (Variant::Understudy, r(180.0)),
            ],
            &opts,
        );
        assert!(text.contains("pairs/s 9.00× upstream's"), "{text}");
        assert!(text.contains("90 % of the null binder's pace"), "{text}");
        assert!(
            text.contains("upstream: 10 % of the null binder's pace"),
            "{text}"
        );
        assert!(text.contains("| 400 (4.00) |"), "{text}");
    }
}
