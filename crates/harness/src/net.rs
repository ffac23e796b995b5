//! The discrete-event network: hosts, links, faults and the event queue.

use crate::trace::TraceHash;
use homa_core::{Config, Endpoint, Event, Time, Transmit};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr};

/// Bytes a packet occupies on an Ethernet link beyond its IP packet (header, FCS,
/// preamble, inter-frame gap). The same figure the engine's pacer uses, so the pacer and
/// the modelled NIC agree on how long a packet takes.
const ETHERNET_OVERHEAD: u64 = 38;
/// Most consecutive wake-ups at one instant before the harness declares a timer spin
/// (an endpoint whose `poll_timeout` never moves past `now`).
const MAX_SPINS: u32 = 1_000;

/// Address of host `i`: 10.0.0.1, 10.0.0.2, ... (10.0.1.0 after 10.0.0.255, and so on).
pub fn host_ip(i: usize) -> IpAddr {
    let n = i as u32 + 1;
    IpAddr::V4(Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8))
}

/// Inverse of [`host_ip`]: the host index behind an address, if it is one of ours.
pub fn host_index(ip: IpAddr) -> Option<usize> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            let n = (b as u32) << 16 | (c as u32) << 8 | d as u32;
            (a == 10 && n > 0).then(|| n as usize - 1)
        }
        IpAddr::V6(_) => None,
    }
}

/// Links and faults. Every host has one uplink of `link_mbps`; a packet waits for the
/// packets its host sent before it (a FIFO egress queue), takes `wire bytes * 8 / rate`
/// to serialize, then `latency_ns` to arrive. Faults apply per packet, independently.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetConfig {
    /// One-way propagation and switching delay, nanoseconds.
    pub latency_ns: u64,
    /// Uplink rate of every host, megabits per second.
    pub link_mbps: u64,
    /// Probability a packet is lost.
    pub loss: f64,
    /// Probability a packet is delivered twice.
    pub dup: f64,
    /// Probability a packet is held back by up to `reorder_max_ns`, so that packets sent
    /// after it overtake it.
    pub reorder: f64,
    /// Largest extra delay of a reordered packet, nanoseconds.
    pub reorder_max_ns: u64,
    /// Probability a packet's bytes are damaged in flight. The UDP checksum catches that,
    /// so the receiving kernel drops it: counted as `corrupt_dropped`, never delivered.
    pub corrupt: f64,
    /// Probability that, beside a packet, a junk datagram (random bytes, or a damaged copy
    /// of the packet that no longer parses, or a DATA copy cut short) reaches its
    /// destination's `handle_datagram`: it exercises the parser under load. Junk never
    /// carries altered payload bytes, because no transport could tell those from real
    /// data once the checksum matched.
    pub garbage: f64,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            latency_ns: 2_000,
            link_mbps: 25_000,
            loss: 0.0,
            dup: 0.0,
            reorder: 0.0,
            reorder_max_ns: 50_000,
            corrupt: 0.0,
            garbage: 0.0,
        }
    }
}

/// What the network did, summed over the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NetStats {
    /// Packets the endpoints transmitted.
    pub sent: u64,
    /// Packets handed to a live endpoint's `handle_datagram` (duplicates included, junk
    /// excluded).
    pub delivered: u64,
    /// Packets lost by the `loss` fault.
    pub lost: u64,
    /// Extra copies made by the `dup` fault.
    pub duplicated: u64,
    /// Packets held back by the `reorder` fault.
    pub reordered: u64,
    /// Damaged packets, dropped at the receiver as a kernel drops a bad UDP checksum.
    pub corrupt_dropped: u64,
    /// Junk datagrams delivered to `handle_datagram`.
    pub garbage_delivered: u64,
    /// Packets that arrived at a killed host (it is silent: nothing is sent back).
    pub to_dead_host: u64,
    /// Packets still in a host's NIC queue when it was killed.
    pub lost_in_dead_nic: u64,
    /// Packets addressed to an IP that is not one of the hosts.
    pub unroutable: u64,
    /// Wake-ups at which an endpoint's `poll_timeout` still said "now" after
    /// `handle_timeout` and a full drain (the harness then moves on by a microsecond).
    pub timer_spins: u64,
}

