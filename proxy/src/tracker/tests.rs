use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::*;

const NODE: &str = "node-a";

fn service(value: serde_json::Value) -> Service {
    serde_json::from_value(value).unwrap()
}

fn slice(value: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(value).unwrap()
}

fn cluster_ip_service(ns: &str, name: &str, ip: &str) -> Service {
    service(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "p80", "port": 80, "protocol": "TCP"}]}
    }))
}

fn spn(ns: &str, name: &str, port: &str) -> ServicePortName {
    ServicePortName::new(ServiceName::new(ns, name), port, Protocol::Tcp)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn slice_of(
    ns: &str,
    service: &str,
    slice_name: &str,
    endpoints: serde_json::Value,
) -> EndpointSlice {
    slice(json!({
        "metadata": {"namespace": ns, "name": slice_name, "labels": {SERVICE_NAME_LABEL: service}},
        "addressType": "IPv4",
        "ports": [{"name": "p80", "port": 80, "protocol": "TCP"}],
        "endpoints": endpoints
    }))
}

fn addrs(endpoints: &[EndpointInfo]) -> Vec<String> {
    endpoints.iter().map(ToString::to_string).collect()
}

fn addr_refs(endpoints: &[&EndpointInfo]) -> Vec<String> {
    endpoints.iter().map(ToString::to_string).collect()
}

#[test]
fn service_ports_carry_what_the_rules_need() {
    let mut tracker = Tracker::new(IpFamily::V4, NODE);
    tracker.apply_service(&service(json!({
        "metadata": {"namespace": "ns", "name": "lb"},
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": "172.30.0.1", "clusterIPs": ["fd00::1", "172.30.0.1"],
            "ports": [
                {"name": "http", "port": 80, "nodePort": 30080},
                {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}
            ],
            "sessionAffinity": "ClientIP",
            "externalIPs": ["192.168.9.1", "fd00::9"],
            "loadBalancerSourceRanges": [" 203.0.113.0/24 ", "2001:db8::/32"],
            "externalTrafficPolicy": "Local",
            "internalTrafficPolicy": "Cluster",
            "healthCheckNodePort": 31000,
            "trafficDistribution": "PreferClose"
        },
        "status": {"loadBalancer": {"ingress": [
            {"ip": "198.51.100.1"}, {"ip": "198.51.100.2", "ipMode": "Proxy"}, {"hostname": "lb.example"}, {"ip": "fd00::7"}
        ]}}
    })));
    let ports: Vec<_> = tracker
        .service_ports()
        .map(|(n, _)| n.to_string())
        .collect();
    assert_eq!(ports, ["ns/lb:dns", "ns/lb:http"]);
    let http = tracker.service_port(&spn("ns", "lb", "http")).unwrap();
    assert_eq!(
        *http,
        ServicePortInfo {
            cluster_ip: ip("172.30.0.1"),
            port: 80,
            protocol: Protocol::Tcp,
            node_port: 30080,
            sticky_seconds: Some(DEFAULT_STICKY_SECONDS),
            external_ips: vec![ip("192.168.9.1")],
            load_balancer_vips: vec![ip("198.51.100.1")],
            load_balancer_firewall: true,
            load_balancer_source_ranges: vec!["203.0.113.0/24".parse().unwrap()],
            external_policy_local: true,
            internal_policy_local: false,
            health_check_node_port: 31000,
            traffic_distribution: Some("PreferClose".into()),
        }
    );
    let dns = ServicePortName::new(ServiceName::new("ns", "lb"), "dns", Protocol::Udp);
    assert_eq!(tracker.service_port(&dns).unwrap().protocol, Protocol::Udp);
}

