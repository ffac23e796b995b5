//! The client side: [`Channel`], a `tower::Service` that tonic-generated clients accept,
//! and [`ResponseBody`], the body of the responses it returns.

use crate::batch::{grpc_timeout, status_headers, BatchEnd, Batcher, Filled};
use crate::frame::{self, Frame, CANCEL, FLAG_END, FLAG_HEADERS, OPEN, PULL, SEND};
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::Body;
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tonic::Status;

/// How long a CANCEL may take before the client stops trying (the server's call then
/// ends when its own deadline or shutdown comes).
const CANCEL_WAIT: Duration = Duration::from_secs(1);

/// A gRPC channel over Homa to one server. Pass it where a tonic-generated client wants
/// a channel: `GreeterClient::new(channel)`.
///
/// Cheap to clone; clones share one Homa socket, and any number of calls may run at once
/// on it. Each unary call is one Homa RPC, made on the caller's task (no task is spawned
/// for it); streaming calls follow the mapping in the crate docs.
#[derive(Clone, Debug)]
pub struct Channel {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    sock: homa::aio::Socket,
    dest: SocketAddr,
    /// Homa's maximum message length in force on this socket.
    max: usize,
}

/// The next call id, process-wide. The server knows a call by the client's address and
/// its id, so ids must be unique among the calls of a socket, which any number of
/// channels may share ([`Channel::with_socket`]): a count per channel gave two channels'
/// calls the same ids, and each call cancelled or took the other's frames.
/// It starts at a random point in each process, so that a client restarted on the same
/// port does not reuse its predecessor's ids while the server may still hold (or have
/// been told to cancel) calls under them.
static NEXT_CALL: std::sync::LazyLock<AtomicU64> = std::sync::LazyLock::new(|| {
    use std::hash::{BuildHasher, Hasher};
    // (The standard library's hasher keys are random per process.)
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    // Below 2^62: ids never wrap in a process's life.
    AtomicU64::new((random >> 2).max(1))
});

impl Channel {
    /// A channel to the Homa server at `dest`, on a new client socket (an automatic port
    /// on the loopback address if `dest` is loopback, on the unspecified address
    /// otherwise). `dest` is an address or a name with a port (`"localhost:50051"`,
    /// `("server.example", 50051)`), resolved once, to its first address. Must be called
    /// within a tokio runtime with I/O and time enabled.
    pub async fn connect(dest: impl tokio::net::ToSocketAddrs) -> Result<Channel, ConnectError> {
        let dest = tokio::net::lookup_host(dest)
            .await
            .map_err(ConnectError::Resolve)?
            .next()
            .ok_or_else(|| {
                ConnectError::Resolve(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the name has no address",
                ))
            })?;
        let ip = match dest.ip() {
            ip if ip.is_loopback() => ip,
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let sock = homa::aio::Socket::bind(SocketAddr::new(ip, 0)).await?;
        Ok(Channel::with_socket(sock, dest))
    }

    /// A channel to `dest` over an existing socket (which may serve other channels and
    /// other traffic too; this channel only waits for its own RPCs).
    pub fn with_socket(sock: homa::aio::Socket, dest: SocketAddr) -> Channel {
        let max = sock.config().max_message_length as usize;
        Channel {
            shared: Arc::new(Shared { sock, dest, max }),
        }
    }

    /// The server's address.
    pub fn dest(&self) -> SocketAddr {
        self.shared.dest
    }
}

/// Why [`Channel::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The server's address is not an address, or its name did not resolve.
    #[error("resolving the server's address: {0}")]
    Resolve(#[source] std::io::Error),
    /// The client socket could not be opened.
    #[error("opening the client socket: {0}")]
    Bind(#[from] homa::BindError),
}

impl Shared {
    /// One Homa RPC to the server. A request that finds the socket's outgoing buffer space
    /// used up (RPCs in flight hold it) waits for room inside `call`, as a TCP writer
    /// waits for its window; the call's deadline, if any, bounds the wait.
    async fn rpc(&self, data: Bytes) -> Result<homa::Message, homa::CallError> {
        self.sock.call(self.dest, data).await
    }
}

/// The future of a call on a [`Channel`]: the response head.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<ResponseBody>, Infallible>> + Send>>;

impl<B> tower_service::Service<http::Request<B>> for Channel
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<crate::BoxError>,
{
    type Response = http::Response<ResponseBody>;
    /// Failures come back as gRPC statuses in the response, as from an HTTP/2 server.
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> ResponseFuture {
        let shared = self.shared.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let deadline = grpc_timeout(&parts.headers).map(|d| Instant::now() + d);
            let call = NEXT_CALL.fetch_add(1, Ordering::Relaxed);
            let guard = CallGuard {
                shared: shared.clone(),
                call,
                open: true,
                pump: None,
                request_failed: RequestFailed::default(),
            };
            let run = start(shared, parts, body, guard, deadline);
            let r = match deadline {
                Some(d) => tokio::time::timeout_at(d, run)
                    .await
                    .unwrap_or_else(|_| Err(deadline_exceeded())),
                None => run.await,
            };
            Ok(r.unwrap_or_else(|s| s.into_http()))
        })
    }
}

