//! One IPVS-mode sync: read what the kernel holds, diff it against the
//! desired state, apply the operations — IPVS changes through [`Ipvs`], the
//! dummy interface, ipsets and iptables through [`Host`] — in upstream's
//! phases: new addresses, virtual and real servers; then the ipsets and the
//! iptables rules that match them; then whatever goes away.
//!
//! A failed operation is logged and reported and the sync goes on, as
//! upstream's; the next sync retries it, since the diff is taken afresh. A
//! failure to read the kernel's state or to restore the sets or rules ends
//! the sync with an error.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::desired::Desired;
use super::diff::{Current, CurrentService, DiffOptions, Operation, diff};
use super::ipsets::{Set, SetChanges, SetEntries, restore_text};
use super::model::{RealServerState, ServiceKey, VirtualServer};
use super::netlink::{IpvsError, IpvsMessage, NetlinkIpvs};
use super::rules::{RuleOptions, render};
use crate::tracker::IpFamily;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The kernel's IPVS table.
pub trait Ipvs {
    fn services(&mut self) -> Result<Vec<VirtualServer>, BoxError>;
    fn real_servers(&mut self, key: &ServiceKey) -> Result<Vec<RealServerState>, BoxError>;
    /// One of the IPVS operations (services and real servers).
    fn apply(&mut self, operation: &Operation) -> Result<(), BoxError>;
}

