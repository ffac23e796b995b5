//! The tokio flavour: the same sockets with `async` operations. (The module is called
//! `aio` rather than `tokio` so that `use homa::*;` leaves the `tokio` crate's name, and
//! `#[tokio::main]`, alone.)
//!
//! Each socket has one driver task (spawned on the runtime that called `bind`, which the
//! socket therefore lives on: once that runtime shuts down, the socket is shut down too,
//! and its operations fail with `Shutdown` from any other runtime): it waits
//! for the UDP socket to be readable, for a `timerfd` armed at the engine's next deadline
//! (tokio's own timers tick in milliseconds, the pacer needs microseconds; a command that
//! moves the deadline earlier moves the timer itself), and for commands that leave it
//! packets to send. Callers of `recv`/`call` wait on their own waker and get exactly their
//! message. A command that comes alone sends its packets on the caller's task with
//! non-blocking system calls; commands that come close together leave theirs to the
//! driver, which sends them in one batch (packets that do not fit the socket buffer wait
//! for the driver to see it writable). Nothing here blocks a runtime thread. `call` and `deliver` apply
//! back-pressure: with the outgoing buffer budget (`max_outgoing_held`) used up they wait
//! for this socket's RPCs to end (as the blocking `call` and `deliver` do), where
//! `send_request` and `send_message` (of both flavours) say `WouldBlock` instead.
//!
//! The driver task waits in its runtime's run queue like any task: CPU-heavy tasks on the
//! same workers delay it, and a server whose driver cannot run for `timeout_ticks` (100
//! ms by default) is taken for dead by its clients. Keep heavy computation off those
//! workers (`spawn_blocking`). The driver task runs only while its runtime does: a socket bound on a current-thread
//! runtime makes no progress (its calls wait, and no timeout fires) while nothing runs
//! that runtime, even if another runtime awaits the call. The port is free again once the
//! socket and every [`Message`] it delivered are dropped (in both flavours), and for a
//! tokio socket once its driver task has run after that, shortly after the drop rather
//! than at it: a server that binds the same port again straight away may see
//! [`BindError::AddrInUse`] for a moment, and can retry.
//!
//! ```
//! use homa::*;
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Port 0 with `server: Some(true)`: a server on any free port.
//!     let opts = Options { server: Some(true), ..Default::default() };
//!     let server = aio::Socket::bind_with("127.0.0.1:0".parse()?, opts).await?;
//!     let addr = server.local_addr();
//!     tokio::spawn(async move {
//!         while let Ok(req) = server.recv_request().await {
//!             let _ = server.reply(&req, req.to_vec()); // queued at once: nothing to await
//!         }
//!     });
//!     let client = aio::Socket::bind("127.0.0.1:0".parse()?).await?;
//!     let resp = client.call(addr, b"echo".to_vec()).await?;
//!     assert_eq!(resp, b"echo");
//!     Ok(())
//! }
//! ```

use crate::bind;
use crate::error::{BindError, CallError, RecvError, ReplyError, SendError};
use crate::inner::{clock, Flavor, Inner, Push, Ready, Taken, Wake, WakeAt, Want};
use crate::message::Message;
use crate::options::Options;
use crate::payload::Payload;
use crate::sys;
use homa_core::RpcId;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A Homa socket (tokio API). Cheap to clone; any number of tasks may use it at once, and
/// each message goes to exactly one receiver. Dropping the last clone shuts it down.
/// Must be created inside a tokio runtime with I/O enabled.
#[derive(Clone)]
pub struct Socket {
    h: Arc<Handle>,
}

struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // The driver task sees the shutdown and ends.
        self.inner.shutdown();
    }
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("aio::Socket")
            .field("local_addr", &self.h.inner.local)
            .field("transport", &self.h.inner.transport)
            .finish()
    }
}

impl Socket {
    /// Open a UDP-mode socket with default options (see [`crate::Socket::bind`]).
    pub async fn bind(addr: SocketAddr) -> Result<Socket, BindError> {
        Self::bind_with(addr, Options::default()).await
    }

