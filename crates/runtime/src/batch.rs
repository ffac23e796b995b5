//! Sending several messages at once.

use crate::error::{ReplyError, SendError};
use crate::inner::{Inner, Push};
use crate::message::Message;
use crate::payload::Payload;
use homa_core::RpcId;
use std::net::SocketAddr;
use std::sync::Arc;

/// Requests and replies that leave together: each is handed to the engine at once (so
/// its errors come back at once, as from the socket's own `send_request` and `reply`),
/// and their packets are sent when the batch is [sent](Batch::send) or dropped, in as
/// few system calls as the kernel allows (one `sendmmsg` for up to 64 packets; runs of
/// same-size packets to one peer as single UDP GSO sends). A batch saves system calls;
/// it does not hold its packets back: while it stays open, the socket's timer (every
/// tick, 1 ms by default) or another thread or task sending on the socket may send some
/// of them first, so that a batch left open does not stall the socket.
///
/// A server that answers what one [`recv_request_batch`](crate::Socket::recv_request_batch)
/// returned, or a client that keeps many requests outstanding, spends one system call
/// where one message each would cost one apiece. A batch is filled and sent on one thread
/// (it is not `Send`): in async code, fill and send it between two `.await`s. Messages
/// the thread drops meanwhile do not send the batch's packets early.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let opts = homa::Options { server: Some(true), ..Default::default() };
/// let server = homa::Socket::bind_with("127.0.0.1:0".parse()?, opts)?;
/// let client = homa::Socket::bind("127.0.0.1:0".parse()?)?;
///
/// // Ten requests, one system call.
/// let mut batch = client.batch();
/// for i in 0..10u64 {
///     batch.send_request(server.local_addr(), format!("request {i}"), i)?;
/// }
/// batch.send();
///
/// // Answer them in batches too.
/// let mut requests = Vec::new();
/// let mut answered = 0;
/// while answered < 10 {
///     server.recv_request_batch(&mut requests, 64)?;
///     let mut replies = server.batch();
///     for r in requests.drain(..) {
///         replies.reply(&r, r.to_vec())?;
///         answered += 1;
///     }
/// } // each `replies` is sent as it goes out of scope
///
/// let mut responses = Vec::new();
/// let mut got = 0;
/// while got < 10 {
///     got += client.recv_batch(&mut responses, 64)?;
/// }
/// for r in &responses {
///     let r = r.as_ref().expect("every RPC succeeds");
///     assert_eq!(r.to_vec(), format!("request {}", r.cookie()).into_bytes());
/// }
/// # Ok(())
/// # }
/// ```
#[must_use = "a batch sends its packets when it is sent or dropped"]
pub struct Batch<'a> {
    inner: &'a Arc<Inner>,
    queued: usize,
    /// A command was queued: the batch must be pushed.
    started: bool,
    /// This thread was corked for the batch (see `Inner::cork`).
    corked: bool,
    /// Filled and sent on one thread (the cork is the thread's).
    _not_send: std::marker::PhantomData<*const ()>,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("queued", &self.queued)
            .finish_non_exhaustive()
    }
}

impl<'a> Batch<'a> {
    pub(crate) fn new(inner: &'a Arc<Inner>) -> Batch<'a> {
        Batch {
            inner,
            queued: 0,
            started: false,
            corked: false,
            _not_send: std::marker::PhantomData,
        }
    }

    /// Start an RPC, as [`Socket::send_request`](crate::Socket::send_request) does; its
    /// packets leave with the batch.
    pub fn send_request(
        &mut self,
        dest: SocketAddr,
        data: impl Into<Payload>,
        cookie: u64,
    ) -> Result<RpcId, SendError> {
        self.request(dest, data.into(), cookie, false)
    }

    /// Start an RPC whose outcome only `recv_id` returns, as
    /// [`Socket::send_request_private`](crate::Socket::send_request_private) does.
    pub fn send_request_private(
        &mut self,
        dest: SocketAddr,
        data: impl Into<Payload>,
        cookie: u64,
    ) -> Result<RpcId, SendError> {
        self.request(dest, data.into(), cookie, true)
    }

    fn request(
        &mut self,
        dest: SocketAddr,
        data: Payload,
        cookie: u64,
        private: bool,
    ) -> Result<RpcId, SendError> {
        self.cork();
        let (id, _) = self
            .inner
            .start_request(dest, data, cookie, private, Push::Later)?;
        self.queued += 1;
        Ok(id)
    }

    /// Answer `request`, as [`Socket::reply`](crate::Socket::reply) does; the response
    /// leaves with the batch.
    pub fn reply(&mut self, request: &Message, data: impl Into<Payload>) -> Result<(), ReplyError> {
        self.cork();
        self.inner.reply(request, data.into(), Push::Later)?;
        self.queued += 1;
        Ok(())
    }

    /// Before the first command: cork the socket on this thread (see `Inner::cork`).
    fn cork(&mut self) {
        if !self.started {
            self.started = true;
            self.corked = self.inner.cork();
        }
    }

    /// How many requests and replies the batch holds.
    pub fn len(&self) -> usize {
        self.queued
    }

    /// True if the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Send everything the batch holds now (dropping the batch does the same).
    pub fn send(self) {}
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if self.started {
            self.inner.push(self.corked);
        }
    }
}
