//! From the engine to the application: each outcome the engine delivers (a request, a
//! response, a failed RPC) goes to exactly one caller. A caller waiting for it gets it in
//! its slot (a driving caller that waits for a batch gets up to its batch), else it waits
//! in a queue; callers made ready are woken once the lock is released, each once.

use super::drive::{Blocked, Driver};
use super::{Inner, State};
use crate::error::RecvError;
use crate::message::{Message, MessageKind};
use homa_core::{Event, MessageBuf, RpcError, RpcId};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::Thread;

/// How to wake a caller waiting for a message.
#[derive(Clone)]
pub(crate) enum Wake {
    Thread(Thread),
    #[cfg(feature = "tokio")]
    Waker(std::task::Waker),
}

impl Wake {
    /// Whether both wake the same thread or task.
    pub(super) fn same_as(&self, other: &Wake) -> bool {
        match (self, other) {
            (Wake::Thread(a), Wake::Thread(b)) => a.id() == b.id(),
            #[cfg(feature = "tokio")]
            (Wake::Waker(a), Wake::Waker(b)) => a.will_wake(b),
            #[cfg(feature = "tokio")]
            _ => false,
        }
    }

    pub(super) fn wake(self) {
        match self {
            Wake::Thread(t) => t.unpark(),
            #[cfg(feature = "tokio")]
            Wake::Waker(w) => w.wake(),
        }
    }
}

/// What a caller waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// Any request, response or failure not reserved for an id.
    Any,
    /// Requests and one-way messages only (a server loop that must not stop for this
    /// socket's own RPCs).
    Request,
    /// The outcome of one client RPC.
    Id(RpcId),
}

impl Want {
    /// Whether a waiter for `self` in the shared queue takes `r`.
    pub(super) fn takes(self, r: &Ready) -> bool {
        match self {
            Want::Any => true,
            Want::Request => r.is_request(),
            Want::Id(id) => r.id() == id,
        }
    }
}

/// An outcome delivered by the engine, not yet handed to the application.
#[derive(Debug)]
pub(crate) enum Ready {
    Msg {
        kind: MessageKind,
        id: RpcId,
        peer: SocketAddr,
        cookie: u64,
        private: bool,
        data: MessageBuf,
    },
    Failed {
        id: RpcId,
        cookie: u64,
        peer: SocketAddr,
        private: bool,
        error: RpcError,
    },
}

impl Ready {
    pub(super) fn id(&self) -> RpcId {
        match self {
            Ready::Msg { id, .. } | Ready::Failed { id, .. } => *id,
        }
    }
    pub(super) fn private(&self) -> bool {
        match self {
            Ready::Msg { private, .. } | Ready::Failed { private, .. } => *private,
        }
    }
    /// A request or a one-way message: work from a peer, for `recv_request`.
    pub(super) fn is_request(&self) -> bool {
        matches!(
            self,
            Ready::Msg {
                kind: MessageKind::Request | MessageKind::OneWay,
                ..
            }
        )
    }
    /// The application's view: a message or the RPC's error.
    pub(crate) fn into_result(self, inner: &Arc<Inner>) -> Result<Message, RecvError> {
        match self {
            Ready::Msg {
                kind,
                id,
                peer,
                cookie,
                data,
                ..
            } => Ok(Message::new(inner.clone(), kind, id, peer, cookie, data)),
            Ready::Failed {
                error: RpcError::Shutdown,
                ..
            } => Err(RecvError::Shutdown),
            Ready::Failed {
                id,
                cookie,
                peer,
                error,
                ..
            } => Err(RecvError::Rpc {
                id,
                cookie,
                peer,
                error,
            }),
        }
    }
}

/// What a batch receive took: its first outcome (it waited for that one) and those it
/// took with it, oldest first.
pub(crate) struct Taken {
    pub(crate) first: Ready,
    pub(crate) rest: Vec<Ready>,
}

impl Taken {
    /// How many outcomes.
    pub(crate) fn len(&self) -> usize {
        1 + self.rest.len()
    }

    /// The application's view of each, in order (see [`Ready::into_result`]).
    pub(crate) fn into_results(
        self,
        inner: &Arc<Inner>,
    ) -> impl Iterator<Item = Result<Message, RecvError>> + '_ {
        std::iter::once(self.first)
            .chain(self.rest)
            .map(move |r| r.into_result(inner))
    }
}

/// Where a client RPC's outcome stands, for `recv_id`.
pub(super) enum IdSlot {
    /// Not delivered yet, and no one waits for it by id.
    Outstanding,
    /// Not delivered yet; waiter `key` waits for it.
    Waited(usize),
    /// Delivered, for `recv_id` only (a private RPC), not taken yet.
    Ready(Ready),
}

