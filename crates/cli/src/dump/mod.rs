//! `homa dump`: decode the Homa packets of a pcap/pcapng capture, or one packet given in
//! hex, as text lines (like tcpdump) or JSON lines.
//!
//! Homa is found as IP protocol 146, or, with `--udp-port N`, as the payload of UDP
//! datagrams from or to port N. The Homa length always comes from the IP (or UDP) length
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

mod capture;
mod decode;
mod format;
mod gso;
mod hex;
mod net;
#[cfg(test)]
mod test_packets;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use homa_wire::{DATA_HEADER_LEN, HOMA_MAX_MESSAGE_LENGTH};

pub use capture::{CaptureError, CaptureReader, Frame, Timestamp};
pub use decode::{decode, decode_captured, DecodeError, Decoded, DecodedBody};
pub use gso::{layout, Gso, Layout};
pub use hex::{parse_hex, HexError};
pub use net::{locate, FrameProblem, HomaFrame, IpInfo, Skip};

/// Command-line arguments of `homa dump`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Decode the Homa packets in a pcap or pcapng file, or one packet given in hex",
    after_help = "Exit status: 0 on success, 1 if the file cannot be read (or the --hex \
                  packet does not decode), 2 for bad arguments or bad hex."
)]
pub struct DumpArgs {
    /// The pcap or pcapng file to read ("-": standard input). A short snap length is fine (`tcpdump -s 128`
    /// keeps every Homa header over IPv4, `-s 160` over IPv6, but only the first of a
    /// coalesced GSO datagram's): a packet cut after its header is decoded, its line
    /// ending in `captured=N/M` (N of its M Homa bytes kept).
    #[arg(
        value_name = "FILE",
        required_unless_present = "hex",
        conflicts_with = "hex"
    )]
    pub file: Option<PathBuf>,

    /// Decode one packet given as hex bytes, Homa header onward (spaces, newlines, a 0x
    /// prefix and hexdump offsets are allowed; "-" reads the hex from standard input).
    #[arg(long, value_name = "HEX")]
    pub hex: Option<String>,

    /// Print one JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,

    /// Also decode UDP datagrams from or to this port as Homa (the UDP payload is the
    /// Homa packet, or several back to back when a GSO send was captured before
    /// segmentation: each gets its own line, marked gso=i/n).
    #[arg(long, value_name = "PORT")]
    pub udp_port: Option<u16>,

    /// Largest DATA message_length accepted; longer messages give an error line.
    #[arg(long, value_name = "BYTES", default_value_t = HOMA_MAX_MESSAGE_LENGTH)]
    pub max_message_length: u32,
}

/// What to decode and how strictly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpOptions {
    /// Decode UDP datagrams from or to this port as Homa, too.
    pub udp_port: Option<u16>,
    /// Largest DATA message_length accepted.
    pub max_message_length: u32,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions {
            udp_port: None,
            max_message_length: HOMA_MAX_MESSAGE_LENGTH,
        }
    }
}

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

/// Counts for the summary at the end of a dump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames read.
    pub frames: u64,
    /// Homa packets (decoded or not).
    pub homa: u64,
    /// Homa packets shown as error lines.
    pub errors: u64,
    /// Homa packets decoded from a frame the capture's snap length cut short: header
    /// shown, payload (partly) missing.
    pub cut: u64,
    /// UDP datagrams that held several Homa packets (GSO sends captured before
    /// segmentation).
    pub coalesced: u64,
    /// Packets of coalesced datagrams whose headers the capture's snap length cut:
    /// counted here, not shown (nor in `homa`).
    pub uncaptured: u64,
    /// Frames that are not Homa.
    pub other: u64,
    /// Empty UDP datagrams on the Homa port (the runtime's wake-ups).
    pub empty: u64,
    /// Frames whose headers could not be read far enough to tell.
    pub unreadable: u64,
    /// Frames of link types `homa dump` does not know, by link type.
    pub unsupported_link: BTreeMap<u32, u64>,
}

impl Stats {
    /// A one-line summary, or `None` when every frame was one good Homa packet (then there
    /// is nothing worth saying).
    pub fn summary(&self) -> Option<String> {
        if self.errors == 0
            && self.cut == 0
            && self.coalesced == 0
            && self.other == 0
            && self.empty == 0
            && self.unreadable == 0
            && self.unsupported_link.is_empty()
        {
            return None;
        }
        let mut s = format!(
            "{} frames: {} Homa packets ({} undecodable)",
            self.frames, self.homa, self.errors
        );
        if self.coalesced > 0 {
            s += &format!(
                ", {} frames held several (coalesced GSO sends)",
                self.coalesced
            );
        }
        if self.cut > 0 {
            s += &format!(
                ", {} cut short by the capture's snap length (headers decoded)",
                self.cut
            );
        }
        if self.uncaptured > 0 {
            s += &format!(
                ", {} more packets of coalesced frames not shown (headers past the snap \
                 length)",
                self.uncaptured
            );
        }
        if self.empty > 0 {
            s += &format!(
                ", {} empty datagrams skipped (the runtime's wake-ups)",
                self.empty
            );
        }
        if self.other > 0 {
            s += &format!(", {} other packets skipped", self.other);
        }
        if self.unreadable > 0 {
            s += &format!(", {} unreadable frames skipped", self.unreadable);
        }
        for (link, n) in &self.unsupported_link {
            s += &format!(", {n} frames of unsupported link type {link} skipped");
        }
        Some(s)
    }
}

