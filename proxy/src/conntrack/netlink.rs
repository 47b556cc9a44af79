//! The conntrack table through ctnetlink (NETLINK_NETFILTER, subsystem
//! CTNETLINK): an IPCTNL_MSG_CT_GET dump to list a family's entries and one
//! IPCTNL_MSG_CT_DELETE per stale entry, as upstream does through
//! vishvananda/netlink. The rust-netlink crates do the socket
//! (`netlink-sys`) and the message encoding (`netlink-packet-netfilter`'s
//! conntrack messages); this module only maps entries to [`Flow`]s and back.

use std::io;
use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{
    DefaultNla, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_NETFILTER};

use super::{Conntrack, Flow, FlowTuple, Listing};
use crate::tracker::IpFamily;

/// uapi nfnetlink_conntrack.h attributes the crate leaves raw.
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Upstream's MaxAttemptsEINTR: dumps interrupted by table changes are
/// retried this many times in all, then the last partial one is used.
const DUMP_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("the kernel refused the conntrack {request}: {source}")]
    Kernel {
        request: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot decode the kernel's conntrack answer: {0}")]
    Decode(String),
    #[error("{failed} conntrack deletions failed, the first: {first}")]
    Delete {
        failed: usize,
        first: Box<NetlinkError>,
    },
}

/// The conntrack table of the network namespace this process (thread) is in
/// when a call opens its socket.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetlinkConntrack;

impl Conntrack for NetlinkConntrack {
    type Error = NetlinkError;

    fn list(&self, family: IpFamily) -> Result<Listing, NetlinkError> {
        let socket = open()?;
        let mut listing = Listing::default();
        for attempt in 1..=DUMP_ATTEMPTS {
            listing = dump(&socket, family, attempt as u32)?;
            if !listing.interrupted {
                break;
            }
        }
        Ok(listing)
    }

    fn delete(&self, family: IpFamily, flows: &[&Flow]) -> Result<usize, (usize, NetlinkError)> {
        let socket = open().map_err(|e| (0, e))?;
        let mut deleted = 0;
        let (mut failed, mut first) = (0, None);
        for (seq, flow) in flows.iter().enumerate() {
            match delete_one(&socket, family, flow, seq as u32 + 1) {
                Ok(true) => deleted += 1,
                Ok(false) => {}
                Err(e) => {
                    failed += 1;
                    first.get_or_insert(e);
                }
            }
        }
        match first {
            None => Ok(deleted),
            Some(first) => Err((
                deleted,
                NetlinkError::Delete {
                    failed,
                    first: Box::new(first),
                },
            )),
        }
    }
}

fn open() -> Result<Socket, NetlinkError> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NetlinkError::Socket)?;
    socket.bind_auto().map_err(NetlinkError::Socket)?;
    socket
        .connect(&NetlinkAddr::new(0, 0))
        .map_err(NetlinkError::Socket)?;
    Ok(socket)
}

fn proto_family(family: IpFamily) -> NetfilterProtoFamily {
    match family {
        IpFamily::V4 => NetfilterProtoFamily::IPv4,
        IpFamily::V6 => NetfilterProtoFamily::IPv6,
    }
}

fn encode(family: IpFamily, flags: u16, seq: u32, message: ConntrackMessage) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(
        header,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(proto_family(family), 0, 0),
            message,
        )),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// IPCTNL_MSG_CT_GET with NLM_F_DUMP: every entry of the family.
pub(super) fn dump_request(family: IpFamily, seq: u32) -> Vec<u8> {
    encode(
        family,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        ConntrackMessage::Get(vec![]),
    )
}

/// IPCTNL_MSG_CT_DELETE of one entry: its original tuple, zone and id (the
/// id keeps a newer entry with the same tuple alive).
pub(super) fn delete_request(family: IpFamily, flow: &Flow, seq: u32) -> Vec<u8> {
    let tuple = |t: &FlowTuple| {
        vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(t.source.ip()),
                IPTuple::DestinationAddress(t.destination.ip()),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(flow.protocol.into()),
                ProtoTuple::SourcePort(t.source.port()),
                ProtoTuple::DestinationPort(t.destination.port()),
            ]),
        ]
    };
    let mut attributes = vec![ConntrackAttribute::CtaTupleOrig(tuple(&flow.original))];
    if let Some(zone) = flow.zone {
        attributes.push(ConntrackAttribute::Other(DefaultNla::new(
            CTA_ZONE,
            zone.to_be_bytes().to_vec(),
        )));
    }
    if let Some(id) = flow.id {
        attributes.push(ConntrackAttribute::Other(DefaultNla::new(
            CTA_ID,
            id.to_be_bytes().to_vec(),
        )));
    }
    encode(
        family,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        ConntrackMessage::Delete(attributes),
    )
}

/// One message of the kernel's answer.
#[derive(Debug, PartialEq)]
pub(super) enum Answer {
    /// An entry; `None` for one without the addresses a flow needs.
    Entry(Option<Flow>),
    /// NLMSG_ERROR: an acknowledgement (`None`) or an errno.
    Ack(Option<i32>),
    /// NLMSG_DONE ends a dump.
    Done,
    Other,
    /// A message whose content the crate could not decode, and why.
    Undecodable(String),
}

