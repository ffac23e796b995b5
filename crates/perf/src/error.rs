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
    /// A duration is longer than any run can be ([`MAX_SECONDS`]).
    #[error("{what} of {value} s is longer than a run may be (at most {MAX_SECONDS} s, a year)")]
    TooLong {
        /// Which argument.
        what: &'static str,
        /// The value.
        value: f64,
    },
    /// The lane to profile, or `--perf-ctl`, is not one the run can use (an argument
    /// error).
    #[error("profiling: {0}")]
    BadProfile(String),
}

/// The longest run a duration argument may ask for: a year (much longer ones cannot even
/// be added to a clock reading).
pub const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// A duration argument (`--seconds`) as a `Duration`: a positive number of seconds, or 0
/// too where `zero_ok`, at most [`MAX_SECONDS`].
pub fn seconds_arg(
    what: &'static str,
    value: f64,
    zero_ok: bool,
) -> Result<std::time::Duration, PerfError> {
    if !(value > 0.0 || (zero_ok && value == 0.0)) || value.is_nan() {
        return Err(PerfError::NotPositive { what, value });
    }
    if value > MAX_SECONDS {
        return Err(PerfError::TooLong { what, value });
    }
    Ok(std::time::Duration::from_secs_f64(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_positive_and_at_most_a_year() {
        assert_eq!(
            seconds_arg("--seconds", 1.5, false).unwrap(),
            std::time::Duration::from_millis(1500)
        );
        assert!(seconds_arg("--seconds", 0.0, true).unwrap().is_zero());
        for bad in [0.0, -3.0, f64::NAN, f64::NEG_INFINITY] {
            assert!(
                matches!(
                    seconds_arg("--seconds", bad, false),
                    Err(PerfError::NotPositive { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            seconds_arg("--seconds", -1.0, true),
            Err(PerfError::NotPositive { .. })
        ));
        for bad in [1e20, f64::INFINITY] {
            let e = seconds_arg("--seconds", bad, true).unwrap_err();
            assert!(matches!(e, PerfError::TooLong { .. }), "{bad}");
            assert!(e.to_string().contains("a year"), "{e}");
        }
    }
}
