//! Per-RPC state: the message being sent, the message being received.

use crate::buffer::MessageBuf;
use crate::time::Time;
use bytes::Bytes;
use homa_wire::RpcId;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Received byte ranges: the prefix `[0, prefix)` and, past a gap, disjoint, non-adjacent
/// ranges `[start, end)` in a map from start to end. In-order arrival (the usual case)
/// only moves the prefix, without allocating; out-of-order arrival costs O(log n) in the
/// number of ranges, so a peer sending a message in tiny pieces, highest first, cannot
/// make each packet cost more than the last.
#[derive(Debug, Default, Clone)]
pub(crate) struct RangeSet {
    prefix: u32,
    ranges: BTreeMap<u32, u32>,
}

impl RangeSet {
    /// Add `[start, end)`; returns how many bytes were new.
    pub fn insert(&mut self, start: u32, end: u32) -> u32 {
        if start >= end || end <= self.prefix {
            return 0;
        }
        if start <= self.prefix && self.ranges.is_empty() {
            // In order, nothing past a gap: only the prefix moves (no map lookups).
            let new = end - self.prefix;
            self.prefix = end;
            return new;
        }
        let start = start.max(self.prefix);
        // Merge with every range that overlaps or touches [start, end).
        let (mut new_start, mut new_end, mut covered) = (start, end, 0);
        // A range starting before `start` that reaches it.
        if let Some((&s, &e)) = self.ranges.range(..start).next_back() {
            if e >= start {
                covered += e.min(end) - start;
                new_start = s;
                new_end = new_end.max(e);
                self.ranges.remove(&s);
            }
        }
        // Ranges starting inside [start, end].
        while let Some((&s, &e)) = self.ranges.range(start..=end).next() {
            covered += e.min(end) - s;
            new_end = new_end.max(e);
            self.ranges.remove(&s);
        }
        if new_start <= self.prefix {
            self.prefix = new_end;
        } else {
            self.ranges.insert(new_start, new_end);
        }
        (end - start) - covered
    }
    /// Would adding `[start, end)` make a new range (not touching any, nor the prefix)?
    pub fn would_fragment(&self, start: u32, end: u32) -> bool {
        if start <= self.prefix {
            return false;
        }
        let before = self.ranges.range(..start).next_back();
        let touches_before = before.is_some_and(|(_, &e)| e >= start);
        !touches_before && self.ranges.range(start..=end).next().is_none()
    }
    /// Ranges received past the first gap.
    pub fn fragments(&self) -> usize {
        self.ranges.len()
    }
    /// End of the prefix received from byte 0 (0 if byte 0 is missing).
    pub fn contiguous(&self) -> u32 {
        self.prefix
    }
    /// Missing ranges below `limit`, in order.
    pub fn gaps(&self, limit: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
        let mut prev = self.prefix;
        self.ranges
            .iter()
            .map(|(&s, &e)| Some((s, e)))
            .chain(std::iter::once(None))
            .filter_map(move |r| {
                let (s, e) = r.unwrap_or((limit, limit));
                let gap = (prev, s.min(limit));
                prev = prev.max(e);
                (gap.0 < gap.1).then_some(gap)
            })
    }
    /// True when nothing below `limit` is missing.
    pub fn has_all_below(&self, limit: u32) -> bool {
        limit == 0 || self.contiguous() >= limit
    }
    /// True when every byte of `[start, end)` is in the set.
    pub fn covers(&self, start: u32, end: u32) -> bool {
        if end <= self.prefix {
            return true;
        }
        let start = start.max(self.prefix);
        self.ranges
            .range(..=start)
            .next_back()
            .is_some_and(|(_, &e)| e >= end)
    }
}

