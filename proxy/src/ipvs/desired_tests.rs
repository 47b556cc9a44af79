//! Table tests of the desired state, after upstream's proxier_test.go
//! (TestClusterIPEndpoint, TestNodePort..., TestLoadBalancerSourceRanges,
//! TestOnlyLocal..., TestSessionAffinity...).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::*;
use crate::tracker::{IpFamily, SERVICE_NAME_LABEL, Tracker};

const NODE: &str = "node1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(crate) fn options() -> DesiredOptions {
    DesiredOptions {
        family: IpFamily::V4,
        scheduler: String::new(),
        node_port_ips: vec![ip("192.168.0.2"), ip("10.1.0.2")],
        node_ip: Some(ip("192.168.0.2")),
        local_addresses: BTreeSet::from([ip("192.168.0.2"), ip("10.1.0.2"), ip("192.168.0.50")]),
    }
}

pub(crate) fn svc(name: &str, spec: Value) -> Service {
    let mut spec = spec;
    let cluster_ip = spec["clusterIP"].clone();
    spec["clusterIPs"] = json!([cluster_ip]);
    serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": name}, "spec": spec}))
        .unwrap()
}

pub(crate) fn with_lb(mut service: Service, ingress: Value) -> Service {
    service.status =
        Some(serde_json::from_value(json!({"loadBalancer": {"ingress": ingress}})).unwrap());
    service
}

pub(crate) fn eps(name: &str, protocol: &str, endpoints: Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": format!("{name}-abcde"), "labels": {SERVICE_NAME_LABEL: name}},
        "addressType": "IPv4",
        "ports": [{"name": "p80", "port": 8080, "protocol": protocol}],
        "endpoints": endpoints
    }))
    .unwrap()
}

pub(crate) fn ep(address: &str, node: &str) -> Value {
    json!({"addresses": [address], "nodeName": node})
}

pub(crate) fn tracker(services: &[Service], slices: &[EndpointSlice]) -> Tracker {
    let mut tracker = Tracker::new(IpFamily::V4, NODE);
    for s in services {
        tracker.apply_service(s);
    }
    for s in slices {
        tracker.apply_endpoint_slice(s);
    }
    tracker
}

fn port80(protocol: &str) -> Value {
    json!([{"name": "p80", "port": 80, "protocol": protocol}])
}

/// The API only sets a nodePort on NodePort and LoadBalancer Services.
fn node_port80(protocol: &str) -> Value {
    json!([{"name": "p80", "port": 80, "protocol": protocol, "nodePort": 30080}])
}

/// Each virtual server as `key sched flags timeout -> rs:weight ...`.
fn servers(desired: &Desired) -> Vec<String> {
    desired
        .services
        .values()
        .map(|s| {
            let rs: Vec<String> = (s.real_servers.iter())
                .map(|r| format!("{}:{}", r.address, r.weight))
                .collect();
            format!(
                "{} {} {:#x} {} -> {}",
                s.server.key,
                s.server.scheduler,
                s.server.flags,
                s.server.timeout,
                rs.join(" ")
            )
            .trim_end()
            .to_string()
        })
        .collect()
}

fn set(desired: &Desired, set: Set) -> Vec<&str> {
    (desired.sets.get(&set).into_iter().flatten())
        .map(String::as_str)
        .collect()
}

