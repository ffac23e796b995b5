//! The peer table (what we know of each host we talk to: its cutoffs, acks we owe it,
//! its grantable messages and buffer share) and the client histories, the at-most-once
//! memory of each client socket that sent us requests (see `history.rs`); both bounded
//! by the configuration, and both giving their memory back as they empty.

use super::lifecycle::{shrink_map, SHRINK_FACTOR, SHRINK_FLOOR};
use super::one_way::Agreement;
use crate::config::Config;
use crate::history::History;
use crate::minset::MinSet;
use crate::rpc::GrantKey;
use crate::Time;
use homa_wire::AckEntry;
use rustc_hash::FxHashMap;
use slab::Slab;
use std::collections::{BTreeSet, VecDeque};
use std::net::IpAddr;
use std::ops::{Index, IndexMut};

/// Shrink `slab` as `shrink_map` does maps: its entries are moved down into the free
/// ones below them while `movable` says an entry may change its key (nothing outside the
/// table holds it), then the free entries past the last are dropped. `moved` is told
/// each entry's new key.
fn shrink_slab<T>(
    slab: &mut Slab<T>,
    movable: impl Fn(&T) -> bool,
    mut moved: impl FnMut(&T, usize),
) {
    if slab.capacity() > SHRINK_FACTOR * slab.len().max(SHRINK_FLOOR) {
        slab.compact(|v, _, to| {
            let ok = movable(v);
            if ok {
                moved(v, to);
            }
            ok
        });
        slab.shrink_to_fit();
    }
}

/// The peer table's rules (the Linux module's, under its sysctl names), idle times in
/// timer ticks.
#[derive(Debug, Clone, Copy)]
pub(super) struct PeerLimits {
    /// `peer_gc_threshold`: below this many peers, none is forgotten.
    gc_threshold: usize,
    /// `peer_net_max`.
    net_max: usize,
    /// `peer_idle_secs_min`, in ticks.
    idle_min: u64,
    /// `peer_idle_secs_max`, in ticks.
    idle_max: u64,
}

impl PeerLimits {
    pub(super) fn new(c: &Config) -> PeerLimits {
        let ticks = |secs: u32| (secs as u64 * 1_000_000_000).div_ceil(c.tick_nanos.max(1));
        PeerLimits {
            gc_threshold: c.peer_gc_threshold as usize,
            net_max: c.peer_net_max as usize,
            idle_min: ticks(c.peer_idle_secs_min),
            idle_max: ticks(c.peer_idle_secs_max),
        }
    }
}

/// Requests refused since a full table was last searched for entries to drop.
const REFUSALS_PER_SEARCH: u32 = 64;

/// A table found full, with nothing it may drop: it is searched again at the next tick,
/// or after [`REFUSALS_PER_SEARCH`] more refusals (the clock may be stopped while the
/// entries become droppable), not for every packet of a flood.
#[derive(Debug, Default, Clone, Copy)]
struct Full {
    /// The tick it was found full, and the refusals since.
    since: Option<(u64, u32)>,
}

impl Full {
    /// True to refuse without searching.
    fn skip(&mut self, tick: u64) -> bool {
        match &mut self.since {
            Some((t, n)) if *t == tick && *n < REFUSALS_PER_SEARCH => {
                *n += 1;
                true
            }
            _ => false,
        }
    }

    /// A search made room (or did not) at `tick`.
    fn found(&mut self, room: bool, tick: u64) {
        self.since = (!room).then_some((tick, 0));
    }
}

