//! Tests of the shared socket state that need its private parts (a sibling file, not
//! an inline module, so that the `inner` files themselves do not reach up to `bind` for sockets).

use super::drive::{put_off_tick, BG_IDLE_CHECK_NANOS, TICK_MAX_DEFER_NANOS, TICK_RECHECK_NANOS};
use super::rx::{worth_sharing, Spares, MAX_SPARE_BYTES};
use super::tx::group;
use super::*;
use crate::payload::Payload;
use crate::sys::{TxPacket, RX_SLOT};
use bytes::Bytes;
use homa_core::RpcError;

/// A message keeps part of what slot 0 received (as `ingest_batch` shares a long
/// datagram), so the slot takes a spare; returns where the kept buffer starts.
fn keep_slot_0(rx: &mut RxBufs, kept: &mut Vec<Bytes>) -> *const u8 {
    rx.slots[0].extend_from_slice(&[7; 1500]);
    let shared = rx.share_slot(0);
    kept.push(shared.slice(100..1400));
    shared.as_ptr()
}

#[test]
fn receive_buffers_messages_let_go_are_reused_newest_first() {
    let mut rx = RxBufs::new(false);
    rx.ensure();
    let mut kept = Vec::new();
    let starts: Vec<*const u8> = (0..3).map(|_| keep_slot_0(&mut rx, &mut kept)).collect();
    // A fourth message takes the slot while the three are still held: a new buffer.
    let fourth = keep_slot_0(&mut rx, &mut kept);
    assert!(!starts.contains(&fourth));
    assert!(!starts.contains(&rx.slots[0].as_ptr()));
    // The first three messages let go (oldest first): the next slot is the buffer given
    // back last (the one most likely still cached), not the oldest.
    kept.drain(..3);
    keep_slot_0(&mut rx, &mut kept);
    assert_eq!(rx.slots[0].as_ptr(), starts[2]);
    assert_eq!(rx.slots[0].capacity(), RX_SLOT);
    assert!(rx.slots[0].is_empty());
    // The next replacement takes the next youngest.
    keep_slot_0(&mut rx, &mut kept);
    assert_eq!(rx.slots[0].as_ptr(), starts[1]);
}

#[test]
fn a_datagram_nothing_keeps_gives_its_buffer_straight_back() {
    let mut rx = RxBufs::new(false);
    rx.ensure();
    rx.slots[0].extend_from_slice(&[7; 1500]);
    let first = rx.slots[0].as_ptr();
    let shared = rx.share_slot(0);
    assert_eq!(shared.as_ptr(), first);
    drop(shared);
    assert_eq!(rx.spares.len(), 1);
    // The slot after next is that buffer again: no allocation per datagram.
    rx.share_slot(0);
    assert_eq!(rx.slots[0].as_ptr(), first);
}

#[test]
fn receive_buffers_cut_to_jumbo_frames_are_reused_after_whole_long_messages() {
    // 9,000-byte datagrams without GRO: slots cut to 9 KiB (a resize drops the spares of
    // the old size). Four 1 MB messages arriving at once hold 4 * 112 of them until
    // their application lets go.
    let mut rx = RxBufs::new(false);
    rx.slot_size = 9 * 1024;
    rx.spares = std::sync::Arc::new(Spares::new(rx.slot_size));
    rx.ensure();
    let mut kept = Vec::new();
    let held = 4 * 112;
    let starts: std::collections::HashSet<*const u8> =
        (0..held).map(|_| keep_slot_0(&mut rx, &mut kept)).collect();
    kept.clear();
    assert_eq!(rx.spares.len(), held);
    // The next messages are received into those buffers: none comes from the allocator.
    for k in 0..held {
        keep_slot_0(&mut rx, &mut kept);
        assert!(
            starts.contains(&rx.slots[0].as_ptr()),
            "replacement {k} of {held} was a new buffer"
        );
        assert_eq!(rx.slots[0].capacity(), rx.slot_size);
    }
    // What is kept for reuse stays bounded in bytes, whatever the slots' size.
    kept.clear();
    for _ in 0..2 * MAX_SPARE_BYTES / rx.slot_size {
        keep_slot_0(&mut rx, &mut kept);
    }
    kept.clear();
    assert!(rx.spares.len() * rx.slot_size <= MAX_SPARE_BYTES);
}

