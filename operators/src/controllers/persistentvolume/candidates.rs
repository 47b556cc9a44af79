//! Which volumes a claim naming none could be given: the free ones and those
//! pre-bound to it, by name. A claim's match used to walk every volume under
//! the lock that keeps two syncs from picking one volume; once a backlog is
//! worked through most volumes are bound, and the walk (copies, version
//! parses, claimRef compares for thousands of volumes per claim) was most
//! of the binder's CPU and held the other claim workers up. The index is a
//! superset kept from each source of volumes (the informer, our own
//! writes): the match still takes the newest copy of each name and checks
//! it, so a stale entry costs a lookup, never a wrong match.
//!
//! Each source's index keeps its copy of every volume with its parsed
//! resourceVersion, and each group's names in order: the match merges the
//! two sources' sorted candidates with reference counts, where it used to
//! copy every candidate's name into a sorted set and look each up in both
//! sources by a newly built key — with a thousand free volumes, that copying
//! was half of the binder's CPU.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

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

/// One source's copy of a volume.
#[derive(Clone, Debug)]
pub struct VolumeCopy {
    pub name: Arc<str>,
    /// Its resourceVersion, parsed once; `None` (unparsable) is older than any.
    pub version: Option<u64>,
    pub volume: Arc<PersistentVolume>,
}

impl VolumeCopy {
    /// The newer of two copies of one volume; `self` on a tie.
    pub fn newer(self, other: VolumeCopy) -> VolumeCopy {
        if other.version > self.version {
            other
        } else {
            self
        }
    }
}

#[derive(Default)]
struct Groups {
    group_of: HashMap<Arc<str>, Group>,
    /// Each group's copies by name, so that a claim's candidates are read
    /// in order without a lookup each.
    members: HashMap<Group, BTreeMap<Arc<str>, VolumeCopy>>,
}

impl Groups {
    fn leave(&mut self, name: &str) -> Option<Arc<str>> {
        let old = self.group_of.remove(name)?;
        let members = self.members.get_mut(&old)?;
        let copy = members.remove(name);
        if members.is_empty() {
            self.members.remove(&old);
        }
        copy.map(|c| c.name)
    }
}

/// Volume names by what they can be matched to, for one source of volumes,
/// with that source's copy of each.
#[derive(Default)]
pub struct CandidateIndex {
    groups: Mutex<Groups>,
}

impl CandidateIndex {
    /// Keeps `volume` as this source's copy, filed under what it allows.
    pub fn update(&self, name: &str, volume: &Arc<PersistentVolume>) {
        let group = group_of(volume);
        let version = volume
            .metadata
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok());
        let mut groups = self.groups.lock().expect("candidate lock");
        let groups = &mut *groups;
        if groups.group_of.get(name) == Some(&group)
            && let Some(copy) = groups
                .members
                .get_mut(&group)
                .and_then(|members| members.get_mut(name))
        {
            copy.version = version;
            copy.volume = volume.clone();
            return;
        }
        let name = groups.leave(name).unwrap_or_else(|| Arc::from(name));
        let copy = VolumeCopy {
            name: name.clone(),
            version,
            volume: volume.clone(),
        };
        groups
            .members
            .entry(group.clone())
            .or_default()
            .insert(name.clone(), copy);
        groups.group_of.insert(name, group);
    }

    pub fn remove(&self, name: &str) {
        self.groups.lock().expect("candidate lock").leave(name);
    }

    /// This source's copies of the volumes free or pre-bound to `claim`, by
    /// name.
    pub fn candidates(&self, claim: &ObjectKey) -> Vec<VolumeCopy> {
        let groups = self.groups.lock().expect("candidate lock");
        let prebound = Group::PreBound(claim.to_string());
        let mut out: Vec<VolumeCopy> = vec![];
        for group in [&Group::Free, &prebound] {
            if let Some(members) = groups.members.get(group) {
                out.extend(members.values().cloned());
            }
        }
        if groups.members.contains_key(&prebound) {
            out.sort_by(|a, b| a.name.cmp(&b.name));
        }
        out
    }

    /// This source's copy of one volume, whatever its group.
    pub fn copy_of(&self, name: &str) -> Option<VolumeCopy> {
        let groups = self.groups.lock().expect("candidate lock");
        let group = groups.group_of.get(name)?;
        groups.members.get(group)?.get(name).cloned()
    }
}

