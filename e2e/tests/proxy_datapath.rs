//! Real packets through understudy-proxy: the chart's DaemonSet runs it on
//! the lab's real node in kube-proxy's place (the lab starts no kube-proxy
//! there), and Services answer through the rules it writes into the node's
//! network namespace. The same checks pass against upstream kube-proxy
//! (tests/proxy_datapath_upstream.rs).

use std::time::Duration;

use understudy_e2e::chart::ProxyMode;
use understudy_e2e::datapath::{self, Proxy};
use understudy_e2e::fixture::Cluster;

fn cluster() -> Option<&'static Cluster> {
    if std::env::var_os(understudy_e2e::fixture::EXTERNAL_KUBECONFIG).is_some() {
        eprintln!("skipped: the data path is checked on the lab's own real nodes");
        return None;
    }
    Some(Cluster::shared(datapath::cluster_spec(
        Proxy::Understudy,
        ProxyMode::Iptables,
    )))
}

#[tokio::test(flavor = "multi_thread")]
async fn services_answer_through_understudy_proxys_rules() {
    let Some(cluster) = cluster() else { return };
    datapath::services_answer_through_the_node(cluster, Proxy::Understudy).await;
}

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
    assert_eq!(health["status"]["IPv4"]["healthy"], true, "{health}");
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
        "kubeproxy_sync_proxy_rules_iptables_total{table=\"nat\",ip_family=\"IPv4\"}",
        "kubeproxy_sync_proxy_rules_service_changes_total",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn traffic_spreads_sticks_and_keeps_sources_through_understudy_proxy() {
    let Some(cluster) = cluster() else { return };
    datapath::traffic_spreads_sticks_and_keeps_sources(cluster).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn udp_follows_a_replaced_backend_through_understudy_proxy() {
    let Some(cluster) = cluster() else { return };
    datapath::udp_follows_a_replaced_backend(cluster).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taken_health_check_port_is_reported_by_understudy_proxy() {
    let Some(cluster) = cluster() else { return };
    datapath::taken_health_check_port_is_reported(cluster).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conntrack_settings_are_applied_by_understudy_proxy() {
    let Some(cluster) = cluster() else { return };
    datapath::conntrack_settings_applied(cluster).await;
}
