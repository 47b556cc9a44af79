//! The Service data path with real packets on the lab's real node, run the
//! same way against understudy-proxy (the chart's DaemonSet) and upstream
//! kube-proxy (iptables mode, a process in the node's namespaces), so the
//! two answer for the same behaviour: a client pod reaches a ClusterIP and
//! the backend answers with its pod name; two backends both answer; with
//! none the connection is refused at once (REJECT, not a timeout); a
//! NodePort answers on the node's address; a LoadBalancer Service with
//! `externalTrafficPolicy: Local` has its healthCheckNodePort answered with
//! the node's count of ready local endpoints.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::chart::Backend;
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
    /// The chain prefix of the proxy's rules, and of the other one's.
    fn prefixes(self) -> (&'static str, &'static str) {
        match self {
            Proxy::Understudy => ("US-", "KUBE-SVC-"),
            Proxy::KubeProxy => ("KUBE-SVC-", "US-"),
        }
    }
}

/// The lab for `proxy`: ours replaces kube-proxy on the real node, or the
/// lab's kube-proxy serves it.
pub fn cluster_spec(proxy: Proxy) -> ClusterSpec {
    ClusterSpec {
        nodes: 1,
        understudies: match proxy {
            Proxy::Understudy => "proxy,scheduler,controllers",
            Proxy::KubeProxy => "scheduler,controllers",
        },
        start_understudies: true,
        real_nodes: 1,
        kwok: true,
        backend: Some(Backend::Chart),
    }
}

fn on_real_node() -> serde_json::Value {
    json!({
        "nodeSelector": {REAL_NODE_LABEL: "true"},
        "tolerations": [{"key": REAL_NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
    })
}

fn testserver_container(args: serde_json::Value) -> serde_json::Value {
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

/// `iptables-save` inside the real node's network namespace.
pub fn node_rules(cluster: &Cluster) -> String {
    let real = (cluster.local.as_ref())
        .and_then(|l| l.real_nodes.clone())
        .expect("a lab with a real node");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &real.network.node(0).netns(),
            "iptables-save",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
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
                    l.contains("US-") || l.contains("KUBE-SVC") || l.contains("KUBE-SERVICES")
                })
                .map(String::from),
        );
    }
    found
}

struct Client {
    kubectl: std::path::PathBuf,
    kubeconfig: std::path::PathBuf,
    namespace: String,
}

impl Client {
    /// `understudy-testserver connect` in the client pod: Ok(answer) or
    /// Err(error text), and how long it took.
    fn connect(&self, address: &str) -> (Result<String, String>, Duration) {
        let start = Instant::now();
        let out = Command::new(&self.kubectl)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(["-n", &self.namespace, "exec", "client", "--"])
            .args(["understudy-testserver", "connect", address])
            .output()
            .unwrap();
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
    api.patch(
        "web",
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
    let local = cluster.local.as_ref().expect("the lab's own cluster");
    let client = cluster.client().await;
    let ns = TestNamespace::create(cluster, &client, "datapath").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);

    let mut server = testserver_container(json!(["serve"]));
    server["readinessProbe"] = json!({"tcpSocket": {"port": 9000}, "periodSeconds": 1});
    let mut pod_spec = on_real_node();
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
    let health_port = local_lb.spec.unwrap().health_check_node_port.unwrap();
    let node_ip = local.real_nodes.as_ref().unwrap().network.node(0).ip();
    let health_url = format!("http://{node_ip}:{health_port}/");

    let mut client_pod = json!({
        "metadata": {"name": "client"},
        "spec": {"containers": [testserver_container(json!(["pause"]))]},
    });
    crate::workloads::merge(&mut client_pod["spec"], on_real_node());
    crate::pods::create(&pods, client_pod).await;
    crate::wait::object(&pods, "client", T, |p: Option<&Pod>| {
        p.is_some_and(pod_is_ready)
    })
    .await
    .unwrap();
    let caller = Client {
        kubectl: local.toolchain_dir.join("kubectl"),
        kubeconfig: cluster.kubeconfig.clone(),
        namespace: ns.name.clone(),
    };

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
    let rules = node_rules(cluster);
    let (ours, theirs) = proxy.prefixes();
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
    assert_eq!(
        host_proxy_rules(),
        Vec::<String>::new(),
        "the host's netfilter was written"
    );
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
