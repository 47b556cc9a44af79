//! The proxy benchmark's objects: selectorless Services, each with one
//! EndpointSlice of [`ENDPOINTS_PER_SERVICE`] ready endpoints written directly
//! (no pods, no endpointslice controller), stamped with the trigger-time
//! annotation a proxy measures network programming latency from.
//!
//! Endpoint addresses come from ranges the bench's namespaces route to
//! themselves (`ip route add local`), so one listener there answers every
//! endpoint: 10.244.0.0/16 for the first addresses, 10.245.0.0/16 for the
//! ones the change series moves endpoints to.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

pub const ENDPOINTS_PER_SERVICE: usize = 5;
pub const SERVICE_PORT: u16 = 80;
pub const TARGET_PORT: u16 = 8080;
/// Both address ranges, routed as local inside each proxy's namespace.
pub const ENDPOINT_RANGE: &str = "10.244.0.0/15";
/// Services whose endpoints fit in 10.244.0.0/16 (address 0 unused).
pub const MAX_SERVICES: usize = 65_534 / ENDPOINTS_PER_SERVICE;
/// Endpoint changes whose new addresses fit in 10.245.0.0/16.
pub const MAX_CHANGES: usize = 65_534;
/// The annotation the endpointslice controller sets and kube-proxy reads.
pub const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

pub fn service_name(index: usize) -> String {
    format!("svc-{index}")
}

fn slice_name(index: usize) -> String {
    format!("svc-{index}-bench")
}

fn address(second: u8, k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, second, (k >> 8) as u8, (k & 0xff) as u8)
}

/// The `endpoint`-th address of Service `service` as first created.
pub fn endpoint_ip(service: usize, endpoint: usize) -> Ipv4Addr {
    address(244, service * ENDPOINTS_PER_SERVICE + endpoint + 1)
}

/// The address the `change`-th endpoint change moves an endpoint to.
pub fn changed_ip(change: usize) -> Ipv4Addr {
    address(245, change + 1)
}

/// A ClusterIP Service with no selector: its endpoints are the bench's to write.
pub fn service(index: usize) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_name(index), "labels": {"bench": "proxy"}},
        "spec": {
            "type": "ClusterIP",
            "ports": [{"port": SERVICE_PORT, "targetPort": TARGET_PORT, "protocol": "TCP"}],
        },
    }))
    .expect("static Service")
}

/// The endpoints of a slice, `addresses` all ready.
pub fn endpoints(addresses: &[Ipv4Addr]) -> serde_json::Value {
    addresses
        .iter()
        .map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
        .collect()
}

/// The EndpointSlice of Service `index` with its first addresses.
pub fn endpoint_slice(index: usize, trigger_time: &str) -> EndpointSlice {
    let addresses: Vec<Ipv4Addr> = (0..ENDPOINTS_PER_SERVICE)
        .map(|e| endpoint_ip(index, e))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name(index),
            "labels": {"kubernetes.io/service-name": service_name(index), "bench": "proxy"},
            "annotations": {TRIGGER_TIME: trigger_time},
        },
        "addressType": "IPv4",
        "ports": [{"port": TARGET_PORT, "protocol": "TCP"}],
        "endpoints": endpoints(&addresses),
    }))
    .expect("static EndpointSlice")
}

/// A merge patch moving the first endpoint of Service `index` to the
/// `change`-th fresh address, stamped `trigger_time`.
pub fn endpoint_change(
    index: usize,
    change: usize,
    trigger_time: &str,
) -> (String, serde_json::Value) {
    let mut addresses: Vec<Ipv4Addr> = (0..ENDPOINTS_PER_SERVICE)
        .map(|e| endpoint_ip(index, e))
        .collect();
    addresses[0] = changed_ip(change);
    (
        slice_name(index),
        json!({
            "metadata": {"annotations": {TRIGGER_TIME: trigger_time}},
            "endpoints": endpoints(&addresses),
        }),
    )
}

/// `count` Service indices spread evenly over `0..services`, so first-packet
/// probes meet rules from the whole length of the service chain.
pub fn spread(services: usize, count: usize) -> Vec<usize> {
    let count = count.min(services);
    (0..count).map(|i| i * services / count).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn addresses_are_distinct_and_stay_in_their_ranges() {
        let mut seen = HashSet::new();
        for s in [0, 1, MAX_SERVICES - 1] {
            for e in 0..ENDPOINTS_PER_SERVICE {
                let ip = endpoint_ip(s, e);
                assert_eq!(ip.octets()[..2], [10, 244], "{ip}");
                assert!(seen.insert(ip), "{ip} twice");
            }
        }
        assert_eq!(endpoint_ip(0, 0), Ipv4Addr::new(10, 244, 0, 1));
        assert_eq!(
            endpoint_ip(MAX_SERVICES - 1, 4),
            Ipv4Addr::new(10, 244, 255, 250)
        );
        assert_eq!(
            changed_ip(MAX_CHANGES - 1),
            Ipv4Addr::new(10, 245, 255, 254)
        );
    }

    #[test]
    fn a_slice_belongs_to_its_service_and_carries_the_trigger_time() {
        let slice = endpoint_slice(7, "2026-12-06T02:30:00.5Z");
        let labels = slice.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/service-name"], "svc-7");
        assert_eq!(
            slice.metadata.annotations.unwrap()[TRIGGER_TIME],
            "2026-12-06T02:30:00.5Z"
        );
        let endpoints = slice.endpoints.unwrap();
        assert_eq!(endpoints.len(), ENDPOINTS_PER_SERVICE);
        assert_eq!(endpoints[0].addresses, vec!["10.244.0.36"]);
        let svc = service(7);
        assert!(svc.spec.unwrap().selector.is_none(), "selectorless");
    }

    #[test]
    fn a_change_moves_one_endpoint_only() {
        let (name, patch) = endpoint_change(7, 3, "t");
        assert_eq!(name, "svc-7-bench");
        let eps = patch["endpoints"].as_array().unwrap();
        assert_eq!(eps.len(), ENDPOINTS_PER_SERVICE);
        assert_eq!(eps[0]["addresses"][0], "10.245.0.4");
        assert_eq!(eps[1]["addresses"][0], "10.244.0.37");
    }

    #[test]
    fn probes_spread_over_all_services() {
        assert_eq!(spread(10, 5), vec![0, 2, 4, 6, 8]);
        assert_eq!(spread(3, 5), vec![0, 1, 2]);
        assert!(spread(0, 5).is_empty());
    }
}
