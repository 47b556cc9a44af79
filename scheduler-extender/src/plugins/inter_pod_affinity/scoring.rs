//! PreScore / Score / NormalizeScore: weights of preferred terms (both the
//! incoming pod's and existing pods'), and of existing pods' required
//! affinity terms, summed per topology domain.

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use crate::framework::labels::Labels;
use crate::framework::{
    AffinityTerm, CycleState, MAX_NODE_SCORE, NodeInfo, NodeScore, PodInfo, PreScorePlugin,
    ScorePlugin, Snapshot, Status,
};

use super::{
    InterPodAffinity, aggregate, has_preferred_terms, incoming_namespace_labels,
    incoming_term_matches,
};

pub const PRE_SCORE_STATE_KEY: &str = "PreScoreInterPodAffinity";

/// topologyKey → value → summed weight.
type ScoreMap = HashMap<String, HashMap<String, i64>>;

/// Read-only after PreScore, so clones share it.
#[derive(Clone, Debug)]
struct PreScoreState {
    topology_score: Arc<ScoreMap>,
}

/// Adds `weight` to the existing pod's node domain for `key`; returns
/// whether anything was recorded (a node without the key is in no domain).
fn add(map: &mut ScoreMap, node_labels: &Labels, key: &str, weight: i64) -> bool {
    let Some(value) = node_labels.get(key) else {
        return false;
    };
    *map.entry(key.to_string())
        .or_default()
        .entry(value.clone())
        .or_default() += weight;
    true
}

fn merge(mut a: ScoreMap, b: ScoreMap) -> ScoreMap {
    for (key, values) in b {
        let mine = a.entry(key).or_default();
        for (value, w) in values {
            *mine.entry(value).or_default() += w;
        }
    }
    a
}

struct Scorer<'a> {
    incoming: &'a PodInfo,
    /// The incoming pod's namespace labels, for existing pods' selectors.
    ns_labels: &'a Labels,
    namespaces: &'a HashMap<String, Labels>,
    hard_weight: i64,
}

impl Scorer<'_> {
    /// Records what `existing` (running on `node`) contributes; returns
    /// whether it contributed anything.
    fn process_existing_pod(
        &self,
        existing: &PodInfo,
        node: &NodeInfo,
        map: &mut ScoreMap,
    ) -> bool {
        let labels = &node.labels;
        if labels.is_empty() {
            return false;
        }
        let mut touched = false;
        let mut record = |term: &AffinityTerm, matched: bool, weight: i64| {
            if matched {
                touched |= add(map, labels, &term.topology_key, weight);
            }
        };
        let pod = self.incoming;
        for w in &pod.preferred_affinity {
            let m = incoming_term_matches(&w.term, existing, self.namespaces);
            record(&w.term, m, i64::from(w.weight));
        }
        for w in &pod.preferred_anti_affinity {
            let m = incoming_term_matches(&w.term, existing, self.namespaces);
            record(&w.term, m, -i64::from(w.weight));
        }
        // An existing pod's hard affinity to the incoming pod is honoured as
        // a preference in the other direction (symmetry).
        if self.hard_weight > 0 {
            for t in &existing.required_affinity {
                record(t, t.matches(pod, Some(self.ns_labels)), self.hard_weight);
            }
        }
        for w in &existing.preferred_affinity {
            let m = w.term.matches(pod, Some(self.ns_labels));
            record(&w.term, m, i64::from(w.weight));
        }
        for w in &existing.preferred_anti_affinity {
            let m = w.term.matches(pod, Some(self.ns_labels));
            record(&w.term, m, -i64::from(w.weight));
        }
        touched
    }
}

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status {
        let has_constraints = has_preferred_terms(pod);
        if self.args.ignore_preferred_terms_of_existing_pods && !has_constraints {
            return Status::skip();
        }
        if !pod.parse_errors.is_empty() {
            return Status::error(format!(
                "failed to parse pod: {}",
                aggregate(&pod.parse_errors)
            ));
        }
        // Domains are cluster-wide, so every node's pods count, not only the
        // feasible ones. Without preferred terms of its own, only pods with
        // affinity terms can contribute.
        let nodes: Vec<&Arc<NodeInfo>> = if has_constraints {
            snapshot.nodes.iter().collect()
        } else {
            snapshot.nodes_with_affinity_pods().collect()
        };
        let ns_labels = incoming_namespace_labels(pod, &snapshot.namespaces);
        let scorer = Scorer {
            incoming: pod,
            ns_labels: &ns_labels,
            namespaces: &snapshot.namespaces,
            hard_weight: i64::from(self.args.hard_pod_affinity_weight),
        };
        let (touched, topology_score) = nodes
            .par_iter()
            .map(|node| {
                let mut map = ScoreMap::new();
                let mut touched = false;
                let pods: Box<dyn Iterator<Item = &Arc<PodInfo>>> = if has_constraints {
                    Box::new(node.pods.iter())
                } else {
                    Box::new(node.pods_with_affinity())
                };
                for existing in pods {
                    touched |= scorer.process_existing_pod(existing, node, &mut map);
                }
                (touched, map)
            })
            .reduce(
                || (false, ScoreMap::new()),
                |(t1, m1), (t2, m2)| (t1 || t2, merge(m1, m2)),
            );
        if !touched {
            return Status::skip();
        }
        state.write(
            PRE_SCORE_STATE_KEY,
            PreScoreState {
                topology_score: Arc::new(topology_score),
            },
        );
        Status::success()
    }
}

