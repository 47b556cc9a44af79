use std::cell::RefCell;
use std::net::SocketAddr;

use serde_json::{Value, json};

use super::*;
use crate::config::ProxyMode;
use crate::tracker::{IpFamily, Tracker};

const CLUSTER_IP: &str = "172.30.1.1";
const EXTERNAL_IP: &str = "192.168.99.100";
const LOAD_BALANCER_IP: &str = "1.2.3.4";
const SERVING: &str = "10.240.0.4";
const NOT_SERVING: &str = "10.240.1.5";
const DELETED: &str = "10.240.2.6";
const SERVICE_PORT: u16 = 8000;
const NODE_PORT: u16 = 32000;
const ENDPOINT_PORT: u16 = 9090;
/// The endpoint's port before it changed (same IP, new port).
const OLD_ENDPOINT_PORT: u16 = 8080;
/// A port of no Service: flows to it are not kube-proxy's.
const OTHER_PORT: u16 = 3000;
const CLIENT: &str = "10.0.0.99:40000";

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

fn flow(protocol: u8, orig_dst: SocketAddr, reply_src: SocketAddr) -> Flow {
    let client: SocketAddr = CLIENT.parse().unwrap();
    Flow {
        protocol,
        original: FlowTuple {
            source: client,
            destination: orig_dst,
        },
        reply: FlowTuple {
            source: reply_src,
            destination: client,
        },
        id: None,
        zone: None,
    }
}

fn apply_service(tracker: &mut Tracker, name: &str, spec: Value) {
    let svc = serde_json::from_value(json!({
        "metadata": {"namespace": "test", "name": name},
        "spec": spec,
        "status": {"loadBalancer": {"ingress": [{"ip": LOAD_BALANCER_IP}]}}
    }))
    .unwrap();
    tracker.apply_service(&svc);
}

