//! Topology Aware Hints (`service.kubernetes.io/topology-mode: Auto`):
//! zone hints spread so each zone gets endpoints in proportion to its
//! allocatable CPU, within a 20% overload margin (upstream's
//! `topologycache`). State is shared between Services: the per-zone CPU
//! ratios come from the Nodes, and the hints handed out per Service let a
//! Node change requeue the Services it leaves overloaded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::{EndpointHints, EndpointSlice, ForZone};

use super::desired::{AddressType, ZONE_LABEL};
use super::hints::{HintEvent, SliceInfo, is_ready, remove_hints_from_slices, with_address_type};
use crate::key::ObjectKey;

pub const NO_ZONE_SPECIFIED: &str = "One or more endpoints do not have a zone specified";
pub const NO_ALLOCATED_HINTS_FOR_ZONES: &str = "No hints allocated for zones";
pub const TOPOLOGY_AWARE_HINTS_ENABLED: &str = "Topology Aware Hints has been enabled";
pub const TOPOLOGY_AWARE_HINTS_DISABLED: &str = "Topology Aware Hints has been disabled";
pub const INSUFFICIENT_NODE_INFO: &str =
    "Insufficient Node information: allocatable CPU or zone not specified on one or more nodes";
pub const NODES_READY_IN_ONE_ZONE_ONLY: &str = "Nodes only ready in one zone";
pub const INSUFFICIENT_NUMBER_OF_ENDPOINTS: &str = "Insufficient number of endpoints";
pub const MIN_ALLOCATION_EXCEEDS_OVERLOAD_THRESHOLD: &str = "Unable to allocate minimum required endpoints to each zone without exceeding overload threshold";

/// The most any zone's endpoints may be overloaded relative to its share.
const OVERLOAD_THRESHOLD: f64 = 0.2;

/// Hint counts per zone.
pub type ZoneCounts = BTreeMap<String, i64>;

#[derive(Clone, Copy, Debug, PartialEq)]
struct Allocation {
    minimum: i64,
    maximum: i64,
    desired: f64,
}

#[derive(Debug)]
pub struct TopologyCache {
    /// Each zone's share of the cluster's allocatable CPU; `None` once the
    /// Nodes were found to lack zone or CPU information.
    cpu_ratios_by_zone: Option<BTreeMap<String, f64>>,
    hints_by_service: HashMap<ObjectKey, HashMap<AddressType, ZoneCounts>>,
    hints_populated: HashSet<ObjectKey>,
}

impl Default for TopologyCache {
    fn default() -> Self {
        Self {
            // Before the first Node is seen: no zones, but not "insufficient".
            cpu_ratios_by_zone: Some(BTreeMap::new()),
            hints_by_service: HashMap::new(),
            hints_populated: HashSet::new(),
        }
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Control-plane nodes run no Service backends that count.
fn excluded(node: &Node) -> bool {
    node.metadata.labels.as_ref().is_some_and(|l| {
        l.contains_key("node-role.kubernetes.io/control-plane")
            || l.contains_key("node-role.kubernetes.io/master")
    })
}

/// What a Node change must be for the zone ratios to move.
pub fn node_change_matters(old: &Node, new: &Node) -> bool {
    let zone = |n: &Node| {
        n.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(ZONE_LABEL).cloned())
    };
    node_ready(old) != node_ready(new) || zone(old) != zone(new)
}

impl TopologyCache {
    /// Recomputes the per-zone CPU ratios from all Nodes.
    pub fn set_nodes(&mut self, nodes: &[Arc<Node>]) {
        let mut cpu_by_zone: BTreeMap<String, i64> = BTreeMap::new();
        let mut sufficient = true;
        let mut total: i64 = 0;
        for node in nodes {
            if excluded(node) || !node_ready(node) {
                continue;
            }
            let zone = node
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(ZONE_LABEL))
                .filter(|z| !z.is_empty());
            let cpu = node
                .status
                .as_ref()
                .and_then(|s| s.allocatable.as_ref())
                .and_then(|a| a.get("cpu"))
                .and_then(|q| parse_milli(&q.0))
                .unwrap_or(0);
            let Some(zone) = zone.filter(|_| cpu != 0) else {
                tracing::info!(node = ?node.metadata.name, "Can't get CPU or zone information for node");
                cpu_by_zone.clear();
                sufficient = false;
                break;
            };
            total = total.saturating_add(cpu);
            *cpu_by_zone.entry(zone.clone()).or_default() += cpu;
        }
        if total == 0 || !sufficient || cpu_by_zone.len() < 2 {
            tracing::debug!(
                zones = cpu_by_zone.len(),
                total_cpu_millis = total,
                sufficient,
                "Insufficient node info for topology hints"
            );
            self.cpu_ratios_by_zone = None;
        } else {
            self.cpu_ratios_by_zone = Some(
                cpu_by_zone
                    .into_iter()
                    .map(|(zone, cpu)| (zone, cpu as f64 / total as f64))
                    .collect(),
            );
        }
    }

