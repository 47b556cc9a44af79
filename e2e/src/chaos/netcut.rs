//! A real node cut off and reconnected: its link into the lab's switch taken
//! down and its apiserver relay frozen, then both restored. Only the lab's
//! own namespaces and processes are touched, never the host's netfilter.
//!
//! The kubelet reaches the (loopback) apiserver through a relay listening in
//! the node's namespace and connecting out from the host's, so a link down
//! alone would leave the kubelet talking: the relay is SIGSTOPped as well,
//! which stalls its connections the way a partition drops packets (nothing
//! is refused or reset; bytes just stop moving).

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::realnode::{NodePlan, RealNodes};
use crate::state::ClusterState;

/// `ip` arguments setting a node's port on the lab's bridge down or up.
pub fn link_args(nodes: &RealNodes, node: &NodePlan, up: bool) -> Vec<String> {
    [
        "-n",
        &nodes.network.netns(),
        "link",
        "set",
        &node.bridge_port(),
        if up { "up" } else { "down" },
    ]
    .map(String::from)
    .to_vec()
}

/// The process name of a node's apiserver relay in the lab's state.
pub fn relay_process(node: &NodePlan) -> String {
    format!("apiserver-relay/{}", node.name())
}

/// Cuts (`connected == false`) or restores a real node's network.
pub fn set_connected(
    state: &ClusterState,
    nodes: &RealNodes,
    node: &NodePlan,
    connected: bool,
) -> Result<(), String> {
    let relay = state
        .process(&relay_process(node))
        .ok_or_else(|| format!("no {} in the lab", relay_process(node)))?;
    let signal = if connected {
        Signal::SIGCONT
    } else {
        Signal::SIGSTOP
    };
    // Link first when cutting, relay first when restoring: the node is never
    // half-connected through the path the fault is about.
    let link = || {
        let args = link_args(nodes, node, connected);
        let output = std::process::Command::new("ip")
            .args(&args)
            .output()
            .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    };
    let relay_signal = || {
        killpg(Pid::from_raw(relay.pid), signal)
            .map_err(|e| format!("{signal} to {}: {e}", relay.name))
    };
    if connected {
        relay_signal()?;
        link()
    } else {
        link()?;
        relay_signal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realnode::LabNetwork;

    #[test]
    fn the_cut_is_the_nodes_port_on_the_labs_bridge_inside_the_labs_namespace() {
        let nodes = RealNodes {
            network: LabNetwork { slot: 3 },
            count: 2,
        };
        let node = nodes.network.node(1);
        assert_eq!(
            link_args(&nodes, &node, false),
            ["-n", "usl3", "link", "set", "usl3n1", "down"]
        );
        assert_eq!(link_args(&nodes, &node, true).last().unwrap(), "up");
        assert_eq!(relay_process(&node), "apiserver-relay/real-1");
    }
}
