//! A cheap running hash of a run, to check that two runs were identical.

use homa_core::Event;

/// Order-sensitive 64-bit hash over words (FNV-style multiply with a final mix per word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceHash(u64);

impl Default for TraceHash {
    fn default() -> Self {
        TraceHash(0xcbf2_9ce4_8422_2325)
    }
}

impl TraceHash {
    /// Fold in some words.
    pub fn add(&mut self, words: &[u64]) {
        for &w in words {
            self.0 = (self.0 ^ w)
                .wrapping_mul(0x0000_0100_0000_01b3)
                .rotate_left(29);
        }
    }

    /// Fold in bytes (8 at a time, then the tail and the length).
    pub fn add_bytes(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(&[u64::from_le_bytes(c.try_into().expect("8 bytes"))]);
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.add(&[u64::from_le_bytes(tail), bytes.len() as u64]);
    }

    /// Fold in an application event of `host`.
    pub fn add_event(&mut self, host: usize, ev: &Event) {
        let (kind, id, len) = match ev {
            Event::Request { id, data, .. } => (1, id.0, data.len() as u64),
            Event::Response { id, data, .. } => (2, id.0, data.len() as u64),
            Event::Failed { id, error, .. } => (3, id.0, error_code(*error)),
            Event::Message { id, data, .. } => (4, id.0, data.len() as u64),
            Event::Delivered { id, .. } => (5, id.0, 0),
        };
        self.add(&[host as u64, kind, id, len]);
    }

    /// The hash so far.
    pub fn value(&self) -> u64 {
        self.0
    }
}

/// A number for each failure (the declaration order, as before errors carried data).
fn error_code(e: homa_core::RpcError) -> u64 {
    use homa_core::RpcError::*;
    match e {
        Timeout => 0,
        NoSuchSocket => 1,
        Shutdown => 2,
        Aborted => 3,
        NoBufferSpace => 4,
        Unreachable(errno) => 5 | (errno as u64) << 8,
        NotAccepted => 6,
        RequestTooLong => 7,
        RequestNeverFits => 8,
        ResponseTooLong => 9,
        RequestLost => 10,
    }
}
