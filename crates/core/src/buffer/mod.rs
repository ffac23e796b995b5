//! Receive buffers: where incoming messages are assembled and how the application holds
//! them.
//!
//! A message of up to one bpage (`Config::bpage_size`, 64 KiB) lives in one contiguous
//! chunk: a short one (up to [`SMALL_MAX`] bytes) in a chunk of the next power of two, a
//! longer one in a chunk of exactly its length. A message longer than a bpage lives in
//! whole bpages, each taken when the first byte for it arrives: memory grows with the
//! bytes received, not with the message's length (a 30 MB message that has received its
//! unscheduled bytes holds one page). Chunks and pages are filled by appending, so bytes
//! arriving in order (the usual case) are copied once and nothing is zero-filled; only a
//! gap left by bytes arriving out of order is zeroed, to be overwritten. When the
//! application releases a message, its bpages and its short chunk go back to the
//! endpoint's [`BufferPool`] and are reused, so steady traffic stops allocating (for
//! short RPCs, malloc and free were the largest cost of a message).
//!
//! A longer message whose packets arrive in a buffer the caller shares with the engine
//! (`Endpoint::handle_shared_datagram`) and are long (at least [`KEEP_MIN`] bytes of
//! payload, as over loopback or jumbo frames; [`RUN_KEEP_MIN`] in a GRO aggregate) is
//! instead kept as the packets' own payloads, by reference: the bytes are then copied
//! once, by the kernel, and not a second time into pages. So is a message up to a bpage
//! that comes in several long packets, each alone in its buffer (`Received::starts_a_run`:
//! jumbo frames without GRO), which would otherwise be copied into its chunk packet by
//! packet; such a message is not contiguous. What a message keeps of one
//! buffer is weighed once the packets in that buffer have been handled (the end of the
//! receive batch, or of the call): if the buffer is more than [`PIN_MAX`] times those
//! bytes, they are copied after all and the buffer let go ([`MessageBuf::settle`]).

mod pool;
#[cfg(test)]
mod tests;

pub(crate) use pool::BufferPool;

use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Shortest packet payload kept by reference rather than copied. A kept payload holds its
/// whole receive buffer (64 KiB in the runtime) until the message is released, so short
/// ones are copied: this bounds the memory held for each byte of message. A payload is
/// also kept only if it is at least half of the buffer handed in with it, so that what a
/// message pins stays within a small factor of what it is charged (the runtime shares
/// only buffers at least half full, and hands each packet of a GRO aggregate of one
/// message over as a buffer of its own).
pub const KEEP_MIN: usize = 8192;

/// Shortest payload kept by reference from a buffer holding several packets (a GRO
/// aggregate of 1,500-byte frames: payloads of 1,416 bytes). Whether keeping it was
/// worth it is settled once the buffer's packets are handled (see [`PIN_MAX`]).
pub const RUN_KEEP_MIN: usize = 1024;

/// Most bytes of buffer a message may pin for each byte it keeps of that buffer: beyond
/// that, its pieces of the buffer are copied when it is settled. A GRO aggregate of one
/// message's packets that fills a quarter of a 64 KiB receive slot stays kept.
pub const PIN_MAX: usize = 4;

/// Write `bytes` at offset `at` of `buf`, which holds what was written so far: appended
/// when they continue it, copied over what is there, after zeros for a gap.
#[inline]
fn put(buf: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    if at > buf.len() {
        buf.resize(at, 0); // a gap, filled later
    }
    let over = (buf.len() - at).min(bytes.len());
    buf[at..at + over].copy_from_slice(&bytes[..over]);
    buf.extend_from_slice(&bytes[over..]);
}

/// The bytes of a received message.
///
/// Contiguous for messages up to one bpage ([`as_slice`](Self::as_slice) is `Some`),
/// except those kept as the payloads of the several long packets they arrived in; a
/// sequence of chunks otherwise ([`chunks`](Self::chunks)): bpage-sized pages, or the
/// payloads of the packets the message arrived in.
///
/// A message the engine delivered counts against its receive space
/// (`Config::max_incoming_held`) until it is given back. Give it back with
/// `Endpoint::release` when done: the space is free at once and the memory is reused. A
/// message dropped instead gives its space back too, at the engine's next tick
/// (`Endpoint::handle_timeout`) or release. A clone is a copy of the bytes only: it does
/// not count, and releasing or dropping it gives nothing back (nor does a message of
/// another endpoint). A caller that releases every message can say so
/// (`Endpoint::promise_release`) and spare each message its reference to the receive
/// space.
#[derive(Debug, Default)]
pub struct MessageBuf {
    storage: Storage,
    len: usize,
    /// Where the bytes this message holds go back when it is dropped unreleased: the
    /// receive space of the endpoint that delivered it (set as it leaves the engine).
    credit: Option<Arc<AtomicU64>>,
}

