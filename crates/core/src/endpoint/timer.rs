//! The clock: timer ticks, each RPC's silence, RESENDs and NEED_ACKs when they fall due
//! (limited per peer), timeouts, and the sweep of client histories.

use super::Endpoint;
use crate::error::RpcError;
use crate::rpc::{InMsg, OutMsg, State};
use crate::time::Time;
use homa_wire::{Body, Repr, Resend};

/// Most RESENDs for bytes known to be missing that a timer tick sends to one peer (see
/// `Endpoint::limit_per_peer`).
const RESENDS_PER_PEER: usize = 8;
/// Most RESENDs that only ask whether anything is coming (client RPCs that have
/// received nothing of their response, and messages waiting for grants) a timer tick
/// sends to one peer: a budget of their own, so that neither kind starves the other.
/// Under the peer's own budget for answering RPCs it does not have
/// (`RPC_UNKNOWNS_PER_SOURCE`), so that a question that goes is answered.
const PROBES_PER_PEER: usize = 8;
/// Most NEED_ACKs a timer tick sends to one peer.
const NEED_ACKS_PER_PEER: usize = 2;

/// What a request to a peer asks for, for `Endpoint::limit_per_peer`: each kind has its
/// own budget per peer and tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Ask {
    /// A RESEND for bytes known to be missing.
    Missing,
    /// A RESEND that asks for anything (nothing has arrived yet).
    Probe,
    NeedAck,
}
/// A live peer's RPC that hears nothing for this many times `timeout_ticks` fails all
/// the same (or is discarded): the peer may be answering others while it ignores this
/// one for good (a request it refuses silently as already executed, a closed port).
const LIVE_PEER_PATIENCE: u32 = 10;
/// Timeouts a request stalled for our buffer space waits for a word from its client
/// while that client talks to us about others (see `probe_wait`, whose longest wait,
/// two timeouts, this covers with room for a lost question).
const STALLED_PATIENCE: u32 = 4;

/// BUSY answers in a row past which the wait before a RESEND doubles no more (2^8 times
/// `resend_ticks` is past any sensible `resend_backoff_max_ticks`).
pub(super) const MAX_BUSY_STREAK: u8 = 8;

/// Silent ticks before an RPC's first RESEND: `resend_ticks`, doubled for each BUSY the
/// peer answered in a row, up to `backoff_max` (0: never doubled). Never below
/// `resend_ticks`.
pub(super) fn first_resend(resend_ticks: u32, backoff_max: u32, busy_streak: u8) -> u32 {
    if backoff_max == 0 || busy_streak == 0 {
        return resend_ticks;
    }
    let doubled = resend_ticks.saturating_mul(1 << busy_streak.min(MAX_BUSY_STREAK));
    doubled.min(backoff_max).max(resend_ticks)
}

/// Ticks of silence before a message waiting for its peer's grants asks whether the peer
/// still holds it, when the peer has answered such questions `busy_streak` times in a row
/// with BUSY (a GRANT starts the count over): `timeout_ticks / 2`; with backoff on
/// (`backoff_max` > 0) and the peer `heard` from within `timeout_ticks / 2`, twice that
/// until three BUSY answers and four times after.
///
/// The question finds out whether the peer still holds the RPC (two BUSY answers say it
/// did; it may have restarted since) and keeps the peer heard from: a peer silent for
/// `timeout_ticks` is taken for dead and our RPCs with it fail. The second needs one
/// answer per peer, not one per RPC, so while the peer talks (other RPCs' BUSY answers,
/// grants, data) a long message that SRPT starves for long asks less and less often; once
/// the peer has been quiet for half a timeout, every waiting message asks at the first
/// pace again (at most `PROBES_PER_PEER` a tick). A peer that keeps such a message
/// stalled for buffer space waits `STALLED_PATIENCE` timeouts for our word while we talk.
/// Under overload on the testbed (W4 at 3 Gbps, behind), clients asking about starved
/// requests every `timeout_ticks / 2` sent 1.1-1.4 RESENDs per RPC, each answered BUSY:
/// a quarter of the run's packets. And with 256 requests of 1 MB outstanding over
/// loopback (`homa perf tput --window 256`) each waits 60-100 ms for its turn: asked
/// about once at `timeout_ticks / 2`, they drew 0.7-0.9 RESENDs and as many BUSYs per
/// RPC that window 64 did not (0.04), so the first question to a peer that talks waits a
/// whole timeout. Four times `timeout_ticks / 2` stays well under the
/// `LIVE_PEER_PATIENCE` timeouts after which a message silent that long fails even
/// though its peer is alive.
pub(super) fn probe_wait(timeout: u32, backoff_max: u32, busy_streak: u8, heard: bool) -> u32 {
    let half = timeout / 2;
    if backoff_max == 0 || !heard {
        return half;
    }
    half.saturating_mul(if busy_streak < 3 { 2 } else { 4 })
}

