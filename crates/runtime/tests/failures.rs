//! Failure paths over loopback: abort, shutdown, dead servers, pool exhaustion,
//! malformed packets, misuse.

mod common;

use common::*;
use homa::{
    AbortError, BindError, Config, DropReason, Options, RecvError, ReplyError, RpcError, SendError,
    Socket, Transport,
};
use std::net::UdpSocket;
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[test]
fn abort_fails_the_rpc_for_its_waiter() {
    let server = Socket::bind_with(addr(V4), server_opts(Transport::Udp)).unwrap();
    let client = Socket::bind(addr(V4)).unwrap();
    // The server holds the request and never answers.
    let id = client
        .send_request(server.local_addr(), b"wait".to_vec(), 77)
        .unwrap();
    let _held = server.recv().unwrap();
    let (tx, rx) = mpsc::channel();
    let c = client.clone();
    std::thread::spawn(move || tx.send(c.recv_id(id)).unwrap());
    // Abort from this thread while the other waits for the response.
    assert!(wait_until(OUTCOME_DEADLINE, || client.info().waiters == 1));
    client.abort(id).unwrap();
    match rx.recv_timeout(OUTCOME_DEADLINE).expect("waiter woke") {
        Err(RecvError::Rpc {
            id: got,
            cookie: 77,
            error: RpcError::Aborted,
            ..
        }) => assert_eq!(got, id),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(client.abort(id), Err(AbortError::UnknownRpc(_))));
    // abort_all: every outstanding RPC fails, reported through recv.
    for i in 0..3 {
        client
            .send_request(server.local_addr(), b"x".to_vec(), i)
            .unwrap();
    }
    assert_eq!(client.abort_all().unwrap(), 3);
    let mut cookies: Vec<u64> = (0..3)
        .map(|_| match client.recv() {
            Err(RecvError::Rpc {
                cookie,
                error: RpcError::Aborted,
                ..
            }) => cookie,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    cookies.sort_unstable();
    assert_eq!(cookies, [0, 1, 2]);
}

#[test]
fn shutdown_wakes_blocked_receivers() {
    let server = Socket::bind_with(addr(V4), server_opts(Transport::Udp)).unwrap();
    let client = Socket::bind(addr(V4)).unwrap();
    let id = client
        .send_request(server.local_addr(), b"never answered".to_vec(), 0)
        .unwrap();
    let (tx, rx) = mpsc::channel();
    for want_id in [false, true, false] {
        let (c, tx) = (client.clone(), tx.clone());
        std::thread::spawn(move || {
            let r = if want_id { c.recv_id(id) } else { c.recv() };
            tx.send(r.map(|m| m.len())).unwrap();
        });
    }
    assert!(wait_until(OUTCOME_DEADLINE, || client.info().waiters == 3));
    client.shutdown();
    // Every waiter wakes with `Shutdown`; a generous deadline tells a hang from a slow
    // machine.
    for _ in 0..3 {
        let r = rx
            .recv_timeout(OUTCOME_DEADLINE)
            .expect("blocked caller did not wake");
        assert!(matches!(r, Err(RecvError::Shutdown)), "{r:?}");
    }
    // Later calls fail at once.
    assert!(matches!(client.recv(), Err(RecvError::Shutdown)));
    assert!(matches!(
        client.send_request(server.local_addr(), b"x".to_vec(), 0),
        Err(SendError::Shutdown)
    ));
    assert!(client.info().shutdown);
}

/// A timeout longer than the clock can count (2^64 nanoseconds is 584 years) waits as if
/// there were none: it used to wrap around to a fraction of a second.
#[test]
fn a_huge_timeout_does_not_wrap_around() {
    let server = Socket::bind_with(addr(V4), server_opts(Transport::Udp)).unwrap();
    let client = Socket::bind(addr(V4)).unwrap();
    let dest = server.local_addr();
    // 2^64 ns + 0.29 s: wrapped, it timed out after 0.29 s. The request comes after 1 s.
    let huge = Duration::from_secs(18_446_744_074);
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        client.send_request(dest, b"late".to_vec(), 0).unwrap();
        client
    });
    let m = server
        .recv_timeout(huge)
        .expect("the request, however late");
    assert_eq!(m.to_vec(), b"late");
    let m2 = server
        .recv_request_timeout(Duration::from_millis(1))
        .map(|m| m.len());
    assert!(matches!(m2, Err(RecvError::TimedOut)), "{m2:?}");
    drop(sender.join().unwrap());
}
#[test]
fn server_dropped_mid_rpc_fails_the_client() {
    let server = Socket::bind_with(addr(V4), server_opts(Transport::Udp)).unwrap();
    let dest = server.local_addr();
    let client = Socket::bind(addr(V4)).unwrap();
    // A 200 KB request: the server gets part of it, then goes away.
    let id = client.send_request(dest, pattern(200_000, 1), 5).unwrap();
    assert!(wait_until(OUTCOME_DEADLINE, || server.info().server_rpcs == 1));
    drop(server);
    let (tx, rx) = mpsc::channel();
    let c = client.clone();
    std::thread::spawn(move || tx.send(c.recv_id(id).map(|m| m.len())).unwrap());
    // How soon depends on the CPU the engine gets; only a hang is a failure.
    let r = rx
        .recv_timeout(OUTCOME_DEADLINE)
        .expect("no outcome: the RPC outlived its server");
    // ICMP port-unreachable usually reports the closed port before the timeout does.
    match r {
        Err(RecvError::Rpc {
            error: RpcError::Timeout | RpcError::NoSuchSocket,
            cookie: 5,
            ..
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn call_timeout_gives_up_cleanly_and_answers_in_time() {
    // A socket that takes the packets and never answers.
    let hole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = hole.local_addr().unwrap();
    let client = Socket::bind(addr(V4)).unwrap();
    let r = client.call_timeout(to, b"anyone?".to_vec(), Duration::from_millis(20));
    assert!(
        matches!(r, Err(homa::CallError::Recv(RecvError::TimedOut))),
        "{r:?}"
    );
    // Given up: nothing left in the engine, and no outcome for it reaches `recv`, not
    // even once the engine would have timed the RPC out itself.
    assert_eq!(client.info().client_rpcs, 0);
    let cfg = client.config();
    let engine_timeout = Duration::from_nanos(cfg.timeout_ticks as u64 * cfg.tick_nanos);
    let late = client.recv_timeout(engine_timeout * 2);
    assert!(matches!(late, Err(RecvError::TimedOut)), "{late:?}");
    assert_eq!(client.metrics().timeouts, 0);

    // The wait for buffer room counts too: one request holds the whole budget...
    let small = Socket::bind_with(addr(V4), small_patient_budget(50_000)).unwrap();
    let held = small.send_request(to, pattern(50_000, 1), 0).unwrap();
    let r = small.call_timeout(to, pattern(30_000, 2), Duration::from_millis(20));
    assert!(
        matches!(r, Err(homa::CallError::Recv(RecvError::TimedOut))),
        "{r:?}"
    );
    // ...and the caller that gave up left the queue: room given back goes to the next
    // caller waiting for it, not to the one that left (which would keep it for ever).
    let (s, to2) = (small.clone(), to);
    std::thread::spawn(move || s.call(to2, pattern(30_000, 3)));
    // (Lets the call start waiting first, as a rule; if it comes later it finds the room
    // free and starts at once, and the outcome checked is the same.)
    std::thread::sleep(Duration::from_millis(50));
    small.abort(held).unwrap();
    assert!(
        wait_until(OUTCOME_DEADLINE, || small.info().client_rpcs == 1),
        "the waiting call never started"
    );

    // A zero limit sends nothing (no server runs a request no one waits for).
    let sent = |s: &Socket| s.metrics().packets_sent.iter().sum::<u64>();
    let before = sent(&client);
    let r = client.call_timeout(to, b"now or never".to_vec(), Duration::ZERO);
    assert!(
        matches!(r, Err(homa::CallError::Recv(RecvError::TimedOut))),
        "{r:?}"
    );
    assert_eq!(
        sent(&client),
        before,
        "a call with no time left sent a packet"
    );

    // A server that answers within the limit: the response, as from `call`.
    let server = echo_server(V4, Transport::Udp, 1);
    let got = client
        .call_timeout(server.local_addr(), pattern(3_000, 4), OUTCOME_DEADLINE)
        .unwrap();
    assert_eq!(got.to_vec(), answer(&pattern(3_000, 4)));
}

#[test]
fn a_recv_id_racing_a_call_timeout_for_the_same_rpc_ends() {
    // Another thread waits by id for an RPC whose `call_timeout` gives it up: the gap
    // between the timed-out wait and the give-up is narrow, so try it many times. Once
    // given up, the other waiter must hear of it, not wait for ever.
    let hole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = hole.local_addr().unwrap();
    let client = Socket::bind(addr(V4)).unwrap();
    for _ in 0..30 {
        let c = client.clone();
        let caller =
            std::thread::spawn(move || c.call_timeout(to, b"x".to_vec(), Duration::from_millis(3)));
        let id = loop {
            if let Some(r) = client.info().rpcs.first() {
                break Some(r.id);
            }
            if caller.is_finished() {
                break None;
            }
        };
        if let Some(id) = id {
            let (tx, rx) = mpsc::channel();
            let c = client.clone();
            std::thread::spawn(move || loop {
                match c.recv_id(id) {
                    Err(RecvError::AlreadyWaiting(_)) => continue, // the caller still waits
                    other => {
                        let _ = tx.send(other.map(|m| m.len()));
                        return;
                    }
                }
            });
            let r = rx
                .recv_timeout(OUTCOME_DEADLINE)
                .expect("recv_id waited for ever for an RPC its caller gave up");
            assert!(r.is_err(), "an answer from a silent socket: {r:?}");
        }
        assert!(caller.join().unwrap().is_err());
    }
    assert_eq!(client.info().client_rpcs, 0);
}

#[test]
fn silent_server_times_out() {
    // A socket that takes the packets and never answers: only the timeout can end it.
    let hole = UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = Socket::bind(addr(V4)).unwrap();
    let cfg = client.config();
    let timeout = Duration::from_nanos(cfg.timeout_ticks as u64 * cfg.tick_nanos);
    let t = Instant::now();
    let (tx, rx) = mpsc::channel();
    let (c, to) = (client.clone(), hole.local_addr().unwrap());
    std::thread::spawn(move || tx.send(c.call(to, b"anyone?".to_vec()).map(|m| m.len())));
    let r = rx
        .recv_timeout(OUTCOME_DEADLINE)
        .expect("no outcome: the call to a silent server never timed out");
    assert_eq!(r.unwrap_err().rpc_error(), Some(RpcError::Timeout));
    // Never early (a slow machine only makes it later, so this bound cannot flake);
    // how late depends on the CPU the engine gets, so that is not asserted.
    let took = t.elapsed();
    assert!(took >= timeout.mul_f64(0.9), "timed out early: {took:?}");
    assert_eq!(client.metrics().timeouts, 1);
}

#[test]
fn requests_to_a_client_only_socket_are_counted_as_not_server() {
    // Port 0 without `server: Some(true)`: a client-only socket. A request sent to it is
    // dropped (its sender times out), and counted apart so the mistake can be found.
    let not_a_server = Socket::bind(addr(V4)).unwrap();
    let client = Socket::bind(addr(V4)).unwrap();
    let (tx, rx) = mpsc::channel();
    let (c, to) = (client.clone(), not_a_server.local_addr());
    std::thread::spawn(move || tx.send(c.call(to, b"anyone?".to_vec()).map(|m| m.len())));
    let r = rx
        .recv_timeout(OUTCOME_DEADLINE)
        .unwrap_or_else(|_| {
            panic!(
                "no outcome: the call to a client-only socket never ended\nclient {:?}\n{:?}\nreceiver {:?}",
                client.info(),
                client.metrics(),
                not_a_server.metrics()
            )
        });
    assert_eq!(r.unwrap_err().rpc_error(), Some(RpcError::Timeout));
    let m = not_a_server.metrics();
    assert!(m.dropped(DropReason::NotServer) >= 1, "{:?}", m.drops);
    assert_eq!(m.dropped(DropReason::NoSocket), 0);
    assert_eq!(m.requests_delivered, 0);
}

#[test]
fn request_dropped_without_reply_times_out_the_client() {
    // Dropping a request without replying frees its server RPC; the client, answered
    // neither with a response nor with BUSY any more, fails with a timeout.
    let server = Socket::bind_with(addr(V4), server_opts(Transport::Udp)).unwrap();
    let client = Socket::bind(addr(V4)).unwrap();
    let cfg = client.config();
    let timeout = Duration::from_nanos(cfg.timeout_ticks as u64 * cfg.tick_nanos);
    let id = client
        .send_request(server.local_addr(), b"ignore me".to_vec(), 7)
        .unwrap();
    let req = server.recv().unwrap();
    let info = server.info();
    assert_eq!(info.server_rpcs, 1);
    assert_eq!(info.rpcs.len(), 1);
    assert_eq!(info.rpcs[0].state, homa::RpcState::InService);
    let t = Instant::now();
    drop(req);
    let info = server.info();
    assert_eq!(info.server_rpcs, 0, "{info:?}");
    assert!(info.rpcs.is_empty(), "{info:?}");
    let (tx, rx) = mpsc::channel();
    let c = client.clone();
    std::thread::spawn(move || tx.send(c.recv_id(id).map(|m| m.len())).unwrap());
    let r = rx
        .recv_timeout(OUTCOME_DEADLINE)
        .expect("no outcome: the dropped request is still in service");
    match r {
        Err(RecvError::Rpc {
            error: RpcError::Timeout,
            cookie: 7,
            ..
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert!(t.elapsed() >= timeout.mul_f64(0.9), "{:?}", t.elapsed());
    // The request ran once and was discarded; nothing of it is left on either side.
    assert_eq!(server.info().server_rpcs, 0);
    assert!(client.info().rpcs.is_empty());
}

#[test]
fn nobody_on_the_port_is_reported_quickly() {
    let gone = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = Socket::bind(addr(V4)).unwrap();
    let r = client.call(gone, b"hello?".to_vec());
    assert_eq!(r.unwrap_err().rpc_error(), Some(RpcError::NoSuchSocket));
}

/// The outcome of `client.call(to, request)`, or a panic if none comes within
/// `OUTCOME_DEADLINE` (a call that never returns is the bug these tests catch).
fn call_outcome(client: &Socket, to: std::net::SocketAddr, request: Vec<u8>) -> Option<RpcError> {
    let (tx, rx) = mpsc::channel();
    let c = client.clone();
    std::thread::spawn(move || tx.send(c.call(to, request).map(|m| m.len())).unwrap());
    let r = rx
        .recv_timeout(OUTCOME_DEADLINE)
        .expect("the call never returned");
    r.err().map(|e| e.rpc_error().expect("an RPC failure"))
}

/// Requests a server can never take, and responses the client can never take, fail
/// with the reason: a mismatched `max_message_length` (the README warns about it) or a
/// buffer smaller than the message used to make `call` restart the request for ever,
/// or time out as if the peer had gone silent.
#[test]
fn messages_too_long_for_the_other_side_fail_with_the_reason() {
    // A server answering every request with `reply_len` bytes.
    let serve = |tune: fn(&mut Options), reply_len: usize| {
        let mut opts = server_opts(Transport::Udp);
        tune(&mut opts);
        let s = Socket::bind_with(addr(V4), opts).unwrap();
        let server = s.clone();
        std::thread::spawn(move || {
            while let Ok(m) = server.recv_request() {
                if server.reply(&m, vec![3u8; reply_len]).is_err() {
                    break;
                }
            }
        });
        s
    };
    let client = Socket::bind(addr(V4)).unwrap();
    let short = serve(|o| o.config.max_message_length = 1_000, 100);
    assert_eq!(
        call_outcome(&client, short.local_addr(), vec![1u8; 5_000]),
        Some(RpcError::RequestTooLong)
    );
    let small = serve(|o| o.config.max_incoming_held = 1_000, 100);
    assert_eq!(
        call_outcome(&client, small.local_addr(), vec![1u8; 5_000]),
        Some(RpcError::RequestNeverFits)
    );
    // The servers still serve requests they can take.
    assert_eq!(
        call_outcome(&client, short.local_addr(), vec![1u8; 500]),
        None
    );
    assert_eq!(
        call_outcome(&client, small.local_addr(), vec![1u8; 500]),
        None
    );
    let long_answers = serve(|_| {}, 5_000);
    let mut opts = client_opts(Transport::Udp);
    opts.config.max_message_length = 1_000;
    let picky = Socket::bind_with(addr(V4), opts).unwrap();
    assert_eq!(
        call_outcome(&picky, long_answers.local_addr(), vec![1u8; 500]),
        Some(RpcError::ResponseTooLong)
    );
    let e = client
        .call(short.local_addr(), vec![1u8; 5_000])
        .unwrap_err();
    assert!(e.to_string().contains("max_message_length"), "{e}");
}

#[test]
fn pool_exhaustion_stalls_then_recovers_without_loss() {
    const LEN: usize = 100_000;
    const N: u64 = 8;
    let mut opts = server_opts(Transport::Udp);
    opts.config.max_incoming_held = 3 * LEN as u64;
    // One client sends everything: this is about the pool, not about one peer's share of
    // it (the testbed's forged-DATA flood test covers that).
    opts.config.max_peer_share_percent = 100;
    let server = Socket::bind_with(addr(V4), opts).unwrap();
    let dest = server.local_addr();
    let client = Socket::bind(addr(V4)).unwrap();
    for i in 0..N {
        client.send_request(dest, pattern(LEN, i), i).unwrap();
    }
    // Three requests fit the pool; the server holds them without dropping them.
    let held: Vec<homa::Message> = (0..3)
        .map(|_| {
            server
                .recv_timeout(OUTCOME_DEADLINE)
                .expect("a request that fits")
        })
        .collect();
    // The other five are known to the engine but stalled for buffer space.
    assert!(wait_until(OUTCOME_DEADLINE, || server.info().server_rpcs == N));
    let info = server.info();
    assert_eq!(info.incoming_held, 3 * LEN as u64);
    let in_service = info
        .rpcs
        .iter()
        .filter(|r| r.state == homa::RpcState::InService);
    assert_eq!(in_service.count(), 3, "{info:?}");
    let arriving: Vec<_> = info
        .rpcs
        .iter()
        .filter(|r| r.state == homa::RpcState::ReceivingRequest)
        .collect();
    assert_eq!(arriving.len(), 5, "{info:?}");
    for r in arriving {
        assert!(!r.is_client);
        assert_eq!(r.in_length, Some(LEN as u32));
        assert!(r.bytes_received < LEN as u32, "{r:?}");
        assert!(r.in_stalled, "{r:?}");
    }
    assert!(matches!(
        server.recv_timeout(Duration::from_millis(20)),
        Err(RecvError::TimedOut)
    ));
    // Answer and drop the held messages: their pages go back, the rest arrives.
    for m in held {
        let r = answer(&m.to_vec());
        server.reply(&m, r).unwrap();
    }
    let mut seen = 3;
    while seen < N {
        let m = server
            .recv_timeout(OUTCOME_DEADLINE)
            .expect("stalled request lost");
        let r = answer(&m.to_vec());
        server.reply(&m, r).unwrap();
        seen += 1;
    }
    let mut cookies = Vec::new();
    for _ in 0..N {
        let m = client
            .recv_timeout(OUTCOME_DEADLINE)
            .expect("response lost");
        assert!(
            m == answer(&pattern(LEN, m.cookie())),
            "response {} corrupted",
            m.cookie()
        );
        cookies.push(m.cookie());
    }
    cookies.sort_unstable();
    assert_eq!(cookies, (0..N).collect::<Vec<_>>());
    assert_eq!(client.metrics().timeouts, 0);
}

fn malformed_udp_packets(bind: &str) {
    let server = echo_server(bind, Transport::Udp, 1);
    let dest = server.local_addr();
    let junk = UdpSocket::bind(addr(bind)).unwrap();
    let mut bad_type = vec![0u8; 40];
    bad_type[11] = 0x99;
    let mut short_data = vec![0u8; 30];
    short_data[11] = 0x10;
    let packets: [&[u8]; 5] = [&[], &[1], &[0xff; 27], &bad_type, &short_data];
    for p in packets {
        junk.send_to(p, dest).unwrap();
    }
    // The socket still works, and (same receive queue, earlier) the junk was counted.
    let client = Socket::bind(addr(bind)).unwrap();
    let resp = client.call(dest, b"still there?".to_vec()).unwrap();
    assert!(resp == answer(b"still there?"));
    let m = server.metrics();
    assert_eq!(m.dropped(homa::DropReason::Malformed), packets.len() as u64);
    server.shutdown();
}

#[test]
fn malformed_udp_packets_are_counted_and_ignored() {
    malformed_udp_packets(V4);
    malformed_udp_packets(V6);
}

#[test]
fn malformed_raw_packets_are_counted_and_ignored() {
    if !raw_available("malformed_raw_packets_are_counted_and_ignored") {
        return;
    }
    let server = echo_server(V4, Transport::RawIp, 1);
    let dest = server.local_addr();
    let raw = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(146)),
    )
    .unwrap();
    let port = dest.port().to_be_bytes();
    // Right destination port, then garbage: an unknown type, a truncated DATA header.
    let mut bad_type = vec![0u8; 40];
    bad_type[2..4].copy_from_slice(&port);
    bad_type[11] = 0x77;
    let mut short_data = vec![0u8; 31];
    short_data[2..4].copy_from_slice(&port);
    short_data[11] = 0x10;
    let ip: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    for p in [&bad_type, &short_data] {
        raw.send_to(p, &ip.into()).unwrap();
    }
    let client = Socket::bind_with(addr(V4), client_opts(Transport::RawIp)).unwrap();
    let resp = client.call(dest, b"raw still works".to_vec()).unwrap();
    assert!(resp == answer(b"raw still works"));
    assert!(wait_until(OUTCOME_DEADLINE, || {
        server.metrics().dropped(homa::DropReason::Malformed) == 2
    }));
    server.shutdown();
}

#[test]
fn misuse_gives_clear_errors() {
    let server = Socket::bind_with(addr(V4), server_opts(Transport::Udp)).unwrap();
    let dest = server.local_addr();
    // Port in use.
    match Socket::bind(dest) {
        Err(BindError::AddrInUse(a)) => assert_eq!(a, dest),
        other => panic!("unexpected {other:?}"),
    }
    let e: std::io::Error = Socket::bind(dest).unwrap_err().into();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    // An address this host does not have (TEST-NET-1; binding sends nothing), named as
    // asked: with port 0, not whichever automatic port was tried.
    let foreign: std::net::SocketAddr = "192.0.2.1:0".parse().unwrap();
    match Socket::bind(foreign) {
        Err(BindError::AddrNotAvailable(a)) => assert_eq!(a, foreign),
        other => panic!("unexpected {other:?}"),
    }
    let client = Socket::bind(addr(V4)).unwrap();
    // Wrong address family.
    assert!(matches!(
        client.send_request("[::1]:4000".parse().unwrap(), b"x".to_vec(), 0),
        Err(SendError::AddressFamily { .. })
    ));
    // An IPv4-mapped destination from an IPv6 socket: told at once what to do instead
    // (such a send would never arrive: IPv6 sockets here are IPv6-only).
    let v6 = Socket::bind(addr(V6)).unwrap();
    let mapped: std::net::SocketAddr = format!("[::ffff:127.0.0.1]:{}", dest.port())
        .parse()
        .unwrap();
    match v6.send_request(mapped, b"x".to_vec(), 0) {
        Err(e @ SendError::Ipv4Mapped { .. }) => {
            assert!(e.to_string().contains("use an IPv4 socket"), "{e}")
        }
        other => panic!("unexpected {other:?}"),
    }
    // Binding one is refused with the same advice, not a bare EINVAL.
    for bad in ["[::ffff:127.0.0.1]:0", "[::ffff:0.0.0.0]:0"] {
        match Socket::bind(addr(bad)) {
            Err(e @ homa::BindError::Io(_)) => {
                assert!(e.to_string().contains("IPv4-mapped"), "{e}");
                assert_eq!(
                    std::io::Error::from(e).kind(),
                    std::io::ErrorKind::InvalidInput
                );
            }
            other => panic!("unexpected {:?}", other.map(|s| s.local_addr())),
        }
    }
    // Not one peer: the unspecified address (a server's bind address, easily copied as
    // a destination, whose answer would come from 127.0.0.1 and never match), multicast,
    // broadcast. Refused at once with what to use instead, not a timeout.
    for bad in ["0.0.0.0", "224.0.0.1", "255.255.255.255"] {
        let to: std::net::SocketAddr = format!("{bad}:{}", dest.port()).parse().unwrap();
        match client.send_request(to, b"x".to_vec(), 0) {
            Err(e @ SendError::NotUnicast { .. }) => {
                assert!(e.to_string().contains("not a unicast address"), "{e}");
                let io: std::io::Error = e.into();
                assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
            }
            other => panic!("{bad}: unexpected {other:?}"),
        }
    }
    match v6.send_request(
        format!("[::]:{}", dest.port()).parse().unwrap(),
        b"x".to_vec(),
        0,
    ) {
        Err(e @ SendError::NotUnicast { .. }) => assert!(e.to_string().contains("::1"), "{e}"),
        other => panic!("[::]: unexpected {other:?}"),
    }
    // Too long, empty, port 0.
    let max = client.config().max_message_length as usize;
    assert!(matches!(
        client.send_request(dest, vec![0u8; max + 1], 0),
        Err(SendError::MessageTooLong { len, .. }) if len == max + 1
    ));
    assert!(matches!(
        client.send_request(dest, Vec::new(), 0),
        Err(SendError::EmptyMessage)
    ));
    assert!(matches!(
        client.send_request("127.0.0.1:0".parse().unwrap(), b"x".to_vec(), 0),
        Err(SendError::InvalidPort)
    ));
    // recv_id for an id that is not outstanding.
    assert!(matches!(
        client.recv_id(homa::RpcId(12)),
        Err(RecvError::UnknownRpc(_))
    ));
    // Replies: to a response, twice, from the wrong socket, too long.
    let id = client.send_request(dest, b"q".to_vec(), 0).unwrap();
    let req = server.recv().unwrap();
    assert!(matches!(
        server.reply(&req, vec![0u8; max + 1]),
        Err(ReplyError::MessageTooLong { .. })
    ));
    assert!(matches!(
        client.reply(&req, b"r".to_vec()),
        Err(ReplyError::WrongSocket(_))
    ));
    server.reply(&req, b"r".to_vec()).unwrap();
    assert!(matches!(
        server.reply(&req, b"r".to_vec()),
        Err(ReplyError::UnknownRpc(_))
    ));
    let resp = client.recv_id(id).unwrap();
    assert!(matches!(
        client.reply(&resp, b"r".to_vec()),
        Err(ReplyError::NotARequest(_))
    ));
    // Every error converts into an io::Error of the expected kind.
    let e: std::io::Error = client.send_request(dest, Vec::new(), 0).unwrap_err().into();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    // Bad configuration.
    let cfg = Config {
        max_sched_prio: 8,
        ..Default::default()
    };
    assert!(matches!(
        Socket::bind_with(
            addr(V4),
            Options {
                config: cfg,
                ..Default::default()
            }
        ),
        Err(BindError::Config(_))
    ));
}

#[test]
fn config_file_sets_section_6_parameters() {
    let path = std::env::temp_dir().join(format!("homa-test-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[homa]\nunsched_bytes = 60000\ntimeout_ticks = 50\nmtu = 9000\n[runtime]\ntransport = \"udp\"\n",
    )
    .unwrap();
    let opts = Options::from_toml_file(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let s = Socket::bind_with(addr(V4), opts).unwrap();
    let c = s.config();
    assert_eq!(
        (c.unsched_bytes, c.timeout_ticks, c.mtu),
        (60_000, 50, 9000)
    );
    assert_eq!(c.ip_overhead, 28);
    assert_eq!(
        c.grant_lead_bytes, 60_000,
        "the grant lead follows the unscheduled bytes the file set"
    );
    let off = Options::from_toml_str("[homa]\ngrant_lead_bytes = 0\n").unwrap();
    assert_eq!(
        Socket::bind_with(addr(V4), off)
            .unwrap()
            .config()
            .grant_lead_bytes,
        0,
        "a lead the file sets, 0 included, is kept"
    );
    let engine_default = Options::default().with_config(homa::Config::default());
    assert_eq!(
        Socket::bind_with(addr(V4), engine_default)
            .unwrap()
            .config()
            .grant_lead_bytes,
        40_000,
        "Options' own default applies whatever config it carries"
    );
    assert!(matches!(
        Options::from_toml_file("/nonexistent/homa.toml"),
        Err(homa::ConfigFileError::Read { .. })
    ));
    // Not a regular file: a device read until memory ran out, a directory, a FIFO.
    for path in ["/dev/zero", "/tmp"] {
        let e = Options::from_toml_file(path).unwrap_err();
        assert!(
            matches!(e, homa::ConfigFileError::Read { .. }),
            "{path}: {e}"
        );
        assert!(e.to_string().contains(path), "{e}");
    }
    let dir = std::env::temp_dir().join(format!("homa-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A FIFO with no writer: refused at once (opening it to read used to wait for good).
    let fifo = dir.join("fifo.toml");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path that lives across the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let (tx, rx) = std::sync::mpsc::channel();
    let reading = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(Options::from_toml_file(&reading).map(|_| ()));
    });
    let got = rx.recv_timeout(Duration::from_secs(10));
    if got.is_err() {
        // Let the stuck reader go before failing.
        let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
    }
    let e = got.expect("from_toml_file returns for a FIFO").unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    // Longer than any configuration file: refused before it is parsed.
    let long = dir.join("long.toml");
    let comment = "# padding\n".repeat(200_000);
    std::fs::write(&long, format!("[homa]\n{comment}")).unwrap();
    let e = Options::from_toml_file(&long).unwrap_err().to_string();
    assert!(e.contains("longer than"), "{e}");
    let short = dir.join("short.toml");
    std::fs::write(&short, "[homa]\nunsched_bytes = 30000 # a comment\n").unwrap();
    assert_eq!(
        Options::from_toml_file(&short)
            .unwrap()
            .config
            .unsched_bytes,
        30_000
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn link_is_detected_for_loopback() {
    let s = Socket::bind(addr(V4)).unwrap();
    let info = s.info();
    assert_eq!(
        info.mtu, 65_535,
        "loopback MTU 65536, capped to one IP packet"
    );
    assert_eq!(
        info.link_mbps, 1_000_000,
        "loopback: the pacer keeps out of the way"
    );
    // The loopback profile's window, unless the kernel granted a smaller receive buffer
    // (no CAP_NET_ADMIN and a distribution's 208 KiB `rmem_max`): then that.
    assert_eq!(
        s.config().max_incoming as usize,
        1_600_000.min(info.recv_buffer_bytes),
        "loopback profile"
    );
    let explicit = Options::from_toml_str("[homa]\nmax_incoming = 400000\n").unwrap();
    let s2 = Socket::bind_with(addr(V4), explicit).unwrap();
    assert_eq!(
        s2.config().max_incoming as usize,
        400_000.min(s2.info().recv_buffer_bytes),
        "an explicit value is kept (within the receive buffer)"
    );
    let s6 = Socket::bind(addr(V6)).unwrap();
    assert_eq!(s6.config().ip_overhead, 48);
}

#[test]
fn a_socket_bound_to_a_port_it_names_serves_even_above_32767() {
    // A gRPC-style server on 127.0.0.1:50051 once bound fine and then refused every
    // request (only ports below 32768 served by default): the client timed out.
    let port = {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    assert!(port >= 32_768, "the kernel's ephemeral range: {port}");
    let at = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let server = match Socket::bind(at) {
        Ok(s) => s,
        Err(e) => return eprintln!("skipping: port {port} was taken meanwhile: {e}"),
    };
    let s = server.clone();
    let t = std::thread::spawn(move || {
        let req = s.recv_timeout(OUTCOME_DEADLINE).expect("a request");
        s.reply(&req, req.to_vec()).unwrap();
    });
    let client = Socket::bind(addr(V4)).unwrap();
    assert_eq!(client.call(at, b"hello".to_vec()).unwrap(), b"hello");
    t.join().unwrap();
}

/// A destination the kernel has no route to fails the RPC at once with the kernel's
/// reason (`ENETUNREACH`), not with a timeout. Runs in a network namespace of its own
/// (root only), where nothing but loopback exists, so nothing is sent anywhere.
#[test]
fn no_route_to_the_peer_fails_the_rpc_with_the_reason() {
    if !may_make_namespaces() {
        println!("skipping no_route_to_the_peer_fails_the_rpc_with_the_reason: needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for a network namespace");
        return;
    }
    let outcome = std::thread::spawn(|| {
        // SAFETY: unshare moves only this thread (and the socket's threads it starts) into
        // a new, empty network namespace, which goes when they end.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!(
                "root, but refused a network namespace: {}",
                std::io::Error::last_os_error()
            );
        }
        let client = Socket::bind("0.0.0.0:0".parse().unwrap()).unwrap();
        let id = client
            .send_request("10.9.8.7:4000".parse().unwrap(), b"anyone?".to_vec(), 0)
            .unwrap();
        client.recv_id_timeout(id, OUTCOME_DEADLINE)
    })
    .join()
    .unwrap();
    match outcome {
        Err(RecvError::Rpc { error, .. }) => {
            assert_eq!(error, RpcError::Unreachable(libc::ENETUNREACH), "{error}")
        }
        other => panic!("expected the RPC to fail as unreachable, got {other:?}"),
    }
}

/// A server that also makes calls of its own: `recv_request` hands it requests only, so
/// one of its own RPCs failing does not end its serving loop (with `recv`, the failure
/// comes back as `Err` and a `while let Ok(..)` loop stops). The failure waits for `recv`.
#[test]
fn a_serving_loop_on_recv_request_outlives_its_own_failed_rpcs() {
    let server = Socket::bind_with(addr(V4), server_opts(Transport::Udp)).unwrap();
    // One of the server's own RPCs fails at once: nobody listens on that port.
    let gone = UdpSocket::bind("127.0.0.1:0").unwrap();
    let nowhere = gone.local_addr().unwrap();
    drop(gone);
    let own = server.send_request(nowhere, b"hello?".to_vec(), 9).unwrap();
    let s = server.clone();
    let serving = std::thread::spawn(move || {
        let mut served = 0;
        while let Ok(req) = s.recv_request() {
            s.reply(&req, answer(&req.to_vec())).unwrap();
            served += 1;
        }
        served
    });
    let client = Socket::bind(addr(V4)).unwrap();
    for i in 0..5u64 {
        let req = pattern(100 + i as usize, i);
        let resp = client.call(server.local_addr(), req.clone()).unwrap();
        assert_eq!(resp.to_vec(), answer(&req));
    }
    // The own RPC's failure was kept for `recv_id` (and `recv`), not lost.
    match server.recv_id_timeout(own, OUTCOME_DEADLINE) {
        Err(RecvError::Rpc {
            error: RpcError::Timeout | RpcError::NoSuchSocket,
            cookie: 9,
            ..
        }) => {}
        other => panic!("expected the server's own RPC to fail, got {other:?}"),
    }
    server.shutdown();
    assert_eq!(
        serving.join().unwrap(),
        5,
        "the loop served every request, then ended"
    );
}

/// An MTU no IP packet can have is refused at bind, as in a config file: it used to be
/// cut to 65,535 in silence when set in code.
#[test]
fn an_impossible_mtu_is_refused_at_bind() {
    let mut opts = client_opts(Transport::Udp);
    opts.auto_mtu = false;
    opts.config.mtu = 70_000;
    match Socket::bind_with(addr(V4), opts) {
        Err(BindError::Config(e)) => assert!(e.to_string().contains("mtu"), "{e}"),
        other => panic!("{:?}", other.map(|s| s.local_addr())),
    }
}

/// A shutdown gives back the buffers of the messages still queued, which no receive can
/// take any more: neither their memory nor the counters outlive the socket's use while a
/// clone of it lives. A message the application took keeps its space until dropped.
#[test]
fn shutdown_gives_back_what_was_queued() {
    let server = Socket::bind_with(addr(V4), server_opts(Transport::Udp)).unwrap();
    let kept = server.clone();
    let client = Socket::bind(addr(V4)).unwrap();
    for i in 0..3u8 {
        client
            .send_request(server.local_addr(), vec![i; 300_000], u64::from(i))
            .unwrap();
    }
    assert!(
        wait_until(OUTCOME_DEADLINE, || server.info().queued == 3),
        "{:?}",
        server.info()
    );
    let held = server.recv_request().unwrap();
    server.shutdown();
    let info = kept.info();
    assert_eq!((info.queued, info.incoming_held), (0, 300_000), "{info:?}");
    assert!(matches!(kept.recv(), Err(RecvError::Shutdown)));
    drop(held);
    assert_eq!(kept.info().incoming_held, 0);
}