fn deadline_exceeded() -> Status {
    Status::deadline_exceeded("deadline exceeded (grpc-timeout): the Homa RPC was aborted")
}

/// A failed Homa RPC as the status gRPC gives a lost connection; a frame too long for a
/// Homa message (its headers, say), or longer than the receiving end takes (its
/// `max_message_length` or buffer space is smaller than ours), as `RESOURCE_EXHAUSTED`,
/// as a message too long for the channel's limits is: retrying it cannot help.
fn rpc_status(e: homa::CallError) -> Status {
    use homa::RpcError::{RequestNeverFits, RequestTooLong, ResponseTooLong};
    match e {
        homa::CallError::Send(homa::SendError::MessageTooLong { len, max }) => {
            Status::resource_exhausted(format!(
                "homa-tonic: the request's frame ({len} bytes: headers and messages) is longer \
                 than Homa's maximum message length ({max} bytes)"
            ))
        }
        e if matches!(
            e.rpc_error(),
            Some(RequestTooLong | RequestNeverFits | ResponseTooLong)
        ) =>
        {
            Status::resource_exhausted(format!("homa: {e}"))
        }
        e => Status::unavailable(format!("homa: {e}")),
    }
}

fn malformed(e: frame::FrameError) -> Status {
    Status::internal(format!("homa-tonic: malformed response frame: {e}"))
}

/// The call's Homa RPCs up to the response head.
async fn start<B>(
    shared: Arc<Shared>,
    parts: http::request::Parts,
    mut body: B,
    mut guard: CallGuard,
    deadline: Option<Instant>,
) -> Result<http::Response<ResponseBody>, Status>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<crate::BoxError>,
{
    let call = guard.call;
    frame::check_headers(&parts.headers, "request metadata")?;
    let path = parts.uri.path();
    let mut buf = BytesMut::with_capacity(256 + path.len());
    frame::put_fixed(&mut buf, OPEN, FLAG_HEADERS, call);
    frame::put_path(&mut buf, path);
    frame::put_headers(&mut buf, &parts.headers);
    let at = frame::put_len_placeholder(&mut buf);
    // The request messages ready now: for a unary call, its one message and the end.
    let mut batcher = Batcher::default();
    let end =
        poll_fn(|cx| batcher.poll_batch(Pin::new(&mut body), cx, &mut buf, false, shared.max))
            .await?;
    frame::patch_len(&mut buf, at);
    if let BatchEnd::End(_) = end {
        frame::set_flag(&mut buf, FLAG_END);
        let reply = shared.rpc(buf.freeze()).await;
        let reply = reply.map_err(rpc_status)?;
        let f = frame::parse(frame::message_bytes(&reply)).map_err(malformed)?;
        drop(reply);
        return Ok(respond(shared, f, guard, deadline));
    }
    // A streaming request: OPEN, acknowledged before any SEND so that the server knows
    // the call when they come; then request messages flow from a task (the caller only
    // polls the response) while the first PULL waits for the response head.
    let ack = shared.rpc(buf.freeze()).await;
    let f = frame::parse(frame::message_bytes(&ack.map_err(rpc_status)?)).map_err(malformed)?;
    if f.end() {
        return Ok(respond(shared, f, guard, deadline));
    }
    let failed = guard.request_failed.clone();
    let pump = pump(shared.clone(), call, body, batcher, failed.clone());
    guard.pump = Some(tokio::spawn(pump).abort_handle());
    let pull = shared.rpc(frame::control(PULL, 0, call, None, None)).await;
    if let Some(status) = failed.take() {
        guard.open = false; // the pump has ended the call at the server
        return Err(status);
    }
    let f = frame::parse(frame::message_bytes(&pull.map_err(rpc_status)?)).map_err(malformed)?;
    Ok(respond(shared, f, guard, deadline))
}