#[test]
fn long_datagrams_filling_their_slot_and_runs_of_packets_are_shared() {
    let slot = RX_SLOT;
    // A lone datagram: long, and at least half of its slot.
    assert!(worth_sharing(9000, 9 * 1024, 0));
    assert!(worth_sharing(40_000, slot, 0));
    assert!(!worth_sharing(9000, slot, 0));
    assert!(!worth_sharing(4000, 4096, 0));
    // A GRO aggregate: packets of a length the engine may keep, however few.
    assert!(worth_sharing(40 * 1472, slot, 1472));
    assert!(worth_sharing(2 * 1472, slot, 1472));
    assert!(worth_sharing(9000 + 1000, slot, 9000));
    assert!(!worth_sharing(40 * 600, slot, 600));
    // One packet with its segment size given is a lone datagram.
    assert!(!worth_sharing(9000, slot, 9000));
}

#[test]
fn a_due_tick_waits_for_unread_input_but_not_for_ever() {
    let t0 = Time(5_000_000);
    // Nothing unread: run now.
    assert_eq!(put_off_tick(None, t0, || false), None);
    // Input waits: put off, counting from now; later rechecks keep the first time.
    assert_eq!(put_off_tick(None, t0, || true), Some(t0));
    let later = t0.plus_nanos(TICK_MAX_DEFER_NANOS - 1);
    assert_eq!(put_off_tick(Some(t0), later, || true), Some(t0));
    // The input was read meanwhile: run.
    assert_eq!(put_off_tick(Some(t0), later, || false), None);
    // Waited the longest allowed: run, without even looking at the socket.
    let limit = t0.plus_nanos(TICK_MAX_DEFER_NANOS);
    assert_eq!(
        put_off_tick(Some(t0), limit, || panic!("socket looked at")),
        None
    );
}

/// The pacer's deadline is the business of whoever holds the batch buffers: a driver
/// that counted it while another thread was sending spun on it (see `next_wake`).
#[test]
fn pacer_deadline_belongs_to_the_sending_thread() {
    // 1,500-byte packets on a 1 Gbps link: the pacer holds back most of 100 kB.
    let mut opts = crate::Options::default();
    opts.config.link_mbps = 1000;
    opts.config.mtu = 1500;
    opts.auto_mtu = false;
    opts.auto_link_mbps = false;
    opts.loopback_profile = false;
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let inner = crate::bind::open(local, opts, Flavor::Blocking).unwrap();
    // A socket nobody reads: the packets sit in its buffer, and no ICMP error fails the
    // RPC meanwhile.
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dest = sink.local_addr().unwrap();
    inner
        .send_request(dest, Payload::from(vec![7u8; 100_000]), 0, false)
        .unwrap();
    let mut st = inner.lock();
    let pacer = st.ep.pacer_deadline().expect("the pacer holds data back");
    let tick = st.ep.next_tick().expect("an RPC is live");
    assert!(pacer < tick, "pacer {pacer:?}, tick {tick:?}");
    // The driver wakes once half the NIC allowance has drained, to send a burst.
    let burst = inner.pacer_burst_nanos(&st);
    assert_eq!(burst, 50_000, "half of the userspace allowance, 100 us");
    assert_eq!(inner.next_wake(&st), Some(pacer.plus_nanos(burst)));
    // Woken then, it releases half an allowance of packets in one go.
    let data = |st: &State| st.ep.metrics().sent(homa_wire::PacketType::Data);
    let before = data(&st);
    assert!(inner.flush(&mut st, pacer.plus_nanos(burst)));
    let released = data(&st) - before;
    // 50 us at 1 Gbps is 6,250 bytes: four 1,500-byte packets, give or take one.
    assert!(released >= 4, "released {released} packets");
    let pacer = st.ep.pacer_deadline().expect("still holding data back");
    // Another thread is sending: wake for the tick only, and leave the data to it.
    let tx = st.tx.take();
    let tick_wake = inner.tick_wake(tick);
    assert!(tick_wake > tick, "a wake-up only for a tick comes late");
    assert_eq!(inner.next_wake(&st), Some(tick_wake));
    assert!(inner.flush(&mut st, pacer));
    assert!(st.tx_again, "the sending thread must look again");
    assert_eq!(st.ep.pacer_deadline(), Some(pacer), "nothing was sent");
    st.tx = tx;
    drop(st);
    inner.shutdown();
}

