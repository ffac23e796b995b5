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
            if self.added >= BATCH_BYTES || self.held.is_some() {
                self.full = true;
                return Poll::Ready(Ok(Filled::Full));
            }
            match body.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(Filled::End(None))),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(Status::from_error(e.into()))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
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

    fn add(&mut self, buf: &mut BytesMut, data: Bytes, max: usize) -> Result<(), Status> {
        if buf.len() + data.len() <= max {
            self.added += data.len();
            buf.put_slice(&data);
            Ok(())
        } else if self.added > 0 {
            self.held = Some(data);
            Ok(())
        } else {
            self.added = 0;
            Err(Status::resource_exhausted(format!(
                "gRPC message of {} bytes does not fit in one Homa message: its frame holds {} \
                 bytes of headers and framing, and Homa's maximum message length is {max} bytes",
                data.len(),
                buf.len()
            )))
        }
    }
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
