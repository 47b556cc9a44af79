//! understudy-controllers e2e: Deployments, ReplicaSets, Endpoints and
//! EndpointSlices on the local control plane with upstream's versions of
//! those controllers switched off in kube-controller-manager.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;
use understudy_e2e::fixture::{Cluster, ClusterSpec, TestNamespace};
use understudy_e2e::wait;
use understudy_e2e::workloads::{
    self, NOWHERE, PAUSE_IMAGE, deployment, deployment_condition, replica_sets_of, revision,
    rolled_out, serving_pod, slice_endpoints, slices_of,
};

const T: Duration = Duration::from_secs(90);

fn cluster() -> &'static Cluster {
    Cluster::shared(ClusterSpec {
        nodes: 4,
        understudies: "controllers",
        start_understudies: true,
        real_nodes: 0,
        kwok: true,
        backend: None,
        proxy_mode: Default::default(),
    })
}

struct Ns {
    client: Client,
    ns: TestNamespace,
}

impl Ns {
    async fn new(prefix: &str) -> Self {
        let cluster = cluster();
        let client = cluster.client().await;
        wait::nodes_ready(&client, 4, T).await.unwrap();
        let ns = TestNamespace::create(cluster, &client, prefix).await;
        Self { client, ns }
    }
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }
}

async fn create_deployment(api: &Api<Deployment>, d: Deployment) -> Deployment {
    api.create(&PostParams::default(), &d)
        .await
        .unwrap_or_else(|e| panic!("creating deployment: {e}"))
}

async fn wait_rolled_out(api: &Api<Deployment>, name: &str) -> Deployment {
    wait::object(api, name, T, |d: Option<&Deployment>| {
        d.is_some_and(rolled_out)
    })
    .await
    .unwrap()
}

async fn set_image(api: &Api<Deployment>, name: &str, image: &str) {
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
    api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
}

async fn pods_of(api: &Api<Pod>, app: &str) -> Vec<Pod> {
    api.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread")]
async fn deployment_becomes_available_with_hashed_replica_set() {
    let t = Ns::new("avail").await;
    let deployments: Api<Deployment> = t.api();
    create_deployment(&deployments, deployment("web", 10, PAUSE_IMAGE, json!({}))).await;
    let d = wait_rolled_out(&deployments, "web").await;
    let status = d.status.clone().unwrap();
    assert_eq!(status.ready_replicas, Some(10));
    assert_eq!(
        deployment_condition(&d, "Progressing"),
        Some(("True".into(), "NewReplicaSetAvailable".into()))
    );
    assert_eq!(
        deployment_condition(&d, "Available"),
        Some(("True".into(), "MinimumReplicasAvailable".into()))
    );

    let sets = replica_sets_of(&t.api(), &d).await;
    assert_eq!(sets.len(), 1, "one ReplicaSet");
    let rs = &sets[0];
    let hash = rs
        .labels()
        .get("pod-template-hash")
        .cloned()
        .expect("hash label");
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    assert_eq!(revision(rs), 1);
    assert_eq!(rs.status.as_ref().unwrap().available_replicas, Some(10));

    let pods = pods_of(&t.api(), "web").await;
    assert_eq!(pods.len(), 10);
    for pod in &pods {
        let owner = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true));
        assert_eq!(owner.map(|o| o.name.as_str()), Some(rs.name_any().as_str()));
        assert_eq!(pod.labels().get("pod-template-hash"), Some(&hash));
    }
}

/// Sums of ReplicaSet replicas (spec) and available replicas (status) over
/// the namespace, sampled on every ReplicaSet change.
#[derive(Default, Debug)]
struct RolloutSamples {
    sets: BTreeMap<String, (i32, i32)>,
    max_spec: i32,
    min_available: i32,
}

