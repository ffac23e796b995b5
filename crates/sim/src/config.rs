//! What to simulate: network, workload, load, duration, and the engine's configuration.

use crate::paper::Choice;
use crate::topology::{Segmentation, Topology, IP_UDP_OVERHEAD, MTU, PAPER_IP_OVERHEAD};
use crate::workload::Workload;
use crate::SimError;

/// What each message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The paper's one-way messages as the Linux module's API can make them: each message
    /// is an RPC request answered with a 1-byte response, and is complete when the server
    /// application receives it.
    OneWay,
    /// Full RPCs: the server echoes a response as long as the request; complete when the
    /// client application receives the response.
    Rpc,
    /// True one-way messages (the engine's `send_message`, this implementation's
    /// extension): nothing comes back but the engine's acknowledgements; complete when the
    /// receiving application gets the message.
    Message,
}

impl Mode {
    /// Length of the response to a `len`-byte request (0: none).
    pub fn response_len(self, len: u32) -> u32 {
        match self {
            Mode::OneWay => 1,
            Mode::Rpc => len,
            Mode::Message => 0,
        }
    }
}

/// The best time a message is divided by to make its slowdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ideal {
    /// The exact best time in the simulated network ([`Topology::ideal_ns`]).
    Exact,
    /// The formula of the SIGCOMM paper's simulator ([`Topology::paper_ideal_ns`]).
    Paper,
}

/// What offered (and carried) load counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadDefinition {
    /// The wire bytes of the messages' DATA packets (requests and responses, every header
    /// and Ethernet overhead).
    Messages,
    /// The SIGCOMM paper's: the same, plus one GRANT for every scheduled DATA packet
    /// (its `adjustLoadFac.py` sets its arrival rates so).
    Paper,
}

/// What happens when arrivals end, and so over which time the loads are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Arrivals go on after [`SimConfig::duration_ns`] (unmeasured, so the measured
    /// messages see the same load to the end) until every message started before it is
    /// complete, or for at most [`SimConfig::drain_ns`]. Loads are measured over the
    /// arrival window `[warm-up, duration)`.
    KeepArriving,
    /// The SIGCOMM paper's simulator: arrivals stop at [`SimConfig::duration_ns`] and the
    /// network runs until every message is complete (at most
    /// [`SimConfig::drain_ns`] longer). Carried loads are measured from the end of the
    /// warm-up to the moment the last message completed, so a backlog the links have
    /// not kept up with shows as a long drain and a lower carried load; offered load
    /// over the arrival window.
    StopArrivals,
}

/// With [`Drain::StopArrivals`], [`SimConfig::paper`] lets the network drain for at most
/// this many times the arrival period ([`SimConfig::duration_ns`]): far longer than a
/// healthy run needs, so that only a stuck message reaches the limit.
pub const PAPER_DRAIN_LIMIT: u64 = 10;

/// A whole simulation scenario. [`SimConfig::new`] gives the paper's setup.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The network.
    pub topology: Topology,
    /// Message lengths.
    pub workload: Workload,
    /// Offered load: the fraction of every host link's bandwidth that the messages' wire
    /// bytes fill (requests and responses, all headers and Ethernet overheads included).
    pub load: f64,
    /// Messages arrive during `[0, duration_ns)`.
    pub duration_ns: u64,
    /// Messages that arrive before `warmup_fraction * duration_ns` are not measured.
    pub warmup_fraction: f64,
    /// After `duration_ns`, the run goes on (see [`drain`](Self::drain)) until every
    /// message started before it is complete, or for at most this long.
    pub drain_ns: u64,
    /// Whether arrivals go on after `duration_ns`.
    pub drain: Drain,
    /// Seed of every random choice (arrivals, lengths, destinations, spraying, engines).
    pub seed: u64,
    /// One-way messages or RPCs.
    pub mode: Mode,
    /// The engine configuration every host runs (each host's `seed` is derived from
    /// [`seed`](Self::seed)).
    pub engine: homa_core::Config,
    /// Priority queues in each switch port (1..=8); packet priorities above
    /// `switch_priorities - 1` share the top queue. 1 models switches without priorities.
    pub switch_priorities: u8,
    /// The ideal slowdowns divide by.
    pub ideal: Ideal,
    /// What load counts.
    pub load_definition: LoadDefinition,
    /// Upper bounds of message-size bins to report slowdowns in (the paper's), beside the
    /// 10 buckets of equal counts; empty for none.
    pub size_bins: Vec<u32>,
    /// Every this many nanoseconds of simulated time, record the running byte counts
    /// ([`Report::timeline`](crate::Report::timeline)): whether the links keep up with
    /// the offered load or a backlog builds. 0: none.
    pub timeline_ns: u64,
}

