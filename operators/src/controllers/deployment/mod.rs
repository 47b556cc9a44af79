//! The Deployment controller: rolls a Deployment's pod template out through
//! ReplicaSets (upstream's pkg/controller/deployment, v1.37.2). It owns
//! ReplicaSets only; the ReplicaSet controller makes their pods.
//!
//! Pure modules decide (template hashing, annotations, rolling-update and
//! proportional-scaling arithmetic, conditions and status, cleanup, claims,
//! rollback); `sync` and `rollout` apply the decisions through the API.

mod annotations;
mod claim;
mod cleanup;
mod conditions;
mod handlers;
mod proportion;
mod recreate;
mod rollback;
mod rolling;
mod rollout;
mod sets;
mod status;
mod sync;
mod template;

use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;

use crate::context::ControllerContext;
use crate::key::ObjectKey;
use crate::worker::{Controller, Reconciler, Requeue};

/// Upstream's controller name, work-queue name and Event source.
pub const NAME: &str = "deployment-controller";
pub const QUEUE: &str = "deployment";
pub const EVENT_SOURCE: &str = "deployment-controller";

struct DeploymentController {
    syncer: sync::Syncer,
}

impl Reconciler for DeploymentController {
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, anyhow::Result<Requeue>> {
        Box::pin(self.syncer.sync_deployment(key))
    }
}

/// Watches Deployments, ReplicaSets and Pods (deletions only matter, for
/// Recreate) and returns the controller to run.
pub fn register(ctx: &ControllerContext, workers: usize) -> Controller {
    let deployments = ctx.informers.get::<Deployment>();
    let sets = ctx.informers.get::<ReplicaSet>();
    let pods = ctx.informers.get::<Pod>();
    let queue = ctx.queue(QUEUE);
    handlers::register(&queue, &deployments, &sets, &pods);
    let syncer = sync::Syncer {
        client: ctx.client.clone(),
        recorder: ctx.recorder(EVENT_SOURCE),
        deployments: deployments.store.clone(),
        sets: sets.store.clone(),
        pods: pods.store.clone(),
    };
    Controller {
        name: NAME,
        queue,
        reconciler: Arc::new(DeploymentController { syncer }),
        workers,
    }
}
