//! The chaos workload: every host is client and server, RPCs go between random hosts over
//! a faulty network, and every byte is checked.

use crate::check::{CheckReport, Checker};
use crate::net::{
    host_index, host_ip, App, Harness, HarnessConfig, Input, NetConfig, NetStats, RunStatus,
};
use crate::payload::{self, mix, request_seed, response_seed, tag_of, TAG_LEN};
use crate::sizes::Sizes;
use homa_core::{Config, DropReason, Endpoint, Event, MessageBuf, RpcError, RpcId, Time, Transmit};
use homa_wire::PacketType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

/// A reply waiting for outgoing space: (port, peer, id, response).
type PendingReply = (u16, SocketAddr, RpcId, Vec<u8>);

/// The port every host serves requests on.
pub const SERVER_PORT: u16 = 99;
/// Simulated time between progress reports (and end-of-run checks).
const STEP_MS: u64 = 20;

/// A chaos run: what to send, over which faults.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// RPCs to issue in total.
    pub rpcs: u64,
    /// Hosts; each is a client and a server.
    pub endpoints: usize,
    /// Request lengths (responses draw from the same distribution, deterministically per
    /// request), up to the endpoints' `max_message_length`. Lengths below 8 bytes become 8:
    /// every message carries its RPC's tag.
    pub size: Sizes,
    /// Packet loss probability.
    pub loss: f64,
    /// Packet duplication probability.
    pub dup: f64,
    /// Probability a packet is delayed so that later ones overtake it.
    pub reorder: f64,
    /// Probability a packet is damaged (and dropped by the UDP checksum).
    pub corrupt: f64,
    /// Probability of a junk datagram beside a packet (delivered to the parser).
    pub garbage: f64,
    /// Seed of everything.
    pub seed: u64,
    /// Kill host 0 at this time: RPCs to it must then fail with a timeout.
    pub kill_server_at_ms: Option<u64>,
    /// Most outstanding RPCs per client.
    pub concurrency: usize,
    /// One-way link latency, nanoseconds.
    pub latency_ns: u64,
    /// Link rate, megabits per second.
    pub link_mbps: u64,
    /// Largest extra delay of a reordered packet, nanoseconds.
    pub reorder_max_ns: u64,
    /// Configuration of every endpoint.
    pub endpoint: Config,
    /// Check the grant invariants of [`crate::check`] at every step (slow; not with kill).
    pub check_invariants: bool,
    /// Give up after this much simulated time.
    pub time_limit_ms: u64,
    /// Give up when no RPC completed or failed for this much simulated time.
    pub stall_limit_ms: u64,
    /// Fraction of the messages sent as one-way messages (`Endpoint::send_message`)
    /// rather than as RPC requests. Every host's server socket takes one-way messages,
    /// except the last [`one_way_refusers`](Self::one_way_refusers) hosts': one-way
    /// messages to those must fail with `RpcError::NotAccepted` and never arrive.
    pub one_way: f64,
    /// Hosts (the last ones) whose server socket does not take one-way messages.
    pub one_way_refusers: usize,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        let net = NetConfig::default();
        ChaosConfig {
            rpcs: 1_000,
            endpoints: 8,
            size: Sizes::Fixed(100),
            loss: 0.0,
            dup: 0.0,
            reorder: 0.0,
            corrupt: 0.0,
            garbage: 0.0,
            seed: 1,
            kill_server_at_ms: None,
            concurrency: 64,
            latency_ns: net.latency_ns,
            link_mbps: net.link_mbps,
            reorder_max_ns: net.reorder_max_ns,
            endpoint: Config::default(),
            check_invariants: false,
            time_limit_ms: 3_600_000,
            stall_limit_ms: 5_000,
            one_way: 0.0,
            one_way_refusers: 0,
        }
    }
}

