//! Golden tests on the rendered transaction, as upstream's proxier_test.go
//! checks its nftables transactions. Names and hashes are upstream's
//! (ns1/svc1:p80 is service-ULMVA6XW-ns1/svc1/tcp/p80 there too).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::*;
use crate::iptables::{LocalDetector, NodePortDestinations};
use crate::tracker::{IpFamily, SERVICE_NAME_LABEL, ServiceName, ServicePortName, Tracker};

const NODE: &str = "node1";

fn options() -> RenderOptions {
    RenderOptions {
        family: IpFamily::V4,
        masquerade_mark: 1 << 14,
        masquerade_all: false,
        local_detector: LocalDetector::Cidr("10.0.0.0/8".parse().unwrap()),
        node_port_destinations: NodePortDestinations::Ips(vec!["192.168.0.2".parse().unwrap()]),
        node_ip: Some("192.168.0.2".parse().unwrap()),
        service_cidrs: vec!["172.30.0.0/16".parse().unwrap()],
    }
}

fn svc(ns: &str, name: &str, spec: Value) -> Service {
    let mut spec = spec;
    let ip = spec["clusterIP"].clone();
    spec["clusterIPs"] = json!([ip]);
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
        .unwrap()
}

fn p80(ns: &str, name: &str, ip: &str, extra: Value) -> Service {
    let mut spec = json!({"clusterIP": ip, "ports": [{"name": "p80", "port": 80}]});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    svc(ns, name, spec)
}

fn with_lb(mut service: Service, ingress: Value) -> Service {
    service.status =
        Some(serde_json::from_value(json!({"loadBalancer": {"ingress": ingress}})).unwrap());
    service
}

fn eps(ns: &str, name: &str, endpoints: Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": format!("{name}-abcde"), "labels": {SERVICE_NAME_LABEL: name}},
        "addressType": "IPv4",
        "ports": [{"name": "p80", "port": 80, "protocol": "TCP"}],
        "endpoints": endpoints
    }))
    .unwrap()
}

fn local(ip: &str) -> Value {
    json!({"addresses": [ip], "nodeName": NODE})
}

fn remote(ip: &str) -> Value {
    json!({"addresses": [ip], "nodeName": "other-node"})
}

fn tracker(services: &[Service], slices: &[EndpointSlice]) -> Tracker {
    let mut tracker = Tracker::new(IpFamily::V4, NODE);
    for s in services {
        tracker.apply_service(s);
    }
    for s in slices {
        tracker.apply_endpoint_slice(s);
    }
    tracker
}

fn full_text(tracker: &Tracker, options: &RenderOptions) -> String {
    render(
        tracker,
        options,
        SyncScope::Full {
            recreate_base_chains: false,
        },
        None,
    )
    .text
}

