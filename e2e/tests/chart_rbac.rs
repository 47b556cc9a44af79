//! The chart's RBAC is what the components need, no less and no more: a
//! workload that takes every code path that writes to the API (scheduling,
//! an unschedulable pod retried, preemption, a Deployment created, rolled,
//! rolled back by annotation, scaled and deleted, an orphan ReplicaSet
//! adopted, pods adopted and released, a Service's endpoints followed and
//! deleted, the proxy's watches of the Services and slices it programs and its
//! Starting Event, a volume bound and released, WaitForFirstConsumer claims
//! bound and sent to provisioning by the scheduler) runs against the chart's pods; the apiserver's audit log of the
//! chart's ServiceAccounts then shows no refused request, and every permission
//! the chart grants was used by at least one request.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{
    Endpoints, PersistentVolume, PersistentVolumeClaim, Pod, ResourceQuota, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use understudy_e2e::audit::{self, Permission};
use understudy_e2e::chart::{self, Backend};
use understudy_e2e::controlplane::AUDIT_LOG;
use understudy_e2e::fixture::{Cluster, ClusterSpec, TestNamespace};
use understudy_e2e::pods::{self, create_private_node, delete_node, from_json};
use understudy_e2e::wait;
use understudy_e2e::workloads::{deployment, rolled_out, service, slices_of};

const T: Duration = Duration::from_secs(90);
const SCHEDULER: &str = "understudy-scheduler";
const TESTED: [&str; 3] = [
    "understudy-scheduler",
    "understudy-controllers",
    "understudy-proxy",
];

fn cluster() -> &'static Cluster {
    Cluster::shared(ClusterSpec {
        nodes: 2,
        // The proxy in place of kube-proxy on the real node: its watches and
        // its Event are in the audit log, and the other pods reach the
        // apiserver through the rules it writes.
        understudies: "proxy,scheduler,controllers",
        start_understudies: true,
        real_nodes: 1,
        kwok: true,
        backend: Some(Backend::Chart),
        proxy_mode: Default::default(),
    })
}

fn p(group: &str, resource: &str, verb: &str) -> Permission {
    Permission {
        group: group.into(),
        resource: resource.into(),
        verb: verb.into(),
    }
}

/// Granted on purpose though no request ever shows them: the apiserver checks
/// them itself, on behalf of a request for something else.
fn exempt() -> BTreeSet<Permission> {
    [
        // Setting blockOwnerDeletion on an ownerReference needs update on the
        // owner's finalizers where OwnerReferencesPermissionEnforcement admission
        // runs (the lab's apiserver does not run it; many clusters do).
        p("apps", "deployments/finalizers", "update"),
        p("apps", "replicasets/finalizers", "update"),
        p("", "services/finalizers", "update"),
        // Endpoints naming addresses outside the pod network are authorized
        // against this virtual subresource by the Endpoints REST storage.
        p("", "endpoints/restricted", "create"),
    ]
    .into()
}

/// Pods of the test placed by understudy-scheduler: the test's private nodes only.
fn scheduled_pod(name: &str, ns: &str, class: Option<&str>, cpu: &str, labels: Value) -> Value {
    let mut pod = json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "schedulerName": SCHEDULER,
            "nodeSelector": {"understudy.dev/test": ns},
            "tolerations": [{"key": "understudy.dev/test", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
                            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                            "resources": {"requests": {"cpu": cpu}}}],
        },
    });
    if let Some(class) = class {
        pod["spec"]["priorityClassName"] = json!(class);
    }
    pod
}

