//! An ordered set that keeps its smallest element out of the tree.
//!
//! The engine's SRPT queues (the sender's sendable messages, the grant scheduler's peers
//! and each peer's grantable messages) are ordered by bytes left, so every packet sent or
//! received changes the key of the message it belongs to, and that message is nearly
//! always the queue's first: the one being sent, or being granted. A `BTreeSet` pays a
//! search and a node edit to take the old key out and another to put the new one in.
//! Here the smallest element lives beside the tree, so [`MinSet::replace`] of the first
//! element by a key that is still the smallest is two comparisons.

use std::collections::BTreeSet;

/// A set of keys ordered by `Ord`, with its minimum kept apart (see the module docs).
///
/// Invariant: `min` is `None` only when the set is empty, and it is smaller than every
/// key in `rest`.
#[derive(Debug, Clone)]
pub(crate) struct MinSet<K> {
    min: Option<K>,
    rest: BTreeSet<K>,
}

impl<K> Default for MinSet<K> {
    fn default() -> Self {
        MinSet {
            min: None,
            rest: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Copy> MinSet<K> {
    /// An empty set.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The smallest key.
    #[inline]
    pub(crate) fn first(&self) -> Option<&K> {
        self.min.as_ref()
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.min.is_none()
    }

    pub(crate) fn len(&self) -> usize {
        usize::from(self.min.is_some()) + self.rest.len()
    }

    /// Adds `k`; false if it was there already.
    pub(crate) fn insert(&mut self, k: K) -> bool {
        match self.min {
            None => {
                self.min = Some(k);
                true
            }
            Some(m) if k < m => {
                self.rest.insert(m);
                self.min = Some(k);
                true
            }
            Some(m) if k == m => false,
            Some(_) => self.rest.insert(k),
        }
    }

    /// Removes `k`; false if it was not there.
    pub(crate) fn remove(&mut self, k: &K) -> bool {
        if self.min.as_ref() == Some(k) {
            self.min = self.rest.pop_first();
            true
        } else {
            self.rest.remove(k)
        }
    }

    /// Replaces `old` (which must be in the set) by `new`. When `old` is the smallest
    /// key and `new` still is, no tree is touched.
    #[inline]
    pub(crate) fn replace(&mut self, old: &K, new: K) {
        if self.min.as_ref() == Some(old) && self.rest.first().is_none_or(|r| new < *r) {
            self.min = Some(new);
            return;
        }
        let was = self.remove(old);
        debug_assert!(was, "MinSet::replace of a key not in the set");
        self.insert(new);
    }

    /// The keys in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &K> + '_ {
        self.min.iter().chain(self.rest.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8),
        Remove(u8),
        Replace(u8, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<u8>().prop_map(Op::Insert),
            any::<u8>().prop_map(Op::Remove),
            (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Replace(a, b)),
        ]
    }

    proptest! {
        /// Every operation leaves the same keys, in the same order, as a `BTreeSet`.
        #[test]
        fn behaves_as_a_btreeset(ops in proptest::collection::vec(op(), 0..200)) {
            let mut ours = MinSet::new();
            let mut model = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Insert(k) => prop_assert_eq!(ours.insert(k), model.insert(k)),
                    Op::Remove(k) => prop_assert_eq!(ours.remove(&k), model.remove(&k)),
                    // Replace is only defined for a key in the set, by one not in it
                    // (the engine's keys end in a unique handle).
                    Op::Replace(a, b) => {
                        if model.contains(&a) && !model.contains(&b) {
                            ours.replace(&a, b);
                            model.remove(&a);
                            model.insert(b);
                        }
                    }
                }
                prop_assert_eq!(ours.first(), model.first());
                prop_assert_eq!(ours.len(), model.len());
                prop_assert_eq!(ours.is_empty(), model.is_empty());
                prop_assert!(ours.iter().eq(model.iter()));
            }
        }
    }

    #[test]
    fn replacing_the_first_by_a_smaller_key_keeps_the_tree_as_it_was() {
        let mut s = MinSet::new();
        for k in [50, 60, 70] {
            s.insert(k);
        }
        s.replace(&50, 40);
        assert_eq!(s.min, Some(40));
        assert_eq!(s.rest.iter().copied().collect::<Vec<_>>(), [60, 70]);
        // Past the next key it moves into the tree, and the next key out of it.
        s.replace(&40, 65);
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), [60, 65, 70]);
        assert_eq!(s.min, Some(60));
    }
}
