//! Homa packets that IP fragmented on the way, put back together so that a dump shows
//! them whole: UDP datagrams longer than a hop's MTU (an IPv4 router fragments them, an
//! IPv6 sender once a Packet Too Big told it the path's MTU), or raw Homa packets the
//! same way. Only fragments the capture kept whole can be joined; a fragment cut by the
//! snap length is shown as before, as an `ip_fragment` error line.

use std::collections::HashMap;
use std::net::IpAddr;

use etherparse::defrag::IpDefragPool;
use etherparse::{Ipv6ExtensionSlice, NetSlice, SlicedPacket};

use crate::capture::Frame;
use crate::net::{link, IpInfo, Link, IPPROTO_HOMA, IPPROTO_UDP, IPV6_HEADER_LEN};
/// Fragments of a packet are kept while one of them came within this many fragments;
/// older ones are given up (a capture that lost the rest, or a flood of fragments), so
/// that a long capture's reassembly holds bounded memory.
const KEEP_FRAGMENTS: u64 = 65_536;
/// How often (in fragments) the ones given up are swept.
const SWEEP_FRAGMENTS: u64 = 4_096;

/// (source, destination, identification, protocol): the packet a fragment is of.
type Key = (IpAddr, IpAddr, u32, u8);

/// What [`Defrag::take`] made of a frame.
pub(crate) enum Fragment {
    /// Not a fragment of a UDP or Homa packet kept whole by the capture: read the frame
    /// as it is.
    NotOne,
    /// A fragment, kept until the rest of its packet comes.
    Held,
    /// The last fragment of a packet: the packet, whole.
    Complete {
        /// Its IP header's fields (`iplen` of the whole packet, unfragmented).
        ip: IpInfo,
        /// Its IP protocol (UDP or Homa).
        protocol: u8,
        /// What followed its IP header: a UDP datagram, or a Homa packet.
        payload: Vec<u8>,
        /// The fragments it came in.
        fragments: u64,
    },
}

/// The fragments of packets not yet whole.
#[derive(Debug, Clone, Default)]
pub(crate) struct Defrag {
    pool: IpDefragPool<u64, ()>,
    /// Fragments held per packet, and the number of the last one that came.
    held: HashMap<Key, (u64, u64)>,
    /// Their sum.
    pending: u64,
    /// Fragments taken so far (their numbering, the pool's timestamps).
    taken: u64,
}

impl Defrag {
    /// Take `captured` if it is a whole fragment of a UDP or Homa packet.
    pub(crate) fn take(&mut self, captured: &Frame<'_>) -> Fragment {
        if captured.data.len() < captured.orig_len as usize {
            return Fragment::NotOne;
        }
        let sliced = match link(captured) {
            Ok(Link::Ethernet(f)) => SlicedPacket::from_ethernet(f),
            Ok(Link::Ip(f)) => SlicedPacket::from_ip(f),
            Ok(Link::EtherType(t, rest)) => SlicedPacket::from_ether_type(t, rest),
            Err(_) => return Fragment::NotOne,
        };
        let Ok(sliced) = sliced else {
            return Fragment::NotOne;
        };
        let (key, mut ip, header_len) = match &sliced.net {
            Some(NetSlice::Ipv4(v4)) => {
                let h = v4.header();
                if !h.is_fragmenting_payload() {
                    return Fragment::NotOne;
                }
                let (src, dst) = (h.source_addr().into(), h.destination_addr().into());
                let protocol = v4.payload().ip_number.0;
                let key = (src, dst, u32::from(h.identification()), protocol);
                (key, ip_info(src, dst, h.slice()[1]), h.slice().len())
            }
            Some(NetSlice::Ipv6(v6)) => {
                let fragment = v6.extensions().clone().into_iter().find_map(|e| match e {
                    Ipv6ExtensionSlice::Fragment(f) => Some(f),
                    _ => None,
                });
                let Some(f) = fragment.filter(|f| f.is_fragmenting_payload()) else {
                    return Fragment::NotOne;
                };
                let h = v6.header();
                let (src, dst) = (h.source_addr().into(), h.destination_addr().into());
                let protocol = v6.payload().ip_number.0;
                let key = (src, dst, f.identification(), protocol);
                (
                    key,
                    ip_info(src, dst, h.traffic_class()),
                    IPV6_HEADER_LEN as usize,
                )
            }
            _ => return Fragment::NotOne,
        };
        if key.3 != IPPROTO_UDP && key.3 != IPPROTO_HOMA {
            return Fragment::NotOne;
        }
        self.taken += 1;
        if self.taken % SWEEP_FRAGMENTS == 0 {
            let taken = self.taken;
            self.pool.retain(|&last| last + KEEP_FRAGMENTS > taken);
            self.held
                .retain(|_, &mut (_, last)| last + KEEP_FRAGMENTS > taken);
        }
        match self.pool.process_sliced_packet(&sliced, self.taken, ()) {
            Ok(None) => {
                let entry = self.held.entry(key).or_default();
                *entry = (entry.0 + 1, self.taken);
                self.pending += 1;
                Fragment::Held
            }
            Ok(Some(whole)) => {
                let (earlier, _) = self.held.remove(&key).unwrap_or_default();
                self.pending -= earlier;
                ip.iplen = (header_len + whole.payload.len()) as u32;
                Fragment::Complete {
                    ip,
                    protocol: key.3,
                    payload: whole.payload,
                    fragments: earlier + 1,
                }
            }
            // Overlapping or out-of-range fragments: shown as they are.
            Err(_) => Fragment::NotOne,
        }
    }

    /// Fragments held for packets that are not whole yet.
    pub(crate) fn pending(&self) -> u64 {
        self.pending
    }
}

fn ip_info(src: IpAddr, dst: IpAddr, tos: u8) -> IpInfo {
    IpInfo {
        src,
        dst,
        tos,
        iplen: 0,
    }
}
