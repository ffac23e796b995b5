//! The Homa side of the perf tools: the only module that touches the `homa` runtime.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::counters::ServerCounters;
use crate::error::PerfError;
use crate::header::{RequestHeader, ResponseBuilder, HEADER_LEN};
use crate::tally::Tally;
use crate::transport::{RpcClient, ServerPicker};
use crate::workload::MAX_MESSAGE_LENGTH;

/// Whether this build can run Homa.
pub const AVAILABLE: bool = true;

/// How long to back off when the socket's outgoing buffer space is used up.
const WOULD_BLOCK_BACKOFF: Duration = Duration::from_micros(200);

pub(crate) fn homa_err(what: String) -> impl FnOnce(homa::BindError) -> PerfError {
    move |e| PerfError::Homa {
        what,
        reason: e.to_string(),
    }
}

/// The socket options the perf tools open their Homa sockets with: those of the TOML file
/// `config` (engine parameters under their Linux names in `[homa]`, socket settings in
/// `[runtime]`; see `homa::Options::from_toml_str`), or the defaults without one; over raw
/// IP protocol 146 instead of UDP when `raw` (`--raw`, `--homa-config` in `homa perf`).
pub fn socket_options(config: Option<&Path>, raw: bool) -> Result<homa::Options, PerfError> {
    let mut opts = match config {
        Some(path) => homa::Options::from_toml_file(path).map_err(|e| PerfError::HomaConfig {
            path: path.to_path_buf(),
            // (A read error names the file itself; the message names it once.)
            reason: match e {
                homa::ConfigFileError::Read { source, .. } => source.to_string(),
                other => other.to_string(),
            },
        })?,
        None => homa::Options::default(),
    };
    if raw {
        opts.transport = homa::Transport::RawIp;
    }
    Ok(opts)
}

