//! PreFilter / Filter: required affinity and anti-affinity, counted per
//! topology pair once per cycle so each node's check is a few map lookups.

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use crate::framework::labels::Labels;
use crate::framework::{
    AffinityTerm, CycleState, FilterPlugin, NodeInfo, PodInfo, PreFilterPlugin, PreFilterResult,
    Snapshot, Status,
};

use super::{
    InterPodAffinity, aggregate, incoming_namespace_labels, incoming_term_matches,
    incoming_terms_all_match,
};

pub const PRE_FILTER_STATE_KEY: &str = "PreFilterInterPodAffinity";

pub const ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
pub const ERR_REASON_AFFINITY_RULES_NOT_MATCH: &str = "node(s) didn't match pod affinity rules";
pub const ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH: &str =
    "node(s) didn't match pod anti-affinity rules";

/// Number of matching pods per (topologyKey → value). Entries that drop to
/// zero are removed, so emptiness means "no match anywhere" (the first-pod
/// rule depends on that).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct TopologyCounts(HashMap<String, HashMap<String, i64>>);

impl TopologyCounts {
    /// Adds `delta` to the pair (key, the node's value for key); nodes
    /// without the key are outside every domain of that key.
    fn add(&mut self, node_labels: &Labels, key: &str, delta: i64) {
        let Some(value) = node_labels.get(key) else {
            return;
        };
        let values = self.0.entry(key.to_string()).or_default();
        let count = values.entry(value.clone()).or_default();
        *count += delta;
        if *count == 0 {
            values.remove(value);
            if values.is_empty() {
                self.0.remove(key);
            }
        }
    }

