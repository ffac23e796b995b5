//! `homa sim` as a user runs it: the table, the JSON line, the plot, bad arguments.

use std::process::{Command, Output};

use serde_json::Value;

fn homa(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_homa"))
        .args(args)
        .output()
        .expect("run homa")
}

#[test]
fn json_line_table_and_plot() {
    let dir = std::env::temp_dir().join(format!("homa-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("w2.svg");
    let out = homa(&[
        "sim",
        "--workload",
        "w2",
        "--load",
        "0.5",
        "--topology",
        "single",
        "--hosts",
        "8",
        "--duration-ms",
        "0.5",
        "--json",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("shortest 10%: P50"), "{stdout}");
    // Exactly one JSON line, the last, with the documented keys in order.
    let last = stdout.lines().last().unwrap();
    let keys: Vec<&str> = last
        .trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .map(|kv| kv.split(':').next().unwrap().trim_matches('"'))
        .collect();
    assert_eq!(
        keys,
        [
            "workload",
            "load",
            "hosts",
            "p50_slowdown_short",
            "p99_slowdown_short",
            "p99_slowdown_all",
            "utilization",
            "events_per_sec"
        ]
    );
    let v: Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["workload"], "w2");
    assert_eq!(v["hosts"], 8);
    assert!(v["p99_slowdown_short"].as_f64().unwrap() >= 1.0);
    assert_eq!(stdout.lines().filter(|l| l.starts_with('{')).count(), 1);
    // The plot is an SVG with its text as text elements.
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("<text") && plot.contains("slowdown"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_arguments_exit_2() {
    let out = homa(&["sim", "--workload", "w9", "--duration-ms", "0.1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown workload"));
    let out = homa(&["sim", "--hosts", "20", "--duration-ms", "0.1"]);
    assert_eq!(out.status.code(), Some(2));
    // Far more hosts than memory allows: refused, not an aborted allocation.
    for hosts in ["16777216", "16400"] {
        let out = homa(&["sim", "--hosts", hosts, "--duration-ms", "0.01"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{hosts}: {stderr}");
        assert!(stderr.contains("at most 16384 hosts"), "{hosts}: {stderr}");
    }
    let out = homa(&["sim", "--set", "nonsense=1", "--duration-ms", "0.1"]);
    assert_eq!(out.status.code(), Some(2));
    // Every engine setting has a name (grant_step_divisor was once missing); a bad
    // value names its setting, and one out of range is refused before the run.
    for (kv, says) in [
        ("grant_step_divisor=x", "grant_step_divisor = \"x\""),
        ("grant_step_divisor=0", "grant_step_divisor must be"),
        ("unsched_cutoffs=1,2", "eight comma-separated"),
    ] {
        let out = homa(&["sim", "--set", kv, "--duration-ms", "0.1", "--quiet"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{kv}: {stderr}");
        assert!(stderr.contains(says), "{kv}: {stderr}");
    }
    // A negative number is a value that is out of range, not an unknown flag `-0`.
    let out = homa(&["sim", "--load", "-0.5", "--duration-ms", "0.1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("load must be in"), "{stderr}");
    // Durations whose message records cannot fit in memory (this one: 32 GB were
    // reserved up front and the process aborted), or that overflow the clock.
    for duration in ["1e9", "1e7", "nan", "0", "inf"] {
        let arg = format!("--duration-ms={duration}");
        let out = homa(&["sim", &arg, "--quiet"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{duration}: {stderr}");
        assert!(stderr.contains("--duration-ms"), "{duration}: {stderr}");
        assert!(
            !stderr.contains("memory allocation"),
            "{duration}: {stderr}"
        );
    }
    // A plot that cannot be written is refused before the run, not after it.
    let out = homa(&[
        "sim",
        "--plot",
        "/nonexistent-dir/w4.svg",
        "--duration-ms",
        "0.1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot write /nonexistent-dir/w4.svg"),
        "{stderr}"
    );
    assert!(!stderr.contains("simulated"), "{stderr}");
    let out = homa(&["sim", "--duration-ms", "0.1", "--timeline-ms", "1e-9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--timeline-ms"));
    for warmup in ["0.1", "-1", "nan"] {
        let arg = format!("--warmup-ms={warmup}");
        let out = homa(&["sim", &arg, "--duration-ms", "0.1"]);
        assert_eq!(out.status.code(), Some(2), "--warmup-ms {warmup}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--warmup-ms"),
            "{warmup}"
        );
    }
}

#[test]
fn paper_mode_prints_ours_beside_the_papers_and_each_choice_undone() {
    let out = homa(&[
        "sim",
        "--paper",
        "--workload",
        "w2",
        "--hosts",
        "16",
        "--duration-ms",
        "0.05",
        "--compare",
        "--quiet",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    // The paper's measurement: arrivals stop, every message finishes.
    assert!(
        stdout.contains("arrivals stopped at ")
            && stdout.contains("; the last message finished at "),
        "{stdout}"
    );
    // The table beside the paper's: W2 at 80%, the paper's 1.98 and pFabric's 2.00.
    let row = stdout
        .lines()
        .find(|l| l.starts_with("w2 ") && l.contains("1.98"))
        .unwrap_or_else(|| panic!("no paper row: {stdout}"));
    assert!(row.contains("2.00"), "{row}");
    // Our P99 of the bin also as the paper's tools read it: a number, at most ours.
    let cols: Vec<&str> = row.split_whitespace().collect();
    let (ours, as_paper): (f64, f64) = (cols[2].parse().unwrap(), cols[3].parse().unwrap());
    assert!(as_paper > 0.0 && as_paper <= ours + 0.005, "{row}");
    // Then the full mode and each of the nine choices undone, one row each.
    let compare = stdout
        .split("each undone in turn")
        .nth(1)
        .expect("compare table");
    let rows: Vec<&str> = compare.lines().filter(|l| l.starts_with("w2 ")).collect();
    assert_eq!(rows.len(), 10, "{compare}");
    assert!(rows[0].contains(" paper "), "{}", rows[0]);
    for name in [
        "no one-way",
        "no uncapped",
        "no sched-levels",
        "no short-first",
        "no paper-frames",
    ] {
        assert!(rows.iter().any(|r| r.contains(name)), "{name}: {compare}");
    }
    // --paper takes no --rpc (the paper's messages are one-way).
    let out = homa(&["sim", "--paper", "--rpc", "--duration-ms", "0.05"]);
    assert_eq!(out.status.code(), Some(2));
    // Nor link rates: its network is the paper's, and a rate given would be ignored.
    for rate in ["--host-gbps", "--core-gbps"] {
        let out = homa(&["sim", "--paper", rate, "25", "--duration-ms", "0.05"]);
        assert_eq!(out.status.code(), Some(2), "{rate}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(rate), "{rate}: {stderr}");
    }
}

/// `homa sim --paper` with `extra` arguments, 16 hosts for 0.02 ms, `--json --quiet`:
/// checks that it succeeds and prints exactly one JSON line, the last, and returns it.
fn paper_json(extra: &[&str]) -> Value {
    let mut args = vec!["sim", "--paper", "--hosts", "16", "--duration-ms", "0.02"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--json", "--quiet"]);
    let out = homa(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with('{')).count(),
        1,
        "{stdout}"
    );
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn paper_mode_json_is_one_last_line() {
    // Every workload (no --workload): one JSON line, the last, after the table.
    let last = paper_json(&[]);
    let names: Vec<&str> = last["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["workload"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["w1", "w2", "w3", "w4", "w5"], "{last}");
    assert!(last.get("compare").is_none(), "{last}");
    // One workload with --compare: the full mode and each choice undone.
    let last = paper_json(&["--workload", "w2", "--compare"]);
    assert_eq!(last["workloads"].as_array().unwrap().len(), 1, "{last}");
    let compare = last["compare"].as_array().unwrap();
    assert_eq!(compare.len(), 10, "{last}");
    assert_eq!(compare[0]["variant"], "paper", "{last}");
    assert!(compare.iter().all(|c| c["workload"] == "w2"), "{last}");
}

/// A run too short for any message to finish has nothing to plot: it says so, writes no
/// file and still succeeds (the run itself is fine), with its JSON line.
#[test]
fn a_run_with_nothing_measured_writes_no_plot_and_succeeds() {
    let dir = std::env::temp_dir().join(format!("homa-sim-cli-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("empty.svg");
    let out = homa(&[
        "sim",
        "--workload",
        "w4",
        "--duration-ms",
        "0.001",
        "--json",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no plot written") && stderr.contains("no message was measured"),
        "{stderr}"
    );
    assert!(!svg.exists(), "an empty plot was written");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.lines().last().unwrap().starts_with('{'), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}
