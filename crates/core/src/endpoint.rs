//! The Homa endpoint: sockets, peers, RPCs, the grant scheduler, the sender and the timer.

use crate::buffer::{BufferPool, MessageBuf, Received, KEEP_MIN};
use crate::client_ids::ClientIds;
use crate::config::Config;
use crate::error::{BindError, Refused, ReplyError, RpcError, SendError};
use crate::event::Event;
use crate::history::History;
use crate::metrics::{DropReason, Metrics};
use crate::rpc::{GrantKey, InMsg, OutMsg, Rpc, SendKey, State};
use crate::slots::Slots;
use crate::time::Time;
use bytes::Bytes;
use homa_wire::{
    unsched_priority, AckEntry, Acks, Body, Common, Cutoffs, Data, Grant, PacketType, Repr, Resend,
    RpcId, MAX_HEADER_LEN, RESEND_ALL,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;
use slab::Slab;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};

/// Most RESENDs a timer tick sends to one peer (see `Endpoint::limit_per_peer`).
const RESENDS_PER_PEER: usize = 8;
/// Most NEED_ACKs a timer tick sends to one peer.
const NEED_ACKS_PER_PEER: usize = 2;
/// First automatic (client) port.
pub const FIRST_AUTO_PORT: u16 = 32768;
/// Priority of every control packet: the highest (clamped to `num_priorities`).
const CONTROL_PRIORITY: u8 = 7;
/// Most RESENDs one RPC sends per round (one per gap, the last for the tail).
const MAX_RESENDS_PER_ROUND: usize = 8;
/// Bytes a packet occupies on an Ethernet link beyond its IP packet (header, FCS,
/// preamble, inter-frame gap), for the pacer's estimate.
const ETHERNET_OVERHEAD: u64 = 38;
/// Ticks between sweeps of the client histories.
const HISTORY_SWEEP_TICKS: u64 = 16;

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

struct Socket {
    server: bool,
}

struct Peer {
    /// The peer's cutoffs, for our unscheduled priorities toward it.
    cutoffs: [u32; 8],
    /// Version of those cutoffs (echoed in our DATA).
    cutoff_version: u16,
    /// Tick we last sent this peer CUTOFFS (at most one per tick).
    cutoffs_sent_tick: Option<u64>,
    /// Acks owed to this peer: (local client port, ack).
    pending_acks: Vec<(u16, AckEntry)>,
    /// This peer's messages we could grant to.
    grantable: BTreeSet<GrantKey>,
    /// Buffer bytes held by this peer's requests that are still arriving.
    req_held: u64,
    /// This peer's requests waiting for buffer space.
    req_stalled: u32,
}

impl Peer {
    fn new() -> Peer {
        // Until a peer sends CUTOFFS, Linux Homa uses priority 6 for every unscheduled
        // byte; so do we (the cutoff for 6 is unlimited, 7 takes nothing).
        let mut cutoffs = [0; 8];
        cutoffs[6] = u32::MAX;
        Peer {
            cutoffs,
            cutoff_version: 0,
            cutoffs_sent_tick: None,
            pending_acks: Vec::new(),
            grantable: BTreeSet::new(),
            req_held: 0,
            req_stalled: 0,
        }
    }
}

/// What [`Endpoint::try_allocate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alloc {
    /// The message has its buffer.
    Done,
    /// Not enough space left in all; it waits.
    NoRoom,
    /// Its peer holds its share already; it waits.
    OverShare,
}

/// One-packet messages looked at by [`Endpoint::poll_transmit_urgent`] for a short one.
const URGENT_SCAN: usize = 8;

/// A packet `transmit_next` wrote: the bytes at the start of the buffer (the header,
/// and the payload when it fit), and the payload when it did not.
struct Written {
    transmit: Transmit,
    len: usize,
    rest: Option<Bytes>,
}

struct Control {
    dest: SocketAddr,
    repr: Repr,
}

struct Retransmit {
    handle: usize,
    id: RpcId,
    start: u32,
    end: u32,
    priority: u8,
}

#[derive(Debug, Clone, Copy)]
enum TickAction {
    /// A RESEND or NEED_ACK over the per-peer limit (see `Endpoint::limit_per_peer`).
    Skipped,
    Resend,
    Timeout,
    NeedAck,
    Probe,
    Discard,
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
    seg: u32,
    rng: ChaCha8Rng,
    sockets: BTreeMap<u16, Socket>,
    peers: Vec<Peer>,
    peer_index: FxHashMap<IpAddr, usize>,
    /// The peer `find_peer` found last (peers are never removed, so it stays right).
    last_peer: Option<(IpAddr, usize)>,
    rpcs: Slots<Rpc>,
    client_rpcs: ClientIds,
    server_rpcs: FxHashMap<(IpAddr, u16, u64), usize>,
    /// The server RPC whose request was handed to the application last: usually the
    /// next one answered.
    last_request: Option<usize>,
    /// At-most-once memory of each client socket (peer address, port) that sent us
    /// requests (see history.rs); server RPCs hold their socket's handle here.
    histories: Slab<((IpAddr, u16), History)>,
    /// Where each client socket's history is in `histories`.
    history_index: FxHashMap<(IpAddr, u16), usize>,
    /// The history `find_history` found last (forgotten when the sweep drops any).
    last_history: Option<((IpAddr, u16), usize)>,
    next_client_id: u64,
    next_birth: u64,

    // Receiver: grant scheduler.
    /// Each peer's best grantable message.
    grant_heads: BTreeSet<(GrantKey, usize)>,
    /// Every grantable message by age, for FIFO grants.
    grant_by_age: BTreeSet<(u64, usize)>,
    grant_nonfifo_left: i64,
    total_incoming: u64,
    /// Messages waiting for buffer space, oldest first.
    stalled: BTreeSet<(u64, usize)>,
    incoming_held: u64,
    /// Buffers of released messages, for reuse.
    pool: BufferPool,

    // Sender.
    sendable: BTreeSet<SendKey>,
    send_by_age: BTreeSet<(u64, usize)>,
    /// One-packet messages waiting to go, in order: (handle, birth).
    short_queue: VecDeque<(usize, u64)>,
    /// One-packet messages queued to go (`send_rank` set). `short_queue` may also hold
    /// entries of messages sent since, skipped when reached.
    short_queued: usize,
    pacer_nonfifo_left: i64,
    nic_idle_at: Time,
    control: VecDeque<Control>,
    retransmits: VecDeque<Retransmit>,
    outgoing_held: u64,

    events: VecDeque<Event>,
    tick: u64,
    next_tick: Option<Time>,
    /// Ticks the next [`handle_timeout`](Self::handle_timeout) stands for: 1 while RPCs
    /// live (their timers count every tick); up to the next history sweep while only
    /// histories keep the clock running, so an idle server wakes 16 times less often.
    tick_stride: u64,
    /// When the last tick ran (or the clock started): the grid later ticks fall on.
    last_tick_at: Time,
    metrics: Metrics,
    scratch: Vec<(usize, TickAction)>,
    scratch_handles: Vec<usize>,
    /// A tick's RESENDs and NEED_ACKs ranked per peer (see `limit_per_peer`).
    scratch_ranked: Vec<(usize, bool, u32, usize)>,
}

