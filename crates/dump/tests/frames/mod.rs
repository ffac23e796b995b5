//! Builders of capture files for the decoder's tests: Homa packets (with
//! `homa_wire::Repr`), link, IP and UDP headers by hand (so the tests share no parsing
//! code with the decoder), and pcap/pcapng files around them. Also used by the `homa`
//! command's tests (crates/cli/tests/dump.rs includes this file).
#![allow(dead_code)] // Not every test binary uses every builder.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use homa_wire::{AckEntry, Body, Common, Data, Grant, Repr};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{Block, PcapNgWriter};
use pcap_file::DataLink;

pub const SRC4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const DST4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const SRC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
pub const DST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
pub const HOMA: u8 = 146;
pub const UDP: u8 = 17;
pub const TCP: u8 = 6;

// ---- Homa packets ----

pub fn common() -> Common {
    Common {
        sport: 40000,
        dport: 4000,
        sender_id: 1000,
    }
}

/// A first-transmission DATA packet: bytes [offset, offset+len) of a `msg`-byte message.
pub fn data(offset: u32, len: usize, msg: u32) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
    Repr {
        common: common(),
        body: Body::Data(Data {
            message_length: msg,
            incoming: msg.min(40_000),
            ack: Some(AckEntry {
                client_id: 998,
                server_port: 4000,
            }),
            cutoff_version: 3,
            retransmit: false,
            offset,
            // Repr puts the offset in `sequence` and 0xFFFFFFFF in seg.offset, as Linux does.
        }),
    }
    .to_vec(&payload)
    .unwrap()
}

pub fn need_ack() -> Vec<u8> {
    Repr {
        common: common(),
        body: Body::NeedAck,
    }
    .to_vec(&[])
    .unwrap()
}

pub fn grant() -> Vec<u8> {
    Repr {
        common: common(),
        body: Body::Grant(Grant {
            offset: 50_000,
            priority: 3,
        }),
    }
    .to_vec(&[])
    .unwrap()
}

// ---- headers ----

pub fn ipv4(proto: u8, tos: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut h = vec![0x45, tos];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0]); // id 0, DF, offset 0
    h.extend_from_slice(&[64, proto, 0, 0]); // TTL, protocol, checksum (unchecked)
    h.extend_from_slice(&SRC4.octets());
    h.extend_from_slice(&DST4.octets());
    h.extend_from_slice(payload);
    h
}

/// An IPv6 packet whose payload follows the given extension headers (each 8 bytes:
/// hop-by-hop 0, routing 43, destination options 60).
pub fn ipv6(next: u8, traffic_class: u8, exts: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, _) in exts.iter().enumerate() {
        let following = exts.get(i + 1).copied().unwrap_or(next);
        let ext = exts[i];
        match ext {
            // Next header, length 0 (= 8 bytes), a PadN option filling the rest.
            0 | 60 => body.extend_from_slice(&[following, 0, 1, 4, 0, 0, 0, 0]),
            // Next header, length 0, routing type 4, segments left 0, 4 bytes reserved.
            43 => body.extend_from_slice(&[following, 0, 4, 0, 0, 0, 0, 0]),
            _ => panic!("no builder for extension {ext}"),
        }
    }
    body.extend_from_slice(payload);
    let first = exts.first().copied().unwrap_or(next);
    let vtf = (6u32 << 28) | (u32::from(traffic_class) << 20);
    let mut h = vtf.to_be_bytes().to_vec();
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&[first, 64]);
    h.extend_from_slice(&SRC6.octets());
    h.extend_from_slice(&DST6.octets());
    h.extend_from_slice(&body);
    h
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = sport.to_be_bytes().to_vec();
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]); // no checksum
    h.extend_from_slice(payload);
    h
}

pub fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![
        0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x92, 0x26, 0x8f, 0x80, 0x9b, 0x79,
    ];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An 802.1Q (or 802.1ad with `tpid` 0x88a8) tag in front of `inner`.
pub fn vlan(tpid: u16, id: u16, ethertype: u16, payload: &[u8]) -> (u16, Vec<u8>) {
    let mut t = id.to_be_bytes().to_vec();
    t.extend_from_slice(&ethertype.to_be_bytes());
    t.extend_from_slice(payload);
    (tpid, t)
}

pub fn sll(proto: u16, payload: &[u8]) -> Vec<u8> {
    // packet type 0 (to us), ARPHRD_ETHER, address length 6, address + 2 pad, protocol.
    let mut f = vec![0, 0, 0, 1, 0, 6, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 0, 0];
    f.extend_from_slice(&proto.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn sll2(proto: u16, payload: &[u8]) -> Vec<u8> {
    // protocol, reserved, ifindex 2, ARPHRD_ETHER, packet type 4 (outgoing), addr len 6,
    // address + 2 pad.
    let mut f = proto.to_be_bytes().to_vec();
    f.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 4, 6]);
    f.extend_from_slice(&[0x52, 0x54, 0, 0x12, 0x34, 0x56, 0, 0]);
    f.extend_from_slice(payload);
    f
}

// ---- capture files ----

/// A frame to write: seconds, sub-second ticks, bytes kept, length on the wire.
pub struct F {
    pub secs: u32,
    pub frac: u32,
    pub data: Vec<u8>,
    pub orig_len: u32,
}

pub fn f(secs: u32, frac: u32, data: Vec<u8>) -> F {
    let orig_len = data.len() as u32;
    F {
        secs,
        frac,
        data,
        orig_len,
    }
}

/// A classic pcap, written by hand: little-endian microseconds unless `nanos_be`, which
/// writes the big-endian nanosecond variant.
pub fn pcap(link_type: u32, frames: &[F], nanos_be: bool) -> Vec<u8> {
    let w32 = |v: u32| {
        if nanos_be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let w16 = |v: u16| {
        if nanos_be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut out = w32(if nanos_be { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }).to_vec();
    out.extend_from_slice(&w16(2));
    out.extend_from_slice(&w16(4));
    out.extend_from_slice(&w32(0)); // thiszone
    out.extend_from_slice(&w32(0)); // sigfigs
    out.extend_from_slice(&w32(96)); // snaplen: small, like `tcpdump -s 96`
    out.extend_from_slice(&w32(link_type));
    for fr in frames {
        out.extend_from_slice(&w32(fr.secs));
        out.extend_from_slice(&w32(fr.frac));
        out.extend_from_slice(&w32(fr.data.len() as u32));
        out.extend_from_slice(&w32(fr.orig_len));
        out.extend_from_slice(&fr.data);
    }
    out
}

/// A pcapng file with the given interfaces `(link type, if_tsresol)` and packets
/// `(interface, timestamp in that interface's ticks, frame)`.
pub fn pcapng(ifaces: &[(u32, Option<u8>)], packets: &[(u32, u64, Vec<u8>)]) -> Vec<u8> {
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    for &(link, tsresol) in ifaces {
        let options = tsresol
            .map(|r| vec![InterfaceDescriptionOption::IfTsResol(r)])
            .unwrap_or_default();
        w.write_block(&Block::InterfaceDescription(InterfaceDescriptionBlock {
            linktype: DataLink::from(link),
            snaplen: 0,
            options,
        }))
        .unwrap();
    }
    for (iface, ticks, data) in packets {
        // pcap-file writes `timestamp.as_nanos()` as the raw tick count.
        w.write_block(&Block::EnhancedPacket(EnhancedPacketBlock {
            interface_id: *iface,
            timestamp: Duration::from_nanos(*ticks),
            original_len: data.len() as u32,
            data: Cow::Borrowed(data),
            options: vec![],
        }))
        .unwrap();
    }
    w.into_inner()
}
