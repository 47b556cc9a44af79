//! The IPVS backend in the shared proxier, against the core's fake kernel
//! and host: whole sync cycles (services added, an endpoint drained over
//! syncs, a UDP one replaced at once, a failed operation retried, a service
//! deleted), the start-up steps and the cleanup.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::ipvs_backend::{IpvsWriteError, cleanup_leftovers, delete_jumps, prepare};
use super::*;
use crate::exec::fake::FakeExec;
use crate::ipvs::Operation;
use crate::ipvs::diff::Current;
use crate::ipvs::ipsets::{Set, SetEntries};
use crate::ipvs::model::{RealServerState, ServiceKey, VirtualServer};
use crate::ipvs::reconcile::fake::{FakeHost, FakeIpvs};
use crate::ipvs::reconcile::{BoxError, Host, Ipvs, SyncError};
use crate::tracker::{IpFamily, Protocol};

/// A fake the test keeps a handle on while the proxier owns the other.
#[derive(Default)]
struct Shared<T>(Arc<Mutex<T>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> Shared<T> {
    fn get(&self) -> std::sync::MutexGuard<'_, T> {
        self.0.lock().unwrap()
    }
}

impl Ipvs for Shared<FakeIpvs> {
    fn services(&mut self) -> Result<Vec<VirtualServer>, BoxError> {
        self.get().services()
    }
    fn real_servers(&mut self, key: &ServiceKey) -> Result<Vec<RealServerState>, BoxError> {
        self.get().real_servers(key)
    }
    fn apply(&mut self, operation: &Operation) -> Result<(), BoxError> {
        self.get().apply(operation)
    }
}

impl Host for Shared<FakeHost> {
    fn dummy_addresses(&mut self, family: IpFamily) -> Result<BTreeSet<IpAddr>, BoxError> {
        self.get().dummy_addresses(family)
    }
    fn local_addresses(&mut self, family: IpFamily) -> Result<BTreeSet<IpAddr>, BoxError> {
        self.get().local_addresses(family)
    }
    fn add_address(&mut self, address: IpAddr) -> Result<(), BoxError> {
        self.get().add_address(address)
    }
    fn remove_address(&mut self, address: IpAddr) -> Result<(), BoxError> {
        self.get().remove_address(address)
    }
    fn set_entries(&mut self, family: IpFamily) -> Result<SetEntries, BoxError> {
        self.get().set_entries(family)
    }
    fn delete_interface(&mut self) -> Result<(), BoxError> {
        self.get().delete_interface()
    }
    fn destroy_set(&mut self, set: Set, family: IpFamily) -> Result<(), BoxError> {
        self.get().destroy_set(set, family)
    }
    fn restore_sets(&mut self, text: &str) -> Result<(), BoxError> {
        self.get().restore_sets(text)
    }
    fn restore_rules(&mut self, family: IpFamily, text: &str) -> Result<(), BoxError> {
        self.get().restore_rules(family, text)
    }
}

fn service(name: &str, ip: &str, port: u16, protocol: &str) -> k8s_openapi::api::core::v1::Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": name},
        "spec": {"clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": "p", "port": port, "protocol": protocol}]}
    }))
    .unwrap()
}

fn slice(
    name: &str,
    port: u16,
    protocol: &str,
    ips: &[&str],
) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    let endpoints: Vec<_> = (ips.iter())
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": format!("{name}-abc"),
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "p", "port": port, "protocol": protocol}],
        "endpoints": endpoints
    }))
    .unwrap()
}

struct Rig {
    proxier: Proxier<FakeExec>,
    ipvs: Shared<FakeIpvs>,
    host: Shared<FakeHost>,
}

fn rig() -> Rig {
    let config = KubeProxyConfiguration::parse(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n",
    )
    .unwrap();
    let (ipvs, host) = (Shared::<FakeIpvs>::default(), Shared::<FakeHost>::default());
    let backend = Backend::Ipvs(IpvsBackend {
        iptables: Iptables::v4(FakeExec::default()),
        ipvs: Box::new(ipvs.clone()),
        host: Box::new(host.clone()),
    });
    let mut proxier = Proxier::with_backend(config, Tracker::new(IpFamily::V4, "node-a"), backend);
    proxier.set_services_synced();
    proxier.set_slices_synced();
    Rig {
        proxier,
        ipvs,
        host,
    }
}

