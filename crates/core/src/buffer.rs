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
//! once, by the kernel, and not a second time into pages. What a message keeps of one
//! buffer is weighed once the packets in that buffer have been handled (the end of the
//! receive batch, or of the call): if the buffer is more than [`PIN_MAX`] times those
//! bytes, they are copied after all and the buffer let go ([`MessageBuf::settle`]).

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

/// Longest message whose chunk is pooled for reuse.
const SMALL_MAX: usize = 4096;
/// Smallest pooled chunk.
const SMALL_MIN: usize = 64;
/// Chunk sizes pooled: `SMALL_MIN << i` for `i` below this.
const SMALL_CLASSES: usize = (SMALL_MAX / SMALL_MIN).trailing_zeros() as usize + 1;
/// Bytes of chunks of one size always kept: a server answering a batch of 64 short
/// requests releases 64 chunks at once, and a pool that kept 32 allocated half of the
/// next batch afresh (malloc and free were 6% of a 100-byte RPC's CPU at 64
/// outstanding). At most 7 * 64 KiB in all, plus [`SMALL_KEEP_MIN`] of the largest sizes.
const SMALL_KEEP_BYTES: usize = 64 << 10;
/// Fewest chunks of one size always kept, however large.
const SMALL_KEEP_MIN: usize = 32;
/// Bytes of chunks of one size kept at most while they are being used: with thousands
/// of short messages live at once (an endpoint fallen behind), a pool of 64 KiB per
/// size gave most of them back to malloc at every release and took them again for the
/// next messages (malloc and free 12% of the instructions per 100-byte RPC at 10,000
/// outstanding, `cargo bench -p homa-core --bench engine`). What is not taken again is
/// trimmed away by halves ([`BufferPool::trim`]), so the pool keeps what steady traffic
/// uses, not what a burst once did. At most 7 * 2 MiB in all.
const SMALL_KEEP_MAX_BYTES: usize = 2 << 20;

/// Chunks of size class `class` always kept.
fn small_keep(class: usize) -> usize {
    (SMALL_KEEP_BYTES / (SMALL_MIN << class)).max(SMALL_KEEP_MIN)
}

/// Most chunks of size class `class` kept while they are used.
fn small_keep_max(class: usize) -> usize {
    (SMALL_KEEP_MAX_BYTES / (SMALL_MIN << class)).max(SMALL_KEEP_MIN)
}

/// Buffers of released messages, kept for the next ones: whole bpages, and the chunks of
/// short messages by size.
#[derive(Debug)]
pub(crate) struct BufferPool {
    /// The bpage size.
    page: usize,
    /// Pages of `page` bytes' capacity.
    pages: Vec<Vec<u8>>,
    /// Most pages kept.
    keep_pages: usize,
    /// `small[i]` holds chunks of `SMALL_MIN << i` bytes' capacity.
    small: [Vec<Vec<u8>>; SMALL_CLASSES],
    /// Fewest pages held since the last [`trim`](Self::trim): that many went unused.
    low_water: usize,
    /// Fewest chunks of each size held since the last `trim`.
    small_low_water: [usize; SMALL_CLASSES],
}

impl BufferPool {
    /// A pool for pages of `page` bytes that keeps at most `keep_pages` of them.
    pub fn new(page: usize, keep_pages: usize) -> BufferPool {
        BufferPool {
            page,
            pages: Vec::new(),
            keep_pages,
            small: Default::default(),
            low_water: 0,
            small_low_water: [0; SMALL_CLASSES],
        }
    }

    /// Free half of the pages that were not taken since the last call: a pool left
    /// large by a burst (or a flood of forged DATA declaring long messages) shrinks
    /// geometrically while it is not used, and steady traffic keeps what it uses.
    pub fn trim(&mut self) {
        trim_unused(&mut self.pages, &mut self.low_water, 0, 16);
        // Short chunks the same way, down to the few always kept.
        for (i, (chunks, low)) in self
            .small
            .iter_mut()
            .zip(&mut self.small_low_water)
            .enumerate()
        {
            let floor = small_keep(i);
            trim_unused(chunks, low, floor, floor);
        }
    }

    /// Free everything the pool holds (the endpoint is idle).
    pub fn clear(&mut self) {
        self.pages = Vec::new();
        self.small = Default::default();
        self.low_water = 0;
        self.small_low_water = [0; SMALL_CLASSES];
    }

