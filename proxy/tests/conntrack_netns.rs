//! The conntrack cleanup against the real kernel: UDP flows made through a
//! DNAT rule in a network namespace of its own (conntrack tables are per
//! namespace), listed and deleted by our ctnetlink client from a thread that
//! entered that namespace, and checked with conntrack-tools. The host's
//! conntrack table is never touched: the thread proves it is in the test's
//! namespace before it opens a socket.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;

use prometheus_client::registry::Registry;
use serde_json::json;
use understudy_proxy::config::{KubeProxyConfiguration, ProxyMode};
use understudy_proxy::conntrack::{
    Conntrack, Flow, IPPROTO_TCP, IPPROTO_UDP, NetlinkConntrack, after_sync, clean_stale_entries,
};
use understudy_proxy::exec::SystemExec;
use understudy_proxy::metrics::Metrics;
use understudy_proxy::proxier::{Proxier, SyncOutcome};
use understudy_proxy::tracker::{IpFamily, Tracker};

mod common;
use common::Netns;

impl Netns {
    fn new(tag: &str) -> Self {
        Netns::add("us-ct", tag)
    }

    /// `conntrack -L` of one protocol (both families), one
    /// `orig-dst:port reply-src:port` line per entry, sorted.
    fn flows(&self, protocol: &str) -> Vec<String> {
        let mut flows: Vec<String> = Vec::new();
        for family in ["ipv4", "ipv6"] {
            flows.extend(self.flows_of(protocol, family));
        }
        flows.sort();
        flows
    }

    fn flows_of(&self, protocol: &str, family: &str) -> Vec<String> {
        let text = self.run(&["conntrack", "-L", "-p", protocol, "-f", family]);
        let mut flows: Vec<String> = text
            .lines()
            .map(|line| {
                let field = |key: &str, nth: usize| {
                    line.split_whitespace()
                        .filter_map(|w| w.strip_prefix(key))
                        .nth(nth)
                        .unwrap_or("?")
                        .to_string()
                };
                format!(
                    "{}:{} {}:{}",
                    field("dst=", 0),
                    field("dport=", 0),
                    field("src=", 1),
                    field("sport=", 1)
                )
            })
            .collect();
        flows.sort();
        flows
    }
}

/// Runs `f` on a thread inside `ns`, after checking the thread really is there.
fn inside<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = std::fs::File::open(ns.path()).unwrap();
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                let ours = std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino();
                assert_eq!(
                    ours,
                    file.metadata().unwrap().ino(),
                    "not in the test's namespace"
                );
                f()
            })
            .join()
            .unwrap()
    })
}

/// The addresses of one IP family's test: a Service IP routed to loopback,
/// a client, the endpoint that is removed and the one that stays.
struct Addresses {
    family: IpFamily,
    service: &'static str,
    service_route: &'static str,
    client: &'static str,
    old_endpoint: &'static str,
    new_endpoint: &'static str,
}

const V4: Addresses = Addresses {
    family: IpFamily::V4,
    service: "172.30.0.10",
    service_route: "172.30.0.0/16",
    client: "10.1.0.1",
    old_endpoint: "10.1.0.2",
    new_endpoint: "10.1.0.3",
};

const V6: Addresses = Addresses {
    family: IpFamily::V6,
    service: "fd00:30::10",
    service_route: "fd00:30::/64",
    client: "fd00:1::1",
    old_endpoint: "fd00:1::2",
    new_endpoint: "fd00:1::3",
};

impl Addresses {
    fn v6(&self) -> bool {
        self.family == IpFamily::V6
    }

    fn at(&self, ip: &str, port: u16) -> String {
        SocketAddr::new(ip.parse().unwrap(), port).to_string()
    }

    /// As conntrack-tools prints a flow in [`Netns::udp_flows`].
    fn flow(&self, orig_dst: &str, orig_port: u16, reply_src: &str, reply_port: u16) -> String {
        format!("{orig_dst}:{orig_port} {reply_src}:{reply_port}")
    }
}

