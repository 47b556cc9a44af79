use std::collections::BTreeMap;

use super::*;
use crate::controllers::endpointslice::fixtures::*;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn pods(range: std::ops::Range<usize>) -> Vec<Pod> {
    range.map(numbered_pod).collect()
}

fn numbered_pod(i: usize) -> Pod {
    let mut p = pod(
        &format!("p{i:03}"),
        &format!("10.0.{}.{}", i / 250, i % 250 + 1),
    );
    p.metadata.labels = Some([("app".to_string(), "a".to_string())].into());
    p
}

fn ep_of(i: usize) -> (String, String) {
    (
        format!("10.0.{}.{}", i / 250, i % 250 + 1),
        format!("p{i:03}"),
    )
}

/// An existing slice of `svc` holding the numbered pods, as we wrote it.
fn existing(name: &str, range: std::ops::Range<usize>) -> EndpointSlice {
    let eps: Vec<(String, String)> = range.map(ep_of).collect();
    let refs: Vec<(&str, &str)> = eps.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    slice_with(name, "svc", &refs)
}

fn svc() -> Service {
    service("svc", &[("app", "a")])
}

struct Run {
    plan: Plan,
}

fn run(service: &Service, pods: &[Pod], slices: &[EndpointSlice], max: usize) -> Run {
    let pods: Vec<Arc<Pod>> = pods.iter().cloned().map(Arc::new).collect();
    let slices: Vec<Arc<EndpointSlice>> = slices.iter().cloned().map(Arc::new).collect();
    let nodes: BTreeMap<String, Arc<Node>> =
        [("node-1".to_string(), Arc::new(node("node-1", None)))].into();
    let node = |name: &str| nodes.get(name).cloned();
    let plan = plan(
        &Inputs {
            service,
            pods: &pods,
            slices: &slices,
            node: &node,
            max_endpoints_per_slice: max,
        },
        &mut TopologyCache::default(),
    );
    Run { plan }
}

/// Endpoint counts of creates, (name, endpoint count) of updates, names of
/// deletes.
#[derive(Debug, PartialEq)]
struct Summary {
    create: Vec<usize>,
    update: Vec<(String, usize)>,
    delete: Vec<String>,
}

impl Run {
    fn summary(&self) -> Summary {
        let (c, u, d) = self.plan.all_writes();
        let mut update: Vec<(String, usize)> = u
            .iter()
            .map(|s| {
                (
                    s.metadata.name.clone().unwrap_or_default(),
                    endpoint_count(s),
                )
            })
            .collect();
        update.sort();
        let mut delete: Vec<String> = d
            .iter()
            .map(|s| s.metadata.name.clone().unwrap_or_default())
            .collect();
        delete.sort();
        Summary {
            create: c.iter().map(|s| endpoint_count(s)).collect(),
            update,
            delete,
        }
    }

    fn errors(&self) -> Vec<String> {
        self.plan
            .address_types
            .iter()
            .flat_map(|p| p.errors.clone())
            .collect()
    }
}

fn summary(create: &[usize], update: &[(&str, usize)], delete: &[&str]) -> Summary {
    Summary {
        create: create.to_vec(),
        update: update.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
        delete: delete.iter().map(|n| n.to_string()).collect(),
    }
}

fn with_uid(mut s: EndpointSlice, uid: &str) -> EndpointSlice {
    for o in s.metadata.owner_references.iter_mut().flatten() {
        o.uid = uid.into();
    }
    s
}

fn placeholder(name: &str) -> EndpointSlice {
    let mut s = slice_with(name, "svc", &[]);
    s.ports = Some(vec![]);
    s
}

fn not_ready_at(mut ps: Vec<Pod>, i: usize) -> Vec<Pod> {
    ps[i] = not_ready(ps[i].clone());
    ps
}

fn without(mut ps: Vec<Pod>, i: usize) -> Vec<Pod> {
    ps.remove(i);
    ps
}

