//! Quick latency check: one outstanding RPC at a time over loopback, Homa (this crate)
//! next to a plain UDP ping-pong (the floor) and TCP request/response, in one process.
//!
//! `cargo run --release -p homa-transport --example rtt -- [SIZE] [COUNT]`
//!
//! (The full benchmarks are `homa perf`; this is the runtime's own sanity check.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1e6;
    (p(0.5), p(0.99))
}

fn homa_rtt(size: usize, count: usize, transport: homa::Transport) -> Option<(f64, f64)> {
    let mut opts = homa::Options {
        server: Some(true),
        transport,
        ..Default::default()
    };
    if let Some(p) = std::env::var("HOMA_POLL_USECS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        opts.config.poll_usecs = p;
    }
    let server = homa::Socket::bind_with("127.0.0.1:0".parse().unwrap(), opts.clone()).ok()?;
    let addr = server.local_addr();
    let s = server.clone();
    std::thread::spawn(move || {
        while let Ok(req) = s.recv() {
            let n = req.len();
            if s.reply(&req, vec![0u8; n]).is_err() {
                break;
            }
        }
    });
    opts.server = None;
    let client = homa::Socket::bind_with("127.0.0.1:0".parse().unwrap(), opts).ok()?;
    let payload = vec![7u8; size];
    let mut v = Vec::with_capacity(count);
    for i in 0..count + count / 10 {
        let t = Instant::now();
        let r = client.call(addr, payload.as_slice()).expect("call");
        assert_eq!(r.len(), size);
        if i >= count / 10 {
            v.push(t.elapsed());
        }
    }
    server.shutdown();
    Some(percentiles(v))
}

fn udp_rtt(size: usize, count: usize) -> (f64, f64) {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = server.recv_from(&mut buf) {
            if n == 0 {
                break;
            }
            server.send_to(&buf[..n], from).unwrap();
        }
    });
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    let payload = vec![7u8; size.min(65000)];
    let mut buf = vec![0u8; 65536];
    let mut v = Vec::with_capacity(count);
    for i in 0..count + count / 10 {
        let t = Instant::now();
        c.send_to(&payload, addr).unwrap();
        c.recv_from(&mut buf).unwrap();
        if i >= count / 10 {
            v.push(t.elapsed());
        }
    }
    let _ = c.send_to(&[], addr);
    percentiles(v)
}

fn tcp_rtt(size: usize, count: usize) -> (f64, f64) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut len = [0u8; 4];
        let mut buf = Vec::new();
        while s.read_exact(&mut len).is_ok() {
            let n = u32::from_be_bytes(len) as usize;
            buf.resize(n, 0);
            s.read_exact(&mut buf).unwrap();
            s.write_all(&len).unwrap();
            s.write_all(&buf).unwrap();
        }
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let payload = vec![7u8; size];
    let mut back = vec![0u8; size];
    let mut v = Vec::with_capacity(count);
    for i in 0..count + count / 10 {
        let t = Instant::now();
        let mut msg = (size as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&payload);
        c.write_all(&msg).unwrap();
        let mut len = [0u8; 4];
        c.read_exact(&mut len).unwrap();
        c.read_exact(&mut back).unwrap();
        if i >= count / 10 {
            v.push(t.elapsed());
        }
    }
    percentiles(v)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100);
    let count: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    if std::env::var("ONLY_HOMA").is_ok() {
        let (p50, p99) = homa_rtt(size, count, homa::Transport::Udp).expect("homa");
        println!("homa p50 {p50:.1} us p99 {p99:.1} us");
        return;
    }
    let rounds = 5;
    let per = count / rounds;
    let (mut u, mut h, mut t) = (Vec::new(), Vec::new(), Vec::new());
    // Interleaved rounds, so that a noisy neighbour hurts all three alike.
    for _ in 0..rounds {
        u.push(udp_rtt(size, per));
        h.push(homa_rtt(size, per, homa::Transport::Udp).expect("homa"));
        t.push(tcp_rtt(size, per));
    }
    let med = |v: &mut Vec<(f64, f64)>| {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v[v.len() / 2]
    };
    let ((up50, up99), (h50, h99), (t50, t99)) = (med(&mut u), med(&mut h), med(&mut t));
    println!(
        "size {size} B, {count} RPCs, one outstanding (median of {rounds} interleaved rounds)"
    );
    println!("udp ping-pong  p50 {up50:7.1} us  p99 {up99:7.1} us");
    println!(
        "homa (udp)     p50 {h50:7.1} us  p99 {h99:7.1} us   ({:.2}x udp)",
        h50 / up50
    );
    println!("tcp            p50 {t50:7.1} us  p99 {t99:7.1} us");
    if let Some((r50, r99)) = homa_rtt(size, per, homa::Transport::RawIp) {
        println!("homa (raw ip)  p50 {r50:7.1} us  p99 {r99:7.1} us");
    }
}