/// The headline numbers: the JSON object `homa chaos` prints last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChaosResult {
    /// RPCs issued.
    pub rpcs: u64,
    /// RPCs whose response arrived and matched byte for byte.
    pub completed: u64,
    /// RPCs that failed (`Event::Failed`).
    pub failed: u64,
    /// Issued RPCs that neither completed nor failed by the end of the run.
    pub lost: u64,
    /// RPCs issued by a killed host, outstanding when it died (they die with it; not
    /// counted as lost). `completed + failed + lost + abandoned = rpcs`.
    pub abandoned: u64,
    /// Requests handed to a server application more than once.
    pub duplicate_executions: u64,
    /// Wrong bytes: a request or response that did not match, a response without an
    /// execution, or an event for an RPC not outstanding.
    pub corrupted: u64,
    /// Simulated time of the run, milliseconds.
    pub sim_time_ms: u64,
    /// Wall-clock time of the run, milliseconds.
    pub wall_ms: u64,
}

/// What happened around the killed server.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KillReport {
    /// The killed host.
    pub host: usize,
    /// When, milliseconds.
    pub at_ms: u64,
    /// RPCs to it that were outstanding at the kill or sent later.
    pub rpcs_to_killed: u64,
    /// Of those, completed anyway (the response was already on its way).
    pub completed: u64,
    /// Of those, failed with `Timeout`.
    pub timed_out: u64,
    /// Longest time from the kill (or the send, if later) to the failure, milliseconds.
    pub max_failure_latency_ms: f64,
    /// The allowed latency: `timeout_ticks` ticks plus 10%, milliseconds.
    pub bound_ms: f64,
    /// RPCs to it that failed late, failed with another error, or never ended.
    pub violations: u64,
}

/// Engine counters summed over all endpoints (killed ones as they were at death).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EngineTotals {
    /// Packets sent, by type.
    pub packets_sent: BTreeMap<&'static str, u64>,
    /// DATA packets retransmitted after RESENDs.
    pub retransmitted_packets: u64,
    /// RPCs timed out (client failures and server discards).
    pub timeouts: u64,
    /// Client RPCs restarted after RPC_UNKNOWN.
    pub restarts: u64,
    /// Packets dropped, by reason.
    pub drops: BTreeMap<&'static str, u64>,
    /// Requests delivered to server sockets.
    pub requests_delivered: u64,
    /// Responses delivered to clients.
    pub responses_delivered: u64,
}

impl EngineTotals {
    fn add(&mut self, ep: &Endpoint) {
        let m = ep.metrics();
        for t in PacketType::ALL {
            *self.packets_sent.entry(t.name()).or_default() += m.sent(t);
        }
        for r in DropReason::ALL {
            *self.drops.entry(r.name()).or_default() += m.dropped(r);
        }
        self.retransmitted_packets += m.retransmitted_packets;
        self.timeouts += m.timeouts;
        self.restarts += m.restarts;
        self.requests_delivered += m.requests_delivered;
        self.responses_delivered += m.responses_delivered;
    }
}

/// What became of the one-way messages of a chaos run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OneWayReport {
    /// One-way messages issued (they count among `ChaosResult::rpcs` too).
    pub sent: u64,
    /// Acknowledged to their sender after their receiver took them, bytes checked (they
    /// count among `ChaosResult::completed` too).
    pub delivered: u64,
    /// Sent to a host that does not take them, and failed with `NotAccepted` as they
    /// must (they count among `ChaosResult::failed` too).
    pub refused: u64,
    /// Wrong outcomes: taken by (or acknowledged by) a host that does not take one-way
    /// messages, acknowledged before the receiver took them, or failed with
    /// `NotAccepted` although the host takes them.
    pub violations: u64,
}

/// Everything a chaos run found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChaosReport {
    /// The headline numbers.
    pub result: ChaosResult,
    /// The seed (to reproduce the run).
    pub seed: u64,
    /// Why the run ended: "done", "stalled", "time_limit" or "idle".
    pub stopped: &'static str,
    /// Failures by error.
    pub failed_by_error: BTreeMap<&'static str, u64>,
    /// Failures of RPCs to hosts that were never killed (with a kill only those to the
    /// killed host are expected to fail).
    pub unexpected_failures: u64,
    /// Requests a server received that no client sent (junk that happened to parse).
    pub garbage_requests: u64,
    /// Replies the engine refused for a reason other than "would block" (the RPC would
    /// hang): always a bug.
    pub refused_replies: u64,
    /// The kill, if one was planned and happened before the run ended.
    pub kill: Option<KillReport>,
    /// The network.
    pub net: NetStats,
    /// The engines.
    pub engine: EngineTotals,
    /// Invariant checks, if enabled.
    pub check: Option<CheckReport>,
    /// The one-way messages.
    pub one_way: OneWayReport,
    /// Hash of the whole event trace: equal for equal runs.
    pub trace_hash: u64,
}

