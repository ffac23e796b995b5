//! Control packets: answering RESEND, RPC_UNKNOWN, NEED_ACK and ACK, and writing RESEND,
//! RPC_UNKNOWN, BUSY, CUTOFFS and ACK (they wait in the sender's control queue).

use super::outgoing::{Control, Retransmit};
use super::Endpoint;
use crate::error::RpcError;
use crate::metrics::DropReason;
use crate::rpc::State;
use crate::time::Time;
use homa_wire::{AckEntry, Acks, Body, Common, Cutoffs, Repr, Resend, RESEND_ALL};
use std::collections::hash_map::Entry;
use std::net::{IpAddr, SocketAddr};

/// Priority of every control packet: the highest (clamped to `num_priorities`).
const CONTROL_PRIORITY: u8 = 7;
/// Most answers about RPCs we do not have (RPC_UNKNOWN for a RESEND, ACK for a
/// NEED_ACK) and one-way answers (to questions, to refused or lost-ack one-way DATA)
/// sent to one address in a tick (a peer's RESENDs are themselves limited to 8 a tick
/// per peer, its NEED_ACKs to 2).
const RPC_UNKNOWNS_PER_SOURCE: u32 = 16;
/// Most addresses answered so in a tick: a flood of such packets from forged sources
/// gets at most this many times `RPC_UNKNOWNS_PER_SOURCE` answers a tick, and the
/// table that counts them stays this small.
const UNKNOWN_SOURCES_PER_TICK: usize = 1_024;
/// Restarts in a row with no sign that the server holds the request, after which a
/// client RPC fails with `RpcError::RequestLost`. Random loss must
/// not get there: each restart is lost whole only with the loss rate's probability
/// (at 30% loss, 17 in a row happen about once in 10^9 requests), where a path that
/// drops the request's packets takes them all.
const MAX_LOST_RESTARTS: u8 = 16;
/// Most RESENDs one RPC sends per round (one per gap, the last for the tail).
const MAX_RESENDS_PER_ROUND: usize = 8;

impl Endpoint {
    pub(super) fn on_resend(&mut self, from: IpAddr, c: Common, r: Resend) {
        let Some(h) = self.find_rpc(from, c) else {
            let from_client = c.sender_id & 1 == 0;
            if from_client && self.ack_one_way_again(from, c) {
                return;
            }
            let (tick, horizon) = (self.clock.tick, self.config.dedup_horizon_ticks as u64);
            if from_client
                && self.histories.find((from, c.sport)).is_some_and(|i| {
                    let h = &self.histories[i];
                    h.rejects(c.sender_id) && !h.new_incarnation(c.sender_id, tick, horizon)
                })
            {
                // Executed and freed: staying silent lets the client time out; an
                // RPC_UNKNOWN would make it run the request again.
                return self.metrics.count_drop(DropReason::AlreadyExecuted);
            }
            if from_client && !self.sockets.get(&c.dport).is_some_and(|s| s.server) {
                return self.refuse_request(c.dport);
            }
            return self.send_rpc_unknown(from, c);
        };
        let rpc = &mut self.rpcs[h];
        if r.length != RESEND_ALL
            && matches!(rpc.state, State::Client | State::Outgoing)
            && rpc.msgout.as_ref().is_some_and(|o| r.offset >= o.length)
        {
            // Bytes past the end of our message: the peer has a wrong length for it (a
            // corrupted or forged DATA). Nothing can satisfy it, and it is not the peer
            // working on this RPC as we know it, so it does not count as hearing from it:
            // answered, it would keep both sides "alive" for ever, each asking the other.
            return self.metrics.count_drop(DropReason::Malformed);
        }
        let stalled =
            rpc.state == State::Incoming && rpc.msgin.as_ref().is_some_and(|m| m.data.is_none());
        if matches!(rpc.state, State::Client | State::Outgoing) || stalled {
            // The peer knows this RPC and is working on it (or, for a request stalled
            // for buffer space, is waiting for us).
            rpc.silent_ticks = 0;
            self.clock.parked.remove(h);
        }
        let rpc = &mut self.rpcs[h];
        // A server asking for our request's bytes does not hold all of it: its BUSY
        // then says nothing about whether the request gets there (`on_rpc_unknown`).
        rpc.server_asked |= rpc.state == State::Client;
        if rpc.state == State::Outgoing {
            // The client still lacks response bytes: the wait for its ACK starts over
            // with the retransmission. Giving up now would leave it only silence (the
            // request counts as executed), so it would time out.
            rpc.ack_wait_ticks = 0;
        }

        let id = rpc.id;
        let out = match (rpc.state, rpc.msgout.as_mut()) {
            (State::Client | State::Outgoing, Some(out)) => out,
            _ => return self.send_busy(h),
        };
        let end = if r.length == RESEND_ALL {
            out.next_xmit
        } else {
            r.offset.saturating_add(r.length).min(out.length)
        };
        if r.length != RESEND_ALL && end > out.granted {
            // Asking for bytes past our grant means a GRANT was lost.
            out.granted = end;
        }
        // Whole packets, as they first went (fresh packets start at multiples of `seg`):
        // the receiver asks up to what it knows we may send, which through a grant window
        // smaller than a packet ends inside the packet we sent, rounded up past the
        // grant. Resending only the bytes asked for left the rest of that packet missing,
        // and the receiver, which grants no more until it has them, asked for them only
        // after another `resend_ticks` of silence: every lost DATA packet cost two rounds
        // of RESENDs, not one (swarm case 777589: 1 MB messages through a 1,177-byte
        // window of 1,416-byte packets at 18% loss, called stalled after 7.5 s without a
        // completion; half of its retransmissions were 239-byte tails).
        let stop = end
            .div_ceil(self.seg)
            .saturating_mul(self.seg)
            .min(out.next_xmit);
        // Bytes retransmitted within the last half resend interval are on their way:
        // asking again for them queues nothing (a flood of copies of one RESEND, forged
        // or not, must not make us send the message again and again).
        let tick = self.clock.tick;
        let window = self.config.resend_interval.div_ceil(2) as u64;
        if tick >= out.resent_since + window {
            out.resent = Default::default();
            out.resent_since = tick;
        }
        if r.offset < stop && out.resent.covers(r.offset, stop) {
            return self.metrics.count_drop(DropReason::Excess);
        }
        if r.offset < stop {
            out.resent.insert(r.offset, stop);
            let priority = r.priority.min(self.config.num_priorities - 1);
            self.sender.retransmits.push_back(Retransmit {
                handle: h,
                id,
                start: r.offset,
                end: stop,
                priority,
            });
            let rpc = &mut self.rpcs[h];
            if rpc.state == State::Outgoing {
                // No NEED_ACK while response data waits to go again: the clock for it
                // starts when the retransmission is handed to the network.
                rpc.need_ack_after = Time(u64::MAX);
            }
        } else {
            self.send_busy(h);
        }
        self.send_update(h);
    }

