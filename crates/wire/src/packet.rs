//! Zero-copy, bounds-checked views over the bytes of a Homa packet.

use crate::error::{ParseError, TypeName};

/// Length of the header every packet starts with.
pub const COMMON_HEADER_LEN: usize = 28;
/// Length of a DATA header, up to and including `seg.offset`.
pub const DATA_HEADER_LEN: usize = 56;
/// The longest header of any type in today's format: ACK, 80 bytes. (PROTOCOL.md's "90"
/// is the module's buffer reservation for headers, not a header that exists.)
pub const MAX_HEADER_LEN: usize = 80;
/// Acks an ACK packet has room for.
pub const MAX_ACKS: usize = 5;
/// Size of one `{client_id, server_port}` ack on the wire.
pub const ACK_SIZE: usize = 10;
/// Offset of the `acks` array in an ACK packet.
const ACKS_AT: usize = 30;
/// Header lengths of the types whose header is more than the common one.
pub(crate) const GRANT_HEADER_LEN: usize = 33;
pub(crate) const RESEND_HEADER_LEN: usize = 37;
pub(crate) const CUTOFFS_HEADER_LEN: usize = 62;
pub(crate) const ACK_HEADER_LEN: usize = ACKS_AT + MAX_ACKS * ACK_SIZE;
/// `seg.offset` value meaning "the offset is in `sequence`" (what Linux Homa sends).
pub const SEG_OFFSET_IN_SEQUENCE: u32 = 0xFFFF_FFFF;
/// RESEND `length` meaning "everything sent so far".
pub const RESEND_ALL: u32 = 0xFFFF_FFFF;

/// The nine Homa packet types, with their codes from `homa_wire.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum PacketType {
    /// Message bytes.
    Data = 0x10,
    /// Receiver permits the sender to send up to an offset.
    Grant = 0x11,
    /// Receiver asks for a range again.
    Resend = 0x12,
    /// The RPC a packet named does not exist here.
    RpcUnknown = 0x13,
    /// "I am alive but have nothing to send you now."
    Busy = 0x14,
    /// The receiver's unscheduled priority cutoffs.
    Cutoffs = 0x15,
    /// Debugging aid: freeze the peer's timetrace.
    Freeze = 0x16,
    /// Server asks the client to acknowledge a response.
    NeedAck = 0x17,
    /// Client acknowledges responses, letting the server free RPCs.
    Ack = 0x18,
}

impl PacketType {
    /// Every type, in code order.
    pub const ALL: [PacketType; 9] = [
        PacketType::Data,
        PacketType::Grant,
        PacketType::Resend,
        PacketType::RpcUnknown,
        PacketType::Busy,
        PacketType::Cutoffs,
        PacketType::Freeze,
        PacketType::NeedAck,
        PacketType::Ack,
    ];

    /// The type with this code, if any.
    #[inline]
    pub fn from_code(code: u8) -> Option<PacketType> {
        Some(match code {
            0x10 => PacketType::Data,
            0x11 => PacketType::Grant,
            0x12 => PacketType::Resend,
            0x13 => PacketType::RpcUnknown,
            0x14 => PacketType::Busy,
            0x15 => PacketType::Cutoffs,
            0x16 => PacketType::Freeze,
            0x17 => PacketType::NeedAck,
            0x18 => PacketType::Ack,
            _ => return None,
        })
    }

    /// The code on the wire.
    #[inline]
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The name used in PROTOCOL.md, dumps and metrics (`DATA`, `RPC_UNKNOWN`, ...).
    pub fn name(self) -> &'static str {
        match self {
            PacketType::Data => "DATA",
            PacketType::Grant => "GRANT",
            PacketType::Resend => "RESEND",
            PacketType::RpcUnknown => "RPC_UNKNOWN",
            PacketType::Busy => "BUSY",
            PacketType::Cutoffs => "CUTOFFS",
            PacketType::Freeze => "FREEZE",
            PacketType::NeedAck => "NEED_ACK",
            PacketType::Ack => "ACK",
        }
    }

    /// Bytes of header this type occupies (the Homa header, before any DATA payload).
    ///
    /// Linux Homa derives this from the type, not from `doff`: control packets all say
    /// doff 5 whatever their length.
    #[inline]
    pub fn header_len(self) -> usize {
        match self {
            PacketType::Data => DATA_HEADER_LEN,
            PacketType::Grant => GRANT_HEADER_LEN,
            PacketType::Resend => RESEND_HEADER_LEN,
            PacketType::RpcUnknown | PacketType::Busy | PacketType::Freeze => COMMON_HEADER_LEN,
            PacketType::NeedAck => COMMON_HEADER_LEN,
            PacketType::Cutoffs => CUTOFFS_HEADER_LEN,
            PacketType::Ack => ACK_HEADER_LEN,
        }
    }

    /// The `doff` byte Linux Homa writes for this type: 0xE0 for DATA, 0x50 otherwise.
    #[inline]
    pub fn doff(self) -> u8 {
        match self {
            PacketType::Data => 0xE0,
            _ => 0x50,
        }
    }
}