fn read_state(state: &CycleState) -> Result<&PreScoreState, Status> {
    state
        .read::<PreScoreState>(PRE_SCORE_STATE_KEY)
        .ok_or_else(|| {
            Status::error(format!(
                "failed to read {PRE_SCORE_STATE_KEY:?} from cycleState: not found"
            ))
        })
}

impl ScorePlugin for InterPodAffinity {
    /// Positive for affinity, negative for anti-affinity; normalized later.
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let s = read_state(state)?;
        Ok(s.topology_score
            .iter()
            .filter_map(|(key, values)| node.labels.get(key).and_then(|v| values.get(v)).copied())
            .sum())
    }

    /// Min-max scaling to 0..=100, since raw scores may be negative.
    fn normalize(&self, state: &CycleState, _pod: &PodInfo, scores: &mut [NodeScore]) -> Status {
        let s = match read_state(state) {
            Ok(s) => s,
            Err(status) => return status,
        };
        if s.topology_score.is_empty() {
            return Status::success();
        }
        let min = scores.iter().map(|s| s.score).min().unwrap_or(0);
        let max = scores.iter().map(|s| s.score).max().unwrap_or(0);
        let diff = max - min;
        for ns in scores.iter_mut() {
            // Same float arithmetic as upstream, so truncation agrees.
            ns.score = if diff > 0 {
                (MAX_NODE_SCORE as f64 * ((ns.score - min) as f64 / diff as f64)) as i64
            } else {
                0
            };
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{InterPodAffinityArgs, NAME};
    use super::*;
    use crate::framework::Code;
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;

    const S1: &[(&str, &str)] = &[("security", "S1")];
    const S2: &[(&str, &str)] = &[("security", "S2")];
    const CHINA: &[(&str, &str)] = &[("region", "China")];
    const INDIA: &[(&str, &str)] = &[("region", "India")];
    const AZ1: &[(&str, &str)] = &[("az", "az1")];
    const AZ2: &[(&str, &str)] = &[("az", "az2")];
    const CHINA_AZ1: &[(&str, &str)] = &[("region", "China"), ("az", "az1")];

    fn sec_in(v: &str, topology: &str) -> serde_json::Value {
        term_in("security", &[v], topology)
    }
    fn stay_with_s1_in_region(s: Spec) -> Spec {
        s.preferred(5, sec_in("S1", "region"))
    }
    fn stay_with_s2_in_region(s: Spec) -> Spec {
        s.preferred(6, sec_in("S2", "region"))
    }
    fn away_from_s1_in_az(s: Spec) -> Spec {
        s.preferred_anti(5, sec_in("S1", "az"))
    }
    fn away_from_s2_in_az(s: Spec) -> Spec {
        s.preferred_anti(5, sec_in("S2", "az"))
    }
    fn stay_s1_region_away_s2_az(s: Spec) -> Spec {
        s.preferred(8, sec_in("S1", "region"))
            .preferred_anti(5, sec_in("S2", "az"))
    }
    fn hard_affinity(s: Spec) -> Spec {
        s.affinity(term_in("security", &["S1", "value2"], "region"))
            .affinity(json!({"labelSelector": {"matchExpressions": [
                {"key": "security", "operator": "Exists"},
                {"key": "wrongkey", "operator": "DoesNotExist"},
            ]}, "topologyKey": "region"}))
    }
    fn team1_or_subteam2_team2(mut t: serde_json::Value) -> serde_json::Value {
        t["namespaces"] = json!(["subteam2.team2"]);
        with_ns_selector(t, json!({"matchLabels": {"team": "team1"}}))
    }
    fn affinity_ns_selector(s: Spec) -> Spec {
        s.preferred(5, team1_or_subteam2_team2(sec_in("S1", "region")))
    }
    fn anti_affinity_ns_selector(s: Spec) -> Spec {
        s.preferred_anti(5, team1_or_subteam2_team2(sec_in("S1", "region")))
    }

    fn nodes(list: &[(&str, &[(&str, &str)])]) -> Vec<Node> {
        list.iter().map(|(n, l)| node(n, l)).collect()
    }

    /// PreScore, Score on every node, NormalizeScore; `None` = PreScore skip.
    fn run(
        args: InterPodAffinityArgs,
        incoming: &PodInfo,
        pods: &[Arc<PodInfo>],
        nodes: Vec<Node>,
    ) -> Result<Vec<i64>, Status> {
        let snapshot = cluster(nodes, pods);
        let p = InterPodAffinity::with_args(args).unwrap();
        let mut state = CycleState::new();
        let status = p.pre_score(&mut state, incoming, &snapshot.nodes, &snapshot);
        if !status.is_success() {
            return Err(status);
        }
        let mut scores: Vec<NodeScore> = snapshot
            .nodes
            .iter()
            .map(|n| NodeScore {
                name: n.name.as_str(),
                score: p.score(&state, incoming, n).unwrap(),
            })
            .collect();
        assert!(p.normalize(&state, incoming, &mut scores).is_success());
        Ok(scores.into_iter().map(|s| s.score).collect())
    }

    fn default_args() -> InterPodAffinityArgs {
        InterPodAffinityArgs::default()
    }

    #[test]
    fn preferred_affinity() {
        let three_nodes = || nodes(&[("node1", CHINA), ("node2", INDIA), ("node3", AZ1)]);
        type Case = (
            &'static str,
            Arc<PodInfo>,
            Vec<Arc<PodInfo>>,
            Vec<Node>,
            Option<Vec<i64>>,
        );
        let cases: Vec<Case> = vec![
            (
                "no affinity anywhere: skip",
                pod("p", S1, Spec::default()),
                vec![],
                three_nodes(),
                None,
            ),
            (
                "affinity: matching topology key and pods scores highest",
                pod("p", S1, stay_with_s1_in_region(Spec::default())),
                vec![
                    pod("a", S1, Spec::on("node1")),
                    pod("b", S2, Spec::on("node2")),
                    pod("c", S1, Spec::on("node3")),
                ],
                three_nodes(),
                Some(vec![100, 0, 0]),
            ),
            (
                "nodes sharing the matching pod's domain score the same",
                pod("p", &[], stay_with_s1_in_region(Spec::default())),
                vec![pod("a", S1, Spec::on("node1"))],
                nodes(&[("node1", CHINA), ("node2", CHINA_AZ1), ("node3", INDIA)]),
                Some(vec![100, 100, 0]),
            ),
            (
                "region with more matching pods scores higher",
                pod("p", S1, stay_with_s2_in_region(Spec::default())),
                vec![
                    pod("a", S2, Spec::on("node1")),
                    pod("b", S2, Spec::on("node1")),
                    pod("c", S2, Spec::on("node2")),
                    pod("d", S2, Spec::on("node3")),
                    pod("e", S2, Spec::on("node4")),
                    pod("f", S2, Spec::on("node5")),
                ],
                nodes(&[
                    ("node1", CHINA),
                    ("node2", INDIA),
                    ("node3", CHINA),
                    ("node4", CHINA),
                    ("node5", INDIA),
                ]),
                Some(vec![100, 0, 100, 100, 0]),
            ),
            (
                "different operators, partial matches",
                pod(
                    "p",
                    S1,
                    Spec::default()
                        .preferred(
                            8,
                            json!({"labelSelector": {"matchExpressions": [
                                {"key": "security", "operator": "NotIn", "values": ["S1"]},
                                {"key": "security", "operator": "In", "values": ["S2"]},
                            ]}, "topologyKey": "region"}),
                        )
                        .preferred(
                            2,
                            json!({"labelSelector": {"matchExpressions": [
                                {"key": "security", "operator": "Exists"},
                                {"key": "wrongkey", "operator": "DoesNotExist"},
                            ]}, "topologyKey": "region"}),
                        ),
                ),
                vec![
                    pod("a", S1, Spec::on("node1")),
                    pod("b", S2, Spec::on("node2")),
                    pod("c", S1, Spec::on("node3")),
                ],
                three_nodes(),
                Some(vec![20, 100, 0]),
            ),
            (
                "affinity symmetry: existing pods' preferred terms",
                pod("p", S2, Spec::default()),
                vec![
                    pod("a", S1, stay_with_s1_in_region(Spec::on("node1"))),
                    pod("b", S2, stay_with_s2_in_region(Spec::on("node2"))),
                ],
                three_nodes(),
                Some(vec![0, 100, 0]),
            ),
            (
                "affinity symmetry with namespace selector",
                pod_ns("subteam1.team1", "p", S1, Spec::default()),
                vec![
                    pod("a", S1, affinity_ns_selector(Spec::on("node1"))),
                    pod("b", S2, stay_with_s2_in_region(Spec::on("node2"))),
                ],
                three_nodes(),
                Some(vec![100, 0, 0]),
            ),
            (
                "anti-affinity symmetry with namespace selector",
                pod_ns("subteam1.team1", "p", S1, Spec::default()),
                vec![
                    pod("a", S1, anti_affinity_ns_selector(Spec::on("node1"))),
                    pod("b", S2, stay_with_s2_in_region(Spec::on("node2"))),
                ],
                three_nodes(),
                Some(vec![0, 100, 100]),
            ),
            (
                "affinity symmetry: existing pods' required terms",
                pod("p", S1, Spec::default()),
                vec![
                    pod("a", S1, hard_affinity(Spec::on("node1"))),
                    pod("b", S2, hard_affinity(Spec::on("node2"))),
                ],
                three_nodes(),
                Some(vec![100, 100, 0]),
            ),
            (
                "anti-affinity: node with matching pods scores lowest",
                pod("p", S1, away_from_s1_in_az(Spec::default())),
                vec![
                    pod("a", S1, Spec::on("node1")),
                    pod("b", S2, Spec::on("node2")),
                ],
                nodes(&[("node1", AZ1), ("node2", CHINA)]),
                Some(vec![0, 100]),
            ),
            (
                "anti-affinity: matching pod outside the topology key does not count",
                pod("p", S1, away_from_s1_in_az(Spec::default())),
                vec![
                    pod("a", S1, Spec::on("node1")),
                    pod("b", S1, Spec::on("node2")),
                ],
                nodes(&[("node1", AZ1), ("node2", CHINA)]),
                Some(vec![0, 100]),
            ),
            (
                "anti-affinity: more matching pods, lower score",
                pod("p", S1, away_from_s1_in_az(Spec::default())),
                vec![
                    pod("a", S1, Spec::on("node1")),
                    pod("b", S1, Spec::on("node1")),
                    pod("c", S2, Spec::on("node2")),
                ],
                nodes(&[("node1", AZ1), ("node2", INDIA)]),
                Some(vec![0, 100]),
            ),
            (
                "anti-affinity symmetry",
                pod("p", S2, Spec::default()),
                vec![
                    pod("a", S1, away_from_s2_in_az(Spec::on("node1"))),
                    pod("b", S2, away_from_s1_in_az(Spec::on("node2"))),
                ],
                nodes(&[("node1", AZ1), ("node2", AZ2)]),
                Some(vec![0, 100]),
            ),
            (
                "affinity and anti-affinity",
                pod("p", S1, stay_s1_region_away_s2_az(Spec::default())),
                vec![
                    pod("a", S1, Spec::on("node1")),
                    pod("b", S1, Spec::on("node2")),
                ],
                nodes(&[("node1", CHINA), ("node2", AZ1)]),
                Some(vec![100, 0]),
            ),
            (
                "affinity and anti-affinity with same-labelled pods",
                pod("p", S1, stay_s1_region_away_s2_az(Spec::default())),
                vec![
                    pod("a", S1, Spec::on("node1")),
                    pod("b", S1, Spec::on("node1")),
                    pod("c", S1, Spec::on("node2")),
                    pod("d", S1, Spec::on("node3")),
                    pod("e", S1, Spec::on("node3")),
                    pod("f", S1, Spec::on("node4")),
                    pod("g", S1, Spec::on("node5")),
                ],
                nodes(&[
                    ("node1", CHINA_AZ1),
                    ("node2", INDIA),
                    ("node3", CHINA),
                    ("node4", CHINA),
                    ("node5", INDIA),
                ]),
                Some(vec![100, 0, 100, 100, 0]),
            ),
            (
                "affinity, anti-affinity and symmetry together",
                pod("p", S1, stay_s1_region_away_s2_az(Spec::default())),
                vec![
                    pod("a", S1, Spec::on("node1")),
                    pod("b", S2, Spec::on("node2")),
                    pod("c", &[], stay_s1_region_away_s2_az(Spec::on("node3"))),
                    pod("d", &[], away_from_s1_in_az(Spec::on("node4"))),
                ],
                nodes(&[
                    ("node1", CHINA),
                    ("node2", AZ1),
                    ("node3", INDIA),
                    ("node4", AZ2),
                ]),
                Some(vec![100, 0, 100, 0]),
            ),
            (
                "partial nodes of a topology with affinity pods",
                pod("p", S1, Spec::default()),
                vec![
                    pod("a", S1, Spec::on("node1")),
                    pod("b", &[], stay_s1_region_away_s2_az(Spec::on("node2"))),
                ],
                nodes(&[("node1", CHINA), ("node2", CHINA)]),
                Some(vec![0, 0]),
            ),
            (
                "affinity with pods matching namespaceSelector",
                pod_ns(
                    "subteam1.team1",
                    "p",
                    S1,
                    affinity_ns_selector(Spec::default()),
                ),
                vec![
                    pod_ns("subteam1.team1", "a", S1, Spec::on("node1")),
                    pod_ns("subteam1.team1", "b", S1, Spec::on("node1")),
                    pod_ns("subteam1.team2", "c", S1, Spec::on("node1")),
                    pod_ns("subteam2.team1", "d", S1, Spec::on("node2")),
                ],
                nodes(&[("node1", CHINA), ("node2", INDIA)]),
                Some(vec![100, 0]),
            ),
            (
                "affinity with pods matching namespaceSelector and namespaces",
                pod_ns(
                    "subteam1.team1",
                    "p",
                    S1,
                    affinity_ns_selector(Spec::default()),
                ),
                vec![
                    pod_ns("subteam1.team1", "a", S1, Spec::on("node1")),
                    pod_ns("subteam1.team1", "b", S1, Spec::on("node1")),
                    pod_ns("subteam2.team2", "c", S1, Spec::on("node1")),
                    pod_ns("subteam2.team1", "d", S1, Spec::on("node2")),
                ],
                nodes(&[("node1", CHINA), ("node2", INDIA)]),
                Some(vec![100, 0]),
            ),
            (
                "anti-affinity with pods matching namespaceSelector",
                pod_ns(
                    "subteam1.team1",
                    "p",
                    S1,
                    anti_affinity_ns_selector(Spec::default()),
                ),
                vec![
                    pod_ns("subteam1.team1", "a", S1, Spec::on("node1")),
                    pod_ns("subteam1.team1", "b", S1, Spec::on("node1")),
                    pod_ns("subteam1.team2", "c", S1, Spec::on("node1")),
                    pod_ns("subteam2.team1", "d", S1, Spec::on("node2")),
                ],
                nodes(&[("node1", CHINA), ("node2", INDIA)]),
                Some(vec![0, 100]),
            ),
            (
                "no nodes: skip",
                pod("p", S2, Spec::default()),
                vec![],
                vec![],
                None,
            ),
        ];
        for (name, incoming, pods, nodes, want) in cases {
            match (run(default_args(), &incoming, &pods, nodes), want) {
                (Ok(got), Some(want)) => assert_eq!(got, want, "{name}"),
                (Err(status), None) => assert_eq!(status.code, Code::Skip, "{name}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn ignore_preferred_terms_of_existing_pods() {
        let pods = || {
            vec![
                pod("a", S1, stay_s1_region_away_s2_az(Spec::on("node1"))),
                pod("b", S2, stay_with_s2_in_region(Spec::on("node2"))),
            ]
        };
        let n = || nodes(&[("node1", CHINA), ("node2", INDIA)]);
        let incoming = pod("p", S2, Spec::default());
        let ignore = InterPodAffinityArgs {
            ignore_preferred_terms_of_existing_pods: true,
            ..default_args()
        };
        let got = run(ignore.clone(), &incoming, &pods(), n());
        assert_eq!(got.unwrap_err().code, Code::Skip);
        assert_eq!(
            run(default_args(), &incoming, &pods(), n()).unwrap(),
            vec![0, 100]
        );

        // With preferred terms of its own, existing pods' terms still count.
        let incoming = pod(
            "p",
            S2,
            Spec::default().preferred(1, sec_in("none", "region")),
        );
        assert_eq!(run(ignore, &incoming, &pods(), n()).unwrap(), vec![0, 100]);
    }

    #[test]
    fn hard_pod_affinity_weight() {
        let hard = |s: Spec| {
            s.affinity({
                let mut t = term_in("service", &["S1"], "region");
                t["namespaces"] = json!(["default", "subteam2.team2"]);
                with_ns_selector(t, json!({"matchLabels": {"team": "team1"}}))
            })
        };
        let pods = || {
            vec![
                pod("a", &[], hard(Spec::on("node1"))),
                pod("b", &[], hard(Spec::on("node2"))),
            ]
        };
        let n = || nodes(&[("node1", CHINA), ("node2", INDIA), ("node3", AZ1)]);
        let svc = &[("service", "S1")][..];
        let weight = |w| InterPodAffinityArgs {
            hard_pod_affinity_weight: w,
            ..default_args()
        };
        type WeightCase = (&'static str, i32, Arc<PodInfo>, Option<Vec<i64>>);
        let cases: Vec<WeightCase> = vec![
            (
                "default weight",
                1,
                pod("p", svc, Spec::default()),
                Some(vec![100, 100, 0]),
            ),
            ("zero weight", 0, pod("p", svc, Spec::default()), None),
            (
                "no matching namespace",
                1,
                pod_ns("subteam1.team2", "p", svc, Spec::default()),
                None,
            ),
            (
                "matching namespaceSelector",
                1,
                pod_ns("subteam1.team1", "p", svc, Spec::default()),
                Some(vec![100, 100, 0]),
            ),
            (
                "matching namespaces",
                1,
                pod_ns("subteam2.team2", "p", svc, Spec::default()),
                Some(vec![100, 100, 0]),
            ),
        ];
        for (name, w, incoming, want) in cases {
            match (run(weight(w), &incoming, &pods(), n()), want) {
                (Ok(got), Some(want)) => assert_eq!(got, want, "{name}"),
                (Err(status), None) => assert_eq!(status.code, Code::Skip, "{name}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn raw_scores_and_min_max_normalization() {
        // Raw: node1 +8 (affinity), node2 -5 (anti-affinity), node3 0.
        let incoming = pod("p", S1, stay_s1_region_away_s2_az(Spec::default()));
        let pods = vec![
            pod("a", S1, Spec::on("node1")),
            pod("b", S2, Spec::on("node2")),
        ];
        let snapshot = cluster(
            nodes(&[("node1", CHINA), ("node2", AZ1), ("node3", INDIA)]),
            &pods,
        );
        let p = InterPodAffinity::with_args(default_args()).unwrap();
        let mut state = CycleState::new();
        assert!(
            p.pre_score(&mut state, &incoming, &snapshot.nodes, &snapshot)
                .is_success()
        );
        let raw: Vec<i64> = snapshot
            .nodes
            .iter()
            .map(|n| p.score(&state, &incoming, n).unwrap())
            .collect();
        assert_eq!(raw, vec![8, -5, 0]);
        let names: Vec<String> = (0..raw.len()).map(|i| format!("n{i}")).collect();
        let mut scores: Vec<NodeScore> = raw
            .iter()
            .zip(&names)
            .map(|(s, name)| NodeScore {
                name: name.as_str(),
                score: *s,
            })
            .collect();
        assert!(p.normalize(&state, &incoming, &mut scores).is_success());
        // (0 - -5) / 13 * 100 = 38.46… truncated.
        assert_eq!(
            scores.iter().map(|s| s.score).collect::<Vec<_>>(),
            vec![100, 0, 38]
        );
    }

    #[test]
    fn invalid_preferred_terms_fail_pre_score() {
        let incoming = pod(
            "p",
            &[],
            Spec::default().preferred(
                8,
                json!({"labelSelector": {"matchExpressions": [
                    {"key": "security", "operator": "In"},
                ]}, "topologyKey": "region"}),
            ),
        );
        let status = run(default_args(), &incoming, &[], nodes(&[("node1", CHINA)])).unwrap_err();
        assert_eq!(status.code, Code::Error);
        assert!(
            status.message().starts_with("failed to parse pod: "),
            "{status}"
        );
    }

    #[test]
    fn score_without_pre_score_state_is_an_error() {
        let p = InterPodAffinity::with_args(default_args()).unwrap();
        let snapshot = cluster(nodes(&[("node1", CHINA)]), &[]);
        let incoming = pod("p", S1, Spec::default());
        let err = p
            .score(&CycleState::new(), &incoming, &snapshot.nodes[0])
            .unwrap_err();
        assert_eq!(err.code, Code::Error);
        assert!(err.message().contains(PRE_SCORE_STATE_KEY), "{NAME}: {err}");
    }
}
