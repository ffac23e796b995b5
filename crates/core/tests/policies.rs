//! Script tests for the engine settings that follow the SIGCOMM paper's simulator where it
//! differs from the Linux module: unscheduled priorities from the bytes remaining
//! (`unsched_prio_by_remaining`) and the tail of a message granted at an unscheduled
//! priority (`grant_tail_bytes`), and the order one-packet messages leave in
//! (`short_messages_by_priority`, `short_messages_srpt`). Off by default; these show what
//! each does when on.

mod common;

use common::*;
use homa_core::{Config, Time};
use homa_wire::PacketType;
use std::net::SocketAddr;

const SERVER_PORT: u16 = 99;
const CLIENT_PORT: u16 = 40_000;
/// The module's default cutoffs: up to 200 bytes at 7, 2,800 at 6, 15,000 at 5.
const CUTOFFS: [u32; 8] = [0, 0, 0, 0, 1_000_000, 15_000, 2_800, 200];

/// A client under `config` with one request sent (at time 0, 10 bytes) to a server
/// whose `cutoffs` it has learned (a CUTOFFS comes for a peer we have an RPC with):
/// the script, the client's port and the server's address.
fn client_knowing(config: Config, cutoffs_: [u32; 8]) -> (Script, u16, SocketAddr) {
    let mut s = Script::new(config);
    let cport = s.ep.bind(0).unwrap();
    let srv = addr(1, SERVER_PORT);
    let first =
        s.ep.send_request(Time::ZERO, cport, srv, message(10, 0), 0, false)
            .unwrap();
    s.expect_out(Time::ZERO);
    s.feed(
        us(1),
        ip(1),
        cutoffs(common(SERVER_PORT, cport, first.0 | 1), cutoffs_, 1),
        &[],
    );
    (s, cport, srv)
}

/// Priorities of the unscheduled packets of a 4,000-byte request (three packets, the
/// last 1,168 bytes), its server's cutoffs known.
fn unscheduled_priorities(by_remaining: bool) -> Vec<(u32, u8)> {
    let (mut s, cport, srv) = client_knowing(
        Config {
            unsched_prio_by_remaining: by_remaining,
            ..Config::default()
        },
        CUTOFFS,
    );
    s.ep.send_request(us(2), cport, srv, message(4_000, 1), 1, false)
        .unwrap();
    s.expect_out(us(2))
        .iter()
        .map(|o| (o.data().offset, o.priority))
        .collect()
}

#[test]
fn unscheduled_priorities_by_length_or_by_what_remains() {
    // By length: every packet of a 4,000-byte message at 5 (up to 15,000).
    assert_eq!(
        unscheduled_priorities(false),
        [(0, 5), (1416, 5), (2832, 5)]
    );
    // By what remains from each packet on: 4,000 at 5, then 2,584 and 1,168 at 6.
    assert_eq!(unscheduled_priorities(true), [(0, 5), (1416, 6), (2832, 6)]);
}

/// GRANTs (offset, priority) a server sends for a 30,000-byte request whose packets
/// arrive one by one, with two packets unscheduled and `tail` bytes of boost.
fn grants(tail: u32) -> Vec<(u32, u8)> {
    let mut s = Script::new(Config {
        unsched_bytes: 2 * 1416,
        window: 2 * 1416,
        grant_tail_bytes: tail,
        ..Config::default()
    });
    s.ep.bind(SERVER_PORT).unwrap();
    let len = 30_000u32;
    let msg = message(len as usize, 3);
    let c = common(CLIENT_PORT, SERVER_PORT, 2);
    let seg = s.seg();
    let mut got = Vec::new();
    let mut offset = 0;
    let mut t = 0;
    while offset < len {
        let end = (offset + seg).min(len);
        t += 1;
        s.feed(
            us(t),
            ip(2),
            data(c, len, offset, 2 * seg),
            &msg[offset as usize..end as usize],
        );
        for o in s.expect_out(us(t)) {
            if o.ty() == PacketType::Grant {
                got.push((o.grant().offset, o.grant().priority));
            }
        }
        offset = end;
    }
    assert!(matches!(s.events()[..], [homa_core::Event::Request { .. }]));
    got
}

#[test]
fn the_tail_of_a_message_is_granted_at_the_priority_of_what_is_left() {
    // Off: every GRANT at the one scheduled level in use (0).
    let plain = grants(0);
    assert!(
        !plain.is_empty() && plain.iter().all(|&(_, p)| p == 0),
        "{plain:?}"
    );
    // With 10,000 bytes of tail: GRANTs made while 10,000 bytes or more are left keep 0;
    // after that, 15,000 and less left means 5, 2,800 and less 6.
    let boosted = grants(10_000);
    assert_eq!(boosted.len(), plain.len());
    for (&(offset, p), &(o2, _)) in boosted.iter().zip(&plain) {
        assert_eq!(offset, o2, "the same offsets: only priorities change");
        let before = offset.saturating_sub(1416); // (each GRANT adds one packet)
        let left = 30_000 - before;
        let want = if left >= 10_000 {
            0
        } else if left > 2_800 {
            5
        } else {
            6
        };
        assert_eq!(
            p, want,
            "GRANT to {offset} ({left} left before it): {boosted:?}"
        );
    }
    assert!(boosted.iter().any(|&(_, p)| p == 5) && boosted.iter().any(|&(_, p)| p == 6));
}

