//! Script tests for one-way messages, this implementation's extension (docs/PROTOCOL.md,
//! "One-way messages"): "packet in at time t -> exactly these packets out", as in
//! `scripts.rs`. The sender asks the receiving port first (a CUTOFFS packet with a mark in
//! slot 0), sends nothing of the extension before it accepts, flags its DATA, and
//! completes when acknowledged; the receiver answers, delivers, and acknowledges in
//! batches, on its own one-way DATA, or again when asked.

mod common;

use common::*;
use homa_core::{Config, DropReason, Event, RpcError, RpcId, Time};
use homa_wire::{AckEntry, Body, Common, DataFlags, OneWayMark, PacketType, DATA_FLAGS_AT};
use std::net::SocketAddr;

const SERVER_PORT: u16 = 99;
const CLIENT_PORT: u16 = 40_000;
/// What the Linux module puts in slot 0 of every CUTOFFS it sends.
const MODULE_SLOT0: u32 = i32::MAX as u32;

/// Our cutoffs as they travel, with `mark` in slot 0.
fn marked(mark: OneWayMark) -> [u32; 8] {
    let mut c = Config::default().unsched_cutoffs;
    c[0] = mark.to_slot();
    c
}

/// The endpoint under test as a client with an automatic port.
fn client() -> (Script, u16) {
    let mut s = Script::new(Config::default());
    let port = s.ep.bind(0).expect("auto port");
    (s, port)
}

/// The endpoint under test as a server on port 99 that takes one-way messages if `takes`.
fn server(takes: bool) -> Script {
    let mut s = Script::new(Config::default());
    s.ep.bind(SERVER_PORT).unwrap();
    assert!(s.ep.set_one_way(SERVER_PORT, takes));
    assert_eq!(s.ep.takes_one_way(SERVER_PORT), takes);
    s
}

fn srv() -> SocketAddr {
    addr(1, SERVER_PORT)
}

/// The scripted server's answer `mark` to client port `cport` about message `id`.
fn answer(s: &mut Script, now: Time, cport: u16, id: RpcId, mark: OneWayMark) {
    let c = common(SERVER_PORT, cport, id.0 | 1);
    s.feed(now, ip(1), cutoffs(c, marked(mark), 1), &[]);
}

/// The bytes of one-way DATA (a whole short message `msg`) from the scripted client
/// `10.0.0.n:40000`, message id `id`, with `flags` and piggybacked `ack`.
fn one_way_data(id: u64, msg: &[u8], flags: DataFlags, ack: Option<AckEntry>) -> Vec<u8> {
    let mut repr = data(
        common(CLIENT_PORT, SERVER_PORT, id),
        msg.len() as u32,
        0,
        msg.len() as u32,
    );
    if let Body::Data(d) = &mut repr.body {
        d.ack = ack;
    }
    let mut bytes = repr.to_vec(msg).unwrap();
    flags.write(&mut bytes).unwrap();
    bytes
}

fn flags_of(out: &Out) -> u8 {
    out.bytes[DATA_FLAGS_AT]
}

/// A client whose port has accepted: message `id` sent and its DATA drained.
fn accepted_client(msg: &[u8]) -> (Script, u16, RpcId) {
    let (mut s, cport) = client();
    let id =
        s.ep.send_message(Time::ZERO, cport, srv(), msg.to_vec(), 7, false)
            .unwrap();
    s.expect_out(Time::ZERO);
    answer(&mut s, us(5), cport, id, OneWayMark::Accept);
    let outs = s.expect_out(us(5));
    assert_eq!(of(&outs, PacketType::Data).len(), 1, "{:#?}", briefs(&outs));
    (s, cport, id)
}

fn of(outs: &[Out], ty: PacketType) -> Vec<Out> {
    outs.iter().filter(|o| o.ty() == ty).cloned().collect()
}

// ====================================================================== the sender

#[test]
fn the_first_message_asks_the_port_and_waits_then_goes_flagged() {
    let (mut s, cport) = client();
    let msg = message(300, 1);
    let id =
        s.ep.send_message(Time::ZERO, cport, srv(), msg.clone(), 7, false)
            .unwrap();
    assert_eq!(id.0 & 1, 0, "a client id");
    // Only the question: a CUTOFFS with our true cutoffs and version, the mark in slot 0.
    let outs = s.expect_out(Time::ZERO);
    assert_eq!(outs.len(), 1, "{:#?}", briefs(&outs));
    let q = &outs[0];
    assert_eq!(
        (q.ty(), q.dest, q.repr.common.sport),
        (PacketType::Cutoffs, srv(), cport)
    );
    assert_eq!(q.id(), id.0);
    assert_eq!(q.cutoffs().unsched_cutoffs, marked(OneWayMark::Query));
    assert_eq!(q.cutoffs().cutoff_version, 1);
    // A second message waits for the same answer: no second question.
    let id2 =
        s.ep.send_message(us(1), cport, srv(), message(50, 2), 8, false)
            .unwrap();
    s.expect_nothing(us(1));
    // The port accepts, with its own cutoffs: both go, flagged, at the priority those
    // cutoffs give (300 bytes: priority 6 under [.., 15000, 2800, 200]).
    answer(&mut s, us(5), cport, id, OneWayMark::Accept);
    let outs = s.expect_out(us(5));
    let data = of(&outs, PacketType::Data);
    assert_eq!(outs.len(), 2, "{:#?}", briefs(&outs));
    assert_eq!(data.iter().map(Out::id).collect::<Vec<_>>(), [id.0, id2.0]);
    for d in &data {
        assert_eq!(flags_of(d), DataFlags::ONE_WAY.bits(), "{}", d.brief());
    }
    assert_eq!(data[0].payload, msg);
    assert_eq!(data[0].priority, 6);
    assert_eq!(data[1].priority, 7);
    // From now on a message to that port goes at once.
    let id3 =
        s.ep.send_message(us(6), cport, srv(), message(10, 3), 9, false)
            .unwrap();
    let outs = s.expect_out(us(6));
    assert_eq!(outs.len(), 1);
    assert_eq!((outs[0].ty(), outs[0].id()), (PacketType::Data, id3.0));
    assert_eq!(flags_of(&outs[0]), DataFlags::ONE_WAY.bits());
}

