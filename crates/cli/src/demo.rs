//! `homa demo`: Homa and TCP side by side in one command, in under a minute.
//!
//! Switch mode (the default): a few hosts in network namespaces behind one emulated switch
//! with rate-limited, 8-priority ports (the `homa-testbed` library), Homa and then TCP
//! on the same open-loop mixed workload (W4: mostly short messages, a few up to 1 MB) at
//! 80% load, and the shortest messages' slowdown over each, side by side. It is what
//! `homa testbed bench` measures (`homa_testbed::bench::measure`), sized so that a 2-core
//! machine's CPU is not the bottleneck: 3 hosts, slow links, jumbo frames. Without root it
//! runs in a user namespace of its own (`homa_testbed::userns`).
//!
//! Loopback mode (`--loopback`, or where the kernel refuses namespaces): a Homa server and
//! a TCP server on 127.0.0.1 inside this process, the same workload through each in turn,
//! per-length-bucket RTTs for both with their ratio. It shows what each message costs
//! Homa in user space against TCP in the kernel; with no congested link, it cannot show
//! what Homa's priorities are for.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use homa_perf::client::{self, ProtoRun, RunPlan};
use homa_perf::counters::ServerCounters;
use homa_perf::homa::{HomaApi, HomaServer};
use homa_perf::load::LoadConfig;
use homa_perf::stats::{self, cell, BucketRow};
use homa_perf::transport::Proto;
use homa_perf::workload::{Workload, WorkloadSpec};
use homa_perf::{tcp, PerfError};

use homa_testbed::bench::{self, BenchConfig, BenchError, BenchEvent, BenchProto};
use homa_testbed::net::MAX_HOSTS;
use homa_testbed::userns::{self, Placement};

use crate::perf::HomaSocketArgs;
use crate::testbed::bench::this_homa;

/// Environment variable that shortens the demo to a few seconds (for tests).
pub const QUICK_ENV: &str = "HOMA_DEMO_QUICK";

/// Arguments of `homa demo` (all optional).
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "The switch needs root, or a kernel that allows unprivileged user \
                  namespaces (then the demo runs in one of its own). Where neither is \
                  available it says why and runs the loopback comparison (bad arguments \
                  are not a reason to: they exit with status 2)."
)]
pub struct DemoArgs {
    /// Request lengths: w1..w5, a length in bytes, or a CDF file.
    #[arg(long, default_value = "w4")]
    pub workload: WorkloadSpec,
    /// Seconds of load per transport (default: 10 across the switch, 4 on loopback). Kept
    /// within 1-120 s across the switch and 0.5-20 s on loopback: longer runs are what
    /// `homa testbed bench` and `homa perf` are for.
    #[arg(allow_negative_numbers = true, long)]
    pub seconds: Option<f64>,
    /// Hosts behind the switch (each sends to all the others).
    #[arg(long, default_value_t = bench::DEFAULT_HOSTS)]
    pub hosts: usize,
    /// Rate of each switch port toward a host, Gbit/s. Slow enough that this machine's
    /// CPU, which every host shares, is not the bottleneck.
    #[arg(allow_negative_numbers = true, long, default_value_t = bench::DEFAULT_GBPS)]
    pub link_gbps: f64,
    /// Offered load per host across the switch, as a fraction of the link rate.
    #[arg(allow_negative_numbers = true, long, default_value_t = 0.8)]
    pub load: f64,
    /// Where to write slowdown against message length (SVG), in switch mode. When that
    /// directory is not writable, the file goes to the temporary directory instead.
    #[arg(long, default_value = "homa-demo.svg")]
    pub plot: PathBuf,
    /// Skip the switch: Homa and TCP in this process over 127.0.0.1.
    #[arg(long)]
    pub loopback: bool,
    /// Loopback mode: offered load, Gbit/s of request bytes.
    #[arg(allow_negative_numbers = true, long, default_value_t = 1.0)]
    pub gbps: f64,
    /// Loopback mode: which `homa` API the client uses. The default, tokio, completes each
    /// RPC on the runtime's own thread, as the TCP client does; with `blocking`, a
    /// receiver thread hands each response to its task, one more thread wake-up per RPC
    /// (its median RTT was about 1.4x the tokio client's in this demo on a 2-core
    /// machine).
    #[arg(long, value_enum, default_value_t = HomaApi::Tokio)]
    pub homa_api: HomaApi,
    /// Homa transport and options (both ends).
    #[command(flatten)]
    pub homa: HomaSocketArgs,
    /// End with one JSON line: `{"mode":"switch"|"loopback","homa":{"p99_slowdown_short":..,
    /// "p50_slowdown_short":..},"tcp":{..},"short_p99_ratio_tcp_over_homa":..}`.
    #[arg(long)]
    pub json: bool,
    /// A few seconds in all (also with HOMA_DEMO_QUICK=1).
    #[arg(long, hide = true)]
    pub quick: bool,
}

