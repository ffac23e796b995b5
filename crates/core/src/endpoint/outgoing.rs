//! The sender: packets leave here. Control packets first, then retransmissions, then new
//! data in SRPT order (one-packet messages in a FIFO of their own), with
//! `pacer_fifo_fraction` of the bytes for the oldest message and the pacer holding the
//! NIC queue under `max_nic_est_backlog_usecs`. Also GRANTs received, which open data.

use super::lifecycle::shrink_queue;
use super::{Endpoint, Transmit, TransmitParts};
use crate::metrics::DropReason;
use crate::minset::MinSet;
use crate::rpc::{OutMsg, SendKey, State};
use crate::time::Time;
use bytes::Bytes;
use homa_wire::{
    unsched_priority, Body, Common, Data, DataFlags, Grant, PacketType, Repr, RpcId, MAX_HEADER_LEN,
};
use std::collections::{BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};

/// One-packet messages looked at by [`Endpoint::poll_transmit_urgent`] for a short one.
const URGENT_SCAN: usize = 8;
/// Bytes a packet occupies on an Ethernet link beyond its IP packet (header, FCS,
/// preamble, inter-frame gap), for the pacer's estimate.
const ETHERNET_OVERHEAD: u64 = 38;
/// Shortest IP packet an Ethernet frame carries: a shorter one is padded to it. No Homa
/// packet is that short behind a real IP+UDP or IP header (the shortest, 28 bytes, makes
/// 48 behind raw IP's 20), but a smaller `Config::ip_overhead` (the simulator's paper
/// mode counts 2) would otherwise let the pacer think control packets shorter than the
/// link takes them.
const ETHERNET_MIN_PAYLOAD: u64 = 46;

/// What waits to be sent.
#[derive(Default)]
pub(super) struct Sender {
    /// Control packets, sent before anything else.
    pub(super) control: VecDeque<Control>,
    /// Control packets on no message's critical path (batched one-way acks): sent only
    /// when there is no data to send and the pacer lets a packet go, so that a batch of
    /// them never queues in the NIC ahead of data.
    pub(super) background: VecDeque<Control>,
    /// Ranges asked for again by RESENDs.
    pub(super) retransmits: VecDeque<Retransmit>,
    /// Messages of more than one packet with bytes to send, fewest remaining first.
    pub(super) sendable: MinSet<SendKey>,
    /// The same messages by age, for the pacer's FIFO share.
    pub(super) by_age: BTreeSet<(u64, usize)>,
    /// One-packet messages waiting to go, in order: (handle, birth).
    pub(super) short_queue: ShortQueue,
    /// One-packet messages queued to go (`send_rank` set). `short_queue` may also hold
    /// entries of messages sent since, skipped when reached.
    pub(super) short_queued: usize,
    /// Bytes to send in SRPT order before the oldest message's next FIFO turn.
    pub(super) pacer_nonfifo_left: i64,
    /// When the NIC's queue (as the pacer estimates it) runs empty.
    pub(super) nic_idle_at: Time,
    /// Set once the runtime says when polled packets left
    /// ([`Endpoint::transmitted`]): the RPCs whose response DATA was polled since it last
    /// did, whose NEED_ACK clock starts then.
    pub(super) departing: Option<Vec<usize>>,
}

/// `Rpc::need_ack_after` of a response whose DATA was polled and has not been reported
/// sent yet (see [`Endpoint::transmitted`]). (`Time(u64::MAX)` is a response waiting to
/// send data again.)
const UNTIL_DEPARTED: Time = Time(u64::MAX - 1);

/// One-packet messages waiting to go, as (handle, birth): one FIFO per priority level,
/// the highest level first. Without `Config::short_messages_by_priority` all wait in level
/// 0, so in the order sent.
#[derive(Default)]
pub(super) struct ShortQueue {
    levels: [VecDeque<(usize, u64)>; 8],
    /// Bit p set: `levels[p]` is not empty.
    mask: u8,
}

