//! Request/response over loopback sockets: every size class, both transports, both
//! address families, many threads.

mod common;

use common::*;
use homa::{MessageKind, Socket, Transport};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SIZES: [usize; 9] = [
    1, 100, 1400, 1500, 65_535, 65_536, 65_537, 200_000, 1_000_000,
];

fn exchange_all_sizes(bind: &str, transport: Transport) {
    let server = echo_server(bind, transport, 1);
    let dest = server.local_addr();
    let client = Socket::bind_with(addr(bind), client_opts(transport)).unwrap();
    assert!(
        client.local_addr().port() >= 32768,
        "automatic ports start at 32768"
    );
    for (i, &len) in SIZES.iter().enumerate() {
        let req = pattern(len, i as u64);
        // send_request + recv: the response carries kind, id, peer and cookie.
        let id = client
            .send_request(dest, req.clone(), 1000 + i as u64)
            .unwrap();
        let resp = client.recv().unwrap();
        assert_eq!(resp.kind(), MessageKind::Response);
        assert_eq!(resp.id(), id);
        assert_eq!(resp.cookie(), 1000 + i as u64);
        assert_eq!(resp.peer(), dest);
        assert_eq!(resp.len(), len);
        assert_eq!(
            resp.as_slice().is_some(),
            len <= 65_536,
            "contiguous up to one bpage"
        );
        assert_eq!(resp.chunks().map(<[u8]>::len).sum::<usize>(), len);
        assert!(resp == answer(&req), "{len}-byte response corrupted");
        assert_eq!(resp.bytes().len(), len);
        // call: the same through one operation.
        let resp = client.call(dest, req.as_slice()).unwrap();
        assert!(resp == answer(&req));
    }
    let m = client.metrics();
    assert_eq!(m.responses_delivered, 2 * SIZES.len() as u64);
    server.shutdown();
}

#[test]
fn udp_ipv4_every_size() {
    exchange_all_sizes(V4, Transport::Udp);
}

#[test]
fn udp_ipv6_every_size() {
    exchange_all_sizes(V6, Transport::Udp);
}

#[test]
fn raw_ipv4_every_size() {
    if raw_available("raw_ipv4_every_size") {
        exchange_all_sizes(V4, Transport::RawIp);
    }
}

#[test]
fn raw_ipv6_every_size() {
    if raw_available("raw_ipv6_every_size") {
        exchange_all_sizes(V6, Transport::RawIp);
    }
}

/// A server bound to the wildcard address answers from whichever of the host's addresses
/// it was asked at: a client takes a response only from the address its request went
/// to. Loopback gives every host several (all of 127.0.0.0/8); short messages and long
/// ones (GRANTs and RESENDs too), clients bound to each address and to the wildcard.
#[test]
fn a_wildcard_server_answers_from_the_address_it_was_asked_at() {
    wildcard_server_answers(Transport::Udp);
}

#[test]
fn a_wildcard_raw_ip_server_answers_from_the_address_it_was_asked_at() {
    if raw_available("a_wildcard_raw_ip_server_answers_from_the_address_it_was_asked_at") {
        wildcard_server_answers(Transport::RawIp);
    }
}