    /// The size class of a short message of `len` bytes, if pooled.
    fn class(len: usize) -> Option<usize> {
        (len <= SMALL_MAX).then(|| {
            len.max(SMALL_MIN)
                .div_ceil(SMALL_MIN)
                .next_power_of_two()
                .trailing_zeros() as usize
        })
    }

    /// A chunk with room for a message of `len` bytes (up to one page), holding `head`.
    ///
    /// Inline, as `MessageBuf::new`: every short message takes its chunk here.
    #[inline(always)]
    fn chunk(&mut self, len: usize, head: &[u8]) -> Vec<u8> {
        let reused = Self::class(len).and_then(|class| {
            let chunks = &mut self.small[class];
            let c = chunks.pop();
            let low = &mut self.small_low_water[class];
            *low = (*low).min(chunks.len());
            c
        });
        let Some(mut c) = reused else {
            return Self::new_chunk(len, head);
        };
        if c.len() >= head.len() {
            // The usual case: the chunk held a message at least as long (often of the
            // same length). Copied over in place: one `memcpy`, where clearing and
            // appending went through `Vec`'s growth path, a call of its own (~40
            // instructions per small RPC, callgrind, `rpc_cost`).
            c.truncate(head.len());
            c.copy_from_slice(head);
        } else {
            c.clear();
            c.extend_from_slice(head);
        }
        c
    }

    /// A new chunk for `chunk`: of the message's size class if it has one, else of its
    /// exact length.
    fn new_chunk(len: usize, head: &[u8]) -> Vec<u8> {
        let size = Self::class(len).map_or(len, |class| SMALL_MIN << class);
        let mut v = Vec::with_capacity(size);
        v.extend_from_slice(head);
        v
    }

    /// An empty page with room for a bpage.
    fn page(&mut self) -> Vec<u8> {
        let page = self.pages.pop();
        self.low_water = self.low_water.min(self.pages.len());
        match page {
            Some(mut p) => {
                p.clear();
                p
            }
            None => Vec::with_capacity(self.page),
        }
    }
}

