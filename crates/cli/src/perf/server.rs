//! `homa perf server`: answers perf requests over Homa and TCP, and serves metrics over HTTP.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

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

/// Requests answered, by transport (shared by all server threads).
#[derive(Debug, Default)]
pub struct ServerCounters {
    homa_requests: AtomicU64,
    homa_bytes_in: AtomicU64,
    homa_bytes_out: AtomicU64,
    tcp_requests: AtomicU64,
    tcp_bytes_in: AtomicU64,
    tcp_bytes_out: AtomicU64,
    malformed: AtomicU64,
}

/// A copy of [`ServerCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Homa requests answered.
    pub homa_requests: u64,
    /// Homa request bytes received.
    pub homa_bytes_in: u64,
    /// Homa response bytes sent.
    pub homa_bytes_out: u64,
    /// TCP requests answered.
    pub tcp_requests: u64,
    /// TCP request bytes received.
    pub tcp_bytes_in: u64,
    /// TCP response bytes sent.
    pub tcp_bytes_out: u64,
    /// Requests too short for the perf header (dropped for Homa, answered empty for TCP).
    pub malformed: u64,
}

impl ServerCounters {
    /// One Homa request of `bytes_in` answered with `bytes_out`.
    pub fn count_homa(&self, bytes_in: usize, bytes_out: usize) {
        self.homa_requests.fetch_add(1, Ordering::Relaxed);
        self.homa_bytes_in
            .fetch_add(bytes_in as u64, Ordering::Relaxed);
        self.homa_bytes_out
            .fetch_add(bytes_out as u64, Ordering::Relaxed);
    }

    /// One TCP request of `bytes_in` answered with `bytes_out`.
    pub fn count_tcp(&self, bytes_in: usize, bytes_out: usize) {
        self.tcp_requests.fetch_add(1, Ordering::Relaxed);
        self.tcp_bytes_in
            .fetch_add(bytes_in as u64, Ordering::Relaxed);
        self.tcp_bytes_out
            .fetch_add(bytes_out as u64, Ordering::Relaxed);
    }

    /// One request too short for the header.
    pub fn count_malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> CounterSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            homa_requests: l(&self.homa_requests),
            homa_bytes_in: l(&self.homa_bytes_in),
            homa_bytes_out: l(&self.homa_bytes_out),
            tcp_requests: l(&self.tcp_requests),
            tcp_bytes_in: l(&self.tcp_bytes_in),
            tcp_bytes_out: l(&self.tcp_bytes_out),
            malformed: l(&self.malformed),
        }
    }
}

impl CounterSnapshot {
    /// Prometheus text for the perf server's own counters.
    pub fn prometheus(&self) -> String {
        let mut s = String::new();
        let mut family = |name: &str, help: &str, homa: u64, tcp: u64| {
            s.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{proto=\"homa\"}} {homa}\n{name}{{proto=\"tcp\"}} {tcp}\n"
            ));
        };
        family(
            "homa_perf_requests_total",
            "Perf requests answered.",
            self.homa_requests,
            self.tcp_requests,
        );
        family(
            "homa_perf_request_bytes_total",
            "Perf request bytes received.",
            self.homa_bytes_in,
            self.tcp_bytes_in,
        );
        family(
            "homa_perf_response_bytes_total",
            "Perf response bytes sent.",
            self.homa_bytes_out,
            self.tcp_bytes_out,
        );
        s.push_str(&format!(
            "# HELP homa_perf_malformed_requests_total Requests shorter than the perf header.\n# TYPE homa_perf_malformed_requests_total counter\nhoma_perf_malformed_requests_total {}\n",
            self.malformed
        ));
        s
    }

    /// The counters as JSON.
    pub fn json(&self) -> serde_json::Value {
        json!({
            "homa": {"requests": self.homa_requests, "request_bytes": self.homa_bytes_in, "response_bytes": self.homa_bytes_out},
            "tcp": {"requests": self.tcp_requests, "request_bytes": self.tcp_bytes_in, "response_bytes": self.tcp_bytes_out},
            "malformed": self.malformed,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_is_well_formed() {
        let c = ServerCounters::default();
        c.count_tcp(100, 10);
        c.count_homa(5, 6);
        c.count_malformed();
        let text = c.snapshot().prometheus();
        assert!(text.contains("homa_perf_requests_total{proto=\"tcp\"} 1\n"));
        assert!(text.contains("homa_perf_request_bytes_total{proto=\"homa\"} 5\n"));
        assert!(text.contains("homa_perf_malformed_requests_total 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("homa_perf_"), "{line}");
            value.parse::<u64>().unwrap();
        }
        assert_eq!(c.snapshot().json()["tcp"]["response_bytes"], 10);
    }
}
