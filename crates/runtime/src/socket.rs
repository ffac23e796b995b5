//! The blocking flavour.
//!
//! **Who drives.** A thread blocked in [`Socket::recv`], [`Socket::recv_id`] or
//! [`Socket::call`] reads the UDP socket itself: it blocks in the receive call
//! (`recvfrom`, `recvmsg` or `recvmmsg`: one system call per wake-up, as a plain UDP
//! receive does; on machines with 4 CPUs or more it busy-polls for `poll_usecs` first; it
//! waits in `ppoll` instead only with a deadline, or where the wake-up datagrams other
//! threads send it do not arrive), feeds the engine,
//! sends what the engine answers, and hands each delivered message to the caller it
//! belongs to. So on the fast path the packet that completes an RPC is read by the very
//! thread that returns it: no thread hop. Only one thread drives at a time; others sleep
//! until their message is handed to them (or the driver role is). While the
//! application's threads come back to wait within ~50 us of getting a message (quick
//! handlers), the driver keeps a request it reads for itself and, leaving with it, wakes
//! no one: the next thread to wait drives. That saves a wake-up per RPC. When they stay
//! away longer, each request goes to the longest-waiting thread and the driver role
//! passes to a sleeping thread at once, so requests are read while handlers run. Sends
//! happen on the caller's thread; large batches are sent with the socket's lock
//! released.
//!
//! A background thread per socket runs the engine's timers (1 ms ticks) and the pacer's
//! deadlines, and reads the socket when no application thread has for a tick, so an idle
//! server still answers RESENDs and NEED_ACKs and acks flow. A thread that reads input
//! runs a due tick itself, once it has delivered what it read and comes back to wait, and
//! moves the background thread's timer (a `timerfd`) to the next one, so while packets
//! flow the background thread rarely wakes. When an application thread starts waiting
//! while the background thread reads, the background thread hands the role over. A thread blocked in `recvmsg` is woken, when it must be (shutdown, or its
//! outcome produced by a timer or another thread), by an empty datagram from the
//! socket's own kick socket, which the driver recognises and drops. Bind sends one and
//! checks that it arrives. Should such a datagram be lost (loopback down, a firewall that
//! drops it, either from the start or later), the socket's waiting threads sleep in
//! `ppoll` on the socket and an `eventfd` instead, from bind on, or from when the
//! receive's own timeout (`SO_RCVTIMEO`, 1 s) woke a thread that missed one. A thread
//! that waits with nothing coming so wakes once a second, and so does an idle
//! socket's background thread.
//!
//! In raw-IP mode a process-wide reader thread receives for every socket (the raw socket
//! is shared), and the background thread runs only the timers.

use crate::bind;
use crate::error::{CallError, RecvError, SendError};
use crate::inner::{clock, Driver, Flavor, Guard, Inner, Ready, Taken, WaitHow, Wake, Want};
use crate::message::Message;
use crate::options::Options;
use crate::payload::Payload;
use crate::sys;
use crate::BindError;
use homa_core::{RpcId, Time};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::thread::JoinHandle;
use std::time::Duration;

thread_local! {
    /// The socket (the address of its `Inner`) this thread last got an outcome from while
    /// other threads waited on it, and when: how long the application keeps a thread
    /// away decides how the driver role is handed on (see `State::lazy_handoff`), and how
    /// many outcomes it took then (a thread that took a batch is away longer, to handle
    /// them all: its time away counts per outcome).
    static LAST_OUTCOME: Cell<(usize, Time, u64)> = const { Cell::new((0, Time(0), 1)) };
}

/// This thread leaves socket `me` with an outcome. With other threads waiting on the
/// socket, note when, to time its absence; alone, the hand-off policy does not matter,
/// and the thread spares itself the clock reads.
fn note_outcome(st: &Guard<'_>, me: usize, outcomes: usize) {
    let last = if st.waiter_count() > 0 {
        (me, st.last_now, outcomes.max(1) as u64)
    } else {
        (0, Time(0), 1)
    };
    LAST_OUTCOME.set(last);
}

