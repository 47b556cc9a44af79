//! What a Service's slices should hold: its address types, one endpoint per
//! selected pod and family, and the ports each pod serves (upstream's
//! `utils.go` and `util/controller_utils.go`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::controllers::podutil;

/// The node label an endpoint's zone comes from.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The address types this controller writes (never the deprecated `FQDN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressType {
    IPv4,
    IPv6,
}

impl AddressType {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressType::IPv4 => "IPv4",
            AddressType::IPv6 => "IPv6",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "IPv4" => Some(AddressType::IPv4),
            "IPv6" => Some(AddressType::IPv6),
            _ => None,
        }
    }
}

impl fmt::Display for AddressType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Service's ClusterIP is allocated (not headless, not unset).
pub fn is_service_ip_set(service: &Service) -> bool {
    let ip = service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or("");
    !ip.is_empty() && ip != "None"
}

/// The address types the Service's slices carry: its `ipFamilies`; without
/// them (an apiserver that never defaulted them) the ClusterIP's family, and
/// for headless Services both, so no traffic is cut until they are set.
pub fn address_types(service: &Service) -> BTreeSet<AddressType> {
    let spec = service.spec.as_ref();
    let mut types: BTreeSet<AddressType> = spec
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|family| AddressType::parse(family))
        .collect();
    if !types.is_empty() {
        return types;
    }
    if is_service_ip_set(service) {
        let ip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
        let family = match parse_ip(ip) {
            Some(IpAddr::V6(_)) => AddressType::IPv6,
            _ => AddressType::IPv4,
        };
        types.insert(family);
        return types;
    }
    types.insert(AddressType::IPv4);
    types.insert(AddressType::IPv6);
    types
}

/// Whether the pod belongs in a slice at all: not finished and with an IP.
/// Pods being deleted stay, marked terminating.
pub fn should_include(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    if matches!(status.phase.as_deref(), Some("Succeeded") | Some("Failed")) {
        return false;
    }
    status.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
        || status.pod_ips.as_ref().is_some_and(|ips| !ips.is_empty())
}

/// Parses an IP as Go's `ParseIPSloppy` does: IPv4 octets may carry leading
/// zeros, and IPv4-mapped IPv6 addresses count as IPv4.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let ip = match s.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => IpAddr::V4(parse_sloppy_v4(s)?),
    };
    Some(match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    })
}

fn parse_sloppy_v4(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// The pod's addresses of one family, normalised.
pub fn endpoint_addresses(pod: &Pod, address_type: AddressType) -> Vec<String> {
    let ips = pod.status.as_ref().and_then(|s| s.pod_ips.as_ref());
    ips.into_iter()
        .flatten()
        .filter_map(|pod_ip| {
            let ip = parse_ip(&pod_ip.ip);
            if ip.is_none() {
                tracing::warn!(pod = ?pod.metadata.name, ip = %pod_ip.ip, "pod IP does not parse; skipped");
            }
            ip
        })
        .filter(|ip| match address_type {
            AddressType::IPv4 => ip.is_ipv4(),
            AddressType::IPv6 => ip.is_ipv6(),
        })
        .map(|ip| ip.to_string())
        .collect()
}

/// A pod gets a hostname in the Service's slices when it asked for one under
/// the Service's name as its subdomain.
pub fn should_set_hostname(pod: &Pod, service: &Service) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.hostname.as_deref().is_some_and(|h| !h.is_empty())
        && spec.subdomain.as_deref().unwrap_or("") == service.metadata.name.as_deref().unwrap_or("")
        && service.metadata.namespace == pod.metadata.namespace
}

fn non_empty(s: Option<&String>) -> Option<String> {
    s.filter(|s| !s.is_empty()).cloned()
}

