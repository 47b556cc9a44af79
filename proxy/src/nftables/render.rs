//! One `nft -f -` transaction for one IP family, from the tracker's state:
//! upstream's setupNFTables + syncProxyRules (pkg/proxy/nftables), object
//! for object, in our own table. Pure: the IO side supplies what it listed
//! from the kernel (our table's chains and sets) and what its last
//! successful transaction left in the sets and maps, and runs the text.
//!
//! A full sync recreates the fixed chains, sets and maps, flushes every
//! set and map and rewrites every service; a partial sync rewrites only the
//! changed services' chains and the elements that differ. Chains no longer
//! used are flushed (their deletion waits for a later transaction: before
//! kernel 6.2 a chain a just-deleted map element pointed to is still busy).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

use super::elements::Elements;
use super::names::{self, *};
use crate::config::{KubeProxyConfiguration, NodePortAddress};
use crate::iptables::{LocalDetector, NodePortAddresses, NodePortDestinations};
use crate::tracker::{EndpointInfo, IpFamily, ServicePortInfo, ServicePortName, Tracker};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderOptions {
    pub family: IpFamily,
    /// `1 << masqueradeBit`.
    pub masquerade_mark: u32,
    pub masquerade_all: bool,
    pub local_detector: LocalDetector,
    /// Where NodePorts are served: every local address but loopback, or
    /// these (loopback ones are left out, as upstream).
    pub node_port_destinations: NodePortDestinations,
    /// The node's primary IP of this family: load-balancer source ranges
    /// that take it in let the node reach the load-balancer IPs.
    pub node_ip: Option<IpAddr>,
    /// The ServiceCIDRs of this family: ClusterIP traffic to an address in
    /// them that no Service holds is dropped. Empty: no such rule.
    pub service_cidrs: Vec<IpNet>,
}

impl RenderOptions {
    /// The options a configuration asks for, for one family on this node.
    /// An empty nodePortAddresses means `primary` in this mode (upstream's
    /// platformApplyDefaults).
    pub fn from_config(
        config: &KubeProxyConfiguration,
        family: IpFamily,
        node_ips: &[IpAddr],
        node_pod_cidrs: &[IpNet],
    ) -> Self {
        let entries = if config.node_port_addresses.is_empty() {
            vec![NodePortAddress::Primary]
        } else {
            config.node_port_addresses.clone()
        };
        RenderOptions {
            family,
            masquerade_mark: 1 << config.nftables.masquerade_bit,
            masquerade_all: config.nftables.masquerade_all,
            local_detector: LocalDetector::from_config(config, family, node_pod_cidrs),
            node_port_destinations: NodePortAddresses::new(&entries, family).destinations(node_ips),
            node_ip: node_ips
                .iter()
                .find(|ip| IpFamily::of(ip) == family)
                .copied(),
            service_cidrs: Vec::new(),
        }
    }
}

/// What a sync writes.
#[derive(Clone, Copy, Debug)]
pub enum SyncScope<'a> {
    /// Everything. `recreate_base_chains`: once per process, the base chains
    /// are deleted and made again, so a change of their hook or priority
    /// (from an older version of ours) cannot fail the transaction.
    Full { recreate_base_chains: bool },
    /// The fixed objects are left alone; only these service ports' chains
    /// are rewritten, and only the elements that differ from `previous`
    /// (what the last successful transaction left) are deleted or added.
    Partial {
        changed: &'a BTreeSet<ServicePortName>,
        previous: &'a Elements,
    },
}

/// What our table holds now (listed from the kernel).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Existing {
    pub chains: BTreeSet<String>,
    pub sets: BTreeSet<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transaction {
    /// The `nft -f -` input.
    pub text: String,
    /// Every set and map element once the transaction is in.
    pub elements: Elements,
    /// Every per-service chain in use, written or not.
    pub active_chains: BTreeSet<String>,
    /// Unused per-service chains this transaction flushes; delete them later.
    pub stale_chains: Vec<String>,
    /// Unused affinity sets this transaction deletes.
    pub deleted_sets: Vec<String>,
    /// Service ports whose chains were (re)written.
    pub rewritten: usize,
}

