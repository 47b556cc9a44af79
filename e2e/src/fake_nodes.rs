//! The simulated kubelet of the suite's fake nodes: kwok, managing only nodes
//! annotated [`KWOK_ANNOTATION`]`=fake`, with the lab's stage files.
//!
//! The lab runs it beside its control plane; `understudy-lab fake-nodes` runs
//! the same kwok on this host against any other cluster (how `make e2e` gives
//! a kind cluster the fake nodes the scheduler and controller tests create),
//! so the suite sees the same fake nodes whatever the cluster.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams};

use crate::kwok_stages;
use crate::nodes::{E2E_LABEL, KWOK_ANNOTATION};
use crate::toolchain::Toolchain;

/// kwok's command line for a cluster: the stages are written into
/// `stages_dir`, its health server listens on `127.0.0.1:health_port`.
pub fn kwok_args(
    toolchain: &Toolchain,
    kubeconfig: &Path,
    node_lease_seconds: u32,
    health_port: u16,
    stages_dir: &Path,
) -> Result<Vec<String>, String> {
    let stages = toolchain.kwok_stages();
    if stages.is_empty() {
        return Err(format!(
            "no kwok stage files in {}: run `make toolchain`",
            toolchain.bin_dir.join("../kwok-stages").display()
        ));
    }
    let stages =
        kwok_stages::write(&stages, stages_dir).map_err(|e| format!("kwok stages: {e}"))?;
    let mut args = vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--manage-all-nodes=false".into(),
        format!("--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake"),
        format!("--node-lease-duration-seconds={node_lease_seconds}"),
        format!("--server-address=127.0.0.1:{health_port}"),
        "--node-ip=10.0.0.1".into(),
    ];
    args.extend(stages.iter().map(|p| format!("--config={}", p.display())));
    Ok(args)
}

/// Runs kwok against the cluster of `kubeconfig` until this process gets
/// SIGTERM or SIGINT (then kwok is stopped, the fake nodes the suite added —
/// labelled [`E2E_LABEL`]`=true` — are deleted, kwok's files removed, and
/// this returns `Ok`), or until kwok exits on its own (an error, with its
/// last log lines).
pub async fn run(kubeconfig: &Path, node_lease_seconds: u32) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};

    let toolchain = Toolchain::locate().map_err(|e| e.to_string())?;
    let workdir = tempfile::Builder::new()
        .prefix("understudy-fake-nodes-")
        .tempdir()
        .map_err(|e| format!("a directory for kwok's files: {e}"))?;
    let port = crate::controlplane::free_port().map_err(|e| format!("a free port: {e}"))?;
    let args = kwok_args(
        &toolchain,
        kubeconfig,
        node_lease_seconds,
        port,
        &workdir.path().join("stages"),
    )?;
    let log_path = workdir.path().join("kwok.log");
    let log = std::fs::File::create(&log_path).map_err(|e| format!("kwok's log: {e}"))?;
    let mut kwok = tokio::process::Command::new(toolchain.bin("kwok"))
        .args(&args)
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", toolchain.bin("kwok").display()))?;

    let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let health = format!("http://127.0.0.1:{port}/healthz");
    tokio::select! {
        ready = wait_healthy(&health) => ready?,
        status = kwok.wait() => return Err(exited(status, &log_path)),
        _ = terminate.recv() => return stop(&mut kwok, kubeconfig).await,
        _ = interrupt.recv() => return stop(&mut kwok, kubeconfig).await,
    }
    eprintln!(
        "understudy-lab: kwok manages the nodes annotated {KWOK_ANNOTATION}=fake in the cluster of {} (until SIGTERM)",
        kubeconfig.display()
    );
    tokio::select! {
        status = kwok.wait() => Err(exited(status, &log_path)),
        _ = terminate.recv() => stop(&mut kwok, kubeconfig).await,
        _ = interrupt.recv() => stop(&mut kwok, kubeconfig).await,
    }
}

async fn wait_healthy(url: &str) -> Result<(), String> {
    let client = crate::probe::http_client();
    crate::wait::until(
        &format!("kwok healthy at {url}"),
        Duration::from_secs(60),
        || {
            let request = client.get(url).send();
            async move {
                Ok(request
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ()))
            }
        },
    )
    .await
    .map_err(|e| e.to_string())
}

async fn stop(kwok: &mut tokio::process::Child, kubeconfig: &Path) -> Result<(), String> {
    kwok.kill()
        .await
        .map_err(|e| format!("stopping kwok: {e}"))?;
    let client = crate::wait::client_for(kubeconfig)
        .await
        .map_err(|e| e.to_string())?;
    let nodes: Api<Node> = Api::all(client);
    let selector = format!("{E2E_LABEL}=true");
    let deleted = nodes
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&selector),
        )
        .await
        .map_err(|e| format!("deleting the nodes labelled {selector}: {e}"))?;
    let count = deleted.left().map_or(0, |list| list.items.len());
    eprintln!("understudy-lab: kwok stopped; deleted {count} node(s) labelled {selector}");
    Ok(())
}

fn exited(status: std::io::Result<std::process::ExitStatus>, log: &Path) -> String {
    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
    format!(
        "kwok exited ({status}); its last log lines:\n{}",
        crate::process::file_tail(log, 20)
    )
}
