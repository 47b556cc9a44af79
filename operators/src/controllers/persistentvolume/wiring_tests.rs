//! The binder's API side against a fake apiserver: the calls a bind makes,
//! in order, each a PUT carrying the resourceVersion of the step before;
//! a conflict stops the sync; our own writes are seen by the next sync
//! before the watch delivers them.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Client;
use kube::client::Body;
use serde_json::Value;
use understudy_component_base::events::EventRecorder;

use super::fixtures::{claim, volume};
use super::{Binder, VersionedCache};
use crate::informer::Store;
use crate::key::ObjectKey;
use crate::metrics::{Metrics, QueueMetrics};
use crate::workqueue::WorkQueue;

/// (method, path, resourceVersion sent)
type Calls = Arc<Mutex<Vec<(String, String, String)>>>;

/// Answers every write by echoing the object with the next
/// resourceVersion, except a 409 for the paths in `conflicts`.
fn fake_apiserver(conflicts: &'static [&'static str]) -> (Client, Calls) {
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let version = Arc::new(Mutex::new(100u64));
    let service = tower::service_fn(move |request: http::Request<Body>| {
        let seen = seen.clone();
        let version = version.clone();
        async move {
            let method = request.method().to_string();
            let path = request.uri().path().to_string();
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let mut object: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let sent = object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let (status, answer) = if method == "GET" {
                (
                    404,
                    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "NotFound", "code": 404, "message": "not found"}),
                )
            } else if conflicts.contains(&path.as_str()) {
                (
                    409,
                    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "Conflict", "code": 409,
                        "message": "the object has been modified; please apply your changes to the latest version and try again"}),
                )
            } else {
                let mut v = version.lock().unwrap();
                *v += 1;
                if object.is_object() {
                    object["metadata"]["resourceVersion"] = Value::String(v.to_string());
                }
                (200, object)
            };
            if !path.contains("/events") {
                seen.lock().unwrap().push((method, path, sent));
            }
            let response = http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(answer.to_string())))
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    (Client::new(service, "default"), calls)
}

fn binder(client: Client) -> Binder {
    Binder {
        client: client.clone(),
        volume_store: Arc::new(Store::default()),
        claim_store: Arc::new(Store::default()),
        class_store: Arc::new(Store::default()),
        pod_store: Arc::new(Store::default()),
        volumes: VersionedCache::default(),
        informer_candidates: Default::default(),
        own_candidates: Default::default(),
        claims: VersionedCache::default(),
        volume_queue: WorkQueue::new(QueueMetrics::detached()),
        claim_queue: WorkQueue::new(QueueMetrics::detached()),
        recorder: EventRecorder::new(client, "persistentvolume-controller", Some("test".into())),
        metrics: Metrics::unregistered(),
        dynamic_provisioning: true,
        writing: Mutex::default(),
    }
}

/// As the volume informer would: into its store, then its handler's index.
fn add_volume(b: &Binder, v: PersistentVolume) {
    let v = Arc::new(v);
    b.informer_candidates
        .update(v.metadata.name.as_deref().unwrap_or_default(), &v);
    b.volume_store.insert(v);
}

fn add_claim(b: &Binder, c: PersistentVolumeClaim) {
    b.claim_store.insert(Arc::new(c));
}

#[tokio::test]
async fn a_bind_is_four_puts_in_upstreams_order_each_on_the_last_version() {
    let (client, calls) = fake_apiserver(&[]);
    let b = binder(client);
    add_volume(
        &b,
        volume("pv1", "5Gi", "", "", "Available", "Retain", "", &[]),
    );
    add_claim(&b, claim("c", "uid-c", "1Gi", "", "Pending", None, &[]));
    b.sync_claim_by_key(&ObjectKey::new("default", "c"))
        .await
        .unwrap();
    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [
            ("PUT", "/api/v1/persistentvolumes/pv1", "1"),
            ("PUT", "/api/v1/persistentvolumes/pv1/status", "101"),
            (
                "PUT",
                "/api/v1/namespaces/default/persistentvolumeclaims/c",
                "1"
            ),
            (
                "PUT",
                "/api/v1/namespaces/default/persistentvolumeclaims/c/status",
                "103"
            ),
        ]
        .map(|(m, p, v)| (m.to_string(), p.to_string(), v.to_string()))
    );
    // The next claim sees pv1 taken though the watch has not said so yet.
    assert_eq!(
        b.volume_view_of("pv1")["pv1"]
            .metadata
            .resource_version
            .as_deref(),
        Some("102")
    );
    add_claim(&b, claim("d", "uid-d", "1Gi", "", "Pending", None, &[]));
    b.sync_claim_by_key(&ObjectKey::new("default", "d"))
        .await
        .unwrap();
    let last = b.claims.get("default/d").unwrap();
    assert_eq!(
        last.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    assert!(last.spec.as_ref().unwrap().volume_name.is_none());
}

