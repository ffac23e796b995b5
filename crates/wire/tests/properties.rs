//! Property tests for the wire codec.
//!
//! The byte-literal tests in `src/tests.rs` pin individual packets; these check the
//! invariants STYLE.md asks of every parser, over many generated inputs:
//! - every packet type round-trips (`Repr` -> `emit` -> bytes -> `Repr::parse`), and the
//!   bytes are exactly what PROTOCOL.md section 3 lays out (checked against an encoder
//!   written here from the spec's table, not against `emit` itself);
//! - no input makes the parser panic, and what it answers for arbitrary, near-valid and
//!   damaged bytes is exactly what a decoder written here from the spec answers, errors
//!   included (same variant, same fields);
//! - parse -> emit -> parse is idempotent;
//! - `unsched_priority` picks the highest qualifying priority;
//! - the checksum never panics, whatever the length, and verifies the usual way.
//!
//! Proptest prints the failing input (minimised) on failure and records its seed in
//! `crates/wire/proptest-regressions/properties.txt`, so the case is replayed first on the
//! next run.

use homa_wire::{
    checksum, unsched_priority, AckEntry, Acks, Body, Common, Cutoffs, Data, EmitError, Grant,
    PacketType, PacketView, ParseError, Repr, Resend, TypeName, DATA_HEADER_LEN,
    HOMA_MAX_MESSAGE_LENGTH, MAX_HEADER_LEN, RESEND_ALL, SEG_OFFSET_IN_SEQUENCE,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Cases per property: enough to hit every packet type a few hundred times, small enough
/// that the whole file runs in well under five seconds in a debug build.
const CASES: u32 = 2000;
/// Largest DATA payload generated: one Ethernet MTU's worth is plenty to exercise the
/// offset/length arithmetic without slowing the run down.
const MAX_PAYLOAD: u32 = 1500;

fn config() -> ProptestConfig {
    ProptestConfig {
        // Integration tests have no lib.rs beside them for proptest's default lookup; name
        // the file outright (relative to the package root, where `cargo test` runs).
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/properties.txt",
        ))),
        ..ProptestConfig::with_cases(CASES)
    }
}

// ---------------------------------------------------------------------------------------
// The spec, restated independently of the crate under test (PROTOCOL.md section 3).
// ---------------------------------------------------------------------------------------

/// `(code, type, total header length)` for every packet type, from the spec's table.
const SPEC_TYPES: [(u8, PacketType, usize); 9] = [
    (0x10, PacketType::Data, 56),
    (0x11, PacketType::Grant, 33),
    (0x12, PacketType::Resend, 37),
    (0x13, PacketType::RpcUnknown, 28),
    (0x14, PacketType::Busy, 28),
    (0x15, PacketType::Cutoffs, 62),
    (0x16, PacketType::Freeze, 28),
    (0x17, PacketType::NeedAck, 28),
    (0x18, PacketType::Ack, 80),
];

fn spec_type(code: u8) -> Option<(PacketType, usize)> {
    SPEC_TYPES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|&(_, ty, len)| (ty, len))
}

fn spec_header_len(ty: PacketType) -> usize {
    SPEC_TYPES.iter().find(|(_, t, _)| *t == ty).unwrap().2
}

fn spec_code(ty: PacketType) -> u8 {
    SPEC_TYPES.iter().find(|(_, t, _)| *t == ty).unwrap().0
}

fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn rd32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn rd64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn wr16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
fn wr32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
fn wr64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// The bytes the Linux module would send for `repr` + `payload`, laid out from the spec's
/// offsets (and, for the fields Homa ignores, from what the module is documented to send).
fn spec_encode(repr: &Repr, payload: &[u8]) -> Vec<u8> {
    let ty = repr.body.packet_type();
    let mut b = vec![0u8; spec_header_len(ty)];
    wr16(&mut b, 0, repr.common.sport);
    wr16(&mut b, 2, repr.common.dport);
    b[11] = spec_code(ty);
    b[12] = if ty == PacketType::Data { 0xE0 } else { 0x50 };
    b[13] = 0x06;
    wr16(&mut b, 18, 0xB97D);
    wr64(&mut b, 20, repr.common.sender_id);
    match &repr.body {
        Body::Data(d) => {
            wr32(&mut b, 4, d.offset);
            wr32(&mut b, 28, d.message_length);
            wr32(&mut b, 32, d.incoming);
            if let Some(a) = d.ack {
                wr64(&mut b, 36, a.client_id);
                wr16(&mut b, 44, a.server_port);
            }
            wr16(&mut b, 46, d.cutoff_version);
            b[48] = d.retransmit as u8;
            let seg = if d.retransmit { d.offset } else { 0xFFFF_FFFF };
            wr32(&mut b, 52, seg);
        }
        Body::Grant(g) => {
            wr32(&mut b, 28, g.offset);
            b[32] = g.priority;
        }
        Body::Resend(r) => {
            wr32(&mut b, 28, r.offset);
            wr32(&mut b, 32, r.length);
            b[36] = r.priority;
        }
        Body::Cutoffs(c) => {
            for (i, &v) in c.unsched_cutoffs.iter().enumerate() {
                wr32(&mut b, 28 + 4 * i, v);
            }
            wr16(&mut b, 60, c.cutoff_version);
        }
        Body::Ack(acks) => {
            wr16(&mut b, 28, acks.as_slice().len() as u16);
            for (i, a) in acks.as_slice().iter().enumerate() {
                wr64(&mut b, 30 + 10 * i, a.client_id);
                wr16(&mut b, 38 + 10 * i, a.server_port);
            }
        }
        Body::RpcUnknown | Body::Busy | Body::Freeze | Body::NeedAck => {}
    }
    b.extend_from_slice(payload);
    b
}

/// What a receiver must make of `bytes`, decided from the spec alone. The error cases and
/// their order are the crate's documented contract: a short buffer is `Truncated` (naming
/// the type if byte 11 is there and known; an unknown byte 11 is `UnknownType` however
/// short the rest), an ACK claiming more than five acks is `TooManyAcks`, and DATA checks
/// zero length, then the maximum, then that the segment fits in the message.
fn spec_decode(bytes: &[u8], max: u32) -> Result<(Repr, &[u8]), ParseError> {
    let len = bytes.len();
    let Some(&code) = bytes.get(11) else {
        return Err(ParseError::Truncated {
            ty: TypeName(None),
            needed: 28,
            got: len,
        });
    };
    let (ty, hlen) = spec_type(code).ok_or(ParseError::UnknownType(code))?;
    if len < hlen {
        return Err(ParseError::Truncated {
            ty: TypeName(Some(ty)),
            needed: hlen,
            got: len,
        });
    }
    let common = Common {
        sport: rd16(bytes, 0),
        dport: rd16(bytes, 2),
        sender_id: rd64(bytes, 20),
    };
    let mut payload: &[u8] = &[];
    let body = match ty {
        PacketType::Data => {
            let message_length = rd32(bytes, 28);
            if message_length == 0 {
                return Err(ParseError::ZeroMessageLength);
            }
            if message_length > max {
                return Err(ParseError::MessageTooLong {
                    length: message_length,
                    max,
                });
            }
            let seg = rd32(bytes, 52);
            let offset = if seg == 0xFFFF_FFFF {
                rd32(bytes, 4)
            } else {
                seg
            };
            payload = &bytes[56..];
            if u64::from(offset) + payload.len() as u64 > u64::from(message_length) {
                return Err(ParseError::SegmentPastEnd {
                    offset,
                    len: payload.len(),
                    message_length,
                });
            }
            let client_id = rd64(bytes, 36);
            Body::Data(Data {
                message_length,
                incoming: rd32(bytes, 32),
                ack: (client_id != 0).then(|| AckEntry {
                    client_id,
                    server_port: rd16(bytes, 44),
                }),
                cutoff_version: rd16(bytes, 46),
                retransmit: bytes[48] != 0,
                offset,
            })
        }
        PacketType::Grant => Body::Grant(Grant {
            offset: rd32(bytes, 28),
            priority: bytes[32],
        }),
        PacketType::Resend => Body::Resend(Resend {
            offset: rd32(bytes, 28),
            length: rd32(bytes, 32),
            priority: bytes[36],
        }),
        PacketType::RpcUnknown => Body::RpcUnknown,
        PacketType::Busy => Body::Busy,
        PacketType::Cutoffs => {
            let mut unsched_cutoffs = [0u32; 8];
            for (i, c) in unsched_cutoffs.iter_mut().enumerate() {
                *c = rd32(bytes, 28 + 4 * i);
            }
            Body::Cutoffs(Cutoffs {
                unsched_cutoffs,
                cutoff_version: rd16(bytes, 60),
            })
        }
        PacketType::Freeze => Body::Freeze,
        PacketType::NeedAck => Body::NeedAck,
        PacketType::Ack => {
            let n = rd16(bytes, 28);
            if n > 5 {
                return Err(ParseError::TooManyAcks(n));
            }
            let entries: Vec<AckEntry> = (0..n as usize)
                .map(|i| AckEntry {
                    client_id: rd64(bytes, 30 + 10 * i),
                    server_port: rd16(bytes, 38 + 10 * i),
                })
                .collect();
            Body::Ack(Acks::new(&entries).unwrap())
        }
    };
    Ok((Repr { common, body }, payload))
}

