//! PodTopologySpread: spreads pods that match a selector across topology
//! domains (zones, nodes, …) as `spec.topologySpreadConstraints` ask —
//! DoNotSchedule constraints filter nodes whose domain would exceed
//! `maxSkew`, ScheduleAnyway ones prefer the less crowded domains.
//!
//! Pods without constraints get the plugin's default constraints, pointed
//! at the selectors of the Services, ReplicationControllers, ReplicaSets and
//! StatefulSets that own or select the pod ([`crate::workloads`], which
//! [`new`] plugs in); a pod nothing selects gets none, as upstream's.

pub(crate) mod common;
mod filtering;
mod scoring;

use std::sync::Arc;

use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;
use serde_json::Value;

use crate::framework::labels::Selector;
use crate::framework::{
    FilterPlugin, Plugin, PodInfo, PreFilterPlugin, PreScorePlugin, ScorePlugin,
};
use crate::plugins::parse_args;

use common::{
    Constraint, DO_NOT_SCHEDULE, LABEL_HOSTNAME, LABEL_TOPOLOGY_ZONE, SCHEDULE_ANYWAY,
    filter_constraints,
};

pub const NAME: &str = "PodTopologySpread";

/// Filter rejection when the node's domain would be too crowded.
pub const ERR_REASON_CONSTRAINTS_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints";
/// Filter rejection when the node lacks a constraint's topology key.
pub const ERR_REASON_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

const SYSTEM_DEFAULTING: &str = "System";
const LIST_DEFAULTING: &str = "List";

/// `PodTopologySpreadArgs` (kubescheduler.config.k8s.io/v1).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodTopologySpreadArgs {
    #[serde(default)]
    pub default_constraints: Option<Vec<DefaultConstraint>>,
    /// `System` (the default, also for an empty string) or `List`.
    #[serde(default)]
    pub defaulting_type: Option<String>,
}

/// One `v1.TopologySpreadConstraint` of the args. Every field is optional
/// here so that a missing one is reported by validation, by field name, as
/// upstream does, rather than as a decoding error.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultConstraint {
    #[serde(default)]
    pub max_skew: i32,
    #[serde(default)]
    pub topology_key: String,
    #[serde(default)]
    pub when_unsatisfiable: String,
    #[serde(default)]
    pub label_selector: Option<LabelSelector>,
    #[serde(default)]
    pub min_domains: Option<i32>,
    #[serde(default)]
    pub node_affinity_policy: Option<String>,
    #[serde(default)]
    pub node_taints_policy: Option<String>,
    #[serde(default)]
    pub match_label_keys: Option<Vec<String>>,
}

impl From<&DefaultConstraint> for TopologySpreadConstraint {
    fn from(c: &DefaultConstraint) -> Self {
        Self {
            label_selector: c.label_selector.clone(),
            match_label_keys: c.match_label_keys.clone(),
            max_skew: c.max_skew,
            min_domains: c.min_domains,
            node_affinity_policy: c.node_affinity_policy.clone(),
            node_taints_policy: c.node_taints_policy.clone(),
            topology_key: c.topology_key.clone(),
            when_unsatisfiable: c.when_unsatisfiable.clone(),
        }
    }
}

impl PodTopologySpreadArgs {
    fn defaulting_type(&self) -> &str {
        match self.defaulting_type.as_deref() {
            None | Some("") => SYSTEM_DEFAULTING,
            Some(t) => t,
        }
    }

