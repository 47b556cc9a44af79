//! understudy-bench: each understudy side by side with its upstream
//! counterpart on one local control plane. Prints figures and ratios; never
//! a pass/fail test.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use understudy_e2e::bench::scheduler::{self, Options, Variant, Workload};
use understudy_e2e::bench::{binder, controllers, proxy, write_costs};
use understudy_e2e::controlplane::{self, LabOptions};
use understudy_e2e::nodes::NodeTemplate;
use understudy_e2e::understudies::Understudy;

#[derive(Parser)]
#[command(
    name = "understudy-bench",
    about = "Understudy vs upstream, on one local control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// SchedulingBasic: null scheduler, kube-scheduler and understudy-scheduler.
    Scheduler {
        #[arg(long, default_value_t = 5000)]
        nodes: usize,
        #[arg(long, default_value_t = 1000)]
        existing: usize,
        #[arg(long, default_value_t = 10000)]
        pods: usize,
        /// Client QPS and burst of both schedulers (high, so the client limiter is not the bottleneck).
        #[arg(long, default_value_t = 5000)]
        qps: u32,
        /// Which to run: null, null-events, null-watch, kube, understudy (comma-separated).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "null,null-events,kube,understudy"
        )]
        only: Vec<String>,
        /// Directory of the understudy binaries (default: next to this binary).
        #[arg(long)]
        components_dir: Option<PathBuf>,
        /// Let kwok play each bound pod's kubelet (status to Running). Off by
        /// default: upstream's scheduler_perf runs no kubelet.
        #[arg(long)]
        kubelet: bool,
        /// Run the whole sequence this many times on one control plane and
        /// summarise ours' per-round ratios by their median.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// Preemption: nodes full of low-priority pods, high-priority pods arrive;
    /// kube-scheduler and understudy-scheduler.
    Preemption {
        #[arg(long, default_value_t = 500)]
        nodes: usize,
        /// Low-priority pods (1 CPU each; 4 fill a node).
        #[arg(long, default_value_t = 2000)]
        existing: usize,
        /// High-priority pods (1 CPU each), each needing one victim.
        #[arg(long, default_value_t = 500)]
        pods: usize,
        #[arg(long, default_value_t = 5000)]
        qps: u32,
        #[arg(long, value_delimiter = ',', default_value = "kube,understudy")]
        only: Vec<String>,
        #[arg(long)]
        components_dir: Option<PathBuf>,
        /// Let kwok play each bound pod's kubelet (status to Running). Off by
        /// default: upstream's scheduler_perf runs no kubelet.
        #[arg(long)]
        kubelet: bool,
    },
    /// What one pod create, bind and `Scheduled` Event costs the control
    /// plane (CPU ms per request), each phase alone: why the bind+event
    /// ceiling is below the binds-only one.
    WriteCosts {
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// Requests per phase and round.
        #[arg(long, default_value_t = 10000)]
        requests: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value_t = 128)]
        in_flight: usize,
        #[arg(long, default_value_t = 5000)]
        qps: u32,
    },
    /// kube-proxy and understudy-proxy, one after the other in the same mode,
    /// each in a network namespace of its own, over N Services × 5 endpoints:
    /// full and partial sync, network programming latency, rules size, first
    /// packet to a ClusterIP, CPU seconds and peak RSS.
    Proxy {
        /// Services (each with one EndpointSlice of 5 endpoints).
        #[arg(long, default_value_t = 10000)]
        services: usize,
        /// Proxy mode of both proxies.
        #[arg(long, value_enum, default_value = "iptables")]
        mode: proxy::Mode,
        /// One-endpoint changes per proxy (network programming latency, partial syncs).
        #[arg(long, default_value_t = 30)]
        changes: usize,
        /// ClusterIPs probed for the first-packet latency, spread over all Services.
        #[arg(long, default_value_t = 200)]
        probes: usize,
        /// Both proxies' syncPeriod, seconds (upstream's default: 30).
        #[arg(long, default_value_t = 30)]
        sync_period: u64,
        /// Both proxies' minSyncPeriod, milliseconds (upstream's default: 1000).
        #[arg(long, default_value_t = 1000)]
        min_sync_period_ms: u64,
        /// Skip the full resync after a flush (another full restore: minutes
        /// at 10000 Services with the nf_tables backend of iptables).
        #[arg(long)]
        no_resync: bool,
        /// Which to run: kube, understudy (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "kube,understudy")]
        only: Vec<String>,
        #[arg(long)]
        components_dir: Option<PathBuf>,
    },
    /// Deployments to Available, a rollout of all, and pod-ready →
    /// EndpointSlice latency: kube-controller-manager and understudy-controllers.
    Controllers {
        #[arg(long, default_value_t = 50)]
        nodes: usize,
        #[arg(long, default_value_t = 100)]
        deployments: usize,
        #[arg(long, default_value_t = 20)]
        replicas: usize,
        #[arg(long, default_value_t = 100)]
        services: usize,
        #[arg(long, default_value_t = 10)]
        pods_per_service: usize,
        /// Client QPS and burst of both controller managers.
        #[arg(long, default_value_t = 1000)]
        qps: u32,
        /// Which to run: kube, understudy (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "kube,understudy")]
        only: Vec<String>,
        #[arg(long)]
        components_dir: Option<PathBuf>,
    },
    /// PV binder: N static volumes and N claims to all Bound, then N more
    /// created as they come (bind latency); kube-controller-manager's binder,
    /// ours, and a null binder making only the writes a bind needs.
    Binder {
        /// Volumes and claims per phase.
        #[arg(long, default_value_t = 1000)]
        pairs: usize,
        /// Client QPS and burst of both binders.
        #[arg(long, default_value_t = 1000)]
        qps: u32,
        /// Pairs the null binder binds at once.
        #[arg(long, default_value_t = 64)]
        in_flight: usize,
        /// Run the whole sequence this many times and summarise the
        /// per-round ratios by their median.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Which to run: null, null-watch, kube, understudy (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "null,kube,understudy")]
        only: Vec<String>,
        #[arg(long)]
        components_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("understudy-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn resolve_components_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(match given {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
    })
}

