//! `homa perf` run as a user runs it, over loopback (`homa demo`: demo.rs). Only the shape
//! of the output is checked (well-formed tables and JSON, positive numbers): never timings,
//! which depend on the machine.

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
    last_json_line(out)
}

/// The JSON on the last line of stdout, whatever the exit status.
fn last_json_line(out: &Output) -> Value {
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
    // udp_mp: the multi-peer reference (unconnected sockets, sendto and recvfrom).
    for proto in ["tcp", "udp", "udp_mp"] {
        assert!(positive(&j[proto]["p50_us"]), "{proto}: {j}");
        assert!(positive(&j[proto]["p99_us"]), "{proto}: {j}");
    }
    // Homa is there when the build has the runtime; the key always is.
    assert!(j.get("homa").is_some(), "{j}");
    if !j["homa"].is_null() {
        assert!(positive(&j["homa"]["p50_us"]), "{j}");
        assert!(text(&out.stdout).contains("homa/udp"));
        assert!(text(&out.stdout).contains("homa/udp_mp"));
    }
    let stdout = text(&out.stdout);
    assert!(stdout.contains("p50_us") && stdout.lines().any(|l| l.starts_with("udp ")));
}

#[test]
fn tput_prints_gbps_for_both_transports_and_the_udp_floor() {
    let out = homa(&["perf", "tput", "--seconds", "1", "--json"]);
    let j = last_json(&out);
    assert!(positive(&j["tcp_gbps"]), "{j}");
    assert!(positive(&j["udp_gbps"]), "{j}");
    if j["homa_gbps"].is_null() {
        assert!(j["homa_over_udp"].is_null(), "{j}");
    } else {
        assert!(positive(&j["homa_gbps"]), "{j}");
        let ratio = j["homa_gbps"].as_f64().unwrap() / j["udp_gbps"].as_f64().unwrap();
        let printed = j["homa_over_udp"].as_f64().unwrap();
        assert!((printed - ratio).abs() < 0.01, "{j}");
        // Retransmissions and drops per RPC, every drop reason named.
        let losses = &j["homa_losses_per_rpc"];
        for key in ["retransmitted", "kernel_drops"] {
            assert!(losses[key].as_f64().is_some_and(|n| n >= 0.0), "{j}");
        }
        for reason in homa::DropReason::ALL {
            assert!(losses[reason.name()].is_number(), "{j}");
        }
        assert!(
            text(&out.stdout).contains("homa DATA sent again and packets dropped"),
            "{}",
            text(&out.stdout)
        );
    }
    let stdout = text(&out.stdout);
    assert!(stdout.lines().any(|l| l.starts_with("udp ")), "{stdout}");
    assert!(stdout.contains("udp/tcp"), "{stdout}");
}

#[test]
fn tput_measures_a_second_window_in_the_same_run() {
    let out = homa(&[
        "perf",
        "tput",
        "--size",
        "200000",
        "--window",
        "2",
        "--and-window",
        "8",
        "--only",
        "homa,tcp",
        "--seconds",
        "0.5",
        "--json",
    ]);
    let j = last_json(&out);
    let (first, second) = (&j, &j["and_window"]);
    assert_eq!(second["window"], 8, "{j}");
    assert!(positive(&second["tcp_gbps"]), "{j}");
    let ratio = |lane: &str| {
        let r = second[lane].as_f64().unwrap() / first[lane].as_f64().unwrap();
        let lane_name = lane.trim_end_matches("_gbps");
        let printed = second[format!("{lane_name}_over_window")].as_f64().unwrap();
        assert!((printed - r).abs() < 0.01, "{lane}: {j}");
    };
    ratio("tcp_gbps");
    let stdout = text(&out.stdout);
    assert!(stdout.lines().any(|l| l.starts_with("tcp@8 ")), "{stdout}");
    assert!(stdout.contains("tcp@8/tcp@2"), "{stdout}");
    if !first["homa_gbps"].is_null() {
        assert!(positive(&second["homa_gbps"]), "{j}");
        ratio("homa_gbps");
        // The second window's packets are its own: every RPC took its DATA.
        let data = second["homa_packets_per_rpc"]["DATA"].as_f64().unwrap();
        assert!(data >= 1.0, "{j}");
        assert!(stdout.contains("at window 8"), "{stdout}");
    }
    // Without the option, the key is there and null.
    let out = homa(&[
        "perf",
        "tput",
        "--size",
        "100000",
        "--only",
        "tcp",
        "--seconds",
        "0.2",
        "--json",
    ]);
    assert!(last_json(&out)["and_window"].is_null());
}