#[test]
fn a_request_from_the_same_socket_carries_no_flag() {
    let (mut s, cport, _) = accepted_client(&message(20, 1));
    s.ep.send_request(us(10), cport, srv(), message(20, 2), 1, false)
        .unwrap();
    let outs = s.expect_out(us(10));
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].ty(), PacketType::Data);
    assert_eq!(flags_of(&outs[0]), 0, "the module's bytes, pad included");
}

#[test]
fn an_ack_completes_the_message_and_frees_it() {
    let (mut s, cport, id) = accepted_client(&message(100, 1));
    assert_eq!(s.ep.live_rpcs(), 1);
    // The receiver's ACK: its sender_id is ours | 1, its sport the receiving port.
    let c = common(SERVER_PORT, cport, id.0 | 1);
    s.feed(us(20), ip(1), ack(c, &[]), &[]);
    let evs = s.events();
    assert_eq!(
        evs,
        [Event::Delivered {
            port: cport,
            id,
            cookie: 7,
            peer: srv(),
            private: false
        }]
    );
    assert_eq!(s.ep.live_rpcs(), 0);
    assert_eq!(s.ep.metrics().one_way_acked, 1);
    // A second copy changes nothing.
    s.feed(us(21), ip(1), ack(c, &[]), &[]);
    assert!(s.events().is_empty());
    s.expect_nothing(us(21));
}

#[test]
fn acks_for_other_ports_or_for_requests_complete_nothing() {
    let (mut s, cport, id) = accepted_client(&message(100, 1));
    let rid =
        s.ep.send_request(us(10), cport, srv(), message(10, 2), 1, false)
            .unwrap();
    s.expect_out(us(10));
    // From another port of the server, and from another host: not ours.
    s.feed(us(20), ip(1), ack(common(98, cport, id.0 | 1), &[]), &[]);
    s.feed(
        us(20),
        ip(2),
        ack(common(SERVER_PORT, cport, id.0 | 1), &[]),
        &[],
    );
    // Naming the request: requests complete with a response, never an ack.
    s.feed(
        us(20),
        ip(1),
        ack(common(SERVER_PORT, cport, rid.0 | 1), &[]),
        &[],
    );
    assert!(s.events().is_empty());
    assert_eq!(s.ep.live_rpcs(), 2);
}

