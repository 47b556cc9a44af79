//! Golden tests on the rendered text, as upstream's proxier_test.go checks
//! its iptables-restore input. Hashes are upstream's (ns1/svc1:p80 is
//! XPGD46QRK7WJZT7O there too).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::*;
use crate::tracker::{IpFamily, SERVICE_NAME_LABEL, Tracker};

const NODE: &str = "node1";

fn options() -> RenderOptions {
    RenderOptions {
        family: IpFamily::V4,
        masquerade_mark: 1 << 14,
        masquerade_all: false,
        local_detector: LocalDetector::Cidr("10.0.0.0/8".parse().unwrap()),
        localhost_node_ports: true,
        node_port_destinations: NodePortDestinations::AllLocal,
        node_ips: vec!["192.168.0.2".parse().unwrap()],
        conntrack_tcp_liberal: false,
        random_fully: true,
    }
}

fn svc(ns: &str, name: &str, spec: Value) -> Service {
    let mut spec = spec;
    let ip = spec["clusterIP"].clone();
    spec["clusterIPs"] = json!([ip]);
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
        .unwrap()
}

fn with_lb(mut service: Service, ingress: Value) -> Service {
    service.status =
        Some(serde_json::from_value(json!({"loadBalancer": {"ingress": ingress}})).unwrap());
    service
}

fn eps(ns: &str, name: &str, port: u16, endpoints: Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": format!("{name}-abcde"), "labels": {SERVICE_NAME_LABEL: name}},
        "addressType": "IPv4",
        "ports": [{"name": "p80", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints
    }))
    .unwrap()
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

fn full(tracker: &Tracker, options: &RenderOptions) -> String {
    render(tracker, options, SyncScope::Full, None).text
}

/// The lines a scenario adds to the empty ruleset, in order: the fixed
/// top-level rules are checked once, in `the_whole_text`.
fn service_lines(tracker: &Tracker, options: &RenderOptions) -> String {
    let base: BTreeSet<String> = full(&Tracker::new(IpFamily::V4, NODE), options)
        .lines()
        .map(String::from)
        .collect();
    let mut out = String::new();
    for line in full(tracker, options).lines() {
        if !base.contains(line) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn p80(ns: &str, name: &str, ip: &str, extra: Value) -> Service {
    let mut spec = json!({"clusterIP": ip, "ports": [{"name": "p80", "port": 80}]});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    svc(ns, name, spec)
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

fn two_endpoints() -> Value {
    json!([{"addresses": ["10.180.0.1"]}, {"addresses": ["10.180.0.2"]}])
}

#[test]
fn the_whole_text() {
    let t = tracker(
        &[
            p80("ns1", "svc1", "172.30.0.41", json!({})),
            p80("ns2", "svc2", "172.30.0.42", json!({})),
        ],
        &[eps(
            "ns1",
            "svc1",
            80,
            json!([{"addresses": ["10.180.0.1"]}, {"addresses": ["10.180.0.2"]}, {"addresses": ["10.180.0.3"]}]),
        )],
    );
    assert_text(
        &full(&t, &options()),
        r#"
*filter
:US-SERVICES - [0:0]
:US-EXTERNAL-SERVICES - [0:0]
:US-FORWARD - [0:0]
:US-NODEPORTS - [0:0]
:US-PROXY-FIREWALL - [0:0]
:US-FIREWALL - [0:0]
-A US-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
-A US-SERVICES -m comment --comment "ns2/svc2:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j REJECT
-A US-FORWARD -m conntrack --ctstate INVALID -j DROP
-A US-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A US-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:US-SERVICES - [0:0]
:US-NODEPORTS - [0:0]
:US-POSTROUTING - [0:0]
:US-MARK-MASQ - [0:0]
:US-SVC-XPGD46QRK7WJZT7O - [0:0]
:US-SEP-SXIVWICOYRO3J4NJ - [0:0]
:US-SEP-LXVODXWDISEETFEF - [0:0]
:US-SEP-ICDUIKC33SFI6ZPR - [0:0]
-A US-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A US-POSTROUTING -j MARK --xor-mark 0x4000
-A US-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A US-MARK-MASQ -j MARK --or-mark 0x4000
-A US-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j US-SVC-XPGD46QRK7WJZT7O
-A US-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j US-MARK-MASQ
-A US-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.3333333333 -j US-SEP-SXIVWICOYRO3J4NJ
-A US-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -m statistic --mode random --probability 0.5000000000 -j US-SEP-LXVODXWDISEETFEF
-A US-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.3:80" -j US-SEP-ICDUIKC33SFI6ZPR
-A US-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j US-MARK-MASQ
-A US-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
-A US-SEP-LXVODXWDISEETFEF -m comment --comment ns1/svc1:p80 -s 10.180.0.2 -j US-MARK-MASQ
-A US-SEP-LXVODXWDISEETFEF -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80
-A US-SEP-ICDUIKC33SFI6ZPR -m comment --comment ns1/svc1:p80 -s 10.180.0.3 -j US-MARK-MASQ
-A US-SEP-ICDUIKC33SFI6ZPR -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
-A US-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j US-NODEPORTS
COMMIT
"#,
    );
}

#[test]
fn client_ip_affinity() {
    let t = tracker(
        &[p80(
            "ns1",
            "svc1",
            "172.30.0.41",
            json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 300}}}),
        )],
        &[eps("ns1", "svc1", 80, two_endpoints())],
    );
    assert_text(&service_lines(&t, &options()), AFFINITY);
}

