//! A tiny script driver for the engine: one [`Endpoint`] under test, packets in at a
//! virtual time, every packet out decoded with `homa_wire::Repr`, so a test reads as
//! "packet in at t -> exactly these packets out".
#![allow(dead_code)] // Not every test binary uses every helper.

use homa_core::{Config, Endpoint, Event, Time, Transmit};
use homa_wire::{
    AckEntry, Acks, Body, Common, Cutoffs, Data, Grant, PacketType, Repr, Resend, RESEND_ALL,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Guard against a driver loop that never makes progress.
const MAX_STEPS: usize = 1_000_000;

/// `10.0.0.n`.
pub fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
}

/// `10.0.0.n:port`.
pub fn addr(n: u8, port: u16) -> SocketAddr {
    SocketAddr::new(ip(n), port)
}

/// Virtual time from milliseconds (= ticks with the default `tick_nanos`).
pub fn ms(n: u64) -> Time {
    Time::from_millis(n)
}

/// Virtual time from microseconds.
pub fn us(n: u64) -> Time {
    Time::from_micros(n)
}

/// A message of `len` bytes whose content depends on `seed`, so that misplaced or
/// mixed-up bytes show.
pub fn message(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(31)
                .wrapping_add(seed as u32 * 7 + (i >> 8) as u32) as u8
        })
        .collect()
}

/// One packet the endpoint sent, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    /// When it left (the `now` given to `poll_transmit`).
    pub at: Time,
    pub dest: SocketAddr,
    pub priority: u8,
    pub repr: Repr,
    pub payload: Vec<u8>,
    /// The exact bytes, for checks of fields `Repr` normalises (seg.offset, sequence).
    pub bytes: Vec<u8>,
}

impl Out {
    pub fn ty(&self) -> PacketType {
        self.repr.packet_type()
    }
    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }
    pub fn id(&self) -> u64 {
        self.repr.common.sender_id
    }
    pub fn data(&self) -> Data {
        match self.repr.body {
            Body::Data(d) => d,
            _ => panic!("expected DATA, got {:?}", self.repr),
        }
    }
    pub fn grant(&self) -> Grant {
        match self.repr.body {
            Body::Grant(g) => g,
            _ => panic!("expected GRANT, got {:?}", self.repr),
        }
    }
    pub fn resend(&self) -> Resend {
        match self.repr.body {
            Body::Resend(r) => r,
            _ => panic!("expected RESEND, got {:?}", self.repr),
        }
    }
    pub fn cutoffs(&self) -> Cutoffs {
        match self.repr.body {
            Body::Cutoffs(c) => c,
            _ => panic!("expected CUTOFFS, got {:?}", self.repr),
        }
    }
    pub fn acks(&self) -> Vec<AckEntry> {
        match self.repr.body {
            Body::Ack(a) => a.as_slice().to_vec(),
            _ => panic!("expected ACK, got {:?}", self.repr),
        }
    }
    /// `seg.offset` as it is on the wire (bytes 52..56 of a DATA header).
    pub fn raw_seg_offset(&self) -> u32 {
        u32::from_be_bytes(self.bytes[52..56].try_into().unwrap())
    }
    /// `sequence` as it is on the wire (bytes 4..8).
    pub fn raw_sequence(&self) -> u32 {
        u32::from_be_bytes(self.bytes[4..8].try_into().unwrap())
    }
    /// A one-line summary for assertion messages.
    pub fn brief(&self) -> String {
        let what = match self.repr.body {
            Body::Data(d) => format!(
                "DATA off={} len={} msg={} inc={} rtx={} ack={:?} cv={}",
                d.offset,
                self.payload.len(),
                d.message_length,
                d.incoming,
                d.retransmit,
                d.ack.map(|a| (a.client_id, a.server_port)),
                d.cutoff_version
            ),
            Body::Grant(g) => format!("GRANT off={} prio={}", g.offset, g.priority),
            Body::Resend(r) => format!(
                "RESEND off={} len={:#x} prio={}",
                r.offset, r.length, r.priority
            ),
            Body::Ack(a) => format!("ACK {:?}", a.as_slice()),
            ref b => format!("{:?}", b.packet_type()),
        };
        format!(
            "t={}us {}->{} id={} p{} {}",
            self.at.as_nanos() / 1_000,
            self.repr.common.sport,
            self.dest,
            self.repr.common.sender_id,
            self.priority,
            what
        )
    }
}

