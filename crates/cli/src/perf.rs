//! `homa perf`: benchmarks of Homa against TCP (and a raw UDP floor) over real sockets.
//! The measuring is the `homa-perf` library's; these modules read the arguments and print.
//!
//! - `server`: answers perf requests over Homa and TCP; `/metrics` over HTTP.
//! - `client`: open-loop Poisson load from a workload CDF (like the Linux module's
//!   `cp_node`), per-second lines, a per-length-bucket table, `--plot`, `--json`.
//! - `rtt`: one RPC at a time over Homa, TCP and UDP, in one process.
//! - `tput`: one client streaming large requests over Homa and TCP, in one process.
//! - `grpc`: a unary gRPC echo through tonic over Homa and over HTTP/2, in one process.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use homa_perf::PerfError;

/// Arguments of `homa perf`.
#[derive(Debug, Clone, Args)]
pub struct PerfArgs {
    /// What to measure.
    #[command(subcommand)]
    pub command: PerfCommand,
}

/// The `homa perf` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum PerfCommand {
    /// Serve perf requests over Homa and TCP, with metrics over HTTP.
    Server(server::ServerArgs),
    /// Open-loop Poisson load from a workload against a perf server.
    Client(client::ClientArgs),
    /// Round-trip time, one RPC at a time: Homa vs TCP vs a raw UDP ping-pong (loopback).
    Rtt(rtt::RttArgs),
    /// Streaming throughput of large requests: Homa vs TCP, and the UDP floor (loopback).
    Tput(tput::TputArgs),
    /// A unary gRPC echo through tonic: over Homa vs over HTTP/2 (loopback).
    Grpc(grpc::GrpcArgs),
}

/// `--raw` and `--homa-config`: how the perf tools open their Homa sockets.
#[derive(Debug, Clone, Default, Args)]
pub struct HomaSocketArgs {
    /// Run Homa over raw IP protocol 146 (byte-compatible with the Linux module; needs
    /// CAP_NET_RAW) instead of UDP.
    #[arg(long)]
    pub raw: bool,
    /// A TOML file of Homa options: engine parameters under their Linux names in `[homa]`,
    /// socket settings in `[runtime]` (see the `homa` crate's `Options::from_toml_str`).
    #[arg(long, value_name = "FILE")]
    pub homa_config: Option<PathBuf>,
}

impl HomaSocketArgs {
    /// The socket options these arguments ask for (the defaults without any).
    pub fn options(&self) -> Result<homa::Options, PerfError> {
        homa_perf::homa::socket_options(self.homa_config.as_deref(), self.raw)
    }
}

/// Runs `homa perf ...`; errors are printed on stderr.
pub fn run(args: &PerfArgs) -> ExitCode {
    let result = match &args.command {
        PerfCommand::Server(a) => server::run(a),
        PerfCommand::Client(a) => client::run(a),
        PerfCommand::Rtt(a) => rtt::run(a),
        PerfCommand::Tput(a) => tput::run(a),
        PerfCommand::Grpc(a) => grpc::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("homa perf: {e}");
            exit_status(&e)
        }
    }
}