    /// Upstream's ValidatePodTopologySpreadArgs, with its messages; several
    /// problems are reported together as `[a, b]` like an aggregate error.
    pub fn validate(&self) -> Result<(), String> {
        let mut errs = vec![];
        let constraints = self.default_constraints.as_deref().unwrap_or_default();
        let defaulting = self.defaulting_type();
        if defaulting != SYSTEM_DEFAULTING && defaulting != LIST_DEFAULTING {
            errs.push(format!(
                "defaultingType: Unsupported value: {defaulting:?}: supported values: \"{SYSTEM_DEFAULTING}\", \"{LIST_DEFAULTING}\""
            ));
        } else if defaulting == SYSTEM_DEFAULTING && !constraints.is_empty() {
            errs.push(format!(
                "defaultingType: Invalid value: {defaulting:?}: when .defaultConstraints are not empty"
            ));
        }
        for (i, c) in constraints.iter().enumerate() {
            let path = format!("defaultConstraints[{i}]");
            if c.max_skew <= 0 {
                errs.push(format!(
                    "{path}.maxSkew: Invalid value: {}: not in valid range (0, inf)",
                    c.max_skew
                ));
            }
            if c.topology_key.is_empty() {
                errs.push(format!(
                    "{path}.topologyKey: Required value: can not be empty"
                ));
            } else {
                for msg in qualified_name_errors(&c.topology_key) {
                    errs.push(format!(
                        "{path}.topologyKey: Invalid value: {:?}: {msg}",
                        c.topology_key
                    ));
                }
            }
            if c.when_unsatisfiable.is_empty() {
                errs.push(format!(
                    "{path}.whenUnsatisfiable: Required value: can not be empty"
                ));
            } else if c.when_unsatisfiable != DO_NOT_SCHEDULE
                && c.when_unsatisfiable != SCHEDULE_ANYWAY
            {
                errs.push(format!(
                    "{path}.whenUnsatisfiable: Unsupported value: {:?}: supported values: \"{DO_NOT_SCHEDULE}\", \"{SCHEDULE_ANYWAY}\"",
                    c.when_unsatisfiable
                ));
            }
            if c.label_selector.is_some() {
                errs.push(format!(
                    "{path}.labelSelector: Forbidden: constraint must not define a selector, as they deduced for each pod"
                ));
            }
            if constraints[..i].iter().any(|o| {
                o.topology_key == c.topology_key && o.when_unsatisfiable == c.when_unsatisfiable
            }) {
                errs.push(format!(
                    "{path}: Duplicate value: \"{{{}, {}}}\"",
                    c.topology_key, c.when_unsatisfiable
                ));
            }
        }
        match errs.len() {
            0 => Ok(()),
            1 => Err(errs.remove(0)),
            _ => Err(format!("[{}]", errs.join(", "))),
        }
    }
}

