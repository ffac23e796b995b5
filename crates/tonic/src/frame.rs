//! The bytes of one Homa message in the gRPC mapping: its frame header, header blocks,
//! and the gRPC messages it carries (see the crate docs for the layout).

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The client opens a call: path, request metadata, the first request messages.
pub(crate) const OPEN: u8 = 1;
/// The client sends more request messages of an open call.
pub(crate) const SEND: u8 = 2;
/// The client asks for the next batch of response messages.
pub(crate) const PULL: u8 = 3;
/// The client gives up on a call.
pub(crate) const CANCEL: u8 = 4;
/// Set in the kind of every response (`REPLY | OPEN`...).
pub(crate) const REPLY: u8 = 0x80;

/// Request frames: the client's last messages. Response frames: the call's last frame,
/// with trailers.
pub(crate) const FLAG_END: u8 = 0x01;
/// A header block (request or response metadata) follows the fixed header.
pub(crate) const FLAG_HEADERS: u8 = 0x02;

/// Kind, flags, call id.
pub(crate) const FIXED_LEN: usize = 10;

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// Fewer bytes than a length in the frame says.
    #[error("frame truncated: {0}")]
    Truncated(&'static str),
    /// A kind byte this implementation does not know.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// A path or header that is not valid HTTP.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// A parsed frame. `messages` are gRPC length-prefixed messages, exactly as an HTTP/2 DATA
/// stream would carry them.
#[derive(Debug, Default)]
pub(crate) struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub call: u64,
    pub path: Option<Bytes>,
    pub headers: Option<HeaderMap>,
    pub trailers: Option<HeaderMap>,
    pub messages: Bytes,
}

impl Frame {
    pub fn end(&self) -> bool {
        self.flags & FLAG_END != 0
    }
}

/// Start a frame in `buf`: kind, flags, call id.
pub(crate) fn put_fixed(buf: &mut BytesMut, kind: u8, flags: u8, call: u64) {
    buf.put_u8(kind);
    buf.put_u8(flags);
    buf.put_u64(call);
}

/// Set `flag` in the frame that starts `buf`.
pub(crate) fn set_flag(buf: &mut [u8], flag: u8) {
    buf[1] |= flag;
}

/// The path of an OPEN: u16 length, bytes.
pub(crate) fn put_path(buf: &mut BytesMut, path: &str) {
    buf.put_u16(path.len() as u16);
    buf.put_slice(path.as_bytes());
}

/// The most metadata entries a header block carries (its count is a u16).
pub(crate) const MAX_HEADERS: usize = u16::MAX as usize;

/// `headers` fit a header block, or the status that refuses them (`RESOURCE_EXHAUSTED`,
/// as HTTP/2 refuses a header list over its limit; never a silent cut).
pub(crate) fn check_headers(headers: &HeaderMap, what: &str) -> Result<(), tonic::Status> {
    if headers.len() > MAX_HEADERS {
        return Err(tonic::Status::resource_exhausted(format!(
            "homa-tonic: {} {what} entries, more than a call carries ({MAX_HEADERS})",
            headers.len()
        )));
    }
    Ok(())
}

/// A header block: u16 count, then per field u16 name length, name, u32 value length,
/// value. Names are lower case, as HTTP/2 has them. At most [`MAX_HEADERS`] entries
/// (callers check with [`check_headers`]).
pub(crate) fn put_headers(buf: &mut BytesMut, headers: &HeaderMap) {
    debug_assert!(headers.len() <= MAX_HEADERS);
    buf.put_u16(headers.len().min(MAX_HEADERS) as u16);
    for (name, value) in headers.iter().take(MAX_HEADERS) {
        buf.put_u16(name.as_str().len() as u16);
        buf.put_slice(name.as_str().as_bytes());
        buf.put_u32(value.len() as u32);
        buf.put_slice(value.as_bytes());
    }
}

/// Reserve the u32 length of the messages that follow; [`patch_len`] fills it in.
pub(crate) fn put_len_placeholder(buf: &mut BytesMut) -> usize {
    let at = buf.len();
    buf.put_u32(0);
    at
}

/// Fill in the length reserved at `at`: the bytes from there on.
pub(crate) fn patch_len(buf: &mut [u8], at: usize) {
    let n = (buf.len() - at - 4) as u32;
    buf[at..at + 4].copy_from_slice(&n.to_be_bytes());
}

