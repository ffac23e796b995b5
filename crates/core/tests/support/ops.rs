//! A driver that turns arbitrary bytes into a sequence of operations on three Endpoints
//! wired together: API calls, packet deliveries (in any order, duplicated, dropped, or
//! mutated), forged packets and time jumps, then a settling phase in which the network
//! is perfect and every request is answered. Packets are delivered either copied
//! (`handle_datagram`) or inside a shared receive buffer (`handle_shared_datagram`,
//! with some bytes before and after, as a runtime's receive slot holds them); with the
//! large MTU some runs choose, long payloads are then kept by reference. Shared by the `ops` property test and the
//! `endpoint` cargo-fuzz target (which includes this file by path).
//!
//! Some sends are one-way messages (`send_message`); hosts 0 and 1 take them on the
//! server port, host 2 does not.
//!
//! Checks after every step: no panic; live RPC counts agree with the metrics; held
//! buffer bytes stay within their caps. For every RPC the driver did not tamper with (no
//! mutated or forged packet named it, by its id or in an ack): each response delivered is
//! byte-identical to the reply the server sent and arrives at most once, and each server
//! executes each request (and each one-way message) at most once; a one-way message is
//! acknowledged only after its receiver took it, and only a host that takes them takes
//! one. Tampering is tracked per RPC, so one forged packet
//! switches the checks off for the RPCs it names, not for the rest of the run. After
//! settling, no RPC is left alive: every one completed, failed or was freed.

use homa_core::{Config, Endpoint, Event, RpcId, Time};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

const HOSTS: usize = 3;
const SERVER_PORT: u16 = 99;
/// Hosts below this take one-way messages on the server port.
const ONE_WAY_HOSTS: usize = 2;
/// Rounds of the settling phase (each delivers everything, answers everything and runs
/// time to the next deadline): far more than the timeouts below need.
const SETTLE_ROUNDS: usize = 20_000;
/// Ticks of the configuration below.
const TIMEOUT_TICKS: u32 = 30;
const DEDUP_HORIZON_TICKS: u32 = 300;
/// The longest a packet may spend in the network for at-most-once to hold: servers
/// remember executed requests for `dedup_horizon_ticks`, which must exceed
/// `timeout_ticks` plus this (default 1 ms ticks).
const MAX_PACKET_AGE_NANOS: u64 = (DEDUP_HORIZON_TICKS - TIMEOUT_TICKS) as u64 * 1_000_000;

fn ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + i as u8))
}

fn host_of(addr: IpAddr) -> Option<usize> {
    (0..HOSTS).find(|&i| ip(i) == addr)
}

/// A byte source that yields zeros when exhausted.
struct Bytes<'a>(&'a [u8]);
impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

struct Host {
    ep: Endpoint,
    client_port: u16,
    /// Packets sent and not yet delivered: (dest host, bytes, when sent).
    outbox: Vec<(usize, Vec<u8>, Time)>,
    /// Requests delivered and not yet answered: (port, peer, id).
    requests: Vec<(u16, SocketAddr, RpcId)>,
    /// Delivered messages the app still holds.
    held: Vec<homa_core::MessageBuf>,
}

/// What a run did, so tests can tell a busy run from an idle one.
#[derive(Debug, Default)]
#[allow(dead_code)] // the fuzz target ignores it
pub struct Stats {
    pub steps: usize,
    pub requests: usize,
    pub responses: usize,
    pub failures: usize,
    /// One-way messages taken, and acknowledged to their senders.
    pub messages: usize,
    pub delivered: usize,
    /// Responses checked byte for byte (their RPC was not tampered with).
    pub checked_responses: usize,
    /// Requests whose single execution was checked.
    pub checked_requests: usize,
    /// RPCs a mutated or forged packet named.
    pub tampered_rpcs: usize,
    /// Packets whose payload the engine kept by reference (the zero-copy path).
    pub kept_packets: usize,
    /// Packets delivered later than at-most-once allows for (their RPCs lose checks).
    pub late_packets: usize,
}

/// An RPC as the checks know it: (client host, client id).
type RpcKey = (usize, u64);

