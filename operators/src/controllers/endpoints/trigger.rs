//! The `endpoints.kubernetes.io/last-change-trigger-time` annotation, as
//! upstream's TriggerTimeTracker computes it: the earliest of the trigger
//! times that changed since the previous sync of the Service, where a pod's
//! trigger time is its Ready condition's lastTransitionTime and the
//! Service's is its creationTimestamp. The first sync of a Service after the
//! controller starts reports the Service's creation.
//!
//! Like upstream, this misses intermediate changes when an object changes
//! several times between two syncs; it is the same approximation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, Service};

use crate::controllers::podutil;
use crate::key::ObjectKey;

/// What the previous sync of a Service saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Seen {
    service: Option<Timestamp>,
    pods: BTreeMap<String, Timestamp>,
}

fn pod_trigger_time(pod: &Pod) -> Option<Timestamp> {
    podutil::ready_condition(pod)?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

fn service_trigger_time(service: &Service) -> Option<Timestamp> {
    service.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// The trigger time to publish (`None`: drop the annotation) and what this
/// sync saw, given what the previous sync saw (`None`: no previous sync).
pub fn trigger_time<'a>(
    previous: Option<&Seen>,
    service: &Service,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> (Option<Timestamp>, Seen) {
    let empty = Seen::default();
    let before = previous.unwrap_or(&empty);
    let mut earliest: Option<Timestamp> = None;
    let mut changed = |t: Timestamp| earliest = Some(earliest.map_or(t, |e| e.min(t)));
    let mut pods_seen = BTreeMap::new();
    for pod in pods {
        let Some(t) = pod_trigger_time(pod) else {
            continue;
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        if before.pods.get(&name).is_none_or(|last| t > *last) {
            changed(t);
        }
        pods_seen.insert(name, t);
    }
    let service_time = service_trigger_time(service);
    if let Some(t) = service_time
        && before.service.is_none_or(|last| t > last)
    {
        changed(t);
    }
    let seen = Seen {
        service: service_time,
        pods: pods_seen,
    };
    match previous {
        None => (service_time, seen),
        Some(_) => (earliest, seen),
    }
}

/// The per-Service memory of [`trigger_time`]. A Service is only ever
/// synced by one worker at a time, so a plain lock around the map suffices.
#[derive(Default)]
pub struct TriggerTimes {
    seen: Mutex<HashMap<ObjectKey, Seen>>,
}

impl TriggerTimes {
    pub fn compute<'a>(
        &self,
        key: &ObjectKey,
        service: &Service,
        pods: impl IntoIterator<Item = &'a Pod>,
    ) -> Option<Timestamp> {
        let previous = self.seen.lock().expect("trigger lock").get(key).cloned();
        let (time, seen) = trigger_time(previous.as_ref(), service, pods);
        self.seen
            .lock()
            .expect("trigger lock")
            .insert(key.clone(), seen);
        time
    }

    pub fn forget(&self, key: &ObjectKey) {
        self.seen.lock().expect("trigger lock").remove(key);
    }
}

/// Go's RFC3339Nano in UTC: fractional seconds only as far as needed.
pub fn format(t: Timestamp) -> String {
    t.to_string()
}
