//! The application's commands: start an RPC, reply, abort, discard, inspect, release a
//! delivered message; and the admission check for outgoing messages.

use super::{Endpoint, RpcInfo, RpcState};
use crate::buffer::MessageBuf;
use crate::error::{Refused, ReplyError, RpcError, SendError};
use crate::rpc::{InMsg, OutMsg, Rpc, State};
use crate::time::Time;
use bytes::Bytes;
use homa_wire::RpcId;
use std::net::{IpAddr, SocketAddr};

impl Endpoint {
    /// Start an RPC: send `data` as a request to `dest` from the socket on `port`.
    /// `cookie` comes back with the response or failure. A `private` RPC's response is
    /// meant to be retrieved by id only (a hint for runtimes).
    pub fn send_request(
        &mut self,
        now: Time,
        port: u16,
        dest: SocketAddr,
        data: impl Into<Bytes>,
        cookie: u64,
        private: bool,
    ) -> Result<RpcId, SendError> {
        let h = self.new_client_rpc(now, port, dest, data.into(), (cookie, private), false)?;
        self.send_update(h);
        Ok(self.rpcs[h].id)
    }

    /// A new client RPC (a `one_way` message, or a request) sending `data` to `dest`
    /// from `port`, not yet in the sender's queues; returns its handle.
    pub(super) fn new_client_rpc(
        &mut self,
        now: Time,
        port: u16,
        dest: SocketAddr,
        data: Bytes,
        (cookie, private): (u64, bool),
        one_way: bool,
    ) -> Result<usize, SendError> {
        self.check_new_message(port, dest, data.len())?;
        self.start_clock(now);
        let id = RpcId(self.next_client_id);
        self.next_client_id += 2;
        let peer = self.peers.get_or_insert(dest.ip(), self.clock.tick);
        self.peers[peer].rpcs += 1;
        let msgout = self.new_outmsg(data, false);
        let h = self.rpcs.insert_with(|| Rpc {
            cookie,
            private,
            one_way,
            msgout: Some(msgout),
            ..Rpc::new(id, port, (peer, dest), 0, State::Client)
        });
        self.client_rpcs.insert(id.0, h);
        Ok(h)
    }

    /// Send the response to the request `id` from `peer` that arrived on `port`.
    pub fn reply(
        &mut self,
        now: Time,
        port: u16,
        peer: SocketAddr,
        id: RpcId,
        data: impl Into<Bytes>,
    ) -> Result<(), ReplyError> {
        let data = data.into();
        let h = self.awaiting_reply(port, peer, id)?;
        self.admit(data.len(), true)?;
        self.start_clock(now);
        let msgout = self.new_outmsg(data, true);
        let rpc = &mut self.rpcs[h];
        rpc.msgout = Some(msgout);
        rpc.state = State::Outgoing;
        rpc.silent_ticks = 0;
        self.clock.parked.remove(h);
        self.send_update(h);
        Ok(())
    }

    /// What [`reply`](Self::reply) would say, before taking anything on, to a response
    /// of `len` bytes to the request `id` from `peer` on `port`: `Ok` if it would send
    /// it. A runtime whose caller waits for room when the answer is
    /// [`ReplyError::WouldBlock`] asks first and keeps the payload.
    pub fn check_reply(
        &self,
        port: u16,
        peer: SocketAddr,
        id: RpcId,
        len: usize,
    ) -> Result<(), ReplyError> {
        self.awaiting_reply(port, peer, id)?;
        Ok(self.admit(len, true)?)
    }

