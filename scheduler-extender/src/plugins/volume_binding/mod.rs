//! VolumeBinding: a pod's PersistentVolumeClaims must exist and be usable, its
//! bound volumes' node affinity must admit the node, and each unbound
//! WaitForFirstConsumer claim must find a static volume (or a provisioner)
//! that can serve it from the node — upstream's PreFilter/Filter and the
//! binder's `FindPodVolumes`.
//!
//! Filter keeps, per node, the static volumes it chose and the claims to
//! provision; Reserve assumes them in the scheduler cache (a volume with its
//! claimRef set, a claim with `volume.kubernetes.io/selected-node`) so the
//! next pods see them taken; PreBind writes them to the API and waits for the
//! PV controller to complete the binding (upstream's BindPodVolumes, with
//! `bindTimeoutSeconds`); Unreserve drops the assumptions. Capacity scoring
//! is behind the StorageCapacityScoring gate (off), so PreScore always skips,
//! as upstream's.
//!
//! This module also holds the storage helpers the other volume plugins share
//! (claim classes, lookups' error texts, PV node affinity).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Volume};
use k8s_openapi::api::storage::v1::StorageClass;
use serde::Deserialize;
use serde_json::Value;

use crate::framework::labels::{Labels, NodeTerm, Selector};
use crate::framework::quantity;
use crate::framework::{
    CycleState, FilterPlugin, Handle, NodeInfo, Plugin, PodInfo, PreBindPlugin, PreFilterPlugin,
    PreFilterResult, PreScorePlugin, ReservePlugin, ScorePlugin, Snapshot, Status, VolumeIndex,
};
use crate::plugins::parse_args;

mod binder;
#[cfg(test)]
mod binding_tests;

pub const NAME: &str = "VolumeBinding";

pub const ERR_REASON_BIND_CONFLICT: &str =
    "node(s) didn't find available persistent volumes to bind";
pub const ERR_REASON_NODE_CONFLICT: &str = "node(s) didn't match PersistentVolume's node affinity";
pub const ERR_REASON_NOT_ENOUGH_SPACE: &str = "node(s) did not have enough free storage";
pub const ERR_REASON_PV_NOT_EXIST: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";
pub const ERR_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";

const DEFAULT_BIND_TIMEOUT_SECONDS: i64 = 600;

// ---------------------------------------------------------------------------
// Storage helpers shared by VolumeRestrictions, NodeVolumeLimits and VolumeZone.
// ---------------------------------------------------------------------------

pub(crate) const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
pub(crate) const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
pub(crate) const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
pub(crate) const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
pub(crate) const NOT_SUPPORTED_PROVISIONER: &str = "kubernetes.io/no-provisioner";
pub(crate) const WAIT_FOR_FIRST_CONSUMER: &str = "WaitForFirstConsumer";

/// Lister-style NotFound texts: upstream surfaces `err.Error()` verbatim.
pub(crate) fn claim_not_found(name: &str) -> String {
    format!("persistentvolumeclaim {name:?} not found")
}
pub(crate) fn volume_not_found(name: &str) -> String {
    format!("persistentvolume {name:?} not found")
}
pub(crate) fn class_not_found(name: &str) -> String {
    format!("storageclass.storage.k8s.io {name:?} not found")
}

pub(crate) fn claim_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The claim's storage class; the beta annotation still wins over the field,
/// as in upstream's GetPersistentVolumeClaimClass.
pub(crate) fn claim_class(pvc: &PersistentVolumeClaim) -> &str {
    if let Some(class) = pvc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_BETA_STORAGE_CLASS))
    {
        return class;
    }
    pvc.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

/// The volume's storage class, annotation first (GetPersistentVolumeClass).
pub(crate) fn volume_class(pv: &PersistentVolume) -> &str {
    if let Some(class) = pv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_BETA_STORAGE_CLASS))
    {
        return class;
    }
    pv.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

pub(crate) fn claim_volume_name(pvc: &PersistentVolumeClaim) -> &str {
    pvc.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("")
}

pub(crate) fn has_annotation(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(key))
}

/// Whether the PV's `spec.nodeAffinity.required` admits a node with `labels`
/// (upstream's CheckNodeAffinity). Upstream matches against a node object
/// carrying only the labels, so `matchFields` on `metadata.name` is not
/// checked: a term of only field requirements admits every node. Terms that
/// do not parse are ignored like its lazy-error selector does.
pub(crate) fn volume_matches_node(pv: &PersistentVolume, labels: &Labels) -> bool {
    let Some(required) = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return true;
    };
    required
        .node_selector_terms
        .iter()
        .filter_map(|t| NodeTerm::compile(t).ok())
        .any(|t| t.matches("", labels))
}

/// How a pod volume refers to a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClaimRef {
    pub name: String,
    /// A generic ephemeral volume, whose claim is named `<pod>-<volume>` and
    /// must be owned by the pod.
    pub ephemeral: bool,
}

/// The claim a pod volume uses, if any.
pub(crate) fn claim_of(pod: &PodInfo, volume: &Volume) -> Option<ClaimRef> {
    if let Some(pvc) = &volume.persistent_volume_claim {
        return Some(ClaimRef {
            name: pvc.claim_name.clone(),
            ephemeral: false,
        });
    }
    volume.ephemeral.as_ref().map(|_| ClaimRef {
        name: format!("{}-{}", pod.name, volume.name),
        ephemeral: true,
    })
}

pub(crate) fn pod_volumes(pod: &PodInfo) -> &[Volume] {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default()
}

