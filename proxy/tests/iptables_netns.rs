//! The rendered rulesets through the real iptables tools (this machine's
//! iptables 1.8.9, nf_tables backend), each test in a network namespace of
//! its own, made and deleted here: the host's netfilter is never written,
//! and the tests check it did not change.

use std::process::Command;

use serde_json::{Value, json};
use understudy_proxy::config::KubeProxyConfiguration;
use understudy_proxy::exec::SystemExec;
use understudy_proxy::proxier::{self, Proxier, SyncOutcome};
use understudy_proxy::tracker::{IpFamily, Tracker};

mod common;
use common::{Netns, host_rules};

impl Netns {
    fn new(tag: &str) -> Self {
        Netns::add("us-proxy", tag)
    }

    fn save(&self) -> String {
        // Counters and the generated-on comments vary.
        self.run(&["iptables-save"])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

fn service(name: &str, spec: Value, status: Value) -> k8s_openapi::api::core::v1::Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": name},
        "spec": spec,
        "status": status,
    }))
    .unwrap()
}

fn slice(
    service: &str,
    port: u16,
    endpoints: Value,
) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": format!("{service}-x"),
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "p", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

fn endpoint(ip: &str, node: &str) -> Value {
    json!({"addresses": [ip], "nodeName": node, "conditions": {"ready": true, "serving": true}})
}

/// Every kind of rule the renderer writes: ClusterIP with affinity, NodePort,
/// external IPs, a LoadBalancer with source ranges and Local policy, a
/// service without endpoints, a UDP port, internalTrafficPolicy Local.
fn every_kind_of_service(tracker: &mut Tracker) {
    let port = |extra: Value| {
        let mut p = json!({"name": "p", "port": 80, "targetPort": 8080, "protocol": "TCP"});
        p.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        p
    };
    let services = [
        service(
            "sticky",
            json!({"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "ports": [port(json!({}))],
                   "sessionAffinity": "ClientIP"}),
            json!({}),
        ),
        service(
            "nodeport",
            json!({"type": "NodePort", "clusterIP": "10.96.0.11", "clusterIPs": ["10.96.0.11"],
                   "ports": [port(json!({"nodePort": 30080}))], "externalIPs": ["192.0.2.7"]}),
            json!({}),
        ),
        service(
            "lb",
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.12", "clusterIPs": ["10.96.0.12"],
                   "ports": [port(json!({"nodePort": 30081}))], "externalTrafficPolicy": "Local",
                   "healthCheckNodePort": 31000, "loadBalancerSourceRanges": ["203.0.113.0/24"]}),
            json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}),
        ),
        service(
            "empty",
            json!({"type": "NodePort", "clusterIP": "10.96.0.13", "clusterIPs": ["10.96.0.13"],
                   "ports": [port(json!({"nodePort": 30082}))]}),
            json!({}),
        ),
        service(
            "dns",
            json!({"clusterIP": "10.96.0.14", "clusterIPs": ["10.96.0.14"],
                   "ports": [{"name": "p", "port": 53, "protocol": "UDP"}]}),
            json!({}),
        ),
        service(
            "local",
            json!({"clusterIP": "10.96.0.15", "clusterIPs": ["10.96.0.15"], "ports": [port(json!({}))],
                   "internalTrafficPolicy": "Local"}),
            json!({}),
        ),
    ];
    for s in &services {
        tracker.apply_service(s);
    }
    let two = json!([
        endpoint("10.244.0.5", "node-a"),
        endpoint("10.244.1.5", "node-b")
    ]);
    for name in ["sticky", "nodeport", "lb", "local"] {
        tracker.apply_endpoint_slice(&slice(name, 8080, two.clone()));
    }
    let mut dns = slice("dns", 53, json!([endpoint("10.244.0.9", "node-a")]));
    dns.ports.as_mut().unwrap()[0].protocol = Some("UDP".into());
    tracker.apply_endpoint_slice(&dns);
}

fn config(extra: &str) -> KubeProxyConfiguration {
    KubeProxyConfiguration::parse(&format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.244.0.0/16\n{extra}"
    ))
    .unwrap()
}

fn synced_proxier(ns: &Netns, config: KubeProxyConfiguration) -> Proxier<SystemExec> {
    let mut tracker = Tracker::new(IpFamily::V4, "node-a");
    every_kind_of_service(&mut tracker);
    let mut proxier = Proxier::new(config, tracker, SystemExec::in_netns(&ns.0));
    proxier.set_services_synced();
    proxier.set_slices_synced();
    proxier
}

