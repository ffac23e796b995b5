//! The bench of `homa testbed bench`: Homa against TCP across the testbed's congested
//! links, each host running the `homa` program ([`BenchConfig::homa`]).
//!
//! Every host runs a `homa perf server` and a `homa perf client` that sends the workload to
//! the servers on all the other hosts, chosen at random per RPC, at `load` x the link rate
//! of request bytes. With uniform destinations each switch-to-host link then carries about
//! `load` of its capacity, and several senders meet at each one: the incast that queues
//! build at, where Homa claims to keep short messages fast.
//!
//! For each transport (Homa over UDP, Homa over raw IP protocol 146, TCP), on fresh server
//! processes:
//! 1. calibration: host 0 runs RPCs one at a time to host 1 (nothing else running) and
//!    records the median RTT at a ladder of lengths, the unloaded RTT;
//! 2. load: all clients at once for `--seconds`, each writing every RPC's length and RTT;
//! 3. the servers are stopped and the switch's per-priority counters read.
//!
//! A message's slowdown is its RTT over the unloaded RTT for its length, with the best
//! transport's unloaded RTT as the one yardstick for all (so slowdowns compare directly).
//! The headline is the P99 slowdown of the shortest 10% of messages (the workload's first
//! length decile), Homa against TCP.
//!
//! Homa runs with a configuration sized for the link (see [`homa_config_for`]); the Linux
//! defaults assume 25 Gbps and on a 1 Gbps link let a receiver grant milliseconds of queue.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use homa_perf::homa::HomaApi;
use homa_perf::stats::{self, short_slowdowns, Baseline, BucketRow};
use homa_perf::workload::{Workload, WorkloadSpec};
use homa_perf::{plot, PerfError};
use serde_json::json;

use crate::cost::{Cost, Meter, ProcessCpu, RoleCpu};
use crate::net::{gone_within_grace, Testbed, TestbedConfig, TestbedError};
use crate::tally::PacketTally;

mod check;
pub use check::MAX_LOAD;
mod outputs;
use outputs::{client_summary, read_baseline, read_samples};

/// The port every perf server listens on (Homa and TCP).
const PORT: u16 = 4000;
/// Hosts by default (the demo's too).
pub const DEFAULT_HOSTS: usize = 3;
/// Switch-to-host link rate by default, Gbit/s (the demo's too). Measured on 2 vCPUs
/// with W4 at 80% load: every transport carried all of its load, the CPU 53% busy with
/// Homa, 28% with TCP; at 4 hosts and 1 Gbps both were CPU-bound (Homa carried 79%).
pub const DEFAULT_GBPS: f64 = 0.3;

/// What [`measure`] runs.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The `homa` program each host runs (`homa perf server` and `homa perf client`).
    pub homa: PathBuf,
    /// Request lengths: w1..w5, a fixed length, or a CDF file (as `homa perf client`).
    pub workload: WorkloadSpec,
    /// Offered load per host, as a fraction of the link rate (request bytes).
    pub load: f64,
    /// Hosts (each runs a server and a client).
    pub hosts: usize,
    /// Seconds of load per transport.
    pub seconds: f64,
    /// Rate of each switch-to-host link, Gbit/s.
    pub gbps: f64,
    /// MTU of every link.
    pub mtu: u32,
    /// Random loss at the switch, 0..1.
    pub loss: f64,
    /// Transports to run, in order.
    pub protos: Vec<BenchProto>,
    /// Milliseconds of unloaded calibration per transport.
    pub calibration_ms: u64,
    /// Homa options file for every Homa socket (`None`: one sized for the link, see
    /// [`homa_config_for`]).
    pub homa_config: Option<PathBuf>,
    /// Where to write slowdown vs length (log-log) for every transport (SVG).
    pub plot: PathBuf,
    /// Keep the per-host logs and samples in this directory (`None`: a temporary one,
    /// removed after a successful run).
    pub out_dir: Option<PathBuf>,
    /// Seed for lengths and arrivals (host i uses seed + i).
    pub seed: u64,
    /// Turn on the kernel's htb hysteresis for the run (see
    /// [`TestbedConfig::htb_hysteresis`]): the emulated switch then costs about a third
    /// less CPU, so the CPU figures are closer to what the transports themselves cost.
    pub htb_hysteresis: bool,
    /// Leave the links' offloads on (see [`TestbedConfig::offloads`]).
    pub offloads: bool,
    /// Which `homa` API the Homa clients use (`homa perf client --homa-api`).
    pub homa_api: HomaApi,
}

/// A transport the bench measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum BenchProto {
    /// Homa over UDP.
    Homa,
    /// Homa over raw IP protocol 146.
    HomaRaw,
    /// TCP.
    Tcp,
    /// Unary gRPC calls through tonic over Homa (UDP).
    GrpcHoma,
    /// Unary gRPC calls through tonic over HTTP/2 (TCP).
    GrpcH2,
}