/// While threads come back to wait quickly, the driver keeps a request for itself and
/// leaves without waking anyone; once they stay away long (slow handlers), requests
/// go to the longest-waiting thread and the driver role is handed on at once.
#[test]
fn hand_offs_are_lazy_only_while_threads_come_back_quickly() {
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let inner = crate::bind::open(local, crate::Options::default(), Flavor::Blocking).unwrap();
    let mut st = inner.lock();
    let failed = |n| Ready::Failed {
        id: RpcId(n),
        cookie: n,
        peer: local,
        private: false,
        error: RpcError::Timeout,
    };
    let me = || Wake::Thread(std::thread::current());
    let (a, b) = (
        st.add_waiter(Want::Any, me(), 1),
        st.add_waiter(Want::Any, me(), 1),
    );
    st.driver = Driver::App(b);
    assert!(st.lazy_handoff());
    st.route_any(failed(2));
    assert!(
        st.has_slot(b) && !st.has_slot(a),
        "the driver keeps the request"
    );
    assert!(st.wakes.is_empty());
    st.leave_driver(b);
    assert_eq!(st.driver, Driver::None);
    assert!(
        st.undriven_since.is_some() && st.wakes.is_empty(),
        "nobody woken"
    );
    assert!(st.take_slot(b).is_some());
    st.remove_waiter(b);

    // Threads now take a millisecond to come back.
    for _ in 0..16 {
        st.note_away(1_000_000);
    }
    assert!(!st.lazy_handoff());
    let c = st.add_waiter(Want::Any, me(), 1);
    st.driver = Driver::App(c);
    st.route_any(failed(4));
    assert!(
        st.has_slot(a) && !st.has_slot(c),
        "the longest-waiting thread gets it"
    );
    assert_eq!(st.take_wakes().len(), 1);
    st.route_any(failed(6));
    assert!(st.has_slot(c));
    st.leave_driver(c);
    // No one left without an outcome to drive: undriven, the background thread's.
    assert_eq!(st.driver, Driver::None);

    // Quick again.
    for _ in 0..64 {
        st.note_away(1_000);
    }
    assert!(st.lazy_handoff());

    // Threads stay away 300 us: not quick by the fixed bar...
    for _ in 0..64 {
        st.note_away(300_000);
    }
    assert!(!st.lazy_handoff());
    // ...but waking a thread here takes 500 us: waiting for the driver to come back is
    // the cheaper way to the next message, so hand-offs are lazy again.
    for _ in 0..64 {
        st.note_wake(500_000);
    }
    assert!(st.lazy_handoff());
    // The one handed an outcome records when it was woken.
    let d = st.add_waiter(Want::Any, me(), 1);
    st.driver = Driver::None;
    st.route_any(failed(8));
    assert!(st.has_slot(d) || st.has_slot(a));
    let woken = [a, d]
        .into_iter()
        .find(|&k| st.has_slot(k) && st.take_woken_at(k).is_some());
    assert!(woken.is_some(), "a thread woken for an outcome notes when");
    drop(st);
    inner.shutdown();
}

/// A blocking-flavour socket on loopback with one RPC in flight (to the discard port,
/// which nothing answers), which keeps the engine's clock running.
fn blocking_socket_with_live_rpc() -> (Arc<Inner>, RpcId) {
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let inner = crate::bind::open(local, crate::Options::default(), Flavor::Blocking).unwrap();
    let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let id = inner
        .send_request(dest, Payload::from(vec![1u8; 100]), 0, false)
        .unwrap();
    (inner, id)
}

/// The tokio driver's reactor answers whether input waits unread, in place of an
/// `ioctl`: a due tick waits while it says input waits (here the socket's queue is in
/// fact empty, so only the reactor's word can hold the tick back), and runs when it says
/// none does. Without its word the kernel is asked, as before.
#[test]
fn a_due_tick_takes_the_reactors_word_on_unread_input() {
    let (inner, _id) = blocking_socket_with_live_rpc();
    let mut st = inner.lock();
    st.drained_at = None;
    assert!(st.blocked == Blocked::None, "no thread waits in a receive");
    let tick = st.ep.next_tick().expect("an RPC is live");
    let now = tick.plus_nanos(1_000);

    inner.tick(&mut st, now, Some(true));
    assert_eq!(st.ep.next_tick(), Some(tick), "put off for the input");
    assert_eq!(st.tick_deferred_since, Some(now));

    let later = now.plus_nanos(TICK_RECHECK_NANOS);
    inner.tick(&mut st, later, Some(false));
    let next = st.ep.next_tick().expect("still live");
    assert!(next > tick, "the tick ran");
    assert_eq!(st.tick_deferred_since, None);

    // No word from a reactor: the kernel finds the queue empty, and the tick runs.
    inner.tick(&mut st, next.plus_nanos(1_000), None);
    assert!(st.ep.next_tick().is_some_and(|n| n > next), "the tick ran");
}