/// Raw IP hands every protocol-146 packet to every raw socket, so the runtime picks the
/// Homa socket itself, as the kernel does for UDP: servers on one port and different
/// addresses each run only the requests sent to their own address, and a server bound
/// to one address runs none sent to another. (Two such servers, in one process or two,
/// each used to take every request for the port: both ran it, and their answers mixed
/// into one response.)
#[test]
fn raw_ip_sockets_on_one_port_take_only_their_own_address() {
    if !raw_available("raw_ip_sockets_on_one_port_take_only_their_own_address") {
        return;
    }
    let serve = |at: &str, fill: u8| {
        let server = Socket::bind_with(addr(at), server_opts(Transport::RawIp)).unwrap();
        let ran = Arc::new(Mutex::new(0usize));
        let (s, count) = (server.clone(), ran.clone());
        std::thread::spawn(move || {
            while let Ok(req) = s.recv_request() {
                *count.lock().unwrap() += 1;
                if s.reply(&req, vec![fill; req.len()]).is_err() {
                    break;
                }
            }
        });
        (server, ran)
    };
    let (a, ran_a) = serve("127.0.0.2:4300", b'A');
    let (b, ran_b) = serve("127.0.0.3:4300", b'B');
    let (c, ran_c) = serve("127.0.0.4:4301", b'C');
    let client = Socket::bind_with(addr("127.0.0.1:0"), client_opts(Transport::RawIp)).unwrap();
    for len in [100, 200_000, 100, 200_000] {
        for (to, fill) in [("127.0.0.2:4300", b'A'), ("127.0.0.3:4300", b'B')] {
            let resp = client
                .call_timeout(addr(to), vec![0; len], OUTCOME_DEADLINE)
                .unwrap_or_else(|e| panic!("{len} B to {to}: {e:?}"));
            assert!(
                resp.len() == len && resp.to_vec().iter().all(|&x| x == fill),
                "{len} B to {to}: a response of {} bytes, not all {:?}",
                resp.len(),
                fill as char
            );
        }
    }
    // Port 4301 of an address no socket holds: nobody runs it.
    let stray = client.call_timeout(addr("127.0.0.5:4301"), vec![0; 100], Duration::from_secs(1));
    assert!(stray.is_err(), "{:?}", stray.map(|m| m.len()));
    for s in [&a, &b, &c] {
        s.shutdown();
    }
    assert_eq!(*ran_a.lock().unwrap(), 4);
    assert_eq!(*ran_b.lock().unwrap(), 4);
    assert_eq!(*ran_c.lock().unwrap(), 0);
}

