//! Finding the Homa packet inside a captured frame: link layer, IP, and UDP when asked.

use std::net::IpAddr;

use etherparse::err::Layer;
use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};

use crate::capture::Frame;

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
pub(crate) const IPPROTO_UDP: u8 = 17;
const SLL_HEADER_LEN: usize = 16;
const SLL2_HEADER_LEN: usize = 20;
pub(crate) const IPV6_HEADER_LEN: u32 = 40;
const UDP_HEADER_LEN: usize = 8;

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
    /// The frame was shorter on the wire (its original length, not just what the capture
    /// kept) than the Homa packet its IP header announces: the packet itself is broken.
    ShortFrame {
        /// Homa bytes the frame had on the wire.
        on_wire: usize,
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
    /// The Homa bytes the capture kept: exactly the `len` bytes the IP (or UDP) length
    /// covers, or the first of them when the capture's snap length cut the frame.
    pub bytes: &'a [u8],
    /// Length of the Homa packet on the wire, from the IP (or UDP) length field.
    pub len: usize,
    /// Set when `bytes` must not be decoded as a packet.
    pub problem: Option<FrameProblem>,
    /// Whether Homa rode in UDP (whose datagrams a GSO send may have filled with several
    /// Homa packets) rather than directly in IP.
    pub udp: bool,
}

/// Why a frame is not shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A well-formed packet that is not Homa (another protocol, another UDP port, ARP...).
    Other,
    /// An empty UDP datagram on the Homa port: no Homa packet is empty; the `homa`
    /// runtime sends these to its own socket to wake a thread blocked on it.
    Empty,
    /// The link or IP headers could not be read far enough to tell.
    Unreadable,
    /// A link type `homa dump` does not know.
    UnsupportedLink(u32),
}

/// Find the Homa packet in a frame: IP protocol 146, or a UDP datagram from or to
/// `udp_port` when one is given.
///
/// A frame cut by the capture's snap length still gives its Homa packet, with fewer
/// `bytes` than its `len`, as long as the IP header (and the UDP ports) were kept; the
/// frame's original length tells such a cut from a packet that was short on the wire.
pub fn locate<'a>(captured: &Frame<'a>, udp_port: Option<u16>) -> Result<HomaFrame<'a>, Skip> {
    let sliced = match link(captured)? {
        // Handles VLAN tags too.
        Link::Ethernet(frame) => {
            LaxSlicedPacket::from_ethernet(frame).map_err(|_| Skip::Unreadable)?
        }
        // The version nibble tells v4 from v6, whatever the link type claims.
        Link::Ip(frame) => LaxSlicedPacket::from_ip(frame).map_err(|_| Skip::Unreadable)?,
        Link::EtherType(proto, rest) => LaxSlicedPacket::from_ether_type(proto, rest),
    };
    locate_in(captured, &sliced, udp_port)
}

/// What follows a frame's link layer, by how it is to be read.
pub(crate) enum Link<'a> {
    /// An Ethernet frame (VLAN tags and all).
    Ethernet(&'a [u8]),
    /// An IP packet, v4 or v6.
    Ip(&'a [u8]),
    /// The payload of a cooked capture's header, of this EtherType.
    EtherType(EtherType, &'a [u8]),
}

/// The part of `captured` past any cooked link header, and how to read it.
pub(crate) fn link<'a>(captured: &Frame<'a>) -> Result<Link<'a>, Skip> {
    let frame = captured.data;
    match captured.link_type {
        LINKTYPE_ETHERNET => Ok(Link::Ethernet(frame)),
        LINKTYPE_RAW | DLT_RAW_12 | DLT_RAW_14 | LINKTYPE_IPV4 | LINKTYPE_IPV6 => {
            Ok(Link::Ip(frame))
        }
        LINKTYPE_LINUX_SLL => {
            // packet type, ARPHRD type, address length, 8 address bytes, protocol.
            let proto = be16_at(frame, 14).ok_or(Skip::Unreadable)?;
            Ok(Link::EtherType(EtherType(proto), &frame[SLL_HEADER_LEN..]))
        }
        LINKTYPE_LINUX_SLL2 => {
            // protocol, reserved, interface index, ARPHRD type, packet type, address
            // length, 8 address bytes.
            let proto = be16_at(frame, 0).ok_or(Skip::Unreadable)?;
            if frame.len() < SLL2_HEADER_LEN {
                return Err(Skip::Unreadable);
            }
            Ok(Link::EtherType(EtherType(proto), &frame[SLL2_HEADER_LEN..]))
        }
        other => Err(Skip::UnsupportedLink(other)),
    }
}

