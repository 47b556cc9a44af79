//! `understudy-bench`: each understudy against its upstream counterpart on one
//! local control plane, in one run, with the same client QPS/burst. Never a
//! pass/fail test: it prints figures and ratios.

pub mod controllers;
pub mod procstat;
pub mod promtext;
pub mod scheduler;
