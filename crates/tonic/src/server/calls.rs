//! The server's table of calls in progress, and its memory of CANCELs that came before
//! their calls.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// A call is known by its client and the id the client gave it.
pub(super) type CallKey = (SocketAddr, u64);

/// Serials of [`Entry`]s, process-wide.
pub(super) static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A call in progress, as the receive loop knows it: where to hand its later requests
/// (SEND, PULL), and the cancellation its task waits on. Removing the entry cancels the
/// call: `cancel` is dropped first (fields drop in order), so the task stops the handler
/// before the request stream can see its channel close.
pub(super) struct Entry {
    /// Never sent on: dropping it is the signal.
    pub(super) _cancel: oneshot::Sender<()>,
    /// Which call this is, among those of the same key (a client restarted on its port
    /// may reuse its predecessor's call ids): a call's end removes its own entry only.
    pub(super) serial: u64,
    pub(super) pulls: Option<mpsc::Sender<homa::Message>>,
    pub(super) sends: Option<mpsc::Sender<homa::Message>>,
}

/// CANCELs for calls not known when they came, oldest first, at most [`EARLY_CANCELS`],
/// each for [`EARLY_CANCEL_MEMORY`].
#[derive(Default)]
pub(super) struct EarlyCancels(VecDeque<(CallKey, Instant)>);

impl EarlyCancels {
    pub(super) fn note(&mut self, key: CallKey, now: Instant) {
        while self.0.front().is_some_and(|&(_, at)| {
            self.0.len() >= EARLY_CANCELS || now.duration_since(at) > EARLY_CANCEL_MEMORY
        }) {
            self.0.pop_front();
        }
        self.0.push_back((key, now));
    }

    /// Whether a CANCEL for `key` came (forgotten once asked).
    pub(super) fn take(&mut self, key: CallKey, now: Instant) -> bool {
        let found = self
            .0
            .iter()
            .position(|&(k, at)| k == key && now.duration_since(at) <= EARLY_CANCEL_MEMORY);
        found.and_then(|i| self.0.remove(i)).is_some()
    }
}

/// How many CANCELs for unknown calls a server remembers, and for how long: an OPEN that
/// a CANCEL overtook arrives within a round trip or two of it.
pub(super) const EARLY_CANCELS: usize = 1024;
pub(super) const EARLY_CANCEL_MEMORY: Duration = Duration::from_secs(10);

/// Remove the call `key` from `calls` if it is still the one numbered `serial` (a newer
/// call of the same key may have replaced it: that one stays).
pub(super) fn remove_call(calls: &mut HashMap<CallKey, Entry>, key: CallKey, serial: u64) {
    if calls.get(&key).is_some_and(|e| e.serial == serial) {
        calls.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(serial: u64) -> (Entry, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let e = Entry {
            _cancel: tx,
            serial,
            pulls: None,
            sends: None,
        };
        (e, rx)
    }

    /// A CANCEL that overtook its call's OPEN refuses that OPEN, once; the memory is
    /// bounded in size and time.
    #[test]
    fn an_open_after_its_cancel_is_refused_once() {
        let t0 = Instant::now();
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mut early = EarlyCancels::default();
        early.note((peer, 7), t0);
        assert!(!early.take((peer, 8), t0));
        assert!(early.take((peer, 7), t0));
        assert!(!early.take((peer, 7), t0), "forgotten once taken");
        early.note((peer, 9), t0);
        assert!(!early.take(
            (peer, 9),
            t0 + EARLY_CANCEL_MEMORY + Duration::from_millis(1)
        ));
        for i in 0..(EARLY_CANCELS as u64 + 10) {
            early.note((peer, 100 + i), t0);
        }
        assert!(early.0.len() <= EARLY_CANCELS);
        assert!(!early.take((peer, 100), t0), "the oldest went first");
        assert!(early.take((peer, 100 + EARLY_CANCELS as u64 + 9), t0));
    }

    /// A client restarted on its port may reuse a call id (ids once started at 1 in
    /// every process): its new call
    /// replaces the dead one's entry (cancelling that call), and the dead call's end
    /// must not then remove the new call's entry (which cancelled it: its first
    /// streaming call failed with NOT_FOUND).
    #[test]
    fn a_call_that_ends_removes_only_its_own_entry() {
        let key: CallKey = ("127.0.0.1:40000".parse().unwrap(), 1);
        let mut calls = HashMap::new();
        let (old, mut old_cancelled) = entry(10);
        calls.insert(key, old);
        let (new, mut new_cancelled) = entry(11);
        calls.insert(key, new);
        assert!(
            old_cancelled.try_recv().is_err(),
            "the replaced call is cancelled"
        );
        remove_call(&mut calls, key, 10);
        assert_eq!(calls.get(&key).map(|e| e.serial), Some(11));
        assert!(matches!(
            new_cancelled.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        remove_call(&mut calls, key, 11);
        assert!(calls.is_empty());
    }
}