    /// Services whose hinted endpoints no longer give some zone its share.
    pub fn overloaded_services(&self) -> Vec<ObjectKey> {
        let empty = BTreeMap::new();
        let ratios = self.cpu_ratios_by_zone.as_ref().unwrap_or(&empty);
        self.hints_by_service
            .iter()
            .filter(|(_, by_type)| by_type.values().any(|zones| overloaded(zones, ratios)))
            .map(|(key, _)| key.clone())
            .collect()
    }

    pub fn has_populated_hints(&self, service: &ObjectKey) -> bool {
        self.hints_populated.contains(service)
    }

    pub fn remove_hints(&mut self, service: &ObjectKey, address_type: AddressType) {
        if let Some(by_type) = self.hints_by_service.get_mut(service) {
            by_type.remove(&address_type);
            if by_type.is_empty() {
                self.hints_by_service.remove(service);
            }
        }
        self.hints_populated.remove(service);
    }

    /// Forgets a deleted Service.
    pub fn remove_service(&mut self, service: &ObjectKey) {
        self.hints_by_service.remove(service);
        self.hints_populated.remove(service);
    }

    fn set_hints(&mut self, service: &ObjectKey, address_type: AddressType, zones: ZoneCounts) {
        self.hints_by_service
            .entry(service.clone())
            .or_default()
            .insert(address_type, zones);
        self.hints_populated.insert(service.clone());
    }

    /// Minimum and maximum endpoints per zone for `endpoints` ready ones,
    /// or why hints cannot be given.
    fn allocations(&self, endpoints: i64) -> Result<BTreeMap<String, Allocation>, String> {
        let Some(ratios) = self.cpu_ratios_by_zone.as_ref() else {
            return Err(INSUFFICIENT_NODE_INFO.into());
        };
        if ratios.len() < 2 {
            return Err(NODES_READY_IN_ONE_ZONE_ONLY.into());
        }
        let zones = ratios.len();
        if zones as i64 > endpoints {
            return Err(format!(
                "{INSUFFICIENT_NUMBER_OF_ENDPOINTS} ({endpoints} endpoints, {zones} zones)"
            ));
        }
        let mut allocations = BTreeMap::new();
        let mut min_total = 0;
        for (zone, ratio) in ratios {
            let desired = ratio * endpoints as f64;
            let minimum = (desired * (1.0 / (1.0 + OVERLOAD_THRESHOLD))).ceil() as i64;
            min_total += minimum;
            if min_total > endpoints {
                return Err(format!(
                    "{MIN_ALLOCATION_EXCEEDS_OVERLOAD_THRESHOLD} ({endpoints} endpoints, {zones} zones)"
                ));
            }
            allocations.insert(
                zone.clone(),
                Allocation {
                    minimum,
                    maximum: 0,
                    desired: desired.max(minimum as f64),
                },
            );
        }
        for a in allocations.values_mut() {
            a.maximum = a.minimum + endpoints - min_total;
        }
        Ok(allocations)
    }

