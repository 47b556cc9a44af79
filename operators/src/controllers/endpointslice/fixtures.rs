//! Test objects: a Service `svc`-like in namespace `ns`, ready running pods
//! on `node-1`, nodes with zones, and slices owned by a Service.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Node, Pod, PodCondition, PodIP, PodSpec, PodStatus, Service,
    ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::plan::{MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, owner_reference};

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A ClusterIP IPv4 Service with one port `http` 80 → 8080/TCP.
pub fn service(name: &str, selector: &[(&str, &str)]) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(map(selector)),
            cluster_ip: Some("10.96.0.10".into()),
            ip_families: Some(vec!["IPv4".into()]),
            type_: Some("ClusterIP".into()),
            ports: Some(vec![service_port(
                "http",
                80,
                IntOrString::Int(8080),
                "TCP",
            )]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn service_without_selector(name: &str) -> Service {
    let mut s = service(name, &[]);
    s.spec.as_mut().unwrap().selector = None;
    s
}

pub fn service_port(name: &str, port: i32, target: IntOrString, protocol: &str) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(target),
        protocol: Some(protocol.into()),
        ..Default::default()
    }
}

pub fn container_port(name: &str, port: i32, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some(protocol.into()),
        ..Default::default()
    }
}

/// The endpoint port a plain test Service port becomes.
pub fn service_port_ep(name: &str, port: i32) -> EndpointPort {
    EndpointPort {
        name: Some(name.into()),
        port: Some(port),
        protocol: Some("TCP".into()),
        app_protocol: None,
    }
}

/// A running, Ready pod labelled `app=a` on `node-1` with the given IPs.
pub fn pod_ips(name: &str, ips: &[&str]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(map(&[("app", "a")])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("node-1".into()),
            containers: vec![Container {
                name: "main".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: ips.first().map(|ip| ip.to_string()),
            pod_ips: Some(ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// As [`pod_ips`] with one IP, or none for `""`.
pub fn pod(name: &str, ip: &str) -> Pod {
    if ip.is_empty() {
        pod_ips(name, &[])
    } else {
        pod_ips(name, &[ip])
    }
}

pub fn not_ready(mut p: Pod) -> Pod {
    for c in p.status.as_mut().unwrap().conditions.iter_mut().flatten() {
        if c.type_ == "Ready" {
            c.status = "False".into();
        }
    }
    p
}

pub fn terminating(mut p: Pod) -> Pod {
    p.metadata.deletion_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
    p
}

pub fn with_phase(mut p: Pod, phase: &str) -> Pod {
    p.status.as_mut().unwrap().phase = Some(phase.into());
    p
}

/// A Ready node with a zone label and 4 allocatable CPUs.
pub fn node(name: &str, zone: Option<&str>) -> Node {
    let mut labels = BTreeMap::new();
    if let Some(zone) = zone {
        labels.insert(super::desired::ZONE_LABEL.to_string(), zone.to_string());
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": labels},
        "status": {
            "allocatable": {"cpu": "4"},
            "conditions": [{"type": "Ready", "status": "True"}],
        }
    }))
    .unwrap()
}

/// A ready endpoint for pod `pod` at `ip` on `node-1`, as the controller
/// writes it.
pub fn endpoint(ip: &str, pod: &str) -> Endpoint {
    Endpoint {
        addresses: vec![ip.into()],
        conditions: Some(EndpointConditions {
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
        }),
        node_name: Some("node-1".into()),
        target_ref: Some(k8s_openapi::api::core::v1::ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some("ns".into()),
            name: Some(pod.into()),
            uid: Some(format!("uid-{pod}")),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An IPv4 slice of Service `svc` (owned by `service(svc, …)`) with the
/// port `http` 8080 and ready endpoints `(ip, pod)`.
pub fn slice_with(name: &str, svc: &str, endpoints: &[(&str, &str)]) -> EndpointSlice {
    let owner = service(svc, &[]);
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(format!("uid-{name}")),
            generation: Some(1),
            resource_version: Some("1".into()),
            labels: Some(map(&[
                (SERVICE_NAME_LABEL, svc),
                (MANAGED_BY_LABEL, MANAGED_BY),
            ])),
            owner_references: Some(vec![owner_reference(&owner)]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(endpoints.iter().map(|(ip, p)| endpoint(ip, p)).collect()),
        ports: Some(vec![service_port_ep("http", 8080)]),
    }
}
