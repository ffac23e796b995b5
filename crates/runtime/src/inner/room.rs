//! Callers waiting for outgoing buffer room (`max_outgoing_held`) to start a request or
//! one-way message: `call` and `deliver` (both flavours), which wait where
//! `send_request` and `send_message` say "would block"; and, in a queue of their own,
//! replies waiting for room for responses (`reply_when_room`), offered room as the
//! responses' budget frees up.
//!
//! When room is given back (one of this socket's requests or one-way messages ended), the
//! longest-waiting caller whose message fits the room now free is woken; room too small
//! for the longest-waiting one goes to the shortest waiting messages that fit. So a short
//! call never sleeps behind a long one while the bytes it needs are free: with a
//! first-come wake-up alone, it could sleep until something else ended, for ever if
//! nothing else would. Both lookups are ordered sets, so a wake-up costs the same with
//! thousands waiting.
//!
//! A woken caller is only offered the room: it tries again, and a caller that starts
//! meanwhile may have taken the room first. Then it waits again in its old place.

use std::collections::{BTreeMap, BTreeSet};
use std::task::Waker;

/// One waiting caller.
struct Waiter {
    len: u64,
    waker: Option<Waker>,
    /// Offered room and not yet back to try (no longer in `by_age` and `by_len`).
    woken: bool,
}

/// The waiters of one socket, under its lock.
#[derive(Default)]
pub(crate) struct RoomQueue {
    next_key: u64,
    waiters: BTreeMap<u64, Waiter>,
    /// Keys of the waiters not woken, oldest first.
    by_age: BTreeSet<u64>,
    /// (length, key) of the waiters not woken, shortest first.
    by_len: BTreeSet<(u64, u64)>,
    /// Room was given back (or offered room went unused): look for waiters it fits
    /// before the lock is released.
    check: bool,
}

impl RoomQueue {
    /// Whether a caller waits (woken ones included).
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// Callers waiting (woken ones included, until they try again).
    pub(crate) fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Whether a caller waits and has not been offered room.
    pub(crate) fn waiting(&self) -> bool {
        !self.by_age.is_empty()
    }

    /// Whether room given back must be offered before the lock is released.
    pub(crate) fn check_due(&self) -> bool {
        self.check
    }

    /// Room was given back: offer it when the lock is released.
    pub(crate) fn given_back(&mut self) {
        if !self.by_age.is_empty() {
            self.check = true;
        }
    }

    /// A caller found no room for `len` bytes: `key` is its place from an earlier wait
    /// (kept, so that trying again does not send it to the back), or `None` for a new
    /// waiter. Returns its key.
    pub(crate) fn wait(&mut self, key: Option<u64>, len: u64) -> u64 {
        let key = key
            .filter(|k| self.waiters.contains_key(k))
            .unwrap_or_else(|| {
                let k = self.next_key;
                self.next_key += 1;
                k
            });
        let w = self.waiters.entry(key).or_insert(Waiter {
            len,
            waker: None,
            woken: true,
        });
        // New, or back from an offer it could not use: waiting (again) in its place.
        if w.woken {
            w.woken = false;
            w.len = len;
            self.by_age.insert(key);
            self.by_len.insert((len, key));
        }
        key
    }

    /// Waiter `key` stops waiting: it started (`took_room`), failed for another reason,
    /// or was given up. Room offered to it and not taken goes to the others.
    pub(crate) fn leave(&mut self, key: u64, took_room: bool) {
        if let Some(w) = self.waiters.remove(&key) {
            if !w.woken {
                self.by_age.remove(&key);
                self.by_len.remove(&(w.len, key));
            } else if !took_room {
                self.check = true;
            }
        }
    }

    /// Whether waiter `key` may try again (it was offered room, or no longer waits, as
    /// after a shutdown); otherwise keep `waker` to wake it.
    pub(crate) fn poll_woken(&mut self, key: u64, waker: &Waker) -> bool {
        match self.waiters.get_mut(&key) {
            None => true,
            Some(w) if w.woken => true,
            Some(w) => {
                if !w.waker.as_ref().is_some_and(|old| old.will_wake(waker)) {
                    w.waker = Some(waker.clone());
                }
                false
            }
        }
    }

    /// Offer `free` bytes of room: the waiters to wake, oldest first while the oldest
    /// fits, then the shortest that fit.
    pub(crate) fn offer(&mut self, mut free: u64, wake: &mut Vec<Waker>) {
        self.check = false;
        loop {
            let Some(&oldest) = self.by_age.first() else {
                return;
            };
            let len = self.waiters[&oldest].len;
            let key = if len <= free {
                oldest
            } else {
                match self.by_len.first() {
                    Some(&(len, key)) if len <= free => key,
                    _ => return,
                }
            };
            let w = self.waiters.get_mut(&key).expect("a waiter of the sets");
            free -= w.len;
            w.woken = true;
            self.by_age.remove(&key);
            self.by_len.remove(&(w.len, key));
            wake.extend(w.waker.take());
        }
    }

