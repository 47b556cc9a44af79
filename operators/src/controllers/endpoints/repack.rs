//! Upstream's RepackSubsets: regroup addresses so that every subset holds
//! the addresses that offer exactly the same ports (with the same
//! readiness), then sort everything into one canonical order. A fresh build
//! and the stored object then compare equal whenever nothing changed.
//!
//! The order is upstream's exactly, so our objects are byte-for-byte the
//! ones kube-controller-manager writes: addresses by IP then pod UID, and
//! ports and subsets by the FNV-128a hash of their `spew` rendering (Go's
//! `DeepHashObject`), which [`go_port`] and [`go_subset`] reproduce.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use super::subsets::{Address, Port, Subset, TargetRef};

/// Stands for "no ports" so port-less (headless) addresses are kept.
fn no_ports() -> Port {
    Port {
        port: -1,
        ..Port::default()
    }
}

pub fn repack(subsets: &[Subset]) -> Vec<Subset> {
    // Distinct addresses by IP and pod UID (two pods may share an IP, e.g.
    // host-network pods); the first copy seen is the one kept.
    let mut addresses: Vec<&Address> = Vec::new();
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    // Per port: the addresses offering it, and whether each is ready there.
    let mut by_port: HashMap<Port, BTreeMap<usize, bool>> = HashMap::new();

    for subset in subsets {
        let sentinel = [no_ports()];
        let ports: &[Port] = if subset.ports.is_empty() {
            &sentinel
        } else {
            &subset.ports
        };
        for port in ports {
            let marked = subset
                .addresses
                .iter()
                .map(|a| (a, true))
                .chain(subset.not_ready_addresses.iter().map(|a| (a, false)));
            for (address, ready) in marked {
                let uid = address.target_ref.as_ref().map_or("", |r| r.uid.as_str());
                let i = *index.entry((&address.ip, uid)).or_insert_with(|| {
                    addresses.push(address);
                    addresses.len() - 1
                });
                // Not ready on any copy of the address wins.
                by_port
                    .entry(port.clone())
                    .or_default()
                    .entry(i)
                    .and_modify(|r| *r &= ready)
                    .or_insert(ready);
            }
        }
    }

    // Ports whose addresses (with readiness) are the same share a subset.
    let mut groups: HashMap<Vec<(usize, bool)>, Vec<Port>> = HashMap::new();
    for (port, members) in by_port {
        let ports = groups.entry(members.into_iter().collect()).or_default();
        if port.port > 0 {
            ports.push(port);
        }
    }
    let repacked = groups
        .into_iter()
        .map(|(members, ports)| {
            let pick = |want: bool| {
                members
                    .iter()
                    .filter(|(_, ready)| *ready == want)
                    .map(|(i, _)| addresses[*i].clone())
                    .collect()
            };
            Subset {
                addresses: pick(true),
                not_ready_addresses: pick(false),
                ports,
            }
        })
        .collect();
    sort_subsets(repacked)
}

/// Upstream's SortSubsets.
pub fn sort_subsets(mut subsets: Vec<Subset>) -> Vec<Subset> {
    for subset in &mut subsets {
        subset.addresses.sort_by(address_order);
        subset.not_ready_addresses.sort_by(address_order);
        subset
            .ports
            .sort_by_cached_key(|p| fnv128a(go_port(p).as_bytes()));
    }
    subsets.sort_by_cached_key(|s| fnv128a(go_subset(s).as_bytes()));
    subsets
}

/// By IP (as bytes), then pod UID, an address without a pod first.
fn address_order(a: &Address, b: &Address) -> std::cmp::Ordering {
    let uid = |x: &Address| x.target_ref.as_ref().map(|r| r.uid.clone());
    a.ip.as_bytes()
        .cmp(b.ip.as_bytes())
        .then_with(|| uid(a).cmp(&uid(b)))
}

/// FNV-1a, 128 bits; the big-endian digest compares as the number does.
pub fn fnv128a(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u128::from(*b)).wrapping_mul(PRIME))
}

fn go_opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("<nil>")
}

fn go_port_fields(out: &mut String, p: &Port) {
    let _ = write!(
        out,
        "{{Name:(string){} Port:(int32){} Protocol:(v1.Protocol){} AppProtocol:(*string){}}}",
        p.name,
        p.port,
        p.protocol,
        go_opt(&p.app_protocol)
    );
}

fn go_target_ref(out: &mut String, r: &Option<TargetRef>) {
    out.push_str("(*v1.ObjectReference)");
    match r {
        None => out.push_str("<nil>"),
        Some(r) => {
            let _ = write!(
                out,
                "{{Kind:(string){} Namespace:(string){} Name:(string){} UID:(types.UID){} \
                 APIVersion:(string){} ResourceVersion:(string){} FieldPath:(string){}}}",
                r.kind, r.namespace, r.name, r.uid, r.api_version, r.resource_version, r.field_path
            );
        }
    }
}

fn go_address_list(out: &mut String, addresses: &[Address]) {
    out.push_str("([]v1.EndpointAddress)");
    if addresses.is_empty() {
        out.push_str("<nil>");
        return;
    }
    out.push('[');
    for (i, a) in addresses.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(
            out,
            "{{IP:(string){} Hostname:(string){} NodeName:(*string){} TargetRef:",
            a.ip,
            a.hostname,
            go_opt(&a.node_name)
        );
        go_target_ref(out, &a.target_ref);
        out.push('}');
    }
    out.push(']');
}

/// A port as Go's `dump.ForHash` renders a `v1.EndpointPort`.
pub fn go_port(p: &Port) -> String {
    let mut out = String::from("(v1.EndpointPort)");
    go_port_fields(&mut out, p);
    out
}

/// A repacked subset as Go's `dump.ForHash` renders a `v1.EndpointSubset`
/// (repacking leaves empty lists nil, which renders as `<nil>`).
pub fn go_subset(s: &Subset) -> String {
    let mut out = String::from("(v1.EndpointSubset){Addresses:");
    go_address_list(&mut out, &s.addresses);
    out.push_str(" NotReadyAddresses:");
    go_address_list(&mut out, &s.not_ready_addresses);
    out.push_str(" Ports:([]v1.EndpointPort)");
    if s.ports.is_empty() {
        out.push_str("<nil>");
    } else {
        out.push('[');
        for (i, p) in s.ports.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            go_port_fields(&mut out, p);
        }
        out.push(']');
    }
    out.push('}');
    out
}