/// The lines a scenario adds to the empty table's transaction, in order:
/// the fixed part is checked once, in `the_fixed_part`.
fn service_lines(tracker: &Tracker, options: &RenderOptions) -> String {
    let base: BTreeSet<String> = full_text(&Tracker::new(IpFamily::V4, NODE), options)
        .lines()
        .map(String::from)
        .collect();
    let mut out = String::new();
    for line in full_text(tracker, options).lines() {
        if !base.contains(line) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Compares texts line by line, so a failure shows the first differing line.
fn assert_text(actual: &str, expected: &str) {
    let expected = expected.trim_start_matches('\n');
    if actual != expected {
        let (a, e): (Vec<_>, Vec<_>) = (actual.lines().collect(), expected.lines().collect());
        let first = a
            .iter()
            .zip(&e)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(e.len()));
        panic!(
            "rendered text differs at line {}:\n  got:  {:?}\n  want: {:?}\n--- whole text ---\n{actual}",
            first + 1,
            a.get(first),
            e.get(first)
        );
    }
}

const T: &str = "understudy-proxy";

#[test]
fn the_fixed_part() {
    let text = render(
        &Tracker::new(IpFamily::V4, NODE),
        &options(),
        SyncScope::Full {
            recreate_base_chains: true,
        },
        None,
    )
    .text;
    assert_text(
        &text,
        r#"
add table ip understudy-proxy { comment "rules for understudy-proxy" ; }
add chain ip understudy-proxy filter-prerouting-pre-dnat
delete chain ip understudy-proxy filter-prerouting-pre-dnat
add chain ip understudy-proxy filter-output-pre-dnat
delete chain ip understudy-proxy filter-output-pre-dnat
add chain ip understudy-proxy filter-input
delete chain ip understudy-proxy filter-input
add chain ip understudy-proxy filter-forward
delete chain ip understudy-proxy filter-forward
add chain ip understudy-proxy filter-output
delete chain ip understudy-proxy filter-output
add chain ip understudy-proxy nat-prerouting
delete chain ip understudy-proxy nat-prerouting
add chain ip understudy-proxy nat-output
delete chain ip understudy-proxy nat-output
add chain ip understudy-proxy nat-postrouting
delete chain ip understudy-proxy nat-postrouting
add chain ip understudy-proxy filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }
flush chain ip understudy-proxy filter-prerouting-pre-dnat
add chain ip understudy-proxy filter-output-pre-dnat { type filter hook output priority -110 ; }
flush chain ip understudy-proxy filter-output-pre-dnat
add chain ip understudy-proxy filter-input { type filter hook input priority 0 ; }
flush chain ip understudy-proxy filter-input
add chain ip understudy-proxy filter-forward { type filter hook forward priority 0 ; }
flush chain ip understudy-proxy filter-forward
add chain ip understudy-proxy filter-output { type filter hook output priority 0 ; }
flush chain ip understudy-proxy filter-output
add chain ip understudy-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
flush chain ip understudy-proxy nat-prerouting
add chain ip understudy-proxy nat-output { type nat hook output priority -100 ; }
flush chain ip understudy-proxy nat-output
add chain ip understudy-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
flush chain ip understudy-proxy nat-postrouting
add chain ip understudy-proxy nodeport-endpoints-check
flush chain ip understudy-proxy nodeport-endpoints-check
add rule ip understudy-proxy filter-input ct state new jump nodeport-endpoints-check
add chain ip understudy-proxy service-endpoints-check
flush chain ip understudy-proxy service-endpoints-check
add rule ip understudy-proxy filter-input ct state new jump service-endpoints-check
add rule ip understudy-proxy filter-forward ct state new jump service-endpoints-check
add rule ip understudy-proxy filter-output ct state new jump service-endpoints-check
add chain ip understudy-proxy firewall-check
flush chain ip understudy-proxy firewall-check
add rule ip understudy-proxy filter-prerouting-pre-dnat ct state new jump firewall-check
add rule ip understudy-proxy filter-output-pre-dnat ct state new jump firewall-check
add chain ip understudy-proxy services
flush chain ip understudy-proxy services
add rule ip understudy-proxy nat-output jump services
add rule ip understudy-proxy nat-prerouting jump services
add chain ip understudy-proxy masquerading
flush chain ip understudy-proxy masquerading
add rule ip understudy-proxy nat-postrouting jump masquerading
add chain ip understudy-proxy cluster-ips-check
flush chain ip understudy-proxy cluster-ips-check
add rule ip understudy-proxy filter-forward ct state new jump cluster-ips-check
add rule ip understudy-proxy filter-output ct state new jump cluster-ips-check
add set ip understudy-proxy hairpin-connections { type ipv4_addr . ipv4_addr . inet_proto . inet_service ; comment "service hairpin connections" ; }
add rule ip understudy-proxy masquerading mark and 0x4000 != 0 mark set mark xor 0x4000 masquerade fully-random
add rule ip understudy-proxy masquerading ct status dnat ip saddr . ip daddr . meta l4proto . th dport @hairpin-connections masquerade fully-random
add set ip understudy-proxy cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }
add rule ip understudy-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule ip understudy-proxy cluster-ips-check ip daddr { 172.30.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"
add set ip understudy-proxy nodeport-ips { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }
flush set ip understudy-proxy nodeport-ips
add element ip understudy-proxy nodeport-ips { 192.168.0.2 }
add map ip understudy-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }
add map ip understudy-proxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }
add chain ip understudy-proxy reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }
flush chain ip understudy-proxy reject-chain
add rule ip understudy-proxy reject-chain reject
add rule ip understudy-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
add rule ip understudy-proxy nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
add map ip understudy-proxy firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }
add rule ip understudy-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add map ip understudy-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }
add map ip understudy-proxy service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }
add rule ip understudy-proxy services ip daddr @cluster-ips ip saddr != 10.0.0.0/8 mark set mark or 0x4000 comment "masquerade clusterIP traffic from outside cluster"
add rule ip understudy-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip understudy-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
flush set ip understudy-proxy cluster-ips
flush map ip understudy-proxy service-ips
flush map ip understudy-proxy firewall-ips
flush map ip understudy-proxy no-endpoint-services
flush map ip understudy-proxy no-endpoint-nodeports
flush map ip understudy-proxy service-nodeports
flush set ip understudy-proxy hairpin-connections
"#,
    );
}

