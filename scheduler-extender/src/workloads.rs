//! The selectors of the Services, ReplicationControllers, ReplicaSets and
//! StatefulSets in the cluster: where PodTopologySpread's default constraints
//! get their selector (upstream's `helper.DefaultSelector`), so replicas of a
//! workload spread over nodes and zones without asking.
//!
//! Upstream's plugin reads these through informers its framework handle
//! hands it; our plugin registry builds plugins from their args alone, so the
//! index is one per process, filled by the scheduler's watches
//! ([`crate::informers`]) and read by every profile's plugin.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock, RwLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::framework::PodInfo;
use crate::framework::labels::{Requirement, Selector};

type Key = (String, String);

#[derive(Debug, Default)]
pub struct WorkloadIndex {
    /// Services by namespace, then name: their `spec.selector` (a Service
    /// without one selects no pods and is not kept).
    services: HashMap<String, BTreeMap<String, BTreeMap<String, String>>>,
    replication_controllers: HashMap<Key, BTreeMap<String, String>>,
    replica_sets: HashMap<Key, LabelSelector>,
    stateful_sets: HashMap<Key, LabelSelector>,
}

/// Which kind of object a watch keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Service,
    ReplicationController,
    ReplicaSet,
    StatefulSet,
}

impl WorkloadIndex {
    pub fn set_service(
        &mut self,
        ns: &str,
        name: &str,
        selector: Option<BTreeMap<String, String>>,
    ) {
        match selector {
            Some(s) => {
                self.services
                    .entry(ns.to_string())
                    .or_default()
                    .insert(name.to_string(), s);
            }
            None => self.remove(Kind::Service, ns, name),
        }
    }

    pub fn set_replication_controller(
        &mut self,
        ns: &str,
        name: &str,
        selector: Option<BTreeMap<String, String>>,
    ) {
        let key = (ns.to_string(), name.to_string());
        match selector {
            Some(s) => self.replication_controllers.insert(key, s),
            None => self.replication_controllers.remove(&key),
        };
    }

    pub fn set_replica_set(&mut self, ns: &str, name: &str, selector: LabelSelector) {
        self.replica_sets
            .insert((ns.to_string(), name.to_string()), selector);
    }

    pub fn set_stateful_set(&mut self, ns: &str, name: &str, selector: LabelSelector) {
        self.stateful_sets
            .insert((ns.to_string(), name.to_string()), selector);
    }

    pub fn remove(&mut self, kind: Kind, ns: &str, name: &str) {
        let key = (ns.to_string(), name.to_string());
        match kind {
            Kind::Service => {
                if let Some(services) = self.services.get_mut(ns) {
                    services.remove(name);
                }
            }
            Kind::ReplicationController => {
                self.replication_controllers.remove(&key);
            }
            Kind::ReplicaSet => {
                self.replica_sets.remove(&key);
            }
            Kind::StatefulSet => {
                self.stateful_sets.remove(&key);
            }
        }
    }

    /// After a re-list: keeps the objects of `kind` whose `namespace/name`
    /// is in `seen`.
    pub fn retain(&mut self, kind: Kind, seen: &std::collections::HashSet<String>) {
        let keep = |ns: &str, name: &str| seen.contains(&format!("{ns}/{name}"));
        match kind {
            Kind::Service => {
                for (ns, services) in &mut self.services {
                    services.retain(|name, _| keep(ns, name));
                }
            }
            Kind::ReplicationController => self
                .replication_controllers
                .retain(|(ns, n), _| keep(ns, n)),
            Kind::ReplicaSet => self.replica_sets.retain(|(ns, n), _| keep(ns, n)),
            Kind::StatefulSet => self.stateful_sets.retain(|(ns, n), _| keep(ns, n)),
        }
    }

