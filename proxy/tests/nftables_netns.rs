//! The nftables mode through the real `nft` and real packets: each test
//! makes a network namespace of its own (deleted when done, even on
//! failure), syncs the proxier into it and connects to ClusterIPs and
//! NodePorts whose endpoints are listeners in that namespace. The host's
//! netfilter is never written, and the tests check it did not change.
//!
//! Sockets are opened from threads that entered the namespace (a socket
//! keeps the namespace it was made in), so the test process itself stays
//! in the host's.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use understudy_proxy::config::KubeProxyConfiguration;
use understudy_proxy::exec::SystemExec;
use understudy_proxy::proxier::{self, Backend, Proxier, SyncOutcome, SyncReport};
use understudy_proxy::tracker::{IpFamily, Tracker};

mod common;
use common::packets::{NODE_IP, NODE_IP6};
use common::{Netns, host_rules};

impl Netns {
    /// A namespace with only loopback up.
    fn bare(tag: &str) -> Self {
        Netns::bare_in("us-nft", tag)
    }

    /// A node alone: its addresses on an interface that is the default route.
    fn new(tag: &str) -> Self {
        Netns::node_in("us-nft", tag)
    }

    fn nft(&self, args: &[&str]) -> String {
        self.run(&[&["nft"], args].concat())
    }
}

fn service(name: &str, spec: Value) -> k8s_openapi::api::core::v1::Service {
    serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": name}, "spec": spec}))
        .unwrap()
}

fn slice(service: &str, port: u16, ips: &[&str]) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    let endpoints: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "nodeName": "node-a", "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": format!("{service}-{port}"),
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "p", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