impl ShortQueue {
    pub(super) fn is_empty(&self) -> bool {
        self.mask == 0
    }
    #[inline]
    fn push(&mut self, level: u8, entry: (usize, u64)) {
        let level = level.min(7);
        self.levels[level as usize].push_back(entry);
        self.mask |= 1 << level;
    }
    #[inline]
    fn front(&self) -> Option<(usize, u64)> {
        let top = 7usize.checked_sub(self.mask.leading_zeros() as usize)?;
        self.levels[top].front().copied()
    }
    #[inline]
    fn pop_front(&mut self) {
        let Some(top) = 7usize.checked_sub(self.mask.leading_zeros() as usize) else {
            return;
        };
        let q = &mut self.levels[top];
        q.pop_front();
        if q.is_empty() {
            self.mask &= !(1 << top);
        }
    }
    /// Empty every level. Only levels marked in `mask` hold entries, so only those are
    /// touched: this runs whenever the sender finds nothing to send (after each packet
    /// of a small RPC), where clearing all eight queues was a cost of its own.
    #[inline]
    fn clear(&mut self) {
        let mut mask = self.mask;
        while mask != 0 {
            let level = mask.trailing_zeros() as usize;
            self.levels[level].clear();
            mask &= mask - 1;
        }
        self.mask = 0;
    }
    /// Entries, highest level first.
    fn iter(&self) -> impl Iterator<Item = &(usize, u64)> + '_ {
        self.levels.iter().rev().flatten()
    }
    /// Give back the memory of levels left large by a burst (see `give_back_memory`).
    pub(super) fn shrink(&mut self) {
        self.levels.iter_mut().for_each(shrink_queue);
    }
}

/// A control packet waiting to go.
pub(super) struct Control {
    pub(super) dest: SocketAddr,
    pub(super) repr: Repr,
    pub(super) priority: u8,
    /// The local address to send from (index into `Endpoint::locals`; 0: any).
    pub(super) local: u8,
}

/// A range of an outgoing message to send again.
pub(super) struct Retransmit {
    pub(super) handle: usize,
    pub(super) id: RpcId,
    pub(super) start: u32,
    pub(super) end: u32,
    pub(super) priority: u8,
}

/// The panic of a `poll_transmit` given a buffer shorter than a packet may need: out of
/// line, so the packet path stays as small as it was with no check.
#[cold]
#[inline(never)]
fn buffer_too_small(what: &str, len: usize, need: usize) -> ! {
    panic!("{what}: a buffer of {len} bytes, where a packet may take {need}")
}

/// A packet `transmit_next` wrote: the bytes at the start of the buffer (the header,
/// and the payload when it fit), and the payload when it did not.
struct Written {
    transmit: Transmit,
    len: usize,
    rest: Option<Bytes>,
}

