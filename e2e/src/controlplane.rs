//! `up`, `down` and `status` of the local control plane: etcd, kube-apiserver,
//! kube-controller-manager (with the replaced controllers off), kube-scheduler,
//! kwok and fake nodes, real nodes, then the chosen understudies — local
//! processes on loopback ports, or the Helm chart's pods on the real nodes —
//! all recorded in the state directory.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use crate::certs::{self, ADMIN, CONTROLLER_MANAGER, KUBE_PROXY, KUBELET_CLIENT, Pki, SCHEDULER};
use crate::chart::{self, Backend, ChartError};
use crate::fake_nodes;
use crate::nodes::NodeTemplate;
use crate::probe::{self, WaitError, wait_for};
use crate::process::{self, ProcessError, ProcessRecord};
use crate::realnode::{self, RealNodes};
use crate::state::{ClusterState, Probe};
use crate::toolchain::{Toolchain, ToolchainError};
use crate::understudies::{self, Understudy};
use crate::{kubeconfig, wait};

pub const KUBERNETES_VERSION: &str = "v1.37.2";
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The Services' IPv6 range: the lab's cluster is dual-stack (Services are
/// IPv4 unless they ask for IPv6), so proxies serve both families.
pub const SERVICE_CIDR_V6: &str = "fd00:10:96::/112";
const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// Namespace of the understudies' leases, as kube-system holds upstream's.
pub const COMPONENT_NAMESPACE: &str = "kube-system";
/// The apiserver's audit log, in the lab's log directory.
pub const AUDIT_LOG: &str = "audit.log";

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Toolchain(#[from] ToolchainError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Wait(#[from] WaitError),
    #[error("creating certificates: {0}")]
    Certs(#[from] certs::CertError),
    #[error("{0}")]
    Io(String),
    #[error(
        "port {port} on 127.0.0.1 is already in use; choose another with --apiserver-port or stop what holds it"
    )]
    PortInUse { port: u16 },
    #[error(
        "cluster {name:?} is partly running ({dead} not running); run `understudy-lab down --name {name}` first"
    )]
    PartlyRunning { name: String, dead: String },
    #[error(
        "the understudy binary {0} was not found; build it with `cargo build --workspace` or pass --components-dir"
    )]
    MissingComponent(PathBuf),
    #[error("talking to the new apiserver: {0}")]
    Api(String),
    #[error("the chart: {0}")]
    Chart(#[from] ChartError),
    #[error("{0}")]
    Invalid(String),
}

fn io(context: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> LabError {
    move |e| LabError::Io(format!("{context}: {e}"))
}

/// What to bring up.
#[derive(Clone, Debug)]
pub struct LabOptions {
    pub name: String,
    pub state_dir: PathBuf,
    pub nodes: usize,
    pub node_template: NodeTemplate,
    /// Upstream parts switched off in favour of understudies.
    pub replaced: BTreeSet<Understudy>,
    /// Start the replacing understudies too (tests may start their own).
    pub start_understudies: bool,
    /// Run upstream kube-scheduler for pods of `default-scheduler`.
    pub kube_scheduler: bool,
    pub apiserver_port: Option<u16>,
    /// Where the understudy binaries are; defaults to the lab binary's directory.
    pub components_dir: PathBuf,
    /// Extra flags for each understudy.
    pub understudy_args: Vec<String>,
    /// kwok's node lease duration; it renews every quarter of it. Thousands of
    /// nodes want a long one, or lease renewals swamp a small machine.
    pub node_lease_seconds: u32,
    /// Real nodes (kubelet + containerd), beside the kwok ones.
    pub real_nodes: usize,
    /// Run kwok for the fake nodes (off: a cluster whose fake nodes get their
    /// kubelet from elsewhere, as an external cluster's from `understudy-lab
    /// fake-nodes`; then `nodes` must be 0).
    pub kwok: bool,
    /// Extra flags for every real node's kubelet.
    pub kubelet_args: Vec<String>,
    /// How the understudies run: local processes, or the chart's pods on the
    /// real nodes (which needs at least one).
    pub backend: Backend,
    /// The mode of the real nodes' proxies, ours or kube-proxy.
    pub proxy_mode: crate::chart::ProxyMode,
}

/// A free loopback port for a component to listen on, picked at random
/// below the kernel's ephemeral range: a port from that range (what binding
/// port 0 returns) can be taken by any outgoing connection — of a cluster
/// still shutting down, say — in the seconds before the component binds it.
pub fn free_port() -> std::io::Result<u16> {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // Ports handed out before are not bound yet, perhaps: never twice.
    static GIVEN: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let low = ephemeral_start.saturating_sub(12000).max(1024);
    if low < ephemeral_start {
        for _ in 0..100 {
            let port = fastrand::u16(low..ephemeral_start);
            if !given.contains(&port) && TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                given.insert(port);
                return Ok(port);
            }
        }
    }
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn require_free(port: u16) -> Result<u16, LabError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .map(|_| port)
        .map_err(|_| LabError::PortInUse { port })
}

