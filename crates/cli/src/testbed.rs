//! `homa testbed`: a few hosts in network namespaces behind one emulated switch with
//! rate-limited, 8-priority ports and optional loss, for running Homa (and TCP) across a
//! real bottleneck on one machine.
//!
//! - `up`: build a testbed, print how to use it, and tear it down on Ctrl-C.
//! - `clean`: remove testbeds left behind by processes that no longer exist.
//! - `bench`: Homa (UDP and raw IP) and TCP at the same offered load across the testbed,
//!   slowdown by message length, and the shortest messages' tail compared ([`bench`](mod@bench)).
//! - `capacity`: the fastest links each transport keeps up with on this machine, and what
//!   each load costs it in CPU, system calls and context switches.
//!
//! The testbed and the bench are the `homa-testbed` library's; this module reads the
//! arguments and prints. Without root, `up` and `bench` run in a user namespace of their
//! own (`homa_testbed::userns`).

use std::net::Ipv4Addr;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use homa_testbed::bench::BenchError;
use homa_testbed::net::{self, Testbed, TestbedConfig, TestbedError};
use homa_testbed::userns;

/// Arguments of `homa testbed`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Network namespaces, qdiscs and nftables rules: as root, or else in a user \
                  namespace of its own where the kernel allows unprivileged ones (the \
                  testbed then vanishes with the process)."
)]
pub struct TestbedArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TestbedCommand,
}

/// The exit statuses of `bench` and `capacity`.
const BENCH_EXIT: &str = "Exit status: 0 when the run ended (a run judged not valid, or \
    with failed RPCs, included: the output says so); 1 when it could not be made (no \
    testbed, a host's process failed, an output that cannot be written); 2 for bad \
    arguments; 130 after Ctrl-C or SIGTERM (everything torn down); 141 when the output \
    pipe closed.";

/// The `homa testbed` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum TestbedCommand {
    /// Build a testbed, print its hosts and example commands, wait for Ctrl-C, tear down.
    Up(UpArgs),
    /// Remove what runs killed outright left: their testbed namespaces (root), the htb
    /// hysteresis they turned on (root), their scratch directories and the `perf stat`
    /// counters they left running.
    #[command(
        after_help = "Exit status: 0 when done (whether or not anything was left, and \
                            without root, where only the current user's leftovers are \
                            looked at), 1 when looking failed, 2 for bad arguments."
    )]
    Clean(CleanArgs),
    /// Homa vs TCP at the same load across the testbed: slowdown by message length.
    #[command(after_help = BENCH_EXIT)]
    Bench(bench::BenchArgs),
    /// The fastest port rate each transport keeps up with on this machine (doubling while
    /// it keeps up, halving while it does not, then bisecting), and its CPU, system calls
    /// and context switches per unit of work.
    #[command(
        after_long_help = "--gbps is the first port rate tried. A transport keeps up \
        at a rate when it carries at least 98% of the offered load, no RPC fails and the \
        machine is less than 90% busy. The transports take turns, one probe each, the \
        order reversed every round. Prints a line per probe, then a table of every \
        probe and each transport's capacity; with --json, the last line is JSON (see \
        --json). No plot is written.",
        after_help = BENCH_EXIT
    )]
    Capacity(bench::CapacityArgs),
}

