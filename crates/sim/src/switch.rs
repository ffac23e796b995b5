//! The switches' output ports: where each one's link leads, and its 8 strict-priority
//! queues of packets waiting for the link.

use crate::sim::Pkt;
use crate::topology::Topology;

/// Where a switch port's link leads.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Next {
    Host(u32),
    Tor(u32),
    Agg(u32),
}

/// Which kind of link a port drives (for statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// ToR to host.
    TorDown,
    /// ToR to aggregation switch.
    TorUp,
    /// Aggregation switch to ToR.
    AggDown,
}

/// No packet (the end of a port's queue).
pub(crate) const NONE: u32 = u32::MAX;

/// A switch output port. Its 8 priority queues are lists threaded through the packets
/// (`Pkt::next`): the port's state then fits in two cache lines, where a deque per
/// priority spread it over five lines and eight buffers, and an event at a port of one of
/// 144 hosts' switches finds little of it in the cache.
pub(crate) struct Port {
    /// The first and last packet of each priority's queue (`NONE`: empty).
    heads: [u32; 8],
    tails: [u32; 8],
    /// Bit p set = queue p is not empty.
    mask: u8,
    pub(crate) busy: bool,
    pub(crate) mbps: u32,
    pub(crate) next: Next,
    pub(crate) kind: PortKind,
    queued_bytes: u64,
    pub(crate) max_queued_bytes: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) tx_packets: u64,
}

impl Port {
    fn new(mbps: u32, next: Next, kind: PortKind) -> Port {
        Port {
            heads: [NONE; 8],
            tails: [NONE; 8],
            mask: 0,
            busy: false,
            mbps,
            next,
            kind,
            queued_bytes: 0,
            max_queued_bytes: 0,
            tx_bytes: 0,
            tx_packets: 0,
        }
    }

    /// Queue packet `slot` behind the others of its priority.
    pub(crate) fn enqueue(&mut self, pkts: &mut [Pkt], slot: u32) {
        let (prio, wire) = {
            let pkt = &pkts[slot as usize];
            (pkt.prio as usize, pkt.wire)
        };
        match self.tails[prio] {
            NONE => self.heads[prio] = slot,
            tail => pkts[tail as usize].next = slot,
        }
        self.tails[prio] = slot;
        self.mask |= 1 << prio;
        self.queued_bytes += wire as u64;
        self.max_queued_bytes = self.max_queued_bytes.max(self.queued_bytes);
    }

    /// Take the first packet of the highest non-empty priority: its slot and wire bytes.
    pub(crate) fn dequeue(&mut self, pkts: &mut [Pkt]) -> Option<(u32, u32)> {
        if self.mask == 0 {
            return None;
        }
        let q = 7 - self.mask.leading_zeros() as usize;
        let n = self.heads[q];
        let pkt = &mut pkts[n as usize];
        self.heads[q] = std::mem::replace(&mut pkt.next, NONE);
        if self.heads[q] == NONE {
            self.tails[q] = NONE;
            self.mask &= !(1 << q);
        }
        self.queued_bytes -= pkt.wire as u64;
        Some((n, pkt.wire))
    }
}

/// Every switch port of topology `t`, in the order its port numbers count them.
pub(crate) fn build_ports(t: &Topology) -> Vec<Port> {
    let mut v = Vec::with_capacity(t.num_ports());
    for r in 0..t.racks {
        for i in 0..t.hosts_per_rack {
            let h = r * t.hosts_per_rack + i;
            v.push(Port::new(t.host_mbps, Next::Host(h), PortKind::TorDown));
        }
        for a in 0..t.aggs {
            v.push(Port::new(t.core_mbps, Next::Agg(a), PortKind::TorUp));
        }
    }
    for _a in 0..t.aggs {
        for r in 0..t.racks {
            v.push(Port::new(t.core_mbps, Next::Tor(r), PortKind::AggDown));
        }
    }
    debug_assert_eq!(v.len(), t.num_ports());
    v
}