impl ChaosReport {
    /// True when nothing went wrong: nothing lost, executed twice or corrupted; no failure
    /// except the expected timeouts of RPCs to a killed host; no invariant violated.
    pub fn passed(&self) -> bool {
        let r = &self.result;
        r.lost == 0
            && r.duplicate_executions == 0
            && r.corrupted == 0
            && self.unexpected_failures == 0
            && self.refused_replies == 0
            && self.kill.as_ref().is_none_or(|k| k.violations == 0)
            && self.check.as_ref().is_none_or(|c| c.violations == 0)
            && self.one_way.violations == 0
    }
}

/// Where a run is, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// RPCs to issue in total.
    pub rpcs: u64,
    /// Issued so far.
    pub issued: u64,
    /// Completed so far.
    pub completed: u64,
    /// Failed so far.
    pub failed: u64,
    /// Simulated time, milliseconds.
    pub sim_ms: u64,
}

struct Rpc {
    client: u32,
    server: u32,
    id: RpcId,
    req_len: u32,
    sent_at: Time,
    one_way: bool,
}

struct Kill {
    host: usize,
    /// When it is planned, then when it happened.
    at: Time,
    /// It happened (a run may end first).
    done: bool,
    bound_ns: u64,
    report: KillReport,
    max_latency_ns: u64,
}

struct Chaos<'a> {
    cfg: &'a ChaosConfig,
    rng: ChaCha8Rng,
    n: usize,
    client_port: Vec<u16>,
    in_flight: Vec<u32>,
    alive: Vec<bool>,
    outstanding: FxHashMap<u64, Rpc>,
    issued: u64,
    executed: Vec<u64>,
    result: ChaosResult,
    failed_by_error: BTreeMap<&'static str, u64>,
    unexpected_failures: u64,
    refused_replies: u64,
    /// Per host: replies refused for want of outgoing space (would block), in order, to
    /// try again when space frees: (port, peer, id, response).
    pending_replies: Vec<std::collections::VecDeque<PendingReply>>,
    abandoned: u64,
    garbage_requests: u64,
    last_progress: Time,
    kill: Option<Kill>,
    checker: Option<Checker>,
    engine: EngineTotals,
    one_way: OneWayReport,
}

fn error_name(e: RpcError) -> &'static str {
    match e {
        RpcError::Timeout => "timeout",
        RpcError::NoSuchSocket => "no_such_socket",
        RpcError::Shutdown => "shutdown",
        RpcError::Aborted => "aborted",
        RpcError::NoBufferSpace => "no_buffer_space",
        RpcError::Unreachable(_) => "unreachable",
        RpcError::NotAccepted => "not_accepted",
        RpcError::RequestTooLong => "request_too_long",
        RpcError::RequestNeverFits => "request_never_fits",
        RpcError::ResponseTooLong => "response_too_long",
        RpcError::RequestLost => "request_lost",
    }
}

/// The tag at the start of a received message.
fn buf_tag(data: &MessageBuf) -> Option<u64> {
    data.chunks().next().and_then(tag_of)
}

/// True when `data` is exactly the message `payload::make(tag, seed, data.len())`.
fn matches(data: &MessageBuf, tag: u64, seed: u64) -> bool {
    if data.len() < TAG_LEN || buf_tag(data) != Some(tag) {
        return false;
    }
    match data.as_slice() {
        Some(bytes) => payload::verify_stream(seed, bytes),
        None => data.eq_bytes(&payload::make(tag, seed, data.len())),
    }
}

