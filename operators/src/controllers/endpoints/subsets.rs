//! Endpoints subsets in a normalized form, and building them from the pods a
//! Service selects (upstream's syncService loop, podToEndpointAddressForService
//! and endpointslice's FindPort / ShouldPodBeInEndpoints / ShouldSetHostname).
//!
//! The normalized types make Go's notion of equality explicit: Go strings
//! without a pointer have no "absent" state (`None` and `""` are the same),
//! nil and empty lists are the same, while pointer fields (`nodeName`,
//! `appProtocol`, `targetRef`) keep the difference between unset and empty.

use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::repack::repack;
use crate::controllers::podutil;

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub api_version: String,
    pub resource_version: String,
    pub field_path: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    pub ip: String,
    pub hostname: String,
    pub node_name: Option<String>,
    pub target_ref: Option<TargetRef>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port {
    pub name: String,
    pub port: i32,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Subset {
    pub addresses: Vec<Address>,
    pub not_ready_addresses: Vec<Address>,
    pub ports: Vec<Port>,
}

impl Subset {
    pub fn len(&self) -> usize {
        self.addresses.len() + self.not_ready_addresses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn text(s: &Option<String>) -> String {
    s.clone().unwrap_or_default()
}

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl From<&core::ObjectReference> for TargetRef {
    fn from(r: &core::ObjectReference) -> Self {
        Self {
            kind: text(&r.kind),
            namespace: text(&r.namespace),
            name: text(&r.name),
            uid: text(&r.uid),
            api_version: text(&r.api_version),
            resource_version: text(&r.resource_version),
            field_path: text(&r.field_path),
        }
    }
}

impl From<&core::EndpointAddress> for Address {
    fn from(a: &core::EndpointAddress) -> Self {
        Self {
            ip: a.ip.clone(),
            hostname: text(&a.hostname),
            node_name: a.node_name.clone(),
            target_ref: a.target_ref.as_ref().map(TargetRef::from),
        }
    }
}

impl From<&core::EndpointPort> for Port {
    fn from(p: &core::EndpointPort) -> Self {
        Self {
            name: text(&p.name),
            port: p.port,
            protocol: text(&p.protocol),
            app_protocol: p.app_protocol.clone(),
        }
    }
}

impl From<&core::EndpointSubset> for Subset {
    fn from(s: &core::EndpointSubset) -> Self {
        let addrs = |v: &Option<Vec<core::EndpointAddress>>| {
            v.iter().flatten().map(Address::from).collect::<Vec<_>>()
        };
        Self {
            addresses: addrs(&s.addresses),
            not_ready_addresses: addrs(&s.not_ready_addresses),
            ports: s.ports.iter().flatten().map(Port::from).collect(),
        }
    }
}

impl TargetRef {
    pub fn to_api(&self) -> core::ObjectReference {
        core::ObjectReference {
            kind: opt(&self.kind),
            namespace: opt(&self.namespace),
            name: opt(&self.name),
            uid: opt(&self.uid),
            api_version: opt(&self.api_version),
            resource_version: opt(&self.resource_version),
            field_path: opt(&self.field_path),
        }
    }
}

impl Address {
    pub fn to_api(&self) -> core::EndpointAddress {
        core::EndpointAddress {
            ip: self.ip.clone(),
            hostname: opt(&self.hostname),
            node_name: self.node_name.clone(),
            target_ref: self.target_ref.as_ref().map(TargetRef::to_api),
        }
    }
}

impl Port {
    pub fn to_api(&self) -> core::EndpointPort {
        core::EndpointPort {
            name: opt(&self.name),
            port: self.port,
            protocol: opt(&self.protocol),
            app_protocol: self.app_protocol.clone(),
        }
    }
}

impl Subset {
    pub fn to_api(&self) -> core::EndpointSubset {
        let addrs =
            |v: &Vec<Address>| (!v.is_empty()).then(|| v.iter().map(Address::to_api).collect());
        core::EndpointSubset {
            addresses: addrs(&self.addresses),
            not_ready_addresses: addrs(&self.not_ready_addresses),
            ports: (!self.ports.is_empty()).then(|| self.ports.iter().map(Port::to_api).collect()),
        }
    }
}

pub fn from_api(subsets: Option<&Vec<core::EndpointSubset>>) -> Vec<Subset> {
    subsets.into_iter().flatten().map(Subset::from).collect()
}

pub fn to_api(subsets: &[Subset]) -> Option<Vec<core::EndpointSubset>> {
    (!subsets.is_empty()).then(|| subsets.iter().map(Subset::to_api).collect())
}

/// Equal as upstream's comparison sees it: a pod's resourceVersion in a
/// targetRef is ignored, so pod updates that do not move the address (an
/// annotation, say) never rewrite the Endpoints.
pub fn equal_ignoring_resource_version(a: &[Subset], b: &[Subset]) -> bool {
    fn strip(subsets: &[Subset]) -> Vec<Subset> {
        let clear = |addrs: &[Address]| -> Vec<Address> {
            addrs
                .iter()
                .map(|a| {
                    let mut a = a.clone();
                    if let Some(r) = a.target_ref.as_mut() {
                        r.resource_version.clear();
                    }
                    a
                })
                .collect()
        };
        subsets
            .iter()
            .map(|s| Subset {
                addresses: clear(&s.addresses),
                not_ready_addresses: clear(&s.not_ready_addresses),
                ports: s.ports.clone(),
            })
            .collect()
    }
    a.len() == b.len() && strip(a) == strip(b)
}

/// Whether a pod gets an address at all: it must have an IP, must not have
/// finished, and must not be terminating unless the Service publishes
/// not-ready addresses.
pub fn pod_in_endpoints(pod: &core::Pod, include_terminating: bool) -> bool {
    let status = pod.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    ) {
        return false;
    }
    let has_ip = status.is_some_and(|s| {
        s.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
            || s.pod_ips.as_ref().is_some_and(|ips| !ips.is_empty())
    });
    if !has_ip {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

/// Go's `ParseIPSloppy`: standard notation, or IPv4 with leading zeros read
/// as decimal. IPv4-mapped IPv6 counts as IPv4, as Go's `To4` does.
pub fn parse_ip_sloppy(s: &str) -> Option<IpAddr> {
    let ip = s.parse::<IpAddr>().ok().or_else(|| {
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() != 4 {
            return None;
        }
        let mut octets = [0u8; 4];
        for (octet, part) in octets.iter_mut().zip(&parts) {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *octet = part.parse().ok()?;
        }
        Some(IpAddr::V4(Ipv4Addr::from(octets)))
    })?;
    Some(match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    })
}

fn is_ipv6(s: &str) -> bool {
    parse_ip_sloppy(s).is_some_and(|ip| ip.is_ipv6())
}

/// The pod's address for the Service: the pod IP of the Service's primary IP
/// family (from ipFamilies, else the clusterIP, else the pod's own IP), or
/// `None` when the pod has none of that family (a half-upgraded dual-stack
/// cluster).
pub fn pod_address(service: &core::Service, pod: &core::Pod) -> Option<Address> {
    let spec = service.spec.as_ref();
    let status = pod.status.as_ref();
    let cluster_ip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
    let want_v6 = match spec
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first())
    {
        Some(family) => family == "IPv6",
        None if !cluster_ip.is_empty() && cluster_ip != "None" => is_ipv6(cluster_ip),
        None => is_ipv6(status.and_then(|s| s.pod_ip.as_deref()).unwrap_or("")),
    };
    let ip = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| parse_ip_sloppy(&p.ip))
        .find(|ip| ip.is_ipv6() == want_v6)?;
    let spec = pod.spec.as_ref();
    let mut address = Address {
        ip: ip.to_string(),
        hostname: String::new(),
        // Upstream always points nodeName at the pod's (maybe empty) node.
        node_name: Some(text(&spec.and_then(|s| s.node_name.clone()))),
        target_ref: Some(TargetRef {
            kind: "Pod".into(),
            namespace: text(&pod.metadata.namespace),
            name: text(&pod.metadata.name),
            uid: text(&pod.metadata.uid),
            ..TargetRef::default()
        }),
    };
    if should_set_hostname(pod, service) {
        address.hostname = text(&spec.and_then(|s| s.hostname.clone()));
    }
    Some(address)
}

/// A pod's hostname is published only when the pod names this Service as
/// its subdomain (the DNS name `<hostname>.<service>`).
pub fn should_set_hostname(pod: &core::Pod, service: &core::Service) -> bool {
    let spec = pod.spec.as_ref();
    let hostname = spec.and_then(|s| s.hostname.as_deref()).unwrap_or("");
    let subdomain = spec.and_then(|s| s.subdomain.as_deref()).unwrap_or("");
    !hostname.is_empty()
        && subdomain == service.metadata.name.as_deref().unwrap_or("")
        && pod.metadata.namespace == service.metadata.namespace
}

fn protocol_or_tcp(p: &Option<String>) -> &str {
    p.as_deref().unwrap_or("TCP")
}

/// The pod port a Service port's targetPort names: a number as is, a name
/// looked up among the containers' (and sidecars') ports of the same
/// protocol. `None` when the name resolves to nothing in this pod.
pub fn find_port(pod: &core::Pod, service_port: &core::ServicePort) -> Option<i32> {
    let name = match &service_port.target_port {
        Some(IntOrString::Int(port)) => return Some(*port),
        Some(IntOrString::String(name)) => name,
        // The apiserver defaults targetPort to the port.
        None => return Some(service_port.port),
    };
    let protocol = protocol_or_tcp(&service_port.protocol);
    let spec = pod.spec.as_ref()?;
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name) && protocol_or_tcp(&p.protocol) == protocol)
        .map(|p| p.container_port)
}