impl SimConfig {
    /// The paper's setup for `workload` at `load`, 100 ms of arrivals, one-way messages,
    /// and [`paper_engine_config`] for the engine.
    pub fn new(topology: Topology, workload: Workload, load: f64) -> SimConfig {
        let engine = paper_engine_config(&topology, &workload);
        SimConfig {
            topology,
            workload,
            load,
            duration_ns: 100_000_000,
            warmup_fraction: 0.1,
            drain_ns: 50_000_000,
            drain: Drain::KeepArriving,
            seed: 1,
            mode: Mode::OneWay,
            engine,
            switch_priorities: 8,
            ideal: Ideal::Exact,
            load_definition: LoadDefinition::Messages,
            size_bins: Vec::new(),
            timeline_ns: 0,
        }
    }

    /// The SIGCOMM paper's measurement of `workload` (`w1`..`w5`) at `load`: its network
    /// with its host delays ([`Topology::paper_delays`]), one-way messages
    /// ([`Mode::Message`]) of every length the workload has (none clamped), its ideal,
    /// load definition and size bins, arrivals stopped at the end and every message
    /// run to completion ([`Drain::StopArrivals`], for at most ten times the arrival
    /// period), and the engine set as its simulator's Homa ([`paper_mode_engine_config`]).
    pub fn paper(workload: &str, load: f64) -> Result<SimConfig, SimError> {
        Self::paper_without(workload, load, &[])
    }

    /// [`paper`](Self::paper) with the choices in `off` undone (each back to our default
    /// model's, see [`Choice`]), everything else the same: what each choice buys.
    pub fn paper_without(workload: &str, load: f64, off: &[Choice]) -> Result<SimConfig, SimError> {
        let bins = crate::paper::size_bins(workload)
            .ok_or_else(|| SimError::Workload(format!("the paper has no {workload:?}")))?;
        let topology = Topology::paper_delays();
        let w = Workload::builtin(workload, u32::MAX)?;
        let w = if off.contains(&Choice::Uncapped) {
            w.with_max_length(homa_wire::HOMA_MAX_MESSAGE_LENGTH)
        } else {
            w.clone().with_max_length(w.longest())
        };
        let engine = paper_mode_engine_config_without(&topology, &w, off)?;
        let mode = if off.contains(&Choice::OneWay) {
            Mode::OneWay
        } else {
            Mode::Message
        };
        let base = SimConfig::new(topology, w, load);
        Ok(SimConfig {
            mode,
            drain: Drain::StopArrivals,
            drain_ns: PAPER_DRAIN_LIMIT * base.duration_ns,
            ideal: Ideal::Paper,
            load_definition: LoadDefinition::Paper,
            size_bins: bins.to_vec(),
            engine,
            ..base
        })
    }

    /// Check everything fits together.
    pub fn validate(&self) -> Result<(), SimError> {
        self.topology.validate()?;
        let bad = |m: &str| Err(SimError::Config(m.to_string()));
        if !(self.load > 0.0 && self.load <= 1.5) {
            return bad("load must be in (0, 1.5]");
        }
        if self.duration_ns == 0 || !(0.0..1.0).contains(&self.warmup_fraction) {
            return bad("duration must be positive and warmup_fraction in [0, 1)");
        }
        if !(1..=8).contains(&self.switch_priorities) {
            return bad("switch_priorities must be 1..=8");
        }
        if self.engine.mtu != MTU {
            return bad("the simulated links carry 1500-byte IP packets (mtu 1500)");
        }
        if self.workload.max_length() > self.engine.max_message_length {
            return bad("workload lengths are clamped above the engine's max_message_length");
        }
        self.engine
            .validate()
            .map_err(|e| SimError::Config(e.to_string()))
    }

    /// Wire bytes a message of `len` bytes counts for in the load (see
    /// [`LoadDefinition`]): its DATA, that of its response if any, and under the paper's
    /// definition a GRANT per scheduled packet.
    pub fn load_bytes(&self, len: u32) -> u64 {
        let seg = Segmentation::of(&self.engine);
        let one = |l: u32| {
            let data = seg.message_wire_bytes(l);
            if self.load_definition == LoadDefinition::Messages {
                return data;
            }
            let unsched = self.engine.unsched_bytes.div_ceil(seg.max_segment) * seg.max_segment;
            let scheduled = seg.packets(l) - seg.packets(l.min(unsched));
            let grant = seg.wire(homa_wire::PacketType::Grant.header_len() as u32);
            data + scheduled as u64 * grant as u64
        };
        let resp = self.mode.response_len(len);
        one(len) + if resp > 0 { one(resp) } else { 0 }
    }