// ---------------------------------------------------------------------------------------
// Strategies.
// ---------------------------------------------------------------------------------------

/// A value in `lo..=hi`, with the two ends drawn far more often than uniform sampling would.
fn edgy(lo: u32, hi: u32) -> impl Strategy<Value = u32> {
    prop_oneof![1 => Just(lo), 1 => Just(hi), 4 => lo..=hi]
}

/// Any u32, with 0, the all-ones sentinel and the 1,000,000 limit over-represented.
fn any_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        1 => Just(0u32),
        1 => Just(u32::MAX),
        1 => Just(HOMA_MAX_MESSAGE_LENGTH),
        6 => any::<u32>(),
    ]
}

fn common() -> impl Strategy<Value = Common> {
    (any::<u16>(), any::<u16>(), any::<u64>()).prop_map(|(sport, dport, sender_id)| Common {
        sport,
        dport,
        sender_id,
    })
}

fn ack_entry(client_id: impl Strategy<Value = u64>) -> impl Strategy<Value = AckEntry> {
    (client_id, any::<u16>()).prop_map(|(client_id, server_port)| AckEntry {
        client_id,
        server_port,
    })
}

/// A valid DATA body with a payload consistent with it: message_length in 1..=1,000,000,
/// offset + payload length <= message_length.
fn data_body() -> impl Strategy<Value = (Body, Vec<u8>)> {
    let message_length = prop_oneof![
        1 => 1u32..=64,
        1 => Just(HOMA_MAX_MESSAGE_LENGTH),
        4 => 1u32..=HOMA_MAX_MESSAGE_LENGTH,
    ];
    message_length
        .prop_flat_map(|ml| (Just(ml), edgy(0, ml.min(MAX_PAYLOAD))))
        .prop_flat_map(|(ml, plen)| {
            (
                Just(ml),
                edgy(0, ml - plen),
                vec(any::<u8>(), plen as usize),
                any_u32(),
                option::of(ack_entry(1u64..=u64::MAX)),
                any::<u16>(),
                any::<bool>(),
            )
        })
        .prop_map(
            |(message_length, offset, payload, incoming, ack, cutoff_version, retransmit)| {
                let body = Body::Data(Data {
                    message_length,
                    incoming,
                    ack,
                    cutoff_version,
                    retransmit,
                    offset,
                });
                (body, payload)
            },
        )
}

/// Any valid body of any of the nine types, with its payload (empty except for DATA).
fn body() -> impl Strategy<Value = (Body, Vec<u8>)> {
    let none = |b: Body| (b, Vec::new());
    prop_oneof![
        data_body(),
        (any_u32(), any::<u8>())
            .prop_map(move |(offset, priority)| none(Body::Grant(Grant { offset, priority }))),
        (any_u32(), any_u32(), any::<u8>()).prop_map(move |(offset, length, priority)| none(
            Body::Resend(Resend {
                offset,
                length,
                priority
            })
        )),
        Just(none(Body::RpcUnknown)),
        Just(none(Body::Busy)),
        (any::<[u32; 8]>(), any::<u16>()).prop_map(move |(unsched_cutoffs, cutoff_version)| {
            none(Body::Cutoffs(Cutoffs {
                unsched_cutoffs,
                cutoff_version,
            }))
        }),
        Just(none(Body::Freeze)),
        Just(none(Body::NeedAck)),
        vec(ack_entry(any::<u64>()), 0..=5)
            .prop_map(move |acks| none(Body::Ack(Acks::new(&acks).unwrap()))),
    ]
}

