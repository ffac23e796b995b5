//! Message-length distributions: the Homa papers' W1..W5 (`crates/sim/workloads/`, the
//! same files as `crates/harness/workloads/`, whose README describes them) and any CSV in
//! the same format.

use crate::topology::Segmentation;
use crate::SimError;

const BUILTIN: [(&str, &str); 6] = [
    ("w1", include_str!("../workloads/w1.csv")),
    ("w2", include_str!("../workloads/w2.csv")),
    ("w3", include_str!("../workloads/w3.csv")),
    ("w4", include_str!("../workloads/w4.csv")),
    ("w5", include_str!("../workloads/w5.csv")),
    ("starve", include_str!("../workloads/starve.csv")),
];

/// A message-length distribution, as a cumulative table.
///
/// Sampling follows the workloads README: draw `u` in `[0, 1)` and take the first row
/// whose cumulative fraction is `>= u`. Lengths above `max_length` (the engine's largest
/// message, 1,000,000 bytes) are clamped to it, as the Linux benchmark tool does.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    name: String,
    lengths: Vec<u32>,
    cdf: Vec<f64>,
    max_length: u32,
}

impl Workload {
    /// Names of the built-in workloads.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        BUILTIN.iter().map(|(n, _)| *n)
    }

    /// A built-in workload by name (`w1`..`w5`, `starve`), clamped at `max_length`.
    pub fn builtin(name: &str, max_length: u32) -> Result<Workload, SimError> {
        let lower = name.to_ascii_lowercase();
        let (_, text) = BUILTIN.iter().find(|(n, _)| *n == lower).ok_or_else(|| {
            let names: Vec<&str> = Workload::builtin_names().collect();
            SimError::Workload(format!(
                "unknown workload {name:?}: the simulator has {} (a CDF file is for \
                     `homa perf client` and `homa testbed bench`)",
                names.join(", ")
            ))
        })?;
        Workload::from_csv(&lower, text, max_length)
    }

    /// Parse `length_bytes,cumulative_fraction` rows (a header line is skipped).
    pub fn from_csv(name: &str, text: &str, max_length: u32) -> Result<Workload, SimError> {
        let bad = |m: String| SimError::Workload(format!("{name}: {m}"));
        let (mut lengths, mut cdf) = (Vec::new(), Vec::new());
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with("length") {
                continue;
            }
            let (l, f) = line
                .split_once(',')
                .ok_or_else(|| bad(format!("line {}: expected two fields", i + 1)))?;
            let l: u32 = l
                .trim()
                .parse()
                .map_err(|e| bad(format!("line {}: {e}", i + 1)))?;
            let f: f64 = f
                .trim()
                .parse()
                .map_err(|e| bad(format!("line {}: {e}", i + 1)))?;
            if l == 0 || !(0.0..=1.0).contains(&f) {
                return Err(bad(format!("line {}: out of range", i + 1)));
            }
            if lengths.last().is_some_and(|&p| p >= l) || cdf.last().is_some_and(|&p| p > f) {
                return Err(bad(format!("line {}: rows must increase", i + 1)));
            }
            lengths.push(l);
            cdf.push(f);
        }
        if cdf.last() != Some(&1.0) {
            return Err(bad("the last fraction must be 1.0".into()));
        }
        Ok(Workload {
            name: name.to_string(),
            lengths,
            cdf,
            max_length,
        })
    }

    /// The workload's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The length lengths are clamped to.
    pub fn max_length(&self) -> u32 {
        self.max_length
    }

    /// The longest length of the distribution (before clamping).
    pub fn longest(&self) -> u32 {
        self.lengths.last().copied().unwrap_or(1)
    }

    /// The same distribution, clamped at `max_length` instead.
    pub fn with_max_length(mut self, max_length: u32) -> Workload {
        self.max_length = max_length;
        self
    }

    /// The sampled length for `u` in `[0, 1)`, before clamping.
    pub fn sample_unclamped(&self, u: f64) -> u32 {
        let i = self
            .cdf
            .partition_point(|&f| f < u)
            .min(self.lengths.len() - 1);
        self.lengths[i]
    }

    /// The sampled length for `u` in `[0, 1)`, clamped to [`max_length`](Self::max_length).
    pub fn sample(&self, u: f64) -> u32 {
        self.sample_unclamped(u).min(self.max_length)
    }

    /// `(probability, clamped length)` of every row.
    fn rows(&self) -> impl Iterator<Item = (f64, u32)> + '_ {
        let mut prev = 0.0;
        self.lengths.iter().zip(&self.cdf).map(move |(&l, &f)| {
            let p = f - prev;
            prev = f;
            (p, l.min(self.max_length))
        })
    }

    /// Expected value of `f(length)` over the clamped distribution.
    pub fn expect(&self, mut f: impl FnMut(u32) -> f64) -> f64 {
        self.rows().map(|(p, l)| p * f(l)).sum()
    }

    /// Mean message length after clamping.
    pub fn mean(&self) -> f64 {
        self.expect(|l| l as f64)
    }

    /// Fraction of messages that clamping shortens.
    pub fn clamped_fraction(&self) -> f64 {
        let i = self.lengths.partition_point(|&l| l <= self.max_length);
        1.0 - if i == 0 { 0.0 } else { self.cdf[i - 1] }
    }

    /// Unscheduled-priority cutoffs the way the SIGCOMM paper chooses them (section 3.4):
    /// unscheduled priorities get a share of the 8 levels equal to the share of bytes that
    /// are sent unscheduled (at least one level, and at least one level stays scheduled),
    /// and the cutoffs split the unscheduled bytes evenly among those levels, shortest
    /// messages on the highest level.
    ///
    /// Returns `(max_sched_prio, unsched_cutoffs)` for [`homa_core::Config`], where an
    /// unscheduled level's cutoff is the longest message that uses it.
    pub fn paper_priorities(&self, seg: &Segmentation, unsched_bytes: u32) -> (u8, [u32; 8]) {
        let unsched_end = unsched_bytes.div_ceil(seg.max_segment) * seg.max_segment;
        let unsched = |l: u32| l.min(unsched_end) as f64;
        let total_unsched = self.expect(unsched);
        let fraction = total_unsched / self.mean();
        let levels = ((fraction * 8.0).round() as u8).clamp(1, 7);
        let max_sched_prio = 7 - levels;
        let mut cutoffs = [0u32; 8];
        // Walk the rows from the shortest length, filling levels 7, 6, ... each with an
        // equal share of the unscheduled bytes; the lowest unscheduled level takes the rest.
        let mut level = 7u8;
        let mut acc = 0.0;
        for (p, l) in self.rows() {
            acc += p * unsched(l);
            let filled = (8 - level) as f64 * total_unsched / levels as f64;
            if level > max_sched_prio + 1 && acc >= filled * (1.0 - 1e-9) {
                cutoffs[level as usize] = l;
                level -= 1;
            }
        }
        cutoffs[max_sched_prio as usize + 1] = self.max_length;
        (max_sched_prio, cutoffs)
    }
}

