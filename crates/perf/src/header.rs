//! The perf request header: what the client asks of the server, in a request's first bytes.
//!
//! Every perf request (Homa message or TCP frame body) starts with these 16 bytes, all
//! little-endian (the same idea as `cp_node`'s `message_header`):
//!
//! | offset | size | field | meaning |
//! |---|---|---|---|
//! | 0 | 4 | `response_len` | total length of the response the server must send (bytes) |
//! | 4 | 4 | `id` | the client's number for this request; opaque to the server |
//! | 8 | 8 | `sent_ns` | when the client sent it, ns on the client's own clock; opaque |
//!
//! The rest of the request is filler. The response is `response_len` bytes whose first
//! `min(16, response_len)` bytes echo the request header (so a client can match responses
//! and check its clock), the rest zeros. A request shorter than 16 bytes is malformed: the
//! client never sends one (workload lengths are raised to 16) and the server drops it.

/// Length of the perf request header; also the shortest request.
pub const HEADER_LEN: usize = 16;

/// The decoded perf request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Bytes the response must have.
    pub response_len: u32,
    /// The client's request number (echoed in the response).
    pub id: u32,
    /// Client send time, ns on the client's clock (echoed).
    pub sent_ns: u64,
}

/// A request too short to hold the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("perf request of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
pub struct ShortRequest(pub usize);

impl RequestHeader {
    /// Writes the header into `buf[..HEADER_LEN]`.
    ///
    /// # Panics
    /// If `buf` is shorter than [`HEADER_LEN`] (callers size requests with
    /// [`crate::workload::clamp_length`]).
    pub fn encode(&self, buf: &mut [u8]) {
        buf[0..4].copy_from_slice(&self.response_len.to_le_bytes());
        buf[4..8].copy_from_slice(&self.id.to_le_bytes());
        buf[8..16].copy_from_slice(&self.sent_ns.to_le_bytes());
    }

    /// Reads the header from the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self, ShortRequest> {
        if buf.len() < HEADER_LEN {
            return Err(ShortRequest(buf.len()));
        }
        let u32_at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
        Ok(Self {
            response_len: u32_at(0),
            id: u32_at(4),
            sent_ns: u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes")),
        })
    }

    /// A request of `len` bytes (at least [`HEADER_LEN`]) carrying this header.
    pub fn request(&self, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len.max(HEADER_LEN)];
        self.encode(&mut buf);
        buf
    }
}

/// Builds responses without allocating: a zeroed scratch buffer whose prefix is overwritten
/// with the echoed header for each response.
#[derive(Debug, Default)]
pub struct ResponseBuilder {
    buf: Vec<u8>,
}

impl ResponseBuilder {
    /// The response to `request` (header echoed, then zeros), at most `max_len` bytes long.
    pub fn respond(&mut self, request: &[u8], max_len: usize) -> Result<&[u8], ShortRequest> {
        let header = RequestHeader::decode(request)?;
        let len = (header.response_len as usize).min(max_len);
        if self.buf.len() < len.max(HEADER_LEN) {
            self.buf.resize(len.max(HEADER_LEN), 0);
        }
        self.buf[..HEADER_LEN].copy_from_slice(&request[..HEADER_LEN]);
        Ok(&self.buf[..len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_is_little_endian() {
        let h = RequestHeader {
            response_len: 100,
            id: 0x0102_0304,
            sent_ns: 0x1122_3344_5566_7788,
        };
        let req = h.request(40);
        assert_eq!(req.len(), 40);
        assert_eq!(
            &req[..16],
            &[
                100, 0, 0, 0, 0x04, 0x03, 0x02, 0x01, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22,
                0x11
            ]
        );
        assert!(req[16..].iter().all(|&b| b == 0));
        assert_eq!(RequestHeader::decode(&req).unwrap(), h);
        assert_eq!(RequestHeader::decode(&req[..15]), Err(ShortRequest(15)));
        // Requests are never shorter than the header.
        assert_eq!(h.request(3).len(), HEADER_LEN);
    }

    #[test]
    fn responses_echo_the_header_and_honour_the_length() {
        let mut rb = ResponseBuilder::default();
        let req = RequestHeader {
            response_len: 5000,
            id: 9,
            sent_ns: 77,
        }
        .request(20);
        let resp = rb.respond(&req, 1_000_000).unwrap().to_vec();
        assert_eq!(resp.len(), 5000);
        assert_eq!(RequestHeader::decode(&resp).unwrap().id, 9);
        assert!(resp[16..].iter().all(|&b| b == 0));
        let small = RequestHeader {
            response_len: 4,
            id: 1,
            sent_ns: 2,
        }
        .request(16);
        assert_eq!(rb.respond(&small, 1_000_000).unwrap(), &small[..4]);
        let huge = RequestHeader {
            response_len: u32::MAX,
            id: 1,
            sent_ns: 2,
        }
        .request(16);
        assert_eq!(rb.respond(&huge, 1000).unwrap().len(), 1000);
        assert!(rb.respond(&[0; 3], 10).is_err());
    }
}
