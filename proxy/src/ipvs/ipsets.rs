//! The ipsets of the IPVS mode (upstream's ipset.go): their names (ours
//! with `US-` for `KUBE-`, `US-6-` for IPv6 as upstream's `KUBE-6-`), types,
//! comments, entry texts, and the `ipset restore` input that brings the
//! kernel's sets to the wanted entries.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::tracker::IpFamily;

/// The kernel's limit on a set name.
pub const MAX_SET_NAME: usize = 31;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetType {
    HashIp,
    HashIpPort,
    HashIpPortIp,
    HashIpPortNet,
    BitmapPort,
}

impl SetType {
    pub fn as_str(self) -> &'static str {
        match self {
            SetType::HashIp => "hash:ip",
            SetType::HashIpPort => "hash:ip,port",
            SetType::HashIpPortIp => "hash:ip,port,ip",
            SetType::HashIpPortNet => "hash:ip,port,net",
            SetType::BitmapPort => "bitmap:port",
        }
    }
}

/// Every set the mode uses, in upstream's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Set {
    LoopBack,
    ClusterIp,
    ExternalIp,
    ExternalIpLocal,
    LoadBalancer,
    LoadBalancerFw,
    LoadBalancerLocal,
    LoadBalancerSourceIp,
    LoadBalancerSourceCidr,
    NodePortTcp,
    NodePortLocalTcp,
    NodePortUdp,
    NodePortLocalUdp,
    NodePortSctp,
    NodePortLocalSctp,
    HealthCheckNodePort,
    IpvsIps,
}

pub const ALL_SETS: [Set; 17] = [
    Set::LoopBack,
    Set::ClusterIp,
    Set::ExternalIp,
    Set::ExternalIpLocal,
    Set::LoadBalancer,
    Set::LoadBalancerFw,
    Set::LoadBalancerLocal,
    Set::LoadBalancerSourceIp,
    Set::LoadBalancerSourceCidr,
    Set::NodePortTcp,
    Set::NodePortLocalTcp,
    Set::NodePortUdp,
    Set::NodePortLocalUdp,
    Set::NodePortSctp,
    Set::NodePortLocalSctp,
    Set::HealthCheckNodePort,
    Set::IpvsIps,
];

