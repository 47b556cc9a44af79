//! The slice reconciler (upstream's `k8s.io/endpointslice` Reconciler) as a
//! pure function: a Service, its pods and its existing slices in; the slices
//! to create, update and delete out.
//!
//! Per address type and port set it keeps endpoints where they are, updates
//! changed ones in place, drops stale ones, tops up slices it is rewriting
//! anyway, then fits the rest into the unchanged slice that ends up fullest
//! before creating new slices. Churn is the cost being minimised: every
//! slice write fans out to every kube-proxy.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::desired::{
    self, AddressType, EndpointKey, PortSetKey, endpoints_equal_beyond_key, is_service_ip_set,
};
use super::hints::{self, HintEvent};
use super::topology::TopologyCache;

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming a slice's manager.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Upstream's managed-by value; we write the same, so slices move between
/// upstream's controller and ours without duplicates.
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Marks the slices of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// Slice writes, in the order they are made.
#[derive(Debug, Default)]
pub struct Writes {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<EndpointSlice>,
}

/// What to do for one address type the Service serves.
#[derive(Debug)]
pub struct AddressTypePlan {
    pub address_type: AddressType,
    pub writes: Writes,
    /// Pods skipped for an unknown node; reported as sync errors.
    pub errors: Vec<String>,
    /// Topology hint Events for the Service.
    pub events: Vec<HintEvent>,
}

#[derive(Debug)]
pub struct Plan {
    pub address_types: Vec<AddressTypePlan>,
    /// Slices of address types the Service no longer serves.
    pub unsupported: Vec<EndpointSlice>,
}

impl Plan {
    #[cfg(test)]
    pub fn all_writes(
        &self,
    ) -> (
        Vec<&EndpointSlice>,
        Vec<&EndpointSlice>,
        Vec<&EndpointSlice>,
    ) {
        let mut out = (Vec::new(), Vec::new(), Vec::new());
        for p in &self.address_types {
            out.0.extend(&p.writes.create);
            out.1.extend(&p.writes.update);
            out.2.extend(&p.writes.delete);
        }
        out.2.extend(&self.unsupported);
        out
    }
}

/// Everything a plan is computed from. `slices` are the Service's slices
/// managed by us (by label), minus those being deleted.
pub struct Inputs<'a> {
    pub service: &'a Service,
    pub pods: &'a [Arc<Pod>],
    pub slices: &'a [Arc<EndpointSlice>],
    pub node: &'a dyn Fn(&str) -> Option<Arc<Node>>,
    pub max_endpoints_per_slice: usize,
}

pub fn plan(inputs: &Inputs<'_>, topology: &mut TopologyCache) -> Plan {
    let supported = desired::address_types(inputs.service);
    let mut by_type: BTreeMap<AddressType, Vec<&EndpointSlice>> = BTreeMap::new();
    let mut unsupported = Vec::new();
    let mut sorted: Vec<&EndpointSlice> = inputs.slices.iter().map(Arc::as_ref).collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for slice in sorted {
        match AddressType::parse(&slice.address_type).filter(|t| supported.contains(t)) {
            Some(t) => by_type.entry(t).or_default().push(slice),
            None => unsupported.push(slice.clone()),
        }
    }
    if !unsupported.is_empty() {
        let key = crate::key::ObjectKey::of(inputs.service);
        for slice in &unsupported {
            if let Some(t) = AddressType::parse(&slice.address_type) {
                topology.remove_hints(&key, t);
            }
        }
    }
    let address_types = supported
        .into_iter()
        .map(|t| {
            let existing = by_type.remove(&t).unwrap_or_default();
            plan_address_type(inputs, &existing, t, topology)
        })
        .collect();
    Plan {
        address_types,
        unsupported,
    }
}

