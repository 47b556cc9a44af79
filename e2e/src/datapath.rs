//! The Service data path with real packets on the lab's two real nodes, run
//! the same way against understudy-proxy (the chart's DaemonSet) and upstream
//! kube-proxy (iptables mode, a process in each node's namespaces), so the
//! two answer for the same behaviour. Clients are pods on the other node than
//! the backends (or this host, for NodePorts), and backends answer with their
//! pod name and the source address they saw:
//! - a ClusterIP answers; two backends both answer; with none the connection
//!   is refused at once (REJECT, not a timeout); a NodePort answers on the
//!   node's address; a LoadBalancer Service with `externalTrafficPolicy:
//!   Local` has its healthCheckNodePort answered with the node's count of
//!   ready local endpoints; deleting the Services removes their rules;
//! - 300 connections spread over backends on both nodes; ClientIP affinity
//!   pins a client; NodePorts answer on each node, masqueraded with
//!   `externalTrafficPolicy: Cluster`, only from local backends and with the
//!   client's own address with `Local`; scaling down changes the answer set;
//! - a UDP client keeps its flow (one source port) across its backend being
//!   replaced: the proxy clears the stale conntrack entry;
//! - the lab is dual-stack: an IPv6 Service answers from the other node
//!   through its IPv6 ClusterIP, and one without endpoints is refused.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::chart::{Backend, ProxyMode};
use crate::fixture::{Cluster, ClusterSpec, TestNamespace};
use crate::images;
use crate::realnode::REAL_NODE_LABEL;
use crate::workloads::{deployment, pod_is_ready};

const T: Duration = Duration::from_secs(90);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proxy {
    Understudy,
    KubeProxy,
}

impl Proxy {
    /// What marks the proxy's rules in `mode`, and the other one's.
    fn markers(self, mode: ProxyMode) -> (&'static str, &'static str) {
        let (understudy, kube_proxy) = match mode {
            ProxyMode::Iptables => ("US-", "KUBE-SVC-"),
            ProxyMode::Nftables => ("table ip understudy-proxy", "table ip kube-proxy"),
            // The dummy interfaces, listed by node_rules in this mode.
            ProxyMode::Ipvs => ("understudy-ipvs0", "kube-ipvs0"),
        };
        match self {
            Proxy::Understudy => (understudy, kube_proxy),
            Proxy::KubeProxy => (kube_proxy, understudy),
        }
    }
}

/// The data-path tests of one proxy in one mode, each on the lab of
/// [`cluster_spec`]: every tests/proxy_datapath*.rs binary is this once
/// (with a `cluster()` helper for tests of its own), so ours and kube-proxy
/// answer for exactly the same checks.
#[macro_export]
macro_rules! datapath_tests {
    ($proxy:expr, $mode:expr) => {
        fn cluster() -> Option<&'static $crate::fixture::Cluster> {
            if std::env::var_os($crate::fixture::EXTERNAL_KUBECONFIG).is_some() {
                eprintln!("skipped: the data path is checked on the lab's own real nodes");
                return None;
            }
            if !$mode.runs_on_this_kernel() {
                eprintln!(
                    "skipped: this kernel cannot run the {} mode (its refusal is checked instead)",
                    $mode
                );
                return None;
            }
            Some($crate::fixture::Cluster::shared(
                $crate::datapath::cluster_spec($proxy, $mode),
            ))
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn services_answer_through_the_nodes_rules() {
            let Some(cluster) = cluster() else { return };
            $crate::datapath::services_answer_through_the_node(cluster, $proxy).await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn traffic_spreads_sticks_and_keeps_sources() {
            let Some(cluster) = cluster() else { return };
            $crate::datapath::traffic_spreads_sticks_and_keeps_sources(cluster).await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn udp_follows_a_replaced_backend() {
            let Some(cluster) = cluster() else { return };
            $crate::datapath::udp_follows_a_replaced_backend(cluster).await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn a_taken_health_check_port_is_reported() {
            let Some(cluster) = cluster() else { return };
            $crate::datapath::taken_health_check_port_is_reported(cluster).await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn ipv6_services_answer_across_nodes() {
            let Some(cluster) = cluster() else { return };
            $crate::datapath::ipv6_services_answer_across_nodes(cluster).await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn conntrack_settings_are_applied() {
            let Some(cluster) = cluster() else { return };
            $crate::datapath::conntrack_settings_applied(cluster).await;
        }
    };
}

/// The lab for `proxy`: ours replaces kube-proxy on the real node, or the
/// lab's kube-proxy serves it.
pub fn cluster_spec(proxy: Proxy, proxy_mode: ProxyMode) -> ClusterSpec {
    ClusterSpec {
        nodes: 1,
        understudies: match proxy {
            Proxy::Understudy => "proxy,scheduler,controllers",
            Proxy::KubeProxy => "scheduler,controllers",
        },
        start_understudies: true,
        real_nodes: 2,
        kwok: true,
        backend: Some(Backend::Chart),
        proxy_mode,
    }
}

/// The lab of a kernel without IPVS: one real node whose proxy is asked
/// for the IPVS mode, ours as the chart's DaemonSet or the lab's kube-proxy.
/// Nothing else is replaced: the chart's other pods would reach the
/// apiserver through the `kubernetes` Service, which no proxy serves here.
pub fn refusal_spec(proxy: Proxy) -> ClusterSpec {
    ClusterSpec {
        nodes: 0,
        understudies: match proxy {
            Proxy::Understudy => "proxy",
            Proxy::KubeProxy => "none",
        },
        start_understudies: true,
        real_nodes: 1,
        kwok: false,
        backend: Some(match proxy {
            Proxy::Understudy => Backend::Chart,
            Proxy::KubeProxy => Backend::Processes,
        }),
        proxy_mode: ProxyMode::Ipvs,
    }
}

/// The lab of [`refusal_spec`], or `None` (the test says it is skipped)
/// where the data-path tests run instead: on a kernel with IPVS, or on an
/// external cluster.
pub fn refusal_cluster(proxy: Proxy) -> Option<&'static Cluster> {
    if std::env::var_os(crate::fixture::EXTERNAL_KUBECONFIG).is_some() {
        eprintln!("skipped: checked on the lab's own real nodes");
        return None;
    }
    if ProxyMode::Ipvs.runs_on_this_kernel() {
        eprintln!("skipped: this kernel has IPVS (the data-path tests run instead)");
        return None;
    }
    Some(Cluster::shared(refusal_spec(proxy)))
}

/// On a kernel without IPVS the proxy asked for the IPVS mode fails at
/// start-up with upstream's "can't use the IPVS proxier" — ours naming what
/// is missing, in its pod's log, the pod never Ready — and writes nothing
/// of the mode into the node; the lab around it is up.
pub async fn ipvs_refused(cluster: &Cluster, proxy: Proxy) {
    let local = cluster.local.as_ref().expect("the lab's own cluster");
    let plan = real_nodes(cluster).network.node(0);
    let node = plan.name();
    let said = match proxy {
        Proxy::Understudy => understudy_proxy_refusal(cluster).await,
        Proxy::KubeProxy => {
            let name = (crate::realnode::NodeProxy::KubeProxy.process_name(&plan))
                .expect("kube-proxy runs as a process");
            let record = local
                .process(&name)
                .expect("the lab runs kube-proxy")
                .clone();
            crate::wait::until(&format!("{name} to exit"), T, || {
                let alive = record.is_alive();
                async move { Ok((!alive).then_some(())) }
            })
            .await
            .unwrap();
            std::fs::read_to_string(&record.log).unwrap()
        }
    };
    assert!(said.contains("can't use the IPVS proxier"), "{said}");
    if proxy == Proxy::Understudy {
        assert!(said.contains("/proc/net/ip_vs is absent"), "{said}");
    }
    let rules = node_rules(cluster, 0);
    for marker in ["US-SERVICES", "KUBE-SERVICES"] {
        assert!(!rules.contains(marker), "{marker} in {node}:\n{rules}");
    }
}

/// The chart's proxy pod once its container has exited and its log says
/// why: exit code 1, the reason in its termination message, never Ready
/// (nor any of the DaemonSet's). The log.
async fn understudy_proxy_refusal(cluster: &Cluster) -> String {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use kube::api::{ListParams, LogParams};
    let client = cluster.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), crate::chart::NAMESPACE);
    let what = "understudy-proxy to exit at start-up, saying why";
    let (name, exit_code, message, ready, log) = crate::wait::until(what, T, || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app.kubernetes.io/component=proxy"))
                .await
                .map_err(|e| e.to_string())?;
            let Some((name, exit_code, message, ready)) = list.items.iter().find_map(|p| {
                let status = (p.status.as_ref()?.container_statuses.as_ref()?)
                    .iter()
                    .find(|c| c.name == "proxy")?;
                let exited = status.last_state.as_ref()?.terminated.as_ref()?;
                Some((
                    p.metadata.name.clone()?,
                    exited.exit_code,
                    exited.message.clone().unwrap_or_default(),
                    pod_is_ready(p),
                ))
            }) else {
                return Ok(None);
            };
            // The run that exited: the latest until the kubelet restarts it.
            for previous in [false, true] {
                let params = LogParams {
                    container: Some("proxy".into()),
                    previous,
                    ..Default::default()
                };
                if let Ok(log) = pods.logs(&name, &params).await
                    && log.contains("can't use the IPVS proxier")
                {
                    return Ok(Some((name, exit_code, message, ready, log)));
                }
            }
            Ok(None)
        }
    })
    .await
    .unwrap();
    assert_eq!(exit_code, 1, "{name}: {log}");
    // The chart's FallbackToLogsOnError: `kubectl describe pod` shows why.
    assert!(
        message.contains("can't use the IPVS proxier"),
        "{name}'s termination message: {message:?}"
    );
    assert!(!ready, "{name} is Ready");
    let sets: Api<DaemonSet> = Api::namespaced(client, crate::chart::NAMESPACE);
    let status = sets.get("understudy-proxy").await.unwrap().status.unwrap();
    assert_eq!(status.number_ready, 0, "{status:?}");
    log
}

