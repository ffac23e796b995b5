//! One Homa socket, as every flavour shares it: its engine, its kernel socket and the
//! code that moves packets and messages between them and the application. The blocking
//! and tokio flavours (`socket.rs`, `aio.rs`) differ only in who waits, and where.
//!
//! A message's way, one batch at a time, one file a step:
//!
//! 1. [`rx`]: one receive call (`recvmmsg`) fills the receive slots with what the kernel
//!    has queued; GRO aggregates are split into packets and the batch is fed to the
//!    engine, which answers it (GRANTs once per batch, RESENDs...) and completes messages.
//! 2. [`deliver`]: each completed message or failed RPC goes to exactly one caller: the
//!    one waiting for it, the longest-waiting `recv`, or a queue. A driving caller that
//!    takes a batch keeps what its receive brought. Callers made ready are woken once the
//!    lock is released.
//! 3. The application handles its messages, then ([`commands`]) sends requests and
//!    replies and hands the messages back. Each command goes to the engine under the
//!    lock; what it queued is sent at once (blocking flavour); on the tokio flavour by
//!    the calling task when the command comes alone, else by the driver task after the
//!    tasks that are ready now; or when a [`Batch`](crate::Batch) is done.
//! 4. [`tx`]: what the engine has to send is gathered into one batch and sent with one
//!    `sendmsg`/`sendmmsg` (runs of same-size packets to one peer as one UDP GSO send).
//!
//! [`drive`] decides who runs those steps, and when: an application thread waiting in
//! the blocking flavour (which reads the socket itself, so the packet that completes its
//! RPC is read by the thread that returns it), the background thread, or the tokio
//! driver task; and it runs the engine's timers.

use crate::options::Transport;
use crate::raw::{self, RawFamily};
use crate::sys;
use homa_core::{Endpoint, RpcId, Time};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

mod commands;
mod counts;
mod deliver;
mod drain;
mod drive;
mod room;
mod rx;
mod scopes;
#[cfg(test)]
mod tests;
mod tx;

pub(crate) use commands::Push;
use deliver::{IdSlot, Waiter};
pub(crate) use deliver::{Ready, Taken, Wake, Want};
#[cfg(feature = "tokio")]
pub(crate) use drive::WakeAt;
use drive::MIN_CORES_TO_SPIN;
pub(crate) use drive::{Blocked, Driver, Kick, WaitHow, KICK_ARRIVAL, KICK_TIMEOUT};
pub(crate) use room::RoomQueue;
pub(crate) use rx::RxBufs;
use tx::{Pending, Tx, UdpPeer};

/// The engine's clock: CLOCK_MONOTONIC in nanoseconds.
pub(crate) fn clock() -> Time {
    Time(sys::monotonic_nanos())
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
    /// The tokio driver task's timer (tokio flavour), armed at `State::drv_armed`: by the
    /// driver, or moved earlier by [`kick`](Self::kick) from any task, which then need
    /// not wake the driver to move it.
    #[cfg(feature = "tokio")]
    pub(crate) drv_timer: Option<sys::TimerFd>,
    /// Wakes the background thread from its `ppoll` on the socket without a kick
    /// datagram, which a connected socket would not receive (blocking flavour).
    bg_wake: Option<sys::EventFd>,
    /// Wakes an application thread waiting in `ppoll` on the socket (blocking flavour;
    /// see [`Kick::works`]).
    app_wake: Option<sys::EventFd>,
    #[cfg(feature = "tokio")]
    pub(crate) notify: tokio::sync::Notify,
    /// Busy-poll time of an application thread driving (`poll_usecs`).
    pub(crate) spin: Duration,
    /// The engine's tick, nanoseconds (read on every wake-up computation: kept as
    /// plain nanoseconds rather than a `Duration`).
    pub(crate) tick_nanos: u64,
    /// UDP GRO is on for the socket. Changed only by the driver, with `rx` locked, so a
    /// receive made under that lock knows whether an aggregate may come.
    gro_on: AtomicBool,
    /// The receive slots' size (see `RxBufs::fit`), for `info`.
    rx_slot_bytes: AtomicUsize,
    /// The UDP socket is bound to a wildcard address and the kernel says which local
    /// address each datagram was sent to (`IP_PKTINFO`): the engine answers from there.
    pub(crate) arrival_addrs: bool,
    /// System calls and wake-ups, for `info` (see [`counts`]).
    pub(crate) counts: counts::Counters,
    /// Raw IP: peers that said, through ICMP, that RPCs to them cannot be served, noted
    /// by whichever thread read the shared socket's error queue and acted on at this
    /// socket's next input or tick (see `RawFamily::drain_errors`).
    pub(crate) unreachable: raw::Noted,
}

