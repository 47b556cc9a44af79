//! From what the kernel holds to what it should hold: the ordered
//! operations (upstream's syncService, syncEndpoint, cleanLegacyService,
//! the ipset sync and the dummy-interface unbinding, as one pure step).
//!
//! Order: addresses and virtual servers first, so a new service answers as
//! soon as it has real servers; then real servers; the ipset changes; and
//! only then what goes away (real servers, virtual servers, addresses).
//!
//! Graceful termination is decided from the kernel's own counters on every
//! sync, so it needs no memory between syncs: a TCP real server that is no
//! longer wanted but still has connections gets weight 0 (no new
//! connections) and is deleted on a later sync once its active and inactive
//! counts are both zero; UDP and SCTP ones are deleted at once. Upstream
//! keeps a list of such servers and retries them each minute; a real server
//! wanted again while at weight 0 is deleted and re-added there, given its
//! weight back here (its connections are not cut).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::desired::Desired;
use super::ipsets::{Set, SetEntries, set_changes};
use super::model::{
    RealServer, RealServerState, ServiceKey, VirtualServer, needs_graceful_termination,
};
use crate::tracker::IpFamily;

/// One virtual server in the kernel, with its real servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentService {
    pub server: VirtualServer,
    pub real_servers: Vec<RealServerState>,
}

/// What the kernel holds, as listed by the IO side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Current {
    /// Every virtual server of the network namespace, of any family.
    pub services: BTreeMap<ServiceKey, CurrentService>,
    /// The dummy interface's addresses.
    pub dummy_addresses: BTreeSet<IpAddr>,
    /// Our sets' entries.
    pub sets: SetEntries,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    AddAddress(IpAddr),
    AddService(VirtualServer),
    /// Scheduler, flags or timeout changed; the address keeps answering.
    UpdateService(VirtualServer),
    AddRealServer(ServiceKey, RealServer),
    /// A weight change: 1 for a wanted one, 0 to drain one that goes.
    UpdateRealServer(ServiceKey, RealServer),
    SetDel(Set, String),
    SetAdd(Set, String),
    DeleteRealServer(ServiceKey, SocketAddr),
    DeleteService(ServiceKey),
    RemoveAddress(IpAddr),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffOptions {
    pub family: IpFamily,
    /// `ipvs.excludeCIDRs`: virtual servers in them are never deleted.
    pub exclude_cidrs: Vec<IpNet>,
}

pub fn diff(desired: &Desired, current: &Current, options: &DiffOptions) -> Vec<Operation> {
    let mut adds = Vec::new();
    let mut real_server_adds = Vec::new();
    let mut removals = Vec::new();
    let of_family = |ip: &IpAddr| IpFamily::of(ip) == options.family;

    for address in desired.dummy_addresses.difference(&current.dummy_addresses) {
        adds.push(Operation::AddAddress(*address));
    }

    for (key, wanted) in &desired.services {
        let existing = current.services.get(key);
        match existing {
            None => adds.push(Operation::AddService(wanted.server.clone())),
            Some(have) if !have.server.same_settings(&wanted.server) => {
                adds.push(Operation::UpdateService(wanted.server.clone()))
            }
            Some(_) => {}
        }
        let have: &[RealServerState] = existing.map_or(&[], |c| &c.real_servers);
        for rs in &wanted.real_servers {
            match have.iter().find(|h| h.address == rs.address) {
                None => real_server_adds.push(Operation::AddRealServer(*key, *rs)),
                Some(h) if h.weight != rs.weight => {
                    real_server_adds.push(Operation::UpdateRealServer(*key, *rs))
                }
                Some(_) => {}
            }
        }
        for h in have {
            if wanted.real_servers.iter().any(|rs| rs.address == h.address) {
                continue;
            }
            let connections = h.active_connections + h.inactive_connections;
            if needs_graceful_termination(key.protocol) && connections > 0 {
                if h.weight != 0 {
                    removals.push(Operation::UpdateRealServer(
                        *key,
                        RealServer {
                            address: h.address,
                            weight: 0,
                        },
                    ));
                }
            } else {
                removals.push(Operation::DeleteRealServer(*key, h.address));
            }
        }
    }

    for key in current.services.keys() {
        let excluded = options
            .exclude_cidrs
            .iter()
            .any(|c| c.contains(&key.address));
        if of_family(&key.address) && !excluded && !desired.services.contains_key(key) {
            removals.push(Operation::DeleteService(*key));
        }
    }

    for address in current.dummy_addresses.difference(&desired.dummy_addresses) {
        if of_family(address) {
            removals.push(Operation::RemoveAddress(*address));
        }
    }

    let sets = set_changes(&desired.sets, &current.sets);
    let set_ops = (sets.del.into_iter())
        .flat_map(|(set, entries)| entries.into_iter().map(move |e| Operation::SetDel(set, e)))
        .chain((sets.add.into_iter()).flat_map(|(set, entries)| {
            entries.into_iter().map(move |e| Operation::SetAdd(set, e))
        }));

    adds.into_iter()
        .chain(real_server_adds)
        .chain(set_ops)
        .chain(removals)
        .collect()
}

impl Current {
    /// The state after an operation succeeded, as the kernel would hold it
    /// (new real servers without connections). The fake kernel of the tests
    /// and the reconcile loop's bookkeeping both use it.
    pub fn apply(&mut self, operation: &Operation) {
        match operation {
            Operation::AddAddress(ip) => {
                self.dummy_addresses.insert(*ip);
            }
            Operation::RemoveAddress(ip) => {
                self.dummy_addresses.remove(ip);
            }
            Operation::AddService(server) | Operation::UpdateService(server) => {
                let entry = self
                    .services
                    .entry(server.key)
                    .or_insert_with(|| CurrentService {
                        server: server.clone(),
                        real_servers: Vec::new(),
                    });
                entry.server = server.clone();
            }
            Operation::DeleteService(key) => {
                self.services.remove(key);
            }
            Operation::AddRealServer(key, rs) | Operation::UpdateRealServer(key, rs) => {
                if let Some(service) = self.services.get_mut(key) {
                    match (service.real_servers.iter_mut()).find(|h| h.address == rs.address) {
                        Some(h) => h.weight = rs.weight,
                        None => service.real_servers.push(RealServerState {
                            address: rs.address,
                            weight: rs.weight,
                            active_connections: 0,
                            inactive_connections: 0,
                        }),
                    }
                }
            }
            Operation::DeleteRealServer(key, address) => {
                if let Some(service) = self.services.get_mut(key) {
                    service.real_servers.retain(|h| h.address != *address);
                }
            }
            Operation::SetAdd(set, entry) => {
                self.sets.entry(*set).or_default().insert(entry.clone());
            }
            Operation::SetDel(set, entry) => {
                if let Some(entries) = self.sets.get_mut(set) {
                    entries.remove(entry);
                    if entries.is_empty() {
                        self.sets.remove(set);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