/// Arguments of `homa testbed clean`.
#[derive(Debug, Clone, Args)]
pub struct CleanArgs {
    /// End with one JSON line: `{"removed":[<namespace>, ..],"htb_hysteresis_off":<bool>,
    /// "scratch_removed":[<directory>, ..],"perf_stopped":[<pid>, ..]}`
    /// (`htb_hysteresis_off`: it put back the kernel's htb hysteresis, which a killed
    /// testbed had turned on; `scratch_removed`: the temporary directories of benches
    /// killed outright; `perf_stopped`: the `perf stat` processes they left counting).
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `homa testbed up`.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Exit status: 130 after Ctrl-C/SIGTERM (everything torn down), 1 when the \
                  testbed cannot be built (neither root nor a user namespace, a tool \
                  missing, a command failed), 2 \
                  for bad arguments."
)]
pub struct UpArgs {
    /// Number of hosts (2..=250).
    #[arg(long, default_value_t = 4)]
    pub hosts: usize,
    /// Rate of each switch port toward a host, in Gbit/s.
    #[arg(allow_negative_numbers = true, long, default_value_t = 1.0)]
    pub gbps: f64,
    /// Fraction of IPv4 packets the switch drops at random, in [0, 1).
    #[arg(allow_negative_numbers = true, long, default_value_t = 0.0)]
    pub loss: f64,
    /// Packets each priority queue of a switch port holds (default: the kernel's 1000).
    #[arg(long)]
    pub queue_packets: Option<u32>,
    /// The hosts' /24 network: host i gets .(i+1).
    #[arg(long, default_value = "10.200.0.0")]
    pub subnet: Ipv4Addr,
    /// MTU of every link.
    #[arg(long, default_value_t = 1500)]
    pub mtu: u32,
    /// Prefix of the namespace names (default: `htb<pid>`).
    #[arg(long)]
    pub name: Option<String>,
    /// Leave TSO, GSO and GRO on at every link (by default they are off, so that every
    /// packet crosses the switch MTU-sized, as on a wire).
    #[arg(long)]
    pub offloads: bool,
}

impl UpArgs {
    /// The testbed these arguments ask for.
    pub fn config(&self) -> TestbedConfig {
        let mut config = TestbedConfig {
            hosts: self.hosts,
            gbps: self.gbps,
            loss: self.loss,
            queue_packets: self.queue_packets,
            subnet: self.subnet,
            mtu: self.mtu,
            offloads: self.offloads,
            ..TestbedConfig::default()
        };
        if let Some(name) = &self.name {
            config.name = name.clone();
        }
        config
    }
}

/// Run `homa testbed`.
pub fn run(args: &TestbedArgs) -> ExitCode {
    if !matches!(args.command, TestbedCommand::Clean(_)) {
        match userns::place() {
            Ok(userns::Placement::Here) => {}
            Ok(userns::Placement::Child(status)) => return userns::exit_code(status),
            Err(why) => {
                eprintln!("homa testbed: needs root, or unprivileged user namespaces: {why}");
                return ExitCode::from(1);
            }
        }
    }
    let result = match &args.command {
        TestbedCommand::Up(up) => return run_up(up),
        TestbedCommand::Clean(c) => return run_clean(c),
        TestbedCommand::Bench(b) => bench::run(b),
        TestbedCommand::Capacity(c) => bench::run_capacity(c),
    };
    if result.is_err() {
        // Failing because Ctrl-C or SIGTERM is taking the testbed down: that ends it.
        homa_testbed::net::yield_to_teardown();
    }
    {
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(BenchError::Testbed(e) | BenchError::NoTestbed(e)) => fail(&e),
            Err(e @ BenchError::Usage(_)) => {
                eprintln!("homa testbed: {e}");
                ExitCode::from(2)
            }
            Err(BenchError::Perf(e)) => {
                eprintln!("homa testbed: {e}");
                crate::perf::exit_status(&e)
            }
            Err(e) => {
                eprintln!("homa testbed: {e}");
                ExitCode::from(1)
            }
        }
    }
}

