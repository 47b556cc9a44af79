//! The nftables mode's writes (upstream's pkg/proxy/nftables
//! syncProxyRules): ONE `nft -f -` transaction per sync, built from the
//! tracker, our table's listing (full syncs) or our record of it (partial
//! ones) and the elements the last successful transaction left. Chains a
//! transaction flushed as unused are deleted at the start of a later sync's
//! transaction, once the kernel has let go of them (upstream's staleChains,
//! which upstream deletes in a transaction of its own).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::nft_tool::Nft;
use super::{NodeInfo, ToolError, Written};
use crate::config::KubeProxyConfiguration;
use crate::exec::Exec;
use crate::nftables::{
    Changes, Existing, Ledger, RenderOptions, SyncScope, delete_chains, render_changes,
    render_recording,
};
use crate::tracker::{IpFamily, ServicePortName, Tracker};

/// How long a flushed chain waits before it is deleted: before kernel 6.2
/// a chain stays busy for a moment after the map element pointing to it
/// went (upstream waits a second too).
pub const STALE_CHAIN_GRACE: Duration = Duration::from_secs(1);

pub struct NftablesBackend<E> {
    pub nft: Nft<E>,
    /// Unused chains already flushed, since when.
    stale_chains: BTreeMap<String, Instant>,
    /// What each service port put into our table, as the last successful
    /// transaction left it; none after a failure (the next sync is full).
    ledger: Option<Box<Ledger>>,
    pub stale_chain_grace: Duration,
    /// The base chains were made again once in this process.
    base_chains_recreated: bool,
    /// The ServiceCIDRs of the tracker's family: traffic to their
    /// unallocated ClusterIPs is dropped (none: no such rule).
    pub service_cidrs: Vec<IpNet>,
}

/// The outcome of one transaction, beyond success.
pub struct NftWrite {
    pub written: Written,
    /// Whether the transaction was full: a missing table or a failed stale
    /// chain deletion makes it so (as upstream).
    pub full: bool,
}

pub fn family_word(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "ip",
        IpFamily::V6 => "ip6",
    }
}

impl<E: Exec> NftablesBackend<E> {
    pub fn new(exec: E) -> Self {
        NftablesBackend {
            nft: Nft { exec },
            stale_chains: BTreeMap::new(),
            ledger: None,
            stale_chain_grace: STALE_CHAIN_GRACE,
            base_chains_recreated: false,
            service_cidrs: Vec::new(),
        }
    }

    pub fn write(
        &mut self,
        config: &KubeProxyConfiguration,
        tracker: &Tracker,
        node: &NodeInfo,
        full: bool,
        changed: &BTreeSet<ServicePortName>,
    ) -> Result<NftWrite, ToolError> {
        let start = Instant::now();
        let due: Vec<String> = (self.stale_chains.iter())
            .filter(|(_, at)| start.duration_since(**at) >= self.stale_chain_grace)
            .map(|(chain, _)| chain.clone())
            .collect();
        let attempt = self.transaction(config, tracker, node, full, changed, &due, start);
        if due.is_empty() {
            return attempt;
        }
        let Err(error) = attempt else {
            tracing::info!(chains = due.len(), "deleted stale nftables chains");
            return attempt;
        };
        // As upstream when the stale chains' deletion fails: a full sync,
        // without the deletion; still there, they are listed, flushed and
        // noted again.
        tracing::error!(%error, chains = due.len(), "deleting stale nftables chains; will retry later");
        let mut retried = self.transaction(config, tracker, node, true, changed, &[], start)?;
        if let Written::Nftables { cleanup_failed, .. } = &mut retried.written {
            *cleanup_failed = true;
        }
        Ok(retried)
    }

