//! The state every flavour shares: one engine per socket, the routing of delivered
//! messages to waiting callers, and the code that moves packets between the engine and the
//! kernel. The blocking and tokio flavours differ only in who waits for the socket.

use crate::error::{AbortError, RecvError, ReplyError, SendError};
use crate::info::{RpcInfo, RpcState, SocketInfo};
use crate::message::{self, Message, MessageKind};
use crate::options::Transport;
use crate::payload::Payload;
use crate::raw::{self, RawFamily};
use crate::sys::{
    self, RxMeta, TxGroup, TxPacket, MAX_BATCH, MAX_GSO_BYTES, MAX_GSO_SEGMENTS, RX_SLOT,
};
use bytes::{Bytes, BytesMut};
use homa_core::{Endpoint, Event, MessageBuf, RpcError, RpcId, Time};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::Duration;

/// Datagrams one receive call takes at first...
const RX_BATCH_FIRST: usize = 8;
/// ...and at most, once receives have found more waiting than that.
pub(crate) const RX_BATCH_MAX: usize = sys::MAX_BATCH;
/// Fewest CPUs for which the driver busy-polls (`poll_usecs`) before sleeping.
const MIN_CORES_TO_SPIN: usize = 4;
/// Batches of at least this many bytes are sent with the socket's lock released.
const UNLOCKED_SEND_BYTES: usize = 32 << 10;
/// Room for the packets of one batch in raw mode (whole packets); UDP batches need only
/// their headers there.
const TX_ARENA: usize = 256 << 10;
/// Payloads up to this size are copied into the batch buffer behind their header
/// rather than sent from the message by a second iovec.
const INLINE_PAYLOAD: usize = 2048;
/// The group of a batch holding one packet, sent as one datagram.
const ONE_DATAGRAM: [TxGroup; 1] = [TxGroup {
    first: 0,
    count: 1,
    segment: 0,
}];
/// Most packets [`Inner::send_urgent`] sends per call.
const MAX_URGENT: usize = 16;
/// Most bytes (headers and payloads) gathered for one send call.
const TX_BATCH_BYTES: usize = 1 << 20;
/// A timer tick that falls due while received packets wait unread is put off (see
/// `Inner::after_input`) and looked at again this much later...
const TICK_RECHECK_NANOS: u64 = 200_000;
/// ...but for at most this long: under endless input the timers still run, slowed down.
const TICK_MAX_DEFER_NANOS: u64 = 10_000_000;
/// A driving thread that returns with its own message leaves the socket undriven, rather
/// than waking another waiting thread to take over, while threads come back to wait
/// within this on average (blocking flavour; see [`State::lazy_handoff`]).
const LAZY_AWAY_NANOS: u64 = 50_000;
/// A wake-up only to run a timer tick comes this many percent of a tick after the tick is
/// due (see [`Inner::next_wake`]).
const TICK_WAKE_SLACK_PERCENT: u64 = 90;
/// Longest the background thread sleeps when the engine has no deadline.
const BG_IDLE_CHECK_NANOS: u64 = 50_000_000;
/// Longest time away one sample counts for in that average.
const AWAY_CAP_NANOS: u64 = 10_000_000;

thread_local! {
    /// The socket (the address of its `Inner`) this thread fills a batch for, and how
    /// many batches deep (see [`Inner::cork`]).
    static FILLING: std::cell::Cell<(usize, u32)> = const { std::cell::Cell::new((0, 0)) };
}

/// When the packets of an application command go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Before the command returns.
    Now,
    /// With the next flush (the end of a batch, see [`Inner::push`]).
    Later,
}

/// The engine's clock: CLOCK_MONOTONIC in nanoseconds.
pub(crate) fn clock() -> Time {
    Time(sys::monotonic_nanos())
}

/// How to wake a caller waiting for a message.
pub(crate) enum Wake {
    Thread(Thread),
    #[cfg(feature = "tokio")]
    Waker(std::task::Waker),
}

impl Wake {
    fn wake(self) {
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
    /// Requests only (a server loop that must not stop for this socket's own RPCs).
    Request,
    /// The outcome of one client RPC.
    Id(RpcId),
}

impl Want {
    /// Whether a waiter for `self` in the shared queue takes `r`.
    fn takes(self, r: &Ready) -> bool {
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
    fn id(&self) -> RpcId {
        match self {
            Ready::Msg { id, .. } | Ready::Failed { id, .. } => *id,
        }
    }
    fn private(&self) -> bool {
        match self {
            Ready::Msg { private, .. } | Ready::Failed { private, .. } => *private,
        }
    }
    fn is_request(&self) -> bool {
        matches!(
            self,
            Ready::Msg {
                kind: MessageKind::Request,
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

/// Where a client RPC's outcome stands, for `recv_id`.
enum IdSlot {
    /// Not delivered yet, and no one waits for it by id.
    Outstanding,
    /// Not delivered yet; waiter `key` waits for it.
    Waited(usize),
    /// Delivered, for `recv_id` only (a private RPC), not taken yet.
    Ready(Ready),
}

impl IdSlot {
    fn into_ready(self) -> Option<Ready> {
        match self {
            IdSlot::Ready(r) => Some(r),
            _ => None,
        }
    }
}

struct Waiter {
    want: Want,
    wake: Wake,
    /// The outcome handed to it.
    slot: Option<Ready>,
    /// A batch waiter that drives takes up to `max` outcomes: those after the first.
    more: Vec<Ready>,
    max: usize,
}

impl Waiter {
    /// Whether it takes `r` now: it wants it, and has room (nothing yet, or a batch
    /// that is not full).
    fn takes(&self, r: &Ready) -> bool {
        let held = usize::from(self.slot.is_some()) + self.more.len();
        held < self.max && self.want.takes(r)
    }
}

/// Who reads the socket and runs the timers right now (the "driver").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Driver {
    None,
    /// An application thread waiting in recv/call (the waiter with this key).
    App(usize),
    /// Offered to this waiter, which has been woken to take it.
    Offered(usize),
    /// The background thread.
    Background,
}

/// Who is blocked in a wait on the UDP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocked {
    None,
    App,
    Background,
}

/// Which receive call a driver makes.
#[derive(Debug, Clone, Copy)]
enum Recv {
    /// Block for one datagram (`recvfrom`/`recvmsg`: the cheapest for one).
    One,
    /// Block for the first datagram, then take whatever else is queued (`recvmmsg`).
    Batch,
    /// Take whatever is queued, without blocking.
    Queued,
}

/// How a driver waits for packets.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WaitHow {
    /// An application thread: until a packet, or `until`. `more`: not the first step of
    /// this wait (packets of a long message may be queued). `batch`: the caller takes a
    /// batch of outcomes, so the receive takes whatever is queued with the first.
    App {
        until: Option<Time>,
        more: bool,
        batch: bool,
    },
    /// The background thread: until a packet or the engine's next deadline.
    Background,
}

/// The socket that wakes a thread blocked on the UDP socket, and where to send.
pub(crate) struct Kick {
    pub sock: std::net::UdpSocket,
    /// Our own address (a loopback one if we are bound to the unspecified address).
    pub to: SocketAddr,
    /// The kick socket's address: datagrams from it are not Homa packets.
    pub from: SocketAddr,
}

/// An outgoing packet kept because the socket buffer was full (non-blocking senders).
struct Pending {
    /// The header (or, raw IP, the whole packet), copied out of the batch buffer.
    header: Vec<u8>,
    /// Its description, with `start` 0 in `header`.
    pkt: TxPacket,
}

/// Everything behind the socket's lock.
pub(crate) struct State {
    pub(crate) ep: Endpoint,
    pub(crate) shutdown: bool,
    pub(crate) driver: Driver,
    /// The background thread should hand the driver role to an application thread.
    pub(crate) handoff_wanted: bool,
    /// The deadline a blocked driver sleeps until (`Some(None)`: no deadline); `None` if
    /// no driver is blocked.
    pub(crate) sleep_until: Option<Option<Time>>,
    /// Who is blocked waiting on the UDP socket (blocking flavour).
    pub(crate) blocked: Blocked,
    /// Send a kick datagram once the lock is released (see `Inner::send_kick`).
    pub(crate) kick_pending: bool,
    /// Since when no thread has driven the socket (blocking flavour).
    pub(crate) undriven_since: Option<Time>,
    /// How long a thread that got a message stays away before it waits again: a moving
    /// average, nanoseconds (blocking flavour).
    away_nanos: u64,
    /// The clock at the last received batch (a recent time without a clock read).
    pub(crate) last_now: Time,
    /// When the sleeping background thread wakes (blocking flavour); `None` while it is
    /// awake.
    pub(crate) bg_wake_at: Option<Time>,
    /// That wake-up was moved earlier to take over a socket left undriven.
    bg_watches_undriven: bool,
    /// Since when a due timer tick has been put off because input waited unread.
    tick_deferred_since: Option<Time>,
    /// When to look at a put-off tick again.
    tick_recheck_at: Option<Time>,
    /// Outcomes for `recv`, oldest first.
    ready: VecDeque<Ready>,
    /// Client RPCs `recv_id` may ask for: outstanding, waited for, or with an outcome
    /// only `recv_id` returns. One map, so that an RPC's life costs one lookup per step.
    ids: FxHashMap<RpcId, IdSlot>,
    waiters: Vec<Option<Waiter>>,
    free_waiters: Vec<usize>,
    any_waiters: VecDeque<usize>,
    wakes: Vec<Wake>,
    /// The outgoing buffers; `None` while a thread is sending.
    tx: Option<Box<Tx>>,
    /// A flush found the buffers taken: the sending thread must look again.
    tx_again: bool,
    /// Packets wait for socket buffer space (non-blocking senders).
    tx_has_pending: bool,
    /// The tokio driver knows that packets wait and waits for room itself: a flush that
    /// leaves packets waiting need not notify it (which, from the driver's own flush,
    /// would spin it).
    #[cfg(feature = "tokio")]
    tx_pending_seen: bool,
    /// Urgent packets (see [`Inner::send_urgent`]) that found the socket buffer full;
    /// the batch buffers' owner queues them when it gives the buffers back.
    urgent_left: Vec<Pending>,
    /// Sends that found the socket buffer full (see [`SocketInfo::send_buffer_full`]).
    send_buffer_full: u64,
    /// GSO still in use.
    gso_on: bool,
    max_packet: usize,
    /// Whether the UDP socket is connected to its one peer (see [`UdpPeer`]).
    udp_peer: UdpPeer,
    /// A request came to this socket, which takes none, and the warning was logged.
    warned_not_server: bool,
    /// The tokio driver task was notified to send what commands queued, and has not run
    /// since.
    #[cfg(feature = "tokio")]
    pub(crate) driver_woken: bool,
}

/// A client-only UDP socket that has only ever sent to one peer is connected to it: the
/// kernel then sends without a route lookup per datagram (0.4 us of a 12.7 us loopback
/// round trip). Connected, it receives only from that peer, which is all a socket that
/// takes no requests and has sent to no one else hears from. Before it sends to anyone
/// else, and before a wake-up datagram ([`Inner::send_kick`]) comes from the kick socket,
/// it is disconnected for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UdpPeer {
    /// Not eligible: raw IP, or a server socket (requests come from anyone).
    Never,
    /// Eligible, has sent nothing yet.
    Fresh,
    Connected(SocketAddr),
    /// Was connected, or about to send to a second peer: stays unconnected.
    Many,
}

impl State {
    pub(crate) fn new(ep: Endpoint, gso: bool) -> State {
        let max_packet = ep.max_packet_len();
        State {
            ep,
            shutdown: false,
            driver: Driver::None,
            handoff_wanted: false,
            sleep_until: None,
            blocked: Blocked::None,
            kick_pending: false,
            undriven_since: None,
            away_nanos: 0,
            last_now: clock(),
            bg_wake_at: None,
            bg_watches_undriven: false,
            tick_deferred_since: None,
            tick_recheck_at: None,
            ready: VecDeque::new(),
            ids: FxHashMap::default(),
            waiters: Vec::new(),
            free_waiters: Vec::new(),
            any_waiters: VecDeque::new(),
            wakes: Vec::new(),
            tx: Some(Box::new(Tx {
                arena: vec![0; TX_ARENA + max_packet],
                pkts: Vec::with_capacity(MAX_BATCH),
                groups: Vec::with_capacity(MAX_BATCH),
                pending: VecDeque::new(),
                gso,
                cur_tos: None,
            })),
            tx_again: false,
            urgent_left: Vec::new(),
            send_buffer_full: 0,
            tx_has_pending: false,
            #[cfg(feature = "tokio")]
            tx_pending_seen: false,
            gso_on: gso,
            max_packet,
            udp_peer: UdpPeer::Never,
            warned_not_server: false,
            #[cfg(feature = "tokio")]
            driver_woken: false,
        }
    }

