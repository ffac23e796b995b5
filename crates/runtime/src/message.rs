//! Received messages.

use bytes::Bytes;
use homa_core::{MessageBuf, RpcId};
use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// The socket a message came from, which takes its memory back when it is dropped (and,
/// for a request never answered, its RPC). The runtime's socket state implements it;
/// messages know it by this trait alone, so that this file sits below the socket code.
pub(crate) trait Owner: Send + Sync {
    /// Take back `data`; `discard`: the client and id of a request dropped unanswered.
    fn release(&self, data: MessageBuf, discard: Option<(SocketAddr, RpcId)>);
    /// Hand `data`'s bytes to the application (`joined`, if they were joined already)
    /// and take back its space, leaving it empty.
    fn take_bytes(&self, data: &mut MessageBuf, joined: Option<Box<[u8]>>) -> Bytes;
}

/// What a [`Message`] is: a request (answer it with `reply`), a response, a one-way
/// message, or word that one of ours arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A request from a client; the socket owes it a [`reply`](crate::Socket::reply).
    Request,
    /// The response to one of this socket's requests.
    Response,
    /// A one-way message ([`Socket::send_message`](crate::Socket::send_message)) for a
    /// socket that takes them ([`Options::one_way`](crate::Options::one_way)): nothing is
    /// owed back (its sender learns from the engines that it arrived).
    OneWay,
    /// One of this socket's one-way messages arrived whole at its receiver, which
    /// acknowledged it: no bytes ([`len`](Message::len) 0); `id`, `cookie` and `peer`
    /// say which.
    Delivered,
}

/// A received request, response or one-way message, or word that a one-way message
/// was delivered.
///
/// The bytes live in the socket's receive buffer pool: one contiguous chunk for messages
/// up to 64 KiB, several chunks otherwise ([`chunks`](Self::chunks)): 64 KiB pages, or,
/// for messages that arrived in long packets (loopback, jumbo frames), the packets'
/// payloads in the buffers the kernel received them into, so their bytes are copied only
/// once. A message up to 64 KiB that came in several jumbo frames (without GRO) is kept
/// so too; the first call to [`as_slice`](Self::as_slice) joins it into one chunk, so
/// `as_slice` is `Some` for every message up to 64 KiB. The joined copy is the message's
/// own until it is dropped, outside the receive buffer pool, as a [`to_vec`](Self::to_vec)
/// would be: [`chunks`](Self::chunks) and [`copy_to`](Self::copy_to) read such a message
/// without it. Dropping the message returns
/// its memory to the pool. The
/// pool is bounded (`max_incoming_held`): while the application holds that many bytes,
/// new incoming messages wait (nothing is lost) until messages are dropped.
///
/// Dropping a request that was never answered discards its RPC: the server counts it as
/// executed (a retransmitted copy is not delivered again) and the client, left without a
/// response, fails with [`RpcError::Timeout`](homa_core::RpcError::Timeout).
pub struct Message {
    owner: Arc<dyn Owner>,
    kind: MessageKind,
    id: RpcId,
    peer: SocketAddr,
    cookie: u64,
    data: Option<MessageBuf>,
    /// A request that `reply` answered: dropping it has no RPC left to discard.
    answered: AtomicBool,
    /// The bytes of a message up to a page kept in several pieces, joined into one the
    /// first time [`as_slice`](Self::as_slice) asks.
    joined: OnceLock<Box<[u8]>>,
}

impl Message {
    pub(crate) fn new(
        owner: Arc<dyn Owner>,
        kind: MessageKind,
        id: RpcId,
        peer: SocketAddr,
        cookie: u64,
        data: MessageBuf,
    ) -> Message {
        Message {
            owner,
            kind,
            id,
            peer,
            cookie,
            data: Some(data),
            answered: AtomicBool::new(false),
            joined: OnceLock::new(),
        }
    }

    fn buf(&self) -> &MessageBuf {
        self.data.as_ref().expect("present until drop")
    }

