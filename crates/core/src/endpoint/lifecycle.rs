//! How RPCs end: freed (done), failed (the client application is told why) or discarded
//! (a server RPC dropped without an answer), with everything they held given back.

use super::Endpoint;
use crate::error::RpcError;
use crate::event::Event;
use crate::rpc::State;

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
                if out.length <= self.seg {
                    self.sender.short_queued -= 1; // (its queue entry is skipped when reached)
                } else {
                    self.sender.sendable.remove(&out.send_key(r, h));
                    self.sender.by_age.remove(&(out.birth, h));
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
