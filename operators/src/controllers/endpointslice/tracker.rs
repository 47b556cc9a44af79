//! Which slice generations we wrote (upstream's EndpointSliceTracker).
//!
//! Our own writes come back through the watch; the generation we recorded
//! tells them apart from other writers' changes, so they cause no extra
//! sync, while a newer generation or an unexpected deletion (someone else
//! touched our slice) does. Before a sync, a tracked generation newer than
//! the cache's, or a tracked slice the cache lacks, means the informer has
//! not caught up with our last write: syncing then would act on stale state
//! (e.g. create a slice twice), so the sync is retried instead.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::plan::SERVICE_NAME_LABEL;
use crate::key::ObjectKey;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    Generation(i64),
    Deletion,
}

#[derive(Default)]
pub struct SliceTracker {
    /// Per Service, per slice UID.
    by_service: Mutex<HashMap<ObjectKey, HashMap<String, Expected>>>,
}

/// The Service a slice belongs to, by its label.
pub fn service_of(slice: &EndpointSlice) -> Option<ObjectKey> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    if name.is_empty() {
        return None;
    }
    Some(ObjectKey::new(
        slice.metadata.namespace.clone().unwrap_or_default(),
        name.clone(),
    ))
}

fn uid(slice: &EndpointSlice) -> String {
    slice.metadata.uid.clone().unwrap_or_default()
}

fn generation(slice: &EndpointSlice) -> i64 {
    slice.metadata.generation.unwrap_or(0)
}

impl SliceTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, HashMap<String, Expected>>> {
        self.by_service.lock().expect("slice tracker lock")
    }

    fn expected(&self, slice: &EndpointSlice) -> Option<Expected> {
        let service = service_of(slice)?;
        self.lock().get(&service)?.get(&uid(slice)).copied()
    }

    pub fn has(&self, slice: &EndpointSlice) -> bool {
        self.expected(slice).is_some()
    }

    /// Whether a seen slice is news to us: not ours by record, or changed
    /// by someone else since our write.
    pub fn should_sync(&self, slice: &EndpointSlice) -> bool {
        match self.expected(slice) {
            Some(Expected::Generation(g)) => generation(slice) > g,
            Some(Expected::Deletion) => true,
            None => true,
        }
    }

    /// Whether the cached slices lag behind what we wrote.
    pub fn stale<'a>(
        &self,
        service: &ObjectKey,
        cached: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> bool {
        let by_service = self.lock();
        let Some(tracked) = by_service.get(service) else {
            return false;
        };
        let mut seen = std::collections::HashSet::new();
        for slice in cached {
            let uid = uid(slice);
            match tracked.get(&uid) {
                Some(Expected::Deletion) => return true,
                Some(Expected::Generation(g)) if *g > generation(slice) => return true,
                _ => {}
            }
            seen.insert(uid);
        }
        tracked
            .iter()
            .any(|(uid, e)| matches!(e, Expected::Generation(_)) && !seen.contains(uid))
    }

    /// Records a slice as our write returned it.
    pub fn update(&self, slice: &EndpointSlice) {
        let Some(service) = service_of(slice) else {
            return;
        };
        self.lock()
            .entry(service)
            .or_default()
            .insert(uid(slice), Expected::Generation(generation(slice)));
    }

    pub fn expect_deletion(&self, slice: &EndpointSlice) {
        let Some(service) = service_of(slice) else {
            return;
        };
        self.lock()
            .entry(service)
            .or_default()
            .insert(uid(slice), Expected::Deletion);
    }

    /// Handles a slice's deletion; true if we expected it (our own delete).
    pub fn handle_deletion(&self, slice: &EndpointSlice) -> bool {
        let Some(service) = service_of(slice) else {
            return true;
        };
        let mut by_service = self.lock();
        let Some(tracked) = by_service.get_mut(&service) else {
            return true;
        };
        !matches!(tracked.remove(&uid(slice)), Some(Expected::Generation(_)))
    }

    /// Stops tracking a slice that left this Service or our management
    /// (relabelled), so its absence does not look like a stale cache.
    pub fn forget(&self, slice: &EndpointSlice) {
        let Some(service) = service_of(slice) else {
            return;
        };
        let mut by_service = self.lock();
        if let Some(tracked) = by_service.get_mut(&service) {
            tracked.remove(&uid(slice));
            if tracked.is_empty() {
                by_service.remove(&service);
            }
        }
    }

    pub fn delete_service(&self, service: &ObjectKey) {
        self.lock().remove(service);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::endpointslice::fixtures::slice_with;

    fn tracked(name: &str, uid: &str, generation: i64) -> EndpointSlice {
        let mut s = slice_with(name, "svc", &[]);
        s.metadata.uid = Some(uid.into());
        s.metadata.generation = Some(generation);
        s
    }

    fn svc() -> ObjectKey {
        ObjectKey::new("ns", "svc")
    }

    #[test]
    fn own_writes_are_not_news_but_newer_generations_are() {
        let t = SliceTracker::default();
        let s1 = tracked("a", "u1", 1);
        assert!(t.should_sync(&s1), "untracked slices are news");
        t.update(&s1);
        assert!(!t.should_sync(&s1));
        assert!(t.should_sync(&tracked("a", "u1", 2)));
        assert!(t.has(&s1));
    }

    #[test]
    fn stale_when_cache_lags_our_writes() {
        let t = SliceTracker::default();
        t.update(&tracked("a", "u1", 2));
        t.update(&tracked("b", "u2", 1));
        let cases = [
            (
                "caught up",
                vec![tracked("a", "u1", 2), tracked("b", "u2", 1)],
                false,
            ),
            (
                "newer in cache",
                vec![tracked("a", "u1", 3), tracked("b", "u2", 1)],
                false,
            ),
            (
                "older in cache",
                vec![tracked("a", "u1", 1), tracked("b", "u2", 1)],
                true,
            ),
            ("created slice missing", vec![tracked("a", "u1", 2)], true),
        ];
        for (name, cache, want) in cases {
            assert_eq!(t.stale(&svc(), &cache), want, "{name}");
        }
        assert!(!t.stale(&ObjectKey::new("ns", "other"), &[]));
    }

    #[test]
    fn deletions_we_made_are_expected_others_are_not() {
        let t = SliceTracker::default();
        let a = tracked("a", "u1", 1);
        let b = tracked("b", "u2", 1);
        t.update(&a);
        t.update(&b);
        t.expect_deletion(&a);
        assert!(
            t.stale(&svc(), &[a.clone(), b.clone()]),
            "deleted slice still cached"
        );
        assert!(!t.stale(&svc(), std::slice::from_ref(&b)));
        assert!(t.handle_deletion(&a));
        assert!(!t.handle_deletion(&b), "someone else deleted our slice");
        assert!(!t.has(&b));
        assert!(!t.stale(&svc(), &[]));
    }

    #[test]
    fn forgetting_and_service_deletion_drop_tracking() {
        let t = SliceTracker::default();
        let a = tracked("a", "u1", 1);
        t.update(&a);
        t.forget(&a);
        assert!(!t.stale(&svc(), &[]));
        t.update(&a);
        t.delete_service(&svc());
        assert!(!t.has(&a));
    }
}
