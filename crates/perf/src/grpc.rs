//! The run of `homa perf grpc`: a unary gRPC echo called through tonic, over Homa
//! (`homa-tonic`) and over tonic's standard HTTP/2 transport (TCP), side by side in one run
//! on loopback.
//!
//! Both lanes run the same tonic client and server code (prost messages, tonic's codec,
//! its router); only the channel and the serving differ, which is what a tonic user
//! changing two lines gets. Two measurements per lane:
//! - one call at a time: round-trip time (p50, p99), alternating between the lanes in
//!   ten rounds so that slow drifts of a shared machine favour neither;
//! - `--concurrency` calls in flight (64 by default) for `--seconds`: calls per second,
//!   split in two alternating halves too;
//! - streams: `--stream-messages` messages of `--size` bytes in one server-streaming call
//!   (the handler writing them through a channel of 4, as tonic's examples do) and in one
//!   client-streaming call (the caller writing through such a channel): messages per
//!   second each way, two alternating rounds.
//!
//! The servers run on a thread of their own (one tokio current-thread runtime, both
//! servers on it), the clients on the calling thread (another one): each lane gets one
//! server thread and one client thread, plus what its transport runs in the background
//! (Homa's per-socket timer thread). [`GrpcReport::json`] is the summary line of `--json`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde_json::json;
use tonic::client::{Grpc, GrpcService};
use tonic::codegen::http;
use tonic::server::{NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use std::sync::Arc;

use crate::counters::ServerCounters;
use crate::error::PerfError;
use crate::header::{RequestHeader, HEADER_LEN};
use crate::stats::{self, round1};

/// The longest echo measured: a call's Homa message also carries its path, its headers
/// and gRPC's framing, and must stay within Homa's 1,000,000 bytes.
pub const MAX_SIZE: usize = 900_000;

/// What [`measure`] runs.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    /// Length of the echoed bytes in each request and response message (at most
    /// [`MAX_SIZE`]).
    pub size: usize,
    /// Measured calls per transport, one at a time.
    pub count: usize,
    /// Unmeasured calls per transport first.
    pub warmup: usize,
    /// Calls in flight in the throughput measurement.
    pub concurrency: usize,
    /// Seconds of the throughput measurement, per transport.
    pub seconds: f64,
    /// Messages in each streaming call of the stream measurement.
    pub stream_messages: usize,
    /// Measure only this lane (`homa` or `h2`); the other's numbers are then missing.
    pub only: Option<String>,
    /// How the Homa sockets are opened.
    pub options: homa::Options,
}

impl GrpcConfig {
    /// Refuses a length or a duration that cannot be measured, before anything runs.
    pub fn validate(&self) -> Result<(), PerfError> {
        if self.size > MAX_SIZE {
            return Err(PerfError::BadLength {
                what: "--size",
                len: self.size,
                min: 0,
                max: MAX_SIZE,
            });
        }
        if let Some(o) = self
            .only
            .as_deref()
            .filter(|o| !matches!(*o, "homa" | "h2"))
        {
            return Err(PerfError::BadProfile(format!(
                "--only {o}: the lanes are homa and h2"
            )));
        }
        crate::seconds_arg("--seconds", self.seconds, false)?;
        crate::outstanding_arg("--concurrency", self.concurrency, self.size)?;
        for (what, n) in [
            ("--count", self.count),
            ("--stream-messages", self.stream_messages),
        ] {
            if n == 0 {
                return Err(PerfError::Zero { what });
            }
        }
        Ok(())
    }
}

/// The echo's request and response: bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Blob {
    /// The bytes echoed.
    #[prost(bytes = "bytes", tag = "1")]
    pub data: Bytes,
}

/// What a streaming call of the stream measurement moves: `count` messages of `size`
/// bytes (the server-streaming request; the client-streaming response says what came).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAsk {
    /// Messages.
    #[prost(uint64, tag = "1")]
    pub count: u64,
    /// Bytes in each (the server-streaming request), or in all (the client-streaming
    /// response).
    #[prost(uint64, tag = "2")]
    pub size: u64,
}

/// The gRPC method both lanes of `perf grpc` call: the request's message back.
const ECHO_PATH: &str = "/homa.perf.Echo/Echo";

/// Server streaming: the messages a [`StreamAsk`] asks for.
const STREAM_PATH: &str = "/homa.perf.Echo/Stream";

/// Client streaming: how many messages and bytes came, as a [`StreamAsk`].
const SINK_PATH: &str = "/homa.perf.Echo/Sink";

