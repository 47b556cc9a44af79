//! The ReplicaSet controller (upstream's `pkg/controller/replicaset`): keeps
//! `spec.replicas` pods running for each ReplicaSet, adopting matching
//! orphans and releasing pods it no longer selects, and reports the pods in
//! the ReplicaSet's status.
//!
//! The logic lives in pure modules (claiming, deletion ranking, slow start,
//! status, handler decisions); `sync` applies their decisions to the API.

pub mod claim;
pub mod handlers;
pub mod ranking;
pub mod selector;
pub mod slow_start;
pub mod status;
mod sync;
pub mod template;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;

use crate::context::ControllerContext;
use crate::expectations::Expectations;
use crate::key::ObjectKey;
use crate::worker::{Controller, Reconciler, Requeue};
use crate::workqueue::WorkQueue;

pub use ranking::{compare_for_deletion, pods_to_delete, sort_for_deletion};

/// Upstream's controller name, also the Event source.
pub const CONTROLLER_NAME: &str = "replicaset-controller";
/// Upstream's work-queue name (its metrics label).
pub const QUEUE_NAME: &str = "replicaset";
/// Pods created or deleted per ReplicaSet per sync (upstream's BurstReplicas).
pub const BURST_REPLICAS: usize = 500;

pub fn register(ctx: &ControllerContext, workers: usize) -> Controller {
    let queue = ctx.queue(QUEUE_NAME);
    let expectations = Arc::new(Expectations::default());
    let replica_sets = ctx.informers.get::<ReplicaSet>();
    let pods = ctx.informers.get::<Pod>();

    {
        let queue = queue.clone();
        let expectations = expectations.clone();
        replica_sets.on_change(move |old, new| {
            let fx = handlers::replica_set_changed(old.map(AsRef::as_ref), new.map(AsRef::as_ref));
            apply(&queue, &expectations, fx, None);
        });
    }
    {
        let queue = queue.clone();
        let expectations = expectations.clone();
        let store = replica_sets.store.clone();
        pods.on_change(move |old, new| {
            let fx = handlers::pod_changed(&store, old.map(AsRef::as_ref), new.map(AsRef::as_ref));
            apply(&queue, &expectations, fx, Some(POD_BATCH));
        });
    }

    let reconciler = sync::ReplicaSetSync {
        client: ctx.client.clone(),
        replica_sets: replica_sets.store.clone(),
        pods: pods.store.clone(),
        expectations,
        recorder: ctx.recorder(CONTROLLER_NAME),
        warned_selectors: Mutex::new(HashSet::new()),
    };
    Controller {
        name: CONTROLLER_NAME,
        queue,
        reconciler: Arc::new(reconciler),
        workers,
    }
}

/// Pod changes to one ReplicaSet within this window make one sync: pods of a
/// ReplicaSet change in bursts (created together, made ready together), and
/// a status write per pod would be most of the apiserver's work.
const POD_BATCH: Duration = Duration::from_millis(100);

fn apply(
    queue: &Arc<WorkQueue<ObjectKey>>,
    expectations: &Expectations,
    fx: handlers::Effects,
    batch: Option<Duration>,
) {
    for key in &fx.forget {
        expectations.delete(key);
    }
    for key in &fx.creation_observed {
        expectations.creation_observed(key);
    }
    for (key, pod) in &fx.deletion_observed {
        expectations.deletion_observed(key, pod);
    }
    for key in fx.enqueue {
        match batch {
            Some(delay) => queue.add_batched(key, delay),
            None => queue.add(key),
        }
    }
    for (key, after) in fx.enqueue_after {
        queue.add_after(key, after);
    }
}

impl Reconciler for sync::ReplicaSetSync {
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, anyhow::Result<Requeue>> {
        Box::pin(self.sync(key))
    }
}
