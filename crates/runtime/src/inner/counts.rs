//! What a socket asks of the kernel and of other threads, counted as it happens:
//! system calls that send on its socket, read it or wait on it, re-arms of its timers,
//! and wake-ups of other threads or tasks. Read through `SocketInfo::io`. (The engine
//! counts packets itself, in `Metrics`.)

use crate::info::IoCounts;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The counters. Relaxed atomics: each is a tally, and a snapshot need not be
/// consistent across them.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    send_calls: AtomicU64,
    receive_calls: AtomicU64,
    waits: AtomicU64,
    timer_sets: AtomicU64,
    wakeups: AtomicU64,
}

impl Counters {
    /// One `sendmsg`/`sendmmsg` on the socket.
    #[inline]
    pub(crate) fn sent(&self) {
        self.send_calls.fetch_add(1, Relaxed);
    }

    /// One `recvmmsg`/`recvmsg` on the socket.
    #[inline]
    pub(crate) fn received(&self) {
        self.receive_calls.fetch_add(1, Relaxed);
    }

    /// One `ppoll` on the socket.
    #[inline]
    pub(crate) fn waited(&self) {
        self.waits.fetch_add(1, Relaxed);
    }

    /// One `timerfd_settime`.
    #[inline]
    pub(crate) fn timer_set(&self) {
        self.timer_sets.fetch_add(1, Relaxed);
    }

    /// `n` threads or tasks woken (or kicked, or notified).
    #[inline]
    pub(crate) fn woke(&self, n: usize) {
        if n > 0 {
            self.wakeups.fetch_add(n as u64, Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> IoCounts {
        IoCounts {
            send_calls: self.send_calls.load(Relaxed),
            receive_calls: self.receive_calls.load(Relaxed),
            waits: self.waits.load(Relaxed),
            timer_sets: self.timer_sets.load(Relaxed),
            wakeups: self.wakeups.load(Relaxed),
        }
    }
}
