//! The perf server of `homa perf server`: answers perf requests over Homa, TCP and gRPC
//! (the transports asked for, on one port number), and serves its counters and the Homa
//! socket's metrics over HTTP.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use serde_json::json;

use crate::counters::ServerCounters;
use crate::error::PerfError;
use crate::grpc_load::{self, GrpcLane};
use crate::homa::{homa_err, HomaServer};
use crate::tcp;
use crate::transport::Proto;

/// What a perf server serves, and where.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address: the Homa (UDP) port and the TCP port are both this one (with port 0,
    /// one number free for both).
    pub addr: SocketAddr,
    /// The transports to serve.
    pub protos: Vec<Proto>,
    /// Where to serve `/metrics` (Prometheus text) and `/metrics.json`; `None`: nowhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Threads receiving and answering Homa (and gRPC) requests.
    pub threads: usize,
    /// How the Homa sockets are opened.
    pub options: homa::Options,
}

/// A running perf server. Its servers run on threads of their own for as long as the
/// process does; the metrics endpoint, for as long as this value lives.
pub struct PerfServer {
    /// What it has served so far.
    pub counters: Arc<ServerCounters>,
    /// The Homa server, if Homa is served.
    pub homa: Option<Arc<HomaServer>>,
    /// The TCP server's address, if TCP is served.
    pub tcp: Option<SocketAddr>,
    /// The gRPC servers: `(Proto::GrpcHoma or Proto::GrpcH2, server)`.
    pub grpc: Vec<(Proto, grpc_load::GrpcServer)>,
    /// The metrics endpoint (`None`: not asked for), or why it could not listen (a busy
    /// port does not stop the server).
    pub metrics: Option<io::Result<homa::metrics::MetricsServer>>,
}

struct Metrics {
    counters: Arc<ServerCounters>,
    homa: Option<Arc<HomaServer>>,
}

impl homa::metrics::Source for Metrics {
    fn prometheus(&self) -> String {
        let mut s = self.counters.snapshot().prometheus();
        if let Some(h) = &self.homa {
            s.push_str(&h.prometheus());
        }
        s
    }
    fn json(&self) -> serde_json::Value {
        json!({
            "perf": self.counters.snapshot().json(),
            "homa": self.homa.as_ref().map(|h| h.json()),
        })
    }
}

/// How many port numbers to try, with port 0, before giving up on one that is free for
/// both UDP and TCP.
const PAIR_TRIES: usize = 64;

/// Opens the Homa and TCP servers `config` asks for, on one port number. With port 0 the
/// system picks a TCP port and Homa binds the same number over UDP; when another socket
/// already holds that number for UDP, both let go and the next pick is tried.
fn bind_homa_and_tcp(
    config: &ServerConfig,
    counters: &Arc<ServerCounters>,
) -> Result<(Option<Arc<HomaServer>>, Option<SocketAddr>), PerfError> {
    let (want_homa, want_tcp) = (
        config.protos.contains(&Proto::Homa),
        config.protos.contains(&Proto::Tcp),
    );
    let threads = config.threads.max(1);
    let homa_server = |addr| {
        HomaServer::spawn(addr, threads, counters.clone(), config.options.clone()).map(Arc::new)
    };
    let tcp_error = |addr: SocketAddr| {
        move |source| PerfError::Io {
            what: format!("cannot listen for TCP on {addr}"),
            source,
        }
    };
    match (want_homa, want_tcp) {
        (false, false) => Ok((None, None)),
        (true, false) => Ok((Some(homa_server(config.addr)?), None)),
        (false, true) => Ok((
            None,
            Some(tcp::spawn_server(config.addr, counters.clone()).map_err(tcp_error(config.addr))?),
        )),
        (true, true) if config.addr.port() != 0 => {
            let homa = homa_server(config.addr)?;
            let tcp =
                tcp::spawn_server(config.addr, counters.clone()).map_err(tcp_error(config.addr))?;
            Ok((Some(homa), Some(tcp)))
        }
        (true, true) => {
            for _ in 0..PAIR_TRIES {
                let listener = TcpListener::bind(config.addr).map_err(tcp_error(config.addr))?;
                let addr = listener.local_addr().map_err(tcp_error(config.addr))?;
                let sock = match HomaServer::bind(addr, config.options.clone()) {
                    Err(homa::BindError::AddrInUse(_)) => continue,
                    bound => bound.map_err(homa_err(format!(
                        "cannot bind a Homa server socket on {addr}"
                    )))?,
                };
                let homa = HomaServer::serve(sock, threads, counters.clone())?;
                let tcp =
                    tcp::serve_listener(listener, counters.clone()).map_err(tcp_error(addr))?;
                return Ok((Some(Arc::new(homa)), Some(tcp)));
            }
            Err(PerfError::Io {
                what: format!(
                    "no port number free for both UDP and TCP on {} after {PAIR_TRIES} tries",
                    config.addr.ip()
                ),
                source: io::ErrorKind::AddrInUse.into(),
            })
        }
    }
}

impl PerfServer {
    /// Starts serving `config.protos` on `config.addr`, and the metrics endpoint.
    pub fn start(config: &ServerConfig) -> Result<PerfServer, PerfError> {
        let counters = Arc::new(ServerCounters::default());
        let protos = &config.protos;
        let (homa, tcp) = bind_homa_and_tcp(config, &counters)?;
        let mut grpc = Vec::new();
        for (proto, lane) in [
            (Proto::GrpcHoma, GrpcLane::Homa),
            (Proto::GrpcH2, GrpcLane::H2),
        ] {
            if protos.contains(&proto) {
                let server = grpc_load::spawn_server(
                    config.addr,
                    lane,
                    config.threads,
                    counters.clone(),
                    config.options.clone(),
                )?;
                grpc.push((proto, server));
            }
        }
        let metrics = config.metrics_addr.map(|addr| {
            let source = Metrics {
                counters: counters.clone(),
                homa: homa.clone(),
            };
            homa::metrics::serve(addr, source)
        });
        Ok(PerfServer {
            counters,
            homa,
            tcp,
            grpc,
            metrics,
        })
    }
    /// Stop serving Homa and gRPC, letting what is under way finish: the gRPC servers
    /// refuse new calls and let those in progress end (see [`grpc_load::STOP_GRACE`]),
    /// and the Homa socket refuses new requests and delivers the responses already given,
    /// for at most `grace` (`Socket::shutdown_gracefully`). Returns how many Homa RPCs
    /// were cut off. TCP connections are left to the process's exit.
    pub fn stop(&self, grace: std::time::Duration) -> usize {
        for (_, g) in &self.grpc {
            g.begin_stop();
        }
        let cut = self.homa.as_ref().map_or(0, |h| h.stop(grace));
        for (_, g) in &self.grpc {
            // The calls' grace, then the socket's.
            g.wait_stopped(grpc_load::STOP_GRACE * 2);
        }
        cut
    }
}
