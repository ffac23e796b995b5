//! The receive path: DATA packets, creating server RPCs (with the at-most-once check),
//! writing bytes into a message's buffer, and handing complete messages to the
//! application.

use super::buffers::Alloc;
use super::Endpoint;
use crate::buffer::{MessageBuf, Received};
use crate::error::RpcError;
use crate::event::Event;
use crate::metrics::DropReason;
use crate::rpc::{InMsg, Rpc, State};
use homa_wire::{AckEntry, Body, Common, Data, DataFlags, OneWayMark, RefusalMark, RpcId};
use std::net::{IpAddr, SocketAddr};

/// Acks a client holds for one server, per local port, before it sends five in an ACK
/// packet at once: they are carried by its next requests to that server (one each), or
/// in answer to the server's NEED_ACK (after `request_ack_ticks`) when it sends no more.
/// Bounds what a peer's completed RPCs leave here. (The module holds five.)
const ACKS_HELD: usize = 64;

/// How far past our grant a sender may go: the rest of the packet the grant ends in (a
/// packet carries less than 64 KiB).
const MAX_PACKET_ROUND_UP: u32 = 65_536;

/// Most ranges a message may be received in past its first gap: a conforming sender's
/// packets leave at most one gap per lost packet, far fewer than this.
fn max_fragments(length: u32) -> usize {
    (length as usize / 1024).max(64)
}

impl Endpoint {
    pub(super) fn on_data(
        &mut self,
        from: IpAddr,
        c: Common,
        (d, flags): (Data, DataFlags),
        payload: Received<'_>,
    ) {
        let one_way = flags.contains(DataFlags::ONE_WAY);
        let ack_one_way = one_way && flags.contains(DataFlags::ACK_ONE_WAY);
        if let Some(a) = d.ack.filter(|_| ack_one_way) {
            self.one_way_acked(from, a);
        }
        let h = if c.sender_id & 1 == 1 {
            match self.find_client_rpc(from, c) {
                Some(h) if self.rpcs[h].is_client() => h,
                _ => {
                    // A response for an RPC we no longer have (aborted, failed, or done
                    // and this is a late retransmitted copy): dropped, unanswered, as
                    // Linux Homa does. A server still waiting on us finds out by asking:
                    // its RESEND (or NEED_ACK) is answered.
                    return self.metrics.count_drop(DropReason::UnknownRpc);
                }
            }
        } else {
            // The ack a request carries is the client's word on an earlier response,
            // whether or not this request is taken (by a port that stopped taking
            // requests, draining before it closes, which still waits for those acks; or
            // by no socket, where it matches nothing, as a forged ACK packet would).
            if let Some(ack) = d.ack.filter(|_| !ack_one_way) {
                self.apply_ack(from, c.sport, ack);
            }
            let socket = self.sockets.get(&c.dport);
            if !socket.is_some_and(|s| if one_way { s.one_way } else { s.server }) {
                if one_way {
                    // (Only a sender that knows the extension sets the flag.)
                    let mark = match socket {
                        Some(_) => OneWayMark::Refuse,
                        None => OneWayMark::NoSocket,
                    };
                    self.answer_one_way(from, c, mark);
                }
                return self.refuse_request(c.dport);
            }
            match self.find_server_rpc(from, c) {
                Some(h) if self.rpcs[h].one_way == one_way => h,
                Some(_) => return self.metrics.count_drop(DropReason::Inconsistent),
                None => match self.new_server_rpc(from, c, &d, one_way) {
                    Some(h) => h,
                    None => return,
                },
            }
        };
        if d.cutoff_version != self.config.cutoff_version {
            self.send_cutoffs(h);
        }
        self.accept_data(h, d, payload);
    }

    /// A request (header `c`, DATA `d`, from `from`) is refused for want of room, for
    /// now: its client will restart it. The first packet of each attempt is answered
    /// with BUSY (within the answer budget), so that the client counts its restarts as
    /// a server holding it off, not as a request lost on the way (`on_rpc_unknown`).
    fn hold_off(&mut self, from: IpAddr, c: Common, d: &Data) {
        if d.offset == 0 {
            self.answer(from, c, Body::Busy);
        }
    }