/// Upstream's ephemeral.VolumeIsForPod: the pod must be the claim's controller.
pub(crate) fn check_ephemeral_owner(
    pod: &PodInfo,
    pvc: &PersistentVolumeClaim,
) -> Result<(), String> {
    let owned = pvc
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && !pod.uid.is_empty() && o.uid == pod.uid);
    if owned {
        return Ok(());
    }
    Err(format!(
        "PVC {}/{} was not created for pod {}/{} (pod is not owner)",
        pvc.metadata.namespace.as_deref().unwrap_or_default(),
        pvc.metadata.name.as_deref().unwrap_or_default(),
        pod.namespace,
        pod.name
    ))
}

fn storage_request(pvc: &PersistentVolumeClaim) -> i64 {
    pvc.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| quantity::value(&q.0).ok())
        .unwrap_or(0)
}

fn volume_capacity(pv: &PersistentVolume) -> i64 {
    pv.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| quantity::value(&q.0).ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// The plugin.
// ---------------------------------------------------------------------------

#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VolumeBindingArgs {
    bind_timeout_seconds: Option<i64>,
    shape: Option<Value>,
}

pub struct VolumeBinding {
    /// How long PreBind waits for the PV controller to complete the bindings.
    bind_timeout_seconds: i64,
}

pub fn new(args: Option<&Value>) -> Result<Arc<dyn Plugin>, String> {
    let args: VolumeBindingArgs = parse_args(NAME, args)?;
    let bind_timeout_seconds = args
        .bind_timeout_seconds
        .unwrap_or(DEFAULT_BIND_TIMEOUT_SECONDS);
    let mut errors = vec![];
    if bind_timeout_seconds < 0 {
        errors.push(format!(
            "bindTimeoutSeconds: Invalid value: {bind_timeout_seconds}: invalid BindTimeoutSeconds, should not be a negative value"
        ));
    }
    // StorageCapacityScoring is alpha and off, so upstream refuses a shape.
    if args.shape.as_ref().is_some_and(|s| !s.is_null()) {
        errors.push(
            "shape: Invalid value: unexpected field `shape`, remove it or turn on the feature gate StorageCapacityScoring"
                .to_string(),
        );
    }
    if !errors.is_empty() {
        return Err(format!("pluginConfig[{NAME}].args: {}", errors.join(", ")));
    }
    Ok(Arc::new(VolumeBinding {
        bind_timeout_seconds,
    }))
}

/// The pod's claims grouped as upstream's binder groups them, from PreFilter.
#[derive(Clone, Default)]
struct BindingState {
    bound: Vec<Arc<PersistentVolumeClaim>>,
    unbound_delay: Vec<Arc<PersistentVolumeClaim>>,
    /// Volumes of each storage class the unbound delayed claims ask for.
    candidates: HashMap<String, Vec<Arc<PersistentVolume>>>,
    volumes: Arc<VolumeIndex>,
    /// What Filter found each feasible node needs. Filters run in parallel
    /// on a shared state, hence the lock; clones share it, as upstream's
    /// stateData does.
    by_node: Arc<Mutex<HashMap<String, PodVolumes>>>,
    /// Reserve found nothing to bind: PreBind has nothing to do.
    all_bound: bool,
}

/// The API writes one node needs (upstream's PodVolumes); after Reserve they
/// hold the assumed objects PreBind writes.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct PodVolumes {
    /// Static volumes to bind, each with its claim.
    pub static_bindings: Vec<(Arc<PersistentVolume>, Arc<PersistentVolumeClaim>)>,
    /// Claims for the provisioner: written with the selected-node annotation.
    pub provisions: Vec<Arc<PersistentVolumeClaim>>,
}

impl Plugin for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
    fn as_reserve(&self) -> Option<&dyn ReservePlugin> {
        Some(self)
    }
    fn as_pre_bind(&self) -> Option<&dyn PreBindPlugin> {
        Some(self)
    }
}

/// Upstream's podHasPVCs: every claim must exist, not be lost or deleting, and
/// an ephemeral one must belong to the pod.
fn pod_has_claims(pod: &PodInfo, index: &VolumeIndex) -> Result<bool, String> {
    let mut has = false;
    for volume in pod_volumes(pod) {
        let Some(claim) = claim_of(pod, volume) else {
            continue;
        };
        has = true;
        let Some(pvc) = index.claims.get(&claim_key(&pod.namespace, &claim.name)) else {
            if claim.ephemeral {
                return Err(format!(
                    "waiting for ephemeral volume controller to create the persistentvolumeclaim {:?}",
                    claim.name
                ));
            }
            return Err(claim_not_found(&claim.name));
        };
        if pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Lost") {
            return Err(format!(
                "persistentvolumeclaim {:?} bound to non-existent persistentvolume {:?}",
                claim.name,
                claim_volume_name(pvc)
            ));
        }
        if pvc.metadata.deletion_timestamp.is_some() {
            return Err(format!(
                "persistentvolumeclaim {:?} is being deleted",
                claim.name
            ));
        }
        if claim.ephemeral {
            check_ephemeral_owner(pod, pvc)?;
        }
    }
    Ok(has)
}

/// Upstream's IsDelayBindingMode: a claim without a class, or whose class is
/// missing, binds immediately.
fn is_delay_binding(pvc: &PersistentVolumeClaim, index: &VolumeIndex) -> Result<bool, String> {
    let class = claim_class(pvc);
    if class.is_empty() {
        return Ok(false);
    }
    let Some(sc) = index.storage_classes.get(class) else {
        return Ok(false);
    };
    match sc.volume_binding_mode.as_deref() {
        None => Err(format!(
            "VolumeBindingMode not set for StorageClass {class:?}"
        )),
        Some(mode) => Ok(mode == WAIT_FOR_FIRST_CONSUMER),
    }
}