/// The family's words in rules and types.
#[derive(Clone, Copy)]
struct Family {
    /// `ip` / `ip6`: the table family and the address match.
    ip: &'static str,
    addr: &'static str,
    not_localhost: &'static str,
}

impl Family {
    fn of(family: IpFamily) -> Self {
        match family {
            IpFamily::V4 => Family {
                ip: "ip",
                addr: "ipv4_addr",
                not_localhost: "ip daddr != 127.0.0.0/8",
            },
            IpFamily::V6 => Family {
                ip: "ip6",
                addr: "ipv6_addr",
                not_localhost: "ip6 daddr != ::1",
            },
        }
    }
}

/// The text being written: every command names our table.
struct Out {
    family: &'static str,
    text: String,
}

impl Out {
    fn cmd(&mut self, verb: &str, kind: &str, rest: &str) {
        let _ = writeln!(self.text, "{verb} {kind} {} {TABLE} {rest}", self.family);
    }

    /// Creates the chain if missing and empties it.
    fn chain(&mut self, name: &str) {
        self.cmd("add", "chain", name);
        self.cmd("flush", "chain", name);
    }

    fn rule(&mut self, chain: &str, rule: &str) {
        self.cmd("add", "rule", &format!("{chain} {rule}"));
    }

    fn rule_commented(&mut self, chain: &str, rule: &str, comment: &str) {
        self.cmd(
            "add",
            "rule",
            &format!("{chain} {rule} comment {}", quote(comment)),
        );
    }
}

/// nft's double-quoted string. Our comments hold names and fixed text only.
fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

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
const ELEMENT_CONTAINERS: [(&str, &str); 7] = [
    ("set", CLUSTER_IPS),
    ("map", SERVICE_IPS),
    ("map", FIREWALL_IPS),
    ("map", NO_ENDPOINT_SERVICES),
    ("map", NO_ENDPOINT_NODE_PORTS),
    ("map", SERVICE_NODE_PORTS),
    ("set", HAIRPIN_CONNECTIONS),
];

/// Renders the transaction. Without `existing` (listing failed) no stale
/// chain or set is cleaned up this time.
pub fn render(
    tracker: &Tracker,
    options: &RenderOptions,
    scope: SyncScope<'_>,
    existing: Option<&Existing>,
) -> Transaction {
    let fam = Family::of(options.family);
    let mut out = Out {
        family: fam.ip,
        text: String::new(),
    };
    let mark = format!("{:#x}", options.masquerade_mark);
    let masquerade = format!("mark set mark or {mark}");
    if let SyncScope::Full {
        recreate_base_chains,
    } = scope
    {
        write_setup(
            &mut out,
            options,
            fam,
            &mark,
            &masquerade,
            recreate_base_chains,
        );
    }

    let mut state = State::default();
    let writer = ServiceWriter {
        tracker,
        options,
        fam,
        masquerade: &masquerade,
    };
    for (name, svc) in tracker.service_ports() {
        let rewrite = match scope {
            SyncScope::Full { .. } => true,
            SyncScope::Partial { changed, .. } => changed.contains(name),
        };
        if rewrite {
            state.rewritten += 1;
        }
        writer.write(name, svc, rewrite, &mut out, &mut state);
    }

    let mut stale_chains = Vec::new();
    let mut deleted_sets = Vec::new();
    if let Some(existing) = existing {
        for chain in &existing.chains {
            if is_service_chain(chain) && !state.active_chains.contains(chain) {
                out.cmd("flush", "chain", chain);
                stale_chains.push(chain.clone());
            }
        }
        // Their only users were rules in the chains flushed above.
        for set in &existing.sets {
            if is_affinity_set(set) && !state.active_sets.contains(set) {
                out.cmd("delete", "set", set);
                deleted_sets.push(set.clone());
            }
        }
    }

    match scope {
        SyncScope::Full { .. } => {
            // Every container was flushed by the setup.
            for (container, key, element) in state.elements.iter() {
                write_element(&mut out, container, key, element);
            }
        }
        SyncScope::Partial { previous, .. } => {
            let diff = previous.diff(&state.elements);
            for (container, key) in diff.delete {
                out.cmd("delete", "element", &format!("{container} {{ {key} }}"));
            }
            for (container, key, element) in diff.add {
                write_element(&mut out, container, key, element);
            }
        }
    }

    Transaction {
        text: out.text,
        elements: state.elements,
        active_chains: state.active_chains,
        stale_chains,
        deleted_sets,
        rewritten: state.rewritten,
    }
}