    /// Gives every ready endpoint to be written a zone hint, moving unchanged
    /// slices whose hints no longer fit into the updates; or removes all
    /// hints, with a Warning, when hints cannot be balanced.
    pub fn add_hints(&mut self, si: &mut SliceInfo<'_>) -> Vec<HintEvent> {
        let address_type = si.address_type;
        let key = si.service.clone();
        let ready_total: usize = si
            .create
            .iter()
            .chain(si.update.iter())
            .chain(si.unchanged.iter().copied())
            .flat_map(|s| s.endpoints.iter().flatten())
            .filter(|e| is_ready(e))
            .count();
        let allocations = match self.allocations(ready_total as i64) {
            Ok(a) => a,
            Err(message) => {
                tracing::info!(service = %key, %address_type, "{message}, removing hints");
                self.remove_hints(&key, address_type);
                remove_hints_from_slices(si);
                return vec![HintEvent::warning(with_address_type(
                    &message,
                    address_type,
                ))];
            }
        };
        let mut allocated = allocated_hints_by_zone(si, &allocations);

        let zoneless = si
            .create
            .iter()
            .chain(si.update.iter())
            .flat_map(|s| s.endpoints.iter().flatten())
            .any(|e| is_ready(e) && e.zone.as_deref().unwrap_or("").is_empty());
        if zoneless {
            tracing::info!(service = %key, %address_type, "Endpoint found without zone specified, removing hints");
            self.remove_hints(&key, address_type);
            remove_hints_from_slices(si);
            return vec![HintEvent::warning(with_address_type(
                NO_ZONE_SPECIFIED,
                address_type,
            ))];
        }

        // Start from same-zone hints, then hand surplus endpoints of
        // over-served zones to under-served ones.
        for slice in si.create.iter_mut().chain(si.update.iter_mut()) {
            for endpoint in slice.endpoints.iter_mut().flatten() {
                let Some(zone) = endpoint.zone.clone().filter(|_| is_ready(endpoint)) else {
                    continue;
                };
                *allocated.entry(zone.clone()).or_default() += 1;
                endpoint.hints = Some(zone_hint(zone));
            }
        }
        let (mut giving, mut receiving) = giving_and_receiving_zones(&allocations, &allocated);
        let moved = redistribute(
            si.create.iter_mut().chain(si.update.iter_mut()),
            &mut giving,
            &mut receiving,
        );
        for (zone, diff) in moved {
            *allocated.entry(zone).or_default() += diff;
        }

        if allocated.is_empty() {
            tracing::debug!(service = %key, %address_type, "No hints allocated for zones, removing them");
            self.remove_hints(&key, address_type);
            remove_hints_from_slices(si);
            return vec![HintEvent::warning(with_address_type(
                NO_ALLOCATED_HINTS_FOR_ZONES,
                address_type,
            ))];
        }
        let had_hints = self.has_populated_hints(&key);
        self.set_hints(&key, address_type, allocated);
        if had_hints {
            return Vec::new();
        }
        tracing::info!(service = %key, %address_type, "Topology Aware Hints has been enabled, adding hints.");
        vec![HintEvent {
            warning: false,
            reason: "TopologyAwareHintsEnabled",
            message: with_address_type(TOPOLOGY_AWARE_HINTS_ENABLED, address_type),
        }]
    }
}

fn zone_hint(zone: String) -> EndpointHints {
    EndpointHints {
        for_zones: Some(vec![ForZone { name: zone }]),
        for_nodes: None,
    }
}

/// Counts the hints unchanged slices already hand out, moving slices whose
/// hints are missing, point at unknown zones or overshoot a zone's maximum
/// into the updates (to be re-hinted).
fn allocated_hints_by_zone(
    si: &mut SliceInfo<'_>,
    allocations: &BTreeMap<String, Allocation>,
) -> ZoneCounts {
    let mut allocated = ZoneCounts::new();
    let mut still_unchanged = Vec::new();
    for slice in std::mem::take(&mut si.unchanged) {
        match hints_by_zone(slice, &allocated, allocations) {
            Some(zones) => {
                for (zone, n) in zones {
                    *allocated.entry(zone).or_default() += n;
                }
                still_unchanged.push(slice);
            }
            None => si.update.push(slice.clone()),
        }
    }
    si.unchanged = still_unchanged;
    allocated
}

fn hints_by_zone(
    slice: &EndpointSlice,
    allocated: &ZoneCounts,
    allocations: &BTreeMap<String, Allocation>,
) -> Option<ZoneCounts> {
    let mut counts = ZoneCounts::new();
    for endpoint in slice.endpoints.iter().flatten().filter(|e| is_ready(e)) {
        let zones = endpoint.hints.as_ref()?.for_zones.as_ref()?;
        if zones.is_empty() {
            return None;
        }
        for zone in zones {
            allocations.get(&zone.name)?;
            *counts.entry(zone.name.clone()).or_default() += 1;
        }
    }
    for (zone, n) in &counts {
        let already = allocated.get(zone).copied().unwrap_or(0);
        if n + already > allocations.get(zone)?.maximum {
            return None;
        }
    }
    Some(counts)
}

/// The zone with the largest positive amount, if any.
fn most(zones: &BTreeMap<String, f64>) -> Option<(String, f64)> {
    let mut best: Option<(&String, f64)> = None;
    for (zone, n) in zones {
        if *n > best.map_or(0.0, |(_, b)| b) {
            best = Some((zone, *n));
        }
    }
    best.map(|(z, n)| (z.clone(), n))
}

