//! Differential runs of the controllers: the same scripted scenario run with
//! upstream's controllers and with ours must end in the same objects, modulo
//! names, UIDs, IPs and timestamps. Objects are reduced to what the
//! controllers decide (replica counts, revisions, conditions, endpoint
//! readiness, slice shapes) and keyed by stable identities (a ReplicaSet is
//! `<deployment> rev <n>`, never its hashed name).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::wait;
use crate::workloads::{self, PAUSE_IMAGE, deployment, revision, rolled_out};

/// A scripted scenario: creates and changes objects in a namespace, then
/// waits until the controllers have settled them.
pub struct Scenario {
    pub name: &'static str,
    pub run: for<'a> fn(&'a Client, &'a str) -> BoxFuture<'a, Result<(), String>>,
}

pub const SCENARIOS: &[Scenario] = &[Scenario {
    name: "standard",
    run: standard,
}];

pub fn scenario(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

const SETTLE: Duration = Duration::from_secs(120);

/// Two Deployments (rolling and Recreate) rolled out, updated and scaled, a
/// bare ReplicaSet, and Services over them.
fn standard<'a>(client: &'a Client, ns: &'a str) -> BoxFuture<'a, Result<(), String>> {
    Box::pin(async move {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let services: Api<Service> = Api::namespaced(client.clone(), ns);
        let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
        let pp = PostParams::default();
        let e = |e: kube::Error| e.to_string();
        let rolling = json!({"strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}});
        deployments
            .create(&pp, &deployment("web", 6, PAUSE_IMAGE, rolling))
            .await
            .map_err(e)?;
        let recreate = json!({"strategy": {"type": "Recreate"}});
        deployments
            .create(&pp, &deployment("batch", 3, PAUSE_IMAGE, recreate))
            .await
            .map_err(e)?;
        services
            .create(&pp, &workloads::service("web", "web", json!(8080)))
            .await
            .map_err(e)?;
        services
            .create(&pp, &workloads::service("plain", "plain", json!(8080)))
            .await
            .map_err(e)?;
        let plain: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "plain"},
            "spec": {
                "replicas": 4,
                "selector": {"matchLabels": {"app": "plain"}},
                "template": {"metadata": {"labels": {"app": "plain"}},
                             "spec": {"containers": [{"name": "c", "image": PAUSE_IMAGE}]}},
            },
        }))
        .map_err(|e| e.to_string())?;
        sets.create(&pp, &plain).await.map_err(e)?;
        settle(&deployments, &["web", "batch"], 1).await?;

        let new_image = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "registry.k8s.io/pause:3.9"}]}}}});
        for name in ["web", "batch"] {
            deployments
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Strategic(new_image.clone()),
                )
                .await
                .map_err(e)?;
        }
        settle(&deployments, &["web", "batch"], 2).await?;
        deployments
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 8}})),
            )
            .await
            .map_err(e)?;
        settle(&deployments, &["web"], 3).await?;
        let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), ns);
        wait::object(&endpoints, "web", SETTLE, |ep: Option<&Endpoints>| {
            ep.is_some_and(|ep| ready_addresses(ep) == 8)
        })
        .await
        .map_err(|e| e.to_string())?;
        wait::object(&endpoints, "plain", SETTLE, |ep: Option<&Endpoints>| {
            ep.is_some_and(|ep| ready_addresses(ep) == 4)
        })
        .await
        .map_err(|e| e.to_string())?;
        // The EndpointSlice controller is a separate controller with its own
        // pace: the snapshot must not catch it half-way either.
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
        for (service, ready) in [("web", 8), ("plain", 4)] {
            wait::until(
                &format!("{ready} ready endpoints in the slices of {service}"),
                SETTLE,
                || {
                    let slices = slices.clone();
                    async move {
                        let endpoints = workloads::slice_endpoints(
                            &workloads::slices_of(&slices, service).await,
                        );
                        let settled = endpoints.len() == ready
                            && endpoints
                                .values()
                                .all(|&(r, _, terminating)| r && !terminating);
                        Ok::<_, String>(settled.then_some(()))
                    }
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

fn ready_addresses(ep: &Endpoints) -> usize {
    ep.subsets
        .iter()
        .flatten()
        .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
        .sum()
}

/// Until each named Deployment has observed `generation` and rolled out.
async fn settle(api: &Api<Deployment>, names: &[&str], generation: i64) -> Result<(), String> {
    for name in names {
        wait::object(api, name, SETTLE, |d: Option<&Deployment>| {
            d.is_some_and(|d| rolled_out(d) && d.metadata.generation == Some(generation))
        })
        .await
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// What the controllers decided in a namespace, by stable identity.
pub type Snapshot = BTreeMap<String, Value>;

async fn list<K>(client: &Client, ns: &str) -> Result<Vec<K>, String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| e.to_string())
}

/// Reduces the namespace's Deployments, ReplicaSets, pods, Endpoints and
/// EndpointSlices to what both implementations must agree on.
pub async fn snapshot(client: &Client, ns: &str) -> Result<Snapshot, String> {
    let deployments: Vec<Deployment> = list(client, ns).await?;
    let sets: Vec<ReplicaSet> = list(client, ns).await?;
    let pods: Vec<Pod> = list(client, ns).await?;
    let endpoints: Vec<Endpoints> = list(client, ns).await?;
    let slices: Vec<EndpointSlice> = list(client, ns).await?;
    let mut out = Snapshot::new();

    let deployment_names: BTreeMap<String, String> = deployments
        .iter()
        .map(|d| (d.uid().unwrap_or_default(), d.name_any()))
        .collect();
    for d in &deployments {
        let st = d.status.clone().unwrap_or_default();
        // By type: the order of conditions follows the timing of the
        // last changes (each change moves its condition last), not a decision.
        let mut conditions: Vec<Value> = st
            .conditions
            .iter()
            .flatten()
            .map(|c| json!([c.type_, c.status, c.reason]))
            .collect();
        conditions.sort_by_key(|c| c.to_string());
        out.insert(
            format!("Deployment {}", d.name_any()),
            json!({
                "replicas": [st.replicas, st.updated_replicas, st.ready_replicas,
                             st.available_replicas, st.unavailable_replicas],
                "revision": d.annotations().get("deployment.kubernetes.io/revision"),
                "conditions": conditions,
            }),
        );
    }

    // A ReplicaSet's identity: its Deployment and revision, or its own name.
    let mut set_ids: BTreeMap<String, String> = BTreeMap::new();
    let mut duplicates: BTreeMap<String, usize> = BTreeMap::new();
    for rs in &sets {
        let owner = rs
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .and_then(|o| deployment_names.get(&o.uid));
        let id = match owner {
            Some(d) => format!("{d} rev {}", revision(rs)),
            None => rs.name_any(),
        };
        *duplicates.entry(id.clone()).or_default() += 1;
        set_ids.insert(rs.uid().unwrap_or_default(), id.clone());
        let st = rs.status.clone().unwrap_or_default();
        let mut annotations = rs.annotations().clone();
        annotations.retain(|k, _| k.starts_with("deployment.kubernetes.io/"));
        let images: Vec<Option<String>> = rs
            .spec
            .template
            .as_ref()
            .and_then(|t| t.spec.as_ref())
            .map(|s| s.containers.iter().map(|c| c.image.clone()).collect())
            .unwrap_or_default();
        out.insert(
            format!("ReplicaSet {id}"),
            json!({
                "spec": rs.spec.replicas,
                "status": [st.replicas, st.ready_replicas, st.available_replicas,
                           st.fully_labeled_replicas],
                "annotations": annotations,
                "images": images,
            }),
        );
    }
    for (id, n) in duplicates.into_iter().filter(|(_, n)| *n > 1) {
        out.insert(format!("DUPLICATE ReplicaSet {id}"), json!(n));
    }

    let mut pods_by_owner: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let owner = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| {
                set_ids
                    .get(&o.uid)
                    .cloned()
                    .unwrap_or(format!("unknown {}", o.name))
            })
            .unwrap_or_else(|| "orphan".into());
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        let ready = crate::workloads::pod_is_ready(pod);
        pods_by_owner
            .entry(owner)
            .or_default()
            .push(json!([phase, ready]));
    }
    for (owner, mut pods) in pods_by_owner {
        pods.sort_by_key(|v| v.to_string());
        out.insert(format!("Pods of {owner}"), Value::Array(pods));
    }

    for ep in &endpoints {
        let subsets: Vec<Value> = ep
            .subsets
            .iter()
            .flatten()
            .map(|s| {
                json!({
                    "ready": s.addresses.as_ref().map_or(0, Vec::len),
                    "notReady": s.not_ready_addresses.as_ref().map_or(0, Vec::len),
                    "ports": s.ports,
                })
            })
            .collect();
        let mut annotations = ep.annotations().clone();
        annotations.remove("endpoints.kubernetes.io/last-change-trigger-time");
        out.insert(
            format!("Endpoints {}", ep.name_any()),
            json!({"subsets": subsets, "labels": ep.labels(), "annotations": annotations}),
        );
    }

    let mut slices_by_service: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for slice in &slices {
        let service = slice
            .labels()
            .get("kubernetes.io/service-name")
            .cloned()
            .unwrap_or_default();
        let mut by_condition: BTreeMap<String, usize> = BTreeMap::new();
        for e in slice.endpoints.iter().flatten() {
            let c = e.conditions.clone().unwrap_or_default();
            *by_condition
                .entry(format!("{:?}/{:?}/{:?}", c.ready, c.serving, c.terminating))
                .or_default() += 1;
        }
        let mut labels = slice.labels().clone();
        labels.remove("pod-template-hash");
        slices_by_service.entry(service).or_default().push(json!({
            "addressType": slice.address_type,
            "ports": slice.ports,
            "endpoints": by_condition,
            "labels": labels,
            "owners": slice.owner_references().iter().map(|o| json!([o.kind, o.name, o.controller])).collect::<Vec<_>>(),
        }));
    }
    for (service, mut shapes) in slices_by_service {
        shapes.sort_by_key(|v| v.to_string());
        out.insert(format!("EndpointSlices of {service}"), Value::Array(shapes));
    }
    Ok(out)
}

/// Both runs of a scenario and what differs between them.
pub struct Report {
    pub upstream: Snapshot,
    pub ours: Snapshot,
    pub differences: Vec<String>,
}

/// Runs `scenario` in `upstream_ns` with kube-controller-manager's
/// controllers, then hands the controllers to understudy-controllers and runs
/// it again in `ours_ns`. The lab cluster is left running ours.
pub async fn run(
    client: &Client,
    state_dir: &std::path::Path,
    components_dir: &std::path::Path,
    scenario: &Scenario,
    upstream_ns: &str,
    ours_ns: &str,
) -> Result<Report, String> {
    use crate::controlplane::{ControllersSide, switch_controllers};
    switch_controllers(state_dir, ControllersSide::Upstream, components_dir, &[])
        .await
        .map_err(|e| format!("switching to upstream: {e}"))?;
    (scenario.run)(client, upstream_ns)
        .await
        .map_err(|e| format!("{} with upstream: {e}", scenario.name))?;
    let upstream = snapshot(client, upstream_ns).await?;
    switch_controllers(state_dir, ControllersSide::Understudy, components_dir, &[])
        .await
        .map_err(|e| format!("switching to understudy: {e}"))?;
    (scenario.run)(client, ours_ns)
        .await
        .map_err(|e| format!("{} with understudy: {e}", scenario.name))?;
    let ours = snapshot(client, ours_ns).await?;
    let differences = diff(&upstream, &ours);
    Ok(Report {
        upstream,
        ours,
        differences,
    })
}

/// A fresh namespace `<prefix>-<random>`, ready for pods (its default
/// ServiceAccount exists).
pub async fn create_namespace(client: &Client, prefix: &str) -> Result<String, String> {
    use k8s_openapi::api::core::v1::Namespace;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"generateName": format!("{prefix}-")}}))
            .map_err(|e| e.to_string())?;
    let created = namespaces
        .create(&PostParams::default(), &ns)
        .await
        .map_err(|e| format!("creating a namespace: {e}"))?;
    let name = created.name_any();
    wait::accepts_pods(client, &name, SETTLE)
        .await
        .map_err(|e| e.to_string())?;
    Ok(name)
}

