//! Swarm testing: chaos runs whose whole configuration, not only the seed, is drawn at
//! random: the workload, the faults, the number of hosts, the concurrency and the
//! engine's own parameters (unscheduled bytes, grant budget, overcommitment, MTU,
//! buffer caps). Bugs that need an unusual combination (a bulk upload of hundreds of
//! 1 MB requests to one host, a cap smaller than the traffic in flight) show up here
//! where a fixed configuration with many seeds never goes.
//!
//! Case `seed` is drawn from `seed` alone, so `homa chaos --swarm 1 --seed SEED` (with the
//! same byte budget) replays any case of any swarm.

use crate::chaos::{run_chaos, ChaosConfig, ChaosReport};
use crate::sizes::Sizes;
use crate::workloads;
use homa_core::Config;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt::Write;

/// Bytes of requests a case issues, about (its RPC count is this over the mean length).
pub const DEFAULT_BUDGET_BYTES: u64 = 20_000_000;

/// One drawn configuration.
#[derive(Debug, Clone)]
pub struct SwarmCase {
    /// The seed it was drawn from (also the chaos run's seed).
    pub seed: u64,
    /// The workload's name (`w1`..`w5`) or `fixed:<bytes>`.
    pub workload: String,
    /// The run.
    pub config: ChaosConfig,
}

