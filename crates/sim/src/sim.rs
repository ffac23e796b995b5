//! The discrete-event core: an event queue ordered by (time, sequence), hosts that each
//! run one unmodified [`homa_core::Endpoint`], NICs, and switch ports with strict-priority
//! queues.
//!
//! # What happens to a packet
//! 1. The engine hands it over in `poll_transmit` at `now`; after the host delay it joins
//!    the NIC's FIFO, which serializes it at the host link rate. A FIFO with a known rate
//!    needs no events: the time the last bit leaves is computed on the spot.
//! 2. Its last bit reaches the ToR after the propagation delay; after the switch latency
//!    it is eligible on its output port (`SwitchIn` event). The ToR picks the port: down
//!    to the host, or up to an aggregation switch chosen at random (spraying).
//! 3. An idle port starts sending at once; a busy one queues it by priority. When a packet
//!    is done (`TxDone`), the port forwards it to the next switch (step 2 again) or host,
//!    and starts its highest-priority waiting packet.
//! 4. At the destination host, after the propagation and host delays, the engine gets it
//!    in `handle_datagram` (`HostRx`).
//!
//! After every input a host drains `poll_event` (the application's reactions) and
//! `poll_transmit`, and keeps one wake-up (`Wake`) at the engine's `poll_timeout`, which
//! covers both the 1 ms timer tick and the pacer.
//!
//! No allocation per packet: packet buffers live in a slab with a free list, hosts and
//! ports are indexed by integers, and routes are arithmetic on those indices.

use crate::config::{Drain, Ideal, Mode, SimConfig};
use crate::queue::EventQueue;
pub use crate::switch::PortKind;
use crate::switch::{build_ports, Next, Port, NONE};
use crate::topology::{serialization_ns, Segmentation};
use homa_core::{Bytes, Endpoint, Event, Time};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The port every host's server socket listens on.
pub const SERVER_PORT: u16 = 1;
/// `Message::done_ns` of a message not (yet) complete.
pub const NOT_DONE: u64 = u64::MAX;
/// Progress callbacks come every this many events.
const PROGRESS_EVERY: u64 = 1 << 16;

/// What a host or switch port does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    /// A host's application starts its next message.
    Arrive(u32),
    /// A host's engine asked to be called (timer tick or pacer).
    Wake(u32),
    /// A packet is eligible on a switch output port.
    SwitchIn { port: u32, pkt: u32 },
    /// A switch port finished sending a packet.
    TxDone { port: u32, pkt: u32 },
    /// A packet reaches a host's engine.
    HostRx { host: u32, pkt: u32 },
    /// Start (0) of the measurement window, or end (1) of arrivals.
    Mark(u8),
    /// Record the byte counts for the timeline (`SimConfig::timeline_ns`).
    Sample,
}

/// Bytes of a packet kept with it: its header, and its payload when that is short.
const HEAD: usize = 128;

pub(crate) struct Pkt {
    /// The packet's first `head_len` bytes.
    head: [u8; HEAD],
    head_len: u8,
    /// The rest of the payload when it is not zeros (never, for the simulator's own
    /// messages); `None`: `len - head_len` zero bytes.
    rest: Option<Bytes>,
    /// Homa bytes in all.
    len: u32,
    pub(crate) wire: u32,
    src: u32,
    dst: u32,
    pub(crate) prio: u8,
    /// The next packet in its switch port's queue (`NONE`: the last, or not queued).
    pub(crate) next: u32,
}

struct Host {
    ep: Endpoint,
    client_port: u16,
    /// When the NIC's FIFO is empty again.
    nic_free: u64,
    /// The pending `Wake`, if any.
    wake: Option<u64>,
    next_arrival: f64,
    rng: ChaCha8Rng,
    /// (client RPC id, message index) of every request sent, in id order.
    sent: Vec<(u64, u32)>,
    tx_wire_bytes: u64,
}

