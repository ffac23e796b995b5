//! Frames out of pcap and pcapng files, with their link type and an exact timestamp.
//!
//! pcap-file does the block and record parsing; this module adds what `homa dump` needs on
//! top of it: format detection by magic number, one frame type for both formats, and
//! timestamps taken from the raw fields (see [`CaptureReader`] for why).

use std::fmt;
use std::io::{self, Cursor, Read};

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{Endianness, PcapError, TsResolution};

/// A capture timestamp: nanoseconds since the Unix epoch (or, for a difference, since an
/// earlier timestamp), plus how many decimal places the file's resolution justifies, so
/// that a microsecond pcap prints 6 digits and a nanosecond one 9.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Nanoseconds.
    pub nanos: i128,
    /// Meaningful decimal places of the seconds (0..=9).
    pub digits: u8,
}

impl Timestamp {
    /// The time elapsed since `earlier` (negative if the capture is out of order).
    pub fn since(self, earlier: Timestamp) -> Timestamp {
        Timestamp {
            nanos: self.nanos - earlier.nanos,
            digits: self.digits.max(earlier.digits),
        }
    }

    /// Seconds as the nearest `f64` to the printed decimal.
    ///
    /// Going through the decimal text (instead of `nanos as f64 / 1e9`, which rounds twice)
    /// means JSON shows exactly the digits the capture holds, e.g. `1700000000.123456`.
    /// An f64 cannot hold an epoch time to the nanosecond, so absolute nanosecond stamps
    /// keep about 0.1 us; relative times are small and stay exact.
    pub fn as_secs_f64(self) -> f64 {
        self.to_string().parse().unwrap_or(self.nanos as f64 / 1e9)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.unsigned_abs();
        let secs = abs / 1_000_000_000;
        let frac = abs % 1_000_000_000;
        let digits = self.digits.min(9);
        if digits == 0 {
            return write!(f, "{sign}{secs}");
        }
        let frac = frac / 10u128.pow(9 - u32::from(digits));
        write!(
            f,
            "{sign}{secs}.{frac:0width$}",
            width = usize::from(digits)
        )
    }
}

/// One captured frame, starting at its link-layer header.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// When it was captured; `None` for pcapng simple packet blocks, which carry no time.
    pub ts: Option<Timestamp>,
    /// Its LINKTYPE_* number.
    pub link_type: u32,
    /// The captured bytes (possibly fewer than were on the wire).
    pub data: &'a [u8],
    /// The frame's length on the wire.
    pub orig_len: u32,
}

/// Why a capture file cannot be read (as a whole, not one packet of it).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The underlying reader failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    /// Fewer bytes than any capture file header.
    #[error("too short to be a pcap or pcapng file ({0} bytes)")]
    TooShort(usize),
    /// The magic number is neither pcap's nor pcapng's.
    #[error("not a pcap or pcapng file (it starts with {0:02x?})")]
    NotACapture([u8; 4]),
    /// The file ends in the middle of a record or block.
    #[error("the file is truncated: its last record is incomplete")]
    Truncated,
    /// A header, record or block is malformed.
    #[error("malformed {format} file: {source}")]
    Malformed {
        /// "pcap" or "pcapng".
        format: &'static str,
        /// What pcap-file found wrong.
        source: PcapError,
    },
    /// A pcapng packet names an interface that no interface description block declared.
    #[error("malformed pcapng file: a packet names interface {0}, which was never described")]
    UnknownInterface(u32),
}

const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xa1, 0xb2, 0xc3, 0xd4], // microseconds, big-endian
    [0xd4, 0xc3, 0xb2, 0xa1], // microseconds, little-endian
    [0xa1, 0xb2, 0x3c, 0x4d], // nanoseconds, big-endian
    [0x4d, 0x3c, 0xb2, 0xa1], // nanoseconds, little-endian
];
/// The section header block type, the same read either way round.
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

type Replayed<R> = io::Chain<Cursor<[u8; 4]>, R>;

/// How a pcapng interface stamps its packets.
#[derive(Debug, Clone, Copy)]
struct Interface {
    link_type: u32,
    /// `if_tsresol`: bit 7 clear = 10^-n seconds per tick, set = 2^-n. Default 6 (us).
    tsresol: u8,
    /// `if_tsoffset`: seconds to add to every timestamp.
    tsoffset: i64,
}