/// A whole frame without messages (acks, statuses): kind, flags, call id, then the
/// header blocks the flags announce.
pub(crate) fn control(
    kind: u8,
    flags: u8,
    call: u64,
    headers: Option<&HeaderMap>,
    trailers: Option<&HeaderMap>,
) -> Bytes {
    let mut buf = BytesMut::with_capacity(64);
    let flags = flags | if headers.is_some() { FLAG_HEADERS } else { 0 };
    put_fixed(&mut buf, kind, flags, call);
    if let Some(h) = headers {
        put_headers(&mut buf, h);
    }
    buf.put_u32(0);
    if let Some(t) = trailers {
        put_headers(&mut buf, t);
    }
    buf.freeze()
}

struct Reader<'a> {
    bytes: &'a Bytes,
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], FrameError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(FrameError::Truncated(what))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self, what: &'static str) -> Result<usize, FrameError> {
        let s = self.take(2, what)?;
        Ok(u16::from_be_bytes([s[0], s[1]]) as usize)
    }
    fn u32(&mut self, what: &'static str) -> Result<usize, FrameError> {
        let s = self.take(4, what)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
    }
    fn headers(&mut self) -> Result<HeaderMap, FrameError> {
        let count = self.u16("header count")?;
        // A header takes at least 7 bytes (two lengths and a one-byte name): a count
        // that cannot fit is not believed, nor made room for.
        if count > (self.bytes.len() - self.at) / 7 {
            return Err(FrameError::Truncated("headers"));
        }
        // The map grows as headers come (`http`'s maps hold at most 32,768 names, and
        // reserving more panics); a frame with more than it holds is refused, where the
        // plain `append` would panic.
        let too_many = |_| FrameError::Invalid("header count (more headers than a map holds)");
        let mut map = HeaderMap::with_capacity(count.min(64));
        for _ in 0..count {
            let n = self.u16("header name length")?;
            let name = HeaderName::from_bytes(self.take(n, "header name")?)
                .map_err(|_| FrameError::Invalid("header name"))?;
            let n = self.u32("header value length")?;
            let value = HeaderValue::from_bytes(self.take(n, "header value")?)
                .map_err(|_| FrameError::Invalid("header value"))?;
            map.try_append(name, value).map_err(too_many)?;
        }
        Ok(map)
    }
}

/// A frame's fixed header: kind, flags, call id (`None` if shorter than one).
pub(crate) fn fixed_header(bytes: &[u8]) -> Option<(u8, u8, u64)> {
    let fixed = bytes.get(..FIXED_LEN)?;
    let call = u64::from_be_bytes(fixed[2..10].try_into().expect("8 bytes"));
    Some((fixed[0], fixed[1], call))
}

/// Read a frame. Never panics; every length is checked against the bytes there are.
pub(crate) fn parse(bytes: Bytes) -> Result<Frame, FrameError> {
    let mut r = Reader {
        bytes: &bytes,
        at: 0,
    };
    let (kind, flags, call) =
        fixed_header(r.take(FIXED_LEN, "fixed header")?).expect("FIXED_LEN bytes");
    if !matches!(kind & !REPLY, OPEN | SEND | PULL | CANCEL) {
        return Err(FrameError::UnknownKind(kind));
    }
    let mut frame = Frame {
        kind,
        flags,
        call,
        ..Frame::default()
    };
    if kind == OPEN {
        let n = r.u16("path length")?;
        let at = r.at;
        let path = r.take(n, "path")?;
        if !path.starts_with(b"/") || std::str::from_utf8(path).is_err() {
            return Err(FrameError::Invalid("path"));
        }
        frame.path = Some(bytes.slice(at..at + n));
    }
    if flags & FLAG_HEADERS != 0 {
        frame.headers = Some(r.headers()?);
    }
    let n = r.u32("message length")?;
    let at = r.at;
    r.take(n, "messages")?;
    frame.messages = bytes.slice(at..at + n);
    if kind & REPLY != 0 && flags & FLAG_END != 0 {
        frame.trailers = Some(r.headers()?);
    }
    if r.at != bytes.len() {
        return Err(FrameError::Invalid("frame: bytes after its end"));
    }
    Ok(frame)
}

