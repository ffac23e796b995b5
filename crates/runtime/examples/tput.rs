//! Quick throughput check: one client streams SIZE-byte requests (small replies) over
//! loopback, Homa next to TCP, in one process.
//!
//! `cargo run --release -p homa-transport --example tput -- [SIZE] [SECONDS] [OUTSTANDING]`

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn homa_gbps(size: usize, secs: f64, outstanding: usize) -> f64 {
    let server = homa::Socket::bind_with(
        "127.0.0.1:0".parse().unwrap(),
        homa::Options {
            server: Some(true),
            ..Default::default()
        },
    )
    .unwrap();
    let addr = server.local_addr();
    let s = server.clone();
    std::thread::spawn(move || {
        while let Ok(req) = s.recv() {
            if s.reply(&req, b"ok".as_slice()).is_err() {
                break;
            }
        }
    });
    let client = homa::Socket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let payload = vec![7u8; size];
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut done = 0u64;
    for _ in 0..outstanding {
        client.send_request(addr, payload.as_slice(), 0).unwrap();
    }
    while Instant::now() < end {
        client.recv().unwrap();
        done += 1;
        client.send_request(addr, payload.as_slice(), 0).unwrap();
    }
    let el = start.elapsed().as_secs_f64();
    if std::env::var("VERBOSE").is_ok() {
        eprintln!("client {}", homa::metrics::to_json(&client.metrics()));
        eprintln!("server {}", homa::metrics::to_json(&server.metrics()));
    }
    server.shutdown();
    done as f64 * size as f64 * 8.0 / el / 1e9
}

fn tcp_gbps(size: usize, secs: f64) -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut len = [0u8; 4];
        let mut buf = Vec::new();
        while s.read_exact(&mut len).is_ok() {
            buf.resize(u32::from_be_bytes(len) as usize, 0);
            if s.read_exact(&mut buf).is_err() {
                break;
            }
            s.write_all(&2u32.to_be_bytes()).unwrap();
            s.write_all(b"ok").unwrap();
        }
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let mut msg = (size as u32).to_be_bytes().to_vec();
    msg.extend(std::iter::repeat_n(7u8, size));
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut done = 0u64;
    let mut back = [0u8; 6];
    while Instant::now() < end {
        c.write_all(&msg).unwrap();
        c.read_exact(&mut back).unwrap();
        done += 1;
    }
    done as f64 * size as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9
}

fn main() {
    let mut args = std::env::args().skip(1);
    let size: usize = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let outstanding: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let rounds = 3;
    let (mut h, mut t) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        h.push(homa_gbps(size, secs / rounds as f64, outstanding));
        t.push(tcp_gbps(size, secs / rounds as f64));
    }
    h.sort_by(f64::total_cmp);
    t.sort_by(f64::total_cmp);
    let (hm, tm) = (h[rounds / 2], t[rounds / 2]);
    println!("{size} B requests, {outstanding} outstanding: homa {hm:.2} Gbps, tcp {tm:.2} Gbps ({:.2}x)", hm / tm);
}