fn write_element(out: &mut Out, container: &str, key: &str, element: &super::elements::Element) {
    let comment = element
        .comment
        .as_deref()
        .map(|c| format!(" comment {}", quote(c)))
        .unwrap_or_default();
    let value = element
        .value
        .as_deref()
        .map(|v| format!(" : {v}"))
        .unwrap_or_default();
    out.cmd(
        "add",
        "element",
        &format!("{container} {{ {key}{comment}{value} }}"),
    );
}

/// The fixed part: table, base chains and their jumps, the top-level
/// chains, sets and maps (upstream's setupNFTables).
fn write_setup(
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

#[derive(Default)]
struct State {
    elements: Elements,
    active_chains: BTreeSet<String>,
    active_sets: BTreeSet<String>,
    rewritten: usize,
}

struct ServiceWriter<'a> {
    tracker: &'a Tracker,
    options: &'a RenderOptions,
    fam: Family,
    masquerade: &'a str,
}

impl ServiceWriter<'_> {
    fn write(
        &self,
        name: &ServicePortName,
        svc: &ServicePortInfo,
        rewrite: bool,
        out: &mut Out,
        state: &mut State,
    ) {
        let ip = self.fam.ip;
        let p = svc.protocol.lower();
        let chains = ServiceChains::new(name);
        let comment = Some(names::comment(&name.to_string()));
        let categorized = self.tracker.categorize(name, svc);
        let has_endpoints = categorized.has_any;
        let affinity = svc.sticky_seconds;

        // The chains this service port uses, created (and emptied) only
        // when it is rewritten, but in use either way.
        let mut chains_out: Vec<String> = Vec::new();
        let mut use_chain = |chain: &str, state: &mut State| {
            if state.active_chains.insert(chain.to_string()) {
                chains_out.push(chain.to_string());
            }
        };

        for ep in &categorized.all_reachable {
            if affinity.is_some() {
                let base = endpoint_base(name, &ep.address);
                use_chain(&format!("{ENDPOINT_PREFIX}{base}"), state);
                state.active_sets.insert(format!("{AFFINITY_PREFIX}{base}"));
            }
            if ep.is_local {
                let (ep_ip, port) = (ep.ip(), ep.address.port());
                state.elements.add_key(
                    HAIRPIN_CONNECTIONS,
                    format!("{ep_ip} . {ep_ip} . {p} . {port}"),
                );
            }
        }

        let uses_cluster_chain = !categorized.cluster.is_empty() && svc.uses_cluster_endpoints();
        if uses_cluster_chain {
            use_chain(&chains.cluster, state);
        }
        let uses_local_chain = !categorized.local.is_empty() && svc.uses_local_endpoints();
        if uses_local_chain {
            use_chain(&chains.local, state);
        }
        let (internal_chain, has_internal_endpoints) = if svc.internal_policy_local {
            (
                &chains.local,
                has_endpoints && !categorized.local.is_empty(),
            )
        } else {
            (&chains.cluster, has_endpoints)
        };
        let (external_policy_chain, has_external_endpoints) = if svc.external_policy_local {
            (
                &chains.local,
                has_endpoints && !categorized.local.is_empty(),
            )
        } else {
            (&chains.cluster, has_endpoints)
        };
        // Even with no endpoint for external traffic, the external chain's
        // short-circuits for pods and the node itself still apply.
        let uses_external_chain = has_endpoints && svc.externally_accessible();
        if uses_external_chain {
            use_chain(&chains.external, state);
        }
        // Nowhere to go: reject when no endpoint exists at all, drop when
        // only the policy's local endpoints are missing.
        let reject = format!("goto {REJECT_CHAIN}");
        let (internal_verdict, external_verdict) = if !has_endpoints {
            (reject.clone(), reject)
        } else {
            ("drop".to_string(), "drop".to_string())
        };

        let elements = &mut state.elements;
        let dport = svc.port;
        let goto = |chain: &str| Some(format!("goto {chain}"));
        elements.add_key(CLUSTER_IPS, svc.cluster_ip.to_string());
        let cluster_key = format!("{} . {p} . {dport}", svc.cluster_ip);
        if has_internal_endpoints {
            elements.insert(SERVICE_IPS, cluster_key, goto(internal_chain), None);
        } else {
            elements.insert(
                NO_ENDPOINT_SERVICES,
                cluster_key,
                Some(internal_verdict),
                comment.clone(),
            );
        }

        for external_ip in &svc.external_ips {
            let key = format!("{external_ip} . {p} . {dport}");
            if has_endpoints {
                elements.insert(SERVICE_IPS, key.clone(), goto(&chains.external), None);
            }
            if !has_external_endpoints {
                elements.insert(
                    NO_ENDPOINT_SERVICES,
                    key,
                    Some(external_verdict.clone()),
                    comment.clone(),
                );
            }
        }

        let uses_firewall_chain =
            !svc.load_balancer_vips.is_empty() && !svc.load_balancer_source_ranges.is_empty();
        if uses_firewall_chain {
            use_chain(&chains.firewall, state);
        }
        let elements = &mut state.elements;
        for lb_ip in &svc.load_balancer_vips {
            let key = format!("{lb_ip} . {p} . {dport}");
            if has_endpoints {
                elements.insert(SERVICE_IPS, key.clone(), goto(&chains.external), None);
            }
            if uses_firewall_chain {
                elements.insert(FIREWALL_IPS, key.clone(), goto(&chains.firewall), None);
            }
            if !has_external_endpoints {
                elements.insert(
                    NO_ENDPOINT_SERVICES,
                    key,
                    Some(external_verdict.clone()),
                    comment.clone(),
                );
            }
        }

        if svc.node_port != 0 {
            let key = format!("{p} . {}", svc.node_port);
            // NodePorts are not subject to loadBalancerSourceRanges (as upstream).
            if has_endpoints {
                elements.insert(
                    SERVICE_NODE_PORTS,
                    key.clone(),
                    goto(&chains.external),
                    None,
                );
            }
            if !has_external_endpoints {
                elements.insert(
                    NO_ENDPOINT_NODE_PORTS,
                    key,
                    Some(external_verdict.clone()),
                    comment.clone(),
                );
            }
        }

        if !rewrite {
            return;
        }
        for chain in &chains_out {
            out.chain(chain);
        }

        if uses_external_chain {
            let external = &chains.external;
            if !svc.external_policy_local {
                // Endpoints may be on other nodes: masquerade so replies return.
                out.rule_commented(external, self.masquerade, "masquerade");
            } else {
                let cluster = &chains.cluster;
                if let Some(local) =
                    nft_local_match(&self.options.local_detector, self.options.family, false)
                {
                    // Pods reaching an external address act as if they went
                    // out to the load balancer and back: no policy applies.
                    out.rule_commented(
                        external,
                        &format!("{local} goto {cluster}"),
                        "short-circuit pod traffic",
                    );
                }
                // The node's own traffic gets a local source address (the
                // LB IP may be local), which must be masqueraded.
                out.rule_commented(
                    external,
                    &format!("fib saddr type local {}", self.masquerade),
                    "masquerade local traffic",
                );
                out.rule_commented(
                    external,
                    &format!("fib saddr type local goto {cluster}"),
                    "short-circuit local traffic",
                );
            }
            if has_external_endpoints {
                out.rule(external, &format!("goto {external_policy_chain}"));
            }
        }

        if uses_firewall_chain {
            let mut sources: Vec<String> = Vec::new();
            let mut allow_from_node = false;
            for range in &svc.load_balancer_source_ranges {
                sources.push(range.to_string());
                allow_from_node |= self.options.node_ip.is_some_and(|ip| range.contains(&ip));
            }
            // A VIP-style load balancer's IP is often also local: the node's
            // own requests to it loop back with the VIP as source.
            if allow_from_node {
                sources.extend(svc.load_balancer_vips.iter().map(|ip| ip.to_string()));
            }
            out.rule(
                &chains.firewall,
                &format!("{ip} saddr != {{ {} }} drop", sources.join(" , ")),
            );
        }

        if let Some(seconds) = affinity {
            for ep in &categorized.all_reachable {
                let set = format!("{AFFINITY_PREFIX}{}", endpoint_base(name, &ep.address));
                // "dynamic": the kernel adds it to a set updated from the
                // packet path anyway, and re-adding would then differ.
                out.cmd(
                    "add",
                    "set",
                    &format!(
                        "{set} {{ type {} ; flags dynamic,timeout ; timeout {seconds}s ; }}",
                        self.fam.addr
                    ),
                );
            }
        }

        let dispatch = |chain: &str, endpoints: &[&EndpointInfo], out: &mut Out| {
            if affinity.is_some() {
                self.write_endpoint_jumps(name, chain, endpoints, out);
            } else {
                self.write_endpoint_dnats(p, chain, endpoints, out);
            }
        };
        if uses_cluster_chain {
            dispatch(&chains.cluster, &categorized.cluster, out);
        }
        if uses_local_chain {
            dispatch(&chains.local, &categorized.local, out);
        }
        if affinity.is_some() {
            for ep in &categorized.all_reachable {
                let base = endpoint_base(name, &ep.address);
                let chain = format!("{ENDPOINT_PREFIX}{base}");
                out.rule(
                    &chain,
                    &format!("update @{AFFINITY_PREFIX}{base} {{ {ip} saddr }}"),
                );
                out.rule(&chain, &format!("meta l4proto {p} dnat to {}", ep.address));
            }
        }
    }

    /// Without affinity: DNAT straight from the policy chain, to a random
    /// endpoint through an anonymous map (one endpoint needs no map).
    fn write_endpoint_dnats(
        &self,
        p: &str,
        chain: &str,
        endpoints: &[&EndpointInfo],
        out: &mut Out,
    ) {
        if let [only] = endpoints {
            out.rule(chain, &format!("meta l4proto {p} dnat to {}", only.address));
            return;
        }
        let map: Vec<String> = endpoints
            .iter()
            .enumerate()
            .map(|(i, ep)| format!("{i} : {} . {}", ep.ip(), ep.address.port()))
            .collect();
        out.rule(
            chain,
            &format!(
                "meta l4proto {p} dnat {} addr . port to numgen random mod {} map {{ {} }}",
                self.fam.ip,
                endpoints.len(),
                map.join(" , ")
            ),
        );
    }

    /// With affinity: a client seen recently goes to its endpoint's chain
    /// again; others to a random endpoint's chain, which records them.
    fn write_endpoint_jumps(
        &self,
        name: &ServicePortName,
        chain: &str,
        endpoints: &[&EndpointInfo],
        out: &mut Out,
    ) {
        let ip = self.fam.ip;
        let mut vmap = Vec::new();
        for (i, ep) in endpoints.iter().enumerate() {
            let base = endpoint_base(name, &ep.address);
            out.rule(
                chain,
                &format!("{ip} saddr @{AFFINITY_PREFIX}{base} goto {ENDPOINT_PREFIX}{base}"),
            );
            vmap.push(format!("{i} : goto {ENDPOINT_PREFIX}{base}"));
        }
        out.rule(
            chain,
            &format!(
                "numgen random mod {} vmap {{ {} }}",
                endpoints.len(),
                vmap.join(" , ")
            ),
        );
    }
}

/// Deletes chains a previous transaction flushed (upstream's staleChains).
pub fn delete_chains(family: IpFamily, chains: &[String]) -> String {
    let mut out = Out {
        family: Family::of(family).ip,
        text: String::new(),
    };
    for chain in chains {
        out.cmd("delete", "chain", chain);
    }
    out.text
}
