//! The PersistentVolume binder (upstream's
//! pkg/controller/volume/persistentvolume, `persistentvolume-binder-controller`
//! in kube-controller-manager): binds claims to statically provisioned
//! volumes, keeps both phases right, and releases and reclaims volumes
//! whose claims are gone.
//!
//! Pure parts: [`index`] picks a volume for a claim, [`claim_sync`] and
//! [`volume_sync`] decide the writes and Events of one sync as a
//! [`plan::Plan`], [`apply`] applies a plan in order, [`collector`] counts
//! for upstream's `pv_collector_*` gauges. This file wires the
//! informers, the two queues (`volumes`, `claims`, upstream's names), the
//! periodic resync and the API.
//!
//! Differences from upstream, all for lack of in-tree volume plugins or
//! CSI migration: Recycle and Delete of volumes no external component
//! handles fail with upstream's Events (upstream would recycle or delete
//! hostPath/NFS volumes itself); in-tree (`kubernetes.io/…`) provisioners
//! are reported as unknown; CSI-migration annotations are not maintained;
//! the shared Pod informer keeps no container states, so a deleted pod on a
//! node counts as using its claim until it is gone.

pub mod apply;
pub mod cache;
pub mod candidates;
pub mod claim_sync;
pub mod collector;
pub mod helpers;
pub mod index;
pub mod plan;
pub mod volume_sync;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod wiring_tests;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::PostParams;
use kube::{Api, Client};
use understudy_component_base::events::{EventRecorder, EventType};

use crate::context::ControllerContext;
use crate::informer::Store;
use crate::key::ObjectKey;
use crate::metrics::Metrics;
use crate::worker::{Controller, Reconciler, Requeue};
use crate::workqueue::WorkQueue;

use self::apply::{Applied, BinderApi};
use self::cache::VersionedCache;
use self::candidates::CandidateIndex;
use self::claim_sync::ClaimView;
use self::helpers::{claim_key, name_of_volume};
use self::volume_sync::ClaimSeen;

/// Upstream's name for the controller in kube-controller-manager.
pub const CONTROLLER_NAME: &str = "persistentvolume-binder-controller";
/// Upstream's Event source (the recorder's component).
const EVENT_SOURCE: &str = "persistentvolume-controller";
/// Upstream's queue names (workqueue metrics carry them).
const VOLUME_QUEUE: &str = "volumes";
const CLAIM_QUEUE: &str = "claims";

/// Shared by both workers, as upstream's PersistentVolumeController.
struct Binder {
    client: Client,
    volume_store: Arc<Store<PersistentVolume>>,
    claim_store: Arc<Store<PersistentVolumeClaim>>,
    class_store: Arc<Store<StorageClass>>,
    pod_store: Arc<Store<Pod>>,
    volumes: VersionedCache<PersistentVolume>,
    /// The volumes a claim could match, by the informer's copies.
    informer_candidates: Arc<CandidateIndex>,
    /// The same by the copies in `volumes`, kept under its lock.
    own_candidates: CandidateIndex,
    claims: VersionedCache<PersistentVolumeClaim>,
    volume_queue: Arc<WorkQueue<ObjectKey>>,
    claim_queue: Arc<WorkQueue<ObjectKey>>,
    recorder: EventRecorder,
    metrics: Metrics,
    dynamic_provisioning: bool,
    /// Volumes a claim sync has chosen and is writing right now. Several
    /// claims sync at once (upstream syncs one at a time); a claim looking
    /// for a volume does not see these, so two never pick the same one and
    /// lose a round to a conflict (which would still stop a double bind).
    writing: Mutex<HashSet<String>>,
}

/// Claims synced at once when nothing says otherwise. A sync is mostly
/// waiting on its four writes: with 8, a backlog of binds paced at 49–59 %
/// of the apiserver's (the bench's null binder keeps 64 pairs in flight),
/// with 32 at 78–98 %.
pub const DEFAULT_CLAIM_WORKERS: usize = 32;

/// How long a claim whose plan writes a volume another claim sync is
/// writing waits before it is planned again from the newer view.
const BUSY_VOLUME_RETRY: Duration = Duration::from_millis(50);