/// Brings the cluster up, or returns the running one unchanged. On any failure,
/// everything started so far is stopped and the state directory removed.
pub async fn up(opts: &LabOptions) -> Result<ClusterState, LabError> {
    if let Some(existing) =
        ClusterState::load(&opts.state_dir).map_err(io("reading cluster state"))?
    {
        let dead: Vec<String> = existing
            .dead_processes()
            .into_iter()
            .map(String::from)
            .collect();
        if existing.ready && dead.is_empty() {
            return Ok(existing);
        }
        if !existing.ready && dead.len() == existing.processes.len() {
            // A start that died before finishing: nothing to keep.
            down(&opts.state_dir).map_err(io("cleaning an interrupted start"))?;
        } else {
            return Err(LabError::PartlyRunning {
                name: existing.name,
                dead: dead.join(", "),
            });
        }
    }
    if opts.backend == Backend::Chart && opts.real_nodes == 0 && opts.start_understudies {
        return Err(LabError::Invalid(
            "--backend=chart runs the understudies as pods on real nodes: add --real-nodes=1 or more"
                .into(),
        ));
    }
    if !opts.kwok && opts.nodes > 0 {
        return Err(LabError::Invalid(
            "--no-kwok leaves fake nodes without their kubelet: use --nodes=0 (and run `understudy-lab fake-nodes` against the cluster)"
                .into(),
        ));
    }
    let toolchain = Toolchain::locate()?;
    if opts.backend == Backend::Chart {
        toolchain.check(&["helm"])?;
    }
    if opts.real_nodes > 0 {
        realnode::check_host().map_err(|e| LabError::Io(e.to_string()))?;
        toolchain.check(&["kubelet"])?;
        if opts.real_nodes > realnode::plan::MAX_NODES {
            return Err(LabError::Io(format!(
                "at most {} real nodes",
                realnode::plan::MAX_NODES
            )));
        }
        for binary in [crate::images::TESTSERVER_BINARY, "understudy-lab"] {
            let bin = opts.components_dir.join(binary);
            if !bin.is_file() {
                return Err(LabError::MissingComponent(bin));
            }
        }
    }
    if opts.start_understudies {
        for understudy in &opts.replaced {
            let bin = opts.components_dir.join(understudy.binary());
            if !bin.is_file() {
                return Err(LabError::MissingComponent(bin));
            }
        }
    }
    std::fs::create_dir_all(&opts.state_dir)
        .map_err(io(format!("creating {}", opts.state_dir.display())))?;
    let mut state = ClusterState {
        name: opts.name.clone(),
        state_dir: opts.state_dir.clone(),
        toolchain_dir: toolchain.bin_dir.clone(),
        nodes: opts.nodes,
        replaced: opts.replaced.iter().copied().collect(),
        backend: opts.backend,
        proxy_mode: opts.proxy_mode,
        ..Default::default()
    };
    state.save().map_err(io("writing cluster state"))?;
    if opts.real_nodes > 0 {
        let network = match realnode::allocate(&opts.state_dir) {
            Ok(network) => network,
            Err(e) => {
                let _ = down(&opts.state_dir);
                return Err(LabError::Io(e.to_string()));
            }
        };
        state.real_nodes = Some(RealNodes {
            network,
            count: opts.real_nodes,
        });
        state.save().map_err(io("writing cluster state"))?;
    }
    match start_all(opts, &toolchain, &mut state).await {
        Ok(()) => {
            state.ready = true;
            state.save().map_err(io("writing cluster state"))?;
            Ok(state)
        }
        Err(e) => {
            let _ = down(&opts.state_dir);
            Err(e)
        }
    }
}