impl Endpoint {
    /// Write the next packet to send into `buf` (at least
    /// [`max_packet_len`](Self::max_packet_len) bytes). Control packets first, then
    /// retransmissions, then new data in SRPT order, as the pacer allows.
    ///
    /// # Panics
    /// If there is something to send and `buf` is shorter than `max_packet_len()` (in
    /// every build: a buffer sized for the packets seen so far would otherwise stall the
    /// socket without a sign).
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
            buffer_too_small("poll_transmit", buf.len(), self.max_packet_len());
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
    ///
    /// # Panics
    /// If there is something to send and `header` is shorter than `MAX_HEADER_LEN`.
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
            buffer_too_small("poll_transmit_parts", header.len(), MAX_HEADER_LEN);
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
        let nothing = self.sender.control.is_empty()
            && self.sender.retransmits.is_empty()
            && self.sender.short_queued == 0
            && self.sender.sendable.is_empty()
            && self.sender.background.is_empty();
        if nothing {
            self.sender.short_queue.clear();
        }
        nothing
    }

    fn transmit_next(&mut self, now: Time, header: &mut [u8]) -> Option<Written> {
        if !self.sender.control.is_empty() {
            return self.emit_control(now, header);
        }
        let pacer_ok = self.pacer_ready_at() <= now;
        // Retransmissions first: (handle, start, length, priority).
        let mut retransmit = None;
        while let Some(r) = self.sender.retransmits.front() {
            let live = self.rpcs.get(r.handle).filter(|rpc| rpc.id == r.id);
            let Some(out) = live.and_then(|rpc| rpc.msgout.as_ref()) else {
                self.sender.retransmits.pop_front();
                continue;
            };
            if r.start >= r.end.min(out.length) {
                self.sender.retransmits.pop_front();
                continue;
            }
            if !pacer_ok && out.length >= self.config.defer_min_bytes {
                return None;
            }
            let (h, start, prio) = (r.handle, r.start, r.priority);
            let len = (r.end.min(out.length) - start).min(self.seg);
            let r = self.sender.retransmits.front_mut()?;
            r.start += len;
            self.metrics.retransmitted_packets += 1;
            retransmit = Some((h, start, len, prio));
            break;
        }
        let (h, start, len, retransmit_prio) = match retransmit {
            Some((h, start, len, prio)) => (h, start, len, Some(prio)),
            None => match self.next_fresh(pacer_ok) {
                Some((h, start, len)) => (h, start, len, None),
                None if pacer_ok => return self.emit_background(now, header),
                None => return None,
            },
        };
        // Inlined (see emit_data).
        let t = self.emit_data(now, h, start, len, retransmit_prio, header);
        if retransmit_prio.is_none() {
            self.sent_fresh(h, start + len);
        }
        self.data_handed_over(now, h);
        t
    }

    /// The next control packet, written into `header`.
    fn emit_control(&mut self, now: Time, header: &mut [u8]) -> Option<Written> {
        let c = self.sender.control.pop_front()?;
        self.emit_control_packet(now, c, header)
    }

    /// The next background control packet (see `Sender::background`), if any.
    #[cold]
    #[inline(never)]
    fn emit_background(&mut self, now: Time, header: &mut [u8]) -> Option<Written> {
        let c = self.sender.background.pop_front()?;
        self.emit_control_packet(now, c, header)
    }

    /// Control packet `c`, written into `header`.
    fn emit_control_packet(&mut self, now: Time, c: Control, header: &mut [u8]) -> Option<Written> {
        let len = c.repr.emit(&[], header).ok()?;
        let (ty, sport) = (c.repr.packet_type(), c.repr.common.sport);
        let to = (c.dest, self.local_addr(c.local));
        let transmit = self.account_sent(now, to, ty, sport, len, c.priority);
        Some(Written {
            transmit,
            len,
            rest: None,
        })
    }

    /// A DATA packet of `h` was handed to the network at `now`: a server waits
    /// `request_ack_ticks` from the last one before it asks for the client's ACK, so the
    /// NEED_ACK never overtakes response data still on its way (a client that sees it
    /// first finds its response incomplete and asks for it all again).
    ///
    /// Once the runtime reports departures ([`transmitted`](Self::transmitted)), the wait
    /// starts when it says the packet left, not when it was polled.
    #[inline]
    fn data_handed_over(&mut self, now: Time, h: usize) {
        let delay = self.config.request_ack_ticks as u64 * self.config.tick_nanos;
        if let Some(rpc) = self.rpcs.get_mut(h).filter(|r| r.state == State::Outgoing) {
            match self.sender.departing.as_mut() {
                None => rpc.need_ack_after = now.plus_nanos(delay),
                Some(departing) => {
                    // No NEED_ACK until the runtime says this left.
                    rpc.need_ack_after = UNTIL_DEPARTED;
                    departing.push(h);
                }
            }
        }
    }

    /// Every packet polled so far ([`poll_transmit`](Self::poll_transmit),
    /// [`poll_transmit_parts`](Self::poll_transmit_parts),
    /// [`poll_transmit_urgent`](Self::poll_transmit_urgent)) has been handed to the
    /// network by `now`.
    ///
    /// Optional. Without it, a packet counts as sent when it is polled. A runtime that
    /// sends after it polls (a batch gathered, then one system call; a socket buffer
    /// that was full; a thread preempted in between) calls this after each send that
    /// leaves nothing polled unsent: timers that count from a packet's departure (a
    /// server asks for its client's ACK `request_ack_ticks` after the last DATA of the
    /// response) then count from `now`, and none of them starts before the call. Once
    /// called, the engine relies on it: call it after every such send. Call it once
    /// before the first poll, too: packets polled before the first call count as sent
    /// when polled.
    pub fn transmitted(&mut self, now: Time) {
        let delay = self.config.request_ack_ticks as u64 * self.config.tick_nanos;
        let departing = self.sender.departing.get_or_insert_with(Vec::new);
        for h in departing.drain(..) {
            if let Some(rpc) = self
                .rpcs
                .get_mut(h)
                .filter(|r| r.state == State::Outgoing && r.need_ack_after == UNTIL_DEPARTED)
            {
                rpc.need_ack_after = now.plus_nanos(delay);
            }
        }
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
    /// `defer_min_bytes` (which the pacer lets through at any time), among the first 8
    /// one-packet messages queued. It is written whole into `buf`; a
    /// message whose packet would not fit waits for [`poll_transmit`](Self::poll_transmit).
    ///
    /// A runtime that sends from several threads calls this while the thread that owns
    /// its batch buffers sends: so a short request or a GRANT goes out at once instead
    /// of after up to a batch of 64 KB packets (Linux Homa likewise sends short messages
    /// from the calling thread, bypassing its pacer thread).
    pub fn poll_transmit_urgent(&mut self, now: Time, buf: &mut [u8]) -> Option<Transmit> {
        if !self.sender.control.is_empty() {
            return self.emit_control(now, buf).map(|w| w.transmit);
        }
        let room = buf.len().saturating_sub(MAX_HEADER_LEN);
        let limit = (self.config.defer_min_bytes as usize).min(room + 1) as u32;
        let h = self
            .sender
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
        self.sender.pacer_nonfifo_left -= len as i64;
        self.sent_fresh(h, len);
        self.data_handed_over(now, h);
        Some(w.transmit)
    }

    /// The next packet of new data to send, `(handle, start, length)`, in SRPT order
    /// (the oldest message on its FIFO turn), if the pacer lets it go; counts it against
    /// the pacer's FIFO share.
    #[inline]
    fn next_fresh(&mut self, pacer_ok: bool) -> Option<(usize, u32, u32)> {
        let fifo_turn = self.sender_keeps_age() && self.sender.pacer_nonfifo_left <= 0;
        let (h, fifo) = match self.next_short() {
            Some(h) => (h, false),
            // (`by_age` is looked at only on a FIFO turn: it is empty without one.)
            None => match (fifo_turn && pacer_ok)
                .then(|| self.sender.by_age.first())
                .flatten()
            {
                Some(&(_, h)) => (h, true),
                None => (self.sender.sendable.first()?.2, false),
            },
        };
        let out = self.rpcs[h].msgout.as_ref()?;
        if !pacer_ok && out.length >= self.config.defer_min_bytes {
            return None;
        }
        let start = out.next_xmit;
        let len = (out.length - start).min(self.seg);
        if fifo {
            self.sender.pacer_nonfifo_left += self.pacer_nonfifo_quota();
        } else {
            self.sender.pacer_nonfifo_left -= len as i64;
        }
        Some((h, start, len))
    }

    pub(super) fn on_grant(&mut self, from: IpAddr, c: Common, g: Grant) {
        let Some(h) = self.find_rpc(from, c) else {
            // A grant for a request we gave up on: dropped, unanswered (RPC_UNKNOWN goes
            // only in answer to a RESEND, as in Linux Homa); the server's RESEND after
            // `resend_ticks` of silence learns that we forgot it.
            return self.metrics.count_drop(DropReason::UnknownRpc);
        };
        let max_prio = self.config.num_priorities - 1;
        let rpc = &mut self.rpcs[h];
        rpc.silent_ticks = 0;
        rpc.busy_streak = 0;
        rpc.lost_restarts = 0;
        self.clock.parked.remove(h);
        if let Some(out) = rpc.msgout.as_mut() {
            out.granted = out.granted.max(g.offset.min(out.length));
            out.sched_priority = g.priority.min(max_prio);
            self.send_update(h);
        }
    }

    /// Whether the sender has a FIFO share (`pacer_fifo_fraction`), and so keeps its
    /// messages in age order (`Sender::by_age`), which only that share reads.
    #[inline]
    pub(super) fn sender_keeps_age(&self) -> bool {
        self.config.pacer_fifo_fraction > 0
    }

    pub(super) fn pacer_nonfifo_quota(&self) -> i64 {
        let c = &self.config;
        if c.pacer_fifo_fraction == 0 {
            return i64::MAX / 2;
        }
        (1000 * self.seg as i64) / c.pacer_fifo_fraction as i64 - self.seg as i64
    }

    pub(super) fn pacer_ready_at(&self) -> Time {
        let backlog = self.config.max_nic_est_backlog_usecs as u64 * 1_000;
        Time(self.sender.nic_idle_at.0.saturating_sub(backlog))
    }

    /// A new outgoing message (a `response`, or a request), counted as held.
    pub(super) fn new_outmsg(&mut self, data: Bytes, response: bool) -> OutMsg {
        let length = data.len() as u32;
        let unsched_end = self
            .config
            .unsched_bytes
            .div_ceil(self.seg)
            .saturating_mul(self.seg)
            .min(length);
        self.outgoing_held[response as usize] += length as u64;
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
            resent: Default::default(),
            resent_since: 0,
        }
    }

    /// Put the message of `h` where it belongs in the sender's queues.
    // Inlined into its callers: every message passes here at least twice (queued when
    // sent, taken off when its packet leaves). As a call, with the priority level in its
    // body, its three calls cost a small RPC ~250 instructions (callgrind, `rpc_cost`);
    // the rarer parts are calls of their own.
    #[inline(always)]
    pub(super) fn send_update(&mut self, h: usize) {
        let seg = self.seg;
        // (A one-way message held for its receiver's answer is not queued yet.)
        let rpc = self.rpcs.get_mut(h).filter(|r| !r.held);
        let Some(out) = rpc.and_then(|r| r.msgout.as_mut()) else {
            return;
        };
        if out.length <= seg && !self.config.short_messages_srpt {
            // A one-packet message has nothing to schedule: it waits in a plain FIFO
            // instead of the SRPT sets, which keeps per-RPC cost flat with thousands of
            // RPCs outstanding. (It can only lose to a longer message's last packet.)
            let want = out.has_fresh_bytes(seg);
            if want && out.send_rank.is_none() {
                out.send_rank = Some(0);
                let entry = (h, out.birth);
                let level = if self.config.short_messages_by_priority {
                    self.short_level(h)
                } else {
                    0
                };
                self.sender.short_queue.push(level, entry);
                self.sender.short_queued += 1;
            } else if !want && out.send_rank.take().is_some() {
                // Its queue entry stays, to be skipped when reached.
                self.sender.short_queued -= 1;
            }
        } else {
            self.send_update_sets(h);
        }
    }

    /// The level of `short_queue` for one-packet message `h`
    /// (`Config::short_messages_by_priority`): its unscheduled priority.
    #[cold]
    fn short_level(&self, h: usize) -> u8 {
        let rpc = &self.rpcs[h];
        let length = rpc.msgout.as_ref().map_or(0, |o| o.length);
        unsched_priority(&self.peers[rpc.peer()].cutoffs, length)
    }

    /// `send_update` for a message of more than one packet: the SRPT sets.
    fn send_update_sets(&mut self, h: usize) {
        let (seg, srpt) = (self.seg, self.config.srpt);
        let aged = self.sender_keeps_age();
        let Some(out) = self.rpcs.get_mut(h).and_then(|r| r.msgout.as_mut()) else {
            return;
        };
        let rank = if srpt { out.length - out.next_xmit } else { 0 };
        let want = out.has_fresh_bytes(seg).then_some(rank);
        if want == out.send_rank {
            return;
        }
        // A message's age key never changes: `by_age` changes only when the message
        // enters or leaves the sets, not at each packet that lowers its rank. Without a
        // FIFO share it is never read, and not kept (a tree insert and remove per
        // message).
        let sets = &mut self.sender;
        match (out.send_rank.take(), want) {
            // The common case, a packet of the message being sent: its rank drops, and
            // it stays first (MinSet::replace touches no tree).
            (Some(r), Some(w)) => sets
                .sendable
                .replace(&out.send_key(r, h), out.send_key(w, h)),
            (Some(r), None) => {
                sets.sendable.remove(&out.send_key(r, h));
                if aged {
                    sets.by_age.remove(&(out.birth, h));
                }
            }
            (None, Some(w)) => {
                sets.sendable.insert(out.send_key(w, h));
                if aged {
                    sets.by_age.insert((out.birth, h));
                }
            }
            (None, None) => {}
        }
        out.send_rank = want;
    }

    /// The first live entry of the one-packet FIFO (stale entries are dropped).
    fn next_short(&mut self) -> Option<usize> {
        while let Some((h, birth)) = self.sender.short_queue.front() {
            let live = self.rpcs.get(h).and_then(|r| r.msgout.as_ref());
            if live.is_some_and(|o| o.birth == birth && o.send_rank.is_some()) {
                return Some(h);
            }
            self.sender.short_queue.pop_front();
        }
        debug_assert_eq!(
            self.sender.short_queued, 0,
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
        let mut flags = if rpc.one_way {
            DataFlags::ONE_WAY
        } else {
            DataFlags::NONE
        };
        let fresh = retransmit_prio.is_none() && (start == 0 || self.config.acks_in_every_packet);
        let ack = if fresh && rpc.is_client() {
            let (port, to) = (rpc.port, rpc.peer_addr.port());
            let own = peer.acks_owed(port, to).and_then(VecDeque::pop_front);
            // Our one-way DATA goes to a port that accepted one-way messages, so it may
            // carry an ack for one of the peer's one-way messages to us instead.
            own.or_else(|| {
                let theirs = rpc.one_way.then(|| peer.one_way_acks.pop()).flatten();
                theirs.map(|(_, a)| {
                    flags = flags.with(DataFlags::ACK_ONE_WAY);
                    a
                })
            })
        } else {
            None
        };
        let limit = out.send_limit(seg);
        let priority = match retransmit_prio {
            Some(p) => p,
            None if start < out.unsched_end => {
                let by = if self.config.unsched_prio_by_remaining {
                    out.length - start
                } else {
                    out.length
                };
                unsched_priority(&peer.cutoffs, by)
            }
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
        if flags != DataFlags::NONE {
            flags.write(header).ok()?;
        }
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
        let (to, sport) = ((rpc.peer_addr, self.local_addr(rpc.local)), rpc.port);
        let transmit = self.account_sent(now, to, PacketType::Data, sport, total, priority);
        Some(Written {
            transmit,
            len: written,
            rest,
        })
    }

    fn account_sent(
        &mut self,
        now: Time,
        (dest, src): (SocketAddr, Option<IpAddr>),
        ty: PacketType,
        src_port: u16,
        len: usize,
        priority: u8,
    ) -> Transmit {
        self.metrics.count_sent(ty, len);
        let nanos = link_nanos(len, self.config.ip_overhead, self.config.link_mbps);
        self.sender.nic_idle_at = self.sender.nic_idle_at.max(now).plus_nanos(nanos);
        Transmit {
            dest,
            src_port,
            priority,
            len,
            packet_type: ty,
            src,
        }
    }
}

/// Nanoseconds a packet of `len` bytes (Homa header and payload) behind `ip_overhead`
/// bytes of IP header takes on a link of `link_mbps`: its whole Ethernet frame, padded to
/// the minimum, rounded down (the simulator charges its links exactly this).
fn link_nanos(len: usize, ip_overhead: u32, link_mbps: u32) -> u64 {
    let wire = (len as u64 + ip_overhead as u64).max(ETHERNET_MIN_PAYLOAD) + ETHERNET_OVERHEAD;
    wire * 8_000 / link_mbps as u64
}

#[cfg(test)]
mod tests {
    use super::link_nanos;

    #[test]
    fn the_pacer_counts_whole_frames() {
        // A full 1,500-byte IP packet: 1,538 bytes on the wire, 1,230 ns at 10 Gbps.
        assert_eq!(link_nanos(1_472, 28, 10_000), 1_230);
        // A GRANT (33 bytes) behind IP+UDP: 99 bytes, no padding.
        assert_eq!(link_nanos(33, 28, 1_000), 99 * 8);
        // Behind 2 bytes (the simulator's paper frames) it is padded to the minimum
        // frame of 84 bytes, as the link sends it.
        assert_eq!(link_nanos(33, 2, 1_000), 84 * 8);
    }
}