/// Upstream's `pv_collector_*` gauges over the binder's informers.
pub fn collector(ctx: &ControllerContext) -> collector::PvCollector {
    collector::PvCollector {
        volumes: ctx.informers.get::<PersistentVolume>().store.clone(),
        claims: ctx.informers.get::<PersistentVolumeClaim>().store.clone(),
    }
}

/// Registers the binder's workers: one for volumes, as upstream, and
/// `claim_workers` for claims (upstream runs one; binds are four writes in a
/// row, so one at a time leaves the apiserver idle between them).
pub fn register(ctx: &ControllerContext, claim_workers: usize) -> Vec<Controller> {
    let volume_queue = ctx.queue(VOLUME_QUEUE);
    let claim_queue = ctx.queue(CLAIM_QUEUE);
    let volumes = ctx.informers.get::<PersistentVolume>();
    let claims = ctx.informers.get::<PersistentVolumeClaim>();
    let classes = ctx.informers.get::<StorageClass>();
    // Only read (which pods wait for a claim, which use a volume); pod
    // changes trigger nothing, as upstream.
    let pods = ctx.informers.get::<Pod>();

    let informer_candidates = Arc::new(CandidateIndex::default());
    volumes.on_change({
        let volume_queue = volume_queue.clone();
        let claim_queue = claim_queue.clone();
        let candidates = informer_candidates.clone();
        move |old, new| {
            match (old, new) {
                (_, Some(volume)) => {
                    candidates.update(name_of_volume(volume), volume);
                    volume_queue.add(volume_key(volume));
                }
                (Some(volume), None) => {
                    candidates.remove(name_of_volume(volume));
                    volume_queue.add(volume_key(volume));
                    // Its claim is Lost now.
                    if let Some(key) = claim_ref_key(volume) {
                        claim_queue.add(key);
                    }
                }
                (None, None) => {}
            }
        }
    });
    claims.on_change({
        let volume_queue = volume_queue.clone();
        let claim_queue = claim_queue.clone();
        move |old, new| match (old, new) {
            (_, Some(claim)) => claim_queue.add(ObjectKey::of(claim.as_ref())),
            (Some(claim), None) => {
                claim_queue.add(ObjectKey::of(claim.as_ref()));
                // Its volume is Released now.
                let bound_to = helpers::claim_volume_name(claim);
                if !bound_to.is_empty() {
                    volume_queue.add(ObjectKey::new("", bound_to));
                }
            }
            (None, None) => {}
        }
    });

    let binder = Arc::new(Binder {
        client: ctx.client.clone(),
        volume_store: volumes.store.clone(),
        claim_store: claims.store.clone(),
        class_store: classes.store.clone(),
        pod_store: pods.store.clone(),
        volumes: VersionedCache::default(),
        informer_candidates,
        own_candidates: CandidateIndex::default(),
        claims: VersionedCache::default(),
        volume_queue: volume_queue.clone(),
        claim_queue: claim_queue.clone(),
        recorder: ctx.recorder(EVENT_SOURCE),
        metrics: ctx.metrics.clone(),
        dynamic_provisioning: ctx.settings.enable_dynamic_provisioning,
        writing: Mutex::default(),
    });
    resync_periodically(ctx, &binder, ctx.settings.pvclaimbinder_sync_period);

    vec![
        Controller {
            name: "persistentvolume-binder-controller/volumes",
            queue: volume_queue,
            reconciler: Arc::new(VolumeWorker(binder.clone())),
            workers: 1,
        },
        Controller {
            name: "persistentvolume-binder-controller/claims",
            queue: claim_queue,
            reconciler: Arc::new(ClaimWorker(binder)),
            workers: claim_workers,
        },
    ]
}

fn volume_key(volume: &PersistentVolume) -> ObjectKey {
    ObjectKey::new("", name_of_volume(volume))
}

fn claim_ref_key(volume: &PersistentVolume) -> Option<ObjectKey> {
    let claim_ref = volume.spec.as_ref()?.claim_ref.as_ref()?;
    Some(ObjectKey::new(
        claim_ref.namespace.clone().unwrap_or_default(),
        claim_ref.name.clone().unwrap_or_default(),
    ))
}

