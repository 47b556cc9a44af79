//! The bench's null schedulers: they bind each pending pod to the next node
//! round-robin, with no decision, as fast as the apiserver accepts binds —
//! the ceilings the schedulers under test are measured against.
//!
//! - [`polling`] finds pending pods with a list and keeps 128 binds in
//!   flight: the apiserver's bind ceiling (with Events: its bind+event one).
//! - [`watching`] learns of pods and nodes as a scheduler must, from watches
//!   kept in a cache slimmed as understudy-scheduler's informers slim theirs,
//!   and starts binding once both have synced: what a scheduler that watches
//!   but decides nothing can reach, so the part of the ceiling no scheduler
//!   gets on this machine shows apart from the cost of deciding.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The binds (and Events) a null scheduler keeps in flight.
const IN_FLIGHT: usize = 128;

/// The pods of `ns` that no scheduler has bound yet.
pub(crate) async fn unbound(client: &Client, ns: &str) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    Ok(pods
        .list(&ListParams::default().fields("spec.nodeName="))
        .await?
        .items)
}

/// Binds every pending pod of `ns` round-robin over `nodes`, found by
/// listing; `with_events` also creates each pod's `Scheduled` Event before
/// the pod counts as done, so the Events land inside the measured window (a
/// queue drained in the background would trail it).
pub async fn polling(client: Client, ns: String, nodes: Vec<String>, with_events: bool) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    let mut next = 0usize;
    loop {
        let pending = match unbound(&client, &ns).await {
            Ok(p) => p,
            Err(_) => continue,
        };
        if pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let jobs: Vec<(String, String, String)> = pending
            .iter()
            .map(|p| {
                next += 1;
                let uid = p.metadata.uid.clone().unwrap_or_default();
                (p.name_any(), uid, nodes[next % nodes.len()].clone())
            })
            .collect();
        futures::stream::iter(jobs)
            .map(|(name, uid, node)| {
                bind_and_record(&pods, &events, &ns, name, uid, node, with_events)
            })
            .buffer_unordered(IN_FLIGHT)
            .collect::<Vec<()>>()
            .await;
    }
}

async fn bind_and_record(
    pods: &Api<Pod>,
    events: &Api<k8s_openapi::api::events::v1::Event>,
    ns: &str,
    name: String,
    uid: String,
    node: String,
    with_events: bool,
) {
    let bound = bind(pods, ns, &name, &node).await;
    if bound.is_ok() && with_events {
        let event = scheduled_event(ns, &name, &uid, &node);
        if let Err(e) = events.create(&PostParams::default(), &event).await {
            eprintln!("bench: null scheduler: recording an Event: {e}");
        }
    }
}

/// What the watching null scheduler caches: every node and every pod that
/// has not finished, slimmed as understudy-scheduler's informers slim them,
/// as a scheduler's cache holds them (the binder reads only node names).
#[derive(Default)]
struct Cache {
    nodes: HashMap<String, Arc<Node>>,
    node_names: Vec<String>,
    pods: HashMap<(String, String), Arc<Pod>>,
    /// Pods handed to the binder, until their bind is seen.
    dispatched: HashSet<(String, String)>,
    next_node: usize,
}

impl Cache {
    fn node_for_next_bind(&mut self) -> Option<String> {
        if self.node_names.is_empty() {
            return None;
        }
        self.next_node = (self.next_node + 1) % self.node_names.len();
        Some(self.node_names[self.next_node].clone())
    }
}

/// The pending pods of `ns` for `scheduler_name`, each sent to the binder
/// once, from a watch of every unfinished pod (the field selector
/// kube-scheduler's informer uses).
async fn watch_pods(
    client: Client,
    cache: Arc<Mutex<Cache>>,
    ns: String,
    scheduler_name: String,
    pending: mpsc::UnboundedSender<(String, String)>,
    synced: watch::Sender<bool>,
) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
    let mut stream = watcher::watcher(api, config).boxed();
    loop {
        match stream.try_next().await {
            Ok(Some(Event::Init)) => {}
            Ok(Some(Event::InitApply(mut pod) | Event::Apply(mut pod))) => {
                understudy_scheduler::informers::slim_pod(&mut pod);
                let key = (pod.namespace().unwrap_or_default(), pod.name_any());
                let spec = pod.spec.as_ref();
                let waiting = spec.is_some_and(|s| {
                    s.node_name.is_none() && s.scheduler_name.as_deref() == Some(&scheduler_name)
                }) && key.0 == ns;
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let mut c = cache.lock().expect("cache lock");
                c.pods.insert(key.clone(), Arc::new(pod));
                if !waiting {
                    c.dispatched.remove(&key);
                } else if c.dispatched.insert(key.clone()) {
                    let _ = pending.send((key.1, uid));
                }
            }
            Ok(Some(Event::InitDone)) => {
                let _ = synced.send(true);
            }
            Ok(Some(Event::Delete(pod))) => {
                let key = (pod.namespace().unwrap_or_default(), pod.name_any());
                let mut c = cache.lock().expect("cache lock");
                c.pods.remove(&key);
                c.dispatched.remove(&key);
            }
            Ok(None) => return,
            Err(e) => eprintln!("bench: watching null scheduler: pods: {e}"),
        }
    }
}

