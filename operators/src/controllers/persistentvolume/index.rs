//! Which volume a claim gets (upstream's index.go findBestMatchForClaim and
//! component-helpers' FindMatchingVolume).
//!
//! Volumes are grouped by their set of access modes; groups offering every
//! mode the claim asks for are tried from the fewest modes up, and within a
//! group the smallest volume that fits wins. A volume pre-bound to the claim
//! (claimRef naming it) wins over everything, if it fits.

use std::collections::BTreeMap;
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

/// The modes as a bit set (bit i: `MODE_ORDER[i]`): built for every volume
/// of every match, so without allocating.
fn mode_set(modes: &[String]) -> u8 {
    modes
        .iter()
        .filter_map(|m| MODE_ORDER.iter().position(|o| o == m))
        .fold(0, |set, i| set | (1 << i))
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
    let mut groups: BTreeMap<u8, Vec<&Arc<PersistentVolume>>> = BTreeMap::new();
    for volume in volumes {
        let modes = mode_set(volume_access_modes(volume));
        if wanted & !modes == 0 {
            groups.entry(modes).or_default().push(volume);
        }
    }
    // Fewest modes first; equally wide groups in the order of their modes'
    // positions in MODE_ORDER (as sorted lists), whatever the bit values.
    let positions = |modes: u8| -> Vec<usize> {
        (0..MODE_ORDER.len())
            .filter(|i| modes & (1 << i) != 0)
            .collect()
    };
    let mut candidates: Vec<_> = groups.into_iter().map(|(m, g)| (positions(m), g)).collect();
    candidates.sort_by(|a, b| a.0.cmp(&b.0));
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
    let mut smallest: Option<(&Arc<PersistentVolume>, i128)> = None;
    for volume in volumes {
        let claim_ref = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        let prebound = is_volume_bound_to_claim(volume, claim);
        if claim_ref.is_some() && !prebound {
            continue;
        }
        // The cheap refusals of a volume not pre-bound come before parsing
        // its size: a claim's match walks every volume.
        if !prebound
            && ((node_labels.is_none() && delay_binding)
                || volume_phase(volume) != "Available"
                || volume_class(volume) != wanted_class)
        {
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
        if prebound {
            // Pre-bound: this one or none.
            return Ok(affinity_ok.then(|| volume.clone()));
        }
        if let Some(selector) = selector {
            let empty = BTreeMap::new();
            if !selector_matches(selector, volume.metadata.labels.as_ref().unwrap_or(&empty)) {
                continue;
            }
        }
        if !affinity_ok {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::persistentvolume::fixtures::{claim, volume, with};

    fn available(name: &str, size: &str) -> Arc<PersistentVolume> {
        Arc::new(volume(name, size, "", "", "Available", "Retain", "", &[]))
    }

    fn best(claim: &PersistentVolumeClaim, volumes: &[Arc<PersistentVolume>]) -> Option<String> {
        find_best_match_for_claim(claim, volumes, false, None)
            .unwrap()
            .map(|v| v.metadata.name.clone().unwrap())
    }

    fn modes(modes: &[&str]) -> Option<Vec<String>> {
        Some(modes.iter().map(|m| m.to_string()).collect())
    }

    #[test]
    fn the_smallest_volume_that_fits() {
        let volumes = [
            available("one", "1Gi"),
            available("ten", "10Gi"),
            available("five", "5Gi"),
        ];
        let c = claim("c", "u", "4Gi", "", "Pending", None, &[]);
        assert_eq!(best(&c, &volumes).as_deref(), Some("five"));
        let c = claim("c", "u", "5Gi", "", "Pending", None, &[]);
        assert_eq!(best(&c, &volumes).as_deref(), Some("five"));
        // Equal sizes in other units are equal.
        let c = claim("c", "u", "5368709120", "", "Pending", None, &[]);
        assert_eq!(best(&c, &volumes).as_deref(), Some("five"));
        let c = claim("c", "u", "11Gi", "", "Pending", None, &[]);
        assert_eq!(best(&c, &volumes), None);
    }

    #[test]
    fn sizes_past_eight_pebibytes_compare_exactly() {
        // Thousandths of these overflow an i64: NFS volumes often say 1Ei.
        let volumes = [available("huge", "1Ei"), available("bigger", "2Ei")];
        let c = claim("c", "u", "10Pi", "", "Pending", None, &[]);
        assert_eq!(best(&c, &volumes).as_deref(), Some("huge"));
        let c = claim("c", "u", "1025Pi", "", "Pending", None, &[]);
        assert_eq!(best(&c, &volumes).as_deref(), Some("bigger"));
    }

    #[test]
    fn class_must_match_exactly() {
        let gold = Arc::new(volume(
            "gold",
            "1Gi",
            "",
            "",
            "Available",
            "Retain",
            "gold",
            &[],
        ));
        let none = available("none", "10Gi");
        let volumes = [gold, none];
        let c = |class: Option<&str>| claim("c", "u", "1Gi", "", "Pending", class, &[]);
        assert_eq!(best(&c(Some("gold")), &volumes).as_deref(), Some("gold"));
        assert_eq!(best(&c(Some("")), &volumes).as_deref(), Some("none"));
        assert_eq!(best(&c(None), &volumes).as_deref(), Some("none"));
        assert_eq!(best(&c(Some("silver")), &volumes), None);
    }

    #[test]
    fn access_modes_fewest_first_then_smallest() {
        let rwo_big = Arc::new(with(
            volume("rwo-big", "10Gi", "", "", "Available", "Retain", "", &[]),
            |v| v.spec.as_mut().unwrap().access_modes = modes(&["ReadWriteOnce"]),
        ));
        let rwo_rwx_small = Arc::new(with(
            volume("rwx-small", "1Gi", "", "", "Available", "Retain", "", &[]),
            |v| v.spec.as_mut().unwrap().access_modes = modes(&["ReadWriteOnce", "ReadWriteMany"]),
        ));
        let volumes = [rwo_rwx_small, rwo_big];
        let c = |m: &[&str]| {
            with(claim("c", "u", "1Gi", "", "Pending", None, &[]), |c| {
                c.spec.as_mut().unwrap().access_modes = modes(m)
            })
        };
        // Upstream tries the volumes offering the fewest modes first.
        assert_eq!(
            best(&c(&["ReadWriteOnce"]), &volumes).as_deref(),
            Some("rwo-big")
        );
        assert_eq!(
            best(&c(&["ReadWriteMany"]), &volumes).as_deref(),
            Some("rwx-small")
        );
        assert_eq!(best(&c(&["ReadOnlyMany"]), &volumes), None);
    }

    #[test]
    fn volume_mode_must_match() {
        let block = Arc::new(with(
            volume("block", "1Gi", "", "", "Available", "Retain", "", &[]),
            |v| v.spec.as_mut().unwrap().volume_mode = Some("Block".into()),
        ));
        let fs = available("fs", "10Gi");
        let volumes = [block, fs];
        let c = |mode: Option<&str>| {
            with(claim("c", "u", "1Gi", "", "Pending", None, &[]), |c| {
                c.spec.as_mut().unwrap().volume_mode = mode.map(Into::into)
            })
        };
        assert_eq!(best(&c(Some("Block")), &volumes).as_deref(), Some("block"));
        assert_eq!(best(&c(None), &volumes).as_deref(), Some("fs"));
        assert_eq!(
            best(&c(Some("Filesystem")), &volumes).as_deref(),
            Some("fs")
        );
    }

    #[test]
    fn selector_must_select_the_volume() {
        let labelled = Arc::new(with(
            volume("labelled", "10Gi", "", "", "Available", "Retain", "", &[]),
            |v| v.metadata.labels = Some([("tier".to_string(), "fast".to_string())].into()),
        ));
        let plain = available("plain", "1Gi");
        let volumes = [labelled, plain];
        let c = |selector: serde_json::Value| {
            with(claim("c", "u", "1Gi", "", "Pending", None, &[]), |c| {
                c.spec.as_mut().unwrap().selector = Some(serde_json::from_value(selector).unwrap())
            })
        };
        assert_eq!(
            best(
                &c(serde_json::json!({"matchLabels": {"tier": "fast"}})),
                &volumes
            )
            .as_deref(),
            Some("labelled")
        );
        assert_eq!(
            best(
                &c(serde_json::json!({"matchLabels": {"tier": "slow"}})),
                &volumes
            ),
            None
        );
        assert_eq!(
            best(&c(serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]})), &volumes).as_deref(),
            Some("plain")
        );
        let invalid =
            c(serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "In"}]}));
        assert!(find_best_match_for_claim(&invalid, &volumes, false, None).is_err());
    }

    #[test]
    fn only_available_unclaimed_live_volumes_are_offered() {
        let released = Arc::new(volume(
            "released",
            "1Gi",
            "old",
            "old",
            "Released",
            "Retain",
            "",
            &[],
        ));
        let pending = Arc::new(volume(
            "pending",
            "1Gi",
            "",
            "",
            "Pending",
            "Retain",
            "",
            &[],
        ));
        let deleting = Arc::new(with(
            volume("deleting", "1Gi", "", "", "Available", "Retain", "", &[]),
            |v| {
                v.metadata.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        "2026-01-01T00:00:00Z".parse().unwrap(),
                    ))
            },
        ));
        let c = claim("c", "u", "1Gi", "", "Pending", None, &[]);
        assert_eq!(best(&c, &[released, pending, deleting]), None);
    }

    #[test]
    fn pre_bound_volumes_win_and_bind_only_their_claim() {
        let big_prebound = Arc::new(volume(
            "prebound",
            "10Gi",
            "",
            "c",
            "Available",
            "Retain",
            "",
            &[],
        ));
        let small = available("small", "1Gi");
        let volumes = [small, big_prebound.clone()];
        let c = claim("c", "u", "1Gi", "", "Pending", None, &[]);
        assert_eq!(best(&c, &volumes).as_deref(), Some("prebound"));
        let other = claim("other", "u2", "1Gi", "", "Pending", None, &[]);
        assert_eq!(best(&other, &volumes).as_deref(), Some("small"));
        // Pre-bound to an older claim of the same name (another UID): no.
        let bound_old = Arc::new(volume(
            "old-uid",
            "10Gi",
            "uid-old",
            "c",
            "Bound",
            "Retain",
            "",
            &[],
        ));
        assert_eq!(best(&c, &[bound_old]), None);
    }

    #[test]
    fn delay_binding_offers_only_pre_bound_volumes_without_a_node() {
        let free = available("free", "1Gi");
        let prebound = Arc::new(volume(
            "prebound",
            "1Gi",
            "u",
            "c",
            "Available",
            "Retain",
            "",
            &[],
        ));
        let c = claim("c", "u", "1Gi", "", "Pending", None, &[]);
        let found = |vols: &[Arc<PersistentVolume>]| {
            find_best_match_for_claim(&c, vols, true, None)
                .unwrap()
                .map(|v| v.metadata.name.clone().unwrap())
        };
        assert_eq!(found(std::slice::from_ref(&free)), None);
        assert_eq!(found(&[free, prebound]).as_deref(), Some("prebound"));
    }

    #[test]
    fn node_affinity_is_checked_when_a_node_is_given() {
        let on_node_1 = Arc::new(with(
            volume("local-1", "1Gi", "", "", "Available", "Retain", "", &[]),
            |v| {
                v.spec.as_mut().unwrap().node_affinity = Some(serde_json::from_value(serde_json::json!({
                "required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-1"]}]}]}
            })).unwrap())
            },
        ));
        let c = claim("c", "u", "1Gi", "", "Pending", None, &[]);
        let node = |name: &str| -> BTreeMap<String, String> {
            [("kubernetes.io/hostname".to_string(), name.to_string())].into()
        };
        let on = |labels: &BTreeMap<String, String>| {
            find_best_match_for_claim(&c, std::slice::from_ref(&on_node_1), true, Some(labels))
                .unwrap()
                .is_some()
        };
        assert!(on(&node("node-1")));
        assert!(!on(&node("node-2")));
    }
}