/// One message of the workload and what became of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// When the client application sent it.
    pub start_ns: u64,
    /// When it was complete (see [`Mode`]), or [`NOT_DONE`].
    pub done_ns: u64,
    /// Request length (after clamping).
    pub len: u32,
    /// Client host.
    pub src: u32,
    /// Server host.
    pub dst: u32,
    /// Times the server application received the request (1 when all is well).
    pub deliveries: u16,
    /// The RPC failed in the engine (or could not be sent).
    pub failed: bool,
}

/// A packet delivered to a host, as recorded when tracing is on (for tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// When the engine got it.
    pub time_ns: u64,
    /// Sending host.
    pub src: u32,
    /// Receiving host.
    pub dst: u32,
    /// Homa bytes.
    pub len: u32,
    /// Priority it travelled at.
    pub priority: u8,
}

/// Counters the simulator keeps besides the messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events processed.
    pub events: u64,
    /// Packets the engines handed to NICs.
    pub packets: u64,
    /// Messages whose sampled length was clamped.
    pub clamped: u64,
    /// Messages the engine refused (`send_request` error).
    pub refused: u64,
    /// Replies the engine refused.
    pub reply_errors: u64,
    /// RPCs that failed in the engine.
    pub failures: u64,
    /// Responses received (one per message when all is well).
    pub responses: u64,
    /// Wake-ups that found the engine still wanting to be called at the same instant.
    pub spins: u64,
    /// Longest NIC queue seen, nanoseconds of link time.
    pub max_nic_backlog_ns: u64,
}

/// Byte counts at the edges of the measurement window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Wire bytes sent on ToR-to-host links (every packet).
    pub host_down_wire: u64,
    /// Wire bytes of the DATA packets of completed messages (requests and responses).
    pub message_wire: u64,
    /// Payload bytes of completed messages (requests and responses).
    pub message_payload: u64,
    /// Wire bytes of messages started (requests and responses), i.e. offered.
    pub offered_wire: u64,
}

/// A running simulation. [`Simulation::run`] plays it to the end.
pub struct Simulation {
    cfg: SimConfig,
    seg: Segmentation,
    now: u64,
    queue: EventQueue<Ev>,
    hosts: Vec<Host>,
    ports: Vec<Port>,
    pkts: Vec<Pkt>,
    free_pkts: Vec<u32>,
    /// Where a packet is put together for the receiving engine: its head copied in, the
    /// rest of it zeros. Bytes from `rx_dirty` on are zero.
    rx: Vec<u8>,
    rx_dirty: usize,
    spray_rng: ChaCha8Rng,
    msgs: Vec<Message>,
    /// Messages started before the end of arrivals and not complete yet.
    pending: u64,
    end_ns: u64,
    /// End of the window the loads are measured over (see `rate_window_ns`).
    rate_end_ns: u64,
    arrival_rate: f64,
    warmup_ns: u64,
    /// Running totals (see [`Snapshot`]), and their values at the window's edges.
    totals: Snapshot,
    marks: [Snapshot; 2],
    /// (time, counts) every `SimConfig::timeline_ns`.
    timeline: Vec<(u64, Snapshot)>,
    counters: Counters,
    trace: Option<Vec<Delivery>>,
    /// One buffer of zeros that every message's payload is a slice of: the engine takes
    /// `Bytes`, so messages cost no allocation (and no first-touch page faults).
    zeros: Bytes,
}

fn derive_seed(seed: u64, tag: u64, index: u64) -> u64 {
    // splitmix64 over the three inputs: independent streams per purpose and host.
    let mut z = seed
        .wrapping_add(tag.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(index.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The address of host `h`: 10.x.y.z with the host number in the low 24 bits.
pub fn host_ip(h: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | h))
}

fn host_of(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) & 0x00FF_FFFF,
        IpAddr::V6(_) => u32::MAX,
    }
}

