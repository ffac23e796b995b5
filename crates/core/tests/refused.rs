//! Requests a server refuses for want of buffer space must get in later, not time out.
//!
//! A server that cannot buffer a request (its peer's share is used up and the stalled
//! queue is full) keeps no state and answers the client's RESEND with RPC_UNKNOWN; the
//! client restarts the request. Each retry round admits only a few of them, so a burst
//! needs many rounds: the RPC_UNKNOWN must count as an answer, or the burst's tail runs
//! out of `timeout_ticks` while the server is alive and working through it.

#[path = "../benches/support/pair.rs"]
mod pair;

use homa_core::{Bytes, Config, DropReason, Endpoint, Time};
use pair::{exchange, exchange_over, run_timers, SERVER};
use std::net::SocketAddr;

#[test]
fn a_burst_larger_than_the_server_can_buffer_completes() {
    let config = |seed| Config {
        link_mbps: 100_000_000,
        // A peer may hold 25% of this: one 1 MB request at a time...
        max_incoming_held: 4_000_000,
        // ...and have one more stalled; the rest of the burst is refused.
        max_stalled_messages: 4,
        seed,
        client_id_base: 2,
        ..Config::default()
    };
    let mut client = Endpoint::new(config(1)).unwrap();
    let mut server = Endpoint::new(config(2)).unwrap();
    let cport = client.bind(0).unwrap();
    server.bind(99).unwrap();
    let dest = SocketAddr::new(SERVER, 99);
    let request = Bytes::from(vec![7u8; 1_000_000]);
    let burst = 49;
    for cookie in 0..burst {
        client
            .send_request(Time::ZERO, cport, dest, request.clone(), cookie, false)
            .unwrap();
    }
    let response = Bytes::from_static(b"ok");
    let mut buf = vec![0u8; client.max_packet_len()];
    let (mut now, mut done, mut failed) = (Time::ZERO, 0, Vec::new());
    while done + failed.len() < burst as usize {
        assert!(now < Time::ZERO.plus_nanos(10_000_000_000), "no progress");
        let round = exchange(&mut client, &mut server, now, &mut buf, &response);
        done += round.done;
        failed.extend(round.failed);
        // Virtual time: 1 us per round of exchanges, 1 ms ticks.
        now = now.plus_nanos(1_000);
        run_timers(&mut client, &mut server, now);
    }
    assert!(
        failed.is_empty(),
        "failed against a live server: {failed:?}"
    );
    assert_eq!(done, burst as usize);
    // The scenario did exercise refusals and restarts.
    assert!(server.metrics().dropped(DropReason::NoBuffer) > 0);
    assert!(client.metrics().restarts > 0);
}

/// Runs one request of `request_len` bytes from a client with `client` to a server with
/// `server` (which answers with `response_len` bytes) until it completes or fails, in
/// virtual time; returns the outcome and the virtual time it took.
fn one_rpc(
    client: Config,
    server: Config,
    request_len: usize,
    response_len: usize,
) -> (Result<(), homa_core::RpcError>, Time) {
    let (outcome, at, _) = one_rpc_over(client, server, request_len, response_len, usize::MAX);
    (outcome, at)
}