/// Exit status for a failed `homa perf` command: 2 for bad arguments (as `homa sim` and
/// `homa testbed` do; a workload or configuration file that cannot be read or used is
/// one), 3 for a load run that measured what completed but had RPCs fail, 1 for
/// everything else.
pub(crate) fn exit_status(e: &PerfError) -> ExitCode {
    match e {
        PerfError::SomeFailed { .. } => ExitCode::from(3),
        PerfError::Interrupted => ExitCode::from(130),
        PerfError::BadLength { .. }
        | PerfError::Zero { .. }
        | PerfError::NotPositive { .. }
        | PerfError::Negative { .. }
        | PerfError::TooMany { .. }
        | PerfError::TooLong { .. }
        | PerfError::BadProfile(_)
        | PerfError::HomaConfig { .. }
        | PerfError::Unwritable { .. }
        | PerfError::NothingToMeasure(_)
        | PerfError::Workload(_) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

pub mod server {
    //! `homa perf server`: answers perf requests over Homa and TCP, and serves metrics over HTTP.

    use std::io::Write;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use clap::Args;
    use homa_perf::server::{PerfServer, ServerConfig};
    use homa_perf::transport::{Proto, ProtoChoice};
    use homa_perf::PerfError;

    use super::HomaSocketArgs;

    /// The most `--threads`: each is a thread of this process, and tens of thousands of
    /// them exhaust its memory or the system's thread limit partway through starting.
    const MAX_THREADS: u64 = 1024;

    /// Arguments of `homa perf server`.
    #[derive(Debug, Clone, Args)]
    pub struct ServerArgs {
        /// Address to serve on: the Homa (UDP) port and the TCP port are both this one.
        #[arg(long, default_value = "0.0.0.0:4000")]
        pub addr: SocketAddr,
        /// Transports to serve.
        #[arg(long, value_enum, default_value = "both")]
        pub proto: ProtoChoice,
        /// Where to serve `/metrics` (Prometheus text) and `/metrics.json`.
        #[arg(long, default_value = "127.0.0.1:9100")]
        pub metrics_addr: SocketAddr,
        /// Do not start the metrics endpoint.
        #[arg(long)]
        pub no_metrics: bool,
        /// Threads receiving and answering Homa requests (1 to 1024).
        #[arg(
            long,
            default_value_t = 2,
            value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_THREADS)
        )]
        pub threads: usize,
        /// Homa transport and options.
        #[command(flatten)]
        pub homa: HomaSocketArgs,
        /// Stop after this many seconds, as Ctrl-C does (default: run until interrupted).
        #[arg(long, allow_negative_numbers = true)]
        pub seconds: Option<f64>,
    }

    /// Runs `homa perf server` until interrupted (or `--seconds`).
    pub fn run(args: &ServerArgs) -> Result<(), PerfError> {
        let limit = args
            .seconds
            .map(|s| homa_perf::seconds_arg("--seconds", s, false))
            .transpose()?;
        let server = PerfServer::start(&ServerConfig {
            addr: args.addr,
            protos: args.proto.protos().to_vec(),
            metrics_addr: (!args.no_metrics).then_some(args.metrics_addr),
            threads: args.threads,
            options: args.homa.options()?,
        })?;
        if let Some(h) = &server.homa {
            let transport = match h.transport() {
                homa::Transport::Udp => "UDP",
                homa::Transport::RawIp => "raw IP protocol 146",
            };
            println!("perf server: Homa on {} ({transport})", h.addr);
        }
        if let Some(addr) = server.tcp {
            println!("perf server: TCP on {addr}");
        }
        for (proto, g) in &server.grpc {
            let addr = g.addr;
            let what = match proto {
                Proto::GrpcHoma => "gRPC (tonic) over Homa on",
                _ => "gRPC (tonic) over HTTP/2, TCP on",
            };
            println!("perf server: {what} {addr}");
        }
        match &server.metrics {
            Some(Ok(endpoint)) => {
                let a = endpoint.local_addr();
                println!("perf server: metrics at http://{a}/metrics and http://{a}/metrics.json (or `homa metrics {a}`)");
            }
            // A busy metrics port does not stop the benchmark; but whoever holds it (often
            // another perf server) answers `homa metrics` there, so say so.
            Some(Err(e)) if e.kind() == std::io::ErrorKind::AddrInUse => eprintln!(
                "warning: no metrics endpoint for this server: cannot listen on {a}: {e}. \
                 Another process may be serving its own metrics there (`homa metrics {a}` \
                 shows those, not this server's): use --metrics-addr, or --no-metrics",
                a = args.metrics_addr
            ),
            Some(Err(e)) => eprintln!(
                "warning: no metrics endpoint for this server: cannot listen on {a}: {e} \
                 (use --metrics-addr with an address of this host, or --no-metrics)",
                a = args.metrics_addr
            ),
            None => {}
        }
        // Ctrl-C and SIGTERM end the server as `--seconds` does: the Homa socket lets the
        // responses already given reach their clients and the gRPC servers let their calls
        // in progress end (a second or two at most; requests that arrive meanwhile are
        // refused), the server returns, and the process exits through `exit`, so what runs
        // at exit runs (output flushed; the profile of an instrumented build written, which
        // `scripts/pgo-build.sh` trains on). A second signal during that exits at once.
        // Without the handler (another is installed) they kill it as before.
        let (stop_tx, stop) = std::sync::mpsc::channel();
        let signalled = std::sync::atomic::AtomicBool::new(false);
        if let Err(e) = ctrlc::set_handler(move || {
            if signalled.swap(true, std::sync::atomic::Ordering::Relaxed) {
                eprintln!("perf server: second signal: exiting without waiting");
                std::process::exit(130);
            }
            let _ = stop_tx.send(());
        }) {
            eprintln!("warning: Ctrl-C and SIGTERM kill the server without a clean exit: {e}");
        }
        let counters = &server.counters;
        let start = Instant::now();
        let mut last = counters.snapshot();
        loop {
            let second = Duration::from_secs(1);
            let wait = limit.map_or(second, |l| l.saturating_sub(start.elapsed()).min(second));
            let stopped = stop.recv_timeout(wait).is_ok();
            let now = counters.snapshot();
            if !stopped && now != last {
                // A whole second. Not println!: a closed stdout (piped into `head`, say)
                // must not stop serving.
                let _ = writeln!(
                    std::io::stdout(),
                    "[{:>4}s] homa {:>7} req/s {:>7.3} Gbps in | tcp {:>7} req/s {:>7.3} Gbps in",
                    start.elapsed().as_secs(),
                    now.homa_requests - last.homa_requests,
                    (now.homa_bytes_in - last.homa_bytes_in) as f64 * 8.0 / 1e9,
                    now.tcp_requests - last.tcp_requests,
                    (now.tcp_bytes_in - last.tcp_bytes_in) as f64 * 8.0 / 1e9,
                );
                last = now;
            }
            if stopped || limit.is_some_and(|l| start.elapsed() >= l) {
                let cut = server.stop(Duration::from_secs(1));
                let total = counters.snapshot();
                let _ = writeln!(
                    std::io::stdout(),
                    "perf server: stopped after {:.1} s; requests served: homa {}, tcp {}{}",
                    start.elapsed().as_secs_f64(),
                    total.homa_requests,
                    total.tcp_requests,
                    match cut {
                        0 => String::new(),
                        1 => "; 1 Homa RPC cut off".to_string(),
                        n => format!("; {n} Homa RPCs cut off"),
                    }
                );
                return Ok(());
            }
        }
    }
}