    /// Request, response, one-way message, or delivery.
    pub fn kind(&self) -> MessageKind {
        self.kind
    }
    /// True for a request.
    pub fn is_request(&self) -> bool {
        self.kind == MessageKind::Request
    }
    /// The RPC's id on this side: odd for a request this socket serves (or a one-way
    /// message it took), the id `send_request` (or `send_message`) returned for a
    /// response (or a delivery).
    pub fn id(&self) -> RpcId {
        self.id
    }
    /// The other side: the client of a request (or sender of a one-way message), the
    /// server of a response (or receiver of a delivered one-way message).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
    /// The cookie given to `send_request` or `send_message` (0 for requests, one-way
    /// messages, and for `call` and `deliver`).
    pub fn cookie(&self) -> u64 {
        self.cookie
    }
    /// Length in bytes (0 once [`take_bytes`](Self::take_bytes) took them).
    pub fn len(&self) -> usize {
        self.buf().len()
    }
    /// True for a delivery ([`MessageKind::Delivered`]), which has no bytes, and once
    /// [`take_bytes`](Self::take_bytes) took them; Homa messages arrive with at least one.
    pub fn is_empty(&self) -> bool {
        self.buf().is_empty()
    }
    /// The bytes in one chunk: always for messages up to 64 KiB (the buffer pool's page,
    /// `Config::bpage_size`), `None` above. A message up to 64 KiB that arrived in several
    /// long packets (jumbo frames) is joined into one chunk on the first call, a copy the
    /// message keeps until it is dropped; [`chunks`](Self::chunks) or
    /// [`copy_to`](Self::copy_to) read it where it lies.
    pub fn as_slice(&self) -> Option<&[u8]> {
        let buf = self.buf();
        match buf.as_slice() {
            Some(s) => Some(s),
            None if buf.within_page() => {
                Some(self.joined.get_or_init(|| buf.to_vec().into_boxed_slice()))
            }
            None => None,
        }
    }
    /// The bytes in order, chunk by chunk (one chunk up to 64 KiB, or the payloads of the
    /// jumbo frames it came in; above, 64 KiB pages or the payloads of the packets the
    /// message came in). Never an empty chunk: an empty message has none.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.buf().chunks().filter(|c| !c.is_empty())
    }
    /// The bytes: borrowed when contiguous, copied into one vector otherwise.
    pub fn bytes(&self) -> Cow<'_, [u8]> {
        match self.as_slice() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(self.to_vec()),
        }
    }
    /// A copy of the bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        self.buf().to_vec()
    }
    /// The bytes as one [`Bytes`], for the application to keep or to send on (a
    /// `Bytes` is a [`Payload`](crate::Payload)), leaving the message empty
    /// ([`len`](Self::len) 0). The message stays what it was otherwise: a request taken
    /// this way is still the handle [`reply`](crate::Socket::reply) takes, so a server
    /// can answer with the request's own bytes, or pass them on, without copying them
    /// again:
    ///
    /// ```no_run
    /// # fn serve(server: &homa::Socket) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut req = server.recv_request()?;
    /// let body = req.take_bytes();
    /// server.reply(&req, body)?; // an echo: no copy of its own
    /// # Ok(()) }
    /// ```
    ///
    /// A message in one chunk (every message up to the buffer pool's page,
    /// `Config::bpage_size`, 64 KiB by default, unless it came in several jumbo frames)
    /// is handed over without a copy: the chunk leaves the socket's buffer pool, which
    /// allocates another. So is one [`as_slice`](Self::as_slice) joined, and one longer
    /// than a page that came in one long packet. Others are copied into one buffer (to
    /// avoid that, read them with [`chunks`](Self::chunks)). Either
    /// way its space in the receive buffer pool is free at once: like a copy, the bytes
    /// are the application's from then on, and no longer count against
    /// `max_incoming_held`. Taking them again gives nothing. (What the bytes cost on
    /// their way in and out is in the crate's "Copies".)
    pub fn take_bytes(&mut self) -> Bytes {
        match self.data.as_mut() {
            Some(d) if !d.is_empty() => self.owner.take_bytes(d, self.joined.take()),
            _ => Bytes::new(),
        }
    }

    /// Copy the bytes into the start of `out`; returns how many were copied.
    pub fn copy_to(&self, out: &mut [u8]) -> usize {
        let mut at = 0;
        for c in self.chunks() {
            let n = c.len().min(out.len() - at);
            out[at..at + n].copy_from_slice(&c[..n]);
            at += n;
            if at == out.len() {
                break;
            }
        }
        at
    }

    /// Whether `owner` is the socket this message came from.
    pub(crate) fn belongs_to<T: Owner>(&self, owner: &Arc<T>) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.owner), Arc::as_ptr(owner))
    }

    /// `reply` answered this request (its server RPC is no longer in service).
    pub(crate) fn mark_answered(&self) {
        self.answered.store(true, Ordering::Relaxed);
    }
}

impl PartialEq<[u8]> for Message {
    fn eq(&self, other: &[u8]) -> bool {
        self.buf().eq_bytes(other)
    }
}
impl PartialEq<&[u8]> for Message {
    fn eq(&self, other: &&[u8]) -> bool {
        self.buf().eq_bytes(other)
    }
}
impl<const N: usize> PartialEq<[u8; N]> for Message {
    fn eq(&self, other: &[u8; N]) -> bool {
        self.buf().eq_bytes(other)
    }
}
impl<const N: usize> PartialEq<&[u8; N]> for Message {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self.buf().eq_bytes(*other)
    }
}
impl PartialEq<Vec<u8>> for Message {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.buf().eq_bytes(other)
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("cookie", &self.cookie)
            .field("len", &self.len())
            .finish()
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        if self.kind == MessageKind::Delivered {
            return; // no bytes, nothing to give back
        }
        if let Some(data) = self.data.take() {
            // A request dropped without a reply must not stay in service forever.
            let unanswered = self.is_request() && !self.answered.load(Ordering::Relaxed);
            let discard = unanswered.then_some((self.peer, self.id));
            self.owner.release(data, discard);
        }
    }
}
