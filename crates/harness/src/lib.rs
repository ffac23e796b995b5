//! A deterministic, in-memory network for the Homa engine, and the chaos workload.
//!
//! - [`Harness`]: N [`homa_core::Endpoint`]s on a virtual clock, one address each
//!   (10.0.0.1, 10.0.0.2, ...), links with latency and rate (a FIFO egress queue per host),
//!   and fault knobs ([`NetConfig`]): loss, duplication, reordering, corruption (dropped as
//!   by the UDP checksum) and junk datagrams. Hosts can be killed and restarted. Everything
//!   random comes from one seed, so a run is reproducible from it.
//! - [`run_chaos`]: every host is client and server; RPCs of random sizes go to random
//!   peers; servers answer with bytes derived from the request; every response is checked
//!   byte for byte and every execution counted ([`ChaosReport`]).
//! - [`Checker`]: grant invariants checked from the wire (granted <= length, SRPT rank
//!   with bounded overcommit, `max_incoming`).
//!
//! ```
//! use homa_harness::{run_chaos, ChaosConfig, Sizes};
//!
//! let cfg = ChaosConfig {
//!     rpcs: 200,
//!     endpoints: 4,
//!     size: Sizes::Fixed(3_000),
//!     loss: 0.05,
//!     seed: 42,
//!     ..ChaosConfig::default()
//! };
//! let report = run_chaos(&cfg, &mut |_| {});
//! assert!(report.passed(), "seed {}: {:?}", cfg.seed, report.result);
//! assert_eq!(report.result.completed, 200);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod chaos;
pub mod check;
mod net;
pub mod payload;
mod sizes;
mod swarm;
mod trace;
pub mod workloads;

pub use chaos::{
    run_chaos, ChaosConfig, ChaosReport, ChaosResult, EngineTotals, KillReport, OneWayReport,
    Progress, SERVER_PORT,
};
pub use check::{CheckReport, Checker};
pub use net::{
    host_index, host_ip, App, Harness, HarnessConfig, Input, NetConfig, NetStats, RunStatus,
};
pub use sizes::{Sizes, SizesError, MAX_LENGTH};
pub use swarm::{swarm_passed, SwarmCase, DEFAULT_BUDGET_BYTES};
pub use trace::TraceHash;
