//! Endpoints as the proxy sees them (upstream's BaseEndpointInfo and
//! EndpointSliceCache): every slice of a Service merged per service port.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::names::{IpFamily, Protocol, ServiceName, ServicePortName};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    pub address: SocketAddr,
    /// On this node (its `nodeName` is ours).
    pub is_local: bool,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub zone_hints: BTreeSet<String>,
    pub node_hints: BTreeSet<String>,
}

impl EndpointInfo {
    pub fn ip(&self) -> IpAddr {
        self.address.ip()
    }
}

impl fmt::Display for EndpointInfo {
    /// `ip:port` (`[ip]:port` for IPv6), as upstream hashes and prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.address)
    }
}

/// One slice's contribution: its endpoints per service port.
pub type SliceEndpoints = super::PortMap<Vec<EndpointInfo>>;

/// The Service a slice belongs to and its endpoints, or `None` for a slice
/// the proxy ignores (no service-name label, another address type).
pub fn slice_endpoints(
    slice: &EndpointSlice,
    family: IpFamily,
    node_name: &str,
) -> Option<(ServiceName, SliceEndpoints)> {
    let service = slice_service(slice)?;
    if slice.address_type != family.address_type() {
        return None;
    }
    // Built in a BTreeMap, kept in a PortMap of exactly its size.
    let mut by_port: BTreeMap<ServicePortName, Vec<EndpointInfo>> = BTreeMap::new();
    // A slice written by hand or by another controller may hold what ours
    // never would; such a port or endpoint is skipped with upstream's log
    // line, and the rest of the slice still counts.
    let slice_name = slice.metadata.name.as_deref().unwrap_or_default();
    for port in slice.ports.as_deref().unwrap_or_default() {
        // Upstream ignores a port without a name; an empty name is the
        // Service's unnamed port.
        let Some(port_name) = port.name.clone() else {
            tracing::error!(%service, slice = slice_name, "Ignoring port with nil name");
            continue;
        };
        let Some(number) = port
            .port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
        else {
            tracing::error!(
                %service,
                slice = slice_name,
                port_name,
                port = ?port.port,
                "Ignoring invalid endpoint port"
            );
            continue;
        };
        let Some(protocol) = Protocol::from_api(port.protocol.as_deref()) else {
            tracing::error!(
                %service,
                slice = slice_name,
                port_name,
                protocol = ?port.protocol,
                "Ignoring endpoint port with an unknown protocol"
            );
            continue;
        };
        let key = ServicePortName::new(service.clone(), port_name, protocol);
        let endpoints = by_port.entry(key).or_default();
        for endpoint in slice.endpoints.as_deref().unwrap_or_default() {
            let Some(address) = endpoint.addresses.first() else {
                tracing::error!(%service, slice = slice_name, "Ignoring invalid endpoint port with empty address");
                continue;
            };
            let Ok(ip) = address.parse::<IpAddr>() else {
                tracing::error!(%service, slice = slice_name, address, "Ignoring endpoint with an invalid address");
                continue;
            };
            if IpFamily::of(&ip) != family {
                continue;
            }
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            // Absent conditions read as upstream: ready and serving unless
            // said otherwise, not terminating.
            let ready = conditions.ready.unwrap_or(true);
            let hints = endpoint.hints.as_ref();
            endpoints.push(EndpointInfo {
                address: SocketAddr::new(ip, number),
                is_local: !node_name.is_empty() && endpoint.node_name.as_deref() == Some(node_name),
                ready,
                serving: conditions.serving.unwrap_or(true),
                terminating: conditions.terminating.unwrap_or(false),
                zone_hints: (hints
                    .and_then(|h| h.for_zones.as_deref())
                    .unwrap_or_default()
                    .iter())
                .map(|z| z.name.clone())
                .collect(),
                node_hints: (hints
                    .and_then(|h| h.for_nodes.as_deref())
                    .unwrap_or_default()
                    .iter())
                .map(|n| n.name.clone())
                .collect(),
            });
        }
    }
    Some((service, by_port.into_iter().collect()))
}

/// The Service named by a slice's `kubernetes.io/service-name` label.
pub fn slice_service(slice: &EndpointSlice) -> Option<ServiceName> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(ServiceName::new(
        slice.metadata.namespace.clone().unwrap_or_default(),
        name.clone(),
    ))
}

/// Merges a Service's slices (visited by slice name, so the result does not
/// depend on arrival order): one endpoint per `ip:port` and service port,
/// sorted by their text. When slices disagree, a non-terminating copy wins
/// over a terminating one (a pod IP reused before the old Pod is gone), as
/// upstream; among equals the last slice by name wins.
pub fn merge_slices<'a>(slices: impl Iterator<Item = &'a SliceEndpoints>) -> SliceEndpoints {
    let mut merged: BTreeMap<ServicePortName, BTreeMap<String, EndpointInfo>> = BTreeMap::new();
    for slice in slices {
        for (port, endpoints) in slice {
            let set = merged.entry(port.clone()).or_default();
            for endpoint in endpoints {
                let key = endpoint.to_string();
                if !endpoint.terminating || !set.contains_key(&key) {
                    set.insert(key, endpoint.clone());
                }
            }
        }
    }
    merged
        .into_iter()
        .filter(|(_, set)| !set.is_empty())
        .map(|(port, set)| (port, set.into_values().collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Ports out of range, zero, unnamed or of an unknown protocol, and
    /// endpoints without a usable address, are skipped one by one: the valid
    /// port and endpoint of the same slice still count.
    #[test]
    fn nonsense_ports_and_addresses_are_skipped_alone() {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": "web-abc", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [
                {"name": "too-big", "port": 70000, "protocol": "TCP"},
                {"name": "negative", "port": -1, "protocol": "TCP"},
                {"name": "zero", "port": 0, "protocol": "TCP"},
                {"name": "none", "protocol": "TCP"},
                {"port": 81, "protocol": "TCP"},
                {"name": "sctp-ish", "port": 82, "protocol": "QUIC"},
                {"name": "http", "port": 8080, "protocol": "TCP"},
            ],
            "endpoints": [
                {"addresses": []},
                {"addresses": ["not-an-ip"]},
                {"addresses": ["10.0.0.7"]},
            ],
        }))
        .unwrap();
        let (service, by_port) = slice_endpoints(&slice, IpFamily::V4, "node-1").unwrap();
        assert_eq!(service, ServiceName::new("ns", "web"));
        let ports: Vec<String> = by_port.keys().map(|k| k.to_string()).collect();
        assert_eq!(ports, ["ns/web:http"]);
        let endpoints: Vec<String> = by_port
            .values()
            .flatten()
            .map(ToString::to_string)
            .collect();
        assert_eq!(endpoints, ["10.0.0.7:8080"]);
    }
}
