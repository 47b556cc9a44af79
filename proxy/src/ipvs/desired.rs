//! What the kernel should hold for the tracker's state (upstream's
//! syncProxyRules, less its IO): one virtual server per ClusterIP, external
//! IP, load-balancer IP and NodePort address of each service port, each with
//! its real servers; the addresses the dummy interface carries; the ipset
//! entries the constant iptables rules match. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::ipsets::{Set, SetEntries};
use super::model::{FLAG_PERSISTENT, FLAG_SOURCE_HASH, RealServer, ServiceKey, VirtualServer};
use crate::tracker::{EndpointInfo, IpFamily, Protocol, ServicePortInfo, ServicePortName, Tracker};

/// Upstream's default scheduler: round robin.
pub const DEFAULT_SCHEDULER: &str = "rr";
/// Our dummy interface (upstream's `kube-ipvs0`), named apart so both can
/// exist on one host.
pub const DUMMY_INTERFACE: &str = "understudy-ipvs0";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredOptions {
    pub family: IpFamily,
    /// `ipvs.scheduler`; empty means [`DEFAULT_SCHEDULER`].
    pub scheduler: String,
    /// Where NodePorts get virtual servers: the node's addresses matching
    /// nodePortAddresses (every local address but the dummy interface's when
    /// it matches all), loopback excluded. Resolved by the IO side.
    pub node_port_ips: Vec<IpAddr>,
    /// The node's primary IP: a load balancer's source ranges that cover it
    /// let the node itself reach the load-balancer IP.
    pub node_ip: Option<IpAddr>,
    /// Addresses on the node's other interfaces: an external or
    /// load-balancer IP among them is not also put on the dummy interface.
    pub local_addresses: BTreeSet<IpAddr>,
}

impl DesiredOptions {
    pub fn scheduler(&self) -> &str {
        if self.scheduler.is_empty() {
            DEFAULT_SCHEDULER
        } else {
            &self.scheduler
        }
    }
}

/// A load-balancer IP, port and protocol the node itself must not reach
/// (its source ranges leave the node out; upstream's
/// lbNoNodeAccessIPPortProtocolEntries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NoNodeAccess {
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub services: BTreeMap<ServiceKey, DesiredService>,
    pub dummy_addresses: BTreeSet<IpAddr>,
    pub sets: SetEntries,
    pub no_node_access: Vec<NoNodeAccess>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredService {
    pub server: VirtualServer,
    /// Sorted by address.
    pub real_servers: Vec<RealServer>,
}

impl Desired {
    fn entry(&mut self, set: Set, entry: String) {
        self.sets.entry(set).or_default().insert(entry);
    }

    /// Two service ports sharing a frontend (a ClusterIP cannot, external
    /// IPs can) end up as one virtual server: the later port's wins, as
    /// upstream's last syncEndpoint does.
    fn service(&mut self, server: VirtualServer, real_servers: Vec<RealServer>) {
        self.services.insert(
            server.key,
            DesiredService {
                server,
                real_servers,
            },
        );
    }
}

/// The desired state of the kernel for every service port of the tracker.
pub fn desired_state(tracker: &Tracker, options: &DesiredOptions) -> Desired {
    let mut desired = Desired::default();
    for (name, service) in tracker.service_ports() {
        add_service_port(tracker, options, name, service, &mut desired);
    }
    desired.sets.insert(
        Set::IpvsIps,
        desired
            .dummy_addresses
            .iter()
            .map(ToString::to_string)
            .collect(),
    );
    desired.sets.retain(|_, entries| !entries.is_empty());
    desired
}

