//! What every controller is built from: API clients, the shared informers,
//! metrics, an Events recorder per controller, and the shutdown signal.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use tokio_util::sync::CancellationToken;
use understudy_component_base::events::EventRecorder;

use crate::informer::Informers;
use crate::key::ObjectKey;
use crate::metrics::Metrics;
use crate::protobuf::ContentType;
use crate::workqueue::WorkQueue;

#[derive(Clone)]
pub struct ControllerContext {
    pub client: Client,
    pub event_client: Client,
    pub informers: Arc<Informers>,
    pub metrics: Metrics,
    pub identity: String,
    pub shutdown: CancellationToken,
    pub settings: Settings,
    /// Every recorder handed out, so shutdown can write their last Events.
    pub recorders: Arc<Mutex<Vec<EventRecorder>>>,
}

/// Tunables from the command line, with kube-controller-manager's defaults.
#[derive(Clone, Debug)]
pub struct Settings {
    pub max_endpoints_per_slice: usize,
    pub endpoint_updates_batch_period: std::time::Duration,
    pub endpointslice_updates_batch_period: std::time::Duration,
    /// How the shared Pod informer lists and watches (every other request
    /// is JSON).
    pub api_content_type: ContentType,
    /// How often the PV binder syncs every claim and volume again
    /// (kube-controller-manager's --pvclaimbinder-sync-period).
    pub pvclaimbinder_sync_period: std::time::Duration,
    /// Whether the PV binder asks provisioners for volumes
    /// (kube-controller-manager's --enable-dynamic-provisioning).
    pub enable_dynamic_provisioning: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_endpoints_per_slice: 100,
            endpoint_updates_batch_period: std::time::Duration::ZERO,
            endpointslice_updates_batch_period: std::time::Duration::ZERO,
            api_content_type: ContentType::default(),
            pvclaimbinder_sync_period: std::time::Duration::from_secs(15),
            enable_dynamic_provisioning: true,
        }
    }
}

impl ControllerContext {
    /// An Events recorder reporting as `source` (upstream's event source of
    /// the controller, e.g. `deployment-controller`), with client-go's spam
    /// filter as kube-controller-manager's recorders have.
    pub fn recorder(&self, source: &str) -> EventRecorder {
        let recorder = EventRecorder::new(
            self.event_client.clone(),
            source,
            Some(self.identity.clone()),
        )
        .with_spam_filter();
        (self.recorders.lock().expect("recorders lock")).push(recorder.clone());
        recorder
    }

    /// Writes what every recorder still holds (the Events of the last
    /// reconciles), waiting at most `limit` in all.
    pub async fn flush_events(&self, limit: Duration) {
        let recorders = self.recorders.lock().expect("recorders lock").clone();
        futures::future::join_all(recorders.iter().map(|r| r.flush_within(limit))).await;
    }

    /// A work queue whose metrics carry upstream's queue name.
    pub fn queue(&self, name: &str) -> Arc<WorkQueue<ObjectKey>> {
        WorkQueue::new(self.metrics.queue(name))
    }
}
