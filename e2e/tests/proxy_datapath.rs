//! Real packets through understudy-proxy in iptables mode: the chart's
//! DaemonSet runs it on the lab's two real nodes in kube-proxy's place (the
//! lab starts no kube-proxy there), and Services answer through the rules it
//! writes into the nodes' network namespaces. The same checks pass against
//! upstream kube-proxy (tests/proxy_datapath_upstream.rs).

use std::time::Duration;

use understudy_e2e::chart::ProxyMode;
use understudy_e2e::datapath::Proxy;

understudy_e2e::datapath_tests!(Proxy::Understudy, ProxyMode::Iptables);

/// kube-proxy's health endpoint, as kube-proxy answers it, on the proxy's port.
#[tokio::test(flavor = "multi_thread")]
async fn healthz_and_metrics_answer_as_kube_proxys_on_10356() {
    let Some(cluster) = cluster() else { return };
    let local = cluster.local.as_ref().unwrap();
    let node_ip = local.real_nodes.as_ref().unwrap().network.node(0).ip();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let response = http
        .get(format!("http://{node_ip}:10356/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let health: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    for field in ["lastUpdated", "currentTime", "nodeEligible", "healthy"] {
        assert!(health.get(field).is_some(), "{field} missing: {health}");
    }
    assert_eq!(health["nodeEligible"], true, "{health}");
    // Dual-stack: a proxier of each family, each reported.
    assert_eq!(health["status"]["IPv4"]["healthy"], true, "{health}");
    assert_eq!(health["status"]["IPv6"]["healthy"], true, "{health}");
    let metrics = http
        .get(format!("http://{node_ip}:10356/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"}",
        "kubeproxy_sync_full_proxy_rules_duration_seconds_count",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv6\"}",
        "kubeproxy_sync_proxy_rules_iptables_total{table=\"nat\",ip_family=\"IPv4\"}",
        "kubeproxy_sync_proxy_rules_service_changes_total",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
}
