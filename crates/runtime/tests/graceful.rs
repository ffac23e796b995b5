//! `shutdown_gracefully`: the responses a server owes reach their clients before it
//! closes, later requests are refused, and the wait ends at its deadline.

mod common;

use common::*;
use homa::{RecvError, RpcError, Socket, Transport};
use std::sync::mpsc;
use std::time::Duration;

/// A server whose one handler thread takes one request, tells the test, waits for the
/// test's go, and answers with `response_len` bytes of pattern.
fn held_server(response_len: usize) -> (Socket, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let server = Socket::bind_with(addr(V4), server_opts(Transport::Udp)).unwrap();
    let (took_tx, took) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let s = server.clone();
    std::thread::spawn(move || {
        let req = s.recv_request().unwrap();
        took_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        s.reply(&req, pattern(response_len, 7)).unwrap();
    });
    (server, took, go)
}

/// `client.call(dest, request)` on a thread of its own; the receiver gets its outcome
/// as the response's bytes.
fn call_in_background(
    client: &Socket,
    dest: std::net::SocketAddr,
    request: Vec<u8>,
) -> mpsc::Receiver<Result<Vec<u8>, homa::CallError>> {
    let (tx, rx) = mpsc::channel();
    let c = client.clone();
    std::thread::spawn(move || tx.send(c.call(dest, request).map(|m| m.to_vec())));
    rx
}

#[test]
fn a_long_response_given_before_the_drain_reaches_its_client() {
    // 1,000,000 bytes: most of it leaves only as the client's grants come back, after
    // `reply` has returned; a plain shutdown then would cut it off.
    let (server, took, go) = held_server(1_000_000);
    let dest = server.local_addr();
    let client = Socket::bind(addr(V4)).unwrap();
    let outcome = call_in_background(&client, dest, b"the big one".to_vec());
    took.recv_timeout(OUTCOME_DEADLINE).unwrap();

    let s = server.clone();
    let drained = std::thread::spawn(move || s.shutdown_gracefully(OUTCOME_DEADLINE));
    assert!(
        wait_until(OUTCOME_DEADLINE, || server.info().draining),
        "the drain never began"
    );
    // In service when the drain began: still answered, and the drain waits for it.
    go.send(()).unwrap();
    let got = outcome
        .recv_timeout(OUTCOME_DEADLINE)
        .expect("no outcome for the call");
    assert_eq!(got.unwrap(), pattern(1_000_000, 7));
    assert_eq!(drained.join().unwrap(), 0, "a response was cut off");
    let info = server.info();
    assert!(info.shutdown && !info.draining, "{info:?}");
    assert_eq!(info.server_rpcs, 0);
}

#[test]
fn requests_arriving_during_the_drain_are_refused() {
    let (server, took, go) = held_server(100);
    let dest = server.local_addr();
    let client = Socket::bind(addr(V4)).unwrap();
    let first = call_in_background(&client, dest, b"first".to_vec());
    took.recv_timeout(OUTCOME_DEADLINE).unwrap();
    let s = server.clone();
    let drained = std::thread::spawn(move || s.shutdown_gracefully(OUTCOME_DEADLINE));
    assert!(wait_until(OUTCOME_DEADLINE, || server.info().draining));

    // A second request now is dropped: it never reaches a receive, and its caller
    // fails (a timeout, or the closed port once the server has shut down).
    let late = call_in_background(&client, dest, b"too late".to_vec());
    assert!(
        wait_until(OUTCOME_DEADLINE, || server
            .metrics()
            .dropped(homa::DropReason::NotServer)
            > 0),
        "the late request was not refused"
    );
    assert_eq!(server.info().server_rpcs, 1, "only the first is kept");

    go.send(()).unwrap();
    assert_eq!(
        first.recv_timeout(OUTCOME_DEADLINE).unwrap().unwrap(),
        pattern(100, 7)
    );
    assert_eq!(drained.join().unwrap(), 0);
    match late
        .recv_timeout(OUTCOME_DEADLINE)
        .expect("the late call never ended")
    {
        Err(e) => assert!(
            matches!(
                e.rpc_error(),
                Some(RpcError::Timeout | RpcError::NoSuchSocket)
            ),
            "{e:?}"
        ),
        Ok(m) => panic!(
            "a request sent during the drain was answered: {} bytes",
            m.len()
        ),
    }
    // The serving thread ended; receives on the shut-down socket say so.
    assert!(matches!(server.recv_request(), Err(RecvError::Shutdown)));
}

