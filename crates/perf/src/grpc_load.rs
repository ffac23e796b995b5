//! The gRPC lanes of `homa perf server` and `homa perf client` (`--proto grpc-homa` and
//! `--proto grpc-h2`): perf requests as unary gRPC calls through tonic, over Homa
//! (`homa-tonic`) or over tonic's HTTP/2 transport, so that `homa testbed bench` can put
//! gRPC over both through the same congested switch.
//!
//! A perf request travels as the bytes of a [`Blob`](crate::grpc::Blob) to [`PERF_PATH`]; the response is a
//! `Blob` as long as the request's header asks. Requests and responses are cut to
//! [`MAX_GRPC_PAYLOAD`] bytes, so that the largest workload messages still fit one Homa
//! message with their gRPC framing.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use homa::Bytes;

use crate::counters::ServerCounters;
use crate::error::PerfError;
use crate::grpc::{Client, EchoServer, MAX_GRPC_PAYLOAD, PERF_PATH};
use crate::transport::{RpcClient, ServerPicker};

/// Which channel the gRPC calls take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcLane {
    /// `homa-tonic`.
    Homa,
    /// tonic's HTTP/2 transport over TCP.
    H2,
}

/// A gRPC perf server running on a thread of its own (see [`spawn_server`]).
#[derive(Debug)]
pub struct GrpcServer {
    /// The address served.
    pub addr: SocketAddr,
    /// Sends the shutdown signal (taken by the first [`GrpcServer::begin_stop`]).
    stop: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// Closed when the server has returned.
    done: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

/// How long a stopping gRPC server lets its calls in progress run, and then its last
/// responses over Homa take to be acknowledged (each at most).
pub const STOP_GRACE: Duration = Duration::from_secs(1);

impl GrpcServer {
    /// Signal the server to stop: it refuses new calls (`UNAVAILABLE` over Homa; HTTP/2
    /// sends GOAWAY) and lets the calls in progress end, for at most [`STOP_GRACE`].
    pub fn begin_stop(&self) {
        let tx = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tx) = tx {
            let _ = tx.send(());
        }
    }

    /// Wait for a server told to stop to return, for at most `limit`; whether it did.
    pub fn wait_stopped(&self, limit: Duration) -> bool {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        matches!(
            done.recv_timeout(limit),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        )
    }
}