fn plan_address_type(
    inputs: &Inputs<'_>,
    existing: &[&EndpointSlice],
    address_type: AddressType,
    topology: &mut TopologyCache,
) -> AddressTypePlan {
    let service = inputs.service;
    let mut writes = Writes::default();

    let mut by_ports: BTreeMap<PortSetKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        if owned_by(slice, service) {
            by_ports
                .entry(PortSetKey::of(slice.ports.as_ref()))
                .or_default()
                .push(slice);
        } else {
            // Left over from an earlier Service of the same name.
            writes.delete.push((*slice).clone());
        }
    }

    let mut pods: Vec<&Pod> = inputs.pods.iter().map(Arc::as_ref).collect();
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let (groups, errors) = desired::desired_endpoints(service, pods, inputs.node, address_type);
    let wanted: BTreeSet<PortSetKey> = groups.keys().cloned().collect();

    for (key, (ports, endpoints)) in groups {
        let slices = by_ports.get(&key).map(Vec::as_slice).unwrap_or_default();
        let group = reconcile_port_group(
            service,
            slices,
            endpoints,
            &ports,
            address_type,
            inputs.max_endpoints_per_slice.max(1),
        );
        writes.create.extend(group.create);
        writes.update.extend(group.update);
        writes.delete.extend(group.delete);
    }
    for (key, slices) in &by_ports {
        if !wanted.contains(key) {
            writes.delete.extend(slices.iter().map(|s| (*s).clone()));
        }
    }

    // A Service without endpoints still gets one empty slice, so consumers
    // can tell "no endpoints" from "not reconciled yet".
    if existing.len() == writes.delete.len() && writes.create.is_empty() {
        let placeholder = new_slice(service, Vec::new(), address_type);
        if writes.delete.len() == 1 && same_placeholder(&writes.delete[0], &placeholder) {
            writes.delete.clear();
        } else {
            writes.create.push(placeholder);
        }
    }

    let events = hints::apply(
        service,
        address_type,
        existing,
        &mut writes.create,
        &mut writes.update,
        &writes.delete,
        topology,
    );

    reuse_deleted_slices(service, &mut writes);

    AddressTypePlan {
        address_type,
        writes,
        errors,
        events,
    }
}

struct GroupWrites {
    create: Vec<EndpointSlice>,
    update: Vec<EndpointSlice>,
    delete: Vec<EndpointSlice>,
}

/// One port set of one address type: existing slices (owned, with these
/// ports) against the desired endpoints.
fn reconcile_port_group(
    service: &Service,
    existing: &[&EndpointSlice],
    mut desired: BTreeMap<EndpointKey, Endpoint>,
    ports: &[EndpointPort],
    address_type: AddressType,
    max: usize,
) -> GroupWrites {
    let mut update: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut unchanged: BTreeMap<String, &EndpointSlice> = BTreeMap::new();
    let mut delete = Vec::new();

    // 1. Keep desired endpoints where they are, refreshed; drop the rest.
    for slice in existing {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let current = slice.endpoints.as_deref().unwrap_or_default();
        let mut kept = Vec::with_capacity(current.len());
        let mut changed = false;
        for endpoint in current {
            if let Some(want) = desired.remove(&EndpointKey::of(endpoint)) {
                changed |= !endpoints_equal_beyond_key(&want, endpoint);
                kept.push(want);
            }
        }
        let (labels, labels_changed) = slice_labels(slice.metadata.labels.as_ref(), service);
        if changed || kept.len() != current.len() {
            if kept.is_empty() {
                delete.push((*slice).clone());
            } else {
                let mut s = (*slice).clone();
                s.endpoints = Some(kept);
                s.metadata.labels = Some(labels);
                update.insert(name, s);
            }
        } else if labels_changed {
            let mut s = (*slice).clone();
            s.metadata.labels = Some(labels);
            update.insert(name, s);
        } else {
            unchanged.insert(name, slice);
        }
    }

    // 2. Slices being rewritten anyway take new endpoints first, fullest
    //    first, as that costs no extra write.
    if !desired.is_empty() && !update.is_empty() {
        let mut fill_order: Vec<&mut EndpointSlice> = update.values_mut().collect();
        fill_order.sort_by_key(|s| Reverse(endpoint_count(s)));
        for slice in fill_order {
            fill(slice, &mut desired, max);
        }
    }

    // 3. The rest go into the unchanged slice they fill best if they fit in
    //    one, else into new slices.
    let mut create = Vec::new();
    while !desired.is_empty() {
        let mut target = None;
        if desired.len() < max
            && let Some(name) = slice_to_fill(unchanged.values().copied(), desired.len(), max)
        {
            target = unchanged.remove(&name).cloned();
        }
        let mut slice = target.unwrap_or_else(|| new_slice(service, ports.to_vec(), address_type));
        fill(&mut slice, &mut desired, max);
        match slice.metadata.name.clone() {
            Some(name) => {
                update.insert(name, slice);
            }
            None => create.push(slice),
        }
    }

    GroupWrites {
        create,
        update: update.into_values().collect(),
        delete,
    }
}

fn endpoint_count(slice: &EndpointSlice) -> usize {
    slice.endpoints.as_ref().map_or(0, Vec::len)
}

