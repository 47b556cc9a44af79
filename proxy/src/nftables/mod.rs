//! The nftables mode: upstream's pkg/proxy/nftables ruleset (its chains,
//! sets and verdict maps, by its names) in a table of our own,
//! `understudy-proxy`, in the `ip` and `ip6` families, so it can run beside
//! kube-proxy's `kube-proxy` table and either can delete only its own.

pub mod elements;
pub mod ledger;
pub mod names;
pub mod render;
mod service;
mod setup;
mod text;

#[cfg(test)]
mod render_tests;

pub use elements::Elements;
pub use ledger::Ledger;
pub use names::TABLE;
pub use render::{
    Changes, Existing, RenderOptions, SyncScope, Transaction, delete_chains, render,
    render_changes, render_recording,
};
