//! Receive buffer space: the cap on bytes held (`max_incoming_held`), each peer's share
//! of it, the messages waiting for space (stalled), and giving space back.

use super::Endpoint;
use crate::buffer::{BufferPool, MessageBuf, Received};
use crate::config::Config;
use crate::metrics::DropReason;
use std::collections::BTreeSet;

/// Waiting messages may keep packets worth this fraction of `max_incoming_held` (see
/// [`Endpoint::park`]).
const PARK_SHARE: u64 = 16;

/// A peer in `RecvSpace::stalling`: (its requests waiting for buffer space, peer).
type StallingKey = (u32, usize);
/// A peer in `RecvSpace::waiting_peers`: (bytes its requests hold, birth of its oldest
/// waiting request, peer).
type WaitingKey = (u64, u64, usize);

/// Receive buffer space and the messages waiting for it.
///
/// The waiting messages are indexed so that the one first in line
/// ([`Endpoint::first_in_line`]) is found without looking at the others: it is asked
/// for at every new request, and during a flood of forged requests every slot is taken.
/// (A scan of the whole queue there was nine tenths of a flooded server's CPU: it then
/// read a tenth of the packets it could have, and its socket dropped the rest, the
/// legitimate ones among them.)
pub(super) struct RecvSpace {
    /// Messages waiting for buffer space, oldest first: (birth, handle).
    pub(super) stalled: BTreeSet<(u64, usize)>,
    /// The responses among them, oldest first: (birth, handle). (The requests are in
    /// their peer's `Peer::req_stalled`.)
    pub(super) stalled_responses: BTreeSet<(u64, usize)>,
    /// Peers with requests among them, by how many.
    pub(super) stalling: BTreeSet<StallingKey>,
    /// The same peers in the order their requests come to buffer space.
    pub(super) waiting_peers: BTreeSet<WaitingKey>,
    /// Bytes of incoming messages held: being received, or delivered and not released.
    pub(super) held: u64,
    /// Bytes of delivered messages the application dropped without releasing them (see
    /// [`MessageBuf`]), not yet taken off `held`. `None` once the application promised
    /// to release every message ([`Endpoint::promise_release`]).
    pub(super) returned: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// Bytes of packets kept for waiting messages (see [`Endpoint::park`]), at most
    /// [`RecvSpace::park_cap`].
    pub(super) parked: u64,
    /// Most bytes that waiting messages may keep: `max_incoming_held / PARK_SHARE`.
    pub(super) park_cap: u64,
    /// Buffers of released messages, for reuse.
    pub(super) pool: BufferPool,
    /// Messages that kept pieces of a shared buffer not yet weighed (see
    /// [`MessageBuf::settle`]), settled at the end of the receive batch: every message
    /// with an open buffer is here (it is listed when its first one opens; a message that
    /// moves on to another buffer weighs the one before itself).
    pub(super) unsettled: Vec<usize>,
}

impl RecvSpace {
    pub(super) fn new(config: &Config) -> RecvSpace {
        RecvSpace {
            stalled: BTreeSet::new(),
            stalled_responses: BTreeSet::new(),
            stalling: BTreeSet::new(),
            waiting_peers: BTreeSet::new(),
            held: 0,
            returned: Some(Default::default()),
            parked: 0,
            park_cap: config.max_incoming_held / PARK_SHARE,
            unsettled: Vec::new(),
            pool: BufferPool::new(
                config.bpage_size as usize,
                (config.max_incoming_held / config.bpage_size as u64) as usize,
            ),
        }
    }
}

impl Endpoint {
    /// Peer `p`'s entries in `RecvSpace::stalling` and `RecvSpace::waiting_peers`, if it
    /// has requests waiting for buffer space.
    fn waiting_keys(&self, p: usize) -> Option<(StallingKey, WaitingKey)> {
        let peer = &self.peers[p];
        let &(oldest, _) = peer.req_stalled.first()?;
        let n = peer.req_stalled.len() as u32;
        Some(((n, p), (peer.req_held, oldest, p)))
    }

