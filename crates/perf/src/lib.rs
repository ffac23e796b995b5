//! Benchmarks of Homa against TCP (and raw UDP floors) over real sockets: the load
//! generators and statistics behind `homa perf` and `homa demo`, usable from other
//! programs.
//!
//! - [`server`]: a perf server answering over Homa, TCP and gRPC, with metrics over HTTP.
//! - [`client`], [`load`]: open-loop Poisson load from a workload CDF (like the Linux
//!   module's `cp_node`) after a calibration of the unloaded RTT; [`stats`]: RTT and
//!   slowdown by message length; [`plot`]: slowdown against length as SVG.
//! - [`rtt`]: one RPC at a time over Homa, TCP and UDP, in one process.
//! - [`tput`]: a window of RPCs streaming over Homa and TCP, beside UDP floors.
//! - [`grpc`]: a unary gRPC echo through tonic over Homa and over HTTP/2.
//! - [`scrape`]: reading a process's metrics endpoint, and rates between two samples.
//!
//! Requests carry a 16-byte header saying how long the response must be ([`header`]); TCP
//! carries messages as length-prefixed frames ([`tcp`]). Homa and TCP clients implement one
//! trait ([`transport::RpcClient`]), so both run the same load generator ([`load`]).
//!
//! # Example
//!
//! Round trips of 100-byte RPCs over TCP and over Homa (UDP), on loopback:
//!
//! ```
//! use homa_perf::rtt::{measure, RttConfig, RttProto};
//!
//! let report = measure(&RttConfig {
//!     size: 100,
//!     count: 200,
//!     warmup: 20,
//!     protos: vec![RttProto::Tcp, RttProto::Homa],
//!     options: homa::Options::default(),
//! })
//! .unwrap();
//! let homa = report.get("homa").unwrap();
//! assert!(homa.p50_us > 0.0 && homa.p50_us <= homa.p99_us);
//! assert_eq!(report.json()["udp"], serde_json::Value::Null);
//! ```
//!
//! With the `clap` feature, the enums that name transports and APIs derive
//! `clap::ValueEnum`, as the `homa` command uses them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod counters;
pub mod error;
pub mod grpc;
pub mod grpc_load;
pub mod header;
pub mod homa;
pub mod load;
pub mod plot;
pub mod profile;
pub mod rtt;
pub mod scrape;
pub mod server;
pub mod stats;
pub mod tally;
pub mod tcp;
pub mod tput;
pub mod transport;
pub mod udp_echo;
pub mod workload;

pub use error::{
    outstanding_arg, seconds_arg, PerfError, MAX_OUTSTANDING, MAX_OUTSTANDING_BYTES, MAX_SECONDS,
};
