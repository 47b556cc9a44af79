//! Pod helpers for e2e tests: create from JSON, wait until scheduled or
//! reported unschedulable, and read the Events about a pod.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::Value;

use crate::wait::{self, WaitError};

pub fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("valid object")
}

pub async fn create(pods: &Api<Pod>, pod: Value) -> Pod {
    pods.create(&PostParams::default(), &from_json(pod))
        .await
        .unwrap_or_else(|e| panic!("creating a pod: {e}"))
}

/// Until the pod is bound; returns its node.
pub async fn wait_scheduled(
    pods: &Api<Pod>,
    name: &str,
    timeout: Duration,
) -> Result<String, WaitError> {
    let pod = wait::object(pods, name, timeout, |p: Option<&Pod>| {
        p.and_then(|p| p.spec.as_ref())
            .and_then(|s| s.node_name.as_ref())
            .is_some()
    })
    .await?;
    Ok(pod.spec.and_then(|s| s.node_name).unwrap_or_default())
}

/// Until the pod carries PodScheduled=False; returns (reason, message).
pub async fn wait_unschedulable(
    pods: &Api<Pod>,
    name: &str,
    timeout: Duration,
) -> Result<(String, String), WaitError> {
    wait_unschedulable_with(pods, name, timeout, "").await
}

/// Until the pod carries PodScheduled=False with a message containing
/// `needle`: the first report may predate the cluster state a test set up.
pub async fn wait_unschedulable_with(
    pods: &Api<Pod>,
    name: &str,
    timeout: Duration,
    needle: &str,
) -> Result<(String, String), WaitError> {
    let pod = wait::object(pods, name, timeout, |p: Option<&Pod>| {
        unschedulable(p).is_some_and(|(_, message)| message.contains(needle))
    })
    .await?;
    Ok(unschedulable(Some(&pod)).expect("condition present"))
}

fn unschedulable(pod: Option<&Pod>) -> Option<(String, String)> {
    pod?.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// Events (events.k8s.io) regarding the pod `name` in `namespace`.
pub async fn events_for(client: &Client, namespace: &str, name: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    // Filtered here: test namespaces hold few events, and this works whether or
    // not the server supports a field selector on `regarding`.
    events
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// Until an event with `reason` about the pod exists; returns it.
pub async fn wait_event(
    client: &Client,
    namespace: &str,
    name: &str,
    reason: &str,
    timeout: Duration,
) -> Result<Event, WaitError> {
    wait_event_with(client, namespace, name, reason, "", timeout).await
}

/// Until an Event with `reason` whose note contains `note` is recorded for
/// the pod (a pod may have several with one reason, e.g. FailedScheduling).
pub async fn wait_event_with(
    client: &Client,
    namespace: &str,
    name: &str,
    reason: &str,
    note: &str,
    timeout: Duration,
) -> Result<Event, WaitError> {
    wait::until(
        &format!("a {reason} event for {namespace}/{name} saying {note:?}"),
        timeout,
        || async {
            Ok(events_for(client, namespace, name)
                .await
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.note.as_deref().unwrap_or_default().contains(note)
                }))
        },
    )
    .await
}

/// A node only the creating test uses: tainted `understudy.dev/test=<owner>:NoSchedule`
/// and labelled `understudy.dev/test=<owner>`, with no zone, so other tests'
/// pods neither land there nor count it as a topology domain.
pub async fn create_private_node(
    client: &Client,
    name: &str,
    owner: &str,
    cpu: &str,
    extra_labels: Value,
) -> Node {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut labels = serde_json::json!({
        "type": "kwok",
        "kubernetes.io/hostname": name,
        "understudy.dev/test": owner,
        crate::nodes::E2E_LABEL: "true",
    });
    if let (Some(l), Some(extra)) = (labels.as_object_mut(), extra_labels.as_object()) {
        l.extend(extra.clone());
    }
    let node: Node = from_json(serde_json::json!({
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
        },
        "spec": {"taints": [{"key": "understudy.dev/test", "value": owner, "effect": "NoSchedule"}]},
        "status": {
            "allocatable": {"cpu": cpu, "memory": "64Gi", "pods": "110"},
            "capacity": {"cpu": cpu, "memory": "64Gi", "pods": "110"},
        },
    }));
    nodes
        .create(&PostParams::default(), &node)
        .await
        .unwrap_or_else(|e| panic!("creating node {name}: {e}"))
}

pub async fn delete_node(client: &Client, name: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let _ = nodes.delete(name, &DeleteParams::default()).await;
}
