//! The endpoint's pool of receive buffers: whole bpages, and the chunks of short
//! messages by size, kept from released messages for the next ones.

/// Longest message whose chunk is pooled for reuse.
pub(super) const SMALL_MAX: usize = 4096;
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
pub(super) fn small_keep(class: usize) -> usize {
    (SMALL_KEEP_BYTES / (SMALL_MIN << class)).max(SMALL_KEEP_MIN)
}

/// Most chunks of size class `class` kept while they are used.
pub(super) fn small_keep_max(class: usize) -> usize {
    (SMALL_KEEP_MAX_BYTES / (SMALL_MIN << class)).max(SMALL_KEEP_MIN)
}

/// Buffers of released messages, kept for the next ones: whole bpages, and the chunks of
/// short messages by size.
#[derive(Debug)]
pub(crate) struct BufferPool {
    /// The bpage size.
    page: usize,
    /// Pages of `page` bytes' capacity.
    pub(super) pages: Vec<Vec<u8>>,
    /// Most pages kept.
    keep_pages: usize,
    /// `small[i]` holds chunks of `SMALL_MIN << i` bytes' capacity.
    pub(super) small: [Vec<Vec<u8>>; SMALL_CLASSES],
    /// Fewest pages held since the last [`trim`](Self::trim): that many went unused.
    low_water: usize,
    /// Fewest chunks of each size held since the last `trim`.
    small_low_water: [usize; SMALL_CLASSES],
}

impl BufferPool {
    /// The bpage size.
    #[inline]
    pub(super) fn page_size(&self) -> usize {
        self.page
    }

    /// Keep the chunk of a released short message for the next one. Only chunks of a
    /// pooled size (a power of two from `SMALL_MIN` to `SMALL_MAX`): one made for a longer
    /// message has its exact length, which may be anything.
    #[inline(always)]
    pub(super) fn give_chunk(&mut self, chunk: Vec<u8>) {
        let len = chunk.capacity();
        if len.is_power_of_two() && (SMALL_MIN..=SMALL_MAX).contains(&len) {
            let i = (len / SMALL_MIN).trailing_zeros() as usize;
            if self.small[i].len() < small_keep_max(i) {
                self.small[i].push(chunk);
            }
        }
    }

    /// Keep the whole bpages of a released long message, up to `keep_pages`.
    pub(super) fn give_pages(&mut self, pages: Vec<Vec<u8>>) {
        let room = self.keep_pages.saturating_sub(self.pages.len());
        let page = self.page;
        let taken = pages.into_iter().filter(|p| p.capacity() == page);
        self.pages.extend(taken.take(room));
    }

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
    pub(super) fn class(len: usize) -> Option<usize> {
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
    pub(super) fn chunk(&mut self, len: usize, head: &[u8]) -> Vec<u8> {
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
    pub(super) fn page(&mut self) -> Vec<u8> {
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