/// The bytes of a received Homa message, copied once out of the socket's buffer pool
/// (chunk by chunk: `as_slice` would join a message that came in several jumbo frames
/// first, a second copy).
pub(crate) fn message_bytes(msg: &homa::Message) -> Bytes {
    Bytes::from(msg.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_round_trips_byte_for_byte() {
        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("trailers"));
        let mut buf = BytesMut::new();
        put_fixed(&mut buf, OPEN, FLAG_END | FLAG_HEADERS, 7);
        put_path(&mut buf, "/a.B/C");
        put_headers(&mut buf, &h);
        let at = put_len_placeholder(&mut buf);
        buf.put_slice(&[0, 0, 0, 0, 1, 42]);
        patch_len(&mut buf, at);
        let expect: &[u8] = &[
            1, 3, 0, 0, 0, 0, 0, 0, 0, 7, // kind, flags, call id
            0, 6, b'/', b'a', b'.', b'B', b'/', b'C', // path
            0, 1, 0, 2, b't', b'e', 0, 0, 0, 8, // one header: "te"
            b't', b'r', b'a', b'i', b'l', b'e', b'r', b's', //
            0, 0, 0, 6, // message bytes
            0, 0, 0, 0, 1, 42, // one gRPC message of one byte
        ];
        assert_eq!(&buf[..], expect);
        let f = parse(buf.freeze()).unwrap();
        assert_eq!((f.kind, f.call, f.end()), (OPEN, 7, true));
        assert_eq!(f.path.as_deref(), Some(&b"/a.B/C"[..]));
        assert_eq!(f.headers.unwrap()["te"], "trailers");
        assert_eq!(&f.messages[..], &[0, 0, 0, 0, 1, 42]);
    }

    /// A header count no frame could hold, or more headers than `http` takes, is an
    /// error, never a panic (either once panicked the server's receive loop).
    #[test]
    fn absurd_header_counts_are_refused_not_panicked_on() {
        let mut buf = BytesMut::new();
        put_fixed(&mut buf, OPEN, FLAG_HEADERS, 1);
        put_path(&mut buf, "/");
        buf.put_u16(u16::MAX);
        assert!(matches!(
            parse(buf.freeze()),
            Err(FrameError::Truncated("headers"))
        ));
        // 40,000 distinct names, each whole: more than a map holds.
        let mut buf = BytesMut::new();
        put_fixed(&mut buf, OPEN, FLAG_HEADERS, 1);
        put_path(&mut buf, "/");
        buf.put_u16(40_000);
        for i in 0..40_000u32 {
            let name = format!("h{i}");
            buf.put_u16(name.len() as u16);
            buf.put_slice(name.as_bytes());
            buf.put_u32(0);
        }
        buf.put_u32(0);
        assert!(matches!(parse(buf.freeze()), Err(FrameError::Invalid(_))));
        // 40,000 values of one name parse: the limit is on names.
        let mut h = HeaderMap::new();
        for _ in 0..40_000 {
            h.append("k", HeaderValue::from_static("v"));
        }
        let mut buf = BytesMut::new();
        put_fixed(&mut buf, OPEN, FLAG_HEADERS, 1);
        put_path(&mut buf, "/");
        put_headers(&mut buf, &h);
        buf.put_u32(0);
        let parsed = parse(buf.freeze()).map(|f| f.headers.map(|h| h.len()));
        assert!(matches!(parsed, Ok(Some(40_000))), "{parsed:?}");
    }

    #[test]
    fn reply_with_trailers() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("5"));
        let b = control(REPLY | PULL, FLAG_END, 9, None, Some(&t));
        let f = parse(b).unwrap();
        assert_eq!(f.kind, REPLY | PULL);
        assert!(f.headers.is_none());
        assert_eq!(f.trailers.unwrap()["grpc-status"], "5");
        assert!(f.messages.is_empty());
    }

    #[test]
    fn malformed_frames_are_errors() {
        for bad in [
            &b""[..],
            b"\x01\x00",
            b"\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01",
            b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x05/ab",
            b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x02ab",
            b"\x02\x02\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01\x00\x01",
            b"\x02\x02\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01\x00\x01\x00\x00\x00\x00\xff\xff",
            b"\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x09\x00",
            b"\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00",
        ] {
            assert!(parse(Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
    }
}
