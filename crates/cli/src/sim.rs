//! `homa sim`: run the unmodified engine in a simulated datacenter (the Homa paper's
//! 144-host network by default) and print slowdown by message length.
//!
//! The work is done by the `homa-sim` library; this module maps arguments onto a
//! [`SimConfig`], draws a progress bar, and prints the table, the optional comparison of
//! Homa's mechanisms, the optional plot and the optional JSON line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use homa_sim::paper::Choice;
use homa_sim::{Drain, Mode, Report, SimConfig, Topology, Variant, Workload};
use indicatif::{ProgressBar, ProgressStyle};

/// Command-line arguments of `homa sim`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Simulate a datacenter running the Homa engine and report message slowdowns",
    after_help = "Slowdown = completion time / the best time for that length alone in the \
                  empty network. Messages started in the warm-up (--warmup-ms, a tenth of \
                  the arrivals by default) are not measured. After the arrivals, the run \
                  goes on until every message started before their end is complete: by \
                  default with arrivals going on (unmeasured, for at most half the arrival \
                  time again), loads measured over the arrivals; with --paper, as the \
                  paper's simulator did, with arrivals stopped (for at most ten times the \
                  arrival time), carried loads measured from the warm-up to the last \
                  message's completion. Exit status: 0 on success, 2 for bad arguments (or a \
                  configuration the simulator refuses), 1 when an output (--plot) \
                  cannot be written after the run."
)]
pub struct SimArgs {
    /// Workload: w1..w5 (the Homa papers'), or starve [default: w4; with --paper, all
    /// of w1..w5].
    #[arg(long)]
    pub workload: Option<String>,

    /// The SIGCOMM 2018 paper's measurement: its host delays, ideal, load definition and
    /// size bins, one-way messages of every length, arrivals stopped after --duration-ms
    /// and every message run to completion, the engine set as its simulator's Homa, and
    /// its frames on the links (its 30-byte header where our packets carry 56);
    /// prints our P99 of the smallest size bin beside the paper's, and also as the
    /// paper's tools read a percentile (the lower edge of its cell in a histogram of 100
    /// cells over the first 10,000 values' range; column "as paper"). Takes --workload,
    /// --load, --hosts, --duration-ms, --warmup-ms, --seed, --set, --timeline-ms, --json,
    /// and --compare (also run with each of the paper's choices undone in turn).
    #[arg(
        long,
        conflicts_with_all = ["rpc", "engine_defaults", "topology", "plot", "host_gbps", "core_gbps"]
    )]
    pub paper: bool,

    /// Offered load: fraction of every host link's bandwidth filled by the messages' wire
    /// bytes (requests and responses).
    #[arg(allow_negative_numbers = true, long, default_value_t = 0.8)]
    pub load: f64,

    /// `paper`: racks of 16 hosts under ToRs, 4 aggregation switches with spraying;
    /// `single`: every host on one switch.
    #[arg(long, value_enum, default_value_t = TopologyArg::Paper)]
    pub topology: TopologyArg,

    /// Number of hosts (paper: a multiple of 16, default 144; single: default 16).
    #[arg(long)]
    pub hosts: Option<u32>,

    /// Host link rate, Gbit/s (not with --paper, whose network is the paper's).
    #[arg(allow_negative_numbers = true, long, default_value_t = 10.0)]
    pub host_gbps: f64,

    /// ToR-aggregation link rate, Gbit/s (not with --paper).
    #[arg(allow_negative_numbers = true, long, default_value_t = 40.0)]
    pub core_gbps: f64,

    /// Simulated time during which messages arrive, milliseconds.
    #[arg(allow_negative_numbers = true, long, default_value_t = 100.0)]
    pub duration_ms: f64,

    /// Messages that arrive in the first this many milliseconds are not measured, nor
    /// are the loads [default: a tenth of --duration-ms]. 0 measures every message (as
    /// the paper's simulator did over its 1-3 s runs).
    #[arg(allow_negative_numbers = true, long, value_name = "MS")]
    pub warmup_ms: Option<f64>,

    /// Seed for every random choice; the same seed gives the same results.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Full RPCs (the response as long as the request, timed at the client) instead of
    /// one-way messages (a 1-byte response, timed at delivery to the server).
    #[arg(long)]
    pub rpc: bool,

    /// Also run with one Homa mechanism off at a time: no priorities, one grant at a
    /// time (no overcommitment), FIFO instead of SRPT. With --paper: each of the paper's
    /// choices where the Linux module differs undone in turn (one-way messages, uncapped
    /// lengths, pacing every message, no FIFO shares, its scheduled levels, priorities by
    /// bytes left, tail grants, short messages first).
    #[arg(long)]
    pub compare: bool,

    /// Use the engine's default configuration (only link rate and MTU set for the
    /// network) instead of the paper's settings for this network and workload.
    #[arg(long)]
    pub engine_defaults: bool,

    /// Override one engine setting, as NAME=VALUE with any `homa_core::Config` field name
    /// (`Config::SETTINGS`, the names of the runtime's settings file; e.g. `--set
    /// unsched_bytes=40000 --set unsched_cutoffs=0,0,0,0,1000000,15000,2800,200`);
    /// repeatable. Applied after `--engine-defaults`, then range-checked. `seed` is
    /// replaced per host from `--seed`.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,

    /// Every this many milliseconds of simulated time, print the offered and carried
    /// load over the interval and the backlog of bytes offered but not yet delivered: a
    /// backlog that keeps growing means the links do not keep up.
    #[arg(allow_negative_numbers = true, long, value_name = "MS")]
    pub timeline_ms: Option<f64>,

    /// Draw P50 and P99 slowdown against message length into this SVG file.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,

    /// End the output with one JSON summary line: `{"workload":..,"load":..,"hosts":..,
    /// "p50_slowdown_short":..,"p99_slowdown_short":..,"p99_slowdown_all":..,
    /// "utilization":..,"events_per_sec":..}` (with --compare, Homa's run). With --paper,
    /// one line after the tables holding every workload's summary (those also have the
    /// smallest size bin's numbers and the run's counts): `{"workloads":[{..},..]}`, and
    /// with --compare also `"compare":[{"variant":"paper"|"no <choice>",..},..]`, every
    /// run's summary.
    #[arg(long)]
    pub json: bool,

    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Network shapes for `--topology`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TopologyArg {
    /// Racks of 16 hosts, 4 aggregation switches (the SIGCOMM 2018 paper's).
    Paper,
    /// One switch.
    Single,
}

