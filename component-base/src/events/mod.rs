//! Kubernetes Events (events.k8s.io/v1) for a component, best-effort and off
//! the caller's path: recording only queues the Event, and a background task
//! folds repeats into series and publishes, as upstream's event broadcaster
//! does. A full queue or a failed publish is logged and never fails or delays
//! the work that produced the Event. Like client-go's, a write that fails
//! for want of the apiserver (a transport error) is tried again, up to
//! [`MAX_TRIES`] times, [`RETRY_AFTER`] apart (plus up to a quarter, so that
//! many clients do not retry in step); one the apiserver rejects is dropped.
//!
//! Each Event regards an object by its whole reference, resourceVersion
//! included, as client-go's `reference.GetReference` makes it; folding into
//! series is keyed by that reference (see [`series`]). The recorder learns of
//! deletions from its caller ([`EventRecorder::object_deleted`]): the
//! object's series end and nothing more is written about it.

mod series;
mod spam;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::{mpsc, oneshot};

use series::{FINISH_AFTER, Occurrence, REFRESH_EVERY, ReferenceKey, SeriesCache, SeriesKey};
pub use spam::SpamFilter;

/// Names a number of seconds after which a quiet series ends, instead of
/// client-go's 6 minutes: a knob for end-to-end tests that must see series
/// end, not a setting (upstream has none).
pub const FINISH_AFTER_ENV: &str = "UNDERSTUDY_EVENT_SERIES_FINISH_SECONDS";

/// Events waiting to be published; beyond this, new ones are dropped (as
/// upstream's broadcaster drops when its queue of 1000 is full).
const QUEUE: usize = 1000;
/// Publishes in flight at once. client-go starts a goroutine per Event, so
/// its writes are bounded only by the client's QPS; with too few in flight a
/// scheduler binding 900 pods a second filled the queue and dropped most of
/// its `Scheduled` Events. The client multiplexes them over one HTTP/2
/// connection, so many in flight cost streams, not connections.
const CONCURRENCY: usize = 64;
/// How long a component's shutdown waits for its queued Events to be
/// written, well inside the default 30 s grace period.
pub const FLUSH_AT_SHUTDOWN: Duration = Duration::from_secs(5);
/// Writes per Event before it is given up (client-go's maxTriesPerEvent).
pub const MAX_TRIES: u32 = 12;
/// The pause before trying a failed write again (client-go's
/// defaultSleepDuration), jittered by up to a quarter more.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);

/// A reference to `obj` as client-go's `reference.GetReference` makes it
/// for an Event: kind, apiVersion, name, namespace, UID and
/// resourceVersion. The resourceVersion matters: Events fold into series
/// by the whole reference, so an object that changed gets a new Event.
pub fn reference<K: kube::Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let mut r = obj.object_ref(&());
    r.resource_version = obj.meta().resource_version.clone();
    r
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// What the publishing task is told, in the order it was told: a deletion
/// applies to the Events recorded after it, not to those before.
enum Message {
    Record(Box<Occurrence>),
    /// The object with this UID was deleted.
    Deleted(String),
    /// Answer once every Event recorded before has had its first write.
    Flush(oneshot::Sender<()>),
}

/// Records Events as `reportingController` = the component's name.
#[derive(Clone)]
pub struct EventRecorder {
    /// Unbounded so that a deletion is never lost; Events are bounded by
    /// `queued` instead.
    queue: mpsc::UnboundedSender<Message>,
    /// Events sent and not yet taken by the publishing task.
    queued: Arc<AtomicUsize>,
    spam: Option<Arc<Mutex<SpamFilter>>>,
}

impl EventRecorder {
    /// Must be called within a tokio runtime: it starts the publishing task,
    /// which ends once every clone of the recorder is dropped. Without an
    /// `instance`, `reportingInstance` is `<component>-<hostname>`, as
    /// client-go's events recorder names it.
    pub fn new(client: Client, component: &str, instance: Option<String>) -> Self {
        let instance =
            instance.unwrap_or_else(|| format!("{component}-{}", crate::leader::hostname()));
        let finish_after = std::env::var(FINISH_AFTER_ENV)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|s| *s > 0)
            .map_or(FINISH_AFTER, k8s_openapi::jiff::SignedDuration::from_secs);
        let cache =
            SeriesCache::new(component.to_string(), instance).with_finish_after(finish_after);
        let (queue, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        tokio::spawn(publish_all(client, cache, rx, queued.clone(), finish_after));
        Self {
            queue,
            queued,
            spam: None,
        }
    }

