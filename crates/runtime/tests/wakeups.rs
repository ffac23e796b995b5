//! What moving a message costs in wake-ups of other threads and tasks: a packet that only
//! moves the protocol along (a DATA packet of a message still arriving, a GRANT) wakes
//! no one; a waiting caller is woken when its message is complete, or to drive. So the
//! wake-ups per completed message (`SocketInfo::io`) stay bounded however many packets a
//! message takes. Outcomes and counts only: nothing here depends on timing (the idle
//! socket's test reads the clock, and a busy machine can only lower its count), and the
//! bounds leave room for a busy machine's hand-overs (a thread preempted between calls
//! leaves the socket to the background thread, which hands it back).

mod common;

use common::*;
use homa::{aio, IoCounts, Socket, Transport};
use std::sync::Arc;

/// 1 MB messages: 16 DATA packets each over loopback (64 KB datagrams), more elsewhere.
const LONG: usize = 1_000_000;
const CALLS: usize = 20;
/// Most wake-ups of other threads or tasks per completed message that the tests allow.
/// Measured (release and debug builds, idle and with both CPUs busy): 1.6-2.4 per 1 MB
/// call, against 16 DATA packets. Most are hand-overs: a caller away from its socket for
/// more than a tick between calls (here, making its next 1 MB request) leaves it to the
/// background thread, and its next call wakes that thread to give the socket back. With
/// the requests made beforehand, 20 such calls cost 2-3 wake-ups in all.
const MAX_WAKEUPS_PER_MESSAGE: u64 = 4;

fn data_packets_received(m: &homa::Metrics) -> u64 {
    m.packets_received[0]
}

/// After `CALLS` sequential calls of `LONG` bytes each way, the client's and the server's
/// counts: each side received a message per call in many packets, and woke other threads
/// or tasks a bounded number of times per message.
fn check_long_calls(client: (IoCounts, homa::Metrics), server: (IoCounts, homa::Metrics)) {
    let calls = CALLS as u64;
    for (side, (io, m)) in [("client", client), ("server", server)] {
        println!(
            "{side}: {io:?}, {} DATA packets in",
            data_packets_received(&m)
        );
        assert!(data_packets_received(&m) >= calls * 16, "{side}: {m:?}");
        assert!(
            io.wakeups <= MAX_WAKEUPS_PER_MESSAGE * calls,
            "{side}: {io:?}"
        );
        // The counters count: every call sent and received something.
        assert!(
            io.send_calls >= calls && io.receive_calls >= calls,
            "{side}: {io:?}"
        );
    }
}

#[test]
fn a_blocking_caller_is_not_woken_per_packet() {
    let server = echo_server(V4, Transport::Udp, 1);
    let dest = server.local_addr();
    let client = Socket::bind(addr(V4)).unwrap();
    for i in 0..CALLS {
        let req = pattern(LONG, i as u64);
        let resp = client.call(dest, req.as_slice()).unwrap();
        assert!(resp == answer(&req), "call {i}: wrong response");
    }
    check_long_calls(
        (client.info().io, client.metrics()),
        (server.info().io, server.metrics()),
    );
    server.shutdown();
}

#[test]
fn threads_sharing_a_socket_are_each_woken_about_once_per_message() {
    // Eight callers on one socket: one drives it and hands the others their responses,
    // a wake-up each, and the driver role when it leaves.
    const THREADS: usize = 8;
    const PER_THREAD: usize = 5;
    let server = echo_server(V4, Transport::Udp, 2);
    let dest = server.local_addr();
    let client = Arc::new(Socket::bind(addr(V4)).unwrap());
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let req = pattern(LONG / 4, (t * PER_THREAD + i) as u64);
                    let resp = client.call(dest, req.as_slice()).unwrap();
                    assert!(resp == answer(&req), "thread {t} call {i}: wrong response");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let messages = (THREADS * PER_THREAD) as u64;
    let c = client.info().io;
    let m = client.metrics();
    println!(
        "client: {c:?}, {} DATA packets in",
        data_packets_received(&m)
    );
    assert_eq!(m.responses_delivered, messages);
    assert!(data_packets_received(&m) >= messages * 4);
    assert!(
        c.wakeups <= MAX_WAKEUPS_PER_MESSAGE * messages,
        "client: {c:?}"
    );
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_not_woken_per_packet() {
    let server = tokio_echo_server(V4, Transport::Udp).await;
    let dest = server.local_addr();
    let client = aio::Socket::bind(addr(V4)).await.unwrap();
    for i in 0..CALLS {
        let req = pattern(LONG, i as u64);
        let resp = client.call(dest, req.clone()).await.unwrap();
        assert!(resp == answer(&req), "call {i}: wrong response");
    }
    check_long_calls(
        (client.info().io, client.metrics()),
        (server.info().io, server.metrics()),
    );
    server.shutdown();
}

/// A task making short calls one at a time, spaced out like an open-loop client's,
/// sends each request itself: the only wake-up per RPC is its own, when the response is
/// in (the driver task, which reads the socket, is woken by the kernel, not by the
/// caller). It was two: the caller woke the driver to send for it, then the driver woke
/// the caller. (Calls that follow each other within microseconds leave their packets
/// to the driver instead, to go out together; a call is judged alone by the clock, not
/// by the last time the socket read, which can be a tick old: with that stale time about
/// one call in ten of these was taken for a close follower and cost a second wake-up.)
/// Measured 198-200 wake-ups for 200 calls, idle and with both CPUs busy; the bound
/// leaves room for the driver being woken now and then to move its timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_calling_one_at_a_time_is_woken_once_per_rpc() {
    let server = tokio_echo_server(V4, Transport::Udp).await;
    let dest = server.local_addr();
    let client = aio::Socket::bind(addr(V4)).await.unwrap();
    const SHORT_CALLS: u64 = 200;
    for i in 0..SHORT_CALLS {
        let req = pattern(100, i);
        let resp = client.call(dest, req.clone()).await.unwrap();
        assert!(resp == answer(&req), "call {i}: wrong response");
        // Apart by a millisecond or so (tokio's timer), as an open-loop client's calls.
        tokio::time::sleep(std::time::Duration::from_micros(200)).await;
    }
    let io = client.info().io;
    println!("client: {io:?}");
    assert!(io.send_calls >= SHORT_CALLS, "{io:?}");
    assert!(io.wakeups <= SHORT_CALLS + SHORT_CALLS / 20, "{io:?}");
    server.shutdown();
}