impl IdSlot {
    pub(super) fn into_ready(self) -> Option<Ready> {
        match self {
            IdSlot::Ready(r) => Some(r),
            _ => None,
        }
    }
}

pub(super) struct Waiter {
    pub(super) want: Want,
    pub(super) wake: Wake,
    /// The outcome handed to it.
    pub(super) slot: Option<Ready>,
    /// A batch waiter that drives takes up to `max` outcomes: those after the first.
    pub(super) more: Vec<Ready>,
    pub(super) max: usize,
    /// When it was woken to take an outcome or the driver role (blocking flavour): how
    /// long wake-ups take, for [`State::lazy_handoff`].
    pub(super) woken_at: Option<homa_core::Time>,
}

impl Waiter {
    /// Whether it takes `r` now: it wants it, and has room (nothing yet, or a batch
    /// that is not full).
    pub(super) fn takes(&self, r: &Ready) -> bool {
        let held = usize::from(self.slot.is_some()) + self.more.len();
        held < self.max && self.want.takes(r)
    }
}

impl State {
    /// Take an outcome already waiting for `want`, if any. For an id, fails if the id is
    /// not an outstanding RPC of this socket.
    pub(crate) fn take_ready(&mut self, want: Want) -> Result<Option<Ready>, RecvError> {
        let taken = self.take_ready_now(want);
        if self.drain.is_some() && matches!(taken, Ok(Some(_))) {
            self.after_take_while_draining();
        }
        taken
    }

    fn take_ready_now(&mut self, want: Want) -> Result<Option<Ready>, RecvError> {
        match want {
            Want::Any => Ok(self.ready.pop_front()),
            Want::Request => {
                let i = self.ready.iter().position(Ready::is_request);
                Ok(i.and_then(|i| self.ready.remove(i)))
            }
            Want::Id(id) => match self.ids.get(&id) {
                Some(IdSlot::Outstanding) => Ok(None),
                Some(IdSlot::Waited(_)) => Err(RecvError::AlreadyWaiting(id)),
                Some(IdSlot::Ready(_)) => Ok(self.ids.remove(&id).and_then(IdSlot::into_ready)),
                // Routed to the queue `recv` takes from (a non-private RPC), or unknown.
                None => match self.ready.iter().position(|r| r.id() == id) {
                    Some(i) => Ok(self.ready.remove(i)),
                    None => Err(RecvError::UnknownRpc(id)),
                },
            },
        }
    }

    /// Take up to `max` outcomes already waiting for `want` (not an id), oldest first,
    /// appending them to `out`. Returns how many.
    pub(crate) fn take_ready_into(
        &mut self,
        want: Want,
        out: &mut Vec<Ready>,
        max: usize,
    ) -> usize {
        let start = out.len();
        while out.len() - start < max {
            match self.take_ready(want) {
                Ok(Some(r)) => out.push(r),
                _ => break,
            }
        }
        out.len() - start
    }

    /// Wait for `want`; `max` outcomes at most (more than one only for a caller that
    /// drives: see [`route_any`](Self::route_any)).
    pub(crate) fn add_waiter(&mut self, want: Want, wake: Wake, max: usize) -> usize {
        let more = if max > 1 {
            std::mem::take(&mut self.spare_more)
        } else {
            Vec::new()
        };
        let w = Waiter {
            want,
            wake,
            slot: None,
            more,
            max: max.max(1),
            woken_at: None,
        };
        let key = match self.free_waiters.pop() {
            Some(k) => {
                self.waiters[k] = Some(w);
                k
            }
            None => {
                self.waiters.push(Some(w));
                self.waiters.len() - 1
            }
        };
        match want {
            Want::Any | Want::Request => self.any_waiters.push_back(key),
            Want::Id(id) => {
                self.ids.insert(id, IdSlot::Waited(key));
            }
        }
        key
    }

    /// When waiter `key` was woken for an outcome or the driver role, if it was (and
    /// not asked before).
    pub(crate) fn take_woken_at(&mut self, key: usize) -> Option<homa_core::Time> {
        self.waiters[key].as_mut().and_then(|w| w.woken_at.take())
    }

    /// The outcome handed to waiter `key`, if any.
    pub(crate) fn take_slot(&mut self, key: usize) -> Option<Ready> {
        self.waiters[key].as_mut().and_then(|w| w.slot.take())
    }

