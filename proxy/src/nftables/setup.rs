//! The fixed part of a full sync: the table, its base chains and their
//! jumps, the top-level chains, sets and maps (upstream's setupNFTables).

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::names::*;
use super::render::RenderOptions;
use super::text::{Family, Out};
use crate::iptables::{LocalDetector, NodePortDestinations};
use crate::tracker::IpFamily;

/// Base chains: (name, type, hook, priority), priorities as numbers (older
/// nft does not take every named priority with every hook). The pre-DNAT
/// filters run before DNAT so source ranges see the load-balancer IP.
const BASE_CHAINS: [(&str, &str, &str, i32); 8] = [
    (FILTER_PREROUTING_PRE_DNAT, "filter", "prerouting", -110),
    (FILTER_OUTPUT_PRE_DNAT, "filter", "output", -110),
    (FILTER_INPUT, "filter", "input", 0),
    (FILTER_FORWARD, "filter", "forward", 0),
    (FILTER_OUTPUT, "filter", "output", 0),
    (NAT_PREROUTING, "nat", "prerouting", -100),
    (NAT_OUTPUT, "nat", "output", -100),
    (NAT_POSTROUTING, "nat", "postrouting", 100),
];

/// (to, from, match): the jumps from the base chains, in upstream's order.
/// Rejecting needs the input, forward or output hook (kernels before 5.9),
/// so no-endpoint checks are not done in prerouting.
const JUMPS: [(&str, &str, &str); 11] = [
    (NODE_PORT_ENDPOINTS_CHECK, FILTER_INPUT, "ct state new "),
    (SERVICE_ENDPOINTS_CHECK, FILTER_INPUT, "ct state new "),
    (SERVICE_ENDPOINTS_CHECK, FILTER_FORWARD, "ct state new "),
    (SERVICE_ENDPOINTS_CHECK, FILTER_OUTPUT, "ct state new "),
    (FIREWALL_CHECK, FILTER_PREROUTING_PRE_DNAT, "ct state new "),
    (FIREWALL_CHECK, FILTER_OUTPUT_PRE_DNAT, "ct state new "),
    (SERVICES, NAT_OUTPUT, ""),
    (SERVICES, NAT_PREROUTING, ""),
    (MASQUERADING, NAT_POSTROUTING, ""),
    (CLUSTER_IPS_CHECK, FILTER_FORWARD, "ct state new "),
    (CLUSTER_IPS_CHECK, FILTER_OUTPUT, "ct state new "),
];

/// The sets and maps whose elements follow the services.
pub(super) const ELEMENT_CONTAINERS: [(&str, &str); 7] = [
    ("set", CLUSTER_IPS),
    ("map", SERVICE_IPS),
    ("map", FIREWALL_IPS),
    ("map", NO_ENDPOINT_SERVICES),
    ("map", NO_ENDPOINT_NODE_PORTS),
    ("map", SERVICE_NODE_PORTS),
    ("set", HAIRPIN_CONNECTIONS),
];

