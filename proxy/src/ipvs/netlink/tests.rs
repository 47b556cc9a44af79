//! The IPVS messages against bytes laid out by hand from uapi linux/ip_vs.h
//! and linux/netlink.h: nlmsghdr (len u32, type u16, flags u16, seq u32,
//! pid u32), genlmsghdr (cmd u8, version u8, reserved u16), then
//! attributes (len u16, type u16, value, padded to 4).

use super::*;
use crate::tracker::Protocol;

/// One attribute, padded.
fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    while out.len() % 4 != 0 {
        out.push(0);
    }
    out
}

fn nest(kind: u16, children: &[Vec<u8>]) -> Vec<u8> {
    attr(kind, &children.concat())
}

fn message(family: u16, flags: u16, seq: u32, cmd: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
    let body = [vec![cmd, 1, 0, 0], attrs.concat()].concat();
    let mut out = Vec::new();
    out.extend_from_slice(&(16 + body.len() as u32).to_ne_bytes());
    out.extend_from_slice(&family.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&body);
    out
}

const FAMILY: u16 = 0x1a;
// NLM_F_REQUEST | NLM_F_ACK, NLM_F_REQUEST | NLM_F_DUMP
const ACKED: u16 = 0x1 | 0x4;
const DUMP: u16 = 0x1 | 0x300;

fn key() -> ServiceKey {
    ServiceKey {
        address: "10.0.0.1".parse().unwrap(),
        port: 80,
        protocol: Protocol::Tcp,
    }
}

/// IPVS_SVC_ATTR_AF, _PROTOCOL, _ADDR, _PORT for 10.0.0.1:80/TCP.
fn service_id_bytes() -> Vec<Vec<u8>> {
    vec![
        attr(1, &2u16.to_ne_bytes()),
        attr(2, &6u16.to_ne_bytes()),
        attr(3, &[10, 0, 0, 1]),
        attr(4, &[0, 80]),
    ]
}

#[test]
fn new_service_carries_the_whole_service() {
    let server = VirtualServer {
        key: key(),
        scheduler: "rr".into(),
        flags: 1,
        timeout: 10800,
    };
    let mut service = service_id_bytes();
    service.push(attr(6, b"rr\0"));
    service.push(attr(
        7,
        &[1u32.to_ne_bytes(), u32::MAX.to_ne_bytes()].concat(),
    ));
    service.push(attr(8, &10800u32.to_ne_bytes()));
    service.push(attr(9, &u32::MAX.to_ne_bytes()));
    let expected = message(FAMILY, ACKED, 7, 1, &[nest(1, &service)]);
    assert_eq!(
        encode_ipvs(IpvsMessage::new_service(&server), FAMILY, false, 7),
        expected
    );
    assert_eq!(expected.len(), 16 + 4 + 4 + 7 * 8 + 12);
    let set = encode_ipvs(IpvsMessage::set_service(&server), FAMILY, false, 7);
    assert_eq!(set[16], 2, "IPVS_CMD_SET_SERVICE");
    assert_eq!(set[17..], expected[17..]);
}

#[test]
fn ipv6_services_send_16_bytes_and_a_128_bit_netmask() {
    let server = VirtualServer {
        key: ServiceKey {
            address: "fd00::1".parse().unwrap(),
            port: 443,
            protocol: Protocol::Sctp,
        },
        scheduler: "mh".into(),
        flags: 0x10,
        timeout: 0,
    };
    let mut addr = [0u8; 16];
    addr[0] = 0xfd;
    addr[15] = 1;
    let service = vec![
        attr(1, &10u16.to_ne_bytes()),
        attr(2, &132u16.to_ne_bytes()),
        attr(3, &addr),
        attr(4, &443u16.to_be_bytes()),
        attr(6, b"mh\0"),
        attr(7, &[0x10u32.to_ne_bytes(), u32::MAX.to_ne_bytes()].concat()),
        attr(8, &0u32.to_ne_bytes()),
        attr(9, &128u32.to_ne_bytes()),
    ];
    assert_eq!(
        encode_ipvs(IpvsMessage::new_service(&server), FAMILY, false, 1),
        message(FAMILY, ACKED, 1, 1, &[nest(1, &service)])
    );
}

