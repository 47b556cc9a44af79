//! Workers: take keys from a controller's queue and reconcile them, retrying
//! failures with the queue's per-key backoff (upstream's processNextWorkItem).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::task::JoinSet;

use crate::key::ObjectKey;
use crate::metrics::{ControllerLabel, Metrics, ReconcileLabels};
use crate::workqueue::WorkQueue;

/// What a reconcile asks for next: nothing, or another look after a delay
/// (e.g. when minReadySeconds will have passed).
pub type Requeue = Option<Duration>;

pub trait Reconciler: Send + Sync + 'static {
    /// Brings the object named by `key` (which may no longer exist) to its
    /// desired state. An error requeues the key with backoff.
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, anyhow::Result<Requeue>>;
}

/// A registered controller, ready to run once the informers have synced.
pub struct Controller {
    /// Upstream's controller name (`replicaset-controller`, …).
    pub name: &'static str,
    pub queue: Arc<WorkQueue<ObjectKey>>,
    pub reconciler: Arc<dyn Reconciler>,
    pub workers: usize,
}

impl Controller {
    /// Spawns the workers into `set`; they return once the queue shuts down,
    /// after finishing the key in hand.
    pub fn spawn(self, metrics: &Metrics, set: &mut JoinSet<()>) {
        for _ in 0..self.workers.max(1) {
            let queue = self.queue.clone();
            let reconciler = self.reconciler.clone();
            let metrics = metrics.clone();
            let name = self.name;
            set.spawn(async move {
                while let Some(key) = queue.get().await {
                    process(name, &queue, reconciler.as_ref(), &metrics, &key).await;
                    queue.done(&key);
                }
            });
        }
    }
}

async fn process(
    name: &'static str,
    queue: &Arc<WorkQueue<ObjectKey>>,
    reconciler: &dyn Reconciler,
    metrics: &Metrics,
    key: &ObjectKey,
) {
    let started = Instant::now();
    let outcome = reconciler.reconcile(key).await;
    metrics
        .reconcile_duration
        .get_or_create(&ControllerLabel {
            controller: name.into(),
        })
        .observe(started.elapsed().as_secs_f64());
    let result = match outcome {
        Ok(requeue) => {
            queue.forget(key);
            if let Some(after) = requeue {
                queue.add_after(key.clone(), after);
            }
            "success"
        }
        Err(error) => {
            tracing::warn!(controller = name, %key, error = format!("{error:#}"), "reconcile failed; will retry");
            queue.add_rate_limited(key.clone());
            "error"
        }
    };
    metrics
        .reconciles
        .get_or_create(&ReconcileLabels {
            controller: name.into(),
            result: result.into(),
        })
        .inc();
}
