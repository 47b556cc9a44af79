//! understudy-proxy: Understudy's stand-in for kube-proxy (iptables,
//! nftables and IPVS modes).
//!
//! Reads kube-proxy's `--config` file and the familiar flags (flags win over
//! the file, as kube-proxy's do), then runs the shared component life (logs,
//! /metrics and health on 10356, graceful shutdown) around the sync loop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use understudy_component_base::{CommonArgs, Component, component};
use understudy_proxy::config::{KubeProxyConfiguration, ProxyMode};
use understudy_proxy::exec::SystemExec;
use understudy_proxy::{proxier, run};

const COMPONENT: Component = Component {
    name: "understudy-proxy",
    default_port: 10356,
    elects_leader: false,
};

#[derive(Parser, Debug)]
#[command(
    name = "understudy-proxy",
    version,
    about = "Understudy's stand-in for kube-proxy"
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// A KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Which proxy mode to use, as kube-proxy's --proxy-mode (the chart's --mode).
    #[arg(long = "mode", alias = "proxy-mode", value_enum)]
    mode: Option<Mode>,
    /// The node this proxy serves, as kube-proxy's --hostname-override
    /// (default: this host's name).
    #[arg(long)]
    hostname_override: Option<String>,
    /// The pods' CIDR range(s), comma-separated, as kube-proxy's --cluster-cidr.
    #[arg(long, value_delimiter = ',')]
    cluster_cidr: Vec<String>,
    /// Remove everything of ours from this host (iptables chains, nftables
    /// tables, IPVS virtual servers, ipsets and dummy interface), then exit.
    #[arg(long)]
    cleanup: bool,
}

/// kube-proxy's proxy modes.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Mode {
    Iptables,
    Ipvs,
    Nftables,
}

/// The file's configuration with the flags given on top.
fn configuration(args: &Args) -> Result<KubeProxyConfiguration, String> {
    let mut config = match &args.config {
        Some(path) => KubeProxyConfiguration::load(path).map_err(|e| e.to_string())?,
        None => KubeProxyConfiguration::default(),
    };
    if let Some(mode) = args.mode {
        config.mode = match mode {
            Mode::Iptables => ProxyMode::Iptables,
            Mode::Ipvs => ProxyMode::Ipvs,
            Mode::Nftables => ProxyMode::Nftables,
        };
    }
    if let Some(name) = args.hostname_override.as_deref().map(str::trim)
        && !name.is_empty()
    {
        config.hostname_override = Some(name.to_string());
    }
    if !args.cluster_cidr.is_empty() {
        config.cluster_cidrs = (args.cluster_cidr.iter())
            .filter(|c| !c.trim().is_empty())
            .map(|c| {
                c.trim()
                    .parse()
                    .map_err(|_| format!("--cluster-cidr: {c:?} is not a valid CIDR"))
            })
            .collect::<Result<_, _>>()?;
    }
    Ok(config)
}

/// As upstream: the override, else the host's name, lower-cased.
fn node_name(config: &KubeProxyConfiguration) -> String {
    config
        .hostname_override
        .clone()
        .unwrap_or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default())
        .trim()
        .to_lowercase()
}

/// The file's client and server settings where no flag set them.
fn apply_to_common(config: &KubeProxyConfiguration, common: &mut CommonArgs) {
    if common.kubeconfig.is_none() {
        common.kubeconfig = config.kubeconfig.clone();
    }
    if let Some(qps) = config.client_qps {
        common.kube_api_qps = qps;
    }
    if let Some(burst) = config.client_burst.and_then(|b| u32::try_from(b).ok()) {
        common.kube_api_burst = burst;
    }
    // One server answers health and metrics: the file's healthz address
    // (else its metrics address) places it unless --port was given.
    let from_file: Option<SocketAddr> = config.healthz_bind_address.or(config.metrics_bind_address);
    if common.port.is_none()
        && let Some(addr) = from_file
    {
        common.bind_address = addr.ip();
        common.port = Some(addr.port());
    }
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    let config = match configuration(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("understudy-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.cleanup {
        let ipvs = match proxier::ipvs_backend::open_for_cleanup() {
            Ok(ipvs) => ipvs,
            Err(e) => {
                eprintln!("understudy-proxy: cleanup: IPVS: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut ipvs = ipvs;
        let ipvs_ref = ipvs
            .as_mut()
            .map(|i| i as &mut dyn understudy_proxy::ipvs::Ipvs);
        return match proxier::cleanup(SystemExec::default(), ipvs_ref) {
            Ok(deleted) => {
                for what in &deleted {
                    println!("removed {what}");
                }
                println!("removed {} objects of ours", deleted.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("understudy-proxy: cleanup: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // Before anything is touched (upstream fails the same way since its
    // fallback to the iptables mode went): a kernel without IPVS, or an old
    // ipset, ends the process with what is missing.
    if config.mode == ProxyMode::Ipvs
        && let Err(e) = proxier::ipvs_backend::preflight(SystemExec::default())
    {
        eprintln!("understudy-proxy: can't use the IPVS proxier: {e}");
        return ExitCode::FAILURE;
    }
    apply_to_common(&config, &mut args.common);
    let node = node_name(&config);
    component::main(COMPONENT, args.common, move |ctx| {
        run::run(ctx, config, node)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::parse_from(std::iter::once("understudy-proxy").chain(list.iter().copied()))
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("us-proxy-main-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.yaml");
        std::fs::write(
            &file,
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
             hostnameOverride: from-file\nclusterCIDR: 10.0.0.0/8\nhealthzBindAddress: 127.0.0.1:10256\n",
        )
        .unwrap();
        let config_flag = format!("--config={}", file.display());
        let from_file = configuration(&args(&[&config_flag])).unwrap();
        assert_eq!(node_name(&from_file), "from-file");
        let flagged = configuration(&args(&[
            &config_flag,
            "--hostname-override=Real-0",
            "--cluster-cidr=10.244.0.0/16",
            "--proxy-mode=iptables",
        ]))
        .unwrap();
        assert_eq!(node_name(&flagged), "real-0");
        assert_eq!(
            flagged.cluster_cidrs,
            vec!["10.244.0.0/16".parse().unwrap()]
        );

        let mut common = args(&[]).common;
        apply_to_common(&from_file, &mut common);
        assert_eq!(common.port, Some(10256));
        let mut common = args(&["--port=10356"]).common;
        apply_to_common(&from_file, &mut common);
        assert_eq!(common.port, Some(10356), "the flag wins");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn every_mode_is_accepted() {
        assert_eq!(
            configuration(&args(&["--mode=ipvs"])).unwrap().mode,
            ProxyMode::Ipvs
        );
        assert_eq!(
            configuration(&args(&["--proxy-mode=nftables"]))
                .unwrap()
                .mode,
            ProxyMode::Nftables
        );
        assert!(configuration(&args(&["--cluster-cidr=nonsense"])).is_err());
    }
}
