//! Telling this cluster's pod traffic from the rest (upstream's
//! LocalTrafficDetector), as iptables match arguments.

use ipnet::IpNet;

use crate::config::{DetectLocalMode, KubeProxyConfiguration};
use crate::tracker::IpFamily;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalDetector {
    /// Nothing to tell by (ClusterCIDR mode without a CIDR of this family,
    /// NodeCIDR without the node's pod CIDR): no rule that needs it is written.
    None,
    /// Source in the cluster's or the node's pod CIDR.
    Cidr(IpNet),
    /// Arriving on this bridge.
    Bridge(String),
    /// Arriving on an interface named with this prefix.
    InterfacePrefix(String),
}

impl LocalDetector {
    /// From the configuration, for one family; `node_pod_cidrs` are the
    /// Node's `spec.podCIDRs` (NodeCIDR mode).
    pub fn from_config(
        config: &KubeProxyConfiguration,
        family: IpFamily,
        node_pod_cidrs: &[IpNet],
    ) -> Self {
        let of_family = |cidrs: &[IpNet]| {
            (cidrs.iter())
                .find(|c| IpFamily::of(&c.addr()) == family)
                .map_or(LocalDetector::None, |c| LocalDetector::Cidr(*c))
        };
        match &config.detect_local {
            DetectLocalMode::ClusterCidr => of_family(&config.cluster_cidrs),
            DetectLocalMode::NodeCidr => of_family(node_pod_cidrs),
            DetectLocalMode::BridgeInterface(name) => LocalDetector::Bridge(name.clone()),
            DetectLocalMode::InterfaceNamePrefix(prefix) => {
                LocalDetector::InterfacePrefix(prefix.clone())
            }
        }
    }

    pub fn is_implemented(&self) -> bool {
        *self != LocalDetector::None
    }

    /// Matches traffic from local pods.
    pub fn if_local(&self) -> Vec<String> {
        match self {
            LocalDetector::None => Vec::new(),
            LocalDetector::Cidr(cidr) => vec!["-s".into(), cidr.to_string()],
            LocalDetector::Bridge(name) => vec!["-i".into(), name.clone()],
            LocalDetector::InterfacePrefix(prefix) => vec!["-i".into(), format!("{prefix}+")],
        }
    }

    /// Matches traffic not from local pods.
    pub fn if_not_local(&self) -> Vec<String> {
        let mut args = self.if_local();
        if !args.is_empty() {
            args.insert(0, "!".into());
        }
        args
    }
}
