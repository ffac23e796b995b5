//! Protocol invariants checked from outside the engine, by watching the wire.
//!
//! The [`Checker`] keeps, for every receiving host, a mirror of the grant scheduler's
//! inputs built only from packets: each incoming message's length, the distinct bytes
//! delivered to the host, the highest `incoming` its sender announced and the highest
//! offset the host granted. From that it checks, at every step:
//!
//! 1. **granted <= length**: no GRANT offset exceeds the message length.
//! 2. **SRPT with bounded overcommit**: a GRANT that raises a message's offset goes either
//!    to one of the `max_overcommit` best grantable messages (fewest bytes remaining, then
//!    oldest; at most one per sending peer), or to the oldest grantable message (the FIFO
//!    share). A request is as old as its first packet here; a response as old as its RPC
//!    (the application tells the checker when it starts one, [`Checker::on_send`]). So at most `max_overcommit` messages are granted by SRPT at a time, plus one
//!    FIFO grant. The literal count "messages granted beyond their unscheduled bytes and
//!    not complete" is *not* bounded by `max_overcommit` in Homa: a message preempted by
//!    shorter ones keeps the grant it already had until those bytes arrive (or until a
//!    RESEND recovers them if lost), so the rank at grant time is the checkable form.
//! 3. **max_incoming**: the engine's `total_incoming` (granted-but-unreceived bytes, incl.
//!    unscheduled ones) stays within `max_incoming` plus, per live incoming message, its
//!    unscheduled bytes not yet received plus one packet (a sender rounds a grant up to a
//!    whole packet). The receiver cannot refuse unscheduled bytes; everything else it
//!    grants only into the room left under `max_incoming`.
//! 4. **accounting**: the engine's `total_incoming` equals the same sum computed from the
//!    wire.
//!
//! The mirror is exact when every packet that reaches an endpoint is also shown to the
//! checker and hosts are not killed (a killed host's half-received messages linger at its
//! peers until they time out, which the wire does not show).

use crate::net::{host_index, Input};
use homa_core::{Config, Endpoint, Event, RpcId, Time, Transmit};
use homa_wire::{Body, Repr};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

/// Violations kept with their description (the rest are only counted).
const MAX_KEPT: usize = 20;

#[derive(Debug, Clone, Default)]
struct Ranges(Vec<(u32, u32)>);

impl Ranges {
    /// Add `[s, e)`; returns the bytes that were new.
    fn insert(&mut self, s: u32, e: u32) -> u32 {
        if s >= e {
            return 0;
        }
        let i = self.0.partition_point(|&(_, re)| re < s);
        let (mut ns, mut ne, mut covered) = (s, e, 0);
        let mut j = i;
        while j < self.0.len() && self.0[j].0 <= e {
            let (rs, re) = self.0[j];
            covered += re.min(e).saturating_sub(rs.max(s));
            ns = ns.min(rs);
            ne = ne.max(re);
            j += 1;
        }
        self.0.splice(i..j, [(ns, ne)]);
        (e - s) - covered
    }
    /// Bytes of `[0, limit)` covered.
    fn covered_below(&self, limit: u32) -> u32 {
        self.0
            .iter()
            .take_while(|&&(s, _)| s < limit)
            .map(|&(s, e)| e.min(limit) - s)
            .sum()
    }
}

#[derive(Debug, Clone)]
struct Msg {
    length: u32,
    received: u32,
    ranges: Ranges,
    incoming: u32,
    granted: u32,
    birth: u64,
}

impl Msg {
    fn expected_end(&self) -> u32 {
        self.incoming.max(self.granted).min(self.length)
    }
    fn grantable(&self) -> bool {
        self.received < self.length && self.expected_end() < self.length
    }
    fn outstanding(&self) -> u32 {
        self.expected_end().saturating_sub(self.received)
    }
}

/// (sending peer host, the sender's `sender_id` on its DATA packets).
type Key = (u32, u64);

#[derive(Debug, Default)]
struct HostMirror {
    msgs: FxHashMap<Key, Msg>,
    /// Messages complete (or abandoned by the client): later DATA for them is ignored,
    /// as the engine ignores it.
    done: FxHashSet<Key>,
    /// Live client RPC ids of this host (learned from the DATA it sends).
    client_ids: FxHashSet<u64>,
    /// Birth of each live client RPC of this host: its response's rank among equals.
    rpc_births: FxHashMap<u64, u64>,
    next_birth: u64,
    /// Messages the scheduler could grant to just before the current input (an input can
    /// run the scheduler before its own DATA is applied: a piggybacked ACK frees an RPC
    /// first).
    allowed_before: Option<FxHashSet<Key>>,
    /// The same just after the input, before any GRANT it caused (computed at the first).
    allowed_after: Option<FxHashSet<Key>>,
}

