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
use std::net::IpAddr;

use ipnet::IpNet;

use super::elements::Elements;
use super::ledger::{Ledger, Settled};
use super::names::*;
use super::service::{ServiceWriter, State};
use super::setup::write_setup;
use super::text::{Family, Out, write_element};
use crate::config::{KubeProxyConfiguration, NodePortAddress};
use crate::iptables::{LocalDetector, NodePortAddresses, NodePortDestinations};
use crate::tracker::{IpFamily, ServicePortName, Tracker};

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
        interface_ips: &[IpAddr],
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
            node_port_destinations: NodePortAddresses::new(&entries, family)
                .destinations(node_ips, interface_ips),
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
    /// Every affinity set in use, written or not.
    pub active_sets: BTreeSet<String>,
    /// Unused per-service chains this transaction flushes; delete them later.
    pub stale_chains: Vec<String>,
    /// Unused affinity sets this transaction deletes.
    pub deleted_sets: Vec<String>,
    /// Service ports whose chains were (re)written.
    pub rewritten: usize,
}

/// Renders the transaction. Without `existing` (listing failed) no stale
/// chain or set is cleaned up this time.
pub fn render(
    tracker: &Tracker,
    options: &RenderOptions,
    scope: SyncScope<'_>,
    existing: Option<&Existing>,
) -> Transaction {
    render_recording(tracker, options, scope, existing, &mut Ledger::default())
}

/// [`render`], recording each service port's part in a new `ledger`, from
/// which [`render_changes`] can make the next partial syncs.
pub fn render_recording(
    tracker: &Tracker,
    options: &RenderOptions,
    scope: SyncScope<'_>,
    existing: Option<&Existing>,
    ledger: &mut Ledger,
) -> Transaction {
    *ledger = Ledger::default();
    let fam = Family::of(options.family);
    let mut out = Out {
        family: fam.ip,
        text: String::new(),
    };
    let mark = mark_of(options);
    let masquerade = masquerade_rule(&mark);
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
        let mut part = State::default();
        writer.write(name, svc, rewrite, &mut out, &mut part);
        ledger.record(name, &part);
        state.absorb(part);
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
        active_sets: state.active_sets,
        stale_chains,
        deleted_sets,
        rewritten: state.rewritten,
    }
}

/// The masquerade mark, as nft prints it.
fn mark_of(options: &RenderOptions) -> String {
    format!("{:#x}", options.masquerade_mark)
}

/// The statement that marks a packet for masquerading.
fn masquerade_rule(mark: &str) -> String {
    format!("mark set mark or {mark}")
}

/// A partial sync's transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The `nft -f -` input.
    pub text: String,
    /// Unused per-service chains this transaction flushes; delete them later.
    pub stale_chains: Vec<String>,
    /// Unused affinity sets this transaction deletes.
    pub deleted_sets: Vec<String>,
    /// Service ports whose chains were rewritten.
    pub rewritten: usize,
}

/// A partial sync from `ledger` (what the last successful transaction
/// left): the `changed` service ports rewritten and settled in the ledger,
/// the chains and sets no longer in use flushed or deleted, and the
/// elements that differ replaced — the text a [`SyncScope::Partial`]
/// render would give, at the cost of the changed ports only. `flushed`:
/// chains an earlier transaction flushed and that are not deleted yet;
/// unused still, they are flushed again, as a render from a listing would.
/// The ledger is left as if the transaction succeeded: drop it if not.
pub fn render_changes(
    tracker: &Tracker,
    options: &RenderOptions,
    changed: &BTreeSet<ServicePortName>,
    flushed: &BTreeSet<String>,
    ledger: &mut Ledger,
) -> Changes {
    let fam = Family::of(options.family);
    let mut out = Out {
        family: fam.ip,
        text: String::new(),
    };
    let masquerade = masquerade_rule(&mark_of(options));
    let writer = ServiceWriter {
        tracker,
        options,
        fam,
        masquerade: &masquerade,
    };
    let mut settled = Settled::default();
    let mut rewritten = 0;
    for name in changed {
        let mut part = State::default();
        if let Some(svc) = tracker.service_port(name) {
            writer.write(name, svc, true, &mut out, &mut part);
            rewritten += 1;
        }
        ledger.settle(name, &part, &mut settled);
    }

    let unused: BTreeSet<&String> = (settled.unused_chains(ledger))
        .chain(flushed.iter().filter(|c| !ledger.chain_in_use(c)))
        .collect();
    let mut stale_chains = Vec::new();
    for chain in unused {
        out.cmd("flush", "chain", chain);
        stale_chains.push(chain.clone());
    }
    let mut deleted_sets = Vec::new();
    for set in settled.unused_sets(ledger) {
        out.cmd("delete", "set", set);
        deleted_sets.push(set.clone());
    }
    let (delete, add) = ledger.element_changes(&settled);
    for (container, key) in delete {
        out.cmd("delete", "element", &format!("{container} {{ {key} }}"));
    }
    for ((container, key), element) in add {
        write_element(&mut out, container, key, element);
    }
    Changes {
        text: out.text,
        stale_chains,
        deleted_sets,
        rewritten,
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