/// Keys that show a broken hand-over: duplicated ReplicaSets, pods without
/// an owner, or owned by something that no longer exists.
pub fn handover_problems(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .keys()
        .filter(|k| {
            k.starts_with("DUPLICATE")
                || k.starts_with("Pods of orphan")
                || k.starts_with("Pods of unknown")
        })
        .cloned()
        .collect()
}

/// One line per key whose values differ or that only one side has.
pub fn diff(upstream: &Snapshot, ours: &Snapshot) -> Vec<String> {
    let mut lines = Vec::new();
    let keys: std::collections::BTreeSet<&String> = upstream.keys().chain(ours.keys()).collect();
    for key in keys {
        match (upstream.get(key), ours.get(key)) {
            (Some(a), Some(b)) if a == b => {}
            (a, b) => lines.push(format!(
                "{key}:\n  upstream: {}\n  ours:     {}",
                a.map_or("(absent)".into(), Value::to_string),
                b.map_or("(absent)".into(), Value::to_string)
            )),
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_reports_changed_and_missing_keys() {
        let a: Snapshot = [("x".to_string(), json!(1)), ("y".to_string(), json!(2))].into();
        let b: Snapshot = [("x".to_string(), json!(1)), ("z".to_string(), json!(3))].into();
        let d = diff(&a, &b);
        assert_eq!(d.len(), 2);
        assert!(d[0].starts_with("y:") && d[0].contains("(absent)"));
        assert!(d[1].starts_with("z:"));
        assert!(diff(&a, &a).is_empty());
    }
}
