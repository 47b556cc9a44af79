//! Folding of repeated Events into series, as client-go's events broadcaster
//! (`k8s.io/client-go/tools/events`, what kube-scheduler and
//! kube-controller-manager record with) does:
//!
//! - the first Event with a given (regarding, related, reason, action) is
//!   created as it is;
//! - the second becomes a series of 2, written at once as a patch of the
//!   first Event;
//! - later ones are only counted, and the count is written every 30 minutes
//!   and once more when the series ends (6 minutes without another);
//! - an Event that did not repeat is forgotten 6 minutes after it was made;
//! - the key is client-go's `getKey`: type, action, reason and the whole
//!   regarding and related references — so an object's new resourceVersion
//!   starts a new Event rather than folding into the stale one;
//! - when the regarding object is deleted its series end at once (their
//!   final count is patched into an Event that still exists, never created
//!   again) and nothing more is written about it: client-go would keep
//!   writing until the series ran out, and after a namespace is deleted and
//!   re-created with the same name that recreates Events about the old
//!   objects in the new namespace.
//!
//! Only what a later write needs is kept per Event (not the whole object):
//! a scheduler records an Event for every pod it binds, and kube-runtime's
//! recorder, which kept each one whole and scanned all of them on every
//! publish, held 35 MB and quadratic CPU after 11000 pods.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::EventType;

/// A series (or a single Event) ends this long after it was last observed
/// (client-go's finishTime).
pub const FINISH_AFTER: SignedDuration = SignedDuration::from_mins(6);
/// Ongoing series have their count written this often (client-go's
/// refreshTime).
pub const REFRESH_EVERY: SignedDuration = SignedDuration::from_mins(30);

/// What makes two Events the same for folding (client-go's eventKey; the
/// reporting controller and instance are fixed per recorder, and the note
/// is not part of it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub type_: EventType,
    pub action: String,
    pub reason: String,
    pub regarding: ReferenceKey,
    pub related: Option<ReferenceKey>,
}

/// Every field of an ObjectReference, hashable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReferenceKey([Option<String>; 7]);

impl ReferenceKey {
    fn name(&self) -> Option<&str> {
        self.0[3].as_deref()
    }

    pub fn uid(&self) -> Option<&str> {
        self.0[4].as_deref().filter(|u| !u.is_empty())
    }
}

impl From<&ObjectReference> for ReferenceKey {
    fn from(r: &ObjectReference) -> Self {
        Self([
            r.api_version.clone(),
            r.kind.clone(),
            r.namespace.clone(),
            r.name.clone(),
            r.uid.clone(),
            r.resource_version.clone(),
            r.field_path.clone(),
        ])
    }
}

impl From<&ReferenceKey> for ObjectReference {
    fn from(k: &ReferenceKey) -> Self {
        let [
            api_version,
            kind,
            namespace,
            name,
            uid,
            resource_version,
            field_path,
        ] = k.0.clone();
        Self {
            api_version,
            kind,
            namespace,
            name,
            uid,
            resource_version,
            field_path,
        }
    }
}

/// One Event to record: what the caller said.
#[derive(Clone, Debug)]
pub struct Occurrence {
    pub key: SeriesKey,
    pub note: Option<String>,
}

/// The recorded Event, compactly: enough to patch it or to make it again.
#[derive(Clone)]
struct Recorded {
    name: String,
    note: Option<String>,
    event_time: Timestamp,
    /// 1 until it repeats; then the series count.
    count: i32,
    last_observed: Timestamp,
}

/// The Events of one recorder that may still repeat.
pub struct SeriesCache {
    reporting_controller: String,
    reporting_instance: String,
    /// By the regarding object's UID ("" for references without one), so
    /// that an object's deletion finds its series without a scan.
    recorded: HashMap<String, HashMap<SeriesKey, Recorded>>,
    /// UIDs of deleted objects → when the deletion was learnt. Events about
    /// them that arrive later (recorded before the deletion was known, or a
    /// write waiting to be retried) are dropped; kept for [`FINISH_AFTER`],
    /// longer than any retry waits.
    deleted: HashMap<String, Timestamp>,
    /// When a quiet series ends: [`FINISH_AFTER`] but in tests.
    finish_after: SignedDuration,
}

impl SeriesCache {
    pub fn new(reporting_controller: String, reporting_instance: String) -> Self {
        Self {
            reporting_controller,
            reporting_instance,
            recorded: HashMap::new(),
            deleted: HashMap::new(),
            finish_after: FINISH_AFTER,
        }
    }

    /// Ends quiet series after `finish_after` instead of [`FINISH_AFTER`].
    pub fn with_finish_after(mut self, finish_after: SignedDuration) -> Self {
        self.finish_after = finish_after;
        self
    }

