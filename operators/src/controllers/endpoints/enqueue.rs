//! Which Services a pod change concerns (upstream's GetPodUpdateProjectionKey
//! and GetServicesToUpdate), decided without the API so it can run in the
//! informer's handler.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Service};

use crate::controllers::podutil;
use crate::key::ObjectKey;

/// How a pod update may move Endpoints.
#[derive(Debug, PartialEq, Eq)]
pub struct PodChange {
    /// Its address may have appeared, moved or changed readiness.
    pub endpoints: bool,
    /// Its labels changed, so the Services selecting it may have.
    pub labels: bool,
}

fn labels(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata.labels.clone().unwrap_or_default()
}

fn ips(pod: &Pod) -> Vec<&str> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .collect()
}

fn spec_field<'a>(
    pod: &'a Pod,
    f: impl Fn(&'a k8s_openapi::api::core::v1::PodSpec) -> Option<&'a String>,
) -> &'a str {
    pod.spec.as_ref().and_then(f).map_or("", String::as_str)
}

/// Upstream's podEndpointsChanged, plus the node (upstream leans on it being
/// set before the pod has an IP) and hostname/subdomain counted as address
/// changes (they are immutable in practice; upstream files them under
/// labels).
pub fn pod_change(old: &Pod, new: &Pod) -> PodChange {
    let labels_changed = labels(old) != labels(new);
    // Upstream compares the deletionTimestamp pointers, which differ for
    // any two decoded objects: once a pod is terminating every update of it
    // counts.
    let endpoints = old.metadata.deletion_timestamp.is_some()
        || new.metadata.deletion_timestamp.is_some()
        || podutil::is_ready(old) != podutil::is_ready(new)
        || ips(old) != ips(new)
        || spec_field(old, |s| s.node_name.as_ref()) != spec_field(new, |s| s.node_name.as_ref())
        || spec_field(old, |s| s.hostname.as_ref()) != spec_field(new, |s| s.hostname.as_ref())
        || spec_field(old, |s| s.subdomain.as_ref()) != spec_field(new, |s| s.subdomain.as_ref());
    PodChange {
        endpoints,
        labels: labels_changed,
    }
}

/// Services in the pod's namespace whose selector matches `labels`.
/// Services without a selector (or an empty one) match nothing.
fn matching(services: &[Arc<Service>], labels: &BTreeMap<String, String>) -> BTreeSet<ObjectKey> {
    services
        .iter()
        .filter(|s| {
            s.spec
                .as_ref()
                .and_then(|spec| spec.selector.as_ref())
                .is_some_and(|sel| podutil::map_selector_matches(sel, labels))
        })
        .map(|s| ObjectKey::of(s.as_ref()))
        .collect()
}

/// The Services to sync for a pod event: `(None, Some)` added, `(Some,
/// Some)` updated, `(Some, None)` deleted. `services` are those in the
/// pod's namespace.
pub fn services_to_sync(
    old: Option<&Pod>,
    new: Option<&Pod>,
    services: &[Arc<Service>],
) -> BTreeSet<ObjectKey> {
    match (old, new) {
        (None, None) => BTreeSet::new(),
        (None, Some(pod)) | (Some(pod), None) => matching(services, &labels(pod)),
        (Some(old), Some(new)) => {
            // A relist replays unchanged objects; the Service informer
            // covers anything they could have missed.
            if old.metadata.resource_version == new.metadata.resource_version {
                return BTreeSet::new();
            }
            let change = pod_change(old, new);
            let now = matching(services, &labels(new));
            if !change.labels {
                return if change.endpoints {
                    now
                } else {
                    BTreeSet::new()
                };
            }
            let before = matching(services, &labels(old));
            if change.endpoints {
                now.union(&before).cloned().collect()
            } else {
                // Only the selection moved: Services that selected the pod
                // both before and after see no difference.
                now.symmetric_difference(&before).cloned().collect()
            }
        }
    }
}