pub mod client {
    //! `homa perf client`: open-loop Poisson load against a `homa perf server`, over Homa, TCP
    //! or both back to back; per-second lines, a per-length-bucket table, an optional slowdown
    //! plot and JSON.
    //!
    //! Slowdown is a message's RTT divided by the unloaded RTT for its length, measured first in
    //! a short calibration phase (RPCs one at a time, median per length, interpolated between
    //! lengths). With `--proto both` the yardstick is, per length, the better of the two
    //! transports' unloaded RTTs, so their slowdowns compare directly.

    use std::collections::BTreeMap;
    use std::io::Write;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use clap::Args;
    use homa_perf::client::{self, common_baseline, run_proto, RunPlan};
    use homa_perf::homa::HomaApi;
    use homa_perf::load::LoadConfig;
    use homa_perf::stats::{self, BucketRow, Summary};
    use homa_perf::transport::ProtoChoice;
    use homa_perf::workload::{Workload, WorkloadSpec, MAX_MESSAGE_LENGTH};
    use homa_perf::{plot, PerfError};

    use super::HomaSocketArgs;

    /// Arguments of `homa perf client`.
    #[derive(Debug, Clone, Args)]
    #[command(
        after_help = "Exit status: 0 when every RPC completed; 3 when the run measured what \
                      completed but some RPCs failed (counted in `errors`; the first failure \
                      is printed); 1 when none completed or the run could not be made; 2 for \
                      bad arguments; 130 when Ctrl-C or SIGTERM ended the load early (what \
                      it measured until then is reported; a second signal exits at once, \
                      without a report)."
    )]
    pub struct ClientArgs {
        /// The perf server, `HOST:PORT` (its Homa and TCP port are the same number; a
        /// name is resolved once, to its first address). Several servers (repeat the
        /// option or separate with commas) share the load: each RPC goes to one picked at
        /// random.
        #[arg(long, required = true, value_delimiter = ',', value_parser = resolve_server)]
        pub server: Vec<SocketAddr>,
        /// Request lengths: w1..w5 (the Homa papers' workloads), starve, a fixed length in
        /// bytes, or a path to a CDF file.
        #[arg(long, default_value = "w4")]
        pub workload: WorkloadSpec,
        /// Directory holding w1.csv..w5.csv (default: $HOMA_WORKLOADS_DIR, else the copies
        /// built into this binary).
        #[arg(long)]
        pub workload_dir: Option<PathBuf>,
        /// Offered load: Gbit/s of request message bytes.
        #[arg(allow_negative_numbers = true, long, default_value_t = 1.0)]
        pub gbps: f64,
        /// Seconds of load per transport (0: calibrate only, see --baseline-out).
        #[arg(allow_negative_numbers = true, long, default_value_t = 10.0)]
        pub seconds: f64,
        /// Transport(s); `both` runs Homa then TCP.
        #[arg(long, value_enum, default_value = "homa")]
        pub proto: ProtoChoice,
        /// Write slowdown vs length (log-log) to this SVG.
        #[arg(long)]
        pub plot: Option<PathBuf>,
        /// End with one JSON line: {"proto","rpcs","gbps","p50_us","p99_us","p999_us","errors",
        /// "unfinished"} (errors: RPCs that failed; unfinished: RPCs neither completed nor
        /// failed 10 s after the load ended); with `--proto both`, {"homa":{..},"tcp":{..}} holding one
        /// such object per transport. With `--seconds 0`, the calibration instead, as
        /// `--baseline-out` writes it.
        #[arg(long)]
        pub json: bool,
        /// Responses as long as requests (default: --response-len bytes).
        #[arg(long, conflicts_with = "response_len")]
        pub echo: bool,
        /// Response length when not --echo, bytes (at most 1,000,000).
        #[arg(long, default_value_t = 100)]
        pub response_len: usize,
        /// TCP connections to spread RPCs over (at least 1).
        #[arg(
            long,
            default_value_t = 8,
            value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
        )]
        pub connections: usize,
        /// Most RPCs in flight (at least 1); arrivals beyond are skipped and reported.
        #[arg(
            long,
            default_value_t = 1000,
            value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
        )]
        pub max_outstanding: usize,
        /// Seed for lengths and arrival times.
        #[arg(long, default_value_t = 1)]
        pub seed: u64,
        /// Milliseconds of unloaded-RTT calibration per transport (0: none, no slowdowns).
        #[arg(long, default_value_t = 2000)]
        pub calibration_ms: u64,
        /// Which `homa` API the Homa client uses. The load generator's RPCs are tokio
        /// tasks: with `tokio` the socket's driver task wakes each one itself (one wake-up
        /// per response); with `blocking` a receiver thread takes the response and wakes
        /// the task (two).
        #[arg(long, value_enum, default_value = "tokio")]
        pub homa_api: HomaApi,
        /// Homa transport and options.
        #[command(flatten)]
        pub homa: HomaSocketArgs,
        /// Write every completed RPC as a line `<proto> <request length> <RTT ns>` to this file
        /// (for merging several clients' results, as `homa testbed bench` does).
        #[arg(long, value_name = "FILE")]
        pub samples_out: Option<PathBuf>,
        /// Write the unloaded-RTT calibration as JSON `{"<proto>":[[length, RTT ns], ..]}`.
        #[arg(long, value_name = "FILE")]
        pub baseline_out: Option<PathBuf>,
    }

    /// Runs `homa perf client`.
    pub fn run(args: &ClientArgs) -> Result<(), PerfError> {
        // Every file the run writes, checked before it, which may take minutes.
        for path in [&args.plot, &args.samples_out, &args.baseline_out]
            .into_iter()
            .flatten()
        {
            crate::check_writable(path).map_err(|source| PerfError::Unwritable {
                path: path.clone(),
                source,
            })?;
        }
        // 0: calibration only.
        let seconds = homa_perf::seconds_arg("--seconds", args.seconds, true)?;
        // The plot is of slowdowns under load: refused at once where the run cannot draw
        // it, rather than after the whole run.
        if args.plot.is_some() && (args.calibration_ms == 0 || seconds.is_zero()) {
            return Err(PerfError::NothingToMeasure(if seconds.is_zero() {
                "--plot draws slowdowns under load, and --seconds 0 runs no load".into()
            } else {
                "--plot draws slowdowns, which need the unloaded round trips that \
                 --calibration-ms 0 leaves out"
                    .into()
            }));
        }
        if !(args.gbps > 0.0 && args.gbps.is_finite()) {
            return Err(PerfError::NotPositive {
                what: "--gbps",
                value: args.gbps,
            });
        }
        // Longer responses would be cut to the longest message (the server clamps them):
        // refused, as `perf tput --response` refuses them.
        if !args.echo && args.response_len > MAX_MESSAGE_LENGTH {
            return Err(PerfError::BadLength {
                what: "--response-len",
                len: args.response_len,
                min: 0,
                max: MAX_MESSAGE_LENGTH,
            });
        }
        let workload = Arc::new(Workload::load(
            &args.workload,
            args.workload_dir.as_deref(),
        )?);
        println!("{}", workload.describe());
        // Ctrl-C and SIGTERM end the load early: the RPCs in flight finish and the run
        // reports what it measured (exit status 130); a second signal exits at once.
        let stop = Arc::new(AtomicBool::new(false));
        {
            let stop = stop.clone();
            if let Err(e) = ctrlc::set_handler(move || {
                if stop.swap(true, Ordering::Relaxed) {
                    eprintln!("perf client: second signal: exiting without a summary");
                    std::process::exit(130);
                }
                eprintln!("perf client: stopping; a second Ctrl-C exits at once");
            }) {
                eprintln!("warning: Ctrl-C and SIGTERM end the client without a summary: {e}");
            }
        }
        let plan = RunPlan {
            load: LoadConfig {
                workload: workload.clone(),
                gbps: args.gbps,
                duration: seconds.max(Duration::from_millis(100)),
                response_len: if args.echo {
                    None
                } else {
                    Some(args.response_len)
                },
                max_outstanding: args.max_outstanding,
                seed: args.seed,
                per_second_lines: true,
                progress: true,
                stop: Some(stop.clone()),
            },
            connections: args.connections,
            calibration: Duration::from_millis(args.calibration_ms),
            homa_api: args.homa_api,
            homa_options: args.homa.options()?,
            calibrate_only: seconds.is_zero(),
        };
        if plan.calibrate_only {
            println!(
                "calibration only (--seconds 0): up to {} ms of unloaded round trips per transport, no load",
                args.calibration_ms
            );
        } else {
            println!(
                "offered load {:.3} Gbps of requests ({:.0} RPC/s, mean gap {:.1} us), responses {}, {:.1} s per transport",
                args.gbps,
                args.gbps * 1e9 / 8.0 / workload.mean_clamped(),
                workload.mean_clamped() * 8.0 / args.gbps / 1e3,
                if args.echo { "echo the request length".to_string() } else { format!("{} B", args.response_len) },
                plan.load.duration.as_secs_f64(),
            );
        }
        let rt = client::runtime()?;
        let mut runs = Vec::new();
        let servers = args
            .server
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        for &proto in args.proto.protos() {
            if stop.load(Ordering::Relaxed) {
                println!("--- {}: not run (interrupted) ---", proto.name());
                continue;
            }
            println!("--- {} to {servers} ---", proto.name());
            runs.push(rt.block_on(run_proto(proto, &args.server, &plan))?);
        }
        if let Some(path) = &args.baseline_out {
            client::write_baselines(path, &runs)?;
        }
        if let Some(path) = &args.samples_out {
            client::write_samples(path, &runs)?;
        }
        if plan.calibrate_only {
            if args.json {
                println!("{}", client::baselines_json(&runs));
            }
            return Ok(());
        }
        let baseline = common_baseline(&runs);
        let bounds = stats::bucket_bounds(&workload);
        let tables: Vec<(&str, Vec<BucketRow>)> = runs
            .iter()
            .map(|r| {
                let base = (!baseline.points().is_empty()).then_some(&baseline);
                (
                    r.result.proto,
                    stats::bucket_rows(&r.result.samples, &bounds, base),
                )
            })
            .collect();
        for (run, (name, rows)) in runs.iter().zip(&tables) {
            let s = run.result.summary();
            println!(
                "\n{name}: {} RPCs, {:.3} Gbps, RTT p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us",
                s.rpcs, s.gbps, s.p50_us, s.p99_us, s.p999_us
            );
            let _ = std::io::stdout().flush(); // (the warnings go to stderr, after the line)
            for w in run.result.warnings() {
                eprintln!("warning: {w}");
            }
            print!("{}", stats::bucket_table(rows));
        }
        if let Some(path) = &args.plot {
            let series: Vec<(&str, &[BucketRow])> =
                tables.iter().map(|(n, r)| (*n, r.as_slice())).collect();
            plot::slowdown_svg(
                path,
                &format!("{} at {} Gbps offered", workload.name(), args.gbps),
                &series,
            )?;
            println!("plot written to {}", path.display());
        }
        if args.json {
            let summaries: Vec<Summary> =
                runs.iter().map(|r| r.result.summary().to_json()).collect();
            // The shape follows `--proto`, not how many runs finished (Ctrl-C may end
            // the run before TCP's turn).
            let line =
                if let ([only], false) = (summaries.as_slice(), args.proto == ProtoChoice::Both) {
                    serde_json::to_string(only)
                } else {
                    let by_proto: BTreeMap<&str, &Summary> =
                        summaries.iter().map(|s| (s.proto, s)).collect();
                    serde_json::to_string(&by_proto)
                };
            println!("{}", line.expect("a summary serializes"));
        }
        // A run that measured nothing is a failure, whatever was printed; one in which
        // some RPCs failed is not clean either (exit status 3), though it measured the
        // rest.
        let failed: Vec<_> = runs
            .iter()
            .map(|r| r.result.summary())
            .filter(|s| s.errors > 0)
            .collect();
        if stop.load(Ordering::Relaxed) {
            return Err(PerfError::Interrupted);
        }
        if let Some(s) = failed.iter().find(|s| s.rpcs == 0) {
            return Err(PerfError::NoneCompleted {
                proto: s.proto,
                errors: s.errors,
            });
        }
        match failed.first() {
            Some(s) => Err(PerfError::SomeFailed {
                proto: s.proto,
                errors: s.errors,
                total: s.rpcs + s.errors,
            }),
            None => Ok(()),
        }
    }

    /// `--server`: an address, or a name with a port, resolved to its first address; one
    /// an RPC can go to (a unicast address, a port other than 0).
    fn resolve_server(s: &str) -> Result<SocketAddr, String> {
        use std::net::ToSocketAddrs;
        let addr = match s.parse() {
            Ok(a) => a,
            Err(_) => s
                .to_socket_addrs()
                .map_err(|e| format!("{s:?} is not HOST:PORT, or does not resolve: {e}"))?
                .next()
                .ok_or_else(|| format!("{s:?} resolves to no address"))?,
        };
        let ip = addr.ip();
        let broadcast = matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast());
        if ip.is_unspecified() || ip.is_multicast() || broadcast {
            return Err(format!("{addr} is not a unicast address"));
        }
        if addr.port() == 0 {
            return Err(format!("{addr}: port 0 is no server's port"));
        }
        Ok(addr)
    }
}

