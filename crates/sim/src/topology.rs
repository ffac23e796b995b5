//! The network: hosts, links, switches, routes, and the ideal (empty-network) time of a
//! message, against which slowdown is measured.

use crate::SimError;

/// Bytes an Ethernet frame costs on the link beyond its IP packet: 14 header + 4 FCS +
/// 8 preamble + 12 inter-frame gap.
pub const ETHERNET_OVERHEAD: u32 = 14 + 4 + 8 + 12;
/// Smallest Ethernet payload (shorter IP packets are padded up to it).
pub const ETHERNET_MIN_PAYLOAD: u32 = 46;
/// Bytes of IPv4 (20) + UDP (8) header in front of every Homa packet (UDP mode).
pub const IP_UDP_OVERHEAD: u32 = 28;
/// The bytes in front of the Homa header that make our packets the SIGCOMM paper's
/// frames (`homa sim --paper`): its simulator's unscheduled DATA header is 30 bytes
/// (`HomaPkt::headerSize`) where ours is the Linux module's 56, so counting 2 bytes of
/// IP+UDP header instead of 28 gives a short message its frame (an 8-byte message: 104
/// bytes on the wire, not 130), a full unscheduled packet its 1,442 bytes of message,
/// and a GRANT the 84-byte minimum frame, as there.
pub const PAPER_IP_OVERHEAD: u32 = 2;
/// The IP MTU of every link.
pub const MTU: u32 = 1500;

/// Link bytes of one packet with `homa_len` bytes of Homa header and payload behind
/// `ip_overhead` bytes of IP (and UDP) header.
///
/// The simulator charges exactly these bytes on every link: IP+UDP header, Ethernet header,
/// FCS, preamble and inter-frame gap, with short frames padded to the Ethernet minimum.
/// The engine's pacer counts the same (`Config::ip_overhead`, its Ethernet constants 38
/// and 46), so its estimate of the NIC queue is exact here: the simulator takes
/// `ip_overhead` from the engine's configuration ([`Segmentation::of`]).
pub fn wire_bytes(homa_len: u32, ip_overhead: u32) -> u32 {
    (homa_len + ip_overhead).max(ETHERNET_MIN_PAYLOAD) + ETHERNET_OVERHEAD
}

/// Nanoseconds to serialize `bytes` at `mbps` megabits per second (rounded down, exactly
/// as the engine's pacer rounds, so the two agree packet by packet).
pub fn serialization_ns(bytes: u32, mbps: u32) -> u64 {
    bytes as u64 * 8_000 / mbps as u64
}

/// How a message of a given length is cut into DATA packets, and what each costs on a
/// link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segmentation {
    /// Message bytes in a full DATA packet (`Config::max_segment`: MTU - 28 - 56 = 1416).
    pub max_segment: u32,
    /// Bytes of IP (and UDP) header in front of every packet (`Config::ip_overhead`).
    pub ip_overhead: u32,
}

impl Default for Segmentation {
    /// UDP mode over 1500-byte IP packets.
    fn default() -> Self {
        Segmentation {
            max_segment: MTU - IP_UDP_OVERHEAD - homa_wire::DATA_HEADER_LEN as u32,
            ip_overhead: IP_UDP_OVERHEAD,
        }
    }
}

impl Segmentation {
    /// The packets the engine configured by `c` makes.
    pub fn of(c: &homa_core::Config) -> Segmentation {
        Segmentation {
            max_segment: c.max_segment(),
            ip_overhead: c.ip_overhead,
        }
    }

    /// Link bytes of one packet of `homa_len` bytes (see [`wire_bytes`]).
    pub fn wire(&self, homa_len: u32) -> u32 {
        wire_bytes(homa_len, self.ip_overhead)
    }

    /// Number of DATA packets of a `len`-byte message.
    pub fn packets(&self, len: u32) -> u32 {
        len.div_ceil(self.max_segment).max(1)
    }

    /// Wire bytes of the full packets, of the last packet, and the count of full ones.
    fn shape(&self, len: u32) -> (u32, u32, u32) {
        let n = self.packets(len);
        let last_payload = len - (n - 1) * self.max_segment;
        let full = self.wire(self.max_segment + homa_wire::DATA_HEADER_LEN as u32);
        let last = self.wire(last_payload + homa_wire::DATA_HEADER_LEN as u32);
        (full, last, n - 1)
    }

