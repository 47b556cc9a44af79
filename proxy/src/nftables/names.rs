//! Our table and the names inside it: upstream's chain, set and map names
//! (pkg/proxy/nftables), in a table of our own so both proxies can share a
//! host and each deletes only its own.

use data_encoding::BASE32;
use sha2::{Digest, Sha256};

use crate::tracker::ServicePortName;

/// Ours; upstream's is `kube-proxy`. One per family (`ip`, `ip6`).
pub const TABLE: &str = "understudy-proxy";

// Base chains, each `${type}-${hook}` as upstream.
pub const FILTER_PREROUTING_PRE_DNAT: &str = "filter-prerouting-pre-dnat";
pub const FILTER_OUTPUT_PRE_DNAT: &str = "filter-output-pre-dnat";
pub const FILTER_INPUT: &str = "filter-input";
pub const FILTER_FORWARD: &str = "filter-forward";
pub const FILTER_OUTPUT: &str = "filter-output";
pub const NAT_PREROUTING: &str = "nat-prerouting";
pub const NAT_OUTPUT: &str = "nat-output";
pub const NAT_POSTROUTING: &str = "nat-postrouting";

// Top-level regular chains.
pub const SERVICES: &str = "services";
pub const SERVICE_ENDPOINTS_CHECK: &str = "service-endpoints-check";
pub const NODE_PORT_ENDPOINTS_CHECK: &str = "nodeport-endpoints-check";
pub const REJECT_CHAIN: &str = "reject-chain";
pub const CLUSTER_IPS_CHECK: &str = "cluster-ips-check";
pub const FIREWALL_CHECK: &str = "firewall-check";
pub const MASQUERADING: &str = "masquerading";

// Sets and verdict maps.
pub const SERVICE_IPS: &str = "service-ips";
pub const SERVICE_NODE_PORTS: &str = "service-nodeports";
pub const NODE_PORT_IPS: &str = "nodeport-ips";
pub const CLUSTER_IPS: &str = "cluster-ips";
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
pub const NO_ENDPOINT_NODE_PORTS: &str = "no-endpoint-nodeports";
pub const FIREWALL_IPS: &str = "firewall-ips";
pub const HAIRPIN_CONNECTIONS: &str = "hairpin-connections";

/// Per service port: its endpoints under Cluster policy.
pub const CLUSTER_POLICY_PREFIX: &str = "service-";
/// Per service port: its local endpoints under Local policy.
pub const LOCAL_POLICY_PREFIX: &str = "local-";
/// Per service port: where external traffic goes first.
pub const EXTERNAL_PREFIX: &str = "external-";
/// Per service port: loadBalancerSourceRanges.
pub const FIREWALL_PREFIX: &str = "firewall-";
/// Per endpoint (session affinity only): the DNAT and the affinity update.
pub const ENDPOINT_PREFIX: &str = "endpoint-";
/// Per endpoint (session affinity only): recent clients, with a timeout.
pub const AFFINITY_PREFIX: &str = "affinity-";

/// knftables' NameLengthMax less its longest prefix (16).
const NAME_BASE_MAX: usize = 256 - 16;
/// nft's longest comment.
pub const COMMENT_MAX: usize = 128;

/// Upstream's hashAndTruncate: the first 8 characters of
/// base32(sha256(name)), a dash, the name; cut to fit with "..." (the hash
/// keeps a cut name unique).
fn hash_and_truncate(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    let encoded = BASE32.encode(&digest);
    let mut out = format!("{}-{name}", &encoded[..8]);
    if out.len() > NAME_BASE_MAX {
        out.truncate(NAME_BASE_MAX - 3);
        out.push_str("...");
    }
    out
}

/// `HASH-namespace/name/protocol/port`: `/` cannot appear in any of the
/// parts, nor in our fixed names, so it marks a per-service chain.
pub fn service_base(name: &ServicePortName) -> String {
    hash_and_truncate(&format!(
        "{}/{}/{}/{}",
        name.service.namespace,
        name.service.name,
        name.protocol.lower(),
        name.port
    ))
}

/// `HASH-namespace/name/protocol/port__ip/port`, an IPv6 address's colons
/// (not allowed in names) as dots. `endpoint` is `ip:port` / `[ip]:port`.
pub fn endpoint_base(name: &ServicePortName, endpoint: &std::net::SocketAddr) -> String {
    let ip = endpoint.ip().to_string().replace(':', ".");
    hash_and_truncate(&format!(
        "{}/{}/{}/{}__{ip}/{}",
        name.service.namespace,
        name.service.name,
        name.protocol.lower(),
        name.port,
        endpoint.port()
    ))
}

/// The per-service-port chain names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceChains {
    pub cluster: String,
    pub local: String,
    pub external: String,
    pub firewall: String,
}

impl ServiceChains {
    pub fn new(name: &ServicePortName) -> Self {
        let base = service_base(name);
        ServiceChains {
            cluster: format!("{CLUSTER_POLICY_PREFIX}{base}"),
            local: format!("{LOCAL_POLICY_PREFIX}{base}"),
            external: format!("{EXTERNAL_PREFIX}{base}"),
            firewall: format!("{FIREWALL_PREFIX}{base}"),
        }
    }
}

/// A per-service or per-endpoint chain (ours to delete when unused).
pub fn is_service_chain(chain: &str) -> bool {
    chain.contains('/')
}

pub fn is_affinity_set(set: &str) -> bool {
    set.starts_with(AFFINITY_PREFIX)
}

/// Cut to nft's comment length (at a character boundary).
pub fn comment(text: &str) -> String {
    if text.len() <= COMMENT_MAX {
        return text.to_string();
    }
    let mut end = COMMENT_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::{Protocol, ServiceName};

    fn port(ns: &str, name: &str, port: &str) -> ServicePortName {
        ServicePortName::new(ServiceName::new(ns, name), port, Protocol::Tcp)
    }

    /// The names upstream's proxier_test.go expects.
    #[test]
    fn names_match_upstreams() {
        assert_eq!(
            ServiceChains::new(&port("ns1", "svc1", "p80")).cluster,
            "service-ULMVA6XW-ns1/svc1/tcp/p80"
        );
        assert_eq!(
            ServiceChains::new(&port("ns2", "svc2", "p80")).external,
            "external-42NFTM6N-ns2/svc2/tcp/p80"
        );
        assert_eq!(
            endpoint_base(
                &port("ns5", "svc5", "p80"),
                &"10.180.0.3:80".parse().unwrap()
            ),
            "GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"
        );
        let v6 = endpoint_base(
            &port("ns1", "svc1", "p80"),
            &"[fd00:10:180::1]:80".parse().unwrap(),
        );
        assert!(v6.ends_with("-ns1/svc1/tcp/p80__fd00.10.180..1/80"), "{v6}");
        assert!(is_service_chain("service-ULMVA6XW-ns1/svc1/tcp/p80"));
        assert!(!is_service_chain(SERVICES));
    }

    #[test]
    fn long_names_are_cut_and_comments_too() {
        let long = "n".repeat(63);
        let base = service_base(&port(&long, &long, &long));
        assert!(base.len() <= NAME_BASE_MAX);
        let huge = hash_and_truncate(&"x".repeat(300));
        assert_eq!(huge.len(), NAME_BASE_MAX);
        assert!(huge.ends_with("..."));
        assert_eq!(comment(&"c".repeat(200)).len(), COMMENT_MAX);
    }
}