    /// Upstream's DefaultSelector: the labels of every Service selecting the
    /// pod, merged, plus the selector of the ReplicationController,
    /// ReplicaSet or StatefulSet controlling it. Empty when none does.
    pub fn default_selector(&self, pod: &PodInfo) -> Selector {
        let mut merged: BTreeMap<&str, &str> = BTreeMap::new();
        for selector in self
            .services
            .get(&pod.namespace)
            .into_iter()
            .flat_map(|s| s.values())
        {
            let selects = selector
                .iter()
                .all(|(k, v)| pod.labels.get(k).is_some_and(|l| l == v));
            if selects {
                merged.extend(selector.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            }
        }
        let controller = pod
            .pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        let mut extra: Option<&LabelSelector> = None;
        if let Some(owner) = controller {
            let key = (pod.namespace.clone(), owner.name.clone());
            match (owner.api_version.as_str(), owner.kind.as_str()) {
                ("v1", "ReplicationController") => {
                    if let Some(rc) = self.replication_controllers.get(&key) {
                        merged.extend(rc.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                    }
                }
                ("apps/v1", "ReplicaSet") => extra = self.replica_sets.get(&key),
                ("apps/v1", "StatefulSet") => extra = self.stateful_sets.get(&key),
                _ => {}
            }
        }
        let mut selector = Selector::everything();
        for (k, v) in merged {
            selector.require(Requirement::In(k.to_string(), vec![v.to_string()]));
        }
        // An owner selector that does not parse adds nothing, as upstream's.
        if let Some(Ok(owner)) = extra.map(Selector::from_label_selector) {
            selector.extend(owner);
        }
        selector
    }
}

/// The process's index (see the module comment for why it is shared).
pub fn global() -> &'static Arc<RwLock<WorkloadIndex>> {
    static INDEX: OnceLock<Arc<RwLock<WorkloadIndex>>> = OnceLock::new();
    INDEX.get_or_init(Default::default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::testing::labels;
    use crate::framework::testing::pod;
    use serde_json::json;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        labels(pairs).into_iter().collect()
    }

    fn owned(kind: &str, api_version: &str, name: &str) -> Arc<PodInfo> {
        let mut p = (*pod(
            "p",
            &[
                ("app", "web"),
                ("tier", "front"),
                ("pod-template-hash", "h1"),
            ],
            json!({}),
        )
        .pod)
            .clone();
        p.metadata.owner_references = Some(vec![serde_json::from_value(json!({
            "apiVersion": api_version, "kind": kind, "name": name, "uid": "u", "controller": true,
        })).unwrap()]);
        Arc::new(PodInfo::new(Arc::new(p)))
    }

    #[test]
    fn nothing_selects_the_pod_so_the_selector_is_empty() {
        let index = WorkloadIndex::default();
        assert!(
            index
                .default_selector(&owned("ReplicaSet", "apps/v1", "rs"))
                .is_empty()
        );
    }

    #[test]
    fn services_and_the_controlling_replica_set_combine() {
        let mut index = WorkloadIndex::default();
        let ns = owned("ReplicaSet", "apps/v1", "rs").namespace.clone();
        index.set_service(&ns, "web", Some(map(&[("app", "web")])));
        index.set_service(&ns, "other", Some(map(&[("app", "db")])));
        index.set_service(&ns, "headless", None);
        index.set_replica_set(
            &ns,
            "rs",
            serde_json::from_value(json!({"matchLabels": {"pod-template-hash": "h1"}})).unwrap(),
        );
        let selector = index.default_selector(&owned("ReplicaSet", "apps/v1", "rs"));
        assert!(selector.matches(&labels(&[("app", "web"), ("pod-template-hash", "h1")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("pod-template-hash", "h2")])));
        assert!(!selector.matches(&labels(&[("app", "db"), ("pod-template-hash", "h1")])));
        // Only the controlling owner's kind and group count.
        let selector = index.default_selector(&owned("ReplicaSet", "extensions/v1beta1", "rs"));
        assert!(selector.matches(&labels(&[("app", "web"), ("pod-template-hash", "h2")])));
        index.remove(Kind::Service, &ns, "web");
        index.retain(Kind::ReplicaSet, &Default::default());
        assert!(
            index
                .default_selector(&owned("ReplicaSet", "apps/v1", "rs"))
                .is_empty()
        );
    }

    #[test]
    fn replication_controller_and_stateful_set_owners() {
        let mut index = WorkloadIndex::default();
        let ns = owned("StatefulSet", "apps/v1", "ss").namespace.clone();
        index.set_replication_controller(&ns, "rc", Some(map(&[("tier", "front")])));
        index.set_stateful_set(
            &ns,
            "ss",
            serde_json::from_value(json!({"matchExpressions": [
                {"key": "app", "operator": "In", "values": ["web", "api"]}]}))
            .unwrap(),
        );
        let rc = index.default_selector(&owned("ReplicationController", "v1", "rc"));
        assert!(rc.matches(&labels(&[("tier", "front")])) && !rc.matches(&labels(&[])));
        let ss = index.default_selector(&owned("StatefulSet", "apps/v1", "ss"));
        assert!(ss.matches(&labels(&[("app", "api")])) && !ss.matches(&labels(&[("app", "x")])));
    }
}
