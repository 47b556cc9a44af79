//! What Reserve and PreBind plugins may reach beyond the cycle state
//! (upstream's framework.Handle): the API client and the scheduler cache,
//! whose storage objects carry the plugins' assumptions.

use std::sync::{Arc, Mutex};

use crate::cache::Cache;

#[derive(Clone)]
pub struct Handle {
    pub client: kube::Client,
    pub cache: Arc<Mutex<Cache>>,
}

impl Handle {
    pub fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().expect("cache lock")
    }
}
