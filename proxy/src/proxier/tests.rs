use serde_json::json;

use super::*;
use crate::exec::fake::FakeExec;
use crate::tracker::IpFamily;

/// A ClusterIP Service `ns/<name>` with one TCP port `http` 80.
pub(super) fn service(name: &str, ip: &str) -> k8s_openapi::api::core::v1::Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": name},
        "spec": {"clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    }))
    .unwrap()
}

/// The Service's one EndpointSlice: ready endpoints `ips` on port 8080.
pub(super) fn slice(name: &str, ips: &[&str]) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    let endpoints: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": format!("{name}-abc"),
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints
    }))
    .unwrap()
}

fn web_service() -> k8s_openapi::api::core::v1::Service {
    service("web", "10.96.0.10")
}

fn web_slice(ips: &[&str]) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    slice("web", ips)
}

fn proxier() -> Proxier<FakeExec> {
    let config = KubeProxyConfiguration::parse(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n",
    )
    .unwrap();
    let mut proxier = Proxier::new(
        config,
        Tracker::new(IpFamily::V4, "node-a"),
        FakeExec::default(),
    );
    proxier.tracker.apply_service(&web_service());
    proxier
        .tracker
        .apply_endpoint_slice(&web_slice(&["10.244.0.5"]));
    proxier
}

fn exec(p: &Proxier<FakeExec>) -> &FakeExec {
    p.exec()
}

#[test]
fn nothing_is_written_before_services_and_slices_are_listed() {
    let mut p = proxier();
    p.set_services_synced();
    assert_eq!(p.sync(), SyncOutcome::NotInitialized);
    assert!(exec(&p).take_lines().is_empty());
}

#[test]
fn a_full_sync_ensures_the_jumps_then_restores_once() {
    let mut p = proxier();
    p.set_services_synced();
    p.set_slices_synced();
    // US-SERVICES exists already in filter (nothing to create) and its OUTPUT
    // jump is there; every other check fails.
    exec(&p).answer("iptables -w 5 -t", 1, "");
    exec(&p).answer(
        "iptables -w 5 -t filter -C OUTPUT -m conntrack --ctstate NEW -m comment --comment kubernetes service portals -j US-SERVICES",
        0,
        "",
    );
    exec(&p).answer("iptables -w 5 -t filter -N", 0, "");
    exec(&p).answer("iptables -w 5 -t nat -N", 0, "");
    // "Chain already exists": as upstream's EnsureChain, nothing to do.
    exec(&p).answer("iptables -w 5 -t filter -N US-SERVICES", 1, "");
    exec(&p).answer("iptables -w 5 -t filter -I", 0, "");
    exec(&p).answer("iptables -w 5 -t nat -I", 0, "");
    exec(&p).answer(
        "iptables-save -t nat",
        0,
        "*nat\n:US-SVC-STALE0000000000 - [0:0]\nCOMMIT\n",
    );

    let SyncOutcome::Synced(report) = p.sync() else {
        panic!("sync failed: {:?}", exec(&p).take_lines())
    };
    assert!(report.full);
    assert!(
        matches!(
            report.written,
            Written::Iptables {
                deleted_chains: 1,
                ..
            }
        ),
        "{report:?}"
    );
    let calls = exec(&p).take_calls();
    let lines: Vec<&str> = calls.iter().map(|c| c.line.as_str()).collect();
    // The first jump: chain created, rule checked, inserted.
    assert_eq!(
        lines[..3],
        [
            "iptables -w 5 -t filter -N US-EXTERNAL-SERVICES",
            "iptables -w 5 -t filter -C INPUT -m conntrack --ctstate NEW -m comment --comment kubernetes externally-visible service portals -j US-EXTERNAL-SERVICES",
            "iptables -w 5 -t filter -I INPUT -m conntrack --ctstate NEW -m comment --comment kubernetes externally-visible service portals -j US-EXTERNAL-SERVICES",
        ]
    );
    assert!(
        !lines.iter().any(|l| l.contains("-I OUTPUT")
            && l.contains("-j US-SERVICES")
            && l.contains("filter")),
        "a jump that -C found is not inserted again: {lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains(" -S ")),
        "no chain is listed to find whether it exists: {lines:#?}"
    );
    let restores: Vec<_> = calls
        .iter()
        .filter(|c| c.line.starts_with("iptables-restore"))
        .collect();
    assert_eq!(restores.len(), 1, "one restore per sync");
    assert_eq!(
        restores[0].line,
        "iptables-restore -w 5 --noflush --counters"
    );
    assert_eq!(lines[lines.len() - 2], "iptables-save -t nat");
    let text = restores[0].stdin.as_deref().unwrap();
    assert!(text.contains("-A US-SEP-"), "{text}");
    assert!(
        text.contains("-X US-SVC-STALE0000000000"),
        "stale chain deleted: {text}"
    );
}