impl Simulation {
    /// Build the network and one engine per host, with the workload's arrivals.
    ///
    /// With one-way messages ([`Mode::Message`]) every host first asks every other
    /// whether its server port takes them (`Endpoint::ask_one_way`), as an application
    /// that knows its peers would: otherwise each host's first message to each other
    /// would wait a round trip for the answer (there are 20,592 pairs in the paper's
    /// network, and W5 sends about 1.5 messages per pair in 100 ms).
    pub fn new(cfg: SimConfig) -> Result<Simulation, crate::SimError> {
        let mut sim = Simulation::idle(cfg)?;
        let n = sim.cfg.topology.hosts();
        if sim.cfg.mode == Mode::Message {
            for h in 0..n {
                let host = &mut sim.hosts[h as usize];
                for d in (0..n).filter(|&d| d != h) {
                    let dest = SocketAddr::new(host_ip(d), SERVER_PORT);
                    let _ = host.ep.ask_one_way(Time(0), host.client_port, dest);
                }
                sim.service(h, false);
            }
        }
        for h in 0..n {
            sim.schedule_arrival(h);
        }
        Ok(sim)
    }

    /// The same network with no arrivals: messages start only through
    /// [`start_message`](Self::start_message).
    pub fn idle(cfg: SimConfig) -> Result<Simulation, crate::SimError> {
        cfg.validate()?;
        let topo = cfg.topology.clone();
        let n = topo.hosts();
        let mut hosts = Vec::with_capacity(n as usize);
        for h in 0..n {
            let mut engine = cfg.engine.clone();
            // Nonzero, both: the engine would draw a zero from the operating system's
            // random source, and a simulation must repeat exactly.
            engine.seed = derive_seed(cfg.seed, 1, h as u64).max(1);
            if engine.client_id_base == 0 {
                engine.client_id_base = 2; // ids from 2, the Linux module's numbering
            }
            let mut ep =
                Endpoint::new(engine).map_err(|e| crate::SimError::Config(e.to_string()))?;
            // `app_event` releases every message it takes.
            ep.promise_release();
            ep.bind(SERVER_PORT)
                .map_err(|e| crate::SimError::Config(e.to_string()))?;
            ep.set_one_way(SERVER_PORT, cfg.mode == Mode::Message);
            let client_port = ep
                .bind(0)
                .map_err(|e| crate::SimError::Config(e.to_string()))?;
            hosts.push(Host {
                ep,
                client_port,
                nic_free: 0,
                wake: None,
                next_arrival: 0.0,
                rng: ChaCha8Rng::seed_from_u64(derive_seed(cfg.seed, 2, h as u64)),
                sent: Vec::new(),
                tx_wire_bytes: 0,
            });
        }
        let ports = build_ports(&topo);
        let seg = Segmentation::of(&cfg.engine);
        let arrival_rate = cfg.arrival_rate_per_ns();
        let warmup_ns = (cfg.duration_ns as f64 * cfg.warmup_fraction) as u64;
        let mut sim = Simulation {
            seg,
            now: 0,
            queue: EventQueue::new(),
            hosts,
            ports,
            pkts: Vec::new(),
            free_pkts: Vec::new(),
            rx: vec![0; (cfg.engine.mtu - cfg.engine.ip_overhead) as usize],
            rx_dirty: 0,
            spray_rng: ChaCha8Rng::seed_from_u64(derive_seed(cfg.seed, 3, 0)),
            // Reserve for the expected messages (+10%) so the record does not regrow and
            // first-touch its memory again during the run. Only if the memory can be had:
            // a reservation the allocator refuses (a very long run) must not abort the
            // process; the record then grows as the run goes.
            msgs: {
                let expected =
                    (arrival_rate * (cfg.duration_ns as f64) * 1.1 * topo.hosts() as f64).min(1e9);
                let mut msgs = Vec::new();
                let _ = msgs.try_reserve_exact(expected as usize);
                msgs
            },
            pending: 0,
            end_ns: 0,
            rate_end_ns: cfg.duration_ns,
            arrival_rate,
            warmup_ns,
            totals: Snapshot::default(),
            marks: [Snapshot::default(); 2],
            timeline: Vec::new(),
            counters: Counters::default(),
            trace: None,
            zeros: Bytes::from(vec![0u8; cfg.engine.max_message_length as usize]),
            cfg,
        };
        sim.push(warmup_ns, Ev::Mark(0));
        sim.push(sim.cfg.duration_ns, Ev::Mark(1));
        if sim.cfg.timeline_ns > 0 {
            sim.push(sim.cfg.timeline_ns, Ev::Sample);
        }
        Ok(sim)
    }

