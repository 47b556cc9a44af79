use super::*;
use crate::controllers::endpointslice::fixtures::*;
use crate::controllers::endpointslice::hints::SliceInfo;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

fn node_cpu(name: &str, zone: Option<&str>, cpu: &str) -> Arc<Node> {
    let mut n = node(name, zone);
    n.status
        .as_mut()
        .unwrap()
        .allocatable
        .as_mut()
        .unwrap()
        .insert("cpu".into(), Quantity(cpu.into()));
    Arc::new(n)
}

fn control_plane(name: &str, zone: &str) -> Arc<Node> {
    let mut n = (*node_cpu(name, Some(zone), "64")).clone();
    n.metadata.labels.as_mut().unwrap().insert(
        "node-role.kubernetes.io/control-plane".into(),
        String::new(),
    );
    Arc::new(n)
}

fn not_ready_node(name: &str, zone: &str) -> Arc<Node> {
    let mut n = (*node_cpu(name, Some(zone), "64")).clone();
    n.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
    Arc::new(n)
}

fn ratios(nodes: &[Arc<Node>]) -> Option<BTreeMap<String, f64>> {
    let mut t = TopologyCache::default();
    t.set_nodes(nodes);
    t.cpu_ratios_by_zone
}

#[test]
fn zone_ratios_come_from_ready_worker_nodes() {
    let two = ratios(&[
        node_cpu("a1", Some("a"), "3"),
        node_cpu("b1", Some("b"), "1000m"),
        control_plane("cp", "c"),
        not_ready_node("nr", "c"),
    ]);
    assert_eq!(two, Some([("a".into(), 0.75), ("b".into(), 0.25)].into()));
    assert_eq!(ratios(&[node_cpu("a1", Some("a"), "4")]), None, "one zone");
    assert_eq!(
        ratios(&[node_cpu("a1", Some("a"), "4"), node_cpu("x", None, "4")]),
        None,
        "a node without zone"
    );
    assert_eq!(
        ratios(&[
            node_cpu("a1", Some("a"), "4"),
            node_cpu("b1", Some("b"), "0")
        ]),
        None,
        "a node without CPU"
    );
}

#[test]
fn allocations_refuse_what_cannot_be_balanced() {
    let mut t = TopologyCache::default();
    assert_eq!(t.allocations(4).unwrap_err(), NODES_READY_IN_ONE_ZONE_ONLY);
    t.set_nodes(&[node_cpu("a1", Some("a"), "4")]);
    assert_eq!(t.allocations(4).unwrap_err(), INSUFFICIENT_NODE_INFO);
    t.set_nodes(&[
        node_cpu("a1", Some("a"), "4"),
        node_cpu("b1", Some("b"), "4"),
        node_cpu("c1", Some("c"), "4"),
    ]);
    assert_eq!(
        t.allocations(2).unwrap_err(),
        "Insufficient number of endpoints (2 endpoints, 3 zones)"
    );
    t.set_nodes(&[
        node_cpu("a1", Some("a"), "1"),
        node_cpu("b1", Some("b"), "99"),
    ]);
    assert_eq!(
        t.allocations(2).unwrap_err(),
        "Unable to allocate minimum required endpoints to each zone without exceeding overload threshold (2 endpoints, 2 zones)"
    );
    t.set_nodes(&[
        node_cpu("a1", Some("a"), "4"),
        node_cpu("b1", Some("b"), "4"),
    ]);
    let a = t.allocations(4).unwrap();
    assert_eq!(
        a.get("a"),
        Some(&Allocation {
            minimum: 2,
            maximum: 2,
            desired: 2.0
        })
    );
}

/// A slice with one ready endpoint per zone given.
fn zoned(name: &str, zones: &[&str]) -> EndpointSlice {
    let eps: Vec<(String, String)> = zones
        .iter()
        .enumerate()
        .map(|(i, _)| (format!("10.0.0.{}", i + 1), format!("{name}-p{i}")))
        .collect();
    let refs: Vec<(&str, &str)> = eps.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let mut s = slice_with(name, "svc", &refs);
    for (e, z) in s.endpoints.as_mut().unwrap().iter_mut().zip(zones) {
        e.zone = (!z.is_empty()).then(|| z.to_string());
    }
    s
}

fn hint_zones(s: &EndpointSlice) -> Vec<String> {
    s.endpoints
        .iter()
        .flatten()
        .map(|e| {
            e.hints
                .as_ref()
                .and_then(|h| h.for_zones.as_ref())
                .map(|z| z[0].name.clone())
                .unwrap_or_default()
        })
        .collect()
}

fn two_zones() -> TopologyCache {
    let mut t = TopologyCache::default();
    t.set_nodes(&[
        node_cpu("a1", Some("a"), "4"),
        node_cpu("b1", Some("b"), "4"),
    ]);
    t
}