#[test]
fn services_without_a_cluster_ip_of_the_family_are_skipped() {
    let mut tracker = Tracker::new(IpFamily::V4, NODE);
    let headless = cluster_ip_service("ns", "headless", "None");
    let v6_only = cluster_ip_service("ns", "v6", "fd00::1");
    let external_name = service(json!({
        "metadata": {"namespace": "ns", "name": "ext"},
        "spec": {"type": "ExternalName", "externalName": "example.com", "ports": [{"port": 80}]}
    }));
    let no_ip = service(
        json!({"metadata": {"namespace": "ns", "name": "none"}, "spec": {"ports": [{"port": 80}]}}),
    );
    for svc in [&headless, &v6_only, &external_name, &no_ip] {
        assert!(!tracker.apply_service(svc), "{:?}", svc.metadata.name);
    }
    assert_eq!(tracker.service_ports().count(), 0);
    assert_eq!(tracker.pending_changes(), 0);
}

#[test]
fn session_affinity_timeout_and_policies() {
    let mut tracker = Tracker::new(IpFamily::V4, NODE);
    tracker.apply_service(&service(json!({
        "metadata": {"namespace": "ns", "name": "s"},
        "spec": {
            "clusterIP": "172.30.0.2",
            "ports": [{"port": 80}],
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 300}},
            // Local external policy means nothing without external access.
            "externalTrafficPolicy": "Local",
            "internalTrafficPolicy": "Local",
            "healthCheckNodePort": 31000
        }
    })));
    let info = tracker.service_port(&spn("ns", "s", "")).unwrap();
    assert_eq!(info.sticky_seconds, Some(300));
    assert!(!info.external_policy_local);
    assert!(info.internal_policy_local);
    assert_eq!(info.health_check_node_port, 0);
    assert!(!info.uses_cluster_endpoints());
    assert!(info.uses_local_endpoints());
}

#[test]
fn endpoints_merge_all_slices_of_a_service() {
    let mut tracker = Tracker::new(IpFamily::V4, NODE);
    tracker.apply_service(&cluster_ip_service("ns", "svc", "172.30.0.3"));
    tracker.apply_endpoint_slice(&slice_of(
        "ns",
        "svc",
        "svc-b",
        json!([
            {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "terminating": true}, "nodeName": "node-b"},
            {"addresses": ["10.0.0.10"], "conditions": {"ready": false, "serving": true, "terminating": true}, "nodeName": "node-b"}
        ]),
    ));
    tracker.apply_endpoint_slice(&slice_of(
        "ns",
        "svc",
        "svc-a",
        json!([
            {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "nodeName": NODE, "zone": "z1",
             "hints": {"forZones": [{"name": "z1"}], "forNodes": [{"name": NODE}]}},
            // The same endpoint in two slices: the non-terminating copy wins.
            {"addresses": ["10.0.0.2"], "nodeName": NODE}
        ]),
    ));
    // Ignored: no service label, another family, FQDN.
    let mut unlabelled = slice_of("ns", "svc", "stray", json!([{"addresses": ["10.9.9.9"]}]));
    unlabelled.metadata.labels = None;
    assert!(!tracker.apply_endpoint_slice(&unlabelled));
    let mut v6 = slice_of("ns", "svc", "svc-v6", json!([{"addresses": ["fd00::5"]}]));
    v6.address_type = "IPv6".into();
    assert!(!tracker.apply_endpoint_slice(&v6));

    let endpoints = tracker.endpoints(&spn("ns", "svc", "p80"));
    assert_eq!(
        addrs(endpoints),
        ["10.0.0.10:80", "10.0.0.1:80", "10.0.0.2:80"]
    );
    let by_addr: BTreeMap<String, &EndpointInfo> =
        endpoints.iter().map(|e| (e.to_string(), e)).collect();
    let first = by_addr["10.0.0.1:80"];
    assert!(first.ready && first.serving && !first.terminating && first.is_local);
    assert_eq!(first.zone_hints.iter().collect::<Vec<_>>(), ["z1"]);
    assert_eq!(first.node_hints.iter().collect::<Vec<_>>(), [NODE]);
    assert!(
        by_addr["10.0.0.2:80"].is_local,
        "non-terminating copy preferred"
    );
    let terminating = by_addr["10.0.0.10:80"];
    assert!(!terminating.ready && terminating.serving && terminating.terminating);

    // Deleting one slice leaves the other's endpoints.
    tracker.delete_endpoint_slice(&slice_of("ns", "svc", "svc-a", json!([])));
    assert_eq!(
        addrs(tracker.endpoints(&spn("ns", "svc", "p80"))),
        ["10.0.0.10:80", "10.0.0.2:80"]
    );
    assert!(!tracker.endpoints(&spn("ns", "svc", "p80"))[1].is_local);
}

