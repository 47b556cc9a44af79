//! Real nodes: upstream kubelet + containerd + runc + CNI in the lab. A pod
//! placed by understudy-scheduler really runs there and answers on its pod
//! address; the apiserver reaches the kubelet (logs) with certificates both
//! sides check; `down` leaves nothing on the machine, and nothing is ever
//! written to the host's netfilter.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, LogParams};
use serde_json::json;
use understudy_e2e::fixture::{Cluster, ClusterSpec, TestNamespace, binaries_dir};
use understudy_e2e::images;
use understudy_e2e::pods;
use understudy_e2e::realnode::{self, REAL_NODE_LABEL};
use understudy_e2e::state::ClusterState;
use understudy_e2e::wait;
use understudy_e2e::workloads::pod_is_ready;

fn cluster() -> &'static Cluster {
    Cluster::shared(ClusterSpec {
        nodes: 1,
        understudies: "scheduler",
        start_understudies: true,
        real_nodes: 1,
        kwok: true,
        backend: None,
        proxy_mode: Default::default(),
    })
}

/// The lab's cluster, or `None` (the test says it is skipped) on an external
/// cluster: these tests are about the lab's own real nodes (`real-0`, its
/// network plan, `down`), which no other cluster has.
fn lab_cluster() -> Option<&'static Cluster> {
    (!on_external_cluster()).then(cluster)
}

fn on_external_cluster() -> bool {
    let external = std::env::var_os(understudy_e2e::fixture::EXTERNAL_KUBECONFIG).is_some();
    if external {
        eprintln!("skipped: a test of the lab's real nodes, not of an external cluster");
    }
    external
}

/// The test server's pod: its name through the downward API, the image the lab imported.
fn testserver_pod(name: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "tolerations": [{"key": realnode::REAL_NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{
                "name": "server",
                "image": images::reference(images::TESTSERVER_REPOSITORY),
                "imagePullPolicy": "Never",
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                "securityContext": {
                    "runAsNonRoot": true,
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    });
    understudy_e2e::workloads::merge(&mut pod, extra);
    pod
}

async fn wait_ready(api: &Api<Pod>, name: &str) -> Pod {
    wait::object(api, name, Duration::from_secs(90), |p: Option<&Pod>| {
        p.is_some_and(pod_is_ready)
    })
    .await
    .unwrap_or_else(|e| panic!("pod {name} Ready: {e}"))
}

async fn http_get(url: &str) -> String {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_pod_placed_by_understudy_scheduler_runs_on_the_real_node_and_answers_on_its_ip() {
    let Some(cluster) = lab_cluster() else { return };
    let client = cluster.client().await;
    let ns = TestNamespace::create(cluster, &client, "realnode").await;
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods::create(
        &api,
        testserver_pod(
            "web",
            json!({"spec": {
                "schedulerName": "understudy-scheduler",
                "nodeSelector": {REAL_NODE_LABEL: "true"},
            }}),
        ),
    )
    .await;
    let node = pods::wait_scheduled(&api, "web", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(node, "real-0");
    let pod = wait_ready(&api, "web").await;
    let ip = pod.status.unwrap().pod_ip.expect("a pod IP");
    let local = cluster.local.as_ref().unwrap();
    let real = local.real_nodes.as_ref().unwrap();
    let cidr = real.network.node(0).pod_cidr();
    assert!(
        ip.starts_with(cidr.trim_end_matches("0/24")),
        "{ip} is from the node's pod range {cidr}"
    );

    // From the host, straight to the pod: the answer names the pod and the
    // host's address on the node network as the caller.
    let body = http_get(&format!("http://{ip}:8080/")).await;
    let host = real.network.host_ip().to_string();
    assert!(
        body.starts_with("web ") && body.contains(&host),
        "answer {body:?}"
    );

    // TCP and UDP too.
    let tcp = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        let mut stream = tokio::net::TcpStream::connect((ip.as_str(), 9000)).await?;
        let mut line = String::new();
        stream.read_to_string(&mut line).await?;
        Ok::<_, std::io::Error>(line)
    })
    .await
    .expect("TCP answer in time")
    .unwrap();
    assert!(tcp.starts_with("web "), "{tcp:?}");
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
    socket.connect((ip.as_str(), 9000)).await.unwrap();
    let mut answer = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), async {
        // A datagram can be lost: ask again until one answer comes back.
        loop {
            socket.send(b"who").await.unwrap();
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut answer)).await
            {
                return n;
            }
        }
    })
    .await
    .expect("UDP answer in time");
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("web "));

    // The apiserver reads the container's log from the kubelet.
    let logs = api.logs("web", &LogParams::default()).await.unwrap();
    assert!(logs.contains("understudy-testserver web"), "{logs:?}");
}