/// What the checks remember across the run.
#[derive(Default)]
struct Checks {
    stats: Stats,
    /// What each server replied, by RPC.
    replies: HashMap<RpcKey, Vec<u8>>,
    /// Responses delivered, by RPC.
    responses: HashMap<RpcKey, usize>,
    /// Executions, by (server host, RPC).
    executions: HashMap<(usize, RpcKey), usize>,
    /// RPCs a mutated or forged packet named: their checks are off.
    tampered: HashSet<RpcKey>,
    /// Deliver packets inside shared buffers.
    shared: bool,
}

impl Checks {
    /// A packet from host `from` to host `to` was mutated or forged: `bytes` is the
    /// packet before (for a mutation) or as delivered. Every RPC it may name is marked:
    /// its sender id, read as a client's id on either host, and the RPCs its acks name.
    fn taint(&mut self, from: usize, to: usize, bytes: &[u8]) {
        let mut ids = Vec::new();
        if bytes.len() >= 28 {
            ids.push(u64::from_be_bytes(bytes[20..28].try_into().unwrap()) & !1);
        }
        if let Ok((repr, _)) = homa_wire::Repr::parse(bytes, u32::MAX) {
            match repr.body {
                homa_wire::Body::Data(d) => ids.extend(d.ack.map(|a| a.client_id)),
                homa_wire::Body::Ack(acks) => {
                    ids.extend(acks.as_slice().iter().map(|a| a.client_id))
                }
                _ => {}
            }
        }
        for id in ids {
            for host in [from, to] {
                if self.tampered.insert((host, id & !1)) {
                    self.stats.tampered_rpcs += 1;
                }
            }
        }
    }

    /// Hand `bytes`, sent by host `from`, to `host`: copied, or inside a shared buffer
    /// with a few bytes on either side.
    fn deliver(&mut self, host: &mut Host, now: Time, from: usize, bytes: &[u8]) {
        if !self.shared {
            return host.ep.handle_datagram(now, ip(from), bytes);
        }
        let (before, after) = (bytes.len() % 7, bytes.len() % 5);
        let mut slot = vec![0xA5u8; before + bytes.len() + after];
        slot[before..before + bytes.len()].copy_from_slice(bytes);
        let slot = homa_core::Bytes::from(slot);
        let packet = &slot[before..before + bytes.len()];
        host.ep.handle_shared_datagram(now, ip(from), packet, &slot);
        // Still shared: the engine kept part of it by reference.
        self.stats.kept_packets += usize::from(!slot.is_unique());
    }

    /// A packet from host `from` to host `to`, sent at `sent`, is delivered at `now`. If
    /// it spent longer in the network than at-most-once allows for
    /// (`dedup_horizon_ticks - timeout_ticks`: servers forget executed requests after the
    /// horizon), the RPCs it names lose their checks, as for a forged packet.
    fn check_age(&mut self, from: usize, to: usize, bytes: &[u8], sent: Time, now: Time) {
        if now.nanos_since(sent) > MAX_PACKET_AGE_NANOS {
            self.stats.late_packets += 1;
            self.taint(from, to, bytes);
        }
    }

