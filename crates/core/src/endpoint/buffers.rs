//! Receive buffer space: the cap on bytes held (`max_incoming_held`), each peer's share
//! of it, the messages waiting for space (stalled), and giving space back.

use super::Endpoint;
use crate::buffer::{BufferPool, MessageBuf, Received};
use crate::config::Config;
use crate::metrics::DropReason;
use std::collections::BTreeSet;

/// Receive buffer space and the messages waiting for it.
pub(super) struct RecvSpace {
    /// Messages waiting for buffer space, oldest first: (birth, handle).
    pub(super) stalled: BTreeSet<(u64, usize)>,
    /// Peers with requests among them, by how many: (count, peer).
    pub(super) stalling: BTreeSet<(u32, usize)>,
    /// Bytes of incoming messages held: being received, or delivered and not released.
    pub(super) held: u64,
    /// Buffers of released messages, for reuse.
    pub(super) pool: BufferPool,
}

impl RecvSpace {
    pub(super) fn new(config: &Config) -> RecvSpace {
        RecvSpace {
            stalled: BTreeSet::new(),
            stalling: BTreeSet::new(),
            held: 0,
            pool: BufferPool::new(
                config.bpage_size as usize,
                (config.max_incoming_held / config.bpage_size as u64) as usize,
            ),
        }
    }
}

impl Endpoint {
    /// Set peer `p`'s count of stalled requests, keeping `RecvSpace::stalling` in step.
    fn set_req_stalled(&mut self, p: usize, n: u32) {
        let old = std::mem::replace(&mut self.peers[p].req_stalled, n);
        if old > 0 {
            self.space.stalling.remove(&(old, p));
        }
        if n > 0 {
            self.space.stalling.insert((n, p));
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
                if !rpc.is_client() {
                    let p = rpc.peer();
                    self.set_req_stalled(p, self.peers[p].req_stalled + 1);
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
            self.peers[rpc.peer()].req_held += len;
        }
        MessageBuf::new(len as usize, &mut self.space.pool, head, keep)
    }

    /// Takes `key` off the stalled queue (if there), keeping its peer's count.
    fn unqueue_stalled(&mut self, key: (u64, usize)) {
        if self.space.stalled.remove(&key) {
            let rpc = &self.rpcs[key.1];
            if !rpc.is_client() {
                let p = rpc.peer();
                self.set_req_stalled(p, self.peers[p].req_stalled - 1);
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
        self.space
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
            .map(|(_, _, h)| h)
    }

    /// Bytes that a message other than `own` must leave free: the length of the
    /// message first in line for buffer space, if any (see
    /// [`first_in_line`](Self::first_in_line)).
    #[inline]
    pub(super) fn reserved_for_first_in_line(&self, own: Option<usize>) -> u64 {
        if self.space.stalled.is_empty() {
            return 0;
        }
        match self.first_in_line() {
            Some(f) if Some(f) != own => self.rpcs[f].msgin.as_ref().map_or(0, |m| m.length as u64),
            _ => 0,
        }
    }

    fn unstall_round(&mut self) {
        while let Some(h) = self.first_in_line() {
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
    pub(super) fn evict_stalled_request(&mut self, than: u32) -> bool {
        // The peer with the most, from the ordered set (this runs for packets of a
        // flood: no scan of peers or of the stalled queue).
        let Some(&(_, p)) = self.space.stalling.last().filter(|&&(n, _)| n > than + 1) else {
            return false;
        };
        let victim = self.space.stalled.iter().rev().map(|&(_, h)| h).find(|&h| {
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
        if let Some(buf) = m.data {
            self.space.held -= m.length as u64;
            let rpc = &self.rpcs[h];
            if !rpc.is_client() {
                self.peers[rpc.peer()].req_held -= m.length as u64;
            }
            buf.recycle(&mut self.space.pool);
            self.unstall();
        }
        if scheduled {
            self.run_grants();
        }
    }
}
