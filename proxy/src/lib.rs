//! understudy-proxy's pure core: its configuration file, the service and
//! endpoint tracker, and the ruleset renderers. The binary (`main.rs`) wraps
//! these with IO.

pub mod config;
pub mod exec;
pub mod iptables;
pub mod proxier;
pub mod runner;
pub mod tracker;
