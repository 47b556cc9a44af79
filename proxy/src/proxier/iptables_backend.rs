//! The iptables mode's writes (upstream's pkg/proxy/iptables
//! syncProxyRules): the jumps from the built-in chains on a full sync, then
//! ONE `iptables-restore --noflush --counters` of the rendered ruleset (a
//! partial sync without the fixed chains it would leave as they are).

use std::collections::BTreeSet;
use std::time::Instant;

use super::iptables_tool::{Iptables, ToolError};
use super::{NodeInfo, Written};
use crate::config::KubeProxyConfiguration;
use crate::exec::Exec;
use crate::iptables::unchanged::{FixedChains, fixed_chains, omit_unchanged};
use crate::iptables::{
    CANARY_CHAIN, NodePortAddresses, Parts, RenderOptions, SyncScope, is_large_cluster, jump_rules,
    render_cached, save,
};
use crate::tracker::{ServicePortName, Tracker};

/// The tables the canary chain lives in (upstream's Monitor watches these).
pub const CANARY_TABLES: [&str; 3] = ["mangle", "nat", "filter"];

pub struct IptablesBackend<E> {
    pub iptables: Iptables<E>,
    pub conntrack_tcp_liberal: bool,
    /// When the nat table was last read back for stale chains.
    pub last_cleanup: Option<Instant>,
    /// The fixed chains' rules as the last successful restore left them;
    /// none after a failure (the next sync is full and writes them all).
    pub fixed_chains: Option<FixedChains>,
    /// Each service port's part of the top-level chains, from the last
    /// render (a partial sync works out only the changed ports').
    pub parts: Parts,
}

impl<E: Exec> IptablesBackend<E> {
    fn render_options(
        &self,
        config: &KubeProxyConfiguration,
        tracker: &Tracker,
        node: &NodeInfo,
    ) -> RenderOptions {
        let family = tracker.family();
        let destinations = NodePortAddresses::new(&config.node_port_addresses, family)
            .destinations(&node.ips, &node.interface_ips);
        let mut options = RenderOptions::from_config(
            config,
            family,
            node.ips.clone(),
            &node.pod_cidrs,
            destinations,
        );
        options.conntrack_tcp_liberal = self.conntrack_tcp_liberal;
        options
    }

    pub fn write(
        &mut self,
        config: &KubeProxyConfiguration,
        tracker: &Tracker,
        node: &NodeInfo,
        full: bool,
        changed: &BTreeSet<ServicePortName>,
    ) -> Result<Written, ToolError> {
        let options = self.render_options(config, tracker, node);
        if full {
            // Not part of the restore input, which would replace everyone
            // else's rules in PREROUTING, INPUT, …
            for rule in jump_rules(options.localhost_node_ports) {
                self.iptables.ensure_chain(rule.table, rule.to)?;
                self.iptables.ensure_jump(&rule)?;
            }
        }
        // `iptables-save` of a large table takes long: as upstream, large
        // clusters look for stale chains (harmless, unreferenced) at most
        // once a sync period.
        let existing = if !is_large_cluster(tracker)
            || self
                .last_cleanup
                .is_none_or(|at| at.elapsed() > config.iptables.sync_period)
        {
            let chains = save::chains_in_table(&self.iptables.save("nat")?, "nat");
            self.last_cleanup = Some(Instant::now());
            Some(chains)
        } else {
            None
        };
        let scope = if full {
            SyncScope::Full
        } else {
            SyncScope::Partial(changed)
        };
        let ruleset = render_cached(tracker, &options, scope, existing.as_ref(), &mut self.parts);
        let fixed = fixed_chains(&ruleset.text);
        let previous = self.fixed_chains.take().filter(|_| !full);
        let text = match &previous {
            Some(previous) => omit_unchanged(&ruleset.text, &fixed, previous),
            None => ruleset.text,
        };
        if !text.is_empty() {
            self.iptables.restore(&text)?;
        }
        self.fixed_chains = Some(fixed);
        Ok(Written::Iptables {
            filter_rules: ruleset.filter_rules,
            nat_rules: ruleset.nat_rules,
            deleted_chains: ruleset.deleted_chains.len(),
        })
    }
}

/// Creates the canary chain where missing. Returns whether every table
/// still had it: a table that lost it was flushed by someone, and our rules
/// with it.
pub fn check_canaries<E: Exec>(iptables: &Iptables<E>) -> Result<bool, ToolError> {
    let mut all_there = true;
    for table in CANARY_TABLES {
        if !iptables.chain_exists(table, CANARY_CHAIN)? {
            all_there = false;
            iptables.ensure_chain(table, CANARY_CHAIN)?;
        }
    }
    Ok(all_there)
}

/// Removes every jump into our chains, then our chains (the canary too),
/// leaving everything else as it was. Returns `table/chain` per chain.
pub fn cleanup<E: Exec>(iptables: &Iptables<E>) -> Result<Vec<String>, ToolError> {
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