/// Addresses on loopback, the service range routed there, and DNAT rules
/// sending the client's source port 40001 to the old endpoint and 40002 to
/// the new one (so which flow goes where does not depend on chance), as the
/// proxy's rules would for a Service with two endpoints; TCP to the Service
/// goes to the old endpoint.
fn prepare(ns: &Netns, a: &Addresses) {
    ns.run(&["ip", "link", "set", "lo", "up"]);
    let (host_prefix, iptables) = if a.v6() {
        ("128", "ip6tables")
    } else {
        ("32", "iptables")
    };
    for ip in [a.client, a.old_endpoint, a.new_endpoint] {
        let mut args = vec!["ip", "addr", "add"];
        let cidr = format!("{ip}/{host_prefix}");
        args.extend([cidr.as_str(), "dev", "lo"]);
        if a.v6() {
            // Usable at once, without duplicate address detection.
            args.push("nodad");
        }
        ns.run(&args);
    }
    ns.run(&["ip", "route", "add", a.service_route, "dev", "lo"]);
    let to = |ip: &str| {
        if a.v6() {
            format!("[{ip}]:5353")
        } else {
            format!("{ip}:5353")
        }
    };
    let rules = [
        ("udp", Some("40001"), to(a.old_endpoint)),
        ("udp", Some("40002"), to(a.new_endpoint)),
        ("tcp", None, to(a.old_endpoint)),
    ];
    for (protocol, sport, destination) in rules {
        let mut args = vec![
            iptables, "-t", "nat", "-A", "OUTPUT", "-p", protocol, "-d", a.service, "--dport", "53",
        ];
        if let Some(sport) = sport {
            args.extend(["--sport", sport]);
        }
        args.extend(["-j", "DNAT", "--to-destination", &destination]);
        ns.run(&args);
    }
}

fn send_from(a: &Addresses, source_port: u16, to: &str) {
    let socket = UdpSocket::bind(SocketAddr::new(a.client.parse().unwrap(), source_port)).unwrap();
    socket.send_to(b"query", to).unwrap();
}

/// A TCP connection to the Service, DNATed to the old endpoint: an
/// established entry with TCP protocol info in the listing.
fn connect_tcp(a: &Addresses) {
    let listener = TcpListener::bind(a.at(a.old_endpoint, 5353)).unwrap();
    let client = TcpStream::connect(a.at(a.service, 53)).unwrap();
    let (_server, _) = listener.accept().unwrap();
    drop(client);
}

fn dns_service(tracker: &mut Tracker, a: &Addresses, endpoints: &[&str]) {
    let service = serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": "dns"},
        "spec": {"clusterIP": a.service, "ipFamilies": [a.family.address_type()],
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}
    }))
    .unwrap();
    tracker.apply_service(&service);
    let endpoints: Vec<_> = endpoints
        .iter()
        .map(|ip| json!({"addresses": [ip]}))
        .collect();
    let slice = serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": "dns-1",
                     "labels": {"kubernetes.io/service-name": "dns"}},
        "addressType": a.family.address_type(),
        "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}],
        "endpoints": endpoints,
    }))
    .unwrap();
    tracker.apply_endpoint_slice(&slice);
}

fn stale_flows_of_a_removed_endpoint_are_deleted_and_nothing_else(a: &Addresses, tag: &str) {
    let ns = Netns::new(tag);
    prepare(&ns, a);
    let listed = inside(&ns, || {
        send_from(a, 40001, &a.at(a.service, 53));
        send_from(a, 40002, &a.at(a.service, 53));
        // Not a Service: an address and port of no Service.
        send_from(a, 40003, &a.at(a.old_endpoint, 9999));
        connect_tcp(a);
        NetlinkConntrack.list(a.family).unwrap()
    });

    let old_flow = a.flow(a.service, 53, a.old_endpoint, 5353);
    let new_flow = a.flow(a.service, 53, a.new_endpoint, 5353);
    let unrelated = a.flow(a.old_endpoint, 9999, a.old_endpoint, 9999);
    let mut all = vec![old_flow.clone(), new_flow.clone(), unrelated.clone()];
    all.sort();
    assert_eq!(ns.flows("udp"), all, "the flows the test made");
    let tcp = vec![a.flow(a.service, 53, a.old_endpoint, 5353)];
    assert_eq!(ns.flows("tcp"), tcp);

    // Our listing sees them as conntrack-tools does, with the kernel's ids.
    let udp: Vec<&Flow> = (listed.flows.iter())
        .filter(|f| f.protocol == IPPROTO_UDP)
        .collect();
    assert_eq!(udp.len(), 3, "{listed:?}");
    assert!(udp.iter().all(|f| f.id.is_some()));
    let old = udp
        .iter()
        .find(|f| f.reply.source.to_string() == a.at(a.old_endpoint, 5353))
        .expect("the flow DNATed to the old endpoint");
    assert_eq!(old.original.destination.to_string(), a.at(a.service, 53));
    assert_eq!(old.original.source.to_string(), a.at(a.client, 40001));
    assert!(
        listed.flows.iter().any(|f| f.protocol == IPPROTO_TCP),
        "the TCP entry decodes too: {listed:?}"
    );

    // The old endpoint is gone from the Service: its UDP flow, only, goes;
    // TCP to it stays (its connection ends by itself).
    let mut tracker = Tracker::new(a.family, "node");
    dns_service(&mut tracker, a, &[a.new_endpoint]);
    let report = inside(&ns, || {
        clean_stale_entries(&NetlinkConntrack, &tracker).unwrap()
    });
    assert_eq!((report.deleted, report.error), (1, None));
    let mut left = vec![new_flow, unrelated];
    left.sort();
    assert_eq!(ns.flows("udp"), left);
    assert_eq!(ns.flows("tcp"), tcp);

    // Deleting what is already gone is no error and counts nothing.
    let gone: Vec<&Flow> = vec![old];
    let again = inside(&ns, || NetlinkConntrack.delete(a.family, &gone));
    assert_eq!(again.unwrap(), 0);
}

