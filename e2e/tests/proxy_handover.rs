//! A real node handed from understudy-proxy to upstream kube-proxy and back
//! while a client on it keeps a connection open and opens new ones: its own
//! lab, since the test moves the chart's proxy DaemonSet off a node.

use understudy_e2e::chart::ProxyMode;
use understudy_e2e::datapath::{self, Proxy};
use understudy_e2e::fixture::Cluster;

#[tokio::test(flavor = "multi_thread")]
async fn handing_a_node_between_proxies_keeps_connections() {
    if std::env::var_os(understudy_e2e::fixture::EXTERNAL_KUBECONFIG).is_some() {
        eprintln!("skipped: the hand-over runs kube-proxy on the lab's own real node");
        return;
    }
    let cluster = Cluster::shared(datapath::cluster_spec(
        Proxy::Understudy,
        ProxyMode::Iptables,
    ));
    datapath::handover_keeps_connections(cluster).await;
}