    fn get(&self, key: &str, value: &str) -> i64 {
        self.0
            .get(key)
            .and_then(|values| values.get(value))
            .copied()
            .unwrap_or(0)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn merge(mut self, other: TopologyCounts) -> TopologyCounts {
        for (key, values) in other.0 {
            let mine = self.0.entry(key).or_default();
            for (value, count) in values {
                *mine.entry(value).or_default() += count;
            }
        }
        self
    }

    /// For every term of an anti-affinity list that selects a pod on a node
    /// with `node_labels`, counts that node's domain once.
    fn add_anti_affinity(
        &mut self,
        terms: &[AffinityTerm],
        matches: impl Fn(&AffinityTerm) -> bool,
        node_labels: &Labels,
        delta: i64,
    ) {
        for term in terms {
            if matches(term) {
                self.add(node_labels, &term.topology_key, delta);
            }
        }
    }

    /// Affinity terms count only when one pod satisfies all of them, since
    /// Filter needs a single pod matching every term in the domain.
    fn add_affinity(
        &mut self,
        terms: &[AffinityTerm],
        all_match: bool,
        node_labels: &Labels,
        delta: i64,
    ) {
        if all_match {
            for term in terms {
                self.add(node_labels, &term.topology_key, delta);
            }
        }
    }

    #[cfg(test)]
    pub(super) fn from_pairs(pairs: &[(&str, &str, i64)]) -> Self {
        let mut counts = Self::default();
        for (k, v, n) in pairs {
            let labels: Labels = [(k.to_string(), v.to_string())].into();
            counts.add(&labels, k, *n);
        }
        counts
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct PreFilterState {
    /// Domains holding existing pods whose required anti-affinity selects
    /// the incoming pod.
    pub(super) existing_anti_affinity: TopologyCounts,
    /// Domains holding pods that satisfy all the incoming pod's required
    /// affinity terms.
    pub(super) affinity: TopologyCounts,
    /// Domains holding pods selected by one of the incoming pod's required
    /// anti-affinity terms.
    pub(super) anti_affinity: TopologyCounts,
    /// The incoming pod's namespace labels, for existing pods' selectors.
    namespace_labels: Labels,
    /// Whether the incoming pod satisfies all its own affinity terms.
    matches_own_affinity: bool,
}

impl PreFilterState {
    fn update_with_pod(
        &mut self,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        namespaces: &HashMap<String, Labels>,
        delta: i64,
    ) {
        let ns_labels = &self.namespace_labels;
        self.existing_anti_affinity.add_anti_affinity(
            &other.required_anti_affinity,
            |t| t.matches(pod, Some(ns_labels)),
            &node.labels,
            delta,
        );
        self.affinity.add_affinity(
            &pod.required_affinity,
            incoming_terms_all_match(&pod.required_affinity, other, namespaces),
            &node.labels,
            delta,
        );
        self.anti_affinity.add_anti_affinity(
            &pod.required_anti_affinity,
            |t| incoming_term_matches(t, other, namespaces),
            &node.labels,
            delta,
        );
    }
}

impl InterPodAffinity {
    fn existing_anti_affinity_counts(
        pod: &PodInfo,
        ns_labels: &Labels,
        snapshot: &Snapshot,
    ) -> TopologyCounts {
        let nodes: Vec<&Arc<NodeInfo>> =
            snapshot.nodes_with_required_anti_affinity_pods().collect();
        nodes
            .par_iter()
            .map(|node| {
                let mut counts = TopologyCounts::default();
                for existing in node.pods_with_required_anti_affinity() {
                    counts.add_anti_affinity(
                        &existing.required_anti_affinity,
                        |t| t.matches(pod, Some(ns_labels)),
                        &node.labels,
                        1,
                    );
                }
                counts
            })
            .reduce(TopologyCounts::default, TopologyCounts::merge)
    }

    fn incoming_counts(pod: &PodInfo, snapshot: &Snapshot) -> (TopologyCounts, TopologyCounts) {
        if pod.required_affinity.is_empty() && pod.required_anti_affinity.is_empty() {
            return Default::default();
        }
        let namespaces = &snapshot.namespaces;
        snapshot
            .nodes
            .par_iter()
            .map(|node| {
                let mut affinity = TopologyCounts::default();
                let mut anti = TopologyCounts::default();
                for existing in &node.pods {
                    affinity.add_affinity(
                        &pod.required_affinity,
                        incoming_terms_all_match(&pod.required_affinity, existing, namespaces),
                        &node.labels,
                        1,
                    );
                    anti.add_anti_affinity(
                        &pod.required_anti_affinity,
                        |t| incoming_term_matches(t, existing, namespaces),
                        &node.labels,
                        1,
                    );
                }
                (affinity, anti)
            })
            .reduce(Default::default, |(a1, b1), (a2, b2)| {
                (a1.merge(a2), b1.merge(b2))
            })
    }

    fn update_state(
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot,
        delta: i64,
    ) -> Status {
        // PreFilter skipped (nothing to check), so Filter does not run and
        // there is nothing to keep current.
        if let Some(s) = state.read_mut::<PreFilterState>(PRE_FILTER_STATE_KEY) {
            s.update_with_pod(pod, other, node, &snapshot.namespaces, delta);
        }
        Status::success()
    }
}

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> (PreFilterResult, Status) {
        if !pod.parse_errors.is_empty() {
            return (
                PreFilterResult::default(),
                Status::unresolvable(format!("parsing pod: {}", aggregate(&pod.parse_errors))),
            );
        }
        let namespace_labels = incoming_namespace_labels(pod, &snapshot.namespaces);
        let existing_anti_affinity =
            Self::existing_anti_affinity_counts(pod, &namespace_labels, snapshot);
        if existing_anti_affinity.is_empty()
            && pod.required_affinity.is_empty()
            && pod.required_anti_affinity.is_empty()
        {
            return (PreFilterResult::default(), Status::skip());
        }
        let (affinity, anti_affinity) = Self::incoming_counts(pod, snapshot);
        let matches_own_affinity =
            incoming_terms_all_match(&pod.required_affinity, pod, &snapshot.namespaces);
        state.write(
            PRE_FILTER_STATE_KEY,
            PreFilterState {
                existing_anti_affinity,
                affinity,
                anti_affinity,
                namespace_labels,
                matches_own_affinity,
            },
        );
        (PreFilterResult::default(), Status::success())
    }

    fn has_extensions(&self) -> bool {
        true
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        to_add: &Arc<PodInfo>,
        node: &NodeInfo,
        snapshot: &Snapshot,
    ) -> Status {
        Self::update_state(state, pod, to_add, node, snapshot, 1)
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        to_remove: &Arc<PodInfo>,
        node: &NodeInfo,
        snapshot: &Snapshot,
    ) -> Status {
        Self::update_state(state, pod, to_remove, node, snapshot, -1)
    }
}

/// Every affinity term's domain on this node must hold a pod matching all
/// terms, unless no such pod exists anywhere and the pod matches its own
/// terms (the first pod of a self-affine group).
fn satisfies_pod_affinity(s: &PreFilterState, pod: &PodInfo, node: &NodeInfo) -> bool {
    let mut pods_exist = true;
    for term in &pod.required_affinity {
        let Some(value) = node.labels.get(&term.topology_key) else {
            return false;
        };
        if s.affinity.get(&term.topology_key, value) <= 0 {
            pods_exist = false;
        }
    }
    pods_exist || (s.affinity.is_empty() && s.matches_own_affinity)
}

fn satisfies_pod_anti_affinity(s: &PreFilterState, pod: &PodInfo, node: &NodeInfo) -> bool {
    if s.anti_affinity.is_empty() {
        return true;
    }
    !pod.required_anti_affinity.iter().any(|term| {
        node.labels
            .get(&term.topology_key)
            .is_some_and(|value| s.anti_affinity.get(&term.topology_key, value) > 0)
    })
}

fn satisfies_existing_pods_anti_affinity(s: &PreFilterState, node: &NodeInfo) -> bool {
    if s.existing_anti_affinity.is_empty() {
        return true;
    }
    !node
        .labels
        .iter()
        .any(|(key, value)| s.existing_anti_affinity.get(key, value) > 0)
}

impl FilterPlugin for InterPodAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<PreFilterState>(PRE_FILTER_STATE_KEY) else {
            return Status::error(format!(
                "error reading {PRE_FILTER_STATE_KEY:?} from cycleState: not found"
            ));
        };
        // Affinity cannot be fixed by evicting pods; anti-affinity can.
        if !satisfies_pod_affinity(s, pod, node) {
            return Status::unresolvable(ERR_REASON_AFFINITY_RULES_NOT_MATCH);
        }
        if !satisfies_pod_anti_affinity(s, pod, node) {
            return Status::unschedulable(ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH);
        }
        if !satisfies_existing_pods_anti_affinity(s, node) {
            return Status::unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH);
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::framework::Code;
    use k8s_openapi::api::core::v1::Node;
    use serde_json::{Value, json};

    fn plugin() -> InterPodAffinity {
        InterPodAffinity::with_args(Default::default()).unwrap()
    }

    enum Want {
        Ok,
        Skip,
        PreFilter(Code, &'static str),
        Affinity,
        Anti,
        Existing,
    }

    fn check_status(name: &str, node: &str, got: &Status, want: &Want) {
        let (code, reasons): (Code, Vec<String>) = match want {
            Want::Ok => (Code::Success, vec![]),
            Want::Skip => (Code::Skip, vec![]),
            Want::PreFilter(code, msg) => (*code, vec![msg.to_string()]),
            Want::Affinity => (
                Code::UnschedulableAndUnresolvable,
                vec![ERR_REASON_AFFINITY_RULES_NOT_MATCH.into()],
            ),
            Want::Anti => (
                Code::Unschedulable,
                vec![ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH.into()],
            ),
            Want::Existing => (
                Code::Unschedulable,
                vec![ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH.into()],
            ),
        };
        assert_eq!(
            (got.code, &got.reasons),
            (code, &reasons),
            "{name} (node {node})"
        );
    }

    /// Runs PreFilter then Filter on each node; `want` is either a single
    /// PreFilter outcome (Skip / failure) or one Filter outcome per node.
    fn run(name: &str, pod: &PodInfo, pods: &[Arc<PodInfo>], nodes: Vec<Node>, want: &[Want]) {
        let snapshot = cluster(nodes, pods);
        let p = plugin();
        let mut state = CycleState::new();
        let (_, status) = p.pre_filter(&mut state, pod, &snapshot);
        if !status.is_success() {
            assert_eq!(want.len(), 1, "{name}: PreFilter returned {status}");
            check_status(name, "-", &status, &want[0]);
            return;
        }
        assert_eq!(want.len(), snapshot.nodes.len(), "{name}");
        for (node, want) in snapshot.nodes.iter().zip(want) {
            let got = p.filter(&state, pod, node);
            check_status(name, &node.name, &got, want);
        }
    }

    type Pods = Vec<Arc<PodInfo>>;
    type SingleNodeCase = (&'static str, Arc<PodInfo>, Pods, Want);
    type MultiNodeCase = (&'static str, Arc<PodInfo>, Pods, Vec<Node>, Vec<Want>);
    type CountsCase = (&'static str, Pods, Spec, TopologyCounts, TopologyCounts);

    const S_SCAN: &[(&str, &str)] = &[("service", "securityscan")];
    const S1: &[(&str, &str)] = &[("security", "S1")];

    fn node1() -> Node {
        node("node1", &[("region", "r1"), ("zone", "z11")])
    }

    fn existing() -> Arc<PodInfo> {
        pod("existing", S_SCAN, Spec::on("node1"))
    }

    #[test]
    fn required_affinity_single_node() {
        let in_scan = || term_in("service", &["securityscan", "value2"], "region");
        let cases: Vec<SingleNodeCase> = vec![
            (
                "no required terms and no existing anti-affinity: skip",
                pod("p", &[], Spec::default()),
                vec![],
                Want::Skip,
            ),
            (
                "affinity In matches the existing pod",
                pod("p", S1, Spec::default().affinity(in_scan())),
                vec![existing()],
                Want::Ok,
            ),
            (
                "affinity NotIn matches the existing pod",
                pod(
                    "p",
                    S1,
                    Spec::default().affinity(term(
                        "service",
                        "NotIn",
                        &["securityscan3", "value3"],
                        "region",
                    )),
                ),
                vec![existing()],
                Want::Ok,
            ),
            (
                "affinity in another namespace does not match",
                pod(
                    "p",
                    S1,
                    Spec::default().affinity({
                        let mut t = in_scan();
                        t["namespaces"] = json!(["DiffNameSpace"]);
                        t
                    }),
                ),
                vec![pod_ns("ns", "e", S_SCAN, Spec::on("node1"))],
                Want::Affinity,
            ),
            (
                "affinity selector not matching the existing pod",
                pod(
                    "p",
                    S_SCAN,
                    Spec::default().affinity(term_in("service", &["antivirusscan"], "")),
                ),
                vec![existing()],
                Want::Affinity,
            ),
            (
                "several affinity terms, all matched by the existing pod",
                pod(
                    "p",
                    S1,
                    Spec::default()
                        .affinity(term_exists("service", "region"))
                        .affinity(term("service", "NotIn", &["WrongValue"], "region")),
                ),
                vec![existing()],
                Want::Ok,
            ),
            (
                "several affinity terms, one not matched",
                pod(
                    "p",
                    S1,
                    Spec::default()
                        .affinity(term_exists("service", "region"))
                        .affinity(term_in("service", &["securityscan2"], "region")),
                ),
                vec![existing()],
                Want::Affinity,
            ),
            (
                "affinity satisfied, anti-affinity on a missing topology key satisfied",
                pod(
                    "p",
                    S1,
                    Spec::default().affinity(in_scan()).anti(term_in(
                        "service",
                        &["antivirusscan"],
                        "node",
                    )),
                ),
                vec![existing()],
                Want::Ok,
            ),
            (
                "affinity satisfied but anti-affinity violated",
                pod(
                    "p",
                    S1,
                    Spec::default().affinity(in_scan()).anti(term_in(
                        "service",
                        &["securityscan"],
                        "zone",
                    )),
                ),
                vec![existing()],
                Want::Anti,
            ),
            (
                "existing pod's anti-affinity selects the incoming pod (symmetry)",
                pod(
                    "p",
                    S_SCAN,
                    Spec::default().affinity(in_scan()).anti(term_in(
                        "service",
                        &["antivirusscan"],
                        "node",
                    )),
                ),
                vec![pod(
                    "e",
                    S_SCAN,
                    Spec::on("node1").anti(term_in("service", &["securityscan"], "zone")),
                )],
                Want::Existing,
            ),
            (
                "pod without constraints is still checked against existing anti-affinity",
                pod("p", S_SCAN, Spec::default()),
                vec![pod(
                    "e",
                    S_SCAN,
                    Spec::on("node1").anti(term_in("service", &["securityscan"], "zone")),
                )],
                Want::Existing,
            ),
            (
                "existing anti-affinity not selecting the incoming pod: skip",
                pod("p", S_SCAN, Spec::default()),
                vec![pod(
                    "e",
                    S_SCAN,
                    Spec::on("node1").anti(term("service", "NotIn", &["securityscan"], "zone")),
                )],
                Want::Skip,
            ),
            (
                "pod not matching its own term; the matching pod is on a node outside the snapshot",
                pod(
                    "p",
                    S_SCAN,
                    Spec::default().affinity(term(
                        "service",
                        "NotIn",
                        &["securityscan", "value2"],
                        "region",
                    )),
                ),
                vec![pod("e", S_SCAN, Spec::on("node2"))],
                Want::Affinity,
            ),
            (
                "symmetry a1: incoming anti-affinity partially matches the existing pod",
                pod(
                    "p",
                    S_SCAN,
                    Spec::default()
                        .anti(term_exists("service", "zone"))
                        .anti(term_exists("security", "zone")),
                ),
                vec![pod(
                    "e",
                    S1,
                    Spec::on("node1").anti(term_exists("security", "zone")),
                )],
                Want::Anti,
            ),
            (
                "symmetry a2: existing anti-affinity partially matches the incoming pod",
                pod(
                    "p",
                    S1,
                    Spec::default().anti(term_exists("security", "zone")),
                ),
                vec![pod(
                    "e",
                    S_SCAN,
                    Spec::on("node1")
                        .anti(term_exists("service", "zone"))
                        .anti(term_exists("security", "zone")),
                )],
                Want::Existing,
            ),
            (
                "affinity namespaceSelector selects the existing pod's namespace",
                pod(
                    "p",
                    S1,
                    Spec::default().affinity(with_ns_selector(
                        in_scan(),
                        json!({"matchLabels": {"team": "team1"}}),
                    )),
                ),
                vec![pod_ns("subteam1.team1", "e", S_SCAN, Spec::on("node1"))],
                Want::Ok,
            ),
            (
                "affinity namespaceSelector does not select the existing pod's namespace",
                pod(
                    "p",
                    S1,
                    Spec::default().affinity(with_ns_selector(
                        in_scan(),
                        json!({"matchLabels": {"team": "team1"}}),
                    )),
                ),
                vec![pod_ns("subteam1.team2", "e", S_SCAN, Spec::on("node1"))],
                Want::Affinity,
            ),
            (
                "anti-affinity namespaceSelector selects the existing pod's namespace",
                pod_ns(
                    "subteam1.team1",
                    "p",
                    S1,
                    Spec::default().anti(with_ns_selector(
                        term_in("service", &["securityscan"], "zone"),
                        json!({"matchLabels": {"team": "team1"}}),
                    )),
                ),
                vec![pod_ns("subteam2.team1", "e", S_SCAN, Spec::on("node1"))],
                Want::Anti,
            ),
            (
                "anti-affinity empty namespaceSelector selects every namespace",
                pod_ns(
                    "subteam1.team1",
                    "p",
                    S1,
                    Spec::default().anti(with_ns_selector(
                        term_in("service", &["securityscan"], "zone"),
                        json!({}),
                    )),
                ),
                vec![pod_ns("unknown-ns", "e", S_SCAN, Spec::on("node1"))],
                Want::Anti,
            ),
            (
                "anti-affinity namespaceSelector not selecting the existing pod's namespace",
                pod_ns(
                    "subteam1.team1",
                    "p",
                    S1,
                    Spec::default().anti(with_ns_selector(
                        term_in("service", &["securityscan"], "zone"),
                        json!({"matchLabels": {"team": "team1"}}),
                    )),
                ),
                vec![pod_ns("subteam1.team2", "e", S_SCAN, Spec::on("node1"))],
                Want::Ok,
            ),
            (
                "existing anti-affinity namespaceSelector selects the incoming pod's namespace",
                pod_ns("subteam1.team1", "p", S_SCAN, Spec::default()),
                vec![pod_ns(
                    "other",
                    "e",
                    S1,
                    Spec::on("node1").anti(with_ns_selector(
                        term_in("service", &["securityscan"], "zone"),
                        json!({"matchLabels": {"team": "team1"}}),
                    )),
                )],
                Want::Existing,
            ),
        ];
        for (name, incoming, pods, want) in cases {
            run(name, &incoming, &pods, vec![node1()], &[want]);
        }
    }

    #[test]
    fn invalid_terms_fail_pre_filter_as_unresolvable() {
        let bad = json!({
            "labelSelector": {"matchExpressions": [{"key": "service", "operator": "Bogus", "values": ["x"]}]},
            "topologyKey": "region",
        });
        let want = Want::PreFilter(
            Code::UnschedulableAndUnresolvable,
            "parsing pod: unknown operator \"Bogus\" on \"service\"",
        );
        let incoming = pod("p", S_SCAN, Spec::default().affinity(bad.clone()));
        run("invalid affinity", &incoming, &[], vec![node1()], &[want]);
        // Upstream parses the preferred terms in the same step.
        let incoming = pod("p", S_SCAN, Spec::default().preferred_anti(5, bad));
        let want = Want::PreFilter(
            Code::UnschedulableAndUnresolvable,
            "parsing pod: unknown operator \"Bogus\" on \"service\"",
        );
        run("invalid preferred", &incoming, &[], vec![node1()], &[want]);
    }

    #[test]
    fn filter_without_pre_filter_state_is_an_error() {
        let p = plugin();
        let info = cluster(vec![node1()], &[]);
        let got = p.filter(&CycleState::new(), &existing(), &info.nodes[0]);
        assert_eq!(got.code, Code::Error);
        assert_eq!(
            got.message(),
            "error reading \"PreFilterInterPodAffinity\" from cycleState: not found"
        );
    }

    #[test]
    fn required_affinity_multiple_nodes() {
        let china = &[("region", "China")][..];
        let china_az1 = &[("region", "China"), ("az", "az1")][..];
        let india = &[("region", "India")][..];
        let three = || {
            vec![
                node("node1", china),
                node("node2", china_az1),
                node("node3", india),
            ]
        };
        let ab = |a: &'static str, ah: &'static str, b: &'static str, bh: &'static str| {
            let ab: Vec<(&str, &str)> = vec![("region", "r1"), ("zone", a), ("hostname", ah)];
            let bb: Vec<(&str, &str)> = vec![("region", "r1"), ("zone", b), ("hostname", bh)];
            vec![node("nodeA", &ab), node("nodeB", &bb)]
        };
        let foo_bar = &[("foo", "bar")][..];
        let cases: Vec<MultiNodeCase> = vec![
            (
                "nodes sharing the matching pod's region fit, others do not",
                pod(
                    "p",
                    &[],
                    Spec::default().affinity(term_in("foo", &["bar"], "region")),
                ),
                vec![pod("p1", foo_bar, Spec::on("node1"))],
                three(),
                vec![Want::Ok, Want::Ok, Want::Affinity],
            ),
            (
                "first pod of a self-affine group may go to any node with the topology keys",
                pod(
                    "p",
                    &[("foo", "bar"), ("service", "securityscan")],
                    Spec::default()
                        .affinity(term_in("foo", &["bar"], "zone"))
                        .affinity(term_in("service", &["securityscan"], "zone")),
                ),
                vec![pod("p1", foo_bar, Spec::on("nodeA"))],
                ab("az1", "h1", "az2", "h2"),
                vec![Want::Ok, Want::Ok],
            ),
            (
                "first pod of a group still needs the topology keys on the node",
                pod(
                    "p",
                    &[("foo", "bar"), ("service", "securityscan")],
                    Spec::default()
                        .affinity(term_in("foo", &["bar"], "zone"))
                        .affinity(term_in("service", &["securityscan"], "zone")),
                ),
                vec![pod("p1", foo_bar, Spec::on("nodeA"))],
                vec![
                    node("nodeA", &[("zoneLabel", "az1"), ("hostname", "h1")]),
                    node("nodeB", &[("zoneLabel", "az2"), ("hostname", "h2")]),
                ],
                vec![Want::Affinity, Want::Affinity],
            ),
            (
                "anti-affinity rejects every node of the matching pod's region",
                pod(
                    "p",
                    &[],
                    Spec::default().anti(term_in("foo", &["abc"], "region")),
                ),
                vec![pod("e", &[("foo", "abc")], Spec::on("nodeA"))],
                ab("z1", "nodeA", "z2", "nodeB"),
                vec![Want::Anti, Want::Anti],
            ),
            (
                "anti-affinity rejects when any term matches",
                pod(
                    "p",
                    &[],
                    Spec::default()
                        .anti(term_in("foo", &["abc"], "region"))
                        .anti(term_in("service", &["securityscan"], "zone")),
                ),
                vec![pod(
                    "e",
                    &[("foo", "abc"), ("service", "securityscan")],
                    Spec::on("nodeA"),
                )],
                ab("z1", "nodeA", "z2", "nodeB"),
                vec![Want::Anti, Want::Anti],
            ),
            (
                "anti-affinity spares the other region",
                pod(
                    "p",
                    &[],
                    Spec::default().anti(term_in("foo", &["abc"], "region")),
                ),
                vec![pod("e", &[("foo", "abc")], Spec::on("node1"))],
                three(),
                vec![Want::Anti, Want::Anti, Want::Ok],
            ),
            (
                "anti-affinity only within the namespace; other namespace's symmetric term ignored",
                pod_ns(
                    "NS1",
                    "p",
                    &[("foo", "123")],
                    Spec::default().anti(term_in("foo", &["bar"], "region")),
                ),
                vec![
                    pod_ns("NS1", "a", foo_bar, Spec::on("node1")),
                    pod_ns(
                        "NS2",
                        "c",
                        &[],
                        Spec::on("node3").anti(term_in("foo", &["123"], "region")),
                    ),
                ],
                three(),
                vec![Want::Anti, Want::Anti, Want::Ok],
            ),
            (
                "existing anti-affinity on a key no node has: skip",
                pod("p", &[("foo", "")], Spec::default()),
                vec![pod(
                    "e",
                    &[],
                    Spec::on("nodeA").anti(term_exists("foo", "invalid-node-label")),
                )],
                ab("z1", "nodeA", "z1", "nodeB"),
                vec![Want::Skip],
            ),
            (
                "incoming anti-affinity on a key no node has",
                pod(
                    "p",
                    &[],
                    Spec::on("nodeA").anti(term_exists("foo", "invalid-node-label")),
                ),
                vec![pod("e", &[("foo", "")], Spec::on("nodeA"))],
                ab("z1", "nodeA", "z1", "nodeB"),
                vec![Want::Ok, Want::Ok],
            ),
            (
                "incoming pod violates each existing pod's term on all nodes",
                pod("p", &[("foo", ""), ("bar", "")], Spec::default()),
                vec![
                    pod(
                        "e1",
                        &[],
                        Spec::on("nodeA").anti(term_exists("foo", "zone")),
                    ),
                    pod(
                        "e2",
                        &[],
                        Spec::on("nodeA").anti(term_exists("bar", "region")),
                    ),
                ],
                ab("z1", "nodeA", "z2", "nodeB"),
                vec![Want::Existing, Want::Existing],
            ),
            (
                "incoming anti-affinity violated by some term on every node",
                pod(
                    "p",
                    &[],
                    Spec::default()
                        .anti(term_exists("foo", "zone"))
                        .anti(term_exists("bar", "region")),
                ),
                vec![
                    pod("a", &[("foo", "")], Spec::on("nodeA")),
                    pod("b", &[("bar", "")], Spec::on("nodeB")),
                ],
                ab("z1", "nodeA", "z2", "nodeB"),
                vec![Want::Anti, Want::Anti],
            ),
            (
                "existing pod's term with a missing key does not count",
                pod("p", &[("foo", ""), ("bar", "")], Spec::default()),
                vec![pod(
                    "e",
                    &[],
                    Spec::on("nodeA")
                        .anti(term_exists("foo", "invalid-node-label"))
                        .anti(term_exists("bar", "zone")),
                )],
                ab("z1", "nodeA", "z2", "nodeB"),
                vec![Want::Existing, Want::Ok],
            ),
            (
                "incoming pod's term with a missing key does not count",
                pod(
                    "p",
                    &[],
                    Spec::default()
                        .anti(term_exists("foo", "invalid-node-label"))
                        .anti(term_exists("bar", "zone")),
                ),
                vec![pod("a", &[("foo", ""), ("bar", "")], Spec::on("nodeA"))],
                ab("z1", "nodeA", "z2", "nodeB"),
                vec![Want::Anti, Want::Ok],
            ),
            (
                "existing pods on A and B each select the incoming pod: only C fits",
                pod("p", &[("foo", ""), ("bar", "")], Spec::default()),
                vec![
                    pod(
                        "a",
                        &[],
                        Spec::on("nodeA")
                            .anti(term_exists("foo", "zone"))
                            .anti(term_exists("labelA", "zone")),
                    ),
                    pod(
                        "b",
                        &[],
                        Spec::on("nodeB")
                            .anti(term_exists("bar", "zone"))
                            .anti(term_exists("labelB", "zone")),
                    ),
                ],
                {
                    let mut n = ab("z1", "nodeA", "z2", "nodeB");
                    n.push(node(
                        "nodeC",
                        &[("region", "r1"), ("zone", "z3"), ("hostname", "nodeC")],
                    ));
                    n
                },
                vec![Want::Existing, Want::Existing, Want::Ok],
            ),
            (
                "affinity: one pod matching all terms satisfies every term's domain",
                pod(
                    "p",
                    &[],
                    Spec::default()
                        .affinity(term_exists("foo", "region"))
                        .affinity(term_exists("bar", "zone")),
                ),
                vec![pod("pod1", &[("foo", ""), ("bar", "")], Spec::on("nodeA"))],
                ab("z1", "nodeA", "z1", "nodeB"),
                vec![Want::Ok, Want::Ok],
            ),
            (
                "affinity: terms matched by different pods do not count",
                pod(
                    "p",
                    &[],
                    Spec::default()
                        .affinity(term_exists("foo", "region"))
                        .affinity(term_exists("bar", "zone")),
                ),
                vec![
                    pod("pod1", &[("foo", "")], Spec::on("nodeA")),
                    pod("pod2", &[("bar", "")], Spec::on("nodeB")),
                ],
                ab("z1", "nodeA", "z2", "nodeB"),
                vec![Want::Affinity, Want::Affinity],
            ),
        ];
        for (name, incoming, pods, nodes, want) in cases {
            run(name, &incoming, &pods, nodes, &want);
        }
    }

    #[test]
    fn self_affinity_exception_needs_no_matching_pod_anywhere() {
        // A matching pod exists in zone z1 only, so the self-affinity escape
        // no longer applies to z2 even though the pod matches itself.
        let incoming = pod(
            "p",
            &[("app", "web")],
            Spec::default().affinity(term_in("app", &["web"], "zone")),
        );
        let pods = vec![pod("w", &[("app", "web")], Spec::on("a"))];
        let nodes = vec![node("a", &[("zone", "z1")]), node("b", &[("zone", "z2")])];
        run(
            "escape",
            &incoming,
            &pods,
            nodes,
            &[Want::Ok, Want::Affinity],
        );

        // The pod does not match its own term: nothing exempts it.
        let incoming = pod(
            "p",
            &[("app", "db")],
            Spec::default().affinity(term_in("app", &["web"], "zone")),
        );
        let nodes = vec![node("a", &[("zone", "z1")])];
        run("no escape", &incoming, &[], nodes, &[Want::Affinity]);
    }

    /// Upstream's TestPreFilterStateAddRemovePod: PreFilter over the existing
    /// pods plus AddPod equals PreFilter over all pods, and RemovePod undoes it.
    #[test]
    fn add_remove_pod_keep_counts_current() {
        let n = || {
            vec![
                node("nodeA", &[("region", "r1"), ("zone", "z11")]),
                node("nodeB", &[("region", "r1"), ("zone", "z12")]),
                node("nodeC", &[("region", "r2"), ("zone", "z21")]),
            ]
        };
        let foo_bar_region = || term_in("foo", &["bar"], "region");
        let complex = || -> Vec<Value> {
            vec![
                term_in("foo", &["bar", "buzz"], "region"),
                term("service", "NotIn", &["bar", "security", "test"], "zone"),
            ]
        };
        let with_anti = |s: Spec, terms: Vec<Value>| terms.into_iter().fold(s, Spec::anti);
        let with_aff = |s: Spec, terms: Vec<Value>| terms.into_iter().fold(s, Spec::affinity);
        let sel = &[("foo", "bar")][..];

        type Case = (
            &'static str,
            Arc<PodInfo>,
            Vec<Arc<PodInfo>>,
            Arc<PodInfo>,
            TopologyCounts,
            TopologyCounts,
        );
        let cases: Vec<Case> = vec![
            (
                "anti-affinity terms",
                pod("pending", sel, Spec::default().anti(foo_bar_region())),
                vec![
                    pod("p1", sel, Spec::on("nodeA")),
                    pod("p2", &[], Spec::on("nodeC").anti(foo_bar_region())),
                ],
                pod("added", sel, Spec::on("nodeB").anti(foo_bar_region())),
                TopologyCounts::from_pairs(&[("region", "r1", 2)]),
                TopologyCounts::default(),
            ),
            (
                "complex anti-affinity terms",
                pod("pending", sel, with_anti(Spec::default(), complex())),
                vec![
                    pod("p1", sel, Spec::on("nodeA")),
                    pod("p2", &[], Spec::on("nodeC").anti(foo_bar_region())),
                ],
                pod("added", sel, with_anti(Spec::on("nodeA"), complex())),
                TopologyCounts::from_pairs(&[
                    ("region", "r1", 2),
                    ("zone", "z11", 2),
                    ("zone", "z21", 1),
                ]),
                TopologyCounts::default(),
            ),
            (
                "affinity and anti-affinity",
                pod("pending", sel, with_aff(Spec::default(), complex())),
                vec![
                    pod("p1", sel, Spec::on("nodeA")),
                    pod(
                        "p2",
                        &[],
                        with_aff(Spec::on("nodeC").anti(foo_bar_region()), complex()),
                    ),
                ],
                pod("added", sel, with_anti(Spec::on("nodeA"), complex())),
                TopologyCounts::default(),
                TopologyCounts::from_pairs(&[("region", "r1", 2), ("zone", "z11", 2)]),
            ),
        ];

        let p = plugin();
        for (name, pending, existing, added, want_anti, want_aff) in cases {
            let state_of = |pods: &[Arc<PodInfo>]| {
                let snapshot = cluster(n(), pods);
                let mut state = CycleState::new();
                let (_, status) = p.pre_filter(&mut state, &pending, &snapshot);
                assert!(status.is_success(), "{name}: {status}");
                (state, snapshot)
            };
            let mut all = existing.clone();
            all.push(added.clone());
            let (all_state, _) = state_of(&all);
            let all_state = all_state
                .read::<PreFilterState>(PRE_FILTER_STATE_KEY)
                .unwrap()
                .clone();

            let (mut state, snapshot) = state_of(&existing);
            let original = state
                .read::<PreFilterState>(PRE_FILTER_STATE_KEY)
                .unwrap()
                .clone();
            let node = snapshot.get(added.node_name().unwrap()).unwrap().clone();

            let st = p.add_pod(&mut state, &pending, &added, &node, &snapshot);
            assert!(st.is_success(), "{name}");
            let got = state.read::<PreFilterState>(PRE_FILTER_STATE_KEY).unwrap();
            assert_eq!(got.anti_affinity, want_anti, "{name}: anti-affinity");
            assert_eq!(got.affinity, want_aff, "{name}: affinity");
            assert_eq!(got, &all_state, "{name}: same as PreFilter over all pods");

            let st = p.remove_pod(&mut state, &pending, &added, &node, &snapshot);
            assert!(st.is_success(), "{name}");
            let got = state.read::<PreFilterState>(PRE_FILTER_STATE_KEY).unwrap();
            assert_eq!(got, &original, "{name}: remove undoes add");
        }
    }

    #[test]
    fn added_pod_with_anti_affinity_blocks_the_incoming_pod() {
        // A nominated pod's anti-affinity must keep the incoming pod out of
        // its domain even though it is not in the snapshot yet.
        let incoming = pod(
            "p",
            &[("app", "web")],
            Spec::default().anti(term_exists("x", "zone")),
        );
        let snapshot = cluster(
            vec![node("a", &[("zone", "z1")]), node("b", &[("zone", "z2")])],
            &[],
        );
        let p = plugin();
        let mut state = CycleState::new();
        assert!(
            p.pre_filter(&mut state, &incoming, &snapshot)
                .1
                .is_success()
        );
        let nominated = pod(
            "n",
            &[],
            Spec::on("a").anti(term_in("app", &["web"], "zone")),
        );
        let a = snapshot.nodes[0].clone();
        assert!(
            p.add_pod(&mut state, &incoming, &nominated, &a, &snapshot)
                .is_success()
        );
        check_status(
            "nominated",
            "a",
            &p.filter(&state, &incoming, &a),
            &Want::Existing,
        );
        check_status(
            "nominated",
            "b",
            &p.filter(&state, &incoming, &snapshot.nodes[1]),
            &Want::Ok,
        );
    }

    #[test]
    fn incoming_counts_match_upstream() {
        // Upstream's TestGetTPMapMatchingIncomingAffinityAntiAffinity.
        let n = || vec![node("nodeA", &[("hostname", "nodeA")])];
        let normal = |labels: &'static [(&'static str, &'static str)]| {
            pod("normal", labels, Spec::on("nodeA"))
        };
        let a = &[("aaa", "")][..];
        let b = &[("bbb", "")][..];
        let ab = &[("aaa", ""), ("bbb", "")][..];
        let h = |k| term_exists(k, "hostname");
        let cases: Vec<CountsCase> = vec![
            (
                "no pod violates",
                vec![normal(b)],
                Spec::default().affinity(h("aaa")).anti(h("aaa")),
                TopologyCounts::default(),
                TopologyCounts::default(),
            ),
            (
                "single term",
                vec![normal(a)],
                Spec::default().affinity(h("aaa")).anti(h("aaa")),
                TopologyCounts::from_pairs(&[("hostname", "nodeA", 1)]),
                TopologyCounts::from_pairs(&[("hostname", "nodeA", 1)]),
            ),
            (
                "multiple terms count once per term",
                vec![normal(ab)],
                Spec::default()
                    .affinity(h("aaa"))
                    .affinity(h("bbb"))
                    .anti(h("aaa")),
                TopologyCounts::from_pairs(&[("hostname", "nodeA", 2)]),
                TopologyCounts::from_pairs(&[("hostname", "nodeA", 1)]),
            ),
            (
                "affinity needs all terms; anti-affinity any",
                vec![normal(a)],
                Spec::default()
                    .affinity(h("aaa"))
                    .affinity(h("bbb"))
                    .anti(h("aaa"))
                    .anti(h("bbb")),
                TopologyCounts::default(),
                TopologyCounts::from_pairs(&[("hostname", "nodeA", 1)]),
            ),
            (
                "partial anti-affinity match",
                vec![normal(ab)],
                Spec::default()
                    .affinity(h("aaa"))
                    .affinity(h("ccc"))
                    .anti(h("aaa"))
                    .anti(h("ccc")),
                TopologyCounts::default(),
                TopologyCounts::from_pairs(&[("hostname", "nodeA", 1)]),
            ),
        ];
        for (name, pods, spec, want_aff, want_anti) in cases {
            let snapshot = cluster(n(), &pods);
            let incoming = pod("incoming", &[], spec);
            let (aff, anti) = InterPodAffinity::incoming_counts(&incoming, &snapshot);
            assert_eq!(aff, want_aff, "{name}: affinity");
            assert_eq!(anti, want_anti, "{name}: anti-affinity");
        }
    }
}