/// A test's namespace and the APIs the checks use in it.
struct Scene {
    client: kube::Client,
    ns: TestNamespace,
    deployments: Api<Deployment>,
    pods: Api<Pod>,
    services: Api<Service>,
}

impl Scene {
    async fn new(cluster: &Cluster, prefix: &str) -> Scene {
        let client = cluster.client().await;
        let ns = TestNamespace::create(cluster, &client, prefix).await;
        Scene {
            deployments: Api::namespaced(client.clone(), &ns.name),
            pods: Api::namespaced(client.clone(), &ns.name),
            services: Api::namespaced(client.clone(), &ns.name),
            client,
            ns,
        }
    }
}

/// Pinned to real node `index`.
fn on_real_node(index: usize) -> serde_json::Value {
    json!({
        "nodeSelector": {REAL_NODE_LABEL: "true", "kubernetes.io/hostname": format!("real-{index}")},
        "tolerations": [{"key": REAL_NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
    })
}

/// Where the backends run, and the node of the client pods.
const SERVER_NODE: usize = 0;
const CLIENT_NODE: usize = 1;

fn cluster_mode(cluster: &Cluster) -> ProxyMode {
    cluster
        .local
        .as_ref()
        .map(|l| l.proxy_mode)
        .unwrap_or_default()
}

fn real_nodes(cluster: &Cluster) -> crate::realnode::RealNodes {
    (cluster.local.as_ref())
        .and_then(|l| l.real_nodes.clone())
        .expect("a lab with real nodes")
}

pub(crate) fn testserver_container(args: serde_json::Value) -> serde_json::Value {
    json!({
        "name": "c",
        "image": images::reference(images::TESTSERVER_REPOSITORY),
        "imagePullPolicy": "Never",
        "args": args,
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "securityContext": {"runAsNonRoot": true, "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
    })
}

/// `iptables-save` and `nft list ruleset` inside real node `index`'s
/// network namespace.
pub fn node_rules(cluster: &Cluster, index: usize) -> String {
    let real = real_nodes(cluster);
    let netns = real.network.node(index).netns();
    let mut tools: Vec<&[&str]> = vec![&["iptables-save"], &["nft", "list", "ruleset"]];
    if cluster_mode(cluster) == ProxyMode::Ipvs {
        // The dummy interface holding the service addresses, and the virtual servers.
        tools.extend([
            &["ip", "-o", "link", "show", "type", "dummy"][..],
            &["ipvsadm", "-Ln"][..],
        ]);
    }
    let mut text = String::new();
    for tool in tools {
        let out = Command::new("ip")
            .args(["netns", "exec", &netns])
            .args(tool)
            .output()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    text
}

/// What this host's netfilter holds of either proxy: must stay nothing.
pub fn host_proxy_rules() -> Vec<String> {
    let mut found = Vec::new();
    for (program, args) in [
        ("iptables-save", &[][..]),
        ("nft", &["list", "ruleset"][..]),
    ] {
        let out = Command::new(program).args(args).output().unwrap();
        found.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| {
                    [
                        "US-",
                        "KUBE-SVC",
                        "KUBE-SERVICES",
                        "understudy-proxy",
                        "kube-proxy",
                    ]
                    .iter()
                    .any(|marker| l.contains(marker))
                })
                .map(String::from),
        );
    }
    found
}

/// A client pod on [`CLIENT_NODE`], and how to run the testserver's client in it.
struct Client {
    kubectl: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
    namespace: String,
    pod: String,
}

/// One attempt of `understudy-testserver probe`: who answered and the
/// source address it saw, or why nothing did.
type Answer = Result<(String, std::net::IpAddr), String>;

fn parse_answer(line: &str) -> Answer {
    if let Some(error) = line.strip_prefix("error ") {
        return Err(error.to_string());
    }
    let mut words = line.split_whitespace();
    let (Some(name), Some(peer)) = (words.next(), words.next()) else {
        return Err(format!("not an answer: {line:?}"));
    };
    let peer: std::net::SocketAddr = peer
        .parse()
        .map_err(|e| format!("not an address in {line:?}: {e}"))?;
    Ok((name.to_string(), peer.ip()))
}

impl Client {
    async fn start(cluster: &Cluster, namespace: &str, name: &str) -> Client {
        let pods: Api<Pod> = Api::namespaced(cluster.client().await, namespace);
        let local = cluster.local.as_ref().expect("the lab's own cluster");
        let mut client_pod = json!({
            "metadata": {"name": name},
            "spec": {"containers": [testserver_container(json!(["pause"]))]},
        });
        crate::workloads::merge(&mut client_pod["spec"], on_real_node(CLIENT_NODE));
        crate::pods::create(&pods, client_pod).await;
        crate::wait::object(&pods, name, T, |p: Option<&Pod>| {
            p.is_some_and(pod_is_ready)
        })
        .await
        .unwrap();
        Client {
            kubectl: local.toolchain_dir.join("kubectl"),
            kubeconfig: cluster.kubeconfig.clone(),
            namespace: namespace.to_string(),
            pod: name.to_string(),
        }
    }

    fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.kubectl)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(["-n", &self.namespace, "exec", &self.pod, "--"])
            .arg("understudy-testserver")
            .args(args)
            .output()
            .unwrap()
    }

    /// `count` TCP connections (or UDP datagrams from `udp_source_port`) from the pod.
    fn probe(&self, address: &str, count: u32, udp_source_port: Option<u16>) -> Vec<Answer> {
        let count = count.to_string();
        let mut args = vec!["probe", address, "--count", &count];
        let port = udp_source_port.map(|p| p.to_string());
        if let Some(port) = &port {
            args.extend(["--udp", "--source-port", port]);
        }
        let out = self.exec(&args);
        if !out.status.success() {
            return vec![Err(String::from_utf8_lossy(&out.stderr).into_owned())];
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(parse_answer)
            .collect()
    }

    /// `understudy-testserver connect` in the client pod: Ok(answer) or
    /// Err(error text), and how long it took.
    fn connect(&self, address: &str) -> (Result<String, String>, Duration) {
        let start = Instant::now();
        let out = self.exec(&["connect", address]);
        let took = start.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            (Ok(stdout), took)
        } else {
            (Err(String::from_utf8_lossy(&out.stderr).into_owned()), took)
        }
    }

    /// The backend that answered (the first word of its answer).
    fn answered_by(&self, address: &str) -> Result<String, String> {
        let answer = self.connect(address).0?;
        // "connected to A from B\n<pod name> <peer>\n"
        answer
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().next())
            .map(String::from)
            .ok_or_else(|| format!("no answer after connecting: {answer:?}"))
    }
}

