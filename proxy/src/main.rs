//! understudy-proxy: Understudy's stand-in for kube-proxy.
//!
//! For now the binary runs the shared component life (logs, /metrics and health
//! endpoints, leader election, graceful shutdown) with no work of its own yet.

use std::process::ExitCode;

use clap::Parser;
use understudy_component_base::{CommonArgs, Component, component};

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
    /// Which proxy mode to use, as kube-proxy's --proxy-mode (the chart's --mode).
    #[arg(long = "mode", alias = "proxy-mode", value_enum, default_value_t = Mode::Iptables)]
    mode: Mode,
    /// The node this proxy serves, as kube-proxy's --hostname-override
    /// (default: this host's name).
    #[arg(long)]
    hostname_override: Option<String>,
    /// The pods' CIDR range(s), comma-separated, as kube-proxy's --cluster-cidr.
    #[arg(long, value_delimiter = ',')]
    cluster_cidr: Vec<String>,
}

/// kube-proxy's proxy modes.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Mode {
    Iptables,
    Ipvs,
    Nftables,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (mode, node, cidrs) = (args.mode, args.hostname_override, args.cluster_cidr);
    component::main(COMPONENT, args.common, |ctx| async move {
        tracing::info!(
            identity = %ctx.identity,
            ?mode,
            node = node.as_deref().unwrap_or("-"),
            cluster_cidr = ?cidrs,
            "running; no rules are programmed yet"
        );
        ctx.health.set("apiserver-connection", true);
        ctx.shutdown.cancelled().await;
        Ok(())
    })
}