/// Build the scenario the arguments describe.
pub fn config(args: &SimArgs) -> Result<SimConfig, String> {
    config_without(args, &[])
}

/// Fastest link the simulator takes, Gbit/s.
const MAX_GBPS: f64 = 1000.0;

/// [`config`], with the paper's choices in `off` undone (`--paper --compare`).
fn config_without(args: &SimArgs, off: &[Choice]) -> Result<SimConfig, String> {
    let mut topology = match args.topology {
        TopologyArg::Paper => {
            let mut t = Topology::paper();
            if let Some(n) = args.hosts {
                if n == 0 || n % t.hosts_per_rack != 0 {
                    return Err(format!(
                        "--hosts must be a positive multiple of {} with --topology paper",
                        t.hosts_per_rack
                    ));
                }
                t.racks = n / t.hosts_per_rack;
            }
            t
        }
        TopologyArg::Single => Topology::single_switch(args.hosts.unwrap_or(16)),
    };
    // (Rates beyond a terabit per second would saturate the Mbit/s counters.)
    for (what, g) in [
        ("--host-gbps", args.host_gbps),
        ("--core-gbps", args.core_gbps),
    ] {
        if !(g > 0.0 && g <= MAX_GBPS) {
            return Err(format!(
                "{what} must be more than 0 and at most {MAX_GBPS}, got {g}"
            ));
        }
    }
    let mbps = |g: f64| (g * 1000.0).round() as u32;
    topology.host_mbps = mbps(args.host_gbps);
    topology.core_mbps = mbps(args.core_gbps);
    topology.validate().map_err(|e| e.to_string())?;
    let name = args.workload.as_deref().unwrap_or("w4");
    let mut cfg = if args.paper {
        let mut cfg = SimConfig::paper_without(name, args.load, off).map_err(|e| e.to_string())?;
        cfg.topology.racks = topology.racks; // (the paper's rates and delays stay)
        cfg
    } else {
        let max = homa_wire::HOMA_MAX_MESSAGE_LENGTH;
        let workload = Workload::builtin(name, max).map_err(|e| e.to_string())?;
        SimConfig::new(topology, workload, args.load)
    };
    if !(args.duration_ms > 0.0 && args.duration_ms <= MAX_DURATION_MS) {
        return Err(format!(
            "--duration-ms must be in (0, {MAX_DURATION_MS}] (an hour of simulated time), \
             got {}",
            args.duration_ms
        ));
    }
    cfg.duration_ns = (args.duration_ms * 1e6) as u64;
    cfg.drain_ns = match cfg.drain {
        Drain::KeepArriving => cfg.duration_ns / 2,
        Drain::StopArrivals => cfg.duration_ns * homa_sim::PAPER_DRAIN_LIMIT,
    };
    if let Some(ms) = args.warmup_ms {
        if !(ms >= 0.0 && ms < args.duration_ms) {
            return Err("--warmup-ms must be at least 0 and less than --duration-ms".into());
        }
        cfg.warmup_fraction = ms / args.duration_ms;
    }
    cfg.seed = args.seed;
    if let Some(ms) = args.timeline_ms {
        if !(ms > 0.0 && ms.is_finite()) {
            return Err("--timeline-ms must be positive".into());
        }
        // One sample per interval is kept: not more than a million of them.
        if args.duration_ms / ms > 1e6 {
            return Err(format!(
                "--timeline-ms {ms} would take more than a million samples over \
                 --duration-ms {}; give at least {}",
                args.duration_ms,
                args.duration_ms / 1e6
            ));
        }
        cfg.timeline_ns = ((ms * 1e6) as u64).max(1);
    }
    if !args.paper {
        cfg.mode = if args.rpc { Mode::Rpc } else { Mode::OneWay };
    }
    if args.engine_defaults {
        cfg.engine = homa_sim::homa_core::Config {
            link_mbps: cfg.topology.host_mbps,
            ..homa_sim::homa_core::Config::default()
        };
    }
    for kv in &args.set {
        set_engine(&mut cfg.engine, kv)?;
    }
    cfg.validate().map_err(|e| e.to_string())?;
    check_memory(&cfg, args.duration_ms, total_memory())?;
    Ok(cfg)
}