fn repr_and_payload() -> impl Strategy<Value = (Repr, Vec<u8>)> {
    (common(), body()).prop_map(|(common, (body, payload))| (Repr { common, body }, payload))
}

/// A `max_message_length` for parsing: the Linux limit, no limit, or anything.
fn max_len() -> impl Strategy<Value = u32> {
    prop_oneof![
        2 => Just(HOMA_MAX_MESSAGE_LENGTH),
        1 => Just(u32::MAX),
        1 => Just(0u32),
        2 => any::<u32>(),
    ]
}

/// Arbitrary bytes pushed towards parsing: byte 11 set to a known type, and (when `tame`
/// is non-zero) ACK's num_acks and DATA's length and offset fields pulled to the edges of
/// their valid ranges, so that the checks after the length check are reached, passed and
/// failed by one.
fn packetish() -> impl Strategy<Value = Vec<u8>> {
    (
        vec(any::<u8>(), 0..200),
        0..SPEC_TYPES.len(),
        0u8..4,
        any::<bool>(),
    )
        .prop_map(|(mut b, t, tame, in_sequence)| {
            let (code, ty, hlen) = SPEC_TYPES[t];
            if b.len() > 11 {
                b[11] = code;
            }
            if tame == 0 || b.len() < hlen {
                return b;
            }
            match ty {
                PacketType::Ack => {
                    // 0..=7: every valid count and the first two invalid ones.
                    b[28] = 0;
                    b[29] %= 8;
                }
                PacketType::Data => {
                    // Offset below 256, in `sequence` or in `seg.offset`.
                    let offset = u32::from(b[7]);
                    wr32(&mut b, 4, offset);
                    let seg = if in_sequence {
                        SEG_OFFSET_IN_SEQUENCE
                    } else {
                        offset
                    };
                    wr32(&mut b, 52, seg);
                    let end = offset + (b.len() - DATA_HEADER_LEN) as u32;
                    let message_length = match tame {
                        1 => 0,
                        // The segment ends one byte before, at, or one byte past the end.
                        2 => (end + u32::from(b[31] % 3)).saturating_sub(1),
                        // Below 2^20: mostly within the 1,000,000 limit.
                        _ => rd32(&b, 28) & 0xF_FFFF,
                    };
                    wr32(&mut b, 28, message_length);
                }
                _ => {}
            }
            b
        })
}

/// How to damage a valid packet: XOR some bytes (positions taken modulo the length), then
/// maybe cut it short.
#[derive(Debug, Clone)]
struct Damage {
    flips: Vec<(usize, u8)>,
    truncate_to: Option<usize>,
}

fn damage() -> impl Strategy<Value = Damage> {
    (
        vec((any::<usize>(), 1u8..=255), 0..4),
        option::of(any::<usize>()),
    )
        .prop_map(|(flips, truncate_to)| Damage { flips, truncate_to })
}

impl Damage {
    fn apply(&self, mut b: Vec<u8>) -> Vec<u8> {
        if !b.is_empty() {
            let n = b.len();
            for &(at, x) in &self.flips {
                b[at % n] ^= x;
            }
        }
        if let Some(t) = self.truncate_to {
            b.truncate(t % (b.len() + 1));
        }
        b
    }
}

// ---------------------------------------------------------------------------------------
// Checks shared by several properties.
// ---------------------------------------------------------------------------------------

