//! The server side: [`serve`] runs tonic's routes (or any HTTP service that speaks gRPC)
//! on a Homa socket; [`Server`] is the builder most tonic users will want.

use crate::batch::{grpc_timeout, status_headers, BatchEnd, Batcher, Filled};
use crate::frame::{self, Frame, CANCEL, FLAG_END, FLAG_HEADERS, OPEN, PULL, REPLY, SEND};
use crate::BoxError;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::Body;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::Status;
use tower_service::Service;

mod calls;
use calls::{remove_call, CallKey, EarlyCancels, Entry, SERIAL};

struct Ctx<S> {
    sock: homa::aio::Socket,
    svc: S,
    calls: Mutex<HashMap<CallKey, Entry>>,
    max: usize,
    /// The shutdown signal came: new calls are refused with UNAVAILABLE.
    draining: std::sync::atomic::AtomicBool,
    /// Told when the last call in progress ends while draining, or the grace ends.
    idle: Arc<tokio::sync::Notify>,
    /// CANCELs for calls not (yet) known, newest last: a short CANCEL can overtake the
    /// long OPEN it cancels, which is then refused rather than run.
    early_cancels: Mutex<EarlyCancels>,
}

/// What [`serve`] runs: tonic's [`Routes`], or any HTTP service that speaks gRPC (its
/// requests come with a [`RequestBody`]). Implemented for every such service.
pub trait GrpcService<B>:
    Service<
        http::Request<RequestBody>,
        Response = http::Response<B>,
        Error: Into<BoxError> + Send,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S, B> GrpcService<B> for S where
    S: Service<
            http::Request<RequestBody>,
            Response = http::Response<B>,
            Error: Into<BoxError> + Send,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// How long [`serve`] lets the calls in progress run after its shutdown signal (see
/// [`serve_with_grace`] for another limit).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

impl<S> Ctx<S> {
    fn calls(&self) -> std::sync::MutexGuard<'_, HashMap<CallKey, Entry>> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn early_cancels(&self) -> std::sync::MutexGuard<'_, EarlyCancels> {
        self.early_cancels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remember a CANCEL for a call not known (see `early_cancels`).
    fn note_early_cancel(&self, key: CallKey) {
        self.early_cancels().note(key, Instant::now());
    }

    /// Whether a CANCEL came for `key` before its OPEN.
    fn cancelled_early(&self, key: CallKey) -> bool {
        self.early_cancels().take(key, Instant::now())
    }
}

/// Answer `request` now: `reply` returns at once, so the receive loop never waits on one
/// client for another's sake. A reply that finds the socket's buffer space for responses
/// used up (responses not yet acknowledged hold it) waits for room in a task of its own
/// (`reply_when_room`), for at most `REPLY_WAIT_FOR`.
///
/// A frame longer than a Homa message (a status message or metadata of a megabyte) is
/// replaced by a RESOURCE_EXHAUSTED status that ends the call, so that the client hears
/// why instead of timing out; returns false then (the call is over).
fn reply_now(sock: &homa::aio::Socket, request: homa::Message, data: Bytes) -> bool {
    match sock.reply(&request, data.clone()) {
        Ok(()) => {}
        Err(homa::ReplyError::MessageTooLong { len, max }) => {
            let Some((kind, flags, call)) = frame::fixed_header(&data) else {
                return false; // (every frame we build has its fixed header)
            };
            let kind = kind & !REPLY;
            let s = Status::resource_exhausted(format!(
                "homa-tonic: the response's frame ({len} bytes: headers, messages or trailers) \
                 is longer than Homa's maximum message length ({max} bytes)"
            ));
            // A frame that carried the response headers had none sent before it.
            let headers_sent = flags & FLAG_HEADERS == 0;
            reply_now(sock, request, status_frame(kind, call, &s, headers_sent));
            return false;
        }
        Err(homa::ReplyError::WouldBlock) => {
            let sock = sock.clone();
            tokio::spawn(async move {
                let id = request.id();
                match tokio::time::timeout(REPLY_WAIT_FOR, sock.reply_when_room(&request, data))
                    .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(target: "homa_tonic", ?id, error = %e, "reply failed")
                    }
                    // Given up (the wait's future dropped leaves the room to the others).
                    Err(_) => {
                        tracing::debug!(target: "homa_tonic", ?id, "no room for the reply")
                    }
                }
            });
        }
        Err(e) => {
            tracing::debug!(target: "homa_tonic", id = ?request.id(), error = %e, "reply failed")
        }
    }
    true
}