impl Clone for MessageBuf {
    fn clone(&self) -> MessageBuf {
        MessageBuf {
            storage: self.storage.clone(),
            len: self.len,
            credit: None,
        }
    }
}

impl Drop for MessageBuf {
    fn drop(&mut self) {
        if let Some(credit) = self.credit.take() {
            credit.fetch_add(self.len as u64, Ordering::Relaxed);
        }
    }
}

/// One chunk (one allocation, possibly with room for more than the message) for messages
/// up to a bpage; pages (empty until written), or packet payloads kept by reference, for
/// longer ones. A chunk or page holds the bytes written so far (see [`put`]): all of its
/// part of the message once the message is complete.
#[derive(Debug, Clone)]
enum Storage {
    One(Vec<u8>),
    Pages(Vec<Vec<u8>>),
    /// Boxed: the short messages' `One` is what most messages are, and a smaller
    /// `MessageBuf` is cheaper to move through events and queues.
    Kept(Box<Kept>),
}

/// Part of a message kept by reference: its offset in the message and its bytes.
type Piece = (usize, Bytes);

/// A message kept in pieces.
#[derive(Debug, Clone, Default)]
struct Kept {
    /// (message offset, bytes), sorted by offset and not overlapping; they cover the
    /// message once it is complete.
    pieces: Vec<Piece>,
    /// The shared buffer the latest pieces were kept from, not yet settled.
    open: Open,
    /// The message is no longer than a bpage (kept because its packets were long).
    within_page: bool,
}

/// A shared buffer a message keeps pieces of: where it lies (`base` 0: none), how long
/// it is, and how many bytes of it the message keeps by reference.
#[derive(Debug, Clone, Copy, Default)]
struct Open {
    base: usize,
    len: usize,
    kept: usize,
}

impl Kept {
    /// Weigh the open buffer: if it is more than [`PIN_MAX`] times what this message
    /// keeps of it, copy those pieces, so that it no longer pins the buffer.
    fn settle(&mut self) {
        let open = std::mem::take(&mut self.open);
        if open.base == 0 || open.kept * PIN_MAX >= open.len {
            return;
        }
        // (A buffer's address is not reused while a piece of it is alive: every piece
        // in its range is from it.)
        for (_, b) in &mut self.pieces {
            let at = b.as_ptr() as usize;
            if (open.base..open.base + open.len).contains(&at) {
                *b = Bytes::copy_from_slice(b);
            }
        }
    }
}

/// Most pieces a message of `len` bytes may be kept in: room for one per KiB (kept
/// pieces are at least `RUN_KEEP_MIN`; the rest are the odd short tail or
/// retransmission).
fn max_pieces(len: usize) -> usize {
    len / 1024 + 16
}

impl Default for Storage {
    fn default() -> Self {
        Storage::One(Vec::new())
    }
}

impl MessageBuf {
    /// A buffer for a message of `len` bytes whose first bytes are `head` (the first
    /// packet, when it starts the message; may be empty). A one-chunk message is built
    /// from `head` directly, so the common one-packet message is copied once. `keep`: the packets come in shared buffers and are long, so a long
    /// message keeps them instead of taking pages.
    ///
    /// Inline for the one-chunk case, which every short message takes (forced: LLVM
    /// would make this or `BufferPool::chunk` a call, whose register saves and
    /// argument moves cost ~30 instructions a message).
    #[inline(always)]
    pub(crate) fn new(
        len: usize,
        pool: &mut BufferPool,
        head: Received<'_>,
        keep: bool,
    ) -> MessageBuf {
        if len <= pool.page_size() && !(keep && head.starts_a_run(len)) {
            let head = &head.bytes[..head.bytes.len().min(len)];
            return MessageBuf {
                storage: Storage::One(pool.chunk(len, head)),
                len,
                credit: None,
            };
        }
        Self::new_in_pieces(len, pool, head, keep)
    }

