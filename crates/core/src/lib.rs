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
pub use homa_wire::RpcId;
pub use metrics::{DropReason, Metrics};
pub use settings::SettingError;
pub use time::Time;