/// The channel a streaming handler or caller writes through, as tonic's examples have it.
const STREAM_CHANNEL: usize = 4;

/// The method the gRPC lanes of `perf server` / `perf client` call: a perf request (see
/// [`crate::header`]) in, a response as long as its header asks out.
pub const PERF_PATH: &str = "/homa.perf.Echo/Perf";

/// The longest perf request or response carried over gRPC: Homa's 1,000,000-byte maximum
/// less room for the gRPC framing and the headers of the mapping.
pub const MAX_GRPC_PAYLOAD: usize = 990_000;

/// The echo service, written as tonic's code generator writes a service: a route per
/// method, the prost codec, tonic's unary handling. With `counters`, perf requests are
/// counted (as Homa requests, or as TCP ones for HTTP/2).
#[derive(Debug, Clone, Default)]
pub struct EchoServer {
    /// Where perf requests are counted, and whether as Homa ones.
    pub counters: Option<(Arc<ServerCounters>, bool)>,
}

impl NamedService for EchoServer {
    const NAME: &'static str = "homa.perf.Echo";
}

/// The echo method: the request's message back.
struct Echo;

impl UnaryService<Blob> for Echo {
    type Response = Blob;
    type Future = std::future::Ready<Result<Response<Blob>, Status>>;

    fn call(&mut self, request: Request<Blob>) -> Self::Future {
        std::future::ready(Ok(Response::new(request.into_inner())))
    }
}

/// The perf method: the response the request's header asks for (header echoed, zeros).
struct Perf(Option<(Arc<ServerCounters>, bool)>);

impl UnaryService<Blob> for Perf {
    type Response = Blob;
    type Future = std::future::Ready<Result<Response<Blob>, Status>>;

    fn call(&mut self, request: Request<Blob>) -> Self::Future {
        let data = request.into_inner().data;
        let r = match RequestHeader::decode(&data) {
            Ok(h) => {
                let len = (h.response_len as usize).min(MAX_GRPC_PAYLOAD);
                let mut out = vec![0u8; len];
                let n = len.min(HEADER_LEN);
                out[..n].copy_from_slice(&data[..n]);
                match &self.0 {
                    Some((c, true)) => c.count_homa(data.len(), len),
                    Some((c, false)) => c.count_tcp(data.len(), len),
                    None => {}
                }
                Ok(Response::new(Blob {
                    data: Bytes::from(out),
                }))
            }
            Err(e) => {
                if let Some((c, _)) = &self.0 {
                    c.count_malformed();
                }
                Err(Status::invalid_argument(e.to_string()))
            }
        };
        std::future::ready(r)
    }
}

/// The stream method: the messages asked for, written through a short channel by a task.
struct Stream;

impl tonic::server::ServerStreamingService<StreamAsk> for Stream {
    type Response = Blob;
    type ResponseStream = tokio_stream::wrappers::ReceiverStream<Result<Blob, Status>>;
    type Future = std::future::Ready<Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: Request<StreamAsk>) -> Self::Future {
        let StreamAsk { count, size } = request.into_inner();
        if size > MAX_SIZE as u64 {
            return std::future::ready(Err(Status::invalid_argument("message size too large")));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_CHANNEL);
        let data = Bytes::from(vec![0x5a; size as usize]);
        tokio::spawn(async move {
            for _ in 0..count {
                if tx.send(Ok(Blob { data: data.clone() })).await.is_err() {
                    return;
                }
            }
        });
        std::future::ready(Ok(Response::new(rx.into())))
    }
}

/// The sink method: counts what its request stream brings.
struct Sink;

impl tonic::server::ClientStreamingService<Blob> for Sink {
    type Response = StreamAsk;
    type Future = Pin<Box<dyn Future<Output = Result<Response<StreamAsk>, Status>> + Send>>;