#[test]
fn every_local_address_serves_node_ports_by_default_of_all() {
    let mut o = options();
    o.node_port_destinations = NodePortDestinations::AllLocal;
    o.service_cidrs.clear();
    let text = full_text(&Tracker::new(IpFamily::V4, NODE), &o);
    for line in [
        format!(
            "add set ip {T} nodeport-ips {{ type ipv4_addr ; comment \"IPs that accept NodePort traffic\" ; }}\ndelete set ip {T} nodeport-ips\n"
        ),
        format!(
            "add rule ip {T} nodeport-endpoints-check ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports\n"
        ),
        format!(
            "add rule ip {T} services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports\n"
        ),
    ] {
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
    assert!(
        !text.contains("unallocated"),
        "no ServiceCIDRs, no drop rule"
    );
}

#[test]
fn a_cluster_ip_with_one_local_endpoint() {
    let t = tracker(
        &[p80("ns1", "svc1", "172.30.0.41", json!({}))],
        &[eps("ns1", "svc1", json!([local("10.180.0.1")]))],
    );
    assert_text(
        &service_lines(&t, &options()),
        r#"
add chain ip understudy-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
flush chain ip understudy-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip understudy-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 meta l4proto tcp dnat to 10.180.0.1:80
add element ip understudy-proxy cluster-ips { 172.30.0.41 }
add element ip understudy-proxy hairpin-connections { 10.180.0.1 . 10.180.0.1 . tcp . 80 }
add element ip understudy-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
"#,
    );
}

#[test]
fn several_endpoints_are_picked_at_random_through_a_map() {
    let t = tracker(
        &[p80("ns4", "svc4", "172.30.0.44", json!({}))],
        &[eps(
            "ns4",
            "svc4",
            json!([remote("10.180.0.4"), remote("10.180.0.5")]),
        )],
    );
    assert_text(
        &service_lines(&t, &options()),
        r#"
add chain ip understudy-proxy service-LAUZTJTB-ns4/svc4/tcp/p80
flush chain ip understudy-proxy service-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip understudy-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 2 map { 0 : 10.180.0.4 . 80 , 1 : 10.180.0.5 . 80 }
add element ip understudy-proxy cluster-ips { 172.30.0.44 }
add element ip understudy-proxy service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }
"#,
    );
}

#[test]
fn no_endpoints_rejects_cluster_ip_and_node_port() {
    let t = tracker(
        &[p80(
            "ns6",
            "svc6",
            "172.30.0.46",
            json!({"type": "NodePort", "ports": [{"name": "p80", "port": 80, "nodePort": 3006}],
                   "externalIPs": ["192.168.99.66"]}),
        )],
        &[],
    );
    assert_text(
        &service_lines(&t, &options()),
        r#"
add element ip understudy-proxy cluster-ips { 172.30.0.46 }
add element ip understudy-proxy no-endpoint-nodeports { tcp . 3006 comment "ns6/svc6:p80" : goto reject-chain }
add element ip understudy-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }
add element ip understudy-proxy no-endpoint-services { 192.168.99.66 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }
"#,
    );
}

#[test]
fn node_port_and_external_ip_go_through_the_external_chain_and_masquerade() {
    let t = tracker(
        &[p80(
            "ns3",
            "svc3",
            "172.30.0.43",
            json!({"type": "NodePort", "ports": [{"name": "p80", "port": 80, "nodePort": 3003}],
                   "externalIPs": ["192.168.99.33"]}),
        )],
        &[eps("ns3", "svc3", json!([local("10.180.0.3")]))],
    );
    assert_text(
        &service_lines(&t, &options()),
        r#"
add chain ip understudy-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
flush chain ip understudy-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add chain ip understudy-proxy external-4AT6LBPK-ns3/svc3/tcp/p80
flush chain ip understudy-proxy external-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip understudy-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 mark set mark or 0x4000 comment "masquerade"
add rule ip understudy-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 goto service-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip understudy-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 meta l4proto tcp dnat to 10.180.0.3:80
add element ip understudy-proxy cluster-ips { 172.30.0.43 }
add element ip understudy-proxy hairpin-connections { 10.180.0.3 . 10.180.0.3 . tcp . 80 }
add element ip understudy-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
add element ip understudy-proxy service-ips { 192.168.99.33 . tcp . 80 : goto external-4AT6LBPK-ns3/svc3/tcp/p80 }
add element ip understudy-proxy service-nodeports { tcp . 3003 : goto external-4AT6LBPK-ns3/svc3/tcp/p80 }
"#,
    );
}

