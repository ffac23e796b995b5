//! `homa demo`: Homa and TCP side by side in one command, on loopback, in under a minute.
//!
//! Starts a Homa server and a TCP server on 127.0.0.1 inside this process, then drives the
//! same open-loop mixed workload (W4 by default: mostly short messages, a few up to 1 MB)
//! through each in turn, and prints per-length-bucket RTTs for both with their ratio. No
//! arguments, no root, no traffic beyond 127.0.0.1.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::perf::client::{self, ProtoRun, RunPlan};
use crate::perf::counters::ServerCounters;
use crate::perf::homa::{HomaApi, HomaServer, HomaSocketArgs};
use crate::perf::load::LoadConfig;
use crate::perf::stats::{self, cell, BucketRow};
use crate::perf::transport::Proto;
use crate::perf::workload::{Workload, WorkloadSpec};
use crate::perf::{tcp, PerfError};

/// Environment variable that shortens the demo to about two seconds (for tests).
pub const QUICK_ENV: &str = "HOMA_DEMO_QUICK";

/// Arguments of `homa demo` (all optional).
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Request lengths: w1..w5, a length in bytes, or a CDF file.
    #[arg(long, default_value = "w4")]
    pub workload: WorkloadSpec,
    /// Offered load, Gbit/s of request bytes.
    #[arg(long, default_value_t = 1.0)]
    pub gbps: f64,
    /// Seconds of load per transport.
    #[arg(long, default_value_t = 4.0)]
    pub seconds: f64,
    /// Which `homa` API the client uses. The default, tokio, completes each RPC on the
    /// runtime's own thread, as the TCP client does; with `blocking`, a receiver thread
    /// hands each response to its task, one more thread wake-up per RPC (its median RTT was
    /// about 1.4x the tokio client's in this demo on a 2-core machine).
    #[arg(long, value_enum, default_value_t = HomaApi::Tokio)]
    pub homa_api: HomaApi,
    /// Homa transport and options (both ends).
    #[command(flatten)]
    pub homa: HomaSocketArgs,
    /// About two seconds in all (also with HOMA_DEMO_QUICK=1).
    #[arg(long, hide = true)]
    pub quick: bool,
}

