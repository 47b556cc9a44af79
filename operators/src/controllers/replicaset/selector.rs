//! Whether a ReplicaSet's selector can be used at all. Upstream converts the
//! selector with `LabelSelectorAsSelector` and gives up on the ReplicaSet when
//! that fails; an empty selector would select every pod in the namespace,
//! which validation forbids for apps/v1, so we refuse it too rather than
//! adopt everything.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::controllers::podutil;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelectorProblem {
    /// Selects everything.
    Empty,
    /// Cannot be converted; the message is upstream's conversion error.
    Invalid(String),
}

/// `Ok` when the selector is non-empty and well formed.
pub fn check(selector: &LabelSelector) -> Result<(), SelectorProblem> {
    for expr in selector.match_expressions.iter().flatten() {
        let has_values = expr.values.as_ref().is_some_and(|v| !v.is_empty());
        match expr.operator.as_str() {
            "In" | "NotIn" if !has_values => {
                return Err(SelectorProblem::Invalid(
                    "for 'in', 'notin' operators, values set can't be empty".into(),
                ));
            }
            "Exists" | "DoesNotExist" if has_values => {
                return Err(SelectorProblem::Invalid(
                    "values set must be empty for exists and does not exist".into(),
                ));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err(SelectorProblem::Invalid(format!(
                    "{other:?} is not a valid label selector operator"
                )));
            }
        }
    }
    if podutil::selector_is_empty(selector) {
        return Err(SelectorProblem::Empty);
    }
    Ok(())
}

/// Whether a usable selector selects these labels; unusable selectors select
/// nothing (as upstream's `GetPodReplicaSets`).
pub fn selects(
    selector: &LabelSelector,
    labels: Option<&std::collections::BTreeMap<String, String>>,
) -> bool {
    let empty = Default::default();
    check(selector).is_ok() && podutil::selector_matches(selector, labels.unwrap_or(&empty))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn selector_checks() {
        let cases = [
            (json!({"matchLabels": {"a": "b"}}), Ok(())),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Exists"}]}),
                Ok(()),
            ),
            (json!({}), Err(SelectorProblem::Empty)),
            (json!({"matchLabels": {}}), Err(SelectorProblem::Empty)),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]}),
                Err(SelectorProblem::Invalid(
                    "\"Bogus\" is not a valid label selector operator".into(),
                )),
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
                Err(SelectorProblem::Invalid(
                    "for 'in', 'notin' operators, values set can't be empty".into(),
                )),
            ),
            (
                json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
                Err(SelectorProblem::Invalid(
                    "values set must be empty for exists and does not exist".into(),
                )),
            ),
        ];
        for (selector, want) in cases {
            assert_eq!(check(&sel(selector.clone())), want, "{selector}");
        }
    }

    #[test]
    fn unusable_selectors_select_nothing() {
        let labels = [("a".to_string(), "b".to_string())].into();
        assert!(selects(
            &sel(json!({"matchLabels": {"a": "b"}})),
            Some(&labels)
        ));
        assert!(!selects(&sel(json!({})), Some(&labels)));
        assert!(!selects(&sel(json!({"matchLabels": {"a": "b"}})), None));
    }
}