    /// Change peer `p`'s waiting requests or bytes held with `f`, keeping its entries in
    /// `RecvSpace::stalling` and `RecvSpace::waiting_peers` in step.
    fn reindex_peer(&mut self, p: usize, f: impl FnOnce(&mut super::peers::Peer)) {
        let before = self.waiting_keys(p);
        f(&mut self.peers[p]);
        let after = self.waiting_keys(p);
        if before != after {
            if let Some((n, w)) = before {
                self.space.stalling.remove(&n);
                self.space.waiting_peers.remove(&w);
            }
            if let Some((n, w)) = after {
                self.space.stalling.insert(n);
                self.space.waiting_peers.insert(w);
            }
        }
    }

    /// Peer `p`'s requests now hold `held` bytes of buffer space.
    #[inline(always)]
    pub(super) fn set_req_held(&mut self, p: usize, held: u64) {
        let peer = &mut self.peers[p];
        if peer.req_stalled.is_empty() {
            // (Nearly always: the peer is in no queue.)
            peer.req_held = held;
        } else {
            self.reindex_peer(p, |peer| peer.req_held = held);
        }
    }
}

/// What [`Endpoint::try_allocate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alloc {
    /// The message has its buffer.
    Done,
    /// Not enough space left in all; it waits.
    NoRoom,
    /// Its peer holds its share already; it waits.
    OverShare,
}

