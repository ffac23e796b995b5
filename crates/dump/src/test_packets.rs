//! Homa packets for the dump modules' unit tests.

use homa_wire::{Body, Common, Data, Repr};

/// The ports and id every test packet carries.
pub fn common() -> Common {
    Common {
        sport: 40000,
        dport: 4000,
        sender_id: 1000,
    }
}

/// A first-transmission DATA packet carrying bytes [offset, offset + len) of a `msg`-byte
/// message: 56 header bytes, then the payload, an ascending byte pattern (which never
/// looks like the next packet's header).
pub fn data(offset: u32, len: usize, msg: u32) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
    Repr {
        common: common(),
        body: Body::Data(Data {
            message_length: msg,
            incoming: msg,
            ack: None,
            cutoff_version: 1,
            retransmit: false,
            offset,
        }),
    }
    .to_vec(&payload)
    .unwrap()
}
