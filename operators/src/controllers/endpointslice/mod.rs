//! The EndpointSlice controller (upstream's pkg/controller/endpointslice with
//! the `k8s.io/endpointslice` reconciler): keeps the EndpointSlices of every
//! Service with a selector in line with the pods it selects.
//!
//! Pure parts: [`desired`] turns pods into endpoints and ports, [`plan`] is
//! the slice reconciler, [`hints`] and [`topology`] set routing hints,
//! [`handlers`] maps watched changes to Services, [`tracker`] recognises our
//! own writes and [`trigger`] computes the last-change-trigger-time. This
//! file wires the informers and applies plans through the API.

pub mod desired;
pub mod handlers;
pub mod hints;
pub mod plan;
pub mod topology;
pub mod tracker;
pub mod trigger;

#[cfg(test)]
mod fixtures;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, Resource};
use tokio::sync::Notify;
use understudy_component_base::events::EventRecorder;

use crate::context::ControllerContext;
use crate::controllers::podutil;
use crate::informer::Store;
use crate::key::ObjectKey;
use crate::worker::{Controller, Reconciler, Requeue};
use crate::workqueue::WorkQueue;

use self::plan::{Inputs, MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, Writes};
use self::topology::TopologyCache;
use self::tracker::SliceTracker;
use self::trigger::TriggerTimes;

/// Upstream's queue name (workqueue metrics carry it).
const QUEUE_NAME: &str = "endpoint_slice";
/// Upstream's Event source.
const EVENT_SOURCE: &str = "endpoint-slice-controller";
/// Upstream's name for the controller in kube-controller-manager.
const CONTROLLER_NAME: &str = "endpointslice-controller";
/// Slice changes wait at least this long, so a burst of them (e.g. our own
/// writes of several slices) costs one sync.
const SLICE_CHANGE_MIN_DELAY: Duration = Duration::from_secs(1);

pub fn register(ctx: &ControllerContext, workers: usize) -> Controller {
    let queue = ctx.queue(QUEUE_NAME);
    let services = ctx.informers.get::<Service>();
    let pods = ctx.informers.get::<Pod>();
    let slices = ctx.informers.get::<EndpointSlice>();
    let nodes = ctx.informers.get::<Node>();
    let tracker = Arc::new(SliceTracker::default());
    let topology = Arc::new(Mutex::new(TopologyCache::default()));
    let batch_period = ctx.settings.endpointslice_updates_batch_period;

    services.on_change({
        let queue = queue.clone();
        move |old, new| {
            if let Some(service) = new.or(old) {
                queue.add(ObjectKey::of(service.as_ref()));
            }
        }
    });

    pods.on_change({
        let services = services.store.clone();
        let queue = queue.clone();
        move |old, new| {
            let Some(pod) = new.or(old) else { return };
            let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
            let candidates = services.list_namespace(namespace);
            let keys = handlers::services_for_pod_change(
                old.map(|p| p.as_ref()),
                new.map(|p| p.as_ref()),
                &candidates,
            );
            for key in keys {
                queue.add_batched(key, batch_period);
            }
        }
    });

    slices.on_change({
        let tracker = tracker.clone();
        let queue = queue.clone();
        let delay = batch_period.max(SLICE_CHANGE_MIN_DELAY);
        move |old, new| {
            let keys = handlers::services_for_slice_change(
                old.map(|s| s.as_ref()),
                new.map(|s| s.as_ref()),
                &tracker,
            );
            for key in keys {
                queue.add_batched(key, delay);
            }
        }
    });

    // Node changes only move the zone CPU ratios of topology hints; they are
    // recomputed off the watch path, once per burst of changes.
    let nodes_changed = Arc::new(Notify::new());
    nodes.on_change({
        let nodes_changed = nodes_changed.clone();
        move |old, new| {
            let matters = match (old, new) {
                (Some(old), Some(new)) => topology::node_change_matters(old, new),
                _ => true,
            };
            if matters {
                nodes_changed.notify_one();
            }
        }
    });
    spawn_topology_updates(
        nodes.store.clone(),
        topology.clone(),
        queue.clone(),
        nodes_changed,
        ctx.shutdown.clone(),
    );

    let reconciler = EndpointSliceReconciler {
        client: ctx.client.clone(),
        services: services.store.clone(),
        pods: pods.store.clone(),
        slices: slices.store.clone(),
        nodes: nodes.store.clone(),
        recorder: ctx.recorder(EVENT_SOURCE),
        tracker,
        triggers: TriggerTimes::default(),
        topology,
        max_endpoints_per_slice: ctx.settings.max_endpoints_per_slice.max(1),
    };
    Controller {
        name: CONTROLLER_NAME,
        queue,
        reconciler: Arc::new(reconciler),
        workers,
    }
}