/// What we know of one peer host.
pub(super) struct Peer {
    /// Its address (its key in the index).
    addr: IpAddr,
    /// Live RPCs with it: a peer is forgotten only when it has none (see `Peers::sweep`).
    pub(super) rpcs: u32,
    /// The peer's cutoffs, for our unscheduled priorities toward it.
    pub(super) cutoffs: [u32; 8],
    /// Version of those cutoffs (echoed in our DATA).
    pub(super) cutoff_version: u16,
    /// Tick we last sent this peer CUTOFFS (at most one per tick).
    pub(super) cutoffs_sent_tick: Option<u64>,
    /// Acks owed to this peer, per local client port and the peer's server port they are
    /// for, oldest first (see [`owe_ack`](Peers::owe_ack)). An ack travels only to the
    /// port it is for: each server port may be a socket (or a process) of its own, which
    /// cannot free another's RPCs. A list stays when it empties (an endpoint talks to a
    /// port or a few); it goes with the peer.
    pending_acks: Vec<(u16, u16, VecDeque<AckEntry>)>,
    /// This peer's messages we could grant to.
    pub(super) grantable: MinSet<GrantKey>,
    /// Buffer bytes held by this peer's requests that are still arriving.
    pub(super) req_held: u64,
    /// This peer's requests waiting for buffer space, oldest first: (birth, handle).
    pub(super) req_stalled: BTreeSet<(u64, usize)>,
    /// The tick we last received a packet from this address (any type, any RPC): while
    /// it is recent, the peer is alive and its RPCs are not timed out (see timer.rs).
    pub(super) last_heard: u64,
    /// When we last received a packet from this address, once it was known (for
    /// [`Endpoint::heard_from_since`](super::Endpoint::heard_from_since)).
    pub(super) heard_at: Option<Time>,
    /// The tick it last answered one of our RPCs BUSY, if ever: it is holding requests
    /// of ours while it serves others (see `Endpoint::on_tick`).
    pub(super) last_busy: Option<u64>,
    /// One-way messages we send it: what each of its ports said about taking them.
    pub(super) one_way: Vec<(u16, Agreement)>,
    /// Acks we owe it for one-way messages it sent us: (its client port, ack).
    pub(super) one_way_acks: Vec<(u16, AckEntry)>,
    /// It is on the list of peers owed one-way acks at the next tick
    /// (`OneWayPeers::owing`), which a search would walk for every message received.
    pub(super) owed_listed: bool,
}

impl Peer {
    /// Nothing would be lost by forgetting it: no RPCs, no acks owed, no buffer space,
    /// nothing to grant, no one-way business. (Its cutoffs are learned again, and so is
    /// which of its ports take one-way messages.)
    fn holds_nothing(&self) -> bool {
        self.rpcs == 0
            && self.pending_acks.iter().all(|(_, _, q)| q.is_empty())
            && self.grantable.is_empty()
            && self.req_held == 0
            && self.req_stalled.is_empty()
            && !self.one_way_business()
    }

    /// It has one-way business the clock attends to: a question of ours not yet
    /// answered, or acks we owe it for its one-way messages.
    fn one_way_business(&self) -> bool {
        !self.one_way_acks.is_empty()
            || self
                .one_way
                .iter()
                .any(|(_, a)| matches!(a, Agreement::Asked { .. }))
    }

    /// The acks owed to its server port `server_port` from local client port `port`,
    /// oldest first.
    pub(super) fn acks_owed(
        &mut self,
        port: u16,
        server_port: u16,
    ) -> Option<&mut VecDeque<AckEntry>> {
        self.pending_acks
            .iter_mut()
            .find(|(q, s, _)| *q == port && *s == server_port)
            .map(|(_, _, acks)| acks)
    }

    fn new(addr: IpAddr, tick: u64) -> Peer {
        // Until a peer sends CUTOFFS, Linux Homa uses priority 6 for every unscheduled
        // byte; so do we (the cutoff for 6 is unlimited, 7 takes nothing).
        let mut cutoffs = [0; 8];
        cutoffs[6] = u32::MAX;
        Peer {
            addr,
            rpcs: 0,
            cutoffs,
            cutoff_version: 0,
            cutoffs_sent_tick: None,
            pending_acks: Vec::new(),
            grantable: MinSet::new(),
            req_held: 0,
            req_stalled: BTreeSet::new(),
            last_heard: tick,
            heard_at: None,
            last_busy: None,
            one_way: Vec::new(),
            one_way_acks: Vec::new(),
            owed_listed: false,
        }
    }
}

