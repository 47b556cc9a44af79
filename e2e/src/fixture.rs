//! Fixtures for the e2e suite: one cluster per test binary (a local control
//! plane started through `understudy-lab`, or an existing cluster named by
//! `UNDERSTUDY_E2E_KUBECONFIG`), and one namespace per test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};

use crate::chart::Backend;
use crate::nodes::{E2E_LABEL, NodeTemplate};
use crate::state::ClusterState;
use crate::wait;

/// Env var naming a kubeconfig of an existing cluster to run against instead.
pub const EXTERNAL_KUBECONFIG: &str = "UNDERSTUDY_E2E_KUBECONFIG";
/// Env var choosing how the lab runs the understudies a test binary asks
/// for: `chart` (the default: the chart's pods on a real node) or `processes`.
pub const BACKEND_ENV: &str = "UNDERSTUDY_E2E_BACKEND";

/// The cluster a test binary runs against. The same spec serves either
/// backend: with the chart, the lab adds the real node the pods run on.
#[derive(Clone, Copy, Debug)]
pub struct ClusterSpec {
    pub nodes: usize,
    /// `understudy-lab up --understudies` value: which upstream parts are off.
    pub understudies: &'static str,
    /// Whether the lab also starts those understudies.
    pub start_understudies: bool,
    /// Real nodes (kubelet + containerd) beside the kwok ones.
    pub real_nodes: usize,
    /// Run the lab's kwok for the fake nodes (false: the test runs its own,
    /// and `nodes` must be 0).
    pub kwok: bool,
    /// A backend the tests need whatever `UNDERSTUDY_E2E_BACKEND` says (the
    /// chart's own tests); `None` follows the variable.
    pub backend: Option<Backend>,
    /// The mode of the real nodes' proxies (ours or kube-proxy).
    pub proxy_mode: crate::chart::ProxyMode,
}

#[derive(Debug)]
pub struct Cluster {
    pub kubeconfig: PathBuf,
    /// The lab's state when we started it; `None` for an external cluster.
    pub local: Option<ClusterState>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

impl Cluster {
    /// The test binary's cluster, started on first use. It is stopped and its
    /// state removed by a watchdog when the test process exits.
    pub fn shared(spec: ClusterSpec) -> &'static Cluster {
        CLUSTER.get_or_init(|| match std::env::var_os(EXTERNAL_KUBECONFIG) {
            Some(path) => {
                let kubeconfig = PathBuf::from(path);
                // Async from a sync initialiser: a thread with its own runtime,
                // as the test's may be single-threaded.
                let nodes_kubeconfig = kubeconfig.clone();
                std::thread::spawn(move || add_fake_nodes(&nodes_kubeconfig, spec.nodes))
                    .join()
                    .expect("adding fake nodes")
                    .unwrap_or_else(|e| panic!("adding the suite's fake nodes: {e}"));
                Cluster {
                    kubeconfig,
                    local: None,
                }
            }
            None => start_local(spec)
                .unwrap_or_else(|e| panic!("starting the local control plane: {e}")),
        })
    }

    pub async fn client(&self) -> Client {
        wait::client_for(&self.kubeconfig)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test cluster: {e}"))
    }

    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }
}

/// Gives an external cluster the fake nodes a lab would have (`kwok-node-<i>`,
/// labelled [`E2E_LABEL`]), for `understudy-lab fake-nodes` to run, and waits
/// until they are Ready. Nodes already there (of an earlier test binary) stay.
fn add_fake_nodes(kubeconfig: &Path, count: usize) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let client = wait::client_for(kubeconfig)
            .await
            .map_err(|e| e.to_string())?;
        let mut template = NodeTemplate::default();
        template
            .extra_labels
            .insert(E2E_LABEL.to_string(), "true".to_string());
        crate::controlplane::create_nodes(&client, &template, count)
            .await
            .map_err(|e| e.to_string())?;
        wait_fake_nodes_ready(&client, count, Duration::from_secs(120))
            .await
            .map_err(|e| {
                format!("{e} (is kwok running against the cluster? `understudy-lab fake-nodes`)")
            })
    })
}

/// At least `count` of the suite's fake nodes Ready: other nodes of the
/// cluster (its own workers) do not count.
async fn wait_fake_nodes_ready(
    client: &Client,
    count: usize,
    timeout: Duration,
) -> Result<(), wait::WaitError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let params = ListParams::default().labels(&format!("{E2E_LABEL}=true"));
    wait::until("the suite's fake nodes to be Ready", timeout, || {
        let (nodes, params) = (nodes.clone(), params.clone());
        async move {
            let list = nodes.list(&params).await.map_err(|e| e.to_string())?;
            let ready = list.items.iter().filter(|n| wait::node_is_ready(n)).count();
            Ok((ready >= count).then_some(()))
        }
    })
    .await
}

