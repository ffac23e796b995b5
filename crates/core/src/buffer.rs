//! Receive buffers: where incoming messages are assembled and how the application holds
//! them.
//!
//! A message of up to one bpage (`Config::bpage_size`, 64 KiB) lives in one contiguous
//! chunk of exactly its length. A longer message lives in whole bpages taken from the
//! endpoint's page pool; when the application releases the message, the pages go back to
//! the pool and are reused, so steady large-message traffic stops allocating.
//!
//! A longer message whose packets arrive in a buffer the caller shares with the engine
//! (`Endpoint::handle_shared_datagram`) and are long (at least [`KEEP_MIN`] bytes of
//! payload, as over loopback or jumbo frames with GRO) is instead kept as the packets'
//! own payloads, by reference: the bytes are then copied once, by the kernel, and not a
//! second time into pages.

use bytes::Bytes;

/// Shortest packet payload kept by reference rather than copied. A kept payload holds its
/// whole receive buffer (64 KiB in the runtime) until the message is released, so short
/// ones are copied: this bounds the memory held for each byte of message.
pub const KEEP_MIN: usize = 8192;

/// The bytes of a received message.
///
/// Contiguous for messages up to one bpage ([`as_slice`](Self::as_slice) is `Some`); a
/// sequence of chunks otherwise ([`chunks`](Self::chunks)): bpage-sized pages, or the
/// payloads of the packets the message arrived in. Give it back with `Endpoint::release`
/// when done, so the space counts as free again.
#[derive(Debug, Clone, Default)]
pub struct MessageBuf {
    storage: Storage,
    len: usize,
    page: usize,
}

/// One exact-size chunk (one allocation) for short messages; whole pages, or packet
/// payloads kept by reference, for long ones.
#[derive(Debug, Clone)]
enum Storage {
    One(Box<[u8]>),
    Pages(Vec<Box<[u8]>>),
    /// (message offset, bytes), sorted by offset and not overlapping; they cover the
    /// message once it is complete.
    Kept(Vec<Piece>),
}

/// Part of a message kept by reference: its offset in the message and its bytes.
type Piece = (usize, Bytes);

impl Default for Storage {
    fn default() -> Self {
        Storage::One(Box::default())
    }
}

impl MessageBuf {
    /// A buffer for a message of `len` bytes whose first bytes are `head` (the first
    /// packet, when it starts the message; may be empty). A one-chunk message is built
    /// from `head` directly, so the common one-packet message is copied once and never
    /// zeroed. `keep`: the packets come in shared buffers and are long, so a long
    /// message keeps them instead of taking pages.
    pub(crate) fn new(
        len: usize,
        page: usize,
        pool: &mut Vec<Box<[u8]>>,
        head: Received<'_>,
        keep: bool,
    ) -> MessageBuf {
        let storage = if len <= page {
            let head = &head.bytes[..head.bytes.len().min(len)];
            let mut v = Vec::with_capacity(len);
            v.extend_from_slice(head);
            v.resize(len, 0);
            Storage::One(v.into_boxed_slice())
        } else if keep {
            Storage::Kept(Vec::with_capacity(len.div_ceil(page) + 1))
        } else {
            Storage::Pages(
                (0..len.div_ceil(page))
                    .map(|_| {
                        pool.pop()
                            .unwrap_or_else(|| vec![0u8; page].into_boxed_slice())
                    })
                    .collect(),
            )
        };
        let mut buf = MessageBuf { storage, len, page };
        if len > page && !head.bytes.is_empty() {
            let n = head.bytes.len().min(len);
            buf.write(
                0,
                Received {
                    bytes: &head.bytes[..n],
                    owner: head.owner,
                },
            );
        }
        buf
    }

