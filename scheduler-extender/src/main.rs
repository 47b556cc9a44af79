//! understudy-scheduler: Understudy's stand-in for kube-scheduler. Schedules
//! pods whose `spec.schedulerName` names one of its profiles
//! (`understudy-scheduler` by default).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use understudy_component_base::{CommonArgs, Component, component};
use understudy_scheduler::config::SchedulerConfig;
use understudy_scheduler::metrics::Metrics;
use understudy_scheduler::{informers, scheduler::Scheduler};

const COMPONENT: Component = Component {
    name: "understudy-scheduler",
    default_port: 10359,
    elects_leader: true,
};

#[derive(Parser, Debug)]
#[command(
    name = "understudy-scheduler",
    version,
    about = "Understudy's stand-in for kube-scheduler"
)]
struct Args {
    /// A KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1) file. Its
    /// leaderElection and clientConnection settings override the flags.
    #[arg(long)]
    config: Option<PathBuf>,

    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    let config = match &args.config {
        Some(path) => SchedulerConfig::load(path),
        None => Ok(SchedulerConfig::default()),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("understudy-scheduler: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    apply_config_to_flags(&config, &mut args.common);
    // Validate the profiles before touching the cluster, so a bad plugin name
    // fails start-up with one line.
    for p in &config.profiles {
        if let Err(e) = understudy_scheduler::profile::Profile::from_config(p) {
            eprintln!("understudy-scheduler: error: invalid scheduler configuration: {e}");
            return ExitCode::FAILURE;
        }
    }
    rayon_pool(config.parallelism);
    component::main(COMPONENT, args.common, |ctx| async move {
        let metrics = Metrics::register(&mut ctx.registry.write().expect("registry lock"));
        let scheduler = Arc::new(
            Scheduler::new(
                ctx.client.clone(),
                ctx.event_client.clone(),
                config,
                metrics,
            )
            .map_err(anyhow::Error::msg)?,
        );
        ctx.health.register("informers-synced");
        let mut synced = informers::start(scheduler.clone());
        tokio::select! {
            r = synced.wait_for(|s| *s) => { r.map_err(|_| anyhow::anyhow!("informers stopped before syncing"))?; }
            _ = ctx.shutdown.cancelled() => return Ok(()),
        }
        ctx.health.set("informers-synced", true);
        tracing::info!(profiles = ?scheduler.profiles.keys().collect::<Vec<_>>(), "caches synced; scheduling");
        let runner = tokio::spawn(scheduler.clone().run());
        ctx.shutdown.cancelled().await;
        // Graceful: stop popping, let in-flight binds finish.
        scheduler.queue.close();
        let _ = runner.await;
        Ok(())
    })
}

fn apply_config_to_flags(config: &SchedulerConfig, common: &mut CommonArgs) {
    if let Some(le) = &config.leader_election {
        common.leader_elect = le.leader_elect;
        common.leader_elect_lease_duration = le.lease_duration;
        common.leader_elect_renew_deadline = le.renew_deadline;
        common.leader_elect_retry_period = le.retry_period;
        common.leader_elect_resource_name = Some(le.resource_name.clone());
        common.leader_elect_resource_namespace = le.resource_namespace.clone();
    }
    if let Some(k) = &config.kubeconfig {
        common.kubeconfig = Some(k.into());
    }
    if let Some(q) = config.qps {
        common.kube_api_qps = q;
    }
    if let Some(b) = config.burst {
        common.kube_api_burst = b;
    }
}

/// Filters run on rayon's pool; `parallelism` bounds it as upstream bounds its workers.
fn rayon_pool(parallelism: usize) {
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(parallelism)
        .thread_name(|i| format!("filter-{i}"))
        .build_global();
}
