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
use crate::nftables::{Elements, Existing, RenderOptions, SyncScope, delete_chains, render};
use crate::tracker::{IpFamily, ServicePortName, Tracker};

/// How long a flushed chain waits before it is deleted: before kernel 6.2
/// a chain stays busy for a moment after the map element pointing to it
/// went (upstream waits a second too).
pub const STALE_CHAIN_GRACE: Duration = Duration::from_secs(1);

pub struct NftablesBackend<E> {
    pub nft: Nft<E>,
    /// What the last successful transaction left in our sets and maps.
    elements: Elements,
    /// Unused chains already flushed, since when.
    stale_chains: BTreeMap<String, Instant>,
    /// Our table's per-service chains and affinity sets as the last
    /// successful transaction left them; none after a failure.
    record: Option<Existing>,
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
            elements: Elements::default(),
            stale_chains: BTreeMap::new(),
            record: None,
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
    /// A partial sync takes our table's chains and sets from the record the
    /// last successful transaction left instead of listing them (two `nft`
    /// runs, each as long as the transaction itself at 10000 Services):
    /// only we write our table, and if something else changed it, the
    /// transaction fails, the record is dropped and the next sync is full
    /// and lists; a deleted or flushed table is caught by the table check.
    #[allow(clippy::too_many_arguments)]
    fn transaction(
        &mut self,
        config: &KubeProxyConfiguration,
        tracker: &Tracker,
        node: &NodeInfo,
        mut full: bool,
        changed: &BTreeSet<ServicePortName>,
        delete: &[String],
        start: Instant,
    ) -> Result<NftWrite, ToolError> {
        let family = tracker.family();
        let recorded = if full { None } else { self.record.take() };
        let mut existing = match recorded {
            Some(record) => Some(record),
            None => match self.nft.list(family_word(family)) {
                Ok(Some(existing)) => Some(existing),
                Ok(None) => {
                    // Someone deleted our table: only a full sync makes it again.
                    full = true;
                    Some(Existing::default())
                }
                Err(error) => {
                    tracing::error!(%error, "listing our nftables table; stale chains stay this time");
                    None
                }
            },
        };
        if let Some(existing) = existing.as_mut() {
            for chain in delete {
                existing.chains.remove(chain);
            }
        }

        let mut options = RenderOptions::from_config(
            config,
            family,
            &node.ips,
            &node.pod_cidrs,
            &node.interface_ips,
        );
        options.service_cidrs = self.service_cidrs.clone();
        let scope = if full {
            SyncScope::Full {
                recreate_base_chains: !self.base_chains_recreated,
            }
        } else {
            SyncScope::Partial {
                changed,
                previous: &self.elements,
            }
        };
        let tx = render(tracker, &options, scope, existing.as_ref());
        // A chain in use again is kept (its service's rewrite made it anew).
        let delete: Vec<String> = (delete.iter())
            .filter(|c| !tx.active_chains.contains(*c))
            .cloned()
            .collect();
        let text = if delete.is_empty() {
            tx.text
        } else {
            delete_chains(family, &delete) + &tx.text
        };
        if !text.is_empty()
            && let Err(error) = self.nft.apply(&text)
        {
            // Nothing was flushed: the next (full) sync finds them again.
            self.stale_chains.clear();
            return Err(error);
        }
        self.base_chains_recreated |= full;
        for chain in tx.active_chains.iter().chain(&delete) {
            self.stale_chains.remove(chain);
        }
        for chain in &tx.stale_chains {
            self.stale_chains.entry(chain.clone()).or_insert(start);
        }
        // Without a listing, what this transaction left is not known.
        self.record = existing.map(|_| Existing {
            chains: (tx.active_chains.iter())
                .chain(self.stale_chains.keys())
                .cloned()
                .collect(),
            sets: tx.active_sets,
        });
        let written = Written::Nftables {
            rewritten_services: tx.rewritten,
            elements: tx.elements.len(),
            stale_chains: tx.stale_chains.len(),
            cleanup_failed: false,
        };
        self.elements = tx.elements;
        Ok(NftWrite { written, full })
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
