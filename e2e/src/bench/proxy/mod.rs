//! Proxy benchmark: upstream kube-proxy, then understudy-proxy, in the same
//! mode, over the same N selectorless Services × 5 endpoints (EndpointSlices
//! written directly), each proxy alone in a network namespace of the bench's
//! own (see [`netns`]). After upstream's kube-proxy scale tests: the first full
//! sync with every object present, a series of one-endpoint changes (partial
//! syncs and network programming latency, from each proxy's own kube-proxy
//! metrics), a full resync after the tables were flushed (both proxies' own
//! periodic full sync is hourly, and upstream's never comes past 1000
//! endpoints), the size of the rules, the first packet to ClusterIPs spread
//! over the whole service chain, CPU seconds and peak RSS.

pub mod figures;
pub mod netns;
pub mod objects;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::procstat;
use crate::certs::{KUBE_PROXY, Pki};
use crate::process::{self, ProcessRecord};
use crate::realnode::forward;
use crate::state::ClusterState;
use figures::{ProxyFigures, RulesSize, Scrape};
use netns::BenchNetns;

/// The proxy modes both proxies are run in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Iptables,
    Nftables,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Iptables => "iptables",
            Self::Nftables => "nftables",
        }
    }

    /// The size of the whole ruleset inside `ns`, as its tool prints it.
    fn dump(self, ns: &BenchNetns) -> anyhow::Result<RulesSize> {
        Ok(match self {
            Self::Iptables => RulesSize::of(
                &ns.output("iptables-save", &[])?,
                figures::iptables_service_chain,
            ),
            Self::Nftables => RulesSize::of(
                &ns.output("nft", &["list", "ruleset"])?,
                figures::nft_service_chain,
            ),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Upstream,
    Understudy,
}

impl Variant {
    pub fn label(self) -> &'static str {
        match self {
            Self::Upstream => "kube-proxy",
            Self::Understudy => "understudy-proxy",
        }
    }
    /// The empty chain whose disappearance (from mangle, nat and filter)
    /// tells the proxy its tables were flushed.
    fn canary_chain(self) -> &'static str {
        match self {
            Self::Upstream => "KUBE-PROXY-CANARY",
            Self::Understudy => "US-PROXY-CANARY",
        }
    }
    fn slug(self) -> &'static str {
        match self {
            Self::Upstream => "kube",
            Self::Understudy => "ours",
        }
    }
    /// Where the proxy serves /metrics inside its namespace: kube-proxy on
    /// its metrics address, ours on its one server, placed by the file's
    /// healthz address.
    fn metrics_addr(self) -> SocketAddr {
        match self {
            Self::Upstream => SocketAddr::from((Ipv4Addr::LOCALHOST, 10249)),
            Self::Understudy => SocketAddr::from((Ipv4Addr::LOCALHOST, 10256)),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub services: usize,
    pub mode: Mode,
    /// One-endpoint changes, one at a time.
    pub changes: usize,
    /// ClusterIPs probed for the first-packet latency.
    pub probes: usize,
    /// Both proxies' `syncPeriod` (how often they look for their canary).
    pub sync_period: Duration,
    /// Both proxies' `minSyncPeriod`; the changes are spaced by it, so none
    /// waits on the rate limit.
    pub min_sync_period: Duration,
    /// Measure the full resync after a flush (iptables mode): another full
    /// restore, minutes long at 10000 Services with iptables-nft.
    pub resync: bool,
    pub components_dir: PathBuf,
}

const NAMESPACE: &str = "bench-proxy";

/// KubeProxyConfiguration given to both proxies (the fields ours reads are a
/// subset of upstream's, all spelled the same).
pub fn proxy_config(opts: &Options, kubeconfig: &std::path::Path, node: &str) -> String {
    let periods = serde_json::json!({
        "syncPeriod": format!("{}s", opts.sync_period.as_secs()),
        "minSyncPeriod": format!("{}ms", opts.min_sync_period.as_millis()),
    });
    let conf = serde_json::json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": opts.mode.as_str(),
        // Only LIST and WATCH: the limiter never binds, but both get the same.
        "clientConnection": {"kubeconfig": kubeconfig, "qps": 1000, "burst": 1000},
        "hostnameOverride": node,
        "bindAddress": "127.0.0.1",
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        // nf_conntrack_max is the machine's, read-only in a namespace: leave it.
        "conntrack": {"maxPerCore": 0},
        "iptables": periods.clone(),
        "nftables": periods,
    });
    serde_yaml::to_string(&conf).expect("static YAML")
}