/// How long a reply waits for buffer space before it is dropped (its client then gets a
/// timeout).
const REPLY_WAIT_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// A final frame: the status `s`, in the headers if none were sent (a "trailers-only"
/// response, as gRPC has it), in the trailers otherwise.
fn status_frame(kind: u8, call: u64, s: &Status, headers_sent: bool) -> Bytes {
    let h = status_headers(s);
    if headers_sent {
        frame::control(REPLY | kind, FLAG_END, call, None, Some(&h))
    } else {
        let mut head = h;
        head.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        frame::control(
            REPLY | kind,
            FLAG_END,
            call,
            Some(&head),
            Some(&HeaderMap::new()),
        )
    }
}

/// Serve gRPC over Homa on `sock` until `shutdown` completes (or the socket shuts down),
/// then shut down gracefully, much as tonic's `serve_with_shutdown` does (which sets no
/// limit): new calls are refused with `UNAVAILABLE`, the calls in progress run to their
/// end (for at most [`SHUTDOWN_GRACE`]; those still running then are ended), their last
/// responses are delivered (`Socket::shutdown_gracefully`, for at most a second more),
/// and the socket shuts down. [`serve_with_grace`] takes another limit (zero: end every
/// call at once; `Duration::MAX`: none).
///
/// `service` is tonic's [`Routes`] (or any HTTP service that speaks gRPC: its requests
/// come with a [`RequestBody`]). Each request runs on the task that received it as long
/// as its handler does not wait; a call whose handler waits (or that streams) gets a
/// task of its own. A handler that panics ends its call with `INTERNAL`; the server
/// keeps serving.
pub async fn serve<S, B>(
    sock: homa::aio::Socket,
    service: S,
    shutdown: impl Future<Output = ()>,
) -> Result<(), homa::RecvError>
where
    S: GrpcService<B>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    serve_with_grace(sock, service, shutdown, SHUTDOWN_GRACE).await
}

/// [`serve`], letting the calls in progress at the shutdown signal run for at most
/// `grace`, then their last responses be delivered for at most `grace` or a second,
/// whichever is shorter. With `Duration::ZERO`, the signal ends every call at once, as
/// closing the socket does: to clients a crash, after which a unary call in progress
/// may run again if a new server takes the port at once (Homa restarts a request its
/// server no longer knows); a grace of a millisecond fails such calls with
/// `UNAVAILABLE` instead. With `Duration::MAX` (any grace past the clock's range), the
/// calls run to their end however long they take.
pub async fn serve_with_grace<S, B>(
    sock: homa::aio::Socket,
    service: S,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), homa::RecvError>