impl PreFilterPlugin for VolumeBinding {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (PreFilterResult, Status) {
        let index = &snapshot.volumes;
        match pod_has_claims(pod, index) {
            Err(e) => return (PreFilterResult::default(), Status::unresolvable(e)),
            Ok(false) => {
                state.write(NAME, BindingState::default());
                return (PreFilterResult::default(), Status::skip());
            }
            Ok(true) => {}
        }
        let mut st = BindingState {
            volumes: index.clone(),
            ..Default::default()
        };
        let mut unbound_immediate = 0;
        for volume in pod_volumes(pod) {
            let Some(claim) = claim_of(pod, volume) else {
                continue;
            };
            let Some(pvc) = index.claims.get(&claim_key(&pod.namespace, &claim.name)) else {
                return (
                    PreFilterResult::default(),
                    Status::error(format!(
                        "error getting PVC {:?}: not found",
                        claim_key(&pod.namespace, &claim.name)
                    )),
                );
            };
            let fully_bound = !claim_volume_name(pvc).is_empty()
                && has_annotation(&pvc.metadata, ANN_BIND_COMPLETED);
            if fully_bound {
                st.bound.push(pvc.clone());
                continue;
            }
            match is_delay_binding(pvc, index) {
                Err(e) => return (PreFilterResult::default(), Status::error(e)),
                // A pre-bound claim (volumeName set) is the PV controller's job.
                Ok(true) if claim_volume_name(pvc).is_empty() => st.unbound_delay.push(pvc.clone()),
                Ok(_) => unbound_immediate += 1,
            }
        }
        if unbound_immediate > 0 {
            return (
                PreFilterResult::default(),
                Status::unresolvable(ERR_UNBOUND_IMMEDIATE),
            );
        }
        for pvc in &st.unbound_delay {
            let class = claim_class(pvc).to_string();
            if st.candidates.contains_key(&class) {
                continue;
            }
            let mut pvs: Vec<Arc<PersistentVolume>> = index
                .volumes
                .values()
                .filter(|pv| volume_class(pv) == class)
                .cloned()
                .collect();
            // The assume cache's order is arbitrary; names make ties stable.
            pvs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            st.candidates.insert(class, pvs);
        }
        state.write(NAME, st);
        // Upstream once narrowed the nodes from local PVs' hostname affinity;
        // that was dropped (hostname label ≠ node name), so all nodes remain.
        (PreFilterResult::default(), Status::success())
    }
}

/// Why a node cannot serve the pod's claims, in upstream's reason order.
#[derive(Default)]
struct Findings {
    bound_satisfied: bool,
    unbound_satisfied: bool,
    sufficient_storage: bool,
    bound_pvs_found: bool,
}

impl Findings {
    fn reasons(&self) -> Vec<String> {
        let mut reasons = vec![];
        if !self.bound_satisfied {
            reasons.push(ERR_REASON_NODE_CONFLICT.to_string());
        }
        if !self.unbound_satisfied {
            reasons.push(ERR_REASON_BIND_CONFLICT.to_string());
        }
        if !self.sufficient_storage {
            reasons.push(ERR_REASON_NOT_ENOUGH_SPACE.to_string());
        }
        if !self.bound_pvs_found {
            reasons.push(ERR_REASON_PV_NOT_EXIST.to_string());
        }
        reasons
    }
}

pub(crate) fn is_volume_bound_to_claim(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    let Some(claim_ref) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    if claim_ref.name != pvc.metadata.name || claim_ref.namespace != pvc.metadata.namespace {
        return false;
    }
    match claim_ref.uid.as_deref() {
        Some(uid) if !uid.is_empty() => pvc.metadata.uid.as_deref() == Some(uid),
        _ => true,
    }
}

fn access_modes_satisfied(pvc: &PersistentVolumeClaim, pv: &PersistentVolume) -> bool {
    let offered = pv
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default();
    pvc.spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default()
        .iter()
        .all(|m| offered.contains(m))
}

/// Upstream's FindMatchingVolume on the scheduler path: a volume pre-bound to
/// the claim wins outright; otherwise the smallest available volume of the
/// claim's class that fits, matches its selector, modes and the node.
fn find_matching_volume(
    pvc: &PersistentVolumeClaim,
    pvs: &[Arc<PersistentVolume>],
    labels: &Labels,
    excluded: &[String],
) -> Result<Option<Arc<PersistentVolume>>, String> {
    let spec = pvc.spec.as_ref();
    let requested = storage_request(pvc);
    let requested_class = claim_class(pvc);
    let selector = match spec.and_then(|s| s.selector.as_ref()) {
        Some(sel) => Some(Selector::from_label_selector(sel).map_err(|e| {
            format!(
                "error creating internal label selector for claim: {}: {e}",
                claim_key(
                    pvc.metadata.namespace.as_deref().unwrap_or_default(),
                    pvc.metadata.name.as_deref().unwrap_or_default()
                )
            )
        })?),
        None => None,
    };
    // An unset volumeMode is Filesystem on both sides.
    let claim_mode = spec
        .and_then(|s| s.volume_mode.as_deref())
        .unwrap_or("Filesystem");
    let claim_vac = spec
        .and_then(|s| s.volume_attributes_class_name.as_deref())
        .unwrap_or("");
    let empty = Labels::new();
    let mut smallest: Option<(&Arc<PersistentVolume>, i64)> = None;
    for pv in pvs {
        let name = pv.metadata.name.as_deref().unwrap_or_default();
        if excluded.iter().any(|e| e == name) {
            continue;
        }
        let pv_spec = pv.spec.as_ref();
        if pv_spec.is_some_and(|s| s.claim_ref.is_some()) && !is_volume_bound_to_claim(pv, pvc) {
            continue;
        }
        let capacity = volume_capacity(pv);
        if capacity < requested {
            continue;
        }
        let pv_mode = pv_spec
            .and_then(|s| s.volume_mode.as_deref())
            .unwrap_or("Filesystem");
        if pv_mode != claim_mode {
            continue;
        }
        let pv_vac = pv_spec
            .and_then(|s| s.volume_attributes_class_name.as_deref())
            .unwrap_or("");
        if pv_vac != claim_vac {
            continue;
        }
        if pv.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let affinity_ok = volume_matches_node(pv, labels);
        if is_volume_bound_to_claim(pv, pvc) {
            return Ok(affinity_ok.then(|| pv.clone()));
        }
        if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Available") {
            continue;
        }
        if let Some(sel) = &selector
            && !sel.matches(pv.metadata.labels.as_ref().unwrap_or(&empty))
        {
            continue;
        }
        if volume_class(pv) != requested_class || !affinity_ok || !access_modes_satisfied(pvc, pv) {
            continue;
        }
        if smallest.is_none_or(|(_, size)| size > capacity) {
            smallest = Some((pv, capacity));
        }
    }
    Ok(smallest.map(|(pv, _)| pv.clone()))
}

