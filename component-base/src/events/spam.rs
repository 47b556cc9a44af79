//! client-go's per-object Event budget, which kube-controller-manager's
//! recorders apply before an Event reaches the apiserver.

use std::collections::HashMap;
use std::time::{Duration, Instant};

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
    pub(super) fn new() -> Self {
        Self {
            buckets: HashMap::new(),
            similar: HashMap::new(),
        }
    }

    /// Whether another Event with this reason about this object may be sent:
    /// at most 10 per 10 minutes. Beyond that client-go folds them into one
    /// "(combined from similar events)" Event; the recorder already folds
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