impl DemoArgs {
    fn quick(&self) -> bool {
        self.quick || std::env::var_os(QUICK_ENV).is_some_and(|v| v != "0")
    }
}

/// Why the switch mode did not produce a result.
enum SwitchError {
    /// No testbed here (one line why): the loopback comparison runs instead.
    Unavailable(String),
    /// The testbed was built but a run failed.
    Failed(BenchError),
}

/// The MTU of the demo's testbed links (jumbo frames: less CPU per byte).
const DEMO_MTU: u32 = 9000;

/// Checks the arguments before anything runs: a bad one is a usage error (exit status 2),
/// never a reason to fall back to the loopback comparison.
fn validate(args: &DemoArgs) -> Result<(), String> {
    let positive = |x: f64| x > 0.0 && x.is_finite();
    if !positive(args.gbps) {
        return Err(format!(
            "--gbps must be a positive number, got {}",
            args.gbps
        ));
    }
    if let Some(s) = args.seconds {
        if !positive(s) {
            return Err(format!("--seconds must be a positive number, got {s}"));
        }
    }
    // Files named on the command line: one that cannot be used is a usage error here,
    // not a failure once the testbed is built.
    Workload::load(&args.workload, None).map_err(|e| e.to_string())?;
    homa_perf::homa::socket_options(args.homa.homa_config.as_deref(), false)
        .map_err(|e| e.to_string())?;
    if args.loopback {
        return Ok(());
    }
    if !(positive(args.load) && args.load <= bench::MAX_LOAD) {
        return Err(format!(
            "--load must be a fraction of the link rate above 0 and at most {}, got {}",
            bench::MAX_LOAD,
            args.load
        ));
    }
    // The testbed's own limits (`TestbedConfig::validate`), checked here so that they
    // are not mistaken for a machine that cannot build the switch.
    if !(2..=MAX_HOSTS).contains(&args.hosts) {
        return Err(format!("--hosts {} is not in 2..={MAX_HOSTS}", args.hosts));
    }
    if !(positive(args.link_gbps) && args.link_gbps <= 1000.0) {
        return Err(format!(
            "--link-gbps {} is not in (0, 1000]",
            args.link_gbps
        ));
    }
    Ok(())
}

/// Runs `homa demo`; errors are printed on stderr.
pub fn run(args: &DemoArgs) -> ExitCode {
    if let Err(e) = validate(args) {
        eprintln!("homa demo: {e}");
        return ExitCode::from(2);
    }
    if args.loopback {
        return finish(loopback(args, false));
    }
    let unavailable = |why: &str| eprintln!("homa demo: no emulated switch here: {why}");
    match userns::place() {
        // The child said why on stderr.
        Ok(Placement::Child(status)) if status.code() == Some(userns::REFUSED_EXIT.into()) => {
            finish(loopback(args, true))
        }
        Ok(Placement::Child(status)) => userns::exit_code(status),
        Ok(Placement::Here) => match switch(args).inspect_err(|_| {
            // Failing because Ctrl-C or SIGTERM is taking the testbed down: that ends it.
            homa_testbed::net::yield_to_teardown();
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(SwitchError::Unavailable(why)) => {
                unavailable(&why);
                if userns::entered() {
                    // The parent, still in its own namespaces, runs the loopback mode.
                    ExitCode::from(userns::REFUSED_EXIT)
                } else {
                    finish(loopback(args, true))
                }
            }
            Err(SwitchError::Failed(e)) => {
                eprintln!("homa demo: {e}");
                ExitCode::FAILURE
            }
        },
        Err(why) => {
            unavailable(&why);
            if userns::is_child() {
                ExitCode::from(userns::REFUSED_EXIT)
            } else {
                finish(loopback(args, true))
            }
        }
    }
}

fn finish(r: Result<(), PerfError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("homa demo: {e}");
            crate::perf::exit_status(&e)
        }
    }
}