fn node_port_service() -> Service {
    p80(
        "ns2",
        "svc2",
        "172.30.0.42",
        json!({"type": "NodePort", "ports": [{"name": "p80", "port": 80, "nodePort": 3001}], "externalIPs": ["192.168.99.11"]}),
    )
}

#[test]
fn node_port_and_external_ip() {
    let t = tracker(
        &[node_port_service()],
        &[eps(
            "ns2",
            "svc2",
            80,
            json!([{"addresses": ["10.180.0.2"], "nodeName": "node2"}]),
        )],
    );
    assert_text(&service_lines(&t, &options()), NODEPORT_EXTERNALIP);
}

#[test]
fn no_endpoints_are_rejected_in_filter() {
    let t = tracker(&[node_port_service()], &[]);
    assert_text(&service_lines(&t, &options()), NODEPORT_NO_ENDPOINTS);
}

fn local_load_balancer(source_ranges: Value) -> Service {
    with_lb(
        p80(
            "ns5",
            "svc5",
            "172.30.0.45",
            json!({
                "type": "LoadBalancer",
                "ports": [{"name": "p80", "port": 80, "nodePort": 3002}],
                "externalTrafficPolicy": "Local",
                "healthCheckNodePort": 30000,
                "loadBalancerSourceRanges": source_ranges
            }),
        ),
        json!([{"ip": "1.2.3.4"}]),
    )
}

/// Source ranges through the FW chain (one of them holds the node, so the
/// node's own VIP-sourced traffic is let in), Local policy with a local and a
/// remote endpoint, the health check port opened.
#[test]
fn load_balancer_with_source_ranges_and_local_policy() {
    let t = tracker(
        &[local_load_balancer(json!([
            "203.0.113.0/25",
            "192.168.0.0/24"
        ]))],
        &[eps(
            "ns5",
            "svc5",
            80,
            json!([{"addresses": ["10.180.0.5"], "nodeName": NODE}, {"addresses": ["10.180.0.6"], "nodeName": "node2"}]),
        )],
    );
    assert_text(&service_lines(&t, &options()), LB_LOCAL_FW);
}

/// Local external policy with no endpoint here: outside traffic is dropped,
/// the node's pods and processes still short-circuit to the cluster chain.
#[test]
fn local_policy_without_local_endpoints() {
    let t = tracker(
        &[local_load_balancer(json!(null))],
        &[eps(
            "ns5",
            "svc5",
            80,
            json!([{"addresses": ["10.180.0.6"], "nodeName": "node2"}]),
        )],
    );
    assert_text(&service_lines(&t, &options()), LB_LOCAL_NO_LOCAL_EPS);
}

