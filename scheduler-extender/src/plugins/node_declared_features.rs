//! NodeDeclaredFeatures (GA in v1.37, in the default profile): a pod that
//! needs a node feature goes only to nodes listing it in
//! `status.declaredFeatures`. What a pod needs is inferred from its spec as
//! component-helpers' nodedeclaredfeatures registry does for scheduling; of
//! the features registered in v1.37 only these three can be required by a
//! pending pod (the others — DRANodeAllocatableResources,
//! DRAOptionalNodeOperations, ExtendWebSocketsToKubelet and the in-place
//! resize ones — infer nothing at scheduling time).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PodSpec, VolumeMount};
use serde_json::Value;

use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, Plugin, PodInfo, PreFilterPlugin, PreFilterResult,
    Snapshot, Status,
};

pub const NAME: &str = "NodeDeclaredFeatures";

pub const ERR_REASON: &str = "node(s) didn't match Pod's required features";

pub const RESTART_ALL_CONTAINERS: &str = "RestartAllContainersOnContainerExits";
pub const USER_NAMESPACES_HOST_NETWORK: &str = "UserNamespacesHostNetworkSupport";
pub const VOLUME_BIND_MOUNT_OPTIONS: &str = "VolumeBindMountOptions";

/// The features the pod needs, computed once per cycle.
#[derive(Clone)]
struct PreFilterState(Arc<Vec<&'static str>>);

pub struct NodeDeclaredFeatures;

impl Plugin for NodeDeclaredFeatures {
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

/// The node features a pod needs to run, from its spec alone.
pub fn required_features(spec: &PodSpec) -> Vec<&'static str> {
    let mut features = vec![];
    let containers = || {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
    };
    if containers().any(|c| {
        c.restart_policy_rules
            .iter()
            .flatten()
            .any(|r| r.action == "RestartAllContainers")
    }) {
        features.push(RESTART_ALL_CONTAINERS);
    }
    if spec.host_network == Some(true) && spec.host_users == Some(false) {
        features.push(USER_NAMESPACES_HOST_NETWORK);
    }
    let binds = |mounts: Option<&Vec<VolumeMount>>| {
        mounts
            .into_iter()
            .flatten()
            .any(|m| m.bind_mount_options.as_ref().is_some_and(|o| !o.is_empty()))
    };
    if containers().any(|c| binds(c.volume_mounts.as_ref()))
        || spec
            .ephemeral_containers
            .iter()
            .flatten()
            .any(|c| binds(c.volume_mounts.as_ref()))
    {
        features.push(VOLUME_BIND_MOUNT_OPTIONS);
    }
    features
}

fn node_has(node: &NodeInfo, wanted: &[&str]) -> bool {
    let declared = node
        .node
        .status
        .as_ref()
        .and_then(|s| s.declared_features.as_deref())
        .unwrap_or_default();
    wanted.iter().all(|w| declared.iter().any(|d| d == w))
}

impl PreFilterPlugin for NodeDeclaredFeatures {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _snapshot: &Snapshot,
    ) -> (PreFilterResult, Status) {
        let wanted = pod
            .pod
            .spec
            .as_ref()
            .map(required_features)
            .unwrap_or_default();
        if wanted.is_empty() {
            return (PreFilterResult::default(), Status::skip());
        }
        state.write(NAME, PreFilterState(Arc::new(wanted)));
        (PreFilterResult::default(), Status::success())
    }
}

impl FilterPlugin for NodeDeclaredFeatures {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let fits = match state.read::<PreFilterState>(NAME) {
            Some(PreFilterState(wanted)) => node_has(node, wanted),
            None => node_has(
                node,
                &pod.pod
                    .spec
                    .as_ref()
                    .map(required_features)
                    .unwrap_or_default(),
            ),
        };
        if fits {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON)
        }
    }
}

/// NodeDeclaredFeatures has no args; like upstream, any given are ignored.
pub fn new(_args: Option<&Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(NodeDeclaredFeatures))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::framework::testing::{node, node_info, pod, snapshot};
    use serde_json::json;

    fn spec(v: Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn requirements_are_inferred_as_upstreams_registry() {
        let cases = [
            ("plain", json!({"containers": [{"name": "c"}]}), vec![]),
            (
                "restart all containers",
                json!({"containers": [{"name": "c", "restartPolicyRules": [{"action": "RestartAllContainers", "exitCodes": {"operator": "In", "values": [42]}}]}]}),
                vec![RESTART_ALL_CONTAINERS],
            ),
            (
                "restart rule in an init container",
                json!({"containers": [{"name": "c"}], "initContainers": [{"name": "i", "restartPolicyRules": [{"action": "RestartAllContainers", "exitCodes": {"operator": "In", "values": [1]}}]}]}),
                vec![RESTART_ALL_CONTAINERS],
            ),
            (
                "a plain restart rule",
                json!({"containers": [{"name": "c", "restartPolicyRules": [{"action": "Restart", "exitCodes": {"operator": "In", "values": [1]}}]}]}),
                vec![],
            ),
            (
                "host network in a user namespace",
                json!({"hostNetwork": true, "hostUsers": false, "containers": [{"name": "c"}]}),
                vec![USER_NAMESPACES_HOST_NETWORK],
            ),
            (
                "host network with host users",
                json!({"hostNetwork": true, "containers": [{"name": "c"}]}),
                vec![],
            ),
            (
                "bind mount options",
                json!({"containers": [{"name": "c", "volumeMounts": [{"name": "v", "mountPath": "/v", "bindMountOptions": ["nosuid"]}]}]}),
                vec![VOLUME_BIND_MOUNT_OPTIONS],
            ),
            (
                "empty bind mount options",
                json!({"containers": [{"name": "c", "volumeMounts": [{"name": "v", "mountPath": "/v", "bindMountOptions": []}]}]}),
                vec![],
            ),
        ];
        for (name, s, want) in cases {
            assert_eq!(required_features(&spec(s)), want, "{name}");
        }
    }

    #[test]
    fn nodes_must_declare_every_required_feature() {
        let p = pod(
            "p",
            &[],
            json!({"hostNetwork": true, "hostUsers": false,
                   "containers": [{"name": "c", "volumeMounts": [{"name": "v", "mountPath": "/v", "bindMountOptions": ["ro"]}]}]}),
        );
        let with = |features: Value| {
            let mut n = node("n", "4", "8Gi", &[], json!({}));
            n.status.as_mut().unwrap().declared_features =
                serde_json::from_value(features).unwrap();
            node_info(n, &[])
        };
        let snap = snapshot(vec![], &[]);
        let mut state = CycleState::new();
        let (_, status) = NodeDeclaredFeatures.pre_filter(&mut state, &p, &snap);
        assert!(status.is_success());
        let all = with(json!([
            USER_NAMESPACES_HOST_NETWORK,
            VOLUME_BIND_MOUNT_OPTIONS,
            "Other"
        ]));
        assert!(NodeDeclaredFeatures.filter(&state, &p, &all).is_success());
        for partial in [json!([USER_NAMESPACES_HOST_NETWORK]), json!(null)] {
            let status = NodeDeclaredFeatures.filter(&state, &p, &with(partial));
            assert_eq!(status.code, Code::UnschedulableAndUnresolvable);
            assert_eq!(status.message(), ERR_REASON);
        }
        let plain = pod("plain", &[], json!({"containers": [{"name": "c"}]}));
        let (_, status) = NodeDeclaredFeatures.pre_filter(&mut CycleState::new(), &plain, &snap);
        assert!(status.is_skip());
    }
}