/// Send the rest of a streaming request, one SEND per batch, each waiting for the
/// server's acknowledgement (which comes when the handler has taken the previous batch):
/// at most one batch in flight per call, and the next one filling meanwhile.
async fn pump<B>(
    shared: Arc<Shared>,
    call: u64,
    mut body: B,
    mut batcher: Batcher,
    failed: RequestFailed,
) where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<crate::BoxError>,
{
    let mut in_flight: Option<Pin<Box<dyn Future<Output = bool> + Send>>> = None;
    loop {
        let mut buf = BytesMut::with_capacity(1024);
        frame::put_fixed(&mut buf, SEND, 0, call);
        let at = frame::put_len_placeholder(&mut buf);
        // While the last SEND waits for its acknowledgement, the next batch fills: a
        // writer with a short channel is not held to a few messages per round trip.
        let mut filled = None;
        if let Some(mut sent) = in_flight.take() {
            loop {
                tokio::select! {
                    ok = &mut sent => if ok { break } else { return },
                    r = poll_fn(|cx| batcher.poll_fill(Pin::new(&mut body), cx, &mut buf, shared.max)),
                        if filled.is_none() => filled = Some(r),
                }
            }
        }
        let end = match filled {
            Some(r) => batcher.finish(r.map(|f| match f {
                Filled::Full => BatchEnd::More,
                Filled::End(trailers) => BatchEnd::End(trailers),
            })),
            None => {
                poll_fn(|cx| {
                    batcher.poll_batch(Pin::new(&mut body), cx, &mut buf, true, shared.max)
                })
                .await
            }
        };
        let end = match end {
            Ok(end) => end,
            Err(status) => {
                // The request cannot go on: end the call at the server, whose answer to
                // the pending PULL then ends it here, with this status.
                tracing::debug!(target: "homa_tonic", call, %status, "request stream failed");
                failed.set(status);
                let cancel = frame::control(CANCEL, 0, call, None, None);
                let _ = tokio::time::timeout(CANCEL_WAIT, shared.rpc(cancel)).await;
                return;
            }
        };
        frame::patch_len(&mut buf, at);
        let last = matches!(end, BatchEnd::End(_));
        if last {
            frame::set_flag(&mut buf, FLAG_END);
        }
        let shared = shared.clone();
        // Acknowledged, and the call goes on: an answer that ends the call (the handler
        // dropped its request stream, the call ended) stops the pump, which would
        // otherwise drain the whole request stream into refusals.
        let sent = async move {
            let Ok(reply) = shared.rpc(buf.freeze()).await else {
                return false;
            };
            frame::parse(frame::message_bytes(&reply)).is_ok_and(|f| !f.end())
        };
        if last {
            sent.await;
            return;
        }
        in_flight = Some(Box::pin(sent));
    }
}

/// The response head from the first reply; the body holds the rest.
fn respond(
    shared: Arc<Shared>,
    f: Frame,
    mut guard: CallGuard,
    deadline: Option<Instant>,
) -> http::Response<ResponseBody> {
    let end = f.end();
    let mut body = ResponseBody {
        data: Some(f.messages),
        trailers: None,
        stream: None,
    };
    if end {
        guard.open = false;
        body.trailers = f.trailers;
    } else {
        body.stream = Some(Box::new(Stream {
            pull: start_pull(&shared, guard.call),
            pulled: None,
            shared,
            guard,
            sleep: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        }));
    }
    let mut resp = http::Response::new(body);
    *resp.headers_mut() = f.headers.unwrap_or_default();
    resp
}

type PullFuture = Pin<Box<dyn Future<Output = Result<homa::Message, homa::CallError>> + Send>>;

fn start_pull(shared: &Arc<Shared>, call: u64) -> PullFuture {
    let shared = shared.clone();
    Box::pin(async move {
        let pull = frame::control(PULL, 0, call, None, None);
        shared.rpc(pull).await
    })
}

/// The status that ends a stream: the trailers, or the headers of a "trailers-only"
/// frame, which is how the server answers a PULL for a call it no longer knows (after a
/// restart, say) or refuses. Reading the trailers alone lost that status, and tonic
/// reported "missing grpc-status trailer".
fn final_status(headers: Option<HeaderMap>, trailers: Option<HeaderMap>) -> Option<HeaderMap> {
    match (headers, trailers) {
        (Some(h), t)
            if h.contains_key("grpc-status")
                && t.as_ref().is_none_or(|t| !t.contains_key("grpc-status")) =>
        {
            Some(h)
        }
        (_, t) => t,
    }
}