#[test]
fn plans_the_fewest_writes() {
    struct Case {
        name: &'static str,
        pods: Vec<Pod>,
        slices: Vec<EndpointSlice>,
        max: usize,
        want: Summary,
    }
    let cases = vec![
        Case {
            name: "no pods: a placeholder",
            pods: vec![],
            slices: vec![],
            max: 100,
            want: summary(&[0], &[], &[]),
        },
        Case {
            name: "no pods, placeholder exists: nothing",
            pods: vec![],
            slices: vec![placeholder("svc-ph")],
            max: 100,
            want: summary(&[], &[], &[]),
        },
        Case {
            name: "250 pods, max 100: three slices",
            pods: pods(0..250),
            slices: vec![],
            max: 100,
            want: summary(&[100, 100, 50], &[], &[]),
        },
        Case {
            name: "in sync: nothing",
            pods: pods(0..150),
            slices: vec![existing("s1", 0..100), existing("s2", 100..150)],
            max: 100,
            want: summary(&[], &[], &[]),
        },
        Case {
            name: "one pod turns not ready: its slice only",
            pods: not_ready_at(pods(0..150), 120),
            slices: vec![existing("s1", 0..100), existing("s2", 100..150)],
            max: 100,
            want: summary(&[], &[("s2", 50)], &[]),
        },
        Case {
            name: "a pod removed: its slice updated",
            pods: without(pods(0..150), 10),
            slices: vec![existing("s1", 0..100), existing("s2", 100..150)],
            max: 100,
            want: summary(&[], &[("s1", 99)], &[]),
        },
        Case {
            name: "all pods of a slice removed: slice deleted",
            pods: pods(0..100),
            slices: vec![existing("s1", 0..100), existing("s2", 100..150)],
            max: 100,
            want: summary(&[], &[], &["s2"]),
        },
        Case {
            name: "new pods fill an existing slice before a new one",
            pods: pods(0..180),
            slices: vec![existing("s1", 0..50), existing("s2", 50..150)],
            max: 100,
            want: summary(&[], &[("s1", 80)], &[]),
        },
        Case {
            name: "the slice closest to full is preferred",
            pods: pods(0..160),
            slices: vec![existing("s1", 0..60), existing("s2", 60..150)],
            max: 100,
            want: summary(&[], &[("s2", 100)], &[]),
        },
        Case {
            name: "a slice being rewritten takes new pods first",
            pods: without(pods(0..151), 5),
            slices: vec![existing("s1", 0..100), existing("s2", 100..150)],
            max: 100,
            want: summary(&[], &[("s1", 100)], &[]),
        },
        Case {
            name: "too many new pods for one unchanged slice: new slice",
            pods: pods(0..300),
            slices: vec![existing("s1", 0..50)],
            max: 100,
            want: summary(&[100, 100], &[("s1", 100)], &[]),
        },
        Case {
            name: "pods appear: the placeholder is reused",
            pods: pods(0..3),
            slices: vec![placeholder("svc-ph")],
            max: 100,
            want: summary(&[], &[("svc-ph", 3)], &[]),
        },
        Case {
            name: "pods gone: the last slice becomes the placeholder",
            pods: vec![],
            slices: vec![existing("s1", 0..3)],
            max: 100,
            want: summary(&[], &[("s1", 0)], &[]),
        },
        Case {
            name: "a slice of an earlier Service of the same name is replaced",
            pods: pods(0..3),
            slices: vec![with_uid(existing("old", 0..3), "uid-old")],
            max: 100,
            want: summary(&[3], &[], &["old"]),
        },
        Case {
            name: "pods without IP or finished are left out",
            pods: vec![
                numbered_pod(0),
                pod("noip", ""),
                with_phase(numbered_pod(1), "Succeeded"),
            ],
            slices: vec![],
            max: 100,
            want: summary(&[1], &[], &[]),
        },
    ];
    for case in cases {
        let got = run(&svc(), &case.pods, &case.slices, case.max).summary();
        assert_eq!(got, case.want, "{}", case.name);
    }
}

