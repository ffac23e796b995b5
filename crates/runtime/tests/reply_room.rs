//! `reply_when_room` (both APIs): a server whose budget for responses
//! (`max_outgoing_held`) is used up by responses not yet acknowledged waits for room
//! instead of failing with `WouldBlock`, as `reply` does; room given back lets it go on,
//! and a shutdown ends the wait.

mod common;

use common::*;
use homa::{Message, ReplyError, Socket};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

/// How long to wait for an outcome that only a hang can prevent.
const DEADLINE: Duration = Duration::from_secs(120);

/// A server socket whose responses may hold at most `budget` bytes at once.
fn server_with_budget(budget: u64) -> Socket {
    let mut o = server_opts(homa::Transport::Udp);
    o.config.max_outgoing_held = budget;
    Socket::bind_with(addr(V4), o).expect("bind server")
}

/// The same, giving up a response its client never acknowledges only after 100 s.
fn patient_server_with_budget(budget: u64) -> Socket {
    let mut o = patient(server_opts(homa::Transport::Udp));
    o.config.max_outgoing_held = budget;
    Socket::bind_with(addr(V4), o).expect("bind server")
}

#[test]
fn replies_wait_for_response_room_instead_of_failing() {
    // 16 client threads, 5 RPCs each, answered with 8,000 bytes by a server whose
    // responses may hold 20,000: at most two responses are unacknowledged at once, so
    // nearly every reply waits. Each call must get its own answer.
    const THREADS: usize = 16;
    const RPCS: usize = 5;
    let server = server_with_budget(20_000);
    for _ in 0..3 {
        let s = server.clone();
        std::thread::spawn(move || {
            while let Ok(req) = s.recv() {
                // A plain reply would fail here with WouldBlock (checked below).
                match s.reply_when_room(&req, answer(&req.to_vec())) {
                    Ok(()) => {}
                    Err(ReplyError::Shutdown) => break,
                    Err(e) => panic!("reply failed: {e}"),
                }
            }
        });
    }
    let dest = server.local_addr();
    let client = Arc::new(Socket::bind(addr(V4)).unwrap());
    calls_from_threads(&client, dest, (THREADS, RPCS, 8_000), DEADLINE);
    assert_eq!(
        client.metrics().responses_delivered,
        (THREADS * RPCS) as u64
    );
    server.shutdown();
}

/// A client that never answers anything: a plain UDP socket that sends a whole request
/// (one DATA packet) with RPC id `id`.
struct SilentClient(UdpSocket);

impl SilentClient {
    fn new() -> SilentClient {
        SilentClient(UdpSocket::bind("127.0.0.1:0").unwrap())
    }

    fn request(&self, server: SocketAddr, id: u64) {
        let sport = self.0.local_addr().unwrap().port();
        let bytes = packet(sport, server.port(), id, Some(b"please answer"));
        self.0.send_to(&bytes, server).unwrap();
    }

    /// Acknowledge the response to request `id`: the server lets it go.
    fn ack(&self, server: SocketAddr, id: u64) {
        let common = homa_wire::Common {
            sport: self.0.local_addr().unwrap().port(),
            dport: server.port(),
            sender_id: id,
        };
        let body = homa_wire::Body::Ack(homa_wire::Acks::new(&[]).unwrap());
        let mut buf = vec![0u8; 2_048];
        let len = homa_wire::Repr { common, body }
            .emit(&[], &mut buf)
            .unwrap();
        self.0.send_to(&buf[..len], server).unwrap();
    }
}

/// The next request `server` receives.
fn next_request(server: &Socket) -> Message {
    let req = server.recv_timeout(DEADLINE).expect("a request");
    assert!(req.is_request());
    req
}

/// Use up `server`'s budget of 10,000 bytes with the response to `holder`'s request
/// `id`, which `holder` does not acknowledge; then return the request with id 2 from
/// `next`, which the server has yet to answer.
fn budget_used_up(server: &Socket, holder: &SilentClient, id: u64, next: &SilentClient) -> Message {
    let dest = server.local_addr();
    holder.request(dest, id);
    let first = next_request(server);
    server.reply(&first, vec![1u8; 10_000]).unwrap();
    next.request(dest, 2);
    next_request(server)
}