fn expect_synced(outcome: SyncOutcome) -> understudy_proxy::proxier::SyncReport {
    match outcome {
        SyncOutcome::Synced(report) => report,
        other => panic!("sync: {other:?}"),
    }
}

#[test]
fn the_real_iptables_restore_accepts_full_and_partial_syncs_and_cleanup_removes_them() {
    let before = host_rules();
    let ns = Netns::new("sync");
    let mut p = synced_proxier(&ns, config(""));
    assert!(!p.check_intact().unwrap(), "a new namespace has no canary");
    let report = expect_synced(p.sync());
    assert!(report.full);
    let rules = ns.save();
    for expected in [
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j US-SERVICES",
        "-A US-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment \"ns/sticky:p cluster IP\" -m tcp --dport 80 -j US-SVC-",
        "-m recent --rcheck --seconds 10800 --reap --name US-SEP-",
        "-m statistic --mode random --probability 0.50000000000",
        "-j DNAT --to-destination 10.244.0.5:8080",
        "-A US-NODEPORTS -p tcp -m comment --comment \"ns/nodeport:p\" -m tcp --dport 30080 -j US-EXT-",
        "-A US-SERVICES -d 10.96.0.13/32 -p tcp -m comment --comment \"ns/empty:p has no endpoints\" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable",
        "-A US-FW-",
        "-s 203.0.113.0/24",
        "-A US-SERVICES -d 10.96.0.14/32 -p udp",
        "-A US-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully",
        "-A US-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8",
        ":US-PROXY-CANARY - [0:0]",
    ] {
        assert!(
            rules.contains(expected),
            "missing {expected:?} in:\n{rules}"
        );
    }
    assert!(p.check_intact().unwrap());

    // The same state again: a partial sync leaves the rules as they were.
    let report = expect_synced(p.sync());
    assert!(!report.full);
    assert_eq!(ns.save(), rules);

    // An endpoint goes: its SEP chain is deleted, the rest stays.
    let mut sticky = slice("sticky", 8080, json!([endpoint("10.244.0.5", "node-a")]));
    sticky.metadata.name = Some("sticky-x".into());
    p.tracker.apply_endpoint_slice(&sticky);
    expect_synced(p.sync());
    let after = ns.save();
    let seps = |text: &str| text.lines().filter(|l| l.starts_with(":US-SEP-")).count();
    assert_eq!(seps(&after), seps(&rules) - 1, "{after}");
    // That partial restore left the unchanged top-level chains out; what it
    // left is what a full sync writes.
    p.force_full_sync();
    assert!(expect_synced(p.sync()).full);
    assert_eq!(ns.save(), after, "a full sync changes nothing");

    // Its last endpoint goes: its REJECT joins the filter table's
    // US-SERVICES, which this partial sync rewrites.
    let mut gone = slice("sticky", 8080, json!([]));
    gone.metadata.name = Some("sticky-x".into());
    p.tracker.apply_endpoint_slice(&gone);
    assert!(!expect_synced(p.sync()).full);
    let emptied = ns.save();
    assert!(
        emptied.contains("--comment \"ns/sticky:p has no endpoints\""),
        "{emptied}"
    );
    assert!(
        emptied.contains("--comment \"ns/empty:p has no endpoints\""),
        "the chain's other rules stay: {emptied}"
    );
    p.tracker.apply_endpoint_slice(&sticky);
    expect_synced(p.sync());

    // A sync runs again after someone flushed nat: the jumps come back.
    let flush = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "iptables",
            "-t",
            "nat",
            "-F",
            "PREROUTING",
        ])
        .status()
        .unwrap();
    assert!(flush.success());
    p.force_full_sync();
    expect_synced(p.sync());
    assert!(ns.save().contains(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j US-SERVICES"
    ));

    let deleted = proxier::cleanup(SystemExec::in_netns(&ns.0), None).unwrap();
    assert!(
        deleted.contains(&"nat/US-SERVICES".to_string()),
        "{deleted:?}"
    );
    let left = ns.save();
    assert!(!left.contains("US-"), "cleanup left:\n{left}");
    assert_eq!(host_rules(), before, "the host's netfilter changed");
}

