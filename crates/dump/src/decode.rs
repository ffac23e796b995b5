//! Homa bytes to the fields a dump shows, raw ones included.

use homa_wire::{PacketType, PacketView, ParseError, Repr, TypeName, SEG_OFFSET_IN_SEQUENCE};

use crate::net::FrameProblem;

/// Every field of a Homa packet that passed validation, as on the wire.
///
/// [`Repr`] keeps only what the protocol uses (it drops `doff`, `flags`, a DATA ack whose
/// client id is 0...); a dump must show what was actually sent, so this copies the raw
/// fields out of the checked [`PacketView`] once [`Repr`] has accepted the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The packet type.
    pub packet_type: PacketType,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// The TCP-overlay `sequence` field.
    pub sequence: u32,
    /// The TCP data-offset field: the high nibble of byte 12 (14 for DATA, 5 otherwise).
    pub doff: u8,
    /// The TCP-overlay flags byte.
    pub flags: u8,
    /// The TCP-overlay window.
    pub window: u16,
    /// The checksum field as sent.
    pub checksum: u16,
    /// The TCP-overlay urgent field.
    pub urgent: u16,
    /// RPC id as the sender knows it.
    pub sender_id: u64,
    /// The type-specific fields.
    pub body: DecodedBody,
}

/// Type-specific fields, raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodedBody {
    /// DATA.
    Data {
        /// Total message length.
        message_length: u32,
        /// Bytes the sender will send without further grants.
        incoming: u32,
        /// Piggybacked ack client id (0: none).
        ack_client_id: u64,
        /// Piggybacked ack server port.
        ack_server_port: u16,
        /// Version of the receiver's cutoffs the sender uses.
        cutoff_version: u16,
        /// The raw retransmit byte.
        retransmit: u8,
        /// Offset in the message of the first payload byte (`seg_offset`, or `sequence`
        /// when `seg_offset` is 0xFFFFFFFF).
        offset: u32,
        /// The raw `seg.offset` field.
        seg_offset: u32,
        /// Message bytes in this packet.
        payload_len: usize,
        /// The pad byte where this project's one-way extension puts its flags
        /// (`homa_wire::DataFlags`: bit 0 a one-way message, bit 1 its ack names a
        /// one-way message); 0 in the module's packets.
        ext_flags: u8,
    },
    /// GRANT.
    Grant {
        /// Bytes below this offset may be sent.
        offset: u32,
        /// Priority for them.
        priority: u8,
    },
    /// RESEND.
    Resend {
        /// First byte wanted.
        offset: u32,
        /// Bytes wanted (0xFFFFFFFF: everything sent so far).
        length: u32,
        /// Priority for the retransmission.
        priority: u8,
    },
    /// CUTOFFS.
    Cutoffs {
        /// Index = priority, value = longest message using it unscheduled.
        unsched_cutoffs: [u32; 8],
        /// Version of these cutoffs.
        cutoff_version: u16,
    },
    /// ACK.
    Ack {
        /// The num_acks field.
        num_acks: u16,
        /// The acks, `(client_id, server_port)`.
        acks: Vec<(u64, u16)>,
    },
    /// RPC_UNKNOWN, BUSY, FREEZE, NEED_ACK: nothing past the common header.
    None,
}

/// What this project's extensions put in a CUTOFFS packet's `unsched_cutoffs[0]` (a slot
/// the module ignores; it sends `INT_MAX` there, we send 0): docs/PROTOCOL.md sections
/// 10 and 11. `None` for any other value.
pub(crate) fn cutoffs_mark(slot0: u32) -> Option<(&'static str, Option<u32>)> {
    use homa_wire::{OneWayMark, RefusalMark};
    match (OneWayMark::from_slot(slot0), RefusalMark::from_slot(slot0)) {
        (Some(OneWayMark::Query), _) => Some(("one_way_query", None)),
        (Some(OneWayMark::Accept), _) => Some(("one_way_accept", None)),
        (Some(OneWayMark::Refuse), _) => Some(("one_way_refuse", None)),
        (Some(OneWayMark::NoSocket), _) => Some(("one_way_no_socket", None)),
        (None, Some(RefusalMark::TooLong(len))) => Some(("refuse_too_long", Some(len))),
        (None, Some(RefusalMark::NeverFits(len))) => Some(("refuse_never_fits", Some(len))),
        (None, None) => None,
    }
}

