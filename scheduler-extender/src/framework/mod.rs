//! The scheduling framework: data model, extension points and their runner.

pub mod cycle_state;
#[cfg(test)]
pub mod fake_api;
pub mod handle;
pub mod labels;
pub mod plugin;
pub mod quantity;
pub mod resources;
pub mod status;
pub mod testing;
pub mod types;

pub use cycle_state::CycleState;
pub use handle::Handle;
pub use plugin::*;
pub use status::{Code, Status};
pub use types::{AffinityTerm, NodeInfo, PodInfo, Snapshot, VolumeIndex};
