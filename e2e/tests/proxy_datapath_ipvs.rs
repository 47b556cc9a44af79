//! The data-path checks of tests/proxy_datapath.rs with understudy-proxy in
//! IPVS mode (the chart's DaemonSet on both real nodes), wherever this
//! kernel has IPVS; the same pass against kube-proxy in IPVS mode
//! (tests/proxy_datapath_ipvs_upstream.rs). On a kernel without IPVS they
//! are skipped, and the proxy must refuse to start, saying what is missing.

use understudy_e2e::chart::ProxyMode;
use understudy_e2e::datapath::{self, Proxy};

understudy_e2e::datapath_tests!(Proxy::Understudy, ProxyMode::Ipvs);

#[tokio::test(flavor = "multi_thread")]
async fn without_ipvs_the_proxy_refuses_to_start_and_says_why() {
    let Some(cluster) = datapath::refusal_cluster(Proxy::Understudy) else {
        return;
    };
    datapath::ipvs_refused(cluster, Proxy::Understudy).await;
}
