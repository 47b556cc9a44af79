//! The proxier: the IO around the pure core, shared by both modes
//! (upstream's syncProxyRules bookkeeping): one sync takes the tracker's
//! changes, decides full or partial, and has the mode's backend write them
//! in ONE transaction: `iptables-restore --noflush --counters` (iptables
//! mode) or `nft -f -` (nftables mode). A failed write loses the taken
//! changes, so the next sync is full.

mod iptables_backend;
mod iptables_tool;
mod nft_tool;
mod nftables_backend;

#[cfg(test)]
mod nftables_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::config::{KubeProxyConfiguration, ProxyMode};
use crate::exec::Exec;
use crate::tracker::{ServicePortName, Tracker};
pub use iptables_backend::{CANARY_TABLES, IptablesBackend};
pub use iptables_tool::{Iptables, ToolError};
pub use nft_tool::Nft;
pub use nftables_backend::{
    NftablesBackend, SKIP_KERNEL_CHECK_ENV, STALE_CHAIN_GRACE, check_kernel,
};

/// Upstream's FullSyncPeriod: partial syncs in between, a full one at least this often.
pub const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);

/// What the node's Node object says that the rules use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub ips: Vec<IpAddr>,
    pub pod_cidrs: Vec<IpNet>,
}

/// The outcome of one sync, for metrics and health (and whatever must
/// follow a successful one).
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
    /// Service ports whose service info or endpoints changed since the
    /// previous successful sync (all of them are in the rules now).
    pub changed: BTreeSet<ServicePortName>,
    pub written: Written,
}

/// What the mode's transaction wrote, for its metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    Iptables {
        filter_rules: usize,
        nat_rules: usize,
        deleted_chains: usize,
    },
    Nftables {
        /// Service ports whose chains were (re)written.
        rewritten_services: usize,
        /// Elements in our sets and maps.
        elements: usize,
        /// Unused chains flushed (deleted at a later sync).
        stale_chains: usize,
        /// Deleting earlier stale chains failed (retried later).
        cleanup_failed: bool,
    },
}

/// The mode's writer.
pub enum Backend<E> {
    Iptables(IptablesBackend<E>),
    Nftables(NftablesBackend<E>),
}

pub struct Proxier<E> {
    pub tracker: Tracker,
    pub node: NodeInfo,
    config: KubeProxyConfiguration,
    pub backend: Backend<E>,
    services_synced: bool,
    slices_synced: bool,
    need_full_sync: bool,
    last_full_sync: Option<Instant>,
}

impl<E: Exec> Proxier<E> {
    /// A proxier of the configuration's mode (IPVS is refused before this:
    /// it would get the iptables one).
    pub fn new(config: KubeProxyConfiguration, tracker: Tracker, exec: E) -> Self {
        let backend = match config.mode {
            ProxyMode::Nftables => Backend::Nftables(NftablesBackend::new(exec)),
            ProxyMode::Iptables | ProxyMode::Ipvs => Backend::Iptables(IptablesBackend {
                iptables: Iptables { exec },
                conntrack_tcp_liberal: false,
            }),
        };
        Proxier {
            tracker,
            node: NodeInfo::default(),
            config,
            backend,
            services_synced: false,
            slices_synced: false,
            need_full_sync: true,
            last_full_sync: None,
        }
    }

    pub fn config(&self) -> &KubeProxyConfiguration {
        &self.config
    }

    /// What runs the mode's tools.
    pub fn exec(&self) -> &E {
        match &self.backend {
            Backend::Iptables(b) => &b.iptables.exec,
            Backend::Nftables(b) => &b.nft.exec,
        }
    }

    /// With nf_conntrack_tcp_be_liberal set, INVALID packets need not be
    /// dropped (the iptables mode's rule; the nftables mode has none).
    pub fn set_conntrack_tcp_liberal(&mut self, liberal: bool) {
        if let Backend::Iptables(b) = &mut self.backend {
            b.conntrack_tcp_liberal = liberal;
        }
    }

    /// The cluster's ServiceCIDRs (every family). The nftables mode drops
    /// traffic to their unallocated addresses, from the next full sync on
    /// (as upstream, which rewrites that rule only then); the iptables mode
    /// has no such rule.
    pub fn set_service_cidrs(&mut self, cidrs: &[IpNet]) {
        let family = self.tracker.family();
        if let Backend::Nftables(b) = &mut self.backend {
            b.service_cidrs = cidrs
                .iter()
                .filter(|c| crate::tracker::IpFamily::of(&c.addr()) == family)
                .copied()
                .collect();
        }
    }

    pub fn set_services_synced(&mut self) {
        self.services_synced = true;
    }

    pub fn set_slices_synced(&mut self) {
        self.slices_synced = true;
    }

    /// The rules were flushed, or something else every rule depends on
    /// changed: rewrite everything next time.
    pub fn force_full_sync(&mut self) {
        self.need_full_sync = true;
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
        let written = match &mut self.backend {
            Backend::Iptables(b) => b
                .write(
                    &self.config,
                    &self.tracker,
                    &self.node,
                    full,
                    &changes.service_ports,
                )
                .map(|w| (w, full)),
            Backend::Nftables(b) => b
                .write(
                    &self.config,
                    &self.tracker,
                    &self.node,
                    full,
                    &changes.service_ports,
                )
                .map(|w| (w.written, w.full)),
        };
        match written {
            Ok((written, full)) => {
                self.need_full_sync = false;
                if full {
                    self.last_full_sync = Some(Instant::now());
                }
                SyncOutcome::Synced(SyncReport {
                    full,
                    duration: start.elapsed(),
                    changed: changes.service_ports,
                    written,
                })
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

    /// Whether our rules are still in place: the iptables canary chains
    /// (created where missing), or our nftables table. False means someone
    /// flushed them: a full sync is due.
    pub fn check_intact(&self) -> Result<bool, ToolError> {
        match &self.backend {
            Backend::Iptables(b) => b.check_canaries(),
            Backend::Nftables(b) => b.check_table(self.tracker.family()),
        }
    }
}

/// A tool that is not installed has nothing of ours to remove.
fn tolerate_missing(result: Result<Vec<String>, ToolError>) -> Result<Vec<String>, ToolError> {
    match result {
        Err(ToolError::Spawn { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(Vec::new())
        }
        other => other,
    }
}

/// Our iptables chains and the jumps into them (`table/chain` per chain).
pub fn cleanup_iptables<E: Exec>(exec: E) -> Result<Vec<String>, ToolError> {
    tolerate_missing(iptables_backend::cleanup(&Iptables { exec }))
}

/// Our nftables tables (`nftables FAMILY TABLE` per table).
pub fn cleanup_nftables<E: Exec>(exec: E) -> Result<Vec<String>, ToolError> {
    tolerate_missing(nftables_backend::cleanup(&Nft { exec }))
}

/// `--cleanup`: everything of ours in either mode (upstream's
/// CleanupLeftovers of every mode), everyone else's left as it was.
pub fn cleanup<E: Exec>(exec: E) -> Result<Vec<String>, ToolError> {
    let mut removed = cleanup_iptables(&exec)?;
    removed.extend(cleanup_nftables(&exec)?);
    Ok(removed)
}

/// At startup, as upstream's platformCleanup: whatever the other mode left
/// (a node switched modes) would otherwise keep answering beside ours.
pub fn cleanup_other_mode<E: Exec>(mode: ProxyMode, exec: E) -> Result<Vec<String>, ToolError> {
    match mode {
        ProxyMode::Nftables => cleanup_iptables(exec),
        ProxyMode::Iptables | ProxyMode::Ipvs => cleanup_nftables(exec),
    }
}
