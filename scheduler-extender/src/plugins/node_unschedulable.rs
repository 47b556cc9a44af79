//! NodeUnschedulable: a cordoned node (`spec.unschedulable`) takes only pods
//! that tolerate the `node.kubernetes.io/unschedulable:NoSchedule` taint.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Taint;
use serde_json::Value;

use crate::framework::{CycleState, FilterPlugin, NodeInfo, Plugin, PodInfo, Status};
use crate::plugins::taint_toleration::{EFFECT_NO_SCHEDULE, pod_tolerations, tolerations_tolerate};

pub const NAME: &str = "NodeUnschedulable";

pub const ERR_REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";

pub const TAINT_NODE_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

pub struct NodeUnschedulable;

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl FilterPlugin for NodeUnschedulable {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if !node.unschedulable() {
            return Status::success();
        }
        // The node lifecycle controller taints cordoned nodes with this key;
        // a pod tolerating that taint (DaemonSets do) may use the node anyway.
        let taint = Taint {
            key: TAINT_NODE_UNSCHEDULABLE.into(),
            effect: EFFECT_NO_SCHEDULE.into(),
            ..Default::default()
        };
        if tolerations_tolerate(pod_tolerations(pod), &taint) {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON_UNSCHEDULABLE)
        }
    }
}

/// NodeUnschedulable has no args; like upstream, any given are ignored.
pub fn new(_args: Option<&Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(NodeUnschedulable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::framework::testing::{node, node_info, pod};
    use serde_json::json;

    #[test]
    fn filter() {
        let cases = [
            (
                "schedulable node, no tolerations",
                json!({}),
                json!({}),
                true,
            ),
            (
                "unschedulable node, no tolerations",
                json!({"unschedulable": true}),
                json!({}),
                false,
            ),
            (
                "explicitly schedulable node",
                json!({"unschedulable": false}),
                json!({}),
                true,
            ),
            (
                "unschedulable node, pod tolerates the unschedulable taint",
                json!({"unschedulable": true}),
                json!({"tolerations": [{"key": TAINT_NODE_UNSCHEDULABLE, "operator": "Exists", "effect": "NoSchedule"}]}),
                true,
            ),
            (
                "unschedulable node, pod tolerates everything",
                json!({"unschedulable": true}),
                json!({"tolerations": [{"operator": "Exists"}]}),
                true,
            ),
            (
                "unschedulable node, toleration for another effect",
                json!({"unschedulable": true}),
                json!({"tolerations": [{"key": TAINT_NODE_UNSCHEDULABLE, "operator": "Exists", "effect": "NoExecute"}]}),
                false,
            ),
            (
                "unschedulable node, toleration for another key",
                json!({"unschedulable": true}),
                json!({"tolerations": [{"key": "other", "operator": "Exists", "effect": "NoSchedule"}]}),
                false,
            ),
        ];
        for (name, node_spec, pod_spec, fits) in cases {
            let n = node_info(node("n", "1", "1Gi", &[], node_spec), &[]);
            let p = pod("p", &[], pod_spec);
            let status = NodeUnschedulable.filter(&CycleState::new(), &p, &n);
            if fits {
                assert!(status.is_success(), "{name}: {status}");
            } else {
                assert_eq!(status.code, Code::UnschedulableAndUnresolvable, "{name}");
                assert_eq!(status.reasons, vec![ERR_REASON_UNSCHEDULABLE], "{name}");
            }
        }
    }
}
