//! Golden tests of the IPVS mode's iptables-restore input.

use serde_json::json;

use super::*;
use crate::ipvs::desired::desired_state;
use crate::ipvs::desired::tests::{ep, eps, options, svc, tracker, with_lb};

fn rule_options() -> RuleOptions {
    RuleOptions {
        family: IpFamily::V4,
        masquerade_mark: 1 << 14,
        masquerade_all: false,
        local_detector: LocalDetector::Cidr("10.0.0.0/8".parse().unwrap()),
    }
}

#[test]
fn no_services_leave_the_fixed_rules() {
    let text = render(&Desired::default(), &rule_options());
    let golden = "\
*nat
:US-SERVICES - [0:0]
:US-POSTROUTING - [0:0]
:US-NODE-PORT - [0:0]
:US-LOAD-BALANCER - [0:0]
:US-MARK-MASQ - [0:0]
-A US-SERVICES -s 127.0.0.0/8 -j RETURN
-A US-SERVICES -m addrtype --dst-type LOCAL -j US-NODE-PORT
-A US-LOAD-BALANCER -j US-MARK-MASQ
-A US-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN
-A US-POSTROUTING -j MARK --xor-mark 0x00004000
-A US-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully
-A US-MARK-MASQ -j MARK --or-mark 0x00004000
COMMIT
*filter
:US-FORWARD - [0:0]
:US-NODE-PORT - [0:0]
:US-PROXY-FIREWALL - [0:0]
:US-SOURCE-RANGES-FIREWALL - [0:0]
:US-IPVS-FILTER - [0:0]
:US-IPVS-OUT-FILTER - [0:0]
-A US-SOURCE-RANGES-FIREWALL -j DROP
-A US-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x00004000/0x00004000 -j ACCEPT
-A US-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A US-NODE-PORT -m comment --comment \"Kubernetes health check node port\" -m set --match-set US-HEALTH-CHECK-NODE-PORT dst -j ACCEPT
-A US-IPVS-FILTER -m set --match-set US-LOAD-BALANCER dst,dst -j RETURN
-A US-IPVS-FILTER -m set --match-set US-CLUSTER-IP dst,dst -j RETURN
-A US-IPVS-FILTER -m set --match-set US-EXTERNAL-IP dst,dst -j RETURN
-A US-IPVS-FILTER -m set --match-set US-EXTERNAL-IP-LOCAL dst,dst -j RETURN
-A US-IPVS-FILTER -m set --match-set US-HEALTH-CHECK-NODE-PORT dst -j RETURN
-A US-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set US-IPVS-IPS dst -j REJECT
COMMIT
";
    assert_eq!(text, golden);
}

