//! understudy-scheduler: a scheduler that places pods exactly where
//! kube-scheduler's rules allow, as a library so the binary, the extender API
//! and the correctness checker share one implementation.

pub mod cache;
pub mod checker;
pub mod config;
pub mod extender;
pub mod extender_client;
pub mod framework;
pub mod informers;
pub mod metrics;
pub mod plugins;
pub mod preemption;
pub mod profile;
pub mod queue;
pub mod queueing_hints;
pub mod scheduler;
pub mod scheduling;
pub mod workloads;
