//! The Homa endpoint: the one type a runtime, the simulator and the tests drive.
//!
//! [`Endpoint`] is a single public type; its implementation is spread over rooms, one per
//! protocol concern, each file opening with what it owns:
//!
//! | file | owns |
//! |---|---|
//! | `mod.rs` | the type, its construction and the output queries (events, deadlines, counters) |
//! | `sockets.rs` | ports: bind, server role, close |
//! | `app.rs` | the application's commands: send a request, reply, abort, discard, release |
//! | `dispatch.rs` | parsing a datagram and routing it to the room for its packet type |
//! | `incoming.rs` | the receive path: DATA, server RPC creation, delivery to the application |
//! | `buffers.rs` | receive buffer space: admission, per-peer shares, stalled messages |
//! | `grants.rs` | the grant scheduler (SRPT with overcommitment and a FIFO share) |
//! | `outgoing.rs` | the sender: SRPT queues, the pacer, writing DATA, GRANTs received |
//! | `control.rs` | control packets: RESEND, RPC_UNKNOWN, BUSY, CUTOFFS, NEED_ACK, ACK |
//! | `one_way.rs` | one-way messages (our extension): the agreement, delivery, acks |
//! | `learn.rs` | learning our unscheduled cutoffs from the messages we receive |
//! | `timer.rs` | the clock: ticks, silence, retransmission requests, timeouts |
//! | `peers.rs` | the peer table and the client histories (at-most-once) |
//! | `lifecycle.rs` | how RPCs end: freed, failed or discarded |

mod app;
mod buffers;
mod control;
mod dispatch;
mod grants;
mod incoming;
mod learn;
mod lifecycle;
mod one_way;
mod outgoing;
mod peers;
mod sockets;
mod timer;

use crate::client_ids::ClientIds;
use crate::config::Config;
use crate::event::Event;
use crate::metrics::Metrics;
use crate::rpc::Rpc;
use crate::slots::Slots;
use crate::time::Time;
use buffers::RecvSpace;
use bytes::Bytes;
use grants::Grants;
use homa_wire::{PacketType, RpcId};
use outgoing::Sender;
use peers::{Histories, Peers};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;
use sockets::Socket;
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use timer::Clock;

pub use sockets::FIRST_AUTO_PORT;

/// A packet from [`Endpoint::poll_transmit_parts`]: the header (and a payload short enough
/// to fit behind it) is in the caller's buffer, a longer payload a slice of the message
/// (send both with one vectored `sendmsg`).
#[derive(Debug, Clone)]
pub struct TransmitParts {
    /// Where, at what priority, and the total length (header + payload).
    pub transmit: Transmit,
    /// Bytes written at the start of the caller's buffer: the header, followed by the
    /// payload when it fit.
    pub header_len: usize,
    /// The DATA payload when it did not fit in the caller's buffer (empty otherwise, and
    /// for control packets).
    pub payload: Bytes,
}

/// One packet to send, written by [`Endpoint::poll_transmit`] into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Peer address and Homa port (= UDP port in UDP mode).
    pub dest: SocketAddr,
    /// Local Homa port the packet comes from.
    pub src_port: u16,
    /// Network priority 0..=7: put `priority << 5` in the IP TOS / traffic class.
    pub priority: u8,
    /// Bytes written at the start of the buffer.
    pub len: usize,
    /// Type of the packet (for counters and tracing).
    pub packet_type: PacketType,
    /// The local address to send from, where it matters: for a server RPC, the address
    /// its request was sent to (a client matches its response by the server's address,
    /// so a server bound to a wildcard address on a host of several addresses must answer
    /// from the one it was asked at); for an answer to a packet, the address that packet
    /// was sent to. Known only when the runtime said where each datagram arrived
    /// ([`handle_datagram_to`](Endpoint::handle_datagram_to)); `None` otherwise, and for
    /// a client's packets: let the network stack choose.
    pub src: Option<IpAddr>,
}

/// Where an RPC is, as [`Endpoint::rpcs`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcState {
    /// Client: sending the request and/or receiving the response.
    Client,
    /// Server: receiving the request.
    Incoming,
    /// Server: the request is with the application.
    InService,
    /// Server: sending the response.
    Outgoing,
    /// Server: response fully sent, waiting for the client's ACK.
    AwaitingAck,
}