    /// Open a socket with `options`.
    pub async fn bind_with(addr: SocketAddr, options: Options) -> Result<Socket, BindError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            BindError::Io(std::io::Error::other(
                "homa::aio::Socket::bind must be called within a tokio runtime",
            ))
        })?;
        let inner = bind::open(addr, options, Flavor::Tokio)?;
        // Registering panics in a runtime built without I/O (tokio has no way to ask);
        // make that an error, without the panic's message and backtrace on stderr.
        let registered = quietly(|| register(&inner)).ok_or_else(|| {
            BindError::Io(std::io::Error::other(
                "homa::aio needs a tokio runtime with I/O enabled (enable_io / enable_all)",
            ))
        })??;
        let (sock, timer) = registered;
        rt.spawn(drive(
            inner.clone(),
            sock,
            timer,
            EndsWithDriver(inner.clone()),
        ));
        Ok(Socket {
            h: Arc::new(Handle { inner }),
        })
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.h.inner
    }

    crate::commands::socket_commands!();

    /// The next request, response or RPC failure (and one-way message or delivery, on a
    /// socket that uses them). Cancel-safe: dropping the future before it completes
    /// loses nothing.
    pub async fn recv(&self) -> Result<Message, RecvError> {
        let inner = self.inner();
        Wait::new(inner, Want::Any).await?.into_result(inner)
    }

    /// [`recv`](Self::recv), giving up after `timeout` with [`RecvError::TimedOut`] (as
    /// the blocking socket's `recv_timeout`). Needs the runtime's timer (`enable_time`):
    /// without it, [`RecvError::NoTimer`]. Cancel-safe: a message that arrives after the
    /// deadline waits for the next call.
    pub async fn recv_timeout(&self, timeout: std::time::Duration) -> Result<Message, RecvError> {
        within(timeout, self.recv()).await
    }

    /// The next request only (or one-way message, on a socket that takes them):
    /// responses, deliveries and failures of this socket's own RPCs stay for
    /// [`recv`](Self::recv) and [`recv_id`](Self::recv_id), so a server loop
    /// (`while let Ok(request) = socket.recv_request().await`) ends only when the socket
    /// shuts down. Cancel-safe.
    pub async fn recv_request(&self) -> Result<Message, RecvError> {
        let inner = self.inner();
        Wait::new(inner, Want::Request).await?.into_result(inner)
    }

    /// [`recv_request`](Self::recv_request), giving up after `timeout` with
    /// [`RecvError::TimedOut`]. Cancel-safe.
    pub async fn recv_request_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> Result<Message, RecvError> {
        within(timeout, self.recv_request()).await
    }

    /// The response (or failure) of client RPC `id`. Cancel-safe.
    pub async fn recv_id(&self, id: RpcId) -> Result<Message, RecvError> {
        let inner = self.inner();
        Wait::new(inner, Want::Id(id)).await?.into_result(inner)
    }

    /// [`recv_id`](Self::recv_id), giving up after `timeout` with
    /// [`RecvError::TimedOut`] (the RPC goes on: its outcome waits for the next call).
    /// Cancel-safe.
    pub async fn recv_id_timeout(
        &self,
        id: RpcId,
        timeout: std::time::Duration,
    ) -> Result<Message, RecvError> {
        within(timeout, self.recv_id(id)).await
    }

    /// Wait for at least one request, response or RPC failure, then take up to `max` of
    /// those ready (at least one), appending them to `out` as [`recv`](Self::recv) would
    /// return them; returns how many (see [`crate::Socket::recv_batch`]). Cancel-safe:
    /// nothing is taken until the future completes.
    pub async fn recv_batch(
        &self,
        out: &mut Vec<Result<Message, RecvError>>,
        max: usize,
    ) -> Result<usize, RecvError> {
        let taken = self.take_batch(Want::Any, max).await?;
        let n = taken.len();
        out.extend(taken.into_results(self.inner()));
        Ok(n)
    }

    /// [`recv_batch`](Self::recv_batch) for requests only (see
    /// [`recv_request`](Self::recv_request)). Cancel-safe.
    pub async fn recv_request_batch(
        &self,
        out: &mut Vec<Message>,
        max: usize,
    ) -> Result<usize, RecvError> {
        let taken = self.take_batch(Want::Request, max).await?;
        let n = taken.len();
        // Requests only: each converts to a message.
        out.extend(taken.into_results(self.inner()).filter_map(Result::ok));
        Ok(n)
    }

    /// Wait for one outcome of `want`, then take those ready, up to `max` in all.
    async fn take_batch(&self, want: Want, max: usize) -> Result<Taken, RecvError> {
        let inner = self.inner();
        let first = Wait::new(inner, want).await?;
        let mut rest = Vec::new();
        inner
            .lock()
            .take_ready_into(want, &mut rest, max.max(1) - 1);
        Ok(Taken { first, rest })
    }

    /// One whole RPC: send `data` to `dest`, wait for the response.
    ///
    /// Where the socket's outgoing buffer budget (`max_outgoing_held`) has no room for
    /// the request, this first waits for RPCs or one-way messages of this socket to end,
    /// as a write to a full TCP socket waits (and as the blocking
    /// [`call`](crate::Socket::call) does), rather than failing with
    /// [`SendError::WouldBlock`] as [`send_request`](Self::send_request) does.
    /// Room given back goes to the
    /// longest-waiting caller it fits, and room too small for that one to the shortest
    /// waiting requests it fits. Dropping the future gives the RPC up, at any point;
    /// [`call_timeout`](Self::call_timeout) bounds the wait.
    pub async fn call(
        &self,
        dest: SocketAddr,
        data: impl Into<Payload>,
    ) -> Result<Message, CallError> {
        let id = self.start_when_room(dest, data.into(), false).await?;
        Ok(self.outcome_of(id).await?)
    }

    /// [`call`](Self::call) with a time limit, counted from the call (a wait for outgoing
    /// buffer room included), as the blocking socket's
    /// [`call_timeout`](crate::Socket::call_timeout). When it passes, the RPC is given up
    /// as a dropped `call` is (a response that comes later is dropped, and no outcome
    /// for it reaches [`recv`](Self::recv)) and the call fails with
    /// [`RecvError::TimedOut`], also when nothing was sent yet; a zero limit sends
    /// nothing. Once sent, the server may have executed the request: Homa runs an RPC at
    /// most once, not exactly once. Needs the runtime's timer (`enable_time`): without
    /// it, [`RecvError::NoTimer`], and nothing is sent. Wrapping [`call`](Self::call) in
    /// `tokio::time::timeout` gives up the RPC the same way; this says why it failed in
    /// the call's own error type.
    pub async fn call_timeout(
        &self,
        dest: SocketAddr,
        data: impl Into<Payload>,
        timeout: std::time::Duration,
    ) -> Result<Message, CallError> {
        if timeout.is_zero() {
            return Err(RecvError::TimedOut.into());
        }
        within(timeout, self.call(dest, data)).await
    }

    /// Start a private request (or one-way message), waiting for outgoing buffer room
    /// first if there is none (see [`call`](Self::call)).
    async fn start_when_room(
        &self,
        dest: SocketAddr,
        data: Payload,
        one_way: bool,
    ) -> Result<RpcId, SendError> {
        let inner = self.inner();
        let mut key = None;
        let mut data = Some(data);
        loop {
            // Registered under the lock by the try that found no room, so room given back
            // after it is offered to this caller.
            match inner
                .start_or_wait(dest, &mut data, one_way, &mut key)
                .map(|(id, _)| id)
            {
                // (The payload is still ours: the engine was not asked.)
                Err(SendError::WouldBlock) if data.is_some() => {
                    let key = key.expect("a caller that must wait has a place");
                    RoomWait::new(inner, key, |st| &mut st.room).await;
                }
                done => return done,
            }
        }
    }

    /// The outcome of our private RPC or one-way message `id`, given up (aborted) if
    /// the future is dropped before then.
    async fn outcome_of(&self, id: RpcId) -> Result<Message, RecvError> {
        let mut guard = AbortOnDrop {
            inner: self.inner(),
            id: Some(id),
        };
        let r = self.recv_id(id).await;
        guard.id = None;
        r
    }

    /// Send the response to `request`, first waiting for room where the budget for
    /// responses is used up (see [`crate::Socket::reply_when_room`]). Dropping the future
    /// while it waits gives the reply up (the request stays unanswered).
    pub async fn reply_when_room(
        &self,
        request: &Message,
        data: impl Into<Payload>,
    ) -> Result<(), ReplyError> {
        let inner = self.inner();
        let mut key = None;
        let mut data = Some(data.into());
        loop {
            match inner.reply_or_wait(request, &mut data, Push::Now, Some(&mut key)) {
                // (The payload is still ours: the engine was not asked.)
                Err(ReplyError::WouldBlock) if data.is_some() => {
                    let key = key.expect("a caller that must wait has a place");
                    RoomWait::new(inner, key, |st| &mut st.reply_room).await;
                }
                done => return done,
            }
        }
    }

    /// Send `data` to `dest` as a one-way message and wait until it is delivered (see
    /// [`crate::Socket::deliver`]; no time limit). Dropping the future before then gives
    /// the message up; [`deliver_timeout`](Self::deliver_timeout) bounds the wait.
    pub async fn deliver(
        &self,
        dest: SocketAddr,
        data: impl Into<Payload>,
    ) -> Result<(), CallError> {
        let id = self.start_when_room(dest, data.into(), true).await?;
        self.outcome_of(id).await?;
        Ok(())
    }

    /// [`deliver`](Self::deliver) with a time limit, as [`call_timeout`](Self::call_timeout)
    /// has (and with the same need for the runtime's timer): when it passes, the message
    /// is given up (its receiver may have it all the same) and the call fails with
    /// [`RecvError::TimedOut`].
    pub async fn deliver_timeout(
        &self,
        dest: SocketAddr,
        data: impl Into<Payload>,
        timeout: std::time::Duration,
    ) -> Result<(), CallError> {
        if timeout.is_zero() {
            return Err(RecvError::TimedOut.into());
        }
        within(timeout, self.deliver(dest, data)).await
    }

    /// Shut the socket down gracefully: stop taking requests, let the responses it still
    /// owes reach their clients, then [`shutdown`](Self::shutdown). Returns how many
    /// requests and one-way messages the shutdown cut off at the `timeout` (0: none was
    /// left). What it waits for, and what happens to what arrives meanwhile, is as for
    /// [`crate::Socket::shutdown_gracefully`]; the socket's driver task ends it (it wakes
    /// for the deadline itself), so no tokio timer is needed. Dropping the future before it
    /// completes leaves the socket draining (refusing requests) until a later call, or a
    /// [`shutdown`](Self::shutdown), ends it.
    pub async fn shutdown_gracefully(&self, timeout: std::time::Duration) -> usize {
        let inner = self.inner();
        let deadline = clock().plus_nanos(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
        if !inner.begin_drain(&mut inner.lock(), deadline) {
            return 0;
        }
        std::future::poll_fn(|cx| {
            let mut st = inner.lock();
            if inner.drain_over(&st, clock()).is_some() {
                drop(st);
                inner.shutdown();
                st = inner.lock();
            }
            if st.shutdown {
                return Poll::Ready(st.drain_cut_off().unwrap_or(0));
            }
            inner.wait_drain(&mut st, Wake::Waker(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

/// A task waiting among the socket's waiters for outgoing buffer room, until it is offered
/// some (then it tries again, keeping its place if it must wait again). Leaves the
/// waiters if dropped before then; room offered to it and not taken goes to the others.
struct RoomWait<'a> {
    inner: &'a Inner,
    key: u64,
    offered: bool,
    /// Which of the socket's room queues (requests' or responses').
    queue: fn(&mut crate::inner::State) -> &mut crate::inner::RoomQueue,
}

impl<'a> RoomWait<'a> {
    /// Wait in `queue` under `key`, the place the try that found no room registered.
    fn new(
        inner: &'a Inner,
        key: u64,
        queue: fn(&mut crate::inner::State) -> &mut crate::inner::RoomQueue,
    ) -> Self {
        RoomWait {
            inner,
            key,
            offered: false,
            queue,
        }
    }
}

impl Future for RoomWait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(mut st) = self.inner.lock_unless_poisoned() else {
            // The next try reports the poisoned lock.
            self.offered = true;
            return Poll::Ready(());
        };
        if (self.queue)(&mut st).poll_woken(self.key, cx.waker()) {
            drop(st);
            self.offered = true;
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for RoomWait<'_> {
    fn drop(&mut self) {
        if !self.offered {
            if let Some(mut st) = self.inner.lock_unless_poisoned() {
                (self.queue)(&mut st).leave(self.key, false);
            }
        }
    }
}

type Registered = (Option<AsyncFd<Fd>>, AsyncFd<Fd>);

/// Register the socket and a timerfd with the runtime's reactor.
fn register(inner: &Arc<Inner>) -> Result<Registered, BindError> {
    let sock = match inner.udp_fd() {
        Some(fd) => {
            // Not WRITABLE: see [`WriteWait`].
            let interest = Interest::READABLE | Interest::ERROR;
            // SAFETY: `Fd` holds the `Inner` that owns the socket, so the descriptor
            // stays open, and names the same socket, for as long as the AsyncFd lives.
            let afd = unsafe { AsyncFd::register_with_interest(Fd(inner.clone(), fd), interest) };
            Some(afd.map_err(|e| BindError::Io(e.into()))?)
        }
        None => None,
    };
    let timerfd = inner
        .drv_timer
        .as_ref()
        .expect("a tokio socket has a driver timer");
    let fd = timerfd.as_raw_fd();
    // SAFETY: as for the socket: `Fd` holds the `Inner` that owns the timer.
    let timer =
        unsafe { AsyncFd::register_with_interest(Fd(inner.clone(), fd), Interest::READABLE) }
            .map_err(|e| BindError::Io(e.into()))?;
    Ok((sock, timer))
}

#[cfg(not(panic = "abort"))]
thread_local! {
    /// Set while [`quietly`] runs on this thread.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `wait`, given up after `timeout` with `TimedOut`. In a runtime without a timer, where
/// tokio's timer panics, `NoTimer` instead, quietly. Only the timer is watched for that
/// panic: one in `wait` itself goes on up to the caller, printed as any other.
async fn within<T, E: From<RecvError>>(
    timeout: std::time::Duration,
    wait: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    // (Outside any tokio runtime, as under another executor, tokio's timer panics too:
    // no need to find that out by panicking.)
    let sleep = match tokio::runtime::Handle::try_current() {
        Ok(_) => quietly(|| tokio::time::sleep(timeout)),
        Err(_) => None,
    };
    let Some(sleep) = sleep else {
        return Err(RecvError::NoTimer.into());
    };
    let mut sleep = std::pin::pin!(sleep);
    let mut wait = std::pin::pin!(wait);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = wait.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        // (A timer polled after its runtime began to shut down panics too.)
        match quietly(|| sleep.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(RecvError::TimedOut.into())),
            Some(Poll::Pending) => Poll::Pending,
            None => Poll::Ready(Err(RecvError::NoTimer.into())),
        }
    })
    .await
}

/// Runs `f`, turning a panic into `None` that the panic hook does not print. The hook
/// is wrapped once per process: other threads' panics, and this thread's outside `f`,
/// still reach the hook that was installed before. Built with `panic = "abort"`, a panic
/// cannot be turned into anything: `f` just runs, so that tokio's message (which says
/// what the runtime lacks) is printed before the process ends.
#[cfg(panic = "abort")]
fn quietly<R>(f: impl FnOnce() -> R) -> Option<R> {
    Some(f())
}

/// Runs `f`, turning a panic into `None` that the panic hook does not print. The hook
/// is wrapped once per process: other threads' panics, and this thread's outside `f`,
/// still reach the hook that was installed before.
#[cfg(not(panic = "abort"))]
fn quietly<R>(f: impl FnOnce() -> R) -> Option<R> {
    static WRAP: std::sync::Once = std::sync::Once::new();
    WRAP.call_once(|| {
        let earlier = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                earlier(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    r.ok()
}

/// A `call` whose future is dropped aborts its RPC, so nothing waits for a response no one
/// will read.
struct AbortOnDrop<'a> {
    inner: &'a Arc<Inner>,
    id: Option<RpcId>,
}

impl Drop for AbortOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let Some(mut st) = self.inner.lock_unless_poisoned() else {
                return;
            };
            // Aborted, or (it completed meanwhile) its outcome dropped: either way no one
            // will take it.
            self.inner.abandon(&mut st, id);
        }
    }
}

/// Waits for an outcome; deregisters (and gives back anything handed to it) when dropped.
struct Wait<'a> {
    inner: &'a Arc<Inner>,
    want: Want,
    key: Option<usize>,
}

impl<'a> Wait<'a> {
    fn new(inner: &'a Arc<Inner>, want: Want) -> Wait<'a> {
        Wait {
            inner,
            want,
            key: None,
        }
    }
}

impl Future for Wait<'_> {
    type Output = Result<Ready, RecvError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.inner.lock();
        match self.key {
            None => {
                if st.shutdown {
                    return Poll::Ready(Err(RecvError::Shutdown));
                }
                match st.take_ready(self.want) {
                    Err(e) => return Poll::Ready(Err(e)),
                    Ok(Some(r)) => return Poll::Ready(Ok(r)),
                    Ok(None) => {}
                }
                let key = st.add_waiter(self.want, Wake::Waker(cx.waker().clone()), 1);
                drop(st);
                self.key = Some(key);
                Poll::Pending
            }
            Some(key) => {
                if let Some(r) = st.take_slot(key) {
                    st.remove_waiter(key);
                    drop(st);
                    self.key = None;
                    return Poll::Ready(Ok(r));
                }
                if st.shutdown {
                    st.remove_waiter(key);
                    drop(st);
                    self.key = None;
                    return Poll::Ready(Err(RecvError::Shutdown));
                }
                st.set_wake(key, Wake::Waker(cx.waker().clone()));
                Poll::Pending
            }
        }
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            if let Some(mut st) = self.inner.lock_unless_poisoned() {
                st.remove_waiter(key);
            }
        }
    }
}

