//! Batches: the gRPC messages of an HTTP body gathered into one Homa message, up to a
//! size, without waiting for messages that are not there yet. Both sides use it: the
//! client for request messages, the server for response messages.

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body::Body;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::Status;

/// A batch stops growing past this many message bytes (more are sent in the next one).
/// Big enough that a stream of small messages costs one RPC per many messages, small
/// enough that the receive side of a stream holds little.
pub(crate) const BATCH_BYTES: usize = 64 << 10;

/// What a batch ended on.
#[derive(Debug)]
pub(crate) enum BatchEnd {
    /// More may come.
    More,
    /// The body ended, with these trailers (if any).
    End(Option<HeaderMap>),
}

/// Why a batch being filled can take no more.
#[derive(Debug)]
pub(crate) enum Filled {
    /// It holds [`BATCH_BYTES`], or the next message would not fit in it.
    Full,
    /// The body ended, with these trailers (if any).
    End(Option<HeaderMap>),
}

/// Gathers data frames of one body into batches.
#[derive(Debug, Default)]
pub(crate) struct Batcher {
    /// A frame that did not fit the current batch, for the next.
    held: Option<Bytes>,
    /// Message bytes added to the current batch.
    added: usize,
    /// The current batch can take no more (`held` waits for the next one).
    full: bool,
}

impl Batcher {
    /// Append the frames ready now to `buf` (whose first `base` bytes are the frame
    /// header). With `wait_first`, stays pending until at least one frame (or the end)
    /// is there; without, returns `More` at once when nothing is ready. `max` is the most
    /// bytes the whole Homa message may have. A batch that [`poll_fill`](Self::poll_fill)
    /// began is continued.
    pub(crate) fn poll_batch<B>(
        &mut self,
        body: Pin<&mut B>,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        wait_first: bool,
        max: usize,
    ) -> Poll<Result<BatchEnd, Status>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<crate::BoxError>,
    {
        match self.poll_fill(body, cx, buf, max) {
            Poll::Pending if self.added == 0 && wait_first => Poll::Pending,
            Poll::Pending | Poll::Ready(Ok(Filled::Full)) => {
                Poll::Ready(Ok(self.finish(BatchEnd::More)))
            }
            Poll::Ready(Ok(Filled::End(trailers))) => {
                Poll::Ready(Ok(self.finish(BatchEnd::End(trailers))))
            }
            Poll::Ready(Err(e)) => {
                self.finish(BatchEnd::More);
                Poll::Ready(Err(e))
            }
        }
    }

    /// Append the frames ready now to the batch in `buf`, and keep it open: pending
    /// while it has room and the body has nothing more yet (the body's waker is then
    /// registered), ready once it can take no more. Called again on the same batch after
    /// that, it only says so again; [`finish`](Self::finish) starts the next batch. This
    /// is how a side reads ahead while its last batch is on its way: a producer with a
    /// short channel is not held to a few messages per round trip.
    pub(crate) fn poll_fill<B>(
        &mut self,
        mut body: Pin<&mut B>,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<Result<Filled, Status>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<crate::BoxError>,
    {
        if self.full {
            return Poll::Ready(Ok(Filled::Full));
        }
        if let Some(held) = self.held.take() {
            self.add(buf, held, max)?;
        }
        loop {
            if self.held.is_some() {
                self.full = true;
                return Poll::Ready(Ok(Filled::Full));
            }
            let at_size = self.added >= BATCH_BYTES;
            match body.as_mut().poll_frame(cx) {
                // Full: whether the body had ended too is worth one more look (a unary
                // call's one message over the batch size then still goes with END, as
                // one Homa RPC); a frame that came is held for the next batch.
                Poll::Pending if at_size => {
                    self.full = true;
                    return Poll::Ready(Ok(Filled::Full));
                }
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(Filled::End(None))),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(Status::from_error(e.into()))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    // (Held for the next batch: the loop's first test ends this one.)
                    Ok(data) if at_size => self.held = Some(data),
                    Ok(data) => self.add(buf, data, max)?,
                    Err(frame) => return Poll::Ready(Ok(Filled::End(frame.into_trailers().ok()))),
                },
            }
        }
    }

    /// Ends the current batch (the next poll starts a new one, with the frame held back
    /// if any).
    pub(crate) fn finish<T>(&mut self, end: T) -> T {
        self.added = 0;
        self.full = false;
        end
    }

    /// Add the data frame `data` to the batch, or as much of it as fits: a frame may hold
    /// several gRPC messages (tonic's encoder packs messages into frames of up to 32 KiB
    /// and more), so one that does not fit is cut between messages, and the rest held for
    /// the next batch. Only a single message too long for any batch is an error.
    fn add(&mut self, buf: &mut BytesMut, mut data: Bytes, max: usize) -> Result<(), Status> {
        let room = max.saturating_sub(buf.len());
        let take = match data.len() <= room {
            true => data.len(),
            false => whole_messages_within(&data, room),
        };
        if take > 0 {
            self.added += take;
            buf.put_slice(&data[..take]);
            let rest = data.split_off(take);
            if !rest.is_empty() {
                self.held = Some(rest);
            }
            Ok(())
        } else if self.added > 0 {
            self.held = Some(data);
            Ok(())
        } else {
            self.added = 0;
            let (message, headers) = (first_message_len(&data), buf.len());
            // Headers that take most of the room are the thing to shorten, not the message.
            let what = if headers > message {
                format!(
                    "the call's metadata ({headers} bytes with the framing) and its first gRPC \
                     message ({message} bytes) do not fit"
                )
            } else {
                format!(
                    "gRPC message of {message} bytes does not fit (with {headers} bytes of \
                     metadata and framing)"
                )
            };
            Err(Status::resource_exhausted(format!(
                "{what} in one Homa message: Homa's maximum message length is {max} bytes \
                 (`max_message_length`). Send long data as a stream of shorter messages, \
                 compress it, or raise max_message_length at both ends"
            )))
        }
    }
}

