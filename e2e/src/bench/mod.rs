//! `understudy-bench`: each understudy against its upstream counterpart on one
//! local control plane, in one run, with the same client QPS/burst. Never a
//! pass/fail test: it prints figures and ratios.

pub mod binder;
pub mod controllers;
pub mod null_scheduler;
pub mod procstat;
pub mod promtext;
pub mod proxy;
pub mod scheduler;
pub mod write_costs;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};

/// Creates the namespace `name` and waits until it accepts pods.
pub async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    namespaces.create(&PostParams::default(), &ns).await?;
    crate::wait::accepts_pods(client, name, Duration::from_secs(60)).await?;
    Ok(())
}

/// The names of the cluster's nodes.
pub async fn node_names(client: &Client) -> anyhow::Result<Vec<String>> {
    Ok(Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .list(&kube::api::ListParams::default())
        .await?
        .items
        .iter()
        .map(kube::ResourceExt::name_any)
        .collect())
}

/// Deletes the namespace `name` and waits until it is gone, so the next
/// measurement does not share the machine with its garbage collection.
pub async fn delete_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.delete(name, &DeleteParams::background()).await?;
    crate::wait::until("namespace deleted", Duration::from_secs(1800), || async {
        Ok(namespaces
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?
            .is_none()
            .then_some(()))
    })
    .await?;
    Ok(())
}

/// Log level of the understudy under test: `warn` keeps logging out of the
/// figures; `UNDERSTUDY_BENCH_LOG_LEVEL=info` (logs under the bench's state
/// directory) is for finding out why a run went the way it did.
pub fn log_level() -> String {
    std::env::var("UNDERSTUDY_BENCH_LOG_LEVEL").unwrap_or_else(|_| "warn".into())
}

/// kube-apiserver's `apiserver_request_total` by series, WATCH excluded.
pub async fn request_counts(client: &Client) -> Option<std::collections::BTreeMap<String, f64>> {
    let request = http::Request::get("/metrics").body(Vec::new()).ok()?;
    let text = client.request_text(request).await.ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("apiserver_request_total{") && !l.contains("verb=\"WATCH\""))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_string(), value.parse().ok()?))
            })
            .collect(),
    )
}

/// With `UNDERSTUDY_BENCH_REQUESTS=1`: the requests served between two
/// snapshots, per verb/resource/subresource/code, for finding where the
/// control plane's time went.
pub fn print_request_delta(
    label: &str,
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) {
    if std::env::var_os("UNDERSTUDY_BENCH_REQUESTS").is_none() {
        return;
    }
    for (series, value) in after {
        let delta = value - before.get(series).copied().unwrap_or(0.0);
        if delta >= 1.0 {
            eprintln!("bench: {label}: requests: {delta:>8.0} {series}");
        }
    }
}

/// Each round's pace of the variant `of` over the pace of `over` in the same
/// round (rounds missing either are skipped): this machine's pace moves by
/// ±20 % between runs, so variants are compared within a round.
pub(crate) fn ratios_by_round<V: PartialEq + Copy, R>(
    rounds: &[Vec<(V, R)>],
    of: V,
    over: V,
    pace: impl Fn(&R) -> f64,
) -> Vec<f64> {
    rounds
        .iter()
        .filter_map(|round| {
            let pace_of = |want: V| round.iter().find(|(v, _)| *v == want).map(|(_, r)| pace(r));
            Some(pace_of(of)? / pace_of(over)?)
        })
        .collect()
}
