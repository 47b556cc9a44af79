//! Which Services a watched change concerns (upstream's event handlers and
//! pod projection keys), as functions of the change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::plan::{MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL};
use super::tracker::{SliceTracker, service_of};
use crate::controllers::podutil;
use crate::key::ObjectKey;

/// Services in the pod's namespace whose selector selects `labels`.
fn selecting(services: &[Arc<Service>], labels: &BTreeMap<String, String>) -> BTreeSet<ObjectKey> {
    services
        .iter()
        .filter(|s| {
            let selector = s.spec.as_ref().and_then(|spec| spec.selector.as_ref());
            selector.is_some_and(|sel| podutil::map_selector_matches(sel, labels))
        })
        .map(|s| ObjectKey::of(s.as_ref()))
        .collect()
}

fn labels(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata.labels.clone().unwrap_or_default()
}

fn pod_ips(pod: &Pod) -> Vec<&str> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().map(|ip| ip.ip.as_str()).collect())
        .unwrap_or_default()
}

/// Whether the change may alter the pod's endpoints, and whether it may
/// alter which Services select it (labels, or hostname/subdomain).
fn pod_endpoints_changed(old: &Pod, new: &Pod) -> (bool, bool) {
    let host = |p: &Pod| {
        let spec = p.spec.as_ref();
        (
            spec.and_then(|s| s.hostname.clone()).unwrap_or_default(),
            spec.and_then(|s| s.subdomain.clone()).unwrap_or_default(),
        )
    };
    let labels_changed = labels(old) != labels(new) || host(old) != host(new);
    // Any deletion timestamp counts as a change, as upstream compares the
    // pointers of two decoded objects.
    let pod_changed = old.metadata.deletion_timestamp.is_some()
        || new.metadata.deletion_timestamp.is_some()
        || podutil::is_ready(old) != podutil::is_ready(new)
        || pod_ips(old) != pod_ips(new);
    (pod_changed, labels_changed)
}

/// The Services to sync after a pod was added, changed or deleted.
/// `services` are those of the pod's namespace.
pub fn services_for_pod_change(
    old: Option<&Pod>,
    new: Option<&Pod>,
    services: &[Arc<Service>],
) -> BTreeSet<ObjectKey> {
    match (old, new) {
        (None, None) => BTreeSet::new(),
        (None, Some(pod)) | (Some(pod), None) => selecting(services, &labels(pod)),
        (Some(old), Some(new)) => {
            if old.metadata.resource_version.is_some()
                && old.metadata.resource_version == new.metadata.resource_version
            {
                return BTreeSet::new();
            }
            let (pod_changed, labels_changed) = pod_endpoints_changed(old, new);
            let now = selecting(services, &labels(new));
            if !labels_changed {
                return if pod_changed { now } else { BTreeSet::new() };
            }
            let before = selecting(services, &labels(old));
            if pod_changed {
                now.union(&before).cloned().collect()
            } else {
                // Only membership changed: the Services it joined or left.
                now.symmetric_difference(&before).cloned().collect()
            }
        }
    }
}

pub fn managed_by_us(slice: &EndpointSlice) -> bool {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|m| m == MANAGED_BY)
}

fn service_label(slice: &EndpointSlice) -> Option<&String> {
    slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)
}