#[test]
fn small_tput_runs_both_udp_echo_floors_beside_homa() {
    let out = homa(&[
        "perf",
        "tput",
        "--size",
        "100",
        "--response",
        "100",
        "--window",
        "64",
        "--seconds",
        "0.5",
        "--json",
    ]);
    let j = last_json(&out);
    let stdout = text(&out.stdout);
    assert!(positive(&j["udp_batched_rps"]), "{j}");
    if j["udp_gso_rps"].is_null() {
        // Only a kernel without UDP GRO skips it, and says so.
        assert!(stdout.contains("udp_gso: skipped"), "{stdout}");
    } else {
        assert!(positive(&j["udp_gso_rps"]), "{j}");
        assert!(positive(&j["cpu_us_per_rpc"]["udp_gso"]), "{j}");
        assert!(
            stdout.lines().any(|l| l.starts_with("udp_gso ")),
            "{stdout}"
        );
        if positive(&j["homa_rps"]) {
            let ratio = j["homa_rps"].as_f64().unwrap() / j["udp_gso_rps"].as_f64().unwrap();
            let printed = j["homa_over_udp_gso"].as_f64().unwrap();
            assert!((printed - ratio).abs() < 0.01, "{j}");
        }
    }
}

#[test]
fn rtt_and_tput_run_homa_over_raw_ip_when_privileged() {
    let rtt = homa(&[
        "perf", "rtt", "--raw", "--only", "homa", "--count", "200", "--warmup", "50", "--json",
    ]);
    let tput = homa(&["perf", "tput", "--raw", "--seconds", "0.5", "--json"]);
    if !nix::unistd::geteuid().is_root() {
        // Without CAP_NET_RAW both must say why, not panic.
        for out in [&rtt, &tput] {
            assert!(!out.status.success());
            assert!(
                text(&out.stderr).contains("CAP_NET_RAW"),
                "{}",
                text(&out.stderr)
            );
        }
        eprintln!("skipped the raw-IP runs: not root (the refusals were checked)");
        return;
    }
    let j = last_json(&rtt);
    assert!(positive(&j["homa"]["p50_us"]), "{j}");
    let j = last_json(&tput);
    assert!(positive(&j["homa_gbps"]), "{j}");
}

