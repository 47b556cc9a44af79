//! The IPVS mode's options from a KubeProxyConfiguration and what the IO
//! side read from the node, for one family: what the lead's proxier needs
//! to call [`desired_state`](super::desired_state) and
//! [`sync`](super::reconcile::sync).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::desired::DesiredOptions;
use super::diff::DiffOptions;
use super::rules::RuleOptions;
use crate::config::KubeProxyConfiguration;
use crate::iptables::{LocalDetector, NodePortAddresses, NodePortDestinations};
use crate::tracker::IpFamily;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpvsOptions {
    pub desired: DesiredOptions,
    pub diff: DiffOptions,
    pub rules: RuleOptions,
    /// `ipvs.tcpTimeout`, `tcpFinTimeout`, `udpTimeout` in seconds, when any
    /// is set (upstream then sets all three; 0 keeps the kernel's).
    pub timeouts: Option<(u32, u32, u32)>,
}

impl IpvsOptions {
    /// `node_ips`: the Node's addresses, primary first. `local_addresses`:
    /// the addresses on the node's interfaces other than the dummy one
    /// ([`Host::local_addresses`](super::reconcile::Host::local_addresses)).
    pub fn from_config(
        config: &KubeProxyConfiguration,
        family: IpFamily,
        node_ips: &[IpAddr],
        node_pod_cidrs: &[IpNet],
        local_addresses: BTreeSet<IpAddr>,
    ) -> IpvsOptions {
        let of_family = |ip: &IpAddr| IpFamily::of(ip) == family;
        let local_addresses: BTreeSet<IpAddr> =
            local_addresses.into_iter().filter(of_family).collect();
        let node_port_ips = node_port_ips(config, family, node_ips, &local_addresses);
        let seconds = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        let ipvs = &config.ipvs;
        let timeouts = (
            seconds(ipvs.tcp_timeout),
            seconds(ipvs.tcp_fin_timeout),
            seconds(ipvs.udp_timeout),
        );
        IpvsOptions {
            desired: DesiredOptions {
                family,
                scheduler: ipvs.scheduler.clone(),
                node_port_ips,
                node_ip: node_ips.iter().find(|ip| of_family(ip)).copied(),
                local_addresses,
            },
            diff: DiffOptions {
                family,
                exclude_cidrs: (ipvs.exclude_cidrs.iter())
                    .filter(|c| IpFamily::of(&c.addr()) == family)
                    .copied()
                    .collect(),
            },
            rules: RuleOptions {
                family,
                masquerade_mark: 1 << config.masquerade_bit(),
                masquerade_all: config.masquerade_all(),
                local_detector: LocalDetector::from_config(config, family, node_pod_cidrs),
            },
            timeouts: (timeouts != (0, 0, 0)).then_some(timeouts),
        }
    }
}

/// Where NodePorts get virtual servers: every local address but the dummy
/// interface's when nodePortAddresses matches all, else the matching ones;
/// never loopback (upstream's nodeIPs in syncProxyRules).
fn node_port_ips(
    config: &KubeProxyConfiguration,
    family: IpFamily,
    node_ips: &[IpAddr],
    local_addresses: &BTreeSet<IpAddr>,
) -> Vec<IpAddr> {
    let addresses = NodePortAddresses::new(&config.node_port_addresses, family);
    let interfaces: Vec<IpAddr> = local_addresses.iter().copied().collect();
    let ips: BTreeSet<IpAddr> = match addresses.destinations(node_ips, &interfaces) {
        NodePortDestinations::AllLocal => local_addresses.clone(),
        NodePortDestinations::Ips(ips) => ips.into_iter().collect(),
    };
    ips.into_iter().filter(|ip| !ip.is_loopback()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tail: &str) -> KubeProxyConfiguration {
        KubeProxyConfiguration::parse(&format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n{tail}"
        ))
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn local() -> BTreeSet<IpAddr> {
        BTreeSet::from([ip("192.168.0.2"), ip("10.1.0.2"), ip("fd00::2")])
    }

    #[test]
    fn options_follow_the_configuration() {
        let options = IpvsOptions::from_config(
            &config(
                "clusterCIDR: 10.244.0.0/16\nipvs:\n  scheduler: lc\n  tcpTimeout: 15m\n  \
                 excludeCIDRs: [10.96.0.0/16, \"fd00::/64\"]\niptables:\n  masqueradeBit: 15\n",
            ),
            IpFamily::V4,
            &[ip("192.168.0.2")],
            &[],
            local(),
        );
        assert_eq!(options.desired.scheduler, "lc");
        assert_eq!(options.desired.node_ip, Some(ip("192.168.0.2")));
        assert_eq!(
            options.desired.local_addresses,
            BTreeSet::from([ip("10.1.0.2"), ip("192.168.0.2")])
        );
        assert_eq!(
            options.desired.node_port_ips,
            [ip("10.1.0.2"), ip("192.168.0.2")],
            "every local address by default"
        );
        assert_eq!(
            options.diff.exclude_cidrs,
            ["10.96.0.0/16".parse::<IpNet>().unwrap()]
        );
        assert_eq!(options.rules.masquerade_mark, 1 << 15);
        assert_eq!(
            options.rules.local_detector,
            LocalDetector::Cidr("10.244.0.0/16".parse().unwrap())
        );
        assert_eq!(options.timeouts, Some((900, 0, 0)));
        let defaults = IpvsOptions::from_config(&config(""), IpFamily::V4, &[], &[], local());
        assert_eq!(defaults.timeouts, None);
        assert_eq!(defaults.desired.scheduler(), "rr");
    }

    #[test]
    fn node_port_addresses_narrow_the_node_port_servers() {
        let options = |tail: &str| {
            IpvsOptions::from_config(
                &config(tail),
                IpFamily::V4,
                &[ip("192.168.0.2")],
                &[],
                local(),
            )
            .desired
            .node_port_ips
        };
        assert_eq!(
            options("nodePortAddresses: [192.168.0.0/16]\n"),
            [ip("192.168.0.2")]
        );
        assert_eq!(
            options("nodePortAddresses: [primary]\n"),
            [ip("192.168.0.2")]
        );
        assert_eq!(
            options("nodePortAddresses: [127.0.0.0/8, 10.1.0.0/16]\n"),
            [ip("10.1.0.2")],
            "never loopback"
        );
    }
}