impl core::fmt::Display for PacketType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// A checked, zero-copy view of a Homa packet.
///
/// [`PacketView::new_checked`] verifies that the type is known and that the buffer holds the
/// whole header for that type (and, for ACK, that `num_acks` fits), so every accessor below
/// is infallible and cannot panic. It does not judge values against configuration (message
/// length limits): [`crate::Repr::parse`] does that.
#[derive(Debug, Clone, Copy)]
pub struct PacketView<'a> {
    bytes: &'a [u8],
    ty: PacketType,
}

// One range check and one load per field (indexing byte by byte checked each byte).
#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[at..at + 2]);
    u16::from_be_bytes(a)
}
#[inline]
fn be32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}
#[inline]
fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

// The accessors are `#[inline]` so that they compile to plain loads where the engine (another
// crate) reads a packet: a call per field cost more than the field itself.
impl<'a> PacketView<'a> {
    /// Check that `bytes` (starting at the Homa header) hold a whole header of a known type.
    #[inline]
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, ParseError> {
        if bytes.len() < COMMON_HEADER_LEN {
            let ty = bytes.get(11).and_then(|&c| PacketType::from_code(c));
            if let (None, Some(&code)) = (ty, bytes.get(11)) {
                return Err(ParseError::UnknownType(code));
            }
            return Err(ParseError::Truncated {
                ty: TypeName(ty),
                needed: ty.map_or(COMMON_HEADER_LEN, PacketType::header_len),
                got: bytes.len(),
            });
        }
        let ty = PacketType::from_code(bytes[11]).ok_or(ParseError::UnknownType(bytes[11]))?;
        if bytes.len() < ty.header_len() {
            return Err(ParseError::Truncated {
                ty: TypeName(Some(ty)),
                needed: ty.header_len(),
                got: bytes.len(),
            });
        }
        let view = PacketView { bytes, ty };
        if ty == PacketType::Ack && view.num_acks() as usize > MAX_ACKS {
            return Err(ParseError::TooManyAcks(view.num_acks()));
        }
        Ok(view)
    }

    /// The whole buffer the view was made from.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// The packet type.
    #[inline]
    pub fn packet_type(&self) -> PacketType {
        self.ty
    }
    /// Length of this type's header.
    #[inline]
    pub fn header_len(&self) -> usize {
        self.ty.header_len()
    }