/// Runs `homa demo`; errors are printed on stderr.
pub fn run(args: &DemoArgs) -> ExitCode {
    match demo(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("homa demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo(args: &DemoArgs) -> Result<(), PerfError> {
    if !(args.gbps > 0.0 && args.gbps.is_finite()) {
        return Err(PerfError::BadRate(args.gbps));
    }
    let quick = args.quick || std::env::var_os(QUICK_ENV).is_some_and(|v| v != "0");
    let (seconds, calibration) = if quick {
        (0.6, Duration::from_millis(200))
    } else {
        (args.seconds.clamp(0.5, 20.0), Duration::from_millis(800))
    };
    let workload = Arc::new(Workload::load(&args.workload, None)?);
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    let counters = Arc::new(ServerCounters::default());

    println!(
        "homa demo: Homa and TCP side by side, client and servers in this process on 127.0.0.1"
    );
    println!("{}", workload.describe());
    println!(
        "open-loop Poisson arrivals at {:.2} Gbps of requests, 100-byte responses, {seconds:.1} s per transport; TCP spreads RPCs over 8 connections",
        args.gbps
    );

    let homa_options = args.homa.options()?;
    let homa_server = match HomaServer::spawn(loopback, 2, counters.clone(), homa_options.clone()) {
        Ok(s) => Some(s),
        Err(PerfError::HomaUnavailable) => {
            println!("(this build has no Homa runtime: showing TCP only)");
            None
        }
        Err(e) => return Err(e),
    };
    let tcp_addr = tcp::spawn_server(loopback, counters).map_err(|source| PerfError::Io {
        what: "cannot start the TCP server on 127.0.0.1".into(),
        source,
    })?;

    let plan = RunPlan {
        load: LoadConfig {
            workload: workload.clone(),
            gbps: args.gbps,
            duration: Duration::from_secs_f64(seconds),
            response_len: Some(100),
            max_outstanding: 1000,
            seed: 1,
            per_second_lines: false,
            progress: true,
        },
        connections: 8,
        calibration,
        homa_api: args.homa_api,
        homa_options,
        calibrate_only: false,
    };
    let rt = client::runtime()?;
    let mut runs: Vec<ProtoRun> = Vec::new();
    if let Some(s) = &homa_server {
        runs.push(rt.block_on(client::run_proto(Proto::Homa, &[s.addr], &plan))?);
    }
    runs.push(rt.block_on(client::run_proto(Proto::Tcp, &[tcp_addr], &plan))?);

    let baseline = client::common_baseline(&runs);
    let bounds = stats::bucket_bounds(&workload);
    let rows: Vec<Vec<BucketRow>> = runs
        .iter()
        .map(|r| stats::bucket_rows(&r.result.samples, &bounds, Some(&baseline)))
        .collect();
    println!();
    for r in &runs {
        let s = r.result.summary();
        println!(
            "{:<4}: {:>6} RPCs, {:.3} Gbps, RTT p50 {:.1} us, p99 {:.1} us",
            s.proto, s.rpcs, s.gbps, s.p50_us, s.p99_us
        );
        for w in r.result.warnings() {
            println!("warning: {w}");
        }
    }
    println!();
    match rows.as_slice() {
        [homa, tcp] => print!("{}", side_by_side(homa, tcp)),
        [only] => print!("{}", stats::bucket_table(only)),
        _ => {}
    }
    println!();
    let (homa_rows, tcp_rows) = match rows.as_slice() {
        [h, t] => (Some(h.as_slice()), t.as_slice()),
        [t] => (None, t.as_slice()),
        _ => (None, &[][..]),
    };
    println!(
        "{}",
        wrap(&explanation(workload.name(), homa_rows, tcp_rows), 92)
    );
    Ok(())
}

/// The side-by-side table: per bucket, Homa and TCP RTT percentiles and TCP/Homa ratios
/// (above 1: Homa was faster).
pub fn side_by_side(homa: &[BucketRow], tcp: &[BucketRow]) -> String {
    let mut s = format!(
        "{:>10} {:>6} | {:>9} {:>9} | {:>9} {:>9} | {:>8} {:>8}\n",
        "length<=", "share", "homa p50", "homa p99", "tcp p50", "tcp p99", "tcp/homa", "tcp/homa"
    );
    s.push_str(&format!(
        "{:>10} {:>6} | {:>9} {:>9} | {:>9} {:>9} | {:>8} {:>8}\n",
        "bytes", "msgs", "us", "us", "us", "us", "p50", "p99"
    ));
    for (h, t) in homa.iter().zip(tcp) {
        s.push_str(&format!(
            "{:>10} {:>5.1}% | {:>9} {:>9} | {:>9} {:>9} | {:>8} {:>8}\n",
            h.upper,
            (h.share + t.share) * 50.0,
            cell(h.rtt_p50_us, 1),
            cell(h.rtt_p99_us, 1),
            cell(t.rtt_p50_us, 1),
            cell(t.rtt_p99_us, 1),
            cell(t.rtt_p50_us / h.rtt_p50_us, 2),
            cell(t.rtt_p99_us / h.rtt_p99_us, 2),
        ));
    }
    s
}

/// What the table means, and what this run showed for the short messages.
fn explanation(workload: &str, homa: Option<&[BucketRow]>, tcp: &[BucketRow]) -> String {
    let mut text = format!(
        "What you are seeing: each row is a slice of the {workload} messages by length (about \
         a tenth of them per row). Both transports carry exactly the same requests at the \
         same times. TCP sends each RPC on one of 8 byte streams, so a short message that \
         lands behind a long one waits for all of it: its tail latency (p99) grows with the \
         long messages around it. Homa is message-based and gives the shortest remaining \
         message priority (SRPT) at both ends, so short messages need not wait behind long \
         ones. The ratio columns say how many times longer TCP took (above 1: Homa faster)."
    );
    if let Some(homa) = homa {
        let half = homa.len().div_ceil(2);
        // The worst bucket among the shorter half of the messages.
        let worst = |rows: &[BucketRow], pick: fn(&BucketRow) -> f64| {
            rows[..half.min(rows.len())]
                .iter()
                .map(pick)
                .filter(|x| x.is_finite())
                .fold(f64::NAN, f64::max)
        };
        let (h50, t50) = (worst(homa, |r| r.rtt_p50_us), worst(tcp, |r| r.rtt_p50_us));
        let (h99, t99) = (worst(homa, |r| r.rtt_p99_us), worst(tcp, |r| r.rtt_p99_us));
        if [h50, t50, h99, t99].iter().all(|x| x.is_finite()) {
            text.push_str(&format!(
                " In this run, for the shorter half of the messages, the median RTT was at \
                 most {h50:.0} us over Homa and {t50:.0} us over TCP, and the p99 at most \
                 {h99:.0} us and {t99:.0} us."
            ));
            let cost = " every Homa packet is handled by this process in user space, with \
                        thread wake-ups at each step, while TCP runs in the kernel; on a \
                        machine with few, busy cores that cost shows up as latency. See \
                        BENCHMARKS.md.";
            if h50 > t50 && h99 > t99 {
                text.push_str(" Here Homa lost:");
                text.push_str(cost);
            } else if h50 > t50 {
                text.push_str(
                    " Homa's tail was shorter (short messages did not queue behind long \
                     ones) but its median longer:",
                );
                text.push_str(cost);
            } else if h99 > t99 {
                text.push_str(" Homa's median was shorter but its tail longer.");
            } else {
                text.push_str(" Homa was faster on both counts.");
            }
        }
    }
    text.push_str(
        " On one machine over loopback there is no switch queue for Homa's priorities to \
         act on and both ends share the same cores, so differences are smaller than in a \
         datacenter; `homa perf` measures latency and throughput on their own. Where \
         Homa's design pays off, at a congested switch port, `sudo homa testbed bench` \
         measures it (4 hosts in network namespaces behind 1 Gbps ports with 8 priorities; \
         results in README).",
    );
    text
}

/// Wraps `text` at `width` columns (on spaces).
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut col = 0;
    for word in text.split_whitespace() {
        if col > 0 && col + 1 + word.len() > width {
            out.push('\n');
            col = 0;
        } else if col > 0 {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += word.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(upper: usize, p50: f64, p99: f64) -> BucketRow {
        BucketRow {
            upper,
            share: 0.5,
            count: 5,
            median_len: upper,
            rtt_p50_us: p50,
            rtt_p99_us: p99,
            slow_p50: 1.0,
            slow_p99: 2.0,
        }
    }

    #[test]
    fn side_by_side_shows_ratios() {
        let t = side_by_side(&[row(100, 10.0, 20.0)], &[row(100, 15.0, 80.0)]);
        let line = t.lines().nth(2).unwrap();
        assert!(line.contains("1.50") && line.contains("4.00"), "{line}");
    }

    #[test]
    fn explanation_wraps() {
        let w = wrap(&explanation("w4", None, &[]), 40);
        assert!(w.lines().all(|l| l.len() <= 40));
        assert!(w.lines().count() > 5);
        let (h, t) = ([row(100, 10.0, 20.0)], [row(100, 15.0, 80.0)]);
        let text = explanation("w4", Some(&h), &t);
        assert!(
            text.contains(
                "at most 10 us over Homa and 15 us over TCP, and the p99 at most 20 us and 80 us"
            ),
            "{text}"
        );
        assert!(text.contains("faster on both"), "{text}");
        let text = explanation("w4", Some(&t), &h);
        assert!(text.contains("Homa lost"), "{text}");
        let mixed = [row(100, 30.0, 40.0)];
        let text = explanation("w4", Some(&mixed), &t);
        assert!(
            text.contains("tail was shorter") && text.contains("user space"),
            "{text}"
        );
    }
}