async fn scale(api: &Api<Deployment>, replicas: i32) {
    scale_named(api, "web", replicas).await
}

async fn scale_named(api: &Api<Deployment>, name: &str, replicas: i32) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": replicas}})),
    )
    .await
    .unwrap();
}

async fn ready_backends(pods: &Api<Pod>) -> BTreeSet<String> {
    let list = pods
        .list(&kube::api::ListParams::default().labels("app=web"))
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|p| pod_is_ready(p) && p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

/// Until `count` backends are Ready, then their names.
async fn wait_backends(pods: &Api<Pod>, count: usize) -> BTreeSet<String> {
    crate::wait::until(&format!("{count} ready backends"), T, || async {
        let ready = ready_backends(pods).await;
        Ok((ready.len() == count).then_some(ready))
    })
    .await
    .unwrap()
}

pub async fn services_answer_through_the_node(cluster: &Cluster, proxy: Proxy) {
    let Scene {
        client: _,
        ns,
        deployments,
        pods,
        services,
    } = Scene::new(cluster, "datapath").await;

    let mut server = testserver_container(json!(["serve"]));
    server["readinessProbe"] = json!({"tcpSocket": {"port": 9000}, "periodSeconds": 1});
    let mut pod_spec = on_real_node(SERVER_NODE);
    pod_spec["containers"] = json!([server]);
    let web = deployment("web", 1, "unused", json!({"template": {"spec": pod_spec}}));
    deployments
        .create(&PostParams::default(), &web)
        .await
        .unwrap();
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"},
                 "ports": [{"name": "tcp", "port": 80, "protocol": "TCP", "targetPort": 9000}]},
    }))
    .unwrap();
    let service = services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let spec = service.spec.unwrap();
    let cluster_ip = spec.cluster_ip.unwrap();
    let node_port = spec.ports.unwrap()[0].node_port.unwrap();
    let address = format!("{cluster_ip}:80");
    let local_lb: Service = serde_json::from_value(json!({
        "metadata": {"name": "web-local"},
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": {"app": "web"},
                 "ports": [{"name": "tcp", "port": 80, "protocol": "TCP", "targetPort": 9000}]},
    }))
    .unwrap();
    let local_lb = services
        .create(&PostParams::default(), &local_lb)
        .await
        .unwrap();
    let local_spec = local_lb.spec.unwrap();
    let health_port = local_spec.health_check_node_port.unwrap();
    let local_cluster_ip = local_spec.cluster_ip.unwrap();
    let node_ip = real_nodes(cluster).network.node(SERVER_NODE).ip();
    let health_url = format!("http://{node_ip}:{health_port}/");

    let caller = Client::start(cluster, &ns.name, "client").await;
    // One backend: the client pod reaches it through the ClusterIP.
    let first = wait_backends(&pods, 1).await;
    let (c, a) = (&caller, address.as_str());
    let answered = crate::wait::until("the ClusterIP to answer", T, || async move {
        Ok(c.answered_by(a).ok())
    })
    .await
    .unwrap();
    assert!(
        first.contains(&answered),
        "{answered} is not one of {first:?}"
    );
    local_endpoints_reported(&health_url, 200, 1).await;

    // The rules are the proxy's own, in the node's namespace only.
    let rules = node_rules(cluster, SERVER_NODE);
    let (ours, theirs) = proxy.markers(cluster_mode(cluster));
    assert!(
        rules.contains(ours),
        "no {ours} chain in the node:\n{rules}"
    );
    assert!(
        !rules.contains(theirs),
        "{theirs} chains in the node: both proxies ran\n{rules}"
    );
    assert_eq!(
        host_proxy_rules(),
        Vec::<String>::new(),
        "the host's netfilter was written"
    );

    // Two backends: both answer, in time.
    scale(&deployments, 2).await;
    let both = wait_backends(&pods, 2).await;
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + T;
    while seen != both {
        assert!(
            Instant::now() < deadline,
            "both backends to answer through the ClusterIP: answered {seen:?} of {both:?}"
        );
        if let Ok(name) = caller.answered_by(&address) {
            seen.insert(name);
        }
    }

    local_endpoints_reported(&health_url, 200, 2).await;

    // A NodePort on the node's address, from this host.
    let node_address = format!("{node_ip}:{node_port}");
    let n = node_address.as_str();
    let answer = crate::wait::until("the NodePort to answer", T, || async move {
        Ok(read_answer(n).await)
    })
    .await
    .unwrap();
    let name = answer
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(both.contains(&name), "{answer:?} is not from {both:?}");

    // No backend: refused at once (REJECT), not left to time out.
    scale(&deployments, 0).await;
    wait_backends(&pods, 0).await;
    let (refused, took) = crate::wait::until("the ClusterIP to refuse", T, || async move {
        match c.connect(a) {
            (Err(e), took) if e.contains("refused") => Ok(Some((e, took))),
            _ => Ok(None),
        }
    })
    .await
    .unwrap();
    // kubectl exec itself takes a moment; a timeout would take the client's 5 s.
    assert!(
        took < Duration::from_secs(4),
        "refused after {took:?}: {refused}"
    );
    local_endpoints_reported(&health_url, 503, 0).await;

    // Deleting the Services removes their rules from every node.
    for name in ["web", "web-local"] {
        services.delete(name, &Default::default()).await.unwrap();
    }
    if cluster_mode(cluster) == ProxyMode::Ipvs {
        // No rule names a Service in this mode: their virtual servers go.
        for ip in [&cluster_ip, &local_cluster_ip] {
            rules_gone(cluster, &format!("{ip}:80 ")).await;
        }
    } else {
        rules_gone(cluster, &format!("{}/web", ns.name)).await;
    }
    assert_eq!(
        host_proxy_rules(),
        Vec::<String>::new(),
        "the host's netfilter was written"
    );
}

