//! The kernel's IPVS table through generic netlink (family "IPVS", uapi
//! linux/ip_vs.h), as upstream reaches it through moby/ipvs.
//!
//! The rust-netlink crates do the socket (`netlink-sys`), the netlink and
//! generic-netlink framing and the family-id lookup
//! (`netlink-packet-generic`'s nlctrl messages). No crate carries the IPVS
//! family's own attributes, so their layout is written here, from the uapi
//! header: a command's top-level attributes nest one service
//! (IPVS_CMD_ATTR_SERVICE) and/or one destination (IPVS_CMD_ATTR_DEST);
//! integers are in host order except ports (network order); an IPv4
//! address is sent as its 4 bytes and comes back as the first 4 of 16.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NLA_TYPE_MASK, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
    NetlinkBuffer, NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable, Nla, NlaBuffer, NlasIterator, Parseable, ParseableParametrized, emit_u16,
    emit_u32, parse_u16, parse_u32,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_GENERIC};

use super::model::{
    FLAG_HASHED, RealServer, RealServerState, ServiceKey, VirtualServer, protocol_number,
    protocol_of_number,
};

pub const FAMILY_NAME: &str = "IPVS";
pub const FAMILY_VERSION: u8 = 1;

const AF_INET: u16 = 2;
/// nlctrl answers a family lookup for an unregistered family with ENOENT.
const ENOENT: i32 = 2;
const AF_INET6: u16 = 10;

// enum IPVS_CMD_*
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    NewService = 1,
    SetService = 2,
    DelService = 3,
    GetService = 4,
    NewDest = 5,
    SetDest = 6,
    DelDest = 7,
    GetDest = 8,
    SetConfig = 12,
}

impl Command {
    fn of(value: u8) -> Option<Command> {
        use Command::*;
        [
            NewService, SetService, DelService, GetService, NewDest, SetDest, DelDest, GetDest,
            SetConfig,
        ]
        .into_iter()
        .find(|c| *c as u8 == value)
    }
}

// IPVS_CMD_ATTR_*
const CMD_ATTR_SERVICE: u16 = 1;
const CMD_ATTR_DEST: u16 = 2;
const CMD_ATTR_TIMEOUT_TCP: u16 = 4;
const CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
const CMD_ATTR_TIMEOUT_UDP: u16 = 6;
// IPVS_SVC_ATTR_*
const SVC_ATTR_AF: u16 = 1;
const SVC_ATTR_PROTOCOL: u16 = 2;
const SVC_ATTR_ADDR: u16 = 3;
const SVC_ATTR_PORT: u16 = 4;
const SVC_ATTR_FWMARK: u16 = 5;
const SVC_ATTR_SCHED_NAME: u16 = 6;
const SVC_ATTR_FLAGS: u16 = 7;
const SVC_ATTR_TIMEOUT: u16 = 8;
const SVC_ATTR_NETMASK: u16 = 9;
// IPVS_DEST_ATTR_*
const DEST_ATTR_ADDR: u16 = 1;
const DEST_ATTR_PORT: u16 = 2;
const DEST_ATTR_FWD_METHOD: u16 = 3;
const DEST_ATTR_WEIGHT: u16 = 4;
const DEST_ATTR_U_THRESH: u16 = 5;
const DEST_ATTR_L_THRESH: u16 = 6;
const DEST_ATTR_ACTIVE_CONNS: u16 = 7;
const DEST_ATTR_INACT_CONNS: u16 = 8;
const DEST_ATTR_ADDR_FAMILY: u16 = 11;
/// IP_VS_CONN_F_MASQ: NAT to the real server, the only method kube-proxy uses.
const FWD_MASQ: u32 = 0;

/// One attribute: a kind and its value bytes (nested lists are built from
/// these too). Enough for a family whose attributes are all fixed-size
/// numbers, addresses and one string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr(DefaultNla);

impl Attr {
    fn new(kind: u16, value: Vec<u8>) -> Attr {
        Attr(DefaultNla::new(kind, value))
    }

    fn u16(kind: u16, value: u16) -> Attr {
        let mut buf = vec![0; 2];
        emit_u16(&mut buf, value).expect("2 bytes");
        Attr::new(kind, buf)
    }

    fn u32(kind: u16, value: u32) -> Attr {
        let mut buf = vec![0; 4];
        emit_u32(&mut buf, value).expect("4 bytes");
        Attr::new(kind, buf)
    }

    fn port(kind: u16, port: u16) -> Attr {
        Attr::new(kind, port.to_be_bytes().to_vec())
    }