fn spec(ip: &str, extra: Value) -> Value {
    let mut spec = json!({"clusterIP": ip, "clusterIPs": [ip],
                          "ports": [{"name": "p", "port": 80, "protocol": "TCP"}]});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

fn proxier(ns: &Netns) -> Proxier<SystemExec> {
    proxier_of(ns, IpFamily::V4)
}

fn proxier_of(ns: &Netns, family: IpFamily) -> Proxier<SystemExec> {
    let config = KubeProxyConfiguration::parse(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
         mode: nftables\nclusterCIDR: 10.244.0.0/16\n",
    )
    .unwrap();
    let mut p = Proxier::new(
        config,
        Tracker::new(family, "node-a"),
        SystemExec::in_netns(&ns.0),
    );
    p.node.ips = vec![NODE_IP.parse().unwrap(), NODE_IP6.parse().unwrap()];
    p.set_services_synced();
    p.set_slices_synced();
    p
}

fn synced(outcome: SyncOutcome) -> SyncReport {
    match outcome {
        SyncOutcome::Synced(report) => report,
        other => panic!("sync: {other:?}"),
    }
}

#[test]
fn cluster_ips_and_node_ports_reach_their_endpoints_and_empty_services_refuse() {
    let before = host_rules();
    let ns = Netns::new("path");
    let _a = ns.serve(8080, "a");
    let _b = ns.serve(8081, "b");
    let mut p = proxier(&ns);
    p.tracker.apply_service(&service(
        "web",
        spec(
            "10.96.0.10",
            json!({"type": "NodePort", "ports": [{"name": "p", "port": 80, "nodePort": 30080}]}),
        ),
    ));
    p.tracker
        .apply_endpoint_slice(&slice("web", 8080, &[NODE_IP]));
    p.tracker.apply_service(&service(
        "empty",
        spec(
            "10.96.0.13",
            json!({"type": "NodePort", "ports": [{"name": "p", "port": 80, "nodePort": 30083}]}),
        ),
    ));
    assert!(!p.check_intact().unwrap(), "a new namespace has no table");
    assert!(synced(p.sync()).full);
    assert!(p.check_intact().unwrap());

    assert_eq!(ns.fetch("10.96.0.10:80").unwrap(), "a", "ClusterIP");
    assert_eq!(
        ns.fetch(&format!("{NODE_IP}:30080")).unwrap(),
        "a",
        "NodePort"
    );
    ns.assert_refused("10.96.0.13:80");
    ns.assert_refused(&format!("{NODE_IP}:30083"));
    ns.assert_refused("10.96.0.10:81");

    // A partial sync: the endpoint moves to the other server.
    p.tracker
        .apply_endpoint_slice(&slice("web", 8081, &[NODE_IP]));
    p.tracker
        .delete_endpoint_slice(&slice("web", 8080, &[NODE_IP]));
    let report = synced(p.sync());
    assert!(!report.full);
    assert_eq!(ns.fetch("10.96.0.10:80").unwrap(), "b");

    // Endpoints go: refused at once.
    p.tracker
        .delete_endpoint_slice(&slice("web", 8081, &[NODE_IP]));
    synced(p.sync());
    ns.assert_refused("10.96.0.10:80");
    ns.assert_refused(&format!("{NODE_IP}:30080"));

    // The service goes: its chain is flushed, then deleted at a later sync.
    p.tracker
        .apply_endpoint_slice(&slice("web", 8080, &[NODE_IP]));
    synced(p.sync());
    let chain = "-ns/web/tcp/p";
    assert!(ns.nft(&["list", "chains", "ip"]).contains(chain));
    p.tracker.delete_service("ns", "web");
    synced(p.sync());
    let table = ns.nft(&["list", "table", "ip", "understudy-proxy"]);
    assert!(!table.contains("10.96.0.10"), "{table}");
    assert!(table.contains(chain), "flushed, not yet deleted: {table}");
    if let Backend::Nftables(b) = &mut p.backend {
        b.stale_chain_grace = Duration::ZERO;
    }
    synced(p.sync());
    let table = ns.nft(&["list", "table", "ip", "understudy-proxy"]);
    assert!(!table.contains(chain), "deleted: {table}");
    drop((_a, _b));
    assert_eq!(host_rules(), before, "the host's netfilter changed");
}

#[test]
fn load_balancer_source_ranges_let_in_only_their_sources() {
    let before = host_rules();
    let ns = Netns::new("ranges");
    let _a = ns.serve(8080, "a");
    let mut p = proxier(&ns);
    let lb = |name: &str, cluster_ip: &str, lb_ip: &str, range: &str| {
        let mut s = service(
            name,
            spec(
                cluster_ip,
                json!({"type": "LoadBalancer", "loadBalancerSourceRanges": [range],
                       "ports": [{"name": "p", "port": 80, "nodePort": 30090}]}),
            ),
        );
        s.status = Some(
            serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": lb_ip}]}})).unwrap(),
        );
        s
    };
    // The node's own address is the client's source.
    p.tracker
        .apply_service(&lb("open", "10.96.0.30", "192.0.2.30", "10.250.0.0/24"));
    p.tracker
        .apply_service(&lb("closed", "10.96.0.31", "192.0.2.31", "203.0.113.0/24"));
    for name in ["open", "closed"] {
        p.tracker
            .apply_endpoint_slice(&slice(name, 8080, &[NODE_IP]));
    }
    synced(p.sync());
    assert_eq!(ns.fetch("192.0.2.30:80").unwrap(), "a");
    let addr: SocketAddr = "192.0.2.31:80".parse().unwrap();
    let dropped = ns.within(move || TcpStream::connect_timeout(&addr, Duration::from_secs(1)));
    assert!(
        matches!(&dropped, Err(e) if e.kind() == std::io::ErrorKind::TimedOut),
        "dropped, not answered: {dropped:?}"
    );
    assert_eq!(
        ns.fetch("10.96.0.31:80").unwrap(),
        "a",
        "the ClusterIP is not filtered"
    );
    drop(_a);
    assert_eq!(host_rules(), before, "the host's netfilter changed");
}

#[test]
fn endpoints_are_picked_at_random_unless_the_client_is_sticky() {
    let before = host_rules();
    let ns = Netns::new("pick");
    let _a = ns.serve(8080, "a");
    let _b = ns.serve(8081, "b");
    let mut p = proxier(&ns);
    let two = |name: &str| {
        // One slice per endpoint port: the same IP, two servers.
        [slice(name, 8080, &[NODE_IP]), {
            let mut s = slice(name, 8081, &[NODE_IP]);
            s.metadata.name = Some(format!("{name}-second"));
            s
        }]
    };
    p.tracker
        .apply_service(&service("random", spec("10.96.0.20", json!({}))));
    p.tracker.apply_service(&service(
        "sticky",
        spec("10.96.0.21", json!({"sessionAffinity": "ClientIP"})),
    ));
    for s in two("random").iter().chain(&two("sticky")) {
        p.tracker.apply_endpoint_slice(s);
    }
    synced(p.sync());

    // 40 tries all landing on one of two endpoints: 2^-39.
    let random: Vec<String> = (0..40)
        .map(|_| ns.fetch("10.96.0.20:80").unwrap())
        .collect();
    assert!(
        random.iter().any(|r| r == "a") && random.iter().any(|r| r == "b"),
        "{random:?}"
    );
    let sticky: Vec<String> = (0..20)
        .map(|_| ns.fetch("10.96.0.21:80").unwrap())
        .collect();
    assert!(sticky.iter().all(|r| *r == sticky[0]), "{sticky:?}");
    let table = ns.nft(&["list", "table", "ip", "understudy-proxy"]);
    assert!(table.contains("set affinity-"), "{table}");
    assert!(table.contains("flags dynamic,timeout"), "{table}");
    drop((_a, _b));
    assert_eq!(host_rules(), before, "the host's netfilter changed");
}

#[test]
fn a_deleted_table_is_noticed_and_written_again_and_cleanup_removes_it() {
    let before = host_rules();
    let ns = Netns::new("table");
    let _a = ns.serve(8080, "a");
    let mut p = proxier(&ns);
    p.tracker
        .apply_service(&service("web", spec("10.96.0.10", json!({}))));
    p.tracker
        .apply_endpoint_slice(&slice("web", 8080, &[NODE_IP]));
    synced(p.sync());
    assert_eq!(ns.fetch("10.96.0.10:80").unwrap(), "a");

    ns.nft(&["delete", "table", "ip", "understudy-proxy"]);
    assert!(!p.check_intact().unwrap());
    p.force_full_sync();
    assert!(synced(p.sync()).full);
    assert_eq!(ns.fetch("10.96.0.10:80").unwrap(), "a");

    // Once more, before the check notices: the partial sync, which trusts
    // its record of the table, fails on the missing table, and the next
    // sync is full (it lists, finds no table, and makes it again).
    ns.nft(&["delete", "table", "ip", "understudy-proxy"]);
    p.tracker
        .apply_endpoint_slice(&slice("web", 8080, &[NODE_IP, "10.244.9.9"]));
    assert!(
        matches!(p.sync(), SyncOutcome::Failed { full: false, .. }),
        "a partial sync into a missing table fails"
    );
    assert!(synced(p.sync()).full, "after a failed sync: full");
    assert!(p.check_intact().unwrap(), "the table is back");

    let removed = proxier::cleanup(SystemExec::in_netns(&ns.0), None).unwrap();
    assert_eq!(removed, ["nftables ip understudy-proxy"]);
    let left = ns.nft(&["list", "ruleset"]);
    assert!(!left.contains("understudy-proxy"), "cleanup left:\n{left}");
    drop(_a);
    assert_eq!(host_rules(), before, "the host's netfilter changed");
}

#[test]
fn ipv6_services_go_through_our_ip6_table() {
    let before = host_rules();
    let ns = Netns::new("six");
    let _a = ns.serve_on(NODE_IP6, 8080, "a6");
    let mut p = proxier_of(&ns, IpFamily::V6);
    p.tracker.apply_service(&service(
        "web",
        spec(
            "fd00:96::10",
            json!({"type": "NodePort", "ports": [{"name": "p", "port": 80, "nodePort": 30080}]}),
        ),
    ));
    p.tracker
        .apply_service(&service("empty", spec("fd00:96::13", json!({}))));
    let mut web = slice("web", 8080, &[NODE_IP6]);
    web.address_type = "IPv6".into();
    p.tracker.apply_endpoint_slice(&web);
    assert!(synced(p.sync()).full);
    assert!(p.check_intact().unwrap());
    assert_eq!(ns.fetch("[fd00:96::10]:80").unwrap(), "a6", "ClusterIP");
    assert_eq!(
        ns.fetch(&format!("[{NODE_IP6}]:30080")).unwrap(),
        "a6",
        "NodePort on the primary IPv6 address"
    );
    ns.assert_refused("[fd00:96::13]:80");
    let removed = proxier::cleanup(SystemExec::in_netns(&ns.0), None).unwrap();
    assert_eq!(removed, ["nftables ip6 understudy-proxy"]);
    drop(_a);
    assert_eq!(host_rules(), before, "the host's netfilter changed");
}

/// A node with a pod and an outside client, each in a namespace of its
/// own on a veth pair to the node, which forwards between them:
/// pod 10.244.0.5 (node side 10.244.0.1), client 10.250.0.20 (node side
/// the node's address, 10.250.0.10).
struct Cluster {
    node: Netns,
    pod: Netns,
    client: Netns,
}

const POD_IP: &str = "10.244.0.5";
const POD_GATEWAY: &str = "10.244.0.1";
const CLIENT_IP: &str = "10.250.0.20";

impl Cluster {
    fn new(tag: &str) -> Self {
        let node = Netns::bare(&format!("{tag}n"));
        let pod = Netns::bare(&format!("{tag}p"));
        let client = Netns::bare(&format!("{tag}c"));
        for (peer, ours, theirs, node_ip, peer_ip) in [
            (&pod, "vpod", "eth0", POD_GATEWAY, POD_IP),
            (&client, "vcli", "eth0", NODE_IP, CLIENT_IP),
        ] {
            node.ip(&format!(
                "link add {ours} type veth peer name {theirs} netns {}",
                peer.0
            ));
            node.ip(&format!("addr add {node_ip}/24 dev {ours}"));
            node.ip(&format!("link set {ours} up"));
            peer.ip(&format!("addr add {peer_ip}/24 dev {theirs}"));
            peer.ip(&format!("link set {theirs} up"));
            peer.ip(&format!("route add default via {node_ip}"));
        }
        let forward = Command::new("ip")
            .args([
                "netns",
                "exec",
                &node.0,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])
            .status()
            .unwrap();
        assert!(forward.success(), "ip_forward in the node's namespace");
        Cluster { node, pod, client }
    }
}

#[test]
fn masquerading_hairpin_and_external_traffic_policy_with_a_real_pod_and_client() {
    let before = host_rules();
    let c = Cluster::new("mq");
    let _server = c.pod.serve_peer(POD_IP, 8080);
    let mut p = proxier(&c.node);
    let node_port = |name: &str, ip: &str, port: u16, policy: &str| {
        service(
            name,
            spec(
                ip,
                json!({"type": "NodePort", "externalTrafficPolicy": policy,
                       "ports": [{"name": "p", "port": 80, "nodePort": port}]}),
            ),
        )
    };
    p.tracker
        .apply_service(&node_port("cluster", "10.96.0.50", 30050, "Cluster"));
    p.tracker
        .apply_service(&node_port("local", "10.96.0.51", 30051, "Local"));
    p.tracker
        .apply_service(&node_port("elsewhere", "10.96.0.52", 30052, "Local"));
    for name in ["cluster", "local"] {
        p.tracker
            .apply_endpoint_slice(&slice(name, 8080, &[POD_IP]));
    }
    let mut remote = slice("elsewhere", 8080, &["10.244.1.9"]);
    remote.endpoints.as_mut().unwrap()[0].node_name = Some("node-b".into());
    p.tracker.apply_endpoint_slice(&remote);
    synced(p.sync());

    // The pod reaches itself through its service: masqueraded (the hairpin
    // set), or its own reply would never be un-DNATed.
    assert_eq!(c.pod.fetch("10.96.0.50:80").unwrap(), POD_GATEWAY);
    // An outside client reaching a ClusterIP is masqueraded (not from the
    // cluster CIDR), and so is NodePort traffic under Cluster policy...
    assert_eq!(c.client.fetch("10.96.0.50:80").unwrap(), POD_GATEWAY);
    assert_eq!(
        c.client.fetch(&format!("{NODE_IP}:30050")).unwrap(),
        POD_GATEWAY
    );
    // ...but under Local policy the pod sees the client.
    assert_eq!(
        c.client.fetch(&format!("{NODE_IP}:30051")).unwrap(),
        CLIENT_IP
    );
    // Local policy, no endpoint on this node: dropped, not forwarded.
    let addr: SocketAddr = format!("{NODE_IP}:30052").parse().unwrap();
    let dropped = c
        .client
        .within(move || TcpStream::connect_timeout(&addr, Duration::from_secs(1)));
    assert!(
        matches!(&dropped, Err(e) if e.kind() == std::io::ErrorKind::TimedOut),
        "{dropped:?}"
    );
    drop(_server);
    assert_eq!(host_rules(), before, "the host's netfilter changed");
}
