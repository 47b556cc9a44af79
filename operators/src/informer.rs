//! Shared informers: one watch per kind feeding an in-memory store that every
//! controller reads, plus change handlers that turn changes into queue keys
//! (upstream's SharedInformerFactory + listers + ResourceEventHandlers).
//!
//! kube-runtime's reflector keeps a store but hands out no old/new pairs, and
//! controllers need both (e.g. a pod whose labels changed must wake the
//! ReplicaSets that selected it before and after), so the store and the
//! fan-out are ours; the watch itself is kube-runtime's watcher.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use futures::{StreamExt, TryStreamExt};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::key::ObjectKey;

/// One change seen by a handler: `(None, Some)` added, `(Some, Some)` updated,
/// `(Some, None)` deleted.
pub type Handler<K> = Box<dyn Fn(Option<&Arc<K>>, Option<&Arc<K>>) + Send + Sync>;

/// Objects of one kind by namespace, then name.
pub struct Store<K> {
    objects: RwLock<HashMap<String, HashMap<String, Arc<K>>>>,
}

impl<K: Resource> Default for Store<K> {
    fn default() -> Self {
        Self {
            objects: RwLock::new(HashMap::new()),
        }
    }
}

impl<K: Resource> Store<K> {
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<K>> {
        let objects = self.objects.read().expect("store lock");
        objects.get(&key.namespace)?.get(&key.name).cloned()
    }

    /// Everything in one namespace (`""` for cluster-scoped kinds).
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let objects = self.objects.read().expect("store lock");
        objects
            .get(namespace)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        let objects = self.objects.read().expect("store lock");
        objects.values().flat_map(|m| m.values().cloned()).collect()
    }

    pub fn len(&self) -> usize {
        let objects = self.objects.read().expect("store lock");
        objects.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts an object in, returning the one it replaced.
    pub fn insert(&self, obj: Arc<K>) -> Option<Arc<K>> {
        let key = ObjectKey::of(obj.as_ref());
        let mut objects = self.objects.write().expect("store lock");
        objects
            .entry(key.namespace)
            .or_default()
            .insert(key.name, obj)
    }

    pub fn remove(&self, key: &ObjectKey) -> Option<Arc<K>> {
        let mut objects = self.objects.write().expect("store lock");
        let names = objects.get_mut(&key.namespace)?;
        let old = names.remove(&key.name);
        if names.is_empty() {
            objects.remove(&key.namespace);
        }
        old
    }

    fn keys(&self) -> Vec<ObjectKey> {
        let objects = self.objects.read().expect("store lock");
        objects
            .iter()
            .flat_map(|(ns, m)| m.keys().map(|n| ObjectKey::new(ns.clone(), n.clone())))
            .collect()
    }
}

/// A watched kind: its store, its handlers and whether the first list is in.
pub struct Informer<K: Resource> {
    pub store: Arc<Store<K>>,
    handlers: RwLock<Vec<Handler<K>>>,
    synced_tx: watch::Sender<bool>,
    /// Drops fields no controller reads before an object is stored.
    trim: fn(&mut K),
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    pub fn new(trim: fn(&mut K)) -> Arc<Self> {
        Arc::new(Self {
            store: Arc::new(Store::default()),
            handlers: RwLock::new(Vec::new()),
            synced_tx: watch::channel(false).0,
            trim,
        })
    }

    /// Registers a change handler; handlers must only be cheap (enqueue keys).
    pub fn on_change(
        &self,
        handler: impl Fn(Option<&Arc<K>>, Option<&Arc<K>>) + Send + Sync + 'static,
    ) {
        self.handlers
            .write()
            .expect("handlers lock")
            .push(Box::new(handler));
    }

    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced_tx.subscribe()
    }

    /// Applies one object as the watch reported it, calling the handlers.
    pub fn apply(&self, mut obj: K) {
        (self.trim)(&mut obj);
        let new = Arc::new(obj);
        let old = self.store.insert(new.clone());
        self.notify(old.as_ref(), Some(&new));
    }

    pub fn delete(&self, key: &ObjectKey) {
        if let Some(old) = self.store.remove(key) {
            self.notify(Some(&old), None);
        }
    }

    fn notify(&self, old: Option<&Arc<K>>, new: Option<&Arc<K>>) {
        for handler in self.handlers.read().expect("handlers lock").iter() {
            handler(old, new);
        }
    }

    /// Watches until `shutdown`; kube's watcher re-lists and retries with
    /// backoff by itself. After every (re)list, objects the list no longer
    /// holds are deleted, so a deletion missed while disconnected still
    /// reaches the handlers.
    pub async fn run(
        self: Arc<Self>,
        api: Api<K>,
        config: watcher::Config,
        shutdown: CancellationToken,
    ) {
        let mut stream = watcher::watcher(api, config).default_backoff().boxed();
        let mut listing: Option<HashSet<ObjectKey>> = None;
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = stream.try_next() => next,
            };
            match next {
                Ok(Some(Event::Init)) => listing = Some(HashSet::new()),
                Ok(Some(Event::InitApply(obj))) => {
                    if let Some(seen) = listing.as_mut() {
                        seen.insert(ObjectKey::of(&obj));
                    }
                    self.apply(obj);
                }
                Ok(Some(Event::InitDone)) => {
                    if let Some(seen) = listing.take() {
                        for key in self.store.keys() {
                            if !seen.contains(&key) {
                                self.delete(&key);
                            }
                        }
                    }
                    let _ = self.synced_tx.send(true);
                }
                Ok(Some(Event::Apply(obj))) => self.apply(obj),
                Ok(Some(Event::Delete(obj))) => self.delete(&ObjectKey::of(&obj)),
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(kind = %K::kind(&Default::default()), %error, "watch error; retrying")
                }
            }
        }
    }
}