/// The scheduler's writes: a binding, an unschedulable pod's condition and its
/// repeated FailedScheduling Event (a series), a preemption's victim marked
/// and deleted and the preemptor's nomination.
async fn scheduler_workload(client: &Client, ns: &str) -> Vec<String> {
    let node = format!("rbac-{ns}");
    create_private_node(client, &node, ns, "2", json!({})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let classes: Api<PriorityClass> = Api::all(client.clone());
    let mut class_names = Vec::new();
    for (suffix, value) in [("low", 10), ("high", 1000)] {
        let name = format!("{ns}-{suffix}");
        let pc: PriorityClass = from_json(json!({"metadata": {"name": name}, "value": value}));
        classes.create(&PostParams::default(), &pc).await.unwrap();
        class_names.push(name);
    }

    pods::create(
        &pods,
        scheduled_pod("low", ns, Some(&class_names[0]), "1500m", json!({})),
    )
    .await;
    pods::wait_scheduled(&pods, "low", T).await.unwrap();

    pods::create(&pods, scheduled_pod("huge", ns, None, "64", json!({}))).await;
    pods::wait_unschedulable(&pods, "huge", T).await.unwrap();
    // A pod bound to the node and deleted frees room as far as
    // NodeResourcesFit's queueing hint knows, so the pod is retried; the
    // same failure again extends the Event's series (a patch) instead of
    // writing a new Event. (A node label no pod selects would retry
    // nothing: the hints skip it, as upstream's.)
    let pokes = std::sync::atomic::AtomicU32::new(0);
    wait::until("FailedScheduling to recur as a series", T, || async {
        let name = format!(
            "poke-{}",
            pokes.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let bound: Pod = from_json(json!({
            "metadata": {"name": name},
            "spec": {"nodeName": node,
                     "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
        }));
        pods.create(&PostParams::default(), &bound)
            .await
            .map_err(|e| e.to_string())?;
        pods.delete(&name, &kube::api::DeleteParams::default().grace_period(0))
            .await
            .map_err(|e| e.to_string())?;
        let events = pods::events_for(client, ns, "huge").await;
        Ok(events
            .iter()
            .any(|e| e.reason.as_deref() == Some("FailedScheduling") && e.series.is_some())
            .then_some(()))
    })
    .await
    .unwrap();

    pods::create(
        &pods,
        scheduled_pod("high", ns, Some(&class_names[1]), "1500m", json!({})),
    )
    .await;
    pods::wait_scheduled(&pods, "high", T).await.unwrap();
    for name in ["huge", "high"] {
        let _ = pods.delete(name, &DeleteParams::default()).await;
    }
    delete_node(client, &node).await;
    class_names
}

/// The volume writes: the binder binds a claim (volume claimRef and status,
/// claim volumeName and status) and releases its volume once the claim is
/// deleted (reading the claim afresh first); the scheduler binds a volume to
/// a WaitForFirstConsumer claim in PreBind, and selects a node for a claim
/// of a class with a provisioner.
async fn volumes_workload(client: &Client, ns: &str) {
    let node = format!("rbac-volumes-{ns}");
    create_private_node(client, &node, ns, "2", json!({})).await;
    let classes: Api<StorageClass> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for (suffix, provisioner, mode) in [
        ("now", "kubernetes.io/no-provisioner", "Immediate"),
        (
            "later",
            "kubernetes.io/no-provisioner",
            "WaitForFirstConsumer",
        ),
        (
            "provisioned",
            "understudy.dev/nobody",
            "WaitForFirstConsumer",
        ),
    ] {
        let class: StorageClass = from_json(json!({
            "metadata": {"name": format!("{ns}-{suffix}")},
            "provisioner": provisioner,
            "volumeBindingMode": mode,
        }));
        classes
            .create(&PostParams::default(), &class)
            .await
            .unwrap();
        let claim: PersistentVolumeClaim = from_json(json!({
            "metadata": {"name": suffix},
            "spec": {
                "storageClassName": format!("{ns}-{suffix}"),
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }));
        if suffix != "provisioned" {
            let volume: PersistentVolume = from_json(json!({
                "metadata": {"name": format!("{ns}-{suffix}")},
                "spec": {
                    "storageClassName": format!("{ns}-{suffix}"),
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "hostPath": {"path": format!("/nonexistent/{ns}/{suffix}")},
                },
            }));
            volumes
                .create(&PostParams::default(), &volume)
                .await
                .unwrap();
        }
        claims.create(&PostParams::default(), &claim).await.unwrap();
    }
    let phase_is = |phase: &'static str| {
        move |c: Option<&PersistentVolumeClaim>| {
            c.and_then(|c| c.status.as_ref()?.phase.as_deref()) == Some(phase)
        }
    };
    wait::object(&claims, "now", T, phase_is("Bound"))
        .await
        .unwrap();
    claims
        .delete("now", &DeleteParams::default())
        .await
        .unwrap();
    wait::object(
        &volumes,
        &format!("{ns}-now"),
        T,
        |v: Option<&PersistentVolume>| {
            v.and_then(|v| v.status.as_ref()?.phase.as_deref()) == Some("Released")
        },
    )
    .await
    .unwrap();

    for claim in ["later", "provisioned"] {
        let mut pod = scheduled_pod(claim, ns, None, "100m", json!({}));
        pod["spec"]["volumes"] =
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
        pods::create(&pods, pod).await;
    }
    wait::object(&claims, "later", T, phase_is("Bound"))
        .await
        .unwrap();
    wait::object(
        &claims,
        "provisioned",
        T,
        |c: Option<&PersistentVolumeClaim>| {
            c.and_then(|c| c.metadata.annotations.as_ref())
                .is_some_and(|a| a.get("volume.kubernetes.io/selected-node") == Some(&node))
        },
    )
    .await
    .unwrap();
    for name in ["later", "provisioned"] {
        let _ = pods.delete(name, &DeleteParams::default()).await;
    }
    for suffix in ["now", "later", "provisioned"] {
        let _ = volumes
            .delete(&format!("{ns}-{suffix}"), &DeleteParams::default())
            .await;
        let _ = classes
            .delete(&format!("{ns}-{suffix}"), &DeleteParams::default())
            .await;
    }
    delete_node(client, &node).await;
}

async fn set_image(api: &Api<Deployment>, name: &str, image: &str) {
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
    api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
}

async fn wait_generation(api: &Api<Deployment>, name: &str, generation: i64) {
    wait::object(api, name, T, |d: Option<&Deployment>| {
        d.is_some_and(|d| rolled_out(d) && d.metadata.generation >= Some(generation))
    })
    .await
    .unwrap();
}

/// The controllers' writes: a Deployment that adopts an orphan ReplicaSet,
/// rolls twice (the oldest set deleted past revisionHistoryLimit), is rolled
/// back by the legacy annotation and scaled down; a ReplicaSet that adopts and
/// releases a pod; a Service whose Endpoints and slices follow and go.
async fn controllers_workload(client: &Client, ns: &str) {
    let node = format!("rbac-web-{ns}");
    create_private_node(client, &node, ns, "8", json!({})).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);

    services
        .create(
            &PostParams::default(),
            &service("web", "web", json!("http")),
        )
        .await
        .unwrap();
    let template = scheduled_pod("", ns, None, "10m", json!({"app": "web"}));
    let pod_spec = template["spec"].clone();
    // An older template than the Deployment's: adopted as an old set.
    let mut old_spec = pod_spec.clone();
    old_spec["containers"][0]["image"] = json!("registry.k8s.io/pause:3.7");
    // Its own selector is narrower than the Deployment's, so that it never
    // claims the test's other `app=web` pods.
    let old_labels = json!({"app": "web", "era": "old"});
    let orphan: ReplicaSet = from_json(json!({
        "metadata": {"name": "orphan", "labels": old_labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": old_labels},
            "template": {"metadata": {"labels": old_labels}, "spec": old_spec},
        },
    }));
    sets.create(&PostParams::default(), &orphan).await.unwrap();
    let web = deployment(
        "web",
        2,
        "registry.k8s.io/pause:3.10",
        json!({"revisionHistoryLimit": 1, "template": {"spec": pod_spec}}),
    );
    deployments
        .create(&PostParams::default(), &web)
        .await
        .unwrap();
    wait::object(&sets, "orphan", T, |rs: Option<&ReplicaSet>| {
        rs.is_none_or(|rs| !rs.owner_references().is_empty())
    })
    .await
    .unwrap();
    wait_generation(&deployments, "web", 1).await;
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    wait::object(&endpoints, "web", T, |e: Option<&Endpoints>| {
        e.and_then(|e| e.subsets.as_ref())
            .is_some_and(|s| s.iter().flat_map(|s| s.addresses.iter().flatten()).count() == 2)
    })
    .await
    .unwrap();

    // A pod whose named port maps elsewhere gets a slice of its own, which
    // is deleted (not reused: nothing new needs a slice) when the pod goes.
    let mut alt = scheduled_pod("alt", ns, None, "10m", json!({"app": "web"}));
    alt["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(9090);
    pods::create(&pods, alt).await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    wait::until("a second slice for the other port", T, || async {
        Ok((slices_of(&slices, "web").await.len() == 2).then_some(()))
    })
    .await
    .unwrap();
    pods.delete("alt", &DeleteParams::default()).await.unwrap();
    wait::until("the other port's slice to go", T, || async {
        Ok((slices_of(&slices, "web").await.len() == 1).then_some(()))
    })
    .await
    .unwrap();

    set_image(&deployments, "web", "registry.k8s.io/pause:3.9").await;
    wait_generation(&deployments, "web", 2).await;
    set_image(&deployments, "web", "registry.k8s.io/pause:3.8").await;
    wait_generation(&deployments, "web", 3).await;
    let rollback = json!({"metadata": {"annotations": {"deprecated.deployment.rollback.to": "0"}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(rollback))
        .await
        .unwrap();
    wait::object(&deployments, "web", T, |d: Option<&Deployment>| {
        d.is_some_and(|d| {
            !d.annotations()
                .contains_key("deprecated.deployment.rollback.to")
                && rolled_out(d)
        })
    })
    .await
    .unwrap();
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    wait::until("one web pod left", T, || async {
        let live = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        Ok((live == 1).then_some(()))
    })
    .await
    .unwrap();

    // A bare ReplicaSet adopts a matching pod, then releases it when relabelled.
    pods::create(
        &pods,
        scheduled_pod("stray", ns, None, "10m", json!({"app": "solo"})),
    )
    .await;
    let solo: ReplicaSet = from_json(json!({
        "metadata": {"name": "solo"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "solo"}},
            "template": {"metadata": {"labels": {"app": "solo"}}, "spec": pod_spec},
        },
    }));
    sets.create(&PostParams::default(), &solo).await.unwrap();
    wait::object(&pods, "stray", T, |p: Option<&Pod>| {
        p.is_some_and(|p| !p.owner_references().is_empty())
    })
    .await
    .unwrap();
    pods.patch(
        "stray",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "elsewhere"}}})),
    )
    .await
    .unwrap();
    wait::object(&pods, "stray", T, |p: Option<&Pod>| {
        p.is_some_and(|p| p.owner_references().is_empty())
    })
    .await
    .unwrap();

    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    wait::until("the Service's Endpoints and slices to go", T, || async {
        let gone = endpoints
            .get_opt("web")
            .await
            .map_err(|e| e.to_string())?
            .is_none()
            && slices_of(&slices, "web").await.is_empty();
        Ok(gone.then_some(()))
    })
    .await
    .unwrap();
    deployments
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    delete_node(client, &node).await;
}

