//! The IPVS mode's writes (upstream's pkg/proxy/ipvs syncProxyRules): every
//! sync is full, as upstream's — the jumps from the built-in chains, then
//! the desired state of the whole tracker reconciled with what the kernel
//! holds ([`crate::ipvs::sync`]). Real servers that go are drained over
//! later syncs as the core's diff decides from the kernel's connection
//! counts; a failed IPVS operation is logged and retried by the next sync.
//! Start-up checks and node settings are here too; `run` calls them.

use super::iptables_tool::{Iptables, ToolError};
use super::{NodeInfo, Written};
use crate::config::KubeProxyConfiguration;
use crate::exec::Exec;
use crate::ipvs::cleanup::owned_services;
use crate::ipvs::netlink::{IpvsError, NetlinkIpvs};
use crate::ipvs::reconcile::BoxError;
use crate::ipvs::{Host, Ipvs, IpvsOptions, Operation, SyncError, desired_state, rules, system};
use crate::tracker::{IpFamily, Tracker};

pub struct IpvsBackend<E> {
    /// For the jumps from the built-in chains (not part of the restore
    /// input, which would replace everyone else's rules there).
    pub iptables: Iptables<E>,
    pub ipvs: Box<dyn Ipvs + Send>,
    pub host: Box<dyn Host + Send>,
}

#[derive(Debug, thiserror::Error)]
pub enum IpvsWriteError {
    #[error("linking our chains: {0}")]
    Jumps(#[from] ToolError),
    #[error("listing the node's addresses: {0}")]
    LocalAddresses(#[source] BoxError),
    #[error(transparent)]
    Sync(#[from] SyncError),
}

impl IpvsWriteError {
    /// Whether it was iptables-restore that failed: what upstream counts in
    /// kubeproxy_sync_proxy_rules_iptables_restore_failures_total.
    pub fn is_restore(&self) -> bool {
        matches!(self, IpvsWriteError::Sync(SyncError::Rules(_)))
    }
}

impl<E: Exec> IpvsBackend<E> {
    pub fn write(
        &mut self,
        config: &KubeProxyConfiguration,
        tracker: &Tracker,
        node: &NodeInfo,
    ) -> Result<Written, IpvsWriteError> {
        let family = tracker.family();
        // Upstream's createAndLinkKubeChain, on every sync.
        for rule in rules::jump_rules() {
            self.iptables.ensure_chain(rule.table, rule.to)?;
            self.iptables.ensure_jump(&rule)?;
        }
        let local = (self.host.local_addresses(family)).map_err(IpvsWriteError::LocalAddresses)?;
        let options = IpvsOptions::from_config(config, family, &node.ips, &node.pod_cidrs, local);
        let desired = desired_state(tracker, &options.desired);
        let report = crate::ipvs::sync(
            self.ipvs.as_mut(),
            self.host.as_mut(),
            &desired,
            &options.diff,
            &options.rules,
        )?;
        let draining = (report.applied.iter())
            .filter(|op| matches!(op, Operation::UpdateRealServer(_, rs) if rs.weight == 0))
            .count();
        Ok(Written::Ipvs {
            virtual_servers: desired.services.len(),
            applied: report.applied.len(),
            draining,
            failed: report.failed.len(),
        })
    }
}

/// What can be checked before anything is touched (upstream's
/// CanUseIPVSProxier, less its scheduler probe): a kernel with IPVS and what
/// goes with it, and ipset 6.0 or later. When IPVS is a module not loaded
/// yet, `modprobe -va ip_vs` loads it first, as upstream's IPVS handle does
/// (the chart mounts the host's /lib/modules for it); on a kernel without
/// it that changes nothing.
pub fn preflight<E: Exec>(exec: E) -> Result<(), String> {
    if !std::path::Path::new("/proc/net/ip_vs").exists() {
        let args = ["-va".to_string(), "ip_vs".to_string()];
        if let Ok(out) = exec.run("modprobe", &args, None) {
            tracing::debug!(code = ?out.code, stderr = out.stderr.trim(), "modprobe -va ip_vs");
        }
    }
    system::check_this_kernel().map_err(|e| e.to_string())?;
    let out = exec
        .run("ipset", &["--version".to_string()], None)
        .map_err(|e| format!("cannot run ipset (the IPVS mode needs it): {e}"))?;
    if !out.success() {
        return Err(format!(
            "error getting ipset version: `ipset --version` exited with {:?}: {}",
            out.code,
            out.stderr.trim()
        ));
    }
    system::check_ipset_version(&out.stdout)
}

/// Upstream's NewProxier set-up, on a kernel that passed [`preflight`]:
/// the scheduler can be used (a probe virtual server), then the sysctls
/// (`write_sysctl(path under /proc/sys, value)`; a failure is fatal, as
/// upstream). Returns the IPVS timeouts to set, when any is configured
/// (the caller logs their failure, as upstream).
pub fn prepare(
    ipvs: &mut dyn Ipvs,
    config: &KubeProxyConfiguration,
    kernel: (u32, u32),
    write_sysctl: &mut dyn FnMut(&str, u32) -> Result<(), String>,
) -> Result<Option<(u32, u32, u32)>, String> {
    system::probe_scheduler(ipvs, &config.ipvs.scheduler)?;
    for (path, value) in system::required_sysctls(config.ipvs.strict_arp, kernel) {
        write_sysctl(path, value)?;
    }
    // The timeouts do not depend on the family.
    let options = IpvsOptions::from_config(config, IpFamily::V4, &[], &[], Default::default());
    Ok(options.timeouts)
}

/// Deletes the IPVS mode's jumps from the built-in chains; our chains
/// themselves go with the iptables mode's cleanup (every `US-` chain), which
/// cannot delete a chain a jump still points to.
pub fn delete_jumps<E: Exec>(iptables: &Iptables<E>) -> Result<(), ToolError> {
    for rule in rules::jump_rules() {
        if iptables.chain_exists(rule.table, rule.to)? {
            iptables.delete_jump(&rule)?;
        }
    }
    Ok(())
}

/// The rest of the IPVS mode's leftovers, after [`delete_jumps`] and the
/// iptables cleanup: our virtual servers (those our sets name), the dummy
/// interface, the sets. Returns the servers and sets that were there, for
/// `--cleanup`'s listing.
pub fn cleanup_leftovers(
    ipvs: &mut dyn Ipvs,
    host: &mut dyn Host,
    family: IpFamily,
) -> Result<Vec<String>, String> {
    let sets = host.set_entries(family).unwrap_or_default();
    let servers = match ipvs.services() {
        Ok(servers) => owned_services(servers.iter().map(|s| &s.key), &sets),
        Err(_) => Vec::new(),
    };
    let errors = crate::ipvs::cleanup::cleanup(Some(ipvs), host, family);
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    let mut removed: Vec<String> = servers.iter().map(|k| format!("ipvs {k}")).collect();
    removed.extend(sets.keys().map(|s| format!("ipset {}", s.name(family))));
    Ok(removed)
}

/// The kernel's IPVS for the cleanup: none when the kernel has no IPVS
/// (upstream skips its IPVS cleanup then; nothing of ours can be there).
pub fn open_for_cleanup() -> Result<Option<NetlinkIpvs>, String> {
    match NetlinkIpvs::open() {
        Ok(ipvs) => Ok(Some(ipvs)),
        Err(IpvsError::Missing) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}
