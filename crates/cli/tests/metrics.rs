//! `homa metrics` against a live endpoint: a Homa server socket in this process, served
//! with `homa::metrics::serve`, carrying RPCs between samples.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde_json::Value;

fn homa(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_homa"))
        .args(args)
        .output()
        .expect("run homa")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An echo server and a client calling it until dropped.
struct Traffic {
    server: Arc<homa::Socket>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Traffic {
    fn start() -> Traffic {
        let opts = homa::Options {
            server: Some(true),
            ..Default::default()
        };
        let server =
            Arc::new(homa::Socket::bind_with("127.0.0.1:0".parse().unwrap(), opts).unwrap());
        let addr = server.local_addr();
        let stop = Arc::new(AtomicBool::new(false));
        let echo = {
            let server = server.clone();
            std::thread::spawn(move || {
                while let Ok(m) = server.recv() {
                    let _ = server.reply(&m, m.to_vec());
                }
            })
        };
        let client = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let sock = homa::Socket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    sock.call(addr, vec![7u8; 3000]).expect("echo");
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            })
        };
        Traffic {
            server,
            stop,
            threads: vec![echo, client],
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.server.shutdown();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn endpoint(traffic: &Traffic) -> (homa::metrics::MetricsServer, String) {
    let e = homa::metrics::serve("127.0.0.1:0".parse().unwrap(), traffic.server.clone()).unwrap();
    let addr = e.local_addr().to_string();
    (e, addr)
}

#[test]
fn snapshot_lists_the_series_that_are_not_zero() {
    let traffic = Traffic::start();
    let (_e, addr) = endpoint(&traffic);
    let port = traffic.server.local_addr().port();
    // Wait for the first RPCs (bounded).
    let series = format!("homa_requests_delivered_total{{socket=\"{port}\"}}");
    let mut text = String::new();
    for _ in 0..200 {
        text = stdout(&homa(&["metrics", &addr]));
        if text.contains(&series) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let line = text
        .lines()
        .find(|l| l.starts_with(&series))
        .unwrap_or_else(|| panic!("no {series}:\n{text}"));
    let value: u64 = line.split_whitespace().last().unwrap().parse().unwrap();
    assert!(value > 0, "{line}");
    assert!(
        !text.contains("reason=\"malformed\""),
        "zero series hidden:\n{text}"
    );
    let all = stdout(&homa(&["metrics", &addr, "--all", "--filter", "drops"]));
    assert!(all.contains("reason=\"malformed\"} "), "{all}");
    // In a fixed order, by name and labels, whatever order the exporter chose.
    let names: Vec<&str> = all
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert!(names.len() > 1 && names.is_sorted(), "{all}");
    assert!(
        all.lines()
            .skip(2)
            .all(|l| l.starts_with("homa_drops_total")),
        "{all}"
    );
    // --json is --format json: one line, {"values":{..}}, zero series hidden as in the
    // table unless --all.
    let json = stdout(&homa(&[
        "metrics", &addr, "--json", "--all", "--filter", "drops",
    ]));
    let j: Value = serde_json::from_str(json.trim_end()).expect("one JSON line");
    assert_eq!(json.lines().count(), 1, "{json}");
    assert!(
        j["values"]
            .as_object()
            .is_some_and(|v| !v.is_empty() && v.keys().all(|k| k.contains("drops"))),
        "{j}"
    );
    assert!(json.contains("reason=\\\"malformed\\\""), "{json}");
    let nonzero = stdout(&homa(&["metrics", &addr, "--json", "--filter", "drops"]));
    assert!(!nonzero.contains("reason=\\\"malformed\\\""), "{nonzero}");
    let delivered = stdout(&homa(&["metrics", &addr, "--json"]));
    assert!(
        delivered.contains("homa_requests_delivered_total"),
        "{delivered}"
    );
    let raw = stdout(&homa(&[
        "metrics",
        &format!("http://{addr}/metrics"),
        "--format",
        "prometheus",
    ]));
    assert!(
        raw.contains("# TYPE homa_packets_sent_total counter"),
        "{raw}"
    );
}

#[test]
fn interval_reports_rates_of_the_counters_that_moved() {
    let traffic = Traffic::start();
    let (_e, addr) = endpoint(&traffic);
    let port = traffic.server.local_addr().port();
    let out = stdout(&homa(&[
        "metrics",
        &addr,
        "--interval",
        "0.3",
        "--count",
        "2",
        "--format",
        "json",
    ]));
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    let key = format!("homa_packets_received_total{{socket=\"{port}\",type=\"data\"}}");
    for (i, j) in lines.iter().enumerate() {
        let rate = j["rates"][&key]
            .as_f64()
            .unwrap_or_else(|| panic!("no rate of {key}: {j}"));
        // The client calls every 2 ms or so: some requests arrive in every 0.3 s.
        assert!(rate > 0.0, "{j}");
        assert!(j["values"][&key].as_u64().is_some_and(|v| v > 0), "{j}");
        assert!(
            j["seconds"]
                .as_f64()
                .is_some_and(|s| s >= 0.3 * (i + 1) as f64),
            "{j}"
        );
        // Gauges have values, never rates.
        let gauge = format!("homa_server_rpcs{{socket=\"{port}\"}}");
        assert!(j["rates"].get(&gauge).is_none(), "{j}");
    }
    let table = stdout(&homa(&[
        "metrics",
        &addr,
        "--interval",
        "0.2",
        "--count",
        "1",
    ]));
    assert!(table.contains("per second"), "{table}");
    assert!(table.lines().any(|l| l.starts_with(&key)), "{table}");
}

#[test]
fn errors_are_clear() {
    // A port nothing listens on: bind one, note it, close it.
    let free: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = homa(&["metrics", &free.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read http://") && err.contains("homa::metrics::serve"),
        "{err}"
    );
    // Bad arguments exit with status 2.
    let out = homa(&["metrics", "not-an-address"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an endpoint address"));
    assert_eq!(out.status.code(), Some(2));
    let out = homa(&["metrics", "--interval", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--interval 0"));
    // An HTTP server without /metrics.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let web = std::thread::spawn(move || {
        use std::io::Write;
        let (mut s, _) = listener.accept().unwrap();
        read_request(&mut s);
        s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
    });
    let out = homa(&["metrics", &addr.to_string()]);
    web.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/metrics answered HTTP 404"), "{err}");
    // An endpoint that takes the connection and never answers: said so, not EAGAIN.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = homa(&["metrics", &silent.local_addr().unwrap().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no whole answer within 5 s"), "{err}");
    drop(silent);
    // Something that answers, but not in HTTP (a perf server's TCP port, say).
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = other.local_addr().unwrap();
    let talker = std::thread::spawn(move || {
        use std::io::Write;
        let (mut s, _) = other.accept().unwrap();
        read_request(&mut s);
        let _ = s.write_all(b"\x00\x00\x00\x10not http at all\n");
    });
    let out = homa(&["metrics", &addr.to_string()]);
    talker.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not answer in HTTP"), "{err}");
}

/// Read a whole HTTP request, so that closing afterwards does not reset the connection;
/// its first line.
fn read_request(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut req = Vec::new();
    let mut buf = [0u8; 256];
    while !req.ends_with(b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let req = String::from_utf8_lossy(&req);
    req.lines().next().unwrap_or("").to_string()
}

/// An endpoint that answers 200 and then `write` until the client goes (or forever).
fn endless(write: fn(&mut std::net::TcpStream) -> std::io::Result<()>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        let (mut s, _) = listener.accept().unwrap();
        read_request(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
        while write(&mut s).is_ok() {}
    });
    addr
}

/// Answers that never end are cut off, by size or by time, with a clear error (one that
/// streamed forever took 23 GB of memory).
#[test]
fn endless_answers_are_refused() {
    let flood = endless(|s| {
        use std::io::Write;
        s.write_all(&[b'#'; 1 << 16])
    });
    let out = homa(&["metrics", &flood.to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("answered more than 64 MB"), "{err}");
    let dribble = endless(|s| {
        use std::io::Write;
        std::thread::sleep(std::time::Duration::from_millis(100));
        s.write_all(b"homa_x 1\n")
    });
    let out = homa(&["metrics", &dribble.to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no whole answer within 5 s"), "{err}");
}

/// The path of an http:// URL is the one asked for.
#[test]
fn a_url_path_is_asked_for() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let web = std::thread::spawn(move || {
        use std::io::Write;
        let (mut s, _) = listener.accept().unwrap();
        let line = read_request(&mut s);
        s.write_all(b"HTTP/1.1 200 OK\r\n\r\n# TYPE homa_x counter\nhoma_x 5\n")
            .unwrap();
        line
    });
    let out = homa(&["metrics", &format!("http://{addr}/x/m")]);
    assert_eq!(web.join().unwrap(), "GET /x/m HTTP/1.0");
    let text = stdout(&out);
    assert!(
        text.contains(&format!("http://{addr}/x/m: 1 series")),
        "{text}"
    );
    assert!(text.contains("homa_x"), "{text}");
}
