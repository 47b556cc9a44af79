//! `nodePortAddresses` for one IP family, as upstream's NodePortAddresses
//! (pkg/proxy/util/nodeport_addresses.go) after kube-proxy's keyword
//! expansion: `localhost` is 127.0.0.0/8 and ::1/128, `all` the zero CIDRs,
//! `primary` the node's primary IP of each family. Only entries of the
//! family count; with none, the family matches every local address, and so
//! does any zero CIDR (`0.0.0.0/0`) among them.
//!
//! Whether NodePorts answer on localhost is decided here once, from the
//! configuration alone, so the route_localnet sysctl and the DROP guard that
//! must come with it can never disagree.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::render::NodePortDestinations;
use crate::config::{KubeProxyConfiguration, NodePortAddress};
use crate::tracker::IpFamily;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePortAddresses {
    family: IpFamily,
    cidrs: Vec<IpNet>,
    /// `primary` was given: the node's primary IP of this family counts too.
    primary: bool,
    match_all: bool,
    contains_ipv4_loopback: bool,
}

impl NodePortAddresses {
    pub fn new(entries: &[NodePortAddress], family: IpFamily) -> Self {
        let mut cidrs: Vec<IpNet> = Vec::new();
        let mut primary = false;
        for entry in entries {
            match entry {
                // Upstream expands `primary` to a host CIDR of the node's
                // primary IP of each family (never a loopback one).
                NodePortAddress::Primary => primary = true,
                NodePortAddress::Localhost => cidrs.extend(
                    ["127.0.0.0/8", "::1/128"].map(|c| c.parse::<IpNet>().expect("literal CIDR")),
                ),
                NodePortAddress::All => cidrs.extend(
                    ["0.0.0.0/0", "::/0"].map(|c| c.parse::<IpNet>().expect("literal CIDR")),
                ),
                NodePortAddress::Cidr(cidr) => cidrs.push(*cidr),
            }
        }
        cidrs.retain(|c| IpFamily::of(&c.addr()) == family);
        if cidrs.is_empty() && !primary {
            cidrs.push(match family {
                IpFamily::V4 => "0.0.0.0/0".parse().expect("literal CIDR"),
                IpFamily::V6 => "::/0".parse().expect("literal CIDR"),
            });
        }
        let loopback_start = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0));
        let contains_ipv4_loopback = cidrs
            .iter()
            .any(|c| c.addr().is_ipv4() && (c.addr().is_loopback() || c.contains(&loopback_start)));
        let match_all = cidrs.iter().any(|c| c.prefix_len() == 0);
        NodePortAddresses {
            family,
            cidrs,
            primary,
            match_all,
            contains_ipv4_loopback,
        }
    }

    /// Every local address of the family (`-m addrtype --dst-type LOCAL`).
    pub fn match_all(&self) -> bool {
        self.match_all
    }

    pub fn contains_ipv4_loopback(&self) -> bool {
        self.contains_ipv4_loopback
    }

    /// Where NodePorts are served, given the Node's addresses (primary
    /// first) and the node's interfaces' addresses: as upstream, the CIDRs
    /// pick interface addresses and `primary` the Node's primary IP. With
    /// no interface addresses known (they could not be read), the CIDRs
    /// pick among the Node's addresses and loopback instead.
    pub fn destinations(
        &self,
        node_ips: &[IpAddr],
        interface_ips: &[IpAddr],
    ) -> NodePortDestinations {
        if self.match_all {
            return NodePortDestinations::AllLocal;
        }
        let of_family = |ip: &&IpAddr| IpFamily::of(ip) == self.family;
        let loopback = [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
        let candidates: Vec<IpAddr> = if interface_ips.is_empty() {
            node_ips.iter().chain(&loopback).copied().collect()
        } else {
            interface_ips.to_vec()
        };
        let mut ips = BTreeSet::new();
        for ip in candidates.iter().filter(of_family) {
            if self.cidrs.iter().any(|c| c.contains(ip)) {
                ips.insert(*ip);
            }
        }
        if self.primary
            && let Some(ip) = node_ips.iter().find(of_family)
            && !ip.is_loopback()
        {
            ips.insert(*ip);
        }
        NodePortDestinations::Ips(ips.into_iter().collect())
    }
}

