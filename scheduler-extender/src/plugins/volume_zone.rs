//! VolumeZone: a pod's bound volumes carry zone/region labels, and a node that
//! has topology labels must match every one of them.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;

use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, Plugin, PodInfo, PreFilterPlugin, PreFilterResult,
    Snapshot, Status,
};
use crate::plugins::volume_binding::{
    WAIT_FOR_FIRST_CONSUMER, claim_class, claim_key, claim_not_found, claim_volume_name,
    class_not_found, pod_volumes, volume_not_found,
};

pub const NAME: &str = "VolumeZone";

pub const ERR_REASON_CONFLICT: &str = "node(s) had no available volume zone";

const BETA_ZONE: &str = "failure-domain.beta.kubernetes.io/zone";
const BETA_REGION: &str = "failure-domain.beta.kubernetes.io/region";
const GA_ZONE: &str = "topology.kubernetes.io/zone";
const GA_REGION: &str = "topology.kubernetes.io/region";

/// Upstream's order; it decides which label is reported first, not the result.
const TOPOLOGY_LABELS: [&str; 4] = [BETA_ZONE, BETA_REGION, GA_ZONE, GA_REGION];

/// A PV label value may list several zones joined by this.
const MULTI_ZONE_DELIMITER: &str = "__";

pub struct VolumeZone;

pub fn new(_args: Option<&Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(VolumeZone))
}

/// One topology label of one of the pod's volumes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PvTopology {
    key: &'static str,
    values: BTreeSet<String>,
}

#[derive(Clone, Debug, Default)]
struct ZoneState {
    topologies: Vec<PvTopology>,
}