/// Call every accessor of a checked view and check each against the raw bytes: type-specific
/// accessors answer exactly for their own type, and nothing panics.
fn check_view(v: &PacketView<'_>, bytes: &[u8]) -> Result<(), TestCaseError> {
    let ty = v.packet_type();
    prop_assert_eq!(v.as_bytes(), bytes);
    prop_assert_eq!(v.header_len(), spec_header_len(ty));
    prop_assert!(v.header_len() <= bytes.len());
    prop_assert!(v.header_len() <= MAX_HEADER_LEN);
    prop_assert_eq!(spec_code(ty), bytes[11]);

    prop_assert_eq!(v.sport(), rd16(bytes, 0));
    prop_assert_eq!(v.dport(), rd16(bytes, 2));
    prop_assert_eq!(v.sequence(), rd32(bytes, 4));
    prop_assert_eq!(v.ack_bytes(), [bytes[8], bytes[9], bytes[10]]);
    prop_assert_eq!(v.doff(), bytes[12]);
    prop_assert_eq!(v.flags(), bytes[13]);
    prop_assert_eq!(v.window(), rd16(bytes, 14));
    prop_assert_eq!(v.checksum(), rd16(bytes, 16));
    prop_assert_eq!(v.urgent(), rd16(bytes, 18));
    prop_assert_eq!(v.sender_id(), rd64(bytes, 20));

    let data = ty == PacketType::Data;
    prop_assert_eq!(v.message_length(), data.then(|| rd32(bytes, 28)));
    prop_assert_eq!(v.incoming(), data.then(|| rd32(bytes, 32)));
    prop_assert_eq!(
        v.data_ack(),
        data.then(|| (rd64(bytes, 36), rd16(bytes, 44)))
    );
    prop_assert_eq!(v.data_cutoff_version(), data.then(|| rd16(bytes, 46)));
    prop_assert_eq!(v.retransmit(), data.then(|| bytes[48]));
    prop_assert_eq!(v.seg_offset(), data.then(|| rd32(bytes, 52)));
    prop_assert_eq!(
        v.data_offset(),
        data.then(|| match rd32(bytes, 52) {
            0xFFFF_FFFF => rd32(bytes, 4),
            seg => seg,
        })
    );
    prop_assert_eq!(v.payload(), data.then(|| &bytes[DATA_HEADER_LEN..]));

    let grant = ty == PacketType::Grant;
    prop_assert_eq!(v.grant_offset(), grant.then(|| rd32(bytes, 28)));
    prop_assert_eq!(v.grant_priority(), grant.then(|| bytes[32]));

    prop_assert_eq!(
        v.resend(),
        (ty == PacketType::Resend).then(|| (rd32(bytes, 28), rd32(bytes, 32), bytes[36]))
    );

    let cutoffs = ty == PacketType::Cutoffs;
    prop_assert_eq!(
        v.cutoffs(),
        cutoffs.then(|| core::array::from_fn(|i| rd32(bytes, 28 + 4 * i)))
    );
    prop_assert_eq!(v.cutoffs_version(), cutoffs.then(|| rd16(bytes, 60)));

    if ty == PacketType::Ack {
        prop_assert_eq!(v.num_acks(), rd16(bytes, 28));
        prop_assert!(v.num_acks() <= 5);
    } else {
        prop_assert_eq!(v.num_acks(), 0);
    }
    let acks: Vec<(u64, u16)> = v.acks().collect();
    prop_assert_eq!(acks.len(), v.num_acks() as usize);
    for (i, &(client_id, server_port)) in acks.iter().enumerate() {
        prop_assert_eq!(client_id, rd64(bytes, 30 + 10 * i));
        prop_assert_eq!(server_port, rd16(bytes, 38 + 10 * i));
    }

    // Formatting must not panic either (dumps print every packet they see).
    let _ = format!("{v:?} {ty} {}", ty.name());
    Ok(())
}