    /// The server RPC of request `id` from `peer` on `port`, if it waits for its reply.
    fn awaiting_reply(&self, port: u16, peer: SocketAddr, id: RpcId) -> Result<usize, ReplyError> {
        // A server RPC with this peer and id is the one `server_rpcs` holds for them.
        let last = self.last_request.filter(|&h| {
            let r = self.rpcs.get(h);
            r.is_some_and(|r| !r.is_client() && r.id == id && r.peer_addr == peer)
        });
        last.or_else(|| {
            let key = (peer.ip(), peer.port(), id.client_id());
            self.server_rpcs.get(&key).copied()
        })
        .filter(|&h| {
            let r = &self.rpcs[h];
            r.port == port && r.id == id && r.state == State::InService
        })
        .ok_or(ReplyError::UnknownRpc)
    }

    /// Abort the client RPC `id` on `port`. With `error`, it fails with
    /// [`RpcError::Aborted`]; without, it is freed silently. Returns false if unknown.
    pub fn abort(&mut self, port: u16, id: RpcId, error: bool) -> bool {
        let Some(h) = self.client_rpcs.get(id.0) else {
            return false;
        };
        if self.rpcs[h].port != port {
            return false;
        }
        if error {
            self.fail(h, RpcError::Aborted);
        } else {
            self.free_rpc(h);
        }
        true
    }

    /// Abort every client RPC of `port`; returns how many.
    pub fn abort_all(&mut self, port: u16, error: bool) -> usize {
        let ids: Vec<RpcId> = self
            .rpcs
            .iter()
            .filter(|(_, r)| r.port == port && r.is_client())
            .map(|(_, r)| r.id)
            .collect();
        ids.iter()
            .filter(|&&id| self.abort(port, id, error))
            .count()
    }

    /// Drop a request the application will not answer. Its server RPC is freed and counts
    /// as executed, so a duplicate of the request never runs again; the client gets no
    /// answer and fails with [`RpcError::Timeout`]. Returns false if no request with that
    /// id from `peer` awaits a reply on `port`.
    pub fn discard(&mut self, port: u16, peer: SocketAddr, id: RpcId) -> bool {
        let key = (peer.ip(), peer.port(), id.client_id());
        match self.server_rpcs.get(&key).copied() {
            Some(h) if self.rpcs[h].port == port && self.rpcs[h].state == State::InService => {
                self.discard_server(h);
                true
            }
            _ => false,
        }
    }