/// [`one_rpc`] over a path that drops every client-to-server packet longer than
/// `path_max` bytes (the server's answers all get through); also returns the client's
/// restarts.
fn one_rpc_over(
    client: Config,
    server: Config,
    request_len: usize,
    response_len: usize,
    path_max: usize,
) -> (Result<(), homa_core::RpcError>, Time, u64) {
    let mut client = Endpoint::new(client).unwrap();
    let mut server = Endpoint::new(server).unwrap();
    let cport = client.bind(0).unwrap();
    server.bind(99).unwrap();
    let dest = SocketAddr::new(SERVER, 99);
    client
        .send_request(Time::ZERO, cport, dest, vec![1u8; request_len], 5, false)
        .unwrap();
    let response = Bytes::from(vec![2u8; response_len]);
    let mut buf = vec![0u8; client.max_packet_len().max(server.max_packet_len())];
    let mut now = Time::ZERO;
    loop {
        assert!(
            now < Time::ZERO.plus_nanos(10_000_000_000),
            "neither done nor failed"
        );
        let round = exchange_over(&mut client, &mut server, now, &mut buf, &response, path_max);
        let restarts = client.metrics().restarts;
        if let Some(&(_, homa_core::RpcError::RequestLost)) = round.failed.first() {
            assert_eq!(client.metrics().requests_lost, 1, "counted");
        }
        if round.done > 0 {
            return (Ok(()), now, restarts);
        }
        if let Some(&(cookie, e)) = round.failed.first() {
            assert_eq!(cookie, 5);
            return (Err(e), now, restarts);
        }
        now = now.plus_nanos(1_000);
        run_timers(&mut client, &mut server, now);
    }
}

/// A request the server will never take fails with the reason, at the first packet the
/// server refuses, instead of restarting after every RPC_UNKNOWN for ever (an outsider's
/// test found `call` spinning: 137 restarts a second, 36 MB of DATA in 4 s).
#[test]
fn a_request_the_server_will_never_take_fails_with_the_reason() {
    let short = Config {
        max_message_length: 1_000,
        ..Config::default()
    };
    let (outcome, at) = one_rpc(Config::default(), short, 5_000, 10);
    assert_eq!(outcome, Err(homa_core::RpcError::RequestTooLong));
    assert!(
        at < Time::ZERO.plus_nanos(1_000_000),
        "failed at {at:?}, not at once"
    );

    let small = Config {
        max_incoming_held: 1_000,
        ..Config::default()
    };
    let (outcome, at) = one_rpc(Config::default(), small.clone(), 5_000, 10);
    assert_eq!(outcome, Err(homa_core::RpcError::RequestNeverFits));
    assert!(
        at < Time::ZERO.plus_nanos(1_000_000),
        "failed at {at:?}, not at once"
    );

    // One that fits both is untouched.
    let (outcome, _) = one_rpc(Config::default(), small, 900, 10);
    assert_eq!(outcome, Ok(()));
}

/// A response longer than the client takes fails the RPC with the reason when its first
/// packet comes, where it used to time out as if the server had gone silent.
#[test]
fn a_response_longer_than_the_client_takes_fails_with_the_reason() {
    let short = Config {
        max_message_length: 1_000,
        ..Config::default()
    };
    let (outcome, _) = one_rpc(short.clone(), Config::default(), 500, 5_000);
    assert_eq!(outcome, Err(homa_core::RpcError::ResponseTooLong));
    let (outcome, _) = one_rpc(short, Config::default(), 500, 1_000);
    assert_eq!(outcome, Ok(()));
}

