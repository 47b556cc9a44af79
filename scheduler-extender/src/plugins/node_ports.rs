//! NodePorts: a pod's host ports must be free on the node. A conflict is
//! Unschedulable (not unresolvable): preempting the pod holding the port
//! frees it.

use std::sync::Arc;

use serde_json::Value;

use crate::framework::types::HostPort;
use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, Plugin, PodInfo, PreFilterPlugin, PreFilterResult,
    Snapshot, Status,
};

pub const NAME: &str = "NodePorts";

pub const ERR_REASON: &str = "node(s) didn't have free ports for the requested pod ports";

/// The host ports the pod wants, computed once per cycle.
#[derive(Clone)]
struct PreFilterState(Arc<Vec<HostPort>>);

pub struct NodePorts;

impl Plugin for NodePorts {
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

/// Whether none of `wanted` conflicts with a port in use on the node.
pub fn fits_ports(wanted: &[HostPort], used: &[HostPort]) -> bool {
    !wanted.iter().any(|w| used.iter().any(|u| w.conflicts(u)))
}

impl PreFilterPlugin for NodePorts {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _snapshot: &Snapshot,
    ) -> (PreFilterResult, Status) {
        let wanted = pod.host_ports();
        if wanted.is_empty() {
            return (PreFilterResult::default(), Status::skip());
        }
        state.write(NAME, PreFilterState(Arc::new(wanted)));
        (PreFilterResult::default(), Status::success())
    }
}

impl FilterPlugin for NodePorts {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let fits = match state.read::<PreFilterState>(NAME) {
            Some(PreFilterState(wanted)) => fits_ports(wanted, &node.used_ports),
            // PreFilter disabled in the profile: compute the ports here.
            None => fits_ports(&pod.host_ports(), &node.used_ports),
        };
        if fits {
            Status::success()
        } else {
            Status::unschedulable(ERR_REASON)
        }
    }
}

/// NodePorts has no args; like upstream, any given are ignored.
pub fn new(_args: Option<&Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(NodePorts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::framework::testing::{node, node_info, pod, snapshot};
    use serde_json::json;

    /// A pod whose container asks for `PROTOCOL/IP/PORT` host ports (an
    /// empty IP leaves hostIP unset).
    fn with_ports(name: &str, ports: &[&str]) -> Arc<PodInfo> {
        let ports: Vec<Value> = ports
            .iter()
            .map(|p| {
                let parts: Vec<&str> = p.split('/').collect();
                let port: i32 = parts[2].parse().unwrap();
                let mut v = json!({"containerPort": port, "hostPort": port, "protocol": parts[0]});
                if !parts[1].is_empty() {
                    v["hostIP"] = json!(parts[1]);
                }
                v
            })
            .collect();
        pod(
            name,
            &[],
            json!({"containers": [{"name": "c", "ports": ports}]}),
        )
    }

    fn run(incoming: &Arc<PodInfo>, existing: &Arc<PodInfo>) -> Status {
        let n = node_info(
            node("n", "1", "1Gi", &[], json!({})),
            std::slice::from_ref(existing),
        );
        let snap = snapshot(vec![n], &[]);
        let mut state = CycleState::new();
        let (_, status) = NodePorts.pre_filter(&mut state, incoming, &snap);
        if status.is_skip() {
            return status;
        }
        assert!(status.is_success());
        NodePorts.filter(&state, incoming, &snap.nodes[0])
    }

    #[test]
    fn filter() {
        let cases: &[(&str, &[&str], &[&str], bool)] = &[
            (
                "same udp port",
                &["UDP/127.0.0.1/8080"],
                &["UDP/127.0.0.1/8080"],
                false,
            ),
            (
                "different udp ports",
                &["UDP/127.0.0.1/8080"],
                &["UDP/127.0.0.1/8081"],
                true,
            ),
            (
                "different host ip",
                &["UDP/127.0.0.1/8080"],
                &["UDP/127.0.0.2/8080"],
                true,
            ),
            (
                "same ip and port, different protocol",
                &["UDP/127.0.0.1/8080"],
                &["TCP/127.0.0.1/8080"],
                true,
            ),
            (
                "second udp port conflicts",
                &["UDP/127.0.0.1/8000", "UDP/127.0.0.1/8080"],
                &["UDP/127.0.0.1/8080"],
                false,
            ),
            (
                "first tcp port conflicts",
                &["TCP/127.0.0.1/8001", "UDP/127.0.0.1/8080"],
                &["TCP/127.0.0.1/8001", "UDP/127.0.0.1/8081"],
                false,
            ),
            (
                "wanted 0.0.0.0 conflicts with a specific ip",
                &["TCP/0.0.0.0/8001"],
                &["TCP/127.0.0.1/8001"],
                false,
            ),
            (
                "unset hostIP means 0.0.0.0",
                &["TCP//8001"],
                &["TCP/127.0.0.1/8001"],
                false,
            ),
            (
                "used 0.0.0.0 conflicts with a specific ip",
                &["TCP/10.0.10.10/8001"],
                &["TCP/0.0.0.0/8001"],
                false,
            ),
            (
                "0.0.0.0 on another protocol does not conflict",
                &["UDP/127.0.0.1/8001"],
                &["TCP/0.0.0.0/8001"],
                true,
            ),
            (
                "UDP 0.0.0.0 conflict",
                &["UDP/0.0.0.0/8001"],
                &["UDP/10.0.10.10/8001"],
                false,
            ),
        ];
        for (name, wanted, used, fits) in cases {
            let status = run(&with_ports("p", wanted), &with_ports("existing", used));
            if *fits {
                assert!(status.is_success(), "{name}: {status}");
            } else {
                assert_eq!(status.code, Code::Unschedulable, "{name}");
                assert_eq!(status.reasons, vec![ERR_REASON], "{name}");
            }
        }
    }

    #[test]
    fn pre_filter_skips_pods_without_host_ports() {
        let status = run(&pod("p", &[], json!({})), &with_ports("e", &["TCP//80"]));
        assert!(status.is_skip());
        let no_host_port = pod(
            "p",
            &[],
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]}),
        );
        assert!(run(&no_host_port, &with_ports("e", &["TCP//80"])).is_skip());
    }

    #[test]
    fn filter_without_pre_filter_state() {
        let n = node_info(
            node("n", "1", "1Gi", &[], json!({})),
            &[with_ports("e", &["TCP//80"])],
        );
        let status = NodePorts.filter(&CycleState::new(), &with_ports("p", &["TCP//80"]), &n);
        assert_eq!(status.code, Code::Unschedulable);
        let status = NodePorts.filter(&CycleState::new(), &with_ports("p", &["TCP//81"]), &n);
        assert!(status.is_success());
    }
}
