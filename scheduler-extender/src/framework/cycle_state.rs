//! Per-scheduling-cycle scratch space shared by a pod's plugins (upstream's
//! CycleState): PreFilter/PreScore write, Filter/Score read, and preemption's
//! dry runs work on clones.

use rustc_hash::{FxHashMap, FxHashSet};
use std::any::Any;

/// Data a plugin keeps in the cycle state; cloneable so preemption can try
/// removing pods without disturbing the real cycle.
pub trait StateData: Any + Send + Sync {
    fn clone_box(&self) -> Box<dyn StateData>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Clone + Send + Sync> StateData for T {
    fn clone_box(&self) -> Box<dyn StateData> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[derive(Default)]
pub struct CycleState {
    // Fx, not SipHash: every Filter and Score call on every node looks its
    // state up by a constant key, thousands of lookups per pod.
    data: FxHashMap<&'static str, Box<dyn StateData>>,
    /// Plugins whose PreFilter returned Skip: their Filter is not run.
    pub skip_filter: FxHashSet<&'static str>,
    /// Plugins whose PreScore returned Skip: their Score is not run.
    pub skip_score: FxHashSet<&'static str>,
    /// Plugins whose PreFilter narrowed the candidate nodes.
    pub narrowing: Vec<&'static str>,
}

impl Clone for CycleState {
    fn clone(&self) -> Self {
        Self {
            data: self
                .data
                .iter()
                .map(|(k, v)| (*k, v.as_ref().clone_box()))
                .collect(),
            skip_filter: self.skip_filter.clone(),
            skip_score: self.skip_score.clone(),
            narrowing: self.narrowing.clone(),
        }
    }
}

impl CycleState {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn write<T: Any + Clone + Send + Sync>(&mut self, key: &'static str, value: T) {
        self.data.insert(key, Box::new(value));
    }

    pub fn read<T: Any>(&self, key: &'static str) -> Option<&T> {
        self.data
            .get(key)
            .and_then(|v| v.as_ref().as_any().downcast_ref())
    }

    pub fn read_mut<T: Any>(&mut self, key: &'static str) -> Option<&mut T> {
        self.data
            .get_mut(key)
            .and_then(|v| v.as_mut().as_any_mut().downcast_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_read_write_and_independent_clones() {
        let mut state = CycleState::new();
        state.write("counts", vec![1, 2, 3]);
        assert_eq!(state.read::<Vec<i32>>("counts"), Some(&vec![1, 2, 3]));
        assert_eq!(
            state.read::<String>("counts"),
            None,
            "wrong type reads nothing"
        );
        let mut copy = state.clone();
        copy.read_mut::<Vec<i32>>("counts").unwrap().push(4);
        assert_eq!(state.read::<Vec<i32>>("counts").unwrap().len(), 3);
        assert_eq!(copy.read::<Vec<i32>>("counts").unwrap().len(), 4);
    }
}