/// A thread that reads input runs a due tick itself; the sleeping background thread's
/// timer, set for that tick, is moved to the end of its slack (see `WakeAt`), where it
/// stays good for the ticks that follow: readers running ticks move it once every few
/// ticks, and it never wakes for a tick already run. A socket left undriven is looked at
/// within that slack too, and the idle wake-up comes back once nothing is due.
#[test]
fn ticks_run_by_readers_put_the_background_thread_off() {
    let (inner, id) = blocking_socket_with_live_rpc();
    let mut st = inner.lock();
    let tick = st.ep.next_tick().expect("an RPC is live");
    let late = inner.timer_late();
    // The background thread sleeps until the wake-up for this tick...
    st.driver = Driver::App(0);
    let first = inner.bg_deadline(&st, st.last_now);
    assert_eq!(first, inner.tick_wake(tick));
    inner.arm_bg(&mut st, first);
    // ...and a reader runs the tick before that: the timer would fire before the next
    // tick is due, so it moves to the end of the next tick's slack.
    inner.after_input(&mut st, tick.plus_nanos(1_000));
    let next = st.ep.next_tick().expect("still live");
    assert!(next > tick, "the tick ran");
    let pushed = inner.tick_wake(next).plus_nanos(late);
    assert_eq!(st.bg_wake_at, Some(pushed), "put off past the next tick");
    // The following ticks, run by readers too, leave it where it is: no system call.
    let mut t = next;
    while t < pushed {
        inner.after_input(&mut st, t.plus_nanos(1_000));
        let n = st.ep.next_tick().expect("still live");
        assert!(n > t, "the tick ran");
        if n > pushed {
            break;
        }
        assert_eq!(
            st.bg_wake_at,
            Some(pushed),
            "left alone while within the slack"
        );
        t = n;
    }

    // The reader leaves the socket undriven: the background thread, due to wake within
    // the take-over's slack anyway, is left alone.
    st.driver = Driver::None;
    st.undriven_since = Some(st.last_now);
    let before = st.bg_wake_at;
    inner.watch_undriven(&mut st);
    let take_over = inner.take_over_at(&st).expect("undriven");
    assert!(
        before.is_some_and(|b| b >= take_over && b <= inner.tick_wake(take_over).plus_nanos(late))
    );
    assert_eq!(st.bg_wake_at, before, "soon enough already");
    st.driver = Driver::App(0);
    st.undriven_since = None;

    // The RPC ends before the next tick, which then stops the clock: the background
    // thread's timer stays (it fires once for nothing, in place of a system call now).
    drop(st);
    inner.abort(id).unwrap();
    let mut st = inner.lock();
    let now = st.ep.next_tick().expect("still ticking").plus_nanos(1_000);
    inner.after_input(&mut st, now);
    assert_eq!(st.ep.next_tick(), None, "nothing needs the clock");
    let idle = inner.bg_deadline(&st, st.last_now);
    assert!(st.bg_wake_at.is_some_and(|w| w <= idle));
    // Left undriven now, the socket must be looked at within the take-over's slack...
    st.driver = Driver::None;
    st.undriven_since = Some(st.last_now);
    inner.arm_bg(&mut st, idle);
    inner.watch_undriven(&mut st);
    let take_over = inner.take_over_at(&st).expect("undriven");
    assert!(take_over < idle);
    assert_eq!(st.bg_wake_at, Some(inner.tick_wake(take_over)));
    // ...and when a thread drives again before then, the early wake-up stays: it would
    // cost a system call to move now, and fires once for nothing.
    st.driver = Driver::App(0);
    st.undriven_since = None;
    inner.unwatch_undriven(&mut st);
    assert_eq!(st.bg_wake_at, Some(inner.tick_wake(take_over)));
    drop(st);
    inner.shutdown();
}

