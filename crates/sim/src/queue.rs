//! The event queue: a radix heap over event times.
//!
//! A discrete-event simulation never schedules into the past, so the keys it pops never
//! decrease. A radix heap exploits exactly that: an item lives in the bucket of the
//! highest bit where its time differs from the last time popped; a push is an append, and
//! a pop redistributes at most one bucket, whose items each move to lower buckets (at most
//! once per bit). No comparisons between items, no sifting.
//!
//! Ties come out in the order they were scheduled: items with equal times always share a
//! bucket (the bucket is a function of the item's time and the last time), every bucket
//! keeps its items in arrival order, a redistribution moves them in order, and bucket 0
//! (times equal to the last) is first in, first out. So the order is exactly
//! `(time, order of scheduling)`, without storing a sequence number.

use std::collections::VecDeque;

/// A monotone priority queue of time-keyed items, FIFO among equal times.
pub(crate) struct EventQueue<T> {
    last: u64,
    /// Items whose time equals `last`, in order of scheduling.
    now: VecDeque<T>,
    /// `buckets[i]`: items whose time's highest bit differing from `last` is bit `i`.
    buckets: [Vec<(u64, T)>; 64],
    /// Bit i set = `buckets[i]` is not empty.
    occupied: u64,
    len: usize,
}

impl<T> EventQueue<T> {
    pub fn new() -> EventQueue<T> {
        EventQueue {
            last: 0,
            now: VecDeque::new(),
            buckets: std::array::from_fn(|_| Vec::new()),
            occupied: 0,
            len: 0,
        }
    }

    /// Schedule `item` at `time` (not before the last time popped).
    pub fn push(&mut self, time: u64, item: T) {
        debug_assert!(time >= self.last, "scheduled into the past");
        self.len += 1;
        if time == self.last {
            self.now.push_back(item);
        } else {
            let b = 63 - (time ^ self.last).leading_zeros() as usize;
            self.buckets[b].push((time, item));
            self.occupied |= 1 << b;
        }
    }

    /// Time of the earliest item, without disturbing the queue (so items may still be
    /// pushed at any time from the last one popped on).
    pub fn peek_time(&self) -> Option<u64> {
        if !self.now.is_empty() {
            return Some(self.last);
        }
        let i = self.occupied.trailing_zeros() as usize;
        self.buckets.get(i)?.iter().map(|(t, _)| *t).min()
    }

    /// Put back the item just popped, in front of everything (it stays the earliest).
    pub fn unpop(&mut self, time: u64, item: T) {
        debug_assert_eq!(time, self.last, "only the item just popped goes back");
        self.now.push_front(item);
        self.len += 1;
    }

    /// Take the earliest item and its time.
    pub fn pop(&mut self) -> Option<(u64, T)> {
        if self.now.is_empty() {
            self.refill()?;
        }
        let item = self.now.pop_front()?;
        self.len -= 1;
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

    /// Items waiting.
    #[allow(dead_code)]
    pub fn len(&self) -> usize {
        self.len
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

    #[test]
    fn matches_a_sorted_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut q = EventQueue::new();
        let mut reference = std::collections::BTreeSet::new();
        let (mut now, mut seq) = (0u64, 0u64);
        for _ in 0..20_000 {
            if rng.gen_bool(0.55) {
                let t = now + rng.gen_range(0..5_000u64) * rng.gen_range(0..3u64);
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
        }
        assert_eq!(q.len(), reference.len());
    }
}
