//! A slab for the RPC records whose `remove` drops the value where it lies.
//!
//! An RPC record is 360 bytes and nothing is taken out of it when it is freed, but the
//! `slab` crate's `remove` returns the value: a copy of all of it for every RPC. Keys are
//! handed out exactly as by `slab` (the most recently freed entry first, else a new one
//! at the end), so handles and the order of iteration are the same as with it.
//!
//! A bitmap says which entries are in use, so that a pass over every value (the timer's,
//! every tick) reads only the entries that hold one: after a burst the slab keeps its
//! largest size while values are scattered over it, and reading every entry cost the
//! timer a cache miss per free one.

use std::ops::{Index, IndexMut};

#[derive(Debug)]
enum Entry<T> {
    Occupied(T),
    /// Free; holds the next free entry (`entries.len()` at the end of the list).
    Vacant(usize),
}

/// Values at stable keys, in reused entries.
#[derive(Debug)]
pub(crate) struct Slots<T> {
    entries: Vec<Entry<T>>,
    /// The first free entry, or `entries.len()`.
    next: usize,
    len: usize,
    /// Bit `k % 64` of word `k / 64` is set while entry `k` holds a value.
    occupied: Vec<u64>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            entries: Vec::new(),
            next: 0,
            len: 0,
            occupied: Vec::new(),
        }
    }
}

impl<T> Slots<T> {
    /// Values held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no value is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Store `value`; returns its key.
    #[cfg(test)]
    pub fn insert(&mut self, value: T) -> usize {
        self.insert_with(|| value)
    }

    /// Store the value `make` returns; returns its key. The value is made where it is
    /// stored: a record passed by value was built on the stack and copied in.
    #[inline]
    pub fn insert_with(&mut self, make: impl FnOnce() -> T) -> usize {
        let key = self.next;
        if key == self.entries.len() {
            self.entries.push(Entry::Occupied(make()));
            self.next = key + 1;
        } else {
            let entry = &mut self.entries[key];
            self.next = match *entry {
                Entry::Vacant(next) => next,
                Entry::Occupied(_) => unreachable!("the free list holds free entries only"),
            };
            *entry = Entry::Occupied(make());
        }
        self.len += 1;
        if self.occupied.len() <= key / 64 {
            self.occupied.resize(key / 64 + 1, 0);
        }
        self.occupied[key / 64] |= 1 << (key % 64);
        key
    }

    /// Drop the value at `key`, in place. Panics if there is none.
    pub fn remove(&mut self, key: usize) {
        let entry = &mut self.entries[key];
        assert!(matches!(entry, Entry::Occupied(_)), "no value at this key");
        *entry = Entry::Vacant(self.next);
        self.next = key;
        self.len -= 1;
        self.occupied[key / 64] &= !(1 << (key % 64));
    }

    /// Words of the bitmap of entries in use: keys `64 * i ..` are in word `i`.
    #[inline]
    pub fn occupied_words(&self) -> usize {
        self.occupied.len()
    }

    /// Word `i` of the bitmap of entries in use (see [`occupied_words`](Self::occupied_words)).
    #[inline]
    pub fn occupied_word(&self, i: usize) -> u64 {
        self.occupied[i]
    }

    /// Give back memory when far more entries are free than held: the free entries past
    /// the last value are dropped and the rest of the free list is rebuilt, lowest key
    /// first (so that later values fill the front and a later shrink can drop more).
    /// Keys of values held do not change.
    pub fn shrink(&mut self) {
        if self.entries.capacity() <= 4 * self.len.max(64) {
            return;
        }
        while matches!(self.entries.last(), Some(Entry::Vacant(_))) {
            self.entries.pop();
        }
        self.next = self.entries.len();
        for (k, e) in self.entries.iter_mut().enumerate().rev() {
            if let Entry::Vacant(next) = e {
                *next = self.next;
                self.next = k;
            }
        }
        self.entries.shrink_to(2 * self.entries.len());
        self.occupied.truncate(self.entries.len().div_ceil(64));
        self.occupied.shrink_to_fit();
    }

    /// The value at `key`, if any.
    #[inline]
    pub fn get(&self, key: usize) -> Option<&T> {
        match self.entries.get(key) {
            Some(Entry::Occupied(v)) => Some(v),
            _ => None,
        }
    }