/// Upstream's resync: every period, every claim and volume is synced again
/// (unbound claims find volumes created since, phases are re-checked).
fn resync_periodically(ctx: &ControllerContext, binder: &Arc<Binder>, period: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no async runtime; the PV binder will not resync periodically");
        return;
    };
    if period.is_zero() {
        return;
    }
    let binder = binder.clone();
    let shutdown = ctx.shutdown.clone();
    runtime.spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            for claim in binder.claim_store.list() {
                binder.claim_queue.add(ObjectKey::of(claim.as_ref()));
            }
            for volume in binder.volume_store.list() {
                binder.volume_queue.add(volume_key(&volume));
            }
        }
    });
}

/// The newer of the informer's copy and ours (our writes may be ahead of
/// the watch).
fn newest<K: kube::Resource>(informer: Option<Arc<K>>, ours: Option<Arc<K>>) -> Option<Arc<K>> {
    let version = |o: &Arc<K>| o.meta().resource_version.as_deref()?.parse::<u64>().ok();
    match (informer, ours) {
        (Some(a), Some(b)) => Some(if version(&b) > version(&a) { b } else { a }),
        (a, b) => a.or(b),
    }
}

impl Binder {
    /// The volumes a claim naming none could be given, newest copy of each,
    /// by name (so the match is deterministic): those free or pre-bound to
    /// it, and not being written by another claim's sync. Volumes bound to
    /// other claims can never match; leaving them out here keeps a claim's
    /// sync from copying the whole view (most volumes, once a backlog is
    /// worked through).
    fn match_view(
        &self,
        claim: &PersistentVolumeClaim,
        writing: &HashSet<String>,
    ) -> BTreeMap<Arc<str>, Arc<PersistentVolume>> {
        let key = ObjectKey::of(claim);
        candidates::newest_candidates(&self.informer_candidates, &self.own_candidates, &key)
            .into_iter()
            .filter(|copy| {
                let volume = &copy.volume;
                let prebound = helpers::is_volume_bound_to_claim(volume, claim);
                let free = volume.spec.as_ref().is_some_and(|s| s.claim_ref.is_none());
                prebound || (free && !writing.contains(&*copy.name))
            })
            .map(|copy| (copy.name, copy.volume))
            .collect()
    }

    /// Keeps `volume` as our newest copy unless a newer one is kept.
    fn keep_volume(&self, name: String, volume: Arc<PersistentVolume>) -> bool {
        self.volumes.store_then(name, volume, |name, volume| {
            self.own_candidates.update(name, volume)
        })
    }

    fn forget_volume(&self, name: &str) -> Option<Arc<PersistentVolume>> {
        self.volumes
            .remove_then(name, |name| self.own_candidates.remove(name))
    }

    /// Just the named volume (newest copy), as the one-entry view a claim
    /// naming it needs.
    fn volume_view_of(&self, name: &str) -> BTreeMap<Arc<str>, Arc<PersistentVolume>> {
        let informer = self.volume_store.get(&ObjectKey::new("", name));
        newest(informer, self.volumes.get(name))
            .map(|volume| (Arc::from(name), volume))
            .into_iter()
            .collect()
    }

    fn class_view(&self) -> BTreeMap<String, StorageClass> {
        self.class_store
            .list()
            .into_iter()
            .filter_map(|c| Some((c.metadata.name.clone()?, StorageClass::clone(&c))))
            .collect()
    }

    fn cached_claim(&self, key: &ObjectKey) -> Option<Arc<PersistentVolumeClaim>> {
        newest(self.claim_store.get(key), self.claims.get(&key.to_string()))
    }

    async fn sync_volume_by_key(&self, key: &ObjectKey) -> anyhow::Result<Requeue> {
        let Some(volume) = self.volume_store.get(key) else {
            // Deleted: its claim (if any) must notice.
            if let Some(gone) = self.forget_volume(&key.name)
                && let Some(claim) = claim_ref_key(&gone)
            {
                self.claim_queue.add(claim);
            }
            return Ok(None);
        };
        if !self.keep_volume(key.name.clone(), volume.clone()) {
            // Our own newer write is on its way through the watch.
            return Ok(None);
        }
        if volume.spec.is_none() {
            self.invalid(volume.as_ref(), "PersistentVolume has no spec")
                .await;
            return Ok(None);
        }
        let claim = self.claim_of(&volume).await?;
        let seen = match &claim {
            Some(claim) => ClaimSeen::Found(claim),
            None => ClaimSeen::Missing,
        };
        let users = match claim_ref_key(&volume) {
            Some(key) => self.pods_using(&key, true),
            None => Vec::new(),
        };
        let users: Vec<String> = users
            .iter()
            .map(|p| ObjectKey::of(p.as_ref()).to_string())
            .collect();
        let plan = volume_sync::sync_volume(&volume, seen, &users);
        self.finish(plan).await
    }