/// The messages in one datagram from the kernel, with whether any says the
/// dump was interrupted (NLM_F_DUMP_INTR). A datagram that cannot be split
/// into messages is an error; one message whose content cannot be decoded is
/// only that message lost ([`Answer::Undecodable`]).
pub(super) fn decode(mut buf: &[u8]) -> Result<(Vec<Answer>, bool), NetlinkError> {
    let mut answers = Vec::new();
    let mut interrupted = false;
    while !buf.is_empty() {
        let framed =
            NetlinkBuffer::new_checked(buf).map_err(|e| NetlinkError::Decode(e.to_string()))?;
        let length = framed.length() as usize;
        // A header alone is 16 bytes.
        if length < 16 {
            return Err(NetlinkError::Decode(format!(
                "a message of length {length}"
            )));
        }
        interrupted |= framed.flags() & NLM_F_DUMP_INTR != 0;
        answers.push(
            match NetlinkMessage::<NetfilterMessage>::deserialize(&buf[..length]) {
                Ok(message) => answer_of(message.payload),
                Err(e) => Answer::Undecodable(e.to_string()),
            },
        );
        // Messages are 4-byte aligned within a datagram.
        buf = buf.get(length.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok((answers, interrupted))
}

fn answer_of(payload: NetlinkPayload<NetfilterMessage>) -> Answer {
    match payload {
        NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)),
            ..
        }) => Answer::Entry(flow_of(&attributes)),
        NetlinkPayload::Error(e) => Answer::Ack(e.code.map(|c| -c.get())),
        NetlinkPayload::Done(_) => Answer::Done,
        _ => Answer::Other,
    }
}

/// A dumped entry's tuples, zone and id.
pub(super) fn flow_of(attributes: &[ConntrackAttribute]) -> Option<Flow> {
    let mut original = None;
    let mut reply = None;
    let (mut id, mut zone) = (None, None);
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(t) => original = tuple_of(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = tuple_of(t),
            ConntrackAttribute::Other(nla) => {
                let mut value = vec![0; nla.value_len()];
                nla.emit_value(&mut value);
                match nla.kind() & NLA_TYPE_MASK {
                    CTA_ID => id = value.try_into().ok().map(u32::from_be_bytes),
                    CTA_ZONE => zone = value.try_into().ok().map(u16::from_be_bytes),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let (protocol, original) = original?;
    let (_, reply) = reply?;
    Some(Flow {
        protocol,
        original,
        reply,
        id,
        zone,
    })
}

fn tuple_of(tuple: &[Tuple]) -> Option<(u8, FlowTuple)> {
    let (mut source, mut destination): (Option<IpAddr>, Option<IpAddr>) = (None, None);
    let (mut protocol, mut source_port, mut destination_port) = (None, 0, 0);
    for part in tuple {
        match part {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => source = Some(*a),
                        IPTuple::DestinationAddress(a) => destination = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(fields) => {
                for field in fields {
                    match field {
                        ProtoTuple::Protocol(p) => protocol = Some(u8::from(*p)),
                        ProtoTuple::SourcePort(p) => source_port = *p,
                        ProtoTuple::DestinationPort(p) => destination_port = *p,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((
        protocol?,
        FlowTuple {
            source: SocketAddr::new(source?, source_port),
            destination: SocketAddr::new(destination?, destination_port),
        },
    ))
}

fn receive(socket: &Socket) -> Result<(Vec<Answer>, bool), NetlinkError> {
    let (datagram, _) = socket.recv_from_full().map_err(NetlinkError::Socket)?;
    decode(&datagram)
}

fn dump(socket: &Socket, family: IpFamily, seq: u32) -> Result<Listing, NetlinkError> {
    socket
        .send(&dump_request(family, seq), 0)
        .map_err(NetlinkError::Socket)?;
    let mut listing = Listing::default();
    loop {
        let (answers, interrupted) = receive(socket)?;
        listing.interrupted |= interrupted;
        for answer in answers {
            match answer {
                Answer::Entry(Some(flow)) => listing.flows.push(flow),
                Answer::Undecodable(error) => {
                    tracing::warn!(%error, "skipping a conntrack entry that cannot be decoded");
                }
                Answer::Entry(None) | Answer::Other | Answer::Ack(None) => {}
                Answer::Ack(Some(errno)) => {
                    return Err(NetlinkError::Kernel {
                        request: "dump",
                        source: io::Error::from_raw_os_error(errno),
                    });
                }
                Answer::Done => return Ok(listing),
            }
        }
    }
}

/// Whether the entry was deleted (false: it was already gone).
fn delete_one(
    socket: &Socket,
    family: IpFamily,
    flow: &Flow,
    seq: u32,
) -> Result<bool, NetlinkError> {
    socket
        .send(&delete_request(family, flow, seq), 0)
        .map_err(NetlinkError::Socket)?;
    loop {
        for answer in receive(socket)?.0 {
            match answer {
                Answer::Ack(None) => return Ok(true),
                Answer::Ack(Some(errno))
                    if io::Error::from_raw_os_error(errno).kind() == io::ErrorKind::NotFound =>
                {
                    return Ok(false);
                }
                Answer::Ack(Some(errno)) => {
                    return Err(NetlinkError::Kernel {
                        request: "delete",
                        source: io::Error::from_raw_os_error(errno),
                    });
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
