//! The tokio flavour over loopback.
#![cfg(feature = "tokio")]

mod common;

use common::*;
use homa::aio::Socket;
use homa::{RecvError, RpcError, Transport};
use std::time::Duration;

async fn sizes(bind: &str, transport: Transport) {
    let server = tokio_echo_server(bind, transport).await;
    let client = Socket::bind_with(addr(bind), client_opts(transport))
        .await
        .unwrap();
    for (i, len) in [1usize, 100, 1500, 65_536, 65_537, 200_000, 1_000_000]
        .into_iter()
        .enumerate()
    {
        let req = pattern(len, i as u64);
        let id = client
            .send_request(server.local_addr(), req.clone(), i as u64)
            .unwrap();
        let resp = client.recv().await.unwrap();
        assert_eq!((resp.id(), resp.cookie(), resp.len()), (id, i as u64, len));
        assert!(resp == answer(&req));
        let resp = client
            .call(server.local_addr(), req.as_slice())
            .await
            .unwrap();
        assert!(resp == answer(&req));
    }
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_every_size_udp_v4_and_v6() {
    sizes(V4, Transport::Udp).await;
    sizes(V6, Transport::Udp).await;
}

#[tokio::test(flavor = "current_thread")]
async fn tokio_current_thread_runtime() {
    sizes(V4, Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_raw_ip() {
    if raw_available("tokio_raw_ip") {
        sizes(V4, Transport::RawIp).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_many_tasks() {
    const TASKS: usize = 16;
    const RPCS: usize = 100;
    let server = tokio_echo_server(V4, Transport::Udp).await;
    let dest = server.local_addr();
    let client = Socket::bind(addr(V4)).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..RPCS {
                let len = if i % 20 == 0 {
                    100_000
                } else {
                    1 + (t * 31 + i * 7) % 2000
                };
                let req = pattern(len, (t * RPCS + i) as u64);
                let resp = c.call(dest, req.as_slice()).await.unwrap();
                assert!(resp == answer(&req), "task {t} rpc {i}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(client.metrics().responses_delivered, (TASKS * RPCS) as u64);
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_shutdown_wakes_waiting_tasks() {
    let client = Socket::bind(addr(V4)).await.unwrap();
    let c = client.clone();
    let waiter = tokio::spawn(async move { c.recv().await.map(|m| m.len()) });
    let c2 = client.clone();
    assert!(tokio::time::timeout(OUTCOME_DEADLINE, async {
        while c2.info().waiters == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .is_ok());
    client.shutdown();
    let r = tokio::time::timeout(OUTCOME_DEADLINE, waiter)
        .await
        .expect("woke")
        .unwrap();
    assert!(matches!(r, Err(RecvError::Shutdown)));
}

/// A socket lives on the runtime that bound it (its driver task runs there). Used from
/// another runtime once that one is gone, it fails with `Shutdown`: it used to wait for
/// ever.
#[test]
fn tokio_socket_outliving_its_runtime_fails_instead_of_hanging() {
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (server, client) = first.block_on(async {
        let server = Socket::bind_with(addr(V4), server_opts(Transport::Udp))
            .await
            .unwrap();
        let client = Socket::bind(addr(V4)).await.unwrap();
        (server, client)
    });
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        let dest = server.local_addr();
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(server.recv(), client.call(dest, b"hello".to_vec()))
        })
        .await
        .expect("both end instead of hanging");
        assert!(
            matches!(outcome.0, Err(RecvError::Shutdown)),
            "{:?}",
            outcome.0.map(|m| m.len())
        );
        let call = outcome.1.map(|m| m.len());
        assert!(call.is_err(), "{call:?}");
        assert!(format!("{:?}", call).contains("Shutdown"), "{call:?}");
        assert!(server.info().shutdown && client.info().shutdown);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_dropped_recv_future_loses_nothing() {
    let server = Socket::bind_with(addr(V4), server_opts(Transport::Udp))
        .await
        .unwrap();
    let client = Socket::bind(addr(V4)).await.unwrap();
    // A recv that is cancelled (its future dropped) before the request arrives...
    assert!(
        tokio::time::timeout(Duration::from_millis(20), server.recv())
            .await
            .is_err()
    );
    // ...and one racing against a request: whichever way the race goes, the request is
    // delivered exactly once.
    client
        .send_request(server.local_addr(), b"one".to_vec(), 1)
        .unwrap();
    let first = tokio::time::timeout(Duration::from_micros(1), server.recv()).await;
    let req = match first {
        Ok(r) => r.unwrap(),
        Err(_) => server.recv().await.unwrap(),
    };
    assert_eq!(req, b"one");
    server.reply(&req, b"two".to_vec()).unwrap();
    assert_eq!(client.recv().await.unwrap(), b"two");
    assert_eq!(server.info().queued, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_dropped_call_keeps_no_response() {
    let server = Socket::bind_with(addr(V4), server_opts(Transport::Udp))
        .await
        .unwrap();
    let client = Socket::bind(addr(V4)).await.unwrap();
    // The call is polled once (request sent, waiting) and then left alone...
    let mut call = Box::pin(client.call(server.local_addr(), b"ping".to_vec()));
    assert!(tokio::time::timeout(Duration::from_millis(1), &mut call)
        .await
        .is_err());
    let req = server.recv().await.unwrap();
    server.reply(&req, b"pong".to_vec()).unwrap();
    // ...while the response arrives and is handed to it; then it is dropped.
    let deadline = std::time::Instant::now() + OUTCOME_DEADLINE;
    while client.info().client_rpcs > 0 {
        assert!(std::time::Instant::now() < deadline, "no response");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(call);
    let info = client.info();
    assert_eq!(info.queued, 0, "a dropped call's response stayed queued");
    assert_eq!(info.incoming_held, 0, "its buffer was not given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_silent_server_times_out_and_abort_works() {
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = Socket::bind(addr(V4)).await.unwrap();
    let r = client
        .call(hole.local_addr().unwrap(), b"anyone?".to_vec())
        .await;
    assert_eq!(r.unwrap_err().rpc_error(), Some(RpcError::Timeout));
    let id = client
        .send_request(hole.local_addr().unwrap(), b"x".to_vec(), 3)
        .unwrap();
    client.abort(id).unwrap();
    match client.recv().await {
        Err(RecvError::Rpc {
            cookie: 3,
            error: RpcError::Aborted,
            ..
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_call_timeout_gives_up_cleanly_and_answers_in_time() {
    // A socket that takes the packets and never answers.
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = hole.local_addr().unwrap();
    let client = Socket::bind(addr(V4)).await.unwrap();
    let timed_out = |r: &Result<homa::Message, homa::CallError>| {
        matches!(r, Err(homa::CallError::Recv(RecvError::TimedOut)))
    };
    let r = client
        .call_timeout(to, b"anyone?".to_vec(), Duration::from_millis(20))
        .await;
    assert!(timed_out(&r), "{r:?}");
    // Given up: nothing left in the engine, and no outcome for it reaches `recv`, not
    // even once the engine would have timed the RPC out itself.
    assert_eq!(client.info().client_rpcs, 0);
    let cfg = client.config();
    let engine_timeout = Duration::from_nanos(cfg.timeout_ticks as u64 * cfg.tick_nanos);
    let late = client.recv_timeout(engine_timeout * 2).await;
    assert!(matches!(late, Err(RecvError::TimedOut)), "{late:?}");
    assert_eq!(client.metrics().timeouts, 0);

    // A zero limit sends nothing (no server runs a request no one waits for).
    let sent = |s: &Socket| s.metrics().packets_sent.iter().sum::<u64>();
    let before = sent(&client);
    let r = client
        .call_timeout(to, b"now or never".to_vec(), Duration::ZERO)
        .await;
    assert!(timed_out(&r), "{r:?}");
    assert_eq!(
        sent(&client),
        before,
        "a call with no time left sent a packet"
    );

    // The wait for buffer room counts too, and the caller that gave up leaves no
    // waiter behind.
    let small = Socket::bind_with(addr(V4), small_patient_budget(50_000))
        .await
        .unwrap();
    let _held = small.send_request(to, pattern(50_000, 1), 0).unwrap();
    let r = small
        .call_timeout(to, pattern(30_000, 2), Duration::from_millis(20))
        .await;
    assert!(timed_out(&r), "{r:?}");
    assert_eq!(small.info().room_waiters, 0);
    assert_eq!(
        small.info().client_rpcs,
        1,
        "only the request holding the room"
    );

    // A server that answers within the limit: the response, as from `call`.
    let server = tokio_echo_server(V4, Transport::Udp).await;
    let got = client
        .call_timeout(server.local_addr(), pattern(3_000, 4), OUTCOME_DEADLINE)
        .await
        .unwrap();
    assert_eq!(got.to_vec(), answer(&pattern(3_000, 4)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_a_shutdown_reads_as_one_whatever_the_step() {
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = hole.local_addr().unwrap();
    // Waiting for the response.
    let client = Socket::bind(addr(V4)).await.unwrap();
    let c = client.clone();
    let waiting = tokio::spawn(async move { c.call(to, b"x".to_vec()).await });
    assert!(
        wait_until(OUTCOME_DEADLINE, || client.info().client_rpcs == 1),
        "the call never started"
    );
    client.shutdown();
    let e = waiting.await.unwrap().unwrap_err();
    assert!(e.is_shutdown(), "{e:?}");
    // Before sending.
    let e = client.call(to, b"y".to_vec()).await.unwrap_err();
    assert!(e.is_shutdown(), "{e:?}");
    // Other failures are not shutdowns.
    let other = Socket::bind(addr(V4)).await.unwrap();
    let e = other
        .call_timeout(to, b"z".to_vec(), Duration::from_millis(5))
        .await
        .unwrap_err();
    assert!(!e.is_shutdown(), "{e:?}");
}

#[tokio::test]
async fn tokio_bind_outside_runtime_is_an_error_not_a_panic() {
    let r = std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // A runtime without I/O enabled: binding must fail cleanly.
        rt.block_on(Socket::bind(addr(V4))).map(|_| ())
    })
    .join()
    .unwrap();
    assert!(r.is_err());
}

/// A network namespace of this test's own whose loopback is rate-limited by an htb qdisc,
/// deleted on drop. Datagrams wait in the qdisc holding their socket's send-buffer
/// memory, so a fast sender fills its send buffer (plain loopback frees it inside each
/// `sendmsg`).
struct SlowLoopback {
    name: String,
}

impl SlowLoopback {
    /// `None` (with a message) where this process may not have network namespaces (not
    /// root, or refused them). Panics where it may but the namespace cannot be set up:
    /// a skip there would hide a regression or a missing `tc`.
    fn create(test: &str, rate: &str) -> Option<SlowLoopback> {
        if !may_make_namespaces() {
            println!("skipping {test}: needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for a network namespace");
            return None;
        }
        // A throwaway thread enters a new namespace of its own, which goes when it ends.
        let probe = std::thread::spawn(|| {
            // SAFETY: unshare moves only the calling thread, which ends right after.
            match unsafe { libc::unshare(libc::CLONE_NEWNET) } {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        })
        .join()
        .unwrap();
        if let Err(e) = probe {
            println!("skipping {test}: root, but refused a new network namespace: {e}");
            return None;
        }
        let name = format!("homa-rt-{}", std::process::id());
        let ns = SlowLoopback { name };
        let steps: [&[&str]; 4] = [
            &["ip", "netns", "add", &ns.name],
            &["ip", "-n", &ns.name, "link", "set", "lo", "up"],
            &[
                "tc", "-n", &ns.name, "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb",
                "default", "1",
            ],
            &[
                "tc", "-n", &ns.name, "class", "add", "dev", "lo", "parent", "1:", "classid",
                "1:1", "htb", "rate", rate,
            ],
        ];
        for step in steps {
            let ok = std::process::Command::new(step[0])
                .args(&step[1..])
                .output()
                .map(|o| o.status.success());
            if ok.as_ref().map_or(true, |ok| !ok) {
                panic!("{test}: `{}` failed as root ({ok:?})", step.join(" "));
            }
        }
        Some(ns)
    }

    /// Move the calling thread into the namespace.
    fn enter(&self) {
        let f = std::fs::File::open(format!("/var/run/netns/{}", self.name)).unwrap();
        // SAFETY: a valid namespace descriptor; only this thread moves.
        let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for SlowLoopback {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// FNV-1a of `bytes`, with their length: a short stand-in for a long message.
fn digest(bytes: &[u8]) -> Vec<u8> {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    [h.to_le_bytes(), (bytes.len() as u64).to_le_bytes()].concat()
}

/// A sender whose socket buffer is full waits for the socket to take packets again
/// (registered for that only while packets wait) and loses nothing.
#[test]
fn tokio_sends_wait_out_a_full_send_buffer() {
    const DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);
    const TICK: std::time::Duration = std::time::Duration::from_secs(2 * 60);
    let Some(ns) = SlowLoopback::create("tokio_sends_wait_out_a_full_send_buffer", "400mbit")
    else {
        return;
    };
    let ns = std::sync::Arc::new(ns);
    let inside = ns.clone();
    let (info, data_sent) = std::thread::spawn(move || {
        inside.enter();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // Short responses: only the client's requests queue at the slow loopback.
            // A receive window past the requests' length: each is granted whole at its
            // first packet, so no grant wakes the client after that.
            // Ticks at both ends longer than the test's deadline: no RESEND wakes the
            // client either, and a send that waited for a tick instead of for room would
            // never finish in time, however fast or slow the machine.
            let mut server_opts = server_opts(Transport::Udp);
            server_opts.config.max_incoming = 16 << 20;
            server_opts.config.tick_nanos = TICK.as_nanos() as u64;
            let server = Socket::bind_with(addr(V4), server_opts).await.unwrap();
            let s = server.clone();
            tokio::spawn(async move {
                while let Ok(req) = s.recv().await {
                    let _ = s.reply(&req, digest(&req.to_vec()));
                }
            });
            let mut opts = homa::Options {
                send_buffer_bytes: 64 << 10,
                ..client_opts(Transport::Udp)
            };
            opts.config.tick_nanos = TICK.as_nanos() as u64;
            let client = Socket::bind_with(addr(V4), opts).await.unwrap();
            let mut calls = tokio::task::JoinSet::new();
            for i in 0..4u64 {
                let (client, to) = (client.clone(), server.local_addr());
                calls.spawn(async move {
                    let req = pattern(1_000_000, i);
                    let resp = client.call(to, req.clone()).await.unwrap();
                    assert_eq!(resp, digest(&req), "request {i} arrived changed");
                });
            }
            let all = async {
                while let Some(done) = calls.join_next().await {
                    done.unwrap();
                }
            };
            // A deadline against a hang (a wait for room never woken, or woken only by a
            // tick), not a speed bound: the link takes 80 ms, a busy machine longer.
            tokio::time::timeout(DEADLINE, all)
                .await
                .expect("4 MB did not get through before the first tick: sends hang");
            // Index 0: DATA.
            (client.info(), client.metrics().packets_sent[0])
        })
    })
    .join()
    .unwrap();
    assert!(
        info.send_buffer_full > 0,
        "the send buffer never filled: the test did not test the wait"
    );
    // Each time room appears, some packets go and the next one finds the buffer full
    // again: about one refusal per packet. A sender retrying on other wake-ups (the
    // pacer's deadlines) spun: thousands.
    assert!(
        info.send_buffer_full <= 3 * data_sent,
        "{} sends refused for {data_sent} DATA packets sent: retried without waiting for room",
        info.send_buffer_full
    );
}

#[tokio::test(flavor = "current_thread")]
async fn recv_timeout_gives_up_then_a_later_message_still_arrives() {
    let server = Socket::bind_with(addr(V4), server_opts(Transport::Udp))
        .await
        .unwrap();
    match server.recv_timeout(Duration::from_millis(20)).await {
        Err(RecvError::TimedOut) => {}
        other => panic!("nothing was sent: {other:?}"),
    }
    let client = Socket::bind(addr(V4)).await.unwrap();
    let at = server.local_addr();
    let call = tokio::spawn(async move { client.call(at, b"late".to_vec()).await });
    let req = server
        .recv_timeout(OUTCOME_DEADLINE)
        .await
        .expect("the request");
    assert_eq!(req.to_vec(), b"late");
    server.reply(&req, b"ok".to_vec()).unwrap();
    assert_eq!(call.await.unwrap().unwrap(), b"ok");
}

#[tokio::test(flavor = "current_thread")]
async fn recv_timeout_lets_a_panic_in_the_receive_through() {
    // Only tokio's timer may panic quietly into `NoTimer` (a runtime without one). A
    // panic in the receive itself, here the documented one of a socket whose lock a
    // panic poisoned, reaches the caller as it does without the timeout.
    use std::future::Future;
    use std::task::{Context, RawWaker, RawWakerVTable, Waker};
    fn clone(_: *const ()) -> RawWaker {
        panic!("this waker cannot be cloned");
    }
    fn noop(_: *const ()) {}
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    let sock = Socket::bind(addr(V4)).await.unwrap();
    // SAFETY: the vtable's functions never read the data pointer.
    let waker = unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) };
    let poisoning = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut recv = std::pin::pin!(sock.recv());
        let _ = recv.as_mut().poll(&mut Context::from_waker(&waker));
    }));
    assert!(
        poisoning.is_err(),
        "the waiter's waker was cloned under the lock"
    );
    let timed = tokio::spawn({
        let sock = sock.clone();
        async move {
            sock.recv_timeout(Duration::from_millis(10))
                .await
                .map(|m| m.len())
        }
    });
    match timed.await {
        Err(e) if e.is_panic() => {}
        other => panic!("recv_timeout on a poisoned socket: {other:?}, not its panic"),
    }
}

/// `recv_request` in the tokio flavour: the serving loop takes requests only, so the
/// server's own failed RPC neither ends it nor is lost (it waits for `recv_id`).
#[tokio::test(flavor = "current_thread")]
async fn tokio_recv_request_serves_past_its_own_failed_rpcs() {
    const DEADLINE: Duration = Duration::from_secs(30);
    let server = Socket::bind_with(addr(V4), server_opts(Transport::Udp))
        .await
        .unwrap();
    let gone = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let nowhere = gone.local_addr().unwrap();
    drop(gone);
    let own = server.send_request(nowhere, b"hello?".to_vec(), 9).unwrap();
    let s = server.clone();
    let serving = tokio::spawn(async move {
        let mut served = 0;
        while let Ok(req) = s.recv_request().await {
            s.reply(&req, answer(&req.to_vec())).unwrap();
            served += 1;
        }
        served
    });
    let client = Socket::bind(addr(V4)).await.unwrap();
    for i in 0..5u64 {
        let req = pattern(100 + i as usize, i);
        let resp = tokio::time::timeout(DEADLINE, client.call(server.local_addr(), req.clone()))
            .await
            .expect("no answer")
            .unwrap();
        assert_eq!(resp.to_vec(), answer(&req));
    }
    match tokio::time::timeout(DEADLINE, server.recv_id(own)).await {
        Ok(Err(RecvError::Rpc {
            error: RpcError::Timeout | RpcError::NoSuchSocket,
            cookie: 9,
            ..
        })) => {}
        other => panic!("expected the server's own RPC to fail, got {other:?}"),
    }
    server.shutdown();
    let served = tokio::time::timeout(DEADLINE, serving)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(served, 5);
}

/// A client whose whole outgoing budget (10,000 bytes) is held by a 9,000-byte request
/// to a server that never answers (returned, with the task waiting for that call).
async fn budget_held_by_a_silent_server() -> (
    Socket,
    Socket,
    tokio::task::JoinHandle<Result<homa::Message, homa::CallError>>,
) {
    let silent = Socket::bind_with(addr(V4), server_opts(Transport::Udp))
        .await
        .unwrap();
    let client = Socket::bind_with(addr(V4), small_budget(10_000))
        .await
        .unwrap();
    let (c, dest) = (client.clone(), silent.local_addr());
    let hog = tokio::spawn(async move { c.call(dest, vec![1u8; 9_000]).await });
    tokio::time::timeout(Duration::from_secs(30), async {
        while client.info().rpcs.is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the first request started");
    (silent, client, hog)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_calls_wait_for_outgoing_room_instead_of_failing() {
    // 64 tasks, 5 RPCs each of 8,000 bytes, through a budget of 20,000 bytes: at most two
    // requests fit at once, so nearly every call waits for room. Each must complete with
    // its own answer; none may fail with WouldBlock.
    const TASKS: usize = 64;
    const RPCS: usize = 5;
    let server = tokio_echo_server(V4, Transport::Udp).await;
    let client = Socket::bind_with(addr(V4), small_budget(20_000))
        .await
        .unwrap();
    let dest = server.local_addr();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..RPCS {
                let req = pattern(8_000, (t * RPCS + i) as u64);
                let resp = c.call(dest, req.clone()).await.unwrap_or_else(|e| {
                    panic!("task {t} call {i}: {e}");
                });
                assert!(resp == answer(&req), "task {t} call {i}: wrong bytes");
            }
        }));
    }
    let all = async {
        for t in tasks {
            t.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(120), all)
        .await
        .expect("every call completes");
    assert_eq!(client.metrics().responses_delivered, (TASKS * RPCS) as u64);
    // Nothing is held any more: a request the size of the whole budget starts at once.
    client.send_request(dest, vec![7u8; 20_000], 0).unwrap();
    server.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_room_waiters_dropped_or_given_room_by_an_abort_lose_nothing() {
    let (silent, client, hog) = budget_held_by_a_silent_server().await;
    let server = tokio_echo_server(V4, Transport::Udp).await;
    let to_echo = server.local_addr();
    // The blocking-style send says so at once...
    assert!(matches!(
        client.send_request(to_echo, vec![2u8; 5_000], 0),
        Err(homa::SendError::WouldBlock)
    ));
    // ...while calls wait. Half of them are given up while they wait.
    let mut waiting = Vec::new();
    for i in 0..10u64 {
        let c = client.clone();
        waiting.push(tokio::spawn(async move {
            let req = pattern(5_000, i);
            let resp = c.call(to_echo, req.clone()).await.unwrap();
            assert!(resp == answer(&req), "call {i}: wrong bytes");
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    for w in waiting.iter().step_by(2) {
        w.abort();
    }
    // Giving up the request that holds the budget makes room for the rest.
    hog.abort();
    let rest = async {
        for (i, w) in waiting.into_iter().enumerate() {
            match w.await {
                Ok(()) => {}
                Err(e) if e.is_cancelled() && i % 2 == 0 => {}
                Err(e) => panic!("call {i}: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), rest)
        .await
        .expect("the calls left complete once the budget has room");
    assert!(client.metrics().responses_delivered >= 5);
    server.shutdown();
    silent.shutdown();
}

/// Room given back that the first waiter cannot use goes to a later one that fits: a
/// short call does not sleep behind a long one while the bytes it needs are free (and
/// would sleep for ever here, since nothing else ends while the silent server holds the
/// rest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_room_too_small_for_the_first_waiter_goes_to_one_it_fits() {
    let silent = Socket::bind_with(addr(V4), server_opts(Transport::Udp))
        .await
        .unwrap();
    let server = tokio_echo_server(V4, Transport::Udp).await;
    let client = Socket::bind_with(addr(V4), small_budget(10_000))
        .await
        .unwrap();
    let (quiet, echo) = (silent.local_addr(), server.local_addr());
    let started = |n: usize| {
        let client = client.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(30), async {
                while client.info().rpcs.len() < n {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("the request started");
        }
    };
    // 6,000 + 3,800 of the 10,000 bytes held by calls the silent server never answers.
    let c = client.clone();
    let held = tokio::spawn(async move { c.call(quiet, vec![1u8; 6_000]).await });
    started(1).await;
    let c = client.clone();
    let freed = tokio::spawn(async move { c.call(quiet, vec![1u8; 3_800]).await });
    started(2).await;
    // A long call waits first, then a short one.
    let c = client.clone();
    let long = tokio::spawn(async move { c.call(echo, pattern(8_000, 1)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let c = client.clone();
    let short = tokio::spawn(async move { c.call(echo, pattern(500, 2)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Giving up the 3,800-byte call frees room for the short call, not the long one.
    freed.abort();
    let echoed = |call: tokio::task::JoinHandle<Result<homa::Message, homa::CallError>>,
                  req: Vec<u8>,
                  what: &'static str| async move {
        let resp = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .unwrap_or_else(|_| panic!("{what}: not done in 30 s"))
            .unwrap()
            .unwrap();
        assert!(resp == answer(&req), "{what}: wrong bytes");
    };
    echoed(short, pattern(500, 2), "the short call, in the room freed").await;
    assert!(!long.is_finished(), "the long call still has no room");
    // Once the rest is given back, the long call goes too.
    held.abort();
    echoed(long, pattern(8_000, 1), "the long call").await;
    server.shutdown();
    silent.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_shutdown_wakes_calls_waiting_for_room() {
    let (silent, client, _hog) = budget_held_by_a_silent_server().await;
    let dest = silent.local_addr();
    let c = client.clone();
    let waiter = tokio::spawn(async move { c.call(dest, vec![2u8; 5_000]).await.map(|m| m.len()) });
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.shutdown();
    let r = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("woken by the shutdown")
        .unwrap();
    assert!(
        matches!(r, Err(homa::CallError::Send(homa::SendError::Shutdown)))
            || matches!(r, Err(homa::CallError::Recv(RecvError::Shutdown))),
        "{r:?}"
    );
    silent.shutdown();
}
