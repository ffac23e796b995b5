//! Helpers shared by the integration tests (loopback only).
#![allow(dead_code)]

use homa::{Options, Socket, Transport};
use homa_wire::{Body, Common, Data, Repr};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a test waits for an outcome that only a hang can prevent (a wake-up, a
/// timeout, a message on loopback): generous, since the machine may be busy; these
/// tests never assert speed.
pub const OUTCOME_DEADLINE: Duration = Duration::from_secs(30);

/// Whether this process may make network namespaces and set their links up: it holds
/// `CAP_SYS_ADMIN` and `CAP_NET_ADMIN`, as root usually does and a container's root
/// often does not. Tests that need namespaces skip, with a message, where it may not.
pub fn may_make_namespaces() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let caps = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(caps.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0 && caps & (1 << CAP_SYS_ADMIN) != 0)
}

pub const V4: &str = "127.0.0.1:0";
pub const V6: &str = "[::1]:0";

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Options for a UDP client whose outgoing buffer budget holds only `bytes`.
pub fn small_budget(bytes: u64) -> Options {
    let mut o = client_opts(Transport::Udp);
    o.config.max_outgoing_held = bytes;
    o
}

/// `small_budget`, for a client whose request to a peer that never answers must hold
/// the budget until the test gives it up (see [`patient`]).
pub fn small_patient_budget(bytes: u64) -> Options {
    patient(small_budget(bytes))
}

/// `o` with RPCs that time out after 100 s, not 0.1 s: for a test in which an RPC whose
/// peer stays silent must stay live until the test ends it, which a loaded machine could
/// otherwise outlast between two lines of the test.
pub fn patient(mut o: Options) -> Options {
    o.config.timeout_ticks = 100_000;
    o.config.dedup_horizon_ticks = 200_000;
    o.config.client_history_idle_ticks = 200_000;
    o
}

/// Options for a server on any free port.
pub fn server_opts(transport: Transport) -> Options {
    Options {
        transport,
        server: Some(true),
        ..Default::default()
    }
}

pub fn client_opts(transport: Transport) -> Options {
    Options {
        transport,
        ..Default::default()
    }
}

/// Raw IP needs CAP_NET_RAW: find out by trying, and say so when skipping.
pub fn raw_available(test: &str) -> bool {
    match Socket::bind_with(addr(V4), client_opts(Transport::RawIp)) {
        Ok(_) => true,
        Err(homa::BindError::PermissionDenied(_)) => {
            println!("skipping raw-IP test {test}: needs CAP_NET_RAW");
            false
        }
        Err(e) => panic!("raw bind failed unexpectedly: {e}"),
    }
}

/// A deterministic payload of `len` bytes, different for each `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The response an echo server sends for `req`: the bytes reversed (so a response can
/// not be mistaken for its request).
pub fn answer(req: &[u8]) -> Vec<u8> {
    req.iter().rev().copied().collect()
}

/// A thread that answers every request on `server` with its own bytes, until the socket
/// shuts down.
pub fn echo_on(server: &Socket) {
    let s = server.clone();
    std::thread::spawn(move || {
        while let Ok(req) = s.recv_request() {
            let body = req.to_vec();
            if s.reply(&req, body).is_err() {
                break;
            }
        }
    });
}

/// A blocking server answering every request with `answer(request)`, on `threads`
/// threads. Returns the socket (drop or shut it down to stop the threads).
pub fn echo_server(bind: &str, transport: Transport, threads: usize) -> Socket {
    let server = Socket::bind_with(addr(bind), server_opts(transport)).expect("bind server");
    for _ in 0..threads {
        let s = server.clone();
        std::thread::spawn(move || {
            while let Ok(req) = s.recv() {
                assert!(req.is_request());
                let resp = answer(&req.to_vec());
                if s.reply(&req, resp).is_err() {
                    break;
                }
            }
        });
    }
    server
}

/// `threads` threads, each making `rpcs` calls of `len` bytes to `dest` through
/// `client`: every call must come back with its own answer ([`answer`] of its request),
/// all within `deadline`.
pub fn calls_from_threads(
    client: &std::sync::Arc<Socket>,
    dest: SocketAddr,
    (threads, rpcs, len): (usize, usize, usize),
    deadline: Duration,
) {
    let (done, finished) = std::sync::mpsc::channel();
    for t in 0..threads {
        let (client, done) = (client.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 0..rpcs {
                let req = pattern(len, (t * rpcs + i) as u64);
                let resp = client.call(dest, req.as_slice()).unwrap_or_else(|e| {
                    panic!("thread {t} call {i}: {e}");
                });
                assert!(resp == answer(&req), "thread {t} call {i}: wrong bytes");
            }
            done.send(t).unwrap();
        });
    }
    drop(done);
    for _ in 0..threads {
        finished
            .recv_timeout(deadline)
            .expect("every thread completes its calls (a panic ends one early)");
    }
}

/// Wait until `cond` holds, checking it again and again, for at most `limit`.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

/// A tokio server socket on `bind` answering every request with [`answer`] of it, from a
/// task of the current runtime, until the socket shuts down. A request whose client gave
/// it up before the answer (`UnknownRpc`) is skipped, as a server must.
#[cfg(feature = "tokio")]
pub async fn tokio_echo_server(bind: &str, transport: Transport) -> homa::aio::Socket {
    let server = homa::aio::Socket::bind_with(addr(bind), server_opts(transport))
        .await
        .unwrap();
    let s = server.clone();
    tokio::spawn(async move {
        while let Ok(req) = s.recv_request().await {
            let resp = answer(&req.to_vec());
            match s.reply(&req, resp) {
                Ok(()) | Err(homa::ReplyError::UnknownRpc(_)) => {}
                Err(_) => break,
            }
        }
    });
    server
}

/// A Homa packet as it travels over UDP: a whole message `payload` in one DATA packet,
/// or (`None`) a bodiless RPC_UNKNOWN.
pub fn packet(sport: u16, dport: u16, sender_id: u64, body: Option<&[u8]>) -> Vec<u8> {
    let common = Common {
        sport,
        dport,
        sender_id,
    };
    let (body, payload) = match body {
        Some(p) => (
            Body::Data(Data {
                message_length: p.len() as u32,
                incoming: p.len() as u32,
                ack: None,
                cutoff_version: 1,
                retransmit: false,
                offset: 0,
            }),
            p,
        ),
        None => (Body::RpcUnknown, &[][..]),
    };
    let mut buf = vec![0u8; 2_048];
    let len = Repr { common, body }.emit(payload, &mut buf).unwrap();
    buf.truncate(len);
    buf
}
