//! The proxy's in-memory view of Services and EndpointSlices for one IP
//! family on one node (upstream's ServiceChangeTracker, EndpointsChangeTracker
//! and EndpointSliceCache in one index). Pure: watches feed it with
//! `apply_*`/`delete_*`, the sync loop reads it and takes its changes.
//!
//! One family per tracker: a dual-stack node will run two (IPv4 and IPv6), as
//! upstream runs two proxiers; only IPv4 is wired so far.
//!
//! Changes accumulate per Service against the state at the last
//! [`Tracker::take_changes`], so an update that is later undone (A → B → A)
//! leaves nothing to sync, as upstream's trackers drop such changes.

mod endpoints;
mod names;
mod service;
mod topology;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use litemap::LiteMap;

pub use endpoints::{EndpointInfo, SERVICE_NAME_LABEL};
pub use names::{IpFamily, Protocol, ServiceName, ServicePortName};
pub use service::{DEFAULT_STICKY_SECONDS, ServicePortInfo};
pub use topology::{Categorized, categorize_endpoints};

use endpoints::SliceEndpoints;

/// The node label upstream reads the node's zone from.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// A Service's ports: most have one or two, so a sorted Vec (a BTreeMap
/// allocates a node of eleven slots for one entry: kilobytes per Service
/// at 10000 Services).
pub type PortMap<T> = LiteMap<ServicePortName, T>;

/// What changed since the last [`Tracker::take_changes`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Service ports whose service info or endpoints differ (including ports
    /// that appeared or went away).
    pub service_ports: BTreeSet<ServicePortName>,
    /// Something every service depends on changed (the node's labels): every
    /// service's rules must be rewritten.
    pub full_sync: bool,
}

#[derive(Debug)]
pub struct Tracker {
    family: IpFamily,
    node_name: String,
    node_labels: BTreeMap<String, String>,
    services: BTreeMap<ServiceName, PortMap<ServicePortInfo>>,
    slices: BTreeMap<ServiceName, LiteMap<String, SliceEndpoints>>,
    endpoints: BTreeMap<ServiceName, PortMap<Vec<EndpointInfo>>>,
    /// Per changed Service, its ports as at the last take_changes.
    service_baseline: BTreeMap<ServiceName, PortMap<ServicePortInfo>>,
    /// Per Service with changed endpoints, its endpoints as at the last take_changes.
    endpoints_baseline: BTreeMap<ServiceName, PortMap<Vec<EndpointInfo>>>,
    node_changed: bool,
    /// Endpoints of a Service with a UDP port changed in changes already
    /// taken: stale conntrack flows may remain until a cleanup runs.
    conntrack_cleanup_pending: bool,
}

impl Tracker {
    pub fn new(family: IpFamily, node_name: impl Into<String>) -> Self {
        Tracker {
            family,
            node_name: node_name.into(),
            node_labels: BTreeMap::new(),
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            service_baseline: BTreeMap::new(),
            endpoints_baseline: BTreeMap::new(),
            node_changed: false,
            conntrack_cleanup_pending: false,
        }
    }

