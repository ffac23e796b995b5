//! The event queue: a timing wheel for the near future, a radix heap for the far.
//!
//! Almost every event is scheduled a few microseconds ahead (a packet's serialization,
//! a hop, a host's delay), and at full load there are one (W5) to six (W1) events per
//! nanosecond of simulated time. The wheel has a slot per [`WIDTH`] nanoseconds for the
//! next [`SLOTS`] of them: a push appends to its slot (one move), and a slot is sorted by
//! time when the clock reaches it (a few to a few dozen items: with 32 ns slots W1's
//! slots held ~200, and the sort took a tenth of its instructions). Events further ahead
//! (timer ticks, some arrivals) wait in a radix heap and move into the wheel when their
//! slot comes within its reach.
//!
//! Ties come out in the order they were scheduled, as `(time, order of scheduling)`:
//! the sort is stable; the far items of a slot enter it, in their own order, at the
//! moment the slot comes within reach, before anything can be pushed to it directly;
//! and a push into the slot being taken goes behind every item of its time already
//! there.
//!
//! The radix heap: a discrete-event simulation never schedules into the past, so the
//! keys it pops never decrease. An item lives in the bucket of the highest bit where its
//! time differs from the last time popped; a push is an append, and a pop redistributes
//! at most one bucket, whose items each move to lower buckets (at most once per bit). Ties
//! come out in scheduling order: items with equal times always share a bucket, every
//! bucket keeps its items in arrival order, a redistribution moves them in order, and
//! bucket 0 (times equal to the last) is first in, first out.

use std::collections::VecDeque;

/// A monotone priority queue of time-keyed items, FIFO among equal times: the far
/// future of [`EventQueue`].
pub(crate) struct RadixHeap<T> {
    last: u64,
    /// Items whose time equals `last`, in order of scheduling.
    now: VecDeque<T>,
    /// `buckets[i]`: items whose time's highest bit differing from `last` is bit `i`.
    buckets: [Vec<(u64, T)>; 64],
    /// Bit i set = `buckets[i]` is not empty.
    occupied: u64,
}

impl<T> RadixHeap<T> {
    pub fn new() -> RadixHeap<T> {
        RadixHeap {
            last: 0,
            now: VecDeque::new(),
            buckets: std::array::from_fn(|_| Vec::new()),
            occupied: 0,
        }
    }

    /// Schedule `item` at `time` (not before the last time popped).
    pub fn push(&mut self, time: u64, item: T) {
        debug_assert!(time >= self.last, "scheduled into the past");
        if time == self.last {
            self.now.push_back(item);
        } else {
            let b = 63 - (time ^ self.last).leading_zeros() as usize;
            self.buckets[b].push((time, item));
            self.occupied |= 1 << b;
        }
    }

    /// Time of the earliest item, without disturbing the heap.
    pub fn peek_min(&self) -> Option<u64> {
        if !self.now.is_empty() {
            return Some(self.last);
        }
        let i = self.occupied.trailing_zeros() as usize;
        self.buckets.get(i)?.iter().map(|(t, _)| *t).min()
    }

    /// Take the earliest item and its time.
    pub fn pop(&mut self) -> Option<(u64, T)> {
        if self.now.is_empty() {
            self.refill()?;
        }
        let item = self.now.pop_front()?;
        Some((self.last, item))
    }

    /// Advance `last` to the earliest time and move its items to `now`.
    fn refill(&mut self) -> Option<()> {
        if self.occupied == 0 {
            return None;
        }
        let i = self.occupied.trailing_zeros() as usize;
        self.occupied &= !(1 << i);
        let mut b = std::mem::take(&mut self.buckets[i]);
        let min = b.iter().map(|(t, _)| *t).min()?;
        self.last = min;
        for (t, item) in b.drain(..) {
            if t == min {
                self.now.push_back(item);
            } else {
                let j = 63 - (t ^ min).leading_zeros() as usize;
                self.buckets[j].push((t, item));
                self.occupied |= 1 << j;
            }
        }
        // Keep the emptied bucket's capacity.
        self.buckets[i] = b;
        Some(())
    }
}