fn wildcard_server_answers(transport: Transport) {
    let server = echo_server("0.0.0.0:0", transport, 2);
    let port = server.local_addr().port();
    let mut failures = Vec::new();
    for client_at in ["127.0.0.1:0", "127.0.0.2:0", "0.0.0.0:0"] {
        let client = Socket::bind_with(addr(client_at), client_opts(transport)).unwrap();
        for (i, server_ip) in ["127.0.0.1", "127.0.0.2", "127.0.0.3"].iter().enumerate() {
            let dest = addr(&format!("{server_ip}:{port}"));
            for len in [100, 300_000] {
                let body = pattern(len, i as u64);
                match client.call_timeout(dest, body.clone(), OUTCOME_DEADLINE) {
                    Ok(m) if m.to_vec() == answer(&body) => {}
                    other => failures.push(format!(
                        "{client_at} -> {dest}, {len} B: {:?}",
                        other.map(|m| m.len())
                    )),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[cfg(feature = "tokio")]
#[test]
fn a_wildcard_tokio_server_answers_from_the_address_it_was_asked_at() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = tokio_echo_server("0.0.0.0:0", Transport::Udp).await;
        let port = server.local_addr().port();
        let client = homa::aio::Socket::bind(addr("127.0.0.1:0")).await.unwrap();
        for server_ip in ["127.0.0.2", "127.0.0.1"] {
            let dest = addr(&format!("{server_ip}:{port}"));
            let body = pattern(300_000, 9);
            let got = client
                .call_timeout(dest, body.clone(), OUTCOME_DEADLINE)
                .await;
            assert_eq!(got.unwrap().to_vec(), answer(&body), "to {dest}");
        }
    });
}

#[test]
fn held_long_messages_stay_intact_while_traffic_goes_on() {
    // Over loopback, long messages keep the packets' receive buffers instead of copying
    // them into pages: the receive path must then not reuse a buffer a held message still
    // points into. Hold several long responses while many more messages arrive.
    let server = echo_server(V4, Transport::Udp, 2);
    let dest = server.local_addr();
    let client = Socket::bind(addr(V4)).unwrap();
    let held: Vec<_> = (0..6)
        .map(|i| {
            let req = pattern(300_000 + i * 1000, 500 + i as u64);
            let resp = client.call(dest, req.as_slice()).unwrap();
            (answer(&req), resp)
        })
        .collect();
    // Loopback's packets carry close to 64 KiB each, so these messages are kept as the
    // packets' payloads (chunks shorter than the 64 KiB pages of a copied message).
    let first = held[0].1.chunks().next().map_or(0, <[u8]>::len);
    assert!(
        first < 65_536,
        "kept as packets, not pages: first chunk {first}"
    );
    for i in 0..60 {
        let len = if i % 3 == 0 { 200_000 } else { 40_000 + i };
        let req = pattern(len, 900 + i as u64);
        let resp = client.call(dest, req.as_slice()).unwrap();
        assert!(resp == answer(&req), "message {i} corrupted");
    }
    for (i, (want, resp)) in held.iter().enumerate() {
        assert!(resp == want.as_slice(), "held message {i} changed");
    }
    server.shutdown();
}

#[test]
fn many_threads_share_one_client_socket() {
    const THREADS: usize = 8;
    const RPCS: usize = 200;
    let server = echo_server(V4, Transport::Udp, 2);
    let dest = server.local_addr();
    let client = Arc::new(Socket::bind(addr(V4)).unwrap());
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                for i in 0..RPCS {
                    // Mostly small, some multi-packet messages.
                    let len = if i % 25 == 0 {
                        150_000
                    } else {
                        1 + (i * 37 + t) % 3000
                    };
                    let req = pattern(len, (t * RPCS + i) as u64);
                    let resp = client.call(dest, req.as_slice()).unwrap();
                    assert!(resp == answer(&req), "thread {t} rpc {i}: wrong response");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let m = client.metrics();
    assert_eq!(m.responses_delivered, (THREADS * RPCS) as u64);
    assert_eq!(client.info().rpcs.len(), 0);
    server.shutdown();
}

#[test]
fn many_threads_receive_each_message_once() {
    // Several threads blocked in recv() on one client socket: each response goes to
    // exactly one of them.
    const N: u64 = 400;
    let server = echo_server(V4, Transport::Udp, 2);
    let dest = server.local_addr();
    let client = Socket::bind(addr(V4)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let receivers: Vec<_> = (0..4)
        .map(|_| {
            let (c, tx) = (client.clone(), tx.clone());
            std::thread::spawn(move || {
                while let Ok(m) = c.recv() {
                    tx.send(m.cookie()).unwrap();
                }
            })
        })
        .collect();
    for i in 0..N {
        client.send_request(dest, pattern(64, i), i).unwrap();
    }
    let mut got: Vec<u64> = (0..N)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(20))
                .expect("response lost")
        })
        .collect();
    got.sort_unstable();
    assert_eq!(
        got,
        (0..N).collect::<Vec<_>>(),
        "each response exactly once"
    );
    client.shutdown();
    for r in receivers {
        r.join().unwrap();
    }
    assert!(rx.try_recv().is_err());
    server.shutdown();
}

#[test]
fn a_busy_handler_does_not_hold_up_the_next_request() {
    // Two server threads. After quick handlers (so the thread that reads a request keeps
    // it and leaves the socket undriven while it answers), two requests come in and
    // each handler waits until the other has started: the second request must reach the
    // idle thread while the first is still in its handler.
    let server = Socket::bind_with(addr(V4), server_opts(Transport::Udp)).unwrap();
    let dest = server.local_addr();
    let started = Arc::new((std::sync::Mutex::new(0u32), std::sync::Condvar::new()));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (s, started) = (server.clone(), started.clone());
            std::thread::spawn(move || {
                while let Ok(req) = s.recv() {
                    if req.bytes().first() == Some(&1) {
                        let (n, cv) = &*started;
                        let mut n = n.lock().unwrap();
                        *n += 1;
                        cv.notify_all();
                        let (n, _) = cv
                            .wait_timeout_while(n, Duration::from_secs(10), |n| *n < 2)
                            .unwrap();
                        if *n < 2 {
                            // Alone: answer "no", which fails the test below.
                            s.reply(&req, vec![0]).unwrap();
                            continue;
                        }
                    }
                    s.reply(&req, vec![1]).unwrap();
                }
            })
        })
        .collect();
    let client = Socket::bind(addr(V4)).unwrap();
    for _ in 0..200 {
        assert_eq!(client.call(dest, vec![0u8; 10]).unwrap(), [1]);
    }
    let ids: Vec<_> = (0..2)
        .map(|i| client.send_request(dest, vec![1u8; 10], i).unwrap())
        .collect();
    for id in ids {
        let resp = client.recv_id_timeout(id, Duration::from_secs(20)).unwrap();
        assert_eq!(resp, [1], "a handler ran alone: the other request waited");
    }
    server.shutdown();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn info_shows_rpc_progress() {
    // The server's clock ticks far apart, so no tick comes during the test: its NEED_ACK
    // (which makes the client acknowledge, and the server free the RPC) waits for
    // `request_ack_ticks` of them. The RPC is then certainly still there to be seen after
    // the reply, however slow the machine.
    let mut opts = server_opts(Transport::Udp);
    opts.config.tick_nanos = 1_000_000_000_000;
    let server = Socket::bind_with(addr(V4), opts).unwrap();
    let client = Socket::bind(addr(V4)).unwrap();
    let id = client
        .send_request(server.local_addr(), vec![5u8; 3000], 9)
        .unwrap();
    let req = server.recv().unwrap();
    let sinfo = server.info();
    let srpc = sinfo
        .rpcs
        .iter()
        .find(|r| r.id == req.id())
        .expect("server RPC listed");
    assert_eq!(srpc.state, homa::RpcState::InService);
    // The request is with the application: the engine no longer holds it.
    assert_eq!((srpc.in_length, srpc.bytes_received), (None, 0));
    assert_eq!(srpc.peer, client.local_addr());
    assert_eq!((srpc.cookie, srpc.out_length, srpc.bytes_sent), (0, 0, 0));
    assert!(!srpc.is_client);
    assert!(!srpc.in_stalled);
    let cinfo = client.info();
    assert_eq!(cinfo.port, client.local_addr().port());
    assert_eq!(cinfo.client_rpcs, 1);
    let crpc = &cinfo.rpcs[0];
    assert_eq!((crpc.id, crpc.cookie, crpc.out_length), (id, 9, 3000));
    assert_eq!(crpc.bytes_sent, 3000);
    assert_eq!(crpc.granted, 3000);
    assert_eq!(crpc.state, homa::RpcState::AwaitingResponse);
    assert_eq!((crpc.in_length, crpc.bytes_received), (None, 0));
    assert_eq!(crpc.peer, server.local_addr());
    assert!(crpc.is_client);
    server.reply(&req, b"ok".to_vec()).unwrap();
    let resp = client.recv_id(id).unwrap();
    assert_eq!(resp, b"ok");
    assert!(client.info().rpcs.is_empty());
    // The reply is out; the server keeps the RPC until the client acknowledges it, and
    // dropping the answered request changes nothing.
    let sinfo = server.info();
    assert_eq!(sinfo.rpcs.len(), 1, "kept until acknowledged: {sinfo:?}");
    assert!(
        sinfo.rpcs.iter().all(|r| r.id == req.id()
            && matches!(
                r.state,
                homa::RpcState::SendingResponse | homa::RpcState::AwaitingAck
            )
            && r.out_length == 2),
        "{sinfo:?}"
    );
    drop(req);
    let sinfo = server.info();
    assert_eq!(sinfo.rpcs.len(), 1, "kept until acknowledged: {sinfo:?}");
    assert!(
        sinfo
            .rpcs
            .iter()
            .all(|r| r.state == homa::RpcState::AwaitingAck),
        "{sinfo:?}"
    );
}