/// Whether `rpc`, a message waiting for grants from a peer that has not been `heard`
/// from for half a timeout, asks it this tick beyond its own pace: yes for the first
/// such RPC of each peer in a tick (`asked` holds the peers asked so far).
///
/// A peer silent for `timeout_ticks` is taken for dead, and the RPCs waiting on it fail
/// (a client's) or are dropped (a server's response, which its client then never gets).
/// A message waiting for grants asks nothing while its peer talks (`probe_wait`), so its
/// questions start only once the peer has been quiet for half a timeout; at its own pace
/// (every `resend_interval`) a live peer then had ten chances to be heard, and under
/// heavy loss a question and its answer both get through only some of the time: at 18%
/// loss each way all ten fail once in about 60,000 such waits, which a swarm met (case
/// 8296388999411548693: 4 hosts, 17.8% loss, a request starved of grants by SRPT with
/// one message granted at a time; its server got 3 of its client's last 10 questions
/// and all 3 BUSY answers were lost). One question a tick per quiet peer gives it half a
/// timeout of chances (50 by default: once in about 10^24 at that loss), for at most one
/// more packet a tick per peer that has gone quiet. (An RPC waiting for its peer's data
/// asks from `resend_ticks` of its own silence on, backed off to at most
/// `resend_backoff_max_ticks`, and its silence is never shorter than its peer's: with the
/// runtime's settings, at least 16 questions before the peer counts as gone.)
fn ask_silent_peer(asked: &mut Vec<usize>, rpc: &crate::rpc::Rpc, heard: bool) -> bool {
    if heard || asked.contains(&rpc.peer()) {
        return false;
    }
    asked.push(rpc.peer());
    true
}

/// Whether the peer of `rpc`, whose message waits to be granted, is known to hold it for
/// a reason only an event for this RPC changes: it has granted some of it, it is a
/// response (the peer sent the request), or (with resend backoff on) it answered BUSY
/// about it. Another RPC's BUSY from the same peer also counts, but only for a while
/// (`on_tick`).
fn known_for_itself(rpc: &crate::rpc::Rpc, backoff_max: u32) -> bool {
    rpc.msgout
        .as_ref()
        .is_some_and(|o| o.granted > o.unsched_end)
        || rpc.state == State::Outgoing
        || (backoff_max > 0 && rpc.busy_streak > 0)
}

/// A parked RPC visited again at `tick`: its silence counts the ticks it was passed over,
/// which it counted none of (a request held at `timeout_ticks` is held there again by
/// its tick).
fn count_passed_ticks(rpc: &mut crate::rpc::Rpc, tick: u64) {
    rpc.silent_ticks += (tick - 1 - rpc.parked_at) as u32;
}

/// Ticks between sweeps of the client histories (and the peer table).
pub(super) const HISTORY_SWEEP_TICKS: u64 = 16;
/// Ticks between the tick's visits of every RPC, parked ones too (see [`Parked`]).
/// Parked RPCs wait 100-400 ticks (by default) for their next question, and each full
/// visit reads every record again, a few cache misses each.
const FULL_VISIT_TICKS: u64 = 64;
/// Ticks between sweeps while no RPC is live and only client histories and the peer
/// table need the clock: they only age (a history is compacted a `dedup_horizon_ticks`
/// after its ids went, by default a second, and dropped after
/// `client_history_idle_ticks`, a minute; peers count in seconds), and a sweep that
/// comes up to this late only gives their memory back later. An idle endpoint wakes
/// about once a second until they are gone (a sweep every `HISTORY_SWEEP_TICKS`, 62 a
/// second for the minute a history is kept, cost 200 idle server sockets 10-13% of a
/// core). A multiple of `HISTORY_SWEEP_TICKS`.
const IDLE_SWEEP_TICKS: u64 = 1_024;

/// RPCs whose ticks only count while they wait for the other side to take them up
/// ("parked"), which the tick passes over without touching them.
///
/// On a server, a request that has sent every byte we granted counts its silence up to
/// `timeout_ticks` and then holds there (`waiting_on_us` below): from then on a tick only
/// asks whether its client has gone silent; and a request stalled for want of buffer
/// space only counts, towards a patience of `STALLED_PATIENCE` timeouts. On a client, a
/// request its server holds without granting it counts towards its next question
/// (`probe_wait`). A host that has fallen behind holds hundreds to thousands of them (an
/// open-loop client's backlog, and the server's copy of it), and reading each record at
/// every tick, a few cache misses each, made the tick the largest user-space function on
/// the testbed (W4 at 3 Gbps, 5% of the machine's samples), more the further behind it
/// fell. Parked RPCs are skipped by their key, without reading their records, until the
/// first tick that could do something for them; their silence is brought up to date
/// (`Rpc::parked_at`) when they are next visited.
///
/// Exact: an RPC leaves the set whenever anything its tick looks at changes (data or a
/// grant for it, its buffer, its delivery, its end: each place that restarts its
/// silence), and is visited at the first tick that could act for it (its question, the
/// end of its patience, its peer no longer counted as heard from: `due`). Every
/// `FULL_VISIT_TICKS` ticks, and when a parked RPC's client may have gone silent for
/// a timeout (the least `last_heard` seen when parking is that old), the tick visits
/// every RPC again, which also checks (debug builds) that each parked one still is what
/// parking assumed. Between those full visits, the RPCs due at a tick wait in that
/// tick's slot of a wheel of `FULL_VISIT_TICKS` slots.
pub(super) struct Parked {
    bits: Vec<u64>,
    count: usize,
    /// The least `last_heard` of a parked RPC's peer, when it was parked. Peers' times
    /// only grow, so while `tick - heard_floor < timeout_ticks` no parked RPC's peer is
    /// silent enough to be gone.
    heard_floor: u64,
    /// Parked RPCs due before the next full visit, by tick (slot `tick %
    /// FULL_VISIT_TICKS`). An entry may be stale (the RPC left the set since, or its
    /// key is another RPC's now): visiting an RPC early changes nothing.
    wheel: [Vec<u32>; FULL_VISIT_TICKS as usize],
}

