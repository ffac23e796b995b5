//! Byte-literal tests: every packet type against bytes laid out by hand from the offsets in
//! PROTOCOL.md section 3, and against the kernel-generated headers quoted in the captures'
//! README (these must re-emit byte for byte, checksum included).

use super::*;
use std::net::Ipv4Addr;

const GUEST: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
const HOST: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const MAX: u32 = HOMA_MAX_MESSAGE_LENGTH;

fn hex(s: &str) -> Vec<u8> {
    let digits: String = s
        .lines()
        .flat_map(|l| l.split_whitespace().skip(1))
        .collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

/// Parse kernel bytes, check the fields, re-emit, and require identical bytes. For control
/// packets the checksum is recomputed from the capture's addresses too.
fn reemit(bytes: &[u8], payload: &[u8], with_checksum: bool) -> Repr {
    let mut full = bytes.to_vec();
    full.extend_from_slice(payload);
    let (repr, got_payload) = Repr::parse(&full, MAX).unwrap();
    assert_eq!(got_payload, payload);
    let mut out = repr.to_vec(payload).unwrap();
    assert_eq!(out.len(), full.len());
    if with_checksum {
        checksum::fill_ipv4(GUEST, HOST, &mut out);
    } else {
        out[16..18].copy_from_slice(&full[16..18]);
    }
    assert_eq!(out, full, "re-emitted bytes differ");
    repr
}

#[test]
fn data_single_packet_response() {
    // short.pcap #3 (header only; the payload is 100 bytes we do not have here).
    let h = hex("0000  0f a0 9c 40 00 00 00 00 00 00 00 10 e0 06 00 00
                 0010  9f 26 b9 7d 00 00 00 00 00 00 03 e9 00 00 00 64
                 0020  00 00 00 64 00 00 00 00 00 00 00 00 00 00 00 00
                 0030  00 00 00 00 ff ff ff ff");
    let payload = [0x5a; 100];
    let repr = reemit(&h, &payload, false);
    assert_eq!(
        repr,
        Repr {
            common: Common {
                sport: 4000,
                dport: 40000,
                sender_id: 1001
            },
            body: Body::Data(Data {
                message_length: 100,
                incoming: 100,
                ack: None,
                cutoff_version: 0,
                retransmit: false,
                offset: 0,
            }),
        }
    );
    let v = PacketView::new_checked(&h).unwrap();
    assert_eq!(v.seg_offset(), Some(SEG_OFFSET_IN_SEQUENCE));
    assert_eq!(v.doff(), 0xe0);
    assert_eq!(v.flags(), 0x06);
    assert_eq!(v.urgent(), 0xb97d);
}

#[test]
fn data_unscheduled_boundary_offset_in_sequence() {
    // grants.pcap #183: seg.offset -1, the offset 39872 (0x9bc0) in `sequence`.
    let h = hex("0000  0f a0 9c 41 00 00 9b c0 00 00 00 10 e0 06 00 00
                 0010  b2 a1 b9 7d 00 00 00 00 00 00 07 d1 00 04 93 e0
                 0020  00 00 9c 40 00 00 00 00 00 00 00 00 00 00 00 00
                 0030  00 00 00 00 ff ff ff ff");
    let repr = reemit(&h, &[7; 128], false);
    let Body::Data(d) = repr.body else {
        panic!("not DATA")
    };
    assert_eq!(
        (d.message_length, d.incoming, d.offset),
        (300_000, 40_000, 39_872)
    );
}

#[test]
fn data_retransmission_has_real_seg_offset() {
    // resend.pcap #23: retransmit=1, seg.offset=1424 (0x590) and sequence=1424.
    let h = hex("0000  0f a0 9c 42 00 00 05 90 00 00 00 10 e0 06 00 00
                 0010  a6 67 b9 7d 00 00 00 00 00 00 0b b9 00 00 13 88
                 0020  00 00 0b 20 00 00 00 00 00 00 00 00 00 00 00 00
                 0030  01 00 00 00 00 00 05 90");
    let repr = reemit(&h, &[1; 1424], false);
    let Body::Data(d) = repr.body else {
        panic!("not DATA")
    };
    assert!(d.retransmit);
    assert_eq!((d.offset, d.incoming, d.message_length), (1424, 2848, 5000));
}

#[test]
fn data_with_piggybacked_ack() {
    // guest_client.pcap #9: ack {client_id 2, server_port 99}, cutoff_version 5.
    let h = hex("0000  80 02 00 63 00 00 00 00 00 00 00 10 e0 06 00 00
                 0010  1c 0a b9 7d 00 00 00 00 00 00 00 04 00 00 0b b8
                 0020  00 00 0b b8 00 00 00 00 00 00 00 02 00 63 00 05
                 0030  00 00 00 00 ff ff ff ff");
    let repr = reemit(&h, &[3; 1424], false);
    let Body::Data(d) = repr.body else {
        panic!("not DATA")
    };
    assert_eq!(
        d.ack,
        Some(AckEntry {
            client_id: 2,
            server_port: 99
        })
    );
    assert_eq!(d.cutoff_version, 5);
    assert_eq!(
        repr.common,
        Common {
            sport: 32770,
            dport: 99,
            sender_id: 4
        }
    );
}

#[test]
fn data_offset_from_seg_offset_when_set() {
    // A peer (like the captures' Python host) may put the offset in seg.offset too; when
    // seg.offset is not -1 it wins over `sequence`.
    let mut b = vec![0u8; DATA_HEADER_LEN + 10];
    b[11] = 0x10;
    b[4..8].copy_from_slice(&999u32.to_be_bytes()); // sequence: ignored
    b[28..32].copy_from_slice(&100u32.to_be_bytes());
    b[52..56].copy_from_slice(&90u32.to_be_bytes());
    let (repr, payload) = Repr::parse(&b, MAX).unwrap();
    assert_eq!(payload.len(), 10);
    let Body::Data(d) = repr.body else { panic!() };
    assert_eq!(d.offset, 90);
}

#[test]
fn grant() {
    let h = hex("0000  0f a0 9c 41 00 00 00 00 00 00 00 11 50 06 00 00
                 0010  1f b9 b9 7d 00 00 00 00 00 00 07 d1 00 03 0d 40
                 0020  00");
    let repr = reemit(&h, &[], true);
    assert_eq!(
        repr.body,
        Body::Grant(Grant {
            offset: 200_000,
            priority: 0
        })
    );
}

#[test]
fn resend_gap_and_resend_all() {
    let gap = hex("0000  0f a0 9c 42 00 00 00 00 00 00 00 12 50 06 00 00
                   0010  11 5e b9 7d 00 00 00 00 00 00 0b b9 00 00 0b 20
                   0020  00 00 05 90 07");
    let repr = reemit(&gap, &[], true);
    assert_eq!(
        repr.body,
        Body::Resend(Resend {
            offset: 2848,
            length: 1424,
            priority: 7
        })
    );

    let all = hex("0000  80 02 00 63 00 00 00 00 00 00 00 12 50 06 00 00
                   0010  59 40 b9 7d 00 00 00 00 00 00 00 04 00 00 00 00
                   0020  ff ff ff ff 07");
    let repr = reemit(&all, &[], true);
    let Body::Resend(r) = repr.body else { panic!() };
    assert!(r.is_all());
    assert_eq!((r.offset, r.priority), (0, 7));
}

#[test]
fn cutoffs() {
    let h = hex("0000  0f a0 9c 40 00 00 00 00 00 00 00 15 50 06 00 00
                 0010  a8 23 b9 7d 00 00 00 00 00 00 03 e9 00 00 00 00
                 0020  00 00 00 00 00 00 00 00 00 00 00 00 00 0f 42 40
                 0030  00 00 3a 98 00 00 0a f0 00 00 00 c8 00 01");
    let repr = reemit(&h, &[], true);
    assert_eq!(
        repr.body,
        Body::Cutoffs(Cutoffs {
            unsched_cutoffs: [0, 0, 0, 0, 1_000_000, 15_000, 2_800, 200],
            cutoff_version: 1,
        })
    );
}

#[test]
fn need_ack_busy_rpc_unknown() {
    let need_ack = hex("0000  0f a0 9c 40 00 00 00 00 00 00 00 17 50 06 00 00
                        0010  30 e4 b9 7d 00 00 00 00 00 00 03 e9");
    assert_eq!(reemit(&need_ack, &[], true).body, Body::NeedAck);
    let busy = hex("0000  0f a1 9c 43 00 00 00 00 00 00 00 14 50 06 00 00
                    0010  21 43 b9 7d 00 00 00 00 00 00 13 89");
    assert_eq!(reemit(&busy, &[], true).body, Body::Busy);
    let unknown = hex("0000  0f a0 9c 42 00 00 00 00 00 00 00 13 50 06 00 00
                       0010  19 76 b9 7d 00 00 00 00 00 00 1b 59");
    let repr = reemit(&unknown, &[], true);
    assert_eq!(repr.body, Body::RpcUnknown);
    assert_eq!(repr.common.sender_id, 7001);
}

#[test]
fn freeze_from_offsets() {
    // No capture has a FREEZE; build it from PROTOCOL.md: common header only, type 0x16.
    let repr = Repr {
        common: Common {
            sport: 1,
            dport: 2,
            sender_id: 0x0102_0304_0506_0708,
        },
        body: Body::Freeze,
    };
    let b = repr.to_vec(&[]).unwrap();
    let want = [
        0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0x16, 0x50, 0x06, 0, 0, 0, 0, 0xb9, 0x7d, 1, 2, 3, 4, 5,
        6, 7, 8,
    ];
    assert_eq!(b, want);
    assert_eq!(Repr::parse(&b, MAX).unwrap().0, repr);
}

#[test]
fn ack_with_one_and_zero_acks() {
    let one = hex("0000  80 02 00 63 00 00 00 00 00 00 00 18 50 06 00 00
                   0010  5f 9f b9 7d 00 00 00 00 00 00 00 08 00 01 00 00
                   0020  00 00 00 00 00 08 00 63 00 00 00 00 00 00 00 00
                   0030  00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
                   0040  00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00");
    let repr = reemit(&one, &[], true);
    let Body::Ack(a) = repr.body else { panic!() };
    assert_eq!(
        a.as_slice(),
        &[AckEntry {
            client_id: 8,
            server_port: 99
        }]
    );

    let zero = hex("0000  80 02 00 63 00 00 00 00 00 00 00 18 50 06 00 00
                    0010  60 0d b9 7d 00 00 00 00 00 00 00 06 00 00 00 00
                    0020  00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
                    0030  00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
                    0040  00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00");
    let repr = reemit(&zero, &[], true);
    let Body::Ack(a) = repr.body else { panic!() };
    assert!(a.as_slice().is_empty());
}

#[test]
fn ack_full_from_offsets() {
    let acks: Vec<AckEntry> = (1..=5)
        .map(|i| AckEntry {
            client_id: 2 * i,
            server_port: 100 + i as u16,
        })
        .collect();
    let repr = Repr {
        common: Common {
            sport: 32768,
            dport: 99,
            sender_id: 10,
        },
        body: Body::Ack(Acks::new(&acks).unwrap()),
    };
    let b = repr.to_vec(&[]).unwrap();
    assert_eq!(b.len(), 80);
    assert_eq!(&b[28..30], &[0, 5]);
    for (i, a) in acks.iter().enumerate() {
        let at = 30 + 10 * i;
        assert_eq!(&b[at..at + 8], &a.client_id.to_be_bytes());
        assert_eq!(&b[at + 8..at + 10], &a.server_port.to_be_bytes());
    }
    assert_eq!(Repr::parse(&b, MAX).unwrap().0, repr);
    assert_eq!(
        Acks::new(&[AckEntry::default(); 6]),
        Err(EmitError::TooManyAcks(6))
    );
}

#[test]
fn ignored_fields_accept_any_value() {
    // ack[3], flags, window, checksum, urgent and doff may hold anything.
    let repr = Repr {
        common: Common {
            sport: 5,
            dport: 6,
            sender_id: 7,
        },
        body: Body::Busy,
    };
    let mut b = repr.to_vec(&[]).unwrap();
    for i in [8, 9, 10, 12, 13, 14, 15, 16, 17, 18, 19] {
        b[i] = 0xff;
    }
    assert_eq!(Repr::parse(&b, MAX).unwrap().0, repr);
}

#[test]
fn bad_input_gives_typed_errors() {
    assert_eq!(
        Repr::parse(&[], MAX).unwrap_err(),
        ParseError::Truncated {
            ty: TypeName(None),
            needed: 28,
            got: 0
        }
    );
    let grant = Repr {
        common: Common {
            sport: 1,
            dport: 2,
            sender_id: 3,
        },
        body: Body::Grant(Grant {
            offset: 1,
            priority: 1,
        }),
    }
    .to_vec(&[])
    .unwrap();
    assert_eq!(
        Repr::parse(&grant[..32], MAX).unwrap_err(),
        ParseError::Truncated {
            ty: TypeName(Some(PacketType::Grant)),
            needed: 33,
            got: 32
        }
    );
    let mut unknown = grant.clone();
    unknown[11] = 0x19;
    assert_eq!(
        Repr::parse(&unknown, MAX).unwrap_err(),
        ParseError::UnknownType(0x19)
    );
    assert_eq!(
        Repr::parse(&unknown[..12], MAX).unwrap_err(),
        ParseError::UnknownType(0x19)
    );

    let mut ack = vec![0u8; 80];
    ack[11] = 0x18;
    ack[28..30].copy_from_slice(&6u16.to_be_bytes());
    assert_eq!(
        Repr::parse(&ack, MAX).unwrap_err(),
        ParseError::TooManyAcks(6)
    );

    let data = |len: u32, off: u32, payload: usize| {
        let mut b = vec![0u8; DATA_HEADER_LEN + payload];
        b[11] = 0x10;
        b[28..32].copy_from_slice(&len.to_be_bytes());
        b[4..8].copy_from_slice(&off.to_be_bytes());
        b[52..56].copy_from_slice(&SEG_OFFSET_IN_SEQUENCE.to_be_bytes());
        b
    };
    assert_eq!(
        Repr::parse(&data(0, 0, 0), MAX).unwrap_err(),
        ParseError::ZeroMessageLength
    );
    assert_eq!(
        Repr::parse(&data(MAX + 1, 0, 1), MAX).unwrap_err(),
        ParseError::MessageTooLong {
            length: MAX + 1,
            max: MAX
        }
    );
    assert_eq!(
        Repr::parse(&data(100, 90, 11), MAX).unwrap_err(),
        ParseError::SegmentPastEnd {
            offset: 90,
            len: 11,
            message_length: 100
        }
    );
    // An offset near u32::MAX must not overflow the check.
    assert!(matches!(
        Repr::parse(&data(100, u32::MAX - 1, 5), MAX),
        Err(ParseError::SegmentPastEnd { .. })
    ));
    assert!(Repr::parse(&data(100, 90, 10), MAX).is_ok());
}

#[test]
fn emit_checks_buffer_and_payload() {
    let repr = Repr {
        common: Common {
            sport: 1,
            dport: 2,
            sender_id: 4,
        },
        body: Body::Data(Data {
            message_length: 10,
            incoming: 10,
            ack: None,
            cutoff_version: 0,
            retransmit: false,
            offset: 5,
        }),
    };
    let mut small = [0u8; 60];
    assert_eq!(
        repr.emit(&[0; 5], &mut small),
        Err(EmitError::BufferTooSmall {
            needed: 61,
            got: 60
        })
    );
    let mut buf = [0u8; 100];
    assert!(matches!(
        repr.emit(&[0; 6], &mut buf),
        Err(EmitError::SegmentPastEnd { .. })
    ));
    assert_eq!(repr.emit(&[9; 5], &mut buf), Ok(61));
    let busy = Repr {
        common: repr.common,
        body: Body::Busy,
    };
    assert_eq!(
        busy.emit(&[1], &mut buf),
        Err(EmitError::UnexpectedPayload(PacketType::Busy))
    );
}

#[test]
fn rpc_id_rules() {
    let client = RpcId(1000);
    assert!(client.is_client());
    assert_eq!(client.to_wire(), 1000);
    let server = RpcId::from_sender_id(client.to_wire());
    assert_eq!(server, RpcId(1001));
    assert!(!server.is_client());
    assert_eq!(server.to_wire(), 1001);
    assert_eq!(RpcId::from_sender_id(server.to_wire()), client);
    assert_eq!(server.client_id(), 1000);
    assert_eq!(server.peer_id(), client);
}

#[test]
fn priority_mappings() {
    for p in 0..8 {
        assert_eq!(tos_to_priority(priority_to_tos(p)), p);
        assert_eq!(traffic_class_to_priority(priority_to_traffic_class(p)), p);
    }
    assert_eq!(priority_to_tos(6), 0xc0);
    assert_eq!(priority_to_tos(7), 0xe0);
    assert_eq!(priority_to_tos(200), 0xe0);
    assert_eq!(tos_to_priority(0xa3), 5); // ECN bits ignored
}

#[test]
fn unscheduled_priority_from_cutoffs() {
    let default = [0, 0, 0, 0, 1_000_000, 15_000, 2_800, 200];
    assert_eq!(unsched_priority(&default, 100), 7);
    assert_eq!(unsched_priority(&default, 200), 7);
    assert_eq!(unsched_priority(&default, 201), 6);
    assert_eq!(unsched_priority(&default, 3_000), 5);
    assert_eq!(unsched_priority(&default, 1_000_000), 4);
    // Longer than every cutoff (only with a raised max_message_length): the lowest
    // unscheduled level, not 0, below every granted byte.
    assert_eq!(unsched_priority(&default, 1_000_001), 4);
    assert_eq!(unsched_priority(&[0; 8], 100), 0);
    // guest_client.pcap: the host's cutoffs ...,4000,1000,100 give a 3000-byte message prio 5.
    assert_eq!(
        unsched_priority(&[0, 0, 0, 0, 1_000_000, 4_000, 1_000, 100], 3_000),
        5
    );
}

#[test]
fn checksum_matches_kernel_for_control_packets() {
    // CUTOFFS from short.pcap, guest -> host.
    let h = hex("0000  0f a0 9c 40 00 00 00 00 00 00 00 15 50 06 00 00
                 0010  a8 23 b9 7d 00 00 00 00 00 00 03 e9 00 00 00 00
                 0020  00 00 00 00 00 00 00 00 00 00 00 00 00 0f 42 40
                 0030  00 00 3a 98 00 00 0a f0 00 00 00 c8 00 01");
    assert_eq!(checksum::ipv4(GUEST, HOST, &h), 0xa823);
}
