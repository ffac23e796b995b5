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
    /// A load run that ran to its end with some RPCs failed: what completed was
    /// measured (and printed), but the run is not clean.
    #[error("{proto}: {errors} of {total} RPCs failed (the first failure is above)")]
    SomeFailed {
        /// The transport.
        proto: &'static str,
        /// RPCs that failed.
        errors: u64,
        /// RPCs that completed or failed.
        total: u64,
    },
    /// Ctrl-C or SIGTERM ended the load before its planned end (what it measured was
    /// reported).
    #[error("interrupted: the load ended early (measured until then, above)")]
    Interrupted,
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
    /// A duration where 0 has a meaning of its own is negative (or not a number).
    #[error("{what} must be 0 or more, got {value}")]
    Negative {
        /// Which argument.
        what: &'static str,
        /// The value.
        value: f64,
    },
    /// More RPCs outstanding than a benchmark keeps ([`outstanding_arg`]).
    #[error(
        "{what} of {value} is more than {max}, the most RPCs a benchmark keeps outstanding \
         with messages of {size} bytes (at most {MAX_OUTSTANDING} RPCs, and 4 GiB of \
         messages)"
    )]
    TooMany {
        /// Which argument.
        what: &'static str,
        /// The value.
        value: usize,
        /// The most allowed with these messages.
        max: usize,
        /// The longest message each RPC holds, bytes.
        size: usize,
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
        return Err(match zero_ok {
            true => PerfError::Negative { what, value },
            false => PerfError::NotPositive { what, value },
        });
    }
    if value > MAX_SECONDS {
        return Err(PerfError::TooLong { what, value });
    }
    Ok(std::time::Duration::from_secs_f64(value))
}

/// Most RPCs a benchmark keeps outstanding (`--window`, `--concurrency`).
pub const MAX_OUTSTANDING: usize = 65_536;

/// Most bytes of messages a benchmark's outstanding RPCs may hold: each holds its own
/// buffer of up to the longest message, and a window of a million 1 MB requests would
/// exhaust the machine's memory before it measured anything.
pub const MAX_OUTSTANDING_BYTES: usize = 4 << 30;

/// Checks an outstanding-RPCs argument (`--window`, `--concurrency`): at least 1, at most
/// [`MAX_OUTSTANDING`], and holding at most [`MAX_OUTSTANDING_BYTES`] of messages of up to
/// `size` bytes each.
pub fn outstanding_arg(what: &'static str, value: usize, size: usize) -> Result<(), PerfError> {
    if value == 0 {
        return Err(PerfError::Zero { what });
    }
    let max = MAX_OUTSTANDING
        .min(MAX_OUTSTANDING_BYTES / size.max(1))
        .max(1);
    if value > max {
        return Err(PerfError::TooMany {
            what,
            value,
            max,
            size,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outstanding_rpcs_are_bounded_by_count_and_by_memory() {
        assert!(outstanding_arg("--window", 64, 1_000_000).is_ok());
        assert!(outstanding_arg("--window", MAX_OUTSTANDING, 100).is_ok());
        assert!(matches!(
            outstanding_arg("--window", 0, 100),
            Err(PerfError::Zero { what: "--window" })
        ));
        let e = outstanding_arg("--window", MAX_OUTSTANDING + 1, 100).unwrap_err();
        assert!(
            matches!(
                e,
                PerfError::TooMany {
                    max: MAX_OUTSTANDING,
                    ..
                }
            ),
            "{e}"
        );
        // 1 MB messages: 4,294 of them fill the 4 GiB.
        let e = outstanding_arg("--concurrency", 5_000, 1_000_000).unwrap_err();
        assert!(matches!(e, PerfError::TooMany { max: 4_294, .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("--concurrency of 5000 is more than 4294"),
            "{e}"
        );
        assert!(outstanding_arg("--concurrency", 4_294, 1_000_000).is_ok());
    }

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
        let e = seconds_arg("--seconds", -1.0, true).unwrap_err();
        assert!(matches!(e, PerfError::Negative { .. }), "{e}");
        assert_eq!(e.to_string(), "--seconds must be 0 or more, got -1");
        for bad in [1e20, f64::INFINITY] {
            let e = seconds_arg("--seconds", bad, true).unwrap_err();
            assert!(matches!(e, PerfError::TooLong { .. }), "{bad}");
            assert!(e.to_string().contains("a year"), "{e}");
        }
    }
}
