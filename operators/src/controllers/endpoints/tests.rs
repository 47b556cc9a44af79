//! Table-driven tests of the pure parts; no API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{EndpointSubset, Endpoints, Pod, Service};
use serde_json::{Value, json};

use super::enqueue::services_to_sync;
use super::plan::{self, Plan, labels_correct, truncate};
use super::repack::{fnv128a, go_port, go_subset, repack};
use super::subsets::{
    Address, Port, Subset, build_subsets, equal_ignoring_resource_version, from_api,
    parse_ip_sloppy,
};
use super::trigger::{self, trigger_time};
use crate::key::ObjectKey;

fn service(extra: Value) -> Service {
    let mut base = json!({
        "metadata": {"name": "web", "namespace": "ns", "labels": {"app": "web"},
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "ipFamilies": ["IPv4"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]}
    });
    merge(&mut base, extra);
    serde_json::from_value(base).expect("service")
}

fn pod(name: &str, ip: &str, extra: Value) -> Pod {
    let mut base = json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                     "resourceVersion": "1", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i",
                 "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                   "conditions": [{"type": "Ready", "status": "True",
                                   "lastTransitionTime": "2026-01-01T00:01:00Z"}]}
    });
    merge(&mut base, extra);
    serde_json::from_value(base).expect("pod")
}

/// JSON merge patch, so a case states only what differs.
fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (b, p) => *b = p,
    }
}

fn not_ready() -> Value {
    json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})
}

fn addr(ip: &str, pod: &str) -> Address {
    Address {
        ip: ip.into(),
        hostname: String::new(),
        node_name: Some("node-1".into()),
        target_ref: Some(super::subsets::TargetRef {
            kind: "Pod".into(),
            namespace: "ns".into(),
            name: pod.into(),
            uid: format!("uid-{pod}"),
            ..Default::default()
        }),
    }
}

fn port(name: &str, port: i32) -> Port {
    Port {
        name: name.into(),
        port,
        protocol: "TCP".into(),
        app_protocol: None,
    }
}

/// (ready IPs, not-ready IPs, ports as name:port) per subset.
type Shape = Vec<(Vec<String>, Vec<String>, Vec<String>)>;

