//! Which volumes a claim naming none could be given: the free ones and those
//! pre-bound to it, by name. A claim's match used to walk every volume under
//! the lock that keeps two syncs from picking one volume; once a backlog is
//! worked through most volumes are bound, and the walk (copies, version
//! parses, claimRef compares for thousands of volumes per claim) was most
//! of the binder's CPU and held the other claim workers up. The index is a
//! superset kept from each source of volumes (the informer, our own
//! writes): the match still takes the newest copy of each name and checks
//! it, so a stale entry costs a lookup, never a wrong match.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::PersistentVolume;

use crate::key::ObjectKey;

/// What a volume can be matched to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Group {
    /// No claimRef: any claim.
    Free,
    /// claimRef to this claim (`namespace/name`): only that claim.
    PreBound(String),
}

fn group_of(volume: &PersistentVolume) -> Group {
    match volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
        None => Group::Free,
        Some(claim_ref) => Group::PreBound(
            ObjectKey::new(
                claim_ref.namespace.clone().unwrap_or_default(),
                claim_ref.name.clone().unwrap_or_default(),
            )
            .to_string(),
        ),
    }
}

#[derive(Default)]
struct Groups {
    group_of: HashMap<String, Group>,
    members: HashMap<Group, HashSet<String>>,
}

impl Groups {
    fn leave(&mut self, name: &str) {
        if let Some(old) = self.group_of.remove(name)
            && let Some(members) = self.members.get_mut(&old)
        {
            members.remove(name);
            if members.is_empty() {
                self.members.remove(&old);
            }
        }
    }
}

/// Volume names by what they can be matched to, for one source of volumes.
#[derive(Default)]
pub struct CandidateIndex {
    groups: Mutex<Groups>,
}

impl CandidateIndex {
    /// Files the volume under what its current copy allows.
    pub fn update(&self, name: &str, volume: &PersistentVolume) {
        let group = group_of(volume);
        let mut groups = self.groups.lock().expect("candidate lock");
        if groups.group_of.get(name) == Some(&group) {
            return;
        }
        groups.leave(name);
        groups
            .members
            .entry(group.clone())
            .or_default()
            .insert(name.to_string());
        groups.group_of.insert(name.to_string(), group);
    }

    pub fn remove(&self, name: &str) {
        self.groups.lock().expect("candidate lock").leave(name);
    }

    /// Adds to `into` the names of the volumes free or pre-bound to `claim`.
    pub fn collect(&self, claim: &ObjectKey, into: &mut BTreeSet<String>) {
        let groups = self.groups.lock().expect("candidate lock");
        let prebound = Group::PreBound(claim.to_string());
        for group in [&Group::Free, &prebound] {
            if let Some(members) = groups.members.get(group) {
                into.extend(members.iter().cloned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn volume(claim_ref: Option<(&str, &str)>) -> PersistentVolume {
        let claim_ref = claim_ref.map(|(ns, name)| json!({"namespace": ns, "name": name}));
        serde_json::from_value(json!({"metadata": {"name": "v"}, "spec": {"claimRef": claim_ref}}))
            .unwrap()
    }

    fn candidates(index: &CandidateIndex, ns: &str, name: &str) -> Vec<String> {
        let mut out = BTreeSet::new();
        index.collect(&ObjectKey::new(ns, name), &mut out);
        out.into_iter().collect()
    }

    #[test]
    fn a_claim_sees_the_free_volumes_and_those_pre_bound_to_it() {
        let index = CandidateIndex::default();
        index.update("free", &volume(None));
        index.update("mine", &volume(Some(("ns", "a"))));
        index.update("theirs", &volume(Some(("ns", "b"))));
        index.update("other-ns", &volume(Some(("other", "a"))));
        assert_eq!(candidates(&index, "ns", "a"), ["free", "mine"]);
        assert_eq!(candidates(&index, "ns", "b"), ["free", "theirs"]);
        assert_eq!(candidates(&index, "ns", "c"), ["free"]);
    }

    #[test]
    fn a_volume_moves_with_its_copies_and_leaves_when_deleted() {
        let index = CandidateIndex::default();
        index.update("v", &volume(None));
        index.update("v", &volume(Some(("ns", "a"))));
        assert_eq!(candidates(&index, "ns", "c"), Vec::<String>::new());
        assert_eq!(candidates(&index, "ns", "a"), ["v"]);
        index.update("v", &volume(None));
        assert_eq!(candidates(&index, "ns", "c"), ["v"]);
        index.remove("v");
        assert_eq!(candidates(&index, "ns", "c"), Vec::<String>::new());
        assert!(index.groups.lock().unwrap().members.is_empty());
    }
}