/// Everything needed to build a [`Harness`].
#[derive(Debug, Clone)]
pub struct HarnessConfig {
    /// Number of hosts (one endpoint each).
    pub hosts: usize,
    /// Links and faults.
    pub net: NetConfig,
    /// Configuration of every endpoint (its `seed` and `client_id_base` are set per host).
    pub endpoint: Config,
    /// Seed of the network's randomness and of every endpoint's.
    pub seed: u64,
}

/// An input about to be given to an endpoint, shown to [`App::on_input`].
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// A datagram from host `from`.
    Datagram {
        /// Sending host.
        from: usize,
        /// The bytes handed to `handle_datagram`.
        bytes: &'a [u8],
        /// True for junk made by the `garbage` fault.
        garbage: bool,
    },
    /// A timer (or pacer) wake-up.
    Timeout,
}

/// The application (and any observers) running on the hosts. Every method has a default
/// except [`on_event`](App::on_event).
pub trait App {
    /// Host `host` starts (or restarts) with a fresh endpoint: bind sockets, send requests.
    fn on_start(&mut self, _now: Time, _host: usize, _ep: &mut Endpoint) {}
    /// The endpoint of `host` produced `event`. Call `ep.release` for delivered data.
    fn on_event(&mut self, now: Time, host: usize, ep: &mut Endpoint, event: Event);
    /// `host` is killed; `ep` is its endpoint as it was, about to be dropped.
    fn on_kill(&mut self, _now: Time, _host: usize, _ep: &Endpoint) {}
    /// Just before an input reaches the endpoint of `host` (not called for packets that
    /// never reach it: lost, damaged, or for a dead host).
    fn on_input(&mut self, _now: Time, _host: usize, _input: Input<'_>) {}
    /// The endpoint of `host` transmitted a packet (seen before any fault).
    fn on_transmit(&mut self, _now: Time, _host: usize, _t: &Transmit, _bytes: &[u8]) {}
    /// While `host` is being serviced, after its events: a chance to act on the endpoint
    /// without an event (retry a reply that would have blocked). Return true if the
    /// endpoint may have new packets to send.
    fn poll_app(&mut self, _now: Time, _host: usize, _ep: &mut Endpoint) -> bool {
        false
    }
    /// After an input (or app action) was fully processed and the endpoint drained.
    fn after_input(&mut self, _now: Time, _host: usize, _ep: &Endpoint) {}
    /// True to stop [`Harness::run`] early.
    fn finished(&self) -> bool {
        false
    }
}

/// Why [`Harness::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// The app said it was finished.
    Finished,
    /// The time limit was reached (the clock now reads it).
    Until,
    /// Nothing left to happen.
    Idle,
}

struct Host {
    endpoint: Option<Box<Endpoint>>,
    /// Current incarnation (0 at first; +1 per restart).
    incarnation: u32,
    /// Death time of each incarnation that was killed.
    deaths: Vec<Option<Time>>,
    /// When the uplink finishes sending what is queued.
    egress_free: Time,
    /// Earliest pending valid wake-up, with its generation.
    wake_at: Option<Time>,
    wake_gen: u32,
    spins: u32,
}

struct Packet {
    buf: Vec<u8>,
    len: usize,
    src: u32,
    incarnation: u32,
    depart: Time,
    garbage: bool,
    corrupt: bool,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Deliver { to: u32, pkt: u32 },
    Wake { host: u32, gen: u32 },
    Kill { host: u32 },
    Restart { host: u32 },
}