#[test]
fn rules_for_every_used_set() {
    let lb = with_lb(
        svc(
            "lb",
            json!({"type": "LoadBalancer", "clusterIP": "172.30.0.41",
                   "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 30080}],
                   "loadBalancerSourceRanges": ["198.51.100.0/24"], "externalTrafficPolicy": "Local",
                   "healthCheckNodePort": 31000}),
        ),
        json!([{"ip": "203.0.113.9"}]),
    );
    let ext = svc(
        "ext",
        json!({"type": "NodePort", "clusterIP": "172.30.0.42", "externalIPs": ["192.168.99.1"],
               "ports": [{"name": "p80", "port": 53, "protocol": "UDP", "nodePort": 30053}]}),
    );
    let t = tracker(
        &[lb, ext],
        &[eps("lb", "TCP", json!([ep("10.180.0.2", "node1")]))],
    );
    let text = render(&desired_state(&t, &options()), &rule_options());
    let nat: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "*nat")
        .take_while(|l| *l != "COMMIT")
        .filter(|l| l.starts_with("-A"))
        .collect();
    let golden_nat = [
        "-A US-SERVICES -s 127.0.0.0/8 -j RETURN",
        "-A US-POSTROUTING -m comment --comment \"Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose\" -m set --match-set US-LOOP-BACK dst,dst,src -j MASQUERADE",
        "-A US-SERVICES -m comment --comment \"Kubernetes service lb portal\" -m set --match-set US-LOAD-BALANCER dst,dst -j US-LOAD-BALANCER",
        "-A US-LOAD-BALANCER -m comment --comment \"Kubernetes service load balancer ip + port with externalTrafficPolicy=local\" -m set --match-set US-LOAD-BALANCER-LOCAL dst,dst -j RETURN",
        "-A US-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port with externalTrafficPolicy=local\" -m set --match-set US-NODE-PORT-LOCAL-TCP dst -j RETURN",
        "-A US-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port for masquerade purpose\" -m set --match-set US-NODE-PORT-TCP dst -j US-MARK-MASQ",
        "-A US-NODE-PORT -p udp -m comment --comment \"Kubernetes nodeport UDP port for masquerade purpose\" -m set --match-set US-NODE-PORT-UDP dst -j US-MARK-MASQ",
        "-A US-SERVICES -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set US-CLUSTER-IP dst,dst ! -s 10.0.0.0/8 -j US-MARK-MASQ",
        "-A US-SERVICES -m comment --comment \"Kubernetes service external ip + port for masquerade and filter purpose\" -m set --match-set US-EXTERNAL-IP dst,dst -j US-MARK-MASQ",
        "-A US-SERVICES -m comment --comment \"Kubernetes service external ip + port for masquerade and filter purpose\" -m set --match-set US-EXTERNAL-IP dst,dst -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT",
        "-A US-SERVICES -m comment --comment \"Kubernetes service external ip + port for masquerade and filter purpose\" -m set --match-set US-EXTERNAL-IP dst,dst -m addrtype --dst-type LOCAL -j ACCEPT",
        "-A US-SERVICES -m addrtype --dst-type LOCAL -j US-NODE-PORT",
        "-A US-LOAD-BALANCER -j US-MARK-MASQ",
        "-A US-SERVICES -m set --match-set US-CLUSTER-IP dst,dst -j ACCEPT",
        "-A US-SERVICES -m set --match-set US-LOAD-BALANCER dst,dst -j ACCEPT",
        "-A US-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN",
        "-A US-POSTROUTING -j MARK --xor-mark 0x00004000",
        "-A US-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully",
        "-A US-MARK-MASQ -j MARK --or-mark 0x00004000",
    ];
    assert_eq!(nat, golden_nat);
    let filter: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "*filter")
        .filter(|l| l.starts_with("-A"))
        .take(4)
        .collect();
    let golden_filter = [
        "-A US-PROXY-FIREWALL -m comment --comment \"Kubernetes service load balancer ip + port for load balancer with sourceRange\" -m set --match-set US-LOAD-BALANCER-FW dst,dst -j US-SOURCE-RANGES-FIREWALL",
        "-A US-SOURCE-RANGES-FIREWALL -m comment --comment \"Kubernetes service load balancer ip + port + source cidr for packet filter purpose\" -m set --match-set US-LOAD-BALANCER-SOURCE-CIDR dst,dst,src -j RETURN",
        "-A US-SOURCE-RANGES-FIREWALL -j DROP",
        "-A US-IPVS-OUT-FILTER -s 203.0.113.9 -m ipvs --vaddr 203.0.113.9 --vproto tcp --vport 80 -j DROP",
    ];
    assert_eq!(filter, golden_filter);
}

#[test]
fn cluster_ip_masquerading_follows_the_options() {
    let t = tracker(
        &[svc(
            "svc1",
            json!({"clusterIP": "172.30.0.41", "ports": [{"name": "p80", "port": 80}]}),
        )],
        &[],
    );
    let desired = desired_state(&t, &options());
    let masquerade_rule = |options: RuleOptions| {
        render(&desired, &options)
            .lines()
            .find(|l| l.contains("US-CLUSTER-IP") && l.ends_with("-j US-MARK-MASQ"))
            .map(|l| l.rsplit("US-CLUSTER-IP ").next().unwrap().to_string())
    };
    assert_eq!(
        masquerade_rule(RuleOptions {
            masquerade_all: true,
            ..rule_options()
        }),
        Some("dst,dst -j US-MARK-MASQ".into())
    );
    assert_eq!(
        masquerade_rule(RuleOptions {
            local_detector: LocalDetector::None,
            ..rule_options()
        }),
        Some("src,dst -j US-MARK-MASQ".into()),
        "no way to tell pods: masquerade the node's own connections from a service address"
    );
    assert_eq!(
        masquerade_rule(RuleOptions {
            local_detector: LocalDetector::InterfacePrefix("veth".into()),
            ..rule_options()
        }),
        Some("dst,dst ! -i veth+ -j US-MARK-MASQ".into())
    );
    let v6 = render(
        &Desired::default(),
        &RuleOptions {
            family: IpFamily::V6,
            ..rule_options()
        },
    );
    assert!(v6.contains("-A US-SERVICES -s ::1/128 -j RETURN"));
    assert!(v6.contains("--match-set US-6-IPVS-IPS dst -j REJECT"));
}

#[test]
fn jumps_are_upstreams() {
    let jumps = jump_rules();
    assert_eq!(jumps.len(), 9);
    assert_eq!(
        jumps[8].args().join(" "),
        "-m comment --comment kubernetes ipvs access filter -j US-IPVS-OUT-FILTER"
    );
}