/// The longest `--duration-ms` taken: an hour of simulated time (the paper's runs were 1 to
/// 3 s). Longer would overflow the nanosecond clock of the drain.
const MAX_DURATION_MS: f64 = 3_600_000.0;

/// Refuses a run whose messages cannot fit in this machine's memory (`memory` bytes, when
/// known): the simulator keeps a record of every message that arrives, so the arrival
/// time sizes the run's memory. Better said now than as an allocation failure later.
fn check_memory(cfg: &SimConfig, duration_ms: f64, memory: Option<u64>) -> Result<(), String> {
    let Some(memory) = memory else {
        return Ok(());
    };
    let messages =
        cfg.arrival_rate_per_ns() * cfg.duration_ns as f64 * f64::from(cfg.topology.hosts());
    let need = messages * std::mem::size_of::<homa_sim::Message>() as f64;
    if need <= memory as f64 {
        return Ok(());
    }
    let gb = |b: f64| b / 1e9;
    Err(format!(
        "--duration-ms {duration_ms}: about {messages:.3e} messages would arrive ({}, {} hosts, \
         load {}), and their records alone need {:.1} GB, more than this machine's {:.1} GB \
         of memory; shorten --duration-ms (or lower --hosts or --load)",
        cfg.workload.name(),
        cfg.topology.hosts(),
        cfg.load,
        gb(need),
        gb(memory as f64)
    ))
}

/// This machine's memory in bytes (`MemTotal` in /proc/meminfo), where known.
fn total_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Apply one `NAME=VALUE` to the engine configuration.
fn set_engine(c: &mut homa_sim::homa_core::Config, kv: &str) -> Result<(), String> {
    let (name, value) = kv
        .split_once('=')
        .ok_or_else(|| format!("--set {kv}: expected NAME=VALUE"))?;
    c.set(name, value).map_err(|e| format!("--set: {e}"))
}

fn progress_bar(quiet: bool, label: &str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(1000);
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:40}] {percent:>3}% of simulated time, {elapsed} elapsed, ETA {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_prefix(label.to_string());
    pb
}

fn run_one(cfg: SimConfig, quiet: bool, label: &str) -> Result<Report, String> {
    let pb = progress_bar(quiet, label);
    let report = homa_sim::run(cfg, &mut |now, end| {
        pb.set_position((now.min(end) as f64 / end.max(1) as f64 * 1000.0) as u64);
    })
    .map_err(|e| e.to_string())?;
    pb.finish_and_clear();
    Ok(report)
}

