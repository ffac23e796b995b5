//! Engine bugs found by the harness, each reproduced as small as it gets; all fixed, kept
//! as regression tests.

use homa_core::{Config, Endpoint, Event, Time};
use homa_harness::{run_chaos, ChaosConfig, Sizes};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// With `fifo_grant_increment > max_incoming`, the first FIFO turn can never fit in the
/// grant budget; `run_grants` returns before the SRPT grants and keeps doing so, and since
/// the receiver is waiting on its own grants it never counts silent ticks: the RPC hangs
/// forever (no RESEND, no timeout; keepalive GRANTs keep the sender from timing out).
/// Found by the property test, seed 0 (2 endpoints, concurrency 1, 59,830-byte messages).
#[test]
fn engine_bug_fifo_grant_increment_above_max_incoming_hangs_rpcs() {
    let cfg = ChaosConfig {
        rpcs: 60,
        endpoints: 2,
        concurrency: 1,
        size: Sizes::Fixed(59_830),
        seed: 0,
        endpoint: Config {
            max_incoming: 37_116,
            unsched_bytes: 3_227,
            grant_fifo_fraction: 172,
            fifo_grant_increment: 50_000, // the default; > max_incoming
            ..Config::default()
        },
        stall_limit_ms: 1_000,
        ..ChaosConfig::default()
    };
    let r = run_chaos(&cfg, &mut |_| {});
    assert!(
        r.passed() && r.result.completed == 60,
        "seed 0: {:?}, stopped: {}",
        r.result,
        r.stopped
    );
}

fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
}

/// Move every packet `ep` has queued into a list of datagrams.
fn drain(ep: &mut Endpoint, now: Time) -> Vec<Vec<u8>> {
    let mut buf = vec![0; ep.max_packet_len()];
    let mut out = Vec::new();
    while let Some(t) = ep.poll_transmit(now, &mut buf) {
        out.push(buf[..t.len].to_vec());
    }
    out
}

/// A duplicated (or late) RPC_UNKNOWN that arrives after the response has started makes
/// the client restart the RPC, which throws away the response bytes already received.
/// PROTOCOL.md 5 restarts only "a request still in progress"; Linux Homa ignores
/// RPC_UNKNOWN for a client RPC that is already receiving its response (the server
/// evidently knows it). Found by the property test's accounting check (the wire mirror
/// kept the bytes the engine dropped), seed 10232201666575193263.
#[test]
fn engine_bug_stale_rpc_unknown_discards_partial_response() {
    let (a, b) = (ip(1), ip(2));
    let mut client = Endpoint::new(Config::default()).unwrap();
    let mut server = Endpoint::new(Config::default()).unwrap();
    let cport = client.bind(0).unwrap();
    server.bind(99).unwrap();
    let mut now = Time::ZERO;
    client
        .send_request(now, cport, SocketAddr::new(b, 99), vec![1; 50], 0, false)
        .unwrap();
    drop(drain(&mut client, now)); // the request is lost
                                   // Silence: the client asks for the response; the server does not know the RPC.
    let mut resend = Vec::new();
    while resend.is_empty() {
        now = client.poll_timeout().unwrap();
        client.handle_timeout(now);
        resend = drain(&mut client, now);
    }
    for p in &resend {
        server.handle_datagram(now, a, p);
    }
    let unknown = drain(&mut server, now);
    assert_eq!(unknown.len(), 1, "one RPC_UNKNOWN");
    // The first copy restarts the request, as it should.
    client.handle_datagram(now, b, &unknown[0]);
    for p in drain(&mut client, now) {
        server.handle_datagram(now, a, &p);
    }
    let Some(Event::Request {
        port,
        id,
        peer,
        data,
    }) = server.poll_event()
    else {
        panic!("request not delivered");
    };
    server.release(data);
    server.reply(now, port, peer, id, vec![2; 5_000]).unwrap();
    let (response, other): (Vec<_>, Vec<_>) = drain(&mut server, now)
        .into_iter()
        .partition(|p| p[11] == homa_wire::PacketType::Data.code());
    for p in &other {
        client.handle_datagram(now, b, p); // CUTOFFS
    }
    assert_eq!(response.len(), 4, "5000 bytes in four DATA packets");
    for p in &response[..3] {
        client.handle_datagram(now, b, p);
    }
    // The duplicate RPC_UNKNOWN arrives late, then the last response packet.
    client.handle_datagram(now, b, &unknown[0]);
    drop(drain(&mut client, now));
    client.handle_datagram(now, b, &response[3]);
    assert_eq!(
        client.metrics().restarts,
        1,
        "the stale RPC_UNKNOWN restarted the RPC again"
    );
    match client.poll_event() {
        Some(Event::Response { data, .. }) => assert!(data.eq_bytes(&[2; 5_000])),
        other => panic!("the response's first three packets were thrown away: {other:?}"),
    }
}

/// The same bug seen from the grant scheduler: a late RPC_UNKNOWN restarts client RPC 18
/// while 400 KB of its response are arriving; the client RESENDs "everything", and the
/// server's retransmissions carry `incoming` = the grant made to the discarded message
/// (382,320). The fresh message trusts it, so the receiver's `total_incoming` reaches
/// 502,680 > `max_incoming` 400,000 + 43,896 of unscheduled bytes, from grants it never
/// made. Found by the late-packets property, seed 1878633876751221658.
#[test]
fn engine_bug_stale_rpc_unknown_lets_total_incoming_exceed_max_incoming() {
    let seed = 1_878_633_876_751_221_658;
    let cfg = ChaosConfig {
        rpcs: 40 + seed % 60,
        endpoints: 2,
        concurrency: 4,
        loss: 0.130_615_858_541_497_93,
        dup: 0.132_142_004_760_919_6,
        reorder: 0.141_636_266_017_243_27,
        reorder_max_ns: 300_000_000,
        size: Sizes::Cdf(vec![(50, 0.5), (5000, 0.8), (80000, 0.95), (400000, 1.0)]),
        seed,
        check_invariants: true,
        ..ChaosConfig::default()
    };
    let r = run_chaos(&cfg, &mut |_| {});
    let check = r.check.unwrap();
    assert_eq!(
        check.violations, 0,
        "seed {seed}: {:#?}",
        check.first_violations
    );
}
