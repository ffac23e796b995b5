//! The grant scheduler (receiver side): which incoming messages get GRANTs, how far, and
//! at which priority. SRPT across peers (one message per peer among the active ones), up
//! to `max_overcommit` messages, within `max_incoming` granted-but-unreceived bytes, with
//! `grant_fifo_fraction` of the bytes going to the oldest message.

use super::Endpoint;
use crate::minset::MinSet;
use crate::rpc::GrantKey;
use homa_wire::{Body, Grant, Repr};
use std::collections::BTreeSet;

/// The grant scheduler's state.
#[derive(Default)]
pub(super) struct Grants {
    /// Each peer's best grantable message: (its key, peer).
    pub(super) heads: MinSet<(GrantKey, usize)>,
    /// Every grantable message by age, for FIFO grants.
    pub(super) by_age: BTreeSet<(u64, usize)>,
    /// Bytes to grant in SRPT order before the oldest message's next FIFO turn.
    pub(super) nonfifo_left: i64,
    /// Granted (or unscheduled) bytes not yet received, across all messages.
    pub(super) total_incoming: u64,
    /// The active messages of a round (reused: a round runs for every DATA packet).
    pub(super) scratch: Vec<usize>,
    /// Inside a receive batch ([`Endpoint::begin_batch`]): rounds wait for its end.
    pub(super) in_batch: bool,
    /// A round was asked for during the batch.
    pub(super) round_due: bool,
}

impl Endpoint {
    pub(super) fn grant_nonfifo_quota(&self) -> i64 {
        let c = &self.config;
        if c.grant_fifo_fraction == 0 {
            return i64::MAX / 2;
        }
        (1000 * c.fifo_grant_increment as i64) / c.grant_fifo_fraction as i64
            - c.fifo_grant_increment as i64
    }

    pub(super) fn refresh_outstanding(&mut self, h: usize) {
        if let Some(m) = self.rpcs[h].msgin.as_mut() {
            let now = m.outstanding();
            self.grants.total_incoming =
                self.grants.total_incoming + now as u64 - m.counted_outstanding as u64;
            m.counted_outstanding = now;
        }
    }

    /// Put the message of `h` where it belongs in the grant scheduler.
    pub(super) fn sched_update(&mut self, h: usize) {
        let srpt = self.config.srpt;
        let want = self.rpcs[h].msgin.as_ref().and_then(|m| {
            let rank = if srpt { m.length - m.received } else { 0 };
            let grantable = m.data.is_some() && !m.is_complete() && m.expected_end() < m.length;
            grantable.then_some(rank)
        });
        self.sched_set(h, want);
    }

