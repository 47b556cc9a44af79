//! Which conntrack flows are stale (upstream's CleanStaleEntries decision).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use super::{Flow, IPPROTO_UDP};
use crate::tracker::{Protocol, Tracker};

/// The UDP flows aimed at a Service frontend whose reply does not come from
/// one of the Service port's serving endpoints, in `flows`' order.
///
/// As upstream: frontends are `clusterIP:port`, each load-balancer IP and
/// external IP with the port, and the NodePort on any address. Only UDP (not
/// SCTP or TCP, whose entries end with their connections). Terminating,
/// topology and traffic policies are not considered: a flow to a serving
/// endpoint stays, as a TCP connection would. A frontend of a Service without
/// serving endpoints loses all its flows (they were DNATed to a deleted
/// endpoint, or answered by the REJECT rule and would keep the next datagrams
/// away from the first new endpoint), except on its NodePort, which is
/// matched by port alone and so would take unrelated traffic with it.
pub fn stale_flows<'a>(tracker: &Tracker, flows: &'a [Flow]) -> Vec<&'a Flow> {
    let mut by_frontend: HashMap<SocketAddr, HashSet<SocketAddr>> = HashMap::new();
    let mut by_node_port: HashMap<u16, HashSet<SocketAddr>> = HashMap::new();
    for (name, service) in tracker.service_ports() {
        if service.protocol != Protocol::Udp {
            continue;
        }
        let serving: HashSet<SocketAddr> = (tracker.endpoints(name).iter())
            .filter(|e| e.serving)
            .map(|e| e.address)
            .collect();
        let frontends = std::iter::once(service.cluster_ip)
            .chain(service.load_balancer_vips.iter().copied())
            .chain(service.external_ips.iter().copied());
        for ip in frontends {
            by_frontend.insert(SocketAddr::new(ip, service.port), serving.clone());
        }
        if service.node_port != 0 && !serving.is_empty() {
            by_node_port.insert(service.node_port, serving);
        }
    }

    flows
        .iter()
        .filter(|flow| flow.protocol == IPPROTO_UDP)
        .filter(|flow| {
            let answered_by = flow.reply.source;
            let frontend = flow.original.destination;
            let not_serving = |endpoints: &HashSet<SocketAddr>| !endpoints.contains(&answered_by);
            by_frontend.get(&frontend).is_some_and(not_serving)
                || by_node_port.get(&frontend.port()).is_some_and(not_serving)
        })
        .collect()
}