/// The local address a client uses to reach `dest`: loopback for a loopback server (so the
/// socket gets loopback's MTU), else the unspecified address of `dest`'s family.
fn client_addr(dest: SocketAddr) -> SocketAddr {
    let ip = match (dest.ip(), dest.ip().is_loopback()) {
        (IpAddr::V4(_), true) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (IpAddr::V6(_), true) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (IpAddr::V4(_), false) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (IpAddr::V6(_), false) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

/// A running perf server on a Homa socket.
#[derive(Debug)]
pub struct HomaServer {
    /// The bound address.
    pub addr: SocketAddr,
    sock: homa::Socket,
}

impl HomaServer {
    /// Binds `addr` (as a server, whatever the port) and answers perf requests on
    /// `threads` threads until the process ends.
    pub fn spawn(
        addr: SocketAddr,
        threads: usize,
        counters: Arc<ServerCounters>,
        options: homa::Options,
    ) -> Result<Self, PerfError> {
        let sock = Self::bind(addr, options).map_err(homa_err(format!(
            "cannot bind a Homa server socket on {addr}"
        )))?;
        Self::serve(sock, threads, counters)
    }

    /// Stop taking requests, let the responses in flight reach their clients (for at most
    /// `grace`), then close the socket; returns how many RPCs were cut off (see
    /// `homa::Socket::shutdown_gracefully`).
    pub fn stop(&self, grace: std::time::Duration) -> usize {
        self.sock.shutdown_gracefully(grace)
    }

    /// Binds a socket for [`HomaServer::serve`]: `addr` as a server, whatever the port.
    pub fn bind(addr: SocketAddr, options: homa::Options) -> Result<homa::Socket, homa::BindError> {
        homa::Socket::bind_with(
            addr,
            homa::Options {
                server: Some(true),
                ..options
            },
        )
    }

    /// Answers perf requests on `sock` (bound as a server) on `threads` threads until the
    /// process ends.
    pub fn serve(
        sock: homa::Socket,
        threads: usize,
        counters: Arc<ServerCounters>,
    ) -> Result<Self, PerfError> {
        for i in 0..threads.max(1) {
            let (sock, counters) = (sock.clone(), counters.clone());
            std::thread::Builder::new()
                .name(format!("perf-homa-{i}"))
                .spawn(move || serve(&sock, &counters))
                .map_err(|source| PerfError::Io {
                    what: "cannot start a Homa server thread".into(),
                    source,
                })?;
        }
        Ok(Self {
            addr: sock.local_addr(),
            sock,
        })
    }

    /// What the socket runs over.
    pub fn transport(&self) -> homa::Transport {
        self.sock.transport()
    }

    /// The endpoint's metrics as Prometheus text (series labelled with the port).
    pub fn prometheus(&self) -> String {
        homa::metrics::Source::prometheus(&self.sock)
    }

    /// The endpoint's metrics as JSON.
    pub fn json(&self) -> serde_json::Value {
        homa::metrics::Source::json(&self.sock)
    }

    /// The endpoint's counters.
    pub fn metrics(&self) -> homa::Metrics {
        self.sock.metrics()
    }

    /// Datagrams the kernel dropped for the endpoint's socket so far.
    pub fn kernel_drops(&self) -> u64 {
        self.sock.info().kernel_drops
    }
}

/// `count` summed over a lane's endpoints (client and server metrics), from `before` to
/// `after`, per RPC completed meanwhile.
fn per_rpc(
    before: &[homa::Metrics],
    after: &[homa::Metrics],
    count: impl Fn(&homa::Metrics) -> u64,
) -> f64 {
    let n = sum(after, &count).saturating_sub(sum(before, &count));
    n as f64 / rpcs_between(before, after) as f64
}

/// `f` summed over endpoints' counters.
fn sum(m: &[homa::Metrics], f: &dyn Fn(&homa::Metrics) -> u64) -> u64 {
    m.iter().map(f).sum()
}

/// RPCs completed between two snapshots of a lane's counters (at least 1).
fn rpcs_between(before: &[homa::Metrics], after: &[homa::Metrics]) -> u64 {
    sum(after, &|m| m.responses_delivered)
        .saturating_sub(sum(before, &|m| m.responses_delivered))
        .max(1)
}

/// Packets a lane's endpoints sent, by type, per RPC completed, between two snapshots of
/// their counters (`before`, `after`: client and server metrics summed).
pub fn packets_per_rpc(
    before: &[homa::Metrics],
    after: &[homa::Metrics],
) -> Vec<(&'static str, f64)> {
    homa_wire::PacketType::ALL
        .iter()
        .map(|&t| (t.name(), per_rpc(before, after, |m| m.sent(t))))
        .collect()
}

/// The DATA packets a lane's endpoints sent again (`"retransmitted"`, first), the
/// datagrams the kernel dropped before they reached the endpoints' sockets
/// (`"kernel_drops"`, their receive buffers full: `kernel_drops` is the lane's total
/// over the same span) and the packets the endpoints dropped on receipt, by reason, per
/// RPC completed (as [`packets_per_rpc`]). Counts, not times: where a lane loses
/// throughput they say whether packets were lost or refused, and sent again.
pub fn losses_per_rpc(
    before: &[homa::Metrics],
    after: &[homa::Metrics],
    kernel_drops: u64,
) -> Vec<(&'static str, f64)> {
    let resent = per_rpc(before, after, |m| m.retransmitted_packets);
    let dropped = kernel_drops as f64 / rpcs_between(before, after) as f64;
    [("retransmitted", resent), ("kernel_drops", dropped)]
        .into_iter()
        .chain(
            homa::DropReason::ALL
                .iter()
                .map(|&r| (r.name(), per_rpc(before, after, |m| m.dropped(r)))),
        )
        .collect()
}

/// Requests one server thread takes from the socket at once.
const SERVE_BATCH: usize = 64;

/// A server thread: takes the requests that arrived together and answers them with one
/// batch (one system call for all of them where they fit).
fn serve(sock: &homa::Socket, counters: &ServerCounters) {
    let mut responses = ResponseBuilder::default();
    let mut header = [0u8; HEADER_LEN];
    let mut requests = Vec::with_capacity(SERVE_BATCH);
    loop {
        match sock.recv_request_batch(&mut requests, SERVE_BATCH) {
            Ok(_) => {}
            Err(homa::RecvError::Shutdown) => return,
            Err(_) => continue,
        }
        let mut batch = sock.batch();
        for msg in requests.drain(..) {
            // Only the header matters; copy it out rather than gather a long message.
            let n = msg.copy_to(&mut header);
            match responses.respond(&header[..n], MAX_MESSAGE_LENGTH) {
                Ok(resp) => {
                    let resp_len = resp.len().max(1);
                    // Homa messages have at least one byte.
                    let body = if resp.is_empty() { &[0u8][..] } else { resp };
                    if let Err(homa::ReplyError::WouldBlock) = batch.reply(&msg, body) {
                        // No room for responses: send what the batch holds, then wait
                        // for room (responses acknowledged give theirs back).
                        std::mem::replace(&mut batch, sock.batch()).send();
                        let _ = sock.reply_when_room(&msg, body);
                    }
                    counters.count_homa(msg.len(), resp_len);
                }
                Err(_) => counters.count_malformed(),
            }
        }
    }
}

/// Which `homa` API the async perf client drives Homa through (`homa perf client` uses
/// `Tokio` unless told; `perf tput` uses `Blocking`, a one-thread pipeline, unless told).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum HomaApi {
    /// A blocking `homa::Socket`: tasks start RPCs with `send_request` (which returns at
    /// once) and receiver threads blocked in `recv` (which drive the socket) complete them,
    /// like the Linux module's `cp_node` client.
    #[default]
    Blocking,
    /// A `homa::aio::Socket` and its `call`.
    Tokio,
}

type Waiter = tokio::sync::oneshot::Sender<io::Result<usize>>;

/// The blocking-socket client's shared state: who waits for which RPC, by cookie.
#[derive(Debug)]
struct Dispatch {
    sock: homa::Socket,
    waiters: Mutex<HashMap<u64, Waiter>>,
    next_cookie: AtomicU64,
    /// Tasks whose `send_request` found no outgoing room wait here; a receiver thread
    /// wakes them after an RPC ends (which gives its room back).
    room: tokio::sync::Notify,
    /// How many tasks are trying to start an RPC with room possibly short (counted from
    /// before their try, so that an RPC ending meanwhile still wakes them).
    trying: AtomicUsize,
}

impl Dispatch {
    fn receive(&self) {
        loop {
            let (cookie, result) = match self.sock.recv() {
                Ok(m) => (m.cookie(), Ok(m.len())),
                Err(homa::RecvError::Rpc {
                    cookie,
                    error,
                    id,
                    peer,
                }) => (
                    cookie,
                    Err(io::Error::from(homa::RecvError::Rpc {
                        cookie,
                        error,
                        id,
                        peer,
                    })),
                ),
                Err(homa::RecvError::Shutdown) => return,
                Err(_) => continue,
            };
            let waiter = self.waiters.lock().expect("waiters lock").remove(&cookie);
            if let Some(w) = waiter {
                let _ = w.send(result);
            }
            if self.trying.load(Ordering::SeqCst) > 0 {
                self.room.notify_waiters();
            }
        }
    }
}

#[derive(Debug)]
enum ClientSocket {
    Tokio(homa::aio::Socket),
    Blocking(Arc<Dispatch>),
}

/// An async Homa perf client (one socket, any number of concurrent RPCs, to one or more
/// servers picked at random per RPC).
#[derive(Debug)]
pub struct HomaRpcClient {
    sock: ClientSocket,
    dests: Vec<SocketAddr>,
    picker: ServerPicker,
}

/// Threads receiving responses for a [`HomaApi::Blocking`] client.
const RECEIVER_THREADS: usize = 2;

impl HomaRpcClient {
    /// A client-only socket sending to `dests` (at least one; all of one address family),
    /// with socket options (call inside a tokio runtime).
    pub async fn bind_with(
        dests: &[SocketAddr],
        api: HomaApi,
        options: homa::Options,
    ) -> Result<Self, PerfError> {
        let first = *dests.first().ok_or_else(|| PerfError::Homa {
            what: "perf client".into(),
            reason: "no server address given".into(),
        })?;
        let local = client_addr(first);
        let err = || homa_err(format!("cannot bind a Homa client socket on {local}"));
        let sock = match api {
            HomaApi::Tokio => ClientSocket::Tokio(
                homa::aio::Socket::bind_with(local, options)
                    .await
                    .map_err(err())?,
            ),
            HomaApi::Blocking => {
                let d = Arc::new(Dispatch {
                    sock: homa::Socket::bind_with(local, options).map_err(err())?,
                    waiters: Mutex::new(HashMap::new()),
                    next_cookie: AtomicU64::new(1),
                    room: tokio::sync::Notify::new(),
                    trying: AtomicUsize::new(0),
                });
                for i in 0..RECEIVER_THREADS {
                    let d = d.clone();
                    std::thread::Builder::new()
                        .name(format!("perf-homa-rx-{i}"))
                        .spawn(move || d.receive())
                        .map_err(|source| PerfError::Io {
                            what: "cannot start a Homa receiver thread".into(),
                            source,
                        })?;
                }
                ClientSocket::Blocking(d)
            }
        };
        Ok(Self {
            sock,
            picker: ServerPicker::new(dests.len()),
            dests: dests.to_vec(),
        })
    }

    /// The socket's counters.
    pub fn metrics(&self) -> homa::Metrics {
        match &self.sock {
            ClientSocket::Tokio(s) => s.metrics(),
            ClientSocket::Blocking(d) => d.sock.metrics(),
        }
    }

    /// Datagrams the kernel dropped for the socket so far.
    pub fn kernel_drops(&self) -> u64 {
        match &self.sock {
            ClientSocket::Tokio(s) => s.info().kernel_drops,
            ClientSocket::Blocking(d) => d.sock.info().kernel_drops,
        }
    }

    /// The server for the next RPC.
    fn dest(&self) -> SocketAddr {
        self.dests[self.picker.pick()]
    }

    async fn call_blocking(&self, d: &Dispatch, request: homa::Bytes) -> io::Result<usize> {
        let dest = self.dest();
        let cookie = d.next_cookie.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Registered before sending: the response may come back before send_request returns.
        d.waiters.lock().expect("waiters lock").insert(cookie, tx);
        // With no outgoing room, wait until an RPC ends and try again. (Polling on a
        // timer instead cost the reactor a wake-up per try: 7-9 `write`s per RPC on the
        // testbed.)
        let mut waiting = false;
        let sent = loop {
            let ended = d.room.notified();
            tokio::pin!(ended);
            // Before the try: an RPC that ends between the try and the wait wakes it.
            ended.as_mut().enable();
            match d.sock.send_request(dest, request.clone(), cookie) {
                Err(homa::SendError::WouldBlock) => {
                    if !waiting {
                        // Counted, then tried again: every ending after this wakes us.
                        waiting = true;
                        d.trying.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    ended.await;
                }
                r => break r,
            }
        };
        if waiting {
            d.trying.fetch_sub(1, Ordering::SeqCst);
        }
        if let Err(e) = sent {
            d.waiters.lock().expect("waiters lock").remove(&cookie);
            return Err(e.into());
        }
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("Homa receiver thread ended")))
    }
}