/// Everything the parser promises about one input, whatever it is: no panic; the view and
/// `Repr::parse` agree with the spec decoder exactly (value or error); a success never
/// claims more header than there are bytes; `Truncated` exactly when the buffer is shorter
/// than its type's header. Returns the parse for callers that want to go on.
fn check_parse(bytes: &[u8], max: u32) -> Result<Option<(Repr, &[u8])>, TestCaseError> {
    let expected = spec_decode(bytes, max);
    let view = PacketView::new_checked(bytes);
    match &view {
        Ok(v) => check_view(v, bytes)?,
        Err(e) => {
            // The view only judges structure; the value checks are Repr's.
            let value_error = matches!(
                e,
                ParseError::ZeroMessageLength
                    | ParseError::MessageTooLong { .. }
                    | ParseError::SegmentPastEnd { .. }
            );
            prop_assert!(!value_error, "PacketView judged a value: {:?}", e);
            prop_assert_eq!(Err(*e), expected);
        }
    }
    let got = Repr::parse(bytes, max);
    prop_assert_eq!(got, expected);
    if let (Ok(v), Ok((repr, _))) = (&view, &got) {
        prop_assert_eq!(Repr::from_view(v, max), Ok(*repr));
    }

    let short = match bytes.get(11).and_then(|&c| spec_type(c)) {
        _ if bytes.len() < 12 => true,
        Some((_, hlen)) => bytes.len() < hlen,
        None => false,
    };
    prop_assert_eq!(
        matches!(got, Err(ParseError::Truncated { .. })),
        short,
        "Truncated must be reported exactly when the header is cut short"
    );
    match got {
        Ok((repr, payload)) => {
            prop_assert!(repr.header_len() <= bytes.len());
            if repr.packet_type() == PacketType::Data {
                prop_assert_eq!(payload, &bytes[DATA_HEADER_LEN..]);
            } else {
                // Bytes after a control header (e.g. Ethernet minimum-frame padding) are
                // not part of the packet.
                prop_assert!(payload.is_empty());
            }
            Ok(Some((repr, payload)))
        }
        Err(e) => {
            let _ = (e.to_string(), e.reason());
            Ok(None)
        }
    }
}