impl Set {
    /// The name without the `US-`/`US-6-` prefix (upstream's after `KUBE-`).
    fn stem(self) -> &'static str {
        match self {
            Set::LoopBack => "LOOP-BACK",
            Set::ClusterIp => "CLUSTER-IP",
            Set::ExternalIp => "EXTERNAL-IP",
            Set::ExternalIpLocal => "EXTERNAL-IP-LOCAL",
            Set::LoadBalancer => "LOAD-BALANCER",
            Set::LoadBalancerFw => "LOAD-BALANCER-FW",
            Set::LoadBalancerLocal => "LOAD-BALANCER-LOCAL",
            Set::LoadBalancerSourceIp => "LOAD-BALANCER-SOURCE-IP",
            Set::LoadBalancerSourceCidr => "LOAD-BALANCER-SOURCE-CIDR",
            Set::NodePortTcp => "NODE-PORT-TCP",
            Set::NodePortLocalTcp => "NODE-PORT-LOCAL-TCP",
            Set::NodePortUdp => "NODE-PORT-UDP",
            Set::NodePortLocalUdp => "NODE-PORT-LOCAL-UDP",
            Set::NodePortSctp => "NODE-PORT-SCTP-HASH",
            Set::NodePortLocalSctp => "NODE-PORT-LOCAL-SCTP-HASH",
            Set::HealthCheckNodePort => "HEALTH-CHECK-NODE-PORT",
            Set::IpvsIps => "IPVS-IPS",
        }
    }

    /// The set's name for a family: `US-CLUSTER-IP`, `US-6-CLUSTER-IP`.
    pub fn name(self, family: IpFamily) -> String {
        let prefix = match family {
            IpFamily::V4 => "US-",
            IpFamily::V6 => "US-6-",
        };
        let mut name = format!("{prefix}{}", self.stem());
        name.truncate(MAX_SET_NAME);
        name
    }

    pub fn set_type(self) -> SetType {
        match self {
            Set::LoopBack | Set::LoadBalancerSourceIp => SetType::HashIpPortIp,
            Set::LoadBalancerSourceCidr => SetType::HashIpPortNet,
            Set::NodePortTcp
            | Set::NodePortLocalTcp
            | Set::NodePortUdp
            | Set::NodePortLocalUdp
            | Set::HealthCheckNodePort => SetType::BitmapPort,
            Set::IpvsIps => SetType::HashIp,
            _ => SetType::HashIpPort,
        }
    }

    /// Upstream's comment, which the iptables rules matching the set carry.
    pub fn comment(self) -> &'static str {
        match self {
            Set::LoopBack => {
                "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"
            }
            Set::ClusterIp => "Kubernetes service cluster ip + port for masquerade purpose",
            Set::ExternalIp => {
                "Kubernetes service external ip + port for masquerade and filter purpose"
            }
            Set::ExternalIpLocal => {
                "Kubernetes service external ip + port with externalTrafficPolicy=local"
            }
            Set::LoadBalancer => "Kubernetes service lb portal",
            Set::LoadBalancerLocal => {
                "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"
            }
            Set::LoadBalancerFw => {
                "Kubernetes service load balancer ip + port for load balancer with sourceRange"
            }
            Set::LoadBalancerSourceIp => {
                "Kubernetes service load balancer ip + port + source IP for packet filter purpose"
            }
            Set::LoadBalancerSourceCidr => {
                "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"
            }
            Set::NodePortTcp => "Kubernetes nodeport TCP port for masquerade purpose",
            Set::NodePortLocalTcp => {
                "Kubernetes nodeport TCP port with externalTrafficPolicy=local"
            }
            Set::NodePortUdp => "Kubernetes nodeport UDP port for masquerade purpose",
            Set::NodePortLocalUdp => {
                "Kubernetes nodeport UDP port with externalTrafficPolicy=local"
            }
            Set::NodePortSctp => {
                "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"
            }
            Set::NodePortLocalSctp => {
                "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"
            }
            Set::HealthCheckNodePort => "Kubernetes health check node port",
            Set::IpvsIps => "Addresses on the ipvs interface",
        }
    }

    /// The `ipset create` arguments after the name (upstream's defaults:
    /// hash size 1024, at most 65536 entries, ports 0-65535).
    pub fn create_args(self, family: IpFamily) -> String {
        let set_type = self.set_type();
        match set_type {
            SetType::BitmapPort => format!("{} range 0-65535", set_type.as_str()),
            _ => {
                let family = match family {
                    IpFamily::V4 => "inet",
                    IpFamily::V6 => "inet6",
                };
                format!(
                    "{} family {family} hashsize 1024 maxelem 65536",
                    set_type.as_str()
                )
            }
        }
    }
}

/// Each set's entries, as `ipset list` prints them (upstream's Entry.String).
pub type SetEntries = BTreeMap<Set, BTreeSet<String>>;

/// Adds and deletions that turn `current` into `wanted`, per set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetChanges {
    pub add: SetEntries,
    pub del: SetEntries,
}

impl SetChanges {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.del.is_empty()
    }
}

/// Sets missing from `current` count as empty.
pub fn set_changes(wanted: &SetEntries, current: &SetEntries) -> SetChanges {
    let empty = BTreeSet::new();
    let mut changes = SetChanges::default();
    for set in ALL_SETS {
        let want = wanted.get(&set).unwrap_or(&empty);
        let have = current.get(&set).unwrap_or(&empty);
        let add: BTreeSet<String> = want.difference(have).cloned().collect();
        let del: BTreeSet<String> = have.difference(want).cloned().collect();
        if !add.is_empty() {
            changes.add.insert(set, add);
        }
        if !del.is_empty() {
            changes.del.insert(set, del);
        }
    }
    changes
}