#[test]
fn deletions_and_dumps_name_the_service_only() {
    assert_eq!(
        encode_ipvs(IpvsMessage::del_service(&key()), FAMILY, false, 2),
        message(FAMILY, ACKED, 2, 3, &[nest(1, &service_id_bytes())])
    );
    assert_eq!(
        encode_ipvs(IpvsMessage::get_services(), FAMILY, true, 3),
        message(FAMILY, DUMP, 3, 4, &[nest(1, &[])])
    );
    assert_eq!(
        encode_ipvs(IpvsMessage::get_dests(&key()), FAMILY, true, 4),
        message(FAMILY, DUMP, 4, 8, &[nest(1, &service_id_bytes())])
    );
}

#[test]
fn destinations_are_masqueraded_with_their_weight() {
    let rs = RealServer {
        address: "10.180.0.1:8080".parse().unwrap(),
        weight: 1,
    };
    let dest = vec![
        attr(1, &[10, 180, 0, 1]),
        attr(2, &8080u16.to_be_bytes()),
        attr(3, &0u32.to_ne_bytes()),
        attr(4, &1u32.to_ne_bytes()),
        attr(5, &0u32.to_ne_bytes()),
        attr(6, &0u32.to_ne_bytes()),
    ];
    let service = nest(1, &service_id_bytes());
    assert_eq!(
        encode_ipvs(IpvsMessage::new_dest(&key(), &rs), FAMILY, false, 5),
        message(FAMILY, ACKED, 5, 5, &[service.clone(), nest(2, &dest)])
    );
    let drained = RealServer { weight: 0, ..rs };
    let mut dest0 = dest.clone();
    dest0[3] = attr(4, &0u32.to_ne_bytes());
    assert_eq!(
        encode_ipvs(IpvsMessage::set_dest(&key(), &drained), FAMILY, false, 6),
        message(FAMILY, ACKED, 6, 6, &[service.clone(), nest(2, &dest0)])
    );
    assert_eq!(
        encode_ipvs(IpvsMessage::del_dest(&key(), rs.address), FAMILY, false, 7),
        message(FAMILY, ACKED, 7, 7, &[service, nest(2, &dest[..2])])
    );
}

/// A GET_SERVICE dump answer as the kernel lays it out (ip_vs_genl_fill_service):
/// the address in 16 bytes, HASHED among the flags, stats nested.
#[test]
fn services_decode_from_the_kernels_dump() {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[10, 0, 0, 1]);
    let service = vec![
        attr(1, &2u16.to_ne_bytes()),
        attr(2, &6u16.to_ne_bytes()),
        attr(3, &addr),
        attr(4, &[0, 80]),
        attr(6, b"wrr\0"),
        attr(7, &[0x3u32.to_ne_bytes(), u32::MAX.to_ne_bytes()].concat()),
        attr(8, &300u32.to_ne_bytes()),
        attr(9, &u32::MAX.to_ne_bytes()),
        nest(10, &[attr(1, &5u32.to_ne_bytes())]),
    ];
    let mut bytes = message(FAMILY, 0x2, 3, 4, &[nest(1, &service)]);
    bytes.extend(message(FAMILY, 0x2, 3, 4, &[nest(1, &service)]));
    let done = {
        let mut d = Vec::new();
        d.extend_from_slice(&20u32.to_ne_bytes());
        d.extend_from_slice(&3u16.to_ne_bytes()); // NLMSG_DONE
        d.extend_from_slice(&0x2u16.to_ne_bytes());
        d.extend_from_slice(&3u32.to_ne_bytes());
        d.extend_from_slice(&0u32.to_ne_bytes());
        d.extend_from_slice(&0i32.to_ne_bytes());
        d
    };
    bytes.extend(done);
    let answers = decode::<GenlMessage<IpvsMessage>>(&bytes).unwrap();
    assert_eq!(answers.len(), 3);
    let Answer::Message(first) = &answers[0] else {
        panic!("{answers:?}")
    };
    assert_eq!(
        first.payload.virtual_server().unwrap(),
        Some(VirtualServer {
            key: key(),
            scheduler: "wrr".into(),
            flags: 1,
            timeout: 300,
        }),
        "HASHED masked off"
    );
    assert!(matches!(answers[2], Answer::Done));

    let fwmark = [attr(1, &2u16.to_ne_bytes()), attr(5, &7u32.to_ne_bytes())];
    let msg = IpvsMessage {
        command: Command::NewService,
        attrs: vec![Attr::new(1, fwmark.concat())],
    };
    assert_eq!(msg.virtual_server().unwrap(), None, "firewall-mark service");
}

