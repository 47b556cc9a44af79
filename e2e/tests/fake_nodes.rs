//! `understudy-lab fake-nodes`: the suite's fake nodes on a cluster that runs
//! no kwok of its own (as a kind cluster under `make e2e`). Here that cluster
//! is a lab started without kwok.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::conditions::is_pod_running;
use serde_json::json;
use understudy_e2e::fixture::{Cluster, ClusterSpec, TestNamespace, binaries_dir};
use understudy_e2e::nodes::{E2E_LABEL, NodeTemplate};
use understudy_e2e::pods::from_json;
use understudy_e2e::process::{children, pid_alive};
use understudy_e2e::wait;

fn cluster() -> &'static Cluster {
    Cluster::shared(ClusterSpec {
        nodes: 0,
        understudies: "none",
        start_understudies: false,
        real_nodes: 0,
        kwok: false,
        backend: None,
        proxy_mode: Default::default(),
    })
}

/// Stops the command on drop, so a failed assertion leaves no kwok behind.
struct FakeNodes(Child);

impl Drop for FakeNodes {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn fake_nodes_run_pods_on_a_cluster_without_kwok_and_stop_on_sigterm() {
    let cluster = cluster();
    if !cluster.is_local() {
        // An external cluster under `make e2e` already has this kwok running.
        eprintln!("skipped: needs a cluster without kwok, the lab's");
        return;
    }
    let client = cluster.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let mut template = NodeTemplate::default();
    template
        .extra_labels
        .insert(E2E_LABEL.to_string(), "true".to_string());
    let node = template.node(0, "v1.37.2");
    let name = node.metadata.name.clone().unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    // No kwok yet: nothing makes the node Ready.
    assert!(
        wait::nodes_ready(&client, 1, Duration::from_secs(3))
            .await
            .is_err(),
        "a fake node became Ready with no kwok running"
    );

    let mut fake_nodes = FakeNodes(
        Command::new(binaries_dir().join("understudy-lab"))
            .arg("fake-nodes")
            .arg(format!("--kubeconfig={}", cluster.kubeconfig.display()))
            .stdin(Stdio::null())
            .spawn()
            .expect("starting understudy-lab fake-nodes"),
    );
    wait::nodes_ready(&client, 1, Duration::from_secs(90))
        .await
        .unwrap();

    let ns = TestNamespace::create(cluster, &client, "fake-nodes").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let pod: Pod = from_json(json!({
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "web", "image": "registry.k8s.io/pause:3.10"}]},
    }));
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let running = wait::object(&pods, "web", Duration::from_secs(60), is_pod_running())
        .await
        .unwrap();
    assert_eq!(
        running.spec.unwrap().node_name.as_deref(),
        Some(name.as_str())
    );
    assert!(running.status.unwrap().pod_ip.is_some(), "no pod IP");

    // SIGTERM stops kwok with it, deletes the suite's fake nodes, and the
    // command exits successfully.
    let kwok = children(fake_nodes.0.id() as i32);
    assert_eq!(kwok.len(), 1, "expected one kwok child, got {kwok:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(fake_nodes.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait::until(
        "understudy-lab fake-nodes to exit",
        Duration::from_secs(30),
        || {
            let exited = fake_nodes.0.try_wait().map_err(|e| e.to_string());
            async move { exited }
        },
    )
    .await
    .unwrap();
    assert!(status.success(), "fake-nodes exited with {status}");
    assert!(
        nodes.get_opt(&name).await.unwrap().is_none(),
        "the suite's fake node {name} is left"
    );
    wait::until("kwok to exit", Duration::from_secs(30), || {
        let gone = !pid_alive(kwok[0]);
        async move { Ok(gone.then_some(())) }
    })
    .await
    .unwrap();
}