    /// Record every packet delivered to a host (for tests; costs memory).
    pub fn enable_trace(&mut self) {
        self.trace = Some(Vec::new());
    }

    /// The deliveries recorded since [`enable_trace`](Self::enable_trace).
    pub fn trace(&self) -> &[Delivery] {
        self.trace.as_deref().unwrap_or(&[])
    }

    /// The scenario.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Current simulated time.
    pub fn now_ns(&self) -> u64 {
        self.now
    }

    /// Where the last [`run`](Self::run) stopped: when every message started before the
    /// end of arrivals was complete, or at the drain limit.
    pub fn end_ns(&self) -> u64 {
        self.end_ns
    }

    /// Every message so far, in order of creation.
    pub fn messages(&self) -> &[Message] {
        &self.msgs
    }

    /// The simulator's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Byte counts at the start and end of the window the loads are measured over
    /// ([`rate_window_ns`](Self::rate_window_ns)).
    pub fn window_snapshots(&self) -> [Snapshot; 2] {
        self.marks
    }

    /// The byte counts recorded every [`SimConfig::timeline_ns`], with their times.
    pub fn timeline(&self) -> &[(u64, Snapshot)] {
        &self.timeline
    }

    /// The measurement window `[start, end)` in nanoseconds: the messages that start in
    /// it are measured.
    pub fn window_ns(&self) -> (u64, u64) {
        (self.warmup_ns, self.cfg.duration_ns)
    }

    /// The window the carried loads are measured over: the measurement window, or with
    /// [`Drain::StopArrivals`] from its start to the moment the last message completed
    /// (to the drain limit if some never did).
    pub fn rate_window_ns(&self) -> (u64, u64) {
        (self.warmup_ns, self.rate_end_ns)
    }

    /// Packets sent by each aggregation switch (the sum over its ports).
    pub fn agg_packets(&self) -> Vec<u64> {
        let t = &self.cfg.topology;
        (0..t.aggs)
            .map(|a| {
                (0..t.racks)
                    .map(|r| self.ports[t.agg_down(a, r) as usize].tx_packets)
                    .sum()
            })
            .collect()
    }

    /// Largest queue (wire bytes waiting, not counting the packet on the wire) seen on
    /// any port of each kind.
    pub fn max_queue_bytes(&self, kind: PortKind) -> u64 {
        self.ports
            .iter()
            .filter(|p| p.kind == kind)
            .map(|p| p.max_queued_bytes)
            .max()
            .unwrap_or(0)
    }

    /// The engine of host `h` (for its metrics).
    pub fn endpoint(&self, h: u32) -> &Endpoint {
        &self.hosts[h as usize].ep
    }

    /// The ideal time of message `m` (request, plus response for RPCs), as
    /// [`SimConfig::ideal`] says.
    pub fn ideal_ns(&self, m: &Message) -> u64 {
        let t = &self.cfg.topology;
        let one = |src, dst, len| match self.cfg.ideal {
            Ideal::Exact => t.ideal_ns(&self.seg, src, dst, len),
            Ideal::Paper => t.paper_ideal_ns(src, dst, len),
        };
        let req = one(m.src, m.dst, m.len);
        match self.cfg.mode {
            Mode::OneWay | Mode::Message => req,
            Mode::Rpc => req + one(m.dst, m.src, Mode::Rpc.response_len(m.len)),
        }
    }

    fn push(&mut self, time: u64, ev: Ev) {
        self.queue.push(time, ev);
    }