    /// Put `data` in at message offset `at` (the caller checked it fits): copied, or for a
    /// message that keeps packets, the parts not already there kept by reference.
    pub(crate) fn write(&mut self, mut at: usize, data: Received<'_>) {
        let mut bytes = data.bytes;
        match &mut self.storage {
            Storage::One(b) => b[at..at + bytes.len()].copy_from_slice(bytes),
            Storage::Pages(pages) => {
                while !bytes.is_empty() {
                    let (i, off) = (at / self.page, at % self.page);
                    let chunk = &mut pages[i][off..];
                    let n = chunk.len().min(bytes.len());
                    chunk[..n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    at += n;
                }
            }
            Storage::Kept(pieces) => keep_new_parts(pieces, at, data),
        }
    }

    /// Hand whole pages back to `pool`, keeping at most `keep` there.
    pub(crate) fn recycle(self, pool: &mut Vec<Box<[u8]>>, keep: usize) {
        if let Storage::Pages(pages) = self.storage {
            let room = keep.saturating_sub(pool.len());
            pool.extend(pages.into_iter().take(room));
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
            Storage::One(b) => Some(&b[..self.len]),
            Storage::Pages(_) => None,
            Storage::Kept(p) => match p.as_slice() {
                [(0, b)] if b.len() == self.len => Some(b),
                _ => None,
            },
        }
    }

    /// The bytes, chunk by chunk, in order.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let (pages, kept): (&[Box<[u8]>], &[Piece]) = match &self.storage {
            Storage::One(b) => (std::slice::from_ref(b), &[]),
            Storage::Pages(p) => (p, &[]),
            Storage::Kept(k) => (&[], k),
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
}

/// Adds the parts of `data` (at message offset `at`) that `pieces` does not yet cover:
/// by reference when `data` is long and shared, else copied. Duplicates (retransmitted
/// bytes) are left out, so the pieces never overlap.
fn keep_new_parts(pieces: &mut Vec<Piece>, at: usize, data: Received<'_>) {
    let end = at + data.bytes.len();
    let piece = |from: usize, to: usize| {
        let part = &data.bytes[from - at..to - at];
        match data.owner {
            Some(o) if data.bytes.len() >= KEEP_MIN => o.slice_ref(part),
            _ => Bytes::copy_from_slice(part),
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

    #[test]
    fn a_buffer_starts_with_the_head_it_is_given() {
        let mut pool = Vec::new();
        // One chunk: the head, then zeros up to the length.
        let b = MessageBuf::new(5, 64, &mut pool, Received::copied(&[1, 2, 3]), false);
        assert_eq!(b, [1, 2, 3, 0, 0]);
        // A head longer than the message is cut to it.
        assert_eq!(
            MessageBuf::new(2, 64, &mut pool, Received::copied(&[9, 8, 7]), false),
            [9, 8]
        );
        // Pages: the head lands at offset 0, across a page boundary.
        let head: Vec<u8> = (1..=70).collect();
        let big = MessageBuf::new(100, 64, &mut pool, Received::copied(&head), false);
        let mut want = head.clone();
        want.resize(100, 0);
        assert_eq!(big, want);
    }

    #[test]
    fn small_messages_are_contiguous_large_ones_paged_and_recycled() {
        let mut pool = Vec::new();
        let mut small = MessageBuf::new(100, 64, &mut pool, Received::copied(&[]), false);
        small.write(0, Received::copied(&[7; 100][..64]));
        assert!(small.as_slice().is_none() || small.len() <= 64);
        let mut b = MessageBuf::new(40, 64, &mut pool, Received::copied(&[]), false);
        b.write(10, Received::copied(&[1; 30]));
        assert_eq!(b.as_slice().unwrap()[9..11], [0, 1]);

        let data: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        let mut big = MessageBuf::new(200, 64, &mut pool, Received::copied(&[]), false);
        big.write(0, Received::copied(&data[..50]));
        big.write(50, Received::copied(&data[50..130])); // spans pages
        big.write(130, Received::copied(&data[130..]));
        assert!(big.as_slice().is_none());
        assert_eq!(
            big.chunks().map(<[u8]>::len).collect::<Vec<_>>(),
            [64, 64, 64, 8]
        );
        assert_eq!(big, data);
        assert_eq!(big.to_vec(), data);
        big.recycle(&mut pool, 10);
        assert_eq!(pool.len(), 4);
        let again = MessageBuf::new(130, 64, &mut pool, Received::copied(&[]), false);
        assert_eq!(pool.len(), 1);
        assert_eq!(again.len(), 130);
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
        let mut pool = Vec::new();
        let first = shared(0, 2 * KEEP_MIN);
        let mut m = MessageBuf::new(len, page, &mut pool, kept(&first), true);
        // Out of order, then a retransmission overlapping both neighbours, then a short
        // tail (copied: shorter than KEEP_MIN).
        let third = shared(3 * KEEP_MIN, 4 * KEEP_MIN + 10);
        m.write(3 * KEEP_MIN, kept(&third));
        let resend = shared(KEEP_MIN, 4 * KEEP_MIN);
        m.write(KEEP_MIN, kept(&resend));
        let tail = shared(4 * KEEP_MIN + 10, len);
        m.write(4 * KEEP_MIN + 10, Received::copied(&tail));
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
        assert!(pool.is_empty(), "no pages taken");
        // A message kept in one packet is contiguous.
        let whole = shared(0, 3 * KEEP_MIN);
        let one = MessageBuf::new(3 * KEEP_MIN, page, &mut pool, kept(&whole), true);
        assert_eq!(one.as_slice(), Some(&data[..3 * KEEP_MIN]));
    }
}