pub mod rtt {
    //! `homa perf rtt`: round-trip time with one RPC outstanding, over Homa, TCP and a raw UDP
    //! ping-pong (the floor), and a UDP ping-pong with the system calls of a multi-peer
    //! transport (`udp_mp`); all in this process over 127.0.0.1 (see `homa_perf::rtt`).

    use clap::Args;
    use homa_perf::header::HEADER_LEN;
    use homa_perf::rtt::{self, RttConfig, RttProto};
    use homa_perf::PerfError;

    use super::HomaSocketArgs;

    /// Arguments of `homa perf rtt`.
    #[derive(Debug, Clone, Args)]
    pub struct RttArgs {
        /// Request and response length, bytes (16, the perf header, to 1,000,000; shorter is
        /// raised to 16).
        #[arg(long, default_value_t = 100)]
        pub size: usize,
        /// Measured round trips per transport.
        #[arg(long, default_value_t = 10_000)]
        pub count: usize,
        /// Unmeasured round trips per transport first.
        #[arg(long, default_value_t = 1000)]
        pub warmup: usize,
        /// End with one JSON line.
        #[arg(long)]
        pub json: bool,
        /// Transports to measure (comma-separated; e.g. `--only homa` for profiling).
        #[arg(long, value_delimiter = ',', default_value = "udp,udp-mp,tcp,homa")]
        pub only: Vec<RttProto>,
        /// Homa transport and options.
        #[command(flatten)]
        pub homa: HomaSocketArgs,
    }