/// parse -> emit -> parse gives back the same header and payload, and emitting the result
/// again gives the same bytes (emit output is canonical).
fn check_reemit(repr: &Repr, payload: &[u8], max: u32) -> Result<(), TestCaseError> {
    let once = repr
        .to_vec(payload)
        .map_err(|e| TestCaseError::fail(format!("emit of a parsed packet failed: {e}")))?;
    prop_assert_eq!(&once, &spec_encode(repr, payload));
    let (again, again_payload) = Repr::parse(&once, max)
        .map_err(|e| TestCaseError::fail(format!("re-parse of emitted bytes failed: {e}")))?;
    prop_assert_eq!(&again, repr);
    prop_assert_eq!(again_payload, payload);
    prop_assert_eq!(again.to_vec(again_payload).unwrap(), once);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Every valid Repr of every type round-trips, and emit writes exactly the spec's bytes.
    #[test]
    fn emit_then_parse_round_trips((repr, payload) in repr_and_payload(), slack in 0usize..64) {
        let ty = repr.packet_type();
        let hlen = spec_header_len(ty);
        let total = hlen + payload.len();
        prop_assert_eq!(repr.header_len(), hlen);
        prop_assert_eq!(repr.buffer_len(payload.len()), total);

        // Emit into a larger buffer full of a sentinel: exactly `total` bytes are written.
        let mut buf = vec![0xA5u8; total + slack];
        let n = repr.emit(&payload, &mut buf).unwrap();
        prop_assert_eq!(n, total);
        prop_assert!(buf[total..].iter().all(|&b| b == 0xA5), "emit wrote past its length");
        let bytes = &buf[..n];

        // Fields Homa ignores hold what the Linux module sends.
        prop_assert_eq!(bytes[11], spec_code(ty));
        prop_assert_eq!(bytes[12], if ty == PacketType::Data { 0xE0 } else { 0x50 });
        prop_assert_eq!(bytes[13], 0x06);
        prop_assert_eq!(&bytes[8..11], &[0u8; 3][..]);
        prop_assert_eq!(rd16(bytes, 14), 0, "window");
        prop_assert_eq!(rd16(bytes, 16), 0, "checksum");
        prop_assert_eq!(rd16(bytes, 18), 0xB97D, "urgent");
        match &repr.body {
            Body::Data(d) => {
                prop_assert_eq!(rd32(bytes, 4), d.offset, "sequence carries the offset");
                let seg = rd32(bytes, 52);
                if d.retransmit {
                    prop_assert_eq!(seg, d.offset);
                } else {
                    prop_assert_eq!(seg, SEG_OFFSET_IN_SEQUENCE);
                }
                prop_assert_eq!(&bytes[DATA_HEADER_LEN..], &payload[..]);
            }
            Body::Resend(r) => prop_assert_eq!(r.is_all(), r.length == RESEND_ALL),
            _ => prop_assert_eq!(rd32(bytes, 4), 0, "sequence is 0 outside DATA"),
        }
        // The whole layout, byte for byte.
        prop_assert_eq!(bytes, &spec_encode(&repr, &payload)[..]);
        prop_assert_eq!(&repr.to_vec(&payload).unwrap()[..], bytes);

        // emit_header writes the same header and nothing else.
        let mut hbuf = vec![0xA5u8; total + slack];
        prop_assert_eq!(repr.emit_header(payload.len(), &mut hbuf).unwrap(), hlen);
        prop_assert_eq!(&hbuf[..hlen], &bytes[..hlen]);
        prop_assert!(hbuf[hlen..].iter().all(|&b| b == 0xA5));

        // One byte short is refused, not truncated.
        let mut short = vec![0u8; total - 1];
        prop_assert_eq!(
            repr.emit(&payload, &mut short),
            Err(EmitError::BufferTooSmall { needed: total, got: total - 1 })
        );

        let (back, back_payload) = Repr::parse(bytes, HOMA_MAX_MESSAGE_LENGTH).unwrap();
        prop_assert_eq!(back, repr);
        prop_assert_eq!(back_payload, &payload[..]);
        let view = PacketView::new_checked(bytes).unwrap();
        check_view(&view, bytes)?;
    }

    /// A DATA header cannot carry an ack of client RPC 0: the wire reads 0 there as no
    /// ack, so the packet would not parse back to what was emitted.
    #[test]
    fn a_data_ack_of_rpc_zero_is_refused((repr, payload) in repr_and_payload()) {
        let mut repr = repr;
        if let Body::Data(d) = &mut repr.body {
            d.ack = Some(AckEntry { client_id: 0, server_port: 7 });
            let mut buf = vec![0u8; repr.buffer_len(payload.len())];
            prop_assert_eq!(repr.emit(&payload, &mut buf), Err(EmitError::AckOfRpcZero));
        }
    }

    /// Arbitrary bytes and limits: never a panic, always the spec's answer.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..200), max in any::<u32>()) {
        if let Some((repr, payload)) = check_parse(&bytes, max)? {
            check_reemit(&repr, payload, max)?;
        }
    }

    /// Bytes that get past the type check (and often past the value checks): the spec's
    /// answer, and parse -> emit -> parse idempotence whenever they parse.
    #[test]
    fn packetish_bytes_parse_per_spec_and_reemit(bytes in packetish(), max in max_len()) {
        if let Some((repr, payload)) = check_parse(&bytes, max)? {
            check_reemit(&repr, payload, max)?;
        }
    }

    /// Valid packets with bytes flipped and/or cut short: either a documented error that
    /// fits the damage, or a packet whose header lies within the bytes, which re-emits.
    #[test]
    fn damaged_packets_error_or_parse(
        (repr, payload) in repr_and_payload(),
        damage in damage(),
        max in max_len(),
    ) {
        let bytes = damage.apply(repr.to_vec(&payload).unwrap());
        if let Some((repr, payload)) = check_parse(&bytes, max)? {
            check_reemit(&repr, payload, max)?;
        }
    }

    /// The priority for a message's unscheduled bytes is the highest one whose cutoff admits
    /// the message; if none does, the lowest one (above 0) with a cutoff at all, and 0
    /// where there is none.
    #[test]
    fn unsched_priority_is_highest_qualifying(
        cutoffs in prop_oneof![any::<[u32; 8]>(), proptest::array::uniform8(0u32..16)],
        length in prop_oneof![any::<u32>(), 0u32..16],
    ) {
        let r = unsched_priority(&cutoffs, length) as usize;
        prop_assert!(r < 8);
        for (i, &cutoff) in cutoffs.iter().enumerate().skip(r + 1) {
            prop_assert!(cutoff < length, "priority {} > {} also qualifies", i, r);
        }
        if r == 0 || cutoffs[r] < length {
            // Nothing qualifies: the lowest level with a cutoff, or 0.
            let lowest = (1..8).find(|&i| cutoffs[i] != 0).unwrap_or(0);
            prop_assert_eq!(r, lowest, "longer than every cutoff");
        }
    }

    /// The checksum never panics on any length, and a packet carrying it verifies with the
    /// ordinary Internet-checksum rule (sum over pseudo-header + packet = 0xFFFF), as the
    /// TCP-style receive path of a NIC or capture tool would check it.
    #[test]
    fn checksum_verifies(
        mut packet in vec(any::<u8>(), 0..200),
        src4 in any::<[u8; 4]>(),
        dst4 in any::<[u8; 4]>(),
        src6 in any::<[u8; 16]>(),
        dst6 in any::<[u8; 16]>(),
    ) {
        let ones_sum = |pseudo: &[u8], packet: &[u8]| {
            let mut acc: u64 = 0;
            for bytes in [pseudo, packet] {
                for c in bytes.chunks(2) {
                    acc += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
                }
            }
            while acc > 0xFFFF {
                acc = (acc & 0xFFFF) + (acc >> 16);
            }
            acc
        };
        let len = packet.len() as u32;
        let (s4, d4) = (Ipv4Addr::from(src4), Ipv4Addr::from(dst4));
        let _ = checksum::ipv4(s4, d4, &packet);
        let _ = checksum::ipv6(src6.into(), dst6.into(), &packet);
        if packet.len() < 18 {
            let before = packet.clone();
            checksum::fill_ipv4(s4, d4, &mut packet);
            checksum::fill_ipv6(src6.into(), dst6.into(), &mut packet);
            prop_assert_eq!(packet, before, "short buffers are left alone");
            return Ok(());
        }

        let mut p4 = packet.clone();
        checksum::fill_ipv4(s4, d4, &mut p4);
        prop_assert_eq!(&p4[..16], &packet[..16]);
        prop_assert_eq!(&p4[18..], &packet[18..]);
        let mut pseudo4 = Vec::new();
        pseudo4.extend_from_slice(&src4);
        pseudo4.extend_from_slice(&dst4);
        pseudo4.extend_from_slice(&[0, 6]);
        pseudo4.extend_from_slice(&(len as u16).to_be_bytes());
        prop_assert_eq!(ones_sum(&pseudo4, &p4), 0xFFFF);

        let mut p6 = packet.clone();
        checksum::fill_ipv6(Ipv6Addr::from(src6), Ipv6Addr::from(dst6), &mut p6);
        let mut pseudo6 = Vec::new();
        pseudo6.extend_from_slice(&src6);
        pseudo6.extend_from_slice(&dst6);
        pseudo6.extend_from_slice(&len.to_be_bytes());
        pseudo6.extend_from_slice(&[0, 0, 0, 6]);
        prop_assert_eq!(ones_sum(&pseudo6, &p6), 0xFFFF);
    }
}

