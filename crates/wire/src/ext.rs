//! This implementation's extension to the module's wire format: one-way messages.
//!
//! The Linux module has only RPCs. This project adds *one-way messages* (Homa's original
//! API: a message to a server port that expects no response). The extension uses two
//! places of the module's format that the module ignores, and the engine puts anything
//! there only where both sides agreed (docs/PROTOCOL.md, "One-way messages"):
//!
//! - **CUTOFFS slot 0.** The module overwrites `unsched_cutoffs[0]` with `INT_MAX` when it
//!   receives a CUTOFFS packet (its `homa_cutoffs_pkt`) and itself always sends `INT_MAX`
//!   there; this project sends 0. A [`OneWayMark`] in that slot asks a port whether it
//!   takes one-way messages, or answers.
//! - **The DATA pad byte at offset 49** ([`DATA_FLAGS_AT`]). The module zeroes it (its
//!   DATA header is `memset` before use) and never reads it. [`DataFlags`] says that the
//!   packet belongs to a one-way message, and that its piggybacked ack acknowledges a
//!   one-way message.
//!
//! A packet without the extension is byte for byte what it was before; a packet with it
//! still parses as the module's format.

use crate::error::EmitError;
use crate::packet::{PacketType, PacketView, DATA_HEADER_LEN};

/// Offset of the byte holding [`DataFlags`] in a DATA header (the first of the three pad
/// bytes after `retransmit`).
pub const DATA_FLAGS_AT: usize = 49;

/// Flags of a DATA packet in the pad byte at [`DATA_FLAGS_AT`] (0 in the module's packets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DataFlags(u8);

impl DataFlags {
    /// No flag: an RPC's DATA, exactly as the module sends it.
    pub const NONE: DataFlags = DataFlags(0);
    /// The packet belongs to a one-way message (no response will follow). Sent only to a
    /// port that answered [`OneWayMark::Accept`].
    pub const ONE_WAY: DataFlags = DataFlags(1);
    /// The piggybacked `ack` names a one-way message that the *receiver* of this packet
    /// sent to its sender (`client_id` in the receiver's id space, `server_port` the port
    /// of ours that took it), rather than an RPC of ours it may free. Sent only on
    /// [`ONE_WAY`](Self::ONE_WAY) packets.
    pub const ACK_ONE_WAY: DataFlags = DataFlags(2);

    /// The flags from the raw byte (bits this version does not know are dropped).
    pub fn from_bits(bits: u8) -> DataFlags {
        DataFlags(bits & 3)
    }
    /// The raw byte.
    pub fn bits(self) -> u8 {
        self.0
    }
    /// True when every flag of `other` is set here.
    pub fn contains(self, other: DataFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// Both sets of flags.
    pub fn with(self, other: DataFlags) -> DataFlags {
        DataFlags(self.0 | other.0)
    }

    /// Write the flags into a DATA header that [`crate::Repr::emit_header`] just wrote at
    /// the start of `header`.
    pub fn write(self, header: &mut [u8]) -> Result<(), EmitError> {
        let got = header.len();
        match header.get(11).copied().and_then(PacketType::from_code) {
            Some(PacketType::Data) if got >= DATA_HEADER_LEN => {
                header[DATA_FLAGS_AT] = self.0;
                Ok(())
            }
            Some(PacketType::Data) => Err(EmitError::BufferTooSmall {
                needed: DATA_HEADER_LEN,
                got,
            }),
            _ => Err(EmitError::NotData),
        }
    }
}

impl PacketView<'_> {
    /// DATA: the extension flags (all clear in the module's packets).
    #[inline]
    pub fn data_flags(&self) -> Option<DataFlags> {
        (self.packet_type() == PacketType::Data)
            .then(|| DataFlags::from_bits(self.as_bytes()[DATA_FLAGS_AT]))
    }
}

