//! The nftables proxier against a scripted `nft`.

use std::time::Duration;

use serde_json::json;

use super::tests::{service, slice};
use super::*;
use crate::exec::fake::{Call, FakeExec};
use crate::tracker::IpFamily;

const LIST: &str = "nft --json --terse list chains ip";
const LIST_SETS: &str = "nft --json --terse list sets ip";

fn proxier() -> Proxier<FakeExec> {
    let config = KubeProxyConfiguration::parse(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\n",
    )
    .unwrap();
    let mut p = Proxier::new(
        config,
        Tracker::new(IpFamily::V4, "node-a"),
        FakeExec::default(),
    );
    p.tracker.apply_service(&service("web", "10.96.0.10"));
    p.tracker.apply_service(&service("other", "10.96.0.11"));
    p.tracker
        .apply_endpoint_slice(&slice("web", &["10.244.0.5"]));
    p.set_services_synced();
    p.set_slices_synced();
    p.exec().answer(LIST_SETS, 0, &listing(&[]));
    p
}

/// The family's chains as `nft --json` lists them: ours, and kube-proxy's
/// (never taken for ours). None of ours: our table is gone.
fn listing(chains: &[&str]) -> String {
    let mut objects =
        vec![json!({"chain": {"family": "ip", "table": "kube-proxy", "name": "services"}})];
    objects.extend(
        chains
            .iter()
            .map(|c| json!({"chain": {"family": "ip", "table": "understudy-proxy", "name": c}})),
    );
    json!({"nftables": objects}).to_string()
}

fn synced(outcome: SyncOutcome) -> SyncReport {
    match outcome {
        SyncOutcome::Synced(report) => report,
        other => panic!("sync: {other:?}"),
    }
}

fn applied(calls: &[Call]) -> Vec<&str> {
    calls
        .iter()
        .filter(|c| c.line == "nft -f -")
        .map(|c| c.stdin.as_deref().unwrap())
        .collect()
}

fn backend(p: &mut Proxier<FakeExec>) -> &mut NftablesBackend<FakeExec> {
    match &mut p.backend {
        Backend::Nftables(b) => b,
        _ => panic!("not the nftables backend"),
    }
}

#[test]
fn the_mode_picks_the_backend() {
    assert!(matches!(proxier().backend, Backend::Nftables(_)));
}

#[test]
fn a_first_sync_lists_the_table_then_writes_one_full_transaction() {
    let mut p = proxier();
    p.exec().answer(LIST, 0, &listing(&[]));
    let report = synced(p.sync());
    assert!(report.full);
    let calls = p.exec().take_calls();
    let lines: Vec<&str> = calls.iter().map(|c| c.line.as_str()).collect();
    assert_eq!(lines, [LIST, LIST_SETS, "nft -f -"]);
    let text = applied(&calls)[0];
    assert!(text.starts_with("add table ip understudy-proxy"), "{text}");
    assert!(
        text.contains("delete chain ip understudy-proxy nat-prerouting\n"),
        "the first sync makes the base chains again: {text}"
    );
    assert!(text.contains("dnat to 10.244.0.5:8080"), "{text}");
    assert!(
        matches!(
            report.written,
            Written::Nftables {
                rewritten_services: 2,
                ..
            }
        ),
        "{report:?}"
    );

    // Later full syncs keep the base chains.
    p.exec().answer(LIST, 0, &listing(&["nat-prerouting"]));
    p.force_full_sync();
    synced(p.sync());
    let calls = p.exec().take_calls();
    let text = applied(&calls)[0];
    assert!(!text.contains("delete chain"), "{text}");
}

#[test]
fn later_syncs_are_partial_and_a_failed_transaction_forces_a_full_one() {
    let mut p = proxier();
    p.exec().answer(LIST, 0, &listing(&["nat-prerouting"]));
    synced(p.sync());
    p.exec().take_calls();

    // Nothing changed: nothing listed (the record of the last transaction
    // stands in), nothing written.
    let report = synced(p.sync());
    assert!(!report.full);
    assert!(p.exec().take_lines().is_empty());

    p.tracker
        .apply_endpoint_slice(&slice("web", &["10.244.0.5", "10.244.0.6"]));
    let report = synced(p.sync());
    assert!(!report.full);
    assert_eq!(report.changed.len(), 1);
    let calls = p.exec().take_calls();
    let lines: Vec<&str> = calls.iter().map(|c| c.line.as_str()).collect();
    assert_eq!(lines, ["nft -f -"], "a partial sync is one nft run");
    let text = applied(&calls)[0];
    assert!(!text.contains("add table"), "{text}");
    assert!(
        text.contains("numgen random mod 2 map { 0 : 10.244.0.5 . 8080 , 1 : 10.244.0.6 . 8080 }"),
        "{text}"
    );
    assert!(
        !text.contains("ns/other"),
        "only the changed service: {text}"
    );

    p.exec().answer("nft -f -", 1, "");
    p.tracker
        .apply_endpoint_slice(&slice("web", &["10.244.0.6"]));
    assert!(matches!(p.sync(), SyncOutcome::Failed { full: false, .. }));
    p.exec().answer("nft -f -", 0, "");
    p.exec().take_calls();
    let report = synced(p.sync());
    assert!(report.full, "the changes a failed sync took are lost");
    let calls = p.exec().take_calls();
    let lines: Vec<&str> = calls.iter().map(|c| c.line.as_str()).collect();
    assert_eq!(
        lines,
        [LIST, LIST_SETS, "nft -f -"],
        "after a failure: listed"
    );
    assert!(applied(&calls)[0].contains("flush map ip understudy-proxy service-ips"));
}