/// Run `homa sim`.
pub fn run(args: &SimArgs) -> ExitCode {
    if let Some(path) = &args.plot {
        if let Err(e) = crate::check_writable(path) {
            eprintln!("homa sim: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if args.paper {
        return run_paper(args);
    }
    let cfg = match config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("homa sim: {e}");
            return ExitCode::from(2);
        }
    };
    let w = &cfg.workload;
    // (Under 0.005% the line would read 0.00%: nothing worth saying.)
    if w.clamped_fraction() >= 0.000_05 {
        eprintln!(
            "homa sim: {:.2}% of {} messages are longer than {} bytes and are clamped to it \
             (mean length after clamping {:.1} bytes)",
            w.clamped_fraction() * 100.0,
            w.name(),
            w.max_length(),
            w.mean()
        );
    }
    print_engine(&cfg.engine);
    let variants: &[Variant] = if args.compare {
        &Variant::ALL
    } else {
        &[Variant::Homa]
    };
    let mut results = Vec::new();
    for &v in variants {
        let label = format!("{} {}", cfg.workload.name(), v.name());
        match run_one(v.apply(&cfg), args.quiet, &label) {
            Ok(r) => {
                if args.compare {
                    println!("== {}", v.name());
                }
                print!("{}", r.table());
                println!("{}", r.perf_line());
                results.push((v, r));
            }
            Err(e) => {
                eprintln!("homa sim: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if args.compare {
        println!(
            "\nwhat each mechanism buys ({} at load {:.2}):",
            cfg.workload.name(),
            cfg.load
        );
        print!("{}", homa_sim::compare_table(&results));
    }
    if let Some(path) = &args.plot {
        let series: Vec<(&str, &Report)> = results.iter().map(|(v, r)| (v.name(), r)).collect();
        match homa_sim::plot_svg(&series, path) {
            Ok(()) => eprintln!("homa sim: plot written to {}", path.display()),
            // The run itself is fine: say why there is no plot and go on.
            Err(e @ homa_sim::PlotError::Empty) => {
                eprintln!("homa sim: no plot written to {}: {e}", path.display())
            }
            Err(e) => {
                eprintln!("homa sim: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if args.json {
        println!("{}", results[0].1.json_line());
    }
    ExitCode::SUCCESS
}

/// The engine settings that shape the results.
fn print_engine(e: &homa_sim::homa_core::Config) {
    println!(
        "engine: unsched_bytes {}, window {}, max_incoming {}, max_overcommit {}, \
         max_nic_est_backlog_usecs {}, max_sched_prio {}, unsched_cutoffs {:?}",
        e.unsched_bytes,
        e.window,
        e.max_incoming,
        e.max_overcommit,
        e.max_nic_est_backlog_usecs,
        e.max_sched_prio,
        e.unsched_cutoffs
    );
}

/// `homa sim --paper`: the paper's measurement of each workload asked for, then our
/// numbers beside the paper's.
fn run_paper(args: &SimArgs) -> ExitCode {
    // Names in either case, as the default mode takes them.
    let asked = args.workload.as_deref().map(str::to_ascii_lowercase);
    let names: Vec<&str> = match asked.as_deref() {
        None | Some("all") => homa_sim::paper::WORKLOADS.to_vec(),
        Some(w) => vec![w],
    };
    // With --compare, each of the paper's choices undone in turn after the full mode.
    let mut variants: Vec<Option<Choice>> = vec![None];
    if args.compare {
        variants.extend(Choice::ALL.map(Some));
    }
    let (mut reports, mut compared) = (Vec::new(), Vec::new());
    for name in names {
        let one = SimArgs {
            workload: Some(name.to_string()),
            ..args.clone()
        };
        for &v in &variants {
            // ("no no-fifo" said "with the FIFO share" twice over.)
            let label = v.map_or("paper".to_string(), |c| {
                match c.name().strip_prefix("no-") {
                    Some(kept) => format!("with {kept}"),
                    None => format!("no {}", c.name()),
                }
            });
            let off: Vec<Choice> = v.into_iter().collect();
            let report = config_without(&one, &off).and_then(|cfg| {
                if args.compare {
                    println!("== {name} {label}");
                }
                print_engine(&cfg.engine);
                run_one(cfg, args.quiet, &format!("{name} {label}"))
            });
            match report {
                Ok(r) => {
                    print!("{}", r.table());
                    println!("{}", r.perf_line());
                    if v.is_none() {
                        reports.push(r.clone());
                    }
                    compared.push((label, r));
                }
                Err(e) => {
                    eprintln!("homa sim: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    }
    println!("\nP99 slowdown of the smallest size bin, ours beside the SIGCOMM 2018 paper's:");
    print!("{}", homa_sim::paper::table(&reports));
    if args.compare {
        println!("\nwhat each of the paper's choices buys (each undone in turn):");
        print!("{}", homa_sim::paper::compare_table(&compared));
    }
    if args.json {
        println!(
            "{}",
            paper_json(&reports, args.compare.then_some(&compared[..]))
        );
    }
    ExitCode::SUCCESS
}

/// The `--paper --json` line: `{"workloads":[..]}` with every workload's summary, and
/// with --compare `"compare":[..]`, every run's summary with its variant first.
fn paper_json(reports: &[Report], compared: Option<&[(String, Report)]>) -> String {
    let list = |items: Vec<String>| items.join(",");
    let workloads = list(reports.iter().map(Report::json_line).collect());
    let compare = compared.map_or(String::new(), |c| {
        let runs = c.iter().map(|(variant, r)| {
            let summary = r.json_line();
            // The summary is an object: the variant goes in as its first member.
            format!(
                "{{\"variant\":{},{}",
                serde_json::Value::from(variant.as_str()),
                &summary[1..]
            )
        });
        format!(",\"compare\":[{}]", list(runs.collect()))
    });
    format!("{{\"workloads\":[{workloads}]{compare}}}")
}