/// Runs `calls` 32 at a time, failing on the first error.
async fn all_in_flight<T>(
    calls: impl Iterator<Item = impl std::future::Future<Output = Result<T, kube::Error>>>,
) -> Result<Vec<T>, kube::Error> {
    futures::stream::iter(calls)
        .buffered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

fn unix_seconds(at: k8s_openapi::jiff::Timestamp) -> f64 {
    at.as_nanosecond() as f64 / 1e9
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Creates the Services and their slices; the ClusterIPs, by Service index.
async fn create_objects(client: &Client, services: usize) -> anyhow::Result<Vec<Ipv4Addr>> {
    let started = Instant::now();
    let svc_api: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let slice_api: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let created = all_in_flight((0..services).map(|i| {
        let api = svc_api.clone();
        async move {
            api.create(&PostParams::default(), &objects::service(i))
                .await
        }
    }))
    .await?;
    let cluster_ips = created
        .iter()
        .map(|s| {
            s.spec
                .as_ref()
                .and_then(|spec| spec.cluster_ip.as_deref())
                .and_then(|ip| ip.parse().ok())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "Service {} has no ClusterIP",
                        s.metadata.name.as_deref().unwrap_or("?")
                    )
                })
        })
        .collect::<anyhow::Result<Vec<Ipv4Addr>>>()?;
    all_in_flight((0..services).map(|i| {
        let api = slice_api.clone();
        let slice = objects::endpoint_slice(i, &now_rfc3339());
        async move { api.create(&PostParams::default(), &slice).await }
    }))
    .await?;
    eprintln!(
        "bench: {services} Services and EndpointSlices created in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(cluster_ips)
}

/// A task aborted when dropped, so the relays end with the variant's run
/// (also when it fails or is interrupted).
struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The proxy process, stopped when dropped (before its namespace goes).
struct ProxyGuard(ProcessRecord);

impl Drop for ProxyGuard {
    fn drop(&mut self) {
        self.0.stop(Duration::from_secs(10));
    }
}

/// The proxy's /metrics through the reverse relay.
struct MetricsReader {
    http: reqwest::Client,
    url: String,
}

impl MetricsReader {
    async fn scrape(&self) -> anyhow::Result<Scrape> {
        let text = self
            .http
            .get(&self.url)
            .timeout(Duration::from_secs(10))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(Scrape::parse(&text))
    }

