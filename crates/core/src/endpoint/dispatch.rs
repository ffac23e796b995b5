//! Incoming datagrams: parse, count, and route each packet to the room for its type;
//! finding the RPC a packet is about.

use super::timer::MAX_BUSY_STREAK;
use super::Endpoint;
use crate::buffer::Received;
use crate::error::RpcError;
use crate::metrics::DropReason;
use crate::time::Time;
use bytes::Bytes;
use homa_wire::{
    Body, Common, DataFlags, OneWayMark, ParseError, RefusalMark, Repr, DATA_FLAGS_AT,
};
use std::net::IpAddr;

impl Endpoint {
    /// Process one received datagram (the Homa packet, header onward) from `from`.
    pub fn handle_datagram(&mut self, now: Time, from: IpAddr, bytes: &[u8]) {
        self.handle(now, from, None, bytes, None);
    }

    /// Like [`handle_datagram`](Self::handle_datagram), for a datagram that arrived at
    /// local address `to`: the packets that answer it, and those of the server RPC it
    /// starts, go from `to` ([`Transmit::src`](crate::Transmit::src)). A runtime whose
    /// socket is bound to a wildcard address says where each datagram arrived, so that a
    /// client that called one of the host's several addresses hears from that address.
    /// `None` where it is not known, as `handle_datagram`.
    pub fn handle_datagram_to(
        &mut self,
        now: Time,
        from: IpAddr,
        to: Option<IpAddr>,
        bytes: &[u8],
    ) {
        self.handle(now, from, to, bytes, None);
    }

    /// Like [`handle_datagram`](Self::handle_datagram), for a packet that lies inside
    /// `buffer`: the engine may then keep long payloads of long messages as slices of
    /// `buffer` instead of copying them (see [`MessageBuf`](crate::MessageBuf)), holding a handle to it
    /// until the message is released. A caller that reuses its receive buffers reclaims
    /// them (`BytesMut::try_reclaim`) and allocates a new one when a message still holds
    /// the old. A packet that is not inside `buffer` is copied as usual.
    pub fn handle_shared_datagram(
        &mut self,
        now: Time,
        from: IpAddr,
        packet: &[u8],
        buffer: &Bytes,
    ) {
        self.handle_shared_datagram_to(now, from, None, packet, buffer);
    }

    /// [`handle_shared_datagram`](Self::handle_shared_datagram) for a datagram that
    /// arrived at local address `to`, if known (see
    /// [`handle_datagram_to`](Self::handle_datagram_to)).
    pub fn handle_shared_datagram_to(
        &mut self,
        now: Time,
        from: IpAddr,
        to: Option<IpAddr>,
        packet: &[u8],
        buffer: &Bytes,
    ) {
        let (b, p) = (buffer.as_ptr_range(), packet.as_ptr_range());
        let inside = b.start <= p.start && p.end <= b.end;
        self.handle(now, from, to, packet, inside.then_some(buffer));
    }

    pub(super) fn handle(
        &mut self,
        now: Time,
        from: IpAddr,
        to: Option<IpAddr>,
        bytes: &[u8],
        owner: Option<&Bytes>,
    ) {
        self.arrival_local = self.local_index(to);
        let (repr, payload) = match Repr::parse(bytes, self.config.max_message_length) {
            Ok(x) => x,
            Err(e) => {
                self.metrics.count_drop(DropReason::Malformed);
                self.metrics.malformed[e.index()] += 1;
                if let ParseError::MessageTooLong { .. } = e {
                    self.on_too_long(from, bytes);
                }
                return;
            }
        };
        self.metrics.count_received(repr.packet_type(), bytes.len());
        self.start_clock(now);
        if let Some(p) = self.peers.find(from) {
            // (Found, not made: a forged source address adds nothing here.)
            let peer = &mut self.peers[p];
            peer.last_heard = self.clock.tick;
            peer.heard_at = Some(now);
        }
        let c = repr.common;
        match repr.body {
            Body::Data(d) => {
                self.on_data(
                    from,
                    c,
                    // (A parsed DATA packet holds a whole DATA header.)
                    (d, DataFlags::from_bits(bytes[DATA_FLAGS_AT])),
                    Received {
                        bytes: payload,
                        owner,
                    },
                );
                // A lone packet's buffer holds no other: weigh what was kept of it now
                // (a batch does at its end).
                if !self.grants.in_batch && !self.space.unsettled.is_empty() {
                    self.settle_kept();
                }
            }
            Body::Grant(g) => self.on_grant(from, c, g),
            Body::Resend(r) => self.on_resend(from, c, r),
            Body::RpcUnknown => self.on_rpc_unknown(from, c),
            Body::Busy => {
                if let Some(h) = self.find_rpc(from, c) {
                    let rpc = &mut self.rpcs[h];
                    rpc.silent_ticks = 0;
                    if !rpc.server_asked {
                        rpc.lost_restarts = 0;
                    }
                    rpc.busy_streak = rpc.busy_streak.saturating_add(1).min(MAX_BUSY_STREAK);
                    self.clock.parked.remove(h);
                    let peer = rpc.peer();
                    self.peers[peer].last_busy = Some(self.clock.tick);
                    let rpc = &mut self.rpcs[h];
                    // A client answers our NEED_ACK with BUSY while its response waits
                    // for buffer space there: it is alive and still wants this RPC, so
                    // the wait for its ACK starts over. Giving up on it (as on a client
                    // ignoring this RPC) would leave it, once it has room, only the
                    // silence an executed request gets: a timeout (swarm cases
                    // 2335962635125241138 and 3286172372260345759). The wait ends: the
                    // client answers BUSY only while the RPC is live on its side, and
                    // the stall ends once buffer space comes back (see `unstall`).
                    rpc.ack_wait_ticks = 0;
                }
            }
            Body::Cutoffs(k) => {
                // Peers are made only when an RPC needs one, so forged source addresses
                // cannot grow this table.
                if let Some(p) = self.peers.find(from).map(|p| &mut self.peers[p]) {
                    p.cutoffs = k.unsched_cutoffs;
                    p.cutoff_version = k.cutoff_version;
                }
                if let Some(mark) = OneWayMark::from_slot(k.unsched_cutoffs[0]) {
                    self.on_one_way_mark(from, c, mark);
                } else if let Some(mark) = RefusalMark::from_slot(k.unsched_cutoffs[0]) {
                    self.on_refusal(from, c, mark);
                }
            }
            Body::Freeze => {}
            Body::NeedAck => {
                let peer = self.peers.find(from);
                self.on_need_ack(peer, from, c)
            }
            Body::Ack(a) => self.on_ack(from, c, a),
        }
    }