    /// Whether the object with this UID is known to be deleted.
    pub fn is_deleted(&self, uid: Option<&str>) -> bool {
        uid.is_some_and(|uid| self.deleted.contains_key(uid))
    }

    /// The object with `uid` was deleted: its series end and nothing more is
    /// written about it. Returns the final counts of its ongoing series, to
    /// be patched into their Events if those still exist (never created).
    pub fn object_deleted(&mut self, uid: &str, now: Timestamp) -> Vec<K8sEvent> {
        if uid.is_empty() {
            return vec![];
        }
        self.deleted.insert(uid.to_string(), now);
        let Some(series) = self.recorded.remove(uid) else {
            return vec![];
        };
        series
            .iter()
            .filter(|(_, r)| r.count > 1)
            .map(|(key, r)| self.event(key, r))
            .collect()
    }

    /// Takes one occurrence at `now`; returns the Event to write, if any: a
    /// new Event (no series) to create, or a series of 2 to patch. Nothing
    /// is written about a deleted object.
    pub fn observe(&mut self, occurrence: Occurrence, now: Timestamp) -> Option<K8sEvent> {
        let uid = occurrence.key.regarding.uid();
        if self.is_deleted(uid) {
            return None;
        }
        let bucket = uid.unwrap_or_default().to_string();
        if let Some(recorded) = self
            .recorded
            .get_mut(&bucket)
            .and_then(|series| series.get_mut(&occurrence.key))
        {
            recorded.count += 1;
            recorded.last_observed = now;
            if recorded.count > 2 {
                return None;
            }
            let recorded = &self.recorded[&bucket][&occurrence.key];
            return Some(self.event(&occurrence.key, recorded));
        }
        // client-go's name: the regarding object's, then the time in hex.
        let name = format!(
            "{}.{:x}",
            occurrence
                .key
                .regarding
                .name()
                .unwrap_or(&self.reporting_controller),
            now.as_nanosecond()
        );
        let recorded = Recorded {
            name,
            note: occurrence.note,
            event_time: now,
            count: 1,
            last_observed: now,
        };
        let event = self.event(&occurrence.key, &recorded);
        self.recorded
            .entry(bucket)
            .or_default()
            .insert(occurrence.key, recorded);
        Some(event)
    }

    /// Ends the series (and single Events) not observed for
    /// [`FINISH_AFTER`]; returns the final counts of the ended series to write.
    /// Deletions are remembered for [`FINISH_AFTER`] whatever the series'
    /// own end, to outlast retries.
    pub fn finish(&mut self, now: Timestamp) -> Vec<K8sEvent> {
        self.deleted.retain(|_, at| *at + FINISH_AFTER > now);
        let mut finals = vec![];
        for series in self.recorded.values_mut() {
            series.retain(|key, recorded| {
                if recorded.last_observed + self.finish_after > now {
                    return true;
                }
                if recorded.count > 1 {
                    finals.push((key.clone(), recorded.clone()));
                }
                false
            });
        }
        self.recorded.retain(|_, series| !series.is_empty());
        finals
            .iter()
            .map(|(key, recorded)| self.event(key, recorded))
            .collect()
    }

    /// The current count of every ongoing series, to write.
    pub fn refresh(&self) -> Vec<K8sEvent> {
        self.recorded
            .values()
            .flatten()
            .filter(|(_, r)| r.count > 1)
            .map(|(key, r)| self.event(key, r))
            .collect()
    }

    fn event(&self, key: &SeriesKey, recorded: &Recorded) -> K8sEvent {
        let regarding = ObjectReference::from(&key.regarding);
        // client-go writes an Event about a cluster-scoped object into
        // "default".
        let namespace = regarding
            .namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "default".into());
        K8sEvent {
            metadata: ObjectMeta {
                name: Some(recorded.name.clone()),
                namespace: Some(namespace),
                ..Default::default()
            },
            action: Some(key.action.clone()),
            reason: Some(key.reason.clone()),
            note: recorded.note.clone(),
            type_: Some(key.type_.as_str().into()),
            event_time: Some(MicroTime(recorded.event_time)),
            series: (recorded.count > 1).then_some(EventSeries {
                count: recorded.count,
                last_observed_time: MicroTime(recorded.last_observed),
            }),
            reporting_controller: Some(self.reporting_controller.clone()),
            reporting_instance: Some(self.reporting_instance.clone()),
            regarding: Some(regarding),
            related: key.related.as_ref().map(ObjectReference::from),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, resource_version: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some("ns".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            resource_version: Some(resource_version.into()),
            ..Default::default()
        }
    }

    fn about(regarding: &ObjectReference, reason: &str, note: &str) -> Occurrence {
        Occurrence {
            key: SeriesKey {
                type_: EventType::Warning,
                action: "Scheduling".into(),
                reason: reason.into(),
                regarding: ReferenceKey::from(regarding),
                related: None,
            },
            note: Some(note.into()),
        }
    }