/// `IsQualifiedName` of apimachinery's validation, the rule for label keys.
fn qualified_name_errors(value: &str) -> Vec<String> {
    const NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
    const NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
    const DNS_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
    const DNS_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
    let regex_error = |msg: &str, fmt: &str, examples: &[&str]| {
        let examples: Vec<String> = examples.iter().map(|e| format!("'{e}', ")).collect();
        format!(
            "{msg} (e.g. {}regex used for validation is '{fmt}')",
            examples.join(" or ")
        )
    };
    let name_examples = ["MyName", "my.name", "123-abc"];
    let mut errs = vec![];
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > 253 {
                    errs.push("prefix part must be no more than 253 characters".to_string());
                }
                if !is_dns1123_subdomain(prefix) {
                    errs.push(format!(
                        "prefix part {}",
                        regex_error(DNS_MSG, DNS_FMT, &["example.com"])
                    ));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(NAME_MSG, NAME_FMT, &name_examples)
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let name_ok = name.chars().next().is_some_and(alnum)
        && name.chars().last().is_some_and(alnum)
        && name
            .chars()
            .all(|c| alnum(c) || c == '-' || c == '_' || c == '.');
    if !name_ok {
        errs.push(format!(
            "name part {}",
            regex_error(NAME_MSG, NAME_FMT, &name_examples)
        ));
    }
    errs
}

fn is_dns1123_subdomain(s: &str) -> bool {
    let lower_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.split('.').all(|label| {
        label.chars().next().is_some_and(lower_alnum)
            && label.chars().last().is_some_and(lower_alnum)
            && label.chars().all(|c| lower_alnum(c) || c == '-')
    })
}

/// Where default constraints get their selector from: upstream merges the
/// selectors of the Services, ReplicationControllers, ReplicaSets and
/// StatefulSets matching the pod. An empty selector means "none", and the
/// defaults are then skipped.
pub type DefaultSelectorSource = Arc<dyn Fn(&PodInfo) -> Selector + Send + Sync>;

pub struct PodTopologySpread {
    /// Constraints for pods that have none (the system defaults or the args'
    /// list); their selectors come from `default_selector`.
    default_constraints: Vec<TopologySpreadConstraint>,
    /// With the system defaults, nodes missing a topology key still score
    /// (a node without a zone label can still be spread over by hostname).
    system_defaulted: bool,
    default_selector: DefaultSelectorSource,
}

/// Upstream's systemDefaultConstraints, in its order.
fn system_default_constraints() -> Vec<TopologySpreadConstraint> {
    [(LABEL_HOSTNAME, 3), (LABEL_TOPOLOGY_ZONE, 5)]
        .into_iter()
        .map(|(key, max_skew)| TopologySpreadConstraint {
            max_skew,
            topology_key: key.to_string(),
            when_unsatisfiable: SCHEDULE_ANYWAY.to_string(),
            ..Default::default()
        })
        .collect()
}

impl PodTopologySpread {
    /// Builds the plugin from validated args with no workload objects to
    /// derive default selectors from (see the module docs).
    pub fn from_args(args: &PodTopologySpreadArgs) -> Result<Self, String> {
        args.validate()?;
        let system_defaulted = args.defaulting_type() == SYSTEM_DEFAULTING;
        let default_constraints = if system_defaulted {
            system_default_constraints()
        } else {
            args.default_constraints
                .iter()
                .flatten()
                .map(TopologySpreadConstraint::from)
                .collect()
        };
        Ok(Self {
            default_constraints,
            system_defaulted,
            default_selector: Arc::new(|_| Selector::everything()),
        })
    }

    /// Replaces where default constraints get their selector from.
    pub fn with_default_selector(mut self, source: DefaultSelectorSource) -> Self {
        self.default_selector = source;
        self
    }

    /// The pod's DoNotSchedule constraints (its own, or else the
    /// defaults): what Filter enforces and the queueing hints look at.
    pub(crate) fn hard_constraints(&self, pod: &PodInfo) -> Result<Vec<Constraint>, String> {
        self.constraints_for(pod, DO_NOT_SCHEDULE)
    }

    /// The pod's own constraints for `action`, or else the defaults.
    fn constraints_for(&self, pod: &PodInfo, action: &str) -> Result<Vec<Constraint>, String> {
        match pod_constraints(pod) {
            Some(own) => filter_constraints(own, &pod.labels, action),
            None => self.build_default_constraints(pod, action),
        }
    }

    fn build_default_constraints(
        &self,
        pod: &PodInfo,
        action: &str,
    ) -> Result<Vec<Constraint>, String> {
        let mut constraints = filter_constraints(&self.default_constraints, &pod.labels, action)?;
        if constraints.is_empty() {
            return Ok(constraints);
        }
        let selector = (self.default_selector)(pod);
        if selector.is_empty() {
            return Ok(vec![]);
        }
        for c in &mut constraints {
            c.selector = selector.clone();
        }
        Ok(constraints)
    }
}

/// The pod's `topologySpreadConstraints`, `None` when it has none.
fn pod_constraints(pod: &PodInfo) -> Option<&[TopologySpreadConstraint]> {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .filter(|c| !c.is_empty())
}

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

pub fn new(args: Option<&Value>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(from_config(args)?))
}

