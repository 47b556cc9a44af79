//! The elements of our sets and verdict maps: what a sync wants, and what
//! the last successful transaction left in the kernel, so a partial sync
//! writes only the difference (upstream's nftElementStorage, kept from our
//! own transactions instead of read back from the kernel: a full sync
//! flushes every container and writes them whole, so after any successful
//! sync this is exactly the kernel's content).

use std::collections::BTreeMap;

/// One element: its value (maps only) and comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub value: Option<String>,
    pub comment: Option<String>,
}

/// Per set or map, its elements by key (`a . b . c`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Elements(BTreeMap<&'static str, BTreeMap<String, Element>>);

impl Elements {
    /// A set element.
    pub fn add_key(&mut self, container: &'static str, key: String) {
        self.insert(container, key, None, None);
    }

    /// A map element; a later one for the same key wins.
    pub fn insert(
        &mut self,
        container: &'static str,
        key: String,
        value: Option<String>,
        comment: Option<String>,
    ) {
        self.0
            .entry(container)
            .or_default()
            .insert(key, Element { value, comment });
    }

    pub fn get(&self, container: &str) -> Option<&BTreeMap<String, Element>> {
        self.0.get(container)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &String, &Element)> {
        self.0
            .iter()
            .flat_map(|(c, elements)| elements.iter().map(move |(k, e)| (*c, k, e)))
    }

    pub fn len(&self) -> usize {
        self.0.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What turns `self` into `wanted`: the keys to delete (gone, or whose
    /// value or comment changed) and the elements to add.
    pub fn diff<'a>(&'a self, wanted: &'a Elements) -> ElementDiff<'a> {
        let mut diff = ElementDiff::default();
        for (container, key, element) in self.iter() {
            if wanted.get(container).and_then(|c| c.get(key)) != Some(element) {
                diff.delete.push((container, key));
            }
        }
        for (container, key, element) in wanted.iter() {
            if self.get(container).and_then(|c| c.get(key)) != Some(element) {
                diff.add.push((container, key, element));
            }
        }
        diff
    }
}

#[derive(Debug, Default)]
pub struct ElementDiff<'a> {
    pub delete: Vec<(&'static str, &'a String)>,
    pub add: Vec<(&'static str, &'a String, &'a Element)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_deletes_gone_and_changed_and_adds_new_and_changed() {
        let mut before = Elements::default();
        before.insert("m", "a".into(), Some("drop".into()), None);
        before.insert("m", "b".into(), Some("drop".into()), None);
        before.add_key("s", "x".into());
        let mut after = Elements::default();
        after.insert("m", "a".into(), Some("drop".into()), None);
        after.insert("m", "b".into(), Some("goto c".into()), None);
        after.add_key("s", "y".into());
        let diff = before.diff(&after);
        let deleted: Vec<_> = diff
            .delete
            .iter()
            .map(|(c, k)| format!("{c}/{k}"))
            .collect();
        assert_eq!(deleted, ["m/b", "s/x"]);
        let added: Vec<_> = diff
            .add
            .iter()
            .map(|(c, k, _)| format!("{c}/{k}"))
            .collect();
        assert_eq!(added, ["m/b", "s/y"]);
        assert!(after.diff(&after).add.is_empty());
    }
}