/// Until no node's rules mention `comment` (a Service's "<namespace>/<name>").
async fn rules_gone(cluster: &Cluster, comment: &str) {
    for index in [SERVER_NODE, CLIENT_NODE] {
        crate::wait::until(
            &format!("real-{index} to drop the rules of {comment}"),
            T,
            || async move { Ok((!node_rules(cluster, index).contains(comment)).then_some(())) },
        )
        .await
        .unwrap();
    }
}

/// A Deployment `name` of testservers on real node `node`, labelled
/// `tier=<tier>` for a Service to select across Deployments.
fn servers(name: &str, tier: &str, node: usize, replicas: i32) -> Deployment {
    let mut server = testserver_container(json!(["serve"]));
    server["readinessProbe"] = json!({"tcpSocket": {"port": 9000}, "periodSeconds": 1});
    let mut pod_spec = on_real_node(node);
    pod_spec["containers"] = json!([server]);
    deployment(
        name,
        replicas,
        "unused",
        json!({"template": {"metadata": {"labels": {"tier": tier}}, "spec": pod_spec}}),
    )
}

async fn ready_pods(pods: &Api<Pod>, selector: &str) -> BTreeSet<String> {
    let list = pods
        .list(&kube::api::ListParams::default().labels(selector))
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|p| pod_is_ready(p) && p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

async fn wait_ready_pods(pods: &Api<Pod>, selector: &str, count: usize) -> BTreeSet<String> {
    crate::wait::until(
        &format!("{count} ready pods {selector}"),
        T,
        || async move {
            let ready = ready_pods(pods, selector).await;
            Ok((ready.len() == count).then_some(ready))
        },
    )
    .await
    .unwrap()
}

fn service_json(name: &str, spec: serde_json::Value) -> Service {
    let mut service = json!({
        "metadata": {"name": name},
        "spec": {"selector": {"tier": "spread"},
                 "ports": [{"name": "tcp", "port": 80, "protocol": "TCP", "targetPort": 9000}]},
    });
    crate::workloads::merge(&mut service["spec"], spec);
    serde_json::from_value(service).unwrap()
}

/// Who answered, by name.
fn tally(answers: &[Answer]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for (name, _) in answers.iter().flatten() {
        *counts.entry(name.clone()).or_default() += 1;
    }
    counts
}

/// Until `probes` answers from `address` come from exactly `backends`, each.
async fn wait_answer_set(client: &Client, address: &str, backends: &BTreeSet<String>) {
    let deadline = Instant::now() + T;
    loop {
        let answers = client.probe(address, 40, None);
        let seen: BTreeSet<String> = tally(&answers).into_keys().collect();
        if &seen == backends && answers.iter().all(Result::is_ok) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{address} to be answered by exactly {backends:?}: last 40 probes {:?}",
            tally(&answers)
        );
    }
}

/// Once `address` answers this host: 20 connections' answers, every one
/// answered (a failure names the address).
async fn answers_from_host(address: &str) -> Vec<(String, std::net::IpAddr)> {
    crate::wait::until(&format!("{address} to answer"), T, || async move {
        Ok(read_answer(address).await)
    })
    .await
    .unwrap();
    probe_from_host(address, 20)
        .await
        .into_iter()
        .map(|a| a.unwrap_or_else(|e| panic!("{address}: {e}")))
        .collect()
}

