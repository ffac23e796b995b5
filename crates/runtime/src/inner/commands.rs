//! From the application to the engine: requests, replies, aborts and the messages handed
//! back, each applied to the engine under the lock. What they queue is sent at once
//! (blocking flavour); on the tokio flavour by the calling task when the command comes
//! alone, else by the driver task after the ready tasks ran; or when a
//! [`Batch`](crate::Batch) is done.

use super::deliver::IdSlot;
use super::{clock, Flavor, Guard, Inner, Io, State};
use crate::error::{AbortError, ReplyError, SendError};
use crate::info::{RpcInfo, RpcState, SocketInfo};
use crate::message::{self, Message};
use crate::payload::Payload;
use crate::sys;
use bytes::Bytes;
use homa_core::{MessageBuf, RpcId, Time};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// When the packets of an application command go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Before the command returns.
    Now,
    /// With the next flush (the end of a batch, see [`Inner::push`]).
    Later,
}

/// The time a command gives the engine: the clock, unless the command's packets wait for
/// a later flush (which reads the clock itself: a batch's end, or the tokio driver) and
/// the engine's ticks are running, when the engine does not use it (see
/// [`Endpoint::ticking`](homa_core::Endpoint::ticking)) and the last time read serves.
/// A batch of 64 replies or requests then costs no clock read each (two per 100-byte
/// RPC were 3.5% of its CPU in a batched run on loopback).
fn command_time(st: &State, push: Push, flavor: Flavor) -> Time {
    let flushes_now = push == Push::Now && matches!(flavor, Flavor::Blocking);
    if !flushes_now && st.ep.ticking() {
        st.last_now
    } else {
        clock()
    }
}

/// What starting a message does when the outgoing buffer budget has no room for it.
#[derive(Debug, PartialEq, Eq)]
enum Room<'k> {
    /// Fail with [`SendError::WouldBlock`] (`send_request`, `send_message`).
    Fail,
    /// Fail the same way, but register the caller among the waiters for room (`call`
    /// and `deliver`, both flavours; see `State::room`). Holds the caller's place from
    /// its last try, which it keeps, and is set to its place when it must wait.
    Wait(&'k mut Option<u64>),
}

impl State {
    /// Requests or one-way messages of ours ended: their bytes are room for the callers
    /// waiting for it.
    pub(crate) fn room_given_back(&mut self) {
        self.room.given_back();
    }
}

thread_local! {
    /// The socket (the address of its `Inner`) this thread fills a batch for, and how
    /// many batches deep (see [`Inner::cork`]).
    pub(super) static FILLING: std::cell::Cell<(usize, u32)> = const { std::cell::Cell::new((0, 0)) };
}

/// Tokio flavour: a command within this long of one that sent its own packets leaves
/// its packets to the driver task, to go out with the others that come meanwhile (see
/// [`Inner::after_command`]). 64 tasks making 100-byte calls over loopback (`homa perf
/// tput --size 100 --homa-api tokio`, 300-600k RPCs a second) call microseconds apart;
/// an open-loop client at a few thousand RPCs a second, hundreds.
#[cfg(feature = "tokio")]
const INLINE_SEND_GAP_NANOS: u64 = 50_000;

impl Inner {
    /// Start a client RPC (both flavours).
    pub(crate) fn send_request(
        &self,
        dest: SocketAddr,
        data: Payload,
        cookie: u64,
        private: bool,
    ) -> Result<RpcId, SendError> {
        self.start_request(dest, data, cookie, private, Push::Now)
            .map(|(id, _)| id)
    }

    /// Start a private request (or one-way message) as `call` (or `deliver`) does; where
    /// the outgoing buffer budget (`max_outgoing_held`) has no room for it, register the
    /// caller among the waiters for room in the same step (see [`State::room`]), set
    /// `key` to its place and say [`SendError::WouldBlock`]. A caller that waited before
    /// passes its place back in `key`, and leaves the waiters unless it must wait again.
    /// Keeps the lock for a caller that waits for the outcome at once.
    ///
    /// `data` is taken only when the message starts: a caller that must wait keeps it for
    /// its next try (a clone for each try cost every `call` an allocation).
    pub(crate) fn start_or_wait(
        &self,
        dest: SocketAddr,
        data: &mut Option<Payload>,
        one_way: bool,
        key: &mut Option<u64>,
    ) -> Result<(RpcId, Guard<'_>), SendError> {
        let room = Room::Wait(key);
        self.start(dest, data, 0, true, Push::Now, one_way, room)
    }