/// `path` if a file can be written there, else a new file of this run's own in the
/// temporary directory (`homa-demo-<pid>.svg`). Not a fixed name there: another user's
/// file of that name made the run fail at its end, its results unprinted, and one planted
/// as a link would be followed.
fn writable(path: &Path) -> PathBuf {
    let ok = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .is_ok();
    if ok {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("homa-demo");
    let pid = std::process::id();
    for n in 0..100 {
        let name = match n {
            0 => format!("{stem}-{pid}.svg"),
            n => format!("{stem}-{pid}-{n}.svg"),
        };
        let candidate = std::env::temp_dir().join(name);
        // Made new here, so it is ours (an existing file or link is left alone).
        if std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
            .is_ok()
        {
            return candidate;
        }
    }
    // Nowhere: the bench reports the path it could not write.
    path.to_path_buf()
}

/// Switch mode: the testbed bench, Homa and TCP, then the shortest messages side by side.
fn switch(args: &DemoArgs) -> Result<(), SwitchError> {
    let (seconds, calibration_ms) = if args.quick() {
        (1.0, 300)
    } else {
        (args.seconds.unwrap_or(10.0).clamp(1.0, 120.0), 1000)
    };
    let homa = if args.homa.raw {
        BenchProto::HomaRaw
    } else {
        BenchProto::Homa
    };
    let plan = BenchConfig {
        homa: this_homa().map_err(SwitchError::Failed)?,
        workload: args.workload.clone(),
        load: args.load,
        hosts: args.hosts,
        seconds,
        gbps: args.link_gbps,
        mtu: DEMO_MTU,
        loss: 0.0,
        protos: vec![homa, BenchProto::Tcp],
        calibration_ms,
        homa_config: args.homa.homa_config.clone(),
        plot: writable(&args.plot),
        out_dir: None,
        seed: 1,
        htb_hysteresis: true,
        offloads: false,
        homa_api: HomaApi::Tokio,
    };
    let workload = Workload::load(&args.workload, None)
        .map_err(|e| SwitchError::Failed(BenchError::Perf(e.into())))?;
    println!(
        "homa demo: Homa and TCP across an emulated congested switch: {} hosts in network \
         namespaces{}, {} Gbps switch ports with 8 priority queues",
        args.hosts,
        if userns::entered() {
            " (in a user namespace of this process: no root needed)"
        } else {
            ""
        },
        args.link_gbps
    );
    println!(
        "{}; each host sends {:.0}% of its link ({:.3} Gbps) to the others",
        workload.describe().lines().next().unwrap_or(""),
        args.load * 100.0,
        args.load * args.link_gbps
    );
    let brief = &mut |e: BenchEvent<'_>| match e {
        BenchEvent::Built { testbed, .. } => {
            for w in testbed.warnings() {
                eprintln!("warning: {w}");
            }
        }
        BenchEvent::Starting(proto) => println!(
            "{}: unloaded RTTs for {:.1} s, then {} s of load",
            proto.name(),
            plan.calibration_ms as f64 / 1e3,
            plan.seconds
        ),
        BenchEvent::Calibrated(..) => {}
    };
    let report = bench::measure(&plan, brief).map_err(|e| match e {
        BenchError::NoTestbed(e) => SwitchError::Unavailable(e.to_string()),
        e => SwitchError::Failed(e),
    })?;
    let s = &report.summary;
    let name = homa.name();
    let get = |p: &str, k: &str| s[p][k].as_f64().unwrap_or(f64::NAN);
    let (h50, h99) = (
        get(name, "p50_slowdown_short"),
        get(name, "p99_slowdown_short"),
    );
    let (t50, t99) = (
        get("tcp", "p50_slowdown_short"),
        get("tcp", "p99_slowdown_short"),
    );
    println!();
    let label = crate::testbed::short_label(&report);
    print!("{}", short_table(&label, [h50, h99], [t50, t99]));
    let carried = |p: &str| get(p, "carried") * 100.0;
    let busy = |p: &str| get(p, "cpu_busy") * 100.0;
    println!(
        "carried: Homa {:.0}% of its offered load, TCP {:.0}%{}; CPU busy during the load: \
         Homa {:.0}%, TCP {:.0}%",
        carried(name),
        carried("tcp"),
        match s[name]["failed"].as_u64() {
            Some(n) if n > 0 => format!("; {n} Homa RPCs failed"),
            _ => String::new(),
        },
        busy(name),
        busy("tcp"),
    );
    // A 1 s quick run ends with long messages in flight: carried says little there.
    if !args.quick() && s["valid"] == false {
        println!(
            "warning: not a measurement of the network: {}. {}",
            report.invalid.join("; "),
            crate::testbed::bench::invalid_advice(&report, "--link-gbps")
        );
    }
    println!(
        "plot (slowdown against length, every message): {}",
        plan.plot.display()
    );
    println!();
    println!(
        "{}",
        wrap(
            &switch_explanation(args, report.short_len, [h50, h99], [t50, t99]),
            92
        )
    );
    if args.json {
        let mut j = demo_json("switch", [h50, h99], [t50, t99]);
        for (side, p) in [("homa", name), ("tcp", "tcp")] {
            j[side]["carried"] = s[p]["carried"].clone();
            j[side]["cpu_busy"] = s[p]["cpu_busy"].clone();
            j[side]["failed"] = s[p]["failed"].clone();
        }
        // As `homa testbed bench --json` has them: false when a transport did not carry
        // its load or the CPU was saturated (a quick run is not judged).
        j["valid"] = s["valid"].clone();
        j["invalid_because"] = s["invalid_because"].clone();
        println!("{j}");
    }
    Ok(())
}