#[test]
fn the_real_iptables_restore_accepts_node_port_addresses_and_masquerade_all() {
    let before = host_rules();
    let ns = Netns::new("nodeports");
    let mut p = synced_proxier(
        &ns,
        config(
            "nodePortAddresses: [primary, 127.0.0.0/8]\niptables:\n  masqueradeAll: true\n  localhostNodePorts: false\n",
        ),
    );
    p.node.ips = vec!["10.250.0.10".parse().unwrap()];
    expect_synced(p.sync());
    let rules = ns.save();
    assert!(
        rules.contains("-A US-SERVICES -d 10.250.0.10/32 -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -j US-NODEPORTS"),
        "{rules}"
    );
    assert!(!rules.contains("US-FIREWALL"), "{rules}");
    assert_eq!(host_rules(), before, "the host's netfilter changed");
}

/// IPv6's proxier writes through `ip6tables-restore` (a dual-stack node runs
/// one per family): a ClusterIP and a NodePort reach their IPv6 endpoint,
/// a Service without endpoints is refused at once, and cleanup removes
/// IPv6's chains with IPv6's tools.
#[test]
fn ipv6_services_go_through_ip6tables() {
    use common::packets::{NODE_IP, NODE_IP6};
    let before = host_rules();
    let ns = Netns::node_in("us-proxy", "six");
    let _a = ns.serve_on(NODE_IP6, 8080, "a6");
    let mut tracker = Tracker::new(IpFamily::V6, "node-a");
    let web = json!({"type": "NodePort", "clusterIP": "fd00:96::10", "clusterIPs": ["fd00:96::10"],
                     "ports": [{"name": "p", "port": 80, "protocol": "TCP", "nodePort": 30080}]});
    tracker.apply_service(&service("web", web, json!({})));
    let empty = json!({"clusterIP": "fd00:96::13", "clusterIPs": ["fd00:96::13"],
                       "ports": [{"name": "p", "port": 80, "protocol": "TCP"}]});
    tracker.apply_service(&service("empty", empty, json!({})));
    let mut web = slice("web", 8080, json!([endpoint(NODE_IP6, "node-a")]));
    web.address_type = "IPv6".into();
    tracker.apply_endpoint_slice(&web);
    let mut p = Proxier::new(config(""), tracker, SystemExec::in_netns(&ns.0));
    p.node.ips = vec![NODE_IP.parse().unwrap(), NODE_IP6.parse().unwrap()];
    p.set_services_synced();
    p.set_slices_synced();

    assert!(!p.check_intact().unwrap(), "a new namespace has no canary");
    assert!(expect_synced(p.sync()).full);
    assert!(p.check_intact().unwrap(), "the canary is in ip6tables");
    let rules = ns.run(&["ip6tables-save"]);
    assert!(
        rules.contains("-j DNAT --to-destination [fd00:250::10]:8080"),
        "{rules}"
    );
    assert!(
        !ns.run(&["iptables-save"]).contains("US-SERVICES"),
        "IPv4's tables are not IPv6's proxier's"
    );
    assert_eq!(ns.fetch("[fd00:96::10]:80").unwrap(), "a6", "ClusterIP");
    assert_eq!(
        ns.fetch(&format!("[{NODE_IP6}]:30080")).unwrap(),
        "a6",
        "NodePort on the node's IPv6 address"
    );
    ns.assert_refused("[fd00:96::13]:80");

    // A partial sync after a change, through ip6tables-restore too.
    let mut moved = slice("web", 8080, json!([endpoint(NODE_IP6, "node-a")]));
    moved.address_type = "IPv6".into();
    moved.ports.as_mut().unwrap()[0].port = Some(8081);
    let _b = ns.serve_on(NODE_IP6, 8081, "b6");
    p.tracker.apply_endpoint_slice(&moved);
    assert!(!expect_synced(p.sync()).full);
    assert_eq!(ns.fetch("[fd00:96::10]:80").unwrap(), "b6");

    let deleted = proxier::cleanup(SystemExec::in_netns(&ns.0), None).unwrap();
    assert!(
        deleted.contains(&"ip6tables nat/US-SERVICES".to_string()),
        "{deleted:?}"
    );
    assert!(!ns.run(&["ip6tables-save"]).contains("US-"));
    drop((_a, _b));
    assert_eq!(host_rules(), before, "the host's netfilter changed");
}