    /// Mean wire bytes of one message exchange (request plus response) as the load counts
    /// them.
    pub fn mean_exchange_wire_bytes(&self) -> f64 {
        self.workload.expect(|l| self.load_bytes(l) as f64)
    }

    /// Mean message arrivals per nanosecond at each host for the offered load.
    pub fn arrival_rate_per_ns(&self) -> f64 {
        let bytes_per_ns = self.topology.host_mbps as f64 / 8_000.0;
        self.load * bytes_per_ns / self.mean_exchange_wire_bytes()
    }
}

/// The engine configuration for the paper's network, from the engine's defaults. Changes,
/// and why:
/// - `link_mbps` = the host link rate (the pacer must model the real NIC).
/// - `unsched_bytes` = the round trip at that rate ([`Topology::rtt_ns`], one full DATA
///   packet out and a GRANT back between racks: 6.8 us, 8.5 KB at 10 Gbps), rounded up to
///   whole packets: 8,496 bytes (6 packets). The paper used ~9.7 KB at 10 Gbps; the
///   engine's 40,000 is for 25 Gbps and longer host delays. A lone 1 MB message still
///   arrives in exactly its ideal time with this (see the tests).
/// - `window` = `unsched_bytes`: each granted message may have one round trip of granted
///   bytes outstanding, as in the paper. The engine's dynamic window (max_incoming /
///   (active+1)) would give a lone message 200 KB and remove the point of overcommitment.
///   `max_incoming` keeps its default (400,000) so it only caps pathological cases.
/// - `max_nic_est_backlog_usecs` = 0 (from 5): the paper's hosts hand the NIC one packet
///   at a time, so nothing waits in a NIC queue but what the pacer lets through (short
///   messages and control packets). With 0 the engine hands over the next paced packet
///   exactly when the NIC goes idle (its estimate is exact here), so the link never idles
///   either. At 10 Gbps, 5 us would let ~4 full packets queue in the NIC FIFO ahead of
///   every short message and GRANT; even 1 us raised W4's short-message P99 slowdown from
///   2.2 to 2.6 (see RESULTS.md).
/// - unscheduled priorities and cutoffs from the workload ([`Workload::paper_priorities`]).
///
/// Everything else (overcommitment 8, FIFO fractions, the 1 ms tick, resend and timeout
/// ticks) keeps the engine's default.
pub fn paper_engine_config(topology: &Topology, workload: &Workload) -> homa_core::Config {
    engine_config_framed(topology, workload, IP_UDP_OVERHEAD)
}

/// [`paper_engine_config`] for packets behind `ip_overhead` bytes of IP (and UDP)
/// header: the unscheduled bytes and cutoffs follow from the packets' sizes.
fn engine_config_framed(
    topology: &Topology,
    workload: &Workload,
    ip_overhead: u32,
) -> homa_core::Config {
    let mut c = homa_core::Config {
        link_mbps: topology.host_mbps,
        mtu: MTU,
        ip_overhead,
        max_nic_est_backlog_usecs: 0,
        // Acks on a request's first packet only: RESULTS.md's tables (and their result
        // hashes) were measured so. `--set acks_in_every_packet=true` for the module's way.
        acks_in_every_packet: false,
        ..homa_core::Config::default()
    };
    let seg = Segmentation::of(&c);
    let rtt_bytes = topology.rtt_ns(&seg) * topology.host_mbps as u64 / 8_000;
    let packets = (rtt_bytes as u32).div_ceil(seg.max_segment).max(1);
    c.unsched_bytes = packets * seg.max_segment;
    c.window = c.unsched_bytes;
    let (max_sched_prio, cutoffs) = workload.paper_priorities(&seg, c.unsched_bytes);
    c.max_sched_prio = max_sched_prio;
    c.unsched_cutoffs = cutoffs;
    c
}