    /// Total wire bytes of a `len`-byte message (all its DATA packets with every header
    /// and Ethernet overhead).
    pub fn message_wire_bytes(&self, len: u32) -> u64 {
        let (full, last, nfull) = self.shape(len);
        full as u64 * nfull as u64 + last as u64
    }
}

/// The datacenter: `racks` top-of-rack switches with `hosts_per_rack` hosts each, and
/// `aggs` aggregation switches, each linked to every ToR. One rack and no aggregation
/// switches is a single-switch network.
///
/// Links are full duplex. Every switch output port has 8 strict-priority queues and
/// unlimited buffer; switches store and forward, adding `switch_latency_ns` between a
/// packet's last bit in and its eligibility on the output port. Packets between racks are
/// sprayed: each picks an aggregation switch at random.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Top-of-rack switches.
    pub racks: u32,
    /// Hosts under each ToR.
    pub hosts_per_rack: u32,
    /// Aggregation switches (0 for a single-switch network).
    pub aggs: u32,
    /// Host link rate, Mbit/s (both directions).
    pub host_mbps: u32,
    /// ToR-aggregation link rate, Mbit/s. Must be at least `host_mbps` (see
    /// [`Topology::ideal_ns`]).
    pub core_mbps: u32,
    /// Switch latency, from a packet fully received to eligible on its output port.
    pub switch_latency_ns: u64,
    /// Host software delay, once on sending (engine to NIC) and once on receiving (NIC to
    /// engine).
    pub host_delay_ns: u64,
    /// Propagation delay of every link.
    pub propagation_ns: u64,
    /// A further fixed delay on each host's link to its ToR, after the NIC has sent a
    /// packet (the SIGCOMM paper's simulator models its NIC's send "think time" so: 0.5 us;
    /// 0 in [`Topology::paper`]).
    pub nic_delay_ns: u64,
}

/// The most hosts a simulation may have.
pub const MAX_HOSTS: u32 = 16_384;

impl Topology {
    /// The Homa SIGCOMM 2018 simulations: 9 racks x 16 hosts, 10 Gbps host links, four
    /// aggregation switches with 40 Gbps links to every ToR, 0.25 us switch latency,
    /// 0.5 us host delay on each side, no propagation delay.
    pub fn paper() -> Topology {
        Topology {
            racks: 9,
            hosts_per_rack: 16,
            aggs: 4,
            host_mbps: 10_000,
            core_mbps: 40_000,
            switch_latency_ns: 250,
            host_delay_ns: 500,
            propagation_ns: 0,
            nic_delay_ns: 0,
        }
    }

    /// The paper's network with the paper simulator's host delays: 0.5 us of software on
    /// each side, and 0.5 us more between the sending NIC and its ToR (its
    /// `hostNicSxThinkTime`), 1.5 us in all, as its ideal counts them.
    pub fn paper_delays() -> Topology {
        Topology {
            nic_delay_ns: 500,
            ..Topology::paper()
        }
    }

    /// `hosts` hosts on one switch, with the paper's rates and delays.
    pub fn single_switch(hosts: u32) -> Topology {
        Topology {
            racks: 1,
            hosts_per_rack: hosts,
            aggs: 0,
            ..Topology::paper()
        }
    }

    /// Number of hosts.
    pub fn hosts(&self) -> u32 {
        self.racks * self.hosts_per_rack
    }

    /// The rack of host `h`.
    pub fn rack_of(&self, h: u32) -> u32 {
        h / self.hosts_per_rack
    }