impl Default for Parked {
    fn default() -> Self {
        Parked {
            bits: Vec::new(),
            count: 0,
            heard_floor: 0,
            wheel: std::array::from_fn(|_| Vec::new()),
        }
    }
}

impl Parked {
    /// Word `i` of the bitmap (keys `64 * i ..`).
    #[inline]
    fn word(&self, i: usize) -> u64 {
        self.bits.get(i).copied().unwrap_or(0)
    }

    /// Park `h` at `tick`, whose peer was last heard at tick `heard`, until tick `due` at
    /// the latest (`u64::MAX`: no deadline of its own).
    fn insert(&mut self, h: usize, tick: u64, heard: u64, due: u64) {
        if self.bits.len() <= h / 64 {
            self.bits.resize(h / 64 + 1, 0);
        }
        let (w, bit) = (&mut self.bits[h / 64], 1u64 << (h % 64));
        if *w & bit == 0 {
            *w |= bit;
            self.count += 1;
        }
        self.heard_floor = self.heard_floor.min(heard);
        // Due after the next full visit: that visit parks it again, nearer its time.
        let next_full = (tick / FULL_VISIT_TICKS + 1) * FULL_VISIT_TICKS;
        if due < next_full {
            self.wheel[(due % FULL_VISIT_TICKS) as usize].push(h as u32);
        }
    }

    /// The slot of RPCs due at `tick`, taken out (give it back with `put_slot`).
    fn take_slot(&mut self, tick: u64) -> Vec<u32> {
        std::mem::take(&mut self.wheel[(tick % FULL_VISIT_TICKS) as usize])
    }

    fn put_slot(&mut self, tick: u64, mut slot: Vec<u32>) {
        slot.clear();
        self.wheel[(tick % FULL_VISIT_TICKS) as usize] = slot;
    }

    /// `h` is no longer parked (something about it changed, or it ended); returns
    /// whether it was.
    #[inline]
    pub(super) fn remove(&mut self, h: usize) -> bool {
        if self.count == 0 {
            return false;
        }
        let Some(w) = self.bits.get_mut(h / 64) else {
            return false;
        };
        let bit = 1u64 << (h % 64);
        let was = *w & bit != 0;
        if was {
            *w &= !bit;
            self.count -= 1;
        }
        was
    }

    /// Whether `h` is parked.
    pub(super) fn contains(&self, h: usize) -> bool {
        self.word(h / 64) & (1 << (h % 64)) != 0
    }

    /// Before a tick that visits every RPC: each visited one leaves the set (and may be
    /// parked again), so the floors start over.
    fn start_visit_all(&mut self) {
        self.heard_floor = u64::MAX;
        self.wheel.iter_mut().for_each(Vec::clear);
        if self.count == 0 && self.bits.len() > 64 {
            // An endpoint that had thousands of RPCs gives the words back.
            self.bits = Vec::new();
        }
    }

    /// Whether this tick must visit parked RPCs too.
    fn visit_all(&self, tick: u64, timeout: u32) -> bool {
        self.count == 0
            || tick % FULL_VISIT_TICKS == 0
            || tick.saturating_sub(self.heard_floor) >= timeout as u64
    }

    /// Parked RPCs, by key (debug checks).
    #[cfg(debug_assertions)]
    fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter().enumerate().flat_map(|(i, &w)| {
            (0..64)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| i * 64 + b)
        })
    }
}