    fn call(&mut self, request: Request<tonic::Streaming<Blob>>) -> Self::Future {
        let mut stream = request.into_inner();
        Box::pin(async move {
            let mut got = StreamAsk::default();
            while let Some(b) = stream.message().await? {
                got.count += 1;
                got.size += b.data.len() as u64;
            }
            Ok(Response::new(got))
        })
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl<B> tower_service::Service<http::Request<B>> for EchoServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let codec = ProstCodec::<Blob, Blob>::default();
        match req.uri().path() {
            ECHO_PATH => {
                Box::pin(async move { Ok(tonic::server::Grpc::new(codec).unary(Echo, req).await) })
            }
            PERF_PATH => {
                let perf = Perf(self.counters.clone());
                Box::pin(async move { Ok(tonic::server::Grpc::new(codec).unary(perf, req).await) })
            }
            STREAM_PATH => Box::pin(async move {
                let codec = ProstCodec::<Blob, StreamAsk>::default();
                Ok(tonic::server::Grpc::new(codec)
                    .server_streaming(Stream, req)
                    .await)
            }),
            SINK_PATH => Box::pin(async move {
                let codec = ProstCodec::<StreamAsk, Blob>::default();
                Ok(tonic::server::Grpc::new(codec)
                    .client_streaming(Sink, req)
                    .await)
            }),
            _ => Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

/// One unary call of `path` through `grpc`: the response's bytes.
async fn unary<T>(grpc: &mut Grpc<T>, path: &'static str, data: Bytes) -> Result<Bytes, Status>
where
    T: GrpcService<tonic::body::Body>,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.into().to_string()))?;
    let path = http::uri::PathAndQuery::from_static(path);
    let codec = ProstCodec::<Blob, Blob>::default();
    let response = grpc.unary(Request::new(Blob { data }), path, codec).await?;
    Ok(response.into_inner().data)
}

/// One server-streaming call of `count` messages of `size` bytes: the messages that came.
async fn stream_down<T>(grpc: &mut Grpc<T>, count: u64, size: u64) -> Result<u64, Status>
where
    T: GrpcService<tonic::body::Body>,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.into().to_string()))?;
    let path = http::uri::PathAndQuery::from_static(STREAM_PATH);
    let codec = ProstCodec::<StreamAsk, Blob>::default();
    let ask = StreamAsk { count, size };
    let mut stream = grpc
        .server_streaming(Request::new(ask), path, codec)
        .await?
        .into_inner();
    let mut got = 0;
    while let Some(b) = stream.message().await? {
        if b.data.len() as u64 != size {
            return Err(Status::internal(
                "a streamed message came with another length",
            ));
        }
        got += 1;
    }
    Ok(got)
}