    // ---- common header ----
    /// Source port.
    #[inline]
    pub fn sport(&self) -> u16 {
        be16(self.bytes, 0)
    }
    /// Destination port.
    #[inline]
    pub fn dport(&self) -> u16 {
        be16(self.bytes, 2)
    }
    /// The TCP-overlay `sequence` field (DATA: offset of the first byte; else 0).
    #[inline]
    pub fn sequence(&self) -> u32 {
        be32(self.bytes, 4)
    }
    /// The three unused `ack` bytes of the TCP overlay.
    #[inline]
    pub fn ack_bytes(&self) -> [u8; 3] {
        [self.bytes[8], self.bytes[9], self.bytes[10]]
    }
    /// The raw `doff` byte (ignored by receivers: the type fixes the header length).
    #[inline]
    pub fn doff(&self) -> u8 {
        self.bytes[12]
    }
    /// The TCP-overlay flags byte (Linux Homa sends 0x06).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.bytes[13]
    }
    /// The TCP-overlay window (zero).
    #[inline]
    pub fn window(&self) -> u16 {
        be16(self.bytes, 14)
    }
    /// The checksum field (not verified by Homa receivers).
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.bytes, 16)
    }
    /// The TCP-overlay urgent field (Linux Homa sends 0xB97D).
    #[inline]
    pub fn urgent(&self) -> u16 {
        be16(self.bytes, 18)
    }
    /// RPC id as the sender of this packet knows it.
    #[inline]
    pub fn sender_id(&self) -> u64 {
        be64(self.bytes, 20)
    }

    // ---- DATA ----
    #[inline]
    fn is(&self, ty: PacketType) -> Option<()> {
        (self.ty == ty).then_some(())
    }
    /// DATA: total message length.
    #[inline]
    pub fn message_length(&self) -> Option<u32> {
        self.is(PacketType::Data).map(|_| be32(self.bytes, 28))
    }
    /// DATA: bytes the sender will send without further grants.
    #[inline]
    pub fn incoming(&self) -> Option<u32> {
        self.is(PacketType::Data).map(|_| be32(self.bytes, 32))
    }
    /// DATA: piggybacked ack `(client_id, server_port)`; client_id 0 means none.
    #[inline]
    pub fn data_ack(&self) -> Option<(u64, u16)> {
        self.is(PacketType::Data)
            .map(|_| (be64(self.bytes, 36), be16(self.bytes, 44)))
    }
    /// DATA: version of the receiver's cutoffs the sender is using.
    #[inline]
    pub fn data_cutoff_version(&self) -> Option<u16> {
        self.is(PacketType::Data).map(|_| be16(self.bytes, 46))
    }
    /// DATA: the raw retransmit byte (non-zero: sent in answer to a RESEND).
    #[inline]
    pub fn retransmit(&self) -> Option<u8> {
        self.is(PacketType::Data).map(|_| self.bytes[48])
    }
    /// DATA: the raw `seg.offset` field (0xFFFFFFFF: look in `sequence`).
    #[inline]
    pub fn seg_offset(&self) -> Option<u32> {
        self.is(PacketType::Data).map(|_| be32(self.bytes, 52))
    }
    /// DATA: offset of the first payload byte in the message: `seg.offset`, or `sequence`
    /// when `seg.offset` is 0xFFFFFFFF.
    #[inline]
    pub fn data_offset(&self) -> Option<u32> {
        self.seg_offset().map(|s| {
            if s == SEG_OFFSET_IN_SEQUENCE {
                self.sequence()
            } else {
                s
            }
        })
    }
    /// DATA: the message bytes this packet carries.
    #[inline]
    pub fn payload(&self) -> Option<&'a [u8]> {
        self.is(PacketType::Data)
            .map(|_| &self.bytes[DATA_HEADER_LEN..])
    }

    // ---- GRANT ----
    /// GRANT: the sender may send every byte below this offset.
    #[inline]
    pub fn grant_offset(&self) -> Option<u32> {
        self.is(PacketType::Grant).map(|_| be32(self.bytes, 28))
    }
    /// GRANT: priority for the granted bytes.
    #[inline]
    pub fn grant_priority(&self) -> Option<u8> {
        self.is(PacketType::Grant).map(|_| self.bytes[32])
    }

    // ---- RESEND ----
    /// RESEND: `(offset, length, priority)`; length 0xFFFFFFFF means everything sent so far.
    #[inline]
    pub fn resend(&self) -> Option<(u32, u32, u8)> {
        self.is(PacketType::Resend)
            .map(|_| (be32(self.bytes, 28), be32(self.bytes, 32), self.bytes[36]))
    }

    // ---- CUTOFFS ----
    /// CUTOFFS: the eight cutoffs (index = priority).
    #[inline]
    pub fn cutoffs(&self) -> Option<[u32; 8]> {
        self.is(PacketType::Cutoffs).map(|_| {
            let mut c = [0u32; 8];
            for (i, slot) in c.iter_mut().enumerate() {
                *slot = be32(self.bytes, 28 + 4 * i);
            }
            c
        })
    }
    /// CUTOFFS: the version of these cutoffs.
    #[inline]
    pub fn cutoffs_version(&self) -> Option<u16> {
        self.is(PacketType::Cutoffs).map(|_| be16(self.bytes, 60))
    }

    // ---- ACK ----
    /// ACK: the raw `num_acks` field (checked to be at most 5).
    #[inline]
    pub fn num_acks(&self) -> u16 {
        if self.ty == PacketType::Ack {
            be16(self.bytes, 28)
        } else {
            0
        }
    }
    /// ACK: the acks carried, `(client_id, server_port)` each.
    #[inline]
    pub fn acks(&self) -> impl Iterator<Item = (u64, u16)> + 'a {
        let bytes = self.bytes;
        (0..self.num_acks() as usize).map(move |i| {
            let at = ACKS_AT + i * ACK_SIZE;
            (be64(bytes, at), be16(bytes, at + 8))
        })
    }
}