fn endpoint(
    addr: &str,
    local: bool,
    ready: bool,
    serving: bool,
    terminating: bool,
) -> EndpointInfo {
    EndpointInfo {
        address: addr.parse().unwrap(),
        is_local: local,
        ready,
        serving,
        terminating,
        zone_hints: Default::default(),
        node_hints: Default::default(),
    }
}

fn port_info(internal_local: bool, external_local: bool, node_port: u16) -> ServicePortInfo {
    ServicePortInfo {
        cluster_ip: ip("172.30.0.1"),
        port: 80,
        protocol: Protocol::Tcp,
        node_port,
        sticky_seconds: None,
        external_ips: vec![],
        load_balancer_vips: vec![],
        load_balancer_firewall: false,
        load_balancer_source_ranges: vec![],
        external_policy_local: external_local,
        internal_policy_local: internal_local,
        health_check_node_port: 0,
        traffic_distribution: None,
    }
}

#[test]
fn categorize_cluster_policy_and_terminating_fallback() {
    let eps = [
        endpoint("10.0.0.1:80", false, true, true, false),
        endpoint("10.0.0.2:80", true, false, true, true),
        endpoint("10.0.0.3:80", false, false, false, false),
    ];
    let c = categorize_endpoints(&eps, &port_info(false, false, 0), NODE, None);
    assert_eq!(addr_refs(&c.cluster), ["10.0.0.1:80"]);
    assert!(c.local.is_empty());
    assert_eq!(addr_refs(&c.all_reachable), ["10.0.0.1:80"]);
    assert!(c.has_any);

    // No ready endpoint anywhere: serving-terminating ones are used.
    let c = categorize_endpoints(&eps[1..], &port_info(false, false, 0), NODE, None);
    assert_eq!(addr_refs(&c.cluster), ["10.0.0.2:80"]);
    assert!(c.has_any);

    let c = categorize_endpoints(&eps[2..], &port_info(false, false, 0), NODE, None);
    assert!(c.cluster.is_empty() && !c.has_any);
}

#[test]
fn categorize_local_policies() {
    let eps = [
        endpoint("10.0.0.1:80", false, true, true, false),
        endpoint("10.0.0.2:80", true, false, true, true),
        endpoint("10.0.0.3:80", true, true, true, false),
    ];
    // internalTrafficPolicy Local only: local ready endpoints.
    let c = categorize_endpoints(&eps, &port_info(true, false, 0), NODE, None);
    assert!(c.cluster.is_empty());
    assert_eq!(addr_refs(&c.local), ["10.0.0.3:80"]);
    assert_eq!(addr_refs(&c.all_reachable), ["10.0.0.3:80"]);

    // externalTrafficPolicy Local with a NodePort: both sets; local ready ⊂ cluster.
    let c = categorize_endpoints(&eps, &port_info(false, true, 30000), NODE, None);
    assert_eq!(addr_refs(&c.cluster), ["10.0.0.1:80", "10.0.0.3:80"]);
    assert_eq!(addr_refs(&c.local), ["10.0.0.3:80"]);
    assert_eq!(addr_refs(&c.all_reachable), ["10.0.0.1:80", "10.0.0.3:80"]);

    // No local ready endpoint: the local set falls back to local serving-terminating
    // ones, which the cluster set lacks, so the reachable set is the union.
    let c = categorize_endpoints(&eps[..2], &port_info(false, true, 30000), NODE, None);
    assert_eq!(addr_refs(&c.cluster), ["10.0.0.1:80"]);
    assert_eq!(addr_refs(&c.local), ["10.0.0.2:80"]);
    assert_eq!(addr_refs(&c.all_reachable), ["10.0.0.1:80", "10.0.0.2:80"]);

    // Only remote endpoints: usable somewhere, none here.
    let c = categorize_endpoints(&eps[..1], &port_info(true, false, 0), NODE, None);
    assert!(c.local.is_empty() && c.all_reachable.is_empty() && c.has_any);
}