    /// Check and record what host `i` delivered.
    fn event(&mut self, i: usize, host: &mut Host, ev: Event) {
        match ev {
            Event::Request {
                port,
                id,
                peer,
                data,
            } => {
                self.stats.requests += 1;
                let client = host_of(peer.ip()).expect("a request from outside the network");
                let key = (client, id.client_id());
                let n = self.executions.entry((i, key)).or_default();
                *n += 1;
                if !self.tampered.contains(&key) {
                    self.stats.checked_requests += 1;
                    assert_eq!(*n, 1, "host {i} executed {key:?} twice");
                }
                host.requests.push((port, peer, id));
                host.held.push(data);
            }
            Event::Response { id, data, .. } => {
                self.stats.responses += 1;
                let key = (i, id.0);
                let n = self.responses.entry(key).or_default();
                *n += 1;
                if !self.tampered.contains(&key) {
                    self.stats.checked_responses += 1;
                    assert_eq!(*n, 1, "response for {id} delivered twice");
                    let want = self.replies.get(&key).expect("response nobody sent");
                    assert!(data == *want, "response for {id} differs from the reply");
                }
                host.held.push(data);
            }
            Event::Message { id, peer, data, .. } => {
                self.stats.messages += 1;
                assert!(i < ONE_WAY_HOSTS, "host {i} took a one-way message");
                let client = host_of(peer.ip()).expect("a message from outside the network");
                let key = (client, id.client_id());
                let n = self.executions.entry((i, key)).or_default();
                *n += 1;
                if !self.tampered.contains(&key) {
                    self.stats.checked_requests += 1;
                    assert_eq!(*n, 1, "host {i} took one-way message {key:?} twice");
                }
                host.held.push(data);
            }
            Event::Delivered { id, peer, .. } => {
                self.stats.delivered += 1;
                let key = (i, id.0);
                let server = host_of(peer.ip()).expect("an ack from outside the network");
                if !self.tampered.contains(&key) {
                    let taken = self.executions.get(&(server, key)).copied();
                    assert_eq!(taken, Some(1), "{key:?} acknowledged but not taken once");
                }
            }
            Event::Failed { .. } => self.stats.failures += 1,
        }
    }

    /// Host `h` answers one of its requests (`pick`) with `len` bytes.
    fn reply(&mut self, hosts: &mut [Host], h: usize, now: Time, pick: u8, len: usize) {
        if let Some((port, peer, id)) = pop(&mut hosts[h].requests, pick) {
            let data: Vec<u8> = (0..len).map(|i| (i as u64 ^ id.0) as u8).collect();
            if hosts[h].ep.reply(now, port, peer, id, data.clone()).is_ok() {
                let client = host_of(peer.ip()).unwrap();
                self.replies.insert((client, id.client_id()), data);
            }
        }
    }

    /// Run every host's timers, collect output and events, and check the invariants.
    fn service_all(&mut self, hosts: &mut [Host], now: Time, buf: &mut [u8]) {
        for (i, host) in hosts.iter_mut().enumerate() {
            for ev in service(i, host, now, buf) {
                self.event(i, host, ev);
            }
            let m = host.ep.metrics();
            assert_eq!(m.client_rpcs + m.server_rpcs, host.ep.live_rpcs() as u64);
            // Requests and responses each within the cap.
            let cap = host.ep.config().max_outgoing_held;
            assert!(m.outgoing_responses_held <= cap);
            assert!(m.outgoing_held - m.outgoing_responses_held <= cap);
            assert!(m.incoming_held <= host.ep.config().max_incoming_held);
        }
    }
}