fn add_service_port(
    tracker: &Tracker,
    options: &DesiredOptions,
    name: &ServicePortName,
    svc: &ServicePortInfo,
    desired: &mut Desired,
) {
    let proto = svc.protocol.lower();
    let port = svc.port;
    let ip_port = |ip: &IpAddr| format!("{ip},{proto}:{port}");

    // Hairpin: a local endpoint reaching itself through the service is
    // masqueraded (KUBE-LOOP-BACK), for every endpoint, used or not.
    for ep in tracker.endpoints(name).iter().filter(|ep| ep.is_local) {
        let (ip, ep_port) = (ep.ip(), ep.address.port());
        desired.entry(Set::LoopBack, format!("{ip},{proto}:{ep_port},{ip}"));
    }

    let categorized = tracker.categorize(name, svc);
    // Upstream's syncEndpoint: a Local policy uses the local endpoints, or
    // the cluster-wide ones when there is no local one (so local pods
    // still reach the service, https://issue.k8s.io/97081).
    let real_servers = |only_local: bool| -> Vec<RealServer> {
        let chosen: &[&EndpointInfo] = if only_local && !categorized.local.is_empty() {
            &categorized.local
        } else {
            &categorized.cluster
        };
        let mut servers: Vec<RealServer> = chosen
            .iter()
            .map(|ep| RealServer {
                address: ep.address,
                weight: 1,
            })
            .collect();
        servers.sort();
        servers.dedup();
        servers
    };
    let server = |address: IpAddr, port: u16| {
        let mut flags = 0;
        let mut timeout = 0;
        if let Some(seconds) = svc.sticky_seconds {
            flags |= FLAG_PERSISTENT;
            timeout = seconds;
        }
        if options.scheduler() == "mh" {
            flags |= FLAG_SOURCE_HASH;
        }
        VirtualServer {
            key: ServiceKey {
                address,
                port,
                protocol: svc.protocol,
            },
            scheduler: options.scheduler().to_string(),
            flags,
            timeout,
        }
    };

    desired.entry(Set::ClusterIp, ip_port(&svc.cluster_ip));
    desired.service(
        server(svc.cluster_ip, port),
        real_servers(svc.internal_policy_local),
    );
    desired.dummy_addresses.insert(svc.cluster_ip);

    for ip in &svc.external_ips {
        let set = if svc.external_policy_local {
            Set::ExternalIpLocal
        } else {
            Set::ExternalIp
        };
        desired.entry(set, ip_port(ip));
        desired.service(server(*ip, port), real_servers(svc.external_policy_local));
        if !options.local_addresses.contains(ip) {
            desired.dummy_addresses.insert(*ip);
        }
    }

    for ip in &svc.load_balancer_vips {
        desired.entry(Set::LoadBalancer, ip_port(ip));
        if svc.external_policy_local {
            desired.entry(Set::LoadBalancerLocal, ip_port(ip));
        }
        if !svc.load_balancer_source_ranges.is_empty() {
            desired.entry(Set::LoadBalancerFw, ip_port(ip));
            let mut allow_from_node = false;
            for cidr in &svc.load_balancer_source_ranges {
                desired.entry(
                    Set::LoadBalancerSourceCidr,
                    format!("{ip},{proto}:{port},{}", net_entry(cidr)),
                );
                allow_from_node |= options.node_ip.is_some_and(|n| cidr.contains(&n));
            }
            if allow_from_node {
                // The load balancer's backends may reach its IP directly
                // (routed back to this node): let the node's own traffic in.
                desired.entry(
                    Set::LoadBalancerSourceIp,
                    format!("{ip},{proto}:{port},{ip}"),
                );
            } else {
                desired.no_node_access.push(NoNodeAccess {
                    address: *ip,
                    port,
                    protocol: svc.protocol,
                });
            }
        }
        desired.service(server(*ip, port), real_servers(svc.external_policy_local));
        if !options.local_addresses.contains(ip) {
            desired.dummy_addresses.insert(*ip);
        }
    }

    if svc.node_port != 0 && !options.node_port_ips.is_empty() {
        let node_port = svc.node_port;
        // TCP and UDP NodePorts are matched by port alone (bitmap sets);
        // SCTP by address and port, one entry per node address.
        let (set, local_set, entries): (Set, Set, Vec<String>) = match svc.protocol {
            Protocol::Tcp => (
                Set::NodePortTcp,
                Set::NodePortLocalTcp,
                vec![node_port.to_string()],
            ),
            Protocol::Udp => (
                Set::NodePortUdp,
                Set::NodePortLocalUdp,
                vec![node_port.to_string()],
            ),
            Protocol::Sctp => (
                Set::NodePortSctp,
                Set::NodePortLocalSctp,
                (options.node_port_ips.iter())
                    .map(|ip| format!("{ip},sctp:{node_port}"))
                    .collect(),
            ),
        };
        for entry in entries {
            if svc.external_policy_local {
                desired.entry(local_set, entry.clone());
            }
            desired.entry(set, entry);
        }
        for ip in &options.node_port_ips {
            desired.service(
                server(*ip, node_port),
                real_servers(svc.external_policy_local),
            );
        }
    }

    if svc.health_check_node_port != 0 {
        desired.entry(
            Set::HealthCheckNodePort,
            svc.health_check_node_port.to_string(),
        );
    }
}

/// A network as `ipset save` prints it back, so the next diff finds it:
/// host bits cleared, and a single address without its prefix length.
fn net_entry(cidr: &IpNet) -> String {
    if cidr.prefix_len() == cidr.max_prefix_len() {
        cidr.addr().to_string()
    } else {
        cidr.trunc().to_string()
    }
}

#[cfg(test)]
#[path = "desired_tests.rs"]
pub(crate) mod tests;