/// A descriptor `Inner` owns (the UDP socket or the driver's timerfd) for `AsyncFd`, with
/// that `Inner` (keeping it open).
struct Fd(#[allow(dead_code)] Arc<Inner>, RawFd);
impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.1
    }
}

/// Receive batches taken per readiness event before yielding to other tasks.
const RX_ROUNDS: usize = 16;

/// Write interest in the UDP socket, registered only while packets wait for room in its
/// send buffer. Kept registered, it would cost a wake-up of a parked runtime thread per
/// datagram sent: the kernel signals "writable" (`sock_wfree`) each time it frees a sent
/// datagram's memory, which over loopback is inside every `sendmsg`, and an
/// edge-triggered epoll entry wakes its waiter on every such signal. The interest is
/// registered on a duplicate of the descriptor, since the original's registration
/// (read interest) cannot change after `AsyncFd` creates it.
struct WriteWait(Option<AsyncFd<std::os::fd::OwnedFd>>);

impl WriteWait {
    /// Make sure the interest is registered; false if it cannot be (no descriptors left).
    fn watch(&mut self, fd: RawFd) -> bool {
        if self.0.is_none() {
            // SAFETY: `fd` is the socket's open descriptor, owned by the `Inner` the
            // caller holds; the borrow only lasts for the duplication.
            let dup = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }.try_clone_to_owned();
            // SAFETY: the AsyncFd owns the duplicate, which stays open until it drops.
            let afd = dup.and_then(|d| {
                unsafe { AsyncFd::register_with_interest(d, Interest::WRITABLE) }
                    .map_err(Into::into)
            });
            match afd {
                Ok(afd) => self.0 = Some(afd),
                Err(e) => tracing::warn!(error = %e, "cannot wait for the socket to be writable"),
            }
        }
        self.0.is_some()
    }

    /// Wait until the socket may take packets again (registering an already writable
    /// socket reports it at once). Pending forever if not [`watch`](Self::watch)ing.
    async fn writable(&self) {
        match &self.0 {
            Some(afd) => match afd.writable().await {
                Ok(mut g) => g.clear_ready(),
                Err(_) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }

    /// Nothing waits: drop the interest.
    fn clear(&mut self) {
        self.0 = None;
    }
}

/// How soon a driver that cannot watch for send-buffer room tries its sends again.
const WRITE_RETRY_NANOS: u64 = 1_000_000;

/// Shuts the socket down when its driver task ends, however it ends: the socket cannot
/// work without it. Besides a shutdown (already done then), the task ends when the
/// runtime that bound the socket shuts down and drops it; the socket's callers, in other
/// runtimes, then get `Shutdown` instead of waiting for ever.
struct EndsWithDriver(Arc<Inner>);

impl Drop for EndsWithDriver {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// The driver task. `_ends` is an argument, not made in the body, so that it is dropped
/// with the future even if the task was never polled.
async fn drive(
    inner: Arc<Inner>,
    sock: Option<AsyncFd<Fd>>,
    timer: AsyncFd<Fd>,
    _ends: EndsWithDriver,
) {
    let mut write_wait = WriteWait(None);
    // The timer fired since the last turn (it is armed again below).
    let mut fired = false;
    loop {
        let watching = {
            let mut st = inner.lock();
            if st.shutdown {
                return;
            }
            st.driver_woken = false;
            if std::mem::take(&mut fired) {
                // (Moved meanwhile by a kick, it is set again below all the same.)
                st.drv_armed = None;
            }
            let now = clock();
            // A tick due now asks whether input waits unread (see `Inner::tick`). The
            // reactor has just polled the socket (what woke this task came through the
            // same poll), so its readiness answers without an `ioctl`.
            let input_waits = match st.ep.next_tick() {
                Some(t) if t <= now => sock.as_ref().map(reactor_saw_input),
                _ => None,
            };
            inner.after_input_hinted(&mut st, now, input_waits);
            let mut w = inner.wake_at(&st);
            let pending = Inner::see_pending_tx(&mut st);
            // Packets wait for room in the send buffer: watch for it, or if that cannot
            // be registered, try again soon.
            let watching = match inner.udp_fd().filter(|_| pending) {
                Some(fd) => write_wait.watch(fd),
                None => {
                    write_wait.clear();
                    false
                }
            };
            if pending && !watching {
                let retry = WakeAt::exactly(now.plus_nanos(WRITE_RETRY_NANOS));
                w = Some(w.map_or(retry, |w| w.min(retry)));
            }
            // A timer still set within the slack stays (see `WakeAt`): while packets
            // flow, the ticks they bring would otherwise move it at every tick. (Set
            // under the lock: `Inner::kick` moves it earlier from other tasks.)
            let armed = st.drv_armed;
            let d = w.map(|w| w.rearm(armed).or(armed).unwrap_or(w.on_time));
            st.sleep_until = Some(d);
            if d != armed {
                inner.arm_driver(&mut st, d);
            }
            watching
        };
        let readable = async {
            match &sock {
                Some(s) => s.ready(Interest::READABLE | Interest::ERROR).await.ok(),
                None => std::future::pending().await,
            }
        };
        let writable = async {
            if watching {
                write_wait.writable().await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            biased;
            _ = inner.notify.notified() => {}
            r = timer.readable() => {
                // The expiry is not read: the reactor's edge-triggered poll reports the
                // timer's next expiry whether or not this one was, and the timer is set
                // again (which forgets it) before it can fire again. One `read` fewer
                // per firing.
                if let Ok(mut g) = r {
                    g.clear_ready();
                }
                fired = true;
            }
            g = readable => {
                if let Some(mut g) = g {
                    if g.ready().is_error() {
                        let mut st = inner.lock();
                        inner.drain_errors(&mut st);
                    }
                    receive(&inner, &mut g);
                }
            }
            () = writable => {
                let mut st = inner.lock();
                inner.flush(&mut st, clock());
            }
        }
    }
}

/// Whether the reactor has seen the socket readable since a receive last cleared it
/// (asked without a system call, and without waiting).
fn reactor_saw_input(sock: &AsyncFd<Fd>) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    // Pending registers the no-op waker in the slot for `poll_read_ready` callers, which
    // no one else uses: the driver waits through `ready`.
    !matches!(sock.poll_read_ready(&mut cx), Poll::Pending)
}

/// Take what the socket has (a bounded number of batches, then let other tasks run).
fn receive(inner: &Inner, g: &mut tokio::io::unix::AsyncFdReadyGuard<'_, Fd>) {
    let Some(fd) = inner.udp_fd() else { return };
    let mut rx = inner.rx_lock();
    for _ in 0..RX_ROUNDS {
        rx.ensure();
        let (slots, spills, metas) = rx.parts();
        inner.counts.received();
        match sys::recv_batch(fd, slots, spills, metas, true) {
            Ok(0) => {
                rx.note_received(0);
                g.clear_ready();
                return;
            }
            Ok(n) => {
                let full = rx.note_received(n);
                let mut st = inner.lock();
                inner.ingest_batch(&mut st, &mut rx, n, true);
                if !full {
                    // The queue is (very likely) empty: no need to hear EAGAIN first.
                    // clear_ready keeps a readiness event newer than this guard, so a
                    // datagram that arrived meanwhile still wakes the driver.
                    g.clear_ready();
                    return;
                }
            }
            Err(_) => {
                let mut st = inner.lock();
                inner.drain_errors(&mut st);
                return;
            }
        }
    }
}
