//! List+watch of one kind with kube-runtime's watcher, as a stream of
//! applies and deletes. After every (re)list, objects that were known but
//! not listed again are reported deleted: their deletion happened while the
//! watch was down.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use futures::TryStreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

pub enum Change<K> {
    Apply(K),
    /// The object as last seen.
    Delete(K),
    /// A (re)list is complete: the state is whole.
    Listed,
}

fn key<K: Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Runs until the stream ends (it retries with backoff inside).
pub async fn watch_objects<K, F>(api: Api<K>, config: watcher::Config, mut handle: F)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
    F: FnMut(Change<K>),
{
    let mut known: BTreeMap<String, K> = BTreeMap::new();
    let mut listing: Option<BTreeSet<String>> = None;
    let mut stream = Box::pin(watcher::watcher(api, config).default_backoff());
    loop {
        match stream.try_next().await {
            Ok(Some(Event::Init)) => listing = Some(BTreeSet::new()),
            Ok(Some(Event::InitApply(obj) | Event::Apply(obj))) => {
                let k = key(&obj);
                if let Some(seen) = listing.as_mut() {
                    seen.insert(k.clone());
                }
                known.insert(k, obj.clone());
                handle(Change::Apply(obj));
            }
            Ok(Some(Event::Delete(obj))) => {
                known.remove(&key(&obj));
                handle(Change::Delete(obj));
            }
            Ok(Some(Event::InitDone)) => {
                let seen = listing.take().unwrap_or_default();
                let gone: Vec<String> = known
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for k in gone {
                    if let Some(obj) = known.remove(&k) {
                        handle(Change::Delete(obj));
                    }
                }
                handle(Change::Listed);
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(kind = %K::kind(&Default::default()), error = %e, "watch error; retrying")
            }
        }
    }
}
