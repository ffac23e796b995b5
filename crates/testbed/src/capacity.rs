//! `homa testbed capacity`: how fast a link each transport keeps up with on this machine.
//!
//! For each transport alone, the bench ([`crate::bench`]) runs at a switch-port rate that
//! starts at `start_gbps` and doubles while the transport keeps up, then bisects between
//! the last rate it kept up with and the first it did not. The transports take turns, a
//! probe each, so that the machine's drift in speed falls on all of them alike. Keeping
//! up means: it carried at least [`CARRIED_MIN`] of the offered load, no RPC failed, and
//! the machine's CPU was less than [`CPU_MAX`] busy. A transport's capacity is the
//! highest rate it kept up with (on this machine, whose CPUs every host shares: a
//! transport that needs less CPU per packet keeps up with faster links). Each probe also
//! says what the load cost: busy CPU seconds per GB of requests carried, context switches
//! and system calls per RPC (see [`crate::cost`]).

use std::path::Path;

use serde_json::{json, Value};

use crate::bench::{self, BenchConfig, BenchError, BenchProto, BenchReport, ProtoReport};
use homa_perf::stats::round3;

/// Least share of the offered load a transport must carry to keep up.
pub const CARRIED_MIN: f64 = 0.98;
/// Share of the machine's CPU at which a transport no longer counts as keeping up: the
/// CPU, not the link, would then be what limits it.
pub const CPU_MAX: f64 = 0.9;

/// What [`measure`] runs.
#[derive(Debug, Clone)]
pub struct CapacityConfig {
    /// The bench each probe runs: everything but `gbps` (set per probe), `protos` (one at
    /// a time) and `plot` (a scratch file).
    pub bench: BenchConfig,
    /// The first port rate tried, Gbit/s.
    pub start_gbps: f64,
    /// The highest port rate tried, Gbit/s.
    pub max_gbps: f64,
    /// Bisection steps after the doubling found a rate the transport does not keep up
    /// with.
    pub bisections: u32,
}

/// One bench run of one transport at one rate.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The port rate, Gbit/s.
    pub gbps: f64,
    /// The bench's results for the transport.
    pub report: ProtoReport,
    /// The short messages' P99 slowdown.
    pub p99_slowdown_short: Option<f64>,
    /// Why it did not keep up (empty: it did).
    pub missed: Vec<String>,
    /// Seconds of load (for the cost per GB).
    pub seconds: f64,
    /// What the testbed could not set up as asked for this probe (see
    /// `BenchReport::warnings`).
    pub warnings: Vec<String>,
    /// Whether the switch ran with htb hysteresis (see `BenchReport::htb_hysteresis`).
    pub htb_hysteresis: bool,
}

impl Probe {
    /// Whether the transport kept up at this rate.
    pub fn kept_up(&self) -> bool {
        self.missed.is_empty()
    }

    fn json(&self) -> Value {
        let r = &self.report;
        json!({
            "gbps": self.gbps,
            "kept_up": self.kept_up(),
            "carried": round3(r.carried),
            "failed": r.failed,
            "cpu_busy": r.cpu_busy.map(round3),
            "cpu_s_per_gb": r.cpu_s_per_gb(self.seconds).map(round3),
            "syscalls_per_rpc": r.syscalls_per_rpc().map(round3),
            "switches_per_rpc": r.switches_per_rpc().map(round3),
            "cpu_us_per_rpc": r.cpu_us_per_rpc_json(),
            "p99_slowdown_short": self.p99_slowdown_short,
        })
    }
}

/// One transport's capacity and the probes that found it (in the order run).
#[derive(Debug, Clone)]
pub struct ProtoCapacity {
    /// The transport.
    pub proto: BenchProto,
    /// Every probe.
    pub probes: Vec<Probe>,
}

impl ProtoCapacity {
    /// The probe at the highest rate the transport kept up with.
    pub fn best(&self) -> Option<&Probe> {
        self.probes
            .iter()
            .filter(|p| p.kept_up())
            .max_by(|a, b| a.gbps.total_cmp(&b.gbps))
    }

