//! The Endpoints controller (upstream's pkg/controller/endpoint): keeps the
//! Endpoints object of every Service with a selector equal to the addresses
//! of the pods it selects.
//!
//! Pure parts: [`subsets`] builds the addresses from pods, [`repack`] puts
//! them in upstream's canonical layout, [`plan`] decides what (if anything)
//! to write, [`trigger`] computes the last-change-trigger-time annotation and
//! [`enqueue`] maps pod changes to Services. This file wires the informers
//! and applies plans through the API.

pub mod enqueue;
pub mod plan;
pub mod repack;
pub mod subsets;
pub mod trigger;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Endpoints, ObjectReference, Pod, Service};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, Resource};
use understudy_component_base::events::EventRecorder;

use crate::context::ControllerContext;
use crate::informer::{Informer, Store};
use crate::key::ObjectKey;
use crate::worker::{Controller, Reconciler, Requeue};
use crate::workqueue::WorkQueue;

use self::plan::Plan;
use self::trigger::TriggerTimes;

/// Upstream's queue name (workqueue metrics carry it).
const QUEUE_NAME: &str = "endpoint";
/// Upstream's Event source.
const EVENT_SOURCE: &str = "endpoint-controller";
/// Upstream's name for the controller in kube-controller-manager.
const CONTROLLER_NAME: &str = "endpoints-controller";
/// Endpoints holding a leader-election record have no Service on purpose.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

/// resourceVersions by Endpoints key, shared between handlers and workers.
type Versions = Arc<Mutex<HashMap<ObjectKey, String>>>;

pub fn register(ctx: &ControllerContext, workers: usize) -> Controller {
    let queue = ctx.queue(QUEUE_NAME);
    let services = ctx.informers.get::<Service>();
    let pods = ctx.informers.get::<Pod>();
    let endpoints = ctx.informers.get::<Endpoints>();
    let written: Versions = Arc::default();

    services.on_change({
        let queue = queue.clone();
        move |old, new| {
            if let Some(service) = new.or(old) {
                queue.add(ObjectKey::of(service.as_ref()));
            }
        }
    });

    let batch_period = ctx.settings.endpoint_updates_batch_period;
    pods.on_change({
        let services = services.store.clone();
        let queue = queue.clone();
        move |old, new| {
            let Some(pod) = new.or(old) else { return };
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
            let candidates = services.list_namespace(namespace);
            let keys = enqueue::services_to_sync(
                old.map(|p| p.as_ref()),
                new.map(|p| p.as_ref()),
                &candidates,
            );
            for key in keys {
                queue.add_batched(key, batch_period);
            }
        }
    });

    endpoints.on_change({
        let queue = queue.clone();
        let services = services.store.clone();
        let written = written.clone();
        move |old, new| {
            let Some(new) = new else {
                // Deleted: the Service (if any) gets a fresh one.
                if let Some(old) = old {
                    queue.add(ObjectKey::of(old.as_ref()));
                }
                return;
            };
            let rv = new.metadata.resource_version.as_ref();
            if old.is_some_and(|old| old.metadata.resource_version.as_ref() == rv) {
                return;
            }
            let key = ObjectKey::of(new.as_ref());
            let ours = written.lock().expect("written lock").get(&key) == rv;
            // Someone else wrote the Endpoints of a Service we manage:
            // put ours back. Endpoints without a Service are left to the
            // startup sweep, as upstream.
            if !ours && services.get(&key).is_some() {
                queue.add(key);
            }
        }
    });

    sweep_leftovers_once_synced(ctx, &endpoints, queue.clone());

    let reconciler = EndpointsReconciler {
        client: ctx.client.clone(),
        services: services.store.clone(),
        pods: pods.store.clone(),
        endpoints: endpoints.store.clone(),
        recorder: ctx.recorder(EVENT_SOURCE),
        triggers: TriggerTimes::default(),
        written,
        stale: Mutex::default(),
    };
    Controller {
        name: CONTROLLER_NAME,
        queue,
        reconciler: Arc::new(reconciler),
        workers,
    }
}

/// Upstream's checkLeftoverEndpoints: once, after the first list, sync the
/// key of every Endpoints so those whose Service went while we were down are
/// deleted. Leader-election records live in Endpoints without a Service on
/// purpose and are skipped.
fn sweep_leftovers_once_synced(
    ctx: &ControllerContext,
    endpoints: &Informer<Endpoints>,
    queue: Arc<WorkQueue<ObjectKey>>,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no async runtime; leftover Endpoints will not be swept");
        return;
    };
    let store = endpoints.store.clone();
    let mut synced = endpoints.synced();
    let shutdown = ctx.shutdown.clone();
    runtime.spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            res = synced.wait_for(|s| *s) => if res.is_err() { return },
        }
        for ep in store.list() {
            let leader = ep
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(LEADER_ANNOTATION));
            if !leader {
                queue.add(ObjectKey::of(ep.as_ref()));
            }
        }
    });
}

struct EndpointsReconciler {
    client: Client,
    services: Arc<Store<Service>>,
    pods: Arc<Store<Pod>>,
    endpoints: Arc<Store<Endpoints>>,
    recorder: EventRecorder,
    triggers: TriggerTimes,
    /// What our own last write of each Endpoints returned, so the handler
    /// can tell our writes from others'.
    written: Versions,
    /// resourceVersions we have already replaced: seeing one again in the
    /// store means the informer lags behind our write (upstream's
    /// staleEndpointsTracker).
    stale: Mutex<HashMap<ObjectKey, String>>,
}

