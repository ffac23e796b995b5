//! A discrete-event datacenter simulator that runs the unmodified Homa engine.
//!
//! Every simulated host runs one [`homa_core::Endpoint`], driven through exactly the
//! interface the real runtime uses (`send_request`, `reply`, `release`, `handle_datagram`,
//! `handle_timeout`, `poll_transmit`, `poll_timeout`, `poll_event`), on virtual time. The
//! network is the Homa SIGCOMM 2018 paper's by default ([`Topology::paper`]): 144 hosts
//! in 9 racks, 10 Gbps host links, 40 Gbps links from every ToR to 4 aggregation switches
//! with packet spraying, switch output ports with 8 strict-priority queues,
//! store-and-forward. Messages follow the papers' workloads W1..W5 ([`Workload`]) with
//! Poisson arrivals at a target load and uniform random destinations, and each message's
//! *slowdown* (its completion time over the best possible time for its length in an empty
//! network, [`Topology::ideal_ns`]) is reported by length bucket ([`Report`]).
//!
//! The same seed gives byte-identical results.
//!
//! [`SimConfig::new`] models the paper's network running the engine as the Linux module
//! does; [`SimConfig::paper`] reproduces the paper's measurement instead (its host delays,
//! ideal, load definition and size bins, one-way messages of every length, arrivals
//! stopped at the end and every message run to completion ([`Drain::StopArrivals`]), the
//! engine set as its simulator's Homa: see [`paper`]).
//!
//! ```
//! use homa_sim::{run, SimConfig, Topology, Workload};
//!
//! // 8 hosts on one switch, W1 at 50% load, 1 ms of arrivals.
//! let workload = Workload::builtin("w1", 1_000_000).unwrap();
//! let mut cfg = SimConfig::new(Topology::single_switch(8), workload, 0.5);
//! cfg.duration_ns = 1_000_000;
//! let report = run(cfg, &mut |_now, _end| {}).unwrap();
//! assert!(report.measured > 1000);
//! assert_eq!(report.duplicates, 0);
//! assert!(report.min_slowdown >= 1.0);
//! assert!(report.p99_short < 10.0);
//! println!("{}", report.table());
//! println!("{}", report.json_line());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
pub mod paper;
mod plot;
mod queue;
mod report;
mod sim;
mod switch;
mod topology;
mod workload;

/// The engine crate, for its `Config`.
pub use homa_core;

pub use config::{
    paper_engine_config, paper_mode_engine_config, paper_mode_engine_config_without, Drain, Ideal,
    LoadDefinition, Mode, SimConfig, Variant, PAPER_DRAIN_LIMIT,
};
pub use plot::{plot_svg, PlotError};
pub use report::{
    paper_histogram_percentile, percentile, Bucket, EngineTotals, Report, TimelinePoint, BUCKETS,
    PAPER_HIST_CELLS, PAPER_HIST_FIRST_VALUES,
};
pub use sim::{
    host_ip, Counters, Delivery, Message, PortKind, Simulation, Snapshot, NOT_DONE, SERVER_PORT,
};
pub use topology::{
    serialization_ns, wire_bytes, Segmentation, Topology, ETHERNET_MIN_PAYLOAD, ETHERNET_OVERHEAD,
    IP_UDP_OVERHEAD, MAX_HOSTS, MTU, PAPER_IP_OVERHEAD,
};
pub use workload::Workload;

/// Why a simulation could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// The topology is inconsistent.
    #[error("topology: {0}")]
    Topology(String),
    /// A workload could not be found or parsed.
    #[error("workload: {0}")]
    Workload(String),
    /// The scenario or the engine configuration is inconsistent.
    #[error("config: {0}")]
    Config(String),
}

/// Run a scenario to the end and gather its [`Report`]; `progress(now_ns, end_ns)` is
/// called now and then.
pub fn run(cfg: SimConfig, progress: &mut dyn FnMut(u64, u64)) -> Result<Report, SimError> {
    let mut sim = Simulation::new(cfg)?;
    let start = std::time::Instant::now();
    let cpu0 = thread_cpu_ns();
    sim.run(progress);
    let wall = start.elapsed().as_secs_f64();
    let cpu = match (cpu0, thread_cpu_ns()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e9),
        _ => None,
    };
    let mut report = Report::from_sim(&sim, wall);
    report.cpu_secs = cpu;
    Ok(report)
}

/// CPU time this thread has used, nanoseconds (Linux: /proc/thread-self/schedstat), so
/// the speed reported does not depend on what else the machine is running.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Run `base` once per [`Variant`] (full Homa first), same seed and so the same arrivals.
/// `progress(variant_index, now_ns, end_ns)`.
pub fn compare(
    base: &SimConfig,
    progress: &mut dyn FnMut(usize, u64, u64),
) -> Result<Vec<(Variant, Report)>, SimError> {
    Variant::ALL
        .iter()
        .enumerate()
        .map(|(i, &v)| Ok((v, run(v.apply(base), &mut |n, e| progress(i, n, e))?)))
        .collect()
}

/// The `--compare` table: short-message and overall slowdowns per variant.
pub fn compare_table(results: &[(Variant, Report)]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<14} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "variant", "P50 short", "P99 short", "P50 all", "P99 all", "carried", "unfin."
    );
    for (v, r) in results {
        let _ = writeln!(
            s,
            "{:<14} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>8.3} {:>8}",
            v.name(),
            r.p50_short,
            r.p99_short,
            r.p50_all,
            r.p99_all,
            r.utilization,
            r.unfinished
        );
    }
    s
}