impl Endpoint {
    /// A new endpoint. Fails if the configuration is inconsistent.
    pub fn new(config: Config) -> Result<Endpoint, crate::ConfigError> {
        config.validate()?;
        let seg = config.max_segment();
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        let next_client_id = (config.client_id_base.max(2) + 1) & !1;
        let mut ep = Endpoint {
            seg,
            rng,
            sockets: BTreeMap::new(),
            peers: Vec::new(),
            peer_index: FxHashMap::default(),
            last_peer: None,
            rpcs: Slots::default(),
            client_rpcs: ClientIds::default(),
            server_rpcs: FxHashMap::default(),
            last_request: None,
            histories: Slab::new(),
            history_index: FxHashMap::default(),
            last_history: None,
            next_client_id,
            next_birth: 0,
            grant_heads: BTreeSet::new(),
            grant_by_age: BTreeSet::new(),
            grant_nonfifo_left: 0,
            total_incoming: 0,
            stalled: BTreeSet::new(),
            incoming_held: 0,
            pool: BufferPool::new(
                config.bpage_size as usize,
                (config.max_incoming_held / config.bpage_size as u64) as usize,
            ),
            sendable: BTreeSet::new(),
            send_by_age: BTreeSet::new(),
            short_queue: VecDeque::new(),
            short_queued: 0,
            pacer_nonfifo_left: 0,
            nic_idle_at: Time::ZERO,
            control: VecDeque::new(),
            retransmits: VecDeque::new(),
            outgoing_held: 0,
            events: VecDeque::new(),
            tick: 0,
            next_tick: None,
            tick_stride: 1,
            last_tick_at: Time::ZERO,
            metrics: Metrics::default(),
            scratch: Vec::new(),
            scratch_handles: Vec::new(),
            scratch_ranked: Vec::new(),
            config,
        };
        ep.grant_nonfifo_left = ep.grant_nonfifo_quota();
        ep.pacer_nonfifo_left = ep.pacer_nonfifo_quota();
        Ok(ep)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Size a buffer given to [`poll_transmit`](Self::poll_transmit) must have.
    pub fn max_packet_len(&self) -> usize {
        (self.config.mtu - self.config.ip_overhead) as usize
    }

    // ------------------------------------------------------------------ sockets

    /// Open a socket. Port 0 picks a free automatic port (32768 and up, from a random
    /// starting point) for a client-only socket. Ports 1..=32767 are server sockets.
    /// Returns the port.
    pub fn bind(&mut self, port: u16) -> Result<u16, BindError> {
        let port = if port == 0 {
            let span = (u16::MAX - FIRST_AUTO_PORT) as u32 + 1;
            let start = self.rng.gen_range(0..span);
            (0..span)
                .map(|i| FIRST_AUTO_PORT + ((start + i) % span) as u16)
                .find(|p| !self.sockets.contains_key(p))
                .ok_or(BindError::NoFreePort)?
        } else if self.sockets.contains_key(&port) {
            return Err(BindError::PortInUse(port));
        } else {
            port
        };
        self.sockets.insert(
            port,
            Socket {
                server: port < FIRST_AUTO_PORT,
            },
        );
        Ok(port)
    }

    /// Whether `port` is bound and takes requests.
    pub fn is_server(&self, port: u16) -> bool {
        self.sockets.get(&port).is_some_and(|s| s.server)
    }

    /// Allow or refuse incoming requests on a socket. Returns false if not bound.
    pub fn set_server(&mut self, port: u16, enabled: bool) -> bool {
        match self.sockets.get_mut(&port) {
            Some(s) => {
                s.server = enabled;
                true
            }
            None => false,
        }
    }

    /// True if `port` is bound.
    pub fn is_bound(&self, port: u16) -> bool {
        self.sockets.contains_key(&port)
    }

    /// Shut a socket down: its client RPCs fail with [`RpcError::Shutdown`], its server
    /// RPCs are discarded, and later packets for it are dropped.
    pub fn close(&mut self, port: u16) {
        if self.sockets.remove(&port).is_none() {
            return;
        }
        let handles: Vec<usize> = self
            .rpcs
            .iter()
            .filter(|(_, r)| r.port == port)
            .map(|(h, _)| h)
            .collect();
        for h in handles {
            self.fail_or_discard(h, RpcError::Shutdown);
        }
    }

    // ------------------------------------------------------------------ application commands

    /// Start an RPC: send `data` as a request to `dest` from the socket on `port`.
    /// `cookie` comes back with the response or failure. A `private` RPC's response is
    /// meant to be retrieved by id only (a hint for runtimes).
    pub fn send_request(
        &mut self,
        now: Time,
        port: u16,
        dest: SocketAddr,
        data: impl Into<Bytes>,
        cookie: u64,
        private: bool,
    ) -> Result<RpcId, SendError> {
        let data = data.into();
        if !self.sockets.contains_key(&port) {
            return Err(SendError::NoSuchSocket);
        }
        if dest.port() == 0 {
            return Err(SendError::InvalidPort);
        }
        self.admit(data.len())?;
        self.start_clock(now);
        let id = RpcId(self.next_client_id);
        self.next_client_id += 2;
        let peer = self.peer_for(dest.ip());
        let msgout = self.new_outmsg(data);
        let h = self.rpcs.insert_with(|| Rpc {
            id,
            port,
            peer_index: peer as u32,
            history: 0,
            peer_addr: dest,
            cookie,
            private,
            state: State::Client,
            msgout: Some(msgout),
            msgin: None,
            silent_ticks: 0,
            ack_wait_ticks: 0,
            resend_owed: false,
            resent_since_start: false,
        });
        self.client_rpcs.insert(id.0, h);
        self.send_update(h);
        Ok(id)
    }

    /// Send the response to the request `id` from `peer` that arrived on `port`.
    pub fn reply(
        &mut self,
        now: Time,
        port: u16,
        peer: SocketAddr,
        id: RpcId,
        data: impl Into<Bytes>,
    ) -> Result<(), ReplyError> {
        let data = data.into();
        // A server RPC with this peer and id is the one `server_rpcs` holds for them.
        let last = self.last_request.filter(|&h| {
            let r = self.rpcs.get(h);
            r.is_some_and(|r| !r.is_client() && r.id == id && r.peer_addr == peer)
        });
        let h = last
            .or_else(|| {
                let key = (peer.ip(), peer.port(), id.client_id());
                self.server_rpcs.get(&key).copied()
            })
            .filter(|&h| {
                let r = &self.rpcs[h];
                r.port == port && r.id == id && r.state == State::InService
            })
            .ok_or(ReplyError::UnknownRpc)?;
        self.admit(data.len())?;
        self.start_clock(now);
        let msgout = self.new_outmsg(data);
        let rpc = &mut self.rpcs[h];
        rpc.msgout = Some(msgout);
        rpc.state = State::Outgoing;
        rpc.silent_ticks = 0;
        self.send_update(h);
        Ok(())
    }

    /// Abort the client RPC `id` on `port`. With `error`, it fails with
    /// [`RpcError::Aborted`]; without, it is freed silently. Returns false if unknown.
    pub fn abort(&mut self, port: u16, id: RpcId, error: bool) -> bool {
        let Some(h) = self.client_rpcs.get(id.0) else {
            return false;
        };
        if self.rpcs[h].port != port {
            return false;
        }
        if error {
            self.fail(h, RpcError::Aborted);
        } else {
            self.free_rpc(h);
        }
        true
    }

    /// Abort every client RPC of `port`; returns how many.
    pub fn abort_all(&mut self, port: u16, error: bool) -> usize {
        let ids: Vec<RpcId> = self
            .rpcs
            .iter()
            .filter(|(_, r)| r.port == port && r.is_client())
            .map(|(_, r)| r.id)
            .collect();
        ids.iter()
            .filter(|&&id| self.abort(port, id, error))
            .count()
    }

    /// Drop a request the application will not answer. Its server RPC is freed and counts
    /// as executed, so a duplicate of the request never runs again; the client gets no
    /// answer and fails with [`RpcError::Timeout`]. Returns false if no request with that
    /// id from `peer` awaits a reply on `port`.
    pub fn discard(&mut self, port: u16, peer: SocketAddr, id: RpcId) -> bool {
        let key = (peer.ip(), peer.port(), id.client_id());
        match self.server_rpcs.get(&key).copied() {
            Some(h) if self.rpcs[h].port == port && self.rpcs[h].state == State::InService => {
                self.discard_server(h);
                true
            }
            _ => false,
        }
    }

    /// Progress of every live RPC of `port` (like Linux Homa's HOMAIOCINFO).
    pub fn rpcs(&self, port: u16) -> impl Iterator<Item = RpcInfo> + '_ {
        let seg = self.seg;
        self.rpcs
            .iter()
            .filter(move |(_, r)| r.port == port)
            .map(move |(_, r)| {
                let out = r.msgout.as_ref();
                let inm = r.msgin.as_ref();
                RpcInfo {
                    id: r.id,
                    peer: r.peer_addr,
                    cookie: r.cookie,
                    state: match r.state {
                        State::Client => RpcState::Client,
                        State::Incoming => RpcState::Incoming,
                        State::InService => RpcState::InService,
                        State::Outgoing if out.is_none_or(OutMsg::fully_sent) => {
                            RpcState::AwaitingAck
                        }
                        State::Outgoing => RpcState::Outgoing,
                    },
                    out_length: out.map(|o| o.length),
                    out_sent: out.map_or(0, |o| o.next_xmit),
                    out_granted: out.map_or(0, |o| o.send_limit(seg)),
                    in_length: inm.map(|m| m.length),
                    in_received: inm.map_or(0, |m| m.received),
                    in_granted: inm.map_or(0, InMsg::expected_end),
                    in_stalled: inm.is_some_and(|m| m.data.is_none()),
                    silent_ticks: r.silent_ticks,
                }
            })
    }

    /// Give back the bytes of a delivered message, so the space counts as free again.
    pub fn release(&mut self, data: MessageBuf) {
        self.incoming_held = self.incoming_held.saturating_sub(data.len() as u64);
        data.recycle(&mut self.pool);
        self.unstall();
        self.run_grants();
    }

    /// The network reports that `dest` has no socket (ICMP port unreachable, or
    /// ECONNREFUSED on a UDP socket): fail every client RPC to it.
    pub fn handle_unreachable(&mut self, dest: SocketAddr) {
        let handles: Vec<usize> = self
            .rpcs
            .iter()
            .filter(|(_, r)| r.is_client() && r.peer_addr == dest)
            .map(|(h, _)| h)
            .collect();
        for h in handles {
            self.fail(h, RpcError::NoSuchSocket);
        }
    }

    // ------------------------------------------------------------------ outputs

    /// Whether [`poll_transmit`](Self::poll_transmit) may have a packet: false means it
    /// surely has none (true may still give none, e.g. while the pacer holds data back).
    /// Lets a caller skip preparing a send batch.
    pub fn may_transmit(&self) -> bool {
        !self.control.is_empty()
            || !self.retransmits.is_empty()
            || !self.short_queue.is_empty()
            || !self.sendable.is_empty()
    }

