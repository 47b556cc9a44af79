//! The proxier: the IO around the pure core, shared by every mode
//! (upstream's syncProxyRules bookkeeping): one sync takes the tracker's
//! changes, decides full or partial, and has the mode's backend write them
//! in ONE transaction: `iptables-restore --noflush --counters` (iptables
//! mode) or `nft -f -` (nftables mode). A failed write loses the taken
//! changes, so the next sync is full. The IPVS mode reconciles the whole
//! state on every sync (as upstream's, which has no partial syncs).

mod iptables_backend;
mod iptables_tool;
pub mod ipvs_backend;
mod nft_tool;
mod nftables_backend;

#[cfg(test)]
mod ipvs_tests;
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
use crate::tracker::{IpFamily, ServicePortName, Tracker};
pub use iptables_backend::{CANARY_TABLES, IptablesBackend, check_canaries};
pub use iptables_tool::{Iptables, ToolError};
pub use ipvs_backend::IpvsBackend;
pub use nft_tool::Nft;
pub use nftables_backend::{
    NftablesBackend, SKIP_KERNEL_CHECK_ENV, STALE_CHAIN_GRACE, check_kernel, family_word,
};

/// Upstream's FullSyncPeriod: partial syncs in between, a full one at least this often.
pub const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);

/// What the node's Node object says that the rules use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub ips: Vec<IpAddr>,
    pub pod_cidrs: Vec<IpNet>,
    /// The addresses of the node's interfaces (the proxy runs in the
    /// node's network namespace), read before each sync: what
    /// `nodePortAddresses` CIDRs pick from, as upstream.
    pub interface_ips: Vec<IpAddr>,
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
        /// The mode's rule write itself failed (iptables-restore, nft):
        /// what the mode's failure counter counts. In IPVS mode an ipset or
        /// IPVS read failure is not one, as upstream.
        restore: bool,
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
    Ipvs {
        /// Virtual servers wanted.
        virtual_servers: usize,
        /// Operations applied (IPVS, dummy-interface addresses, set entries).
        applied: usize,
        /// Real servers set to weight 0 this sync, to drain before deletion.
        draining: usize,
        /// Operations that failed; the next sync tries them again.
        failed: usize,
    },
}

/// The mode's writer.
pub enum Backend<E> {
    Iptables(IptablesBackend<E>),
    Nftables(NftablesBackend<E>),
    Ipvs(IpvsBackend<E>),
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
    /// A proxier of the configuration's mode, iptables or nftables. The
    /// IPVS backend holds the kernel's IPVS as well: it is made by the
    /// caller and given to [`Proxier::with_backend`].
    pub fn new(config: KubeProxyConfiguration, tracker: Tracker, exec: E) -> Self {
        let family = tracker.family();
        let backend = match config.mode {
            ProxyMode::Nftables => Backend::Nftables(NftablesBackend::new(exec)),
            ProxyMode::Iptables => Backend::Iptables(IptablesBackend {
                iptables: Iptables { exec, family },
                conntrack_tcp_liberal: false,
                last_cleanup: None,
                fixed_chains: None,
                parts: Default::default(),
            }),
            ProxyMode::Ipvs => panic!("the IPVS proxier is made with Proxier::with_backend"),
        };
        Self::with_backend(config, tracker, backend)
    }

    pub fn with_backend(
        config: KubeProxyConfiguration,
        tracker: Tracker,
        backend: Backend<E>,
    ) -> Self {
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
            Backend::Ipvs(b) => &b.iptables.exec,
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
        let full = matches!(self.backend, Backend::Ipvs(_))
            || self.need_full_sync
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
                .map(|w| (w, full))
                .map_err(|e| (true, e.to_string())),
            Backend::Nftables(b) => b
                .write(
                    &self.config,
                    &self.tracker,
                    &self.node,
                    full,
                    &changes.service_ports,
                )
                .map(|w| (w.written, w.full))
                .map_err(|e| (true, e.to_string())),
            Backend::Ipvs(b) => b
                .write(&self.config, &self.tracker, &self.node)
                .map(|w| (w, true))
                .map_err(|e| (e.is_restore(), e.to_string())),
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
            Err((restore, error)) => {
                // The taken changes are gone: only a full sync is safe now.
                self.need_full_sync = true;
                SyncOutcome::Failed {
                    full,
                    error,
                    restore,
                }
            }
        }
    }

    /// Whether our rules are still in place: the iptables canary chains
    /// (created where missing), or our nftables table. False means someone
    /// flushed them: a full sync is due. The IPVS mode has nothing to check:
    /// each of its syncs rewrites everything, at least every syncPeriod
    /// (upstream's IPVS proxier has no monitor either).
    pub fn check_intact(&self) -> Result<bool, ToolError> {
        self.intact_check_with(|exec| exec).run()
    }

    /// The check, with tool handles whose runner `exec` makes from ours.
    fn intact_check_with<'a, X: Exec>(&'a self, exec: impl Fn(&'a E) -> X) -> IntactCheck<X> {
        match &self.backend {
            Backend::Iptables(b) => IntactCheck::Iptables(Iptables {
                exec: exec(&b.iptables.exec),
                family: b.iptables.family,
            }),
            Backend::Nftables(b) => IntactCheck::Nftables(
                Nft {
                    exec: exec(&b.nft.exec),
                },
                self.tracker.family(),
            ),
            Backend::Ipvs(_) => IntactCheck::Nothing,
        }
    }
}

