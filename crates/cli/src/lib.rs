//! Library behind the `homa` command.
//!
//! Each subcommand lives in its own module with a clap `Args` struct and a `run` function;
//! `main.rs` only parses the command line and dispatches, so the logic can be tested (and
//! reused) without spawning the binary.
//!
//! The work is done by library crates: the capture decoder is `homa-dump`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chaos;
pub mod demo;
pub mod dump;
pub mod metrics;
pub mod perf;
pub mod sim;
pub mod testbed;