struct Entry {
    at: Time,
    seq: u64,
    kind: Kind,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed, so the max-heap pops the earliest; ties go to the first scheduled.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A deterministic discrete-event network of [`Endpoint`]s with a virtual clock.
///
/// Events (deliveries, timer wake-ups, kills, restarts) sit in one queue ordered by
/// (time, sequence number), so equal times resolve in scheduling order and the same seed
/// always gives the same run. After every input the harness drains the endpoint's events
/// (handing them to the [`App`]) and its transmit queue, then asks `poll_timeout` when to
/// come back.
///
/// ```
/// use homa_core::{Endpoint, Event, Time};
/// use homa_harness::{host_ip, App, Harness, HarnessConfig, NetConfig};
/// use std::net::SocketAddr;
///
/// struct Ping { got: Option<Vec<u8>> }
/// impl App for Ping {
///     fn on_start(&mut self, now: Time, host: usize, ep: &mut Endpoint) {
///         ep.bind(99).unwrap();
///         if host == 0 {
///             let port = ep.bind(0).unwrap();
///             let dest = SocketAddr::new(host_ip(1), 99);
///             ep.send_request(now, port, dest, b"ping".to_vec(), 0, false).unwrap();
///         }
///     }
///     fn on_event(&mut self, now: Time, _host: usize, ep: &mut Endpoint, ev: Event) {
///         match ev {
///             Event::Request { port, id, peer, data } => {
///                 ep.reply(now, port, peer, id, b"pong".to_vec()).unwrap();
///                 ep.release(data);
///             }
///             Event::Response { data, .. } => {
///                 self.got = Some(data.to_vec());
///                 ep.release(data);
///             }
///             _ => unreachable!(), // no failures, no one-way messages here
///         }
///     }
///     fn finished(&self) -> bool { self.got.is_some() }
/// }
///
/// let mut h = Harness::new(HarnessConfig {
///     hosts: 2,
///     net: NetConfig { loss: 0.2, ..NetConfig::default() },
///     endpoint: Default::default(),
///     seed: 7,
/// });
/// let mut app = Ping { got: None };
/// h.run(&mut app, Time::from_millis(1_000));
/// assert_eq!(app.got.as_deref(), Some(&b"pong"[..]));
/// ```
pub struct Harness {
    cfg: HarnessConfig,
    hosts: Vec<Host>,
    queue: BinaryHeap<Entry>,
    seq: u64,
    now: Time,
    rng: ChaCha8Rng,
    pool: Vec<Packet>,
    free: Vec<u32>,
    packet_len: usize,
    started: bool,
    stats: NetStats,
    trace: TraceHash,
}

impl Harness {
    /// A network of `cfg.hosts` fresh endpoints at time zero. Nothing runs until
    /// [`run`](Self::run) (which first calls [`App::on_start`] for every host).
    ///
    /// # Panics
    /// If the endpoint configuration is invalid or there are no hosts.
    pub fn new(cfg: HarnessConfig) -> Harness {
        assert!(cfg.hosts > 0, "a harness needs at least one host");
        let rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let mut h = Harness {
            hosts: Vec::with_capacity(cfg.hosts),
            queue: BinaryHeap::new(),
            seq: 0,
            now: Time::ZERO,
            rng,
            pool: Vec::new(),
            free: Vec::new(),
            packet_len: cfg.endpoint.mtu.saturating_sub(cfg.endpoint.ip_overhead) as usize,
            started: false,
            stats: NetStats::default(),
            trace: TraceHash::default(),
            cfg,
        };
        for i in 0..h.cfg.hosts {
            let ep = h.make_endpoint(i, 0);
            h.hosts.push(Host {
                endpoint: Some(ep),
                incarnation: 0,
                deaths: vec![None],
                egress_free: Time::ZERO,
                wake_at: None,
                wake_gen: 0,
                spins: 0,
            });
        }
        h
    }

    fn make_endpoint(&self, host: usize, incarnation: u32) -> Box<Endpoint> {
        let mut config = self.cfg.endpoint.clone();
        // Both nonzero: a zero would be drawn from the operating system's random
        // source, and runs must repeat exactly.
        config.seed = crate::payload::mix(
            self.cfg.seed ^ 0x5eed,
            (host as u64) << 32 | incarnation as u64,
        )
        .max(1);
        // A restarted process must not reuse its predecessor's RPC ids (runtimes draw
        // the base at random; see core's history.rs for a new one below an old one):
        // here each incarnation has its own range, above the last (the first from 2).
        config.client_id_base = ((incarnation as u64) << 40).max(2);
        Box::new(Endpoint::new(config).expect("valid endpoint config"))
    }

