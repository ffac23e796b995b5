//! `homa perf server`: answers perf requests over Homa and TCP, and serves metrics over HTTP.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::counters::ServerCounters;
use super::grpc_load::{self, GrpcLane};
use super::homa::{HomaServer, HomaSocketArgs};
use super::transport::{Proto, ProtoChoice};
use super::{tcp, PerfError};

/// Arguments of `homa perf server`.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address to serve on: the Homa (UDP) port and the TCP port are both this one.
    #[arg(long, default_value = "0.0.0.0:4000")]
    pub addr: SocketAddr,
    /// Transports to serve.
    #[arg(long, value_enum, default_value = "both")]
    pub proto: ProtoChoice,
    /// Where to serve `/metrics` (Prometheus text) and `/metrics.json`.
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub metrics_addr: SocketAddr,
    /// Do not start the metrics endpoint.
    #[arg(long)]
    pub no_metrics: bool,
    /// Threads receiving and answering Homa requests.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Homa transport and options.
    #[command(flatten)]
    pub homa: HomaSocketArgs,
    /// Exit after this many seconds (default: run until interrupted).
    #[arg(long, hide = true)]
    pub seconds: Option<u64>,
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

/// Runs `homa perf server` until interrupted (or `--seconds`).
pub fn run(args: &ServerArgs) -> Result<(), PerfError> {
    let counters = Arc::new(ServerCounters::default());
    let protos = args.proto.protos();
    let mut homa = None;
    if protos.contains(&Proto::Homa) {
        let h = HomaServer::spawn(
            args.addr,
            args.threads.max(1),
            counters.clone(),
            args.homa.options()?,
        )?;
        let transport = match h.transport() {
            homa::Transport::Udp => "UDP",
            homa::Transport::RawIp => "raw IP protocol 146",
        };
        println!("perf server: Homa on {} ({transport})", h.addr);
        homa = Some(Arc::new(h));
    }
    if protos.contains(&Proto::Tcp) {
        // With port 0, TCP takes the port Homa got, so one address serves both.
        let tcp_addr = homa.as_ref().map_or(args.addr, |h| h.addr);
        let addr =
            tcp::spawn_server(tcp_addr, counters.clone()).map_err(|source| PerfError::Io {
                what: format!("cannot listen for TCP on {tcp_addr}"),
                source,
            })?;
        println!("perf server: TCP on {addr}");
    }
    for (proto, lane, what) in [
        (Proto::GrpcHoma, GrpcLane::Homa, "gRPC (tonic) over Homa on"),
        (
            Proto::GrpcH2,
            GrpcLane::H2,
            "gRPC (tonic) over HTTP/2, TCP on",
        ),
    ] {
        if protos.contains(&proto) {
            let addr = grpc_load::spawn_server(
                args.addr,
                lane,
                args.threads,
                counters.clone(),
                args.homa.options()?,
            )?;
            println!("perf server: {what} {addr}");
        }
    }
    // Serves for as long as this function runs.
    let _metrics = if args.no_metrics {
        None
    } else {
        let source = Metrics {
            counters: counters.clone(),
            homa: homa.clone(),
        };
        match homa::metrics::serve(args.metrics_addr, source) {
            Ok(endpoint) => {
                let a = endpoint.local_addr();
                println!("perf server: metrics at http://{a}/metrics and http://{a}/metrics.json (or `homa metrics {a}`)");
                Some(endpoint)
            }
            // A busy metrics port should not stop the benchmark.
            Err(e) => {
                eprintln!(
                    "warning: no metrics endpoint: cannot listen on {}: {e} (use --metrics-addr or --no-metrics)",
                    args.metrics_addr
                );
                None
            }
        }
    };
    let start = Instant::now();
    let mut last = counters.snapshot();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = counters.snapshot();
        if now != last {
            // Not println!: a closed stdout (piped into `head`, say) must not stop serving.
            let _ = writeln!(
                std::io::stdout(),
                "[{:>4}s] homa {:>7} req/s {:>7.3} Gbps in | tcp {:>7} req/s {:>7.3} Gbps in",
                start.elapsed().as_secs(),
                now.homa_requests - last.homa_requests,
                (now.homa_bytes_in - last.homa_bytes_in) as f64 * 8.0 / 1e9,
                now.tcp_requests - last.tcp_requests,
                (now.tcp_bytes_in - last.tcp_bytes_in) as f64 * 8.0 / 1e9,
            );
            last = now;
        }
        if args.seconds.is_some_and(|s| start.elapsed().as_secs() >= s) {
            return Ok(());
        }
    }
}