impl Drop for HomaRpcClient {
    fn drop(&mut self) {
        // Wakes the receiver threads (they hold the socket too).
        if let ClientSocket::Blocking(d) = &self.sock {
            d.sock.shutdown();
        }
    }
}

impl RpcClient for HomaRpcClient {
    async fn call(&self, request: homa::Bytes) -> io::Result<usize> {
        match &self.sock {
            ClientSocket::Blocking(d) => self.call_blocking(d, request).await,
            // With the outgoing buffer budget used up by RPCs in flight, `call` waits for
            // room itself.
            ClientSocket::Tokio(sock) => Ok(sock.call(self.dest(), request).await?.len()),
        }
    }

    fn homa_metrics(&self) -> Option<homa::Metrics> {
        Some(self.metrics())
    }

    fn homa_io(&self) -> Option<homa::IoCounts> {
        Some(match &self.sock {
            ClientSocket::Tokio(s) => s.info().io,
            ClientSocket::Blocking(d) => d.sock.info().io,
        })
    }

    fn diagnostics(&self) -> Option<String> {
        let m = self.metrics();
        Some(format!(
            "client endpoint metrics: {}",
            homa::metrics::to_json(&m)
        ))
    }
}

/// A client socket's packets as `homa perf client --json` reports them:
/// `{"rpcs": responses completed, "sent": {"DATA": n, ..}, "received": {..}}`, every
/// packet type named, and with `io` its system calls and wake-ups
/// (`"io": {"send_calls": n, "receive_calls": n, "waits": n, "timer_sets": n,
/// "wakeups": n}`, see [`homa::IoCounts`]).
pub fn packet_counts(m: &homa::Metrics, io: Option<homa::IoCounts>) -> serde_json::Value {
    let by_type = |count: &dyn Fn(homa_wire::PacketType) -> u64| {
        homa_wire::PacketType::ALL
            .iter()
            .map(|&t| (t.name().to_string(), serde_json::json!(count(t))))
            .collect::<serde_json::Map<_, _>>()
    };
    let mut counts = serde_json::json!({
        "rpcs": m.responses_delivered,
        "sent": by_type(&|t| m.sent(t)),
        "received": by_type(&|t| m.received(t)),
    });
    if let Some(io) = io {
        counts["io"] = io_counts(&io);
    }
    counts
}

