//! A keyed work queue with client-go's semantics: a key is queued at most once,
//! is never processed by two workers at a time (an add while it is processed
//! queues it again once done), can be added after a delay, and failed keys come
//! back with per-key exponential backoff (5 ms doubling to 1000 s, upstream's
//! default controller rate limiter).

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::metrics::QueueMetrics;

const BASE_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(1000);

struct State<T> {
    queue: VecDeque<T>,
    /// Keys waiting to be processed (queued, or re-added while processing).
    dirty: HashSet<T>,
    processing: HashSet<T>,
    /// When each queued key was added, for the queue-latency metric.
    added_at: HashMap<T, Instant>,
    failures: HashMap<T, u32>,
    /// Keys with a batched add pending, and when it is due (see `add_batched`).
    batching: HashMap<T, tokio::time::Instant>,
    shutting_down: bool,
}

pub struct WorkQueue<T> {
    state: Mutex<State<T>>,
    notify: Notify,
    metrics: QueueMetrics,
}

impl<T> WorkQueue<T>
where
    T: Clone + Eq + Hash + Send + Sync + 'static,
{
    pub fn new(metrics: QueueMetrics) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                added_at: HashMap::new(),
                failures: HashMap::new(),
                batching: HashMap::new(),
                shutting_down: false,
            }),
            notify: Notify::new(),
            metrics,
        })
    }

    pub fn add(&self, item: T) {
        let mut state = self.state.lock().expect("queue lock");
        if state.shutting_down || state.dirty.contains(&item) {
            return;
        }
        self.metrics.adds.inc();
        state.dirty.insert(item.clone());
        if state.processing.contains(&item) {
            return; // `done` queues it again
        }
        state.added_at.insert(item.clone(), Instant::now());
        state.queue.push_back(item);
        self.metrics.depth.set(state.queue.len() as i64);
        drop(state);
        self.notify.notify_one();
    }

    /// Adds the key once `delay` has passed (at once for a zero delay).
    pub fn add_after(self: &Arc<Self>, item: T, delay: Duration) {
        if delay.is_zero() {
            self.add(item);
            return;
        }
        let queue = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(queue) = queue.upgrade() {
                queue.add(item);
            }
        });
    }

    /// Adds the key once `delay` has passed, keeping only the earliest
    /// pending time per key (client-go's delaying queue): a burst of changes
    /// to one object within `delay` costs one reconcile. A zero delay adds at
    /// once.
    pub fn add_batched(self: &Arc<Self>, item: T, delay: Duration) {
        if delay.is_zero() {
            self.add(item);
            return;
        }
        let ready = tokio::time::Instant::now() + delay;
        {
            let mut state = self.state.lock().expect("queue lock");
            if state.shutting_down
                || state.dirty.contains(&item)
                || state.batching.get(&item).is_some_and(|at| *at <= ready)
            {
                return;
            }
            state.batching.insert(item.clone(), ready);
        }
        let queue = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(ready).await;
            let Some(queue) = queue.upgrade() else {
                return;
            };
            let due = {
                let mut state = queue.state.lock().expect("queue lock");
                let due = state.batching.get(&item) == Some(&ready);
                if due {
                    state.batching.remove(&item);
                }
                due
            };
            if due {
                queue.add(item);
            }
        });
    }

    /// Adds the key after its next backoff step.
    pub fn add_rate_limited(self: &Arc<Self>, item: T) {
        let delay = {
            let mut state = self.state.lock().expect("queue lock");
            let failures = state.failures.entry(item.clone()).or_insert(0);
            let delay = backoff(*failures);
            *failures += 1;
            delay
        };
        self.metrics.retries.inc();
        self.add_after(item, delay);
    }

    /// Resets the key's backoff (after it was processed successfully).
    pub fn forget(&self, item: &T) {
        self.state.lock().expect("queue lock").failures.remove(item);
    }

    pub fn failures(&self, item: &T) -> u32 {
        let state = self.state.lock().expect("queue lock");
        state.failures.get(item).copied().unwrap_or(0)
    }

    /// The next key to process, waiting for one; `None` once shut down.
    pub async fn get(&self) -> Option<T> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state.lock().expect("queue lock");
                if state.shutting_down {
                    return None;
                }
                if let Some(item) = state.queue.pop_front() {
                    state.dirty.remove(&item);
                    state.processing.insert(item.clone());
                    if let Some(at) = state.added_at.remove(&item) {
                        self.metrics
                            .queue_duration
                            .observe(at.elapsed().as_secs_f64());
                    }
                    self.metrics.depth.set(state.queue.len() as i64);
                    return Some(item);
                }
            }
            notified.await;
        }
    }

    /// Marks the key processed; if it was added meanwhile it is queued again.
    pub fn done(&self, item: &T) {
        let mut state = self.state.lock().expect("queue lock");
        state.processing.remove(item);
        if state.dirty.contains(item) && !state.shutting_down {
            state.added_at.insert(item.clone(), Instant::now());
            state.queue.push_back(item.clone());
            self.metrics.depth.set(state.queue.len() as i64);
            drop(state);
            self.notify.notify_one();
        }
    }

    /// Wakes every waiting worker with `None`; queued keys are dropped.
    pub fn shut_down(&self) {
        self.state.lock().expect("queue lock").shutting_down = true;
        self.notify.notify_waiters();
    }

    pub fn len(&self) -> usize {
        self.state.lock().expect("queue lock").queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The delay before the retry after `failures` earlier failures.
pub fn backoff(failures: u32) -> Duration {
    BASE_DELAY
        .checked_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(MAX_DELAY)
        .min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> Arc<WorkQueue<String>> {
        WorkQueue::new(QueueMetrics::detached())
    }

    #[tokio::test]
    async fn a_key_is_queued_once() {
        let q = queue();
        q.add("a".into());
        q.add("a".into());
        q.add("b".into());
        assert_eq!(q.len(), 2);
        assert_eq!(q.get().await.as_deref(), Some("a"));
        assert_eq!(q.get().await.as_deref(), Some("b"));
    }

    #[tokio::test]
    async fn a_key_added_while_processing_comes_back_after_done() {
        let q = queue();
        q.add("a".into());
        let a = q.get().await.unwrap();
        q.add("a".into());
        assert!(
            q.is_empty(),
            "not handed to a second worker while processing"
        );
        q.done(&a);
        assert_eq!(q.len(), 1);
        assert_eq!(q.get().await.as_deref(), Some("a"));
    }

    #[tokio::test]
    async fn shut_down_wakes_waiting_workers() {
        let q = queue();
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.get().await }
        });
        tokio::task::yield_now().await;
        q.shut_down();
        assert_eq!(waiter.await.unwrap(), None);
    }

    #[tokio::test]
    async fn failed_keys_back_off_exponentially() {
        let q = queue();
        q.add_rate_limited("a".into());
        q.add_rate_limited("a".into());
        assert_eq!(q.failures(&"a".to_string()), 2);
        assert!(q.is_empty(), "a retry waits for its backoff");
        let got = tokio::time::timeout(Duration::from_secs(5), q.get()).await;
        assert_eq!(got.unwrap().as_deref(), Some("a"));
        q.forget(&"a".to_string());
        assert_eq!(q.failures(&"a".to_string()), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn batched_adds_coalesce_to_the_earliest() {
        let q = queue();
        let key = || "svc".to_string();
        let ms = Duration::from_millis;
        q.add_batched(key(), ms(400));
        q.add_batched(key(), ms(50));
        q.add_batched(key(), ms(200));
        assert!(q.is_empty(), "waits for the batch period");
        let got = q.get().await.unwrap();
        let waited = tokio::time::Instant::now();
        q.done(&got);
        tokio::time::sleep_until(waited + ms(500)).await;
        assert!(q.is_empty(), "later timers were superseded");
        q.add_batched(key(), Duration::ZERO);
        assert_eq!(q.len(), 1, "a zero delay adds at once");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(0), Duration::from_millis(5));
        assert_eq!(backoff(1), Duration::from_millis(10));
        assert_eq!(backoff(10), Duration::from_millis(5120));
        assert_eq!(backoff(40), MAX_DELAY);
    }
}