/// Upstream's MatchTopologySelectorTerms: no terms admit every node; an empty
/// term admits none.
fn topology_allows(class: &StorageClass, labels: &Labels) -> bool {
    let terms = class.allowed_topologies.as_deref().unwrap_or_default();
    if terms.is_empty() {
        return true;
    }
    terms.iter().any(|term| {
        let exprs = term.match_label_expressions.as_deref().unwrap_or_default();
        !exprs.is_empty()
            && exprs
                .iter()
                .all(|e| labels.get(&e.key).is_some_and(|v| e.values.contains(v)))
    })
}

/// Upstream's checkVolumeProvisions, returning (provisionable, enough storage).
/// CSIStorageCapacity is not in the snapshot, so storage is always enough (as
/// upstream when the driver does not opt into capacity tracking).
fn check_provisions(
    claims: &[Arc<PersistentVolumeClaim>],
    index: &VolumeIndex,
    labels: &Labels,
) -> Result<(bool, bool), String> {
    for pvc in claims {
        let class = claim_class(pvc);
        if class.is_empty() {
            return Err(format!(
                "no class for claim {:?}",
                claim_key(
                    pvc.metadata.namespace.as_deref().unwrap_or_default(),
                    pvc.metadata.name.as_deref().unwrap_or_default()
                )
            ));
        }
        let Some(sc) = index.storage_classes.get(class) else {
            return Err(format!("failed to find storage class {class:?}"));
        };
        if sc.provisioner.is_empty() || sc.provisioner == NOT_SUPPORTED_PROVISIONER {
            return Ok((false, true));
        }
        if !topology_allows(sc, labels) {
            return Ok((false, true));
        }
    }
    Ok((true, true))
}

impl VolumeBinding {
    /// Upstream's FindPodVolumes: why the node does not fit, or what it needs.
    fn find_pod_volumes(
        &self,
        st: &BindingState,
        node: &NodeInfo,
    ) -> Result<(Findings, PodVolumes), String> {
        let mut volumes = PodVolumes::default();
        let mut f = Findings {
            bound_satisfied: true,
            unbound_satisfied: true,
            sufficient_storage: true,
            bound_pvs_found: true,
        };
        for pvc in &st.bound {
            let Some(pv) = st.volumes.volumes.get(claim_volume_name(pvc)) else {
                f.bound_pvs_found = false;
                break;
            };
            if !volume_matches_node(pv, &node.labels) {
                f.bound_satisfied = false;
                break;
            }
        }
        if st.unbound_delay.is_empty() {
            return Ok((f, volumes));
        }
        let mut to_match = vec![];
        let mut to_provision = vec![];
        for pvc in &st.unbound_delay {
            match pvc
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANN_SELECTED_NODE))
            {
                // Selected by a scheduler before (ours or another): only
                // that node may provision it.
                Some(selected) if *selected != node.name => {
                    f.unbound_satisfied = false;
                    return Ok((f, volumes));
                }
                Some(_) => to_provision.push(pvc.clone()),
                None => to_match.push(pvc.clone()),
            }
        }
        if !to_match.is_empty() {
            // Smallest requests first, so each gets the smallest volume that fits.
            to_match.sort_by_key(|pvc| storage_request(pvc));
            let mut chosen: Vec<String> = vec![];
            let mut all_found = true;
            for pvc in to_match {
                let pvs = st
                    .candidates
                    .get(claim_class(&pvc))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                match find_matching_volume(&pvc, pvs, &node.labels, &chosen)? {
                    Some(pv) => {
                        chosen.push(pv.metadata.name.clone().unwrap_or_default());
                        volumes.static_bindings.push((pv, pvc));
                    }
                    None => {
                        all_found = false;
                        to_provision.push(pvc);
                    }
                }
            }
            f.unbound_satisfied = all_found;
        }
        if !to_provision.is_empty() {
            let (provisionable, sufficient) =
                check_provisions(&to_provision, &st.volumes, &node.labels)?;
            f.unbound_satisfied = provisionable;
            f.sufficient_storage = sufficient;
            if provisionable && sufficient {
                volumes.provisions = to_provision;
            }
        }
        Ok((f, volumes))
    }
}

impl FilterPlugin for VolumeBinding {
    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(st) = state.read::<BindingState>(NAME) else {
            return Status::error(format!("reading {NAME:?} from cycleState: not found"));
        };
        match self.find_pod_volumes(st, node) {
            Err(e) => Status::error(e),
            Ok((f, volumes)) => {
                let reasons = f.reasons();
                if reasons.is_empty() {
                    st.by_node
                        .lock()
                        .expect("volume binding state lock")
                        .insert(node.name.clone(), volumes);
                    Status::success()
                } else {
                    Status::new(
                        crate::framework::Code::UnschedulableAndUnresolvable,
                        reasons,
                    )
                }
            }
        }
    }
}