#[test]
fn the_drain_ends_at_its_deadline_and_reports_what_it_cut_off() {
    let (server, took, _go) = held_server(100); // never told to answer
    let dest = server.local_addr();
    let client = Socket::bind(addr(V4)).unwrap();
    let outcome = call_in_background(&client, dest, b"never answered".to_vec());
    took.recv_timeout(OUTCOME_DEADLINE).unwrap();
    assert_eq!(server.shutdown_gracefully(Duration::from_millis(200)), 1);
    assert!(server.info().shutdown);
    let r = outcome
        .recv_timeout(OUTCOME_DEADLINE)
        .expect("the call never ended");
    assert!(r.is_err(), "answered by a server that never replied");
}

#[test]
fn callers_draining_at_once_all_report_what_was_cut_off() {
    let (server, took, _go) = held_server(100); // never told to answer
    let dest = server.local_addr();
    let client = Socket::bind(addr(V4)).unwrap();
    let _outcome = call_in_background(&client, dest, b"held".to_vec());
    took.recv_timeout(OUTCOME_DEADLINE).unwrap();
    let s = server.clone();
    let patient = std::thread::spawn(move || s.shutdown_gracefully(OUTCOME_DEADLINE));
    assert!(wait_until(OUTCOME_DEADLINE, || server.info().draining));
    // The earlier deadline ends the drain for both, and both say what it cut off.
    assert_eq!(server.shutdown_gracefully(Duration::from_millis(100)), 1);
    assert_eq!(patient.join().unwrap(), 1);
}

#[test]
fn one_way_messages_queued_before_the_drain_are_still_handed_out() {
    let opts = homa::Options {
        one_way: true,
        ..server_opts(Transport::Udp)
    };
    let server = Socket::bind_with(addr(V4), opts).unwrap();
    let sender = Socket::bind(addr(V4)).unwrap();
    // Delivered: the server's engine has it whole (queued; nobody has received yet).
    sender
        .deliver(server.local_addr(), b"last words".to_vec())
        .unwrap();
    let s = server.clone();
    let drained = std::thread::spawn(move || s.shutdown_gracefully(OUTCOME_DEADLINE));
    assert!(wait_until(OUTCOME_DEADLINE, || server.info().draining));
    // A one-way message sent now is refused, and its sender told so.
    let late = sender.deliver(server.local_addr(), b"too late".to_vec());
    assert_eq!(
        late.unwrap_err().rpc_error(),
        Some(RpcError::NotAccepted),
        "a one-way message during the drain"
    );
    let m = server.recv().unwrap();
    assert_eq!(m.to_vec(), b"last words");
    assert_eq!(drained.join().unwrap(), 0);
}

#[test]
fn an_idle_server_shuts_down_at_once_and_twice_is_harmless() {
    let server = Socket::bind_with(addr(V4), server_opts(Transport::Udp)).unwrap();
    assert_eq!(server.shutdown_gracefully(OUTCOME_DEADLINE), 0);
    assert!(server.info().shutdown);
    assert_eq!(server.shutdown_gracefully(OUTCOME_DEADLINE), 0);
}

/// A tokio runtime without a timer: an aio drain needs none.
#[cfg(feature = "tokio")]
fn timerless_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .build()
        .unwrap()
}