/// Length of a gRPC message's prefix: a compressed flag and a 4-byte length.
const PREFIX: usize = 5;

/// The length of the first gRPC message in `data`, its prefix included (all of `data`
/// if it does not hold a whole prefix, or holds less than the message).
fn first_message_len(data: &[u8]) -> usize {
    match data.get(1..PREFIX) {
        Some(len) => {
            let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
            (PREFIX + len).min(data.len())
        }
        None => data.len(),
    }
}

/// The longest run of whole gRPC messages at the start of `data` that is at most `room`
/// bytes (0 if the first message does not fit).
fn whole_messages_within(data: &[u8], room: usize) -> usize {
    let mut end = 0;
    while end < data.len() {
        let next = end + first_message_len(&data[end..]);
        if next > room {
            break;
        }
        end = next;
    }
    end
}

/// The `grpc-timeout` header's value as a duration (`None` if absent or malformed:
/// gRPC treats a malformed one as none).
pub(crate) fn grpc_timeout(headers: &HeaderMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A status as a header block (for trailers or a trailers-only response).
pub(crate) fn status_headers(status: &Status) -> HeaderMap {
    let mut h = HeaderMap::new();
    if status.add_header(&mut h).is_err() {
        // A message that cannot be a header value: keep the code.
        h.clear();
        h.insert("grpc-status", (status.code() as i32).into());
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// gRPC messages of these lengths, back to back in one data frame.
    fn frame_of(lengths: &[usize]) -> Bytes {
        let mut b = BytesMut::new();
        for (i, &len) in lengths.iter().enumerate() {
            b.put_u8(0);
            b.put_u32(len as u32);
            b.put_bytes(i as u8, len);
        }
        b.freeze()
    }

    #[test]
    fn a_frame_of_several_messages_is_cut_between_them() {
        let mut batcher = Batcher::default();
        let mut buf = BytesMut::from(&[9u8; 10][..]); // a frame header
        let data = frame_of(&[20_000, 990_000]);
        batcher.add(&mut buf, data.clone(), 1_000_000).unwrap();
        // The first message goes now; the second, which fits a batch of its own, waits.
        assert_eq!(buf.len(), 10 + 20_005);
        assert_eq!(&buf[10..], &data[..20_005]);
        assert_eq!(batcher.held.as_deref(), Some(&data[20_005..]));
        let mut next = BytesMut::from(&[9u8; 10][..]);
        let held = batcher.held.take().unwrap();
        batcher.finish(());
        batcher.add(&mut next, held, 1_000_000).unwrap();
        assert_eq!(&next[10..], &data[20_005..]);
        assert!(batcher.held.is_none());
    }

    #[test]
    fn only_a_single_message_too_long_for_a_batch_is_an_error() {
        let mut batcher = Batcher::default();
        let mut buf = BytesMut::from(&[9u8; 10][..]);
        let e = batcher
            .add(&mut buf, frame_of(&[999_990, 5]), 1_000_000)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(
            e.message().starts_with("gRPC message of 999995 bytes"),
            "{e:?}"
        );
        assert_eq!(whole_messages_within(&frame_of(&[3, 4]), 7), 0);
        assert_eq!(whole_messages_within(&frame_of(&[3, 4]), 8), 8);
        assert_eq!(whole_messages_within(&frame_of(&[3, 4]), 16), 8);
        assert_eq!(whole_messages_within(&frame_of(&[3, 4]), 17), 17);
        // A frame cut inside a message (not tonic's way, but a body may do it): its
        // partial tail is one piece.
        let cut = frame_of(&[3, 40]).slice(..20);
        assert_eq!(whole_messages_within(&cut, 19), 8);
        assert_eq!(whole_messages_within(&cut, 20), 20);
    }

    #[test]
    fn timeouts_parse_as_the_grpc_spec_has_them() {
        let t = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&h)
        };
        assert_eq!(t("5S"), Some(Duration::from_secs(5)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("7u"), Some(Duration::from_micros(7)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("S"), None);
        assert_eq!(t("12x"), None);
        assert_eq!(t("1234567890S"), None);
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }
}