/// A Homa socket (blocking API). Cheap to clone: clones share the socket, and any number
/// of threads may send and receive on it at once; each message goes to exactly one
/// receiver. Dropping the last clone shuts the socket down.
///
/// See the [crate docs](crate) for an example.
#[derive(Clone)]
pub struct Socket {
    h: Arc<Handle>,
}

struct Handle {
    inner: Arc<Inner>,
    bg: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.shutdown();
        let bg = self.bg.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = bg {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("local_addr", &self.h.inner.local)
            .field("transport", &self.h.inner.transport)
            .finish()
    }
}

impl Socket {
    /// Open a UDP-mode socket with default options. A socket on a port you name accepts
    /// requests (a server); port 0 picks a free client-only port from 32768 up. On a
    /// wildcard address (`0.0.0.0`, `[::]`) a server answers each request from the
    /// address it was sent to, and a link-local IPv6 client on the interface it came
    /// in on; an IPv6 link-local address to bind needs its scope (`[fe80::1%2]:4000`).
    pub fn bind(addr: SocketAddr) -> Result<Socket, BindError> {
        Self::bind_with(addr, Options::default())
    }

    /// Open a socket with `options` (transport, engine configuration...).
    pub fn bind_with(addr: SocketAddr, options: Options) -> Result<Socket, BindError> {
        let inner = bind::open(addr, options, Flavor::Blocking)?;
        let bg_inner = inner.clone();
        let bg = std::thread::Builder::new()
            .name(format!("homa-{}", inner.port))
            .spawn(move || background(bg_inner))
            .map_err(BindError::Io)?;
        Ok(Socket {
            h: Arc::new(Handle {
                inner,
                bg: Mutex::new(Some(bg)),
            }),
        })
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.h.inner
    }

    crate::commands::socket_commands!();

    /// Wait for the next request, response or RPC failure of this socket (and one-way
    /// message or delivery, on a socket that uses them: see [`MessageKind`](crate::MessageKind)).
    /// A failed RPC comes back as `Err(RecvError::Rpc { id, cookie, error, .. })`.
    pub fn recv(&self) -> Result<Message, RecvError> {
        self.wait(Want::Any, None)
    }