impl Plugin for VolumeZone {
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

/// A node that still carries the beta label is matched by its GA twin.
fn to_ga_label(key: &str) -> &str {
    match key {
        BETA_REGION => GA_REGION,
        BETA_ZONE => GA_ZONE,
        other => other,
    }
}

/// Upstream's LabelZonesToSet: `a__b` is {a, b}; an empty member is invalid.
fn zones_to_set(value: &str) -> Option<BTreeSet<String>> {
    value
        .split(MULTI_ZONE_DELIMITER)
        .map(|z| {
            let z = z.trim();
            (!z.is_empty()).then(|| z.to_string())
        })
        .collect()
}

fn pod_topologies(pod: &PodInfo, snapshot: &Snapshot) -> Result<Vec<PvTopology>, Status> {
    let index = &snapshot.volumes;
    let mut topologies = vec![];
    for volume in pod_volumes(pod) {
        let Some(claim) = &volume.persistent_volume_claim else {
            continue;
        };
        let name = claim.claim_name.as_str();
        if name.is_empty() {
            return Err(Status::unresolvable("PersistentVolumeClaim had no name"));
        }
        let Some(pvc) = index.claims.get(&claim_key(&pod.namespace, name)) else {
            return Err(Status::unresolvable(claim_not_found(name)));
        };
        let pv_name = claim_volume_name(pvc);
        if pv_name.is_empty() {
            let class = claim_class(pvc);
            if class.is_empty() {
                return Err(Status::unresolvable(
                    "PersistentVolumeClaim had no pv name and storageClass name",
                ));
            }
            let Some(sc) = index.storage_classes.get(class) else {
                return Err(Status::unresolvable(class_not_found(class)));
            };
            match sc.volume_binding_mode.as_deref() {
                None => {
                    return Err(Status::unresolvable(format!(
                        "VolumeBindingMode not set for StorageClass {class:?}"
                    )));
                }
                // Its volume is chosen later, with the node, by VolumeBinding.
                Some(WAIT_FOR_FIRST_CONSUMER) => continue,
                Some(_) => return Err(Status::unresolvable("PersistentVolume had no name")),
            }
        }
        let Some(pv) = index.volumes.get(pv_name) else {
            return Err(Status::unresolvable(volume_not_found(pv_name)));
        };
        let Some(labels) = pv.metadata.labels.as_ref() else {
            continue;
        };
        for key in TOPOLOGY_LABELS {
            // Unparsable values are ignored, as upstream only logs them.
            if let Some(values) = labels.get(key).and_then(|v| zones_to_set(v)) {
                topologies.push(PvTopology { key, values });
            }
        }
    }
    Ok(topologies)
}

impl PreFilterPlugin for VolumeZone {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (PreFilterResult, Status) {
        match pod_topologies(pod, snapshot) {
            Err(status) => (PreFilterResult::default(), status),
            Ok(topologies) if topologies.is_empty() => (PreFilterResult::default(), Status::skip()),
            Ok(topologies) => {
                state.write(NAME, ZoneState { topologies });
                (PreFilterResult::default(), Status::success())
            }
        }
    }
}

impl FilterPlugin for VolumeZone {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if pod_volumes(pod).is_empty() {
            return Status::success();
        }
        // Upstream recomputes when PreFilter did not run; Filter has no
        // snapshot here, so that case is an error.
        let Some(st) = state.read::<ZoneState>(NAME) else {
            return Status::error(format!("reading {NAME:?} from cycleState: not found"));
        };
        // A node without topology labels is in the only zone there is.
        if !TOPOLOGY_LABELS.iter().any(|k| node.labels.contains_key(*k)) {
            return Status::success();
        }
        for topology in &st.topologies {
            let value = node
                .labels
                .get(topology.key)
                .or_else(|| node.labels.get(to_ga_label(topology.key)));
            if !value.is_some_and(|v| topology.values.contains(v)) {
                return Status::unresolvable(ERR_REASON_CONFLICT);
            }
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testing::{node, node_info, pod};
    use crate::framework::{Code, VolumeIndex};
    use crate::plugins::volume_binding::test_util::{claim, class, index, pv, pvc_volume};
    use serde_json::json;
    use std::collections::HashMap;

    fn labelled_pv(name: &str, labels: &[(&str, &str)]) -> Value {
        let mut v = pv(name, "sc", "1Gi", json!({}));
        v["metadata"]["labels"] = json!(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        );
        v
    }

    fn storage() -> VolumeIndex {
        index(
            vec![
                claim("PVC_1", Some("sc"), "Vol_1", json!({})),
                claim("PVC_2", Some("sc"), "Vol_2", json!({})),
                claim("PVC_3", Some("sc"), "Vol_3", json!({})),
                claim("PVC_Stable_1", Some("sc"), "Vol_Stable_1", json!({})),
                claim("PVC_Stable_2", Some("sc"), "Vol_Stable_2", json!({})),
                claim("PVC_Multi", Some("sc"), "Vol_Multi", json!({})),
                claim("PVC_NoLabels", Some("sc"), "Vol_NoLabels", json!({})),
                claim("PVC_WFFC", Some("wffc"), "", json!({})),
                claim("PVC_Immediate", Some("imm"), "", json!({})),
                claim("PVC_NoClass", None, "", json!({})),
                claim("PVC_BadClass", Some("gone"), "", json!({})),
                claim("PVC_LostPV", Some("sc"), "Vol_Gone", json!({})),
            ],
            vec![
                labelled_pv("Vol_1", &[(BETA_ZONE, "us-west1-a")]),
                labelled_pv(
                    "Vol_2",
                    &[(BETA_REGION, "us-west1-b"), ("uselessLabel", "none")],
                ),
                labelled_pv("Vol_3", &[(BETA_REGION, "us-west1-c")]),
                labelled_pv("Vol_Stable_1", &[(GA_ZONE, "us-west1-a")]),
                labelled_pv(
                    "Vol_Stable_2",
                    &[(GA_REGION, "us-west1-b"), ("uselessLabel", "none")],
                ),
                labelled_pv("Vol_Multi", &[(GA_ZONE, "us-west1-a__us-west1-b")]),
                labelled_pv("Vol_NoLabels", &[]),
            ],
            vec![
                class(
                    "wffc",
                    "WaitForFirstConsumer",
                    "kubernetes.io/no-provisioner",
                ),
                class("imm", "Immediate", "kubernetes.io/no-provisioner"),
            ],
            vec![],
        )
    }

    fn run(claims: &[&str], node_labels: &[(&str, &str)]) -> (Status, Option<Status>) {
        let volumes: Vec<Value> = claims.iter().map(|c| pvc_volume(c)).collect();
        let p = pod("p", &[], json!({"volumes": volumes}));
        let n = node_info(node("host1", "1", "1Gi", node_labels, json!({})), &[]);
        let snap = Snapshot::new(vec![Arc::new(n.clone())], HashMap::new(), storage());
        let mut state = CycleState::new();
        let (_, pre) = VolumeZone.pre_filter(&mut state, &p, &snap);
        if !pre.is_success() {
            return (pre, None);
        }
        (pre, Some(VolumeZone.filter(&state, &p, &n)))
    }

    #[test]
    fn zone_matching() {
        let conflict = Status::unresolvable(ERR_REASON_CONFLICT);
        let ok = Status::success();
        type Case<'a> = (&'a str, &'a [&'a str], Vec<(&'a str, &'a str)>, Status);
        let cases: Vec<Case> = vec![
            (
                "beta zone label matched",
                &["PVC_1"],
                vec![(BETA_ZONE, "us-west1-a"), ("uselessLabel", "none")],
                ok.clone(),
            ),
            (
                "beta region label matched",
                &["PVC_2"],
                vec![(BETA_REGION, "us-west1-b"), ("uselessLabel", "none")],
                ok.clone(),
            ),
            (
                "beta region label doesn't match",
                &["PVC_2"],
                vec![(BETA_REGION, "no_us-west1-b")],
                conflict.clone(),
            ),
            (
                "beta zone label doesn't match",
                &["PVC_1"],
                vec![(BETA_ZONE, "no_us-west1-a")],
                conflict.clone(),
            ),
            (
                "zone label matched",
                &["PVC_Stable_1"],
                vec![(GA_ZONE, "us-west1-a")],
                ok.clone(),
            ),
            (
                "region label matched",
                &["PVC_Stable_2"],
                vec![(GA_REGION, "us-west1-b")],
                ok.clone(),
            ),
            (
                "region label doesn't match",
                &["PVC_Stable_2"],
                vec![(GA_REGION, "no_us-west1-b")],
                conflict.clone(),
            ),
            (
                "zone label doesn't match",
                &["PVC_Stable_1"],
                vec![(GA_ZONE, "no_us-west1-a")],
                conflict.clone(),
            ),
            (
                "pv with zone and region, node with only zone",
                &["PVC_Stable_1", "PVC_Stable_2"],
                vec![(GA_ZONE, "us-west1-a")],
                conflict.clone(),
            ),
            (
                "pv with zone, node with beta zone",
                &["PVC_Stable_1"],
                vec![(BETA_ZONE, "us-west1-a")],
                conflict.clone(),
            ),
            (
                "pv with beta zone, node with GA zone",
                &["PVC_1"],
                vec![(GA_ZONE, "us-west1-a")],
                ok.clone(),
            ),
            (
                "multi-zone volume",
                &["PVC_Multi"],
                vec![(GA_ZONE, "us-west1-b")],
                ok.clone(),
            ),
            (
                "multi-zone volume, other zone",
                &["PVC_Multi"],
                vec![(GA_ZONE, "us-west1-c")],
                conflict.clone(),
            ),
            (
                "node without topology labels",
                &["PVC_1"],
                vec![("uselessLabel", "none")],
                ok,
            ),
        ];
        for (name, claims, labels, want) in cases {
            let (pre, filter) = run(claims, &labels);
            assert!(pre.is_success(), "{name}: {pre}");
            assert_eq!(filter, Some(want), "{name}");
        }
    }

