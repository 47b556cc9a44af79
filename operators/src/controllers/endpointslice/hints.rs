//! Routing hints on endpoints: the `trafficDistribution` field's same-zone /
//! same-node hints, the topology-mode annotation's CPU-balanced zone hints
//! (see [`super::topology`]), or none, in which case stale hints are removed.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointHints, EndpointSlice, ForNode, ForZone};

use super::desired::AddressType;
use super::topology::{self, TopologyCache};
use crate::key::ObjectKey;

pub const TOPOLOGY_MODE_ANNOTATION: &str = "service.kubernetes.io/topology-mode";
pub const DEPRECATED_TOPOLOGY_HINTS_ANNOTATION: &str = "service.kubernetes.io/topology-aware-hints";

/// An Event about hints, recorded on the Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HintEvent {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

impl HintEvent {
    pub fn warning(message: String) -> Self {
        HintEvent {
            warning: true,
            reason: "TopologyAwareHintsDisabled",
            message,
        }
    }
}

pub fn with_address_type(message: &str, address_type: AddressType) -> String {
    format!("{message}, addressType: {address_type}")
}

/// Whether the topology annotation asks for automatic hints (the
/// deprecated annotation wins when both are set).
pub fn topology_hints_enabled(service: &Service) -> bool {
    let annotations = service.metadata.annotations.as_ref();
    let value = annotations.and_then(|a| {
        a.get(DEPRECATED_TOPOLOGY_HINTS_ANNOTATION)
            .or_else(|| a.get(TOPOLOGY_MODE_ANNOTATION))
    });
    matches!(value.map(String::as_str), Some("Auto") | Some("auto"))
}

fn traffic_distribution(service: &Service) -> Option<&str> {
    let td = service.spec.as_ref()?.traffic_distribution.as_deref()?;
    matches!(td, "PreferClose" | "PreferSameZone" | "PreferSameNode").then_some(td)
}

pub fn is_ready(endpoint: &Endpoint) -> bool {
    endpoint
        .conditions
        .as_ref()
        .and_then(|c| c.ready)
        .unwrap_or(false)
}

/// The slices of one address type as the hints logic sees them.
pub struct SliceInfo<'a> {
    pub service: ObjectKey,
    pub address_type: AddressType,
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    /// Slices not otherwise written; ones whose hints must change are moved
    /// (copied) into `update`.
    pub unchanged: Vec<&'a EndpointSlice>,
}

fn names(slices: &[EndpointSlice]) -> BTreeSet<&str> {
    slices
        .iter()
        .filter_map(|s| s.metadata.name.as_deref())
        .collect()
}

fn unchanged_slices<'a>(
    existing: &[&'a EndpointSlice],
    update: &[EndpointSlice],
    delete: &[EndpointSlice],
) -> Vec<&'a EndpointSlice> {
    let mut changed = names(update);
    changed.extend(names(delete));
    existing
        .iter()
        .copied()
        .filter(|s| !changed.contains(s.metadata.name.as_deref().unwrap_or_default()))
        .collect()
}

/// Sets or clears hints on the slices about to be written, and adds
/// unchanged slices whose hints are wrong to the updates. Returns the
/// Events to record.
pub fn apply(
    service: &Service,
    address_type: AddressType,
    existing: &[&EndpointSlice],
    create: &mut Vec<EndpointSlice>,
    update: &mut Vec<EndpointSlice>,
    delete: &[EndpointSlice],
    topology: &mut TopologyCache,
) -> Vec<HintEvent> {
    let key = ObjectKey::of(service);
    let annotation = topology_hints_enabled(service);
    let distribution = traffic_distribution(service).filter(|_| !annotation);
    let mut events = Vec::new();
    let unchanged = unchanged_slices(existing, update, delete);
    let mut si = SliceInfo {
        service: key.clone(),
        address_type,
        create: std::mem::take(create),
        update: std::mem::take(update),
        unchanged,
    };
    if annotation {
        events = topology.add_hints(&mut si);
    } else {
        if topology.has_populated_hints(&key) {
            tracing::info!(service = %key, %address_type, "TopologyAwareHints annotation has changed, removing hints");
            events.push(HintEvent::warning(with_address_type(
                topology::TOPOLOGY_AWARE_HINTS_DISABLED,
                address_type,
            )));
        }
        topology.remove_hints(&key, address_type);
        if distribution.is_none() {
            remove_hints_from_slices(&mut si);
        }
    }
    *create = si.create;
    *update = si.update;
    if let Some(distribution) = distribution {
        let unchanged = unchanged_slices(existing, update, delete);
        prefer_close(distribution == "PreferSameNode", create, update, unchanged);
    }
    events
}