impl BenchProto {
    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Homa => "homa",
            Self::HomaRaw => "homa_raw",
            Self::Tcp => "tcp",
            Self::GrpcHoma => "grpc_homa",
            Self::GrpcH2 => "grpc_h2",
        }
    }

    /// The name `homa perf client` gives this transport in its calibration JSON.
    fn perf_name(self) -> &'static str {
        match self {
            Self::Homa | Self::HomaRaw => "homa",
            other => other.name(),
        }
    }

    /// `homa perf` arguments selecting this transport.
    fn perf_args(self) -> &'static [&'static str] {
        match self {
            Self::Homa => &["--proto", "homa"],
            Self::HomaRaw => &["--proto", "homa", "--raw"],
            Self::Tcp => &["--proto", "tcp"],
            Self::GrpcHoma => &["--proto", "grpc-homa"],
            Self::GrpcH2 => &["--proto", "grpc-h2"],
        }
    }

    /// Runs on Homa sockets (which take the Homa options file).
    fn is_homa(self) -> bool {
        matches!(self, Self::Homa | Self::HomaRaw | Self::GrpcHoma)
    }
}

/// Why the bench failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The testbed could not be built (nothing was run).
    #[error(transparent)]
    NoTestbed(TestbedError),
    /// A testbed operation failed after it was built (counters, teardown).
    #[error(transparent)]
    Testbed(#[from] TestbedError),
    /// A perf step failed (workload, plot).
    #[error(transparent)]
    Perf(#[from] PerfError),
    /// A bad argument.
    #[error("{0}")]
    Usage(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A perf process failed; its log says why.
    #[error("{what} failed ({status}); its output is in {log}:\n{tail}")]
    Process {
        /// Which process.
        what: String,
        /// How it ended.
        status: String,
        /// The log file.
        log: String,
        /// The log's last lines.
        tail: String,
    },
}

/// The slowdown table by length (the rows `homa testbed bench` prints) as JSON: one object
/// per bucket of about a tenth of the RPCs, shortest first. A change that helps the
/// short-message tail can cost the medium and long messages; this is where it shows.
fn bucket_json(rows: &[BucketRow]) -> serde_json::Value {
    let finite = |x: f64| x.is_finite().then(|| stats::round1(x));
    rows.iter()
        .map(|r| {
            json!({
                "max_len": r.upper,
                "rpcs": r.count,
                "p50_slowdown": finite(r.slow_p50),
                "p99_slowdown": finite(r.slow_p99),
            })
        })
        .collect()
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// Homa options for a testbed link of `gbps`: unscheduled bytes of about 80 us of link
/// time (the round trip through the testbed's software switch under load; the Linux
/// default of 40 KB is 320 us at 1 Gbps) and a receiver-wide grant window (`max_incoming`)
/// of 2 ms of link time, under the 5 ms after which a receiver asks for missing bytes:
/// with the 400 KB default a 1 Gbps link queues 3.2 ms of granted bytes behind
/// higher-priority traffic, receivers ask for bytes still in the queue, and the spurious
/// retransmissions overflow it. And a budget of outgoing requests per client socket
/// (`max_outgoing_held`) of about 20 ms of link time, at least 4 MB (four of the longest
/// requests): a client offered more than its servers can take keeps the rest in the load
/// generator, where a waiting call costs nothing, instead of as requests its servers must
/// hold, refuse with BUSY and be asked about (the default, 256 MB, held a client's whole
/// backlog at `--gbps 3`; see BENCHMARKS.md).
pub fn homa_config_for(gbps: f64) -> String {
    let bytes_per_us = gbps * 1e3 / 8.0;
    let unsched = ((bytes_per_us * 80.0) as u32).clamp(1_500, 40_000);
    let incoming = ((bytes_per_us * 2_000.0) as u32).clamp(20_000, 400_000);
    let outgoing = ((bytes_per_us * 20_000.0) as u64).clamp(4 << 20, 256 << 20);
    format!(
        "# homa testbed bench: sized for a {gbps} Gbps link\n[homa]\nunsched_bytes = {unsched}\nmax_incoming = {incoming}\nmax_outgoing_held = {outgoing}\n"
    )
}

/// What a bench run measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Per transport (`homa`, `homa_raw`, `tcp`, `grpc_homa`, `grpc_h2`):
    /// `p99_slowdown_short`, `p50_slowdown_short`, `buckets` (P50 and P99 slowdown per
    /// length bucket: `max_len`, `rpcs`, `p50_slowdown`, `p99_slowdown`), `rpcs`,
    /// `failed`, `unfinished` (RPCs neither completed nor failed when the clients
    /// stopped waiting for them, 10 s after the load), `gbps` (carried), `offered_gbps` (the nominal rate), `drawn_gbps` (what
    /// the load generators drew, of which `carried` is the fraction), `cpu_busy`, what the
    /// machine spent (`cpu_seconds`, `cpu_s_per_gb` of requests carried,
    /// `switches_per_rpc`, `syscalls_per_rpc`: see [`crate::cost`]), the CPU of the
    /// hosts' processes by role (`cpu_us_per_rpc`: see
    /// [`ProtoReport::cpu_us_per_rpc`]), for Homa `packets_per_rpc` by type (both ways,
    /// as the clients' sockets counted them) and `packets_sent_by_clients_per_rpc` (the
    /// clients' part of them); `valid` and
    /// `invalid_because`; `testbed_warnings` (what the testbed could not set up as
    /// asked, such as an offload a link kept on, which changes what every transport
    /// costs); `htb_hysteresis` and `offloads` (whether the links kept their offloads,
    /// [`BenchConfig::offloads`]); and `short_p99_ratio_tcp_over_<homa>` for each Homa transport
    /// run beside TCP (`short_p99_ratio_grpc_h2_over_grpc_homa` for the gRPC lanes). What
    /// `homa testbed bench --json` prints.
    pub summary: serde_json::Value,
    /// The longest of the "shortest 10%" of messages, bytes.
    pub short_len: usize,
    /// Each transport's results, in the order run.
    pub protos: Vec<ProtoReport>,
    /// The offered load of all hosts together, Gbit/s of requests.
    pub offered_gbps: f64,
    /// Why the run is not a measurement of the network (a transport did not carry its
    /// load, or the CPU was saturated); empty when it is.
    pub invalid: Vec<String>,
    /// What the testbed could not set up as asked (`testbed_warnings` in `summary`).
    pub warnings: Vec<String>,
    /// Whether the switch ran with htb hysteresis (`htb_hysteresis` in `summary`; see
    /// [`BenchConfig::htb_hysteresis`]).
    pub htb_hysteresis: bool,
    /// Where the logs and samples were kept (`None`: a temporary directory, removed).
    pub kept: Option<PathBuf>,
}

/// One transport's results.
#[derive(Debug, Clone)]
pub struct ProtoReport {
    /// The transport.
    pub proto: BenchProto,
    /// RTT and slowdown by message length.
    pub rows: Vec<BucketRow>,
    /// RPCs completed.
    pub rpcs: usize,
    /// RPCs that failed.
    pub failed: u64,
    /// RPCs still outstanding when the clients stopped waiting for them: neither
    /// completed nor failed, and in no percentile (a transport that leaves many is
    /// worse than its percentiles say).
    pub unfinished: u64,
    /// Why the first failed RPC of the first client with failures failed, as it said.
    pub first_failure: Option<String>,
    /// Gbit/s of requests carried, all hosts together.
    pub gbps: f64,
    /// Fraction of the offered load carried.
    pub carried: f64,
    /// Share of the machine's CPU busy during the load (1.0: saturated).
    pub cpu_busy: Option<f64>,
    /// What the machine spent during the load (see [`crate::cost`]).
    pub cost: Option<Cost>,
    /// Packets the switch dropped, by Homa priority, summed over the links.
    pub drops: [u64; 8],
    /// Homa: packets per completed RPC by type (`DATA`, `GRANT`, ...), both directions,
    /// as the clients' sockets counted them (`None`: not Homa, or a client did not say).
    pub packets_per_rpc: Option<Vec<(String, f64)>>,
    /// Homa: the part of `packets_per_rpc` the clients sent (the servers sent the rest).
    pub packets_sent_by_clients_per_rpc: Option<Vec<(String, f64)>>,
    /// Homa: the clients' sockets' own system calls and wake-ups per completed RPC
    /// (`send_calls`, `receive_calls`, `waits`, `timer_sets`, `wakeups`: see
    /// `homa::IoCounts`), the clients' side of what `syscalls_per_rpc` counts machine-wide.
    pub client_io_per_rpc: Option<Vec<(String, f64)>>,
    /// CPU time of the clients' and the servers' processes, user and kernel apart
    /// (`None` where it could not be read).
    pub roles: Option<RoleCpu>,
}

impl ProtoReport {
    /// Busy CPU seconds (all cores) per GB of requests carried.
    pub fn cpu_s_per_gb(&self, seconds: f64) -> Option<f64> {
        let gb = self.gbps * seconds / 8.0;
        self.cost
            .map(|c| c.cpu_seconds / gb)
            .filter(|x| x.is_finite())
    }

    /// Context switches (all cores) per RPC completed.
    pub fn switches_per_rpc(&self) -> Option<f64> {
        (self.rpcs > 0).then_some(())?;
        self.cost.map(|c| c.switches as f64 / self.rpcs as f64)
    }

    /// Microseconds of CPU per RPC completed: the clients' and the servers' processes,
    /// each in user space and in the kernel, and the rest of the machine's busy time
    /// (`elsewhere`: softirq work charged to no host process, kernel threads, the bench
    /// itself), in the order `clients_user`, `clients_kernel`, `servers_user`,
    /// `servers_kernel`, `elsewhere`.
    pub fn cpu_us_per_rpc(&self) -> Option<Vec<(&'static str, f64)>> {
        (self.rpcs > 0).then_some(())?;
        let r = self.roles?;
        let per = |s: f64| s * 1e6 / self.rpcs as f64;
        let mut v = vec![
            ("clients_user", per(r.clients.user)),
            ("clients_kernel", per(r.clients.system)),
            ("servers_user", per(r.servers.user)),
            ("servers_kernel", per(r.servers.system)),
        ];
        if let Some(c) = self.cost {
            let hosts = r.clients.total() + r.servers.total();
            v.push(("elsewhere", per((c.cpu_seconds - hosts).max(0.0))));
        }
        Some(v)
    }

    /// [`cpu_us_per_rpc`](Self::cpu_us_per_rpc) as a JSON object (`null` where unknown).
    pub fn cpu_us_per_rpc_json(&self) -> serde_json::Value {
        match self.cpu_us_per_rpc() {
            Some(v) => v
                .iter()
                .map(|&(k, us)| (k.to_string(), json!(stats::round1(us))))
                .collect::<serde_json::Map<_, _>>()
                .into(),
            None => serde_json::Value::Null,
        }
    }

    /// System calls (all processes) per RPC completed, where they were counted.
    pub fn syscalls_per_rpc(&self) -> Option<f64> {
        (self.rpcs > 0).then_some(())?;
        self.cost
            .and_then(|c| c.syscalls)
            .map(|n| n as f64 / self.rpcs as f64)
    }
}

/// What a bench run tells as it goes.
#[derive(Debug)]
pub enum BenchEvent<'a> {
    /// The testbed is built (its warnings are in [`Testbed::warnings`]).
    Built {
        /// The testbed.
        testbed: &'a Testbed,
        /// The workload the clients draw from.
        workload: &'a Workload,
    },
    /// A transport's run starts (servers, calibration, load).
    Starting(BenchProto),
    /// A transport's unloaded RTTs are measured.
    Calibrated(BenchProto, &'a Baseline),
}

/// Builds the testbed, runs every transport in `config.protos` across it, tears it down,
/// writes the plot and returns what was measured; `on_event` hears of each step as it
/// happens. A testbed that cannot be built is [`BenchError::NoTestbed`], before anything
/// else is done.
pub fn measure(
    config: &BenchConfig,
    on_event: &mut dyn FnMut(BenchEvent<'_>),
) -> Result<BenchReport, BenchError> {
    config.check()?;
    let workload = Workload::load(&config.workload, None).map_err(PerfError::from)?;
    if let Some(path) = &config.homa_config {
        // Read by every host's server and client: a file they cannot use fails here,
        // before the testbed is built, not in the first server's log.
        homa_perf::homa::socket_options(Some(path), false)?;
    }
    // The testbed first: without root nothing else is left behind.
    let tb = Testbed::create(TestbedConfig {
        hosts: config.hosts,
        gbps: config.gbps,
        loss: config.loss,
        mtu: config.mtu,
        htb_hysteresis: config.htb_hysteresis,
        offloads: config.offloads,
        ..TestbedConfig::default()
    })
    .map_err(BenchError::NoTestbed)?;
    let (dir, temporary) = match &config.out_dir {
        Some(d) => (d.clone(), false),
        None => (crate::leftovers::scratch_dir(std::process::id()), true),
    };
    std::fs::create_dir_all(&dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
    // Ctrl-C or SIGTERM ends the process in the handler that tears the testbed down, and
    // a closed pipe unwinds it: either removes this too. (A run that fails keeps it: its
    // logs say why.)
    let _scratch = temporary.then(|| crate::net::remove_on_signal(&dir));
    let homa_config = match &config.homa_config {
        Some(p) => p.clone(),
        None => {
            let p = dir.join("homa.toml");
            std::fs::write(&p, homa_config_for(config.gbps))
                .map_err(io_err(format!("cannot write {}", p.display())))?;
            p
        }
    };

    on_event(BenchEvent::Built {
        testbed: &tb,
        workload: &workload,
    });
    let runner = Runner {
        tb: &tb,
        exe: &config.homa,
        dir: &dir,
        config,
        homa_config: &homa_config,
        workload_name: workload.name().to_string(),
    };
    let mut results = Vec::new();
    // Another process's testbed at any transport's end: its work is in this run's
    // machine-wide costs, and its load competes with this one's for the CPUs.
    let mut shared = crate::net::other_processes_have_testbeds();
    for &proto in &config.protos {
        on_event(BenchEvent::Starting(proto));
        results.push(runner.run_proto(proto, on_event)?);
        shared |= crate::net::other_processes_have_testbeds();
    }
    let hosts = tb.hosts();
    let warnings = tb.warnings().to_vec();
    let htb_hysteresis = tb.htb_hysteresis();
    tb.teardown()?;

    let baseline = Baseline::best_of(&results.iter().map(|r| &r.baseline).collect::<Vec<_>>());
    let bounds = stats::bucket_bounds(&workload);
    let short_len = bounds[0];
    let mut protos = Vec::new();
    let mut summary = json!({});
    let offered = config.load * config.gbps * hosts as f64;
    let mut invalid = Vec::new();
    for r in &results {
        let rows = stats::bucket_rows(&r.samples, &bounds, Some(&baseline));
        let short = short_slowdowns(&r.samples, short_len, &baseline);
        // The carried bytes are those of the requests that arrived in the measured
        // share of the run: a rate over that time.
        let measured_secs = config.seconds * homa_perf::load::MEASURED_SHARE;
        let gbps = r.request_bytes as f64 * 8.0 / measured_secs / 1e9;
        // Against what the generators drew, not the nominal rate: a few seconds of W4
        // draw a few percent more or less than the mean, the same for every transport.
        let carried = if r.offered_bytes > 0 {
            r.request_bytes as f64 / r.offered_bytes as f64
        } else {
            gbps / offered
        };
        let name = r.proto.name();
        if carried < CARRIED_VALID {
            // One decimal: 94.6% is under 95%, and must not read as 95%.
            invalid.push(format!(
                "{name} carried {:.1}% of its offered load (under {:.0}%)",
                100.0 * carried,
                100.0 * CARRIED_VALID
            ));
        }
        let cpu_busy = r.cost.map(|c| c.cpu_busy);
        if let Some(busy) = cpu_busy.filter(|&b| b >= CPU_SATURATED) {
            invalid.push(format!(
                "the CPU was {:.0}% busy during {name}'s load (saturated at {:.0}%)",
                100.0 * busy,
                100.0 * CPU_SATURATED
            ));
        }
        summary[name] = json!({
            "p99_slowdown_short": stats::round1(short.1),
            "p50_slowdown_short": stats::round1(short.0),
            "rpcs": r.samples.len(),
            "failed": r.failed,
            "unfinished": r.unfinished,
            "first_failure": r.first_failure,
            "gbps": stats::round3(gbps),
            "offered_gbps": stats::round3(offered),
            "drawn_gbps": stats::round3(if carried > 0.0 { gbps / carried } else { offered }),
            "carried": stats::round3(carried),
            "carried_fraction": stats::round3(carried),
            "cpu_busy": cpu_busy.map(stats::round3),
            "buckets": bucket_json(&rows),
        });
        let report = ProtoReport {
            proto: r.proto,
            rows,
            rpcs: r.samples.len(),
            failed: r.failed,
            unfinished: r.unfinished,
            first_failure: r.first_failure.clone(),
            gbps,
            carried,
            cpu_busy,
            cost: r.cost,
            drops: r.drops,
            packets_per_rpc: r.packets.as_ref().map(PacketTally::per_rpc),
            packets_sent_by_clients_per_rpc: r
                .packets
                .as_ref()
                .map(PacketTally::sent_by_clients_per_rpc),
            client_io_per_rpc: r.packets.as_ref().and_then(PacketTally::io_per_rpc),
            roles: r.roles,
        };
        let r3 = |x: Option<f64>| x.map(stats::round3);
        summary[name]["cpu_seconds"] = json!(r3(report.cost.map(|c| c.cpu_seconds)));
        summary[name]["cpu_s_per_gb"] = json!(r3(report.cpu_s_per_gb(config.seconds)));
        summary[name]["switches_per_rpc"] = json!(r3(report.switches_per_rpc()));
        summary[name]["syscalls_per_rpc"] = json!(r3(report.syscalls_per_rpc()));
        summary[name]["cpu_us_per_rpc"] = report.cpu_us_per_rpc_json();
        // Named counts per RPC as a JSON object, rounded.
        let by_name = |counts: &[(String, f64)]| -> serde_json::Map<_, _> {
            let round = |n: f64| json!(stats::round3(n));
            counts.iter().map(|(k, n)| (k.clone(), round(*n))).collect()
        };
        if let Some(p) = &report.packets_per_rpc {
            summary[name]["packets_per_rpc"] = json!(by_name(p));
        }
        if let Some(p) = &report.packets_sent_by_clients_per_rpc {
            summary[name]["packets_sent_by_clients_per_rpc"] = json!(by_name(p));
        }
        if let Some(io) = &report.client_io_per_rpc {
            summary[name]["client_io_per_rpc"] = json!(by_name(io));
        }
        protos.push(report);
    }
    if shared {
        invalid.push(
            "another process ran a testbed on this machine during the run: the machine-wide \
             costs count its work too, and the two loads shared the CPUs"
                .to_string(),
        );
    }
    summary["valid"] = json!(invalid.is_empty());
    summary["invalid_because"] = json!(invalid);
    summary["testbed_warnings"] = json!(&warnings);
    summary["htb_hysteresis"] = json!(htb_hysteresis);
    summary["offloads"] = json!(config.offloads);
    let p99 = |s: &serde_json::Value, name: &str| s[name]["p99_slowdown_short"].as_f64();
    for homa in ["homa", "homa_raw"] {
        if let (Some(h), Some(t)) = (p99(&summary, homa), p99(&summary, "tcp")) {
            let key = if homa == "homa" {
                "short_p99_ratio_tcp_over_homa".to_string()
            } else {
                format!("short_p99_ratio_tcp_over_{homa}")
            };
            summary[key] = json!(stats::round1(t / h));
        }
    }
    if let (Some(h), Some(t)) = (p99(&summary, "grpc_homa"), p99(&summary, "grpc_h2")) {
        summary["short_p99_ratio_grpc_h2_over_grpc_homa"] = json!(stats::round1(t / h));
    }
    let series: Vec<(&str, &[BucketRow])> = protos
        .iter()
        .map(|p| (p.proto.name(), p.rows.as_slice()))
        .collect();
    plot::slowdown_svg(
        &config.plot,
        &format!(
            "{} at {:.0}% load, {} hosts, {} Gbps links",
            workload.name(),
            config.load * 100.0,
            config.hosts,
            config.gbps
        ),
        &series,
    )?;
    let kept = if temporary {
        let _ = std::fs::remove_dir_all(&dir);
        crate::net::keep_on_signal(&dir);
        None
    } else {
        Some(dir)
    };
    Ok(BenchReport {
        summary,
        short_len,
        protos,
        offered_gbps: offered,
        invalid,
        warnings,
        htb_hysteresis,
        kept,
    })
}

/// What one transport's run produced.
struct ProtoResult {
    proto: BenchProto,
    baseline: Baseline,
    samples: Vec<(u32, u64)>,
    /// Request bytes of the RPCs of the measured share of the clients' arrivals
    /// completed before the arrivals ended (what was carried; see
    /// [`homa_perf::load::MEASURED_SHARE`]).
    request_bytes: u64,
    /// Request bytes the clients' load generators drew in the measured share (what was
    /// offered).
    offered_bytes: u64,
    failed: u64,
    unfinished: u64,
    first_failure: Option<String>,
    /// Packets the switch dropped, by Homa priority, summed over the links.
    drops: [u64; 8],
    /// What the machine spent during the load (every core, every process and the
    /// kernel's forwarding), where it could be read.
    cost: Option<Cost>,
    /// Homa: the packets the clients' sockets sent and received, summed.
    packets: Option<PacketTally>,
    /// CPU time of the clients' and the servers' processes during the load.
    roles: Option<RoleCpu>,
}

/// Above this share of busy CPU during a transport's load, the machine, not the network,
/// may be what limits it.
pub const CPU_SATURATED: f64 = 0.9;
/// Below this share of its offered load carried, a transport's run is not a measurement
/// of the network at that load.
pub const CARRIED_VALID: f64 = 0.95;

struct Runner<'a> {
    tb: &'a Testbed,
    exe: &'a Path,
    dir: &'a Path,
    config: &'a BenchConfig,
    homa_config: &'a Path,
    workload_name: String,
}

/// A child process stopped when dropped (servers; clients that outlive an error).
struct Proc {
    child: Child,
    what: String,
    log: PathBuf,
}

impl Drop for Proc {
    /// Asks the process to stop (SIGTERM: a perf server then exits as at the end of
    /// `--seconds`, through `exit`, so an instrumented build writes its profile), and kills
    /// it if it has not within the teardown's grace ([`gone_within_grace`]).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Not reaped yet, so the pid is still this child's.
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok()
                && gone_within_grace(|| matches!(self.child.try_wait(), Ok(None)))
            {
                return;
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn failed(&self, status: String) -> BenchError {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        BenchError::Process {
            what: self.what.clone(),
            status,
            log: self.log.display().to_string(),
            tail: lines[lines.len().saturating_sub(15)..].join("\n"),
        }
    }

    /// Waits up to `limit` for the process to exit successfully: status 0, or for a load
    /// generator 3, a run that measured what completed while some RPCs failed (its JSON
    /// counts them, and the bench reports them).
    fn finish(mut self, limit: Duration) -> Result<(), BenchError> {
        let end = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) if s.success() || s.code() == Some(3) => return Ok(()),
                Ok(Some(s)) => return Err(self.failed(describe(s))),
                Ok(None) if Instant::now() >= end => {
                    return Err(self.failed(format!("still running after {limit:?}")))
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(self.failed(e.to_string())),
            }
        }
    }
}

fn describe(s: ExitStatus) -> String {
    match s.code() {
        Some(c) => format!("exit status {c}"),
        None => format!("{s}"),
    }
}

impl Runner<'_> {
    fn server_addr(&self, host: usize) -> String {
        format!("{}:{PORT}", self.tb.host_ip(host))
    }

    /// Starts `homa perf <args>` in `host`'s namespace, output to `<dir>/<tag>.log`.
    fn spawn(&self, host: usize, tag: &str, args: &[String]) -> Result<Proc, BenchError> {
        let log = self.dir.join(format!("{tag}.log"));
        let out = File::create(&log).map_err(io_err(format!("cannot create {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err(format!("cannot reopen {}", log.display())))?;
        let child = self
            .tb
            .command(host, self.exe)
            .arg("perf")
            .args(args)
            // Killed outright, this run tears nothing down: they stop themselves.
            .env(
                crate::leftovers::EXIT_WITH_PARENT_ENV,
                std::process::id().to_string(),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io_err(format!("cannot start {tag} in host {host}")))?;
        Ok(Proc {
            child,
            what: format!("{tag} (host {host})"),
            log,
        })
    }

    fn homa_args(&self, proto: BenchProto) -> Vec<String> {
        let mut a: Vec<String> = proto.perf_args().iter().map(|s| s.to_string()).collect();
        if proto.is_homa() {
            a.push("--homa-config".into());
            a.push(self.homa_config.display().to_string());
        }
        a
    }

    /// Starts a server on every host and waits until each says it is listening.
    fn start_servers(&self, proto: BenchProto) -> Result<Vec<Proc>, BenchError> {
        let mut servers = Vec::new();
        for h in 0..self.tb.hosts() {
            let mut a = vec![
                "server".to_string(),
                "--addr".into(),
                self.server_addr(h),
                "--no-metrics".into(),
            ];
            a.extend(self.homa_args(proto));
            servers.push(self.spawn(h, &format!("{}-server-{h}", proto.name()), &a)?);
        }
        let ready = if proto.is_homa() { "Homa on" } else { "TCP on" };
        let end = Instant::now() + Duration::from_secs(10);
        for s in &mut servers {
            loop {
                let text = std::fs::read_to_string(&s.log).unwrap_or_default();
                if text.lines().any(|l| l.contains(ready)) {
                    break;
                }
                if let Ok(Some(st)) = s.child.try_wait() {
                    return Err(s.failed(describe(st)));
                }
                if Instant::now() >= end {
                    return Err(s.failed("did not start listening within 10 s".into()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(servers)
    }

    fn client_args(&self, proto: BenchProto) -> Vec<String> {
        let mut a = vec![
            "client".to_string(),
            "--workload".into(),
            self.workload_name.clone(),
        ];
        a.extend(self.homa_args(proto));
        if proto.is_homa() {
            let api = match self.config.homa_api {
                HomaApi::Tokio => "tokio",
                HomaApi::Blocking => "blocking",
            };
            a.extend(["--homa-api".into(), api.into()]);
        }
        a
    }

    fn run_proto(
        &self,
        proto: BenchProto,
        on_event: &mut dyn FnMut(BenchEvent<'_>),
    ) -> Result<ProtoResult, BenchError> {
        let name = proto.name();
        let servers = self.start_servers(proto)?;
        let before = self.tb.link_stats()?;

        // 1. Unloaded calibration, host 0 to host 1.
        let base_file = self.dir.join(format!("{name}-baseline.json"));
        let mut a = self.client_args(proto);
        a.extend([
            "--server".into(),
            self.server_addr(1),
            "--seconds".into(),
            "0".into(),
            "--calibration-ms".into(),
            self.config.calibration_ms.to_string(),
            "--baseline-out".into(),
            base_file.display().to_string(),
        ]);
        let cal = self.spawn(0, &format!("{name}-calibration"), &a)?;
        cal.finish(Duration::from_millis(self.config.calibration_ms) + Duration::from_secs(60))?;
        let baseline = read_baseline(&base_file, proto)?;
        on_event(BenchEvent::Calibrated(proto, &baseline));

        // 2. Load: every host's client against every other host's server.
        let meter = Meter::start(self.dir, name);
        let servers_cpu = |s: &[Proc]| {
            s.iter().try_fold(ProcessCpu::default(), |sum, p| {
                Some(sum.plus(ProcessCpu::of(p.child.id())?))
            })
        };
        let servers_before = servers_cpu(&servers);
        // The clients are reaped as they finish: their whole lives, from the sum over
        // this process's ended children.
        let children_before = ProcessCpu::of_reaped_children();
        let hosts = self.tb.hosts();
        let gbps = self.config.load * self.config.gbps;
        let mut clients = Vec::new();
        for h in 0..hosts {
            let others: Vec<String> = (0..hosts)
                .filter(|&o| o != h)
                .map(|o| self.server_addr(o))
                .collect();
            let mut a = self.client_args(proto);
            a.extend([
                "--server".into(),
                others.join(","),
                "--gbps".into(),
                format!("{gbps}"),
                "--seconds".into(),
                format!("{}", self.config.seconds),
                "--calibration-ms".into(),
                "0".into(),
                "--seed".into(),
                (self.config.seed + h as u64).to_string(),
                "--samples-out".into(),
                self.dir
                    .join(format!("{name}-samples-{h}.txt"))
                    .display()
                    .to_string(),
                "--json".into(),
            ]);
            clients.push(self.spawn(h, &format!("{name}-client-{h}"), &a)?);
        }
        let (tx, rx) = mpsc::channel();
        let limit = Duration::from_secs_f64(self.config.seconds) + Duration::from_secs(90);
        for c in clients {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = tx.send(c.finish(limit));
            });
        }
        drop(tx);
        let mut first_err = None;
        for r in rx {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        let roles = (|| {
            Some(RoleCpu {
                clients: ProcessCpu::of_reaped_children()?.since(children_before?),
                servers: servers_cpu(&servers)?.since(servers_before?),
            })
        })();
        let cost = meter.stop();
        drop(servers);
        if let Some(e) = first_err {
            return Err(e);
        }
        let after = self.tb.link_stats()?;
        let mut drops = [0u64; 8];
        for (b, a) in before.iter().zip(&after) {
            for (p, d) in drops.iter_mut().enumerate() {
                *d += a.priorities[p]
                    .dropped
                    .saturating_sub(b.priorities[p].dropped);
            }
        }

        // 3. Everyone's samples, and the failures the clients counted.
        let mut samples = Vec::new();
        let (mut failed, mut unfinished, mut offered_bytes, mut first_failure) = (0, 0, 0, None);
        let mut request_bytes = 0;
        let mut packets = Some(PacketTally::default());
        for h in 0..hosts {
            let file = self.dir.join(format!("{name}-samples-{h}.txt"));
            read_samples(&file, &mut samples)?;
            let client = client_summary(&self.dir.join(format!("{name}-client-{h}.log")))?;
            failed += client.errors;
            unfinished += client.unfinished;
            offered_bytes += client.offered_bytes;
            request_bytes += client.carried_bytes;
            first_failure = first_failure.or(client.first_error);
            // All clients' counts, or none: a partial sum would mislead.
            packets = packets.and_then(|mut p| {
                p.add(client.homa_packets.as_ref()?)?;
                Some(p)
            });
        }
        Ok(ProtoResult {
            proto,
            baseline,
            samples,
            request_bytes,
            offered_bytes,
            failed,
            unfinished,
            first_failure,
            drops,
            cost,
            packets,
            roles,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homa_config_scales_with_the_link() {
        let one = homa::Options::from_toml_str(&homa_config_for(1.0)).unwrap();
        assert_eq!(one.config.unsched_bytes, 10_000);
        assert_eq!(one.config.max_incoming, 250_000);
        let ten = homa::Options::from_toml_str(&homa_config_for(10.0)).unwrap();
        assert_eq!(ten.config.unsched_bytes, 40_000);
        assert_eq!(ten.config.max_incoming, 400_000);
        assert_eq!(ten.config.max_outgoing_held, 25_000_000);
        let slow = homa::Options::from_toml_str(&homa_config_for(0.01)).unwrap();
        assert_eq!(slow.config.unsched_bytes, 1_500);
        // Never under four of the longest requests.
        assert_eq!(one.config.max_outgoing_held, 4 << 20);
        assert_eq!(slow.config.max_outgoing_held, 4 << 20);
    }

    #[test]
    fn the_json_has_the_slowdown_of_every_length_bucket() {
        let samples: Vec<(u32, u64)> = (1..=100)
            .map(|i| (100, 10_000 * i))
            .chain((1..=10).map(|i| (50_000, 1_000_000 * i)))
            .collect();
        let baseline = Baseline::new(vec![(100, 10_000.0), (50_000, 1_000_000.0)]);
        let v = bucket_json(&stats::bucket_rows(
            &samples,
            &[100, 50_000],
            Some(&baseline),
        ));
        assert_eq!(v[0]["max_len"], 100);
        assert_eq!(v[0]["rpcs"], 100);
        assert_eq!(v[0]["p50_slowdown"], 50.0);
        assert_eq!(v[0]["p99_slowdown"], 99.0);
        assert_eq!(v[1]["max_len"], 50_000);
        assert_eq!(v[1]["rpcs"], 10);
        assert_eq!(v[1]["p99_slowdown"], 10.0);
        // Without a baseline there is no slowdown: null, not NaN (which is not JSON).
        let v = bucket_json(&stats::bucket_rows(&samples, &[100, 50_000], None));
        assert!(v[0]["p50_slowdown"].is_null(), "{v}");
        assert!(serde_json::to_string(&v)
            .unwrap()
            .parse::<serde_json::Value>()
            .is_ok());
    }
}