fn addrs(desired: &Desired) -> Vec<String> {
    desired
        .dummy_addresses
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn cluster_ip_gets_a_round_robin_server_with_every_ready_endpoint() {
    let t = tracker(
        &[svc(
            "svc1",
            json!({"clusterIP": "172.30.0.41", "ports": port80("TCP")}),
        )],
        &[eps(
            "svc1",
            "TCP",
            json!([ep("10.180.0.1", "node2"), ep("10.180.0.2", NODE)]),
        )],
    );
    let d = desired_state(&t, &options());
    assert_eq!(
        servers(&d),
        ["172.30.0.41:80/TCP rr 0x0 0 -> 10.180.0.1:8080:1 10.180.0.2:8080:1"]
    );
    assert_eq!(addrs(&d), ["172.30.0.41"]);
    assert_eq!(set(&d, Set::ClusterIp), ["172.30.0.41,tcp:80"]);
    assert_eq!(set(&d, Set::IpvsIps), ["172.30.0.41"]);
    assert_eq!(
        set(&d, Set::LoopBack),
        ["10.180.0.2,tcp:8080,10.180.0.2"],
        "hairpin entry for the local endpoint only"
    );
    assert!(d.no_node_access.is_empty());
}

#[test]
fn a_service_without_endpoints_still_has_its_server() {
    let t = tracker(
        &[svc(
            "svc1",
            json!({"clusterIP": "172.30.0.41", "ports": port80("UDP")}),
        )],
        &[],
    );
    let d = desired_state(&t, &options());
    assert_eq!(servers(&d), ["172.30.0.41:80/UDP rr 0x0 0 ->"]);
    assert_eq!(set(&d, Set::ClusterIp), ["172.30.0.41,udp:80"]);
}

#[test]
fn client_ip_affinity_is_persistence_with_its_timeout_and_schedulers_are_passed() {
    let service = svc(
        "svc1",
        json!({"clusterIP": "172.30.0.41", "ports": port80("TCP"), "sessionAffinity": "ClientIP",
               "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 300}}}),
    );
    let t = tracker(&[service], &[]);
    assert_eq!(
        servers(&desired_state(&t, &options())),
        ["172.30.0.41:80/TCP rr 0x1 300 ->"]
    );
    let mh = DesiredOptions {
        scheduler: "mh".into(),
        ..options()
    };
    assert_eq!(
        servers(&desired_state(&t, &mh)),
        ["172.30.0.41:80/TCP mh 0x11 300 ->"],
        "mh hashes the source port too"
    );
    let wrr = DesiredOptions {
        scheduler: "wrr".into(),
        ..options()
    };
    assert_eq!(
        servers(&desired_state(&t, &wrr)),
        ["172.30.0.41:80/TCP wrr 0x1 300 ->"]
    );
}

#[test]
fn node_ports_get_a_server_on_each_node_port_address() {
    let service = svc(
        "svc1",
        json!({"type": "NodePort", "clusterIP": "172.30.0.41", "ports": node_port80("TCP")}),
    );
    let t = tracker(
        &[service],
        &[eps("svc1", "TCP", json!([ep("10.180.0.1", "node2")]))],
    );
    let d = desired_state(&t, &options());
    assert_eq!(
        servers(&d),
        [
            "10.1.0.2:30080/TCP rr 0x0 0 -> 10.180.0.1:8080:1",
            "172.30.0.41:80/TCP rr 0x0 0 -> 10.180.0.1:8080:1",
            "192.168.0.2:30080/TCP rr 0x0 0 -> 10.180.0.1:8080:1",
        ]
    );
    assert_eq!(addrs(&d), ["172.30.0.41"], "node addresses are not bound");
    assert_eq!(set(&d, Set::NodePortTcp), ["30080"]);
    assert!(set(&d, Set::NodePortLocalTcp).is_empty());

    let none = DesiredOptions {
        node_port_ips: vec![],
        ..options()
    };
    let d = desired_state(&t, &none);
    assert_eq!(
        d.services.len(),
        1,
        "no NodePort address: no NodePort server"
    );
    assert!(set(&d, Set::NodePortTcp).is_empty());
}

#[test]
fn udp_and_sctp_node_ports_use_their_sets() {
    let udp = svc(
        "udp",
        json!({"type": "NodePort", "clusterIP": "172.30.0.41", "ports": node_port80("UDP"),
               "externalTrafficPolicy": "Local"}),
    );
    let sctp = svc(
        "sctp",
        json!({"type": "NodePort", "clusterIP": "172.30.0.42",
               "ports": [{"name": "p80", "port": 80, "protocol": "SCTP", "nodePort": 30081}],
               "externalTrafficPolicy": "Local"}),
    );
    let d = desired_state(&tracker(&[udp, sctp], &[]), &options());
    assert_eq!(set(&d, Set::NodePortUdp), ["30080"]);
    assert_eq!(set(&d, Set::NodePortLocalUdp), ["30080"]);
    assert_eq!(
        set(&d, Set::NodePortSctp),
        ["10.1.0.2,sctp:30081", "192.168.0.2,sctp:30081"]
    );
    assert_eq!(set(&d, Set::NodePortLocalSctp), set(&d, Set::NodePortSctp));
    assert!(
        d.services
            .keys()
            .any(|k| k.to_string() == "192.168.0.2:30081/SCTP")
    );
}

#[test]
fn external_policy_local_uses_local_endpoints_and_falls_back_to_the_cluster_ones() {
    let service = svc(
        "svc1",
        json!({"type": "NodePort", "clusterIP": "172.30.0.41", "ports": node_port80("TCP"),
               "externalIPs": ["192.168.99.1"], "externalTrafficPolicy": "Local"}),
    );
    let both = eps(
        "svc1",
        "TCP",
        json!([ep("10.180.0.1", "node2"), ep("10.180.0.2", NODE)]),
    );
    let d = desired_state(
        &tracker(std::slice::from_ref(&service), &[both]),
        &options(),
    );
    assert_eq!(
        servers(&d),
        [
            "10.1.0.2:30080/TCP rr 0x0 0 -> 10.180.0.2:8080:1",
            "172.30.0.41:80/TCP rr 0x0 0 -> 10.180.0.1:8080:1 10.180.0.2:8080:1",
            "192.168.0.2:30080/TCP rr 0x0 0 -> 10.180.0.2:8080:1",
            "192.168.99.1:80/TCP rr 0x0 0 -> 10.180.0.2:8080:1",
        ]
    );
    assert_eq!(set(&d, Set::ExternalIpLocal), ["192.168.99.1,tcp:80"]);
    assert!(set(&d, Set::ExternalIp).is_empty());
    assert_eq!(set(&d, Set::NodePortLocalTcp), ["30080"]);

    let remote_only = eps("svc1", "TCP", json!([ep("10.180.0.1", "node2")]));
    let d = desired_state(&tracker(&[service], &[remote_only]), &options());
    assert!(
        (d.services.values()).all(|s| s.real_servers.len() == 1),
        "no local endpoint: the cluster-wide ones, as upstream"
    );
}

#[test]
fn internal_policy_local_narrows_the_cluster_ip_server() {
    let service = svc(
        "svc1",
        json!({"clusterIP": "172.30.0.41", "ports": port80("TCP"), "internalTrafficPolicy": "Local"}),
    );
    let slice = eps(
        "svc1",
        "TCP",
        json!([ep("10.180.0.1", "node2"), ep("10.180.0.2", NODE)]),
    );
    let d = desired_state(&tracker(&[service], &[slice]), &options());
    assert_eq!(
        servers(&d),
        ["172.30.0.41:80/TCP rr 0x0 0 -> 10.180.0.2:8080:1"]
    );
}

#[test]
fn terminating_endpoints_serve_only_when_none_is_ready() {
    let service = svc(
        "svc1",
        json!({"clusterIP": "172.30.0.41", "ports": port80("TCP")}),
    );
    let terminating = |address: &str, serving: bool| {
        json!({"addresses": [address], "nodeName": "node2",
               "conditions": {"ready": false, "serving": serving, "terminating": true}})
    };
    let mixed = eps(
        "svc1",
        "TCP",
        json!([ep("10.180.0.1", "node2"), terminating("10.180.0.2", true)]),
    );
    let d = desired_state(
        &tracker(std::slice::from_ref(&service), &[mixed]),
        &options(),
    );
    assert_eq!(
        servers(&d),
        ["172.30.0.41:80/TCP rr 0x0 0 -> 10.180.0.1:8080:1"]
    );
    let only_terminating = eps(
        "svc1",
        "TCP",
        json!([
            terminating("10.180.0.2", true),
            terminating("10.180.0.3", false)
        ]),
    );
    let d = desired_state(&tracker(&[service], &[only_terminating]), &options());
    assert_eq!(
        servers(&d),
        ["172.30.0.41:80/TCP rr 0x0 0 -> 10.180.0.2:8080:1"],
        "serving-terminating only"
    );
}

#[test]
fn external_ips_on_a_node_interface_are_not_bound() {
    let service = svc(
        "svc1",
        json!({"clusterIP": "172.30.0.41", "ports": port80("TCP"),
               "externalIPs": ["192.168.0.50", "192.168.99.1"]}),
    );
    let d = desired_state(&tracker(&[service], &[]), &options());
    assert_eq!(addrs(&d), ["172.30.0.41", "192.168.99.1"]);
    assert_eq!(set(&d, Set::IpvsIps), ["172.30.0.41", "192.168.99.1"]);
    assert_eq!(
        set(&d, Set::ExternalIp),
        ["192.168.0.50,tcp:80", "192.168.99.1,tcp:80"]
    );
    assert_eq!(d.services.len(), 3);
}

#[test]
fn load_balancers_with_source_ranges() {
    let service = |ranges: Value| {
        with_lb(
            svc(
                "lb",
                json!({"type": "LoadBalancer", "clusterIP": "172.30.0.41", "ports": node_port80("TCP"),
                       "loadBalancerSourceRanges": ranges, "externalTrafficPolicy": "Local",
                       "healthCheckNodePort": 31000}),
            ),
            json!([{"ip": "203.0.113.9"}, {"ip": "203.0.113.10", "ipMode": "Proxy"}]),
        )
    };
    let d = desired_state(
        &tracker(&[service(json!(["198.51.100.0/24"]))], &[]),
        &options(),
    );
    assert_eq!(set(&d, Set::LoadBalancer), ["203.0.113.9,tcp:80"]);
    assert_eq!(set(&d, Set::LoadBalancerLocal), ["203.0.113.9,tcp:80"]);
    assert_eq!(set(&d, Set::LoadBalancerFw), ["203.0.113.9,tcp:80"]);
    assert_eq!(
        set(&d, Set::LoadBalancerSourceCidr),
        ["203.0.113.9,tcp:80,198.51.100.0/24"]
    );
    assert!(set(&d, Set::LoadBalancerSourceIp).is_empty());
    assert_eq!(
        d.no_node_access,
        [NoNodeAccess {
            address: ip("203.0.113.9"),
            port: 80,
            protocol: Protocol::Tcp
        }]
    );
    assert_eq!(set(&d, Set::HealthCheckNodePort), ["31000"]);
    assert!(addrs(&d).contains(&"203.0.113.9".to_string()));
    assert!(
        !addrs(&d).contains(&"203.0.113.10".to_string()),
        "ipMode Proxy"
    );

    let d = desired_state(
        &tracker(
            &[service(json!(["198.51.100.0/24", "192.168.0.0/24"]))],
            &[],
        ),
        &options(),
    );
    assert_eq!(
        set(&d, Set::LoadBalancerSourceIp),
        ["203.0.113.9,tcp:80,203.0.113.9"],
        "the node's IP is in a range"
    );
    assert!(d.no_node_access.is_empty());

    let d = desired_state(&tracker(&[service(json!([]))], &[]), &options());
    assert!(set(&d, Set::LoadBalancerFw).is_empty());

    let d = desired_state(
        &tracker(
            &[service(json!(["198.51.100.7/24", "203.0.113.1/32"]))],
            &[],
        ),
        &options(),
    );
    assert_eq!(
        set(&d, Set::LoadBalancerSourceCidr),
        [
            "203.0.113.9,tcp:80,198.51.100.0/24",
            "203.0.113.9,tcp:80,203.0.113.1"
        ],
        "as ipset prints them back"
    );
}

#[test]
fn endpoint_addresses_are_real_servers_by_socket_address() {
    let t = tracker(
        &[svc(
            "svc1",
            json!({"clusterIP": "172.30.0.41", "ports": port80("TCP")}),
        )],
        &[eps("svc1", "TCP", json!([ep("10.180.0.1", "node2")]))],
    );
    let d = desired_state(&t, &options());
    let rs = &d.services.values().next().unwrap().real_servers;
    assert_eq!(
        rs[0].address,
        "10.180.0.1:8080".parse::<SocketAddr>().unwrap()
    );
}

#[test]
fn ipv6_services_use_the_v6_family_only() {
    let mut tracker = Tracker::new(IpFamily::V6, NODE);
    tracker.apply_service(
        &serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": "svc1"},
            "spec": {"type": "NodePort", "clusterIP": "fd00::41", "clusterIPs": ["172.30.0.41", "fd00::41"],
                     "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 30080}]}
        }))
        .unwrap(),
    );
    tracker.apply_endpoint_slice(
        &serde_json::from_value(json!({
            "metadata": {"namespace": "ns", "name": "svc1-v6", "labels": {SERVICE_NAME_LABEL: "svc1"}},
            "addressType": "IPv6",
            "ports": [{"name": "p80", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["fd00:180::1"], "nodeName": NODE}]
        }))
        .unwrap(),
    );
    let v6 = DesiredOptions {
        family: IpFamily::V6,
        node_port_ips: vec![ip("fd00:1::2")],
        node_ip: Some(ip("fd00:1::2")),
        local_addresses: BTreeSet::from([ip("fd00:1::2")]),
        ..options()
    };
    let d = desired_state(&tracker, &v6);
    assert_eq!(
        servers(&d),
        [
            "[fd00::41]:80/TCP rr 0x0 0 -> [fd00:180::1]:8080:1",
            "[fd00:1::2]:30080/TCP rr 0x0 0 -> [fd00:180::1]:8080:1",
        ]
    );
    assert_eq!(set(&d, Set::ClusterIp), ["fd00::41,tcp:80"]);
    assert_eq!(set(&d, Set::LoopBack), ["fd00:180::1,tcp:8080,fd00:180::1"]);
    assert_eq!(addrs(&d), ["fd00::41"]);
}
