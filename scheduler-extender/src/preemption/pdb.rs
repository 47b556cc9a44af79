//! PodDisruptionBudgets as preemption sees them: which victims would take a
//! budget below its allowed disruptions.

use std::sync::Arc;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::framework::PodInfo;
use crate::framework::labels::Selector;

/// A budget compiled for matching.
#[derive(Clone, Debug)]
pub struct PdbInfo {
    pub namespace: String,
    pub selector: Selector,
    pub disruptions_allowed: i32,
    /// Pods the disruption controller already counts as disrupted.
    pub disrupted: Vec<String>,
}

impl PdbInfo {
    pub fn new(pdb: &PodDisruptionBudget) -> Self {
        // A nil or empty selector selects nothing for preemption (upstream).
        let selector = match pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) {
            Some(sel)
                if sel.match_labels.as_ref().is_some_and(|m| !m.is_empty())
                    || sel
                        .match_expressions
                        .as_ref()
                        .is_some_and(|e| !e.is_empty()) =>
            {
                Selector::from_label_selector(sel).unwrap_or_else(|_| Selector::nothing())
            }
            _ => Selector::nothing(),
        };
        let status = pdb.status.as_ref();
        Self {
            namespace: pdb.metadata.namespace.clone().unwrap_or_default(),
            selector,
            disruptions_allowed: status.and_then(|s| s.disruptions_allowed).unwrap_or(0),
            disrupted: status
                .and_then(|s| s.disrupted_pods.as_ref())
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

/// Splits `pods` (in importance order) into those whose eviction would violate
/// a budget and those that would not, spending each budget's allowance as
/// pods are taken (upstream's filterPodsWithPDBViolation).
pub fn split_by_pdb(
    pods: &[Arc<PodInfo>],
    pdbs: &[PdbInfo],
) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<i32> = pdbs.iter().map(|p| p.disruptions_allowed).collect();
    let mut violating = vec![];
    let mut fine = vec![];
    for pod in pods {
        let mut violates = false;
        for (i, pdb) in pdbs.iter().enumerate() {
            if pdb.namespace != pod.namespace || !pdb.selector.matches(&pod.labels) {
                continue;
            }
            // Already counted as disrupted: evicting it costs nothing more.
            if pdb.disrupted.contains(&pod.name) {
                continue;
            }
            allowed[i] -= 1;
            if allowed[i] < 0 {
                violates = true;
            }
        }
        if violates {
            violating.push(pod.clone());
        } else {
            fine.push(pod.clone());
        }
    }
    (violating, fine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testing::pod;
    use serde_json::json;

    fn pdb(ns: &str, app: &str, allowed: i32) -> PdbInfo {
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "b", "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": app}}},
            "status": {"disruptionsAllowed": allowed, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0},
        }))
        .unwrap();
        PdbInfo::new(&pdb)
    }

    #[test]
    fn spends_the_budget_in_order() {
        let pods = vec![
            pod("a", &[("app", "web")], json!({})),
            pod("b", &[("app", "web")], json!({})),
            pod("c", &[("app", "db")], json!({})),
        ];
        let (violating, fine) = split_by_pdb(&pods, &[pdb("default", "web", 1)]);
        assert_eq!(
            violating
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(
            fine.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
    }

    #[test]
    fn other_namespaces_and_empty_selectors_do_not_count() {
        let pods = vec![pod("a", &[("app", "web")], json!({}))];
        let (violating, _) = split_by_pdb(&pods, &[pdb("other", "web", 0)]);
        assert!(violating.is_empty());
        let empty: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "e", "namespace": "default"}, "spec": {"selector": {}},
        }))
        .unwrap();
        let (violating, _) = split_by_pdb(&pods, &[PdbInfo::new(&empty)]);
        assert!(violating.is_empty());
    }
}
