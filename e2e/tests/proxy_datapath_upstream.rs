//! The data-path checks of tests/proxy_datapath.rs against upstream
//! kube-proxy v1.37.2 in iptables mode (the lab's, a process in the real
//! node's namespaces): what ours must match.

use understudy_e2e::datapath::{self, Proxy};
use understudy_e2e::fixture::Cluster;

#[tokio::test(flavor = "multi_thread")]
async fn services_answer_through_kube_proxys_rules() {
    if std::env::var_os(understudy_e2e::fixture::EXTERNAL_KUBECONFIG).is_some() {
        eprintln!("skipped: the data path is checked on the lab's own real node");
        return;
    }
    let cluster = Cluster::shared(datapath::cluster_spec(Proxy::KubeProxy));
    datapath::services_answer_through_the_node(cluster, Proxy::KubeProxy).await;
}