    /// [`recv`](Self::recv) with a time limit (`Err(RecvError::TimedOut)`).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message, RecvError> {
        self.wait(Want::Any, Some(timeout))
    }

    /// Wait for the next request only (or one-way message, on a socket that takes them):
    /// responses, deliveries and failures of this socket's own RPCs stay for
    /// [`recv`](Self::recv) and [`recv_id`](Self::recv_id). The loop for a server
    /// that also sends requests: `Err` here means the socket was shut down, never that
    /// one of its own RPCs failed.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = homa::Socket::bind("127.0.0.1:4000".parse()?)?;
    /// while let Ok(request) = server.recv_request() {
    ///     server.reply(&request, request.to_vec())?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn recv_request(&self) -> Result<Message, RecvError> {
        self.wait(Want::Request, None)
    }

    /// [`recv_request`](Self::recv_request) with a time limit (`Err(RecvError::TimedOut)`).
    pub fn recv_request_timeout(&self, timeout: Duration) -> Result<Message, RecvError> {
        self.wait(Want::Request, Some(timeout))
    }

    /// Wait for the response (or failure) of the client RPC `id` only. Fails with
    /// [`UnknownRpc`](RecvError::UnknownRpc) if `id` is not outstanding (its outcome
    /// already taken, by `recv` or an earlier `recv_id`, or the RPC given up), and with
    /// [`AlreadyWaiting`](RecvError::AlreadyWaiting) if another thread waits for it.
    pub fn recv_id(&self, id: RpcId) -> Result<Message, RecvError> {
        self.wait(Want::Id(id), None)
    }

    /// [`recv_id`](Self::recv_id) with a time limit (the RPC goes on: its outcome waits
    /// for the next call).
    pub fn recv_id_timeout(&self, id: RpcId, timeout: Duration) -> Result<Message, RecvError> {
        self.wait(Want::Id(id), Some(timeout))
    }

    /// Wait for at least one request, response or RPC failure, then take up to `max` of
    /// those ready (at least one), appending them to `out` as [`recv`](Self::recv) would
    /// return them. Returns how many. `Err` (nothing taken) means shutdown.
    ///
    /// One thread that takes what arrived together, and answers it with a
    /// [`batch`](Self::batch), spends a system call per batch instead of one per message.
    pub fn recv_batch(
        &self,
        out: &mut Vec<Result<Message, RecvError>>,
        max: usize,
    ) -> Result<usize, RecvError> {
        let inner = self.inner();
        let taken = wait_batch(inner, Want::Any, max)?;
        let n = taken.len();
        out.extend(taken.into_results(inner));
        Ok(n)
    }

    /// [`recv_batch`](Self::recv_batch) for requests only (see
    /// [`recv_request`](Self::recv_request)).
    pub fn recv_request_batch(
        &self,
        out: &mut Vec<Message>,
        max: usize,
    ) -> Result<usize, RecvError> {
        let inner = self.inner();
        let taken = wait_batch(inner, Want::Request, max)?;
        let n = taken.len();
        // Requests only: each converts to a message.
        out.extend(taken.into_results(inner).filter_map(Result::ok));
        Ok(n)
    }

    /// Send `data` to `dest` and wait for the response: one whole RPC. Where the outgoing
    /// buffer budget (`max_outgoing_held`) is used up by RPCs in flight, first waits for
    /// room (where [`send_request`](Self::send_request) says
    /// [`WouldBlock`](crate::SendError::WouldBlock)); room given back goes to the
    /// longest-waiting call if it fits, and room too small for that one to the shortest
    /// waiting requests it fits.
    ///
    /// There is no time limit: a live server that holds the request without answering
    /// keeps the call waiting (as in Linux Homa). Use [`call_timeout`](Self::call_timeout)
    /// to bound the wait.
    pub fn call(&self, dest: SocketAddr, data: impl Into<Payload>) -> Result<Message, CallError> {
        let inner = self.inner();
        let (id, st) = start_when_room(inner, dest, data.into(), false)?;
        Ok(wait_locked(inner, st, Want::Id(id), None, None)?.into_result(inner)?)
    }

    /// [`call`](Self::call) with a time limit, counted from the call (a wait for outgoing
    /// buffer room included). When it passes, the RPC is given up, as a dropped tokio
    /// `call` is: its response, if one comes, is dropped, and no outcome for it reaches
    /// [`recv`](Self::recv) (a thread waiting for it with [`recv_id`](Self::recv_id)
    /// gets `Aborted`). The call then fails with
    /// [`RecvError::TimedOut`](crate::RecvError::TimedOut), also when the limit passed
    /// while it waited for room and nothing was sent, or was zero. Once sent, the server
    /// may have executed the request: Homa runs an RPC at most once, not exactly once.
    pub fn call_timeout(
        &self,
        dest: SocketAddr,
        data: impl Into<Payload>,
        timeout: Duration,
    ) -> Result<Message, CallError> {
        self.within(dest, data.into(), false, timeout)
    }

    /// A private request (or one-way message) to `dest`, and its outcome, within
    /// `timeout` (see [`call_timeout`](Self::call_timeout)).
    fn within(
        &self,
        dest: SocketAddr,
        data: Payload,
        one_way: bool,
        timeout: Duration,
    ) -> Result<Message, CallError> {
        let inner = self.inner();
        let deadline = clock().plus_nanos(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
        let Some((id, st)) = start_when_room_until(inner, dest, data, one_way, Some(deadline))?
        else {
            return Err(RecvError::TimedOut.into());
        };
        match wait_locked(inner, st, Want::Id(id), Some(deadline), None) {
            Err(RecvError::TimedOut) => {
                let mut st = inner.lock();
                // Its outcome may have come in since the wait gave up: take it then.
                if let Ok(Some(r)) = st.take_ready(Want::Id(id)) {
                    drop(st);
                    return Ok(r.into_result(inner)?);
                }
                inner.abandon(&mut st, id);
                Err(RecvError::TimedOut.into())
            }
            r => Ok(r?.into_result(inner)?),
        }
    }

    /// Send `data` to `dest` as a one-way message and wait until it is delivered: the
    /// receiving socket's engine has it whole and acknowledged it (see
    /// [`send_message`](Self::send_message)). A socket that does not take one-way
    /// messages fails it with [`RpcError::NotAccepted`](crate::RpcError::NotAccepted).
    /// Waits for outgoing buffer room first where there is none, as [`call`](Self::call).
    ///
    /// There is no time limit: a live receiver that has no buffer space for the message
    /// (its application holds what it received) keeps it waiting, as a server keeps a
    /// `call`. Use [`deliver_timeout`](Self::deliver_timeout) to bound the wait.
    pub fn deliver(&self, dest: SocketAddr, data: impl Into<Payload>) -> Result<(), CallError> {
        let inner = self.inner();
        let (id, st) = start_when_room(inner, dest, data.into(), true)?;
        wait_locked(inner, st, Want::Id(id), None, None)?.into_result(inner)?;
        Ok(())
    }

    /// [`deliver`](Self::deliver) with a time limit, counted from the call, as
    /// [`call_timeout`](Self::call_timeout) has: when it passes, the message is given up
    /// (its receiver may have it all the same) and the call fails with
    /// [`RecvError::TimedOut`](crate::RecvError::TimedOut).
    pub fn deliver_timeout(
        &self,
        dest: SocketAddr,
        data: impl Into<Payload>,
        timeout: Duration,
    ) -> Result<(), CallError> {
        self.within(dest, data.into(), true, timeout).map(drop)
    }

    /// Send the response to `request`, as [`reply`](Self::reply) does, first waiting for
    /// room where the budget for responses (`max_outgoing_held`, which responses have to
    /// themselves) is used up by responses not yet acknowledged (where `reply` says
    /// [`WouldBlock`](crate::ReplyError::WouldBlock)). Room given back goes to the
    /// longest-waiting reply if it fits, else to the shortest waiting replies it fits. A shutdown ends the
    /// wait with [`Shutdown`](crate::ReplyError::Shutdown); a request whose client gave it
    /// up meanwhile fails with [`UnknownRpc`](crate::ReplyError::UnknownRpc) once room
    /// comes back.
    pub fn reply_when_room(
        &self,
        request: &Message,
        data: impl Into<Payload>,
    ) -> Result<(), crate::ReplyError> {
        reply_when_room(self.inner(), request, data.into())
    }

    /// Shut the socket down gracefully: stop taking requests, let the responses it still
    /// owes reach their clients, then [`shutdown`](Self::shutdown). Returns how many
    /// requests and one-way messages the shutdown cut off at the `timeout`; 0 when none
    /// was left (each response acknowledged by its client, or given up by the engine
    /// because its client went silent, as it would be without a shutdown).
    ///
    /// - From the call on, requests that arrive are dropped, as by a socket that takes
    ///   none (their senders time out, or learn that no socket is there once this one has
    ///   closed), and so are requests still arriving when it is called. One-way messages
    ///   that arrive are refused, and fail at their senders with `NotAccepted`.
    /// - Requests and one-way messages that had arrived are still handed to
    ///   [`recv_request`](Self::recv_request) and the other receives, and
    ///   [`reply`](Self::reply) still answers the requests: the call waits until every
    ///   one-way message queued is taken and every request that reached this socket's
    ///   queue or a caller is answered (or dropped) and its response acknowledged by its
    ///   client, which takes about a round trip after the response's last byte (up to
    ///   `request_ack_ticks` ticks if the client sends nothing more).
    /// - The socket's own client RPCs go on meanwhile, and fail with `Shutdown` at the
    ///   end like any other shutdown's.
    ///
    /// The drain is found over as soon as what it waits for is done (an ACK arrives, the
    /// last queued message is taken), and at its deadline even on an idle socket.
    /// Other threads keep using the socket meanwhile, and need to: the requests wait for
    /// their replies (so a tokio task must not call this blocking form on a worker that
    /// its own replies need). Callers that drain at once all return the same count, when
    /// the earliest of their deadlines passes or nothing is left; a
    /// [`shutdown`](Self::shutdown) made meanwhile ends the drain too, and the count is
    /// what it cut off.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = homa::Socket::bind("127.0.0.1:4000".parse()?)?;
    /// // In a signal handler's thread, say; the threads serving `server` keep going.
    /// let cut_off = server.shutdown_gracefully(std::time::Duration::from_secs(5));
    /// if cut_off > 0 {
    ///     eprintln!("{cut_off} requests (or one-way messages) were cut off");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn shutdown_gracefully(&self, timeout: Duration) -> usize {
        let inner = self.inner();
        let deadline = clock().plus_nanos(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
        let mut st = inner.lock();
        if !inner.begin_drain(&mut st, deadline) {
            return 0;
        }
        loop {
            let now = clock();
            if inner.drain_over(&st, now).is_some() {
                drop(st);
                inner.shutdown();
                st = inner.lock();
            }
            if st.shutdown {
                return st.drain_cut_off().unwrap_or(0);
            }
            inner.wait_drain(&mut st, Wake::Thread(std::thread::current()));
            drop(st);
            std::thread::park_timeout(Duration::from_nanos(deadline.nanos_since(now)));
            st = inner.lock();
        }
    }

    fn wait(&self, want: Want, timeout: Option<Duration>) -> Result<Message, RecvError> {
        let inner = self.inner();
        wait(
            inner,
            want,
            // (A timeout past u64 nanoseconds, 584 years, is no timeout at all.)
            timeout.map(|d| clock().plus_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))),
        )?
        .into_result(inner)
    }
}