/// A damaged copy of a DATA packet that claims a length over the other side's limit
/// fails nothing: the server's refusal names the damaged length, which the client never
/// sent, and one response packet's claim alone does not fail the client's RPC. (The
/// swarm's garbage injection, mutated copies of real packets, found the first version
/// of the refusals failing healthy RPCs.)
#[test]
fn a_damaged_length_fails_nothing() {
    use homa_wire::{Body, Repr};
    let mut client = Endpoint::new(Config::default()).unwrap();
    let mut server = Endpoint::new(Config::default()).unwrap();
    let cport = client.bind(0).unwrap();
    server.bind(99).unwrap();
    let dest = SocketAddr::new(SERVER, 99);
    client
        .send_request(Time::ZERO, cport, dest, vec![1u8; 3_000], 5, false)
        .unwrap();
    let mut buf = vec![0u8; client.max_packet_len()];
    // A copy of the request's first packet, its length field damaged.
    let t = client
        .poll_transmit(Time::ZERO, &mut buf)
        .expect("the request's DATA");
    let (mut repr, payload) = Repr::parse(&buf[..t.len], u32::MAX).unwrap();
    let payload = payload.to_vec();
    let Body::Data(d) = &mut repr.body else {
        panic!("DATA first")
    };
    d.message_length = 50_000_000;
    let damaged = repr.to_vec(&payload).unwrap();
    server.handle_datagram(Time::ZERO, pair::CLIENT, &damaged);
    // The server refuses the damaged length; the client hears it and keeps its RPC.
    let mut refusals = 0;
    while let Some(t) = server.poll_transmit(Time::ZERO, &mut buf) {
        refusals += 1;
        client.handle_datagram(Time::ZERO, SERVER, &buf[..t.len]);
    }
    assert_eq!(refusals, 1, "the server answers the damaged copy");
    assert!(client.poll_event().is_none(), "the RPC did not fail");
    // The real packet, and the rest: the RPC completes.
    server.handle_datagram(
        Time::ZERO,
        pair::CLIENT,
        &buf_copy(&damaged, &payload, 3_000),
    );
    let response = Bytes::from(vec![2u8; 10]);
    let mut now = Time::ZERO;
    loop {
        assert!(now < Time::ZERO.plus_nanos(1_000_000_000), "no outcome");
        let round = exchange(&mut client, &mut server, now, &mut buf, &response);
        assert!(round.failed.is_empty(), "{:?}", round.failed);
        if round.done == 1 {
            break;
        }
        now = now.plus_nanos(1_000);
        run_timers(&mut client, &mut server, now);
    }
}

/// `damaged` with its length field set back to `len`.
fn buf_copy(damaged: &[u8], payload: &[u8], len: u32) -> Vec<u8> {
    use homa_wire::{Body, Repr};
    let (mut repr, _) = Repr::parse(damaged, u32::MAX).unwrap();
    if let Body::Data(d) = &mut repr.body {
        d.message_length = len;
    }
    repr.to_vec(payload).unwrap()
}

/// With no unscheduled bytes a message's first packet never leaves, so no receiver ever
/// learns of it and nothing is granted: refused at once (it used to bind, and every RPC
/// then hung). One byte is enough: the first packet goes whole.
#[test]
fn unscheduled_bytes_must_let_the_first_packet_go() {
    let zero = Config {
        unsched_bytes: 0,
        ..Config::default()
    };
    let e = zero.validate().expect_err("no unscheduled bytes");
    assert!(e.to_string().contains("unsched_bytes"), "{e}");
    assert!(Endpoint::new(zero).is_err());
    let one = Config {
        unsched_bytes: 1,
        ..Config::default()
    };
    let (outcome, _) = one_rpc(one.clone(), one, 50_000, 100);
    assert_eq!(outcome, Ok(()));
}

/// A request whose packets the path drops while it lets the short RESEND and
/// RPC_UNKNOWN through (longer than a hop's MTU with nothing to fragment them, or IP
/// fragments filtered) used to restart for ever, the caller waiting for good (199
/// restarts and 12,000 packets in 20 s for a 5,000-byte request). It fails with the
/// reason after 16 restarts in a row with no sign that the
/// server holds it, whether nothing of it gets through or only its short last packet
/// does; a short request on the same path completes.
#[test]
fn a_request_the_path_keeps_dropping_fails_instead_of_restarting_for_ever() {
    let limit = Time::ZERO.plus_nanos(10_000_000_000);
    for (len, path_max, what) in [
        (5_000, 1_000, "only the short last packet gets through"),
        (5_000, 100, "nothing of it gets through"),
        (
            200_000,
            1_000,
            "a scheduled request, nothing of it gets through",
        ),
    ] {
        let (outcome, at, restarts) =
            one_rpc_over(Config::default(), Config::default(), len, 2, path_max);
        assert_eq!(outcome, Err(homa_core::RpcError::RequestLost), "{what}");
        assert!(at < limit, "{what}: failed only at {at:?}");
        assert!(restarts >= 16, "{what}: it was restarted first");
    }
    let (outcome, _, restarts) = one_rpc_over(Config::default(), Config::default(), 500, 2, 1_000);
    assert_eq!(outcome, Ok(()));
    assert_eq!(restarts, 0);
}
