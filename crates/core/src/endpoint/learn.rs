//! Learning our unscheduled cutoffs from the messages we receive
//! (`Config::learn_cutoffs_ticks`): the lengths of recent incoming messages, and every so
//! many ticks new cutoffs from them, announced to senders the module's way (a new
//! `cutoff_version`; a sender whose DATA names an older one is sent CUTOFFS).

use super::Endpoint;
use crate::cutoffs::{split, unscheduled_packets};

/// Incoming message lengths remembered (the most recent).
const SAMPLES: usize = 4_096;
/// Fewest lengths to learn from.
const MIN_SAMPLES: usize = 256;
/// Bytes a packet occupies on an Ethernet link beyond its IP packet (as the pacer counts).
const ETHERNET_OVERHEAD: u32 = 38;

/// The lengths of recent incoming messages.
#[derive(Default)]
pub(super) struct Learner {
    lengths: Vec<u32>,
    /// Where the next length goes once `lengths` is full.
    next: usize,
    /// Scratch for the split: (key, wire bytes).
    samples: Vec<(u32, f64)>,
}

impl Learner {
    /// Free the split's scratch (up to a few MB for long messages), kept from one turn
    /// to the next while traffic flows; the lengths stay, and with them what was learned.
    pub(super) fn free_scratch(&mut self) {
        self.samples = Vec::new();
    }
}

impl Endpoint {
    /// A new incoming message of `len` bytes (when learning).
    #[inline]
    pub(super) fn learn_length(&mut self, len: u32) {
        if self.config.learn_cutoffs_ticks == 0 {
            return;
        }
        let l = &mut self.learner;
        if l.lengths.len() < SAMPLES {
            l.lengths.push(len);
        } else {
            l.lengths[l.next] = len;
            l.next = (l.next + 1) % SAMPLES;
        }
    }

    /// At a tick: every `learn_cutoffs_ticks`, cutoffs that give our unscheduled levels
    /// equal shares of the unscheduled bytes of the messages we received lately
    /// ([`split`]). They replace ours, under a new version, when a cutoff moved by more
    /// than an eighth (so that sampling noise does not send CUTOFFS to every sender at
    /// every turn).
    pub(super) fn learn_tick(&mut self, tick: u64) {
        let every = self.config.learn_cutoffs_ticks as u64;
        if every == 0 || tick % every != 0 || self.learner.lengths.len() < MIN_SAMPLES {
            return;
        }
        let c = &self.config;
        let (seg, by_remaining, tail) = (self.seg, c.unsched_prio_by_remaining, c.grant_tail_bytes);
        let unsched_end = c.unsched_bytes.div_ceil(seg).saturating_mul(seg);
        let per_packet = homa_wire::DATA_HEADER_LEN as u32 + c.ip_overhead + ETHERNET_OVERHEAD;
        let levels = c.num_priorities - 1 - c.max_sched_prio;
        let l = &mut self.learner;
        l.samples.clear();
        for &len in &l.lengths {
            let packets = unscheduled_packets(len, seg, unsched_end, tail, by_remaining);
            l.samples
                .extend(packets.map(|(key, bytes)| (key, (bytes + per_packet) as f64)));
        }
        // `split` fills the levels from 7 down; with fewer than 8 in use, move them down
        // so that the highest is `num_priorities - 1`.
        let top = split(&mut l.samples, levels, c.max_message_length);
        let mut new = [0; 8];
        let unused = 8 - c.num_priorities as usize;
        new[..8 - unused].copy_from_slice(&top[unused..]);
        let moved = new
            .iter()
            .zip(&c.unsched_cutoffs)
            .skip(1) // (slot 0 travels as 0 and means nothing)
            .any(|(&a, &b)| a.abs_diff(b) as u64 * 8 > a.max(b) as u64);
        if moved {
            self.config.unsched_cutoffs = new;
            self.config.cutoff_version = match self.config.cutoff_version.wrapping_add(1) {
                0 => 1, // (0 means "none received")
                v => v,
            };
            self.metrics.cutoff_updates += 1;
        }
    }
}
