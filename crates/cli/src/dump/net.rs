//! Finding the Homa packet inside a captured frame: link layer, IP, and UDP when asked.

use std::net::IpAddr;

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};

/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// DLT_RAW as some BSDs number it.
pub const DLT_RAW_12: u32 = 12;
/// DLT_RAW as OpenBSD numbers it.
pub const DLT_RAW_14: u32 = 14;
/// LINKTYPE_RAW: the frame is an IPv4 or IPv6 packet.
pub const LINKTYPE_RAW: u32 = 101;
/// LINKTYPE_LINUX_SLL: Linux "cooked" capture (`tcpdump -i any`).
pub const LINKTYPE_LINUX_SLL: u32 = 113;
/// LINKTYPE_IPV4.
pub const LINKTYPE_IPV4: u32 = 228;
/// LINKTYPE_IPV6.
pub const LINKTYPE_IPV6: u32 = 229;
/// LINKTYPE_LINUX_SLL2: the newer cooked header (`tcpdump -i any` since libpcap 1.10).
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

/// IP protocol number of Homa.
pub const IPPROTO_HOMA: u8 = 146;
const IPPROTO_UDP: u8 = 17;
const SLL_HEADER_LEN: usize = 16;
const SLL2_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: u32 = 40;

/// The IP header fields a dump shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpInfo {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IPv4 TOS or IPv6 traffic class (Homa priority in the top three bits).
    pub tos: u8,
    /// Length of the whole IP packet according to its header.
    pub iplen: u32,
}

/// Why a frame's Homa bytes cannot be decoded even though the frame is Homa.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameProblem {
    /// The capture kept fewer bytes than the IP header says the packet has.
    CaptureTruncated {
        /// Homa bytes present in the capture.
        captured: usize,
        /// Homa bytes the IP header implies.
        expected: usize,
    },
    /// A fragment of an IP packet: its bytes are not a whole Homa packet.
    Fragment,
    /// The IP length field cannot be right (IPv4 shorter than its header, IPv6 zero).
    BadIpLength,
}

/// A frame that carries Homa.
#[derive(Debug, Clone, Copy)]
pub struct HomaFrame<'a> {
    /// The enclosing IP header.
    pub ip: IpInfo,
    /// The Homa packet: exactly the bytes the IP (or UDP) length covers, or fewer if the
    /// capture was cut short (then `problem` says so).
    pub bytes: &'a [u8],
    /// Set when `bytes` must not be decoded as a packet.
    pub problem: Option<FrameProblem>,
}

/// Why a frame is not shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A well-formed packet that is not Homa (another protocol, another UDP port, ARP...).
    Other,
    /// The link or IP headers could not be read far enough to tell.
    Unreadable,
    /// A link type `homa dump` does not know.
    UnsupportedLink(u32),
}

/// Find the Homa packet in a frame of link type `link_type`: IP protocol 146, or a UDP
/// datagram from or to `udp_port` when one is given.
pub fn locate(link_type: u32, frame: &[u8], udp_port: Option<u16>) -> Result<HomaFrame<'_>, Skip> {
    let sliced = match link_type {
        LINKTYPE_ETHERNET => {
            // Handles VLAN tags too.
            LaxSlicedPacket::from_ethernet(frame).map_err(|_| Skip::Unreadable)?
        }
        LINKTYPE_RAW | DLT_RAW_12 | DLT_RAW_14 | LINKTYPE_IPV4 | LINKTYPE_IPV6 => {
            // The version nibble tells v4 from v6, whatever the link type claims.
            LaxSlicedPacket::from_ip(frame).map_err(|_| Skip::Unreadable)?
        }
        LINKTYPE_LINUX_SLL => {
            // packet type, ARPHRD type, address length, 8 address bytes, protocol.
            let proto = be16_at(frame, 14).ok_or(Skip::Unreadable)?;
            LaxSlicedPacket::from_ether_type(EtherType(proto), &frame[SLL_HEADER_LEN..])
        }
        LINKTYPE_LINUX_SLL2 => {
            // protocol, reserved, interface index, ARPHRD type, packet type, address
            // length, 8 address bytes.
            let proto = be16_at(frame, 0).ok_or(Skip::Unreadable)?;
            if frame.len() < SLL2_HEADER_LEN {
                return Err(Skip::Unreadable);
            }
            LaxSlicedPacket::from_ether_type(EtherType(proto), &frame[SLL2_HEADER_LEN..])
        }
        other => return Err(Skip::UnsupportedLink(other)),
    };

    let (ip, ip_header, payload, bad_len) = match &sliced.net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let h = v4.header();
            let info = IpInfo {
                src: h.source_addr().into(),
                dst: h.destination_addr().into(),
                tos: h.slice()[1],
                iplen: u32::from(h.total_len()),
            };
            // etherparse falls back to the frame length here, which would take Ethernet
            // padding for Homa bytes.
            let bad_len = usize::from(h.total_len()) < h.slice().len();
            (info, h.slice(), v4.payload(), bad_len)
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let h = v6.header();
            let info = IpInfo {
                src: h.source_addr().into(),
                dst: h.destination_addr().into(),
                tos: h.traffic_class(),
                iplen: IPV6_HEADER_LEN + u32::from(h.payload_length()),
            };
            // Zero means a jumbogram, which no Homa packet is; etherparse would fall back
            // to the frame length.
            let bad_len = h.payload_length() == 0;
            (info, h.slice(), v6.payload(), bad_len)
        }
        Some(LaxNetSlice::Arp(_)) => return Err(Skip::Other),
        None if sliced.stop_err.is_some() => return Err(Skip::Unreadable),
        None => return Err(Skip::Other),
    };

    let bytes = match payload.ip_number.0 {
        IPPROTO_HOMA => payload.payload,
        IPPROTO_UDP => match (udp_port, &sliced.transport) {
            (Some(port), Some(TransportSlice::Udp(udp)))
                if udp.source_port() == port || udp.destination_port() == port =>
            {
                udp.payload()
            }
            _ => return Err(Skip::Other),
        },
        _ => return Err(Skip::Other),
    };

    let problem = if bad_len {
        Some(FrameProblem::BadIpLength)
    } else if payload.fragmented {
        Some(FrameProblem::Fragment)
    } else if payload.incomplete {
        Some(truncation(&ip, ip_header, bytes))
    } else {
        None
    };
    Ok(HomaFrame { ip, bytes, problem })
}

/// How much of the Homa packet is missing from a frame cut short by the snap length.
fn truncation(ip: &IpInfo, ip_header: &[u8], homa: &[u8]) -> FrameProblem {
    // Both slices point into the same frame, so the distance between their starts is the
    // length of every header between the IP header and Homa (IP options, extension
    // headers, UDP).
    let headers = (homa.as_ptr() as usize).saturating_sub(ip_header.as_ptr() as usize);
    FrameProblem::CaptureTruncated {
        captured: homa.len(),
        expected: (ip.iplen as usize).saturating_sub(headers),
    }
}

fn be16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}