    fn new_server_rpc(
        &mut self,
        from: IpAddr,
        c: Common,
        d: &Data,
        one_way: bool,
    ) -> Option<usize> {
        let len = d.message_length;
        let tick = self.clock.tick;
        let key = (from, c.sport);
        let history = self.histories.find(key);
        if let Some(i) = history.filter(|&i| self.histories[i].rejects(c.sender_id)) {
            let horizon = self.config.dedup_horizon_ticks as u64;
            if !self.histories[i].new_incarnation(c.sender_id, tick, horizon) {
                self.metrics.count_drop(DropReason::AlreadyExecuted);
                return None;
            }
            // A new socket on the client's port, numbering from its own random base
            // (history.rs): it starts a new history.
            self.histories[i] = Default::default();
        }
        let cap = self.config.max_incoming_held;
        let no_room = self.space.held + len as u64 + self.reserved_for_first_in_line(None) > cap;
        let mut queue_full = self.space.stalled.len() >= self.config.max_stalled_messages as usize;
        let known_peer = self.peers.find(from);
        let (over_share, stalls_full, mine) = match known_peer {
            Some(p) => (
                self.over_peer_share(p, len as u64),
                self.peers[p].req_stalled.len() as u32 >= self.peer_share_stalled(),
                self.peers[p].req_stalled.len() as u32,
            ),
            None => (false, false, 0),
        };
        if len as u64 <= cap && (no_room || over_share) && queue_full && !stalls_full {
            // Every stalled slot is taken, but not by this peer: make room by dropping the
            // newest waiting request of the peer with the most (its client will be told
            // RPC_UNKNOWN and retry), so many flooding peers cannot lock one out.
            queue_full = !self.evict_stalled_request(mine);
        }
        if len as u64 > cap || ((no_room || over_share) && (queue_full || stalls_full)) {
            // Could never be buffered, or too many already wait: keep no state at all. A
            // client socket we already know keeps the id in its history as refused, so
            // that its floor waits for the restarts (a request refused for long must not
            // end up refused for good as if executed).
            self.metrics.count_drop(DropReason::NoBuffer);
            if let Some(i) = history.filter(|_| len as u64 <= cap) {
                self.histories[i].note_refused(c.sender_id, tick);
            }
            if len as u64 > cap {
                // No wait would make room: say so, or the client restarts it for ever.
                self.refuse_for_good(from, c, RefusalMark::NeverFits(len));
            } else {
                self.hold_off(from, c, d);
            }
            return None;
        }
        // A new peer or client socket needs room in its table: if every entry holds
        // something, the request is refused without state, as above (its client gets
        // RPC_UNKNOWN and tries again). A flood of forged sources fills the tables up to
        // their limits, never past.
        let horizon = self.config.dedup_horizon_ticks as u64;
        let no_peer = known_peer.is_none() && !self.peers.make_room(tick);
        if no_peer || (history.is_none() && !self.histories.make_room(tick, horizon)) {
            self.metrics.count_drop(DropReason::NoBuffer);
            if let Some(i) = history {
                self.histories[i].note_refused(c.sender_id, tick);
            }
            self.hold_off(from, c, d);
            return None;
        }
        // (Freeing other RPCs above leaves every history where it is: only the timer's
        // sweep and `make_room` remove them.)
        let history = history.unwrap_or_else(|| self.histories.insert(key));
        self.histories[history].note_created(c.sender_id, tick);
        let peer = known_peer.unwrap_or_else(|| self.peers.get_or_insert(from, tick));
        self.peers[peer].rpcs += 1;
        let id = RpcId::from_sender_id(c.sender_id);
        let at = (peer, SocketAddr::new(from, c.sport));
        let local = self.arrival_local;
        let h = self.rpcs.insert_with(|| Rpc {
            one_way,
            local,
            ..Rpc::new(id, c.dport, at, history, State::Incoming)
        });
        self.server_rpcs.insert((from, c.sport, c.sender_id), h);
        Some(h)
    }