    #[test]
    fn skips_without_topologies() {
        for claims in [&[][..], &["PVC_NoLabels"], &["PVC_WFFC"]] {
            let (pre, filter) = run(claims, &[(GA_ZONE, "us-west1-a")]);
            assert_eq!((pre.code, filter), (Code::Skip, None), "{claims:?}");
        }
    }

    #[test]
    fn prefilter_errors() {
        let cases: Vec<(&str, &str)> = vec![
            (
                "PVC_Missing",
                "persistentvolumeclaim \"PVC_Missing\" not found",
            ),
            ("PVC_Immediate", "PersistentVolume had no name"),
            (
                "PVC_NoClass",
                "PersistentVolumeClaim had no pv name and storageClass name",
            ),
            (
                "PVC_BadClass",
                "storageclass.storage.k8s.io \"gone\" not found",
            ),
            ("PVC_LostPV", "persistentvolume \"Vol_Gone\" not found"),
        ];
        for (claim, want) in cases {
            let (pre, _) = run(&[claim], &[]);
            assert_eq!(pre, Status::unresolvable(want), "{claim}");
        }
    }

    #[test]
    fn zone_sets() {
        assert_eq!(
            zones_to_set(" a__b "),
            Some(["a".to_string(), "b".to_string()].into())
        );
        assert_eq!(zones_to_set("a____b"), None);
    }
}
