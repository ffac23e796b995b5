//! A server's NEED_ACK must not follow the last DATA packet of its response by less than
//! `request_ack_ticks - 1` ticks on the wire (issue 39, item 3). The engine waits
//! `request_ack_ticks` from the time the runtime says the last DATA packet left; if that
//! time is older than the real send, the NEED_ACK comes early.
//!
//! Over loopback, a scripted client (a plain UDP socket) asks for a 24 MB response and
//! grants all of it at once. The server sends the response in one `flush`, batch after
//! batch. The client reads each packet's kernel receive timestamp (`SO_TIMESTAMPNS`):
//! loopback delivers within the sender's system call, so that is when the packet left,
//! however late the client thread itself gets to read it.
//!
//! Two causes, both fixed: every batch of a flush was gathered with the `now` taken
//! before the first was sent (the last batches stamped 4-5 ms early, the NEED_ACK 1-54 us
//! after the last DATA); and a packet counted as sent when it was gathered, not when the
//! send that carried it returned (a thread preempted in between, or a socket buffer
//! that was full, made the same error). The runtime now reports when what it gathered
//! had left (`Endpoint::transmitted`), and the wait counts from then. The bound is a
//! lower one: a busy machine can only make the gap longer.

mod common;

use common::*;
use homa::{Config, Options, Socket, Transport};
use homa_wire::{Body, Common, Data, Grant, PacketType, Repr};
use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage,
};
use std::io::IoSliceMut;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::Duration;

const RESPONSE: usize = 24 << 20;
const ID: u64 = 1_000;

fn send(sock: &UdpSocket, to: std::net::SocketAddr, common: Common, body: Body, payload: &[u8]) {
    let mut buf = vec![0u8; 2_048];
    let len = Repr { common, body }.emit(payload, &mut buf).unwrap();
    sock.send_to(&buf[..len], to).unwrap();
}

/// One datagram from `sock` into `buf`: its length and when the kernel queued it
/// (nanoseconds, CLOCK_REALTIME).
fn recv_stamped(sock: &UdpSocket, buf: &mut [u8]) -> (usize, u64) {
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .expect("the response and a NEED_ACK");
    let stamp = msg
        .cmsgs()
        .expect("control messages")
        .find_map(|c| match c {
            ControlMessageOwned::ScmTimestampns(t) => {
                Some(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
            }
            _ => None,
        });
    (msg.bytes, stamp.expect("a receive timestamp"))
}

#[test]
fn no_need_ack_sooner_than_request_ack_ticks_minus_one_after_the_last_data() {
    // A pacer allowance long enough that the whole response leaves in one `flush`
    // (loopback has no NIC queue to keep short): as on a rate-limited link where each
    // send waits, the batches after the first are stamped with a time long past.
    let config = Config {
        max_message_length: 1 << 26,
        max_nic_est_backlog_usecs: 50_000,
        ..Options::default().config
    };
    let server = Socket::bind_with(
        addr(V4),
        Options {
            config,
            ..server_opts(Transport::Udp)
        },
    )
    .unwrap();
    let tick = server.config().tick_nanos;
    let ack_ticks = server.config().request_ack_ticks as u64;
    let s = server.clone();
    std::thread::spawn(move || {
        if let Ok(req) = s.recv() {
            let _ = s.reply(&req, vec![5u8; RESPONSE]);
        }
    });

    let client = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    let _ = client.set_recv_buffer_size(64 << 20);
    client
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    let client: UdpSocket = client.into();
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    setsockopt(&client, sockopt::ReceiveTimestampns, &true).expect("SO_TIMESTAMPNS");
    let to = server.local_addr();
    let mine = client.local_addr().unwrap().port();
    let c = Common {
        sport: mine,
        dport: to.port(),
        sender_id: ID,
    };
    let request = Data {
        message_length: 4,
        incoming: 4,
        ack: None,
        cutoff_version: 1,
        retransmit: false,
        offset: 0,
    };
    send(&client, to, c, Body::Data(request), b"size");

    let mut buf = vec![0u8; 70_000];
    let (mut granted, mut last_data, mut bytes) = (false, None, 0usize);

    let need_ack_at = loop {
        let (n, at) = recv_stamped(&client, &mut buf);
        // (GRO is off: one Homa packet per datagram.)
        let Ok((p, payload)) = Repr::parse(&buf[..n], 1 << 26) else {
            continue;
        };
        match (p.packet_type(), p.body) {
            (PacketType::Data, Body::Data(_)) => {
                bytes += payload.len();
                last_data = Some(at);
                if !granted {
                    granted = true;
                    let g = Grant {
                        offset: RESPONSE as u32,
                        priority: 0,
                    };
                    send(&client, to, c, Body::Grant(g), &[]);
                }
            }
            (PacketType::NeedAck, _) => break at,
            _ => {}
        }
    };
    let last = last_data.expect("response data");
    let gap = Duration::from_nanos(need_ack_at.saturating_sub(last));
    println!(
        "{bytes} of {RESPONSE} response bytes seen; NEED_ACK {:.3} ms after the last DATA",
        gap.as_secs_f64() * 1e3
    );
    assert!(
        gap >= Duration::from_nanos((ack_ticks - 1) * tick),
        "NEED_ACK {gap:?} after the last DATA packet (request_ack_ticks {ack_ticks})"
    );
    server.shutdown();
}
