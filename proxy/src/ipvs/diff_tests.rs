//! Table tests of the diff: one per feature, and idempotence (the state
//! after applying a diff diffs to nothing).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use serde_json::json;

use super::*;
use crate::ipvs::desired::tests::{ep, eps, options, svc, tracker, with_lb};
use crate::ipvs::desired::{DesiredService, desired_state};
use crate::ipvs::model::FLAG_PERSISTENT;
use crate::tracker::Protocol;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn key(address: &str, port: u16, protocol: Protocol) -> ServiceKey {
    ServiceKey {
        address: ip(address),
        port,
        protocol,
    }
}

fn server(key: ServiceKey) -> VirtualServer {
    VirtualServer {
        key,
        scheduler: "rr".into(),
        flags: 0,
        timeout: 0,
    }
}

fn rs(address: &str, weight: u32) -> RealServer {
    RealServer {
        address: sa(address),
        weight,
    }
}

fn state(address: &str, weight: u32, active: u32, inactive: u32) -> RealServerState {
    RealServerState {
        address: sa(address),
        weight,
        active_connections: active,
        inactive_connections: inactive,
    }
}

fn opts() -> DiffOptions {
    DiffOptions {
        family: IpFamily::V4,
        exclude_cidrs: vec![],
    }
}

/// One virtual server with these real servers, wanted.
fn desired_one(key: ServiceKey, real_servers: Vec<RealServer>) -> Desired {
    let mut d = Desired::default();
    d.services.insert(
        key,
        DesiredService {
            server: server(key),
            real_servers,
        },
    );
    d
}

fn current_one(key: ServiceKey, real_servers: Vec<RealServerState>) -> Current {
    let mut c = Current::default();
    c.services.insert(
        key,
        CurrentService {
            server: server(key),
            real_servers,
        },
    );
    c
}

fn converge(desired: &Desired, current: &mut Current) -> Vec<Operation> {
    let ops = diff(desired, current, &opts());
    for op in &ops {
        current.apply(op);
    }
    ops
}

#[test]
fn a_new_service_is_added_with_its_address_real_servers_and_sets_in_order() {
    let k = key("172.30.0.41", 80, Protocol::Tcp);
    let mut d = desired_one(k, vec![rs("10.180.0.1:8080", 1)]);
    d.dummy_addresses.insert(ip("172.30.0.41"));
    d.sets.insert(
        Set::ClusterIp,
        BTreeSet::from(["172.30.0.41,tcp:80".to_string()]),
    );
    assert_eq!(
        diff(&d, &Current::default(), &opts()),
        [
            Operation::AddAddress(ip("172.30.0.41")),
            Operation::AddService(server(k)),
            Operation::AddRealServer(k, rs("10.180.0.1:8080", 1)),
            Operation::SetAdd(Set::ClusterIp, "172.30.0.41,tcp:80".into()),
        ]
    );
}

#[test]
fn changed_settings_update_the_service_in_place() {
    let k = key("172.30.0.41", 80, Protocol::Tcp);
    let mut d = desired_one(k, vec![]);
    let wanted = d.services.get_mut(&k).unwrap();
    wanted.server.flags = FLAG_PERSISTENT;
    wanted.server.timeout = 10800;
    let expected = wanted.server.clone();
    assert_eq!(
        diff(&d, &current_one(k, vec![]), &opts()),
        [Operation::UpdateService(expected.clone())]
    );
    let mut scheduler = d.clone();
    scheduler.services.get_mut(&k).unwrap().server.scheduler = "lc".into();
    assert!(matches!(
        diff(&scheduler, &current_one(k, vec![]), &opts())[..],
        [Operation::UpdateService(ref s)] if s.scheduler == "lc"
    ));
}

#[test]
fn real_servers_are_added_and_their_weights_restored() {
    let k = key("172.30.0.41", 80, Protocol::Tcp);
    let d = desired_one(k, vec![rs("10.180.0.1:8080", 1), rs("10.180.0.2:8080", 1)]);
    let c = current_one(k, vec![state("10.180.0.1:8080", 0, 3, 0)]);
    assert_eq!(
        diff(&d, &c, &opts()),
        [
            Operation::UpdateRealServer(k, rs("10.180.0.1:8080", 1)),
            Operation::AddRealServer(k, rs("10.180.0.2:8080", 1)),
        ],
        "a draining one that is wanted again gets its weight back"
    );
}

#[test]
fn a_tcp_real_server_with_connections_drains_before_it_is_deleted() {
    let k = key("172.30.0.41", 80, Protocol::Tcp);
    let d = desired_one(k, vec![]);
    assert_eq!(
        diff(
            &d,
            &current_one(k, vec![state("10.180.0.1:8080", 1, 2, 5)]),
            &opts()
        ),
        [Operation::UpdateRealServer(k, rs("10.180.0.1:8080", 0))]
    );
    assert_eq!(
        diff(
            &d,
            &current_one(k, vec![state("10.180.0.1:8080", 0, 0, 1)]),
            &opts()
        ),
        [],
        "weight 0 already, inactive connections left: wait"
    );
    assert_eq!(
        diff(
            &d,
            &current_one(k, vec![state("10.180.0.1:8080", 0, 0, 0)]),
            &opts()
        ),
        [Operation::DeleteRealServer(k, sa("10.180.0.1:8080"))]
    );
    assert_eq!(
        diff(
            &d,
            &current_one(k, vec![state("10.180.0.1:8080", 1, 0, 0)]),
            &opts()
        ),
        [Operation::DeleteRealServer(k, sa("10.180.0.1:8080"))],
        "no connections: deleted at once"
    );
}