/// Turns frames into records: numbering, relative time, counting.
#[derive(Debug, Clone)]
pub struct Decoder {
    opts: DumpOptions,
    first_ts: Option<Timestamp>,
    stats: Stats,
}

impl Decoder {
    /// A decoder for one capture.
    pub fn new(opts: DumpOptions) -> Self {
        Decoder {
            opts,
            first_ts: None,
            stats: Stats::default(),
        }
    }

    /// The records for this frame: none if it carries no Homa packet, one per packet
    /// otherwise (several for a coalesced UDP datagram).
    pub fn frame(&mut self, frame: &Frame<'_>) -> Vec<Record> {
        self.stats.frames += 1;
        // Relative times count from the first frame of the file, Homa or not.
        if self.first_ts.is_none() {
            self.first_ts = frame.ts;
        }
        let homa = match locate(frame, self.opts.udp_port) {
            Ok(h) => h,
            Err(skip) => {
                match skip {
                    Skip::Other => self.stats.other += 1,
                    Skip::Empty => self.stats.empty += 1,
                    Skip::Unreadable => self.stats.unreadable += 1,
                    Skip::UnsupportedLink(l) => {
                        *self.stats.unsupported_link.entry(l).or_default() += 1
                    }
                }
                return Vec::new();
            }
        };
        let max = self.opts.max_message_length;
        let layout = match homa.problem {
            None if homa.udp => layout(homa.bytes, homa.len, max),
            _ => Layout::One,
        };
        let segment = match layout {
            Layout::One => {
                let outcome = match homa.problem {
                    Some(p) => Err(p.into()),
                    None => decode_captured(homa.bytes, homa.len, max),
                };
                return vec![self.record(frame, &homa, homa.bytes, homa.len, None, outcome)];
            }
            Layout::FirstEndCut => {
                // The first packet's header, and nothing about its length: its payload
                // and the packets after it are unknown (`gso=1/?`).
                self.stats.coalesced += 1;
                self.stats.cut += 1;
                let header = &homa.bytes[..DATA_HEADER_LEN.min(homa.bytes.len())];
                let outcome = decode_captured(header, header.len(), max);
                let gso = Some(Gso {
                    index: 1,
                    count: None,
                });
                let kept = homa.bytes;
                return vec![self.record(frame, &homa, kept, kept.len(), gso, outcome)];
            }
            Layout::Segments(segment) => segment,
        };

        self.stats.coalesced += 1;
        let mut count = homa.len.div_ceil(segment);
        let mut pieces = Vec::with_capacity(count);
        for at in (0..homa.len).step_by(segment) {
            let (kept, len) = gso::piece(homa.bytes, homa.len, segment, at);
            match decode_captured(kept, len, max) {
                // The snap length cut its header (never the first's: that was read), and
                // the packets after it are not there at all. No error lines for them: a
                // short snap length is no fault, and gso=i/n says how many there were.
                Err(DecodeError::CaptureTruncated { .. }) => {
                    self.stats.uncaptured += (homa.len - at).div_ceil(segment) as u64;
                    break;
                }
                // Past a piece that does not decode the cuts are guesswork: one error
                // line for the rest of the datagram, which ends it.
                Err(DecodeError::Parse(e)) => {
                    let rest = homa.bytes.get(at..).unwrap_or_default();
                    pieces.push((rest, homa.len - at, Err(e.into())));
                    count = pieces.len();
                    break;
                }
                outcome => pieces.push((kept, len, outcome)),
            }
        }
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, (kept, len, outcome))| {
                let gso = Some(Gso {
                    index: i + 1,
                    count: Some(count),
                });
                self.record(frame, &homa, kept, len, gso, outcome)
            })
            .collect()
    }

    fn record(
        &mut self,
        frame: &Frame<'_>,
        homa: &HomaFrame<'_>,
        kept: &[u8],
        len: usize,
        gso: Option<Gso>,
        outcome: Result<Decoded, DecodeError>,
    ) -> Record {
        self.stats.homa += 1;
        if outcome.is_err() {
            self.stats.errors += 1;
        } else if kept.len() < len {
            self.stats.cut += 1;
        }
        Record {
            no: Some(self.stats.homa),
            ts: frame.ts,
            ts_rel: frame.ts.zip(self.first_ts).map(|(t, first)| t.since(first)),
            ip: Some(homa.ip),
            gso,
            bytes: kept.to_vec(),
            len,
            outcome,
        }
    }

    /// What has been counted so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// Why a dump could not be done.
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
    /// `--hex -` could not read standard input.
    #[error("reading the hex from standard input failed: {0}")]
    Stdin(io::Error),
    /// The `--hex` argument is not hex.
    #[error("bad --hex argument: {0}")]
    Hex(#[from] HexError),
}

