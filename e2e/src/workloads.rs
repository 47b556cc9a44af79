//! Builders and readers for the controller e2e tests and benchmarks:
//! Deployments, Services and the ReplicaSets/Endpoints/EndpointSlices the
//! controllers make from them.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";
/// Scheduled by nothing that exists, so such pods never become Ready.
pub const NOWHERE: &str = "understudy.dev/nowhere";

/// A Deployment of `replicas` pods labelled `app=<name>`; `extra` is merged
/// into its spec (strategy, minReadySeconds, …).
pub fn deployment(name: &str, replicas: i32, image: &str, extra: Value) -> Deployment {
    let mut spec = json!({
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": image}]},
        },
    });
    merge(&mut spec, extra);
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))
        .expect("valid deployment")
}

/// A ClusterIP Service selecting `app=<app>` on port 80 → `target_port`.
pub fn service(name: &str, app: &str, target_port: Value) -> k8s_openapi::api::core::v1::Service {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": app},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": target_port}],
        },
    }))
    .expect("valid service")
}

/// A pod labelled `app=<app>` with a container port named `http` on 8080.
pub fn serving_pod(name: &str, app: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{
            "name": "c", "image": PAUSE_IMAGE,
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        }]},
    }))
    .expect("valid pod")
}

/// Deep-merges `extra` into `base` (objects merge, everything else replaces).
pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

/// The ReplicaSets a Deployment controls, oldest revision first.
pub async fn replica_sets_of(api: &Api<ReplicaSet>, deployment: &Deployment) -> Vec<ReplicaSet> {
    let uid = deployment.uid();
    let mut sets: Vec<ReplicaSet> = api
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
        })
        .collect();
    sets.sort_by_key(revision);
    sets
}

/// `deployment.kubernetes.io/revision` of a ReplicaSet (0 when unset).
pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get("deployment.kubernetes.io/revision")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The status condition `type_` of a Deployment as (status, reason).
pub fn deployment_condition(d: &Deployment, type_: &str) -> Option<(String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_.as_deref() == Some(type_))
        .map(|c| {
            (
                c.status.clone().unwrap_or_default(),
                c.reason.clone().unwrap_or_default(),
            )
        })
}

/// Whether a Deployment has finished rolling out its current spec, as
/// `kubectl rollout status` decides it.
pub fn rolled_out(d: &Deployment) -> bool {
    let spec = &d.spec;
    let Some(status) = d.status.as_ref() else {
        return false;
    };
    let want = spec.replicas.unwrap_or(1);
    status.observed_generation >= d.metadata.generation
        && status.updated_replicas.unwrap_or(0) == want
        && status.replicas.unwrap_or(0) == want
        && status.available_replicas.unwrap_or(0) == want
        && deployment_condition(d, "Available").is_some_and(|(s, _)| s == "True")
}

/// The managed EndpointSlices of a Service.
pub async fn slices_of(api: &Api<EndpointSlice>, service: &str) -> Vec<EndpointSlice> {
    api.list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Each endpoint address of the slices with its conditions
/// (ready, serving, terminating).
pub fn slice_endpoints(slices: &[EndpointSlice]) -> BTreeMap<String, (bool, bool, bool)> {
    slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .flat_map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            let flags = (
                c.ready.unwrap_or(false),
                c.serving.unwrap_or(false),
                c.terminating.unwrap_or(false),
            );
            e.addresses.iter().map(move |a| (a.clone(), flags))
        })
        .collect()
}

/// The pod's Ready condition is True.
pub fn pod_is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}
