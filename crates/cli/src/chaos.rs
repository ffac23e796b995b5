//! `homa chaos`: many RPCs between in-memory endpoints over a faulty network, every byte
//! checked (the workload of `homa_harness::run_chaos`).
//!
//! Progress and a summary go to stderr; the last stdout line is one JSON object:
//! `{"rpcs":..,"completed":..,"failed":..,"lost":..,"abandoned":..,"duplicate_executions":..,
//! "corrupted":..,"sim_time_ms":..,"wall_ms":..}` (`abandoned`: the RPCs a killed host had
//! outstanding, which died with it). The exit status is non-zero when an RPC was lost,
//! executed twice or corrupted, or failed (without `--kill-server-at`; with it, when an RPC
//! to a live server failed or one to the killed server did not time out in time).

use clap::Args;
use homa_harness::{run_chaos, ChaosConfig, ChaosReport, Progress, Sizes};
use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Arguments of `homa chaos`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Exit status: 0 when every RPC completed once with the right bytes (with \
                  --kill-server-at, when only RPCs to the killed host failed) or every \
                  swarm case passed; 1 when one did not (lost, duplicated or wrong bytes, \
                  a stall, a failure, a failing case) or when the run ended before \
                  --kill-server-at; 2 for bad arguments or an unreadable --workload file."
)]
pub struct ChaosArgs {
    /// RPCs to run in total.
    #[arg(long, default_value_t = 10_000)]
    pub rpcs: u64,
    /// Request length in bytes, 1..=1,000,000 (responses have the same length).
    #[arg(
        long,
        default_value_t = 100,
        conflicts_with = "workload",
        value_parser = clap::value_parser!(u32).range(1..=1_000_000)
    )]
    pub size: u32,
    /// Draw lengths from a workload CDF (`length_bytes,cumulative_fraction`), e.g.
    /// crates/harness/workloads/w3.csv. Lengths are clamped to 8..=1,000,000 bytes.
    #[arg(long, value_name = "FILE.csv")]
    pub workload: Option<PathBuf>,
    /// Hosts; each is both client and server.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(2..=65_000))]
    pub endpoints: u64,
    /// Probability a packet is lost.
    #[arg(allow_negative_numbers = true, long, default_value_t = 0.0, value_parser = probability)]
    pub loss: f64,
    /// Probability a packet is duplicated.
    #[arg(allow_negative_numbers = true, long, default_value_t = 0.0, value_parser = probability)]
    pub dup: f64,
    /// Probability a packet is delayed (up to 50 us) so later packets overtake it.
    #[arg(allow_negative_numbers = true, long, default_value_t = 0.0, value_parser = probability)]
    pub reorder: f64,
    /// Probability a packet is damaged in flight (dropped, as by the UDP checksum).
    #[arg(allow_negative_numbers = true, long, default_value_t = 0.0, value_parser = probability)]
    pub corrupt: f64,
    /// Probability of a junk datagram beside a packet, handed to the parser.
    #[arg(allow_negative_numbers = true, long, default_value_t = 0.0, value_parser = probability)]
    pub garbage: f64,
    /// Seed of everything; the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Kill host 0 at this simulated time (ms); RPCs to it must then time out.
    #[arg(long, value_name = "MS")]
    pub kill_server_at: Option<u64>,
    /// Most outstanding RPCs per client.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub concurrency: u64,
    /// Check the grant invariants at every step (slow).
    #[arg(long)]
    pub check: bool,
    /// Swarm testing: run N cases whose whole configuration (workload, faults, hosts,
    /// concurrency, engine parameters) is drawn from its seed: `--seed`, `--seed`+1, ...
    /// The other run options are ignored. Prints, for each case that loses, fails or
    /// stalls, its parameters and the command that replays it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub swarm: Option<u64>,
    /// Swarm: bytes of requests per case, in megabytes (the RPC count follows).
    #[arg(long, value_name = "MB", default_value_t = 20, requires = "swarm",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub swarm_budget_mb: u64,
    /// End with one JSON line. It always does (the result, or with --swarm the cases
    /// that failed): accepted so that every summarising command takes `--json`.
    #[arg(long)]
    pub json: bool,
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability in [0, 1]"))
    }
}

/// Why `homa chaos` could not run.
#[derive(Debug)]
pub enum ChaosError {
    /// The workload file could not be read or parsed.
    Workload(homa_harness::SizesError),
}

