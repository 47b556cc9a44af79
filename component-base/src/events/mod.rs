//! Kubernetes Events (events.k8s.io/v1) for a component, best-effort and off
//! the caller's path: recording only queues the Event, and a background task
//! folds repeats into series and publishes, as upstream's event broadcaster
//! does. A full queue or a failed publish is logged and never fails or delays
//! the work that produced the Event.

mod series;
mod spam;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::mpsc;

use series::{FINISH_AFTER, Occurrence, REFRESH_EVERY, ReferenceKey, SeriesCache, SeriesKey};
pub use spam::SpamFilter;

/// Events waiting to be published; beyond this, new ones are dropped (as
/// upstream's broadcaster drops when its queue of 1000 is full).
const QUEUE: usize = 1000;
/// Publishes in flight at once. client-go starts a goroutine per Event, so
/// its writes are bounded only by the client's QPS; with too few in flight a
/// scheduler binding 900 pods a second filled the queue and dropped most of
/// its `Scheduled` Events. The client multiplexes them over one HTTP/2
/// connection, so many in flight cost streams, not connections.
const CONCURRENCY: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Records Events as `reportingController` = the component's name.
#[derive(Clone)]
pub struct EventRecorder {
    queue: mpsc::Sender<Occurrence>,
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
        let cache = SeriesCache::new(component.to_string(), instance);
        let (queue, rx) = mpsc::channel::<Occurrence>(QUEUE);
        tokio::spawn(publish_all(client, cache, rx));
        Self { queue, spam: None }
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
                action: action.into(),
                reason: reason.into(),
                regarding: ReferenceKey::from(regarding),
                related: None,
            },
            type_,
            note: Some(note),
        };
        if self.queue.try_send(occurrence).is_err() {
            tracing::warn!(
                reason,
                object = ?regarding.name,
                "event queue full; dropping event"
            );
        }
    }
}

/// The publishing task: folds each queued Event into the series cache and
/// writes what it says to write, at most [`CONCURRENCY`] writes at a time;
/// ends series and refreshes their counts on client-go's schedule.
async fn publish_all(client: Client, mut cache: SeriesCache, mut rx: mpsc::Receiver<Occurrence>) {
    let period = |d: k8s_openapi::jiff::SignedDuration| {
        let d = std::time::Duration::try_from(d).expect("positive period");
        tokio::time::interval_at(tokio::time::Instant::now() + d, d)
    };
    let mut finish_tick = period(FINISH_AFTER);
    let mut refresh_tick = period(REFRESH_EVERY);
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            occurrence = rx.recv(), if in_flight.len() < CONCURRENCY => {
                let Some(occurrence) = occurrence else { break };
                if let Some(event) = cache.observe(occurrence, Timestamp::now()) {
                    in_flight.push(write(client.clone(), event));
                }
            }
            _ = finish_tick.tick() => {
                in_flight.extend(cache.finish(Timestamp::now()).into_iter().map(|e| write(client.clone(), e)));
            }
            _ = refresh_tick.tick() => {
                in_flight.extend(cache.refresh().into_iter().map(|e| write(client.clone(), e)));
            }
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
    while in_flight.next().await.is_some() {}
}

/// Creates a new Event, or patches a series' count into the Event it
/// started as (creating it if it is gone), as client-go's recordEvent.
async fn write(client: Client, event: K8sEvent) {
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
                Err(kube::Error::Api(status)) if status.is_not_found() => {
                    events.create(&PostParams::default(), &event).await
                }
                other => other,
            }
        }
        None => events.create(&PostParams::default(), &event).await,
    };
    if let Err(error) = result {
        tracing::warn!(%error, reason = ?event.reason, object = ?event.regarding.and_then(|r| r.name), "could not record event");
    }
}
