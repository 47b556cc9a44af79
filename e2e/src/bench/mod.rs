//! `understudy-bench`: each understudy against its upstream counterpart on one
//! local control plane, in one run, with the same client QPS/burst. Never a
//! pass/fail test: it prints figures and ratios.

pub mod controllers;
pub mod procstat;
pub mod promtext;
pub mod scheduler;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, PostParams};

/// Creates the namespace `name` and waits until it accepts pods.
pub async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    namespaces.create(&PostParams::default(), &ns).await?;
    crate::wait::accepts_pods(client, name, Duration::from_secs(60)).await?;
    Ok(())
}

/// Log level of the understudy under test: `warn` keeps logging out of the
/// figures; `UNDERSTUDY_BENCH_LOG_LEVEL=info` (logs under the bench's state
/// directory) is for finding out why a run went the way it did.
pub fn log_level() -> String {
    std::env::var("UNDERSTUDY_BENCH_LOG_LEVEL").unwrap_or_else(|_| "warn".into())
}