/// The shortest messages' slowdown P50 and P99, Homa and TCP, and TCP's over Homa's,
/// under `label` (what the short messages are).
fn short_table(label: &str, homa: [f64; 2], tcp: [f64; 2]) -> String {
    let mut s = format!(
        "{label}, slowdown (RTT / unloaded RTT):\n{:>12} {:>9} {:>9}\n",
        "", "P50", "P99"
    );
    s += &format!(
        "{:>12} {:>9} {:>9}\n",
        "Homa",
        cell(homa[0], 1),
        cell(homa[1], 1)
    );
    s += &format!(
        "{:>12} {:>9} {:>9}\n",
        "TCP",
        cell(tcp[0], 1),
        cell(tcp[1], 1)
    );
    s += &format!(
        "{:>12} {:>8}x {:>8}x\n",
        "TCP / Homa",
        cell(tcp[0] / homa[0], 1),
        cell(tcp[1] / homa[1], 1)
    );
    s
}

/// The `--json` line: mode, each transport's short-message slowdowns, the P99 ratio.
fn demo_json(mode: &str, homa: [f64; 2], tcp: [f64; 2]) -> serde_json::Value {
    let side = |x: [f64; 2]| {
        json!({
            "p50_slowdown_short": stats::round1(x[0]),
            "p99_slowdown_short": stats::round1(x[1]),
        })
    };
    json!({
        "mode": mode,
        "homa": side(homa),
        "tcp": side(tcp),
        "short_p99_ratio_tcp_over_homa": stats::round1(tcp[1] / homa[1]),
    })
}