/// The crate's type table agrees with the spec's (the properties above lean on both).
#[test]
fn packet_types_match_spec_table() {
    assert_eq!(PacketType::ALL.len(), SPEC_TYPES.len());
    for (ty, &(code, spec_ty, hlen)) in PacketType::ALL.iter().zip(&SPEC_TYPES) {
        assert_eq!(*ty, spec_ty);
        assert_eq!(ty.code(), code);
        assert_eq!(PacketType::from_code(code), Some(*ty));
        assert_eq!(ty.header_len(), hlen);
        assert!(hlen <= MAX_HEADER_LEN);
        assert_eq!(ty.doff(), if *ty == PacketType::Data { 0xE0 } else { 0x50 });
    }
    assert_eq!(
        MAX_HEADER_LEN,
        SPEC_TYPES.iter().map(|t| t.2).max().unwrap()
    );
    for code in 0..=u8::MAX {
        assert_eq!(
            PacketType::from_code(code).is_some(),
            spec_type(code).is_some()
        );
    }
}

/// Buffers far beyond one packet (an IPv6 jumbogram, a GSO batch) neither overflow the
/// checksum's running sum nor lose its correctness.
#[test]
fn checksum_of_oversized_buffer() {
    let len = 200_000usize;
    let mut packet = vec![0xFFu8; len];
    let (src, dst) = (Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
    checksum::fill_ipv6(src, dst, &mut packet);
    let _ = checksum::ipv4(Ipv4Addr::BROADCAST, Ipv4Addr::BROADCAST, &packet);

    let mut acc: u64 = 0;
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(len as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 6]);
    for c in pseudo.chunks(2).chain(packet.chunks(2)) {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    assert_eq!(acc, 0xFFFF);
}