#[tokio::test]
async fn a_conflict_stops_the_bind_and_fails_the_sync() {
    let (client, calls) = fake_apiserver(&["/api/v1/persistentvolumes/pv1"]);
    let b = binder(client);
    add_volume(
        &b,
        volume("pv1", "5Gi", "", "", "Available", "Retain", "", &[]),
    );
    add_claim(&b, claim("c", "uid-c", "1Gi", "", "Pending", None, &[]));
    let error = b
        .sync_claim_by_key(&ObjectKey::new("default", "c"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("has been modified"), "{error}");
    assert_eq!(calls.lock().unwrap().len(), 1, "nothing after the conflict");
}

#[tokio::test]
async fn an_informer_copy_older_than_our_write_is_not_synced() {
    let (client, calls) = fake_apiserver(&[]);
    let b = binder(client);
    add_volume(
        &b,
        volume("pv1", "5Gi", "", "", "Available", "Retain", "", &[]),
    );
    add_claim(&b, claim("c", "uid-c", "1Gi", "", "Pending", None, &[]));
    b.sync_claim_by_key(&ObjectKey::new("default", "c"))
        .await
        .unwrap();
    calls.lock().unwrap().clear();
    // The watch still shows the claim unbound (resourceVersion 1).
    b.sync_claim_by_key(&ObjectKey::new("default", "c"))
        .await
        .unwrap();
    b.sync_volume_by_key(&ObjectKey::new("", "pv1"))
        .await
        .unwrap();
    assert!(calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_claim_missing_from_the_informer_is_asked_for_before_release() {
    let (client, calls) = fake_apiserver(&[]);
    let b = binder(client);
    add_volume(
        &b,
        volume(
            "pv1",
            "5Gi",
            "uid-c",
            "c",
            "Bound",
            "Retain",
            "",
            &["pv.kubernetes.io/bound-by-controller"],
        ),
    );
    b.sync_volume_by_key(&ObjectKey::new("", "pv1"))
        .await
        .unwrap();
    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [
            (
                "GET",
                "/api/v1/namespaces/default/persistentvolumeclaims/c",
                ""
            ),
            ("PUT", "/api/v1/persistentvolumes/pv1/status", "1"),
        ]
        .map(|(m, p, v)| (m.to_string(), p.to_string(), v.to_string()))
    );
    let released = b.volumes.get("pv1").unwrap();
    assert_eq!(
        released.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Released")
    );
}

#[tokio::test]
async fn a_deleted_volume_wakes_its_claim() {
    let (client, _calls) = fake_apiserver(&[]);
    let b = binder(client);
    let v = volume("pv1", "5Gi", "uid-c", "c", "Bound", "Retain", "", &[]);
    b.keep_volume("pv1".into(), Arc::new(v));
    b.sync_volume_by_key(&ObjectKey::new("", "pv1"))
        .await
        .unwrap();
    assert_eq!(b.claim_queue.len(), 1);
    assert!(b.volumes.get("pv1").is_none());
}

#[tokio::test]
async fn claims_synced_at_once_pick_different_volumes() {
    let (client, calls) = fake_apiserver(&[]);
    let b = binder(client);
    for name in ["pv1", "pv2"] {
        add_volume(
            &b,
            volume(name, "5Gi", "", "", "Available", "Retain", "", &[]),
        );
    }
    add_claim(&b, claim("a", "uid-a", "1Gi", "", "Pending", None, &[]));
    add_claim(&b, claim("b", "uid-b", "1Gi", "", "Pending", None, &[]));
    // Both plan before either write returns: the second must not be
    // offered the volume the first is writing.
    let (key_a, key_b) = (
        ObjectKey::new("default", "a"),
        ObjectKey::new("default", "b"),
    );
    let (a, b_outcome) = tokio::join!(b.sync_claim_by_key(&key_a), b.sync_claim_by_key(&key_b));
    assert_eq!(a.unwrap(), None);
    assert_eq!(b_outcome.unwrap(), None);
    let mut claim_ref_writes: Vec<String> = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(method, path, _)| {
            method == "PUT"
                && path.starts_with("/api/v1/persistentvolumes/")
                && !path.ends_with("/status")
        })
        .map(|(_, path, _)| path.clone())
        .collect();
    claim_ref_writes.sort();
    assert_eq!(
        claim_ref_writes,
        [
            "/api/v1/persistentvolumes/pv1",
            "/api/v1/persistentvolumes/pv2"
        ]
    );
    assert!(
        b.writing.lock().unwrap().is_empty(),
        "every volume handed back"
    );
}

#[tokio::test]
async fn a_claims_match_follows_the_newest_copy_of_each_volume() {
    let (client, _calls) = fake_apiserver(&[]);
    let b = binder(client);
    // A 5 Gi volume at a resourceVersion, bound to `claim` ("" for none).
    let at = |name: &str, rv: &str, claim: &str| {
        let (uid, phase) = match claim {
            "" => (String::new(), "Available"),
            c => (format!("uid-{c}"), "Bound"),
        };
        let mut v = volume(name, "5Gi", &uid, claim, phase, "Retain", "", &[]);
        v.metadata.resource_version = Some(rv.into());
        v
    };
    // Freed by our write; the informer still shows the old claim.
    add_volume(&b, at("freed", "1", "x"));
    b.keep_volume("freed".into(), Arc::new(at("freed", "2", "")));
    // Taken, as the informer shows; our copy from before is free.
    b.keep_volume("taken".into(), Arc::new(at("taken", "1", "")));
    add_volume(&b, at("taken", "3", "y"));
    // Deleted: gone from the informer, still in our cache.
    b.keep_volume("deleted".into(), Arc::new(at("deleted", "1", "")));
    add_volume(&b, at("mine", "1", "a"));
    let a = claim("a", "uid-a", "1Gi", "", "Pending", None, &[]);
    let view = b.match_view(&a, &HashSet::new());
    assert_eq!(
        view.keys().map(|k| &**k).collect::<Vec<_>>(),
        ["freed", "mine"]
    );
    assert_eq!(
        view["freed"].metadata.resource_version.as_deref(),
        Some("2")
    );
    let writing = HashSet::from(["freed".to_string()]);
    assert_eq!(
        b.match_view(&a, &writing)
            .keys()
            .map(|k| &**k)
            .collect::<Vec<_>>(),
        ["mine"]
    );
}
