//! Upstream's BoundedFrequencyRunner (pkg/proxy/runner), in tokio: a sync
//! runs when asked, but never sooner than `min_interval` after the previous
//! one (requests in between are batched into one run), after `retry_interval`
//! when the previous run failed, and at the latest `max_interval` after it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intervals {
    /// minSyncPeriod.
    pub min: Duration,
    /// syncPeriod: after a failed run.
    pub retry: Duration,
    /// Upstream's FullSyncPeriod (an hour): a run even when nothing asked.
    pub max: Duration,
}

/// Asks the loop for a run; requests made while one is pending are one.
#[derive(Clone, Default)]
pub struct Trigger(Arc<Notify>);

impl Trigger {
    pub fn run(&self) {
        // notify_one keeps a permit when nobody waits yet: a request made
        // during a run or the min-interval pause is not lost.
        self.0.notify_one();
    }
}

/// Runs `work` as described above until `stop` is cancelled. `work` returns
/// whether the run succeeded.
pub async fn run_loop<F, Fut>(
    intervals: Intervals,
    trigger: Trigger,
    stop: CancellationToken,
    mut work: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut next_run = Instant::now() + intervals.max;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = sleep_until(next_run) => {}
            _ = trigger.0.notified() => {}
        }
        let ok = work().await;
        let after = if ok {
            intervals.max
        } else {
            intervals.retry.min(intervals.max)
        };
        let ran = Instant::now();
        next_run = ran + after;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = sleep_until(ran + intervals.min) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const INTERVALS: Intervals = Intervals {
        min: Duration::from_secs(1),
        retry: Duration::from_secs(30),
        max: Duration::from_secs(3600),
    };

    /// Starts the loop with `results` as the outcomes of successive runs
    /// (then success), recording the (virtual) second of each run.
    fn start(results: Vec<bool>) -> (Trigger, CancellationToken, Arc<Mutex<Vec<u64>>>, Instant) {
        let trigger = Trigger::default();
        let stop = CancellationToken::new();
        let runs = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let (recorded, mut results) = (runs.clone(), results.into_iter());
        tokio::spawn(run_loop(
            INTERVALS,
            trigger.clone(),
            stop.clone(),
            move || {
                recorded
                    .lock()
                    .unwrap()
                    .push(start.elapsed().as_millis() as u64 / 100);
                let ok = results.next().unwrap_or(true);
                async move { ok }
            },
        ));
        (trigger, stop, runs, start)
    }

    async fn advance_to(start: Instant, tenths: u64) {
        tokio::time::sleep_until(start + Duration::from_millis(tenths * 100)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn requests_within_min_interval_are_batched_into_one_run() {
        let (trigger, stop, runs, start) = start(vec![]);
        trigger.run();
        advance_to(start, 2).await;
        for _ in 0..5 {
            trigger.run();
        }
        advance_to(start, 5).await;
        trigger.run();
        advance_to(start, 30).await;
        // One at once, the six later requests in one run at the 1 s mark.
        assert_eq!(*runs.lock().unwrap(), vec![0, 10]);
        trigger.run();
        advance_to(start, 31).await;
        assert_eq!(
            *runs.lock().unwrap(),
            vec![0, 10, 30],
            "idle long enough: at once"
        );
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn runs_at_max_interval_unasked_and_retries_after_failure() {
        let (trigger, stop, runs, start) = start(vec![false, false, true]);
        trigger.run();
        advance_to(start, 700).await;
        // Failed at 0 s and 30 s: retried 30 s later each time, then the
        // success at 60 s waits the full hour.
        assert_eq!(*runs.lock().unwrap(), vec![0, 300, 600]);
        advance_to(start, 600 + 36000 + 1).await;
        assert_eq!(runs.lock().unwrap().last(), Some(&(600 + 36000)));
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_cancelled() {
        let (trigger, stop, runs, start) = start(vec![]);
        stop.cancel();
        tokio::task::yield_now().await;
        trigger.run();
        advance_to(start, 20).await;
        assert!(runs.lock().unwrap().is_empty());
    }
}