/// The lab of the scheduler benches: `nodes` kwok nodes of 4 CPU and
/// 32 GiB, nothing replaced and no scheduler running.
fn scheduler_lab(nodes: usize, components_dir: PathBuf) -> LabOptions {
    LabOptions {
        name: "bench".into(),
        state_dir: scheduler::state_dir(),
        nodes,
        node_template: NodeTemplate {
            cpu: "4".into(),
            memory: "32Gi".into(),
            ..Default::default()
        },
        replaced: BTreeSet::new(),
        start_understudies: false,
        kube_scheduler: false,
        apiserver_port: None,
        components_dir,
        understudy_args: vec![],
        // Lease renewals of thousands of nodes would otherwise dominate the machine.
        node_lease_seconds: 600,
        real_nodes: 0,
        kwok: true,
        kubelet_args: vec![],
        backend: Default::default(),
        proxy_mode: Default::default(),
    }
}

/// Brings up the bench cluster, runs `work` on it, and always takes it down.
async fn with_cluster<T, F, Fut>(lab: LabOptions, work: F) -> anyhow::Result<T>
where
    F: FnOnce(understudy_e2e::state::ClusterState) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let state_dir = lab.state_dir.clone();
    // A previous run that was interrupted leaves its cluster; start clean.
    controlplane::down(&state_dir)?;
    eprintln!("bench: starting a control plane with {} nodes", lab.nodes);
    let state = tokio::select! {
        r = controlplane::up(&lab) => r,
        _ = tokio::signal::ctrl_c() => Err(controlplane::LabError::Io("interrupted".into())),
    };
    let state = match state {
        Ok(state) => state,
        Err(e) => {
            controlplane::down(&state_dir)?;
            return Err(e.into());
        }
    };
    let outcome = tokio::select! {
        r = work(state) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    keep_logs(&state_dir);
    controlplane::down(&state_dir)?;
    outcome
}

/// With a chosen log level (see `bench::log_level`) the logs are what the run
/// was for: copy them next to the state directory before it is removed.
fn keep_logs(state_dir: &std::path::Path) {
    if std::env::var_os("UNDERSTUDY_BENCH_LOG_LEVEL").is_none() {
        return;
    }
    let kept = state_dir.with_extension("logs");
    let _ = std::fs::remove_dir_all(&kept);
    if let Err(e) = std::fs::create_dir_all(&kept).and_then(|_| {
        for entry in std::fs::read_dir(state_dir.join("logs"))? {
            let entry = entry?;
            std::fs::copy(entry.path(), kept.join(entry.file_name()))?;
        }
        Ok(())
    }) {
        eprintln!("bench: could not keep the logs in {}: {e}", kept.display());
    } else {
        eprintln!("bench: logs kept in {}", kept.display());
    }
}