/// Whether this kernel has UDP GRO (`UDP_GRO`, Linux 5.0).
fn kernel_has_udp_gro() -> bool {
    use std::os::fd::AsRawFd;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and `len` holds the buffer's size.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    r == 0
}

#[test]
fn smaller_mtus_batch_with_gso_and_gro() {
    // GRO is turned on by long messages, not at bind. With a 1500- or 9000-byte MTU, runs of full packets leave as UDP GSO sends (at 9000
    // each segment is a header and a payload slice of the message, gathered by the
    // kernel) and may arrive as GRO aggregates: the bytes must come through intact.
    for mtu in [1500, 9000] {
        let mut opts = server_opts(Transport::Udp);
        opts.auto_mtu = false;
        opts.config.mtu = mtu;
        let server = Socket::bind_with(addr(V4), opts.clone()).unwrap();
        let s = server.clone();
        std::thread::spawn(move || {
            while let Ok(req) = s.recv() {
                let r = answer(&req.to_vec());
                if s.reply(&req, r).is_err() {
                    break;
                }
            }
        });
        opts.server = None;
        let client = Socket::bind_with(addr(V4), opts).unwrap();
        let info = client.info();
        assert_eq!(info.mtu, mtu);
        for (i, len) in [1472usize, 3000, 100_000, 1_000_000]
            .into_iter()
            .enumerate()
        {
            if i == 2 {
                // A few long packets so far: GRO is not worth turning on yet.
                assert!(!server.info().gro && !client.info().gro, "GRO on too early");
            }
            let req = pattern(len, 50 + i as u64);
            let resp = client.call(server.local_addr(), req.as_slice()).unwrap();
            assert!(
                resp == answer(&req),
                "{len}-byte exchange at MTU {mtu} corrupted"
            );
        }
        // GSO stays on: the kernel accepted the segmented sends.
        assert_eq!(client.info().gso, info.gso);
        // Long messages came both ways: GRO is on at both ends, where the kernel has it
        // (the 100 KB and 1 MB exchanges above went through the switch).
        let gro = kernel_has_udp_gro();
        assert_eq!((server.info().gro, client.info().gro), (gro, gro));
        server.shutdown();
    }
}

