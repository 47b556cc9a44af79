//! DynamicResources, until this scheduler allocates devices: a pod with
//! resource claims is refused before any node is tried (so it is never bound
//! to sit stuck), with upstream's PreFilter words where upstream would refuse
//! it too — a claim not generated yet, missing, being deleted, not the pod's
//! own, or reserved to its limit by others — and our own otherwise.
//!
//! What DRA support needs (docs/scheduler.md): watches of DeviceClasses and
//! ResourceSlices, the structured-parameters allocator (device selection by
//! CEL selectors, counters, admin access, prioritized lists), the claims'
//! in-memory assumptions across cycles, PreBind writing
//! `status.allocation`/`reservedFor`, Unreserve rolling them back, and the
//! extended-resource mapping of DeviceClasses.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::resource::v1::ResourceClaim;

use crate::framework::PodInfo;

/// Upstream's ResourceClaimReservedForMaxSize: a claim reserved for this
/// many consumers takes no more.
const RESERVED_FOR_MAX_SIZE: usize = 256;

/// Why `pod` cannot be scheduled by us, or `None` when it has no claims.
/// `claims` holds the cluster's ResourceClaims by `namespace/name`.
/// The plugin whose refusals these are.
pub const NAME: &str = "DynamicResources";

pub fn refusal(pod: &PodInfo, claims: &HashMap<String, Arc<ResourceClaim>>) -> Option<String> {
    let spec = pod.pod.spec.as_ref()?;
    let pod_claims = spec.resource_claims.as_deref().unwrap_or_default();
    if pod_claims.is_empty() {
        return None;
    }
    let statuses = pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.resource_claim_statuses.as_deref())
        .unwrap_or_default();
    let pod_key = format!("{}/{}", pod.namespace, pod.name);
    let mut any_claim = false;
    for pc in pod_claims {
        // resourceclaim.Name: the claim's own name, or the one generated
        // from the template as the pod's status records it.
        let (name, generated) = match (&pc.resource_claim_name, &pc.resource_claim_template_name) {
            (Some(name), _) => (name.clone(), false),
            (None, Some(_)) => match statuses.iter().find(|s| s.name == pc.name) {
                // Deliberately not generated: nothing to check.
                Some(status) => match &status.resource_claim_name {
                    Some(name) => (name.clone(), true),
                    None => continue,
                },
                None => return Some(format!("pod \"{pod_key}\": ResourceClaim not created yet")),
            },
            (None, None) => {
                return Some(format!(
                    "pod \"{pod_key}\", spec.resourceClaim {:?}: none of the supported fields are set",
                    pc.name
                ));
            }
        };
        any_claim = true;
        let Some(claim) = claims.get(&format!("{}/{name}", pod.namespace)) else {
            return Some(format!("resourceclaim.resource.k8s.io {name:?} not found"));
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Some(format!("resourceclaim {name:?} is being deleted"));
        }
        if generated && !owned_by_pod(claim, &pod.uid) {
            return Some(format!(
                "ResourceClaim {}/{name} was not created for Pod {pod_key} (Pod is not owner)",
                pod.namespace
            ));
        }
        let status = claim.status.as_ref();
        let reserved = status
            .and_then(|s| s.reserved_for.as_deref())
            .unwrap_or_default();
        let allocated = status.is_some_and(|s| s.allocation.is_some());
        if allocated
            && reserved.len() >= RESERVED_FOR_MAX_SIZE
            && !reserved.iter().any(|r| r.uid == pod.uid)
        {
            return Some("resourceclaim in use".into());
        }
    }
    any_claim.then(|| {
        "pod uses resource claims (dynamic resource allocation), which understudy-scheduler does not allocate yet".to_string()
    })
}

fn owned_by_pod(claim: &ResourceClaim, pod_uid: &str) -> bool {
    claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == pod_uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testing::pod;
    use serde_json::{Value, json};

    fn claim(name: &str, extra: Value) -> (String, Arc<ResourceClaim>) {
        let mut v = json!({"metadata": {"name": name, "namespace": "default"}, "spec": {}});
        for (k, val) in extra.as_object().unwrap() {
            if k == "metadata" {
                for (mk, mv) in val.as_object().unwrap() {
                    v["metadata"][mk] = mv.clone();
                }
            } else {
                v[k] = val.clone();
            }
        }
        (
            format!("default/{name}"),
            Arc::new(serde_json::from_value(v).unwrap()),
        )
    }

    fn with_claims(claims: Value, statuses: Value) -> Arc<PodInfo> {
        let mut p = pod(
            "p",
            &[],
            json!({"containers": [{"name": "c"}], "resourceClaims": claims}),
        );
        let mut raw = (*p.pod).clone();
        raw.status =
            Some(serde_json::from_value(json!({"resourceClaimStatuses": statuses})).unwrap());
        p = Arc::new(PodInfo::new(Arc::new(raw)));
        p
    }

    #[test]
    fn refusals_in_upstreams_words() {
        let p = with_claims(json!([]), json!([]));
        let uid = p.uid.clone();
        let ours = "pod uses resource claims (dynamic resource allocation), which understudy-scheduler does not allocate yet";
        type Case = (
            &'static str,
            Value,
            Value,
            Vec<(String, Arc<ResourceClaim>)>,
            Option<String>,
        );
        let cases: Vec<Case> = vec![
            ("no claims", json!([]), json!([]), vec![], None),
            (
                "template claim not generated yet",
                json!([{"name": "gpu", "resourceClaimTemplateName": "t"}]),
                json!([]),
                vec![],
                Some("pod \"default/p\": ResourceClaim not created yet".into()),
            ),
            (
                "template claim deliberately not generated",
                json!([{"name": "gpu", "resourceClaimTemplateName": "t"}]),
                json!([{"name": "gpu"}]),
                vec![],
                None,
            ),
            (
                "named claim missing",
                json!([{"name": "gpu", "resourceClaimName": "shared"}]),
                json!([]),
                vec![],
                Some("resourceclaim.resource.k8s.io \"shared\" not found".into()),
            ),
            (
                "claim being deleted",
                json!([{"name": "gpu", "resourceClaimName": "shared"}]),
                json!([]),
                vec![claim("shared", json!({"metadata": {"deletionTimestamp": "2026-12-06T00:00:00Z"}}))],
                Some("resourceclaim \"shared\" is being deleted".into()),
            ),
            (
                "generated claim of another pod",
                json!([{"name": "gpu", "resourceClaimTemplateName": "t"}]),
                json!([{"name": "gpu", "resourceClaimName": "p-gpu"}]),
                vec![claim("p-gpu", json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "other", "uid": "other-uid", "controller": true}]}}))],
                Some("ResourceClaim default/p-gpu was not created for Pod default/p (Pod is not owner)".into()),
            ),
            (
                "claim that exists: we do not allocate",
                json!([{"name": "gpu", "resourceClaimTemplateName": "t"}]),
                json!([{"name": "gpu", "resourceClaimName": "p-gpu"}]),
                vec![claim("p-gpu", json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": uid, "controller": true}]}}))],
                Some(ours.into()),
            ),
        ];
        for (name, pod_claims, statuses, objects, want) in cases {
            let p = with_claims(pod_claims, statuses);
            let objects: HashMap<String, Arc<ResourceClaim>> = objects.into_iter().collect();
            assert_eq!(refusal(&p, &objects), want, "{name}");
        }
    }
}
