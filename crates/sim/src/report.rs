//! Slowdown statistics, utilisation, and their text, JSON and SVG forms.

use crate::config::{Drain, Mode};
use crate::sim::{PortKind, Simulation, NOT_DONE};
use std::fmt::Write as _;

/// Number of length buckets (equal message counts each, as the paper's x axis).
pub const BUCKETS: usize = 10;

/// Slowdown statistics of the messages in one length bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Shortest message in the bucket.
    pub min_len: u32,
    /// Longest message in the bucket (the bucket's upper bound).
    pub max_len: u32,
    /// Messages in the bucket.
    pub count: usize,
    /// Median slowdown.
    pub p50: f64,
    /// 99th-percentile slowdown.
    pub p99: f64,
    /// Size bins only: the 99th percentile as the paper's own tools would have read it
    /// off the same messages ([`paper_histogram_percentile`], in completion order).
    pub p99_hist: Option<f64>,
}

/// Engine counters summed over all hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineTotals {
    /// Packets sent, by type (`code - 0x10`: DATA, GRANT, RESEND, RPC_UNKNOWN, BUSY,
    /// CUTOFFS, FREEZE, NEED_ACK, ACK).
    pub packets_sent: [u64; 9],
    /// DATA packets retransmitted.
    pub retransmitted: u64,
    /// RPCs timed out.
    pub timeouts: u64,
    /// Client RPCs restarted after RPC_UNKNOWN.
    pub restarts: u64,
    /// Packets dropped by the engines (any reason).
    pub drops: u64,
}

/// The host links over one interval of [`SimConfig::timeline_ns`](crate::SimConfig),
/// as fractions of their capacity over it (see [`Report`]'s fields of the same names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimelinePoint {
    /// End of the interval, nanoseconds.
    pub time_ns: u64,
    /// Wire bytes of the messages started in it.
    pub offered_load: f64,
    /// Wire bytes of the messages completed in it.
    pub utilization: f64,
    /// Every wire byte sent to hosts in it.
    pub wire_utilization: f64,
    /// Bytes offered since the start and not yet sent to their host (offered minus all
    /// wire bytes sent to hosts), per host, at its end: a backlog that keeps growing
    /// means the links do not keep up with the offered load.
    pub backlog_per_host: f64,
}

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Workload name.
    pub workload: String,
    /// Target load.
    pub load: f64,
    /// Hosts.
    pub hosts: u32,
    /// One-way messages or RPCs.
    pub mode: Mode,
    /// Arrivals ran for this long.
    pub duration_ns: u64,
    /// Messages that started before this were not measured.
    pub warmup_ns: u64,
    /// Simulated time at the end (the run goes on past `duration_ns` until every
    /// measured message is complete, see [`drain`](Self::drain)).
    pub end_ns: u64,
    /// Whether arrivals went on after `duration_ns` or stopped.
    pub drain: Drain,
    /// End of the window the carried loads (`utilization`, `goodput`,
    /// `wire_utilization`) are measured over, which starts at `warmup_ns`:
    /// `duration_ns`, or with [`Drain::StopArrivals`] when the last message completed.
    pub rates_end_ns: u64,
    /// Messages generated (all of the run).
    pub generated: usize,
    /// Messages started in the measurement window and complete: the statistics' sample.
    pub measured: usize,
    /// Messages started before `duration_ns` and not complete at the end.
    pub unfinished: usize,
    /// Messages that failed or were refused by the engine.
    pub failed: usize,
    /// Requests delivered more than once to the server application.
    pub duplicates: usize,
    /// Messages whose sampled length was clamped to the engine's maximum.
    pub clamped: u64,
    /// Per length bucket, shortest first.
    pub buckets: Vec<Bucket>,
    /// Median slowdown of the shortest 10% of messages.
    pub p50_short: f64,
    /// 99th-percentile slowdown of the shortest 10% of messages.
    pub p99_short: f64,
    /// Per size bin of [`SimConfig::size_bins`](crate::SimConfig::size_bins) (the
    /// paper's), the non-empty ones, shortest first; empty without bins.
    pub bins: Vec<Bucket>,
    /// Median slowdown of all measured messages.
    pub p50_all: f64,
    /// 99th-percentile slowdown of all measured messages.
    pub p99_all: f64,
    /// Smallest slowdown seen (1.0 or more unless the ideal formula is wrong).
    pub min_slowdown: f64,
    /// Offered load achieved: wire bytes of the messages (requests and responses) started
    /// in the window `[warmup_ns, duration_ns)` / host link capacity over it.
    pub offered_load: f64,
    /// The same for the messages completed in `[warmup_ns, rates_end_ns)` / the capacity
    /// over that: the carried load, comparable to `load`. With
    /// [`Drain::StopArrivals`] this is the SIGCOMM paper's measure: everything offered
    /// is eventually carried, and the longer the network takes to finish the backlog
    /// after arrivals stop, the lower it is.
    pub utilization: f64,
    /// Payload bytes of messages completed in `[warmup_ns, rates_end_ns)` / host link
    /// capacity.
    pub goodput: f64,
    /// Every wire byte sent to hosts in `[warmup_ns, rates_end_ns)` (data, control,
    /// retransmissions) / host link capacity.
    pub wire_utilization: f64,
    /// Largest queue seen on a ToR-to-host, ToR-to-aggregation and aggregation-to-ToR
    /// port, bytes.
    pub max_queue_bytes: [u64; 3],
    /// Longest NIC queue seen, nanoseconds of link time.
    pub max_nic_backlog_ns: u64,
    /// Engine counters over all hosts.
    pub engine: EngineTotals,
    /// Events processed.
    pub events: u64,
    /// Packets sent.
    pub packets: u64,
    /// Wall-clock seconds the run took (not deterministic).
    pub wall_secs: f64,
    /// CPU seconds the simulating thread used, where the platform tells (not
    /// deterministic).
    pub cpu_secs: Option<f64>,
    /// The links interval by interval, if [`SimConfig::timeline_ns`](crate::SimConfig)
    /// asked for it.
    pub timeline: Vec<TimelinePoint>,
    /// FNV-1a hash of every message's outcome (start, completion, length, hosts,
    /// deliveries, failure): equal hashes mean identical runs.
    pub result_hash: u64,
}