/// NodePorts probed from this host (the lab's gateway), `count` connections.
async fn probe_from_host(address: &str, count: usize) -> Vec<Answer> {
    let mut answers = Vec::with_capacity(count);
    for _ in 0..count {
        answers.push(match read_answer(address).await {
            Some(text) => parse_answer(text.lines().next().unwrap_or_default()),
            None => Err("no answer".to_string()),
        });
    }
    answers
}

/// Addresses of TEST-NET-1 (RFC 5737): never routed anywhere but to the
/// client's node, where only the proxy's rules answer for them.
const EXTERNAL_IP: &str = "192.0.2.10";
const LB_IP: &str = "192.0.2.20";
const BLOCKED_LB_IP: &str = "192.0.2.21";

/// Backends on both nodes behind one selector: ClusterIP traffic spreads
/// over all of them, ClientIP affinity pins, NodePorts answer on every node
/// (SNATed with `Cluster`, client address kept and local backends only with
/// `Local`), external and load-balancer IPs answer (and a source range
/// keeps a client out), and scaling down changes the answer set.
pub async fn traffic_spreads_sticks_and_keeps_sources(cluster: &Cluster) {
    let Scene {
        client: _,
        ns,
        deployments,
        pods,
        services,
    } = Scene::new(cluster, "spread").await;
    let network = real_nodes(cluster).network;
    for node in [SERVER_NODE, CLIENT_NODE] {
        let d = servers(&format!("on-{node}"), "spread", node, 2);
        deployments
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
    }
    let create = |name: &'static str, spec: serde_json::Value| {
        let services = services.clone();
        async move {
            services
                .create(&PostParams::default(), &service_json(name, spec))
                .await
                .unwrap()
                .spec
                .unwrap()
        }
    };
    let spread = create("spread", json!({})).await;
    let sticky = create("sticky", json!({"sessionAffinity": "ClientIP"})).await;
    let masqueraded = create("cluster", json!({"type": "NodePort"})).await;
    let local = create(
        "local",
        json!({"type": "NodePort", "externalTrafficPolicy": "Local"}),
    )
    .await;
    create("external", json!({"externalIPs": [EXTERNAL_IP]})).await;
    let caller = Client::start(cluster, &ns.name, "client").await;
    let client_ip = pods
        .get("client")
        .await
        .unwrap()
        .status
        .and_then(|s| s.pod_ip)
        .unwrap();
    for (name, ip, range) in [
        ("lb", LB_IP, format!("{client_ip}/32")),
        ("lb-blocked", BLOCKED_LB_IP, "192.0.2.0/24".to_string()),
    ] {
        create(
            name,
            json!({"type": "LoadBalancer", "loadBalancerSourceRanges": [range]}),
        )
        .await;
        // No cloud provider in the lab: the test plays its part.
        services
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}})),
            )
            .await
            .unwrap();
    }
    let all = wait_ready_pods(&pods, "tier=spread", 4).await;
    let on_node = |node: usize| {
        let pods = pods.clone();
        async move { ready_pods(&pods, &format!("app=on-{node}")).await }
    };

    // 300 connections to the ClusterIP from the other node reach all four
    // backends, roughly evenly (each ≥ 30 of an expected 75).
    let spread_address = format!("{}:80", spread.cluster_ip.unwrap());
    wait_answer_set(&caller, &spread_address, &all).await;
    let answers = caller.probe(&spread_address, 300, None);
    let counts = tally(&answers);
    eprintln!("300 connections to {spread_address}: {counts:?}");
    assert!(
        answers.iter().all(Result::is_ok),
        "failed connections: {:?}",
        answers.iter().filter(|a| a.is_err()).collect::<Vec<_>>()
    );
    assert_eq!(counts.keys().cloned().collect::<BTreeSet<_>>(), all);
    assert!(counts.values().all(|&n| n >= 30), "uneven: {counts:?}");

    // ClientIP affinity: one client, one backend.
    let sticky_address = format!("{}:80", sticky.cluster_ip.unwrap());
    let (c, a) = (&caller, sticky_address.as_str());
    crate::wait::until("the sticky Service to answer", T, || async move {
        Ok(c.probe(a, 1, None)[0].is_ok().then_some(()))
    })
    .await
    .unwrap();
    let answers = caller.probe(&sticky_address, 50, None);
    let counts = tally(&answers);
    assert!(
        counts.len() == 1 && answers.iter().all(Result::is_ok),
        "ClientIP affinity answered {counts:?} ({} failed)",
        answers.iter().filter(|a| a.is_err()).count()
    );

    // NodePorts from this host on each node: `Cluster` reaches any backend
    // with the source rewritten; `Local` only that node's, with this host's
    // address as the source.
    let host = std::net::IpAddr::V4(network.host_ip());
    let cluster_port = masqueraded.ports.unwrap()[0].node_port.unwrap();
    let local_port = local.ports.unwrap()[0].node_port.unwrap();
    for node in [SERVER_NODE, CLIENT_NODE] {
        let ip = network.node(node).ip();
        for (name, source) in answers_from_host(&format!("{ip}:{cluster_port}")).await {
            assert!(all.contains(&name), "{name} answered {ip}:{cluster_port}");
            assert_ne!(
                source, host,
                "{ip}:{cluster_port} (Cluster) was not masqueraded"
            );
        }
        let locals = on_node(node).await;
        for (name, source) in answers_from_host(&format!("{ip}:{local_port}")).await {
            assert!(
                locals.contains(&name),
                "{name} answered {ip}:{local_port} (Local) but is not on real-{node}: {locals:?}"
            );
            assert_eq!(
                source, host,
                "{ip}:{local_port} (Local) did not keep the client's address"
            );
        }
    }

    // An external IP and load-balancer ingress IPs, from the client pod
    // (routed to its node, where the proxy catches them); a source range
    // that leaves the client out drops its connections.
    for address in [format!("{EXTERNAL_IP}:80"), format!("{LB_IP}:80")] {
        let (c, a) = (&caller, address.as_str());
        crate::wait::until(&format!("{a} to answer"), T, || async move {
            Ok(c.probe(a, 1, None)[0].is_ok().then_some(()))
        })
        .await
        .unwrap();
        let answers = caller.probe(&address, 20, None);
        assert!(
            answers
                .iter()
                .all(|a| a.as_ref().is_ok_and(|(n, _)| all.contains(n))),
            "{address}: {answers:?}"
        );
    }
    let blocked = caller.probe(&format!("{BLOCKED_LB_IP}:80"), 3, None);
    assert!(
        blocked.iter().all(Result::is_err),
        "{BLOCKED_LB_IP} answered a client ({client_ip}) outside its loadBalancerSourceRanges: {blocked:?}"
    );

    // Scaling down: the answer set follows.
    let scaled_at = Instant::now();
    scale_named(&deployments, &format!("on-{SERVER_NODE}"), 1).await;
    let remaining = wait_ready_pods(&pods, "tier=spread", 3).await;
    wait_answer_set(&caller, &spread_address, &remaining).await;
    eprintln!(
        "answer set of {spread_address} followed the scale-down in {:?}",
        scaled_at.elapsed()
    );

    for name in [
        "spread",
        "sticky",
        "cluster",
        "local",
        "external",
        "lb",
        "lb-blocked",
    ] {
        services.delete(name, &Default::default()).await.unwrap();
    }
    rules_gone(cluster, &format!("{}/", ns.name)).await;
    assert_eq!(host_proxy_rules(), Vec::<String>::new());
}