    /// The claim the volume's claimRef names, double-checked with the
    /// apiserver where upstream does.
    async fn claim_of(
        &self,
        volume: &PersistentVolume,
    ) -> anyhow::Result<Option<Arc<PersistentVolumeClaim>>> {
        let Some(key) = claim_ref_key(volume) else {
            return Ok(None);
        };
        let has_uid = volume
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .and_then(|r| r.uid.as_deref())
            .is_some_and(|u| !u.is_empty());
        let cached = self.cached_claim(&key);
        if !has_uid || !volume_sync::needs_live_claim(volume, cached.as_deref()) {
            return Ok(cached);
        }
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &key.namespace);
        Ok(api.get_opt(&key.name).await?.map(Arc::new))
    }

    async fn sync_claim_by_key(&self, key: &ObjectKey) -> anyhow::Result<Requeue> {
        let Some(claim) = self.claim_store.get(key) else {
            // Deleted: its volume is released.
            if let Some(gone) = self.claims.remove(&key.to_string()) {
                let bound_to = helpers::claim_volume_name(&gone);
                if !bound_to.is_empty() {
                    self.volume_queue.add(ObjectKey::new("", bound_to));
                }
            }
            return Ok(None);
        };
        if !self.claims.store(key.to_string(), claim.clone()) {
            return Ok(None);
        }
        if claim.spec.is_none() {
            self.invalid(claim.as_ref(), "PersistentVolumeClaim has no spec")
                .await;
            return Ok(None);
        }
        let classes = self.class_view();
        let pods = self.pods_using(key, false);
        // Planned under the lock, so a volume is either in the view or
        // taken by exactly one sync; written outside it, in parallel.
        let taken = {
            let mut writing = self.writing.lock().expect("writing lock");
            let named = helpers::claim_volume_name(&claim);
            let volumes = if named.is_empty() {
                self.match_view(&claim, &writing)
            } else {
                // A claim that names its volume looks at no other: most
                // syncs (every change of a bound pair) skip the full view.
                self.volume_view_of(named)
            };
            let view = ClaimView {
                volumes: &volumes,
                classes: &classes,
                pods: &pods,
                dynamic_provisioning: self.dynamic_provisioning,
            };
            let plan = claim_sync::sync_claim(&claim, &view);
            let targets = plan::volumes_written(&plan);
            if targets.iter().any(|name| writing.contains(name)) {
                return Ok(Some(BUSY_VOLUME_RETRY));
            }
            writing.extend(targets.iter().cloned());
            (plan, targets)
        };
        let (plan, targets) = taken;
        let outcome = self.finish(plan).await;
        let mut writing = self.writing.lock().expect("writing lock");
        for name in &targets {
            writing.remove(name);
        }
        outcome
    }

    /// The pods of the claim's namespace that use it, sorted by name;
    /// without the terminated ones if asked.
    fn pods_using(&self, claim: &ObjectKey, live_only: bool) -> Vec<Arc<Pod>> {
        let mut pods: Vec<Arc<Pod>> = self
            .pod_store
            .list_namespace(&claim.namespace)
            .into_iter()
            .filter(|p| helpers::pod_uses_claim(p, &claim.name))
            .filter(|p| !live_only || !helpers::is_pod_terminated(p))
            .collect();
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        pods
    }

    async fn finish(&self, plan: plan::Plan) -> anyhow::Result<Requeue> {
        let Applied {
            events,
            enqueue_claims,
            retroactive_class,
            error,
        } = apply::apply(plan, self).await;
        for event in events {
            self.recorder.record(
                &event.regarding,
                event.type_,
                event.reason,
                "Binding",
                event.message,
            );
        }
        for key in enqueue_claims {
            let (namespace, name) = key.split_once('/').unwrap_or(("", &key));
            self.claim_queue.add(ObjectKey::new(namespace, name));
        }
        match retroactive_class {
            Some(true) => {
                self.metrics.retroactive_storageclass.inc();
            }
            Some(false) => {
                self.metrics.retroactive_storageclass_errors.inc();
            }
            None => {}
        }
        match error {
            Some(error) => Err(anyhow::Error::msg(error)),
            None => Ok(None),
        }
    }

    /// Objects the binder cannot work with: said once per change, skipped.
    async fn invalid<K: kube::Resource<DynamicType = ()>>(&self, obj: &K, problem: &str) {
        tracing::warn!(object = ?obj.meta().name, problem, "skipping invalid object");
        self.recorder.record(
            &obj.object_ref(&()),
            EventType::Warning,
            "Invalid",
            "Binding",
            problem.to_string(),
        );
    }
}