/// Drops managedFields, which no controller reads (as upstream's informers).
pub fn trim_managed_fields<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

/// Starts one informer's watch.
type Starter = Box<dyn FnOnce(CancellationToken) + Send>;

/// Starts watches on demand: a controller asks for the kinds it reads, and
/// each kind is watched once however many controllers share it.
pub struct Informers {
    client: Client,
    started: std::sync::Mutex<Vec<Starter>>,
    synced: std::sync::Mutex<Vec<watch::Receiver<bool>>>,
    by_kind: std::sync::Mutex<HashMap<&'static str, Arc<dyn std::any::Any + Send + Sync>>>,
}

impl Informers {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            started: Default::default(),
            synced: Default::default(),
            by_kind: Default::default(),
        }
    }

    /// The shared informer of `K`, created (not yet started) on first use.
    pub fn get<K>(&self) -> Arc<Informer<K>>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default,
    {
        self.get_with(trim_managed_fields::<K>)
    }

    /// As [`Informers::get`], with a trimming function for the kind (the
    /// first caller's wins).
    pub fn get_with<K>(&self, trim: fn(&mut K)) -> Arc<Informer<K>>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default,
    {
        let kind = std::any::type_name::<K>();
        let mut by_kind = self.by_kind.lock().expect("informers lock");
        if let Some(existing) = by_kind.get(kind) {
            return existing
                .clone()
                .downcast::<Informer<K>>()
                .expect("one informer type per kind");
        }
        let informer = Informer::<K>::new(trim);
        by_kind.insert(kind, informer.clone());
        self.synced
            .lock()
            .expect("informers lock")
            .push(informer.synced());
        let api: Api<K> = Api::all(self.client.clone());
        let runner = informer.clone();
        self.started
            .lock()
            .expect("informers lock")
            .push(Box::new(move |shutdown| {
                tokio::spawn(runner.run(api, watcher::Config::default(), shutdown));
            }));
        informer
    }

    /// Starts every informer asked for so far.
    pub fn start(&self, shutdown: &CancellationToken) {
        for start in self.started.lock().expect("informers lock").drain(..) {
            start(shutdown.clone());
        }
    }

    /// Waits until every started informer has its first list in.
    pub async fn wait_synced(&self) {
        let receivers: Vec<_> = self.synced.lock().expect("informers lock").clone();
        for mut rx in receivers {
            if rx.wait_for(|synced| *synced).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use std::sync::Mutex;

    fn pod(ns: &str, name: &str, rv: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        p.metadata.resource_version = Some(rv.into());
        p
    }

    #[test]
    fn handlers_see_old_and_new() {
        let informer = Informer::<Pod>::new(trim_managed_fields::<Pod>);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        informer.on_change(move |old, new| {
            let rv = |p: Option<&Arc<Pod>>| p.and_then(|p| p.metadata.resource_version.clone());
            log.lock().unwrap().push((rv(old), rv(new)));
        });
        informer.apply(pod("a", "p", "1"));
        informer.apply(pod("a", "p", "2"));
        informer.delete(&ObjectKey::new("a", "p"));
        informer.delete(&ObjectKey::new("a", "p"));
        let seen = seen.lock().unwrap();
        assert_eq!(
            *seen,
            vec![
                (None, Some("1".into())),
                (Some("1".into()), Some("2".into())),
                (Some("2".into()), None),
            ]
        );
        assert!(informer.store.is_empty());
    }

    #[test]
    fn store_lists_by_namespace() {
        let store = Store::<Pod>::default();
        store.insert(Arc::new(pod("a", "p1", "1")));
        store.insert(Arc::new(pod("a", "p2", "1")));
        store.insert(Arc::new(pod("b", "p1", "1")));
        assert_eq!(store.list_namespace("a").len(), 2);
        assert_eq!(store.list().len(), 3);
        assert!(store.get(&ObjectKey::new("b", "p1")).is_some());
        assert!(store.get(&ObjectKey::new("b", "p2")).is_none());
        store.remove(&ObjectKey::new("b", "p1"));
        assert!(store.list_namespace("b").is_empty());
    }
}