/// Nearest-rank percentile of sorted values (NaN for none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Values the paper's histograms collect before they fix their range.
pub const PAPER_HIST_FIRST_VALUES: usize = 10_000;
/// Cells of the paper's histograms.
pub const PAPER_HIST_CELLS: usize = 100;

/// The `p` percentile of `values` (in the order they were observed) as the Homa paper's
/// simulation read its percentiles, which is not the nearest rank.
///
/// Its simulator (PlatformLab/HomaSimulation) recorded each size bin's slowdowns
/// (`mesg<bin>Stretch`) in one OMNeT++ 4.6 histogram, with OMNeT++ patched as its
/// README says: the range runs from 0 to the largest of the first 10,000 values
/// (`RANGE_AUTOUPPER`, `num_firstvals` 10,000, range extension 1.0; all values if fewer
/// came), cut into 100 equal cells, larger values counted in an overflow cell. Its
/// analysis script (`MetricsDashBoard.py`, `getStatsFromHist`) reports for a percentile
/// the lower edge of the cell where the cumulative count first reaches it (the range's
/// end for the overflow cell), and no less than the smallest value. So a reported P99 is
/// up to one cell (1% of the range) below the nearest-rank one, and a percentile that
/// falls above every one of the first 10,000 values reads as their maximum.
pub fn paper_histogram_percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let first = &values[..values.len().min(PAPER_HIST_FIRST_VALUES)];
    let top = first.iter().copied().fold(f64::MIN, f64::max);
    // A range of zero width is made 1.0 wide (OMNeT++'s rule).
    let range = if top > 0.0 { top } else { 1.0 };
    let cell = range / PAPER_HIST_CELLS as f64;
    // Underflow (below 0), the cells, overflow (at or above the range's end).
    let mut counts = vec![0u64; PAPER_HIST_CELLS + 2];
    for &v in values {
        let k = (v / cell).floor();
        let i = if v < 0.0 {
            0
        } else if v >= range || k >= PAPER_HIST_CELLS as f64 {
            PAPER_HIST_CELLS + 1
        } else {
            k as usize + 1
        };
        counts[i] += 1;
    }
    let n = values.len() as f64;
    let mut cum = 0.0;
    let mut at = counts.len() - 1;
    for (i, &c) in counts.iter().enumerate() {
        cum += c as f64 / n;
        if cum >= p {
            at = i;
            break;
        }
    }
    // The cells' lower edges: -inf (reported as the first cell's 0), 0, cell, ...,
    // then the overflow cell's, the range's end.
    let edge = match at {
        0 => 0.0,
        i if i == PAPER_HIST_CELLS + 1 => range,
        i => (i - 1) as f64 * cell,
    };
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    edge.max(min)
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Slowdowns per size bin: `samples` are (length, completion time, slowdown) sorted by
/// length, `bounds` the bins' upper bounds (the last bin also takes longer lengths).
/// Empty bins are left out; a bin's `min_len`/`max_len` are the lengths seen in it.
fn size_bins(samples: &mut [(u32, u64, f64)], bounds: &[u32]) -> Vec<Bucket> {
    let mut out = Vec::new();
    let mut lo = 0;
    for (i, &bound) in bounds.iter().enumerate() {
        let last = i + 1 == bounds.len();
        let hi = if last {
            samples.len()
        } else {
            samples.partition_point(|s| s.0 <= bound)
        };
        if hi > lo {
            let part = &mut samples[lo..hi];
            let (min_len, max_len) = (part[0].0, part[part.len() - 1].0);
            // The paper's histogram takes the values as they complete.
            part.sort_by_key(|x| x.1);
            let seen: Vec<f64> = part.iter().map(|x| x.2).collect();
            let p99_hist = Some(paper_histogram_percentile(&seen, 0.99));
            let s = sorted(seen);
            out.push(Bucket {
                min_len,
                max_len,
                count: part.len(),
                p50: percentile(&s, 0.5),
                p99: percentile(&s, 0.99),
                p99_hist,
            });
        }
        lo = hi;
    }
    out
}