/// What a CUTOFFS packet says about one-way messages, in its `unsched_cutoffs[0]` (a slot
/// the module ignores on receive and fills with `INT_MAX` on send).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OneWayMark {
    /// "Does your port (`dport`) take one-way messages from my port (`sport`)?" The
    /// packet's other fields are the asker's true cutoffs, so a receiver that does not
    /// know the extension only learns what it would have learned from any CUTOFFS.
    Query,
    /// "My port (`sport`) takes one-way messages": the answer to a query.
    Accept,
    /// "My port (`sport`) does not take one-way messages": the answer to a query, or to
    /// one-way DATA for a port that does not (or no longer) take them.
    Refuse,
    /// "No socket has that port (`sport`) here": the answer to a query, or to one-way
    /// DATA, for a port nothing is bound to (a receiver that closed, say), where a request
    /// finds no socket either. Its sender's messages fail as a request's would.
    NoSocket,
}

impl OneWayMark {
    const QUERY: u32 = 0x4F57_4D51; // "OWMQ"
    const ACCEPT: u32 = 0x4F57_4D41; // "OWMA"
    const REFUSE: u32 = 0x4F57_4D52; // "OWMR"
    const NO_SOCKET: u32 = 0x4F57_4D4E; // "OWMN"

    /// The value that goes in `unsched_cutoffs[0]`.
    pub fn to_slot(self) -> u32 {
        match self {
            OneWayMark::Query => Self::QUERY,
            OneWayMark::Accept => Self::ACCEPT,
            OneWayMark::Refuse => Self::REFUSE,
            OneWayMark::NoSocket => Self::NO_SOCKET,
        }
    }

    /// The mark in a received `unsched_cutoffs[0]`, if it is one (the module's `INT_MAX`
    /// and this project's 0 are not).
    pub fn from_slot(value: u32) -> Option<OneWayMark> {
        match value {
            Self::QUERY => Some(OneWayMark::Query),
            Self::ACCEPT => Some(OneWayMark::Accept),
            Self::REFUSE => Some(OneWayMark::Refuse),
            Self::NO_SOCKET => Some(OneWayMark::NoSocket),
            _ => None,
        }
    }
}

/// Why a server will never take a request (or one-way message) of the length it names,
/// in the `unsched_cutoffs[0]` of a CUTOFFS packet the server sends back to the client's
/// port in answer to the request's DATA (`sender_id` the request's id with the low bit
/// set, as in any packet from a server). Only this project sends or reads it; any
/// receiver that does not know it learns the sender's true cutoffs, as from any CUTOFFS.
///
/// The slot holds bit 31 (never set by the module, whose slot 0 is `INT_MAX`, nor by a
/// [`OneWayMark`]), bit 30 for the reason, and the message length the refused DATA
/// claimed in the low 30 bits. A client believes the refusal only if that length is its
/// message's: a refusal drawn by a copy of its DATA with a damaged length field names a
/// length the client never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalMark {
    /// A message of this length is longer than the server's `max_message_length`.
    TooLong(u32),
    /// A message of this length is longer than the server's whole receive buffer space
    /// (`max_incoming_held`): no wait would make room for it.
    NeverFits(u32),
}

impl RefusalMark {
    const MARK: u32 = 1 << 31;
    const NEVER_FITS: u32 = 1 << 30;
    /// The longest length a mark can name (lengths above it are never refused by mark).
    pub const MAX_LENGTH: u32 = (1 << 30) - 1;

    /// The value that goes in `unsched_cutoffs[0]`, or `None` for a length over
    /// [`MAX_LENGTH`](Self::MAX_LENGTH).
    pub fn to_slot(self) -> Option<u32> {
        let (reason, len) = match self {
            RefusalMark::TooLong(len) => (0, len),
            RefusalMark::NeverFits(len) => (Self::NEVER_FITS, len),
        };
        (len <= Self::MAX_LENGTH).then_some(Self::MARK | reason | len)
    }