/// The plugin as the profile configures it, default selectors from the
/// cluster's workloads (its queueing hints need the same constraints).
pub fn from_config(args: Option<&Value>) -> Result<PodTopologySpread, String> {
    let args: PodTopologySpreadArgs = parse_args(NAME, args)?;
    let plugin = PodTopologySpread::from_args(&args)
        .map_err(|e| format!("pluginConfig[{NAME}].args: {e}"))?
        .with_default_selector(Arc::new(|pod| {
            crate::workloads::global()
                .read()
                .expect("workload index lock")
                .default_selector(pod)
        }));
    Ok(plugin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testing::pod;
    use serde_json::json;

    fn build(args: Value) -> Result<Arc<dyn Plugin>, String> {
        new(Some(&args))
    }

    #[test]
    fn args_default_to_system_defaulting() {
        let p = PodTopologySpread::from_args(&PodTopologySpreadArgs::default()).unwrap();
        assert!(p.system_defaulted);
        let keys: Vec<(&str, i32, &str)> = p
            .default_constraints
            .iter()
            .map(|c| {
                (
                    c.topology_key.as_str(),
                    c.max_skew,
                    c.when_unsatisfiable.as_str(),
                )
            })
            .collect();
        assert_eq!(
            keys,
            vec![
                (LABEL_HOSTNAME, 3, SCHEDULE_ANYWAY),
                (LABEL_TOPOLOGY_ZONE, 5, SCHEDULE_ANYWAY)
            ]
        );
        assert!(new(None).is_ok());
        assert!(build(json!({"defaultingType": ""})).is_ok());
        assert!(build(json!({"kind": "PodTopologySpreadArgs", "apiVersion": "kubescheduler.config.k8s.io/v1", "defaultingType": "List"})).is_ok());
    }

    #[test]
    fn args_validation_matches_upstream_messages() {
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "list defaulting with constraints is valid",
                json!({"defaultingType": "List", "defaultConstraints": [
                    {"maxSkew": 1, "topologyKey": "node", "whenUnsatisfiable": "DoNotSchedule"},
                    {"maxSkew": 2, "topologyKey": "example.com/zone", "whenUnsatisfiable": "ScheduleAnyway"},
                ]}),
                "",
            ),
            (
                "system defaulting with constraints",
                json!({"defaultConstraints": [{"maxSkew": 1, "topologyKey": "node", "whenUnsatisfiable": "DoNotSchedule"}]}),
                "defaultingType: Invalid value: \"System\": when .defaultConstraints are not empty",
            ),
            (
                "unknown defaulting type",
                json!({"defaultingType": "Unknown"}),
                "defaultingType: Unsupported value: \"Unknown\": supported values: \"System\", \"List\"",
            ),
            (
                "maxSkew",
                json!({"defaultingType": "List", "defaultConstraints": [{"maxSkew": 0, "topologyKey": "node", "whenUnsatisfiable": "DoNotSchedule"}]}),
                "defaultConstraints[0].maxSkew: Invalid value: 0: not in valid range (0, inf)",
            ),
            (
                "empty topologyKey",
                json!({"defaultingType": "List", "defaultConstraints": [{"maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"}]}),
                "defaultConstraints[0].topologyKey: Required value: can not be empty",
            ),
            (
                "invalid topologyKey",
                json!({"defaultingType": "List", "defaultConstraints": [{"maxSkew": 1, "topologyKey": "-node", "whenUnsatisfiable": "DoNotSchedule"}]}),
                "defaultConstraints[0].topologyKey: Invalid value: \"-node\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            ),
            (
                "missing whenUnsatisfiable",
                json!({"defaultingType": "List", "defaultConstraints": [{"maxSkew": 1, "topologyKey": "node"}]}),
                "defaultConstraints[0].whenUnsatisfiable: Required value: can not be empty",
            ),
            (
                "unsupported whenUnsatisfiable",
                json!({"defaultingType": "List", "defaultConstraints": [{"maxSkew": 1, "topologyKey": "node", "whenUnsatisfiable": "Sometimes"}]}),
                "defaultConstraints[0].whenUnsatisfiable: Unsupported value: \"Sometimes\": supported values: \"DoNotSchedule\", \"ScheduleAnyway\"",
            ),
            (
                "selector is forbidden",
                json!({"defaultingType": "List", "defaultConstraints": [{"maxSkew": 1, "topologyKey": "node", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {}}]}),
                "defaultConstraints[0].labelSelector: Forbidden: constraint must not define a selector, as they deduced for each pod",
            ),
            (
                "duplicate constraints, and several errors at once",
                json!({"defaultingType": "List", "defaultConstraints": [
                    {"maxSkew": 1, "topologyKey": "node", "whenUnsatisfiable": "DoNotSchedule"},
                    {"maxSkew": -1, "topologyKey": "node", "whenUnsatisfiable": "DoNotSchedule"},
                ]}),
                "[defaultConstraints[1].maxSkew: Invalid value: -1: not in valid range (0, inf), defaultConstraints[1]: Duplicate value: \"{node, DoNotSchedule}\"]",
            ),
        ];
        for (name, args, want) in cases {
            let args: PodTopologySpreadArgs = serde_json::from_value(args).unwrap();
            let got = args.validate().err().unwrap_or_default();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn args_reject_unknown_fields_by_name() {
        let err = build(json!({"defaultConstraint": []})).err().unwrap();
        assert!(err.contains("defaultConstraint"), "{err}");
        let err = build(json!({"defaultingType": "List", "defaultConstraints": [{"maxSkew": 1, "topologyKey": "a", "whenUnsatisfiable": "DoNotSchedule", "skew": 1}]}))
            .err()
            .unwrap();
        assert!(err.contains("skew"), "{err}");
        let err = build(json!({"defaultingType": "Nope"})).err().unwrap();
        assert!(err.contains("defaultingType"), "{err}");
    }

    #[test]
    fn default_constraints_need_a_selector() {
        let args: PodTopologySpreadArgs = serde_json::from_value(json!({
            "defaultingType": "List",
            "defaultConstraints": [
                {"maxSkew": 1, "topologyKey": LABEL_HOSTNAME, "whenUnsatisfiable": "ScheduleAnyway"},
                {"maxSkew": 2, "topologyKey": "rack", "whenUnsatisfiable": "DoNotSchedule"},
                {"maxSkew": 2, "topologyKey": "planet", "whenUnsatisfiable": "ScheduleAnyway"},
            ],
        }))
        .unwrap();
        let p = pod("p", &[("foo", "tar")], json!({}));

        let without = PodTopologySpread::from_args(&args).unwrap();
        assert!(
            without
                .constraints_for(&p, SCHEDULE_ANYWAY)
                .unwrap()
                .is_empty()
        );

        let with = PodTopologySpread::from_args(&args)
            .unwrap()
            .with_default_selector(Arc::new(|pod: &PodInfo| {
                let mut s = Selector::everything();
                if let Some(v) = pod.labels.get("foo") {
                    s.require(crate::framework::labels::Requirement::In(
                        "foo".into(),
                        vec![v.clone()],
                    ));
                }
                s
            }));
        let soft = with.constraints_for(&p, SCHEDULE_ANYWAY).unwrap();
        assert_eq!(
            soft.iter()
                .map(|c| c.topology_key.as_str())
                .collect::<Vec<_>>(),
            vec![LABEL_HOSTNAME, "planet"]
        );
        assert!(soft.iter().all(|c| c.selector.matches(&p.labels)));
        let hard = with.constraints_for(&p, DO_NOT_SCHEDULE).unwrap();
        assert_eq!(hard.len(), 1);
        assert_eq!(hard[0].topology_key, "rack");

        // A pod with its own constraints never gets the defaults.
        let own = pod(
            "p",
            &[("foo", "tar")],
            json!({"topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {}},
            ]}),
        );
        assert!(
            with.constraints_for(&own, SCHEDULE_ANYWAY)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            with.constraints_for(&own, DO_NOT_SCHEDULE).unwrap().len(),
            1
        );
    }
}
