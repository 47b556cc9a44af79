//! The conntrack cleanup against the real kernel: UDP flows made through a
//! DNAT rule in a network namespace of its own (conntrack tables are per
//! namespace), listed and deleted by our ctnetlink client from a thread that
//! entered that namespace, and checked with conntrack-tools. The host's
//! conntrack table is never touched: the thread proves it is in the test's
//! namespace before it opens a socket.

use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use serde_json::json;
use understudy_proxy::conntrack::{
    Conntrack, Flow, IPPROTO_UDP, NetlinkConntrack, clean_stale_entries,
};
use understudy_proxy::tracker::{IpFamily, Tracker};

/// A network namespace that is deleted when dropped, even when a test fails.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("us-ct-{tag}-{}", std::process::id());
        let status = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "`ip netns add {name}` failed: these tests need root and iproute2"
        );
        Netns(name)
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }

    /// Runs a command inside, returning its stdout; panics on failure.
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `conntrack -L` of UDP, one `orig-dst/reply-src` line per entry, sorted.
    fn udp_flows(&self) -> Vec<String> {
        let text = self.run(&["conntrack", "-L", "-p", "udp"]);
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

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
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

const SERVICE_IP: &str = "172.30.0.10";
const CLIENT_IP: &str = "10.1.0.1";
const OLD_ENDPOINT: &str = "10.1.0.2";
const NEW_ENDPOINT: &str = "10.1.0.3";

/// Addresses on loopback, the service range routed there, and DNAT rules
/// sending the client's source port 40001 to the old endpoint and 40002 to
/// the new one (so which flow goes where does not depend on chance), as the
/// proxy's rules would for a Service with two endpoints.
fn prepare(ns: &Netns) {
    ns.run(&["ip", "link", "set", "lo", "up"]);
    for ip in [CLIENT_IP, OLD_ENDPOINT, NEW_ENDPOINT] {
        ns.run(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"]);
    }
    ns.run(&["ip", "route", "add", "172.30.0.0/16", "dev", "lo"]);
    for (sport, endpoint) in [("40001", OLD_ENDPOINT), ("40002", NEW_ENDPOINT)] {
        ns.run(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "udp",
            "-d",
            SERVICE_IP,
            "--dport",
            "53",
            "--sport",
            sport,
            "-j",
            "DNAT",
            "--to-destination",
            &format!("{endpoint}:5353"),
        ]);
    }
}

fn send_from(source_port: u16, to: &str) {
    let socket = UdpSocket::bind(SocketAddr::new(CLIENT_IP.parse().unwrap(), source_port)).unwrap();
    socket.send_to(b"query", to).unwrap();
}

fn dns_service(tracker: &mut Tracker, endpoints: &[&str]) {
    let service = serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": "dns"},
        "spec": {"clusterIP": SERVICE_IP, "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}
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
        "addressType": "IPv4",
        "ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}],
        "endpoints": endpoints,
    }))
    .unwrap();
    tracker.apply_endpoint_slice(&slice);
}

#[test]
fn stale_udp_flows_of_a_removed_endpoint_are_deleted_and_nothing_else() {
    let ns = Netns::new("stale");
    prepare(&ns);
    let listed = inside(&ns, || {
        send_from(40001, &format!("{SERVICE_IP}:53"));
        send_from(40002, &format!("{SERVICE_IP}:53"));
        // Not a Service: an address and port of no Service.
        send_from(40003, &format!("{OLD_ENDPOINT}:9999"));
        NetlinkConntrack.list(IpFamily::V4).unwrap()
    });

    let old_flow = format!("{SERVICE_IP}:53 {OLD_ENDPOINT}:5353");
    let new_flow = format!("{SERVICE_IP}:53 {NEW_ENDPOINT}:5353");
    let unrelated = format!("{OLD_ENDPOINT}:9999 {OLD_ENDPOINT}:9999");
    let mut all = vec![old_flow.clone(), new_flow.clone(), unrelated.clone()];
    all.sort();
    assert_eq!(ns.udp_flows(), all, "the flows the test made");

    // Our listing sees them as conntrack-tools does, with the kernel's ids.
    let udp: Vec<&Flow> = (listed.flows.iter())
        .filter(|f| f.protocol == IPPROTO_UDP)
        .collect();
    assert_eq!(udp.len(), 3, "{listed:?}");
    assert!(udp.iter().all(|f| f.id.is_some()));
    let old = udp
        .iter()
        .find(|f| f.reply.source.to_string() == format!("{OLD_ENDPOINT}:5353"))
        .expect("the flow DNATed to the old endpoint");
    assert_eq!(
        old.original.destination.to_string(),
        format!("{SERVICE_IP}:53")
    );
    assert_eq!(
        old.original.source.to_string(),
        format!("{CLIENT_IP}:40001")
    );

    // The old endpoint is gone from the Service: its flow, only, goes.
    let mut tracker = Tracker::new(IpFamily::V4, "node");
    dns_service(&mut tracker, &[NEW_ENDPOINT]);
    let report = inside(&ns, || {
        clean_stale_entries(&NetlinkConntrack, &tracker).unwrap()
    });
    assert_eq!((report.deleted, report.error), (1, None));
    let mut left = vec![new_flow, unrelated];
    left.sort();
    assert_eq!(ns.udp_flows(), left);

    // Deleting what is already gone is no error and counts nothing.
    let gone: Vec<&Flow> = vec![old];
    let again = inside(&ns, || NetlinkConntrack.delete(IpFamily::V4, &gone));
    assert_eq!(again.unwrap(), 0);
}

#[test]
fn a_service_without_endpoints_loses_every_flow_to_its_frontend() {
    let ns = Netns::new("empty");
    prepare(&ns);
    inside(&ns, || {
        send_from(40001, &format!("{SERVICE_IP}:53"));
        send_from(40002, &format!("{SERVICE_IP}:53"));
    });
    assert_eq!(ns.udp_flows().len(), 2);
    let mut tracker = Tracker::new(IpFamily::V4, "node");
    dns_service(&mut tracker, &[]);
    let report = inside(&ns, || {
        clean_stale_entries(&NetlinkConntrack, &tracker).unwrap()
    });
    assert_eq!((report.deleted, report.error), (2, None));
    assert_eq!(ns.udp_flows(), Vec::<String>::new());
}