where
    S: GrpcService<B>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let max = sock.config().max_message_length as usize;
    let ctx = Arc::new(Ctx {
        sock: sock.clone(),
        svc: service,
        calls: Mutex::new(HashMap::new()),
        max,
        draining: false.into(),
        idle: Arc::new(tokio::sync::Notify::new()),
        early_cancels: Mutex::new(EarlyCancels::default()),
    });
    // However `serve` ends, its returning or its future dropped (`select!` against
    // Ctrl-C, an aborted task): the calls' tasks hold the context, and with it the
    // socket, so without this a dropped `serve` left the port bound and unserved, and new
    // calls waited for nothing.
    let _stop = StopOnDrop(&ctx);
    // Serve until the signal (or until the socket ends by itself).
    let mut shutdown = pin!(shutdown);
    let ended = loop {
        let msg = tokio::select! {
            biased;
            () = &mut shutdown => break None,
            // Requests only: responses and failures of RPCs that others make on this
            // socket (a `Channel::with_socket` sharing it) stay for them.
            m = sock.recv_request() => m,
        };
        match msg {
            Ok(msg) => dispatch(&ctx, msg).await,
            Err(homa::RecvError::Shutdown) => break Some(Ok(())),
            Err(e) => break Some(Err(e)),
        }
    };
    if let Some(r) = ended {
        return r; // (`_stop` ends the calls and the socket)
    }
    // The grace: new calls refused, the calls in progress served to their end.
    ctx.draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let mut r = Ok(());
    {
        let mut ended = pin!(calls_ended(&ctx, grace));
        loop {
            let msg = tokio::select! {
                biased;
                () = &mut ended => break,
                m = sock.recv_request() => m,
            };
            match msg {
                Ok(msg) => dispatch(&ctx, msg).await,
                Err(homa::RecvError::Shutdown) => break,
                Err(e) => {
                    r = Err(e);
                    break;
                }
            }
        }
    }
    ctx.calls().clear();
    // The socket's own drain delivers the last responses; what was queued meanwhile is
    // still answered (new calls with UNAVAILABLE), so that nothing waits for the drain's
    // deadline (at most a second, or the grace if shorter).
    let mut drain = pin!(sock.shutdown_gracefully(grace.min(Duration::from_secs(1))));
    loop {
        let msg = tokio::select! {
            biased;
            _ = &mut drain => break,
            m = sock.recv_request() => m,
        };
        match msg {
            Ok(msg) => dispatch(&ctx, msg).await,
            Err(_) => break,
        }
    }
    r // (`_stop` shuts the socket down)
}

/// Ends every call and shuts the socket down when [`serve`] ends, however it ends.
struct StopOnDrop<'a, S>(&'a Ctx<S>);

impl<S> Drop for StopOnDrop<'_, S> {
    fn drop(&mut self) {
        self.0
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.0.calls().clear();
        self.0.sock.shutdown();
    }
}

/// When no call is left in progress, or `grace` has passed (a grace past the clock's
/// range: no limit). Timed by a thread of its own, so that `serve` needs no tokio timer.
async fn calls_ended<S>(ctx: &Ctx<S>, grace: Duration) {
    let expired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Dropped when this returns (or is dropped), which ends the timer's thread at once
    // rather than at the end of the grace.
    let (_done, done) = std::sync::mpsc::channel::<()>();
    if Instant::now().checked_add(grace).is_some() {
        let (idle, expired) = (ctx.idle.clone(), expired.clone());
        let timer = std::thread::Builder::new()
            .name("homa-tonic-grace".into())
            .spawn(move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(grace) {
                    expired.store(true, std::sync::atomic::Ordering::Relaxed);
                    idle.notify_waiters();
                }
            });
        if timer.is_err() {
            tracing::warn!(target: "homa_tonic", "no thread to time the shutdown grace: waiting for the calls without a limit");
        }
    }
    loop {
        let notified = ctx.idle.notified();
        let mut notified = pin!(notified);
        notified.as_mut().enable();
        if ctx.calls().is_empty() || expired.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        notified.await;
    }
}