    pub(super) fn on_rpc_unknown(&mut self, from: IpAddr, c: Common) {
        let Some(h) = self.find_rpc(from, c) else {
            return;
        };
        if self.rpcs[h].is_client() {
            let rpc = &self.rpcs[h];
            if rpc.msgin.is_some() || !rpc.resent_since_start {
                // Response bytes arrived, so the server knows this RPC; or we have not
                // asked since the last restart, so this answers a RESEND from before it
                // (a server behind on its input answers a run of them late). Either way
                // the RPC_UNKNOWN is stale, and restarting would throw away progress and
                // send the whole request again into a server that is already overloaded.
                return;
            }
            // The server does not know our request (it may have refused it for want of
            // buffer space): send it again from the start. An RPC_UNKNOWN is an answer
            // from a live server, so the silence starts over; a server that keeps
            // refusing is bounded by its history, which refuses the id silently once
            // its floor passes it (history.rs), and then this RPC times out.
            //
            // But a server can answer for ever without ever holding the request: when
            // the path drops its packets (longer than a hop's MTU, or IP fragments
            // filtered) and not the short RESEND and RPC_UNKNOWN, every restart is lost
            // again (and when only a short last packet gets through, the server asks for
            // the rest until it gives up on it, then answers RPC_UNKNOWN once more). So
            // restarts count as answers only up to `MAX_LOST_RESTARTS` in a row
            // without a sign that the server held the request or is
            // holding it off: a GRANT, or a BUSY while it asked for none of the
            // request's bytes (a server refusing it for want of room answers its first
            // packet with BUSY); then the RPC fails.
            let rpc = &mut self.rpcs[h];
            rpc.server_asked = false;
            if rpc.lost_restarts >= MAX_LOST_RESTARTS {
                self.metrics.requests_lost += 1;
                return self.fail(h, RpcError::RequestLost);
            }
            rpc.lost_restarts += 1;
            self.metrics.restarts += 1;
            self.rpcs[h].silent_ticks = 0;
            self.clock.parked.remove(h);
            self.rpcs[h].resent_since_start = false;
            self.drop_msgin(h);
            let unsched = self.rpcs[h].msgout.as_ref().map_or(0, |o| o.unsched_end);
            if let Some(out) = self.rpcs[h].msgout.as_mut() {
                out.next_xmit = 0;
                out.granted = unsched;
            }
            self.send_update(h);
        } else {
            self.discard_server(h);
        }
    }

