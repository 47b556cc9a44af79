//! understudy-proxy: a pure core (its configuration file, the service and
//! endpoint tracker, the ruleset renderers) and the thin IO around it (the
//! proxier running the iptables tools, the sync runner, the watches, health
//! and metrics as kube-proxy's).

pub mod config;
pub mod conntrack;
pub mod exec;
pub mod health;
pub mod iptables;
pub mod ipvs;
pub mod metrics;
pub mod nftables;
pub mod proxier;
pub mod run;
pub mod runner;
pub mod service_health;
pub mod tracker;
pub mod watch;