/// The timer's state.
pub(super) struct Clock {
    /// Ticks so far.
    pub(super) tick: u64,
    /// When the next tick is due; `None` while nothing needs ticks.
    pub(super) next_tick: Option<Time>,
    /// Ticks the next [`handle_timeout`](Endpoint::handle_timeout) stands for: 1 while
    /// RPCs live (their timers count every tick); up to the next idle sweep
    /// (`IDLE_SWEEP_TICKS`) while only histories and peers keep the clock running.
    pub(super) stride: u64,
    /// When the last tick ran (or the clock started): the grid later ticks fall on.
    pub(super) last_tick_at: Time,
    /// A tick's actions (reused).
    pub(super) actions: Vec<(usize, TickAction)>,
    /// A tick's RESENDs and NEED_ACKs ranked per peer (see `limit_per_peer`).
    pub(super) ranked: Vec<(usize, Ask, u32, usize)>,
    /// Peers a tick found gone (reused).
    pub(super) gone: Vec<usize>,
    /// Peers silent for half a timeout that a tick has asked something (reused; see
    /// `ask_silent_peer`).
    pub(super) asked: Vec<usize>,
    /// RPC_UNKNOWNs sent this tick, by destination (see `send_rpc_unknown`).
    pub(super) unknowns_sent: rustc_hash::FxHashMap<std::net::IpAddr, u32>,
    /// RPCs the tick passes over (see [`Parked`]).
    pub(super) parked: Parked,
}

impl Default for Clock {
    fn default() -> Clock {
        Clock {
            tick: 0,
            next_tick: None,
            stride: 1,
            last_tick_at: Time::ZERO,
            actions: Vec::new(),
            ranked: Vec::new(),
            gone: Vec::new(),
            asked: Vec::new(),
            unknowns_sent: Default::default(),
            parked: Parked {
                heard_floor: u64::MAX,
                ..Parked::default()
            },
        }
    }
}

/// What a tick does for one RPC.
#[derive(Debug, Clone, Copy)]
pub(super) enum TickAction {
    /// A RESEND or NEED_ACK over the per-peer limit (see `Endpoint::limit_per_peer`).
    Skipped,
    Resend,
    Timeout,
    NeedAck,
    Probe,
    Discard,
}

impl Endpoint {
    /// Run the timer: call when [`poll_timeout`](Self::poll_timeout)'s time has come.
    pub fn handle_timeout(&mut self, now: Time) {
        self.reclaim_dropped();
        let Some(t) = self.clock.next_tick else {
            return;
        };
        if now < t {
            return;
        }
        self.clock.tick += self.clock.stride;
        self.on_tick(now);
        if self.clock.next_tick.is_none() {
            return; // nothing needs the clock any more
        }
        // Live RPCs (and one-way questions and acks owed) count every tick. Histories
        // and peers alone only need a sweep now and then: skipping the ticks between
        // changes nothing but the wake-ups (1,000 a second otherwise, for as long as a
        // history is kept after its client's last RPC).
        // The first sweep after the last RPC went comes at once (every 16th tick), so
        // that histories of requests never executed (a flood's) go then, not a second
        // later.
        let sweep = |every: u64| every - self.clock.tick % every;
        self.clock.stride = if !self.rpcs.is_empty() || !self.one_way.is_idle() {
            1
        } else if self.clock.stride == 1 {
            sweep(HISTORY_SWEEP_TICKS)
        } else {
            sweep(IDLE_SWEEP_TICKS)
        };
        let tick = self.config.tick_nanos;
        // Called late by a tick or more: the grid restarts from now, the missed ticks
        // uncounted (a starved host must not time its peers out for its own delay).
        let base = if t.plus_nanos(tick) <= now { now } else { t };
        self.clock.last_tick_at = base;
        self.clock.next_tick = Some(base.plus_nanos(tick * self.clock.stride));
    }

    /// RPC `h`'s silence in ticks, as its next tick will find it: a parked RPC counts the
    /// ticks it was passed over when next visited (one held at `timeout_ticks` stays
    /// there).
    pub(super) fn silent_ticks(&self, h: usize) -> u32 {
        let rpc = &self.rpcs[h];
        let held =
            rpc.state == State::Incoming && rpc.msgin.as_ref().is_some_and(|m| m.data.is_some());
        if self.clock.parked.contains(h) && !held {
            rpc.silent_ticks + (self.clock.tick - rpc.parked_at) as u32
        } else {
            rpc.silent_ticks
        }
    }

    #[inline]
    pub(super) fn start_clock(&mut self, now: Time) {
        if self.clock.next_tick.is_none() {
            self.clock.next_tick = Some(now.plus_nanos(self.config.tick_nanos));
            self.clock.last_tick_at = now;
            self.clock.stride = 1;
        } else if self.clock.stride > 1 {
            self.tighten_clock(now);
        }
    }

    /// Something arrived or started while ticks were spaced out: tick again at the next
    /// point of the grid, counting the points passed meanwhile (so `tick` stays true to
    /// the time for the histories' horizons).
    #[cold]
    fn tighten_clock(&mut self, now: Time) {
        let tick = self.config.tick_nanos;
        let next = now.nanos_since(self.clock.last_tick_at) / tick + 1;
        if next < self.clock.stride {
            self.clock.tick += next - 1;
            self.clock.last_tick_at = self.clock.last_tick_at.plus_nanos((next - 1) * tick);
            self.clock.stride = 1;
            self.clock.next_tick = Some(self.clock.last_tick_at.plus_nanos(tick));
        }
    }