    /// The virtual clock.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Number of hosts.
    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    /// The endpoint of `host`, unless the host is dead.
    pub fn endpoint(&self, host: usize) -> Option<&Endpoint> {
        self.hosts[host].endpoint.as_deref()
    }

    /// What the network did so far.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// A hash of everything that happened so far (every delivery with its time, hosts and
    /// header bytes; every application event): equal hashes mean equal runs.
    pub fn trace_hash(&self) -> u64 {
        self.trace.value()
    }

    /// Kill `host` at time `at`: its endpoint is dropped, it stops sending (packets still
    /// in its NIC queue are lost) and receiving. A dead host is silent: packets to it
    /// vanish, and nobody is told (no ICMP).
    pub fn schedule_kill(&mut self, host: usize, at: Time) {
        self.push(at, Kind::Kill { host: host as u32 });
    }

    /// Start a fresh endpoint on `host` (same address) at `at`, if it is dead then.
    pub fn schedule_restart(&mut self, host: usize, at: Time) {
        self.push(at, Kind::Restart { host: host as u32 });
    }

    /// Let the app act on a live host's endpoint now (send requests, abort...), then
    /// drain it as after any input. Returns false if the host is dead.
    pub fn act<A: App>(
        &mut self,
        app: &mut A,
        host: usize,
        f: impl FnOnce(&mut A, Time, &mut Endpoint),
    ) -> bool {
        let now = self.now;
        let Some(ep) = self.hosts[host].endpoint.as_deref_mut() else {
            return false;
        };
        f(app, now, ep);
        self.service(app, host);
        true
    }

    /// Run events in time order until the app is finished, nothing is left to happen,
    /// or the next event is later than `until`.
    pub fn run<A: App>(&mut self, app: &mut A, until: Time) -> RunStatus {
        if !self.started {
            self.started = true;
            for h in 0..self.hosts.len() {
                self.start_host(app, h);
            }
        }
        loop {
            if app.finished() {
                return RunStatus::Finished;
            }
            let Some(top) = self.queue.peek() else {
                return RunStatus::Idle;
            };
            if top.at > until {
                self.now = until;
                return RunStatus::Until;
            }
            let e = self.queue.pop().expect("peeked");
            self.now = e.at;
            match e.kind {
                Kind::Deliver { to, pkt } => self.deliver(app, to as usize, pkt),
                Kind::Wake { host, gen } => self.wake(app, host as usize, gen),
                Kind::Kill { host } => self.kill(app, host as usize),
                Kind::Restart { host } => self.restart(app, host as usize),
            }
        }
    }

    // ------------------------------------------------------------------ internals

    fn push(&mut self, at: Time, kind: Kind) {
        self.seq += 1;
        self.queue.push(Entry {
            at,
            seq: self.seq,
            kind,
        });
    }

    fn alloc(&mut self) -> u32 {
        if let Some(i) = self.free.pop() {
            return i;
        }
        self.pool.push(Packet {
            buf: vec![0; self.packet_len],
            len: 0,
            src: 0,
            incarnation: 0,
            depart: Time::ZERO,
            garbage: false,
            corrupt: false,
        });
        (self.pool.len() - 1) as u32
    }

    fn start_host<A: App>(&mut self, app: &mut A, h: usize) {
        let now = self.now;
        if let Some(ep) = self.hosts[h].endpoint.as_deref_mut() {
            app.on_start(now, h, ep);
            self.service(app, h);
        }
    }

    fn kill<A: App>(&mut self, app: &mut A, h: usize) {
        let now = self.now;
        let host = &mut self.hosts[h];
        let Some(ep) = host.endpoint.take() else {
            return;
        };
        host.deaths[host.incarnation as usize] = Some(now);
        host.wake_at = None;
        host.wake_gen = host.wake_gen.wrapping_add(1);
        self.trace.add(&[now.as_nanos(), 0xdead, h as u64]);
        app.on_kill(now, h, &ep);
    }

