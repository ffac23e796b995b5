//! `homa perf client`: open-loop Poisson load against a `homa perf server`, over Homa, TCP
//! or both back to back; per-second lines, a per-length-bucket table, an optional slowdown
//! plot and JSON.
//!
//! Slowdown is a message's RTT divided by the unloaded RTT for its length, measured first in
//! a short calibration phase (RPCs one at a time, median per length, interpolated between
//! lengths). With `--proto both` the yardstick is, per length, the better of the two
//! transports' unloaded RTTs, so their slowdowns compare directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::grpc_load::{GrpcLane, GrpcRpcClient};
use super::homa::{HomaApi, HomaRpcClient, HomaSocketArgs};
use super::load::{self, LoadConfig, LoadResult};
use super::stats::{self, Baseline, BucketRow, Summary};
use super::tcp::TcpRpcClient;
use super::transport::{Proto, ProtoChoice, RpcClient};
use super::workload::{Workload, WorkloadSpec};
use super::{plot, PerfError};

/// Arguments of `homa perf client`.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The perf server (its Homa and TCP port are the same number). Several servers
    /// (repeat the option or separate with commas) share the load: each RPC goes to one
    /// picked at random.
    #[arg(long, required = true, value_delimiter = ',')]
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
    #[arg(long, default_value_t = 1.0)]
    pub gbps: f64,
    /// Seconds of load per transport (0: calibrate only, see --baseline-out).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Transport(s); `both` runs Homa then TCP.
    #[arg(long, value_enum, default_value = "homa")]
    pub proto: ProtoChoice,
    /// Write slowdown vs length (log-log) to this SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// End with one JSON line: {"proto","rpcs","gbps","p50_us","p99_us","p999_us","errors"}
    /// (errors: RPCs that failed); with `--proto both`, {"homa":{..},"tcp":{..}} holding one
    /// such object per transport.
    #[arg(long)]
    pub json: bool,
    /// Responses as long as requests (default: --response-len bytes).
    #[arg(long)]
    pub echo: bool,
    /// Response length when not --echo.
    #[arg(long, default_value_t = 100)]
    pub response_len: usize,
    /// TCP connections to spread RPCs over.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Most RPCs in flight; arrivals beyond are skipped and reported.
    #[arg(long, default_value_t = 1000)]
    pub max_outstanding: usize,
    /// Seed for lengths and arrival times.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Milliseconds of unloaded-RTT calibration per transport (0: none, no slowdowns).
    #[arg(long, default_value_t = 2000)]
    pub calibration_ms: u64,
    /// Which `homa` API the Homa client uses.
    #[arg(long, value_enum, default_value = "blocking")]
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

/// One transport's run: the load result and its unloaded baseline.
#[derive(Debug)]
pub struct ProtoRun {
    /// What the load measured.
    pub result: LoadResult,
    /// Unloaded RTT by length (empty without calibration).
    pub baseline: Baseline,
}

/// How to run one transport (shared with `homa demo`).
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The load.
    pub load: LoadConfig,
    /// TCP connections.
    pub connections: usize,
    /// Calibration budget (zero: none).
    pub calibration: Duration,
    /// Which `homa` API drives the Homa client.
    pub homa_api: HomaApi,
    /// How the Homa client's socket is opened.
    pub homa_options: homa::Options,
    /// Skip the load (calibration only).
    pub calibrate_only: bool,
}

async fn run_with<C: RpcClient>(
    proto: Proto,
    client: Arc<C>,
    plan: &RunPlan,
) -> Result<ProtoRun, PerfError> {
    let baseline = if plan.calibration.is_zero() {
        Baseline::default()
    } else {
        load::calibrate(
            &*client,
            &load::calibration_lengths(&plan.load.workload),
            plan.load.response_len,
            31,
            plan.calibration,
        )
        .await
        .map_err(|source| PerfError::Io {
            what: format!("{} calibration RPC", proto.name()),
            source,
        })?
    };
    let result = if plan.calibrate_only {
        LoadResult::empty(proto.name())
    } else {
        load::run_load(proto.name(), client, &plan.load).await
    };
    Ok(ProtoRun { result, baseline })
}

