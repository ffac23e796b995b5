//! The perf server of `homa perf server`: answers perf requests over Homa, TCP and gRPC
//! (the transports asked for, on one port number), and serves its counters and the Homa
//! socket's metrics over HTTP.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::json;

use crate::counters::ServerCounters;
use crate::error::PerfError;
use crate::grpc_load::{self, GrpcLane};
use crate::homa::HomaServer;
use crate::tcp;
use crate::transport::Proto;

/// What a perf server serves, and where.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The address: the Homa (UDP) port and the TCP port are both this one (with port 0,
    /// TCP takes the port Homa got).
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
    /// The gRPC servers: `(Proto::GrpcHoma or Proto::GrpcH2, address)`.
    pub grpc: Vec<(Proto, SocketAddr)>,
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

impl PerfServer {
    /// Starts serving `config.protos` on `config.addr`, and the metrics endpoint.
    pub fn start(config: &ServerConfig) -> Result<PerfServer, PerfError> {
        let counters = Arc::new(ServerCounters::default());
        let protos = &config.protos;
        let mut homa = None;
        if protos.contains(&Proto::Homa) {
            let h = HomaServer::spawn(
                config.addr,
                config.threads.max(1),
                counters.clone(),
                config.options.clone(),
            )?;
            homa = Some(Arc::new(h));
        }
        let mut tcp = None;
        if protos.contains(&Proto::Tcp) {
            // With port 0, TCP takes the port Homa got, so one address serves both.
            let tcp_addr = homa.as_ref().map_or(config.addr, |h| h.addr);
            let addr =
                tcp::spawn_server(tcp_addr, counters.clone()).map_err(|source| PerfError::Io {
                    what: format!("cannot listen for TCP on {tcp_addr}"),
                    source,
                })?;
            tcp = Some(addr);
        }
        let mut grpc = Vec::new();
        for (proto, lane) in [
            (Proto::GrpcHoma, GrpcLane::Homa),
            (Proto::GrpcH2, GrpcLane::H2),
        ] {
            if protos.contains(&proto) {
                let addr = grpc_load::spawn_server(
                    config.addr,
                    lane,
                    config.threads,
                    counters.clone(),
                    config.options.clone(),
                )?;
                grpc.push((proto, addr));
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
}