/// One incoming request: a new call, or the next step of one.
async fn dispatch<S, B>(ctx: &Arc<Ctx<S>>, msg: homa::Message)
where
    S: GrpcService<B>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let f = match frame::parse(frame::message_bytes(&msg)) {
        Ok(f) if f.kind & REPLY == 0 => f,
        Ok(_) => {
            return refuse(
                ctx,
                msg,
                0,
                0,
                Status::internal("homa-tonic: a reply frame sent as a request"),
            )
        }
        Err(e) => {
            tracing::debug!(target: "homa_tonic", peer = %msg.peer(), error = %e, "malformed request");
            let s = Status::internal(format!("homa-tonic: malformed request frame: {e}"));
            return refuse(ctx, msg, 0, 0, s);
        }
    };
    let key = (msg.peer(), f.call);
    match f.kind {
        OPEN if ctx.draining.load(std::sync::atomic::Ordering::Relaxed) => {
            let s = Status::unavailable("homa-tonic: the server is shutting down");
            refuse(ctx, msg, OPEN, f.call, s)
        }
        OPEN => open(ctx, msg, f).await,
        SEND | PULL => {
            let tx = {
                let calls = ctx.calls();
                calls.get(&key).and_then(|e| {
                    if f.kind == SEND {
                        e.sends.clone()
                    } else {
                        e.pulls.clone()
                    }
                })
            };
            let Some(tx) = tx else {
                // The server ended the call (stopping, or a restarted server never had
                // it): to the client, as a connection lost mid-stream over HTTP/2.
                let s = Status::unavailable(
                    "homa-tonic: no such call at the server (it ended the call, or restarted)",
                );
                return refuse(ctx, msg, f.kind, f.call, s);
            };
            if let Err(e) = tx.try_send(msg) {
                let (msg, why) = match e {
                    mpsc::error::TrySendError::Full(m) => {
                        (m, "a second SEND or PULL before the first was answered")
                    }
                    mpsc::error::TrySendError::Closed(m) => (m, "the call has ended"),
                };
                refuse(
                    ctx,
                    msg,
                    f.kind,
                    f.call,
                    Status::failed_precondition(format!("homa-tonic: {why}")),
                );
            }
        }
        CANCEL => {
            // Dropping the entry cancels the call: its task drops the handler.
            let entry = ctx.calls().remove(&key);
            if entry.is_none() {
                // Unknown: ended already, or its OPEN is still on its way.
                ctx.note_early_cancel(key);
            }
            drop(entry);
            reply_now(
                &ctx.sock,
                msg,
                frame::control(REPLY | CANCEL, 0, f.call, None, None),
            );
        }
        _ => unreachable!("parse accepts only the four kinds"),
    }
}

fn refuse<S>(ctx: &Ctx<S>, msg: homa::Message, kind: u8, call: u64, s: Status) {
    reply_now(&ctx.sock, msg, status_frame(kind, call, &s, false));
}

/// A new call: its HTTP request, then either the one-RPC path (the whole request is
/// here) or a streaming request.
async fn open<S, B>(ctx: &Arc<Ctx<S>>, msg: homa::Message, f: Frame)
where
    S: GrpcService<B>,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let key = (msg.peer(), f.call);
    if ctx.cancelled_early(key) {
        let s = Status::cancelled("homa-tonic: the call was cancelled before it opened");
        return refuse(ctx, msg, OPEN, f.call, s);
    }
    let uri = match http::Uri::from_maybe_shared(f.path.clone().unwrap_or_default()) {
        Ok(uri) => uri,
        Err(_) => {
            return refuse(
                ctx,
                msg,
                OPEN,
                f.call,
                Status::internal("homa-tonic: bad path"),
            )
        }
    };
    let headers = f.headers.unwrap_or_default();
    let deadline = grpc_timeout(&headers).map(|d| Instant::now() + d);
    let end = f.flags & FLAG_END != 0;
    let mut body = RequestBody {
        first: Some(f.messages),
        sends: None,
        sock: None,
        end,
    };
    // Every call is in the table while it runs, so that a CANCEL finds it (a unary call
    // too: its handler may wait).
    let (cancel, cancelled) = oneshot::channel();
    let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut entry = Entry {
        _cancel: cancel,
        serial,
        pulls: None,
        sends: None,
    };
    let pulls = if end {
        None
    } else {
        let (stx, srx) = mpsc::channel(1);
        let (ptx, prx) = mpsc::channel(1);
        body.sends = Some(srx);
        body.sock = Some(ctx.sock.clone());
        entry.pulls = Some(ptx);
        entry.sends = Some(stx);
        Some(prx)
    };
    ctx.calls().insert(key, entry);
    let mut req = http::Request::new(body);
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_2;
    *req.headers_mut() = headers;
    req.extensions_mut().insert(crate::Peer(msg.peer()));
    let mut svc = ctx.svc.clone();
    // Routes are always ready; other services may not be.
    if let Err(e) = poll_fn(|cx| svc.poll_ready(cx)).await {
        remove_call(&mut ctx.calls(), key, serial);
        let s = Status::from_error(e.into());
        return refuse(ctx, msg, OPEN, f.call, s);
    }
    let handler = svc.call(req);
    if end {
        // The whole request is here: the OPEN is also the first PULL. Run the call here
        // until it waits; most unary handlers never do, and the call ends with no task.
        let mut call = Box::pin(run_call(
            ctx.clone(),
            (key, serial),
            Some(msg),
            None,
            cancelled,
            handler,
            deadline,
        ));
        if poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx)))
            .await
            .is_pending()
        {
            tokio::spawn(call);
        }
    } else {
        reply_now(
            &ctx.sock,
            msg,
            frame::control(REPLY | OPEN, 0, f.call, None, None),
        );
        let call = run_call(
            ctx.clone(),
            (key, serial),
            None,
            pulls,
            cancelled,
            handler,
            deadline,
        );
        tokio::spawn(call);
    }
}

