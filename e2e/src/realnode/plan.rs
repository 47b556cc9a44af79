//! Names and addresses of a lab's real nodes, from the lab's slot and each
//! node's index alone, so `up`, `down` and the tests agree without asking the
//! kernel.
//!
//! Every lab with real nodes takes a slot (0..[`MAX_SLOTS`]), which gives it
//! its own ranges: the node network `10.250.<slot>.0/24` (a bridge in a
//! netns of its own, like the Docker network of kind's nodes) and the pod
//! range `10.<200+slot>.0.0/16`, one /24 per node. So two labs can run side
//! by side, and nothing of theirs overlaps.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Labs with real nodes that can run at once on one machine.
pub const MAX_SLOTS: u8 = 50;
/// Real nodes one lab can have.
pub const MAX_NODES: usize = 200;
/// Where the slots' node directories live: short paths, because containerd and
/// the kubelet put Unix sockets there (108 bytes at most per socket path).
pub const SLOTS_DIR: &str = "/var/lib/understudy-lab";

/// The network of one lab's real nodes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LabNetwork {
    pub slot: u8,
}

impl LabNetwork {
    /// The netns holding the bridge all nodes of the lab hang off.
    pub fn netns(&self) -> String {
        format!("usl{}", self.slot)
    }
    /// The host's end of the link to the bridge (its peer in the bridge netns is `host`).
    pub fn host_link(&self) -> String {
        format!("usl{}", self.slot)
    }
    /// The host's address on the node network, the nodes' default gateway.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.slot, 1)
    }
    pub fn node_subnet(&self) -> String {
        format!("10.250.{}.0/24", self.slot)
    }
    /// Every pod address of the lab (kube-proxy's `clusterCIDR`).
    pub fn cluster_cidr(&self) -> String {
        format!("10.{}.0.0/16", 200 + u16::from(self.slot))
    }
    pub fn dir(&self) -> PathBuf {
        Path::new(SLOTS_DIR).join(format!("s{}", self.slot))
    }
    pub fn node(&self, index: usize) -> NodePlan {
        NodePlan {
            slot: self.slot,
            index,
        }
    }
}

/// One real node's names and addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlan {
    pub slot: u8,
    pub index: usize,
}

impl NodePlan {
    /// The Node object's name (and the kubelet's hostname).
    pub fn name(&self) -> String {
        format!("real-{}", self.index)
    }
    pub fn netns(&self) -> String {
        format!("usl{}n{}", self.slot, self.index)
    }
    /// The bridge port of the node's link (its other end is `eth0` in the node).
    pub fn bridge_port(&self) -> String {
        format!("usl{}n{}", self.slot, self.index)
    }
    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 250, self.slot, 10 + self.index as u8)
    }
    /// The node's IPv6 address on the lab's switch (on-link for every node:
    /// a /64 of the slot). The Node object reports its IPv4 address only.
    pub fn ip6(&self) -> std::net::Ipv6Addr {
        std::net::Ipv6Addr::new(
            0xfd00,
            0x10,
            0x250,
            u16::from(self.slot),
            0,
            0,
            0,
            10 + self.index as u16,
        )
    }
    pub fn pod_cidr(&self) -> String {
        format!("10.{}.{}.0/24", 200 + u16::from(self.slot), self.index)
    }
    /// The node's cgroup parent (kubelet `cgroupRoot`): cgroup v1 is one tree
    /// for the whole machine, so each node needs its own branch of it.
    pub fn cgroup_root(&self) -> String {
        format!("/understudy-lab-s{}-n{}", self.slot, self.index)
    }
    pub fn dir(&self) -> PathBuf {
        Path::new(SLOTS_DIR)
            .join(format!("s{}", self.slot))
            .join(format!("n{}", self.index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernels_limits() {
        let net = LabNetwork {
            slot: MAX_SLOTS - 1,
        };
        let node = net.node(MAX_NODES - 1);
        // IFNAMSIZ: 15 bytes and a NUL.
        for name in [net.host_link(), node.bridge_port()] {
            assert!(name.len() <= 15, "{name}");
        }
        let socket = node.dir().join("kubelet/device-plugins/kubelet.sock");
        assert!(socket.as_os_str().len() < 108, "{}", socket.display());
        assert_eq!(node.ip(), Ipv4Addr::new(10, 250, 49, 209));
        assert_eq!(node.pod_cidr(), "10.249.199.0/24");
    }

    #[test]
    fn two_labs_share_nothing() {
        let (a, b) = (LabNetwork { slot: 0 }, LabNetwork { slot: 1 });
        assert_ne!(a.node_subnet(), b.node_subnet());
        assert_ne!(a.cluster_cidr(), b.cluster_cidr());
        assert_ne!(a.node(0).netns(), b.node(0).netns());
        assert_ne!(a.node(0).cgroup_root(), b.node(0).cgroup_root());
        assert_eq!(a.node(1).pod_cidr(), "10.200.1.0/24");
        assert!(a.node(1).pod_cidr().starts_with("10.200."));
    }
}