    /// The outcomes after the first handed to batch waiter `key`, oldest first.
    pub(crate) fn take_more(&mut self, key: usize, out: &mut Vec<Ready>) {
        if let Some(w) = self.waiters[key].as_mut() {
            out.append(&mut w.more);
        }
    }

    pub(crate) fn has_slot(&self, key: usize) -> bool {
        self.waiters[key].as_ref().is_some_and(|w| w.slot.is_some())
    }

    /// Update how to wake waiter `key` (a task may move between wakers).
    #[cfg(feature = "tokio")]
    pub(crate) fn set_wake(&mut self, key: usize, wake: Wake) {
        if let Some(w) = self.waiters[key].as_mut() {
            w.wake = wake;
        }
    }

    /// Forget waiter `key`. An outcome already handed to it goes back to be routed again,
    /// so nothing is lost when a waiting future is dropped.
    pub(crate) fn remove_waiter(&mut self, key: usize) {
        let Some(mut w) = self.waiters[key].take() else {
            return;
        };
        self.free_waiters.push(key);
        match w.want {
            Want::Any | Want::Request => {
                if let Some(i) = self.any_waiters.iter().position(|&k| k == key) {
                    self.any_waiters.remove(i);
                }
            }
            Want::Id(id) => {
                if let Some(slot) = self.ids.get_mut(&id) {
                    if matches!(slot, IdSlot::Waited(k) if *k == key) {
                        // Not routed yet: still outstanding.
                        *slot = IdSlot::Outstanding;
                    }
                }
            }
        }
        // Back at the head of the queue, in order: they were the oldest.
        let mut more = std::mem::take(&mut w.more);
        for r in w.slot.take().into_iter().chain(more.drain(..)).rev() {
            if !matches!(w.want, Want::Id(_)) || !r.private() {
                match self.take_waiter_for(&r) {
                    Some(k) => self.give(k, r),
                    None => self.ready.push_front(r),
                }
            } else {
                self.ids.insert(r.id(), IdSlot::Ready(r));
            }
        }
        if more.capacity() > self.spare_more.capacity() {
            self.spare_more = more;
        }
        if self.driver == Driver::Offered(key) {
            self.release_driver(None);
        }
    }

    pub(crate) fn waiter_count(&self) -> usize {
        self.waiters.len() - self.free_waiters.len()
    }

    /// Wake every waiter (shutdown).
    pub(crate) fn wake_all(&mut self) {
        for w in self.waiters.iter().flatten() {
            self.wakes.push(w.wake.clone());
        }
    }

    pub(super) fn give(&mut self, key: usize, r: Ready) {
        let driver_key = match self.driver {
            Driver::App(k) => Some(k),
            _ => None,
        };
        if let Some(w) = self.waiters[key].as_mut() {
            if w.slot.is_some() {
                // A batch waiter that drives (see `route_any`): awake already.
                w.more.push(r);
                return;
            }
            w.slot = Some(r);
            if driver_key != Some(key) {
                if matches!(w.wake, Wake::Thread(_)) {
                    w.woken_at = Some(super::clock());
                }
                self.wakes.push(w.wake.clone());
            } else if self.blocked == Blocked::App {
                // Delivered by another thread (a timer, an abort) to the driver itself,
                // which is blocked on the socket: wake it there.
                self.kick_pending = true;
            }
        }
    }

    /// Hand every engine event to a waiter or a queue: each goes to exactly one caller.
    #[inline]
    pub(crate) fn route(&mut self) {
        // Most calls find nothing: skip the large frame the routing itself needs.
        if self.ep.has_events() {
            self.route_events();
        }
    }

    pub(super) fn route_events(&mut self) {
        while let Some(ev) = self.ep.poll_event() {
            let r = match ev {
                // Requests and one-way messages are for `recv` (and `recv_request`) only.
                Event::Request { id, peer, data, .. } => {
                    self.route_from_peer(MessageKind::Request, id, peer, data);
                    continue;
                }
                Event::Message { id, peer, data, .. } => {
                    self.route_from_peer(MessageKind::OneWay, id, peer, data);
                    continue;
                }
                Event::Response {
                    id,
                    cookie,
                    peer,
                    private,
                    data,
                    ..
                } => Ready::Msg {
                    kind: MessageKind::Response,
                    id,
                    peer,
                    cookie,
                    private,
                    data,
                },
                Event::Delivered {
                    id,
                    cookie,
                    peer,
                    private,
                    ..
                } => Ready::Msg {
                    kind: MessageKind::Delivered,
                    id,
                    peer,
                    cookie,
                    private,
                    data: MessageBuf::default(),
                },
                Event::Failed {
                    id,
                    cookie,
                    peer,
                    private,
                    error,
                    ..
                } => {
                    tracing::debug!(%id, %peer, %error, "RPC failed");
                    if error == RpcError::Timeout {
                        self.peer_timed_out = true;
                    }
                    Ready::Failed {
                        id,
                        cookie,
                        peer,
                        private,
                        error,
                    }
                }
            };
            // Every outcome here ends a request or one-way message of ours, whose bytes
            // count against `max_outgoing_held` no more.
            self.room_given_back();
            let id = r.id();
            match self.ids.remove(&id) {
                Some(IdSlot::Waited(key)) => self.give(key, r),
                _ if r.private() => {
                    self.ids.insert(id, IdSlot::Ready(r));
                }
                _ => self.route_any(r),
            }
        }
    }

