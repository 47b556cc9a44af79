//! understudy-scheduler: Understudy's stand-in for kube-scheduler. Schedules
//! pods whose `spec.schedulerName` names one of its profiles
//! (`understudy-scheduler` by default).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use understudy_component_base::{CommonArgs, Component, component};
use understudy_scheduler::config::SchedulerConfig;
use understudy_scheduler::extender;
use understudy_scheduler::metrics::Metrics;
use understudy_scheduler::{informers, scheduler::Scheduler};

// glibc's malloc took a quarter of the runtime threads' CPU in SchedulingBasic
// (decoding watch events, HTTP/2 frames, Events); mimalloc's thread-local
// free lists make those short-lived allocations cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (`mimalloc.h`, v3), which the
/// bindings leave unnamed.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc v3 keeps freed memory for 1 s (arenas 10 s) before returning it;
/// peak RSS in the preemption benchmark was 70–72 MiB with that, 63 with
/// 10 ms (v2's default), 59 with none but more CPU. `MIMALLOC_PURGE_DELAY`
/// still wins when set.
fn shorten_allocator_purge_delay() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: called first thing in `main`, before any other thread
        // exists (mimalloc's options are not thread-safe to set).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10) };
    }
}

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

    /// Port of the scheduler-extender HTTP API (POST .../filter, .../prioritize,
    /// .../preempt, .../bind) for an upstream kube-scheduler; 0 disables it.
    #[arg(long, default_value_t = extender::DEFAULT_PORT)]
    extender_port: u16,

    /// Address the extender API listens on; defaults to --bind-address.
    #[arg(long)]
    extender_bind_address: Option<IpAddr>,

    /// PEM certificate (chain) to serve the extender API over HTTPS.
    #[arg(long, requires = "extender_tls_private_key_file")]
    extender_tls_cert_file: Option<PathBuf>,

    /// PEM private key for --extender-tls-cert-file.
    #[arg(long, requires = "extender_tls_cert_file")]
    extender_tls_private_key_file: Option<PathBuf>,

    /// Largest extender request body in bytes; a larger one gets 413. 0 (the
    /// default) means 16 MiB plus 32 KiB per node in the scheduler's cache,
    /// enough for kube-scheduler's full Node objects of every node.
    #[arg(long, default_value_t = 0)]
    extender_max_request_bytes: usize,

    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    shorten_allocator_purge_delay();
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
    // Where the extender API listens; TLS files are read now so a bad one
    // fails start-up, not the first request.
    let extender_addr = (args.extender_port != 0).then(|| {
        SocketAddr::new(
            args.extender_bind_address
                .unwrap_or(args.common.bind_address),
            args.extender_port,
        )
    });
    let extender_tls = match (
        &args.extender_tls_cert_file,
        &args.extender_tls_private_key_file,
    ) {
        (Some(cert), Some(key)) => match extender::tls_config(cert, key) {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("understudy-scheduler: error: extender API: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    rayon_pool(config.parallelism);
    let extender_limits = extender::Limits {
        body: match args.extender_max_request_bytes {
            0 => extender::DEFAULT_BODY_LIMIT,
            bytes => extender::BodyLimit::Fixed(bytes),
        },
        ..Default::default()
    };
    // Every replica syncs its caches and serves the extender API before it
    // stands for election (kube-scheduler syncs its informers first too), so
    // a Service in front of the replicas gets answers from each, and a
    // standby takes over with a warm cache; only the leader schedules.
    component::main_prepared(
        COMPONENT,
        args.common,
        |ctx| async move {
            // Bound before the watches sync so a busy port fails at once;
            // served only after, so every answer comes from a synced cache.
            let extender_listener = match extender_addr {
                Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                    anyhow::anyhow!(
                        "cannot listen on {addr} for the extender API: {e} (pick another --extender-port, or 0 to disable it)"
                    )
                })?),
                None => None,
            };
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
            synced
                .wait_for(|s| *s)
                .await
                .map_err(|_| anyhow::anyhow!("informers stopped before syncing"))?;
            ctx.health.set("informers-synced", true);
            let extender_server = extender_listener.map(|listener| {
                let addr = listener.local_addr().ok();
                tracing::info!(
                    ?addr,
                    tls = extender_tls.is_some(),
                    "serving the scheduler-extender API"
                );
                let backend = Arc::new(
                    extender::SchedulerBackend::new(scheduler.clone())
                        .with_bind_client(ctx.unfenced_client.clone()),
                );
                tokio::spawn(extender::serve(
                    listener,
                    extender::router_with_limits(backend, extender_limits),
                    extender_tls,
                    ctx.shutdown.clone(),
                ))
            });
            Ok((scheduler, extender_server))
        },
        |ctx, (scheduler, extender_server)| async move {
            tracing::info!(profiles = ?scheduler.profiles.keys().collect::<Vec<_>>(), "leading with synced caches; scheduling");
            let runner = tokio::spawn(scheduler.clone().run());
            ctx.shutdown.cancelled().await;
            // Graceful: stop popping, let in-flight binds finish.
            scheduler.queue.close();
            let _ = runner.await;
            // A pod bound just now keeps its Scheduled Event: a standby
            // taking over sees the pod bound and would never write it.
            futures::future::join_all(scheduler.events.values().map(|recorder| {
                recorder.flush_within(understudy_component_base::events::FLUSH_AT_SHUTDOWN)
            }))
            .await;
            if let Some(server) = extender_server {
                match server.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "extender API server stopped with an error")
                    }
                    Err(e) => tracing::warn!(error = %e, "extender API server task failed"),
                }
            }
            Ok(())
        },
    )
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

/// Scheduling cycles, with their filters and scores, run on rayon's pool;
/// `parallelism` bounds it as upstream bounds its workers, and so do the
/// cores, less one left to the watches, binds and the rest of the process:
/// goroutines are cheap, but OS threads beyond that only add context
/// switches (rayon's idle threads spin). On two cores that is one thread,
/// which measured cheaper and faster than two (docs/BENCHMARKS.md).
fn rayon_pool(parallelism: usize) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(pool_threads(parallelism, cores))
        .thread_name(|i| format!("filter-{i}"))
        .build_global();
}

fn pool_threads(parallelism: usize, cores: usize) -> usize {
    parallelism.min(cores.saturating_sub(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::pool_threads;

    #[test]
    fn the_purge_delay_option_is_the_one_defaulting_to_a_second() {
        // v3's documented default for purge_delay; any other option number
        // would read differently (unless the environment sets it).
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            let value = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
            assert_eq!(value, 1000);
        }
    }

    #[test]
    fn the_pool_leaves_a_core_to_the_rest_and_respects_parallelism() {
        assert_eq!(pool_threads(16, 1), 1);
        assert_eq!(pool_threads(16, 2), 1);
        assert_eq!(pool_threads(16, 8), 7);
        assert_eq!(pool_threads(4, 8), 4);
        assert_eq!(pool_threads(0, 8), 1);
    }
}
