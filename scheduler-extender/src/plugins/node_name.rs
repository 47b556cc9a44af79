//! NodeName: a pod with `spec.nodeName` fits only that node. PreFilter narrows
//! the candidates to it so the other nodes are not even filtered.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;

use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, Plugin, PodInfo, PreFilterPlugin, PreFilterResult,
    Snapshot, Status,
};

pub const NAME: &str = "NodeName";

pub const ERR_REASON: &str = "node(s) didn't match the requested node name";

pub struct NodeName;

impl Plugin for NodeName {
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

/// Whether `node` is the one the pod names, or the pod names none.
pub fn fits(pod: &PodInfo, node: &NodeInfo) -> bool {
    pod.node_name().is_none_or(|name| name == node.name)
}

impl PreFilterPlugin for NodeName {
    fn pre_filter(
        &self,
        _state: &mut CycleState,
        pod: &PodInfo,
        _snapshot: &Snapshot,
    ) -> (PreFilterResult, Status) {
        let node_names = pod
            .node_name()
            .map(|name| BTreeSet::from([name.to_string()]));
        (PreFilterResult { node_names }, Status::success())
    }
}

impl FilterPlugin for NodeName {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if fits(pod, node) {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON)
        }
    }
}

/// NodeName has no args; like upstream, any given are ignored.
pub fn new(_args: Option<&Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(NodeName))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::framework::testing::{node, node_info, pod, snapshot};
    use serde_json::json;

    #[test]
    fn filter() {
        let cases = [
            ("no node name", json!({}), "foo", true),
            (
                "matching node name",
                json!({"nodeName": "foo"}),
                "foo",
                true,
            ),
            ("other node name", json!({"nodeName": "bar"}), "foo", false),
        ];
        for (name, spec, node_name, want) in cases {
            let n = node_info(node(node_name, "1", "1Gi", &[], json!({})), &[]);
            let status = NodeName.filter(&CycleState::new(), &pod("p", &[], spec), &n);
            if want {
                assert!(status.is_success(), "{name}: {status}");
            } else {
                assert_eq!(status.code, Code::UnschedulableAndUnresolvable, "{name}");
                assert_eq!(status.reasons, vec![ERR_REASON], "{name}");
            }
        }
    }

    #[test]
    fn pre_filter_narrows_to_the_named_node() {
        let snap = snapshot(
            vec![node_info(node("foo", "1", "1Gi", &[], json!({})), &[])],
            &[],
        );
        let (result, status) = NodeName.pre_filter(
            &mut CycleState::new(),
            &pod("p", &[], json!({"nodeName": "foo"})),
            &snap,
        );
        assert!(status.is_success());
        assert_eq!(result.node_names, Some(BTreeSet::from(["foo".to_string()])));

        let (result, status) =
            NodeName.pre_filter(&mut CycleState::new(), &pod("p", &[], json!({})), &snap);
        assert!(status.is_success());
        assert_eq!(result.node_names, None);
    }
}
