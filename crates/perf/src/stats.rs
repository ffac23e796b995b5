//! Latency statistics: histograms, run summaries, unloaded baselines and the per-length
//! bucket table.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::workload::Workload;

/// A latency histogram in nanoseconds (1 ns .. 1 hour, 3 significant digits).
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Records `ns` (saturating at the histogram's top).
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.max(1));
}

/// Nanoseconds to microseconds.
pub fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// The `q` quantile of `hist` (RTTs in ns), in µs; NaN (null in JSON) when it holds
/// nothing: no RPC completed, so there is no latency, not one of 0.
pub fn quantile_us(hist: &Histogram<u64>, q: f64) -> f64 {
    if hist.is_empty() {
        f64::NAN
    } else {
        us(hist.value_at_quantile(q))
    }
}

/// Rounds to 0.1 for printing in JSON.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Rounds to 0.001 for printing in JSON.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The numbers a load run ends with. Serialized (`serde_json::to_string`) it is the
/// `homa perf client --json` line,
/// `{"proto":..,"rpcs":..,"gbps":..,"p50_us":..,"p99_us":..,"p999_us":..,"offered_bytes":..,
/// "carried_bytes":..,"errors":..}`, then for Homa `"homa_packets":{"rpcs":..,"sent":{..},"received":{..}}`: a
/// struct serializes its fields in declaration order (a `serde_json::Value` would sort
/// them), which keeps the documented key order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// `homa` or `tcp`.
    pub proto: &'static str,
    /// RPCs completed.
    pub rpcs: u64,
    /// Request payload Gbit/s carried: `carried_bytes` over the time their arrivals
    /// lasted (the first [`MEASURED_SHARE`](crate::load::MEASURED_SHARE) of the run).
    pub gbps: f64,
    /// RTT percentiles, µs (NaN, null in JSON, when no RPC completed).
    pub p50_us: f64,
    /// RTT P99, µs.
    pub p99_us: f64,
    /// RTT P99.9, µs.
    pub p999_us: f64,
    /// Request bytes of every arrival the load generator drew in the measured share of
    /// the run (its first [`MEASURED_SHARE`](crate::load::MEASURED_SHARE)), those it
    /// skipped (too many outstanding) included: what the run offered, against which
    /// `carried_bytes` is what it carried. (The nominal rate times the duration differs
    /// from it by the sampling: W4 over 5 s draws a few percent more or less.)
    pub offered_bytes: u64,
    /// Request bytes of the RPCs that arrived in the measured share and completed before
    /// the arrivals ended (the carried load). RPCs that arrived later, or completed while
    /// the run drained after the arrivals, count in `rpcs` and the percentiles, not here.
    pub carried_bytes: u64,
    /// RPCs that failed (an error from the transport: timeout, peer gone, connection
    /// reset...); not in `rpcs` nor in the percentiles.
    pub errors: u64,
    /// RPCs still outstanding when the run's drain gave up on them (10 s after the
    /// arrivals ended): neither completed nor failed, so in no other count here.
    pub unfinished: u64,
    /// Homa only: the packets the client's socket sent and received over its life, by
    /// type, and the responses it completed (`rpcs`), calibration included; see
    /// [`crate::homa::packet_counts`]. Every packet of an RPC has the client at one end,
    /// so summed over a run's clients these count every packet that crossed the network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub homa_packets: Option<serde_json::Value>,
}

impl Summary {
    /// Summarises `hist` (RTTs in ns) over `secs` seconds in which `offered_bytes` of
    /// requests were offered, `carried_bytes` completed in time and `errors` RPCs failed.
    pub fn new(
        proto: &'static str,
        hist: &Histogram<u64>,
        (offered_bytes, carried_bytes): (u64, u64),
        secs: f64,
        errors: u64,
    ) -> Self {
        Self {
            proto,
            rpcs: hist.len(),
            gbps: if secs > 0.0 {
                carried_bytes as f64 * 8.0 / secs / 1e9
            } else {
                0.0
            },
            p50_us: quantile_us(hist, 0.5),
            p99_us: quantile_us(hist, 0.99),
            p999_us: quantile_us(hist, 0.999),
            offered_bytes,
            carried_bytes,
            errors,
            unfinished: 0,
            homa_packets: None,
        }
    }

    /// The same, rounded for printing (Gbit/s to 0.001, µs to 0.1).
    pub fn to_json(&self) -> Summary {
        Summary {
            gbps: round3(self.gbps),
            p50_us: round1(self.p50_us),
            p99_us: round1(self.p99_us),
            p999_us: round1(self.p999_us),
            ..self.clone()
        }
    }
}

/// Unloaded RTT as a function of message length: the median RTT of one-at-a-time RPCs at
/// a few lengths, linearly interpolated between them (and held flat beyond the ends).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baseline {
    /// `(length, unloaded RTT in ns)`, sorted by length.
    points: Vec<(usize, f64)>,
}

impl Baseline {
    /// From `(length, RTT ns)` points in any order.
    pub fn new(mut points: Vec<(usize, f64)>) -> Self {
        points.sort_by_key(|p| p.0);
        points.dedup_by_key(|p| p.0);
        Self { points }
    }