    fn occurrence(name: &str, reason: &str, note: &str) -> Occurrence {
        about(&pod(name, "1"), reason, note)
    }

    fn cache() -> SeriesCache {
        SeriesCache::new(
            "understudy-scheduler".into(),
            "understudy-scheduler-host".into(),
        )
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn the_first_event_is_created_whole() {
        let mut c = cache();
        let e = c
            .observe(occurrence("p", "FailedScheduling", "0/3 nodes"), at(0))
            .expect("written");
        assert!(e.series.is_none());
        assert_eq!(
            e.metadata.name.as_deref(),
            Some(format!("p.{:x}", at(0).as_nanosecond()).as_str())
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("FailedScheduling"));
        assert_eq!(e.action.as_deref(), Some("Scheduling"));
        assert_eq!(e.note.as_deref(), Some("0/3 nodes"));
        assert_eq!(
            e.reporting_controller.as_deref(),
            Some("understudy-scheduler")
        );
        assert_eq!(
            e.reporting_instance.as_deref(),
            Some("understudy-scheduler-host")
        );
        assert_eq!(e.event_time, Some(MicroTime(at(0))));
        let regarding = e.regarding.unwrap();
        assert_eq!(regarding.uid.as_deref(), Some("uid-p"));
        assert_eq!(regarding.kind.as_deref(), Some("Pod"));
    }

    #[test]
    fn a_repeat_becomes_a_series_of_two_then_is_only_counted() {
        let mut c = cache();
        let first = c
            .observe(occurrence("p", "FailedScheduling", "a"), at(0))
            .unwrap();
        let second = c
            .observe(occurrence("p", "FailedScheduling", "b"), at(5))
            .expect("series of 2 written at once");
        assert_eq!(
            second.metadata.name, first.metadata.name,
            "patches the first Event"
        );
        let series = second.series.unwrap();
        assert_eq!(series.count, 2);
        assert_eq!(series.last_observed_time, MicroTime(at(5)));
        assert_eq!(
            second.note.as_deref(),
            Some("a"),
            "the note is the first one's"
        );
        assert!(
            c.observe(occurrence("p", "FailedScheduling", "c"), at(6))
                .is_none()
        );
        let refreshed = c.refresh();
        assert_eq!(refreshed.len(), 1);
        assert_eq!(refreshed[0].series.as_ref().unwrap().count, 3);
    }

    #[test]
    fn other_reasons_and_objects_are_other_events() {
        let mut c = cache();
        c.observe(occurrence("p", "FailedScheduling", "a"), at(0))
            .unwrap();
        let other_reason = c.observe(occurrence("p", "Scheduled", "a"), at(1)).unwrap();
        let other_pod = c
            .observe(occurrence("q", "FailedScheduling", "a"), at(2))
            .unwrap();
        assert!(other_reason.series.is_none() && other_pod.series.is_none());
        assert!(c.refresh().is_empty(), "no series yet");
    }

    #[test]
    fn finishing_forgets_quiet_events_and_writes_ended_series_once() {
        let mut c = cache();
        c.observe(occurrence("single", "Scheduled", "a"), at(0))
            .unwrap();
        c.observe(occurrence("series", "FailedScheduling", "a"), at(0))
            .unwrap();
        c.observe(occurrence("series", "FailedScheduling", "a"), at(10))
            .unwrap();
        c.observe(occurrence("series", "FailedScheduling", "a"), at(20));
        c.observe(occurrence("recent", "Scheduled", "a"), at(300))
            .unwrap();

        assert!(
            c.finish(at(359)).is_empty(),
            "nothing quiet for 6 minutes yet"
        );
        let finals = c.finish(at(380));
        assert_eq!(
            finals.len(),
            1,
            "the single Event is dropped without a write"
        );
        let series = finals[0].series.as_ref().unwrap();
        assert_eq!(
            (series.count, &series.last_observed_time),
            (3, &MicroTime(at(20)))
        );
        assert_eq!(
            c.recorded.values().flatten().count(),
            1,
            "only the recent Event is left"
        );
        let again = c
            .observe(occurrence("series", "FailedScheduling", "a"), at(400))
            .unwrap();
        assert!(again.series.is_none(), "an ended series starts over");
    }

    #[test]
    fn the_regarding_reference_is_kept_whole() {
        let mut c = cache();
        let e = c.observe(occurrence("p", "Scheduled", "a"), at(0)).unwrap();
        assert_eq!(e.regarding, Some(pod("p", "1")));
    }

    /// client-go keys by the whole reference: after the pod changed (its
    /// resourceVersion moved on, e.g. by our own PodScheduled patch), the
    /// next failure is a new Event with its own note, not a count on the
    /// first one that keeps the old note.
    #[test]
    fn a_new_resource_version_starts_a_new_event() {
        let mut c = cache();
        let first = c
            .observe(
                about(&pod("p", "1"), "FailedScheduling", "0/5 nodes"),
                at(0),
            )
            .unwrap();
        let second = c
            .observe(
                about(&pod("p", "2"), "FailedScheduling", "0/6 nodes"),
                at(5),
            )
            .expect("written");
        assert!(second.series.is_none(), "a new Event, not a series");
        assert_ne!(second.metadata.name, first.metadata.name);
        assert_eq!(second.note.as_deref(), Some("0/6 nodes"));
        assert_eq!(
            second.regarding.unwrap().resource_version.as_deref(),
            Some("2")
        );
        // The same version again folds into the newer Event only.
        let third = c
            .observe(
                about(&pod("p", "2"), "FailedScheduling", "0/6 nodes"),
                at(6),
            )
            .unwrap();
        assert_eq!(third.metadata.name, second.metadata.name);
        assert_eq!(third.series.unwrap().count, 2);
    }

    #[test]
    fn type_and_related_object_are_part_of_the_key() {
        let mut c = cache();
        let victim = pod("victim", "7");
        let mut preempted = about(&victim, "Preempted", "by a");
        preempted.key.related = Some(ReferenceKey::from(&pod("a", "3")));
        let first = c.observe(preempted.clone(), at(0)).unwrap();
        assert_eq!(first.related, Some(pod("a", "3")));
        preempted.key.related = Some(ReferenceKey::from(&pod("b", "4")));
        let by_other = c.observe(preempted.clone(), at(1)).unwrap();
        assert!(
            by_other.series.is_none(),
            "another preemptor, another Event"
        );
        preempted.key.type_ = EventType::Normal;
        let other_type = c.observe(preempted, at(2)).unwrap();
        assert!(other_type.series.is_none(), "another type, another Event");
        assert_eq!(other_type.type_.as_deref(), Some("Normal"));
    }

    #[test]
    fn an_event_about_a_cluster_scoped_object_goes_to_default() {
        let mut c = cache();
        let node = ObjectReference {
            kind: Some("Node".into()),
            name: Some("n1".into()),
            uid: Some("uid-n1".into()),
            ..Default::default()
        };
        let e = c.observe(about(&node, "Reboot", "x"), at(0)).unwrap();
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(e.regarding.unwrap().namespace, None);
    }

    #[test]
    fn a_deleted_objects_series_end_and_nothing_more_is_written() {
        let mut c = cache();
        let gone = pod("gone", "1");
        c.observe(about(&gone, "FailedScheduling", "a"), at(0))
            .unwrap();
        c.observe(about(&gone, "FailedScheduling", "a"), at(1))
            .unwrap();
        c.observe(about(&gone, "FailedScheduling", "a"), at(2));
        c.observe(about(&pod("gone", "2"), "Scheduled", "b"), at(3))
            .unwrap();
        c.observe(occurrence("kept", "FailedScheduling", "a"), at(3))
            .unwrap();
        c.observe(occurrence("kept", "FailedScheduling", "a"), at(4))
            .unwrap();

        let finals = c.object_deleted("uid-gone", at(10));
        assert_eq!(finals.len(), 1, "the one series gets its final count");
        assert_eq!(finals[0].series.as_ref().unwrap().count, 3);
        assert!(c.is_deleted(Some("uid-gone")));
        assert!(
            c.observe(about(&gone, "FailedScheduling", "a"), at(11))
                .is_none(),
            "no Event about a deleted object"
        );
        let refreshed = c.refresh();
        assert_eq!(refreshed.len(), 1, "only the other pod's series remains");
        assert_eq!(
            refreshed[0].regarding.as_ref().unwrap().name.as_deref(),
            Some("kept")
        );
        // Nothing is left to end later, for either of the deleted pod's Events.
        assert!(
            c.finish(at(365))
                .iter()
                .all(|e| e.regarding.as_ref().unwrap().name.as_deref() == Some("kept"))
        );
        // The deletion is remembered only as long as a late write may come.
        assert!(c.is_deleted(Some("uid-gone")));
        c.finish(at(10) + FINISH_AFTER);
        assert!(!c.is_deleted(Some("uid-gone")));
        assert!(c.object_deleted("", at(500)).is_empty());
        assert!(!c.is_deleted(Some("")));
    }

    #[test]
    fn a_shorter_finish_ends_quiet_series_sooner() {
        let mut c = cache().with_finish_after(SignedDuration::from_secs(20));
        c.observe(occurrence("p", "FailedScheduling", "a"), at(0))
            .unwrap();
        c.observe(occurrence("p", "FailedScheduling", "a"), at(1))
            .unwrap();
        assert!(c.finish(at(20)).is_empty());
        assert_eq!(c.finish(at(21)).len(), 1);
    }
}