impl Workload {
    /// Unscheduled-priority cutoffs the way the SIGCOMM paper's simulator chooses them
    /// (its `STATIC_CBF_GRADUATED` mode): take every packet that travels at an unscheduled
    /// priority (those starting in the first `unsched_end` bytes of a message, and those
    /// with at most `tail_bytes` of their message left from their start, which its
    /// receivers grant at an unscheduled priority), weigh it by its wire bytes, and split
    /// that weight in `levels` equal shares by the bytes its message has left from the
    /// packet on, the fewest on the highest level. A cutoff equal to the one before is
    /// dropped (fewer levels are used). The lowest unscheduled level takes everything
    /// longer, up to [`max_length`](Self::max_length).
    ///
    /// With `by_remaining` false the packets are ranked by their message's length
    /// instead, for senders that choose priorities so (the module's way).
    ///
    /// With `grant_wire` > 0 the GRANTs count too, as a message with no bytes left (so
    /// on the highest level, where they travel): `grant_wire` wire bytes for each packet
    /// past the first `unsched_end` bytes. The paper's simulator does so
    /// (`accountForGrantTraffic`), which leaves fewer message bytes on the highest level.
    ///
    /// Returns `unsched_cutoffs` for [`homa_core::Config`] (index = priority), with
    /// `8 - levels` scheduled levels below.
    pub fn paper_cutoffs(
        &self,
        seg: &Segmentation,
        unsched_end: u32,
        tail_bytes: u32,
        levels: u8,
        by_remaining: bool,
        grant_wire: u32,
    ) -> [u32; 8] {
        use homa_core::cutoffs::{split, unscheduled_packets};
        let mut samples: Vec<(u32, f64)> = Vec::new();
        let mut grants = 0.0;
        for (p, len) in self.rows() {
            let scheduled = seg.packets(len) - seg.packets(len.min(unsched_end));
            grants += p * scheduled as f64 * grant_wire as f64;
            let packets =
                unscheduled_packets(len, seg.max_segment, unsched_end, tail_bytes, by_remaining);
            samples.extend(packets.map(|(left, bytes)| {
                let wire = seg.wire(bytes + homa_wire::DATA_HEADER_LEN as u32);
                (left, p * wire as f64)
            }));
        }
        if grants > 0.0 {
            samples.push((0, grants));
        }
        split(&mut samples, levels, self.max_length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_match_the_readme_means() {
        // Means from crates/harness/workloads/README.md: unclamped (exact over the raw
        // points) and clamped (as the Linux tool samples them, which differs a little from
        // the exact expectation over the rows: W3 by 6%).
        let want = [
            ("w1", 189.2, 192.8),
            ("w2", 441.6, 440.8),
            ("w3", 2_927.7, 2_567.7),
            ("w4", 127_796.6, 61_008.2),
            ("w5", 2_564_689.7, 386_161.5),
        ];
        for (name, raw, clamped) in want {
            let w = Workload::builtin(name, u32::MAX).unwrap();
            let m = w.mean();
            assert!((m / raw - 1.0).abs() < 0.001, "{name}: mean {m} vs {raw}");
            let m = Workload::builtin(name, 1_000_000).unwrap().mean();
            assert!(
                (m / clamped - 1.0).abs() < 0.07,
                "{name}: mean {m} vs {clamped}"
            );
        }
        let w4 = Workload::builtin("W4", 1_000_000).unwrap();
        assert!((w4.clamped_fraction() - 0.0279).abs() < 0.001);
        assert!(Workload::builtin("w9", 1).is_err());
    }

    #[test]
    fn sampling_takes_the_first_row_at_or_above_u() {
        let w = Workload::from_csv(
            "t",
            "length_bytes,cumulative_fraction\n10,0.5\n20,1.0\n",
            15,
        )
        .unwrap();
        assert_eq!(w.sample_unclamped(0.0), 10);
        assert_eq!(w.sample_unclamped(0.5), 10);
        assert_eq!(w.sample_unclamped(0.5001), 20);
        assert_eq!(w.sample(0.9), 15);
        assert_eq!(w.clamped_fraction(), 0.5);
        assert!(Workload::from_csv("t", "10,0.5\n5,1.0\n", 15).is_err());
        assert!(Workload::from_csv("t", "10,0.5\n", 15).is_err());
    }

    #[test]
    fn the_papers_cutoffs_split_unscheduled_bytes_by_what_is_left() {
        let seg = Segmentation::default();
        // Two lengths, equally likely: 100 bytes (one packet) and 3,000 (three packets,
        // all unscheduled, with 3,000, 1,584 and 168 bytes left). Weighed by wire bytes
        // and probability: 100 left 97, 168 left 145, 1,584 left 769, 3,000 left 769.
        // Two levels: half of the 1,780 is reached at 1,584 left.
        let w = Workload::from_csv("t", "100,0.5\n3000,1.0\n", 3_000).unwrap();
        let c = w.paper_cutoffs(&seg, 10_000, 0, 2, true, 0);
        assert_eq!(c, [0, 0, 0, 0, 0, 0, 3_000, 1_584]);
        // By length instead (the module's senders) all three packets of a 3,000-byte
        // message rank as 3,000: they are 95% of the weight, so the top level's half is
        // reached inside them and the top level takes every length.
        let c = w.paper_cutoffs(&seg, 10_000, 0, 2, false, 0);
        assert_eq!(c, [0, 0, 0, 0, 0, 0, 3_000, 3_000]);
        // W4 with the paper's seven scheduled levels: one unscheduled level, everything.
        let w4 = Workload::builtin("w4", u32::MAX).unwrap();
        let w4 = w4.clone().with_max_length(w4.longest());
        let c = w4.paper_cutoffs(&seg, 9_912, 9_912, 1, true, 0);
        assert_eq!(c, [0, 0, 0, 0, 0, 0, 0, 10_000_000]);
        // W1, seven levels: increasing cutoffs from level 7 down, the last unlimited.
        let w1 = Workload::builtin("w1", u32::MAX).unwrap();
        let w1 = w1.clone().with_max_length(w1.longest());
        let c = w1.paper_cutoffs(&seg, 9_912, 9_912, 7, true, 0);
        assert_eq!(c[0], 0);
        let used: Vec<u32> = c.iter().rev().copied().take_while(|&x| x > 0).collect();
        assert!(used.windows(2).all(|p| p[0] < p[1]), "{c:?}");
        assert_eq!(*used.last().unwrap(), w1.longest());
        assert!(used.len() >= 4, "{c:?}");
    }

    #[test]
    fn counting_the_grants_leaves_fewer_message_bytes_on_the_top_level() {
        let seg = Segmentation::default();
        // One unscheduled packet per message. Weighed by probability and wire bytes: 100
        // bytes 111, 200 bytes 80.5, the first packet of 30,000 bytes 384.5 (576 in all:
        // the top level's half is reached only inside the 30,000-byte messages). Their
        // 21 scheduled packets each draw a 99-byte GRANT: 519.75 more, counted as no
        // bytes left, so the top level's half of 1,095.75 is reached at 100 bytes.
        let w = Workload::from_csv("t", "100,0.5\n200,0.75\n30000,1.0\n", 30_000).unwrap();
        let without = w.paper_cutoffs(&seg, 1_416, 0, 2, true, 0);
        assert_eq!(without, [0, 0, 0, 0, 0, 0, 30_000, 30_000]);
        let with = w.paper_cutoffs(&seg, 1_416, 0, 2, true, 99);
        assert_eq!(with, [0, 0, 0, 0, 0, 0, 30_000, 100]);
    }

    #[test]
    fn paper_priorities_follow_the_unscheduled_share() {
        let seg = Segmentation::default();
        // W1: every byte is unscheduled: 7 unscheduled levels, 1 scheduled.
        let (sched, cut) = Workload::builtin("w1", 1_000_000)
            .unwrap()
            .paper_priorities(&seg, 10_000);
        assert_eq!(sched, 0);
        assert_eq!(cut[1], 1_000_000);
        assert!(cut[7] > 0 && cut[7] <= cut[6] && cut[2] <= cut[1]);
        // W5: almost everything is scheduled: one unscheduled level.
        let (sched, cut) = Workload::builtin("w5", 1_000_000)
            .unwrap()
            .paper_priorities(&seg, 10_000);
        assert_eq!(sched, 6);
        assert_eq!(cut[7], 1_000_000);
        assert_eq!(cut[..7], [0; 7]);
        for name in ["w2", "w3", "w4"] {
            let (sched, cut) = Workload::builtin(name, 1_000_000)
                .unwrap()
                .paper_priorities(&seg, 10_000);
            assert!(sched < 7);
            assert_eq!(cut[sched as usize + 1], 1_000_000, "{name}");
            for p in sched as usize + 1..7 {
                assert!(cut[p] >= cut[p + 1], "{name}: {cut:?}");
            }
        }
    }
}