/// The endpoint of one pod for one address type. Terminating pods stay
/// `serving` while Ready but are never `ready`, unless the Service publishes
/// not-ready addresses.
pub fn pod_to_endpoint(
    pod: &Pod,
    node: Option<&Node>,
    service: &Service,
    address_type: AddressType,
) -> Endpoint {
    let serving = podutil::is_ready(pod);
    let terminating = podutil::is_terminating(pod);
    let publish_not_ready = service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let ready = publish_not_ready || (serving && !terminating);
    let spec = pod.spec.as_ref();
    Endpoint {
        addresses: endpoint_addresses(pod, address_type),
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: non_empty(pod.metadata.namespace.as_ref()),
            name: non_empty(pod.metadata.name.as_ref()),
            uid: non_empty(pod.metadata.uid.as_ref()),
            ..Default::default()
        }),
        node_name: non_empty(spec.and_then(|s| s.node_name.as_ref())),
        zone: node.and_then(|n| non_empty(n.metadata.labels.as_ref()?.get(ZONE_LABEL))),
        hostname: if should_set_hostname(pod, service) {
            non_empty(spec.and_then(|s| s.hostname.as_ref()))
        } else {
            None
        },
        ..Default::default()
    }
}

/// Protocols are defaulted to TCP by the apiserver; objects that skipped
/// defaulting are read the same way.
fn protocol(p: Option<&String>) -> &str {
    p.map(String::as_str).unwrap_or("TCP")
}

/// The container port a Service port reaches on this pod: a numeric
/// targetPort as is, a named one looked up among the containers' (and
/// sidecars') ports with the same protocol.
pub fn find_port(pod: &Pod, service_port: &ServicePort) -> Option<i32> {
    match service_port.target_port.as_ref() {
        None => Some(service_port.port),
        Some(IntOrString::Int(port)) => Some(*port),
        Some(IntOrString::String(name)) => {
            let spec = pod.spec.as_ref()?;
            let want = protocol(service_port.protocol.as_ref());
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name) && protocol(p.protocol.as_ref()) == want)
                .map(|p| p.container_port)
        }
    }
}

/// The ports of the pod's endpoints, in upstream's order (see
/// [`sort_ports`]). Ports a pod cannot serve are left out, so pods of one
/// Service may land in different port groups.
pub fn endpoint_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    let service_ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
    let mut ports: Vec<EndpointPort> = service_ports
        .into_iter()
        .flatten()
        .filter_map(|sp| {
            let Some(port) = find_port(pod, sp) else {
                tracing::debug!(pod = ?pod.metadata.name, port = ?sp.name, "no suitable port on pod");
                return None;
            };
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(protocol(sp.protocol.as_ref()).to_string()),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect();
    sort_ports(&mut ports);
    ports
}

/// Orders ports as upstream does before writing them: by the FNV-128a hash
/// of their Go `spew` rendering. Only the written order depends on it; it
/// keeps our slices identical to upstream's.
pub fn sort_ports(ports: &mut [EndpointPort]) {
    ports.sort_by_cached_key(port_hash);
}

fn port_hash(port: &EndpointPort) -> u128 {
    fn opt<T: fmt::Display>(v: Option<&T>) -> String {
        v.map_or_else(|| "<nil>".to_string(), ToString::to_string)
    }
    let rendered = format!(
        "(v1.EndpointPort){{Name:(*string){} Protocol:(*v1.Protocol){} Port:(*int32){} AppProtocol:(*string){}}}",
        opt(port.name.as_ref()),
        opt(port.protocol.as_ref()),
        opt(port.port.as_ref()),
        opt(port.app_protocol.as_ref()),
    );
    fnv1a_128(rendered.as_bytes())
}

fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u128::from(*b)).wrapping_mul(PRIME))
}

/// A port set as a key, whatever order the ports were written in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSetKey(Vec<(String, Option<i32>, String, Option<String>)>);

impl PortSetKey {
    pub fn of(ports: Option<&Vec<EndpointPort>>) -> Self {
        let mut key: Vec<_> = ports
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p.name.clone().unwrap_or_default(),
                    p.port,
                    protocol(p.protocol.as_ref()).to_string(),
                    p.app_protocol.clone(),
                )
            })
            .collect();
        key.sort();
        PortSetKey(key)
    }
}

/// What identifies an endpoint across syncs (upstream's endpoint hash): its
/// addresses, hostname and pod. Everything else may change in place.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointKey {
    addresses: Vec<String>,
    hostname: String,
    namespace: String,
    name: String,
}