    /// Whether [`poll_event`](Self::poll_event) has an event.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called (or
    /// [`poll_transmit`](Self::poll_transmit), if the pacer is holding data back).
    ///
    /// The time may already have passed (data is waiting and the pacer would let it go):
    /// then call at once. `None`: nothing is pending until the next input.
    pub fn poll_timeout(&self) -> Option<Time> {
        match (self.next_tick, self.pacer_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The timer part of [`poll_timeout`](Self::poll_timeout): when the next tick is due
    /// ([`handle_timeout`](Self::handle_timeout) does nothing before). `None` while
    /// nothing needs ticks.
    pub fn next_tick(&self) -> Option<Time> {
        self.next_tick
    }

    /// The pacer part of [`poll_timeout`](Self::poll_timeout): when data held back by
    /// the pacer may go ([`poll_transmit`](Self::poll_transmit) then has it). `None` when
    /// no data waits.
    pub fn pacer_deadline(&self) -> Option<Time> {
        let queued = !self.sendable.is_empty() || !self.short_queue.is_empty();
        (queued || !self.retransmits.is_empty()).then(|| self.pacer_ready_at())
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        let mut m = self.metrics.clone();
        m.incoming_held = self.incoming_held;
        m.outgoing_held = self.outgoing_held;
        m.total_incoming = self.total_incoming;
        m.client_rpcs = self.client_rpcs.len() as u64;
        m.server_rpcs = self.server_rpcs.len() as u64;
        m
    }

    /// Live RPCs (client and server).
    pub fn live_rpcs(&self) -> usize {
        self.rpcs.len()
    }

    /// Write the next packet to send into `buf` (at least
    /// [`max_packet_len`](Self::max_packet_len) bytes). Control packets first, then
    /// retransmissions, then new data in SRPT order, as the pacer allows.
    // Callers poll until there is nothing: that last call is answered here, inline in
    // the caller, without the call (and its register saves) that sending a packet costs.
    #[inline]
    pub fn poll_transmit(&mut self, now: Time, buf: &mut [u8]) -> Option<Transmit> {
        if self.nothing_to_send() {
            return None;
        }
        self.poll_transmit_packet(now, buf)
    }

    /// `poll_transmit` when there may be something to send.
    fn poll_transmit_packet(&mut self, now: Time, buf: &mut [u8]) -> Option<Transmit> {
        if buf.len() < self.max_packet_len() {
            debug_assert!(false, "poll_transmit buffer too small");
            return None;
        }
        // The buffer holds a whole packet, so the payload is always copied in.
        let w = self.transmit_next(now, buf)?;
        debug_assert!(w.rest.is_none() && w.len == w.transmit.len);
        Some(w.transmit)
    }

    /// Like [`poll_transmit`](Self::poll_transmit), for scatter-gather sends: writes the
    /// Homa header into `header` (at least [`MAX_HEADER_LEN`] bytes). A payload that fits
    /// in `header` behind the Homa header is copied there; a longer one is handed over as
    /// a reference-counted slice of the message, without copying it. The caller chooses
    /// the split by the size of `header`.
    #[inline]
    pub fn poll_transmit_parts(&mut self, now: Time, header: &mut [u8]) -> Option<TransmitParts> {
        if self.nothing_to_send() {
            return None;
        }
        self.poll_transmit_parts_packet(now, header)
    }

    /// `poll_transmit_parts` when there may be something to send.
    fn poll_transmit_parts_packet(
        &mut self,
        now: Time,
        header: &mut [u8],
    ) -> Option<TransmitParts> {
        if header.len() < MAX_HEADER_LEN {
            debug_assert!(false, "poll_transmit_parts header buffer too small");
            return None;
        }
        let w = self.transmit_next(now, header)?;
        Some(TransmitParts {
            transmit: w.transmit,
            header_len: w.len,
            payload: w.rest.unwrap_or_default(),
        })
    }

    /// True when there is surely nothing to send. Then `short_queue` holds only entries
    /// of messages sent since, and they are dropped, as `next_short` would drop them.
    #[inline]
    fn nothing_to_send(&mut self) -> bool {
        let nothing = self.control.is_empty()
            && self.retransmits.is_empty()
            && self.short_queued == 0
            && self.sendable.is_empty();
        if nothing {
            self.short_queue.clear();
        }
        nothing
    }

    fn transmit_next(&mut self, now: Time, header: &mut [u8]) -> Option<Written> {
        if !self.control.is_empty() {
            return self.emit_control(now, header);
        }
        let pacer_ok = self.pacer_ready_at() <= now;
        // Retransmissions first: (handle, start, length, priority).
        let mut retransmit = None;
        while let Some(r) = self.retransmits.front() {
            let live = self.rpcs.get(r.handle).filter(|rpc| rpc.id == r.id);
            let Some(out) = live.and_then(|rpc| rpc.msgout.as_ref()) else {
                self.retransmits.pop_front();
                continue;
            };
            if r.start >= r.end.min(out.length) {
                self.retransmits.pop_front();
                continue;
            }
            if !pacer_ok && out.length >= self.config.defer_min_bytes {
                return None;
            }
            let (h, start, prio) = (r.handle, r.start, r.priority);
            let len = (r.end.min(out.length) - start).min(self.seg);
            let r = self.retransmits.front_mut()?;
            r.start += len;
            self.metrics.retransmitted_packets += 1;
            retransmit = Some((h, start, len, prio));
            break;
        }
        let (h, start, len, retransmit_prio) = match retransmit {
            Some((h, start, len, prio)) => (h, start, len, Some(prio)),
            None => {
                let (h, start, len) = self.next_fresh(pacer_ok)?;
                (h, start, len, None)
            }
        };
        // Inlined (see emit_data).
        let t = self.emit_data(now, h, start, len, retransmit_prio, header);
        if retransmit_prio.is_none() {
            self.sent_fresh(h, start + len);
        }
        t
    }

    /// The next control packet, written into `header`.
    fn emit_control(&mut self, now: Time, header: &mut [u8]) -> Option<Written> {
        let c = self.control.pop_front()?;
        let len = c.repr.emit(&[], header).ok()?;
        let prio = self.control_priority();
        let (ty, sport) = (c.repr.packet_type(), c.repr.common.sport);
        let transmit = self.account_sent(now, c.dest, ty, sport, len, prio);
        Some(Written {
            transmit,
            len,
            rest: None,
        })
    }

    /// New data of `h` was sent up to `end`: move its message in the sender's queues.
    fn sent_fresh(&mut self, h: usize, end: u32) {
        let rpc = &mut self.rpcs[h];
        if let Some(out) = rpc.msgout.as_mut() {
            out.next_xmit = end;
            if out.fully_sent() && rpc.state == State::Outgoing {
                rpc.ack_wait_ticks = 0;
            }
        }
        self.send_update(h);
    }

    /// The next packet that need not wait while another thread sends a batch of long
    /// messages' data: a control packet, or the only packet of a message shorter than
    /// `defer_min_bytes` (which the pacer lets through at any time), among the first
    /// [`URGENT_SCAN`] one-packet messages queued. It is written whole into `buf`; a
    /// message whose packet would not fit waits for [`poll_transmit`](Self::poll_transmit).
    ///
    /// A runtime that sends from several threads calls this while the thread that owns
    /// its batch buffers sends: so a short request or a GRANT goes out at once instead
    /// of after up to a batch of 64 KB packets (Linux Homa likewise sends short messages
    /// from the calling thread, bypassing its pacer thread).
    pub fn poll_transmit_urgent(&mut self, now: Time, buf: &mut [u8]) -> Option<Transmit> {
        if !self.control.is_empty() {
            return self.emit_control(now, buf).map(|w| w.transmit);
        }
        let room = buf.len().saturating_sub(MAX_HEADER_LEN);
        let limit = (self.config.defer_min_bytes as usize).min(room + 1) as u32;
        let h = self
            .short_queue
            .iter()
            .take(URGENT_SCAN)
            .find_map(|&(h, birth)| {
                let out = self.rpcs.get(h)?.msgout.as_ref()?;
                let queued = out.birth == birth && out.send_rank.is_some();
                (queued && out.length < limit && out.next_xmit == 0).then_some(h)
            })?;
        let len = self.rpcs[h].msgout.as_ref()?.length;
        let w = self.emit_data(now, h, 0, len, None, buf)?;
        debug_assert!(w.rest.is_none(), "an urgent packet fits its buffer");
        self.pacer_nonfifo_left -= len as i64;
        self.sent_fresh(h, len);
        Some(w.transmit)
    }

    /// The next packet of new data to send, `(handle, start, length)`, in SRPT order
    /// (the oldest message on its FIFO turn), if the pacer lets it go; counts it against
    /// the pacer's FIFO share.
    #[inline]
    fn next_fresh(&mut self, pacer_ok: bool) -> Option<(usize, u32, u32)> {
        let fifo_turn = self.config.pacer_fifo_fraction > 0 && self.pacer_nonfifo_left <= 0;
        let (h, fifo) = match self.next_short() {
            Some(h) => (h, false),
            None => match self.send_by_age.first() {
                Some(&(_, h)) if fifo_turn && pacer_ok => (h, true),
                _ => (self.sendable.first()?.2, false),
            },
        };
        let out = self.rpcs[h].msgout.as_ref()?;
        if !pacer_ok && out.length >= self.config.defer_min_bytes {
            return None;
        }
        let start = out.next_xmit;
        let len = (out.length - start).min(self.seg);
        if fifo {
            self.pacer_nonfifo_left += self.pacer_nonfifo_quota();
        } else {
            self.pacer_nonfifo_left -= len as i64;
        }
        Some((h, start, len))
    }

    // ------------------------------------------------------------------ inputs

    /// Process one received datagram (the Homa packet, header onward) from `from`.
    pub fn handle_datagram(&mut self, now: Time, from: IpAddr, bytes: &[u8]) {
        self.handle(now, from, bytes, None);
    }

    /// Like [`handle_datagram`](Self::handle_datagram), for a packet that lies inside
    /// `buffer`: the engine may then keep long payloads of long messages as slices of
    /// `buffer` instead of copying them (see [`MessageBuf`]), holding a handle to it
    /// until the message is released. A caller that reuses its receive buffers reclaims
    /// them (`BytesMut::try_reclaim`) and allocates a new one when a message still holds
    /// the old. A packet that is not inside `buffer` is copied as usual.
    pub fn handle_shared_datagram(
        &mut self,
        now: Time,
        from: IpAddr,
        packet: &[u8],
        buffer: &Bytes,
    ) {
        let (b, p) = (buffer.as_ptr_range(), packet.as_ptr_range());
        let inside = b.start <= p.start && p.end <= b.end;
        self.handle(now, from, packet, inside.then_some(buffer));
    }

    fn handle(&mut self, now: Time, from: IpAddr, bytes: &[u8], owner: Option<&Bytes>) {
        let (repr, payload) = match Repr::parse(bytes, self.config.max_message_length) {
            Ok(x) => x,
            Err(e) => {
                self.metrics.count_drop(DropReason::Malformed);
                self.metrics.malformed[e.index()] += 1;
                return;
            }
        };
        self.metrics.count_received(repr.packet_type(), bytes.len());
        self.start_clock(now);
        let c = repr.common;
        match repr.body {
            Body::Data(d) => self.on_data(
                from,
                c,
                d,
                Received {
                    bytes: payload,
                    owner,
                },
            ),
            Body::Grant(g) => self.on_grant(from, c, g),
            Body::Resend(r) => self.on_resend(from, c, r),
            Body::RpcUnknown => self.on_rpc_unknown(from, c),
            Body::Busy => {
                if let Some(h) = self.find_rpc(from, c) {
                    self.rpcs[h].silent_ticks = 0;
                }
            }
            Body::Cutoffs(k) => {
                // Peers are made only when an RPC needs one, so forged source addresses
                // cannot grow this table.
                if let Some(p) = self.find_peer(from).map(|p| &mut self.peers[p]) {
                    p.cutoffs = k.unsched_cutoffs;
                    p.cutoff_version = k.cutoff_version;
                }
            }
            Body::Freeze => {}
            Body::NeedAck => {
                let peer = self.find_peer(from);
                self.on_need_ack(peer, from, c)
            }
            Body::Ack(a) => self.on_ack(from, c, a),
        }
    }

    /// Run the timer: call when [`poll_timeout`](Self::poll_timeout)'s time has come.
    pub fn handle_timeout(&mut self, now: Time) {
        let Some(t) = self.next_tick else { return };
        if now < t {
            return;
        }
        self.tick += self.tick_stride;
        self.on_tick();
        if self.next_tick.is_none() {
            return; // nothing needs the clock any more
        }
        // Live RPCs count every tick. Histories alone only need the sweeps: skipping the
        // ticks between changes nothing but the wake-ups (1,000 a second otherwise, for
        // as long as a history is kept after its client's last RPC).
        self.tick_stride = if self.rpcs.is_empty() {
            HISTORY_SWEEP_TICKS - self.tick % HISTORY_SWEEP_TICKS
        } else {
            1
        };
        let tick = self.config.tick_nanos;
        // Called late by a tick or more: the grid restarts from now, the missed ticks
        // uncounted (a starved host must not time its peers out for its own delay).
        let base = if t.plus_nanos(tick) <= now { now } else { t };
        self.last_tick_at = base;
        self.next_tick = Some(base.plus_nanos(tick * self.tick_stride));
    }

    // ------------------------------------------------------------------ receive path

    fn find_rpc(&self, from: IpAddr, c: Common) -> Option<usize> {
        if c.sender_id & 1 == 1 {
            self.find_client_rpc(from, c)
        } else {
            self.find_server_rpc(from, c)
        }
    }

    /// `find_rpc` for a packet from a server: one of our client RPCs.
    #[inline]
    fn find_client_rpc(&self, from: IpAddr, c: Common) -> Option<usize> {
        let h = self.client_rpcs.get(c.sender_id ^ 1)?;
        let r = &self.rpcs[h];
        (r.port == c.dport && r.peer_addr == SocketAddr::new(from, c.sport)).then_some(h)
    }

    /// `find_rpc` for a packet from a client: one of our server RPCs.
    #[inline]
    fn find_server_rpc(&self, from: IpAddr, c: Common) -> Option<usize> {
        let h = *self.server_rpcs.get(&(from, c.sport, c.sender_id))?;
        (self.rpcs[h].port == c.dport).then_some(h)
    }

    fn on_data(&mut self, from: IpAddr, c: Common, d: Data, payload: Received<'_>) {
        let h = if c.sender_id & 1 == 1 {
            match self.find_client_rpc(from, c) {
                Some(h) if self.rpcs[h].is_client() => h,
                _ => {
                    // A response for an RPC we no longer have (aborted, failed, or done
                    // and this is a late copy): tell the server, so it frees its state
                    // instead of waiting for grants from us forever.
                    self.metrics.count_drop(DropReason::UnknownRpc);
                    return self.send_rpc_unknown(from, c);
                }
            }
        } else {
            if !self.sockets.get(&c.dport).is_some_and(|s| s.server) {
                return self.metrics.count_drop(DropReason::NoSocket);
            }
            if let Some(ack) = d.ack {
                self.apply_ack(from, c.sport, ack);
            }
            match self.find_server_rpc(from, c) {
                Some(h) => h,
                None => match self.new_server_rpc(from, c, d.message_length) {
                    Some(h) => h,
                    None => return,
                },
            }
        };
        if d.cutoff_version != self.config.cutoff_version {
            self.send_cutoffs(h);
        }
        self.accept_data(h, d, payload);
    }

    fn new_server_rpc(&mut self, from: IpAddr, c: Common, len: u32) -> Option<usize> {
        let tick = self.tick;
        let key = (from, c.sport);
        let history = self.find_history(key);
        if history.is_some_and(|i| self.histories[i].1.rejects(c.sender_id)) {
            self.metrics.count_drop(DropReason::AlreadyExecuted);
            return None;
        }
        let cap = self.config.max_incoming_held;
        let no_room = self.incoming_held + len as u64 > cap;
        let mut queue_full = self.stalled.len() >= self.config.max_stalled_messages as usize;
        let known_peer = self.find_peer(from);
        let (over_share, stalls_full, mine) = match known_peer {
            Some(p) => (
                self.over_peer_share(p, len as u64),
                self.peers[p].req_stalled >= self.peer_share_stalled(),
                self.peers[p].req_stalled,
            ),
            None => (false, false, 0),
        };
        if len as u64 <= cap && (no_room || over_share) && queue_full && !stalls_full {
            // Every stalled slot is taken, but not by this peer: make room by dropping the
            // newest waiting request of the peer with the most (its client will be told
            // RPC_UNKNOWN and retry), so many flooding peers cannot lock one out.
            queue_full = !self.evict_stalled_request(mine);
        }
        if len as u64 > cap || ((no_room || over_share) && (queue_full || stalls_full)) {
            // Could never be buffered, or too many already wait: keep no state at all.
            self.metrics.count_drop(DropReason::NoBuffer);
            return None;
        }
        // (Freeing other RPCs above leaves every history where it is: only the timer's
        // sweep removes them.)
        let history = history.unwrap_or_else(|| {
            let i = self.histories.insert((key, History::default()));
            self.history_index.insert(key, i);
            i
        });
        self.histories[history].1.note_created(c.sender_id, tick);
        let peer = known_peer.unwrap_or_else(|| self.peer_for(from));
        let h = self.rpcs.insert_with(|| Rpc {
            id: RpcId::from_sender_id(c.sender_id),
            port: c.dport,
            peer_index: peer as u32,
            history: history as u32,
            peer_addr: SocketAddr::new(from, c.sport),
            cookie: 0,
            private: false,
            state: State::Incoming,
            msgout: None,
            msgin: None,
            silent_ticks: 0,
            ack_wait_ticks: 0,
            resend_owed: false,
            resent_since_start: false,
        });
        self.server_rpcs.insert((from, c.sport, c.sender_id), h);
        Some(h)
    }

    fn accept_data(&mut self, h: usize, d: Data, payload: Received<'_>) {
        let rpc = &mut self.rpcs[h];
        match rpc.state {
            State::Client | State::Incoming => {}
            // Request data after the request was delivered: a duplicate.
            _ => return self.metrics.count_drop(DropReason::Inconsistent),
        }
        let mut seeded = false;
        if rpc.msgin.is_none() {
            if rpc.is_client() && d.message_length as u64 > self.config.max_incoming_held {
                return self.fail(h, RpcError::NoBufferSpace);
            }
            let birth = self.next_birth;
            self.next_birth += 1;
            // The first packet usually starts the message (for most RPCs it is the
            // whole message): the buffer is made holding it. Long packets in shared
            // buffers (loopback, jumbo frames with GRO) are kept rather than copied.
            let keep = payload.owner.is_some() && payload.bytes.len() >= KEEP_MIN;
            let len = d.message_length;
            let whole = d.offset == 0 && payload.bytes.len() == len as usize;
            if whole && self.buffer_room(h, len as u64) == Alloc::Done {
                // The whole message in its first packet, and room for it: deliver it now.
                // The steps below come to exactly this for it (a buffer made holding the
                // packet, the RPC's silence reset, then `deliver`), except that they also
                // make the receive state of a message arriving in pieces (byte ranges,
                // grant rank, outstanding bytes) and drop it again untouched.
                let data = self.take_buffer(h, len as u64, payload, keep);
                self.rpcs[h].silent_ticks = 0;
                self.hand_over(h, data);
                return self.run_grants();
            }
            // (Built in place: there is no old message to drop.)
            self.rpcs[h]
                .msgin
                .get_or_insert_with(|| InMsg::new(len, birth));
            let head = if d.offset == 0 {
                payload
            } else {
                Received::copied(&[])
            };
            seeded = self.try_allocate(h, head, keep) == Alloc::Done && !head.bytes.is_empty();
        }
        let rpc = &mut self.rpcs[h];
        let Some(m) = rpc.msgin.as_mut() else { return };
        if m.length != d.message_length {
            return self.metrics.count_drop(DropReason::Inconsistent);
        }
        rpc.silent_ticks = 0;
        m.incoming = m.incoming.max(d.incoming.min(m.length));
        match m.data.as_mut() {
            None => self.metrics.count_drop(DropReason::NoBuffer),
            Some(buf) => {
                if !seeded {
                    buf.write(d.offset as usize, payload);
                }
                let end = d.offset + payload.bytes.len() as u32;
                m.received += m.ranges.insert(d.offset, end);
            }
        }
        self.refresh_outstanding(h);
        if self.rpcs[h].msgin.as_ref().is_some_and(InMsg::is_complete) {
            self.deliver(h);
        } else {
            self.sched_update(h);
        }
        self.run_grants();
    }

    fn deliver(&mut self, h: usize) {
        self.sched_remove(h);
        let rpc = &mut self.rpcs[h];
        let Some(m) = rpc.msgin.as_mut() else {
            return;
        };
        let data = m.data.take().unwrap_or_default();
        self.total_incoming -= m.counted_outstanding as u64;
        rpc.msgin = None; // (dropped in place: moving it out would copy all of it)
        self.hand_over(h, data);
    }

    /// Give the application RPC `h`'s incoming message, `data`.
    // Inline (as take_buffer): every message comes this way, and as a call its register
    // saves and argument moves were a tenth of its cost.
    #[inline(always)]
    fn hand_over(&mut self, h: usize, data: MessageBuf) {
        let rpc = &mut self.rpcs[h];
        if !rpc.is_client() {
            // Delivered: the application holds it now, not the peer's share.
            self.peers[rpc.peer()].req_held -= data.len() as u64;
        }
        if rpc.is_client() {
            self.metrics.responses_delivered += 1;
            self.events.push_back(Event::Response {
                port: rpc.port,
                id: rpc.id,
                cookie: rpc.cookie,
                peer: rpc.peer_addr,
                private: rpc.private,
                data,
            });
            let (peer, port, ack) = (
                rpc.peer(),
                rpc.port,
                AckEntry {
                    client_id: rpc.id.0,
                    server_port: rpc.peer_addr.port(),
                },
            );
            let dest = rpc.peer_addr;
            let id = rpc.id;
            self.free_rpc(h);
            let pending = &mut self.peers[peer].pending_acks;
            pending.push((port, ack));
            if pending.iter().filter(|(p, _)| *p == port).count() >= homa_wire::MAX_ACKS {
                self.send_ack(Some(peer), dest, port, id.0);
            }
        } else {
            self.metrics.requests_delivered += 1;
            self.last_request = Some(h);
            rpc.state = State::InService;
            rpc.silent_ticks = 0;
            self.events.push_back(Event::Request {
                port: rpc.port,
                id: rpc.id,
                peer: rpc.peer_addr,
                data,
            });
        }
    }

    fn on_grant(&mut self, from: IpAddr, c: Common, g: Grant) {
        let Some(h) = self.find_rpc(from, c) else {
            self.metrics.count_drop(DropReason::UnknownRpc);
            if c.sender_id & 1 == 1 {
                // A server grants a request we gave up on: tell it, as for DATA, so it
                // frees the message instead of granting it (and holding back others of
                // ours) until its RESENDs time out.
                self.send_rpc_unknown(from, c);
            }
            return;
        };
        let max_prio = self.config.num_priorities - 1;
        let rpc = &mut self.rpcs[h];
        rpc.silent_ticks = 0;
        if let Some(out) = rpc.msgout.as_mut() {
            out.granted = out.granted.max(g.offset.min(out.length));
            out.sched_priority = g.priority.min(max_prio);
            self.send_update(h);
        }
    }

    fn on_resend(&mut self, from: IpAddr, c: Common, r: Resend) {
        let Some(h) = self.find_rpc(from, c) else {
            let from_client = c.sender_id & 1 == 0;
            if from_client
                && self
                    .find_history((from, c.sport))
                    .is_some_and(|i| self.histories[i].1.rejects(c.sender_id))
            {
                // Executed and freed: staying silent lets the client time out; an
                // RPC_UNKNOWN would make it run the request again.
                return self.metrics.count_drop(DropReason::AlreadyExecuted);
            }
            if from_client && !self.sockets.get(&c.dport).is_some_and(|s| s.server) {
                return self.metrics.count_drop(DropReason::NoSocket);
            }
            return self.send_rpc_unknown(from, c);
        };
        let rpc = &mut self.rpcs[h];
        let stalled =
            rpc.state == State::Incoming && rpc.msgin.as_ref().is_some_and(|m| m.data.is_none());
        if matches!(rpc.state, State::Client | State::Outgoing) || stalled {
            // The peer knows this RPC and is working on it (or, for a request stalled
            // for buffer space, is waiting for us).
            rpc.silent_ticks = 0;
        }
        if rpc.state == State::Outgoing {
            // The client still lacks response bytes: the wait for its ACK starts over
            // with the retransmission. Giving up now would leave it only silence (the
            // request counts as executed), so it would time out.
            rpc.ack_wait_ticks = 0;
        }
        let id = rpc.id;
        let out = match (rpc.state, rpc.msgout.as_mut()) {
            (State::Client | State::Outgoing, Some(out)) => out,
            _ => return self.send_busy(h),
        };
        let end = if r.length == RESEND_ALL {
            out.next_xmit
        } else {
            r.offset.saturating_add(r.length).min(out.length)
        };
        if r.length != RESEND_ALL && end > out.granted {
            // Asking for bytes past our grant means a GRANT was lost.
            out.granted = end;
        }
        let stop = end.min(out.next_xmit);
        if r.offset < stop {
            let priority = r.priority.min(self.config.num_priorities - 1);
            self.retransmits.push_back(Retransmit {
                handle: h,
                id,
                start: r.offset,
                end: stop,
                priority,
            });
        } else {
            self.send_busy(h);
        }
        self.send_update(h);
    }

    fn on_rpc_unknown(&mut self, from: IpAddr, c: Common) {
        let Some(h) = self.find_rpc(from, c) else {
            return;
        };
        if self.rpcs[h].is_client() {
            let rpc = &self.rpcs[h];
            if rpc.msgin.is_some() || !rpc.resent_since_start {
                // Response bytes arrived, so the server knows this RPC; or we have not
                // asked since the last restart, so this answers a RESEND from before it
                // (a server behind on its input answers a run of them late). Either way
                // the RPC_UNKNOWN is stale, and restarting would throw away progress and
                // send the whole request again into a server that is already overloaded.
                return;
            }
            // The server does not know our request (it may have refused it for want of
            // buffer space): send it again from the start. An RPC_UNKNOWN is an answer
            // from a live server, so the silence starts over; a server that keeps
            // refusing is bounded by its history, which refuses the id silently once
            // its floor passes it (history.rs), and then this RPC times out.
            self.metrics.restarts += 1;
            self.rpcs[h].silent_ticks = 0;
            self.rpcs[h].resent_since_start = false;
            self.drop_msgin(h);
            let unsched = self.rpcs[h].msgout.as_ref().map_or(0, |o| o.unsched_end);
            if let Some(out) = self.rpcs[h].msgout.as_mut() {
                out.next_xmit = 0;
                out.granted = unsched;
            }
            self.send_update(h);
        } else {
            self.discard_server(h);
        }
    }

    fn on_need_ack(&mut self, peer: Option<usize>, from: IpAddr, c: Common) {
        if self.find_rpc(from, c).is_some() {
            // Our response is incomplete (or this is about a server RPC): nothing to
            // acknowledge yet. As in Linux Homa, no RESEND either: the server asks every
            // tick, and when our input is backlogged the response is usually already
            // queued here, so each RESEND would only make the server send it again and
            // deepen the backlog (measured: a closed loop of 64 outstanding RPCs on a
            // CPU-starved client collapsed into retransmissions and timeouts). Lost
            // packets are recovered by this RPC's own RESEND timer.
            return;
        }
        if c.sender_id & 1 == 1 {
            self.send_ack(
                peer,
                SocketAddr::new(from, c.sport),
                c.dport,
                c.sender_id ^ 1,
            );
        }
    }

    fn on_ack(&mut self, from: IpAddr, c: Common, acks: Acks) {
        if c.sender_id & 1 == 1 {
            return;
        }
        self.apply_ack(
            from,
            c.sport,
            AckEntry {
                client_id: c.sender_id,
                server_port: c.dport,
            },
        );
        for &a in acks.as_slice() {
            self.apply_ack(from, c.sport, a);
        }
    }

    fn apply_ack(&mut self, from: IpAddr, client_port: u16, ack: AckEntry) {
        let key = (from, client_port, ack.client_id);
        if let Entry::Occupied(found) = self.server_rpcs.entry(key) {
            let h = *found.get();
            let rpc = &self.rpcs[h];
            if rpc.port == ack.server_port && rpc.state == State::Outgoing {
                // discard_server, with the RPC unlinked here rather than looked up again.
                found.remove();
                self.free_unlinked(h);
                self.run_grants();
            }
        }
    }

    // ------------------------------------------------------------------ grant scheduler

    fn grant_nonfifo_quota(&self) -> i64 {
        let c = &self.config;
        if c.grant_fifo_fraction == 0 {
            return i64::MAX / 2;
        }
        (1000 * c.fifo_grant_increment as i64) / c.grant_fifo_fraction as i64
            - c.fifo_grant_increment as i64
    }

    fn refresh_outstanding(&mut self, h: usize) {
        if let Some(m) = self.rpcs[h].msgin.as_mut() {
            let now = m.outstanding();
            self.total_incoming = self.total_incoming + now as u64 - m.counted_outstanding as u64;
            m.counted_outstanding = now;
        }
    }

    /// Put the message of `h` where it belongs in the grant scheduler.
    fn sched_update(&mut self, h: usize) {
        let srpt = self.config.srpt;
        let want = self.rpcs[h].msgin.as_ref().and_then(|m| {
            let rank = if srpt { m.length - m.received } else { 0 };
            let grantable = m.data.is_some() && !m.is_complete() && m.expected_end() < m.length;
            grantable.then_some(rank)
        });
        self.sched_set(h, want);
    }

    /// Take the message of `h` out of the grant scheduler.
    fn sched_remove(&mut self, h: usize) {
        self.sched_set(h, None);
    }

    // Split from the set updates (`sched_move`) so that the common call, which changes
    // nothing (a short message is never grantable), costs a compare and no more.
    #[inline]
    fn sched_set(&mut self, h: usize, want: Option<u32>) {
        let rpc = &mut self.rpcs[h];
        let peer = rpc.peer();
        let Some(m) = rpc.msgin.as_mut() else { return };
        if want != m.grant_rank {
            let old = std::mem::replace(&mut m.grant_rank, want);
            let key = |rank| m.grant_key(rank, h);
            let (old, want) = (old.map(key), want.map(key));
            self.sched_move(h, peer, old, want);
        }
    }

    /// Moves message `h` of `peer` in the scheduler's sets from key `old` to `want`.
    fn sched_move(&mut self, h: usize, peer: usize, old: Option<GrantKey>, want: Option<GrantKey>) {
        let grantable = &mut self.peers[peer].grantable;
        let old_head = grantable.first().copied();
        if let Some(k) = old {
            grantable.remove(&k);
            self.grant_by_age.remove(&(k.1, h));
        }
        if let Some(k) = want {
            grantable.insert(k);
            self.grant_by_age.insert((k.1, h));
        }
        let new_head = grantable.first().copied();
        if old_head != new_head {
            if let Some(k) = old_head {
                self.grant_heads.remove(&(k, peer));
            }
            if let Some(k) = new_head {
                self.grant_heads.insert((k, peer));
            }
        }
    }

    /// Priority for the message ranked `rank` (0 = best) among `active` granted messages:
    /// like Linux Homa, use the lowest scheduled levels when there are few messages.
    fn grant_priority(&self, rank: usize, active: usize) -> u8 {
        let max = self.config.max_sched_prio as i64;
        let unused = max + 1 - active as i64;
        let p = max - rank as i64 - unused.max(0);
        p.max(0) as u8
    }

    /// Grant what the scheduler says, after anything that may change it. Inline and
    /// split from the work (`grant_round`): most calls find nothing grantable.
    #[inline]
    fn run_grants(&mut self) {
        if !self.grant_heads.is_empty() {
            self.grant_round();
        }
    }

    fn grant_round(&mut self) {
        let budget =
            |ep: &Endpoint| (ep.config.max_incoming as u64).saturating_sub(ep.total_incoming);
        if self.grant_nonfifo_left <= 0 {
            // The oldest message's turn: it gets the next fifo_grant_increment.
            let oldest = self.grant_by_age.first().map(|&(_, h)| h);
            if let Some((h, m)) = oldest.and_then(|h| Some((h, self.rpcs[h].msgin.as_ref()?))) {
                let end = m.expected_end();
                let room = budget(self).min(u32::MAX as u64) as u32;
                if room == 0 {
                    return; // wait for room: SRPT grants would take it first
                }
                // A full increment may not fit in the budget at all; grant what does.
                let increment = self.config.fifo_grant_increment.min(room);
                let target = end.saturating_add(increment).min(m.length);
                let prio = self.config.max_sched_prio;
                self.grant(h, target, prio);
                self.grant_nonfifo_left += self.grant_nonfifo_quota();
            }
        }
        let n = (self.config.max_overcommit as usize).min(self.grant_heads.len());
        // Reuse one vector: this runs for every DATA packet.
        let mut active = std::mem::take(&mut self.scratch_handles);
        active.clear();
        active.extend(self.grant_heads.iter().take(n).map(|&((_, _, h), _)| h));
        let window = if self.config.window == 0 {
            self.config.max_incoming / (n as u32 + 1)
        } else {
            self.config.window
        }
        .max(1);
        // Grant in steps of a packet or more, to send fewer GRANTs; but never more than
        // the window, or a window below one packet (a small max_incoming, many peers, or
        // loopback's 64 KB packets) would never be granted at all.
        let step = self.seg.max(window / 16).min(window);
        for (rank, &h) in active.iter().enumerate() {
            let Some(m) = self.rpcs[h].msgin.as_ref() else {
                continue;
            };
            let end = m.expected_end();
            let mut target = m.received.saturating_add(window).min(m.length);
            if target <= end || (target < m.length && target - end < step) {
                continue;
            }
            let room = budget(self);
            if room == 0 {
                break;
            }
            target = target.min(end + room.min(u32::MAX as u64) as u32);
            let prio = self.grant_priority(rank, n);
            self.grant_nonfifo_left -= (target - end) as i64;
            self.grant(h, target, prio);
        }
        self.scratch_handles = active;
    }

    fn grant(&mut self, h: usize, offset: u32, priority: u8) {
        let rpc = &mut self.rpcs[h];
        let Some(m) = rpc.msgin.as_mut() else { return };
        m.granted = offset;
        m.grant_priority = priority;
        self.refresh_outstanding(h);
        self.sched_update(h);
        self.send_grant(h);
    }

    fn send_grant(&mut self, h: usize) {
        let rpc = &self.rpcs[h];
        let Some(m) = rpc.msgin.as_ref() else { return };
        let repr = Repr {
            common: self.common_for(h),
            body: Body::Grant(Grant {
                offset: m.granted,
                priority: m.grant_priority,
            }),
        };
        self.queue_control(rpc.peer_addr, repr);
    }

    /// Give incoming message `h` its buffer if the space is there, else (re)queue it among
    /// the stalled. `head`: the message's first bytes, to start the buffer with (may be
    /// empty). `keep`: the message's packets may be kept by reference (see [`MessageBuf`]).
    fn try_allocate(&mut self, h: usize, head: Received<'_>, keep: bool) -> Alloc {
        let rpc = &self.rpcs[h];
        let Some(m) = rpc.msgin.as_ref() else {
            return Alloc::NoRoom;
        };
        if m.data.is_some() {
            return Alloc::Done;
        }
        let (len, key) = (m.length as u64, (m.birth, h));
        let outcome = self.buffer_room(h, len);
        if outcome != Alloc::Done {
            if self.stalled.insert(key) {
                let rpc = &self.rpcs[h];
                if !rpc.is_client() {
                    self.peers[rpc.peer()].req_stalled += 1;
                }
            }
            return outcome;
        }
        let buf = self.take_buffer(h, len, head, keep);
        if let Some(m) = self.rpcs[h].msgin.as_mut() {
            m.data = Some(buf);
        }
        self.unqueue_stalled(key);
        Alloc::Done
    }

    /// Whether a buffer of `len` bytes for RPC `h`'s incoming message may be taken now.
    /// Requests count against their peer's share; responses were asked for.
    fn buffer_room(&self, h: usize, len: u64) -> Alloc {
        let rpc = &self.rpcs[h];
        if self.incoming_held + len > self.config.max_incoming_held {
            Alloc::NoRoom
        } else if !rpc.is_client() && self.over_peer_share(rpc.peer(), len) {
            Alloc::OverShare
        } else {
            Alloc::Done
        }
    }

    /// Takes a buffer of `len` bytes for RPC `h`'s incoming message (`buffer_room` said
    /// yes), starting with `head`.
    // Inline (as hand_over): every message comes this way, and as a call its register
    // saves and argument moves were a fifth of its cost.
    #[inline(always)]
    fn take_buffer(&mut self, h: usize, len: u64, head: Received<'_>, keep: bool) -> MessageBuf {
        self.incoming_held += len;
        let rpc = &self.rpcs[h];
        if !rpc.is_client() {
            self.peers[rpc.peer()].req_held += len;
        }
        MessageBuf::new(len as usize, &mut self.pool, head, keep)
    }

    /// Takes `key` off the stalled queue (if there), keeping its peer's count.
    fn unqueue_stalled(&mut self, key: (u64, usize)) {
        if self.stalled.remove(&key) {
            let rpc = &self.rpcs[key.1];
            if !rpc.is_client() {
                self.peers[rpc.peer()].req_stalled -= 1;
            }
        }
    }

    /// Would `len` more bytes of requests put peer `p` past its share of the buffers?
    /// A peer holding nothing may always take one message (the global cap still applies).
    fn over_peer_share(&self, p: usize, len: u64) -> bool {
        let held = self.peers[p].req_held;
        let share = self.config.max_incoming_held / 100 * self.config.max_peer_share_percent as u64;
        held > 0 && held + len > share
    }

    /// How many of one peer's requests may wait for buffer space.
    fn peer_share_stalled(&self) -> u32 {
        (self.config.max_stalled_messages * self.config.max_peer_share_percent / 100).max(1)
    }

    /// Give waiting messages the buffer space that came back, oldest first, and ask
    /// their senders for the bytes that were dropped meanwhile. The oldest that does not
    /// fit stops the round (so a long message is not passed over forever); messages of
    /// peers past their share are skipped.
    #[inline]
    fn unstall(&mut self) {
        if !self.stalled.is_empty() {
            self.unstall_round();
        }
    }

    fn unstall_round(&mut self) {
        // Next: the waiting message whose peer holds the least buffer space (responses
        // first: we asked for them), the oldest among equals. One that does not fit stops
        // the round, so a long message is not passed over for ever by shorter ones.
        while let Some((_, _, h)) = self
            .stalled
            .iter()
            .map(|&(birth, h)| {
                let rpc = &self.rpcs[h];
                let held = if rpc.is_client() {
                    0
                } else {
                    self.peers[rpc.peer()].req_held
                };
                (held, birth, h)
            })
            .min()
        {
            if self.try_allocate(h, Received::copied(&[]), false) != Alloc::Done {
                break;
            }
            self.refresh_outstanding(h);
            self.sched_update(h);
            self.send_resends(h);
        }
    }

    /// Drops the newest stalled request of the peer with the most stalled requests, if
    /// that peer has at least two more than `than` (so peers with equal shares do not take
    /// turns evicting each other). Returns whether a slot was freed.
    fn evict_stalled_request(&mut self, than: u32) -> bool {
        let Some((p, _)) = self
            .peers
            .iter()
            .enumerate()
            .map(|(p, peer)| (p, peer.req_stalled))
            .max_by_key(|&(_, n)| n)
            .filter(|&(_, n)| n > than + 1)
        else {
            return false;
        };
        let victim = self.stalled.iter().rev().map(|&(_, h)| h).find(|&h| {
            let rpc = &self.rpcs[h];
            !rpc.is_client() && rpc.peer() == p
        });
        match victim {
            Some(h) => {
                self.metrics.count_drop(DropReason::NoBuffer);
                self.discard_server(h);
                true
            }
            None => false,
        }
    }

    // ------------------------------------------------------------------ send path

    fn pacer_nonfifo_quota(&self) -> i64 {
        let c = &self.config;
        if c.pacer_fifo_fraction == 0 {
            return i64::MAX / 2;
        }
        (1000 * self.seg as i64) / c.pacer_fifo_fraction as i64 - self.seg as i64
    }

    fn pacer_ready_at(&self) -> Time {
        let backlog = self.config.max_nic_est_backlog_usecs as u64 * 1_000;
        Time(self.nic_idle_at.0.saturating_sub(backlog))
    }

    fn new_outmsg(&mut self, data: Bytes) -> OutMsg {
        let length = data.len() as u32;
        let unsched_end = self
            .config
            .unsched_bytes
            .div_ceil(self.seg)
            .saturating_mul(self.seg)
            .min(length);
        self.outgoing_held += length as u64;
        let birth = self.next_birth;
        self.next_birth += 1;
        OutMsg {
            data,
            length,
            next_xmit: 0,
            granted: 0,
            unsched_end,
            sched_priority: 0,
            birth,
            send_rank: None,
        }
    }

    /// Put the message of `h` where it belongs in the sender's queues.
    #[inline]
    fn send_update(&mut self, h: usize) {
        let seg = self.seg;
        let Some(out) = self.rpcs.get_mut(h).and_then(|r| r.msgout.as_mut()) else {
            return;
        };
        if out.length <= seg {
            // A one-packet message has nothing to schedule: it waits in a plain FIFO
            // instead of the SRPT sets, which keeps per-RPC cost flat with thousands of
            // RPCs outstanding. (It can only lose to a longer message's last packet.)
            let want = out.has_fresh_bytes(seg);
            if want && out.send_rank.is_none() {
                out.send_rank = Some(0);
                self.short_queue.push_back((h, out.birth));
                self.short_queued += 1;
            } else if !want && out.send_rank.take().is_some() {
                // Its queue entry stays, to be skipped when reached.
                self.short_queued -= 1;
            }
        } else {
            self.send_update_sets(h);
        }
    }

    /// `send_update` for a message of more than one packet: the SRPT sets.
    fn send_update_sets(&mut self, h: usize) {
        let (seg, srpt) = (self.seg, self.config.srpt);
        let Some(out) = self.rpcs.get_mut(h).and_then(|r| r.msgout.as_mut()) else {
            return;
        };
        let rank = if srpt { out.length - out.next_xmit } else { 0 };
        let want = out.has_fresh_bytes(seg).then_some(rank);
        if want == out.send_rank {
            return;
        }
        if let Some(r) = out.send_rank.take() {
            self.sendable.remove(&out.send_key(r, h));
            self.send_by_age.remove(&(out.birth, h));
        }
        if let Some(r) = want {
            self.sendable.insert(out.send_key(r, h));
            self.send_by_age.insert((out.birth, h));
        }
        out.send_rank = want;
    }

    /// The first live entry of the one-packet FIFO (stale entries are dropped).
    fn next_short(&mut self) -> Option<usize> {
        while let Some(&(h, birth)) = self.short_queue.front() {
            let live = self.rpcs.get(h).and_then(|r| r.msgout.as_ref());
            if live.is_some_and(|o| o.birth == birth && o.send_rank.is_some()) {
                return Some(h);
            }
            self.short_queue.pop_front();
        }
        debug_assert_eq!(
            self.short_queued, 0,
            "a queued one-packet message has no entry"
        );
        None
    }

    // Inlined into its callers (the packet path and the rare urgent one): as a call it
    // cost ~20 instructions per packet in argument passing and in copying the
    // TransmitParts out (LLVM would not inline it).
    #[inline(always)]
    fn emit_data(
        &mut self,
        now: Time,
        h: usize,
        start: u32,
        len: u32,
        retransmit_prio: Option<u8>,
        header: &mut [u8],
    ) -> Option<Written> {
        let seg = self.seg;
        let max_prio = self.config.num_priorities - 1;
        let rpc = &self.rpcs[h];
        let out = rpc.msgout.as_ref()?;
        let peer = &mut self.peers[rpc.peer()];
        let ack = if retransmit_prio.is_none() && start == 0 && rpc.is_client() {
            let port = rpc.port;
            peer.pending_acks
                .iter()
                .position(|(p, _)| *p == port)
                .map(|i| peer.pending_acks.swap_remove(i).1)
        } else {
            None
        };
        let limit = out.send_limit(seg);
        let priority = match retransmit_prio {
            Some(p) => p,
            None if start < out.unsched_end => unsched_priority(&peer.cutoffs, out.length),
            None => out.sched_priority,
        }
        .min(max_prio);
        let repr = Repr {
            common: Common {
                sport: rpc.port,
                dport: rpc.peer_addr.port(),
                sender_id: rpc.id.to_wire(),
            },
            body: Body::Data(Data {
                message_length: out.length,
                incoming: limit.max(start + len),
                ack,
                cutoff_version: peer.cutoff_version,
                retransmit: retransmit_prio.is_some(),
                offset: start,
            }),
        };
        let range = start as usize..(start + len) as usize;
        let header_len = repr.emit_header(range.len(), header).ok()?;
        let total = header_len + range.len();
        // A payload that fits behind the header is copied there: cheaper than a
        // reference-counted slice (which costs an allocation the first time a message is
        // sliced) for the short messages that dominate RPC workloads.
        let (written, rest) = match header.get_mut(header_len..total) {
            Some(room) => {
                room.copy_from_slice(&out.data[range]);
                (total, None)
            }
            None => (header_len, Some(out.data.slice(range))),
        };
        let (dest, sport) = (rpc.peer_addr, rpc.port);
        let transmit = self.account_sent(now, dest, PacketType::Data, sport, total, priority);
        Some(Written {
            transmit,
            len: written,
            rest,
        })
    }

    fn account_sent(
        &mut self,
        now: Time,
        dest: SocketAddr,
        ty: PacketType,
        src_port: u16,
        len: usize,
        priority: u8,
    ) -> Transmit {
        self.metrics.count_sent(ty, len);
        let wire = len as u64 + self.config.ip_overhead as u64 + ETHERNET_OVERHEAD;
        let nanos = wire * 8_000 / self.config.link_mbps as u64;
        self.nic_idle_at = self.nic_idle_at.max(now).plus_nanos(nanos);
        Transmit {
            dest,
            src_port,
            priority,
            len,
            packet_type: ty,
        }
    }

    fn control_priority(&self) -> u8 {
        CONTROL_PRIORITY.min(self.config.num_priorities - 1)
    }

    fn common_for(&self, h: usize) -> Common {
        let rpc = &self.rpcs[h];
        Common {
            sport: rpc.port,
            dport: rpc.peer_addr.port(),
            sender_id: rpc.id.to_wire(),
        }
    }

    fn queue_control(&mut self, dest: SocketAddr, repr: Repr) {
        self.control.push_back(Control { dest, repr });
    }

    /// Answer a packet about an RPC we do not have: ports swapped, the sender's id ^ 1.
    fn send_rpc_unknown(&mut self, from: IpAddr, c: Common) {
        let repr = Repr {
            common: Common {
                sport: c.dport,
                dport: c.sport,
                sender_id: c.sender_id ^ 1,
            },
            body: Body::RpcUnknown,
        };
        self.queue_control(SocketAddr::new(from, c.sport), repr);
    }

    fn send_busy(&mut self, h: usize) {
        let repr = Repr {
            common: self.common_for(h),
            body: Body::Busy,
        };
        let rpc = &self.rpcs[h];
        self.queue_control(rpc.peer_addr, repr);
    }

    fn send_cutoffs(&mut self, h: usize) {
        let peer = self.rpcs[h].peer();
        if self.peers[peer].cutoffs_sent_tick == Some(self.tick) {
            return;
        }
        self.peers[peer].cutoffs_sent_tick = Some(self.tick);
        let mut cutoffs = self.config.unsched_cutoffs;
        cutoffs[0] = 0; // travels as 0; receivers treat it as unlimited
        let repr = Repr {
            common: self.common_for(h),
            body: Body::Cutoffs(Cutoffs {
                unsched_cutoffs: cutoffs,
                cutoff_version: self.config.cutoff_version,
            }),
        };
        let dest = self.rpcs[h].peer_addr;
        self.queue_control(dest, repr);
    }

    /// ACK from local client port `port` to `dest`, naming `id` and carrying the acks
    /// owed for that port (at most five).
    fn send_ack(&mut self, peer: Option<usize>, dest: SocketAddr, port: u16, id: u64) {
        let mut acks = Vec::with_capacity(homa_wire::MAX_ACKS);
        if let Some(p) = peer {
            self.peers[p].pending_acks.retain(|&(p, a)| {
                if p == port && acks.len() < homa_wire::MAX_ACKS {
                    acks.push(a);
                    false
                } else {
                    true
                }
            });
        }
        let Ok(acks) = Acks::new(&acks) else { return };
        let repr = Repr {
            common: Common {
                sport: port,
                dport: dest.port(),
                sender_id: id,
            },
            body: Body::Ack(acks),
        };
        self.queue_control(dest, repr);
    }

    /// RESENDs for what `h` is missing: one per gap and one for the expected tail; or
    /// "everything" when nothing has arrived.
    fn send_resends(&mut self, h: usize) {
        let common = self.common_for(h);
        let rpc = &mut self.rpcs[h];
        rpc.resent_since_start |= rpc.is_client();
        let dest = rpc.peer_addr;
        let mut ranges = Vec::new();
        match rpc.msgin.as_ref() {
            Some(m) if m.data.is_some() && m.received > 0 => {
                ranges.extend(m.ranges.gaps(m.expected_end()).take(MAX_RESENDS_PER_ROUND));
            }
            Some(m) if m.data.is_some() => ranges.push((0, m.expected_end().max(1))),
            Some(_) => {}
            None => ranges.push((0, 0)),
        }
        for (start, end) in ranges {
            let length = if end == 0 { RESEND_ALL } else { end - start };
            let repr = Repr {
                common,
                body: Body::Resend(Resend {
                    offset: start,
                    length,
                    priority: self.control_priority(),
                }),
            };
            self.queue_control(dest, repr);
        }
    }

    // ------------------------------------------------------------------ lifecycle

    #[inline]
    fn start_clock(&mut self, now: Time) {
        if self.next_tick.is_none() {
            self.next_tick = Some(now.plus_nanos(self.config.tick_nanos));
            self.last_tick_at = now;
            self.tick_stride = 1;
        } else if self.tick_stride > 1 {
            self.tighten_clock(now);
        }
    }

    /// Something arrived or started while ticks were spaced out: tick again at the next
    /// point of the grid, counting the points passed meanwhile (so `tick` stays true to
    /// the time for the histories' horizons).
    #[cold]
    fn tighten_clock(&mut self, now: Time) {
        let tick = self.config.tick_nanos;
        let next = now.nanos_since(self.last_tick_at) / tick + 1;
        if next < self.tick_stride {
            self.tick += next - 1;
            self.last_tick_at = self.last_tick_at.plus_nanos((next - 1) * tick);
            self.tick_stride = 1;
            self.next_tick = Some(self.last_tick_at.plus_nanos(tick));
        }
    }

    /// The peer at `addr`, if known. The last one found is remembered: an endpoint often
    /// deals with one peer many times in a row (a client with its server), and comparing
    /// an address costs much less than hashing it.
    #[inline]
    fn find_peer(&mut self, addr: IpAddr) -> Option<usize> {
        match self.last_peer {
            Some((a, p)) if a == addr => Some(p),
            _ => self.look_up_peer(addr),
        }
    }

    /// `find_peer` for a peer other than the last one.
    fn look_up_peer(&mut self, addr: IpAddr) -> Option<usize> {
        let p = *self.peer_index.get(&addr)?;
        self.last_peer = Some((addr, p));
        Some(p)
    }

    /// The history of the client socket `key` (address, port), if it has one. The last
    /// one found is remembered, as the last peer is: requests often come from one
    /// client socket many times in a row.
    #[inline]
    fn find_history(&mut self, key: (IpAddr, u16)) -> Option<usize> {
        match self.last_history {
            Some((k, i)) if k == key => Some(i),
            _ => self.look_up_history(key),
        }
    }

    /// `find_history` for a client socket other than the last one.
    fn look_up_history(&mut self, key: (IpAddr, u16)) -> Option<usize> {
        let i = *self.history_index.get(&key)?;
        self.last_history = Some((key, i));
        Some(i)
    }

    /// The peer at `addr`, made if new.
    #[inline]
    fn peer_for(&mut self, addr: IpAddr) -> usize {
        match self.find_peer(addr) {
            Some(p) => p,
            None => self.new_peer(addr),
        }
    }

    fn new_peer(&mut self, addr: IpAddr) -> usize {
        self.peers.push(Peer::new());
        self.peer_index.insert(addr, self.peers.len() - 1);
        self.peers.len() - 1
    }

    /// May a new outgoing message of `len` bytes be taken on?
    fn admit(&self, len: usize) -> Result<(), Refused> {
        let max = self.config.max_message_length;
        if len == 0 {
            Err(Refused::Empty)
        } else if len > max as usize {
            Err(Refused::TooLong { len, max })
        } else if self.outgoing_held + len as u64 > self.config.max_outgoing_held {
            Err(Refused::WouldBlock)
        } else {
            Ok(())
        }
    }

    #[inline]
    fn drop_msgin(&mut self, h: usize) {
        // Most RPCs are freed after their message was delivered.
        if self.rpcs[h].msgin.is_some() {
            self.drop_msgin_now(h);
        }
    }

    fn drop_msgin_now(&mut self, h: usize) {
        let Some(m) = self.rpcs[h].msgin.as_ref() else {
            return;
        };
        // If it held grant budget or a place among the active messages, others get them.
        let scheduled = m.grant_rank.is_some() || m.counted_outstanding > 0;
        self.sched_remove(h);
        let Some(m) = self.rpcs[h].msgin.take() else {
            return;
        };
        self.total_incoming -= m.counted_outstanding as u64;
        self.unqueue_stalled((m.birth, h));
        if let Some(buf) = m.data {
            self.incoming_held -= m.length as u64;
            let rpc = &self.rpcs[h];
            if !rpc.is_client() {
                self.peers[rpc.peer()].req_held -= m.length as u64;
            }
            buf.recycle(&mut self.pool);
            self.unstall();
        }
        if scheduled {
            self.run_grants();
        }
    }

    fn free_rpc(&mut self, h: usize) {
        let rpc = &self.rpcs[h];
        if rpc.is_client() {
            self.client_rpcs.remove(rpc.id.0);
        } else {
            self.server_rpcs.remove(&rpc.server_key());
        }
        self.free_unlinked(h);
    }

    /// `free_rpc` for an RPC already taken out of `client_rpcs` or `server_rpcs`.
    // Inline into its two callers (free_rpc, apply_ack): every RPC ends here, and the
    // call's register saves cost more than most of what it does for a short message.
    #[inline(always)]
    fn free_unlinked(&mut self, h: usize) {
        self.drop_msgin(h);
        let rpc = &self.rpcs[h];
        if let Some(out) = rpc.msgout.as_ref() {
            if let Some(r) = out.send_rank {
                if out.length <= self.seg {
                    self.short_queued -= 1; // (its queue entry is skipped when reached)
                } else {
                    self.sendable.remove(&out.send_key(r, h));
                    self.send_by_age.remove(&(out.birth, h));
                }
            }
            self.outgoing_held -= out.length as u64;
        }
        if !rpc.is_client() {
            let executed = rpc.state != State::Incoming;
            // A history outlives its socket's RPCs: the sweep drops only idle ones.
            if let Some((_, hist)) = self.histories.get_mut(rpc.history as usize) {
                hist.note_freed(rpc.id.client_id(), executed, self.tick);
            }
        }
        self.rpcs.remove(h);
    }

    fn fail(&mut self, h: usize, error: RpcError) {
        let rpc = &self.rpcs[h];
        self.events.push_back(Event::Failed {
            port: rpc.port,
            id: rpc.id,
            cookie: rpc.cookie,
            peer: rpc.peer_addr,
            private: rpc.private,
            error,
        });
        self.free_rpc(h);
    }

    fn discard_server(&mut self, h: usize) {
        self.free_rpc(h);
        self.run_grants();
    }

    fn fail_or_discard(&mut self, h: usize, error: RpcError) {
        if self.rpcs[h].is_client() {
            self.fail(h, error);
        } else {
            self.discard_server(h);
        }
    }

    /// Keep at most `RESENDS_PER_PEER` RESENDs and `NEED_ACKS_PER_PEER` NEED_ACKs per
    /// peer among a tick's `actions`: those of the RPCs silent longest, of the responses
    /// unacknowledged longest. Many RPCs waiting on one peer can mean it is overloaded or
    /// stalled; a request for each of them every tick would cost it (and us) more than
    /// it can spare, so that it never catches up (measured on 2 hosts over raw IP: 65k
    /// NEED_ACKs and 65k RESENDs a second, no goodput). Linux Homa limits RESENDs per
    /// peer too. The RESEND limit is the looser: on a lossy path many RPCs to one
    /// healthy peer need one at once (with 2 a tick, 128 RPCs in flight through 10% loss
    /// timed out some); a NEED_ACK only frees the peer's state. A skipped RESEND is owed:
    /// it goes at a later tick, not a whole `resend_interval` later.
    fn limit_per_peer(&mut self, actions: &mut [(usize, TickAction)]) {
        // (peer, is NEED_ACK, age, index in actions), oldest first within a peer.
        let ranked = &mut self.scratch_ranked;
        ranked.clear();
        for (i, &(h, action)) in actions.iter().enumerate() {
            let rpc = &self.rpcs[h];
            match action {
                TickAction::Resend => ranked.push((rpc.peer(), false, rpc.silent_ticks, i)),
                TickAction::NeedAck => ranked.push((rpc.peer(), true, rpc.ack_wait_ticks, i)),
                _ => {}
            }
        }
        ranked.sort_unstable_by_key(|&(p, need_ack, age, i)| (p, need_ack, u32::MAX - age, i));
        let mut run = 0;
        for k in 0..ranked.len() {
            let (p, need_ack, _, i) = ranked[k];
            run = if k > 0 && (ranked[k - 1].0, ranked[k - 1].1) == (p, need_ack) {
                run + 1
            } else {
                0
            };
            let limit = if need_ack {
                NEED_ACKS_PER_PEER
            } else {
                RESENDS_PER_PEER
            };
            let (h, over) = (actions[i].0, run >= limit);
            if over {
                actions[i].1 = TickAction::Skipped;
            }
            if !need_ack {
                self.rpcs[h].resend_owed = over;
            }
        }
    }

    fn on_tick(&mut self) {
        let c = &self.config;
        let (resend_ticks, interval, timeout) =
            (c.resend_ticks, c.resend_interval, c.timeout_ticks);
        let (ack_ticks, seg, tick) = (c.request_ack_ticks, self.seg, self.tick);
        let mut actions = std::mem::take(&mut self.scratch);
        for (h, rpc) in self.rpcs.iter_mut() {
            let sending = rpc.msgout.as_ref().is_some_and(|o| o.has_fresh_bytes(seg));
            let waiting_on_peer = match rpc.state {
                State::Client => !sending && rpc.msgin.as_ref().is_none_or(InMsg::waiting_on_peer),
                State::Incoming if rpc.msgin.as_ref().is_some_and(|m| m.data.is_none()) => {
                    // Stalled: it waits for our buffer space, not for its client. A live
                    // client's RESENDs (answered BUSY) reset the count; a sender that
                    // never speaks again, such as a forged one, is dropped after
                    // timeout_ticks instead of holding a stalled slot for ever.
                    rpc.silent_ticks += 1;
                    if rpc.silent_ticks >= timeout {
                        actions.push((h, TickAction::Discard));
                    }
                    continue;
                }
                State::Incoming => rpc.msgin.as_ref().is_some_and(InMsg::waiting_on_peer),
                State::InService => false,
                State::Outgoing => {
                    let fully_sent = rpc.msgout.as_ref().is_none_or(OutMsg::fully_sent);
                    if fully_sent {
                        rpc.ack_wait_ticks += 1;
                        if rpc.ack_wait_ticks >= ack_ticks + timeout {
                            actions.push((h, TickAction::Discard));
                        } else if rpc.ack_wait_ticks >= ack_ticks {
                            actions.push((h, TickAction::NeedAck));
                        }
                    } else if !sending {
                        // Waiting for grants. The client may be busy granting others, so
                        // don't nag early; from timeout/2 on, ask whether it still knows
                        // the RPC: it answers BUSY (alive, keep waiting) or RPC_UNKNOWN.
                        rpc.silent_ticks += 1;
                        let (s, half) = (rpc.silent_ticks, timeout / 2);
                        if s >= timeout {
                            actions.push((h, TickAction::Discard));
                        } else if s >= half && (s - half) % interval == 0 {
                            actions.push((h, TickAction::Probe));
                        }
                        continue;
                    }
                    false
                }
            };
            if !waiting_on_peer {
                rpc.silent_ticks = 0;
                continue;
            }
            rpc.silent_ticks += 1;
            let s = rpc.silent_ticks;
            if s >= timeout {
                actions.push((h, TickAction::Timeout));
            } else if s >= resend_ticks && ((s - resend_ticks) % interval == 0 || rpc.resend_owed) {
                actions.push((h, TickAction::Resend));
            }
        }
        self.limit_per_peer(&mut actions);
        for (h, action) in actions.drain(..) {
            match action {
                TickAction::Skipped => {}
                TickAction::Resend => self.send_resends(h),
                TickAction::NeedAck => {
                    let repr = Repr {
                        common: self.common_for(h),
                        body: Body::NeedAck,
                    };
                    let rpc = &self.rpcs[h];
                    self.queue_control(rpc.peer_addr, repr);
                }
                TickAction::Timeout => {
                    self.metrics.timeouts += 1;
                    if self.rpcs[h].is_client() {
                        self.fail(h, RpcError::Timeout);
                    } else {
                        self.discard_server(h);
                    }
                }
                TickAction::Probe => {
                    let repr = Repr {
                        common: self.common_for(h),
                        body: Body::Resend(Resend {
                            offset: 0,
                            length: 0,
                            priority: self.control_priority(),
                        }),
                    };
                    let rpc = &self.rpcs[h];
                    self.queue_control(rpc.peer_addr, repr);
                }
                TickAction::Discard => {
                    self.metrics.timeouts += 1;
                    self.discard_server(h);
                }
            }
        }
        self.scratch = actions;
        if tick % HISTORY_SWEEP_TICKS == 0 {
            let horizon = self.config.dedup_horizon_ticks as u64;
            let idle = self.config.client_history_idle_ticks as u64;
            let index = &mut self.history_index;
            self.last_history = None;
            self.histories.retain(|_, (key, h)| {
                let drop = h.compact(tick, horizon, idle);
                if drop {
                    index.remove(key);
                }
                !drop
            });
        }
        if self.rpcs.is_empty() && self.histories.is_empty() {
            self.next_tick = None;
        }
    }
}
