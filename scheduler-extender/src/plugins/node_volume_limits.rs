//! NodeVolumeLimits (upstream's CSILimits): the distinct CSI volumes used on a
//! node, per driver — by its pods and by VolumeAttachments still on it — may
//! not exceed what the node's CSINode says the driver can attach
//! (`spec.drivers[].allocatable.count`); and a driver whose CSIDriver sets
//! `preventPodSchedulingIfMissing` must be installed on the node (listed in
//! its CSINode), upstream's VolumeLimitScaling (beta, on, in v1.37).
//!
//! Not modelled: in-tree volumes (inline or PV) that upstream counts after
//! translating them to their CSI driver when the node has migrated that
//! plugin.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::CSINode;
use serde_json::Value;

use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, Plugin, PodInfo, PreFilterPlugin, PreFilterResult,
    Snapshot, Status, VolumeIndex,
};
use crate::plugins::volume_binding::{
    check_ephemeral_owner, claim_class, claim_key, claim_not_found, claim_of, claim_volume_name,
    pod_volumes,
};

pub const NAME: &str = "NodeVolumeLimits";

pub const ERR_REASON_MAX_VOLUME_COUNT_EXCEEDED: &str = "node(s) exceed max volume count";

/// In-tree provisioners whose volumes count only once translated to their CSI
/// driver, which needs CSI migration data this scheduler does not track.
const MIGRATABLE_IN_TREE_PROVISIONERS: [&str; 7] = [
    "kubernetes.io/aws-ebs",
    "kubernetes.io/gce-pd",
    "kubernetes.io/azure-disk",
    "kubernetes.io/azure-file",
    "kubernetes.io/cinder",
    "kubernetes.io/vsphere-volume",
    "kubernetes.io/portworx-volume",
];

pub struct CsiLimits {
    /// Makes the made-up handles of not-yet-bound claims unlike any real one.
    random_volume_id_prefix: String,
}

pub fn new(_args: Option<&Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(CsiLimits {
        random_volume_id_prefix: format!("{:016x}", fastrand::u64(..)),
    }))
}

/// The storage objects Filter needs, since it sees no snapshot.
#[derive(Clone)]
struct LimitsState {
    volumes: Arc<VolumeIndex>,
}

impl Plugin for CsiLimits {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

/// `driver/handle` of each counted volume → its driver.
type AttachableVolumes = HashMap<String, String>;

impl CsiLimits {
    /// Upstream's filterAttachableVolumes. For the incoming pod a missing
    /// claim is fatal (NotFound makes it unresolvable); for placed pods such
    /// volumes are simply not counted.
    fn attachable_volumes(
        &self,
        pod: &PodInfo,
        index: &VolumeIndex,
        new_pod: bool,
        result: &mut AttachableVolumes,
    ) -> Result<(), Status> {
        for volume in pod_volumes(pod) {
            // Inline in-tree volumes would count only once migrated to CSI
            // (see the module note).
            let Some(claim) = claim_of(pod, volume) else {
                continue;
            };
            if claim.name.is_empty() {
                return Err(Status::error("PersistentVolumeClaim had no name"));
            }
            let Some(pvc) = index.claims.get(&claim_key(&pod.namespace, &claim.name)) else {
                if new_pod {
                    return Err(Status::unresolvable(format!(
                        "looking up PVC {}/{}: {}",
                        pod.namespace,
                        claim.name,
                        claim_not_found(&claim.name)
                    )));
                }
                continue;
            };
            if claim.ephemeral {
                check_ephemeral_owner(pod, pvc).map_err(Status::error)?;
            }
            if let Some((driver, handle)) = self.csi_driver_info(pvc, index) {
                result.insert(format!("{driver}/{handle}"), driver);
            }
        }
        Ok(())
    }