/// One RPC's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcInfo {
    /// The RPC's id on this side.
    pub id: RpcId,
    /// The other side's address and port.
    pub peer: SocketAddr,
    /// The cookie given to `send_request` (0 on servers).
    pub cookie: u64,
    /// Where it is.
    pub state: RpcState,
    /// Length of the message we send (request on a client, response on a server).
    pub out_length: Option<u32>,
    /// Bytes of it sent so far.
    pub out_sent: u32,
    /// Bytes of it we may send without further grants.
    pub out_granted: u32,
    /// Length of the message we receive, once its first packet is here.
    pub in_length: Option<u32>,
    /// Bytes of it received.
    pub in_received: u32,
    /// Bytes of it the sender may send without further grants from us.
    pub in_granted: u32,
    /// Waiting for receive buffer space.
    pub in_stalled: bool,
    /// Timer ticks without word from the peer.
    pub silent_ticks: u32,
}

/// A Homa endpoint: everything one host (one process) knows, sans IO.
///
/// Feed it datagrams with [`handle_datagram`](Self::handle_datagram), call
/// [`handle_timeout`](Self::handle_timeout) when [`poll_timeout`](Self::poll_timeout)
/// says, drain [`poll_transmit`](Self::poll_transmit) and [`poll_event`](Self::poll_event)
/// after every input. It never reads a clock, touches a socket or spawns a thread, and
/// the same inputs always give the same outputs.
pub struct Endpoint {
    config: Config,
    /// Message bytes in a full DATA packet.
    seg: u32,
    /// The most a sender may declare unscheduled (DATA `incoming`): our incoming budget,
    /// or our own unscheduled bytes if larger.
    max_declared_incoming: u32,
    rng: ChaCha8Rng,
    sockets: BTreeMap<u16, Socket>,
    peers: Peers,
    rpcs: Slots<Rpc>,
    client_rpcs: ClientIds,
    server_rpcs: FxHashMap<(IpAddr, u16, u64), usize>,
    /// The server RPC whose request was handed to the application last: usually the
    /// next one answered.
    last_request: Option<usize>,
    /// At-most-once memory of each client socket that sent us requests; server RPCs
    /// hold their socket's handle here.
    histories: Histories,
    next_client_id: u64,
    /// Creation order of messages (both ways), for FIFO shares.
    next_birth: u64,
    /// Receiver: the grant scheduler.
    grants: Grants,
    /// Receiver: buffer space and the messages waiting for it.
    space: RecvSpace,
    /// Sender: queues of data and control packets, and the pacer.
    sender: Sender,
    /// Bytes of outgoing messages held: `[requests, responses]`, each capped by
    /// `max_outgoing_held` on its own (see [`Endpoint::reply`]).
    outgoing_held: [u64; 2],
    events: VecDeque<Event>,
    clock: Clock,
    metrics: Metrics,
    /// Peers with one-way business at the next tick.
    one_way: one_way::OneWayPeers,
    /// Recent incoming lengths, to learn cutoffs from.
    learner: learn::Learner,
    /// The local addresses datagrams arrived at (see [`Transmit::src`]), at most
    /// [`MAX_LOCAL_ADDRS`]; an RPC or a control packet names one by its index + 1 (0:
    /// unknown). Only this host's addresses can be here, but loopback alone has millions,
    /// hence the bound: past it, packets to further addresses go from where the network
    /// stack chooses.
    locals: Vec<IpAddr>,
    /// The local address the datagram being handled arrived at (index as above).
    arrival_local: u8,
}

/// The most local addresses an endpoint tells apart (see `Endpoint::locals`).
const MAX_LOCAL_ADDRS: usize = 255;