/// An answering server bound with `opts` that notes, for each request, the longest
/// piece it arrived in (a 64 KiB page when copied, a packet's payload when kept).
fn piece_counting_server(opts: homa::Options) -> (Socket, Arc<Mutex<Vec<usize>>>) {
    let server = Socket::bind_with(addr(V4), opts).unwrap();
    let s = server.clone();
    let pieces = Arc::new(Mutex::new(Vec::new()));
    let p = pieces.clone();
    std::thread::spawn(move || {
        while let Ok(req) = s.recv() {
            let longest = req.chunks().map(<[u8]>::len).max().unwrap_or(0);
            p.lock().unwrap().push(longest);
            if s.reply(&req, answer(&req.to_vec())).is_err() {
                break;
            }
        }
    });
    (server, pieces)
}

#[test]
fn gro_aggregates_are_kept_not_copied() {
    // With GRO, a run of a long message's packets, sent as one GSO send, arrives as one
    // aggregate. The message keeps the payloads where the kernel put them (chunks of one
    // packet's payload) instead of copying them into 64 KiB pages, at 1,500-byte frames
    // and at jumbo frames; the bytes arrive intact either way.
    if !kernel_has_udp_gro() {
        eprintln!("skipped: this kernel has no UDP GRO");
        return;
    }
    for mtu in [1500, 9000] {
        let mut opts = server_opts(Transport::Udp);
        opts.auto_mtu = false;
        opts.config.mtu = mtu;
        let (server, pieces) = piece_counting_server(opts.clone());
        opts.server = None;
        let client = Socket::bind_with(addr(V4), opts).unwrap();
        // The first request's datagrams turn GRO on at the server; the next ones come in
        // aggregates.
        for (i, len) in [1_000_000, 1_000_000, 300_000].into_iter().enumerate() {
            let req = pattern(len, 60 + i as u64);
            let resp = client.call(server.local_addr(), req.as_slice()).unwrap();
            assert!(
                resp == answer(&req),
                "{len}-byte exchange at MTU {mtu} corrupted"
            );
        }
        assert!(server.info().gro, "GRO still off after long requests");
        let longest = pieces.lock().unwrap().clone();
        assert_eq!(longest.len(), 3);
        for (i, &l) in longest.iter().enumerate().skip(1) {
            assert!(
                l < mtu as usize,
                "MTU {mtu}: request {i} was copied: longest piece {l} ({longest:?})"
            );
        }
        server.shutdown();
    }
}

#[test]
fn receive_slots_fit_jumbo_datagrams_and_grow_back_for_longer_ones() {
    // Jumbo frames without GRO: once long messages have come in 9,000-byte datagrams,
    // the server's receive slots shrink to fit them (so that long messages keep the
    // datagrams by reference instead of copying them). A longer datagram later
    // continues into a spill buffer and arrives intact; the slots are full size again.
    let mut opts = server_opts(Transport::Udp);
    opts.auto_mtu = false;
    opts.config.mtu = 9000;
    opts.gro = false;
    let (server, pieces) = piece_counting_server(opts.clone());
    assert_eq!(server.info().receive_slot_bytes, 65_536);
    opts.server = None;
    let call = |client: &Socket, len: usize, seed: u64| {
        let req = pattern(len, seed);
        let resp = client.call(server.local_addr(), req.as_slice()).unwrap();
        assert!(resp == answer(&req), "{len}-byte exchange corrupted");
    };
    let jumbo = Socket::bind_with(addr(V4), opts.clone()).unwrap();
    for (i, len) in [300_000, 300_000, 1_000_000].into_iter().enumerate() {
        call(&jumbo, len, 70 + i as u64);
    }
    let fitted = server.info().receive_slot_bytes;
    assert!(
        (9_000..=10_240).contains(&fitted),
        "slots not cut to 9,000-byte datagrams: {fitted}"
    );
    // The first request was copied into 64 KiB pages; the last, received after the
    // cut, is kept as the datagrams' own payloads.
    let longest = pieces.lock().unwrap().clone();
    assert_eq!(longest.len(), 3);
    assert_eq!(longest[0], 65_536, "{longest:?}");
    assert!(longest[2] < 9_000, "{longest:?}");
    // Datagrams of up to 64 KiB (loopback's MTU, no GSO): each spills past its slot.
    let mut big = opts;
    big.config.mtu = 65_535;
    big.gso = false;
    let loopback = Socket::bind_with(addr(V4), big).unwrap();
    for (i, len) in [100_000, 1_000_000].into_iter().enumerate() {
        call(&loopback, len, 80 + i as u64);
    }
    assert_eq!(server.info().receive_slot_bytes, 65_536);
    call(&jumbo, 500_000, 90);
    server.shutdown();
}

