//! Which volume a claim gets (upstream's index.go findBestMatchForClaim and
//! component-helpers' FindMatchingVolume).
//!
//! Volumes are grouped by their set of access modes; groups offering every
//! mode the claim asks for are tried from the fewest modes up, and within a
//! group the smallest volume that fits wins. A volume pre-bound to the claim
//! (claimRef naming it) wins over everything, if it fits.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use super::helpers::{
    access_modes_fit, attributes_class_mismatch, claim_access_modes, claim_class, claim_key,
    is_volume_bound_to_claim, node_affinity_allows, requested_storage, volume_access_modes,
    volume_capacity, volume_class, volume_mode_mismatch, volume_phase,
};
use crate::controllers::podutil::selector_matches;
use crate::controllers::replicaset::selector::{SelectorProblem, check};

/// The canonical order of access modes (upstream's GetAccessModesAsString).
const MODE_ORDER: [&str; 4] = [
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

fn mode_set(modes: &[String]) -> BTreeSet<usize> {
    modes
        .iter()
        .filter_map(|m| MODE_ORDER.iter().position(|o| o == m))
        .collect()
}

/// The best volume for an unbound claim among `volumes`, or `None`. With
/// `delay_binding` and no node, only volumes pre-bound to the claim qualify
/// (the scheduler picks the others). `node_labels` is the node a volume's
/// node affinity must allow, when known; upstream's binder never knows it.
pub fn find_best_match_for_claim<'a>(
    claim: &PersistentVolumeClaim,
    volumes: impl IntoIterator<Item = &'a Arc<PersistentVolume>>,
    delay_binding: bool,
    node_labels: Option<&BTreeMap<String, String>>,
) -> Result<Option<Arc<PersistentVolume>>, String> {
    let wanted = mode_set(claim_access_modes(claim));
    let mut groups: BTreeMap<BTreeSet<usize>, Vec<&Arc<PersistentVolume>>> = BTreeMap::new();
    for volume in volumes {
        groups
            .entry(mode_set(volume_access_modes(volume)))
            .or_default()
            .push(volume);
    }
    let mut candidates: Vec<_> = groups
        .into_iter()
        .filter(|(modes, _)| wanted.is_subset(modes))
        .collect();
    // Stable: equally wide groups keep the order of their mode sets.
    candidates.sort_by_key(|(modes, _)| modes.len());
    for (_, group) in candidates {
        if let Some(found) =
            find_matching_volume(claim, group.into_iter(), delay_binding, node_labels)?
        {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Upstream's FindMatchingVolume over one group of volumes.
pub fn find_matching_volume<'a>(
    claim: &PersistentVolumeClaim,
    volumes: impl Iterator<Item = &'a Arc<PersistentVolume>>,
    delay_binding: bool,
    node_labels: Option<&BTreeMap<String, String>>,
) -> Result<Option<Arc<PersistentVolume>>, String> {
    let Some(requested) = requested_storage(claim) else {
        return Err(format!(
            "claim {} has an invalid storage request",
            claim_key(claim)
        ));
    };
    let selector = claim.spec.as_ref().and_then(|s| s.selector.as_ref());
    if let Some(selector) = selector
        && let Err(SelectorProblem::Invalid(problem)) = check(selector)
    {
        return Err(format!(
            "error creating internal label selector for claim: {}: {problem}",
            claim_key(claim)
        ));
    }
    let wanted_class = claim_class(claim);
    let mut smallest: Option<(&Arc<PersistentVolume>, i64)> = None;
    for volume in volumes {
        let claim_ref = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        if claim_ref.is_some() && !is_volume_bound_to_claim(volume, claim) {
            continue;
        }
        // An unparsable capacity never fits.
        let Some(capacity) = volume_capacity(volume) else {
            continue;
        };
        if capacity < requested
            || volume_mode_mismatch(claim, volume)
            || attributes_class_mismatch(claim, volume)
            || volume.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let affinity_ok = node_labels.is_none_or(|labels| node_affinity_allows(volume, labels));
        if is_volume_bound_to_claim(volume, claim) {
            // Pre-bound: this one or none.
            return Ok(affinity_ok.then(|| volume.clone()));
        }
        if node_labels.is_none() && delay_binding {
            continue;
        }
        if volume_phase(volume) != "Available" {
            continue;
        }
        if let Some(selector) = selector {
            let empty = BTreeMap::new();
            if !selector_matches(selector, volume.metadata.labels.as_ref().unwrap_or(&empty)) {
                continue;
            }
        }
        if volume_class(volume) != wanted_class || !affinity_ok {
            continue;
        }
        if node_labels.is_some() && !access_modes_fit(claim, volume) {
            continue;
        }
        if smallest.is_none_or(|(_, size)| capacity < size) {
            smallest = Some((volume, capacity));
        }
    }
    Ok(smallest.map(|(v, _)| v.clone()))
}