/// Kills the server when the test ends, pass or fail.
struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `homa perf server` process on an automatic loopback port, serving `proto`; returns
/// it, its address, and its remaining stdout lines (read on a thread).
fn start_server(proto: &str) -> (Server, String, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_homa"))
        .args([
            "perf",
            "server",
            "--addr",
            "127.0.0.1:0",
            "--proto",
            proto,
            "--no-metrics",
            "--seconds",
            "30",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start perf server");
    let stdout = child.stdout.take().expect("piped stdout");
    let server = Server(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = match proto {
        "homa" => "Homa on ",
        "grpc-homa" => "gRPC (tonic) over Homa on ",
        _ => "TCP on ",
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("server did not start");
        if let Some(rest) = line.strip_prefix("perf server: ") {
            if let Some(a) = rest.strip_prefix(ready) {
                let addr = a.split_whitespace().next().expect("an address").to_string();
                return (server, addr, rx);
            }
        }
    }
}

/// `homa perf client` over TCP to `addr`: W3 at 0.05 Gbps for `seconds`, JSON at the end.
fn tcp_client_args(addr: &str, seconds: &str, calibration_ms: &str) -> Vec<String> {
    [
        "perf",
        "client",
        "--server",
        addr,
        "--proto",
        "tcp",
        "--workload",
        "w3",
        "--gbps",
        "0.05",
        "--seconds",
        seconds,
        "--calibration-ms",
        calibration_ms,
        "--json",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn client_against_a_separate_server_process() {
    let (server, addr, _lines) = start_server("tcp");
    let args = tcp_client_args(&addr, "1", "200");
    let out = homa(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let j = last_json(&out);
    assert_eq!(j["proto"], "tcp");
    assert!(j["rpcs"].as_u64().unwrap() > 0, "{j}");
    for k in ["gbps", "p50_us", "p99_us", "p999_us"] {
        assert!(positive(&j[k]), "{k}: {j}");
    }
    assert_eq!(j["errors"].as_u64(), Some(0), "{j}");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("workload w3"), "{stdout}");
    assert!(stdout.contains("slow_p99"), "{stdout}");
    // A rate the generator draws easily is drawn for the whole run.
    assert!(!stdout.contains("arrivals drawn for only"), "{stdout}");
    drop(server);
}

/// SIGTERM (as Ctrl-C) ends a server the way `--seconds` does: it says so and exits with
/// success, through `exit`, rather than dying of the signal.
#[test]
fn server_stops_cleanly_on_sigterm() {
    let (mut server, _addr, lines) = start_server("both");
    let kill = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill -TERM: {kill:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = server.0.try_wait().expect("wait for the server") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server is still running 60 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    // The reader thread ends at the end of the server's output.
    let said: Vec<String> =
        std::iter::from_fn(|| lines.recv_timeout(Duration::from_secs(30)).ok()).collect();
    assert!(
        said.iter()
            .any(|l| l.starts_with("perf server: stopped after ")),
        "{said:?}"
    );
}

#[test]
fn client_counts_the_rpcs_that_fail_when_its_server_dies() {
    let (server, addr, _lines) = start_server("tcp");
    let mut client = Command::new(env!("CARGO_BIN_EXE_homa"))
        .args(tcp_client_args(&addr, "3", "100"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start perf client");
    // Kill the server once the load is under way (the first per-second line): calibration
    // has passed, and every RPC from then on fails on the dead connections.
    let mut lines = BufReader::new(client.stdout.take().expect("piped stdout")).lines();
    let mut stdout = String::new();
    for line in lines.by_ref().map_while(Result::ok) {
        stdout.push_str(&line);
        stdout.push('\n');
        if line.starts_with("[  1s]") {
            break;
        }
    }
    drop(server);
    for line in lines.map_while(Result::ok) {
        stdout.push_str(&line);
        stdout.push('\n');
    }
    let out = client.wait_with_output().expect("perf client output");
    let out = Output {
        stdout: stdout.into_bytes(),
        ..out
    };
    let j = last_json_line(&out);
    assert!(j["errors"].as_u64().is_some_and(|n| n > 0), "{j}");
    // The warning on stderr, and an exit status that says the run was not clean: 3 when
    // some RPCs completed before the server died, 1 when none did.
    assert!(
        text(&out.stderr).contains("RPCs failed"),
        "{}",
        text(&out.stderr)
    );
    let status = out.status.code();
    let completed = j["rpcs"].as_u64().unwrap_or(0);
    assert_eq!(status, Some(if completed > 0 { 3 } else { 1 }), "{j}");
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

/// Each bad argument is refused before anything runs, by its own name and value, with
/// exit status 2.
#[test]
fn bad_arguments_are_refused_by_name() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["tput", "--size", "0"],
            "--size of 0 bytes is out of range (1 to 1000000)",
        ),
        (
            &["tput", "--response", "2000000"],
            "--response of 2000000 bytes is out of range (0 to 1000000)",
        ),
        (&["tput", "--window", "0"], "--window must be at least 1"),
        (
            &["tput", "--and-window", "0"],
            "--and-window must be at least 1",
        ),
        // Used to allocate a request buffer per RPC outstanding until memory ran out.
        (
            &["tput", "--window", "100000"],
            "--window of 100000 is more than 4294, the most RPCs",
        ),
        (
            &["tput", "--size", "100", "--and-window", "70000"],
            "--and-window of 70000 is more than 65536",
        ),
        (
            &["grpc", "--concurrency", "1000000"],
            "--concurrency of 1000000 is more than 65536",
        ),
        (
            &["tput", "--seconds", "0"],
            "--seconds must be a positive number, got 0",
        ),
        (&["rtt", "--count", "0"], "--count must be at least 1"),
        (
            &["rtt", "--size", "2000000"],
            "--size of 2000000 bytes is out of range (0 to 1000000)",
        ),
        (
            &["client", "--server", "127.0.0.1:9", "--gbps", "0"],
            "--gbps must be a positive number, got 0",
        ),
        (
            &[
                "client",
                "--server",
                "127.0.0.1:9",
                "--response-len",
                "2000000",
            ],
            "--response-len of 2000000 bytes is out of range (0 to 1000000)",
        ),
        (
            &["grpc", "--size", "950000"],
            "--size of 950000 bytes is out of range (0 to 900000)",
        ),
        (
            &["grpc", "--seconds", "0"],
            "--seconds must be a positive number, got 0",
        ),
        // Files named on the command line that cannot be read.
        (
            &[
                "client",
                "--server",
                "127.0.0.1:9",
                "--workload",
                "/nonexistent/w.csv",
            ],
            "cannot read workload file /nonexistent/w.csv",
        ),
        (
            &["rtt", "--homa-config", "/nonexistent/h.toml"],
            // (The path once, not again in the reason.)
            "cannot use --homa-config /nonexistent/h.toml: No such file",
        ),
        (
            &["grpc", "--concurrency", "0"],
            "--concurrency must be at least 1",
        ),
        (
            &["grpc", "--stream-messages", "0"],
            "--stream-messages must be at least 1",
        ),
        (
            &["tput", "--only", "udp-gso,udp-batched", "--size", "100000"],
            "nothing to measure: the UDP echoes run only where",
        ),
        // Refused before the load, not found out after it.
        (
            &[
                "client",
                "--server",
                "127.0.0.1:9",
                "--plot",
                "/nonexistent-dir/p.svg",
            ],
            "cannot write /nonexistent-dir/p.svg",
        ),
        // Used to become 1 in silence.
        (
            &[
                "client",
                "--server",
                "127.0.0.1:9",
                "--max-outstanding",
                "0",
            ],
            "--max-outstanding",
        ),
        (
            &["client", "--server", "127.0.0.1:9", "--connections", "0"],
            "--connections",
        ),
        // Used to panic converting it to a Duration.
        (
            &["client", "--server", "127.0.0.1:9", "--seconds", "1e20"],
            "longer than a run may be",
        ),
        (&["grpc", "--seconds", "1e20"], "longer than a run may be"),
        // Used to mean "calibrate only" in silence.
        (
            &["client", "--server", "127.0.0.1:9", "--seconds", "-3"],
            "--seconds must be 0 or more, got -3",
        ),
        (
            &["server", "--seconds", "0"],
            "--seconds must be a positive number",
        ),
        // Found out after the load, which was then thrown away.
        (
            &[
                "client",
                "--server",
                "127.0.0.1:9",
                "--samples-out",
                "/nonexistent-dir/s.txt",
            ],
            "cannot write /nonexistent-dir/s.txt",
        ),
        (
            &[
                "client",
                "--server",
                "127.0.0.1:9",
                "--baseline-out",
                "/nonexistent-dir/b.json",
            ],
            "cannot write /nonexistent-dir/b.json",
        ),
        // Used to exit 0 with every lane null.
        (
            &["rtt", "--only", "udp", "--size", "100000"],
            "nothing to measure: udp: skipped",
        ),
        (
            &[
                "tput",
                "--perf-ctl",
                "/nonexistent-fifo",
                "--profile-lane",
                "udp",
            ],
            "only the homa and tcp lanes can be profiled",
        ),
        (
            &["client", "--server", "0.0.0.0:9"],
            "is not a unicast address",
        ),
        (
            &["client", "--server", "127.0.0.1:0"],
            "port 0 is no server's port",
        ),
        (
            &[
                "client",
                "--server",
                "127.0.0.1:9",
                "--echo",
                "--response-len",
                "500",
            ],
            "cannot be used with",
        ),
        // Refused before the run, not after it with "no completed RPCs to plot".
        (
            &[
                "client",
                "--server",
                "127.0.0.1:9",
                "--calibration-ms",
                "0",
                "--plot",
                "/tmp/homa-never-written.svg",
            ],
            "--calibration-ms 0 leaves out",
        ),
        (
            &["grpc", "--only", "foo"],
            "--only foo: the lanes are homa and h2",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["perf"];
        all.extend_from_slice(args);
        let out = homa(&all);
        let err = text(&out.stderr);
        // Exit status 2: bad arguments, as README says for every command.
        assert_eq!(out.status.code(), Some(2), "{all:?}: {err}");
        assert!(err.contains(want), "{all:?}: wanted {want:?}, got: {err}");
    }
}

/// `perf server --threads` out of 1..=1024 is a usage error, before any thread starts
/// (100,000 threads ran the process out of memory partway, with a thread's panic).
#[test]
fn server_threads_out_of_range_is_a_usage_error() {
    for threads in ["0", "1025", "100000"] {
        let arg = format!("--threads={threads}");
        let out = homa(&[
            "perf",
            "server",
            &arg,
            "--addr",
            "127.0.0.1:0",
            "--no-metrics",
        ]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{threads}: {err}");
        assert!(err.contains("not in 1..=1024"), "{threads}: {err}");
        assert!(!err.contains("panicked"), "{threads}: {err}");
    }
}

#[test]
fn client_spreads_over_servers_and_writes_samples_and_baselines() {
    let (a, addr_a, lines_a) = start_server("both");
    let (b, addr_b, lines_b) = start_server("both");
    let dir = std::env::temp_dir().join(format!("homa-perf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (samples, baseline) = (dir.join("samples.txt"), dir.join("baseline.json"));
    let out = homa(&[
        "perf",
        "client",
        "--server",
        &format!("{addr_a},{addr_b}"),
        "--proto",
        "both",
        "--workload",
        "w3",
        "--gbps",
        "0.02",
        "--seconds",
        "1",
        "--calibration-ms",
        "100",
        "--samples-out",
        samples.to_str().unwrap(),
        "--baseline-out",
        baseline.to_str().unwrap(),
        "--json",
    ]);
    let j = last_json(&out);
    let rpcs = |p: &str| j[p]["rpcs"].as_u64().unwrap();
    for proto in ["homa", "tcp"] {
        assert_eq!(j[proto]["errors"].as_u64(), Some(0), "{proto}: {j}");
    }
    // Homa's line says what its socket exchanged: at least a request packet out and a
    // response packet in per RPC it completed (calibration included), every type named.
    let packets = &j["homa"]["homa_packets"];
    let completed = packets["rpcs"].as_u64().unwrap();
    assert!(completed >= rpcs("homa"), "{j}");
    let count = |dir: &str, t: &str| packets[dir][t].as_u64().unwrap();
    assert!(count("sent", "DATA") >= completed, "{j}");
    assert!(count("received", "DATA") >= completed, "{j}");
    assert!(packets["sent"]["GRANT"].is_u64() && packets["received"]["ACK"].is_u64());
    assert!(j["tcp"].get("homa_packets").is_none(), "{j}");
    let text = std::fs::read_to_string(&samples).unwrap();
    for proto in ["homa", "tcp"] {
        let lines: Vec<(u64, u64)> = text
            .lines()
            .filter_map(|l| l.strip_prefix(proto)?.strip_prefix(' '))
            .map(|l| {
                let (len, ns) = l.split_once(' ').unwrap();
                (len.parse().unwrap(), ns.parse().unwrap())
            })
            .collect();
        assert_eq!(lines.len() as u64, rpcs(proto), "{proto}");
        assert!(lines.iter().all(|&(len, ns)| len >= 1 && ns > 0));
    }
    let base: Value = serde_json::from_str(&std::fs::read_to_string(&baseline).unwrap()).unwrap();
    for proto in ["homa", "tcp"] {
        let points = base[proto].as_array().unwrap();
        assert!(!points.is_empty(), "{base}");
        assert!(points.iter().all(|p| positive(&p[0]) && positive(&p[1])));
    }
    // Both servers answered requests of both transports.
    drop((a, b));
    for (name, lines) in [("first", lines_a), ("second", lines_b)] {
        let all: Vec<String> = lines.iter().collect();
        let served = |proto: &str| {
            all.iter().any(|l| {
                l.split('|').any(|part| {
                    let mut w = part.split_whitespace().skip_while(|w| *w != proto);
                    w.nth(1)
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                })
            })
        };
        assert!(served("homa") && served("tcp"), "{name} server: {all:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn grpc_prints_homa_and_h2_side_by_side() {
    let out = homa(&[
        "perf",
        "grpc",
        "--count",
        "200",
        "--warmup",
        "20",
        "--seconds",
        "0.4",
        "--stream-messages",
        "500",
        "--json",
    ]);
    let j = last_json(&out);
    let last = text(&out.stdout).lines().last().unwrap_or("").to_string();
    assert!(last.starts_with("{\"homa\":"), "{last}");
    for lane in ["homa", "h2"] {
        for key in ["p50_us", "p99_us", "rps", "down_mps", "up_mps"] {
            assert!(positive(&j[lane][key]), "{lane}.{key}: {j}");
        }
    }
    assert!(text(&out.stdout).contains("homa/h2"));
}

#[test]
fn tput_turns_a_profiler_on_for_one_lanes_slices_only() {
    // A plain file stands in for `perf record`'s control FIFO: the commands are lines.
    let dir = std::env::temp_dir().join(format!("homa-tput-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ctl = dir.join("ctl");
    std::fs::write(&ctl, "").unwrap();
    let ctl_arg = ctl.to_str().unwrap();
    let out = homa(&[
        "perf",
        "tput",
        "--size",
        "20000",
        "--window",
        "2",
        "--and-window",
        "8",
        "--only",
        "tcp",
        "--seconds",
        "1",
        "--profile-lane",
        "tcp",
        "--profile-window",
        "8",
        "--perf-ctl",
        ctl_arg,
        "--json",
    ]);
    last_json(&out);
    // Two measured slices of the lane at window 8 (one second in half-second slices),
    // each bracketed; nothing for the lane at window 2 or the warm-ups.
    let commands = std::fs::read_to_string(&ctl).unwrap();
    assert_eq!(commands, "enable\ndisable\n".repeat(2), "{commands:?}");

    // A lane the run does not measure is refused before anything runs.
    for (lane, window, says) in [("tcp", "4", "window 4"), ("udp", "2", "homa and tcp")] {
        let out = homa(&[
            "perf",
            "tput",
            "--only",
            "tcp,udp",
            "--window",
            "2",
            "--profile-lane",
            lane,
            "--profile-window",
            window,
            "--perf-ctl",
            ctl_arg,
        ]);
        assert!(!out.status.success(), "{lane}@{window} accepted");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(says), "{lane}@{window}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A load run in which every RPC failed measured nothing: it says so and exits 1, where
/// it printed a table of zeros and exited 0 (with calibration off, which would have
/// failed first).
#[test]
fn client_fails_when_no_rpc_completes() {
    // A port with nothing bound: every Homa RPC fails at once (no such socket).
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("127.0.0.1:{port}");
    let out = homa(&[
        "perf",
        "client",
        "--server",
        &server,
        "--proto",
        "homa",
        "--seconds",
        "1",
        "--gbps",
        "0.05",
        "--calibration-ms",
        "0",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("none of its RPCs completed"), "{stderr}");
}

/// A client of one protocol against a server of another gets answers, but not perf
/// responses: every RPC fails, saying so, instead of timing the other server's error
/// replies as round trips (a Homa client against a gRPC-over-Homa server reported 2,000
/// RPCs and 0 errors).
#[test]
fn a_client_against_a_server_of_another_protocol_fails() {
    let (server, addr, _lines) = start_server("grpc-homa");
    let out = homa(&[
        "perf",
        "client",
        "--server",
        &addr,
        "--proto",
        "homa",
        "--seconds",
        "1",
        "--calibration-ms",
        "100",
        "--json",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("were asked for") && err.contains("--proto"),
        "{err}"
    );
    drop(server);
}

/// `--seconds 0` calibrates only: it says so, and `--json` ends with the calibration.
#[test]
fn a_calibration_only_run_ends_with_the_calibration_as_json() {
    let (server, addr, _lines) = start_server("tcp");
    let args = tcp_client_args(&addr, "0", "100");
    let out = homa(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("calibration only"), "{stdout}");
    assert!(!stdout.contains("offered load"), "{stdout}");
    let j = last_json(&out);
    let points = j["tcp"].as_array().expect("the TCP calibration");
    assert!(!points.is_empty(), "{j}");
    for p in points {
        assert!(positive(&p[0]) && positive(&p[1]), "{j}");
    }
    drop(server);
}

/// An offered rate faster than the load generator can draw arrivals (1,000 Gbps of
/// 100-byte requests) still ends with `--seconds`, saying the load was not sustained; it
/// used to run on for tens of seconds, or never end.
#[test]
fn an_offered_rate_beyond_the_generator_still_ends_on_time() {
    let (server, addr, _lines) = start_server("tcp");
    let started = Instant::now();
    let out = homa(&[
        "perf",
        "client",
        "--server",
        &addr,
        "--proto",
        "tcp",
        "--workload",
        "100",
        "--gbps",
        "1000",
        "--seconds",
        "1",
        "--calibration-ms",
        "0",
        "--json",
    ]);
    // A hang detector, not a speed check: the run is 1 s, its drain at most 10 more.
    assert!(started.elapsed() < Duration::from_secs(60));
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("arrivals drawn for only"), "{stderr}");
    assert!(last_json(&out)["rpcs"].as_u64().unwrap() > 0, "{stdout}");
    drop(server);
}

/// A perf process a testbed bench starts names the bench in `HOMA_EXIT_WITH_PARENT`, and
/// stops by itself once its parent is not that process (the bench killed outright, the
/// process re-parented): here it never was, so it stops at once, well before the 600 s
/// it was asked to serve. Without the variable it serves on.
#[test]
fn a_perf_server_whose_named_parent_is_gone_stops_by_itself() {
    let start = |parent: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_homa"));
        cmd.args([
            "perf",
            "server",
            "--addr",
            "127.0.0.1:0",
            "--proto",
            "tcp",
            "--no-metrics",
            "--seconds",
            "600",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some(p) = parent {
            cmd.env(homa_testbed::leftovers::EXIT_WITH_PARENT_ENV, p);
        }
        Server(cmd.spawn().expect("start perf server"))
    };
    let exited_within = |s: &mut Server, patience: Duration| {
        let end = Instant::now() + patience;
        while Instant::now() < end {
            if s.0.try_wait().expect("wait").is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    };
    // No process's child has pid 0 for a parent.
    let mut orphan = start(Some("0"));
    assert!(
        exited_within(&mut orphan, Duration::from_secs(60)),
        "a server whose parent is not the one named ran on"
    );
    let ours = std::process::id().to_string();
    let mut watched = start(Some(&ours));
    let mut free = start(None);
    assert!(!exited_within(&mut watched, Duration::from_secs(1)));
    assert!(!exited_within(&mut free, Duration::from_secs(1)));
}