/// A UDP client sending from one source port keeps being answered when its
/// backend is replaced: without clearing the flow's conntrack entry its
/// datagrams would go on to the old pod's address.
pub async fn udp_follows_a_replaced_backend(cluster: &Cluster) {
    let Scene {
        client: _,
        ns,
        deployments,
        pods,
        services,
    } = Scene::new(cluster, "udp").await;
    let d = servers("dns", "udp", SERVER_NODE, 1);
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "dns"},
        "spec": {"selector": {"tier": "udp"},
                 "ports": [{"name": "udp", "port": 53, "protocol": "UDP", "targetPort": 9000}]},
    }))
    .unwrap();
    let ip = services
        .create(&PostParams::default(), &service)
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap();
    let address = format!("{ip}:53");
    let caller = Client::start(cluster, &ns.name, "client").await;
    let first = wait_ready_pods(&pods, "tier=udp", 1).await;

    const SOURCE_PORT: u16 = 40053;
    let answered_by = |wanted: BTreeSet<String>| {
        let (c, a) = (&caller, address.clone());
        async move {
            crate::wait::until(&format!("{a} to answer from {wanted:?}"), T, || {
                let (a, wanted) = (a.clone(), wanted.clone());
                async move {
                    let answer = c.probe(&a, 1, Some(SOURCE_PORT)).remove(0);
                    Ok(answer.ok().filter(|(name, _)| wanted.contains(name)))
                }
            })
            .await
            .unwrap()
        }
    };
    answered_by(first.clone()).await;

    let old = first.iter().next().unwrap().clone();
    pods.delete(&old, &Default::default()).await.unwrap();
    let replaced = crate::wait::until("a new ready backend", T, || {
        let pods = pods.clone();
        let old = old.clone();
        async move {
            let ready = ready_pods(&pods, "tier=udp").await;
            Ok((ready.len() == 1 && !ready.contains(&old)).then_some(ready))
        }
    })
    .await
    .unwrap();
    let started = Instant::now();
    answered_by(replaced).await;
    eprintln!(
        "{address} answered from the new backend {:?} after it was ready",
        started.elapsed()
    );
}

/// The lab's cluster is dual-stack, and so is each proxy: an IPv6 Service
/// (SingleStack IPv6, no selector) whose EndpointSlice names a listener on
/// the server node's IPv6 address answers a client on the other node through
/// its IPv6 ClusterIP, which only that node's IPv6 rules can translate; an
/// IPv6 Service without endpoints is refused at once. (The lab's pods are
/// IPv4 only: the endpoint is the node's own address.)
pub async fn ipv6_services_answer_across_nodes(cluster: &Cluster) {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use std::io::{ErrorKind, Read, Write};
    let Scene {
        client,
        ns,
        services,
        ..
    } = Scene::new(cluster, "six").await;
    let nodes = real_nodes(cluster);
    let (server, caller) = (
        nodes.network.node(SERVER_NODE),
        nodes.network.node(CLIENT_NODE),
    );
    let netns = |node: &crate::realnode::plan::NodePlan| {
        std::path::PathBuf::from(format!("/run/netns/{}", node.netns()))
    };
    let listener = crate::realnode::forward::bind_in_netns(
        &netns(&server),
        &[std::net::SocketAddr::new(server.ip6().into(), 0)],
    )
    .unwrap()
    .remove(0);
    listener.set_nonblocking(false).unwrap();
    let port = listener.local_addr().unwrap().port();
    // Answers every connection with "six" until the test ends.
    std::thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            let _ = conn.write_all(b"six");
        }
    });

    let six = json!({"selector": null, "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv6"],
                     "ports": [{"name": "tcp", "port": 80, "protocol": "TCP", "targetPort": port}]});
    let cluster_ip = |service: Service| service.spec.unwrap().cluster_ip.unwrap();
    let web = cluster_ip(
        services
            .create(&PostParams::default(), &service_json("web6", six.clone()))
            .await
            .unwrap(),
    );
    let empty = cluster_ip(
        services
            .create(&PostParams::default(), &service_json("empty6", six))
            .await
            .unwrap(),
    );
    assert!(web.contains(':'), "an IPv6 ClusterIP: {web}");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web6-manual", "labels": {"kubernetes.io/service-name": "web6"}},
        "addressType": "IPv6",
        "ports": [{"name": "tcp", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [server.ip6().to_string()], "conditions": {"ready": true},
                       "nodeName": server.name()}],
    }))
    .unwrap();
    Api::<EndpointSlice>::namespaced(client, &ns.name)
        .create(&PostParams::default(), &slice)
        .await
        .unwrap();

    let from_caller = |address: String| {
        let netns = netns(&caller);
        async move {
            let address: std::net::SocketAddr = address.parse().unwrap();
            tokio::task::spawn_blocking(move || {
                let mut stream = crate::realnode::forward::connect_in_netns(&netns, address)?;
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(Duration::from_secs(3)))?;
                let mut text = String::new();
                stream.read_to_string(&mut text)?;
                Ok::<_, std::io::Error>(text)
            })
            .await
            .unwrap()
        }
    };
    let web_address = format!("[{web}]:80");
    crate::wait::until(&format!("{web_address} to answer"), T, || {
        let fetch = from_caller(web_address.clone());
        async move { Ok(fetch.await.ok().filter(|text| text == "six")) }
    })
    .await
    .unwrap();

    let empty_address = format!("[{empty}]:80");
    crate::wait::until(&format!("{empty_address} to be refused"), T, || {
        let fetch = from_caller(empty_address.clone());
        async move {
            let started = Instant::now();
            let refused = matches!(fetch.await, Err(e) if e.kind() == ErrorKind::ConnectionRefused);
            Ok((refused && started.elapsed() < Duration::from_secs(2)).then_some(()))
        }
    })
    .await
    .unwrap();
}