/// Exit status for a testbed error: 2 for bad arguments, 1 for everything else.
fn fail(e: &TestbedError) -> ExitCode {
    match e {
        // Named by the option the user typed (the settings are the options' namesakes).
        TestbedError::InvalidConfig { field, reason } => {
            eprintln!("homa testbed: --{}: {reason}", field.replace('_', "-"));
            ExitCode::from(2)
        }
        _ => {
            eprintln!("homa testbed: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_up(args: &UpArgs) -> ExitCode {
    let testbed = match Testbed::create(args.config()) {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    for w in testbed.warnings() {
        eprintln!("homa testbed: warning: {w}");
    }
    print!("{}", describe(&testbed));
    // The signal handler tears the testbed down and exits with 130; until then, wait.
    loop {
        std::thread::park();
    }
}

/// What `up` prints: the hosts, the switch, and commands to try.
fn describe(t: &Testbed) -> String {
    let c = t.config();
    let queue = match c.queue_packets {
        Some(n) => format!("{n} packets"),
        None => "1000 packets (kernel default)".into(),
    };
    let mut s = format!(
        "testbed {}: {} hosts on one switch, {} Gbit/s toward each host, 8 priority queues \
         of {queue}, loss {}%, MTU {}, offloads {}\n",
        c.name,
        t.hosts(),
        c.gbps,
        c.loss * 100.0,
        c.mtu,
        if c.offloads { "on" } else { "off" }
    );
    for i in 0..t.hosts() {
        s += &format!("  host {i:<3} netns {:<14} {}\n", t.netns(i), t.host_ip(i));
    }
    s += &format!(
        "  switch   netns {:<14} ports s0..s{}\n",
        t.switch_netns(),
        t.hosts() - 1
    );
    let (h0, h1) = (t.netns(0), t.netns(1));
    let ip0 = t.host_ip(0);
    // Rootless, the namespaces are visible only inside this process's user and mount
    // namespaces: other terminals get there with nsenter, as the same user.
    let (who, enter) = if userns::entered() {
        (
            "as this user",
            // --preserve-credentials: the namespace denies setgroups, which nsenter would
            // otherwise call (and fail: "setgroups failed: Operation not permitted").
            format!(
                "nsenter -t {} -U -m --preserve-credentials ",
                std::process::id()
            ),
        )
    } else {
        ("as root", String::new())
    };
    s += &format!(
        "\nTry (in other terminals, {who}):\n  \
         {enter}ip netns exec {h0} homa perf server --addr {ip0}:4000\n  \
         {enter}ip netns exec {h1} homa perf client --server {ip0}:4000 --workload w4 --gbps {}\n  \
         {enter}ip netns exec {} tc -s class show dev s0    # per-priority counters toward host 0\n\
         \nCtrl-C tears everything down (processes still in the hosts are killed).\n",
        c.gbps * 0.8,
        t.switch_netns()
    );
    s
}

/// How the tables name the short messages: those up to `short_len` bytes, about the
/// shortest tenth of the workload (its 10th percentile), which were the share of the
/// first transport's RPCs that its first length bucket says (more than a tenth where
/// many messages have the shortest lengths, as in W1).
pub(crate) fn short_label(report: &homa_testbed::bench::BenchReport) -> String {
    let short_len = report.short_len;
    let share = (report.protos.first())
        .and_then(|p| p.rows.first())
        .map(|r| r.share);
    match share {
        // (A short run's share moves around a tenth by chance: only a clear departure.)
        Some(f) if !(0.05..=0.2).contains(&f) => format!(
            "shortest messages (<= {short_len} B: {:.0}% of them, where a tenth was meant: \
             many have the shortest lengths)",
            100.0 * f
        ),
        _ => format!("shortest 10% of messages (<= {short_len} B)"),
    }
}

fn run_clean(args: &CleanArgs) -> ExitCode {
    let cleaned = if !homa_testbed::userns::privileged() {
        println!(
            "not root: testbeds built without root live in their process's user namespace \
             and vanish with it; those built by root need `sudo homa testbed clean`"
        );
        net::Cleaned::default()
    } else {
        match net::clean_stale() {
            Ok(cleaned) => {
                if cleaned.namespaces.is_empty() {
                    println!("no stale testbed namespaces");
                }
                for ns in &cleaned.namespaces {
                    println!("removed {ns}");
                }
                if cleaned.htb_hysteresis_off {
                    println!(
                        "turned the kernel's htb hysteresis off again (a testbed had turned \
                         it on, and its process was killed)"
                    );
                }
                cleaned
            }
            Err(e) => return fail(&e),
        }
    };
    // Any user's: the scratch directories (logs) of benches killed outright, and the
    // machine-wide `perf stat` counters they left running.
    let meters = homa_testbed::leftovers::stop_stale_meters();
    for pid in &meters {
        println!("stopped perf stat (pid {pid}), left running by a bench that is gone");
    }
    let scratch = homa_testbed::leftovers::remove_stale_scratch();
    for dir in &scratch {
        println!("removed {}", dir.display());
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "removed": cleaned.namespaces,
                "htb_hysteresis_off": cleaned.htb_hysteresis_off,
                "scratch_removed": scratch,
                "perf_stopped": meters,
            })
        );
    }
    ExitCode::SUCCESS
}

pub mod bench {
    //! `homa testbed bench`: Homa against TCP across the testbed's congested links (see
    //! `homa_testbed::bench`): slowdown by message length, each transport's carried load
    //! and CPU use, and the shortest messages' tail compared.

    use std::path::PathBuf;

    use clap::Args;
    use homa_perf::homa::HomaApi;
    use homa_perf::stats;
    use homa_perf::workload::WorkloadSpec;
    use homa_testbed::bench::{
        self, BenchConfig, BenchError, BenchEvent, BenchProto, BenchReport, ProtoReport,
        DEFAULT_GBPS, DEFAULT_HOSTS,
    };
    use homa_testbed::capacity::{self, CapacityConfig};

    /// The plot's file when `--plot` names none.
    const DEFAULT_PLOT: &str = "testbed-bench.svg";

    /// Arguments of `homa testbed bench`.
    #[derive(Debug, Clone, Args)]
    pub struct BenchArgs {
        /// The testbed and the load (shared with `homa testbed capacity`).
        #[command(flatten)]
        pub run: RunArgs,
        /// Write slowdown vs length (log-log) for every transport to this SVG [default:
        /// testbed-bench.svg in the current directory, or in the temporary directory where
        /// the current one cannot be written].
        #[arg(long)]
        pub plot: Option<PathBuf>,
        /// End with one JSON line: `{"homa":{"p99_slowdown_short":..,"p50_slowdown_short":..,
        /// "buckets":[{"max_len":..,"rpcs":..,"p50_slowdown":..,"p99_slowdown":..},..],..},
        /// "tcp":{..},"short_p99_ratio_tcp_over_homa":..,"valid":..,"testbed_warnings":[..],
        /// "htb_hysteresis":..}` (`buckets`: the table's rows by length; the warnings: what
        /// the testbed could not set up as asked, such as an offload a link kept
        /// on; `htb_hysteresis`: whether the switch ran with it; `offloads`: whether the
        /// links kept theirs, `--offloads`).
        #[arg(long)]
        pub json: bool,
    }

    /// The testbed and the load: the arguments `homa testbed bench` and `homa testbed
    /// capacity` share.
    #[derive(Debug, Clone, Args)]
    pub struct RunArgs {
        /// Request lengths: w1..w5, a fixed length, or a CDF file (as `homa perf client`).
        #[arg(long, default_value = "w4")]
        pub workload: WorkloadSpec,
        /// Offered load per host, as a fraction of the link rate (request bytes).
        #[arg(allow_negative_numbers = true, long, default_value_t = 0.8)]
        pub load: f64,
        /// Hosts (each runs a server and a client).
        #[arg(long, default_value_t = DEFAULT_HOSTS)]
        pub hosts: usize,
        /// Seconds of load per transport (each capacity probe too). Runs of a few seconds
        /// end with long messages still in flight, which count as not carried: at the
        /// default port rates, under 5 s reads as a transport falling behind.
        #[arg(allow_negative_numbers = true, long, default_value_t = 10.0)]
        pub seconds: f64,
        /// Rate of each switch-to-host link, Gbit/s. Every host shares this machine's CPUs:
        /// the default is slow enough that on 2 cores both transports carry all of their
        /// load with CPU to spare (the run says when one did not).
        #[arg(allow_negative_numbers = true, long, default_value_t = DEFAULT_GBPS)]
        pub gbps: f64,
        /// MTU of every link. Jumbo frames by default: with 1500-byte packets the kernel work
        /// of forwarding 4 hosts' traffic through the emulated switch saturates a 2-core
        /// machine, and then every transport measures the CPU rather than the network.
        #[arg(long, default_value_t = 9000)]
        pub mtu: u32,
        /// Random loss at the switch, 0..1.
        #[arg(allow_negative_numbers = true, long, default_value_t = 0.0)]
        pub loss: f64,
        /// Transports to run, in order: homa (UDP), homa-raw (IP protocol 146), tcp, and the
        /// gRPC lanes: grpc-homa (tonic over Homa, UDP), grpc-h2 (tonic over HTTP/2, TCP).
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "homa,homa-raw,tcp"
        )]
        pub protos: Vec<BenchProto>,
        /// Milliseconds of unloaded calibration per transport.
        #[arg(long, default_value_t = 1000)]
        pub calibration_ms: u64,
        /// Homa options file for every Homa socket (default: one sized for the link).
        #[arg(long, value_name = "FILE")]
        pub homa_config: Option<PathBuf>,
        /// Which `homa` API the Homa clients use (as `homa perf client --homa-api`): the
        /// tokio socket's `call`, or a blocking socket whose receiver threads complete
        /// the RPCs that tasks start with `send_request`. The servers always use the
        /// blocking API.
        #[arg(long, value_enum, default_value = "tokio")]
        pub homa_api: HomaApi,
        /// Keep the per-host logs and samples in this directory (default: a temporary one,
        /// removed after a successful run).
        #[arg(long)]
        pub out_dir: Option<PathBuf>,
        /// Seed for lengths and arrivals (host i uses seed + i).
        #[arg(long, default_value_t = 1)]
        pub seed: u64,
        /// Leave the kernel's htb hysteresis as it is. By default a root run turns it on
        /// for its duration (machine-wide, put back afterwards): the emulated switch's rate
        /// limiting then costs about a third less CPU, which every transport's CPU figures
        /// would otherwise include.
        #[arg(long)]
        pub no_htb_hysteresis: bool,
        /// Leave TSO, GSO and GRO on at every link: segments of up to 64 KB cross the
        /// switch whole, as with a NIC that segments and coalesces, where by default every
        /// packet crosses MTU-sized, as on a wire. Both transports then cost less per
        /// byte, and the numbers are not comparable with those of a default run.
        #[arg(long)]
        pub offloads: bool,
    }

    impl BenchArgs {
        /// The bench these arguments ask for, each host running `homa`.
        pub fn config(&self, homa: PathBuf, plot: PathBuf) -> BenchConfig {
            self.run.config(homa, plot)
        }

        /// Where the plot goes: `--plot`, which must be writable, or the default.
        fn plot_path(&self) -> Result<PathBuf, BenchError> {
            let unwritable = |path: &PathBuf, e: std::io::Error| {
                BenchError::Usage(format!("cannot write the plot to {}: {e}", path.display()))
            };
            if let Some(path) = &self.plot {
                crate::check_writable(path).map_err(|e| unwritable(path, e))?;
                return Ok(path.clone());
            }
            // A file nobody asked for does not stop the run: elsewhere, with a note.
            let here = PathBuf::from(DEFAULT_PLOT);
            if crate::check_writable(&here).is_ok() {
                return Ok(here);
            }
            let there = std::env::temp_dir().join(DEFAULT_PLOT);
            crate::check_writable(&there).map_err(|e| unwritable(&there, e))?;
            eprintln!(
                "note: the current directory cannot be written: the plot goes to {}",
                there.display()
            );
            Ok(there)
        }
    }

    impl RunArgs {
        /// The bench these arguments ask for, each host running `homa`, its plot to `plot`.
        pub fn config(&self, homa: PathBuf, plot: PathBuf) -> BenchConfig {
            BenchConfig {
                homa,
                workload: self.workload.clone(),
                load: self.load,
                hosts: self.hosts,
                seconds: self.seconds,
                gbps: self.gbps,
                mtu: self.mtu,
                loss: self.loss,
                protos: self.protos.clone(),
                calibration_ms: self.calibration_ms,
                homa_config: self.homa_config.clone(),
                plot,
                out_dir: self.out_dir.clone(),
                seed: self.seed,
                htb_hysteresis: !self.no_htb_hysteresis,
                offloads: self.offloads,
                homa_api: self.homa_api,
            }
        }
    }

    /// Arguments of `homa testbed capacity`.
    #[derive(Debug, Clone, Args)]
    pub struct CapacityArgs {
        /// The bench each probe runs (`--gbps` is the first rate tried).
        #[command(flatten)]
        pub run: RunArgs,
        /// The highest port rate tried, Gbit/s.
        #[arg(allow_negative_numbers = true, long, default_value_t = 16.0)]
        pub max_gbps: f64,
        /// Bisection steps after the doubling.
        #[arg(long, default_value_t = 2)]
        pub bisections: u32,
        /// End with one JSON line: `{"<proto>":{"capacity_gbps":..,"cpu_s_per_gb":..,
        /// "syscalls_per_rpc":..,"switches_per_rpc":..,"probes":[{"gbps":..,"kept_up":..,
        /// "carried":..,"failed":..,"cpu_busy":..,"cpu_s_per_gb":..,"syscalls_per_rpc":..,
        /// "switches_per_rpc":..,"cpu_us_per_rpc":{..},"p99_slowdown_short":..},..]},..,
        /// "testbed_warnings":[..],"htb_hysteresis":..}`: per transport, its capacity (the
        /// highest rate it kept up with, null for none) and the costs at that rate, and
        /// every probe in the order run; the warnings: what the testbed could not set up
        /// as asked (such as an offload a link kept on).
        #[arg(long)]
        pub json: bool,
    }

    /// Runs `homa testbed capacity`.
    /// ", no RPC failed", or how many failed (and the first's reason), then how many
    /// never finished, if any.
    fn failures_said(r: &ProtoReport) -> String {
        let mut s = match r.failed {
            0 => ", no RPC failed".to_string(),
            n => format!(
                ", {n} RPCs failed (the first: {})",
                r.first_failure.as_deref().unwrap_or("?")
            ),
        };
        if r.unfinished > 0 {
            s += &format!(
                ", {} never finished (left out of the percentiles)",
                r.unfinished
            );
        }
        s
    }

    /// Probes shorter than this may misjudge a transport (see `--seconds`).
    const SHORT_PROBE_SECONDS: f64 = 5.0;

    pub fn run_capacity(args: &CapacityArgs) -> Result<(), BenchError> {
        let config = CapacityConfig {
            // Each probe draws its plot into a scratch file: capacity writes none.
            bench: args.run.config(this_homa()?, PathBuf::new()),
            start_gbps: args.run.gbps,
            max_gbps: args.max_gbps,
            bisections: args.bisections,
        };
        // A bench says so when a short run cannot tell falling behind from long messages
        // still in flight; a capacity search would act on it silently, and search lower.
        if config.bench.seconds < SHORT_PROBE_SECONDS {
            eprintln!(
                "warning: probes of {} s end with long messages still in flight, which count \
                 as not carried: a transport may be judged not to keep up at rates it keeps up \
                 with, and the search then goes lower. Use --seconds {SHORT_PROBE_SECONDS} or more.",
                config.bench.seconds
            );
        }
        let mut warned: Vec<String> = Vec::new();
        let report = capacity::measure(&config, &mut |p, proto| {
            for w in &p.warnings {
                if !warned.contains(w) {
                    eprintln!("warning: {w}");
                    warned.push(w.clone());
                }
            }
            let kept = if p.kept_up() {
                "kept up"
            } else {
                "did not keep up"
            };
            println!("{} at {} Gbps: {kept}", proto.name(), p.gbps);
        })?;
        print!("\n{}", report.table());
        remind_warnings(&report.warnings());
        if args.json {
            println!("{}", report.json());
        }
        Ok(())
    }

    /// Repeat, under the results, what the testbed could not set up as asked: said once
    /// as it was built, above pages of output, it is easy to miss, and it changes what
    /// every transport costs (offloads left on about halve it).
    fn remind_warnings(warnings: &[String]) {
        if warnings.is_empty() {
            return;
        }
        eprintln!(
            "\nnote: the testbed was not set up as asked, so its costs are not comparable \
             with BENCHMARKS.md: {}",
            warnings.join("; ")
        );
    }

    /// This program, which every host runs as `homa perf server` and `homa perf client`.
    pub fn this_homa() -> Result<PathBuf, BenchError> {
        std::env::current_exe().map_err(|source| BenchError::Io {
            what: "cannot find the homa executable".into(),
            source,
        })
    }

    /// Runs `homa testbed bench`.
    pub fn run(args: &BenchArgs) -> Result<(), BenchError> {
        let plot = args.plot_path()?;
        let config = args.config(this_homa()?, plot);
        let report = bench::measure(&config, &mut |e| match e {
            BenchEvent::Built { testbed, workload } => {
                for w in testbed.warnings() {
                    eprintln!("warning: {w}");
                }
                println!(
                    "testbed: {} hosts behind one switch, {} Gbps per switch-to-host link, MTU {}{}, 8 priority classes{}, htb hysteresis {}",
                    testbed.hosts(),
                    args.run.gbps,
                    args.run.mtu,
                    if args.run.offloads { " (offloads on)" } else { "" },
                    if args.run.loss > 0.0 {
                        format!(", {:.2}% random loss", args.run.loss * 100.0)
                    } else {
                        String::new()
                    },
                    if testbed.htb_hysteresis() { "on" } else { "off" }
                );
                println!(
                    "{}; each host offers {:.3} Gbps to the others for {} s per transport",
                    workload.describe().lines().next().unwrap_or(""),
                    args.run.load * args.run.gbps,
                    args.run.seconds
                );
            }
            BenchEvent::Starting(proto) => println!("--- {} ---", proto.name()),
            BenchEvent::Calibrated(_, baseline) => println!(
                "unloaded RTT: {}",
                baseline
                    .points()
                    .iter()
                    .map(|(l, ns)| format!("{l} B {:.0} us", ns / 1e3))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
        print_report(&report, &config);
        if args.json {
            println!("{}", report.summary);
        }
        Ok(())
    }

    /// What would make a run that was not a valid measurement one: `rate_flag` names the
    /// port rate's option (`--gbps` here, `--link-gbps` in the demo).
    pub(crate) fn invalid_advice(report: &BenchReport, rate_flag: &str) -> String {
        let saturated = report
            .protos
            .iter()
            .any(|r| r.cpu_busy.is_some_and(|b| b >= bench::CPU_SATURATED));
        if saturated {
            format!(
                "Every host shares this machine's CPUs, and the CPU counts everything that \
                 runs on it, other programs included: use slower links ({rate_flag}), fewer \
                 --hosts or a lower --load (or stop other work) until every transport \
                 carries its load with CPU to spare."
            )
        } else {
            "The CPU had time to spare, so this is the transport, not the machine: it fell \
             behind its load, or, in a run of a few seconds, long messages were still in \
             flight at the end, which count as not carried (a longer --seconds tells the \
             two apart)."
                .to_string()
        }
    }

    /// Each transport's results, the shortest messages compared, and the verdict.
    fn print_report(report: &BenchReport, config: &BenchConfig) {
        let summary = &report.summary;
        for r in &report.protos {
            println!(
                "\n{}: {} RPCs, {:.3} Gbps of requests carried in all ({:.0}% of the {:.3} \
                 offered){}; CPU {} busy during the load",
                r.proto.name(),
                r.rpcs,
                r.gbps,
                100.0 * r.carried,
                // What the load generators drew (a short run draws a few percent more or
                // less than the nominal rate), which `carried` is a fraction of.
                if r.carried > 0.0 {
                    r.gbps / r.carried
                } else {
                    report.offered_gbps
                },
                failures_said(r),
                r.cpu_busy
                    .map_or("?".to_string(), |b| format!("{:.0}%", 100.0 * b))
            );
            if let Some(c) = r.cost {
                let per = |x: Option<f64>| x.map_or("?".into(), |v| format!("{v:.1}"));
                println!(
                    "machine: {:.1} CPU s ({} per GB carried), {} system calls and {} context \
                     switches per RPC",
                    c.cpu_seconds,
                    per(r.cpu_s_per_gb(config.seconds)),
                    per(r.syscalls_per_rpc()),
                    per(r.switches_per_rpc())
                );
            }
            if let Some(v) = r.cpu_us_per_rpc() {
                let parts: Vec<String> = v.iter().map(|(k, us)| format!("{k} {us:.1}")).collect();
                println!("CPU us per RPC: {}", parts.join(", "));
            }
            if let Some(p) = &r.packets_per_rpc {
                let sent: Vec<String> = p
                    .iter()
                    .filter(|(_, n)| *n > 0.0)
                    .map(|(t, n)| format!("{t} {n:.2}"))
                    .collect();
                println!("packets per RPC, both ways: {}", sent.join(", "));
            }
            if let Some(io) = &r.client_io_per_rpc {
                let calls: Vec<String> = io.iter().map(|(k, n)| format!("{k} {n:.2}")).collect();
                println!("clients' sockets per RPC: {}", calls.join(", "));
            }
            print!("{}", stats::bucket_table(&r.rows));
            println!(
                "switch queue overflows by priority (0..7; TCP and HTTP/2 use 0 only): {:?}{}",
                r.drops,
                if config.loss > 0.0 {
                    " (the random drops of --loss come on top, uncounted here)"
                } else {
                    ""
                }
            );
        }
        let short = |n: &str, k: &str| summary[n][k].as_f64();
        println!("\n{}, slowdown P50 / P99:", super::short_label(report));
        for r in &report.protos {
            let n = r.proto.name();
            println!(
                "  {n:<9} {:>8} / {:>8}",
                stats::cell(short(n, "p50_slowdown_short").unwrap_or(f64::NAN), 1),
                stats::cell(short(n, "p99_slowdown_short").unwrap_or(f64::NAN), 1)
            );
        }
        let p99 = |n: &str| short(n, "p99_slowdown_short");
        for homa in ["homa", "homa_raw"] {
            if let (Some(h), Some(t)) = (p99(homa), p99("tcp")) {
                println!("TCP P99 / {homa} P99 for the shortest 10%: {:.1}x", t / h);
            }
        }
        if let (Some(h), Some(t)) = (p99("grpc_homa"), p99("grpc_h2")) {
            println!(
                "gRPC over HTTP/2 P99 / gRPC over Homa P99 for the shortest 10%: {:.1}x",
                t / h
            );
        }
        println!("plot written to {}", config.plot.display());
        remind_warnings(&report.warnings);
        if !report.invalid.is_empty() {
            // Loudly, last: the numbers above measure this machine, not the network.
            eprintln!();
            eprintln!(
                "!!! NOT A VALID MEASUREMENT OF THE NETWORK: {}.",
                report.invalid.join("; ")
            );
            eprintln!("!!! {}", invalid_advice(report, "--gbps"));
        }
        if let Some(dir) = &report.kept {
            println!("logs and samples in {}", dir.display());
        }
    }
}
