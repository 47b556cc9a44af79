//! interpodaffinity and podtopologyspread plugin_test.go hint tables.

use super::super::pods::*;
use super::*;

/// A pod spec builder after upstream's `st.MakePod()`.
#[derive(Clone, Default)]
struct P {
    name: &'static str,
    namespace: Option<&'static str>,
    labels: Vec<(&'static str, &'static str)>,
    node: Option<&'static str>,
    nominated: Option<&'static str>,
    affinity: Vec<Value>,
    anti: Vec<Value>,
    spread: Vec<Value>,
    tolerations: Vec<Value>,
}

impl P {
    fn new() -> Self {
        Self {
            name: "p",
            ..Default::default()
        }
    }
    fn name(mut self, n: &'static str) -> Self {
        self.name = n;
        self
    }
    fn ns(mut self, n: &'static str) -> Self {
        self.namespace = Some(n);
        self
    }
    fn label(mut self, k: &'static str, v: &'static str) -> Self {
        self.labels.push((k, v));
        self
    }
    fn node(mut self, n: &'static str) -> Self {
        self.node = Some(n);
        self
    }
    fn nominated(mut self, n: &'static str) -> Self {
        self.nominated = Some(n);
        self
    }
    /// `PodAffinityIn(key, topologyKey, values, required)`.
    fn affinity_in(mut self, key: &str, topology: &str, values: &[&str]) -> Self {
        self.affinity.push(term("In", key, values, topology));
        self
    }
    fn affinity_exists(mut self, key: &str, topology: &str) -> Self {
        self.affinity.push(term("Exists", key, &[], topology));
        self
    }
    fn anti_in(mut self, key: &str, topology: &str, values: &[&str]) -> Self {
        self.anti.push(term("In", key, values, topology));
        self
    }
    /// `PodAntiAffinity(topologyKey, matchLabels selector, required)`.
    fn anti_labels(mut self, topology: &str, labels: Value) -> Self {
        self.anti
            .push(json!({"labelSelector": {"matchLabels": labels}, "topologyKey": topology}));
        self
    }
    /// `SpreadConstraint(maxSkew, key, DoNotSchedule, selector, …)`.
    fn spread(mut self, key: &str, selector: Value) -> Self {
        self.spread.push(json!({"maxSkew": 1, "topologyKey": key,
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": selector}));
        self
    }
    fn spread_honor_taints(mut self, key: &str, selector: Value) -> Self {
        self.spread.push(json!({"maxSkew": 1, "topologyKey": key,
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": selector,
            "nodeTaintsPolicy": "Honor"}));
        self
    }
    fn toleration(mut self, key: &str) -> Self {
        self.tolerations
            .push(json!({"key": key, "operator": "Exists"}));
        self
    }
    fn obj(&self) -> PodInfo {
        let labels: serde_json::Map<String, Value> = self
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let mut spec = json!({"containers": []});
        if let Some(n) = self.node {
            spec["nodeName"] = json!(n);
        }
        if !self.affinity.is_empty() || !self.anti.is_empty() {
            spec["affinity"] = json!({});
        }
        if !self.affinity.is_empty() {
            spec["affinity"]["podAffinity"] =
                json!({"requiredDuringSchedulingIgnoredDuringExecution": self.affinity});
        }
        if !self.anti.is_empty() {
            spec["affinity"]["podAntiAffinity"] =
                json!({"requiredDuringSchedulingIgnoredDuringExecution": self.anti});
        }
        if !self.spread.is_empty() {
            spec["topologySpreadConstraints"] = json!(self.spread);
        }
        if !self.tolerations.is_empty() {
            spec["tolerations"] = json!(self.tolerations);
        }
        let mut v = json!({"metadata": {"name": self.name, "labels": labels,
            "namespace": self.namespace.unwrap_or("default")}, "spec": spec});
        if let Some(n) = self.nominated {
            v["status"] = json!({"nominatedNodeName": n});
        }
        pod(v)
    }
}

fn term(op: &str, key: &str, values: &[&str], topology: &str) -> Value {
    let mut req = json!({"key": key, "operator": op});
    if !values.is_empty() {
        req["values"] = json!(values);
    }
    json!({"labelSelector": {"matchExpressions": [req]}, "topologyKey": topology})
}

fn n(name: &str, labels: &[(&str, &str)]) -> Option<NodeInfo> {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    Some(node(json!({"metadata": {"name": name, "labels": labels}})))
}

const SEC: &[&str] = &["securityscan", "value2"];

/// interpodaffinity Test_isSchedulableAfterAssignedPodChange.
#[test]
fn inter_pod_affinity_assigned_pod_change() {
    let aff = || P::new().affinity_in("service", "region", SEC).obj();
    let anti = || P::new().anti_in("service", "region", SEC).obj();
    let anti2 = || {
        P::new()
            .anti_in("service", "region", &["securityscan"])
            .anti_in("app", "region", &["web"])
            .obj()
    };
    let multi = || {
        P::new()
            .affinity_exists("aaa", "hostname")
            .affinity_exists("bbb", "hostname")
            .obj()
    };
    let other = || P::new().name("other");
    let placed = || other().node("fake-node");
    let hater = || {
        P::new()
            .name("other")
            .node("fake-node")
            .anti_in("service", "region", SEC)
    };
    run_pod_cases(
        affinity_after_assigned_pod_change,
        vec![
            (
                "add a pod which matches the pod affinity",
                aff(),
                None,
                Some(placed().label("service", "securityscan").obj()),
                Queue,
            ),
            (
                "add an un-scheduled pod",
                aff(),
                None,
                Some(other().label("service", "securityscan").obj()),
                QueueSkip,
            ),
            (
                "add a pod which doesn't match the pod affinity",
                aff(),
                None,
                Some(placed().label("aaa", "a").obj()),
                QueueSkip,
            ),
            (
                "update a pod from non-match to match pod affinity",
                aff(),
                Some(placed().label("aaa", "a").obj()),
                Some(placed().label("service", "securityscan").obj()),
                Queue,
            ),
            (
                "the updating pod matches target pod's affinity both before and after label changes",
                aff(),
                Some(placed().label("service", "value2").obj()),
                Some(placed().label("service", "securityscan").obj()),
                QueueSkip,
            ),
            (
                "update an un-scheduled pod",
                aff(),
                Some(other().label("aaa", "a").obj()),
                Some(other().label("service", "securityscan").obj()),
                QueueSkip,
            ),
            (
                "update a pod from match to non-match the pod affinity",
                aff(),
                Some(placed().label("service", "securityscan").obj()),
                Some(placed().label("aaa", "a").obj()),
                QueueSkip,
            ),
            (
                "update a pod from match to non-match pod's affinity - multiple terms case",
                multi(),
                Some(placed().label("aaa", "a").obj()),
                Some(placed().label("service", "securityscan").obj()),
                QueueSkip,
            ),
            (
                "update a pod from non-match to match pod's affinity - multiple terms case",
                multi(),
                Some(placed().label("aaa", "a").obj()),
                Some(placed().label("aaa", "").label("bbb", "").obj()),
                Queue,
            ),
            (
                "modify pod label to change it from satisfying pod anti-affinity to not satisfying anti-affinity",
                anti(),
                Some(placed().label("service", "securityscan").obj()),
                Some(placed().label("service", "aaaa").obj()),
                Queue,
            ),
            (
                "modify pod label to change it from not satisfying pod anti-affinity to satisfying anti-affinity",
                anti(),
                Some(placed().label("service", "bbb").obj()),
                Some(placed().label("service", "securityscan").obj()),
                QueueSkip,
            ),
            (
                "delete a pod which doesn't match pod's anti-affinity",
                anti(),
                Some(placed().label("aaa", "a").obj()),
                None,
                QueueSkip,
            ),
            (
                "delete a pod which matches pod's anti-affinity",
                anti(),
                Some(placed().label("service", "securityscan").obj()),
                None,
                Queue,
            ),
            (
                "delete a pod with anti-affinity that matches pending pod",
                P::new().label("service", "securityscan").obj(),
                Some(hater().obj()),
                None,
                Queue,
            ),
            (
                "delete a pod with anti-affinity that doesn't match pending pod",
                P::new().label("service", "foo").obj(),
                Some(hater().obj()),
                None,
                QueueSkip,
            ),
            (
                "delete a pod which doesn't match pending pod's anti-affinity and has anti-affinity that doesn't match pending pod",
                P::new()
                    .anti_in("service", "region", SEC)
                    .label("service", "foo")
                    .obj(),
                Some(hater().label("service", "foo").obj()),
                None,
                QueueSkip,
            ),
            (
                "delete a nominated pod which doesn't match pod's anti-affinity",
                anti(),
                Some(P::new().nominated("fake-node").label("aaa", "a").obj()),
                None,
                QueueSkip,
            ),
            (
                "delete a nominated pod which matches pod's anti-affinity",
                anti(),
                Some(
                    P::new()
                        .nominated("fake-node")
                        .label("service", "securityscan")
                        .obj(),
                ),
                None,
                Queue,
            ),
            (
                "modify pod label to change it from matching only one of target pod's anti-affinity terms to matching none",
                anti2(),
                Some(
                    placed()
                        .label("service", "securityscan")
                        .label("app", "bar")
                        .obj(),
                ),
                Some(placed().label("service", "foo").label("app", "bar").obj()),
                Queue,
            ),
            (
                "modify pod label but it still matches one of target pod's anti-affinity terms",
                anti2(),
                Some(
                    placed()
                        .label("service", "securityscan")
                        .label("app", "bar")
                        .obj(),
                ),
                Some(placed().label("service", "foo").label("app", "web").obj()),
                QueueSkip,
            ),
            (
                "delete a pod which matches only one of target pod's anti-affinity terms",
                anti2(),
                Some(placed().label("service", "securityscan").obj()),
                None,
                Queue,
            ),
            (
                "delete a pod with anti-affinity that matches pending pod on only one term",
                P::new().label("service", "securityscan").obj(),
                Some(
                    placed()
                        .anti_in("service", "region", &["securityscan"])
                        .anti_in("app", "region", &["web"])
                        .obj(),
                ),
                None,
                Queue,
            ),
        ],
    );
}

/// interpodaffinity Test_isSchedulableAfterTargetPodUpdateLabel.
#[test]
fn inter_pod_affinity_target_pod_update_label() {
    let regs = inter_pod_affinity();
    let hint = registered_hint(
        &regs,
        ClusterEvent::new(EventResource::TargetPod, ActionType::UPDATE_POD_LABEL),
    );
    let p = P::new().label("service", "securityscan");
    run_pod_cases(
        hint.as_ref(),
        vec![(
            "queue on a label change of the target pod",
            p.obj(),
            Some(p.obj()),
            Some(P::new().label("service", "other").obj()),
            Queue,
        )],
    );
}

/// interpodaffinity Test_isSchedulableAfterNodeChange.
#[test]
fn inter_pod_affinity_node_change() {
    let aff = |topology: &str| P::new().affinity_in("service", topology, SEC).obj();
    let anti = || {
        P::new()
            .anti_labels("zone", json!({"another": "label"}))
            .obj()
    };
    let cases: Vec<NodeCase<'_>> = vec![
        (
            "add a new node with matched pod affinity topologyKey",
            aff("zone"),
            None,
            n("node-a", &[("zone", "zone1")]),
            Queue,
        ),
        (
            "add a new node without matched topologyKey",
            aff("region"),
            None,
            n("node-a", &[("zone", "zone1")]),
            QueueSkip,
        ),
        (
            "update node label but not topologyKey",
            aff("zone"),
            n("node-a", &[("aaa", "a")]),
            n("node-a", &[("aaa", "b")]),
            QueueSkip,
        ),
        (
            "update node label that isn't related to the pod affinity",
            aff("zone"),
            n("node-a", &[("zone", "zone1")]),
            n(
                "node-a",
                &[("zone", "zone1"), ("unrelated-label", "unrelated")],
            ),
            QueueSkip,
        ),
        (
            "update node with different affinity topologyKey value",
            aff("zone"),
            n("node-a", &[("zone", "zone1")]),
            n("node-a", &[("zone", "zone2")]),
            Queue,
        ),
        (
            "update node to have the affinity topology label",
            aff("zone"),
            n("node-a", &[("aaa", "a")]),
            n("node-a", &[("zone", "zone1")]),
            Queue,
        ),
        (
            "add a new node with matched pod anti-affinity topologyKey",
            anti(),
            None,
            n("node-a", &[("zone", "zone1")]),
            Queue,
        ),
        (
            "add a new node without matched pod anti-affinity topologyKey",
            anti(),
            None,
            n("node-a", &[]),
            Queue,
        ),
        (
            "update node label that isn't related to the pod anti-affinity",
            anti(),
            n("node-a", &[("zone", "zone1")]),
            n(
                "node-a",
                &[("zone", "zone1"), ("unrelated-label", "unrelated")],
            ),
            QueueSkip,
        ),
        (
            "update node with different anti-affinity topologyKey value",
            anti(),
            n("node-a", &[("zone", "zone1")]),
            n("node-a", &[("zone", "zone2")]),
            Queue,
        ),
        (
            "update node to have the anti-affinity topology label",
            anti(),
            n("node-a", &[("aaa", "a")]),
            n("node-a", &[("zone", "zone1")]),
            QueueSkip,
        ),
        (
            "update node label not to have anti-affinity topology label",
            anti(),
            n("node-a", &[("zone", "zone1")]),
            n("node-a", &[("aaa", "a")]),
            Queue,
        ),
    ];
    run_node_cases(affinity_after_node_change, cases);
}

fn spread_hint(resource: EventResource, action: ActionType) -> QueueingHintFn {
    let args = json!({"defaultingType": "List"});
    let regs = for_plugin("PodTopologySpread", Some(&args)).unwrap();
    registered_hint(&regs, ClusterEvent::new(resource, action))
}

fn foo() -> Value {
    json!({"matchExpressions": [{"key": "foo", "operator": "Exists"}]})
}

fn bar() -> Value {
    json!({"matchExpressions": [{"key": "bar", "operator": "Exists"}]})
}

fn tainted(labels: &[(&str, &str)], key: &str) -> Option<NodeInfo> {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    Some(node(
        json!({"metadata": {"name": "node-a", "labels": labels},
        "spec": {"taints": [{"key": key, "value": "bbb", "effect": "NoSchedule"}]}}),
    ))
}

/// podtopologyspread Test_isSchedulableAfterNodeChange.
#[test]
fn pod_topology_spread_node_change() {
    let hint = spread_hint(EventResource::Node, ActionType::ADD);
    assert_wrong_kind_queues(hint.as_ref());
    let zone = || P::new().spread("zone", foo()).obj();
    let zone_node = || P::new().spread("zone", foo()).spread("node", foo()).obj();
    let cases: Vec<NodeCase<'_>> = vec![
        (
            "node updates label which matches topologyKey",
            zone(),
            n("node-a", &[("zone", "zone1")]),
            n("node-a", &[("zone", "zone2")]),
            Queue,
        ),
        (
            "node that doesn't match topologySpreadConstraints updates non-related label",
            zone(),
            n("node-a", &[("foo", "bar1")]),
            n("node-a", &[("foo", "bar2")]),
            QueueSkip,
        ),
        (
            "node that match topologySpreadConstraints adds non-related label",
            zone_node(),
            n(
                "node-a",
                &[("zone", "zone1"), ("node", "node1"), ("foo", "bar")],
            ),
            n("node-a", &[("zone", "zone1"), ("node", "node1")]),
            QueueSkip,
        ),
        (
            "create node with non-related labels",
            zone(),
            None,
            n("node-a", &[("foo", "bar")]),
            QueueSkip,
        ),
        (
            "create node with related labels",
            zone(),
            None,
            n("node-a", &[("zone", "zone1")]),
            Queue,
        ),
        (
            "delete node with non-related labels",
            zone(),
            n("node-a", &[("foo", "bar")]),
            None,
            QueueSkip,
        ),
        (
            "delete node with related labels",
            zone(),
            n("node-a", &[("zone", "zone1")]),
            None,
            Queue,
        ),
        (
            "add node with related labels that only match one of topologySpreadConstraints",
            zone_node(),
            None,
            n("node-a", &[("zone", "zone1")]),
            QueueSkip,
        ),
        (
            "add node with related labels that match all topologySpreadConstraints",
            zone_node(),
            None,
            n("node-a", &[("zone", "zone1"), ("node", "node1")]),
            Queue,
        ),
        (
            "update node with related labels that only match one of topologySpreadConstraints",
            zone_node(),
            n("node-a", &[("zone", "zone1")]),
            n("node-a", &[("zone", "zone1")]),
            QueueSkip,
        ),
        (
            "update node with related labels that match all topologySpreadConstraints",
            zone_node(),
            n("node-a", &[("zone", "zone1"), ("node", "node1")]),
            n("node-a", &[("zone", "zone1"), ("node", "node2")]),
            Queue,
        ),
        (
            "update node with different taints that match all topologySpreadConstraints",
            zone_node(),
            tainted(&[("zone", "zone1"), ("node", "node1")], "aaa"),
            tainted(&[("zone", "zone1"), ("node", "node1")], "ccc"),
            Queue,
        ),
        (
            "update node with different taints that only match one of topologySpreadConstraints",
            zone_node(),
            tainted(&[("node", "node1")], "aaa"),
            tainted(&[("node", "node1")], "ccc"),
            QueueSkip,
        ),
    ];
    run_node_cases(hint.as_ref(), cases);
}

/// podtopologyspread Test_isSchedulableAfterAssignedPodChange.
#[test]
fn pod_topology_spread_assigned_pod_change() {
    let hint = spread_hint(EventResource::AssignedPod, ActionType::ADD);
    assert_wrong_kind_queues(hint.as_ref());
    let target = || P::new().label("foo", "").spread("zone", foo()).obj();
    let multi = || {
        P::new()
            .label("foo", "")
            .spread("zone", foo())
            .spread("node", bar())
            .obj()
    };
    let p2 = || P::new().name("p2");
    let placed = || p2().node("fake-node");
    run_pod_cases(
        hint.as_ref(),
        vec![
            (
                "add pod with labels match topologySpreadConstraints selector",
                target(),
                None,
                Some(placed().label("foo", "").obj()),
                Queue,
            ),
            (
                "add un-scheduled pod",
                target(),
                None,
                Some(p2().label("foo", "").obj()),
                QueueSkip,
            ),
            (
                "update un-scheduled pod",
                target(),
                Some(p2().label("bar", "").obj()),
                Some(p2().label("foo", "").obj()),
                QueueSkip,
            ),
            (
                "delete un-scheduled pod",
                target(),
                Some(p2().label("foo", "").obj()),
                None,
                QueueSkip,
            ),
            (
                "add pod with different namespace",
                target(),
                None,
                Some(placed().ns("fake-namespace").label("foo", "").obj()),
                QueueSkip,
            ),
            (
                "add pod with labels don't match topologySpreadConstraints selector",
                target(),
                None,
                Some(placed().label("bar", "").obj()),
                QueueSkip,
            ),
            (
                "delete pod with labels that match topologySpreadConstraints selector",
                target(),
                Some(placed().label("foo", "").obj()),
                None,
                Queue,
            ),
            (
                "delete nominated pod with labels that don't match topologySpreadConstraints selector",
                target(),
                Some(p2().nominated("fake-node").label("bar", "").obj()),
                None,
                QueueSkip,
            ),
            (
                "delete nominated pod with labels that match topologySpreadConstraints selector",
                target(),
                Some(p2().nominated("fake-node").label("foo", "").obj()),
                None,
                Queue,
            ),
            (
                "delete pod with labels that don't match topologySpreadConstraints selector",
                target(),
                Some(placed().label("bar", "").obj()),
                None,
                QueueSkip,
            ),
            (
                "update pod's non-related label",
                target(),
                Some(placed().label("foo", "").label("bar", "bar1").obj()),
                Some(placed().label("foo", "").label("bar", "bar2").obj()),
                QueueSkip,
            ),
            (
                "add pod's label that matches topologySpreadConstraints selector",
                target(),
                Some(placed().obj()),
                Some(placed().label("foo", "").obj()),
                Queue,
            ),
            (
                "delete pod label that matches topologySpreadConstraints selector",
                target(),
                Some(placed().label("foo", "").obj()),
                Some(placed().obj()),
                Queue,
            ),
            (
                "change pod's label that matches topologySpreadConstraints selector",
                target(),
                Some(placed().label("foo", "foo1").obj()),
                Some(placed().label("foo", "foo2").obj()),
                QueueSkip,
            ),
            (
                "change pod's label that doesn't match topologySpreadConstraints selector",
                target(),
                Some(placed().label("foo", "").label("bar", "bar1").obj()),
                Some(placed().label("foo", "").label("bar", "bar2").obj()),
                QueueSkip,
            ),
            (
                "add pod's label that matches topologySpreadConstraints selector with multi topologySpreadConstraints",
                multi(),
                Some(placed().label("foo", "").obj()),
                Some(placed().label("foo", "").label("bar", "bar2").obj()),
                Queue,
            ),
            (
                "change pod's label that doesn't match topologySpreadConstraints selector with multi topologySpreadConstraints",
                multi(),
                Some(placed().label("foo", "").obj()),
                Some(placed().label("foo", "").label("baz", "").obj()),
                QueueSkip,
            ),
            (
                "change pod's label that match topologySpreadConstraints selector with multi topologySpreadConstraints",
                multi(),
                Some(placed().label("foo", "").label("bar", "").obj()),
                Some(placed().label("foo", "").label("bar", "bar2").obj()),
                QueueSkip,
            ),
        ],
    );
}

/// podtopologyspread Test_isSchedulableAfterTargetPodChange.
#[test]
fn pod_topology_spread_target_pod_change() {
    let hint = spread_hint(EventResource::TargetPod, ActionType::UPDATE_POD_TOLERATION);
    let honoring = || {
        P::new()
            .label("foo", "")
            .spread_honor_taints("zone", foo())
            .spread("node", bar())
            .obj()
    };
    let ignoring = || {
        P::new()
            .label("foo", "")
            .spread("zone", foo())
            .spread("node", bar())
            .obj()
    };
    let labelled = || P::new().label("foo", "");
    run_pod_cases(
        hint.as_ref(),
        vec![
            (
                "the unschedulable Pod has topologySpreadConstraint with NodeTaintsPolicy:Honor and has got a new toleration",
                honoring(),
                Some(labelled().obj()),
                Some(
                    labelled()
                        .toleration("node.kubernetes.io/unschedulable")
                        .obj(),
                ),
                Queue,
            ),
            (
                "the unschedulable Pod has topologySpreadConstraint without NodeTaintsPolicy:Honor and has got a new toleration",
                ignoring(),
                Some(labelled().obj()),
                Some(
                    labelled()
                        .toleration("node.kubernetes.io/unschedulable")
                        .obj(),
                ),
                QueueSkip,
            ),
            (
                "the unschedulable Pod has topologySpreadConstraint and has got a new label matching the selector of the constraint",
                ignoring(),
                Some(P::new().obj()),
                Some(labelled().obj()),
                Queue,
            ),
            (
                "the unschedulable Pod has topologySpreadConstraint and has got a new unrelated label",
                ignoring(),
                Some(P::new().obj()),
                Some(P::new().label("unrelated", "").obj()),
                QueueSkip,
            ),
        ],
    );
}