#[test]
fn a_vanished_table_fails_the_partial_sync_and_the_next_one_is_full() {
    let mut p = proxier();
    p.exec().answer(LIST, 0, &listing(&["nat-prerouting"]));
    synced(p.sync());
    p.exec().answer(LIST, 0, &listing(&[]));
    p.exec().fail_once(
        "nft -f -",
        1,
        "Error: No such file or directory; did you mean table 'kube-proxy' in family ip?",
    );
    p.tracker
        .apply_endpoint_slice(&slice("web", &["10.244.0.7"]));
    assert!(matches!(p.sync(), SyncOutcome::Failed { full: false, .. }));
    let report = synced(p.sync());
    assert!(report.full);
}

#[test]
fn a_listing_that_finds_no_table_makes_the_sync_full() {
    let mut p = proxier();
    p.exec().answer(LIST, 0, &listing(&["nat-prerouting"]));
    synced(p.sync());
    // The table check saw it gone: the forced full sync lists and rebuilds.
    p.exec().answer(LIST, 0, &listing(&[]));
    p.force_full_sync();
    p.exec().take_calls();
    let report = synced(p.sync());
    assert!(report.full);
    let calls = p.exec().take_calls();
    assert!(applied(&calls)[0].starts_with("add table"));
}

#[test]
fn unused_chains_are_flushed_then_deleted_at_a_later_sync() {
    let mut p = proxier();
    let stale = "service-AAAAAAAA-ns/gone/tcp/http";
    p.exec().answer(LIST, 0, &listing(&["services", stale]));
    let report = synced(p.sync());
    assert!(matches!(
        report.written,
        Written::Nftables {
            stale_chains: 1,
            ..
        }
    ));
    let calls = p.exec().take_calls();
    assert!(applied(&calls)[0].contains(&format!("flush chain ip understudy-proxy {stale}\n")));

    // Within the grace period: flushed again (it is still in the table, as
    // upstream's listing would find it), not deleted.
    let report = synced(p.sync());
    let calls = p.exec().take_calls();
    assert!(!report.full);
    let texts = applied(&calls);
    assert_eq!(texts.len(), 1, "{calls:?}");
    assert!(texts[0].contains(&format!("flush chain ip understudy-proxy {stale}\n")));
    assert!(!texts[0].contains("delete chain"), "{calls:?}");

    backend(&mut p).stale_chain_grace = Duration::ZERO;
    synced(p.sync());
    let calls = p.exec().take_calls();
    let lines: Vec<&str> = calls.iter().map(|c| c.line.as_str()).collect();
    assert_eq!(
        lines,
        ["nft -f -"],
        "the deletion opens the sync's transaction"
    );
    assert_eq!(
        calls[0].stdin.as_deref(),
        Some(format!("delete chain ip understudy-proxy {stale}\n").as_str()),
        "deleted, not flushed again"
    );
    synced(p.sync());
    assert!(p.exec().take_lines().is_empty(), "deleted once");
}

#[test]
fn a_chain_used_again_before_its_deletion_is_kept() {
    let mut p = proxier();
    p.exec().answer(LIST, 0, &listing(&["services"]));
    synced(p.sync());
    p.tracker.delete_service("ns", "web");
    let report = synced(p.sync());
    assert!(matches!(
        report.written,
        Written::Nftables {
            stale_chains: 1,
            ..
        }
    ));
    p.exec().take_calls();

    // The Service comes back before its flushed chain was deleted.
    backend(&mut p).stale_chain_grace = Duration::ZERO;
    p.tracker.apply_service(&service("web", "10.96.0.10"));
    synced(p.sync());
    let calls = p.exec().take_calls();
    let text = applied(&calls)[0];
    assert!(!text.contains("delete chain"), "{text}");
    assert!(text.contains("dnat to 10.244.0.5:8080"), "{text}");
    synced(p.sync());
    assert!(p.exec().take_lines().is_empty(), "nothing stale");
}

