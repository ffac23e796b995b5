//! What `homa dump` shows of this project's extensions to the module's format (docs/PROTOCOL.md
//! sections 10 and 11): the DATA flags of one-way messages, and the marks in a CUTOFFS
//! packet's slot 0. The module's own packets show none of it.

use homa_dump::decode_packet;
use homa_wire::{
    Body, Common, Cutoffs, Data, DataFlags, OneWayMark, RefusalMark, Repr,
    HOMA_MAX_MESSAGE_LENGTH as MAX,
};

fn common() -> Common {
    Common {
        sport: 40_000,
        dport: 99,
        sender_id: 6,
    }
}

fn data(flags: u8) -> Vec<u8> {
    let mut bytes = Repr {
        common: common(),
        body: Body::Data(Data {
            message_length: 3,
            incoming: 3,
            ack: None,
            cutoff_version: 1,
            retransmit: false,
            offset: 0,
        }),
    }
    .to_vec(b"abc")
    .unwrap();
    bytes[homa_wire::DATA_FLAGS_AT] = flags;
    bytes
}

fn cutoffs(slot0: u32) -> Vec<u8> {
    Repr {
        common: common(),
        body: Body::Cutoffs(Cutoffs {
            unsched_cutoffs: [slot0, 0, 0, 0, 1_000_000, 15_000, 2_800, 200],
            cutoff_version: 3,
        }),
    }
    .to_vec(&[])
    .unwrap()
}

#[test]
fn one_way_data_flags_are_named() {
    let one_way = DataFlags::ONE_WAY.bits();
    let both = DataFlags::ONE_WAY.with(DataFlags::ACK_ONE_WAY).bits();
    for (flags, words) in [
        (0, None),
        (one_way, Some("ext_flags=one_way")),
        (both, Some("ext_flags=one_way,ack_one_way")),
        // A bit this version does not know, shown as it is.
        (0x81, Some("ext_flags=one_way,0x80")),
    ] {
        let r = decode_packet(&data(flags), MAX);
        assert_eq!(r.to_json()["ext_flags"], flags, "{flags}");
        let text = r.to_text();
        match words {
            Some(w) => assert!(text.ends_with(&format!(" {w}")), "{text}"),
            None => assert!(!text.contains("ext_flags"), "{text}"),
        }
    }
}

#[test]
fn cutoffs_marks_are_named() {
    let too_long = RefusalMark::TooLong(2_000_000).to_slot().unwrap();
    let never_fits = RefusalMark::NeverFits(5_000).to_slot().unwrap();
    for (slot0, mark, length) in [
        (OneWayMark::Query.to_slot(), Some("one_way_query"), None),
        (OneWayMark::Accept.to_slot(), Some("one_way_accept"), None),
        (OneWayMark::Refuse.to_slot(), Some("one_way_refuse"), None),
        (
            OneWayMark::NoSocket.to_slot(),
            Some("one_way_no_socket"),
            None,
        ),
        (too_long, Some("refuse_too_long"), Some(2_000_000)),
        (never_fits, Some("refuse_never_fits"), Some(5_000)),
        // Ours without a mark, and the module's INT_MAX: no mark.
        (0, None, None),
        (0x7fff_ffff, None, None),
    ] {
        let r = decode_packet(&cutoffs(slot0), MAX);
        let json = r.to_json();
        assert_eq!(json["unsched_cutoffs"][0], slot0, "{slot0:#x}");
        assert_eq!(json["mark"].as_str(), mark, "{slot0:#x}");
        assert_eq!(json["mark_length"].as_u64(), length, "{slot0:#x}");
        let text = r.to_text();
        let want = match (mark, length) {
            (Some(m), Some(l)) => Some(format!(" mark={m}({l})")),
            (Some(m), None) => Some(format!(" mark={m}")),
            _ => None,
        };
        match want {
            Some(w) => assert!(text.ends_with(&w), "{text}"),
            None => assert!(!text.contains("mark="), "{text}"),
        }
    }
}
