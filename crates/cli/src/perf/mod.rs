//! `homa perf`: benchmarks of Homa against TCP (and a raw UDP floor) over real sockets.
//!
//! - `server`: answers perf requests over Homa and TCP; `/metrics` over HTTP.
//! - `client`: open-loop Poisson load from a workload CDF (like the Linux module's
//!   `cp_node`), per-second lines, a per-length-bucket table, `--plot`, `--json`.
//! - `rtt`: one RPC at a time over Homa, TCP and UDP, in one process.
//! - `tput`: one client streaming large requests over Homa and TCP, in one process.
//! - `grpc`: a unary gRPC echo through tonic over Homa and over HTTP/2, in one process.
//!
//! Requests carry a 16-byte header saying how long the response must be ([`header`]); TCP
//! carries messages as length-prefixed frames ([`tcp`]). Homa and TCP clients implement one
//! trait ([`transport::RpcClient`]), so both run the same load generator ([`load`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

pub mod client;
pub mod counters;
pub mod grpc;
pub mod grpc_load;
pub mod header;
pub mod homa;
pub mod load;
pub mod plot;
pub mod rtt;
pub mod server;
pub mod stats;
pub mod tally;
pub mod tcp;
pub mod tput;
pub mod transport;
pub mod udp_echo;
pub mod workload;

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

/// Why a perf command failed.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    /// The workload could not be loaded.
    #[error(transparent)]
    Workload(#[from] workload::WorkloadError),
    /// A socket or thread operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// This build has no Homa runtime.
    #[error("Homa is not available in this build (the runtime crate is missing); use --proto tcp")]
    HomaUnavailable,
    /// The Homa runtime refused an operation.
    #[error("Homa: {what}: {reason}")]
    Homa {
        /// What was being done.
        what: String,
        /// The runtime's error.
        reason: String,
    },
    /// A gRPC call (or the setup of a gRPC lane) failed.
    #[error("gRPC: {what}: {reason}")]
    Grpc {
        /// What was being done.
        what: String,
        /// The status or error.
        reason: String,
    },
    /// The plot could not be drawn.
    #[error("cannot write plot {path}: {reason}")]
    Plot {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A length argument is out of range.
    #[error("{what} of {len} bytes is out of range (1 to 1000000)")]
    BadLength {
        /// Which argument.
        what: &'static str,
        /// The value.
        len: usize,
    },
    /// `--gbps` is not a positive number.
    #[error("--gbps must be a positive number, got {0}")]
    BadRate(f64),
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
            ExitCode::FAILURE
        }
    }
}
