//! `mode: ipvs` through the binary, in a network namespace made and deleted
//! here: on a kernel without IPVS (this machine's: CONFIG_IP_VS is not set)
//! the process exits non-zero naming what is missing, before it touches
//! anything — the nftables table it would remove at start-up as another
//! mode's leftover is still there afterwards.

use understudy_proxy::ipvs::system::check_this_kernel;

mod common;
use common::Netns;

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn mode_ipvs_on_a_kernel_without_ipvs_exits_naming_what_is_missing_before_touching_anything() {
    let dir = TempDir(std::env::temp_dir().join(format!("us-ipvsstart-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let config = dir.0.join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n\
         hostnameOverride: node-a\n",
    )
    .unwrap();

    let ns = Netns::add("us-ipvsstart", "refused");
    // The nftables mode's table: an IPVS proxy that started would delete it.
    let add = ns.exec(&["nft", "add", "table", "ip", "understudy-proxy"]);
    assert!(add.status.success(), "{add:?}");

    let out = ns.exec(&[
        env!("CARGO_BIN_EXE_understudy-proxy"),
        "--config",
        config.to_str().unwrap(),
        "--kubeconfig",
        "/nonexistent/kubeconfig",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    match check_this_kernel() {
        Err(missing) => {
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert_eq!(
                stderr.trim(),
                format!("understudy-proxy: can't use the IPVS proxier: {missing}")
            );
            assert!(stderr.contains("/proc/net/ip_vs is absent"), "{stderr}");
            let tables = ns.exec(&["nft", "list", "tables"]);
            assert_eq!(
                String::from_utf8_lossy(&tables.stdout).trim(),
                "table ip understudy-proxy",
                "nothing was touched"
            );
            let links = ns.exec(&["ip", "-o", "link", "show"]);
            assert!(!String::from_utf8_lossy(&links.stdout).contains("understudy-ipvs0"));
        }
        // A kernel with IPVS passes the check; without an API server the
        // proxy still cannot run.
        Ok(()) => assert!(!stderr.contains("can't use the IPVS proxier"), "{stderr}"),
    }
}
