//! The peer table (what we know of each host we talk to: its cutoffs, acks we owe it,
//! its grantable messages and buffer share) and the client histories, the at-most-once
//! memory of each client socket that sent us requests (see `history.rs`).

use crate::history::History;
use crate::rpc::GrantKey;
use homa_wire::AckEntry;
use rustc_hash::FxHashMap;
use slab::Slab;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::ops::{Index, IndexMut};

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
    /// Acks owed to this peer: (local client port, ack).
    pub(super) pending_acks: Vec<(u16, AckEntry)>,
    /// This peer's messages we could grant to.
    pub(super) grantable: BTreeSet<GrantKey>,
    /// Buffer bytes held by this peer's requests that are still arriving.
    pub(super) req_held: u64,
    /// This peer's requests waiting for buffer space.
    pub(super) req_stalled: u32,
    /// The tick we last received a packet from this address (any type, any RPC): while
    /// it is recent, the peer is alive and its RPCs are not timed out (see timer.rs).
    pub(super) last_heard: u64,
}

impl Peer {
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
            grantable: BTreeSet::new(),
            req_held: 0,
            req_stalled: 0,
            last_heard: tick,
        }
    }
}

/// Every peer, by index (RPCs hold their peer's index) and by address. A peer with no
/// RPCs, no acks owed and nothing heard for a while is forgotten, so that packets from
/// many (forged) source addresses leave nothing behind once their RPCs are gone.
#[derive(Default)]
pub(super) struct Peers {
    list: Slab<Peer>,
    index: FxHashMap<IpAddr, usize>,
    /// The peer `find` found last (cleared when peers are forgotten).
    last: Option<(IpAddr, usize)>,
}

impl Peers {
    /// Owe peer `p` an ack from local client port `port`; returns how many acks are now
    /// owed to it from that port.
    pub(super) fn owe_ack(&mut self, p: usize, port: u16, ack: AckEntry) -> usize {
        let peer = &mut self.list[p];
        peer.pending_acks.push((port, ack));
        peer.pending_acks.iter().filter(|(q, _)| *q == port).count()
    }

    /// The peer at `addr`, if known. The last one found is remembered: an endpoint often
    /// deals with one peer many times in a row (a client with its server), and comparing
    /// an address costs much less than hashing it.
    #[inline]
    pub(super) fn find(&mut self, addr: IpAddr) -> Option<usize> {
        match self.last {
            Some((a, p)) if a == addr => Some(p),
            _ => self.look_up(addr),
        }
    }

    /// `find` for a peer other than the last one.
    fn look_up(&mut self, addr: IpAddr) -> Option<usize> {
        let p = *self.index.get(&addr)?;
        self.last = Some((addr, p));
        Some(p)
    }

    /// The peer at `addr`, made (at `tick`) if new.
    #[inline]
    pub(super) fn get_or_insert(&mut self, addr: IpAddr, tick: u64) -> usize {
        match self.find(addr) {
            Some(p) => p,
            None => {
                let p = self.list.insert(Peer::new(addr, tick));
                self.index.insert(addr, p);
                p
            }
        }
    }

    /// Forget every peer that has no RPCs, owes nothing and holds nothing, and that we
    /// have not heard from for `idle` ticks.
    pub(super) fn sweep(&mut self, tick: u64, idle: u64) {
        let index = &mut self.index;
        let before = self.list.len();
        self.list.retain(|_, p| {
            let forget = p.rpcs == 0
                && p.pending_acks.is_empty()
                && p.grantable.is_empty()
                && p.req_held == 0
                && p.req_stalled == 0
                && tick.saturating_sub(p.last_heard) >= idle;
            if forget {
                index.remove(&p.addr);
            }
            !forget
        });
        if self.list.len() != before {
            self.last = None;
        }
    }

    /// Peers known.
    pub(super) fn len(&self) -> usize {
        self.list.len()
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

/// The history of each client socket (address, port) that sent us requests.
#[derive(Default)]
pub(super) struct Histories {
    table: Slab<((IpAddr, u16), History)>,
    index: FxHashMap<(IpAddr, u16), usize>,
    /// The history `find` found last (forgotten when the sweep drops any).
    last: Option<((IpAddr, u16), usize)>,
}

impl Histories {
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

    /// Compact every history at `tick` and drop the idle ones (see `History::compact`).
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