/// Free half of the buffers in `kept` that were not taken since the last trim (`low`,
/// the fewest held meanwhile, is then reset), keeping at least `floor`; give back the
/// list's own memory when it is four times what `max(len, shrink_floor)` needs.
fn trim_unused(kept: &mut Vec<Vec<u8>>, low: &mut usize, floor: usize, shrink_floor: usize) {
    let len = kept.len();
    let unused = (*low).min(len);
    kept.truncate((len - unused.div_ceil(2)).max(floor.min(len)));
    if kept.capacity() > 4 * kept.len().max(shrink_floor) {
        kept.shrink_to_fit();
    }
    *low = kept.len();
}

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
/// Contiguous for messages up to one bpage ([`as_slice`](Self::as_slice) is `Some`); a
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
        if len <= pool.page {
            let head = &head.bytes[..head.bytes.len().min(len)];
            return MessageBuf {
                storage: Storage::One(pool.chunk(len, head)),
                len,
                credit: None,
            };
        }
        Self::new_long(len, pool, head, keep)
    }

    /// `new` for a message longer than a bpage.
    fn new_long(len: usize, pool: &mut BufferPool, head: Received<'_>, keep: bool) -> MessageBuf {
        let page = pool.page;
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
                let page = pool.page;
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
            Storage::One(chunk) => {
                // Only chunks of a pooled size (a power of two from SMALL_MIN to
                // SMALL_MAX): one made for a longer message has its exact length, which
                // may be anything.
                let len = chunk.capacity();
                if len.is_power_of_two() && (SMALL_MIN..=SMALL_MAX).contains(&len) {
                    let i = (len / SMALL_MIN).trailing_zeros() as usize;
                    if pool.small[i].len() < small_keep_max(i) {
                        pool.small[i].push(chunk);
                    }
                }
            }
            storage => Self::recycle_pages(storage, pool),
        }
    }

    /// `recycle` for a message longer than a bpage.
    fn recycle_pages(storage: Storage, pool: &mut BufferPool) {
        if let Storage::Pages(pages) = storage {
            let room = pool.keep_pages.saturating_sub(pool.pages.len());
            let taken = pages.into_iter().filter(|p| p.capacity() == pool.page);
            pool.pages.extend(taken.take(room));
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

    /// The bytes, if they are in one chunk (always so up to one bpage).
    pub fn as_slice(&self) -> Option<&[u8]> {
        match &self.storage {
            Storage::One(b) => b.get(..self.len),
            Storage::Pages(_) => None,
            Storage::Kept(k) => match k.pieces.as_slice() {
                [(0, b)] if b.len() == self.len => Some(b),
                _ => None,
            },
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Range;

    #[test]
    fn a_buffer_starts_with_the_head_it_is_given() {
        let mut pool = BufferPool::new(64, 10);
        // One chunk: the head, then the rest as it comes.
        let mut b = MessageBuf::new(5, &mut pool, Received::copied(&[1, 2, 3]), false);
        assert!(b.write(3, Received::copied(&[4, 5]), &mut pool));
        assert_eq!(b, [1, 2, 3, 4, 5]);
        // A head longer than the message is cut to it.
        assert_eq!(
            MessageBuf::new(2, &mut pool, Received::copied(&[9, 8, 7]), false),
            [9, 8]
        );
        // Pages: the head lands at offset 0, across a page boundary.
        let all: Vec<u8> = (1..=100).collect();
        let mut big = MessageBuf::new(100, &mut pool, Received::copied(&all[..70]), false);
        assert!(big.write(70, Received::copied(&all[70..]), &mut pool));
        assert_eq!(big, all);
    }

    #[test]
    fn bytes_out_of_order_and_again_land_where_they_belong() {
        let mut pool = BufferPool::new(64, 10);
        let mut b = MessageBuf::new(40, &mut pool, Received::copied(&[]), false);
        assert!(b.write(10, Received::copied(&[1; 30]), &mut pool));
        assert!(b.write(0, Received::copied(&[2; 12]), &mut pool)); // overlaps
        assert!(b.write(35, Received::copied(&[3; 5]), &mut pool)); // again, changed
        let mut want = vec![2u8; 12];
        want.extend([1; 23]);
        want.extend([3; 5]);
        assert_eq!(b.as_slice().unwrap(), &want[..]);
        // In pages: the last page first, then the others.
        let data: Vec<u8> = (0..150u32).map(|i| i as u8).collect();
        let mut big = MessageBuf::new(150, &mut pool, Received::copied(&[]), false);
        for at in [140, 20, 0, 60, 100] {
            let end = (at + 40).min(150);
            assert!(big.write(at, Received::copied(&data[at..end]), &mut pool));
        }
        assert_eq!(big, data);
    }

    #[test]
    fn large_messages_take_pages_as_bytes_arrive_and_recycle_them() {
        let mut pool = BufferPool::new(64, 10);
        let data: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        let mut big = MessageBuf::new(200, &mut pool, Received::copied(&[]), false);
        assert!(big.write(0, Received::copied(&data[..50]), &mut pool));
        let taken = |b: &MessageBuf| match &b.storage {
            Storage::Pages(p) => p.iter().filter(|p| p.capacity() > 0).count(),
            _ => usize::MAX,
        };
        assert_eq!(taken(&big), 1, "only the page written to");
        assert!(big.write(50, Received::copied(&data[50..130]), &mut pool)); // spans pages
        assert!(big.write(130, Received::copied(&data[130..]), &mut pool));
        assert_eq!(taken(&big), 4);
        assert!(big.as_slice().is_none());
        assert_eq!(
            big.chunks().map(<[u8]>::len).collect::<Vec<_>>(),
            [64, 64, 64, 8]
        );
        assert_eq!(big, data);
        assert_eq!(big.to_vec(), data);
        big.recycle(&mut pool);
        assert_eq!(pool.pages.len(), 4);
        let mut again = MessageBuf::new(130, &mut pool, Received::copied(&[]), false);
        assert_eq!(pool.pages.len(), 4, "nothing taken before bytes arrive");
        assert!(again.write(0, Received::copied(&data[..130]), &mut pool));
        assert_eq!(pool.pages.len(), 1);
        assert_eq!(again, &data[..130]);
        // No more pages kept than the pool was told.
        let mut pool = BufferPool::new(64, 2);
        let mut m = MessageBuf::new(200, &mut pool, Received::copied(&[]), false);
        assert!(m.write(0, Received::copied(&data), &mut pool));
        m.recycle(&mut pool);
        assert_eq!(pool.pages.len(), 2);
    }

    #[test]
    fn short_message_chunks_are_reused_clean() {
        let mut pool = BufferPool::new(65_536, 0);
        let mut a = MessageBuf::new(100, &mut pool, Received::copied(&[5; 100]), false);
        assert!(a.write(0, Received::copied(&[6; 10]), &mut pool));
        let ptr = a.as_slice().unwrap().as_ptr();
        a.recycle(&mut pool);
        // Reused for any message of the same size class, holding only its own bytes.
        let mut b = MessageBuf::new(90, &mut pool, Received::copied(&[1, 2]), false);
        assert!(b.write(2, Received::copied(&[0; 88]), &mut pool));
        assert_eq!(b.as_slice().unwrap().as_ptr(), ptr);
        let mut want = vec![0; 90];
        want[..2].copy_from_slice(&[1, 2]);
        assert_eq!(b, want);
        assert_eq!(b.chunks().map(<[u8]>::len).collect::<Vec<_>>(), [90]);
        // Not for another class.
        let mut c = MessageBuf::new(20, &mut pool, Received::copied(&[]), false);
        assert!(c.write(0, Received::copied(&[0; 20]), &mut pool));
        assert_ne!(c.as_slice().unwrap().as_ptr(), ptr);
        assert_eq!(c, [0; 20]);
        // At most small_keep_max of a size are kept; chunks of longer messages are not.
        let class = BufferPool::class(100).unwrap();
        let (keep, keep_max) = (small_keep(class), small_keep_max(class));
        assert_eq!((keep, keep_max), (512, 16_384));
        for _ in 0..keep_max + 3 {
            MessageBuf::new(
                100,
                &mut BufferPool::new(65_536, 0),
                Received::copied(&[]),
                false,
            )
            .recycle(&mut pool);
        }
        let mut long = MessageBuf::new(SMALL_MAX + 1, &mut pool, Received::copied(&[]), false);
        assert!(long.write(0, Received::copied(&[1; SMALL_MAX + 1]), &mut pool));
        assert_eq!(long.chunks().next().map(<[u8]>::len), Some(SMALL_MAX + 1));
        long.recycle(&mut pool);
        let kept = |pool: &BufferPool| pool.small.iter().map(Vec::len).sum::<usize>();
        assert_eq!(kept(&pool), keep_max);
        // Chunks taken again stay; what goes unused is trimmed by halves, down to keep.
        pool.trim();
        assert_eq!(
            kept(&pool),
            keep_max,
            "the low-water mark starts at the first trim"
        );
        let taken: Vec<_> = (0..1000)
            .map(|_| MessageBuf::new(100, &mut pool, Received::copied(&[]), false))
            .collect();
        taken.into_iter().for_each(|m| m.recycle(&mut pool));
        pool.trim();
        let unused = keep_max - 1000;
        assert_eq!(kept(&pool), keep_max - unused.div_ceil(2));
        for _ in 0..20 {
            pool.trim();
        }
        assert_eq!(kept(&pool), keep);
    }

    #[test]
    fn long_shared_packets_are_kept_by_reference_without_duplicates() {
        let page = 16 * 1024;
        let len = 5 * KEEP_MIN;
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        // The "receive buffers": one shared buffer per packet.
        let shared = |from: usize, to: usize| Bytes::copy_from_slice(&data[from..to]);
        fn kept(b: &Bytes) -> Received<'_> {
            Received {
                bytes: &b[..],
                owner: Some(b),
            }
        }
        let mut pool = BufferPool::new(page, 10);
        let first = shared(0, 2 * KEEP_MIN);
        let mut m = MessageBuf::new(len, &mut pool, kept(&first), true);
        // Out of order, then a retransmission overlapping both neighbours, then a short
        // tail (copied: shorter than KEEP_MIN).
        let third = shared(3 * KEEP_MIN, 4 * KEEP_MIN + 10);
        assert!(m.write(3 * KEEP_MIN, kept(&third), &mut pool));
        let resend = shared(KEEP_MIN, 4 * KEEP_MIN);
        assert!(m.write(KEEP_MIN, kept(&resend), &mut pool));
        let tail = shared(4 * KEEP_MIN + 10, len);
        assert!(m.write(4 * KEEP_MIN + 10, Received::copied(&tail), &mut pool));
        assert_eq!(m, data);
        assert_eq!(
            m.chunks().map(<[u8]>::len).collect::<Vec<_>>(),
            [2 * KEEP_MIN, KEEP_MIN, KEEP_MIN + 10, KEEP_MIN - 10]
        );
        // The first three chunks are the shared buffers themselves, not copies.
        let ptrs: Vec<_> = m.chunks().map(<[u8]>::as_ptr).collect();
        assert_eq!(ptrs[0], first.as_ptr());
        assert_eq!(ptrs[1], resend[KEEP_MIN..].as_ptr());
        assert_eq!(ptrs[2], third.as_ptr());
        assert!(pool.pages.is_empty(), "no pages taken");
        // A message kept in one packet is contiguous.
        let whole = shared(0, 3 * KEEP_MIN);
        let one = MessageBuf::new(3 * KEEP_MIN, &mut pool, kept(&whole), true);
        assert_eq!(one.as_slice(), Some(&data[..3 * KEEP_MIN]));
    }

    #[test]
    fn a_kept_message_has_room_for_all_its_packets_from_the_first() {
        let kept_list = |m: &MessageBuf| match &m.storage {
            Storage::Kept(k) => (k.pieces.len(), k.pieces.capacity()),
            _ => panic!("not kept by reference"),
        };
        let mut pool = BufferPool::new(64 * 1024, 10);
        // 200,000 bytes in jumbo-frame payloads of 8,952 bytes (23 packets), in order
        // and then with the head arriving last.
        let (len, seg) = (200_000, 8_952);
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let packets: Vec<(usize, Bytes)> = (0..len)
            .step_by(seg)
            .map(|at| (at, Bytes::copy_from_slice(&data[at..(at + seg).min(len)])))
            .collect();
        fn kept(b: &Bytes) -> Received<'_> {
            Received {
                bytes: &b[..],
                owner: Some(b),
            }
        }
        // Write `rest` after `m`'s first packet: the message comes out whole, and its
        // list did not grow meanwhile.
        let fill = |mut m: MessageBuf, rest: &[&(usize, Bytes)], pool: &mut BufferPool| {
            let room = kept_list(&m).1;
            for (at, p) in rest {
                let r = if p.len() >= KEEP_MIN {
                    kept(p)
                } else {
                    Received::copied(p)
                };
                assert!(m.write(*at, r, pool));
            }
            assert_eq!(m, data);
            assert_eq!(kept_list(&m), (packets.len(), room), "the list never grew");
        };
        let (_, head) = &packets[0];
        let m = MessageBuf::new(len, &mut pool, kept(head), true);
        fill(m, &packets[1..].iter().collect::<Vec<_>>(), &mut pool);
        // The head last: the first packet to arrive says nothing of the others' length,
        // and the list is sized for the shortest packet kept by reference.
        let (at, second) = &packets[1];
        let mut m = MessageBuf::new(len, &mut pool, Received::copied(&[]), true);
        assert!(m.write(*at, kept(second), &mut pool));
        let rest: Vec<_> = packets[2..].iter().chain(&packets[..1]).collect();
        fill(m, &rest, &mut pool);
    }

    #[test]
    fn a_message_kept_in_pieces_takes_no_more_than_its_share_of_them() {
        let len = 100_000;
        let first = Bytes::from(vec![1u8; 2 * KEEP_MIN]);
        let head = Received {
            bytes: &first,
            owner: Some(&first),
        };
        let mut pool = BufferPool::new(16 * 1024, 10);
        let mut m = MessageBuf::new(len, &mut pool, head, true);
        // Then one byte at a time: each is a piece of its own, up to the limit.
        let mut taken = 1;
        for at in 2 * KEEP_MIN..len {
            if !m.write(at, Received::copied(&[2]), &mut pool) {
                break;
            }
            taken += 1;
        }
        assert_eq!(taken, max_pieces(len));
        assert!(!m.write(len - 1, Received::copied(&[3]), &mut pool));
    }

    #[test]
    fn a_long_piece_of_a_much_longer_buffer_is_copied_not_pinned() {
        // An 8 KB payload in a 64 KB receive buffer: keeping it would pin 8 times the
        // bytes the message is charged for. It is kept until the message is settled
        // (the buffer's other packets may be the message's too), then copied.
        let buffer = Bytes::from(vec![5u8; 64 * 1024]);
        let piece = &buffer[100..100 + KEEP_MIN];
        let r = Received {
            bytes: piece,
            owner: Some(&buffer),
        };
        assert!(!r.keepable() && r.may_keep());
        let mut pool = BufferPool::new(16 * 1024, 10);
        let mut m = MessageBuf::new(4 * KEEP_MIN, &mut pool, Received::copied(&[]), true);
        assert!(m.write(0, r, &mut pool));
        assert_eq!(m.open_buffer(), buffer.as_ptr() as usize);
        m.settle();
        assert_eq!(m.open_buffer(), 0);
        assert_ne!(
            m.chunks().next().unwrap().as_ptr(),
            piece.as_ptr(),
            "copied"
        );
        assert!(m.chunks().next().unwrap() == piece);
        drop(m);
        assert!(buffer.is_unique(), "nothing holds the receive buffer");
        // Half the buffer or more may be kept without weighing (a waiting message's
        // packets).
        let half = &buffer[..32 * 1024];
        let r = Received {
            bytes: half,
            owner: Some(&buffer),
        };
        assert!(r.keepable());
    }

    /// A message's bytes `data` arriving as packets of `seg` bytes of payload, each after
    /// a 56-byte header, `per_buffer` packets to a buffer of at least `slot` bytes (a GRO
    /// aggregate in a receive slot): (message offset, buffer, payload's place in it).
    fn aggregates(
        data: &[u8],
        seg: usize,
        per_buffer: usize,
        slot: usize,
    ) -> Vec<(usize, Bytes, Range<usize>)> {
        let mut out = Vec::new();
        for run in (0..data.len()).step_by(seg * per_buffer) {
            let (mut buf, mut places) = (Vec::new(), Vec::new());
            for at in (run..data.len().min(run + seg * per_buffer)).step_by(seg) {
                buf.extend_from_slice(&[0xee; 56]);
                let end = (at + seg).min(data.len());
                places.push((at, buf.len()..buf.len() + end - at));
                buf.extend_from_slice(&data[at..end]);
            }
            buf.resize(buf.len().max(slot), 0);
            let buf = Bytes::from(buf);
            out.extend(places.into_iter().map(|(at, r)| (at, buf.clone(), r)));
        }
        out
    }

    /// Write every packet of `packets` into a new message of `data.len()` bytes, settle
    /// it, and check its bytes.
    fn receive_all(data: &[u8], packets: &[(usize, Bytes, Range<usize>)]) -> MessageBuf {
        let mut pool = BufferPool::new(64 * 1024, 10);
        let mut m = MessageBuf::new(data.len(), &mut pool, Received::copied(&[]), true);
        for (at, owner, r) in packets {
            let bytes = &owner[r.clone()];
            let data = Received {
                bytes,
                owner: Some(owner),
            };
            assert!(data.may_keep());
            assert!(m.write(*at, data, &mut pool));
        }
        m.settle();
        assert_eq!(m, data);
        m
    }

    #[test]
    fn runs_of_short_packets_are_kept_where_they_fill_their_buffer() {
        let data: Vec<u8> = (0..300_000).map(|i| (i % 251) as u8).collect();
        let inside = |packets: &[(usize, Bytes, Range<usize>)], c: &[u8]| {
            packets
                .iter()
                .any(|(_, b, _)| b.as_ptr_range().contains(&c.as_ptr()))
        };
        // 1,416-byte payloads in aggregates of 40 packets (57 KB) in 64 KiB slots: every
        // piece stays where it arrived.
        let packets = aggregates(&data, 1416, 40, 64 * 1024);
        let m = receive_all(&data, &packets);
        assert_eq!(m.chunks().count(), packets.len());
        assert!(
            m.chunks().all(|c| inside(&packets, c)),
            "a piece was copied"
        );
        // Aggregates of 4 packets in 64 KiB slots (a ninth of each kept): each is weighed
        // when the next one comes, the last when the message is settled. Every piece is
        // then a copy, and no slot is held.
        let packets = aggregates(&data, 1416, 4, 64 * 1024);
        let m = receive_all(&data, &packets);
        assert!(
            !m.chunks().any(|c| inside(&packets, c)),
            "a piece still pins its slot"
        );
        let mut slots: Vec<Bytes> = packets.into_iter().map(|(_, b, _)| b).collect();
        slots.dedup_by(|a, b| a.as_ptr() == b.as_ptr());
        assert_eq!(slots.len(), data.len().div_ceil(4 * 1416));
        assert!(
            slots.iter().all(Bytes::is_unique),
            "the message holds a slot"
        );
        drop(m);
    }
}
