//! Controller expectations (upstream's ControllerExpectations with UID
//! tracking): after a controller creates or deletes pods it waits for the
//! watch to report them before it counts pods again, so a slow watch never
//! causes a second round of creations or deletions. Expectations expire
//! after five minutes so a lost event cannot wedge a controller.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::key::ObjectKey;

pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
struct Expected {
    adds: i64,
    /// Keys (namespace/name) of pods whose deletion is still to be observed.
    deletes: HashSet<String>,
    set_at: Instant,
}

#[derive(Default)]
pub struct Expectations {
    by_controller: Mutex<HashMap<ObjectKey, Expected>>,
}

impl Expectations {
    /// Whether the controller may count pods and act again.
    pub fn satisfied(&self, controller: &ObjectKey) -> bool {
        let map = self.by_controller.lock().expect("expectations lock");
        match map.get(controller) {
            None => true,
            Some(e) => {
                (e.adds <= 0 && e.deletes.is_empty()) || e.set_at.elapsed() > EXPECTATIONS_TIMEOUT
            }
        }
    }

    /// Records that `adds` creations are about to be made.
    pub fn expect_creations(&self, controller: &ObjectKey, adds: usize) {
        let mut map = self.by_controller.lock().expect("expectations lock");
        map.insert(
            controller.clone(),
            Expected {
                adds: adds as i64,
                deletes: HashSet::new(),
                set_at: Instant::now(),
            },
        );
    }

    /// Records the pods about to be deleted.
    pub fn expect_deletions(&self, controller: &ObjectKey, pods: impl IntoIterator<Item = String>) {
        let mut map = self.by_controller.lock().expect("expectations lock");
        map.insert(
            controller.clone(),
            Expected {
                adds: 0,
                deletes: pods.into_iter().collect(),
                set_at: Instant::now(),
            },
        );
    }

    /// A creation was seen by the watch, or a create call failed (so will never be).
    pub fn creation_observed(&self, controller: &ObjectKey) {
        let mut map = self.by_controller.lock().expect("expectations lock");
        if let Some(e) = map.get_mut(controller) {
            e.adds -= 1;
        }
    }

    /// A deletion of `pod` was seen, or its delete call failed.
    pub fn deletion_observed(&self, controller: &ObjectKey, pod: &str) {
        let mut map = self.by_controller.lock().expect("expectations lock");
        if let Some(e) = map.get_mut(controller) {
            e.deletes.remove(pod);
        }
    }

    /// Forgets a controller (it was deleted).
    pub fn delete(&self, controller: &ObjectKey) {
        self.by_controller
            .lock()
            .expect("expectations lock")
            .remove(controller);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creations_must_all_be_observed() {
        let e = Expectations::default();
        let rs = ObjectKey::new("ns", "rs");
        assert!(e.satisfied(&rs));
        e.expect_creations(&rs, 2);
        assert!(!e.satisfied(&rs));
        e.creation_observed(&rs);
        assert!(!e.satisfied(&rs));
        e.creation_observed(&rs);
        assert!(e.satisfied(&rs));
    }

    #[test]
    fn a_deletion_counts_once_per_pod() {
        let e = Expectations::default();
        let rs = ObjectKey::new("ns", "rs");
        e.expect_deletions(&rs, ["ns/a".to_string(), "ns/b".to_string()]);
        e.deletion_observed(&rs, "ns/a");
        e.deletion_observed(&rs, "ns/a");
        assert!(!e.satisfied(&rs));
        e.deletion_observed(&rs, "ns/b");
        assert!(e.satisfied(&rs));
    }
}