#[test]
fn new_slices_are_labelled_and_owned_as_upstream() {
    let mut service = svc();
    service.metadata.labels = Some(
        [
            ("team".to_string(), "x".to_string()),
            (SERVICE_NAME_LABEL.to_string(), "spoof".to_string()),
        ]
        .into(),
    );
    let r = run(&service, &pods(0..2), &[], 100);
    let (create, _, _) = r.plan.all_writes();
    let s = create[0];
    assert_eq!(s.metadata.generate_name.as_deref(), Some("svc-"));
    assert_eq!(s.metadata.name, None);
    assert_eq!(s.metadata.namespace.as_deref(), Some("ns"));
    assert_eq!(s.address_type, "IPv4");
    let labels = s.metadata.labels.clone().unwrap();
    let want: BTreeMap<String, String> = [
        ("team", "x"),
        (SERVICE_NAME_LABEL, "svc"),
        (MANAGED_BY_LABEL, "endpointslice-controller.k8s.io"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(labels, want);
    let owners = s.metadata.owner_references.clone().unwrap();
    assert_eq!(
        owners,
        vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: "svc".into(),
            uid: "uid-svc".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]
    );
    assert_eq!(s.ports, Some(vec![service_port_ep("http", 8080)]));
    assert_eq!(
        s.endpoints.as_ref().unwrap()[0],
        endpoint("10.0.0.1", "p000")
    );
}

#[test]
fn headless_services_get_the_headless_label() {
    let mut service = svc();
    service.spec.as_mut().unwrap().cluster_ip = Some("None".into());
    let r = run(&service, &pods(0..1), &[], 100);
    let (create, _, _) = r.plan.all_writes();
    let labels = create[0].metadata.labels.clone().unwrap();
    assert_eq!(labels.get(HEADLESS_LABEL).map(String::as_str), Some(""));
}

#[test]
fn service_label_changes_update_slices() {
    let mut service = svc();
    service.metadata.labels = Some([("team".to_string(), "y".to_string())].into());
    let r = run(&service, &pods(0..3), &[existing("s1", 0..3)], 100);
    let (create, update, delete) = r.plan.all_writes();
    assert!(create.is_empty() && delete.is_empty());
    let labels = update[0].metadata.labels.as_ref().unwrap();
    assert_eq!(labels.get("team").map(String::as_str), Some("y"));
    assert_eq!(update[0].metadata.resource_version.as_deref(), Some("1"));
}

#[test]
fn named_target_ports_group_pods_by_resolved_port() {
    let mut service = svc();
    service.spec.as_mut().unwrap().ports = Some(vec![service_port(
        "http",
        80,
        IntOrString::String("web".into()),
        "TCP",
    )]);
    let with_port = |mut p: Pod, port: Option<i32>| {
        p.spec.as_mut().unwrap().containers[0].ports =
            port.map(|n| vec![container_port("web", n, "TCP")]);
        p
    };
    let ps = vec![
        with_port(numbered_pod(0), Some(8080)),
        with_port(numbered_pod(1), Some(8080)),
        with_port(numbered_pod(2), Some(9090)),
        with_port(numbered_pod(3), None),
    ];
    let r = run(&service, &ps, &[], 100);
    let (create, update, delete) = r.plan.all_writes();
    assert!(update.is_empty() && delete.is_empty());
    let mut groups: Vec<(Option<Vec<EndpointPort>>, usize)> = create
        .iter()
        .map(|s| (s.ports.clone(), endpoint_count(s)))
        .collect();
    groups.sort_by_key(|(_, n)| *n);
    assert_eq!(
        groups,
        vec![
            (Some(vec![]), 1),
            (Some(vec![service_port_ep("http", 9090)]), 1),
            (Some(vec![service_port_ep("http", 8080)]), 2),
        ]
    );
}

#[test]
fn dual_stack_services_get_slices_per_address_type() {
    let mut service = svc();
    service.spec.as_mut().unwrap().ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
    let ps = vec![
        pod_ips("a", &["10.0.0.1", "fd00::1"]),
        pod_ips("b", &["10.0.0.2"]),
    ];
    let r = run(&service, &ps, &[], 100);
    let by_type: Vec<(String, Vec<Vec<String>>)> = r
        .plan
        .address_types
        .iter()
        .flat_map(|p| &p.writes.create)
        .map(|s| {
            (
                s.address_type.clone(),
                s.endpoints
                    .iter()
                    .flatten()
                    .map(|e| e.addresses.clone())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        by_type,
        vec![
            (
                "IPv4".to_string(),
                vec![vec!["10.0.0.1".to_string()], vec!["10.0.0.2".to_string()]]
            ),
            ("IPv6".to_string(), vec![vec!["fd00::1".to_string()]]),
        ]
    );
}

#[test]
fn slices_of_dropped_address_types_are_deleted() {
    let mut v6 = existing("v6", 0..0);
    v6.address_type = "IPv6".into();
    let mut fqdn = existing("fqdn", 0..0);
    fqdn.address_type = "FQDN".into();
    let r = run(&svc(), &pods(0..1), &[existing("s1", 0..1), v6, fqdn], 100);
    assert_eq!(r.summary(), summary(&[], &[], &["fqdn", "v6"]));
}

#[test]
fn terminating_pods_stay_as_serving_not_ready() {
    let ps = vec![
        terminating(numbered_pod(0)),
        terminating(not_ready(numbered_pod(1))),
    ];
    let r = run(&svc(), &ps, &[], 100);
    let (create, _, _) = r.plan.all_writes();
    let conditions: Vec<_> = create[0]
        .endpoints
        .iter()
        .flatten()
        .map(|e| {
            let c = e.conditions.clone().unwrap();
            (c.ready, c.serving, c.terminating)
        })
        .collect();
    assert_eq!(
        conditions,
        vec![
            (Some(false), Some(true), Some(true)),
            (Some(false), Some(false), Some(true)),
        ]
    );
}

#[test]
fn slices_written_by_upstream_are_adopted_without_writes() {
    // Upstream's slices carry the same managed-by label, so they are ours;
    // endpoint order and port order within them do not matter.
    let mut upstream = existing("svc-abcde", 0..3);
    upstream.endpoints.as_mut().unwrap().reverse();
    upstream.metadata.annotations = Some(
        [(
            "endpoints.kubernetes.io/last-change-trigger-time".to_string(),
            "2026-01-01T00:00:00Z".to_string(),
        )]
        .into(),
    );
    let r = run(&svc(), &pods(0..3), &[upstream], 100);
    assert_eq!(r.summary(), summary(&[], &[], &[]));

    // A resourceVersion-only difference in targetRef is no change either.
    let mut upstream = existing("svc-abcde", 0..3);
    for e in upstream.endpoints.iter_mut().flatten() {
        e.target_ref.as_mut().unwrap().resource_version = Some("42".into());
    }
    let r = run(&svc(), &pods(0..3), &[upstream], 100);
    assert_eq!(r.summary(), summary(&[], &[], &[]));
}

#[test]
fn pods_on_unknown_nodes_are_skipped_and_reported() {
    let mut lost = numbered_pod(1);
    lost.spec.as_mut().unwrap().node_name = Some("gone".into());
    let r = run(&svc(), &[numbered_pod(0), lost.clone()], &[], 100);
    assert_eq!(r.summary(), summary(&[1], &[], &[]));
    assert_eq!(
        r.errors(),
        vec!["skipping Pod p001 for Service ns/svc: Node gone Not Found".to_string()]
    );

    // Unless the Service publishes not-ready addresses.
    let mut service = svc();
    service.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
    let r = run(&service, &[numbered_pod(0), lost], &[], 100);
    assert_eq!(r.summary(), summary(&[2], &[], &[]));
    assert!(r.errors().is_empty());
}

#[test]
fn multi_port_slices_write_ports_in_upstream_order() {
    let mut service = svc();
    service.spec.as_mut().unwrap().ports = Some(vec![
        service_port("http", 80, IntOrString::Int(8080), "TCP"),
        service_port("metrics", 9100, IntOrString::Int(9100), "TCP"),
        service_port("dns", 53, IntOrString::Int(53), "UDP"),
    ]);
    let r = run(&service, &pods(0..1), &[], 100);
    let (create, _, _) = r.plan.all_writes();
    let mut want = vec![
        service_port_ep("http", 8080),
        service_port_ep("metrics", 9100),
        EndpointPort {
            protocol: Some("UDP".into()),
            ..service_port_ep("dns", 53)
        },
    ];
    crate::controllers::endpointslice::desired::sort_ports(&mut want);
    assert_eq!(create[0].ports.as_ref(), Some(&want));

    // Existing slices with the same ports in another order are a match.
    let mut reordered = existing("s1", 0..1);
    let mut ports = want.clone();
    ports.reverse();
    reordered.ports = Some(ports);
    let r = run(&service, &pods(0..1), &[reordered], 100);
    assert_eq!(r.summary(), summary(&[], &[], &[]));
}