impl PreScorePlugin for VolumeBinding {
    /// Without StorageCapacityScoring upstream has no scorer and always skips.
    fn pre_score(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        _snapshot: &Snapshot,
    ) -> Status {
        Status::skip()
    }
}

impl ReservePlugin for VolumeBinding {
    /// Assumes the node's bindings in the cache (upstream's AssumePodVolumes).
    fn reserve(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        node: &str,
        handle: &Handle,
    ) -> Status {
        let Some(st) = state.read_mut::<BindingState>(NAME) else {
            return Status::error(format!("reading {NAME:?} from cycleState: not found"));
        };
        let mut by_node = st.by_node.lock().expect("volume binding state lock");
        let Some(volumes) = by_node.get_mut(node) else {
            // The pod has no claims.
            drop(by_node);
            st.all_bound = true;
            return Status::success();
        };
        let mut cache = handle.cache();
        match binder::assume_pod_volumes(&mut cache, pod, node, volumes) {
            Ok(all_bound) => {
                drop(by_node);
                st.all_bound = all_bound;
                Status::success()
            }
            Err(e) => Status::error(e),
        }
    }

    /// Drops the node's assumptions (upstream's RevertAssumedPodVolumes).
    fn unreserve(&self, state: &CycleState, _pod: &PodInfo, node: &str, handle: &Handle) {
        let Some(st) = state.read::<BindingState>(NAME) else {
            return;
        };
        let by_node = st.by_node.lock().expect("volume binding state lock");
        if let Some(volumes) = by_node.get(node) {
            binder::revert_assumed(&mut handle.cache(), volumes);
        }
    }
}

impl PreBindPlugin for VolumeBinding {
    /// Writes the bindings and waits for the PV controller to complete them
    /// (upstream's BindPodVolumes); an error retries the pod.
    fn pre_bind<'a>(
        &'a self,
        state: &'a CycleState,
        pod: &'a PodInfo,
        node: &'a str,
        handle: &'a Handle,
    ) -> futures::future::BoxFuture<'a, Status> {
        Box::pin(async move {
            let Some(st) = state.read::<BindingState>(NAME) else {
                return Status::error(format!("reading {NAME:?} from cycleState: not found"));
            };
            if st.all_bound {
                return Status::success();
            }
            let volumes = st
                .by_node
                .lock()
                .expect("volume binding state lock")
                .get(node)
                .cloned();
            let Some(volumes) = volumes else {
                return Status::error(format!("no pod volume found for node {node:?}"));
            };
            let timeout = Duration::from_secs(self.bind_timeout_seconds.max(0) as u64);
            match binder::bind_pod_volumes(handle, pod, node, volumes, timeout).await {
                Ok(()) => Status::success(),
                Err(e) => Status::error(e),
            }
        })
    }
}

impl ScorePlugin for VolumeBinding {
    fn score(&self, _state: &CycleState, _pod: &PodInfo, _node: &NodeInfo) -> Result<i64, Status> {
        Ok(0)
    }
}

/// Builders for the volume plugins' tests: storage objects from compact JSON.
#[cfg(test)]
pub(crate) mod test_util {
    use super::*;
    use k8s_openapi::api::storage::v1::CSINode;
    use serde_json::json;

    pub fn index(
        claims: Vec<Value>,
        pvs: Vec<Value>,
        classes: Vec<Value>,
        csi_nodes: Vec<Value>,
    ) -> VolumeIndex {
        let mut index = VolumeIndex::default();
        for c in claims {
            let c: PersistentVolumeClaim = serde_json::from_value(c).expect("test claim");
            let key = claim_key(
                c.metadata.namespace.as_deref().unwrap_or("default"),
                c.metadata.name.as_deref().unwrap_or_default(),
            );
            index.claims.insert(key, Arc::new(c));
        }
        for v in pvs {
            let v: PersistentVolume = serde_json::from_value(v).expect("test pv");
            index
                .volumes
                .insert(v.metadata.name.clone().unwrap_or_default(), Arc::new(v));
        }
        for s in classes {
            let s: StorageClass = serde_json::from_value(s).expect("test class");
            index
                .storage_classes
                .insert(s.metadata.name.clone().unwrap_or_default(), Arc::new(s));
        }
        for n in csi_nodes {
            let n: CSINode = serde_json::from_value(n).expect("test csinode");
            index
                .csi_nodes
                .insert(n.metadata.name.clone().unwrap_or_default(), Arc::new(n));
        }
        index
    }