impl Interface {
    fn timestamp(&self, ticks: u128) -> Timestamp {
        let n = u32::from(self.tsresol & 0x7f);
        let (nanos, digits) = if self.tsresol & 0x80 == 0 {
            let nanos = if n <= 9 {
                ticks * 10u128.pow(9 - n)
            } else {
                10u128.checked_pow(n - 9).map_or(0, |d| ticks / d)
            };
            (nanos, n.min(9) as u8)
        } else {
            // ticks < 2^64, so ticks * 1e9 < 2^94 cannot overflow.
            (ticks.saturating_mul(1_000_000_000) >> n.min(127), 9)
        };
        Timestamp {
            nanos: nanos as i128 + i128::from(self.tsoffset) * 1_000_000_000,
            digits,
        }
    }
}

enum Inner<R: Read> {
    Pcap {
        reader: PcapReader<Replayed<R>>,
        link_type: u32,
        nanosecond: bool,
    },
    PcapNg {
        reader: PcapNgReader<Replayed<R>>,
        interfaces: Vec<Interface>,
        endianness: Endianness,
    },
}

/// Reads the frames of a pcap or pcapng stream, whichever it is.
///
/// Timestamps come from the raw fields rather than from pcap-file's `Duration`s, because
/// pcap-file 2.0 treats every pcapng timestamp as nanoseconds whatever the interface's
/// `if_tsresol` says (the default is microseconds), and it rejects classic records whose
/// original length exceeds the snap length, which is exactly what a capture with a small
/// snaplen contains.
pub struct CaptureReader<R: Read> {
    inner: Inner<R>,
    /// The current frame, copied out of pcap-file's buffer so that skipping over non-packet
    /// blocks does not keep the reader borrowed.
    buf: Vec<u8>,
}

impl<R: Read> std::fmt::Debug for CaptureReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReader").finish_non_exhaustive()
    }
}

impl<R: Read> CaptureReader<R> {
    /// Detect the format from the magic number and read the file header.
    pub fn new(mut reader: R) -> Result<Self, CaptureError> {
        let mut magic = [0u8; 4];
        let mut got = 0;
        while got < magic.len() {
            match reader.read(&mut magic[got..]) {
                Ok(0) => return Err(CaptureError::TooShort(got)),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(CaptureError::Io(e)),
            }
        }
        let replayed = Cursor::new(magic).chain(reader);
        let inner = if PCAP_MAGICS.contains(&magic) {
            let reader = PcapReader::new(replayed).map_err(|e| classify("pcap", e))?;
            let header = reader.header();
            Inner::Pcap {
                link_type: header.datalink.into(),
                nanosecond: header.ts_resolution == TsResolution::NanoSecond,
                reader,
            }
        } else if magic == PCAPNG_MAGIC {
            let reader = PcapNgReader::new(replayed).map_err(|e| classify("pcapng", e))?;
            Inner::PcapNg {
                endianness: reader.section().endianness,
                reader,
                interfaces: Vec::new(),
            }
        } else {
            return Err(CaptureError::NotACapture(magic));
        };
        Ok(CaptureReader {
            inner,
            buf: Vec::new(),
        })
    }