fn shape(subsets: &[Subset]) -> Shape {
    subsets
        .iter()
        .map(|s| {
            (
                s.addresses.iter().map(|a| a.ip.clone()).collect(),
                s.not_ready_addresses.iter().map(|a| a.ip.clone()).collect(),
                s.ports
                    .iter()
                    .map(|p| format!("{}:{}", p.name, p.port))
                    .collect(),
            )
        })
        .collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn one(ready: &[&str], not_ready: &[&str], ports: &[&str]) -> Shape {
    vec![(strings(ready), strings(not_ready), strings(ports))]
}

#[test]
fn subsets_from_pods() {
    let terminating = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:05:00Z"}});
    let cases: Vec<(&str, Service, Vec<Pod>, Shape)> = vec![
        (
            "ready and not-ready pods",
            service(json!({})),
            vec![
                pod("a", "10.0.0.2", json!({})),
                pod("b", "10.0.0.1", not_ready()),
            ],
            one(&["10.0.0.2"], &["10.0.0.1"], &["http:8080"]),
        ),
        (
            "publishNotReadyAddresses makes every address ready",
            service(json!({"spec": {"publishNotReadyAddresses": true}})),
            vec![pod("b", "10.0.0.1", not_ready())],
            one(&["10.0.0.1"], &[], &["http:8080"]),
        ),
        (
            "terminating pods are dropped",
            service(json!({})),
            vec![pod("a", "10.0.0.1", terminating.clone())],
            vec![],
        ),
        (
            "terminating pods stay with publishNotReadyAddresses",
            service(json!({"spec": {"publishNotReadyAddresses": true}})),
            vec![pod("a", "10.0.0.1", terminating)],
            one(&["10.0.0.1"], &[], &["http:8080"]),
        ),
        (
            "finished pods and pods without IP are dropped",
            service(json!({"spec": {"publishNotReadyAddresses": true}})),
            vec![
                pod("a", "10.0.0.1", json!({"status": {"phase": "Succeeded"}})),
                pod("b", "10.0.0.2", json!({"status": {"phase": "Failed"}})),
                pod("c", "", json!({"status": {"podIP": null, "podIPs": null}})),
            ],
            vec![],
        ),
        (
            "numeric targetPort",
            service(
                json!({"spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 9000}]}}),
            ),
            vec![pod("a", "10.0.0.1", json!({}))],
            one(&["10.0.0.1"], &[], &["http:9000"]),
        ),
        (
            "a named port of another protocol does not resolve",
            service(
                json!({"spec": {"ports": [{"name": "http", "port": 80, "protocol": "UDP", "targetPort": "http"}]}}),
            ),
            vec![pod("a", "10.0.0.1", json!({}))],
            vec![],
        ),
        (
            "unresolvable for one pod only skips that pod's port",
            service(json!({})),
            vec![
                pod("a", "10.0.0.1", json!({})),
                pod(
                    "b",
                    "10.0.0.2",
                    json!({"spec": {"containers": [{"name": "c", "image": "i"}]}}),
                ),
            ],
            one(&["10.0.0.1"], &[], &["http:8080"]),
        ),
        (
            "a sidecar's named port resolves, a plain init container's does not",
            service(json!({"spec": {"ports": [
                {"name": "m", "port": 9090, "protocol": "TCP", "targetPort": "metrics"},
                {"name": "x", "port": 9091, "protocol": "TCP", "targetPort": "init"}]}})),
            vec![pod(
                "a",
                "10.0.0.1",
                json!({"spec": {"initContainers": [
                {"name": "s", "image": "i", "restartPolicy": "Always",
                 "ports": [{"name": "metrics", "containerPort": 9100}]},
                {"name": "i", "image": "i", "ports": [{"name": "init", "containerPort": 9200}]}]}}),
            )],
            one(&["10.0.0.1"], &[], &["m:9100"]),
        ),
        (
            "pods serving different ports get separate subsets",
            service(json!({"spec": {"ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]}})),
            vec![
                pod("a", "10.0.0.1", json!({})),
                pod(
                    "b",
                    "10.0.0.2",
                    json!({"spec": {"containers": [{"name": "c", "image": "i",
                    "ports": [{"name": "http", "containerPort": 9000}]}]}}),
                ),
            ],
            // Subsets in upstream's hash order.
            vec![
                (strings(&["10.0.0.2"]), vec![], strings(&["http:9000"])),
                (strings(&["10.0.0.1"]), vec![], strings(&["http:8080"])),
            ],
        ),
        (
            "headless without ports: addresses only",
            service(json!({"spec": {"clusterIP": "None", "ports": null}})),
            vec![
                pod("a", "10.0.0.1", json!({})),
                pod("b", "10.0.0.2", not_ready()),
            ],
            one(&["10.0.0.1"], &["10.0.0.2"], &[]),
        ),
        (
            "a Service with a virtual IP needs ports",
            service(json!({"spec": {"ports": null}})),
            vec![pod("a", "10.0.0.1", json!({}))],
            vec![],
        ),
        (
            "the Service's IP family picks the pod IP",
            service(json!({"spec": {"ipFamilies": ["IPv6"], "clusterIP": "fd00::10"}})),
            vec![
                pod(
                    "a",
                    "10.0.0.1",
                    json!({"status": {"podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::0001"}]}}),
                ),
                pod("b", "10.0.0.2", json!({})),
            ],
            one(&["fd00::1"], &[], &["http:8080"]),
        ),
        (
            "without ipFamilies the clusterIP decides",
            service(json!({"spec": {"ipFamilies": null, "clusterIP": "fd00::10"}})),
            vec![pod(
                "a",
                "10.0.0.1",
                json!({"status": {"podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::2"}]}}),
            )],
            one(&["fd00::2"], &[], &["http:8080"]),
        ),
    ];
    for (name, svc, pods, want) in cases {
        assert_eq!(shape(&build_subsets(&svc, &pods)), want, "{name}");
    }
}

#[test]
fn addresses_carry_node_pod_and_hostname() {
    let svc = service(json!({}));
    let cases = [
        ("no hostname", json!({}), ""),
        (
            "hostname under this service",
            json!({"spec": {"hostname": "h", "subdomain": "web"}}),
            "h",
        ),
        (
            "hostname under another",
            json!({"spec": {"hostname": "h", "subdomain": "other"}}),
            "",
        ),
        (
            "subdomain without hostname",
            json!({"spec": {"subdomain": "web"}}),
            "",
        ),
    ];
    for (name, extra, hostname) in cases {
        let subsets = build_subsets(&svc, &[pod("a", "10.0.0.1", extra)]);
        let mut want = addr("10.0.0.1", "a");
        want.hostname = hostname.into();
        assert_eq!(subsets[0].addresses, vec![want], "{name}");
    }
    let ports = &build_subsets(
        &service(json!({"spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080, "appProtocol": "h2c"}]}})),
        &[pod("a", "10.0.0.1", json!({}))],
    )[0]
    .ports;
    assert_eq!(
        ports,
        &vec![Port {
            name: String::new(),
            port: 8080,
            protocol: "TCP".into(),
            app_protocol: Some("h2c".into()),
        }]
    );
}

#[test]
fn sloppy_ips_normalize_as_go() {
    let cases = [
        ("10.0.0.1", Some("10.0.0.1")),
        ("010.000.000.001", Some("10.0.0.1")),
        ("::ffff:1.2.3.4", Some("1.2.3.4")),
        ("FD00:0:0::0001", Some("fd00::1")),
        ("10.0.0", None),
        ("", None),
        ("300.0.0.1", None),
    ];
    for (input, want) in cases {
        assert_eq!(
            parse_ip_sloppy(input).map(|ip| ip.to_string()).as_deref(),
            want,
            "{input}"
        );
    }
}

#[test]
fn go_hash_rendering_matches_upstream() {
    // Digests from Go's dump.ForHash + fnv.New128a on the same values.
    let p = Port {
        name: "http".into(),
        port: 80,
        protocol: "TCP".into(),
        app_protocol: None,
    };
    assert_eq!(
        go_port(&p),
        "(v1.EndpointPort){Name:(string)http Port:(int32)80 Protocol:(v1.Protocol)TCP AppProtocol:(*string)<nil>}"
    );
    assert_eq!(
        format!("{:032x}", fnv128a(go_port(&p).as_bytes())),
        "754b003f50f133a539c60d18cfb30a55"
    );
    let p = Port {
        name: String::new(),
        port: 80,
        protocol: "TCP".into(),
        app_protocol: Some("h2c".into()),
    };
    assert_eq!(
        format!("{:032x}", fnv128a(go_port(&p).as_bytes())),
        "a04e6efe061dd23ec49bae594f097da5"
    );
    let s = Subset {
        addresses: vec![
            Address {
                ip: "10.0.0.1".into(),
                hostname: String::new(),
                node_name: Some("n1".into()),
                target_ref: Some(super::subsets::TargetRef {
                    kind: "Pod".into(),
                    namespace: "ns".into(),
                    name: "p".into(),
                    uid: "u1".into(),
                    ..Default::default()
                }),
            },
            Address {
                ip: "10.0.0.2".into(),
                hostname: "h".into(),
                node_name: None,
                target_ref: None,
            },
        ],
        not_ready_addresses: vec![],
        ports: vec![Port {
            name: "a\"b\\c\n".into(),
            port: 1,
            protocol: "UDP".into(),
            app_protocol: None,
        }],
    };
    assert_eq!(
        format!("{:032x}", fnv128a(go_subset(&s).as_bytes())),
        "e858a7d4c1c2856e6736b5d78f21bdff"
    );
    assert_eq!(
        format!("{:032x}", fnv128a(go_subset(&Subset::default()).as_bytes())),
        "5ae23ef3811b585a8fa9bd9f2392e5f3"
    );
}

fn api_subsets(v: Value) -> Vec<Subset> {
    let list: Option<Vec<EndpointSubset>> = serde_json::from_value(v).expect("subsets");
    from_api(list.as_ref())
}

#[test]
fn repack_matches_upstream_output() {
    // Inputs and outputs of upstream's RepackSubsets (run in Go), order and all.
    let cases = [
        (
            "one pod per subset and port, as a sync builds them",
            json!([
                {"addresses": [{"ip": "10.0.0.3", "nodeName": "n1", "targetRef": {"kind": "Pod", "namespace": "ns", "name": "a", "uid": "uid-a"}}], "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
                {"addresses": [{"ip": "10.0.0.3", "nodeName": "n1", "targetRef": {"kind": "Pod", "namespace": "ns", "name": "a", "uid": "uid-a"}}], "ports": [{"name": "https", "port": 8443, "protocol": "TCP"}]},
                {"addresses": [{"ip": "10.0.0.1", "nodeName": "n1", "targetRef": {"kind": "Pod", "namespace": "ns", "name": "b", "uid": "uid-b"}}], "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
                {"addresses": [{"ip": "10.0.0.1", "nodeName": "n1", "targetRef": {"kind": "Pod", "namespace": "ns", "name": "b", "uid": "uid-b"}}], "ports": [{"name": "https", "port": 8443, "protocol": "TCP"}]},
                {"notReadyAddresses": [{"ip": "10.0.0.2", "nodeName": "n1", "targetRef": {"kind": "Pod", "namespace": "ns", "name": "c", "uid": "uid-c"}}], "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
                {"notReadyAddresses": [{"ip": "10.0.0.2", "nodeName": "n1", "targetRef": {"kind": "Pod", "namespace": "ns", "name": "c", "uid": "uid-c"}}], "ports": [{"name": "https", "port": 8443, "protocol": "TCP"}]}
            ]),
            json!([{"addresses":[{"ip":"10.0.0.1","nodeName":"n1","targetRef":{"kind":"Pod","namespace":"ns","name":"b","uid":"uid-b"}},{"ip":"10.0.0.3","nodeName":"n1","targetRef":{"kind":"Pod","namespace":"ns","name":"a","uid":"uid-a"}}],"notReadyAddresses":[{"ip":"10.0.0.2","nodeName":"n1","targetRef":{"kind":"Pod","namespace":"ns","name":"c","uid":"uid-c"}}],"ports":[{"name":"http","port":8080,"protocol":"TCP"},{"name":"https","port":8443,"protocol":"TCP"}]}]),
        ),
        (
            "mixed ports, port-less addresses and hash-ordered subsets",
            json!([{"notReadyAddresses": [{"ip": "10.0.0.1", "nodeName": "node-b"}], "ports": [{"name": "metrics", "port": 8079, "protocol": "SCTP", "appProtocol": "kubernetes.io/h2c"}]}, {"notReadyAddresses": [{"ip": "10.0.0.10", "nodeName": "node-a", "targetRef": {"kind": "Pod", "namespace": "ns", "name": "p8", "uid": "aaaa"}}]}, {"addresses": [{"ip": "fd00::a", "nodeName": "node-b", "targetRef": {"kind": "Pod", "namespace": "ns", "name": "p7", "uid": "aaaa"}}, {"ip": "10.0.0.1", "hostname": "host1", "nodeName": "", "targetRef": {"kind": "Pod", "namespace": "ns", "name": "p4", "uid": "zz"}}], "ports": [{"name": "https", "port": 81, "protocol": "TCP"}, {"port": 82, "protocol": "SCTP", "appProtocol": "kubernetes.io/h2c"}, {"name": "metrics", "port": 8079, "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"}]}]),
            json!([{"addresses": [{"ip": "10.0.0.1", "hostname": "host1", "nodeName": "", "targetRef": {"kind": "Pod", "namespace": "ns", "name": "p4", "uid": "zz"}}, {"ip": "fd00::a", "nodeName": "node-b", "targetRef": {"kind": "Pod", "namespace": "ns", "name": "p7", "uid": "aaaa"}}], "ports": [{"name": "metrics", "port": 8079, "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"}, {"name": "https", "port": 81, "protocol": "TCP"}, {"port": 82, "protocol": "SCTP", "appProtocol": "kubernetes.io/h2c"}]}, {"notReadyAddresses": [{"ip": "10.0.0.1", "nodeName": "node-b"}], "ports": [{"name": "metrics", "port": 8079, "protocol": "SCTP", "appProtocol": "kubernetes.io/h2c"}]}, {"notReadyAddresses": [{"ip": "10.0.0.10", "nodeName": "node-a", "targetRef": {"kind": "Pod", "namespace": "ns", "name": "p8", "uid": "aaaa"}}]}]),
        ),
    ];
    for (name, input, output) in cases {
        let got = repack(&api_subsets(input));
        assert_eq!(got, api_subsets(output), "{name}");
        assert_eq!(repack(&got), got, "{name}: repacking is idempotent");
    }
}

#[test]
fn repack_groups_by_port_set_and_readiness() {
    let (a, b) = (addr("10.0.0.1", "a"), addr("10.0.0.2", "b"));
    let s = |ready: &[&Address], not_ready: &[&Address], ports: &[Port]| Subset {
        addresses: ready.iter().map(|a| (*a).clone()).collect(),
        not_ready_addresses: not_ready.iter().map(|a| (*a).clone()).collect(),
        ports: ports.to_vec(),
    };
    let cases = [
        (
            "not ready on one copy wins for that port",
            vec![
                s(&[&a], &[], &[port("http", 80)]),
                s(&[], &[&a], &[port("http", 80)]),
            ],
            one(&[], &["10.0.0.1"], &["http:80"]),
        ),
        (
            "duplicates collapse",
            vec![
                s(&[&a, &a], &[], &[port("http", 80)]),
                s(&[&a], &[], &[port("http", 80)]),
            ],
            one(&["10.0.0.1"], &[], &["http:80"]),
        ),
        (
            "port-less addresses merge with nothing else",
            vec![s(&[&a], &[], &[]), s(&[&b], &[], &[])],
            one(&["10.0.0.1", "10.0.0.2"], &[], &[]),
        ),
        ("nothing", vec![], vec![]),
    ];
    for (name, input, want) in cases {
        assert_eq!(shape(&repack(&input)), want, "{name}");
    }
}

#[test]
fn comparison_ignores_pod_resource_versions_only() {
    let base = build_subsets(&service(json!({})), &[pod("a", "10.0.0.1", json!({}))]);
    let mut with_rv = base.clone();
    if let Some(r) = with_rv[0].addresses[0].target_ref.as_mut() {
        r.resource_version = "42".into();
    }
    assert!(equal_ignoring_resource_version(&base, &with_rv));
    let mut other_node = base.clone();
    other_node[0].addresses[0].node_name = Some("node-2".into());
    assert!(!equal_ignoring_resource_version(&base, &other_node));
    assert!(!equal_ignoring_resource_version(&base, &[]));
}

/// `n` ready and `m` not-ready addresses in one subset with one port.
fn big_subset(n: usize, m: usize, port_num: i32) -> Subset {
    let ip = |i: usize| format!("10.{}.{}.{}", port_num % 200, i / 250, i % 250);
    Subset {
        addresses: (0..n).map(|i| addr(&ip(i), "p")).collect(),
        not_ready_addresses: (n..n + m).map(|i| addr(&ip(i), "p")).collect(),
        ports: vec![port("p", port_num)],
    }
}

#[test]
fn truncation_keeps_ready_first_and_shares_proportionally() {
    // (ready, not ready) per subset before -> after, and whether cut.
    type Counts = Vec<(usize, usize)>;
    let cases: Vec<(&str, Counts, Counts, bool)> = vec![
        ("at capacity", vec![(600, 400)], vec![(600, 400)], false),
        (
            "only not-ready cut",
            vec![(600, 100), (300, 100)],
            vec![(600, 50), (300, 50)],
            true,
        ),
        (
            "ready over capacity: not-ready all go",
            vec![(800, 10), (400, 0)],
            vec![(667, 0), (333, 0)],
            true,
        ),
        (
            "rounding up starves the later ones",
            vec![(1, 1), (1, 1), (997, 1)],
            vec![(1, 1), (1, 0), (997, 0)],
            true,
        ),
    ];
    for (name, before, after, cut) in cases {
        let mut subsets: Vec<Subset> = before
            .iter()
            .enumerate()
            .map(|(i, (n, m))| big_subset(*n, *m, i as i32 + 1))
            .collect();
        assert_eq!(truncate(&mut subsets), cut, "{name}");
        let counts: Counts = subsets
            .iter()
            .map(|s| (s.addresses.len(), s.not_ready_addresses.len()))
            .collect();
        assert_eq!(counts, after, "{name}");
    }
}

fn stored(subsets: &[Subset], labels: Value, annotations: Value) -> Endpoints {
    let mut e: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "ns", "resourceVersion": "7",
                     "labels": labels, "annotations": annotations}
    }))
    .expect("endpoints");
    e.subsets = super::subsets::to_api(subsets);
    e
}

fn ours() -> Value {
    json!({"app": "web", "endpoints.kubernetes.io/managed-by": "endpoint-controller"})
}

fn t(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

#[test]
fn plans_write_only_what_differs() {
    let svc = service(json!({}));
    let subsets = build_subsets(
        &svc,
        &[
            pod("a", "10.0.0.1", json!({})),
            pod("b", "10.0.0.2", not_ready()),
        ],
    );
    let shuffled = {
        let mut s = subsets.clone();
        s[0].addresses.reverse();
        s
    };
    let other = build_subsets(&svc, &[pod("a", "10.0.0.1", json!({}))]);
    let when = Some(t("2026-01-01T00:01:00Z"));
    let nothing = |stored: Endpoints| (Some(stored), None::<&str>);
    let update = |stored: Endpoints, why: &'static str| (Some(stored), Some(why));
    let cases = [
        ("same", nothing(stored(&subsets, ours(), json!({})))),
        (
            "same once repacked",
            nothing(stored(&shuffled, ours(), json!({}))),
        ),
        (
            "other annotations are not compared",
            nothing(stored(
                &subsets,
                ours(),
                json!({"x": "y", plan::TRIGGER_TIME_ANNOTATION: "old"}),
            )),
        ),
        (
            "headless label is not compared",
            nothing(stored(
                &subsets,
                json!({"app": "web", "service.kubernetes.io/headless": "", "endpoints.kubernetes.io/managed-by": "endpoint-controller"}),
                json!({}),
            )),
        ),
        (
            "addresses differ",
            update(stored(&other, ours(), json!({})), "subsets"),
        ),
        (
            "managed-by missing",
            update(stored(&subsets, json!({"app": "web"}), json!({})), "labels"),
        ),
        (
            "extra label",
            update(
                stored(
                    &subsets,
                    json!({"app": "web", "x": "y", "endpoints.kubernetes.io/managed-by": "endpoint-controller"}),
                    json!({}),
                ),
                "labels",
            ),
        ),
        (
            "service label missing",
            update(
                stored(
                    &subsets,
                    json!({"endpoints.kubernetes.io/managed-by": "endpoint-controller"}),
                    json!({}),
                ),
                "labels",
            ),
        ),
        (
            "stale capacity annotation",
            update(
                stored(
                    &subsets,
                    ours(),
                    json!({plan::OVER_CAPACITY_ANNOTATION: "truncated"}),
                ),
                "capacity",
            ),
        ),
    ];
    for (name, (stored, why)) in cases {
        let got = plan::plan(&svc, stored.as_ref(), subsets.clone(), when);
        match (why, got) {
            (None, Plan::Nothing) => {}
            (Some(_), Plan::Update(e)) => {
                assert_eq!(e.metadata.resource_version.as_deref(), Some("7"), "{name}");
                assert_eq!(from_api(e.subsets.as_ref()), subsets, "{name}");
                let labels = e.metadata.labels.clone().unwrap_or_default();
                assert!(
                    labels_correct(&labels, &BTreeMap::from([("app".into(), "web".into())])),
                    "{name}"
                );
                let annotations = e.metadata.annotations.unwrap_or_default();
                assert!(
                    !annotations.contains_key(plan::OVER_CAPACITY_ANNOTATION),
                    "{name}"
                );
                assert_eq!(
                    annotations
                        .get(plan::TRIGGER_TIME_ANNOTATION)
                        .map(String::as_str),
                    Some("2026-01-01T00:01:00Z"),
                    "{name}"
                );
            }
            (why, got) => panic!("{name}: wanted {why:?}, got {got:?}"),
        }
    }
}

#[test]
fn a_new_endpoints_object_is_labelled_like_upstream() {
    let cases = [
        ("virtual IP", json!({}), None),
        ("headless", json!({"spec": {"clusterIP": "None"}}), Some("")),
        (
            "service's own headless label is dropped when not headless",
            json!({"metadata": {"labels": {"service.kubernetes.io/headless": "x"}}}),
            None,
        ),
    ];
    for (name, extra, headless) in cases {
        let svc = service(extra);
        let subsets = build_subsets(&svc, &[pod("a", "10.0.0.1", json!({}))]);
        let Plan::Create(e) = plan::plan(&svc, None, subsets, None) else {
            panic!("{name}: expected a create");
        };
        let labels = e.metadata.labels.unwrap_or_default();
        assert_eq!(e.metadata.name.as_deref(), Some("web"), "{name}");
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"), "{name}");
        assert_eq!(labels.get("app").map(String::as_str), Some("web"), "{name}");
        assert_eq!(
            labels.get(plan::MANAGED_BY_LABEL).map(String::as_str),
            Some("endpoint-controller"),
            "{name}"
        );
        assert_eq!(
            labels.get(plan::HEADLESS_LABEL).map(String::as_str),
            headless,
            "{name}"
        );
        assert_eq!(
            e.metadata.annotations, None,
            "{name}: no trigger time, no annotations"
        );
        assert!(e.metadata.resource_version.is_none(), "{name}");
    }
}

#[test]
fn over_capacity_is_truncated_annotated_and_then_left_alone() {
    let svc = service(json!({}));
    let pods: Vec<Pod> = (0..1001)
        .map(|i| {
            pod(
                &format!("p{i}"),
                &format!("10.1.{}.{}", i / 250, i % 250),
                json!({}),
            )
        })
        .collect();
    let subsets = build_subsets(&svc, &pods);
    let Plan::Create(created) = plan::plan(&svc, None, subsets.clone(), None) else {
        panic!("expected a create");
    };
    let written = from_api(created.subsets.as_ref());
    assert_eq!(written.iter().map(Subset::len).sum::<usize>(), 1000);
    assert_eq!(
        created
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(plan::OVER_CAPACITY_ANNOTATION))
            .map(String::as_str),
        Some("truncated")
    );
    let mut stored = created.clone();
    stored.metadata.resource_version = Some("7".into());
    assert_eq!(
        plan::plan(&svc, Some(&stored), subsets, None),
        Plan::Nothing,
        "the same truncation is not rewritten"
    );
    let fewer = build_subsets(&svc, &pods[..10]);
    let Plan::Update(updated) = plan::plan(&svc, Some(&stored), fewer, None) else {
        panic!("expected an update");
    };
    assert!(
        updated.metadata.annotations.is_none(),
        "annotation removed under capacity"
    );
}

#[test]
fn label_correctness_table() {
    let m = |v: Value| -> BTreeMap<String, String> { serde_json::from_value(v).expect("labels") };
    let cases = [
        (ours(), json!({"app": "web"}), true),
        (
            json!({"app": "web", "endpoints.kubernetes.io/managed-by": "someone"}),
            json!({"app": "web"}),
            false,
        ),
        (
            json!({"endpoints.kubernetes.io/managed-by": "endpoint-controller"}),
            json!({}),
            true,
        ),
        (
            json!({"app": "web", "service.kubernetes.io/headless": "", "endpoints.kubernetes.io/managed-by": "endpoint-controller"}),
            json!({"app": "web"}),
            true,
        ),
        (
            json!({"app": "api", "endpoints.kubernetes.io/managed-by": "endpoint-controller"}),
            json!({"app": "web"}),
            false,
        ),
        (ours(), json!({"app": "web", "tier": "x"}), false),
    ];
    for (endpoints, service, want) in cases {
        assert_eq!(
            labels_correct(&m(endpoints.clone()), &m(service.clone())),
            want,
            "{endpoints} vs {service}"
        );
    }
}

#[test]
fn trigger_times_follow_changes_since_the_last_sync() {
    let svc = service(json!({}));
    let ready_at = |name: &str, at: &str| {
        pod(
            name,
            "10.0.0.1",
            json!({"status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": at}]}}),
        )
    };
    let a1 = ready_at("a", "2026-01-01T00:01:00Z");
    let b2 = ready_at("b", "2026-01-01T00:02:00Z");
    let a3 = ready_at("a", "2026-01-01T00:03:00Z");

    let (first, seen) = trigger_time(None, &svc, [&a1]);
    assert_eq!(
        first,
        Some(t("2026-01-01T00:00:00Z")),
        "first sync: the Service's creation"
    );
    let (again, seen) = trigger_time(Some(&seen), &svc, [&a1]);
    assert_eq!(again, None, "nothing changed");
    let (added, seen) = trigger_time(Some(&seen), &svc, [&a1, &b2]);
    assert_eq!(added, Some(t("2026-01-01T00:02:00Z")), "a pod turned ready");
    let (moved, _) = trigger_time(Some(&seen), &svc, [&a3]);
    assert_eq!(moved, Some(t("2026-01-01T00:03:00Z")), "a changed; b left");
    let (_, only_a) = trigger_time(None, &svc, [&a1]);
    let (both, _) = trigger_time(Some(&only_a), &svc, [&a3, &b2]);
    assert_eq!(both, Some(t("2026-01-01T00:02:00Z")), "the earliest change");
    assert_eq!(
        trigger::format(t("2026-01-01T00:00:00Z")),
        "2026-01-01T00:00:00Z"
    );
    assert_eq!(
        trigger::format(t("2026-01-01T00:00:00.5Z")),
        "2026-01-01T00:00:00.5Z"
    );
}

/// (case, old pod, new pod, Services to sync).
type PodCase = (&'static str, Option<Pod>, Option<Pod>, BTreeSet<ObjectKey>);

#[test]
fn pod_changes_enqueue_the_services_concerned() {
    let svc = |name: &str, selector: Value| {
        Arc::new(service(
            json!({"metadata": {"name": name}, "spec": {"selector": selector}}),
        ))
    };
    let services = vec![
        svc("web", json!({"app": "web"})),
        svc("web-canary", json!({"app": "web", "track": "canary"})),
        svc("api", json!({"app": "api"})),
        svc("external", Value::Null),
    ];
    let base = pod("a", "10.0.0.1", json!({}));
    let with = |extra: Value| {
        let mut p = pod("a", "10.0.0.1", extra);
        p.metadata.resource_version = Some("2".into());
        p
    };
    let keys = |names: &[&str]| -> BTreeSet<ObjectKey> {
        names.iter().map(|n| ObjectKey::new("ns", *n)).collect()
    };
    let relisted = base.clone();
    let cases: Vec<PodCase> = vec![
        ("added", None, Some(base.clone()), keys(&["web"])),
        ("deleted", Some(base.clone()), None, keys(&["web"])),
        (
            "relist replay",
            Some(base.clone()),
            Some(relisted),
            keys(&[]),
        ),
        (
            "annotation only",
            Some(base.clone()),
            Some(with(json!({"metadata": {"annotations": {"x": "y"}}}))),
            keys(&[]),
        ),
        (
            "readiness",
            Some(base.clone()),
            Some(with(not_ready())),
            keys(&["web"]),
        ),
        (
            "IP",
            Some(base.clone()),
            Some(with(json!({"status": {"podIPs": [{"ip": "10.0.0.9"}]}}))),
            keys(&["web"]),
        ),
        (
            "node",
            Some(base.clone()),
            Some(with(json!({"spec": {"nodeName": "node-2"}}))),
            keys(&["web"]),
        ),
        (
            "terminating",
            Some(base.clone()),
            Some(with(
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            )),
            keys(&["web"]),
        ),
        (
            "labels only: services gained or lost",
            Some(base.clone()),
            Some(with(
                json!({"metadata": {"labels": {"app": "web", "track": "canary"}}}),
            )),
            keys(&["web-canary"]),
        ),
        (
            "labels moved to another app",
            Some(base.clone()),
            Some(with(json!({"metadata": {"labels": {"app": "api"}}}))),
            keys(&["web", "api"]),
        ),
        (
            "labels and readiness: every service before and after",
            Some(base.clone()),
            Some(with(
                json!({"metadata": {"labels": {"app": "web", "track": "canary"}},
                             "status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            )),
            keys(&["web", "web-canary"]),
        ),
        (
            "unselected pod",
            None,
            Some(pod(
                "z",
                "10.0.0.5",
                json!({"metadata": {"labels": {"app": "db"}}}),
            )),
            keys(&[]),
        ),
    ];
    for (name, old, new, want) in cases {
        assert_eq!(
            services_to_sync(old.as_ref(), new.as_ref(), &services),
            want,
            "{name}"
        );
    }
}