    /// Progress of every live RPC of `port` (like Linux Homa's HOMAIOCINFO).
    pub fn rpcs(&self, port: u16) -> impl Iterator<Item = RpcInfo> + '_ {
        let seg = self.seg;
        self.rpcs
            .iter()
            .filter(move |(_, r)| r.port == port)
            .map(move |(h, r)| {
                let out = r.msgout.as_ref();
                let inm = r.msgin.as_ref();
                RpcInfo {
                    id: r.id,
                    peer: r.peer_addr,
                    cookie: r.cookie,
                    state: match r.state {
                        State::Client => RpcState::Client,
                        State::Incoming => RpcState::Incoming,
                        State::InService => RpcState::InService,
                        State::Outgoing if out.is_none_or(OutMsg::fully_sent) => {
                            RpcState::AwaitingAck
                        }
                        State::Outgoing => RpcState::Outgoing,
                    },
                    out_length: out.map(|o| o.length),
                    out_sent: out.map_or(0, |o| o.next_xmit),
                    out_granted: out.map_or(0, |o| o.send_limit(seg)),
                    in_length: inm.map(|m| m.length),
                    in_received: inm.map_or(0, |m| m.received),
                    in_granted: inm.map_or(0, InMsg::expected_end),
                    in_stalled: inm.is_some_and(|m| m.data.is_none()),
                    silent_ticks: self.silent_ticks(h),
                }
            })
    }

    /// Give back the bytes of a delivered message, so the space counts as free again and
    /// its memory is reused. (Dropping it gives the space back too, a little later: see
    /// [`MessageBuf`].) A clone, or a message of another endpoint, gives nothing back
    /// here.
    pub fn release(&mut self, mut data: MessageBuf) {
        if !data.settle_with(self.space.returned.as_ref()) {
            return; // not one this endpoint counts: dropping it settles what it owes
        }
        self.space.held = self.space.held.saturating_sub(data.len() as u64);
        data.recycle(&mut self.space.pool);
        self.reclaim_dropped();
        self.unstall();
        self.run_grants();
    }

    /// Take a delivered message's bytes for the application to keep, as one [`Bytes`]
    /// (to send on as another message's payload, say), and give its space back as
    /// [`release`](Self::release) does: the bytes no longer count against the receive
    /// space, and `data` is left empty, to be released or dropped as usual. No copy for a
    /// message in one chunk (up to a bpage; the chunk leaves the buffer pool for good) or
    /// kept as one packet's payload; one in several pieces (pages, or packets' payloads)
    /// is copied into one buffer.
    pub fn take_bytes(&mut self, data: &mut MessageBuf) -> Bytes {
        let bytes = data.take_bytes();
        self.release(std::mem::take(data));
        bytes
    }

    /// The network reports that `dest` has no socket (ICMP port unreachable, or
    /// ECONNREFUSED on a UDP socket): fail every client RPC to it.
    pub fn handle_unreachable(&mut self, dest: SocketAddr) {
        self.fail_client_rpcs_to(dest.ip(), Some(dest.port()), RpcError::NoSuchSocket);
    }

    /// The local network stack refused to send to `ip` (on `port`, or on any port when
    /// the runtime cannot tell, as in raw-IP mode) with an error that retrying will not
    /// cure (see [`RpcError::Unreachable`]): fail every client RPC to it with `why`.
    /// Returns how many failed.
    pub fn fail_client_rpcs_to(&mut self, ip: IpAddr, port: Option<u16>, why: RpcError) -> usize {
        let handles: Vec<usize> = self
            .rpcs
            .iter()
            .filter(|(_, r)| {
                r.is_client()
                    && r.peer_addr.ip() == ip
                    && port.is_none_or(|p| p == r.peer_addr.port())
            })
            .map(|(h, _)| h)
            .collect();
        for &h in &handles {
            self.fail(h, why);
        }
        handles.len()
    }

    /// What [`send_request`](Self::send_request) or [`send_message`](Self::send_message)
    /// would say, before taking anything on, to `len` bytes for `dest` from `port`: `Ok`
    /// if it would start the message. A runtime whose caller waits for room when the
    /// answer is [`SendError::WouldBlock`] asks first and keeps the payload (the engine
    /// drops the payload of a message it refuses).
    pub fn check_new_message(
        &self,
        port: u16,
        dest: SocketAddr,
        len: usize,
    ) -> Result<(), SendError> {
        if !self.sockets.contains_key(&port) {
            return Err(SendError::NoSuchSocket);
        }
        if dest.port() == 0 {
            return Err(SendError::InvalidPort);
        }
        Ok(self.admit(len, false)?)
    }

    /// May a new outgoing message of `len` bytes (a `response`, or a request) be taken
    /// on? Requests and responses have a budget each: requests wait for their responses
    /// while they hold theirs, so a reply that had to wait for this host's requests to
    /// finish could wait for ever (two hosts calling each other, each full of requests,
    /// neither able to answer).
    ///
    /// A message longer than the whole budget could never be taken on: it is too long
    /// (rather than "would block" for ever), so the longest message is the smaller of
    /// `max_message_length` and `max_outgoing_held`.
    fn admit(&self, len: usize, response: bool) -> Result<(), Refused> {
        let cap = self.config.max_outgoing_held;
        let max = (self.config.max_message_length as u64).min(cap) as u32;
        if len == 0 {
            Err(Refused::Empty)
        } else if len > max as usize {
            Err(Refused::TooLong { len, max })
        } else if self.outgoing_held[response as usize] + len as u64 > self.config.max_outgoing_held
        {
            Err(Refused::WouldBlock)
        } else {
            Ok(())
        }
    }
}
