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

/// Turns the watcher's events into changes, remembering what it last saw
/// of each object so a relist can report what went missing.
pub struct Relist<K> {
    known: BTreeMap<String, K>,
    listing: Option<BTreeSet<String>>,
}

impl<K: Resource + Clone> Default for Relist<K> {
    fn default() -> Self {
        Relist {
            known: BTreeMap::new(),
            listing: None,
        }
    }
}

impl<K: Resource + Clone> Relist<K> {
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
                self.known.insert(k, obj.clone());
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
                    .map(Change::Delete)
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
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
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
}
