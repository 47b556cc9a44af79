//! Stale conntrack flows of UDP Services (upstream's pkg/proxy/conntrack).
//!
//! UDP has no connection to end: a conntrack entry DNATed to an endpoint that
//! is gone keeps every later datagram of that flow going to the dead address
//! for as long as the client keeps sending (each packet refreshes the
//! timeout), and an entry made while the Service had no endpoint keeps its
//! packets out of the new DNAT rules. So after a sync that wrote rules for
//! changed UDP endpoints, the proxy lists the family's conntrack table and
//! deletes the UDP flows aimed at a Service frontend that are not answered by
//! one of its serving endpoints ([`stale_flows`] decides, [`Conntrack`] does
//! the IO, [`clean_stale_entries`] ties them together).

mod netlink;
mod stale;
pub mod sysctls;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use netlink::{NetlinkConntrack, NetlinkError};
pub use stale::stale_flows;

use crate::metrics::Metrics;
use crate::tracker::{IpFamily, Tracker};

/// IANA protocol numbers conntrack reports.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_SCTP: u8 = 132;

/// One direction of a flow. Protocols without ports (ICMP, …) read as port 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowTuple {
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

/// One conntrack entry, as much of it as the cleanup needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// IANA protocol number of the original direction.
    pub protocol: u8,
    /// As the client sent it (`--orig-src`, `--orig-dst`, …): the
    /// destination is the Service frontend.
    pub original: FlowTuple,
    /// As the answer comes back (`--reply-src`, …): after DNAT the source is
    /// the endpoint.
    pub reply: FlowTuple,
    /// The kernel's id of this very entry (CTA_ID): deleting with it never
    /// removes a newer entry that reuses the tuple.
    pub id: Option<u32>,
    /// The conntrack zone (CTA_ZONE), needed to find the entry again.
    pub zone: Option<u16>,
}

/// A listing that may be incomplete: the table changed while it was dumped
/// and retries did not get a clean copy (upstream goes on with such a
/// partial result too).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub flows: Vec<Flow>,
    pub interrupted: bool,
}

/// The conntrack table of one network namespace.
pub trait Conntrack {
    type Error: std::error::Error;

    /// Every entry of `family`.
    fn list(&self, family: IpFamily) -> Result<Listing, Self::Error>;

    /// Deletes these entries, returning how many were deleted; entries that
    /// are already gone are not errors. On error the count so far is
    /// returned with it.
    fn delete(&self, family: IpFamily, flows: &[&Flow]) -> Result<usize, (usize, Self::Error)>;
}

/// What one cleanup did, once the table was listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CleanupReport {
    /// Entries deleted.
    pub deleted: usize,
    pub duration: Duration,
    /// Why deleting stopped short, if it did.
    pub error: Option<String>,
}

/// After a successful sync (any mode): when the synced changes touched UDP
/// endpoints, the cleanup, counted in kube-proxy's conntrack reconciler
/// metrics. Upstream runs it at the end of syncProxyRules on the same
/// condition.
pub fn after_sync<C: Conntrack>(conntrack: &C, tracker: &mut Tracker, metrics: &Metrics) {
    if !tracker.take_conntrack_cleanup() {
        return;
    }
    if let Ok(report) = clean_stale_entries(conntrack, tracker) {
        metrics.conntrack_reconciled(report.deleted, report.duration);
    }
}

/// Upstream's CleanStaleEntries: lists `tracker`'s family, deletes the stale
/// UDP flows, and logs as upstream (progress at debug, failures at error).
/// `Err` when the table could not be listed (nothing was deleted then).
pub fn clean_stale_entries<C: Conntrack>(
    conntrack: &C,
    tracker: &Tracker,
) -> Result<CleanupReport, String> {
    let start = Instant::now();
    let family = tracker.family();
    tracing::debug!(
        ip_family = family.address_type(),
        "started to reconcile conntrack entries"
    );
    let listing = conntrack.list(family).map_err(|error| {
        tracing::error!(%error, "failed to list conntrack entries");
        error.to_string()
    })?;
    if listing.interrupted {
        tracing::debug!("received a partial conntrack listing, continuing to clean with it");
    }
    let stale = stale_flows(tracker, &listing.flows);
    for flow in &stale {
        tracing::trace!(?flow, "deleting conntrack entry");
    }
    let (deleted, error) = if stale.is_empty() {
        (0, None)
    } else {
        match conntrack.delete(family, &stale) {
            Ok(n) => (n, None),
            Err((n, e)) => (n, Some(e.to_string())),
        }
    };
    let duration = start.elapsed();
    match &error {
        Some(error) => tracing::error!(
            ip_family = family.address_type(),
            entries_deleted = deleted,
            took = ?duration,
            %error,
            "failed to clear all conntrack entries"
        ),
        None => tracing::debug!(
            ip_family = family.address_type(),
            entries_deleted = deleted,
            took = ?duration,
            "finished reconciling conntrack entries"
        ),
    }
    Ok(CleanupReport {
        deleted,
        duration,
        error,
    })
}

#[cfg(test)]
mod tests;