fn hinted(addr: &str, zones: &[&str], nodes: &[&str]) -> EndpointInfo {
    EndpointInfo {
        zone_hints: zones.iter().map(ToString::to_string).collect(),
        node_hints: nodes.iter().map(ToString::to_string).collect(),
        ..endpoint(addr, false, true, true, false)
    }
}

#[test]
fn categorize_topology_hints() {
    let svc = port_info(false, false, 0);
    let eps = [
        hinted("10.0.0.1:80", &["z1"], &[]),
        hinted("10.0.0.2:80", &["z2"], &[]),
        hinted("10.0.0.3:80", &["z1"], &[]),
    ];
    let c = categorize_endpoints(&eps, &svc, NODE, Some("z1"));
    assert_eq!(addr_refs(&c.cluster), ["10.0.0.1:80", "10.0.0.3:80"]);
    assert_eq!(addr_refs(&c.all_reachable), ["10.0.0.1:80", "10.0.0.3:80"]);

    // Zone unknown, or no endpoint for this zone: hints ignored.
    assert_eq!(
        categorize_endpoints(&eps, &svc, NODE, None).cluster.len(),
        3
    );
    assert_eq!(
        categorize_endpoints(&eps, &svc, NODE, Some("z9"))
            .cluster
            .len(),
        3
    );

    // One ready endpoint without a hint: hints ignored.
    let mut partial = eps.to_vec();
    partial.push(hinted("10.0.0.4:80", &[], &[]));
    assert_eq!(
        categorize_endpoints(&partial, &svc, NODE, Some("z1"))
            .cluster
            .len(),
        4
    );

    // Same-node hints win over zone hints.
    let by_node = [
        hinted("10.0.0.1:80", &["z1"], &["node-b"]),
        hinted("10.0.0.2:80", &["z1"], &[NODE]),
    ];
    let c = categorize_endpoints(&by_node, &svc, NODE, Some("z1"));
    assert_eq!(addr_refs(&c.cluster), ["10.0.0.2:80"]);
}

#[test]
fn changes_accumulate_until_taken() {
    let mut tracker = Tracker::new(IpFamily::V4, NODE);
    assert!(tracker.apply_service(&cluster_ip_service("ns", "a", "172.30.0.1")));
    assert!(tracker.apply_service(&cluster_ip_service("ns", "b", "172.30.0.2")));
    assert!(
        !tracker.apply_service(&cluster_ip_service("ns", "b", "172.30.0.2")),
        "no-op update"
    );
    tracker.apply_endpoint_slice(&slice_of(
        "ns",
        "a",
        "a-1",
        json!([{"addresses": ["10.0.0.1"]}]),
    ));
    assert_eq!(tracker.pending_counts(), (2, 1));
    let changes = tracker.take_changes();
    assert_eq!(
        changes.service_ports.into_iter().collect::<Vec<_>>(),
        [spn("ns", "a", "p80"), spn("ns", "b", "p80")]
    );
    assert!(!changes.full_sync);
    assert_eq!(tracker.pending_changes(), 0);
    assert_eq!(tracker.take_changes(), Changes::default());

    // An endpoint change touches only its service's ports.
    tracker.apply_endpoint_slice(&slice_of(
        "ns",
        "a",
        "a-1",
        json!([{"addresses": ["10.0.0.9"]}]),
    ));
    assert_eq!(
        tracker
            .take_changes()
            .service_ports
            .into_iter()
            .collect::<Vec<_>>(),
        [spn("ns", "a", "p80")]
    );

    // A change that is undone before the sync leaves nothing to do.
    tracker.apply_service(&cluster_ip_service("ns", "b", "172.30.0.99"));
    assert_eq!(tracker.pending_changes(), 1);
    tracker.apply_service(&cluster_ip_service("ns", "b", "172.30.0.2"));
    assert_eq!(tracker.pending_changes(), 0);
    assert_eq!(tracker.take_changes(), Changes::default());

    // Deleting reports the port that went away.
    assert!(tracker.delete_service("ns", "b"));
    assert!(!tracker.delete_service("ns", "b"));
    assert_eq!(
        tracker
            .take_changes()
            .service_ports
            .into_iter()
            .collect::<Vec<_>>(),
        [spn("ns", "b", "p80")]
    );
    assert!(tracker.service_port(&spn("ns", "b", "p80")).is_none());
}

