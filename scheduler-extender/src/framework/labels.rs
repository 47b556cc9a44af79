//! Label selectors (pods, namespaces) and node selector terms (node affinity,
//! PV node affinity), compiled once and matched many times.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// Values sorted and without duplicates (matching binary-searches them).
    In(String, Vec<String>),
    /// Values sorted and without duplicates, as `In`.
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    /// Numeric comparisons of node selectors.
    Gt(String, i64),
    Lt(String, i64),
}

/// Whether `values` holds `v`: sorted values (as [`Requirement::from_parts`]
/// makes them) by binary search; a single value, as other constructors
/// make, is trivially sorted.
fn has(values: &[String], v: &str) -> bool {
    values.binary_search_by(|x| x.as_str().cmp(v)).is_ok()
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Self::In(k, vs) => labels.get(k).is_some_and(|v| has(vs, v)),
            Self::NotIn(k, vs) => labels.get(k).is_none_or(|v| !has(vs, v)),
            Self::Exists(k) => labels.contains_key(k),
            Self::DoesNotExist(k) => !labels.contains_key(k),
            Self::Gt(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Self::Lt(k, n) => labels
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }

    fn from_parts(
        key: &str,
        operator: &str,
        values: &[String],
        allow_numeric: bool,
    ) -> Result<Self, String> {
        let key = key.to_string();
        // Sorted for binary search: a selector may carry tens of thousands of
        // values (the apiserver only bounds the object's size), and existing
        // pods' terms are matched against every incoming pod.
        let mut values = values.to_vec();
        values.sort_unstable();
        values.dedup();
        let single_int = |values: &[String]| -> Result<i64, String> {
            match values {
                [v] => v
                    .parse()
                    .map_err(|_| format!("{operator} needs an integer value, got {v:?}")),
                _ => Err(format!("{operator} needs exactly one value")),
            }
        };
        match operator {
            "In" if !values.is_empty() => Ok(Self::In(key, values)),
            "NotIn" if !values.is_empty() => Ok(Self::NotIn(key, values)),
            "In" | "NotIn" => Err(format!("{operator} on {key:?} needs values")),
            "Exists" => Ok(Self::Exists(key)),
            "DoesNotExist" => Ok(Self::DoesNotExist(key)),
            "Gt" if allow_numeric => Ok(Self::Gt(key, single_int(&values)?)),
            "Lt" if allow_numeric => Ok(Self::Lt(key, single_int(&values)?)),
            other => Err(format!("unknown operator {other:?} on {key:?}")),
        }
    }
}

/// A compiled `metav1.LabelSelector`: all requirements must match. An empty
/// selector matches everything; `Selector::nothing()` matches nothing (the
/// meaning of a nil selector in affinity terms).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl Selector {
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn nothing() -> Self {
        Self {
            requirements: vec![],
            nothing: true,
        }
    }

    pub fn from_label_selector(sel: &LabelSelector) -> Result<Self, String> {
        let mut requirements = vec![];
        for (k, v) in sel.match_labels.iter().flatten() {
            requirements.push(Requirement::In(k.clone(), vec![v.clone()]));
        }
        for expr in sel.match_expressions.iter().flatten() {
            requirements.push(Requirement::from_parts(
                &expr.key,
                &expr.operator,
                expr.values.as_deref().unwrap_or_default(),
                false,
            )?);
        }
        Ok(Self {
            requirements,
            nothing: false,
        })
    }

    /// A nil selector (`None`) selects nothing, as in upstream's affinity terms.
    pub fn from_optional(sel: Option<&LabelSelector>) -> Result<Self, String> {
        sel.map_or(Ok(Self::nothing()), Self::from_label_selector)
    }

    /// Adds `key In (value)`, used for matchLabelKeys.
    pub fn require(&mut self, requirement: Requirement) {
        self.requirements.push(requirement);
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Adds every requirement of `other`: both must hold.
    pub fn extend(&mut self, other: Selector) {
        self.nothing |= other.nothing;
        self.requirements.extend(other.requirements);
    }

    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }
}

/// One compiled `NodeSelectorTerm`: label requirements and `metadata.name`
/// field requirements, all of which must match. A term with neither matches
/// nothing (upstream semantics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTerm {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

impl NodeTerm {
    pub fn compile(term: &NodeSelectorTerm) -> Result<Self, String> {
        let compile = |reqs: &Option<Vec<NodeSelectorRequirement>>,
                       numeric: bool|
         -> Result<Vec<Requirement>, String> {
            reqs.iter()
                .flatten()
                .map(|r| {
                    Requirement::from_parts(
                        &r.key,
                        &r.operator,
                        r.values.as_deref().unwrap_or_default(),
                        numeric,
                    )
                })
                .collect()
        };
        let fields = compile(&term.match_fields, false)?;
        if let Some(bad) = fields.iter().find(|r| !matches!(r, Requirement::In(k, _) | Requirement::NotIn(k, _) if k == "metadata.name")) {
            return Err(format!("unsupported field requirement {bad:?}: only metadata.name with In/NotIn"));
        }
        Ok(Self {
            labels: compile(&term.match_expressions, true)?,
            fields,
        })
    }