#[test]
fn internal_traffic_policy_local() {
    let itp_local = p80(
        "ns3",
        "svc3",
        "172.30.0.43",
        json!({"internalTrafficPolicy": "Local"}),
    );
    let t = tracker(
        std::slice::from_ref(&itp_local),
        &[eps(
            "ns3",
            "svc3",
            80,
            json!([{"addresses": ["10.180.0.3"], "nodeName": NODE}, {"addresses": ["10.180.0.4"], "nodeName": "node2"}]),
        )],
    );
    assert_text(&service_lines(&t, &options()), ITP_LOCAL);

    let t = tracker(
        &[itp_local],
        &[eps(
            "ns3",
            "svc3",
            80,
            json!([{"addresses": ["10.180.0.4"], "nodeName": "node2"}]),
        )],
    );
    assert_text(&service_lines(&t, &options()), ITP_LOCAL_NONE_HERE);
}

/// No ready endpoint: the serving one of the terminating ones carries traffic.
#[test]
fn terminating_endpoints_as_fallback() {
    let t = tracker(
        &[p80("ns4", "svc4", "172.30.0.44", json!({}))],
        &[eps(
            "ns4",
            "svc4",
            80,
            json!([
                {"addresses": ["10.180.0.7"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.180.0.8"], "conditions": {"ready": false, "serving": false, "terminating": true}}
            ]),
        )],
    );
    assert_text(&service_lines(&t, &options()), TERMINATING);
}

/// masqueradeAll, NodePorts only on listed addresses (loopback skipped when
/// localhost NodePorts are off), --random-fully unavailable, be_liberal set.
#[test]
fn masquerade_all_and_node_port_addresses() {
    let options = RenderOptions {
        masquerade_all: true,
        localhost_node_ports: false,
        node_port_destinations: NodePortDestinations::Ips(vec![
            "192.168.0.2".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
        ]),
        random_fully: false,
        conntrack_tcp_liberal: true,
        ..options()
    };
    let t = tracker(
        &[p80("ns1", "svc1", "172.30.0.41", json!({}))],
        &[eps(
            "ns1",
            "svc1",
            80,
            json!([{"addresses": ["10.180.0.1"]}]),
        )],
    );
    assert_text(
        &full(&t, &options),
        r#"
*filter
:US-SERVICES - [0:0]
:US-EXTERNAL-SERVICES - [0:0]
:US-FORWARD - [0:0]
:US-NODEPORTS - [0:0]
:US-PROXY-FIREWALL - [0:0]
-A US-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A US-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:US-SERVICES - [0:0]
:US-NODEPORTS - [0:0]
:US-POSTROUTING - [0:0]
:US-MARK-MASQ - [0:0]
:US-SVC-XPGD46QRK7WJZT7O - [0:0]
:US-SEP-SXIVWICOYRO3J4NJ - [0:0]
-A US-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A US-POSTROUTING -j MARK --xor-mark 0x4000
-A US-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A US-MARK-MASQ -j MARK --or-mark 0x4000
-A US-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j US-SVC-XPGD46QRK7WJZT7O
-A US-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j US-MARK-MASQ
-A US-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j US-SEP-SXIVWICOYRO3J4NJ
-A US-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j US-MARK-MASQ
-A US-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
-A US-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -d 192.168.0.2 -j US-NODEPORTS
COMMIT
"#,
    );
}

#[test]
fn localhost_node_ports_off_excludes_loopback() {
    let options = RenderOptions {
        localhost_node_ports: false,
        local_detector: LocalDetector::InterfacePrefix("veth".into()),
        ..options()
    };
    let text = full(&tracker(&[], &[]), &options);
    assert!(!text.contains("US-FIREWALL"), "{text}");
    assert!(text.contains("-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j US-NODEPORTS\n"));
    let t = tracker(
        &[p80("ns1", "svc1", "172.30.0.41", json!({}))],
        &[eps(
            "ns1",
            "svc1",
            80,
            json!([{"addresses": ["10.180.0.1"]}]),
        )],
    );
    assert!(full(&t, &options).contains("--dport 80 ! -i veth+ -j US-MARK-MASQ\n"));
}

/// A partial sync rewrites only the changed service port's chains, leaves the
/// others' out (declaring them would flush them) yet counts them as in use,
/// and deletes only stale chains of ours.
#[test]
fn partial_sync_and_stale_chains() {
    let mut t = tracker(
        &[
            p80("ns1", "svc1", "172.30.0.41", json!({})),
            p80("ns2", "svc2", "172.30.0.42", json!({})),
        ],
        &[
            eps("ns1", "svc1", 80, json!([{"addresses": ["10.180.0.1"]}])),
            eps("ns2", "svc2", 80, json!([{"addresses": ["10.180.0.2"]}])),
        ],
    );
    t.take_changes();
    t.apply_endpoint_slice(&eps("ns1", "svc1", 80, two_endpoints()));
    let changes = t.take_changes();
    let existing: BTreeSet<String> = [
        "US-SVC-XPGD46QRK7WJZT7O",
        "US-SEP-SXIVWICOYRO3J4NJ",
        "US-SVC-GNZBNJ2PO5MGZ6GT",
        "US-SEP-RS4RBKLTHTF2IUXJ",
        "US-SEP-OLDOLDOLDOLDOLDO",
        "US-SERVICES",
        "KUBE-SVC-XPGD46QRK7WJZT7O",
        "PREROUTING",
    ]
    .map(String::from)
    .into();
    let ruleset = render(
        &t,
        &options(),
        SyncScope::Partial(&changes.service_ports),
        Some(&existing),
    );
    assert_eq!(ruleset.deleted_chains, ["US-SEP-OLDOLDOLDOLDOLDO"]);
    assert!(
        ruleset
            .active_nat_chains
            .contains("US-SVC-GNZBNJ2PO5MGZ6GT")
    );
    let nat = ruleset.text.split("*nat\n").nth(1).unwrap();
    assert_text(
        nat,
        r#"
:US-SERVICES - [0:0]
:US-NODEPORTS - [0:0]
:US-POSTROUTING - [0:0]
:US-MARK-MASQ - [0:0]
:US-SVC-XPGD46QRK7WJZT7O - [0:0]
:US-SEP-SXIVWICOYRO3J4NJ - [0:0]
:US-SEP-LXVODXWDISEETFEF - [0:0]
:US-SEP-OLDOLDOLDOLDOLDO - [0:0]
-A US-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A US-POSTROUTING -j MARK --xor-mark 0x4000
-A US-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A US-MARK-MASQ -j MARK --or-mark 0x4000
-A US-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j US-SVC-XPGD46QRK7WJZT7O
-A US-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j US-MARK-MASQ
-A US-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.5000000000 -j US-SEP-SXIVWICOYRO3J4NJ
-A US-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -j US-SEP-LXVODXWDISEETFEF
-A US-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j US-MARK-MASQ
-A US-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
-A US-SEP-LXVODXWDISEETFEF -m comment --comment ns1/svc1:p80 -s 10.180.0.2 -j US-MARK-MASQ
-A US-SEP-LXVODXWDISEETFEF -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80
-A US-SERVICES -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j US-SVC-GNZBNJ2PO5MGZ6GT
-X US-SEP-OLDOLDOLDOLDOLDO
-A US-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j US-NODEPORTS
COMMIT
"#,
    );

    // The same state in full rewrites every service's chains.
    let full_text = render(&t, &options(), SyncScope::Full, None).text;
    assert!(full_text.contains(":US-SVC-GNZBNJ2PO5MGZ6GT - [0:0]\n"));
    assert!(
        full_text
            .contains("-A US-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -m tcp -p tcp")
    );
}

/// Past 1000 endpoints the per-endpoint comments go, as upstream.
#[test]
fn large_clusters_drop_endpoint_comments() {
    let endpoints: Vec<Value> = (0..1001)
        .map(|i| json!({"addresses": [format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256)]}))
        .collect();
    let t = tracker(
        &[p80("ns1", "svc1", "172.30.0.41", json!({}))],
        &[eps("ns1", "svc1", 80, Value::Array(endpoints))],
    );
    let text = full(&t, &options());
    assert!(
        !text.contains("ns1/svc1:p80 -> "),
        "no per-endpoint comments"
    );
    assert!(text.contains("-A US-SEP-"));
    let dispatch: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("-A US-SVC-XPGD46QRK7WJZT7O -m statistic"))
        .collect();
    assert_eq!(dispatch.len(), 1000);
    assert!(
        dispatch[0].contains("--probability 0.0009990010 "),
        "{}",
        dispatch[0]
    );
    assert!(
        text.contains("-A US-SERVICES -m comment --comment \"ns1/svc1:p80 cluster IP\""),
        "service comments stay"
    );
}