    /// `new` for a message longer than a bpage, or one up to a bpage whose first packet
    /// starts a run of packets kept where they lie (`Received::starts_a_run`).
    fn new_in_pieces(
        len: usize,
        pool: &mut BufferPool,
        head: Received<'_>,
        keep: bool,
    ) -> MessageBuf {
        let page = pool.page_size();
        let storage = if keep {
            // Room for every packet of the message from the start: kept payloads are as
            // long as the first (the packets of a message are all of one size but the
            // last); `KEEP_MIN` is guessed when the first to arrive is not the head.
            // Grown by doubling instead, a 200 KB message of 9,000-byte packets
            // reallocated its list three times (0.5-1% of a testbed server's user time).
            let piece = match head.bytes.len() {
                0 => KEEP_MIN,
                n => n.max(RUN_KEEP_MIN),
            };
            Storage::Kept(Box::new(Kept {
                pieces: Vec::with_capacity(len.div_ceil(piece) + 1),
                open: Open::default(),
                within_page: len <= page,
            }))
        } else {
            Storage::Pages((0..len.div_ceil(page)).map(|_| Vec::new()).collect())
        };
        let mut buf = MessageBuf {
            storage,
            len,
            credit: None,
        };
        if !head.bytes.is_empty() {
            let n = head.bytes.len().min(len);
            // (A new message holds no pieces yet: the write is always taken.)
            let _ = buf.write(
                0,
                Received {
                    bytes: &head.bytes[..n],
                    owner: head.owner,
                },
                pool,
            );
        }
        buf
    }

    /// Put `data` in at message offset `at` (the caller checked it fits): copied, or for a
    /// message that keeps packets, the parts not already there kept by reference.
    /// Returns false, taking nothing, when a message that keeps packets already holds
    /// as many pieces as it may ([`max_pieces`]): a peer sending it in tiny packets would
    /// otherwise cost a piece (and an allocation) per byte.
    #[must_use]
    pub(crate) fn write(
        &mut self,
        mut at: usize,
        data: Received<'_>,
        pool: &mut BufferPool,
    ) -> bool {
        let mut bytes = data.bytes;
        match &mut self.storage {
            Storage::One(b) => put(b, at, bytes),
            Storage::Pages(pages) => {
                let page = pool.page_size();
                while !bytes.is_empty() {
                    let (i, off) = (at / page, at % page);
                    let p = &mut pages[i];
                    if p.capacity() == 0 {
                        *p = pool.page(); // the page's first bytes
                    }
                    let n = (page - off).min(bytes.len());
                    put(p, off, &bytes[..n]);
                    bytes = &bytes[n..];
                    at += n;
                }
            }
            Storage::Kept(k) if k.pieces.len() >= max_pieces(self.len) => return false,
            Storage::Kept(k) => {
                let owner = data.owner.filter(|_| data.may_keep());
                if let Some(o) = owner {
                    let base = o.as_ptr() as usize;
                    if k.open.base != base {
                        k.settle();
                        k.open = Open {
                            base,
                            len: o.len(),
                            kept: 0,
                        };
                    }
                }
                k.open.kept += keep_new_parts(&mut k.pieces, at, data.bytes, owner);
            }
        }
        true
    }

    /// The address of the shared buffer this message last kept pieces of and has not yet
    /// settled (0: none). The engine lists a message whose first buffer opens, and
    /// settles it at the end of the receive batch.
    pub(crate) fn open_buffer(&self) -> usize {
        match &self.storage {
            Storage::Kept(k) => k.open.base,
            _ => 0,
        }
    }

    /// Weigh what the message keeps of the buffer it last kept pieces of, once every
    /// packet in that buffer has been handled: pieces pinning more than [`PIN_MAX`]
    /// times their bytes are copied instead.
    pub(crate) fn settle(&mut self) {
        if let Storage::Kept(k) = &mut self.storage {
            k.settle();
        }
    }

    /// Hand whole pages and a pooled chunk back to `pool`, as far as it keeps them.
    ///
    /// Inline for the one-chunk case, which every short message takes: as a call, its
    /// register saves cost about as much as the work itself.
    #[inline(always)]
    pub(crate) fn recycle(mut self, pool: &mut BufferPool) {
        match std::mem::replace(&mut self.storage, Storage::One(Vec::new())) {
            Storage::One(chunk) => pool.give_chunk(chunk),
            Storage::Pages(pages) => pool.give_pages(pages),
            Storage::Kept(_) => {}
        }
    }

