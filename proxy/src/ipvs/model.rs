//! IPVS objects as the proxy handles them (upstream's util/ipvs
//! VirtualServer and RealServer), independent of how they reach the kernel.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::tracker::Protocol;

/// uapi ip_vs.h IP_VS_SVC_F_PERSISTENT: ClientIP session affinity.
pub const FLAG_PERSISTENT: u32 = 0x1;
/// IP_VS_SVC_F_HASHED: the kernel sets it on every service it holds, so
/// it is masked off what is read back before comparing.
pub const FLAG_HASHED: u32 = 0x2;
/// IP_VS_SVC_F_SCHED2 (SH_PORT): the `mh` scheduler hashes the source port too.
pub const FLAG_SOURCE_HASH: u32 = 0x10;

/// What identifies a virtual server in the kernel's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for ServiceKey {
    /// `ip:port/PROTO` (`[ip]:port/PROTO` for IPv6), as upstream prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = self.protocol.lower().to_ascii_uppercase();
        write!(f, "{}/{proto}", SocketAddr::new(self.address, self.port))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualServer {
    pub key: ServiceKey,
    pub scheduler: String,
    /// Without [`FLAG_HASHED`].
    pub flags: u32,
    /// Persistence timeout in seconds (0 without ClientIP affinity).
    pub timeout: u32,
}

impl VirtualServer {
    /// Same scheduler, flags and timeout: nothing to update.
    pub fn same_settings(&self, other: &VirtualServer) -> bool {
        self.scheduler == other.scheduler
            && self.flags == other.flags
            && self.timeout == other.timeout
    }
}

/// A real server (IPVS destination) as the proxy wants it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RealServer {
    pub address: SocketAddr,
    pub weight: u32,
}

/// A real server as the kernel reports it, with its connection counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealServerState {
    pub address: SocketAddr,
    pub weight: u32,
    pub active_connections: u32,
    pub inactive_connections: u32,
}

/// IPVS's IPPROTO numbers.
pub fn protocol_number(protocol: Protocol) -> u16 {
    match protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

pub fn protocol_of_number(number: u16) -> Option<Protocol> {
    match number {
        6 => Some(Protocol::Tcp),
        17 => Some(Protocol::Udp),
        132 => Some(Protocol::Sctp),
        _ => None,
    }
}

/// Upstream's IsRsGracefulTerminationNeeded: UDP and SCTP real servers are
/// deleted at once (expire_nodest_conn drops their flows on the next
/// packet); TCP ones wait for their connections to end.
pub fn needs_graceful_termination(protocol: Protocol) -> bool {
    protocol == Protocol::Tcp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_print_as_upstream() {
        let key = |a: &str| ServiceKey {
            address: a.parse().unwrap(),
            port: 80,
            protocol: Protocol::Tcp,
        };
        assert_eq!(key("10.0.0.1").to_string(), "10.0.0.1:80/TCP");
        assert_eq!(key("fd00::1").to_string(), "[fd00::1]:80/TCP");
    }

    #[test]
    fn protocol_numbers_round_trip() {
        for p in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
            assert_eq!(protocol_of_number(protocol_number(p)), Some(p));
        }
        assert_eq!(protocol_of_number(1), None);
    }
}