/// A message being received.
#[derive(Debug)]
pub(crate) struct InMsg {
    pub length: u32,
    /// The bytes; `None` while the message waits for buffer space.
    pub data: Option<MessageBuf>,
    pub ranges: RangeSet,
    /// Distinct bytes received.
    pub received: u32,
    /// The sender will send at least up to here without more grants.
    pub incoming: u32,
    /// What we have granted.
    pub granted: u32,
    /// Priority of our latest grant.
    pub grant_priority: u8,
    /// Its first packet came in a shared buffer and was long (`Received::may_keep`): once
    /// it has buffer space, it keeps its packets by reference (see `MessageBuf`), also
    /// when it waited for that space.
    pub keep: bool,
    /// Creation order, for FIFO grants.
    pub birth: u64,
    /// This message's current contribution to the endpoint's `total_incoming`.
    pub counted_outstanding: u32,
    /// Its rank in the grant scheduler, if grantable (see [`InMsg::grant_key`]).
    pub grant_rank: Option<u32>,
    /// Packets kept while it waits for buffer space (`data` is `None`): (offset, bytes).
    /// Not yet in `ranges` or `received` (see `Endpoint::park`).
    pub parked: Vec<(u32, Bytes)>,
}

/// Grant scheduler ordering: fewest bytes remaining, then oldest.
pub(crate) type GrantKey = (u32, u64, usize);

impl InMsg {
    pub fn new(length: u32, birth: u64, keep: bool) -> InMsg {
        InMsg {
            length,
            keep,
            data: None,
            ranges: RangeSet::default(),
            received: 0,
            incoming: 0,
            granted: 0,
            grant_priority: 0,
            birth,
            counted_outstanding: 0,
            grant_rank: None,
            parked: Vec::new(),
        }
    }
    /// Its key in the grant scheduler for a message of RPC `h` ranked `rank`.
    pub fn grant_key(&self, rank: u32, h: usize) -> GrantKey {
        (rank, self.birth, h)
    }
    /// Bytes the sender will send without further action from us.
    pub fn expected_end(&self) -> u32 {
        self.incoming.max(self.granted).min(self.length)
    }
    pub fn is_complete(&self) -> bool {
        self.received >= self.length
    }
    /// Bytes expected but not yet here.
    pub fn outstanding(&self) -> u32 {
        if self.data.is_none() {
            return 0;
        }
        self.expected_end().saturating_sub(self.received)
    }
    /// Waiting on data the peer owes us (as opposed to on our own grants or buffers).
    pub fn waiting_on_peer(&self) -> bool {
        self.data.is_some()
            && !self.is_complete()
            && !self.ranges.has_all_below(self.expected_end())
    }
}

/// A message being sent.
#[derive(Debug)]
pub(crate) struct OutMsg {
    pub data: bytes::Bytes,
    pub length: u32,
    /// Next byte never sent before.
    pub next_xmit: u32,
    /// The receiver's latest grant.
    pub granted: u32,
    /// End of the unscheduled bytes (rounded up to a whole packet).
    pub unsched_end: u32,
    /// Priority for scheduled bytes (from the latest GRANT).
    pub sched_priority: u8,
    /// Creation order, for the pacer's FIFO share.
    pub birth: u64,
    /// Rank in the sender's queues, if queued (see [`OutMsg::send_key`]); always 0 for
    /// one-packet messages that wait in the one-packet FIFO instead (unless
    /// `Config::short_messages_srpt`).
    pub send_rank: Option<u32>,
    /// Ranges retransmitted since tick `resent_since` (see `Endpoint::on_resend`): a
    /// RESEND for bytes already among them queues nothing more.
    pub resent: RangeSet,
    pub resent_since: u64,
}

/// Sender ordering: fewest bytes remaining, then oldest.
pub(crate) type SendKey = (u32, u64, usize);

impl OutMsg {
    /// Its key in the sender's SRPT set for a message of RPC `h` ranked `rank`.
    pub fn send_key(&self, rank: u32, h: usize) -> SendKey {
        (rank, self.birth, h)
    }
    /// End of the last packet we may start: whole packets that begin below the grant.
    #[inline]
    pub fn send_limit(&self, seg: u32) -> u32 {
        let allowed = self.granted.max(self.unsched_end);
        let rounded = allowed.div_ceil(seg).saturating_mul(seg);
        rounded.min(self.length)
    }
    #[inline]
    pub fn has_fresh_bytes(&self, seg: u32) -> bool {
        self.next_xmit < self.send_limit(seg)
    }
    #[inline]
    pub fn fully_sent(&self) -> bool {
        self.next_xmit >= self.length
    }
}

