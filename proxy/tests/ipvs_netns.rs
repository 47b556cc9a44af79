//! The IPVS mode's ipsets, iptables rules and dummy interface through the
//! real tools, each test in a network namespace of its own, made and deleted
//! here (the host's netfilter is never written, and the tests check it did
//! not change). IPVS itself is not here: this machine's kernel has none
//! (CONFIG_IP_VS is not set), which `ipvs::netlink`'s tests check.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::{Value, json};
use understudy_proxy::exec::SystemExec;
use understudy_proxy::iptables::LocalDetector;
use understudy_proxy::ipvs::cleanup::cleanup;
use understudy_proxy::ipvs::desired::{DUMMY_INTERFACE, DesiredOptions, desired_state};
use understudy_proxy::ipvs::host::ToolHost;
use understudy_proxy::ipvs::ipsets::{SetEntries, restore_text, set_changes};
use understudy_proxy::ipvs::reconcile::Host;
use understudy_proxy::ipvs::rules::{RuleOptions, render};
use understudy_proxy::tracker::{IpFamily, SERVICE_NAME_LABEL, Tracker};

mod common;
use common::{Netns, host_output, host_rules};

impl Netns {
    fn new(tag: &str) -> Self {
        Netns::add("us-ipvs", tag)
    }
}

/// The host's rules, sets and IPVS dummy interfaces: what the IPVS mode
/// writes. (Only those links: a lab shutting down beside the test may
/// remove its own link from the host meanwhile.)
fn host_state() -> String {
    let dummies: Vec<String> = host_output("ip", &["-o", "link", "show"])
        .lines()
        .filter(|l| l.contains(DUMMY_INTERFACE) || l.contains("kube-ipvs0"))
        .map(String::from)
        .collect();
    format!(
        "{}\n{}\n{}",
        host_rules(),
        host_output("ipset", &["list", "-n"]),
        dummies.join("\n")
    )
}

fn tracker(services: &[Value], slices: &[Value]) -> Tracker {
    let mut tracker = Tracker::new(IpFamily::V4, "node1");
    for s in services {
        tracker.apply_service(&serde_json::from_value(s.clone()).unwrap());
    }
    for s in slices {
        tracker.apply_endpoint_slice(&serde_json::from_value(s.clone()).unwrap());
    }
    tracker
}

