//! Who moves packets, and when: the driver role (an application thread waiting in the
//! blocking flavour, the background thread, or the tokio driver task) and how it is handed
//! on; the timers (ticks run by whoever reads input, put off while input waits unread;
//! the background thread's timer moved instead of woken); and how a blocked driver is
//! woken (kick datagrams, the eventfd, the tokio `Notify`).

use super::rx::{Await, Step};
use super::tx::UdpPeer;
use super::{clock, Flavor, Guard, Inner, State, POISONED};
use crate::sys;
use homa_core::Time;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Fewest CPUs for which the driver busy-polls (`poll_usecs`) before sleeping.
pub(super) const MIN_CORES_TO_SPIN: usize = 4;

/// A timer tick that falls due while received packets wait unread is put off (see
/// `Inner::after_input`) and looked at again this much later...
pub(super) const TICK_RECHECK_NANOS: u64 = 200_000;

/// ...but for at most this long: under endless input the timers still run, slowed down.
pub(super) const TICK_MAX_DEFER_NANOS: u64 = 10_000_000;

/// A driving thread that returns with its own message leaves the socket undriven, rather
/// than waking another waiting thread to take over, while threads come back to wait
/// within this on average, or within what waking a thread has been measured to take if
/// that is longer (blocking flavour; see [`State::lazy_handoff`]).
pub(super) const LAZY_AWAY_NANOS: u64 = 50_000;

/// A wake-up only to run a timer tick comes this many percent of a tick after the tick is
/// due (see [`Inner::next_wake`]).
pub(super) const TICK_WAKE_SLACK_PERCENT: u64 = 90;

/// Longest the background thread sleeps when the engine has no deadline. Every deadline
/// moves its timer when it changes (commands kick, ticks retime, a socket left undriven
/// is watched), so this is only a backstop; an idle socket's engine sweeps its tables
/// about as often (every 1,024 ticks), and an idle socket wakes no more than that.
pub(super) const BG_IDLE_CHECK_NANOS: u64 = 1_000_000_000;

/// Ticks a sleeping thread's timer may fire later than [`Inner::next_wake`] asks, for a
/// timer tick or a take-over (never for the pacer), before anyone moves it (see
/// [`WakeAt`]).
pub(super) const TIMER_LATE_TICKS: u64 = 2;

/// The largest sample the moving averages `away_nanos` and `wake_nanos` take.
pub(super) const AWAY_CAP_NANOS: u64 = 10_000_000;

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
    /// Kick datagrams reach the socket. Where they do not, a waiting application thread
    /// never blocks in the receive call itself but in `ppoll`, which the socket's eventfd
    /// wakes. Cleared at bind when a first kick cannot be sent (a network namespace whose
    /// loopback interface is down), when a later one cannot (the bound address removed,
    /// the interface down), and when a thread blocked in the receive call waits out
    /// [`KICK_TIMEOUT`] with nothing received although a kick was sent to it meanwhile
    /// (a firewall that drops them): from then on, waits poll.
    pub works: AtomicBool,
    /// When the last kick was sent ([`clock`] nanoseconds; 0: never).
    pub sent_at: AtomicU64,
}

/// How long an application thread blocks in the receive call (`SO_RCVTIMEO`) before it
/// looks again at whether it was meant to wake: the bound on how long a lost kick can
/// hold a caller, and the gap between the wake-ups of a thread that waits with nothing
/// coming (one a second). Kicks that cannot arrive at all are found at bind (see
/// [`KICK_ARRIVAL`]), so this bound is paid only where they stop arriving later (a
/// firewall rule added while the socket lives), once: the first lost kick is then found
/// by the receive that timed out, and waits poll from then on.
pub(crate) const KICK_TIMEOUT: Duration = Duration::from_secs(1);

/// How long bind waits for its first kick to arrive before it takes kicks for lost (on
/// loopback it is there when the send returns, unless something dropped it). Where a
/// firewall drops them, every blocking socket's bind takes this long; a kick merely late
/// makes the socket poll, a system call more per wake-up.
pub(crate) const KICK_ARRIVAL: Duration = Duration::from_millis(20);

/// A kick sent this long before a blocked thread's receive timed out with nothing
/// received was lost, not just late.
const KICK_LATE: Duration = Duration::from_millis(10);