    /// A DATA packet for a message longer than our `max_message_length` (dropped as
    /// malformed): no copy of it will ever be taken, so say so rather than let its
    /// sender try for ever. A request (or one-way message) to a socket of ours is
    /// answered with [`RefusalMark::TooLong`] naming the length, within the per-address
    /// answer budget (one answer per packet at most, no larger than it: no reflector).
    /// A response of one of our RPCs fails that RPC once two of its packets have claimed
    /// the same length (one could be a damaged copy; the server sends more, or sends
    /// again when we ask).
    fn on_too_long(&mut self, from: IpAddr, bytes: &[u8]) {
        let Ok((repr, _)) = Repr::parse(bytes, u32::MAX) else {
            return;
        };
        let (c, Body::Data(d)) = (repr.common, repr.body) else {
            return;
        };
        if c.sender_id & 1 == 1 {
            let Some(h) = self.find_client_rpc(from, c) else {
                return;
            };
            let rpc = &mut self.rpcs[h];
            if rpc.is_client() && rpc.msgin.is_none() {
                if rpc.too_long_claimed == d.message_length {
                    self.fail(h, RpcError::ResponseTooLong);
                } else {
                    rpc.too_long_claimed = d.message_length;
                }
            }
        } else if self.is_bound(c.dport) {
            self.refuse_for_good(from, c, RefusalMark::TooLong(d.message_length));
        }
    }

    /// Tell the client of a request (header `c`, from `from`) that we will never take
    /// it, and why.
    pub(super) fn refuse_for_good(&mut self, from: IpAddr, c: Common, why: RefusalMark) {
        if let Some(slot) = why.to_slot() {
            let body = Body::Cutoffs(self.own_cutoffs(slot));
            self.answer(from, c, body);
        }
    }

    /// The server of one of our requests says it will never take a message of the
    /// length it names: if that is our request's length, the RPC fails with the reason
    /// instead of restarting after every RPC_UNKNOWN for ever. (Another length is the
    /// answer to a damaged copy of our DATA: ignored.)
    fn on_refusal(&mut self, from: IpAddr, c: Common, why: RefusalMark) {
        let Some(h) = self.find_client_rpc(from, c) else {
            return;
        };
        let rpc = &self.rpcs[h];
        let ours = rpc.msgout.as_ref().map(|o| o.length);
        let (len, error) = match why {
            RefusalMark::TooLong(len) => (len, RpcError::RequestTooLong),
            RefusalMark::NeverFits(len) => (len, RpcError::RequestNeverFits),
        };
        if rpc.is_client() && ours == Some(len) {
            self.fail(h, error);
        } else {
            self.metrics.count_drop(DropReason::Inconsistent);
        }
    }

    pub(super) fn find_rpc(&self, from: IpAddr, c: Common) -> Option<usize> {
        if c.sender_id & 1 == 1 {
            self.find_client_rpc(from, c)
        } else {
            self.find_server_rpc(from, c)
        }
    }

    /// `find_rpc` for a packet from a server: one of our client RPCs.
    #[inline]
    pub(super) fn find_client_rpc(&self, from: IpAddr, c: Common) -> Option<usize> {
        let h = self.client_rpcs.get(c.sender_id ^ 1)?;
        let r = &self.rpcs[h];
        // (Address and port, not the whole `SocketAddr`: an IPv6 link-local destination
        // carries a scope id that packets from it do not.)
        let server = (r.peer_addr.ip(), r.peer_addr.port());
        (r.port == c.dport && server == (from, c.sport)).then_some(h)
    }

    /// `find_rpc` for a packet from a client: one of our server RPCs.
    #[inline]
    pub(super) fn find_server_rpc(&self, from: IpAddr, c: Common) -> Option<usize> {
        let h = *self.server_rpcs.get(&(from, c.sport, c.sender_id))?;
        (self.rpcs[h].port == c.dport).then_some(h)
    }
}
