//! The reconcile loop against the fakes: convergence, idempotence, graceful
//! removal over several syncs, failures that do not stop a sync.

use std::net::{IpAddr, SocketAddr};

use serde_json::{Value, json};

use super::fake::{FakeHost, FakeIpvs};
use super::*;
use crate::iptables::LocalDetector;
use crate::ipvs::desired::desired_state;
use crate::ipvs::desired::tests::{ep, eps, options, svc, tracker};
use crate::ipvs::ipsets::Set;
use crate::tracker::Protocol;

fn diff_options() -> DiffOptions {
    DiffOptions {
        family: IpFamily::V4,
        exclude_cidrs: vec![],
    }
}

fn rule_options() -> RuleOptions {
    RuleOptions {
        family: IpFamily::V4,
        masquerade_mark: 1 << 14,
        masquerade_all: false,
        local_detector: LocalDetector::None,
    }
}

fn web(endpoints: Value) -> Desired {
    let t = tracker(
        &[svc(
            "web",
            json!({"clusterIP": "172.30.0.41", "ports": [{"name": "p80", "port": 80, "protocol": "TCP"}]}),
        )],
        &[eps("web", "TCP", endpoints)],
    );
    desired_state(&t, &options())
}

fn run(ipvs: &mut FakeIpvs, host: &mut FakeHost, desired: &Desired) -> SyncReport {
    let report = sync(ipvs, host, desired, &diff_options(), &rule_options()).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    report
}

fn key() -> ServiceKey {
    ServiceKey {
        address: "172.30.0.41".parse().unwrap(),
        port: 80,
        protocol: Protocol::Tcp,
    }
}

/// `address:weight` of the web service's real servers in the fake kernel.
fn real_servers(ipvs: &FakeIpvs) -> Vec<String> {
    ipvs.state.services[&key()]
        .real_servers
        .iter()
        .map(|rs| format!("{}:{}", rs.address, rs.weight))
        .collect()
}

#[test]
fn a_sync_converges_and_a_second_changes_nothing() {
    let (mut ipvs, mut host) = (FakeIpvs::default(), FakeHost::default());
    let desired = web(json!([
        ep("10.180.0.1", "node2"),
        ep("10.180.0.2", "node1")
    ]));
    let first = run(&mut ipvs, &mut host, &desired);
    assert!(!first.applied.is_empty());
    assert_eq!(
        real_servers(&ipvs),
        ["10.180.0.1:8080:1", "10.180.0.2:8080:1"]
    );
    let ip: IpAddr = "172.30.0.41".parse().unwrap();
    assert!(host.addresses.contains(&ip));
    assert!(host.sets[&Set::ClusterIp].contains("172.30.0.41,tcp:80"));
    assert!(host.sets[&Set::IpvsIps].contains("172.30.0.41"));
    assert!(host.rule_restores[0].contains("--match-set US-CLUSTER-IP src,dst -j US-MARK-MASQ"));
    assert_eq!(host.set_restores.len(), 1);

    let second = run(&mut ipvs, &mut host, &desired);
    assert_eq!(second.applied, [], "nothing left to do");
    assert_eq!(
        host.rule_restores.len(),
        2,
        "rules are rewritten on every sync"
    );
}

#[test]
fn a_removed_tcp_endpoint_drains_over_several_syncs() {
    let (mut ipvs, mut host) = (FakeIpvs::default(), FakeHost::default());
    run(
        &mut ipvs,
        &mut host,
        &web(json!([
            ep("10.180.0.1", "node2"),
            ep("10.180.0.2", "node2")
        ])),
    );
    ipvs.set_connections(2, 1);
    let one_left = web(json!([ep("10.180.0.1", "node2")]));

    let drain = run(&mut ipvs, &mut host, &one_left);
    let gone: SocketAddr = "10.180.0.2:8080".parse().unwrap();
    assert_eq!(
        drain.applied,
        [Operation::UpdateRealServer(
            key(),
            crate::ipvs::RealServer {
                address: gone,
                weight: 0
            }
        )]
    );
    assert_eq!(
        real_servers(&ipvs),
        ["10.180.0.1:8080:1", "10.180.0.2:8080:0"]
    );

    // Connections still open: it waits, sync after sync.
    ipvs.set_connections(0, 1);
    assert_eq!(run(&mut ipvs, &mut host, &one_left).applied, []);
    assert_eq!(run(&mut ipvs, &mut host, &one_left).applied, []);

    ipvs.set_connections(0, 0);
    let delete = run(&mut ipvs, &mut host, &one_left);
    assert_eq!(delete.applied, [Operation::DeleteRealServer(key(), gone)]);
    assert_eq!(real_servers(&ipvs), ["10.180.0.1:8080:1"]);
    assert_eq!(run(&mut ipvs, &mut host, &one_left).applied, []);
}

#[test]
fn an_endpoint_back_while_draining_gets_its_weight_back() {
    let (mut ipvs, mut host) = (FakeIpvs::default(), FakeHost::default());
    let both = web(json!([
        ep("10.180.0.1", "node2"),
        ep("10.180.0.2", "node2")
    ]));
    run(&mut ipvs, &mut host, &both);
    ipvs.set_connections(1, 0);
    run(
        &mut ipvs,
        &mut host,
        &web(json!([ep("10.180.0.1", "node2")])),
    );
    assert_eq!(
        real_servers(&ipvs),
        ["10.180.0.1:8080:1", "10.180.0.2:8080:0"]
    );
    run(&mut ipvs, &mut host, &both);
    assert_eq!(
        real_servers(&ipvs),
        ["10.180.0.1:8080:1", "10.180.0.2:8080:1"]
    );
}

#[test]
fn a_service_that_goes_leaves_nothing_behind() {
    let (mut ipvs, mut host) = (FakeIpvs::default(), FakeHost::default());
    run(
        &mut ipvs,
        &mut host,
        &web(json!([ep("10.180.0.1", "node2")])),
    );
    let empty = desired_state(&tracker(&[], &[]), &options());
    let report = run(&mut ipvs, &mut host, &empty);
    assert!(report.applied.contains(&Operation::DeleteService(key())));
    assert!(ipvs.state.services.is_empty());
    assert!(host.addresses.is_empty());
    assert!(host.sets.is_empty());
}

#[test]
fn a_failed_operation_is_reported_and_retried_on_the_next_sync() {
    let (mut ipvs, mut host) = (FakeIpvs::default(), FakeHost::default());
    ipvs.failing = vec!["10.180.0.2".into()];
    let desired = web(json!([
        ep("10.180.0.1", "node2"),
        ep("10.180.0.2", "node2")
    ]));
    let report = sync(
        &mut ipvs,
        &mut host,
        &desired,
        &diff_options(),
        &rule_options(),
    )
    .unwrap();
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert!(report.failed[0].1.contains("refused"));
    assert_eq!(
        real_servers(&ipvs),
        ["10.180.0.1:8080:1"],
        "the rest went on"
    );
    assert_eq!(host.rule_restores.len(), 1);

    ipvs.failing.clear();
    let retry = run(&mut ipvs, &mut host, &desired);
    assert_eq!(retry.applied.len(), 1);
    assert_eq!(
        real_servers(&ipvs),
        ["10.180.0.1:8080:1", "10.180.0.2:8080:1"]
    );
}