/// When a sleeping driver must wake (the background thread, or the tokio driver task):
/// not before `due`, when something first falls due (a wake-up before then finds nothing
/// to do); at `on_time` when its timer is set now; and a timer already set anywhere in
/// `due..=latest` is left alone.
///
/// While packets flow, the threads that read them run the timer ticks, and each tick
/// moves the next one a tick later. Moving the sleeper's timer with it cost a
/// `timerfd_settime` per tick per socket; letting it fire cost a wake-up for nothing.
/// Instead a timer may fire up to [`TIMER_LATE_TICKS`] later than asked for a tick or a
/// take-over: one moved later is moved to the end of that slack, and then stays good for
/// the ticks that follow, so it moves once every few ticks. A tick the sleeper runs
/// itself (traffic stopped) is at most that late, once: after that the sleeper runs
/// them, and sets its timer on time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WakeAt {
    pub(crate) due: Time,
    pub(crate) on_time: Time,
    pub(crate) latest: Time,
}

impl WakeAt {
    /// A deadline with no slack (a drain's; the tokio driver's retry of a full send
    /// buffer).
    pub(crate) fn exactly(t: Time) -> WakeAt {
        WakeAt {
            due: t,
            on_time: t,
            latest: t,
        }
    }

    /// Due at `due`, asked for at `on_time`, acceptable up to `late_nanos` after that.
    pub(crate) fn with_slack(due: Time, on_time: Time, late_nanos: u64) -> WakeAt {
        WakeAt {
            due,
            on_time,
            latest: on_time.plus_nanos(late_nanos),
        }
    }

    /// The wake-up that serves both.
    pub(crate) fn min(self, o: WakeAt) -> WakeAt {
        WakeAt {
            due: self.due.min(o.due),
            on_time: self.on_time.min(o.on_time),
            latest: self.latest.min(o.latest),
        }
    }

    /// Where to set a timer now set at `armed` (`None`: not set, or it fired): `None` to
    /// leave it. One that would fire before anything is due moves to the end of the
    /// slack; one too late (or none) is set on time.
    pub(crate) fn rearm(&self, armed: Option<Time>) -> Option<Time> {
        match armed {
            Some(a) if self.due <= a && a <= self.latest => None,
            Some(a) if a < self.due => Some(self.latest),
            _ => Some(self.on_time),
        }
    }
}

/// Whether a due tick waits for unread input (see `Inner::after_input`): `Some(since
/// when it has waited)`, or `None` to run it now. `input_waits` is asked only when the
/// tick may still wait, as it costs a system call.
pub(super) fn put_off_tick(
    deferred_since: Option<Time>,
    now: Time,
    input_waits: impl FnOnce() -> bool,
) -> Option<Time> {
    let since = deferred_since.unwrap_or(now);
    (now.nanos_since(since) < TICK_MAX_DEFER_NANOS && input_waits()).then_some(since)
}

pub(super) fn earlier(a: Option<Time>, b: Option<Time>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a < b,
        (Some(_), None) => true,
        _ => false,
    }
}

impl State {
    /// A thread came back to wait `nanos` after it last got a message.
    pub(crate) fn note_away(&mut self, nanos: u64) {
        self.away_nanos = (self.away_nanos * 7 + nanos.min(AWAY_CAP_NANOS)) / 8;
    }

    /// A thread handed an outcome (or the driver role) ran `nanos` after it was woken
    /// for it.
    pub(crate) fn note_wake(&mut self, nanos: u64) {
        self.wake_nanos = (self.wake_nanos * 7 + nanos.min(AWAY_CAP_NANOS)) / 8;
    }