    /// Take the message of `h` out of the grant scheduler.
    pub(super) fn sched_remove(&mut self, h: usize) {
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
        let aged = self.config.grant_fifo_fraction > 0;
        let grantable = &mut self.peers[peer].grantable;
        let old_head = grantable.first().copied();
        // The age part of a key never changes: `by_age` changes only when the message
        // enters or leaves the scheduler, not at each packet that lowers its rank.
        // Without a FIFO share it is never read, and not kept.
        match (old, want) {
            // The common case, a DATA packet of the message being granted: its rank
            // drops and it stays its peer's first (MinSet::replace touches no tree).
            (Some(o), Some(w)) => grantable.replace(&o, w),
            (Some(o), None) => {
                grantable.remove(&o);
                if aged {
                    self.grants.by_age.remove(&(o.1, h));
                }
            }
            (None, Some(w)) => {
                grantable.insert(w);
                if aged {
                    self.grants.by_age.insert((w.1, h));
                }
            }
            (None, None) => {}
        }
        let new_head = grantable.first().copied();
        let heads = &mut self.grants.heads;
        match (old_head, new_head) {
            (Some(o), Some(n)) if o != n => heads.replace(&(o, peer), (n, peer)),
            (Some(o), None) => {
                heads.remove(&(o, peer));
            }
            (None, Some(n)) => {
                heads.insert((n, peer));
            }
            _ => {}
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

    /// `prio`, or for the tail of a message (`left` bytes not yet granted, fewer than
    /// `grant_tail_bytes`) the unscheduled priority of that many bytes if it is higher.
    #[inline]
    fn tail_priority(&self, left: u32, prio: u8) -> u8 {
        if left >= self.config.grant_tail_bytes {
            return prio;
        }
        let cutoffs = &self.config.unsched_cutoffs;
        prio.max(homa_wire::unsched_priority(cutoffs, left).min(self.config.num_priorities - 1))
    }

    /// Grant what the scheduler says, after anything that may change it (inside a
    /// receive batch, at its end). Inline and split from the work (`grant_round`): most
    /// calls find nothing grantable.
    #[inline]
    pub(super) fn run_grants(&mut self) {
        if self.grants.in_batch {
            self.grants.round_due = true;
        } else if !self.grants.heads.is_empty() {
            self.grant_round();
        }
    }

    /// Start a batch of received datagrams: the grants they call for are worked out
    /// once, at [`end_batch`](Self::end_batch), instead of after each DATA packet, so a
    /// message whose packets arrive together gets one GRANT for all of them (as the
    /// Linux module grants once per batch of packets from the NIC), not one per packet.
    /// Everything else (responses, RESENDs, deliveries) is unchanged. A driver that
    /// reads packets in batches brackets each batch; without brackets every packet is
    /// granted for at once.
    pub fn begin_batch(&mut self) {
        self.grants.in_batch = true;
    }

    /// End the batch [`begin_batch`](Self::begin_batch) started, sending its GRANTs (and,
    /// when no data of ours waits to go, the acks owed for one-way messages delivered).
    pub fn end_batch(&mut self) {
        self.grants.in_batch = false;
        self.settle_kept();
        if std::mem::take(&mut self.grants.round_due) {
            self.run_grants();
        }
        self.one_way_acks_after_batch();
    }

    fn grant_round(&mut self) {
        let budget = |ep: &Endpoint| {
            (ep.config.max_incoming as u64).saturating_sub(ep.grants.total_incoming)
        };
        if self.grants.nonfifo_left <= 0 {
            // The oldest message's turn: it gets the next fifo_grant_increment.
            let oldest = self.grants.by_age.first().map(|&(_, h)| h);
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
                self.grants.nonfifo_left += self.grant_nonfifo_quota();
            }
        }
        let n = (self.config.max_overcommit as usize).min(self.grants.heads.len());
        // Reuse one vector: this runs for every DATA packet.
        let mut active = std::mem::take(&mut self.grants.scratch);
        active.clear();
        active.extend(self.grants.heads.iter().take(n).map(|&((_, _, h), _)| h));
        let window = if self.config.window == 0 {
            self.config.max_incoming / (n as u32 + 1)
        } else {
            self.config.window
        }
        .max(1);
        // Grant in steps of `grant_step_divisor`-th of the window (a packet at least):
        // with 4, the sender always holds at least three quarters of a window of granted
        // data, as good as the whole window for keeping the link busy (the window covers
        // several grant round trips), and a long message draws a GRANT per quarter window
        // instead of one per packet or two. Never more than the window, or a window below
        // one packet (a small max_incoming, many peers, or loopback's 64 KB packets)
        // would never be granted at all.
        let step = self
            .seg
            .max(window / self.config.grant_step_divisor)
            .max(match self.config.grant_lead_bytes {
                0 => 0,
                lead => window.saturating_sub(lead),
            })
            .min(window);
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
            target = target.min(end.saturating_add(room.min(u32::MAX as u64) as u32));
            let prio = self.tail_priority(m.length - end, self.grant_priority(rank, n));
            self.grants.nonfifo_left -= (target - end) as i64;
            self.grant(h, target, prio);
        }
        self.grants.scratch = active;
    }

    pub(super) fn grant(&mut self, h: usize, offset: u32, priority: u8) {
        let rpc = &mut self.rpcs[h];
        let Some(m) = rpc.msgin.as_mut() else { return };
        m.granted = offset;
        m.grant_priority = priority;
        if !rpc.is_client() {
            // The client owes us these bytes from now: the silence that ends a request
            // still arriving (timer.rs) counts from the grant. Counted on while we gave
            // it nothing to send (held at timeout_ticks to find out a dead client), a
            // request starved of grants for long was dropped at the first tick after
            // its grant unless the data came within it (swarm case
            // 4297551829358615363: after each lost GRANT). (A client's response keeps
            // its count: it fails only once its server has gone silent too, and finding
            // a dead server in time needs the ticks it waited for our grants.)
            rpc.silent_ticks = 0;
            self.clock.parked.remove(h);
        }
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
        self.queue_control(rpc.peer_addr, rpc.local, repr);
    }
}
