//! Every tunable of the engine, under the Linux module's sysctl names where it has one.

/// Engine configuration. [`Config::default`] gives the Linux module's defaults
/// (PROTOCOL.md section 6) plus this implementation's own limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Bytes of a message sent without grants (rounded up to whole packets).
    pub unsched_bytes: u32,
    /// Cap on granted-but-not-received bytes across all incoming messages.
    pub max_incoming: u32,
    /// Incoming messages granted to at once.
    pub max_overcommit: u32,
    /// Granted-but-unreceived bytes per active message; 0 = max_incoming / (active + 1).
    pub window: u32,
    /// A new GRANT goes out for a message once it raises the grant by at least its window
    /// divided by this (and a whole packet): larger steps, fewer GRANTs. Not a Linux
    /// module parameter. The engine's default, 16, keeps the module's GRANT per packet or
    /// two; a userspace runtime, for which each GRANT costs both hosts a system call and
    /// the sender a wake-up, uses 2 (see `homa::Options`): the sender then always holds
    /// at least half its window.
    pub grant_step_divisor: u32,
    /// When nonzero, a message is granted again only once its granted-but-unreceived
    /// bytes have fallen to this many, and then up to its whole window: one GRANT per
    /// `window - grant_lead_bytes` bytes (or per `grant_step_divisor`-th of the window,
    /// whichever is more). A sender keeps its link busy while a GRANT travels if it still
    /// holds about a round trip's worth of granted bytes when the GRANT leaves, which is
    /// what `unsched_bytes` is sized to (the module's older name for it, `rtt_bytes`):
    /// `homa::Options` sets this to `unsched_bytes` unless told otherwise. Not a Linux
    /// module parameter; 0 (the engine's default) leaves the step to the divisor alone.
    pub grant_lead_bytes: u32,
    /// Per mille of granted bytes that go to the oldest incoming message.
    pub grant_fifo_fraction: u32,
    /// Bytes granted to the oldest message at a time.
    pub fifo_grant_increment: u32,
    /// Per mille of transmitted bytes that go to the oldest outgoing message.
    pub pacer_fifo_fraction: u32,
    /// Uplink speed the pacer models, megabits per second.
    pub link_mbps: u32,
    /// Most data the pacer lets queue in the NIC, in microseconds of link time.
    pub max_nic_est_backlog_usecs: u32,
    /// Messages shorter than this bypass the pacer.
    pub defer_min_bytes: u32,
    /// Network priority levels in use (1..=8).
    pub num_priorities: u8,
    /// Highest priority used for scheduled bytes; the ones above are for unscheduled bytes.
    pub max_sched_prio: u8,
    /// Index = priority; value = the longest message that uses it for unscheduled bytes
    /// (slot 0 is ignored; a message longer than every cutoff takes the lowest level
    /// that has one). Sent to peers in CUTOFFS packets. Only the unscheduled levels,
    /// `max_sched_prio + 1 .. num_priorities`, may have cutoffs, and at least one must.
    pub unsched_cutoffs: [u32; 8],
    /// Version of `unsched_cutoffs` (peers echo it in DATA; a stale echo triggers CUTOFFS).
    /// At least 1: a peer that has heard no CUTOFFS echoes 0, so with version 0 it would
    /// never be sent ours.
    pub cutoff_version: u16,
    /// Silent ticks before the first RESEND.
    pub resend_ticks: u32,
    /// Ticks between RESENDs after the first.
    pub resend_interval: u32,
    /// Not a Linux module parameter. 0 (the default, the module's way): a RESEND answered
    /// BUSY is repeated after `resend_ticks` more silent ticks, however often the peer
    /// says it is busy. Otherwise each BUSY in a row (since the peer last sent data or a
    /// grant for the RPC) doubles that wait, up to this many ticks: a server that is
    /// alive but slow to answer (its queue, or a long request waiting behind shorter ones
    /// in a congested switch) is asked less often. Loss is still recovered: what a
    /// RESEND would recover only a BUSY-less silence can hide, and the first RESEND after
    /// data or a grant comes after `resend_ticks`. A userspace runtime, where each
    /// RESEND and BUSY costs both hosts a system call and a wake-up, uses 20 (see
    /// `homa::Options`). Used up to `timeout_ticks / 2` (a lower `timeout_ticks` lowers
    /// it), so that a live peer is always asked well within the timeout. With it on, a
    /// client whose request has had no grant yet, once answered BUSY (or from the start,
    /// while the same server has answered BUSY for another of its RPCs within
    /// `timeout_ticks / 2`), waits for grants as for a partly granted request: its next
    /// RESEND comes at `timeout_ticks / 2` of silence (the server holds the request and
    /// asks for what it lost itself). While that peer talks to us (it sent anything
    /// within `timeout_ticks / 2`), a message waiting for its grants waits twice as long
    /// (a whole timeout) for each such RESEND, four times after three BUSY answers in a
    /// row (see docs/PROTOCOL.md).
    pub resend_backoff_max_ticks: u32,
    /// Silent ticks after which an RPC fails (client) or is discarded (server).
    pub timeout_ticks: u32,
    /// Ticks after a response is fully sent before the server starts asking for an ACK.
    pub request_ack_ticks: u32,
    /// Client: every fresh DATA packet of a request may carry one of the acks owed to its
    /// server from the same port (the oldest), as the Linux module's DATA packets each
    /// take one from their peer's list. false: only a request's first packet does, so
    /// acks for RPCs that ended while a long request was being sent wait for the next
    /// request, and often for the server's NEED_ACK. (The simulator keeps false, with
    /// which its published tables were measured.)
    pub acks_in_every_packet: bool,
    /// Busy-wait before sleeping on receive, microseconds (used by runtimes).
    pub poll_usecs: u32,
    /// Receive buffer page size (used by runtimes' buffer pools).
    pub bpage_size: u32,
    /// Longest message accepted or sent: 1,000,000 by default, the Linux module's
    /// (`HOMA_MAX_MESSAGE_LENGTH`), which a peer of the module must keep. Between peers of
    /// this engine it may be raised up to 2^30 (the wire's length and offsets are 32
    /// bits), on both sides: a receiver drops DATA longer than its own limit. Memory
    /// follows the bytes received, not this length (receive pages are taken as bytes
    /// arrive); the caps `max_incoming_held` and `max_outgoing_held` still bound what is
    /// held, so a message longer than either cannot be received or sent (the sender is told
    /// it is too long).
    pub max_message_length: u32,
    /// Peers known at or above which idle ones are forgotten (below it, none is). A peer
    /// is only ever forgotten while it holds nothing: no RPCs, no acks owed to it, no
    /// buffer space and no grantable messages. 64 by default (the Linux module's is
    /// 5,000, which would keep 4,999 peers of a flood of forged sources for ever; see
    /// PROTOCOL.md section 6).
    pub peer_gc_threshold: u32,
    /// Seconds a peer must have been idle (nothing received from its address) before
    /// it may be forgotten while the table holds more than `peer_net_max` peers.
    pub peer_idle_secs_min: u32,
    /// Seconds of idleness after which a peer is forgotten whenever the table holds at
    /// least `peer_gc_threshold` peers.
    pub peer_idle_secs_max: u32,
    /// Peers past which those idle for `peer_idle_secs_min` are forgotten. Also the
    /// most that packets from the network can make: a request from a new address first
    /// makes room by forgetting the peers idle longest that hold nothing, and when every
    /// peer holds something it is refused without any state (its client retries), so a
    /// flood of forged source addresses costs at most this many peers.
    pub peer_net_max: u32,

    // ---- this implementation's own settings ----
    /// Rank messages by bytes remaining (SRPT, Homa's policy) when granting and sending.
    /// `false` ranks them by age instead (FIFO), to measure what SRPT buys.
    pub srpt: bool,
    /// Sender: choose each unscheduled packet's priority from the bytes of its message
    /// that remain from that packet on, rather than from the message's length (the Linux
    /// module). The SIGCOMM paper's simulator does so, and its receivers' cutoffs divide
    /// remaining sizes: the later packets of a message climb to higher priorities.
    pub unsched_prio_by_remaining: bool,
    /// Receiver: a message's GRANTs for its last `grant_tail_bytes` take the unscheduled
    /// priority (by our own cutoffs) of the bytes it has left, when that is higher than
    /// its scheduled priority, as the SIGCOMM paper's simulator does for the last round
    /// trip of bytes. 0: off (the Linux module).
    pub grant_tail_bytes: u32,
    /// Receiver: every this many ticks, set our unscheduled cutoffs from the messages we
    /// received lately (the most recent 4,096 lengths), giving each unscheduled level an
    /// equal share of their unscheduled bytes, as the SIGCOMM paper does from a workload's
    /// distribution; senders learn them through CUTOFFS as usual (`cutoff_version`
    /// changes). 0: off, the cutoffs stay `unsched_cutoffs` (the Linux module takes them
    /// from a sysctl).
    pub learn_cutoffs_ticks: u32,
    /// Sender: one-packet messages wait in a FIFO per priority level (their unscheduled
    /// priority toward their receiver) and go highest level first, as the SIGCOMM
    /// paper's sender sends the shortest first. `false`: one FIFO, in the order sent (the
    /// Linux module sends short messages at once, from the sending thread).
    pub short_messages_by_priority: bool,
    /// Sender: one-packet messages take their place in the SRPT order of every message
    /// (fewest bytes left first, then oldest), as the SIGCOMM paper's sender picks its
    /// next packet from the message with the fewest bytes left, whatever its length.
    /// `false`: they wait in the one-packet FIFO (see `short_messages_by_priority`),
    /// which goes before every longer message and costs no ordering per message.
    pub short_messages_srpt: bool,
    /// Length of a timer tick, nanoseconds (1 ms, like Linux Homa's timer).
    pub tick_nanos: u64,
    /// Link MTU: the largest IP packet.
    pub mtu: u32,
    /// Bytes of IP (and UDP, in UDP mode) header in front of every Homa header.
    pub ip_overhead: u32,
    /// Cap on bytes of incoming message data held: messages being received plus
    /// delivered messages the application has not released. At the cap the engine stops
    /// granting and stalls new messages; it never drops data already accepted.
    pub max_incoming_held: u64,
    /// Most messages that may wait for buffer space at once (each keeps a small RPC
    /// record). Past it, a new request that cannot get a buffer is refused without
    /// creating any state: its client's RESEND gets RPC_UNKNOWN and it tries again. This
    /// bounds what a flood of forged DATA (distinct ids, large lengths) can cost.
    pub max_stalled_messages: u32,
    /// Largest share, in percent, of `max_incoming_held` and of `max_stalled_messages`
    /// that requests still arriving from one peer address may take. A peer past its
    /// share has its new requests stalled, then refused, while other peers' requests are
    /// still buffered; a peer holding nothing may always take one message. Keeps one
    /// host, or a flood of forged DATA from one address, from locking the others out.
    pub max_peer_share_percent: u32,
    /// Cap on bytes of outgoing requests held, and the same cap again on outgoing
    /// responses; past it `send_request` (or `reply`) reports "would block". Separate
    /// budgets, so that a reply never waits for this host's own requests to finish.
    pub max_outgoing_held: u64,
    /// How long (ticks) the server remembers which requests of a client socket were
    /// executed, for at-most-once (see `history.rs`). Must exceed `timeout_ticks` plus
    /// the longest a packet can be delayed.
    pub dedup_horizon_ticks: u32,
    /// Ticks of complete idleness after which a client socket's history is dropped. At
    /// least `dedup_horizon_ticks`: a history dropped sooner forgets requests whose
    /// late duplicates can still arrive, and such a duplicate would run again.
    pub client_history_idle_ticks: u32,
    /// Most client histories kept (see `dedup_horizon_ticks`). At the limit, a request
    /// from a new client socket first makes room by dropping the histories idle longest
    /// among those with nothing live and no activity for `dedup_horizon_ticks` (safe:
    /// no packet of theirs can still arrive); if there are none, it is refused without
    /// any state, and its client retries.
    pub max_client_histories: u32,
    /// First client RPC id (rounded up to even). 0 (the default): drawn from the
    /// operating system's random source by [`Endpoint::new`](crate::Endpoint::new), so
    /// that no one off the path can guess the ids of live RPCs (PROTOCOL.md section 2)
    /// and a restarted process does not reuse its predecessor's; servers tell a new
    /// socket on an old port from a late packet of the old one (see `history.rs`). Set
    /// it (and `seed`) only for runs that must repeat exactly: 2 numbers ids from 2.
    pub client_id_base: u64,
    /// Seed for the engine's randomness (automatic port choice). The same seed and the
    /// same inputs give the same outputs. 0 (the default): drawn from the operating
    /// system's random source by `Endpoint::new`; the harness and simulator set their own.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            unsched_bytes: 40_000,
            max_incoming: 400_000,
            max_overcommit: 8,
            window: 0,
            grant_step_divisor: 16,
            grant_lead_bytes: 0,
            grant_fifo_fraction: 50,
            fifo_grant_increment: 50_000,
            pacer_fifo_fraction: 50,
            link_mbps: 25_000,
            max_nic_est_backlog_usecs: 5,
            defer_min_bytes: 1_000,
            num_priorities: 8,
            max_sched_prio: 3,
            unsched_cutoffs: [0, 0, 0, 0, 1_000_000, 15_000, 2_800, 200],
            cutoff_version: 1,
            resend_ticks: 5,
            resend_interval: 5,
            timeout_ticks: 100,
            request_ack_ticks: 2,
            resend_backoff_max_ticks: 0,
            poll_usecs: 50,
            bpage_size: 65_536,
            max_message_length: homa_wire::HOMA_MAX_MESSAGE_LENGTH,
            peer_gc_threshold: 64,
            peer_idle_secs_min: 10,
            peer_idle_secs_max: 120,
            peer_net_max: 10_000,
            srpt: true,
            unsched_prio_by_remaining: false,
            acks_in_every_packet: true,
            grant_tail_bytes: 0,
            learn_cutoffs_ticks: 0,
            short_messages_by_priority: false,
            short_messages_srpt: false,
            tick_nanos: 1_000_000,
            mtu: 1_500,
            ip_overhead: 28,
            max_incoming_held: 256 << 20,
            max_stalled_messages: 1_024,
            max_peer_share_percent: 25,
            max_outgoing_held: 256 << 20,
            dedup_horizon_ticks: 1_000,
            client_history_idle_ticks: 60_000,
            max_client_histories: 65_536,
            client_id_base: 0,
            seed: 0,
        }
    }
}

