//! What one lane of a throughput run achieved, summed over its measured slices.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::stats;

/// What one transport achieved over its slices.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Request bytes of RPCs completed inside measured slices.
    pub bytes: u64,
    /// Those RPCs.
    pub rpcs: u64,
    /// Their RTTs, ns.
    pub hist: Histogram<u64>,
    /// Measured seconds.
    pub secs: f64,
    /// RPCs that failed (the stream goes on without them).
    pub errors: u64,
    /// The first failure and the transport's counters then.
    pub first_error: Option<String>,
    /// CPU time of the whole process (user and system) over the measured slices.
    pub cpu: Duration,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            bytes: 0,
            rpcs: 0,
            hist: stats::new_hist(),
            secs: 0.0,
            errors: 0,
            first_error: None,
            cpu: Duration::ZERO,
        }
    }
}

impl Tally {
    /// Request Gbit/s.
    pub fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.secs.max(1e-9) / 1e9
    }
    /// Completed RPCs per second.
    pub fn rps(&self) -> f64 {
        self.rpcs as f64 / self.secs.max(1e-9)
    }
    /// Microseconds of process CPU per completed RPC.
    pub fn cpu_us_per_rpc(&self) -> Option<f64> {
        (self.rpcs > 0).then(|| self.cpu.as_secs_f64() * 1e6 / self.rpcs as f64)
    }
    /// Counts one RPC completed inside a measured slice: `bytes` of request, after `rtt`.
    pub fn completed(&mut self, bytes: usize, rtt: Duration) {
        self.rpcs += 1;
        self.bytes += bytes as u64;
        stats::record(&mut self.hist, rtt.as_nanos() as u64);
    }
    /// Counts `n` failed RPCs; `why` describes them if they are the first.
    pub fn failed(&mut self, n: u64, why: impl FnOnce() -> String) {
        self.errors += n;
        self.first_error.get_or_insert_with(why);
    }
    /// Adds another slice's results.
    pub fn add(&mut self, other: Tally) {
        self.cpu += other.cpu;
        self.bytes += other.bytes;
        self.rpcs += other.rpcs;
        self.hist.add(&other.hist).expect("same histogram bounds");
        self.secs += other.secs;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}