    /// The mark in a received `unsched_cutoffs[0]`, if it is one.
    pub fn from_slot(value: u32) -> Option<RefusalMark> {
        if value & Self::MARK == 0 {
            return None;
        }
        let len = value & Self::MAX_LENGTH;
        Some(if value & Self::NEVER_FITS != 0 {
            RefusalMark::NeverFits(len)
        } else {
            RefusalMark::TooLong(len)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Body, Common, Data, Repr};

    fn data_packet() -> Vec<u8> {
        let repr = Repr {
            common: Common {
                sport: 40_000,
                dport: 99,
                sender_id: 6,
            },
            body: Body::Data(Data {
                message_length: 3,
                incoming: 3,
                ack: None,
                cutoff_version: 1,
                retransmit: false,
                offset: 0,
            }),
        };
        repr.to_vec(b"abc").unwrap()
    }

    #[test]
    fn data_flags_live_in_the_first_pad_byte_and_nowhere_else() {
        let plain = data_packet();
        assert_eq!(plain[DATA_FLAGS_AT], 0, "the module's DATA has a zero pad");
        let view = PacketView::new_checked(&plain).unwrap();
        assert_eq!(view.data_flags(), Some(DataFlags::NONE));
        let mut flagged = plain.clone();
        let flags = DataFlags::ONE_WAY.with(DataFlags::ACK_ONE_WAY);
        flags.write(&mut flagged).unwrap();
        // Exactly one byte differs, and the packet still parses to the same Repr.
        let diff: Vec<usize> = (0..plain.len())
            .filter(|&i| plain[i] != flagged[i])
            .collect();
        assert_eq!(diff, [DATA_FLAGS_AT]);
        assert_eq!(flagged[DATA_FLAGS_AT], 3);
        let (a, _) = Repr::parse(&plain, 1_000_000).unwrap();
        let (b, _) = Repr::parse(&flagged, 1_000_000).unwrap();
        assert_eq!(a, b);
        let got = PacketView::new_checked(&flagged)
            .unwrap()
            .data_flags()
            .unwrap();
        assert!(got.contains(DataFlags::ONE_WAY) && got.contains(DataFlags::ACK_ONE_WAY));
        // Unknown bits are ignored; other types have no flags and refuse them.
        flagged[DATA_FLAGS_AT] = 0xF1;
        let got = PacketView::new_checked(&flagged)
            .unwrap()
            .data_flags()
            .unwrap();
        assert_eq!(got, DataFlags::ONE_WAY);
        let grant = [0u8; 40];
        assert!(DataFlags::ONE_WAY.write(&mut grant.clone()).is_err());
        assert!(DataFlags::ONE_WAY.write(&mut plain.clone()[..50]).is_err());
    }

    #[test]
    fn marks_never_collide_with_what_the_module_or_we_send_in_slot_zero() {
        for m in [OneWayMark::Query, OneWayMark::Accept, OneWayMark::Refuse] {
            assert_eq!(OneWayMark::from_slot(m.to_slot()), Some(m));
            assert!(m.to_slot() > crate::HOMA_MAX_MESSAGE_LENGTH);
        }
        assert_eq!(OneWayMark::from_slot(0), None);
        assert_eq!(OneWayMark::from_slot(i32::MAX as u32), None);
        for len in [
            1,
            5_000,
            crate::HOMA_MAX_MESSAGE_LENGTH,
            RefusalMark::MAX_LENGTH,
        ] {
            for m in [RefusalMark::TooLong(len), RefusalMark::NeverFits(len)] {
                let slot = m.to_slot().expect("a length that fits");
                assert_eq!(RefusalMark::from_slot(slot), Some(m));
                assert_eq!(OneWayMark::from_slot(slot), None);
            }
        }
        assert_eq!(RefusalMark::TooLong(1 << 30).to_slot(), None);
        for m in [OneWayMark::Query, OneWayMark::Accept, OneWayMark::Refuse] {
            assert_eq!(RefusalMark::from_slot(m.to_slot()), None);
        }
        assert_eq!(RefusalMark::from_slot(0), None);
        assert_eq!(RefusalMark::from_slot(i32::MAX as u32), None);
    }
}