/// Start a private request (or one-way message), first waiting among the socket's
/// waiters for outgoing buffer room if there is none (see `State::room`). A caller
/// offered room tries again, keeping its place if someone else took the room first;
/// a shutdown wakes every waiter, whose next try fails.
fn start_when_room(
    inner: &Arc<Inner>,
    dest: SocketAddr,
    data: Payload,
    one_way: bool,
) -> Result<(RpcId, Guard<'_>), SendError> {
    Ok(start_when_room_until(inner, dest, data, one_way, None)?
        .expect("a wait without a deadline ends with a start or an error"))
}

/// [`start_when_room`], giving up the wait for room at `deadline` (`Ok(None)`).
fn start_when_room_until(
    inner: &Arc<Inner>,
    dest: SocketAddr,
    data: Payload,
    one_way: bool,
    deadline: Option<Time>,
) -> Result<Option<(RpcId, Guard<'_>)>, SendError> {
    let mut key = None;
    let mut waker = None;
    let mut data = Some(data);
    loop {
        if deadline.is_some_and(|d| clock() >= d) {
            // Past the limit (a zero one, or room offered just as it passed): nothing
            // is sent, so no server runs a request no one waits for.
            if let (Some(key), Some(mut st)) = (key, inner.lock_unless_poisoned()) {
                st.room.leave(key, false);
            }
            return Ok(None);
        }
        match inner.start_or_wait(dest, &mut data, one_way, &mut key) {
            // (The payload is still ours: the engine was not asked.)
            Err(SendError::WouldBlock) if data.is_some() => {
                let key = key.expect("a caller that must wait has a place");
                if !park_until_offered(inner, key, &mut waker, |st| &mut st.room, deadline) {
                    if let Some(mut st) = inner.lock_unless_poisoned() {
                        st.room.leave(key, false);
                    }
                    return Ok(None);
                }
            }
            done => return done.map(Some),
        }
    }
}