    fn address(kind: u16, ip: IpAddr) -> Attr {
        Attr::new(
            kind,
            match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            },
        )
    }

    fn nested(kind: u16, children: &[Attr]) -> Attr {
        let mut buf = vec![0; children.buffer_len()];
        children.emit(&mut buf);
        Attr::new(kind, buf)
    }

    pub fn kind(&self) -> u16 {
        self.0.kind() & NLA_TYPE_MASK
    }

    pub fn value(&self) -> Vec<u8> {
        let mut value = vec![0; self.0.value_len()];
        self.0.emit_value(&mut value);
        value
    }
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        self.0.value_len()
    }
    fn kind(&self) -> u16 {
        self.0.kind()
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        self.0.emit_value(buffer)
    }
}

fn parse_attrs(buf: &[u8]) -> Result<Vec<Attr>, DecodeError> {
    NlasIterator::new(buf)
        .map(|nla| {
            let nla: NlaBuffer<&[u8]> = nla?;
            Ok(Attr(DefaultNla::parse(&nla)?))
        })
        .collect()
}

/// One IPVS generic-netlink message: a command and its top-level attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpvsMessage {
    pub command: Command,
    pub attrs: Vec<Attr>,
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        FAMILY_NAME
    }
    fn command(&self) -> u8 {
        self.command as u8
    }
    fn version(&self) -> u8 {
        FAMILY_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }
    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let command = Command::of(header.cmd)
            .ok_or_else(|| DecodeError::from(format!("unknown IPVS command {}", header.cmd)))?;
        Ok(IpvsMessage {
            command,
            attrs: parse_attrs(buf)?,
        })
    }
}

