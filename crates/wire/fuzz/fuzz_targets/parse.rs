//! Fuzz the packet parser with arbitrary bytes: nothing may panic, a checked view's
//! accessors must agree with `Repr::parse`, and whatever parses must re-emit to bytes that
//! parse back to the same header and payload, and re-emit identically.
//!
//! The whole input is the packet (no framing bytes), so corpus files are plain packets and
//! captured headers can be dropped into the corpus as they are. Each input is parsed with
//! the Linux limit on message length and with no limit, so DATA packets with any
//! message_length reach the segment checks.
#![no_main]

use homa_wire::{PacketType, PacketView, Repr, HOMA_MAX_MESSAGE_LENGTH};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for max in [HOMA_MAX_MESSAGE_LENGTH, u32::MAX] {
        check(data, max);
    }
});

fn check(data: &[u8], max: u32) {
    let parsed = Repr::parse(data, max);
    match PacketView::new_checked(data) {
        Ok(view) => {
            touch_every_accessor(&view, data);
            assert_eq!(Repr::from_view(&view, max), parsed.map(|(r, _)| r));
        }
        // A structural error from the view is exactly what parse reports.
        Err(e) => assert_eq!(parsed, Err(e)),
    }

    let (repr, payload) = match parsed {
        Ok(ok) => ok,
        Err(e) => {
            let _ = (e.to_string(), e.reason());
            return;
        }
    };
    assert!(repr.header_len() <= data.len());
    if repr.packet_type() == PacketType::Data {
        assert_eq!(payload, &data[repr.header_len()..]);
    } else {
        assert!(payload.is_empty());
    }

    let mut buf = vec![0u8; repr.buffer_len(payload.len())];
    let n = repr
        .emit(payload, &mut buf)
        .expect("a parsed packet must re-emit");
    assert_eq!(n, repr.header_len() + payload.len());
    let (again, again_payload) = Repr::parse(&buf, max).expect("emitted bytes must parse");
    assert_eq!(again, repr);
    assert_eq!(again_payload, payload);
    assert_eq!(
        again.to_vec(again_payload).unwrap(),
        buf,
        "emit must be canonical"
    );
}

fn touch_every_accessor(v: &PacketView<'_>, data: &[u8]) {
    assert_eq!(v.as_bytes(), data);
    assert!(v.header_len() <= data.len());
    let ty = v.packet_type();
    let common = (
        v.sport(),
        v.dport(),
        v.sequence(),
        v.ack_bytes(),
        v.doff(),
        v.flags(),
        v.window(),
        v.checksum(),
        v.urgent(),
        v.sender_id(),
    );
    let data_fields = (
        v.message_length(),
        v.incoming(),
        v.data_ack(),
        v.data_cutoff_version(),
        v.retransmit(),
        v.seg_offset(),
        v.data_offset(),
        v.payload(),
    );
    assert_eq!(data_fields.0.is_some(), ty == PacketType::Data);
    assert_eq!(data_fields.7.is_some(), ty == PacketType::Data);
    let control = (
        v.grant_offset(),
        v.grant_priority(),
        v.resend(),
        v.cutoffs(),
        v.cutoffs_version(),
    );
    assert_eq!(control.0.is_some(), ty == PacketType::Grant);
    assert_eq!(control.2.is_some(), ty == PacketType::Resend);
    assert_eq!(control.3.is_some(), ty == PacketType::Cutoffs);
    assert!(v.num_acks() <= 5);
    assert_eq!(v.acks().count(), usize::from(v.num_acks()));
    std::hint::black_box((common, data_fields, control));
    let _ = format!("{v:?} {ty}");
}
