//! A driver that turns arbitrary bytes into a sequence of operations on three Endpoints
//! wired together: API calls, packet deliveries (in any order, duplicated, dropped, or
//! mutated), forged packets and time jumps. Shared by the `ops` property test and the
//! `endpoint` cargo-fuzz target (which includes this file by path).
//!
//! Checks after every step: no panic; live RPC counts agree with the metrics; held
//! buffer bytes stay within their caps. When no packet was mutated or forged during the
//! run, also: every response delivered is byte-identical to the reply the server sent,
//! and arrives at most once.

use homa_core::{Config, Endpoint, Event, RpcId, Time};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

const HOSTS: usize = 3;
const SERVER_PORT: u16 = 99;

fn ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + i as u8))
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
    /// Packets sent and not yet delivered: (dest host, bytes).
    outbox: Vec<(usize, Vec<u8>)>,
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
}

/// Run the operations encoded in `data`. Panics (with a description) if a check fails.
pub fn run(data: &[u8]) -> Stats {
    let mut stats = Stats::default();
    let mut input = Bytes(data);
    let small = input.u8() & 1 == 1;
    let config = |seed| Config {
        seed,
        // Small caps and short timers so the interesting paths are reachable quickly.
        max_incoming_held: if small { 300_000 } else { 4 << 20 },
        max_outgoing_held: if small { 500_000 } else { 4 << 20 },
        unsched_bytes: 5_000,
        max_incoming: 20_000,
        timeout_ticks: 30,
        dedup_horizon_ticks: 60,
        client_history_idle_ticks: 200,
        ..Config::default()
    };
    let mut hosts: Vec<Host> = (0..HOSTS)
        .map(|i| {
            let mut ep = Endpoint::new(config(i as u64)).unwrap();
            ep.bind(SERVER_PORT).unwrap();
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
    let mut tampered = false;
    // What each server replied, by (client host, client id): checked against responses.
    let mut replies: HashMap<(usize, u64), Vec<u8>> = HashMap::new();
    let mut seen_responses: HashMap<(usize, u64), usize> = HashMap::new();
    let mut buf = vec![0u8; 1500];
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
                let _ = hosts[h].ep.send_request(
                    now,
                    cport,
                    SocketAddr::new(ip(dest), port),
                    data,
                    0,
                    false,
                );
            }
            2 => {
                if let Some((port, peer, id)) = pop(&mut hosts[h].requests, input.u8()) {
                    let len = 1 + input.u16() as usize % 3_000;
                    let data: Vec<u8> = (0..len).map(|i| (i as u64 ^ id.0) as u8).collect();
                    if hosts[h].ep.reply(now, port, peer, id, data.clone()).is_ok() {
                        let client = (0..HOSTS).find(|&i| ip(i) == peer.ip()).unwrap();
                        replies.insert((client, id.client_id()), data);
                    }
                }
            }
            3 => {
                // Deliver one queued packet, possibly duplicated or mutated.
                let how = input.u8();
                if let Some((dest, mut bytes)) = pop(&mut hosts[h].outbox, input.u8()) {
                    if how % 16 == 0 && !bytes.is_empty() {
                        let at = input.u16() as usize % bytes.len();
                        bytes[at] ^= 1 << (input.u8() % 8);
                        tampered = true;
                    } else if how % 16 == 1 {
                        bytes.truncate(input.u16() as usize % (bytes.len() + 1));
                        tampered = true;
                    }
                    hosts[dest].ep.handle_datagram(now, ip(h), &bytes);
                    if how % 16 == 2 {
                        hosts[dest].ep.handle_datagram(now, ip(h), &bytes);
                    }
                }
            }
            4 => {
                // Deliver everything queued at h, in order.
                for (dest, bytes) in std::mem::take(&mut hosts[h].outbox) {
                    hosts[dest].ep.handle_datagram(now, ip(h), &bytes);
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
                tampered = true;
                let dest = (h + 1) % HOSTS;
                hosts[dest].ep.handle_datagram(now, ip(h), &bytes);
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
                    for (i, host) in hosts.iter_mut().enumerate() {
                        service(i, host, now, &mut buf);
                    }
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
        // Let every endpoint run its timers, then collect its output and events.
        for (i, host) in hosts.iter_mut().enumerate() {
            for ev in service(i, host, now, &mut buf) {
                match ev {
                    Event::Request {
                        port,
                        id,
                        peer,
                        data,
                    } => {
                        stats.requests += 1;
                        host.requests.push((port, peer, id));
                        host.held.push(data);
                    }
                    Event::Response { id, data, .. } => {
                        stats.responses += 1;
                        let n = seen_responses.entry((i, id.0)).or_default();
                        *n += 1;
                        if !tampered {
                            assert_eq!(*n, 1, "response for {id} delivered twice");
                            let want = replies.get(&(i, id.0)).expect("response nobody sent");
                            assert!(data == *want, "response for {id} differs from the reply");
                        }
                        host.held.push(data);
                    }
                    Event::Failed { .. } => stats.failures += 1,
                }
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
    stats.steps = steps;
    stats
}

/// Run a host's due timer, move its packets to its outbox, and return its events.
fn service(i: usize, host: &mut Host, now: Time, buf: &mut [u8]) -> Vec<Event> {
    if host.ep.poll_timeout().is_some_and(|t| t <= now) {
        host.ep.handle_timeout(now);
    }
    let mut budget = 100_000;
    while let Some(t) = host.ep.poll_transmit(now, buf) {
        let dest = (0..HOSTS).find(|&d| ip(d) == t.dest.ip()).unwrap_or(i);
        host.outbox.push((dest, buf[..t.len].to_vec()));
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
