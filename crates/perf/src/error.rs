//! [`PerfError`]: why a measurement failed, shared by every module of the crate.

use std::path::PathBuf;

use crate::workload::WorkloadError;

/// Why a measurement (or a perf server) failed.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    /// The workload could not be loaded.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// An output file named on the command line cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    Unwritable {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
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
    /// The Homa configuration file (`--homa-config`) cannot be read or is not valid.
    #[error("cannot use --homa-config {path}: {reason}")]
    HomaConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
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
    #[error("{what} of {len} bytes is out of range ({min} to {max})")]
    BadLength {
        /// Which argument.
        what: &'static str,
        /// The value.
        len: usize,
        /// The shortest length the measurement can carry.
        min: usize,
        /// The longest.
        max: usize,
    },
    /// A load run in which RPCs failed and none completed: nothing was measured.
    #[error("{proto}: none of its RPCs completed ({errors} failed; the first failure is above)")]
    NoneCompleted {
        /// The transport.
        proto: &'static str,
        /// RPCs that failed.
        errors: u64,
    },
    /// The arguments leave nothing to measure.
    #[error("nothing to measure: {0}")]
    NothingToMeasure(String),
    /// A count argument (RPCs outstanding, say) is zero.
    #[error("{what} must be at least 1")]
    Zero {
        /// Which argument.
        what: &'static str,
    },
    /// A rate or a duration is not a positive number.
    #[error("{what} must be a positive number, got {value}")]
    NotPositive {
        /// Which argument.
        what: &'static str,
        /// The value.
        value: f64,
    },
    /// The lane to profile, or the profiler's FIFOs, cannot be used.
    #[error("profiling: {0}")]
    BadProfile(String),
}