#[test]
fn a_failed_stale_chain_deletion_makes_the_sync_full() {
    let mut p = proxier();
    let stale = "service-AAAAAAAA-ns/gone/tcp/http";
    p.exec().answer(LIST, 0, &listing(&[stale]));
    synced(p.sync());
    p.exec().take_calls();
    backend(&mut p).stale_chain_grace = Duration::ZERO;
    p.exec()
        .fail_once("nft -f -", 1, "Error: Device or resource busy");
    let report = synced(p.sync());
    assert!(
        report.full,
        "a failed stale chain deletion makes the sync full"
    );
    assert!(matches!(
        report.written,
        Written::Nftables {
            cleanup_failed: true,
            ..
        }
    ));
    let calls = p.exec().take_calls();
    let lines: Vec<&str> = calls.iter().map(|c| c.line.as_str()).collect();
    assert_eq!(lines, ["nft -f -", LIST, LIST_SETS, "nft -f -"]);
    let texts = applied(&calls);
    assert!(texts[0].starts_with("delete chain"), "{texts:?}");
    assert!(texts[1].starts_with("add table"), "{texts:?}");
    assert!(
        texts[1].contains(&format!("flush chain ip understudy-proxy {stale}")),
        "still there: flushed and noted again"
    );
}

#[test]
fn the_table_check_wants_the_services_jump() {
    let p = proxier();
    let check = "nft --terse list chain ip understudy-proxy nat-prerouting";
    p.exec().answer(
        check,
        0,
        "table ip understudy-proxy {\n\tchain nat-prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tjump services\n\t}\n}\n",
    );
    assert!(p.check_intact().unwrap());
    p.exec().answer(
        check,
        0,
        "table ip understudy-proxy {\n\tchain nat-prerouting {\n\t}\n}\n",
    );
    assert!(!p.check_intact().unwrap(), "flushed");
    p.exec().fail(check, 1, "Error: No such file or directory");
    assert!(!p.check_intact().unwrap(), "deleted");
    p.exec().fail(check, 1, "Error: Operation not permitted");
    assert!(p.check_intact().is_err());
}

#[test]
fn cleanup_deletes_our_tables_in_both_families_and_our_iptables_chains() {
    let fake = FakeExec::default();
    fake.answer("iptables -w 5 -t", 1, "");
    fake.answer("ip6tables -w 5 -t", 1, "");
    fake.answer(
        "nft list tables",
        0,
        "table ip filter\ntable ip understudy-proxy\ntable ip kube-proxy\ntable ip6 understudy-proxy\n",
    );
    let removed = cleanup(&fake, None).unwrap();
    assert_eq!(
        removed,
        [
            "nftables ip understudy-proxy",
            "nftables ip6 understudy-proxy"
        ]
    );
    let calls = fake.take_calls();
    let apply = calls.iter().find(|c| c.line == "nft -f -").unwrap();
    assert_eq!(
        apply.stdin.as_deref(),
        Some("delete table ip understudy-proxy\ndelete table ip6 understudy-proxy\n")
    );
    assert!(calls.iter().any(|c| c.line.starts_with("iptables-save")));
    assert!(
        calls.iter().any(|c| c.line.starts_with("ip6tables-save")),
        "IPv6's chains are looked for too"
    );

    // Starting in one mode removes the other's only.
    let fake = FakeExec::default();
    fake.answer("nft list tables", 0, "table ip understudy-proxy\n");
    cleanup_other_mode(crate::config::ProxyMode::Iptables, &fake, None).unwrap();
    assert!(fake.take_lines().iter().all(|l| l.starts_with("nft")));
    let fake = FakeExec::default();
    fake.answer("iptables -w 5 -t", 1, "");
    fake.answer("ip6tables -w 5 -t", 1, "");
    cleanup_other_mode(crate::config::ProxyMode::Nftables, &fake, None).unwrap();
    assert!(
        (fake.take_lines().iter()).all(|l| l.starts_with("iptables") || l.starts_with("ip6tables"))
    );
}

#[test]
fn the_kernel_must_be_5_13_or_later() {
    use super::nftables_backend::check_kernel;
    assert!(check_kernel("6.1.0-18-amd64\n").is_ok());
    assert!(check_kernel("5.13.0").is_ok());
    let old = check_kernel("5.10.0-28-amd64").unwrap_err();
    assert!(old.contains("requires kernel 5.13 or later"), "{old}");
    assert!(check_kernel("").unwrap_err().contains("could not check"));
}

#[test]
fn service_cidrs_of_the_family_reach_the_next_full_sync() {
    let mut p = proxier();
    p.exec().answer(LIST, 0, &listing(&[]));
    p.set_service_cidrs(&[
        "10.96.0.0/16".parse().unwrap(),
        "fd00:96::/112".parse().unwrap(),
    ]);
    synced(p.sync());
    let calls = p.exec().take_calls();
    assert!(
        applied(&calls)[0].contains(
            "ip daddr { 10.96.0.0/16 } drop comment \"Drop traffic to unallocated ClusterIPs\""
        ),
        "{calls:?}"
    );
    assert!(!applied(&calls)[0].contains("fd00"));
}