/// The rest of the node the mode writes to.
pub trait Host {
    /// The dummy interface's addresses of the family, creating the
    /// interface when it is missing.
    fn dummy_addresses(&mut self, family: IpFamily) -> Result<BTreeSet<IpAddr>, BoxError>;
    /// The family's addresses on every other interface, less loopback and
    /// IPv6 link-local ones (upstream's GetAllLocalAddressesExcept).
    fn local_addresses(&mut self, family: IpFamily) -> Result<BTreeSet<IpAddr>, BoxError>;
    fn add_address(&mut self, address: IpAddr) -> Result<(), BoxError>;
    fn remove_address(&mut self, address: IpAddr) -> Result<(), BoxError>;
    /// Our sets' entries (sets not there yet are left out).
    fn set_entries(&mut self, family: IpFamily) -> Result<SetEntries, BoxError>;
    /// Deletes the dummy interface, with its addresses (cleanup).
    fn delete_interface(&mut self) -> Result<(), BoxError>;
    /// Destroys one of our sets if it exists (cleanup, after the rules).
    fn destroy_set(&mut self, set: Set, family: IpFamily) -> Result<(), BoxError>;
    /// Runs `ipset -exist restore` on the text.
    fn restore_sets(&mut self, text: &str) -> Result<(), BoxError>;
    /// Runs `iptables-restore --noflush --counters` (ip6tables- for IPv6).
    fn restore_rules(&mut self, family: IpFamily, text: &str) -> Result<(), BoxError>;
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("cannot read the IPVS table: {0}")]
    ReadIpvs(#[source] BoxError),
    #[error("cannot read the dummy interface or ipsets: {0}")]
    ReadHost(#[source] BoxError),
    #[error("ipset restore failed: {0}")]
    Sets(#[source] BoxError),
    #[error("iptables-restore failed: {0}")]
    Rules(#[source] BoxError),
}

#[derive(Debug, Default)]
pub struct SyncReport {
    pub applied: Vec<Operation>,
    /// Operations that failed, with why; the next sync retries them.
    pub failed: Vec<(Operation, String)>,
}

/// The kernel's state as the diff needs it: every virtual server, real
/// servers only for those that are wanted (the others are deleted whole).
pub fn read_current(
    ipvs: &mut dyn Ipvs,
    host: &mut dyn Host,
    desired: &Desired,
    family: IpFamily,
) -> Result<Current, SyncError> {
    let mut current = Current::default();
    for server in ipvs.services().map_err(SyncError::ReadIpvs)? {
        let real_servers = if desired.services.contains_key(&server.key) {
            ipvs.real_servers(&server.key)
                .map_err(SyncError::ReadIpvs)?
        } else {
            Vec::new()
        };
        current.services.insert(
            server.key,
            CurrentService {
                server,
                real_servers,
            },
        );
    }
    current.dummy_addresses = host.dummy_addresses(family).map_err(SyncError::ReadHost)?;
    current.sets = host.set_entries(family).map_err(SyncError::ReadHost)?;
    Ok(current)
}

pub fn sync(
    ipvs: &mut dyn Ipvs,
    host: &mut dyn Host,
    desired: &Desired,
    diff_options: &DiffOptions,
    rule_options: &RuleOptions,
) -> Result<SyncReport, SyncError> {
    let family = diff_options.family;
    let current = read_current(ipvs, host, desired, family)?;
    let operations = diff(desired, &current, diff_options);
    let mut report = SyncReport::default();

    let is_set_op = |op: &Operation| matches!(op, Operation::SetAdd(..) | Operation::SetDel(..));
    let first_set = operations.iter().position(is_set_op);
    let first_removal = (operations.iter())
        .position(is_removal)
        .unwrap_or(operations.len());
    let phase_one_end = first_set.unwrap_or(first_removal).min(first_removal);

    for op in &operations[..phase_one_end] {
        apply_one(ipvs, host, op, &mut report);
    }

    let mut changes = SetChanges::default();
    for op in operations.iter().filter(|op| is_set_op(op)) {
        match op {
            Operation::SetAdd(set, entry) => {
                changes.add.entry(*set).or_default().insert(entry.clone())
            }
            Operation::SetDel(set, entry) => {
                changes.del.entry(*set).or_default().insert(entry.clone())
            }
            _ => unreachable!("only set operations"),
        };
    }
    // Every set is (re)created even without changes: the rules below
    // reference them all.
    host.restore_sets(&restore_text(family, &changes))
        .map_err(SyncError::Sets)?;
    report
        .applied
        .extend(operations.iter().filter(|op| is_set_op(op)).cloned());
    host.restore_rules(family, &render(desired, rule_options))
        .map_err(SyncError::Rules)?;

    for op in operations[phase_one_end..]
        .iter()
        .filter(|op| !is_set_op(op))
    {
        apply_one(ipvs, host, op, &mut report);
    }
    Ok(report)
}

fn is_removal(op: &Operation) -> bool {
    matches!(
        op,
        Operation::DeleteService(_) | Operation::RemoveAddress(_) | Operation::DeleteRealServer(..)
    ) || matches!(op, Operation::UpdateRealServer(_, rs) if rs.weight == 0)
}

fn apply_one(ipvs: &mut dyn Ipvs, host: &mut dyn Host, op: &Operation, report: &mut SyncReport) {
    let result = match op {
        Operation::AddAddress(ip) => host.add_address(*ip),
        Operation::RemoveAddress(ip) => host.remove_address(*ip),
        _ => ipvs.apply(op),
    };
    match result {
        Ok(()) => report.applied.push(op.clone()),
        Err(error) => {
            tracing::error!(operation = ?op, %error, "IPVS sync operation failed");
            report.failed.push((op.clone(), error.to_string()));
        }
    }
}

impl Ipvs for NetlinkIpvs {
    fn services(&mut self) -> Result<Vec<VirtualServer>, BoxError> {
        Ok(NetlinkIpvs::services(self)?)
    }

    fn real_servers(&mut self, key: &ServiceKey) -> Result<Vec<RealServerState>, BoxError> {
        Ok(NetlinkIpvs::real_servers(self, key)?)
    }

    fn apply(&mut self, operation: &Operation) -> Result<(), BoxError> {
        let (message, what) = match operation {
            Operation::AddService(s) => (IpvsMessage::new_service(s), format!("add {}", s.key)),
            Operation::UpdateService(s) => {
                (IpvsMessage::set_service(s), format!("update {}", s.key))
            }
            Operation::DeleteService(k) => (IpvsMessage::del_service(k), format!("delete {k}")),
            Operation::AddRealServer(k, rs) => (
                IpvsMessage::new_dest(k, rs),
                format!("add {} to {k}", rs.address),
            ),
            Operation::UpdateRealServer(k, rs) => (
                IpvsMessage::set_dest(k, rs),
                format!("weight {} for {} of {k}", rs.weight, rs.address),
            ),
            Operation::DeleteRealServer(k, address) => (
                IpvsMessage::del_dest(k, *address),
                format!("delete {address} from {k}"),
            ),
            other => {
                return Err(format!("not an IPVS operation: {other:?}").into());
            }
        };
        self.change(message, &what)
            .map_err(|e: IpvsError| Box::new(e) as BoxError)
    }
}

#[cfg(test)]
pub mod fake {
    //! In-memory stand-ins that hold state as the kernel would, and can be
    //! told to fail chosen operations.

    use super::*;

    #[derive(Debug, Default)]
    pub struct FakeIpvs {
        pub state: Current,
        /// Operations whose Debug text contains one of these fail.
        pub failing: Vec<String>,
    }

    impl Ipvs for FakeIpvs {
        fn services(&mut self) -> Result<Vec<VirtualServer>, BoxError> {
            Ok(self
                .state
                .services
                .values()
                .map(|s| s.server.clone())
                .collect())
        }

        fn real_servers(&mut self, key: &ServiceKey) -> Result<Vec<RealServerState>, BoxError> {
            Ok(self
                .state
                .services
                .get(key)
                .map(|s| s.real_servers.clone())
                .unwrap_or_default())
        }

        fn apply(&mut self, operation: &Operation) -> Result<(), BoxError> {
            let text = format!("{operation:?}");
            if self.failing.iter().any(|f| text.contains(f.as_str())) {
                return Err(format!("refused: {text}").into());
            }
            self.state.apply(operation);
            Ok(())
        }
    }

    impl FakeIpvs {
        /// Sets every real server's connection counts.
        pub fn set_connections(&mut self, active: u32, inactive: u32) {
            for service in self.state.services.values_mut() {
                for rs in &mut service.real_servers {
                    rs.active_connections = active;
                    rs.inactive_connections = inactive;
                }
            }
        }
    }

    #[derive(Debug, Default)]
    pub struct FakeHost {
        pub addresses: BTreeSet<IpAddr>,
        /// IPv4's sets (`US-…`) and IPv6's (`US-6-…`).
        pub sets: SetEntries,
        pub sets6: SetEntries,
        pub set_restores: Vec<String>,
        /// Through iptables-restore, and ip6tables-restore.
        pub rule_restores: Vec<String>,
        pub rule_restores6: Vec<String>,
    }

    impl FakeHost {
        fn sets_of(&mut self, family: IpFamily) -> &mut SetEntries {
            match family {
                IpFamily::V4 => &mut self.sets,
                IpFamily::V6 => &mut self.sets6,
            }
        }
    }

    impl Host for FakeHost {
        fn dummy_addresses(&mut self, family: IpFamily) -> Result<BTreeSet<IpAddr>, BoxError> {
            Ok((self.addresses.iter())
                .filter(|a| IpFamily::of(a) == family)
                .copied()
                .collect())
        }
        fn local_addresses(&mut self, _family: IpFamily) -> Result<BTreeSet<IpAddr>, BoxError> {
            Ok(BTreeSet::new())
        }
        fn add_address(&mut self, address: IpAddr) -> Result<(), BoxError> {
            self.addresses.insert(address);
            Ok(())
        }
        fn remove_address(&mut self, address: IpAddr) -> Result<(), BoxError> {
            self.addresses.remove(&address);
            Ok(())
        }
        fn delete_interface(&mut self) -> Result<(), BoxError> {
            self.addresses.clear();
            Ok(())
        }
        fn destroy_set(&mut self, set: Set, family: IpFamily) -> Result<(), BoxError> {
            self.sets_of(family).remove(&set);
            Ok(())
        }
        fn set_entries(&mut self, family: IpFamily) -> Result<SetEntries, BoxError> {
            Ok(self.sets_of(family).clone())
        }
        fn restore_sets(&mut self, text: &str) -> Result<(), BoxError> {
            self.set_restores.push(text.to_string());
            for family in [IpFamily::V4, IpFamily::V6] {
                let mut current = Current {
                    sets: std::mem::take(self.sets_of(family)),
                    ..Current::default()
                };
                for line in text.lines() {
                    let mut words = line.split(' ');
                    let (verb, name, entry) = (words.next(), words.next(), words.next());
                    let set = super::super::ipsets::ALL_SETS
                        .into_iter()
                        .find(|s| Some(s.name(family).as_str()) == name);
                    match (verb, set, entry) {
                        (Some("add"), Some(set), Some(e)) => {
                            current.apply(&Operation::SetAdd(set, e.to_string()))
                        }
                        (Some("del"), Some(set), Some(e)) => {
                            current.apply(&Operation::SetDel(set, e.to_string()))
                        }
                        _ => {}
                    }
                }
                *self.sets_of(family) = current.sets;
            }
            Ok(())
        }
        fn restore_rules(&mut self, family: IpFamily, text: &str) -> Result<(), BoxError> {
            match family {
                IpFamily::V4 => self.rule_restores.push(text.to_string()),
                IpFamily::V6 => self.rule_restores6.push(text.to_string()),
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