#[cfg(feature = "tokio")]
#[test]
fn a_tokio_server_drains_too() {
    timerless_runtime().block_on(async {
        let server = homa::aio::Socket::bind_with(addr(V4), server_opts(Transport::Udp))
            .await
            .unwrap();
        let dest = server.local_addr();
        let (took_tx, took) = tokio::sync::oneshot::channel();
        let (go, go_rx) = tokio::sync::oneshot::channel::<()>();
        let s = server.clone();
        tokio::spawn(async move {
            let req = s.recv_request().await.unwrap();
            took_tx.send(()).unwrap();
            go_rx.await.unwrap();
            s.reply(&req, pattern(1_000_000, 9)).unwrap();
        });
        let client = Socket::bind(addr(V4)).unwrap();
        let outcome = call_in_background(&client, dest, b"the big one".to_vec());
        took.await.unwrap();
        // Two callers drain at once (a signal handler and a supervisor, say): both end.
        let s = server.clone();
        let drained = tokio::spawn(async move { s.shutdown_gracefully(OUTCOME_DEADLINE).await });
        let s = server.clone();
        let also = tokio::spawn(async move { s.shutdown_gracefully(OUTCOME_DEADLINE).await });
        let began = std::time::Instant::now();
        while !server.info().draining {
            assert!(
                !server.info().shutdown && began.elapsed() < OUTCOME_DEADLINE,
                "the drain never began"
            );
            tokio::task::yield_now().await;
        }
        go.send(()).unwrap();
        // (No tokio timer here: bounded by a thread's clock instead.)
        let began = std::time::Instant::now();
        while !(drained.is_finished() && also.is_finished()) {
            assert!(began.elapsed() < OUTCOME_DEADLINE, "a drain never ended");
            tokio::task::yield_now().await;
        }
        assert_eq!(drained.await.unwrap(), 0);
        assert_eq!(also.await.unwrap(), 0);
        let got = tokio::task::spawn_blocking(move || outcome.recv_timeout(OUTCOME_DEADLINE))
            .await
            .unwrap()
            .expect("no outcome for the call");
        assert_eq!(got.unwrap(), pattern(1_000_000, 9));
        assert!(server.info().shutdown);
    });
}

/// Options for a server of one-way messages whose engine stops its clock soon after the
/// last message (it keeps a client's history 101 ticks, not a minute): then nothing but
/// input or the socket's own deadlines wakes its driver.
fn quickly_idle_one_way_server() -> homa::Options {
    let mut opts = homa::Options {
        one_way: true,
        ..server_opts(Transport::Udp)
    };
    opts.config.dedup_horizon_ticks = opts.config.timeout_ticks + 1;
    opts.config.client_history_idle_ticks = opts.config.dedup_horizon_ticks;
    opts
}

/// Deliver one message to `dest` from a socket of its own, then wait until the
/// receiving engine has nothing left to time (a second: its histories go after 0.1 s).
fn deliver_one_then_idle(dest: std::net::SocketAddr) {
    let sender = Socket::bind(addr(V4)).unwrap();
    sender.deliver(dest, b"never taken".to_vec()).unwrap();
    sender.shutdown();
    std::thread::sleep(Duration::from_secs(1));
}

#[test]
fn a_drain_ends_when_the_last_queued_message_is_taken_even_when_idle() {
    // Taking the message is all that is left: it ends the drain then, not at the hour's
    // deadline (nothing else would look: no input comes, and the engine does not tick).
    let server = Socket::bind_with(addr(V4), quickly_idle_one_way_server()).unwrap();
    deliver_one_then_idle(server.local_addr());
    let s = server.clone();
    let (tx, drained) = mpsc::channel();
    std::thread::spawn(move || tx.send(s.shutdown_gracefully(Duration::from_secs(3600))));
    assert!(wait_until(OUTCOME_DEADLINE, || server.info().draining));
    assert_eq!(server.recv().unwrap().to_vec(), b"never taken");
    assert_eq!(
        drained.recv_timeout(OUTCOME_DEADLINE),
        Ok(0),
        "the drain went on after its last message was taken"
    );
}

#[cfg(feature = "tokio")]
#[test]
fn a_tokio_drain_ends_at_its_deadline_on_an_idle_socket() {
    // The aio socket's drain is ended by its driver task, which must wake for the
    // deadline itself: an idle engine has no tick to run (it used to wait forever).
    timerless_runtime().block_on(async {
        let server = homa::aio::Socket::bind_with(addr(V4), quickly_idle_one_way_server())
            .await
            .unwrap();
        let dest = server.local_addr();
        tokio::task::spawn_blocking(move || deliver_one_then_idle(dest))
            .await
            .unwrap();
        let s = server.clone();
        let drained =
            tokio::spawn(async move { s.shutdown_gracefully(Duration::from_millis(200)).await });
        // (No tokio timer here: bounded by a thread's clock instead.)
        let began = std::time::Instant::now();
        while !drained.is_finished() {
            assert!(
                began.elapsed() < OUTCOME_DEADLINE,
                "the drain outlived its deadline: {:?}",
                server.info()
            );
            tokio::task::yield_now().await;
        }
        assert_eq!(drained.await.unwrap(), 1, "the queued message was cut off");
        assert!(server.info().shutdown);
    });
}