/// The engine as the SIGCOMM paper's simulator ran Homa, for [`SimConfig::paper`]: from
/// [`paper_engine_config`] (the round trip of unscheduled bytes and of each granted
/// message's window, no NIC backlog), and further:
/// - every message paced, none handed to the NIC unasked (`defer_min_bytes` 0): its hosts
///   give the NIC one packet when the last has left, shortest remaining first;
/// - no FIFO shares of grants or of the sender (`grant_fifo_fraction`,
///   `pacer_fifo_fraction` 0): it has none;
/// - as many scheduled levels as messages granted at once, per workload
///   ([`crate::paper::sched_levels`]: W1 1, W2 3, W3 4, W4 and W5 7), the other levels
///   unscheduled;
/// - the sender sends from the message with the fewest bytes left, one-packet messages
///   among the others (`short_messages_srpt`), as its sender does (`SRBF`);
/// - unscheduled priorities by the bytes left (`unsched_prio_by_remaining`), the last
///   round trip of a message granted at the unscheduled priority of what is left
///   (`grant_tail_bytes`), the cutoffs from [`Workload::paper_cutoffs`] with the
///   GRANTs counted on the highest level (its `accountForGrantTraffic`);
/// - messages as long as the workload's longest, and buffer caps that never bind;
/// - the paper's frames on the links ([`PAPER_IP_OVERHEAD`] bytes counted in front of the
///   Homa header: the engine's pacer and the simulated links charge a packet as if its
///   header were the paper's 30 bytes), and so 1,442 bytes of message per full packet.
pub fn paper_mode_engine_config(
    topology: &Topology,
    workload: &Workload,
) -> Result<homa_core::Config, SimError> {
    paper_mode_engine_config_without(topology, workload, &[])
}

/// [`paper_mode_engine_config`] with the engine choices in `off` undone (see
/// [`Choice`]); the cutoffs follow from what is left (the choices of priority and tail
/// grants change which bytes travel unscheduled and how they are ranked).
pub fn paper_mode_engine_config_without(
    topology: &Topology,
    workload: &Workload,
    off: &[Choice],
) -> Result<homa_core::Config, SimError> {
    let on = |c: Choice| !off.contains(&c);
    let paper_levels = crate::paper::sched_levels(workload.name())
        .ok_or_else(|| SimError::Workload(format!("the paper has no {:?}", workload.name())))?;
    let ip_overhead = if on(Choice::PaperFrames) {
        PAPER_IP_OVERHEAD
    } else {
        IP_UDP_OVERHEAD
    };
    let mut c = engine_config_framed(topology, workload, ip_overhead);
    let module = homa_core::Config::default();
    if on(Choice::PaceAll) {
        c.defer_min_bytes = 0;
    }
    if on(Choice::NoFifo) {
        c.grant_fifo_fraction = 0;
        c.pacer_fifo_fraction = 0;
    }
    let levels = if on(Choice::SchedLevels) {
        c.max_overcommit = paper_levels as u32;
        paper_levels
    } else {
        c.max_overcommit = module.max_overcommit;
        module.max_sched_prio + 1
    };
    c.max_sched_prio = levels - 1;
    c.unsched_prio_by_remaining = on(Choice::ByRemaining);
    c.grant_tail_bytes = if on(Choice::TailGrants) {
        c.unsched_bytes
    } else {
        0
    };
    c.short_messages_srpt = on(Choice::ShortFirst);
    let seg = Segmentation::of(&c);
    let grant_wire = seg.wire(homa_wire::PacketType::Grant.header_len() as u32);
    c.unsched_cutoffs = workload.paper_cutoffs(
        &seg,
        c.unsched_bytes,
        c.grant_tail_bytes,
        8 - levels,
        c.unsched_prio_by_remaining,
        grant_wire,
    );
    c.max_message_length = c.max_message_length.max(workload.max_length());
    c.max_incoming_held = 1 << 40;
    c.max_outgoing_held = 1 << 40;
    Ok(c)
}

/// One Homa mechanism switched off, for `homa sim --compare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Everything on.
    Homa,
    /// One priority level in the engine and one queue per switch port.
    NoPriorities,
    /// Grant to one message at a time (`max_overcommit` = 1).
    NoOvercommit,
    /// Rank messages by age instead of remaining bytes (`srpt` = false).
    Fifo,
}

impl Variant {
    /// Every variant, full Homa first.
    pub const ALL: [Variant; 4] = [
        Variant::Homa,
        Variant::NoPriorities,
        Variant::NoOvercommit,
        Variant::Fifo,
    ];