    /// The highest rate the transport kept up with, Gbit/s.
    pub fn capacity_gbps(&self) -> Option<f64> {
        self.best().map(|p| p.gbps)
    }
}

/// What [`measure`] found.
#[derive(Debug, Clone)]
pub struct CapacityReport {
    /// Per transport, in the order run.
    pub protos: Vec<ProtoCapacity>,
}

impl CapacityReport {
    /// What the testbed could not set up as asked, over every probe, each once (such as
    /// an offload a link kept on, which changes what every transport costs).
    pub fn warnings(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for w in self
            .protos
            .iter()
            .flat_map(|p| &p.probes)
            .flat_map(|p| &p.warnings)
        {
            if !all.contains(w) {
                all.push(w.clone());
            }
        }
        all
    }

    /// `{"<proto>":{"capacity_gbps":..,"cpu_s_per_gb":..,"syscalls_per_rpc":..,
    /// "switches_per_rpc":..,"probes":[..]},..,"testbed_warnings":[..],"htb_hysteresis":..}`:
    /// the costs at the capacity rate, every probe, [`warnings`](Self::warnings), and
    /// whether every probe's switch ran with htb hysteresis.
    pub fn json(&self) -> Value {
        let mut j = json!({});
        j["testbed_warnings"] = json!(self.warnings());
        let probes = || self.protos.iter().flat_map(|p| &p.probes);
        j["htb_hysteresis"] = json!(probes().all(|p| p.htb_hysteresis));
        for p in &self.protos {
            let best = p.best();
            let at = |k: &str| best.map_or(Value::Null, |b| b.json()[k].clone());
            j[p.proto.name()] = json!({
                "capacity_gbps": p.capacity_gbps(),
                "cpu_s_per_gb": at("cpu_s_per_gb"),
                "syscalls_per_rpc": at("syscalls_per_rpc"),
                "switches_per_rpc": at("switches_per_rpc"),
                "probes": p.probes.iter().map(Probe::json).collect::<Vec<_>>(),
            });
        }
        j
    }

    /// A table of every probe, then each transport's capacity.
    pub fn table(&self) -> String {
        let cell = |x: Option<f64>, d: usize| x.map_or("-".to_string(), |v| format!("{v:.d$}"));
        let mut s = format!(
            "{:<9} {:>6} {:>8} {:>6} {:>6} {:>9} {:>10} {:>10} {:>9}  kept up\n",
            "proto",
            "Gbps",
            "carried",
            "failed",
            "CPU",
            "CPU s/GB",
            "syscalls",
            "switches",
            "P99 short"
        );
        for p in &self.protos {
            for pr in &p.probes {
                let r = &pr.report;
                s += &format!(
                    "{:<9} {:>6} {:>7.1}% {:>6} {:>5}% {:>9} {:>10} {:>10} {:>9}  {}\n",
                    p.proto.name(),
                    pr.gbps,
                    100.0 * r.carried,
                    r.failed,
                    cell(r.cpu_busy.map(|b| 100.0 * b), 0),
                    cell(r.cpu_s_per_gb(pr.seconds), 2),
                    cell(r.syscalls_per_rpc(), 1),
                    cell(r.switches_per_rpc(), 1),
                    cell(pr.p99_slowdown_short, 1),
                    if pr.kept_up() {
                        "yes".to_string()
                    } else {
                        format!("no: {}", pr.missed.join(", "))
                    }
                );
            }
        }
        s += "\ncapacity (the highest port rate kept up with on this machine):\n";
        for p in &self.protos {
            s += &format!(
                "  {:<9} {}\n",
                p.proto.name(),
                p.capacity_gbps()
                    .map_or("below the first rate tried".to_string(), |g| format!(
                        "{g} Gbps"
                    ))
            );
        }
        s
    }
}

