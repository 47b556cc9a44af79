//! Quantiles from a Prometheus text-format histogram, as PromQL's
//! histogram_quantile does (linear interpolation inside the bucket).
//!
//! Hand-written: we need only `_bucket` lines of one metric, summed over
//! label sets that match a filter; a full exposition parser crate would add a
//! dependency for ten lines of work.

/// Cumulative (upper bound, count) pairs of `metric`'s buckets, summed over
/// every series whose labels contain all of `must_contain`.
pub fn buckets(text: &str, metric: &str, must_contain: &[&str]) -> Vec<(f64, f64)> {
    let prefix = format!("{metric}_bucket{{");
    let mut sums: Vec<(f64, f64)> = vec![];
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        if !must_contain.iter().all(|m| labels.contains(m)) {
            continue;
        }
        let Some(le) = labels
            .split(',')
            .find_map(|l| l.trim().strip_prefix("le=\""))
            .map(|v| v.trim_end_matches('"'))
        else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        let count: f64 = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        match sums.iter_mut().find(|(b, _)| *b == le) {
            Some(entry) => entry.1 += count,
            None => sums.push((le, count)),
        }
    }
    sums.sort_by(|a, b| a.0.total_cmp(&b.0));
    sums
}

/// The sum of `metric`'s samples (a counter or gauge, not a histogram) over
/// every series whose labels contain all of `must_contain`.
pub fn sum(text: &str, metric: &str, must_contain: &[&str]) -> f64 {
    let prefix = format!("{metric}{{");
    text.lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|rest| rest.rsplit_once("} "))
        .filter(|(labels, _)| must_contain.iter().all(|m| labels.contains(m)))
        .filter_map(|(_, value)| value.split_whitespace().next()?.parse::<f64>().ok())
        .sum()
}

/// Cumulative buckets of what was observed between two snapshots.
pub fn bucket_delta(after: &[(f64, f64)], before: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|&(le, count)| {
            let earlier = before
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |(_, c)| *c);
            (le, count - earlier)
        })
        .collect()
}

/// The `q` quantile (0..1) of cumulative buckets; `None` without observations.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev_bound = 0.0;
    let mut prev_count = 0.0;
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(prev_bound);
            }
            let in_bucket = count - prev_count;
            if in_bucket <= 0.0 {
                return Some(bound);
            }
            return Some(prev_bound + (bound - prev_bound) * (rank - prev_count) / in_bucket);
        }
        prev_bound = bound;
        prev_count = count;
    }
    Some(prev_bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_counter_series_matching_a_filter() {
        let text = "# HELP x\nreqs{verb=\"POST\",code=\"201\"} 3\nreqs{verb=\"GET\",code=\"200\"} 5\nreqs{verb=\"POST\",code=\"409\"} 2\nother{verb=\"POST\"} 9\n";
        assert_eq!(sum(text, "reqs", &["verb=\"POST\""]), 5.0);
        assert_eq!(sum(text, "reqs", &[]), 10.0);
    }

    const TEXT: &str = r#"# TYPE x histogram
x_bucket{result="scheduled",profile="a",le="0.001"} 0
x_bucket{result="scheduled",profile="a",le="0.002"} 50
x_bucket{result="scheduled",profile="a",le="0.004"} 100
x_bucket{result="scheduled",profile="a",le="+Inf"} 100
x_bucket{result="error",profile="a",le="0.001"} 7
x_bucket{result="error",profile="a",le="+Inf"} 7
"#;

    #[test]
    fn interpolates_like_histogram_quantile() {
        let b = buckets(TEXT, "x", &["result=\"scheduled\""]);
        assert_eq!(b.len(), 4);
        assert_eq!(quantile(0.5, &b), Some(0.002));
        let p99 = quantile(0.99, &b).unwrap();
        assert!((p99 - 0.00396).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(0.5, &buckets(TEXT, "nope", &[])), None);
    }

    #[test]
    fn bucket_deltas() {
        let delta = bucket_delta(&[(0.1, 5.0), (f64::INFINITY, 9.0)], &[(0.1, 2.0)]);
        assert_eq!(delta, vec![(0.1, 3.0), (f64::INFINITY, 9.0)]);
    }

    #[test]
    fn sums_matching_series() {
        let b = buckets(TEXT, "x", &[]);
        assert_eq!(b.first(), Some(&(0.001, 7.0)));
        assert_eq!(b.last(), Some(&(f64::INFINITY, 107.0)));
    }
}