impl Reconciler for EndpointsReconciler {
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, anyhow::Result<Requeue>> {
        self.sync(key).boxed()
    }
}

/// The message Go's error would print: an API status's message, else ours.
fn error_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

fn namespace_terminating(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status)
        if status.code == 403
            && status
                .details
                .as_ref()
                .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
}

fn selects_pods(service: &Service) -> bool {
    let Some(spec) = service.spec.as_ref() else {
        return false;
    };
    // ExternalName Services and Services without a selector get their
    // Endpoints from someone else (or not at all). An empty selector never
    // reaches us: the apiserver drops it, so it reads as none.
    spec.type_.as_deref() != Some("ExternalName")
        && spec.selector.as_ref().is_some_and(|s| !s.is_empty())
}

impl EndpointsReconciler {
    async fn sync(&self, key: &ObjectKey) -> anyhow::Result<Requeue> {
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &key.namespace);
        let Some(service) = self.services.get(key) else {
            return self.service_gone(&api, key).await;
        };
        if !selects_pods(&service) {
            return Ok(None);
        }
        let selector = service
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        let pods: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|p| {
                p.metadata.labels.as_ref().is_some_and(|labels| {
                    crate::controllers::podutil::map_selector_matches(&selector, labels)
                })
            })
            .collect();
        // Computed before the comparison so the tracker moves on even when
        // nothing is written, as upstream.
        let trigger_time = self
            .triggers
            .compute(key, &service, pods.iter().map(|p| p.as_ref()));
        let subsets = subsets::build_subsets(&service, pods.iter().map(|p| p.as_ref()));

        let stored = self.endpoints.get(key);
        if let Some(stored) = &stored {
            let rv = stored.metadata.resource_version.clone().unwrap_or_default();
            if self.stale.lock().expect("stale lock").get(key) == Some(&rv) {
                anyhow::bail!(
                    "endpoints informer cache is out of date, resource version {rv} already processed for endpoints {key}"
                );
            }
        }

        match plan::plan(&service, stored.as_deref(), subsets, trigger_time) {
            Plan::Nothing => Ok(None),
            Plan::Create(endpoints) => self.create(&api, key, endpoints).await,
            Plan::Update(endpoints) => {
                let before = stored
                    .and_then(|s| s.metadata.resource_version.clone())
                    .unwrap_or_default();
                self.update(&api, key, endpoints, before).await
            }
        }
    }

    async fn service_gone(&self, api: &Api<Endpoints>, key: &ObjectKey) -> anyhow::Result<Requeue> {
        match api.delete(&key.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
        self.triggers.forget(key);
        self.stale.lock().expect("stale lock").remove(key);
        self.written.lock().expect("written lock").remove(key);
        Ok(None)
    }

    async fn create(
        &self,
        api: &Api<Endpoints>,
        key: &ObjectKey,
        endpoints: Endpoints,
    ) -> anyhow::Result<Requeue> {
        match api.create(&PostParams::default(), &endpoints).await {
            Ok(created) => {
                if let Some(rv) = created.metadata.resource_version {
                    self.written
                        .lock()
                        .expect("written lock")
                        .insert(key.clone(), rv);
                }
                Ok(None)
            }
            // Creates keep failing in a terminating namespace; nothing to
            // retry (nor to report).
            Err(error) if namespace_terminating(&error) => Ok(None),
            Err(error) => {
                // Upstream refers to the unsaved object, which has no
                // namespace yet, so its Event lands in `default`.
                let regarding = ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Endpoints".into()),
                    name: Some(key.name.clone()),
                    ..ObjectReference::default()
                };
                self.recorder
                    .warning(
                        &regarding,
                        "FailedToCreateEndpoint",
                        "Create",
                        format!(
                            "Failed to create endpoint for service {}/{}: {}",
                            key.namespace,
                            key.name,
                            error_message(&error)
                        ),
                    )
                    .await;
                Err(error.into())
            }
        }
    }

    async fn update(
        &self,
        api: &Api<Endpoints>,
        key: &ObjectKey,
        endpoints: Endpoints,
        before: String,
    ) -> anyhow::Result<Requeue> {
        match api
            .replace(&key.name, &PostParams::default(), &endpoints)
            .await
        {
            Ok(updated) => {
                let rv = updated.metadata.resource_version.unwrap_or_default();
                // A write the apiserver found to be a no-op keeps the old
                // version, which is then not stale.
                if rv != before {
                    self.stale
                        .lock()
                        .expect("stale lock")
                        .insert(key.clone(), before);
                }
                self.written
                    .lock()
                    .expect("written lock")
                    .insert(key.clone(), rv);
                Ok(None)
            }
            Err(error) => {
                self.recorder
                    .warning(
                        &endpoints.object_ref(&()),
                        "FailedToUpdateEndpoint",
                        "Update",
                        format!(
                            "Failed to update endpoint {}/{}: {}",
                            key.namespace,
                            key.name,
                            error_message(&error)
                        ),
                    )
                    .await;
                Err(error.into())
            }
        }
    }
}