    /// Play the scenario to its end, calling `progress(now_ns, end_ns)` now and then.
    // Never inlined, so that a profiler (callgrind's --toggle-collect) can count the event
    // loop alone, without setting up the network or gathering the report.
    #[inline(never)]
    pub fn run(&mut self, progress: &mut dyn FnMut(u64, u64)) {
        let end = self.cfg.duration_ns;
        let limit = end.saturating_add(self.cfg.drain_ns);
        // Where the run stops: at the first event after the end, or where the events ran
        // out.
        let mut stop = None;
        while let Some((time, ev)) = self.queue.pop() {
            let over = time >= end && (self.pending == 0 || time >= limit);
            if over && !matches!(ev, Ev::Mark(_)) {
                // Leave it for a later call to go on from here.
                self.queue.unpop(time, ev);
                self.now = time;
                stop = Some(time.min(limit));
                break;
            }
            self.now = time;
            self.counters.events += 1;
            if self.counters.events % PROGRESS_EVERY == 0 {
                progress(self.now, end);
            }
            self.dispatch(ev);
        }
        self.end_ns = stop.unwrap_or(self.now);
        if self.cfg.drain == Drain::StopArrivals && self.pending > 0 {
            // Some message never finished: measure up to where the run stopped.
            self.marks[1] = self.snapshot();
            self.rate_end_ns = self.end_ns;
        }
        progress(end, end);
    }

    /// With `Drain::StopArrivals`, once arrivals are over, the last pending message's
    /// completion (or failure) ends the window the loads are measured over.
    fn check_drained(&mut self) {
        if self.cfg.drain == Drain::StopArrivals
            && self.pending == 0
            && self.now >= self.cfg.duration_ns
        {
            self.marks[1] = self.snapshot();
            self.rate_end_ns = self.now;
        }
    }

    /// Inject a packet of `homa_len` bytes at `priority` from `src` to `dst`, as if its
    /// NIC had just finished sending it (for tests of the switches).
    pub fn inject(&mut self, src: u32, dst: u32, homa_len: u32, priority: u8) {
        let slot = self.alloc_pkt();
        let p = &mut self.pkts[slot as usize];
        p.head_len = 0;
        p.rest = None;
        p.len = homa_len;
        p.wire = self.seg.wire(homa_len);
        p.src = src;
        p.dst = dst;
        p.prio = priority;
        let t = &self.cfg.topology;
        let when = self.now + t.nic_delay_ns + t.propagation_ns + t.switch_latency_ns;
        let port = self.route_from_host(src, dst);
        self.push(when, Ev::SwitchIn { port, pkt: slot });
    }

    /// Process the events up to and including time `t` (for tests).
    pub fn step_until(&mut self, t: u64) {
        while self.queue.peek_time().is_some_and(|time| time <= t) {
            let (time, ev) = self.queue.pop().expect("peeked");
            self.now = time;
            self.counters.events += 1;
            self.dispatch(ev);
        }
        self.now = self.now.max(t);
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::SwitchIn { port, pkt } => self.switch_in(port, pkt),
            Ev::TxDone { port, pkt } => self.tx_done(port, pkt),
            Ev::HostRx { host, pkt } => self.host_rx(host, pkt),
            Ev::Wake(h) => {
                let host = &mut self.hosts[h as usize];
                if host.wake != Some(self.now) {
                    return; // superseded by an earlier wake-up
                }
                host.wake = None;
                host.ep.handle_timeout(Time(self.now));
                self.service(h, true);
            }
            Ev::Arrive(h) => self.arrive(h),
            Ev::Mark(0) => self.marks[0] = self.snapshot(),
            Ev::Mark(_) => match self.cfg.drain {
                Drain::KeepArriving => self.marks[1] = self.snapshot(),
                Drain::StopArrivals => self.check_drained(),
            },
            Ev::Sample => {
                self.timeline.push((self.now, self.snapshot()));
                self.push(self.now + self.cfg.timeline_ns, Ev::Sample);
            }
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let host_down_wire = self
            .ports
            .iter()
            .filter(|p| p.kind == PortKind::TorDown)
            .map(|p| p.tx_bytes)
            .sum();
        Snapshot {
            host_down_wire,
            ..self.totals
        }
    }

    // ------------------------------------------------------------------ applications

    fn schedule_arrival(&mut self, h: u32) {
        let rate = self.arrival_rate;
        let host = &mut self.hosts[h as usize];
        let u: f64 = host.rng.gen();
        host.next_arrival += -(1.0 - u).ln() / rate;
        let t = host.next_arrival as u64;
        self.push(t, Ev::Arrive(h));
    }

