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

/// Serves the perf method over `lane` at `addr` from a thread of its own (a tokio runtime
/// with `threads` workers); returns the address served (its port chosen if `addr`'s is 0).
pub fn spawn_server(
    addr: SocketAddr,
    lane: GrpcLane,
    threads: usize,
    counters: Arc<ServerCounters>,
    options: homa::Options,
) -> Result<SocketAddr, PerfError> {
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
                    if let Err(e) = homa_tonic::serve(sock, routes, std::future::pending()).await {
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
                        .serve_with_incoming(incoming)
                        .await;
                    if let Err(e) = r {
                        eprintln!("perf server: gRPC over HTTP/2: {e}");
                    }
                }),
            )
        }
    };
    std::thread::Builder::new()
        .name("perf-grpc-server".into())
        .spawn(move || rt.block_on(task))
        .map_err(io_err("gRPC server thread"))?;
    Ok(served)
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
            Err(status) => Err(io::Error::other(format!(
                "gRPC status {:?}: {}",
                status.code(),
                status.message()
            ))),
        }
    }
}