#[tokio::test]
async fn the_real_node_registers_with_its_own_identity_and_real_capacity() {
    let Some(cluster) = lab_cluster() else { return };
    let client = cluster.client().await;
    let nodes: Api<Node> = Api::all(client);
    let node = nodes.get("real-0").await.unwrap();
    assert!(wait::node_is_ready(&node));
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(REAL_NODE_LABEL).map(String::as_str),
        Some("true")
    );
    let status = node.status.unwrap();
    let info = status.node_info.unwrap();
    assert_eq!(info.kubelet_version, "v1.37.2");
    assert!(
        info.container_runtime_version.starts_with("containerd://"),
        "{}",
        info.container_runtime_version
    );
    let addresses = status.addresses.unwrap();
    let real = cluster.local.as_ref().unwrap().real_nodes.clone().unwrap();
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == real.network.node(0).ip().to_string()),
        "{addresses:?}"
    );
    // NodeRestriction: the node's own credentials cannot touch another node.
    let local = cluster.local.as_ref().unwrap();
    let kubeconfig = realnode::config::NodePaths {
        dir: real.network.node(0).dir(),
    }
    .kubelet_kubeconfig();
    let output = Command::new(local.toolchain_dir.join("kubectl"))
        .args(["--kubeconfig", &kubeconfig.display().to_string()])
        .args(["--server", &local.server])
        .args(["label", "node", "kwok-node-0", "stolen=yes"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn host_rules() -> String {
    let iptables = Command::new("iptables-save").output().unwrap();
    let nft = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&iptables.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&nft.stdout).lines())
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn lab(args: &[&str]) -> std::process::Output {
    Command::new(binaries_dir().join("understudy-lab"))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn down_leaves_no_process_mount_namespace_link_cgroup_or_rule() {
    if on_external_cluster() {
        return;
    }
    let rules_before = host_rules();
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("lab");
    let name = format!("e2e-down-{}", std::process::id());
    let up = lab(&[
        "up",
        &format!("--name={name}"),
        &format!("--state-dir={}", state_dir.display()),
        "--nodes=0",
        "--real-nodes=1",
        "--understudies=none",
        "--no-kube-scheduler",
        "--quiet",
    ]);
    assert!(
        up.status.success(),
        "{}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    let state = ClusterState::load(&state_dir).unwrap().unwrap();
    let real = state.real_nodes.clone().unwrap();

    // Something running on the node, so there are containers, shims, pod
    // network namespaces and volume mounts to clean.
    let client = wait::client_for(&state.kubeconfig).await.unwrap();
    wait::accepts_pods(&client, "default", Duration::from_secs(60))
        .await
        .unwrap();
    let api: Api<Pod> = Api::namespaced(client, "default");
    pods::create(
        &api,
        testserver_pod("left", json!({"spec": {"nodeName": "real-0"}})),
    )
    .await;
    wait_ready(&api, "left").await;
    assert!(!realnode::leftovers(&real.network, real.count).is_empty());

    let down = lab(&[
        "down",
        &format!("--name={name}"),
        &format!("--state-dir={}", state_dir.display()),
    ]);
    assert!(
        down.status.success(),
        "{}{}",
        String::from_utf8_lossy(&down.stdout),
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(
        realnode::leftovers(&real.network, real.count),
        Vec::<String>::new()
    );
    assert!(!Path::new(&state_dir).exists());
    assert_eq!(
        host_rules(),
        rules_before,
        "the host's netfilter rules changed"
    );
}

#[tokio::test]
async fn pods_reach_the_apiserver_through_the_kubernetes_service() {
    let Some(cluster) = lab_cluster() else { return };
    let client = cluster.client().await;
    let ns = TestNamespace::create(cluster, &client, "realnode-api").await;
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let mut pod = testserver_pod(
        "client",
        json!({"spec": {"nodeName": "real-0", "restartPolicy": "Never"}}),
    );
    let container = &mut pod["spec"]["containers"][0];
    container["args"] = json!(["connect", "10.96.0.1:443"]);
    container.as_object_mut().unwrap().remove("readinessProbe");
    pods::create(&api, pod).await;
    let done = wait::object(
        &api,
        "client",
        Duration::from_secs(90),
        |p: Option<&Pod>| {
            matches!(
                p.and_then(|p| p.status.as_ref()?.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        },
    )
    .await
    .unwrap();
    let logs = api.logs("client", &LogParams::default()).await.unwrap();
    assert_eq!(
        done.status.unwrap().phase.as_deref(),
        Some("Succeeded"),
        "{logs}"
    );
    assert!(logs.contains("connected to 10.96.0.1:443"), "{logs}");
}

#[test]
fn a_node_that_fails_to_start_reports_its_last_log_lines_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("lab");
    let up = lab(&[
        "up",
        &format!("--name=e2e-broken-{}", std::process::id()),
        &format!("--state-dir={}", state_dir.display()),
        "--nodes=0",
        "--real-nodes=1",
        "--understudies=none",
        "--no-kube-scheduler",
        "--kubelet-arg=--no-such-flag",
        "--quiet",
    ]);
    assert!(!up.status.success());
    let stderr = String::from_utf8_lossy(&up.stderr);
    assert!(
        stderr.contains("kubelet/real-0 exited") && stderr.contains("unknown flag: --no-such-flag"),
        "one error with the kubelet's last log lines: {stderr}"
    );
    assert!(!state_dir.exists(), "a failed start removes its state");
    let owned = std::fs::read_dir(realnode::plan::SLOTS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|slot| {
            std::fs::read_to_string(slot.path().join("owner"))
                .is_ok_and(|owner| owner.trim() == state_dir.display().to_string())
        })
        .count();
    assert_eq!(owned, 0, "the failed lab's slot is released");
}
