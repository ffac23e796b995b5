//! Owned, validated packet representations: what the engine reasons about and builds.

use crate::error::{EmitError, ParseError};
use crate::packet::{
    PacketType, PacketView, ACK_HEADER_LEN, ACK_SIZE, COMMON_HEADER_LEN, CUTOFFS_HEADER_LEN,
    DATA_HEADER_LEN, GRANT_HEADER_LEN, MAX_ACKS, RESEND_ALL, RESEND_HEADER_LEN,
    SEG_OFFSET_IN_SEQUENCE,
};

/// The TCP flags byte Linux Homa puts in every packet (SYN|RST: a pattern no real TCP
/// segment carries). We send the same so our packets match the module's byte for byte.
pub const EMIT_FLAGS: u8 = 0x06;
/// The urgent-pointer value Linux Homa puts in every packet (its TCP-hijack marker).
pub const EMIT_URGENT: u16 = 0xB97D;

/// Fields every packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Common {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// RPC id as the sender of the packet knows it.
    pub sender_id: u64,
}

/// One acknowledgement: the client RPC `client_id` to the server on `server_port` may be freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AckEntry {
    /// The client's (even) RPC id.
    pub client_id: u64,
    /// The server's port.
    pub server_port: u16,
}

/// Body of a DATA packet (the payload travels beside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data {
    /// Total message length, 1..=max.
    pub message_length: u32,
    /// The sender will send at least up to this offset without further grants.
    pub incoming: u32,
    /// Piggybacked ack for an earlier RPC, if any (client_id 0 on the wire means none).
    pub ack: Option<AckEntry>,
    /// Version of the receiver's cutoffs this sender uses (0: none received).
    pub cutoff_version: u16,
    /// Sent in answer to a RESEND.
    pub retransmit: bool,
    /// Offset of the first payload byte within the message.
    pub offset: u32,
}

/// Body of a GRANT packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The sender may send every byte below this offset.
    pub offset: u32,
    /// Priority to use for the granted bytes (the engine clamps values above 7).
    pub priority: u8,
}

/// Body of a RESEND packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resend {
    /// First byte wanted.
    pub offset: u32,
    /// Bytes wanted; [`RESEND_ALL`] asks for everything sent so far.
    pub length: u32,
    /// Priority for the retransmitted bytes.
    pub priority: u8,
}

impl Resend {
    /// True when this asks for everything the sender has sent so far.
    pub fn is_all(&self) -> bool {
        self.length == RESEND_ALL
    }
}

/// Body of a CUTOFFS packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Index = priority; value = the longest message that may use it unscheduled.
    pub unsched_cutoffs: [u32; 8],
    /// Version of this set of cutoffs.
    pub cutoff_version: u16,
}

/// The acks of an ACK packet: at most [`MAX_ACKS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Acks {
    len: u8,
    slots: [AckEntry; MAX_ACKS],
}

impl Acks {
    /// Up to five acks; more is an error.
    pub fn new(acks: &[AckEntry]) -> Result<Acks, EmitError> {
        if acks.len() > MAX_ACKS {
            return Err(EmitError::TooManyAcks(acks.len()));
        }
        let mut slots = [AckEntry::default(); MAX_ACKS];
        slots[..acks.len()].copy_from_slice(acks);
        Ok(Acks {
            len: acks.len() as u8,
            slots,
        })
    }
    /// The acks carried.
    pub fn as_slice(&self) -> &[AckEntry] {
        &self.slots[..self.len as usize]
    }
}

/// The type-specific part of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// DATA.
    Data(Data),
    /// GRANT.
    Grant(Grant),
    /// RESEND.
    Resend(Resend),
    /// RPC_UNKNOWN.
    RpcUnknown,
    /// BUSY.
    Busy,
    /// CUTOFFS.
    Cutoffs(Cutoffs),
    /// FREEZE.
    Freeze,
    /// NEED_ACK.
    NeedAck,
    /// ACK.
    Ack(Acks),
}

impl Body {
    /// The packet type of this body.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Body::Data(_) => PacketType::Data,
            Body::Grant(_) => PacketType::Grant,
            Body::Resend(_) => PacketType::Resend,
            Body::RpcUnknown => PacketType::RpcUnknown,
            Body::Busy => PacketType::Busy,
            Body::Cutoffs(_) => PacketType::Cutoffs,
            Body::Freeze => PacketType::Freeze,
            Body::NeedAck => PacketType::NeedAck,
            Body::Ack(_) => PacketType::Ack,
        }
    }
}

/// A validated Homa packet header. DATA payload bytes are kept beside it, not inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// The common header fields.
    pub common: Common,
    /// The type-specific fields.
    pub body: Body,
}