fn endpoint_port(service_port: &core::ServicePort, port: i32) -> Port {
    Port {
        name: text(&service_port.name),
        port,
        protocol: text(&service_port.protocol),
        app_protocol: service_port.app_protocol.clone(),
    }
}

/// The repacked subsets of a Service from the pods its selector matches.
pub fn build_subsets<'a>(
    service: &core::Service,
    pods: impl IntoIterator<Item = &'a core::Pod>,
) -> Vec<Subset> {
    let spec = service.spec.as_ref();
    let publish_not_ready = spec
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let service_ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let headless = spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    let mut subsets = Vec::new();
    for pod in pods {
        if !pod_in_endpoints(pod, publish_not_ready) {
            continue;
        }
        let Some(address) = pod_address(service, pod) else {
            tracing::debug!(
                pod = pod.metadata.name.as_deref().unwrap_or(""),
                "pod has no IP of the service's IP family"
            );
            continue;
        };
        let ready = publish_not_ready || podutil::is_ready(pod);
        let mut add = |ports: Vec<Port>| {
            let mut subset = Subset {
                ports,
                ..Subset::default()
            };
            if ready {
                subset.addresses.push(address.clone());
            } else {
                subset.not_ready_addresses.push(address.clone());
            }
            subsets.push(subset);
        };
        if service_ports.is_empty() {
            // Only a headless Service may go without ports.
            if headless {
                add(Vec::new());
            }
            continue;
        }
        for service_port in service_ports {
            match find_port(pod, service_port) {
                Some(port) => add(vec![endpoint_port(service_port, port)]),
                None => tracing::debug!(
                    pod = pod.metadata.name.as_deref().unwrap_or(""),
                    port = service_port.name.as_deref().unwrap_or(""),
                    "no suitable port for the service port in the pod"
                ),
            }
        }
    }
    repack(&subsets)
}