/// A conflict's message as Go's error prints it.
fn api_error(error: kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message,
        other => other.to_string(),
    }
}

impl BinderApi for Binder {
    fn update_volume(
        &self,
        volume: PersistentVolume,
    ) -> BoxFuture<'_, Result<PersistentVolume, String>> {
        async move {
            let api: Api<PersistentVolume> = Api::all(self.client.clone());
            let name = name_of_volume(&volume).to_string();
            let written = api
                .replace(&name, &PostParams::default(), &volume)
                .await
                .map_err(api_error)?;
            self.keep_volume(name, Arc::new(written.clone()));
            Ok(written)
        }
        .boxed()
    }

    fn update_volume_status(
        &self,
        volume: PersistentVolume,
    ) -> BoxFuture<'_, Result<PersistentVolume, String>> {
        async move {
            let api: Api<PersistentVolume> = Api::all(self.client.clone());
            let name = name_of_volume(&volume).to_string();
            let written = api
                .replace_status(&name, &PostParams::default(), &volume)
                .await
                .map_err(api_error)?;
            let phase = written.status.as_ref().and_then(|s| s.phase.as_deref());
            tracing::info!(
                volume = name,
                phase = phase.unwrap_or_default(),
                "volume entered phase"
            );
            self.keep_volume(name, Arc::new(written.clone()));
            Ok(written)
        }
        .boxed()
    }

    fn update_claim(
        &self,
        claim: PersistentVolumeClaim,
    ) -> BoxFuture<'_, Result<PersistentVolumeClaim, String>> {
        async move {
            let key = ObjectKey::of(&claim);
            let api: Api<PersistentVolumeClaim> =
                Api::namespaced(self.client.clone(), &key.namespace);
            let written = api
                .replace(&key.name, &PostParams::default(), &claim)
                .await
                .map_err(api_error)?;
            self.claims
                .store(claim_key(&written), Arc::new(written.clone()));
            Ok(written)
        }
        .boxed()
    }

    fn update_claim_status(
        &self,
        claim: PersistentVolumeClaim,
    ) -> BoxFuture<'_, Result<PersistentVolumeClaim, String>> {
        async move {
            let key = ObjectKey::of(&claim);
            let api: Api<PersistentVolumeClaim> =
                Api::namespaced(self.client.clone(), &key.namespace);
            let written = api
                .replace_status(&key.name, &PostParams::default(), &claim)
                .await
                .map_err(api_error)?;
            let phase = written.status.as_ref().and_then(|s| s.phase.as_deref());
            tracing::info!(claim = %key, phase = phase.unwrap_or_default(), "claim entered phase");
            self.claims
                .store(claim_key(&written), Arc::new(written.clone()));
            Ok(written)
        }
        .boxed()
    }
}

struct VolumeWorker(Arc<Binder>);
struct ClaimWorker(Arc<Binder>);

impl Reconciler for VolumeWorker {
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, anyhow::Result<Requeue>> {
        self.0.sync_volume_by_key(key).boxed()
    }
}

impl Reconciler for ClaimWorker {
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, anyhow::Result<Requeue>> {
        self.0.sync_claim_by_key(key).boxed()
    }
}