impl Chaos<'_> {
    fn response_len(&self, tag: u64, req_len: usize) -> usize {
        let u = (mix(tag ^ 0x5e5, req_len as u64) >> 11) as f64 / (1u64 << 53) as f64;
        let max = self.cfg.endpoint.max_message_length;
        (self.cfg.size.at_up_to(u, max) as usize).max(TAG_LEN)
    }

    fn executed(&self, tag: u64) -> bool {
        self.executed
            .get((tag / 64) as usize)
            .is_some_and(|w| w & (1 << (tag % 64)) != 0)
    }

    /// Mark `tag` executed; false if it already was.
    fn execute(&mut self, tag: u64) -> bool {
        let i = (tag / 64) as usize;
        if self.executed.len() <= i {
            self.executed.resize(i + 1, 0);
        }
        let bit = 1 << (tag % 64);
        let first = self.executed[i] & bit == 0;
        self.executed[i] |= bit;
        first
    }

    /// Does `host`'s server socket take one-way messages?
    fn takes_one_way(&self, host: usize) -> bool {
        host + self.cfg.one_way_refusers < self.n
    }

    /// Issue requests from `host` until it has `concurrency` outstanding.
    fn issue(&mut self, now: Time, host: usize, ep: &mut Endpoint) {
        while self.alive[host]
            && (self.in_flight[host] as usize) < self.cfg.concurrency
            && self.issued < self.cfg.rpcs
        {
            let tag = self.issued;
            let mut server = self.rng.gen_range(0..self.n - 1);
            if server >= host {
                server += 1;
            }
            let max = self.cfg.endpoint.max_message_length;
            let len = self.cfg.size.sample_up_to(&mut self.rng, max) as usize;
            let data = payload::make(tag, request_seed(tag), len);
            let req_len = data.len() as u32;
            let dest = SocketAddr::new(host_ip(server), SERVER_PORT);
            // (No draw at all without one-way messages: older runs replay unchanged.)
            let one_way = self.cfg.one_way > 0.0 && self.rng.gen_bool(self.cfg.one_way);
            let port = self.client_port[host];
            let sent = if one_way {
                ep.send_message(now, port, dest, data, tag, false)
            } else {
                ep.send_request(now, port, dest, data, tag, false)
            };
            match sent {
                Ok(id) => {
                    if let Some(c) = self.checker.as_mut() {
                        c.on_send(host, id);
                    }
                    self.issued += 1;
                    self.one_way.sent += one_way as u64;
                    self.in_flight[host] += 1;
                    if let Some(k) = self.kill.as_mut() {
                        if server == k.host && now >= k.at {
                            k.report.rpcs_to_killed += 1;
                        }
                    }
                    self.outstanding.insert(
                        tag,
                        Rpc {
                            client: host as u32,
                            server: server as u32,
                            id,
                            req_len,
                            sent_at: now,
                            one_way,
                        },
                    );
                }
                // Out of send buffer: the next completion on this host tries again.
                Err(homa_core::SendError::WouldBlock) => break,
                Err(e) => panic!(
                    "send_request failed unexpectedly: {e} (seed {})",
                    self.cfg.seed
                ),
            }
        }
    }

    fn on_request(
        &mut self,
        now: Time,
        host: usize,
        ep: &mut Endpoint,
        (port, id, peer): (u16, RpcId, SocketAddr),
        data: MessageBuf,
    ) {
        let resp = match buf_tag(&data).filter(|&t| t < self.issued) {
            Some(tag) => {
                let rpc_ok = self.outstanding.get(&tag).is_none_or(|r| {
                    r.req_len as usize == data.len()
                        && host_index(peer.ip()) == Some(r.client as usize)
                });
                if !rpc_ok || !matches(&data, tag, request_seed(tag)) {
                    self.result.corrupted += 1;
                }
                if !self.execute(tag) {
                    self.result.duplicate_executions += 1;
                }
                let len = self.response_len(tag, data.len());
                payload::make(tag, response_seed(tag), len)
            }
            None => {
                self.garbage_requests += 1;
                vec![0; TAG_LEN]
            }
        };
        ep.release(data);
        // Out of outgoing space, the reply waits for some (a real server would too);
        // replies go in order. Any other error would hang the RPC for ever.
        let queue = &mut self.pending_replies[host];
        if !queue.is_empty() {
            return queue.push_back((port, peer, id, resp));
        }
        match ep.reply(now, port, peer, id, resp.clone()) {
            Ok(()) => {}
            Err(homa_core::ReplyError::WouldBlock) => queue.push_back((port, peer, id, resp)),
            Err(_) => self.refused_replies += 1,
        }
    }

    /// A one-way message arrived at `host`: check it and count its execution.
    fn on_message(&mut self, host: usize, ep: &mut Endpoint, peer: SocketAddr, data: MessageBuf) {
        if !self.takes_one_way(host) {
            self.one_way.violations += 1;
        }
        match buf_tag(&data).filter(|&t| t < self.issued) {
            Some(tag) => {
                let ok = self.outstanding.get(&tag).is_none_or(|r| {
                    r.one_way
                        && r.req_len as usize == data.len()
                        && host_index(peer.ip()) == Some(r.client as usize)
                });
                if !ok || !matches(&data, tag, request_seed(tag)) {
                    self.result.corrupted += 1;
                }
                if !self.execute(tag) {
                    self.result.duplicate_executions += 1;
                }
            }
            None => self.garbage_requests += 1,
        }
        ep.release(data);
    }

    fn finish_rpc(&mut self, now: Time, host: usize, ep: &mut Endpoint) {
        self.in_flight[host] -= 1;
        self.last_progress = now;
        self.issue(now, host, ep);
    }
}