#[test]
fn options_from_config() {
    let config = crate::config::KubeProxyConfiguration::parse(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
         clusterCIDR: 10.244.0.0/16,fd00::/48\niptables:\n  masqueradeBit: 15\n",
    )
    .unwrap();
    let options = RenderOptions::from_config(
        &config,
        IpFamily::V4,
        vec!["192.168.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
        &[],
        NodePortDestinations::AllLocal,
    );
    assert_eq!(options.masquerade_mark, 0x8000);
    assert_eq!(
        options.local_detector,
        LocalDetector::Cidr("10.244.0.0/16".parse().unwrap())
    );
    assert!(options.localhost_node_ports);
    assert_eq!(
        options.node_ips,
        vec!["192.168.0.2".parse::<std::net::IpAddr>().unwrap()]
    );

    let only_node_ip = RenderOptions::from_config(
        &crate::config::KubeProxyConfiguration::parse(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
             nodePortAddresses: [192.168.0.0/16]\n",
        )
        .unwrap(),
        IpFamily::V4,
        vec![],
        &[],
        NodePortDestinations::Ips(vec!["192.168.0.2".parse().unwrap()]),
    );
    assert!(
        !only_node_ip.localhost_node_ports,
        "loopback not among the NodePort addresses"
    );
}

const AFFINITY: &str = r#"
:US-SVC-XPGD46QRK7WJZT7O - [0:0]
:US-SEP-SXIVWICOYRO3J4NJ - [0:0]
:US-SEP-LXVODXWDISEETFEF - [0:0]
-A US-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j US-SVC-XPGD46QRK7WJZT7O
-A US-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j US-MARK-MASQ
-A US-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m recent --name US-SEP-SXIVWICOYRO3J4NJ --rcheck --seconds 300 --reap -j US-SEP-SXIVWICOYRO3J4NJ
-A US-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -m recent --name US-SEP-LXVODXWDISEETFEF --rcheck --seconds 300 --reap -j US-SEP-LXVODXWDISEETFEF
-A US-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.5000000000 -j US-SEP-SXIVWICOYRO3J4NJ
-A US-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -j US-SEP-LXVODXWDISEETFEF
-A US-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j US-MARK-MASQ
-A US-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m recent --name US-SEP-SXIVWICOYRO3J4NJ --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
-A US-SEP-LXVODXWDISEETFEF -m comment --comment ns1/svc1:p80 -s 10.180.0.2 -j US-MARK-MASQ
-A US-SEP-LXVODXWDISEETFEF -m comment --comment ns1/svc1:p80 -m recent --name US-SEP-LXVODXWDISEETFEF --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80
"#;
const NODEPORT_EXTERNALIP: &str = r#"
:US-EXT-GNZBNJ2PO5MGZ6GT - [0:0]
:US-SVC-GNZBNJ2PO5MGZ6GT - [0:0]
:US-SEP-RS4RBKLTHTF2IUXJ - [0:0]
-A US-SERVICES -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j US-SVC-GNZBNJ2PO5MGZ6GT
-A US-SERVICES -m comment --comment "ns2/svc2:p80 external IP" -m tcp -p tcp -d 192.168.99.11 --dport 80 -j US-EXT-GNZBNJ2PO5MGZ6GT
-A US-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 3001 -j US-EXT-GNZBNJ2PO5MGZ6GT
-A US-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 cluster IP" -m tcp -p tcp -d 172.30.0.42 --dport 80 ! -s 10.0.0.0/8 -j US-MARK-MASQ
-A US-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "masquerade traffic for ns2/svc2:p80 external destinations" -j US-MARK-MASQ
-A US-EXT-GNZBNJ2PO5MGZ6GT -j US-SVC-GNZBNJ2PO5MGZ6GT
-A US-SVC-GNZBNJ2PO5MGZ6GT -m comment --comment "ns2/svc2:p80 -> 10.180.0.2:80" -j US-SEP-RS4RBKLTHTF2IUXJ
-A US-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -s 10.180.0.2 -j US-MARK-MASQ
-A US-SEP-RS4RBKLTHTF2IUXJ -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80
"#;
const NODEPORT_NO_ENDPOINTS: &str = r#"
-A US-SERVICES -m comment --comment "ns2/svc2:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j REJECT
-A US-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no endpoints" -m tcp -p tcp -d 192.168.99.11 --dport 80 -j REJECT
-A US-EXTERNAL-SERVICES -m comment --comment "ns2/svc2:p80 has no endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j REJECT
"#;
const LB_LOCAL_FW: &str = r#"
-A US-PROXY-FIREWALL -m comment --comment "ns5/svc5:p80 traffic not accepted by US-FW-NUKIZ6OKUXPJNT4C" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j DROP
-A US-NODEPORTS -m comment --comment "ns5/svc5:p80 health check node port" -m tcp -p tcp --dport 30000 -j ACCEPT
:US-EXT-NUKIZ6OKUXPJNT4C - [0:0]
:US-FW-NUKIZ6OKUXPJNT4C - [0:0]
:US-SVC-NUKIZ6OKUXPJNT4C - [0:0]
:US-SVL-NUKIZ6OKUXPJNT4C - [0:0]
:US-SEP-TGTSLJDSI6KB7NCB - [0:0]
:US-SEP-A4DKTHKFNECIAUSJ - [0:0]
-A US-SERVICES -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 -j US-SVC-NUKIZ6OKUXPJNT4C
-A US-SERVICES -m comment --comment "ns5/svc5:p80 loadbalancer IP" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j US-FW-NUKIZ6OKUXPJNT4C
-A US-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp --dport 3002 -j US-EXT-NUKIZ6OKUXPJNT4C
-A US-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 ! -s 10.0.0.0/8 -j US-MARK-MASQ
-A US-EXT-NUKIZ6OKUXPJNT4C -m comment --comment "pod traffic for ns5/svc5:p80 external destinations" -s 10.0.0.0/8 -j US-SVC-NUKIZ6OKUXPJNT4C
-A US-EXT-NUKIZ6OKUXPJNT4C -m comment --comment "masquerade LOCAL traffic for ns5/svc5:p80 external destinations" -m addrtype --src-type LOCAL -j US-MARK-MASQ
-A US-EXT-NUKIZ6OKUXPJNT4C -m comment --comment "route LOCAL traffic for ns5/svc5:p80 external destinations" -m addrtype --src-type LOCAL -j US-SVC-NUKIZ6OKUXPJNT4C
-A US-EXT-NUKIZ6OKUXPJNT4C -j US-SVL-NUKIZ6OKUXPJNT4C
-A US-FW-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 203.0.113.0/25 -j US-EXT-NUKIZ6OKUXPJNT4C
-A US-FW-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 192.168.0.0/24 -j US-EXT-NUKIZ6OKUXPJNT4C
-A US-FW-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 loadbalancer IP" -s 1.2.3.4 -j US-EXT-NUKIZ6OKUXPJNT4C
-A US-FW-NUKIZ6OKUXPJNT4C -m comment --comment "other traffic to ns5/svc5:p80 will be dropped by US-PROXY-FIREWALL"
-A US-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.5:80" -m statistic --mode random --probability 0.5000000000 -j US-SEP-TGTSLJDSI6KB7NCB
-A US-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.6:80" -j US-SEP-A4DKTHKFNECIAUSJ
-A US-SVL-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.5:80" -j US-SEP-TGTSLJDSI6KB7NCB
-A US-SEP-TGTSLJDSI6KB7NCB -m comment --comment ns5/svc5:p80 -s 10.180.0.5 -j US-MARK-MASQ
-A US-SEP-TGTSLJDSI6KB7NCB -m comment --comment ns5/svc5:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.5:80
-A US-SEP-A4DKTHKFNECIAUSJ -m comment --comment ns5/svc5:p80 -s 10.180.0.6 -j US-MARK-MASQ
-A US-SEP-A4DKTHKFNECIAUSJ -m comment --comment ns5/svc5:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.6:80
"#;
const LB_LOCAL_NO_LOCAL_EPS: &str = r#"
-A US-EXTERNAL-SERVICES -m comment --comment "ns5/svc5:p80 has no local endpoints" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j DROP
-A US-EXTERNAL-SERVICES -m comment --comment "ns5/svc5:p80 has no local endpoints" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3002 -j DROP
-A US-NODEPORTS -m comment --comment "ns5/svc5:p80 health check node port" -m tcp -p tcp --dport 30000 -j ACCEPT
:US-EXT-NUKIZ6OKUXPJNT4C - [0:0]
:US-SVC-NUKIZ6OKUXPJNT4C - [0:0]
:US-SEP-A4DKTHKFNECIAUSJ - [0:0]
-A US-SERVICES -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 -j US-SVC-NUKIZ6OKUXPJNT4C
-A US-SERVICES -m comment --comment "ns5/svc5:p80 loadbalancer IP" -m tcp -p tcp -d 1.2.3.4 --dport 80 -j US-EXT-NUKIZ6OKUXPJNT4C
-A US-NODEPORTS -m comment --comment ns5/svc5:p80 -m tcp -p tcp --dport 3002 -j US-EXT-NUKIZ6OKUXPJNT4C
-A US-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 cluster IP" -m tcp -p tcp -d 172.30.0.45 --dport 80 ! -s 10.0.0.0/8 -j US-MARK-MASQ
-A US-EXT-NUKIZ6OKUXPJNT4C -m comment --comment "pod traffic for ns5/svc5:p80 external destinations" -s 10.0.0.0/8 -j US-SVC-NUKIZ6OKUXPJNT4C
-A US-EXT-NUKIZ6OKUXPJNT4C -m comment --comment "masquerade LOCAL traffic for ns5/svc5:p80 external destinations" -m addrtype --src-type LOCAL -j US-MARK-MASQ
-A US-EXT-NUKIZ6OKUXPJNT4C -m comment --comment "route LOCAL traffic for ns5/svc5:p80 external destinations" -m addrtype --src-type LOCAL -j US-SVC-NUKIZ6OKUXPJNT4C
-A US-SVC-NUKIZ6OKUXPJNT4C -m comment --comment "ns5/svc5:p80 -> 10.180.0.6:80" -j US-SEP-A4DKTHKFNECIAUSJ
-A US-SEP-A4DKTHKFNECIAUSJ -m comment --comment ns5/svc5:p80 -s 10.180.0.6 -j US-MARK-MASQ
-A US-SEP-A4DKTHKFNECIAUSJ -m comment --comment ns5/svc5:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.6:80
"#;
const ITP_LOCAL: &str = r#"
:US-SVL-X27LE4BHSL4DOUIK - [0:0]
:US-SEP-OYPFS5VJICHGATKP - [0:0]
-A US-SERVICES -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j US-SVL-X27LE4BHSL4DOUIK
-A US-SVL-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j US-MARK-MASQ
-A US-SVL-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.180.0.3:80" -j US-SEP-OYPFS5VJICHGATKP
-A US-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -s 10.180.0.3 -j US-MARK-MASQ
-A US-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
"#;
const ITP_LOCAL_NONE_HERE: &str = r#"
-A US-SERVICES -m comment --comment "ns3/svc3:p80 has no local endpoints" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j DROP
"#;
const TERMINATING: &str = r#"
:US-SVC-4SW47YFZTEDKD3PK - [0:0]
:US-SEP-KV4FMR6WJFBQE3OH - [0:0]
-A US-SERVICES -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 -j US-SVC-4SW47YFZTEDKD3PK
-A US-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 cluster IP" -m tcp -p tcp -d 172.30.0.44 --dport 80 ! -s 10.0.0.0/8 -j US-MARK-MASQ
-A US-SVC-4SW47YFZTEDKD3PK -m comment --comment "ns4/svc4:p80 -> 10.180.0.7:80" -j US-SEP-KV4FMR6WJFBQE3OH
-A US-SEP-KV4FMR6WJFBQE3OH -m comment --comment ns4/svc4:p80 -s 10.180.0.7 -j US-MARK-MASQ
-A US-SEP-KV4FMR6WJFBQE3OH -m comment --comment ns4/svc4:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.7:80
"#;

/// A change of [`cached_parts_render_what_a_render_of_everything_does`]:
/// Service `i` (re)made with session affinity, an external IP from a pool
/// of two, a NodePort or load balancer with source ranges and an
/// `externalTrafficPolicy: Local`; its endpoints a subset of eight
/// addresses, some on this node; or its deletion.
#[derive(Clone, Debug)]
enum Change {
    Service(usize, bool, Option<usize>, u8),
    Endpoints(usize, u8),
    Delete(usize),
}

fn change() -> impl proptest::strategy::Strategy<Value = Change> {
    use proptest::prelude::*;
    prop_oneof![
        (
            0..5usize,
            any::<bool>(),
            proptest::option::of(0..2usize),
            0..4u8
        )
            .prop_map(|(i, sticky, ip, kind)| Change::Service(i, sticky, ip, kind)),
        (0..5usize, any::<u8>()).prop_map(|(i, bits)| Change::Endpoints(i, bits)),
        (0..5usize).prop_map(Change::Delete),
    ]
}

fn apply(t: &mut Tracker, change: &Change) {
    match *change {
        Change::Service(i, sticky, external_ip, kind) => {
            let mut spec = json!({"clusterIP": format!("172.30.1.{i}"),
                "ports": [{"name": "p80", "port": 80}]});
            if sticky {
                spec["sessionAffinity"] = json!("ClientIP");
            }
            if let Some(e) = external_ip {
                spec["externalIPs"] = json!([format!("192.168.99.{e}")]);
            }
            // 0: ClusterIP; 1: NodePort; 2: LoadBalancer; 3: LB, Local.
            if kind > 0 {
                spec["type"] = json!(if kind == 1 {
                    "NodePort"
                } else {
                    "LoadBalancer"
                });
                spec["ports"] = json!([{"name": "p80", "port": 80, "nodePort": 30080 + i}]);
            }
            if kind > 1 {
                spec["loadBalancerSourceRanges"] = json!(["203.0.113.0/24"]);
            }
            if kind == 3 {
                spec["externalTrafficPolicy"] = json!("Local");
                spec["healthCheckNodePort"] = json!(32000 + i);
            }
            let service = svc("ns", &format!("svc{i}"), spec);
            let service = if kind > 1 {
                with_lb(service, json!([{"ip": format!("5.6.7.{i}")}]))
            } else {
                service
            };
            t.apply_service(&service);
        }
        Change::Endpoints(i, bits) => {
            let endpoints: Vec<Value> = (0..8)
                .filter(|b| bits & (1 << b) != 0)
                .map(|b| {
                    let node = if b % 2 == 0 { NODE } else { "other-node" };
                    json!({"addresses": [format!("10.180.0.{b}")], "nodeName": node})
                })
                .collect();
            t.apply_endpoint_slice(&eps("ns", &format!("svc{i}"), 80, json!(endpoints)));
        }
        Change::Delete(i) => {
            t.delete_service("ns", &format!("svc{i}"));
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 200, ..Default::default() })]

    /// Partial syncs that take unchanged ports' parts from the cache render
    /// exactly what working out every port renders, over any run of changes.
    #[test]
    fn cached_parts_render_what_a_render_of_everything_does(
        start in proptest::collection::vec(change(), 0..8),
        syncs in proptest::collection::vec(proptest::collection::vec(change(), 1..4), 1..8),
    ) {
        let mut t = Tracker::new(IpFamily::V4, NODE);
        for c in &start {
            apply(&mut t, c);
        }
        let mut parts = Parts::default();
        let mut last = render_cached(&t, &options(), SyncScope::Full, None, &mut parts);
        t.take_changes();
        for sync in &syncs {
            for c in sync {
                apply(&mut t, c);
            }
            let changes = t.take_changes();
            let scope = SyncScope::Partial(&changes.service_ports);
            let existing = last.active_nat_chains.clone();
            let reference = render(&t, &options(), scope, Some(&existing));
            let ours = render_cached(&t, &options(), scope, Some(&existing), &mut parts);
            proptest::prop_assert_eq!(&ours, &reference);
            last = reference;
        }
    }
}