/// Run the operations encoded in `data`. Panics (with a description) if a check fails.
pub fn run(data: &[u8]) -> Stats {
    let mut input = Bytes(data);
    let mode = input.u8();
    let small = mode & 1 == 1;
    // Packets big enough to be kept by reference (`KEEP_MIN`), as over loopback.
    let mtu = if mode & 2 == 2 { 20_000 } else { 1_500 };
    // Deliver packets inside shared buffers (the zero-copy path).
    let shared = mode & 4 == 4;
    // Nonzero seeds and id bases: zeros would be drawn from the operating system.
    let config = |seed: u64| Config {
        seed: seed + 1,
        client_id_base: 2,
        mtu,
        // Small caps and short timers so the interesting paths are reachable quickly.
        max_incoming_held: if small { 300_000 } else { 4 << 20 },
        max_outgoing_held: if small { 500_000 } else { 4 << 20 },
        unsched_bytes: 5_000,
        max_incoming: 20_000,
        timeout_ticks: TIMEOUT_TICKS,
        dedup_horizon_ticks: DEDUP_HORIZON_TICKS,
        client_history_idle_ticks: 600,
        ..Config::default()
    };
    let mut hosts: Vec<Host> = (0..HOSTS)
        .map(|i| {
            let mut ep = Endpoint::new(config(i as u64)).unwrap();
            ep.bind(SERVER_PORT).unwrap();
            ep.set_one_way(SERVER_PORT, i < ONE_WAY_HOSTS);
            let client_port = ep.bind(0).unwrap();
            Host {
                ep,
                client_port,
                outbox: Vec::new(),
                requests: Vec::new(),
                held: Vec::new(),
            }
        })
        .collect();
    let mut now = Time::ZERO;
    let mut checks = Checks {
        shared,
        ..Checks::default()
    };
    let mut buf = vec![0u8; mtu as usize];
    let mut steps = 0;
    while !input.done() && steps < 2_000 {
        steps += 1;
        let op = input.u8();
        let h = input.u8() as usize % HOSTS;
        match op % 12 {
            0 | 1 => {
                let dest = (h + 1 + input.u8() as usize % (HOSTS - 1)) % HOSTS;
                let len = match input.u8() % 4 {
                    0 => 1 + input.u8() as usize,
                    1 => 1 + input.u16() as usize,
                    2 => 1 + (input.u32() % 300_000) as usize,
                    _ => 1_400 + input.u8() as usize,
                };
                let port = if input.u8() % 8 == 0 {
                    input.u16()
                } else {
                    SERVER_PORT
                };
                let data: Vec<u8> = (0..len).map(|i| (i * 7 + h) as u8).collect();
                let cport = hosts[h].client_port;
                let to = SocketAddr::new(ip(dest), port);
                let ep = &mut hosts[h].ep;
                let _ = if op >= 128 {
                    ep.send_message(now, cport, to, data, 0, false)
                } else {
                    ep.send_request(now, cport, to, data, 0, false)
                };
            }
            2 => {
                let pick = input.u8();
                let len = 1 + input.u16() as usize % 3_000;
                checks.reply(&mut hosts, h, now, pick, len);
            }
            3 => {
                // Deliver one queued packet, possibly duplicated or mutated.
                let how = input.u8();
                if let Some((dest, mut bytes, sent)) = pop(&mut hosts[h].outbox, input.u8()) {
                    checks.check_age(h, dest, &bytes, sent, now);
                    if how % 16 == 0 && !bytes.is_empty() {
                        checks.taint(h, dest, &bytes);
                        let at = input.u16() as usize % bytes.len();
                        bytes[at] ^= 1 << (input.u8() % 8);
                        checks.taint(h, dest, &bytes);
                    } else if how % 16 == 1 {
                        checks.taint(h, dest, &bytes);
                        bytes.truncate(input.u16() as usize % (bytes.len() + 1));
                    }
                    checks.deliver(&mut hosts[dest], now, h, &bytes);
                    if how % 16 == 2 {
                        checks.deliver(&mut hosts[dest], now, h, &bytes);
                    }
                }
            }
            4 => {
                // Deliver everything queued at h, in order.
                for (dest, bytes, sent) in std::mem::take(&mut hosts[h].outbox) {
                    checks.check_age(h, dest, &bytes, sent, now);
                    checks.deliver(&mut hosts[dest], now, h, &bytes);
                }
            }
            5 => {
                pop(&mut hosts[h].outbox, input.u8()); // lost
            }
            6 => {
                // A forged packet: random bytes with a plausible header start.
                let len = input.u8() as usize;
                let mut bytes: Vec<u8> = (0..len).map(|_| input.u8()).collect();
                if bytes.len() > 12 {
                    bytes[11] = 0x10 + input.u8() % 10;
                }
                let dest = (h + 1) % HOSTS;
                checks.taint(h, dest, &bytes);
                checks.deliver(&mut hosts[dest], now, h, &bytes);
            }
            7 => {
                now = now.plus_nanos(input.u32() as u64 % 20_000_000);
            }
            8 => {
                if let Some(m) = pop(&mut hosts[h].held, input.u8()) {
                    hosts[h].ep.release(m);
                }
            }
            9 => {
                let id = RpcId(input.u32() as u64 & !1);
                let cport = hosts[h].client_port;
                hosts[h].ep.abort(cport, id, input.u8() & 1 == 1);
            }
            10 => {
                if input.u8() % 8 == 0 {
                    let cport = hosts[h].client_port;
                    hosts[h].ep.abort_all(cport, true);
                }
            }
            _ => {
                // Run time forward to `target`, serving every deadline on the way.
                let target = now.plus_nanos(1_000_000 + input.u32() as u64 % 5_000_000);
                let mut rounds = 0;
                while let Some(t) = hosts.iter().filter_map(|h| h.ep.poll_timeout()).min() {
                    if t > target || rounds > 10_000 {
                        break;
                    }
                    rounds += 1;
                    now = now.max(t);
                    checks.service_all(&mut hosts, now, &mut buf);
                    // Packets queued meanwhile wait in the outboxes (the network is idle).
                    if now == t
                        && hosts
                            .iter()
                            .all(|h| h.ep.poll_timeout().is_none_or(|d| d <= now))
                    {
                        now = now.plus_nanos(1_000);
                    }
                }
                now = now.max(target);
            }
        }
        checks.service_all(&mut hosts, now, &mut buf);
    }
    settle(&mut hosts, &mut checks, now, &mut buf);
    checks.stats.steps = steps;
    checks.stats
}