/// The response side of a call: the handler's response head and body, sent batch by
/// batch, each as the reply to one PULL (the first to the OPEN, for a call whose request
/// came whole). Runs until the body ends, the client cancels (`cancelled` completes: the
/// handler and its response stream are dropped, as hyper drops them when an HTTP/2
/// stream is reset), or the deadline passes.
async fn run_call<S, F, E, B>(
    ctx: Arc<Ctx<S>>,
    (key, serial): (CallKey, u64),
    mut pull: Option<homa::Message>,
    mut pulls: Option<mpsc::Receiver<homa::Message>>,
    mut cancelled: oneshot::Receiver<()>,
    handler: F,
    deadline: Option<Instant>,
) where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let _unregister = Unregister {
        ctx: &*ctx,
        key,
        serial,
    };
    let mut headers_sent = false;
    serve_call(
        &ctx,
        key,
        &mut pull,
        &mut pulls,
        &mut cancelled,
        &mut headers_sent,
        handler,
        deadline,
    )
    .await;
    // Ended by its client's CANCEL (or by the server's stop): a PULL the client still
    // waits on is answered, so that it hears the end at once. Dropped unanswered, it cost
    // the client a timeout ("nothing came from the peer") instead of the status its
    // request stream had failed with.
    if matches!(
        cancelled.try_recv(),
        Err(oneshot::error::TryRecvError::Closed)
    ) {
        let kind = if headers_sent { PULL } else { OPEN };
        // Ended by the server's stop, not by its client: as a lost connection.
        let s = if ctx.draining.load(std::sync::atomic::Ordering::Relaxed) {
            Status::unavailable("homa-tonic: the server stopped before the call ended")
        } else {
            Status::cancelled("homa-tonic: the call was cancelled")
        };
        let waiting = pull.into_iter().chain(std::iter::from_fn(|| {
            pulls.as_mut().and_then(|rx| rx.try_recv().ok())
        }));
        for p in waiting {
            reply_now(&ctx.sock, p, status_frame(kind, key.1, &s, headers_sent));
        }
    }
}