impl Repr {
    /// Read and validate a packet. `max_message_length` bounds DATA `message_length`
    /// (Linux Homa: [`crate::HOMA_MAX_MESSAGE_LENGTH`]). On success returns the header and,
    /// for DATA, the payload (empty for other types).
    ///
    /// `#[inline]`, like [`Repr::from_view`], so that a caller that matches on the result
    /// at once gets the fields in place rather than a copy of the whole `Repr`.
    #[inline]
    pub fn parse(bytes: &[u8], max_message_length: u32) -> Result<(Repr, &[u8]), ParseError> {
        let view = PacketView::new_checked(bytes)?;
        let repr = Repr::from_view(&view, max_message_length)?;
        Ok((repr, view.payload().unwrap_or(&[])))
    }

    /// Validate a checked view into a representation.
    #[inline]
    pub fn from_view(view: &PacketView<'_>, max_message_length: u32) -> Result<Repr, ParseError> {
        let common = Common {
            sport: view.sport(),
            dport: view.dport(),
            sender_id: view.sender_id(),
        };
        let body = match view.packet_type() {
            PacketType::Data => {
                let message_length = view.message_length().unwrap_or(0);
                if message_length == 0 {
                    return Err(ParseError::ZeroMessageLength);
                }
                if message_length > max_message_length {
                    return Err(ParseError::MessageTooLong {
                        length: message_length,
                        max: max_message_length,
                    });
                }
                let offset = view.data_offset().unwrap_or(0);
                let len = view.payload().map_or(0, <[u8]>::len);
                if offset as u64 + len as u64 > message_length as u64 {
                    return Err(ParseError::SegmentPastEnd {
                        offset,
                        len,
                        message_length,
                    });
                }
                let (client_id, server_port) = view.data_ack().unwrap_or((0, 0));
                Body::Data(Data {
                    message_length,
                    incoming: view.incoming().unwrap_or(0),
                    ack: (client_id != 0).then_some(AckEntry {
                        client_id,
                        server_port,
                    }),
                    cutoff_version: view.data_cutoff_version().unwrap_or(0),
                    retransmit: view.retransmit().unwrap_or(0) != 0,
                    offset,
                })
            }
            PacketType::Grant => Body::Grant(Grant {
                offset: view.grant_offset().unwrap_or(0),
                priority: view.grant_priority().unwrap_or(0),
            }),
            PacketType::Resend => {
                let (offset, length, priority) = view.resend().unwrap_or((0, 0, 0));
                Body::Resend(Resend {
                    offset,
                    length,
                    priority,
                })
            }
            PacketType::RpcUnknown => Body::RpcUnknown,
            PacketType::Busy => Body::Busy,
            PacketType::Cutoffs => Body::Cutoffs(Cutoffs {
                unsched_cutoffs: view.cutoffs().unwrap_or_default(),
                cutoff_version: view.cutoffs_version().unwrap_or(0),
            }),
            PacketType::Freeze => Body::Freeze,
            PacketType::NeedAck => Body::NeedAck,
            PacketType::Ack => {
                let mut acks = [AckEntry::default(); MAX_ACKS];
                let mut n = 0;
                for (slot, (client_id, server_port)) in acks.iter_mut().zip(view.acks()) {
                    *slot = AckEntry {
                        client_id,
                        server_port,
                    };
                    n += 1;
                }
                // The view checked num_acks <= 5, so this cannot fail.
                Body::Ack(Acks::new(&acks[..n]).map_err(|_| ParseError::TooManyAcks(n as u16))?)
            }
        };
        Ok(Repr { common, body })
    }

    /// The packet type.
    pub fn packet_type(&self) -> PacketType {
        self.body.packet_type()
    }

    /// Bytes of Homa header this packet needs.
    pub fn header_len(&self) -> usize {
        self.packet_type().header_len()
    }

    /// Total bytes `emit` writes for a payload of `payload_len` bytes.
    pub fn buffer_len(&self, payload_len: usize) -> usize {
        self.header_len() + payload_len
    }