async fn watch_nodes(client: Client, cache: Arc<Mutex<Cache>>, synced: watch::Sender<bool>) {
    let api: Api<Node> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
    loop {
        match stream.try_next().await {
            Ok(Some(Event::Init)) => {}
            Ok(Some(Event::InitApply(mut node) | Event::Apply(mut node))) => {
                understudy_scheduler::informers::slim_node(&mut node);
                let name = node.name_any();
                let mut c = cache.lock().expect("cache lock");
                if c.nodes.insert(name.clone(), Arc::new(node)).is_none() {
                    c.node_names.push(name);
                }
            }
            Ok(Some(Event::InitDone)) => {
                let _ = synced.send(true);
            }
            Ok(Some(Event::Delete(node))) => {
                let name = node.name_any();
                let mut c = cache.lock().expect("cache lock");
                c.nodes.remove(&name);
                c.node_names.retain(|n| *n != name);
            }
            Ok(None) => return,
            Err(e) => eprintln!("bench: watching null scheduler: nodes: {e}"),
        }
    }
}

/// Binds the pods the pod watch finds, [`IN_FLIGHT`] at a time, once both
/// watches have synced (a scheduler does not decide on a partial cache).
async fn bind_pending(
    client: Client,
    cache: Arc<Mutex<Cache>>,
    ns: String,
    pending: mpsc::UnboundedReceiver<(String, String)>,
    mut synced: Vec<watch::Receiver<bool>>,
    with_events: bool,
) {
    for rx in &mut synced {
        if rx.wait_for(|s| *s).await.is_err() {
            return;
        }
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client, &ns);
    futures::stream::unfold(pending, |mut rx| async move {
        rx.recv().await.map(|job| (job, rx))
    })
    .filter_map(|(name, uid)| {
        let node = cache.lock().expect("cache lock").node_for_next_bind();
        async move { node.map(|node| (name, uid, node)) }
    })
    .map(|(name, uid, node)| bind_and_record(&pods, &events, &ns, name, uid, node, with_events))
    .buffer_unordered(IN_FLIGHT)
    .collect::<Vec<()>>()
    .await;
}

/// The watch-driven null scheduler: its tasks, to abort when it stops.
pub fn watching(
    client: Client,
    ns: String,
    scheduler_name: &str,
    with_events: bool,
) -> Vec<JoinHandle<()>> {
    let cache = Arc::new(Mutex::new(Cache::default()));
    let (pods_synced, pods_rx) = watch::channel(false);
    let (nodes_synced, nodes_rx) = watch::channel(false);
    let (tx, rx) = mpsc::unbounded_channel();
    vec![
        tokio::spawn(watch_nodes(client.clone(), cache.clone(), nodes_synced)),
        tokio::spawn(watch_pods(
            client.clone(),
            cache.clone(),
            ns.clone(),
            scheduler_name.to_string(),
            tx,
            pods_synced,
        )),
        tokio::spawn(bind_pending(
            client,
            cache,
            ns,
            rx,
            vec![pods_rx, nodes_rx],
            with_events,
        )),
    ]
}
/// Binds `ns/name` to `node` through `pods/binding`, as a scheduler does.
pub(crate) async fn bind(
    pods: &Api<Pod>,
    ns: &str,
    name: &str,
    node: &str,
) -> kube::Result<serde_json::Value> {
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": ns},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    pods.create_subresource("binding", name, &PostParams::default(), &binding)
        .await
}

/// The `Scheduled` Event a scheduler records for a pod it bound.
pub(crate) fn scheduled_event(
    ns: &str,
    name: &str,
    uid: &str,
    node: &str,
) -> k8s_openapi::api::events::v1::Event {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::api::events::v1::Event {
        metadata: kube::api::ObjectMeta {
            // client-go's name: the object's, then a unique suffix.
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(ns.to_string()),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        reporting_controller: Some("null-scheduler".into()),
        reporting_instance: Some("null-scheduler-bench".into()),
        action: Some("Binding".into()),
        reason: Some("Scheduled".into()),
        type_: Some("Normal".into()),
        note: Some(format!("Successfully assigned {ns}/{name} to {node}")),
        regarding: Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(ns.to_string()),
            name: Some(name.to_string()),
            uid: Some(uid.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }
}
