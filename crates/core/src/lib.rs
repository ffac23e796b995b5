//! The Homa protocol engine, sans IO.
//!
//! An [`Endpoint`] holds everything one host knows: sockets (ports), peers, RPCs, the
//! grant scheduler (receiver side), the SRPT sender with its pacer, and the timers. It
//! never reads a clock, touches a socket or spawns a thread: time comes in as an argument
//! and packets go out through [`Endpoint::poll_transmit`]. The same code runs under the
//! real runtime, the in-memory test harness and the datacenter simulator.
//!
//! ```
//! use homa_core::{Config, Endpoint, Event, Time};
//! use std::net::{IpAddr, Ipv4Addr, SocketAddr};
//!
//! let (a, b) = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
//! let mut client = Endpoint::new(Config::default()).unwrap();
//! let mut server = Endpoint::new(Config::default()).unwrap();
//! let cport = client.bind(0).unwrap();
//! server.bind(99).unwrap();
//! let now = Time::ZERO;
//! let id = client.send_request(now, cport, SocketAddr::new(b, 99), b"ping".to_vec(), 7, false).unwrap();
//!
//! // Carry packets both ways until the exchange settles.
//! let mut buf = vec![0u8; client.max_packet_len()];
//! for _ in 0..4 {
//!     while let Some(t) = client.poll_transmit(now, &mut buf) {
//!         server.handle_datagram(now, a, &buf[..t.len]);
//!     }
//!     while let Some(ev) = server.poll_event() {
//!         if let Event::Request { port, id, peer, data } = ev {
//!             assert_eq!(data, b"ping");
//!             server.reply(now, port, peer, id, b"pong".to_vec()).unwrap();
//!         }
//!     }
//!     while let Some(t) = server.poll_transmit(now, &mut buf) {
//!         client.handle_datagram(now, b, &buf[..t.len]);
//!     }
//! }
//! match client.poll_event() {
//!     Some(Event::Response { id: got, cookie: 7, data, .. }) => {
//!         assert_eq!(got, id);
//!         assert_eq!(data, b"pong");
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```
//!
//! # Driving an endpoint over real sockets
//!
//! The example above carries packets by hand. A driver over UDP (what the `homa` crate's
//! runtime does) loops over four things, in any order, and sleeps until the earliest of
//! a datagram and [`Endpoint::poll_timeout`]:
//!
//! - **Input.** Each received datagram goes to [`Endpoint::handle_datagram`] with its
//!   source address. Receive into buffers of 65,535 bytes, or detect truncation
//!   (`MSG_TRUNC`) and drop the datagram: a Homa header does not give the packet's
//!   length, so a truncated DATA packet would be taken for a shorter one. A peer's
//!   packets may be as long as its own MTU allows (64 KB on loopback). Bracket a batch of
//!   datagrams read together with [`Endpoint::begin_batch`] and [`Endpoint::end_batch`]
//!   for one grant decision per batch (optional).
//! - **Output.** Call [`Endpoint::poll_transmit`] (or [`Endpoint::poll_transmit_parts`],
//!   which leaves long payloads uncopied) until it returns `None`, after every input,
//!   every call into the endpoint and every timeout, and send each packet to its
//!   [`Transmit::dest`]. [`Endpoint::transmitted`] tells the engine when what it polled
//!   actually left (optional; without it, a packet counts as sent when polled).
//! - **Timers.** Call [`Endpoint::handle_timeout`] when `poll_timeout`'s time has come
//!   (it covers both the tick and the pacer, which may be holding data back; a time in
//!   the past means at once). Timeouts, RESEND intervals and acknowledgement delays
//!   count ticks (`Config::tick_nanos`, 1 ms by default), and a late call counts as one
//!   tick: a host that could not run does not time its peers out for its own delay, so
//!   a driver that oversleeps stretches every timer by as much. Wait with a timer that
//!   can wake within the tick (`epoll_wait`, `timerfd`, a socket read timeout of the
//!   remaining time), not a fixed read timeout of several ticks.
//! - **Events.** Take [`Endpoint::poll_event`]s: requests to answer with
//!   [`Endpoint::reply`], responses, failures.
//!
//! And around the loop:
//!
//! - **Ports.** In UDP mode the Homa port is the UDP port: bind the UDP socket to the
//!   port [`Endpoint::bind`] returned (or bind the UDP socket first and pass its port).
//!   Ports below [`FIRST_AUTO_PORT`] serve requests; automatic ones are clients.
//! - **Addresses.** The engine compares peer addresses exactly: use one address family
//!   per socket (`IPV6_V6ONLY` on IPv6 sockets). A dual-stack socket reports IPv4 peers
//!   as `::ffff:a.b.c.d`, a different peer from `a.b.c.d`, and responses to requests sent
//!   to one form arrive from the other.
//! - **Randomness.** Leave [`Config::seed`] and [`Config::client_id_base`] at 0 (the
//!   default) in anything that talks to real peers: [`Endpoint::new`] then draws them
//!   from the operating system. Fixed values make runs repeat exactly, for tests and
//!   simulations, and make a restarted process look like its predecessor to its
//!   servers.
//! - **Kernel buffers and pacing.** The engine paces its output to `Config::link_mbps`
//!   (25 Gbit/s by default); on a slower link or loopback with a small socket buffer,
//!   set it to the link's rate and raise `SO_RCVBUF` / `SO_SNDBUF` (several megabytes),
//!   or the kernel drops datagrams and the protocol spends its time retransmitting.
//! - **Unreachable peers.** Report a send the kernel refuses for good
//!   (`ECONNREFUSED` on a connected socket, or an ICMP error read with `IP_RECVERR`)
//!   with [`Endpoint::handle_unreachable`]; without, an RPC to a closed port fails only
//!   when it times out.
//! - **Defaults.** [`Config::default`] is the Linux module's configuration where it has
//!   one; every setting, with its name as the module spells it, is listed in
//!   [`Config::SETTINGS`] and read with [`Config::get`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod buffer;
mod client_ids;
mod config;
pub mod cutoffs;
mod endpoint;
mod error;
mod event;
mod history;
mod metrics;
mod minset;
mod rpc;
mod settings;
mod slots;
mod time;

pub use buffer::{MessageBuf, KEEP_MIN, PIN_MAX, RUN_KEEP_MIN};
pub use bytes::Bytes;
pub use config::{Config, ConfigError};
pub use endpoint::{Endpoint, RpcInfo, RpcState, Transmit, TransmitParts, FIRST_AUTO_PORT};
pub use error::{BindError, ReplyError, RpcError, SendError};
pub use event::Event;
pub use homa_wire::{PacketType, RpcId, MAX_HEADER_LEN};
pub use metrics::{DropReason, Metrics};
pub use settings::SettingError;
pub use time::Time;
