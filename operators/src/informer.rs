//! Shared informers: one watch per kind feeding an in-memory store that every
//! controller reads, plus change handlers that turn changes into queue keys
//! (upstream's SharedInformerFactory + listers + ResourceEventHandlers).
//!
//! kube-runtime's reflector keeps a store but hands out no old/new pairs, and
//! controllers need both (e.g. a pod whose labels changed must wake the
//! ReplicaSets that selected it before and after), so the store and the
//! fan-out are ours. The watch itself is kube-runtime's watcher (JSON), or
//! for Pods [`crate::protobuf::pod_events`]; both yield the watcher's events.

use std::collections::{HashMap, HashSet};
use std::fmt::{Debug, Display};
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
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

/// Objects of one kind by namespace, then name, and indexed by controller
/// (upstream's PodControllerIndex): a ReplicaSet's sync reads its own and
/// orphaned pods, not every pod of its namespace.
pub struct Store<K> {
    objects: RwLock<Objects<K>>,
}

struct Objects<K> {
    by_namespace: HashMap<String, HashMap<String, Arc<K>>>,
    /// (namespace, controller UID or "" for none) → names.
    by_controller: HashMap<(String, String), HashSet<String>>,
}

/// The UID of an object's controller (the owner with `controller: true`).
fn controller_uid<K: Resource>(obj: &K) -> &str {
    crate::controllers::podutil::controller_of(obj.meta().owner_references.as_ref())
        .map_or("", |o| o.uid.as_str())
}

impl<K: Resource> Default for Store<K> {
    fn default() -> Self {
        Self {
            objects: RwLock::new(Objects {
                by_namespace: HashMap::new(),
                by_controller: HashMap::new(),
            }),
        }
    }
}

impl<K: Resource> Objects<K> {
    fn unindex(&mut self, namespace: &str, name: &str, old: &K) {
        let index = (namespace.to_string(), controller_uid(old).to_string());
        if let Some(names) = self.by_controller.get_mut(&index) {
            names.remove(name);
            if names.is_empty() {
                self.by_controller.remove(&index);
            }
        }
    }
}

impl<K: Resource> Store<K> {
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<K>> {
        let objects = self.objects.read().expect("store lock");
        objects
            .by_namespace
            .get(&key.namespace)?
            .get(&key.name)
            .cloned()
    }

    /// Everything in one namespace (`""` for cluster-scoped kinds).
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let objects = self.objects.read().expect("store lock");
        objects
            .by_namespace
            .get(namespace)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The objects of `namespace` whose controller has `uid`, or that have
    /// no controller when `uid` is `None`.
    pub fn controlled_by(&self, namespace: &str, uid: Option<&str>) -> Vec<Arc<K>> {
        let objects = self.objects.read().expect("store lock");
        let index = (namespace.to_string(), uid.unwrap_or("").to_string());
        let (Some(names), Some(in_namespace)) = (
            objects.by_controller.get(&index),
            objects.by_namespace.get(namespace),
        ) else {
            return Vec::new();
        };
        names
            .iter()
            .filter_map(|name| in_namespace.get(name).cloned())
            .collect()
    }