/// `understudy-testserver hold` running in the client pod: stdin kept open
/// until [`Hold::finish`].
struct Hold {
    child: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Hold {
    async fn start(client: &Client, address: &str, echo: &str) -> Hold {
        let mut child = Command::new(&client.kubectl)
            .arg(format!("--kubeconfig={}", client.kubeconfig.display()))
            .args(["-n", &client.namespace, "exec", "-i", &client.pod, "--"])
            .args(["understudy-testserver", "hold", address, echo])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let first = tokio::time::timeout(
            T,
            tokio::task::spawn_blocking(move || {
                use std::io::BufRead;
                let mut line = String::new();
                stdout.read_line(&mut line).map(|_| (line, stdout))
            }),
        )
        .await
        .expect("hold to start within the deadline")
        .unwrap()
        .unwrap();
        assert!(
            first.0.starts_with("holding "),
            "hold did not start: {:?}",
            first.0
        );
        Hold {
            child,
            stdout: first.1,
        }
    }

    /// Closes stdin; the summary.
    async fn finish(mut self) -> serde_json::Value {
        drop(self.child.stdin.take());
        let mut stdout = self.stdout;
        let text = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut text = String::new();
            stdout.read_to_string(&mut text).map(|_| text)
        })
        .await
        .unwrap()
        .unwrap();
        let _ = self.child.wait();
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text:?}"))
    }
}

/// Kills the process when dropped (a test that fails midway leaves no kube-proxy behind).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The chart's understudy-proxy pod on real node `index`, if any: (name, ready).
async fn proxy_pod_on(client: &kube::Client, index: usize) -> Option<(String, bool)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), crate::chart::NAMESPACE);
    let list = pods
        .list(&kube::api::ListParams::default().labels("app.kubernetes.io/component=proxy"))
        .await
        .unwrap();
    let node = format!("real-{index}");
    list.items
        .into_iter()
        .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str()))
        .map(|p| {
            (
                p.metadata.name.clone().unwrap_or_default(),
                pod_is_ready(&p),
            )
        })
}

/// Where the chart's proxy DaemonSet may run: `Some(node)` pins it to that
/// node's name, `None` lets it back onto every real node.
async fn pin_proxy_daemonset(client: &kube::Client, node: Option<&str>) {
    let sets: Api<k8s_openapi::api::apps::v1::DaemonSet> =
        Api::namespaced(client.clone(), crate::chart::NAMESPACE);
    sets.patch(
        "understudy-proxy",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": {"spec": {
            "nodeSelector": {"kubernetes.io/hostname": node}}}}})),
    )
    .await
    .unwrap();
}

/// Until node `index`'s rules do (or do not) contain `marker`.
async fn wait_rules(cluster: &Cluster, index: usize, marker: &str, present: bool) {
    crate::wait::until(
        &format!("real-{index}'s rules to {}contain {marker}", if present { "" } else { "not " }),
        T,
        || async move { Ok((node_rules(cluster, index).contains(marker) == present).then_some(())) },
    )
    .await
    .unwrap();
}

/// Requests a hand-over may lose: one minSyncPeriod (1 s) of `hold`'s 100 ms cadence.
const HANDOVER_LOSS_ALLOWED: usize = 10;

/// The client's node handed from understudy-proxy to kube-proxy and back,
/// the way an operator would (start the new proxy, stop the old one,
/// `--cleanup` its rules), while a client pod on it holds one connection
/// and opens a new one every 100 ms to backends on the other node: the held
/// connection never breaks and at most one sync period of new ones fail.
pub async fn handover_keeps_connections(cluster: &Cluster) {
    let local = cluster.local.as_ref().expect("the lab's own cluster");
    let Scene {
        client,
        ns,
        deployments,
        pods,
        services,
    } = Scene::new(cluster, "handover").await;
    let d = servers("web", "handover", SERVER_NODE, 2);
    deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let mut addresses = Vec::new();
    for (name, port, target) in [("web", 80, 9000), ("echo", 81, 9001)] {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"selector": {"tier": "handover"},
                     "ports": [{"name": "tcp", "port": port, "protocol": "TCP", "targetPort": target}]},
        }))
        .unwrap();
        let ip = services
            .create(&PostParams::default(), &service)
            .await
            .unwrap()
            .spec
            .unwrap()
            .cluster_ip
            .unwrap();
        addresses.push(format!("{ip}:{port}"));
    }
    let caller = Client::start(cluster, &ns.name, "client").await;
    let all = wait_ready_pods(&pods, "tier=handover", 2).await;
    wait_answer_set(&caller, &addresses[0], &all).await;
    let hold = Hold::start(&caller, &addresses[0], &addresses[1]).await;
    let netns = real_nodes(cluster).network.node(CLIENT_NODE).netns();

    // understudy-proxy → kube-proxy.
    let kube_proxy = KillOnDrop(
        crate::realnode::kube_proxy_command(local, CLIENT_NODE, &[])
            .unwrap()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_rules(cluster, CLIENT_NODE, "KUBE-SVC-", true).await;
    pin_proxy_daemonset(&client, Some(&format!("real-{SERVER_NODE}"))).await;
    let c = &client;
    crate::wait::until(
        "understudy-proxy to leave the client's node",
        T,
        || async move { Ok(proxy_pod_on(c, CLIENT_NODE).await.is_none().then_some(())) },
    )
    .await
    .unwrap();
    let ours = crate::fixture::binaries_dir().join("understudy-proxy");
    let out = Command::new("ip")
        .args(["netns", "exec", &netns])
        .arg(&ours)
        .arg("--cleanup")
        .output()
        .unwrap();
    assert!(out.status.success(), "understudy-proxy --cleanup: {out:?}");
    wait_rules(cluster, CLIENT_NODE, "US-", false).await;

    // kube-proxy → understudy-proxy.
    pin_proxy_daemonset(&client, None).await;
    crate::wait::until(
        "understudy-proxy ready on the client's node",
        T,
        || async move {
            Ok(proxy_pod_on(c, CLIENT_NODE)
                .await
                .is_some_and(|(_, ready)| ready)
                .then_some(()))
        },
    )
    .await
    .unwrap();
    wait_rules(cluster, CLIENT_NODE, "US-SVC-", true).await;
    drop(kube_proxy);
    let out = crate::realnode::kube_proxy_command(local, CLIENT_NODE, &["--cleanup"])
        .unwrap()
        .output()
        .unwrap();
    assert!(out.status.success(), "kube-proxy --cleanup: {out:?}");
    wait_rules(cluster, CLIENT_NODE, "KUBE-SVC-", false).await;
    // Still served, now by ours alone.
    wait_answer_set(&caller, &addresses[0], &all).await;

    let summary = hold.finish().await;
    eprintln!("hand-over while holding a connection: {summary}");
    assert_eq!(
        summary["heldFailedAtMs"],
        serde_json::Value::Null,
        "the held connection broke: {summary}"
    );
    assert!(summary["heldOk"].as_u64().unwrap_or(0) > 0, "{summary}");
    let lost = summary["newFailedAtMs"].as_array().map_or(0, Vec::len);
    assert!(
        lost <= HANDOVER_LOSS_ALLOWED,
        "{lost} new connections failed during the hand-over: {summary}"
    );
}