    /// The CSI driver and volume handle behind a claim: the bound PV's, or for
    /// a claim not (visibly) bound yet, its class's provisioner with a handle
    /// unique to the claim.
    fn csi_driver_info(
        &self,
        pvc: &PersistentVolumeClaim,
        index: &VolumeIndex,
    ) -> Option<(String, String)> {
        let pv_name = claim_volume_name(pvc);
        let pv = (!pv_name.is_empty())
            .then(|| index.volumes.get(pv_name))
            .flatten();
        let Some(pv) = pv else {
            return self.csi_driver_info_from_class(pvc, index);
        };
        let csi = pv.spec.as_ref().and_then(|s| s.csi.as_ref())?;
        let found = !csi.driver.is_empty() && !csi.volume_handle.is_empty();
        found.then(|| (csi.driver.clone(), csi.volume_handle.clone()))
    }

    fn csi_driver_info_from_class(
        &self,
        pvc: &PersistentVolumeClaim,
        index: &VolumeIndex,
    ) -> Option<(String, String)> {
        // Without a class the claim binds immediately, so it is bound before
        // scheduling and safe not to count.
        let class = claim_class(pvc);
        if class.is_empty() {
            return None;
        }
        let provisioner = &index.storage_classes.get(class)?.provisioner;
        if provisioner.is_empty() || MIGRATABLE_IN_TREE_PROVISIONERS.contains(&provisioner.as_str())
        {
            return None;
        }
        let handle = format!(
            "{}-{}/{}",
            self.random_volume_id_prefix,
            pvc.metadata.namespace.as_deref().unwrap_or_default(),
            pvc.metadata.name.as_deref().unwrap_or_default()
        );
        Some((provisioner.clone(), handle))
    }
}

/// Whether `driver` may be used on the node: drivers without a CSIDriver
/// object, or without `preventPodSchedulingIfMissing`, always may (they might
/// not be CSI drivers at all); the others only where the CSINode lists them.
fn driver_installed(index: &VolumeIndex, driver: &str, csi_node: Option<&Arc<CSINode>>) -> bool {
    let opted_in = index
        .csi_drivers
        .get(driver)
        .and_then(|d| d.spec.prevent_pod_scheduling_if_missing)
        .unwrap_or(false);
    !opted_in || csi_node.is_some_and(|n| n.spec.drivers.iter().any(|d| d.name == driver))
}

/// Driver → attachable count, from the node's CSINode.
fn volume_limits(csi_node: Option<&Arc<CSINode>>) -> HashMap<&str, i64> {
    csi_node
        .map(|n| n.spec.drivers.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|d| {
            let count = d.allocatable.as_ref()?.count?;
            Some((d.name.as_str(), i64::from(count)))
        })
        .collect()
}

impl PreFilterPlugin for CsiLimits {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (PreFilterResult, Status) {
        if !pod_volumes(pod).iter().any(|v| claim_of(pod, v).is_some()) {
            return (PreFilterResult::default(), Status::skip());
        }
        state.write(
            NAME,
            LimitsState {
                volumes: snapshot.volumes.clone(),
            },
        );
        (PreFilterResult::default(), Status::success())
    }
}

impl FilterPlugin for CsiLimits {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if pod_volumes(pod).is_empty() {
            return Status::success();
        }
        let Some(st) = state.read::<LimitsState>(NAME) else {
            return Status::error(format!("reading {NAME:?} from cycleState: not found"));
        };
        let index = &st.volumes;
        let mut new_volumes = AttachableVolumes::new();
        if let Err(status) = self.attachable_volumes(pod, index, true, &mut new_volumes) {
            return status;
        }
        if new_volumes.is_empty() {
            return Status::success();
        }
        let csi_node = index.csi_nodes.get(&node.name);
        for driver in new_volumes.values() {
            if !driver_installed(index, driver, csi_node) {
                return Status::unschedulable(format!(
                    "{driver} CSI driver is not installed on the node"
                ));
            }
        }
        let limits = volume_limits(csi_node);
        if limits.is_empty() {
            return Status::success();
        }
        let mut attached = AttachableVolumes::new();
        for existing in &node.pods {
            if let Err(status) = self.attachable_volumes(existing, index, false, &mut attached) {
                return status;
            }
        }
        let mut attached_count: HashMap<&str, i64> = HashMap::new();
        for (unique, driver) in &attached {
            // A volume already on the node costs nothing more.
            new_volumes.remove(unique);
            *attached_count.entry(driver.as_str()).or_default() += 1;
        }
        // Attachments not already counted through a pod on the node.
        for (attacher, pv_name) in index
            .attachments
            .get(&node.name)
            .into_iter()
            .flatten()
            .map(|(_, v)| v)
        {
            let Some(csi) = index
                .volumes
                .get(pv_name)
                .and_then(|pv| pv.spec.as_ref()?.csi.as_ref())
            else {
                continue;
            };
            if !attached.contains_key(&format!("{attacher}/{}", csi.volume_handle)) {
                *attached_count.entry(attacher.as_str()).or_default() += 1;
            }
        }
        let mut new_count: HashMap<&str, i64> = HashMap::new();
        for driver in new_volumes.values() {
            *new_count.entry(driver.as_str()).or_default() += 1;
        }
        for (driver, count) in new_count {
            if let Some(limit) = limits.get(driver)
                && attached_count.get(driver).copied().unwrap_or(0) + count > *limit
            {
                return Status::unschedulable(ERR_REASON_MAX_VOLUME_COUNT_EXCEEDED);
            }
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::framework::testing::{node, node_info, pod};
    use crate::plugins::volume_binding::test_util::{claim, class, index, pv, pvc_volume};
    use serde_json::json;

    const EBS: &str = "ebs.csi.aws.com";
    const GCE: &str = "pd.csi.storage.gke.io";

    fn plugin() -> CsiLimits {
        CsiLimits {
            random_volume_id_prefix: "rand".into(),
        }
    }

    fn csi_pv(name: &str, driver: &str, handle: &str) -> Value {
        let mut v = pv(
            name,
            "",
            "1Gi",
            json!({"csi": {"driver": driver, "volumeHandle": handle}}),
        );
        v["spec"].as_object_mut().unwrap().remove("local");
        v
    }

    fn csi_node(drivers: &[(&str, Option<i32>)]) -> Value {
        let drivers: Vec<Value> = drivers
            .iter()
            .map(|(d, c)| {
                let mut v = json!({"name": d, "nodeID": "n"});
                if let Some(c) = c {
                    v["allocatable"] = json!({"count": c});
                }
                v
            })
            .collect();
        json!({"metadata": {"name": "node-1"}, "spec": {"drivers": drivers}})
    }

    /// Claims `<driver>-<i>` bound to PVs with handle `vol-<i>` of each driver,
    /// plus an unbound claim of a CSI class and one of an in-tree class.
    fn storage(limits: &[(&str, Option<i32>)]) -> VolumeIndex {
        let mut claims = vec![];
        let mut pvs = vec![];
        for driver in [EBS, GCE] {
            for i in 0..4 {
                let name = format!("{driver}-{i}");
                claims.push(claim(&name, None, &format!("pv-{name}"), json!({})));
                pvs.push(csi_pv(&format!("pv-{name}"), driver, &format!("vol-{i}")));
            }
        }
        claims.push(claim("unbound-csi", Some("csi-sc"), "", json!({})));
        claims.push(claim("unbound-intree", Some("intree-sc"), "", json!({})));
        claims.push(claim("bound-non-csi", None, "pv-local", json!({})));
        pvs.push(pv("pv-local", "", "1Gi", json!({})));
        index(
            claims,
            pvs,
            vec![
                class("csi-sc", "WaitForFirstConsumer", EBS),
                class("intree-sc", "WaitForFirstConsumer", "kubernetes.io/aws-ebs"),
            ],
            vec![csi_node(limits)],
        )
    }

    fn pod_using(name: &str, claims: &[&str]) -> Arc<PodInfo> {
        let volumes: Vec<Value> = claims.iter().map(|c| pvc_volume(c)).collect();
        pod(name, &[], json!({"volumes": volumes}))
    }

    fn run(index: VolumeIndex, new: &[&str], existing: &[&[&str]]) -> (Status, Option<Status>) {
        let placed: Vec<Arc<PodInfo>> = existing
            .iter()
            .enumerate()
            .map(|(i, c)| pod_using(&format!("existing-{i}"), c))
            .collect();
        let n = node_info(node("node-1", "1", "1Gi", &[], json!({})), &placed);
        let snap = Snapshot::new(vec![Arc::new(n.clone())], HashMap::new(), index);
        let p = pod_using("new", new);
        let mut state = CycleState::new();
        let (_, pre) = plugin().pre_filter(&mut state, &p, &snap);
        if !pre.is_success() {
            return (pre, None);
        }
        (pre, Some(plugin().filter(&state, &p, &n)))
    }

    fn ebs(i: usize) -> String {
        format!("{EBS}-{i}")
    }

    fn csi_driver(
        name: &str,
        prevent: Option<bool>,
    ) -> Arc<k8s_openapi::api::storage::v1::CSIDriver> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"preventPodSchedulingIfMissing": prevent},
            }))
            .unwrap(),
        )
    }

    fn filter_status(index: VolumeIndex, new: &[&str], existing: &[&[&str]]) -> Status {
        run(index, new, existing).1.unwrap()
    }

    #[test]
    fn a_driver_that_opts_in_must_be_installed_on_the_node() {
        let missing = format!("{EBS} CSI driver is not installed on the node");
        for (prevent, node_drivers, fits) in [
            (Some(true), vec![(GCE, None)], false),
            (Some(true), vec![(EBS, None)], true),
            (Some(false), vec![(GCE, None)], true),
            (None, vec![(GCE, None)], true),
        ] {
            let mut index = storage(&node_drivers);
            index
                .csi_drivers
                .insert(EBS.into(), csi_driver(EBS, prevent));
            let status = filter_status(index, &[&ebs(0)], &[]);
            if fits {
                assert!(
                    status.is_success(),
                    "{prevent:?} {node_drivers:?}: {status:?}"
                );
            } else {
                assert_eq!(status.code, Code::Unschedulable);
                assert_eq!(status.message(), missing);
            }
        }
        // No CSINode at all: not installed.
        let mut index = storage(&[]);
        index.csi_nodes.clear();
        index
            .csi_drivers
            .insert(EBS.into(), csi_driver(EBS, Some(true)));
        assert_eq!(filter_status(index, &[&ebs(0)], &[]).message(), missing);
        // A driver with no CSIDriver object may not be CSI at all: allowed.
        assert!(filter_status(storage(&[(GCE, None)]), &[&ebs(0)], &[]).is_success());
    }

    #[test]
    fn volume_attachments_on_the_node_count_once() {
        let attach = |index: &mut VolumeIndex, va: &str, pv: &str| {
            index
                .attachments
                .entry("node-1".into())
                .or_default()
                .insert(va.into(), (EBS.into(), pv.into()));
        };
        // Limit 2: one attachment left behind by a pod that is gone, plus
        // two new volumes, is one too many.
        let mut index = storage(&[(EBS, Some(2))]);
        attach(&mut index, "va-0", &format!("pv-{}", ebs(0)));
        let status = filter_status(index, &[&ebs(1), &ebs(2)], &[]);
        assert_eq!(status.message(), ERR_REASON_MAX_VOLUME_COUNT_EXCEEDED);
        // The attachment of a volume a placed pod uses is that pod's volume.
        let mut index = storage(&[(EBS, Some(2))]);
        attach(&mut index, "va-0", &format!("pv-{}", ebs(0)));
        assert!(filter_status(index, &[&ebs(1)], &[&[&ebs(0)]]).is_success());
        // The new pod's own volume, already attached, costs nothing more...
        // but still counts as attached: 1 attached + 1 new of 2 fits.
        let mut index = storage(&[(EBS, Some(2))]);
        attach(&mut index, "va-0", &format!("pv-{}", ebs(0)));
        assert!(filter_status(index, &[&ebs(1)], &[]).is_success());
        // An attachment whose PV is not CSI (or unknown) counts for nothing.
        let mut index = storage(&[(EBS, Some(1))]);
        attach(&mut index, "va-x", "pv-local");
        attach(&mut index, "va-y", "pv-unknown");
        assert!(filter_status(index, &[&ebs(1)], &[]).is_success());
    }

    #[test]
    fn limits() {
        let exceeded = Status::unschedulable(ERR_REASON_MAX_VOLUME_COUNT_EXCEEDED);
        let ok = Status::success();
        let (e0, e1, e2, e3) = (ebs(0), ebs(1), ebs(2), ebs(3));
        let g0 = format!("{GCE}-0");
        type Case<'a> = (
            &'a str,
            Vec<&'a str>,
            Vec<Vec<&'a str>>,
            Vec<(&'a str, Option<i32>)>,
            Status,
        );
        let cases: Vec<Case> = vec![
            (
                "fits",
                vec![&e0, &e1],
                vec![vec![&e2]],
                vec![(EBS, Some(4))],
                ok.clone(),
            ),
            (
                "exceeds",
                vec![&e0, &e1],
                vec![vec![&e2, &e3]],
                vec![(EBS, Some(3))],
                exceeded.clone(),
            ),
            (
                "at the limit",
                vec![&e0],
                vec![vec![&e2, &e3]],
                vec![(EBS, Some(3))],
                ok.clone(),
            ),
            (
                "shared volume counts once",
                vec![&e0, &e2],
                vec![vec![&e2, &e3]],
                vec![(EBS, Some(3))],
                ok.clone(),
            ),
            (
                "same volume in two placed pods",
                vec![&e0],
                vec![vec![&e2], vec![&e2]],
                vec![(EBS, Some(2))],
                ok.clone(),
            ),
            (
                "other driver's limit",
                vec![&e0, &e1],
                vec![vec![&e2, &e3]],
                vec![(GCE, Some(1))],
                ok.clone(),
            ),
            (
                "per driver",
                vec![&g0],
                vec![vec![&e1, &e2, &e3]],
                vec![(EBS, Some(3)), (GCE, Some(1))],
                ok.clone(),
            ),
            (
                "no count",
                vec![&e0, &e1],
                vec![vec![&e2, &e3]],
                vec![(EBS, None)],
                ok.clone(),
            ),
            (
                "non-CSI volume not counted",
                vec!["bound-non-csi"],
                vec![vec![&e2]],
                vec![(EBS, Some(1))],
                ok.clone(),
            ),
            (
                "unbound claim counts via its class",
                vec!["unbound-csi"],
                vec![vec![&e2]],
                vec![(EBS, Some(1))],
                exceeded.clone(),
            ),
            (
                "unbound in-tree class not counted",
                vec!["unbound-intree"],
                vec![vec![&e2]],
                vec![(EBS, Some(1))],
                ok.clone(),
            ),
            (
                "placed pod's missing claim ignored",
                vec![&e0],
                vec![vec!["gone", &e2]],
                vec![(EBS, Some(2))],
                ok,
            ),
        ];
        for (name, new, existing, limits, want) in cases {
            let existing: Vec<&[&str]> = existing.iter().map(Vec::as_slice).collect();
            let (pre, filter) = run(storage(&limits), &new, &existing);
            assert!(pre.is_success(), "{name}: {pre}");
            assert_eq!(filter, Some(want), "{name}");
        }
    }

    #[test]
    fn node_without_csinode_has_no_limits() {
        let mut idx = storage(&[]);
        idx.csi_nodes.clear();
        let e = [ebs(0), ebs(1)];
        let (_, filter) = run(idx, &[&e[0]], &[&[&e[1]]]);
        assert_eq!(filter, Some(Status::success()));
    }

    #[test]
    fn skips_pods_without_claims() {
        let (pre, filter) = run(storage(&[(EBS, Some(0))]), &[], &[]);
        assert_eq!((pre.code, filter), (Code::Skip, None));
    }

    #[test]
    fn missing_claim_of_incoming_pod_is_unresolvable() {
        let (_, filter) = run(storage(&[(EBS, Some(1))]), &["gone"], &[]);
        assert_eq!(
            filter,
            Some(Status::unresolvable(
                "looking up PVC default/gone: persistentvolumeclaim \"gone\" not found"
            ))
        );
    }
}
