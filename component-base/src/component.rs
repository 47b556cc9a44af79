//! The life of a component: logs, health/metrics server, client, leader election,
//! the work itself, and a graceful end. Each binary calls [`main`] with its work.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use anyhow::Context as _;
use kube::Client;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use crate::cli::CommonArgs;
use crate::events::EventRecorder;
use crate::fence::WriteFence;
use crate::health::Health;
use crate::leader::LeaderElector;
use crate::server::{self, SharedRegistry};
use crate::{logging, shutdown};

/// What a binary is: its name (used for the lease, the user agent and Events)
/// and its well-known health/metrics port.
#[derive(Clone, Copy, Debug)]
pub struct Component {
    pub name: &'static str,
    pub default_port: u16,
    /// Per-node components (the proxy) never elect: every replica works.
    pub elects_leader: bool,
}

/// Everything the work loop needs, built once per process.
#[derive(Clone)]
pub struct ComponentContext {
    /// With leader election, its writes are fenced: sent only while this
    /// replica holds its lease (crate::fence).
    pub client: Client,
    /// Not fenced: for what any replica may do on another's behalf, such as
    /// the scheduler-extender API's bind, served by standbys too.
    pub unfenced_client: Client,
    /// A second client with its own QPS/burst budget for Events, so recording
    /// them never delays the component's real work (as upstream's broadcasters).
    pub event_client: Client,
    pub registry: SharedRegistry,
    pub health: Health,
    /// Cancelled on SIGTERM/SIGINT or when leadership is lost: finish in-flight
    /// work and return.
    pub shutdown: CancellationToken,
    pub events: EventRecorder,
    pub identity: String,
    /// Where the health/metrics server actually listens.
    pub server_addr: SocketAddr,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaseLabel {
    name: String,
}

/// How long a start-up connection check may take before it is reported as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs the component on a fresh runtime and turns the outcome into an exit code,
/// printing one clear line on failure.
pub fn main<F, Fut>(component: Component, args: CommonArgs, work: F) -> ExitCode
where
    F: FnOnce(ComponentContext) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    main_prepared(
        component,
        args,
        |_| async { Ok(()) },
        |context, ()| work(context),
    )
}

/// As [`main`], with a `prepare` phase every replica runs before it stands
/// for election (kube-scheduler starts and syncs its informers before it
/// does): a standby keeps warm caches and can serve reads; `work` gets what
/// `prepare` built once the replica leads.
pub fn main_prepared<P, PFut, T, F, Fut>(
    component: Component,
    args: CommonArgs,
    prepare: P,
    work: F,
) -> ExitCode
where
    P: FnOnce(ComponentContext) -> PFut,
    PFut: Future<Output = anyhow::Result<T>>,
    F: FnOnce(ComponentContext, T) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", component.name);
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_prepared(component, args, prepare, work)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "exiting");
            eprintln!("{}: error: {e:#}", component.name);
            ExitCode::FAILURE
        }
    }
}

/// Sets everything up, waits for leadership when enabled, runs `work` until it
/// returns, then releases the lease and stops the server.
pub async fn run<F, Fut>(component: Component, args: CommonArgs, work: F) -> anyhow::Result<()>
where
    F: FnOnce(ComponentContext) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    run_prepared(
        component,
        args,
        |_| async { Ok(()) },
        |context, ()| work(context),
    )
    .await
}