impl EndpointKey {
    pub fn of(endpoint: &Endpoint) -> Self {
        let mut addresses = endpoint.addresses.clone();
        addresses.sort();
        let target = endpoint.target_ref.as_ref();
        EndpointKey {
            addresses,
            hostname: endpoint.hostname.clone().unwrap_or_default(),
            namespace: target.and_then(|t| t.namespace.clone()).unwrap_or_default(),
            name: target.and_then(|t| t.name.clone()).unwrap_or_default(),
        }
    }
}

/// Whether two endpoints with the same [`EndpointKey`] differ in a way worth
/// a write. Hints are left to the hints logic; the pod's resourceVersion in
/// targetRef is ignored.
pub fn endpoints_equal_beyond_key(a: &Endpoint, b: &Endpoint) -> bool {
    let conditions = |e: &Endpoint| {
        let c = e.conditions.clone().unwrap_or_default();
        (c.ready, c.serving, c.terminating)
    };
    let target = |e: &Endpoint| {
        e.target_ref.clone().map(|mut t| {
            t.resource_version = None;
            t
        })
    };
    a.node_name == b.node_name
        && a.zone == b.zone
        && conditions(a) == conditions(b)
        && target(a) == target(b)
}

/// The desired endpoints of one address type, grouped by port set: the ports
/// to write for the group and its endpoints by key.
pub type DesiredGroups = BTreeMap<PortSetKey, (Vec<EndpointPort>, BTreeMap<EndpointKey, Endpoint>)>;