/// Serves the perf method over `lane` at `addr` from a thread of its own (a tokio runtime
/// with `threads` workers) until told to stop; the address served is the port chosen if
/// `addr`'s is 0.
pub fn spawn_server(
    addr: SocketAddr,
    lane: GrpcLane,
    threads: usize,
    counters: Arc<ServerCounters>,
    options: homa::Options,
) -> Result<GrpcServer, PerfError> {
    let io_err = |what: &str| {
        let what = what.to_string();
        move |source| PerfError::Io { what, source }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(io_err("gRPC server runtime"))?;
    let service = EchoServer {
        counters: Some((counters, lane == GrpcLane::Homa)),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stopped = async move {
        // A dropped sender (the server value gone without a stop) stops nothing.
        if stop_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let (served, task): (
        SocketAddr,
        std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) = match lane {
        GrpcLane::Homa => {
            let sock = rt
                .block_on(homa::aio::Socket::bind_with(
                    addr,
                    homa::Options {
                        server: Some(true),
                        ..options
                    },
                ))
                .map_err(|e| PerfError::Homa {
                    what: format!("cannot serve gRPC over Homa on {addr}"),
                    reason: e.to_string(),
                })?;
            let served = sock.local_addr();
            let routes = homa_tonic::Server::builder()
                .add_service(service)
                .into_routes();
            (
                served,
                Box::pin(async move {
                    let r = homa_tonic::serve_with_grace(sock, routes, stopped, STOP_GRACE);
                    if let Err(e) = r.await {
                        eprintln!("perf server: gRPC over Homa: {e}");
                    }
                }),
            )
        }
        GrpcLane::H2 => {
            let listener = std::net::TcpListener::bind(addr)
                .map_err(io_err(&format!("cannot listen for TCP on {addr}")))?;
            listener
                .set_nonblocking(true)
                .map_err(io_err("TCP listener"))?;
            let served = listener.local_addr().map_err(io_err("TCP listener"))?;
            let listener = {
                let _guard = rt.enter();
                tokio::net::TcpListener::from_std(listener).map_err(io_err("TCP listener"))?
            };
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            (
                served,
                Box::pin(async move {
                    let r = tonic::transport::Server::builder()
                        .add_service(service)
                        .serve_with_incoming_shutdown(incoming, stopped)
                        .await;
                    if let Err(e) = r {
                        eprintln!("perf server: gRPC over HTTP/2: {e}");
                    }
                }),
            )
        }
    };
    let (done_tx, done) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("perf-grpc-server".into())
        .spawn(move || {
            rt.block_on(task);
            // HTTP/2 connections still open after the grace are not waited for.
            rt.shutdown_timeout(Duration::ZERO);
            drop(done_tx);
        })
        .map_err(io_err("gRPC server thread"))?;
    Ok(GrpcServer {
        addr: served,
        stop: std::sync::Mutex::new(Some(stop_tx)),
        done: std::sync::Mutex::new(done),
    })
}

/// A perf client making its RPCs as gRPC calls, to servers picked at random per call.
pub struct GrpcRpcClient {
    clients: Vec<Client>,
    picker: ServerPicker,
}

impl GrpcRpcClient {
    /// Channels to every server in `servers`: over Homa, all on one client socket.
    pub async fn connect(
        servers: &[SocketAddr],
        lane: GrpcLane,
        options: homa::Options,
    ) -> Result<Self, PerfError> {
        let mut clients = Vec::new();
        match lane {
            GrpcLane::Homa => {
                let dest = servers
                    .first()
                    .copied()
                    .unwrap_or(([127, 0, 0, 1], 0).into());
                let local: SocketAddr = if dest.ip().is_loopback() {
                    SocketAddr::new(dest.ip(), 0)
                } else if dest.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let sock = homa::aio::Socket::bind_with(local, options)
                    .await
                    .map_err(|e| PerfError::Homa {
                        what: "cannot open the gRPC client's Homa socket".into(),
                        reason: e.to_string(),
                    })?;
                for &s in servers {
                    let channel = homa_tonic::Channel::with_socket(sock.clone(), s);
                    clients.push(Client::Homa(tonic::client::Grpc::new(channel)));
                }
            }
            GrpcLane::H2 => {
                for s in servers {
                    let channel = tonic::transport::Channel::from_shared(format!("http://{s}"))
                        .map_err(|e| PerfError::Grpc {
                            what: format!("bad server address {s}"),
                            reason: e.to_string(),
                        })?
                        .connect()
                        .await
                        .map_err(|e| PerfError::Grpc {
                            what: format!("cannot connect over HTTP/2 to {s}"),
                            reason: e.to_string(),
                        })?;
                    clients.push(Client::H2(tonic::client::Grpc::new(channel)));
                }
            }
        }
        Ok(Self {
            picker: ServerPicker::new(clients.len()),
            clients,
        })
    }
}

impl RpcClient for GrpcRpcClient {
    async fn call(&self, request: Bytes) -> io::Result<usize> {
        let request = if request.len() > MAX_GRPC_PAYLOAD {
            request.slice(..MAX_GRPC_PAYLOAD)
        } else {
            request
        };
        let mut client = self.clients[self.picker.pick()].clone();
        match client.call(PERF_PATH, request).await {
            Ok(response) => Ok(response.len()),
            // A server of another `--proto` fails the call in gRPC's own words.
            Err(status) => Err(io::Error::other(format!(
                "gRPC status {:?}: {} (is the server a `homa perf server` started with the \
                 same --proto?)",
                status.code(),
                status.message()
            ))),
        }
    }

    fn response_len(&self, asked: usize) -> usize {
        asked.min(MAX_GRPC_PAYLOAD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::RequestHeader;
    use crate::transport::RpcClient;

    /// A stop reaches the server (over Homa and over HTTP/2): a call in progress at the
    /// signal is answered, the server returns, and a call after that fails.
    #[test]
    fn a_stopped_grpc_server_answers_its_calls_and_returns() {
        for lane in [GrpcLane::Homa, GrpcLane::H2] {
            let counters = Arc::new(ServerCounters::default());
            let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
            let server = spawn_server(
                loopback,
                lane,
                1,
                counters.clone(),
                homa::Options::default(),
            )
            .expect("start the gRPC server");
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("client runtime");
            let client = rt
                .block_on(GrpcRpcClient::connect(
                    &[server.addr],
                    lane,
                    homa::Options::default(),
                ))
                .expect("connect");
            let request = |len| {
                let h = RequestHeader {
                    response_len: len,
                    id: 1,
                    sent_ns: 0,
                };
                Bytes::from(h.request(100))
            };
            // Warm up the channel (HTTP/2 connects on the first call).
            let warm = rt.block_on(client.call(request(100)));
            assert_eq!(warm.expect("a call before the stop"), 100, "{lane:?}");
            // A long response, under way when the stop comes: the stop waits until the
            // server's handler has counted the request.
            let client = Arc::new(client);
            let long = rt.spawn({
                let client = client.clone();
                async move { client.call(request(900_000)).await }
            });
            let handled = |c: &ServerCounters| {
                let s = c.snapshot();
                s.homa_requests + s.tcp_requests
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while handled(&counters) < 2 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{lane:?}: the second request never reached the handler"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            server.begin_stop();
            let answered = rt.block_on(long).expect("the call's task");
            assert_eq!(
                answered.expect("the call in progress at the stop"),
                900_000,
                "{lane:?}"
            );
            assert!(
                server.wait_stopped(Duration::from_secs(60)),
                "{lane:?}: the server did not return after the stop"
            );
            let late = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(60), client.call(request(100))).await
            });
            assert!(
                matches!(late, Ok(Err(_))),
                "{lane:?}: a call after the stop: {late:?}"
            );
        }
    }
}
