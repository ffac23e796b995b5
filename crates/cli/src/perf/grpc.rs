//! `homa perf grpc`: a unary gRPC echo called through tonic, over Homa (`homa-tonic`) and
//! over tonic's standard HTTP/2 transport (TCP), side by side in one run on loopback (see
//! `homa_perf::grpc`): round-trip time one call at a time, then calls per second with
//! `--concurrency` in flight, then messages per second in a server-streaming and a
//! client-streaming call.

use clap::Args;
use homa_perf::grpc::{self, GrpcConfig};
use homa_perf::PerfError;

use super::HomaSocketArgs;

/// Arguments of `homa perf grpc`.
#[derive(Debug, Clone, Args)]
pub struct GrpcArgs {
    /// Length of the echoed bytes in each request and response message (at most
    /// 900,000).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Measured calls per transport, one at a time.
    #[arg(long, default_value_t = 10_000)]
    pub count: usize,
    /// Unmeasured calls per transport first.
    #[arg(long, default_value_t = 1000)]
    pub warmup: usize,
    /// Calls in flight in the throughput measurement (at most 65,536, and at most
    /// 4 GiB of messages).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds of the throughput measurement, per transport.
    #[arg(allow_negative_numbers = true, long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Messages of `--size` bytes in each streaming call (a server-streaming and a
    /// client-streaming call per lane, twice).
    #[arg(long, default_value_t = 20_000)]
    pub stream_messages: usize,
    /// End with one JSON line:
    /// `{"homa":{"p50_us":..,"p99_us":..,"rps":..,"down_mps":..,"up_mps":..},"h2":{..}}`.
    #[arg(long)]
    pub json: bool,
    /// Homa transport and options.
    #[command(flatten)]
    pub homa: HomaSocketArgs,
    /// Measure only this lane (`homa` or `h2`), for profiling; the other's numbers are
    /// then missing.
    #[arg(long, hide = true)]
    pub only: Option<String>,
}

/// Runs `homa perf grpc`.
pub fn run(args: &GrpcArgs) -> Result<(), PerfError> {
    let config = GrpcConfig {
        size: args.size,
        count: args.count,
        warmup: args.warmup,
        concurrency: args.concurrency,
        seconds: args.seconds,
        stream_messages: args.stream_messages,
        only: args.only.clone(),
        options: args.homa.options()?,
    };
    config.validate()?;
    println!(
        "perf grpc: unary {}-byte echo through tonic over Homa (homa-tonic) and over HTTP/2 (tonic's transport, TCP), loopback",
        args.size
    );
    println!(
        "one call at a time: {} measured per lane after {} warm-up; then {} calls in flight for {} s per lane; then streams of {} messages each way",
        args.count, args.warmup, args.concurrency, args.seconds, args.stream_messages
    );
    let report = grpc::measure(&config)?;
    let (homa, h2) = (report.homa, report.h2);

    println!(
        "{:<8} {:>9} {:>9} {:>12} {:>14} {:>14}",
        "lane", "p50_us", "p99_us", "calls/s", "down msgs/s", "up msgs/s"
    );
    for (name, s) in [("homa", homa), ("h2", h2)] {
        println!(
            "{name:<8} {:>9.1} {:>9.1} {:>12.0} {:>14.0} {:>14.0}",
            s.p50_us, s.p99_us, s.rps, s.down_mps, s.up_mps
        );
    }
    println!(
        "{:<8} {:>9.2} {:>9.2} {:>12.2} {:>14.2} {:>14.2}   (ratio)",
        "homa/h2",
        homa.p50_us / h2.p50_us,
        homa.p99_us / h2.p99_us,
        homa.rps / h2.rps,
        homa.down_mps / h2.down_mps,
        homa.up_mps / h2.up_mps
    );
    if args.json {
        println!("{}", report.json());
    }
    Ok(())
}