impl Report {
    /// Gather the statistics of a finished simulation that took `wall_secs`.
    pub fn from_sim(sim: &Simulation, wall_secs: f64) -> Report {
        let cfg = sim.config();
        let (w0, w1) = sim.window_ns();
        let msgs = sim.messages();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |x: u64| {
            for b in x.to_le_bytes() {
                hash = (hash ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
        };
        let mut samples: Vec<(u32, f64)> = Vec::new();
        // With size bins (the paper's measurement), the same with completion times, for
        // the paper's histograms.
        let mut timed: Vec<(u32, u64, f64)> = Vec::new();
        let (mut unfinished, mut failed, mut duplicates) = (0, 0, 0);
        for m in msgs {
            eat(m.start_ns);
            eat(m.done_ns);
            eat(((m.len as u64) << 32) | m.src as u64);
            eat(((m.dst as u64) << 32) | ((m.deliveries as u64) << 1) | m.failed as u64);
            failed += m.failed as usize;
            duplicates += (m.deliveries > 1) as usize;
            if m.start_ns >= w1 {
                continue;
            }
            if m.done_ns == NOT_DONE {
                unfinished += !m.failed as usize;
                continue;
            }
            if m.start_ns >= w0 && !m.failed {
                let slowdown = (m.done_ns - m.start_ns) as f64 / sim.ideal_ns(m) as f64;
                samples.push((m.len, slowdown));
                if !cfg.size_bins.is_empty() {
                    timed.push((m.len, m.done_ns, slowdown));
                }
            }
        }
        // Buckets of equal message counts, by length (ties in arrival order).
        samples.sort_by_key(|s| s.0);
        timed.sort_by_key(|s| s.0);
        let bins = size_bins(&mut timed, &cfg.size_bins);
        drop(timed);
        let n = samples.len();
        let mut buckets = Vec::new();
        for b in 0..BUCKETS {
            let (lo, hi) = (b * n / BUCKETS, (b + 1) * n / BUCKETS);
            if lo == hi {
                continue;
            }
            let part = &samples[lo..hi];
            let s = sorted(part.iter().map(|x| x.1).collect());
            buckets.push(Bucket {
                min_len: part[0].0,
                max_len: part[part.len() - 1].0,
                count: part.len(),
                p50: percentile(&s, 0.5),
                p99: percentile(&s, 0.99),
                p99_hist: None,
            });
        }
        let all = sorted(samples.iter().map(|x| x.1).collect());
        let short = buckets.first();
        let t = &cfg.topology;
        let capacity = |ns: u64| t.hosts() as f64 * t.host_mbps as f64 / 8_000.0 * ns as f64;
        let rates_end = sim.rate_window_ns().1;
        let [a, b] = sim.window_snapshots();
        let frac = |x: u64, y: u64| y.saturating_sub(x) as f64 / capacity(rates_end - w0);
        let mut engine = EngineTotals::default();
        for h in 0..t.hosts() {
            let m = sim.endpoint(h).metrics();
            for (s, x) in engine.packets_sent.iter_mut().zip(m.packets_sent) {
                *s += x;
            }
            engine.retransmitted += m.retransmitted_packets;
            engine.timeouts += m.timeouts;
            engine.restarts += m.restarts;
            engine.drops += m.drops.iter().sum::<u64>();
        }
        let c = sim.counters();
        let mut timeline = Vec::new();
        let mut prev = (0, crate::Snapshot::default());
        // The samples, and the run's last stretch after the last one (shorter than the
        // others), so that the timeline reaches the end of the run (a run shorter than
        // one interval has that stretch alone).
        let last = (sim.end_ns(), sim.snapshot());
        let sampled_to = sim.timeline().last().map_or(0, |p| p.0);
        let tail = (cfg.timeline_ns > 0 && sampled_to < last.0).then_some(last);
        for &(time, snap) in sim.timeline().iter().chain(tail.as_ref()) {
            let cap = t.hosts() as f64 * t.host_mbps as f64 / 8_000.0 * (time - prev.0) as f64;
            let f = |x: u64, y: u64| y.saturating_sub(x) as f64 / cap;
            timeline.push(TimelinePoint {
                time_ns: time,
                offered_load: f(prev.1.offered_wire, snap.offered_wire),
                utilization: f(prev.1.message_wire, snap.message_wire),
                wire_utilization: f(prev.1.host_down_wire, snap.host_down_wire),
                backlog_per_host: (snap.offered_wire as f64 - snap.host_down_wire as f64)
                    / t.hosts() as f64,
            });
            prev = (time, snap);
        }
        Report {
            workload: cfg.workload.name().to_string(),
            load: cfg.load,
            hosts: t.hosts(),
            mode: cfg.mode,
            duration_ns: cfg.duration_ns,
            warmup_ns: w0,
            end_ns: sim.end_ns(),
            drain: cfg.drain,
            rates_end_ns: rates_end,
            generated: msgs.len(),
            measured: n,
            unfinished,
            failed,
            duplicates,
            clamped: c.clamped,
            p50_short: short.map_or(f64::NAN, |b| b.p50),
            p99_short: short.map_or(f64::NAN, |b| b.p99),
            buckets,
            bins,
            p50_all: percentile(&all, 0.5),
            p99_all: percentile(&all, 0.99),
            min_slowdown: all.first().copied().unwrap_or(f64::NAN),
            offered_load: b.offered_wire.saturating_sub(a.offered_wire) as f64 / capacity(w1 - w0),
            utilization: frac(a.message_wire, b.message_wire),
            goodput: frac(a.message_payload, b.message_payload),
            wire_utilization: frac(a.host_down_wire, b.host_down_wire),
            max_queue_bytes: [
                sim.max_queue_bytes(PortKind::TorDown),
                sim.max_queue_bytes(PortKind::TorUp),
                sim.max_queue_bytes(PortKind::AggDown),
            ],
            max_nic_backlog_ns: c.max_nic_backlog_ns,
            engine,
            events: c.events,
            packets: c.packets,
            wall_secs,
            cpu_secs: None,
            timeline,
            result_hash: hash,
        }
    }

    /// Seconds the run took on its core: CPU time where known, else wall time.
    pub fn run_secs(&self) -> f64 {
        self.cpu_secs.unwrap_or(self.wall_secs).max(1e-9)
    }

    /// Events processed per second of [`run_secs`](Self::run_secs); NaN for a run under a
    /// millisecond, too short to time (a run of 16 hosts over 0.5 ms read 1.6 T events/s).
    pub fn events_per_sec(&self) -> f64 {
        self.per_sec(self.events)
    }

    fn per_sec(&self, n: u64) -> f64 {
        if self.run_secs() < 1e-3 {
            f64::NAN
        } else {
            n as f64 / self.run_secs()
        }
    }

    /// The human-readable table. Everything in it is deterministic (no wall times), so
    /// two runs with the same seed print the same bytes.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let mode = match self.mode {
            Mode::OneWay => "one-way messages",
            Mode::Rpc => "RPCs",
            Mode::Message => "one-way messages (send_message)",
        };
        let _ = writeln!(
            s,
            "workload {} at load {:.2}, {} hosts, {mode}, arrivals for {:.1} ms (first {:.1} ms \
             not measured), simulated to {:.3} ms",
            self.workload,
            self.load,
            self.hosts,
            self.duration_ns as f64 / 1e6,
            self.warmup_ns as f64 / 1e6,
            self.end_ns as f64 / 1e6,
        );
        let _ = writeln!(
            s,
            "messages: {} generated, {} measured, {} unfinished, {} failed, {} duplicated, {} \
             clamped to the 1,000,000-byte maximum",
            self.generated,
            self.measured,
            self.unfinished,
            self.failed,
            self.duplicates,
            self.clamped
        );
        let _ = writeln!(
            s,
            "slowdown by message length (10 buckets of equal message counts):"
        );
        let _ = writeln!(
            s,
            "  {:>4}  {:>9}  {:>9}  {:>9}  {:>8}  {:>8}",
            "pct", "from", "to", "messages", "P50", "P99"
        );
        for (i, b) in self.buckets.iter().enumerate() {
            let _ = writeln!(
                s,
                "  {:>3}%  {:>9}  {:>9}  {:>9}  {:>8.2}  {:>8.2}",
                (i + 1) * 100 / self.buckets.len(),
                b.min_len,
                b.max_len,
                b.count,
                b.p50,
                b.p99
            );
        }
        if let Some(b) = self.bins.first() {
            let _ = writeln!(
                s,
                "smallest size bin with messages ({}..{} bytes, {} messages): P50 {:.2}  P99 \
                 {:.2}  (read as the paper's tools read it: {:.2})",
                b.min_len,
                b.max_len,
                b.count,
                b.p50,
                b.p99,
                b.p99_hist.unwrap_or(f64::NAN)
            );
        }
        let _ = writeln!(
            s,
            "shortest 10%: P50 {:.2}  P99 {:.2}    all: P50 {:.2}  P99 {:.2}  (min {:.3})",
            self.p50_short, self.p99_short, self.p50_all, self.p99_all, self.min_slowdown
        );
        if self.drain == Drain::StopArrivals {
            let _ = writeln!(
                s,
                "arrivals stopped at {:.1} ms; {} at {:.3} ms: carried loads over {:.1}..{:.3} \
                 ms, offered over {:.1}..{:.1} ms",
                self.duration_ns as f64 / 1e6,
                if self.unfinished == 0 {
                    "the last message finished"
                } else {
                    "the drain limit came"
                },
                self.rates_end_ns as f64 / 1e6,
                self.warmup_ns as f64 / 1e6,
                self.rates_end_ns as f64 / 1e6,
                self.warmup_ns as f64 / 1e6,
                self.duration_ns as f64 / 1e6,
            );
        }
        let _ = writeln!(
            s,
            "host links: offered {:.3}, carried {:.3} (message wire bytes), goodput {:.3} \
             (payload), all wire bytes {:.3}",
            self.offered_load, self.utilization, self.goodput, self.wire_utilization
        );
        let e = &self.engine;
        let _ = writeln!(
            s,
            "queues: max {} B ToR->host, {} B ToR->agg, {} B agg->ToR, NIC {:.1} us; engine: \
             {} DATA, {} GRANT, {} RESEND, {} BUSY, {} retransmitted, {} timeouts, {} drops",
            self.max_queue_bytes[0],
            self.max_queue_bytes[1],
            self.max_queue_bytes[2],
            self.max_nic_backlog_ns as f64 / 1e3,
            e.packets_sent[0],
            e.packets_sent[1],
            e.packets_sent[2],
            e.packets_sent[4],
            e.retransmitted,
            e.timeouts,
            e.drops
        );
        if !self.timeline.is_empty() {
            let _ = writeln!(
                s,
                "timeline (fractions of the host links per interval; backlog = bytes offered \
                 and not yet sent to their host, per host):"
            );
            let _ = writeln!(
                s,
                "  {:>9}  {:>8}  {:>8}  {:>8}  {:>12}",
                "until ms", "offered", "carried", "wire", "backlog KB"
            );
            for p in &self.timeline {
                let _ = writeln!(
                    s,
                    "  {:>9.1}  {:>8.3}  {:>8.3}  {:>8.3}  {:>12.1}",
                    p.time_ns as f64 / 1e6,
                    p.offered_load,
                    p.utilization,
                    p.wire_utilization,
                    p.backlog_per_host / 1e3
                );
            }
        }
        let _ = writeln!(s, "result hash {:016x}", self.result_hash);
        s
    }

