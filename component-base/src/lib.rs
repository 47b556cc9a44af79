//! The shared runtime of every Understudy binary, in the role k8s.io/component-base
//! plays upstream: structured logging, one HTTP server for `/metrics` and the health
//! endpoints, a rate-limited API client, Lease leader election, graceful shutdown
//! and an Events recorder. [`component::run`] wires them together so a binary only
//! supplies its work loop.

pub mod cli;
pub mod client;
pub mod component;
pub mod events;
pub mod fence;
pub mod health;
pub mod leader;
pub mod logging;
pub mod server;
pub mod shutdown;

pub use cli::CommonArgs;
pub use component::{Component, ComponentContext, run};
pub use health::Health;
