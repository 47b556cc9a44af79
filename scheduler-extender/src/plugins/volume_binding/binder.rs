//! The binding half of upstream's volume binder (binder.go): assume the
//! chosen volumes and claims in the cache, write them to the API, and wait
//! until the PV controller has completed every binding.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, PostParams};

use super::{
    ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER, ANN_SELECTED_NODE, PodVolumes, claim_key,
    claim_of, claim_volume_name, has_annotation, is_volume_bound_to_claim, pod_volumes,
    volume_matches_node,
};
use crate::cache::Cache;
use crate::framework::{Handle, PodInfo};

/// How often the bindings are checked even without a watch event: a deleted
/// pod or node shows nowhere in the storage objects (upstream polls each
/// second).
const CHECK_PERIOD: Duration = Duration::from_secs(1);

fn is_claim_fully_bound(pvc: &PersistentVolumeClaim) -> bool {
    !claim_volume_name(pvc).is_empty() && has_annotation(&pvc.metadata, ANN_BIND_COMPLETED)
}

fn key_of(pvc: &PersistentVolumeClaim) -> String {
    claim_key(
        pvc.metadata.namespace.as_deref().unwrap_or_default(),
        pvc.metadata.name.as_deref().unwrap_or_default(),
    )
}

fn name_of(pv: &PersistentVolume) -> &str {
    pv.metadata.name.as_deref().unwrap_or_default()
}

/// Upstream's arePodVolumesBound, on the cache's (assumed) claims.
fn pod_volumes_bound(cache: &Cache, pod: &PodInfo) -> bool {
    pod_volumes(pod).iter().all(|v| {
        claim_of(pod, v).is_none_or(|c| {
            cache
                .claim(&claim_key(&pod.namespace, &c.name))
                .is_some_and(|pvc| is_claim_fully_bound(&pvc))
        })
    })
}

/// Upstream's GetBindVolumeToClaim: the volume with its claimRef pointing at
/// the claim (and bound-by-controller set when we made that choice), and
/// whether that changed anything.
pub(crate) fn bind_volume_to_claim(
    pv: &PersistentVolume,
    pvc: &PersistentVolumeClaim,
) -> (PersistentVolume, bool) {
    let by_us = !is_volume_bound_to_claim(pv, pvc);
    let mut out = pv.clone();
    let mut dirty = false;
    let current = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    if current.is_none_or(|r| {
        r.name != pvc.metadata.name
            || r.namespace != pvc.metadata.namespace
            || r.uid != pvc.metadata.uid
    }) {
        out.spec.get_or_insert_with(Default::default).claim_ref = Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: pvc.metadata.namespace.clone(),
            name: pvc.metadata.name.clone(),
            uid: pvc.metadata.uid.clone(),
            resource_version: pvc.metadata.resource_version.clone(),
            ..Default::default()
        });
        dirty = true;
    }
    if by_us && !has_annotation(&out.metadata, ANN_BOUND_BY_CONTROLLER) {
        out.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ANN_BOUND_BY_CONTROLLER.into(), "yes".into());
        dirty = true;
    }
    (out, dirty)
}

/// Upstream's AssumePodVolumes: assumes each chosen volume bound to its
/// claim and each claim to provision annotated with `node`, replacing
/// `volumes` with the assumed objects. Returns whether everything was bound
/// already (nothing to do in PreBind). On failure nothing stays assumed.
pub(crate) fn assume_pod_volumes(
    cache: &mut Cache,
    pod: &PodInfo,
    node: &str,
    volumes: &mut PodVolumes,
) -> Result<bool, String> {
    if pod_volumes_bound(cache, pod) {
        return Ok(true);
    }
    let mut assumed = PodVolumes::default();
    for (pv, pvc) in &volumes.static_bindings {
        let (new_pv, dirty) = bind_volume_to_claim(pv, pvc);
        if dirty && let Err(e) = cache.assume_volume(new_pv.clone()) {
            revert_assumed(cache, &assumed);
            return Err(e);
        }
        assumed
            .static_bindings
            .push((Arc::new(new_pv), pvc.clone()));
    }
    for pvc in &volumes.provisions {
        let mut claim = (**pvc).clone();
        claim
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ANN_SELECTED_NODE.into(), node.into());
        if let Err(e) = cache.assume_claim(claim.clone()) {
            revert_assumed(cache, &assumed);
            return Err(e);
        }
        assumed.provisions.push(Arc::new(claim));
    }
    *volumes = assumed;
    Ok(false)
}

/// Upstream's RevertAssumedPodVolumes.
pub(crate) fn revert_assumed(cache: &mut Cache, volumes: &PodVolumes) {
    for (pv, _) in &volumes.static_bindings {
        cache.restore_volume(pv);
    }
    for pvc in &volumes.provisions {
        cache.restore_claim(pvc);
    }
}