fn key(ip: &str, port: u16, protocol: Protocol) -> ServiceKey {
    ServiceKey {
        address: ip.parse().unwrap(),
        port,
        protocol,
    }
}

const WEB: (&str, u16, Protocol) = ("10.96.0.10", 80, Protocol::Tcp);
const DNS: (&str, u16, Protocol) = ("10.96.0.53", 53, Protocol::Udp);

impl Rig {
    fn synced(&mut self) -> Written {
        match self.proxier.sync() {
            SyncOutcome::Synced(report) => {
                assert!(report.full, "every IPVS sync is full");
                report.written
            }
            other => panic!("expected a sync, got {other:?}"),
        }
    }

    /// `address:weight` of a service's real servers in the fake kernel.
    fn real_servers(&self, (ip, port, protocol): (&str, u16, Protocol)) -> Vec<String> {
        let ipvs = self.ipvs.get();
        let Some(service) = ipvs.state.services.get(&key(ip, port, protocol)) else {
            return vec!["no such virtual server".into()];
        };
        let mut list: Vec<String> = (service.real_servers.iter())
            .map(|rs| format!("{}:{}", rs.address, rs.weight))
            .collect();
        list.sort();
        list
    }

    fn state(&self) -> Current {
        self.ipvs.get().state.clone()
    }
}

fn counts(written: &Written) -> (usize, usize, usize) {
    match written {
        Written::Ipvs {
            virtual_servers,
            draining,
            failed,
            ..
        } => (*virtual_servers, *draining, *failed),
        other => panic!("not the IPVS backend's: {other:?}"),
    }
}

#[test]
fn a_full_cycle_of_syncs() {
    let mut r = rig();
    let t = &mut r.proxier.tracker;
    t.apply_service(&service("web", WEB.0, 80, "TCP"));
    t.apply_endpoint_slice(&slice("web", 8080, "TCP", &["10.244.0.5", "10.244.0.6"]));
    t.apply_service(&service("dns", DNS.0, 53, "UDP"));
    t.apply_endpoint_slice(&slice("dns", 5353, "UDP", &["10.244.0.7"]));

    // Services added: virtual servers, their addresses on the dummy
    // interface, set entries, the rules, and the jumps into our chains.
    assert_eq!(counts(&r.synced()), (2, 0, 0));
    assert_eq!(
        r.real_servers(WEB),
        ["10.244.0.5:8080:1", "10.244.0.6:8080:1"]
    );
    assert_eq!(r.real_servers(DNS), ["10.244.0.7:5353:1"]);
    {
        let host = r.host.get();
        assert_eq!(
            host.addresses,
            BTreeSet::from([WEB.0.parse().unwrap(), DNS.0.parse().unwrap()])
        );
        assert!(host.sets[&Set::ClusterIp].contains("10.96.0.10,tcp:80"));
        assert_eq!(host.rule_restores.len(), 1);
        assert!(host.rule_restores[0].contains("US-SERVICES"));
    }
    let lines = r.proxier.exec().take_lines();
    for rule in crate::ipvs::rules::jump_rules() {
        let check = format!("-t {} -C {} ", rule.table, rule.from);
        assert!(
            (lines.iter()).any(|l| l.contains(&check) && l.ends_with(&format!("-j {}", rule.to))),
            "no check of the jump to {}: {lines:?}",
            rule.to
        );
    }

    // A TCP endpoint goes while it has a connection: weight 0, kept.
    r.ipvs.get().set_connections(1, 0);
    let t = &mut r.proxier.tracker;
    t.apply_endpoint_slice(&slice("web", 8080, "TCP", &["10.244.0.5"]));
    assert_eq!(counts(&r.synced()), (2, 1, 0));
    assert_eq!(
        r.real_servers(WEB),
        ["10.244.0.5:8080:1", "10.244.0.6:8080:0"]
    );
    // Still connected at the next (periodic) sync: left draining.
    let before = r.state();
    assert_eq!(counts(&r.synced()), (2, 0, 0));
    assert_eq!(r.state(), before, "nothing to do while it drains");
    // Its last connection closed: deleted.
    r.ipvs.get().set_connections(0, 0);
    r.synced();
    assert_eq!(r.real_servers(WEB), ["10.244.0.5:8080:1"]);

    // A UDP endpoint replaced: the old one goes at once, connections or not.
    r.ipvs.get().set_connections(3, 3);
    let t = &mut r.proxier.tracker;
    t.apply_endpoint_slice(&slice("dns", 5353, "UDP", &["10.244.0.8"]));
    assert_eq!(counts(&r.synced()), (2, 0, 0));
    assert_eq!(r.real_servers(DNS), ["10.244.0.8:5353:1"]);

    // A failed operation: the sync goes on and says so; the next retries it.
    r.ipvs.get().failing = vec!["10.244.0.9".into()];
    let t = &mut r.proxier.tracker;
    t.apply_endpoint_slice(&slice("web", 8080, "TCP", &["10.244.0.5", "10.244.0.9"]));
    assert_eq!(counts(&r.synced()), (2, 0, 1));
    assert_eq!(r.real_servers(WEB), ["10.244.0.5:8080:1"]);
    r.ipvs.get().failing.clear();
    assert_eq!(counts(&r.synced()), (2, 0, 0));
    assert_eq!(
        r.real_servers(WEB),
        ["10.244.0.5:8080:1", "10.244.0.9:8080:1"]
    );

    // The service deleted: its virtual server, address and set entry go.
    r.proxier.tracker.delete_service("ns", "web");
    assert_eq!(counts(&r.synced()), (1, 0, 0));
    assert_eq!(r.real_servers(WEB), ["no such virtual server"]);
    let host = r.host.get();
    assert_eq!(host.addresses, BTreeSet::from([DNS.0.parse().unwrap()]));
    assert!(!host.sets[&Set::ClusterIp].contains("10.96.0.10,tcp:80"));
}

