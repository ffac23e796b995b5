//! What a side's datagram I/O offers, and what it counts.

use super::*;

#[derive(Default, Clone, Copy)]
pub(crate) struct IoStats {
    pub(crate) syscalls: u64,
    /// Datagrams the kernel refused to send (ENOBUFS and the like).
    pub(crate) dropped_sends: u64,
    /// Receives that did not fit their buffer (never expected).
    pub(crate) truncated: u64,
    /// io_uring: multishot receives that ended with ENOBUFS, and all re-arms.
    pub(crate) enobufs: u64,
    pub(crate) rearms: u64,
}

/// One side's datagram I/O: queue datagrams, then `exchange` sends them and waits for
/// what arrives.
pub(crate) trait Transport {
    fn queue(&mut self) -> &mut TxQueue;

    /// Send everything queued, wait (at most `LOSS_TIMEOUT`) for datagrams and hand
    /// each to `deliver`, which may queue datagrams for the next call.
    fn exchange<F>(&mut self, deliver: F) -> Result<(), String>
    where
        F: FnMut(&mut TxQueue, SocketAddrV4, &[u8]);

    fn stats(&self) -> IoStats;
}
