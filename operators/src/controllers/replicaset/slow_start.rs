//! Slow start (upstream's `slowStartBatch`): calls are made in batches of 1,
//! 2, 4, … and the first batch with a failure ends the run, so a ReplicaSet
//! whose pods all fail the same way (quota, admission) costs one failed call
//! and one Event rather than hundreds.

use std::future::Future;

/// Upstream's `SlowStartInitialBatchSize`.
pub const INITIAL_BATCH_SIZE: usize = 1;

/// The batch sizes for `count` calls: doubling from `initial`, the last one
/// cut to what remains.
pub fn batch_sizes(count: usize, initial: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut remaining = count;
    let mut size = initial.max(1).min(remaining);
    while size > 0 {
        sizes.push(size);
        remaining -= size;
        size = (size * 2).min(remaining);
    }
    sizes
}

/// Calls `call` up to `count` times, each batch concurrently, stopping after
/// a batch with a failure. Returns how many calls succeeded and the first
/// failure; calls never made count as neither.
pub async fn run<F, Fut, E>(count: usize, initial: usize, mut call: F) -> (usize, Option<E>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut successes = 0;
    for size in batch_sizes(count, initial) {
        let results = futures::future::join_all((0..size).map(|_| call())).await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(()) => successes += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if first_error.is_some() {
            return (successes, first_error);
        }
    }
    (successes, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn batches_double_and_the_last_is_cut() {
        let cases: &[(usize, &[usize])] = &[
            (0, &[]),
            (1, &[1]),
            (2, &[1, 1]),
            (3, &[1, 2]),
            (4, &[1, 2, 1]),
            (7, &[1, 2, 4]),
            (10, &[1, 2, 4, 3]),
            (500, &[1, 2, 4, 8, 16, 32, 64, 128, 245]),
        ];
        for (count, want) in cases {
            assert_eq!(batch_sizes(*count, INITIAL_BATCH_SIZE), *want, "{count}");
            assert_eq!(want.iter().sum::<usize>(), *count);
        }
    }

    /// Runs `count` calls where the calls numbered in `failing` (0-based)
    /// fail; returns (successes, first error, calls made).
    async fn simulate(count: usize, failing: &[usize]) -> (usize, Option<usize>, usize) {
        let made = AtomicUsize::new(0);
        let (ok, err) = run(count, INITIAL_BATCH_SIZE, || {
            let n = made.fetch_add(1, Ordering::SeqCst);
            let fail = failing.contains(&n);
            async move { if fail { Err(n) } else { Ok(()) } }
        })
        .await;
        (ok, err, made.load(Ordering::SeqCst))
    }

    /// (successes, first error, calls made).
    type Outcome = (usize, Option<usize>, usize);

    #[tokio::test]
    async fn stops_after_the_first_failing_batch() {
        let cases: &[(&str, usize, &[usize], Outcome)] = &[
            ("all succeed", 10, &[], (10, None, 10)),
            ("first fails", 10, &[0], (0, Some(0), 1)),
            // Batches 1, 2, 4: call 4 is in the third batch, which finishes.
            ("third batch fails", 10, &[4], (6, Some(4), 7)),
            ("two fail in one batch", 10, &[3, 5], (5, Some(3), 7)),
            ("last call fails", 3, &[2], (2, Some(2), 3)),
        ];
        for (name, count, failing, want) in cases {
            assert_eq!(simulate(*count, failing).await, *want, "{name}");
        }
    }
}
