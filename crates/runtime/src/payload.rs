//! What `send_request`, `reply` and `call` accept as message bytes.

use bytes::Bytes;
use std::sync::Mutex;

/// Copied payloads at least this long go into recycled buffers.
const POOL_MIN: usize = 64 << 10;
/// Most bytes the recycled buffers may hold, all sizes together.
const POOL_MAX_BYTES: usize = 64 << 20;

/// Free buffers for copied payloads, process-wide. A fresh 1 MB allocation for every
/// copied message page-faulted its way in each time (measured: 20 times the page faults
/// and 300 us more CPU per 1 MB message, throughput 28 -> 16 Gbps); recycled buffers are
/// warm.
static POOL: Pool = Pool(Mutex::new(Vec::new()));

/// Free buffers for copied payloads (one per process, [`POOL`]; tests make their own).
struct Pool(Mutex<Vec<Vec<u8>>>);

/// A recycled buffer holding a payload; goes back to its pool when the last `Bytes`
/// referring to it is dropped.
struct Pooled {
    buf: Vec<u8>,
    pool: &'static Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.buf);
        let mut pool = self.pool.0.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = pool.iter().map(Vec::capacity).sum();
        if held + v.capacity() <= POOL_MAX_BYTES {
            pool.push(v);
        }
    }
}

/// A copy of `s` as `Bytes`: long ones in a recycled buffer.
fn copy(s: &[u8]) -> Bytes {
    POOL.copy(s)
}

impl Pool {
    /// A copy of `s` as `Bytes`: long ones in a buffer of this pool.
    fn copy(&'static self, s: &[u8]) -> Bytes {
        if s.len() < POOL_MIN {
            return Bytes::copy_from_slice(s);
        }
        let reused = {
            let mut pool = self.0.lock().unwrap_or_else(|e| e.into_inner());
            // The smallest free buffer that fits (and is at most twice the next power of two
            // of the size).
            let best = pool
                .iter()
                .enumerate()
                .filter(|(_, v)| {
                    v.capacity() >= s.len() && v.capacity() <= 2 * s.len().next_power_of_two()
                })
                .min_by_key(|(_, v)| v.capacity())
                .map(|(i, _)| i);
            best.map(|i| pool.swap_remove(i))
        };
        let mut v = reused.unwrap_or_else(|| Vec::with_capacity(s.len().next_power_of_two()));
        v.clear();
        v.extend_from_slice(s);
        Bytes::from_owner(Pooled { buf: v, pool: self })
    }
}

/// The bytes of an outgoing message.
///
/// Anything that converts into it can be sent: `Vec<u8>`, `String`, `Box<[u8]>` and
/// [`Bytes`] are taken without copying (a `Bytes` sent many times is shared, not copied);
/// slices, arrays and `&str` are copied once (long ones into recycled buffers). Over UDP
/// the runtime then sends packet payloads longer than 2 KiB straight from this buffer to
/// the kernel, and copies shorter ones behind their header (see the crate's "Copies").
///
/// ```
/// let p: homa::Payload = b"hello".into();
/// assert_eq!(p.len(), 5);
/// let shared = bytes::Bytes::from(vec![0u8; 1000]);
/// let p: homa::Payload = shared.clone().into(); // a reference count, no copy
/// assert_eq!(p.as_bytes(), &shared);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Payload(Bytes);

impl Payload {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True if empty (sending an empty message is an error).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
    /// The underlying shared buffer.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Payload {
        Payload(b)
    }
}
impl From<&Bytes> for Payload {
    fn from(b: &Bytes) -> Payload {
        Payload(b.clone())
    }
}
impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Payload {
        Payload(Bytes::from(v))
    }
}
impl From<Box<[u8]>> for Payload {
    fn from(v: Box<[u8]>) -> Payload {
        Payload(Bytes::from(v))
    }
}
impl From<String> for Payload {
    fn from(s: String) -> Payload {
        Payload(Bytes::from(s))
    }
}
impl From<&[u8]> for Payload {
    fn from(s: &[u8]) -> Payload {
        Payload(copy(s))
    }
}
impl From<&Vec<u8>> for Payload {
    fn from(s: &Vec<u8>) -> Payload {
        Payload(copy(s))
    }
}
impl<const N: usize> From<&[u8; N]> for Payload {
    fn from(s: &[u8; N]) -> Payload {
        Payload(copy(s))
    }
}
impl<const N: usize> From<[u8; N]> for Payload {
    fn from(s: [u8; N]) -> Payload {
        Payload(copy(&s))
    }
}
impl From<&str> for Payload {
    fn from(s: &str) -> Payload {
        Payload(copy(s.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_copies_reuse_buffers() {
        // A pool of this test's own: other tests copying long payloads at the same time
        // take buffers from the process's pool, not from this one.
        static MINE: Pool = Pool(Mutex::new(Vec::new()));
        let data = vec![5u8; 300_000];
        let a = MINE.copy(&data);
        assert_eq!(a.as_ref(), data.as_slice());
        let ptr = a.as_ptr();
        drop(a);
        // The buffer went back to the pool, and a shorter copy that fits it takes it.
        let b = MINE.copy(&data[..250_000]);
        assert_eq!(b.as_ref(), &data[..250_000]);
        assert_eq!(b.as_ptr(), ptr, "the freed buffer was not reused");
        // Held, it cannot be handed out again: a second copy gets a buffer of its own.
        let c = MINE.copy(&data[..250_000]);
        assert_ne!(c.as_ptr(), ptr);
        // Short copies are plain copies: nothing of theirs goes to the pool.
        let free = MINE.0.lock().unwrap().len();
        let small = MINE.copy(b"abc");
        assert_eq!(small.as_ref(), b"abc");
        drop(small);
        assert_eq!(MINE.0.lock().unwrap().len(), free);
        // The public conversions copy through the process's pool, bytes intact.
        let long = Payload::from(data.as_slice());
        assert_eq!(long.as_bytes().as_ref(), data.as_slice());
    }
}