/// log2 of a wheel slot's width in nanoseconds.
const SHIFT: u32 = 2;
/// Nanoseconds per wheel slot.
pub(crate) const WIDTH: u64 = 1 << SHIFT;
/// Slots in the wheel (a power of two): it reaches `SLOTS * WIDTH` = 16 us ahead, a
/// few packets' hops. A wider reach sends fewer events through the radix heap but costs
/// more than it saves: with 65,536 slots (262 us) the wheel's slot headers alone were
/// 1.5 MB, and sweeping them missed the caches at every push and every slot taken
/// (W4 and W5 in paper mode ran at 6-7 M events/s against 9.3-9.9 M with 4,096; W1,
/// whose events are all close, the same either way).
pub(crate) const SLOTS: usize = 1 << 12;

/// A monotone priority queue of time-keyed items, FIFO among equal times.
pub(crate) struct EventQueue<T> {
    /// Time of the last item popped: no item may be scheduled before it.
    last: u64,
    /// The slot number (`time >> SHIFT`) being taken; the wheel holds slot numbers
    /// `base .. base + SLOTS`, slot number `n` at `slots[n % SLOTS]`.
    base: u64,
    slots: Vec<Vec<(u64, T)>>,
    /// Bit `i` set: `slots[i]` is not empty.
    occupied: Vec<u64>,
    /// The slot being taken, sorted; its items from `cursor` on are still to come.
    cursor: usize,
    /// Items beyond the wheel's reach, and the earliest time among them (`u64::MAX`
    /// for none): kept here because the heap finds it by a scan.
    far: RadixHeap<T>,
    far_min: u64,
    len: usize,
    /// Room for a slot's items while it is sorted (see [`sort_slot`]).
    scratch: Vec<(u64, T)>,
}

impl<T: Copy> EventQueue<T> {
    pub fn new() -> EventQueue<T> {
        EventQueue {
            last: 0,
            base: 0,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            occupied: vec![0; SLOTS / 64],
            cursor: 0,
            far: RadixHeap::new(),
            far_min: u64::MAX,
            len: 0,
            scratch: Vec::new(),
        }
    }

    /// Schedule `item` at `time` (not before the last time popped).
    #[inline]
    pub fn push(&mut self, time: u64, item: T) {
        debug_assert!(time >= self.last, "scheduled into the past");
        self.len += 1;
        let n = time >> SHIFT;
        if n <= self.base {
            // The slot being taken (or, after a peek moved on, before it): in order,
            // behind the items of the same time.
            let slot = &mut self.slots[(self.base as usize) % SLOTS];
            let at = self.cursor + slot[self.cursor..].partition_point(|&(t, _)| t <= time);
            slot.insert(at, (time, item));
        } else if n < self.base + SLOTS as u64 {
            let i = n as usize % SLOTS;
            self.slots[i].push((time, item));
            self.occupied[i / 64] |= 1 << (i % 64);
        } else {
            self.far.push(time, item);
            self.far_min = self.far_min.min(time);
        }
    }

    /// Time of the earliest item (the queue may move on to it; items may still be pushed
    /// at any time from the last one popped on).
    pub fn peek_time(&mut self) -> Option<u64> {
        self.ready()?;
        let slot = &self.slots[(self.base as usize) % SLOTS];
        Some(slot[self.cursor].0)
    }

    /// Put back the item just popped, in front of everything (it stays the earliest).
    pub fn unpop(&mut self, time: u64, item: T) {
        debug_assert_eq!(time, self.last, "only the item just popped goes back");
        let _ = item;
        debug_assert!(self.cursor > 0, "nothing was popped from this slot");
        self.cursor -= 1;
        self.len += 1;
    }