    /// The object with `uid` was deleted: its series end (their final count
    /// is patched into Events that still exist, never created again), and
    /// Events about it recorded from now on, or waiting to be written again,
    /// are dropped. An Event belongs to one object; without this, a series'
    /// later writes recreate its Event after the object — or its whole
    /// namespace — is gone, into a namespace re-created with the same name.
    pub fn object_deleted(&self, uid: &str) {
        if !uid.is_empty() {
            // Fails only once the publishing task is gone: nothing to end.
            let _ = self.queue.send(Message::Deleted(uid.to_string()));
        }
    }

    /// Returns once every Event recorded before the call has been written
    /// (or failed its first write: retries are not waited for). For a
    /// graceful shutdown: a scheduler that binds a pod and exits with the
    /// pod's `Scheduled` Event still queued would lose it. Callers bound the
    /// wait; it returns at once if the publishing task is gone.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).is_ok() {
            let _ = flushed.await;
        }
    }

    /// [`flush`](Self::flush), waiting at most `limit` (a shutdown must end
    /// within the pod's grace period); logs what it gave up.
    pub async fn flush_within(&self, limit: Duration) {
        if tokio::time::timeout(limit, self.flush()).await.is_err() {
            tracing::warn!(
                ?limit,
                "events still being written at shutdown; giving them up"
            );
        }
    }

    /// Drops Events beyond client-go's per-object budget (see [`SpamFilter`]),
    /// as kube-controller-manager's recorders do.
    pub fn with_spam_filter(mut self) -> Self {
        self.spam = Some(Arc::new(Mutex::new(SpamFilter::new())));
        self
    }

    pub async fn normal(
        &self,
        regarding: &ObjectReference,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.record(regarding, EventType::Normal, reason, action, note);
    }

    pub async fn warning(
        &self,
        regarding: &ObjectReference,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.record(regarding, EventType::Warning, reason, action, note);
    }

    /// Queues an Event without waiting.
    pub fn record(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.record_related(regarding, None, type_, reason, action, note);
    }

    /// Queues an Event that also names a related object (e.g. the preemptor
    /// of a `Preempted` victim), without waiting.
    pub fn record_related(
        &self,
        regarding: &ObjectReference,
        related: Option<&ObjectReference>,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        if let Some(spam) = &self.spam {
            let key = format!(
                "{}/{}/{}/{}/{:?}",
                regarding.kind.as_deref().unwrap_or_default(),
                regarding.namespace.as_deref().unwrap_or_default(),
                regarding.name.as_deref().unwrap_or_default(),
                regarding.uid.as_deref().unwrap_or_default(),
                type_,
            );
            let now = Instant::now();
            let mut spam = spam.lock().expect("spam filter lock");
            if !spam.allow(&key, now) || !spam.allow_similar(&format!("{key}/{reason}"), now) {
                tracing::debug!(reason, object = ?regarding.name, "event dropped by the spam filter");
                return;
            }
        }
        let occurrence = Occurrence {
            key: SeriesKey {
                type_,
                action: action.into(),
                reason: reason.into(),
                regarding: ReferenceKey::from(regarding),
                related: related.map(ReferenceKey::from),
            },
            note: Some(note),
        };
        if self.queued.fetch_add(1, Ordering::Relaxed) >= QUEUE {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(
                reason,
                object = ?regarding.name,
                "event queue full; dropping event"
            );
            return;
        }
        if self
            .queue
            .send(Message::Record(Box::new(occurrence)))
            .is_err()
        {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The publishing task: folds each queued Event into the series cache and
/// writes what it says to write, at most [`CONCURRENCY`] writes at a time;
/// ends series and refreshes their counts on client-go's schedule.
async fn publish_all(
    client: Client,
    mut cache: SeriesCache,
    mut rx: mpsc::UnboundedReceiver<Message>,
    queued: Arc<AtomicUsize>,
    finish_after: k8s_openapi::jiff::SignedDuration,
) {
    let period = |d: k8s_openapi::jiff::SignedDuration| {
        let d = std::time::Duration::try_from(d).expect("positive period");
        tokio::time::interval_at(tokio::time::Instant::now() + d, d)
    };
    let mut finish_tick = period(finish_after);
    let mut refresh_tick = period(REFRESH_EVERY);
    let mut in_flight = FuturesUnordered::new();
    // Failed writes waiting to be tried again. They hold no write slot while
    // they wait: client-go retries in the Event's own goroutine, so an
    // apiserver outage does not stop newer Events from being taken in.
    let mut waiting = FuturesUnordered::new();
    // Flushes answered when nothing is in flight any more.
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    let attempt = |event: K8sEvent, tries: u32, recreate: bool| {
        let client = client.clone();
        async move {
            let retry = write(client, &event, recreate).await;
            (event, tries + 1, retry)
        }
    };
    loop {
        // Every Event queued before a flush was taken in before it, so
        // nothing in flight means they have all been written once.
        if in_flight.is_empty() {
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
        tokio::select! {
            message = rx.recv(), if in_flight.len() < CONCURRENCY => {
                match message {
                    None => break,
                    Some(Message::Record(occurrence)) => {
                        queued.fetch_sub(1, Ordering::Relaxed);
                        if let Some(event) = cache.observe(*occurrence, Timestamp::now()) {
                            in_flight.push(attempt(event, 0, true));
                        }
                    }
                    // Final counts go to Events that still exist only.
                    Some(Message::Deleted(uid)) => in_flight.extend(
                        cache
                            .object_deleted(&uid, Timestamp::now())
                            .into_iter()
                            .map(|e| attempt(e, 0, false)),
                    ),
                    Some(Message::Flush(done)) => flushes.push(done),
                }
            }
            _ = finish_tick.tick() => {
                in_flight.extend(cache.finish(Timestamp::now()).into_iter().map(|e| attempt(e, 0, true)));
            }
            _ = refresh_tick.tick() => {
                in_flight.extend(cache.refresh().into_iter().map(|e| attempt(e, 0, true)));
            }
            Some((event, tries, retry)) = in_flight.next(), if !in_flight.is_empty() => {
                // Not about an object deleted meanwhile.
                let uid = event.regarding.as_ref().and_then(|r| r.uid.as_deref());
                let retry = retry && !cache.is_deleted(uid);
                if let Some(event) = retry_or_give_up(event, tries, retry) {
                    waiting.push(async move {
                        tokio::time::sleep(jittered(RETRY_AFTER)).await;
                        (event, tries)
                    });
                }
            }
            Some((event, tries)) = waiting.next(), if !waiting.is_empty() => {
                let uid = event.regarding.as_ref().and_then(|r| r.uid.as_deref());
                if cache.is_deleted(uid) {
                    tracing::debug!(reason = ?event.reason, "object deleted; not retrying its event");
                } else {
                    in_flight.push(attempt(event, tries, true));
                }
            }
        }
    }
    // The recorder is gone: finish the writes under way, without waiting
    // out retries.
    while in_flight.next().await.is_some() {}
}

/// The Event to write again after a pause, if the write may succeed later
/// and tries are left.
fn retry_or_give_up(event: K8sEvent, tries: u32, retry: bool) -> Option<K8sEvent> {
    if !retry {
        return None;
    }
    if tries >= MAX_TRIES {
        tracing::error!(reason = ?event.reason, object = ?event.regarding.as_ref().and_then(|r| r.name.as_deref()), tries, "could not record event: retry limit exceeded");
        return None;
    }
    Some(event)
}

/// `base` plus up to a quarter of it, at random (client-go's wait.Jitter).
fn jittered(base: Duration) -> Duration {
    base + base.mul_f64(0.25 * fastrand::f64())
}

/// Creates a new Event, or patches a series' count into the Event it
/// started as (creating it if it is gone and `recreate`), as client-go's
/// recordEvent. Returns whether a failed write is worth trying again.
async fn write(client: Client, event: &K8sEvent, recreate: bool) -> bool {
    let namespace = event.metadata.namespace.as_deref().unwrap_or("default");
    let events: Api<K8sEvent> = Api::namespaced(client, namespace);
    let name = event.metadata.name.clone().unwrap_or_default();
    let result = match &event.series {
        Some(series) => {
            let patch = serde_json::json!({ "series": series });
            match events
                .patch(&name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
            {
                Err(kube::Error::Api(status)) if status.is_not_found() && recreate => {
                    events.create(&PostParams::default(), event).await
                }
                // The object is deleted and its Event with it: done.
                Err(kube::Error::Api(status)) if status.is_not_found() => return false,
                other => other,
            }
        }
        None => events.create(&PostParams::default(), event).await,
    };
    let Err(error) = result else { return false };
    let retry = worth_retrying(&error, event.series.is_some());
    let object = event.regarding.as_ref().and_then(|r| r.name.as_deref());
    if retry {
        tracing::warn!(%error, reason = ?event.reason, ?object, "could not record event; will retry");
    } else {
        tracing::warn!(%error, reason = ?event.reason, ?object, "event rejected; not retrying");
    }
    retry
}

/// client-go's rule: the apiserver's own answers are final, except that a
/// series whose Event was just created by a concurrent write ("already
/// exists" after the patch found nothing) is patched again; a request that
/// cannot be built never will be; everything else — no connection, a
/// broken stream, an answer that is not a Status — may pass later.
fn worth_retrying(error: &kube::Error, is_series: bool) -> bool {
    match error {
        kube::Error::Api(status) => is_series && status.is_already_exists(),
        kube::Error::BuildRequest(_) | kube::Error::HttpError(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use kube::client::Body;
    use kube::core::Status;

    fn api_error(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Box::new(Status::failure("refused", reason).with_code(code)))
    }

    #[test]
    fn only_failures_that_may_pass_are_retried() {
        let transport = || kube::Error::Service("connection refused".into());
        let cases = [
            ("transport error", transport(), false, true),
            ("transport error, series", transport(), true, true),
            (
                "rejected as invalid",
                api_error(422, "Invalid"),
                false,
                false,
            ),
            ("forbidden", api_error(403, "Forbidden"), false, false),
            (
                "created twice",
                api_error(409, "AlreadyExists"),
                false,
                false,
            ),
            (
                "series created concurrently",
                api_error(409, "AlreadyExists"),
                true,
                true,
            ),
        ];
        for (name, error, is_series, want) in cases {
            assert_eq!(worth_retrying(&error, is_series), want, "{name}");
        }
    }

    #[test]
    fn a_reference_is_client_gos_with_the_resource_version() {
        let pod = k8s_openapi::api::core::v1::Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some("u-1".into()),
                resource_version: Some("42".into()),
                generation: Some(3),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            reference(&pod),
            ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some("u-1".into()),
                resource_version: Some("42".into()),
                field_path: None,
            }
        );
    }

    #[test]
    fn jitter_adds_up_to_a_quarter() {
        for _ in 0..100 {
            let d = jittered(RETRY_AFTER);
            assert!(d >= RETRY_AFTER && d <= RETRY_AFTER.mul_f64(1.25), "{d:?}");
        }
    }

    /// A client whose apiserver fails the first `failures` requests with a
    /// transport error (all of them if `None`) and then echoes what is
    /// created; every request is reported on the returned channel.
    fn flaky_apiserver(failures: Option<usize>) -> (Client, mpsc::UnboundedReceiver<String>) {
        let (seen, requests) = mpsc::unbounded_channel();
        let count = Arc::new(Mutex::new(0usize));
        let service = tower::service_fn(move |request: http::Request<Body>| {
            let seen = seen.clone();
            let count = count.clone();
            async move {
                let n = {
                    let mut count = count.lock().unwrap();
                    *count += 1;
                    *count
                };
                let _ = seen.send(format!("{} {}", request.method(), request.uri().path()));
                if failures.is_none_or(|f| n <= f) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        "connection refused",
                    ));
                }
                let body = request.into_body().collect().await.unwrap().to_bytes();
                Ok(http::Response::builder()
                    .status(201)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(body))
                    .unwrap())
            }
        });
        (Client::new(service, "default"), requests)
    }

    fn pod(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some("default".into()),
            name: Some(name.into()),
            uid: Some(format!("{name}-uid")),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_fails_in_transport_is_tried_again() {
        let (client, mut requests) = flaky_apiserver(Some(2));
        let recorder = EventRecorder::new(client, "test-component", Some("test".into()));
        recorder.record(
            &pod("a"),
            EventType::Normal,
            "Scheduled",
            "Binding",
            "assigned".into(),
        );
        for _ in 0..3 {
            let request = tokio::time::timeout(Duration::from_secs(60), requests.recv())
                .await
                .expect("a write within a minute")
                .expect("apiserver alive");
            assert_eq!(
                request,
                "POST /apis/events.k8s.io/v1/namespaces/default/events"
            );
        }
        // Written on the third try: nothing more is sent.
        let more = tokio::time::timeout(Duration::from_secs(600), requests.recv()).await;
        assert!(more.is_err(), "unexpected request {more:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_is_given_up_after_the_last_try() {
        let (client, mut requests) = flaky_apiserver(None);
        let recorder = EventRecorder::new(client, "test-component", Some("test".into()));
        recorder.record(
            &pod("a"),
            EventType::Warning,
            "FailedScheduling",
            "Scheduling",
            "no nodes".into(),
        );
        let started = tokio::time::Instant::now();
        for _ in 0..MAX_TRIES {
            tokio::time::timeout(Duration::from_secs(60), requests.recv())
                .await
                .expect("a try within a minute")
                .expect("apiserver alive");
        }
        // Tries are at least RETRY_AFTER apart.
        assert!(started.elapsed() >= RETRY_AFTER * (MAX_TRIES - 1));
        let more = tokio::time::timeout(Duration::from_secs(600), requests.recv()).await;
        assert!(more.is_err(), "a try beyond the limit: {more:?}");
    }

    /// A client whose apiserver echoes what is created and has no Event to
    /// patch (404); every request is reported on the returned channel.
    fn apiserver_without_events() -> (Client, mpsc::UnboundedReceiver<String>) {
        let (seen, requests) = mpsc::unbounded_channel();
        let service = tower::service_fn(move |request: http::Request<Body>| {
            let seen = seen.clone();
            async move {
                let _ = seen.send(format!("{} {}", request.method(), request.uri().path()));
                let (status, body) = if request.method() == http::Method::PATCH {
                    let status = serde_json::json!({"kind": "Status", "apiVersion": "v1",
                        "status": "Failure", "reason": "NotFound", "code": 404,
                        "message": "events not found"});
                    (404, Full::from(status.to_string()))
                } else {
                    let echo = request.into_body().collect().await.unwrap().to_bytes();
                    (201, Full::new(echo))
                };
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .status(status)
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(body)
                        .unwrap(),
                )
            }
        });
        (Client::new(service, "default"), requests)
    }

    async fn next_request(requests: &mut mpsc::UnboundedReceiver<String>) -> String {
        tokio::time::timeout(Duration::from_secs(60), requests.recv())
            .await
            .expect("a request within a minute")
            .expect("apiserver alive")
    }

    #[tokio::test(start_paused = true)]
    async fn after_its_object_is_deleted_a_series_is_only_patched_and_nothing_more_is_written() {
        let (client, mut requests) = apiserver_without_events();
        let recorder = EventRecorder::new(client, "test-component", Some("test".into()));
        let fail = || {
            recorder.record(
                &pod("a"),
                EventType::Warning,
                "FailedScheduling",
                "Scheduling",
                "0/1 nodes".into(),
            )
        };
        let create = "POST /apis/events.k8s.io/v1/namespaces/default/events";
        fail();
        assert_eq!(next_request(&mut requests).await, create);
        // A series of 2 patches the first Event; it is gone, so it is made again.
        fail();
        assert!(next_request(&mut requests).await.starts_with("PATCH "));
        assert_eq!(next_request(&mut requests).await, create);
        fail(); // only counted
        recorder.object_deleted("a-uid");
        // The final count (3) is patched; the Event is gone and stays gone.
        assert!(next_request(&mut requests).await.starts_with("PATCH "));
        fail();
        recorder.record(
            &pod("b"),
            EventType::Normal,
            "Scheduled",
            "Binding",
            "assigned".into(),
        );
        assert_eq!(
            next_request(&mut requests).await,
            create,
            "only the other pod's Event"
        );
        let more = tokio::time::timeout(Duration::from_secs(3600), requests.recv()).await;
        assert!(more.is_err(), "unexpected request {more:?}");
    }

    #[tokio::test]
    async fn a_flush_returns_once_the_events_recorded_before_it_are_written() {
        // An apiserver that holds each write until the test lets it answer.
        let (seen, mut requests) = mpsc::unbounded_channel();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let service = {
            let gate = gate.clone();
            tower::service_fn(move |request: http::Request<Body>| {
                let seen = seen.clone();
                let gate = gate.clone();
                async move {
                    let _ = seen.send(request.uri().path().to_string());
                    gate.acquire().await.unwrap().forget();
                    let echo = request.into_body().collect().await.unwrap().to_bytes();
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .status(201)
                            .header(http::header::CONTENT_TYPE, "application/json")
                            .body(Full::new(echo))
                            .unwrap(),
                    )
                }
            })
        };
        let recorder = EventRecorder::new(
            Client::new(service, "default"),
            "test-component",
            Some("test".into()),
        );
        for name in ["a", "b"] {
            recorder.record(
                &pod(name),
                EventType::Normal,
                "Scheduled",
                "Binding",
                "assigned".into(),
            );
        }
        let mut flush = std::pin::pin!(recorder.flush());
        for _ in 0..2 {
            tokio::select! {
                _ = &mut flush => panic!("flushed before the writes were answered"),
                request = requests.recv() => assert!(request.is_some()),
            }
        }
        gate.add_permits(1);
        let early = tokio::time::timeout(Duration::from_millis(200), &mut flush).await;
        assert!(early.is_err(), "flushed with a write still in flight");
        gate.add_permits(1);
        tokio::time::timeout(Duration::from_secs(10), flush)
            .await
            .expect("flushed once both writes were answered");
    }
}