fn fill(slice: &mut EndpointSlice, desired: &mut BTreeMap<EndpointKey, Endpoint>, max: usize) {
    let endpoints = slice.endpoints.get_or_insert_with(Vec::new);
    while endpoints.len() < max {
        let Some((_, endpoint)) = desired.pop_first() else {
            break;
        };
        endpoints.push(endpoint);
    }
}

/// The slice that ends up closest to full once `count` endpoints are added,
/// among those with room for all of them.
fn slice_to_fill<'a>(
    slices: impl Iterator<Item = &'a EndpointSlice>,
    count: usize,
    max: usize,
) -> Option<String> {
    let mut best: Option<(usize, &EndpointSlice)> = None;
    for slice in slices {
        let Some(room) = max.checked_sub(count + endpoint_count(slice)) else {
            continue;
        };
        if best.is_none_or(|(r, _)| room < r) {
            best = Some((room, slice));
            if room == 0 {
                break;
            }
        }
    }
    best.and_then(|(_, s)| s.metadata.name.clone())
}

/// Whether the slice belongs to this incarnation of the Service.
pub fn owned_by(slice: &EndpointSlice, service: &Service) -> bool {
    let Some(uid) = service.metadata.uid.as_deref() else {
        return false;
    };
    slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.kind == "Service" && o.api_version == "v1")
}

fn is_reserved_label(key: &str) -> bool {
    key == SERVICE_NAME_LABEL || key == MANAGED_BY_LABEL || key == HEADLESS_LABEL
}

/// A slice's labels: the Service's (reserved keys aside) plus ours, and
/// whether the slice's own copy of the Service's labels is out of date.
pub fn slice_labels(
    current: Option<&BTreeMap<String, String>>,
    service: &Service,
) -> (BTreeMap<String, String>, bool) {
    let unreserved = |labels: Option<&BTreeMap<String, String>>| -> BTreeMap<String, String> {
        labels
            .into_iter()
            .flatten()
            .filter(|(k, _)| !is_reserved_label(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let mut labels = unreserved(service.metadata.labels.as_ref());
    let changed = unreserved(current) != labels;
    if !is_service_ip_set(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    (labels, changed)
}

/// The name prefix of a Service's slices.
fn generate_name(service_name: &str) -> String {
    // Service names are DNS labels, so `<name>-` always fits a DNS
    // subdomain; the fallback only guards against malformed objects.
    if service_name.len() < 253 {
        format!("{service_name}-")
    } else {
        service_name.to_string()
    }
}

/// The controller reference from a slice to its Service.
pub fn owner_reference(service: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: service.metadata.name.clone().unwrap_or_default(),
        uid: service.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub fn new_slice(
    service: &Service,
    ports: Vec<EndpointPort>,
    address_type: AddressType,
) -> EndpointSlice {
    let (labels, _) = slice_labels(None, service);
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(generate_name(
                service.metadata.name.as_deref().unwrap_or_default(),
            )),
            namespace: service.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![owner_reference(service)]),
            ..Default::default()
        },
        address_type: address_type.as_str().into(),
        endpoints: Some(Vec::new()),
        ports: Some(ports),
    }
}

/// Whether an existing slice already is the placeholder we would create
/// (upstream compares namespace, labels and contents, not owners).
fn same_placeholder(existing: &EndpointSlice, placeholder: &EndpointSlice) -> bool {
    let labels = |s: &EndpointSlice| s.metadata.labels.clone().unwrap_or_default();
    existing.metadata.namespace == placeholder.metadata.namespace
        && labels(existing) == labels(placeholder)
        && existing.address_type == placeholder.address_type
        && existing.endpoints.as_ref().is_none_or(Vec::is_empty)
        && existing.ports.as_ref().is_none_or(Vec::is_empty)
}

/// Turns create+delete pairs into updates of the slice that would be
/// deleted: one write instead of two, and no window without the slice.
/// Only our own slices of the same address type (immutable) qualify.
fn reuse_deleted_slices(service: &Service, writes: &mut Writes) {
    let mut i = 0;
    while i < writes.delete.len() {
        let Some(last) = writes.create.last() else {
            break;
        };
        let old = &writes.delete[i];
        if old.address_type == last.address_type && owned_by(old, service) {
            let old = writes.delete.remove(i);
            if let Some(mut slice) = writes.create.pop() {
                slice.metadata.name = old.metadata.name;
                writes.update.push(slice);
            }
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests;