    /// Wall time and speed (not deterministic).
    pub fn perf_line(&self) -> String {
        let cpu = self
            .cpu_secs
            .map_or(String::new(), |c| format!(", {c:.2} s CPU"));
        let speed = if self.events_per_sec().is_nan() {
            "too short to time".to_string()
        } else {
            format!(
                "{:.2} M events/s, {:.2} M packets/s",
                self.events_per_sec() / 1e6,
                self.per_sec(self.packets) / 1e6
            )
        };
        format!(
            "{} events, {} packets in {:.2} s wall{cpu}: {speed}",
            self.events, self.packets, self.wall_secs,
        )
    }

    /// The one-line JSON summary of `homa sim --json`. With size bins it also has the
    /// smallest bin's `p50_slowdown_bin` and `p99_slowdown_bin`, and the run's counts.
    pub fn json_line(&self) -> String {
        let num = |x: f64| {
            if x.is_finite() {
                format!("{x:.4}")
            } else {
                "null".to_string()
            }
        };
        let bin = match self.bins.first() {
            Some(b) => format!(
                "\"p50_slowdown_bin\":{},\"p99_slowdown_bin\":{},\"p99_slowdown_bin_hist\":{},\
                 \"bin_max_len\":{},\"wire_utilization\":{},\"unfinished\":{},\"failed\":{},\
                 \"events\":{},",
                num(b.p50),
                num(b.p99),
                num(b.p99_hist.unwrap_or(f64::NAN)),
                b.max_len,
                num(self.wire_utilization),
                self.unfinished,
                self.failed,
                self.events
            ),
            None => String::new(),
        };
        format!(
            "{{\"workload\":\"{}\",\"load\":{},\"hosts\":{},\"p50_slowdown_short\":{},\
             \"p99_slowdown_short\":{},\"p99_slowdown_all\":{},\"utilization\":{},\
             {bin}\"events_per_sec\":{}}}",
            self.workload,
            self.load,
            self.hosts,
            num(self.p50_short),
            num(self.p99_short),
            num(self.p99_all),
            num(self.utilization),
            match self.events_per_sec() {
                e if e.is_finite() => format!("{e:.0}"),
                _ => "null".to_string(),
            }
        )
    }