pub(crate) struct InnerParts {
    pub ep: Endpoint,
    pub io: Io,
    pub local: SocketAddr,
    pub transport: Transport,
    pub flavor: Flavor,
    pub gso: bool,
    /// UDP GRO is wanted and the kernel has it (turned on later, see `Inner::note_bulk`).
    pub gro: bool,
    /// The kernel says where each datagram arrived (see [`Inner::arrival_addrs`]).
    pub arrival_addrs: bool,
    pub kick: Option<Kick>,
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
        let tick_nanos = p.ep.config().tick_nanos;
        // Only a socket that hears from no one but the peers it sends to (see `UdpPeer`):
        // not a server, and not one that takes one-way messages from anyone.
        let port = p.local.port();
        let connectable =
            matches!(p.io, Io::Udp { .. }) && !p.ep.is_server(port) && !p.ep.takes_one_way(port);
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
            app_wake: match p.flavor {
                Flavor::Blocking => Some(sys::EventFd::new()?),
                #[cfg(feature = "tokio")]
                Flavor::Tokio => None,
            },
            #[cfg(feature = "tokio")]
            drv_timer: match p.flavor {
                Flavor::Blocking => None,
                Flavor::Tokio => Some(sys::TimerFd::new(true)?),
            },
            #[cfg(feature = "tokio")]
            notify: tokio::sync::Notify::new(),
            spin,
            tick_nanos,
            gro_on: AtomicBool::new(false),
            rx_slot_bytes: AtomicUsize::new(crate::sys::RX_SLOT),
            arrival_addrs: p.arrival_addrs,
            counts: counts::Counters::default(),
            unreachable: raw::Noted::default(),
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

    fn tx_fd(&self) -> RawFd {
        match &self.io {
            Io::Udp { sock } => sock.as_raw_fd(),
            Io::Raw { fam, .. } => fam.fd(),
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
        let drain = st.drain.take();
        if drain.is_some() {
            // Counted before the engine lets go of them: what every drainer reports.
            st.drain_result = Some(st.unfinished(self.port));
        }
        st.ep.close(self.port);
        let now = clock();
        self.flush(&mut st, now);
        st.route();
        st.discard_queued();
        st.wake_all();
        if let Some(d) = drain {
            st.wakes.extend(d.into_waiters());
        }
        if st.blocked != Blocked::None {
            st.kick_pending = true;
        }
        if let Some(t) = &self.bg_timer {
            t.set(Some(1)); // long past: fires at once
        }
        st.room_shutdown = true;
        #[cfg(feature = "tokio")]
        self.notify.notify_one();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Io::Raw { fam, .. } = &self.io {
            fam.unregister(self.port);
            // (This socket's own reference is the one user left, if the last.)
            fam.retire_if_idle(1);
        }
        // What it counted stays in its port's series.
        #[cfg(feature = "metrics")]
        if let Some(st) = self.lock_unless_poisoned() {
            let m = st.ep.metrics();
            drop(st);
            crate::metrics::retire(self.port, &m);
        }
    }
}

/// Everything behind the socket's lock: the engine, and what each room of this module
/// keeps about it (grouped below by the file that owns it).
pub(crate) struct State {
    pub(crate) ep: Endpoint,
    pub(crate) shutdown: bool,
    /// A graceful shutdown in progress (see `drain.rs`), and what the shutdown that
    /// ended one cut off.
    drain: Option<drain::Drain>,
    drain_result: Option<usize>,
    /// The clock at the last received batch (a recent time without a clock read).
    pub(crate) last_now: Time,
    /// When a receive last took everything the socket had queued (fewer datagrams than
    /// it had room for): a tick due soon after need not ask whether input waits.
    pub(crate) drained_at: Option<Time>,