fn sample_replica_sets(
    api: Api<ReplicaSet>,
) -> (Arc<Mutex<RolloutSamples>>, tokio::task::JoinHandle<()>) {
    let samples = Arc::new(Mutex::new(RolloutSamples {
        min_available: i32::MAX,
        ..Default::default()
    }));
    let out = samples.clone();
    let task = tokio::spawn(async move {
        let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
        while let Ok(Some(event)) = stream.try_next().await {
            let mut s = out.lock().unwrap();
            match event {
                Event::Apply(rs) | Event::InitApply(rs) => {
                    let spec = rs.spec.replicas.unwrap_or(0);
                    let available = rs
                        .status
                        .as_ref()
                        .and_then(|s| s.available_replicas)
                        .unwrap_or(0);
                    s.sets.insert(rs.name_any(), (spec, available));
                }
                Event::Delete(rs) => {
                    s.sets.remove(&rs.name_any());
                }
                _ => continue,
            }
            let spec: i32 = s.sets.values().map(|v| v.0).sum();
            let available: i32 = s.sets.values().map(|v| v.1).sum();
            s.max_spec = s.max_spec.max(spec);
            s.min_available = s.min_available.min(available);
        }
    });
    (samples, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_update_stays_within_surge_and_unavailable() {
    let t = Ns::new("rolling").await;
    let deployments: Api<Deployment> = t.api();
    let strategy = json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2, "maxUnavailable": 1}}});
    create_deployment(&deployments, deployment("roll", 10, PAUSE_IMAGE, strategy)).await;
    wait_rolled_out(&deployments, "roll").await;

    let (samples, task) = sample_replica_sets(t.api());
    wait::until("the sampler to see the first ReplicaSet", T, || async {
        Ok((samples.lock().unwrap().min_available == 10).then_some(()))
    })
    .await
    .unwrap();
    set_image(&deployments, "roll", "registry.k8s.io/pause:3.9").await;
    let d = wait::object(&deployments, "roll", T, |d: Option<&Deployment>| {
        d.is_some_and(|d| rolled_out(d) && d.metadata.generation == Some(2))
    })
    .await
    .unwrap();
    let sets = replica_sets_of(&t.api(), &d).await;
    wait::until("the old ReplicaSet's status to reach 0", T, || async {
        let s = samples.lock().unwrap();
        Ok((s.sets.len() == 2 && s.sets.values().map(|v| v.1).sum::<i32>() == 10).then_some(()))
    })
    .await
    .unwrap();
    task.abort();
    {
        let s = samples.lock().unwrap();
        assert!(s.max_spec <= 12, "replicas + maxSurge exceeded: {s:?}");
        assert!(
            s.min_available >= 9,
            "fewer than replicas - maxUnavailable available: {s:?}"
        );
        assert!(s.max_spec > 10, "the rollout was sampled: {s:?}");
    }

    assert_eq!(sets.len(), 2);
    assert_eq!(sets[0].spec.replicas, Some(0), "old scaled to 0");
    assert_eq!(revision(&sets[1]), 2);
    for pod in pods_of(&t.api(), "roll").await {
        if pod.metadata.deletion_timestamp.is_none() {
            assert_eq!(
                pod.spec.unwrap().containers[0].image.as_deref(),
                Some("registry.k8s.io/pause:3.9")
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn recreate_removes_old_pods_before_creating_new_ones() {
    let t = Ns::new("recreate").await;
    let deployments: Api<Deployment> = t.api();
    let d = create_deployment(
        &deployments,
        deployment(
            "re",
            4,
            PAUSE_IMAGE,
            json!({"strategy": {"type": "Recreate"}}),
        ),
    )
    .await;
    wait_rolled_out(&deployments, "re").await;
    let old_hash = replica_sets_of(&t.api(), &d).await[0].labels()["pod-template-hash"].clone();

    // Live pods by template hash, as the watch reports them; on the first new
    // pod, no old one may still exist.
    let pods: Api<Pod> = t.api();
    let overlap = Arc::new(Mutex::new(None::<usize>));
    let seen = overlap.clone();
    let watch = tokio::spawn(async move {
        let mut live: BTreeMap<String, String> = BTreeMap::new();
        let mut stream = watcher::watcher(pods, watcher::Config::default()).boxed();
        while let Ok(Some(event)) = stream.try_next().await {
            match event {
                Event::Apply(p) | Event::InitApply(p) => {
                    let hash = p
                        .labels()
                        .get("pod-template-hash")
                        .cloned()
                        .unwrap_or_default();
                    if hash != old_hash && !live.contains_key(&p.name_any()) {
                        let old = live.values().filter(|h| **h == old_hash).count();
                        seen.lock().unwrap().get_or_insert(old);
                    }
                    live.insert(p.name_any(), hash);
                }
                Event::Delete(p) => {
                    live.remove(&p.name_any());
                }
                _ => {}
            }
        }
    });
    set_image(&deployments, "re", "registry.k8s.io/pause:3.9").await;
    wait::object(&deployments, "re", T, |d: Option<&Deployment>| {
        d.is_some_and(|d| rolled_out(d) && d.metadata.generation == Some(2))
    })
    .await
    .unwrap();
    watch.abort();
    assert_eq!(
        *overlap.lock().unwrap(),
        Some(0),
        "old pods remained when new ones were created"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_reuses_the_old_replica_set_with_a_new_revision() {
    let t = Ns::new("rollback").await;
    let deployments: Api<Deployment> = t.api();
    create_deployment(&deployments, deployment("rb", 3, PAUSE_IMAGE, json!({}))).await;
    wait_rolled_out(&deployments, "rb").await;
    set_image(&deployments, "rb", "registry.k8s.io/pause:3.9").await;
    wait::object(&deployments, "rb", T, |d: Option<&Deployment>| {
        d.is_some_and(|d| rolled_out(d) && d.metadata.generation == Some(2))
    })
    .await
    .unwrap();
    // `kubectl rollout undo --to-revision=1` re-applies revision 1's template.
    set_image(&deployments, "rb", PAUSE_IMAGE).await;
    let d = wait::object(&deployments, "rb", T, |d: Option<&Deployment>| {
        d.is_some_and(|d| rolled_out(d) && d.metadata.generation == Some(3))
    })
    .await
    .unwrap();
    let sets = replica_sets_of(&t.api(), &d).await;
    assert_eq!(
        sets.len(),
        2,
        "no third ReplicaSet: {:?}",
        sets.iter().map(|s| s.name_any()).collect::<Vec<_>>()
    );
    let current = sets.last().unwrap();
    assert_eq!(revision(current), 3);
    assert_eq!(
        current
            .spec
            .template
            .as_ref()
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .image
            .as_deref(),
        Some(PAUSE_IMAGE)
    );
    assert_eq!(
        current
            .annotations()
            .get("deployment.kubernetes.io/revision-history")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("3")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn paused_deployment_waits_until_resumed() {
    let t = Ns::new("pause").await;
    let deployments: Api<Deployment> = t.api();
    let d = create_deployment(&deployments, deployment("pz", 2, PAUSE_IMAGE, json!({}))).await;
    wait_rolled_out(&deployments, "pz").await;
    deployments
        .patch(
            "pz",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    set_image(&deployments, "pz", "registry.k8s.io/pause:3.9").await;
    wait::object(&deployments, "pz", T, |d: Option<&Deployment>| {
        d.is_some_and(|d| {
            d.status.as_ref().and_then(|s| s.observed_generation) == Some(3)
                && deployment_condition(d, "Progressing")
                    .is_some_and(|(_, r)| r == "DeploymentPaused")
        })
    })
    .await
    .unwrap();
    assert_eq!(
        replica_sets_of(&t.api(), &d).await.len(),
        1,
        "no rollout while paused"
    );

    deployments
        .patch(
            "pz",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": false}})),
        )
        .await
        .unwrap();
    let d = wait::object(&deployments, "pz", T, |d: Option<&Deployment>| {
        d.is_some_and(|d| rolled_out(d) && d.metadata.generation == Some(4))
    })
    .await
    .unwrap();
    assert_eq!(replica_sets_of(&t.api(), &d).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_deadline_exceeded_when_pods_never_become_ready() {
    let t = Ns::new("deadline").await;
    let deployments: Api<Deployment> = t.api();
    let stuck = json!({
        "progressDeadlineSeconds": 5,
        "template": {"spec": {"nodeSelector": {NOWHERE: "true"}}},
    });
    create_deployment(&deployments, deployment("stuck", 2, PAUSE_IMAGE, stuck)).await;
    let d = wait::object(&deployments, "stuck", T, |d: Option<&Deployment>| {
        d.is_some_and(|d| {
            deployment_condition(d, "Progressing")
                .is_some_and(|(s, r)| s == "False" && r == "ProgressDeadlineExceeded")
        })
    })
    .await
    .unwrap();
    assert_eq!(
        deployment_condition(&d, "Available"),
        Some(("False".into(), "MinimumReplicasUnavailable".into()))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn scaling_during_a_rollout_is_proportional() {
    let t = Ns::new("scale").await;
    let deployments: Api<Deployment> = t.api();
    let strategy = json!({"strategy": {"rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}}});
    let d = create_deployment(&deployments, deployment("sc", 10, PAUSE_IMAGE, strategy)).await;
    wait_rolled_out(&deployments, "sc").await;
    // The new template can never run, so the rollout stalls half-way.
    let stall = json!({"spec": {"template": {"spec": {"nodeSelector": {NOWHERE: "true"}}}}});
    deployments
        .patch("sc", &PatchParams::default(), &Patch::Merge(stall))
        .await
        .unwrap();
    let sets_api: Api<ReplicaSet> = t.api();
    wait::until(
        "the rollout to stall with 13 replicas in 2 sets",
        T,
        || async {
            let sets = replica_sets_of(&sets_api, &d).await;
            let spec: Vec<i32> = sets.iter().map(|s| s.spec.replicas.unwrap_or(0)).collect();
            Ok((spec == vec![8, 5]).then_some(()))
        },
    )
    .await
    .unwrap();
    deployments
        .patch(
            "sc",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 20}})),
        )
        .await
        .unwrap();
    // 23 allowed (20 + maxSurge 3); the 10 added go 8:5 → old gets 6, new 4 (by
    // upstream's proportions, leftovers to the larger set).
    let sets = wait::until("proportional scale-up to 23", T, || async {
        let sets = replica_sets_of(&sets_api, &d).await;
        let spec: Vec<i32> = sets.iter().map(|s| s.spec.replicas.unwrap_or(0)).collect();
        Ok((spec.iter().sum::<i32>() == 23).then_some(spec))
    })
    .await
    .unwrap();
    assert_eq!(sets, vec![14, 9], "proportional split of 23 over 8:5");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_deployment_collects_its_replica_sets_and_pods() {
    let t = Ns::new("gc").await;
    let deployments: Api<Deployment> = t.api();
    create_deployment(&deployments, deployment("gone", 3, PAUSE_IMAGE, json!({}))).await;
    wait_rolled_out(&deployments, "gone").await;
    deployments
        .delete("gone", &DeleteParams::foreground())
        .await
        .unwrap();
    let sets: Api<ReplicaSet> = t.api();
    let pods: Api<Pod> = t.api();
    wait::until("ReplicaSets and pods to be collected", T, || async {
        let rs = sets
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items;
        let p = pods_of(&pods, "gone").await;
        Ok((rs.is_empty() && p.is_empty()).then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn replica_set_replaces_deleted_pods_and_adopts_orphans() {
    let t = Ns::new("rs").await;
    let pods: Api<Pod> = t.api();
    // An orphan that matches the selector is adopted instead of a new pod made.
    pods.create(&PostParams::default(), &serving_pod("orphan", "rs"))
        .await
        .unwrap();
    let sets: Api<ReplicaSet> = t.api();
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "rs"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "rs"}},
            "template": {"metadata": {"labels": {"app": "rs"}}, "spec": {"containers": [{"name": "c", "image": PAUSE_IMAGE}]}},
        },
    }))
    .unwrap();
    sets.create(&PostParams::default(), &rs).await.unwrap();
    wait::object(&sets, "rs", T, |rs: Option<&ReplicaSet>| {
        rs.and_then(|rs| rs.status.as_ref())
            .is_some_and(|s| s.ready_replicas == Some(3))
    })
    .await
    .unwrap();
    let orphan = pods.get("orphan").await.unwrap();
    assert!(
        orphan
            .owner_references()
            .iter()
            .any(|o| o.name == "rs" && o.controller == Some(true)),
        "orphan adopted"
    );
    assert_eq!(pods_of(&pods, "rs").await.len(), 3);

    let victim = pods_of(&pods, "rs")
        .await
        .into_iter()
        .find(|p| p.name_any() != "orphan")
        .unwrap();
    pods.delete(&victim.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    wait::until("a replacement pod", T, || async {
        let live: Vec<String> = pods_of(&pods, "rs")
            .await
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| p.name_any())
            .collect();
        Ok((live.len() == 3 && !live.contains(&victim.name_any())).then_some(()))
    })
    .await
    .unwrap();

    // Relabelling a pod out of the selector releases it and a new one replaces it.
    pods.patch(
        "orphan",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "elsewhere"}}})),
    )
    .await
    .unwrap();
    wait::object(&pods, "orphan", T, |p: Option<&Pod>| {
        p.is_some_and(|p| p.owner_references().is_empty())
    })
    .await
    .unwrap();
    wait::until("three pods selected again", T, || async {
        Ok((pods_of(&pods, "rs").await.len() == 3).then_some(()))
    })
    .await
    .unwrap();
}

async fn set_ready(pods: &Api<Pod>, name: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let now = jiff::Timestamp::now().to_string();
    let patch = json!({"status": {"conditions": [
        {"type": "Ready", "status": status, "lastTransitionTime": now},
        {"type": "ContainersReady", "status": status, "lastTransitionTime": now},
    ]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
}

async fn pod_ip(pods: &Api<Pod>, name: &str) -> String {
    let pod = wait::object(pods, name, T, |p: Option<&Pod>| {
        p.is_some_and(|p| {
            let st = p.status.as_ref();
            st.and_then(|s| s.pod_ip.as_ref()).is_some()
                && p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
    })
    .await
    .unwrap();
    pod.status.unwrap().pod_ip.unwrap()
}

/// (ready addresses, not-ready addresses) of an Endpoints object.
fn endpoint_addresses(ep: &Endpoints) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut ready = BTreeSet::new();
    let mut not_ready = BTreeSet::new();
    for subset in ep.subsets.iter().flatten() {
        ready.extend(subset.addresses.iter().flatten().map(|a| a.ip.clone()));
        not_ready.extend(
            subset
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| a.ip.clone()),
        );
    }
    (ready, not_ready)
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_and_slices_follow_pod_readiness_and_termination() {
    let t = Ns::new("endpoints").await;
    let pods: Api<Pod> = t.api();
    let services: Api<Service> = t.api();
    services
        .create(
            &PostParams::default(),
            &workloads::service("web", "web", json!("http")),
        )
        .await
        .unwrap();
    for name in ["a", "b", "c"] {
        pods.create(&PostParams::default(), &serving_pod(name, "web"))
            .await
            .unwrap();
    }
    let mut ips = BTreeMap::new();
    for name in ["a", "b", "c"] {
        ips.insert(name, pod_ip(&pods, name).await);
    }
    let all: BTreeSet<String> = ips.values().cloned().collect();
    let endpoints: Api<Endpoints> = t.api();
    let slices: Api<EndpointSlice> = t.api();

    let ep = wait::object(&endpoints, "web", T, |ep: Option<&Endpoints>| {
        ep.is_some_and(|ep| endpoint_addresses(ep).0 == all)
    })
    .await
    .unwrap();
    let port = ep.subsets.as_ref().unwrap()[0].ports.as_ref().unwrap()[0].clone();
    assert_eq!(
        (port.name.as_deref(), port.port),
        (Some("http"), 8080),
        "named targetPort resolved"
    );
    let managed = wait::until("slices with all three ready", T, || async {
        let s = slices_of(&slices, "web").await;
        let eps = slice_endpoints(&s);
        Ok((eps.len() == 3 && eps.values().all(|c| *c == (true, true, false))).then_some(s))
    })
    .await
    .unwrap();
    assert_eq!(managed.len(), 1);
    let slice = &managed[0];
    assert_eq!(
        slice
            .labels()
            .get("endpointslice.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("endpointslice-controller.k8s.io")
    );
    assert!(
        slice
            .owner_references()
            .iter()
            .any(|o| o.kind == "Service" && o.name == "web")
    );
    assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(8080));

    // b turns unready.
    set_ready(&pods, "b", false).await;
    let b = ips["b"].clone();
    wait::object(&endpoints, "web", T, |ep: Option<&Endpoints>| {
        ep.is_some_and(|ep| {
            let (ready, not_ready) = endpoint_addresses(ep);
            not_ready == BTreeSet::from([b.clone()]) && ready.len() == 2
        })
    })
    .await
    .unwrap();
    wait::until("b not ready in the slice", T, || async {
        let eps = slice_endpoints(&slices_of(&slices, "web").await);
        Ok((eps.get(&b) == Some(&(false, false, false))).then_some(()))
    })
    .await
    .unwrap();

    // c terminates; a finalizer holds it in Terminating.
    pods.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["understudy.dev/hold"]}})),
    )
    .await
    .unwrap();
    pods.delete("c", &DeleteParams::default()).await.unwrap();
    let c = ips["c"].clone();
    wait::until("c terminating in the slice", T, || async {
        let eps = slice_endpoints(&slices_of(&slices, "web").await);
        Ok((eps.get(&c) == Some(&(false, true, true))).then_some(()))
    })
    .await
    .unwrap();
    wait::object(&endpoints, "web", T, |ep: Option<&Endpoints>| {
        ep.is_some_and(|ep| {
            let (ready, not_ready) = endpoint_addresses(ep);
            !ready.contains(&c) && !not_ready.contains(&c)
        })
    })
    .await
    .unwrap();
    pods.patch(
        "c",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    wait::until("c gone from the slice", T, || async {
        Ok((!slice_endpoints(&slices_of(&slices, "web").await).contains_key(&c)).then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_fifty_pods_behind_one_service_fill_three_slices() {
    let t = Ns::new("slices").await;
    let deployments: Api<Deployment> = t.api();
    let services: Api<Service> = t.api();
    services
        .create(
            &PostParams::default(),
            &workloads::service("big", "big", json!(8080)),
        )
        .await
        .unwrap();
    create_deployment(&deployments, deployment("big", 250, PAUSE_IMAGE, json!({}))).await;
    wait::object(
        &deployments,
        "big",
        Duration::from_secs(180),
        |d: Option<&Deployment>| d.is_some_and(rolled_out),
    )
    .await
    .unwrap();
    let slices: Api<EndpointSlice> = t.api();
    let managed = wait::until("250 ready endpoints", T, || async {
        let s = slices_of(&slices, "big").await;
        let eps = slice_endpoints(&s);
        Ok((eps.len() == 250 && eps.values().all(|c| c.0)).then_some(s))
    })
    .await
    .unwrap();
    assert_eq!(managed.len(), 3, "250 endpoints at 100 per slice");
    assert!(
        managed
            .iter()
            .all(|s| s.endpoints.as_ref().map_or(0, Vec::len) <= 100)
    );
    // The Endpoints controller is a separate controller that follows the same
    // pods at its own pace, so it is waited for rather than read once.
    let endpoints: Api<Endpoints> = t.api();
    wait::object(&endpoints, "big", T, |ep: Option<&Endpoints>| {
        ep.is_some_and(|ep| endpoint_addresses(ep).0.len() == 250)
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_rejections_surface_as_replica_failure() {
    let t = Ns::new("quota").await;
    let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> = t.api();
    let quota = serde_json::from_value(json!({
        "metadata": {"name": "two-pods"},
        "spec": {"hard": {"pods": "2"}},
    }))
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    // The quota admits pods only once kube-controller-manager has counted usage.
    wait::object(
        &quotas,
        "two-pods",
        T,
        |q: Option<&k8s_openapi::api::core::v1::ResourceQuota>| {
            q.and_then(|q| q.status.as_ref())
                .and_then(|s| s.used.as_ref())
                .is_some()
        },
    )
    .await
    .unwrap();
    let deployments: Api<Deployment> = t.api();
    create_deployment(
        &deployments,
        deployment("capped", 4, PAUSE_IMAGE, json!({})),
    )
    .await;
    let d = wait::object(&deployments, "capped", T, |d: Option<&Deployment>| {
        d.is_some_and(|d| deployment_condition(d, "ReplicaFailure").is_some())
    })
    .await
    .unwrap();
    assert_eq!(
        deployment_condition(&d, "ReplicaFailure"),
        Some(("True".into(), "FailedCreate".into()))
    );
    let sets = replica_sets_of(&t.api(), &d).await;
    let rs_failure = sets[0]
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| {
            c.iter()
                .find(|c| c.type_.as_deref() == Some("ReplicaFailure"))
        })
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
    let (status, reason, message) = rs_failure.expect("ReplicaFailure on the ReplicaSet");
    assert_eq!(
        (status.as_deref(), reason.as_deref()),
        (Some("True"), Some("FailedCreate"))
    );
    assert!(message.unwrap_or_default().contains("exceeded quota"));
    assert_eq!(pods_of(&t.api(), "capped").await.len(), 2);

    // Room again: the failure clears and the rollout completes.
    quotas
        .delete("two-pods", &DeleteParams::default())
        .await
        .unwrap();
    wait::object(&deployments, "capped", T, |d: Option<&Deployment>| {
        d.is_some_and(|d| rolled_out(d) && deployment_condition(d, "ReplicaFailure").is_none())
    })
    .await
    .unwrap();
}