    /// Our row beside the paper's for [`crate::paper::table`].
    pub fn paper_row(&self) -> String {
        let reference = crate::paper::reference(&self.workload, self.load);
        let paper = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
        let bin = self.bins.first();
        format!(
            "{:<4} {:>5.2} {:>10} {:>10} {:>9} {:>9} {:>12} {:>10.2} {:>8.3} {:>8.3} {:>6}",
            self.workload,
            self.load,
            bin.map_or("-".into(), |b| format!("{:.2}", b.p99)),
            bin.and_then(|b| b.p99_hist)
                .map_or("-".into(), |x| format!("{x:.2}")),
            paper(reference.map(|r| r.homa)),
            paper(reference.and_then(|r| r.pfabric)),
            bin.map_or("-".into(), |b| format!("{}..{}", b.min_len, b.max_len)),
            self.p99_short,
            self.utilization,
            self.wire_utilization,
            self.unfinished + self.failed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_papers_percentile_is_the_lower_edge_of_its_cell() {
        // The first 10,000 values reach 4.0, so the cells are 0.04 wide. The 9,900th
        // value, the nearest-rank P99, is 2.03, in the cell [2.00, 2.04).
        let mut v = vec![1.0; 9_899];
        v.push(4.0);
        v.extend([2.03; 100]);
        assert_eq!(percentile(&sorted(v.clone()), 0.99), 2.03);
        let p = paper_histogram_percentile(&v, 0.99);
        assert!((p - 2.0).abs() < 1e-9, "{p}");
        // Later values above the range go to the overflow cell, which reads as the
        // range's end: the largest of the first 10,000, however large they are.
        v.extend([9.0; 200]);
        assert_eq!(percentile(&sorted(v.clone()), 0.99), 9.0);
        assert_eq!(paper_histogram_percentile(&v, 0.99), 4.0);
        // The order matters: one 9.0 among the first values makes every cell 0.09
        // wide, and the same 2.03 reads as 1.98.
        let mut early = vec![9.0];
        early.extend(&v[..10_000]);
        assert_eq!(percentile(&sorted(early.clone()), 0.99), 2.03);
        let p = paper_histogram_percentile(&early, 0.99);
        assert!((p - 1.98).abs() < 1e-9, "{p}");
    }

    #[test]
    fn the_papers_percentile_of_few_or_equal_values() {
        assert!(paper_histogram_percentile(&[], 0.99).is_nan());
        // Fewer than 10,000: the range is set by all of them. Equal values sit at the
        // range's end (the overflow cell) and read as themselves.
        assert_eq!(paper_histogram_percentile(&[1.5; 10], 0.99), 1.5);
        // Never below the smallest value.
        assert_eq!(paper_histogram_percentile(&[1.234, 2.0], 0.5), 1.234);
    }
}