async fn run_controllers(command: Command) -> anyhow::Result<()> {
    let Command::Controllers {
        nodes,
        deployments,
        replicas,
        services,
        pods_per_service,
        qps,
        only,
        components_dir: dir,
    } = command
    else {
        unreachable!("called for the controllers command only")
    };
    let mut variants = vec![];
    for v in only {
        variants.push(match v.as_str() {
            "kube" => controllers::Variant::Upstream,
            "understudy" => controllers::Variant::Understudy,
            other => anyhow::bail!("--only: unknown variant {other:?} (kube, understudy)"),
        });
    }
    let opts = controllers::Options {
        deployments,
        replicas,
        services,
        pods_per_service,
        qps,
        components_dir: resolve_components_dir(dir)?,
    };
    let lab = LabOptions {
        name: "bench".into(),
        state_dir: scheduler::state_dir(),
        nodes,
        node_template: NodeTemplate::default(),
        // The lab's kube-controller-manager runs everything but the four
        // measured controllers; each variant brings its own.
        replaced: [Understudy::Controllers].into(),
        start_understudies: false,
        kube_scheduler: false,
        apiserver_port: None,
        components_dir: opts.components_dir.clone(),
        understudy_args: vec![],
        node_lease_seconds: 600,
        real_nodes: 0,
        kwok: true,
        kubelet_args: vec![],
        backend: Default::default(),
        proxy_mode: Default::default(),
    };
    let results = with_cluster(lab, |state| {
        let opts = opts.clone();
        async move { controllers::run(&state, &opts, &variants).await }
    })
    .await?;
    println!("{}", controllers::report(&results, &opts));
    Ok(())
}

async fn run_binder(command: Command) -> anyhow::Result<()> {
    let Command::Binder {
        pairs,
        qps,
        in_flight,
        rounds,
        only,
        components_dir,
    } = command
    else {
        unreachable!("called for the binder command only")
    };
    anyhow::ensure!(
        pairs > 0 && rounds > 0,
        "--pairs and --rounds must be positive"
    );
    let mut variants = vec![];
    for v in only {
        variants.push(match v.as_str() {
            "null" => binder::Variant::Null,
            "null-watch" => binder::Variant::NullWatching,
            "kube" => binder::Variant::Upstream,
            "understudy" => binder::Variant::Understudy,
            other => anyhow::bail!(
                "--only: unknown binder {other:?} (null, null-watch, kube, understudy)"
            ),
        });
    }
    let opts = binder::Options {
        pairs,
        qps,
        in_flight,
        rounds,
        components_dir: resolve_components_dir(components_dir)?,
    };
    let lab = LabOptions {
        name: "bench".into(),
        state_dir: scheduler::state_dir(),
        // Static hostPath volumes need no node.
        nodes: 0,
        node_template: NodeTemplate::default(),
        // The lab's kube-controller-manager runs no binder: each variant
        // brings its own.
        replaced: [Understudy::Controllers].into(),
        start_understudies: false,
        kube_scheduler: false,
        apiserver_port: None,
        components_dir: opts.components_dir.clone(),
        understudy_args: vec![],
        node_lease_seconds: 600,
        real_nodes: 0,
        kwok: false,
        kubelet_args: vec![],
        backend: Default::default(),
        proxy_mode: Default::default(),
    };
    let results = with_cluster(lab, |state| {
        let opts = opts.clone();
        async move { binder::run(&state, &opts, &variants).await }
    })
    .await?;
    match results.as_slice() {
        [one] => println!("{}", binder::report(one, &opts)),
        rounds => println!("{}", binder::summary(rounds)),
    }
    Ok(())
}

async fn run_write_costs(command: Command) -> anyhow::Result<()> {
    let Command::WriteCosts {
        nodes,
        requests,
        rounds,
        in_flight,
        qps,
    } = command
    else {
        unreachable!("called for the write-costs command only")
    };
    anyhow::ensure!(
        requests > 0 && rounds > 0 && in_flight > 0,
        "--requests, --rounds and --in-flight must be positive"
    );
    let opts = write_costs::Options {
        requests,
        rounds,
        in_flight,
        qps,
    };
    let lab = scheduler_lab(nodes, resolve_components_dir(None)?);
    let samples = with_cluster(lab, |state| {
        let opts = opts.clone();
        async move { write_costs::run(&state, &opts).await }
    })
    .await?;
    println!("{}", write_costs::report(&samples, &opts));
    Ok(())
}

