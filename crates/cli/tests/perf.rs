//! `homa perf` and `homa demo` run as a user runs them, over loopback. Only the shape of the
//! output is checked (well-formed tables and JSON, positive numbers): never timings, which
//! depend on the machine.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn homa(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_homa"))
        .args(args)
        .output()
        .expect("run homa")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The last stdout line, parsed as JSON.
fn last_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: last line {last:?}\n{stdout}"))
}

fn positive(v: &Value) -> bool {
    v.as_f64().is_some_and(|x| x > 0.0 && x.is_finite())
}

#[test]
fn rtt_prints_a_table_and_json_for_each_transport() {
    let out = homa(&["perf", "rtt", "--count", "200", "--warmup", "50", "--json"]);
    let j = last_json(&out);
    for proto in ["tcp", "udp"] {
        assert!(positive(&j[proto]["p50_us"]), "{proto}: {j}");
        assert!(positive(&j[proto]["p99_us"]), "{proto}: {j}");
    }
    // Homa is there when the build has the runtime; the key always is.
    assert!(j.get("homa").is_some(), "{j}");
    if !j["homa"].is_null() {
        assert!(positive(&j["homa"]["p50_us"]), "{j}");
        assert!(text(&out.stdout).contains("homa/udp"));
    }
    let stdout = text(&out.stdout);
    assert!(stdout.contains("p50_us") && stdout.lines().any(|l| l.starts_with("udp ")));
}

#[test]
fn tput_prints_gbps_for_both_transports() {
    let out = homa(&["perf", "tput", "--seconds", "1", "--json"]);
    let j = last_json(&out);
    assert!(positive(&j["tcp_gbps"]), "{j}");
    assert!(j["homa_gbps"].is_null() || positive(&j["homa_gbps"]), "{j}");
}

#[test]
fn demo_quick_prints_the_comparison() {
    let out = Command::new(env!("CARGO_BIN_EXE_homa"))
        .arg("demo")
        .env("HOMA_DEMO_QUICK", "1")
        .output()
        .expect("run homa demo");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("length<="), "{stdout}");
    assert!(stdout.contains("What you are seeing"), "{stdout}");
    assert!(stdout.contains("tcp :"), "{stdout}");
}

/// Kills the server when the test ends, pass or fail.
struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn client_against_a_separate_server_process() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_homa"))
        .args([
            "perf",
            "server",
            "--addr",
            "127.0.0.1:0",
            "--proto",
            "tcp",
            "--no-metrics",
            "--seconds",
            "30",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start perf server");
    let stdout = child.stdout.take().expect("piped stdout");
    let server = Server(child);
    let mut addr = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("server output");
        if let Some(a) = line.strip_prefix("perf server: TCP on ") {
            addr = Some(a.trim().to_string());
            break;
        }
        assert!(Instant::now() < deadline, "server did not start");
    }
    let addr = addr.expect("server printed its TCP address");
    let out = homa(&[
        "perf",
        "client",
        "--server",
        &addr,
        "--proto",
        "tcp",
        "--workload",
        "w3",
        "--gbps",
        "0.05",
        "--seconds",
        "1",
        "--calibration-ms",
        "200",
        "--json",
    ]);
    let j = last_json(&out);
    assert_eq!(j["proto"], "tcp");
    assert!(j["rpcs"].as_u64().unwrap() > 0, "{j}");
    for k in ["gbps", "p50_us", "p99_us", "p999_us"] {
        assert!(positive(&j[k]), "{k}: {j}");
    }
    let stdout = text(&out.stdout);
    assert!(stdout.contains("workload w3"), "{stdout}");
    assert!(stdout.contains("slow_p99"), "{stdout}");
    drop(server);
}

#[test]
fn bad_workload_is_a_clear_error() {
    let out = homa(&[
        "perf",
        "client",
        "--server",
        "127.0.0.1:9",
        "--workload",
        "w9",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown workload 'w9'"),
        "{}",
        text(&out.stderr)
    );
    let out = homa(&[
        "perf",
        "client",
        "--server",
        "127.0.0.1:9",
        "--workload",
        "w3",
        "--workload-dir",
        "/nonexistent",
        "--proto",
        "tcp",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("/nonexistent/w3.csv"),
        "{}",
        text(&out.stderr)
    );
}