    /// [`send_request`](Self::send_request), keeping the lock for a caller that waits for
    /// the outcome at once (one lock round trip fewer per `call`).
    pub(crate) fn start_request(
        &self,
        dest: SocketAddr,
        data: Payload,
        cookie: u64,
        private: bool,
        push: Push,
    ) -> Result<(RpcId, Guard<'_>), SendError> {
        self.start(
            dest,
            &mut Some(data),
            cookie,
            private,
            push,
            false,
            Room::Fail,
        )
    }

    /// Send a one-way message (both flavours): see `Socket::send_message`. Keeps the lock
    /// for a caller that waits for the delivery at once.
    pub(crate) fn start_message(
        &self,
        dest: SocketAddr,
        data: Payload,
        cookie: u64,
        private: bool,
        push: Push,
    ) -> Result<(RpcId, Guard<'_>), SendError> {
        self.start(
            dest,
            &mut Some(data),
            cookie,
            private,
            push,
            true,
            Room::Fail,
        )
    }

    /// A request, or a one-way message (`one_way`), whose outcome comes back by id.
    /// Takes `data` (always `Some`) unless the caller is to wait for room.
    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        dest: SocketAddr,
        data: &mut Option<Payload>,
        cookie: u64,
        private: bool,
        push: Push,
        one_way: bool,
        room: Room,
    ) -> Result<(RpcId, Guard<'_>), SendError> {
        if dest.is_ipv4() != self.local.is_ipv4() {
            return Err(SendError::AddressFamily {
                local: self.local,
                dest,
            });
        }
        if !crate::error::is_unicast(dest.ip()) {
            return Err(SendError::NotUnicast { dest });
        }
        if let SocketAddr::V6(d) = dest {
            if let Some(ipv4) = d.ip().to_ipv4_mapped() {
                return Err(SendError::Ipv4Mapped { dest, ipv4 });
            }
        }
        let len = data.as_ref().map_or(0, Payload::len);
        let mut st = self.lock();
        let now = command_time(&st, push, self.flavor);
        let port = self.port;
        let sent = if st.shutdown {
            Err(homa_core::SendError::Shutdown)
        } else if matches!(room, Room::Wait(_))
            && len as u64 > st.ep.request_room()
            && st.ep.check_new_message(port, dest, len) == Err(homa_core::SendError::WouldBlock)
        {
            // No room: the caller waits, keeping its payload.
            Err(homa_core::SendError::WouldBlock)
        } else if let Some(data) = data.take().map(Payload::into_bytes) {
            if one_way {
                st.ep.send_message(now, port, dest, data, cookie, private)
            } else {
                st.ep.send_request(now, port, dest, data, cookie, private)
            }
        } else {
            // (Callers always pass a payload.)
            Err(homa_core::SendError::EmptyMessage)
        };
        let id = match (sent, room) {
            (Err(homa_core::SendError::WouldBlock), Room::Wait(key)) if data.is_some() => {
                *key = Some(st.room.wait(*key, len as u64));
                return Err(SendError::WouldBlock);
            }
            (sent, room) => {
                // A caller that waited for room no longer does (started, or failed for
                // another reason).
                if let Room::Wait(&mut Some(key)) = room {
                    st.room.leave(key, sent.is_ok());
                }
                sent.map_err(SendError::from)?
            }
        };
        tracing::debug!(%id, %dest, len, one_way, "send");
        st.ids.insert(id, IdSlot::Outstanding);
        if push == Push::Now {
            self.after_command(&mut st, Some(now));
        }
        Ok((id, st))
    }

    /// Answer a request (both flavours).
    pub(crate) fn reply(
        self: &Arc<Self>,
        request: &Message,
        data: Payload,
        push: Push,
    ) -> Result<(), ReplyError> {
        self.reply_or_wait(request, &mut Some(data), push, None)
    }

    /// Answer a request; with `wait`, as `reply_when_room` does: where the budget for
    /// responses (`max_outgoing_held`) has no room for it, register the caller among the
    /// waiters for response room (see [`State::reply_room`]), set `wait` to its place and
    /// say [`ReplyError::WouldBlock`], leaving `data` with the caller. A caller that
    /// waited before passes its place back, and leaves the waiters unless it must wait
    /// again. `data` is taken only when the response is handed to the engine.
    pub(crate) fn reply_or_wait(
        self: &Arc<Self>,
        request: &Message,
        data: &mut Option<Payload>,
        push: Push,
        wait: Option<&mut Option<u64>>,
    ) -> Result<(), ReplyError> {
        let id = request.id();
        if !request.belongs_to(self) {
            return Err(ReplyError::WrongSocket(id));
        }
        if !request.is_request() {
            return Err(ReplyError::NotARequest(id));
        }
        let len = data.as_ref().map_or(0, Payload::len);
        let mut st = self.lock();
        let now = command_time(&st, push, self.flavor);
        let waited = wait.as_ref().and_then(|k| **k);
        let sent = if st.shutdown {
            Err(ReplyError::Shutdown)
        } else if let Some(key) = wait.filter(|_| {
            // (Asked only when the room is short: the engine checks the rest anyway.)
            len as u64 > st.ep.response_room()
                && st.ep.check_reply(self.port, request.peer(), id, len)
                    == Err(homa_core::ReplyError::WouldBlock)
        }) {
            // No room: the caller waits, keeping its payload. The room free now is what
            // it waits to see grow.
            *key = Some(st.reply_room.wait(waited, len as u64));
            st.reply_room_seen = st.ep.response_room();
            return Err(ReplyError::WouldBlock);
        } else if let Some(data) = data.take() {
            st.ep
                .reply(now, self.port, request.peer(), id, data.into_bytes())
                .map_err(|e| crate::error::reply_error(e, id))
        } else {
            // (Callers always pass a payload.)
            Err(ReplyError::EmptyMessage)
        };
        if let Some(key) = waited {
            // It no longer waits (it replied, or failed for another reason).
            st.reply_room.leave(key, sent.is_ok());
        }
        sent?;
        tracing::debug!(%id, peer = %request.peer(), len, "reply");
        request.mark_answered();
        if push == Push::Now {
            self.after_command(&mut st, Some(now));
        }
        Ok(())
    }

    /// Give up client RPC `id` quietly (its caller is gone, or its deadline passed): no
    /// outcome is delivered for it, and one already kept is dropped. Except when another
    /// caller has started waiting for it by id meanwhile (`recv_id` from another thread,
    /// between the give-up and this): that caller gets the RPC's failure, `Aborted`,
    /// rather than a wait for ever.
    pub(crate) fn abandon(&self, st: &mut Guard<'_>, id: RpcId) {
        // An outcome produced but not yet routed lands in its slot first, to be dropped
        // with it, not routed later to a slot no one owns.
        st.route();
        let someone_waits = st.waited_for(id);
        if st.ep.abort(self.port, id, someone_waits) {
            st.room_given_back();
        }
        if someone_waits {
            st.route();
        } else {
            st.forget(id);
        }
        // The room it held may let the engine grant other messages now: send that at
        // once, as `abort` does, rather than at the driver's next turn.
        self.after_command(st, None);
    }

    pub(crate) fn abort(&self, id: RpcId) -> Result<(), AbortError> {
        let mut st = self.lock();
        if st.shutdown {
            return Err(AbortError::Shutdown);
        }
        if !st.ep.abort(self.port, id, true) {
            return Err(AbortError::UnknownRpc(id));
        }
        st.room_given_back();
        self.after_command(&mut st, None);
        Ok(())
    }

    pub(crate) fn abort_all(&self) -> Result<usize, AbortError> {
        let mut st = self.lock();
        if st.shutdown {
            return Err(AbortError::Shutdown);
        }
        let n = st.ep.abort_all(self.port, true);
        if n > 0 {
            st.room_given_back();
        }
        self.after_command(&mut st, None);
        Ok(n)
    }

    /// Give a message's buffer back to the engine (a `Message` was dropped). For a
    /// request (`discard`: its client and id), also free its server RPC if it was never
    /// answered: the engine counts it as executed and the client times out, instead of
    /// being told BUSY for as long as the socket lives. After a reply the RPC is no
    /// longer in service and the engine ignores the discard.
    pub(crate) fn release(&self, data: MessageBuf, discard: Option<(SocketAddr, RpcId)>) {
        let mut st = self.lock();
        st.ep.release(data);
        let mut discarded = false;
        if let Some((peer, id)) = discard {
            discarded = st.ep.discard(self.port, peer, id);
            if discarded {
                tracing::debug!(%id, %peer, "request dropped without a reply");
            }
        }
        self.after_release(&mut st, discarded);
    }

    /// Take a message's bytes for the application to keep, giving its space back as a
    /// release does (see `Endpoint::take_bytes`); `joined`: the bytes already joined
    /// into one piece (`Message::as_slice`), handed over instead of another copy.
    pub(crate) fn take_bytes(&self, data: &mut MessageBuf, joined: Option<Box<[u8]>>) -> Bytes {
        let mut st = self.lock();
        let bytes = match joined {
            Some(j) => {
                st.ep.release(std::mem::take(data));
                Bytes::from(j)
            }
            None => st.ep.take_bytes(data),
        };
        self.after_release(&mut st, false);
        bytes
    }

    /// What a release may have set going: grants or a message stalled for want of room
    /// (`discarded`: a request's RPC was dropped too).
    fn after_release(&self, st: &mut Guard<'_>, discarded: bool) {
        // Usually that is all: the pages only matter to a message stalled for want of
        // them, or to grants the pool held back, and either leaves the engine with
        // packets or events. Nothing else a release does moves a deadline earlier.
        if !discarded && !st.tx_has_pending && !st.ep.may_transmit() && !st.ep.has_events() {
            return;
        }
        if self.corked_here() {
            // The batch this thread fills sends (and kicks) when it is done.
            st.route();
        } else {
            self.after_command(st, None);
        }
    }

    /// Send what an application command queued and route what it completed: at once on
    /// the blocking flavour. On the tokio flavour a command that comes alone (none sent
    /// its own packets within [`INLINE_SEND_GAP_NANOS`] of the clock) sends its own packets: one
    /// non-blocking call and no task to wake, so a client making calls one at a time
    /// costs one wake-up per RPC, its own. Commands that come close together leave their
    /// packets to the driver task, which runs after the tasks that are ready now, so that
    /// what they send leaves together (one system call for many requests or replies
    /// instead of one each).
    ///
    /// `now`: the time, if the caller read it (else it is read here if needed).
    pub(super) fn after_command(&self, st: &mut Guard<'_>, now: Option<Time>) {
        match self.flavor {
            Flavor::Blocking => {
                self.flush(st, now.unwrap_or_else(clock));
                st.route();
                self.kick(st);
            }
            #[cfg(feature = "tokio")]
            Flavor::Tokio => {
                st.route();
                if !(st.ep.may_transmit() || st.tx_has_pending) {
                    self.kick(st);
                    return;
                }
                if st.driver_woken {
                    return; // (It sends these too.)
                }
                // The command's time may be the last one read (see `command_time`), which
                // can be a tick old: one that says "alone" is right (the clock is later
                // still), one that says "not alone" is checked against the clock.
                let mut now = now.unwrap_or_else(clock);
                let mut alone = now.nanos_since(st.sent_inline_at) >= INLINE_SEND_GAP_NANOS;
                if !alone {
                    now = now.max(clock());
                    alone = now.nanos_since(st.sent_inline_at) >= INLINE_SEND_GAP_NANOS;
                }
                if !alone {
                    self.wake_driver(st);
                } else {
                    st.sent_inline_at = now;
                    self.flush(st, now);
                    st.route();
                    self.kick(st);
                }
            }
        }
    }

    /// Have the tokio driver task run (once, however many commands ask).
    #[cfg(feature = "tokio")]
    pub(super) fn wake_driver(&self, st: &mut State) {
        if !st.driver_woken {
            st.driver_woken = true;
            self.counts.woke(1);
            self.notify.notify_one();
        }
    }

    /// This thread starts filling a batch for this socket: until [`push`](Self::push),
    /// a message it drops sends nothing (each request dropped after its reply was queued
    /// would otherwise send the replies queued so far, one system call each). Returns
    /// false if the thread already fills a batch for another socket (this one then goes
    /// uncorked: only less batched).
    pub(crate) fn cork(&self) -> bool {
        let me = self as *const Inner as usize;
        FILLING.with(|f| {
            let (sock, depth) = f.get();
            if sock == 0 || sock == me {
                f.set((me, depth + 1));
                true
            } else {
                false
            }
        })
    }

    /// Whether this thread fills a batch for this socket.
    pub(super) fn corked_here(&self) -> bool {
        FILLING.with(|f| f.get().0 == self as *const Inner as usize)
    }

    /// Send what commands queued with [`Push::Later`] (a batch's end), ending a
    /// [`cork`](Self::cork) if `corked`.
    pub(crate) fn push(&self, corked: bool) {
        if corked {
            FILLING.with(|f| {
                let (sock, depth) = f.get();
                f.set(if depth <= 1 {
                    (0, 0)
                } else {
                    (sock, depth - 1)
                });
            });
        }
        // (Called from `Batch::drop`: a poisoned socket has nothing to send.)
        let Some(mut st) = self.lock_unless_poisoned() else {
            return;
        };
        if st.shutdown {
            return;
        }
        self.after_command(&mut st, None);
    }

    pub(crate) fn info(&self) -> SocketInfo {
        let fd = match &self.io {
            Io::Udp { sock } => sock.as_raw_fd(),
            Io::Raw { fam, .. } => fam.fd(),
        };
        let (recv_buffer_bytes, send_buffer_bytes) = sys::buffer_sizes(fd);
        let kernel_drops = sys::kernel_drops(fd);
        let st = self.lock();
        let m = st.ep.metrics();
        SocketInfo {
            local_addr: self.local,
            port: self.port,
            transport: self.transport,
            shutdown: st.shutdown,
            draining: st.draining(),
            client_rpcs: m.client_rpcs,
            server_rpcs: m.server_rpcs,
            incoming_held: m.incoming_held,
            outgoing_held: m.outgoing_held,
            queued: st.queued(),
            waiters: st.waiter_count(),
            room_waiters: st.room.len() + st.reply_room.len(),
            mtu: st.ep.config().mtu,
            link_mbps: st.ep.config().link_mbps,
            gso: st.gso_on,
            wake_datagrams: self
                .kick
                .as_ref()
                .is_some_and(|k| k.works.load(Ordering::Relaxed)),
            gro: self.gro_on(),
            receive_slot_bytes: self.rx_slot_bytes(),
            recv_buffer_bytes,
            send_buffer_bytes,
            kernel_drops,
            send_buffer_full: st.send_buffer_full,
            io: self.counts.snapshot(),
            rpcs: st.rpc_infos(self.port),
        }
    }
}

