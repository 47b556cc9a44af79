//! The data-path checks of tests/proxy_datapath.rs with understudy-proxy in
//! nftables mode (the chart's DaemonSet on both real nodes); the same pass
//! against kube-proxy in nftables mode (tests/proxy_datapath_nftables_upstream.rs).

use understudy_e2e::chart::ProxyMode;
use understudy_e2e::datapath::Proxy;

understudy_e2e::datapath_tests!(Proxy::Understudy, ProxyMode::Nftables);
