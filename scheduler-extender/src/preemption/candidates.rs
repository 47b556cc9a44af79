//! Choosing among preemption candidates, as upstream's
//! pickOneNodeForPreemption: each rule narrows the field, in order.

use std::sync::Arc;

use crate::framework::PodInfo;

/// A node where preemption would make room, and what it would cost.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub node: String,
    /// In importance order (highest priority first).
    pub victims: Vec<Arc<PodInfo>>,
    pub num_pdb_violations: usize,
}

/// How many candidates the dry run looks for: a percentage of the potential
/// nodes, at least the absolute minimum, at most all of them.
pub fn num_candidates(potential_nodes: usize, min_percentage: u32, min_absolute: u32) -> usize {
    let n = potential_nodes * min_percentage as usize / 100;
    n.max(min_absolute as usize).min(potential_nodes)
}

/// When a victim started, for the "latest start time" rule (creation time
/// when the pod never started).
pub fn start_time(pod: &PodInfo) -> Option<jiff::Timestamp> {
    pod.pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(pod.pod.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
}

fn highest_priority(c: &Candidate) -> i32 {
    c.victims
        .iter()
        .map(|v| v.priority)
        .max()
        .unwrap_or(i32::MIN)
}

/// Sum of victim priorities, each shifted by 2^31 so negative priorities still
/// add up to less for fewer/lower victims (upstream's offset).
fn priority_sum(c: &Candidate) -> i64 {
    c.victims
        .iter()
        .map(|v| i64::from(v.priority) + (1i64 << 31))
        .sum()
}

/// Earliest start among the candidate's highest-priority victims.
fn earliest_start_of_highest(c: &Candidate) -> Option<jiff::Timestamp> {
    let top = highest_priority(c);
    c.victims
        .iter()
        .filter(|v| v.priority == top)
        .filter_map(|v| start_time(v))
        .min()
}

fn keep_min<K: Ord + Copy>(field: Vec<usize>, key: impl Fn(usize) -> K) -> Vec<usize> {
    let best = field.iter().map(|&i| key(i)).min();
    field
        .into_iter()
        .filter(|&i| Some(key(i)) == best)
        .collect()
}

/// Index of the candidate to preempt on: one needing no victims at once;
/// else fewest PDB violations, then lowest highest-victim priority, then
/// smallest priority sum, then fewest victims, then the latest start time of
/// the highest-priority victims; then the first.
pub fn pick_one(candidates: &[Candidate]) -> Option<usize> {
    if candidates.is_empty() {
        return None;
    }
    if let Some(i) = candidates.iter().position(|c| c.victims.is_empty()) {
        return Some(i);
    }
    let mut field: Vec<usize> = (0..candidates.len()).collect();
    field = keep_min(field, |i| candidates[i].num_pdb_violations);
    field = keep_min(field, |i| highest_priority(&candidates[i]));
    field = keep_min(field, |i| priority_sum(&candidates[i]));
    field = keep_min(field, |i| candidates[i].victims.len());
    if field.len() > 1 {
        // Latest start wins: minimise the negated time (None sorts first = best
        // only if nothing has a time, which keeps the first).
        let latest = field
            .iter()
            .filter_map(|&i| earliest_start_of_highest(&candidates[i]))
            .max();
        if let Some(latest) = latest {
            field.retain(|&i| earliest_start_of_highest(&candidates[i]) == Some(latest));
        }
    }
    field.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testing::pod;
    use serde_json::json;

    fn victim(name: &str, priority: i32, started: &str) -> Arc<PodInfo> {
        let mut p = (*pod(name, &[], json!({"priority": priority})).pod).clone();
        p.status = Some(serde_json::from_value(json!({"startTime": started})).unwrap());
        Arc::new(PodInfo::new(Arc::new(p)))
    }

    fn cand(node: &str, victims: Vec<Arc<PodInfo>>, pdb: usize) -> Candidate {
        Candidate {
            node: node.into(),
            victims,
            num_pdb_violations: pdb,
        }
    }

    const T1: &str = "2026-01-01T00:00:00Z";
    const T2: &str = "2026-01-02T00:00:00Z";

    fn pick(c: &[Candidate]) -> &str {
        &c[pick_one(c).unwrap()].node
    }

    #[test]
    fn a_node_without_victims_wins_outright() {
        let c = vec![cand("a", vec![victim("v", 1, T1)], 0), cand("b", vec![], 3)];
        assert_eq!(pick(&c), "b");
    }

    #[test]
    fn fewest_pdb_violations_first() {
        let c = vec![
            cand("a", vec![victim("v", 1, T1)], 1),
            cand("b", vec![victim("w", 100, T1), victim("x", 100, T1)], 0),
        ];
        assert_eq!(pick(&c), "b");
    }

    #[test]
    fn then_lowest_highest_victim_priority() {
        let c = vec![
            cand("a", vec![victim("v", 50, T1)], 0),
            cand("b", vec![victim("w", 10, T1), victim("x", 10, T1)], 0),
        ];
        assert_eq!(pick(&c), "b");
    }

    #[test]
    fn then_smallest_priority_sum() {
        let c = vec![
            cand("a", vec![victim("v", 10, T1), victim("w", 10, T1)], 0),
            cand("b", vec![victim("x", 10, T1), victim("y", 5, T1)], 0),
        ];
        assert_eq!(pick(&c), "b");
    }

    #[test]
    fn then_fewest_victims() {
        // Equal sums with negative priorities: the offset makes fewer victims cheaper.
        let c = vec![
            cand("a", vec![victim("v", -5, T1), victim("w", -5, T1)], 0),
            cand("b", vec![victim("x", -5, T1)], 0),
        ];
        assert_eq!(pick(&c), "b");
        let c = vec![
            cand("a", vec![victim("v", 0, T1), victim("w", 0, T1)], 0),
            cand("b", vec![victim("x", 0, T1)], 0),
        ];
        assert_eq!(pick(&c), "b");
    }

    #[test]
    fn then_latest_start_time() {
        let c = vec![
            cand("a", vec![victim("v", 10, T1)], 0),
            cand("b", vec![victim("w", 10, T2)], 0),
        ];
        assert_eq!(pick(&c), "b");
    }

    #[test]
    fn then_the_first() {
        let c = vec![
            cand("a", vec![victim("v", 10, T1)], 0),
            cand("b", vec![victim("w", 10, T1)], 0),
        ];
        assert_eq!(pick(&c), "a");
        assert_eq!(pick_one(&[]), None);
    }

    #[test]
    fn candidate_count_follows_upstream() {
        assert_eq!(num_candidates(50, 10, 100), 50);
        assert_eq!(num_candidates(5000, 10, 100), 500);
        assert_eq!(num_candidates(500, 10, 100), 100);
        assert_eq!(num_candidates(500, 0, 10), 10);
    }
}