#[test]
fn a_receiver_learns_its_cutoffs_from_what_it_receives_and_announces_them() {
    let mut s = Script::new(Config {
        learn_cutoffs_ticks: 1,
        ..Config::default()
    });
    // The top level (7) takes the 5,000-byte requests and all shorter; the three other
    // unscheduled levels would repeat that cutoff, so one more level takes everything up
    // to the longest message.
    let id = learn_from_two_lengths(&mut s);
    assert_eq!(
        s.config().unsched_cutoffs,
        [0, 0, 0, 0, 0, 0, 1_000_000, 5_000]
    );
    assert_eq!(s.config().cutoff_version, 2);
    // A sender still on version 1 is told.
    let c = common(CLIENT_PORT, SERVER_PORT, id);
    s.feed(ms(2), ip(2), data(c, 10, 0, 10), &message(10, 1));
    let outs = s.expect_out(ms(2));
    let announced: Vec<_> = outs
        .iter()
        .filter(|o| o.ty() == PacketType::Cutoffs)
        .collect();
    assert_eq!(announced.len(), 1, "{:#?}", briefs(&outs));
    let k = announced[0].cutoffs();
    assert_eq!(k.cutoff_version, 2);
    assert_eq!(k.unsched_cutoffs, [0, 0, 0, 0, 0, 0, 1_000_000, 5_000]);
    // The same traffic again changes nothing: no new version.
    s.tick(ms(5));
    assert_eq!(s.ep.metrics().cutoff_updates, 1);
}

/// Feeds `s`, a server learning its cutoffs every tick, 300 requests of 100 bytes and
/// 300 of 5,000, all unscheduled (by wire bytes the 5,000-byte ones are 96% of the
/// unscheduled bytes), then ticks once so that it learns. Returns the next free id.
fn learn_from_two_lengths(s: &mut Script) -> u64 {
    s.ep.bind(SERVER_PORT).unwrap();
    let mut id = 2;
    for len in [100usize, 5_000] {
        for _ in 0..300 {
            let c = common(CLIENT_PORT, SERVER_PORT, id);
            let msg = message(len, id as u8);
            let offs = offsets(s.seg(), 0, len as u32);
            feed_segments(s, us(1), ip(2), c, &msg, len as u32, offs);
            id += 2;
        }
    }
    assert_eq!(s.events().len(), 600);
    s.expect_out(us(1));
    s.tick(ms(2)); // (the first tick is 1 ms after the first packet)
    assert_eq!(s.ep.metrics().cutoff_updates, 1);
    id
}

#[test]
fn learned_cutoffs_stay_on_the_levels_in_use() {
    // 4 levels, 2 of them unscheduled: what was learned goes on 3 and 2, not 7 and 6
    // (where peers would send at a level this host does not use).
    let mut s = Script::new(Config {
        learn_cutoffs_ticks: 1,
        num_priorities: 4,
        max_sched_prio: 1,
        unsched_cutoffs: [0, 0, 1_000_000, 200, 0, 0, 0, 0],
        ..Config::default()
    });
    learn_from_two_lengths(&mut s);
    assert_eq!(
        s.config().unsched_cutoffs,
        [0, 0, 1_000_000, 5_000, 0, 0, 0, 0]
    );
    s.config().validate().unwrap();
}

/// The order in which requests of `lengths` leave a client under `config`, sent while
/// the pacer holds them back (the NIC is busy with a first message), with the server's
/// cutoffs [0, 0, 0, 0, 1,000,000, 1,200, 500, 100]: 1,400 bytes go at priority 4, 1,000
/// at 5, 200-500 at 6, 100 at 7.
fn departure_order(config: Config, lengths: &[usize]) -> Vec<u32> {
    const MINE: [u32; 8] = [0, 0, 0, 0, 1_000_000, 1_200, 500, 100];
    let config = Config {
        defer_min_bytes: 0,
        max_nic_est_backlog_usecs: 0,
        link_mbps: 1_000,
        ..config
    };
    let (mut s, cport, srv) = client_knowing(config, MINE);
    for &len in lengths {
        let msg = message(len, 1);
        s.ep.send_request(us(1), cport, srv, msg, 0, false).unwrap();
    }
    let outs = s.tick(ms(1));
    outs.iter().map(|o| o.data().message_length).collect()
}

#[test]
fn one_packet_messages_can_leave_highest_priority_first() {
    let order = |by_priority: bool| {
        let c = Config {
            short_messages_by_priority: by_priority,
            ..Config::default()
        };
        departure_order(c, &[1_400, 1_000, 100])
    };
    assert_eq!(order(false), [1_400, 1_000, 100]);
    assert_eq!(order(true), [100, 1_000, 1_400]);
}

#[test]
fn one_packet_messages_can_take_their_place_in_srpt_order() {
    // Behind a 3,000-byte request (three packets): one-packet requests of 300, 200, 250
    // (all priority 6) and 1,400 bytes (priority 4). By priority, the three of level 6
    // leave in the order sent; in SRPT order every message goes by its bytes left,
    // one-packet or not.
    let order = |srpt: bool| {
        let c = Config {
            short_messages_by_priority: true,
            short_messages_srpt: srpt,
            ..Config::default()
        };
        departure_order(c, &[3_000, 300, 200, 250, 1_400])
    };
    assert_eq!(order(false), [300, 200, 250, 1_400, 3_000, 3_000, 3_000]);
    assert_eq!(order(true), [200, 250, 300, 1_400, 3_000, 3_000, 3_000]);
}