    fn restart<A: App>(&mut self, app: &mut A, h: usize) {
        if self.hosts[h].endpoint.is_some() {
            return;
        }
        let incarnation = self.hosts[h].incarnation + 1;
        let ep = self.make_endpoint(h, incarnation);
        let host = &mut self.hosts[h];
        host.incarnation = incarnation;
        host.deaths.push(None);
        host.endpoint = Some(ep);
        host.egress_free = self.now;
        self.trace.add(&[self.now.as_nanos(), 0xa11e, h as u64]);
        self.start_host(app, h);
    }

    fn wake<A: App>(&mut self, app: &mut A, h: usize, gen: u32) {
        let now = self.now;
        let host = &mut self.hosts[h];
        if gen != host.wake_gen {
            return;
        }
        host.wake_at = None;
        let Some(ep) = host.endpoint.as_deref_mut() else {
            return;
        };
        app.on_input(now, h, Input::Timeout);
        ep.handle_timeout(now);
        self.service(app, h);
        // Still due now after a timeout and a full drain: the endpoint would spin.
        let host = &mut self.hosts[h];
        if host.wake_at == Some(now) {
            host.spins += 1;
            if host.spins >= MAX_SPINS {
                self.stats.timer_spins += 1;
                host.spins = 0;
                host.wake_gen = host.wake_gen.wrapping_add(1);
                let at = now.plus_nanos(1_000);
                host.wake_at = Some(at);
                let gen = host.wake_gen;
                self.push(
                    at,
                    Kind::Wake {
                        host: h as u32,
                        gen,
                    },
                );
            }
        } else {
            host.spins = 0;
        }
    }

    fn deliver<A: App>(&mut self, app: &mut A, to: usize, pkt: u32) {
        let now = self.now;
        let p = &self.pool[pkt as usize];
        let (src, garbage, len) = (p.src as usize, p.garbage, p.len);
        let src_dead =
            self.hosts[src].deaths[p.incarnation as usize].is_some_and(|d| p.depart >= d);
        if src_dead {
            self.stats.lost_in_dead_nic += 1;
        } else if p.corrupt {
            self.stats.corrupt_dropped += 1;
        } else if self.hosts[to].endpoint.is_none() {
            self.stats.to_dead_host += 1;
        } else {
            if garbage {
                self.stats.garbage_delivered += 1;
            } else {
                self.stats.delivered += 1;
            }
            let bytes = &self.pool[pkt as usize].buf[..len];
            self.trace
                .add(&[now.as_nanos(), src as u64, to as u64, len as u64]);
            self.trace
                .add_bytes(&bytes[..len.min(homa_wire::DATA_HEADER_LEN)]);
            app.on_input(
                now,
                to,
                Input::Datagram {
                    from: src,
                    bytes,
                    garbage,
                },
            );
            let ep = self.hosts[to].endpoint.as_deref_mut().expect("live");
            if len >= homa_core::KEEP_MIN {
                // As a runtime hands over long datagrams (loopback, jumbo frames, GRO):
                // in a buffer of their own that the engine may keep slices of.
                let shared = homa_core::Bytes::copy_from_slice(bytes);
                ep.handle_shared_datagram(now, host_ip(src), &shared, &shared);
            } else {
                ep.handle_datagram(now, host_ip(src), bytes);
            }
            self.free.push(pkt);
            self.service(app, to);
            return;
        }
        self.free.push(pkt);
    }

