//! Wires the enabled controllers to shared informers and runs their workers
//! until shutdown, then lets in-flight reconciles finish.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use tokio::task::JoinSet;
use understudy_component_base::ComponentContext;

use crate::context::{ControllerContext, Settings};
use crate::controllers;
use crate::informer::Informers;
use crate::metrics::Metrics;
use crate::protobuf::ContentType;
use crate::worker::Controller;

/// Worker counts per controller (upstream's `--concurrent-*-syncs`).
#[derive(Clone, Debug)]
pub struct Workers {
    pub deployment: usize,
    pub replicaset: usize,
    pub endpoints: usize,
    pub endpointslice: usize,
    /// Claims the PV binder syncs at once (its volumes: one, as upstream).
    pub persistentvolume_claims: usize,
}

pub async fn run(
    component: ComponentContext,
    enabled: BTreeSet<&'static str>,
    workers: Workers,
    settings: Settings,
) -> anyhow::Result<()> {
    let metrics = Metrics::register(&mut component.registry.write().expect("registry lock"));
    let ctx = ControllerContext {
        client: component.client.clone(),
        event_client: component.event_client.clone(),
        informers: Arc::new(Informers::new(component.client.clone())),
        metrics: metrics.clone(),
        identity: component.identity.clone(),
        shutdown: component.shutdown.clone(),
        settings,
        recorders: Default::default(),
    };
    component.health.register("informers-synced");
    // Created first, so the trimming and the source apply whichever
    // controller asks next.
    match ctx.settings.api_content_type {
        ContentType::Json => {
            ctx.informers
                .get_with::<Pod>(controllers::podutil::trim_pod);
        }
        ContentType::Protobuf => {
            ctx.informers
                .get_with_source::<Pod, _, _>(already_trimmed, crate::protobuf::pod_events);
        }
    }
    tracing::info!(content_type = %ctx.settings.api_content_type, "pod informer's content type");
    let mut registered: Vec<Controller> = Vec::new();
    for name in &enabled {
        let controller = match *name {
            "replicaset-controller" => controllers::replicaset::register(&ctx, workers.replicaset),
            "deployment-controller" => controllers::deployment::register(&ctx, workers.deployment),
            "endpoints-controller" => controllers::endpoints::register(&ctx, workers.endpoints),
            "endpointslice-controller" => {
                controllers::endpointslice::register(&ctx, workers.endpointslice)
            }
            "persistentvolume-binder-controller" => {
                registered.extend(controllers::persistentvolume::register(
                    &ctx,
                    workers.persistentvolume_claims,
                ));
                component
                    .registry
                    .write()
                    .expect("registry lock")
                    .register_collector(Box::new(controllers::persistentvolume::collector(&ctx)));
                continue;
            }
            other => anyhow::bail!("controller {other} has no implementation"),
        };
        registered.push(controller);
    }
    tracing::info!(controllers = ?enabled, "starting informers");
    ctx.informers.start(&ctx.shutdown);
    tokio::select! {
        _ = ctx.informers.wait_synced() => {}
        _ = ctx.shutdown.cancelled() => return Ok(()),
    }
    component.health.set("informers-synced", true);
    component.health.set("apiserver-connection", true);
    tracing::info!("informers synced; controllers running");
    let queues: Vec<_> = registered.iter().map(|c| c.queue.clone()).collect();
    let mut workers = JoinSet::new();
    for controller in registered {
        controller.spawn(&metrics, &mut workers);
    }
    ctx.shutdown.cancelled().await;
    tracing::info!("shutting down; finishing in-flight reconciles");
    for queue in queues {
        queue.shut_down();
    }
    while workers.join_next().await.is_some() {}
    // Before the lease is released: a reconcile's last Events are written.
    ctx.flush_events(understudy_component_base::events::FLUSH_AT_SHUTDOWN)
        .await;
    Ok(())
}

/// The protobuf source decodes only the kept set of
/// [`controllers::podutil::trim_pod`]: trimming again would find nothing to
/// drop and only cost the copies.
fn already_trimmed(_: &mut Pod) {}