/// One client-streaming call of `count` messages of `size` bytes, written by a task through
/// a short channel: what the server says came.
async fn stream_up<T>(grpc: &mut Grpc<T>, count: u64, size: u64) -> Result<StreamAsk, Status>
where
    T: GrpcService<tonic::body::Body>,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.into().to_string()))?;
    let path = http::uri::PathAndQuery::from_static(SINK_PATH);
    let codec = ProstCodec::<Blob, StreamAsk>::default();
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_CHANNEL);
    let data = Bytes::from(vec![0x5a; size as usize]);
    let writer = tokio::spawn(async move {
        for _ in 0..count {
            if tx.send(Blob { data: data.clone() }).await.is_err() {
                return;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let r = grpc
        .client_streaming(Request::new(stream), path, codec)
        .await;
    writer.abort();
    Ok(r?.into_inner())
}

/// What one lane measured.
#[derive(Debug, Clone, Copy)]
pub struct LaneStats {
    /// Median RTT of one call at a time, µs.
    pub p50_us: f64,
    /// Its P99, µs.
    pub p99_us: f64,
    /// Calls per second with `concurrency` in flight.
    pub rps: f64,
    /// Messages per second in a server-streaming call.
    pub down_mps: f64,
    /// Messages per second in a client-streaming call.
    pub up_mps: f64,
}

/// What [`measure`] measured: the two lanes.
#[derive(Debug, Clone, Copy)]
pub struct GrpcReport {
    /// tonic over Homa.
    pub homa: LaneStats,
    /// tonic over HTTP/2.
    pub h2: LaneStats,
}

impl GrpcReport {
    /// The summary as one line of JSON,
    /// `{"homa":{"p50_us":..,"p99_us":..,"rps":..,"down_mps":..,"up_mps":..},"h2":{..}}`.
    pub fn json(&self) -> String {
        // By hand, to keep the keys in this order (serde_json's maps sort them).
        format!(
            "{{\"homa\":{},\"h2\":{}}}",
            self.homa.json(),
            self.h2.json()
        )
    }
}

impl LaneStats {
    fn json(&self) -> serde_json::Value {
        json!({
            "p50_us": round1(self.p50_us),
            "p99_us": round1(self.p99_us),
            "rps": self.rps.round(),
            "down_mps": self.down_mps.round(),
            "up_mps": self.up_mps.round(),
        })
    }
}

/// A tonic client on one of the two channels.
#[derive(Clone)]
pub enum Client {
    /// Over Homa.
    Homa(Grpc<homa_tonic::Channel>),
    /// Over HTTP/2 (tonic's transport).
    H2(Grpc<tonic::transport::Channel>),
}

impl Client {
    /// One unary call of `path`: the response's bytes.
    pub async fn call(&mut self, path: &'static str, data: Bytes) -> Result<Bytes, Status> {
        match self {
            Client::Homa(g) => unary(g, path, data).await,
            Client::H2(g) => unary(g, path, data).await,
        }
    }

    /// A server-streaming call, then a client-streaming one, of `count` messages of
    /// `size` bytes, each checked: how long each took.
    async fn streams(&mut self, count: u64, size: u64) -> Result<(Duration, Duration), Status> {
        let t0 = Instant::now();
        let down = match self {
            Client::Homa(g) => stream_down(g, count, size).await?,
            Client::H2(g) => stream_down(g, count, size).await?,
        };
        let t1 = Instant::now();
        let up = match self {
            Client::Homa(g) => stream_up(g, count, size).await?,
            Client::H2(g) => stream_up(g, count, size).await?,
        };
        let t2 = Instant::now();
        if down != count || up.count != count || up.size != count * size {
            return Err(Status::internal("a stream lost or gained messages"));
        }
        Ok((t1 - t0, t2 - t1))
    }

    /// An echo call, its response checked for length.
    async fn echo(&mut self, data: Bytes) -> Result<(), Status> {
        let len = data.len();
        if self.call(ECHO_PATH, data).await?.len() != len {
            return Err(Status::internal("the echo came back with another length"));
        }
        Ok(())
    }
}

struct Lane {
    name: &'static str,
    client: Client,
    hist: Histogram<u64>,
    calls: u64,
    busy: Duration,
    /// Messages streamed each way, and the time it took.
    streamed: u64,
    down: Duration,
    up: Duration,
}

/// The servers' addresses, and what stops them.
struct Servers {
    homa: SocketAddr,
    h2: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> PerfError + '_ {
    move |source| PerfError::Io {
        what: what.to_string(),
        source,
    }
}

fn homa_err(what: &str) -> impl FnOnce(String) -> PerfError + '_ {
    move |reason| PerfError::Homa {
        what: what.to_string(),
        reason,
    }
}

fn grpc_err(what: &str) -> impl FnOnce(String) -> PerfError + '_ {
    move |reason| PerfError::Grpc {
        what: what.to_string(),
        reason,
    }
}

/// Both echo servers on a thread of their own, on free loopback ports.
fn spawn_servers(options: homa::Options) -> Result<Servers, PerfError> {
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_err("server runtime"))?;
    let listener = std::net::TcpListener::bind(loopback).map_err(io_err("TCP listener"))?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("TCP listener"))?;
    let h2 = listener.local_addr().map_err(io_err("TCP listener"))?;
    let sock = rt
        .block_on(homa::aio::Socket::bind_with(
            loopback,
            homa::Options {
                server: Some(true),
                ..options
            },
        ))
        .map_err(|e| homa_err("server socket")(e.to_string()))?;
    let homa = sock.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("perf-grpc-servers".into())
        .spawn(move || {
            rt.block_on(async move {
                let incoming = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => {
                        tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true))
                    }
                    Err(e) => {
                        eprintln!("homa perf grpc: TCP listener: {e}");
                        return;
                    }
                };
                let (stop_h2, h2_stopped) = tokio::sync::oneshot::channel::<()>();
                let h2 = tonic::transport::Server::builder()
                    .add_service(EchoServer::default())
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = h2_stopped.await;
                    });
                let routes = homa_tonic::Server::builder()
                    .add_service(EchoServer::default())
                    .into_routes();
                let homa = homa_tonic::serve(sock, routes, async {
                    let _ = stopped.await;
                    let _ = stop_h2.send(());
                });
                let (h2, homa) = tokio::join!(h2, homa);
                if let Err(e) = h2 {
                    eprintln!("homa perf grpc: HTTP/2 server: {e}");
                }
                if let Err(e) = homa {
                    eprintln!("homa perf grpc: Homa server: {e}");
                }
            })
        })
        .map_err(io_err("server thread"))?;
    Ok(Servers {
        homa,
        h2,
        stop,
        thread,
    })
}

/// Measures both lanes on loopback: servers on a thread of their own, the clients on this
/// one.
pub fn measure(config: &GrpcConfig) -> Result<GrpcReport, PerfError> {
    config.validate()?;
    let options = config.options.clone();
    let servers = spawn_servers(options.clone())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_err("client runtime"))?;
    let result = rt.block_on(measure_lanes(config, options, servers.homa, servers.h2));
    // The client runtime goes first: its HTTP/2 connection task closes the connection,
    // which the HTTP/2 server's graceful shutdown waits for.
    drop(rt);
    let _ = servers.stop.send(());
    let _ = servers.thread.join();
    let (homa, h2) = result?;
    Ok(GrpcReport { homa, h2 })
}