/// [`run_call`] up to the end of the call. What it waits on stays with `run_call`, which
/// answers a PULL still held when the call is cancelled (one taken here is put back).
#[allow(clippy::too_many_arguments)]
async fn serve_call<S, F, E, B>(
    ctx: &Arc<Ctx<S>>,
    key: CallKey,
    pull: &mut Option<homa::Message>,
    pulls: &mut Option<mpsc::Receiver<homa::Message>>,
    cancelled: &mut oneshot::Receiver<()>,
    headers_sent: &mut bool,
    handler: F,
    deadline: Option<Instant>,
) where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let call = key.1;
    let mut handler = pin!(handler);
    let mut sleep = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
    // `biased`: a cancellation or an expired deadline wins over a handler that is ready
    // in the same poll, so no handler sees a cancelled request stream as complete.
    let head = loop {
        tokio::select! {
            biased;
            _ = &mut *cancelled => return,
            () = expired(&mut sleep) => break Err(deadline_exceeded()),
            r = poll_fn(|cx| guarded(|| handler.as_mut().poll(cx))) => {
                break match r {
                    Ok(Ok(resp)) => Ok(resp.into_parts()),
                    Ok(Err(e)) => Err(Status::from_error(e.into())),
                    Err(panic) => Err(panic),
                };
            }
            m = recv(pulls), if pull.is_none() && pulls.is_some() => match m {
                Some(m) => *pull = Some(m),
                None => return,
            },
        }
    };
    let head = head.and_then(|(h, body)| {
        frame::check_headers(&h.headers, "response metadata")?;
        Ok((h, body))
    });
    let (head, mut body) = match head {
        Ok(h) => h,
        Err(status) => {
            let Some(p) = wait_pull(pull, pulls, cancelled, &mut sleep).await else {
                return;
            };
            reply_now(&ctx.sock, p, status_frame(OPEN, call, &status, false));
            return;
        }
    };
    let mut batcher = Batcher::default();
    // The stream failed after messages it had produced: they went in the last batch, and
    // this status answers the next PULL (as HTTP/2 delivers the data frames sent before
    // a stream's reset).
    let mut failed: Option<Status> = None;
    loop {
        if let Some(status) = failed.take() {
            if let Some(p) = wait_pull(pull, pulls, cancelled, &mut sleep).await {
                reply_now(&ctx.sock, p, status_frame(PULL, call, &status, true));
            }
            return;
        }
        let kind = if *headers_sent { PULL } else { OPEN };
        let mut buf = BytesMut::with_capacity(512);
        frame::put_fixed(&mut buf, REPLY | kind, 0, call);
        if !*headers_sent {
            frame::set_flag(&mut buf, FLAG_HEADERS);
            frame::put_headers(&mut buf, &head.headers);
        }
        let at = frame::put_len_placeholder(&mut buf);
        let max = ctx.max;
        // Until the client PULLs, the batch fills from the response stream: the last one
        // is on its way meanwhile, and a handler writing through a short channel would
        // otherwise get a few messages out per round trip.
        let mut filled = None;
        let p = loop {
            if let Some(p) = pull.take() {
                break p;
            }
            tokio::select! {
                biased;
                _ = &mut *cancelled => return,
                () = expired(&mut sleep) => return,
                m = recv(pulls) => match m {
                    Some(p) => break p,
                    None => return,
                },
                r = poll_fn(|cx| {
                    guarded(|| batcher.poll_fill(Pin::new(&mut body), cx, &mut buf, max))
                }), if filled.is_none() => filled = Some(r.and_then(|r| r)),
            }
        };
        let wait_first = *headers_sent;
        // And whether a failure is the response stream's own (its messages so far are
        // then delivered before its status).
        let (r, from_stream) = match filled {
            Some(r) => {
                let r = batcher.finish(r.map(|f| match f {
                    Filled::Full => BatchEnd::More,
                    Filled::End(trailers) => BatchEnd::End(trailers),
                }));
                (r, true)
            }
            None => tokio::select! {
                biased;
                _ = &mut *cancelled => {
                    // Answered by `run_call`, as a PULL not yet taken would be.
                    *pull = Some(p);
                    return;
                }
                () = expired(&mut sleep) => (Err(deadline_exceeded()), false),
                r = poll_fn(|cx| {
                    guarded(|| batcher.poll_batch(Pin::new(&mut body), cx, &mut buf, wait_first, max))
                }) => (r.and_then(|r| r), true),
                // Only a call the client may PULL on has a channel.
                m = recv(pulls), if pulls.is_some() => match m {
                    None => return,
                    Some(extra) => {
                        let s = Status::failed_precondition(
                            "homa-tonic: a second PULL before the first was answered",
                        );
                        reply_now(&ctx.sock, extra, status_frame(PULL, call, &s, true));
                        (Err(s), false)
                    }
                },
            },
        };
        let r = match r {
            Err(status) if from_stream && buf.len() > at + 4 => {
                failed = Some(status);
                Ok(BatchEnd::More)
            }
            r => r,
        };
        match r {
            Ok(BatchEnd::More) => {
                frame::patch_len(&mut buf, at);
                if pulls.is_none() {
                    // The client will PULL: let the receive loop hand this call its PULLs.
                    let (ptx, prx) = mpsc::channel(1);
                    match ctx.calls().get_mut(&key) {
                        Some(entry) => entry.pulls = Some(ptx),
                        None => return,
                    }
                    *pulls = Some(prx);
                }
                if !reply_now(&ctx.sock, p, buf.freeze()) {
                    return; // ended with RESOURCE_EXHAUSTED
                }
                *headers_sent = true;
            }
            Ok(BatchEnd::End(trailers)) => {
                let trailers = trailers.unwrap_or_default();
                if let Err(status) = frame::check_headers(&trailers, "trailer") {
                    // The messages of this batch go unsent: the call fails as a whole.
                    reply_now(
                        &ctx.sock,
                        p,
                        status_frame(kind, call, &status, *headers_sent),
                    );
                    return;
                }
                frame::patch_len(&mut buf, at);
                frame::set_flag(&mut buf, FLAG_END);
                frame::put_headers(&mut buf, &trailers);
                reply_now(&ctx.sock, p, buf.freeze());
                return;
            }
            Err(status) => {
                let reply = status_frame(kind, call, &status, *headers_sent);
                reply_now(&ctx.sock, p, reply);
                return;
            }
        }
    }
}

