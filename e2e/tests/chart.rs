//! The Helm chart installed for real: understudy-scheduler's replicas as pods
//! of the chart hand over leadership when the leader's pod goes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;
use understudy_e2e::chart::{self, Backend};
use understudy_e2e::fixture::{Cluster, ClusterSpec, TestNamespace};
use understudy_e2e::pods::{self, create_private_node};
use understudy_e2e::wait;

const SCHEDULER: &str = "understudy-scheduler";
const T: Duration = Duration::from_secs(90);

fn cluster() -> &'static Cluster {
    Cluster::shared(ClusterSpec {
        nodes: 1,
        understudies: "scheduler",
        start_understudies: true,
        real_nodes: 1,
        kwok: true,
        backend: Some(Backend::Chart),
        proxy_mode: Default::default(),
    })
}

async fn holder(leases: &Api<Lease>) -> Result<Option<String>, String> {
    Ok(leases
        .get_opt(SCHEDULER)
        .await
        .map_err(|e| e.to_string())?
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty()))
}

/// Pods wait Unschedulable for a node that does not exist yet; the leading
/// replica's pod is deleted and the node created while no replica leads: the
/// other replica takes the Lease and binds every pod, each exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_leading_scheduler_pod_hands_over_and_binds_every_pending_pod_once() {
    let cluster = cluster();
    let client = cluster.client().await;
    let ns = TestNamespace::create(cluster, &client, "failover").await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), chart::NAMESPACE);
    let leader = wait::until("a scheduler replica to lead", T, || holder(&leases))
        .await
        .unwrap();
    // Identities are `<pod name>_<random>`, as upstream's.
    let leader_pod = leader.split('_').next().unwrap().to_string();

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let names: Vec<String> = (0..8).map(|i| format!("pending-{i}")).collect();
    for name in &names {
        pods::create(
            &pods,
            json!({
                "metadata": {"name": name},
                "spec": {
                    "schedulerName": SCHEDULER,
                    "nodeSelector": {"understudy.dev/test": ns.name},
                    "tolerations": [{"key": "understudy.dev/test", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}],
                },
            }),
        )
        .await;
    }
    for name in &names {
        pods::wait_unschedulable_with(&pods, name, T, "node(s) didn't match")
            .await
            .unwrap();
    }

    let chart_pods: Api<Pod> = Api::namespaced(client.clone(), chart::NAMESPACE);
    let deleted = Instant::now();
    chart_pods
        .delete(&leader_pod, &DeleteParams::default())
        .await
        .unwrap();
    let node = format!("failover-{}", ns.name);
    create_private_node(&client, &node, &ns.name, "8", json!({})).await;

    let new_leader = wait::until("another replica to take the Lease", T, || async {
        Ok(holder(&leases).await?.filter(|h| *h != leader))
    })
    .await
    .unwrap();
    let takeover = deleted.elapsed();
    assert!(!new_leader.starts_with(&format!("{leader_pod}_")));
    for name in &names {
        pods::wait_scheduled(&pods, name, T).await.unwrap();
    }
    let all_bound = deleted.elapsed();
    println!(
        "scheduler failover: Lease taken over {:.1}s after the leader's pod was deleted; \
         all {} pending pods bound after {:.1}s",
        takeover.as_secs_f64(),
        names.len(),
        all_bound.as_secs_f64()
    );

    for name in &names {
        let bound = pods.get(name).await.unwrap();
        assert_eq!(
            bound.spec.and_then(|s| s.node_name).as_deref(),
            Some(node.as_str())
        );
    }
    // One Scheduled Event per pod: a second bind (by the old leader, or twice
    // by the new one) would write a second.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let counts = wait::until("a Scheduled Event for every pod", T, || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for e in list
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("Scheduled"))
        {
            if let Some(name) = e.regarding.as_ref().and_then(|r| r.name.clone()) {
                *counts.entry(name).or_default() += e.deprecated_count.unwrap_or(1).max(1) as usize;
            }
        }
        Ok((counts.len() == names.len()).then_some(counts))
    })
    .await
    .unwrap();
    assert!(counts.values().all(|c| *c == 1), "{counts:?}");
}