/// Both lanes' measurements: (homa, h2).
async fn measure_lanes(
    config: &GrpcConfig,
    options: homa::Options,
    homa_addr: SocketAddr,
    h2_addr: SocketAddr,
) -> Result<(LaneStats, LaneStats), PerfError> {
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    let sock = homa::aio::Socket::bind_with(loopback, options)
        .await
        .map_err(|e| homa_err("client socket")(e.to_string()))?;
    let homa = Grpc::new(homa_tonic::Channel::with_socket(sock, homa_addr));
    let h2 = tonic::transport::Channel::from_shared(format!("http://{h2_addr}"))
        .map_err(|e| grpc_err("HTTP/2 address")(e.to_string()))?
        .connect()
        .await
        .map_err(|e| grpc_err("HTTP/2 connect")(e.to_string()))?;
    let mut lanes = [
        Lane {
            name: "homa",
            client: Client::Homa(homa),
            hist: stats::new_hist(),
            calls: 0,
            busy: Duration::ZERO,
            streamed: 0,
            down: Duration::ZERO,
            up: Duration::ZERO,
        },
        Lane {
            name: "h2",
            client: Client::H2(Grpc::new(h2)),
            hist: stats::new_hist(),
            calls: 0,
            busy: Duration::ZERO,
            streamed: 0,
            down: Duration::ZERO,
            up: Duration::ZERO,
        },
    ];
    let data = Bytes::from(vec![0x5a; config.size]);
    let failed = |name: &'static str| {
        move |s: Status| PerfError::Grpc {
            what: format!("{name} call"),
            reason: s.to_string(),
        }
    };
    let skip = |name: &str| config.only.as_deref().is_some_and(|o| o != name);
    for lane in &mut lanes {
        if skip(lane.name) {
            continue;
        }
        for _ in 0..config.warmup {
            lane.client
                .echo(data.clone())
                .await
                .map_err(failed(lane.name))?;
        }
    }
    let rounds = 10.min(config.count.max(1));
    for round in 0..rounds {
        let n = config.count / rounds + usize::from(round < config.count % rounds);
        for lane in &mut lanes {
            if skip(lane.name) {
                continue;
            }
            for _ in 0..n {
                let t0 = Instant::now();
                let r = lane.client.echo(data.clone()).await;
                let took = t0.elapsed();
                r.map_err(failed(lane.name))?;
                stats::record(&mut lane.hist, took.as_nanos() as u64);
            }
        }
    }
    // Throughput: two alternating halves per lane.
    let half = Duration::from_secs_f64(config.seconds / 2.0);
    for _ in 0..2 {
        for lane in &mut lanes {
            if skip(lane.name) {
                continue;
            }
            let t0 = Instant::now();
            let until = t0 + half;
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..config.concurrency.max(1) {
                let mut client = lane.client.clone();
                let data = data.clone();
                tasks.spawn(async move {
                    let mut calls = 0u64;
                    while Instant::now() < until {
                        client.echo(data.clone()).await?;
                        calls += 1;
                    }
                    Ok::<u64, Status>(calls)
                });
            }
            while let Some(r) = tasks.join_next().await {
                let calls = r
                    .map_err(|e| grpc_err("load task")(e.to_string()))?
                    .map_err(failed(lane.name))?;
                lane.calls += calls;
            }
            lane.busy += t0.elapsed();
        }
    }
    // Streams: two alternating rounds per lane.
    for _ in 0..2 {
        for lane in &mut lanes {
            if skip(lane.name) {
                continue;
            }
            let n = config.stream_messages as u64;
            let (down, up) = lane
                .client
                .streams(n, config.size as u64)
                .await
                .map_err(failed(lane.name))?;
            lane.streamed += n;
            lane.down += down;
            lane.up += up;
        }
    }
    let stats_of = |l: &Lane| LaneStats {
        p50_us: stats::us(l.hist.value_at_quantile(0.5)),
        p99_us: stats::us(l.hist.value_at_quantile(0.99)),
        rps: l.calls as f64 / l.busy.as_secs_f64(),
        down_mps: l.streamed as f64 / l.down.as_secs_f64(),
        up_mps: l.streamed as f64 / l.up.as_secs_f64(),
    };
    Ok((stats_of(&lanes[0]), stats_of(&lanes[1])))
}