/// Park this thread until waiter `key` of the room queue `queue` picks out is offered
/// room (or the socket shuts down, or its lock is poisoned: the next try says so), or
/// until `deadline` (then false: still waiting, and the caller must leave the queue).
/// Registered under the lock by the try that found no room, so room given back since
/// then is offered to this caller: none is missed.
fn park_until_offered(
    inner: &Arc<Inner>,
    key: u64,
    waker: &mut Option<Waker>,
    queue: impl Fn(&mut crate::inner::State) -> &mut crate::inner::RoomQueue,
    deadline: Option<Time>,
) -> bool {
    let waker = waker.get_or_insert_with(|| Waker::from(Arc::new(Unpark(std::thread::current()))));
    while let Some(mut st) = inner.lock_unless_poisoned() {
        if queue(&mut st).poll_woken(key, waker) {
            break;
        }
        drop(st);
        match deadline {
            None => std::thread::park(),
            Some(d) => {
                let now = clock();
                if now >= d {
                    return false;
                }
                std::thread::park_timeout(Duration::from_nanos(d.nanos_since(now)));
            }
        }
    }
    true
}

/// Answer `request` as [`Socket::reply_when_room`] does.
fn reply_when_room(
    inner: &Arc<Inner>,
    request: &Message,
    data: Payload,
) -> Result<(), crate::ReplyError> {
    let mut key = None;
    let mut waker = None;
    let mut data = Some(data);
    loop {
        match inner.reply_or_wait(request, &mut data, crate::inner::Push::Now, Some(&mut key)) {
            // (The payload is still ours: the engine was not asked.)
            Err(crate::ReplyError::WouldBlock) if data.is_some() => {
                let key = key.expect("a caller that must wait has a place");
                park_until_offered(inner, key, &mut waker, |st| &mut st.reply_room, None);
            }
            done => return done,
        }
    }
}

