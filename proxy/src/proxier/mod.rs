//! The iptables proxier's IO around the pure core (upstream's
//! pkg/proxy/iptables Proxier.syncProxyRules): one sync renders the ruleset
//! from the tracker and hands it to ONE `iptables-restore --noflush
//! --counters`; a full sync first ensures the jumps from the built-in chains.
//! A failed restore loses the taken changes, so the next sync is full.

mod tool;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::config::KubeProxyConfiguration;
use crate::exec::Exec;
use crate::iptables::{
    CANARY_CHAIN, NodePortAddresses, NodePortDestinations, RenderOptions, SyncScope, jump_rules,
    render, save,
};
use crate::tracker::Tracker;
pub use tool::{Iptables, ToolError};

/// Upstream's FullSyncPeriod: partial syncs in between, a full one at least this often.
pub const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);

/// The tables the canary chain lives in (upstream's Monitor watches these).
pub const CANARY_TABLES: [&str; 3] = ["mangle", "nat", "filter"];

/// What the node's Node object says that the rules use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub ips: Vec<IpAddr>,
    pub pod_cidrs: Vec<IpNet>,
}

/// The outcome of one sync, for metrics and health.
#[derive(Clone, Debug, PartialEq)]
pub enum SyncOutcome {
    /// Services or EndpointSlices are not listed yet: nothing written.
    NotInitialized,
    Synced(SyncReport),
    Failed {
        full: bool,
        error: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct SyncReport {
    pub full: bool,
    pub duration: Duration,
    pub filter_rules: usize,
    pub nat_rules: usize,
    pub deleted_chains: usize,
}

pub struct Proxier<E> {
    pub tracker: Tracker,
    pub node: NodeInfo,
    config: KubeProxyConfiguration,
    iptables: Iptables<E>,
    services_synced: bool,
    slices_synced: bool,
    need_full_sync: bool,
    last_full_sync: Option<Instant>,
    conntrack_tcp_liberal: bool,
}

impl<E: Exec> Proxier<E> {
    pub fn new(config: KubeProxyConfiguration, tracker: Tracker, exec: E) -> Self {
        Proxier {
            tracker,
            node: NodeInfo::default(),
            config,
            iptables: Iptables { exec },
            services_synced: false,
            slices_synced: false,
            need_full_sync: true,
            last_full_sync: None,
            conntrack_tcp_liberal: false,
        }
    }

    pub fn config(&self) -> &KubeProxyConfiguration {
        &self.config
    }

    /// With nf_conntrack_tcp_be_liberal set, INVALID packets need not be dropped.
    pub fn set_conntrack_tcp_liberal(&mut self, liberal: bool) {
        self.conntrack_tcp_liberal = liberal;
    }

    pub fn set_services_synced(&mut self) {
        self.services_synced = true;
    }

    pub fn set_slices_synced(&mut self) {
        self.slices_synced = true;
    }

    /// The tables were flushed, or something else every rule depends on
    /// changed: rewrite everything next time.
    pub fn force_full_sync(&mut self) {
        self.need_full_sync = true;
    }

    fn render_options(&self) -> RenderOptions {
        let family = self.tracker.family();
        let mut options = RenderOptions::from_config(
            &self.config,
            family,
            self.node.ips.clone(),
            &self.node.pod_cidrs,
            self.node_port_destinations(),
        );
        options.conntrack_tcp_liberal = self.conntrack_tcp_liberal;
        options
    }

    /// nodePortAddresses resolved for the tracker's family, against the
    /// Node's own addresses (upstream reads the interfaces; the Node's
    /// addresses are what a hostNetwork pod can trust to be the node's, and
    /// what clients use) and loopback.
    fn node_port_destinations(&self) -> NodePortDestinations {
        NodePortAddresses::new(&self.config.node_port_addresses, self.tracker.family())
            .destinations(&self.node.ips)
    }

    /// One sync (upstream's syncProxyRules).
    pub fn sync(&mut self) -> SyncOutcome {
        if !(self.services_synced && self.slices_synced) {
            return SyncOutcome::NotInitialized;
        }
        let start = Instant::now();
        let changes = self.tracker.take_changes();
        let full = self.need_full_sync
            || changes.full_sync
            || self
                .last_full_sync
                .is_none_or(|at| at.elapsed() > FULL_SYNC_PERIOD);
        match self.write_rules(full, &changes.service_ports) {
            Ok(mut report) => {
                self.need_full_sync = false;
                if full {
                    self.last_full_sync = Some(Instant::now());
                }
                report.duration = start.elapsed();
                SyncOutcome::Synced(report)
            }
            Err(error) => {
                // The taken changes are gone: only a full sync is safe now.
                self.need_full_sync = true;
                SyncOutcome::Failed {
                    full,
                    error: error.to_string(),
                }
            }
        }
    }

    fn write_rules(
        &mut self,
        full: bool,
        changed: &BTreeSet<crate::tracker::ServicePortName>,
    ) -> Result<SyncReport, ToolError> {
        let options = self.render_options();
        if full {
            // Not part of the restore input, which would replace everyone
            // else's rules in PREROUTING, INPUT, …
            for rule in jump_rules(options.localhost_node_ports) {
                self.iptables.ensure_chain(rule.table, rule.to)?;
                self.iptables.ensure_jump(&rule)?;
            }
        }
        let existing = save::chains_in_table(&self.iptables.save("nat")?, "nat");
        let scope = if full {
            SyncScope::Full
        } else {
            SyncScope::Partial(changed)
        };
        let ruleset = render(&self.tracker, &options, scope, Some(&existing));
        self.iptables.restore(&ruleset.text)?;
        Ok(SyncReport {
            full,
            duration: Duration::ZERO,
            filter_rules: ruleset.filter_rules,
            nat_rules: ruleset.nat_rules,
            deleted_chains: ruleset.deleted_chains.len(),
        })
    }

    /// Creates the canary chain where missing. Returns whether every table
    /// still had it: a table that lost it was flushed by someone, and our
    /// rules with it.
    pub fn check_canaries(&self) -> Result<bool, ToolError> {
        let mut all_there = true;
        for table in CANARY_TABLES {
            if !self.iptables.chain_exists(table, CANARY_CHAIN)? {
                all_there = false;
                self.iptables.ensure_chain(table, CANARY_CHAIN)?;
            }
        }
        Ok(all_there)
    }
}

/// `--cleanup`: removes every jump into our chains, then our chains (the
/// canary too), leaving everything else as it was.
pub fn cleanup<E: Exec>(exec: E) -> Result<Vec<String>, ToolError> {
    let iptables = Iptables { exec };
    for rule in jump_rules(true) {
        // A chain never made has no jumps to delete.
        if iptables.chain_exists(rule.table, rule.to)? {
            iptables.delete_jump(&rule)?;
        }
    }
    let mut deleted = Vec::new();
    let mut text = String::new();
    for table in CANARY_TABLES {
        let ours: Vec<String> = save::chains_in_table(&iptables.save(table)?, table)
            .into_iter()
            .filter(|c| c.starts_with("US-"))
            .collect();
        if ours.is_empty() {
            continue;
        }
        // Declaring flushes each chain, so they no longer refer to one another.
        text.push_str(&format!("*{table}\n"));
        for chain in &ours {
            text.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for chain in &ours {
            text.push_str(&format!("-X {chain}\n"));
            deleted.push(format!("{table}/{chain}"));
        }
        text.push_str("COMMIT\n");
    }
    if !text.is_empty() {
        iptables.restore(&text)?;
    }
    Ok(deleted)
}