    /// Wake every waiter and forget them all (the socket is shutting down).
    pub(crate) fn drain(&mut self, wake: &mut Vec<Waker>) {
        for (_, w) in std::mem::take(&mut self.waiters) {
            wake.extend(w.waker);
        }
        self.by_age.clear();
        self.by_len.clear();
        self.check = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A queue with waiters of these lengths, in this order, each with a waker of its own.
    fn queue(lens: &[u64]) -> (RoomQueue, Vec<(u64, Arc<Count>)>) {
        let mut q = RoomQueue::default();
        let mut ws = Vec::new();
        for &len in lens {
            let k = q.wait(None, len);
            let c = Arc::new(Count(AtomicUsize::new(0)));
            assert!(!q.poll_woken(k, &Waker::from(c.clone())));
            ws.push((k, c));
        }
        (q, ws)
    }

    fn woken(q: &mut RoomQueue, free: u64) -> usize {
        let mut v = Vec::new();
        q.offer(free, &mut v);
        let n = v.len();
        v.into_iter().for_each(Waker::wake);
        n
    }

    #[test]
    fn the_oldest_that_fits_first_then_the_shortest() {
        let (mut q, ws) = queue(&[8_000, 500, 3_000, 200]);
        // 3,500 free: too little for the oldest; the shortest that fit share it (200 and
        // 500; then 2,800 is left, too little for 3,000).
        assert_eq!(woken(&mut q, 3_500), 2);
        let counts: Vec<usize> = ws
            .iter()
            .map(|(_, c)| c.0.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, [0, 1, 0, 1]);
        // Enough for the oldest: it goes first, and what is left to the next oldest.
        assert_eq!(woken(&mut q, 11_000), 2);
        assert_eq!(ws[0].1 .0.load(Ordering::Relaxed), 1);
        assert_eq!(ws[2].1 .0.load(Ordering::Relaxed), 1);
        assert_eq!(woken(&mut q, 1_000_000), 0, "no one is left waiting");
    }

    #[test]
    fn a_waiter_that_finds_no_room_again_keeps_its_place() {
        let (mut q, ws) = queue(&[5_000, 5_000]);
        assert_eq!(woken(&mut q, 5_000), 1);
        let first = ws[0].0;
        let c = &ws[0].1;
        assert!(q.poll_woken(first, &Waker::from(c.clone())));
        // Someone took the room first: it waits again, still ahead of the second.
        assert_eq!(q.wait(Some(first), 5_000), first);
        assert!(!q.poll_woken(first, &Waker::from(c.clone())));
        assert_eq!(woken(&mut q, 5_000), 1);
        assert_eq!(c.0.load(Ordering::Relaxed), 2);
        assert_eq!(ws[1].1 .0.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn room_offered_to_a_waiter_that_leaves_goes_to_the_others() {
        let (mut q, ws) = queue(&[5_000, 5_000]);
        assert_eq!(woken(&mut q, 5_000), 1);
        q.leave(ws[0].0, false);
        assert!(q.check_due(), "its room is offered again");
        assert_eq!(woken(&mut q, 5_000), 1);
        assert_eq!(ws[1].1 .0.load(Ordering::Relaxed), 1);
        q.leave(ws[1].0, true);
        assert!(!q.check_due(), "it took the room it was offered");
        assert!(q.is_empty());
    }

    #[test]
    fn a_waiter_given_up_while_waiting_is_forgotten() {
        let (mut q, ws) = queue(&[100, 200]);
        q.leave(ws[0].0, false);
        assert!(!q.check_due(), "it held no offer");
        assert_eq!(woken(&mut q, 1_000), 1);
        assert_eq!(ws[0].1 .0.load(Ordering::Relaxed), 0);
        assert_eq!(ws[1].1 .0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_shutdown_wakes_everyone() {
        let (mut q, ws) = queue(&[100, 200, 300]);
        let mut v = Vec::new();
        q.drain(&mut v);
        v.into_iter().for_each(Waker::wake);
        assert!(ws.iter().all(|(_, c)| c.0.load(Ordering::Relaxed) == 1));
        assert!(q.is_empty());
        assert!(q.poll_woken(ws[0].0, &Waker::noop().clone()));
    }
}
