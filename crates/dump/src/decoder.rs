//! [`Decoder`]: frames in, [`Record`]s out, with the numbering, relative times and the
//! counts ([`Stats`]) a dump ends with.

use std::collections::BTreeMap;

use homa_wire::{DATA_HEADER_LEN, HOMA_MAX_MESSAGE_LENGTH};

use crate::capture::{Frame, Timestamp};
use crate::decode::{decode_captured, DecodeError, Decoded};
use crate::defrag::{Defrag, Fragment};
use crate::gso::{self, layout, Gso, Layout};
use crate::net::{locate, locate_in_whole, HomaFrame, Skip};
use crate::record::Record;

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
    /// IP fragments put back together into the Homa packets of `reassembled`, each then
    /// decoded as any other. (A fragment the snap length cut cannot be joined, and shows
    /// as an `ip_fragment` error line.)
    pub fragments: u64,
    /// Homa packets put back together from IP fragments.
    pub reassembled: u64,
    /// Fragments of UDP or Homa packets never completed (the capture missed the rest):
    /// not shown.
    pub fragments_pending: u64,
}

impl Stats {
    /// A one-line summary, or `None` when every frame was one good Homa packet (then there
    /// is nothing worth saying).
    pub fn summary(&self) -> Option<String> {
        if self.errors == 0
            && self.cut == 0
            && self.fragments == 0
            && self.fragments_pending == 0
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
        if self.reassembled > 0 {
            s += &format!(
                ", {} put back together from {} IP fragments",
                self.reassembled, self.fragments
            );
        }
        if self.fragments_pending > 0 {
            s += &format!(
                ", {} IP fragments of packets never completed (not shown)",
                self.fragments_pending
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
    defrag: Defrag,
}

impl Decoder {
    /// A decoder for one capture.
    pub fn new(opts: DumpOptions) -> Self {
        Decoder {
            opts,
            first_ts: None,
            stats: Stats::default(),
            defrag: Defrag::default(),
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
        let whole;
        let (located, frames) = match self.defrag.take(frame) {
            Fragment::NotOne => (locate(frame, self.opts.udp_port), 1),
            Fragment::Held => {
                self.stats.fragments_pending = self.defrag.pending();
                return Vec::new();
            }
            Fragment::Complete {
                ip,
                protocol,
                payload,
                fragments,
            } => {
                self.stats.fragments_pending = self.defrag.pending();
                whole = payload;
                let located = locate_in_whole(ip, protocol, &whole, self.opts.udp_port);
                if located.is_ok() {
                    self.stats.fragments += fragments;
                    self.stats.reassembled += 1;
                }
                (located, fragments)
            }
        };
        let homa = match located {
            Ok(h) => h,
            Err(skip) => {
                match skip {
                    Skip::Other => self.stats.other += frames,
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