    /// The value at `key`, if any.
    #[inline]
    pub fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        match self.entries.get_mut(key) {
            Some(Entry::Occupied(v)) => Some(v),
            _ => None,
        }
    }

    /// Keys and values, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(k, e)| match e {
                Entry::Occupied(v) => Some((k, v)),
                Entry::Vacant(_) => None,
            })
    }
}

impl<T> Index<usize> for Slots<T> {
    type Output = T;
    #[inline]
    fn index(&self, key: usize) -> &T {
        match self.get(key) {
            Some(v) => v,
            None => panic!("no value at this key"),
        }
    }
}

impl<T> IndexMut<usize> for Slots<T> {
    #[inline]
    fn index_mut(&mut self, key: usize) -> &mut T {
        match self.get_mut(key) {
            Some(v) => v,
            None => panic!("no value at this key"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against the `slab` crate: the same keys, values, lengths and iteration.
        #[test]
        fn slots_hand_out_the_keys_slab_does(ops in prop::collection::vec((any::<bool>(), 0usize..16), 1..200)) {
            let mut ours = Slots::default();
            let mut theirs = slab::Slab::new();
            for (i, (insert, pick)) in ops.into_iter().enumerate() {
                if insert || theirs.is_empty() {
                    prop_assert_eq!(ours.insert(i), theirs.insert(i));
                } else {
                    let key = theirs.iter().map(|(k, _)| k).nth(pick % theirs.len()).unwrap();
                    theirs.remove(key);
                    ours.remove(key);
                    prop_assert!(ours.get(key).is_none());
                }
                prop_assert_eq!(ours.len(), theirs.len());
                prop_assert_eq!(ours.is_empty(), theirs.is_empty());
                let a: Vec<_> = ours.iter().map(|(k, v)| (k, *v)).collect();
                let b: Vec<_> = theirs.iter().map(|(k, v)| (k, *v)).collect();
                prop_assert_eq!(a, b);
                for (k, v) in theirs.iter() {
                    prop_assert_eq!(ours[k], *v);
                }
                prop_assert_eq!(bit_keys(&ours), theirs.iter().map(|(k, _)| k).collect::<Vec<_>>());
            }
        }
    }

    /// The keys the bitmap says are in use, in order.
    fn bit_keys<T>(s: &Slots<T>) -> Vec<usize> {
        (0..s.occupied_words())
            .flat_map(|i| {
                (0..64)
                    .filter(move |b| s.occupied_word(i) & (1 << b) != 0)
                    .map(move |b| 64 * i + b)
            })
            .collect()
    }

    #[test]
    fn shrink_keeps_every_value_at_its_key_and_gives_memory_back() {
        let mut s = Slots::default();
        let keys: Vec<usize> = (0..10_000).map(|i| s.insert(i)).collect();
        for &k in &keys {
            if k != 5 && k != 300 {
                s.remove(k);
            }
        }
        s.shrink();
        assert!(s.entries.capacity() < 1_000, "{}", s.entries.capacity());
        assert_eq!((s.len(), s[5], s[300]), (2, 5, 300));
        assert_eq!(bit_keys(&s), [5, 300]);
        // The free entries below the last value are handed out lowest first, then new
        // ones at the end.
        assert_eq!(s.insert(7), 0);
        assert_eq!(s.insert(8), 1);
        let more: Vec<usize> = (0..300).map(|i| s.insert(i)).collect();
        assert_eq!(more.last(), Some(&303));
        assert!(s.iter().count() == 304 && s.get(301).is_some());
        assert_eq!(bit_keys(&s), s.iter().map(|(k, _)| k).collect::<Vec<_>>());
    }

    #[test]
    fn remove_drops_the_value() {
        let counter = std::rc::Rc::new(());
        let mut s = Slots::default();
        let k = s.insert(counter.clone());
        assert_eq!(std::rc::Rc::strong_count(&counter), 2);
        s.remove(k);
        assert_eq!(std::rc::Rc::strong_count(&counter), 1);
        assert!(s.is_empty() && s.get_mut(k).is_none());
        assert_eq!(s.insert(counter.clone()), k, "the freed entry is reused");
    }
}