/// The `ipset restore` input: every set created (a no-op for one that
/// exists, since the IO side runs `ipset -exist restore`, which also makes
/// adding a present entry or deleting a missing one harmless), then the
/// deletions and the additions. Upstream runs one `ipset` command per
/// entry; one restore is the same change in one process.
pub fn restore_text(family: IpFamily, changes: &SetChanges) -> String {
    let mut text = String::new();
    for set in ALL_SETS {
        let _ = writeln!(
            text,
            "create {} {}",
            set.name(family),
            set.create_args(family)
        );
    }
    for (set, entries) in &changes.del {
        for entry in entries {
            let _ = writeln!(text, "del {} {entry}", set.name(family));
        }
    }
    for (set, entries) in &changes.add {
        for entry in entries {
            let _ = writeln!(text, "add {} {entry}", set.name(family));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_carry_our_prefix() {
        for set in ALL_SETS {
            for family in [IpFamily::V4, IpFamily::V6] {
                let name = set.name(family);
                assert!(name.len() <= MAX_SET_NAME, "{name}");
                assert!(name.starts_with("US-"), "{name}");
            }
        }
        assert_eq!(Set::NodePortTcp.name(IpFamily::V4), "US-NODE-PORT-TCP");
        assert_eq!(Set::ClusterIp.name(IpFamily::V6), "US-6-CLUSTER-IP");
        assert_eq!(
            Set::NodePortLocalSctp.name(IpFamily::V6),
            "US-6-NODE-PORT-LOCAL-SCTP-HASH"
        );
    }

    #[test]
    fn restore_text_creates_every_set_then_deletes_then_adds() {
        let wanted = SetEntries::from([
            (
                Set::ClusterIp,
                BTreeSet::from(["10.0.0.1,tcp:80".to_string()]),
            ),
            (Set::NodePortTcp, BTreeSet::from(["30080".to_string()])),
        ]);
        let current = SetEntries::from([
            (
                Set::ClusterIp,
                BTreeSet::from(["10.0.0.1,tcp:80".to_string(), "10.0.0.2,udp:53".to_string()]),
            ),
            (Set::IpvsIps, BTreeSet::from(["10.0.0.2".to_string()])),
        ]);
        let changes = set_changes(&wanted, &current);
        let golden = "\
create US-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536
create US-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536
create US-EXTERNAL-IP hash:ip,port family inet hashsize 1024 maxelem 65536
create US-EXTERNAL-IP-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536
create US-LOAD-BALANCER hash:ip,port family inet hashsize 1024 maxelem 65536
create US-LOAD-BALANCER-FW hash:ip,port family inet hashsize 1024 maxelem 65536
create US-LOAD-BALANCER-LOCAL hash:ip,port family inet hashsize 1024 maxelem 65536
create US-LOAD-BALANCER-SOURCE-IP hash:ip,port,ip family inet hashsize 1024 maxelem 65536
create US-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net family inet hashsize 1024 maxelem 65536
create US-NODE-PORT-TCP bitmap:port range 0-65535
create US-NODE-PORT-LOCAL-TCP bitmap:port range 0-65535
create US-NODE-PORT-UDP bitmap:port range 0-65535
create US-NODE-PORT-LOCAL-UDP bitmap:port range 0-65535
create US-NODE-PORT-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536
create US-NODE-PORT-LOCAL-SCTP-HASH hash:ip,port family inet hashsize 1024 maxelem 65536
create US-HEALTH-CHECK-NODE-PORT bitmap:port range 0-65535
create US-IPVS-IPS hash:ip family inet hashsize 1024 maxelem 65536
del US-CLUSTER-IP 10.0.0.2,udp:53
del US-IPVS-IPS 10.0.0.2
add US-NODE-PORT-TCP 30080
";
        assert_eq!(restore_text(IpFamily::V4, &changes), golden);
        assert!(set_changes(&wanted, &wanted).is_empty());
    }
}