impl State {
    /// Every live RPC of the socket's port, as the engine sees it, ordered by id.
    pub(crate) fn rpc_infos(&self, port: u16) -> Vec<RpcInfo> {
        let mut v: Vec<RpcInfo> = self.ep.rpcs(port).map(rpc_info).collect();
        v.sort_by_key(|i| (i.id, i.peer));
        v
    }
}

/// The engine's view of one RPC, in the runtime's terms.
pub(super) fn rpc_info(r: homa_core::RpcInfo) -> RpcInfo {
    use homa_core::RpcState as E;
    let out_length = r.out_length.unwrap_or(0);
    let state = match r.state {
        E::Client if r.out_sent < out_length => RpcState::SendingRequest,
        E::Client if r.in_received == 0 => RpcState::AwaitingResponse,
        E::Client => RpcState::ReceivingResponse,
        E::Incoming => RpcState::ReceivingRequest,
        E::InService => RpcState::InService,
        E::Outgoing => RpcState::SendingResponse,
        E::AwaitingAck => RpcState::AwaitingAck,
    };
    RpcInfo {
        id: r.id,
        peer: r.peer,
        cookie: r.cookie,
        state,
        is_client: r.state == E::Client,
        out_length,
        bytes_sent: r.out_sent.min(out_length),
        granted: r.out_granted.min(out_length),
        in_length: r.in_length,
        bytes_received: r.in_received,
        in_granted: r.in_granted,
        in_stalled: r.in_stalled,
        silent_ticks: r.silent_ticks,
    }
}

/// Messages hand their memory back through this (see [`Inner::release`]).
impl message::Owner for Inner {
    fn release(&self, data: MessageBuf, discard: Option<(SocketAddr, RpcId)>) {
        Inner::release(self, data, discard)
    }
    fn take_bytes(&self, data: &mut MessageBuf, joined: Option<Box<[u8]>>) -> Bytes {
        Inner::take_bytes(self, data, joined)
    }
}