    fn arrive(&mut self, h: u32) {
        if self.cfg.drain == Drain::StopArrivals && self.now >= self.cfg.duration_ns {
            return; // arrivals are over, and no more are scheduled
        }
        let n = self.cfg.topology.hosts();
        let host = &mut self.hosts[h as usize];
        let raw = self.cfg.workload.sample_unclamped(host.rng.gen());
        let len = raw.min(self.cfg.workload.max_length());
        let mut dst = host.rng.gen_range(0..n - 1);
        if dst >= h {
            dst += 1;
        }
        if raw > len {
            self.counters.clamped += 1;
        }
        self.start_message(h, dst, len);
        self.schedule_arrival(h);
    }

    /// Have host `src`'s application send a `len`-byte message to `dst` now. Returns the
    /// message's index in [`messages`](Self::messages).
    pub fn start_message(&mut self, src: u32, dst: u32, len: u32) -> usize {
        let (h, now) = (src, self.now);
        let host = &mut self.hosts[h as usize];
        let idx = self.msgs.len() as u32;
        let mut msg = Message {
            start_ns: now,
            done_ns: NOT_DONE,
            len,
            src: h,
            dst,
            deliveries: 0,
            failed: false,
        };
        let dest = SocketAddr::new(host_ip(dst), SERVER_PORT);
        let port = host.client_port;
        let data = self.zeros.slice(..len as usize);
        let sent = if self.cfg.mode == Mode::Message {
            host.ep
                .send_message(Time(now), port, dest, data, idx as u64, false)
        } else {
            host.ep
                .send_request(Time(now), port, dest, data, idx as u64, false)
        };
        match sent {
            Ok(id) => host.sent.push((id.0, idx)),
            Err(_) => {
                msg.failed = true;
                self.counters.refused += 1;
            }
        }
        if now < self.cfg.duration_ns && !msg.failed {
            self.pending += 1;
        }
        self.totals.offered_wire += self.cfg.load_bytes(len);
        self.msgs.push(msg);
        self.service(h, false);
        idx as usize
    }

    /// The index of the message the client at `peer` sent as RPC `id`.
    fn message_of(&self, peer: SocketAddr, id: homa_core::RpcId) -> Option<usize> {
        let sent = &self.hosts.get(host_of(peer.ip()) as usize)?.sent;
        let id = id.client_id();
        // The engine numbers a socket's requests in steps of 2, so the entry is usually
        // found by arithmetic: one memory access, where a binary search over millions of
        // entries missed the cache at every step.
        let first = sent.first()?.0;
        let guess = (id.wrapping_sub(first) / 2) as usize;
        if let Some(&(_, idx)) = sent.get(guess).filter(|e| e.0 == id) {
            return Some(idx as usize);
        }
        match sent.binary_search_by_key(&id, |&(id, _)| id) {
            Ok(i) => Some(sent[i].1 as usize),
            Err(_) => {
                debug_assert!(false, "a message with an id nobody sent");
                None
            }
        }
    }

    fn complete(&mut self, idx: usize) {
        let m = &mut self.msgs[idx];
        if m.done_ns == NOT_DONE {
            m.done_ns = self.now;
            if m.start_ns < self.cfg.duration_ns && !m.failed {
                self.pending -= 1;
                self.check_drained();
            }
        }
    }