    /// A short label.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Homa => "homa",
            Variant::NoPriorities => "no-priorities",
            Variant::NoOvercommit => "one-grant",
            Variant::Fifo => "fifo",
        }
    }

    /// `base` with this mechanism off.
    pub fn apply(self, base: &SimConfig) -> SimConfig {
        let mut c = base.clone();
        match self {
            Variant::Homa => {}
            Variant::NoPriorities => {
                c.engine.num_priorities = 1;
                c.engine.max_sched_prio = 0;
                c.engine.unsched_cutoffs = [0; 8];
                // The engine sends control packets at priority 7 whatever num_priorities
                // says, so the switches must also stop honouring priorities.
                c.switch_priorities = 1;
            }
            Variant::NoOvercommit => c.engine.max_overcommit = 1,
            Variant::Fifo => c.engine.srpt = false,
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_engine_config_is_valid_and_rtt_sized() {
        let w = Workload::builtin("w4", 1_000_000).unwrap();
        let c = paper_engine_config(&Topology::paper(), &w);
        c.validate().unwrap();
        assert_eq!(c.link_mbps, 10_000);
        assert_eq!(c.unsched_bytes, 6 * 1416);
        assert_eq!(c.window, c.unsched_bytes);
        let s = SimConfig::new(Topology::paper(), w, 0.8);
        s.validate().unwrap();
        for v in Variant::ALL {
            v.apply(&s).validate().unwrap();
        }
    }

    #[test]
    fn the_paper_mode_is_valid_for_every_workload_and_uncapped() {
        for (name, levels) in [("w1", 1), ("w2", 3), ("w3", 4), ("w4", 7), ("w5", 7)] {
            let s = SimConfig::paper(name, 0.8).unwrap();
            s.validate().unwrap();
            assert_eq!(s.workload.max_length(), s.workload.longest(), "{name}");
            assert!(s.engine.max_message_length >= s.workload.longest());
            assert_eq!(
                (s.engine.max_overcommit, s.engine.max_sched_prio),
                (levels, levels as u8 - 1)
            );
            assert_eq!(
                s.engine.unsched_cutoffs[levels as usize],
                s.workload.longest()
            );
            assert_eq!(s.mode, Mode::Message);
            assert_eq!(s.drain, Drain::StopArrivals);
            // The paper's load counts a GRANT per scheduled packet.
            let big = 100_000;
            let plain = SimConfig {
                load_definition: LoadDefinition::Messages,
                ..s.clone()
            };
            assert!(s.load_bytes(big) > plain.load_bytes(big));
            assert_eq!(s.load_bytes(100), plain.load_bytes(100));
        }
        assert!(SimConfig::paper("starve", 0.8).is_err());
    }

    #[test]
    fn each_paper_choice_can_be_undone_alone() {
        for name in crate::paper::WORKLOADS {
            let full = SimConfig::paper(name, 0.8).unwrap();
            for c in Choice::ALL {
                let s = SimConfig::paper_without(name, 0.8, &[c]).unwrap();
                s.validate().unwrap();
                let (e, f) = (&s.engine, &full.engine);
                let changed = match c {
                    Choice::OneWay => s.mode == Mode::OneWay && e == f,
                    Choice::Uncapped => {
                        s.workload.max_length() == 1_000_000
                            && (s.workload.longest() <= 1_000_000
                                || e.unsched_cutoffs != f.unsched_cutoffs)
                    }
                    Choice::PaceAll => e.defer_min_bytes == 1_000,
                    Choice::NoFifo => e.grant_fifo_fraction == 50 && e.pacer_fifo_fraction == 50,
                    Choice::SchedLevels => (e.max_overcommit, e.max_sched_prio) == (8, 3),
                    Choice::ByRemaining => !e.unsched_prio_by_remaining,
                    Choice::TailGrants => e.grant_tail_bytes == 0,
                    Choice::ShortFirst => !e.short_messages_srpt,
                    Choice::PaperFrames => {
                        (e.ip_overhead, f.ip_overhead) == (IP_UDP_OVERHEAD, PAPER_IP_OVERHEAD)
                            && (e.max_segment(), f.max_segment()) == (1416, 1442)
                    }
                };
                assert!(changed, "{name} without {}", c.name());
                // Nothing else moved: the other choices are as in the full mode.
                if !matches!(
                    c,
                    Choice::Uncapped
                        | Choice::SchedLevels
                        | Choice::ByRemaining
                        | Choice::TailGrants
                        | Choice::PaperFrames
                ) {
                    assert_eq!(e.unsched_cutoffs, f.unsched_cutoffs, "{name} {}", c.name());
                }
            }
        }
    }
}
