//! Homa packets and the IP and UDP around them, built byte by byte for the dissector's
//! tests (no crate of ours writes them, so a mistake in one cannot hide in both).

/// A Homa header: the common part, then `body`.
pub fn homa(ty: u8, sport: u16, dport: u16, sequence: u32, sender_id: u64, body: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&sequence.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, ty, if ty == 0x10 { 0xe0 } else { 0x50 }, 0x06]);
    p.extend_from_slice(&[0, 0, 0, 0, 0xb9, 0x7d]);
    p.extend_from_slice(&sender_id.to_be_bytes());
    p.extend_from_slice(body);
    p
}

/// A DATA packet: `len` payload bytes at `offset` of a `message_length`-byte message.
pub fn data(sport: u16, dport: u16, offset: u32, len: usize, message_length: u32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&message_length.to_be_bytes());
    body.extend_from_slice(&message_length.min(40_000).to_be_bytes()); // incoming
    body.extend_from_slice(&998u64.to_be_bytes()); // ack client_id
    body.extend_from_slice(&sport.to_be_bytes()); // ack server_port
    body.extend_from_slice(&3u16.to_be_bytes()); // cutoff_version
    body.extend_from_slice(&[0, 0, 0, 0]); // retransmit, pad
    body.extend_from_slice(&u32::MAX.to_be_bytes()); // seg.offset: in sequence
    body.extend((0..len).map(|i| i as u8));
    homa(0x10, sport, dport, offset, 1000, &body)
}

/// `data` with the extension flags byte (offset 49) set.
pub fn flagged(mut data: Vec<u8>, bits: u8) -> Vec<u8> {
    data[49] = bits;
    data
}

/// A CUTOFFS packet with `slot0` in `unsched_cutoffs[0]`, where the extensions mark.
pub fn cutoffs(sport: u16, dport: u16, slot0: u32) -> Vec<u8> {
    let slots = [slot0, 0, 0, 0, 1_000_000, 15_000, 2_800, 200];
    let mut body: Vec<u8> = slots.iter().flat_map(|v| v.to_be_bytes()).collect();
    body.extend_from_slice(&3u16.to_be_bytes());
    homa(0x15, sport, dport, 0, 1001, &body)
}

pub fn grant(sport: u16, dport: u16, offset: u32) -> Vec<u8> {
    let mut body = offset.to_be_bytes().to_vec();
    body.push(2);
    homa(0x11, sport, dport, 0, 1001, &body)
}

pub fn ack(sport: u16, dport: u16, num_acks: u16, acks: &[(u64, u16)]) -> Vec<u8> {
    let mut body = num_acks.to_be_bytes().to_vec();
    for i in 0..5 {
        let (id, port) = acks.get(i).copied().unwrap_or_default();
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(&port.to_be_bytes());
    }
    homa(0x18, sport, dport, 0, 1000, &body)
}

/// An IPv4 packet (TOS 0xe0) from 10.0.0.1 to 10.0.0.2 carrying `payload` as `proto`.
pub fn ipv4(proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0xe0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    let sum = h
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// A UDP datagram (checksum 0: none) carrying `payload`.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(&sport.to_be_bytes());
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    d
}