/// Summaries of a list of packets, for assertion messages.
pub fn briefs(outs: &[Out]) -> Vec<String> {
    outs.iter().map(Out::brief).collect()
}

/// The endpoint under test and its virtual clock.
pub struct Script {
    pub ep: Endpoint,
    pub now: Time,
    buf: Vec<u8>,
}

impl Script {
    /// The endpoint of `config`, its randomness fixed (a zero seed or client id base
    /// would be drawn from the operating system, and every script must run alike).
    pub fn new(mut config: Config) -> Script {
        if config.seed == 0 {
            config.seed = 1;
        }
        if config.client_id_base == 0 {
            config.client_id_base = 2;
        }
        let ep = Endpoint::new(config).expect("valid config");
        let buf = vec![0u8; ep.max_packet_len()];
        Script {
            ep,
            now: Time::ZERO,
            buf,
        }
    }

    pub fn config(&self) -> &Config {
        self.ep.config()
    }

    /// Message bytes in a full DATA packet.
    pub fn seg(&self) -> u32 {
        self.ep.config().max_segment()
    }

    fn advance(&mut self, now: Time) {
        assert!(
            now >= self.now,
            "virtual time runs backwards: {now:?} < {:?}",
            self.now
        );
        self.now = now;
    }

    /// Deliver one packet, built from `repr` (+ DATA payload), from `from` at `now`.
    pub fn feed(&mut self, now: Time, from: IpAddr, repr: Repr, payload: &[u8]) {
        let bytes = repr.to_vec(payload).expect("test packet encodes");
        self.feed_bytes(now, from, &bytes);
    }

    /// Deliver raw bytes.
    pub fn feed_bytes(&mut self, now: Time, from: IpAddr, bytes: &[u8]) {
        self.advance(now);
        self.ep.handle_datagram(now, from, bytes);
    }

    /// Everything `poll_transmit` gives at `now` (the pacer may hold some back).
    pub fn expect_out(&mut self, now: Time) -> Vec<Out> {
        self.advance(now);
        let mut outs = Vec::new();
        for _ in 0..MAX_STEPS {
            let Some(t) = self.ep.poll_transmit(now, &mut self.buf) else {
                return outs;
            };
            outs.push(self.decode(now, &t));
        }
        panic!("poll_transmit never ran dry");
    }

    /// Everything `poll_transmit_urgent` gives at `now` into a `buf_len`-byte buffer.
    pub fn expect_urgent(&mut self, now: Time, buf_len: usize) -> Vec<Out> {
        self.advance(now);
        let mut outs = Vec::new();
        for _ in 0..MAX_STEPS {
            let Some(t) = self.ep.poll_transmit_urgent(now, &mut self.buf[..buf_len]) else {
                return outs;
            };
            outs.push(self.decode(now, &t));
        }
        panic!("poll_transmit_urgent never ran dry");
    }

    /// The packet a poll wrote into `self.buf`, checked against its `Transmit`.
    fn decode(&self, now: Time, t: &Transmit) -> Out {
        let bytes = self.buf[..t.len].to_vec();
        let (repr, payload) = Repr::parse(&bytes, self.ep.config().max_message_length)
            .unwrap_or_else(|e| panic!("engine sent a packet that does not parse: {e:?}"));
        assert_eq!(t.packet_type, repr.packet_type(), "Transmit::packet_type");
        assert_eq!(t.src_port, repr.common.sport, "Transmit::src_port");
        assert_eq!(t.dest.port(), repr.common.dport, "Transmit::dest port");
        assert!(t.priority <= 7, "priority {}", t.priority);
        let payload = payload.to_vec();
        Out {
            at: now,
            dest: t.dest,
            priority: t.priority,
            repr,
            payload,
            bytes,
        }
    }

