use crate::PacketType;

/// Why a buffer could not be read as a Homa packet.
///
/// Every way untrusted bytes can be wrong has its own variant, so that a receiver can count
/// drops by reason and `homa dump` can say exactly what is wrong with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Shorter than the common header, or than the header its type requires.
    #[error("truncated: {ty} needs {needed} header bytes, got {got}")]
    Truncated {
        /// The type, when the type byte itself was present.
        ty: TypeName,
        /// Bytes the header needs.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The type byte names no Homa packet type.
    #[error("unknown packet type 0x{0:02x}")]
    UnknownType(u8),
    /// An ACK claims more than the five acks its header has room for.
    #[error("ACK num_acks {0} exceeds 5")]
    TooManyAcks(u16),
    /// A DATA packet for an empty message.
    #[error("DATA message_length is 0")]
    ZeroMessageLength,
    /// A DATA packet for a message longer than the configured maximum.
    #[error("DATA message_length {length} exceeds the maximum {max}")]
    MessageTooLong {
        /// The message_length field.
        length: u32,
        /// The configured maximum.
        max: u32,
    },
    /// A DATA segment that reaches past the end of its message.
    #[error("DATA segment {offset}+{len} runs past message_length {message_length}")]
    SegmentPastEnd {
        /// First byte of the segment.
        offset: u32,
        /// Payload bytes in the packet.
        len: usize,
        /// The message_length field.
        message_length: u32,
    },
}

impl ParseError {
    /// Every reason name, in [`index`](Self::index) order.
    pub const REASONS: [&'static str; 6] = [
        "truncated",
        "unknown_type",
        "too_many_acks",
        "zero_message_length",
        "message_too_long",
        "segment_past_end",
    ];

    /// Position of this error's reason in [`REASONS`](Self::REASONS), for counter arrays.
    pub fn index(&self) -> usize {
        match self {
            ParseError::Truncated { .. } => 0,
            ParseError::UnknownType(_) => 1,
            ParseError::TooManyAcks(_) => 2,
            ParseError::ZeroMessageLength => 3,
            ParseError::MessageTooLong { .. } => 4,
            ParseError::SegmentPastEnd { .. } => 5,
        }
    }

    /// A short stable name for the reason, for metrics labels and JSON.
    pub fn reason(&self) -> &'static str {
        Self::REASONS[self.index()]
    }
}

/// The packet type named in a [`ParseError::Truncated`], if the type byte was readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeName(pub Option<PacketType>);

impl core::fmt::Display for TypeName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(t) => f.write_str(t.name()),
            None => f.write_str("packet"),
        }
    }
}

/// Why a packet could not be built or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// The output buffer cannot hold header + payload.
    #[error("buffer too small: need {needed} bytes, have {got}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// More than five acks for one ACK packet.
    #[error("an ACK packet holds at most 5 acks, got {0}")]
    TooManyAcks(usize),
    /// A DATA header whose payload does not fit inside its message.
    #[error("DATA segment {offset}+{len} runs past message_length {message_length}")]
    SegmentPastEnd {
        /// First byte of the segment.
        offset: u32,
        /// Payload bytes.
        len: usize,
        /// The message length.
        message_length: u32,
    },
    /// A DATA header for an empty message.
    #[error("DATA message_length is 0")]
    ZeroMessageLength,
    /// A DATA header carrying an ack of client RPC 0: on the wire, 0 there means "no
    /// ack", so the receiver would read none (no client RPC has id 0).
    #[error("DATA header carries an ack of client RPC 0, which the wire reads as no ack")]
    AckOfRpcZero,
    /// Payload bytes given for a packet type that carries none.
    #[error("{0} packets carry no payload")]
    UnexpectedPayload(PacketType),
    /// DATA flags written over a header that is not a DATA header.
    #[error("DATA flags written over a header that is not DATA")]
    NotData,
}