    /// Drain the endpoint of `h` after an input: events to the app, packets to the
    /// network; then schedule its next wake-up.
    fn service<A: App>(&mut self, app: &mut A, h: usize) {
        let now = self.now;
        let Some(mut ep) = self.hosts[h].endpoint.take() else {
            return;
        };
        loop {
            let mut any = false;
            while let Some(ev) = ep.poll_event() {
                any = true;
                self.trace.add_event(h, &ev);
                app.on_event(now, h, &mut ep, ev);
            }
            any |= app.poll_app(now, h, &mut ep);
            loop {
                let slot = self.alloc();
                let Some(t) = ep.poll_transmit(now, &mut self.pool[slot as usize].buf) else {
                    self.free.push(slot);
                    break;
                };
                app.on_transmit(now, h, &t, &self.pool[slot as usize].buf[..t.len]);
                self.launch(h, slot, &t);
            }
            if !any {
                break;
            }
        }
        app.after_input(now, h, &ep);
        let next = ep.poll_timeout();
        let host = &mut self.hosts[h];
        host.endpoint = Some(ep);
        if let Some(t) = next {
            let t = t.max(now);
            if host.wake_at.is_none_or(|w| t < w) {
                host.wake_gen = host.wake_gen.wrapping_add(1);
                host.wake_at = Some(t);
                let gen = host.wake_gen;
                self.push(
                    t,
                    Kind::Wake {
                        host: h as u32,
                        gen,
                    },
                );
            }
        }
    }

    /// Put a transmitted packet on the wire: egress queue, faults, arrival.
    fn launch(&mut self, src: usize, slot: u32, t: &Transmit) {
        self.stats.sent += 1;
        let now = self.now;
        let net = &self.cfg.net;
        let wire = t.len as u64 + self.cfg.endpoint.ip_overhead as u64 + ETHERNET_OVERHEAD;
        let ser = wire * 8_000 / net.link_mbps.max(1);
        let host = &mut self.hosts[src];
        let depart = host.egress_free.max(now);
        host.egress_free = depart.plus_nanos(ser);
        let mut arrive = host.egress_free.plus_nanos(net.latency_ns);
        let Some(to) = host_index(t.dest.ip()).filter(|&i| i < self.hosts.len()) else {
            self.stats.unroutable += 1;
            self.free.push(slot);
            return;
        };
        let incarnation = self.hosts[src].incarnation;
        {
            let p = &mut self.pool[slot as usize];
            p.len = t.len;
            p.src = src as u32;
            p.incarnation = incarnation;
            p.depart = depart;
            p.garbage = false;
            p.corrupt = false;
        }
        let (loss, dup, reorder, corrupt, garbage) =
            (net.loss, net.dup, net.reorder, net.corrupt, net.garbage);
        let (reorder_max, latency) = (net.reorder_max_ns, net.latency_ns);
        if garbage > 0.0 && self.rng.gen::<f64>() < garbage {
            let g = self.alloc();
            self.make_garbage(slot, g);
            let jitter = self.rng.gen_range(0..=latency);
            self.push(
                arrive.plus_nanos(jitter),
                Kind::Deliver {
                    to: to as u32,
                    pkt: g,
                },
            );
        }
        if loss > 0.0 && self.rng.gen::<f64>() < loss {
            self.stats.lost += 1;
            self.free.push(slot);
            return;
        }
        if corrupt > 0.0 && self.rng.gen::<f64>() < corrupt {
            let p = &mut self.pool[slot as usize];
            let i = self.rng.gen_range(0..p.len.max(1));
            if let Some(b) = p.buf.get_mut(i) {
                *b ^= 1 << self.rng.gen_range(0..8);
            }
            p.corrupt = true;
        }
        if reorder > 0.0 && self.rng.gen::<f64>() < reorder {
            self.stats.reordered += 1;
            arrive = arrive.plus_nanos(self.rng.gen_range(0..=reorder_max));
        }
        if dup > 0.0 && self.rng.gen::<f64>() < dup {
            self.stats.duplicated += 1;
            let d = self.alloc();
            let (a, b) = two_mut(&mut self.pool, slot as usize, d as usize);
            b.buf[..a.len].copy_from_slice(&a.buf[..a.len]);
            b.len = a.len;
            b.src = a.src;
            b.incarnation = a.incarnation;
            b.depart = a.depart;
            b.garbage = false;
            b.corrupt = a.corrupt;
            let extra = self.rng.gen_range(0..=latency);
            self.push(
                arrive.plus_nanos(extra),
                Kind::Deliver {
                    to: to as u32,
                    pkt: d,
                },
            );
        }
        self.push(
            arrive,
            Kind::Deliver {
                to: to as u32,
                pkt: slot,
            },
        );
    }