    pub fn family(&self) -> IpFamily {
        self.family
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// This node's zone label, if set and non-empty.
    pub fn zone(&self) -> Option<&str> {
        self.node_labels
            .get(ZONE_LABEL)
            .map(String::as_str)
            .filter(|z| !z.is_empty())
    }

    /// This node's labels changed (topology hints depend on them). Returns
    /// whether they differ from before.
    pub fn set_node_labels(&mut self, labels: BTreeMap<String, String>) -> bool {
        if labels == self.node_labels {
            return false;
        }
        self.node_labels = labels;
        self.node_changed = true;
        true
    }

    /// A Service was added or updated. Returns whether anything the proxy
    /// uses changed.
    pub fn apply_service(&mut self, service: &Service) -> bool {
        let name = ServiceName::new(
            service.metadata.namespace.clone().unwrap_or_default(),
            service.metadata.name.clone().unwrap_or_default(),
        );
        let ports = service::service_ports(service, self.family);
        self.set_service(name, ports)
    }

    /// A Service was deleted.
    pub fn delete_service(&mut self, namespace: &str, name: &str) -> bool {
        self.set_service(ServiceName::new(namespace, name), PortMap::new())
    }

    /// An EndpointSlice was added or updated. Slices without the
    /// `kubernetes.io/service-name` label or of another address type are ignored.
    pub fn apply_endpoint_slice(&mut self, slice: &EndpointSlice) -> bool {
        let Some(slice_name) = slice.metadata.name.clone() else {
            return false;
        };
        let Some((service, endpoints)) =
            endpoints::slice_endpoints(slice, self.family, &self.node_name)
        else {
            return false;
        };
        let slices = self.slices.entry(service.clone()).or_default();
        if slices.get(&slice_name) == Some(&endpoints) {
            return false;
        }
        slices.insert(slice_name, endpoints);
        self.remerge(service)
    }

    /// An EndpointSlice was deleted (as last seen, for its service label).
    pub fn delete_endpoint_slice(&mut self, slice: &EndpointSlice) -> bool {
        let (Some(slice_name), Some(service)) = (
            slice.metadata.name.as_ref(),
            endpoints::slice_service(slice),
        ) else {
            return false;
        };
        let Some(slices) = self.slices.get_mut(&service) else {
            return false;
        };
        if slices.remove(slice_name).is_none() {
            return false;
        }
        if slices.is_empty() {
            self.slices.remove(&service);
        }
        self.remerge(service)
    }

    /// Services whose service info or endpoints changed, not yet taken.
    /// (Upstream's sync_proxy_rules_service_changes_pending and
    /// endpoint_changes_pending count the two kinds separately; so does
    /// [`Tracker::pending_counts`].)
    pub fn pending_changes(&self) -> usize {
        let (services, endpoints) = self.pending_counts();
        services + endpoints
    }

    /// (Services with changed service info, Services with changed endpoints).
    pub fn pending_counts(&self) -> (usize, usize) {
        (self.service_baseline.len(), self.endpoints_baseline.len())
    }

    /// The changes since the last call, for a partial sync; the state itself
    /// stays.
    pub fn take_changes(&mut self) -> Changes {
        let mut service_ports = BTreeSet::new();
        for (name, before) in std::mem::take(&mut self.service_baseline) {
            let after = self.services.get(&name);
            changed_ports(&before, after, &mut service_ports);
        }
        for (name, before) in std::mem::take(&mut self.endpoints_baseline) {
            let after = self.endpoints.get(&name);
            // Upstream's ConntrackCleanupRequired: some UDP port of the
            // Service, before or after the change.
            let udp = |ports: Option<&PortMap<Vec<EndpointInfo>>>| {
                ports.is_some_and(|p| p.keys().any(|n| n.protocol == Protocol::Udp))
            };
            if udp(Some(&before)) || udp(after) {
                self.conntrack_cleanup_pending = true;
            }
            changed_ports(&before, after, &mut service_ports);
        }
        Changes {
            service_ports,
            full_sync: std::mem::take(&mut self.node_changed),
        }
    }

    /// Whether UDP endpoints changed in the changes taken since the last
    /// call (upstream's ConntrackCleanupRequired), clearing it: call once the
    /// rules for those changes are written, and run the conntrack cleanup
    /// when true. Unlike upstream, a failed sync does not lose it: it stays
    /// until the caller takes it.
    pub fn take_conntrack_cleanup(&mut self) -> bool {
        std::mem::take(&mut self.conntrack_cleanup_pending)
    }

    /// Every service port, in name order.
    pub fn service_ports(&self) -> impl Iterator<Item = (&ServicePortName, &ServicePortInfo)> {
        self.services.values().flatten()
    }

    pub fn service_port(&self, name: &ServicePortName) -> Option<&ServicePortInfo> {
        self.services.get(&name.service)?.get(name)
    }

    /// A service port's endpoints from all its slices, sorted by `ip:port`.
    pub fn endpoints(&self, name: &ServicePortName) -> &[EndpointInfo] {
        (self.endpoints.get(&name.service))
            .and_then(|ports| ports.get(name))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Which of a service port's endpoints this node uses, and for what.
    pub fn categorize(&self, name: &ServicePortName, service: &ServicePortInfo) -> Categorized<'_> {
        categorize_endpoints(self.endpoints(name), service, &self.node_name, self.zone())
    }

    fn set_service(&mut self, name: ServiceName, ports: PortMap<ServicePortInfo>) -> bool {
        let current = self.services.get(&name);
        if current.map_or(ports.is_empty(), |c| *c == ports) {
            return false;
        }
        let current = current.cloned().unwrap_or_default();
        let baseline = self.service_baseline.entry(name.clone()).or_insert(current);
        let back_to_baseline = *baseline == ports;
        if back_to_baseline {
            self.service_baseline.remove(&name);
        }
        if ports.is_empty() {
            self.services.remove(&name);
        } else {
            self.services.insert(name, ports);
        }
        true
    }

    fn remerge(&mut self, service: ServiceName) -> bool {
        let merged = endpoints::merge_slices(
            self.slices
                .get(&service)
                .into_iter()
                .flat_map(|s| s.values()),
        );
        let current = self.endpoints.get(&service);
        if current.map_or(merged.is_empty(), |c| *c == merged) {
            return false;
        }
        let current = current.cloned().unwrap_or_default();
        let baseline = self
            .endpoints_baseline
            .entry(service.clone())
            .or_insert(current);
        if *baseline == merged {
            self.endpoints_baseline.remove(&service);
        }
        if merged.is_empty() {
            self.endpoints.remove(&service);
        } else {
            self.endpoints.insert(service, merged);
        }
        true
    }
}

fn changed_ports<T: PartialEq>(
    before: &PortMap<T>,
    after: Option<&PortMap<T>>,
    out: &mut BTreeSet<ServicePortName>,
) {
    let empty = PortMap::new();
    let after = after.unwrap_or(&empty);
    for name in before.keys().chain(after.keys()) {
        if before.get(name) != after.get(name) {
            out.insert(name.clone());
        }
    }
}