/// A perfect network and a diligent application: deliver every packet in order, answer
/// every request, let go of every message, and run time to each next deadline, until
/// nothing is left alive. Panics if an RPC outlives `SETTLE_ROUNDS` rounds.
fn settle(hosts: &mut [Host], checks: &mut Checks, mut now: Time, buf: &mut [u8]) {
    for _ in 0..SETTLE_ROUNDS {
        let mut moved = false;
        for h in 0..HOSTS {
            for (dest, bytes, sent) in std::mem::take(&mut hosts[h].outbox) {
                moved = true;
                checks.check_age(h, dest, &bytes, sent, now);
                checks.deliver(&mut hosts[dest], now, h, &bytes);
            }
            while !hosts[h].requests.is_empty() {
                moved = true;
                checks.reply(hosts, h, now, 0, 100);
            }
            for m in std::mem::take(&mut hosts[h].held) {
                hosts[h].ep.release(m);
            }
        }
        checks.service_all(hosts, now, buf);
        if hosts
            .iter()
            .all(|h| h.ep.live_rpcs() == 0 && h.outbox.is_empty())
        {
            return;
        }
        if !moved && hosts.iter().all(|h| h.outbox.is_empty()) {
            // Quiet: on to the next deadline (a little past now if it is due already).
            let next = hosts.iter().filter_map(|h| h.ep.poll_timeout()).min();
            now = next.map_or(now, |t| now.max(t)).plus_nanos(1_000);
        } else {
            // Packets take time to cross the network: two endpoints that keep answering
            // each other still see the clock run (and their timeouts come).
            now = now.plus_nanos(10_000);
        }
    }
    let live: Vec<Vec<_>> = hosts
        .iter()
        .map(|h| {
            let mut rpcs: Vec<_> = h.ep.rpcs(h.client_port).collect();
            rpcs.extend(h.ep.rpcs(SERVER_PORT));
            rpcs
        })
        .collect();
    panic!("RPCs still alive after settling: {live:?}");
}

/// Run a host's due timer, move its packets to its outbox, and return its events.
fn service(i: usize, host: &mut Host, now: Time, buf: &mut [u8]) -> Vec<Event> {
    if host.ep.poll_timeout().is_some_and(|t| t <= now) {
        host.ep.handle_timeout(now);
    }
    let mut budget = 100_000;
    while let Some(t) = host.ep.poll_transmit(now, buf) {
        let dest = host_of(t.dest.ip()).unwrap_or(i);
        host.outbox.push((dest, buf[..t.len].to_vec(), now));
        budget -= 1;
        assert!(budget > 0, "poll_transmit never ends");
    }
    std::iter::from_fn(|| host.ep.poll_event()).collect()
}

fn pop<T>(v: &mut Vec<T>, pick: u8) -> Option<T> {
    if v.is_empty() {
        None
    } else {
        let i = pick as usize % v.len();
        Some(v.swap_remove(i))
    }
}
