//! Where each live client RPC is, by id, without hashing.
//!
//! The endpoint hands out client ids in increasing steps of 2 and every id it hands out
//! becomes an RPC at once, so the live ones are found in a ring indexed by
//! `(id - first) / 2`, which spans from the oldest live id to the newest. An RPC that
//! outlives [`RING_SPAN`] newer ones moves to a hash map, so a single slow RPC cannot
//! make the ring grow without bound; the ring then starts after it.

use rustc_hash::FxHashMap;
use std::collections::VecDeque;

/// Most ids the ring spans.
const RING_SPAN: usize = 4096;
/// A ring slot whose RPC is gone.
const VACANT: usize = usize::MAX;

/// Client RPC handles by id.
#[derive(Debug, Default)]
pub(crate) struct ClientIds {
    /// The id of `ring[0]`.
    first: u64,
    /// Handles of ids `first`, `first + 2`, ...; [`VACANT`] for freed ones. Never starts
    /// with a vacant slot.
    ring: VecDeque<usize>,
    /// Live RPCs outside the ring.
    old: FxHashMap<u64, usize>,
    len: usize,
}

impl ClientIds {
    /// Live RPCs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Index of `id` in the ring, if it is within it.
    #[inline]
    fn slot(&self, id: u64) -> Option<usize> {
        let d = id.wrapping_sub(self.first);
        let i = (d / 2) as usize;
        (d % 2 == 0 && d / 2 < self.ring.len() as u64).then_some(i)
    }

    /// Record RPC `h` with id `id` (ids come in increasing order; any other goes to the
    /// map). Replaces an entry for `id`, as a map would.
    pub fn insert(&mut self, id: u64, h: usize) {
        if self.get(id).is_some() {
            self.remove(id);
        }
        self.len += 1;
        let next = self.first.wrapping_add(2 * self.ring.len() as u64);
        let gap = id.wrapping_sub(next);
        if self.ring.is_empty() {
            self.first = id;
        } else if id < next || gap % 2 != 0 || gap / 2 >= RING_SPAN as u64 {
            if id < next || gap % 2 != 0 {
                self.old.insert(id, h);
                return;
            }
            // Far ahead: everything in the ring is old now.
            self.retire(self.ring.len());
            self.first = id;
        } else {
            self.ring.extend((0..gap / 2).map(|_| VACANT));
        }
        self.ring.push_back(h);
        if self.ring.len() > RING_SPAN {
            self.retire(self.ring.len() - RING_SPAN);
        }
    }

    /// Moves the first `n` slots' RPCs to the map.
    fn retire(&mut self, n: usize) {
        for _ in 0..n {
            if let Some(h) = self.ring.pop_front().filter(|&h| h != VACANT) {
                self.old.insert(self.first, h);
            }
            self.first = self.first.wrapping_add(2);
        }
        self.trim();
    }

    /// Drops vacant slots from the front.
    fn trim(&mut self) {
        while self.ring.front() == Some(&VACANT) {
            self.ring.pop_front();
            self.first = self.first.wrapping_add(2);
        }
    }

    /// The handle of the RPC with id `id`.
    #[inline]
    pub fn get(&self, id: u64) -> Option<usize> {
        match self.slot(id) {
            Some(i) => Some(self.ring[i]).filter(|&h| h != VACANT),
            None if self.old.is_empty() => None,
            None => self.old.get(&id).copied(),
        }
    }

    /// Give back the memory of a ring or map left large by many RPCs at once.
    pub fn shrink(&mut self) {
        if self.ring.capacity() > 4 * self.ring.len().max(64) {
            self.ring.shrink_to(2 * self.ring.len());
        }
        if self.old.capacity() > 4 * self.old.len().max(64) {
            self.old.shrink_to(2 * self.old.len());
        }
    }

    /// Forget the RPC with id `id`; returns its handle.
    pub fn remove(&mut self, id: u64) -> Option<usize> {
        let h = match self.slot(id) {
            // The oldest (usually the only one): the ring now starts after it.
            Some(0) => {
                let h = self.ring.pop_front();
                self.first = self.first.wrapping_add(2);
                self.trim();
                h
            }
            Some(i) => Some(std::mem::replace(&mut self.ring[i], VACANT)).filter(|&h| h != VACANT),
            None => self.old.remove(&id),
        };
        self.len -= h.is_some() as usize;
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Against a map, with ids handed out as the endpoint does (increasing by 2,
        /// from any base) and freed in any order, sometimes after more than RING_SPAN
        /// newer ones.
        #[test]
        fn client_ids_behave_as_a_map(
            base in any::<u64>(),
            ops in prop::collection::vec((0u8..4, any::<u16>()), 1..400),
            big_bursts in any::<bool>(),
        ) {
            let mut ids = ClientIds::default();
            let mut map = BTreeMap::new();
            let mut next = base & !1;
            for (i, (op, pick)) in ops.into_iter().enumerate() {
                match op {
                    0 | 1 => {
                        // Sometimes many RPCs at once, so that some outlive RING_SPAN.
                        let n = if big_bursts && pick % 7 == 0 { RING_SPAN + 3 } else { 1 };
                        for _ in 0..n {
                            ids.insert(next, i);
                            map.insert(next, i);
                            next = next.wrapping_add(2);
                        }
                    }
                    2 if !map.is_empty() => {
                        let id = *map.keys().nth(pick as usize % map.len()).unwrap();
                        prop_assert_eq!(ids.remove(id), map.remove(&id));
                    }
                    _ => {
                        // A look-up or removal of an id that may not be live.
                        let id = next.wrapping_sub(2 * (pick as u64 % 50)).wrapping_add(pick as u64 % 3);
                        prop_assert_eq!(ids.get(id), map.get(&id).copied());
                        if pick % 5 == 0 {
                            prop_assert_eq!(ids.remove(id), map.remove(&id));
                        }
                    }
                }
                prop_assert_eq!(ids.len(), map.len());
                prop_assert!(ids.ring.len() <= RING_SPAN);
                prop_assert!(ids.ring.front() != Some(&VACANT));
            }
            for (&id, &h) in &map {
                prop_assert_eq!(ids.get(id), Some(h));
            }
        }
    }

    #[test]
    fn ids_out_of_order_or_far_ahead_still_work() {
        let mut ids = ClientIds::default();
        ids.insert(100, 1);
        ids.insert(96, 2); // below the ring: goes to the map
        ids.insert(101, 3); // odd: the map
        ids.insert(100 + 2 * RING_SPAN as u64 * 3, 4); // far ahead: a new ring
        ids.insert(100, 5); // replaces
        for (id, h) in [
            (100, 5),
            (96, 2),
            (101, 3),
            (100 + 2 * RING_SPAN as u64 * 3, 4),
        ] {
            assert_eq!(ids.get(id), Some(h), "{id}");
        }
        assert_eq!(ids.len(), 4);
        assert_eq!(ids.get(98), None);
        assert_eq!(ids.remove(100), Some(5));
        assert_eq!(ids.remove(100), None);
        assert_eq!(ids.len(), 3);
    }
}