    /// Write the header for a payload of `payload_len` bytes into `buf[..header_len()]`,
    /// leaving the rest of `buf` alone (so a runtime can place the payload itself).
    ///
    /// What goes in the fields Homa does not use is chosen to match the Linux module
    /// byte for byte (see the captures): ack bytes 0, flags 0x06, window 0, checksum 0
    /// (filled in by [`crate::checksum`] for raw IP; UDP has its own), urgent 0xB97D,
    /// `sequence` = DATA offset (0 for other types), `seg.offset` = 0xFFFFFFFF for first
    /// transmissions and the real offset for retransmissions.
    pub fn emit_header(&self, payload_len: usize, buf: &mut [u8]) -> Result<usize, EmitError> {
        let (c, ty) = (&self.common, self.packet_type());
        match &self.body {
            Body::Data(d) => {
                if d.message_length == 0 {
                    return Err(EmitError::ZeroMessageLength);
                }
                if d.ack.is_some_and(|a| a.client_id == 0) {
                    return Err(EmitError::AckOfRpcZero);
                }
                if d.offset as u64 + payload_len as u64 > d.message_length as u64 {
                    return Err(EmitError::SegmentPastEnd {
                        offset: d.offset,
                        len: payload_len,
                        message_length: d.message_length,
                    });
                }
                write_header(buf, c, ty, d.offset, |h: &mut [u8; DATA_HEADER_LEN]| {
                    h[28..32].copy_from_slice(&d.message_length.to_be_bytes());
                    h[32..36].copy_from_slice(&d.incoming.to_be_bytes());
                    let ack = d.ack.unwrap_or_default();
                    h[36..44].copy_from_slice(&ack.client_id.to_be_bytes());
                    h[44..46].copy_from_slice(&ack.server_port.to_be_bytes());
                    h[46..48].copy_from_slice(&d.cutoff_version.to_be_bytes());
                    h[48] = d.retransmit as u8;
                    let seg = if d.retransmit {
                        d.offset
                    } else {
                        SEG_OFFSET_IN_SEQUENCE
                    };
                    h[52..56].copy_from_slice(&seg.to_be_bytes());
                })
            }
            Body::Grant(g) => write_header(buf, c, ty, 0, |h: &mut [u8; GRANT_HEADER_LEN]| {
                h[28..32].copy_from_slice(&g.offset.to_be_bytes());
                h[32] = g.priority;
            }),
            Body::Resend(r) => write_header(buf, c, ty, 0, |h: &mut [u8; RESEND_HEADER_LEN]| {
                h[28..32].copy_from_slice(&r.offset.to_be_bytes());
                h[32..36].copy_from_slice(&r.length.to_be_bytes());
                h[36] = r.priority;
            }),
            Body::Cutoffs(k) => write_header(buf, c, ty, 0, |h: &mut [u8; CUTOFFS_HEADER_LEN]| {
                for (i, v) in k.unsched_cutoffs.iter().enumerate() {
                    h[28 + 4 * i..32 + 4 * i].copy_from_slice(&v.to_be_bytes());
                }
                h[60..62].copy_from_slice(&k.cutoff_version.to_be_bytes());
            }),
            Body::Ack(a) => write_header(buf, c, ty, 0, |h: &mut [u8; ACK_HEADER_LEN]| {
                h[28..30].copy_from_slice(&(a.len as u16).to_be_bytes());
                for (i, e) in a.as_slice().iter().enumerate() {
                    let at = 30 + i * ACK_SIZE;
                    h[at..at + 8].copy_from_slice(&e.client_id.to_be_bytes());
                    h[at + 8..at + 10].copy_from_slice(&e.server_port.to_be_bytes());
                }
            }),
            Body::RpcUnknown | Body::Busy | Body::Freeze | Body::NeedAck => {
                write_header(buf, c, ty, 0, |_: &mut [u8; COMMON_HEADER_LEN]| {})
            }
        }
    }

    /// Write header and payload into `buf`; returns exactly `header_len() + payload.len()`.
    /// A non-DATA packet must be given an empty payload.
    pub fn emit(&self, payload: &[u8], buf: &mut [u8]) -> Result<usize, EmitError> {
        let total = self.buffer_len(payload.len());
        if buf.len() < total {
            return Err(EmitError::BufferTooSmall {
                needed: total,
                got: buf.len(),
            });
        }
        if !payload.is_empty() && self.packet_type() != PacketType::Data {
            return Err(EmitError::UnexpectedPayload(self.packet_type()));
        }
        let hlen = self.emit_header(payload.len(), buf)?;
        buf[hlen..total].copy_from_slice(payload);
        Ok(total)
    }

    /// Emit into a new vector (convenience for tests and tools; the engine reuses buffers).
    pub fn to_vec(&self, payload: &[u8]) -> Result<Vec<u8>, EmitError> {
        let mut v = vec![0u8; self.buffer_len(payload.len())];
        self.emit(payload, &mut v)?;
        Ok(v)
    }
}

/// Writes a header of `N` bytes (type `ty`'s length) into `buf[..N]`: zeros, the common
/// fields, then `body` fills in the rest. The header is a fixed-size array, so none of the
/// writes needs a bounds check.
#[inline]
fn write_header<const N: usize>(
    buf: &mut [u8],
    c: &Common,
    ty: PacketType,
    sequence: u32,
    body: impl FnOnce(&mut [u8; N]),
) -> Result<usize, EmitError> {
    debug_assert_eq!(N, ty.header_len());
    let got = buf.len();
    let h = buf
        .first_chunk_mut::<N>()
        .ok_or(EmitError::BufferTooSmall { needed: N, got })?;
    h.fill(0);
    h[0..2].copy_from_slice(&c.sport.to_be_bytes());
    h[2..4].copy_from_slice(&c.dport.to_be_bytes());
    h[4..8].copy_from_slice(&sequence.to_be_bytes());
    h[11] = ty.code();
    h[12] = ty.doff();
    h[13] = EMIT_FLAGS;
    h[18..20].copy_from_slice(&EMIT_URGENT.to_be_bytes());
    h[20..28].copy_from_slice(&c.sender_id.to_be_bytes());
    body(h);
    Ok(N)
}