#[test]
fn a_failed_jump_fails_the_sync_but_counts_no_restore_failure() {
    let mut r = rig();
    r.proxier
        .exec()
        .fail("iptables -w 5 -t nat -N", 4, "Permission denied");
    match r.proxier.sync() {
        SyncOutcome::Failed {
            full: true,
            error,
            restore: false,
        } => assert!(error.contains("Permission denied"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert!(r.state().services.is_empty());
    let restore = IpvsWriteError::Sync(SyncError::Rules("no".into()));
    assert!(restore.is_restore());
    assert!(!IpvsWriteError::Sync(SyncError::Sets("no".into())).is_restore());
}

#[test]
fn start_up_probes_the_scheduler_then_sets_the_sysctls() {
    let config = |tail: &str| {
        KubeProxyConfiguration::parse(&format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n{tail}"
        ))
        .unwrap()
    };
    let mut written = Vec::new();
    let mut ipvs = FakeIpvs::default();
    let timeouts = prepare(
        &mut ipvs,
        &config("ipvs:\n  strictARP: true\n  udpTimeout: 10s\n"),
        (6, 1),
        &mut |path, value| {
            written.push(format!("{path}={value}"));
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(timeouts, Some((0, 0, 10)));
    assert_eq!(
        written,
        [
            "net/ipv4/vs/conntrack=1",
            "net/ipv4/vs/expire_nodest_conn=1",
            "net/ipv4/vs/expire_quiescent_template=1",
            "net/ipv4/ip_forward=1",
            "net/ipv4/conf/all/arp_ignore=1",
            "net/ipv4/conf/all/arp_announce=2",
        ]
    );
    assert!(ipvs.state.services.is_empty(), "the probe is gone");

    // An unusable scheduler: nothing is set.
    let mut written = 0;
    ipvs.failing = vec!["\"sed\"".into()];
    let error = prepare(
        &mut ipvs,
        &config("ipvs:\n  scheduler: sed\n"),
        (6, 1),
        &mut |_, _| {
            written += 1;
            Ok(())
        },
    )
    .unwrap_err();
    assert!(error.contains("ip_vs_sed"), "{error}");
    assert_eq!(written, 0);

    // A sysctl that cannot be set is fatal.
    let error = prepare(
        &mut FakeIpvs::default(),
        &config(""),
        (6, 1),
        &mut |p, _| Err(format!("cannot set {p}")),
    )
    .unwrap_err();
    assert_eq!(error, "cannot set net/ipv4/vs/conntrack");
}

#[test]
fn cleanup_unlinks_our_chains_then_removes_servers_sets_and_interface() {
    // Only US-IPVS-OUT-FILTER exists, with its jump (found once: then gone).
    let exec = FakeExec::default();
    exec.fail("iptables -w 5 -t", 1, "");
    exec.answer("iptables -w 5 -t filter -S US-IPVS-OUT-FILTER", 0, "");
    exec.fail_once("iptables -w 5 -t filter -C OUTPUT", 0, "");
    exec.answer("iptables -w 5 -t filter -D OUTPUT", 0, "");
    delete_jumps(&Iptables::v4(&exec)).unwrap();
    let lines = exec.take_lines();
    let deletes: Vec<&String> = lines.iter().filter(|l| l.contains(" -D ")).collect();
    assert_eq!(deletes.len(), 1, "{lines:?}");
    assert!(
        deletes[0].starts_with("iptables -w 5 -t filter -D OUTPUT")
            && deletes[0].ends_with("-j US-IPVS-OUT-FILTER"),
        "{lines:?}"
    );

    let mut r = rig();
    let t = &mut r.proxier.tracker;
    t.apply_service(&service("web", WEB.0, 80, "TCP"));
    t.apply_endpoint_slice(&slice("web", 8080, "TCP", &["10.244.0.5"]));
    r.synced();
    // Someone else's virtual server stays.
    let theirs = VirtualServer {
        key: key("10.96.0.1", 443, Protocol::Tcp),
        scheduler: "rr".into(),
        flags: 0,
        timeout: 0,
    };
    r.ipvs.get().state.apply(&Operation::AddService(theirs));
    let removed =
        cleanup_leftovers(&mut r.ipvs.clone(), &mut r.host.clone(), IpFamily::V4).unwrap();
    assert_eq!(
        removed,
        [
            "ipvs 10.96.0.10:80/TCP",
            "ipset US-CLUSTER-IP",
            "ipset US-IPVS-IPS"
        ]
    );
    let left: Vec<ServiceKey> = r.state().services.keys().copied().collect();
    assert_eq!(left, [key("10.96.0.1", 443, Protocol::Tcp)]);
    let host = r.host.get();
    assert!(host.addresses.is_empty(), "the dummy interface went");
    assert!(host.sets.is_empty());
    assert!(
        host.rule_restores
            .last()
            .unwrap()
            .contains("-X US-SERVICES"),
        "our chains are deleted"
    );
}

#[test]
fn cleanup_of_every_mode_unlinks_then_deletes_chains_then_ipvs_leftovers() {
    let fake = FakeExec::default();
    // Every chain exists; each IPVS jump is found once (the latest
    // matching rule answers).
    fake.answer("iptables -w 5 -t", 0, "");
    fake.fail("iptables -w 5 -t filter -C", 1, "");
    fake.fail("iptables -w 5 -t nat -C", 1, "");
    for rule in crate::ipvs::rules::jump_rules() {
        let args = rule.args().join(" ");
        let check = format!("iptables -w 5 -t {} -C {} {args}", rule.table, rule.from);
        fake.fail_once(&check, 0, "");
    }
    fake.answer(
        "iptables-save -t filter",
        0,
        "*filter\n:INPUT ACCEPT [0:0]\n:US-IPVS-FILTER - [0:0]\nCOMMIT\n",
    );
    fake.answer("iptables-save -t nat", 0, "");
    fake.answer("iptables-save -t mangle", 0, "");
    fake.answer(
        "ipset save",
        0,
        "create US-CLUSTER-IP hash:ip,port family inet\nadd US-CLUSTER-IP 10.96.0.10,tcp:80\n",
    );
    fake.answer("nft list tables", 0, "");
    // No IPv6 chains of ours.
    fake.answer("ip6tables -w 5 -t", 1, "");
    fake.answer("ip6tables-save", 0, "");
    let mut ipvs = FakeIpvs::default();
    for k in [
        key(WEB.0, WEB.1, WEB.2),
        key("10.96.0.1", 443, Protocol::Tcp),
    ] {
        ipvs.state.apply(&Operation::AddService(VirtualServer {
            key: k,
            scheduler: "rr".into(),
            flags: 0,
            timeout: 0,
        }));
    }
    let removed = cleanup(&fake, Some(&mut ipvs)).unwrap();
    assert_eq!(
        removed,
        [
            "filter/US-IPVS-FILTER",
            "ipvs 10.96.0.10:80/TCP",
            "ipset US-CLUSTER-IP"
        ]
    );
    let left: Vec<ServiceKey> = ipvs.state.services.keys().copied().collect();
    assert_eq!(left, [key("10.96.0.1", 443, Protocol::Tcp)], "not ours");

    let lines = fake.take_lines();
    let at = |what: &str| {
        (lines.iter())
            .position(|l| l.starts_with(what))
            .unwrap_or_else(|| panic!("no {what:?} in {lines:?}"))
    };
    let unlinked = at("iptables -w 5 -t filter -D INPUT");
    let chains_deleted = at("iptables-restore");
    let interface_deleted = at("ip link del understudy-ipvs0");
    let sets_destroyed = at("ipset destroy US-CLUSTER-IP");
    assert!(unlinked < chains_deleted, "{lines:?}");
    assert!(chains_deleted < interface_deleted, "{lines:?}");
    assert!(interface_deleted < sets_destroyed, "{lines:?}");
}

/// A dual-stack node: IPv4's and IPv6's proxiers on one kernel IPVS table,
/// one dummy interface and the host's tools, as `run` makes them. Each
/// writes its family's virtual servers, addresses, sets and rules, and
/// leaves the other's alone, however their syncs interleave.
#[test]
fn dual_stack_proxiers_share_the_kernel_and_keep_to_their_family() {
    let config = KubeProxyConfiguration::parse(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n",
    )
    .unwrap();
    let (ipvs, host) = (Shared::<FakeIpvs>::default(), Shared::<FakeHost>::default());
    let proxier_of = |family| {
        let backend = Backend::Ipvs(IpvsBackend {
            iptables: Iptables {
                exec: FakeExec::default(),
                family,
            },
            ipvs: Box::new(ipvs.clone()),
            host: Box::new(host.clone()),
        });
        let mut p = Proxier::with_backend(config.clone(), Tracker::new(family, "node-a"), backend);
        p.set_services_synced();
        p.set_slices_synced();
        p
    };
    let (mut v4, mut v6) = (proxier_of(IpFamily::V4), proxier_of(IpFamily::V6));
    let mut web6 = slice("web6", 8080, "TCP", &["fd00:244::5"]);
    web6.address_type = "IPv6".into();
    for p in [&mut v4, &mut v6] {
        // Every proxier sees every object; its tracker keeps its family's.
        p.tracker.apply_service(&service("web", WEB.0, 80, "TCP"));
        p.tracker
            .apply_endpoint_slice(&slice("web", 8080, "TCP", &["10.244.0.5"]));
        p.tracker
            .apply_service(&service("web6", "fd00:96::10", 80, "TCP"));
        p.tracker.apply_endpoint_slice(&web6);
    }
    for _ in 0..2 {
        for p in [&mut v4, &mut v6] {
            assert!(matches!(p.sync(), SyncOutcome::Synced(_)));
        }
    }
    let servers: Vec<ServiceKey> = ipvs.get().state.services.keys().copied().collect();
    assert_eq!(
        servers,
        [
            key(WEB.0, 80, Protocol::Tcp),
            key("fd00:96::10", 80, Protocol::Tcp)
        ]
    );
    let real = |k: ServiceKey| -> Vec<String> {
        (ipvs.get().state.services[&k].real_servers.iter())
            .map(|rs| rs.address.to_string())
            .collect()
    };
    assert_eq!(real(servers[0]), ["10.244.0.5:8080"]);
    assert_eq!(real(servers[1]), ["[fd00:244::5]:8080"]);
    let addresses: Vec<String> = host.get().addresses.iter().map(|a| a.to_string()).collect();
    assert_eq!(addresses, ["10.96.0.10", "fd00:96::10"]);
    let host = host.get();
    assert!(host.sets[&Set::ClusterIp].contains("10.96.0.10,tcp:80"));
    assert!(host.sets6[&Set::ClusterIp].contains("fd00:96::10,tcp:80"));
    assert!(!host.rule_restores.is_empty() && !host.rule_restores6.is_empty());
    // IPv6's jumps into our chains go through ip6tables.
    let lines = v6.exec().take_lines();
    assert!(!lines.is_empty());
    assert!(
        lines.iter().all(|l| l.starts_with("ip6tables ")),
        "{lines:?}"
    );
    assert!(
        v4.exec()
            .take_lines()
            .iter()
            .all(|l| l.starts_with("iptables "))
    );
}
