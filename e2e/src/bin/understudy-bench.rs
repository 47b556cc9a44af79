//! understudy-bench: each understudy side by side with its upstream
//! counterpart on one local control plane. Prints figures and ratios; never
//! a pass/fail test.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use understudy_e2e::bench::scheduler::{self, Options, Variant, Workload};
use understudy_e2e::controlplane::{self, LabOptions};
use understudy_e2e::nodes::NodeTemplate;

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
        /// Which to run: null, kube, understudy (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "null,kube,understudy")]
        only: Vec<String>,
        /// Directory of the understudy binaries (default: next to this binary).
        #[arg(long)]
        components_dir: Option<PathBuf>,
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (workload, nodes, existing, pods, qps, only, components_dir) = match cli.command {
        Command::Scheduler {
            nodes,
            existing,
            pods,
            qps,
            only,
            components_dir,
        } => (
            Workload::Basic,
            nodes,
            existing,
            pods,
            qps,
            only,
            components_dir,
        ),
        Command::Preemption {
            nodes,
            existing,
            pods,
            qps,
            only,
            components_dir,
        } => (
            Workload::Preemption,
            nodes,
            existing,
            pods,
            qps,
            only,
            components_dir,
        ),
    };
    let components_dir = match components_dir {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
    };
    let mut variants = vec![];
    for v in only {
        variants.push(match v.as_str() {
            "null" => Variant::Null,
            "kube" => Variant::KubeScheduler,
            "understudy" => Variant::Understudy,
            other => anyhow::bail!("--only: unknown scheduler {other:?} (null, kube, understudy)"),
        });
    }
    let state_dir = scheduler::state_dir();
    // A previous run that was interrupted leaves its cluster; start clean.
    controlplane::down(&state_dir)?;
    let lab = LabOptions {
        name: "bench".into(),
        state_dir: state_dir.clone(),
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
        components_dir: components_dir.clone(),
        understudy_args: vec![],
        // Lease renewals of thousands of nodes would otherwise dominate the machine.
        node_lease_seconds: 600,
    };
    eprintln!("bench: starting a control plane with {nodes} nodes");
    let state = tokio::select! {
        r = controlplane::up(&lab) => r?,
        _ = tokio::signal::ctrl_c() => {
            controlplane::down(&state_dir)?;
            anyhow::bail!("interrupted");
        }
    };
    let opts = Options {
        workload,
        existing,
        measured: pods,
        qps,
        components_dir,
    };
    let outcome = tokio::select! {
        r = scheduler::run(&state, &opts, &variants) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    controlplane::down(&state_dir)?;
    let results = outcome?;
    println!("{}", scheduler::report(&results, nodes, &opts));
    Ok(())
}