/// Every peer, by index (RPCs hold their peer's index) and by address.
///
/// The Linux module's rules decide which peers are forgotten, and only peers that hold
/// nothing ever are (see [`Peers::collect`]); packets from the network never make the
/// table larger than `peer_net_max` (see [`Peers::make_room`]). So a flood of forged
/// source addresses costs at most that many peers while it lasts, and once their RPCs are
/// gone and they have been idle long enough, nothing: the table shrinks with them.
pub(super) struct Peers {
    list: Slab<Peer>,
    index: FxHashMap<IpAddr, usize>,
    /// The peer `find` found last (cleared when peers are forgotten).
    last: Option<(IpAddr, usize)>,
    limits: PeerLimits,
    /// When `make_room` last found every peer holding something: see [`Full`].
    full: Full,
    /// Reused by `collect` and `make_room`: (idle ticks, peer).
    idle: Vec<(u64, usize)>,
}

impl Peer {
    /// Its address.
    pub(super) fn addr(&self) -> IpAddr {
        self.addr
    }
}

impl Peers {
    pub(super) fn new(config: &Config) -> Peers {
        Peers {
            list: Slab::new(),
            index: FxHashMap::default(),
            last: None,
            limits: PeerLimits::new(config),
            full: Full::default(),
            idle: Vec::new(),
        }
    }

