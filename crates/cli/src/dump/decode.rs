//! Homa bytes to the fields a dump shows, raw ones included.

use homa_wire::{PacketType, PacketView, ParseError, Repr, SEG_OFFSET_IN_SEQUENCE};

use super::net::FrameProblem;

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

/// Why a Homa packet in a capture is shown as an error line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a valid Homa packet.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The capture kept only part of the packet.
    #[error("capture truncated: {captured} of {expected} Homa bytes captured")]
    CaptureTruncated {
        /// Homa bytes present.
        captured: usize,
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
            DecodeError::Fragment => "ip_fragment",
            DecodeError::BadIpLength => "bad_ip_length",
        }
    }
}

impl From<FrameProblem> for DecodeError {
    fn from(p: FrameProblem) -> Self {
        match p {
            FrameProblem::CaptureTruncated { captured, expected } => {
                DecodeError::CaptureTruncated { captured, expected }
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
                payload_len: view.payload().map_or(0, <[u8]>::len),
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
    Ok(Decoded {
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
    })
}
