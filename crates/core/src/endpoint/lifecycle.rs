//! How RPCs end: freed (done), failed (the client application is told why) or discarded
//! (a server RPC dropped without an answer), with everything they held given back; and
//! the memory of tables they left large given back too.

use super::Endpoint;
use crate::error::RpcError;
use crate::event::Event;
use crate::rpc::State;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::hash::Hash;

/// A table is shrunk when its capacity passes this many times what it holds (and
/// [`SHRINK_FLOOR`]), to twice what it holds.
pub(super) const SHRINK_FACTOR: usize = 4;
/// Below this capacity a table is never shrunk.
pub(super) const SHRINK_FLOOR: usize = 64;

impl Endpoint {
    pub(super) fn free_rpc(&mut self, h: usize) {
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
    pub(super) fn free_unlinked(&mut self, h: usize) {
        self.drop_msgin(h);
        let rpc = &self.rpcs[h];
        self.peers[rpc.peer()].rpcs -= 1;
        if let Some(out) = rpc.msgout.as_ref() {
            if let Some(r) = out.send_rank {
                if out.length <= self.seg && !self.config.short_messages_srpt {
                    self.sender.short_queued -= 1; // (its queue entry is skipped when reached)
                } else {
                    self.sender.sendable.remove(&out.send_key(r, h));
                    if self.sender_keeps_age() {
                        self.sender.by_age.remove(&(out.birth, h));
                    }
                }
            }
            self.outgoing_held[!rpc.is_client() as usize] -= out.length as u64;
        }
        if !rpc.is_client() {
            let executed = rpc.state != State::Incoming;
            // A history outlives its socket's RPCs: the sweep drops only idle ones.
            if let Some(hist) = self.histories.get_mut(rpc.history as usize) {
                hist.note_freed(rpc.id.client_id(), executed, self.clock.tick);
            }
        }
        self.clock.parked.remove(h);
        self.rpcs.remove(h);
    }

    pub(super) fn fail(&mut self, h: usize, error: RpcError) {
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

    pub(super) fn discard_server(&mut self, h: usize) {
        self.free_rpc(h);
        self.run_grants();
    }

    pub(super) fn fail_or_discard(&mut self, h: usize, error: RpcError) {
        if self.rpcs[h].is_client() {
            self.fail(h, error);
        } else {
            self.discard_server(h);
        }
    }
}

impl Endpoint {
    /// Give back memory that tables grown by a burst or a flood no longer need: each is
    /// shrunk once it holds far less than it has room for, and the receive buffer pool
    /// frees pages it did not use since the last time. With `idle` (nothing left that
    /// needs the clock), the pool is emptied too, and so is the scratch of the cutoff
    /// learner. Runs with the history sweep.
    pub(super) fn give_back_memory(&mut self, idle: bool) {
        self.rpcs.shrink();
        shrink_map(&mut self.server_rpcs);
        self.client_rpcs.shrink();
        shrink_queue(&mut self.events);
        shrink_queue(&mut self.sender.control);
        shrink_queue(&mut self.sender.background);
        shrink_queue(&mut self.sender.retransmits);
        self.sender.short_queue.shrink();
        shrink_vec(&mut self.clock.actions);
        shrink_vec(&mut self.clock.ranked);
        shrink_vec(&mut self.clock.gone);
        shrink_map(&mut self.clock.unknowns_sent);
        if idle {
            self.space.pool.clear();
            self.learner.free_scratch();
        } else {
            self.space.pool.trim();
        }
    }
}

/// Shrink `map` if it holds far less than it has room for (see [`SHRINK_FACTOR`]).
pub(super) fn shrink_map<K: Eq + Hash, V>(map: &mut FxHashMap<K, V>) {
    if map.capacity() > SHRINK_FACTOR * map.len().max(SHRINK_FLOOR) {
        map.shrink_to(2 * map.len());
    }
}

pub(super) fn shrink_queue<T>(q: &mut VecDeque<T>) {
    if q.capacity() > SHRINK_FACTOR * q.len().max(SHRINK_FLOOR) {
        q.shrink_to(2 * q.len());
    }
}

pub(super) fn shrink_vec<T>(v: &mut Vec<T>) {
    if v.capacity() > SHRINK_FACTOR * v.len().max(SHRINK_FLOOR) {
        v.shrink_to(2 * v.len());
    }
}