/// What the apiserver said, as client-go's error text (the Status message).
fn api_error_text(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Upstream's bindAPIUpdate: updates each volume, then each claim to
/// provision, keeping the apiserver's answers for the checks. Assumptions of
/// objects not written are dropped on failure.
async fn bind_api_update(handle: &Handle, volumes: &mut PodVolumes) -> Result<(), String> {
    let pvs: Api<PersistentVolume> = Api::all(handle.client.clone());
    for i in 0..volumes.static_bindings.len() {
        let (pv, _) = &volumes.static_bindings[i];
        match pvs.replace(name_of(pv), &PostParams::default(), pv).await {
            Ok(written) => volumes.static_bindings[i].0 = Arc::new(written),
            Err(e) => {
                let unwritten = PodVolumes {
                    static_bindings: volumes.static_bindings[i..].to_vec(),
                    provisions: volumes.provisions.clone(),
                };
                revert_assumed(&mut handle.cache(), &unwritten);
                return Err(api_error_text(&e));
            }
        }
    }
    for i in 0..volumes.provisions.len() {
        let pvc = &volumes.provisions[i];
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(
            handle.client.clone(),
            pvc.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let name = pvc.metadata.name.as_deref().unwrap_or_default();
        match claims.replace(name, &PostParams::default(), pvc).await {
            Ok(written) => volumes.provisions[i] = Arc::new(written),
            Err(e) => {
                let unwritten = PodVolumes {
                    static_bindings: vec![],
                    provisions: volumes.provisions[i..].to_vec(),
                };
                revert_assumed(&mut handle.cache(), &unwritten);
                return Err(api_error_text(&e));
            }
        }
    }
    Ok(())
}

fn version(meta: &kube::api::ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Upstream's checkBindings, on the watched (not assumed) objects: `Ok(true)`
/// once every claim is fully bound, `Ok(false)` to wait, an error when the
/// binding was undone and the pod must be scheduled again.
pub(crate) fn check_bindings(
    cache: &Cache,
    pod: &PodInfo,
    node: &str,
    volumes: &PodVolumes,
) -> Result<bool, String> {
    let Some(labels) = cache.node_labels(node) else {
        return Err(format!(
            "failed to get node {node:?}: node {node:?} not found"
        ));
    };
    if cache.node_of(&pod.uid).is_none() {
        return Err(format!(
            "pod does not exist any more: pods {:?} not found",
            pod.name
        ));
    }
    for (written, claim) in &volumes.static_bindings {
        let name = name_of(written);
        let Some(pv) = cache.api_volume(name) else {
            return Err(format!(
                "failed to check binding: persistentvolumes {name:?} not found"
            ));
        };
        let key = key_of(claim);
        let Some(pvc) = cache.api_claim(&key) else {
            return Err(format!(
                "failed to check binding: persistentvolumeclaims {key:?} not found"
            ));
        };
        // Our own write has not reached the watch yet.
        if version(&written.metadata) > version(&pv.metadata) {
            return Ok(false);
        }
        if !volume_matches_node(&pv, &labels) {
            return Err(format!(
                "pv {name:?} node affinity doesn't match node {node:?}: no matching NodeSelectorTerms"
            ));
        }
        let claim_ref = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        if claim_ref.is_none_or(|r| r.uid.as_deref().unwrap_or_default().is_empty()) {
            return Err(format!("ClaimRef got reset for pv {name:?}"));
        }
        if !is_claim_fully_bound(&pvc) {
            return Ok(false);
        }
    }
    for written in &volumes.provisions {
        let key = key_of(written);
        let Some(pvc) = cache.api_claim(&key) else {
            return Err(format!(
                "failed to check provisioning pvc: persistentvolumeclaims {key:?} not found"
            ));
        };
        if version(&written.metadata) > version(&pvc.metadata) {
            return Ok(false);
        }
        let claim_name = pvc.metadata.name.as_deref().unwrap_or_default();
        let Some(annotations) = pvc.metadata.annotations.as_ref() else {
            return Err(format!(
                "selectedNode annotation reset for PVC {claim_name:?}"
            ));
        };
        // A provisioner that failed removes the annotation to have the pod
        // scheduled again.
        if annotations.get(ANN_SELECTED_NODE).map(String::as_str) != Some(node) {
            return Err(format!("provisioning failed for PVC {claim_name:?}"));
        }
        let volume = claim_volume_name(&pvc);
        if !volume.is_empty() {
            // Not there yet is the watch's delay; a deleted one unbinds the claim.
            let Some(pv) = cache.api_volume(volume) else {
                return Ok(false);
            };
            if !volume_matches_node(&pv, &labels) {
                return Err(format!(
                    "pv {volume:?} node affinity doesn't match node {node:?}: no matching NodeSelectorTerms"
                ));
            }
        }
        if !is_claim_fully_bound(&pvc) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Upstream's BindPodVolumes: the API writes, then checks on every change of
/// the watched storage objects (and each [`CHECK_PERIOD`]) until all are
/// bound, an error, or `timeout`.
pub(crate) async fn bind_pod_volumes(
    handle: &Handle,
    pod: &PodInfo,
    node: &str,
    mut volumes: PodVolumes,
    timeout: Duration,
) -> Result<(), String> {
    bind_api_update(handle, &mut volumes).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut changes = handle.cache().volume_changes();
    loop {
        // Subscribed before checking: a change after the check still wakes us.
        changes.mark_unchanged();
        match check_bindings(&handle.cache(), pod, node, &volumes) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => return Err(format!("binding volumes: {e}")),
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                return Err("binding volumes: context deadline exceeded".into());
            }
            _ = changes.changed() => {}
            _ = tokio::time::sleep(CHECK_PERIOD) => {}
        }
    }
}