fn family_of(ip: IpAddr) -> u16 {
    match ip {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

/// What names a virtual server (enough for DEL_SERVICE and GET_DEST).
fn service_id(key: &ServiceKey) -> Vec<Attr> {
    vec![
        Attr::u16(SVC_ATTR_AF, family_of(key.address)),
        Attr::u16(SVC_ATTR_PROTOCOL, protocol_number(key.protocol)),
        Attr::address(SVC_ATTR_ADDR, key.address),
        Attr::port(SVC_ATTR_PORT, key.port),
    ]
}

/// The whole service, as NEW_SERVICE and SET_SERVICE need it.
fn service_full(server: &VirtualServer) -> Vec<Attr> {
    let mut attrs = service_id(&server.key);
    let mut sched = server.scheduler.as_bytes().to_vec();
    sched.push(0);
    attrs.push(Attr::new(SVC_ATTR_SCHED_NAME, sched));
    // struct ip_vs_flags { flags, mask }: every flag is set as given.
    let mut flags = vec![0; 8];
    emit_u32(&mut flags[..4], server.flags).expect("4 bytes");
    emit_u32(&mut flags[4..], u32::MAX).expect("4 bytes");
    attrs.push(Attr::new(SVC_ATTR_FLAGS, flags));
    attrs.push(Attr::u32(SVC_ATTR_TIMEOUT, server.timeout));
    // The persistence netmask: one client address per template, as upstream.
    let netmask = match server.key.address {
        IpAddr::V4(_) => u32::MAX,
        IpAddr::V6(_) => 128,
    };
    attrs.push(Attr::u32(SVC_ATTR_NETMASK, netmask));
    attrs
}

fn dest_id(address: SocketAddr) -> Vec<Attr> {
    vec![
        Attr::address(DEST_ATTR_ADDR, address.ip()),
        Attr::port(DEST_ATTR_PORT, address.port()),
    ]
}

fn dest_full(rs: &RealServer) -> Vec<Attr> {
    let mut attrs = dest_id(rs.address);
    attrs.push(Attr::u32(DEST_ATTR_FWD_METHOD, FWD_MASQ));
    attrs.push(Attr::u32(DEST_ATTR_WEIGHT, rs.weight));
    attrs.push(Attr::u32(DEST_ATTR_U_THRESH, 0));
    attrs.push(Attr::u32(DEST_ATTR_L_THRESH, 0));
    attrs
}

impl IpvsMessage {
    fn with(command: Command, service: Vec<Attr>, dest: Option<Vec<Attr>>) -> IpvsMessage {
        let mut attrs = vec![Attr::nested(CMD_ATTR_SERVICE, &service)];
        if let Some(dest) = dest {
            attrs.push(Attr::nested(CMD_ATTR_DEST, &dest));
        }
        IpvsMessage { command, attrs }
    }

    pub fn new_service(server: &VirtualServer) -> IpvsMessage {
        Self::with(Command::NewService, service_full(server), None)
    }

    pub fn set_service(server: &VirtualServer) -> IpvsMessage {
        Self::with(Command::SetService, service_full(server), None)
    }

    pub fn del_service(key: &ServiceKey) -> IpvsMessage {
        Self::with(Command::DelService, service_id(key), None)
    }

    /// With NLM_F_DUMP: every service (an empty service attribute, as moby/ipvs sends).
    pub fn get_services() -> IpvsMessage {
        Self::with(Command::GetService, Vec::new(), None)
    }

    pub fn new_dest(key: &ServiceKey, rs: &RealServer) -> IpvsMessage {
        Self::with(Command::NewDest, service_id(key), Some(dest_full(rs)))
    }

    pub fn set_dest(key: &ServiceKey, rs: &RealServer) -> IpvsMessage {
        Self::with(Command::SetDest, service_id(key), Some(dest_full(rs)))
    }

    pub fn del_dest(key: &ServiceKey, address: SocketAddr) -> IpvsMessage {
        Self::with(Command::DelDest, service_id(key), Some(dest_id(address)))
    }

    /// With NLM_F_DUMP: the service's destinations.
    pub fn get_dests(key: &ServiceKey) -> IpvsMessage {
        Self::with(Command::GetDest, service_id(key), None)
    }

    /// `ipvsadm --set`: connection timeouts in seconds; 0 leaves the
    /// kernel's value, as upstream's ipvs.tcpTimeout & co.
    pub fn set_timeouts(tcp: u32, tcp_fin: u32, udp: u32) -> IpvsMessage {
        IpvsMessage {
            command: Command::SetConfig,
            attrs: vec![
                Attr::u32(CMD_ATTR_TIMEOUT_TCP, tcp),
                Attr::u32(CMD_ATTR_TIMEOUT_TCP_FIN, tcp_fin),
                Attr::u32(CMD_ATTR_TIMEOUT_UDP, udp),
            ],
        }
    }

    fn nested(&self, kind: u16) -> Result<Option<Vec<Attr>>, DecodeError> {
        match self.attrs.iter().find(|a| a.kind() == kind) {
            Some(attr) => Ok(Some(parse_attrs(&attr.value())?)),
            None => Ok(None),
        }
    }

    /// A GET_SERVICE answer as a virtual server; `None` for a
    /// firewall-mark service (none of ours) or one of an unknown protocol.
    pub fn virtual_server(&self) -> Result<Option<VirtualServer>, DecodeError> {
        let attrs = self
            .nested(CMD_ATTR_SERVICE)?
            .ok_or_else(|| DecodeError::from("an IPVS service message without a service"))?;
        let (mut af, mut protocol, mut address, mut port) = (None, None, None, None);
        let (mut scheduler, mut flags, mut timeout) = (String::new(), 0, 0);
        for attr in &attrs {
            let value = attr.value();
            match attr.kind() {
                SVC_ATTR_AF => af = Some(parse_u16(&value)?),
                SVC_ATTR_PROTOCOL => protocol = Some(parse_u16(&value)?),
                SVC_ATTR_ADDR => address = Some(value),
                SVC_ATTR_PORT => port = Some(parse_port(&value)?),
                SVC_ATTR_FWMARK if parse_u32(&value)? != 0 => return Ok(None),
                SVC_ATTR_SCHED_NAME => {
                    scheduler = String::from_utf8_lossy(&value)
                        .trim_end_matches('\0')
                        .to_string()
                }
                SVC_ATTR_FLAGS => flags = parse_u32(value.get(..4).unwrap_or(&value))?,
                SVC_ATTR_TIMEOUT => timeout = parse_u32(&value)?,
                _ => {}
            }
        }
        let (Some(af), Some(protocol), Some(address), Some(port)) = (af, protocol, address, port)
        else {
            return Err(DecodeError::from(
                "an IPVS service without family, protocol, address or port",
            ));
        };
        let Some(protocol) = protocol_of_number(protocol) else {
            return Ok(None);
        };
        Ok(Some(VirtualServer {
            key: ServiceKey {
                address: parse_address(&address, af)?,
                port,
                protocol,
            },
            scheduler,
            flags: flags & !FLAG_HASHED,
            timeout,
        }))
    }

    /// A GET_DEST answer; `service_family` is the service's AF, used when the
    /// kernel (before 3.18) does not say the destination's own.
    pub fn real_server(&self, service_family: IpAddr) -> Result<RealServerState, DecodeError> {
        let attrs = self.nested(CMD_ATTR_DEST)?.ok_or_else(|| {
            DecodeError::from("an IPVS destination message without a destination")
        })?;
        let mut af = family_of(service_family);
        let (mut address, mut port) = (None, None);
        let (mut weight, mut active, mut inactive) = (0, 0, 0);
        for attr in &attrs {
            let value = attr.value();
            match attr.kind() {
                DEST_ATTR_ADDR => address = Some(value),
                DEST_ATTR_PORT => port = Some(parse_port(&value)?),
                DEST_ATTR_WEIGHT => weight = parse_u32(&value)?,
                DEST_ATTR_ACTIVE_CONNS => active = parse_u32(&value)?,
                DEST_ATTR_INACT_CONNS => inactive = parse_u32(&value)?,
                DEST_ATTR_ADDR_FAMILY => af = parse_u16(&value)?,
                _ => {}
            }
        }
        let (Some(address), Some(port)) = (address, port) else {
            return Err(DecodeError::from(
                "an IPVS destination without address or port",
            ));
        };
        Ok(RealServerState {
            address: SocketAddr::new(parse_address(&address, af)?, port),
            weight,
            active_connections: active,
            inactive_connections: inactive,
        })
    }
}

fn parse_port(value: &[u8]) -> Result<u16, DecodeError> {
    let bytes: [u8; 2] = value
        .try_into()
        .map_err(|_| DecodeError::from(format!("a port of {} bytes", value.len())))?;
    Ok(u16::from_be_bytes(bytes))
}

fn parse_address(value: &[u8], af: u16) -> Result<IpAddr, DecodeError> {
    match af {
        AF_INET if value.len() >= 4 => {
            let octets: [u8; 4] = value[..4].try_into().expect("4 bytes");
            Ok(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        AF_INET6 if value.len() >= 16 => {
            let octets: [u8; 16] = value[..16].try_into().expect("16 bytes");
            Ok(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => Err(DecodeError::from(format!(
            "an address of {} bytes for family {af}",
            value.len()
        ))),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error(
        "the kernel has no IPVS: the generic netlink family \"IPVS\" is not registered \
         (load the ip_vs module, or use a kernel built with CONFIG_IP_VS)"
    )]
    Missing,
    #[error("the kernel refused IPVS {request}: {source}")]
    Kernel {
        request: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot decode the kernel's IPVS answer: {0}")]
    Decode(String),
}

/// A whole netlink message (header included) carrying `payload`.
pub fn encode<T: NetlinkSerializable>(payload: T, flags: u16, seq: u32) -> Vec<u8>
where
    NetlinkPayload<T>: From<T>,
{
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(payload));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// An IPVS request for the resolved family id.
pub fn encode_ipvs(message: IpvsMessage, family_id: u16, dump: bool, seq: u32) -> Vec<u8> {
    let mut genl = GenlMessage::from_payload(message);
    genl.set_resolved_family_id(family_id);
    let flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { NLM_F_ACK };
    encode(genl, flags, seq)
}

/// One message of an answer.
#[derive(Debug)]
pub enum Answer<T> {
    Message(T),
    /// NLMSG_ERROR: an acknowledgement (`None`) or an errno.
    Ack(Option<i32>),
    Done,
    Other,
}

/// The messages of one datagram.
pub fn decode<T>(mut buf: &[u8]) -> Result<Vec<Answer<T>>, IpvsError>
where
    T: NetlinkDeserializable + std::fmt::Debug,
{
    let mut answers = Vec::new();
    while !buf.is_empty() {
        let framed =
            NetlinkBuffer::new_checked(buf).map_err(|e| IpvsError::Decode(e.to_string()))?;
        let length = framed.length() as usize;
        if length < 16 {
            return Err(IpvsError::Decode(format!("a message of length {length}")));
        }
        let message = NetlinkMessage::<T>::deserialize(&buf[..length])
            .map_err(|e| IpvsError::Decode(e.to_string()))?;
        answers.push(match message.payload {
            NetlinkPayload::InnerMessage(m) => Answer::Message(m),
            NetlinkPayload::Error(e) => Answer::Ack(e.code.map(|c| -c.get())),
            NetlinkPayload::Done(_) => Answer::Done,
            _ => Answer::Other,
        });
        buf = buf.get(length.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok(answers)
}

/// The generic-netlink controller request for the IPVS family's id.
pub fn family_request(seq: u32) -> Vec<u8> {
    let mut genl = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(FAMILY_NAME.to_string())],
    });
    genl.finalize();
    encode(genl, NLM_F_REQUEST | NLM_F_ACK, seq)
}

/// IPVS in the network namespace this thread is in when it is opened.
pub struct NetlinkIpvs {
    socket: Socket,
    family_id: u16,
    seq: u32,
}

impl NetlinkIpvs {
    /// Resolves the IPVS family; [`IpvsError::Missing`] when the kernel has none.
    pub fn open() -> Result<NetlinkIpvs, IpvsError> {
        let mut socket = Socket::new(NETLINK_GENERIC).map_err(IpvsError::Socket)?;
        socket.bind_auto().map_err(IpvsError::Socket)?;
        socket
            .connect(&NetlinkAddr::new(0, 0))
            .map_err(IpvsError::Socket)?;
        socket
            .send(&family_request(1), 0)
            .map_err(IpvsError::Socket)?;
        let mut family_id = None;
        let answers: Vec<GenlMessage<GenlCtrl>> = collect(&socket, "family lookup", |errno| {
            (errno == ENOENT).then_some(IpvsError::Missing)
        })?;
        for answer in answers {
            for attr in answer.payload.nlas {
                if let GenlCtrlAttrs::FamilyId(id) = attr {
                    family_id = Some(id);
                }
            }
        }
        let family_id = family_id.ok_or(IpvsError::Missing)?;
        Ok(NetlinkIpvs {
            socket,
            family_id,
            seq: 1,
        })
    }

    fn request(
        &mut self,
        message: IpvsMessage,
        dump: bool,
        what: &str,
    ) -> Result<Vec<IpvsMessage>, IpvsError> {
        self.seq += 1;
        let bytes = encode_ipvs(message, self.family_id, dump, self.seq);
        self.socket.send(&bytes, 0).map_err(IpvsError::Socket)?;
        let answers: Vec<GenlMessage<IpvsMessage>> = collect(&self.socket, what, |_| None)?;
        Ok(answers.into_iter().map(|m| m.payload).collect())
    }

    pub fn services(&mut self) -> Result<Vec<VirtualServer>, IpvsError> {
        let messages = self.request(IpvsMessage::get_services(), true, "service listing")?;
        let mut servers = Vec::new();
        for message in messages {
            if let Some(server) = message
                .virtual_server()
                .map_err(|e| IpvsError::Decode(e.to_string()))?
            {
                servers.push(server);
            }
        }
        Ok(servers)
    }

    pub fn real_servers(&mut self, key: &ServiceKey) -> Result<Vec<RealServerState>, IpvsError> {
        let what = format!("destination listing of {key}");
        let messages = self.request(IpvsMessage::get_dests(key), true, &what)?;
        (messages.iter())
            .map(|m| {
                m.real_server(key.address)
                    .map_err(|e| IpvsError::Decode(e.to_string()))
            })
            .collect()
    }

    /// Upstream sets them at start-up when any of the three is non-zero.
    pub fn configure_timeouts(
        &mut self,
        tcp: u32,
        tcp_fin: u32,
        udp: u32,
    ) -> Result<(), IpvsError> {
        self.change(IpvsMessage::set_timeouts(tcp, tcp_fin, udp), "timeouts")
    }

    /// Sends a change and waits for its acknowledgement.
    pub fn change(&mut self, message: IpvsMessage, what: &str) -> Result<(), IpvsError> {
        self.request(message, false, what).map(|_| ())
    }
}

/// Reads answers until the dump ends or the request is acknowledged.
fn collect<T>(
    socket: &Socket,
    what: &str,
    special: impl Fn(i32) -> Option<IpvsError>,
) -> Result<Vec<T>, IpvsError>
where
    T: NetlinkDeserializable + std::fmt::Debug,
{
    let mut messages = Vec::new();
    loop {
        let (datagram, _) = socket.recv_from_full().map_err(IpvsError::Socket)?;
        for answer in decode::<T>(&datagram)? {
            match answer {
                Answer::Message(m) => messages.push(m),
                Answer::Done | Answer::Ack(None) => return Ok(messages),
                Answer::Ack(Some(errno)) => {
                    return Err(special(errno).unwrap_or_else(|| IpvsError::Kernel {
                        request: what.to_string(),
                        source: io::Error::from_raw_os_error(errno),
                    }));
                }
                Answer::Other => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
