//! The controller's own view of volumes and claims (upstream's
//! `ctrl.volumes` / `ctrl.claims`): fed by the informers *and* by the
//! objects our writes return, keeping whichever is newer. A claim synced
//! right after a bind therefore sees the volume as taken even before the
//! watch delivers it, so one process never hands a volume out twice; across
//! processes the resourceVersion on every write does that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Resource;

pub struct VersionedCache<K> {
    objects: Mutex<HashMap<String, Arc<K>>>,
}

impl<K> Default for VersionedCache<K> {
    fn default() -> Self {
        Self {
            objects: Mutex::new(HashMap::new()),
        }
    }
}

fn version<K: Resource>(obj: &K) -> Option<u64> {
    obj.meta().resource_version.as_deref()?.parse().ok()
}

impl<K: Resource> VersionedCache<K> {
    /// Stores `obj` unless the cache holds a newer version; returns whether
    /// it was stored (upstream's storeObjectUpdate). Versions that are not
    /// numbers are always taken.
    pub fn store(&self, key: String, obj: Arc<K>) -> bool {
        self.store_then(key, obj, |_, _| {})
    }

    /// As [`Self::store`], calling `stored` with the key and the object,
    /// under the cache's lock, when it was stored: an index kept beside the
    /// cache then follows the order of its stores.
    pub fn store_then(&self, key: String, obj: Arc<K>, stored: impl FnOnce(&str, &Arc<K>)) -> bool {
        let mut objects = self.objects.lock().expect("cache lock");
        if let Some(old) = objects.get(&key)
            && let (Some(old), Some(new)) = (version(old.as_ref()), version(obj.as_ref()))
            && old > new
        {
            return false;
        }
        stored(&key, &obj);
        objects.insert(key, obj);
        true
    }

    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.objects.lock().expect("cache lock").get(key).cloned()
    }

    pub fn remove(&self, key: &str) -> Option<Arc<K>> {
        self.remove_then(key, |_| {})
    }

    /// As [`Self::remove`], calling `removed` under the cache's lock.
    pub fn remove_then(&self, key: &str, removed: impl FnOnce(&str)) -> Option<Arc<K>> {
        let mut objects = self.objects.lock().expect("cache lock");
        removed(key);
        objects.remove(key)
    }

    /// Runs `read` over the cached objects under one lock: a claim's match
    /// looks up every volume, and copying the map for it cost more than the
    /// match itself.
    pub fn read<R>(&self, read: impl FnOnce(&HashMap<String, Arc<K>>) -> R) -> R {
        read(&self.objects.lock().expect("cache lock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PersistentVolume;

    fn pv(rv: &str) -> Arc<PersistentVolume> {
        let mut pv = PersistentVolume::default();
        pv.metadata.name = Some("pv".into());
        pv.metadata.resource_version = Some(rv.into());
        Arc::new(pv)
    }

    #[test]
    fn older_versions_never_replace_newer_ones() {
        let cache = VersionedCache::default();
        assert!(cache.store("pv".into(), pv("5")));
        // The informer lags behind our own write.
        assert!(!cache.store("pv".into(), pv("4")));
        assert_eq!(
            cache
                .get("pv")
                .unwrap()
                .metadata
                .resource_version
                .as_deref(),
            Some("5")
        );
        assert!(cache.store("pv".into(), pv("5")));
        assert!(cache.store("pv".into(), pv("12")));
        assert!(cache.remove("pv").is_some());
        assert!(cache.get("pv").is_none());
    }
}