/// Its size, not its contents (thousands of RPCs and peers would fill a log).
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("ports", &self.sockets.keys().collect::<Vec<_>>())
            .field("rpcs", &self.rpcs.len())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// A new endpoint. Fails if the configuration is inconsistent.
    ///
    /// A `seed` or `client_id_base` of 0 (the default) is drawn from the operating
    /// system's random source here, so that two endpoints (a process and its restarted
    /// successor among them) neither pick the same automatic ports nor number their RPCs
    /// alike, and no one off the path can guess the ids of live RPCs: a client restarted
    /// with the ids of its predecessor could be handed the predecessor's responses. The
    /// only input an endpoint takes from anywhere but its arguments. Set both to nonzero
    /// values for runs that must repeat exactly (tests, simulations; `client_id_base = 2`
    /// numbers RPCs from 2, as the Linux module does).
    pub fn new(config: Config) -> Result<Endpoint, crate::ConfigError> {
        config.validate()?;
        let (seed, client_id_base) = unguessable(&config)?;
        // A new value, not the argument changed in place: rustc 1.77 and later (up to
        // the fix of rust-lang/rust#155241) can hand a closure that is called twice
        // with the same constant argument, and changes it in place, the changed value
        // the second time (seen here: `|c| Endpoint::new(c)` called twice with
        // `Config::default()` made two endpoints with the same drawn ids).
        let config = Config {
            seed,
            client_id_base,
            ..config
        };
        let seg = config.max_segment();
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let next_client_id = (config.client_id_base.max(2) + 1) & !1;
        let mut ep = Endpoint {
            seg,
            max_declared_incoming: config
                .max_incoming
                .max(config.unsched_bytes.div_ceil(seg).saturating_mul(seg)),
            rng,
            sockets: BTreeMap::new(),
            peers: Peers::new(&config),
            rpcs: Slots::default(),
            client_rpcs: ClientIds::default(),
            server_rpcs: FxHashMap::default(),
            last_request: None,
            histories: Histories::new(&config),
            next_client_id,
            next_birth: 0,
            grants: Grants::default(),
            space: RecvSpace::new(&config),
            sender: Sender::default(),
            outgoing_held: [0; 2],
            events: VecDeque::new(),
            clock: Clock::default(),
            metrics: Metrics::default(),
            one_way: Default::default(),
            learner: Default::default(),
            locals: Vec::new(),
            arrival_local: 0,
            config,
        };
        ep.grants.nonfifo_left = ep.grant_nonfifo_quota();
        ep.sender.pacer_nonfifo_left = ep.pacer_nonfifo_quota();
        Ok(ep)
    }

    /// The index (see `Endpoint::locals`) of local address `to`, added if new and there
    /// is room; 0 for none.
    #[inline]
    fn local_index(&mut self, to: Option<IpAddr>) -> u8 {
        let Some(to) = to else { return 0 };
        match self.locals.iter().position(|&a| a == to) {
            Some(i) => i as u8 + 1,
            None if self.locals.len() < MAX_LOCAL_ADDRS => {
                self.locals.push(to);
                self.locals.len() as u8
            }
            None => 0,
        }
    }

    /// The local address of index `i` (see `Endpoint::locals`).
    #[inline]
    fn local_addr(&self, i: u8) -> Option<IpAddr> {
        (i as usize).checked_sub(1).map(|i| self.locals[i])
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Size a buffer given to [`poll_transmit`](Self::poll_transmit) must have.
    pub fn max_packet_len(&self) -> usize {
        (self.config.mtu - self.config.ip_overhead) as usize
    }

    /// Whether a packet from `ip` (any type, from any of its ports) arrived at or after
    /// `since`, `ip` being a peer this endpoint has an RPC or history with. A runtime
    /// uses it to tell the kernel that a neighbour answers (`MSG_CONFIRM` on Linux) when
    /// it sends to one, as TCP's acknowledgements do: without that, the kernel probes
    /// every neighbour with ARP or neighbour solicitations every 15-45 seconds, and while
    /// a probe goes unanswered (lost or queued behind data at a congested switch port)
    /// it holds everything sent to that neighbour.
    pub fn heard_from_since(&mut self, ip: IpAddr, since: Time) -> bool {
        self.peers
            .find(ip)
            .is_some_and(|p| self.peers[p].heard_at.is_some_and(|t| t >= since))
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) may have a packet: false means it
    /// surely has none (true may still give none, e.g. while the pacer holds data back).
    /// Lets a caller skip preparing a send batch.
    pub fn may_transmit(&self) -> bool {
        !self.sender.control.is_empty()
            || !self.sender.retransmits.is_empty()
            || !self.sender.short_queue.is_empty()
            || !self.sender.sendable.is_empty()
            || !self.sender.background.is_empty()
    }

    /// Whether [`poll_event`](Self::poll_event) has an event.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        // From here the application holds the message: dropped unreleased, it gives its
        // space back all the same (unless the application promised to release it).
        // Marked in place: the event is large, and moved once only.
        if let Some(returned) = &self.space.returned {
            if let Some(
                Event::Request { data, .. }
                | Event::Response { data, .. }
                | Event::Message { data, .. },
            ) = self.events.front_mut()
            {
                data.owe_to(returned);
            }
        }
        self.events.pop_front()
    }

    /// Promise that every message [`poll_event`](Self::poll_event) hands out from now on
    /// comes back through [`release`](Self::release), once, and that no clone of one is
    /// released: the `homa` runtime's `Message` and the simulator keep this promise by
    /// construction. Messages then carry no credit to the receive space (a
    /// [`MessageBuf`](crate::MessageBuf)'s reference to it), which saves a reference
    /// count taken and dropped, across threads, for every message. A message dropped
    /// unreleased after this keeps its space for good, and a released clone frees space
    /// still in use.
    pub fn promise_release(&mut self) {
        self.reclaim_dropped();
        self.space.returned = None;
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called (or
    /// [`poll_transmit`](Self::poll_transmit), if the pacer is holding data back).
    ///
    /// The time may already have passed (data is waiting and the pacer would let it go):
    /// then call at once. `None`: nothing is pending until the next input.
    pub fn poll_timeout(&self) -> Option<Time> {
        match (self.clock.next_tick, self.pacer_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The timer part of [`poll_timeout`](Self::poll_timeout): when the next tick is due
    /// ([`handle_timeout`](Self::handle_timeout) does nothing before). `None` while
    /// nothing needs ticks.
    pub fn next_tick(&self) -> Option<Time> {
        self.clock.next_tick
    }

    /// True while ticks come at their full rate. The `now` given to
    /// [`send_request`](Self::send_request), [`send_message`](Self::send_message) and
    /// [`reply`](Self::reply) only starts the clock, or tightens ticks spaced out while
    /// idle: while this holds they do not use it, and a caller may pass any time it read
    /// before (a runtime answering a batch saves a clock read per message).
    pub fn ticking(&self) -> bool {
        self.clock.next_tick.is_some() && self.clock.stride == 1
    }

    /// Bytes of requests and one-way messages that may still be started before
    /// `max_outgoing_held` is reached (responses have a budget of their own).
    pub fn request_room(&self) -> u64 {
        self.config
            .max_outgoing_held
            .saturating_sub(self.outgoing_held[0])
    }

    /// Bytes of responses that may still be started before `max_outgoing_held` is reached
    /// (their own budget: see [`request_room`](Self::request_room)).
    pub fn response_room(&self) -> u64 {
        self.config
            .max_outgoing_held
            .saturating_sub(self.outgoing_held[1])
    }

    /// The pacer part of [`poll_timeout`](Self::poll_timeout): when data held back by
    /// the pacer may go ([`poll_transmit`](Self::poll_transmit) then has it). `None` when
    /// no data waits.
    pub fn pacer_deadline(&self) -> Option<Time> {
        let queued = !self.sender.sendable.is_empty() || !self.sender.short_queue.is_empty();
        let more = !self.sender.retransmits.is_empty() || !self.sender.background.is_empty();
        (queued || more).then(|| self.pacer_ready_at())
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        let mut m = self.metrics.clone();
        // Less what dropped messages gave back since the last tick.
        let returned = self
            .space
            .returned
            .as_ref()
            .map_or(0, |r| r.load(std::sync::atomic::Ordering::Relaxed));
        m.incoming_held = self.space.held.saturating_sub(returned);
        m.outgoing_held = self.outgoing_held.iter().sum();
        m.outgoing_responses_held = self.outgoing_held[1];
        m.total_incoming = self.grants.total_incoming;
        m.client_rpcs = self.client_rpcs.len() as u64;
        m.server_rpcs = self.server_rpcs.len() as u64;
        m.peers = self.peers.len() as u64;
        m.client_histories = self.histories.len() as u64;
        m
    }

    /// Live RPCs (client and server).
    pub fn live_rpcs(&self) -> usize {
        self.rpcs.len()
    }
}

/// Client ids drawn at random start below this (room for 2^62 more ids per endpoint
/// before the engine's limit, 2^63).
const RANDOM_ID_RANGE: u64 = 1 << 62;

/// `config`'s `seed` and `client_id_base`, each drawn from the operating system's
/// random source where it is 0.
fn unguessable(config: &Config) -> Result<(u64, u64), crate::ConfigError> {
    let (seed, base) = (config.seed, config.client_id_base);
    if seed != 0 && base != 0 {
        return Ok((seed, base));
    }
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes).map_err(|e| {
        crate::ConfigError(format!(
            "seed and client_id_base are 0, and the operating system's random source, \
             which would choose them, failed: {e}"
        ))
    })?;
    let drawn = u128::from_ne_bytes(bytes);
    let (drawn_seed, drawn_base) = ((drawn >> 64) as u64, drawn as u64);
    Ok((
        if seed == 0 { drawn_seed.max(1) } else { seed },
        if base == 0 {
            (drawn_base % RANDOM_ID_RANGE).max(2) & !1
        } else {
            base
        },
    ))
}