    pub(super) fn on_need_ack(&mut self, peer: Option<usize>, from: IpAddr, c: Common) {
        if let Some(h) = self.find_rpc(from, c) {
            let rpc = &self.rpcs[h];
            if rpc.is_client() && rpc.msgin.as_ref().is_some_and(|m| m.data.is_none()) {
                // Our response waits for buffer space here, and we ask for nothing while
                // it does: say we are alive and still want it, or the server, hearing
                // nothing, would give up on an executed RPC we can then never complete.
                return self.send_busy(h);
            }
            // Our response is incomplete (or this is about a server RPC): nothing to
            // acknowledge yet. As in Linux Homa, no RESEND either: the server asks every
            // tick, and when our input is backlogged the response is usually already
            // queued here, so each RESEND would only make the server send it again and
            // deepen the backlog (measured: a closed loop of 64 outstanding RPCs on a
            // CPU-starved client collapsed into retransmissions and timeouts). Lost
            // packets are recovered by this RPC's own RESEND timer.
            return;
        }
        if c.sender_id & 1 == 1 && self.answer_budget(from) {
            self.send_ack(
                peer,
                SocketAddr::new(from, c.sport),
                c.dport,
                c.sender_id ^ 1,
            );
        }
    }

    pub(super) fn on_ack(&mut self, from: IpAddr, c: Common, acks: Acks) {
        if c.sender_id & 1 == 1 {
            // From the receiving side: only the one-way extension sends those.
            return self.on_one_way_acks(from, c, acks);
        }
        self.apply_ack(
            from,
            c.sport,
            AckEntry {
                client_id: c.sender_id,
                server_port: c.dport,
            },
        );
        for &a in acks.as_slice() {
            self.apply_ack(from, c.sport, a);
        }
    }

    pub(super) fn apply_ack(&mut self, from: IpAddr, client_port: u16, ack: AckEntry) {
        let key = (from, client_port, ack.client_id);
        if let Entry::Occupied(found) = self.server_rpcs.entry(key) {
            let h = *found.get();
            let rpc = &self.rpcs[h];
            if rpc.port == ack.server_port && rpc.state == State::Outgoing {
                // discard_server, with the RPC unlinked here rather than looked up again.
                found.remove();
                self.free_unlinked(h);
                self.run_grants();
            }
        }
    }

    pub(super) fn control_priority(&self) -> u8 {
        CONTROL_PRIORITY.min(self.config.num_priorities - 1)
    }

    pub(super) fn common_for(&self, h: usize) -> Common {
        let rpc = &self.rpcs[h];
        Common {
            sport: rpc.port,
            dport: rpc.peer_addr.port(),
            sender_id: rpc.id.to_wire(),
        }
    }

    /// Queue a control packet to go at the control priority, from local address `local`
    /// (an index into `Endpoint::locals`, 0 for any: see [`Transmit::src`]).
    pub(super) fn queue_control(&mut self, dest: SocketAddr, local: u8, repr: Repr) {
        let priority = self.control_priority();
        self.sender.control.push_back(Control {
            dest,
            repr,
            priority,
            local,
        });
    }

    /// May we answer one more packet from `from` this tick (an RPC_UNKNOWN for a RESEND,
    /// an ACK for a NEED_ACK about an RPC we do not have, a one-way answer)? At most
    /// `RPC_UNKNOWNS_PER_SOURCE` answers to one address and `UNKNOWN_SOURCES_PER_TICK`
    /// addresses, so that packets with forged sources do not make us a reflector (or grow
    /// the count without bound). Counts a refusal as an excess drop.
    pub(super) fn answer_budget(&mut self, from: IpAddr) -> bool {
        let sent = &mut self.clock.unknowns_sent;
        let sources = sent.len();
        let ok = match sent.entry(from) {
            Entry::Occupied(mut n) if *n.get() < RPC_UNKNOWNS_PER_SOURCE => {
                *n.get_mut() += 1;
                true
            }
            Entry::Occupied(_) => false,
            Entry::Vacant(v) if sources < UNKNOWN_SOURCES_PER_TICK => {
                v.insert(1);
                true
            }
            Entry::Vacant(_) => false,
        };
        if !ok {
            self.metrics.count_drop(DropReason::Excess);
        }
        ok
    }

    /// Answer a packet about an RPC we do not have: ports swapped, the sender's id ^ 1.
    pub(super) fn send_rpc_unknown(&mut self, from: IpAddr, c: Common) {
        self.answer(from, c, Body::RpcUnknown);
    }

