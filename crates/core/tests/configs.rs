//! Any configuration is either refused with a `ConfigError` or runs: no value, however
//! extreme, may panic (divide by zero, overflow) when an endpoint is made or used.

use homa_core::{Config, Endpoint, Event, Time};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Values at the edges and in between, for a field of type u32.
fn edgy_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u32::MAX),
        Just(u32::MAX - 1),
        0u32..100_000,
        any::<u32>(),
    ]
}

fn edgy_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u64::MAX),
        0u64..1 << 40,
        any::<u64>()
    ]
}

/// Mostly the defaults, a few fields set to edge values: so that many cases are valid
/// and run, and the rest probe the checks.
fn maybe<T: Clone + std::fmt::Debug + 'static>(
    default: T,
    edge: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop::option::weighted(0.1, edge)
        .prop_map(move |o| o.unwrap_or_else(|| default.clone()))
        .boxed()
}

fn config() -> impl Strategy<Value = Config> {
    let d = Config::default();
    let a = (
        maybe(d.unsched_bytes, edgy_u32()),
        maybe(d.max_incoming, edgy_u32()),
        maybe(d.max_overcommit, edgy_u32()),
        maybe(d.window, edgy_u32()),
        maybe(d.grant_fifo_fraction, edgy_u32()),
        maybe(d.fifo_grant_increment, edgy_u32()),
        maybe(d.pacer_fifo_fraction, edgy_u32()),
        maybe(d.link_mbps, edgy_u32()),
        maybe(d.max_nic_est_backlog_usecs, edgy_u32()),
        maybe(d.defer_min_bytes, edgy_u32()),
    );
    let b = (
        maybe(d.num_priorities, any::<u8>()),
        maybe(d.max_sched_prio, any::<u8>()),
        maybe(d.resend_ticks, edgy_u32()),
        maybe(d.resend_interval, edgy_u32()),
        maybe(d.timeout_ticks, edgy_u32()),
        maybe(d.request_ack_ticks, edgy_u32()),
        maybe(d.bpage_size, edgy_u32()),
        maybe(d.max_message_length, edgy_u32()),
        maybe(d.tick_nanos, edgy_u64()),
        maybe(d.mtu, edgy_u32()),
    );
    let c = (
        maybe(d.ip_overhead, edgy_u32()),
        maybe(d.max_incoming_held, edgy_u64()),
        maybe(d.max_stalled_messages, edgy_u32()),
        maybe(d.max_peer_share_percent, edgy_u32()),
        maybe(d.max_outgoing_held, edgy_u64()),
        maybe(d.dedup_horizon_ticks, edgy_u32()),
        maybe(d.client_history_idle_ticks, edgy_u32()),
        maybe(d.client_id_base, edgy_u64()),
        maybe(d.srpt, any::<bool>()),
        maybe(d.poll_usecs, edgy_u32()),
    );
    let e = (
        maybe(d.peer_gc_threshold, edgy_u32()),
        maybe(d.peer_idle_secs_min, edgy_u32()),
        maybe(d.peer_idle_secs_max, edgy_u32()),
        maybe(d.peer_net_max, edgy_u32()),
        maybe(d.max_client_histories, edgy_u32()),
        any::<bool>(),
    );
    (a, b, c, e).prop_map(|(a, b, c, e)| Config {
        unsched_bytes: a.0,
        max_incoming: a.1,
        max_overcommit: a.2,
        window: a.3,
        grant_fifo_fraction: a.4,
        fifo_grant_increment: a.5,
        pacer_fifo_fraction: a.6,
        link_mbps: a.7,
        max_nic_est_backlog_usecs: a.8,
        defer_min_bytes: a.9,
        num_priorities: b.0,
        max_sched_prio: b.1,
        resend_ticks: b.2,
        resend_interval: b.3,
        timeout_ticks: b.4,
        request_ack_ticks: b.5,
        bpage_size: b.6,
        max_message_length: b.7,
        tick_nanos: b.8,
        mtu: b.9,
        ip_overhead: c.0,
        max_incoming_held: c.1,
        max_stalled_messages: c.2,
        max_peer_share_percent: c.3,
        max_outgoing_held: c.4,
        dedup_horizon_ticks: c.5,
        client_history_idle_ticks: c.6,
        client_id_base: c.7,
        srpt: c.8,
        poll_usecs: c.9,
        peer_gc_threshold: e.0,
        peer_idle_secs_min: e.1,
        peer_idle_secs_max: e.2,
        peer_net_max: e.3,
        max_client_histories: e.4,
        // Cutoffs fitted to whatever levels were drawn, or the defaults (which only
        // the default levels accept).
        unsched_cutoffs: if e.5 {
            fitted_cutoffs(b.0, b.1)
        } else {
            Config::default().unsched_cutoffs
        },
        ..Config::default()
    })
}

/// Cutoffs on the unscheduled levels `sched + 1 .. n` only (everything on the lowest,
/// shorter messages above), as `Config::validate` asks.
fn fitted_cutoffs(n: u8, sched: u8) -> [u32; 8] {
    let mut c = [0; 8];
    let levels = (sched as usize + 1)..(n as usize).min(8);
    for (k, i) in levels.enumerate() {
        c[i] = u32::MAX >> (4 * k);
    }
    c
}