    // deliver.rs: outcomes on their way to callers.
    /// Outcomes for `recv`, oldest first.
    ready: VecDeque<Ready>,
    /// Client RPCs `recv_id` may ask for: outstanding, waited for, or with an outcome
    /// only `recv_id` returns. One map, so that an RPC's life costs one lookup per step.
    ids: FxHashMap<RpcId, IdSlot>,
    /// Callers waiting, by key (`None`: a free key, listed in `free_waiters`).
    waiters: Vec<Option<Waiter>>,
    free_waiters: Vec<usize>,
    /// The list of a batch waiter gone, empty, kept for the next one: a batch of 64
    /// outcomes would otherwise grow a fresh list five times per wait.
    spare_more: Vec<Ready>,
    /// Keys of the callers waiting for any outcome (or any request), longest-waiting first.
    any_waiters: VecDeque<usize>,
    /// Callers made ready, woken once the lock is released.
    wakes: Vec<Wake>,

    // room.rs: callers waiting for outgoing buffer room.
    /// Callers waiting for outgoing buffer room to start a request or one-way message
    /// (tasks and threads: `call` and `deliver` of both flavours). Registered under the lock in the same step that found no room,
    /// so no room given back between that step and the wait goes unseen; offered what
    /// is free whenever some is given back, as the lock is released.
    pub(crate) room: room::RoomQueue,
    /// Callers waiting for room in the budget for responses (`reply_when_room`, both
    /// flavours), registered the same way. Responses end inside the engine (acknowledged,
    /// or given up), which tells no one, so while any caller waits, each release of the
    /// lock looks whether the room free has grown since it last looked.
    pub(crate) reply_room: room::RoomQueue,
    /// The response room free when `reply_room` was last offered (or a caller began to
    /// wait): more than that means some was given back.
    pub(crate) reply_room_seen: u64,
    /// Wake every waiter for room as the lock is released (the socket shut down).
    room_shutdown: bool,

    // drive.rs: who drives, and the timers.
    pub(crate) driver: Driver,
    /// The background thread should hand the driver role to an application thread.
    pub(crate) handoff_wanted: bool,
    /// The deadline a blocked driver sleeps until (`Some(None)`: no deadline); `None` if
    /// no driver is blocked. Read by the blocking flavour's `kick` only; the tokio driver
    /// keeps it too, for the same meaning.
    pub(crate) sleep_until: Option<Option<Time>>,
    /// Who is blocked waiting on the UDP socket (blocking flavour).
    pub(crate) blocked: Blocked,
    /// Send a kick datagram once the lock is released (see `Inner::send_kick`).
    pub(crate) kick_pending: bool,
    /// Since when no thread has driven the socket (blocking flavour).
    pub(crate) undriven_since: Option<Time>,
    /// How long a thread that got a message stays away before it waits again, per
    /// message it took: a moving average, nanoseconds (blocking flavour).
    away_nanos: u64,
    /// How long a thread woken for an outcome or the driver role took to run: a moving
    /// average, nanoseconds (blocking flavour).
    wake_nanos: u64,
    /// When the sleeping background thread wakes (blocking flavour); `None` while it is
    /// awake.
    pub(crate) bg_wake_at: Option<Time>,
    /// Since when a due timer tick has been put off because input waited unread.
    tick_deferred_since: Option<Time>,
    /// When to look at a put-off tick again.
    tick_recheck_at: Option<Time>,
    /// The tokio driver task was notified to send what commands queued, and has not run
    /// since.
    #[cfg(feature = "tokio")]
    pub(crate) driver_woken: bool,
    /// When a command last sent its own packets on the tokio flavour (see
    /// `Inner::after_command`).
    #[cfg(feature = "tokio")]
    pub(crate) sent_inline_at: Time,
    /// Where the tokio driver task's timer (`Inner::drv_timer`) is set; `None` if not
    /// set or fired.
    #[cfg(feature = "tokio")]
    pub(crate) drv_armed: Option<Time>,