impl Endpoint {
    /// Give incoming message `h` its buffer if the space is there, else (re)queue it among
    /// the stalled. `head`: the message's first bytes, to start the buffer with (may be
    /// empty). `keep`: the message's packets may be kept by reference (see [`MessageBuf`]).
    pub(super) fn try_allocate(&mut self, h: usize, head: Received<'_>, keep: bool) -> Alloc {
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
            if self.space.stalled.insert(key) {
                let rpc = &self.rpcs[h];
                if rpc.is_client() {
                    self.space.stalled_responses.insert(key);
                } else {
                    self.reindex_peer(rpc.peer(), |peer| {
                        peer.req_stalled.insert(key);
                    });
                }
            }
            return outcome;
        }
        let buf = self.take_buffer(h, len, head, keep);
        if let Some(m) = self.rpcs[h].msgin.as_mut() {
            m.data = Some(buf);
        }
        self.unqueue_stalled(key);
        self.unpark(h);
        // A new buffer: listed if its head or the packets kept while it waited opened
        // a shared buffer.
        let m = self.rpcs[h].msgin.as_ref();
        if m.and_then(|m| m.data.as_ref())
            .is_some_and(|b| b.open_buffer() != 0)
        {
            self.space.unsettled.push(h);
        }
        Alloc::Done
    }

    /// Keep a packet that arrived for waiting message `h`, if it lies in a shared buffer
    /// that may be kept by reference (`Received::keepable`: no copy, and the buffer it
    /// pins is at most twice the packet) and waiting messages keep less than
    /// `RecvSpace::park_cap`. Returns whether it was kept; if not, it is dropped and the
    /// message asks for it again once it has space, as the Linux module does.
    ///
    /// Without this, every request that waits for its peer's share loses the unscheduled
    /// packets that announced it: with 256 requests of 1 MB outstanding from one client
    /// over loopback (three in four wait), one 64 KB packet per request was dropped and
    /// sent again, and each cost a RESEND too. Its bytes count toward the message once it
    /// has space (`unpark`), not before: until then it is not received, only kept.
    pub(super) fn park(&mut self, h: usize, offset: u32, data: Received<'_>) -> bool {
        let n = data.bytes.len() as u64;
        let Some(owner) = data.owner.filter(|_| data.keepable()) else {
            return false;
        };
        if self.space.parked + n > self.space.park_cap {
            return false;
        }
        let Some(m) = self.rpcs[h].msgin.as_mut().filter(|m| m.data.is_none()) else {
            return false;
        };
        let end = offset + n as u32;
        if m.parked
            .iter()
            .any(|(at, b)| offset < at + b.len() as u32 && *at < end)
        {
            return false; // (a copy of one it keeps)
        }
        m.parked.push((offset, owner.slice_ref(data.bytes)));
        self.space.parked += n;
        true
    }

    /// Message `h` has its buffer: the packets it kept while waiting go into it.
    fn unpark(&mut self, h: usize) {
        let Some(m) = self.rpcs[h].msgin.as_mut() else {
            return;
        };
        if m.parked.is_empty() {
            return;
        }
        let parked = std::mem::take(&mut m.parked);
        for (at, b) in &parked {
            self.space.parked -= b.len() as u64;
            let end = at + b.len() as u32;
            let written = m.data.as_mut().is_some_and(|buf| {
                buf.write(
                    *at as usize,
                    Received {
                        bytes: b,
                        owner: Some(b),
                    },
                    &mut self.space.pool,
                )
            });
            if written {
                m.received += m.ranges.insert(*at, end);
            }
        }
    }

    /// Weigh what each message keeps of the shared buffers it took pieces of since the
    /// last time (see [`MessageBuf::settle`]): once every packet in those buffers has
    /// been handled, at the end of a receive batch or of a lone packet.
    pub(super) fn settle_kept(&mut self) {
        // (Taken and put back: the list keeps its room for the next batch.)
        let mut unsettled = std::mem::take(&mut self.space.unsettled);
        for &h in &unsettled {
            // (A handle freed and taken again meanwhile: settling early is harmless.)
            let data = self
                .rpcs
                .get_mut(h)
                .and_then(|r| r.msgin.as_mut()?.data.as_mut());
            if let Some(buf) = data {
                buf.settle();
            }
        }
        unsettled.clear();
        self.space.unsettled = unsettled;
    }

    /// Whether a buffer of `len` bytes for RPC `h`'s incoming message may be taken now.
    /// Requests count against their peer's share; responses were asked for.
    // Inlined: the first packet of every message asks. As a call (two per small RPC),
    // it and what it calls cost ~90 instructions per RPC (callgrind, `rpc_cost`).
    #[inline(always)]
    pub(super) fn buffer_room(&self, h: usize, len: u64) -> Alloc {
        let rpc = &self.rpcs[h];
        if self.space.held + len + self.reserved_for_first_in_line(Some(h))
            > self.config.max_incoming_held
        {
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
    pub(super) fn take_buffer(
        &mut self,
        h: usize,
        len: u64,
        head: Received<'_>,
        keep: bool,
    ) -> MessageBuf {
        self.space.held += len;
        let rpc = &self.rpcs[h];
        if !rpc.is_client() {
            let p = rpc.peer();
            self.set_req_held(p, self.peers[p].req_held + len);
        }
        MessageBuf::new(len as usize, &mut self.space.pool, head, keep)
    }

    /// Takes `key` off the stalled queue (if there), keeping its peer's count.
    fn unqueue_stalled(&mut self, key: (u64, usize)) {
        if self.space.stalled.remove(&key) {
            let rpc = &self.rpcs[key.1];
            if rpc.is_client() {
                self.space.stalled_responses.remove(&key);
            } else {
                self.reindex_peer(rpc.peer(), |peer| {
                    peer.req_stalled.remove(&key);
                });
            }
        }
    }

    /// Would `len` more bytes of requests put peer `p` past its share of the buffers?
    /// A peer holding nothing may always take one message (the global cap still applies).
    pub(super) fn over_peer_share(&self, p: usize, len: u64) -> bool {
        let held = self.peers[p].req_held;
        let share = self.config.max_incoming_held / 100 * self.config.max_peer_share_percent as u64;
        held > 0 && held + len > share
    }

    /// How many of one peer's requests may wait for buffer space.
    pub(super) fn peer_share_stalled(&self) -> u32 {
        (self.config.max_stalled_messages * self.config.max_peer_share_percent / 100).max(1)
    }

    /// Take the space of delivered messages dropped unreleased off `held`, and let waiting
    /// messages have it: at every tick (a message waiting for space is alive, so the
    /// ticks go on) and release. Not per packet: the counter shares a cache line with
    /// the counts that application threads change as they take and drop messages.
    #[inline]
    pub(super) fn reclaim_dropped(&mut self) {
        use std::sync::atomic::Ordering;
        let Some(returned) = &self.space.returned else {
            return;
        };
        if returned.load(Ordering::Relaxed) != 0 {
            let bytes = returned.swap(0, Ordering::Relaxed);
            self.space.held = self.space.held.saturating_sub(bytes);
            self.unstall();
            self.run_grants();
        }
    }

    /// Give waiting messages the buffer space that came back, first in line first (see
    /// [`first_in_line`](Self::first_in_line)), and ask their senders for the bytes that
    /// were dropped meanwhile. One that does not fit stops the round.
    #[inline]
    pub(super) fn unstall(&mut self) {
        if !self.space.stalled.is_empty() {
            self.unstall_round();
        }
    }

    /// The waiting message that gets buffer space next: the one whose peer holds the
    /// least (responses first: we asked for them), the oldest among equals.
    ///
    /// # Progress when buffers are short
    /// Nothing overtakes it: any other message, new or waiting, takes space only if the
    /// first in line would still fit after it ([`buffer_room`](Self::buffer_room)).
    /// Without that rule, a stream of short requests took every byte given back and a
    /// long response waited for seconds while its server, hearing no ACK, gave up on it
    /// (swarm cases 2335962635125241138 and 3286172372260345759).
    ///
    /// Why it terminates: call the first in line M. Space held grows only by
    /// allocations, and each leaves room for M; so once `held + |M| <= cap`, that stays
    /// true until M has its buffer, which the next `unstall` (run whenever space comes
    /// back) gives it. Space does come back: every buffer belongs to a message being
    /// received, which completes or is dropped after `timeout_ticks` of silence, or to
    /// a delivered one, which the application releases; and `|M| <= cap` (longer
    /// messages are refused at once). M can be displaced only by a message ranked before
    /// it: an older response, or a request of a peer holding less; so a waiting
    /// response waits only for older responses, each of which terminates the same way.
    pub(super) fn first_in_line(&self) -> Option<usize> {
        // The least of (bytes its peer holds, birth, handle) over every waiting message
        // (a response's peer counts as holding nothing): the oldest response, or the
        // oldest request of the first of the waiting peers, which are kept in that order.
        let response = self
            .space
            .stalled_responses
            .first()
            .map(|&(b, h)| (0, b, h));
        let request = self.space.waiting_peers.first().and_then(|&(held, _, p)| {
            let &(b, h) = self.peers[p].req_stalled.first()?;
            Some((held, b, h))
        });
        response.into_iter().chain(request).min().map(|(_, _, h)| h)
    }

    /// Bytes that a message other than `own` must leave free: the length of the
    /// message first in line for buffer space, if any (see
    /// [`first_in_line`](Self::first_in_line)).
    #[inline(always)]
    pub(super) fn reserved_for_first_in_line(&self, own: Option<usize>) -> u64 {
        if self.space.stalled.is_empty() {
            return 0;
        }
        self.first_in_line_length(own)
    }

    /// `reserved_for_first_in_line` when some message waits (a call of its own, to keep
    /// the common case, nothing waiting, small where it is inlined).
    #[inline(never)]
    fn first_in_line_length(&self, own: Option<usize>) -> u64 {
        match self.first_in_line() {
            Some(f) if Some(f) != own => self.rpcs[f].msgin.as_ref().map_or(0, |m| m.length as u64),
            _ => 0,
        }
    }

    fn unstall_round(&mut self) {
        while let Some(h) = self.first_in_line() {
            // A message whose packets are kept by reference keeps them after waiting too:
            // taking pages instead cost a second copy of every byte and fresh zeroed
            // pages (with 256 1 MB requests outstanding over loopback, where most wait
            // for their peer's share, that copy was 9% of the CPU).
            let keep = self.rpcs[h].msgin.as_ref().is_some_and(|m| m.keep);
            if self.try_allocate(h, Received::copied(&[]), keep) != Alloc::Done {
                break;
            }
            if self.rpcs[h].msgin.as_ref().is_some_and(|m| m.is_complete()) {
                // Every byte was kept while it waited.
                self.deliver(h);
                continue;
            }
            // A request's client owes us the bytes we are about to ask for from now:
            // silence counts from here, as after a grant. Counted on from the wait (which
            // lasts up to STALLED_PATIENCE timeouts while its client talks to us), the
            // request timed out at the next tick. A response keeps its count, as after
            // a grant: a dead server is found out by the ticks its client has waited
            // (swarm case 25739205: reset here, RPCs to a killed server failed 40 ms
            // late).
            let rpc = &mut self.rpcs[h];
            if !rpc.is_client() {
                rpc.silent_ticks = 0;
                self.clock.parked.remove(h);
            }
            self.refresh_outstanding(h);
            self.sched_update(h);
            self.send_resends(h);
        }
    }

    /// Drops the newest stalled request of the peer with the most stalled requests, if
    /// that peer has at least two more than `than` (so peers with equal shares do not take
    /// turns evicting each other). Returns whether a slot was freed.
    pub(super) fn evict_stalled_request(&mut self, than: u32) -> bool {
        // The peer with the most, from the ordered set (this runs for packets of a
        // flood: no scan of peers or of the stalled queue).
        let Some(&(_, p)) = self.space.stalling.last().filter(|&&(n, _)| n > than + 1) else {
            return false;
        };
        let victim = self.peers[p].req_stalled.last().map(|&(_, h)| h);
        match victim {
            Some(h) => {
                self.metrics.count_drop(DropReason::NoBuffer);
                self.discard_server(h);
                true
            }
            None => false,
        }
    }

    #[inline]
    pub(super) fn drop_msgin(&mut self, h: usize) {
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
        self.grants.total_incoming -= m.counted_outstanding as u64;
        self.unqueue_stalled((m.birth, h));
        self.space.parked -= m.parked.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
        if let Some(buf) = m.data {
            self.space.held -= m.length as u64;
            let rpc = &self.rpcs[h];
            if !rpc.is_client() {
                let p = rpc.peer();
                self.set_req_held(p, self.peers[p].req_held - m.length as u64);
            }
            buf.recycle(&mut self.space.pool);
            self.unstall();
        }
        if scheduled {
            self.run_grants();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Event, Time};
    use homa_wire::{Body, Common, Data, Repr};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    impl Endpoint {
        /// The waiting messages' indexes against the queue itself: the first in line is
        /// the least (bytes its peer holds, birth, handle), found by looking at every one.
        fn check_waiting_index(&self) {
            let key = |&(birth, h): &(u64, usize)| {
                let rpc = &self.rpcs[h];
                let held = if rpc.is_client() {
                    0
                } else {
                    self.peers[rpc.peer()].req_held
                };
                (held, birth, h)
            };
            let scanned = self.space.stalled.iter().map(key).min().map(|k| k.2);
            assert_eq!(self.first_in_line(), scanned);
            let responses: BTreeSet<_> = self
                .space
                .stalled
                .iter()
                .copied()
                .filter(|&(_, h)| self.rpcs[h].is_client())
                .collect();
            assert_eq!(self.space.stalled_responses, responses);
            let (mut stalling, mut waiting, mut requests) = (BTreeSet::new(), BTreeSet::new(), 0);
            for (p, peer) in self.peers.iter() {
                if let Some(&(oldest, _)) = peer.req_stalled.first() {
                    stalling.insert((peer.req_stalled.len() as u32, p));
                    waiting.insert((peer.req_held, oldest, p));
                    requests += peer.req_stalled.len();
                    for k in &peer.req_stalled {
                        assert!(self.space.stalled.contains(k));
                        assert_eq!(self.rpcs[k.1].peer(), p);
                    }
                }
            }
            assert_eq!(self.space.stalling, stalling);
            assert_eq!(self.space.waiting_peers, waiting);
            assert_eq!(requests + responses.len(), self.space.stalled.len());
        }
    }

    fn addr(k: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + k as u8))
    }

    /// Bytes `from..to` of a message of `len` bytes, as DATA packets, into `ep`.
    fn data(
        ep: &mut Endpoint,
        now: Time,
        from_host: usize,
        c: Common,
        len: u32,
        range: (u32, u32),
    ) {
        let seg = ep.config().max_segment();
        let mut packet = vec![0u8; ep.max_packet_len()];
        let payload = vec![7u8; seg as usize];
        let mut offset = range.0;
        while offset < range.1 {
            let n = seg.min(range.1 - offset);
            let repr = Repr {
                common: c,
                body: Body::Data(Data {
                    message_length: len,
                    incoming: len,
                    ack: None,
                    cutoff_version: ep.config().cutoff_version,
                    retransmit: false,
                    offset,
                }),
            };
            let n = repr.emit(&payload[..n as usize], &mut packet).unwrap();
            ep.handle_datagram(now, addr(from_host), &packet[..n]);
            offset += seg;
        }
    }

    /// Requests and responses from four peers arrive, partly or whole, wait for buffer
    /// space, are delivered, released, aborted and timed out in a random order; after
    /// every step the first in line from the indexes is the one a scan finds.
    #[test]
    fn the_first_in_line_from_the_indexes_is_the_one_a_scan_finds() {
        let mut ep = Endpoint::new(Config {
            max_incoming_held: 120_000,
            max_stalled_messages: 24,
            max_peer_share_percent: 40,
            unsched_bytes: 60_000,
            seed: 1,
            ..Config::default()
        })
        .unwrap();
        ep.bind(99).unwrap();
        let client = ep.bind(0).unwrap();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut now = Time::ZERO;
        // Messages begun and not complete: (host, header, length, bytes sent).
        let mut partial: Vec<(usize, Common, u32, u32)> = Vec::new();
        let mut delivered = Vec::new();
        let mut buf = vec![0u8; ep.max_packet_len()];
        let (mut waited, mut most, mut responses_waited, mut full) = (0, 0, 0, false);
        for step in 0..20_000u64 {
            let host = next(4) as usize;
            match next(20) {
                0..=7 => {
                    // A new request: its first packet, or all of it.
                    let len = 1_000 + next(40_000) as u32;
                    let c = Common {
                        sport: 1_000 + host as u16,
                        dport: 99,
                        sender_id: 2 * step + 2,
                    };
                    let first = if next(4) == 0 { len } else { len.min(1_400) };
                    data(&mut ep, now, host, c, len, (0, first));
                    if first < len {
                        partial.push((host, c, len, first));
                    }
                }
                8 => {
                    // A request of ours, and the first packet of its response.
                    let dest = SocketAddr::new(addr(host), 2_000);
                    let id = ep
                        .send_request(now, client, dest, vec![1u8; 10], 0, false)
                        .unwrap();
                    let c = Common {
                        sport: 2_000,
                        dport: client,
                        sender_id: id.0 + 1,
                    };
                    let len = 1_000 + next(40_000) as u32;
                    data(&mut ep, now, host, c, len, (0, len.min(1_400)));
                    partial.push((host, c, len, len.min(1_400)));
                }
                9..=12 if !partial.is_empty() => {
                    // More of a message begun: perhaps the rest.
                    let i = next(partial.len() as u64) as usize;
                    let (host, c, len, sent) = partial[i];
                    let to = if next(2) == 0 {
                        len
                    } else {
                        (sent + 5_000).min(len)
                    };
                    data(&mut ep, now, host, c, len, (sent, to));
                    partial[i].3 = to;
                    if to == len {
                        partial.swap_remove(i);
                    }
                }
                13..=15 if !delivered.is_empty() => {
                    let i = next(delivered.len() as u64) as usize;
                    ep.release(delivered.swap_remove(i));
                }
                16 => {
                    // Time passes: silent messages are dropped.
                    now = now.plus_nanos(next(30) * 1_000_000);
                    while let Some(t) = ep.poll_timeout().filter(|&t| t <= now) {
                        ep.handle_timeout(t);
                        ep.check_waiting_index();
                    }
                }
                _ => {}
            }
            while ep.poll_transmit(now, &mut buf).is_some() {}
            while let Some(e) = ep.poll_event() {
                match e {
                    Event::Request { data, .. } | Event::Response { data, .. } => {
                        delivered.push(data)
                    }
                    _ => {}
                }
            }
            ep.check_waiting_index();
            waited += usize::from(!ep.space.stalled.is_empty());
            let requests = ep.space.stalled.len() - ep.space.stalled_responses.len();
            most = most.max(requests);
            full |= ep.space.stalled.len() >= 24;
            responses_waited += usize::from(!ep.space.stalled_responses.is_empty());
        }
        // The run exercised the queue: it was often in use, with responses too, at times
        // full, and held requests of several peers at once (one may hold 9 of 24).
        assert!(waited > 5_000, "waiting messages in {waited} steps");
        assert!(
            responses_waited > 1_000,
            "waiting responses in {responses_waited} steps"
        );
        assert!(full && most > 9, "full: {full}, at most {most} requests");
    }
}