impl App for Chaos<'_> {
    fn on_start(&mut self, now: Time, host: usize, ep: &mut Endpoint) {
        ep.bind(SERVER_PORT).expect("server port free");
        if self.takes_one_way(host) {
            ep.set_one_way(SERVER_PORT, true);
        }
        self.client_port[host] = ep.bind(0).expect("a client port");
        self.alive[host] = true;
        self.issue(now, host, ep);
    }

    fn on_event(&mut self, now: Time, host: usize, ep: &mut Endpoint, event: Event) {
        if let Some(c) = self.checker.as_mut() {
            c.on_event(host, &event);
        }
        match event {
            Event::Request {
                port,
                id,
                peer,
                data,
            } => self.on_request(now, host, ep, (port, id, peer), data),
            Event::Message { peer, data, .. } => self.on_message(host, ep, peer, data),
            Event::Delivered {
                id, cookie, peer, ..
            } => {
                let Some(r) = self.outstanding.remove(&cookie) else {
                    self.result.corrupted += 1;
                    return;
                };
                let ok = r.one_way
                    && r.id == id
                    && r.client as usize == host
                    && host_index(peer.ip()) == Some(r.server as usize);
                // Acknowledged: it must have been taken, by a host that takes them.
                if !ok || !self.executed(cookie) || !self.takes_one_way(r.server as usize) {
                    self.one_way.violations += 1;
                } else {
                    self.result.completed += 1;
                    self.one_way.delivered += 1;
                }
                if let Some(k) = self.kill.as_mut() {
                    if r.server as usize == k.host && now >= k.at {
                        k.report.completed += 1;
                    }
                }
                self.finish_rpc(now, host, ep);
            }
            Event::Response {
                id,
                cookie,
                peer,
                data,
                ..
            } => {
                let Some(r) = self.outstanding.remove(&cookie) else {
                    self.result.corrupted += 1;
                    ep.release(data);
                    return;
                };
                let ok = !r.one_way
                    && r.id == id
                    && r.client as usize == host
                    && host_index(peer.ip()) == Some(r.server as usize)
                    && data.len() == self.response_len(cookie, r.req_len as usize)
                    && matches(&data, cookie, response_seed(cookie))
                    && self.executed(cookie);
                if ok {
                    self.result.completed += 1;
                } else {
                    self.result.corrupted += 1;
                }
                if let Some(k) = self.kill.as_mut() {
                    if r.server as usize == k.host && now >= k.at {
                        k.report.completed += 1;
                    }
                }
                ep.release(data);
                self.finish_rpc(now, host, ep);
            }
            Event::Failed { cookie, error, .. } => {
                let Some(r) = self.outstanding.remove(&cookie) else {
                    self.result.corrupted += 1;
                    return;
                };
                self.result.failed += 1;
                *self.failed_by_error.entry(error_name(error)).or_default() += 1;
                let refuser = r.one_way && !self.takes_one_way(r.server as usize);
                if error == RpcError::NotAccepted {
                    if refuser {
                        self.one_way.refused += 1;
                    } else {
                        self.one_way.violations += 1;
                    }
                    return self.finish_rpc(now, host, ep);
                }
                match self.kill.as_mut() {
                    Some(k) if r.server as usize == k.host && now >= k.at => {
                        let latency = now.nanos_since(r.sent_at.max(k.at));
                        k.max_latency_ns = k.max_latency_ns.max(latency);
                        if error == RpcError::Timeout {
                            k.report.timed_out += 1;
                        }
                        if error != RpcError::Timeout || latency > k.bound_ns {
                            k.report.violations += 1;
                        }
                    }
                    _ => self.unexpected_failures += 1,
                }
                self.finish_rpc(now, host, ep);
            }
        }
    }

    fn poll_app(&mut self, now: Time, host: usize, ep: &mut Endpoint) -> bool {
        if let Some(c) = self.checker.as_mut() {
            c.sync(host, ep);
        }
        let mut sent = false;
        while let Some((port, peer, id, resp)) = self.pending_replies[host].pop_front() {
            match ep.reply(now, port, peer, id, resp.clone()) {
                Ok(()) => sent = true,
                Err(homa_core::ReplyError::WouldBlock) => {
                    self.pending_replies[host].push_front((port, peer, id, resp));
                    break;
                }
                // The RPC went away meanwhile (its client gave up): nothing to answer.
                Err(homa_core::ReplyError::UnknownRpc) => {}
                Err(_) => self.refused_replies += 1,
            }
        }
        sent
    }

    fn on_kill(&mut self, now: Time, host: usize, ep: &Endpoint) {
        self.engine.add(ep);
        self.pending_replies[host].clear();
        self.alive[host] = false;
        self.in_flight[host] = 0;
        let before = self.outstanding.len();
        self.outstanding.retain(|_, r| r.client as usize != host);
        self.abandoned += (before - self.outstanding.len()) as u64;
        if let Some(k) = self.kill.as_mut() {
            if k.host == host {
                k.at = now;
                k.done = true;
                k.report.rpcs_to_killed += self
                    .outstanding
                    .values()
                    .filter(|r| r.server as usize == host)
                    .count() as u64;
            }
        }
        if let Some(c) = self.checker.as_mut() {
            c.on_kill(host);
        }
    }

    fn on_input(&mut self, now: Time, host: usize, input: Input<'_>) {
        if let Some(c) = self.checker.as_mut() {
            c.on_input(now, host, input);
        }
    }

    fn on_transmit(&mut self, now: Time, host: usize, t: &Transmit, bytes: &[u8]) {
        if let Some(c) = self.checker.as_mut() {
            c.on_transmit(now, host, t, bytes);
        }
    }

    fn after_input(&mut self, now: Time, host: usize, ep: &Endpoint) {
        if let Some(c) = self.checker.as_mut() {
            c.after_input(now, host, ep);
        }
    }

    fn finished(&self) -> bool {
        self.issued >= self.cfg.rpcs && self.outstanding.is_empty()
    }
}

