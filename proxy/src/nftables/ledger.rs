//! What each service port put into the last successful transaction: its set
//! and map elements, its chains and its affinity sets. A partial sync
//! rewrites the changed service ports and settles their part of the ledger,
//! so its cost follows the number of changes, not of Services: working out
//! every unchanged port's elements again (categorizing its endpoints,
//! hashing its chain names, formatting its keys) and diffing them against
//! the last transaction was a third of a partial sync at 10000 Services.
//!
//! The ledger gives exactly what a render of every service port would: an
//! element wanted by several ports (two Services sharing an external IP and
//! port, or a hairpin endpoint) holds the value of the last in name order,
//! as the render's later write wins; a chain or set is in use while any port
//! uses it.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::elements::Element;
use super::service::State;
use crate::tracker::ServicePortName;

/// A set or map element's address: the container's name and the key.
type ElementKey = (&'static str, String);

#[derive(Debug, Default)]
pub struct Ledger {
    shares: HashMap<Arc<ServicePortName>, Share>,
    /// Per element, the service ports that want it and what each wants,
    /// sorted by name; the last one's is in the kernel.
    owners: HashMap<ElementKey, Vec<(Arc<ServicePortName>, Element)>>,
    /// Chains in use, by how many service ports use them.
    chains: HashMap<String, u32>,
    /// Affinity sets in use, likewise.
    sets: HashMap<String, u32>,
}

/// One service port's part: names only, the elements' values are in
/// [`Ledger::owners`].
#[derive(Debug, Default)]
struct Share {
    elements: Vec<ElementKey>,
    chains: Vec<String>,
    sets: Vec<String>,
}

/// What settling some service ports changed, for the transaction to say.
#[derive(Debug, Default)]
pub struct Settled {
    /// Every element a settled port wanted before or wants now, with what
    /// the kernel held for it before.
    touched: BTreeMap<ElementKey, Option<Element>>,
    /// Chains and sets a settled port stopped using (some may be in use by
    /// another port, or by the same one again).
    released_chains: BTreeSet<String>,
    released_sets: BTreeSet<String>,
}

impl Ledger {
    /// Records `name`'s part of a transaction that wrote every service port
    /// (each port once, in any order).
    pub(super) fn record(&mut self, name: &ServicePortName, part: &State) {
        self.add(Arc::new(name.clone()), part);
    }

    /// Replaces `name`'s part with `part` (empty: the port is gone), noting
    /// in `settled` what the transaction must change.
    pub(super) fn settle(&mut self, name: &ServicePortName, part: &State, settled: &mut Settled) {
        let (name, old) = match self.shares.remove_entry(name) {
            Some((name, old)) => (name, old),
            None => (Arc::new(name.clone()), Share::default()),
        };
        let wanted_now = part.elements.iter().map(|(c, k, _)| (c, k));
        let wanted_before = old.elements.iter().map(|(c, k)| (*c, k));
        for (container, key) in wanted_before.chain(wanted_now) {
            if let Entry::Vacant(entry) = settled.touched.entry((container, key.clone())) {
                let before = self.effective(entry.key()).cloned();
                entry.insert(before);
            }
        }
        for element_key in old.elements {
            let owners = self.owners.get_mut(&element_key).expect("owned");
            owners.retain(|(owner, _)| *owner != name);
            if owners.is_empty() {
                self.owners.remove(&element_key);
            }
        }
        for chain in old.chains {
            release(&mut self.chains, &chain);
            settled.released_chains.insert(chain);
        }
        for set in old.sets {
            release(&mut self.sets, &set);
            settled.released_sets.insert(set);
        }
        self.add(name, part);
    }

    fn add(&mut self, name: Arc<ServicePortName>, part: &State) {
        if part.elements.is_empty() && part.active_chains.is_empty() && part.active_sets.is_empty()
        {
            return;
        }
        let mut share = Share::default();
        for (container, key, element) in part.elements.iter() {
            // Nearly every element has one owner: a default Vec would
            // reserve four (a few MiB at 10000 Services).
            let owners = (self.owners.entry((container, key.clone())))
                .or_insert_with(|| Vec::with_capacity(1));
            let at = owners.partition_point(|(owner, _)| **owner < *name);
            owners.insert(at, (name.clone(), element.clone()));
            share.elements.push((container, key.clone()));
        }
        for chain in &part.active_chains {
            *self.chains.entry(chain.clone()).or_default() += 1;
            share.chains.push(chain.clone());
        }
        for set in &part.active_sets {
            *self.sets.entry(set.clone()).or_default() += 1;
            share.sets.push(set.clone());
        }
        self.shares.insert(name, share);
    }

    fn effective(&self, key: &ElementKey) -> Option<&Element> {
        self.owners
            .get(key)
            .and_then(|owners| owners.last())
            .map(|(_, element)| element)
    }

    pub fn chain_in_use(&self, chain: &str) -> bool {
        self.chains.contains_key(chain)
    }

    pub fn set_in_use(&self, set: &str) -> bool {
        self.sets.contains_key(set)
    }

    /// How many elements our sets and maps hold.
    pub fn element_count(&self) -> usize {
        self.owners.len()
    }

    /// What `settled` asks of the kernel's elements: the keys to delete
    /// (gone, or whose value or comment changed), then the elements to add,
    /// each sorted by container and key.
    pub(super) fn element_changes<'a>(
        &'a self,
        settled: &'a Settled,
    ) -> (Vec<&'a ElementKey>, Vec<(&'a ElementKey, &'a Element)>) {
        let mut delete = Vec::new();
        let mut add = Vec::new();
        for (key, before) in &settled.touched {
            let now = self.effective(key);
            if before.is_some() && before.as_ref() != now {
                delete.push(key);
            }
            if let Some(now) = now
                && before.as_ref() != Some(now)
            {
                add.push((key, now));
            }
        }
        (delete, add)
    }
}

impl Settled {
    /// Chains a settled port stopped using that no port uses now.
    pub(super) fn unused_chains<'a>(
        &'a self,
        ledger: &'a Ledger,
    ) -> impl Iterator<Item = &'a String> {
        (self.released_chains.iter()).filter(|c| !ledger.chain_in_use(c))
    }

    /// Affinity sets a settled port stopped using that no port uses now.
    pub(super) fn unused_sets<'a>(
        &'a self,
        ledger: &'a Ledger,
    ) -> impl Iterator<Item = &'a String> {
        (self.released_sets.iter()).filter(|s| !ledger.set_in_use(s))
    }
}

fn release(counts: &mut HashMap<String, u32>, name: &str) {
    if let Some(count) = counts.get_mut(name) {
        *count -= 1;
        if *count == 0 {
            counts.remove(name);
        }
    }
}