/// The two ends of a thread's turn at driving, with an RPC live: leaving the socket
/// undriven moves a background timer set past the take-over's slack, and leaves one
/// within it; driving again puts off a timer that would fire before the next tick is due,
/// and leaves one set for the tick or later.
#[test]
fn a_thread_leaving_or_taking_the_socket_moves_the_background_timer_only_when_needed() {
    let (inner, _) = blocking_socket_with_live_rpc();
    let mut st = inner.lock();
    let tick = st.ep.next_tick().expect("an RPC is live");

    st.driver = Driver::None;
    st.undriven_since = Some(st.last_now);
    let far = st.last_now.plus_nanos(BG_IDLE_CHECK_NANOS);
    inner.arm_bg(&mut st, far);
    inner.watch_undriven(&mut st);
    let on_time = inner.bg_deadline(&st, st.last_now);
    assert!(on_time < far);
    assert_eq!(
        st.bg_wake_at,
        Some(on_time),
        "too late for the take-over: moved"
    );
    let take_over = inner.take_over_at(&st).expect("undriven");
    inner.arm_bg(&mut st, take_over);
    inner.watch_undriven(&mut st);
    assert_eq!(st.bg_wake_at, Some(take_over), "soon enough: left alone");

    st.driver = Driver::App(0);
    st.undriven_since = None;
    let early = Time(tick.0 - 1);
    inner.arm_bg(&mut st, early);
    inner.unwatch_undriven(&mut st);
    assert!(
        st.bg_wake_at.is_some_and(|at| at >= tick),
        "would fire before anything is due: put off"
    );
    inner.arm_bg(&mut st, tick);
    inner.unwatch_undriven(&mut st);
    assert_eq!(st.bg_wake_at, Some(tick), "not early: left alone");
    drop(st);
    inner.shutdown();
}

/// An application thread that reads input holds a due tick back (the message it
/// returns with, and the reply to it, do not wait for the tick) and runs it before it
/// waits again.
#[test]
fn application_drivers_run_ticks_before_they_wait() {
    let (inner, _) = blocking_socket_with_live_rpc();
    // Both locks held while the tick falls due, so that the background thread cannot
    // run it meanwhile (a test thread preempted past its wake-up once let it).
    let mut rx = inner.rx.lock().unwrap();
    let mut st = inner.lock();
    let tick = st.ep.next_tick().expect("an RPC is live");
    while clock() <= tick {
        std::thread::sleep(Duration::from_micros(200));
    }
    inner.ingest_batch(&mut st, &mut rx, 0, false);
    assert_eq!(st.ep.next_tick(), Some(tick), "held back while delivering");
    // One instant for both calls: however slowly this runs, the second finds nothing due.
    let now = clock();
    assert!(inner.tick_if_due_at(&mut st, now), "due");
    assert!(st.ep.next_tick() > Some(tick), "ran before waiting");
    assert!(!inner.tick_if_due_at(&mut st, now), "nothing due any more");
    // The background thread (and the tokio driver) run a due tick with the input.
    let next = st.ep.next_tick().unwrap();
    while clock() <= next {
        std::thread::sleep(Duration::from_micros(200));
    }
    inner.ingest_batch(&mut st, &mut rx, 0, true);
    assert!(st.ep.next_tick() > Some(next), "ran with the input");
    drop((st, rx));
    inner.shutdown();
}