/// Calibrates and runs the load of `plan` over `proto` against `servers` (calibration
/// against the first).
pub async fn run_proto(
    proto: Proto,
    servers: &[SocketAddr],
    plan: &RunPlan,
) -> Result<ProtoRun, PerfError> {
    match proto {
        Proto::Homa => {
            let client = Arc::new(
                HomaRpcClient::bind_with(servers, plan.homa_api, plan.homa_options.clone()).await?,
            );
            run_with(proto, client, plan).await
        }
        Proto::Tcp => {
            let client = Arc::new(
                TcpRpcClient::connect(servers, plan.connections)
                    .await
                    .map_err(|source| PerfError::Io {
                        what: format!("cannot connect to TCP perf server(s) at {servers:?}"),
                        source,
                    })?,
            );
            run_with(proto, client, plan).await
        }
        Proto::GrpcHoma | Proto::GrpcH2 => {
            let lane = if proto == Proto::GrpcHoma {
                GrpcLane::Homa
            } else {
                GrpcLane::H2
            };
            let client =
                Arc::new(GrpcRpcClient::connect(servers, lane, plan.homa_options.clone()).await?);
            run_with(proto, client, plan).await
        }
    }
}

/// The slowdown yardstick for several runs: the per-length best unloaded RTT.
pub fn common_baseline(runs: &[ProtoRun]) -> Baseline {
    let all: Vec<&Baseline> = runs.iter().map(|r| &r.baseline).collect();
    Baseline::best_of(&all)
}

/// A tokio runtime for load generation (two workers: the machine may have only two cores).
pub fn runtime() -> Result<tokio::runtime::Runtime, PerfError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| PerfError::Io {
            what: "tokio runtime".into(),
            source,
        })
}

/// Runs `homa perf client`.
pub fn run(args: &ClientArgs) -> Result<(), PerfError> {
    if !(args.gbps > 0.0 && args.gbps.is_finite()) {
        return Err(PerfError::BadRate(args.gbps));
    }
    let workload = Arc::new(Workload::load(
        &args.workload,
        args.workload_dir.as_deref(),
    )?);
    println!("{}", workload.describe());
    let plan = RunPlan {
        load: LoadConfig {
            workload: workload.clone(),
            gbps: args.gbps,
            duration: Duration::from_secs_f64(args.seconds.max(0.1)),
            response_len: if args.echo {
                None
            } else {
                Some(args.response_len)
            },
            max_outstanding: args.max_outstanding.max(1),
            seed: args.seed,
            per_second_lines: true,
            progress: true,
        },
        connections: args.connections.max(1),
        calibration: Duration::from_millis(args.calibration_ms),
        homa_api: args.homa_api,
        homa_options: args.homa.options()?,
        calibrate_only: args.seconds <= 0.0,
    };
    println!(
        "offered load {:.3} Gbps of requests ({:.0} RPC/s, mean gap {:.1} us), responses {}, {:.1} s per transport",
        args.gbps,
        args.gbps * 1e9 / 8.0 / workload.mean_clamped(),
        workload.mean_clamped() * 8.0 / args.gbps / 1e3,
        if args.echo { "echo the request length".to_string() } else { format!("{} B", args.response_len) },
        plan.load.duration.as_secs_f64(),
    );
    let rt = runtime()?;
    let mut runs = Vec::new();
    let servers = args
        .server
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    for &proto in args.proto.protos() {
        println!("--- {} to {servers} ---", proto.name());
        runs.push(rt.block_on(run_proto(proto, &args.server, &plan))?);
    }
    if let Some(path) = &args.baseline_out {
        write_baselines(path, &runs)?;
    }
    if let Some(path) = &args.samples_out {
        write_samples(path, &runs)?;
    }
    if plan.calibrate_only {
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
        for w in run.result.warnings() {
            println!("warning: {w}");
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
        let summaries: Vec<Summary> = runs.iter().map(|r| r.result.summary().to_json()).collect();
        let line = if let [only] = summaries.as_slice() {
            serde_json::to_string(only)
        } else {
            let by_proto: BTreeMap<&str, &Summary> =
                summaries.iter().map(|s| (s.proto, s)).collect();
            serde_json::to_string(&by_proto)
        };
        println!("{}", line.expect("a summary serializes"));
    }
    Ok(())
}

fn write_file(path: &std::path::Path, text: &str) -> Result<(), PerfError> {
    std::fs::write(path, text).map_err(|source| PerfError::Io {
        what: format!("cannot write {}", path.display()),
        source,
    })
}

/// `--baseline-out`: each transport's calibration points as JSON.
fn write_baselines(path: &std::path::Path, runs: &[ProtoRun]) -> Result<(), PerfError> {
    let mut j = json!({});
    for r in runs {
        j[r.result.proto] = json!(r.baseline.points());
    }
    write_file(path, &format!("{j}\n"))
}

/// `--samples-out`: one line per completed RPC.
fn write_samples(path: &std::path::Path, runs: &[ProtoRun]) -> Result<(), PerfError> {
    use std::fmt::Write as _;
    let mut text = String::new();
    for r in runs {
        for (len, ns) in &r.result.samples {
            let _ = writeln!(text, "{} {len} {ns}", r.result.proto);
        }
    }
    write_file(path, &text)
}
