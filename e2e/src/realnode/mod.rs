//! Real nodes in the lab: upstream kubelet + containerd + runc + CNI plugins
//! (Debian's packages), each node in its own network namespace and private
//! mount namespace, registered with the lab's apiserver under its own node
//! identity. Pods there really run, and what they write into netfilter stays
//! in the node's namespace. Notes on this machine's quirks:
//! shared/realnode/RECIPE.md.

pub mod config;
pub mod forward;
pub mod network;
pub mod plan;
mod teardown;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::certs::{NodeIdentity, Pki};
use crate::controlplane::{LabError, Starter};
use crate::images::{self, BuiltImage};
use crate::kubeconfig;
use crate::probe::wait_for;

pub use plan::{LabNetwork, NodePlan};
pub use teardown::{leftovers, teardown};

/// What the lab records of its real nodes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RealNodes {
    pub network: LabNetwork,
    pub count: usize,
}

impl RealNodes {
    pub fn nodes(&self) -> Vec<NodePlan> {
        (0..self.count).map(|i| self.network.node(i)).collect()
    }
}

/// Label every real node carries (kwok's nodes carry `type: kwok`), and the
/// key of its `NoSchedule` taint: only pods that tolerate it run there.
pub const REAL_NODE_LABEL: &str = "understudy.dev/real-node";

#[derive(Debug, thiserror::Error)]
pub enum RealNodeError {
    #[error("`{command}` failed: {reason}")]
    Command { command: String, reason: String },
    #[error("{0}")]
    Io(String),
    #[error(
        "real nodes need {0}; install the lab's packages with `make deps` (e2e/scripts/install-packages.sh)"
    )]
    MissingTool(String),
    #[error("real nodes need root (network and mount namespaces, cgroups)")]
    NotRoot,
    #[error("all {0} real-node slots of this machine are taken; take a lab down first")]
    NoSlot(u8),
}

/// The host programs a real node runs from.
const TOOLS: &[&str] = &[
    "/usr/bin/containerd",
    "/usr/bin/containerd-shim-runc-v2",
    "/usr/sbin/runc",
    "/usr/bin/ctr",
    "/usr/lib/cni/bridge",
    "/usr/lib/cni/host-local",
    "/usr/lib/cni/loopback",
    "/usr/lib/cni/portmap",
    "/usr/bin/nsenter",
    "/usr/bin/unshare",
];

pub fn check_host() -> Result<(), RealNodeError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(RealNodeError::NotRoot);
    }
    for tool in TOOLS {
        if !Path::new(tool).exists() {
            return Err(RealNodeError::MissingTool((*tool).into()));
        }
    }
    Ok(())
}

/// Takes the first free slot: its directory is made with `mkdir`, which only
/// one of two racing labs can win.
pub fn allocate(state_dir: &Path) -> Result<LabNetwork, RealNodeError> {
    std::fs::create_dir_all(plan::SLOTS_DIR)
        .map_err(|e| RealNodeError::Io(format!("creating {}: {e}", plan::SLOTS_DIR)))?;
    for slot in 0..plan::MAX_SLOTS {
        let net = LabNetwork { slot };
        // A slot whose lab is gone (its state directory removed without
        // `down`, say) is cleaned and taken again.
        if net.dir().exists() && stale(&net) {
            teardown(&RealNodes {
                network: net.clone(),
                count: plan::MAX_NODES,
            });
        }
        match std::fs::create_dir(net.dir()) {
            Ok(()) => {
                let owner = net.dir().join("owner");
                std::fs::write(&owner, state_dir.display().to_string())
                    .map_err(|e| RealNodeError::Io(format!("writing {}: {e}", owner.display())))?;
                return Ok(net);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(RealNodeError::Io(format!(
                    "creating {}: {e}",
                    net.dir().display()
                )));
            }
        }
    }
    Err(RealNodeError::NoSlot(plan::MAX_SLOTS))
}

fn stale(net: &LabNetwork) -> bool {
    match std::fs::read_to_string(net.dir().join("owner")) {
        Ok(owner) => !Path::new(owner.trim())
            .join(crate::state::STATE_FILE)
            .exists(),
        // Being written by a lab that is starting right now.
        Err(_) => false,
    }
}

/// The identities the lab's PKI must hold for these nodes.
pub fn identities(nodes: &RealNodes) -> Vec<NodeIdentity> {
    nodes
        .nodes()
        .iter()
        .map(|n| NodeIdentity {
            name: n.name(),
            ip: n.ip(),
        })
        .collect()
}