/// Clears all hints on the slices to be written, and queues unchanged
/// slices that still carry hints for an update without them.
pub fn remove_hints_from_slices(si: &mut SliceInfo<'_>) {
    for slice in si.create.iter_mut().chain(si.update.iter_mut()) {
        for endpoint in slice.endpoints.iter_mut().flatten() {
            endpoint.hints = None;
        }
    }
    let mut still_unchanged = Vec::new();
    for slice in std::mem::take(&mut si.unchanged) {
        let hinted = slice.endpoints.iter().flatten().any(|e| e.hints.is_some());
        if hinted {
            let mut copy = slice.clone();
            for endpoint in copy.endpoints.iter_mut().flatten() {
                endpoint.hints = None;
            }
            si.update.push(copy);
        } else {
            still_unchanged.push(slice);
        }
    }
    si.unchanged = still_unchanged;
}

/// The hints a ready endpoint should carry under PreferClose /
/// PreferSameZone (its zone) or PreferSameNode (its zone and node).
fn close_hints(endpoint: &Endpoint, node_hints: bool) -> Option<EndpointHints> {
    let for_zones = endpoint.zone.clone().map(|name| vec![ForZone { name }]);
    let for_nodes = endpoint
        .node_name
        .clone()
        .filter(|_| node_hints)
        .map(|name| vec![ForNode { name }]);
    (for_zones.is_some() || for_nodes.is_some()).then_some(EndpointHints {
        for_zones,
        for_nodes,
    })
}

fn hints_wrong(endpoint: &Endpoint, node_hints: bool) -> bool {
    let hints = endpoint.hints.as_ref();
    let zones = hints
        .and_then(|h| h.for_zones.as_deref())
        .unwrap_or_default();
    let nodes = hints
        .and_then(|h| h.for_nodes.as_deref())
        .unwrap_or_default();
    let zone_wrong = match endpoint.zone.as_deref() {
        Some(zone) => zones.len() != 1 || zones[0].name != zone,
        None => !zones.is_empty(),
    };
    let node_wrong = match endpoint.node_name.as_deref().filter(|_| node_hints) {
        Some(node) => nodes.len() != 1 || nodes[0].name != node,
        None => !nodes.is_empty(),
    };
    zone_wrong || node_wrong
}