/// The messages a GRANT may raise now: the best `max_overcommit` peer heads and the oldest.
fn allowed_set(msgs: &FxHashMap<Key, Msg>, max_overcommit: usize) -> FxHashSet<Key> {
    let mut heads: FxHashMap<u32, (u32, u64, Key)> = FxHashMap::default();
    let mut oldest: Option<(u64, Key)> = None;
    for (&k, m) in msgs {
        if !m.grantable() {
            continue;
        }
        let rank = (m.length - m.received, m.birth, k);
        heads
            .entry(k.0)
            .and_modify(|h| *h = (*h).min(rank))
            .or_insert(rank);
        if oldest.is_none_or(|(b, _)| m.birth < b) {
            oldest = Some((m.birth, k));
        }
    }
    let mut ranked: Vec<_> = heads.into_values().collect();
    ranked.sort_unstable();
    let mut allowed: FxHashSet<Key> = ranked
        .iter()
        .take(max_overcommit)
        .map(|&(_, _, k)| k)
        .collect();
    allowed.extend(oldest.map(|(_, k)| k));
    allowed
}

/// What the checker saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Invariant violations (all kinds).
    pub violations: u64,
    /// The first few, described.
    pub first_violations: Vec<String>,
    /// GRANTs that raised an offset, each checked for rank.
    pub grants_checked: u64,
    /// Steps at which `total_incoming` was checked.
    pub incoming_checks: u64,
    /// Largest `total_incoming` seen at any endpoint.
    pub max_total_incoming: u64,
    /// Largest number of messages with granted-but-unreceived bytes beyond their
    /// unscheduled part at one receiver (informational: preemption may exceed
    /// `max_overcommit`, see the module docs).
    pub max_granted_outstanding: u64,
}

/// Watches every packet and event of a [`Harness`](crate::Harness) run and checks the
/// grant invariants (module docs).
#[derive(Debug)]
pub struct Checker {
    max_incoming: u64,
    max_overcommit: usize,
    seg: u32,
    unsched: u32,
    max_message_length: u32,
    server_ports: Vec<u16>,
    hosts: Vec<HostMirror>,
    report: CheckReport,
}

impl Checker {
    /// A checker for `hosts` endpoints running `config`, with servers on `server_ports`.
    pub fn new(config: &Config, hosts: usize, server_ports: &[u16]) -> Checker {
        let seg = config.max_segment();
        Checker {
            max_incoming: config.max_incoming as u64,
            max_overcommit: config.max_overcommit as usize,
            seg,
            unsched: config.unsched_bytes.div_ceil(seg).saturating_mul(seg),
            max_message_length: config.max_message_length,
            server_ports: server_ports.to_vec(),
            hosts: (0..hosts).map(|_| HostMirror::default()).collect(),
            report: CheckReport::default(),
        }
    }

    /// What was found so far.
    pub fn report(&self) -> &CheckReport {
        &self.report
    }

    fn violation(&mut self, now: Time, host: usize, what: String) {
        self.report.violations += 1;
        if self.report.first_violations.len() < MAX_KEPT {
            self.report
                .first_violations
                .push(format!("t={}ns host {host}: {what}", now.as_nanos()));
        }
    }