pub(crate) struct Starter<'a> {
    pub(crate) state: &'a mut ClusterState,
    logs: PathBuf,
}

impl Starter<'_> {
    pub(crate) fn toolchain_bin(&self, name: &str) -> PathBuf {
        self.state.toolchain_dir.join(name)
    }

    pub(crate) fn spawn(
        &mut self,
        name: &str,
        program: &Path,
        args: Vec<String>,
    ) -> Result<ProcessRecord, LabError> {
        let log = self.logs.join(format!("{}.log", name.replace('/', "-")));
        let record = process::spawn(name, program, &args, &log)?;
        self.state.processes.push(record.clone());
        self.state.save().map_err(io("writing cluster state"))?;
        Ok(record)
    }

    pub(crate) fn probe(&mut self, process: &str, url: String) {
        self.state.probes.push(Probe {
            process: process.into(),
            url,
        });
    }

    fn port(&mut self, name: &str) -> Result<u16, LabError> {
        let port = free_port().map_err(io("finding a free port"))?;
        self.state.ports.insert(name.into(), port);
        Ok(port)
    }
}

pub(crate) async fn wait_healthy(
    record: &ProcessRecord,
    url: &str,
    timeout: Duration,
) -> Result<(), LabError> {
    let client = probe::http_client();
    let what = format!("{} to become healthy at {url}", record.name);
    wait_for(&what, timeout, Some(record), || {
        let client = client.clone();
        async move {
            match client.get(url).send().await {
                Ok(r) if r.status().is_success() => Ok(true),
                Ok(r) => Err(format!("HTTP {}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await?;
    Ok(())
}

async fn start_all(
    opts: &LabOptions,
    toolchain: &Toolchain,
    state: &mut ClusterState,
) -> Result<(), LabError> {
    let dir = opts.state_dir.clone();
    let logs = state.logs_dir();
    std::fs::create_dir_all(&logs).map_err(io("creating the log directory"))?;
    let node_ids = state
        .real_nodes
        .as_ref()
        .map(realnode::identities)
        .unwrap_or_default();
    let pki = Pki::create(
        &dir.join("pki"),
        SERVICE_IP,
        &[
            ADMIN,
            CONTROLLER_MANAGER,
            SCHEDULER,
            KUBELET_CLIENT,
            KUBE_PROXY,
        ],
        &node_ids,
    )?;
    let mut s = Starter { state, logs };

    let apiserver_port = match opts.apiserver_port {
        Some(port) => {
            let port = require_free(port)?;
            s.state.ports.insert("apiserver".into(), port);
            port
        }
        None => s.port("apiserver")?,
    };
    let server = format!("https://127.0.0.1:{apiserver_port}");
    s.state.server = server.clone();
    let kubeconfigs = dir.join("kubeconfigs");
    std::fs::create_dir_all(&kubeconfigs).map_err(io("creating kubeconfigs"))?;
    let admin_kubeconfig = dir.join("kubeconfig");
    kubeconfig::write(&admin_kubeconfig, &opts.name, &server, &pki, &ADMIN)
        .map_err(io("writing kubeconfig"))?;
    let kcm_kubeconfig = kubeconfig::write(
        &kubeconfigs.join("controller-manager.yaml"),
        &opts.name,
        &server,
        &pki,
        &CONTROLLER_MANAGER,
    )
    .map_err(io("writing kubeconfig"))?;
    let sched_kubeconfig = kubeconfig::write(
        &kubeconfigs.join("scheduler.yaml"),
        &opts.name,
        &server,
        &pki,
        &SCHEDULER,
    )
    .map_err(io("writing kubeconfig"))?;
    s.state.kubeconfig = admin_kubeconfig.clone();
    let path = |p: &Path| p.display().to_string();

    // etcd
    let etcd_port = s.port("etcd")?;
    let etcd_peer = s.port("etcd-peer")?;
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let etcd = s.spawn(
        "etcd",
        &toolchain.bin("etcd"),
        vec![
            "--name=understudy".into(),
            format!("--data-dir={}", path(&dir.join("etcd"))),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
            format!("--initial-cluster=understudy=http://127.0.0.1:{etcd_peer}"),
            "--listen-metrics-urls=".into(),
            // Test clusters trade durability for speed, as kind and kwokctl do.
            "--unsafe-no-fsync=true".into(),
            "--quota-backend-bytes=8589934592".into(),
            "--log-level=warn".into(),
        ],
    )?;
    s.probe("etcd", format!("{etcd_url}/health"));
    wait_healthy(
        &etcd,
        &format!("{etcd_url}/health"),
        Duration::from_secs(30),
    )
    .await?;

    // kube-apiserver, auditing what the chart's ServiceAccounts do (the RBAC check).
    let audit_policy = dir.join("audit-policy.yaml");
    std::fs::write(&audit_policy, crate::audit::policy_yaml())
        .map_err(io("writing the audit policy"))?;
    let apiserver = s.spawn(
        "kube-apiserver",
        &toolchain.bin("kube-apiserver"),
        vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // A loopback advertise address cannot back the `kubernetes` Service's
            // endpoints; nothing in the lab dials it through the Service.
            "--endpoint-reconciler-type=none".into(),
            format!("--secure-port={apiserver_port}"),
            format!("--tls-cert-file={}", path(&pki.apiserver_cert())),
            format!("--tls-private-key-file={}", path(&pki.apiserver_key())),
            format!("--client-ca-file={}", path(&pki.ca_cert())),
            format!("--service-account-key-file={}", path(&pki.sa_pub())),
            format!("--service-account-signing-key-file={}", path(&pki.sa_key())),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-cluster-ip-range={SERVICE_CIDR},{SERVICE_CIDR_V6}"),
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction".into(),
            // Logs, exec and port-forward: the apiserver dials a real node's
            // address (a node name resolves nowhere here) with a client
            // certificate the kubelet checks, and checks the kubelet's.
            "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
            format!(
                "--kubelet-client-certificate={}",
                path(&pki.client_cert(&KUBELET_CLIENT))
            ),
            format!(
                "--kubelet-client-key={}",
                path(&pki.client_key(&KUBELET_CLIENT))
            ),
            format!("--kubelet-certificate-authority={}", path(&pki.ca_cert())),
            "--allow-privileged=true".into(),
            // `/debug/pprof` for finding where the control plane's time goes
            // in a benchmark; off otherwise, as in a hardened cluster.
            format!(
                "--profiling={}",
                std::env::var_os("UNDERSTUDY_LAB_PROFILING").is_some()
            ),
            format!("--cert-dir={}", path(&dir.join("apiserver"))),
            format!("--audit-policy-file={}", path(&audit_policy)),
            format!("--audit-log-path={}", path(&s.logs.join(AUDIT_LOG))),
            "--audit-log-format=json".into(),
            "--v=0".into(),
        ],
    )?;
    s.probe("kube-apiserver", format!("{server}/readyz"));
    wait_healthy(
        &apiserver,
        &format!("{server}/readyz"),
        Duration::from_secs(120),
    )
    .await?;
    let client = wait::client_for(&admin_kubeconfig)
        .await
        .map_err(|e| LabError::Api(e.to_string()))?;

    // kube-controller-manager, with the controllers our understudies replace
    // off. Installed by the chart, understudy-controllers is a Deployment: a
    // deployment controller must make its pods first, so kube-controller-manager
    // keeps those controllers until the chart's pods are Ready, then hands over.
    let chart_bootstrap = opts.start_understudies
        && opts.backend == Backend::Chart
        && opts.replaced.contains(&Understudy::Controllers);
    let kcm_controllers = if chart_bootstrap {
        understudies::controller_manager_controllers(&BTreeSet::new())
    } else {
        understudies::controller_manager_controllers(&opts.replaced)
    };
    let kcm_port = s.port("kube-controller-manager")?;
    let kcm = s.spawn(
        "kube-controller-manager",
        &toolchain.bin("kube-controller-manager"),
        vec![
            format!("--kubeconfig={}", path(&kcm_kubeconfig)),
            format!("--authentication-kubeconfig={}", path(&kcm_kubeconfig)),
            format!("--authorization-kubeconfig={}", path(&kcm_kubeconfig)),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={kcm_port}"),
            format!("--cert-dir={}", path(&dir.join("controller-manager"))),
            format!("--controllers={kcm_controllers}"),
            format!("--service-account-private-key-file={}", path(&pki.sa_key())),
            format!("--root-ca-file={}", path(&pki.ca_cert())),
            "--use-service-account-credentials=true".into(),
            // At the default 20 QPS the node lifecycle controller lifts the
            // not-ready taint from ~7 nodes a second: 12 minutes for the
            // scheduler benchmark's 5000 nodes.
            "--kube-api-qps=500".into(),
            "--kube-api-burst=1000".into(),
            // Nodes are NotReady once their lease is older than this; keep it
            // above kwok's renew interval whatever the lease duration.
            format!(
                "--node-monitor-grace-period={}s",
                (opts.node_lease_seconds * 2).max(50)
            ),
            "--leader-elect=false".into(),
            "--v=0".into(),
        ],
    )?;
    let kcm_health = format!("https://127.0.0.1:{kcm_port}/healthz");
    s.probe("kube-controller-manager", kcm_health.clone());

    // kube-scheduler for pods of default-scheduler.
    let scheduler = if opts.kube_scheduler {
        let port = s.port("kube-scheduler")?;
        let record = s.spawn(
            "kube-scheduler",
            &toolchain.bin("kube-scheduler"),
            vec![
                format!("--kubeconfig={}", path(&sched_kubeconfig)),
                format!("--authentication-kubeconfig={}", path(&sched_kubeconfig)),
                format!("--authorization-kubeconfig={}", path(&sched_kubeconfig)),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                "--leader-elect=false".into(),
                "--v=0".into(),
            ],
        )?;
        let url = format!("https://127.0.0.1:{port}/healthz");
        s.probe("kube-scheduler", url.clone());
        Some((record, url))
    } else {
        None
    };

    // kwok, managing only the nodes we create.
    let kwok = if opts.kwok {
        let kwok_port = s.port("kwok")?;
        let kwok_args = fake_nodes::kwok_args(
            toolchain,
            &admin_kubeconfig,
            opts.node_lease_seconds,
            kwok_port,
            &opts.state_dir.join("kwok-stages"),
        )
        .map_err(LabError::Io)?;
        let kwok = s.spawn("kwok", &toolchain.bin("kwok"), kwok_args)?;
        let kwok_health = format!("http://127.0.0.1:{kwok_port}/healthz");
        s.probe("kwok", kwok_health.clone());
        Some((kwok, kwok_health))
    } else {
        None
    };

    wait_healthy(&kcm, &kcm_health, Duration::from_secs(60)).await?;
    if let Some((record, url)) = &scheduler {
        wait_healthy(record, url, Duration::from_secs(60)).await?;
    }
    if let Some((record, url)) = &kwok {
        wait_healthy(record, url, Duration::from_secs(60)).await?;
    }

    // Pods are rejected until kube-controller-manager made the default
    // ServiceAccount; a cluster that says it is up must accept them.
    wait::accepts_pods(&client, "default", Duration::from_secs(60))
        .await
        .map_err(|e| LabError::Api(e.to_string()))?;

    create_nodes(&client, &opts.node_template, opts.nodes).await?;
    // Readiness includes kube-controller-manager lifting the not-ready taint,
    // which takes it a few minutes for the benchmarks' 5000 nodes on 2 cores.
    let nodes_timeout = Duration::from_secs(120) + Duration::from_millis(60 * opts.nodes as u64);
    wait::nodes_ready(&client, opts.nodes, nodes_timeout)
        .await
        .map_err(|e| LabError::Api(e.to_string()))?;

    if let Some(nodes) = s.state.real_nodes.clone() {
        let with_components = opts.backend == Backend::Chart && opts.start_understudies;
        let images =
            realnode::build_images(&opts.components_dir, &dir.join("images"), with_components)?;
        let lab_binary = opts.components_dir.join("understudy-lab");
        let ctx = realnode::StartContext {
            client: &client,
            pki: &pki,
            apiserver_port,
            cluster_name: &opts.name,
            lab_binary: &lab_binary,
            images: &images,
            cluster_cidr: nodes.network.cluster_cidr(),
            proxy_mode: opts.proxy_mode,
            kubelet_args: &opts.kubelet_args,
            // kube-proxy and ours must not both serve a node: the chart's
            // DaemonSet takes its place, or (processes) understudy-proxy runs
            // as a process in each node's namespaces where kube-proxy would.
            node_proxy: realnode::NodeProxy::for_lab(
                opts.replaced.contains(&Understudy::Proxy),
                opts.backend,
                opts.start_understudies,
                &opts.components_dir,
            ),
        };
        realnode::start(&mut s, &nodes, &ctx).await?;
    }

    if opts.start_understudies && opts.backend == Backend::Chart {
        install_chart(s.state, &client, &opts.understudy_args).await?;
        if chart_bootstrap {
            restart_controller_manager(s.state, &s.logs).await?;
        }
    } else if opts.start_understudies {
        for understudy in opts.replaced.clone() {
            if understudy == Understudy::Proxy {
                // A process here would program this host's netfilter: the
                // proxy runs only in a real node's namespaces (started with
                // the node above, or as the chart's pods).
                if s.state.real_nodes.is_none() {
                    tracing::warn!(
                        "understudy-proxy runs only on real nodes (--real-nodes) or as the chart's pods"
                    );
                }
                continue;
            }
            start_understudy(
                &mut s,
                understudy,
                &admin_kubeconfig,
                &opts.components_dir,
                &opts.understudy_args,
            )
            .await?;
        }
    }
    Ok(())
}

/// Starts one understudy as a local process and waits until it is ready.
async fn start_understudy(
    s: &mut Starter<'_>,
    understudy: Understudy,
    admin_kubeconfig: &Path,
    components_dir: &Path,
    extra_args: &[String],
) -> Result<(), LabError> {
    let port = s.port(understudy.binary())?;
    let mut args = vec![
        format!("--kubeconfig={}", admin_kubeconfig.display()),
        "--bind-address=127.0.0.1".into(),
        format!("--port={port}"),
        format!("--leader-elect-resource-namespace={COMPONENT_NAMESPACE}"),
    ];
    if understudy == Understudy::Scheduler {
        // Not the well-known 10360: several lab clusters may run at once.
        let extender = s.port("understudy-scheduler-extender")?;
        args.push(format!("--extender-port={extender}"));
    }
    args.extend(extra_args.iter().cloned());
    let record = s.spawn(
        understudy.binary(),
        &components_dir.join(understudy.binary()),
        args,
    )?;
    let url = format!("http://127.0.0.1:{port}/readyz");
    s.probe(understudy.binary(), url.clone());
    wait_healthy(&record, &url, Duration::from_secs(60)).await?;
    s.state.running_understudies.push(understudy);
    Ok(())
}

/// `helm upgrade --install` of the chart with the lab's values for the
/// state's replaced understudies, then waits until their pods are Ready.
async fn install_chart(
    state: &mut ClusterState,
    client: &Client,
    extra_args: &[String],
) -> Result<(), LabError> {
    let enabled: BTreeSet<Understudy> = state.replaced.iter().copied().collect();
    let helm = chart::Helm::for_lab(state);
    let values = chart::lab_values(state, &enabled, extra_args);
    // understudy-proxy in a mode this kernel cannot run (IPVS where there is
    // none) exits at start-up saying what is missing, as kube-proxy fails
    // there: the lab comes up without waiting for its pods. Checked before
    // the install, which loads ip_vs when it is a module.
    let mut awaited = enabled.clone();
    if enabled.contains(&Understudy::Proxy) && !state.proxy_mode.runs_on_this_kernel() {
        tracing::warn!(
            "this kernel cannot run the {} proxy mode: understudy-proxy's pods will not become Ready",
            state.proxy_mode
        );
        awaited.remove(&Understudy::Proxy);
    }
    helm.upgrade_install(&values, &state.state_dir.join("chart-values.json"))?;
    chart::wait_ready(client, &awaited, Duration::from_secs(180)).await?;
    state.running_understudies = enabled.into_iter().collect();
    state.save().map_err(io("writing cluster state"))?;
    Ok(())
}

/// Who runs the controllers understudy-controllers can replace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControllersSide {
    Upstream,
    Understudy,
}

/// Hands the Deployment/ReplicaSet/Endpoints/EndpointSlice controllers of a
/// running lab cluster over to `to`. With processes, never both at once: the
/// side giving up stops first (kube-controller-manager is restarted with a new
/// `--controllers` list), then the other starts. With the chart, ours start
/// before upstream's stop (see `switch_chart_controllers`).
pub async fn switch_controllers(
    state_dir: &Path,
    to: ControllersSide,
    components_dir: &Path,
    understudy_args: &[String],
) -> Result<ClusterState, LabError> {
    let mut state = ClusterState::load(state_dir)
        .map_err(io("reading cluster state"))?
        .filter(|s| s.ready)
        .ok_or_else(|| LabError::Io(format!("no running cluster in {}", state_dir.display())))?;
    let ours = Understudy::Controllers;
    let running = state.running_understudies.contains(&ours);
    match to {
        ControllersSide::Understudy if running => return Ok(state),
        ControllersSide::Upstream if !state.replaced.contains(&ours) => return Ok(state),
        _ => {}
    }
    let logs = state.logs_dir();
    if state.backend == Backend::Chart {
        return switch_chart_controllers(state, to, &logs, understudy_args).await;
    }
    let kubeconfig = state_dir.join("kubeconfig");
    if to == ControllersSide::Upstream {
        if let Some(record) = state.process(ours.binary()).cloned() {
            record.stop(Duration::from_secs(30));
        }
        state.processes.retain(|p| p.name != ours.binary());
        state.probes.retain(|p| p.process != ours.binary());
        state.running_understudies.retain(|u| *u != ours);
        state.replaced.retain(|u| *u != ours);
    } else if !state.replaced.contains(&ours) {
        state.replaced.push(ours);
    }
    restart_controller_manager(&mut state, &logs).await?;
    if to == ControllersSide::Understudy {
        let bin = components_dir.join(ours.binary());
        if !bin.is_file() {
            return Err(LabError::MissingComponent(bin));
        }
        let mut s = Starter {
            state: &mut state,
            logs,
        };
        start_understudy(&mut s, ours, &kubeconfig, components_dir, understudy_args).await?;
    }
    state.save().map_err(io("writing cluster state"))?;
    Ok(state)
}

/// The chart's way of the same hand-over: `helm upgrade` with the controllers
/// off (and their pods gone) before kube-controller-manager takes them back,
/// or `helm upgrade` turning ours on before kube-controller-manager gives them up.
async fn switch_chart_controllers(
    mut state: ClusterState,
    to: ControllersSide,
    logs: &Path,
    understudy_args: &[String],
) -> Result<ClusterState, LabError> {
    let ours = Understudy::Controllers;
    let client = wait::client_for(&state.kubeconfig)
        .await
        .map_err(|e| LabError::Api(e.to_string()))?;
    if to == ControllersSide::Upstream {
        state.replaced.retain(|u| *u != ours);
        install_chart(&mut state, &client, understudy_args).await?;
        chart::wait_gone(&client, ours, Duration::from_secs(60)).await?;
        restart_controller_manager(&mut state, logs).await?;
    } else {
        // Our controllers' Deployment needs a deployment controller to get
        // its pods: kube-controller-manager's, until they are Ready (the same
        // bootstrap as `up`; both sides run for the seconds in between).
        state.replaced.push(ours);
        install_chart(&mut state, &client, understudy_args).await?;
        restart_controller_manager(&mut state, logs).await?;
    }
    state.save().map_err(io("writing cluster state"))?;
    Ok(state)
}

/// Restarts kube-controller-manager with `--controllers` following the
/// state's replaced understudies.
pub async fn restart_controller_manager(
    state: &mut ClusterState,
    logs: &Path,
) -> Result<(), LabError> {
    const KCM: &str = "kube-controller-manager";
    let old = state
        .process(KCM)
        .cloned()
        .ok_or_else(|| LabError::Io(format!("{KCM} is not part of this cluster")))?;
    let replaced: BTreeSet<Understudy> = state.replaced.iter().copied().collect();
    let args: Vec<String> = old
        .args
        .iter()
        .map(|a| {
            if a.starts_with("--controllers=") {
                format!(
                    "--controllers={}",
                    understudies::controller_manager_controllers(&replaced)
                )
            } else {
                a.clone()
            }
        })
        .collect();
    old.stop(Duration::from_secs(30));
    let program = state.toolchain_dir.join(KCM);
    let record = process::spawn(KCM, &program, &args, &logs.join(format!("{KCM}.log")))?;
    for p in state.processes.iter_mut().filter(|p| p.name == KCM) {
        *p = record.clone();
    }
    state.save().map_err(io("writing cluster state"))?;
    let url = state
        .probes
        .iter()
        .find(|p| p.process == KCM)
        .map(|p| p.url.clone())
        .ok_or_else(|| LabError::Io(format!("no health probe for {KCM}")))?;
    wait_healthy(&record, &url, Duration::from_secs(60)).await
}

/// Creates the fake nodes that kwok then runs; existing ones are kept.
pub async fn create_nodes(
    client: &Client,
    template: &NodeTemplate,
    count: usize,
) -> Result<(), LabError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let existing: BTreeSet<String> = nodes
        .list(&Default::default())
        .await
        .map_err(|e| LabError::Api(e.to_string()))?
        .items
        .iter()
        .map(|n| n.name_any())
        .collect();
    let wanted: Vec<Node> = (0..count)
        .map(|i| template.node(i, KUBERNETES_VERSION))
        .filter(|n| !existing.contains(&n.name_any()))
        .collect();
    // Bounded concurrency: thousands of nodes for benchmarks, without a storm.
    use futures::StreamExt;
    let results: Vec<Result<Node, kube::Error>> = futures::stream::iter(wanted)
        .map(|node| {
            let nodes = nodes.clone();
            async move { nodes.create(&PostParams::default(), &node).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for result in results {
        result.map_err(|e| LabError::Api(format!("creating a node: {e}")))?;
    }
    Ok(())
}

/// Stops every recorded process and removes the state directory. Safe to run on
/// a cluster that is half up or already gone.
pub fn down(state_dir: &Path) -> std::io::Result<Vec<String>> {
    let Some(state) = ClusterState::load(state_dir)? else {
        if state_dir.exists() {
            std::fs::remove_dir_all(state_dir)?;
        }
        return Ok(vec![]);
    };
    let me = std::process::id() as i32;
    let mut stopped = vec![];
    // Reverse start order: dependents before what they depend on.
    for record in state.processes.iter().rev() {
        if record.pid == me {
            continue;
        }
        if record.is_alive() {
            let killed = record.stop(Duration::from_secs(10));
            stopped.push(if killed {
                format!("{} (killed after 10s)", record.name)
            } else {
                record.name.clone()
            });
        }
    }
    if let Some(nodes) = &state.real_nodes {
        let problems = realnode::teardown(nodes);
        if !problems.is_empty() {
            return Err(std::io::Error::other(format!(
                "taking the real nodes apart: {}",
                problems.join("; ")
            )));
        }
    }
    std::fs::remove_dir_all(state_dir)?;
    Ok(stopped)
}

/// One line per process: alive or not, healthy or not.
pub async fn status(state: &ClusterState) -> Vec<(String, bool, Option<bool>)> {
    let client = probe::http_client();
    let mut rows = vec![];
    for record in &state.processes {
        let alive = record.is_alive();
        let url = state
            .probes
            .iter()
            .find(|p| p.process == record.name)
            .map(|p| p.url.clone());
        let healthy = match (alive, url) {
            (true, Some(url)) => Some(probe::healthy(&client, &url).await),
            _ => None,
        };
        rows.push((record.name.clone(), alive, healthy));
    }
    rows
}

/// Creates a namespace if missing (used for the understudies' leases).
pub async fn ensure_namespace(client: &Client, name: &str) -> Result<(), kube::Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await?.is_none() {
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &ns).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_bindable_and_outside_the_ephemeral_range() {
        let ephemeral_start: u16 =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
        let mut ports = BTreeSet::new();
        for _ in 0..20 {
            let port = free_port().unwrap();
            assert!(port < ephemeral_start, "{port}");
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
            ports.insert(port);
        }
        assert_eq!(ports.len(), 20, "never the same port twice");
    }
}