    /// The measured points.
    pub fn points(&self) -> &[(usize, f64)] {
        &self.points
    }

    /// Unloaded RTT (ns) for a message of `len` bytes; `None` without points.
    pub fn unloaded_ns(&self, len: usize) -> Option<f64> {
        let first = self.points.first()?;
        let last = self.points.last()?;
        if len <= first.0 {
            return Some(first.1);
        }
        if len >= last.0 {
            return Some(last.1);
        }
        let i = self.points.partition_point(|p| p.0 < len);
        let (l0, r0) = self.points[i - 1];
        let (l1, r1) = self.points[i];
        Some(r0 + (r1 - r0) * (len - l0) as f64 / (l1 - l0) as f64)
    }

    /// The pointwise best of several baselines (for `--proto both`: the best unloaded RTT
    /// either transport achieved, so both are measured against the same yardstick).
    pub fn best_of(all: &[&Baseline]) -> Baseline {
        let mut lengths: Vec<usize> = all
            .iter()
            .flat_map(|b| b.points.iter().map(|p| p.0))
            .collect();
        lengths.sort_unstable();
        lengths.dedup();
        Baseline::new(
            lengths
                .into_iter()
                .filter_map(|l| {
                    all.iter()
                        .filter_map(|b| b.unloaded_ns(l))
                        .min_by(f64::total_cmp)
                        .map(|r| (l, r))
                })
                .collect(),
        )
    }
}

/// Upper bounds of the length buckets: the lengths at message-count quantiles 10%, 20%, ..,
/// 90%, 99% and 100% of the (clamped) workload, duplicates merged. Each bucket holds the
/// messages with `previous bound < length <= bound`.
pub fn bucket_bounds(w: &Workload) -> Vec<usize> {
    let mut qs: Vec<f64> = (1..10).map(|i| i as f64 / 10.0).collect();
    qs.push(0.99);
    qs.push(1.0);
    let mut bounds: Vec<usize> = qs.into_iter().map(|q| w.quantile(q)).collect();
    bounds.dedup();
    bounds
}

/// One row of the bucket table.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketRow {
    /// Longest length in the bucket.
    pub upper: usize,
    /// Share of all completed RPCs in this bucket, 0..1.
    pub share: f64,
    /// RPCs in the bucket.
    pub count: usize,
    /// Median length of the bucket's RPCs (the x coordinate of plots).
    pub median_len: usize,
    /// RTT P50, µs.
    pub rtt_p50_us: f64,
    /// RTT P99, µs.
    pub rtt_p99_us: f64,
    /// Slowdown P50 (RTT / unloaded RTT for the length); NaN without a baseline.
    pub slow_p50: f64,
    /// Slowdown P99.
    pub slow_p99: f64,
}

fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Groups `(length, RTT ns)` samples into the buckets ending at `bounds` (lengths above
/// the last bound join the last bucket) and computes RTT and slowdown percentiles.
pub fn bucket_rows(
    samples: &[(u32, u64)],
    bounds: &[usize],
    baseline: Option<&Baseline>,
) -> Vec<BucketRow> {
    let mut groups: Vec<Vec<(u32, u64)>> = vec![Vec::new(); bounds.len()];
    for &(len, rtt) in samples {
        let i = bounds
            .partition_point(|&b| b < len as usize)
            .min(bounds.len() - 1);
        groups[i].push((len, rtt));
    }
    let total = samples.len().max(1) as f64;
    bounds
        .iter()
        .zip(groups)
        .map(|(&upper, g)| {
            let mut rtts: Vec<f64> = g.iter().map(|s| s.1 as f64).collect();
            rtts.sort_by(f64::total_cmp);
            let mut slows: Vec<f64> = match baseline {
                Some(b) => g
                    .iter()
                    .filter_map(|&(l, r)| b.unloaded_ns(l as usize).map(|u| r as f64 / u))
                    .collect(),
                None => Vec::new(),
            };
            slows.sort_by(f64::total_cmp);
            let mut lens: Vec<u32> = g.iter().map(|s| s.0).collect();
            lens.sort_unstable();
            BucketRow {
                upper,
                share: g.len() as f64 / total,
                count: g.len(),
                median_len: lens.get(lens.len() / 2).map_or(upper, |&l| l as usize),
                rtt_p50_us: nearest_rank(&rtts, 0.5) / 1000.0,
                rtt_p99_us: nearest_rank(&rtts, 0.99) / 1000.0,
                slow_p50: nearest_rank(&slows, 0.5),
                slow_p99: nearest_rank(&slows, 0.99),
            }
        })
        .collect()
}

/// Formats a float for a table cell: `-` for NaN.
pub fn cell(x: f64, decimals: usize) -> String {
    if x.is_nan() {
        "-".to_string()
    } else {
        format!("{x:.decimals$}")
    }
}

/// The bucket table of one run, as text (one line per bucket, with a header).
pub fn bucket_table(rows: &[BucketRow]) -> String {
    let mut s = format!(
        "{:>10} {:>6} {:>8} {:>11} {:>11} {:>9} {:>9}\n",
        "length<=", "share", "rpcs", "rtt_p50_us", "rtt_p99_us", "slow_p50", "slow_p99"
    );
    for r in rows {
        s.push_str(&format!(
            "{:>10} {:>5.1}% {:>8} {:>11} {:>11} {:>9} {:>9}\n",
            r.upper,
            r.share * 100.0,
            r.count,
            cell(r.rtt_p50_us, 1),
            cell(r.rtt_p99_us, 1),
            cell(r.slow_p50, 2),
            cell(r.slow_p99, 2),
        ));
    }
    s
}

/// P50 and P99 slowdown of the messages no longer than `short_len`.
pub fn short_slowdowns(samples: &[(u32, u64)], short_len: usize, base: &Baseline) -> (f64, f64) {
    let rows = bucket_rows(
        &samples
            .iter()
            .copied()
            .filter(|&(l, _)| l as usize <= short_len)
            .collect::<Vec<_>>(),
        &[short_len],
        Some(base),
    );
    (rows[0].slow_p50, rows[0].slow_p99)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_interpolates_and_holds_ends() {
        let b = Baseline::new(vec![(1000, 20_000.0), (100, 10_000.0)]);
        assert_eq!(b.unloaded_ns(10), Some(10_000.0));
        assert_eq!(b.unloaded_ns(550), Some(15_000.0));
        assert_eq!(b.unloaded_ns(5000), Some(20_000.0));
        assert_eq!(Baseline::default().unloaded_ns(5), None);
        let c = Baseline::new(vec![(100, 12_000.0), (1000, 15_000.0)]);
        let best = Baseline::best_of(&[&b, &c]);
        assert_eq!(best.points(), &[(100, 10_000.0), (1000, 15_000.0)]);
    }

    #[test]
    fn buckets_split_by_length_and_compute_percentiles() {
        let bounds = [100, 1000];
        let mut samples = Vec::new();
        for i in 1..=100u64 {
            samples.push((50u32, i * 1000));
        }
        samples.push((5000, 7_000_000)); // beyond the last bound: joins the last bucket
        samples.push((1000, 3_000_000));
        let base = Baseline::new(vec![(50, 1000.0), (1000, 1_000_000.0)]);
        let rows = bucket_rows(&samples, &bounds, Some(&base));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].count, 100);
        assert_eq!(rows[0].rtt_p50_us, 50.0);
        assert_eq!(rows[0].rtt_p99_us, 99.0);
        assert_eq!(rows[0].slow_p50, 50.0);
        assert_eq!(rows[1].count, 2);
        assert_eq!(rows[1].rtt_p99_us, 7000.0);
        assert_eq!(rows[1].slow_p50, 3.0);
        assert!(bucket_table(&rows).contains("length<="));
        let none = bucket_rows(&samples, &bounds, None);
        assert!(none[0].slow_p50.is_nan());
    }

    #[test]
    fn bucket_bounds_follow_workload_quantiles() {
        let w = Workload::builtin("w4").unwrap();
        let b = bucket_bounds(&w);
        assert!(b.windows(2).all(|p| p[0] < p[1]));
        assert_eq!(*b.last().unwrap(), 1_000_000);
        let fixed = bucket_bounds(&Workload::fixed(100));
        assert_eq!(fixed, vec![100]);
    }

    #[test]
    fn summary_json_has_the_documented_keys() {
        let mut h = new_hist();
        for v in [10_000u64, 20_000, 30_000] {
            record(&mut h, v);
        }
        let s = Summary::new("tcp", &h, (1_100_000_000, 1_000_000_000), 8.0, 2);
        let line = serde_json::to_string(&s.to_json()).unwrap();
        let j: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(j["proto"], "tcp");
        assert_eq!(j["rpcs"], 3);
        assert_eq!(j["gbps"], 1.0);
        for k in ["p50_us", "p99_us", "p999_us"] {
            assert!(j[k].as_f64().unwrap() > 0.0);
        }
        assert_eq!(j["offered_bytes"], 1_100_000_000u64);
        assert_eq!(j["carried_bytes"], 1_000_000_000u64);
        assert_eq!(j["errors"], 2);
        // The documented keys in the documented order, `errors` last.
        let keys = [
            "proto",
            "rpcs",
            "gbps",
            "p50_us",
            "p99_us",
            "p999_us",
            "offered_bytes",
            "carried_bytes",
            "errors",
        ];
        let at: Vec<usize> = keys
            .iter()
            .map(|k| line.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(at.windows(2).all(|p| p[0] < p[1]), "{line}");
    }

    #[test]
    fn short_slowdowns_use_only_the_short_messages() {
        let base = Baseline::new(vec![(100, 1000.0), (10_000, 100_000.0)]);
        let mut samples: Vec<(u32, u64)> = (1..=100).map(|i| (100, i * 1000)).collect();
        samples.push((10_000, 1));
        let (p50, p99) = short_slowdowns(&samples, 100, &base);
        assert_eq!((p50, p99), (50.0, 99.0));
    }
}
