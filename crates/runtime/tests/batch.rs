//! Batching must not change what the application sees: many threads and tasks sending
//! and receiving at once (in batches or one message at a time) get every message exactly
//! once, by exactly one receiver, with the right bytes; a batch with one bad destination
//! fails that request alone. Outcomes only, with generous deadlines: nothing here depends
//! on how fast the machine is.

mod common;

use common::*;
use homa::{Message, Options, RecvError, RpcError, SendError, Socket, Transport};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// However slow the machine, every outcome here arrives well within this.
const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `f` on its own thread and fails the test if it does not finish within
/// [`DEADLINE`] (a hang is a failure, not a stuck test run).
fn within_deadline<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("{what}: no outcome within {DEADLINE:?}"))
}

/// Request `i` of client `c`: 8 bytes naming it, then a pattern (some requests span
/// several packets).
fn request(c: u64, i: u64) -> Vec<u8> {
    let len = [20, 300, 1500, 5000, 20_000][(i % 5) as usize];
    let mut v = ((c << 32) | i).to_le_bytes().to_vec();
    v.extend(pattern(len, c * 1000 + i));
    v
}

fn key_of(req: &[u8]) -> u64 {
    u64::from_le_bytes(req[..8].try_into().unwrap())
}

/// Every request key a server executed, with how many times (each must be 1).
type Executions = Arc<Mutex<HashMap<u64, u32>>>;

/// A server answering with `answer(request)` on `batched` threads that take requests in
/// batches and reply with a `Batch`, and `single` threads that take one at a time.
fn mixed_server(opts: Options, batched: usize, single: usize) -> (Socket, Executions) {
    let server = Socket::bind_with(addr(V4), opts).unwrap();
    let executed: Executions = Arc::default();
    for _ in 0..batched {
        let (s, ex) = (server.clone(), executed.clone());
        std::thread::spawn(move || {
            let mut requests = Vec::new();
            while s.recv_request_batch(&mut requests, 16).is_ok() {
                let mut replies = s.batch();
                for r in requests.drain(..) {
                    let bytes = r.to_vec();
                    *ex.lock().unwrap().entry(key_of(&bytes)).or_default() += 1;
                    replies.reply(&r, answer(&bytes)).unwrap();
                }
            }
        });
    }
    for _ in 0..single {
        let (s, ex) = (server.clone(), executed.clone());
        std::thread::spawn(move || {
            while let Ok(r) = s.recv_request() {
                let bytes = r.to_vec();
                *ex.lock().unwrap().entry(key_of(&bytes)).or_default() += 1;
                s.reply(&r, answer(&bytes)).unwrap();
            }
        });
    }
    (server, executed)
}

/// Checks a response against the request it answers (named by its cookie).
fn check(c: u64, m: &Message) {
    let want = answer(&request(c, m.cookie()));
    assert!(
        m.to_vec() == want,
        "client {c}: response to request {} has the wrong bytes",
        m.cookie()
    );
}

#[test]
fn threads_sending_and_receiving_in_batches_get_each_message_once() {
    batched_clients_get_each_message_once(server_opts(Transport::Udp));
}

/// Where the kernel has no UDP GSO or GRO, every packet is its own datagram in the
/// `sendmmsg`/`recvmmsg` batches. Forced here by the options, at a 1500-byte MTU so that
/// multi-packet messages are common: the same outcomes.
#[test]
fn without_gso_and_gro_batches_deliver_the_same() {
    let mut opts = server_opts(Transport::Udp);
    opts.gso = false;
    opts.gro = false;
    opts.auto_mtu = false;
    opts.config.mtu = 1500;
    let server = batched_clients_get_each_message_once(opts);
    let info = server.info();
    assert!(!info.gso && !info.gro, "GSO or GRO on against the options");
}

