//! understudy-lab: a local Kubernetes control plane from the upstream binaries,
//! with fake kwok nodes and the Understudy components, on loopback only.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use understudy_e2e::chart::{self, Backend, ProxyMode};
use understudy_e2e::controlplane::{self, LabOptions};
use understudy_e2e::nodes::{NodeTemplate, parse_taint};
use understudy_e2e::process::{self, pid_alive};
use understudy_e2e::state::{ClusterState, default_state_dir};
use understudy_e2e::understudies::{self, Understudy};

#[derive(Parser)]
#[command(
    name = "understudy-lab",
    version,
    about = "Local Kubernetes control plane for Understudy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok,
    /// fake nodes and the understudies. Does nothing if the cluster already runs.
    Up(Box<UpArgs>),
    /// Stop everything the cluster started and remove its state.
    Down(Target),
    /// Show the cluster's processes and their health.
    Status(Target),
    /// Hand the Deployment, ReplicaSet, Endpoints and EndpointSlice
    /// controllers to upstream kube-controller-manager or to
    /// understudy-controllers; the two never run at once.
    SwitchControllers(SwitchArgs),
    /// A chaos run on a lab of its own: a seeded churn of Deployments,
    /// Services, pods and volumes while understudy replicas are killed,
    /// frozen past their lease, the apiserver restarted and etcd compacted;
    /// prints faults, convergence times and invariant violations (exit 1 on
    /// any). See docs/CHAOS.md.
    Chaos(ChaosArgs),
    /// Run a scripted scenario with upstream's controllers, then with ours,
    /// and print what differs between the outcomes (exit 1 if anything does).
    Differential(DifferentialArgs),
    /// Install (`install`) or remove (`uninstall`, then check that nothing of
    /// the release is left) charts/understudy on any cluster: how `make e2e`
    /// puts the understudies into the cluster it tests.
    Chart(ChartArgs),
    /// Run kwok on this host as the simulated kubelet of the fake nodes
    /// (annotated kwok.x-k8s.io/node=fake) of any cluster, until SIGTERM or
    /// SIGINT: how `make e2e` gives an external cluster the suite's fake nodes.
    FakeNodes(FakeNodesArgs),
    /// Build the images as archives without a container engine: the
    /// components' image, the test server and the sandbox (pause) image, from
    /// the binaries in --bin-dir, for `ctr images import` or `docker load`.
    Images(ImagesArgs),
    /// Relay TCP connections from listeners inside a network namespace to an
    /// address of the host's (how a real node reaches the loopback apiserver).
    #[command(hide = true)]
    Relay(RelayArgs),
    /// Wait for a process to exit, then take the cluster down (used by tests so a
    /// crashed test run leaves nothing behind).
    #[command(hide = true)]
    Watchdog {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        pid: i32,
    },
}

#[derive(Args, Clone)]
struct Target {
    /// Cluster name; clusters with different names run side by side.
    #[arg(long, default_value = "understudy")]
    name: String,
    /// State directory (default: $XDG_STATE_HOME/understudy/<name>).
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

impl Target {
    fn dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| default_state_dir(&self.name))
    }
}

#[derive(Args)]
struct ChaosArgs {
    #[command(flatten)]
    target: Target,
    /// How long faults keep coming (a round of faults once begun finishes).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    duration: std::time::Duration,
    /// The seed of the churn and the fault order (default: drawn and printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Fake (kwok) nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// How long everything may take to converge after a fault.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
    converge_timeout: std::time::Duration,
    /// Where the understudy binaries are (default: next to this binary).
    #[arg(long)]
    components_dir: Option<PathBuf>,
    /// Leave the lab running afterwards (for a look at its logs and objects).
    #[arg(long)]
    keep: bool,
    /// The same run with upstream's components in our components' places
    /// (two kube-scheduler replicas with a profile named understudy-scheduler,
    /// two kube-controller-manager replicas running the controllers ours
    /// replace), for comparison; no kube-controller-manager switch then.
    #[arg(long)]
    upstream: bool,
    /// Do not hand our controllers to kube-controller-manager and back in each round.
    #[arg(long)]
    no_kcm_switch: bool,
    /// Real nodes (kubelet and containerd in network namespaces; root and
    /// `make deps`), each round cutting one's network off and restoring it.
    #[arg(long, default_value_t = 0)]
    real_nodes: usize,
    /// How the understudies run: `processes` the run starts on this host,
    /// or `chart`: the chart's pods on the real nodes (implies
    /// --real-nodes=1 at least), their containers killed and frozen on the
    /// node and their pods deleted.
    #[arg(long, value_enum, default_value_t = Backend::Processes)]
    backend: Backend,
}

