//! understudy-scheduler: Understudy's stand-in for kube-scheduler.
//!
//! For now the binary runs the shared component life (logs, /metrics and health
//! endpoints, leader election, graceful shutdown) with no work of its own yet.

use std::process::ExitCode;

use clap::Parser;
use understudy_component_base::{CommonArgs, Component, component};

const COMPONENT: Component = Component {
    name: "understudy-scheduler",
    default_port: 10359,
    elects_leader: true,
};

#[derive(Parser, Debug)]
#[command(
    name = "understudy-scheduler",
    version,
    about = "Understudy's stand-in for kube-scheduler"
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