/// The newest copy of each volume either source offers `claim`, by name,
/// and only those the informer still has (a volume it no longer has is
/// deleted, whatever our older copy says). A copy that is not a candidate
/// in one source may be the newer one: the caller checks each copy.
pub fn newest_candidates(
    informer: &CandidateIndex,
    ours: &CandidateIndex,
    claim: &ObjectKey,
) -> Vec<VolumeCopy> {
    let theirs = informer.candidates(claim);
    let mine = ours.candidates(claim);
    let mut out = Vec::with_capacity(theirs.len().max(mine.len()));
    let (mut a, mut b) = (theirs.into_iter().peekable(), mine.into_iter().peekable());
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => x.name.cmp(&y.name),
        };
        let newest = match order {
            Ordering::Equal => {
                let (x, y) = (a.next(), b.next());
                x.zip(y).map(|(x, y)| x.newer(y))
            }
            // Only the informer offers it: our copy, if newer, is not free.
            Ordering::Less => a.next().map(|x| match ours.copy_of(&x.name) {
                Some(y) => x.newer(y),
                None => x,
            }),
            // Only we offer it: the informer must still have it.
            Ordering::Greater => b
                .next()
                .and_then(|y| informer.copy_of(&y.name).map(|x| x.newer(y))),
        };
        out.extend(newest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn versioned(claim_ref: Option<(&str, &str)>, version: &str) -> Arc<PersistentVolume> {
        let claim_ref = claim_ref.map(|(ns, name)| json!({"namespace": ns, "name": name}));
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "v", "resourceVersion": version},
                "spec": {"claimRef": claim_ref},
            }))
            .unwrap(),
        )
    }

    fn volume(claim_ref: Option<(&str, &str)>) -> Arc<PersistentVolume> {
        versioned(claim_ref, "1")
    }

    fn names(copies: Vec<VolumeCopy>) -> Vec<String> {
        copies.iter().map(|c| c.name.to_string()).collect()
    }

    fn candidates(index: &CandidateIndex, ns: &str, name: &str) -> Vec<String> {
        names(index.candidates(&ObjectKey::new(ns, name)))
    }

    #[test]
    fn a_claim_sees_the_free_volumes_and_those_pre_bound_to_it() {
        let index = CandidateIndex::default();
        index.update("free", &volume(None));
        index.update("mine", &volume(Some(("ns", "a"))));
        index.update("theirs", &volume(Some(("ns", "b"))));
        index.update("other-ns", &volume(Some(("other", "a"))));
        index.update("a-free", &volume(None));
        assert_eq!(candidates(&index, "ns", "a"), ["a-free", "free", "mine"]);
        assert_eq!(candidates(&index, "ns", "b"), ["a-free", "free", "theirs"]);
        assert_eq!(candidates(&index, "ns", "c"), ["a-free", "free"]);
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
        assert!(index.groups.lock().unwrap().group_of.is_empty());
    }

    #[test]
    fn the_newest_copy_of_either_source_wins_and_the_informer_must_have_it() {
        let (informer, ours) = (CandidateIndex::default(), CandidateIndex::default());
        let claim = ObjectKey::new("ns", "c");
        let newest = |informer: &CandidateIndex, ours: &CandidateIndex| {
            newest_candidates(informer, ours, &claim)
                .into_iter()
                .map(|c| {
                    let v = c.volume.metadata.resource_version.clone().unwrap();
                    (c.name.to_string(), v)
                })
                .collect::<Vec<_>>()
        };
        // Free in both: the newer copy, the informer's on a tie.
        informer.update("both", &versioned(None, "5"));
        ours.update("both", &versioned(None, "7"));
        informer.update("tie", &versioned(None, "3"));
        ours.update("tie", &versioned(None, "3"));
        // We bound it (newer, not free): our copy comes out, for the caller to refuse.
        informer.update("taken", &versioned(None, "4"));
        ours.update("taken", &versioned(Some(("ns", "other")), "6"));
        // Our older copy is bound, the informer's newer one free.
        informer.update("freed", &versioned(None, "9"));
        ours.update("freed", &versioned(Some(("ns", "other")), "2"));
        // Gone from the informer: deleted, whatever our copy says.
        ours.update("deleted", &versioned(None, "8"));
        // Only the informer has it.
        informer.update("new", &versioned(None, "1"));
        // Free in our older copy; the informer's newer one is bound.
        informer.update("rebound", &versioned(Some(("ns", "other")), "5"));
        ours.update("rebound", &versioned(None, "2"));
        assert_eq!(
            newest(&informer, &ours),
            [
                ("both".to_string(), "7".to_string()),
                ("freed".into(), "9".into()),
                ("new".into(), "1".into()),
                ("rebound".into(), "5".into()),
                ("taken".into(), "6".into()),
                ("tie".into(), "3".into()),
            ]
        );
    }
}
