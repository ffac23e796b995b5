//! Receive buffers: where incoming messages are assembled and how the application holds
//! them.
//!
//! A message of up to one bpage (`Config::bpage_size`, 64 KiB) lives in one contiguous
//! chunk of exactly its length. A longer message lives in whole bpages taken from the
//! endpoint's page pool; when the application releases the message, the pages go back to
//! the pool and are reused, so steady large-message traffic stops allocating.

/// The bytes of a received message.
///
/// Contiguous for messages up to one bpage ([`as_slice`](Self::as_slice) is `Some`); a
/// sequence of bpage-sized chunks otherwise ([`chunks`](Self::chunks)). Give it back with
/// `Endpoint::release` when done, so the space counts as free again.
#[derive(Debug, Clone, Default)]
pub struct MessageBuf {
    storage: Storage,
    len: usize,
    page: usize,
}

/// One exact-size chunk (one allocation) for short messages; whole pages for long ones.
#[derive(Debug, Clone)]
enum Storage {
    One(Box<[u8]>),
    Pages(Vec<Box<[u8]>>),
}

impl Default for Storage {
    fn default() -> Self {
        Storage::One(Box::default())
    }
}

impl MessageBuf {
    /// A buffer for a message of `len` bytes whose first bytes are `head` (the first
    /// packet, when it starts the message; may be empty). A one-chunk message is built
    /// from `head` directly, so the common one-packet message is copied once and never
    /// zeroed.
    pub(crate) fn new(
        len: usize,
        page: usize,
        pool: &mut Vec<Box<[u8]>>,
        head: &[u8],
    ) -> MessageBuf {
        let storage = if len <= page {
            let head = &head[..head.len().min(len)];
            let mut v = Vec::with_capacity(len);
            v.extend_from_slice(head);
            v.resize(len, 0);
            Storage::One(v.into_boxed_slice())
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
        if len > page && !head.is_empty() {
            buf.write(0, &head[..head.len().min(len)]);
        }
        buf
    }

    /// Copy `bytes` in at message offset `at` (the caller checked it fits).
    pub(crate) fn write(&mut self, mut at: usize, mut bytes: &[u8]) {
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
        }
    }

    /// The bytes, chunk by chunk, in order.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let pages: &[Box<[u8]>] = match &self.storage {
            Storage::One(b) => std::slice::from_ref(b),
            Storage::Pages(p) => p,
        };
        let mut left = self.len;
        pages.iter().map(move |c| {
            let n = c.len().min(left);
            left -= n;
            &c[..n]
        })
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
        let b = MessageBuf::new(5, 64, &mut pool, &[1, 2, 3]);
        assert_eq!(b, [1, 2, 3, 0, 0]);
        // A head longer than the message is cut to it.
        assert_eq!(MessageBuf::new(2, 64, &mut pool, &[9, 8, 7]), [9, 8]);
        // Pages: the head lands at offset 0, across a page boundary.
        let head: Vec<u8> = (1..=70).collect();
        let big = MessageBuf::new(100, 64, &mut pool, &head);
        let mut want = head.clone();
        want.resize(100, 0);
        assert_eq!(big, want);
    }

    #[test]
    fn small_messages_are_contiguous_large_ones_paged_and_recycled() {
        let mut pool = Vec::new();
        let mut small = MessageBuf::new(100, 64, &mut pool, &[]);
        small.write(0, &[7; 100][..64]);
        assert!(small.as_slice().is_none() || small.len() <= 64);
        let mut b = MessageBuf::new(40, 64, &mut pool, &[]);
        b.write(10, &[1; 30]);
        assert_eq!(b.as_slice().unwrap()[9..11], [0, 1]);

        let data: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        let mut big = MessageBuf::new(200, 64, &mut pool, &[]);
        big.write(0, &data[..50]);
        big.write(50, &data[50..130]); // spans pages
        big.write(130, &data[130..]);
        assert!(big.as_slice().is_none());
        assert_eq!(
            big.chunks().map(<[u8]>::len).collect::<Vec<_>>(),
            [64, 64, 64, 8]
        );
        assert_eq!(big, data);
        assert_eq!(big.to_vec(), data);
        big.recycle(&mut pool, 10);
        assert_eq!(pool.len(), 4);
        let again = MessageBuf::new(130, 64, &mut pool, &[]);
        assert_eq!(pool.len(), 1);
        assert_eq!(again.len(), 130);
    }
}