/// Run `from`'s timer and hand what it sends to `to`.
fn carry(now: Time, from: &mut Endpoint, to: &mut Endpoint, ip: IpAddr, buf: &mut [u8]) {
    from.handle_timeout(now);
    while let Some(t) = from.poll_transmit(now, buf) {
        to.handle_datagram(now, ip, &buf[..t.len]);
    }
}

/// Two endpoints with `config` carry one RPC each way and run their timers a while.
fn exercise(config: Config) {
    let (a, b) = (
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
    );
    let mut client = Endpoint::new(config.clone()).expect("validated");
    let mut server = Endpoint::new(config).expect("validated");
    let cport = client.bind(0).unwrap();
    server.bind(99).unwrap();
    let len = client.config().max_message_length.min(3_000) as usize;
    let _ = client.send_request(
        Time::ZERO,
        cport,
        SocketAddr::new(b, 99),
        vec![1; len],
        0,
        false,
    );
    let mut buf = vec![0u8; client.max_packet_len()];
    let mut now = Time::ZERO;
    for _ in 0..50 {
        now = now.plus_nanos(200_000);
        carry(now, &mut client, &mut server, a, &mut buf);
        carry(now, &mut server, &mut client, b, &mut buf);
        while let Some(ev) = server.poll_event() {
            if let Event::Request {
                port,
                id,
                peer,
                data,
            } = ev
            {
                server.release(data);
                let _ = server.reply(now, port, peer, id, vec![2; len]);
            }
        }
        while let Some(ev) = client.poll_event() {
            if let Event::Response { data, .. } = ev {
                client.release(data);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    #[test]
    fn any_config_is_refused_or_runs(config in config()) {
        if config.validate().is_ok() {
            exercise(config);
        } else {
            prop_assert!(Endpoint::new(config).is_err());
        }
    }
}

/// A timeout shorter than any round trip is refused: with `tick_nanos = 1` every RPC
/// timed out after 100 ns, with no error to say why.
#[test]
fn a_timeout_under_a_millisecond_is_refused() {
    let short = Config {
        tick_nanos: 1,
        ..Config::default()
    };
    let e = short.validate().unwrap_err().to_string();
    assert!(e.contains("timeout_ticks x tick_nanos"), "{e}");
    let ms = Config {
        tick_nanos: 10_000,
        ..Config::default()
    };
    assert!(ms.validate().is_ok(), "100 ticks of 10 us: 1 ms");
}

/// A client history dropped before the dedup horizon forgets requests whose late
/// duplicates can still arrive: with `client_history_idle_ticks` 0 or 20 (under the
/// horizon of 1,000), a duplicate of an executed, acknowledged request that came 40 ms
/// later ran a second time.
#[test]
fn a_client_history_kept_shorter_than_the_dedup_horizon_is_refused() {
    for idle in [0, 20, 999] {
        let short = Config {
            client_history_idle_ticks: idle,
            ..Config::default()
        };
        let e = short.validate().unwrap_err().to_string();
        assert!(e.contains("client_history_idle_ticks"), "{idle}: {e}");
    }
    let equal = Config {
        client_history_idle_ticks: Config::default().dedup_horizon_ticks,
        ..Config::default()
    };
    assert!(equal.validate().is_ok());
}

/// Peers send unscheduled bytes by our cutoffs: none may sit on a level that is not in
/// use or that granted bytes use, and the unscheduled levels need at least one.
#[test]
fn cutoffs_must_fit_the_levels() {
    let with = |n: u8, sched: u8, cutoffs: [u32; 8]| Config {
        num_priorities: n,
        max_sched_prio: sched,
        unsched_cutoffs: cutoffs,
        ..Config::default()
    };
    let refused = |c: Config, says: &str| {
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(says), "{says}: {e}");
    };
    let d = Config::default().unsched_cutoffs;
    // All zero: every unscheduled byte at priority 0.
    refused(with(8, 3, [0; 8]), "no messages");
    // The defaults' 1,000,000 at 4, with 6 scheduled levels.
    refused(
        with(8, 5, d),
        "unsched_cutoffs[4] is 1000000, but level 4 is for granted",
    );
    // The defaults' 2,800 and 200 at 6 and 7, with 6 levels in use.
    refused(
        with(6, 3, d),
        "unsched_cutoffs[6] is 2800, but only levels 0..=5",
    );
    // Fitted, they pass; and with one level, no cutoffs at all.
    with(8, 5, [0, 0, 0, 0, 0, 0, 1_000_000, 200])
        .validate()
        .unwrap();
    with(6, 3, [0, 0, 0, 0, 1_000_000, 2_800, 0, 0])
        .validate()
        .unwrap();
    with(1, 0, [0; 8]).validate().unwrap();
    // Slot 0 means nothing (it travels as 0), so it may hold anything.
    with(8, 3, [7, 0, 0, 0, 1_000_000, 15_000, 2_800, 200])
        .validate()
        .unwrap();
    assert_eq!(
        fitted_cutoffs(8, 3),
        [
            0,
            0,
            0,
            0,
            u32::MAX,
            u32::MAX >> 4,
            u32::MAX >> 8,
            u32::MAX >> 12
        ]
    );
}

/// Cutoff version 0 is what a peer echoes before it has heard any CUTOFFS, so a server
/// with version 0 never sent its cutoffs to anyone.
#[test]
fn cutoff_version_0_is_refused() {
    let zero = Config {
        cutoff_version: 0,
        ..Config::default()
    };
    let e = zero.validate().unwrap_err().to_string();
    assert!(e.contains("cutoff_version"), "{e}");
}