/// Same-zone (and same-node) hints on every ready endpoint; not-ready
/// endpoints keep whatever they have, as upstream.
fn prefer_close(
    node_hints: bool,
    create: &mut [EndpointSlice],
    update: &mut Vec<EndpointSlice>,
    unchanged: Vec<&EndpointSlice>,
) {
    for slice in unchanged {
        let wrong = slice
            .endpoints
            .iter()
            .flatten()
            .any(|e| is_ready(e) && hints_wrong(e, node_hints));
        if wrong {
            update.push(slice.clone());
        }
    }
    for slice in create.iter_mut().chain(update.iter_mut()) {
        for endpoint in slice.endpoints.iter_mut().flatten() {
            if is_ready(endpoint) {
                endpoint.hints = close_hints(endpoint, node_hints);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::endpointslice::fixtures::*;

    fn hinted(zone: &str) -> Option<EndpointHints> {
        Some(EndpointHints {
            for_zones: Some(vec![ForZone { name: zone.into() }]),
            for_nodes: None,
        })
    }

    fn zoned_slice(name: &str, zone: Option<&str>, hints: Option<EndpointHints>) -> EndpointSlice {
        let mut s = slice_with(name, "svc", &[("10.0.0.1", "p1")]);
        let e = &mut s.endpoints.as_mut().unwrap()[0];
        e.zone = zone.map(String::from);
        e.hints = hints;
        s
    }

    fn run(service: &Service, existing: &[EndpointSlice]) -> (Vec<EndpointSlice>, Vec<HintEvent>) {
        let refs: Vec<&EndpointSlice> = existing.iter().collect();
        let mut create = Vec::new();
        let mut update = Vec::new();
        let mut topology = TopologyCache::default();
        let events = apply(
            service,
            AddressType::IPv4,
            &refs,
            &mut create,
            &mut update,
            &[],
            &mut topology,
        );
        (update, events)
    }

    #[test]
    fn hints_follow_traffic_distribution_or_are_removed() {
        // (trafficDistribution, zone, existing hint) → updated hint, if any update
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            Option<Option<&'a str>>,
        );
        let cases: &[Case] = &[
            ("", Some("a"), None, None),
            ("", Some("a"), Some("a"), Some(None)),
            ("PreferClose", Some("a"), None, Some(Some("a"))),
            ("PreferClose", Some("a"), Some("a"), None),
            ("PreferClose", Some("a"), Some("b"), Some(Some("a"))),
            ("PreferClose", None, Some("b"), Some(None)),
            ("PreferClose", None, None, None),
            ("PreferSameZone", Some("a"), None, Some(Some("a"))),
            ("Bogus", Some("a"), Some("a"), Some(None)),
        ];
        for (td, zone, hint, want) in cases {
            let mut svc = service("svc", &[("app", "a")]);
            if !td.is_empty() {
                svc.spec.as_mut().unwrap().traffic_distribution = Some(td.to_string());
            }
            let existing = [zoned_slice("s", *zone, hint.and_then(hinted))];
            let (update, events) = run(&svc, &existing);
            assert!(events.is_empty());
            let got = update.first().map(|s| {
                s.endpoints.as_ref().unwrap()[0]
                    .hints
                    .as_ref()
                    .and_then(|h| h.for_zones.as_ref())
                    .map(|z| z[0].name.clone())
            });
            let want = want.map(|w| w.map(String::from));
            assert_eq!(got, want, "{td} {zone:?} {hint:?}");
        }
    }

    #[test]
    fn prefer_same_node_adds_node_hints() {
        let mut svc = service("svc", &[("app", "a")]);
        svc.spec.as_mut().unwrap().traffic_distribution = Some("PreferSameNode".into());
        let mut s = zoned_slice("s", Some("a"), hinted("a"));
        s.endpoints.as_mut().unwrap()[0].node_name = Some("n1".into());
        let (update, _) = run(&svc, &[s]);
        let hints = update[0].endpoints.as_ref().unwrap()[0]
            .hints
            .clone()
            .unwrap();
        assert_eq!(hints.for_nodes.unwrap()[0].name, "n1");
        assert_eq!(hints.for_zones.unwrap()[0].name, "a");
    }

    #[test]
    fn annotation_wins_over_traffic_distribution() {
        let mut svc = service("svc", &[("app", "a")]);
        svc.spec.as_mut().unwrap().traffic_distribution = Some("PreferClose".into());
        svc.metadata.annotations =
            Some([(TOPOLOGY_MODE_ANNOTATION.to_string(), "Auto".to_string())].into());
        let existing = [zoned_slice("s", Some("a"), hinted("a"))];
        let (update, events) = run(&svc, &existing);
        // No node information yet: hints are removed, with an Event.
        assert_eq!(update[0].endpoints.as_ref().unwrap()[0].hints, None);
        assert_eq!(
            events,
            vec![HintEvent::warning(
                "Nodes only ready in one zone, addressType: IPv4".into()
            )]
        );
    }
}