    /// Every peer, with its index.
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &Peer)> {
        self.list.iter()
    }

    /// Owe peer `p` an ack from local client port `port` (for its server port
    /// `ack.server_port`); true if more than `held` acks are now owed from that port to
    /// that one.
    pub(super) fn owe_ack(&mut self, p: usize, port: u16, ack: AckEntry, held: usize) -> bool {
        let owed = &mut self.list[p].pending_acks;
        let to = ack.server_port;
        let i = match owed.iter().position(|(q, s, _)| *q == port && *s == to) {
            Some(i) => i,
            None => {
                owed.push((port, to, VecDeque::new()));
                owed.len() - 1
            }
        };
        let acks = &mut owed[i].2;
        acks.push_back(ack);
        acks.len() > held
    }

    /// The peer at `addr`, if known. The last one found is remembered: an endpoint often
    /// deals with one peer many times in a row (a client with its server), and comparing
    /// an address costs much less than hashing it.
    // Always inlined: each small RPC asks twice or more, and LLVM stopped inlining it
    // once its callers grew; as a call, the remembered-peer case cost more than the
    // comparison it does.
    #[inline(always)]
    pub(super) fn find(&mut self, addr: IpAddr) -> Option<usize> {
        match self.last {
            Some((a, p)) if a == addr => Some(p),
            _ => self.look_up(addr),
        }
    }

    /// `find` for a peer other than the last one.
    #[inline(never)]
    fn look_up(&mut self, addr: IpAddr) -> Option<usize> {
        let p = *self.index.get(&addr)?;
        self.last = Some((addr, p));
        Some(p)
    }

    /// The peer at `addr`, made (at `tick`) if new.
    #[inline(always)]
    pub(super) fn get_or_insert(&mut self, addr: IpAddr, tick: u64) -> usize {
        match self.find(addr) {
            Some(p) => p,
            None => self.insert(addr, tick),
        }
    }

    /// A new peer at `addr` (which has none), made at `tick`.
    #[inline(never)]
    fn insert(&mut self, addr: IpAddr, tick: u64) -> usize {
        let p = self.list.insert(Peer::new(addr, tick));
        self.index.insert(addr, p);
        p
    }

    /// The peers holding nothing that have been idle at least `min_idle` ticks at `tick`,
    /// idle longest first (ties by index, so the order is deterministic), into `idle`.
    fn idle_peers(&mut self, tick: u64, min_idle: u64) {
        self.idle.clear();
        self.idle.extend(self.list.iter().filter_map(|(k, p)| {
            let idle = tick.saturating_sub(p.last_heard);
            (p.holds_nothing() && idle >= min_idle).then_some((idle, k))
        }));
        self.idle
            .sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    }

    /// Forget peer `k` (which holds nothing).
    fn forget(&mut self, k: usize) {
        let p = self.list.remove(k);
        self.index.remove(&p.addr);
        self.last = None;
    }

    /// The Linux module's peer garbage collection, run every few ticks: while at least
    /// `peer_gc_threshold` peers are known, forget those holding nothing that have been
    /// idle `peer_idle_secs_max`, or `peer_idle_secs_min` while more than `peer_net_max`
    /// are known, idle longest first. (The module collects a few peers per tick; this
    /// collects every one the rules allow at once, so how fast peers come does not
    /// matter.) Then give back the memory of the peers forgotten.
    pub(super) fn collect(&mut self, tick: u64) {
        let l = self.limits;
        if !self.list.is_empty() && self.list.len() >= l.gc_threshold {
            self.idle_peers(tick, l.idle_min);
            for i in 0..self.idle.len() {
                let (idle, k) = self.idle[i];
                let n = self.list.len();
                if n < l.gc_threshold || (idle < l.idle_max && n <= l.net_max) {
                    break;
                }
                self.forget(k);
            }
        }
        // A peer with no RPCs and no one-way business is held by nothing outside the
        // table (its grantable and stalled messages are its RPCs'; the clock's one-way
        // lists name the peers with questions out or acks owed).
        let index = &mut self.index;
        shrink_slab(
            &mut self.list,
            |p| p.rpcs == 0 && !p.one_way_business(),
            |p, k| {
                index.insert(p.addr, k);
            },
        );
        self.last = None;
        shrink_map(&mut self.index);
        if self.idle.capacity() > SHRINK_FACTOR * SHRINK_FLOOR {
            self.idle = Vec::new(); // (only used while collecting)
        }
    }

    /// Room for one more peer made by a packet from the network: true if the table holds
    /// fewer than `peer_net_max`, or can be brought below by forgetting peers that hold
    /// nothing, idle longest first (however briefly idle: a new peer must not be refused
    /// while an old one only waits to be collected). It forgets an eighth of the table at
    /// once, so that a flood does not make it sort the table per packet. False if every
    /// peer holds something: the packet is then refused without state.
    pub(super) fn make_room(&mut self, tick: u64) -> bool {
        let max = self.limits.net_max;
        if self.list.len() < max {
            return true;
        }
        if self.full.skip(tick) {
            return false;
        }
        self.idle_peers(tick, 0);
        let goal = max - max / 8 - 1;
        for i in 0..self.idle.len() {
            if self.list.len() <= goal {
                break;
            }
            let k = self.idle[i].1;
            self.forget(k);
        }
        let room = self.list.len() < max;
        self.full.found(room, tick);
        room
    }

    /// True while ticks are needed to collect peers (at least `peer_gc_threshold` known;
    /// see `IDLE_SWEEP_TICKS`).
    pub(super) fn need_collecting(&self) -> bool {
        !self.list.is_empty() && self.list.len() >= self.limits.gc_threshold
    }

    /// The peer at index `p`, if it is still known.
    pub(super) fn get_mut(&mut self, p: usize) -> Option<&mut Peer> {
        self.list.get_mut(p)
    }

    /// Peers known.
    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    /// The peers, and their server ports, owed acks from local client port `port`.
    pub(super) fn owed_acks_from(&self, port: u16) -> Vec<(usize, u16)> {
        self.list
            .iter()
            .flat_map(|(p, peer)| {
                peer.pending_acks
                    .iter()
                    .filter(move |(q, _, acks)| *q == port && !acks.is_empty())
                    .map(move |&(_, server_port, _)| (p, server_port))
            })
            .collect()
    }
}

impl Index<usize> for Peers {
    type Output = Peer;
    fn index(&self, p: usize) -> &Peer {
        &self.list[p]
    }
}

impl IndexMut<usize> for Peers {
    fn index_mut(&mut self, p: usize) -> &mut Peer {
        &mut self.list[p]
    }
}

