//! Cutting a coalesced UDP datagram into its Homa packets.
//!
//! The runtime sends a run of same-size packets to one destination as one UDP GSO send
//! (`UDP_SEGMENT`); it is cut into datagrams of `segment` bytes (the last may be shorter)
//! only on the way out of the host, so a capture on the sending host before that (always
//! on loopback; on a NIC that segments in hardware) shows one UDP datagram holding the
//! packets back to back. The segment size is not in the capture: it is the length of the
//! first packet, which its header gives for a control packet (fixed per type) but not
//! for DATA (the payload runs to the end of the datagram), so for DATA it is found from
//! the next packet's header.
//!
//! Raw IP (protocol 146) frames are never cut: the runtime does not coalesce them (raw
//! sockets have no UDP GSO), nor are the Linux module's GSO packets whole packets back to
//! back, so bytes after a control header there are that packet's, not another packet.

use homa_wire::{PacketType, PacketView, COMMON_HEADER_LEN};

use crate::decode::{decode_captured, DecodeError};

/// Where a packet sat in a coalesced datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gso {
    /// 1-based position of the packet in the datagram.
    pub index: usize,
    /// Packets the datagram held: `ceil(datagram length / segment)`, or fewer when a
    /// packet did not decode (its error line then covers the rest of the datagram).
    /// `None` when the capture cut the datagram before the end of this packet, the first,
    /// could be told ([`Layout::FirstEndCut`]): then its length is unknown too.
    pub count: Option<usize>,
}

/// How the Homa bytes of a UDP datagram divide into packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One packet: the common case; also when the first packet's header is missing or
    /// invalid, since then nothing can be told.
    One,
    /// Packets of this many bytes back to back, the last maybe shorter.
    Segments(usize),
    /// Several packets, the first DATA, but the capture cut the datagram before any
    /// header that would show where the first ends (and the datagram is longer than the
    /// rest of the first packet's message, so it cannot be one packet).
    FirstEndCut,
}

/// How the `len` Homa bytes of a UDP datagram, of which the capture kept `bytes`, divide
/// into packets.
///
/// - A control packet is exactly its type's header (the runtime sends no more), so
///   anything past it is another packet.
/// - A DATA packet ends where a packet with the same ports starts and decodes (every
///   packet of a GSO send is from one socket to one destination, and the Homa port is the
///   UDP port); the first such place is taken. If the capture cut the datagram before
///   any, there is no telling where the first packet ends: a short message sent whole
///   ends with its message, but a burst of one message's segments does not, and both are
///   common. A datagram longer than the rest of the first packet's message is then
///   [`Layout::FirstEndCut`]; a shorter one is taken to be one packet, as it may be.
pub fn layout(bytes: &[u8], len: usize, max_message_length: u32) -> Layout {
    let Ok(first) = PacketView::new_checked(bytes) else {
        return Layout::One;
    };
    let header = first.header_len();
    if len <= header {
        return Layout::One;
    }
    if first.packet_type() != PacketType::Data {
        return Layout::Segments(header);
    }
    // A first packet that is not valid on its own (with no payload at all) gives no
    // segment size worth trusting: the datagram stays one (error) line, as it was.
    if decode_captured(&bytes[..header], header, max_message_length).is_err() {
        return Layout::One;
    }
    let message_length = first.message_length().unwrap_or_default();
    let rest_of_message = message_length.saturating_sub(first.data_offset().unwrap_or_default());
    let longest = header.saturating_add(rest_of_message as usize);
    let ports = &bytes[..4];
    let piece_decodes = |at: usize| {
        let (kept, piece_len) = piece(bytes, len, at, at);
        decode_captured(kept, piece_len, max_message_length)
    };
    // Most DATA datagrams are one packet, whose whole payload is searched: the ports
    // first, compared as one word (a byte-slice comparison per place made the dump of a
    // loopback capture, 64 KB DATA packets, twice as slow).
    let last = longest
        .min(len - 1)
        .min(bytes.len().saturating_sub(COMMON_HEADER_LEN));
    if let Some(searched) = bytes.get(header..last + 4) {
        let key = u32::from_ne_bytes([ports[0], ports[1], ports[2], ports[3]]);
        let found = searched
            .windows(4)
            .enumerate()
            .filter(|(_, w)| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) == key)
            .map(|(i, _)| header + i)
            .find(|&at| piece_decodes(at).is_ok());
        if let Some(at) = found {
            return Layout::Segments(at);
        }
    }
    // The datagram outruns the first packet's message, and the capture cut the place
    // where, at the latest, the next packet starts.
    if longest < len
        && matches!(
            piece_decodes(longest),
            Err(DecodeError::CaptureTruncated { .. })
        )
    {
        return Layout::FirstEndCut;
    }
    Layout::One
}