/// Upstream's svc2: Local external policy, its only endpoint elsewhere.
#[test]
fn external_policy_local_without_local_endpoints_drops_but_short_circuits() {
    let t = tracker(
        &[with_lb(
            p80(
                "ns2",
                "svc2",
                "172.30.0.42",
                json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                       "ports": [{"name": "p80", "port": 80, "nodePort": 3001}],
                       "externalIPs": ["192.168.99.22"], "healthCheckNodePort": 30000}),
            ),
            json!([{"ip": "1.2.3.4"}]),
        )],
        &[eps("ns2", "svc2", json!([remote("10.180.0.2")]))],
    );
    assert_text(
        &service_lines(&t, &options()),
        r#"
add chain ip understudy-proxy service-42NFTM6N-ns2/svc2/tcp/p80
flush chain ip understudy-proxy service-42NFTM6N-ns2/svc2/tcp/p80
add chain ip understudy-proxy external-42NFTM6N-ns2/svc2/tcp/p80
flush chain ip understudy-proxy external-42NFTM6N-ns2/svc2/tcp/p80
add rule ip understudy-proxy external-42NFTM6N-ns2/svc2/tcp/p80 ip saddr 10.0.0.0/8 goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit pod traffic"
add rule ip understudy-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local mark set mark or 0x4000 comment "masquerade local traffic"
add rule ip understudy-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit local traffic"
add rule ip understudy-proxy service-42NFTM6N-ns2/svc2/tcp/p80 meta l4proto tcp dnat to 10.180.0.2:80
add element ip understudy-proxy cluster-ips { 172.30.0.42 }
add element ip understudy-proxy no-endpoint-nodeports { tcp . 3001 comment "ns2/svc2:p80" : drop }
add element ip understudy-proxy no-endpoint-services { 1.2.3.4 . tcp . 80 comment "ns2/svc2:p80" : drop }
add element ip understudy-proxy no-endpoint-services { 192.168.99.22 . tcp . 80 comment "ns2/svc2:p80" : drop }
add element ip understudy-proxy service-ips { 1.2.3.4 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip understudy-proxy service-ips { 172.30.0.42 . tcp . 80 : goto service-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip understudy-proxy service-ips { 192.168.99.22 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip understudy-proxy service-nodeports { tcp . 3001 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
"#,
    );
}

/// A NodePort Service (no health check node port) with Local policy and a
/// local endpoint: external traffic keeps its source and goes to the local
/// chain; without a detector, pods are not short-circuited.
#[test]
fn external_policy_local_with_a_local_endpoint() {
    let t = tracker(
        &[p80(
            "ns7",
            "svc7",
            "172.30.0.47",
            json!({"type": "NodePort", "externalTrafficPolicy": "Local",
                   "ports": [{"name": "p80", "port": 80, "nodePort": 3007}]}),
        )],
        &[eps(
            "ns7",
            "svc7",
            json!([local("10.180.0.7"), remote("10.180.1.7")]),
        )],
    );
    let mut o = options();
    o.local_detector = LocalDetector::None;
    let text = service_lines(&t, &o);
    let chains = names::ServiceChains::new(&ServicePortName::new(
        ServiceName::new("ns7", "svc7"),
        "p80",
        crate::tracker::Protocol::Tcp,
    ));
    let (ext, svl, svc) = (&chains.external, &chains.local, &chains.cluster);
    let expected = format!(
        r#"
add chain ip {T} {svc}
flush chain ip {T} {svc}
add chain ip {T} {svl}
flush chain ip {T} {svl}
add chain ip {T} {ext}
flush chain ip {T} {ext}
add rule ip {T} {ext} fib saddr type local mark set mark or 0x4000 comment "masquerade local traffic"
add rule ip {T} {ext} fib saddr type local goto {svc} comment "short-circuit local traffic"
add rule ip {T} {ext} goto {svl}
add rule ip {T} {svc} meta l4proto tcp dnat ip addr . port to numgen random mod 2 map {{ 0 : 10.180.0.7 . 80 , 1 : 10.180.1.7 . 80 }}
add rule ip {T} {svl} meta l4proto tcp dnat to 10.180.0.7:80
add element ip {T} cluster-ips {{ 172.30.0.47 }}
add element ip {T} hairpin-connections {{ 10.180.0.7 . 10.180.0.7 . tcp . 80 }}
add element ip {T} service-ips {{ 172.30.0.47 . tcp . 80 : goto {svc} }}
add element ip {T} service-nodeports {{ tcp . 3007 : goto {ext} }}
"#
    );
    assert_text(&text, &expected);
}

/// Upstream's svc5: Cluster policy, source ranges and ClientIP affinity.
#[test]
fn load_balancer_with_source_ranges_and_affinity() {
    let t = tracker(
        &[with_lb(
            p80(
                "ns5",
                "svc5",
                "172.30.0.45",
                json!({"type": "LoadBalancer", "ports": [{"name": "p80", "port": 80, "nodePort": 3002}],
                       "loadBalancerSourceRanges": [" 203.0.113.0/25"], "sessionAffinity": "ClientIP",
                       "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}}}),
            ),
            json!([{"ip": "5.6.7.8"}]),
        )],
        &[eps("ns5", "svc5", json!([local("10.180.0.3")]))],
    );
    assert_text(
        &service_lines(&t, &options()),
        r#"
add chain ip understudy-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
flush chain ip understudy-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add chain ip understudy-proxy service-HVFWP5L3-ns5/svc5/tcp/p80
flush chain ip understudy-proxy service-HVFWP5L3-ns5/svc5/tcp/p80
add chain ip understudy-proxy external-HVFWP5L3-ns5/svc5/tcp/p80
flush chain ip understudy-proxy external-HVFWP5L3-ns5/svc5/tcp/p80
add chain ip understudy-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80
flush chain ip understudy-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip understudy-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 mark set mark or 0x4000 comment "masquerade"
add rule ip understudy-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 goto service-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip understudy-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr != { 203.0.113.0/25 } drop
add set ip understudy-proxy affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add rule ip understudy-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add rule ip understudy-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 }
add rule ip understudy-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 update @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { ip saddr }
add rule ip understudy-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 meta l4proto tcp dnat to 10.180.0.3:80
add element ip understudy-proxy cluster-ips { 172.30.0.45 }
add element ip understudy-proxy firewall-ips { 5.6.7.8 . tcp . 80 : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip understudy-proxy hairpin-connections { 10.180.0.3 . 10.180.0.3 . tcp . 80 }
add element ip understudy-proxy service-ips { 172.30.0.45 . tcp . 80 : goto service-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip understudy-proxy service-ips { 5.6.7.8 . tcp . 80 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip understudy-proxy service-nodeports { tcp . 3002 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
"#,
    );
}

#[test]
fn source_ranges_holding_the_node_let_the_load_balancer_ips_in() {
    let t = tracker(
        &[with_lb(
            p80(
                "ns5",
                "svc5",
                "172.30.0.45",
                json!({"type": "LoadBalancer", "ports": [{"name": "p80", "port": 80, "nodePort": 3002}],
                       "loadBalancerSourceRanges": ["192.168.0.0/24", "203.0.113.0/25"]}),
            ),
            json!([{"ip": "5.6.7.8"}, {"ip": "5.6.7.9", "ipMode": "Proxy"}]),
        )],
        &[],
    );
    let text = service_lines(&t, &options());
    assert!(
        text.contains(
            "firewall-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr != { 192.168.0.0/24 , 203.0.113.0/25 , 5.6.7.8 } drop\n"
        ),
        "{text}"
    );
    // Without endpoints the firewall still applies (upstream), and the
    // load-balancer IP rejects.
    assert!(text.contains("add element ip understudy-proxy firewall-ips { 5.6.7.8 . tcp . 80 : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }"), "{text}");
    assert!(text.contains("no-endpoint-services { 5.6.7.8 . tcp . 80 comment \"ns5/svc5:p80\" : goto reject-chain }"), "{text}");
    assert!(
        !text.contains("5.6.7.9"),
        "ipMode Proxy is the LB's: {text}"
    );
}

#[test]
fn internal_policy_local() {
    let t = tracker(
        &[
            p80(
                "ns8",
                "svc8",
                "172.30.0.48",
                json!({"internalTrafficPolicy": "Local"}),
            ),
            p80(
                "ns9",
                "svc9",
                "172.30.0.49",
                json!({"internalTrafficPolicy": "Local"}),
            ),
        ],
        &[
            eps(
                "ns8",
                "svc8",
                json!([local("10.180.0.8"), remote("10.180.1.8")]),
            ),
            eps("ns9", "svc9", json!([remote("10.180.1.9")])),
        ],
    );
    let text = service_lines(&t, &options());
    let local8 = names::ServiceChains::new(&ServicePortName::new(
        ServiceName::new("ns8", "svc8"),
        "p80",
        crate::tracker::Protocol::Tcp,
    ))
    .local;
    assert!(
        text.contains(&format!(
            "add rule ip {T} {local8} meta l4proto tcp dnat to 10.180.0.8:80\n"
        )),
        "{text}"
    );
    assert!(!text.contains("10.180.1.8"), "{text}");
    assert!(
        !text.contains("chain ip understudy-proxy service-"),
        "no cluster chain in use: {text}"
    );
    assert!(
        text.contains(&format!(
            "add element ip {T} service-ips {{ 172.30.0.48 . tcp . 80 : goto {local8} }}"
        )),
        "{text}"
    );
    // Endpoints exist, none here: dropped, not rejected.
    assert!(
        text.contains(
            "no-endpoint-services { 172.30.0.49 . tcp . 80 comment \"ns9/svc9:p80\" : drop }"
        ),
        "{text}"
    );
}

#[test]
fn terminating_endpoints_serve_only_when_none_is_ready() {
    let terminating = |ip: &str| {
        json!({"addresses": [ip], "nodeName": NODE,
               "conditions": {"ready": false, "serving": true, "terminating": true}})
    };
    let only_terminating = tracker(
        &[p80("ns1", "svc1", "172.30.0.41", json!({}))],
        &[eps("ns1", "svc1", json!([terminating("10.180.0.1")]))],
    );
    let text = service_lines(&only_terminating, &options());
    assert!(text.contains("dnat to 10.180.0.1:80"), "{text}");
    let mixed = tracker(
        &[p80("ns1", "svc1", "172.30.0.41", json!({}))],
        &[eps(
            "ns1",
            "svc1",
            json!([terminating("10.180.0.1"), local("10.180.0.2")]),
        )],
    );
    let text = service_lines(&mixed, &options());
    assert!(text.contains("dnat to 10.180.0.2:80"), "{text}");
    assert!(!text.contains("10.180.0.1"), "{text}");
}

#[test]
fn masquerade_all_and_other_detectors() {
    let empty = Tracker::new(IpFamily::V4, NODE);
    let mut o = options();
    o.masquerade_all = true;
    assert!(full_text(&empty, &o).contains(
        "add rule ip understudy-proxy services ip daddr @cluster-ips mark set mark or 0x4000 comment \"masquerade all clusterIP traffic\"\n"
    ));
    o.masquerade_all = false;
    o.local_detector = LocalDetector::None;
    assert!(!full_text(&empty, &o).contains("@cluster-ips mark set"));
    o.local_detector = LocalDetector::Bridge("cbr0".into());
    assert!(full_text(&empty, &o).contains("@cluster-ips iifname != cbr0 mark set mark or 0x4000"));
    o.local_detector = LocalDetector::InterfacePrefix("veth".into());
    assert!(
        full_text(&empty, &o).contains("@cluster-ips iifname != veth* mark set mark or 0x4000")
    );
    o.masquerade_mark = 1 << 3;
    assert!(full_text(&empty, &o).contains("mark and 0x8 != 0 mark set mark xor 0x8 masquerade"));
}

#[test]
fn ipv6_uses_the_ip6_family_and_bracketed_endpoints() {
    let mut t = Tracker::new(IpFamily::V6, NODE);
    t.apply_service(&p80("ns1", "svc1", "fd00:172:30::41", json!({})));
    t.apply_endpoint_slice(
        &serde_json::from_value(json!({
            "metadata": {"namespace": "ns1", "name": "svc1-abcde", "labels": {SERVICE_NAME_LABEL: "svc1"}},
            "addressType": "IPv6",
            "ports": [{"name": "p80", "port": 80, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["fd00:10:180::1"]}, {"addresses": ["fd00:10:180::2"]}]
        }))
        .unwrap(),
    );
    let mut o = options();
    o.family = IpFamily::V6;
    o.local_detector = LocalDetector::Cidr("fd00:10::/64".parse().unwrap());
    o.node_port_destinations = NodePortDestinations::AllLocal;
    o.node_ip = None;
    o.service_cidrs.clear();
    let text = full_text(&t, &o);
    for expected in [
        "add table ip6 understudy-proxy",
        "type ipv6_addr . ipv6_addr . inet_proto . inet_service",
        "ip6 daddr @cluster-ips ip6 saddr != fd00:10::/64 mark set",
        "fib daddr type local ip6 daddr != ::1 meta l4proto . th dport vmap @service-nodeports",
        "dnat ip6 addr . port to numgen random mod 2 map { 0 : fd00:10:180::1 . 80 , 1 : fd00:10:180::2 . 80 }",
        "add element ip6 understudy-proxy service-ips { fd00:172:30::41 . tcp . 80 : goto service-",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains(" ip "), "{text}");
}

fn two_services() -> Tracker {
    tracker(
        &[
            p80("ns1", "svc1", "172.30.0.41", json!({})),
            p80("ns2", "svc2", "172.30.0.42", json!({})),
        ],
        &[
            eps("ns1", "svc1", json!([local("10.180.0.1")])),
            eps("ns2", "svc2", json!([remote("10.180.0.2")])),
        ],
    )
}

#[test]
fn a_partial_sync_touches_only_the_changed_service() {
    let mut t = two_services();
    let first = render(
        &t,
        &options(),
        SyncScope::Full {
            recreate_base_chains: false,
        },
        None,
    );
    t.take_changes();
    t.apply_endpoint_slice(&eps(
        "ns1",
        "svc1",
        json!([local("10.180.0.1"), remote("10.180.1.1")]),
    ));
    let changes = t.take_changes();
    let existing = Existing {
        chains: first.active_chains.clone(),
        sets: BTreeSet::new(),
    };
    let partial = render(
        &t,
        &options(),
        SyncScope::Partial {
            changed: &changes.service_ports,
            previous: &first.elements,
        },
        Some(&existing),
    );
    assert_eq!(partial.rewritten, 1);
    assert_text(
        &partial.text,
        r#"
add chain ip understudy-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
flush chain ip understudy-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip understudy-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 meta l4proto tcp dnat ip addr . port to numgen random mod 2 map { 0 : 10.180.0.1 . 80 , 1 : 10.180.1.1 . 80 }
"#,
    );
    assert_eq!(partial.elements, first.elements, "no element changed");

    // Nothing changed: an empty transaction.
    let none = BTreeSet::new();
    let idle = render(
        &t,
        &options(),
        SyncScope::Partial {
            changed: &none,
            previous: &partial.elements,
        },
        Some(&existing),
    );
    assert_eq!(idle.text, "");
}

#[test]
fn deleting_a_service_removes_its_elements_and_flushes_its_chains() {
    let mut t = two_services();
    let sticky = p80(
        "ns2",
        "svc2",
        "172.30.0.42",
        json!({"sessionAffinity": "ClientIP"}),
    );
    t.apply_service(&sticky);
    let first = render(
        &t,
        &options(),
        SyncScope::Full {
            recreate_base_chains: false,
        },
        None,
    );
    let affinity = "affinity-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80";
    assert!(
        first.text.contains(&format!("add set ip {T} {affinity} ")),
        "{}",
        first.text
    );
    t.take_changes();
    t.delete_service("ns2", "svc2");
    let changes = t.take_changes();
    let existing = Existing {
        chains: first.active_chains.clone(),
        sets: [affinity.to_string(), "cluster-ips".into()].into(),
    };
    let partial = render(
        &t,
        &options(),
        SyncScope::Partial {
            changed: &changes.service_ports,
            previous: &first.elements,
        },
        Some(&existing),
    );
    assert_text(
        &partial.text,
        r#"
flush chain ip understudy-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80
flush chain ip understudy-proxy service-42NFTM6N-ns2/svc2/tcp/p80
delete set ip understudy-proxy affinity-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80
delete element ip understudy-proxy cluster-ips { 172.30.0.42 }
delete element ip understudy-proxy service-ips { 172.30.0.42 . tcp . 80 }
"#,
    );
    assert_eq!(
        partial.stale_chains,
        [
            "endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80",
            "service-42NFTM6N-ns2/svc2/tcp/p80"
        ]
    );
    assert_eq!(partial.deleted_sets, [affinity]);
    assert_eq!(
        delete_chains(IpFamily::V4, &partial.stale_chains),
        "delete chain ip understudy-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80\n\
         delete chain ip understudy-proxy service-42NFTM6N-ns2/svc2/tcp/p80\n"
    );
}

#[test]
fn an_element_whose_verdict_changes_is_replaced() {
    let mut t = two_services();
    let first = render(
        &t,
        &options(),
        SyncScope::Full {
            recreate_base_chains: false,
        },
        None,
    );
    t.take_changes();
    t.apply_endpoint_slice(&eps("ns2", "svc2", json!([])));
    let changes = t.take_changes();
    let existing = Existing {
        chains: first.active_chains.clone(),
        sets: BTreeSet::new(),
    };
    let partial = render(
        &t,
        &options(),
        SyncScope::Partial {
            changed: &changes.service_ports,
            previous: &first.elements,
        },
        Some(&existing),
    );
    assert_text(
        &partial.text,
        r#"
flush chain ip understudy-proxy service-42NFTM6N-ns2/svc2/tcp/p80
delete element ip understudy-proxy service-ips { 172.30.0.42 . tcp . 80 }
add element ip understudy-proxy no-endpoint-services { 172.30.0.42 . tcp . 80 comment "ns2/svc2:p80" : goto reject-chain }
"#,
    );
}

#[test]
fn udp_ports_key_and_dnat_by_their_protocol() {
    let dns = svc(
        "kube-system",
        "dns",
        json!({"clusterIP": "172.30.0.10", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}),
    );
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"namespace": "kube-system", "name": "dns-abcde", "labels": {SERVICE_NAME_LABEL: "dns"}},
        "addressType": "IPv4",
        "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}],
        "endpoints": [{"addresses": ["10.180.0.53"], "nodeName": NODE}]
    }))
    .unwrap();
    let text = service_lines(&tracker(&[dns], &[slice]), &options());
    let chain = names::ServiceChains::new(&ServicePortName::new(
        ServiceName::new("kube-system", "dns"),
        "dns",
        crate::tracker::Protocol::Udp,
    ))
    .cluster;
    assert!(chain.ends_with("-kube-system/dns/udp/dns"), "{chain}");
    for line in [
        format!("add rule ip {T} {chain} meta l4proto udp dnat to 10.180.0.53:5353\n"),
        format!("add element ip {T} service-ips {{ 172.30.0.10 . udp . 53 : goto {chain} }}\n"),
        format!(
            "add element ip {T} hairpin-connections {{ 10.180.0.53 . 10.180.0.53 . udp . 5353 }}\n"
        ),
    ] {
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
}

/// One change to the cluster of [`ledger_partial_syncs_match_renders_of_everything`].
#[derive(Clone, Debug)]
enum Change {
    /// Service `i` (re)created: session affinity, an external IP from a
    /// pool of two (so two Services may want the same element), a NodePort,
    /// a load-balancer IP with source ranges, `externalTrafficPolicy: Local`.
    Service {
        i: usize,
        affinity: bool,
        external_ip: Option<usize>,
        node_port: bool,
        load_balancer: bool,
        local_policy: bool,
    },
    /// Service `i`'s endpoints: a subset of eight addresses, some on this
    /// node (hairpin elements, which Services can share).
    Endpoints {
        i: usize,
        addresses: u8,
    },
    Delete {
        i: usize,
    },
}

fn change() -> impl proptest::strategy::Strategy<Value = Change> {
    use proptest::prelude::*;
    prop_oneof![
        (
            0..5usize,
            any::<bool>(),
            proptest::option::of(0..2usize),
            any::<bool>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(
                |(i, affinity, external_ip, node_port, load_balancer, local_policy)| {
                    Change::Service {
                        i,
                        affinity,
                        external_ip,
                        node_port,
                        load_balancer,
                        local_policy,
                    }
                }
            ),
        (0..5usize, any::<u8>()).prop_map(|(i, addresses)| Change::Endpoints { i, addresses }),
        (0..5usize).prop_map(|i| Change::Delete { i }),
    ]
}

fn apply(t: &mut Tracker, change: &Change) {
    match *change {
        Change::Service {
            i,
            affinity,
            external_ip,
            node_port,
            load_balancer,
            local_policy,
        } => {
            let mut spec = json!({});
            if affinity {
                spec["sessionAffinity"] = json!("ClientIP");
            }
            if let Some(e) = external_ip {
                spec["externalIPs"] = json!([format!("192.168.99.{e}")]);
            }
            if node_port || load_balancer {
                spec["type"] = json!(if load_balancer {
                    "LoadBalancer"
                } else {
                    "NodePort"
                });
                spec["ports"] = json!([{"name": "p80", "port": 80, "nodePort": 30080 + i}]);
                if local_policy {
                    spec["externalTrafficPolicy"] = json!("Local");
                    spec["healthCheckNodePort"] = json!(32000 + i);
                }
            }
            if load_balancer {
                spec["loadBalancerSourceRanges"] = json!(["203.0.113.0/24"]);
            }
            let service = p80("ns", &format!("svc{i}"), &format!("172.30.1.{i}"), spec);
            let service = if load_balancer {
                with_lb(service, json!([{"ip": format!("5.6.7.{i}")}]))
            } else {
                service
            };
            t.apply_service(&service);
        }
        Change::Endpoints { i, addresses } => {
            let endpoints: Vec<Value> = (0..8)
                .filter(|b| addresses & (1 << b) != 0)
                .map(|b| {
                    let ip = format!("10.180.0.{b}");
                    if b % 2 == 0 { local(&ip) } else { remote(&ip) }
                })
                .collect();
            t.apply_endpoint_slice(&eps("ns", &format!("svc{i}"), json!(endpoints)));
        }
        Change::Delete { i } => {
            t.delete_service("ns", &format!("svc{i}"));
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 200, ..Default::default() })]

    /// A partial sync from the ledger writes, word for word, what a render
    /// working out every service port writes, and leaves the same chains,
    /// sets and elements in use, over any run of changes.
    #[test]
    fn ledger_partial_syncs_match_renders_of_everything(
        start in proptest::collection::vec(change(), 0..8),
        syncs in proptest::collection::vec(proptest::collection::vec(change(), 1..4), 1..8),
    ) {
        let mut t = Tracker::new(IpFamily::V4, NODE);
        for c in &start {
            apply(&mut t, c);
        }
        let full = SyncScope::Full { recreate_base_chains: false };
        let mut ledger = Ledger::default();
        let mut reference = render_recording(&t, &options(), full, None, &mut ledger);
        t.take_changes();
        // Chains flushed and not deleted yet (the proxier deletes them a
        // second later; here never, so they are flushed again while unused).
        let mut flushed: BTreeSet<String> = BTreeSet::new();
        for sync in &syncs {
            for c in sync {
                apply(&mut t, c);
            }
            let changes = t.take_changes();
            let existing = Existing {
                chains: reference.active_chains.iter().chain(&flushed).cloned().collect(),
                sets: reference.active_sets.clone(),
            };
            let previous = reference.elements.clone();
            let scope = SyncScope::Partial { changed: &changes.service_ports, previous: &previous };
            reference = render(&t, &options(), scope, Some(&existing));
            let ours = render_changes(&t, &options(), &changes.service_ports, &flushed, &mut ledger);
            proptest::prop_assert_eq!(&ours.text, &reference.text);
            proptest::prop_assert_eq!(&ours.stale_chains, &reference.stale_chains);
            proptest::prop_assert_eq!(&ours.deleted_sets, &reference.deleted_sets);
            proptest::prop_assert_eq!(ours.rewritten, reference.rewritten);
            proptest::prop_assert_eq!(ledger.element_count(), reference.elements.len());
            for chain in existing.chains.iter().chain(&reference.active_chains) {
                proptest::prop_assert_eq!(ledger.chain_in_use(chain), reference.active_chains.contains(chain), "{}", chain);
            }
            for set in existing.sets.iter().chain(&reference.active_sets) {
                proptest::prop_assert_eq!(ledger.set_in_use(set), reference.active_sets.contains(set), "{}", set);
            }
            flushed.retain(|c| !reference.active_chains.contains(c));
            flushed.extend(reference.stale_chains.iter().cloned());
        }
    }
}