/// A healthCheckNodePort another process holds on a node: the proxy there
/// says so with upstream's Warning Event on the Service, and opens the port
/// once it is free.
pub async fn taken_health_check_port_is_reported(cluster: &Cluster) {
    let client = cluster.client().await;
    let ns = TestNamespace::create(cluster, &client, "hcport").await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let node = real_nodes(cluster).network.node(SERVER_NODE);
    let netns = std::path::PathBuf::from(format!("/run/netns/{}", node.netns()));
    // A port from the NodePort range that is free on the node and in the
    // cluster: held on the node first, then asked for by the Service.
    let mut attempt = 0u16;
    let (port, listener) = loop {
        attempt += 1;
        assert!(attempt < 50, "no free health check port found");
        let port = 30000
            + (std::process::id() as u16)
                .wrapping_mul(7)
                .wrapping_add(attempt * 13)
                % 2700;
        let Ok(mut held) = crate::realnode::forward::bind_in_netns(
            &netns,
            &[std::net::SocketAddr::from(([0, 0, 0, 0], port))],
        ) else {
            continue;
        };
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "taken"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                     "healthCheckNodePort": port, "selector": {"tier": "none"},
                     "ports": [{"name": "tcp", "port": 80, "protocol": "TCP", "targetPort": 9000}]},
        }))
        .unwrap();
        match services.create(&PostParams::default(), &service).await {
            Ok(_) => break (port, held.remove(0)),
            Err(kube::Error::Api(e)) if e.code == 422 => continue,
            Err(e) => panic!("creating the Service: {e}"),
        }
    };
    crate::pods::wait_event_with(
        &client,
        &ns.name,
        "taken",
        "FailedToStartServiceHealthcheck",
        &format!(
            "node {} failed to start healthcheck \"{}/taken\" on port {port}: ",
            node.name(),
            ns.name
        ),
        T,
    )
    .await
    .unwrap();
    drop(listener);
    local_endpoints_reported(&format!("http://{}:{port}/", node.ip()), 503, 0).await;
}

/// The conntrack settings a proxy makes at start-up, in every real node's
/// namespace: upstream's TCP timeouts by default (24 h established, 1 h
/// close-wait; the kernel's are 5 days and 60 s) and the UDP stream timeout
/// the lab's configuration file asks for.
pub async fn conntrack_settings_applied(cluster: &Cluster) {
    let network = real_nodes(cluster).network;
    let stream: u64 = crate::realnode::config::LAB_UDP_STREAM_TIMEOUT
        .trim_end_matches('s')
        .parse()
        .unwrap();
    for index in [SERVER_NODE, CLIENT_NODE] {
        let netns = network.node(index).netns();
        let netns = netns.as_str();
        for (name, want) in [
            ("nf_conntrack_tcp_timeout_established", 86400),
            ("nf_conntrack_tcp_timeout_close_wait", 3600),
            ("nf_conntrack_udp_timeout_stream", stream),
        ] {
            // The proxy may still be starting.
            crate::wait::until(&format!("{name} = {want} in {netns}"), T, || async move {
                let out = Command::new("ip")
                    .args(["netns", "exec", netns, "cat"])
                    .arg(format!("/proc/sys/net/netfilter/{name}"))
                    .output()
                    .map_err(|e| e.to_string())?;
                let value: Option<u64> = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
                Ok((value == Some(want)).then_some(()))
            })
            .await
            .unwrap();
        }
    }
}

/// The first line the server sends on a plain TCP connection.
async fn read_answer(address: &str) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        Ok::<_, std::io::Error>(text)
    };
    match tokio::time::timeout(Duration::from_secs(3), read).await {
        Ok(Ok(text)) if !text.is_empty() => Some(text),
        _ => None,
    }
}

/// Until the healthCheckNodePort answers `status` with `count` local endpoints.
async fn local_endpoints_reported(url: &str, status: u16, count: usize) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let want = format!("\"localEndpoints\": {count}");
    let (http, want) = (&http, want.as_str());
    crate::wait::until(
        &format!("{url} to report {count} local endpoints"),
        T,
        || async move {
            let Ok(response) = http.get(url).send().await else {
                return Ok(None);
            };
            let code = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            Ok((code == status && body.contains(want)).then_some(()))
        },
    )
    .await
    .unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_lines_parse_into_answers_or_errors() {
        let ok = parse_answer("web-1 10.200.0.7:40053");
        assert_eq!(ok, Ok(("web-1".to_string(), "10.200.0.7".parse().unwrap())));
        assert_eq!(
            parse_answer("error connection refused (os error 111)"),
            Err("connection refused (os error 111)".to_string())
        );
        assert!(parse_answer("web-1").is_err());
        assert!(parse_answer("web-1 nonsense").is_err());
        let answers = [ok.clone(), ok, parse_answer("web-2 10.0.0.1:1")];
        assert_eq!(
            tally(&answers).into_iter().collect::<Vec<_>>(),
            [("web-1".to_string(), 2), ("web-2".to_string(), 1)]
        );
    }
}