/// Desired endpoints of one address type, and the pods skipped because their
/// node is unknown (upstream reports those as sync errors so the Service is
/// retried, yet still writes the rest).
pub fn desired_endpoints<'a>(
    service: &Service,
    pods: impl IntoIterator<Item = &'a Pod>,
    node: &dyn Fn(&str) -> Option<std::sync::Arc<Node>>,
    address_type: AddressType,
) -> (DesiredGroups, Vec<String>) {
    let mut groups = DesiredGroups::new();
    let mut errors = Vec::new();
    let publish_not_ready = service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let svc_ns = service.metadata.namespace.as_deref().unwrap_or("");
    let svc_name = service.metadata.name.as_deref().unwrap_or("");
    for pod in pods {
        if !should_include(pod) {
            continue;
        }
        let ports = endpoint_ports(service, pod);
        let group = groups
            .entry(PortSetKey::of(Some(&ports)))
            .or_insert_with(|| (ports, BTreeMap::new()));
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("");
        let found = node(node_name);
        if found.is_none() && !publish_not_ready {
            let pod_name = pod.metadata.name.as_deref().unwrap_or("");
            tracing::info!(pod = pod_name, service = %format!("{svc_ns}/{svc_name}"), node = node_name, "skipping Pod for Service, Node not found");
            errors.push(format!(
                "skipping Pod {pod_name} for Service {svc_ns}/{svc_name}: Node {node_name} Not Found"
            ));
            continue;
        }
        let endpoint = pod_to_endpoint(pod, found.as_deref(), service, address_type);
        if !endpoint.addresses.is_empty() {
            group.1.insert(EndpointKey::of(&endpoint), endpoint);
        }
    }
    (groups, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::endpointslice::fixtures::*;

    #[test]
    fn address_types_follow_ip_families_then_cluster_ip() {
        // (name, clusterIP, ipFamilies, address types)
        type Case<'a> = (&'a str, Option<&'a str>, &'a [&'a str], &'a [AddressType]);
        let cases: &[Case] = &[
            (
                "families",
                Some("10.0.0.1"),
                &["IPv6", "IPv4"],
                &[AddressType::IPv4, AddressType::IPv6],
            ),
            ("v4 cluster ip", Some("10.0.0.1"), &[], &[AddressType::IPv4]),
            ("v6 cluster ip", Some("fd00::1"), &[], &[AddressType::IPv6]),
            (
                "headless",
                Some("None"),
                &[],
                &[AddressType::IPv4, AddressType::IPv6],
            ),
            ("headless v6", Some("None"), &["IPv6"], &[AddressType::IPv6]),
            ("unset", None, &[], &[AddressType::IPv4, AddressType::IPv6]),
        ];
        for (name, cluster_ip, families, want) in cases {
            let mut svc = service("svc", &[("app", "a")]);
            let spec = svc.spec.as_mut().unwrap();
            spec.cluster_ip = cluster_ip.map(String::from);
            spec.ip_families = Some(families.iter().map(|f| f.to_string()).collect());
            let got: Vec<_> = address_types(&svc).into_iter().collect();
            assert_eq!(&got, want, "{name}");
        }
    }

    #[test]
    fn pods_without_ip_or_finished_are_left_out() {
        let cases = [
            ("running with ip", pod("a", "10.0.0.1"), true),
            ("no ip", pod("a", ""), false),
            (
                "succeeded",
                with_phase(pod("a", "10.0.0.1"), "Succeeded"),
                false,
            ),
            ("failed", with_phase(pod("a", "10.0.0.1"), "Failed"), false),
            ("terminating", terminating(pod("a", "10.0.0.1")), true),
        ];
        for (name, p, want) in cases {
            assert_eq!(should_include(&p), want, "{name}");
        }
    }

    #[test]
    fn addresses_are_split_by_family_and_normalised() {
        let p = pod_ips(
            "a",
            &["10.0.0.1", "fd00:0:0::1", "010.0.0.2", "::ffff:10.0.0.3"],
        );
        assert_eq!(
            endpoint_addresses(&p, AddressType::IPv4),
            vec!["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        );
        assert_eq!(endpoint_addresses(&p, AddressType::IPv6), vec!["fd00::1"]);
    }

    #[test]
    fn endpoint_conditions_follow_readiness_and_termination() {
        // (ready pod, terminating, publishNotReadyAddresses) → (ready, serving, terminating)
        let cases = [
            ((true, false, false), (true, true, false)),
            ((false, false, false), (false, false, false)),
            ((true, true, false), (false, true, true)),
            ((false, true, false), (false, false, true)),
            ((false, false, true), (true, false, false)),
            ((true, true, true), (true, true, true)),
        ];
        for ((is_ready, is_terminating, publish), want) in cases {
            let mut p = pod("a", "10.0.0.1");
            if !is_ready {
                p = not_ready(p);
            }
            if is_terminating {
                p = terminating(p);
            }
            let mut svc = service("svc", &[("app", "a")]);
            svc.spec.as_mut().unwrap().publish_not_ready_addresses = Some(publish);
            let ep = pod_to_endpoint(&p, None, &svc, AddressType::IPv4);
            let c = ep.conditions.unwrap();
            assert_eq!(
                (c.ready, c.serving, c.terminating),
                (Some(want.0), Some(want.1), Some(want.2)),
                "{:?}",
                (is_ready, is_terminating, publish)
            );
        }
    }

    #[test]
    fn endpoint_carries_node_zone_target_and_hostname() {
        let mut p = pod("web-1", "10.0.0.1");
        let spec = p.spec.as_mut().unwrap();
        spec.hostname = Some("web-1".into());
        spec.subdomain = Some("svc".into());
        let svc = service("svc", &[("app", "a")]);
        let n = node("node-1", Some("zone-a"));
        let ep = pod_to_endpoint(&p, Some(&n), &svc, AddressType::IPv4);
        assert_eq!(ep.node_name.as_deref(), Some("node-1"));
        assert_eq!(ep.zone.as_deref(), Some("zone-a"));
        assert_eq!(ep.hostname.as_deref(), Some("web-1"));
        let target = ep.target_ref.unwrap();
        assert_eq!(target.kind.as_deref(), Some("Pod"));
        assert_eq!(target.namespace.as_deref(), Some("ns"));
        assert_eq!(target.name.as_deref(), Some("web-1"));
        assert_eq!(target.uid.as_deref(), Some("uid-web-1"));

        let other = service("other", &[("app", "a")]);
        assert_eq!(
            pod_to_endpoint(&p, None, &other, AddressType::IPv4).hostname,
            None
        );
    }

    #[test]
    fn target_ports_resolve_by_number_or_by_name_and_protocol() {
        let mut p = pod("a", "10.0.0.1");
        p.spec.as_mut().unwrap().containers[0].ports = Some(vec![
            container_port("http", 8080, "TCP"),
            container_port("dns", 5353, "UDP"),
        ]);
        let cases = [
            (
                "number",
                service_port("p", 80, IntOrString::Int(9090), "TCP"),
                Some(9090),
            ),
            (
                "name",
                service_port("p", 80, IntOrString::String("http".into()), "TCP"),
                Some(8080),
            ),
            (
                "name, wrong protocol",
                service_port("p", 80, IntOrString::String("http".into()), "UDP"),
                None,
            ),
            (
                "udp name",
                service_port("p", 53, IntOrString::String("dns".into()), "UDP"),
                Some(5353),
            ),
            (
                "missing name",
                service_port("p", 80, IntOrString::String("nope".into()), "TCP"),
                None,
            ),
        ];
        for (name, sp, want) in cases {
            assert_eq!(find_port(&p, &sp), want, "{name}");
        }
    }

    #[test]
    fn sidecar_ports_resolve_but_plain_init_containers_do_not() {
        let mut p = pod("a", "10.0.0.1");
        let mut sidecar = p.spec.as_ref().unwrap().containers[0].clone();
        sidecar.name = "sidecar".into();
        sidecar.ports = Some(vec![container_port("metrics", 9100, "TCP")]);
        let mut init = sidecar.clone();
        init.name = "init".into();
        init.ports = Some(vec![container_port("setup", 9200, "TCP")]);
        sidecar.restart_policy = Some("Always".into());
        p.spec.as_mut().unwrap().init_containers = Some(vec![sidecar, init]);
        let metrics = service_port("m", 80, IntOrString::String("metrics".into()), "TCP");
        let setup = service_port("s", 81, IntOrString::String("setup".into()), "TCP");
        assert_eq!(find_port(&p, &metrics), Some(9100));
        assert_eq!(find_port(&p, &setup), None);
    }

    #[test]
    fn ports_are_ordered_by_upstream_hash() {
        // Hashes as Go's dump.ForHash + FNV-128a compute them.
        let http = EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            app_protocol: None,
        };
        assert_eq!(
            format!("{:032x}", port_hash(&http)),
            "0e874d5677090ee5c32afa85f637c347"
        );
        let h2c = EndpointPort {
            name: Some(String::new()),
            port: Some(80),
            protocol: Some("TCP".into()),
            app_protocol: Some("h2c".into()),
        };
        assert_eq!(
            format!("{:032x}", port_hash(&h2c)),
            "1192b420de09128e193491d392428cc7"
        );
        let dns = EndpointPort {
            name: Some("dns-udp".into()),
            port: Some(53),
            protocol: Some("UDP".into()),
            app_protocol: Some("kubernetes.io/h2c".into()),
        };
        assert_eq!(
            format!("{:032x}", port_hash(&dns)),
            "a245441f10b15b801d9a9a86ed487f65"
        );
        let mut ports = vec![h2c.clone(), http.clone()];
        sort_ports(&mut ports);
        assert_eq!(ports, vec![http, h2c]);
    }

    #[test]
    fn port_set_keys_ignore_order() {
        let a = service_port_ep("a", 1);
        let b = service_port_ep("b", 2);
        assert_eq!(
            PortSetKey::of(Some(&vec![a.clone(), b.clone()])),
            PortSetKey::of(Some(&vec![b, a]))
        );
        assert_eq!(PortSetKey::of(None), PortSetKey::of(Some(&vec![])));
    }

    #[test]
    fn endpoint_keys_ignore_address_order_and_conditions() {
        let mut a = pod_to_endpoint(
            &pod_ips("a", &["10.0.0.1", "10.0.0.2"]),
            None,
            &service("svc", &[("app", "a")]),
            AddressType::IPv4,
        );
        let mut b = a.clone();
        b.addresses.reverse();
        b.conditions = None;
        assert_eq!(EndpointKey::of(&a), EndpointKey::of(&b));
        assert!(!endpoints_equal_beyond_key(&a, &b));
        b.conditions = a.conditions.clone();
        b.target_ref.as_mut().unwrap().resource_version = Some("7".into());
        assert!(endpoints_equal_beyond_key(&a, &b));
        a.zone = Some("z".into());
        assert!(!endpoints_equal_beyond_key(&a, &b));
    }
}