/// Run a chaos workload; `progress` is called every 20 ms of simulated time.
///
/// # Panics
/// With fewer than two endpoints, or an invalid endpoint configuration.
pub fn run_chaos(cfg: &ChaosConfig, progress: &mut dyn FnMut(&Progress)) -> ChaosReport {
    assert!(cfg.endpoints >= 2, "chaos needs at least two endpoints");
    let wall = Instant::now();
    let net = NetConfig {
        latency_ns: cfg.latency_ns,
        link_mbps: cfg.link_mbps,
        loss: cfg.loss,
        dup: cfg.dup,
        reorder: cfg.reorder,
        reorder_max_ns: cfg.reorder_max_ns,
        corrupt: cfg.corrupt,
        garbage: cfg.garbage,
    };
    let mut harness = Harness::new(HarnessConfig {
        hosts: cfg.endpoints,
        net,
        endpoint: cfg.endpoint.clone(),
        seed: cfg.seed,
    });
    let n = cfg.endpoints;
    let kill = cfg.kill_server_at_ms.map(|ms| {
        let at = Time::from_millis(ms);
        harness.schedule_kill(0, at);
        let bound_ns = cfg.endpoint.timeout_ticks as u64 * cfg.endpoint.tick_nanos * 11 / 10;
        Kill {
            host: 0,
            at,
            done: false,
            bound_ns,
            report: KillReport {
                host: 0,
                at_ms: ms,
                bound_ms: bound_ns as f64 / 1e6,
                ..KillReport::default()
            },
            max_latency_ns: 0,
        }
    });
    let mut app = Chaos {
        cfg,
        rng: ChaCha8Rng::seed_from_u64(mix(cfg.seed, 0xa99)),
        n,
        client_port: vec![0; n],
        in_flight: vec![0; n],
        alive: vec![false; n],
        outstanding: FxHashMap::default(),
        issued: 0,
        executed: Vec::new(),
        result: ChaosResult::default(),
        failed_by_error: BTreeMap::new(),
        unexpected_failures: 0,
        refused_replies: 0,
        pending_replies: vec![Default::default(); n],
        abandoned: 0,
        garbage_requests: 0,
        last_progress: Time::ZERO,
        kill,
        checker: cfg
            .check_invariants
            .then(|| Checker::new(&cfg.endpoint, n, &[SERVER_PORT])),
        engine: EngineTotals::default(),
        one_way: OneWayReport::default(),
    };
    let step = STEP_MS * 1_000_000;
    let limit = Time::from_millis(cfg.time_limit_ms);
    let stall = cfg.stall_limit_ms * 1_000_000;
    let stopped = loop {
        let until = Time(harness.now().as_nanos() / step * step + step).min(limit);
        let status = harness.run(&mut app, until);
        progress(&Progress {
            rpcs: cfg.rpcs,
            issued: app.issued,
            completed: app.result.completed,
            failed: app.result.failed,
            sim_ms: harness.now().as_nanos() / 1_000_000,
        });
        match status {
            RunStatus::Finished => break "done",
            RunStatus::Idle => break "idle",
            RunStatus::Until if harness.now() >= limit => break "time_limit",
            RunStatus::Until if harness.now().nanos_since(app.last_progress) > stall => {
                break "stalled"
            }
            RunStatus::Until => {}
        }
    };
    for h in 0..n {
        if let Some(ep) = harness.endpoint(h) {
            app.engine.add(ep);
        }
    }
    let mut result = app.result.clone();
    result.rpcs = app.issued;
    result.lost = app.outstanding.len() as u64;
    result.abandoned = app.abandoned;
    result.sim_time_ms = harness.now().as_nanos() / 1_000_000;
    result.wall_ms = wall.elapsed().as_millis() as u64;
    // A kill planned after the run ended did not happen: there is nothing to report.
    let kill = app.kill.filter(|k| k.done).map(|mut k| {
        let hung = app
            .outstanding
            .values()
            .filter(|r| r.server as usize == k.host)
            .count() as u64;
        k.report.violations += hung;
        k.report.max_failure_latency_ms = k.max_latency_ns as f64 / 1e6;
        k.report
    });
    ChaosReport {
        result,
        seed: cfg.seed,
        stopped,
        failed_by_error: app.failed_by_error,
        unexpected_failures: app.unexpected_failures,
        refused_replies: app.refused_replies,
        garbage_requests: app.garbage_requests,
        kill,
        net: harness.stats().clone(),
        engine: app.engine,
        check: app.checker.map(|c| c.report().clone()),
        one_way: app.one_way,
        trace_hash: harness.trace_hash(),
    }
}