/// Writes the fixed part; `mark` is the masquerade bit as `0x…`,
/// `masquerade` the rule that sets it.
pub(super) fn write_setup(
    out: &mut Out,
    options: &RenderOptions,
    fam: Family,
    mark: &str,
    masquerade: &str,
    recreate_base_chains: bool,
) {
    let ip = fam.ip;
    let addr = fam.addr;
    out.cmd(
        "add",
        "table",
        "{ comment \"rules for understudy-proxy\" ; }",
    );
    if recreate_base_chains {
        for (name, ..) in BASE_CHAINS {
            out.cmd("add", "chain", name);
            out.cmd("delete", "chain", name);
        }
    }
    for (name, kind, hook, priority) in BASE_CHAINS {
        out.cmd(
            "add",
            "chain",
            &format!("{name} {{ type {kind} hook {hook} priority {priority} ; }}"),
        );
        out.cmd("flush", "chain", name);
    }
    let mut created = BTreeSet::new();
    for (to, from, matcher) in JUMPS {
        if created.insert(to) {
            out.chain(to);
        }
        out.rule(from, &format!("{matcher}jump {to}"));
    }

    out.cmd(
        "add",
        "set",
        &format!(
            "{HAIRPIN_CONNECTIONS} {{ type {addr} . {addr} . inet_proto . inet_service ; comment \"service hairpin connections\" ; }}"
        ),
    );
    // Marked traffic is masqueraded once: the mark is cleared so a packet
    // that passes through again is not masqueraded twice.
    out.rule(
        MASQUERADING,
        &format!("mark and {mark} != 0 mark set mark xor {mark} masquerade fully-random"),
    );
    // A pod reaching itself through a service must see the reply come from
    // the service, so it is masqueraded.
    out.rule(
        MASQUERADING,
        &format!(
            "ct status dnat {ip} saddr . {ip} daddr . meta l4proto . th dport @{HAIRPIN_CONNECTIONS} masquerade fully-random"
        ),
    );

    out.cmd(
        "add",
        "set",
        &format!("{CLUSTER_IPS} {{ type {addr} ; comment \"Active ClusterIPs\" ; }}"),
    );
    out.rule_commented(
        CLUSTER_IPS_CHECK,
        &format!("{ip} daddr @{CLUSTER_IPS} reject"),
        "Reject traffic to invalid ports of ClusterIPs",
    );
    if !options.service_cidrs.is_empty() {
        let cidrs: Vec<String> = options
            .service_cidrs
            .iter()
            .map(|c| c.to_string())
            .collect();
        out.rule_commented(
            CLUSTER_IPS_CHECK,
            &format!("{ip} daddr {{ {} }} drop", cidrs.join(", ")),
            "Drop traffic to unallocated ClusterIPs",
        );
    }

    // "add" before "delete", so deleting a set that is not there is no error.
    out.cmd(
        "add",
        "set",
        &format!(
            "{NODE_PORT_IPS} {{ type {addr} ; comment \"IPs that accept NodePort traffic\" ; }}"
        ),
    );
    let node_port_ips: Option<Vec<&IpAddr>> = match &options.node_port_destinations {
        NodePortDestinations::AllLocal => None,
        NodePortDestinations::Ips(ips) => Some(
            ips.iter()
                .filter(|ip| IpFamily::of(ip) == options.family && !ip.is_loopback())
                .collect(),
        ),
    };
    match &node_port_ips {
        None => out.cmd("delete", "set", NODE_PORT_IPS),
        Some(ips) => {
            out.cmd("flush", "set", NODE_PORT_IPS);
            for node_ip in ips {
                out.cmd(
                    "add",
                    "element",
                    &format!("{NODE_PORT_IPS} {{ {node_ip} }}"),
                );
            }
        }
    }

    out.cmd(
        "add",
        "map",
        &format!(
            "{NO_ENDPOINT_SERVICES} {{ type {addr} . inet_proto . inet_service : verdict ; comment \"vmap to drop or reject packets to services with no endpoints\" ; }}"
        ),
    );
    out.cmd(
        "add",
        "map",
        &format!(
            "{NO_ENDPOINT_NODE_PORTS} {{ type inet_proto . inet_service : verdict ; comment \"vmap to drop or reject packets to service nodeports with no endpoints\" ; }}"
        ),
    );
    out.cmd(
        "add",
        "chain",
        &format!("{REJECT_CHAIN} {{ comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\" ; }}"),
    );
    out.cmd("flush", "chain", REJECT_CHAIN);
    out.rule(REJECT_CHAIN, "reject");
    out.rule(
        SERVICE_ENDPOINTS_CHECK,
        &format!("{ip} daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}"),
    );
    let node_port_match = match node_port_ips {
        None => fam.not_localhost.to_string(),
        Some(_) => format!("{ip} daddr @{NODE_PORT_IPS}"),
    };
    out.rule(
        NODE_PORT_ENDPOINTS_CHECK,
        &format!("{node_port_match} meta l4proto . th dport vmap @{NO_ENDPOINT_NODE_PORTS}"),
    );

    out.cmd(
        "add",
        "map",
        &format!(
            "{FIREWALL_IPS} {{ type {addr} . inet_proto . inet_service : verdict ; comment \"destinations that are subject to LoadBalancerSourceRanges\" ; }}"
        ),
    );
    out.rule(
        FIREWALL_CHECK,
        &format!("{ip} daddr . meta l4proto . th dport vmap @{FIREWALL_IPS}"),
    );

    out.cmd(
        "add",
        "map",
        &format!(
            "{SERVICE_IPS} {{ type {addr} . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}"
        ),
    );
    out.cmd(
        "add",
        "map",
        &format!(
            "{SERVICE_NODE_PORTS} {{ type inet_proto . inet_service : verdict ; comment \"NodePort traffic\" ; }}"
        ),
    );
    if options.masquerade_all {
        out.rule_commented(
            SERVICES,
            &format!("{ip} daddr @{CLUSTER_IPS} {masquerade}"),
            "masquerade all clusterIP traffic",
        );
    } else if let Some(not_local) = nft_local_match(&options.local_detector, options.family, true) {
        // Off-cluster clients may route the service range via any node,
        // which may forward to another node: masquerade so replies return.
        out.rule_commented(
            SERVICES,
            &format!("{ip} daddr @{CLUSTER_IPS} {not_local} {masquerade}"),
            "masquerade clusterIP traffic from outside cluster",
        );
    }
    out.rule(
        SERVICES,
        &format!("{ip} daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"),
    );
    let node_port_dispatch = match &options.node_port_destinations {
        NodePortDestinations::AllLocal => format!("fib daddr type local {}", fam.not_localhost),
        NodePortDestinations::Ips(_) => format!("{ip} daddr @{NODE_PORT_IPS}"),
    };
    out.rule(
        SERVICES,
        &format!("{node_port_dispatch} meta l4proto . th dport vmap @{SERVICE_NODE_PORTS}"),
    );

    // Refilled whole below.
    for (kind, name) in ELEMENT_CONTAINERS {
        out.cmd("flush", kind, name);
    }
}

/// The detector as an nft match (upstream's IfLocalNFT / IfNotLocalNFT);
/// `None` when nothing tells local pods apart.
pub fn nft_local_match(detector: &LocalDetector, family: IpFamily, negate: bool) -> Option<String> {
    let not = if negate { "!= " } else { "" };
    match detector {
        LocalDetector::None => None,
        LocalDetector::Cidr(cidr) => {
            let ip = Family::of(family).ip;
            Some(format!("{ip} saddr {not}{cidr}"))
        }
        LocalDetector::Bridge(name) => Some(format!("iifname {not}{name}")),
        LocalDetector::InterfacePrefix(prefix) => Some(format!("iifname {not}{prefix}*")),
    }
}
