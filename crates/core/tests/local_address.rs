//! A server on a host of several addresses answers from the address it was asked at.
//!
//! A client matches what it receives by the server's address, so every packet of a server
//! RPC (GRANTs, the response, NEED_ACKs, BUSYs, RESENDs) and every answer to a packet
//! must leave from the address the request arrived at. The runtime says where each
//! datagram arrived (`handle_datagram_to`); the engine names the source in
//! `Transmit::src`.

use homa_core::{Bytes, Config, Endpoint, Event, Time};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
const SERVER_A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
const SERVER_B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 9, 0, 2));

fn endpoints() -> (Endpoint, Endpoint) {
    let config = |seed| Config {
        link_mbps: 100_000_000,
        seed,
        client_id_base: 2,
        ..Config::default()
    };
    (
        Endpoint::new(config(1)).unwrap(),
        Endpoint::new(config(2)).unwrap(),
    )
}

/// Runs an RPC of `len` bytes to each of `dests` until all complete (or for 200 ms of
/// virtual time), the server told where each datagram arrived when `say_where`, the
/// client hearing each of the server's packets from its `src` (from `SERVER_A` where it
/// has none). Returns the responses completed and every source the server named.
fn run(dests: &[IpAddr], len: usize, say_where: bool) -> (usize, BTreeSet<Option<IpAddr>>) {
    let (mut client, mut server) = endpoints();
    let cport = client.bind(0).unwrap();
    server.bind(99).unwrap();
    for (i, &ip) in dests.iter().enumerate() {
        let request = Bytes::from(vec![i as u8; len]);
        client
            .send_request(
                Time::ZERO,
                cport,
                SocketAddr::new(ip, 99),
                request,
                i as u64,
                false,
            )
            .unwrap();
    }
    let mut buf = vec![0u8; client.max_packet_len()];
    let mut sources = BTreeSet::new();
    let mut done = 0;
    let mut now = Time::ZERO;
    for _ in 0..20_000 {
        while let Some(t) = client.poll_transmit(now, &mut buf) {
            assert_eq!(t.src, None, "a client lets the network stack choose");
            let bytes = &buf[..t.len];
            if say_where {
                server.handle_datagram_to(now, CLIENT, Some(t.dest.ip()), bytes);
            } else {
                server.handle_datagram(now, CLIENT, bytes);
            }
        }
        while let Some(ev) = server.poll_event() {
            if let Event::Request {
                port,
                id,
                peer,
                data,
            } = ev
            {
                server.release(data);
                let response = Bytes::from(vec![7u8; len]);
                server.reply(now, port, peer, id, response).unwrap();
            }
        }
        while let Some(t) = server.poll_transmit(now, &mut buf) {
            sources.insert(t.src);
            client.handle_datagram(now, t.src.unwrap_or(SERVER_A), &buf[..t.len]);
        }
        while let Some(ev) = client.poll_event() {
            if let Event::Response { data, .. } = ev {
                client.release(data);
                done += 1;
            }
        }
        if done == dests.len() {
            break;
        }
        now = now.plus_nanos(10_000);
        for ep in [&mut client, &mut server] {
            if ep.poll_timeout().is_some_and(|t| t <= now) {
                ep.handle_timeout(now);
            }
        }
    }
    (done, sources)
}

#[test]
fn every_packet_of_a_server_rpc_leaves_from_the_address_it_was_asked_at() {
    // Long enough for GRANTs both ways, to both addresses.
    let (done, sources) = run(&[SERVER_A, SERVER_B, SERVER_A, SERVER_B], 300_000, true);
    assert_eq!(done, 4, "every RPC completes");
    assert_eq!(sources, BTreeSet::from([Some(SERVER_A), Some(SERVER_B)]));
}

#[test]
fn without_the_arrival_address_the_network_stack_chooses() {
    let (done, sources) = run(&[SERVER_A], 300_000, false);
    assert_eq!(done, 1);
    assert_eq!(sources, BTreeSet::from([None]));
    // ...which is why a second address needs it: its RPCs never hear their server.
    let (done, _) = run(&[SERVER_A, SERVER_B], 3_000, false);
    assert_eq!(done, 1, "a response from the wrong address was taken");
}

#[test]
fn answers_to_packets_of_no_rpc_leave_from_where_they_arrived() {
    // A RESEND for an RPC the server does not have draws RPC_UNKNOWN, from the address
    // it was sent to.
    let (mut client, mut server) = endpoints();
    let cport = client.bind(0).unwrap();
    server.bind(99).unwrap();
    client
        .send_request(
            Time::ZERO,
            cport,
            SocketAddr::new(SERVER_B, 99),
            Bytes::from_static(b"x"),
            0,
            false,
        )
        .unwrap();
    let mut buf = vec![0u8; client.max_packet_len()];
    // The request is lost; the client's timer asks again with RESENDs.
    while client.poll_transmit(Time::ZERO, &mut buf).is_some() {}
    let mut now = Time::ZERO;
    let mut answers = Vec::new();
    while answers.is_empty() && now < Time::ZERO.plus_nanos(1_000_000_000) {
        now = now.plus_nanos(1_000_000);
        if client.poll_timeout().is_some_and(|t| t <= now) {
            client.handle_timeout(now);
        }
        while let Some(t) = client.poll_transmit(now, &mut buf) {
            server.handle_datagram_to(now, CLIENT, Some(t.dest.ip()), &buf[..t.len]);
        }
        while let Some(t) = server.poll_transmit(now, &mut buf) {
            answers.push((t.packet_type, t.src));
        }
    }
    assert!(!answers.is_empty(), "no answer to the RESEND");
    assert!(
        answers.iter().all(|&(_, src)| src == Some(SERVER_B)),
        "{answers:?}"
    );
}