    /// Runs `homa perf rtt`.
    pub fn run(args: &RttArgs) -> Result<(), PerfError> {
        let config = RttConfig {
            size: args.size,
            count: args.count,
            warmup: args.warmup,
            protos: args.only.clone(),
            options: args.homa.options()?,
        };
        // Refused before anything runs (not after a warm-up that cannot succeed).
        config.validate()?;
        let size = rtt::request_size(args.size);
        if size != args.size {
            println!(
                "note: --size {} raised to the {HEADER_LEN}-byte perf header",
                args.size
            );
        }
        println!(
            "perf rtt: {size}-byte requests and responses, one RPC at a time over loopback; {} measured per transport after {} warm-up",
            args.count, args.warmup
        );
        let report = rtt::measure(&config)?;
        println!(
            "{:<11} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "proto", "p50_us", "p99_us", "p99.9_us", "min_us", "mean_us"
        );
        for (name, s) in &report.results {
            println!(
                "{name:<11} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                s.p50_us, s.p99_us, s.p999_us, s.min_us, s.mean_us
            );
        }
        if let Some(homa) = report.get("homa") {
            for base in ["udp", "udp_mp", "tcp"] {
                if let Some(b) = report.get(base) {
                    println!(
                        "{:<11} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}   (ratio)",
                        format!("homa/{base}"),
                        homa.p50_us / b.p50_us,
                        homa.p99_us / b.p99_us,
                        homa.p999_us / b.p999_us,
                        homa.min_us / b.min_us,
                        homa.mean_us / b.mean_us
                    );
                }
            }
        }
        for n in &report.notes {
            println!("{n}");
        }
        if args.json {
            println!("{}", report.json());
        }
        Ok(())
    }
}