fn apply_slice(tracker: &mut Tracker, service: &str, endpoints: Value) {
    let ports = ["TCP", "UDP", "SCTP"]
        .map(|p| json!({"name": p.to_lowercase(), "port": ENDPOINT_PORT, "protocol": p}));
    let slice = serde_json::from_value(json!({
        "metadata": {"namespace": "test", "name": format!("{service}-0"),
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
    .unwrap();
    tracker.apply_endpoint_slice(&slice);
}

/// Upstream's test fixture: one Service with a TCP, a UDP and an SCTP port
/// (the UDP one with a NodePort), an external IP and a load-balancer IP; one
/// serving and one non-serving endpoint.
fn upstream_fixture() -> Tracker {
    let mut tracker = Tracker::new(IpFamily::V4, "node");
    apply_service(
        &mut tracker,
        "cleanup-test",
        json!({
            "type": "LoadBalancer",
            "clusterIP": CLUSTER_IP,
            "externalIPs": [EXTERNAL_IP],
            "ports": [
                {"name": "tcp", "port": SERVICE_PORT, "protocol": "TCP"},
                {"name": "udp", "port": SERVICE_PORT, "nodePort": NODE_PORT, "protocol": "UDP"},
                {"name": "sctp", "port": SERVICE_PORT, "nodePort": NODE_PORT, "protocol": "SCTP"},
            ]
        }),
    );
    apply_slice(
        &mut tracker,
        "cleanup-test",
        json!([
            {"addresses": [SERVING], "conditions": {"serving": true}},
            {"addresses": [NOT_SERVING], "conditions": {"serving": false}},
        ]),
    );
    tracker
}

#[test]
fn stale_flows_as_upstream_decides_them() {
    let tracker = upstream_fixture();
    let mut flows = Vec::new();
    let mut expected_stale = Vec::new();

    // The endpoint changed its port but not its IP: flows to the old port go.
    for frontend in [CLUSTER_IP, LOAD_BALANCER_IP, EXTERNAL_IP] {
        flows.push(flow(
            IPPROTO_UDP,
            addr(frontend, SERVICE_PORT),
            addr(SERVING, OLD_ENDPOINT_PORT),
        ));
        expected_stale.push(flows.len() - 1);
    }
    // Every endpoint × protocol × frontend × (service port, another port):
    // only UDP flows to the service port not answered by the serving
    // endpoint go.
    for dnat in [SERVING, NOT_SERVING, DELETED] {
        for protocol in [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP] {
            for frontend in [CLUSTER_IP, LOAD_BALANCER_IP, EXTERNAL_IP] {
                for port in [SERVICE_PORT, OTHER_PORT] {
                    flows.push(flow(
                        protocol,
                        addr(frontend, port),
                        addr(dnat, ENDPOINT_PORT),
                    ));
                    if protocol == IPPROTO_UDP && port == SERVICE_PORT && dnat != SERVING {
                        expected_stale.push(flows.len() - 1);
                    }
                }
            }
            // The NodePort, on some node address.
            flows.push(flow(
                protocol,
                addr("192.168.50.1", NODE_PORT),
                addr(dnat, ENDPOINT_PORT),
            ));
            if protocol == IPPROTO_UDP && dnat != SERVING {
                expected_stale.push(flows.len() - 1);
            }
        }
    }

    let stale = stale_flows(&tracker, &flows);
    let expected: Vec<&Flow> = expected_stale.iter().map(|i| &flows[*i]).collect();
    assert_eq!(stale, expected);
    assert_eq!(stale.len(), 3 + 2 * 3 + 2);
}

#[test]
fn removed_endpoint_loses_its_flows_others_stay() {
    let mut tracker = Tracker::new(IpFamily::V4, "node");
    apply_service(
        &mut tracker,
        "dns",
        json!({"clusterIP": CLUSTER_IP, "ports": [{"name": "udp", "port": 53, "protocol": "UDP"}]}),
    );
    let both = json!([{"addresses": ["10.0.1.1"]}, {"addresses": ["10.0.1.2"]}]);
    apply_slice(&mut tracker, "dns", both);
    let to_first = flow(
        IPPROTO_UDP,
        addr(CLUSTER_IP, 53),
        addr("10.0.1.1", ENDPOINT_PORT),
    );
    let to_second = flow(
        IPPROTO_UDP,
        addr(CLUSTER_IP, 53),
        addr("10.0.1.2", ENDPOINT_PORT),
    );
    let flows = [to_first.clone(), to_second.clone()];
    assert!(stale_flows(&tracker, &flows).is_empty());

    apply_slice(&mut tracker, "dns", json!([{"addresses": ["10.0.1.2"]}]));
    assert_eq!(stale_flows(&tracker, &flows), [&to_first]);

    // Terminating but still serving: its flows stay, as a TCP connection would.
    apply_slice(
        &mut tracker,
        "dns",
        json!([{"addresses": ["10.0.1.2"], "conditions": {"ready": false, "serving": true, "terminating": true}}]),
    );
    assert_eq!(stale_flows(&tracker, &flows), [&to_first]);
}

#[test]
fn first_endpoint_clears_flows_that_hit_the_reject_rule() {
    let mut tracker = Tracker::new(IpFamily::V4, "node");
    apply_service(
        &mut tracker,
        "dns",
        json!({"type": "NodePort", "clusterIP": CLUSTER_IP,
               "ports": [{"name": "udp", "port": 53, "nodePort": NODE_PORT, "protocol": "UDP"}]}),
    );
    // Without endpoints the REJECT rule answered: no DNAT, the reply comes
    // from the frontend itself.
    let rejected = flow(IPPROTO_UDP, addr(CLUSTER_IP, 53), addr(CLUSTER_IP, 53));
    let on_node_port = flow(
        IPPROTO_UDP,
        addr("192.168.50.1", NODE_PORT),
        addr("192.168.50.1", NODE_PORT),
    );
    let flows = [rejected.clone(), on_node_port.clone()];
    // No endpoints: the ClusterIP flow goes; the NodePort is matched by
    // port alone, so upstream leaves it until there are endpoints.
    assert_eq!(stale_flows(&tracker, &flows), [&rejected]);

    apply_slice(&mut tracker, "dns", json!([{"addresses": ["10.0.1.1"]}]));
    assert_eq!(stale_flows(&tracker, &flows), [&rejected, &on_node_port]);
}

#[test]
fn unrelated_flows_stay() {
    let tracker = upstream_fixture();
    let flows = [
        // Another IP on the service port.
        flow(
            IPPROTO_UDP,
            addr("10.9.9.9", SERVICE_PORT),
            addr("10.9.9.9", SERVICE_PORT),
        ),
        // The TCP port of the Service with a deleted endpoint: TCP is not cleaned.
        flow(
            IPPROTO_TCP,
            addr(CLUSTER_IP, SERVICE_PORT),
            addr(DELETED, ENDPOINT_PORT),
        ),
        // ICMP to the ClusterIP (no ports).
        flow(1, addr(CLUSTER_IP, 0), addr(CLUSTER_IP, 0)),
    ];
    assert!(stale_flows(&tracker, &flows).is_empty());
    // A tracker without Services deletes nothing.
    let empty = Tracker::new(IpFamily::V4, "node");
    assert!(
        stale_flows(
            &empty,
            &[flow(IPPROTO_UDP, addr(CLUSTER_IP, 53), addr(DELETED, 53))]
        )
        .is_empty()
    );
}

#[derive(Debug, thiserror::Error)]
#[error("fake: {0}")]
struct FakeError(&'static str);

/// A conntrack table in memory; deletes remove matching entries.
#[derive(Default)]
struct FakeConntrack {
    flows: RefCell<Vec<Flow>>,
    fail_list: bool,
    /// Fails after deleting this many.
    fail_delete_after: Option<usize>,
    interrupted: bool,
    families: RefCell<Vec<IpFamily>>,
}

impl Conntrack for FakeConntrack {
    type Error = FakeError;

    fn list(&self, family: IpFamily) -> Result<Listing, FakeError> {
        self.families.borrow_mut().push(family);
        if self.fail_list {
            return Err(FakeError("list"));
        }
        Ok(Listing {
            flows: self.flows.borrow().clone(),
            interrupted: self.interrupted,
        })
    }

    fn delete(&self, family: IpFamily, flows: &[&Flow]) -> Result<usize, (usize, FakeError)> {
        self.families.borrow_mut().push(family);
        let mut deleted = 0;
        for flow in flows {
            if self.fail_delete_after == Some(deleted) {
                return Err((deleted, FakeError("delete")));
            }
            let mut table = self.flows.borrow_mut();
            if let Some(i) = table.iter().position(|f| f == *flow) {
                table.remove(i);
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

fn fake_with_flows() -> (FakeConntrack, Flow, Flow) {
    let keep = flow(
        IPPROTO_UDP,
        addr(CLUSTER_IP, SERVICE_PORT),
        addr(SERVING, ENDPOINT_PORT),
    );
    let stale = flow(
        IPPROTO_UDP,
        addr(CLUSTER_IP, SERVICE_PORT),
        addr(DELETED, ENDPOINT_PORT),
    );
    let fake = FakeConntrack {
        flows: RefCell::new(vec![keep.clone(), stale.clone()]),
        ..Default::default()
    };
    (fake, keep, stale)
}

#[test]
fn cleanup_lists_and_deletes_the_stale_flows_of_the_family() {
    let tracker = upstream_fixture();
    let (fake, keep, _) = fake_with_flows();
    let report = clean_stale_entries(&fake, &tracker).unwrap();
    assert_eq!(report.deleted, 1);
    assert_eq!(report.error, None);
    assert_eq!(*fake.flows.borrow(), [keep]);
    assert_eq!(*fake.families.borrow(), [IpFamily::V4, IpFamily::V4]);

    // Nothing stale: nothing deleted, no delete call.
    fake.families.borrow_mut().clear();
    assert_eq!(clean_stale_entries(&fake, &tracker).unwrap().deleted, 0);
    assert_eq!(*fake.families.borrow(), [IpFamily::V4]);
}

#[test]
fn cleanup_goes_on_with_a_partial_listing() {
    let tracker = upstream_fixture();
    let (mut fake, keep, _) = fake_with_flows();
    fake.interrupted = true;
    assert_eq!(clean_stale_entries(&fake, &tracker).unwrap().deleted, 1);
    assert_eq!(*fake.flows.borrow(), [keep]);
}

#[test]
fn cleanup_failures_are_reported_with_what_was_done() {
    let tracker = upstream_fixture();
    let (mut fake, _, _) = fake_with_flows();
    fake.fail_list = true;
    let report = clean_stale_entries(&fake, &tracker);
    assert_eq!(report, Err("fake: list".to_string()));
    assert_eq!(
        fake.flows.borrow().len(),
        2,
        "nothing deleted without a listing"
    );

    let (mut fake, _, _) = fake_with_flows();
    fake.fail_delete_after = Some(0);
    let report = clean_stale_entries(&fake, &tracker).unwrap();
    assert_eq!(
        (report.deleted, report.error.as_deref()),
        (0, Some("fake: delete"))
    );
}

#[test]
fn after_sync_cleans_only_when_udp_endpoints_changed_and_counts_deletions() {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry, IpFamily::V4, ProxyMode::Iptables);
    let mut tracker = upstream_fixture();
    let (fake, keep, _) = fake_with_flows();

    // The fixture's slice is not taken yet: no cleanup asked for.
    after_sync(&fake, &mut tracker, &metrics);
    assert!(fake.families.borrow().is_empty());

    tracker.take_changes();
    after_sync(&fake, &mut tracker, &metrics);
    assert_eq!(*fake.flows.borrow(), [keep]);
    // Taken: the next sync without UDP endpoint changes does not list.
    fake.families.borrow_mut().clear();
    tracker.take_changes();
    after_sync(&fake, &mut tracker, &metrics);
    assert!(fake.families.borrow().is_empty());

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("kubeproxy_conntrack_reconciler_deleted_entries_total{ip_family=\"IPv4\"} 1"),
        "{text}"
    );
    assert!(text.contains(
        "kubeproxy_conntrack_reconciler_sync_duration_seconds_count{ip_family=\"IPv4\"} 1"
    ));
}