fn deadline_exceeded() -> Status {
    Status::deadline_exceeded("deadline exceeded (grpc-timeout)")
}

/// Takes the call out of the receive loop's table when its task ends (however it ends).
struct Unregister<'a, S> {
    ctx: &'a Ctx<S>,
    key: CallKey,
    serial: u64,
}

impl<S> Drop for Unregister<'_, S> {
    fn drop(&mut self) {
        let mut calls = self.ctx.calls();
        remove_call(&mut calls, self.key, self.serial);
        if calls.is_empty() && self.ctx.draining.load(std::sync::atomic::Ordering::Relaxed) {
            self.ctx.idle.notify_waiters();
        }
    }
}

/// The next PULL from the client, or `None` when the call is cancelled or its deadline
/// passed.
async fn wait_pull(
    pull: &mut Option<homa::Message>,
    pulls: &mut Option<mpsc::Receiver<homa::Message>>,
    cancelled: &mut oneshot::Receiver<()>,
    sleep: &mut Option<Pin<Box<tokio::time::Sleep>>>,
) -> Option<homa::Message> {
    if let Some(p) = pull.take() {
        return Some(p);
    }
    tokio::select! {
        biased;
        _ = cancelled => None,
        () = expired(sleep) => None,
        m = recv(pulls) => m,
    }
}

/// Completes when the deadline (if any) has passed.
async fn expired(sleep: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match sleep {
        Some(s) => s.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn recv(rx: &mut Option<mpsc::Receiver<homa::Message>>) -> Option<homa::Message> {
    match rx {
        Some(rx) => rx.recv().await,
        None => None,
    }
}

/// Poll `f`, turning a panic (in the handler or its response stream) into `INTERNAL`.
fn guarded<T>(f: impl FnOnce() -> Poll<T>) -> Poll<Result<T, Status>> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(p) => p.map(Ok),
        Err(_) => Poll::Ready(Err(Status::internal("the handler panicked"))),
    }
}