    /// Take the earliest item and its time.
    #[inline]
    pub fn pop(&mut self) -> Option<(u64, T)> {
        let slot = &self.slots[(self.base as usize) % SLOTS];
        let next = match slot.get(self.cursor) {
            Some(&e) => e,
            None => {
                self.ready()?;
                self.slots[(self.base as usize) % SLOTS][self.cursor]
            }
        };
        self.cursor += 1;
        self.len -= 1;
        self.last = next.0;
        Some(next)
    }

    /// Make the slot being taken one with items still to come, moving on through the
    /// wheel (and the far items into it) as needed; `None` when the queue is empty.
    fn ready(&mut self) -> Option<()> {
        loop {
            let i = (self.base as usize) % SLOTS;
            if self.cursor < self.slots[i].len() {
                return Some(());
            }
            // This slot is done.
            self.slots[i].clear();
            self.occupied[i / 64] &= !(1 << (i % 64));
            self.cursor = 0;
            let next = match self.next_occupied() {
                Some(n) => n,
                None if self.far_min == u64::MAX => return None,
                None => (self.far_min >> SHIFT).max(self.base + 1),
            };
            self.base = next;
            // Far items whose slots came within reach enter them now, ahead of any
            // later push.
            let reach = (self.base + SLOTS as u64) * WIDTH;
            if self.far_min < reach {
                while self.far.peek_min().is_some_and(|t| t < reach) {
                    let (t, item) = self.far.pop().expect("peeked");
                    let j = (t >> SHIFT) as usize % SLOTS;
                    self.slots[j].push((t, item));
                    self.occupied[j / 64] |= 1 << (j % 64);
                }
                self.far_min = self.far.peek_min().unwrap_or(u64::MAX);
            }
            let j = (self.base as usize) % SLOTS;
            sort_slot(&mut self.slots[j], &mut self.scratch);
        }
    }

    /// The first slot number after `base`, within the wheel, with items.
    fn next_occupied(&self) -> Option<u64> {
        let start = (self.base as usize + 1) % SLOTS;
        let words = SLOTS / 64;
        // The word holding `start`, from its bit on; then whole words around the
        // wheel; then the same word's bits before `start`.
        let (w0, b0) = (start / 64, start % 64);
        let first = self.occupied[w0] & (!0u64 << b0);
        let found = if first != 0 {
            Some(w0 * 64 + first.trailing_zeros() as usize)
        } else {
            (1..=words).find_map(|k| {
                let w = (w0 + k) % words;
                let mut bits = self.occupied[w];
                if k == words {
                    bits &= !(!0u64 << b0); // only the bits before `start`
                }
                (bits != 0).then(|| w * 64 + bits.trailing_zeros() as usize)
            })
        }?;
        let ahead = (found + SLOTS - start) % SLOTS;
        Some(self.base + 1 + ahead as u64)
    }

    /// Items waiting.
    #[allow(dead_code)]
    pub fn len(&self) -> usize {
        self.len
    }
}

