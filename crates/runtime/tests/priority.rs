//! Every packet carries its Homa priority in the IP TOS / IPv6 traffic class.

mod common;

use common::*;
use homa::Socket;
use socket2::{Domain, MaybeUninitSlice, MsgHdrMut, Protocol, Type};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::time::Duration;

/// How long to wait for each packet: generous (a busy machine), but a regression that
/// sends nothing fails the test instead of hanging it.
const PACKET_DEADLINE: Duration = Duration::from_secs(30);

/// Receive one datagram on a plain socket asked to report the TOS / traffic class.
fn recv_with_tos(sock: &socket2::Socket) -> (usize, u8) {
    let mut data = [MaybeUninit::<u8>::uninit(); 2048];
    let mut ctrl = [MaybeUninit::<u8>::uninit(); 128];
    let mut bufs = [MaybeUninitSlice::new(&mut data)];
    let mut msg = MsgHdrMut::new()
        .with_buffers(&mut bufs)
        .with_control(&mut ctrl);
    let n = sock
        .recvmsg(&mut msg, 0)
        .unwrap_or_else(|e| panic!("no packet within {PACKET_DEADLINE:?}: {e}"));
    let clen = msg.control_len();
    // SAFETY: the kernel initialised the first `clen` control bytes.
    let c: Vec<u8> = ctrl[..clen]
        .iter()
        .map(|b| unsafe { b.assume_init() })
        .collect();
    // Walk the cmsgs: {len: usize, level: i32, type: i32, data...}, 8-byte aligned.
    let mut at = 0;
    while at + 16 <= c.len() {
        let len = usize::from_ne_bytes(c[at..at + 8].try_into().unwrap());
        let level = i32::from_ne_bytes(c[at + 8..at + 12].try_into().unwrap());
        let ty = i32::from_ne_bytes(c[at + 12..at + 16].try_into().unwrap());
        let is_tos = (level == libc::IPPROTO_IP && ty == libc::IP_TOS)
            || (level == libc::IPPROTO_IPV6 && ty == libc::IPV6_TCLASS);
        if is_tos {
            return (n, c[at + 16]);
        }
        at += (len + 7) & !7;
    }
    panic!("no TOS control message");
}

fn check(bind: &str) {
    let a: SocketAddr = bind.parse().unwrap();
    let fake =
        socket2::Socket::new(Domain::for_address(a), Type::DGRAM, Some(Protocol::UDP)).unwrap();
    if a.is_ipv6() {
        fake.set_only_v6(true).unwrap();
        fake.set_recv_tclass_v6(true).unwrap();
    } else {
        fake.set_recv_tos_v4(true).unwrap();
    }
    fake.bind(&a.into()).unwrap();
    fake.set_read_timeout(Some(PACKET_DEADLINE)).unwrap();
    let dest = fake.local_addr().unwrap().as_socket().unwrap();
    let client = Socket::bind(addr(bind)).unwrap();
    // A 100-byte request: unscheduled DATA at the default priority 6 (no CUTOFFS yet).
    client.send_request(dest, vec![1u8; 100], 0).unwrap();
    let (n, tos) = recv_with_tos(&fake);
    assert_eq!(n, 56 + 100);
    assert_eq!(tos, 6 << 5, "DATA priority 6 in the TOS byte");
    // Then silence: the client's RESEND, a control packet, goes at priority 7.
    let (n, tos) = recv_with_tos(&fake);
    assert_eq!(n, 37, "a RESEND");
    assert_eq!(tos, 7 << 5);
}

#[test]
fn priorities_travel_in_tos_and_traffic_class() {
    check("127.0.0.1:0");
    check("[::1]:0");
}