fn lab() -> Tracker {
    tracker(
        &[
            json!({"metadata": {"namespace": "ns", "name": "web"},
                   "spec": {"type": "NodePort", "clusterIP": "172.30.0.41", "clusterIPs": ["172.30.0.41"],
                            "externalIPs": ["192.168.99.1"], "externalTrafficPolicy": "Local",
                            "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 30080}]}}),
            json!({"metadata": {"namespace": "ns", "name": "dns"},
                   "spec": {"type": "LoadBalancer", "clusterIP": "172.30.0.10", "clusterIPs": ["172.30.0.10"],
                            "loadBalancerSourceRanges": ["192.168.0.0/24", "198.51.100.7/24", "203.0.113.1/32"],
                            "ports": [{"name": "p80", "port": 53, "protocol": "UDP", "nodePort": 30053}]},
                   "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}]}}}),
        ],
        &[json!({
            "metadata": {"namespace": "ns", "name": "web-x", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "p80", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.180.0.1"], "nodeName": "node1"}]
        })],
    )
}

fn options() -> DesiredOptions {
    DesiredOptions {
        family: IpFamily::V4,
        scheduler: String::new(),
        node_port_ips: vec!["192.168.0.2".parse().unwrap()],
        node_ip: Some("192.168.0.2".parse().unwrap()),
        local_addresses: BTreeSet::from(["192.168.0.2".parse().unwrap()]),
    }
}

#[test]
fn sets_and_rules_go_through_ipset_and_iptables_restore() {
    let before = host_state();
    let netns = Netns::new("sets");
    let mut host = ToolHost::new(SystemExec::in_netns(&netns.0));
    let desired = desired_state(&lab(), &options());
    assert!(
        desired.no_node_access.is_empty(),
        "no -m ipvs here: no xt_ipvs"
    );

    let current = host.set_entries(IpFamily::V4).unwrap();
    assert_eq!(current, SetEntries::new());
    let changes = set_changes(&desired.sets, &current);
    host.restore_sets(&restore_text(IpFamily::V4, &changes))
        .unwrap();
    assert_eq!(host.set_entries(IpFamily::V4).unwrap(), desired.sets);
    let listed = netns.run(&["ipset", "list", "-n"]);
    assert_eq!(listed.lines().count(), 17, "every set exists: {listed}");

    let rule_options = RuleOptions {
        family: IpFamily::V4,
        masquerade_mark: 1 << 14,
        masquerade_all: false,
        local_detector: LocalDetector::Cidr("10.0.0.0/8".parse().unwrap()),
    };
    host.restore_rules(IpFamily::V4, &render(&desired, &rule_options))
        .unwrap();
    let nat = netns.run(&["iptables-save", "-t", "nat"]);
    assert!(
        // iptables-save puts the source match first.
        nat.contains("-A US-SERVICES ! -s 10.0.0.0/8 -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set US-CLUSTER-IP dst,dst -j US-MARK-MASQ"),
        "{nat}"
    );
    assert!(
        nat.contains("--match-set US-NODE-PORT-LOCAL-TCP dst -j RETURN"),
        "{nat}"
    );
    let filter = netns.run(&["iptables-save", "-t", "filter"]);
    assert!(
        filter.contains("--match-set US-LOAD-BALANCER-SOURCE-IP dst,dst,src -j RETURN"),
        "{filter}"
    );

    // A Service goes: its entries go, a second restore converges.
    let smaller = desired_state(&tracker(&[], &[]), &options());
    let changes = set_changes(&smaller.sets, &host.set_entries(IpFamily::V4).unwrap());
    host.restore_sets(&restore_text(IpFamily::V4, &changes))
        .unwrap();
    assert_eq!(host.set_entries(IpFamily::V4).unwrap(), smaller.sets);
    host.restore_rules(IpFamily::V4, &render(&smaller, &rule_options))
        .unwrap();
    let nat = netns.run(&["iptables-save", "-t", "nat"]);
    assert!(!nat.contains("US-CLUSTER-IP"), "{nat}");

    // Cleanup leaves nothing of ours.
    let errors = cleanup(None, &mut host, IpFamily::V4);
    assert!(errors.is_empty(), "{errors:?}");
    let saved = netns.run(&["iptables-save"]);
    assert!(!saved.contains("US-"), "{saved}");
    assert_eq!(netns.run(&["ipset", "list", "-n"]), "");

    drop(netns);
    assert_eq!(host_state(), before, "the host was not touched");
}

#[test]
fn local_addresses_leave_out_loopback() {
    let netns = Netns::new("local");
    netns.run(&["ip", "link", "set", "lo", "up"]);
    netns.run(&["ip", "addr", "add", "10.9.0.1/32", "dev", "lo"]);
    let mut host = ToolHost::new(SystemExec::in_netns(&netns.0));
    assert_eq!(
        host.local_addresses(IpFamily::V4).unwrap(),
        BTreeSet::from(["10.9.0.1".parse().unwrap()])
    );
    assert_eq!(host.local_addresses(IpFamily::V6).unwrap(), BTreeSet::new());
}

#[test]
fn the_dummy_interface_holds_service_addresses_or_its_absence_is_named() {
    let netns = Netns::new("dummy");
    let mut host = ToolHost::new(SystemExec::in_netns(&netns.0));
    let kernel_has_dummy = {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &netns.0, "ip", "link", "add", "us-probe", "type", "dummy",
            ])
            .output()
            .unwrap();
        out.status.success()
    };
    match host.dummy_addresses(IpFamily::V4) {
        Ok(addresses) => {
            assert!(kernel_has_dummy);
            assert!(addresses.is_empty());
            let ip = "172.30.0.41".parse().unwrap();
            host.add_address(ip).unwrap();
            host.add_address(ip).unwrap();
            assert_eq!(
                host.dummy_addresses(IpFamily::V4).unwrap(),
                BTreeSet::from([ip])
            );
            host.remove_address(ip).unwrap();
            host.remove_address(ip).unwrap();
            assert!(host.dummy_addresses(IpFamily::V4).unwrap().is_empty());
            assert!(
                netns
                    .run(&["ip", "-o", "link", "show"])
                    .contains(DUMMY_INTERFACE)
            );
        }
        Err(error) => {
            assert!(!kernel_has_dummy, "{error}");
            assert!(error.to_string().contains("CONFIG_DUMMY"), "{error}");
        }
    }
}

#[test]
fn cleanup_unlinks_the_ipvs_chains_before_deleting_every_chain_of_ours() {
    use understudy_proxy::proxier::{self, Iptables};
    let before = host_state();
    let netns = Netns::new("unlink");
    let exec = SystemExec::in_netns(&netns.0);
    let mut host = ToolHost::new(exec.clone());
    let desired = desired_state(&lab(), &options());
    let changes = set_changes(&desired.sets, &SetEntries::new());
    host.restore_sets(&restore_text(IpFamily::V4, &changes))
        .unwrap();
    // The IPVS backend's sync: chains and jumps, then the rules.
    let iptables = Iptables::v4(exec.clone());
    for rule in understudy_proxy::ipvs::rules::jump_rules() {
        iptables.ensure_chain(rule.table, rule.to).unwrap();
        iptables.ensure_jump(&rule).unwrap();
    }
    let rule_options = RuleOptions {
        family: IpFamily::V4,
        masquerade_mark: 1 << 14,
        masquerade_all: false,
        local_detector: LocalDetector::None,
    };
    host.restore_rules(IpFamily::V4, &render(&desired, &rule_options))
        .unwrap();
    let saved = netns.run(&["iptables-save"]);
    assert!(
        saved.contains(
            "-A INPUT -m comment --comment \"kubernetes ipvs access filter\" -j US-IPVS-FILTER"
        ),
        "{saved}"
    );

    // The jumps would keep `-X` from deleting the chains they point to.
    // No IPVS here (and a netlink socket opened by this thread would be
    // the host's): the IPVS step is covered with fakes.
    let removed = proxier::cleanup(exec, None).unwrap();
    assert!(
        removed.contains(&"filter/US-IPVS-FILTER".to_string()),
        "{removed:?}"
    );
    let saved = netns.run(&["iptables-save"]);
    assert!(!saved.contains("US-"), "cleanup left:\n{saved}");

    drop(netns);
    assert_eq!(host_state(), before, "the host was not touched");
}