#[test]
fn group_merges_same_size_runs_only() {
    let d: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let e: SocketAddr = "127.0.0.1:10".parse().unwrap();
    let payload = bytes::Bytes::from(vec![0u8; 44]);
    let m = |dest, start, with_payload: bool, tos| TxPacket {
        dest,
        start,
        len: 56,
        payload: if with_payload {
            payload.clone()
        } else {
            bytes::Bytes::new()
        },
        tos,
        src: None,
    };
    // Three 100-byte packets to d, a 56-byte one (the run's shorter last), one more
    // 100-byte packet to d, then e at two priorities.
    let pkts = [
        m(d, 0, true, 0),
        m(d, 56, true, 0),
        m(d, 112, false, 0),
        m(d, 168, true, 0),
        m(e, 224, true, 0),
        m(e, 280, true, 0xe0),
    ];
    let mut out = Vec::new();
    group(&pkts, true, &[], &mut out);
    let got: Vec<(usize, usize, u16)> = out.iter().map(|g| (g.first, g.count, g.segment)).collect();
    assert_eq!(got, [(0, 3, 100), (3, 1, 0), (4, 1, 0), (5, 1, 0)]);
    group(&pkts, false, &[], &mut out);
    assert!(out.iter().all(|g| g.count == 1 && g.segment == 0));
    // A destination whose route refused GSO gets single datagrams; the others keep it.
    let f: SocketAddr = "127.0.0.2:9".parse().unwrap();
    let pkts = [
        m(d, 0, true, 0),
        m(d, 56, true, 0),
        m(f, 112, true, 0),
        m(f, 168, true, 0),
    ];
    group(&pkts, true, &[f.ip()], &mut out);
    let got: Vec<(usize, usize, u16)> = out.iter().map(|g| (g.first, g.count, g.segment)).collect();
    assert_eq!(got, [(0, 2, 100), (2, 1, 0), (3, 1, 0)]);
}

/// After a panic under the socket's lock, later calls panic and say why instead of
/// driving a half-updated engine; dropping the socket neither panics nor hangs.
#[test]
fn a_panic_under_the_lock_stops_the_socket_loudly() {
    let sock = crate::Socket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let inner = sock.inner().clone();
    let crashed = std::thread::spawn(move || {
        let _st = inner.lock();
        panic!("a bug while the state is half-updated");
    })
    .join();
    assert!(crashed.is_err(), "the thread panicked");
    let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let later = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sock.send_request(dest, vec![1u8; 10], 0)
    }));
    let why = later.expect_err("the poisoned socket was used as if nothing happened");
    let text = why
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| why.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(text.contains("can no longer be used"), "{text}");
    // Dropping it (which joins the background thread) returns.
    let (done, dropped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(sock);
        let _ = done.send(());
    });
    dropped
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("dropping a poisoned socket hung");
}

#[test]
fn a_receive_offers_what_recent_receives_took() {
    use super::rx::{OFFER_SHRINK_AFTER, RX_BATCH_FIRST, RX_BATCH_MAX};
    let mut rx = RxBufs::new(false);
    let offered = |rx: &mut RxBufs| {
        rx.ensure();
        let (slots, _, metas) = rx.parts();
        assert_eq!(slots.len(), metas.len());
        slots.len()
    };
    assert_eq!(offered(&mut rx), RX_BATCH_FIRST);
    // Each receive that fills its offer doubles it, up to the most a call takes.
    let mut want = RX_BATCH_FIRST;
    while want < RX_BATCH_MAX {
        assert!(
            rx.note_received(want),
            "a full receive says more is probably queued"
        );
        want *= 2;
        assert_eq!(offered(&mut rx), want);
    }
    assert!(rx.note_received(RX_BATCH_MAX));
    assert_eq!(offered(&mut rx), RX_BATCH_MAX);
    // Sparse receives shrink it only after a run of them: a burst now and then keeps it.
    for _ in 0..OFFER_SHRINK_AFTER - 1 {
        assert!(!rx.note_received(2));
        rx.note_received(0); // found nothing: says nothing of the batch size
    }
    rx.note_received(RX_BATCH_MAX / 2);
    for _ in 0..OFFER_SHRINK_AFTER - 1 {
        rx.note_received(1);
    }
    assert_eq!(offered(&mut rx), RX_BATCH_MAX);
    rx.note_received(1);
    assert_eq!(offered(&mut rx), RX_BATCH_MAX / 2);
    // Down to the first size and no further; the slots themselves are kept.
    for _ in 0..10 * OFFER_SHRINK_AFTER {
        rx.note_received(1);
    }
    assert_eq!(offered(&mut rx), RX_BATCH_FIRST);
    assert_eq!(rx.slots.len(), RX_BATCH_MAX);
}