#[derive(Args)]
struct ImagesArgs {
    /// Directory of the binaries (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where the archives go.
    #[arg(long, default_value = "target/images")]
    out_dir: PathBuf,
}

#[derive(Args)]
struct ChartArgs {
    #[arg(value_parser = ["install", "uninstall"])]
    action: String,
    /// The cluster's kubeconfig.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// The components' image, already loaded into the nodes or pullable.
    #[arg(long, default_value = "localhost/understudy:dev")]
    image: String,
    #[arg(long, default_value = "IfNotPresent", value_parser = ["Always", "IfNotPresent", "Never"])]
    pull_policy: String,
    /// Components to switch on (`all` or a comma-separated list).
    #[arg(long, default_value = "all")]
    understudies: String,
    /// A values file of your own, applied over the generated values
    /// (repeatable; later files win), e.g. tolerations for tainted nodes.
    #[arg(long = "values")]
    values: Vec<PathBuf>,
    /// How long the components may take to become Ready, or to go, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

#[derive(Args)]
struct FakeNodesArgs {
    /// The cluster's kubeconfig.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// kwok's node lease duration in seconds (renewed every quarter of it).
    #[arg(long, default_value_t = 40)]
    node_lease_seconds: u32,
}

#[derive(Args)]
struct RelayArgs {
    /// The namespace to listen in (a file under /run/netns).
    #[arg(long)]
    netns: PathBuf,
    /// Address to listen on inside the namespace (repeatable).
    #[arg(long, required = true)]
    listen: Vec<std::net::SocketAddr>,
    /// Address to connect to, in this process's own namespace.
    #[arg(long)]
    to: std::net::SocketAddr,
}

#[derive(Args)]
struct SwitchArgs {
    #[command(flatten)]
    target: Target,
    /// `upstream` or `understudy`.
    #[arg(long, value_parser = ["upstream", "understudy"])]
    to: String,
    /// Directory of the understudy binaries (default: next to this binary).
    #[arg(long)]
    components_dir: Option<PathBuf>,
    /// Extra flag passed to understudy-controllers (repeatable).
    #[arg(long = "understudy-arg", allow_hyphen_values = true)]
    understudy_args: Vec<String>,
}

#[derive(Args)]
struct DifferentialArgs {
    #[command(flatten)]
    target: Target,
    /// The scenario to run (`standard`).
    #[arg(long, default_value = "standard")]
    scenario: String,
    /// Directory of the understudy binaries (default: next to this binary).
    #[arg(long)]
    components_dir: Option<PathBuf>,
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    target: Target,
    /// Number of fake (kwok) nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Number of real nodes (kubelet + containerd + runc + CNI, each in its
    /// own network namespace); needs root and `make deps`.
    #[arg(long, default_value_t = 0)]
    real_nodes: usize,
    /// Extra flag passed to every real node's kubelet (repeatable).
    #[arg(long = "kubelet-arg", allow_hyphen_values = true)]
    kubelet_args: Vec<String>,
    /// Upstream parts replaced by understudies: all, none, or a list of
    /// scheduler,controllers,proxy. The replaced kube-controller-manager
    /// controllers are switched off.
    #[arg(long, default_value = "all")]
    understudies: String,
    /// Switch the replaced upstream parts off but do not start the understudies.
    #[arg(long)]
    no_start_understudies: bool,
    /// How the understudies run: `processes` on this host with the admin
    /// credentials (understudy-proxy, when replaced, as a process in each
    /// real node's namespaces where kube-proxy would run), or `chart`:
    /// `helm upgrade --install` of charts/understudy, the pods on the real
    /// nodes (needs --real-nodes=1 or more).
    #[arg(long, value_enum, default_value_t = Backend::Processes)]
    backend: Backend,
    /// The mode of the proxy on the real nodes: upstream kube-proxy's, or
    /// understudy-proxy's.
    #[arg(long, value_enum, default_value_t = ProxyMode::Iptables)]
    proxy_mode: ProxyMode,
    /// Do not run upstream kube-scheduler (pods of default-scheduler stay Pending).
    #[arg(long)]
    no_kube_scheduler: bool,
    /// Port of kube-apiserver on 127.0.0.1 (default: a free one).
    #[arg(long)]
    apiserver_port: Option<u16>,
    /// Node CPU capacity.
    #[arg(long, default_value = "32")]
    node_cpu: String,
    /// Node memory capacity.
    #[arg(long, default_value = "128Gi")]
    node_memory: String,
    /// Node pod capacity.
    #[arg(long, default_value = "110")]
    node_pods: String,
    /// Zones the nodes are spread over, round-robin.
    #[arg(long, value_delimiter = ',', default_value = "zone-a,zone-b,zone-c")]
    zones: Vec<String>,
    /// Taint every node: key[=value]:Effect (repeatable).
    #[arg(long = "node-taint", value_parser = parse_taint)]
    node_taints: Vec<k8s_openapi::api::core::v1::Taint>,
    /// Directory of the understudy binaries (default: next to this binary).
    #[arg(long)]
    components_dir: Option<PathBuf>,
    /// Take the cluster down when this process exits.
    #[arg(long)]
    stop_with_pid: Option<i32>,
    /// Extra flag passed to every understudy (repeatable).
    #[arg(long = "understudy-arg", allow_hyphen_values = true)]
    understudy_args: Vec<String>,
    /// kwok's node lease duration in seconds (renewed every quarter of it).
    #[arg(long, default_value_t = 40)]
    node_lease_seconds: u32,
    /// Do not run kwok (needs --nodes=0): the cluster's fake nodes get their
    /// simulated kubelet from elsewhere, e.g. `understudy-lab fake-nodes`.
    #[arg(long)]
    no_kwok: bool,
    /// Print only errors.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = match cli.command {
        Command::Up(args) => runtime.block_on(up(*args)),
        Command::Down(target) => down(&target),
        Command::Status(target) => runtime.block_on(status(&target)),
        Command::SwitchControllers(args) => runtime.block_on(switch_controllers(args)),
        Command::Differential(args) => runtime.block_on(differential(args)),
        Command::Chaos(args) => runtime.block_on(chaos(args)),
        Command::Chart(args) => runtime.block_on(chart_on_cluster(args)),
        Command::FakeNodes(args) => runtime
            .block_on(understudy_e2e::fake_nodes::run(
                &args.kubeconfig,
                args.node_lease_seconds,
            ))
            .map(|()| ExitCode::SUCCESS),
        Command::Images(args) => images(args),
        Command::Relay(args) => runtime.block_on(relay(args)),
        Command::Watchdog { target, pid } => watchdog(&target, pid),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("understudy-lab: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The directory of this binary, where the understudy binaries are built too.
fn own_dir() -> Result<PathBuf, String> {
    std::env::current_exe()
        .map_err(|e| e.to_string())?
        .parent()
        .map(PathBuf::from)
        .ok_or_else(|| "cannot tell this binary's directory".to_string())
}

async fn switch_controllers(args: SwitchArgs) -> Result<ExitCode, String> {
    let to = match args.to.as_str() {
        "upstream" => controlplane::ControllersSide::Upstream,
        _ => controlplane::ControllersSide::Understudy,
    };
    let components_dir = match args.components_dir {
        Some(dir) => dir,
        None => own_dir()?,
    };
    controlplane::switch_controllers(
        &args.target.dir(),
        to,
        &components_dir,
        &args.understudy_args,
    )
    .await
    .map_err(|e| e.to_string())?;
    println!("controllers now run by {}", args.to);
    Ok(ExitCode::SUCCESS)
}

async fn chart_on_cluster(args: ChartArgs) -> Result<ExitCode, String> {
    use understudy_e2e::chart;
    let toolchain = understudy_e2e::toolchain::Toolchain::locate().map_err(|e| e.to_string())?;
    let helm = chart::Helm {
        program: toolchain.bin("helm"),
        kubeconfig: args.kubeconfig.clone(),
    };
    let client = understudy_e2e::wait::client_for(&args.kubeconfig)
        .await
        .map_err(|e| e.to_string())?;
    let timeout = std::time::Duration::from_secs(args.timeout);
    if args.action == "install" {
        let enabled = understudy_e2e::understudies::parse_set(&args.understudies)?;
        let values = chart::cluster_values(&enabled, &args.image, &args.pull_policy);
        let values_file = std::env::temp_dir().join("understudy-chart-values.json");
        helm.upgrade_install_with(&values, &values_file, &args.values)
            .map_err(|e| e.to_string())?;
        chart::wait_ready(&client, &enabled, timeout)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "understudy-lab: {} installed in {} and Ready ({})",
            chart::RELEASE,
            chart::NAMESPACE,
            args.understudies
        );
        return Ok(ExitCode::SUCCESS);
    }
    helm.uninstall().map_err(|e| e.to_string())?;
    let left = understudy_e2e::wait::until("nothing of the release left", timeout, || async {
        let left = chart::release_objects(&client, None).await?;
        Ok(left.is_empty().then_some(()))
    })
    .await;
    if left.is_err() {
        let objects = chart::release_objects(&client, None).await?;
        return Err(format!(
            "after helm uninstall these objects of the release are left: {objects:?}"
        ));
    }
    println!(
        "understudy-lab: {} uninstalled; nothing of it is left",
        chart::RELEASE
    );
    Ok(ExitCode::SUCCESS)
}

async fn differential(args: DifferentialArgs) -> Result<ExitCode, String> {
    use understudy_e2e::differential;
    let scenario = differential::scenario(&args.scenario).ok_or_else(|| {
        let known: Vec<&str> = differential::SCENARIOS.iter().map(|s| s.name).collect();
        format!(
            "unknown scenario {:?}; known: {}",
            args.scenario,
            known.join(", ")
        )
    })?;
    let components_dir = match args.components_dir {
        Some(dir) => dir,
        None => own_dir()?,
    };
    let dir = args.target.dir();
    let state = ClusterState::load(&dir)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no cluster in {}", dir.display()))?;
    let client = understudy_e2e::wait::client_for(&state.kubeconfig)
        .await
        .map_err(|e| e.to_string())?;
    let upstream_ns = differential::create_namespace(&client, "diff-upstream").await?;
    let ours_ns = differential::create_namespace(&client, "diff-ours").await?;
    let report = differential::run(
        &client,
        &dir,
        &components_dir,
        scenario,
        &upstream_ns,
        &ours_ns,
    )
    .await?;
    println!(
        "scenario {}: {} objects compared (namespaces {upstream_ns} and {ours_ns})",
        scenario.name,
        report.upstream.len().max(report.ours.len())
    );
    if report.differences.is_empty() {
        println!("no differences");
        Ok(ExitCode::SUCCESS)
    } else {
        for line in &report.differences {
            println!("{line}");
        }
        Ok(ExitCode::FAILURE)
    }
}

async fn chaos(args: ChaosArgs) -> Result<ExitCode, String> {
    use understudy_e2e::chaos;
    let components_dir = match args.components_dir {
        Some(dir) => dir,
        None => own_dir()?,
    };
    let state_dir = args.target.dir();
    let chart = args.backend == Backend::Chart;
    if chart && args.upstream {
        return Err(
            "--upstream runs upstream's components as processes: not with --backend chart".into(),
        );
    }
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let mut options = chaos::ChaosOptions::new(args.duration, seed, components_dir.clone());
    options.converge_timeout = args.converge_timeout;
    options.switch_kcm = !args.no_kcm_switch;
    options.backend = args.backend;
    if args.upstream {
        options.flavour = chaos::replicas::Flavour::Upstream;
    }
    let opts = LabOptions {
        name: args.target.name.clone(),
        state_dir: state_dir.clone(),
        nodes: args.nodes,
        node_template: NodeTemplate::default(),
        // Upstream's scheduler and controllers stay out of our pods' way.
        // With processes the run starts two replicas of each understudy
        // itself; with the chart the lab installs them, with the run's
        // lease timings.
        // With real nodes (and processes), ours also has understudy-proxy
        // on them in kube-proxy's place; upstream's keeps kube-proxy, and
        // the chart's run installs the scheduler and controllers only.
        replaced: understudies::parse_set(if args.real_nodes > 0 && !args.upstream && !chart {
            "scheduler,controllers,proxy"
        } else {
            "scheduler,controllers"
        })?,
        start_understudies: chart,
        kube_scheduler: true,
        apiserver_port: None,
        components_dir: components_dir.clone(),
        understudy_args: if chart {
            chaos::replicas::timing_flags(options.lease)
        } else {
            vec![]
        },
        node_lease_seconds: 40,
        real_nodes: if chart {
            args.real_nodes.max(1)
        } else {
            args.real_nodes
        },
        kwok: true,
        kubelet_args: vec![],
        backend: args.backend,
        proxy_mode: Default::default(),
    };
    eprintln!(
        "understudy-lab: starting cluster {:?} for the chaos run in {}",
        opts.name,
        state_dir.display()
    );
    controlplane::up(&opts).await.map_err(|e| e.to_string())?;
    let result = tokio::select! {
        result = chaos::run(&state_dir, options) => result,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
    };
    if !args.keep {
        controlplane::down(&state_dir).map_err(|e| e.to_string())?;
    }
    let report = result?;
    println!("\n{report}");
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn up(args: UpArgs) -> Result<ExitCode, String> {
    let replaced = understudies::parse_set(&args.understudies)?;
    let components_dir = match args.components_dir {
        Some(dir) => dir,
        None => own_dir()?,
    };
    let opts = LabOptions {
        name: args.target.name.clone(),
        state_dir: args.target.dir(),
        nodes: args.nodes,
        node_template: NodeTemplate {
            cpu: args.node_cpu,
            memory: args.node_memory,
            pods: args.node_pods,
            zones: args.zones,
            taints: args.node_taints,
            ..Default::default()
        },
        replaced: replaced.clone(),
        start_understudies: !args.no_start_understudies,
        kube_scheduler: !args.no_kube_scheduler,
        apiserver_port: args.apiserver_port,
        components_dir,
        understudy_args: args.understudy_args,
        node_lease_seconds: args.node_lease_seconds,
        real_nodes: args.real_nodes,
        kwok: !args.no_kwok,
        kubelet_args: args.kubelet_args,
        backend: args.backend,
        proxy_mode: args.proxy_mode,
    };
    let already_up = ClusterState::load(&opts.state_dir)
        .ok()
        .flatten()
        .is_some_and(|s| s.ready);
    if !args.quiet && !already_up {
        eprintln!(
            "understudy-lab: starting cluster {:?} in {} ({} nodes; understudies: {})",
            opts.name,
            opts.state_dir.display(),
            opts.nodes,
            if replaced.is_empty() {
                "none".to_string()
            } else {
                replaced
                    .iter()
                    .map(Understudy::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
    }
    // Ctrl-C while starting: stop what was started and remove the state.
    let state = tokio::select! {
        result = controlplane::up(&opts) => result.map_err(|e| e.to_string())?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("understudy-lab: interrupted; stopping what was started");
            controlplane::down(&opts.state_dir).map_err(|e| e.to_string())?;
            return Ok(ExitCode::from(130));
        }
    };
    if let Some(pid) = args.stop_with_pid.filter(|_| !already_up) {
        start_watchdog(&state, pid)?;
    }
    if !args.quiet {
        let kubectl = state.toolchain_dir.join("kubectl");
        let how = if already_up { "already up" } else { "up" };
        println!(
            "Cluster {:?} is {how}: {} nodes, apiserver {}",
            state.name, state.nodes, state.server
        );
        if let Some(real) = &state.real_nodes {
            for node in real.nodes() {
                println!(
                    "  real node {}: address {}, pods {} (reachable from this host)",
                    node.name(),
                    node.ip(),
                    node.pod_cidr()
                );
            }
        }
        if state.backend == Backend::Chart && !state.running_understudies.is_empty() {
            println!(
                "  understudies: pods of the Helm release {} in namespace {}",
                chart::RELEASE,
                chart::NAMESPACE
            );
        }
        println!("  export KUBECONFIG={}", state.kubeconfig.display());
        println!("  {} get nodes", kubectl.display());
        println!(
            "  understudy-lab status --name {}    understudy-lab down --name {}",
            state.name, state.name
        );
        println!("Logs: {}", state.state_dir.join("logs").display());
    }
    Ok(ExitCode::SUCCESS)
}

fn images(args: ImagesArgs) -> Result<ExitCode, String> {
    use understudy_e2e::images;
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => own_dir()?,
    };
    let built = [
        images::build_understudy(&bin_dir, &args.out_dir),
        images::build_testserver(&bin_dir, &args.out_dir),
        images::build_pause(&bin_dir, &args.out_dir),
    ];
    for image in built {
        let image = image.map_err(|e| e.to_string())?;
        println!("{} {}", image.reference, image.archive.display());
    }
    Ok(ExitCode::SUCCESS)
}

async fn relay(args: RelayArgs) -> Result<ExitCode, String> {
    use understudy_e2e::realnode::forward;
    let listeners = forward::bind_in_netns(&args.netns, &args.listen)
        .map_err(|e| format!("listening in {}: {e}", args.netns.display()))?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        result = forward::relay(listeners, args.to) => result.map_err(|e| e.to_string())?,
        _ = term.recv() => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn start_watchdog(state: &ClusterState, pid: i32) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let args = vec![
        "watchdog".to_string(),
        format!("--name={}", state.name),
        format!("--state-dir={}", state.state_dir.display()),
        format!("--pid={pid}"),
    ];
    let record = process::spawn(
        "watchdog",
        &exe,
        &args,
        &state.state_dir.join("logs/watchdog.log"),
    )
    .map_err(|e| e.to_string())?;
    let mut state = state.clone();
    state.processes.push(record);
    state.save().map_err(|e| e.to_string())
}

fn down(target: &Target) -> Result<ExitCode, String> {
    let dir = target.dir();
    let stopped = controlplane::down(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if stopped.is_empty() {
        println!("Cluster {:?}: nothing running; state removed", target.name);
    } else {
        println!(
            "Cluster {:?}: stopped {}; state removed",
            target.name,
            stopped.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(target: &Target) -> Result<ExitCode, String> {
    let dir = target.dir();
    let Some(state) = ClusterState::load(&dir).map_err(|e| e.to_string())? else {
        println!(
            "Cluster {:?} is not running (no state in {})",
            target.name,
            dir.display()
        );
        return Ok(ExitCode::from(3));
    };
    println!(
        "Cluster {:?}: {} (kubeconfig {})",
        state.name,
        state.server,
        state.kubeconfig.display()
    );
    let mut all_good = state.ready;
    for (name, alive, healthy) in controlplane::status(&state).await {
        let health = match healthy {
            Some(true) => "healthy",
            Some(false) => "unhealthy",
            None if alive => "running",
            None => "-",
        };
        all_good &= alive && healthy != Some(false);
        println!(
            "  {name:<24} {:<8} {health}",
            if alive { "up" } else { "down" }
        );
    }
    Ok(if all_good {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn watchdog(target: &Target, pid: i32) -> Result<ExitCode, String> {
    // Polling is the portable way to learn that a non-child process exited.
    while pid_alive(pid) {
        std::thread::sleep(Duration::from_millis(500));
    }
    controlplane::down(&target.dir()).map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}