/// Recomputes the zone ratios after Node changes and requeues the Services
/// whose hints they leave overloaded (upstream's topology queue).
fn spawn_topology_updates(
    nodes: Arc<Store<Node>>,
    topology: Arc<Mutex<TopologyCache>>,
    queue: Arc<WorkQueue<ObjectKey>>,
    changed: Arc<Notify>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no async runtime; topology hints will not follow Node changes");
        return;
    };
    runtime.spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = changed.notified() => {}
            }
            let overloaded = {
                let mut topology = topology.lock().expect("topology lock");
                topology.set_nodes(&nodes.list());
                topology.overloaded_services()
            };
            for key in overloaded {
                tracing::debug!(service = %key, "Queuing Service after Node change due to overloading");
                queue.add(key);
            }
        }
    });
}

struct EndpointSliceReconciler {
    client: Client,
    services: Arc<Store<Service>>,
    pods: Arc<Store<Pod>>,
    slices: Arc<Store<EndpointSlice>>,
    nodes: Arc<Store<Node>>,
    recorder: EventRecorder,
    tracker: Arc<SliceTracker>,
    triggers: TriggerTimes,
    topology: Arc<Mutex<TopologyCache>>,
    max_endpoints_per_slice: usize,
}

impl Reconciler for EndpointSliceReconciler {
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, anyhow::Result<Requeue>> {
        self.sync(key).boxed()
    }
}

/// The message Go's error would print: an API status's message, else ours.
fn error_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

fn namespace_terminating(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status
            .details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")),
        _ => false,
    }
}

/// Go's aggregate error text: one message as is, several deduplicated in
/// brackets.
fn aggregate(errors: &[String]) -> String {
    let mut unique: Vec<&str> = Vec::new();
    for e in errors {
        if !unique.contains(&e.as_str()) {
            unique.push(e);
        }
    }
    match unique.as_slice() {
        [one] => one.to_string(),
        many => format!("[{}]", many.join(", ")),
    }
}

fn has_selector(service: &Service) -> bool {
    // An empty selector never reaches us from the apiserver (it is dropped
    // on storage), so it is treated as none.
    service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty())
}

impl EndpointSliceReconciler {
    async fn sync(&self, key: &ObjectKey) -> anyhow::Result<Requeue> {
        let Some(service) = self.services.get(key) else {
            // Slices go with their Service via garbage collection.
            self.triggers.delete_service(key);
            self.tracker.delete_service(key);
            self.topology
                .lock()
                .expect("topology lock")
                .remove_service(key);
            return Ok(None);
        };
        let spec = service.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            return Ok(None);
        }
        if !has_selector(&service) {
            // Slices of selector-less Services are written by their users.
            return Ok(None);
        }
        let selector = spec.and_then(|s| s.selector.clone()).unwrap_or_default();

