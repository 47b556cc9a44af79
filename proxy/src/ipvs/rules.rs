//! The IPVS mode's iptables rules (upstream's createAndLinkKubeChain and
//! writeIptablesRules): a constant set that matches the ipsets rather than
//! one rule per service, rendered as `iptables-restore --noflush` input with
//! our chain names. A rule matching a set is written only while the set has
//! entries, as upstream.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::desired::Desired;
use super::ipsets::Set;
use crate::iptables::{JumpRule, LocalDetector};
use crate::tracker::IpFamily;

pub const SERVICES: &str = "US-SERVICES";
pub const POSTROUTING: &str = "US-POSTROUTING";
pub const NODE_PORT: &str = "US-NODE-PORT";
pub const LOAD_BALANCER: &str = "US-LOAD-BALANCER";
pub const MARK_MASQ: &str = "US-MARK-MASQ";
pub const FORWARD: &str = "US-FORWARD";
pub const PROXY_FIREWALL: &str = "US-PROXY-FIREWALL";
pub const SOURCE_RANGES_FIREWALL: &str = "US-SOURCE-RANGES-FIREWALL";
/// Keeps outside traffic to service addresses off the host's own ports
/// (https://issue.k8s.io/72236).
pub const IPVS_FILTER: &str = "US-IPVS-FILTER";
/// Keeps the node off load balancers whose source ranges leave it out
/// (https://issue.k8s.io/119656).
pub const IPVS_OUT_FILTER: &str = "US-IPVS-OUT-FILTER";

const NAT_CHAINS: [&str; 5] = [SERVICES, POSTROUTING, NODE_PORT, LOAD_BALANCER, MARK_MASQ];
const FILTER_CHAINS: [&str; 6] = [
    FORWARD,
    NODE_PORT,
    PROXY_FIREWALL,
    SOURCE_RANGES_FIREWALL,
    IPVS_FILTER,
    IPVS_OUT_FILTER,
];