#[test]
fn udp_and_sctp_real_servers_are_deleted_at_once() {
    for protocol in [Protocol::Udp, Protocol::Sctp] {
        let k = key("172.30.0.41", 53, protocol);
        let c = current_one(k, vec![state("10.180.0.1:53", 1, 4, 4)]);
        assert_eq!(
            diff(&desired_one(k, vec![]), &c, &opts()),
            [Operation::DeleteRealServer(k, sa("10.180.0.1:53"))]
        );
    }
}

#[test]
fn stale_services_and_addresses_go_unless_excluded_or_of_the_other_family() {
    let stale = key("172.30.0.99", 80, Protocol::Tcp);
    let excluded = key("10.96.0.1", 443, Protocol::Tcp);
    let v6 = key("fd00::1", 80, Protocol::Tcp);
    let mut c = Current::default();
    for k in [stale, excluded, v6] {
        c.services.insert(
            k,
            CurrentService {
                server: server(k),
                real_servers: vec![],
            },
        );
    }
    c.dummy_addresses = BTreeSet::from([ip("172.30.0.99"), ip("fd00::1")]);
    c.sets.insert(
        Set::ClusterIp,
        BTreeSet::from(["172.30.0.99,tcp:80".to_string()]),
    );
    let options = DiffOptions {
        family: IpFamily::V4,
        exclude_cidrs: vec!["10.96.0.0/16".parse().unwrap()],
    };
    assert_eq!(
        diff(&Desired::default(), &c, &options),
        [
            Operation::SetDel(Set::ClusterIp, "172.30.0.99,tcp:80".into()),
            Operation::DeleteService(stale),
            Operation::RemoveAddress(ip("172.30.0.99")),
        ]
    );
}

#[test]
fn applying_a_diff_leaves_nothing_to_do() {
    let lb = with_lb(
        svc(
            "lb",
            json!({"type": "LoadBalancer", "clusterIP": "172.30.0.41",
                   "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 30080}],
                   "externalIPs": ["192.168.99.1"], "sessionAffinity": "ClientIP",
                   "loadBalancerSourceRanges": ["198.51.100.0/24"], "externalTrafficPolicy": "Local",
                   "healthCheckNodePort": 31000}),
        ),
        json!([{"ip": "203.0.113.9"}]),
    );
    let dns = svc(
        "dns",
        json!({"clusterIP": "172.30.0.10", "ports": [{"name": "p80", "port": 53, "protocol": "UDP"}]}),
    );
    let t = tracker(
        &[lb, dns],
        &[
            eps(
                "lb",
                "TCP",
                json!([ep("10.180.0.1", "node2"), ep("10.180.0.2", "node1")]),
            ),
            eps("dns", "UDP", json!([ep("10.180.0.3", "node2")])),
        ],
    );
    let desired = desired_state(&t, &options());
    let mut current = Current::default();
    let first = converge(&desired, &mut current);
    assert!(first.len() > 10, "{first:?}");
    assert_eq!(diff(&desired, &current, &opts()), []);

    // The endpoints go: UDP real servers at once; TCP ones (with traffic)
    // drain, then go once their connections end.
    let t = tracker(
        &[
            svc(
                "dns",
                json!({"clusterIP": "172.30.0.10", "ports": [{"name": "p80", "port": 53, "protocol": "UDP"}]}),
            ),
            with_lb(
                svc(
                    "lb",
                    json!({"type": "LoadBalancer", "clusterIP": "172.30.0.41",
                           "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 30080}],
                           "externalIPs": ["192.168.99.1"], "sessionAffinity": "ClientIP",
                           "loadBalancerSourceRanges": ["198.51.100.0/24"], "externalTrafficPolicy": "Local",
                           "healthCheckNodePort": 31000}),
                ),
                json!([{"ip": "203.0.113.9"}]),
            ),
        ],
        &[],
    );
    let emptied = desired_state(&t, &options());
    for service in current.services.values_mut() {
        for rs in &mut service.real_servers {
            rs.active_connections = 1;
        }
    }
    let second = converge(&emptied, &mut current);
    assert!(second.contains(&Operation::DeleteRealServer(
        key("172.30.0.10", 53, Protocol::Udp),
        sa("10.180.0.3:8080")
    )));
    assert!(second.contains(&Operation::UpdateRealServer(
        key("172.30.0.41", 80, Protocol::Tcp),
        rs("10.180.0.1:8080", 0)
    )));
    assert_eq!(
        diff(&emptied, &current, &opts()),
        [],
        "draining: nothing to do"
    );
    for service in current.services.values_mut() {
        for rs in &mut service.real_servers {
            rs.active_connections = 0;
        }
    }
    let third = converge(&emptied, &mut current);
    assert!(
        third
            .iter()
            .all(|op| matches!(op, Operation::DeleteRealServer(..))),
        "{third:?}"
    );
    assert!(current.services.values().all(|s| s.real_servers.is_empty()));
    assert_eq!(diff(&emptied, &current, &opts()), []);

    // Every Service goes: nothing of ours is left.
    let gone = desired_state(&tracker(&[], &[]), &options());
    converge(&gone, &mut current);
    assert_eq!(current, Current::default());
}