    /// An input is about to reach `host`: mirror the DATA it carries.
    pub fn on_input(&mut self, _now: Time, host: usize, input: Input<'_>) {
        let overcommit = self.max_overcommit;
        let mirror = &mut self.hosts[host];
        mirror.allowed_before = None;
        mirror.allowed_after = None;
        let Input::Datagram { from, bytes, .. } = input else {
            return;
        };
        let Ok((repr, payload)) = Repr::parse(bytes, self.max_message_length) else {
            return;
        };
        if matches!(repr.body, Body::Data(_) | Body::RpcUnknown) {
            mirror.allowed_before = Some(allowed_set(&mirror.msgs, overcommit));
        }
        let key = (from as u32, repr.common.sender_id);
        let d = match repr.body {
            Body::Data(d) => d,
            Body::RpcUnknown => {
                // A server discards the RPC (and what it was receiving of the request); new
                // DATA would start the message afresh. A client restarts its request only
                // while no response byte has arrived, so it has nothing to forget.
                if key.1 & 1 == 0 {
                    mirror.msgs.remove(&key);
                }
                return;
            }
            _ => return,
        };
        if mirror.done.contains(&key) {
            return;
        }
        let accepted = if key.1 & 1 == 0 {
            self.server_ports.contains(&repr.common.dport)
        } else {
            mirror.client_ids.contains(&(key.1 ^ 1))
        };
        if !accepted {
            return;
        }
        // A response is as old as its RPC (the engine ranks it so); a request as its
        // first packet.
        let birth = match mirror.rpc_births.get(&(key.1 ^ 1)) {
            Some(&b) if key.1 & 1 == 1 => b,
            _ => mirror.next_birth,
        };
        let m = mirror.msgs.entry(key).or_insert_with(|| Msg {
            length: d.message_length,
            received: 0,
            ranges: Ranges::default(),
            incoming: 0,
            granted: 0,
            birth,
        });
        if m.birth == birth && birth == mirror.next_birth {
            mirror.next_birth += 1;
        }
        if m.length != d.message_length {
            return;
        }
        m.incoming = m.incoming.max(d.incoming.min(m.length));
        m.received += m.ranges.insert(d.offset, d.offset + payload.len() as u32);
        if m.received >= m.length {
            mirror.msgs.remove(&key);
            mirror.done.insert(key);
        }
    }

    /// `host` transmitted a packet: learn its client RPCs, check its GRANTs.
    pub fn on_transmit(&mut self, now: Time, host: usize, t: &Transmit, bytes: &[u8]) {
        let repr = match Repr::parse(bytes, self.max_message_length) {
            Ok((r, _)) => r,
            Err(e) => {
                return self.violation(now, host, format!("engine sent an unparseable packet: {e}"))
            }
        };
        let Some(peer) = host_index(t.dest.ip()) else {
            return;
        };
        match repr.body {
            Body::Data(_) if repr.common.sender_id & 1 == 0 => {
                self.hosts[host].client_ids.insert(repr.common.sender_id);
            }
            Body::Grant(g) => self.check_grant(now, host, peer, repr.common.sender_id, g.offset),
            Body::RpcUnknown if repr.common.sender_id & 1 == 1 => {
                // A server says it has no RPC for this request: it gave up on it (its
                // client went silent for timeout_ticks) and forgot what it had received.
                // The client will start it afresh.
                self.hosts[host]
                    .msgs
                    .remove(&(peer as u32, repr.common.sender_id ^ 1));
            }
            _ => {}
        }
    }

    fn check_grant(&mut self, now: Time, host: usize, peer: usize, sender_id: u64, offset: u32) {
        let key = (peer as u32, sender_id ^ 1);
        let overcommit = self.max_overcommit;
        let mirror = &mut self.hosts[host];
        let Some(m) = mirror.msgs.get(&key) else {
            if !mirror.done.contains(&key) {
                self.violation(
                    now,
                    host,
                    format!("GRANT for a message never received {key:?}"),
                );
            }
            return;
        };
        let (length, granted) = (m.length, m.granted);
        if offset > length {
            let what = format!("GRANT offset {offset} > message length {length} for {key:?}");
            self.violation(now, host, what);
        }
        if offset <= granted {
            return; // a repeat (keepalive), not a new grant
        }
        self.report.grants_checked += 1;
        let mirror = &mut self.hosts[host];
        let msgs = &mirror.msgs;
        let after = mirror
            .allowed_after
            .get_or_insert_with(|| allowed_set(msgs, overcommit));
        let ok = after.contains(&key)
            || mirror
                .allowed_before
                .as_ref()
                .is_some_and(|b| b.contains(&key))
            || allowed_set(msgs, overcommit).contains(&key);
        if !ok {
            let mut ranked: Vec<_> = mirror
                .msgs
                .iter()
                .filter(|(_, m)| m.grantable())
                .map(|(k, m)| (m.length - m.received, m.birth, *k))
                .collect();
            ranked.sort_unstable();
            let m = &mirror.msgs[&key];
            let what = format!(
                "GRANT to {offset} for {key:?} (remaining {}, birth {}) outside the top \
                 {overcommit} peer heads and not the oldest; grantable: {:?}",
                m.length - m.received,
                m.birth,
                ranked
            );
            self.violation(now, host, what);
        }
        let mirror = &mut self.hosts[host];
        if let Some(m) = mirror.msgs.get_mut(&key) {
            m.granted = offset;
        }
        let unsched = self.unsched;
        let active = mirror
            .msgs
            .values()
            .filter(|m| m.granted > unsched.min(m.length) && m.granted > m.received)
            .count() as u64;
        self.report.max_granted_outstanding = self.report.max_granted_outstanding.max(active);
    }