impl SwarmCase {
    /// Draw case `seed` with about `budget_bytes` of requests.
    pub fn draw(seed: u64, budget_bytes: u64) -> SwarmCase {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5a4a_12d3_0bee_f00d);
        let (workload, size) = if rng.gen_bool(0.6) {
            let name = ["w1", "w2", "w3", "w4", "w5"][rng.gen_range(0..5)];
            (
                name.to_string(),
                workloads::builtin(name).expect("built in"),
            )
        } else {
            let len = log_uniform(&mut rng, 8, 1_000_000) as u32;
            (format!("fixed:{len}"), Sizes::Fixed(len))
        };
        let rpcs = rpcs_for(&size, budget_bytes, homa_wire::HOMA_MAX_MESSAGE_LENGTH);
        let mut fault = |p_none: f64, max: f64| {
            if rng.gen_bool(p_none) {
                0.0
            } else {
                rng.gen_range(0.0..max)
            }
        };
        let (loss, dup, reorder) = (fault(0.4, 0.2), fault(0.7, 0.05), fault(0.6, 0.5));
        let (corrupt, garbage) = (fault(0.8, 0.02), fault(0.8, 0.02));
        let endpoints = rng.gen_range(2..=16);
        let concurrency = log_uniform(&mut rng, 1, 1_024) as usize;
        let kill_server_at_ms = rng.gen_bool(0.1).then(|| rng.gen_range(1..=50));
        let defaults = Config::default();
        let endpoint = Config {
            unsched_bytes: log_uniform(&mut rng, 1_000, 100_000) as u32,
            max_incoming: log_uniform(&mut rng, 20_000, 2_000_000) as u32,
            max_overcommit: rng.gen_range(1..=8),
            window: if rng.gen_bool(0.8) {
                0
            } else {
                log_uniform(&mut rng, 1_000, 500_000) as u32
            },
            grant_fifo_fraction: [0, 50, 200][rng.gen_range(0..3)],
            pacer_fifo_fraction: [0, 50, 200][rng.gen_range(0..3)],
            mtu: [600, 1_500, 1_500, 4_000, 9_000][rng.gen_range(0..5)],
            max_incoming_held: log_uniform(&mut rng, 2 << 20, 256 << 20),
            max_outgoing_held: log_uniform(&mut rng, 2 << 20, 256 << 20),
            max_stalled_messages: log_uniform(&mut rng, 1, 1_024) as u32,
            max_peer_share_percent: rng.gen_range(10..=100),
            // From the seed's bits rather than the generator, so that every other draw
            // of a seed stays what it was before this parameter existed (seeds named in
            // regression tests keep their cases).
            grant_step_divisor: [16, 4, 1, 4][(seed >> 17) as usize % 4],
            // The same way: off (the module's) or the runtime's 20, now and then 50 (the
            // most a 100-tick timeout allows).
            resend_backoff_max_ticks: [0, 20, 20, 50][(seed >> 29) as usize % 4],
            // The module's 2, or the runtime's 6 in a quarter of the cases (from bits that
            // leave the seeds named in regression tests at 2).
            request_ack_ticks: [2, 2, 2, 6][(seed >> 37) as usize % 4],
            // The sender's exact SRPT order for one-packet messages too (`homa sim
            // --paper`'s), in a quarter of the cases; from the seed's bits, as above.
            short_messages_srpt: (seed >> 19) % 4 == 0,
            seed,
            ..defaults
        };
        // One-way messages: none in half the cases, else a share of the messages; now
        // and then some hosts that refuse them. (Drawn last, so that every parameter
        // above is what it was for the same seed before one-way messages existed.)
        let one_way = [0.0, 0.0, 0.0, 0.25, 0.5, 1.0][rng.gen_range(0..6)];
        let one_way_refusers = if one_way > 0.0 && rng.gen_bool(0.3) {
            rng.gen_range(1..=endpoints / 2)
        } else {
            0
        };
        // Messages longer than the module's 1,000,000 bytes in one case in seven: the
        // workloads' long rows come through (W5 up to 29 MB), a fixed length is drawn up
        // to the new maximum, and the buffer caps hold at least two of the longest.
        let (mut size, mut workload, mut rpcs, mut endpoint) = (size, workload, rpcs, endpoint);
        let mut stall_limit_ms = ChaosConfig::default().stall_limit_ms;
        if rng.gen_bool(1.0 / 7.0) {
            let max = log_uniform(&mut rng, 1_000_001, 8_000_000) as u32;
            if let Sizes::Fixed(_) = size {
                let len = log_uniform(&mut rng, 500_000, max as u64) as u32;
                (workload, size) = (format!("fixed:{len}"), Sizes::Fixed(len));
            }
            endpoint.max_message_length = max;
            endpoint.max_incoming_held = endpoint.max_incoming_held.max(2 * max as u64);
            endpoint.max_outgoing_held = endpoint.max_outgoing_held.max(2 * max as u64);
            rpcs = rpcs_for(&size, budget_bytes, max);
            // The time without a completion that calls a case stalled grows with the
            // longest message: through a grant window below a packet under heavy loss
            // (every lost packet or grant costs resend_ticks), a message takes seconds
            // per MB by construction, and 5 s called 1-7 MB messages stalled that all
            // completed given time (swarm cases 16508091999064753653, 13081274013300767473).
            stall_limit_ms *= (max as u64).div_ceil(1_000_000);
        }
        // The runtime's grant lead (a GRANT only once a round trip's worth of granted
        // bytes is left, see `Config::grant_lead_bytes`) in half the cases. Drawn last,
        // so that every parameter above is what it was for the same seed before.
        if rng.gen_bool(0.5) {
            endpoint.grant_lead_bytes = endpoint.unsched_bytes;
        }
        stall_limit_ms = stall_limit_ms.max(loss_rounds_ms(&size, &endpoint, loss + corrupt));
        let config = ChaosConfig {
            rpcs,
            endpoints,
            size,
            loss,
            dup,
            reorder,
            corrupt,
            garbage,
            seed,
            kill_server_at_ms,
            concurrency,
            endpoint,
            one_way,
            one_way_refusers,
            stall_limit_ms,
            ..ChaosConfig::default()
        };
        SwarmCase {
            seed,
            workload,
            config,
        }
    }

    /// The drawn parameters, on one line.
    pub fn describe(&self) -> String {
        let c = &self.config;
        let e = &c.endpoint;
        let mut s = format!(
            "{} rpcs of {}, {} hosts, concurrency {}, loss {:.3} dup {:.3} reorder {:.3} \
             corrupt {:.3} garbage {:.3}",
            c.rpcs,
            self.workload,
            c.endpoints,
            c.concurrency,
            c.loss,
            c.dup,
            c.reorder,
            c.corrupt,
            c.garbage
        );
        if let Some(ms) = c.kill_server_at_ms {
            let _ = write!(s, ", host 0 killed at {ms} ms");
        }
        if c.one_way > 0.0 {
            let _ = write!(
                s,
                ", one-way {:.2} ({} hosts refuse)",
                c.one_way, c.one_way_refusers
            );
        }
        let _ = write!(
            s,
            "; engine: unsched_bytes {} max_incoming {} max_overcommit {} window {} \
             grant_fifo {} pacer_fifo {} mtu {} max_incoming_held {} max_outgoing_held {} \
             max_stalled_messages {} max_peer_share_percent {} grant_step_divisor {} \
             grant_lead_bytes {} resend_backoff_max_ticks {} request_ack_ticks {} max_message_length {}",
            e.unsched_bytes,
            e.max_incoming,
            e.max_overcommit,
            e.window,
            e.grant_fifo_fraction,
            e.pacer_fifo_fraction,
            e.mtu,
            e.max_incoming_held,
            e.max_outgoing_held,
            e.max_stalled_messages,
            e.max_peer_share_percent,
            e.grant_step_divisor,
            e.grant_lead_bytes,
            e.resend_backoff_max_ticks,
            e.request_ack_ticks,
            e.max_message_length,
        );
        s
    }

    /// Run it.
    pub fn run(&self) -> ChaosReport {
        run_chaos(&self.config, &mut |_| {})
    }
}

