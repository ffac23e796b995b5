//! `homa dump` reading a capture from standard input, and its hint for UDP-mode traffic.
//! (The decoder itself is tested in crates/dump/tests.)

// The capture builders of the decoder's tests.
#[path = "../../dump/tests/frames/mod.rs"]
mod frames;

use frames::{ethernet, ipv4, need_ack, pcapng, udp};

/// Runs `homa dump -` on `capture` given on standard input.
fn dump_stdin(capture: &[u8], args: &[&str]) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_homa"))
        .arg("dump")
        .arg("-")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run homa");
    // A usage error ends the process before it reads: the pipe may then be closed.
    match child.stdin.take().unwrap().write_all(capture) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    child.wait_with_output().unwrap()
}

#[test]
fn dump_reads_standard_input_and_hints_at_udp_mode() {
    // Default (UDP-mode) traffic: Homa inside UDP to port 4000.
    let file = pcapng(
        &[(1, None)],
        &[(
            0,
            1,
            ethernet(0x0800, &ipv4(17, 0, &udp(40000, 4000, &need_ack()))),
        )],
    );
    let out = dump_stdin(&file, &[]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty(), "no Homa packet without --udp-port");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--udp-port"), "a hint: {stderr}");
    let out = dump_stdin(&file, &["--udp-port", "4000"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("NEED_ACK"),
        "{stdout}"
    );
}

#[test]
fn dump_says_what_it_did_not_find() {
    let file = pcapng(
        &[(1, None)],
        &[(
            0,
            1,
            ethernet(0x0800, &ipv4(17, 0, &udp(40000, 4000, &need_ack()))),
        )],
    );
    // A port no packet uses: a hint naming it.
    let out = dump_stdin(&file, &["--udp-port", "4556"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && out.stdout.is_empty(), "{stderr}");
    assert!(
        stderr.contains("is 4556 the port of the Homa server"),
        "{stderr}"
    );
    // A capture of no frames says so, rather than nothing.
    let out = dump_stdin(&pcapng(&[(1, None)], &[]), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("holds no frames"), "{stderr}");
    // Port 0 and a maximum length of 0 are refused as usage errors.
    for args in [["--udp-port", "0"], ["--max-message-length", "0"]] {
        let out = dump_stdin(&file, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

/// A capture piped in live (`tcpdump -U -w - | homa dump`) shows each packet as it comes:
/// its line is out while the input is still open, not held in the output buffer until the
/// capture ends.
#[test]
fn a_live_capture_prints_each_packet_as_it_comes() {
    use std::io::{BufRead, Write};
    let file = pcapng(
        &[(1, None)],
        &[(
            0,
            1,
            ethernet(0x0800, &ipv4(17, 0, &udp(40000, 4000, &need_ack()))),
        )],
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_homa"))
        .args(["dump", "--udp-port", "4000"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run homa");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&file).unwrap();
    stdin.flush().unwrap();
    // The line is read with the input still open (the reader thread gives up only if
    // the process ends first).
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(std::time::Duration::from_secs(60));
    drop(stdin);
    let _ = child.wait();
    let line = line.expect("no line while the capture was still open");
    assert!(line.contains("NEED_ACK"), "{line}");
}