        let pods: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|labels| podutil::map_selector_matches(&selector, labels))
            })
            .collect();
        let slices: Vec<Arc<EndpointSlice>> = self
            .slices
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|s| {
                let labels = s.metadata.labels.as_ref();
                labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) == Some(&key.name)
                    && labels
                        .and_then(|l| l.get(MANAGED_BY_LABEL))
                        .map(String::as_str)
                        == Some(MANAGED_BY)
                    && s.metadata.deletion_timestamp.is_none()
            })
            .collect();

        if self.tracker.stale(key, slices.iter().map(Arc::as_ref)) {
            anyhow::bail!("EndpointSlice informer cache is out of date");
        }

        let trigger = self
            .triggers
            .compute(key, &service, pods.iter().map(Arc::as_ref));

        let nodes = self.nodes.clone();
        let node = move |name: &str| -> Option<Arc<Node>> {
            (!name.is_empty())
                .then(|| nodes.get(&ObjectKey::new("", name)))
                .flatten()
        };
        let plan = {
            let mut topology = self.topology.lock().expect("topology lock");
            plan::plan(
                &Inputs {
                    service: &service,
                    pods: &pods,
                    slices: &slices,
                    node: &node,
                    max_endpoints_per_slice: self.max_endpoints_per_slice,
                },
                &mut topology,
            )
        };

        let regarding = service.object_ref(&());
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &key.namespace);
        let mut errors: Vec<String> = Vec::new();
        for at in plan.address_types {
            errors.extend(at.errors);
            if let Err(e) = self.write(&api, &service, at.writes, trigger).await {
                errors.push(e);
            }
            for event in at.events {
                if event.warning {
                    self.recorder
                        .warning(&regarding, event.reason, "UpdateHints", event.message)
                        .await;
                } else {
                    self.recorder
                        .normal(&regarding, event.reason, "UpdateHints", event.message)
                        .await;
                }
            }
        }
        for slice in plan.unsupported {
            let name = slice.metadata.name.clone().unwrap_or_default();
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => self.tracker.expect_deletion(&slice),
                Err(e) => errors.push(format!(
                    "error deleting {name} EndpointSlice for Service {key}: {}",
                    error_message(&e)
                )),
            }
        }

        if errors.is_empty() {
            return Ok(None);
        }
        let message = format!(
            "Error updating Endpoint Slices for Service {key}: {}",
            aggregate(&errors)
        );
        self.recorder
            .warning(
                &regarding,
                "FailedToUpdateEndpointSlices",
                "UpdateEndpointSlices",
                message.clone(),
            )
            .await;
        anyhow::bail!(message)
    }

    /// Applies one address type's writes, stopping at the first failure
    /// (upstream's finalize).
    async fn write(
        &self,
        api: &Api<EndpointSlice>,
        service: &Service,
        writes: Writes,
        trigger: Option<Timestamp>,
    ) -> Result<(), String> {
        let key = ObjectKey::of(service);
        // While the Service is being deleted, new slices would only race
        // the garbage collector.
        if service.metadata.deletion_timestamp.is_none() {
            for mut slice in writes.create {
                trigger::annotate(&mut slice, trigger);
                match api.create(&PostParams::default(), &slice).await {
                    Ok(created) => self.tracker.update(&created),
                    Err(e) if namespace_terminating(&e) => return Ok(()),
                    Err(e) => {
                        return Err(format!(
                            "failed to create EndpointSlice for Service {key}: {}",
                            error_message(&e)
                        ));
                    }
                }
            }
        }
        for mut slice in writes.update {
            trigger::annotate(&mut slice, trigger);
            let name = slice.metadata.name.clone().unwrap_or_default();
            match api.replace(&name, &PostParams::default(), &slice).await {
                Ok(updated) => self.tracker.update(&updated),
                Err(e) => {
                    return Err(format!(
                        "failed to update {name} EndpointSlice for Service {key}: {}",
                        error_message(&e)
                    ));
                }
            }
        }
        for slice in writes.delete {
            let name = slice.metadata.name.clone().unwrap_or_default();
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => self.tracker.expect_deletion(&slice),
                Err(e) => {
                    return Err(format!(
                        "failed to delete {name} EndpointSlice for Service {key}: {}",
                        error_message(&e)
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_errors_read_as_go_prints_them() {
        assert_eq!(aggregate(&["a".into()]), "a");
        assert_eq!(aggregate(&["a".into(), "b".into(), "a".into()]), "[a, b]");
        assert_eq!(aggregate(&["a".into(), "a".into()]), "a");
    }
}