/// [`run`] with the `prepare` phase of [`main_prepared`].
pub async fn run_prepared<P, PFut, T, F, Fut>(
    component: Component,
    args: CommonArgs,
    prepare: P,
    work: F,
) -> anyhow::Result<()>
where
    P: FnOnce(ComponentContext) -> PFut,
    PFut: Future<Output = anyhow::Result<T>>,
    F: FnOnce(ComponentContext, T) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    logging::init(args.log_format, &args.log_filter()).map_err(anyhow::Error::msg)?;
    let shutdown = CancellationToken::new();
    shutdown::cancel_on_signals(shutdown.clone()).context("installing signal handlers")?;

    let addr = SocketAddr::new(
        args.bind_address,
        args.port.unwrap_or(component.default_port),
    );
    let listener = server::bind(addr).await?;
    let server_addr = listener
        .local_addr()
        .context("reading the server address")?;
    let registry = SharedRegistry::default();
    let health = Health::new();
    health.register("apiserver-connection");
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(server::serve(
        listener,
        registry.clone(),
        health.clone(),
        server_stop.clone(),
    ));
    tracing::info!(component = component.name, %server_addr, "serving /metrics, /healthz, /livez, /readyz");

    // With leader election, the work's clients (Events included) write only
    // while the lease is known to be held (crate::fence); the elector's own
    // client is unfenced.
    let fence = (args.leader_elect && component.elects_leader).then(WriteFence::default);
    let options = args.client_options(component.name);
    let client = match &fence {
        Some(fence) => {
            options
                .connected_fenced_client(CONNECT_TIMEOUT, fence.clone())
                .await?
        }
        None => options.connected_client(CONNECT_TIMEOUT).await?,
    };
    health.set("apiserver-connection", true);
    let event_client = match &fence {
        Some(fence) => options.fenced_client(fence.clone()).await?,
        None => options.client().await?,
    };

    let election = args.leader_election(component.name);
    let identity = election.identity.clone();
    let leader_status = Family::<LeaseLabel, Gauge<i64, AtomicI64>>::default();
    registry.write().expect("registry lock").register(
        "leader_election_master_status",
        "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master.",
        leader_status.clone(),
    );
    let gauge = LeaderGauge {
        label: LeaseLabel {
            name: election.name.clone(),
        },
        family: leader_status,
    };

    let unfenced_client = match &fence {
        Some(_) => options.client().await?,
        None => client.clone(),
    };
    let context = ComponentContext {
        client: client.clone(),
        unfenced_client,
        registry,
        health: health.clone(),
        shutdown: shutdown.clone(),
        events: EventRecorder::new(event_client.clone(), component.name, Some(identity.clone())),
        event_client,
        identity: identity.clone(),
        server_addr,
    };

    let prepared = tokio::select! {
        prepared = prepare(context.clone()) => Some(prepared),
        _ = shutdown.cancelled() => None,
    };
    let outcome = match prepared {
        None => Ok(()),
        Some(Err(e)) => Err(e),
        Some(Ok(prepared)) => {
            let election = match fence {
                Some(fence) => Some(Election {
                    config: election,
                    client: options.client().await?,
                    fence,
                    gauge,
                }),
                None => None,
            };
            elect_and_work(election, context, prepared, work).await
        }
    };

    health.set_shutting_down();
    server_stop.cancel();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "health server stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "health server task failed"),
    }
    tracing::info!(component = component.name, "stopped");
    outcome
}

/// `leader_election_master_status` for this component's lease.
struct LeaderGauge {
    family: Family<LeaseLabel, Gauge<i64, AtomicI64>>,
    label: LeaseLabel,
}

impl LeaderGauge {
    fn set(&self, leading: bool) {
        self.family.get_or_create(&self.label).set(leading as i64);
    }
}

/// What standing for election takes: the lease, the elector's own
/// (unfenced) client, the fence it opens for the work's clients, the gauge.
struct Election {
    config: crate::leader::LeaderElectionConfig,
    client: Client,
    fence: WriteFence,
    gauge: LeaderGauge,
}

/// Waits for the lease when this component elects a leader (`election` is
/// set), then runs `work` until it returns or leadership is lost.
async fn elect_and_work<T, F, Fut>(
    election: Option<Election>,
    context: ComponentContext,
    prepared: T,
    work: F,
) -> anyhow::Result<()>
where
    F: FnOnce(ComponentContext, T) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let shutdown = context.shutdown.clone();
    let identity = context.identity.clone();
    // The work's last Events (e.g. about objects it just wrote) are written
    // before the process ends, and while the write fence is still open.
    let events = context.events.clone();
    let flush = || events.flush_within(crate::events::FLUSH_AT_SHUTDOWN);
    if let Some(Election {
        config: election,
        client,
        fence,
        gauge,
    }) = election
    {
        let lease = format!("{}/{}", election.namespace, election.name);
        let mut elector = LeaderElector::start_fenced(client, election, fence).await?;
        tracing::info!(%lease, %identity, "attempting to acquire leader lease");
        let acquired = tokio::select! {
            acquired = elector.acquired() => Some(acquired),
            _ = shutdown.cancelled() => None,
        };
        match acquired {
            None => Ok(()),
            Some(Err(e)) => Err(e.into()),
            Some(Ok(())) => {
                tracing::info!(%lease, %identity, "successfully acquired lease");
                gauge.set(true);
                let work = work(context, prepared);
                tokio::pin!(work);
                let result = tokio::select! {
                    result = &mut work => result,
                    _ = elector.lost() => {
                        // As upstream: a leader that lost its lease must stop acting at
                        // once; the process exits so it restarts as a clean standby.
                        gauge.set(false);
                        shutdown.cancel();
                        let _ = tokio::time::timeout(Duration::from_secs(5), &mut work).await;
                        Err(anyhow::anyhow!("leader election lost for lease {lease}"))
                    }
                };
                if result.is_ok() {
                    flush().await;
                    if let Err(e) = elector.release().await {
                        tracing::warn!(error = %e, "could not release the lease");
                    }
                    gauge.set(false);
                }
                result
            }
        }
    } else {
        let result = work(context, prepared).await;
        flush().await;
        result
    }
}
