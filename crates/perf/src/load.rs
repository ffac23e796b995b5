//! The open-loop Poisson load generator (like the Linux module's `cp_node` client) and the
//! unloaded-RTT calibration that slowdowns are measured against.
//!
//! Requests are issued at exponentially distributed intervals whose mean makes the offered
//! load `--gbps` of request message bytes (message data only, no headers, as `cp_node`'s
//! `--net-bw`): mean gap = mean clamped request length × 8 / gbps. Arrivals do not wait for
//! earlier RPCs to finish (open loop); an arrival that finds `max_outstanding` RPCs already
//! in flight is skipped and counted, which says the offered load was not sustained.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::header::{RequestHeader, HEADER_LEN};
use crate::stats::{self, Baseline, Summary};
use crate::transport::{self, RpcClient};
use crate::workload::Workload;

/// How a load run is shaped.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Request lengths.
    pub workload: Arc<Workload>,
    /// Offered load, Gbit/s of request bytes.
    pub gbps: f64,
    /// How long to issue requests.
    pub duration: Duration,
    /// Response length; `None` echoes the request length.
    pub response_len: Option<usize>,
    /// Most RPCs in flight; arrivals beyond are skipped.
    pub max_outstanding: usize,
    /// Seed for lengths and arrival times.
    pub seed: u64,
    /// Print one line per second on stdout.
    pub per_second_lines: bool,
    /// Show a progress bar on stderr (only drawn on a terminal).
    pub progress: bool,
    /// Set (by a Ctrl-C handler, say) to end the arrivals early: the run then lets the
    /// RPCs in flight finish and reports what it measured, as at its planned end.
    pub stop: Option<Arc<AtomicBool>>,
}

/// How often the arrival generator looks at [`LoadConfig::stop`] while it sleeps.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// The share of a run's arrivals whose requests count toward the carried load. The last
/// tenth are issued like the others (the load stays as offered to the end) but not
/// counted: a request that arrives just before the end is still in flight when the
/// arrivals stop however fast the transport, and at slow rates a long one takes hundreds
/// of milliseconds (W4 at 0.3 Gbps: every transport read 96% when every arrival
/// counted). A transport that falls behind holds requests longer than the margin, and
/// still reads below 100%.
pub const MEASURED_SHARE: f64 = 0.9;

/// What a load run measured.
#[derive(Debug)]
pub struct LoadResult {
    /// `homa` or `tcp`.
    pub proto: &'static str,
    /// All RTTs, ns.
    pub hist: Histogram<u64>,
    /// `(request length, RTT ns)` of every completed RPC.
    pub samples: Vec<(u32, u64)>,
    /// Request bytes of completed RPCs.
    pub request_bytes: u64,
    /// Request bytes of the RPCs that arrived in the measured share of the run
    /// ([`MEASURED_SHARE`]) and completed before the arrivals ended: the load carried
    /// (RPCs that complete in the drain after it count in `request_bytes`, the latencies
    /// and `samples`, but a network that fell behind must not read as keeping up).
    pub carried_bytes: u64,
    /// Of the RPCs that arrived in the measured share, the request bytes completed only
    /// after the arrivals ended.
    pub late_bytes: u64,
    /// Request bytes of every arrival drawn in the measured share, skipped ones included
    /// (see [`Summary::offered_bytes`]).
    pub offered_bytes: u64,
    /// Seconds over which requests were issued.
    pub secs: f64,
    /// Seconds of load asked for.
    pub planned_secs: f64,
    /// Seconds of the run the arrivals were drawn for: less than `planned_secs` when the
    /// offered rate was more than the load generator could draw.
    pub arrivals_secs: f64,
    /// RPCs started.
    pub issued: u64,
    /// Arrivals skipped because `max_outstanding` RPCs were in flight.
    pub skipped: u64,
    /// RPCs that failed.
    pub errors: u64,
    /// The run was stopped before its planned end ([`LoadConfig::stop`]).
    pub interrupted: bool,
    /// RPCs still in flight when the drain deadline passed.
    pub unfinished: usize,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// Homa only: the client socket's packets by type (see [`Summary::homa_packets`]).
    pub homa_packets: Option<serde_json::Value>,
}