    fn app_event(&mut self, h: u32, ev: Event) {
        let now = Time(self.now);
        match ev {
            Event::Request {
                port,
                id,
                peer,
                data,
            } => {
                let Some(idx) = self.message_of(peer, id) else {
                    return;
                };
                let len = data.len() as u32;
                let m = &mut self.msgs[idx];
                debug_assert_eq!(m.len, len);
                m.deliveries = m.deliveries.saturating_add(1);
                self.totals.message_wire += self.seg.message_wire_bytes(len);
                self.totals.message_payload += len as u64;
                let resp = self.cfg.mode.response_len(len);
                let ep = &mut self.hosts[h as usize].ep;
                ep.release(data);
                if ep
                    .reply(now, port, peer, id, self.zeros.slice(..resp as usize))
                    .is_err()
                {
                    self.counters.reply_errors += 1;
                }
                if self.cfg.mode == Mode::OneWay {
                    self.complete(idx);
                }
            }
            Event::Response { cookie, data, .. } => {
                let len = data.len() as u32;
                self.hosts[h as usize].ep.release(data);
                self.counters.responses += 1;
                self.totals.message_wire += self.seg.message_wire_bytes(len);
                self.totals.message_payload += len as u64;
                if self.cfg.mode == Mode::Rpc {
                    self.complete(cookie as usize);
                }
            }
            Event::Message { id, peer, data, .. } => {
                let Some(idx) = self.message_of(peer, id) else {
                    return;
                };
                let len = data.len() as u32;
                self.hosts[h as usize].ep.release(data);
                let m = &mut self.msgs[idx];
                debug_assert_eq!(m.len, len);
                m.deliveries = m.deliveries.saturating_add(1);
                self.totals.message_wire += self.cfg.load_bytes(len);
                self.totals.message_payload += len as u64;
                self.complete(idx);
            }
            Event::Delivered { .. } => self.counters.responses += 1,
            Event::Failed { cookie, .. } => {
                self.counters.failures += 1;
                let m = &mut self.msgs[cookie as usize];
                let waited =
                    m.done_ns == NOT_DONE && !m.failed && m.start_ns < self.cfg.duration_ns;
                m.failed = true;
                if waited {
                    // It will never complete; do not wait for it.
                    self.pending -= 1;
                    self.check_drained();
                }
            }
        }
    }

    // ------------------------------------------------------------------ hosts

    /// After an input: let the application react, send what the engine has, and keep one
    /// wake-up at the engine's next deadline.
    fn service(&mut self, h: u32, from_wake: bool) {
        let now = self.now;
        loop {
            let mut reacted = false;
            while let Some(ev) = self.hosts[h as usize].ep.poll_event() {
                reacted = true;
                self.app_event(h, ev);
            }
            self.drain_transmit(h);
            if !reacted {
                break;
            }
        }
        let host = &mut self.hosts[h as usize];
        if let Some(t) = host.ep.poll_timeout() {
            let mut t = t.as_nanos().max(now);
            if from_wake && t == now {
                // The engine wants to be called again right away although it just was:
                // step forward rather than spin.
                self.counters.spins += 1;
                t = now + 1;
            }
            if host.wake.is_none_or(|w| t < w) {
                host.wake = Some(t);
                self.push(t, Ev::Wake(h));
            }
        }
    }

    fn alloc_pkt(&mut self) -> u32 {
        if let Some(i) = self.free_pkts.pop() {
            return i;
        }
        self.pkts.push(Pkt {
            head: [0; HEAD],
            head_len: 0,
            rest: None,
            len: 0,
            wire: 0,
            src: 0,
            dst: 0,
            prio: 0,
            next: NONE,
        });
        (self.pkts.len() - 1) as u32
    }

    fn drain_transmit(&mut self, h: u32) {
        let now = self.now;
        let t = &self.cfg.topology;
        let (nhosts, delay, mbps) = (t.hosts(), t.host_delay_ns, t.host_mbps);
        let hop = t.nic_delay_ns + t.propagation_ns + t.switch_latency_ns;
        let top_prio = self.cfg.switch_priorities - 1;
        loop {
            let slot = self.alloc_pkt();
            let host = &mut self.hosts[h as usize];
            let pkt = &mut self.pkts[slot as usize];
            // The engine writes the header (and a short payload) into the packet and
            // hands a longer payload over as a slice of the message: a slice of
            // `zeros`, which need not be copied anywhere (see `host_rx`).
            let Some(parts) = host.ep.poll_transmit_parts(Time(now), &mut pkt.head) else {
                self.free_pkts.push(slot);
                return;
            };
            let t = parts.transmit;
            pkt.head_len = parts.header_len as u8;
            let zeros = self.zeros.as_ptr_range();
            pkt.rest = (!parts.payload.is_empty() && !zeros.contains(&parts.payload.as_ptr()))
                .then_some(parts.payload);
            let dst = host_of(t.dest.ip());
            if dst >= nhosts {
                debug_assert!(false, "packet to an unknown host");
                self.free_pkts.push(slot);
                continue;
            }
            pkt.len = t.len as u32;
            pkt.wire = self.seg.wire(t.len as u32);
            pkt.src = h;
            pkt.dst = dst;
            pkt.prio = t.priority.min(top_prio);
            let start = (now + delay).max(host.nic_free);
            self.counters.max_nic_backlog_ns = self.counters.max_nic_backlog_ns.max(start - now);
            host.nic_free = start + serialization_ns(pkt.wire, mbps);
            host.tx_wire_bytes += pkt.wire as u64;
            let when = host.nic_free + hop;
            self.counters.packets += 1;
            let port = self.route_from_host(h, dst);
            self.push(when, Ev::SwitchIn { port, pkt: slot });
        }
    }

