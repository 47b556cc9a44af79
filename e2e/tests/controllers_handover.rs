//! Differential and hand-over e2e for understudy-controllers: the same
//! scenario with upstream's controllers and ours ends in the same objects,
//! and handing the controllers over mid-flight either way leaves no duplicate
//! or orphaned ReplicaSets, pods or EndpointSlices. Its own test binary (and
//! so its own cluster), because it restarts kube-controller-manager.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use understudy_e2e::controlplane::{ControllersSide, switch_controllers};
use understudy_e2e::differential::{self, handover_problems, snapshot};
use understudy_e2e::fixture::{Cluster, ClusterSpec, TestNamespace, binaries_dir};
use understudy_e2e::wait;
use understudy_e2e::workloads::rolled_out;

const T: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread")]
async fn upstream_and_ours_agree_and_hand_over_cleanly() {
    let cluster = Cluster::shared(ClusterSpec {
        nodes: 3,
        understudies: "controllers",
        start_understudies: true,
        real_nodes: 0,
        kwok: true,
        backend: None,
        proxy_mode: Default::default(),
    });
    let Some(local) = cluster.local.as_ref() else {
        eprintln!(
            "skipped: hand-over needs the local control plane (it restarts kube-controller-manager)"
        );
        return;
    };
    let client = cluster.client().await;
    wait::nodes_ready(&client, 3, T).await.unwrap();
    let upstream_ns = TestNamespace::create(cluster, &client, "diff-upstream").await;
    let ours_ns = TestNamespace::create(cluster, &client, "diff-ours").await;
    let scenario = differential::scenario("standard").unwrap();

    let report = differential::run(
        &client,
        &local.state_dir,
        &binaries_dir(),
        scenario,
        &upstream_ns.name,
        &ours_ns.name,
    )
    .await
    .unwrap();
    assert!(
        report.differences.is_empty(),
        "upstream and ours differ:\n{}",
        report.differences.join("\n")
    );
    assert!(
        report
            .ours
            .keys()
            .any(|k| k.starts_with("EndpointSlices of web"))
    );
    assert!(handover_problems(&report.ours).is_empty());

    // Ours now runs and has taken over what upstream made: nothing changes.
    let after = snapshot(&client, &upstream_ns.name).await.unwrap();
    assert_eq!(
        differential::diff(&report.upstream, &after),
        Vec::<String>::new(),
        "adopting upstream's objects changed them"
    );

    // Mid-flight: start a rollout under ours and hand it back to upstream
    // before it can finish, then forth again.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &upstream_ns.name);
    let image = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "registry.k8s.io/pause:3.8"}]}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Strategic(image))
        .await
        .unwrap();
    switch_controllers(
        &local.state_dir,
        ControllersSide::Upstream,
        &binaries_dir(),
        &[],
    )
    .await
    .unwrap();
    let web = wait::object(&deployments, "web", T, |d: Option<&Deployment>| {
        d.is_some_and(|d| rolled_out(d) && d.metadata.generation == Some(4))
    })
    .await
    .unwrap();
    let on_upstream = snapshot(&client, &upstream_ns.name).await.unwrap();
    assert!(
        handover_problems(&on_upstream).is_empty(),
        "{on_upstream:#?}"
    );
    assert!(
        on_upstream.contains_key("ReplicaSet web rev 3"),
        "{on_upstream:#?}"
    );
    assert_eq!(
        web.metadata.annotations.unwrap()["deployment.kubernetes.io/revision"],
        "3"
    );

    switch_controllers(
        &local.state_dir,
        ControllersSide::Understudy,
        &binaries_dir(),
        &[],
    )
    .await
    .unwrap();
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    wait::object(&deployments, "web", T, |d: Option<&Deployment>| {
        d.is_some_and(|d| rolled_out(d) && d.metadata.generation == Some(5))
    })
    .await
    .unwrap();
    let on_ours = snapshot(&client, &upstream_ns.name).await.unwrap();
    assert!(handover_problems(&on_ours).is_empty(), "{on_ours:#?}");
    let slices = on_ours
        .get("EndpointSlices of web")
        .unwrap()
        .as_array()
        .unwrap()
        .len();
    assert_eq!(
        slices, 1,
        "one slice for 5 endpoints, no duplicates: {on_ours:#?}"
    );
}
