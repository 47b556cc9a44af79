//! understudy-scheduler: a scheduler that places pods exactly where
//! kube-scheduler's rules allow, as a library so the binary, the extender API
//! and the correctness checker share one implementation.

pub mod framework;
pub mod plugins;
