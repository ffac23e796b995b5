//! [`Record`]: one Homa packet of a capture, decoded or not, with where and when it was
//! seen. Its two printed forms are in the `format` module.

use crate::capture::Timestamp;
use crate::decode::{DecodeError, Decoded};
use crate::gso::Gso;
use crate::net::IpInfo;

/// One output line: a Homa packet, decoded or not, with where and when it was seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// 1-based index among the Homa packets of the capture (`None` for `--hex`).
    pub no: Option<u64>,
    /// Capture timestamp.
    pub ts: Option<Timestamp>,
    /// Time since the first frame of the capture.
    pub ts_rel: Option<Timestamp>,
    /// The IP header (`None` for `--hex`): the whole datagram's, for a packet of a
    /// coalesced one.
    pub ip: Option<IpInfo>,
    /// Where the packet sat in a UDP datagram that held several (`None`: it was alone).
    pub gso: Option<Gso>,
    /// The Homa bytes as captured.
    pub bytes: Vec<u8>,
    /// Length of the Homa packet on the wire, from the IP (or UDP) length field: more than
    /// `bytes` holds when the capture's snap length cut the packet short. Unknown when
    /// [`Record::length_known`] says so: then it is `bytes.len()`.
    pub len: usize,
    /// The decoded packet, or why it could not be decoded.
    pub outcome: Result<Decoded, DecodeError>,
}

impl Record {
    /// Whether the packet's length is known: not for the first packet of a coalesced
    /// datagram that the capture cut before the packet's end could be told (`gso=1/?`).
    pub fn length_known(&self) -> bool {
        !matches!(self.gso, Some(Gso { count: None, .. }))
    }

    /// The Homa bytes captured, when the capture cut the packet short (fewer than `len`).
    pub fn captured(&self) -> Option<usize> {
        (self.bytes.len() < self.len).then_some(self.bytes.len())
    }

    /// Source and destination ports, from the decoded packet or, for an error line, from
    /// whatever part of the header was captured.
    pub fn ports(&self) -> (Option<u16>, Option<u16>) {
        if let Ok(d) = &self.outcome {
            return (Some(d.sport), Some(d.dport));
        }
        let port = |at: usize| {
            self.bytes
                .get(at..at + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
        };
        (port(0), port(2))
    }
}