    /// A request or one-way message from `peer`: to whoever waits in `recv` or
    /// `recv_request`.
    fn route_from_peer(
        &mut self,
        kind: MessageKind,
        id: RpcId,
        peer: SocketAddr,
        data: MessageBuf,
    ) {
        let r = Ready::Msg {
            kind,
            id,
            peer,
            cookie: 0,
            private: false,
            data,
        };
        self.route_any(r);
    }

    /// Hand `r` to the driver if it waits in `recv` and hand-offs are lazy (see
    /// [`lazy_handoff`](Self::lazy_handoff)), else to the longest-waiting `recv`, or
    /// queue it.
    ///
    /// A driver waiting for a batch takes up to its batch this way, so that what one
    /// receive brought wakes no one else.
    pub(super) fn route_any(&mut self, r: Ready) {
        if let Driver::App(k) = self.driver {
            if self.lazy_handoff() && self.waiter_takes(k, &r) {
                if let Some(i) = self.any_waiters.iter().position(|&w| w == k) {
                    self.any_waiters.remove(i);
                }
                self.give(k, r);
                return;
            }
        }
        match self.take_waiter_for(&r) {
            Some(key) => self.give(key, r),
            None => self.ready.push_back(r),
        }
    }

    /// Whether waiter `key` takes `r` now.
    pub(super) fn waiter_takes(&self, key: usize, r: &Ready) -> bool {
        self.waiters
            .get(key)
            .and_then(Option::as_ref)
            .is_some_and(|w| w.takes(r))
    }

    /// The longest-waiting `recv` (or `recv_request`, for a request) that takes `r`,
    /// out of the queue.
    pub(super) fn take_waiter_for(&mut self, r: &Ready) -> Option<usize> {
        let i = (0..self.any_waiters.len()).find(|&i| self.waiter_takes(self.any_waiters[i], r))?;
        self.any_waiters.remove(i)
    }

    /// Whether a caller waits for client RPC `id` by id.
    pub(crate) fn waited_for(&self, id: RpcId) -> bool {
        matches!(self.ids.get(&id), Some(IdSlot::Waited(_)))
    }

    /// Forget client RPC `id` (its `call` was dropped or timed out), and any outcome kept
    /// for it.
    pub(crate) fn forget(&mut self, id: RpcId) {
        let kept = self.ids.remove(&id).and_then(IdSlot::into_ready);
        if let Some(Ready::Msg { data, .. }) = kept {
            self.ep.release(data);
        }
    }

    /// Shutdown: outcomes still queued can no longer be taken (every receive fails with
    /// `Shutdown` from now on), so give their messages' buffers back at once, rather than
    /// holding the memory, and showing it in `incoming_held` and `queued`, for as long as
    /// a clone of the socket lives. (An outcome already in a waiter's slot is still
    /// taken by that waiter.)
    pub(crate) fn discard_queued(&mut self) {
        let kept: Vec<RpcId> = self
            .ids
            .iter()
            .filter(|(_, s)| matches!(s, IdSlot::Ready(_)))
            .map(|(&id, _)| id)
            .collect();
        let from_ids = kept
            .into_iter()
            .filter_map(|id| self.ids.remove(&id)?.into_ready());
        let outcomes: Vec<Ready> = from_ids.chain(self.ready.drain(..)).collect();
        for r in outcomes {
            if let Ready::Msg { data, .. } = r {
                self.ep.release(data);
            }
        }
    }

    pub(crate) fn queued(&self) -> usize {
        let kept = self.ids.values();
        self.ready.len() + kept.filter(|s| matches!(s, IdSlot::Ready(_))).count()
    }

    pub(crate) fn take_wakes(&mut self) -> Vec<Wake> {
        std::mem::take(&mut self.wakes)
    }
}