    fn accept_data(&mut self, h: usize, d: Data, payload: Received<'_>) {
        let rpc = &mut self.rpcs[h];
        match rpc.state {
            State::Client | State::Incoming => {}
            // Request data after the request was delivered: a duplicate.
            _ => return self.metrics.count_drop(DropReason::Inconsistent),
        }
        let mut seeded = false;
        if rpc.msgin.is_none() {
            if rpc.is_client() && d.message_length as u64 > self.config.max_incoming_held {
                return self.fail(h, RpcError::NoBufferSpace);
            }
            // A response is as old as its RPC: among messages with as many bytes left,
            // and for the oldest message's share of grants, it comes before requests
            // that arrived after its own request left. By its arrival instead, the
            // responses of hundreds of RPCs to one peer waited behind every request
            // that peer had sent meanwhile (all the same length): no RPC completed
            // for seconds under loss (swarm case 4297551829358615363).
            let birth = match rpc.msgout.as_ref().filter(|_| rpc.is_client()) {
                Some(out) => out.birth,
                None => {
                    self.next_birth += 1;
                    self.next_birth - 1
                }
            };
            self.learn_length(d.message_length);
            // The first packet usually starts the message (for most RPCs it is the
            // whole message): the buffer is made holding it. Long packets in shared
            // buffers (loopback, jumbo frames, GRO aggregates) are kept rather than
            // copied.
            let keep = payload.may_keep();
            let len = d.message_length;
            let whole = d.offset == 0 && payload.bytes.len() == len as usize;
            if whole && self.buffer_room(h, len as u64) == Alloc::Done {
                // The whole message in its first packet, and room for it: deliver it now.
                // The steps below come to exactly this for it (a buffer made holding the
                // packet, the RPC's silence reset, then `deliver`), except that they also
                // make the receive state of a message arriving in pieces (byte ranges,
                // grant rank, outstanding bytes) and drop it again untouched.
                let data = self.take_buffer(h, len as u64, payload, keep);
                self.rpcs[h].silent_ticks = 0;
                self.clock.parked.remove(h);
                self.hand_over(h, data);
                return self.run_grants();
            }
            // (Built in place: there is no old message to drop.)
            self.rpcs[h]
                .msgin
                .get_or_insert_with(|| InMsg::new(len, birth, keep));
            let head = if d.offset == 0 {
                payload
            } else {
                Received::copied(&[])
            };
            seeded = self.try_allocate(h, head, keep) == Alloc::Done && !head.bytes.is_empty();
        }
        let rpc = &mut self.rpcs[h];
        let Some(m) = rpc.msgin.as_mut() else { return };
        if m.length != d.message_length {
            return self.metrics.count_drop(DropReason::Inconsistent);
        }
        // A sender may send what it declares unscheduled (`incoming`), but no more than
        // our own incoming budget (or unscheduled bytes, if larger), and what we granted.
        // A packet starting past that, or adding one more fragment to a message already
        // in too many, is dropped: neither memory nor the grant budget nor the work per
        // packet can then be driven up by a peer sending tiny pieces or claiming a whole
        // message as unscheduled.
        // (Past a grant, a sender sends the rest of the packet the grant ends in.)
        let cap = self
            .max_declared_incoming
            .max(m.granted.saturating_add(MAX_PACKET_ROUND_UP));
        let declared = d.incoming.min(m.length).min(cap);
        m.incoming = m.incoming.max(declared);
        let end = d.offset + payload.bytes.len() as u32;
        let fragments_full = m.ranges.fragments() >= max_fragments(m.length)
            && m.ranges.would_fragment(d.offset, end);
        if d.offset >= m.expected_end().max(1) || fragments_full {
            return self.metrics.count_drop(DropReason::Excess);
        }
        rpc.silent_ticks = 0;
        rpc.busy_streak = 0;
        self.clock.parked.remove(h);
        match m.data.as_mut() {
            None => {
                if !self.park(h, d.offset, payload) {
                    self.metrics.count_drop(DropReason::NoBuffer);
                }
            }
            Some(buf) => {
                let open = buf.open_buffer();
                if !seeded && !buf.write(d.offset as usize, payload, &mut self.space.pool) {
                    return self.metrics.count_drop(DropReason::Excess);
                }
                if open == 0 && buf.open_buffer() != 0 {
                    self.space.unsettled.push(h);
                }
                m.received += m.ranges.insert(d.offset, end);
            }
        }
        self.refresh_outstanding(h);
        if self.rpcs[h].msgin.as_ref().is_some_and(InMsg::is_complete) {
            self.deliver(h);
        } else {
            self.sched_update(h);
        }
        self.run_grants();
    }

    pub(super) fn deliver(&mut self, h: usize) {
        self.sched_remove(h);
        let rpc = &mut self.rpcs[h];
        let Some(m) = rpc.msgin.as_mut() else {
            return;
        };
        let mut data = m.data.take().unwrap_or_default();
        // The application may hold it for long: nothing it keeps pins a buffer for more
        // than its share.
        data.settle();
        self.grants.total_incoming -= m.counted_outstanding as u64;
        rpc.msgin = None; // (dropped in place: moving it out would copy all of it)
        self.hand_over(h, data);
    }

    /// Give the application RPC `h`'s incoming message, `data`.
    // Inline (as take_buffer): every message comes this way, and as a call its register
    // saves and argument moves were a tenth of its cost.
    #[inline(always)]
    pub(super) fn hand_over(&mut self, h: usize, data: MessageBuf) {
        let rpc = &self.rpcs[h];
        if !rpc.is_client() {
            // Delivered: the application holds it now, not the peer's share.
            let p = rpc.peer();
            self.set_req_held(p, self.peers[p].req_held - data.len() as u64);
        }
        let rpc = &mut self.rpcs[h];
        if rpc.is_client() {
            self.metrics.responses_delivered += 1;
            self.events.push_back(Event::Response {
                port: rpc.port,
                id: rpc.id,
                cookie: rpc.cookie,
                peer: rpc.peer_addr,
                private: rpc.private,
                data,
            });
            let (peer, port, ack) = (
                rpc.peer(),
                rpc.port,
                AckEntry {
                    client_id: rpc.id.0,
                    server_port: rpc.peer_addr.port(),
                },
            );
            let dest = rpc.peer_addr;
            let id = rpc.id;
            self.free_rpc(h);
            // The ack rides on a later request to that peer (one per request), or answers
            // the server's NEED_ACK. Only past `ACKS_HELD` does an ACK packet go now: the
            // module sends one every five completions, which a client completing a batch
            // of responses turned into an ACK packet per five RPCs, though the requests
            // it then sent could have carried them all.
            if self.peers.owe_ack(peer, port, ack, ACKS_HELD) {
                self.send_ack(Some(peer), dest, port, id.0);
            }
        } else if rpc.one_way {
            self.hand_over_one_way(h, data);
        } else {
            self.metrics.requests_delivered += 1;
            self.last_request = Some(h);
            rpc.state = State::InService;
            rpc.silent_ticks = 0;
            self.clock.parked.remove(h);
            self.events.push_back(Event::Request {
                port: rpc.port,
                id: rpc.id,
                peer: rpc.peer_addr,
                data,
            });
        }
    }
}