/// Finds each transport's capacity; `on_probe` hears of each probe as it ends.
///
/// Each probe runs one transport alone, and the transports take turns: one probe of
/// each per round, in the order given, then reversed in the next round. This machine's
/// speed drifts over minutes, and probing one transport's every rate before the next
/// transport's first put that drift between them; taking turns spreads it over all.
pub fn measure(
    config: &CapacityConfig,
    on_probe: &mut dyn FnMut(&Probe, BenchProto),
) -> Result<CapacityReport, BenchError> {
    let (start, max) = (config.start_gbps, config.max_gbps);
    if !(start > 0.0 && start.is_finite() && max >= start && max.is_finite()) {
        return Err(BenchError::Usage(format!(
            "the first rate (--gbps) must be positive and at most the highest (--max-gbps), \
             got {start} and {max} Gbps"
        )));
    }
    let scratch = std::env::temp_dir().join(format!("homa-capacity-{}.svg", std::process::id()));
    let mut protos: Vec<ProtoCapacity> = config
        .bench
        .protos
        .iter()
        .map(|&proto| ProtoCapacity {
            proto,
            probes: Vec::new(),
        })
        .collect();
    let mut searches: Vec<Search> = protos
        .iter()
        .map(|_| Search::new(start, max, config.bisections))
        .collect();
    let result = take_turns::<BenchError>(&mut searches, &mut |i, gbps| {
        let proto = protos[i].proto;
        let p = run_probe(config, proto, gbps, &scratch)?;
        on_probe(&p, proto);
        let ok = p.kept_up();
        protos[i].probes.push(p);
        Ok(ok)
    });
    let _ = std::fs::remove_file(&scratch);
    result?;
    Ok(CapacityReport { protos })
}

/// Runs `searches` a probe at a time, in turns (see [`measure`]): `probe(i, gbps)` probes
/// the `i`th and says whether it kept up. Stops at the first error.
fn take_turns<E>(
    searches: &mut [Search],
    probe: &mut dyn FnMut(usize, f64) -> Result<bool, E>,
) -> Result<(), E> {
    let mut round = 0;
    loop {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..searches.len()).collect()
        } else {
            (0..searches.len()).rev().collect()
        };
        let mut probed = false;
        for i in order {
            if let Some(gbps) = searches[i].next_rate() {
                let kept_up = probe(i, gbps)?;
                searches[i].record(kept_up);
                probed = true;
            }
        }
        if !probed {
            return Ok(());
        }
        round += 1;
    }
}

/// The rates one transport's search tries: doubling from `start` while it keeps up (at
/// most `max`), or halving down to an eighth of `start` until it does, then
/// `bisections` steps between the highest rate kept up with and the lowest not. Each
/// rate depends only on this transport's outcomes before it, so searches can take turns.
struct Search {
    start: f64,
    max: f64,
    bisections_left: u32,
    /// The highest rate kept up with, and the lowest not (bisection narrows them). Which
    /// are known says where the search is: only `ok`, doubling; only `bad`, halving;
    /// both, bisecting.
    ok: Option<f64>,
    bad: Option<f64>,
    /// The rate to probe next (`None`: the search is over).
    next: Option<f64>,
}

impl Search {
    fn new(start: f64, max: f64, bisections: u32) -> Search {
        Search {
            start,
            max,
            bisections_left: bisections,
            ok: None,
            bad: None,
            next: Some(start),
        }
    }

    /// The rate to probe next, if the search is not over.
    fn next_rate(&self) -> Option<f64> {
        self.next
    }

    /// The probe at [`next_rate`](Self::next_rate) kept up, or did not.
    fn record(&mut self, kept_up: bool) {
        let Some(g) = self.next.take() else { return };
        if kept_up {
            self.ok = Some(g);
        } else {
            self.bad = Some(g);
        }
        self.next = match (self.ok, self.bad) {
            (Some(_), None) => Some(g * 2.0).filter(|&up| up <= self.max),
            (None, Some(_)) => Some(g / 2.0).filter(|&down| down >= self.start / 8.0),
            _ => self.bisect(),
        };
    }

    /// The next bisection step, if one is left and the two bounds are apart.
    fn bisect(&mut self) -> Option<f64> {
        let (lo, hi) = (self.ok?, self.bad?);
        if self.bisections_left == 0 {
            return None;
        }
        self.bisections_left -= 1;
        let mid = ((lo + hi) / 2.0 * 1000.0).round() / 1000.0;
        (mid > lo && mid < hi).then_some(mid)
    }
}