    /// The message now counts against the receive space that `credit` stands for: dropped
    /// unreleased, it gives its bytes back there.
    pub(crate) fn owe_to(&mut self, credit: &Arc<AtomicU64>) {
        self.credit = Some(Arc::clone(credit));
    }

    /// Whether this message counts against the receive space that `credit` stands for; if
    /// so, it no longer does (it is being released). With no credit (the application
    /// promised to release every message), every message counts.
    #[inline]
    pub(crate) fn settle_with(&mut self, credit: Option<&Arc<AtomicU64>>) -> bool {
        match (credit, &self.credit) {
            (None, None) => true,
            (Some(ours), Some(c)) if !Arc::ptr_eq(c, ours) => false,
            (Some(_), None) => false,
            // Ours; or one handed out before the promise.
            _ => {
                self.credit = None;
                true
            }
        }
    }

    /// Message length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty buffer (never the case for a delivered message).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes, if they are in one chunk: so up to one bpage, except for a message kept
    /// as the payloads of several long packets (see the module's docs).
    pub fn as_slice(&self) -> Option<&[u8]> {
        match &self.storage {
            Storage::One(b) => b.get(..self.len),
            Storage::Pages(_) => None,
            Storage::Kept(_) => self.whole_piece().map(|b| &b[..]),
        }
    }

    /// Whether the message is no longer than one bpage: contiguous, unless kept as the
    /// payloads of several packets (then [`as_slice`](Self::as_slice) is `None`, and a
    /// caller that wants the bytes in one piece, as the runtime's `Message::as_slice`
    /// promises, joins them itself).
    pub fn within_page(&self) -> bool {
        match &self.storage {
            Storage::One(_) => true,
            Storage::Pages(_) => false,
            Storage::Kept(k) => k.within_page,
        }
    }

    /// The one kept piece that holds the whole message, if it is kept so.
    fn whole_piece(&self) -> Option<&Bytes> {
        match &self.storage {
            Storage::Kept(k) => match k.pieces.as_slice() {
                [(0, b)] if b.len() == self.len => Some(b),
                _ => None,
            },
            _ => None,
        }
    }

    /// The bytes, chunk by chunk, in order.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let (pages, kept): (&[Vec<u8>], &[Piece]) = match &self.storage {
            Storage::One(b) => (std::slice::from_ref(b), &[]),
            Storage::Pages(p) => (p, &[]),
            Storage::Kept(k) => (&[], &k.pieces),
        };
        let mut left = self.len;
        let pages = pages.iter().map(move |c| {
            let n = c.len().min(left);
            left -= n;
            &c[..n]
        });
        pages.chain(kept.iter().map(|(_, b)| &b[..]))
    }

    /// The bytes as one [`Bytes`], without a copy where they allow it: the chunk of a
    /// message in one (taken out of the buffer, which keeps its length but no longer its
    /// memory, and so never goes back to the pool), or the one packet a kept message
    /// arrived in; otherwise (pages, several packets) a copy into one buffer, the pages
    /// staying here to be recycled.
    pub(crate) fn take_bytes(&mut self) -> Bytes {
        if let Storage::One(b) = &mut self.storage {
            let mut chunk = std::mem::take(b);
            chunk.truncate(self.len);
            return Bytes::from(chunk);
        }
        match self.whole_piece() {
            Some(b) => b.clone(),
            None => Bytes::from(self.to_vec()),
        }
    }

    /// Copy the message into one new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        self.chunks().for_each(|c| v.extend_from_slice(c));
        v
    }

    /// True if the bytes equal `other`.
    pub fn eq_bytes(&self, other: &[u8]) -> bool {
        if other.len() != self.len {
            return false;
        }
        let mut at = 0;
        self.chunks().all(|c| {
            let same = c == &other[at..at + c.len()];
            at += c.len();
            same
        })
    }
}

/// Bytes received in a packet, and the shared buffer they lie in when the engine may keep
/// them by reference (`owner`; the engine checked they lie inside it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received<'a> {
    pub bytes: &'a [u8],
    pub owner: Option<&'a Bytes>,
}