/// The Services to sync after a slice change, updating the tracker for
/// deletions and relabellings. Our own writes coming back are not news.
pub fn services_for_slice_change(
    old: Option<&EndpointSlice>,
    new: Option<&EndpointSlice>,
    tracker: &SliceTracker,
) -> Vec<ObjectKey> {
    match (old, new) {
        (None, Some(new)) => {
            if managed_by_us(new) && tracker.should_sync(new) {
                return service_of(new).into_iter().collect();
            }
            Vec::new()
        }
        (Some(old), Some(new)) => {
            if service_label(old) != service_label(new) {
                tracing::info!(
                    slice = ?new.metadata.name,
                    old_service = ?service_label(old),
                    new_service = ?service_label(new),
                    "label {SERVICE_NAME_LABEL} changed"
                );
                tracker.forget(old);
                return service_of(new).into_iter().chain(service_of(old)).collect();
            }
            if managed_by_us(old) != managed_by_us(new) {
                if managed_by_us(old) {
                    tracker.forget(old);
                }
                return service_of(new).into_iter().collect();
            }
            if managed_by_us(new) && tracker.should_sync(new) {
                return service_of(new).into_iter().collect();
            }
            Vec::new()
        }
        (Some(old), None) => {
            if !managed_by_us(old) {
                return Vec::new();
            }
            // Upstream repairs deletions only of slices it wrote since it
            // started; we repair any unexpected deletion of a slice we manage
            // (a sync of a Service that is gone does nothing).
            let tracked = tracker.has(old);
            if tracked && tracker.handle_deletion(old) {
                return Vec::new();
            }
            service_of(old).into_iter().collect()
        }
        (None, None) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::endpointslice::fixtures::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn keys(names: &[&str]) -> BTreeSet<ObjectKey> {
        names.iter().map(|n| ObjectKey::new("ns", *n)).collect()
    }

    fn services() -> Vec<Arc<Service>> {
        vec![
            Arc::new(service("web", &[("app", "web")])),
            Arc::new(service("canary", &[("app", "web"), ("track", "canary")])),
            Arc::new(service("db", &[("app", "db")])),
            Arc::new(service_without_selector("external")),
        ]
    }

    fn labelled(p: Pod, labels: &[(&str, &str)], rv: &str) -> Pod {
        let mut p = p;
        p.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p.metadata.resource_version = Some(rv.into());
        p
    }

    #[test]
    fn pod_changes_map_to_selecting_services() {
        let web = labelled(pod("p", "10.0.0.1"), &[("app", "web")], "1");
        let web2 = |p: Pod| labelled(p, &[("app", "web")], "2");
        let canary = labelled(
            pod("p", "10.0.0.1"),
            &[("app", "web"), ("track", "canary")],
            "2",
        );
        let db = labelled(pod("p", "10.0.0.1"), &[("app", "db")], "2");
        type Case = (&'static str, Option<Pod>, Option<Pod>, BTreeSet<ObjectKey>);
        let cases: Vec<Case> = vec![
            ("add", None, Some(web.clone()), keys(&["web"])),
            (
                "delete",
                Some(canary.clone()),
                None,
                keys(&["web", "canary"]),
            ),
            ("resync", Some(web.clone()), Some(web.clone()), keys(&[])),
            (
                "irrelevant change",
                Some(web.clone()),
                Some(web2(pod("p", "10.0.0.1"))),
                keys(&[]),
            ),
            (
                "readiness",
                Some(web.clone()),
                Some(web2(not_ready(pod("p", "10.0.0.1")))),
                keys(&["web"]),
            ),
            (
                "ip",
                Some(web.clone()),
                Some(web2(pod("p", "10.0.0.9"))),
                keys(&["web"]),
            ),
            (
                "terminating",
                Some(web.clone()),
                Some(web2(terminating(pod("p", "10.0.0.1")))),
                keys(&["web"]),
            ),
            (
                "joins canary only",
                Some(web.clone()),
                Some(canary.clone()),
                keys(&["canary"]),
            ),
            (
                "moves to db",
                Some(web.clone()),
                Some(db.clone()),
                keys(&["web", "db"]),
            ),
            (
                "relabel and not ready",
                Some(web.clone()),
                Some(labelled(
                    not_ready(pod("p", "10.0.0.1")),
                    &[("app", "web"), ("track", "canary")],
                    "2",
                )),
                keys(&["web", "canary"]),
            ),
        ];
        let svcs = services();
        for (name, old, new, want) in cases {
            let got = services_for_pod_change(old.as_ref(), new.as_ref(), &svcs);
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn terminating_pods_count_as_changed_on_every_update() {
        let mut old = labelled(pod("p", "10.0.0.1"), &[("app", "web")], "1");
        old.metadata.deletion_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
        let mut new = old.clone();
        new.metadata.resource_version = Some("2".into());
        assert_eq!(
            services_for_pod_change(Some(&old), Some(&new), &services()),
            keys(&["web"])
        );
    }

    fn ours(name: &str, uid: &str, generation: i64) -> EndpointSlice {
        let mut s = slice_with(name, "web", &[]);
        s.metadata.uid = Some(uid.into());
        s.metadata.generation = Some(generation);
        s
    }

    fn with_label(mut s: EndpointSlice, key: &str, value: &str) -> EndpointSlice {
        s.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(key.into(), value.into());
        s
    }

    #[test]
    fn slice_changes_sync_only_on_news() {
        let t = SliceTracker::default();
        let mine = ours("web-1", "u1", 1);
        t.update(&mine);
        let web = vec![ObjectKey::new("ns", "web")];
        let none: Vec<ObjectKey> = vec![];
        let foreign = with_label(ours("web-x", "u9", 1), MANAGED_BY_LABEL, "someone-else");

        assert_eq!(
            services_for_slice_change(None, Some(&mine), &t),
            none,
            "our create"
        );
        assert_eq!(
            services_for_slice_change(None, Some(&ours("web-2", "u2", 1)), &t),
            web,
            "unknown slice"
        );
        assert_eq!(
            services_for_slice_change(None, Some(&foreign), &t),
            none,
            "not ours"
        );
        assert_eq!(
            services_for_slice_change(Some(&mine), Some(&mine), &t),
            none,
            "our update"
        );
        assert_eq!(
            services_for_slice_change(Some(&mine), Some(&ours("web-1", "u1", 2)), &t),
            web,
            "edited by someone else"
        );
        assert_eq!(
            services_for_slice_change(Some(&foreign), Some(&ours("web-x", "u9", 1)), &t),
            web,
            "handed to us"
        );
        let moved = with_label(mine.clone(), SERVICE_NAME_LABEL, "db");
        assert_eq!(
            services_for_slice_change(Some(&mine), Some(&moved), &t),
            vec![ObjectKey::new("ns", "db"), ObjectKey::new("ns", "web")],
            "relabelled"
        );
        assert!(!t.has(&mine), "a relabelled slice is no longer tracked");
    }

    #[test]
    fn slice_deletions_we_made_are_quiet_others_resync() {
        let t = SliceTracker::default();
        let a = ours("web-1", "u1", 1);
        let b = ours("web-2", "u2", 1);
        t.update(&a);
        t.expect_deletion(&a);
        t.update(&b);
        let web = vec![ObjectKey::new("ns", "web")];
        assert!(services_for_slice_change(Some(&a), None, &t).is_empty());
        assert_eq!(services_for_slice_change(Some(&b), None, &t), web);
        assert_eq!(
            services_for_slice_change(Some(&ours("web-3", "u3", 1)), None, &t),
            web,
            "an untracked slice of ours"
        );
        let foreign = with_label(ours("web-x", "u9", 1), MANAGED_BY_LABEL, "someone-else");
        assert!(services_for_slice_change(Some(&foreign), None, &t).is_empty());
    }
}