/// The words for a DATA packet's extension flags (`ext_flags`): `one_way`, `ack_one_way`,
/// and any bit this version does not know in hex.
pub(crate) fn ext_flag_words(bits: u8) -> Vec<String> {
    use homa_wire::DataFlags;
    let known = DataFlags::from_bits(bits);
    let mut words = Vec::new();
    for (flag, word) in [
        (DataFlags::ONE_WAY, "one_way"),
        (DataFlags::ACK_ONE_WAY, "ack_one_way"),
    ] {
        if known.contains(flag) {
            words.push(word.to_owned());
        }
    }
    if bits != known.bits() {
        words.push(format!("{:#04x}", bits & !known.bits()));
    }
    words
}

/// Why a Homa packet in a capture is shown as an error line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a valid Homa packet.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The capture kept too little of the packet to read its header. (A capture that cut
    /// only the payload is decoded; see [`decode_captured`].)
    #[error(
        "capture truncated: {captured} of {expected} Homa bytes captured, fewer than the \
         {needed}-byte {ty} header"
    )]
    CaptureTruncated {
        /// The type, when the type byte was captured.
        ty: TypeName,
        /// Homa bytes present.
        captured: usize,
        /// Homa bytes the IP header implies.
        expected: usize,
        /// Bytes the header needs.
        needed: usize,
    },
    /// The frame itself, not just the capture, was shorter than its IP header says.
    #[error("the frame held {on_wire} Homa bytes on the wire, but its IP header says {expected}")]
    ShortFrame {
        /// Homa bytes the frame had on the wire (its original length, less the headers).
        on_wire: usize,
        /// Homa bytes the IP header implies.
        expected: usize,
    },
    /// Only a fragment of the IP packet is here.
    #[error("IP fragment: a piece of a Homa packet cannot be decoded alone")]
    Fragment,
    /// The IP header's length field is impossible.
    #[error("the IP header's length field is shorter than the header")]
    BadIpLength,
}

impl DecodeError {
    /// A short stable name for the reason: [`ParseError::reason`] for parse errors.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Parse(e) => e.reason(),
            DecodeError::CaptureTruncated { .. } => "capture_truncated",
            DecodeError::ShortFrame { .. } => "short_frame",
            DecodeError::Fragment => "ip_fragment",
            DecodeError::BadIpLength => "bad_ip_length",
        }
    }
}

impl From<FrameProblem> for DecodeError {
    fn from(p: FrameProblem) -> Self {
        match p {
            FrameProblem::ShortFrame { on_wire, expected } => {
                DecodeError::ShortFrame { on_wire, expected }
            }
            FrameProblem::Fragment => DecodeError::Fragment,
            FrameProblem::BadIpLength => DecodeError::BadIpLength,
        }
    }
}

/// Validate `bytes` (exactly one Homa packet, header onward) and read all its fields.
pub fn decode(bytes: &[u8], max_message_length: u32) -> Result<Decoded, ParseError> {
    let view = PacketView::new_checked(bytes)?;
    // Judge the packet as a receiver would (message length limits, segment inside the
    // message); the fields themselves are read from the view below.
    Repr::from_view(&view, max_message_length)?;
    Ok(fields(&view, bytes.len()))
}