/// A socket's system calls and wake-ups (see [`homa::IoCounts`]) by name.
pub fn io_counts(io: &homa::IoCounts) -> serde_json::Value {
    serde_json::json!({
        "send_calls": io.send_calls,
        "receive_calls": io.receive_calls,
        "waits": io.waits,
        "timer_sets": io.timer_sets,
        "wakeups": io.wakeups,
    })
}

/// The Homa lane of `perf tput` over the blocking API: one thread keeps a window of RPCs
/// outstanding, taking the responses that arrived together with one `recv_batch` and
/// sending as many new requests with one [`homa::Batch`], as an application pipelining
/// requests on one thread would.
#[derive(Debug)]
pub struct HomaPipeline {
    sock: homa::Socket,
    dest: SocketAddr,
}

impl HomaPipeline {
    /// A client-only socket sending to `dest`, with socket options.
    pub fn bind(dest: SocketAddr, options: homa::Options) -> Result<Self, PerfError> {
        let local = client_addr(dest);
        let sock = homa::Socket::bind_with(local, options).map_err(homa_err(format!(
            "cannot bind a Homa client socket on {local}"
        )))?;
        Ok(Self { sock, dest })
    }

    /// The socket's counters.
    pub fn metrics(&self) -> homa::Metrics {
        self.sock.metrics()
    }