/// Whether a swarm case's run is correct: nothing lost, duplicated or corrupted, and no
/// RPC failed except those to a killed host (which must fail in time) and one-way
/// messages to hosts that refuse them (which must fail with `NotAccepted`).
pub fn swarm_passed(report: &ChaosReport) -> bool {
    // (One-way messages to hosts that refuse them must fail: `one_way.refused`.)
    let failures_ok = if report.kill.is_some() {
        report.unexpected_failures == 0
    } else {
        report.result.failed == report.one_way.refused
    };
    report.passed() && failures_ok && report.stopped == "done"
}

/// RPCs for about `budget` bytes of requests of `size`, lengths up to `max`.
/// Three times what the longest message of `size` is expected to spend, both ways, waiting
/// for lost packets to be asked for again, when a fraction `drop` of packets is lost:
/// every round of grants in which one of its DATA packets or its GRANT is lost stops the
/// message for `resend_ticks` (1 ms each) until the receiver asks again. Where a window
/// holds a packet or two (a small `window`, or a small `max_incoming` shared among the
/// messages granted at once), that is seconds per megabyte: a 1 MB W5 message through
/// a 1,008-byte window at 14% loss waits in a third of its ~1,000 rounds, 1.8 s each way,
/// and swarm case 1551653 went 5.2 s between completions with every RPC completing given
/// time.
fn loss_rounds_ms(size: &Sizes, e: &Config, drop: f64) -> u64 {
    let longest = size.at_up_to(1.0, e.max_message_length) as f64;
    // About what a packet carries (the headers are under 100 bytes).
    let payload = (e.mtu as f64 - 100.0).max(100.0);
    let window = match e.window {
        0 => e.max_incoming / (e.max_overcommit + 1),
        w => w,
    };
    let window = (window as f64).max(payload);
    let round_stops = 1.0 - (1.0 - drop.min(1.0)).powf(window / payload + 1.0);
    let expected = longest / window * round_stops * e.resend_ticks as f64 * 2.0;
    (3.0 * expected) as u64
}

fn rpcs_for(size: &Sizes, budget: u64, max: u32) -> u64 {
    let n = 2_000;
    let mean = (0..n)
        .map(|i| size.at_up_to((i as f64 + 0.5) / n as f64, max) as u64)
        .sum::<u64>()
        / n;
    (budget / mean.max(1)).clamp(30, 3_000)
}

fn log_uniform(rng: &mut ChaCha8Rng, lo: u64, hi: u64) -> u64 {
    let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
    (rng.gen_range(a..=b).exp().round() as u64).clamp(lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_is_a_function_of_its_seed() {
        let (a, b) = (SwarmCase::draw(7, 1_000_000), SwarmCase::draw(7, 1_000_000));
        assert_eq!(a.describe(), b.describe());
        assert_ne!(a.describe(), SwarmCase::draw(8, 1_000_000).describe());
        let (mut long, mut one_way) = (0, 0);
        for seed in 0..200 {
            let c = SwarmCase::draw(seed, 1_000_000);
            let e = &c.config.endpoint;
            assert!(e.validate().is_ok(), "{}", c.describe());
            assert!((2..=16).contains(&c.config.endpoints));
            assert!((1..=1_024).contains(&c.config.concurrency));
            if e.max_message_length > homa_wire::HOMA_MAX_MESSAGE_LENGTH {
                long += 1;
                let held = e.max_incoming_held.min(e.max_outgoing_held);
                assert!(held >= 2 * e.max_message_length as u64, "{}", c.describe());
            }
            one_way += usize::from(c.config.one_way > 0.0);
        }
        // Some cases of each kind.
        assert!((15..60).contains(&long), "{long} cases with long messages");
        assert!(
            (60..140).contains(&one_way),
            "{one_way} cases with one-way messages"
        );
    }
}