    fn host_rx(&mut self, h: u32, slot: u32) {
        let p = &self.pkts[slot as usize];
        if let Some(tr) = self.trace.as_mut() {
            tr.push(Delivery {
                time_ns: self.now,
                src: p.src,
                dst: h,
                len: p.len,
                priority: p.prio,
            });
        }
        let from = host_ip(p.src);
        // The packet as the engine sent it: its head, then its payload, zeros unless it
        // came as other bytes.
        let (head, len) = (p.head_len as usize, p.len as usize);
        let rx = &mut self.rx;
        rx[..head].copy_from_slice(&p.head[..head]);
        if self.rx_dirty > head {
            rx[head..self.rx_dirty].fill(0);
        }
        self.rx_dirty = head;
        if let Some(rest) = &p.rest {
            rx[head..len].copy_from_slice(rest);
            self.rx_dirty = len;
        }
        self.hosts[h as usize]
            .ep
            .handle_datagram(Time(self.now), from, &rx[..len]);
        let p = &mut self.pkts[slot as usize];
        p.rest = None;
        self.free_pkts.push(slot);
        self.service(h, false);
    }

    // ------------------------------------------------------------------ switches

    /// The ToR output port for a packet from host `src` to host `dst`.
    fn route_from_host(&mut self, src: u32, dst: u32) -> u32 {
        let t = &self.cfg.topology;
        let (rs, rd) = (t.rack_of(src), t.rack_of(dst));
        if rs == rd {
            t.tor_down(dst)
        } else {
            let a = self.spray_rng.gen_range(0..t.aggs);
            t.tor_up(rs, a)
        }
    }

    fn switch_in(&mut self, port: u32, slot: u32) {
        let p = &mut self.ports[port as usize];
        if !p.busy {
            p.busy = true;
            let done = self.now + serialization_ns(self.pkts[slot as usize].wire, p.mbps);
            self.push(done, Ev::TxDone { port, pkt: slot });
            return;
        }
        p.enqueue(&mut self.pkts, slot);
    }

    fn tx_done(&mut self, port: u32, slot: u32) {
        let now = self.now;
        let t = &self.cfg.topology;
        let (prop, lat, delay) = (t.propagation_ns, t.switch_latency_ns, t.host_delay_ns);
        let p = &mut self.ports[port as usize];
        let (wire, dst) = {
            let pkt = &self.pkts[slot as usize];
            (pkt.wire, pkt.dst)
        };
        p.tx_bytes += wire as u64;
        p.tx_packets += 1;
        let next = p.next;
        // Start the next packet: highest non-empty priority queue.
        let started = match p.dequeue(&mut self.pkts) {
            Some((n, w)) => Some((now + serialization_ns(w, p.mbps), n)),
            None => {
                p.busy = false;
                None
            }
        };
        let (when, ev) = match next {
            Next::Host(h) => (now + prop + delay, Ev::HostRx { host: h, pkt: slot }),
            Next::Agg(a) => {
                let port = t.agg_down(a, t.rack_of(dst));
                (now + prop + lat, Ev::SwitchIn { port, pkt: slot })
            }
            Next::Tor(r) => {
                debug_assert_eq!(r, t.rack_of(dst), "sprayed to the wrong rack");
                let port = t.tor_down(dst);
                (now + prop + lat, Ev::SwitchIn { port, pkt: slot })
            }
        };
        if let Some(n) = started {
            self.push(n.0, Ev::TxDone { port, pkt: n.1 });
        }
        self.push(when, ev);
    }
}