    /// Datagrams the kernel dropped for the socket so far.
    pub fn kernel_drops(&self) -> u64 {
        self.sock.info().kernel_drops
    }

    /// Keeps `window` requests of `size` bytes outstanding for `dur`, each asking for a
    /// `response`-byte response; counts the RPCs completed meanwhile (then waits for the
    /// rest, uncounted, so the next slice starts from an empty pipe).
    pub fn slice(&self, size: usize, response: usize, window: usize, dur: Duration) -> Tally {
        let start = Instant::now();
        let end = start + dur;
        // Every request carries the same bytes (only the response length matters to the
        // server), shared rather than copied; the cookie says when it was sent.
        let request = homa::Bytes::from(
            RequestHeader {
                response_len: response as u32,
                id: 0,
                sent_ns: 0,
            }
            .request(size),
        );
        let mut tally = Tally {
            secs: dur.as_secs_f64(),
            ..Tally::default()
        };
        let mut outstanding = 0;
        let mut outcomes = Vec::with_capacity(PIPELINE_BATCH);
        loop {
            let now = Instant::now();
            if now < end && outstanding < window.max(1) {
                let mut batch = self.sock.batch();
                let want = window.max(1) - outstanding;
                for _ in 0..want {
                    let cookie = (now - start).as_nanos() as u64;
                    match batch.send_request(self.dest, request.clone(), cookie) {
                        Ok(_) => outstanding += 1,
                        // Outgoing buffer space used up: wait for responses.
                        Err(homa::SendError::WouldBlock) if outstanding > 0 => break,
                        Err(homa::SendError::WouldBlock) => {
                            std::thread::sleep(WOULD_BLOCK_BACKOFF);
                            break;
                        }
                        Err(e) => {
                            tally.failed(1, || e.to_string());
                            break;
                        }
                    }
                }
            }
            if outstanding == 0 {
                if Instant::now() >= end {
                    break;
                }
                continue;
            }
            if self.sock.recv_batch(&mut outcomes, PIPELINE_BATCH).is_err() {
                break; // shut down
            }
            let done = Instant::now();
            for o in outcomes.drain(..) {
                outstanding -= 1;
                match o {
                    Ok(m) => {
                        if done < end {
                            let sent = start + Duration::from_nanos(m.cookie());
                            tally.completed(size, done - sent);
                        }
                    }
                    Err(e) => tally.failed(1, || {
                        let m = homa::metrics::to_json(&self.sock.metrics());
                        format!("{e}; client endpoint metrics: {m}")
                    }),
                }
            }
        }
        tally
    }
}