impl LoadResult {
    /// A run that issued nothing (calibration only).
    pub fn empty(proto: &'static str) -> Self {
        LoadResult {
            proto,
            hist: stats::new_hist(),
            samples: Vec::new(),
            request_bytes: 0,
            carried_bytes: 0,
            late_bytes: 0,
            offered_bytes: 0,
            secs: 0.0,
            planned_secs: 0.0,
            arrivals_secs: 0.0,
            issued: 0,
            skipped: 0,
            errors: 0,
            unfinished: 0,
            first_error: None,
            homa_packets: None,
            interrupted: false,
        }
    }

    /// The run's summary line.
    pub fn summary(&self) -> Summary {
        Summary {
            homa_packets: self.homa_packets.clone(),
            unfinished: self.unfinished as u64,
            ..Summary::new(
                self.proto,
                &self.hist,
                (self.offered_bytes, self.carried_bytes),
                self.secs * MEASURED_SHARE,
                self.errors,
            )
        }
    }

    /// Lines worth printing about skipped, failed or unfinished RPCs (empty when clean).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.skipped > 0 {
            w.push(format!(
                "{}: {} arrivals skipped: too many RPCs outstanding (offered load not sustained)",
                self.proto, self.skipped
            ));
        }
        if self.interrupted {
            w.push(format!(
                "{}: interrupted: arrivals stopped after {:.2} s of {:.2} s",
                self.proto, self.arrivals_secs, self.planned_secs
            ));
        } else if self.arrivals_secs < 0.99 * self.planned_secs {
            w.push(format!(
                "{}: arrivals drawn for only {:.2} s of {:.2} s: the offered rate is more than \
                 the load generator can draw (offered load not sustained)",
                self.proto, self.arrivals_secs, self.planned_secs
            ));
        }
        if self.errors > 0 {
            w.push(format!(
                "{}: {} RPCs failed; first: {}",
                self.proto,
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        if self.late_bytes > 0 {
            w.push(format!(
                "{}: {:.1}% of the measured requests' bytes completed only after the arrivals ended (not counted as carried)",
                self.proto,
                100.0 * self.late_bytes as f64 / (self.carried_bytes + self.late_bytes) as f64
            ));
        }
        if self.unfinished > 0 {
            w.push(format!(
                "{}: {} RPCs still outstanding at the end (not counted)",
                self.proto, self.unfinished
            ));
        }
        w
    }
}

/// Exponential inter-arrival gaps with a given mean.
#[derive(Debug)]
pub struct Arrivals {
    mean_secs: f64,
    rng: ChaCha8Rng,
}

impl Arrivals {
    /// Gaps for `gbps` of requests whose mean length is `mean_bytes`.
    pub fn new(mean_bytes: f64, gbps: f64, seed: u64) -> Self {
        Self {
            mean_secs: mean_bytes * 8.0 / (gbps * 1e9),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Mean gap, seconds.
    pub fn mean_secs(&self) -> f64 {
        self.mean_secs
    }

    /// The next gap, seconds (inverse-CDF sampling of the exponential distribution).
    pub fn next_gap(&mut self) -> f64 {
        let u: f64 = self.rng.gen();
        -(1.0 - u).ln() * self.mean_secs
    }
}

/// Reusable request buffers, kept by size class ([`buffer_len`]): a request is the first
/// `len` bytes of a buffer of its class. Only the header bytes are ever written, so a
/// buffer comes back zero past its header and is lent again as it is: zeroing it again
/// for another length cost the load generator more CPU than Homa's engine. At most
/// [`POOL_BYTES`] are kept.
///
/// Classes rather than exact lengths: a workload draws from a few hundred lengths, and
/// with the buffers kept by exact length, a load generator whose transport had fallen
/// behind (thousands of requests outstanding, returned in another order than new ones
/// want them) took a fresh allocation for most requests. Each then page-faulted its way
/// in during the transport's first send from it, and big ones went back to the kernel on
/// `free` (TLB shootdowns): at W4, 3 Gbps on the testbed, page faults and malloc were 6%
/// of Homa's CPU and grew with its backlog, charging the load generator's cost to the
/// transport that was behind.
#[derive(Debug, Default)]
struct BufferPool {
    free: Mutex<FreeBuffers>,
}

/// What a [`BufferPool`] keeps.
#[derive(Debug, Default)]
struct FreeBuffers {
    by_len: HashMap<usize, Vec<Vec<u8>>>,
    bytes: usize,
}

/// The most bytes of free request buffers a load generator keeps: enough for the
/// buffers of every RPC a transport that has fallen behind may hold at once (the default
/// `max_outstanding`, 1,000, mostly long requests under SRPT), so that the load generator
/// does not give them back as its backlog shrinks and fault them in again as it grows.
/// They are memory that was in use anyway.
const POOL_BYTES: usize = 1 << 30;

/// Length of the buffer a request of `len` bytes is sent from: `len` (at least the header)
/// rounded up to one of 8 steps per power of two, so at most an eighth longer. W4's 431
/// lengths (clamped) share 108 classes.
fn buffer_len(len: usize) -> usize {
    let len = len.max(HEADER_LEN);
    let shift = (usize::BITS - len.leading_zeros()).saturating_sub(4);
    len.div_ceil(1 << shift) << shift
}

impl BufferPool {
    /// A zeroed buffer of `buffer_len(len)` bytes (the request is its first `len`).
    fn take(&self, len: usize) -> Vec<u8> {
        let len = buffer_len(len);
        let mut free = self.free.lock().expect("pool lock");
        match free.by_len.get_mut(&len).and_then(Vec::pop) {
            Some(buf) => {
                free.bytes -= len;
                buf
            }
            None => {
                drop(free);
                vec![0; len]
            }
        }
    }
    fn give(&self, buf: Vec<u8>) {
        let mut free = self.free.lock().expect("pool lock");
        if free.bytes + buf.len() <= POOL_BYTES {
            free.bytes += buf.len();
            free.by_len.entry(buf.len()).or_default().push(buf);
        }
    }
}

#[derive(Debug)]
struct Recorder {
    second: Histogram<u64>,
    second_bytes: u64,
    total: Histogram<u64>,
    samples: Vec<(u32, u64)>,
    bytes: u64,
    /// Of `bytes`, those of RPCs of the measured share completed before the arrivals
    /// ended, and after.
    carried_bytes: u64,
    late_bytes: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Recorder {
    fn new() -> Self {
        Self {
            second: stats::new_hist(),
            second_bytes: 0,
            total: stats::new_hist(),
            samples: Vec::new(),
            bytes: 0,
            carried_bytes: 0,
            late_bytes: 0,
            errors: 0,
            first_error: None,
        }
    }
}

fn progress_bar(show: bool, secs: u64, proto: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(secs), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{prefix:>5} [{bar:30}] {pos}/{len}s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(proto.to_string());
    pb
}

/// Runs the open-loop load of `cfg` through `client` and returns what it measured.
pub async fn run_load<C: RpcClient>(
    proto: &'static str,
    client: Arc<C>,
    cfg: &LoadConfig,
) -> LoadResult {
    let rec = Arc::new(Mutex::new(Recorder::new()));
    let outstanding = Arc::new(AtomicUsize::new(0));
    let pool = Arc::new(BufferPool::default());
    let next_id = Arc::new(AtomicU32::new(0));
    let mut lengths = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut arrivals = Arrivals::new(
        cfg.workload.mean_clamped(),
        cfg.gbps,
        cfg.seed ^ 0x9e37_79b9_7f4a_7c15,
    );
    let pb = progress_bar(cfg.progress, cfg.duration.as_secs().max(1), proto);

    let start = Instant::now();
    let end = start + cfg.duration;
    let measured_until = start + cfg.duration.mul_f64(MEASURED_SHARE);

    // One line per second: throughput and RTT percentiles over that second.
    let reported = Arc::new(AtomicU64::new(0));
    let reporter = {
        let rec = rec.clone();
        let outstanding = outstanding.clone();
        let pb = pb.clone();
        let print = cfg.per_second_lines;
        let reported = reported.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::from_std(start + Duration::from_secs(1)),
                Duration::from_secs(1),
            );
            for sec in 1u64.. {
                tick.tick().await;
                let (h, bytes) = {
                    let mut r = rec.lock().expect("recorder lock");
                    let h = std::mem::replace(&mut r.second, stats::new_hist());
                    (h, std::mem::take(&mut r.second_bytes))
                };
                // (`-` for a second in which nothing completed.)
                let us = |q| stats::cell(stats::quantile_us(&h, q), 1);
                let line = format!(
                    "[{sec:>3}s] {proto:<4} {:>7.3} Gbps {:>8} RPC/s  p50 {:>9} us  p99 {:>9} us  p99.9 {:>9} us  outstanding {}",
                    bytes as f64 * 8.0 / 1e9,
                    h.len(),
                    us(0.5),
                    us(0.99),
                    us(0.999),
                    outstanding.load(Ordering::Relaxed),
                );
                pb.set_message(format!(
                    "{:.2} Gbps, {} RPC/s, p99 {:.0} us",
                    bytes as f64 * 8.0 / 1e9,
                    h.len(),
                    stats::quantile_us(&h, 0.99)
                ));
                pb.inc(1);
                if print {
                    pb.suspend(|| println!("{line}"));
                }
                reported.store(sec, Ordering::Relaxed);
            }
        })
    };

    // Arrivals are timed by a thread of their own, sleeping with a fine timer slack: the
    // tokio timer wakes at 1 ms granularity, which turned a Poisson process into bursts
    // of the arrivals due within each millisecond (2.5 at a time on average at 2,500
    // RPC/s), and each RPC of a burst waited for the others, whatever the transport.
    let generator = {
        let issue = Issue {
            handle: tokio::runtime::Handle::current(),
            client,
            rec: rec.clone(),
            outstanding: outstanding.clone(),
            pool,
            next_id,
            end,
        };
        let (workload, response_len, max_outstanding, stop) = (
            cfg.workload.clone(),
            cfg.response_len,
            cfg.max_outstanding,
            cfg.stop.clone(),
        );
        tokio::task::spawn_blocking(move || {
            // Best effort: without it, sleeps end up to 50 us late (the default slack).
            let _ = nix::sys::prctl::set_timerslack(1_000);
            let (mut issued, mut skipped, mut offered) = (0u64, 0u64, 0u64);
            let mut next = start;
            let stopped = || stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
            let mut interrupted = false;
            'arrivals: loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                if stopped() {
                    interrupted = true;
                    next = next.min(now);
                    break;
                }
                while next <= now {
                    // An offered rate faster than this loop can draw arrivals would keep
                    // it here past the end: look at the clock now and then.
                    if (issued + skipped) % 256 == 255 && Instant::now() >= end {
                        break 'arrivals;
                    }
                    next += Duration::from_secs_f64(arrivals.next_gap());
                    let len = workload.sample(&mut lengths);
                    let measured = next <= measured_until;
                    if measured {
                        offered += len as u64;
                    }
                    if issue.outstanding.load(Ordering::Relaxed) >= max_outstanding {
                        skipped += 1;
                        continue;
                    }
                    issued += 1;
                    issue.start(len, response_len.unwrap_or(len), start, measured);
                }
                let now = Instant::now();
                std::thread::sleep(
                    next.min(end)
                        .min(now + STOP_CHECK)
                        .saturating_duration_since(now),
                );
            }
            // How far the arrivals got: short of the end when they could not keep up (or
            // were stopped).
            let drawn_until = next.min(end).saturating_duration_since(start);
            (issued, skipped, offered, drawn_until, interrupted)
        })
    };
    let (issued, skipped, offered_bytes, arrivals_drawn, interrupted) = generator
        .await
        .expect("the arrival generator does not panic");
    let secs = start.elapsed().as_secs_f64();

    // Let the RPCs in flight finish (bounded), so the long ones are not all left out.
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while outstanding.load(Ordering::Relaxed) > 0 && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The line of the load's last whole second is due as the load ends: let it come
    // (a run of 2 s printed only its first second when the drain was quick).
    let whole_secs = if interrupted {
        arrivals_drawn.as_secs()
    } else {
        cfg.duration.as_secs()
    };
    let wait_until = Instant::now() + Duration::from_secs(2);
    while reported.load(Ordering::Relaxed) < whole_secs && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Awaiting after the abort waits out a poll already running on another worker, so
    // no per-second line can land after the summary printed by the caller.
    reporter.abort();
    let _ = reporter.await;
    pb.finish_and_clear();
    let unfinished = outstanding.load(Ordering::Relaxed);
    let mut r = rec.lock().expect("recorder lock");
    LoadResult {
        proto,
        hist: std::mem::replace(&mut r.total, stats::new_hist()),
        samples: std::mem::take(&mut r.samples),
        request_bytes: r.bytes,
        carried_bytes: r.carried_bytes,
        late_bytes: r.late_bytes,
        offered_bytes,
        secs,
        planned_secs: cfg.duration.as_secs_f64(),
        arrivals_secs: arrivals_drawn.as_secs_f64(),
        issued,
        skipped,
        errors: r.errors,
        unfinished,
        first_error: r.first_error.take(),
        homa_packets: None,
        interrupted,
    }
}

