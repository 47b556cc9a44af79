//! The real nodes' network, made with iproute2 (the `ip` tool is what every
//! node setup uses, and its errors read well): a bridge in a namespace of its
//! own (the lab's switch), one namespace per node linked to it, routes to
//! each node's pod range in the nodes and on the host. Only links, addresses,
//! routes and sysctls of the lab's own namespaces are written: never a
//! netfilter rule, and on the host only the lab's link and its routes, gone
//! with the link.

use std::process::Command;

use super::RealNodeError;
use super::plan::{LabNetwork, NodePlan};

pub(super) fn ip(args: &[&str]) -> Result<String, RealNodeError> {
    run("ip", args)
}

pub(super) fn run(program: &str, args: &[&str]) -> Result<String, RealNodeError> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| RealNodeError::Command {
            command: format!("{program} {}", args.join(" ")),
            reason: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(RealNodeError::Command {
            command: format!("{program} {}", args.join(" ")),
            reason: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn sysctl_in(netns: &str, settings: &[&str]) -> Result<(), RealNodeError> {
    let mut args = vec!["netns", "exec", netns, "sysctl", "-qw"];
    args.extend_from_slice(settings);
    ip(&args).map(drop)
}

/// The lab's switch: netns `usl<slot>` with bridge `br0`, and the host's link
/// into it carrying the host's address on the node network.
pub fn create_lab_network(net: &LabNetwork) -> Result<(), RealNodeError> {
    let ns = net.netns();
    ip(&["netns", "add", &ns])?;
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &ns, "link", "set", "br0", "up"])?;
    // Frames between nodes are switched, never filtered.
    sysctl_in(&ns, &["net.bridge.bridge-nf-call-iptables=0"])?;
    let host = net.host_link();
    ip(&[
        "link", "add", &host, "type", "veth", "peer", "name", "host", "netns", &ns,
    ])?;
    ip(&["-n", &ns, "link", "set", "host", "master", "br0", "up"])?;
    ip(&[
        "addr",
        "add",
        &format!("{}/24", net.host_ip()),
        "dev",
        &host,
    ])?;
    ip(&["link", "set", &host, "up"])?;
    Ok(())
}

/// A node's namespace, `eth0` in it plugged into the lab's bridge.
pub fn create_node_network(net: &LabNetwork, node: &NodePlan) -> Result<(), RealNodeError> {
    let ns = node.netns();
    let port = node.bridge_port();
    ip(&["netns", "add", &ns])?;
    ip(&[
        "link",
        "add",
        &port,
        "netns",
        &net.netns(),
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &ns,
    ])?;
    ip(&[
        "-n",
        &net.netns(),
        "link",
        "set",
        &port,
        "master",
        "br0",
        "up",
    ])?;
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    ip(&[
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{}/24", node.ip()),
        "dev",
        "eth0",
    ])?;
    // nodad: usable at once, no duplicate address detection to wait for.
    ip(&[
        "-n",
        &ns,
        "-6",
        "addr",
        "add",
        &format!("{}/64", node.ip6()),
        "dev",
        "eth0",
        "nodad",
    ])?;
    ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    ip(&[
        "-n",
        &ns,
        "route",
        "add",
        "default",
        "via",
        &net.host_ip().to_string(),
    ])?;
    // IPv6 Service addresses need a route before the proxy's DNAT: every
    // IPv6 destination is on the switch (the IPv4 default's twin).
    ip(&["-n", &ns, "-6", "route", "add", "default", "dev", "eth0"])?;
    sysctl_in(
        &ns,
        &[
            // The node routes for its pods.
            "net.ipv4.ip_forward=1",
            // Pods' traffic to a Service address crosses the node's bridge
            // and must meet the proxy's rules.
            "net.bridge.bridge-nf-call-iptables=1",
        ],
    )
}

/// Each node's pod range routed to that node: from every other node and from
/// the host (so tests reach pod addresses directly, as from a kind host).
pub fn route_pod_ranges(net: &LabNetwork, nodes: &[NodePlan]) -> Result<(), RealNodeError> {
    for target in nodes {
        let via = target.ip().to_string();
        let cidr = target.pod_cidr();
        ip(&["route", "add", &cidr, "via", &via, "dev", &net.host_link()])?;
        for node in nodes.iter().filter(|n| n.index != target.index) {
            ip(&["-n", &node.netns(), "route", "add", &cidr, "via", &via])?;
        }
    }
    Ok(())
}

/// Deletes the namespaces (their links go with them; the host's link, its
/// address and the routes over it go with its peer). Missing ones are fine:
/// this also cleans up after a start that failed halfway.
pub fn delete(net: &LabNetwork, nodes: &[NodePlan]) -> Vec<String> {
    let mut problems = vec![];
    let existing = list_netns();
    for ns in nodes
        .iter()
        .map(NodePlan::netns)
        .chain([net.netns()])
        .filter(|ns| existing.contains(ns))
    {
        if let Err(e) = ip(&["netns", "del", &ns]) {
            problems.push(e.to_string());
        }
    }
    if link_exists(&net.host_link())
        && let Err(e) = ip(&["link", "del", &net.host_link()])
    {
        problems.push(e.to_string());
    }
    problems
}

pub fn list_netns() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}
