//! The chaos run: a seeded churn workload on a lab cluster while faults are
//! injected on a schedule, with the cluster's invariants checked from the API
//! throughout and once everything should have converged (docs/CHAOS.md).

pub mod cast;
pub mod churn;
pub mod faults;
pub mod invariants;
pub mod netcut;
pub mod pods;
pub mod replicas;
pub mod report;
mod run;
pub mod traffic;

pub use run::{ChaosOptions, run, snapshot};
