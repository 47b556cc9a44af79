//! Endpoints: each ready endpoint of a Service in exactly one of its
//! EndpointSlices (per port set), and the slices' ready addresses the same
//! as its Endpoints' ready addresses.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use super::{Invariant, Violation, object_name};

pub(super) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A slice's ports as one comparable text: an address may be in one slice
/// per distinct port set (pods of one Service exposing different ports).
fn port_set(slice: &EndpointSlice) -> String {
    let mut ports: Vec<String> = slice
        .ports
        .iter()
        .flatten()
        .map(|p| {
            format!(
                "{}:{}/{}",
                p.name.as_deref().unwrap_or(""),
                p.port.unwrap_or(0),
                p.protocol.as_deref().unwrap_or("TCP")
            )
        })
        .collect();
    ports.sort();
    ports.join(",")
}

/// Per Service with a selector: no ready endpoint address in two slices of
/// one port set, and the ready addresses of its slices equal to those of
/// its Endpoints object.
pub fn ready_endpoints_in_one_slice_and_in_endpoints(
    services: &[Service],
    slices: &[EndpointSlice],
    endpoints: &[Endpoints],
) -> Vec<Violation> {
    let mut found = vec![];
    for service in services {
        if service.metadata.deletion_timestamp.is_some()
            || service
                .spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_none_or(|s| s.is_empty())
        {
            continue;
        }
        let ns = service.namespace();
        let name = service.name_any();
        let mine: Vec<&EndpointSlice> = slices
            .iter()
            .filter(|s| s.namespace() == ns && s.labels().get(SERVICE_NAME_LABEL) == Some(&name))
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .collect();
        // (address, port set) → the slices holding it ready.
        let mut holders: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for slice in &mine {
            let ports = port_set(slice);
            for endpoint in slice.endpoints.iter().flatten() {
                // The API: an unset `ready` is to be read as ready.
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !ready {
                    continue;
                }
                for address in &endpoint.addresses {
                    holders
                        .entry((address.clone(), ports.clone()))
                        .or_default()
                        .push(object_name(*slice));
                }
            }
        }
        for ((address, _), in_slices) in &holders {
            if in_slices.len() > 1 {
                let mut objects = vec![object_name(service)];
                objects.extend(in_slices.iter().cloned());
                found.push(Violation::new(
                    Invariant::EndpointsAgree,
                    objects,
                    format!("ready endpoint {address} in {} slices", in_slices.len()),
                ));
            }
        }
        let in_slices: BTreeSet<&str> = holders.keys().map(|(a, _)| a.as_str()).collect();
        let object = endpoints
            .iter()
            .find(|e| e.namespace() == ns && e.name_any() == name);
        let in_endpoints: BTreeSet<&str> = object
            .map(|e| {
                e.subsets
                    .iter()
                    .flatten()
                    .flat_map(|s| s.addresses.iter().flatten())
                    .map(|a| a.ip.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let endpoints_name = format!("Endpoints/{}/{name}", ns.clone().unwrap_or_default());
        for address in in_slices.difference(&in_endpoints) {
            found.push(Violation::new(
                Invariant::EndpointsAgree,
                vec![object_name(service), endpoints_name.clone()],
                format!("ready endpoint {address} of a slice is missing from the Endpoints"),
            ));
        }
        for address in in_endpoints.difference(&in_slices) {
            found.push(Violation::new(
                Invariant::EndpointsAgree,
                vec![object_name(service), endpoints_name.clone()],
                format!("ready address {address} of the Endpoints is in no slice"),
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::from;
    use super::*;
    use serde_json::{Value, json};

    fn service() -> Service {
        from(json!({"metadata": {"name": "s", "namespace": "ns"},
                    "spec": {"selector": {"app": "a"}}}))
    }

    fn slice(name: &str, endpoints: Value) -> EndpointSlice {
        from(json!({
            "metadata": {"name": name, "namespace": "ns", "labels": {SERVICE_NAME_LABEL: "s"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        }))
    }

    fn ready(ip: &str, ready: bool) -> Value {
        json!({"addresses": [ip], "conditions": {"ready": ready}})
    }

    fn endpoints(ready: &[&str], not_ready: &[&str]) -> Endpoints {
        let addrs =
            |ips: &[&str]| -> Vec<Value> { ips.iter().map(|ip| json!({"ip": ip})).collect() };
        from(json!({
            "metadata": {"name": "s", "namespace": "ns"},
            "subsets": [{"addresses": addrs(ready), "notReadyAddresses": addrs(not_ready),
                         "ports": [{"name": "http", "port": 8080}]}],
        }))
    }

    #[test]
    fn agreeing_slices_and_endpoints_pass() {
        let slices = [
            slice(
                "s-1",
                json!([ready("10.0.0.1", true), ready("10.0.0.2", false)]),
            ),
            slice("s-2", json!([ready("10.0.0.3", true)])),
        ];
        let found = ready_endpoints_in_one_slice_and_in_endpoints(
            &[service()],
            &slices,
            &[endpoints(&["10.0.0.1", "10.0.0.3"], &["10.0.0.2"])],
        );
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn an_endpoint_in_two_slices_is_caught() {
        let slices = [
            slice("s-1", json!([ready("10.0.0.1", true)])),
            slice("s-2", json!([ready("10.0.0.1", true)])),
        ];
        let found = ready_endpoints_in_one_slice_and_in_endpoints(
            &[service()],
            &slices,
            &[endpoints(&["10.0.0.1"], &[])],
        );
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].objects,
            [
                "Service/ns/s",
                "EndpointSlice/ns/s-1",
                "EndpointSlice/ns/s-2"
            ]
        );
    }

    #[test]
    fn slices_and_endpoints_disagreeing_either_way_are_caught() {
        let slices = [slice("s-1", json!([ready("10.0.0.1", true)]))];
        let found = ready_endpoints_in_one_slice_and_in_endpoints(
            &[service()],
            &slices,
            &[endpoints(&["10.0.0.9"], &["10.0.0.1"])],
        );
        let details: Vec<&str> = found.iter().map(|v| v.detail.as_str()).collect();
        assert_eq!(
            details,
            [
                "ready endpoint 10.0.0.1 of a slice is missing from the Endpoints",
                "ready address 10.0.0.9 of the Endpoints is in no slice",
            ]
        );
        // No Endpoints object at all: every ready slice endpoint is missing.
        let found = ready_endpoints_in_one_slice_and_in_endpoints(&[service()], &slices, &[]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].objects, ["Service/ns/s", "Endpoints/ns/s"]);
    }

    #[test]
    fn services_without_selectors_are_left_alone() {
        let mut manual = service();
        manual.spec.as_mut().unwrap().selector = None;
        let slices = [slice("s-1", json!([ready("10.0.0.1", true)]))];
        assert!(ready_endpoints_in_one_slice_and_in_endpoints(&[manual], &slices, &[]).is_empty());
    }
}