/// A configuration value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Message bytes in a full DATA packet (0 for an MTU too small for any, which
    /// [`validate`](Self::validate) refuses).
    pub fn max_segment(&self) -> u32 {
        self.mtu
            .saturating_sub(self.ip_overhead)
            .saturating_sub(homa_wire::DATA_HEADER_LEN as u32)
    }

    /// `unsched_cutoffs` against the levels: peers send by them, so a cutoff on a level
    /// this host does not use, or on one it keeps for granted bytes, would put their
    /// unscheduled bytes there; and with no cutoff on any unscheduled level, every
    /// unscheduled byte would travel at priority 0, below every granted one. (The Linux
    /// module derives `max_sched_prio` from its cutoffs and zeroes those above
    /// `num_priorities`; here both are set, so a mismatch is refused.)
    fn check_cutoffs(&self) -> Result<(), ConfigError> {
        let (n, sched) = (self.num_priorities as usize, self.max_sched_prio as usize);
        let c = &self.unsched_cutoffs;
        // (Slot 0 travels as 0 and means "everything longer": never looked at.)
        let misplaced = (1..=sched).chain(n..8).find(|&i| c[i] != 0);
        if let Some(i) = misplaced {
            let why = if i > sched {
                format!(
                    "only levels 0..={} are in use (num_priorities = {n})",
                    n - 1
                )
            } else {
                format!("level {i} is for granted bytes (max_sched_prio = {sched})")
            };
            return Err(ConfigError(format!(
                "unsched_cutoffs[{i}] is {}, but {why}: give it 0, and the unscheduled \
                 levels {}..={} the cutoffs",
                c[i],
                sched + 1,
                n - 1
            )));
        }
        if sched + 1 < n && c[sched + 1..n].iter().all(|&x| x == 0) {
            return Err(ConfigError(format!(
                "unsched_cutoffs gives the unscheduled levels {}..={} no messages: every \
                 unscheduled byte would travel at priority 0; the lowest of them usually \
                 takes every length (max_message_length)",
                sched + 1,
                n - 1
            )));
        }
        Ok(())
    }

    /// Check ranges and relations between values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError(m.to_string()));
        // Every value is range-checked, so that nothing computed from them later can
        // overflow or divide by zero.
        if self.ip_overhead > 100 {
            return bad("ip_overhead must be at most 100 bytes");
        }
        if self.mtu < self.ip_overhead + homa_wire::DATA_HEADER_LEN as u32 + 64 {
            return bad("mtu leaves too little room for payload");
        }
        if self.mtu > 65_535 {
            return bad("mtu must be at most 65535 (the largest IP packet)");
        }
        if !(1_024..=1 << 24).contains(&self.bpage_size) {
            return bad("bpage_size must be 1024..=16777216");
        }
        if self.max_incoming_held == 0 || self.max_outgoing_held == 0 {
            return bad("max_incoming_held and max_outgoing_held must be positive");
        }
        if self.max_incoming_held > 1 << 48 || self.max_outgoing_held > 1 << 48 {
            return bad("max_incoming_held and max_outgoing_held must be at most 2^48");
        }
        if !(1..=1 << 20).contains(&self.max_stalled_messages) {
            return bad("max_stalled_messages must be 1..=1048576");
        }
        if self.tick_nanos > 1_000_000_000_000 {
            return bad("tick_nanos must be at most 1000 s");
        }
        if self.timeout_ticks > 1 << 24 || self.resend_ticks > 1 << 24 {
            return bad("timeout_ticks and resend_ticks must be at most 2^24");
        }
        if self.request_ack_ticks > 1 << 24 {
            return bad("request_ack_ticks must be at most 2^24");
        }
        if self.resend_backoff_max_ticks > 1 << 24 {
            return bad("resend_backoff_max_ticks must be at most 2^24");
        }
        if self.client_id_base > u64::MAX / 2 {
            return bad("client_id_base must be at most 2^63");
        }
        if self.max_message_length > 1 << 30 {
            return bad("max_message_length must be at most 2^30");
        }
        if !(1..=8).contains(&self.num_priorities) {
            return bad("num_priorities must be 1..=8");
        }
        if self.max_sched_prio >= self.num_priorities {
            return bad("max_sched_prio must be below num_priorities");
        }
        self.check_cutoffs()?;
        if !(1..=1_024).contains(&self.grant_step_divisor) {
            return bad("grant_step_divisor must be 1..=1024");
        }
        if self.max_overcommit == 0 || self.max_incoming == 0 {
            return bad("max_overcommit and max_incoming must be positive");
        }
        if self.grant_fifo_fraction > 500 || self.pacer_fifo_fraction > 500 {
            return bad("fifo fractions are per mille and at most 500");
        }
        if self.grant_fifo_fraction > 0 && self.fifo_grant_increment == 0 {
            return bad("fifo_grant_increment must be positive");
        }
        if self.resend_interval == 0 || self.resend_ticks == 0 || self.timeout_ticks == 0 {
            return bad("resend_ticks, resend_interval and timeout_ticks must be positive");
        }
        if self.timeout_ticks <= self.resend_ticks {
            // An RPC missing a packet would time out before it asked for the packet.
            return bad("timeout_ticks must exceed resend_ticks");
        }
        if self.dedup_horizon_ticks <= self.timeout_ticks {
            return bad("dedup_horizon_ticks must exceed timeout_ticks");
        }
        if self.client_history_idle_ticks < self.dedup_horizon_ticks {
            // A late duplicate of an executed request would find no history and run again.
            return bad("client_history_idle_ticks must be at least dedup_horizon_ticks");
        }
        if self.cutoff_version == 0 {
            // 0 is what a peer echoes before it has heard any CUTOFFS.
            return bad("cutoff_version must be at least 1");
        }
        if self.poll_usecs > 1_000_000 {
            // A thread that finds nothing to do spins this long before it sleeps.
            return bad("poll_usecs must be at most 1000000 (1 s)");
        }
        if self.tick_nanos == 0 || self.link_mbps == 0 {
            return bad("tick_nanos and link_mbps must be positive");
        }
        if self.timeout_ticks as u64 * self.tick_nanos < 1_000_000 {
            // Shorter than any round trip plus scheduling delay: every RPC would time out.
            return bad("an RPC's timeout, timeout_ticks x tick_nanos, must be at least 1 ms");
        }
        if !(1..=100).contains(&self.max_peer_share_percent) {
            return bad("max_peer_share_percent must be 1..=100");
        }
        if self.peer_gc_threshold > 1 << 24 || !(1..=1 << 24).contains(&self.peer_net_max) {
            return bad("peer_gc_threshold must be at most 2^24, peer_net_max 1..=2^24");
        }
        if self.peer_idle_secs_min > self.peer_idle_secs_max || self.peer_idle_secs_max > 1 << 20 {
            return bad("peer_idle_secs_min must be at most peer_idle_secs_max, at most 2^20");
        }
        if !(1..=1 << 24).contains(&self.max_client_histories) {
            return bad("max_client_histories must be 1..=2^24");
        }
        if self.max_message_length == 0 {
            return bad("max_message_length must be positive");
        }
        if self.unsched_bytes == 0 {
            // A message's first packet goes unasked: it is how the receiver learns of
            // the message, so with none nothing would ever be granted.
            return bad(
                "unsched_bytes must be positive (at least the first packet goes unscheduled)",
            );
        }
        Ok(())
    }
}
