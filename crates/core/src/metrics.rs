//! Counters the engine keeps; [`crate::Endpoint::metrics`] returns a snapshot.

use homa_wire::PacketType;

/// Why a received packet was dropped without effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// The bytes did not parse (truncated, unknown type, bad lengths...).
    Malformed,
    /// Addressed to a port with no socket.
    NoSocket,
    /// About an RPC this endpoint does not have (late or duplicate DATA, a GRANT for a
    /// request given up on). Not answered: RPC_UNKNOWN goes only in answer to a RESEND.
    UnknownRpc,
    /// A request packet for an RPC that was already executed (at-most-once).
    AlreadyExecuted,
    /// Inconsistent with the RPC's state (e.g. a different message_length).
    Inconsistent,
    /// Data that arrived while the message had no buffer space (it will be re-requested),
    /// or a request refused without state: no buffer space or waiting slot for it, or
    /// no room for a new peer or client history (its client retries).
    NoBuffer,
    /// DATA the receiver does not take: past what its sender may send (the grant and
    /// the unscheduled bytes it declared), or one more fragment of a message already
    /// received in too many pieces. A conforming sender never sends the first; the
    /// second only after heavy loss, and the bytes are asked for again.
    Excess,
    /// A request (or a client's RESEND) for a bound socket that does not take requests: a
    /// client-only socket (port 0 without `server`), or one whose server role was turned
    /// off. Counted apart from [`DropReason::NoSocket`] because it is usually a mistake
    /// on this side: the application meant the socket to serve.
    NotServer,
}

impl DropReason {
    /// Every reason, for iteration.
    pub const ALL: [DropReason; 8] = [
        DropReason::Malformed,
        DropReason::NoSocket,
        DropReason::UnknownRpc,
        DropReason::AlreadyExecuted,
        DropReason::Inconsistent,
        DropReason::NoBuffer,
        DropReason::Excess,
        DropReason::NotServer,
    ];
    /// A stable name for labels.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::NoSocket => "no_socket",
            DropReason::UnknownRpc => "unknown_rpc",
            DropReason::AlreadyExecuted => "already_executed",
            DropReason::Inconsistent => "inconsistent",
            DropReason::NoBuffer => "no_buffer",
            DropReason::Excess => "excess",
            DropReason::NotServer => "not_server",
        }
    }
}

/// A snapshot of the engine's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Packets sent, indexed by `type code - 0x10`.
    pub packets_sent: [u64; 9],
    /// Homa bytes (headers + payload) sent, by type.
    pub bytes_sent: [u64; 9],
    /// Packets received and parsed, by type.
    pub packets_received: [u64; 9],
    /// Homa bytes received, by type.
    pub bytes_received: [u64; 9],
    /// Dropped packets, indexed like [`DropReason::ALL`].
    pub drops: [u64; 8],
    /// Malformed packets by parse error, indexed like `homa_wire::ParseError::REASONS`
    /// (their sum is `drops[Malformed]`).
    pub malformed: [u64; 6],
    /// DATA packets retransmitted in answer to RESENDs.
    pub retransmitted_packets: u64,
    /// RPCs that failed or were discarded because the peer went silent.
    pub timeouts: u64,
    /// Requests delivered to server sockets.
    pub requests_delivered: u64,
    /// Responses delivered to clients.
    pub responses_delivered: u64,
    /// One-way messages delivered to the sockets that took them.
    pub one_way_delivered: u64,
    /// Our one-way messages their receivers acknowledged.
    pub one_way_acked: u64,
    /// Times we learned new unscheduled cutoffs (`Config::learn_cutoffs_ticks`).
    pub cutoff_updates: u64,
    /// Client RPCs restarted after RPC_UNKNOWN.
    pub restarts: u64,
    /// Client RPCs failed with `RpcError::RequestLost`: restarted again and again, their
    /// request never got to the server whole (a path dropping long packets?).
    pub requests_lost: u64,
    /// Live client RPCs.
    pub client_rpcs: u64,
    /// Live server RPCs.
    pub server_rpcs: u64,
    /// Peers known (hosts with RPCs, or heard from lately; see `Config::peer_net_max`).
    pub peers: u64,
    /// Client sockets whose at-most-once history is kept (see
    /// `Config::max_client_histories`).
    pub client_histories: u64,
    /// Bytes of incoming message data held (being received or not yet released).
    pub incoming_held: u64,
    /// Bytes of outgoing message data held (requests and responses).
    pub outgoing_held: u64,
    /// The part of `outgoing_held` that is responses (each part has its own cap,
    /// `max_outgoing_held`).
    pub outgoing_responses_held: u64,
    /// Granted-but-unreceived bytes (incl. unscheduled bytes expected).
    pub total_incoming: u64,
}

fn type_index(t: PacketType) -> usize {
    (t.code() - 0x10) as usize
}

impl Metrics {
    /// Packets of `t` sent.
    pub fn sent(&self, t: PacketType) -> u64 {
        self.packets_sent[type_index(t)]
    }
    /// Packets of `t` received.
    pub fn received(&self, t: PacketType) -> u64 {
        self.packets_received[type_index(t)]
    }
    /// Drops for `r`.
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }
    pub(crate) fn count_sent(&mut self, t: PacketType, bytes: usize) {
        self.packets_sent[type_index(t)] += 1;
        self.bytes_sent[type_index(t)] += bytes as u64;
    }
    pub(crate) fn count_received(&mut self, t: PacketType, bytes: usize) {
        self.packets_received[type_index(t)] += 1;
        self.bytes_received[type_index(t)] += bytes as u64;
    }
    pub(crate) fn count_drop(&mut self, r: DropReason) {
        self.drops[r as usize] += 1;
    }
}