    /// Assert that nothing goes out at `now`.
    pub fn expect_nothing(&mut self, now: Time) {
        let outs = self.expect_out(now);
        assert!(
            outs.is_empty(),
            "expected no packets, got {:#?}",
            briefs(&outs)
        );
    }

    /// Advance virtual time to `to`: at every deadline `poll_timeout` names (timer ticks
    /// and pacer wake-ups) call `handle_timeout` and drain `poll_transmit`. Returns every
    /// packet sent on the way, each stamped with its time.
    pub fn tick(&mut self, to: Time) -> Vec<Out> {
        let mut outs = Vec::new();
        for _ in 0..MAX_STEPS {
            match self.ep.poll_timeout() {
                Some(t) if t <= to => {
                    let t = t.max(self.now);
                    self.advance(t);
                    self.ep.handle_timeout(t);
                    outs.extend(self.expect_out(t));
                }
                _ => {
                    self.advance(to.max(self.now));
                    return outs;
                }
            }
        }
        panic!("tick({to:?}) made no progress");
    }

    /// The pending events.
    pub fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.ep.poll_event()).collect()
    }
}

// ---------------------------------------------------------------- packet builders

pub fn common(sport: u16, dport: u16, sender_id: u64) -> Common {
    Common {
        sport,
        dport,
        sender_id,
    }
}

/// DATA as a peer that already knows our cutoffs (version 1, the default) sends it, so
/// that it draws no CUTOFFS; no piggybacked ack, not a retransmission.
pub fn data(c: Common, message_length: u32, offset: u32, incoming: u32) -> Repr {
    Repr {
        common: c,
        body: Body::Data(Data {
            message_length,
            incoming,
            ack: None,
            cutoff_version: 1,
            retransmit: false,
            offset,
        }),
    }
}

/// `data` with every field given.
pub fn data_with(c: Common, d: Data) -> Repr {
    Repr {
        common: c,
        body: Body::Data(d),
    }
}

pub fn grant(c: Common, offset: u32, priority: u8) -> Repr {
    Repr {
        common: c,
        body: Body::Grant(Grant { offset, priority }),
    }
}

pub fn resend(c: Common, offset: u32, length: u32, priority: u8) -> Repr {
    Repr {
        common: c,
        body: Body::Resend(Resend {
            offset,
            length,
            priority,
        }),
    }
}

pub fn resend_all(c: Common) -> Repr {
    resend(c, 0, RESEND_ALL, 7)
}

pub fn cutoffs(c: Common, unsched_cutoffs: [u32; 8], cutoff_version: u16) -> Repr {
    Repr {
        common: c,
        body: Body::Cutoffs(Cutoffs {
            unsched_cutoffs,
            cutoff_version,
        }),
    }
}

pub fn ack(c: Common, acks: &[AckEntry]) -> Repr {
    Repr {
        common: c,
        body: Body::Ack(Acks::new(acks).expect("at most 5 acks")),
    }
}

/// A bodiless control packet (RPC_UNKNOWN, BUSY, FREEZE, NEED_ACK).
pub fn ctrl(c: Common, body: Body) -> Repr {
    Repr { common: c, body }
}

/// Feed the segments of `msg` starting at the given offsets (each `seg` long, or up to
/// the end), as DATA with `incoming`.
pub fn feed_segments(
    s: &mut Script,
    now: Time,
    from: IpAddr,
    c: Common,
    msg: &[u8],
    incoming: u32,
    offsets: impl IntoIterator<Item = u32>,
) {
    let seg = s.seg() as usize;
    for off in offsets {
        let start = off as usize;
        let end = (start + seg).min(msg.len());
        s.feed(
            now,
            from,
            data(c, msg.len() as u32, off, incoming),
            &msg[start..end],
        );
    }
}

/// Offsets of the packets covering `[from, to)` of a message of `len` bytes.
pub fn offsets(seg: u32, from: u32, to: u32) -> Vec<u32> {
    (from..to).step_by(seg as usize).collect()
}
