//! The chart's life on a cluster: `helm upgrade` switching a component off and
//! on again, then `helm uninstall`, each leaving nothing of what it removed.
//! A binary of its own: it takes the release away from every other test.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;
use serde_json::json;
use understudy_e2e::chart::{self, Backend};
use understudy_e2e::fixture::{Cluster, ClusterSpec, TestNamespace};
use understudy_e2e::pods;
use understudy_e2e::understudies::{Understudy, parse_set};
use understudy_e2e::wait;

const T: Duration = Duration::from_secs(120);

fn cluster() -> &'static Cluster {
    Cluster::shared(ClusterSpec {
        nodes: 1,
        understudies: "scheduler,proxy",
        start_understudies: true,
        real_nodes: 1,
        kwok: true,
        backend: Some(Backend::Chart),
        proxy_mode: Default::default(),
    })
}

async fn release_objects(client: &Client, component: Option<Understudy>) -> BTreeSet<String> {
    chart::release_objects(client, component)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn until_gone(client: &Client, component: Option<Understudy>, what: &str) {
    let result = wait::until(what, T, || async {
        let left = release_objects(client, component).await;
        Ok(left.is_empty().then_some(()))
    })
    .await;
    if let Err(e) = result {
        panic!("{e}; left: {:?}", release_objects(client, component).await);
    }
}

async fn scheduled_by_ours(client: &Client, ns: &TestNamespace, name: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods::create(
        &pods,
        json!({
            "metadata": {"name": name},
            "spec": {
                "schedulerName": "understudy-scheduler",
                "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
            },
        }),
    )
    .await;
    pods::wait_scheduled(&pods, name, T).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_upgrade_switches_the_scheduler_off_and_on_and_uninstall_leaves_nothing() {
    let cluster = cluster();
    let client = cluster.client().await;
    let Some(local) = cluster.local.as_ref() else {
        // On a cluster of `make e2e` the release is the suite's: not ours to remove.
        eprintln!(
            "skipped: helm upgrade/uninstall of the lab's own release needs the local control plane"
        );
        return;
    };
    let helm = chart::Helm::for_lab(local);
    let ns = TestNamespace::create(cluster, &client, "lifecycle").await;
    let values_file = local.state_dir.join("chart-values.json");
    let installed = parse_set("scheduler,proxy").unwrap();
    assert!(
        !release_objects(&client, Some(Understudy::Scheduler))
            .await
            .is_empty()
    );
    scheduled_by_ours(&client, &ns, "before").await;

    // Off: every scheduler object goes, the proxy stays as it was.
    let proxy_before = release_objects(&client, Some(Understudy::Proxy)).await;
    let without: BTreeSet<Understudy> = [Understudy::Proxy].into();
    helm.upgrade_install(&chart::lab_values(local, &without, &[]), &values_file)
        .unwrap();
    until_gone(
        &client,
        Some(Understudy::Scheduler),
        "the scheduler's objects to go",
    )
    .await;
    assert_eq!(
        release_objects(&client, Some(Understudy::Proxy)).await,
        proxy_before
    );

    // On again: Ready, and scheduling.
    helm.upgrade_install(&chart::lab_values(local, &installed, &[]), &values_file)
        .unwrap();
    chart::wait_ready(&client, &installed, T).await.unwrap();
    scheduled_by_ours(&client, &ns, "after").await;

    // Uninstall: nothing of the release anywhere. The Leases are the
    // components' own (not the chart's), as upstream's outlive kube-scheduler.
    helm.uninstall().unwrap();
    until_gone(&client, None, "every object of the release to go").await;
    let releases = helm.run(&["list", "--all-namespaces", "--short"]).unwrap();
    assert!(!releases.contains(chart::RELEASE), "{releases}");
}