fn udp_slice(service: &str, slice_name: &str, port_protocol: &str, ips: &[&str]) -> EndpointSlice {
    let endpoints: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
    slice(json!({
        "metadata": {"namespace": "ns", "name": slice_name, "labels": {SERVICE_NAME_LABEL: service}},
        "addressType": "IPv4",
        "ports": [{"name": "p", "port": 53, "protocol": port_protocol}],
        "endpoints": endpoints
    }))
}

#[test]
fn udp_endpoint_changes_ask_for_a_conntrack_cleanup() {
    let mut tracker = Tracker::new(IpFamily::V4, NODE);
    assert!(!tracker.take_conntrack_cleanup());

    // Endpoints of TCP ports alone: no cleanup.
    tracker.apply_endpoint_slice(&udp_slice("tcp", "tcp-1", "TCP", &["10.0.0.1"]));
    tracker.take_changes();
    assert!(!tracker.take_conntrack_cleanup());

    // Only changes already taken count: the sync that took them cleans.
    tracker.apply_endpoint_slice(&udp_slice("dns", "dns-1", "UDP", &["10.0.0.2"]));
    assert!(!tracker.take_conntrack_cleanup());
    tracker.take_changes();
    // Pending until taken, even across syncs that had nothing new.
    tracker.take_changes();
    assert!(tracker.take_conntrack_cleanup());
    assert!(!tracker.take_conntrack_cleanup());

    // The last UDP endpoint going away counts too (the port is gone after).
    tracker.delete_endpoint_slice(&udp_slice("dns", "dns-1", "UDP", &[]));
    tracker.take_changes();
    assert!(tracker.take_conntrack_cleanup());

    // A change undone before the sync is no change, as upstream.
    tracker.apply_endpoint_slice(&udp_slice("dns", "dns-1", "UDP", &["10.0.0.3"]));
    tracker.take_changes();
    tracker.take_conntrack_cleanup();
    tracker.apply_endpoint_slice(&udp_slice("dns", "dns-1", "UDP", &["10.0.0.4"]));
    tracker.apply_endpoint_slice(&udp_slice("dns", "dns-1", "UDP", &["10.0.0.3"]));
    tracker.take_changes();
    assert!(!tracker.take_conntrack_cleanup());

    // Service changes alone do not ask for it (upstream keys it on endpoints).
    tracker.apply_service(&service(json!({
        "metadata": {"namespace": "ns", "name": "dns"},
        "spec": {"clusterIP": "172.30.0.53", "ports": [{"name": "p", "port": 53, "protocol": "UDP"}]}
    })));
    tracker.take_changes();
    assert!(!tracker.take_conntrack_cleanup());
}

#[test]
fn node_labels_force_a_full_sync() {
    let mut tracker = Tracker::new(IpFamily::V4, NODE);
    let labels = BTreeMap::from([(ZONE_LABEL.to_string(), "z1".to_string())]);
    assert!(tracker.set_node_labels(labels.clone()));
    assert!(!tracker.set_node_labels(labels));
    assert_eq!(tracker.zone(), Some("z1"));
    assert!(tracker.take_changes().full_sync);
    assert!(!tracker.take_changes().full_sync);
}

