//! The Homa capture decoder behind `homa dump`: the Homa packets of a pcap/pcapng capture,
//! or one packet given as bytes or hex, decoded into [`Record`]s that print as text lines
//! (like tcpdump) or JSON objects.
//!
//! Homa is found as IP protocol 146, or, with [`DumpOptions::udp_port`] set to N, as the
//! payload of UDP datagrams from or to port N. The Homa length always comes from the IP (or UDP) length
//! field, never from the frame length, because Ethernet pads short frames. A frame cut by
//! the capture's snap length (`tcpdump -s 128`) still shows its Homa header, with a
//! `captured=N/M` mark (N of the packet's M Homa bytes were kept), as long as the header
//! itself was kept. A Homa packet that cannot be decoded gives an error line and the dump
//! goes on; other packets are skipped and counted.
//!
//! A UDP datagram may hold several Homa packets back to back: the runtime sends a run of
//! same-size packets to one destination as one UDP GSO send, which a capture on the
//! sending host (always on loopback) shows before the kernel cuts it into datagrams. Each
//! packet of such a datagram gets its own line, marked `gso=i/n` after `iplen` (the
//! datagram's), and in JSON `gso_index`/`gso_count`. The packets are cut at the first
//! packet's length (see [`layout`] for how it is found); a piece that does not decode
//! gives an error line covering the rest of the datagram, which ends it. A datagram cut
//! by the snap length shows the packets whose headers it kept, the cut one marked
//! `captured=N/M`; the others are only counted (`gso=i/n` says how many there were): a
//! snap length that keeps every header of a lone packet keeps only the first of a
//! coalesced datagram. Where the cut hides how long the first DATA packet is, its line
//! says `gso=1/?` and `bytes=A..?/M`, and the rest of the datagram is not shown.
//!
//! A Homa packet that IP fragmented on the way (a UDP datagram longer than a hop's MTU,
//! which an IPv4 router fragments, or an IPv6 sender once told the path's MTU; raw Homa
//! packets alike) is put back together from its fragments and shown as one line, at its
//! last fragment, however they were ordered; the summary counts them. A fragment the
//! snap length cut cannot be joined and gives an `ip_fragment` error line; fragments of
//! a packet whose rest the capture never saw are counted and not shown.
//!
//! # Reading a capture
//!
//! [`Records`] is an iterator over the records of a capture, one per Homa packet, with
//! the counts of what was skipped ([`Stats`]) at the end:
//!
//! ```
//! use homa_dump::{DumpOptions, Records};
//!
//! // A capture of the Linux module: a 100-byte RPC (see tests/data/captures/README.md).
//! let file = std::fs::File::open("tests/data/captures/short.pcap").unwrap();
//! let mut records = Records::new(file, DumpOptions::default()).unwrap();
//! let first = records.next().unwrap().unwrap();
//! assert_eq!(first.to_json()["type"], "DATA");
//! let rest: Vec<_> = records.by_ref().collect::<Result<_, _>>().unwrap();
//! assert_eq!(rest.len(), 4);
//! assert_eq!(records.stats().homa, 5);
//! ```
//!
//! # One packet
//!
//! ```
//! // A NEED_ACK as the Linux module sends it (captures README, short.pcap #4).
//! let bytes = homa_dump::parse_hex(
//!     "0000  0f a0 9c 40 00 00 00 00 00 00 00 17 50 06 00 00\n\
//!      0010  30 e4 b9 7d 00 00 00 00 00 00 03 e9",
//! )
//! .unwrap();
//! let record = homa_dump::decode_packet(&bytes, homa_wire::HOMA_MAX_MESSAGE_LENGTH);
//! let json = record.to_json();
//! assert_eq!(json["type"], "NEED_ACK");
//! assert_eq!(json["sender_id"], 1001);
//! assert_eq!(record.to_text(), "4000 > 40000: NEED_ACK id=1001");
//! ```
//!
//! `capture` reads the frames of pcap and pcapng files; `net` finds the Homa bytes in a
//! frame (link layer, IP, UDP); `decode` decodes one packet; `gso` cuts a coalesced UDP
//! datagram into its packets; `decoder` turns frames into records and counts; `format`
//! prints a record; `hex` reads hex input.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod capture;
mod decode;
mod decoder;
mod defrag;
mod format;
mod gso;
mod hex;
mod net;
mod record;
#[cfg(test)]
mod test_packets;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use capture::{CaptureError, CaptureReader, Frame, Timestamp};
pub use decode::{decode, decode_captured, DecodeError, Decoded, DecodedBody};
pub use decoder::{Decoder, DumpOptions, Stats};
pub use gso::{layout, Gso, Layout};
pub use hex::{parse_hex, HexError};
pub use net::{locate, FrameProblem, HomaFrame, IpInfo, Skip};
pub use record::Record;

