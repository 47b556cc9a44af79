//! Kubernetes Events for a component, best-effort and off the caller's path:
//! recording only queues the Event, and a background task publishes it, as
//! upstream's event broadcaster does. A full queue or a failed publish is
//! logged and never fails or delays the work that produced the Event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

/// Events waiting to be published; beyond this, new ones are dropped (as
/// upstream's broadcaster drops when its queue of 1000 is full).
const QUEUE: usize = 1000;
/// Publishes in flight at once, so a burst drains at the event client's pace.
const CONCURRENCY: usize = 8;

/// Records Events as `reportingController` = the component's name.
#[derive(Clone)]
pub struct EventRecorder {
    queue: mpsc::Sender<(ObjectReference, Event)>,
    spam: Option<Arc<Mutex<SpamFilter>>>,
}

/// client-go's EventSourceObjectSpamFilter and aggregation limit, which
/// kube-controller-manager's recorders use: per object and event type a
/// token bucket of 25 that refills one token every 5 minutes, and at most 10
/// Events per object and reason in 10 minutes, so a storm about one object
/// costs the apiserver a few Events, not thousands.
pub struct SpamFilter {
    buckets: HashMap<String, (f64, Instant)>,
    /// Per object, type and reason: when the window opened and how many
    /// Events it let through (client-go's aggregator combines after 10).
    similar: HashMap<String, (Instant, u32)>,
}

const SIMILAR_MAX: u32 = 10;
const SIMILAR_WINDOW: Duration = Duration::from_secs(600);

const SPAM_BURST: f64 = 25.0;
const SPAM_REFILL: Duration = Duration::from_secs(300);
/// Buckets kept; beyond this, full buckets (which say nothing) are forgotten.
const SPAM_KEYS: usize = 4096;

impl SpamFilter {
    fn new() -> Self {
        Self {
            buckets: HashMap::new(),
            similar: HashMap::new(),
        }
    }

    /// Whether another Event with this reason about this object may be sent:
    /// at most 10 per 10 minutes. Beyond that client-go folds them into one
    /// "(combined from similar events)" Event; kube's recorder already folds
    /// same-reason Events into one series, so the rest are dropped.
    pub fn allow_similar(&mut self, key: &str, now: Instant) -> bool {
        if self.similar.len() >= SPAM_KEYS {
            self.similar
                .retain(|_, (opened, _)| now.duration_since(*opened) < SIMILAR_WINDOW);
        }
        let (opened, count) = self.similar.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(*opened) >= SIMILAR_WINDOW {
            *opened = now;
            *count = 0;
        }
        *count += 1;
        *count <= SIMILAR_MAX
    }

    /// Whether an Event about `key` may be sent at `now` (taking a token).
    pub fn allow(&mut self, key: &str, now: Instant) -> bool {
        if self.buckets.len() >= SPAM_KEYS {
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() / SPAM_REFILL.as_secs_f64()
                    < SPAM_BURST
            });
        }
        let (tokens, at) = self
            .buckets
            .entry(key.to_string())
            .or_insert((SPAM_BURST, now));
        let refilled = now.duration_since(*at).as_secs_f64() / SPAM_REFILL.as_secs_f64();
        *tokens = (*tokens + refilled).min(SPAM_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl EventRecorder {
    /// Must be called within a tokio runtime: it starts the publishing task,
    /// which ends once every clone of the recorder is dropped.
    pub fn new(client: Client, component: &str, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: component.into(),
            instance,
        };
        let recorder = Recorder::new(client, reporter);
        let (queue, rx) = mpsc::channel::<(ObjectReference, Event)>(QUEUE);
        tokio::spawn(async move {
            tokio_stream_from(rx)
                .for_each_concurrent(CONCURRENCY, |(regarding, event)| {
                    let recorder = recorder.clone();
                    async move {
                        if let Err(error) = recorder.publish(&event, &regarding).await {
                            tracing::warn!(%error, reason = %event.reason, object = ?regarding.name, "could not record event");
                        }
                    }
                })
                .await;
        });
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
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if self.queue.try_send((regarding.clone(), event)).is_err() {
            tracing::warn!(
                reason,
                object = ?regarding.name,
                "event queue full; dropping event"
            );
        }
    }
}

/// A receiver as a stream (what tokio-stream's ReceiverStream does, without
/// the extra dependency).
fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spam_filter_allows_a_burst_then_one_per_refill() {
        let mut f = SpamFilter::new();
        let t0 = Instant::now();
        for _ in 0..25 {
            assert!(f.allow("rs/a", t0));
        }
        assert!(!f.allow("rs/a", t0), "burst spent");
        assert!(f.allow("rs/b", t0), "other objects have their own budget");
        assert!(!f.allow("rs/a", t0 + Duration::from_secs(299)));
        assert!(f.allow("rs/a", t0 + Duration::from_secs(301)));
    }

    #[test]
    fn similar_events_stop_after_ten_per_window() {
        let mut f = SpamFilter::new();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(f.allow_similar("rs/a/SuccessfulCreate", t0));
        }
        assert!(!f.allow_similar("rs/a/SuccessfulCreate", t0));
        assert!(f.allow_similar("rs/a/SuccessfulDelete", t0));
        assert!(f.allow_similar("rs/a/SuccessfulCreate", t0 + Duration::from_secs(601)));
    }
}
