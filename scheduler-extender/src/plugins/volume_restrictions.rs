//! VolumeRestrictions: a node cannot take a pod whose in-tree disk (GCE PD,
//! AWS EBS, Ceph RBD, iSCSI) is already mounted there in a conflicting way,
//! and a ReadWriteOncePod claim can be used by one pod in the whole cluster.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Volume;
use serde_json::Value;

use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, Plugin, PodInfo, PreFilterPlugin, PreFilterResult,
    Snapshot, Status,
};
use crate::plugins::volume_binding::{claim_key, claim_not_found, pod_volumes};

pub const NAME: &str = "VolumeRestrictions";

pub const ERR_REASON_DISK_CONFLICT: &str = "node(s) had no available disk";
pub const ERR_REASON_RWOP_CONFLICT: &str = "node(s) unavailable due to PersistentVolumeClaim with ReadWriteOncePod access mode already in-use by another pod";

const READ_WRITE_ONCE_POD: &str = "ReadWriteOncePod";

pub struct VolumeRestrictions;

pub fn new(_args: Option<&Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(VolumeRestrictions))
}

/// What PreFilter learnt about ReadWriteOncePod claims, updated when
/// preemption or nominated pods add and remove pods.
#[derive(Clone, Debug, Default)]
struct RestrictionsState {
    /// Names (in the pod's namespace) of the pod's ReadWriteOncePod claims.
    rwop_claims: BTreeSet<String>,
    /// How many pod references to those claims exist among placed pods.
    conflicting_refs: i64,
}

impl RestrictionsState {
    fn refs_of(&self, namespace: &str, other: &PodInfo) -> i64 {
        // Upstream compares only claim names; a claim name is only the same
        // claim within one namespace, so the namespace is checked too.
        if other.namespace != namespace {
            return 0;
        }
        other
            .pvc_names()
            .iter()
            .filter(|c| self.rwop_claims.contains(**c))
            .count() as i64
    }
}

impl Plugin for VolumeRestrictions {
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

fn needs_restrictions_check(v: &Volume) -> bool {
    v.gce_persistent_disk.is_some()
        || v.aws_elastic_block_store.is_some()
        || v.rbd.is_some()
        || v.iscsi.is_some()
}

/// Whether `volume` of the incoming pod clashes with any volume of `existing`.
fn is_volume_conflict(volume: &Volume, existing: &PodInfo) -> bool {
    let read_only = |r: Option<bool>| r.unwrap_or(false);
    pod_volumes(existing).iter().any(|ev| {
        // The same PD may be mounted many times only if every mount is read-only.
        if let (Some(d), Some(e)) = (&volume.gce_persistent_disk, &ev.gce_persistent_disk)
            && d.pd_name == e.pd_name
            && !(read_only(d.read_only) && read_only(e.read_only))
        {
            return true;
        }
        // EBS forbids any second mount of a volume ID.
        if let (Some(d), Some(e)) = (&volume.aws_elastic_block_store, &ev.aws_elastic_block_store)
            && d.volume_id == e.volume_id
        {
            return true;
        }
        if let (Some(d), Some(e)) = (&volume.iscsi, &ev.iscsi)
            && d.iqn == e.iqn
            && !(read_only(d.read_only) && read_only(e.read_only))
        {
            return true;
        }
        // An RBD image is identified by any shared monitor plus pool and image;
        // the API defaults an unset pool to "rbd".
        if let (Some(d), Some(e)) = (&volume.rbd, &ev.rbd) {
            let pool = |p: &Option<String>| p.clone().unwrap_or_else(|| "rbd".into());
            if d.monitors.iter().any(|m| e.monitors.contains(m))
                && pool(&d.pool) == pool(&e.pool)
                && d.image == e.image
                && !(read_only(d.read_only) && read_only(e.read_only))
            {
                return true;
            }
        }
        false
    })
}

/// Whether one of the pod's disk volumes clashes with a volume of
/// `existing` (its queueing hint asks this of a deleted pod).
pub(crate) fn conflicts_with(pod: &PodInfo, existing: &PodInfo) -> bool {
    pod_volumes(pod)
        .iter()
        .filter(|v| needs_restrictions_check(v))
        .any(|v| is_volume_conflict(v, existing))
}

fn satisfies_volume_conflicts(pod: &PodInfo, node: &NodeInfo) -> bool {
    pod_volumes(pod)
        .iter()
        .filter(|v| needs_restrictions_check(v))
        .all(|v| {
            !node
                .pods
                .iter()
                .any(|existing| is_volume_conflict(v, existing))
        })
}

impl PreFilterPlugin for VolumeRestrictions {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (PreFilterResult, Status) {
        let needs_check = pod_volumes(pod).iter().any(needs_restrictions_check);
        let mut rwop_claims = BTreeSet::new();
        for claim in pod.pvc_names() {
            let Some(pvc) = snapshot
                .volumes
                .claims
                .get(&claim_key(&pod.namespace, claim))
            else {
                return (
                    PreFilterResult::default(),
                    Status::unresolvable(claim_not_found(claim)),
                );
            };
            let modes = pvc
                .spec
                .as_ref()
                .and_then(|s| s.access_modes.as_deref())
                .unwrap_or_default();
            if modes.iter().any(|m| m == READ_WRITE_ONCE_POD) {
                rwop_claims.insert(claim.to_string());
            }
        }
        // A claim counts once however many placed pods use it: at most one
        // pod can legitimately hold a ReadWriteOncePod claim.
        let conflicting_refs = rwop_claims
            .iter()
            .filter(|c| {
                let key = claim_key(&pod.namespace, c);
                snapshot.nodes.iter().any(|n| n.pvc_refs.contains_key(&key))
            })
            .count() as i64;
        if !needs_check && conflicting_refs == 0 {
            return (PreFilterResult::default(), Status::skip());
        }
        state.write(
            NAME,
            RestrictionsState {
                rwop_claims,
                conflicting_refs,
            },
        );
        (PreFilterResult::default(), Status::success())
    }