impl<'a> Received<'a> {
    /// Bytes to copy.
    pub fn copied(bytes: &'a [u8]) -> Self {
        Received { bytes, owner: None }
    }

    /// May these bytes be kept by reference without being weighed later (as the packets a
    /// message keeps while it waits for buffer space)? They must lie in a shared buffer,
    /// be long (`KEEP_MIN`), and fill at least half of that buffer: a short piece of a long buffer
    /// would pin all of it while the message is charged for the piece alone (a peer
    /// sending 8 KB pieces that each arrive in their own 64 KB buffer would hold 8 times
    /// its charge).
    #[inline]
    pub fn keepable(&self) -> bool {
        let n = self.bytes.len();
        self.owner
            .is_some_and(|o| n >= KEEP_MIN && n * 2 >= o.len())
    }

    /// Is this the first packet of a message of `len` bytes (up to a bpage) worth keeping
    /// in pieces rather than copying into one chunk? Only if the message takes more than
    /// this packet, the packet may be kept ([`keepable`](Self::keepable)), and it is the
    /// only packet in its buffer (a lone datagram, which the runtime shares only when it
    /// fills at least half of its receive slot): jumbo frames without GRO. A message in
    /// one datagram is copied into a chunk of its own length (kept, a 33 KB message over
    /// loopback would pin a 64 KiB slot), and so is one whose head lies in a GRO
    /// aggregate (its pieces would pin the aggregate's 64 KiB slot).
    #[inline]
    pub fn starts_a_run(&self, len: usize) -> bool {
        let alone = self
            .owner
            .is_some_and(|o| o.len() <= self.bytes.len() + homa_wire::MAX_HEADER_LEN);
        self.bytes.len() < len && alone && self.keepable()
    }

    /// May a message keep these bytes by reference for now? They lie in a shared buffer
    /// and are at least [`RUN_KEEP_MIN`]; whether the buffer they pin is worth it is
    /// weighed when the message is settled ([`MessageBuf::settle`]).
    #[inline]
    pub fn may_keep(&self) -> bool {
        self.owner.is_some() && self.bytes.len() >= RUN_KEEP_MIN
    }
}

/// Adds the parts of `bytes` (at message offset `at`) that `pieces` does not yet cover:
/// by reference into `owner` when there is one, else copied. Duplicates (retransmitted
/// bytes) are left out, so the pieces never overlap. Returns the bytes kept by reference.
fn keep_new_parts(
    pieces: &mut Vec<Piece>,
    at: usize,
    bytes: &[u8],
    owner: Option<&Bytes>,
) -> usize {
    let end = at + bytes.len();
    let mut kept = 0;
    let mut piece = |from: usize, to: usize| {
        let part = &bytes[from - at..to - at];
        match owner {
            Some(o) => {
                kept += part.len();
                o.slice_ref(part)
            }
            None => Bytes::copy_from_slice(part),
        }
    };
    // The first piece that ends after `at`; those before it are untouched.
    let mut i = pieces.partition_point(|(s, b)| s + b.len() <= at);
    let mut pos = at;
    while pos < end {
        match pieces.get(i) {
            Some((s, b)) if *s <= pos => pos = pos.max(s + b.len()),
            next => {
                let gap_end = next.map_or(end, |(s, _)| (*s).min(end));
                pieces.insert(i, (pos, piece(pos, gap_end)));
                pos = gap_end;
            }
        }
        i += 1;
    }
    kept
}

impl PartialEq for MessageBuf {
    fn eq(&self, other: &MessageBuf) -> bool {
        self.len == other.len && self.chunks().flatten().eq(other.chunks().flatten())
    }
}
impl Eq for MessageBuf {}

impl PartialEq<[u8]> for MessageBuf {
    fn eq(&self, other: &[u8]) -> bool {
        self.eq_bytes(other)
    }
}
impl PartialEq<&[u8]> for MessageBuf {
    fn eq(&self, other: &&[u8]) -> bool {
        self.eq_bytes(other)
    }
}
impl PartialEq<Vec<u8>> for MessageBuf {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.eq_bytes(other)
    }
}
impl<const N: usize> PartialEq<[u8; N]> for MessageBuf {
    fn eq(&self, other: &[u8; N]) -> bool {
        self.eq_bytes(other)
    }
}
impl<const N: usize> PartialEq<&[u8; N]> for MessageBuf {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self.eq_bytes(*other)
    }
}
