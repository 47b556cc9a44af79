//! The data-path checks of tests/proxy_datapath.rs against upstream
//! kube-proxy v1.37.2 in nftables mode (the lab's, a process in each real
//! node's namespaces): what ours must match in that mode.

use understudy_e2e::chart::ProxyMode;
use understudy_e2e::datapath::Proxy;

understudy_e2e::datapath_tests!(Proxy::KubeProxy, ProxyMode::Nftables);