/// Outcomes the pipeline takes from the socket at once.
const PIPELINE_BATCH: usize = 64;

/// A blocking Homa perf client, one RPC at a time (for `perf rtt`).
#[derive(Debug)]
pub struct BlockingHomaClient {
    sock: homa::Socket,
    dest: SocketAddr,
    /// The last request sent: sent again, it is shared rather than copied, as an
    /// application that sends the same bytes repeatedly would (see `Socket::send_request`).
    last: homa::Bytes,
}

impl BlockingHomaClient {
    /// A client-only socket sending to `dest`, with socket options.
    pub fn bind(dest: SocketAddr, options: homa::Options) -> Result<Self, PerfError> {
        let local = client_addr(dest);
        let sock = homa::Socket::bind_with(local, options).map_err(homa_err(format!(
            "cannot bind a Homa client socket on {local}"
        )))?;
        Ok(Self {
            sock,
            dest,
            last: homa::Bytes::new(),
        })
    }

    /// Sends `request`, waits for the response; returns its length.
    pub fn call(&mut self, request: &[u8]) -> io::Result<usize> {
        if self.last != request {
            self.last = homa::Bytes::copy_from_slice(request);
        }
        Ok(self.sock.call(self.dest, self.last.clone())?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocking-API client's tasks wait for outgoing room while the budget is used up
    /// (woken as RPCs end, with no timer), and every RPC completes: 32 tasks of 8,000-byte
    /// requests through a budget that holds two.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn blocking_client_tasks_wait_for_room_and_all_complete() {
        const TASKS: u32 = 32;
        const RPCS: u32 = 5;
        let server = HomaServer::spawn(
            "127.0.0.1:0".parse().unwrap(),
            2,
            Arc::new(ServerCounters::default()),
            homa::Options::default(),
        )
        .unwrap();
        let mut options = homa::Options::default();
        options.config.max_outgoing_held = 20_000;
        let client = Arc::new(
            HomaRpcClient::bind_with(&[server.addr], HomaApi::Blocking, options)
                .await
                .unwrap(),
        );
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let c = client.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..RPCS {
                    let header = RequestHeader {
                        response_len: 100,
                        id: t * RPCS + i,
                        sent_ns: 0,
                    };
                    let n = c.call(header.request(8_000).into()).await;
                    assert_eq!(n.unwrap_or_else(|e| panic!("task {t} rpc {i}: {e}")), 100);
                }
            }));
        }
        let all = async {
            for t in tasks {
                t.await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(120), all)
            .await
            .expect("every call completes (a lost wake-up would leave one waiting)");
        assert_eq!(
            client.metrics().responses_delivered,
            u64::from(TASKS * RPCS)
        );
    }
}