/// A controller's repeated Event becomes a series (a patch): a ReplicaSet
/// whose pods a quota refuses reports FailedCreate on every retry.
async fn repeated_controller_event(client: &Client, ns: &str) {
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), ns);
    let quota: ResourceQuota = from_json(json!({
        "metadata": {"name": "no-pods"},
        "spec": {"hard": {"pods": "0"}},
    }));
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    // The quota admission refuses only once the quota controller has counted.
    wait::object(&quotas, "no-pods", T, |q: Option<&ResourceQuota>| {
        q.and_then(|q| q.status.as_ref())
            .is_some_and(|s| s.hard.is_some())
    })
    .await
    .unwrap();
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let capped: ReplicaSet = from_json(json!({
        "metadata": {"name": "capped"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "capped"}},
            "template": {"metadata": {"labels": {"app": "capped"}},
                         "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}},
        },
    }));
    sets.create(&PostParams::default(), &capped).await.unwrap();
    wait::until("FailedCreate to recur as a series", T, || async {
        let events = pods::events_for(client, ns, "capped").await;
        Ok(events
            .iter()
            .any(|e| e.reason.as_deref() == Some("FailedCreate") && e.series.is_some())
            .then_some(()))
    })
    .await
    .unwrap();
    sets.delete("capped", &DeleteParams::default())
        .await
        .unwrap();
    quotas
        .delete("no-pods", &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_charts_rbac_grants_exactly_what_the_components_use() {
    let cluster = cluster();
    let Some(local) = cluster.local.as_ref() else {
        eprintln!("skipped: the RBAC check reads the local apiserver's audit log");
        return;
    };
    let client = cluster.client().await;
    let ns = TestNamespace::create(cluster, &client, "rbac").await;
    let classes = scheduler_workload(&client, &ns.name).await;
    controllers_workload(&client, &ns.name).await;
    volumes_workload(&client, &ns.name).await;
    repeated_controller_event(&client, &ns.name).await;
    let priority_classes: Api<PriorityClass> = Api::all(client.clone());
    for class in classes {
        let _ = priority_classes
            .delete(&class, &DeleteParams::default())
            .await;
    }

    let log = local.logs_dir().join(AUDIT_LOG);
    let usage = audit::read_log(&log).unwrap();
    let mut problems = Vec::new();
    for (user, u) in &usage {
        for refused in &u.refused {
            problems.push(format!("{user}: refused {refused}"));
        }
    }
    for sa in TESTED {
        let user = format!("system:serviceaccount:{}:{sa}", chart::NAMESPACE);
        let granted = audit::rules_of(&client, chart::NAMESPACE, sa)
            .await
            .unwrap();
        assert!(!granted.is_empty(), "{sa} has no rules bound");
        let used = usage.get(&user).map(|u| u.used.clone()).unwrap_or_default();
        for unused in audit::unused(&granted, &used, &exempt()) {
            problems.push(format!("{sa}: grants {unused}, which nothing used"));
        }
    }
    assert!(
        problems.is_empty(),
        "the chart's RBAC and the components' requests disagree:\n  {}",
        problems.join("\n  ")
    );
}
