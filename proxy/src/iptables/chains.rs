//! Our chain names and the jumps into them from the built-in chains.

use data_encoding::BASE32;
use sha2::{Digest, Sha256};

pub const SERVICES: &str = "US-SERVICES";
pub const EXTERNAL_SERVICES: &str = "US-EXTERNAL-SERVICES";
pub const NODE_PORTS: &str = "US-NODEPORTS";
pub const POSTROUTING: &str = "US-POSTROUTING";
pub const MARK_MASQ: &str = "US-MARK-MASQ";
pub const FORWARD: &str = "US-FORWARD";
pub const PROXY_FIREWALL: &str = "US-PROXY-FIREWALL";
/// Our copy of kubelet's KUBE-FIREWALL: the guard that goes with serving
/// NodePorts on localhost (route_localnet).
pub const LOCALHOST_FIREWALL: &str = "US-FIREWALL";
/// Created empty in mangle, nat and filter by the IO side and watched: when
/// it vanishes, someone flushed the tables and a full sync is due. Never part
/// of the restore input, or a partial sync would recreate it unnoticed.
pub const CANARY_CHAIN: &str = "US-PROXY-CANARY";

/// Dispatches to a service port's endpoints under Cluster policy.
pub const SVC_PREFIX: &str = "US-SVC-";
/// Dispatches to a service port's local endpoints under Local policy.
pub const SVL_PREFIX: &str = "US-SVL-";
/// Filters load-balancer traffic by loadBalancerSourceRanges.
pub const FW_PREFIX: &str = "US-FW-";
/// Where external traffic (NodePort, external and load-balancer IPs) goes first.
pub const EXT_PREFIX: &str = "US-EXT-";
/// One endpoint's DNAT.
pub const SEP_PREFIX: &str = "US-SEP-";

const SERVICE_CHAIN_PREFIXES: [&str; 5] =
    [SVC_PREFIX, SVL_PREFIX, FW_PREFIX, EXT_PREFIX, SEP_PREFIX];

/// Upstream's hash: the first 16 characters of base32(sha256(text)). The
/// same text as upstream hashes, so `US-SVC-X` and `KUBE-SVC-X` name the
/// same service port.
pub fn hash16(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut encoded = BASE32.encode(&digest);
    encoded.truncate(16);
    encoded
}

/// The per-service-port chain names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceChains {
    pub cluster: String,
    pub local: String,
    pub firewall: String,
    pub external: String,
}

impl ServiceChains {
    /// `port_name` is the ServicePortName's text (`ns/name:port`).
    pub fn new(port_name: &str, protocol: &str) -> Self {
        let hash = hash16(&format!("{port_name}{protocol}"));
        ServiceChains {
            cluster: format!("{SVC_PREFIX}{hash}"),
            local: format!("{SVL_PREFIX}{hash}"),
            firewall: format!("{FW_PREFIX}{hash}"),
            external: format!("{EXT_PREFIX}{hash}"),
        }
    }
}

/// `endpoint` is `ip:port`.
pub fn endpoint_chain(port_name: &str, protocol: &str, endpoint: &str) -> String {
    format!(
        "{SEP_PREFIX}{}",
        hash16(&format!("{port_name}{protocol}{endpoint}"))
    )
}

/// A per-service chain of ours, so stale ones may be deleted.
pub fn is_service_chain(chain: &str) -> bool {
    SERVICE_CHAIN_PREFIXES.iter().any(|p| chain.starts_with(p))
}

/// A rule in a built-in chain jumping to one of ours. These are not in the
/// restore input (which would replace everything else in PREROUTING, ...):
/// the IO side checks for each and inserts it at the top when missing, on
/// every full sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JumpRule {
    pub table: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    pub comment: &'static str,
    pub conntrack_new: bool,
}

impl JumpRule {
    /// The rule's arguments after `-t table -I from`, one per argv entry.
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.conntrack_new {
            args.extend(["-m", "conntrack", "--ctstate", "NEW"].map(String::from));
        }
        if !self.comment.is_empty() {
            args.extend(["-m", "comment", "--comment", self.comment].map(String::from));
        }
        args.extend(["-j", self.to].map(String::from));
        args
    }
}

/// Upstream's jumps, in its order; the localhost guard only when NodePorts
/// are served on localhost.
pub fn jump_rules(localhost_node_ports: bool) -> Vec<JumpRule> {
    let jump = |table, from, to, comment, conntrack_new| JumpRule {
        table,
        from,
        to,
        comment,
        conntrack_new,
    };
    let external = "kubernetes externally-visible service portals";
    let portals = "kubernetes service portals";
    let lb_firewall = "kubernetes load balancer firewall";
    let mut rules = vec![
        jump("filter", "INPUT", EXTERNAL_SERVICES, external, true),
        jump("filter", "FORWARD", EXTERNAL_SERVICES, external, true),
        jump(
            "filter",
            "INPUT",
            NODE_PORTS,
            "kubernetes health check service ports",
            false,
        ),
        jump("filter", "FORWARD", SERVICES, portals, true),
        jump("filter", "OUTPUT", SERVICES, portals, true),
        jump(
            "filter",
            "FORWARD",
            FORWARD,
            "kubernetes forwarding rules",
            false,
        ),
        jump("filter", "INPUT", PROXY_FIREWALL, lb_firewall, true),
        jump("filter", "OUTPUT", PROXY_FIREWALL, lb_firewall, true),
        jump("filter", "FORWARD", PROXY_FIREWALL, lb_firewall, true),
        jump("nat", "OUTPUT", SERVICES, portals, false),
        jump("nat", "PREROUTING", SERVICES, portals, false),
        jump(
            "nat",
            "POSTROUTING",
            POSTROUTING,
            "kubernetes postrouting rules",
            false,
        ),
    ];
    if localhost_node_ports {
        rules.push(jump("filter", "INPUT", LOCALHOST_FIREWALL, "", false));
        rules.push(jump("filter", "OUTPUT", LOCALHOST_FIREWALL, "", false));
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream's proxier_test.go names ns1/svc1:p80 KUBE-SVC-XPGD46QRK7WJZT7O
    /// and its endpoint 10.180.0.1:80 KUBE-SEP-SXIVWICOYRO3J4NJ.
    #[test]
    fn hashes_match_upstreams() {
        assert_eq!(
            ServiceChains::new("ns1/svc1:p80", "tcp").cluster,
            "US-SVC-XPGD46QRK7WJZT7O"
        );
        assert_eq!(
            endpoint_chain("ns1/svc1:p80", "tcp", "10.180.0.1:80"),
            "US-SEP-SXIVWICOYRO3J4NJ"
        );
    }

    #[test]
    fn chain_names_fit_iptables() {
        let chains = ServiceChains::new(
            "a-very-long-namespace/a-very-long-service-name:https",
            "sctp",
        );
        for name in [
            &chains.cluster,
            &chains.local,
            &chains.firewall,
            &chains.external,
        ] {
            assert!(name.len() <= 28, "{name}");
            assert!(is_service_chain(name));
        }
        assert!(!is_service_chain(SERVICES));
        assert!(!is_service_chain("KUBE-SVC-XPGD46QRK7WJZT7O"));
    }

    #[test]
    fn jump_rule_args() {
        let rules = jump_rules(false);
        assert_eq!(rules.len(), 12);
        assert_eq!(
            rules[0].args().join(" "),
            "-m conntrack --ctstate NEW -m comment --comment kubernetes externally-visible service portals -j US-EXTERNAL-SERVICES"
        );
        assert_eq!(jump_rules(true)[13].args(), ["-j", "US-FIREWALL"]);
    }
}