    /// Keep at most `RESENDS_PER_PEER` RESENDs for missing bytes, `PROBES_PER_PEER`
    /// RESENDs that only ask for anything, and `NEED_ACKS_PER_PEER` NEED_ACKs per peer
    /// among a tick's `actions`: those of the RPCs silent longest, of the responses
    /// unacknowledged longest. Many RPCs waiting on one peer can mean it is overloaded or
    /// stalled; a request for each of them every tick would cost it (and us) more than
    /// it can spare, so that it never catches up (measured on 2 hosts over raw IP: 65k
    /// NEED_ACKs and 65k RESENDs a second, no goodput). Linux Homa once limited RESENDs
    /// per peer too. The RESEND limit is the loosest: on a lossy path many RPCs to one
    /// healthy peer need one at once (with 2 a tick, 128 RPCs in flight through 10% loss
    /// timed out some); a NEED_ACK only frees the peer's state.
    ///
    /// Probes have their own budget: with hundreds of client RPCs waiting on one server
    /// (each asking every `resend_interval`, each answered BUSY), they took every slot,
    /// and the few messages with bytes really lost, among them the one being granted,
    /// got a RESEND every 30 ticks instead of 5: a 48 KB request took 150 ms (swarm case
    /// 4297551829358615363). (The Linux module's old per-peer limit exempted the message
    /// it was granting for the same reason.) A skipped RESEND is owed: it goes at a
    /// later tick, not a whole `resend_interval` later.
    ///
    /// Messages waiting for grants ask in the same budget, the longest silent first.
    /// When they were not limited, hundreds of requests sent together and refused
    /// together for want of buffer space asked in the same ticks. Their server answers
    /// at most `RPC_UNKNOWNS_PER_SOURCE` RPC_UNKNOWNs to one address a tick and drops the
    /// rest; the same requests came last each time, never heard an answer, never
    /// restarted, and timed out after `LIVE_PEER_PATIENCE` timeouts with their server
    /// alive (swarm case 17266708254349893736: 2 hosts, 500 outstanding, 17% loss).
    fn limit_per_peer(&mut self, actions: &mut [(usize, TickAction)]) {
        // (peer, what is asked, age, index in actions), oldest first within a peer.
        let ranked = &mut self.clock.ranked;
        ranked.clear();
        for (i, &(h, action)) in actions.iter().enumerate() {
            let rpc = &self.rpcs[h];
            match action {
                TickAction::Resend => {
                    let ask = if rpc.msgin.is_some() {
                        Ask::Missing
                    } else {
                        Ask::Probe
                    };
                    ranked.push((rpc.peer(), ask, rpc.silent_ticks, i));
                }
                // A message waiting for grants asks its peer whether it still holds it:
                // the same kind of question, in the same budget.
                TickAction::Probe => ranked.push((rpc.peer(), Ask::Probe, rpc.silent_ticks, i)),
                TickAction::NeedAck => {
                    ranked.push((rpc.peer(), Ask::NeedAck, rpc.ack_wait_ticks, i))
                }
                _ => {}
            }
        }
        ranked.sort_unstable_by_key(|&(p, ask, age, i)| (p, ask, u32::MAX - age, i));
        let mut run = 0;
        for k in 0..ranked.len() {
            let (p, ask, _, i) = ranked[k];
            run = if k > 0 && (ranked[k - 1].0, ranked[k - 1].1) == (p, ask) {
                run + 1
            } else {
                0
            };
            let limit = match ask {
                Ask::Missing => RESENDS_PER_PEER,
                Ask::Probe => PROBES_PER_PEER,
                Ask::NeedAck => NEED_ACKS_PER_PEER,
            };
            let (h, over) = (actions[i].0, run >= limit);
            if over {
                actions[i].1 = TickAction::Skipped;
            }
            if ask != Ask::NeedAck {
                self.rpcs[h].resend_owed = over;
            }
        }
    }