    /// Upstream checks field requirements only against a node with a name
    /// (nodeaffinity's `len(nodeFields) > 0`): a PV's node affinity, matched
    /// against the node's labels alone, passes its `matchFields`.
    pub fn matches(&self, node_name: &str, labels: &Labels) -> bool {
        if self.labels.is_empty() && self.fields.is_empty() {
            return false;
        }
        self.labels.iter().all(|r| r.matches(labels))
            && (node_name.is_empty() || self.fields.iter().all(|r| name_matches(r, node_name)))
    }
}

/// A `metadata.name` field requirement (only In and NotIn compile).
fn name_matches(requirement: &Requirement, name: &str) -> bool {
    match requirement {
        Requirement::In(_, names) => has(names, name),
        Requirement::NotIn(_, names) => !has(names, name),
        _ => false,
    }
}

/// A compiled `NodeSelector`: the terms are ORed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSelectorMatcher {
    terms: Vec<NodeTerm>,
}

impl NodeSelectorMatcher {
    pub fn compile(sel: &NodeSelector) -> Result<Self, String> {
        Ok(Self {
            terms: sel
                .node_selector_terms
                .iter()
                .map(NodeTerm::compile)
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn matches(&self, node_name: &str, labels: &Labels) -> bool {
        self.terms.iter().any(|t| t.matches(node_name, labels))
    }

    pub fn matches_node(&self, node: &Node) -> bool {
        let empty = Labels::new();
        self.matches(
            node.metadata.name.as_deref().unwrap_or_default(),
            node.metadata.labels.as_ref().unwrap_or(&empty),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testing::labels;
    use serde_json::json;

    /// The apiserver bounds a selector only by the object's size: tens of
    /// thousands of values, unsorted and repeated, match as a set.
    #[test]
    fn huge_value_lists_match_as_sets() {
        let values: Vec<String> = (0..50_000)
            .rev()
            .map(|i| format!("v{}", i % 40_000))
            .collect();
        let sel: LabelSelector = serde_json::from_value(json!({"matchExpressions": [
            {"key": "a", "operator": "In", "values": values},
            {"key": "b", "operator": "NotIn", "values": values},
        ]}))
        .unwrap();
        let sel = Selector::from_label_selector(&sel).unwrap();
        assert!(sel.matches(&labels(&[("a", "v0")])));
        assert!(sel.matches(&labels(&[("a", "v39999"), ("b", "w")])));
        assert!(!sel.matches(&labels(&[("a", "v40000")])));
        assert!(!sel.matches(&labels(&[("a", "v7"), ("b", "v12345")])));
    }

    #[test]
    fn label_selector_operators() {
        let sel: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
            ],
        }))
        .unwrap();
        let sel = Selector::from_label_selector(&sel).unwrap();
        assert!(sel.matches(&labels(&[("app", "web"), ("tier", "a")])));
        assert!(sel.matches(&labels(&[("app", "web"), ("tier", "b"), ("env", "prod")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "c")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "a"), ("canary", "1")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "a"), ("env", "dev")])));
        assert!(Selector::everything().matches(&Labels::new()));
        assert!(!Selector::nothing().matches(&Labels::new()));
        assert!(
            !Selector::from_optional(None)
                .unwrap()
                .matches(&labels(&[("a", "b")]))
        );
    }

    #[test]
    fn node_terms_and_fields() {
        let sel: NodeSelector = serde_json::from_value(json!({"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["8"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n9"]}]},
        ]}))
        .unwrap();
        let m = NodeSelectorMatcher::compile(&sel).unwrap();
        assert!(m.matches("n1", &labels(&[("cores", "16")])));
        assert!(!m.matches("n1", &labels(&[("cores", "8")])));
        assert!(!m.matches("n1", &labels(&[("cores", "x")])));
        assert!(m.matches("n9", &Labels::new()));
        let not_in: NodeSelector = serde_json::from_value(json!({"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n9"]}]},
        ]}))
        .unwrap();
        let not_in = NodeSelectorMatcher::compile(&not_in).unwrap();
        assert!(not_in.matches("n1", &Labels::new()));
        assert!(!not_in.matches("n9", &Labels::new()));
        // Without a name (a PV's affinity, matched on labels only) field
        // requirements are not checked, as upstream's.
        assert!(m.matches("", &Labels::new()));
        assert!(not_in.matches("", &Labels::new()));
        let empty: NodeSelector =
            serde_json::from_value(json!({"nodeSelectorTerms": [{}]})).unwrap();
        assert!(
            !NodeSelectorMatcher::compile(&empty)
                .unwrap()
                .matches("n1", &Labels::new())
        );
    }

    #[test]
    fn rejects_bad_requirements() {
        let bad: NodeSelector = serde_json::from_value(json!({"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "k", "operator": "Gt", "values": ["1", "2"]}]}]}))
        .unwrap();
        assert!(NodeSelectorMatcher::compile(&bad).is_err());
        let bad: LabelSelector =
            serde_json::from_value(json!({"matchExpressions": [{"key": "k", "operator": "In"}]}))
                .unwrap();
        assert!(Selector::from_label_selector(&bad).is_err());
    }
}