/// What the switch table means, and what this run showed.
fn switch_explanation(args: &DemoArgs, short_len: usize, homa: [f64; 2], tcp: [f64; 2]) -> String {
    let mut text = format!(
        "What you are seeing: {} hosts send each other the same mix of messages (the \
         workload above{}), at the same times over Homa and then over TCP. Several senders \
         meet at each switch port toward a host, whose {} Gbps the load keeps {:.0}% busy, \
         and a queue builds there, as at a datacenter switch. A message's slowdown is its \
         round trip over the unloaded round trip for its length (1: no waiting). TCP's \
         packets wait in one queue, so a short message waits behind the bytes of long ones \
         ahead of it. Homa sends short messages whole at high priority and lets a receiver \
         grant long ones a little at a time, at lower priorities, so short messages pass \
         the queue: their tail stays short. The hosts share this machine's CPUs; the \
         defaults leave them time to spare, and a run that saturates them measures the \
         machine, not the network (the run then warns so above).",
        args.hosts,
        match &args.workload {
            WorkloadSpec::Named(w) if w == "w4" => ": mostly short messages, a few up to 1 MB",
            _ => "",
        },
        args.link_gbps,
        100.0 * args.load
    );
    if homa.iter().chain(&tcp).all(|x| x.is_finite()) {
        text += &format!(
            " In this run, 99% of the messages up to {short_len} B took at most {:.1}x their \
             unloaded time over Homa and {:.1}x over TCP: TCP's tail was {:.1}x Homa's.",
            homa[1],
            tcp[1],
            tcp[1] / homa[1]
        );
    }
    text
}

/// Loopback mode: Homa and TCP servers in this process on 127.0.0.1. `fallback` when the
/// switch was wanted but is not available.
fn loopback(args: &DemoArgs, fallback: bool) -> Result<(), PerfError> {
    if !(args.gbps > 0.0 && args.gbps.is_finite()) {
        return Err(PerfError::NotPositive {
            what: "--gbps",
            value: args.gbps,
        });
    }
    let (seconds, calibration) = if args.quick() {
        (0.6, Duration::from_millis(200))
    } else {
        (
            args.seconds.unwrap_or(4.0).clamp(0.5, 20.0),
            Duration::from_millis(800),
        )
    };
    let workload = Arc::new(Workload::load(&args.workload, None)?);
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    let counters = Arc::new(ServerCounters::default());

    if fallback {
        println!(
            "homa demo: the loopback comparison instead. It shows what each message costs \
             Homa in user space against TCP in the kernel; it cannot show what Homa is for, \
             short messages passing long ones at a congested switch port: loopback has none."
        );
    }
    println!(
        "homa demo: Homa and TCP side by side, client and servers in this process on 127.0.0.1"
    );
    println!("{}", workload.describe());
    println!(
        "open-loop Poisson arrivals at {:.2} Gbps of requests, 100-byte responses, {seconds:.1} s per transport; TCP spreads RPCs over 8 connections",
        args.gbps
    );

    let homa_options = args.homa.options()?;
    let homa_server = match HomaServer::spawn(loopback, 2, counters.clone(), homa_options.clone()) {
        Ok(s) => Some(s),
        Err(PerfError::HomaUnavailable) => {
            println!("(this build has no Homa runtime: showing TCP only)");
            None
        }
        Err(e) => return Err(e),
    };
    let tcp_addr = tcp::spawn_server(loopback, counters).map_err(|source| PerfError::Io {
        what: "cannot start the TCP server on 127.0.0.1".into(),
        source,
    })?;

    let plan = RunPlan {
        load: LoadConfig {
            workload: workload.clone(),
            gbps: args.gbps,
            duration: Duration::from_secs_f64(seconds),
            response_len: Some(100),
            max_outstanding: 1000,
            seed: 1,
            per_second_lines: false,
            progress: true,
            stop: None,
        },
        connections: 8,
        calibration,
        homa_api: args.homa_api,
        homa_options,
        calibrate_only: false,
    };
    let rt = client::runtime()?;
    let mut runs: Vec<ProtoRun> = Vec::new();
    if let Some(s) = &homa_server {
        runs.push(rt.block_on(client::run_proto(Proto::Homa, &[s.addr], &plan))?);
    }
    runs.push(rt.block_on(client::run_proto(Proto::Tcp, &[tcp_addr], &plan))?);

    let baseline = client::common_baseline(&runs);
    let bounds = stats::bucket_bounds(&workload);
    let rows: Vec<Vec<BucketRow>> = runs
        .iter()
        .map(|r| stats::bucket_rows(&r.result.samples, &bounds, Some(&baseline)))
        .collect();
    println!();
    for r in &runs {
        let s = r.result.summary();
        println!(
            "{:<4}: {:>6} RPCs, {:.3} Gbps, RTT p50 {:.1} us, p99 {:.1} us",
            s.proto, s.rpcs, s.gbps, s.p50_us, s.p99_us
        );
        for w in r.result.warnings() {
            println!("warning: {w}");
        }
    }
    println!();
    match rows.as_slice() {
        [homa, tcp] => print!("{}", side_by_side(homa, tcp)),
        [only] => print!("{}", stats::bucket_table(only)),
        _ => {}
    }
    println!();
    let (homa_rows, tcp_rows) = match rows.as_slice() {
        [h, t] => (Some(h.as_slice()), t.as_slice()),
        [t] => (None, t.as_slice()),
        _ => (None, &[][..]),
    };
    println!(
        "{}",
        wrap(&explanation(workload.name(), homa_rows, tcp_rows), 92)
    );
    if args.json {
        let short = |r: Option<&ProtoRun>| {
            r.map_or([f64::NAN; 2], |r| {
                let (p50, p99) = stats::short_slowdowns(&r.result.samples, bounds[0], &baseline);
                [p50, p99]
            })
        };
        let homa = runs.iter().find(|r| r.result.proto == Proto::Homa.name());
        let tcp = runs.iter().find(|r| r.result.proto == Proto::Tcp.name());
        println!("{}", demo_json("loopback", short(homa), short(tcp)));
    }
    Ok(())
}

