//! The checksum Linux Homa puts in its packets.
//!
//! The module lets the NIC fill the TCP-overlay checksum as it would for TCP: an Internet
//! checksum over a pseudo-header that names protocol 6 (TCP, not 146) and the Homa length,
//! then the whole Homa packet. Linux receivers never verify it, and in UDP mode the UDP
//! checksum protects the bytes instead, so we leave it 0 there; the raw-IP transport fills
//! it so that what we send matches the module byte for byte.

use std::net::{Ipv4Addr, Ipv6Addr};

const PSEUDO_PROTOCOL: u64 = 6;

// The running sum is a u64 so that it cannot overflow on any buffer a caller can hold: a
// u32 overflows (a panic in debug builds, a wrong checksum in release) once a buffer of
// 0xFF bytes passes 128 KiB (65,537 words), which an IPv6 jumbogram or a large GSO buffer can. A u64
// would need 2^48 bytes. The ones'-complement fold at the end makes the width irrelevant to
// the result.
fn sum_bytes(mut acc: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    !(acc as u16)
}

/// The checksum of `packet` (Homa header onward) between two IPv4 hosts, computed with the
/// checksum field taken as zero.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, packet: &[u8]) -> u16 {
    let mut acc = sum_bytes(0, &src.octets());
    acc = sum_bytes(acc, &dst.octets());
    acc += PSEUDO_PROTOCOL + packet.len() as u64;
    finish(acc, packet)
}

/// The checksum of `packet` between two IPv6 hosts (RFC 8200 pseudo-header, next header 6).
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, packet: &[u8]) -> u16 {
    let mut acc = sum_bytes(0, &src.octets());
    acc = sum_bytes(acc, &dst.octets());
    acc += packet.len() as u64 + PSEUDO_PROTOCOL;
    finish(acc, packet)
}

fn finish(mut acc: u64, packet: &[u8]) -> u16 {
    if packet.len() >= 18 {
        acc = sum_bytes(acc, &packet[..16]);
        acc = sum_bytes(acc, &packet[18..]);
    } else {
        acc = sum_bytes(acc, packet);
    }
    fold(acc)
}

/// Compute and store the IPv4 checksum into `packet[16..18]`. Short buffers are left alone.
pub fn fill_ipv4(src: Ipv4Addr, dst: Ipv4Addr, packet: &mut [u8]) {
    if packet.len() >= 18 {
        let c = ipv4(src, dst, packet);
        packet[16..18].copy_from_slice(&c.to_be_bytes());
    }
}

/// Compute and store the IPv6 checksum into `packet[16..18]`. Short buffers are left alone.
pub fn fill_ipv6(src: Ipv6Addr, dst: Ipv6Addr, packet: &mut [u8]) {
    if packet.len() >= 18 {
        let c = ipv6(src, dst, packet);
        packet[16..18].copy_from_slice(&c.to_be_bytes());
    }
}