/// Where a lab's images are, and which of them every real node gets.
pub struct NodeImages {
    pub pause: BuiltImage,
    pub imported: Vec<BuiltImage>,
}

/// Builds the images every real node needs from the lab's binaries: the
/// sandbox and the test server, and the components' own when they run as pods.
pub fn build_images(
    components_dir: &Path,
    out_dir: &Path,
    with_components: bool,
) -> Result<NodeImages, LabError> {
    let err = |e: images::ImageError| LabError::Io(format!("building images: {e}"));
    let pause = images::build_pause(components_dir, out_dir).map_err(err)?;
    let mut imported = vec![
        pause.clone(),
        images::build_testserver(components_dir, out_dir).map_err(err)?,
    ];
    if with_components {
        imported.push(images::build_understudy(components_dir, out_dir).map_err(err)?);
    }
    Ok(NodeImages { imported, pause })
}

/// Everything a real node's start needs from the lab.
pub struct StartContext<'a> {
    /// The lab's admin client.
    pub client: &'a kube::Client,
    pub pki: &'a Pki,
    pub apiserver_port: u16,
    pub cluster_name: &'a str,
    pub lab_binary: &'a Path,
    pub images: &'a NodeImages,
    pub cluster_cidr: String,
    pub proxy_mode: crate::chart::ProxyMode,
    pub kubelet_args: &'a [String],
    /// Which proxy runs on each node as a process of the lab.
    pub node_proxy: NodeProxy,
}

/// The proxy a real node runs as a process in its namespaces (the node's
/// netfilter, never the host's), or none when the chart's DaemonSet serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeProxy {
    None,
    /// Upstream kube-proxy from the toolchain.
    KubeProxy,
    /// understudy-proxy, this binary, with kube-proxy's configuration file.
    Understudy(PathBuf),
}

impl NodeProxy {
    /// What a lab runs on its real nodes: kube-proxy unless understudy-proxy
    /// replaces it — the chart's DaemonSet when the chart's understudies are
    /// started, else (processes) understudy-proxy from `components_dir` as a
    /// process; a chart lab that starts no understudies keeps kube-proxy.
    pub fn for_lab(
        proxy_replaced: bool,
        backend: crate::chart::Backend,
        start_understudies: bool,
        components_dir: &Path,
    ) -> Self {
        match (proxy_replaced, backend) {
            (false, _) => Self::KubeProxy,
            (true, crate::chart::Backend::Chart) if start_understudies => Self::None,
            (true, crate::chart::Backend::Chart) => Self::KubeProxy,
            (true, crate::chart::Backend::Processes) => {
                Self::Understudy(components_dir.join("understudy-proxy"))
            }
        }
    }

    /// The lab's process name of the proxy on `node`, if it runs one.
    pub fn process_name(&self, node: &NodePlan) -> Option<String> {
        let program = match self {
            Self::None => return None,
            Self::KubeProxy => "kube-proxy",
            Self::Understudy(_) => "understudy-proxy",
        };
        Some(format!("{program}/{}", node.name()))
    }
}

