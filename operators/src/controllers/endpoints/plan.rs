//! What one sync writes: the Endpoints object a Service should have, and
//! whether the stored one already is it (upstream's comparison), so a sync
//! with nothing new writes nothing.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Endpoints, Service};

use super::subsets::{self, Address, Subset};
use super::trigger;

/// Most addresses one Endpoints object holds; beyond that it is truncated.
pub const MAX_CAPACITY: usize = 1000;
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";
pub const TRUNCATED: &str = "truncated";
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
pub const MANAGED_BY_LABEL: &str = "endpoints.kubernetes.io/managed-by";
/// Upstream's ControllerName, the managed-by value (not the Event source).
pub const MANAGED_BY: &str = "endpoint-controller";

#[derive(Debug, PartialEq)]
pub enum Plan {
    /// The stored Endpoints are already right.
    Nothing,
    Create(Endpoints),
    /// Replace the stored Endpoints (carries their resourceVersion).
    Update(Endpoints),
}

/// A Service has a virtual IP unless it is headless (`None`) or has none yet.
fn has_cluster_ip(service: &Service) -> bool {
    let ip = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
    !matches!(ip, None | Some("") | Some("None"))
}

fn address_count(subsets: &[Subset]) -> usize {
    subsets.iter().map(Subset::len).sum()
}

/// The stored labels are the Service's plus our own two, nothing else.
pub fn labels_correct(
    endpoints: &BTreeMap<String, String>,
    service: &BTreeMap<String, String>,
) -> bool {
    if endpoints.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
        return false;
    }
    let mut own = 0;
    for (k, v) in endpoints {
        if k == HEADLESS_LABEL || k == MANAGED_BY_LABEL {
            own += 1;
        } else if service.get(k) != Some(v) {
            return false;
        }
    }
    service.len() == endpoints.len() - own
}

/// Over capacity always needs (re)truncating; under it, the annotation must
/// be gone.
pub fn capacity_annotation_correct(
    annotations: &BTreeMap<String, String>,
    stored: &[Subset],
) -> bool {
    address_count(stored) <= MAX_CAPACITY && !annotations.contains_key(OVER_CAPACITY_ANNOTATION)
}

/// Cuts the subsets down to [`MAX_CAPACITY`] addresses, keeping ready ones
/// first: if the ready ones fit, only not-ready ones are dropped; otherwise
/// all not-ready ones go and the ready ones are cut. Each subset keeps a
/// share proportional to its size (rounded up, so the last ones may get
/// less). Returns whether anything was cut.
pub fn truncate(subsets: &mut [Subset]) -> bool {
    let ready: usize = subsets.iter().map(|s| s.addresses.len()).sum();
    let not_ready: usize = subsets.iter().map(|s| s.not_ready_addresses.len()).sum();
    if ready + not_ready <= MAX_CAPACITY {
        return false;
    }
    let cut_ready = ready > MAX_CAPACITY;
    let (budget, total) = if cut_ready {
        (MAX_CAPACITY, ready)
    } else {
        (MAX_CAPACITY - ready, not_ready)
    };
    let mut left = budget;
    for subset in subsets.iter_mut() {
        let list: &mut Vec<Address> = if cut_ready {
            subset.not_ready_addresses.clear();
            &mut subset.addresses
        } else {
            &mut subset.not_ready_addresses
        };
        let share = ((list.len() as f64 / total as f64) * budget as f64).ceil() as usize;
        list.truncate(share.min(left));
        left -= list.len();
    }
    true
}

/// What to write for `service`, given the stored Endpoints (if any), the
/// freshly built (repacked) subsets and the trigger time to publish.
pub fn plan(
    service: &Service,
    stored: Option<&Endpoints>,
    subsets: Vec<Subset>,
    trigger_time: Option<Timestamp>,
) -> Plan {
    let service_labels = service.metadata.labels.clone().unwrap_or_default();
    let stored_subsets = stored
        .map(|e| subsets::from_api(e.subsets.as_ref()))
        .unwrap_or_default();
    let empty = BTreeMap::new();
    let stored_annotations = stored
        .and_then(|e| e.metadata.annotations.as_ref())
        .unwrap_or(&empty);

    if let Some(stored) = stored {
        // Objects another writer left in a different (valid) order count
        // as equal once repacked, as upstream retries its comparison.
        let same_subsets = subsets::equal_ignoring_resource_version(&stored_subsets, &subsets)
            || subsets::equal_ignoring_resource_version(
                &super::repack::repack(&stored_subsets),
                &subsets,
            );
        let labels_ok = labels_correct(
            stored.metadata.labels.as_ref().unwrap_or(&empty),
            &service_labels,
        );
        if same_subsets
            && labels_ok
            && capacity_annotation_correct(stored_annotations, &stored_subsets)
        {
            return Plan::Nothing;
        }
        // Upstream compares the untruncated subsets, so an over-capacity
        // Service would be rewritten on every sync; an object that already
        // holds exactly the truncation is left alone instead.
        if labels_ok
            && stored_annotations
                .get(OVER_CAPACITY_ANNOTATION)
                .map(String::as_str)
                == Some(TRUNCATED)
        {
            let mut cut = subsets.clone();
            if truncate(&mut cut) && subsets::equal_ignoring_resource_version(&stored_subsets, &cut)
            {
                return Plan::Nothing;
            }
        }
    }

    let mut endpoints = match stored {
        Some(stored) => stored.clone(),
        None => {
            let mut e = Endpoints::default();
            e.metadata.name = service.metadata.name.clone();
            e.metadata.namespace = service.metadata.namespace.clone();
            e
        }
    };
    let mut annotations = stored_annotations.clone();
    match trigger_time {
        Some(t) => {
            annotations.insert(TRIGGER_TIME_ANNOTATION.into(), trigger::format(t));
        }
        None => {
            annotations.remove(TRIGGER_TIME_ANNOTATION);
        }
    }
    let mut subsets = subsets;
    if truncate(&mut subsets) {
        annotations.insert(OVER_CAPACITY_ANNOTATION.into(), TRUNCATED.into());
    } else {
        annotations.remove(OVER_CAPACITY_ANNOTATION);
    }
    let mut labels = service_labels;
    if has_cluster_ip(service) {
        labels.remove(HEADLESS_LABEL);
    } else {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());

    endpoints.subsets = subsets::to_api(&subsets);
    endpoints.metadata.labels = Some(labels);
    endpoints.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    if stored.is_some() {
        Plan::Update(endpoints)
    } else {
        Plan::Create(endpoints)
    }
}