/// The body of a request served by [`serve`]: the request messages, those of a streaming
/// request arriving batch by batch (each batch acknowledged to the client when the
/// handler takes it, which lets the client send the next).
pub struct RequestBody {
    first: Option<Bytes>,
    sends: Option<mpsc::Receiver<homa::Message>>,
    sock: Option<homa::aio::Socket>,
    end: bool,
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("end", &self.end)
            .finish()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        loop {
            if let Some(data) = this.first.take().filter(|d| !d.is_empty()) {
                return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
            }
            if this.end {
                return Poll::Ready(None);
            }
            let Some(rx) = this.sends.as_mut() else {
                return Poll::Ready(None);
            };
            let Some(msg) = std::task::ready!(rx.poll_recv(cx)) else {
                this.sends = None;
                this.end = true;
                // Not CANCELLED: tonic reads a CANCELLED request stream as one that ended
                // normally, and a handler racing its own drop (on another worker) must
                // not take a cut stream for a whole one.
                return Poll::Ready(Some(Err(Status::aborted(
                    "homa-tonic: the call was cancelled (by its client, or the server stopped)",
                ))));
            };
            let f = match frame::parse(frame::message_bytes(&msg)) {
                Ok(f) => f,
                Err(e) => {
                    this.end = true;
                    return Poll::Ready(Some(Err(Status::internal(format!(
                        "homa-tonic: malformed SEND: {e}"
                    )))));
                }
            };
            if let Some(sock) = &this.sock {
                reply_now(
                    sock,
                    msg,
                    frame::control(REPLY | SEND, 0, f.call, None, None),
                );
            }
            this.end = f.end();
            this.first = Some(f.messages);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.end && self.first.as_ref().is_none_or(|d| d.is_empty())
    }
}

/// tonic services on Homa, built like tonic's own server: change
/// `tonic::transport::Server` to `homa_tonic::Server` and serve on a Homa address.
///
/// ```no_run
/// # async fn f(routes_svc: tonic::service::Routes) -> Result<(), Box<dyn std::error::Error>> {
/// // Server::builder().add_service(GreeterServer::new(greeter)).serve(addr).await?;
/// # let addr = "127.0.0.1:50051".parse()?;
/// homa_tonic::Server::builder().add_routes(routes_svc).serve(addr).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default, Clone)]
pub struct Server {
    routes: Routes,
}

impl Server {
    /// An empty server.
    pub fn builder() -> Server {
        Server::default()
    }

    /// Add a tonic service (a generated `...Server`, with or without an interceptor):
    /// whatever tonic's own `Server::add_service` takes.
    pub fn add_service<S>(mut self, svc: S) -> Server
    where
        S: Service<http::Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.routes = self.routes.add_service(svc);
        self
    }

    /// Add every service of `routes` (built with tonic's `Routes` or `RoutesBuilder`).
    ///
    /// # Panics
    /// If `routes` has a service that was added already (as tonic's router does).
    pub fn add_routes(mut self, routes: Routes) -> Server {
        // Every `Routes` answers unknown paths with UNIMPLEMENTED (its fallback), and a
        // router merges with at most one fallback: keep the one `routes` brings.
        let ours = self.routes.into_axum_router().reset_fallback();
        self.routes = Routes::from(ours.merge(routes.into_axum_router()));
        self
    }

    /// The routes added so far.
    pub fn into_routes(self) -> Routes {
        self.routes
    }

    /// Serve on a new Homa server socket at `addr` until the process ends.
    pub async fn serve(self, addr: SocketAddr) -> Result<(), ServeError> {
        self.serve_with_shutdown(addr, std::future::pending()).await
    }

    /// Serve on a new Homa server socket at `addr` until `signal` completes, then shut
    /// down gracefully (see [`serve`]: calls in progress run to their end, for at most
    /// [`SHUTDOWN_GRACE`]).
    pub async fn serve_with_shutdown(
        self,
        addr: SocketAddr,
        signal: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let opts = homa::Options {
            server: Some(true),
            ..Default::default()
        };
        let sock = homa::aio::Socket::bind_with(addr, opts).await?;
        serve(sock, self.routes.prepare(), signal).await?;
        Ok(())
    }
}

/// Why [`Server::serve`] stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The socket could not be opened.
    #[error("binding the Homa socket: {0}")]
    Bind(#[from] homa::BindError),
    /// The socket failed.
    #[error("receiving: {0}")]
    Recv(#[from] homa::RecvError),
}