async fn run_proxy(command: Command) -> anyhow::Result<()> {
    let Command::Proxy {
        services,
        mode,
        changes,
        probes,
        sync_period,
        min_sync_period_ms,
        no_resync,
        only,
        components_dir,
    } = command
    else {
        unreachable!("called for the proxy command only")
    };
    let mut variants = vec![];
    for v in only {
        variants.push(match v.as_str() {
            "kube" => proxy::Variant::Upstream,
            "understudy" => proxy::Variant::Understudy,
            other => anyhow::bail!("--only: unknown proxy {other:?} (kube, understudy)"),
        });
    }
    anyhow::ensure!(
        nix::unistd::Uid::effective().is_root(),
        "the proxy bench needs root: each proxy runs in a network namespace of its own"
    );
    let opts = proxy::Options {
        services,
        mode,
        changes,
        probes,
        sync_period: std::time::Duration::from_secs(sync_period),
        min_sync_period: std::time::Duration::from_millis(min_sync_period_ms),
        resync: !no_resync,
        components_dir: resolve_components_dir(components_dir)?,
    };
    // One kwok node: the Node object both proxies serve (--hostname-override).
    let lab = scheduler_lab(1, opts.components_dir.clone());
    let results = with_cluster(lab, |state| {
        let opts = opts.clone();
        async move { proxy::run(&state, &opts, &variants).await }
    })
    .await?;
    let find = |want: proxy::Variant| {
        results
            .iter()
            .find(|(v, _)| *v == want)
            .map(|(_, figures)| figures)
    };
    let heading = proxy::figures::Heading {
        services,
        mode: mode.as_str(),
        changes,
        probes: probes.min(services),
    };
    println!(
        "{}",
        proxy::figures::report(
            &heading,
            find(proxy::Variant::Upstream),
            find(proxy::Variant::Understudy)
        )
    );
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Proxy { .. } => return run_proxy(cli.command).await,
        Command::Controllers { .. } => return run_controllers(cli.command).await,
        Command::WriteCosts { .. } => return run_write_costs(cli.command).await,
        Command::Binder { .. } => return run_binder(cli.command).await,
        _ => {}
    }
    let (workload, nodes, existing, pods, qps, only, components_dir, kubelet, rounds) =
        match cli.command {
            Command::Scheduler {
                nodes,
                existing,
                pods,
                qps,
                only,
                components_dir,
                kubelet,
                rounds,
            } => (
                Workload::Basic,
                nodes,
                existing,
                pods,
                qps,
                only,
                components_dir,
                kubelet,
                rounds,
            ),
            Command::Preemption {
                nodes,
                existing,
                pods,
                qps,
                only,
                components_dir,
                kubelet,
            } => (
                Workload::Preemption,
                nodes,
                existing,
                pods,
                qps,
                only,
                components_dir,
                kubelet,
                1,
            ),
            Command::Controllers { .. }
            | Command::WriteCosts { .. }
            | Command::Proxy { .. }
            | Command::Binder { .. } => {
                unreachable!("handled above")
            }
        };
    let components_dir = resolve_components_dir(components_dir)?;
    let mut variants = vec![];
    for v in only {
        variants.push(match v.as_str() {
            "null" => Variant::Null,
            "null-events" => Variant::NullWithEvents,
            "null-watch" => Variant::NullWatching,
            "kube" => Variant::KubeScheduler,
            "understudy" => Variant::Understudy,
            other => anyhow::bail!(
                "--only: unknown scheduler {other:?} (null, null-events, null-watch, kube, understudy)"
            ),
        });
    }
    let lab = scheduler_lab(nodes, components_dir.clone());
    let opts = Options {
        workload,
        existing,
        measured: pods,
        qps,
        components_dir,
        kubelet,
        rounds,
    };
    anyhow::ensure!(rounds > 0, "--rounds must be positive");
    let rounds = with_cluster(lab, |state| {
        let opts = opts.clone();
        async move { scheduler::run(&state, &opts, &variants, nodes).await }
    })
    .await?;
    if let [results] = rounds.as_slice() {
        println!("{}", scheduler::report(results, nodes, &opts));
    } else {
        println!("{}", scheduler::summary(&rounds));
    }
    Ok(())
}