/// Validate and read a packet of `len` bytes of which the capture kept only the first
/// `bytes` (a snap length shorter than the frame): the header is read from the bytes
/// present and judged as [`decode`] judges the whole packet, and a DATA packet's
/// `payload_len` is the payload it carried on the wire, not the part captured.
///
/// A capture that cut the header itself gives [`DecodeError::CaptureTruncated`]. With all
/// `len` bytes present this is [`decode`].
pub fn decode_captured(
    bytes: &[u8],
    len: usize,
    max_message_length: u32,
) -> Result<Decoded, DecodeError> {
    if let Some(whole) = bytes.get(..len) {
        return Ok(decode(whole, max_message_length)?);
    }
    let view = match PacketView::new_checked(bytes) {
        Ok(view) => view,
        // Too short on the wire as well: the packet is what is wrong, not the capture.
        Err(ParseError::Truncated { ty, needed, .. }) if len < needed => {
            return Err(ParseError::Truncated {
                ty,
                needed,
                got: len,
            }
            .into())
        }
        Err(ParseError::Truncated { ty, needed, .. }) => {
            return Err(DecodeError::CaptureTruncated {
                ty,
                captured: bytes.len(),
                expected: len,
                needed,
            })
        }
        Err(e) => return Err(e.into()),
    };
    match Repr::from_view(&view, max_message_length) {
        // Judged by the payload present; judged below by the payload sent.
        Ok(_) | Err(ParseError::SegmentPastEnd { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    if let (Some(offset), Some(message_length)) = (view.data_offset(), view.message_length()) {
        let payload_len = len - view.header_len();
        if u64::from(offset) + payload_len as u64 > u64::from(message_length) {
            return Err(ParseError::SegmentPastEnd {
                offset,
                len: payload_len,
                message_length,
            }
            .into());
        }
    }
    Ok(fields(&view, len))
}

/// The fields of a checked packet that was `len` bytes long on the wire (the view may hold
/// fewer: then the DATA payload is partly missing).
fn fields(view: &PacketView<'_>, len: usize) -> Decoded {
    let packet_type = view.packet_type();
    let body = match packet_type {
        PacketType::Data => {
            let (ack_client_id, ack_server_port) = view.data_ack().unwrap_or_default();
            let seg_offset = view.seg_offset().unwrap_or(SEG_OFFSET_IN_SEQUENCE);
            DecodedBody::Data {
                message_length: view.message_length().unwrap_or_default(),
                incoming: view.incoming().unwrap_or_default(),
                ack_client_id,
                ack_server_port,
                cutoff_version: view.data_cutoff_version().unwrap_or_default(),
                retransmit: view.retransmit().unwrap_or_default(),
                offset: view.data_offset().unwrap_or_default(),
                seg_offset,
                payload_len: len.saturating_sub(view.header_len()),
                ext_flags: view.as_bytes()[homa_wire::DATA_FLAGS_AT],
            }
        }
        PacketType::Grant => DecodedBody::Grant {
            offset: view.grant_offset().unwrap_or_default(),
            priority: view.grant_priority().unwrap_or_default(),
        },
        PacketType::Resend => {
            let (offset, length, priority) = view.resend().unwrap_or_default();
            DecodedBody::Resend {
                offset,
                length,
                priority,
            }
        }
        PacketType::Cutoffs => DecodedBody::Cutoffs {
            unsched_cutoffs: view.cutoffs().unwrap_or_default(),
            cutoff_version: view.cutoffs_version().unwrap_or_default(),
        },
        PacketType::Ack => DecodedBody::Ack {
            num_acks: view.num_acks(),
            acks: view.acks().collect(),
        },
        PacketType::RpcUnknown | PacketType::Busy | PacketType::Freeze | PacketType::NeedAck => {
            DecodedBody::None
        }
    };
    Decoded {
        packet_type,
        sport: view.sport(),
        dport: view.dport(),
        sequence: view.sequence(),
        doff: view.doff() >> 4,
        flags: view.flags(),
        window: view.window(),
        checksum: view.checksum(),
        urgent: view.urgent(),
        sender_id: view.sender_id(),
        body,
    }
}

#[cfg(test)]
mod tests {
    use homa_wire::HOMA_MAX_MESSAGE_LENGTH as MAX;

    use super::*;
    use crate::test_packets::data;

    #[test]
    fn a_cut_payload_still_gives_the_whole_header() {
        let whole = data(1400, 1400, 5000);
        let full = decode(&whole, MAX).unwrap();
        // The header and 10 payload bytes kept.
        let cut = decode_captured(&whole[..66], whole.len(), MAX).unwrap();
        assert_eq!(cut, full);
        let DecodedBody::Data { payload_len, .. } = cut.body else {
            panic!("not DATA: {cut:?}");
        };
        assert_eq!(payload_len, 1400, "the payload sent, not the part captured");
        // Exactly the header, no payload at all.
        assert_eq!(decode_captured(&whole[..56], whole.len(), MAX), Ok(full));
    }

    #[test]
    fn a_cut_header_is_an_error() {
        let whole = data(0, 1400, 5000);
        let err = decode_captured(&whole[..40], whole.len(), MAX).unwrap_err();
        assert_eq!(
            err,
            DecodeError::CaptureTruncated {
                ty: TypeName(Some(PacketType::Data)),
                captured: 40,
                expected: 1456,
                needed: 56
            }
        );
        assert_eq!(err.reason(), "capture_truncated");
        assert_eq!(
            err.to_string(),
            "capture truncated: 40 of 1456 Homa bytes captured, fewer than the 56-byte \
             DATA header"
        );
        // Before the type byte: the common header is all that is known to be needed.
        let err = decode_captured(&whole[..6], whole.len(), MAX).unwrap_err();
        assert_eq!(
            err.to_string(),
            "capture truncated: 6 of 1456 Homa bytes captured, fewer than the 28-byte \
             packet header"
        );
        // The type byte captured and unknown: that is the packet's fault, not the cut's.
        let mut unknown = whole.clone();
        unknown[11] = 0x42;
        assert_eq!(
            decode_captured(&unknown[..20], unknown.len(), MAX),
            Err(DecodeError::Parse(ParseError::UnknownType(0x42)))
        );
    }

    #[test]
    fn a_packet_shorter_than_its_header_on_the_wire_is_a_parse_error() {
        // 40 Homa bytes on the wire (by the IP length), 30 captured: the header was never
        // whole, whatever the capture kept.
        let whole = data(0, 100, 100);
        assert_eq!(
            decode_captured(&whole[..30], 40, MAX),
            Err(DecodeError::Parse(ParseError::Truncated {
                ty: TypeName(Some(PacketType::Data)),
                needed: 56,
                got: 40
            }))
        );
    }

    #[test]
    fn a_cut_segment_is_judged_by_the_length_sent() {
        // A 1000-byte segment at 4500 of a 5000-byte message runs past its end; the 10
        // bytes captured would not.
        let mut whole = data(4000, 1000, 5000);
        whole[4..8].copy_from_slice(&4500u32.to_be_bytes());
        assert_eq!(
            decode_captured(&whole[..66], whole.len(), MAX),
            Err(DecodeError::Parse(ParseError::SegmentPastEnd {
                offset: 4500,
                len: 1000,
                message_length: 5000
            }))
        );
        assert_eq!(
            decode_captured(&whole[..66], whole.len(), MAX),
            decode(&whole, MAX).map_err(DecodeError::from)
        );
        // And the other checks still come first, as for a whole packet.
        whole[28..32].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(
            decode_captured(&whole[..66], whole.len(), MAX),
            Err(DecodeError::Parse(ParseError::ZeroMessageLength))
        );
    }

    #[test]
    fn all_bytes_present_is_plain_decode() {
        let whole = data(0, 100, 100);
        let full = decode(&whole, MAX).unwrap();
        assert_eq!(decode_captured(&whole, whole.len(), MAX), Ok(full.clone()));
        // Bytes past the packet's length (Ethernet padding) are not payload.
        let mut padded = whole.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(decode_captured(&padded, whole.len(), MAX), Ok(full));
    }
}