/// Ends the call at the server if it is dropped before the server ended it: stops the
/// request pump and sends a CANCEL (from a spawned task, since drop cannot wait).
struct CallGuard {
    shared: Arc<Shared>,
    call: u64,
    /// The server may still hold state for this call.
    open: bool,
    pump: Option<tokio::task::AbortHandle>,
    /// Why the request stream failed, if it did (set by its pump).
    request_failed: RequestFailed,
}

/// Why a call's request stream failed (a message too long for a frame, say): its pump
/// ends the call at the server, and the call then ends with this status, not with the
/// CANCELLED the server answers the pending PULL with.
#[derive(Clone, Default)]
struct RequestFailed(Arc<std::sync::Mutex<Option<Status>>>);

impl RequestFailed {
    fn set(&self, s: Status) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
    }
    fn take(&self) -> Option<Status> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
        if !self.open {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = self.shared.clone();
        let cancel = frame::control(CANCEL, 0, self.call, None, None);
        rt.spawn(async move {
            let _ = tokio::time::timeout(CANCEL_WAIT, shared.rpc(cancel)).await;
        });
    }
}

/// A streaming response still pulling batches.
struct Stream {
    shared: Arc<Shared>,
    guard: CallGuard,
    /// The PULL in flight: one at a time, issued as soon as the previous batch arrived,
    /// so the client holds at most the batch being read and the one coming.
    pull: PullFuture,
    /// Its outcome, if it came in the poll that issued it.
    pulled: Option<Result<homa::Message, homa::CallError>>,
    sleep: Option<Pin<Box<Sleep>>>,
}

/// The body of a response from a [`Channel`]: the response messages, then the trailers
/// (`grpc-status`...). Dropping it before the end cancels the call.
#[derive(Default)]
pub struct ResponseBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
    stream: Option<Box<Stream>>,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("streaming", &self.stream.is_some())
            .finish()
    }
}

impl ResponseBody {
    fn fail(&mut self, status: Status) {
        self.stream = None;
        self.trailers = Some(status_headers(&status));
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        loop {
            if let Some(data) = this.data.take().filter(|d| !d.is_empty()) {
                return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
            }
            let Some(s) = this.stream.as_mut() else {
                return Poll::Ready(
                    this.trailers
                        .take()
                        .map(|t| Ok(http_body::Frame::trailers(t))),
                );
            };
            if let Some(sleep) = s.sleep.as_mut() {
                if sleep.as_mut().poll(cx).is_ready() {
                    this.fail(deadline_exceeded());
                    continue;
                }
            }
            let pulled = match s.pulled.take() {
                Some(pulled) => pulled,
                None => std::task::ready!(s.pull.as_mut().poll(cx)),
            };
            // The request stream failed (and its pump ended the call at the server).
            if let Some(status) = s.guard.request_failed.take() {
                s.guard.open = false;
                this.fail(status);
                continue;
            }
            let reply = match pulled {
                Err(e) => {
                    this.fail(rpc_status(e));
                    continue;
                }
                Ok(reply) => frame::parse(frame::message_bytes(&reply)),
            };
            match reply {
                Err(e) => this.fail(malformed(e)),
                Ok(f) if f.end() => {
                    s.guard.open = false;
                    this.data = Some(f.messages);
                    this.trailers = final_status(f.headers, f.trailers);
                    this.stream = None;
                }
                Ok(f) => {
                    this.data = Some(f.messages);
                    // The next PULL leaves now, while this batch is read (a future is
                    // lazy: left to the next poll, it would leave only once tonic had
                    // consumed this batch, a round trip lost per batch).
                    s.pull = start_pull(&s.shared, s.guard.call);
                    if let Poll::Ready(pulled) = s.pull.as_mut().poll(cx) {
                        s.pulled = Some(pulled);
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.data.as_ref().is_none_or(|d| d.is_empty())
            && self.trailers.is_none()
            && self.stream.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", code.parse().unwrap());
        h
    }

    #[test]
    fn a_trailers_only_frame_ends_a_stream_with_its_status() {
        // A PULL refused (NOT_FOUND after a server restart): the status is in the headers.
        let ended = final_status(Some(status("5")), Some(HeaderMap::new())).unwrap();
        assert_eq!(ended["grpc-status"], "5");
        // The usual end: the trailers hold it.
        let ended = final_status(None, Some(status("0"))).unwrap();
        assert_eq!(ended["grpc-status"], "0");
        // Both: the trailers win.
        let ended = final_status(Some(status("5")), Some(status("0"))).unwrap();
        assert_eq!(ended["grpc-status"], "0");
        assert!(final_status(None, None).is_none());
    }
}
