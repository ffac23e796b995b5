//! A small datacenter on one Linux machine: hosts in network namespaces behind one
//! emulated switch with rate-limited, 8-priority ports and optional random loss ([`net`]),
//! for running Homa (and TCP) across a real bottleneck; and the benchmark that runs Homa
//! against TCP across it ([`bench`](mod@bench)), as `homa testbed` and `homa demo` do.
//!
//! Building a testbed needs root, or a user namespace of its own ([`userns`]: the program
//! re-runs itself as a child that is root inside one). The bench starts `homa perf server`
//! and `homa perf client` processes in the hosts: [`bench::BenchConfig::homa`] names the
//! `homa` program to run (the `homa` command passes itself).
//!
//! # Example
//!
//! Two hosts behind a 1 Gbit/s switch, a UDP datagram from one to the other, and the
//! switch's counters:
//!
//! ```no_run
//! use std::net::UdpSocket;
//! use homa_testbed::net::{Testbed, TestbedConfig};
//!
//! let tb = Testbed::create(TestbedConfig { hosts: 2, ..TestbedConfig::default() })?;
//! let to = (tb.host_ip(1), 9000);
//! // Sockets belong to the namespace they are made in, whichever thread uses them.
//! let rx = tb.in_host(1, move || UdpSocket::bind(to))?.join().expect("bind")?;
//! tb.in_host(0, move || UdpSocket::bind("0.0.0.0:0")?.send_to(b"hello", to))?
//!     .join()
//!     .expect("send")?;
//! let mut buf = [0u8; 16];
//! assert_eq!(rx.recv(&mut buf)?, 5);
//! println!("{:?}", tb.link_stats()?[1].total());
//! tb.teardown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
// Unsafe code only where the kernel offers no other way: `net/offloads.rs` (ioctls).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod capacity;
pub mod cost;
pub mod leftovers;
pub mod net;
mod tally;
pub mod userns;