    /// Take an outcome already waiting for `want`, if any. For an id, fails if the id is
    /// not an outstanding RPC of this socket.
    pub(crate) fn take_ready(&mut self, want: Want) -> Result<Option<Ready>, RecvError> {
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

    /// Wait for `want`; `max` outcomes at most (more than one only for a caller that
    /// drives: see [`route_any`](Self::route_any)).
    pub(crate) fn add_waiter(&mut self, want: Want, wake: Wake, max: usize) -> usize {
        let w = Waiter {
            want,
            wake,
            slot: None,
            more: Vec::new(),
            max: max.max(1),
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
        let Some(w) = self.waiters[key].take() else {
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
        for r in w.slot.into_iter().chain(w.more).rev() {
            if !matches!(w.want, Want::Id(_)) || !r.private() {
                match self.take_waiter_for(&r) {
                    Some(k) => self.give(k, r),
                    None => self.ready.push_front(r),
                }
            } else {
                self.ids.insert(r.id(), IdSlot::Ready(r));
            }
        }
        if self.driver == Driver::Offered(key) {
            self.release_driver(None);
        }
    }

    /// A thread came back to wait `nanos` after it last got a message.
    pub(crate) fn note_away(&mut self, nanos: u64) {
        self.away_nanos = (self.away_nanos * 7 + nanos.min(AWAY_CAP_NANOS)) / 8;
    }

    /// Whether the driver keeps a request for itself and, when it returns with its own
    /// message, leaves the socket undriven instead of waking another waiting thread to
    /// drive: threads come back quickly, so the next one to wait drives, and a wake-up
    /// (tens of microseconds of latency on a small, idle machine) is saved on each RPC.
    /// When threads stay away longer (slow handlers), waking another is worth it, so
    /// that requests arriving meanwhile are read at once. Either way the background
    /// thread reads a socket left undriven for a tick.
    pub(crate) fn lazy_handoff(&self) -> bool {
        self.away_nanos <= LAZY_AWAY_NANOS
    }

    /// The driver (`key`) leaves with an outcome in hand (`lazy_handoff`): no one drives
    /// until a thread waits again, or the background thread takes over.
    pub(crate) fn leave_driver(&mut self, key: usize) {
        if self.lazy_handoff() && self.has_slot(key) {
            self.driver = Driver::None;
            self.undriven_since = Some(self.last_now);
        } else {
            self.release_driver(Some(key));
        }
    }

    /// Give up the driver role: offer it to a waiter with nothing to return yet (other
    /// than `except`), or leave the socket undriven (the background thread takes it after
    /// a grace period).
    pub(crate) fn release_driver(&mut self, except: Option<usize>) {
        self.driver = Driver::None;
        self.offer_driver(except);
        self.undriven_since = (self.driver == Driver::None).then_some(self.last_now);
    }

    /// Offer the driver role to a waiter with nothing to return yet (other than `except`).
    pub(crate) fn offer_driver(&mut self, except: Option<usize>) {
        let pick = self.waiters.iter().enumerate().find_map(|(k, w)| {
            w.as_ref()
                .filter(|w| w.slot.is_none() && Some(k) != except)
                .map(|_| k)
        });
        if let Some(k) = pick {
            self.driver = Driver::Offered(k);
            if let Some(w) = self.waiters[k].as_ref() {
                self.wakes.push(clone_wake(&w.wake));
            }
        }
    }

    pub(crate) fn waiter_count(&self) -> usize {
        self.waiters.len() - self.free_waiters.len()
    }

    /// Wake every waiter (shutdown).
    pub(crate) fn wake_all(&mut self) {
        for w in self.waiters.iter().flatten() {
            self.wakes.push(clone_wake(&w.wake));
        }
    }

    fn give(&mut self, key: usize, r: Ready) {
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
                self.wakes.push(clone_wake(&w.wake));
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

    fn route_events(&mut self) {
        while let Some(ev) = self.ep.poll_event() {
            let r = match ev {
                Event::Request { id, peer, data, .. } => {
                    // Requests are for `recv` only.
                    let r = Ready::Msg {
                        kind: MessageKind::Request,
                        id,
                        peer,
                        cookie: 0,
                        private: false,
                        data,
                    };
                    self.route_any(r);
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
                Event::Failed {
                    id,
                    cookie,
                    peer,
                    private,
                    error,
                    ..
                } => {
                    tracing::debug!(%id, %peer, %error, "RPC failed");
                    Ready::Failed {
                        id,
                        cookie,
                        peer,
                        private,
                        error,
                    }
                }
            };
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

    /// Hand `r` to the driver if it waits in `recv` and hand-offs are lazy (see
    /// [`lazy_handoff`](Self::lazy_handoff)), else to the longest-waiting `recv`, or
    /// queue it.
    ///
    /// A driver waiting for a batch takes up to its batch this way, so that what one
    /// receive brought wakes no one else.
    fn route_any(&mut self, r: Ready) {
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
    fn waiter_takes(&self, key: usize, r: &Ready) -> bool {
        self.waiters
            .get(key)
            .and_then(Option::as_ref)
            .is_some_and(|w| w.takes(r))
    }

    /// The longest-waiting `recv` (or `recv_request`, for a request) that takes `r`,
    /// out of the queue.
    fn take_waiter_for(&mut self, r: &Ready) -> Option<usize> {
        let i = (0..self.any_waiters.len()).find(|&i| self.waiter_takes(self.any_waiters[i], r))?;
        self.any_waiters.remove(i)
    }

    /// Forget client RPC `id` (its `call` was dropped), and any outcome kept for it.
    #[cfg(feature = "tokio")]
    pub(crate) fn forget(&mut self, id: RpcId) {
        let kept = self.ids.remove(&id).and_then(IdSlot::into_ready);
        if let Some(Ready::Msg { data, .. }) = kept {
            self.ep.release(data);
        }
    }

    /// Every live RPC of the socket's port, as the engine sees it, ordered by id.
    pub(crate) fn rpc_infos(&self, port: u16) -> Vec<RpcInfo> {
        let mut v: Vec<RpcInfo> = self.ep.rpcs(port).map(rpc_info).collect();
        v.sort_by_key(|i| (i.id, i.peer));
        v
    }

    pub(crate) fn queued(&self) -> usize {
        let kept = self.ids.values();
        self.ready.len() + kept.filter(|s| matches!(s, IdSlot::Ready(_))).count()
    }

    pub(crate) fn take_wakes(&mut self) -> Vec<Wake> {
        std::mem::take(&mut self.wakes)
    }
}

fn clone_wake(w: &Wake) -> Wake {
    match w {
        Wake::Thread(t) => Wake::Thread(t.clone()),
        #[cfg(feature = "tokio")]
        Wake::Waker(w) => Wake::Waker(w.clone()),
    }
}

/// The engine's view of one RPC, in the runtime's terms.
fn rpc_info(r: homa_core::RpcInfo) -> RpcInfo {
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

/// The kernel side of a socket.
pub(crate) enum Io {
    Udp {
        sock: socket2::Socket,
    },
    Raw {
        fam: Arc<RawFamily>,
        /// A UDP socket bound to the same address and port: it keeps the port unique on
        /// this host (see the crate docs). Nothing is read from it.
        _reservation: socket2::Socket,
        /// The bound address, when specific: the source of every packet.
        bound_ip: Option<IpAddr>,
    },
}

/// Which flavour drives the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    Blocking,
    #[cfg(feature = "tokio")]
    Tokio,
}

/// One Homa socket: its engine, its kernel socket and how to wake its driver.
pub(crate) struct Inner {
    state: Mutex<State>,
    /// Receive buffers, used only by the current driver.
    rx: Mutex<RxBufs>,
    pub(crate) io: Io,
    pub(crate) local: SocketAddr,
    pub(crate) port: u16,
    pub(crate) transport: Transport,
    pub(crate) flavor: Flavor,
    /// Wakes a thread blocked on the UDP socket (blocking flavour, UDP mode).
    pub(crate) kick: Option<Kick>,
    /// Where the background thread sleeps while someone else drives (blocking flavour):
    /// armed at `State::bg_wake_at`, moved earlier by [`kick`](Self::kick) and later by
    /// [`after_input`](Self::after_input), neither of which wakes it.
    bg_timer: Option<sys::TimerFd>,
    /// Wakes the background thread from its `ppoll` on the socket without a kick
    /// datagram, which a connected socket would not receive (blocking flavour).
    bg_wake: Option<sys::EventFd>,
    #[cfg(feature = "tokio")]
    pub(crate) notify: tokio::sync::Notify,
    /// Busy-poll time of an application thread driving (`poll_usecs`).
    pub(crate) spin: Duration,
    pub(crate) tick: Duration,
    /// UDP GRO is on for the socket. Changed only by the driver, with `rx` locked, so a
    /// receive made under that lock knows whether an aggregate may come.
    gro_on: AtomicBool,
}

/// The driver's receive buffers: one `RX_SLOT`-byte slot per datagram of a batch. A slot
/// holding long packets is shared with the engine, which may keep their payloads (the
/// second copy, into pages, is saved); the slot is then reclaimed once the engine lets go
/// of it, or replaced.
pub(crate) struct RxBufs {
    slots: Vec<BytesMut>,
    metas: Vec<RxMeta>,
    /// The last receive filled every slot.
    last_full: bool,
    /// The last receive took more than one datagram: datagrams arrive together, so the
    /// next blocking receive takes whatever is queued in the same system call.
    last_many: bool,
    /// More datagrams are probably queued: try a non-blocking receive before waiting.
    probably_more: bool,
    /// UDP GRO is wanted (`Options::gro`, and the kernel has it) but not on yet: it is
    /// turned on once long datagrams, or many datagrams at once, arrive (see
    /// [`Inner::note_bulk`]). Cleared if that fails.
    gro_wanted: bool,
    /// Datagrams GRO could have coalesced, received while it was off: long ones, and
    /// those that came several to a receive.
    bulk_datagrams: u32,
    /// Buffers that messages held when their slot was replaced, oldest first. Freeing
    /// them to `malloc` instead made it hand the memory back to the kernel and fault it
    /// in again, which cost more than the copy saved.
    held: VecDeque<BytesMut>,
    /// Held buffers whose messages let go, the most recently found last: reused newest
    /// first, so the kernel writes into memory that is likely still in the cache.
    free: Vec<BytesMut>,
}

impl RxBufs {
    /// No slots yet (see [`ensure`](Self::ensure)); `gro_wanted`: UDP GRO may be turned
    /// on (see [`Inner::note_bulk`]).
    pub(crate) fn new(gro_wanted: bool) -> RxBufs {
        RxBufs {
            slots: Vec::new(),
            metas: Vec::new(),
            last_full: false,
            last_many: false,
            probably_more: false,
            gro_wanted,
            bulk_datagrams: 0,
            held: VecDeque::new(),
            free: Vec::new(),
        }
    }

    /// The slots and their metadata, for one receive call.
    #[cfg(feature = "tokio")]
    pub(crate) fn parts(&mut self) -> (&mut [BytesMut], &mut [RxMeta]) {
        (&mut self.slots, &mut self.metas)
    }
    /// Replace `slot`, which a message still holds part of: with the buffer most recently
    /// found free again (a few of the oldest held ones are looked at each time), else a
    /// new one.
    fn replace_held(&mut self, i: usize) {
        for _ in 0..self.held.len().min(HELD_CHECKS) {
            let Some(mut b) = self.held.pop_front() else {
                break;
            };
            if b.try_reclaim(RX_SLOT) {
                self.free.push(b);
            } else {
                self.held.push_back(b);
            }
        }
        let fresh = self
            .free
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(RX_SLOT));
        let old = std::mem::replace(&mut self.slots[i], fresh);
        if self.held.len() + self.free.len() >= MAX_HELD {
            // Let the coldest go: the longest-unused spare, else the oldest held one.
            if self.free.is_empty() {
                self.held.pop_front();
            } else {
                self.free.remove(0);
            }
        }
        self.held.push_back(old);
    }

    /// Make sure there are slots: `RX_BATCH_FIRST` at first, twice as many (up to
    /// `RX_BATCH_MAX`) each time a receive filled them all. A socket that only ever
    /// sees one datagram at a time keeps 8 (512 KiB of address space; only the pages
    /// datagrams are written to are touched).
    pub(crate) fn ensure(&mut self) {
        let want = if self.slots.is_empty() {
            RX_BATCH_FIRST
        } else if self.last_full && self.slots.len() < RX_BATCH_MAX {
            (self.slots.len() * 2).min(RX_BATCH_MAX)
        } else {
            return;
        };
        self.slots
            .resize_with(want, || BytesMut::with_capacity(RX_SLOT));
        self.metas.resize(want, RxMeta::default());
    }

    /// Slots a receive may fill.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Note how many datagrams the last receive took.
    pub(crate) fn note_received(&mut self, n: usize) {
        self.last_full = n == self.slots.len();
        self.last_many = n > 1;
    }
}

/// Datagrams shorter than this do not share their slot with the engine (it costs two
/// reference-count updates): a payload kept by reference pins the whole `RX_SLOT`, so a
/// slot less than half full would pin over twice the bytes its messages are charged for
/// (a peer sending 8 KB datagrams held 8 times its share of `max_incoming_held`).
const SHARE_MIN: usize = RX_SLOT / 2;
/// A datagram at least this long is part of a long message (a short one fits in less,
/// and so do control packets): what GRO can coalesce.
const BULK_DATAGRAM: usize = 1200;
/// Datagrams GRO could coalesce (long ones, or several received at once) a socket receives
/// before it turns UDP GRO on. Until then, a blocking receive can use `recvfrom`, cheaper
/// than the `recvmsg` GRO needs (see `sys::recv_one`): a socket that only ever sees short
/// messages one at a time never pays for GRO. With GRO on, a peer's batch of same-size
/// short packets sent as one GSO send arrives as one datagram, which the kernel neither
/// splits nor queues packet by packet.
const GRO_AFTER: u32 = 64;
/// Receive buffers kept for reuse after messages took them (`RX_SLOT` bytes each).
const MAX_HELD: usize = 128;
/// Held buffers looked at for one that is free again, per replacement.
const HELD_CHECKS: usize = 4;

/// The packets of one received datagram: several when GRO coalesced them (`segment` is
/// then their common length; the last may be shorter).
fn segments(datagram: &[u8], segment: usize) -> std::slice::Chunks<'_, u8> {
    let size = if segment > 0 { segment } else { datagram.len() };
    datagram.chunks(size.max(1))
}

/// The socket's lock. Wakes the callers it made ready once released, so that they do not
/// wake up only to block on the lock.
pub(crate) struct Guard<'a> {
    inner: &'a Inner,
    g: Option<MutexGuard<'a, State>>,
}

impl Deref for Guard<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        self.g.as_ref().expect("guard is held")
    }
}
impl DerefMut for Guard<'_> {
    fn deref_mut(&mut self) -> &mut State {
        self.g.as_mut().expect("guard is held")
    }
}
impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.g.take() {
            if g.wakes.is_empty() && !g.kick_pending {
                return;
            }
            release(self.inner, g);
        }
    }
}

/// Unlock `g`, then wake whom it made ready (and kick a thread blocked on the socket).
fn release(inner: &Inner, mut g: MutexGuard<'_, State>) {
    let wakes = g.take_wakes();
    let kick = std::mem::take(&mut g.kick_pending);
    if kick {
        inner.unconnect(&mut g);
    }
    drop(g);
    if kick {
        inner.send_kick();
    }
    for w in wakes {
        w.wake();
    }
}

impl Guard<'_> {
    /// Run `f` with the lock released (waking whoever this guard made ready first).
    pub(crate) fn unlocked<R>(&mut self, f: impl FnOnce() -> R) -> R {
        release(self.inner, self.g.take().expect("guard is held"));
        let r = f();
        self.g = Some(
            self.inner
                .state
                .lock()
                .unwrap_or_else(|_| panic!("{POISONED}")),
        );
        r
    }
}

/// Why a socket can no longer be used after a panic under its lock.
const POISONED: &str = "homa: a thread panicked while updating this socket's state, which \
    may be half-updated; the socket can no longer be used (drop it and open another)";

pub(crate) struct InnerParts {
    pub ep: Endpoint,
    pub io: Io,
    pub local: SocketAddr,
    pub transport: Transport,
    pub flavor: Flavor,
    pub gso: bool,
    /// UDP GRO is wanted and the kernel has it (turned on later, see `Inner::note_bulk`).
    pub gro: bool,
    pub kick: Option<Kick>,
}

impl Inner {
    pub(crate) fn new(p: InnerParts) -> std::io::Result<Inner> {
        // Busy-polling only pays with a core to spare: on a small machine the spinning
        // thread takes the CPU the peer (often in this very process, on loopback) needs
        // to answer. Measured on 2 cores: 100-byte RTT 20 us without spinning, 120 us
        // with 50 us of spinning.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let spin = if cores >= MIN_CORES_TO_SPIN {
            Duration::from_micros(p.ep.config().poll_usecs as u64)
        } else {
            Duration::ZERO
        };
        let tick = Duration::from_nanos(p.ep.config().tick_nanos);
        let connectable = matches!(p.io, Io::Udp { .. }) && !p.ep.is_server(p.local.port());
        let mut state = State::new(p.ep, p.gso);
        if connectable {
            state.udp_peer = UdpPeer::Fresh;
        }
        Ok(Inner {
            state: Mutex::new(state),
            rx: Mutex::new(RxBufs::new(p.gro)),
            io: p.io,
            port: p.local.port(),
            local: p.local,
            transport: p.transport,
            flavor: p.flavor,
            kick: p.kick,
            bg_timer: match p.flavor {
                Flavor::Blocking => Some(sys::TimerFd::new(false)?),
                #[cfg(feature = "tokio")]
                Flavor::Tokio => None,
            },
            bg_wake: match p.flavor {
                Flavor::Blocking => Some(sys::EventFd::new()?),
                #[cfg(feature = "tokio")]
                Flavor::Tokio => None,
            },
            #[cfg(feature = "tokio")]
            notify: tokio::sync::Notify::new(),
            spin,
            tick,
            gro_on: AtomicBool::new(false),
        })
    }