    /// The app at `host` started client RPC `id` (call right after `send_request`): its
    /// response will rank as old as it.
    pub fn on_send(&mut self, host: usize, id: RpcId) {
        let mirror = &mut self.hosts[host];
        mirror.rpc_births.insert(id.0, mirror.next_birth);
        mirror.next_birth += 1;
    }

    /// The app saw `ev` at `host`: a client RPC ended.
    pub fn on_event(&mut self, host: usize, ev: &Event) {
        let (id, peer) = match ev {
            Event::Response { id, peer, .. }
            | Event::Delivered { id, peer, .. }
            | Event::Failed { id, peer, .. } => (id, peer),
            Event::Request { .. } | Event::Message { .. } => return,
        };
        let mirror = &mut self.hosts[host];
        mirror.client_ids.remove(&id.0);
        mirror.rpc_births.remove(&id.0);
        if let Some(p) = host_index(peer.ip()) {
            let key = (p as u32, id.0 | 1);
            mirror.msgs.remove(&key);
            mirror.done.insert(key);
        }
    }

    /// Forget the requests `host`'s engine no longer has. A server drops a request still
    /// arriving whose client went silent for timeout_ticks without a packet to say so
    /// (the client learns it from its next RESEND); the mirror must drop it too, before
    /// the grants that follow are checked. Call after a timer and before its packets.
    pub fn sync(&mut self, host: usize, ep: &Endpoint) {
        let live: std::collections::HashSet<(u32, u64)> = self
            .server_ports
            .iter()
            .flat_map(|&port| ep.rpcs(port))
            .filter_map(|i| Some((host_index(i.peer.ip())? as u32, i.id.client_id())))
            .collect();
        self.hosts[host]
            .msgs
            .retain(|&(peer, id), _| id & 1 == 1 || live.contains(&(peer, id)));
    }

    /// `host` finished processing an input: check `total_incoming`.
    pub fn after_input(&mut self, now: Time, host: usize, ep: &Endpoint) {
        self.hosts[host].allowed_before = None;
        self.hosts[host].allowed_after = None;
        self.sync(host, ep);
        let total = ep.metrics().total_incoming;
        self.report.incoming_checks += 1;
        self.report.max_total_incoming = self.report.max_total_incoming.max(total);
        let mirror = &self.hosts[host];
        let (seg, unsched) = (self.seg as u64, self.unsched);
        let mut wire_total = 0u64;
        let mut allowance = 0u64;
        for m in mirror.msgs.values() {
            wire_total += m.outstanding() as u64;
            let u = unsched.min(m.length);
            allowance += (u - m.ranges.covered_below(u)) as u64 + seg;
        }
        if total > self.max_incoming + allowance {
            let what = format!(
                "total_incoming {total} > max_incoming {} + unscheduled allowance {allowance} \
                 ({} live incoming messages)",
                self.max_incoming,
                mirror.msgs.len()
            );
            self.violation(now, host, what);
        }
        if total != wire_total {
            let what = format!(
                "total_incoming {total} differs from the granted-but-unreceived bytes seen on \
                 the wire {wire_total}"
            );
            self.violation(now, host, what);
        }
    }

    /// `host` was killed: forget what it was receiving.
    pub fn on_kill(&mut self, host: usize) {
        self.hosts[host] = HostMirror::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_count_new_bytes() {
        let mut r = Ranges::default();
        assert_eq!(r.insert(10, 20), 10);
        assert_eq!(r.insert(0, 5), 5);
        assert_eq!(r.insert(0, 30), 15);
        assert_eq!(r.covered_below(25), 25);
        assert_eq!(r.insert(40, 50), 10);
        assert_eq!(r.covered_below(45), 35);
    }
}
