//! Removing what the IPVS mode made (upstream's CleanupLeftovers, for
//! `--cleanup` and for a switch to another mode), only ours: upstream
//! flushes the whole IPVS table, which would take kube-proxy's virtual
//! servers too, so we delete only those our ipsets name (service
//! `ip,proto:port` entries, and our NodePorts on any address). The jumps
//! from the built-in chains ([`super::rules::jump_rules`]) are deleted by
//! the IO side first, as in iptables mode; the sets go after the rules that
//! match them.

use std::collections::BTreeSet;

use super::diff::Operation;
use super::ipsets::{ALL_SETS, Set, SetEntries};
use super::model::ServiceKey;
use super::reconcile::{BoxError, Host, Ipvs};
use super::rules::{
    FORWARD, IPVS_FILTER, IPVS_OUT_FILTER, LOAD_BALANCER, MARK_MASQ, NODE_PORT, POSTROUTING,
    PROXY_FIREWALL, SERVICES, SOURCE_RANGES_FIREWALL,
};
use crate::tracker::{IpFamily, Protocol};

/// Our virtual servers among `services`, by what the sets name.
pub fn owned_services<'a>(
    services: impl Iterator<Item = &'a ServiceKey>,
    sets: &SetEntries,
) -> Vec<ServiceKey> {
    let entries = |set: Set| sets.get(&set).into_iter().flatten();
    let mut frontends = BTreeSet::new();
    for set in [
        Set::ClusterIp,
        Set::ExternalIp,
        Set::ExternalIpLocal,
        Set::LoadBalancer,
        Set::NodePortSctp,
    ] {
        frontends.extend(entries(set).cloned());
    }
    let mut node_ports = BTreeSet::new();
    for (set, protocol) in [
        (Set::NodePortTcp, Protocol::Tcp),
        (Set::NodePortUdp, Protocol::Udp),
    ] {
        for port in entries(set).filter_map(|p| p.parse::<u16>().ok()) {
            node_ports.insert((protocol, port));
        }
    }
    services
        .filter(|key| {
            let entry = format!("{},{}:{}", key.address, key.protocol.lower(), key.port);
            frontends.contains(&entry) || node_ports.contains(&(key.protocol, key.port))
        })
        .copied()
        .collect()
}

/// `iptables-restore --noflush` input that flushes and deletes our chains.
pub fn rules_text() -> String {
    let nat = [SERVICES, POSTROUTING, NODE_PORT, LOAD_BALANCER, MARK_MASQ];
    let filter = [
        FORWARD,
        NODE_PORT,
        PROXY_FIREWALL,
        SOURCE_RANGES_FIREWALL,
        IPVS_FILTER,
        IPVS_OUT_FILTER,
    ];
    let mut text = String::new();
    for (table, chains) in [("nat", &nat[..]), ("filter", &filter[..])] {
        text.push_str(&format!("*{table}\n"));
        // Declaring a chain flushes it, which also drops the jumps between
        // ours, so each can then be deleted.
        for chain in chains {
            text.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for chain in chains {
            text.push_str(&format!("-X {chain}\n"));
        }
        text.push_str("COMMIT\n");
    }
    text
}

/// Deletes our virtual servers, rules, sets and dummy interface; goes on
/// past failures and returns them all.
pub fn cleanup(ipvs: Option<&mut dyn Ipvs>, host: &mut dyn Host, family: IpFamily) -> Vec<String> {
    let mut errors = Vec::new();
    let mut note = |what: &str, result: Result<(), BoxError>| {
        if let Err(e) = result {
            errors.push(format!("{what}: {e}"));
        }
    };
    let sets = host.set_entries(family).unwrap_or_default();
    if let Some(ipvs) = ipvs {
        match ipvs.services() {
            Ok(servers) => {
                for key in owned_services(servers.iter().map(|s| &s.key), &sets) {
                    note(
                        &format!("delete {key}"),
                        ipvs.apply(&Operation::DeleteService(key)),
                    );
                }
            }
            Err(e) => note("list IPVS services", Err(e)),
        }
    }
    note("delete the dummy interface", host.delete_interface());
    note(
        "delete our chains",
        host.restore_rules(family, &rules_text()),
    );
    for set in ALL_SETS {
        note(
            &format!("destroy {}", set.name(family)),
            host.destroy_set(set, family),
        );
    }
    errors
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::ipvs::model::VirtualServer;
    use crate::ipvs::reconcile::fake::{FakeHost, FakeIpvs};

    fn key(address: &str, port: u16, protocol: Protocol) -> ServiceKey {
        ServiceKey {
            address: address.parse().unwrap(),
            port,
            protocol,
        }
    }

    #[test]
    fn only_the_servers_our_sets_name_are_deleted() {
        let ours = [
            key("172.30.0.41", 80, Protocol::Tcp),
            key("192.168.0.2", 30080, Protocol::Tcp),
            key("192.168.0.2", 30053, Protocol::Udp),
        ];
        let theirs = [
            key("10.96.0.1", 443, Protocol::Tcp),
            key("192.168.0.2", 30080, Protocol::Udp),
        ];
        let mut ipvs = FakeIpvs::default();
        for k in ours.iter().chain(&theirs) {
            ipvs.state.apply(&Operation::AddService(VirtualServer {
                key: *k,
                scheduler: "rr".into(),
                flags: 0,
                timeout: 0,
            }));
        }
        let mut host = FakeHost {
            sets: SetEntries::from([
                (
                    Set::ClusterIp,
                    BTreeSet::from(["172.30.0.41,tcp:80".to_string()]),
                ),
                (Set::NodePortTcp, BTreeSet::from(["30080".to_string()])),
                (Set::NodePortUdp, BTreeSet::from(["30053".to_string()])),
            ]),
            addresses: BTreeSet::from(["172.30.0.41".parse().unwrap()]),
            ..FakeHost::default()
        };
        let errors = cleanup(Some(&mut ipvs), &mut host, IpFamily::V4);
        assert!(errors.is_empty(), "{errors:?}");
        let left: Vec<ServiceKey> = ipvs.state.services.keys().copied().collect();
        assert_eq!(left, theirs);
        assert!(host.addresses.is_empty(), "the interface went");
        assert!(host.sets.is_empty());
        assert_eq!(host.rule_restores, [rules_text()]);
    }

    #[test]
    fn the_chains_are_flushed_then_deleted() {
        let text = rules_text();
        assert!(text.starts_with("*nat\n:US-SERVICES - [0:0]\n"));
        assert!(text.contains("-X US-IPVS-OUT-FILTER\nCOMMIT\n"));
        assert_eq!(text.matches("-X ").count(), 11);
    }
}