#[test]
fn stale_ipv4_flows_of_a_removed_endpoint_are_deleted_and_nothing_else() {
    stale_flows_of_a_removed_endpoint_are_deleted_and_nothing_else(&V4, "stale4");
}

#[test]
fn stale_ipv6_flows_of_a_removed_endpoint_are_deleted_and_nothing_else() {
    stale_flows_of_a_removed_endpoint_are_deleted_and_nothing_else(&V6, "stale6");
}

#[test]
fn a_service_without_endpoints_loses_every_flow_to_its_frontend() {
    let a = &V4;
    let ns = Netns::new("empty");
    prepare(&ns, a);
    inside(&ns, || {
        send_from(a, 40001, &a.at(a.service, 53));
        send_from(a, 40002, &a.at(a.service, 53));
    });
    assert_eq!(ns.flows("udp").len(), 2);
    let mut tracker = Tracker::new(IpFamily::V4, "node");
    dns_service(&mut tracker, a, &[]);
    let report = inside(&ns, || {
        clean_stale_entries(&NetlinkConntrack, &tracker).unwrap()
    });
    assert_eq!((report.deleted, report.error), (2, None));
    assert_eq!(ns.flows("udp"), Vec::<String>::new());
}

/// The whole path: our own iptables rules spread UDP flows over two
/// endpoints, one endpoint is removed, the next sync's hook deletes exactly
/// the flows DNATed to it and counts them in kube-proxy's metric.
#[test]
fn after_a_sync_that_removed_an_endpoint_its_flows_through_our_rules_are_gone() {
    let a = &V4;
    let ns = Netns::new("e2e");
    ns.run(&["ip", "link", "set", "lo", "up"]);
    for ip in [a.client, a.old_endpoint, a.new_endpoint] {
        ns.run(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"]);
    }
    ns.run(&["ip", "route", "add", a.service_route, "dev", "lo"]);

    let config = KubeProxyConfiguration::parse(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.1.0.0/24\n",
    )
    .unwrap();
    let mut tracker = Tracker::new(IpFamily::V4, "node");
    dns_service(&mut tracker, a, &[a.old_endpoint, a.new_endpoint]);
    let mut proxier = Proxier::new(config, tracker, SystemExec::in_netns(&ns.0));
    proxier.set_services_synced();
    proxier.set_slices_synced();
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry, IpFamily::V4, ProxyMode::Iptables);
    assert!(matches!(proxier.sync(), SyncOutcome::Synced(_)));
    // The first sync's cleanup finds nothing stale.
    inside(&ns, || {
        after_sync(&NetlinkConntrack, &mut proxier.tracker, &metrics);
    });

    // Enough flows that both endpoints get some (each has 1/2 per flow).
    inside(&ns, || {
        for port in 41000..41024 {
            send_from(a, port, &a.at(a.service, 53));
        }
    });
    let before = ns.flows("udp");
    let to_old = a.flow(a.service, 53, a.old_endpoint, 5353);
    let to_new = a.flow(a.service, 53, a.new_endpoint, 5353);
    let count = |flows: &[String], which: &str| flows.iter().filter(|f| *f == which).count();
    let (old_count, new_count) = (count(&before, &to_old), count(&before, &to_new));
    assert_eq!(
        old_count + new_count,
        24,
        "every flow went through our DNAT: {before:?}"
    );
    assert!(old_count > 0 && new_count > 0, "{before:?}");

    dns_service(&mut proxier.tracker, a, &[a.new_endpoint]);
    assert!(matches!(proxier.sync(), SyncOutcome::Synced(_)));
    inside(&ns, || {
        after_sync(&NetlinkConntrack, &mut proxier.tracker, &metrics);
    });
    assert_eq!(ns.flows("udp"), vec![to_new; new_count]);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let deleted = format!(
        "kubeproxy_conntrack_reconciler_deleted_entries_total{{ip_family=\"IPv4\"}} {old_count}"
    );
    assert!(text.contains(&deleted), "{deleted} in\n{text}");
    assert!(text.contains(
        "kubeproxy_conntrack_reconciler_sync_duration_seconds_count{ip_family=\"IPv4\"} 2"
    ));
}
