//! `homa demo` as a user runs it: on loopback, across the emulated switch as root, and
//! across it as an ordinary user (in a user namespace of its own). Quick mode (about a
//! second of load per transport). Only outcomes are checked (the mode, well-formed JSON,
//! positive numbers, nothing left behind): never timings, which depend on the machine.
//! The switch tests skip, saying why, where the process is not root (it needs root to
//! become another user) or the kernel refuses namespaces.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod common;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The last stdout line, parsed as JSON (the run must have succeeded).
fn last_json(out: &Output) -> Value {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{e}: last line {last:?}\n{stdout}\nstderr:\n{stderr}"))
}

/// The keys every `--json` line has, with positive numbers.
fn assert_slowdowns(j: &Value) {
    let positive = |v: &Value| v.as_f64().is_some_and(|x| x > 0.0 && x.is_finite());
    for side in ["homa", "tcp"] {
        for key in ["p50_slowdown_short", "p99_slowdown_short"] {
            assert!(positive(&j[side][key]), "{side}.{key} in {j}");
        }
    }
    assert!(positive(&j["short_p99_ratio_tcp_over_homa"]), "{j}");
}

/// A directory anyone can write, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("homa-demo-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Network namespaces whose name carries `pid` (`htb<pid>...`, the testbed's default).
fn namespaces_of(pid: u32) -> Vec<String> {
    std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("htb{pid}")))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn loopback_prints_the_comparison_and_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_homa"))
        .args(["demo", "--loopback", "--json"])
        .env("HOMA_DEMO_QUICK", "1")
        .output()
        .expect("run homa demo");
    let j = last_json(&out);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("length<="), "{stdout}");
    assert!(stdout.contains("What you are seeing"), "{stdout}");
    assert!(stdout.contains("tcp :"), "{stdout}");
    assert_eq!(j["mode"], "loopback", "{j}");
    assert_slowdowns(&j);
}

#[test]
fn switch_as_root() {
    if let Some(why) = common::testbed_unavailable() {
        eprintln!("demo switch_as_root: skipped ({why})");
        return;
    }
    let dir = TempDir::new("root");
    let child = Command::new(env!("CARGO_BIN_EXE_homa"))
        .args(["demo", "--quick", "--json", "--plot"])
        .arg(dir.0.join("demo.svg"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run homa demo");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for homa demo");
    let j = last_json(&out);
    assert_eq!(j["mode"], "switch", "{j}\nstderr:\n{}", text(&out.stderr));
    assert_slowdowns(&j);
    assert!(dir.0.join("demo.svg").is_file(), "no plot written");
    assert_eq!(
        namespaces_of(pid),
        Vec::<String>::new(),
        "namespaces left behind"
    );
}

/// A copy of the `homa` binary that another user can run (the target directory may not
/// be readable by them).
fn runnable_copy(dir: &Path) -> PathBuf {
    let exe = dir.join("homa");
    std::fs::copy(env!("CARGO_BIN_EXE_homa"), &exe).expect("copy the homa binary");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    exe
}

#[test]
fn switch_as_an_ordinary_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("demo switch_as_an_ordinary_user: skipped (not root: cannot become uid 65534)");
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("demo switch_as_an_ordinary_user: skipped (no setpriv, from util-linux)");
        return;
    }
    let dir = TempDir::new("user");
    let exe = runnable_copy(&dir.0);
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(&exe)
        .args(["demo", "--quick", "--json", "--plot"])
        .arg(dir.0.join("demo.svg"))
        .current_dir(&dir.0)
        .output()
        .expect("run homa demo as uid 65534");
    let stderr = text(&out.stderr);
    // Only the kernel's refusal is a reason to skip; the demo then ran on loopback.
    if stderr.contains("no emulated switch here: the kernel refuses") {
        eprintln!(
            "demo switch_as_an_ordinary_user: skipped ({})",
            stderr.trim()
        );
        return;
    }
    let j = last_json(&out);
    assert_eq!(j["mode"], "switch", "{j}\nstderr:\n{stderr}");
    assert_slowdowns(&j);
    assert!(dir.0.join("demo.svg").is_file(), "no plot written");
}

/// Bad arguments are a usage error (status 2) before anything runs: never a reason to
/// fall back to the loopback comparison, which is for machines that cannot build the
/// switch.
#[test]
fn bad_arguments_are_usage_errors_not_a_fallback() {
    let cases: &[&[&str]] = &[
        &["--hosts", "1"],
        &["--hosts", "0"],
        &["--hosts", "1000"],
        &["--link-gbps", "0"],
        &["--link-gbps", "NaN"],
        &["--load", "0"],
        &["--load", "5"],
        &["--seconds", "0"],
        &["--loopback", "--gbps", "0"],
        &["--loopback", "--gbps=-1"],
        &["--homa-config", "/nonexistent/homa.toml"],
    ];
    for args in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_homa"))
            .arg("demo")
            .args(*args)
            .env("HOMA_DEMO_QUICK", "1")
            .output()
            .expect("run homa demo");
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        let option = args.iter().rev().find(|a| a.starts_with("--")).unwrap();
        let option = option.split('=').next().unwrap();
        assert!(stderr.contains(option), "{args:?}: {stderr}");
        assert!(!stderr.contains("no emulated switch"), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
}