/// The side-by-side table: per bucket, Homa and TCP RTT percentiles and TCP/Homa ratios
/// (above 1: Homa was faster).
pub fn side_by_side(homa: &[BucketRow], tcp: &[BucketRow]) -> String {
    let mut s = format!(
        "{:>10} {:>6} | {:>9} {:>9} | {:>9} {:>9} | {:>8} {:>8}\n",
        "length<=", "share", "homa p50", "homa p99", "tcp p50", "tcp p99", "tcp/homa", "tcp/homa"
    );
    s.push_str(&format!(
        "{:>10} {:>6} | {:>9} {:>9} | {:>9} {:>9} | {:>8} {:>8}\n",
        "bytes", "msgs", "us", "us", "us", "us", "p50", "p99"
    ));
    for (h, t) in homa.iter().zip(tcp) {
        s.push_str(&format!(
            "{:>10} {:>5.1}% | {:>9} {:>9} | {:>9} {:>9} | {:>8} {:>8}\n",
            h.upper,
            (h.share + t.share) * 50.0,
            cell(h.rtt_p50_us, 1),
            cell(h.rtt_p99_us, 1),
            cell(t.rtt_p50_us, 1),
            cell(t.rtt_p99_us, 1),
            cell(t.rtt_p50_us / h.rtt_p50_us, 2),
            cell(t.rtt_p99_us / h.rtt_p99_us, 2),
        ));
    }
    s
}