/// Four client threads, each keeping 32 requests outstanding with batch sends and taking
/// outcomes in batches (odd ones also one at a time), against a server with batch and
/// single receivers: every response right and delivered once, every request executed
/// once. Returns the server socket.
fn batched_clients_get_each_message_once(opts: Options) -> Socket {
    const CLIENTS: u64 = 4;
    const PER_CLIENT: u64 = 400;
    let (server, executed) = mixed_server(opts.clone(), 2, 2);
    let dest = server.local_addr();
    let results = within_deadline("batched clients", move || {
        let mut handles = Vec::new();
        for c in 0..CLIENTS {
            let mut opts = opts.clone();
            opts.server = None;
            let gso_allowed = opts.gso;
            handles.push(std::thread::spawn(move || {
                let client = Socket::bind_with(addr(V4), opts).unwrap();
                assert!(
                    gso_allowed || !client.info().gso,
                    "GSO on against the options"
                );
                let mut got = HashMap::new();
                let mut outcomes = Vec::new();
                let mut next = 0;
                let mut outstanding = 0;
                while got.len() < PER_CLIENT as usize {
                    // Keep up to 32 outstanding, sent in batches.
                    let mut batch = client.batch();
                    while outstanding < 32 && next < PER_CLIENT {
                        batch.send_request(dest, request(c, next), next).unwrap();
                        next += 1;
                        outstanding += 1;
                    }
                    batch.send();
                    // Two receivers on one socket: this thread takes batches, and an
                    // odd client also takes single messages.
                    let n = if c % 2 == 1 && outstanding % 3 == 0 {
                        outcomes.push(client.recv());
                        1
                    } else {
                        client.recv_batch(&mut outcomes, 16).unwrap()
                    };
                    assert!((1..=16).contains(&n));
                    for o in outcomes.drain(..) {
                        let m = o.unwrap_or_else(|e| panic!("client {c}: RPC failed: {e}"));
                        check(c, &m);
                        assert!(got.insert(m.cookie(), ()).is_none(), "delivered twice");
                        outstanding -= 1;
                    }
                }
                got.len()
            }));
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(results, vec![PER_CLIENT as usize; CLIENTS as usize]);
    let executed = executed.lock().unwrap();
    assert_eq!(executed.len(), (CLIENTS * PER_CLIENT) as usize);
    assert!(
        executed.values().all(|&n| n == 1),
        "a request executed twice"
    );
    drop(executed);
    server
}

#[test]
fn many_threads_waiting_on_one_socket_share_its_outcomes_exactly_once() {
    // One client socket, its RPCs' outcomes taken by six threads at once: three take
    // batches, three take one at a time. Every response reaches exactly one of them.
    const RPCS: u64 = 1200;
    const WINDOW: u64 = 256;
    let (server, executed) = mixed_server(server_opts(Transport::Udp), 1, 1);
    let dest = server.local_addr();
    let client = Socket::bind(addr(V4)).unwrap();
    let (tx, taken) = mpsc::channel::<u64>();
    let mut receivers = Vec::new();
    for t in 0..6 {
        let (c, tx) = (client.clone(), tx.clone());
        receivers.push(std::thread::spawn(move || loop {
            let mut outcomes = Vec::new();
            let r = if t % 2 == 0 {
                c.recv_batch(&mut outcomes, 8).map(|_| ())
            } else {
                c.recv().map(|m| outcomes.push(Ok(m)))
            };
            match r {
                Err(RecvError::Shutdown) => return,
                Err(e) => panic!("receiver {t}: {e}"),
                Ok(()) => {}
            }
            for o in outcomes {
                let m = o.unwrap_or_else(|e| panic!("receiver {t}: RPC failed: {e}"));
                check(7, &m);
                let _ = tx.send(m.cookie());
            }
        }));
    }
    drop(tx);
    let mut all = Vec::new();
    let take = |all: &mut Vec<u64>| {
        let cookie = taken
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("no outcome within {DEADLINE:?}: {} of {RPCS}", all.len()));
        all.push(cookie);
    };
    for i in 0..RPCS {
        client.send_request(dest, request(7, i), i).unwrap();
        // At most WINDOW outstanding (outgoing buffer space is bounded).
        while i + 1 - all.len() as u64 > WINDOW {
            take(&mut all);
        }
    }
    while (all.len() as u64) < RPCS {
        take(&mut all);
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (0..RPCS).collect::<Vec<_>>(),
        "each outcome exactly once"
    );
    client.shutdown();
    for r in receivers {
        r.join().unwrap();
    }
    assert_eq!(executed.lock().unwrap().len(), RPCS as usize);
}

#[test]
fn one_bad_destination_in_a_batch_fails_that_request_alone() {
    let (server, _) = mixed_server(server_opts(Transport::Udp), 1, 0);
    let good = server.local_addr();
    // A port nobody listens on: its RPC fails (ICMP port unreachable), the others do not.
    let gone = UdpSocket::bind("127.0.0.1:0").unwrap();
    let nobody = gone.local_addr().unwrap();
    drop(gone);
    let v6: SocketAddr = "[::1]:4000".parse().unwrap();
    let client = Socket::bind(addr(V4)).unwrap();
    let outcomes = within_deadline("batch with bad destinations", move || {
        let mut batch = client.batch();
        let mut ids = HashMap::new();
        for i in 0..10u64 {
            let dest = if i == 4 { nobody } else { good };
            ids.insert(batch.send_request(dest, request(3, i), i).unwrap(), i);
        }
        // Refused at once, and only that request: the batch goes on.
        assert!(matches!(
            batch.send_request(v6, request(3, 99), 99),
            Err(SendError::AddressFamily { .. })
        ));
        assert_eq!(batch.len(), 10);
        batch.send();
        let mut outcomes = HashMap::new();
        let mut buf = Vec::new();
        while outcomes.len() < 10 {
            client.recv_batch(&mut buf, 64).unwrap();
            for o in buf.drain(..) {
                let (cookie, ok) = match o {
                    Ok(m) => {
                        check(3, &m);
                        (m.cookie(), Ok(()))
                    }
                    Err(RecvError::Rpc { cookie, error, .. }) => (cookie, Err(error)),
                    Err(e) => panic!("{e}"),
                };
                assert!(outcomes.insert(cookie, ok).is_none());
            }
        }
        outcomes
    });
    for i in 0..10u64 {
        match (i, &outcomes[&i]) {
            (4, Err(RpcError::NoSuchSocket | RpcError::Timeout)) => {}
            (4, other) => panic!("request to the closed port: {other:?}"),
            (_, Ok(())) => {}
            (i, Err(e)) => panic!("request {i} to the server failed: {e}"),
        }
    }
}

#[test]
fn a_batch_dropped_unsent_still_sends_and_an_empty_one_sends_nothing() {
    let (server, executed) = mixed_server(server_opts(Transport::Udp), 1, 0);
    let dest = server.local_addr();
    let client = Socket::bind(addr(V4)).unwrap();
    {
        let empty = client.batch();
        assert!(empty.is_empty());
    }
    within_deadline("dropped batch", move || {
        {
            let mut batch = client.batch();
            for i in 0..5 {
                batch.send_request(dest, request(5, i), i).unwrap();
            }
            // Dropped, not sent: it sends as it goes.
        }
        let mut got = 0;
        let mut buf = Vec::new();
        while got < 5 {
            got += client.recv_batch(&mut buf, 2).unwrap();
            assert!(buf.len() <= 2 * 5);
        }
        for o in buf {
            check(5, &o.unwrap());
        }
    });
    assert_eq!(executed.lock().unwrap().len(), 5);
}

#[test]
fn batch_receives_end_with_shutdown() {
    let sock = Socket::bind_with(addr(V4), server_opts(Transport::Udp)).unwrap();
    let s = sock.clone();
    let waiting = std::thread::spawn(move || {
        let mut v = Vec::new();
        let r = s.recv_request_batch(&mut v, 8);
        (r.map_err(|e| e.to_string()), v.len())
    });
    // (Shut down once it waits, if it gets there first; either way it must end.)
    let start = std::time::Instant::now();
    while sock.info().waiters == 0 && start.elapsed() < DEADLINE {
        std::thread::yield_now();
    }
    sock.shutdown();
    let (r, n) = within_deadline("shutdown", move || waiting.join().unwrap());
    assert_eq!(r, Err(RecvError::Shutdown.to_string()));
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_tasks_calling_at_once_and_taking_batches_get_each_message_once() {
    const TASKS: u64 = 48;
    const PER_TASK: u64 = 40;
    // The server: a tokio socket taking requests in batches on two tasks.
    let opts = server_opts(Transport::Udp);
    let server = homa::aio::Socket::bind_with(addr(V4), opts).await.unwrap();
    let dest = server.local_addr();
    let server = Arc::new(server);
    let executed: Executions = Arc::default();
    for _ in 0..2 {
        let (s, ex) = (server.clone(), executed.clone());
        tokio::spawn(async move {
            let mut requests = Vec::new();
            while s.recv_request_batch(&mut requests, 16).await.is_ok() {
                let mut replies = s.batch();
                for r in requests.drain(..) {
                    let bytes = r.to_vec();
                    *ex.lock().unwrap().entry(key_of(&bytes)).or_default() += 1;
                    replies.reply(&r, answer(&bytes)).unwrap();
                }
            }
        });
    }
    // Many tasks calling on one client socket at once (their requests leave together,
    // from the driver task), plus one task taking batches of its own requests' outcomes.
    let client = Arc::new(homa::aio::Socket::bind(addr(V4)).await.unwrap());
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                let resp = c.call(dest, request(t, i)).await.unwrap();
                assert!(resp.to_vec() == answer(&request(t, i)), "task {t} call {i}");
            }
        }));
    }
    let c = client.clone();
    let batcher = tokio::spawn(async move {
        {
            // (A batch is filled and sent without awaiting in between.)
            let mut batch = c.batch();
            for i in 0..PER_TASK {
                batch.send_request(dest, request(1000, i), i).unwrap();
            }
            batch.send();
        }
        let mut got = Vec::new();
        let mut buf = Vec::new();
        while got.len() < PER_TASK as usize {
            c.recv_batch(&mut buf, 8).await.unwrap();
            for o in buf.drain(..) {
                let m = o.unwrap();
                check(1000, &m);
                got.push(m.cookie());
            }
        }
        got.sort_unstable();
        assert_eq!(got, (0..PER_TASK).collect::<Vec<_>>());
    });
    tokio::time::timeout(DEADLINE, async {
        for t in tasks {
            t.await.unwrap();
        }
        batcher.await.unwrap();
    })
    .await
    .expect("every call completes within the deadline");
    let executed = executed.lock().unwrap();
    assert_eq!(executed.len(), ((TASKS + 1) * PER_TASK) as usize);
    assert!(
        executed.values().all(|&n| n == 1),
        "a request executed twice"
    );
}