#[test]
fn destinations_decode_with_their_connection_counts() {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[10, 180, 0, 1]);
    let dest = vec![
        attr(1, &addr),
        attr(2, &8080u16.to_be_bytes()),
        attr(3, &0u32.to_ne_bytes()),
        attr(4, &0u32.to_ne_bytes()),
        attr(5, &0u32.to_ne_bytes()),
        attr(6, &0u32.to_ne_bytes()),
        attr(7, &3u32.to_ne_bytes()),
        attr(8, &9u32.to_ne_bytes()),
        attr(9, &0u32.to_ne_bytes()),
        nest(10, &[]),
        attr(11, &2u16.to_ne_bytes()),
    ];
    let bytes = message(FAMILY, 0x2, 4, 8, &[nest(2, &dest)]);
    let answers = decode::<GenlMessage<IpvsMessage>>(&bytes).unwrap();
    let Answer::Message(m) = &answers[0] else {
        panic!("{answers:?}")
    };
    assert_eq!(
        m.payload.real_server(key().address).unwrap(),
        RealServerState {
            address: "10.180.0.1:8080".parse().unwrap(),
            weight: 0,
            active_connections: 3,
            inactive_connections: 9,
        }
    );
}

#[test]
fn errors_and_truncation_are_reported() {
    // NLMSG_ERROR with -ENOENT, then the request's header.
    let mut err = Vec::new();
    err.extend_from_slice(&36u32.to_ne_bytes());
    err.extend_from_slice(&2u16.to_ne_bytes());
    err.extend_from_slice(&0u16.to_ne_bytes());
    err.extend_from_slice(&1u32.to_ne_bytes());
    err.extend_from_slice(&0u32.to_ne_bytes());
    err.extend_from_slice(&(-2i32).to_ne_bytes());
    err.extend_from_slice(&[0u8; 16]);
    let answers = decode::<GenlMessage<IpvsMessage>>(&err).unwrap();
    assert!(matches!(answers[..], [Answer::Ack(Some(2))]), "{answers:?}");

    let good = encode_ipvs(IpvsMessage::get_services(), FAMILY, true, 1);
    assert!(decode::<GenlMessage<IpvsMessage>>(&good[..10]).is_err());
    let msg = IpvsMessage {
        command: Command::NewDest,
        attrs: vec![Attr::new(2, attr(2, &[0, 80]))],
    };
    assert!(msg.real_server(key().address).is_err(), "no address");
}

#[test]
fn the_family_lookup_names_ipvs() {
    // nlctrl (id 0x10) CTRL_CMD_GETFAMILY (3), version 2 as the crate
    // sends it, CTRL_ATTR_FAMILY_NAME (2) "IPVS".
    let mut expected = message(0x10, ACKED, 1, 3, &[attr(2, b"IPVS\0")]);
    expected[17] = 2;
    assert_eq!(family_request(1), expected);
}

#[test]
fn timeouts_are_top_level_seconds() {
    let expected = message(
        FAMILY,
        ACKED,
        9,
        12,
        &[
            attr(4, &900u32.to_ne_bytes()),
            attr(5, &0u32.to_ne_bytes()),
            attr(6, &300u32.to_ne_bytes()),
        ],
    );
    assert_eq!(
        encode_ipvs(IpvsMessage::set_timeouts(900, 0, 300), FAMILY, false, 9),
        expected
    );
}

/// Read-only: asks nlctrl for the family. On a kernel without IPVS the
/// answer must be the error that says so.
#[test]
fn opening_agrees_with_proc_net_ip_vs() {
    let present = std::path::Path::new("/proc/net/ip_vs").exists();
    match NetlinkIpvs::open() {
        Ok(_) => assert!(present, "IPVS family found without /proc/net/ip_vs"),
        Err(IpvsError::Missing) => assert!(!present, "/proc/net/ip_vs without the IPVS family"),
        Err(other) => panic!("{other}"),
    }
}
