//! `homa perf tput`: one client streaming N-byte requests with small responses, keeping a
//! window of RPCs outstanding so the pipe never drains; Homa then TCP (one connection), in
//! one process over loopback. Throughput counts request bytes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::header::RequestHeader;
use super::homa::{HomaRpcClient, HomaServer};
use super::server::ServerCounters;
use super::stats::{self, round3};
use super::tcp::{self, TcpRpcClient};
use super::transport::RpcClient;
use super::workload::MAX_MESSAGE_LENGTH;
use super::PerfError;

/// Arguments of `homa perf tput`.
#[derive(Debug, Clone, Args)]
pub struct TputArgs {
    /// Request length, bytes (at most 1,000,000).
    #[arg(long, default_value_t = 1_000_000)]
    pub size: usize,
    /// Measured seconds per transport (after a short warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// RPCs kept outstanding.
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// Response length, bytes.
    #[arg(long, default_value_t = 100)]
    pub response: usize,
    /// End with one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// What one transport achieved.
#[derive(Debug, Clone)]
pub struct TputResult {
    /// Request Gbit/s.
    pub gbps: f64,
    /// RPCs per second.
    pub rpcs_per_sec: f64,
    /// RTT median under this load, µs.
    pub p50_us: f64,
    /// RTT P99, µs.
    pub p99_us: f64,
    /// RPCs that failed (the stream goes on without them).
    pub errors: u64,
    /// The first failure and the transport's counters then.
    pub first_error: Option<String>,
}

/// Streams requests through `client` for `warmup + measure`; counts the measured part.
pub async fn stream<C: RpcClient>(
    client: Arc<C>,
    size: usize,
    response: usize,
    window: usize,
    warmup: Duration,
    measure: Duration,
) -> std::io::Result<TputResult> {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let bytes = Arc::new(AtomicU64::new(0));
    let rpcs = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(stats::new_hist()));
    let errors = Arc::new(Mutex::new((0u64, None::<String>)));
    let mut tasks = Vec::new();
    for w in 0..window.max(1) {
        let (client, bytes, rpcs, hist, errors) = (
            client.clone(),
            bytes.clone(),
            rpcs.clone(),
            hist.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut req = RequestHeader {
                response_len: response as u32,
                id: 0,
                sent_ns: 0,
            }
            .request(size);
            let mut id = w as u32;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    return Ok::<(), std::io::Error>(());
                }
                RequestHeader {
                    response_len: response as u32,
                    id,
                    sent_ns: (t0 - start).as_nanos() as u64,
                }
                .encode(&mut req);
                id = id.wrapping_add(window as u32);
                if let Err(e) = client.call(&req).await {
                    // Count it and go on: one lost RPC should not end the measurement.
                    let mut errs = errors.lock().expect("errors lock");
                    errs.0 += 1;
                    if errs.1.is_none() {
                        let diag = client.diagnostics().unwrap_or_default();
                        errs.1 = Some(format!("{e}; {diag}"));
                    }
                    continue;
                }
                let done = Instant::now();
                // Count RPCs that completed inside the measured window.
                if done >= measure_from && done < end {
                    bytes.fetch_add(size as u64, Ordering::Relaxed);
                    rpcs.fetch_add(1, Ordering::Relaxed);
                    stats::record(
                        &mut hist.lock().expect("hist lock"),
                        (done - t0).as_nanos() as u64,
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(std::io::Error::other)??;
    }
    let secs = measure.as_secs_f64();
    let h = hist.lock().expect("hist lock");
    let (errors, first_error) = std::mem::take(&mut *errors.lock().expect("errors lock"));
    Ok(TputResult {
        errors,
        first_error,
        gbps: bytes.load(Ordering::Relaxed) as f64 * 8.0 / secs / 1e9,
        rpcs_per_sec: rpcs.load(Ordering::Relaxed) as f64 / secs,
        p50_us: stats::us(h.value_at_quantile(0.5)),
        p99_us: stats::us(h.value_at_quantile(0.99)),
    })
}

/// Runs `homa perf tput`.
pub fn run(args: &TputArgs) -> Result<(), PerfError> {
    if args.size == 0 || args.size > MAX_MESSAGE_LENGTH || args.response > MAX_MESSAGE_LENGTH {
        return Err(PerfError::BadLength {
            what: "--size/--response",
            len: args.size.max(args.response),
        });
    }
    let measure = Duration::from_secs_f64(args.seconds.max(0.1));
    let warmup = Duration::from_secs_f64((args.seconds * 0.2).clamp(0.1, 1.0));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| PerfError::Io {
            what: "tokio runtime".into(),
            source,
        })?;
    let counters = Arc::new(ServerCounters::default());
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    println!(
        "perf tput: {}-byte requests, {}-byte responses, {} outstanding, {:.1} s per transport over loopback",
        args.size, args.response, args.window, measure.as_secs_f64()
    );
    let io_err = |what: &'static str| {
        move |source| PerfError::Io {
            what: what.into(),
            source,
        }
    };

    let homa = match HomaServer::spawn(loopback, 2, counters.clone()) {
        Ok(server) => {
            let r = rt.block_on(async {
                let client = Arc::new(HomaRpcClient::bind(server.addr).await?);
                stream(
                    client,
                    args.size,
                    args.response,
                    args.window,
                    warmup,
                    measure,
                )
                .await
                .map_err(io_err("Homa stream"))
            })?;
            Some(r)
        }
        Err(PerfError::HomaUnavailable) => {
            println!("homa: skipped, this build has no Homa runtime");
            None
        }
        Err(e) => return Err(e),
    };
    let tcp_addr = tcp::spawn_server(loopback, counters).map_err(io_err("TCP server"))?;
    let tcp = rt.block_on(async {
        let client = Arc::new(
            TcpRpcClient::connect(tcp_addr, 1)
                .await
                .map_err(io_err("TCP connect"))?,
        );
        stream(
            client,
            args.size,
            args.response,
            args.window,
            warmup,
            measure,
        )
        .await
        .map_err(io_err("TCP stream"))
    })?;

    println!(
        "{:<9} {:>9} {:>10} {:>10} {:>10}",
        "proto", "Gbps", "RPCs/s", "p50_us", "p99_us"
    );
    let row = |name: &str, r: &TputResult| {
        println!(
            "{name:<9} {:>9.3} {:>10.0} {:>10.1} {:>10.1}",
            r.gbps, r.rpcs_per_sec, r.p50_us, r.p99_us
        )
    };
    if let Some(h) = &homa {
        row("homa", h);
    }
    row("tcp", &tcp);
    if let Some(h) = &homa {
        println!("{:<9} {:>9.2}   (ratio)", "homa/tcp", h.gbps / tcp.gbps);
    }
    for (name, r) in [("homa", homa.as_ref()), ("tcp", Some(&tcp))] {
        if let Some(r) = r.filter(|r| r.errors > 0) {
            println!(
                "warning: {name}: {} RPCs failed; first: {}",
                r.errors,
                r.first_error.as_deref().unwrap_or("?")
            );
        }
    }
    if args.json {
        println!(
            "{}",
            json!({
                "homa_gbps": homa.map(|h| round3(h.gbps)),
                "tcp_gbps": round3(tcp.gbps),
            })
        );
    }
    Ok(())
}