/// [`Proxier::check_intact`] taken out of the proxier, to run without its
/// lock: the check lists our rules (seconds for the nftables table of 10000
/// Services), and a sync held up behind it would program its changes that
/// much later. Upstream's iptables monitor runs beside its syncs too.
pub enum IntactCheck<E> {
    Iptables(Iptables<E>),
    Nftables(Nft<E>, IpFamily),
    Nothing,
}

impl<E: Exec> IntactCheck<E> {
    pub fn run(&self) -> Result<bool, ToolError> {
        match self {
            IntactCheck::Iptables(iptables) => check_canaries(iptables),
            IntactCheck::Nftables(nft, family) => nft.intact(family_word(*family)),
            IntactCheck::Nothing => Ok(true),
        }
    }
}

impl<E: Exec + Clone> Proxier<E> {
    pub fn intact_check(&self) -> IntactCheck<E> {
        self.intact_check_with(E::clone)
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

/// Our iptables chains and the jumps into them, of both families
/// (`table/chain` per chain, `ip6tables table/chain` for IPv6's), as
/// upstream cleans up with both families' tools. A family the kernel or the
/// node's tools lack has nothing of ours.
pub fn cleanup_iptables<E: Exec>(exec: E) -> Result<Vec<String>, ToolError> {
    let mut removed = tolerate_missing(iptables_backend::cleanup(&Iptables::v4(&exec)))?;
    let v6 = Iptables {
        exec: &exec,
        family: IpFamily::V6,
    };
    match tolerate_missing(iptables_backend::cleanup(&v6)) {
        Ok(chains) => removed.extend(chains.into_iter().map(|c| format!("ip6tables {c}"))),
        // As upstream, which cleans only with the families whose tools
        // work: a node without IPv6's netfilter must still clean IPv4's.
        Err(error) => tracing::warn!(%error, "cleaning up IPv6's iptables rules"),
    }
    Ok(removed)
}

/// Our nftables tables (`nftables FAMILY TABLE` per table).
pub fn cleanup_nftables<E: Exec>(exec: E) -> Result<Vec<String>, ToolError> {
    tolerate_missing(nftables_backend::cleanup(&Nft { exec }))
}

/// The iptables-based modes' leftovers (upstream cleans both together):
/// the IPVS mode's jumps first, since the iptables mode's cleanup deletes
/// every `US-` chain (the IPVS mode's too) and cannot delete one a jump
/// still points to; then the IPVS mode's virtual servers, dummy interface
/// and sets (skipped without `ipvs`: on a kernel without IPVS, as upstream;
/// [`ipvs_backend::open_for_cleanup`] opens it in this thread's network
/// namespace).
pub fn cleanup_iptables_based<E: Exec>(
    exec: E,
    ipvs: Option<&mut dyn crate::ipvs::Ipvs>,
) -> Result<Vec<String>, String> {
    let iptables = Iptables::v4(&exec);
    tolerate_missing(ipvs_backend::delete_jumps(&iptables).map(|()| Vec::new()))
        .map_err(|e| e.to_string())?;
    // IPv6's, best-effort as in cleanup_iptables: a node may lack its tools.
    let ip6tables = Iptables {
        exec: &exec,
        family: IpFamily::V6,
    };
    if let Err(error) = tolerate_missing(ipvs_backend::delete_jumps(&ip6tables).map(|()| vec![])) {
        tracing::warn!(%error, "removing the IPVS mode's IPv6 jumps");
    }
    let mut removed = cleanup_iptables(&exec).map_err(|e| e.to_string())?;
    if let Some(ipvs) = ipvs {
        let mut host = crate::ipvs::host::ToolHost::new(&exec);
        // IPv6's virtual servers and sets first: IPv4's cleanup deletes the
        // dummy interface both families' addresses are on.
        match ipvs_backend::cleanup_leftovers(&mut *ipvs, &mut host, IpFamily::V6) {
            Ok(gone) => removed.extend(gone),
            Err(error) => tracing::warn!(%error, "removing the IPVS mode's IPv6 leftovers"),
        }
        removed.extend(ipvs_backend::cleanup_leftovers(
            ipvs,
            &mut host,
            IpFamily::V4,
        )?);
    }
    Ok(removed)
}

/// `--cleanup`: everything of ours in every mode (upstream's
/// CleanupLeftovers of every mode), everyone else's left as it was.
pub fn cleanup<E: Exec>(
    exec: E,
    ipvs: Option<&mut dyn crate::ipvs::Ipvs>,
) -> Result<Vec<String>, String> {
    let mut removed = cleanup_iptables_based(&exec, ipvs)?;
    removed.extend(cleanup_nftables(&exec).map_err(|e| e.to_string())?);
    Ok(removed)
}

/// At startup, as upstream's platformCleanup: whatever another mode left
/// (a node switched modes) would otherwise keep answering beside ours. As
/// upstream, the iptables and IPVS modes (both iptables-based, sharing
/// chain names) clean only the nftables mode's; the nftables mode cleans
/// both of theirs.
/// `ipvs` is used by the nftables mode only.
pub fn cleanup_other_mode<E: Exec>(
    mode: ProxyMode,
    exec: E,
    ipvs: Option<&mut dyn crate::ipvs::Ipvs>,
) -> Result<Vec<String>, String> {
    match mode {
        ProxyMode::Nftables => cleanup_iptables_based(exec, ipvs),
        ProxyMode::Iptables | ProxyMode::Ipvs => cleanup_nftables(exec).map_err(|e| e.to_string()),
    }
}
