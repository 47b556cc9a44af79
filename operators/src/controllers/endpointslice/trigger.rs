//! The `endpoints.kubernetes.io/last-change-trigger-time` annotation:
//! when the earliest change not yet reflected in the slices happened, so
//! end-to-end programming latency can be measured (upstream's
//! TriggerTimeTracker). A change is a pod's Ready transition or the
//! Service's creation; the first sync of a Service reports its creation.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::controllers::podutil;
use crate::key::ObjectKey;

pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

#[derive(Default)]
struct State {
    service: Option<Timestamp>,
    pods: HashMap<String, Timestamp>,
}

#[derive(Default)]
pub struct TriggerTimes {
    states: Mutex<HashMap<ObjectKey, State>>,
}

fn pod_trigger(pod: &Pod) -> Option<Timestamp> {
    podutil::ready_condition(pod)?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

fn service_trigger(service: &Service) -> Option<Timestamp> {
    service.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

impl TriggerTimes {
    /// The trigger time for this sync, and remembers what it has seen. Call
    /// on every sync, also those that write nothing, so later syncs only
    /// report newer changes.
    pub fn compute<'a>(
        &self,
        key: &ObjectKey,
        service: &Service,
        pods: impl IntoIterator<Item = &'a Pod>,
    ) -> Option<Timestamp> {
        let mut states = self.states.lock().expect("trigger times lock");
        let known = states.contains_key(key);
        let state = states.entry(key.clone()).or_default();
        let mut earliest: Option<Timestamp> = None;
        let mut seen = HashMap::new();
        for pod in pods {
            let Some(t) = pod_trigger(pod) else { continue };
            let name = pod.metadata.name.clone().unwrap_or_default();
            if state.pods.get(&name).is_none_or(|last| t > *last) {
                earliest = Some(earliest.map_or(t, |e| e.min(t)));
            }
            seen.insert(name, t);
        }
        let service_time = service_trigger(service);
        if let Some(t) = service_time
            && state.service.is_none_or(|last| t > last)
        {
            earliest = Some(earliest.map_or(t, |e| e.min(t)));
        }
        state.pods = seen;
        state.service = service_time;
        if known { earliest } else { service_time }
    }

    pub fn delete_service(&self, key: &ObjectKey) {
        self.states.lock().expect("trigger times lock").remove(key);
    }
}

/// Go's RFC3339Nano in UTC: fractional seconds only when present, without
/// trailing zeros.
pub fn format_trigger_time(t: Timestamp) -> String {
    t.to_string()
}

/// Sets the annotation on a slice being written, or removes it when there
/// is no new trigger.
pub fn annotate(slice: &mut EndpointSlice, trigger: Option<Timestamp>) {
    let annotations = slice
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    match trigger {
        Some(t) => {
            annotations.insert(TRIGGER_TIME_ANNOTATION.into(), format_trigger_time(t));
        }
        None => {
            annotations.remove(TRIGGER_TIME_ANNOTATION);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::endpointslice::fixtures::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn ready_at(name: &str, at: &str) -> Pod {
        let mut p = pod(name, "10.0.0.1");
        let conditions = p.status.as_mut().unwrap().conditions.as_mut().unwrap();
        conditions[0].last_transition_time = Some(Time(ts(at)));
        p
    }

    #[test]
    fn first_sync_reports_creation_then_only_newer_changes() {
        let t = TriggerTimes::default();
        let key = ObjectKey::new("ns", "svc");
        let mut svc = service("svc", &[("app", "a")]);
        svc.metadata.creation_timestamp = Some(Time(ts("2026-01-01T00:00:00Z")));
        let p1 = ready_at("p1", "2026-01-01T00:01:00Z");
        let p2 = ready_at("p2", "2026-01-01T00:02:00Z");

        assert_eq!(
            t.compute(&key, &svc, [&p1]),
            Some(ts("2026-01-01T00:00:00Z"))
        );
        assert_eq!(t.compute(&key, &svc, [&p1]), None, "nothing changed");
        assert_eq!(
            t.compute(&key, &svc, [&p1, &p2]),
            Some(ts("2026-01-01T00:02:00Z")),
            "a new pod"
        );
        let p1_later = ready_at("p1", "2026-01-01T00:05:00Z");
        let p2_later = ready_at("p2", "2026-01-01T00:04:00Z");
        assert_eq!(
            t.compute(&key, &svc, [&p1_later, &p2_later]),
            Some(ts("2026-01-01T00:04:00Z")),
            "the earliest of the changes"
        );
        t.delete_service(&key);
        assert_eq!(
            t.compute(&key, &svc, [&p1]),
            Some(ts("2026-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn annotation_is_formatted_as_go_and_cleared_without_trigger() {
        let mut s = slice_with("s", "svc", &[]);
        annotate(&mut s, Some(ts("2026-01-01T00:00:00Z")));
        let get = |s: &EndpointSlice| {
            s.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(TRIGGER_TIME_ANNOTATION).cloned())
        };
        assert_eq!(get(&s).as_deref(), Some("2026-01-01T00:00:00Z"));
        annotate(&mut s, Some(ts("2026-01-01T00:00:00.120Z")));
        assert_eq!(get(&s).as_deref(), Some("2026-01-01T00:00:00.12Z"));
        annotate(&mut s, None);
        assert_eq!(get(&s), None);
    }
}