    fn has_extensions(&self) -> bool {
        true
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        to_add: &Arc<PodInfo>,
        _node: &NodeInfo,
        _snapshot: &Snapshot,
    ) -> Status {
        let Some(st) = state.read_mut::<RestrictionsState>(NAME) else {
            return Status::error(format!("cannot read {NAME:?} from cycleState"));
        };
        st.conflicting_refs += st.refs_of(&pod.namespace, to_add);
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        to_remove: &Arc<PodInfo>,
        _node: &NodeInfo,
        _snapshot: &Snapshot,
    ) -> Status {
        let Some(st) = state.read_mut::<RestrictionsState>(NAME) else {
            return Status::error(format!("cannot read {NAME:?} from cycleState"));
        };
        st.conflicting_refs -= st.refs_of(&pod.namespace, to_remove);
        Status::success()
    }
}

impl FilterPlugin for VolumeRestrictions {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if !satisfies_volume_conflicts(pod, node) {
            return Status::unschedulable(ERR_REASON_DISK_CONFLICT);
        }
        let Some(st) = state.read::<RestrictionsState>(NAME) else {
            return Status::error(format!("cannot read {NAME:?} from cycleState"));
        };
        // Unschedulable, not unresolvable: preempting the holder frees the claim.
        if st.conflicting_refs > 0 {
            return Status::unschedulable(ERR_REASON_RWOP_CONFLICT);
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testing::{node, node_info, pod};
    use crate::framework::{Code, VolumeIndex};
    use crate::plugins::volume_binding::test_util::{claim, index, pvc_volume};
    use serde_json::json;
    use std::collections::HashMap;

    fn snapshot(index: VolumeIndex, nodes: Vec<NodeInfo>) -> Snapshot {
        Snapshot::new(
            nodes.into_iter().map(Arc::new).collect(),
            HashMap::new(),
            index,
        )
    }

    fn pod_with(name: &str, volumes: Vec<Value>) -> Arc<PodInfo> {
        pod(name, &[], json!({"volumes": volumes}))
    }

    /// Runs PreFilter and, when it succeeds, Filter on `node`.
    fn run(p: &PodInfo, n: &NodeInfo, snap: &Snapshot) -> (Status, Option<Status>) {
        let mut state = CycleState::new();
        let (_, pre) = VolumeRestrictions.pre_filter(&mut state, p, snap);
        if !pre.is_success() {
            return (pre, None);
        }
        (pre, Some(VolumeRestrictions.filter(&state, p, n)))
    }

    fn disk_cases(same: Value, other: Value) {
        let existing = pod_with("existing", vec![same.clone()]);
        let busy = node_info(node("n", "1", "1Gi", &[], json!({})), &[existing]);
        let empty = node_info(node("n", "1", "1Gi", &[], json!({})), &[]);
        let snap = snapshot(VolumeIndex::default(), vec![]);
        let conflict = Status::unschedulable(ERR_REASON_DISK_CONFLICT);

        let (pre, f) = run(&pod_with("p", vec![]), &empty, &snap);
        assert_eq!((pre.code, f), (Code::Skip, None), "nothing");
        let (pre, f) = run(&pod_with("p", vec![]), &busy, &snap);
        assert_eq!((pre.code, f), (Code::Skip, None), "one state");
        let (pre, f) = run(&pod_with("p", vec![same]), &busy, &snap);
        assert!(pre.is_success());
        assert_eq!(f, Some(conflict), "same state");
        let (_, f) = run(&pod_with("p", vec![other]), &busy, &snap);
        assert_eq!(f, Some(Status::success()), "different state");
    }

    #[test]
    fn gce_disk_conflicts() {
        disk_cases(
            json!({"name": "v", "gcePersistentDisk": {"pdName": "foo"}}),
            json!({"name": "v", "gcePersistentDisk": {"pdName": "bar"}}),
        );
    }

    #[test]
    fn aws_disk_conflicts() {
        disk_cases(
            json!({"name": "v", "awsElasticBlockStore": {"volumeID": "foo"}}),
            json!({"name": "v", "awsElasticBlockStore": {"volumeID": "bar"}}),
        );
    }

    #[test]
    fn rbd_disk_conflicts() {
        disk_cases(
            json!({"name": "v", "rbd": {"monitors": ["a", "b"], "pool": "foo", "image": "bar", "fsType": "ext4"}}),
            json!({"name": "v", "rbd": {"monitors": ["c", "d"], "pool": "foo", "image": "bar", "fsType": "ext4"}}),
        );
    }

    #[test]
    fn iscsi_disk_conflicts() {
        disk_cases(
            json!({"name": "v", "iscsi": {"targetPortal": "127.0.0.1:3260", "iqn": "iqn.2016-12.server:storage.target01", "lun": 0}}),
            json!({"name": "v", "iscsi": {"targetPortal": "127.0.0.1:3260", "iqn": "iqn.2017-12.server:storage.target01", "lun": 0}}),
        );
    }

    #[test]
    fn read_only_mounts_share_gce_but_not_ebs() {
        let gce = json!({"name": "v", "gcePersistentDisk": {"pdName": "foo", "readOnly": true}});
        let existing = pod_with("existing", vec![gce.clone()]);
        let n = node_info(node("n", "1", "1Gi", &[], json!({})), &[existing]);
        let snap = snapshot(VolumeIndex::default(), vec![]);
        assert_eq!(
            run(&pod_with("p", vec![gce]), &n, &snap).1,
            Some(Status::success())
        );

        let ebs =
            json!({"name": "v", "awsElasticBlockStore": {"volumeID": "foo", "readOnly": true}});
        let existing = pod_with("existing", vec![ebs.clone()]);
        let n = node_info(node("n", "1", "1Gi", &[], json!({})), &[existing]);
        assert_eq!(
            run(&pod_with("p", vec![ebs]), &n, &snap).1,
            Some(Status::unschedulable(ERR_REASON_DISK_CONFLICT))
        );
    }

    fn rwop(name: &str) -> Value {
        claim(
            name,
            Some("sc"),
            "pv",
            json!({"accessModes": ["ReadWriteOncePod"]}),
        )
    }

    #[test]
    fn access_mode_conflicts() {
        let claims = || {
            index(
                vec![
                    rwop("claim-with-rwop-1"),
                    rwop("claim-with-rwop-2"),
                    claim(
                        "claim-with-rwx",
                        Some("sc"),
                        "pv",
                        json!({"accessModes": ["ReadWriteMany"]}),
                    ),
                ],
                vec![],
                vec![],
                vec![],
            )
        };
        let with_one = pod_with("pod-with-one-pvc", vec![pvc_volume("claim-with-rwop-1")]);
        let with_two = pod_with(
            "pod-with-two-pvcs",
            vec![
                pvc_volume("claim-with-rwop-1"),
                pvc_volume("claim-with-rwop-2"),
            ],
        );
        let with_rwx = pod_with("pod-with-rwx", vec![pvc_volume("claim-with-rwx")]);
        let conflict = Status::unschedulable(ERR_REASON_RWOP_CONFLICT);

        // Failed to get the claim.
        let n = node_info(node("node-1", "1", "1Gi", &[], json!({})), &[]);
        let snap = snapshot(VolumeIndex::default(), vec![n.clone()]);
        let (pre, _) = run(&with_one, &n, &snap);
        assert_eq!(
            pre,
            Status::unresolvable("persistentvolumeclaim \"claim-with-rwop-1\" not found")
        );

        // No conflict: only a ReadWriteMany claim is in use.
        let n = node_info(
            node("node-1", "1", "1Gi", &[], json!({})),
            std::slice::from_ref(&with_rwx),
        );
        let snap = snapshot(claims(), vec![n.clone()]);
        assert_eq!(run(&with_one, &n, &snap).0.code, Code::Skip);

        // One conflict, found on another node too: the claim is cluster-wide.
        let holder = node_info(
            node("node-1", "1", "1Gi", &[], json!({})),
            &[with_one.clone(), with_rwx],
        );
        let other = node_info(node("node-2", "1", "1Gi", &[], json!({})), &[]);
        let snap = snapshot(claims(), vec![holder.clone(), other.clone()]);
        let incoming = pod_with(
            "pod-with-one-conflict",
            vec![pvc_volume("claim-with-rwop-1")],
        );
        assert_eq!(run(&incoming, &holder, &snap).1, Some(conflict.clone()));
        assert_eq!(run(&incoming, &other, &snap).1, Some(conflict.clone()));

        // Two conflicts.
        let holder = node_info(
            node("node-1", "1", "1Gi", &[], json!({})),
            std::slice::from_ref(&with_two),
        );
        let snap = snapshot(claims(), vec![holder.clone()]);
        let incoming = pod_with(
            "pod-with-two-conflicts",
            vec![
                pvc_volume("claim-with-rwop-1"),
                pvc_volume("claim-with-rwop-2"),
            ],
        );
        assert_eq!(run(&incoming, &holder, &snap).1, Some(conflict));
    }

    #[test]
    fn removing_the_holder_resolves_the_conflict() {
        let holder_pod = pod_with("holder", vec![pvc_volume("c")]);
        let n = node_info(
            node("node-1", "1", "1Gi", &[], json!({})),
            std::slice::from_ref(&holder_pod),
        );
        let snap = snapshot(
            index(vec![rwop("c")], vec![], vec![], vec![]),
            vec![n.clone()],
        );
        let incoming = pod_with("incoming", vec![pvc_volume("c")]);
        let mut state = CycleState::new();
        let (_, pre) = VolumeRestrictions.pre_filter(&mut state, &incoming, &snap);
        assert!(pre.is_success());
        assert_eq!(
            VolumeRestrictions.filter(&state, &incoming, &n).code,
            Code::Unschedulable
        );
        let mut dry = state.clone();
        VolumeRestrictions.remove_pod(&mut dry, &incoming, &holder_pod, &n, &snap);
        assert!(VolumeRestrictions.filter(&dry, &incoming, &n).is_success());
        VolumeRestrictions.add_pod(&mut dry, &incoming, &holder_pod, &n, &snap);
        assert_eq!(
            VolumeRestrictions.filter(&dry, &incoming, &n).code,
            Code::Unschedulable
        );
        // A same-named claim in another namespace is a different claim.
        let stranger = crate::framework::testing::pod_in(
            "other",
            "s",
            &[],
            json!({"volumes": [pvc_volume("c")]}),
        );
        VolumeRestrictions.remove_pod(&mut state, &incoming, &stranger, &n, &snap);
        assert_eq!(
            VolumeRestrictions.filter(&state, &incoming, &n).code,
            Code::Unschedulable
        );
    }
}