/// Where an RPC is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Client: request being sent and/or response being received.
    Client,
    /// Server: receiving the request.
    Incoming,
    /// Server: request delivered; the application is working on it.
    InService,
    /// Server: sending the response, then waiting for its ACK.
    Outgoing,
}

#[derive(Debug)]
pub(crate) struct Rpc {
    pub id: RpcId,
    pub port: u16,
    /// Index of the peer in `Endpoint::peers` (see [`Rpc::peer`]). This and `history`
    /// are u32 to keep the record small: it is built in place in the slab and read
    /// by the timer's pass every tick (360 bytes in all).
    pub peer_index: u32,
    /// Server: the history of the client socket (its handle in `Endpoint::histories`).
    /// Unused (0) on a client.
    pub history: u32,
    pub peer_addr: SocketAddr,
    pub cookie: u64,
    pub private: bool,
    pub state: State,
    pub msgout: Option<OutMsg>,
    pub msgin: Option<InMsg>,
    pub silent_ticks: u32,
    /// The tick at which the timer last parked it (timer.rs, `Parked`): a request stalled
    /// for buffer space counts its silence from here while parked.
    pub parked_at: u64,
    /// Server: ticks since the response was fully sent.
    pub ack_wait_ticks: u32,
    /// The tick we last sent BUSY for this RPC (at most one a tick).
    pub busy_tick: u64,
    /// Server: the earliest time a NEED_ACK may go: `request_ack_ticks` after the
    /// response's last DATA packet was handed to the network, then half a tick after the
    /// previous NEED_ACK (so never two in one tick, however the ticks fall).
    pub need_ack_after: Time,
    /// A RESEND fell due but another RPC to the same peer went first (one per peer per
    /// tick): send it at the next tick rather than a whole `resend_interval` later.
    pub resend_owed: bool,
    /// BUSY answers in a row since the peer last sent data or a grant for this RPC (see
    /// `Config::resend_backoff_max_ticks`); capped.
    pub busy_streak: u8,
    /// Client: the length a response packet claimed that is over our
    /// `max_message_length` (0: none yet); a second packet claiming the same fails the
    /// RPC (`Endpoint::on_too_long`).
    pub too_long_claimed: u32,
    /// Client: a RESEND went out since the request was (re)started. A server sends
    /// RPC_UNKNOWN only to answer a RESEND, so one that comes before any is the answer to
    /// a RESEND from before a restart (stale) and must not restart the request again.
    pub resent_since_start: bool,
    /// Client: restarts (RPC_UNKNOWN) since the server last showed it holds the request
    /// or holds it off (a GRANT, or a BUSY while it asked for none of the request's
    /// bytes); too many fail the RPC (`Endpoint::on_rpc_unknown`).
    pub lost_restarts: u8,
    /// Client: the server asked for bytes of the request (RESEND) since it was last
    /// (re)started, so does not hold all of it; its BUSYs then do not end `lost_restarts`.
    pub server_asked: bool,
    /// A one-way message (this implementation's extension; `endpoint/one_way.rs`): on a
    /// client, one that `send_message` started; on a server, one whose DATA said so.
    pub one_way: bool,
    /// Client, one-way: held back until the receiving port says it takes one-way
    /// messages (the sender's queues do not take it meanwhile).
    pub held: bool,
    /// Server: the local address its request arrived at, as an index into the
    /// endpoint's local addresses (`Endpoint::locals`; 0: unknown). Its packets go from
    /// there.
    pub local: u8,
}