    /// Whether the driver keeps a request for itself and, when it returns with its own
    /// message, leaves the socket undriven instead of waking another waiting thread to
    /// drive: threads come back quickly, so the next one to wait drives, and a wake-up
    /// (tens of microseconds of latency on a small, idle machine) is saved on each RPC.
    /// When threads stay away longer (slow handlers), waking another is worth it, so
    /// that requests arriving meanwhile are read at once. "Quickly" is
    /// [`LAZY_AWAY_NANOS`], or what waking a waiting thread has taken here if that is
    /// longer: handing a message to another thread only pays when the driver would stay
    /// away longer than that thread takes to wake. Measured on the testbed (2 vCPUs, W4
    /// at 1 Gbps), a server thread answering its batch stayed away ~70-100 us and a wake-up
    /// took as long: with the fixed 50 us, every request went to the other thread, a
    /// futex wake and park each. Either way the background thread reads a socket left
    /// undriven for a tick.
    pub(crate) fn lazy_handoff(&self) -> bool {
        self.away_nanos <= LAZY_AWAY_NANOS.max(self.wake_nanos)
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
            if let Some(w) = self.waiters[k].as_mut() {
                w.woken_at = Some(clock());
                self.wakes.push(w.wake.clone());
            }
        }
    }
}

impl Inner {
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
        self.after_input_hinted(st, now, None);
    }

    /// [`after_input`](Self::after_input) for a caller that knows whether input waits
    /// unread (`Some`: the tokio driver, from its reactor), so that a due tick need not
    /// ask the kernel.
    pub(crate) fn after_input_hinted(
        &self,
        st: &mut Guard<'_>,
        now: Time,
        input_waits: Option<bool>,
    ) {
        st.last_now = st.last_now.max(now);
        for u in self.unreachable.take() {
            // Raw IP: the peer answered through ICMP that it cannot serve them.
            st.ep.fail_client_rpcs_to(u.ip, u.port, u.why);
        }
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
        self.tick(st, now, input_waits);
        self.deliver(st, now);
        if st.drain.is_some() {
            // After the tick and the input: either may have ended what the drain waits
            // for (the last ACK, the last RPC timed out), or its deadline passed.
            self.check_drain(st, now);
        }
    }

    /// Run a tick that fell due while an application thread drove the socket, which
    /// holds ticks back until it is done delivering (see
    /// [`ingest_batch`](Self::ingest_batch)). Call before the thread waits again. True if
    /// a tick was due (it may have completed RPCs: look for outcomes again).
    pub(crate) fn tick_if_due(&self, st: &mut Guard<'_>) -> bool {
        if st.ep.next_tick().is_none() {
            return false;
        }
        self.tick_if_due_at(st, clock())
    }

    /// [`tick_if_due`](Self::tick_if_due) at `now`.
    pub(super) fn tick_if_due_at(&self, st: &mut Guard<'_>, now: Time) -> bool {
        let Some(t) = st.ep.next_tick() else {
            return false;
        };
        if now < t {
            return false;
        }
        self.after_input(st, now);
        true
    }

    /// The timer part of [`after_input`](Self::after_input); `hint` as in
    /// [`after_input_hinted`](Self::after_input_hinted).
    pub(super) fn tick(&self, st: &mut Guard<'_>, now: Time, hint: Option<bool>) {
        if st.tick_recheck_at.is_some_and(|r| now < r) {
            // Put off until then (asking the kernel whether input waits costs a call).
            return;
        }
        if st.ep.next_tick().is_some_and(|t| t <= now) {
            // Nothing is left unread when a thread waits in a receive (it found the queue
            // empty), and nothing that matters when a receive found it empty less than a
            // tick ago: what waits now arrived within this tick, so counting the tick as
            // silence errs by no more than the tick's own granularity (at worst a RESEND
            // goes a tick early). No need to ask the kernel then. A receiver that falls
            // behind never finds its queue empty, and a starved one finds it long ago: their
            // ticks still ask, and wait for the input. Asked on every tick, that was one
            // `ioctl` per tick per socket; within 200 us of a drain, still 0.56 per RPC on the
            // testbed (W4, 1 Gbps), where each host sees a few RPCs per tick.
            let known_empty = st.blocked != Blocked::None
                || st
                    .drained_at
                    .is_some_and(|t| now.nanos_since(t) < self.tick_nanos);
            let input_waits =
                || !known_empty && hint.unwrap_or_else(|| sys::input_queued(self.tx_fd()));
            match put_off_tick(st.tick_deferred_since, now, input_waits) {
                Some(since) => {
                    st.tick_deferred_since = Some(since);
                    st.tick_recheck_at = Some(now.plus_nanos(TICK_RECHECK_NANOS));
                }
                None => {
                    st.tick_deferred_since = None;
                    st.tick_recheck_at = None;
                    st.ep.handle_timeout(now);
                    self.retime_bg(st, now);
                }
            }
        }
    }

    /// Route what the engine delivered and send what it queued.
    pub(super) fn deliver(&self, st: &mut Guard<'_>, now: Time) {
        // Deliver first: a long send (made with the lock released) then does not hold
        // back the messages that this input completed. Then what sending found (a
        // refused destination fails its RPCs).
        st.route();
        self.flush(st, now);
        st.route();
    }

    /// When [`after_input`](Self::after_input) must next run: the engine's next tick (or
    /// the recheck of a put-off one), the pacer's deadline plus half its allowance (see
    /// [`pacer_burst_nanos`](Self::pacer_burst_nanos)), or a graceful shutdown's
    /// deadline, whichever is first.
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
        self.wake_at(st).map(|w| w.on_time)
    }

    /// [`next_wake`](Self::next_wake) with the slack a timer already set may keep (see
    /// [`WakeAt`]).
    pub(crate) fn wake_at(&self, st: &State) -> Option<WakeAt> {
        let tick = st.ep.next_tick().map(|t| {
            let recheck = |x: Time| st.tick_recheck_at.map_or(x, |r| x.max(r));
            WakeAt::with_slack(recheck(t), recheck(self.tick_wake(t)), self.timer_late())
        });
        let pacer = st
            .ep
            .pacer_deadline()
            .filter(|_| st.tx.is_some() && !st.tx_has_pending)
            .map(|d| {
                let at = d.plus_nanos(self.pacer_burst_nanos(st));
                WakeAt {
                    due: d,
                    on_time: at,
                    latest: at,
                }
            });
        let drain = st.drain_deadline().map(WakeAt::exactly);
        [tick, pacer, drain]
            .into_iter()
            .flatten()
            .reduce(WakeAt::min)
    }

    /// How long after the pacer lets the next packet go a driver wakes to send: half its
    /// NIC backlog allowance. The pacer then releases half an allowance per wake-up, as
    /// one batch (one GSO send per run of packets), instead of waking as each packet's
    /// time comes (a wake-up per packet: a 9000-byte packet takes 7 us at 10 Gbps). The
    /// NIC queue it keeps stays between half the allowance and the allowance.
    pub(crate) fn pacer_burst_nanos(&self, st: &State) -> u64 {
        st.ep.config().max_nic_est_backlog_usecs as u64 * 1_000 / 2
    }

    /// How late a timer may fire for a tick or a take-over (see [`WakeAt`]).
    pub(super) fn timer_late(&self) -> u64 {
        self.tick_nanos * TIMER_LATE_TICKS
    }

    /// When to wake only to run the tick due at `t` (see [`next_wake`](Self::next_wake)).
    pub(super) fn tick_wake(&self, t: Time) -> Time {
        t.plus_nanos(self.tick_nanos / 100 * TICK_WAKE_SLACK_PERCENT)
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
        // A caller that takes a batch has one coming only while several RPCs are under
        // way (one RPC at a time leaves one datagram per receive: the cheaper single
        // receive is kept for it).
        let batch = batch && st.ep.live_rpcs() > 1;
        st.blocked = who;
        st.sleep_until = Some(deadline);
        drop(st);

        let mut rx = self.rx.lock().unwrap_or_else(|_| panic!("{POISONED}"));
        let kicks = self
            .kick
            .as_ref()
            .is_some_and(|k| k.works.load(Ordering::Relaxed));
        let wait = match (who, deadline) {
            // An application thread without a deadline blocks in the receive call: one
            // system call per wake-up, like a plain UDP receive (a kick datagram wakes it).
            (Blocked::App, None) if kicks => Await::Block,
            (Blocked::App, deadline) => Await::Poll {
                deadline,
                wake: self.app_wake.as_ref(),
            },
            (_, deadline) => Await::Poll {
                deadline,
                wake: self.bg_wake.as_ref(),
            },
        };
        // The last kick before blocking (no clock read on this path): a later one that
        // never arrives is found when the receive times out.
        let kick_before = match wait {
            Await::Block => self
                .kick
                .as_ref()
                .map(|k| k.sent_at.load(Ordering::Relaxed)),
            Await::Poll { .. } => None,
        };
        let (n, err) = self.receive(fd, &mut rx, Step { more, batch, spin }, wait);
        if let (Some(before), 0) = (kick_before, n) {
            self.check_kicks(before);
        }
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
        match self.flavor {
            Flavor::Blocking => {
                if st.blocked == Blocked::Background {
                    let next = self.next_wake(st);
                    // The background thread sleeps in ppoll until its old deadline.
                    if earlier(next, st.sleep_until.flatten()) {
                        st.sleep_until = Some(next);
                        self.wake_bg(st);
                    }
                } else {
                    // It runs the timers: let it wait for the new deadline instead.
                    self.retime_bg(st, st.last_now);
                }
            }
            #[cfg(feature = "tokio")]
            Flavor::Tokio => {
                // Packets wait for room in the send buffer: the driver must see them, to
                // watch for it.
                if st.tx_has_pending && !st.tx_pending_seen {
                    let wake = self.wake_at(st);
                    st.sleep_until = Some(wake.map(|w| w.on_time));
                    self.counts.woke(1);
                    self.notify.notify_one();
                    return;
                }
                // The driver task sleeps until its timer (see `WakeAt`): if that is too
                // late now, move the timer earlier (one system call, where waking the
                // driver to move it cost a wake-up and the same call).
                let armed = st.drv_armed;
                let sooner = self
                    .wake_at(st)
                    .and_then(|w| w.rearm(armed))
                    .filter(|&at| earlier(Some(at), armed));
                if let Some(at) = sooner {
                    st.sleep_until = Some(Some(at));
                    self.arm_driver(st, Some(at));
                }
            }
        }
    }

    /// Make sure the background thread looks soon enough at a socket left undriven (it
    /// takes the driver role a tick after, see [`bg_deadline`](Self::bg_deadline)): it may
    /// be sleeping until a much later deadline. One it will wake for within
    /// [`TIMER_LATE_TICKS`] of that anyway is left alone: a thread usually comes back to
    /// drive long before, which makes an earlier wake-up a wasted one.
    ///
    /// Every other deadline moved the timer when it changed (commands and input kick,
    /// ticks retime), so only the take-over is new here: a timer set no later than the
    /// take-over's slack ends is left without working out the rest (a lone RPC passes
    /// here once per wait on each side).
    pub(crate) fn watch_undriven(&self, st: &mut State) {
        if st.undriven_since.is_none() {
            return;
        }
        let latest = self.take_over_wake(st).map(|w| w.latest);
        if st.bg_wake_at.zip(latest).is_some_and(|(at, l)| at <= l) {
            return;
        }
        self.retime_bg(st, st.last_now);
    }

    /// A thread drives again: the background thread's timer, if set for a take-over
    /// that is no longer needed, is put off (see [`retime_bg`](Self::retime_bg)).
    ///
    /// Without the take-over nothing falls due sooner, so the timer can only have become
    /// early: it is not while it is set no sooner than the first thing due (or nothing is
    /// due at all), and is then left as it is.
    pub(crate) fn unwatch_undriven(&self, st: &mut State) {
        if let Some(at) = st.bg_wake_at {
            if self.wake_at(st).is_none_or(|w| at >= w.due) {
                return;
            }
        }
        self.retime_bg(st, st.last_now);
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
                .map_or(Time(0), |t| t.plus_nanos(self.tick_nanos))
        })
    }

    /// [`take_over_at`](Self::take_over_at) with its slack (see [`WakeAt`]).
    fn take_over_wake(&self, st: &State) -> Option<WakeAt> {
        self.take_over_at(st)
            .map(|t| WakeAt::with_slack(t, self.tick_wake(t), self.timer_late()))
    }

    /// When the background thread (blocking flavour) must next look at the socket: for
    /// the timers ([`next_wake`](Self::next_wake)), to [take over](Self::take_over_at),
    /// or after `BG_IDLE_CHECK_NANOS` at the latest.
    pub(crate) fn bg_deadline(&self, st: &State, now: Time) -> Time {
        self.bg_wake(st, now).on_time
    }

    /// [`bg_deadline`](Self::bg_deadline) with its slack (see [`WakeAt`]).
    pub(crate) fn bg_wake(&self, st: &State, now: Time) -> WakeAt {
        let take_over = self.take_over_wake(st);
        let idle = now.plus_nanos(BG_IDLE_CHECK_NANOS);
        let wake = match (self.wake_at(st), take_over) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match wake {
            Some(w) => WakeAt {
                latest: w.latest.min(idle),
                ..w
            },
            // Nothing is due: any time up to the idle check will do.
            None => WakeAt {
                due: Time::ZERO,
                on_time: idle,
                latest: idle,
            },
        }
    }

    /// Set the sleeping background thread's timer to `at` (earlier or later).
    pub(super) fn arm_bg(&self, st: &mut State, at: Time) {
        st.bg_wake_at = Some(at);
        if let Some(t) = &self.bg_timer {
            self.counts.timer_set();
            t.set(Some(at.as_nanos()));
        }
    }

    /// Set the tokio driver task's timer to `at` (`None`: disarm it).
    #[cfg(feature = "tokio")]
    pub(crate) fn arm_driver(&self, st: &mut State, at: Option<Time>) {
        st.drv_armed = at;
        if let Some(t) = &self.drv_timer {
            self.counts.timer_set();
            t.set(at.map(Time::as_nanos));
        }
    }

    /// Deadlines moved (a tick ran on another thread, a thread left the socket undriven
    /// or came back to drive it, a command queued packets): move the sleeping background
    /// thread's timer, if it no longer fits (see [`WakeAt`]). A tick run by a reader then
    /// costs no system call, where moving the timer at every tick cost one.
    pub(crate) fn retime_bg(&self, st: &mut State, now: Time) {
        if st.bg_wake_at.is_some() {
            if let Some(at) = self.bg_wake(st, now).rearm(st.bg_wake_at) {
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

    /// Wake the background thread from its `ppoll` on the socket: by its eventfd when
    /// the socket is connected (a kick datagram would disconnect it), else by a kick.
    pub(crate) fn wake_bg(&self, st: &mut State) {
        match (&self.bg_wake, st.udp_peer) {
            (Some(w), UdpPeer::Connected(_)) => {
                self.counts.woke(1);
                w.notify();
            }
            _ => st.kick_pending = true,
        }
    }

    /// Wake the thread blocked on the UDP socket (if any) with an empty datagram from our
    /// own kick socket, which the driver recognises by its source and drops.
    pub(crate) fn send_kick(&self) {
        self.counts.woke(1);
        if let Some(k) = self
            .kick
            .as_ref()
            .filter(|k| k.works.load(Ordering::Relaxed))
        {
            k.sent_at.store(clock().as_nanos(), Ordering::Relaxed);
            if let Err(e) = k.sock.send_to(&[], k.to) {
                // The thread blocked now wakes at its receive timeout; later ones poll.
                k.works.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, to = %k.to, "wake-up datagrams cannot be sent; waiting threads poll instead");
            }
        }
        // A thread waiting in `ppoll` (with a deadline, or where kicks cannot be sent)
        // wakes by its eventfd. Kicks are rare (a hand-over, a timer's outcome, shutdown):
        // the extra write costs little, and a wake-up that finds nothing to do is one
        // more turn of its loop.
        for w in [&self.app_wake, &self.bg_wake].into_iter().flatten() {
            w.notify();
        }
    }

    /// An application thread's blocking receive ended with nothing; `before` was the
    /// last kick's time when it blocked. If a kick was sent since, long enough ago to have
    /// arrived, kicks do not reach this socket (a firewall drops them), and waits poll
    /// from now on.
    fn check_kicks(&self, before: u64) {
        let Some(k) = self.kick.as_ref() else { return };
        let sent = k.sent_at.load(Ordering::Relaxed);
        if sent != before && clock().nanos_since(Time(sent)) >= KICK_LATE.as_nanos() as u64 {
            k.works.store(false, Ordering::Relaxed);
            tracing::warn!(to = %k.to, "wake-up datagrams do not arrive (a firewall?); waiting threads poll instead");
        }
    }

    /// The tokio driver, before it waits: whether packets wait for socket buffer space
    /// (it then waits for room as well), noting that it knows.
    #[cfg(feature = "tokio")]
    pub(crate) fn see_pending_tx(st: &mut State) -> bool {
        st.tx_pending_seen = st.tx_has_pending;
        st.tx_has_pending
    }
}
