//! List+watch of one kind with kube-runtime's watcher, as a stream of
//! applies and deletes. After every (re)list, objects that were known but
//! not listed again are reported deleted: their deletion happened while the
//! watch was down. What is remembered of an object is its identity and
//! labels only (a tombstone): a proxy watching 10000 Services and their
//! slices would otherwise hold a second, full copy of every object beside
//! the tracker's distilled view.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use futures::TryStreamExt;
use kube::api::ObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

pub enum Change<K> {
    Apply(K),
    /// The object as last seen; for one that went missing during a relist,
    /// its tombstone (name, namespace, UID and labels, nothing else).
    Delete(K),
    /// A (re)list is complete: the state is whole.
    Listed,
}

fn key<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// What a relist's delete needs of an object that went missing: enough to
/// find what the object fed into (by name, or by its Service's label). Its
/// own small type: an empty Service or EndpointSlice is over a kilobyte.
struct Tombstone {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    labels: Option<BTreeMap<String, String>>,
}

impl Tombstone {
    fn of<K: Resource>(obj: &K) -> Self {
        let meta = obj.meta();
        Tombstone {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            labels: meta.labels.clone(),
        }
    }

    fn object<K: Resource + Default>(self) -> K {
        let mut obj = K::default();
        *obj.meta_mut() = ObjectMeta {
            name: self.name,
            namespace: self.namespace,
            uid: self.uid,
            labels: self.labels,
            ..ObjectMeta::default()
        };
        obj
    }
}

/// Turns the watcher's events into changes, remembering each object's
/// tombstone so a relist can report what went missing.
pub struct Relist<K> {
    known: BTreeMap<String, Tombstone>,
    listing: Option<BTreeSet<String>>,
    kind: std::marker::PhantomData<K>,
}

impl<K: Resource + Default> Default for Relist<K> {
    fn default() -> Self {
        Relist {
            known: BTreeMap::new(),
            listing: None,
            kind: std::marker::PhantomData,
        }
    }
}

impl<K: Resource + Default> Relist<K> {
    pub fn changes(&mut self, event: Event<K>) -> Vec<Change<K>> {
        match event {
            Event::Init => {
                self.listing = Some(BTreeSet::new());
                Vec::new()
            }
            Event::InitApply(obj) | Event::Apply(obj) => {
                let k = key(&obj);
                if let Some(seen) = self.listing.as_mut() {
                    seen.insert(k.clone());
                }
                self.known.insert(k, Tombstone::of(&obj));
                vec![Change::Apply(obj)]
            }
            Event::Delete(obj) => {
                self.known.remove(&key(&obj));
                vec![Change::Delete(obj)]
            }
            Event::InitDone => {
                let seen = self.listing.take().unwrap_or_default();
                let gone: Vec<String> = (self.known.keys())
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                let mut changes: Vec<Change<K>> = gone
                    .iter()
                    .filter_map(|k| self.known.remove(k))
                    .map(|stone| Change::Delete(stone.object()))
                    .collect();
                changes.push(Change::Listed);
                changes
            }
        }
    }
}

/// Runs until the stream ends (it retries with backoff inside).
pub async fn watch_objects<K, F>(api: Api<K>, config: watcher::Config, mut handle: F)
where
    K: Resource + Clone + Default + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
    F: FnMut(Change<K>),
{
    let mut relist = Relist::default();
    let mut stream = Box::pin(watcher::watcher(api, config).default_backoff());
    loop {
        match stream.try_next().await {
            Ok(Some(event)) => relist.changes(event).into_iter().for_each(&mut handle),
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(kind = %K::kind(&Default::default()), error = %e, "watch error; retrying")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;

    fn svc(name: &str) -> Service {
        let mut s = Service::default();
        s.metadata.namespace = Some("ns".into());
        s.metadata.name = Some(name.into());
        s
    }

    fn names(changes: &[Change<Service>]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Apply(s) => format!("apply {}", s.name_any()),
                Change::Delete(s) => format!("delete {}", s.name_any()),
                Change::Listed => "listed".into(),
            })
            .collect()
    }

    #[test]
    fn a_relist_reports_what_went_missing_while_the_watch_was_down() {
        let mut r = Relist::default();
        let mut all = Vec::new();
        for event in [
            Event::Init,
            Event::InitApply(svc("a")),
            Event::InitApply(svc("b")),
            Event::InitDone,
            Event::Apply(svc("c")),
            // The watch broke; b was deleted meanwhile.
            Event::Init,
            Event::InitApply(svc("a")),
            Event::InitApply(svc("c")),
            Event::InitDone,
        ] {
            all.extend(r.changes(event));
        }
        assert_eq!(
            names(&all),
            [
                "apply a", "apply b", "listed", "apply c", "apply a", "apply c", "delete b",
                "listed"
            ]
        );
    }

    #[test]
    fn what_went_missing_is_reported_by_its_tombstone() {
        use k8s_openapi::api::discovery::v1::{
            Endpoint, EndpointConditions, EndpointPort, EndpointSlice,
        };
        let mut slice = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: Some(vec![Endpoint {
                addresses: vec!["10.0.0.1".into()],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        slice.metadata.namespace = Some("ns".into());
        slice.metadata.name = Some("web-abcde".into());
        slice.metadata.uid = Some("u1".into());
        slice.metadata.resource_version = Some("7".into());
        slice.metadata.labels = Some([("kubernetes.io/service-name".into(), "web".into())].into());
        slice.metadata.annotations = Some([("a".into(), "b".into())].into());

        let mut r = Relist::default();
        let mut all = Vec::new();
        for event in [
            Event::Init,
            Event::InitApply(slice.clone()),
            Event::InitDone,
            Event::Init,
            Event::InitDone,
        ] {
            all.extend(r.changes(event));
        }
        let Some(Change::Delete(stone)) = all.iter().find(|c| matches!(c, Change::Delete(_)))
        else {
            panic!("the slice that went missing is deleted");
        };
        assert_eq!(stone.metadata.name, slice.metadata.name);
        assert_eq!(stone.metadata.namespace, slice.metadata.namespace);
        assert_eq!(stone.metadata.uid, slice.metadata.uid);
        assert_eq!(stone.metadata.labels, slice.metadata.labels);
        assert_eq!(stone.metadata.annotations, None);
        assert_eq!(stone.endpoints, None, "only the identity is remembered");
        // Enough for the tracker to drop what the slice fed it.
        let mut tracker = crate::tracker::Tracker::new(crate::tracker::IpFamily::V4, "node");
        assert!(tracker.apply_endpoint_slice(&slice));
        assert!(tracker.delete_endpoint_slice(stone));
        assert!(
            !tracker.delete_endpoint_slice(stone),
            "gone after the first"
        );
    }
}