    /// Check the shape and rates.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |m: &str| Err(SimError::Topology(m.to_string()));
        if self.racks == 0 || self.hosts_per_rack == 0 || self.hosts() < 2 {
            return bad("need at least two hosts");
        }
        if self.hosts() > MAX_HOSTS {
            // Every host keeps state for every peer it meets: memory grows with the
            // square of the hosts (160,000 took 1.2 GB before any traffic, 2^24 aborted).
            return bad(&format!(
                "at most {MAX_HOSTS} hosts (the paper's network has 144)"
            ));
        }
        if self.racks > 1 && self.aggs == 0 {
            return bad("several racks need aggregation switches");
        }
        if self.host_mbps == 0 || self.core_mbps == 0 {
            return bad("link rates must be at least 1 Mbps (0.001 Gbps)");
        }
        if self.racks > 1 && self.core_mbps < self.host_mbps {
            // The closed-form ideal time assumes the host links are the slowest.
            return bad("core links must be at least as fast as host links");
        }
        Ok(())
    }

    /// Links from `src` to `dst` and their rates: host uplink, then each switch's output.
    fn path_rates(&self, src: u32, dst: u32) -> ([u32; 4], usize) {
        if self.racks == 1 || self.rack_of(src) == self.rack_of(dst) {
            ([self.host_mbps, self.host_mbps, 0, 0], 2)
        } else {
            let (h, c) = (self.host_mbps, self.core_mbps);
            ([h, c, c, h], 4)
        }
    }

    /// The best possible time for a `len`-byte message from `src` to `dst`: alone in the
    /// network, sent back to back, from the sending application's call to the receiving
    /// engine's delivery.
    ///
    /// A message is `n-1` full DATA packets of wire size `w_f` and a last one of `w_l`
    /// (`n = 1`: just the last). With host delay `D`, propagation `P`, switch latency `L`,
    /// `s(w)` the serialization on a host link and `c(w)` on a core link (both
    /// [`serialization_ns`], the simulator's own rounding), and `H` links on the path
    /// (2 in a rack, 4 between racks):
    ///
    /// ```text
    /// a_k  = D + s(w_1) + ... + s(w_k)              packet k leaves the sender's NIC
    /// x(w) = P + L + (H - 2) * (P + L) + (H - 2)/2 * 2 c(w)   ... to eligible on the last
    ///        (= P + L in a rack, 3P + 3L + 2c(w) between racks)      switch's host port
    /// r_k  = a_k + x(w_k)                          release at the last switch port
    /// ```
    ///
    /// The last host link is the only other shared resource (core links are at least as
    /// fast as host links and sprayed), so it is a single server with releases `r_k` and
    /// service `s(w_k)`; its best finish is the earliest-release-first makespan. The full
    /// packets are released exactly one `s(w_f)` apart, so they keep it busy from `r_1` to
    /// `E = r_1 + (n-1) s(w_f)`, and the short last packet either joins them or, between
    /// racks, can overtake them through a faster core path:
    ///
    /// ```text
    /// n = 1:       F = r_1 + s(w_l)
    /// r_n >= r_1:  F = max(E, r_n) + s(w_l)
    /// r_n <  r_1:  F = max(r_n + s(w_l), r_1) + (n-1) s(w_f)
    /// ideal = F + P + D (+ the NIC delay, on the first link)
    /// ```
    ///
    /// In a rack this is `2D + 2P + L + sum_k s(w_k) + s(w_f)`: the store-and-forward
    /// pipeline with the largest packet crossing the second hop.
    pub fn ideal_ns(&self, seg: &Segmentation, src: u32, dst: u32, len: u32) -> u64 {
        let (rates, hops) = self.path_rates(src, dst);
        let (full, last, nfull) = seg.shape(len);
        let (d, p, l) = (
            self.host_delay_ns,
            self.propagation_ns,
            self.switch_latency_ns,
        );
        let to_last_port = |w: u32| -> u64 {
            p + l
                + rates[1..hops - 1]
                    .iter()
                    .map(|&r| serialization_ns(w, r) + p + l)
                    .sum::<u64>()
        };
        let (s_full, s_last) = (
            serialization_ns(full, self.host_mbps),
            serialization_ns(last, self.host_mbps),
        );
        let finish = if nfull == 0 {
            d + s_last + to_last_port(last) + s_last
        } else {
            let n = nfull as u64;
            let r1 = d + s_full + to_last_port(full);
            let rn = d + n * s_full + s_last + to_last_port(last);
            if rn >= r1 {
                (r1 + n * s_full).max(rn) + s_last
            } else {
                (rn + s_last).max(r1) + n * s_full
            }
        };
        finish + p + d + self.nic_delay_ns
    }

    /// The ideal time of a `len`-byte message as the SIGCOMM paper's simulator computes it
    /// (its `WorkloadSynthesizer::idealMsgEndToEndDelay`; the formula is a fact of that
    /// code, reproduced so that slowdowns divide by the same ideal): the message's bytes in
    /// 1472-byte frames (no Homa header) with every Ethernet, IP and UDP overhead, short
    /// frames padded to 84 wire bytes, serialized once at the host rate; plus one frame's
    /// store-and-forward at each switch (the first full frame's, or the only one's); plus
    /// the switches' fixed delays; plus `2 * host_delay_ns + nic_delay_ns`. Between racks
    /// that is three switches (ToR, aggregation, ToR), two frames at the core rate and one
    /// at the host rate. In a rack it is one frame at the host rate and *no* switch delay:
    /// the paper's code overwrites the ToR's fixed delay with the frame time (`=+`
    /// instead of `+=`), which makes its in-rack ideal 0.25 us smaller than any packet
    /// can go.
    pub fn paper_ideal_ns(&self, src: u32, dst: u32, len: u32) -> u64 {
        const FRAME_DATA: u64 = 1472; // 1500 - IP - UDP
        const FULL_FRAME: u64 = 1538; // 1500 + 14 + 4 + 8 + 12
        const MIN_FRAME: u64 = 84; // 64 + 8 + 12
        let (full, last) = (len as u64 / FRAME_DATA, len as u64 % FRAME_DATA);
        let last_frame = match (full, last) {
            (0, 0) => MIN_FRAME,
            (_, 0) => 0,
            (_, l) if l < 46 - 28 => MIN_FRAME,
            (_, l) => l + 28 + 38,
        };
        let total = full * FULL_FRAME + last_frame;
        let frame = if full > 0 { FULL_FRAME } else { last_frame };
        let ser = |bytes: u64, mbps: u32| bytes as f64 * 8_000.0 / mbps as f64;
        let (edge, fabric) = (ser(frame, self.host_mbps), ser(frame, self.core_mbps));
        let fix = self.switch_latency_ns as f64;
        let switches = if self.racks == 1 || self.rack_of(src) == self.rack_of(dst) {
            edge + 2.0 * self.propagation_ns as f64
        } else {
            3.0 * fix + 2.0 * fabric + edge + 4.0 * self.propagation_ns as f64
        };
        let hosts = (2 * self.host_delay_ns + self.nic_delay_ns) as f64;
        (ser(total, self.host_mbps) + switches + hosts).round() as u64
    }

    /// One-way latency of one full DATA packet and back of one GRANT between racks (or
    /// within the rack for a single switch): the round trip that unscheduled bytes must
    /// cover for a sender to keep its link busy.
    pub fn rtt_ns(&self, seg: &Segmentation) -> u64 {
        let far = if self.racks > 1 {
            self.hosts_per_rack
        } else {
            1
        };
        let data = self.ideal_ns(seg, 0, far, seg.max_segment);
        let grant_len = homa_wire::COMMON_HEADER_LEN as u32 + 5;
        let (rates, hops) = self.path_rates(0, far);
        let g = seg.wire(grant_len);
        let grant = 2 * self.host_delay_ns
            + self.nic_delay_ns
            + hops as u64 * self.propagation_ns
            + (hops as u64 - 1) * self.switch_latency_ns
            + rates[..hops]
                .iter()
                .map(|&r| serialization_ns(g, r))
                .sum::<u64>();
        data + grant
    }

    /// Switch output ports, numbered: per rack, `hosts_per_rack` down ports then `aggs`
    /// up ports; then per aggregation switch, one down port per rack.
    pub(crate) fn num_ports(&self) -> usize {
        (self.racks * (self.hosts_per_rack + self.aggs) + self.aggs * self.racks) as usize
    }

    /// The ToR port that leads down to host `h`.
    pub(crate) fn tor_down(&self, h: u32) -> u32 {
        self.rack_of(h) * (self.hosts_per_rack + self.aggs) + h % self.hosts_per_rack
    }

    /// The port of rack `r`'s ToR that leads up to aggregation switch `a`.
    pub(crate) fn tor_up(&self, r: u32, a: u32) -> u32 {
        r * (self.hosts_per_rack + self.aggs) + self.hosts_per_rack + a
    }

    /// The port of aggregation switch `a` that leads down to rack `r`.
    pub(crate) fn agg_down(&self, a: u32, r: u32) -> u32 {
        self.racks * (self.hosts_per_rack + self.aggs) + a * self.racks + r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_sizes_include_every_overhead() {
        // A full DATA packet: 1416 payload + 56 Homa + 28 IP/UDP = 1500 IP bytes.
        let seg = Segmentation::default();
        assert_eq!(seg.max_segment, 1416);
        assert_eq!(seg.wire(1472), 1538);
        // A GRANT (33 bytes): 61 IP bytes, no padding needed.
        assert_eq!(seg.wire(33), 99);
        // Anything shorter than the Ethernet minimum is padded.
        assert_eq!(seg.wire(10), 46 + 38);
        assert_eq!(seg.packets(1416), 1);
        assert_eq!(seg.packets(1417), 2);
        assert_eq!(seg.message_wire_bytes(1417), 1538 + seg.wire(57) as u64);
        // The paper's frames: an 8-byte message 104 bytes, a GRANT the minimum frame, a
        // full unscheduled packet 1,442 bytes of message in a full frame.
        let paper = Segmentation::of(&homa_core::Config {
            ip_overhead: PAPER_IP_OVERHEAD,
            ..homa_core::Config::default()
        });
        assert_eq!(paper.max_segment, 1442);
        assert_eq!(paper.wire(8 + 56), 104);
        assert_eq!(paper.wire(33), 84);
        assert_eq!(paper.message_wire_bytes(1442), 1538);
        assert_eq!(serialization_ns(1538, 10_000), 1230);
        assert_eq!(serialization_ns(1538, 40_000), 307);
    }

    #[test]
    fn ideal_time_by_hand() {
        let t = Topology::paper();
        let seg = Segmentation::default();
        // One 1-byte packet (123 wire bytes) in a rack: 0.5 + 0.0984 + 0.25 + 0.0984 + 0.5.
        assert_eq!(t.ideal_ns(&seg, 0, 1, 1), 500 + 98 + 250 + 98 + 500);
        // Between racks: two more switches and two 40 Gbps hops.
        assert_eq!(
            t.ideal_ns(&seg, 0, 16, 1),
            1000 + 3 * 250 + 98 + 24 + 24 + 98
        );
        // Two packets, the second short: both go over the first link, then a full one
        // crosses the rest.
        let two = t.ideal_ns(&seg, 0, 1, 1417);
        assert_eq!(
            two,
            1000 + 250 + 1230 + serialization_ns(seg.wire(57), 10_000) + 1230
        );
        // Between racks the short one overtakes the full one through the core and reaches
        // the last host link first: released at 500+1230+98+250+2*(24+250) = 2626, the full
        // one at 500+1230+250+2*(307+250) = 3094; then the full one takes 1230.
        assert_eq!(t.ideal_ns(&seg, 0, 16, 1417), 3094 + 1230 + 500);
    }

    #[test]
    fn the_papers_ideal_by_hand() {
        let t = Topology::paper_delays();
        // One byte between racks: an 84-byte frame (67.2 ns at 10 Gbps, 16.8 ns at 40),
        // three switches, 1.5 us of hosts: the "about 2.4 us" of the paper's code.
        assert_eq!(
            t.paper_ideal_ns(0, 16, 1),
            (67.2f64 + 750.0 + 33.6 + 67.2 + 1500.0).round() as u64
        );
        // In a rack its code drops the switch's fixed delay.
        assert_eq!(
            t.paper_ideal_ns(0, 1, 1),
            (67.2f64 * 2.0 + 1500.0).round() as u64
        );
        // 1472 bytes fill a frame exactly; one more byte is a short frame of its own.
        assert_eq!(
            t.paper_ideal_ns(0, 1, 1472),
            (1230.4f64 * 2.0 + 1500.0).round() as u64
        );
        assert_eq!(
            t.paper_ideal_ns(0, 1, 1473),
            (1230.4f64 + 67.2 + 1230.4 + 1500.0).round() as u64
        );
        // Our own ideal counts the NIC delay on the first link.
        let seg = Segmentation::default();
        assert_eq!(
            t.ideal_ns(&seg, 0, 1, 1),
            Topology::paper().ideal_ns(&seg, 0, 1, 1) + 500
        );
    }

    #[test]
    fn port_numbering_is_dense() {
        let t = Topology::paper();
        assert_eq!(t.num_ports(), 9 * 20 + 4 * 9);
        assert_eq!(t.tor_down(0), 0);
        assert_eq!(t.tor_down(17), 21);
        assert_eq!(t.tor_up(8, 3), 8 * 20 + 19);
        assert_eq!(t.agg_down(0, 0), 180);
        assert_eq!(t.agg_down(3, 8), t.num_ports() as u32 - 1);
        let s = Topology::single_switch(16);
        assert_eq!(s.num_ports(), 16);
        assert_eq!(s.tor_down(15), 15);
    }
}