/// Brings the real nodes up and waits until each is Ready. Every process goes
/// into the lab's state as it starts, so a failure halfway is cleaned by `down`.
pub(crate) async fn start(
    s: &mut Starter<'_>,
    nodes: &RealNodes,
    ctx: &StartContext<'_>,
) -> Result<(), LabError> {
    let err = |e: RealNodeError| LabError::Io(e.to_string());
    let plans = nodes.nodes();
    network::create_lab_network(&nodes.network).map_err(err)?;
    for node in &plans {
        network::create_node_network(&nodes.network, node).map_err(err)?;
    }
    network::route_pod_ranges(&nodes.network, &plans).map_err(err)?;
    let client = ctx.client.clone();
    publish_apiserver_endpoints(&client, &plans, ctx.apiserver_port).await?;
    let mut kubelets = vec![];
    for node in &plans {
        kubelets.push(start_node(s, node, ctx).await?);
    }
    let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    for (node, kubelet) in plans.iter().zip(&kubelets) {
        let name = node.name();
        let what = format!("real node {name} to be Ready");
        wait_for(&what, Duration::from_secs(120), Some(kubelet), || {
            let api = api.clone();
            let name = name.clone();
            async move {
                match api.get_opt(&name).await {
                    Ok(Some(n)) => Ok(crate::wait::node_is_ready(&n)),
                    Ok(None) => Ok(false),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await?;
    }
    Ok(())
}

/// The `kubernetes` Service's endpoints: every real node's relay. The lab's
/// apiserver listens on loopback only (its own endpoint reconciler is off),
/// so the nodes' relays stand in for it; kube-controller-manager's mirroring
/// controller makes the EndpointSlice a proxy reads.
async fn publish_apiserver_endpoints(
    client: &kube::Client,
    nodes: &[NodePlan],
    port: u16,
) -> Result<(), LabError> {
    use k8s_openapi::api::core::v1::Endpoints;
    let addresses: Vec<_> = nodes
        .iter()
        .map(|n| serde_json::json!({"ip": n.ip().to_string()}))
        .collect();
    let api: kube::Api<Endpoints> = kube::Api::namespaced(client.clone(), "default");
    api.patch(
        "kubernetes",
        &kube::api::PatchParams::apply("understudy-lab").force(),
        &kube::api::Patch::Apply(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "subsets": [{
                "addresses": addresses,
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            }],
        })),
    )
    .await
    .map_err(|e| LabError::Api(format!("publishing the apiserver's endpoints: {e}")))?;
    Ok(())
}

fn prepare_dirs(node: &NodePlan, paths: &config::NodePaths) -> Result<(), RealNodeError> {
    for dir in [
        paths.dir.join("containerd"),
        paths.cni_conf_dir(),
        paths.kubelet_dir(),
        paths.mount_ns_dir(),
        paths.var_log(),
    ] {
        std::fs::create_dir_all(&dir)
            .map_err(|e| RealNodeError::Io(format!("creating {}: {e}", dir.display())))?;
    }
    teardown::create_cgroup_root(&node.cgroup_root())
}

fn write_file(path: PathBuf, text: String) -> Result<(), LabError> {
    std::fs::write(&path, text)
        .map_err(|e| LabError::Io(format!("writing {}: {e}", path.display())))
}

/// A persistent private mount namespace for the node (kept by a bind mount of
/// its nsfs file), where containerd, the kubelet and every pod mount what they
/// mount: none of it reaches the host's mount table.
fn create_mount_namespace(paths: &config::NodePaths) -> Result<(), RealNodeError> {
    let dir = paths.mount_ns_dir().display().to_string();
    network::run("mount", &["--bind", &dir, &dir])?;
    network::run("mount", &["--make-private", &dir])?;
    let file = paths.mount_ns();
    std::fs::write(&file, b"")
        .map_err(|e| RealNodeError::Io(format!("creating {}: {e}", file.display())))?;
    let file = file.display().to_string();
    network::run(
        "unshare",
        &[&format!("--mount={file}"), "--propagation", "slave", "true"],
    )?;
    network::run(
        "nsenter",
        &[
            &format!("--mount={file}"),
            "--",
            "mount",
            "--bind",
            &paths.var_log().display().to_string(),
            "/var/log",
        ],
    )
    .map(drop)
}

/// `nsenter` into the node's mount and network namespaces, then `program`.
fn in_node(
    paths: &config::NodePaths,
    node: &NodePlan,
    program: &str,
    args: Vec<String>,
) -> Vec<String> {
    let mut all = vec![
        format!("--mount={}", paths.mount_ns().display()),
        format!("--net=/run/netns/{}", node.netns()),
        "--".into(),
        program.into(),
    ];
    all.extend(args);
    all
}

async fn start_node(
    s: &mut Starter<'_>,
    node: &NodePlan,
    ctx: &StartContext<'_>,
) -> Result<crate::process::ProcessRecord, LabError> {
    let err = |e: RealNodeError| LabError::Io(e.to_string());
    let name = node.name();
    let paths = config::NodePaths { dir: node.dir() };
    prepare_dirs(node, &paths).map_err(err)?;
    write_file(
        paths.containerd_config(),
        config::containerd_toml(&paths, &ctx.images.pause.reference),
    )?;
    write_file(
        paths.cni_conf_dir().join("10-understudy-lab.conflist"),
        config::cni_conflist(&paths, node),
    )?;
    let pki = ctx.pki;
    let serving_cert = pki.kubelet_serving_cert(&name);
    let serving_key = pki.kubelet_serving_key(&name);
    write_file(
        paths.kubelet_config(),
        config::kubelet_yaml(
            &paths,
            node,
            &config::KubeletFiles {
                client_ca: &pki.ca_cert(),
                serving_cert: &serving_cert,
                serving_key: &serving_key,
            },
        ),
    )?;
    // Inside the node, the apiserver is on the node's own loopback, where the
    // relay below listens.
    kubeconfig::write_for(
        &paths.kubelet_kubeconfig(),
        ctx.cluster_name,
        &format!("https://127.0.0.1:{}", ctx.apiserver_port),
        &pki.ca_cert(),
        &format!("system:node:{name}"),
        (&pki.node_client_cert(&name), &pki.node_client_key(&name)),
    )
    .map_err(|e| LabError::Io(format!("writing the kubelet's kubeconfig: {e}")))?;
    create_mount_namespace(&paths).map_err(err)?;

    let nsenter = Path::new("/usr/bin/nsenter");
    let containerd = s.spawn(
        &format!("containerd/{name}"),
        nsenter,
        in_node(
            &paths,
            node,
            "/usr/bin/containerd",
            vec![format!("--config={}", paths.containerd_config().display())],
        ),
    )?;
    let socket = paths.containerd_socket();
    wait_for(
        &format!("containerd of {name} to listen"),
        Duration::from_secs(30),
        Some(&containerd),
        || {
            let socket = socket.clone();
            async move { Ok(socket.exists()) }
        },
    )
    .await?;
    for image in &ctx.images.imported {
        import(&socket, image).map_err(err)?;
    }

    let port = ctx.apiserver_port;
    s.spawn(
        &format!("apiserver-relay/{name}"),
        ctx.lab_binary,
        vec![
            "relay".into(),
            format!("--netns=/run/netns/{}", node.netns()),
            format!("--listen=127.0.0.1:{port}"),
            // Pods reach the apiserver through the `kubernetes` Service, whose
            // endpoints are the nodes' addresses on this port.
            format!("--listen={}:{port}", node.ip()),
            format!("--to=127.0.0.1:{port}"),
        ],
    )?;

    let mut kubelet_args = vec![
        format!("--config={}", paths.kubelet_config().display()),
        format!("--kubeconfig={}", paths.kubelet_kubeconfig().display()),
        format!("--root-dir={}", paths.kubelet_dir().display()),
        format!("--hostname-override={name}"),
        format!("--node-ip={}", node.ip()),
        format!("--node-labels={REAL_NODE_LABEL}=true"),
        "--v=1".into(),
    ];
    kubelet_args.extend(ctx.kubelet_args.iter().cloned());
    let kubelet = s.spawn(
        &format!("kubelet/{name}"),
        nsenter,
        in_node(
            &paths,
            node,
            &s.toolchain_bin("kubelet").display().to_string(),
            kubelet_args,
        ),
    )?;
    s.probe(&kubelet.name, format!("http://{}:10248/healthz", node.ip()));
    start_node_proxy(s, node, ctx).await?;
    Ok(kubelet)
}

/// Where kube-proxy reaches the apiserver from, and with what.
struct KubeProxySetup<'a> {
    cluster_name: &'a str,
    apiserver_port: u16,
    pki: &'a crate::certs::Pki,
    cluster_cidr: &'a str,
    mode: crate::chart::ProxyMode,
}

/// Writes kube-proxy's configuration and kubeconfig for `node`; returns
/// nsenter's arguments that run it (plus `extra` flags) in the node's namespaces.
fn kube_proxy_args(
    setup: &KubeProxySetup<'_>,
    node: &NodePlan,
    kube_proxy: &Path,
    extra: &[&str],
) -> Result<Vec<String>, LabError> {
    let paths = config::NodePaths { dir: node.dir() };
    let pki = setup.pki;
    write_file(
        paths.kube_proxy_config(),
        config::kube_proxy_yaml(&paths, node, setup.cluster_cidr, setup.mode),
    )?;
    kubeconfig::write_for(
        &paths.kube_proxy_kubeconfig(),
        setup.cluster_name,
        &format!("https://127.0.0.1:{}", setup.apiserver_port),
        &pki.ca_cert(),
        "kube-proxy",
        (
            &pki.client_cert(&crate::certs::KUBE_PROXY),
            &pki.client_key(&crate::certs::KUBE_PROXY),
        ),
    )
    .map_err(|e| LabError::Io(format!("writing kube-proxy's kubeconfig: {e}")))?;
    let mut args = vec![
        format!("--config={}", paths.kube_proxy_config().display()),
        "--v=1".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    Ok(in_node(
        &paths,
        node,
        &kube_proxy.display().to_string(),
        args,
    ))
}

pub(crate) const NSENTER: &str = "/usr/bin/nsenter";

/// The node's proxy as a process in its namespaces: upstream kube-proxy, or
/// understudy-proxy reading the same configuration file (it takes
/// kube-proxy's), with its health answered on the same address.
async fn start_node_proxy(
    s: &mut Starter<'_>,
    node: &NodePlan,
    ctx: &StartContext<'_>,
) -> Result<(), LabError> {
    let Some(name) = ctx.node_proxy.process_name(node) else {
        return Ok(());
    };
    let program = match &ctx.node_proxy {
        NodeProxy::Understudy(binary) => binary.clone(),
        _ => s.toolchain_bin("kube-proxy"),
    };
    let setup = KubeProxySetup {
        cluster_name: ctx.cluster_name,
        apiserver_port: ctx.apiserver_port,
        pki: ctx.pki,
        cluster_cidr: &ctx.cluster_cidr,
        mode: ctx.proxy_mode,
    };
    let args = kube_proxy_args(&setup, node, &program, &[])?;
    let proxy = s.spawn(&name, Path::new(NSENTER), args)?;
    s.probe(&proxy.name, format!("http://{}:10256/healthz", node.ip()));
    Ok(())
}

/// Upstream kube-proxy for real node `index` of a running lab, configured
/// as the lab starts it (in the lab's proxy mode), with `extra` flags, as a
/// command to run — for tests that hand a node between proxies and start,
/// stop or `--cleanup` kube-proxy themselves.
pub fn kube_proxy_command(
    state: &crate::state::ClusterState,
    index: usize,
    extra: &[&str],
) -> Result<std::process::Command, LabError> {
    let nodes = (state.real_nodes.as_ref())
        .ok_or_else(|| LabError::Io("the lab has no real nodes".into()))?;
    let pki = crate::certs::Pki {
        dir: state.state_dir.join("pki"),
    };
    let setup = KubeProxySetup {
        cluster_name: &state.name,
        apiserver_port: state.ports.get("apiserver").copied().unwrap_or_default(),
        pki: &pki,
        cluster_cidr: &nodes.network.cluster_cidr(),
        mode: state.proxy_mode,
    };
    let args = kube_proxy_args(
        &setup,
        &nodes.network.node(index),
        &state.toolchain_dir.join("kube-proxy"),
        extra,
    )?;
    let mut command = std::process::Command::new(NSENTER);
    command.args(args);
    Ok(command)
}

/// Loads an image archive into the node's containerd, in the namespace the
/// CRI plugin serves (`k8s.io`).
pub fn import(socket: &Path, image: &BuiltImage) -> Result<(), RealNodeError> {
    network::run(
        "ctr",
        &[
            "--address",
            &socket.display().to_string(),
            "--namespace",
            "k8s.io",
            "images",
            "import",
            &image.archive.display().to_string(),
        ],
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chart::Backend;

    #[test]
    fn a_node_runs_kube_proxy_unless_ours_replaces_it_as_a_process_or_the_charts_pods() {
        let dir = Path::new("/bin/dir");
        let ours = NodeProxy::Understudy(dir.join("understudy-proxy"));
        for (replaced, backend, start, want) in [
            (false, Backend::Processes, true, NodeProxy::KubeProxy),
            (false, Backend::Chart, true, NodeProxy::KubeProxy),
            (true, Backend::Processes, true, ours.clone()),
            (true, Backend::Processes, false, ours.clone()),
            (true, Backend::Chart, true, NodeProxy::None),
            (true, Backend::Chart, false, NodeProxy::KubeProxy),
        ] {
            assert_eq!(
                NodeProxy::for_lab(replaced, backend, start, dir),
                want,
                "{replaced} {backend:?} {start}"
            );
        }
        let node = LabNetwork { slot: 2 }.node(1);
        assert_eq!(
            ours.process_name(&node).as_deref(),
            Some("understudy-proxy/real-1")
        );
        assert_eq!(
            NodeProxy::KubeProxy.process_name(&node).as_deref(),
            Some("kube-proxy/real-1")
        );
        assert_eq!(NodeProxy::None.process_name(&node), None);
    }
}