#[test]
fn later_syncs_are_partial_and_a_failed_restore_forces_a_full_one() {
    let mut p = proxier();
    p.set_services_synced();
    p.set_slices_synced();
    assert!(matches!(
        p.sync(),
        SyncOutcome::Synced(SyncReport { full: true, .. })
    ));
    exec(&p).take_lines();

    p.tracker
        .apply_endpoint_slice(&web_slice(&["10.244.0.5", "10.244.0.6"]));
    let SyncOutcome::Synced(report) = p.sync() else {
        panic!()
    };
    assert!(!report.full);
    let lines = exec(&p).take_lines();
    assert_eq!(
        lines,
        [
            "iptables-save -t nat",
            "iptables-restore -w 5 --noflush --counters"
        ],
        "a partial sync touches no jump"
    );

    exec(&p).answer("iptables-restore", 2, "");
    p.tracker.apply_endpoint_slice(&web_slice(&["10.244.0.6"]));
    assert!(matches!(p.sync(), SyncOutcome::Failed { full: false, .. }));
    exec(&p).answer("iptables-restore", 0, "");
    let SyncOutcome::Synced(report) = p.sync() else {
        panic!()
    };
    assert!(
        report.full,
        "the changes a failed sync took are lost: full sync"
    );
}

#[test]
fn large_clusters_read_the_nat_table_back_at_most_once_a_sync_period() {
    let mut p = proxier();
    // Over 1000 endpoints: upstream's largeClusterMode.
    let ips: Vec<String> = (0..1002)
        .map(|i| format!("10.244.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    p.tracker.apply_endpoint_slice(&web_slice(&refs));
    p.set_services_synced();
    p.set_slices_synced();
    assert!(matches!(p.sync(), SyncOutcome::Synced(_)));
    assert!(
        exec(&p)
            .take_lines()
            .iter()
            .any(|l| l == "iptables-save -t nat"),
        "the first sync looks for stale chains"
    );
    p.tracker.apply_endpoint_slice(&web_slice(&refs[1..]));
    assert!(matches!(p.sync(), SyncOutcome::Synced(_)));
    assert_eq!(
        exec(&p).take_lines(),
        ["iptables-restore -w 5 --noflush --counters"],
        "within a sync period: no iptables-save"
    );
}

#[test]
fn a_partial_sync_writes_only_changed_services_chains() {
    let mut p = proxier();
    let other: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": "other"},
        "spec": {"clusterIP": "10.96.0.11", "clusterIPs": ["10.96.0.11"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    }))
    .unwrap();
    p.tracker.apply_service(&other);
    p.set_services_synced();
    p.set_slices_synced();
    p.sync();
    exec(&p).take_calls();
    p.tracker.apply_endpoint_slice(&web_slice(&["10.244.0.7"]));
    p.sync();
    let calls = exec(&p).take_calls();
    let text = calls.last().unwrap().stdin.clone().unwrap();
    assert!(text.contains("10.244.0.7:8080"), "{text}");
    assert!(
        !text.contains("US-SERVICES") && !text.starts_with("*filter"),
        "the top-level chains' rules are unchanged, so left as they are: {text}"
    );

    // web loses its endpoints: its REJECT joins other's in the filter
    // table's US-SERVICES, which is rewritten whole.
    p.tracker.apply_endpoint_slice(&web_slice(&[]));
    p.sync();
    let calls = exec(&p).take_calls();
    let text = calls.last().unwrap().stdin.clone().unwrap();
    assert!(
        text.starts_with("*filter\n:US-SERVICES - [0:0]\n"),
        "{text}"
    );
    assert!(
        text.contains("\"ns/other:http has no endpoints\"")
            && text.contains("\"ns/web:http has no endpoints\""),
        "{text}"
    );

    // A failed restore forgets what was written: the next (full) sync
    // writes every chain.
    exec(&p).fail_once("iptables-restore", 1, "iptables-restore: line 3 failed");
    p.tracker.apply_endpoint_slice(&web_slice(&["10.244.0.8"]));
    assert!(matches!(p.sync(), SyncOutcome::Failed { .. }));
    p.sync();
    let calls = exec(&p).take_calls();
    let text = calls.last().unwrap().stdin.clone().unwrap();
    assert!(text.contains(":US-FORWARD - [0:0]"), "{text}");
}

#[test]
fn canaries_are_created_where_missing_and_report_a_flush() {
    let p = proxier();
    exec(&p).answer("iptables -w 5 -t nat -S US-PROXY-CANARY", 1, "");
    assert!(!p.check_intact().unwrap());
    assert_eq!(
        exec(&p).take_lines(),
        [
            "iptables -w 5 -t mangle -S US-PROXY-CANARY",
            "iptables -w 5 -t nat -S US-PROXY-CANARY",
            "iptables -w 5 -t nat -N US-PROXY-CANARY",
            "iptables -w 5 -t filter -S US-PROXY-CANARY",
        ]
    );
    exec(&p).answer("iptables -w 5 -t nat -S US-PROXY-CANARY", 0, "");
    assert!(p.check_intact().unwrap());
}

#[test]
fn cleanup_removes_jumps_and_our_chains_only() {
    let fake = FakeExec::default();
    fake.answer(
        "nft list tables",
        0,
        "table ip filter\ntable inet kube-proxy\n",
    );
    // Both families' tools: the same chain of ours in each, which goes
    // the same way (kube-proxy's stays).
    for tool in ["iptables", "ip6tables"] {
        fake.answer(&format!("{tool} -w 5 -t"), 1, "");
        fake.answer(&format!("{tool} -w 5 -t nat -S US-SERVICES"), 0, "");
        fake.answer(&format!("{tool}-save"), 0, "");
        fake.answer(
            &format!("{tool}-save -t nat"),
            0,
            "*nat\n:PREROUTING ACCEPT [0:0]\n:US-SERVICES - [0:0]\n:KUBE-SERVICES - [0:0]\nCOMMIT\n",
        );
        fake.answer(&format!("{tool}-restore"), 0, "");
    }
    let deleted = cleanup(&fake, None).unwrap();
    assert_eq!(deleted, ["nat/US-SERVICES", "ip6tables nat/US-SERVICES"]);
    let calls = fake.take_calls();
    assert!(
        calls.iter().any(|c| c.line == "iptables -w 5 -t nat -C PREROUTING -m comment --comment kubernetes service portals -j US-SERVICES"),
        "jumps into a chain that exists are looked for"
    );
    for tool in ["iptables-restore", "ip6tables-restore"] {
        let restore = calls.iter().find(|c| c.line.starts_with(tool)).unwrap();
        assert_eq!(
            restore.stdin.as_deref(),
            Some("*nat\n:US-SERVICES - [0:0]\n-X US-SERVICES\nCOMMIT\n"),
            "{tool}"
        );
    }
}