/// Wakes a thread parked in [`park_until_offered`] (for `call`, `deliver` and
/// `reply_when_room`).
struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

fn wait(inner: &Arc<Inner>, want: Want, deadline: Option<Time>) -> Result<Ready, RecvError> {
    wait_locked(inner, inner.lock(), want, deadline, None)
}

/// Where a batch receive puts the outcomes after the first, and how many it takes in all.
pub(crate) struct More<'o> {
    pub(crate) out: &'o mut Vec<Ready>,
    pub(crate) max: usize,
}

impl More<'_> {
    /// Take the outcomes handed to waiter `key` after its first (if it waited), then
    /// those queued for `want`, up to the batch.
    /// Returns how many it took.
    fn fill(&mut self, st: &mut Guard<'_>, want: Want, key: Option<usize>) -> usize {
        let start = self.out.len();
        if let Some(key) = key {
            st.take_more(key, self.out);
        }
        let room = self.max.saturating_sub(1 + self.out.len() - start);
        st.take_ready_into(want, self.out, room);
        self.out.len() - start
    }
}

/// A batch receive: wait for one outcome of `want`, and take up to `max` in all.
pub(crate) fn wait_batch(inner: &Arc<Inner>, want: Want, max: usize) -> Result<Taken, RecvError> {
    let mut rest = Vec::new();
    let more = More {
        out: &mut rest,
        max: max.max(1),
    };
    let first = wait_locked(inner, inner.lock(), want, None, Some(more))?;
    Ok(Taken { first, rest })
}

