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
use pair::{exchange, run_timers, SERVER};
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