/// Sort a slot's items by time, equal times in the order they were scheduled: a
/// counting sort over the [`WIDTH`] times a slot spans, through `scratch`. (The library's
/// stable sort allocates a buffer for each slot of more than 20 items, and W1 at 80% load
/// fills most slots past that: 3% of the simulation's instructions, in sorting and
/// `malloc`.)
fn sort_slot<T: Copy>(slot: &mut [(u64, T)], scratch: &mut Vec<(u64, T)>) {
    let Some(&(first, _)) = slot.first() else {
        return;
    };
    let lo = first & !(WIDTH - 1);
    let mut counts = [0usize; WIDTH as usize];
    for &(t, _) in slot.iter() {
        debug_assert_eq!(t >> SHIFT, lo >> SHIFT, "an item in the wrong slot");
        counts[(t - lo) as usize] += 1;
    }
    if counts.contains(&slot.len()) {
        return; // one time: already in order
    }
    let mut next = [0usize; WIDTH as usize];
    let mut sum = 0;
    for (n, c) in next.iter_mut().zip(counts) {
        *n = sum;
        sum += c;
    }
    scratch.clear();
    scratch.extend_from_slice(slot);
    for &item in scratch.iter() {
        let k = (item.0 - lo) as usize;
        slot[next[k]] = item;
        next[k] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn pops_in_time_then_push_order() {
        let mut q = EventQueue::new();
        q.push(5, 'a');
        q.push(3, 'b');
        q.push(5, 'c');
        q.push(3, 'd');
        assert_eq!(q.pop(), Some((3, 'b')));
        q.push(3, 'e');
        q.push(4, 'f');
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, [(3, 'd'), (3, 'e'), (4, 'f'), (5, 'a'), (5, 'c')]);
        assert_eq!(q.len(), 0);
    }

    /// Random pushes and pops against a sorted set of (time, push order), with gaps from
    /// nanoseconds to `max_gap` (beyond the wheel's reach, so that far items move in).
    fn against_reference(seed: u64, max_gap: u64) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut q = EventQueue::new();
        let mut reference = std::collections::BTreeSet::new();
        let (mut now, mut seq) = (0u64, 0u64);
        for _ in 0..20_000 {
            if rng.gen_bool(0.55) {
                let t = match rng.gen_range(0..4) {
                    0 => now,
                    1 => now + rng.gen_range(0..3 * WIDTH),
                    2 => now + rng.gen_range(0..5_000u64) * rng.gen_range(0..3u64),
                    _ => now + rng.gen_range(0..max_gap),
                };
                seq += 1;
                q.push(t, seq);
                reference.insert((t, seq));
            } else if let Some(want) = reference.pop_first() {
                assert_eq!(q.peek_time(), Some(want.0));
                assert_eq!(q.pop(), Some(want));
                if rng.gen_bool(0.1) {
                    q.unpop(want.0, want.1);
                    assert_eq!(q.pop(), Some(want));
                }
                now = want.0;
            }
            assert_eq!(q.len(), reference.len());
        }
        while let Some(want) = reference.pop_first() {
            assert_eq!(q.pop(), Some(want));
        }
        assert_eq!(q.pop(), None);
        assert_eq!(q.peek_time(), None);
    }

    #[test]
    fn matches_a_sorted_reference() {
        against_reference(3, 5_000);
        // Gaps past the wheel's reach: far items move in, and an empty wheel jumps.
        against_reference(4, 3 * SLOTS as u64 * WIDTH);
        against_reference(5, 1 << 40);
    }

    #[test]
    fn a_slot_sorts_by_time_keeping_the_order_of_equal_times() {
        let base = 40 * WIDTH;
        let times = [3, 1, 3, 0, 1, 2, 0, 3, 2, 1];
        let mut slot: Vec<(u64, usize)> = times
            .iter()
            .enumerate()
            .map(|(i, &d)| (base + d, i))
            .collect();
        let mut want = slot.clone();
        want.sort_by_key(|&(t, _)| t);
        sort_slot(&mut slot, &mut Vec::new());
        assert_eq!(slot, want);
        // One time only, and a single item, are left as they are.
        let mut same = vec![(base + 2, 'a'), (base + 2, 'b')];
        sort_slot(&mut same, &mut Vec::new());
        assert_eq!(same, [(base + 2, 'a'), (base + 2, 'b')]);
    }

    #[test]
    fn a_push_after_a_peek_that_moved_on_comes_first() {
        let mut q = EventQueue::new();
        q.push(10, 'a');
        assert_eq!(q.pop(), Some((10, 'a')));
        q.push(1_000_000, 'b');
        assert_eq!(q.peek_time(), Some(1_000_000));
        q.push(20, 'c'); // after the last popped, before what the peek found
        q.push(20, 'd');
        assert_eq!(q.pop(), Some((20, 'c')));
        assert_eq!(q.pop(), Some((20, 'd')));
        assert_eq!(q.pop(), Some((1_000_000, 'b')));
    }
}