    /// Fill slot `g` with junk derived from the packet in `slot`: bytes that must not
    /// parse, random bytes (sometimes with a valid type and header length, to get deeper
    /// into the parser), or a DATA packet cut short (valid, and its bytes are correct).
    fn make_garbage(&mut self, slot: u32, g: u32) {
        let (orig, junk) = two_mut(&mut self.pool, slot as usize, g as usize);
        junk.src = orig.src;
        junk.incarnation = orig.incarnation;
        junk.depart = orig.depart;
        junk.garbage = true;
        junk.corrupt = false;
        let rng = &mut self.rng;
        let n = orig.len;
        junk.buf[..n].copy_from_slice(&orig.buf[..n]);
        junk.len = n;
        let is_data = n > 11 && orig.buf[11] == homa_wire::PacketType::Data.code();
        match rng.gen_range(0..7u32) {
            0 => {
                // Random bytes.
                junk.len = rng.gen_range(0..=120);
                rng.fill(&mut junk.buf[..junk.len]);
            }
            1 => {
                // Random bytes under a valid type code and header length.
                let ty = homa_wire::PacketType::ALL[rng.gen_range(0..9)];
                junk.len = rng
                    .gen_range(12..=100)
                    .max(ty.header_len() - rng.gen_range(0..2));
                rng.fill(&mut junk.buf[..junk.len]);
                junk.buf[11] = ty.code();
                junk.buf[12] = ty.doff();
            }
            2 => {
                // Truncated below its header.
                let ty = homa_wire::PacketType::from_code(orig.buf[11]);
                let hl = ty.map_or(homa_wire::COMMON_HEADER_LEN, |t| t.header_len());
                junk.len = rng.gen_range(0..hl.min(n).max(1));
            }
            3 => {
                // Unknown type code.
                let code = loop {
                    let c: u8 = rng.gen();
                    if homa_wire::PacketType::from_code(c).is_none() {
                        break c;
                    }
                };
                junk.buf[11] = code;
            }
            4 if is_data => {
                // message_length 0 or above the maximum.
                let max = self.cfg.endpoint.max_message_length;
                let bad = if rng.gen() || max == u32::MAX {
                    0
                } else {
                    rng.gen_range(max + 1..=u32::MAX)
                };
                junk.buf[28..32].copy_from_slice(&bad.to_be_bytes());
            }
            5 if is_data && n > homa_wire::DATA_HEADER_LEN => {
                // A segment that runs past the end of the message.
                let len = u32::from_be_bytes(orig.buf[28..32].try_into().expect("4 bytes"));
                let off = rng.gen_range(len.saturating_sub(1)..=u32::MAX - 1_500);
                junk.buf[52..56].copy_from_slice(&off.to_be_bytes());
            }
            6 if is_data && n > homa_wire::DATA_HEADER_LEN + 1 => {
                // DATA cut short: a valid packet carrying a correct prefix of its segment.
                junk.len = rng.gen_range(homa_wire::DATA_HEADER_LEN + 1..n);
            }
            _ => {
                // Random bytes over a copy's header.
                let k = rng.gen_range(1..=4);
                for _ in 0..k {
                    let i = rng.gen_range(0..n.clamp(1, 28));
                    junk.buf[i] = rng.gen();
                }
                // Keep it unparseable: corrupt the type code too.
                junk.buf[11] = 0x00;
            }
        }
    }
}

fn two_mut<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert_ne!(a, b);
    if a < b {
        let (x, y) = v.split_at_mut(b);
        (&mut x[a], &mut y[0])
    } else {
        let (x, y) = v.split_at_mut(a);
        (&mut y[0], &mut x[b])
    }
}