/// Why a capture file could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The capture file cannot be opened.
    #[error("{}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The capture file cannot be read as a capture.
    #[error("{}: {source}", path.display())]
    Capture {
        /// The file.
        path: PathBuf,
        /// Why.
        source: CaptureError,
    },
}

/// The records of a capture, in order: an iterator of one [`Record`] per Homa packet
/// (several for a coalesced UDP datagram), which ends at the end of the capture or after
/// the first error reading it (the records before it are good).
pub struct Records<R: Read> {
    capture: CaptureReader<R>,
    decoder: Decoder,
    pending: VecDeque<Record>,
    done: bool,
}

impl<R: Read> std::fmt::Debug for Records<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("pending", &self.pending.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<R: Read> Records<R> {
    /// Reads the capture's header from `reader` (pcap or pcapng, told by its magic number).
    pub fn new(reader: R, opts: DumpOptions) -> Result<Self, CaptureError> {
        Ok(Records {
            capture: CaptureReader::new(reader)?,
            decoder: Decoder::new(opts),
            pending: VecDeque::new(),
            done: false,
        })
    }

    /// What has been counted so far: frames read, Homa packets, what was skipped.
    pub fn stats(&self) -> &Stats {
        self.decoder.stats()
    }
}

impl<R: Read> Iterator for Records<R> {
    type Item = Result<Record, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Some(Ok(r));
            }
            if self.done {
                return None;
            }
            match self.capture.next_frame() {
                None => self.done = true,
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Some(Ok(frame)) => self.pending.extend(self.decoder.frame(&frame)),
            }
        }
    }
}

/// Decode every Homa packet of a capture read from `reader`.
pub fn decode_capture<R: Read>(
    reader: R,
    opts: &DumpOptions,
) -> Result<(Vec<Record>, Stats), CaptureError> {
    let mut records = Records::new(reader, *opts)?;
    let all = records.by_ref().collect::<Result<Vec<_>, _>>()?;
    Ok((all, records.stats().clone()))
}

/// Decode every Homa packet of the capture file at `path`.
pub fn decode_file(path: &Path, opts: &DumpOptions) -> Result<(Vec<Record>, Stats), DumpError> {
    let file = File::open(path).map_err(|source| DumpError::Open {
        path: path.to_owned(),
        source,
    })?;
    // No BufReader: pcap-file reads through its own large buffer.
    decode_capture(file, opts).map_err(|source| DumpError::Capture {
        path: path.to_owned(),
        source,
    })
}

/// Decode one packet given as bytes (Homa header onward), as `--hex` does: the record has
/// no number, time or IP header.
pub fn decode_packet(bytes: &[u8], max_message_length: u32) -> Record {
    Record {
        no: None,
        ts: None,
        ts_rel: None,
        ip: None,
        gso: None,
        bytes: bytes.to_vec(),
        len: bytes.len(),
        outcome: decode(bytes, max_message_length).map_err(Into::into),
    }
}
