//! Library behind the `homa` command.
//!
//! Each subcommand lives in its own module with a clap `Args` struct and a `run` function;
//! `main.rs` only parses the command line and dispatches, so the logic can be tested (and
//! reused) without spawning the binary.
//!
//! ```
//! use homa_cli::dump;
//!
//! // A NEED_ACK as the Linux module sends it (captures README, short.pcap #4).
//! let bytes = dump::parse_hex(
//!     "0000  0f a0 9c 40 00 00 00 00 00 00 00 17 50 06 00 00\n\
//!      0010  30 e4 b9 7d 00 00 00 00 00 00 03 e9",
//! )
//! .unwrap();
//! let record = dump::decode_packet(&bytes, homa_wire::HOMA_MAX_MESSAGE_LENGTH);
//! let json = record.to_json();
//! assert_eq!(json["type"], "NEED_ACK");
//! assert_eq!(json["sender_id"], 1001);
//! assert_eq!(record.to_text(), "4000 > 40000: NEED_ACK id=1001");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chaos;
pub mod demo;
pub mod dump;
pub mod metrics;
pub mod perf;
pub mod sim;
pub mod testbed;