    /// One `nft -f -` run: the chains in `delete` (flushed by an earlier
    /// transaction, no longer referenced) deleted first, but those in use
    /// again, then the sync.
    /// A partial sync works from the ledger the last successful transaction
    /// left instead of listing our table (two `nft` runs, each as long as
    /// the transaction itself at 10000 Services) and of working out every
    /// service port again: only we write our table, and if something else
    /// changed it, the transaction fails, the ledger is dropped and the next
    /// sync is full and lists; a deleted or flushed table is caught by the
    /// table check. Without a ledger a sync is full.
    #[allow(clippy::too_many_arguments)]
    fn transaction(
        &mut self,
        config: &KubeProxyConfiguration,
        tracker: &Tracker,
        node: &NodeInfo,
        full: bool,
        changed: &BTreeSet<ServicePortName>,
        delete: &[String],
        start: Instant,
    ) -> Result<NftWrite, ToolError> {
        let family = tracker.family();
        let mut options = RenderOptions::from_config(
            config,
            family,
            &node.ips,
            &node.pod_cidrs,
            &node.interface_ips,
        );
        options.service_cidrs = self.service_cidrs.clone();
        let ledger = if full { None } else { self.ledger.take() };
        let (tx, ledger, keep, full) = match ledger {
            Some(ledger) => {
                let mut ledger = *ledger;
                let flushed: BTreeSet<String> = (self.stale_chains.keys())
                    .filter(|c| !delete.contains(c))
                    .cloned()
                    .collect();
                let tx = render_changes(tracker, &options, changed, &flushed, &mut ledger);
                (tx, ledger, true, false)
            }
            None => {
                let existing = match self.nft.list(family_word(family)) {
                    Ok(Some(mut existing)) => {
                        for chain in delete {
                            existing.chains.remove(chain);
                        }
                        Some(existing)
                    }
                    // Someone deleted our table: a full sync makes it again.
                    Ok(None) => Some(Existing::default()),
                    Err(error) => {
                        tracing::error!(%error, "listing our nftables table; stale chains stay this time");
                        None
                    }
                };
                let scope = SyncScope::Full {
                    recreate_base_chains: !self.base_chains_recreated,
                };
                let mut ledger = Ledger::default();
                let tx = render_recording(tracker, &options, scope, existing.as_ref(), &mut ledger);
                let tx = Changes {
                    text: tx.text,
                    stale_chains: tx.stale_chains,
                    deleted_sets: tx.deleted_sets,
                    rewritten: tx.rewritten,
                };
                // Without a listing, the stale chains are not known: the
                // next sync lists again.
                (tx, ledger, existing.is_some(), true)
            }
        };
        let text = with_deletions(family, delete, &ledger, tx.text);
        if !text.is_empty()
            && let Err(error) = self.nft.apply(&text)
        {
            // Nothing was flushed: the next (full) sync finds them again.
            self.stale_chains.clear();
            return Err(error);
        }
        self.base_chains_recreated |= full;
        self.stale_chains
            .retain(|chain, _| !delete.contains(chain) && !ledger.chain_in_use(chain));
        for chain in &tx.stale_chains {
            self.stale_chains.entry(chain.clone()).or_insert(start);
        }
        let written = Written::Nftables {
            rewritten_services: tx.rewritten,
            elements: ledger.element_count(),
            stale_chains: tx.stale_chains.len(),
            cleanup_failed: false,
        };
        self.ledger = keep.then(|| Box::new(ledger));
        Ok(NftWrite { written, full })
    }
}

/// `text` after deleting the chains in `delete`, but those in use again
/// (their service's rewrite made them anew).
fn with_deletions(family: IpFamily, delete: &[String], ledger: &Ledger, text: String) -> String {
    let delete: Vec<String> = (delete.iter())
        .filter(|c| !ledger.chain_in_use(c))
        .cloned()
        .collect();
    if delete.is_empty() {
        text
    } else {
        delete_chains(family, &delete) + &text
    }
}

/// Upstream's oldest kernel for the nftables mode (NFTablesKubeProxyKernelVersion):
/// the host's nft is assumed as new as its kernel, and an nft older than
/// 1.0.1 could be broken by the rules we write.
pub const MIN_KERNEL: (u32, u32) = (5, 13);

/// Upstream skips the kernel check when this is set to anything.
pub const SKIP_KERNEL_CHECK_ENV: &str = "KUBE_PROXY_NFTABLES_SKIP_KERNEL_VERSION_CHECK";

/// Checks `/proc/sys/kernel/osrelease`'s text (`6.1.0-18-amd64`) against [`MIN_KERNEL`].
pub fn check_kernel(release: &str) -> Result<(), String> {
    let mut numbers = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    match (numbers.next(), numbers.next()) {
        (Some(Ok(major)), Some(Ok(minor))) if (major, minor) >= MIN_KERNEL => Ok(()),
        (Some(Ok(_)), Some(Ok(_))) => Err(format!(
            "understudy-proxy in nftables mode requires kernel {}.{} or later (this is {}); \
             set {SKIP_KERNEL_CHECK_ENV} to skip this check",
            MIN_KERNEL.0,
            MIN_KERNEL.1,
            release.trim()
        )),
        _ => Err(format!(
            "could not check kernel version: {:?} is not one",
            release.trim()
        )),
    }
}

/// Deletes our table of each family that has one (upstream's
/// CleanupLeftovers). Returns `nftables FAMILY TABLE` per table.
pub fn cleanup<E: Exec>(nft: &Nft<E>) -> Result<Vec<String>, ToolError> {
    let families = nft.our_tables()?;
    let mut text = String::new();
    for family in &families {
        text.push_str(&format!(
            "delete table {family} {}\n",
            crate::nftables::TABLE
        ));
    }
    if !text.is_empty() {
        nft.apply(&text)?;
    }
    Ok(families
        .iter()
        .map(|f| format!("nftables {f} {}", crate::nftables::TABLE))
        .collect())
}