/// Every Ready replica of the chart's scheduler answers the extender API
/// from its own synced cache, the standby too, so the extender Service can
/// send kube-scheduler's calls to any of them.
#[tokio::test(flavor = "multi_thread")]
async fn both_scheduler_replicas_serve_the_extender_api() {
    let cluster = cluster();
    let client = cluster.client().await;
    let nodes: Vec<String> = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let body = json!({
        "Pod": {
            "metadata": {"name": "probe", "namespace": "default", "uid": "probe-uid"},
            "spec": {"schedulerName": SCHEDULER, "containers": [{"name": "c", "image": "x"}]},
        },
        "NodeNames": nodes,
    });
    let chart_pods: Api<Pod> = Api::namespaced(client.clone(), chart::NAMESPACE);
    let leases: Api<Lease> = Api::namespaced(client.clone(), chart::NAMESPACE);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    // Another test of this binary deletes the leading pod: wait for a moment
    // when two replicas are Ready and both answer.
    let answered = wait::until(
        "both scheduler replicas to answer the extender API",
        2 * T,
        || async {
            let list = chart_pods
                .list(&ListParams::default().labels("app.kubernetes.io/component=scheduler"))
                .await
                .map_err(|e| e.to_string())?;
            let ready: Vec<(String, String)> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .filter_map(|p| {
                    Some((p.metadata.name.clone()?, p.status.as_ref()?.pod_ip.clone()?))
                })
                .collect();
            if ready.len() != 2 {
                return Ok(None);
            }
            let leader = holder(&leases).await?.unwrap_or_default();
            if !ready
                .iter()
                .any(|(name, _)| leader.starts_with(&format!("{name}_")))
            {
                // A hand-over in progress.
                return Ok(None);
            }
            let mut answers = vec![];
            for (name, ip) in &ready {
                let reply = http
                    .post(format!("http://{ip}:10360/scheduler/filter"))
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await;
                let Ok(reply) = reply else { return Ok(None) };
                let status = reply.status().as_u16();
                let text = reply.text().await.unwrap_or_default();
                if status != 200 {
                    return Err(format!("{name} answered {status}: {text}"));
                }
                answers.push((name.clone(), leader.starts_with(&format!("{name}_")), text));
            }
            Ok(Some(answers))
        },
    )
    .await
    .unwrap();
    assert_eq!(
        answered.iter().filter(|(_, leads, _)| *leads).count(),
        1,
        "{answered:?}"
    );
    for (name, _, text) in &answered {
        assert!(text.contains("NodeNames"), "{name}: {text}");
    }
}

fn helm(cluster: &Cluster) -> chart::Helm {
    chart::Helm::for_kubeconfig(&cluster.kubeconfig).unwrap()
}

/// A value of the wrong type never reaches the cluster: `helm install`
/// refuses it with the schema's message, naming the value.
#[tokio::test]
async fn a_value_of_the_wrong_type_is_refused_by_helm_install_with_the_schemas_message() {
    let helm = helm(cluster());
    let chart = chart::chart_dir().display().to_string();
    for (set, path, want) in [
        (
            "scheduler.replicas=two",
            "/scheduler/replicas",
            "want integer",
        ),
        ("proxy.mode=userspace", "/proxy/mode", "userspace"),
        ("controllers.bogus=1", "/controllers", "'bogus' not allowed"),
    ] {
        let err = helm
            .run(&[
                "install",
                "understudy-bad",
                &chart,
                "--namespace",
                "understudy-bad",
                "--create-namespace",
                "--set",
                set,
            ])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("values don't meet the specifications of the schema")
                && err.contains(path)
                && err.contains(want),
            "{set}: {err}"
        );
    }
    // Nothing was installed.
    let releases = helm.run(&["list", "--all-namespaces", "--short"]).unwrap();
    assert!(!releases.contains("understudy-bad"), "{releases}");
}

/// `helm lint --strict`, and the chart rendered with every component on
/// accepted by the apiserver's own validation (`--dry-run=server`).
#[tokio::test]
async fn the_chart_lints_and_the_apiserver_accepts_what_it_renders() {
    let cluster = cluster();
    let helm = helm(cluster);
    let chart = chart::chart_dir().display().to_string();
    let lint = helm.run(&["lint", "--strict", &chart]).unwrap();
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    let rendered = helm
        .run(&[
            "template",
            chart::RELEASE,
            &chart,
            "--namespace",
            chart::NAMESPACE,
            "--set",
            "scheduler.percentageOfNodesToScore=50",
            "--set",
            "proxy.mode=nftables",
        ])
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("rendered.yaml");
    std::fs::write(&manifest, &rendered).unwrap();
    let kubectl = understudy_e2e::toolchain::Toolchain::locate()
        .unwrap()
        .bin("kubectl");
    let output = std::process::Command::new(kubectl)
        .arg(format!("--kubeconfig={}", cluster.kubeconfig.display()))
        .args(["apply", "--dry-run=server", "-f"])
        .arg(&manifest)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    for kind in [
        "deployment.apps/understudy-scheduler",
        "daemonset.apps/understudy-proxy",
        "clusterrole.rbac.authorization.k8s.io/understudy-controllers",
    ] {
        assert!(text.contains(kind), "{kind} not validated:\n{text}");
    }
}