impl fmt::Display for ChaosError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChaosError::Workload(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ChaosError {}

impl ChaosArgs {
    /// The harness configuration these arguments describe.
    pub fn config(&self) -> Result<ChaosConfig, ChaosError> {
        let size = match &self.workload {
            Some(path) => Sizes::load(path).map_err(ChaosError::Workload)?,
            None => Sizes::Fixed(self.size),
        };
        Ok(ChaosConfig {
            rpcs: self.rpcs,
            endpoints: self.endpoints as usize,
            size,
            loss: self.loss,
            dup: self.dup,
            reorder: self.reorder,
            corrupt: self.corrupt,
            garbage: self.garbage,
            seed: self.seed,
            kill_server_at_ms: self.kill_server_at,
            concurrency: self.concurrency as usize,
            check_invariants: self.check,
            ..ChaosConfig::default()
        })
    }
}

/// Run the workload, reporting progress on stderr (at most once a second).
pub fn execute(args: &ChaosArgs) -> Result<ChaosReport, ChaosError> {
    let cfg = args.config()?;
    eprintln!(
        "homa chaos: seed {} ({} RPCs, {} endpoints, loss {} dup {} reorder {} corrupt {} garbage {})",
        cfg.seed, cfg.rpcs, cfg.endpoints, cfg.loss, cfg.dup, cfg.reorder, cfg.corrupt, cfg.garbage
    );
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut last = start;
    let mut shown = false;
    let mut progress = |p: &Progress| {
        if last.elapsed() < Duration::from_secs(1) {
            return;
        }
        last = Instant::now();
        shown = true;
        let line = format!(
            "  {}/{} done ({} failed), {} issued, sim {} ms, wall {:.0} s",
            p.completed + p.failed,
            p.rpcs,
            p.failed,
            p.issued,
            p.sim_ms,
            start.elapsed().as_secs_f64()
        );
        if tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    };
    let report = run_chaos(&cfg, &mut progress);
    if tty && shown {
        eprintln!();
    }
    Ok(report)
}

/// Short human summary of a report, for stderr.
pub fn summary(report: &ChaosReport) -> String {
    let r = &report.result;
    let mut s = format!(
        "seed {}: {} RPCs, {} completed, {} failed {:?}, {} lost, {} duplicate executions, \
         {} corrupted; {} ms simulated in {} ms ({})\n",
        report.seed,
        r.rpcs,
        r.completed,
        r.failed,
        report.failed_by_error,
        r.lost,
        r.duplicate_executions,
        r.corrupted,
        r.sim_time_ms,
        r.wall_ms,
        report.stopped
    );
    let n = &report.net;
    s += &format!(
        "network: {} sent, {} lost, {} duplicated, {} reordered, {} corrupt (dropped), {} junk \
         delivered\n",
        n.sent, n.lost, n.duplicated, n.reordered, n.corrupt_dropped, n.garbage_delivered
    );
    let e = &report.engine;
    s += &format!(
        "engine: packets {:?}, {} retransmitted, {} timeouts, {} restarts, drops {:?}\n",
        e.packets_sent, e.retransmitted_packets, e.timeouts, e.restarts, e.drops
    );
    if report.refused_replies > 0 {
        s += &format!(
            "replies refused by the engine: {}\n",
            report.refused_replies
        );
    }
    if let Some(k) = &report.kill {
        s += &format!(
            "kill: host {} at {} ms; {} RPCs to it, {} completed, {} timed out, max failure \
             latency {:.1} ms (bound {:.1} ms), {} violations; {} RPCs died with it\n",
            k.host,
            k.at_ms,
            k.rpcs_to_killed,
            k.completed,
            k.timed_out,
            k.max_failure_latency_ms,
            k.bound_ms,
            k.violations,
            report.result.abandoned
        );
    }
    if let Some(c) = &report.check {
        s += &format!(
            "invariants: {} violations in {} grants and {} steps checked\n",
            c.violations, c.grants_checked, c.incoming_checks
        );
        for v in &c.first_violations {
            s += &format!("  {v}\n");
        }
    }
    s
}

/// `homa chaos --swarm N`: N drawn cases; the last stdout line is
/// `{"failed":..,"failing_seeds":[..],"passed":..,"swarm":N}`.
fn run_swarm(args: &ChaosArgs, n: u64) -> ExitCode {
    let budget = args.swarm_budget_mb.saturating_mul(1_000_000);
    let mut failing = Vec::new();
    let started = Instant::now();
    // Seeds past the largest wrap around to 0: every one of the N cases runs.
    for seed in (0..n).map(|i| args.seed.wrapping_add(i)) {
        let case = homa_harness::SwarmCase::draw(seed, budget);
        let report = case.run();
        let ok = homa_harness::swarm_passed(&report);
        if !ok {
            failing.push(seed);
            eprintln!("FAIL case {seed}: {}", case.describe());
            eprint!("{}", summary(&report));
            eprintln!(
                "  replay: homa chaos --swarm 1 --seed {seed} --swarm-budget-mb {}",
                args.swarm_budget_mb
            );
        } else if std::io::stderr().is_terminal() {
            eprintln!(
                "ok case {seed} ({} rpcs, {} ms simulated, {:.0?} so far)",
                report.result.rpcs,
                report.result.sim_time_ms,
                started.elapsed()
            );
        }
    }
    let json = serde_json::json!({
        "swarm": n,
        "passed": n - failing.len() as u64,
        "failed": failing.len(),
        "failing_seeds": failing,
    });
    println!("{json}");
    if failing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `homa chaos`: run, print the summary to stderr and the JSON result as the last stdout
/// line.
pub fn run(args: &ChaosArgs) -> ExitCode {
    if let Some(n) = args.swarm {
        return run_swarm(args, n);
    }
    let report = match execute(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("homa chaos: {e}");
            return ExitCode::from(2);
        }
    };
    eprint!("{}", summary(&report));
    let never_killed = args
        .kill_server_at
        .filter(|&ms| report.kill.is_none() || ms > report.result.sim_time_ms);
    if let Some(ms) = never_killed {
        eprintln!(
            "homa chaos: host 0 was never killed: the run ended at {} ms simulated, before \
             --kill-server-at {ms}, so the kill was not tested (lower --kill-server-at or \
             raise --rpcs)",
            report.result.sim_time_ms
        );
    }
    let json = serde_json::to_string(&report.result).expect("plain struct serializes");
    let mut out = std::io::stdout().lock();
    // A closed stdout loses only the JSON line; the exit status still tells.
    let _ = writeln!(out, "{json}").and_then(|_| out.flush());
    let bad_failures = if report.kill.is_some() {
        report.unexpected_failures > 0
    } else {
        report.result.failed > 0
    };
    if report.passed() && !bad_failures && never_killed.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
