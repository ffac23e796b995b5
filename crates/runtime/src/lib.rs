//! Homa over real sockets: message-based RPCs with SRPT, receiver-driven grants and
//! network priorities, over UDP (no privileges) or raw IP protocol 146 (byte-compatible
//! with the Linux kernel module). Blocking API here, the same with `async` (on tokio) in
//! [`aio`].
//!
//! A server and a client in 20 lines (over loopback UDP):
//!
//! ```
//! use homa::{Options, Socket};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // A named port serves requests; port 0 (any free port) is a client unless told.
//!     let opts = Options { server: Some(true), ..Default::default() };
//!     let server = Socket::bind_with("127.0.0.1:0".parse()?, opts)?;
//!     let addr = server.local_addr();
//!     std::thread::spawn(move || {
//!         while let Ok(request) = server.recv_request() {
//!             let answer = [b"hello, ".as_slice(), &request.to_vec()].concat();
//!             // An error only says the client gave up meanwhile, or a shutdown (the
//!             // loop then ends): nothing to do either way.
//!             let _ = server.reply(&request, answer);
//!         }
//!     });
//!
//!     let client = Socket::bind("127.0.0.1:0".parse()?)?; // client-only, automatic port
//!     let response = client.call(addr, "homa")?;
//!     assert_eq!(response, b"hello, homa");
//!     Ok(())
//! }
//! ```
//!
//! # The model
//! - A [`Socket`] sends requests ([`send_request`](Socket::send_request) returns an
//!   [`RpcId`] at once; [`call`](Socket::call) waits for the response, and
//!   [`call_timeout`](Socket::call_timeout) gives up after a time limit) and receives
//!   requests and responses ([`recv`](Socket::recv), or [`recv_id`](Socket::recv_id) for
//!   one RPC, or [`recv_request`](Socket::recv_request) for requests only). A server
//!   answers each request with [`reply`](Socket::reply), or with
//!   [`reply_when_room`](Socket::reply_when_room), which waits where the budget for
//!   responses is used up. A failed RPC (timeout, no such
//!   socket at the peer, aborted, unreachable) comes back from `recv` or `recv_id` as
//!   [`RecvError::Rpc`] with its id and cookie; `recv_request` leaves it for them, so a
//!   server loop on `recv_request` ends only when the socket shuts down.
//!   [`shutdown_gracefully`](Socket::shutdown_gracefully) ends it after the responses
//!   owed have reached their clients; [`shutdown`](Socket::shutdown) at once.
//! - How long a call can wait: an RPC fails on its own only when the server goes silent
//!   (`timeout_ticks`, or ten times that while its host is heard from) or never gets the
//!   request ([`RpcError::RequestLost`]). A live server that holds a request and does not
//!   reply (an application that forgot it, or is slow) answers "busy" when asked, and
//!   the call waits for as long as it does: use [`call_timeout`](Socket::call_timeout)
//!   (or abort) where a call must end.
//! - At-most-once holds per server socket: a server never runs a request id twice. A
//!   server that restarts (a new socket on the same port, with no memory of the old
//!   one's requests) while calls are in flight can run them again: their clients, told
//!   that the new server does not know their RPC, send the requests again, as with the
//!   Linux module. Make such requests idempotent, or have the application carry its
//!   own request ids, where a restart must not run one twice.
//! - One-way messages (our extension; the Linux module has none): a socket bound with
//!   [`Options::one_way`] takes them ([`MessageKind::OneWay`], from `recv` and
//!   `recv_request`, nothing to answer); [`send_message`](Socket::send_message) sends one
//!   and its delivery comes back as a [`MessageKind::Delivered`] message without bytes;
//!   [`deliver`](Socket::deliver) sends one and waits for that. A socket that does not
//!   take them (or the Linux module) fails them with [`RpcError::NotAccepted`].
//! - Many threads (or tasks) may wait on one socket; each message goes to exactly one.
//! - A [`Message`] holds its bytes in the socket's receive buffer pool (contiguous up to
//!   64 KiB, or the payloads of the jumbo frames it came in; above, 64 KiB pages or the
//!   payloads of the long packets it came in) and gives
//!   them back when dropped. The pool is bounded by
//!   `max_incoming_held`: when the application holds that much, new messages wait (the
//!   engine stops granting and asks again later; nothing is lost) until messages are
//!   dropped.
//! - [`Socket::info`] reports per-socket and per-RPC progress, [`Socket::metrics`] the
//!   engine's counters ([`metrics::to_prometheus`], [`metrics::to_json`];
//!   [`metrics::serve`] serves them over HTTP for Prometheus or `homa metrics`; with the
//!   feature `metrics`, every socket's counters go to the `metrics` facade's recorder:
//!   see [`metrics`]).
//! - Every misuse is an error, never a panic: wrong address family, port in use, reply to
//!   an unknown id, message too long... (One exception: built with `panic = "abort"`,
//!   binding a tokio socket in a runtime without I/O, or a `*_timeout` call in one
//!   without a timer, ends the process with tokio's message saying what the runtime
//!   lacks: tokio reports those by panicking, which cannot be caught then.)
//!
//! # Features
//! - `tokio` (default): the async flavour, [`aio`].
//! - `serve` (default): [`metrics::serve`], an HTTP endpoint for the counters (hyper).
//! - `metrics`: every socket's counters published through the `metrics` facade (see
//!   [`metrics`]). The packet path is the same with or without it.
//!
//! # Transports
//! - [`Transport::Udp`] (default): the Homa packet is the UDP payload, the Homa port is
//!   the UDP port. Priorities go in the IP TOS / IPv6 traffic class of every datagram
//!   (`priority << 5`). Batching with `sendmmsg`/`recvmmsg`, UDP GSO and GRO when the
//!   kernel has them (detected; fallback to single datagrams). A socket that takes no
//!   requests and no one-way messages connects its UDP socket to the first peer it sends to, which spares the
//!   kernel a route lookup per datagram (~0.4 us of a loopback round trip); it
//!   disconnects for good before it sends to anyone else. Responses must then come from
//!   the address the request went to, as the engine requires anyway.
//! - [`Transport::RawIp`]: IP protocol 146 with the Linux module's checksum, so packets
//!   are byte-identical to Linux Homa's. Needs `CAP_NET_RAW`. One raw socket per process
//!   and address family is shared by all raw-mode sockets; ports stay unique per host
//!   because each raw-mode socket also holds the same UDP port (see `raw.rs`).
//!
//! # Configuration
//! [`Options`] carries the engine's [`homa_core::Config`] (every PROTOCOL.md section 6
//! parameter under its Linux name) and socket settings, from code or from a TOML file
//! ([`Options::from_toml_file`]). The MTU comes from the bound address's interface, once,
//! at bind (capped at 65535: on
//! loopback, whose MTU is 65536, a DATA packet then carries 65,451 bytes and a 1 MB
//! message is 16 packets; measured against 9000 and 1500 it gave the best throughput, the
//! per-packet cost being a system call and a wake-up). It is not learnt per path: where a
//! hop on the way has a smaller MTU, IPv4 packets are fragmented there (UDP) and IPv6
//! ones by the sender once the path's MTU is known, and a loss costs a whole packet, so
//! set [`Config::mtu`](homa_core::Config::mtu) to the path's where the network has such
//! hops. The link speed comes from the kernel's
//! ethtool report for the interface (loopback: 1 Tbps, so that the pacer, which has no
//! NIC queue to protect there, stays out of the way). The pacer may keep up to 100 us of
//! data queued in the NIC ([`options::USERSPACE_NIC_BACKLOG_USECS`]; the module's 5 us is
//! too little for a pacer woken by OS timers). On loopback `max_incoming` is raised to
//! 1.6 MB ([`Options::loopback_profile`]). See [`options`] for the file format.
//!
//! # Driving
//! The thread waiting in `recv`/`call` reads the socket itself (no thread hop on the fast
//! path); a background thread per socket runs the timers (1 ms ticks) and the pacer, and
//! reads the socket when no application thread waits. The tokio flavour has one driver
//! task per socket instead. See [`Socket`] and [`aio`].
//!
//! # Copies
//! A `Vec<u8>` or a [`Bytes`] becomes a message without a copy (slices are copied once).
//! Over UDP, packet payloads longer than 2 KiB go from the message's own buffer to the
//! kernel (vectored `sendmsg`); shorter ones are copied behind their header in the send
//! batch, which costs less than a second iovec. Raw IP copies every packet whole.
//! Incoming: a long message, or one that arrived in several jumbo frames without GRO,
//! keeps its payloads in the buffers the kernel received them into; short messages, and pieces of a buffer too
//! small to be worth holding, are copied into the message's buffer pool.
//! [`Message::as_slice`] joins a message up to 64 KiB kept in several pieces into one
//! chunk when it is first asked; [`Message::chunks`] and [`Message::copy_to`] read the
//! pieces where they are. [`Message::take_bytes`] hands a received message's bytes over
//! as one [`Bytes`] (to keep, or to send on) without a further copy up to the pool's page
//! (64 KiB), unless they came in several jumbo frames.
//!
//! # Tracing
//! Socket events at `debug` level, every packet at `trace` level (target `homa`), through
//! the `tracing` crate: free when no subscriber listens.
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

// Without this, another target fails with dozens of errors from inside `libc` calls.
#[cfg(not(target_os = "linux"))]
compile_error!(
    "homa-transport runs on Linux only (UDP GSO/GRO, IP_RECVERR, socket filters); \
     homa-wire and homa-core build anywhere"
);

#[cfg(feature = "tokio")]
pub mod aio;
mod batch;
mod bind;
mod commands;
mod error;
mod ids;
mod info;
mod inner;
mod message;
pub mod metrics;
pub mod options;
mod payload;
mod raw;
mod socket;
mod sys;

pub use batch::Batch;
pub use bytes::Bytes;
pub use error::{AbortError, BindError, CallError, RecvError, ReplyError, SendError};
pub use homa_core::{Config, DropReason, Metrics, RpcError, RpcId};
/// The kinds of Homa packet, as [`Metrics::sent`] and [`Metrics::received`] take them.
pub use homa_wire::PacketType;
pub use info::{IoCounts, RpcInfo, RpcState, SocketInfo};
pub use message::{Message, MessageKind};
pub use options::{config_from_toml, ConfigFileError, Options, Transport, MAX_CONFIG_FILE_BYTES};
pub use payload::Payload;
pub use socket::Socket;