/// What the arrival generator needs to start one RPC on the runtime.
struct Issue<C> {
    handle: tokio::runtime::Handle,
    client: Arc<C>,
    rec: Arc<Mutex<Recorder>>,
    outstanding: Arc<AtomicUsize>,
    pool: Arc<BufferPool>,
    next_id: Arc<AtomicU32>,
    /// When the arrivals end: RPCs completed later are not carried load.
    end: Instant,
}

impl<C: RpcClient> Issue<C> {
    /// Start an RPC with a `len`-byte request now; its task records the outcome, and
    /// counts it toward the carried load if it is `measured`.
    fn start(&self, len: usize, response_len: usize, start: Instant, measured: bool) {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader {
            response_len: response_len as u32,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            sent_ns: start.elapsed().as_nanos() as u64,
        };
        let (client, rec, outstanding, pool, end) = (
            self.client.clone(),
            self.rec.clone(),
            self.outstanding.clone(),
            self.pool.clone(),
            self.end,
        );
        self.handle.spawn(async move {
            let mut req = pool.take(len);
            header.encode(&mut req);
            let t0 = Instant::now();
            let result = transport::call_lending_prefix(
                &*client,
                &mut req,
                len.max(HEADER_LEN),
                response_len,
            )
            .await;
            let done = Instant::now();
            let rtt = done.duration_since(t0).as_nanos() as u64;
            pool.give(req);
            {
                let mut r = rec.lock().expect("recorder lock");
                match result {
                    Ok(_) => {
                        stats::record(&mut r.second, rtt);
                        stats::record(&mut r.total, rtt);
                        r.samples.push((len as u32, rtt));
                        r.second_bytes += len as u64;
                        r.bytes += len as u64;
                        if measured && done <= end {
                            r.carried_bytes += len as u64;
                        } else if measured {
                            r.late_bytes += len as u64;
                        }
                    }
                    Err(e) => {
                        r.errors += 1;
                        if r.first_error.is_none() {
                            let diag = client.diagnostics().map(|d| format!("; {d}"));
                            r.first_error = Some(format!("{e}{}", diag.unwrap_or_default()));
                        }
                    }
                }
            }
            outstanding.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Lengths to calibrate at: the workload's lengths at message-count quantiles 0, 5%, ..,
/// 100%, duplicates merged.
pub fn calibration_lengths(w: &Workload) -> Vec<usize> {
    let mut v: Vec<usize> = (0..=20).map(|i| w.quantile(i as f64 / 20.0)).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Measures the unloaded RTT at each of `lengths`: RPCs one at a time, the median of up to
/// `reps` per length, within about `budget` in all (at least 3 per length). Fails on the
/// first RPC error (nothing useful can be measured then).
pub async fn calibrate<C: RpcClient>(
    client: &C,
    lengths: &[usize],
    response_len: Option<usize>,
    reps: usize,
    budget: Duration,
) -> std::io::Result<Baseline> {
    let per_length = budget / lengths.len().max(1) as u32;
    let mut points = Vec::new();
    for &len in lengths {
        let header = RequestHeader {
            response_len: response_len.unwrap_or(len) as u32,
            id: 0,
            sent_ns: 0,
        };
        let req = homa::Bytes::from(header.request(len));
        let asked = header.response_len as usize;
        // One unmeasured call warms caches, connections and peer state.
        transport::checked_call(client, req.clone(), asked).await?;
        let t_len = Instant::now();
        let mut rtts = Vec::new();
        while rtts.len() < reps && (rtts.len() < 3 || t_len.elapsed() < per_length) {
            let t0 = Instant::now();
            transport::checked_call(client, req.clone(), asked).await?;
            rtts.push(t0.elapsed().as_nanos() as f64);
        }
        rtts.sort_by(f64::total_cmp);
        points.push((len, rtts[rtts.len() / 2]));
    }
    Ok(Baseline::new(points))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_gaps_have_the_configured_mean() {
        // W4's clamped mean at 1 Gbps: a gap of mean*8/1e9 s.
        let w = Workload::builtin("w4").unwrap();
        let mut a = Arrivals::new(w.mean_clamped(), 1.0, 7);
        let expect = w.mean_clamped() * 8.0 / 1e9;
        assert!((a.mean_secs() - expect).abs() < 1e-15);
        let n = 100_000;
        let gaps: Vec<f64> = (0..n).map(|_| a.next_gap()).collect();
        assert!(gaps.iter().all(|&g| g >= 0.0));
        let mean = gaps.iter().sum::<f64>() / n as f64;
        assert!(
            (mean - expect).abs() / expect < 0.02,
            "mean {mean} vs {expect}"
        );
        // Exponential: standard deviation equals the mean; P(gap > mean) = 1/e.
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((var.sqrt() - expect).abs() / expect < 0.05);
        let over = gaps.iter().filter(|&&g| g > expect).count() as f64 / n as f64;
        assert!((over - (-1.0f64).exp()).abs() < 0.01, "{over}");
    }

    #[test]
    fn calibration_lengths_are_sorted_and_clamped() {
        let l = calibration_lengths(&Workload::builtin("w5").unwrap());
        assert!(l.windows(2).all(|p| p[0] < p[1]));
        assert_eq!(*l.last().unwrap(), 1_000_000);
        assert_eq!(calibration_lengths(&Workload::fixed(100)), vec![100]);
    }

    #[test]
    fn buffer_lengths_are_classes_at_most_an_eighth_longer() {
        assert_eq!(buffer_len(1), HEADER_LEN);
        assert_eq!(buffer_len(HEADER_LEN), HEADER_LEN);
        assert_eq!(buffer_len(100), 104);
        assert_eq!(buffer_len(1_000_000), 1 << 20);
        let mut last = 0;
        for len in HEADER_LEN..300_000 {
            let b = buffer_len(len);
            assert!(b >= len && b * 8 <= len * 9, "{len} -> {b}");
            assert!(b >= last, "classes grow with the length");
            last = b;
        }
        let classes: std::collections::BTreeSet<_> =
            ((1usize << 16) + 1..=1 << 17).map(buffer_len).collect();
        assert_eq!(classes.len(), 8, "eight classes per power of two");
    }

    #[test]
    fn pooled_buffers_stay_zero_past_the_header() {
        let pool = BufferPool::default();
        let mut b = pool.take(100);
        assert_eq!(b.len(), buffer_len(100));
        RequestHeader {
            response_len: 1,
            id: 2,
            sent_ns: 3,
        }
        .encode(&mut b);
        let ptr = b.as_ptr();
        pool.give(b);
        let b = pool.take(10);
        assert_eq!(b.len(), HEADER_LEN);
        pool.give(b);
        let b = pool.take(200);
        assert_eq!(b.len(), buffer_len(200));
        assert!(b[HEADER_LEN..].iter().all(|&x| x == 0));
        // A length of the same class gets the same buffer back, its header to be
        // overwritten.
        let again = pool.take(101);
        assert_eq!(again.as_ptr(), ptr);
        assert!(again[HEADER_LEN..].iter().all(|&x| x == 0));
    }

    #[test]
    fn the_pool_keeps_at_most_its_byte_budget() {
        let pool = BufferPool::default();
        let big = buffer_len(POOL_BYTES / 4 + 1);
        let bufs: Vec<_> = (0..4).map(|_| pool.take(big)).collect();
        for b in bufs {
            pool.give(b);
        }
        let free = pool.free.lock().unwrap();
        assert_eq!(free.bytes, 3 * big);
        assert_eq!(free.by_len[&big].len(), 3);
    }
}