/// The history of each client socket (address, port) that sent us requests: at most
/// `max_client_histories` of them (see [`Histories::make_room`]).
pub(super) struct Histories {
    table: Slab<((IpAddr, u16), History)>,
    index: FxHashMap<(IpAddr, u16), usize>,
    /// The history `find` found last (forgotten when the sweep drops any).
    last: Option<((IpAddr, u16), usize)>,
    /// `max_client_histories`.
    max: usize,
    /// When `make_room` last found none to drop: see [`Full`].
    full: Full,
}

impl Histories {
    pub(super) fn new(config: &Config) -> Histories {
        Histories {
            table: Slab::new(),
            index: FxHashMap::default(),
            last: None,
            max: config.max_client_histories as usize,
            full: Full::default(),
        }
    }

    /// The history of the client socket `key`, if it has one. The last one found is
    /// remembered, as the last peer is: requests often come from one client socket many
    /// times in a row.
    #[inline]
    pub(super) fn find(&mut self, key: (IpAddr, u16)) -> Option<usize> {
        match self.last {
            Some((k, i)) if k == key => Some(i),
            _ => self.look_up(key),
        }
    }

    /// `find` for a client socket other than the last one.
    fn look_up(&mut self, key: (IpAddr, u16)) -> Option<usize> {
        let i = *self.index.get(&key)?;
        self.last = Some((key, i));
        Some(i)
    }

    /// A new, empty history for client socket `key` (which has none).
    pub(super) fn insert(&mut self, key: (IpAddr, u16)) -> usize {
        let i = self.table.insert((key, History::default()));
        self.index.insert(key, i);
        i
    }

    /// The history at `i`, if it is still kept.
    pub(super) fn get_mut(&mut self, i: usize) -> Option<&mut History> {
        self.table.get_mut(i).map(|(_, h)| h)
    }

    /// Compact every history at `tick` and drop the idle ones (see `History::compact`);
    /// give back the memory of those dropped.
    pub(super) fn sweep(&mut self, tick: u64, horizon: u64, idle: u64) {
        let index = &mut self.index;
        self.last = None;
        self.table.retain(|_, (key, h)| {
            let drop = h.compact(tick, horizon, idle);
            if drop {
                index.remove(key);
            }
            !drop
        });
        // A history with no live RPCs is held by nothing outside the table.
        let index = &mut self.index;
        shrink_slab(
            &mut self.table,
            |(_, h)| h.live == 0,
            |(key, _), i| {
                index.insert(*key, i);
            },
        );
        shrink_map(&mut self.index);
    }

    /// Room for a new history: true below `max_client_histories`, or once the histories
    /// idle longest among those that may go early (`History::may_drop_early`: nothing
    /// live, no activity for a horizon) are dropped, an eighth of the table at once.
    /// False if none may go: the request is then refused without state.
    pub(super) fn make_room(&mut self, tick: u64, horizon: u64) -> bool {
        if self.table.len() < self.max {
            return true;
        }
        if self.full.skip(tick) {
            return false;
        }
        let mut idle: Vec<(u64, usize)> = self
            .table
            .iter()
            .filter(|(_, (_, h))| h.may_drop_early(tick, horizon))
            .map(|(i, (_, h))| (h.last_active(), i))
            .collect();
        idle.sort_unstable();
        let goal = self.max - self.max / 8 - 1;
        for (_, i) in idle {
            if self.table.len() <= goal {
                break;
            }
            let (key, _) = self.table.remove(i);
            self.index.remove(&key);
        }
        self.last = None;
        let room = self.table.len() < self.max;
        self.full.found(room, tick);
        room
    }

    /// Histories kept.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

impl Index<usize> for Histories {
    type Output = History;
    fn index(&self, i: usize) -> &History {
        &self.table[i].1
    }
}

impl IndexMut<usize> for Histories {
    fn index_mut(&mut self, i: usize) -> &mut History {
        &mut self.table[i].1
    }
}