    /// Scrapes until `done` holds, the process dies, or `timeout` passes.
    async fn until(
        &self,
        what: &str,
        timeout: Duration,
        proxy: &ProcessRecord,
        done: impl Fn(&Scrape) -> bool,
    ) -> anyhow::Result<Option<Scrape>> {
        let deadline = Instant::now() + timeout;
        loop {
            anyhow::ensure!(
                proxy.is_alive(),
                "{} exited while waiting for {what}; its log ends:\n{}",
                proxy.name,
                proxy.log_tail(30)
            );
            if let Ok(scrape) = self.scrape().await
                && done(&scrape)
            {
                return Ok(Some(scrape));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            // Both proxies are scraped at this pace; what a scrape costs them
            // is in their CPU seconds.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Connect times to `targets` from inside `ns` (each a new connection, so
/// each first packet walks the proxy's rules), sorted; and the failures.
fn probe_first_packets(
    netns: &std::path::Path,
    targets: Vec<SocketAddr>,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let (mut times, failed) = forward::in_netns(netns, move || {
        let mut times = vec![];
        let mut failed = 0;
        for to in targets {
            let started = Instant::now();
            match std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
                Ok(_) => times.push(started.elapsed().as_secs_f64()),
                Err(_) => failed += 1,
            }
        }
        Ok((times, failed))
    })?;
    times.sort_by(f64::total_cmp);
    Ok((times, failed))
}

struct Shared<'a> {
    state: &'a ClusterState,
    opts: &'a Options,
    client: &'a Client,
    node: &'a str,
    cluster_ips: &'a [Ipv4Addr],
}

async fn run_variant(
    variant: Variant,
    shared: &Shared<'_>,
    next_change: &mut usize,
) -> anyhow::Result<ProxyFigures> {
    let Shared {
        state,
        opts,
        client,
        node,
        cluster_ips,
    } = *shared;
    let label = variant.label();
    let ns = BenchNetns::create(
        &format!("us-bench-{}", variant.slug()),
        crate::controlplane::SERVICE_CIDR,
    )?;
    let apiserver: SocketAddr = state
        .server
        .trim_start_matches("https://")
        .parse()
        .map_err(|e| anyhow::anyhow!("the lab's server {}: {e}", state.server))?;
    let listeners = forward::bind_in_netns(&ns.path(), &[apiserver])?;
    let _apiserver_relay = TaskGuard(tokio::spawn(async move {
        if let Err(e) = forward::relay(listeners, apiserver).await {
            eprintln!("bench: apiserver relay: {e}");
        }
    }));
    let endpoint_listener = forward::bind_in_netns(
        &ns.path(),
        &[SocketAddr::from((
            Ipv4Addr::UNSPECIFIED,
            objects::TARGET_PORT,
        ))],
    )?
    .remove(0);
    let endpoint_listener = tokio::net::TcpListener::from_std(endpoint_listener)?;
    let _endpoints = TaskGuard(tokio::spawn(async move {
        // Every endpoint: accept and close.
        while endpoint_listener.accept().await.is_ok() {}
    }));
    let front = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let metrics = MetricsReader {
        http: reqwest::Client::new(),
        url: format!("http://{}/metrics", front.local_addr()?),
    };
    let (path, to) = (ns.path(), variant.metrics_addr());
    let _metrics_relay = TaskGuard(tokio::spawn(async move {
        let _ = forward::relay_into_netns(front, path, to).await;
    }));

    let dir = state
        .state_dir
        .join(format!("bench-proxy-{}", variant.slug()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    crate::kubeconfig::write(
        &kubeconfig,
        &state.name,
        &state.server,
        &Pki {
            dir: state.state_dir.join("pki"),
        },
        &KUBE_PROXY,
    )?;
    let config = dir.join("config.yaml");
    std::fs::write(&config, proxy_config(opts, &kubeconfig, node))?;
    let (program, mut args) = match variant {
        Variant::Upstream => (state.toolchain_dir.join("kube-proxy"), vec!["--v=0".into()]),
        Variant::Understudy => (
            opts.components_dir.join("understudy-proxy"),
            vec![format!("--log-level={}", super::log_level())],
        ),
    };
    args.insert(0, format!("--config={}", config.display()));
    let name = format!("bench-{label}");
    eprintln!("bench: {label}: starting in netns {}", ns.name());
    let started = Instant::now();
    let proxy = ProxyGuard(process::spawn(
        &name,
        std::path::Path::new("ip"),
        &ns.exec_args(&program, args),
        &state.logs_dir().join(format!("{name}.log")),
    )?);

    let first = metrics
        .until("the first sync", Duration::from_secs(3600), &proxy.0, |s| {
            s.full.count >= 1.0
        })
        .await?
        .ok_or_else(|| anyhow::anyhow!("{label}: no sync within 3600 s"))?;
    let to_first_sync = started.elapsed().as_secs_f64();
    let first_full_sync = first.full.mean().unwrap_or_default();
    eprintln!(
        "bench: {label}: first sync done after {to_first_sync:.1} s (the sync itself {first_full_sync:.2} s)"
    );

    let rules = opts.mode.dump(&ns)?;
    let targets: Vec<SocketAddr> = objects::spread(cluster_ips.len(), opts.probes)
        .into_iter()
        .map(|i| SocketAddr::from((cluster_ips[i], objects::SERVICE_PORT)))
        .collect();
    let path = ns.path();
    let (first_packet, packets_failed) =
        tokio::task::spawn_blocking(move || probe_first_packets(&path, targets)).await??;

    eprintln!("bench: {label}: {} one-endpoint changes", opts.changes);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let before = metrics.scrape().await?;
    let mut seen = before.programming.count;
    let mut changes_missed = 0;
    let mut programming_samples = vec![];
    for c in 0..opts.changes {
        // Each change comes minSyncPeriod after the last sync, so none waits
        // on the proxies' rate limit.
        tokio::time::sleep(opts.min_sync_period).await;
        let service = (c * 7919 + *next_change) % cluster_ips.len();
        let trigger = k8s_openapi::jiff::Timestamp::now();
        let (slice, patch) = objects::endpoint_change(service, *next_change, &trigger.to_string());
        *next_change += 1;
        slices
            .patch(&slice, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let observed = metrics
            .until(
                "a change's programming",
                Duration::from_secs(120),
                &proxy.0,
                |s| s.programming.count > seen,
            )
            .await?;
        match observed {
            Some(s) => {
                seen = s.programming.count;
                // The same span the histogram observes, to the nanosecond:
                // from the trigger time to the end of the sync that wrote it.
                programming_samples.push(s.last_sync - unix_seconds(trigger));
            }
            None => changes_missed += 1,
        }
    }
    programming_samples.sort_by(f64::total_cmp);
    let after = metrics.scrape().await?;

    let resync = match opts.mode {
        Mode::Iptables if opts.resync => {
            eprintln!("bench: {label}: deleting its canary chains (as a flush would)");
            let full_before = after.full.count;
            for table in ["mangle", "nat", "filter"] {
                if let Err(e) = ns.output("iptables", &["-t", table, "-X", variant.canary_chain()])
                {
                    eprintln!("bench: {label}: {e}");
                }
            }
            let done = metrics
                .until(
                    "the full resync",
                    opts.sync_period + Duration::from_secs(1800),
                    &proxy.0,
                    |s| s.full.count > full_before,
                )
                .await?;
            done.map(|s| s.full.since(&after.full))
                .and_then(|h| h.mean())
        }
        // No canary in nftables mode; the periodic full sync is hourly.
        Mode::Iptables | Mode::Nftables => None,
    };
    let usage = procstat::usage(proxy.0.pid);
    drop(proxy);
    eprintln!("bench: {label}: done");
    Ok(ProxyFigures {
        to_first_sync,
        first_full_sync,
        resync,
        partial: after.partial.since(&before.partial),
        programming: after.programming.since(&before.programming),
        programming_samples,
        changes_missed,
        rules,
        first_packet,
        packets_failed,
        usage,
    })
}

pub async fn run(
    state: &ClusterState,
    opts: &Options,
    variants: &[Variant],
) -> anyhow::Result<Vec<(Variant, ProxyFigures)>> {
    anyhow::ensure!(
        (1..=objects::MAX_SERVICES).contains(&opts.services),
        "--services must be 1..={} (the endpoints' address range)",
        objects::MAX_SERVICES
    );
    anyhow::ensure!(
        opts.changes * variants.len() <= objects::MAX_CHANGES,
        "--changes must be at most {} per proxy",
        objects::MAX_CHANGES / variants.len().max(1)
    );
    let client = crate::wait::client_for(&state.kubeconfig).await?;
    let node = super::node_names(&client)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the bench cluster has no node for the proxies to serve"))?;
    super::create_namespace(&client, NAMESPACE).await?;
    let cluster_ips = create_objects(&client, opts.services).await?;
    let shared = Shared {
        state,
        opts,
        client: &client,
        node: &node,
        cluster_ips: &cluster_ips,
    };
    let mut next_change = 0;
    let mut results = vec![];
    for v in variants {
        results.push((*v, run_variant(*v, &shared, &mut next_change).await?));
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_proxies_get_the_same_periods_in_the_chosen_mode() {
        let opts = Options {
            services: 10,
            mode: Mode::Nftables,
            changes: 1,
            probes: 1,
            sync_period: Duration::from_secs(30),
            min_sync_period: Duration::from_secs(1),
            resync: true,
            components_dir: PathBuf::new(),
        };
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&proxy_config(&opts, std::path::Path::new("/k"), "node-0"))
                .unwrap();
        assert_eq!(doc["mode"], "nftables");
        assert_eq!(doc["hostnameOverride"], "node-0");
        assert_eq!(doc["nftables"]["syncPeriod"], "30s");
        assert_eq!(doc["nftables"]["minSyncPeriod"], "1000ms");
        assert_eq!(doc["clientConnection"]["kubeconfig"], "/k");
    }
}