/// `reply_when_room` to `request`, on a thread of its own.
fn reply_waiting(
    server: &Socket,
    request: Message,
) -> std::thread::JoinHandle<Result<(), ReplyError>> {
    let s = server.clone();
    std::thread::spawn(move || s.reply_when_room(&request, vec![2u8; 1_000]))
}

#[test]
fn a_waiting_reply_goes_on_when_room_is_given_back_and_ends_at_shutdown() {
    let (a, b, c) = (
        SilentClient::new(),
        SilentClient::new(),
        SilentClient::new(),
    );
    // (Each phase's server is new, so ids may repeat.)
    let server = server_with_budget(10_000);
    let second = budget_used_up(&server, &a, 2, &b);
    // The first client stays silent, so the server gives its response up after a
    // timeout, which gives its bytes back: the waiting reply then goes. (Whether it
    // waited is checked below, with a server that does not time out: this one may have
    // by now, on a loaded machine.)
    let outcome = wait_for(reply_waiting(&server, second));
    assert!(
        matches!(outcome, Ok(())),
        "the reply went once room came back: {outcome:?}"
    );
    server.shutdown();

    // With a server that keeps an unacknowledged response for the whole test, the reply
    // finds the budget used up and waits, until the client acknowledges the response
    // that holds it.
    let server = patient_server_with_budget(10_000);
    let second = budget_used_up(&server, &a, 2, &b);
    let plain = server.reply(&second, vec![2u8; 1_000]);
    assert!(
        matches!(plain, Err(ReplyError::WouldBlock)),
        "the budget is used up: {plain:?}"
    );
    let waiting = reply_waiting(&server, second);
    std::thread::sleep(Duration::from_millis(20));
    assert!(!waiting.is_finished(), "the reply went without room");
    a.ack(server.local_addr(), 2);
    let outcome = wait_for(waiting);
    assert!(
        matches!(outcome, Ok(())),
        "the reply went once room came back: {outcome:?}"
    );
    server.shutdown();

    // Such a server's waiting reply can only end by the shutdown.
    let server = patient_server_with_budget(10_000);
    let third = budget_used_up(&server, &a, 4, &c);
    let waiting = reply_waiting(&server, third);
    // (Shut down before the reply first tried, it fails the same way.)
    std::thread::sleep(Duration::from_millis(20));
    server.shutdown();
    let outcome = wait_for(waiting);
    assert!(
        matches!(outcome, Err(ReplyError::Shutdown)),
        "the shutdown ended the wait: {outcome:?}"
    );
}

/// The thread's outcome, within the deadline.
fn wait_for<T: Send + 'static>(t: std::thread::JoinHandle<T>) -> T {
    assert!(
        wait_until(DEADLINE, || t.is_finished()),
        "the waiting reply ended"
    );
    t.join().unwrap()
}

#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_replies_wait_for_response_room_instead_of_failing() {
    const TASKS: usize = 32;
    let mut o = server_opts(homa::Transport::Udp);
    o.config.max_outgoing_held = 20_000;
    let server = homa::aio::Socket::bind_with(addr(V4), o).await.unwrap();
    let dest = server.local_addr();
    let s = server.clone();
    tokio::spawn(async move {
        while let Ok(req) = s.recv().await {
            let s = s.clone();
            // Each reply waits in a task of its own: many wait at once.
            tokio::spawn(async move {
                let resp = answer(&req.to_vec());
                match s.reply_when_room(&req, resp).await {
                    Ok(()) | Err(ReplyError::Shutdown) => {}
                    Err(e) => panic!("reply failed: {e}"),
                }
            });
        }
    });
    let client = homa::aio::Socket::bind(addr(V4)).await.unwrap();
    let mut calls = Vec::new();
    for t in 0..TASKS {
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            let req = pattern(8_000, t as u64);
            let resp = client.call(dest, req.clone()).await.unwrap();
            assert!(resp == answer(&req), "task {t}: wrong bytes");
        }));
    }
    for c in calls {
        tokio::time::timeout(DEADLINE, c)
            .await
            .expect("every call completes")
            .unwrap();
    }
    assert_eq!(client.metrics().responses_delivered, TASKS as u64);
    server.shutdown();
}