#[test]
fn duplicate_endpoints_keep_the_non_terminating_copy() {
    let mut tracker = Tracker::new(IpFamily::V4, NODE);
    tracker.apply_service(&cluster_ip_service("ns", "svc", "172.30.0.3"));
    // A remote running pod reuses a local terminating pod's IP.
    tracker.apply_endpoint_slice(&slice_of(
        "ns",
        "svc",
        "svc-a",
        json!([{"addresses": ["10.0.0.2"], "nodeName": "node-b"}]),
    ));
    tracker.apply_endpoint_slice(&slice_of(
        "ns",
        "svc",
        "svc-b",
        json!([{"addresses": ["10.0.0.2"], "nodeName": NODE,
                "conditions": {"ready": false, "serving": true, "terminating": true}}]),
    ));
    let endpoints = tracker.endpoints(&spn("ns", "svc", "p80"));
    assert_eq!(addrs(endpoints), ["10.0.0.2:80"]);
    assert!(!endpoints[0].terminating && endpoints[0].ready && !endpoints[0].is_local);
}

#[test]
fn unset_serving_reads_as_serving() {
    let mut tracker = Tracker::new(IpFamily::V4, NODE);
    tracker.apply_service(&cluster_ip_service("ns", "svc", "172.30.0.3"));
    tracker.apply_endpoint_slice(&slice_of(
        "ns",
        "svc",
        "svc-a",
        json!([{"addresses": ["10.0.0.2"], "conditions": {"ready": false, "terminating": true}}]),
    ));
    let endpoints = tracker.endpoints(&spn("ns", "svc", "p80"));
    assert!(!endpoints[0].ready && endpoints[0].serving && endpoints[0].terminating);
}

#[test]
fn slice_ports_without_a_name_are_ignored() {
    let mut tracker = Tracker::new(IpFamily::V4, NODE);
    tracker.apply_service(&service(json!({
        "metadata": {"namespace": "ns", "name": "svc"},
        "spec": {"clusterIP": "172.30.0.3", "clusterIPs": ["172.30.0.3"], "ports": [{"port": 80, "protocol": "TCP"}]}
    })));
    let mut nameless = slice_of("ns", "svc", "svc-a", json!([{"addresses": ["10.0.0.2"]}]));
    nameless.ports.as_mut().unwrap()[0].name = None;
    tracker.apply_endpoint_slice(&nameless);
    assert!(tracker.endpoints(&spn("ns", "svc", "")).is_empty());
    let mut unnamed = nameless.clone();
    unnamed.ports.as_mut().unwrap()[0].name = Some(String::new());
    tracker.apply_endpoint_slice(&unnamed);
    assert_eq!(
        addrs(tracker.endpoints(&spn("ns", "svc", ""))),
        ["10.0.0.2:80"]
    );
}

#[test]
fn load_balancer_source_ranges_of_the_family_only() {
    let lb = |ranges: serde_json::Value| {
        let mut tracker = Tracker::new(IpFamily::V4, NODE);
        tracker.apply_service(&service(json!({
            "metadata": {"namespace": "ns", "name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIP": "172.30.0.1", "clusterIPs": ["172.30.0.1"],
                     "ports": [{"name": "p80", "port": 80, "nodePort": 30080}],
                     "loadBalancerSourceRanges": ranges},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}
        })));
        let (_, info) = tracker.service_ports().next().unwrap();
        (
            info.load_balancer_firewall,
            info.load_balancer_source_ranges.len(),
        )
    };
    assert_eq!(
        lb(json!(["2001:db8::/32"])),
        (false, 0),
        "other family only"
    );
    assert_eq!(
        lb(json!(["203.0.113.0/24", "0.0.0.0/0"])),
        (false, 0),
        "zero CIDR"
    );
    assert_eq!(lb(json!(["203.0.113.0/24", "2001:db8::/32"])), (true, 1));
    assert_eq!(lb(json!([])), (false, 0));
}