/// [`wait`], the lock already taken.
fn wait_locked<'a>(
    inner: &'a Arc<Inner>,
    mut st: Guard<'a>,
    want: Want,
    deadline: Option<Time>,
    mut more: Option<More<'_>>,
) -> Result<Ready, RecvError> {
    if st.shutdown {
        return Err(RecvError::Shutdown);
    }
    let me = Arc::as_ptr(inner) as usize;
    let (last, at, outcomes) = LAST_OUTCOME.get();
    if last == me {
        st.note_away(clock().nanos_since(at) / outcomes);
    }
    if let Some(r) = st.take_ready(want)? {
        let mut n = 1;
        if let Some(m) = more.as_mut() {
            n += m.fill(&mut st, want, None);
        }
        note_outcome(&st, me, n);
        return Ok(r);
    }
    let batch = more.as_ref().map_or(1, |m| m.max);
    let key = st.add_waiter(want, Wake::Thread(std::thread::current()), batch);
    let drives = inner.app_drives();
    let result = loop {
        if let Some(r) = st.take_slot(key) {
            break Ok(r);
        }
        if st.shutdown {
            break Err(RecvError::Shutdown);
        }
        let now = deadline.map(|_| clock());
        if let (Some(d), Some(now)) = (deadline, now) {
            if now >= d {
                break Err(RecvError::TimedOut);
            }
        }
        let may_drive = drives && (st.driver == Driver::None || st.driver == Driver::Offered(key));
        if may_drive {
            st.driver = Driver::App(key);
            st.undriven_since = None;
            inner.unwatch_undriven(&mut st);
            st = drive_app(inner, st, key, deadline, batch > 1);
            continue;
        }
        if drives && st.driver == Driver::Background && !st.handoff_wanted {
            // The background thread reads the socket: ask it for the driver role.
            st.handoff_wanted = true;
            inner.wake_bg(&mut st);
        }
        drop(st);
        match (deadline, now) {
            (Some(d), Some(now)) => {
                std::thread::park_timeout(Duration::from_nanos(d.nanos_since(now)))
            }
            _ => std::thread::park(),
        }
        st = inner.lock();
        if let Some(at) = st.take_woken_at(key) {
            st.note_wake(clock().nanos_since(at));
        }
    };
    let mut n = 1;
    if let (Ok(_), Some(m)) = (&result, more.as_mut()) {
        n += m.fill(&mut st, want, Some(key));
    }
    st.remove_waiter(key);
    if result.is_ok() {
        note_outcome(&st, me, n);
    }
    result
}

/// Drive the socket until waiter `key` has its outcome (or shutdown, or `deadline`), then
/// pass the driver role on.
fn drive_app<'a>(
    inner: &'a Inner,
    mut st: Guard<'a>,
    key: usize,
    deadline: Option<Time>,
    batch: bool,
) -> Guard<'a> {
    let mut more = false;
    let done =
        |st: &Guard<'_>| st.has_slot(key) || st.shutdown || deadline.is_some_and(|d| clock() >= d);
    loop {
        if done(&st) {
            break;
        }
        // The tick this thread held back while it delivered (it may time out this very
        // waiter's RPC).
        if inner.tick_if_due(&mut st) && done(&st) {
            break;
        }
        st = inner.drive_step(
            st,
            WaitHow::App {
                until: deadline,
                more,
                batch,
            },
        );
        more = true;
    }
    st.leave_driver(key);
    inner.watch_undriven(&mut st);
    st
}

/// The background thread. It runs the engine's timers (1 ms ticks) and the pacer's
/// deadlines, and reads the socket when no application thread has for a tick (so an
/// idle server still answers RESENDs and NEED_ACKs and acks flow), giving the socket
/// back as soon as an application thread waits.
fn background(inner: Arc<Inner>) {
    sys::set_precise_timers();
    let mut st = inner.lock();
    loop {
        if st.shutdown {
            break;
        }
        let now = clock();
        inner.after_input(&mut st, now);
        if inner.take_over_at(&st).is_some_and(|t| now >= t) {
            st.driver = Driver::Background;
            st.undriven_since = None;
            loop {
                st = inner.drive_step(st, WaitHow::Background);
                if st.shutdown || st.handoff_wanted {
                    break;
                }
            }
            st.handoff_wanted = false;
            st.release_driver(None);
            continue;
        }
        let at = inner.bg_deadline(&st, now);
        inner.bg_sleep(&mut st, at);
    }
}