#[test]
fn messages_up_to_a_page_in_jumbo_frames_are_kept_and_joined_when_asked() {
    // Jumbo frames without GRO, slots cut to fit: a request of up to 64 KiB that comes in
    // several datagrams keeps their payloads where the kernel put them (the server's
    // user-space copy saved), and `as_slice` still gives it in one piece.
    let mut opts = server_opts(Transport::Udp);
    opts.auto_mtu = false;
    opts.config.mtu = 9000;
    opts.gro = false;
    let server = Socket::bind_with(addr(V4), opts.clone()).unwrap();
    let s = server.clone();
    // Per request: its length, its chunks, whether `as_slice` gave its bytes.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        while let Ok(mut req) = s.recv() {
            let chunks = req.chunks().count();
            let joined = req.as_slice().map(<[u8]>::to_vec);
            let at = req.as_slice().map(<[u8]>::as_ptr);
            let same = joined.as_deref() == Some(&req.to_vec()[..]);
            seen2.lock().unwrap().push((req.len(), chunks, same));
            // Taken after the join: the joined bytes themselves, not another copy.
            let body = req.take_bytes();
            assert!(at.is_none_or(|p| p == body.as_ptr()), "copied again");
            if s.reply(&req, answer(&body)).is_err() {
                break;
            }
        }
    });
    opts.server = None;
    let client = Socket::bind_with(addr(V4), opts).unwrap();
    let lens = [
        300_000, 300_000, 20_000, 8_000, 8_900, 40_000, 65_536, 65_537,
    ];
    for (i, len) in lens.into_iter().enumerate() {
        let req = pattern(len, 100 + i as u64);
        let resp = client.call(server.local_addr(), req.as_slice()).unwrap();
        assert!(resp == answer(&req), "{len}-byte exchange corrupted");
    }
    let fitted = server.info().receive_slot_bytes;
    assert!(fitted <= 10_240, "slots not cut to jumbo frames: {fitted}");
    let seen = seen.lock().unwrap().clone();
    let at = |len: usize| seen.iter().find(|r| r.0 == len).copied().unwrap();
    // After the cut: kept in one piece per datagram (and the short tail).
    assert_eq!(at(20_000), (20_000, 3, true), "{seen:?}");
    assert_eq!(at(40_000), (40_000, 5, true), "{seen:?}");
    assert_eq!(at(65_536), (65_536, 8, true), "{seen:?}");
    // One datagram, one chunk; short, copied into one chunk; over a page: pieces, and
    // no single slice.
    assert_eq!(at(8_900), (8_900, 1, true), "{seen:?}");
    assert_eq!(at(8_000), (8_000, 1, true), "{seen:?}");
    assert_eq!(at(65_537), (65_537, 8, false), "{seen:?}");
    server.shutdown();
}

