//! Responses forged by someone off the path change nothing: over real loopback sockets, a
//! scripted "server" (a plain UDP socket) answers a Homa client's request first with
//! packets that have the right ports but a wrong id, or the right id from the wrong
//! address, then with the real response. The client must deliver the real response,
//! byte for byte, and must not have restarted its request.

mod common;

use common::*;
use homa::{DropReason, Socket};
use homa_wire::{Body, Repr};
use std::net::{SocketAddr, UdpSocket};

#[test]
fn a_response_with_a_wrong_id_or_from_the_wrong_address_changes_nothing() {
    let fake = UdpSocket::bind("127.0.0.1:0").unwrap();
    fake.set_read_timeout(Some(OUTCOME_DEADLINE)).unwrap();
    let server = fake.local_addr().unwrap();
    let client = Socket::bind(addr(V4)).unwrap();
    let id = client.send_request(server, b"ping".to_vec(), 7).unwrap();
    // The request arrives; the scripted server learns the client's port and the id.
    let mut buf = [0u8; 2_048];
    let (n, from) = fake.recv_from(&mut buf).expect("the request");
    let (req, _) = Repr::parse(&buf[..n], 1 << 20).unwrap();
    assert_eq!((req.common.sender_id, from), (id.0, client.local_addr()));
    let (sport, dport) = (server.port(), from.port());

    // Right address and ports, wrong id: a response and an RPC_UNKNOWN (which, taken,
    // would make the client send its request again).
    for wrong in [id.0 + 2, id.0 ^ (1 << 40), id.0.wrapping_sub(2)] {
        fake.send_to(&packet(sport, dport, wrong | 1, Some(b"forged")), from)
            .unwrap();
        fake.send_to(&packet(sport, dport, wrong | 1, None), from)
            .unwrap();
    }
    // Right ports and id, wrong address (another loopback address, same port).
    match UdpSocket::bind(SocketAddr::new("127.0.0.2".parse().unwrap(), sport)) {
        Ok(other) => {
            other
                .send_to(&packet(sport, dport, id.0 | 1, Some(b"forged")), from)
                .unwrap();
            other
                .send_to(&packet(sport, dport, id.0 | 1, None), from)
                .unwrap();
        }
        Err(e) => println!("skipping the wrong-address half: cannot bind 127.0.0.2: {e}"),
    }
    // The real response, after them (loopback keeps the order).
    fake.send_to(&packet(sport, dport, id.0 | 1, Some(b"pong")), from)
        .unwrap();

    let got = client
        .recv_id_timeout(id, OUTCOME_DEADLINE)
        .expect("the real response");
    assert_eq!(got.to_vec(), b"pong");
    let m = client.metrics();
    assert_eq!(m.restarts, 0, "a forged RPC_UNKNOWN restarted the request");
    // The wrong-id packets reached the engine and were dropped as about no RPC of ours
    // (the wrong-address ones may not even reach it: a client socket that talks to one
    // peer is connected to it, and the kernel drops the rest).
    assert!(m.dropped(DropReason::UnknownRpc) >= 3, "{m:?}");
    // Nothing else was sent to the server: no restarted request.
    fake.set_nonblocking(true).unwrap();
    while let Ok((n, _)) = fake.recv_from(&mut buf) {
        let (p, _) = Repr::parse(&buf[..n], 1 << 20).unwrap();
        assert!(
            !matches!(p.body, Body::Data(_)),
            "request data sent again: {p:?}"
        );
    }
}