/// The calls and timer re-arms an idle socket may make per second of idleness (about
/// one each of a receive and a re-arm), and once.
const IDLE_PER_SEC: f64 = 3.0;
const IDLE_ONCE: f64 = 6.0;

/// Receive calls, waits and timer re-arms of a socket, from its counts `io`, over 2.5 s
/// in which it is left idle: at most [`IDLE_PER_SEC`] for each second that passed (read
/// from the clock), and [`IDLE_ONCE`]. Timers only fire late, never early, so a busy
/// machine can only lower the count over the time measured.
fn check_idle(what: &str, io: impl Fn() -> IoCounts) {
    let looks = |io: IoCounts| io.receive_calls + io.waits + io.timer_sets;
    let (before, t0) = (looks(io()), std::time::Instant::now());
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    let (n, secs) = (looks(io()) - before, t0.elapsed().as_secs_f64());
    println!("{what}: {n} receive calls, waits and re-arms in {secs:.2} s");
    assert!(
        n as f64 <= IDLE_PER_SEC * secs + IDLE_ONCE,
        "{what}: {n} receive calls, waits and timer re-arms in {secs:.2} s: {:?}",
        io()
    );
}

/// What an idle socket costs: a server whose thread waits for requests, before any
/// traffic and after some, looks at its socket about once a second (its waiting thread's
/// receive timeout, the background thread's backstop, the engine's sweep of its tables),
/// not ten or twenty times (as it did: 30 wake-ups a second per idle socket).
#[test]
fn an_idle_socket_wakes_about_once_a_second() {
    let server = echo_server(V4, Transport::Udp, 1);
    let dest = server.local_addr();
    // Its waiting thread blocks in the receive call (the cheaper way, whose timeout is
    // what bounds its looks here).
    assert!(server.info().wake_datagrams);
    // (The waiting thread may take a moment to block.)
    std::thread::sleep(std::time::Duration::from_millis(200));
    check_idle("fresh server", || server.info().io);
    let client = Socket::bind(addr(V4)).unwrap();
    for i in 0..3 {
        let req = pattern(LONG, i);
        let resp = client.call(dest, req.as_slice()).unwrap();
        assert!(resp == answer(&req), "call {i}: wrong response");
    }
    // The client acknowledges the responses within a few ticks; then the server is idle
    // but for its history of the client, which it keeps and sweeps.
    std::thread::sleep(std::time::Duration::from_millis(200));
    check_idle("server after traffic", || server.info().io);
    server.shutdown();
}

/// The same for the tokio API: an idle socket's driver task sleeps until something is
/// due, with no look at the socket of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tokio_socket_wakes_about_once_a_second() {
    let server = tokio_echo_server(V4, Transport::Udp).await;
    let dest = server.local_addr();
    let s = server.clone();
    tokio::task::spawn_blocking(move || check_idle("fresh tokio server", || s.info().io))
        .await
        .unwrap();
    let client = aio::Socket::bind(addr(V4)).await.unwrap();
    for i in 0..3 {
        let req = pattern(LONG, i);
        let resp = client.call(dest, req.clone()).await.unwrap();
        assert!(resp == answer(&req), "call {i}: wrong response");
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let s = server.clone();
    tokio::task::spawn_blocking(move || check_idle("tokio server after traffic", || s.info().io))
        .await
        .unwrap();
    server.shutdown();
}