/// Directory of the workspace's binaries (`target/<profile>`), from the test
/// executable's own path (`target/<profile>/deps/<test>-<hash>`).
pub fn binaries_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("UNDERSTUDY_BIN_DIR") {
        return dir.into();
    }
    let exe = std::env::current_exe().expect("current test executable");
    let deps = exe.parent().expect("executable directory");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("profile directory").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// The backend a local cluster runs its understudies with.
pub fn backend(spec: &ClusterSpec) -> Result<Backend, String> {
    if let Some(backend) = spec.backend {
        return Ok(backend);
    }
    if !spec.start_understudies || spec.understudies == "none" {
        return Ok(Backend::Processes);
    }
    match std::env::var(BACKEND_ENV) {
        Ok(value) if !value.is_empty() => value.parse().map_err(|e| format!("{BACKEND_ENV}: {e}")),
        _ => Ok(Backend::Chart),
    }
}

fn start_local(spec: ClusterSpec) -> Result<Cluster, String> {
    let backend = backend(&spec)?;
    let real_nodes = match backend {
        Backend::Chart => spec.real_nodes.max(1),
        Backend::Processes => spec.real_nodes,
    };
    let bin_dir = binaries_dir();
    let lab = bin_dir.join("understudy-lab");
    let pid = std::process::id();
    let test_name = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "e2e".into());
    let state_dir = std::env::temp_dir()
        .join("understudy-e2e")
        .join(format!("{test_name}-{pid}"));
    let mut cmd = Command::new(&lab);
    cmd.arg("up")
        .arg(format!("--name=e2e-{pid}"))
        .arg(format!("--state-dir={}", state_dir.display()))
        .arg(format!("--nodes={}", spec.nodes))
        .arg(format!("--real-nodes={real_nodes}"))
        .arg(format!("--backend={backend}"))
        .arg(format!("--proxy-mode={}", spec.proxy_mode))
        .arg(format!("--understudies={}", spec.understudies))
        .arg(format!("--components-dir={}", bin_dir.display()))
        .arg(format!("--stop-with-pid={pid}"))
        .arg("--quiet");
    if !spec.start_understudies {
        cmd.arg("--no-start-understudies");
    }
    if !spec.kwok {
        cmd.arg("--no-kwok");
    }
    let output = cmd.output().map_err(|e| {
        format!(
            "running {}: {e} (build it with `cargo build --workspace`)",
            lab.display()
        )
    })?;
    if !output.status.success() {
        return Err(format!(
            "understudy-lab up failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let state = ClusterState::load(&state_dir)
        .map_err(|e| e.to_string())?
        .ok_or("understudy-lab up left no state")?;
    Ok(Cluster {
        kubeconfig: state.kubeconfig.clone(),
        local: Some(state),
    })
}

/// A namespace of one test, deleted when dropped.
pub struct TestNamespace {
    pub name: String,
    kubeconfig: PathBuf,
}

impl TestNamespace {
    /// Creates `e2e-<prefix>-<random>` and waits for its default ServiceAccount,
    /// without which the ServiceAccount admission plugin rejects pods.
    pub async fn create(cluster: &Cluster, client: &Client, prefix: &str) -> Self {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("e2e-{prefix}-")),
                labels: Some([(E2E_LABEL.to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating a test namespace: {e}"));
        let name = created.metadata.name.expect("generated namespace name");
        wait::accepts_pods(client, &name, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("default ServiceAccount in {name}: {e}"));
        Self {
            name,
            kubeconfig: cluster.kubeconfig.clone(),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be single-threaded and
        // busy dropping us: delete from a thread with its own runtime and client.
        let name = self.name.clone();
        let kubeconfig = self.kubeconfig.clone();
        let _ = std::thread::spawn(move || delete_namespace(&kubeconfig, &name)).join();
    }
}

fn delete_namespace(kubeconfig: &Path, name: &str) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        if let Ok(client) = wait::client_for(kubeconfig).await {
            let namespaces: Api<Namespace> = Api::all(client);
            if let Err(e) = namespaces.delete(name, &DeleteParams::background()).await {
                eprintln!("deleting test namespace {name}: {e}");
            }
        }
    });
}