fn add<'a>(
    t: &mut TopologyCache,
    create: Vec<EndpointSlice>,
    unchanged: &'a [EndpointSlice],
) -> (SliceInfo<'a>, Vec<HintEvent>) {
    let mut si = SliceInfo {
        service: ObjectKey::new("ns", "svc"),
        address_type: AddressType::IPv4,
        create,
        update: Vec::new(),
        unchanged: unchanged.iter().collect(),
    };
    let events = t.add_hints(&mut si);
    (si, events)
}

#[test]
fn balanced_zones_get_same_zone_hints_and_one_enabled_event() {
    let mut t = two_zones();
    let (si, events) = add(&mut t, vec![zoned("s", &["a", "b", "a", "b"])], &[]);
    assert_eq!(hint_zones(&si.create[0]), vec!["a", "b", "a", "b"]);
    assert_eq!(
        events,
        vec![HintEvent {
            warning: false,
            reason: "TopologyAwareHintsEnabled",
            message: "Topology Aware Hints has been enabled, addressType: IPv4".into(),
        }]
    );
    assert!(t.has_populated_hints(&ObjectKey::new("ns", "svc")));

    // Unchanged slices with fitting hints stay unchanged, and no new Event.
    let hinted = [si.create[0].clone()];
    let (si, events) = add(&mut t, vec![], &hinted);
    assert!(events.is_empty());
    assert!(si.update.is_empty());
    assert_eq!(si.unchanged.len(), 1);
}

#[test]
fn surplus_endpoints_are_lent_to_the_short_zone() {
    let mut t = two_zones();
    let (si, _) = add(&mut t, vec![zoned("s", &["a", "a", "a", "b"])], &[]);
    let zones = hint_zones(&si.create[0]);
    assert_eq!(zones.iter().filter(|z| *z == "a").count(), 2);
    assert_eq!(zones.iter().filter(|z| *z == "b").count(), 2);
}

#[test]
fn unchanged_slices_without_hints_are_rehinted() {
    let mut t = two_zones();
    let unhinted = [zoned("s", &["a", "b"])];
    let (si, _) = add(&mut t, vec![], &unhinted);
    assert!(si.unchanged.is_empty());
    assert_eq!(hint_zones(&si.update[0]), vec!["a", "b"]);
}

#[test]
fn hints_are_withheld_with_a_warning_when_impossible() {
    let cases: Vec<(&str, TopologyCache, Vec<&str>, &str)> = vec![
        (
            "an endpoint without zone",
            two_zones(),
            vec!["a", "", "b", "a", "b", "a"],
            "One or more endpoints do not have a zone specified, addressType: IPv4",
        ),
        (
            "fewer endpoints than zones",
            two_zones(),
            vec!["a"],
            "Insufficient number of endpoints (1 endpoints, 2 zones), addressType: IPv4",
        ),
        (
            "no node information",
            TopologyCache::default(),
            vec!["a", "b"],
            "Nodes only ready in one zone, addressType: IPv4",
        ),
    ];
    for (name, mut t, zones, message) in cases {
        let mut s = zoned("s", &zones);
        for e in s.endpoints.as_mut().unwrap() {
            e.hints = Some(zone_hint("stale".into()));
        }
        let (si, events) = add(&mut t, vec![s], &[]);
        assert_eq!(events, vec![HintEvent::warning(message.into())], "{name}");
        assert!(
            hint_zones(&si.create[0]).iter().all(String::is_empty),
            "{name}"
        );
    }
}

#[test]
fn node_changes_reveal_overloaded_services() {
    let mut t = two_zones();
    add(&mut t, vec![zoned("s", &["a", "b", "a", "b"])], &[]);
    assert!(t.overloaded_services().is_empty());
    t.set_nodes(&[
        node_cpu("a1", Some("a"), "4"),
        node_cpu("b1", Some("b"), "4"),
        node_cpu("c1", Some("c"), "4"),
    ]);
    assert_eq!(t.overloaded_services(), vec![ObjectKey::new("ns", "svc")]);
}

#[test]
fn node_changes_matter_for_readiness_and_zone_only() {
    let a = node_cpu("n", Some("a"), "4");
    let mut relabelled = (*a).clone();
    relabelled
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(ZONE_LABEL.into(), "b".into());
    let mut other = (*a).clone();
    other.metadata.resource_version = Some("9".into());
    assert!(node_change_matters(&a, &relabelled));
    assert!(node_change_matters(&a, &not_ready_node("n", "a")));
    assert!(!node_change_matters(&a, &other));
}

#[test]
fn quantities_parse_to_rounded_up_millis() {
    let cases = [
        ("4", Some(4000)),
        ("3920m", Some(3920)),
        ("0.5", Some(500)),
        ("1.0005", Some(1001)),
        ("100u", Some(1)),
        ("2k", Some(2_000_000)),
        ("1Ki", Some(1_024_000)),
        ("1e3", Some(1_000_000)),
        ("", None),
        ("abc", None),
        ("1x", None),
    ];
    for (q, want) in cases {
        assert_eq!(parse_milli(q), want, "{q}");
    }
}