    /// Answer the packet from `from` with header `c` with `body` (ports swapped, the
    /// sender's id ^ 1), within the per-address answer budget, so that forged sources
    /// cannot make us a reflector.
    pub(super) fn answer(&mut self, from: IpAddr, c: Common, body: Body) {
        if !self.answer_budget(from) {
            return;
        }
        let common = Common {
            sport: c.dport,
            dport: c.sport,
            sender_id: c.sender_id ^ 1,
        };
        // (Called while the packet is handled: it came to `arrival_local`.)
        let to = SocketAddr::new(from, c.sport);
        self.queue_control(to, self.arrival_local, Repr { common, body });
    }

    fn send_busy(&mut self, h: usize) {
        // One a tick is answer enough (a flood of RESENDs gets no flood of BUSYs).
        let tick = self.clock.tick;
        if std::mem::replace(&mut self.rpcs[h].busy_tick, tick) == tick {
            return;
        }
        let repr = Repr {
            common: self.common_for(h),
            body: Body::Busy,
        };
        let rpc = &self.rpcs[h];
        self.queue_control(rpc.peer_addr, rpc.local, repr);
    }

    pub(super) fn send_cutoffs(&mut self, h: usize) {
        let peer = self.rpcs[h].peer();
        if self.peers[peer].cutoffs_sent_tick == Some(self.clock.tick) {
            return;
        }
        self.peers[peer].cutoffs_sent_tick = Some(self.clock.tick);
        let repr = Repr {
            common: self.common_for(h),
            body: Body::Cutoffs(self.own_cutoffs(0)),
        };
        let (dest, local) = (self.rpcs[h].peer_addr, self.rpcs[h].local);
        self.queue_control(dest, local, repr);
    }

    /// Our cutoffs as they travel in CUTOFFS, with a one-way `mark` in slot 0 (which is
    /// otherwise 0: receivers treat it as unlimited whatever it holds).
    /// Our cutoffs, with `slot0` (0, or one of this project's marks: `OneWayMark`,
    /// `RefusalMark`) in the slot that the module ignores.
    pub(super) fn own_cutoffs(&self, slot0: u32) -> Cutoffs {
        let mut unsched_cutoffs = self.config.unsched_cutoffs;
        unsched_cutoffs[0] = slot0;
        Cutoffs {
            unsched_cutoffs,
            cutoff_version: self.config.cutoff_version,
        }
    }

    /// ACK from local client port `port` to `dest`, naming `id` and carrying the acks
    /// owed for that port (at most five).
    pub(super) fn send_ack(&mut self, peer: Option<usize>, dest: SocketAddr, port: u16, id: u64) {
        // On the stack: a client past ACKS_HELD sends one of these per five completions.
        let mut acks = [AckEntry::default(); homa_wire::MAX_ACKS];
        let mut n = 0;
        // The oldest acks owed from `port` to the port they go to.
        if let Some(owed) = peer.and_then(|p| self.peers[p].acks_owed(port, dest.port())) {
            for a in owed.drain(..owed.len().min(homa_wire::MAX_ACKS)) {
                acks[n] = a;
                n += 1;
            }
        }
        let Ok(acks) = Acks::new(&acks[..n]) else {
            return;
        };
        let repr = Repr {
            common: Common {
                sport: port,
                dport: dest.port(),
                sender_id: id,
            },
            body: Body::Ack(acks),
        };
        // (A client's: from the address the kernel chooses, as its requests.)
        self.queue_control(dest, 0, repr);
    }

    /// RESENDs for what `h` is missing: one per gap and one for the expected tail; or
    /// "everything" when nothing has arrived.
    pub(super) fn send_resends(&mut self, h: usize) {
        let common = self.common_for(h);
        let rpc = &mut self.rpcs[h];
        rpc.resent_since_start |= rpc.is_client();
        let (dest, local) = (rpc.peer_addr, rpc.local);
        let mut ranges = Vec::new();
        match rpc.msgin.as_ref() {
            Some(m) if m.data.is_some() && m.received > 0 => {
                ranges.extend(m.ranges.gaps(m.expected_end()).take(MAX_RESENDS_PER_ROUND));
            }
            Some(m) if m.data.is_some() => ranges.push((0, m.expected_end().max(1))),
            Some(_) => {}
            None => ranges.push((0, 0)),
        }
        for (start, end) in ranges {
            let length = if end == 0 { RESEND_ALL } else { end - start };
            let repr = Repr {
                common,
                body: Body::Resend(Resend {
                    offset: start,
                    length,
                    priority: self.control_priority(),
                }),
            };
            self.queue_control(dest, local, repr);
        }
    }
}