#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_given_up_while_it_waits_leaves_the_room_to_the_others() {
    // The budget (10,000 bytes) is held by a response whose client acknowledges it only
    // with its next request (the server never asks, so nothing else frees it). A reply
    // of 6,000 bytes waits and is given up (its future dropped); another of 6,000 waits
    // behind it. When the room comes back, it must go to the reply still waiting: had the
    // one given up kept its place, it would be offered the room first and take 6,000 of
    // it for no one, and the other would wait for ever.
    let mut o = server_opts(homa::Transport::Udp);
    o.config.max_outgoing_held = 10_000;
    o.config.request_ack_ticks = 1 << 24;
    let server = homa::aio::Socket::bind_with(addr(V4), o).await.unwrap();
    let dest = server.local_addr();
    let client = homa::aio::Socket::bind(addr(V4)).await.unwrap();
    let c = client.clone();
    let first = tokio::spawn(async move { c.call(dest, b"first".to_vec()).await });
    let req = server.recv_request().await.unwrap();
    server.reply(&req, vec![1u8; 10_000]).unwrap();
    assert_eq!(first.await.unwrap().unwrap().len(), 10_000);

    let (b, c) = (SilentClient::new(), SilentClient::new());
    b.request(dest, 2);
    c.request(dest, 2);
    let (req_b, req_c) = (
        server.recv_request().await.unwrap(),
        server.recv_request().await.unwrap(),
    );
    // Nothing gives room back before the client's next request: this one waits,
    // and is given up.
    let given_up = tokio::time::timeout(
        Duration::from_millis(50),
        server.reply_when_room(&req_b, vec![2u8; 6_000]),
    )
    .await;
    assert!(given_up.is_err(), "no room came back: {given_up:?}");
    let s = server.clone();
    let waiting = tokio::spawn(async move { s.reply_when_room(&req_c, vec![3u8; 6_000]).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    // The client's next request carries its ack of the first response, which gives
    // the 10,000 bytes back. (Its own response is answered once it arrives.)
    let c = client.clone();
    let second = tokio::spawn(async move { c.call(dest, b"second".to_vec()).await });
    let req = server.recv_request().await.unwrap();
    let outcome = tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("the waiting reply went once room came back")
        .unwrap();
    assert!(matches!(outcome, Ok(())), "{outcome:?}");
    server.reply(&req, b"ok".to_vec()).unwrap();
    assert_eq!(second.await.unwrap().unwrap().to_vec(), b"ok");
    server.shutdown();
}

#[test]
fn a_client_socket_dropped_after_its_call_acknowledges_its_response() {
    // A server that would keep an unacknowledged response for 100 s: the room of each
    // response must come back because its client, dropped right after its call, sent the
    // ack it owed as it closed (no later request of its would carry it).
    let server = patient_server_with_budget(1 << 20);
    let s = server.clone();
    std::thread::spawn(move || {
        while let Ok(req) = s.recv() {
            if s.reply(&req, answer(&req.to_vec())).is_err() {
                break;
            }
        }
    });
    let dest = server.local_addr();
    for i in 0..5u64 {
        let client = Socket::bind(addr(V4)).unwrap();
        let req = pattern(8_000, i);
        let resp = client.call(dest, req.as_slice()).unwrap();
        assert!(resp == answer(&req), "call {i}: wrong bytes");
        drop(resp);
        drop(client);
    }
    assert!(
        wait_until(DEADLINE, || server.metrics().outgoing_responses_held == 0),
        "every response acknowledged: {} bytes still held",
        server.metrics().outgoing_responses_held
    );
    server.shutdown();
}