/// How many endpoints each zone should give away and receive to bring the
/// current hints to the desired allocation, in whole endpoints.
fn giving_and_receiving_zones(
    allocations: &BTreeMap<String, Allocation>,
    allocated: &ZoneCounts,
) -> (ZoneCounts, ZoneCounts) {
    let mut giving_desired = BTreeMap::new();
    let mut receiving_desired = BTreeMap::new();
    for (zone, allocation) in allocations {
        let hints = allocated.get(zone).copied().unwrap_or(0) as f64;
        if hints > allocation.desired {
            giving_desired.insert(zone.clone(), hints - allocation.desired);
        } else if hints < allocation.desired {
            receiving_desired.insert(zone.clone(), allocation.desired - hints);
        }
    }
    let mut giving = ZoneCounts::new();
    let mut receiving = ZoneCounts::new();
    while let (Some((give_zone, to_give)), Some((receive_zone, to_receive))) =
        (most(&giving_desired), most(&receiving_desired))
    {
        if (to_give < 1.0 && to_receive < 1.0) || to_give < 0.5 || to_receive < 0.5 {
            break;
        }
        *giving.entry(give_zone.clone()).or_default() += 1;
        *giving_desired.entry(give_zone).or_default() -= 1.0;
        *receiving.entry(receive_zone.clone()).or_default() += 1;
        *receiving_desired.entry(receive_zone).or_default() -= 1.0;
    }
    (giving, receiving)
}

/// Re-points hints of ready endpoints from giving zones to receiving ones;
/// returns the change in hints per zone.
fn redistribute<'a>(
    slices: impl Iterator<Item = &'a mut EndpointSlice>,
    giving: &mut ZoneCounts,
    receiving: &mut ZoneCounts,
) -> ZoneCounts {
    let mut moved = ZoneCounts::new();
    for slice in slices {
        for endpoint in slice.endpoints.iter_mut().flatten() {
            if !is_ready(endpoint) {
                continue;
            }
            if giving.is_empty() || receiving.is_empty() {
                return moved;
            }
            let Some(from) = endpoint.zone.clone().filter(|z| !z.is_empty()) else {
                continue;
            };
            if giving.get(&from).is_none_or(|n| *n <= 0) {
                continue;
            }
            let Some(to) = receiving
                .iter()
                .find(|(_, n)| **n > 0)
                .map(|(z, _)| z.clone())
            else {
                continue;
            };
            endpoint.hints = Some(zone_hint(to.clone()));
            take_one(giving, &from);
            take_one(receiving, &to);
            *moved.entry(to).or_default() += 1;
            *moved.entry(from).or_default() -= 1;
        }
    }
    moved
}

fn take_one(zones: &mut ZoneCounts, zone: &str) {
    if let Some(n) = zones.get_mut(zone) {
        *n -= 1;
        if *n <= 0 {
            zones.remove(zone);
        }
    }
}

/// Whether some zone gets fewer hinted endpoints than its CPU share
/// (within the overload margin) calls for.
fn overloaded(zones: &ZoneCounts, ratios: &BTreeMap<String, f64>) -> bool {
    if zones.is_empty() {
        return false;
    }
    if ratios.is_empty() {
        return true;
    }
    let total: f64 = zones.values().map(|n| *n as f64).sum();
    ratios.iter().any(|(zone, ratio)| match zones.get(zone) {
        None => true,
        Some(n) => {
            let minimum = (total * ratio * (1.0 / (1.0 + OVERLOAD_THRESHOLD))).ceil();
            (*n as f64) < minimum
        }
    })
}

/// A resource quantity in thousandths, rounded up (Go's `MilliValue`).
pub fn parse_milli(quantity: &str) -> Option<i64> {
    i64::try_from(parse_milli_wide(quantity)?).ok()
}

/// [`parse_milli`] without the `i64` bound: storage sizes of 8 PiB and up
/// (placeholder sizes of shared filesystems) exceed it in thousandths, and
/// must still compare exactly as Go's `Quantity.Cmp` does.
pub fn parse_milli_wide(quantity: &str) -> Option<i128> {
    let s = quantity.trim();
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let digits = format!("{int_part}{frac_part}");
    if digits.len() > 30 {
        return None;
    }
    let mantissa: i128 = digits.parse().ok()?;
    let (pow10, pow2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        exp if exp.starts_with(['e', 'E']) => (exp[1..].parse().ok()?, 0),
        _ => return None,
    };
    let scaled = mantissa.checked_mul(1i128.checked_shl(pow2)?)?;
    let exponent = pow10 + 3 - frac_part.len() as i32;
    let milli = if exponent >= 0 {
        scaled.checked_mul(10i128.checked_pow(exponent.unsigned_abs())?)?
    } else {
        let divisor = 10i128
            .checked_pow(exponent.unsigned_abs())
            .unwrap_or(i128::MAX);
        let q = scaled / divisor;
        if scaled % divisor != 0 { q + 1 } else { q }
    };
    Some(if negative { -milli } else { milli })
}

#[cfg(test)]
mod tests;