fn locate_in<'a>(
    captured: &Frame<'a>,
    sliced: &LaxSlicedPacket<'a>,
    udp_port: Option<u16>,
) -> Result<HomaFrame<'a>, Skip> {
    let frame = captured.data;
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

    let udp = match payload.ip_number.0 {
        IPPROTO_HOMA => false,
        IPPROTO_UDP => true,
        // The capture cut the IPv6 extension headers (or an IPv4 authentication header)
        // before the protocol that follows them: it may be Homa, there is no telling.
        _ if sliced
            .stop_err
            .as_ref()
            .is_some_and(|(_, layer)| is_ip_extension(*layer)) =>
        {
            return Err(Skip::Unreadable)
        }
        _ => return Err(Skip::Other),
    };
    let bytes = match (udp, udp_port, &sliced.transport) {
        (false, _, _) => payload.payload,
        (true, Some(port), Some(TransportSlice::Udp(d)))
            if d.source_port() == port || d.destination_port() == port =>
        {
            if d.length() as usize == UDP_HEADER_LEN {
                return Err(Skip::Empty);
            }
            d.payload()
        }
        // The capture cut the UDP header: the ports, if kept, still say whether it is Homa
        // (then with no Homa bytes captured).
        (true, Some(port), None) if payload.incomplete => {
            match (be16_at(payload.payload, 0), be16_at(payload.payload, 2)) {
                (Some(s), Some(d)) if s == port || d == port => &[][..],
                (Some(_), Some(_)) => return Err(Skip::Other),
                _ => return Err(Skip::Unreadable),
            }
        }
        _ => return Err(Skip::Other),
    };

    // Whole packets: the Homa bytes are exactly what the IP (or UDP) length covers. Cut
    // ones: the IP length says how long the Homa packet was.
    let (len, problem) = if bad_len {
        (bytes.len(), Some(FrameProblem::BadIpLength))
    } else if payload.fragmented {
        (bytes.len(), Some(FrameProblem::Fragment))
    } else if payload.incomplete {
        let len = homa_len(&ip, ip_header, payload.payload, udp);
        // Where Homa starts in the frame (past the UDP header, even a cut one).
        let at = offset(frame, payload.payload) + if udp { UDP_HEADER_LEN } else { 0 };
        // A frame whose original length could not hold the packet was short on the wire,
        // not cut by the capture (or a file with a lying original length).
        let on_wire = (captured.orig_len as usize).saturating_sub(at);
        if on_wire < len {
            let problem = FrameProblem::ShortFrame {
                on_wire,
                expected: len,
            };
            (len, Some(problem))
        } else {
            (len, None)
        }
    } else {
        (bytes.len(), None)
    };
    Ok(HomaFrame {
        ip,
        bytes,
        len,
        problem,
        udp,
    })
}

/// The Homa packet in a packet put back together from IP fragments: `payload` (what
/// followed the IP header, of IP `protocol`) is a Homa packet, or a UDP datagram that is
/// Homa when it is from or to `udp_port`.
pub(crate) fn locate_in_whole(
    ip: IpInfo,
    protocol: u8,
    payload: &[u8],
    udp_port: Option<u16>,
) -> Result<HomaFrame<'_>, Skip> {
    fn homa(ip: IpInfo, bytes: &[u8], udp: bool) -> HomaFrame<'_> {
        HomaFrame {
            ip,
            bytes,
            len: bytes.len(),
            problem: None,
            udp,
        }
    }
    if protocol == IPPROTO_HOMA {
        return Ok(homa(ip, payload, false));
    }
    let be16 = |at| be16_at(payload, at);
    let (Some(port), Some(sport), Some(dport), Some(udp_len)) =
        (udp_port, be16(0), be16(2), be16(4))
    else {
        return Err(Skip::Other);
    };
    if sport != port && dport != port {
        return Err(Skip::Other);
    }
    let end = usize::from(udp_len).min(payload.len());
    match payload.get(UDP_HEADER_LEN..end) {
        Some([]) => Err(Skip::Empty),
        Some(bytes) => Ok(homa(ip, bytes, true)),
        None => Err(Skip::Unreadable),
    }
}

/// The Homa length an IP header implies: its payload length (past options and extension
/// headers), less the UDP header when Homa rides in UDP.
fn homa_len(ip: &IpInfo, ip_header: &[u8], ip_payload: &[u8], udp: bool) -> usize {
    let headers = offset(ip_header, ip_payload);
    let ip_payload_len = (ip.iplen as usize).saturating_sub(headers);
    ip_payload_len.saturating_sub(if udp { UDP_HEADER_LEN } else { 0 })
}

/// How far into `outer` the slice `inner` starts. Both point into the same frame, so the
/// distance between their starts is the length of the headers between them.
fn offset(outer: &[u8], inner: &[u8]) -> usize {
    (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize)
}

/// The layers etherparse walks between the IP header and the transport header.
fn is_ip_extension(layer: Layer) -> bool {
    matches!(
        layer,
        Layer::IpAuthHeader
            | Layer::Ipv6ExtHeader
            | Layer::Ipv6HopByHopHeader
            | Layer::Ipv6DestOptionsHeader
            | Layer::Ipv6RouteHeader
            | Layer::Ipv6FragHeader
    )
}

fn be16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}