    /// Lock the socket's state.
    ///
    /// # Panics
    /// If a thread panicked while holding it: the engine may be half-updated (an RPC
    /// executed but not recorded, a buffer counted twice), and driving it further could
    /// break at-most-once or lose messages. Every later use of the socket panics the same
    /// way, saying why; dropping it does not (see [`Inner::lock_unless_poisoned`]).
    pub(crate) fn lock(&self) -> Guard<'_> {
        Guard {
            inner: self,
            g: Some(self.state.lock().unwrap_or_else(|_| panic!("{POISONED}"))),
        }
    }

    /// The lock for cleaning up (in `Drop`): `None` when a panic poisoned it, since a
    /// broken socket has nothing worth cleaning and a second panic while unwinding would
    /// abort the process.
    pub(crate) fn lock_unless_poisoned(&self) -> Option<Guard<'_>> {
        let g = self.state.lock().ok()?;
        Some(Guard {
            inner: self,
            g: Some(g),
        })
    }

    /// The receive buffers (only the driver uses them). Panics as [`Inner::lock`] does.
    #[cfg(feature = "tokio")]
    pub(crate) fn rx_lock(&self) -> MutexGuard<'_, RxBufs> {
        self.rx.lock().unwrap_or_else(|_| panic!("{POISONED}"))
    }

    /// The UDP socket's fd (None in raw mode, where a process-wide reader receives).
    pub(crate) fn udp_fd(&self) -> Option<RawFd> {
        match &self.io {
            Io::Udp { sock } => Some(sock.as_raw_fd()),
            Io::Raw { .. } => None,
        }
    }

    fn nonblocking_tx(&self) -> bool {
        self.flavor != Flavor::Blocking
    }

    /// Run the engine's timer if due, send what it wants sent, route what it delivered.
    ///
    /// A tick counts *silence*: RPCs that heard nothing for some ticks ask for data again
    /// and, after `timeout_ticks`, fail. Packets that wait unread in our own socket are
    /// not silence, so while any do (a starved or overloaded receiver), a due tick is put
    /// off until they are read, for up to `TICK_MAX_DEFER_NANOS`. Otherwise a backlog of
    /// responses makes us ask for them again (each RESEND makes the peer send a copy,
    /// deepening the backlog) and finally fail RPCs whose responses sit in the queue.
    /// In raw mode "our socket" is the process's raw socket (the one `tx_fd` names),
    /// whose queue also holds other raw-mode sockets' packets: a tick may then wait for
    /// those too, never longer than the limit.
    pub(crate) fn after_input(&self, st: &mut Guard<'_>, now: Time) {
        st.last_now = st.last_now.max(now);
        if !st.warned_not_server && st.ep.requests_refused() > 0 {
            // Their senders only see a timeout: say here, once, why.
            st.warned_not_server = true;
            tracing::warn!(
                target: "homa",
                local = %self.local,
                "requests to this socket are dropped: it takes none (a socket bound to port 0 \
                 serves only with `Options {{ server: Some(true), .. }}`); their senders will \
                 time out. Counted as drops{{reason=\"not_server\"}}"
            );
        }
        self.tick(st, now);
        self.deliver(st, now);
    }

    /// Run a tick that fell due while an application thread drove the socket, which
    /// holds ticks back until it is done delivering (see
    /// [`ingest_batch`](Self::ingest_batch)). Call before the thread waits again. True if
    /// a tick was due (it may have completed RPCs: look for outcomes again).
    pub(crate) fn tick_if_due(&self, st: &mut Guard<'_>) -> bool {
        let Some(t) = st.ep.next_tick() else {
            return false;
        };
        let now = clock();
        if now < t {
            return false;
        }
        self.after_input(st, now);
        true
    }

    /// The timer part of [`after_input`](Self::after_input).
    fn tick(&self, st: &mut Guard<'_>, now: Time) {
        if st.tick_recheck_at.is_some_and(|r| now < r) {
            // Put off until then (asking the kernel whether input waits costs a call).
            return;
        }
        if st.ep.next_tick().is_some_and(|t| t <= now) {
            let input_waits = || sys::input_queued(self.tx_fd());
            match put_off_tick(st.tick_deferred_since, now, input_waits) {
                Some(since) => {
                    st.tick_deferred_since = Some(since);
                    st.tick_recheck_at = Some(now.plus_nanos(TICK_RECHECK_NANOS));
                }
                None => {
                    st.tick_deferred_since = None;
                    st.tick_recheck_at = None;
                    st.ep.handle_timeout(now);
                    self.push_back_bg(st, now);
                }
            }
        }
    }

    /// Route what the engine delivered and send what it queued.
    fn deliver(&self, st: &mut Guard<'_>, now: Time) {
        // Deliver first: a long send (made with the lock released) then does not hold
        // back the messages that this input completed. Then what sending found (a
        // refused destination fails its RPCs).
        st.route();
        self.flush(st, now);
        st.route();
    }

    /// When [`after_input`](Self::after_input) must next run: the engine's next tick (or
    /// the recheck of a put-off one) or the pacer's deadline, whichever is first.
    ///
    /// A tick is asked for [`TICK_WAKE_SLACK_PERCENT`] of a tick late. Whoever feeds input
    /// to the engine runs a due tick itself (the background thread and the tokio driver at
    /// once, in `after_input`; an application thread before it waits again, see
    /// [`ingest_batch`](Self::ingest_batch)), so while packets flow, ticks run on
    /// the threads (or the tokio task) that read them and the timer that wakes a thread
    /// only for the tick never fires: measured on 2 vCPUs, those wake-ups (one per tick,
    /// on each socket with a live RPC) put a context switch pair into 1-3% of round
    /// trips, 100 B RTT p99 37 us against 15 us for a UDP ping-pong. A tick late by less
    /// than a whole tick counts silence the same: the grid of ticks stays where it was.
    ///
    /// While a thread is sending (it holds the batch buffers, see [`flush`](Self::flush)),
    /// the pacer's deadline is not ours to wait for: data that falls due meanwhile is
    /// that thread's to send, since it gathers again before it lets go of the buffers,
    /// and it kicks the driver if the pacer still holds data back then. Counting that
    /// data as due here made the driver spin on it, taking the CPU from the very thread
    /// that was to send it: granted bytes then waited milliseconds (a scheduler slice).
    /// Nor is it while packets wait for room in the socket buffer (non-blocking senders):
    /// nothing more goes out before room appears, which the tokio driver waits for.
    pub(crate) fn next_wake(&self, st: &State) -> Option<Time> {
        let tick = st.ep.next_tick().map(|t| {
            let t = self.tick_wake(t);
            st.tick_recheck_at.map_or(t, |r| t.max(r))
        });
        let pacer = st
            .ep
            .pacer_deadline()
            .filter(|_| st.tx.is_some() && !st.tx_has_pending);
        match (tick, pacer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When to wake only to run the tick due at `t` (see [`next_wake`](Self::next_wake)).
    fn tick_wake(&self, t: Time) -> Time {
        t.plus_nanos(self.tick.as_nanos() as u64 / 100 * TICK_WAKE_SLACK_PERCENT)
    }

    /// Feed one received Homa packet to the engine; `shared`: the buffer it lies in, which
    /// the engine may keep parts of.
    pub(crate) fn ingest(
        &self,
        st: &mut State,
        now: Time,
        from: IpAddr,
        bytes: &[u8],
        shared: Option<&Bytes>,
    ) {
        if tracing::enabled!(tracing::Level::TRACE) {
            trace_packet("rx", from, bytes, bytes.len());
        }
        match shared {
            Some(buf) => st.ep.handle_shared_datagram(now, from, bytes, buf),
            None => st.ep.handle_datagram(now, from, bytes),
        }
    }

    /// Feed a batch the driver received (UDP mode): split GRO aggregates, then let the
    /// engine answer.
    ///
    /// `tick_now: false` (an application thread drives) holds a due tick back until the
    /// thread is about to wait again ([`tick_if_due`](Self::tick_if_due)): the message it
    /// returns with, and the reply its caller then sends, do not wait for the tick's
    /// work and system calls (an `ioctl` and a `timerfd_settime`, on every tick that a
    /// reader runs). On 2 vCPUs at 2,500 RPC/s of 100 B, the server's turnaround (its
    /// thread woken by the request to the client woken by the response, `perf sched`)
    /// fell from 36-38 us to 27 us at the median. The tick is late by one handler's run
    /// at most, or the background thread runs it (see [`next_wake`](Self::next_wake)).
    pub(crate) fn ingest_batch(
        &self,
        st: &mut Guard<'_>,
        rx: &mut RxBufs,
        n: usize,
        tick_now: bool,
    ) {
        let now = clock();
        st.last_now = st.last_now.max(now);
        let kick_from = self.kick.as_ref().map(|k| k.from);
        let tick_before = st.ep.next_tick();
        // One grant round for the whole batch (see `Endpoint::begin_batch`).
        st.ep.begin_batch();
        for i in 0..n {
            let (m, slot) = (&rx.metas[i], &mut rx.slots[i]);
            let Some(from) = m.from else { continue };
            if Some(from) == kick_from {
                continue;
            }
            if m.truncated || slot.is_empty() {
                // Empty, or longer than any Homa packet we accept: count it like any
                // malformed one.
                st.ep.handle_datagram(now, from.ip(), &[]);
                continue;
            }
            if slot.len() >= BULK_DATAGRAM || n > 1 {
                rx.bulk_datagrams = rx.bulk_datagrams.saturating_add(1);
            }
            if slot.len() < SHARE_MIN {
                for seg in segments(slot, m.segment) {
                    self.ingest(st, now, from.ip(), seg, None);
                }
                continue;
            }
            let shared = slot.split().freeze();
            for seg in segments(&shared, m.segment) {
                self.ingest(st, now, from.ip(), seg, Some(&shared));
            }
            drop(shared);
            // Take the whole slot back unless a message kept part of it.
            if !slot.try_reclaim(RX_SLOT) {
                rx.replace_held(i);
            }
        }
        st.ep.end_batch();
        if rx.gro_wanted && rx.bulk_datagrams >= GRO_AFTER {
            self.note_bulk(rx);
        }
        if st.ep.next_tick() != tick_before {
            // The clock started, or ticks spaced out while idle come every tick again:
            // whoever runs the timers must not sleep until the old deadline.
            self.kick(st);
        }
        st.last_now = st.last_now.max(now);
        if tick_now {
            self.tick(st, now);
        }
        self.deliver(st, now);
    }

    /// Whether UDP GRO is on for the socket.
    pub(crate) fn gro_on(&self) -> bool {
        self.gro_on.load(Ordering::Relaxed)
    }

    /// Long messages arrive: turn UDP GRO on, once (`rx`, locked by the caller, orders
    /// this before any later receive). Datagrams the kernel queued before are never
    /// aggregates: it splits them when GRO is off as they are queued.
    fn note_bulk(&self, rx: &mut RxBufs) {
        rx.gro_wanted = false;
        let Some(fd) = self.udp_fd() else { return };
        match sys::setsockopt_int(fd, sys::SOL_UDP, sys::UDP_GRO, 1) {
            Ok(()) => {
                self.gro_on.store(true, Ordering::Relaxed);
                tracing::debug!(local = %self.local, "UDP GRO on: long messages arrive");
            }
            Err(e) => tracing::debug!(error = %e, "UDP GRO stays off"),
        }
    }

    /// Read the socket's error queue: ICMP "port unreachable" fails the RPCs to that
    /// address at once instead of after `timeout_ticks` of silence.
    pub(crate) fn drain_errors(&self, st: &mut State) {
        let Some(fd) = self.udp_fd() else { return };
        for _ in 0..64 {
            match sys::recv_error(fd) {
                Ok(Some((Some(dest), errno))) => {
                    tracing::debug!(%dest, errno, "ICMP error");
                    if errno == libc::ECONNREFUSED {
                        st.ep.handle_unreachable(dest);
                    }
                }
                Ok(Some((None, _))) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// The kernel refused to send to `dest` with `errno`, which retrying will not cure:
    /// fail the client RPCs to it now, not a timeout later. (Raw IP sends to the address
    /// alone: every client RPC to that address fails.)
    fn fail_unsendable(&self, st: &mut State, dest: SocketAddr, errno: i32) {
        let port = match self.io {
            Io::Udp { .. } => Some(dest.port()),
            Io::Raw { .. } => None,
        };
        let failed =
            st.ep
                .fail_client_rpcs_to(dest.ip(), port, homa_core::RpcError::Unreachable(errno));
        if failed > 0 {
            tracing::debug!(%dest, errno, failed, "cannot send; RPCs failed");
        }
    }

    /// One receive step of a driver (blocking flavour): take what the socket has and
    /// process it. `how` says how to wait when nothing is there: an application thread
    /// without a deadline blocks in `recvmmsg` itself (one system call per wake-up, like a
    /// plain UDP receive; timers are the background thread's job meanwhile); the
    /// background thread and callers with a deadline sleep in `ppoll` until it. Either is
    /// woken early by a kick datagram (see [`Inner::send_kick`]). Returns with the lock
    /// held and everything received processed.
    pub(crate) fn drive_step<'a>(&'a self, mut st: Guard<'a>, how: WaitHow) -> Guard<'a> {
        let Some(fd) = self.udp_fd() else {
            return st;
        };
        // The background thread runs the timers and flushes; an application thread only
        // reads (whoever queues packets sends them), which spares a clock read per step.
        if let WaitHow::Background = how {
            self.after_input(&mut st, clock());
        }
        let (who, deadline, spin, more, batch) = match how {
            WaitHow::App { until, more, batch } => (Blocked::App, until, self.spin, more, batch),
            WaitHow::Background => (
                Blocked::Background,
                self.next_wake(&st),
                Duration::ZERO,
                false,
                false,
            ),
        };
        st.blocked = who;
        st.sleep_until = Some(deadline);
        drop(st);

        let mut rx = self.rx.lock().unwrap_or_else(|_| panic!("{POISONED}"));
        rx.ensure();
        // Datagrams come together (or the caller takes a batch): a blocking receive takes
        // whatever is queued with the first, in the same system call.
        let together = batch || rx.last_many;
        let probably_more = rx.probably_more || more;
        let RxBufs { slots, metas, .. } = &mut *rx;
        let mut err = false;
        let gro_on = self.gro_on();
        let mut recv = |how: Recv| -> usize {
            let r = match how {
                Recv::One => sys::recv_one(fd, &mut slots[0], &mut metas[0], gro_on),
                Recv::Batch => sys::recv_batch(fd, slots, metas, false),
                Recv::Queued => sys::recv_batch(fd, slots, metas, true),
            };
            match r {
                Ok(n) => n,
                Err(e) => {
                    match e.raw_os_error() {
                        Some(libc::ECONNREFUSED) | Some(libc::EINTR) | Some(libc::EAGAIN) => {}
                        _ => tracing::debug!(error = %e, "receive failed"),
                    }
                    err = true;
                    0
                }
            }
        };
        // Try a non-blocking batch receive first only when more is probably waiting (the
        // last receive got something and this driver is still waiting: a long message
        // is arriving); otherwise go straight to waiting, which returns at once if
        // something is there: one system call per wake-up on the RPC fast path.
        let mut n = 0;
        if probably_more {
            n = recv(Recv::Queued);
        }
        if n == 0 && !spin.is_zero() {
            let end = clock().plus_nanos(spin.as_nanos() as u64);
            let end = deadline.map_or(end, |d| d.min(end));
            while n == 0 && clock() < end {
                std::hint::spin_loop();
                n = recv(Recv::Queued);
            }
        }
        if n == 0 {
            match (who, deadline) {
                (Blocked::App, None) if together => n = recv(Recv::Batch),
                (Blocked::App, None) => n = recv(Recv::One),
                (_, deadline) => {
                    let timeout = deadline.map(|d| Duration::from_nanos(d.nanos_since(clock())));
                    if timeout == Some(Duration::ZERO) {
                        n = recv(Recv::Queued);
                    } else {
                        let wake = match who {
                            Blocked::Background => self.bg_wake.as_ref(),
                            _ => None,
                        };
                        match sys::poll(fd, wake, timeout) {
                            Ok(p) if p.readable => n = recv(Recv::Queued),
                            Ok(p) => err |= p.error,
                            Err(e) => {
                                tracing::warn!(error = %e, "ppoll failed");
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                    }
                }
            }
        }
        rx.note_received(n);
        rx.probably_more = rx.last_full || (n > 0 && more);
        let mut st = self.lock();
        st.blocked = Blocked::None;
        st.sleep_until = None;
        if err {
            self.drain_errors(&mut st);
        }
        self.ingest_batch(&mut st, &mut rx, n, who == Blocked::Background);
        st
    }

    /// Wake whoever must act on a deadline that an application command moved earlier
    /// (or on packets left unsent).
    pub(crate) fn kick(&self, st: &mut State) {
        let next = self.next_wake(st);
        match self.flavor {
            Flavor::Blocking => {
                if st.blocked == Blocked::Background {
                    // The background thread sleeps in ppoll until its old deadline.
                    if earlier(next, st.sleep_until.flatten()) {
                        st.sleep_until = Some(next);
                        self.wake_bg(st);
                    }
                } else if let Some(next) = next.filter(|&n| earlier(Some(n), st.bg_wake_at)) {
                    // It runs the timers: let it wait for the new deadline instead.
                    self.arm_bg(st, next);
                }
            }
            #[cfg(feature = "tokio")]
            Flavor::Tokio => {
                let sleep = st.sleep_until.flatten();
                if earlier(next, sleep) || (st.tx_has_pending && !st.tx_pending_seen) {
                    st.sleep_until = Some(next);
                    self.notify.notify_one();
                }
            }
        }
    }

    /// Make sure the background thread looks soon at a socket left undriven (it takes the
    /// driver role a tick after, see [`bg_deadline`](Self::bg_deadline)): it may be
    /// sleeping until a much later deadline. One it will wake for within two ticks
    /// anyway (a timer tick) is left alone: a thread usually comes back to drive long
    /// before, which makes an earlier wake-up a wasted one.
    pub(crate) fn watch_undriven(&self, st: &mut State) {
        let Some(due) = st.undriven_since.and_then(|_| self.take_over_at(st)) else {
            return;
        };
        if st
            .bg_wake_at
            .is_some_and(|w| w > due.plus_nanos(self.tick.as_nanos() as u64))
        {
            self.arm_bg(st, due);
            st.bg_watches_undriven = true;
        }
    }

    /// A thread drives again: the background thread need not wake to take over (when
    /// [`watch_undriven`](Self::watch_undriven) moved its wake-up earlier for that). A
    /// client whose RPCs all finish between ticks stops the engine's clock, and each
    /// time it did, the background thread woke a tick later for nothing.
    pub(crate) fn unwatch_undriven(&self, st: &mut State) {
        if std::mem::take(&mut st.bg_watches_undriven) {
            let now = st.last_now;
            self.push_back_bg(st, now);
        }
    }

    /// Whether application threads read the socket themselves (blocking flavour; not in
    /// raw mode, where one reader thread per process receives).
    pub(crate) fn app_drives(&self) -> bool {
        self.udp_fd().is_some()
    }

    /// When the background thread (blocking flavour) takes the driver role of a socket
    /// no thread drives, if none does: a tick after it was left. An application thread
    /// that just returned a message is usually back within microseconds, and taking the
    /// socket from under it would cost a hand-over on its next receive.
    pub(crate) fn take_over_at(&self, st: &State) -> Option<Time> {
        (self.app_drives() && st.driver == Driver::None).then(|| {
            st.undriven_since
                .map_or(Time(0), |t| t.plus_nanos(self.tick.as_nanos() as u64))
        })
    }

    /// When the background thread (blocking flavour) must next look at the socket: for
    /// the timers ([`next_wake`](Self::next_wake)), to [take over](Self::take_over_at),
    /// or after `BG_IDLE_CHECK_NANOS` at the latest.
    pub(crate) fn bg_deadline(&self, st: &State, now: Time) -> Time {
        [self.next_wake(st), self.take_over_at(st)]
            .into_iter()
            .flatten()
            .fold(now.plus_nanos(BG_IDLE_CHECK_NANOS), Time::min)
    }

    /// Set the sleeping background thread's timer to `at` (earlier or later).
    fn arm_bg(&self, st: &mut State, at: Time) {
        st.bg_wake_at = Some(at);
        st.bg_watches_undriven = false;
        if let Some(t) = &self.bg_timer {
            t.set(Some(at.as_nanos()));
        }
    }

    /// A tick ran on a thread other than the background one: move the sleeping
    /// background thread's wake-up (set for that tick) to the next one, so that it does
    /// not wake for nothing. One system call per tick instead of a context switch pair.
    fn push_back_bg(&self, st: &mut State, now: Time) {
        if let Some(w) = st.bg_wake_at {
            let at = self.bg_deadline(st, now);
            if at > w {
                self.arm_bg(st, at);
            }
        }
    }

    /// The background thread sleeps until `State::bg_wake_at` (or an earlier kick).
    pub(crate) fn bg_sleep(&self, st: &mut Guard<'_>, at: Time) {
        self.arm_bg(st, at);
        if let Some(t) = &self.bg_timer {
            st.unlocked(|| t.drain());
        }
        st.bg_wake_at = None;
    }

    /// Wake the thread blocked on the UDP socket (if any) with an empty datagram from our
    /// own kick socket, which the driver recognises by its source and drops.
    /// Disconnect a connected UDP socket for good (see [`UdpPeer`]). Under the lock, so
    /// that no send without an address (made only under it) is under way.
    pub(crate) fn unconnect(&self, st: &mut State) {
        if let UdpPeer::Connected(peer) = st.udp_peer {
            st.udp_peer = UdpPeer::Many;
            if let Err(e) = sys::udp_connect(self.tx_fd(), None) {
                tracing::warn!(error = %e, %peer, "cannot disconnect the UDP socket");
            }
        }
    }

    /// Before `tx` goes out: connect a fresh client socket to its first peer, disconnect
    /// one about to send elsewhere. Returns the peer that may be sent to without an
    /// address.
    fn settle_peer(&self, st: &mut State, tx: &Tx) -> Option<SocketAddr> {
        let mut dests = tx.pkts.iter().map(|p| p.dest);
        let mut pending = tx.pending.iter().map(|p| p.pkt.dest);
        match st.udp_peer {
            UdpPeer::Never | UdpPeer::Many => None,
            UdpPeer::Connected(peer) => {
                if dests.all(|d| d == peer) && pending.all(|d| d == peer) {
                    Some(peer)
                } else {
                    self.unconnect(st);
                    None
                }
            }
            UdpPeer::Fresh => {
                let first = dests.next()?;
                if dests.all(|d| d == first) && pending.all(|d| d == first) {
                    match sys::udp_connect(self.tx_fd(), Some(&first)) {
                        Ok(()) => {
                            st.udp_peer = UdpPeer::Connected(first);
                            return Some(first);
                        }
                        Err(e) => tracing::debug!(error = %e, "cannot connect the UDP socket"),
                    }
                }
                st.udp_peer = UdpPeer::Many;
                None
            }
        }
    }

    /// Wake the background thread from its `ppoll` on the socket: by its eventfd when
    /// the socket is connected (a kick datagram would disconnect it), else by a kick.
    pub(crate) fn wake_bg(&self, st: &mut State) {
        match (&self.bg_wake, st.udp_peer) {
            (Some(w), UdpPeer::Connected(_)) => w.notify(),
            _ => st.kick_pending = true,
        }
    }

    pub(crate) fn send_kick(&self) {
        if let Some(k) = &self.kick {
            let _ = k.sock.send_to(&[], k.to);
        }
    }

    /// Shut the socket down: its RPCs fail, waiters wake with `Shutdown`, drivers stop.
    pub(crate) fn shutdown(&self) {
        let Some(mut st) = self.lock_unless_poisoned() else {
            // Nothing in the state can be trusted, but the background thread or task must
            // still wake, wherever it waits (timer, eventfd, socket): it then finds the
            // lock poisoned and ends.
            if let Some(t) = &self.bg_timer {
                t.set(Some(1));
            }
            if let Some(w) = &self.bg_wake {
                w.notify();
            }
            self.send_kick();
            #[cfg(feature = "tokio")]
            self.notify.notify_one();
            return;
        };
        if st.shutdown {
            return;
        }
        tracing::debug!(local = %self.local, "shutdown");
        st.shutdown = true;
        st.ep.close(self.port);
        let now = clock();
        self.flush(&mut st, now);
        st.route();
        st.wake_all();
        if st.blocked != Blocked::None {
            st.kick_pending = true;
        }
        if let Some(t) = &self.bg_timer {
            t.set(Some(1)); // long past: fires at once
        }
        #[cfg(feature = "tokio")]
        self.notify.notify_one();
    }

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
    fn corked_here(&self) -> bool {
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
        self.after_command(&mut st, clock());
    }

    /// Send what an application command queued and route what it completed: at once on
    /// the blocking flavour; on the tokio flavour, by the driver task, which runs after
    /// the tasks that are ready now, so that what they send leaves together (one system
    /// call for many requests or replies instead of one each).
    fn after_command(&self, st: &mut Guard<'_>, now: Time) {
        match self.flavor {
            Flavor::Blocking => {
                self.flush(st, now);
                st.route();
                self.kick(st);
            }
            #[cfg(feature = "tokio")]
            Flavor::Tokio => {
                st.route();
                if st.ep.may_transmit() || st.tx_has_pending {
                    self.wake_driver(st);
                } else {
                    self.kick(st);
                }
            }
        }
    }

    /// Have the tokio driver task run (once, however many commands ask).
    #[cfg(feature = "tokio")]
    fn wake_driver(&self, st: &mut State) {
        if !st.driver_woken {
            st.driver_woken = true;
            self.notify.notify_one();
        }
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
        if dest.is_ipv4() != self.local.is_ipv4() {
            return Err(SendError::AddressFamily {
                local: self.local,
                dest,
            });
        }
        if let SocketAddr::V6(d) = dest {
            if let Some(ipv4) = d.ip().to_ipv4_mapped() {
                return Err(SendError::Ipv4Mapped { dest, ipv4 });
            }
        }
        let len = data.len() as u32;
        let mut st = self.lock();
        if st.shutdown {
            return Err(SendError::Shutdown);
        }
        let now = clock();
        let id = st
            .ep
            .send_request(now, self.port, dest, data.into_bytes(), cookie, private)?;
        tracing::debug!(%id, %dest, len, "send request");
        st.ids.insert(id, IdSlot::Outstanding);
        if push == Push::Now {
            self.after_command(&mut st, now);
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
        let id = request.id();
        if !request.belongs_to(self) {
            return Err(ReplyError::WrongSocket(id));
        }
        if !request.is_request() {
            return Err(ReplyError::NotARequest(id));
        }
        let len = data.len() as u32;
        let mut st = self.lock();
        if st.shutdown {
            return Err(ReplyError::Shutdown);
        }
        let now = clock();
        st.ep
            .reply(now, self.port, request.peer(), id, data.into_bytes())
            .map_err(|e| crate::error::reply_error(e, id))?;
        tracing::debug!(%id, peer = %request.peer(), len, "reply");
        request.mark_answered();
        if push == Push::Now {
            self.after_command(&mut st, now);
        }
        Ok(())
    }

    pub(crate) fn abort(&self, id: RpcId) -> Result<(), AbortError> {
        let mut st = self.lock();
        if st.shutdown {
            return Err(AbortError::Shutdown);
        }
        if !st.ep.abort(self.port, id, true) {
            return Err(AbortError::UnknownRpc(id));
        }
        self.after_command(&mut st, clock());
        Ok(())
    }

    pub(crate) fn abort_all(&self) -> Result<usize, AbortError> {
        let mut st = self.lock();
        if st.shutdown {
            return Err(AbortError::Shutdown);
        }
        let n = st.ep.abort_all(self.port, true);
        self.after_command(&mut st, clock());
        Ok(n)
    }

    pub(crate) fn info(&self) -> SocketInfo {
        let st = self.lock();
        let m = st.ep.metrics();
        SocketInfo {
            local_addr: self.local,
            port: self.port,
            transport: self.transport,
            shutdown: st.shutdown,
            client_rpcs: m.client_rpcs,
            server_rpcs: m.server_rpcs,
            incoming_held: m.incoming_held,
            outgoing_held: m.outgoing_held,
            queued: st.queued(),
            waiters: st.waiter_count(),
            mtu: st.ep.config().mtu,
            link_mbps: st.ep.config().link_mbps,
            gso: st.gso_on,
            gro: self.gro_on(),
            send_buffer_full: st.send_buffer_full,
            rpcs: st.rpc_infos(self.port),
        }
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
            self.after_command(&mut st, clock());
        }
    }

    /// Send everything the engine has ready, in `sendmmsg` batches of up to 64 packets
    /// (runs of same-size packets to one destination coalesced with GSO).
    ///
    /// The packets are gathered under the socket's lock, then sent with the lock released:
    /// on loopback a send also delivers to the receiver and wakes it, which takes
    /// microseconds that other threads of this socket should not wait through. One thread
    /// sends at a time (it owns the [`Tx`] buffers meanwhile); a thread that finds them
    /// taken leaves its packets in the engine and notes that the sender must come back.
    /// Returns false if packets are left waiting for a full socket buffer (non-blocking
    /// senders only).
    pub(crate) fn flush(&self, st: &mut Guard<'_>, now: Time) -> bool {
        if !st.tx_has_pending && !st.ep.may_transmit() {
            return true;
        }
        let Some(mut tx) = st.tx.take() else {
            st.tx_again = true;
            self.send_urgent(st, now);
            return true;
        };
        let mut drained = true;
        loop {
            st.tx_again = false;
            // Packets a full socket buffer left go first. While it stays full, the rest
            // stay in the engine, in SRPT order, rather than queue here behind them.
            if !tx.pending.is_empty() && !self.send_pending(&mut tx) {
                st.send_buffer_full += 1;
                drained = false;
                break;
            }
            let full = self.gather(st, &mut tx, now);
            if tx.pkts.is_empty() {
                break;
            }
            // Small batches go out under the lock: a short send is cheaper than the
            // hand-offs that releasing and retaking the lock cause when other threads
            // wait for it (measured: 32 outstanding 100-byte RPCs ran at half the rate).
            let bytes: usize = tx.pkts.iter().map(TxPacket::wire_len).sum();
            let connected = self.settle_peer(st, &tx);
            let out = if bytes >= UNLOCKED_SEND_BYTES {
                // Addressed: a kick may disconnect the socket meanwhile.
                st.unlocked(|| self.send_tx(&mut tx, None))
            } else {
                self.send_tx(&mut tx, connected)
            };
            if out.refused {
                self.drain_errors(st);
            }
            for (dest, errno) in out.unsendable {
                self.fail_unsendable(st, dest, errno);
            }
            if out.blocked {
                st.send_buffer_full += 1;
                drained = false;
                break;
            }
            if !full && !st.tx_again {
                break;
            }
        }
        st.gso_on = tx.gso;
        if !st.urgent_left.is_empty() {
            tx.pending.extend(st.urgent_left.drain(..));
        }
        st.tx_has_pending = !tx.pending.is_empty();
        st.tx = Some(tx);
        // Packets left for a full socket buffer, or data the pacer holds back (which a
        // driver that looked while we were sending did not count: see `next_wake`).
        if st.tx_has_pending || st.ep.pacer_deadline().is_some() {
            self.kick(st);
        }
        drained
    }

    /// Another thread owns the batch buffers and sends (long messages' data, for up to a
    /// batch of 64 KB packets, with the lock released): send from this thread, under the
    /// lock, what need not wait for it: control packets and short messages (see
    /// [`Endpoint::poll_transmit_urgent`]). Measured on 2 vCPUs, W4 at 8 Gbps over
    /// loopback: 23% of short requests found the buffers taken, and reached the server
    /// 86 us later at the median instead of 13 us.
    ///
    /// Each packet carries its TOS in a control message: the socket's own TOS belongs to
    /// the batch owner. A fresh client socket (not yet connected to its peer, see
    /// [`UdpPeer`]) leaves everything to the owner.
    fn send_urgent(&self, st: &mut State, now: Time) {
        if matches!(st.udp_peer, UdpPeer::Fresh) {
            return;
        }
        let mut buf = [0u8; homa_wire::MAX_HEADER_LEN + INLINE_PAYLOAD];
        for _ in 0..MAX_URGENT {
            let Some(t) = st.ep.poll_transmit_urgent(now, &mut buf) else {
                return;
            };
            let connected = match st.udp_peer {
                UdpPeer::Connected(peer) if peer == t.dest => Some(peer),
                // An unlocked sender addresses every packet: disconnecting is safe.
                UdpPeer::Connected(_) => {
                    self.unconnect(st);
                    None
                }
                _ => None,
            };
            let src = self.finish_packet(&mut buf[..t.len], t.dest);
            if tracing::enabled!(tracing::Level::TRACE) {
                trace_packet("tx", t.dest.ip(), &buf[..t.len], t.len);
            }
            let dest = match self.io {
                Io::Udp { .. } => t.dest,
                Io::Raw { .. } => SocketAddr::new(t.dest.ip(), 0),
            };
            let pkt = TxPacket {
                dest,
                start: 0,
                len: t.len,
                payload: Bytes::new(),
                tos: homa_wire::priority_to_tos(t.priority),
                src,
            };
            let pkts = std::slice::from_ref(&pkt);
            let fd = self.tx_fd();
            let nonblocking = self.nonblocking_tx();
            let mut r =
                sys::send_batch(fd, &buf, pkts, &ONE_DATAGRAM, nonblocking, true, connected);
            if r.as_ref()
                .is_err_and(|e| e.raw_os_error() == Some(libc::ECONNREFUSED))
            {
                // An earlier datagram's ICMP error, reported (and cleared) by this call.
                self.drain_errors(st);
                r = sys::send_batch(fd, &buf, pkts, &ONE_DATAGRAM, nonblocking, true, connected);
            }
            match r {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    st.send_buffer_full += 1;
                    st.urgent_left.push(Pending {
                        header: buf[..t.len].to_vec(),
                        pkt,
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, dest = %t.dest, "send failed; packet dropped");
                    if let Some(errno) = lasting_send_error(&e) {
                        self.fail_unsendable(st, dest, errno);
                    }
                }
                Ok(_) => {}
            }
        }
    }

    /// Take what the engine has to send into `tx` (a batch). Returns whether the batch
    /// filled up (more may be waiting).
    ///
    /// UDP: only the headers are written into the batch buffer; each payload stays in its
    /// message and goes to the kernel by a vectored send, so the sender copies each byte
    /// once (into the kernel). Raw IP writes whole packets: the Linux-compatible checksum
    /// covers the payload.
    fn gather(&self, st: &mut State, tx: &mut Tx, now: Time) -> bool {
        tx.pkts.clear();
        tx.groups.clear();
        let raw = matches!(self.io, Io::Raw { .. });
        let room = if raw {
            st.max_packet
        } else {
            homa_wire::MAX_HEADER_LEN + INLINE_PAYLOAD
        };
        let mut used = 0;
        let mut bytes = 0;
        while tx.pkts.len() < MAX_BATCH && used + room <= tx.arena.len() && bytes < TX_BATCH_BYTES {
            let buf = &mut tx.arena[used..used + room];
            let (t, len, payload) = if raw {
                let Some(t) = st.ep.poll_transmit(now, buf) else {
                    break;
                };
                (t, t.len, bytes::Bytes::new())
            } else {
                let Some(p) = st.ep.poll_transmit_parts(now, buf) else {
                    break;
                };
                // The engine copies a payload of up to INLINE_PAYLOAD bytes behind its
                // header (`room`): one iovec is cheaper for short ones.
                (p.transmit, p.header_len, p.payload)
            };
            let src = self.finish_packet(&mut tx.arena[used..used + len], t.dest);
            // Raw sockets take no port (IPv6 ones reject any but 0 or the protocol).
            let dest = match self.io {
                Io::Udp { .. } => t.dest,
                Io::Raw { .. } => SocketAddr::new(t.dest.ip(), 0),
            };
            let header = &tx.arena[used..used + len];
            if tracing::enabled!(tracing::Level::TRACE) {
                trace_packet("tx", t.dest.ip(), header, t.len);
            }
            tx.pkts.push(TxPacket {
                dest,
                start: used,
                len,
                payload,
                tos: homa_wire::priority_to_tos(t.priority),
                src,
            });
            used += len;
            bytes += t.len;
        }
        group(&tx.pkts, tx.gso, &mut tx.groups);
        tx.pkts.len() == MAX_BATCH || used + room > tx.arena.len() || bytes >= TX_BATCH_BYTES
    }

    /// Raw IP: fill the Linux-compatible checksum; say which source address to use.
    fn finish_packet(&self, pkt: &mut [u8], dest: SocketAddr) -> Option<IpAddr> {
        let Io::Raw { fam, bound_ip, .. } = &self.io else {
            return None;
        };
        let src = bound_ip.unwrap_or_else(|| fam.source_for(dest.ip()));
        match (src, dest.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => homa_wire::checksum::fill_ipv4(s, d, pkt),
            (IpAddr::V6(s), IpAddr::V6(d)) => homa_wire::checksum::fill_ipv6(s, d, pkt),
            _ => {}
        }
        *bound_ip
    }

    fn tx_fd(&self) -> RawFd {
        match &self.io {
            Io::Udp { sock } => sock.as_raw_fd(),
            Io::Raw { fam, .. } => fam.fd(),
        }
    }

    /// Send the batch in `tx` (called with the socket's lock held or released).
    fn send_tx(&self, tx: &mut Tx, connected: Option<SocketAddr>) -> SendOutcome {
        let mut out = SendOutcome::default();
        let fd = self.tx_fd();
        let udp = matches!(self.io, Io::Udp { .. });
        let mut gi = 0;
        let mut refused = 0;
        while gi < tx.groups.len() {
            // UDP: the priority goes in the socket's TOS, set only when it changes (cheaper
            // than a control message per datagram); the run of packets at one priority
            // goes out in one call. The raw socket is shared: a control message each.
            let mut end = tx.groups.len();
            if udp {
                let tos = tx.pkts[tx.groups[gi].first].tos;
                end = gi
                    + tx.groups[gi..]
                        .iter()
                        .take_while(|g| tx.pkts[g.first].tos == tos)
                        .count();
                if tx.cur_tos != Some(tos) {
                    let (level, name) = if self.local.is_ipv6() {
                        (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
                    } else {
                        (libc::IPPROTO_IP, libc::IP_TOS)
                    };
                    let ok = sys::setsockopt_int(fd, level, name, tos as i32).is_ok();
                    tx.cur_tos = ok.then_some(tos);
                }
            }
            let tos_cmsg = !udp || tx.cur_tos.is_none();
            let groups = &tx.groups[gi..end];
            match sys::send_batch(
                fd,
                &tx.arena,
                &tx.pkts,
                groups,
                self.nonblocking_tx(),
                tos_cmsg,
                connected,
            ) {
                Ok(n) => gi += n.max(1),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    tx.keep_pending(gi);
                    out.blocked = true;
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) && refused < 4 => {
                    // An earlier datagram drew an ICMP error (reported, and so cleared, by
                    // this call); the error queue is read once the lock is back. Retry.
                    refused += 1;
                    out.refused = true;
                }
                Err(e) if tx.groups[gi].segment > 0 => {
                    // GSO unusable here (e.g. no checksum offload on the route): turn it
                    // off and send the segments one by one.
                    tracing::debug!(error = %e, "UDP GSO failed; falling back to single datagrams");
                    tx.gso = false;
                    let g = tx.groups[gi];
                    let singles = (g.first..g.first + g.count).map(|first| TxGroup {
                        first,
                        count: 1,
                        segment: 0,
                    });
                    tx.groups.splice(gi..=gi, singles);
                }
                Err(e) => {
                    // Lost like any packet on a network; Homa's RESENDs recover it,
                    // unless the error says no packet to that peer will go.
                    let dest = tx.pkts[tx.groups[gi].first].dest;
                    tracing::debug!(error = %e, %dest, "send failed; packet dropped");
                    if let Some(errno) = lasting_send_error(&e) {
                        out.unsendable.push((dest, errno));
                    }
                    gi += 1;
                }
            }
        }
        tx.pkts.clear();
        tx.groups.clear();
        out
    }

    /// Send packets kept from a full socket buffer. Returns true when none are left.
    fn send_pending(&self, tx: &mut Tx) -> bool {
        let fd = self.tx_fd();
        while let Some(p) = tx.pending.front() {
            let pkts = std::slice::from_ref(&p.pkt);
            match sys::send_batch(fd, &p.header, pkts, &ONE_DATAGRAM, true, true, None) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                _ => {
                    tx.pending.pop_front();
                }
            }
        }
        true
    }

    /// The tokio driver, before it waits: whether packets wait for socket buffer space
    /// (it then waits for room as well), noting that it knows.
    #[cfg(feature = "tokio")]
    pub(crate) fn see_pending_tx(st: &mut State) -> bool {
        st.tx_pending_seen = st.tx_has_pending;
        st.tx_has_pending
    }
}

/// Messages hand their memory back through this (see [`Inner::release`]).
impl message::Owner for Inner {
    fn release(&self, data: MessageBuf, discard: Option<(SocketAddr, RpcId)>) {
        Inner::release(self, data, discard)
    }
}

/// The raw-IP reader hands each socket the packets for its port through this.
impl raw::RawReceiver for Inner {
    fn receive_raw(&self, packets: &mut dyn Iterator<Item = (IpAddr, &[u8])>) {
        // A socket broken by a panic gets nothing more; the reader, shared by every
        // raw-mode socket of the process, goes on serving the others.
        let Some(mut st) = self.lock_unless_poisoned() else {
            return;
        };
        if st.shutdown {
            return;
        }
        let now = clock();
        st.ep.begin_batch();
        for (from, homa) in packets {
            self.ingest(&mut st, now, from, homa, None);
        }
        st.ep.end_batch();
        self.after_input(&mut st, now);
        self.kick(&mut st);
    }
}

/// The error number of a send error that says packets to that destination cannot go
/// out at all for now (no route, the path's MTU, an unusable address), as opposed to a
/// passing one (a full buffer, a firewall that drops some packets), which Homa's
/// retransmissions ride out.
fn lasting_send_error(e: &std::io::Error) -> Option<i32> {
    let errno = e.raw_os_error()?;
    [
        libc::ENETUNREACH,
        libc::EHOSTUNREACH,
        libc::ENETDOWN,
        libc::EMSGSIZE,
        libc::EADDRNOTAVAIL,
        libc::EAFNOSUPPORT,
        libc::EACCES,
    ]
    .contains(&errno)
    .then_some(errno)
}

/// What a send round ran into.
#[derive(Debug, Default)]
struct SendOutcome {
    /// An ICMP error was reported: read the error queue.
    refused: bool,
    /// Destinations the kernel refused to send to for good (see `lasting_send_error`),
    /// with the error: their client RPCs fail at once.
    unsendable: Vec<(SocketAddr, i32)>,
    /// The socket buffer is full (non-blocking senders): packets wait in `Tx::pending`.
    blocked: bool,
}

/// The outgoing-packet buffers. The State holds them while no thread sends.
pub(crate) struct Tx {
    /// Headers (UDP) or whole packets (raw IP) of the batch.
    arena: Vec<u8>,
    pkts: Vec<TxPacket>,
    /// How `pkts` go out: one datagram each, or runs of them as UDP GSO sends.
    groups: Vec<TxGroup>,
    pending: VecDeque<Pending>,
    gso: bool,
    /// The TOS last set on the UDP socket.
    cur_tos: Option<u8>,
}

impl Tx {
    /// Keep the packets of groups `from..` for later (the socket buffer is full).
    fn keep_pending(&mut self, from: usize) {
        for g in &self.groups[from..] {
            for p in &self.pkts[g.first..g.first + g.count] {
                self.pending.push_back(Pending {
                    header: self.arena[p.start..p.start + p.len].to_vec(),
                    pkt: TxPacket {
                        start: 0,
                        ..p.clone()
                    },
                });
            }
        }
        self.pkts.clear();
        self.groups.clear();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Io::Raw { fam, .. } = &self.io {
            fam.unregister(self.port);
        }
    }
}

/// Whether a due tick waits for unread input (see `Inner::after_input`): `Some(since
/// when it has waited)`, or `None` to run it now. `input_waits` is asked only when the
/// tick may still wait, as it costs a system call.
fn put_off_tick(
    deferred_since: Option<Time>,
    now: Time,
    input_waits: impl FnOnce() -> bool,
) -> Option<Time> {
    let since = deferred_since.unwrap_or(now);
    (now.nanos_since(since) < TICK_MAX_DEFER_NANOS && input_waits()).then_some(since)
}

fn earlier(a: Option<Time>, b: Option<Time>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a < b,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Cut `pkts` into send groups: runs of packets to the same destination at the same
/// priority, all of one size (the last may be shorter), become single GSO sends when
/// `gso` is on; everything else goes one datagram per group.
fn group(pkts: &[TxPacket], gso: bool, out: &mut Vec<TxGroup>) {
    out.clear();
    let mut i = 0;
    while i < pkts.len() {
        let first = &pkts[i];
        let size = first.wire_len();
        let mut j = i + 1;
        let mut total = size;
        while gso && j < pkts.len() && j - i < MAX_GSO_SEGMENTS {
            let (m, prev) = (&pkts[j], &pkts[j - 1]);
            if m.dest != first.dest
                || m.tos != first.tos
                || m.src != first.src
                || prev.wire_len() != size
                || m.wire_len() > size
                || total + m.wire_len() > MAX_GSO_BYTES
            {
                break;
            }
            total += m.wire_len();
            j += 1;
        }
        let count = j - i;
        out.push(TxGroup {
            first: i,
            count,
            segment: if count > 1 { size as u16 } else { 0 },
        });
        i = j;
    }
}

fn trace_packet(dir: &str, peer: IpAddr, bytes: &[u8], len: usize) {
    match homa_wire::PacketView::new_checked(bytes) {
        Ok(p) => tracing::trace!(
            dir,
            %peer,
            ty = p.packet_type().name(),
            sport = p.sport(),
            dport = p.dport(),
            id = p.sender_id(),
            len,
            "packet"
        ),
        Err(e) => tracing::trace!(dir, %peer, len, error = %e, "bad packet"),
    }
}

#[cfg(test)]
mod tests;