    /// What an owner with `uid` may claim: the objects it controls and the
    /// orphans (upstream's FilterPodsByOwner with orphans included).
    pub fn claimable_by(&self, namespace: &str, uid: &str) -> Vec<Arc<K>> {
        let mut found = self.controlled_by(namespace, Some(uid));
        found.extend(self.controlled_by(namespace, None));
        found
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        let objects = self.objects.read().expect("store lock");
        objects
            .by_namespace
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    pub fn len(&self) -> usize {
        let objects = self.objects.read().expect("store lock");
        objects.by_namespace.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts an object in, returning the one it replaced.
    pub fn insert(&self, obj: Arc<K>) -> Option<Arc<K>> {
        let key = ObjectKey::of(obj.as_ref());
        let controller = controller_uid(obj.as_ref()).to_string();
        let mut objects = self.objects.write().expect("store lock");
        let old = objects
            .by_namespace
            .entry(key.namespace.clone())
            .or_default()
            .insert(key.name.clone(), obj);
        if let Some(old) = &old {
            objects.unindex(&key.namespace, &key.name, old);
        }
        objects
            .by_controller
            .entry((key.namespace, controller))
            .or_default()
            .insert(key.name);
        old
    }

    pub fn remove(&self, key: &ObjectKey) -> Option<Arc<K>> {
        let mut objects = self.objects.write().expect("store lock");
        let names = objects.by_namespace.get_mut(&key.namespace)?;
        let old = names.remove(&key.name);
        if names.is_empty() {
            objects.by_namespace.remove(&key.namespace);
        }
        if let Some(old) = &old {
            objects.unindex(&key.namespace, &key.name, old);
        }
        old
    }

    fn keys(&self) -> Vec<ObjectKey> {
        let objects = self.objects.read().expect("store lock");
        objects
            .by_namespace
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

    /// Applies watch events until `shutdown` or the end of `events`. The
    /// source re-lists and retries by itself, backing off as the stream's
    /// consumer waits (`default_backoff`). After every (re)list, objects the
    /// list no longer holds are deleted, so a deletion missed while
    /// disconnected still reaches the handlers.
    pub async fn run<S, E>(self: Arc<Self>, events: S, shutdown: CancellationToken)
    where
        S: Stream<Item = Result<Event<K>, E>> + Send,
        E: Display,
    {
        let mut events = std::pin::pin!(events);
        let mut listing: Option<HashSet<ObjectKey>> = None;
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = events.next() => next,
            };
            match next {
                Some(Ok(Event::Init)) => listing = Some(HashSet::new()),
                Some(Ok(Event::InitApply(obj))) => {
                    if let Some(seen) = listing.as_mut() {
                        seen.insert(ObjectKey::of(&obj));
                    }
                    self.apply(obj);
                }
                Some(Ok(Event::InitDone)) => {
                    if let Some(seen) = listing.take() {
                        for key in self.store.keys() {
                            if !seen.contains(&key) {
                                self.delete(&key);
                            }
                        }
                    }
                    let _ = self.synced_tx.send(true);
                }
                Some(Ok(Event::Apply(obj))) => self.apply(obj),
                Some(Ok(Event::Delete(obj))) => self.delete(&ObjectKey::of(&obj)),
                None => return,
                Some(Err(error)) => {
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
        self.get_with_source(trim, |client| {
            watcher::watcher(Api::<K>::all(client), watcher::Config::default())
        })
    }

    /// As [`Informers::get_with`], watching through `source` (given the
    /// client when the informers start) instead of kube-runtime's JSON
    /// watcher. `source` must re-list and retry by itself; its errors are
    /// spaced by kube-runtime's default backoff.
    pub fn get_with_source<K, S, E>(
        &self,
        trim: fn(&mut K),
        source: impl FnOnce(Client) -> S + Send + 'static,
    ) -> Arc<Informer<K>>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default,
        S: Stream<Item = Result<Event<K>, E>> + Send + 'static,
        E: Display + Send + 'static,
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
        let client = self.client.clone();
        let runner = informer.clone();
        self.started
            .lock()
            .expect("informers lock")
            .push(Box::new(move |shutdown| {
                let events = source(client).default_backoff();
                tokio::spawn(runner.run(events, shutdown));
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

    #[tokio::test]
    async fn run_applies_any_source_and_relists_drop_the_missing() {
        let informer = Informer::<Pod>::new(trim_managed_fields::<Pod>);
        let mut synced = informer.synced();
        let events: Vec<Result<Event<Pod>, String>> = vec![
            Ok(Event::Init),
            Ok(Event::InitApply(pod("a", "p1", "1"))),
            Ok(Event::InitApply(pod("a", "p2", "1"))),
            Ok(Event::InitDone),
            Err("watch failed".into()),
            Ok(Event::Apply(pod("a", "p3", "2"))),
            // A relist that no longer holds p1: it is deleted.
            Ok(Event::Init),
            Ok(Event::InitApply(pod("a", "p2", "3"))),
            Ok(Event::InitApply(pod("a", "p3", "3"))),
            Ok(Event::InitDone),
            Ok(Event::Delete(pod("a", "p3", "4"))),
        ];
        informer
            .clone()
            .run(futures::stream::iter(events), CancellationToken::new())
            .await;
        assert!(*synced.borrow_and_update());
        let names: Vec<_> = informer
            .store
            .list()
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["p2"]);
    }

    #[test]
    fn store_indexes_by_controller_through_changes() {
        let store = Store::<Pod>::default();
        let owned = |name: &str, owner: Option<&str>| {
            let mut p = pod("a", name, "1");
            p.metadata.owner_references = owner.map(|uid| {
                vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        uid: uid.into(),
                        controller: Some(true),
                        ..Default::default()
                    },
                ]
            });
            Arc::new(p)
        };
        let names = |v: Vec<Arc<Pod>>| {
            let mut n: Vec<String> = v.iter().map(|p| p.metadata.name.clone().unwrap()).collect();
            n.sort();
            n
        };
        store.insert(owned("p1", Some("rs1")));
        store.insert(owned("p2", Some("rs1")));
        store.insert(owned("p3", None));
        assert_eq!(names(store.controlled_by("a", Some("rs1"))), ["p1", "p2"]);
        assert_eq!(names(store.controlled_by("a", None)), ["p3"]);
        assert!(store.controlled_by("b", Some("rs1")).is_empty());
        // Released, adopted, deleted: the index follows.
        store.insert(owned("p1", None));
        store.insert(owned("p3", Some("rs2")));
        store.remove(&ObjectKey::new("a", "p2"));
        assert!(store.controlled_by("a", Some("rs1")).is_empty());
        assert_eq!(names(store.controlled_by("a", None)), ["p1"]);
        assert_eq!(names(store.controlled_by("a", Some("rs2"))), ["p3"]);
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
