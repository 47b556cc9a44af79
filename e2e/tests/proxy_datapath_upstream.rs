//! The data-path checks of tests/proxy_datapath.rs against upstream
//! kube-proxy v1.37.2 in iptables mode (the lab's, a process in the real
//! node's namespaces): what ours must match.

use understudy_e2e::chart::ProxyMode;
use understudy_e2e::datapath::{self, Proxy};
use understudy_e2e::fixture::Cluster;

fn cluster() -> Option<&'static Cluster> {
    if std::env::var_os(understudy_e2e::fixture::EXTERNAL_KUBECONFIG).is_some() {
        eprintln!("skipped: the data path is checked on the lab's own real nodes");
        return None;
    }
    Some(Cluster::shared(datapath::cluster_spec(
        Proxy::KubeProxy,
        ProxyMode::Iptables,
    )))
}

#[tokio::test(flavor = "multi_thread")]
async fn services_answer_through_kube_proxys_rules() {
    let Some(cluster) = cluster() else { return };
    datapath::services_answer_through_the_node(cluster, Proxy::KubeProxy).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn traffic_spreads_sticks_and_keeps_sources_through_kube_proxy() {
    let Some(cluster) = cluster() else { return };
    datapath::traffic_spreads_sticks_and_keeps_sources(cluster).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn udp_follows_a_replaced_backend_through_kube_proxy() {
    let Some(cluster) = cluster() else { return };
    datapath::udp_follows_a_replaced_backend(cluster).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taken_health_check_port_is_reported_by_kube_proxy() {
    let Some(cluster) = cluster() else { return };
    datapath::taken_health_check_port_is_reported(cluster).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conntrack_settings_are_applied_by_kube_proxy() {
    let Some(cluster) = cluster() else { return };
    datapath::conntrack_settings_applied(cluster).await;
}
