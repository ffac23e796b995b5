//! The client of `homa perf client` and `homa demo`: open-loop Poisson load against perf
//! servers, over one transport at a time, after a calibration of the unloaded RTT; and the
//! files its results are kept in.
//!
//! Slowdown is a message's RTT divided by the unloaded RTT for its length, measured first in
//! a short calibration phase (RPCs one at a time, median per length, interpolated between
//! lengths). With `--proto both` the yardstick is, per length, the better of the two
//! transports' unloaded RTTs, so their slowdowns compare directly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::error::PerfError;
use crate::grpc_load::{GrpcLane, GrpcRpcClient};
use crate::homa::{HomaApi, HomaRpcClient};
use crate::load::{self, LoadConfig, LoadResult};
use crate::stats::Baseline;
use crate::tcp::TcpRpcClient;
use crate::transport::{Proto, RpcClient};

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
    let mut result = if plan.calibrate_only {
        LoadResult::empty(proto.name())
    } else {
        load::run_load(proto.name(), client.clone(), &plan.load).await
    };
    result.homa_packets = client
        .homa_metrics()
        .map(|m| crate::homa::packet_counts(&m, client.homa_io()));
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

fn write_file(path: &std::path::Path, text: &str) -> Result<(), PerfError> {
    std::fs::write(path, text).map_err(|source| PerfError::Io {
        what: format!("cannot write {}", path.display()),
        source,
    })
}

/// Writes each transport's calibration points to `path` as JSON
/// `{"<proto>":[[length, RTT ns], ..]}` (`homa perf client --baseline-out`).
pub fn write_baselines(path: &std::path::Path, runs: &[ProtoRun]) -> Result<(), PerfError> {
    write_file(path, &format!("{}\n", baselines_json(runs)))
}

/// The unloaded-RTT calibration of each run as JSON: `{"<proto>":[[length, RTT ns], ..]}`.
pub fn baselines_json(runs: &[ProtoRun]) -> serde_json::Value {
    let mut j = json!({});
    for r in runs {
        j[r.result.proto] = json!(r.baseline.points());
    }
    j
}

/// Writes every completed RPC to `path` as a line `<proto> <request length> <RTT ns>`
/// (`homa perf client --samples-out`).
pub fn write_samples(path: &std::path::Path, runs: &[ProtoRun]) -> Result<(), PerfError> {
    use std::fmt::Write as _;
    let mut text = String::new();
    for r in runs {
        for (len, ns) in &r.result.samples {
            let _ = writeln!(text, "{} {len} {ns}", r.result.proto);
        }
    }
    write_file(path, &text)
}