/// What the table means, and what this run showed for the short messages.
fn explanation(workload: &str, homa: Option<&[BucketRow]>, tcp: &[BucketRow]) -> String {
    let mut text = format!(
        "What you are seeing: each row is a slice of the {workload} messages by length (about \
         a tenth of them per row). Both transports carry exactly the same requests at the \
         same times. TCP sends each RPC on one of 8 byte streams, so a short message that \
         lands behind a long one waits for all of it: its tail latency (p99) grows with the \
         long messages around it. Homa is message-based and gives the shortest remaining \
         message priority (SRPT) at both ends, so short messages need not wait behind long \
         ones. The ratio columns say how many times longer TCP took (above 1: Homa faster)."
    );
    if let Some(homa) = homa {
        let half = homa.len().div_ceil(2);
        // The worst bucket among the shorter half of the messages.
        let worst = |rows: &[BucketRow], pick: fn(&BucketRow) -> f64| {
            rows[..half.min(rows.len())]
                .iter()
                .map(pick)
                .filter(|x| x.is_finite())
                .fold(f64::NAN, f64::max)
        };
        let (h50, t50) = (worst(homa, |r| r.rtt_p50_us), worst(tcp, |r| r.rtt_p50_us));
        let (h99, t99) = (worst(homa, |r| r.rtt_p99_us), worst(tcp, |r| r.rtt_p99_us));
        if [h50, t50, h99, t99].iter().all(|x| x.is_finite()) {
            text.push_str(&format!(
                " In this run, for the shorter half of the messages, the median RTT was at \
                 most {h50:.0} us over Homa and {t50:.0} us over TCP, and the p99 at most \
                 {h99:.0} us and {t99:.0} us."
            ));
            let cost = " every Homa packet is handled by this process in user space, with \
                        thread wake-ups at each step, while TCP runs in the kernel; on a \
                        machine with few, busy cores that cost shows up as latency. See \
                        BENCHMARKS.md.";
            if h50 > t50 && h99 > t99 {
                text.push_str(" Here Homa lost:");
                text.push_str(cost);
            } else if h50 > t50 {
                text.push_str(
                    " Homa's tail was shorter (short messages did not queue behind long \
                     ones) but its median longer:",
                );
                text.push_str(cost);
            } else if h99 > t99 {
                text.push_str(" Homa's median was shorter but its tail longer.");
            } else {
                text.push_str(" Homa was faster on both counts.");
            }
        }
    }
    text.push_str(
        " On one machine over loopback there is no switch queue for Homa's priorities to \
         act on and both ends share the same cores, so differences are smaller than in a \
         datacenter; `homa perf` measures latency and throughput on their own. Where \
         Homa's design pays off, at a congested switch port, the demo's switch mode shows \
         it (hosts in network namespaces behind an emulated switch with 8 priorities; it \
         needs root or unprivileged user namespaces).",
    );
    text
}

/// Wraps `text` at `width` columns (on spaces).
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut col = 0;
    for word in text.split_whitespace() {
        if col > 0 && col + 1 + word.len() > width {
            out.push('\n');
            col = 0;
        } else if col > 0 {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += word.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(upper: usize, p50: f64, p99: f64) -> BucketRow {
        BucketRow {
            upper,
            share: 0.5,
            count: 5,
            median_len: upper,
            rtt_p50_us: p50,
            rtt_p99_us: p99,
            slow_p50: 1.0,
            slow_p99: 2.0,
        }
    }

    #[test]
    fn side_by_side_shows_ratios() {
        let t = side_by_side(&[row(100, 10.0, 20.0)], &[row(100, 15.0, 80.0)]);
        let line = t.lines().nth(2).unwrap();
        assert!(line.contains("1.50") && line.contains("4.00"), "{line}");
    }

    #[test]
    fn explanation_wraps() {
        let w = wrap(&explanation("w4", None, &[]), 40);
        assert!(w.lines().all(|l| l.len() <= 40));
        assert!(w.lines().count() > 5);
        let (h, t) = ([row(100, 10.0, 20.0)], [row(100, 15.0, 80.0)]);
        let text = explanation("w4", Some(&h), &t);
        assert!(
            text.contains(
                "at most 10 us over Homa and 15 us over TCP, and the p99 at most 20 us and 80 us"
            ),
            "{text}"
        );
        assert!(text.contains("faster on both"), "{text}");
        let text = explanation("w4", Some(&t), &h);
        assert!(text.contains("Homa lost"), "{text}");
        let mixed = [row(100, 30.0, 40.0)];
        let text = explanation("w4", Some(&mixed), &t);
        assert!(
            text.contains("tail was shorter") && text.contains("user space"),
            "{text}"
        );
    }
}