impl Rpc {
    /// A new RPC `id` on local `port` with the peer at (index in the peer table,
    /// address), in `state`; server RPCs name their client socket's `history`. Nothing
    /// sent or received yet.
    pub fn new(
        id: RpcId,
        port: u16,
        (peer, addr): (usize, SocketAddr),
        history: usize,
        state: State,
    ) -> Rpc {
        Rpc {
            id,
            port,
            peer_index: peer as u32,
            history: history as u32,
            peer_addr: addr,
            cookie: 0,
            private: false,
            state,
            msgout: None,
            msgin: None,
            silent_ticks: 0,
            parked_at: 0,
            ack_wait_ticks: 0,
            need_ack_after: Time::ZERO,
            resend_owed: false,
            busy_streak: 0,
            too_long_claimed: 0,
            resent_since_start: false,
            lost_restarts: 0,
            server_asked: false,
            busy_tick: u64::MAX,
            one_way: false,
            held: false,
            local: 0,
        }
    }
    /// Server: its key in `Endpoint::server_rpcs` (client address, client port, client id).
    pub fn server_key(&self) -> (std::net::IpAddr, u16, u64) {
        (
            self.peer_addr.ip(),
            self.peer_addr.port(),
            self.id.client_id(),
        )
    }
    /// Index of the peer in `Endpoint::peers`.
    pub fn peer(&self) -> usize {
        self.peer_index as usize
    }
    pub fn is_client(&self) -> bool {
        self.state == State::Client
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a byte map: new-byte counts, the prefix and the gaps agree.
        #[test]
        fn range_set_matches_a_byte_map(ops in prop::collection::vec((0u32..120, 0u32..40), 1..40)) {
            let mut set = RangeSet::default();
            let mut have = [false; 160];
            for (start, len) in ops {
                let end = start + len;
                let fresh = (start..end).filter(|&b| !have[b as usize]).count() as u32;
                prop_assert_eq!(set.insert(start, end), fresh);
                (start..end).for_each(|b| have[b as usize] = true);
                let prefix = have.iter().take_while(|&&h| h).count() as u32;
                prop_assert_eq!(set.contiguous(), prefix);
                let mut gaps = Vec::new();
                let mut b = 0;
                while b < 150 {
                    if have[b] { b += 1; continue; }
                    let s = b;
                    while b < 150 && !have[b] { b += 1; }
                    gaps.push((s as u32, b as u32));
                }
                prop_assert_eq!(set.gaps(150).collect::<Vec<_>>(), gaps);
            }
        }
    }

    #[test]
    fn range_set_counts_new_bytes_and_gaps() {
        let mut r = RangeSet::default();
        assert_eq!(r.insert(0, 10), 10);
        assert_eq!(r.insert(20, 30), 10);
        assert_eq!(r.insert(5, 25), 10);
        assert_eq!(r.contiguous(), 30);
        assert_eq!(r.insert(0, 30), 0);
        assert_eq!(r.insert(40, 50), 10);
        assert_eq!(r.gaps(60).collect::<Vec<_>>(), vec![(30, 40), (50, 60)]);
        assert_eq!(r.gaps(45).collect::<Vec<_>>(), vec![(30, 40)]);
        assert!(r.has_all_below(30) && !r.has_all_below(31));
        let mut e = RangeSet::default();
        assert_eq!(e.gaps(5).collect::<Vec<_>>(), vec![(0, 5)]);
        assert_eq!(e.insert(3, 3), 0);
        assert_eq!(e.insert(10, 20), 10);
        assert_eq!(e.insert(0, 10), 10);
        assert_eq!(e.contiguous(), 20);
        // The prefix swallows the ranges it reaches, counting only new bytes.
        let mut p = RangeSet::default();
        assert_eq!(p.insert(10, 20), 10);
        assert_eq!(p.insert(30, 40), 10);
        assert_eq!(p.contiguous(), 0);
        assert_eq!(p.insert(0, 35), 20);
        assert_eq!(p.contiguous(), 40);
        assert_eq!(p.gaps(50).collect::<Vec<_>>(), vec![(40, 50)]);
        assert_eq!(p.insert(5, 40), 0);
        assert_eq!(p.insert(41, 45), 4);
        assert_eq!(p.insert(40, 41), 1);
        assert_eq!(p.contiguous(), 45);
    }
}
