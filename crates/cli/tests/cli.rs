//! The `homa` binary as a user runs it: output, exit codes, error messages.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn homa(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_homa"))
        .args(args)
        .output()
        .expect("run homa")
}

/// `homa args`, with `input` on its standard input.
fn homa_fed(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_homa"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn capture(name: &str) -> String {
    common::captures_dir()
        .join(name)
        .to_str()
        .expect("utf-8 path")
        .to_owned()
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).expect("utf-8 output")
}

#[test]
fn json_lines_for_short_pcap() {
    let out = homa(&["dump", "--json", &capture("short.pcap")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "",
        "nothing to report for a clean capture"
    );
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 5);
    let types: Vec<&str> = lines.iter().map(|j| j["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["DATA", "CUTOFFS", "DATA", "NEED_ACK", "ACK"]);
    for (i, j) in lines.iter().enumerate() {
        assert_eq!(j["no"].as_u64(), Some(i as u64 + 1));
        assert!(j["ts"].is_f64() && j["ts"].as_f64().unwrap() > 1e9, "{j}");
        assert!(j["ts_rel"].is_number(), "{j}");
        for k in ["src", "dst", "type"] {
            assert!(j[k].is_string(), "{k} in {j}");
        }
        for k in [
            "tos",
            "iplen",
            "sport",
            "dport",
            "sender_id",
            "sequence",
            "doff",
            "flags",
            "window",
            "checksum",
            "urgent",
        ] {
            assert!(j[k].is_u64(), "{k} in {j}");
        }
        assert!(
            j.get("priority").is_none(),
            "no IP-derived priority key: {j}"
        );
        assert!(j.get("error").is_none());
    }
    assert_eq!(lines[0]["ts_rel"], 0.0);
    assert_eq!(lines[1]["ts_rel"], 0.003342);
    assert_eq!(lines[2]["seg_offset"], 0xffff_ffffu32);
    assert_eq!(lines[2]["payload_len"], 100);
    assert!(lines[1]["unsched_cutoffs"].is_array());
    assert_eq!(lines[4]["acks"][0]["client_id"], 1000);
    assert_eq!(lines[4]["acks"][0]["server_port"], 4000);
    // Keys come in header order, not sorted.
    let first = text(&out.stdout).lines().next().unwrap().to_owned();
    assert!(first.starts_with(r#"{"no":1,"ts":"#), "{first}");
}

#[test]
fn text_lines_for_short_pcap() {
    let out = homa(&["dump", &capture("short.pcap")]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(
        lines[1],
        "    2 0.003342 10.201.0.2.4000 > 10.201.0.1.40000: CUTOFFS id=1001 tos=0xe0(p7) \
         iplen=82 cutoffs=0,0,0,0,1000000,15000,2800,200 cutoff_version=1"
    );
    assert_eq!(
        lines[2],
        "    3 0.007784 10.201.0.2.4000 > 10.201.0.1.40000: DATA id=1001 tos=0xc0(p6) \
         iplen=176 bytes=0..100/100 incoming=100 cutoff_version=0"
    );
}

#[test]
fn hex_packets() {
    // The README's GRANT (grants.pcap #31), in its hexdump form.
    let grant = "0000  0f a0 9c 41 00 00 00 00 00 00 00 11 50 06 00 00\n\
                 0010  1f b9 b9 7d 00 00 00 00 00 00 07 d1 00 03 0d 40\n\
                 0020  00";
    let out = homa(&["dump", "--hex", grant]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "4000 > 40001: GRANT id=2001 offset=200000 priority=0\n"
    );

    let out = homa(&["dump", "--json", "--hex", grant]);
    let j: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(j["type"], "GRANT");
    assert_eq!(j["offset"], 200_000);
    assert_eq!(j["priority"], 0);
    assert_eq!(j["checksum"], 0x1fb9);
    for k in ["ts", "ts_rel", "src", "dst", "no", "tos", "iplen"] {
        assert!(j.get(k).is_none(), "{k} in a --hex line: {j}");
    }

    // The same bytes as one 0x-prefixed string.
    let flat = "0x0fa09c41000000000000001150060000\
                1fb9b97d00000000000007d100030d4000";
    let out = homa(&["dump", "--hex", flat]);
    assert_eq!(
        text(&out.stdout),
        "4000 > 40001: GRANT id=2001 offset=200000 priority=0\n"
    );
}

/// `--hex -` reads the output of the common hex dump tools, as they print it.
#[test]
fn hex_from_dump_tools() {
    // The README's GRANT (grants.pcap #31).
    let want = "4000 > 40001: GRANT id=2001 offset=200000 priority=0\n";
    let dumps = [
        (
            "xxd",
            "00000000: 0fa0 9c41 0000 0000 0000 0011 5006 0000  ...A........P...\n\
             00000010: 1fb9 b97d 0000 0000 0000 07d1 0003 0d40  ...}...........@\n\
             00000020: 00                                       .\n",
        ),
        (
            "hexdump -C",
            "00000000  0f a0 9c 41 00 00 00 00  00 00 00 11 50 06 00 00  |...A........P...|\n\
             00000010  1f b9 b9 7d 00 00 00 00  00 00 07 d1 00 03 0d 40  |...}...........@|\n\
             00000020  00                                                |.|\n\
             00000021\n",
        ),
        (
            "od -tx1",
            "0000000 0f a0 9c 41 00 00 00 00 00 00 00 11 50 06 00 00\n\
             0000020 1f b9 b9 7d 00 00 00 00 00 00 07 d1 00 03 0d 40\n\
             0000040 00\n\
             0000041\n",
        ),
    ];
    for (tool, dump) in dumps {
        let out = homa_fed(&["dump", "--hex", "-"], dump.as_bytes());
        assert!(out.status.success(), "{tool}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), want, "{tool}");
    }
}

#[test]
fn hex_from_stdin() {
    let out = homa_fed(
        &["dump", "--hex", "-"],
        b"0000  0f a1 9c 43 00 00 00 00 00 00 00 14 50 06 00 00\n0010  21 43 b9 7d 00 00 00 00 00 00 13 89\n",
    );
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "4001 > 40003: BUSY id=5001\n");
}

#[test]
fn bad_hex_is_a_usage_error() {
    let out = homa(&["dump", "--hex", "0f a0 zz"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "homa dump: bad --hex argument: invalid hex digit 'z' at line 1, column 7\n"
    );
    assert!(out.stdout.is_empty());
    let out = homa(&["dump", "--hex", "0fa"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("odd number of hex digits"));
}

#[test]
fn undecodable_hex_packet_prints_an_error_line_and_fails() {
    let out = homa(&["dump", "--json", "--hex", "0fa0 9c40 0000"]);
    assert_eq!(out.status.code(), Some(1));
    let j: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(j["reason"], "truncated");
    assert_eq!(j["error"], "truncated: packet needs 28 header bytes, got 6");
    assert_eq!(j["sport"], 4000);
    assert_eq!(j["dport"], 40000);
}

#[test]
fn missing_and_non_capture_files() {
    let out = homa(&["dump", "/nonexistent/x.pcap"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("homa dump: /nonexistent/x.pcap: "), "{err}");
    assert!(!err.contains("panicked"));

    // This test's own source is not a capture.
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cli.rs");
    let out = homa(&["dump", src]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("not a pcap or pcapng file"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // A directory.
    let out = homa(&["dump", env!("CARGO_MANIFEST_DIR")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!text(&out.stderr).contains("panicked"));
}

#[test]
fn usage_errors() {
    // No file and no --hex, and nothing on standard input.
    let out = homa(&["dump"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("give a capture FILE"));
    // Both.
    let out = homa(&["dump", "x.pcap", "--hex", "00"]);
    assert_eq!(out.status.code(), Some(2));
    let out = homa(&["dump", "--udp-port", "70000", "x.pcap"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn broken_pipe_is_quiet() {
    // need_ack_unanswered.pcap prints ~100 KB, more than a pipe holds, so the writer
    // really does hit the closed pipe.
    let mut child = Command::new(env!("CARGO_BIN_EXE_homa"))
        .args(["dump", &capture("need_ack_unanswered.pcap")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("DATA"), "{first}");
    drop(stdout); // like `| head -1`
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(stderr, "", "a closed pipe is not an error worth a message");
    assert!(status.success(), "{status:?}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `homa perf rtt ... | head -1`: the reader goes away after the first line.
    let mut child = Command::new(env!("CARGO_BIN_EXE_homa"))
        .args([
            "perf", "rtt", "--size", "100", "--count", "20000", "--only", "udp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run homa");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("perf rtt:"), "{first}");
    // The read end is closed here; the next lines go nowhere.
    let out = child.wait_with_output().expect("wait");
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.code(),
        Some(141),
        "{:?} {stderr}",
        out.status.signal()
    );
}

#[test]
fn a_log_into_a_closed_pipe_ends_the_run_instead_of_hanging() {
    // `HOMA_LOG=homa=trace homa perf rtt ... 2>&1 | head`: the log's reader goes away.
    // The run must end as it does when stdout's reader goes away (status 141, as for
    // SIGPIPE), not hang: a thread that died on the write used to leave the other side
    // of the RPC waiting for ever.
    let mut child = Command::new(env!("CARGO_BIN_EXE_homa"))
        .env("HOMA_LOG", "homa=trace")
        .args([
            "perf", "rtt", "--size", "100", "--count", "2000", "--warmup", "100", "--only", "homa",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run homa");
    let mut first = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty(), "the trace log starts");
    // The read end is closed here.
    let limit = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > limit {
            let _ = child.kill();
            panic!("perf rtt still running 60 s after its log's reader went away");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(141), "{status:?}");
}

#[test]
fn every_command_that_prints_a_summary_takes_json() {
    for cmd in [
        &["dump"][..],
        &["chaos"],
        &["metrics"],
        &["perf", "client"],
        &["perf", "rtt"],
        &["perf", "tput"],
        &["perf", "grpc"],
        &["demo"],
        &["sim"],
        &["testbed", "bench"],
        &["testbed", "clean"],
    ] {
        let out = homa(&[cmd, &["--help"]].concat());
        assert!(out.status.success(), "{cmd:?}");
        assert!(
            text(&out.stdout)
                .lines()
                .any(|l| l.trim_start().starts_with("--json")),
            "homa {} --help has no --json",
            cmd.join(" ")
        );
    }
}

/// Without FILE, a capture piped in is read from standard input, as with "-".
#[test]
fn capture_on_standard_input_without_file() {
    let path = capture("short.pcap");
    let with_file = homa(&["dump", &path]);
    assert!(with_file.status.success(), "{}", text(&with_file.stderr));
    for args in [&["dump"][..], &["dump", "-"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_homa"))
            .args(args)
            .stdin(std::fs::File::open(&path).unwrap())
            .output()
            .expect("run homa dump");
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert_eq!(out.stdout, with_file.stdout, "{args:?}");
    }
    // The help shows FILE as optional and says what its absence means.
    let help = text(&homa(&["dump", "--help"]).stdout);
    assert!(
        help.contains("[FILE]") && help.contains("none with standard input"),
        "{help}"
    );
}
