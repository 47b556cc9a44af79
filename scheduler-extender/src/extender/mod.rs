//! The scheduler-extender HTTP API (kube-scheduler's `extenders:`), served
//! from this scheduler's own cache and plugins, so an upstream kube-scheduler
//! can ask us to filter, prioritize, preempt and bind.
//!
//! - [`types`]: the `k8s.io/kube-scheduler/extender/v1` wire types and a
//!   decoder with Go's case-insensitive field matching.
//! - [`decide`]: the verbs' decisions, pure functions over a snapshot.
//! - [`server`]: the axum router over a [`server::Backend`], and serving it
//!   (plain or TLS).
//! - [`validate`]: what the apiserver would have refused in a request's Pod.
//! - [`backend`]: the [`server::Backend`] over a running scheduler.

pub mod backend;
pub mod decide;
#[cfg(test)]
mod fuzz_tests;
pub mod server;
pub mod types;
pub mod validate;

pub use backend::SchedulerBackend;
pub use server::{
    Backend, BodyLimit, DEFAULT_BODY_LIMIT, DEFAULT_READ_TIMEOUT, Failure, Limits, Verb, router,
    router_with_limits, serve, tls_config,
};

/// The extender API's well-known port (upstream's has none; DESIGN.md puts it
/// next to the scheduler's 10359).
pub const DEFAULT_PORT: u16 = 10360;
