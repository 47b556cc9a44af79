//! understudy-controllers: Understudy's stand-in for kube-controller-manager.
//!
//! For now the binary runs the shared component life (logs, /metrics and health
//! endpoints, leader election, graceful shutdown) with no work of its own yet.

use std::process::ExitCode;

use clap::Parser;
use understudy_component_base::{CommonArgs, Component, component};

const COMPONENT: Component = Component {
    name: "understudy-controllers",
    default_port: 10357,
    elects_leader: true,
};

#[derive(Parser, Debug)]
#[command(
    name = "understudy-controllers",
    version,
    about = "Understudy's stand-in for kube-controller-manager"
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    component::main(COMPONENT, args.common, |ctx| async move {
        tracing::info!(identity = %ctx.identity, "running; no work implemented yet");
        ctx.health.set("apiserver-connection", true);
        ctx.shutdown.cancelled().await;
        Ok(())
    })
}
