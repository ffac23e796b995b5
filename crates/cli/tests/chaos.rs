//! `homa chaos` end to end: the binary, its stdout contract and its exit status.

use std::process::Command;

fn homa(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_homa"))
        .args(args)
        .output()
        .expect("run homa")
}

#[test]
fn chaos_prints_the_result_json_last_and_succeeds() {
    let out = homa(&[
        "chaos",
        "--rpcs",
        "300",
        "--endpoints",
        "4",
        "--loss",
        "0.1",
        "--dup",
        "0.05",
        "--reorder",
        "0.1",
        "--seed",
        "7",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "seed 7: {stderr}");
    assert!(
        stderr.contains("seed 7"),
        "the seed goes to stderr: {stderr}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().expect("a JSON line");
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = vec![
        "rpcs",
        "completed",
        "failed",
        "lost",
        "abandoned",
        "duplicate_executions",
        "corrupted",
        "sim_time_ms",
        "wall_ms",
    ];
    want.sort_unstable();
    let mut got = keys.clone();
    got.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(v["rpcs"], 300);
    assert_eq!(v["completed"], 300);
}

#[test]
fn chaos_takes_json_and_still_ends_with_the_result() {
    let out = homa(&["chaos", "--rpcs", "50", "--endpoints", "2", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        (v["rpcs"].as_u64(), v["completed"].as_u64()),
        (Some(50), Some(50))
    );
}

#[test]
fn chaos_with_a_killed_server_succeeds_when_its_rpcs_time_out() {
    let out = homa(&[
        "chaos",
        "--rpcs",
        "400",
        "--endpoints",
        "3",
        "--workload",
        "/nonexistent.csv",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing workload file is a usage error"
    );
    let out = homa(&[
        "chaos",
        "--rpcs",
        "2000",
        "--size",
        "20000",
        "--endpoints",
        "3",
        "--kill-server-at",
        "2",
        "--seed",
        "3",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "seed 3: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(v["failed"].as_u64().unwrap() > 0, "{stdout}\n{stderr}");
    assert_eq!(v["lost"], 0);
    // Every RPC is accounted for: the killed host's own died with it.
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k}: {stdout}"));
    assert_eq!(
        n("completed") + n("failed") + n("lost") + n("abandoned"),
        n("rpcs"),
        "{stdout}"
    );
}

/// A kill asked for after the run's end was never tested: that is a failure, not a pass
/// with a warning.
#[test]
fn chaos_fails_when_the_kill_never_happened() {
    let out = homa(&[
        "chaos",
        "--rpcs",
        "50",
        "--endpoints",
        "2",
        "--kill-server-at",
        "100000",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the kill was not tested"), "{stderr}");
    // Nor does the summary report a kill that did not happen.
    assert!(!stderr.contains("kill: host"), "{stderr}");
}

#[test]
fn chaos_rejects_probabilities_outside_0_1() {
    let out = homa(&["chaos", "--loss", "1.5"]);
    assert!(!out.status.success());
}

/// A length no Homa message can have is refused (it ran 1 MB or 1-byte messages in
/// silence).
#[test]
fn chaos_rejects_sizes_outside_one_message() {
    for size in ["0", "1000001", "2000000"] {
        let out = homa(&["chaos", "--size", size, "--rpcs", "1"]);
        assert_eq!(out.status.code(), Some(2), "--size {size}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--size"));
    }
}

#[test]
fn an_empty_swarm_is_refused_not_passed() {
    for args in [
        &["chaos", "--swarm", "0"][..],
        &["chaos", "--swarm", "4", "--swarm-budget-mb", "0"],
    ] {
        let out = homa(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} ran");
        assert!(stderr.contains("not in 1.."), "{args:?}: {stderr}");
    }
}

#[test]
fn a_swarm_runs_drawn_configurations_and_says_which_failed() {
    let out = homa(&[
        "chaos",
        "--swarm",
        "4",
        "--seed",
        "100",
        "--swarm-budget-mb",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "swarm from seed 100: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().expect("a JSON line");
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["swarm"], 4, "{last}");
    assert_eq!(v["passed"], 4, "{last}");
    assert_eq!(v["failed"], 0, "{last}");
    assert_eq!(v["failing_seeds"], serde_json::json!([]), "{last}");
}
