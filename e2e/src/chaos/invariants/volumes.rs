//! Volume binding: no volume given to two claims, and a Bound claim and its
//! Bound volume naming each other.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt;

use super::{Invariant, Violation, object_name};

fn phase_of_claim(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim.status.as_ref()?.phase.as_deref()
}

fn phase_of_volume(volume: &PersistentVolume) -> Option<&str> {
    volume.status.as_ref()?.phase.as_deref()
}

/// At most one claim names each volume; a Bound claim's volume exists and
/// points back at it (name and UID); a Bound volume's claim exists and
/// names it.
pub fn volumes_bound_to_one_claim_that_agrees(
    volumes: &[PersistentVolume],
    claims: &[PersistentVolumeClaim],
) -> Vec<Violation> {
    let mut found = vec![];
    let mut by_volume: BTreeMap<&str, Vec<&PersistentVolumeClaim>> = BTreeMap::new();
    for claim in claims {
        if let Some(volume) = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref())
            && !volume.is_empty()
        {
            by_volume.entry(volume).or_default().push(claim);
        }
    }
    for (volume, holders) in &by_volume {
        if holders.len() > 1 {
            let mut objects = vec![format!("PersistentVolume/{volume}")];
            objects.extend(holders.iter().map(|c| object_name(*c)));
            found.push(Violation::new(
                Invariant::VolumeBinding,
                objects,
                format!("{} claims name one volume", holders.len()),
            ));
        }
    }
    let volumes_by_name: BTreeMap<String, &PersistentVolume> =
        volumes.iter().map(|v| (v.name_any(), v)).collect();
    for claim in claims.iter().filter(|c| phase_of_claim(c) == Some("Bound")) {
        let Some(name) = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()) else {
            continue;
        };
        let points_back = volumes_by_name.get(name).and_then(|v| {
            let r = v.spec.as_ref()?.claim_ref.as_ref()?;
            Some(
                r.namespace == claim.namespace()
                    && r.name.as_deref() == Some(claim.name_any().as_str())
                    && (r.uid.is_none() || r.uid == claim.uid()),
            )
        });
        if points_back != Some(true) {
            found.push(Violation::new(
                Invariant::VolumeBinding,
                vec![object_name(claim), format!("PersistentVolume/{name}")],
                "Bound claim's volume does not name the claim",
            ));
        }
    }
    let claims_by_name: BTreeMap<(String, String), &PersistentVolumeClaim> = claims
        .iter()
        .map(|c| ((c.namespace().unwrap_or_default(), c.name_any()), c))
        .collect();
    for volume in volumes
        .iter()
        .filter(|v| phase_of_volume(v) == Some("Bound"))
    {
        let Some(r) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
            continue;
        };
        let key = (
            r.namespace.clone().unwrap_or_default(),
            r.name.clone().unwrap_or_default(),
        );
        let agrees = claims_by_name.get(&key).is_some_and(|c| {
            (r.uid.is_none() || r.uid == c.uid())
                && c.spec.as_ref().and_then(|s| s.volume_name.as_deref())
                    == Some(volume.name_any().as_str())
        });
        if !agrees {
            found.push(Violation::new(
                Invariant::VolumeBinding,
                vec![
                    object_name(volume),
                    format!("PersistentVolumeClaim/{}/{}", key.0, key.1),
                ],
                "Bound volume's claim is gone or names another volume",
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::from;
    use super::*;
    use serde_json::json;

    fn volume(name: &str, claim: Option<(&str, &str)>, phase: &str) -> PersistentVolume {
        let claim_ref = claim.map(|(n, uid)| json!({"namespace": "ns", "name": n, "uid": uid}));
        from(json!({
            "metadata": {"name": name},
            "spec": {"claimRef": claim_ref},
            "status": {"phase": phase},
        }))
    }

    fn claim(name: &str, uid: &str, volume: Option<&str>, phase: &str) -> PersistentVolumeClaim {
        from(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": uid},
            "spec": {"volumeName": volume},
            "status": {"phase": phase},
        }))
    }

    #[test]
    fn agreeing_pairs_and_pending_claims_pass() {
        let found = volumes_bound_to_one_claim_that_agrees(
            &[
                volume("pv-1", Some(("c1", "u1")), "Bound"),
                volume("pv-2", None, "Available"),
                // Half-way through a bind: the volume is claimed first.
                volume("pv-3", Some(("c3", "u3")), "Available"),
            ],
            &[
                claim("c1", "u1", Some("pv-1"), "Bound"),
                claim("c2", "u2", None, "Pending"),
                claim("c3", "u3", None, "Pending"),
            ],
        );
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_volume_named_by_two_claims_is_caught() {
        let found = volumes_bound_to_one_claim_that_agrees(
            &[volume("pv-1", Some(("c1", "u1")), "Bound")],
            &[
                claim("c1", "u1", Some("pv-1"), "Bound"),
                claim("c2", "u2", Some("pv-1"), "Pending"),
            ],
        );
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].objects,
            [
                "PersistentVolume/pv-1",
                "PersistentVolumeClaim/ns/c1",
                "PersistentVolumeClaim/ns/c2"
            ]
        );
    }

    #[test]
    fn a_bound_claim_whose_volume_points_elsewhere_is_caught() {
        let found = volumes_bound_to_one_claim_that_agrees(
            &[volume("pv-1", Some(("other", "u9")), "Available")],
            &[claim("c1", "u1", Some("pv-1"), "Bound")],
        );
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].objects,
            ["PersistentVolumeClaim/ns/c1", "PersistentVolume/pv-1"]
        );
    }

    #[test]
    fn a_bound_volume_whose_claim_is_gone_or_another_is_caught() {
        let gone = volumes_bound_to_one_claim_that_agrees(
            &[volume("pv-1", Some(("c1", "u1")), "Bound")],
            &[],
        );
        assert_eq!(gone.len(), 1);
        assert_eq!(
            gone[0].objects,
            ["PersistentVolume/pv-1", "PersistentVolumeClaim/ns/c1"]
        );
        // Recreated under the same name: another UID.
        let recreated = volumes_bound_to_one_claim_that_agrees(
            &[volume("pv-1", Some(("c1", "u1")), "Bound")],
            &[claim("c1", "u2", None, "Pending")],
        );
        assert_eq!(recreated.len(), 1);
    }
}