/// The piece of a datagram that starts at `at` in segments of `segment` bytes: the bytes
/// kept of it, and its length on the wire.
pub(crate) fn piece(bytes: &[u8], len: usize, segment: usize, at: usize) -> (&[u8], usize) {
    let piece_len = segment.min(len.saturating_sub(at));
    let end = (at + piece_len).min(bytes.len());
    (bytes.get(at..end).unwrap_or_default(), piece_len)
}

#[cfg(test)]
mod tests {
    use homa_wire::{AckEntry, Acks, Body, Grant, Repr, HOMA_MAX_MESSAGE_LENGTH as MAX};

    use super::*;
    use crate::test_packets::{common, data};

    fn grant(offset: u32) -> Vec<u8> {
        Repr {
            common: common(),
            body: Body::Grant(Grant {
                offset,
                priority: 2,
            }),
        }
        .to_vec(&[])
        .unwrap()
    }

    fn ack() -> Vec<u8> {
        let acks = Acks::new(&[AckEntry {
            client_id: 10,
            server_port: 4000,
        }])
        .unwrap();
        Repr {
            common: common(),
            body: Body::Ack(acks),
        }
        .to_vec(&[])
        .unwrap()
    }

    #[test]
    fn one_packet_is_not_cut() {
        for p in [data(0, 100, 100), data(0, 1400, 5000), grant(9000), ack()] {
            assert_eq!(layout(&p, p.len(), MAX), Layout::One);
        }
    }

    #[test]
    fn a_control_packet_is_its_header() {
        let two = [ack(), ack()].concat();
        assert_eq!(layout(&two, two.len(), MAX), Layout::Segments(80));
        let grant_then_garbage = [grant(1), vec![0xff; 5]].concat();
        assert_eq!(layout(&grant_then_garbage, 38, MAX), Layout::Segments(33));
        // Cut by the capture: the first header is enough; without it nothing is known.
        assert_eq!(layout(&two[..80], two.len(), MAX), Layout::Segments(80));
        assert_eq!(layout(&two[..79], two.len(), MAX), Layout::One);
    }

    #[test]
    fn a_data_packet_ends_where_the_next_header_starts() {
        // Segments of one message, the last shorter.
        let run = [
            data(0, 1000, 2500),
            data(1000, 1000, 2500),
            data(2000, 500, 2500),
        ]
        .concat();
        assert_eq!(layout(&run, run.len(), MAX), Layout::Segments(1056));
        // Whole short messages (each its message's end), and a non-final segment
        // followed by another message's packet.
        let small = [data(0, 100, 100), data(0, 100, 100)].concat();
        assert_eq!(layout(&small, small.len(), MAX), Layout::Segments(156));
        let mixed = [data(0, 1000, 9000), data(0, 100, 100)].concat();
        assert_eq!(layout(&mixed, mixed.len(), MAX), Layout::Segments(1056));
        // Cut by the capture after the second header: enough.
        assert_eq!(layout(&run[..1112], run.len(), MAX), Layout::Segments(1056));
    }

    #[test]
    fn a_next_header_with_other_ports_is_payload() {
        let mut run = [data(0, 1000, 2500), data(1000, 1000, 2500)].concat();
        run[1056..1058].copy_from_slice(&1234u16.to_be_bytes());
        assert_eq!(layout(&run, run.len(), MAX), Layout::One);
    }

    #[test]
    fn a_cut_datagram_longer_than_the_first_message_has_an_unknown_first_end() {
        // Whole short messages, and a burst that ends one message: both longer than the
        // first packet's message, where the first ends (156, 1056) cut.
        let small = [data(0, 100, 100), data(0, 100, 100), data(0, 100, 100)].concat();
        let run = [
            data(0, 1000, 2500),
            data(1000, 1000, 2500),
            data(2000, 500, 2500),
        ]
        .concat();
        for keep in [60, 156, 170] {
            assert_eq!(
                layout(&small[..keep], small.len(), MAX),
                Layout::FirstEndCut,
                "{keep}"
            );
        }
        assert_eq!(layout(&run[..100], run.len(), MAX), Layout::FirstEndCut);
        // Segments that stop short of their message's end: may be one packet.
        let start = [data(0, 1000, 9000), data(1000, 1000, 9000)].concat();
        assert_eq!(layout(&start[..100], start.len(), MAX), Layout::One);
        // Whole, and no packet where the first packet's message ends: broken, not cut.
        let mut other = small.clone();
        other[156..158].copy_from_slice(&1234u16.to_be_bytes());
        assert_eq!(layout(&other, other.len(), MAX), Layout::One);
    }

    #[test]
    fn pieces_stay_inside_the_bytes() {
        let b = [0u8; 100];
        assert_eq!(piece(&b, 250, 80, 0), (&b[..80], 80));
        assert_eq!(piece(&b, 250, 80, 80), (&b[80..100], 80));
        assert_eq!(piece(&b, 250, 80, 160), (&b[..0], 80));
        assert_eq!(piece(&b, 250, 80, 240), (&b[..0], 10));
        assert_eq!(piece(&b, 250, 80, 300), (&b[..0], 0));
    }
}