/// One bench run of `proto` alone at `gbps`.
fn run_probe(
    config: &CapacityConfig,
    proto: BenchProto,
    gbps: f64,
    plot: &Path,
) -> Result<Probe, BenchError> {
    let bench_config = BenchConfig {
        gbps,
        protos: vec![proto],
        plot: plot.to_path_buf(),
        ..config.bench.clone()
    };
    let report: BenchReport = bench::measure(&bench_config, &mut |_| {})?;
    let r = report
        .protos
        .into_iter()
        .next()
        .expect("the bench reports the one transport it ran");
    let mut missed = Vec::new();
    if r.carried < CARRIED_MIN {
        missed.push(format!("carried {:.1}%", 100.0 * r.carried));
    }
    if r.failed > 0 {
        let why = r.first_failure.as_deref().unwrap_or("?");
        missed.push(format!("{} RPCs failed (the first: {why})", r.failed));
    }
    match r.cpu_busy {
        Some(b) if b >= CPU_MAX => missed.push(format!("CPU {:.0}% busy", 100.0 * b)),
        None => missed.push("CPU use unknown".into()),
        _ => {}
    }
    Ok(Probe {
        gbps,
        p99_slowdown_short: report.summary[proto.name()]["p99_slowdown_short"].as_f64(),
        report: r,
        missed,
        seconds: config.bench.seconds,
        warnings: report.warnings,
        htb_hysteresis: report.htb_hysteresis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rates tried against a transport that keeps up with anything up to `limit`.
    fn tried(start: f64, max: f64, bisections: u32, limit: f64) -> Vec<f64> {
        let mut rates = Vec::new();
        take_turns::<()>(&mut [Search::new(start, max, bisections)], &mut |_, g| {
            rates.push(g);
            Ok(g <= limit)
        })
        .unwrap();
        rates
    }

    #[test]
    fn doubles_until_behind_then_bisects() {
        assert_eq!(tried(0.5, 16.0, 2, 1.7), [0.5, 1.0, 2.0, 1.5, 1.75]);
    }

    #[test]
    fn halves_when_behind_at_the_start_and_stops_at_an_eighth() {
        assert_eq!(tried(2.0, 16.0, 1, 0.6), [2.0, 1.0, 0.5, 0.75]);
        assert_eq!(tried(2.0, 16.0, 3, 0.1), [2.0, 1.0, 0.5, 0.25]);
    }

    #[test]
    fn stops_at_the_highest_rate_allowed() {
        assert_eq!(tried(1.0, 5.0, 2, 100.0), [1.0, 2.0, 4.0]);
    }

    #[test]
    fn a_failing_probe_ends_the_search() {
        let mut calls = 0;
        let mut searches = [Search::new(1.0, 16.0, 2), Search::new(1.0, 16.0, 2)];
        let r = take_turns(&mut searches, &mut |_, _| {
            calls += 1;
            if calls == 3 {
                Err("boom")
            } else {
                Ok(true)
            }
        });
        assert_eq!((r, calls), (Err("boom"), 3));
    }

    #[test]
    fn transports_take_turns_and_swap_order_each_round() {
        // The first keeps up to 1.7 Gbps, the second to 0.6.
        let limits = [1.7, 0.6];
        let mut log = Vec::new();
        let mut searches = [Search::new(0.5, 16.0, 2), Search::new(0.5, 16.0, 2)];
        take_turns::<()>(&mut searches, &mut |i, g| {
            log.push((i, g));
            Ok(g <= limits[i])
        })
        .unwrap();
        // Each sees the rates it would see alone...
        let alone = |i: usize| {
            log.iter()
                .filter(|p| p.0 == i)
                .map(|p| p.1)
                .collect::<Vec<_>>()
        };
        assert_eq!(alone(0), [0.5, 1.0, 2.0, 1.5, 1.75]);
        assert_eq!(alone(1), [0.5, 1.0, 0.75, 0.625]);
        // ...one probe each per round, the order reversed every other round, and the one
        // with probes left goes on alone.
        let order: Vec<usize> = log.iter().map(|p| p.0).collect();
        assert_eq!(order, [0, 1, 1, 0, 0, 1, 1, 0, 0]);
    }
}