pub mod tput {
    //! `homa perf tput`: one client streaming N-byte requests with small responses, keeping a
    //! window of RPCs outstanding, over Homa and over TCP (one connection), beside UDP floors,
    //! in one process over loopback (see `homa_perf::tput`). Throughput counts request bytes.

    use clap::Args;
    use homa_perf::homa::HomaApi;
    use homa_perf::profile::ProfileLane;
    use homa_perf::stats;
    use homa_perf::tally::Tally;
    use homa_perf::tput::{self, TputConfig, TputProto, UdpTally};
    use homa_perf::PerfError;

    use super::HomaSocketArgs;

    /// Arguments of `homa perf tput`.
    #[derive(Debug, Clone, Args)]
    pub struct TputArgs {
        /// Request length, bytes (at most 1,000,000).
        #[arg(long, default_value_t = 1_000_000)]
        pub size: usize,
        /// Measured seconds per transport (after a short warm-up).
        #[arg(allow_negative_numbers = true, long, default_value_t = 5.0)]
        pub seconds: f64,
        /// RPCs kept outstanding (at most 65,536, and at most 4 GiB of requests and
        /// responses: 4,294 of 1 MB).
        #[arg(long, default_value_t = 8)]
        pub window: usize,
        /// Also measure Homa and TCP with this many RPCs outstanding, in slices alternating
        /// with `--window`'s in the same run (the machine's drifts in speed then fall on
        /// both windows alike), and report each lane's ratio between the two.
        #[arg(long)]
        pub and_window: Option<usize>,
        /// Response length, bytes.
        #[arg(long, default_value_t = 100)]
        pub response: usize,
        /// End with one JSON line.
        #[arg(long)]
        pub json: bool,
        /// Which `homa` API the Homa client uses.
        #[arg(long, value_enum, default_value = "blocking")]
        pub homa_api: HomaApi,
        /// Transports to measure (comma-separated; e.g. `--only homa` for profiling).
        /// `udp-batched` and `udp-gso` run only where requests and responses fit in one
        /// datagram.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "homa,tcp,udp,udp-batched,udp-gso"
        )]
        pub only: Vec<TputProto>,
        /// Turn a profiler on during this lane's measured slices only (`homa` or `tcp`, at
        /// `--profile-window`), through `perf record`'s control FIFO (`--perf-ctl`): for
        /// profiles of one lane of an alternating run. See `homa_perf::profile`.
        #[arg(long, value_enum, requires = "perf_ctl")]
        pub profile_lane: Option<TputProto>,
        /// The window of the lane to profile (default: `--window`).
        #[arg(long, requires = "profile_lane")]
        pub profile_window: Option<usize>,
        /// `perf record`'s control FIFO, and optionally its acknowledgement FIFO: `CTL` or
        /// `CTL,ACK`, as given to `perf record -D -1 --control fifo:CTL,ACK`.
        #[arg(long, value_name = "CTL[,ACK]", requires = "profile_lane")]
        pub perf_ctl: Option<String>,
        /// Homa transport and options.
        #[command(flatten)]
        pub homa: HomaSocketArgs,
    }

    /// Runs `homa perf tput`.
    pub fn run(args: &TputArgs) -> Result<(), PerfError> {
        let config = TputConfig {
            size: args.size,
            seconds: args.seconds,
            window: args.window,
            and_window: args.and_window,
            response: args.response,
            homa_api: args.homa_api,
            protos: args.only.clone(),
            options: args.homa.options()?,
            profile: match (args.profile_lane, &args.perf_ctl) {
                (Some(proto), Some(spec)) => {
                    let (ctl, ack) = ProfileLane::fifos(spec)?;
                    Some(ProfileLane {
                        proto,
                        window: args.profile_window.unwrap_or(args.window),
                        ctl,
                        ack,
                    })
                }
                _ => None,
            },
        };
        config.validate()?;
        let schedule = config.schedule();
        let outstanding = match args.and_window {
            Some(w) => format!("{} and {w} outstanding (each)", args.window),
            None => format!("{} outstanding", args.window),
        };
        println!(
            "perf tput: {}-byte requests, {}-byte responses, {outstanding}, {:.1} s per transport over loopback ({} alternating slices)",
            args.size, args.response, schedule.total, schedule.slices
        );
        let report = tput::measure(&config)?;
        for n in &report.notes {
            println!("{n}");
        }
        println!(
            "{:<12} {:>9} {:>10} {:>10} {:>10} {:>11}",
            "proto", "Gbps", "RPCs/s", "p50_us", "p99_us", "cpu_us/RPC"
        );
        let row = |name: &str, r: &Tally| {
            let cpu = r
                .cpu_us_per_rpc()
                .map_or_else(|| "-".to_string(), |c| format!("{c:.2}"));
            println!(
                "{name:<12} {:>9.3} {:>10.0} {:>10.1} {:>10.1} {cpu:>11}",
                r.gbps(),
                r.rps(),
                stats::us(r.hist.value_at_quantile(0.5)),
                stats::us(r.hist.value_at_quantile(0.99)),
            )
        };
        let at = |name: &str, window: usize| match args.and_window {
            Some(_) => format!("{name}@{window}"),
            None => name.to_string(),
        };
        for (name, r) in report.lanes() {
            if let Some(r) = r {
                let name = if matches!(name, "homa" | "tcp") {
                    at(name, args.window)
                } else {
                    name.to_string()
                };
                row(&name, r);
            }
        }
        if let Some(w) = &report.and_window {
            for (name, r) in [("homa", &w.homa), ("tcp", &w.tcp)] {
                if let Some(r) = r {
                    row(&at(name, w.window), r);
                }
            }
        }
        if let Some(udp) = &report.udp {
            println!(
                "{:<12} {:>9.3} {:>10.0} {:>10} {:>10} {:>11}   (datagrams one way, no replies: the floor under Homa over UDP)",
                "udp",
                udp.gbps(),
                udp.received as f64 / args.size as f64 / udp.secs.max(1e-9),
                "-",
                "-",
                "-"
            );
        }
        for (name, r) in report.ratios() {
            if let Some(r) = r {
                println!("{name:<16} {r:>6.2}   (ratio)");
            }
        }
        // Packet types sent, those with a count only.
        let sent = |p: &[(&str, f64)]| {
            p.iter()
                .filter(|(_, n)| *n > 0.0)
                .map(|(t, n)| format!("{t} {n:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(p) = &report.packets {
            println!("homa packets per RPC (both ends): {}", sent(p));
        }
        if let Some(w) = &report.and_window {
            for (name, r) in report.window_ratios() {
                if let Some(r) = r {
                    let ratio = format!("{name}@{}/{name}@{}", w.window, args.window);
                    println!("{ratio:<16} {r:>6.2}   (ratio of Gbps, same run)");
                }
            }
            if let Some(p) = &w.packets {
                println!(
                    "homa packets per RPC at window {} (both ends): {}",
                    w.window,
                    sent(p)
                );
            }
        }
        if let Some(l) = &report.losses {
            let lost: Vec<String> = l.iter().map(|(t, n)| format!("{t} {n:.3}")).collect();
            println!(
                "homa DATA sent again and packets dropped, per RPC (both ends): {}",
                lost.join(", ")
            );
        }
        if report.udp.as_ref().is_some_and(|u| u.lost() > 0.05) {
            println!(
                "warning: udp: {:.0}% of the bytes sent were dropped by a full receive buffer (net.core.rmem_max may be low), so its rate is below the kernel's",
                report.udp.as_ref().map_or(0.0, UdpTally::lost) * 100.0
            );
        }
        for (name, r) in report.lanes() {
            if let Some(r) = r.filter(|r| r.errors > 0) {
                println!(
                    "warning: {name}: {} RPCs failed; first: {}",
                    r.errors,
                    r.first_error.as_deref().unwrap_or("?")
                );
            }
        }
        if args.json {
            println!("{}", report.json());
        }
        Ok(())
    }
}

pub mod grpc;