/// The jumps from the built-in chains, in upstream's order; inserted at the
/// top by the IO side when missing, as in iptables mode.
pub fn jump_rules() -> Vec<JumpRule> {
    let jump = |table, from, to, comment| JumpRule {
        table,
        from,
        to,
        comment,
        conntrack_new: false,
    };
    let portals = "kubernetes service portals";
    let firewall = "kube-proxy firewall rules";
    let filter = "kubernetes ipvs access filter";
    vec![
        jump("nat", "OUTPUT", SERVICES, portals),
        jump("nat", "PREROUTING", SERVICES, portals),
        jump(
            "nat",
            "POSTROUTING",
            POSTROUTING,
            "kubernetes postrouting rules",
        ),
        jump("filter", "FORWARD", FORWARD, "kubernetes forwarding rules"),
        jump(
            "filter",
            "INPUT",
            NODE_PORT,
            "kubernetes health check rules",
        ),
        jump("filter", "INPUT", PROXY_FIREWALL, firewall),
        jump("filter", "FORWARD", PROXY_FIREWALL, firewall),
        jump("filter", "INPUT", IPVS_FILTER, filter),
        jump("filter", "OUTPUT", IPVS_OUT_FILTER, filter),
    ]
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleOptions {
    pub family: IpFamily,
    /// `1 << masqueradeBit`.
    pub masquerade_mark: u32,
    pub masquerade_all: bool,
    pub local_detector: LocalDetector,
}

enum Table {
    Nat,
    Filter,
}

/// Sets matched by one rule each: (set, table, from, to, match, protocol),
/// upstream's ipsetWithIptablesChain. The local NodePort sets come before
/// the plain ones: their RETURN must win over the masquerade mark.
const SET_RULES: [(Set, Table, &str, &str, &str, &str); 12] = [
    (
        Set::LoopBack,
        Table::Nat,
        POSTROUTING,
        "MASQUERADE",
        "dst,dst,src",
        "",
    ),
    (
        Set::LoadBalancer,
        Table::Nat,
        SERVICES,
        LOAD_BALANCER,
        "dst,dst",
        "",
    ),
    (
        Set::LoadBalancerLocal,
        Table::Nat,
        LOAD_BALANCER,
        "RETURN",
        "dst,dst",
        "",
    ),
    (
        Set::NodePortLocalTcp,
        Table::Nat,
        NODE_PORT,
        "RETURN",
        "dst",
        "tcp",
    ),
    (
        Set::NodePortTcp,
        Table::Nat,
        NODE_PORT,
        MARK_MASQ,
        "dst",
        "tcp",
    ),
    (
        Set::NodePortLocalUdp,
        Table::Nat,
        NODE_PORT,
        "RETURN",
        "dst",
        "udp",
    ),
    (
        Set::NodePortUdp,
        Table::Nat,
        NODE_PORT,
        MARK_MASQ,
        "dst",
        "udp",
    ),
    (
        Set::NodePortLocalSctp,
        Table::Nat,
        NODE_PORT,
        "RETURN",
        "dst,dst",
        "sctp",
    ),
    (
        Set::NodePortSctp,
        Table::Nat,
        NODE_PORT,
        MARK_MASQ,
        "dst,dst",
        "sctp",
    ),
    (
        Set::LoadBalancerFw,
        Table::Filter,
        PROXY_FIREWALL,
        SOURCE_RANGES_FIREWALL,
        "dst,dst",
        "",
    ),
    (
        Set::LoadBalancerSourceCidr,
        Table::Filter,
        SOURCE_RANGES_FIREWALL,
        "RETURN",
        "dst,dst,src",
        "",
    ),
    (
        Set::LoadBalancerSourceIp,
        Table::Filter,
        SOURCE_RANGES_FIREWALL,
        "RETURN",
        "dst,dst,src",
        "",
    ),
];

/// The whole restore input, nat then filter, as upstream writes it.
pub fn render(desired: &Desired, options: &RuleOptions) -> String {
    let family = options.family;
    let used: BTreeSet<Set> = desired.sets.keys().copied().collect();
    let name = |set: Set| set.name(family);
    let comment = |set: Set| format!("-m comment --comment \"{}\"", set.comment());
    // Go's %#08x, as upstream formats the mark.
    let mark = format!("0x{:08x}", options.masquerade_mark);
    let mut nat = Vec::new();
    let mut filter = Vec::new();

    let loopback = match family {
        IpFamily::V4 => "127.0.0.0/8",
        IpFamily::V6 => "::1/128",
    };
    // Connections to localhost never reach a service.
    nat.push(format!("-A {SERVICES} -s {loopback} -j RETURN"));

    for (set, table, from, to, matching, protocol) in &SET_RULES {
        if !used.contains(set) {
            continue;
        }
        let protocol = if protocol.is_empty() {
            String::new()
        } else {
            format!(" -p {protocol}")
        };
        let rule = format!(
            "-A {from}{protocol} {} -m set --match-set {} {matching} -j {to}",
            comment(*set),
            name(*set)
        );
        match table {
            Table::Nat => nat.push(rule),
            Table::Filter => filter.push(rule),
        }
    }

    if used.contains(&Set::ClusterIp) {
        let head = format!(
            "-A {SERVICES} {} -m set --match-set {}",
            comment(Set::ClusterIp),
            name(Set::ClusterIp)
        );
        if options.masquerade_all {
            nat.push(format!("{head} dst,dst -j {MARK_MASQ}"));
        } else if options.local_detector.is_implemented() {
            // Off-cluster traffic to a service address (a static route to any
            // node) may bounce to another node: masquerade it.
            let not_local = options.local_detector.if_not_local().join(" ");
            nat.push(format!("{head} dst,dst {not_local} -j {MARK_MASQ}"));
        } else {
            // The dummy interface holds every service address, so the node
            // may pick one as the source of its own connections to a service:
            // masquerade those.
            nat.push(format!("{head} src,dst -j {MARK_MASQ}"));
        }
    }

    let external_accepts = |nat: &mut Vec<String>, head: &str| {
        // Traffic from off the machine (not bridged, not local) and traffic
        // to external IPs that are local addresses stays with IPVS.
        nat.push(format!(
            "{head} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT"
        ));
        nat.push(format!("{head} -m addrtype --dst-type LOCAL -j ACCEPT"));
    };
    for set in [Set::ExternalIp, Set::ExternalIpLocal] {
        if !used.contains(&set) {
            continue;
        }
        let head = format!(
            "-A {SERVICES} {} -m set --match-set {} dst,dst",
            comment(set),
            name(set)
        );
        if set == Set::ExternalIp {
            nat.push(format!("{head} -j {MARK_MASQ}"));
        }
        external_accepts(&mut nat, &head);
    }

    nat.push(format!(
        "-A {SERVICES} -m addrtype --dst-type LOCAL -j {NODE_PORT}"
    ));
    nat.push(format!("-A {LOAD_BALANCER} -j {MARK_MASQ}"));
    filter.push(format!("-A {SOURCE_RANGES_FIREWALL} -j DROP"));

    for entry in &desired.no_node_access {
        let ip = entry.address;
        filter.push(format!(
            "-A {IPVS_OUT_FILTER} -s {ip} -m ipvs --vaddr {ip} --vproto {} --vport {} -j DROP",
            entry.protocol.lower(),
            entry.port
        ));
    }

    // Accept traffic to virtual servers in case other rules would drop it;
    // last in the services chain.
    for set in [Set::ClusterIp, Set::LoadBalancer] {
        if used.contains(&set) {
            nat.push(format!(
                "-A {SERVICES} -m set --match-set {} dst,dst -j ACCEPT",
                name(set)
            ));
        }
    }

    filter.push(format!(
        "-A {FORWARD} -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT"
    ));
    filter.push(format!(
        "-A {FORWARD} -m comment --comment \"kubernetes forwarding conntrack rule\" \
         -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    ));
    filter.push(format!(
        "-A {NODE_PORT} {} -m set --match-set {} dst -j ACCEPT",
        comment(Set::HealthCheckNodePort),
        name(Set::HealthCheckNodePort)
    ));
    // Service addresses answer only on their service ports: anything else
    // new to an address on the dummy interface is refused.
    for (set, matching) in [
        (Set::LoadBalancer, "dst,dst"),
        (Set::ClusterIp, "dst,dst"),
        (Set::ExternalIp, "dst,dst"),
        (Set::ExternalIpLocal, "dst,dst"),
        (Set::HealthCheckNodePort, "dst"),
    ] {
        filter.push(format!(
            "-A {IPVS_FILTER} -m set --match-set {} {matching} -j RETURN",
            name(set)
        ));
    }
    filter.push(format!(
        "-A {IPVS_FILTER} -m conntrack --ctstate NEW -m set --match-set {} dst -j REJECT",
        name(Set::IpvsIps)
    ));

    nat.push(format!(
        "-A {POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN"
    ));
    // The mark is cleared so a packet that passes through again is not
    // masqueraded twice.
    nat.push(format!("-A {POSTROUTING} -j MARK --xor-mark {mark}"));
    nat.push(format!(
        "-A {POSTROUTING} -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
    ));
    nat.push(format!("-A {MARK_MASQ} -j MARK --or-mark {mark}"));

    let mut text = String::from("*nat\n");
    for chain in NAT_CHAINS {
        let _ = writeln!(text, ":{chain} - [0:0]");
    }
    for rule in &nat {
        let _ = writeln!(text, "{rule}");
    }
    text.push_str("COMMIT\n*filter\n");
    for chain in FILTER_CHAINS {
        let _ = writeln!(text, ":{chain} - [0:0]");
    }
    for rule in &filter {
        let _ = writeln!(text, "{rule}");
    }
    text.push_str("COMMIT\n");
    text
}

#[cfg(test)]
mod tests;