#[test]
fn raw_packets_carry_the_linux_checksum_over_header_and_payload() {
    if !raw_available("raw_packets_carry_the_linux_checksum_over_header_and_payload") {
        return;
    }
    // A second raw socket of protocol 146 sees every Homa packet on loopback, including
    // multi-packet messages whose payloads go out zero-copy behind their headers.
    let sniffer = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(146)),
    )
    .unwrap();
    sniffer
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let server = echo_server(V4, Transport::RawIp, 1);
    let client = Socket::bind_with(addr(V4), client_opts(Transport::RawIp)).unwrap();
    let request = pattern(200_000, 5);
    let response = client.call(server.local_addr(), request.clone()).unwrap();
    assert!(response == answer(&request));
    let (mut checked, mut big) = (0, 0);
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 70_000];
    while let Ok(n) = sniffer.recv(&mut buf) {
        // SAFETY: recv initialised the first n bytes.
        let pkt: Vec<u8> = buf[..n]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        let ihl = usize::from(pkt[0] & 0xf) * 4;
        let src = std::net::Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
        let dst = std::net::Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
        let homa = &pkt[ihl..];
        let stored = u16::from_be_bytes([homa[16], homa[17]]);
        assert_eq!(
            homa_wire::checksum::ipv4(src, dst, homa),
            stored,
            "{} byte packet",
            homa.len()
        );
        checked += 1;
        big += usize::from(homa.len() > 2048);
    }
    assert!(checked >= 5 && big >= 3, "{checked} packets, {big} large");
    server.shutdown();
}

/// A client-only UDP socket connects to the first server it calls (the kernel then sends
/// without a route lookup per datagram). It must still reach a second server and the
/// first again, and get its responses when the background thread has taken the socket
/// over in an idle gap and is handed it back.
#[test]
fn one_client_socket_moves_between_servers() {
    let a = echo_server(V4, Transport::Udp, 1);
    let b = echo_server(V4, Transport::Udp, 1);
    let client = Socket::bind_with(addr(V4), client_opts(Transport::Udp)).unwrap();
    let (a_addr, b_addr) = (a.local_addr(), b.local_addr());
    for (round, dest) in [a_addr, a_addr, b_addr, a_addr, b_addr]
        .into_iter()
        .enumerate()
    {
        let req = pattern(100 + round, round as u64);
        let id = client.send_request(dest, req.clone(), 0).unwrap();
        let resp = client
            .recv_id_timeout(id, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("round {round}, to {dest}: {e}"));
        assert_eq!(resp.peer(), dest, "round {round}");
        assert!(resp == answer(&req), "round {round}: response corrupted");
        // Several ticks: the background thread takes the socket over meanwhile.
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(client.metrics().responses_delivered, 5);
    a.shutdown();
    b.shutdown();
}

#[test]
fn short_calls_go_ahead_of_long_requests_sent_from_the_same_socket() {
    // While one thread's long requests go out (in batches sent with the socket's lock
    // released), other threads' short requests are sent from their own threads (see
    // `Inner::send_urgent`). Every response must still match its request.
    let server = echo_server(V4, Transport::Udp, 2);
    let dest = server.local_addr();
    let client = Arc::new(Socket::bind(addr(V4)).unwrap());
    let streaming = {
        let client = client.clone();
        std::thread::spawn(move || {
            for i in 0..20 {
                let req = pattern(1_000_000, 1000 + i);
                let resp = client.call(dest, req.as_slice()).unwrap();
                assert!(resp == answer(&req), "long rpc {i}: wrong response");
            }
        })
    };
    let shorts: Vec<_> = (0..2)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                for i in 0..300 {
                    let req = pattern(1 + (i * 13 + t) % 900, (t * 300 + i) as u64);
                    let resp = client.call(dest, req.as_slice()).unwrap();
                    assert!(
                        resp == answer(&req),
                        "thread {t} short rpc {i}: wrong response"
                    );
                }
            })
        })
        .collect();
    streaming.join().unwrap();
    for s in shorts {
        s.join().unwrap();
    }
    assert_eq!(client.metrics().responses_delivered, 20 + 600);
    assert_eq!(client.info().rpcs.len(), 0);
    server.shutdown();
}

#[test]
fn blocking_calls_wait_for_outgoing_room_instead_of_failing() {
    // 16 threads, 5 RPCs each of 8,000 bytes, through a budget of 20,000 bytes: at most
    // two requests fit at once, so nearly every call waits for room. Each must complete
    // with its own answer; none may fail with WouldBlock.
    const THREADS: usize = 16;
    const RPCS: usize = 5;
    let server = echo_server(V4, Transport::Udp, 2);
    let dest = server.local_addr();
    let client = Arc::new(Socket::bind_with(addr(V4), small_budget(20_000)).unwrap());
    calls_from_threads(
        &client,
        dest,
        (THREADS, RPCS, 8_000),
        Duration::from_secs(120),
    );
    assert_eq!(
        client.metrics().responses_delivered,
        (THREADS * RPCS) as u64
    );
    // Nothing is held any more: a request the size of the whole budget starts at once.
    client.send_request(dest, vec![7u8; 20_000], 0).unwrap();
    server.shutdown();
}