#[test]
fn one_ack_packet_completes_up_to_six_messages() {
    let (mut s, cport, first) = accepted_client(&message(10, 0));
    let ids: Vec<RpcId> = (1..6u8)
        .map(|i| {
            s.ep.send_message(us(10), cport, srv(), message(10, i), i as u64, false)
                .unwrap()
        })
        .collect();
    s.expect_out(us(10));
    let rest: Vec<AckEntry> = ids
        .iter()
        .map(|id| AckEntry {
            client_id: id.0,
            server_port: SERVER_PORT,
        })
        .collect();
    s.feed(
        us(20),
        ip(1),
        ack(common(SERVER_PORT, cport, first.0 | 1), &rest),
        &[],
    );
    let done: Vec<u64> = s
        .events()
        .into_iter()
        .map(|e| match e {
            Event::Delivered { cookie, .. } => cookie,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(done, [7, 1, 2, 3, 4, 5]);
    assert_eq!(s.ep.live_rpcs(), 0);
}

#[test]
fn a_refusal_fails_the_waiting_messages_and_sends_nothing() {
    // A port that does not take them refuses; a port with no socket says so, and the
    // messages fail as a request to it would.
    for (mark, why) in [
        (OneWayMark::Refuse, RpcError::NotAccepted),
        (OneWayMark::NoSocket, RpcError::NoSuchSocket),
    ] {
        let (mut s, cport) = client();
        let a =
            s.ep.send_message(Time::ZERO, cport, srv(), message(10, 1), 1, false)
                .unwrap();
        let b =
            s.ep.send_message(Time::ZERO, cport, srv(), message(10, 2), 2, false)
                .unwrap();
        s.expect_out(Time::ZERO);
        answer(&mut s, us(5), cport, a, mark);
        let failed: Vec<(RpcId, RpcError)> = s
            .events()
            .into_iter()
            .map(|e| match e {
                Event::Failed { id, error, .. } => (id, error),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(failed, [(a, why), (b, why)]);
        s.expect_nothing(us(5));
        assert_eq!(s.ep.live_rpcs(), 0);
        // The next message asks again (the port may take them by then).
        s.ep.send_message(us(6), cport, srv(), message(10, 3), 3, false)
            .unwrap();
        let outs = s.expect_out(us(6));
        assert_eq!(outs.len(), 1);
        assert_eq!(
            outs[0].cutoffs().unsched_cutoffs[0],
            OneWayMark::Query.to_slot()
        );
    }
}

#[test]
fn a_refusal_after_acceptance_fails_the_messages_on_their_way() {
    let (mut s, cport, id) = accepted_client(&message(100, 1));
    // The receiver turned one-way messages off and refuses the DATA.
    answer(&mut s, us(20), cport, id, OneWayMark::Refuse);
    let evs = s.events();
    assert!(
        matches!(
            evs[..],
            [Event::Failed {
                error: RpcError::NotAccepted,
                ..
            }]
        ),
        "{evs:?}"
    );
    assert_eq!(s.ep.live_rpcs(), 0);
}

#[test]
fn unsolicited_answers_change_nothing() {
    let (mut s, cport) = client();
    // An accept nobody asked for does not make us send one-way DATA unasked...
    s.feed(
        Time::ZERO,
        ip(1),
        cutoffs(common(SERVER_PORT, cport, 3), marked(OneWayMark::Accept), 1),
        &[],
    );
    let id =
        s.ep.send_message(us(1), cport, srv(), message(10, 1), 1, false)
            .unwrap();
    let outs = s.expect_out(us(1));
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].ty(), PacketType::Cutoffs, "it still asks");
    // ... and the module's slot 0 is no answer.
    let c = common(SERVER_PORT, cport, id.0 | 1);
    let mut module = Config::default().unsched_cutoffs;
    module[0] = MODULE_SLOT0;
    s.feed(us(2), ip(1), cutoffs(c, module, 1), &[]);
    s.expect_nothing(us(2));
    assert!(s.events().is_empty());
}

/// A client (with a server port too) whose one-way message to `srv()` waits for the
/// answer to its question, asked at time 0.
fn client_asking() -> (Script, u16, RpcId) {
    let (mut s, cport) = client();
    s.ep.bind(SERVER_PORT).unwrap();
    let id =
        s.ep.send_message(Time::ZERO, cport, srv(), message(10, 1), 1, false)
            .unwrap();
    s.expect_out(Time::ZERO);
    (s, cport, id)
}

/// The scripted server's own traffic in tick `t - 1` (a request to our server port, just
/// before tick `t`), then the tick; returns what went out.
fn server_talks_then_tick(s: &mut Script, t: u64) -> Vec<Out> {
    let c = common(CLIENT_PORT, SERVER_PORT, 1_000 + 2 * t);
    s.feed(
        us(t * 1_000 - 1),
        ip(1),
        data(c, 10, 0, 10),
        &message(10, 9),
    );
    s.events();
    s.tick(ms(t))
}

#[test]
fn a_port_that_never_answers_is_asked_every_tick_then_given_up_on() {
    // A peer that talks (here: its own requests to another of our ports) but never
    // answers the question, like the Linux module: NotAccepted after timeout_ticks.
    let (mut s, cport, id) = client_asking();
    let timeout = s.config().timeout_ticks as u64;
    let mut questions = 0;
    for t in 1..=timeout + 1 {
        let outs = server_talks_then_tick(&mut s, t);
        questions += of(&outs, PacketType::Cutoffs)
            .iter()
            .filter(|o| {
                o.id() == id.0 && o.cutoffs().unsched_cutoffs[0] == OneWayMark::Query.to_slot()
            })
            .count();
        if s.ep.rpcs(cport).next().is_none() {
            break;
        }
    }
    assert!(questions as u64 >= timeout - 2, "asked {questions} times");
    let evs: Vec<Event> = s.events();
    assert!(
        evs.iter().any(|e| matches!(e, Event::Failed { id: got, error: RpcError::NotAccepted, .. } if *got == id)),
        "{evs:?}"
    );
}

#[test]
fn a_host_that_dies_soon_after_the_question_times_the_messages_out_not_refuses_them() {
    // Heard from after the question (its own requests), then never again: it died, and
    // its silence says so. Swarm cases 7303537875506236710 and 16508091999064752724
    // (host 0 killed 2-4 ms after the question): such messages failed NotAccepted at
    // timeout_ticks after the question, two ticks before the silence would have failed
    // them with Timeout.
    let (mut s, _, id) = client_asking();
    for t in 1..=2 {
        server_talks_then_tick(&mut s, t);
    }
    // (Last heard in tick 1.)
    let timeout = s.config().timeout_ticks as u64;
    s.tick(ms(timeout));
    assert!(
        s.events().is_empty(),
        "not given up on while it may be alive"
    );
    s.tick(ms(timeout + 1));
    let evs = s.events();
    assert!(
        matches!(evs[..], [Event::Failed { id: got, error: RpcError::Timeout, .. }] if got == id),
        "{evs:?}"
    );
}

#[test]
fn a_silent_host_times_the_waiting_messages_out() {
    let (mut s, cport) = client();
    let id =
        s.ep.send_message(Time::ZERO, cport, srv(), message(10, 1), 1, false)
            .unwrap();
    s.expect_out(Time::ZERO);
    let timeout = s.config().timeout_ticks as u64;
    s.tick(ms(timeout + 1));
    let evs = s.events();
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert!(
        matches!(evs[0], Event::Failed { id: got, error: RpcError::Timeout, .. } if got == id),
        "{evs:?}"
    );
    assert_eq!(s.ep.metrics().timeouts, 1, "counted as a timeout");
}

// ====================================================================== the receiver

#[test]
fn a_port_answers_the_question_as_it_is_set() {
    for takes in [true, false] {
        let mut s = server(takes);
        let c = common(CLIENT_PORT, SERVER_PORT, 6);
        s.feed(
            Time::ZERO,
            ip(2),
            cutoffs(c, marked(OneWayMark::Query), 1),
            &[],
        );
        let outs = s.expect_out(Time::ZERO);
        assert_eq!(outs.len(), 1, "{:#?}", briefs(&outs));
        let a = &outs[0];
        assert_eq!(
            (a.dest, a.repr.common.sport, a.id()),
            (addr(2, CLIENT_PORT), SERVER_PORT, 7)
        );
        let want = if takes {
            OneWayMark::Accept
        } else {
            OneWayMark::Refuse
        };
        assert_eq!(a.cutoffs().unsched_cutoffs, marked(want));
        // No state for the asker.
        assert_eq!(s.ep.live_rpcs(), 0);
    }
    // A port with no socket says so, with its own mark.
    let mut s = server(true);
    let c = common(CLIENT_PORT, 98, 6);
    s.feed(
        Time::ZERO,
        ip(2),
        cutoffs(c, marked(OneWayMark::Query), 1),
        &[],
    );
    let outs = s.expect_out(Time::ZERO);
    assert_eq!(
        outs[0].cutoffs().unsched_cutoffs,
        marked(OneWayMark::NoSocket)
    );
}

#[test]
fn a_message_is_delivered_once_and_acked_at_the_next_tick_at_the_lowest_priority() {
    let mut s = server(true);
    let msg = message(500, 4);
    let bytes = one_way_data(6, &msg, DataFlags::ONE_WAY, None);
    s.feed_bytes(us(10), ip(2), &bytes);
    let evs = s.events();
    assert_eq!(evs.len(), 1);
    match &evs[0] {
        Event::Message {
            port,
            id,
            peer,
            data,
        } => {
            assert_eq!(
                (*port, *id, *peer),
                (SERVER_PORT, RpcId(7), addr(2, CLIENT_PORT))
            );
            assert!(data.eq_bytes(&msg));
        }
        other => panic!("{other:?}"),
    }
    // No response, no state: only the ack is owed.
    s.expect_nothing(us(10));
    assert_eq!(s.ep.live_rpcs(), 0);
    assert_eq!(s.ep.metrics().one_way_delivered, 1);
    // A duplicate is not delivered again (the client's history remembers it).
    s.feed_bytes(us(11), ip(2), &bytes);
    assert!(s.events().is_empty());
    let outs = s.tick(us(1_010));
    assert_eq!(outs.len(), 1, "{:#?}", briefs(&outs));
    let a = &outs[0];
    assert_eq!(a.ty(), PacketType::Ack);
    assert_eq!(
        (a.dest, a.repr.common.sport, a.id(), a.priority),
        (addr(2, CLIENT_PORT), SERVER_PORT, 7, 0)
    );
    assert!(a.acks().is_empty());
    // Nothing more at later ticks.
    let outs = s.tick(ms(5));
    assert!(outs.is_empty(), "{:#?}", briefs(&outs));
}

#[test]
fn a_receive_batch_with_nothing_else_to_send_acks_at_its_end() {
    // A runtime brackets its receive batches: at a batch's end, with none of our data
    // waiting, the acks owed go at once (a sender waiting for one message's delivery
    // hears within a round trip, not at the next tick).
    let mut s = server(true);
    let bytes = one_way_data(6, &message(500, 4), DataFlags::ONE_WAY, None);
    s.ep.begin_batch();
    s.feed_bytes(us(10), ip(2), &bytes);
    s.expect_nothing(us(10)); // inside the batch: nothing yet
    s.ep.end_batch();
    let outs = s.expect_out(us(10));
    assert_eq!(outs.len(), 1, "{:#?}", briefs(&outs));
    assert_eq!((outs[0].ty(), outs[0].id()), (PacketType::Ack, 7));
    assert!(s.tick(ms(2)).is_empty(), "nothing left for the tick");
    // With data of ours waiting to go, they keep gathering until the tick.
    let mut s = server(true);
    s.ep.send_request(
        us(1),
        SERVER_PORT,
        addr(3, 5000),
        message(50_000, 1),
        0,
        false,
    )
    .unwrap();
    s.ep.begin_batch();
    s.feed_bytes(us(10), ip(2), &bytes);
    s.ep.end_batch();
    let outs = s.expect_out(us(10));
    assert!(
        outs.iter().all(|o| o.ty() == PacketType::Data),
        "{:#?}",
        briefs(&outs)
    );
    let outs = s.tick(us(1_010));
    assert!(
        outs.iter().any(|o| o.ty() == PacketType::Ack),
        "{:#?}",
        briefs(&outs)
    );
}

#[test]
fn one_way_data_for_a_port_with_no_socket_draws_the_no_socket_mark() {
    let mut s = server(true);
    let mut bytes = one_way_data(6, &message(20, 1), DataFlags::ONE_WAY, None);
    bytes[2..4].copy_from_slice(&(SERVER_PORT + 1).to_be_bytes());
    s.feed_bytes(us(10), ip(2), &bytes);
    assert!(s.events().is_empty());
    let outs = s.expect_out(us(10));
    assert_eq!(outs.len(), 1, "{:#?}", briefs(&outs));
    assert_eq!(
        outs[0].cutoffs().unsched_cutoffs,
        marked(OneWayMark::NoSocket)
    );
    assert_eq!(s.ep.metrics().dropped(DropReason::NoSocket), 1);
}

#[test]
fn six_messages_owed_go_in_one_ack_at_once() {
    let mut s = server(true);
    for i in 0..6u64 {
        let bytes = one_way_data(10 + 2 * i, &message(20, i as u8), DataFlags::ONE_WAY, None);
        s.feed_bytes(us(10 + i), ip(2), &bytes);
    }
    assert_eq!(s.events().len(), 6);
    let outs = s.expect_out(us(20));
    assert_eq!(outs.len(), 1, "{:#?}", briefs(&outs));
    assert_eq!(outs[0].id(), 11);
    let rest: Vec<u64> = outs[0].acks().iter().map(|a| a.client_id).collect();
    assert_eq!(rest, [12, 14, 16, 18, 20]);
    assert!(outs[0].acks().iter().all(|a| a.server_port == SERVER_PORT));
    assert!(s.tick(ms(2)).is_empty());
}

#[test]
fn a_port_that_does_not_take_them_refuses_the_data_and_delivers_nothing() {
    let mut s = server(false);
    let bytes = one_way_data(6, &message(20, 1), DataFlags::ONE_WAY, None);
    s.feed_bytes(us(10), ip(2), &bytes);
    assert!(s.events().is_empty());
    let outs = s.expect_out(us(10));
    assert_eq!(outs.len(), 1);
    assert_eq!(
        outs[0].cutoffs().unsched_cutoffs,
        marked(OneWayMark::Refuse)
    );
    assert_eq!(s.ep.metrics().dropped(DropReason::NotServer), 1);
    assert_eq!(s.ep.live_rpcs(), 0);
    // A request to that port is still a request.
    let c = common(CLIENT_PORT, SERVER_PORT, 8);
    s.feed(us(11), ip(2), data(c, 20, 0, 20), &message(20, 2));
    assert!(matches!(s.events()[..], [Event::Request { .. }]));
}

#[test]
fn a_request_to_a_one_way_port_is_a_request_and_the_flag_cannot_switch_an_rpc() {
    let mut s = server(true);
    // The first packet of a two-packet request, then a second one flagged one-way.
    let seg = s.seg();
    let msg = message(seg as usize + 10, 1);
    let c = common(CLIENT_PORT, SERVER_PORT, 6);
    s.feed(
        us(1),
        ip(2),
        data(c, msg.len() as u32, 0, msg.len() as u32),
        &msg[..seg as usize],
    );
    let mut second = data(c, msg.len() as u32, seg, msg.len() as u32)
        .to_vec(&msg[seg as usize..])
        .unwrap();
    DataFlags::ONE_WAY.write(&mut second).unwrap();
    s.feed_bytes(us(2), ip(2), &second);
    assert!(s.events().is_empty());
    assert_eq!(s.ep.metrics().dropped(DropReason::Inconsistent), 1);
    // The unflagged copy completes it as a request.
    s.feed(
        us(3),
        ip(2),
        data(c, msg.len() as u32, seg, msg.len() as u32),
        &msg[seg as usize..],
    );
    assert!(matches!(s.events()[..], [Event::Request { .. }]));
}

#[test]
fn a_lost_ack_is_sent_again_when_the_sender_asks() {
    let mut s = server(true);
    s.feed_bytes(
        us(10),
        ip(2),
        &one_way_data(6, &message(20, 1), DataFlags::ONE_WAY, None),
    );
    s.events();
    s.tick(us(1_010)); // the batched ack: lost
                       // The sender, silent for resend_ticks, asks for "everything": the ack again, at once,
                       // at the control priority.
    s.feed(
        ms(6),
        ip(2),
        resend_all(common(CLIENT_PORT, SERVER_PORT, 6)),
        &[],
    );
    let outs = s.expect_out(ms(6));
    assert_eq!(outs.len(), 1, "{:#?}", briefs(&outs));
    assert_eq!(
        (outs[0].ty(), outs[0].id(), outs[0].priority),
        (PacketType::Ack, 7, 7)
    );
    // A message it never took: RPC_UNKNOWN, so its sender sends it again.
    s.feed(
        ms(6),
        ip(2),
        resend_all(common(CLIENT_PORT, SERVER_PORT, 8)),
        &[],
    );
    let outs = s.expect_out(ms(6));
    assert_eq!(outs.len(), 1);
    assert_eq!(outs[0].ty(), PacketType::RpcUnknown);
}

#[test]
fn an_executed_request_is_never_acked_as_a_one_way_message() {
    // A client socket that never sent one-way messages: its RESEND for a request that
    // was executed and freed gets silence, as before (an ACK from the server side would
    // end the RPC at a Linux client).
    let mut s = server(true);
    let c = common(CLIENT_PORT, SERVER_PORT, 6);
    s.feed(us(1), ip(2), data(c, 10, 0, 10), &message(10, 1));
    let (port, id, peer) = match s.events().remove(0) {
        Event::Request { port, id, peer, .. } => (port, id, peer),
        other => panic!("{other:?}"),
    };
    assert!(s.ep.discard(port, peer, id));
    s.feed(ms(6), ip(2), resend_all(c), &[]);
    s.expect_nothing(ms(6));
}

#[test]
fn acks_ride_on_our_own_one_way_data_to_that_peer() {
    // Host 10.0.0.1 (the scripted peer) sent us a message; we owe it an ack. Before the
    // tick we send it a one-way message of our own (its port 99 accepted): the DATA
    // carries the ack, flagged, and no ACK packet follows.
    let mut s = server(true);
    let cport = s.ep.bind(0).unwrap();
    let bytes = one_way_data(6, &message(20, 1), DataFlags::ONE_WAY, None);
    s.feed_bytes(us(1), ip(1), &bytes);
    s.events();
    let id =
        s.ep.send_message(us(2), cport, srv(), message(30, 2), 1, false)
            .unwrap();
    s.expect_out(us(2));
    answer(&mut s, us(3), cport, id, OneWayMark::Accept);
    let outs = s.expect_out(us(3));
    assert_eq!(outs.len(), 1, "{:#?}", briefs(&outs));
    let d = &outs[0];
    assert_eq!(
        flags_of(d),
        DataFlags::ONE_WAY.with(DataFlags::ACK_ONE_WAY).bits()
    );
    assert_eq!(
        d.data().ack,
        Some(AckEntry {
            client_id: 6,
            server_port: SERVER_PORT
        })
    );
    let outs = s.tick(us(1_005));
    assert!(
        of(&outs, PacketType::Ack).is_empty(),
        "{:#?}",
        briefs(&outs)
    );
}

#[test]
fn a_flagged_piggybacked_ack_completes_our_message_and_frees_no_server_rpc() {
    // We sent a message to 10.0.0.1:99; that host's own one-way DATA to our port 99
    // carries the ack for it.
    let (mut s, cport, id) = accepted_client(&message(10, 1));
    s.ep.bind(SERVER_PORT).unwrap();
    s.ep.set_one_way(SERVER_PORT, true);
    let ack = AckEntry {
        client_id: id.0,
        server_port: SERVER_PORT,
    };
    let flags = DataFlags::ONE_WAY.with(DataFlags::ACK_ONE_WAY);
    let bytes = one_way_data(40, &message(10, 2), flags, Some(ack));
    s.feed_bytes(us(20), ip(1), &bytes);
    let evs = s.events();
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert!(matches!(evs[0], Event::Delivered { id: got, port, .. } if got == id && port == cport));
    assert!(matches!(evs[1], Event::Message { .. }));
}

#[test]
fn module_packets_never_look_like_the_extension() {
    // The module's CUTOFFS (slot 0 INT_MAX) updates the peer's cutoffs and asks nothing.
    let mut s = server(true);
    let mut module = [0, 0, 0, 0, 1_000_000, 15_000, 2_800, 200];
    module[0] = MODULE_SLOT0;
    s.feed(
        us(1),
        ip(2),
        cutoffs(common(CLIENT_PORT, SERVER_PORT, 6), module, 3),
        &[],
    );
    s.expect_nothing(us(1));
    // The module's DATA (pad zero) is a request even at a port that takes one-way
    // messages, and its ack field is an ordinary ack.
    let c: Common = common(CLIENT_PORT, SERVER_PORT, 8);
    s.feed(us(2), ip(2), data(c, 10, 0, 10), &message(10, 1));
    assert!(matches!(s.events()[..], [Event::Request { .. }]));
}

#[test]
fn a_peer_last_heard_long_ago_gets_its_full_time_to_answer() {
    // We talked to the peer at the start, then not for 300 ticks: a question now must
    // not count that silence against it.
    let (mut s, cport) = client();
    let rid =
        s.ep.send_request(Time::ZERO, cport, srv(), message(10, 1), 1, false)
            .unwrap();
    s.expect_out(Time::ZERO);
    let c = common(SERVER_PORT, cport, rid.0 | 1);
    s.feed(us(10), ip(1), data(c, 10, 0, 10), &message(10, 2));
    assert!(matches!(s.events()[..], [Event::Response { .. }]));
    s.tick(ms(300));
    let id =
        s.ep.send_message(ms(300), cport, srv(), message(10, 3), 2, false)
            .unwrap();
    s.expect_out(ms(300));
    let outs = s.tick(ms(305));
    assert!(s.events().is_empty(), "given up too early");
    let asked = of(&outs, PacketType::Cutoffs);
    assert!(
        asked.len() >= 4 && asked.iter().all(|o| o.id() == id.0),
        "{:#?}",
        briefs(&outs)
    );
    // Accepted late, it goes.
    answer(&mut s, ms(305), cport, id, OneWayMark::Accept);
    assert_eq!(of(&s.expect_out(ms(305)), PacketType::Data).len(), 1);
}

#[test]
fn asking_ahead_lets_the_first_message_go_at_once() {
    let (mut s, cport) = client();
    s.ep.ask_one_way(Time::ZERO, cport, srv()).unwrap();
    s.ep.ask_one_way(Time::ZERO, cport, srv()).unwrap(); // once is enough
    let outs = s.expect_out(Time::ZERO);
    assert_eq!(outs.len(), 1, "{:#?}", briefs(&outs));
    assert_eq!((outs[0].id(), outs[0].dest), (0, srv()));
    assert_eq!(outs[0].cutoffs().unsched_cutoffs, marked(OneWayMark::Query));
    answer(&mut s, us(5), cport, RpcId(0), OneWayMark::Accept);
    s.expect_nothing(us(5));
    let id =
        s.ep.send_message(us(6), cport, srv(), message(20, 1), 1, false)
            .unwrap();
    let outs = s.expect_out(us(6));
    assert_eq!(outs.len(), 1);
    assert_eq!((outs[0].ty(), outs[0].id()), (PacketType::Data, id.0));
    // Errors as for sends.
    assert!(s.ep.ask_one_way(us(7), 1234, srv()).is_err());
    assert!(s.ep.ask_one_way(us(7), cport, addr(1, 0)).is_err());
}

#[test]
fn a_question_nobody_waits_for_is_repeated_then_dropped_quietly() {
    let (mut s, cport) = client();
    s.ep.ask_one_way(Time::ZERO, cport, srv()).unwrap();
    s.expect_out(Time::ZERO);
    let outs = s.tick(ms(3));
    assert_eq!(
        of(&outs, PacketType::Cutoffs).len(),
        3,
        "{:#?}",
        briefs(&outs)
    );
    let timeout = s.config().timeout_ticks as u64;
    s.tick(ms(timeout + 2));
    assert!(s.events().is_empty());
    assert!(s.tick(ms(timeout + 10)).is_empty(), "it stopped asking");
    // A message now asks again.
    s.ep.send_message(ms(timeout + 10), cport, srv(), message(20, 1), 1, false)
        .unwrap();
    assert_eq!(s.expect_out(ms(timeout + 10)).len(), 1);
}

// ================================================= the peer table's bounds and shrinking

/// Host `k` of the address block `block` (IPv6, so that there can be many).
fn host(block: u128, k: u32) -> std::net::IpAddr {
    std::net::IpAddr::V6(std::net::Ipv6Addr::from(block << 112 | k as u128))
}

#[test]
fn a_peer_asked_keeps_its_place_when_the_peer_table_shrinks_around_it() {
    // Peers idle for 1 s are forgotten however few there are, and the table's memory is
    // given back as they go: the peers left move down into the free places, except those
    // the clock's one-way lists name (a peer moved from under a question was never asked
    // again, nor given up on: it was kept for ever).
    let config = Config {
        peer_gc_threshold: 1,
        peer_idle_secs_min: 1,
        peer_idle_secs_max: 1,
        ..Config::default()
    };
    let mut s = Script::new(config);
    let cport = s.ep.bind(0).unwrap();
    // 1,000 peers that hold nothing: a request to each, aborted at once.
    for k in 0..1_000 {
        let dest = SocketAddr::new(host(0xfe00, k), SERVER_PORT);
        let id =
            s.ep.send_request(Time::ZERO, cport, dest, vec![1; 10], 0, false)
                .unwrap();
        assert!(s.ep.abort(cport, id, false));
    }
    s.expect_out(Time::ZERO);
    s.tick(ms(960));
    // A question to one more host, which never answers, is out when the others are
    // forgotten (idle 1 s at the sweep of tick 1,008) and the table shrinks.
    let z = SocketAddr::new(host(0xfd00, 0), SERVER_PORT);
    s.ep.ask_one_way(ms(960), cport, z).unwrap();
    assert_eq!(s.expect_out(ms(960)).len(), 1);
    let outs = s.tick(ms(1_100));
    assert_eq!(s.ep.metrics().peers, 1, "only the host asked is left");
    // It is asked again at every tick until timeout_ticks after the question...
    let asked: Vec<Time> = outs
        .iter()
        .filter(|o| o.ty() == PacketType::Cutoffs && o.dest == z)
        .map(|o| o.at)
        .collect();
    let want: Vec<Time> = (961..1_060).map(ms).collect();
    assert_eq!(asked, want);
    // ...then given up on, and forgotten once idle in its turn; nothing is left, and
    // nothing needs the clock.
    s.tick(ms(3_000));
    assert_eq!(s.ep.metrics().peers, 0);
    assert_eq!(s.ep.poll_timeout(), None);
}

/// One-way messages of 100 bytes (id 1000) from `n` hosts of block 0xfd00, `from_k`
/// onward, one every 50 ns from `at`; returns the hosts whose messages were delivered.
fn one_way_from_many_sources(s: &mut Script, at: Time, from_k: u32, n: u32) -> Vec<SocketAddr> {
    let bytes = one_way_data(1_000, &message(100, 1), DataFlags::ONE_WAY, None);
    for k in from_k..from_k + n {
        let now = at.plus_nanos(50 * (k - from_k) as u64);
        s.feed_bytes(now, host(0xfd00, k), &bytes);
    }
    let mut delivered: Vec<SocketAddr> = s
        .events()
        .into_iter()
        .map(|e| match e {
            Event::Message { peer, data, .. } => {
                assert!(data.eq_bytes(&message(100, 1)));
                peer
            }
            other => panic!("{other:?}"),
        })
        .collect();
    delivered.sort();
    delivered
}

/// The destinations of the ACK packets among `outs`, sorted.
fn acked(outs: &[Out]) -> Vec<SocketAddr> {
    let mut to: Vec<SocketAddr> = of(outs, PacketType::Ack).iter().map(|o| o.dest).collect();
    to.sort();
    to
}

#[test]
fn one_way_messages_from_many_sources_make_at_most_peer_net_max_peers_and_are_all_acked() {
    let config = Config {
        peer_net_max: 2_000,
        ..Config::default()
    };
    let mut s = Script::new(config);
    s.ep.bind(SERVER_PORT).unwrap();
    assert!(s.ep.set_one_way(SERVER_PORT, true));
    // 10,000 sources within a tick: the first 2,000 make peers, each owed an ack until
    // the next tick (so not forgotten meanwhile); the rest are refused without state.
    let first = one_way_from_many_sources(&mut s, Time::ZERO, 0, 10_000);
    let m = s.ep.metrics();
    assert_eq!(
        (first.len(), m.peers, m.one_way_delivered),
        (2_000, 2_000, 2_000)
    );
    assert_eq!(m.dropped(DropReason::NoBuffer), 8_000);
    assert_eq!(
        s.ep.live_rpcs(),
        0,
        "a one-way message leaves no RPC once delivered"
    );
    // At the next tick every one of them is acknowledged.
    assert_eq!(acked(&s.tick(ms(2))), first);
    // Those peers now hold nothing: new sources take their places at once, up to the
    // same bound, and are acknowledged in turn.
    let second = one_way_from_many_sources(&mut s, ms(2), 10_000, 5_000);
    let m = s.ep.metrics();
    assert_eq!((second.len(), m.peers), (2_000, 2_000));
    assert_eq!(m.dropped(DropReason::NoBuffer), 8_000 + 3_000);
    assert!(second.iter().all(|a| !first.contains(a)));
    assert_eq!(acked(&s.tick(ms(4))), second);
    // Idle: their histories go after client_history_idle_ticks, the peers after
    // peer_idle_secs_max down to below peer_gc_threshold, and the clock stops.
    s.tick(Time::from_millis(200_000));
    let m = s.ep.metrics();
    assert_eq!((m.client_histories, m.peers), (0, 63));
    assert_eq!(s.ep.poll_timeout(), None);
}

#[test]
fn closing_a_port_sends_the_acks_it_owes_for_the_messages_it_took() {
    // Three messages taken from two senders, then the port closes before the tick that
    // would acknowledge them: nothing would ever send those acks (a runtime stops ticking
    // a closed socket), and each sender would hold its message until it gave up, not
    // knowing it arrived. So the close sends them, each message acknowledged once.
    let mut s = server(true);
    s.ep.bind(SERVER_PORT + 1).unwrap();
    assert!(s.ep.set_one_way(SERVER_PORT + 1, true));
    for (i, from) in [2u8, 2, 3].into_iter().enumerate() {
        let bytes = one_way_data(
            20 + 2 * i as u64,
            &message(30, i as u8),
            DataFlags::ONE_WAY,
            None,
        );
        s.feed_bytes(us(10 + i as u64), ip(from), &bytes);
    }
    // One taken on the other port, whose ack stays owed until the tick.
    let mut other = data(common(CLIENT_PORT, SERVER_PORT + 1, 40), 30, 0, 30);
    if let Body::Data(d) = &mut other.body {
        d.ack = None;
    }
    let mut bytes = other.to_vec(&message(30, 9)).unwrap();
    DataFlags::ONE_WAY.write(&mut bytes).unwrap();
    s.feed_bytes(us(14), ip(2), &bytes);
    assert_eq!(s.events().len(), 4);
    s.expect_nothing(us(15));

    s.ep.close(SERVER_PORT);
    let outs = s.expect_out(us(20));
    let mut acked: Vec<(SocketAddr, u64)> = Vec::new();
    for o in &outs {
        assert_eq!(o.ty(), PacketType::Ack, "{}", o.brief());
        assert_eq!(o.repr.common.sport, SERVER_PORT, "{}", o.brief());
        // (The header names the message by the receiver's id, the client's id | 1.)
        acked.push((o.dest, o.id() & !1));
        acked.extend(o.acks().iter().map(|a| {
            assert_eq!(a.server_port, SERVER_PORT);
            (o.dest, a.client_id)
        }));
    }
    acked.sort_unstable();
    assert_eq!(
        acked,
        [
            (addr(2, CLIENT_PORT), 20),
            (addr(2, CLIENT_PORT), 22),
            (addr(3, CLIENT_PORT), 24)
        ],
        "{:#?}",
        briefs(&outs)
    );
    // The other port's ack goes at the tick, and nothing is acknowledged twice.
    let outs = s.tick(ms(2));
    assert_eq!(outs.len(), 1, "{:#?}", briefs(&outs));
    assert_eq!(
        (outs[0].dest, outs[0].repr.common.sport, outs[0].id()),
        (addr(2, CLIENT_PORT), SERVER_PORT + 1, 41)
    );
    assert!(outs[0].acks().is_empty());
    assert!(s.tick(ms(4)).is_empty());
}
