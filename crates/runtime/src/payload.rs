//! What `send_request`, `reply` and `call` accept as message bytes.

use bytes::Bytes;

/// The bytes of an outgoing message.
///
/// Anything that converts into it can be sent: `Vec<u8>`, `String`, `Box<[u8]>` and
/// [`Bytes`] are taken without copying (a `Bytes` sent many times is shared, not copied);
/// slices, arrays and `&str` are copied once. The engine then sends each payload byte
/// straight from this buffer to the kernel.
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
        Payload(Bytes::copy_from_slice(s))
    }
}
impl From<&Vec<u8>> for Payload {
    fn from(s: &Vec<u8>) -> Payload {
        Payload(Bytes::copy_from_slice(s))
    }
}
impl<const N: usize> From<&[u8; N]> for Payload {
    fn from(s: &[u8; N]) -> Payload {
        Payload(Bytes::copy_from_slice(s))
    }
}
impl<const N: usize> From<[u8; N]> for Payload {
    fn from(s: [u8; N]) -> Payload {
        Payload(Bytes::copy_from_slice(&s))
    }
}
impl From<&str> for Payload {
    fn from(s: &str) -> Payload {
        Payload(Bytes::copy_from_slice(s.as_bytes()))
    }
}