#[test]
fn blocking_calls_waiting_for_room_go_on_when_room_is_freed_and_end_at_shutdown() {
    // The whole budget (10,000 bytes) is held by a request to a server that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = echo_server(V4, Transport::Udp, 2);
    let to_echo = server.local_addr();
    let client = Arc::new(Socket::bind_with(addr(V4), small_patient_budget(10_000)).unwrap());
    let hog = client
        .send_request(silent.local_addr().unwrap(), vec![1u8; 9_000], 0)
        .unwrap();
    assert!(matches!(
        client.send_request(to_echo, vec![2u8; 5_000], 0),
        Err(homa::SendError::WouldBlock)
    ));
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 0..4u64 {
        let (client, tx) = (client.clone(), tx.clone());
        std::thread::spawn(move || {
            let req = pattern(5_000, i);
            let r = client
                .call(to_echo, req.as_slice())
                .map(|resp| resp == answer(&req));
            tx.send((i, r)).unwrap();
        });
    }
    // None can start until room is freed: all four wait for it, and say so.
    assert!(
        wait_until(OUTCOME_DEADLINE, || client.info().room_waiters == 4),
        "{:?}",
        client.info()
    );
    assert!(rx.try_recv().is_err(), "a call went ahead without room");
    assert_eq!(
        client.info().waiters,
        0,
        "a call waiting for room waits for no outcome"
    );
    // Giving up the request that holds the budget lets every waiting call through.
    client.abort(hog).unwrap();
    for _ in 0..4 {
        let (i, r) = rx.recv_timeout(Duration::from_secs(60)).expect("call ends");
        assert!(r.expect("call completes"), "call {i}: wrong bytes");
    }
    assert_eq!(client.info().room_waiters, 0);
    // Held again, a call waits until the socket shuts down, and then fails.
    client
        .send_request(silent.local_addr().unwrap(), vec![1u8; 9_000], 0)
        .unwrap();
    let c = client.clone();
    std::thread::spawn(move || {
        tx.send((9, c.call(to_echo, vec![3u8; 5_000]).map(|_| true)))
            .unwrap();
    });
    std::thread::sleep(Duration::from_millis(50));
    client.shutdown();
    let (_, r) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the call ends");
    assert!(
        matches!(r, Err(homa::CallError::Send(homa::SendError::Shutdown))),
        "{r:?}"
    );
    server.shutdown();
}

/// A server answers with the request's own bytes, taken out of it (`take_bytes`): the
/// request stays the handle `reply` takes, a message in one chunk is handed over without
/// a copy, and its receive space is free while the application holds the bytes. The
/// client sends each response on as its next request, the same way.
#[test]
fn taken_bytes_are_sent_on_without_a_copy() {
    let server = Socket::bind_with(addr(V4), server_opts(Transport::Udp)).unwrap();
    let dest = server.local_addr();
    let lens = [100, 60_000, 300_000];
    let serving = {
        let server = server.clone();
        std::thread::spawn(move || {
            // Each length twice: a request, then the response to it sent on.
            for len in lens.iter().flat_map(|&l| [l, l]) {
                let mut req = server.recv_request().unwrap();
                assert_eq!(req.len(), len);
                assert!(server.info().incoming_held > 0);
                let at = req.as_slice().map(<[u8]>::as_ptr);
                let body = req.take_bytes();
                assert_eq!(body.len(), len);
                if let Some(at) = at {
                    assert_eq!(body.as_ptr(), at, "{len} bytes: copied");
                }
                assert_eq!((req.len(), req.take_bytes().len()), (0, 0));
                assert_eq!(server.info().incoming_held, 0, "{len} bytes: still counted");
                server.reply(&req, body).unwrap();
            }
        })
    };
    let client = Socket::bind(addr(V4)).unwrap();
    for (i, len) in lens.into_iter().enumerate() {
        let sent = pattern(len, i as u64);
        let mut resp = client.call(dest, sent.as_slice()).unwrap();
        assert!(resp == sent, "{len} bytes: wrong echo");
        // Passed on as the next request, as a proxy would, and echoed again.
        let again = client.call(dest, resp.take_bytes()).unwrap();
        assert!(again == sent, "{len} bytes: wrong echo of the echo");
        assert_eq!(resp.len(), 0);
    }
    serving.join().unwrap();
    server.shutdown();
}
