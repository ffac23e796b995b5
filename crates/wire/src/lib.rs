//! Byte-exact codec for Homa packets, in the format of the Linux kernel module
//! (PlatformLab/HomaModule `homa_wire.h`).
//!
//! Two layers, in the style of smoltcp:
//! - [`PacketView`]: a checked, zero-copy view over untrusted bytes. Construction checks the
//!   type and the header length; after that every accessor is infallible.
//! - [`Repr`]: an owned, validated representation for reasoning and for building packets.
//!   [`Repr::parse`] also enforces message-length limits; [`Repr::emit`] writes exactly
//!   `header_len + payload` bytes.
//!
//! Nothing here allocates (except the [`Repr::to_vec`] convenience), reads a clock or does
//! I/O, and no input can make it panic.
//!
//! ```
//! use homa_wire::{Body, Common, Grant, Repr, PacketType, HOMA_MAX_MESSAGE_LENGTH};
//!
//! let grant = Repr {
//!     common: Common { sport: 4000, dport: 40001, sender_id: 2001 },
//!     body: Body::Grant(Grant { offset: 200_000, priority: 0 }),
//! };
//! let mut buf = [0u8; 64];
//! let n = grant.emit(&[], &mut buf).unwrap();
//! assert_eq!(n, 33);
//! let (back, payload) = Repr::parse(&buf[..n], HOMA_MAX_MESSAGE_LENGTH).unwrap();
//! assert_eq!(back, grant);
//! assert!(payload.is_empty());
//! assert_eq!(back.packet_type(), PacketType::Grant);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checksum;
mod error;
mod ext;
mod ids;
mod packet;
mod repr;

pub use error::{EmitError, ParseError, TypeName};
pub use ext::{DataFlags, OneWayMark, RefusalMark, DATA_FLAGS_AT};
pub use ids::{
    priority_to_tos, priority_to_traffic_class, tos_to_priority, traffic_class_to_priority,
    unsched_priority, RpcId, HOMA_MAX_MESSAGE_LENGTH, NUM_PRIORITIES,
};
pub use packet::{
    PacketType, PacketView, ACK_SIZE, COMMON_HEADER_LEN, DATA_HEADER_LEN, MAX_ACKS, MAX_HEADER_LEN,
    RESEND_ALL, SEG_OFFSET_IN_SEQUENCE,
};
pub use repr::{
    AckEntry, Acks, Body, Common, Cutoffs, Data, Grant, Repr, Resend, EMIT_FLAGS, EMIT_URGENT,
};

#[cfg(test)]
mod tests;
