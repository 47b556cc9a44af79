//! The iptables mode: upstream's pkg/proxy/iptables ruleset with our own
//! chain prefix (`US-` for `KUBE-`), so both can sit on one host and either
//! can clean up only its own chains.

pub mod chains;
pub mod local;
pub mod nodeports;
pub mod render;
pub mod save;
pub mod unchanged;

#[cfg(test)]
mod render_tests;

pub use chains::{CANARY_CHAIN, JumpRule, jump_rules};
pub use local::LocalDetector;
pub use nodeports::{NodePortAddresses, localhost_node_ports};
pub use render::{
    NodePortDestinations, Parts, RenderOptions, Ruleset, SyncScope, is_large_cluster, render,
    render_cached,
};
