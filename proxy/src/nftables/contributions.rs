//! What each service port added to the last transaction's sets, maps and
//! in-use chains, kept so a partial sync redoes only the changed ones.
//!
//! A partial sync still needs every element and every chain in use (to
//! diff the elements against the last transaction, and to tell stale
//! chains from live ones), but an unchanged service port's share is what it
//! was: working it out again (its endpoints categorized, its chain names
//! hashed, its keys formatted) was most of our partial sync at 10000
//! Services. A full sync works every share out and replaces the record; a
//! partial one only the changed ports', so a share is never older than the
//! tracker's last change to its service port.

use std::collections::{BTreeMap, BTreeSet};

use super::elements::{Element, Elements};
use super::service::State;
use crate::tracker::ServicePortName;

/// One service port's share.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contribution {
    elements: Vec<(&'static str, String, Element)>,
    chains: Vec<String>,
    sets: Vec<String>,
}

impl Contribution {
    /// What `own` (a state this service port alone wrote to) holds.
    pub(super) fn of(own: State) -> Self {
        Contribution {
            elements: (own.elements.iter())
                .map(|(container, key, element)| (container, key.clone(), element.clone()))
                .collect(),
            chains: own.active_chains.into_iter().collect(),
            sets: own.active_sets.into_iter().collect(),
        }
    }

    /// Adds this share to `state`, as writing the service port would.
    pub(super) fn add_to(&self, state: &mut State) {
        add_elements(&mut state.elements, &self.elements);
        add_names(&mut state.active_chains, &self.chains);
        add_names(&mut state.active_sets, &self.sets);
    }
}

fn add_elements(elements: &mut Elements, share: &[(&'static str, String, Element)]) {
    for (container, key, element) in share {
        elements.insert(
            container,
            key.clone(),
            element.value.clone(),
            element.comment.clone(),
        );
    }
}

fn add_names(names: &mut BTreeSet<String>, share: &[String]) {
    for name in share {
        names.insert(name.clone());
    }
}

/// Every service port's share in the last transaction rendered with them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contributions(pub(super) BTreeMap<ServicePortName, Contribution>);

impl Contributions {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