    /// A claim in `default`; `volume` non-empty makes it fully bound.
    pub fn claim(name: &str, class: Option<&str>, volume: &str, extra_spec: Value) -> Value {
        let mut spec = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}});
        if let Some(class) = class {
            spec["storageClassName"] = json!(class);
        }
        if !volume.is_empty() {
            spec["volumeName"] = json!(volume);
        }
        if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
            for (k, v) in extra {
                s.insert(k.clone(), v.clone());
            }
        }
        let mut c = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": spec,
        });
        if !volume.is_empty() {
            c["metadata"]["annotations"] = json!({ANN_BIND_COMPLETED: "yes"});
            c["status"] = json!({"phase": "Bound"});
        }
        c
    }

    /// An Available PV of `class` with `size`, extra spec merged in.
    pub fn pv(name: &str, class: &str, size: &str, extra_spec: Value) -> Value {
        let mut spec = json!({
            "storageClassName": class,
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "local": {"path": "/mnt/x"},
        });
        if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
            for (k, v) in extra {
                s.insert(k.clone(), v.clone());
            }
        }
        json!({"metadata": {"name": name}, "spec": spec, "status": {"phase": "Available"}})
    }

    pub fn class(name: &str, mode: &str, provisioner: &str) -> Value {
        json!({"metadata": {"name": name}, "provisioner": provisioner, "volumeBindingMode": mode})
    }

    pub fn host_affinity(host: &str) -> Value {
        json!({"nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [host]}]}
        ]}}})
    }

    pub fn pvc_volume(claim: &str) -> Value {
        json!({"name": format!("v-{claim}"), "persistentVolumeClaim": {"claimName": claim}})
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;
    use crate::framework::Code;
    use crate::framework::testing::{node, node_info, pod};
    use serde_json::json;

    fn snapshot(index: VolumeIndex, nodes: Vec<NodeInfo>) -> Snapshot {
        Snapshot::new(
            nodes.into_iter().map(Arc::new).collect(),
            HashMap::new(),
            index,
        )
    }

    fn plugin() -> VolumeBinding {
        VolumeBinding {
            bind_timeout_seconds: 600,
        }
    }

    fn run(
        index: VolumeIndex,
        pod_claims: &[&str],
        node_labels: &[(&str, &str)],
    ) -> (Status, Option<Status>) {
        let volumes: Vec<Value> = pod_claims.iter().map(|c| pvc_volume(c)).collect();
        let p = pod("p", &[], json!({"volumes": volumes}));
        let n = node_info(node("node-a", "1", "1Gi", node_labels, json!({})), &[]);
        let snap = snapshot(index, vec![n.clone()]);
        let pl = plugin();
        let mut state = CycleState::new();
        let (result, status) = pl.pre_filter(&mut state, &p, &snap);
        assert_eq!(result.node_names, None, "all nodes stay candidates");
        if !status.is_success() {
            return (status, None);
        }
        let filter = pl.filter(&state, &p, &n);
        (status, Some(filter))
    }

    fn unresolvable(reasons: &[&str]) -> Status {
        Status::new(
            Code::UnschedulableAndUnresolvable,
            reasons.iter().map(|r| r.to_string()).collect(),
        )
    }

    #[test]
    fn pod_without_claims_skips() {
        let (pre, filter) = run(index(vec![], vec![], vec![], vec![]), &[], &[]);
        assert_eq!(pre.code, Code::Skip);
        assert!(filter.is_none());
    }

    #[test]
    fn prefilter_rejects_missing_deleting_lost_and_immediate_claims() {
        let deleting = {
            let mut c = claim("c", Some("sc"), "pv-a", json!({}));
            c["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
            c
        };
        let lost = {
            let mut c = claim("c", Some("sc"), "pv-a", json!({}));
            c["status"]["phase"] = json!("Lost");
            c
        };
        let prebound = {
            // volumeName set but the PV controller has not completed the bind.
            let mut c = claim("c", Some("sc"), "pv-a", json!({}));
            c["metadata"]["annotations"] = json!({});
            c
        };
        let cases: Vec<(&str, Vec<Value>, Vec<Value>, &str)> = vec![
            (
                "missing",
                vec![],
                vec![],
                "persistentvolumeclaim \"c\" not found",
            ),
            (
                "deleting",
                vec![deleting],
                vec![],
                "persistentvolumeclaim \"c\" is being deleted",
            ),
            (
                "lost",
                vec![lost],
                vec![],
                "persistentvolumeclaim \"c\" bound to non-existent persistentvolume \"pv-a\"",
            ),
            (
                "immediate class",
                vec![claim("c", Some("sc"), "", json!({}))],
                vec![class("sc", "Immediate", NOT_SUPPORTED_PROVISIONER)],
                ERR_UNBOUND_IMMEDIATE,
            ),
            (
                "no class",
                vec![claim("c", None, "", json!({}))],
                vec![],
                ERR_UNBOUND_IMMEDIATE,
            ),
            (
                "class not found",
                vec![claim("c", Some("gone"), "", json!({}))],
                vec![],
                ERR_UNBOUND_IMMEDIATE,
            ),
            (
                "pre-bound",
                vec![prebound],
                vec![class(
                    "sc",
                    WAIT_FOR_FIRST_CONSUMER,
                    NOT_SUPPORTED_PROVISIONER,
                )],
                ERR_UNBOUND_IMMEDIATE,
            ),
        ];
        for (name, claims, classes, want) in cases {
            let (pre, _) = run(index(claims, vec![], classes, vec![]), &["c"], &[]);
            assert_eq!(pre, unresolvable(&[want]), "{name}");
        }
    }

    #[test]
    fn binding_mode_unset_is_an_error() {
        let sc = json!({"metadata": {"name": "sc"}, "provisioner": "x"});
        let (pre, _) = run(
            index(
                vec![claim("c", Some("sc"), "", json!({}))],
                vec![],
                vec![sc],
                vec![],
            ),
            &["c"],
            &[],
        );
        assert_eq!(pre.code, Code::Error);
        assert_eq!(
            pre.reasons,
            vec!["VolumeBindingMode not set for StorageClass \"sc\""]
        );
    }

    #[test]
    fn bound_claims_check_volume_node_affinity() {
        let cases: Vec<(&str, Value, Status)> = vec![
            (
                "no affinity",
                pv("pv-a", "sc", "1Gi", json!({})),
                Status::success(),
            ),
            (
                "matching host",
                pv("pv-a", "sc", "1Gi", host_affinity("node-a")),
                Status::success(),
            ),
            (
                "other host",
                pv("pv-a", "sc", "1Gi", host_affinity("node-b")),
                unresolvable(&[ERR_REASON_NODE_CONFLICT]),
            ),
            (
                // Upstream matches PV affinity against labels only, so
                // field requirements are not checked.
                "matchFields are not checked",
                pv(
                    "pv-a",
                    "sc",
                    "1Gi",
                    json!({"nodeAffinity": {"required": {"nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-b"]}]}
                    ]}}}),
                ),
                Status::success(),
            ),
        ];
        for (name, volume, want) in cases {
            let idx = index(
                vec![claim("c", Some("sc"), "pv-a", json!({}))],
                vec![volume],
                vec![],
                vec![],
            );
            let (pre, filter) = run(idx, &["c"], &[]);
            assert!(pre.is_success(), "{name}: {pre}");
            assert_eq!(filter.unwrap(), want, "{name}");
        }
    }

    #[test]
    fn bound_claim_to_missing_volume() {
        let idx = index(
            vec![claim("c", Some("sc"), "pv-gone", json!({}))],
            vec![],
            vec![],
            vec![],
        );
        let (_, filter) = run(idx, &["c"], &[]);
        assert_eq!(filter.unwrap(), unresolvable(&[ERR_REASON_PV_NOT_EXIST]));
    }

    fn wffc_static() -> Value {
        class("local", WAIT_FOR_FIRST_CONSUMER, NOT_SUPPORTED_PROVISIONER)
    }

    #[test]
    fn unbound_delayed_claims_need_a_matching_static_volume() {
        let block = json!({"volumeMode": "Block"});
        let cases: Vec<(&str, Vec<Value>, Value, bool)> = vec![
            (
                "fits",
                vec![pv("pv-1", "local", "2Gi", host_affinity("node-a"))],
                json!({}),
                true,
            ),
            (
                "too small",
                vec![pv("pv-1", "local", "500Mi", json!({}))],
                json!({}),
                false,
            ),
            (
                "other class",
                vec![pv("pv-1", "fast", "2Gi", json!({}))],
                json!({}),
                false,
            ),
            (
                "other node",
                vec![pv("pv-1", "local", "2Gi", host_affinity("node-b"))],
                json!({}),
                false,
            ),
            (
                "access modes",
                vec![pv(
                    "pv-1",
                    "local",
                    "2Gi",
                    json!({"accessModes": ["ReadOnlyMany"]}),
                )],
                json!({}),
                false,
            ),
            (
                "volume mode",
                vec![pv("pv-1", "local", "2Gi", block.clone())],
                json!({}),
                false,
            ),
            (
                "both block",
                vec![pv("pv-1", "local", "2Gi", block.clone())],
                block,
                true,
            ),
            (
                "selector",
                vec![pv("pv-1", "local", "2Gi", json!({}))],
                json!({"selector": {"matchLabels": {"tier": "gold"}}}),
                false,
            ),
            (
                "claimed by another",
                vec![pv(
                    "pv-1",
                    "local",
                    "2Gi",
                    json!({"claimRef": {"name": "other", "namespace": "default"}}),
                )],
                json!({}),
                false,
            ),
            (
                "attributes class",
                vec![pv(
                    "pv-1",
                    "local",
                    "2Gi",
                    json!({"volumeAttributesClassName": "gold"}),
                )],
                json!({}),
                false,
            ),
        ];
        for (name, pvs, claim_spec, ok) in cases {
            let idx = index(
                vec![claim("c", Some("local"), "", claim_spec)],
                pvs,
                vec![wffc_static()],
                vec![],
            );
            let (pre, filter) = run(idx, &["c"], &[]);
            assert!(pre.is_success(), "{name}: {pre}");
            let want = if ok {
                Status::success()
            } else {
                unresolvable(&[ERR_REASON_BIND_CONFLICT])
            };
            assert_eq!(filter.unwrap(), want, "{name}");
        }
    }

    #[test]
    fn released_or_bound_volumes_are_not_available() {
        let mut released = pv("pv-1", "local", "2Gi", json!({}));
        released["status"]["phase"] = json!("Released");
        let idx = index(
            vec![claim("c", Some("local"), "", json!({}))],
            vec![released],
            vec![wffc_static()],
            vec![],
        );
        let (_, filter) = run(idx, &["c"], &[]);
        assert_eq!(filter.unwrap(), unresolvable(&[ERR_REASON_BIND_CONFLICT]));
    }

    #[test]
    fn volume_pre_bound_to_the_claim_is_used_even_if_not_available() {
        let mut pre_bound = pv(
            "pv-1",
            "other-class",
            "2Gi",
            json!({"claimRef": {"name": "c", "namespace": "default"}}),
        );
        pre_bound["status"]["phase"] = json!("Pending");
        let idx = index(
            vec![claim("c", Some("local"), "", json!({}))],
            vec![pre_bound.clone()],
            vec![wffc_static()],
            vec![],
        );
        // Candidates come from the claim's class, so a pre-bound PV of another
        // class is not seen, as with upstream's per-class PV cache.
        let (_, filter) = run(idx, &["c"], &[]);
        assert_eq!(filter.unwrap(), unresolvable(&[ERR_REASON_BIND_CONFLICT]));

        pre_bound["spec"]["storageClassName"] = json!("local");
        let idx = index(
            vec![claim("c", Some("local"), "", json!({}))],
            vec![pre_bound],
            vec![wffc_static()],
            vec![],
        );
        let (_, filter) = run(idx, &["c"], &[]);
        assert_eq!(filter.unwrap(), Status::success());
    }

    #[test]
    fn two_claims_cannot_share_one_volume() {
        let claims = vec![
            claim("c1", Some("local"), "", json!({})),
            claim("c2", Some("local"), "", json!({})),
        ];
        let one = vec![pv("pv-1", "local", "2Gi", json!({}))];
        let idx = index(claims.clone(), one, vec![wffc_static()], vec![]);
        let (_, filter) = run(idx, &["c1", "c2"], &[]);
        assert_eq!(filter.unwrap(), unresolvable(&[ERR_REASON_BIND_CONFLICT]));

        let two = vec![
            pv("pv-1", "local", "2Gi", json!({})),
            pv("pv-2", "local", "5Gi", json!({})),
        ];
        let idx = index(claims, two, vec![wffc_static()], vec![]);
        let (_, filter) = run(idx, &["c1", "c2"], &[]);
        assert_eq!(filter.unwrap(), Status::success());
    }

    #[test]
    fn smallest_fitting_volume_is_chosen() {
        let claim_v = claim("c", Some("local"), "", json!({}));
        let pvc: PersistentVolumeClaim = serde_json::from_value(claim_v).unwrap();
        let pvs: Vec<Arc<PersistentVolume>> =
            [("big", "10Gi"), ("small", "2Gi"), ("tiny", "100Mi")]
                .iter()
                .map(|(n, s)| {
                    Arc::new(serde_json::from_value(pv(n, "local", s, json!({}))).unwrap())
                })
                .collect();
        let got = find_matching_volume(&pvc, &pvs, &Labels::new(), &[]).unwrap();
        assert_eq!(got.unwrap().metadata.name.as_deref(), Some("small"));
        let got = find_matching_volume(&pvc, &pvs, &Labels::new(), &["small".to_string()]).unwrap();
        assert_eq!(got.unwrap().metadata.name.as_deref(), Some("big"));
    }

    #[test]
    fn dynamic_provisioning_and_selected_node() {
        let topo = json!({
            "metadata": {"name": "dyn"}, "provisioner": "csi.example.com",
            "volumeBindingMode": WAIT_FOR_FIRST_CONSUMER,
            "allowedTopologies": [{"matchLabelExpressions": [{"key": "zone", "values": ["a"]}]}],
        });
        let idx = || {
            index(
                vec![claim("c", Some("dyn"), "", json!({}))],
                vec![],
                vec![topo.clone()],
                vec![],
            )
        };
        let (_, filter) = run(idx(), &["c"], &[("zone", "a")]);
        assert_eq!(filter.unwrap(), Status::success());
        let (_, filter) = run(idx(), &["c"], &[("zone", "b")]);
        assert_eq!(filter.unwrap(), unresolvable(&[ERR_REASON_BIND_CONFLICT]));

        let mut selected = claim("c", Some("dyn"), "", json!({}));
        selected["metadata"]["annotations"] = json!({ANN_SELECTED_NODE: "node-b"});
        let idx = index(vec![selected], vec![], vec![topo.clone()], vec![]);
        let (_, filter) = run(idx, &["c"], &[("zone", "a")]);
        assert_eq!(filter.unwrap(), unresolvable(&[ERR_REASON_BIND_CONFLICT]));
    }

    #[test]
    fn reasons_accumulate_in_upstream_order() {
        let idx = index(
            vec![
                claim("bound", Some("sc"), "pv-a", json!({})),
                claim("c", Some("local"), "", json!({})),
            ],
            vec![pv("pv-a", "sc", "1Gi", host_affinity("node-b"))],
            vec![wffc_static()],
            vec![],
        );
        let (_, filter) = run(idx, &["bound", "c"], &[]);
        assert_eq!(
            filter.unwrap(),
            unresolvable(&[ERR_REASON_NODE_CONFLICT, ERR_REASON_BIND_CONFLICT])
        );
    }

    #[test]
    fn ephemeral_claims_must_be_owned_by_the_pod() {
        let p = pod(
            "p",
            &[],
            json!({"volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}}]}),
        );
        let snap = |claims| snapshot(index(claims, vec![], vec![], vec![]), vec![]);
        let mut state = CycleState::new();
        let (_, st) = plugin().pre_filter(&mut state, &p, &snap(vec![]));
        assert_eq!(
            st,
            unresolvable(&[
                "waiting for ephemeral volume controller to create the persistentvolumeclaim \"p-scratch\""
            ])
        );
        let mut foreign = claim("p-scratch", None, "pv-a", json!({}));
        foreign["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Pod", "name": "q", "uid": "other", "controller": true}]);
        let (_, st) = plugin().pre_filter(&mut state, &p, &snap(vec![foreign.clone()]));
        assert_eq!(
            st,
            unresolvable(&[
                "PVC default/p-scratch was not created for pod default/p (pod is not owner)"
            ])
        );
        foreign["metadata"]["ownerReferences"][0]["uid"] = json!(p.uid.clone());
        let (_, st) = plugin().pre_filter(&mut state, &p, &snap(vec![foreign]));
        assert!(st.is_success(), "{st}");
    }

    #[test]
    fn args() {
        assert!(new(None).is_ok());
        assert!(new(Some(&json!({"bindTimeoutSeconds": 30}))).is_ok());
        let err = new(Some(&json!({"bindTimeoutSeconds": -1}))).err().unwrap();
        assert!(err.contains("bindTimeoutSeconds"), "{err}");
        let err = new(Some(&json!({"shape": [{"utilization": 0, "score": 0}]})))
            .err()
            .unwrap();
        assert!(err.contains("shape"), "{err}");
        let err = new(Some(&json!({"bogus": 1}))).err().unwrap();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn score_is_skipped() {
        let mut state = CycleState::new();
        let p = pod("p", &[], json!({}));
        let st = plugin().pre_score(&mut state, &p, &[], &Snapshot::default());
        assert!(st.is_skip());
    }
}