#[test]
fn receive_slots_fit_jumbo_datagrams_and_spill_back_to_full_size() {
    let mut rx = RxBufs::new(false);
    rx.ensure();
    // Long datagrams of up to 8,972 bytes (a 9,000-byte MTU), not yet enough of them.
    rx.longest = 8_972;
    rx.bulk_datagrams = super::rx::GRO_AFTER - 1;
    assert!(!rx.after_batch());
    assert_eq!(rx.slot_size, RX_SLOT);
    // Enough: every slot is cut to 9 KiB, with a spill buffer for the rest of 64 KiB.
    rx.bulk_datagrams += 1;
    assert!(rx.after_batch());
    assert_eq!(rx.slot_size, 9 * 1024);
    assert!(rx.slots.iter().all(|s| s.capacity() == 9 * 1024));
    assert_eq!(rx.spills.len(), rx.slots.len());
    assert!(rx.spills.iter().all(|s| s.capacity() >= RX_SLOT - 9 * 1024));
    // More slots for larger batches (a receive filled all it offered) are of the new
    // size too.
    rx.note_received(super::rx::RX_BATCH_FIRST);
    rx.ensure();
    assert!(rx.slots.len() > super::rx::RX_BATCH_FIRST);
    assert!(rx.slots.iter().all(|s| s.capacity() == 9 * 1024));
    assert_eq!(rx.spills.len(), rx.slots.len());
    // A longer datagram filled slot 1 and went on into its spill buffer: joined whole.
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    rx.slots[1].extend_from_slice(&data[..9 * 1024]);
    rx.spills[1].extend_from_slice(&data[9 * 1024..]);
    rx.metas[1].spilled = data.len() - 9 * 1024;
    rx.unspill(1);
    assert_eq!(&rx.slots[1][..], &data[..]);
    assert_eq!(rx.metas[1].spilled, 0);
    // After the batch every slot is full size again, for good.
    assert!(rx.after_batch());
    assert_eq!(rx.slot_size, RX_SLOT);
    assert!(rx
        .slots
        .iter()
        .all(|s| s.capacity() == RX_SLOT && s.is_empty()));
    assert!(rx.spills.is_empty());
    rx.longest = 8_972;
    assert!(!rx.after_batch());
    // Datagrams too short for the engine to keep, or as long as loopback's, change
    // nothing.
    for longest in [1_472, 60_000] {
        let mut rx = RxBufs::new(false);
        rx.ensure();
        (rx.longest, rx.bulk_datagrams) = (longest, 1_000);
        assert!(!rx.after_batch(), "{longest}");
    }
}

#[test]
fn a_datagram_longer_than_its_slot_continues_in_the_spill_buffer() {
    let Ok(rx_sock) = std::net::UdpSocket::bind("127.0.0.1:0") else {
        eprintln!("skipped: no loopback UDP");
        return;
    };
    let tx_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = rx_sock.local_addr().unwrap();
    let data: Vec<u8> = (0..30_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&rx_sock);
    for gro in [false, true] {
        // One receive call at a time (recv_one, with and without the GRO control
        // message), then a batch of two: one that fits its slot and one that spills.
        let mut slot = bytes::BytesMut::with_capacity(10_240);
        let mut spill = Vec::with_capacity(RX_SLOT - 10_240);
        let mut meta = crate::sys::RxMeta::default();
        tx_sock.send_to(&data, to).unwrap();
        assert_eq!(
            crate::sys::recv_one(fd, &mut slot, Some(&mut spill), &mut meta, gro).unwrap(),
            1
        );
        assert_eq!(meta.spilled, data.len() - 10_240);
        assert!(!meta.truncated);
        assert_eq!([&slot[..], &spill[..]].concat(), data);
    }
    let mut slots: Vec<bytes::BytesMut> = (0..2)
        .map(|_| bytes::BytesMut::with_capacity(10_240))
        .collect();
    let mut spills: Vec<Vec<u8>> = (0..2)
        .map(|_| Vec::with_capacity(RX_SLOT - 10_240))
        .collect();
    let mut metas = [crate::sys::RxMeta::default(); 2];
    tx_sock.send_to(&data[..5_000], to).unwrap();
    tx_sock.send_to(&data, to).unwrap();
    let mut got = 0;
    while got < 2 {
        let n = crate::sys::recv_batch(
            fd,
            &mut slots[got..],
            &mut spills[got..],
            &mut metas[got..],
            false,
        )
        .unwrap();
        got += n;
    }
    assert_eq!((&slots[0][..], metas[0].spilled), (&data[..5_000], 0));
    assert_eq!(metas[1].spilled, data.len() - 10_240);
    assert_eq!([&slots[1][..], &spills[1][..]].concat(), data);
}
