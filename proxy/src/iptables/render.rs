//! The whole `iptables-restore` input (filter and nat tables) for one IP
//! family, from the tracker's state: upstream's syncProxyRules, rule for rule,
//! with our chain names. Pure: the IO side supplies what it read from the
//! host (which chains exist, whether --random-fully works, the node's
//! addresses) and runs `iptables-restore --noflush --counters` on the text.
//!
//! Services are visited in name order, so the same state always renders the
//! same text.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use super::chains::{
    EXTERNAL_SERVICES, FORWARD, LOCALHOST_FIREWALL, MARK_MASQ, NODE_PORTS, POSTROUTING,
    PROXY_FIREWALL, SERVICES, ServiceChains, endpoint_chain, is_service_chain,
};
use super::local::LocalDetector;
use crate::config::KubeProxyConfiguration;
use crate::tracker::{EndpointInfo, IpFamily, ServicePortInfo, ServicePortName, Tracker};

/// Past this many endpoints in all, per-endpoint comments are left out: they
/// can be 40% of the restore input (upstream's largeClusterEndpointsThreshold).
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// Where NodePorts are served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodePortDestinations {
    /// Every local address (`-m addrtype --dst-type LOCAL`): nodePortAddresses
    /// has no entry of the family, or a zero CIDR (`all`, `0.0.0.0/0`).
    AllLocal,
    /// Only these node addresses: nodePortAddresses resolved against the
    /// node's interfaces (or the Node's primary IPs) by the IO side.
    Ips(Vec<IpAddr>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderOptions {
    pub family: IpFamily,
    /// `1 << masqueradeBit`.
    pub masquerade_mark: u32,
    pub masquerade_all: bool,
    pub local_detector: LocalDetector,
    /// NodePorts answer on 127.0.0.0/8 (IPv4 only; needs route_localnet).
    pub localhost_node_ports: bool,
    pub node_port_destinations: NodePortDestinations,
    /// The node's own IPs (a load balancer's source ranges may let it in).
    pub node_ips: Vec<IpAddr>,
    /// nf_conntrack_tcp_be_liberal is set: INVALID packets need not be dropped.
    pub conntrack_tcp_liberal: bool,
    /// iptables supports `MASQUERADE --random-fully`.
    pub random_fully: bool,
}

impl RenderOptions {
    /// The options a configuration asks for, for one family on this node.
    pub fn from_config(
        config: &KubeProxyConfiguration,
        family: IpFamily,
        node_ips: Vec<IpAddr>,
        node_pod_cidrs: &[IpNet],
        node_port_destinations: NodePortDestinations,
    ) -> Self {
        RenderOptions {
            family,
            masquerade_mark: 1 << config.masquerade_bit(),
            masquerade_all: config.masquerade_all(),
            local_detector: LocalDetector::from_config(config, family, node_pod_cidrs),
            localhost_node_ports: super::nodeports::localhost_node_ports(config, family),
            node_port_destinations,
            node_ips: node_ips
                .into_iter()
                .filter(|ip| IpFamily::of(ip) == family)
                .collect(),
            conntrack_tcp_liberal: false,
            random_fully: true,
        }
    }
}

/// Which services' own chains to (re)write.
#[derive(Clone, Copy, Debug)]
pub enum SyncScope<'a> {
    Full,
    /// Only these service ports' SVC/SVL/EXT/FW/SEP chains are written; the
    /// others' chains are left out of the input entirely (not even declared,
    /// which would flush them), so they keep their rules. The top-level
    /// chains are always rewritten whole.
    Partial(&'a BTreeSet<ServicePortName>),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// The `iptables-restore` input.
    pub text: String,
    /// Every per-service nat chain the rules use, written or not.
    pub active_nat_chains: BTreeSet<String>,
    /// Stale chains the input deletes.
    pub deleted_chains: Vec<String>,
    pub filter_rules: usize,
    pub nat_rules: usize,
}

#[derive(Default)]
struct Tables {
    filter_chains: Vec<String>,
    filter_rules: Vec<String>,
    nat_chains: Vec<String>,
    nat_rules: Vec<String>,
}

/// Upstream's largeClusterMode: more endpoints than
/// [`LARGE_CLUSTER_ENDPOINTS`] drop the endpoint comments and read the
/// nat table back for stale chains at most once a sync period.
pub fn is_large_cluster(tracker: &Tracker) -> bool {
    let total_endpoints: usize = tracker
        .service_ports()
        .map(|(name, _)| tracker.endpoints(name).len())
        .sum();
    total_endpoints > LARGE_CLUSTER_ENDPOINTS
}

/// Renders the restore input. `existing_nat_chains` (from `iptables-save -t
/// nat`) lets stale per-service chains be deleted; without it none are.
pub fn render(
    tracker: &Tracker,
    options: &RenderOptions,
    scope: SyncScope<'_>,
    existing_nat_chains: Option<&BTreeSet<String>>,
) -> Ruleset {
    render_cached(
        tracker,
        options,
        scope,
        existing_nat_chains,
        &mut Parts::default(),
    )
}

/// Each service port's rules in the top-level chains and the chains it
/// uses, as the last render with this cache worked them out. They depend
/// only on the port, its endpoints and the options, so a partial sync takes
/// an unchanged port's from here instead of working them out again: its
/// endpoints categorized, a SHA-256 per chain name, every rule formatted
/// (25 ms of a 1000-Service partial sync, against well under one).
#[derive(Debug, Default)]
pub struct Parts {
    parts: HashMap<ServicePortName, Part>,
    /// What every part was worked out under: other options, or crossing
    /// the large-cluster threshold (comments), change every part.
    under: Option<(RenderOptions, bool)>,
}

/// One service port's share of the top-level chains.
#[derive(Clone, Debug, Default)]
struct Part {
    filter_rules: Vec<String>,
    nat_rules: Vec<String>,
    chains: Vec<String>,
}

/// [`render`], taking unchanged service ports' parts of a partial sync
/// from `parts` and recording every port's part there for the next.
pub fn render_cached(
    tracker: &Tracker,
    options: &RenderOptions,
    scope: SyncScope<'_>,
    existing_nat_chains: Option<&BTreeSet<String>>,
    parts: &mut Parts,
) -> Ruleset {
    let mark = format!("{:#x}", options.masquerade_mark);
    let mut t = Tables::default();

    for chain in [
        SERVICES,
        EXTERNAL_SERVICES,
        FORWARD,
        NODE_PORTS,
        PROXY_FIREWALL,
    ] {
        t.filter_chains.push(chain_line(chain));
    }
    for chain in [SERVICES, NODE_PORTS, POSTROUTING, MARK_MASQ] {
        t.nat_chains.push(chain_line(chain));
    }

    // Marked traffic is masqueraded once; the mark is cleared so a packet
    // that passes through the stack again is not masqueraded twice.
    t.nat_rules.push(format!(
        "-A {POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN"
    ));
    t.nat_rules
        .push(format!("-A {POSTROUTING} -j MARK --xor-mark {mark}"));
    let random_fully = if options.random_fully {
        " --random-fully"
    } else {
        ""
    };
    t.nat_rules.push(format!(
        "-A {POSTROUTING} -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE{random_fully}"
    ));
    t.nat_rules
        .push(format!("-A {MARK_MASQ} -j MARK --or-mark {mark}"));

    if options.family == IpFamily::V4 && options.localhost_node_ports {
        // route_localnet, which localhost NodePorts need, would also let
        // outside packets addressed to 127/8 in (https://issue.k8s.io/90259).
        t.filter_chains.push(chain_line(LOCALHOST_FIREWALL));
        t.filter_rules.push(format!(
            "-A {LOCALHOST_FIREWALL} -m comment --comment \"block incoming localnet connections\" \
             -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
        ));
    }

    let large_cluster = is_large_cluster(tracker);
    let writer = ServiceWriter {
        options,
        tracker,
        large_cluster,
    };
    let under = Some((options.clone(), large_cluster));
    let mut last = std::mem::take(&mut parts.parts);
    if parts.under != under {
        last.clear();
        parts.under = under;
    }
    let mut active_nat_chains = BTreeSet::new();
    for (name, service) in tracker.service_ports() {
        let rewrite = match scope {
            SyncScope::Full => true,
            SyncScope::Partial(changed) => changed.contains(name),
        };
        let (key, part, own) = match last.remove_entry(name).filter(|_| !rewrite) {
            Some((key, part)) => (key, part, None),
            None => {
                let mut part = Part::default();
                let own = writer.write(name, service, rewrite, &mut part);
                (name.clone(), part, own)
            }
        };
        t.nat_rules.extend(part.nat_rules.iter().cloned());
        t.filter_rules.extend(part.filter_rules.iter().cloned());
        active_nat_chains.extend(part.chains.iter().cloned());
        // The port's own chains, after its top-level rules as ever.
        if let Some((chains, rules)) = own {
            t.nat_chains.extend(chains);
            t.nat_rules.extend(rules);
        }
        parts.parts.insert(key, part);
    }

    let mut deleted_chains = Vec::new();
    for chain in existing_nat_chains.into_iter().flatten() {
        if is_service_chain(chain) && !active_nat_chains.contains(chain) {
            // Declaring the chain flushes it, so it can be deleted.
            t.nat_chains.push(chain_line(chain));
            t.nat_rules.push(format!("-X {chain}"));
            deleted_chains.push(chain.clone());
        }
    }

    write_node_ports_jump(options, &mut t.nat_rules);

    // Without be_liberal, an out-of-window packet is INVALID, skips the DNAT
    // reversal and would reach the pod's peer as a stray reset.
    if !options.conntrack_tcp_liberal {
        t.filter_rules.push(format!(
            "-A {FORWARD} -m conntrack --ctstate INVALID -j DROP"
        ));
    }
    // Marked (service) traffic is forwarded even where FORWARD's policy is DROP.
    t.filter_rules.push(format!(
        "-A {FORWARD} -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT"
    ));
    t.filter_rules.push(format!(
        "-A {FORWARD} -m comment --comment \"kubernetes forwarding conntrack rule\" \
         -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    ));

    let mut text = String::new();
    text.push_str("*filter\n");
    for line in t.filter_chains.iter().chain(&t.filter_rules) {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str("COMMIT\n*nat\n");
    for line in t.nat_chains.iter().chain(&t.nat_rules) {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    Ruleset {
        text,
        active_nat_chains,
        deleted_chains,
        filter_rules: t.filter_rules.len(),
        nat_rules: t.nat_rules.len(),
    }
}

fn chain_line(chain: &str) -> String {
    format!(":{chain} - [0:0]")
}

/// The jump to the NodePorts chain must be the last rule of SERVICES: it
/// matches whole addresses, and the service rules above it are more specific.
fn write_node_ports_jump(options: &RenderOptions, nat_rules: &mut Vec<String>) {
    let comment = "-m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\"";
    match &options.node_port_destinations {
        NodePortDestinations::AllLocal => {
            let except_loopback = match options.family {
                IpFamily::V6 => " ! -d ::1/128",
                IpFamily::V4 if !options.localhost_node_ports => " ! -d 127.0.0.0/8",
                IpFamily::V4 => "",
            };
            nat_rules.push(format!(
                "-A {SERVICES} {comment} -m addrtype --dst-type LOCAL{except_loopback} -j {NODE_PORTS}"
            ));
        }
        NodePortDestinations::Ips(ips) => {
            for ip in ips {
                if IpFamily::of(ip) != options.family
                    || (ip.is_loopback()
                        && (options.family == IpFamily::V6 || !options.localhost_node_ports))
                {
                    continue;
                }
                nat_rules.push(format!("-A {SERVICES} {comment} -d {ip} -j {NODE_PORTS}"));
            }
        }
    }
}

struct ServiceWriter<'a> {
    options: &'a RenderOptions,
    tracker: &'a Tracker,
    large_cluster: bool,
}

impl ServiceWriter<'_> {
    /// `-m comment --comment TEXT ` (quoted as given), unless comments are
    /// left out for size.
    fn comment(&self, text: &str) -> String {
        if self.large_cluster {
            String::new()
        } else {
            format!("-m comment --comment {text} ")
        }
    }

    /// Writes the port's top-level rules and the chains it uses into
    /// `t`; returns its own chains' declarations and rules when `rewrite`.
    fn write(
        &self,
        name: &ServicePortName,
        svc: &ServicePortInfo,
        rewrite: bool,
        t: &mut Part,
    ) -> Option<(Vec<String>, Vec<String>)> {
        let name_text = name.to_string();
        let p = svc.protocol.lower();
        let chains = ServiceChains::new(&name_text, p);
        let categorized = self.tracker.categorize(name, svc);
        let has_endpoints = categorized.has_any;

        let uses_cluster_chain = !categorized.cluster.is_empty() && svc.uses_cluster_endpoints();
        let uses_local_chain = !categorized.local.is_empty() && svc.uses_local_endpoints();

        let (internal_chain, has_internal_endpoints) =
            categorized.policy_target(svc.internal_policy_local, &chains.cluster, &chains.local);
        let (external_policy_chain, has_external_endpoints) =
            categorized.policy_target(svc.external_policy_local, &chains.cluster, &chains.local);
        let external_chain = &chains.external;
        // The EXT chain exists whenever there are endpoints anywhere: its
        // short-circuit for local sources works even with no local endpoint.
        let uses_external_chain = has_endpoints && svc.externally_accessible();
        let uses_firewall_chain =
            has_endpoints && !svc.load_balancer_vips.is_empty() && svc.load_balancer_firewall;
        let load_balancer_chain = if uses_firewall_chain {
            &chains.firewall
        } else {
            external_chain
        };

        // Filter-table verdicts for traffic with nowhere to go: REJECT when no
        // endpoint exists, DROP when only the policy's local endpoints are missing.
        let no_endpoints = format!("\"{name_text} has no endpoints\"");
        let no_local_endpoints = format!("\"{name_text} has no local endpoints\"");
        let (internal_verdict, external_verdict) = if !has_endpoints {
            (("REJECT", &no_endpoints), ("REJECT", &no_endpoints))
        } else {
            (("DROP", &no_local_endpoints), ("DROP", &no_local_endpoints))
        };

        let dport = svc.port;
        let cluster_ip = svc.cluster_ip;
        if has_internal_endpoints {
            t.nat_rules.push(format!(
                "-A {SERVICES} -m comment --comment \"{name_text} cluster IP\" -m {p} -p {p} -d {cluster_ip} \
                 --dport {dport} -j {internal_chain}"
            ));
        } else {
            let (target, comment) = internal_verdict;
            t.filter_rules.push(format!(
                "-A {SERVICES} -m comment --comment {comment} -m {p} -p {p} -d {cluster_ip} --dport {dport} -j {target}"
            ));
        }

        for ip in &svc.external_ips {
            if has_endpoints {
                t.nat_rules.push(format!(
                    "-A {SERVICES} -m comment --comment \"{name_text} external IP\" -m {p} -p {p} -d {ip} \
                     --dport {dport} -j {external_chain}"
                ));
            }
            if !has_external_endpoints {
                let (target, comment) = external_verdict;
                t.filter_rules.push(format!(
                    "-A {EXTERNAL_SERVICES} -m comment --comment {comment} -m {p} -p {p} -d {ip} --dport {dport} -j {target}"
                ));
            }
        }

        for ip in &svc.load_balancer_vips {
            if has_endpoints {
                t.nat_rules.push(format!(
                    "-A {SERVICES} -m comment --comment \"{name_text} loadbalancer IP\" -m {p} -p {p} -d {ip} \
                     --dport {dport} -j {load_balancer_chain}"
                ));
            }
            if uses_firewall_chain {
                t.filter_rules.push(format!(
                    "-A {PROXY_FIREWALL} -m comment --comment \"{name_text} traffic not accepted by {}\" \
                     -m {p} -p {p} -d {ip} --dport {dport} -j DROP",
                    chains.firewall
                ));
            }
        }
        if !has_external_endpoints {
            let (target, comment) = external_verdict;
            for ip in &svc.load_balancer_vips {
                t.filter_rules.push(format!(
                    "-A {EXTERNAL_SERVICES} -m comment --comment {comment} -m {p} -p {p} -d {ip} --dport {dport} -j {target}"
                ));
            }
        }

        if svc.node_port != 0 {
            let node_port = svc.node_port;
            if has_endpoints {
                // NodePorts are not subject to loadBalancerSourceRanges (as upstream).
                t.nat_rules.push(format!(
                    "-A {NODE_PORTS} -m comment --comment {name_text} -m {p} -p {p} --dport {node_port} -j {external_chain}"
                ));
            }
            if !has_external_endpoints {
                let (target, comment) = external_verdict;
                t.filter_rules.push(format!(
                    "-A {EXTERNAL_SERVICES} -m comment --comment {comment} -m addrtype --dst-type LOCAL \
                     -m {p} -p {p} --dport {node_port} -j {target}"
                ));
            }
        }

        if svc.health_check_node_port != 0 {
            // Open whether or not this node has local endpoints: the load
            // balancer must be able to ask.
            t.filter_rules.push(format!(
                "-A {NODE_PORTS} -m comment --comment \"{name_text} health check node port\" -m tcp -p tcp \
                 --dport {} -j ACCEPT",
                svc.health_check_node_port
            ));
        }

        // The service's own chains: always counted as in use, written only
        // when this service port is being rewritten.
        let mut chains_out: Vec<String> = Vec::new();
        let mut rules_out: Vec<String> = Vec::new();
        let active_nat_chains = &mut t.chains;
        let mut declare = |chain: &str, chains_out: &mut Vec<String>| {
            active_nat_chains.push(chain.to_string());
            chains_out.push(chain_line(chain));
        };

        if has_internal_endpoints {
            let matcher = format!(
                "-m comment --comment \"{name_text} cluster IP\" -m {p} -p {p} -d {cluster_ip} --dport {dport}"
            );
            if self.options.masquerade_all {
                rules_out.push(format!("-A {internal_chain} {matcher} -j {MARK_MASQ}"));
            } else if self.options.local_detector.is_implemented() {
                // Off-cluster clients may route the service range via any node,
                // which may forward to another node: masquerade so replies return.
                let not_local = self.options.local_detector.if_not_local().join(" ");
                rules_out.push(format!(
                    "-A {internal_chain} {matcher} {not_local} -j {MARK_MASQ}"
                ));
            }
        }

        if uses_external_chain {
            declare(external_chain, &mut chains_out);
            if !svc.external_policy_local {
                // Endpoints may be on other nodes: masquerade so replies return.
                rules_out.push(format!(
                    "-A {external_chain} -m comment --comment \"masquerade traffic for {name_text} external destinations\" \
                     -j {MARK_MASQ}"
                ));
            } else {
                let cluster_chain = &chains.cluster;
                if self.options.local_detector.is_implemented() {
                    // Pods reaching an external address act as if they went out
                    // to the load balancer and back: no traffic policy applies.
                    let local = self.options.local_detector.if_local().join(" ");
                    rules_out.push(format!(
                        "-A {external_chain} -m comment --comment \"pod traffic for {name_text} external destinations\" \
                         {local} -j {cluster_chain}"
                    ));
                }
                // The node's own traffic gets a local source address (the
                // LB IP may be local), which must be masqueraded.
                rules_out.push(format!(
                    "-A {external_chain} -m comment --comment \"masquerade LOCAL traffic for {name_text} external destinations\" \
                     -m addrtype --src-type LOCAL -j {MARK_MASQ}"
                ));
                rules_out.push(format!(
                    "-A {external_chain} -m comment --comment \"route LOCAL traffic for {name_text} external destinations\" \
                     -m addrtype --src-type LOCAL -j {cluster_chain}"
                ));
            }
            if has_external_endpoints {
                rules_out.push(format!("-A {external_chain} -j {external_policy_chain}"));
            }
        }

        if uses_firewall_chain {
            let firewall = &chains.firewall;
            declare(firewall, &mut chains_out);
            let head =
                format!("-A {firewall} -m comment --comment \"{name_text} loadbalancer IP\"");
            let mut allow_from_node = false;
            for range in &svc.load_balancer_source_ranges {
                rules_out.push(format!("{head} -s {range} -j {external_chain}"));
                allow_from_node |= self.options.node_ips.iter().any(|ip| range.contains(ip));
            }
            // A VIP-style load balancer's IP is often also local: the node's
            // own requests to it loop back with the VIP as source.
            if allow_from_node {
                for ip in &svc.load_balancer_vips {
                    rules_out.push(format!("{head} -s {ip} -j {external_chain}"));
                }
            }
            // What falls through is not DNATed, so PROXY_FIREWALL drops it.
            rules_out.push(format!(
                "-A {firewall} -m comment --comment \"other traffic to {name_text} will be dropped by {PROXY_FIREWALL}\""
            ));
        }

        if uses_cluster_chain {
            declare(&chains.cluster, &mut chains_out);
            self.write_dispatch(
                &name_text,
                svc,
                &chains.cluster,
                &categorized.cluster,
                &mut rules_out,
            );
        }
        if uses_local_chain {
            declare(&chains.local, &mut chains_out);
            self.write_dispatch(
                &name_text,
                svc,
                &chains.local,
                &categorized.local,
                &mut rules_out,
            );
        }

        for ep in &categorized.all_reachable {
            let sep = endpoint_chain(&name_text, p, &ep.to_string());
            declare(&sep, &mut chains_out);
            let head = format!("-A {sep} {}", self.comment(&name_text));
            // Hairpin: a pod reaching itself through the service must see the
            // reply come from the service, so masquerade.
            rules_out.push(format!("{head}-s {} -j {MARK_MASQ}", ep.ip()));
            let affinity = match svc.sticky_seconds {
                Some(_) => format!("-m recent --name {sep} --set "),
                None => String::new(),
            };
            rules_out.push(format!(
                "{head}{affinity}-m {p} -p {p} -j DNAT --to-destination {ep}"
            ));
        }

        rewrite.then_some((chains_out, rules_out))
    }

    /// A policy chain: first the session-affinity matches, then a random pick
    /// where rule i of n takes 1/(n-i) of what reaches it (so each endpoint
    /// gets 1/n), the last rule taking the rest.
    fn write_dispatch(
        &self,
        name_text: &str,
        svc: &ServicePortInfo,
        chain: &str,
        endpoints: &[&EndpointInfo],
        rules: &mut Vec<String>,
    ) {
        let p = svc.protocol.lower();
        let sep_of = |ep: &EndpointInfo| endpoint_chain(name_text, p, &ep.to_string());
        if let Some(seconds) = svc.sticky_seconds {
            for ep in endpoints {
                let sep = sep_of(ep);
                let comment = self.comment(&format!("\"{name_text} -> {ep}\""));
                rules.push(format!(
                    "-A {chain} {comment}-m recent --name {sep} --rcheck --seconds {seconds} --reap -j {sep}"
                ));
            }
        }
        let n = endpoints.len();
        for (i, ep) in endpoints.iter().enumerate() {
            let comment = self.comment(&format!("\"{name_text} -> {ep}\""));
            let pick = if i + 1 < n {
                format!(
                    "-m statistic --mode random --probability {} ",
                    probability(n - i)
                )
            } else {
                String::new()
            };
            rules.push(format!("-A {chain} {comment}{pick}-j {}", sep_of(ep)));
        }
    }
}

/// 1/n as upstream prints it (`%0.10f`).
pub fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}
