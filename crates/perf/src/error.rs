//! [`PerfError`]: why a measurement failed, shared by every module of the crate.

use std::path::PathBuf;

use crate::workload::WorkloadError;

/// Why a measurement (or a perf server) failed.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    /// The workload could not be loaded.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
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
    /// The lane to profile, or the profiler's FIFOs, cannot be used.
    #[error("profiling: {0}")]
    BadProfile(String),
}