/// Whether NodePorts answer on 127.0.0.0/8 (upstream's NewProxier):
/// `iptables.localhostNodePorts`, but only for IPv4 and only when the
/// NodePort addresses take in IPv4 loopback (as `all`, an empty list and a
/// zero CIDR do). Only then is route_localnet set, and the guard rendered.
pub fn localhost_node_ports(config: &KubeProxyConfiguration, family: IpFamily) -> bool {
    family == IpFamily::V4
        && config.iptables.localhost_node_ports
        && NodePortAddresses::new(&config.node_port_addresses, family).contains_ipv4_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> NodePortAddress {
        NodePortAddress::Cidr(s.parse().unwrap())
    }

    fn config(yaml_tail: &str) -> KubeProxyConfiguration {
        KubeProxyConfiguration::parse(&format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n{yaml_tail}"
        ))
        .unwrap()
    }

    #[test]
    fn localhost_node_ports_need_loopback_among_the_addresses() {
        let on = |tail: &str| localhost_node_ports(&config(tail), IpFamily::V4);
        assert!(on(""), "default: every address, loopback included");
        assert!(on("nodePortAddresses: [all]\n"));
        assert!(on("nodePortAddresses: [0.0.0.0/0]\n"));
        assert!(on("nodePortAddresses: [localhost]\n"));
        assert!(on("nodePortAddresses: [127.0.0.1/32, 192.168.0.0/16]\n"));
        assert!(
            on("nodePortAddresses: [\"fd00::/64\"]\n"),
            "no IPv4 entry: all"
        );
        assert!(!on("nodePortAddresses: [192.168.0.0/16]\n"));
        assert!(!on("nodePortAddresses: [primary]\n"));
        assert!(!on("iptables:\n  localhostNodePorts: false\n"));
        assert!(!localhost_node_ports(&config(""), IpFamily::V6));
    }

    #[test]
    fn zero_cidr_and_missing_family_match_all() {
        let v4 = |entries: &[NodePortAddress]| NodePortAddresses::new(entries, IpFamily::V4);
        assert!(v4(&[]).match_all());
        assert!(v4(&[cidr("0.0.0.0/0")]).match_all());
        assert!(v4(&[cidr("192.168.0.0/16"), cidr("0.0.0.0/0")]).match_all());
        assert!(v4(&[cidr("fd00::/64")]).match_all());
        assert!(!v4(&[cidr("192.168.0.0/16")]).match_all());
        assert!(!v4(&[NodePortAddress::Primary]).match_all());
        assert_eq!(
            v4(&[cidr("0.0.0.0/0")]).destinations(&[ip("192.168.0.2")], &[]),
            NodePortDestinations::AllLocal
        );
    }

    #[test]
    fn destinations_are_the_matching_node_and_loopback_addresses() {
        let node = [ip("192.168.0.2"), ip("10.1.0.2"), ip("fd00::2")];
        let v4 = |entries: &[NodePortAddress]| {
            NodePortAddresses::new(entries, IpFamily::V4).destinations(&node, &[])
        };
        assert_eq!(
            v4(&[cidr("192.168.0.0/16"), NodePortAddress::Localhost]),
            NodePortDestinations::Ips(vec![ip("127.0.0.1"), ip("192.168.0.2")])
        );
        assert_eq!(
            v4(&[NodePortAddress::Primary]),
            NodePortDestinations::Ips(vec![ip("192.168.0.2")])
        );
    }

    #[test]
    fn cidrs_pick_the_interfaces_addresses_and_primary_the_nodes() {
        let node = [ip("10.0.0.5"), ip("192.168.7.9")];
        let interfaces = [ip("127.0.0.1"), ip("10.0.0.5"), ip("172.17.0.1")];
        let entries = [
            NodePortAddress::Cidr("172.16.0.0/12".parse().unwrap()),
            NodePortAddress::Cidr("192.168.0.0/16".parse().unwrap()),
        ];
        // 192.168.7.9 is the Node's but on no interface; 172.17.0.1 the reverse.
        assert_eq!(
            NodePortAddresses::new(&entries, IpFamily::V4).destinations(&node, &interfaces),
            NodePortDestinations::Ips(vec![ip("172.17.0.1")])
        );
        let with_primary = [entries[0].clone(), NodePortAddress::Primary];
        assert_eq!(
            NodePortAddresses::new(&with_primary, IpFamily::V4).destinations(&node, &interfaces),
            NodePortDestinations::Ips(vec![ip("10.0.0.5"), ip("172.17.0.1")])
        );
    }
}