    fn on_tick(&mut self, now: Time) {
        self.clock.unknowns_sent.clear();
        let c = &self.config;
        let (resend_ticks, interval, timeout) =
            (c.resend_ticks, c.resend_interval, c.timeout_ticks);
        let backoff_max = c.resend_backoff_max_ticks.min(timeout / 2);
        let (ack_ticks, seg, tick) = (c.request_ack_ticks, self.seg, self.clock.tick);
        let mut actions = std::mem::take(&mut self.clock.actions);
        let peers = &self.peers;
        // Silence ends an RPC only when its peer is silent too: a peer that sent us
        // anything within `timeout_ticks` is alive, and loss (even heavy loss) is
        // recovered by RESENDs, not by giving up. A client times out only when its peer
        // has really stopped answering (like Linux Homa, which counts unanswered
        // RESENDs per peer), or after LIVE_PEER_PATIENCE timeouts of its own silence.
        // Ticks since the RPC's peer last sent us anything.
        let peer_silence =
            |rpc: &crate::rpc::Rpc| tick.saturating_sub(peers[rpc.peer()].last_heard);
        let peer_gone = |rpc: &crate::rpc::Rpc| peer_silence(rpc) >= timeout as u64;
        let over = |rpc: &crate::rpc::Rpc, silent: u32| {
            (silent >= timeout && peer_gone(rpc))
                || silent >= timeout.saturating_mul(LIVE_PEER_PATIENCE)
        };
        // Peers found gone this tick: every client RPC to them fails now, as in Linux
        // Homa, including those still sending (they would otherwise learn it only once
        // their own data is out, which a long send queue can delay by seconds).
        let mut gone = std::mem::take(&mut self.clock.gone);
        gone.clear();
        // A peer silent for half a timeout is asked something every tick by one of the
        // RPCs whose fate its silence decides, not only at their own resend pace: see
        // `ask_silent_peer`.
        let mut asked = std::mem::take(&mut self.clock.asked);
        asked.clear();
        let parked = &mut self.clock.parked;
        let visit_all = parked.visit_all(tick, timeout);
        if visit_all {
            #[cfg(debug_assertions)]
            for h in parked.keys() {
                let rpc = &self.rpcs[h];
                let ok = match (rpc.state, rpc.msgin.as_ref()) {
                    (State::Incoming, Some(m)) => {
                        !rpc.is_client()
                            && (m.data.is_none()
                                || (!m.waiting_on_peer() && rpc.silent_ticks == timeout))
                    }
                    (State::Client | State::Outgoing, m) => {
                        (m.is_none() || rpc.state == State::Outgoing)
                            && rpc
                                .msgout
                                .as_ref()
                                .is_some_and(|o| !o.fully_sent() && !o.has_fresh_bytes(seg))
                    }
                    _ => false,
                };
                debug_assert!(ok, "RPC {h} changed while parked");
            }
            parked.start_visit_all();
        } else {
            // The parked RPCs due now leave the set, to be visited below.
            let slot = parked.take_slot(tick);
            for &h in &slot {
                if parked.remove(h as usize) {
                    count_passed_ticks(&mut self.rpcs[h as usize], tick);
                }
            }
            parked.put_slot(tick, slot);
        }
        // RPCs in key order (as `Slots::iter_mut` gives them), read through the slab's
        // bitmap of entries in use, less the parked ones.
        let mut word = 0;
        let mut left = 0u64;
        loop {
            while left == 0 && word < self.rpcs.occupied_words() {
                left = self.rpcs.occupied_word(word);
                if !visit_all {
                    left &= !parked.word(word);
                }
                word += 1;
            }
            if left == 0 {
                break;
            }
            let h = (word - 1) * 64 + left.trailing_zeros() as usize;
            left &= left - 1;
            let rpc = &mut self.rpcs[h];
            if visit_all && parked.remove(h) {
                count_passed_ticks(rpc, tick);
            }
            let sending = rpc.msgout.as_ref().is_some_and(|o| o.has_fresh_bytes(seg));
            // Our message is stuck for want of grants from a peer that has granted some
            // of it already, so it knows the RPC: whether it grants more is its choice
            // (SRPT may starve a long message for long), and a GRANT it lost is its to
            // find out (it asks for the granted bytes it misses). So don't nag early;
            // from timeout/2 on, ask whether it still knows the RPC: it answers BUSY
            // (alive, keep waiting) or RPC_UNKNOWN. A client that asked for its response
            // every resend_interval instead drew a BUSY each time: on the testbed (W4,
            // 1 Gbps) a RESEND and a BUSY per RPC, a fifth of all control packets.
            // A client whose response has begun to arrive waits on the response, not on
            // grants: the server took the request as whole (a server answers only a
            // complete request; a forged or mutated packet may have given it a shorter
            // length than ours). Probing for grants there drew BUSY for ever while the
            // response's lost packets were never asked for (the random-operations test,
            // regression `cc 27c45247`).
            // A request granted nothing yet waits the same way once its server has
            // answered a probe BUSY (with backoff on, the userspace runtime's setting):
            // the server holds the request, asks itself for any unscheduled bytes it
            // lost, and grants when SRPT lets it. Until then the client probes at
            // `resend_ticks`, as the module does, in case every unscheduled packet was
            // lost. Probing on, every 10-20 ticks, cost 1.2-1.6 RESENDs and as many
            // BUSYs per 1 MB RPC at 64-256 outstanding (`homa perf tput`), more the
            // longer requests queued, just when the server had least CPU to spare.
            // While the server has answered BUSY for another of our RPCs within
            // timeout_ticks / 2, a new request skips that first probe too: the server is
            // holding our requests behind others, so this one would wait for grants
            // anyway; if all its unscheduled packets were lost, the probe at
            // timeout_ticks / 2 finds out (RPC_UNKNOWN restarts it).
            let peer_busy = |rpc: &crate::rpc::Rpc| {
                peers[rpc.peer()]
                    .last_busy
                    .is_some_and(|t| tick.saturating_sub(t) < (timeout / 2) as u64)
            };
            let awaiting_grants = !sending
                && (!rpc.is_client() || rpc.msgin.is_none())
                && rpc.msgout.as_ref().is_some_and(|o| !o.fully_sent())
                && (known_for_itself(rpc, backoff_max) || (backoff_max > 0 && peer_busy(rpc)));
            if awaiting_grants && matches!(rpc.state, State::Client | State::Outgoing) {
                rpc.silent_ticks += 1;
                let s = rpc.silent_ticks;
                let heard = peer_silence(rpc) < (timeout / 2) as u64;
                let wait = probe_wait(timeout, backoff_max, rpc.busy_streak, heard);
                if over(rpc, s) {
                    let action = if rpc.is_client() {
                        TickAction::Timeout
                    } else {
                        TickAction::Discard
                    };
                    if rpc.is_client() && !gone.contains(&rpc.peer()) && peer_gone(rpc) {
                        gone.push(rpc.peer());
                    }
                    actions.push((h, action));
                } else if s >= wait
                    && ((s - wait) % interval == 0
                        || rpc.resend_owed
                        || ask_silent_peer(&mut asked, rpc, heard))
                {
                    actions.push((h, TickAction::Probe));
                } else if heard {
                    // Known to the peer for a reason only an event for this RPC changes,
                    // or else (another RPC's BUSY) until the tick that BUSY is too old
                    // to count, when this RPC's questions start at resend_ticks.
                    let known_until = if known_for_itself(rpc, backoff_max) {
                        u64::MAX
                    } else {
                        peers[rpc.peer()]
                            .last_busy
                            .map_or(tick, |t| t + (timeout / 2) as u64)
                    };
                    // Until its next question, its peer goes quiet for half a timeout
                    // (the pace changes), it runs out of patience or that BUSY is too
                    // old, each tick only counts.
                    let step = interval.max(1);
                    let next = if s < wait {
                        wait
                    } else {
                        wait + (s - wait).div_ceil(step) * step
                    };
                    let last = timeout.saturating_mul(LIVE_PEER_PATIENCE);
                    let last_heard = peers[rpc.peer()].last_heard;
                    let due = (tick + next.min(last).saturating_sub(s) as u64)
                        .min(last_heard + (timeout / 2) as u64)
                        .min(known_until);
                    if due > tick {
                        rpc.parked_at = tick;
                        parked.insert(h, tick, last_heard, due);
                    }
                }
                continue;
            }
            let waiting_on_peer = match rpc.state {
                State::Client => !sending && rpc.msgin.as_ref().is_none_or(InMsg::waiting_on_peer),
                State::Incoming if rpc.msgin.as_ref().is_some_and(|m| m.data.is_none()) => {
                    // Stalled: it waits for our buffer space, not for its client. A live
                    // client's RESENDs (answered BUSY) reset the count; a sender that
                    // never speaks again, such as a forged one, is dropped after
                    // timeout_ticks instead of holding a stalled slot for ever. While
                    // its client talks to us about other RPCs, it waits
                    // STALLED_PATIENCE timeouts: such a client asks about a request we
                    // keep waiting less and less often (`probe_wait`), and a request
                    // dropped for that would cost it a restart (RPC_UNKNOWN, then every
                    // unscheduled byte again).
                    rpc.silent_ticks += 1;
                    let patience = if peer_gone(rpc) {
                        timeout
                    } else {
                        timeout.saturating_mul(STALLED_PATIENCE)
                    };
                    if rpc.silent_ticks >= patience {
                        actions.push((h, TickAction::Discard));
                    } else if !rpc.is_client() {
                        // Until its client goes silent or it has waited its patience,
                        // each tick only counts (which `parked_at` keeps).
                        let due = tick + (patience - rpc.silent_ticks) as u64;
                        rpc.parked_at = tick;
                        parked.insert(h, tick, peers[rpc.peer()].last_heard, due);
                    }
                    continue;
                }
                State::Incoming => rpc.msgin.as_ref().is_some_and(InMsg::waiting_on_peer),
                State::InService => false,
                State::Outgoing => {
                    let fully_sent = rpc.msgout.as_ref().is_none_or(OutMsg::fully_sent);
                    if fully_sent {
                        rpc.ack_wait_ticks += 1;
                        if over(rpc, rpc.ack_wait_ticks.saturating_sub(ack_ticks)) {
                            actions.push((h, TickAction::Discard));
                        } else if now >= rpc.need_ack_after {
                            actions.push((h, TickAction::NeedAck));
                        }
                    }
                    false
                }
            };
            if !waiting_on_peer {
                // Waiting for our grants, or (a response) for our buffer space.
                let is_client = rpc.is_client();
                let waiting_on_us = !sending
                    && matches!(rpc.state, State::Client | State::Incoming)
                    && rpc.msgin.as_ref().is_some_and(|m| match m.data {
                        Some(_) => !m.is_complete(),
                        None => is_client,
                    });
                if waiting_on_us {
                    // Nothing is owed by the peer (no RESEND), but a peer that died
                    // meanwhile must still be found out: a live one keeps talking (a
                    // server waiting for our grants probes from timeout_ticks / 2 on,
                    // and is answered BUSY). A response waiting for buffer space once
                    // reset the count every tick: after its server died it failed a
                    // whole timeout after it got its buffer (swarm case
                    // 2128857263923632377). Held at timeout_ticks, so that a message we
                    // starve for long does not run out of patience with its peer once
                    // granted.
                    rpc.silent_ticks = (rpc.silent_ticks + 1).min(timeout);
                    if rpc.silent_ticks >= timeout && peer_gone(rpc) {
                        if rpc.is_client() && !gone.contains(&rpc.peer()) {
                            gone.push(rpc.peer());
                        }
                        actions.push((h, TickAction::Timeout));
                    } else if rpc.silent_ticks >= timeout && !is_client {
                        // A request (so with its buffer): every tick from now on does
                        // what this one did, nothing, until something about it changes or
                        // its client goes silent.
                        rpc.parked_at = tick;
                        parked.insert(h, tick, peers[rpc.peer()].last_heard, u64::MAX);
                    }
                } else {
                    rpc.silent_ticks = 0;
                }
                continue;
            }
            rpc.silent_ticks += 1;
            let s = rpc.silent_ticks;
            // A request still arriving is dropped after its own silence alone: that costs
            // its client a restart (it gets RPC_UNKNOWN, as it was never executed), while
            // a forged request kept alive by its sender's other packets would hold buffer
            // space for 10 timeouts and lock real clients out.
            let expired = if rpc.is_client() {
                over(rpc, s)
            } else {
                s >= timeout
            };
            if expired {
                if rpc.is_client() && s >= timeout && peer_gone(rpc) && !gone.contains(&rpc.peer())
                {
                    gone.push(rpc.peer());
                }
                actions.push((h, TickAction::Timeout));
            } else {
                let first = first_resend(resend_ticks, backoff_max, rpc.busy_streak);
                if s >= first && ((s - first) % interval == 0 || rpc.resend_owed) {
                    actions.push((h, TickAction::Resend));
                }
            }
        }
        self.limit_per_peer(&mut actions);
        for (h, action) in actions.drain(..) {
            // An earlier action may have ended this RPC: discarding a server RPC frees
            // buffer space, and the grant round that follows can admit a stalled
            // message that is then complete and delivered (a one-way message, or a
            // response, is freed on delivery). Discarding it again indexed a freed
            // slot (the random-operations test, regression `cc e77dd4ba`). No action
            // creates an RPC, so a slot freed here is not reused before the loop ends.
            if self.rpcs.get(h).is_none() {
                continue;
            }
            match action {
                TickAction::Skipped => {}
                TickAction::Resend => self.send_resends(h),
                TickAction::NeedAck => {
                    // At most one per tick, however close together ticks run.
                    let half_tick = self.config.tick_nanos / 2;
                    self.rpcs[h].need_ack_after = now.plus_nanos(half_tick);
                    let repr = Repr {
                        common: self.common_for(h),
                        body: Body::NeedAck,
                    };
                    let rpc = &self.rpcs[h];
                    self.queue_control(rpc.peer_addr, rpc.local, repr);
                }
                TickAction::Timeout => {
                    self.metrics.timeouts += 1;
                    if self.rpcs[h].is_client() {
                        self.fail(h, RpcError::Timeout);
                    } else {
                        self.discard_server(h);
                    }
                }
                TickAction::Probe => {
                    // A client's probe is a RESEND like any: an RPC_UNKNOWN answering it
                    // restarts the request.
                    let rpc = &mut self.rpcs[h];
                    rpc.resent_since_start |= rpc.is_client();
                    let repr = Repr {
                        common: self.common_for(h),
                        body: Body::Resend(Resend {
                            offset: 0,
                            length: 0,
                            priority: self.control_priority(),
                        }),
                    };
                    let rpc = &self.rpcs[h];
                    self.queue_control(rpc.peer_addr, rpc.local, repr);
                }
                TickAction::Discard => {
                    self.metrics.timeouts += 1;
                    self.discard_server(h);
                }
            }
        }
        self.clock.actions = actions;
        for &p in &gone {
            let handles: Vec<usize> = self
                .rpcs
                .iter()
                .filter(|(_, r)| r.is_client() && r.peer() == p)
                .map(|(h, _)| h)
                .collect();
            for h in handles {
                self.metrics.timeouts += 1;
                self.fail(h, RpcError::Timeout);
            }
        }
        self.clock.gone = gone;
        self.clock.asked = asked;
        self.one_way_tick();
        self.learn_tick(tick);
        if tick % HISTORY_SWEEP_TICKS == 0 {
            let horizon = self.config.dedup_horizon_ticks as u64;
            let idle = self.config.client_history_idle_ticks as u64;
            self.histories.sweep(tick, horizon, idle);
            self.peers.collect(tick);
            self.give_back_memory(false);
        }
        let idle = self.rpcs.is_empty() && self.histories.is_empty() && self.one_way.is_idle();
        if idle && !self.peers.need_collecting() {
            // Nothing needs the clock: it stops until the next input, and what an idle
            // endpoint holds for traffic to come is given back.
            self.clock.next_tick = None;
            self.give_back_memory(true);
        }
    }
}
