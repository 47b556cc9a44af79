//! The data-path checks of tests/proxy_datapath.rs against upstream
//! kube-proxy v1.37.2 in IPVS mode (the lab's, a process in each real
//! node's namespaces), wherever this kernel has IPVS. Without IPVS
//! kube-proxy fails at start-up (no fallback to iptables since it went),
//! as ours refuses (tests/proxy_datapath_ipvs.rs).

use understudy_e2e::chart::ProxyMode;
use understudy_e2e::datapath::{self, Proxy};

understudy_e2e::datapath_tests!(Proxy::KubeProxy, ProxyMode::Ipvs);

#[tokio::test(flavor = "multi_thread")]
async fn without_ipvs_kube_proxy_fails_at_start_up() {
    let Some(cluster) = datapath::refusal_cluster(Proxy::KubeProxy) else {
        return;
    };
    datapath::ipvs_refused(cluster, Proxy::KubeProxy).await;
}
