//! One service port's part of a transaction (upstream's syncProxyRules
//! loop body): its set and map elements always, its chains when it is
//! rewritten.

use std::collections::BTreeSet;

use super::elements::Elements;
use super::names::{self, *};
use super::render::RenderOptions;
use super::setup::nft_local_match;
use super::text::{Family, Out};
use crate::tracker::{EndpointInfo, ServicePortInfo, ServicePortName, Tracker};

#[derive(Default)]
pub(super) struct State {
    pub elements: Elements,
    pub active_chains: BTreeSet<String>,
    pub active_sets: BTreeSet<String>,
    pub rewritten: usize,
}

impl State {
    /// Adds one service port's part, written after those already here.
    pub fn absorb(&mut self, part: State) {
        for (container, key, element) in part.elements.iter() {
            self.elements.insert(
                container,
                key.clone(),
                element.value.clone(),
                element.comment.clone(),
            );
        }
        self.active_chains.extend(part.active_chains);
        self.active_sets.extend(part.active_sets);
    }
}

pub(super) struct ServiceWriter<'a> {
    pub tracker: &'a Tracker,
    pub options: &'a RenderOptions,
    pub fam: Family,
    /// The rule that marks a packet for masquerading.
    pub masquerade: &'a str,
}

impl ServiceWriter<'_> {
    pub fn write(
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
        let (internal_chain, has_internal_endpoints) =
            categorized.policy_target(svc.internal_policy_local, &chains.cluster, &chains.local);
        let (external_policy_chain, has_external_endpoints) =
            categorized.policy_target(svc.external_policy_local, &chains.cluster, &chains.local);
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