    // tx.rs: packets on their way out.
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
    /// Sends that found the socket buffer full (see [`SocketInfo::send_buffer_full`](crate::SocketInfo::send_buffer_full)).
    send_buffer_full: u64,
    /// GSO still in use.
    gso_on: bool,
    max_packet: usize,
    /// Whether the UDP socket is connected to its one peer (see [`UdpPeer`]).
    udp_peer: UdpPeer,
    /// A client RPC to the connected peer timed out: disconnect before the next send
    /// (see [`Inner::settle_peer`]).
    peer_timed_out: bool,
    /// Link-local peers' interfaces, for sending to them from a wildcard socket.
    scopes: scopes::LinkScopes,

    // rx.rs
    /// A request came to this socket, which takes none, and the warning was logged.
    warned_not_server: bool,
}

impl State {
    pub(crate) fn new(ep: Endpoint, gso: bool) -> State {
        let max_packet = ep.max_packet_len();
        State {
            ep,
            shutdown: false,
            drain: None,
            drain_result: None,
            driver: Driver::None,
            handoff_wanted: false,
            sleep_until: None,
            blocked: Blocked::None,
            kick_pending: false,
            undriven_since: None,
            away_nanos: 0,
            wake_nanos: drive::LAZY_AWAY_NANOS,
            last_now: clock(),
            drained_at: None,
            bg_wake_at: None,
            tick_deferred_since: None,
            tick_recheck_at: None,
            ready: VecDeque::new(),
            ids: FxHashMap::default(),
            waiters: Vec::new(),
            free_waiters: Vec::new(),
            spare_more: Vec::new(),
            any_waiters: VecDeque::new(),
            wakes: Vec::new(),
            room: room::RoomQueue::default(),
            reply_room: room::RoomQueue::default(),
            reply_room_seen: 0,
            room_shutdown: false,
            tx: Some(Box::new(Tx::new(max_packet, gso))),
            tx_again: false,
            urgent_left: Vec::new(),
            send_buffer_full: 0,
            tx_has_pending: false,
            #[cfg(feature = "tokio")]
            tx_pending_seen: false,
            gso_on: gso,
            max_packet,
            udp_peer: UdpPeer::Never,
            peer_timed_out: false,
            scopes: scopes::LinkScopes::default(),
            warned_not_server: false,
            #[cfg(feature = "tokio")]
            driver_woken: false,
            #[cfg(feature = "tokio")]
            sent_inline_at: Time::ZERO,
            #[cfg(feature = "tokio")]
            drv_armed: None,
        }
    }
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
            if g.wakes.is_empty()
                && !g.kick_pending
                && !g.room.check_due()
                && !g.room_shutdown
                && !g.reply_room.waiting()
            {
                return;
            }
            release(self.inner, g);
        }
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

/// Unlock `g`, then wake whom it made ready (and kick a thread blocked on the socket).
fn release(inner: &Inner, mut g: MutexGuard<'_, State>) {
    let wakes = g.take_wakes();
    let kick = std::mem::take(&mut g.kick_pending);
    // Room given back goes to the waiters it fits (see `room`).
    let mut room_wakes = Vec::new();
    if std::mem::take(&mut g.room_shutdown) {
        g.room.drain(&mut room_wakes);
        g.reply_room.drain(&mut room_wakes);
    } else {
        if g.room.check_due() {
            let free = g.ep.request_room();
            g.room.offer(free, &mut room_wakes);
        }
        if g.reply_room.waiting() {
            let free = g.ep.response_room();
            if free > g.reply_room_seen || g.reply_room.check_due() {
                g.reply_room.offer(free, &mut room_wakes);
            }
            g.reply_room_seen = free;
        }
    }
    inner.counts.woke(wakes.len() + room_wakes.len());
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
    for w in room_wakes {
        w.wake();
    }
}

/// Why a socket can no longer be used after a panic under its lock.
const POISONED: &str = "homa: a thread panicked while updating this socket's state, which \
    may be half-updated; the socket can no longer be used (drop it and open another)";

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
