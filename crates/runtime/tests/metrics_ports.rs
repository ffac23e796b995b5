//! The `metrics` feature: a port's series add up every socket it had. Its own test
//! binary, because it turns the background publishing off for the whole process (which
//! would otherwise publish, and so take, a closed socket's last counts first).

mod common;

use common::*;
use homa::{Socket, Transport};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A server on `at`, echoing every request on a thread of its own until shut down,
/// except requests that say "hold": it keeps those unanswered.
fn serve(at: SocketAddr) -> (Socket, std::thread::JoinHandle<()>) {
    let server = Socket::bind_with(at, server_opts(Transport::Udp)).expect("bind");
    let s = server.clone();
    let t = std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok(request) = s.recv_request() {
            if request.to_vec() == b"hold" {
                held.push(request);
            } else if s.reply(&request, request.to_vec()).is_err() {
                break;
            }
        }
    });
    (server, t)
}

fn call(to: SocketAddr, n: usize) {
    let client = Socket::bind(addr(if to.is_ipv4() { V4 } else { V6 })).unwrap();
    for i in 0..n {
        let request = pattern(1_000 + i, i as u64);
        assert_eq!(client.call(to, request.clone()).unwrap(), request);
    }
}

/// Wait until `server` holds `n` server RPCs: a client that closed after its calls
/// acknowledged their responses in ACK packets, which the server reads when it reads them.
fn settle(server: &Socket, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.info().server_rpcs != n {
        let now = server.info().server_rpcs;
        assert!(Instant::now() < deadline, "{now} server RPCs, never {n}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Shut `server` down and wait until it is gone: its port can be bound again (the UDP
/// socket closes after the socket has retired its counts).
fn close(server: Socket, thread: std::thread::JoinHandle<()>) {
    let at = server.local_addr();
    server.shutdown();
    thread.join().unwrap();
    drop(server);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match std::net::UdpSocket::bind(at) {
            Ok(_) => return,
            Err(e) => assert!(Instant::now() < deadline, "{at} still bound: {e}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Publish to `recorder` and read the series of `port` that carry no label but its
/// own: name -> value.
fn published(
    recorder: &DebuggingRecorder,
    snapshotter: &Snapshotter,
    port: u16,
) -> HashMap<String, f64> {
    metrics::with_local_recorder(recorder, homa::metrics::publish);
    let label = port.to_string();
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            let labels: Vec<_> = key.key().labels().collect();
            labels.len() == 1 && labels[0].key() == "socket" && labels[0].value() == label
        })
        .map(|(key, _, _, value)| {
            let v = match value {
                DebugValue::Counter(v) => v as f64,
                DebugValue::Gauge(v) => v.0,
                DebugValue::Histogram(_) => panic!("{key:?}: no histogram is published"),
            };
            (key.key().name().to_string(), v)
        })
        .collect()
}

const DELIVERED: &str = "homa_requests_delivered_total";
const HELD: &str = "homa_server_rpcs";

#[test]
fn a_port_counts_every_socket_it_had() {
    homa::metrics::set_publish_interval(None);
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let publication = |port| published(&recorder, &snapshotter, port);

    // A server that serves 3 requests and closes before anything is published.
    let (first, t) = serve(addr(V4));
    let at = first.local_addr();
    let port = at.port();
    call(at, 3);
    close(first, t);

    // Its successor on the same port serves 2 more: the port's counter goes on from 3
    // (published alone, the new socket's 2 would be below what a recorder already holds).
    let (second, t) = serve(at);
    call(at, 2);
    let holder = Socket::bind_with(addr(V4), patient(client_opts(Transport::Udp))).unwrap();
    let hold = holder.send_request(at, b"hold".to_vec(), 0).unwrap();
    // The held request's RPC, and none of the answered calls' (acknowledged).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !second
        .info()
        .rpcs
        .iter()
        .any(|r| r.peer == holder.local_addr())
    {
        assert!(Instant::now() < deadline, "the held request never came");
        std::thread::sleep(Duration::from_millis(5));
    }
    settle(&second, 1);
    let p = publication(port);
    assert_eq!((p.get(DELIVERED), p.get(HELD)), (Some(&6.0), Some(&1.0)));

    // An IPv6 socket on the same port, beside it: the two add up.
    let v6 = Socket::bind(addr(V6)).is_ok();
    if v6 {
        let (third, t3) = serve(SocketAddr::new("::1".parse().unwrap(), port));
        call(third.local_addr(), 1);
        call(at, 1);
        settle(&third, 0);
        settle(&second, 1);
        let p = publication(port);
        assert_eq!((p.get(DELIVERED), p.get(HELD)), (Some(&8.0), Some(&1.0)));
        close(third, t3);
    } else {
        println!("no IPv6 loopback: skipping the shared-port half");
    }
    let total = if v6 { 8.0 } else { 6.0 };

    // Every socket on the port closed: published once more after the close, its
    // counters stay and its gauges fall to 0. The holder gives its request up first:
    // left waiting, its next RESEND would reach the socket bound below, which answers
    // RPC_UNKNOWN, and the restarted request would be delivered there (one more).
    holder.abort(hold).unwrap();
    close(second, t);
    let p = publication(port);
    assert_eq!((p.get(DELIVERED), p.get(HELD)), (Some(&total), Some(&0.0)));
    let (again, t) = serve(at);
    assert_eq!(publication(port).get(DELIVERED), Some(&total));
    close(again, t);
    drop(holder);
}