    /// The next frame, `None` at the end of the file.
    pub fn next_frame(&mut self) -> Option<Result<Frame<'_>, CaptureError>> {
        let CaptureReader { inner, buf } = self;
        let meta = match inner {
            Inner::Pcap {
                reader,
                link_type,
                nanosecond,
            } => {
                let raw = match reader.next_raw_packet()? {
                    Ok(raw) => raw,
                    Err(e) => return Some(Err(classify("pcap", e))),
                };
                let frac = i128::from(raw.ts_frac);
                let (nanos, digits) = if *nanosecond {
                    (frac, 9)
                } else {
                    (frac * 1000, 6)
                };
                buf.clear();
                buf.extend_from_slice(&raw.data);
                let ts = Timestamp {
                    nanos: i128::from(raw.ts_sec) * 1_000_000_000 + nanos,
                    digits,
                };
                (Some(ts), *link_type, raw.orig_len)
            }
            Inner::PcapNg {
                reader,
                interfaces,
                endianness,
            } => loop {
                let block = match reader.next_block()? {
                    Ok(block) => block,
                    Err(e) => return Some(Err(classify("pcapng", e))),
                };
                match block {
                    Block::SectionHeader(shb) => {
                        // Interface ids are per section.
                        interfaces.clear();
                        *endianness = shb.endianness;
                    }
                    Block::InterfaceDescription(idb) => {
                        let mut iface = Interface {
                            link_type: idb.linktype.into(),
                            tsresol: 6,
                            tsoffset: 0,
                        };
                        for opt in &idb.options {
                            match opt {
                                InterfaceDescriptionOption::IfTsResol(r) => iface.tsresol = *r,
                                // The field is signed in the pcapng spec.
                                InterfaceDescriptionOption::IfTsOffset(o) => {
                                    iface.tsoffset = *o as i64
                                }
                                _ => {}
                            }
                        }
                        interfaces.push(iface);
                    }
                    Block::EnhancedPacket(epb) => {
                        let Some(iface) = interfaces.get(epb.interface_id as usize) else {
                            return Some(Err(CaptureError::UnknownInterface(epb.interface_id)));
                        };
                        // pcap-file stored the raw tick count as nanoseconds.
                        let ts = iface.timestamp(epb.timestamp.as_nanos());
                        buf.clear();
                        buf.extend_from_slice(&epb.data);
                        break (Some(ts), iface.link_type, epb.original_len);
                    }
                    Block::Packet(pb) => {
                        let id = u32::from(pb.interface_id);
                        let Some(iface) = interfaces.get(id as usize) else {
                            return Some(Err(CaptureError::UnknownInterface(id)));
                        };
                        // The obsolete packet block's timestamp is two 32-bit words, high
                        // first; pcap-file reads it as one u64, which swaps the halves in
                        // little-endian sections.
                        let ticks = match endianness {
                            Endianness::Big => pb.timestamp,
                            Endianness::Little => pb.timestamp.rotate_left(32),
                        };
                        let ts = iface.timestamp(u128::from(ticks));
                        buf.clear();
                        buf.extend_from_slice(&pb.data);
                        break (Some(ts), iface.link_type, pb.original_len);
                    }
                    Block::SimplePacket(spb) => {
                        let Some(iface) = interfaces.first() else {
                            return Some(Err(CaptureError::UnknownInterface(0)));
                        };
                        // The block's data includes its padding; the original length says
                        // where the frame ends (if it was not cut by the snap length).
                        let len = spb.data.len().min(spb.original_len as usize);
                        buf.clear();
                        buf.extend_from_slice(&spb.data[..len]);
                        break (None, iface.link_type, spb.original_len);
                    }
                    _ => {}
                }
            },
        };
        let (ts, link_type, orig_len) = meta;
        Some(Ok(Frame {
            ts,
            link_type,
            data: buf,
            orig_len,
        }))
    }
}

/// pcap-file reports an incomplete last record as an unexpected EOF.
fn classify(format: &'static str, e: PcapError) -> CaptureError {
    match e {
        PcapError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            CaptureError::Truncated
        }
        PcapError::IncompleteBuffer => CaptureError::Truncated,
        PcapError::IoError(io) => CaptureError::Io(io),
        source => CaptureError::Malformed { format, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_prints_the_resolution_digits() {
        let us = Timestamp {
            nanos: 1_700_000_000_123_456_000,
            digits: 6,
        };
        assert_eq!(us.to_string(), "1700000000.123456");
        assert_eq!(us.as_secs_f64().to_string(), "1700000000.123456");
        let rel = Timestamp {
            nanos: 3_342_000,
            digits: 6,
        };
        assert_eq!(rel.to_string(), "0.003342");
        let neg = Timestamp {
            nanos: -1_500,
            digits: 9,
        };
        assert_eq!(neg.to_string(), "-0.000001500");
        assert_eq!(neg.as_secs_f64(), -0.0000015);
    }

    #[test]
    fn pcapng_resolutions() {
        let iface = |tsresol, tsoffset| Interface {
            link_type: 1,
            tsresol,
            tsoffset,
        };
        assert_eq!(
            iface(6, 0).timestamp(1_500_000),
            Timestamp {
                nanos: 1_500_000_000,
                digits: 6
            }
        );
        assert_eq!(
            iface(9, 10).timestamp(7),
            Timestamp {
                nanos: 10_000_000_007,
                digits: 9
            }
        );
        // Picoseconds lose the last three digits.
        assert_eq!(iface(12, 0).timestamp(1_234_567).nanos, 1_234);
        // 2^-10 s per tick: 1024 ticks are one second.
        assert_eq!(iface(0x80 | 10, 0).timestamp(1024).nanos, 1_000_000_000);
    }

    #[test]
    fn rejects_non_captures() {
        assert!(matches!(
            CaptureReader::new(&b"GET / HTTP/1.1\r\n"[..]),
            Err(CaptureError::NotACapture(_))
        ));
        assert!(matches!(
            CaptureReader::new(&b"\xd4\xc3"[..]),
            Err(CaptureError::TooShort(2))
        ));
        // A pcap magic number followed by too little header.
        assert!(matches!(
            CaptureReader::new(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0][..]),
            Err(CaptureError::Truncated)
        ));
    }
}
