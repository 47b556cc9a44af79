//! A Service's ports as the proxy sees them (upstream's BaseServicePortInfo),
//! for one IP family.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;

use super::names::{IpFamily, Protocol, ServiceName, ServicePortName};

/// The API's default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_STICKY_SECONDS: u32 = 10800;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePortInfo {
    pub cluster_ip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    /// 0 when the Service has no NodePort.
    pub node_port: u16,
    /// `Some(timeout seconds)` for `sessionAffinity: ClientIP`.
    pub sticky_seconds: Option<u32>,
    pub external_ips: Vec<IpAddr>,
    /// Ingress IPs of `status.loadBalancer`, less those with `ipMode: Proxy`
    /// (the load balancer, not the node, handles those).
    pub load_balancer_vips: Vec<IpAddr>,
    /// True when traffic to the load-balancer IPs is filtered by source:
    /// some `loadBalancerSourceRanges` of this family, none of them a zero
    /// CIDR (upstream; ranges of the other family alone filter nothing).
    pub load_balancer_firewall: bool,
    /// `loadBalancerSourceRanges` of this family; empty when one is a zero CIDR.
    pub load_balancer_source_ranges: Vec<IpNet>,
    pub external_policy_local: bool,
    pub internal_policy_local: bool,
    /// 0 unless a LoadBalancer with Local external policy.
    pub health_check_node_port: u16,
    pub traffic_distribution: Option<String>,
}

impl ServicePortInfo {
    /// NodePort, external IPs or load-balancer IPs send outside traffic here.
    pub fn externally_accessible(&self) -> bool {
        self.node_port != 0 || !self.external_ips.is_empty() || !self.load_balancer_vips.is_empty()
    }

    /// Some traffic uses the cluster-wide endpoints: internal traffic under
    /// Cluster policy, or any external traffic, since even under Local
    /// external policy the node's own pods and processes short-circuit to the
    /// cluster-wide set.
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_policy_local || self.externally_accessible()
    }

    /// Some traffic uses only this node's endpoints.
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_policy_local || (self.external_policy_local && self.externally_accessible())
    }
}

/// The Service's ports for `family`, or none when the proxy has nothing to
/// do for it here: headless (`clusterIP: None`), ExternalName, no ClusterIP,
/// or no ClusterIP of this family.
pub fn service_ports(service: &Service, family: IpFamily) -> super::PortMap<ServicePortInfo> {
    // Built in a BTreeMap, kept in a PortMap of exactly its size.
    sorted_service_ports(service, family).into_iter().collect()
}

fn sorted_service_ports(
    service: &Service,
    family: IpFamily,
) -> BTreeMap<ServicePortName, ServicePortInfo> {
    let mut ports = BTreeMap::new();
    let Some(spec) = service.spec.as_ref() else {
        return ports;
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return ports;
    }
    let Some(cluster_ip) = cluster_ip_of_family(spec, family) else {
        return ports;
    };
    let name = ServiceName::new(
        service.metadata.namespace.clone().unwrap_or_default(),
        service.metadata.name.clone().unwrap_or_default(),
    );

    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    let external_ips_spec = spec.external_ips.as_deref().unwrap_or_default();
    let externally_accessible = matches!(service_type, "LoadBalancer" | "NodePort")
        || (service_type == "ClusterIP" && !external_ips_spec.is_empty());
    let external_policy_local =
        externally_accessible && spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_policy_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let health_check_node_port = if service_type == "LoadBalancer" && external_policy_local {
        port_number(spec.health_check_node_port)
    } else {
        0
    };
    let sticky_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        (spec.session_affinity_config.as_ref())
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(DEFAULT_STICKY_SECONDS)
    });
    let external_ips = ips_of_family(external_ips_spec.iter().map(String::as_str), family);
    let load_balancer_vips = ips_of_family(
        (service.status.as_ref())
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_deref())
            .unwrap_or_default()
            .iter()
            .filter(|ingress| ingress.ip_mode.as_deref() != Some("Proxy"))
            .filter_map(|ingress| ingress.ip.as_deref()),
        family,
    );
    let source_ranges_spec = spec
        .load_balancer_source_ranges
        .as_deref()
        .unwrap_or_default();
    let mut load_balancer_source_ranges: Vec<IpNet> = (source_ranges_spec.iter())
        .filter_map(|range| range.trim().parse::<IpNet>().ok())
        .filter(|net| IpFamily::of(&net.addr()) == family)
        .collect();
    // A zero CIDR allows anyone, as no ranges do (upstream).
    if load_balancer_source_ranges
        .iter()
        .any(|net| net.prefix_len() == 0)
    {
        load_balancer_source_ranges.clear();
    }

    for port in spec.ports.as_deref().unwrap_or_default() {
        let Some(protocol) = Protocol::from_api(port.protocol.as_deref()) else {
            continue;
        };
        let service_port = port_number(Some(port.port));
        if service_port == 0 {
            continue;
        }
        let key = ServicePortName::new(
            name.clone(),
            port.name.clone().unwrap_or_default(),
            protocol,
        );
        ports.insert(
            key,
            ServicePortInfo {
                cluster_ip,
                port: service_port,
                protocol,
                node_port: port_number(port.node_port),
                sticky_seconds,
                external_ips: external_ips.clone(),
                load_balancer_vips: load_balancer_vips.clone(),
                load_balancer_firewall: !load_balancer_source_ranges.is_empty(),
                load_balancer_source_ranges: Vec::clone(&load_balancer_source_ranges),
                external_policy_local,
                internal_policy_local,
                health_check_node_port,
                traffic_distribution: spec.traffic_distribution.clone(),
            },
        );
    }
    ports
}

fn cluster_ip_of_family(
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
    family: IpFamily,
) -> Option<IpAddr> {
    let single = spec.cluster_ip.as_slice();
    let ips = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips,
        _ => single,
    };
    ips.iter()
        .filter(|ip| !matches!(ip.as_str(), "" | "None"))
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .find(|ip| IpFamily::of(ip) == family)
}

fn ips_of_family<'a>(texts: impl Iterator<Item = &'a str>, family: IpFamily) -> Vec<IpAddr> {
    texts
        .filter_map(|text| text.trim().parse::<IpAddr>().ok())
        .filter(|ip| IpFamily::of(ip) == family)
        .collect()
}

fn port_number(value: Option<i32>) -> u16 {
    value.and_then(|p| u16::try_from(p).ok()).unwrap_or(0)
}