impl DumpError {
    /// The exit code for this error: 2 for a bad argument, 1 for a file that cannot be read.
    pub fn exit_code(&self) -> u8 {
        match self {
            DumpError::Hex(_) => 2,
            _ => 1,
        }
    }
}

/// Decode every Homa packet of a capture read from `reader`.
pub fn decode_capture<R: Read>(
    reader: R,
    opts: &DumpOptions,
) -> Result<(Vec<Record>, Stats), CaptureError> {
    let mut capture = CaptureReader::new(reader)?;
    let mut decoder = Decoder::new(*opts);
    let mut records = Vec::new();
    while let Some(frame) = capture.next_frame() {
        records.extend(decoder.frame(&frame?));
    }
    Ok((records, decoder.stats.clone()))
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

/// Run `homa dump`: print to stdout, report problems on stderr, return the exit status.
pub fn run(args: &DumpArgs) -> ExitCode {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = dump(args, &mut out).and_then(|status| {
        out.flush().map_err(Failure::Output)?;
        Ok(status)
    });
    match result {
        Ok(status) => status,
        // The reader went away (`homa dump x | head`): stop quietly, as tcpdump does.
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Failure::Output(e)) => {
            eprintln!("homa dump: writing the output failed: {e}");
            ExitCode::FAILURE
        }
        Err(Failure::Dump(e)) => {
            // Lines decoded before the error are worth keeping.
            let _ = out.flush();
            eprintln!("homa dump: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

enum Failure {
    Dump(DumpError),
    Output(io::Error),
}

impl From<DumpError> for Failure {
    fn from(e: DumpError) -> Self {
        Failure::Dump(e)
    }
}

fn dump(args: &DumpArgs, out: &mut impl Write) -> Result<ExitCode, Failure> {
    let opts = DumpOptions {
        udp_port: args.udp_port,
        max_message_length: args.max_message_length,
    };
    let write = |out: &mut dyn Write, r: &Record| {
        if args.json {
            r.write_json(out)
        } else {
            writeln!(out, "{}", r.to_text())
        }
    };

    if let Some(hex) = &args.hex {
        let text = if hex == "-" {
            let mut s = String::new();
            io::stdin()
                .read_to_string(&mut s)
                .map_err(DumpError::Stdin)?;
            s
        } else {
            hex.clone()
        };
        let bytes = parse_hex(&text).map_err(DumpError::Hex)?;
        let record = decode_packet(&bytes, opts.max_message_length);
        write(out, &record).map_err(Failure::Output)?;
        // Scripts can tell from the status whether the bytes were a valid packet.
        return Ok(if record.outcome.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }

    // clap makes FILE required when --hex is absent.
    let Some(path) = &args.file else {
        return Ok(ExitCode::from(2));
    };
    let capture_err = |source| DumpError::Capture {
        path: path.clone(),
        source,
    };
    // "-" reads the capture from standard input (`tcpdump -w - | homa dump -`).
    let input: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(path).map_err(|source| DumpError::Open {
            path: path.clone(),
            source,
        })?)
    };
    let mut capture = CaptureReader::new(input).map_err(capture_err)?;
    let mut decoder = Decoder::new(opts);
    let mut failure = None;
    while let Some(frame) = capture.next_frame() {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                failure = Some(capture_err(e));
                break;
            }
        };
        for record in decoder.frame(&frame) {
            write(out, &record).map_err(Failure::Output)?;
        }
    }
    if let Some(summary) = decoder.stats().summary() {
        out.flush().map_err(Failure::Output)?;
        eprintln!("homa dump: {summary}");
    }
    let stats = decoder.stats();
    if stats.homa == 0 && stats.other > 0 && opts.udp_port.is_none() {
        eprintln!(
            "homa dump: no Homa packets (IP protocol 146) in {} frames. Homa's default UDP \
             mode carries them in UDP datagrams: add --udp-port PORT (the server's port).",
            stats.frames
        );
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(ExitCode::SUCCESS),
    }
}
